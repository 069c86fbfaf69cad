#!/usr/bin/env bash
# Make a self-contained cfs-load bundle for a GPU machine without Debian's packages.
#
#   scripts/mkloader-bundle.sh [OUTDIR]      (default: build-bundle/cfs-load-bundle)
#
# Builds cfs-load with the CUDA target (cudart is linked statically, so the
# machine needs only the NVIDIA driver's libcuda.so) in build-bundle/, then
# copies into OUTDIR: bin/cfs-load, bin/cfs-mkmodel, lib/libcfsload.so, the
# Python binding, bench/loader.sh's helpers, and every shared library that
# ldd lists for them except glibc's own (libc, libm, ld-linux, libdl,
# libpthread, librt), which any Linux has.  bin/* are wrappers that set
# LD_LIBRARY_PATH to lib/.  Copy OUTDIR over and run, for example:
#
#   OUTDIR/bin/cfs-mkmodel --size 8G --shards 4 /scratch/m8/
#   OUTDIR/bin/cfs-load --target cuda --probe --verify /scratch/m8/
#
# Needs the CUDA toolkit (default /usr/local/cuda; CUDA_HOME overrides).
set -euo pipefail

cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."
out=${1:-build-bundle/cfs-load-bundle}
cuda=${CUDA_HOME:-/usr/local/cuda}

[ -f "$cuda/include/cuda_runtime_api.h" ] ||
	{ echo "mkloader-bundle: no CUDA toolkit at $cuda (set CUDA_HOME)" >&2; exit 1; }
if [ ! -f build-bundle/build.ninja ]; then
	meson setup build-bundle --buildtype=release -Dcuda=enabled -Dcudatoolkit="$cuda"
fi
ninja -C build-bundle loader/cfs-load loader/libcfsload.so tools/cfs-mkmodel bench/cfs-loadpeers

rm -rf "$out"
mkdir -p "$out/bin" "$out/libexec" "$out/lib" "$out/python"
cp build-bundle/loader/cfs-load build-bundle/tools/cfs-mkmodel build-bundle/bench/cfs-loadpeers "$out/libexec/"
cp build-bundle/loader/libcfsload.so "$out/lib/"
cp loader/python/cfs_load.py "$out/python/"

# Shared libraries outside glibc, resolved on this machine.
for f in "$out"/libexec/* "$out/lib/libcfsload.so"; do
	ldd "$f" | awk '/=> \// {print $3}'
done | sort -u | while read -r so; do
	case ${so##*/} in
	libc.so.* | libm.so.* | ld-linux*.so.* | libdl.so.* | libpthread.so.* | librt.so.*) ;;
	*) cp -L "$so" "$out/lib/" ;;
	esac
done

for b in cfs-load cfs-mkmodel cfs-loadpeers; do
	cat > "$out/bin/$b" <<WRAP
#!/bin/sh
here=\$(dirname "\$(readlink -f "\$0")")/..
LD_LIBRARY_PATH="\$here/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "\$here/libexec/$b" "\$@"
WRAP
	chmod +x "$out/bin/$b"
done
echo "mkloader-bundle: $out ($(du -sh "$out" | cut -f1)); CFS_LOAD_LIB=$out/lib/libcfsload.so for the Python binding"
