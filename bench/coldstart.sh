#!/usr/bin/env bash
# Cold start from a local store: cfs (lazy mount, then runc) beside
# pull-and-extract as container engines do it today (decompress a tar.zst or
# tar.gz layer of the same tree, extract, then runc), in one run, with the
# page cache and cfs's disk cache emptied before every run.  Prints the
# median time to the container's first output line and to its exit.
#
# Usage: bench/coldstart.sh [ROOTFS_DIR] [RUNS]
#   ROOTFS_DIR  a root filesystem with /bin/sh (default: the busybox sample
#               made by scripts/mkrootfs.sh); RUNS defaults to 5.
#   CMD         the command run in the container (env; default prints a line
#               and lists /bin)
# Root only (mounts, runc, drop_caches).
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
runs=${2:-5}
cmd=${CMD:-'echo first-output; ls /bin | wc -l'}
for b in "$pack" "$mnt_bin"; do
	[ -x "$b" ] || die "$b not built (meson setup build && ninja -C build)"
done
[ "$(id -u)" = 0 ] || die "needs root"

work=$(mktemp -d /tmp/cfs-bench-cold.XXXXXX)
cleanup() {
	runc delete -f "cfsbench-$$" > /dev/null 2>&1 || true
	mountpoint -q "$work/mnt" 2>/dev/null && { fusermount3 -u "$work/mnt" 2>/dev/null || umount -l "$work/mnt"; }
	rm -rf "$work"
}
trap cleanup EXIT

if [ -n "${1:-}" ]; then
	rootfs=$1
else
	rootfs=$work/rootfs
	bash "$top/scripts/mkrootfs.sh" "$rootfs" > /dev/null
fi
bytes=$(du -sb --apparent-size "$rootfs" | cut -f1)

"$pack" -q --tag bench "$rootfs" "$work/store" > /dev/null
tar --format=posix --xattrs --xattrs-include='*' --numeric-owner -C "$rootfs" -cf - . | zstd -q -3 -T0 > "$work/layer.tar.zst"
tar --format=posix --xattrs --xattrs-include='*' --numeric-owner -C "$rootfs" -cf - . | gzip -6 > "$work/layer.tar.gz"

# One bundle per root: the cfs mount, and the directory a layer is extracted to.
mkdir -p "$work/mnt"
bash "$top/scripts/mkbundle.sh" "$work/bundle-cfs" "$work/mnt" -- sh -c "$cmd"
bash "$top/scripts/mkbundle.sh" "$work/bundle-x" "$work/x" -- sh -c "$cmd"

# unlike lib.sh's, goes on where drop_caches is read-only (a container)
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }

# Runs the container of bundle $1; prints "first_ms total_ms" from $2 (ns).
run_container() {
	local bundle=$1 t0=$2 first
	first=$( (cd "$bundle" && runc run "cfsbench-$$") | { IFS= read -r _; now; cat > /dev/null; })
	echo $(( (first - t0) / 1000000 )) $(( ($(now) - t0) / 1000000 ))
}

run_cfs() {
	rm -rf "$work/cache"; drop_caches
	local t0; t0=$(now)
	"$mnt_bin" "$work/store" bench "$work/mnt" --cache "$work/cache" -o allow_other,default_permissions,dev,suid
	run_container "$work/bundle-cfs" "$t0"
	fusermount3 -u "$work/mnt"
}
run_extract() { # $1: zst|gz
	rm -rf "$work/x"; mkdir "$work/x"; drop_caches
	local t0; t0=$(now)
	if [ "$1" = zst ]; then zstd -q -d -c "$work/layer.tar.zst"; else gzip -d -c "$work/layer.tar.gz"; fi |
		tar --xattrs --xattrs-include='*' --numeric-owner -C "$work/x" -xf -
	run_container "$work/bundle-x" "$t0"
}

declare -A first total
for m in cfs zst gz; do
	: > "$work/$m.first"; : > "$work/$m.total"
	for _ in $(seq "$runs"); do
		if [ "$m" = cfs ]; then r=$(run_cfs); else r=$(run_extract "$m"); fi
		echo "${r% *}" >> "$work/$m.first"; echo "${r#* }" >> "$work/$m.total"
	done
	first[$m]=$(median < "$work/$m.first"); total[$m]=$(median < "$work/$m.total")
done

printf 'rootfs: %s (%.1f MB), command: %s, %d CPUs, median of %d cold runs\n' \
	"${1:-busybox sample}" "$(calc "$bytes / 1e6")" "$cmd" "$(nproc)" "$runs"
printf '%-30s %14s %12s %10s\n' method first-output-ms total-ms "vs cfs"
for m in cfs zst gz; do
	case $m in cfs) n="cfs mount + runc";; zst) n="extract tar.zst + runc";; gz) n="extract tar.gz + runc";; esac
	printf '%-30s %14d %12d %9.2fx\n' "$n" "${first[$m]}" "${total[$m]}" \
		"$(awk "BEGIN{print ${first[$m]} / (${first[cfs]} > 0 ? ${first[cfs]} : 1)}")"
done
echo "(vs cfs: time to first output divided by cfs's)"
