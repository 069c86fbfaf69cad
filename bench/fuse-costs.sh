#!/bin/bash
# FUSE path costs (issue 4 item 6): each of cfs's kernel-cache and read-size
# choices on and off, beside the same tree on the local disk and squashfuse
# of a squashfs of it (the FUSE peer).  Local directory store, warm cfs disk
# cache; hyperfine medians.  The choices are turned off with cfs-mount's
# benchmark knobs (environment, see read_bench_knobs in fs/daemon.c).
#
#   bench/fuse-costs.sh [RUNS]        (root: mounts, drop_caches, bdi)
#
# Needs hyperfine, squashfuse, squashfs-tools.  CFS_PACK / CFS_MOUNT pick the
# binaries (default build/), WORK the scratch directory, SECTIONS which of
# 1-5 to run (default 12345: 1-3 and 5 are timed, 4 prints sizes).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
pack=${CFS_PACK:-$top/build/tools/cfs-pack}
mnt_bin=${CFS_MOUNT:-$top/build/fs/cfs-mount}
runs=${1:-5}
work=${WORK:-/tmp/cfs-fuse-costs}
for b in "$pack" "$mnt_bin" hyperfine squashfuse mksquashfs; do
	command -v "$b" > /dev/null || { echo "missing: $b" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "root only" >&2; exit 1; }

mnt=$work/mnt
sq=$work/sqmnt
umount_all() {
	for m in "$mnt" "$sq"; do
		mountpoint -q "$m" 2>/dev/null && { fusermount3 -u "$m" 2>/dev/null || umount -l "$m"; }
	done
	return 0
}
trap umount_all EXIT
umount_all
mkdir -p "$work" "$mnt" "$sq"
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
export -f drop_caches

# The tree: 100 directories of 100 small files (10k entries) and one
# 256 MiB file of random data.
tree=$work/tree
if [ ! -f "$tree/big.bin" ]; then
	rm -rf "$tree"; mkdir -p "$tree/small"
	for d in $(seq -w 0 99); do
		mkdir "$tree/small/d$d"
		for f in $(seq -w 0 99); do printf '%s %s\n' "$d" "$f" > "$tree/small/d$d/f$f"; done
	done
	head -c 256M /dev/urandom > "$tree/big.bin"
fi
if [ ! -d "$work/store" ]; then
	"$pack" -q --tag bench "$tree" "$work/store" > /dev/null
fi
[ -f "$work/tree.sqfs" ] || mksquashfs "$tree" "$work/tree.sqfs" -noappend -quiet -comp lz4 > /dev/null

# cfs with the environment given (knobs), disk cache in $work/cache.
cfs_mount() {
	umount_all
	env "$@" "$mnt_bin" "$work/store" bench "$mnt" --cache "$work/cache"
}
sq_mount() { umount_all; squashfuse "$work/tree.sqfs" "$sq"; }
export mnt sq work mnt_bin

# Warm the cfs disk cache once (every chunk read through the mount).
cfs_mount
find "$mnt" -type f -exec cat {} + > /dev/null
umount_all

hf() { # NAME CMD [hyperfine args...]: prints "NAME median-ms"
	local name=$1 cmd=$2; shift 2
	hyperfine --style none --runs "$runs" --export-json "$work/hf.json" "$@" "$cmd" > /dev/null
	python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["results"][0]; print("%-44s %9.1f  (min %.1f, sd %.1f)" % (sys.argv[2], r["median"]*1000, r["min"]*1000, (r["stddev"] or 0)*1000))' \
		"$work/hf.json" "$name"
}

echo "# kernel $(uname -r), $(nproc) cores, runs=$runs; median ms"
echo "# fuse max_pages_limit=$(cat /proc/sys/fs/fuse/max_pages_limit 2>/dev/null || echo n/a)"

sections=${SECTIONS:-12345}
[[ $sections == *1* ]] && {
echo "## (1) metadata, 10k entries"
for t in local sqfs cfs cfs-timeout0; do
	case $t in
	local) root=$tree/small ;;
	sqfs) sq_mount; root=$sq/small ;;
	cfs) cfs_mount; root=$mnt/small ;;
	cfs-timeout0) cfs_mount CFS_FUSE_TIMEOUT=0; root=$mnt/small ;;
	esac
	hf "find, first walk (page cache dropped) $t" "find $root -printf '%s\\n' > /dev/null" --prepare 'sync; echo 3 > /proc/sys/vm/drop_caches'
	hf "find, second walk $t" "find $root -printf '%s\\n' > /dev/null" --warmup 1
	umount_all
done
for t in local sqfs cfs cfs-no-readdirplus; do
	case $t in
	local) root=$tree/small ;;
	sqfs) sq_mount; root=$sq/small ;;
	cfs) cfs_mount; root=$mnt/small ;;
	cfs-no-readdirplus) cfs_mount CFS_FUSE_NO_READDIRPLUS=1; root=$mnt/small ;;
	esac
	hf "ls -lR (page cache dropped) $t" "ls -lR $root > /dev/null" --prepare 'sync; echo 3 > /proc/sys/vm/drop_caches'
	umount_all
done

}
[[ $sections == *2* ]] && {
echo "## (2) re-read of 256 MiB after a first read"
for t in local sqfs cfs; do
	case $t in
	local) f=$tree/big.bin ;;
	sqfs) sq_mount; f=$sq/big.bin ;;
	cfs) cfs_mount; f=$mnt/big.bin ;;
	esac
	hf "re-read (cat) $t" "cat $f > /dev/null" --warmup 1
	umount_all
done

}
[[ $sections == *3* ]] && {
echo "## (3) first sequential read of 256 MiB (page cache dropped, cfs remounted, disk cache warm)"
hf "dd bs=1M local" "dd if=$tree/big.bin of=/dev/null bs=1M status=none" --prepare 'sync; echo 3 > /proc/sys/vm/drop_caches'
for bs in 128K 1M; do
	hf "dd bs=$bs sqfs" "dd if=$sq/big.bin of=/dev/null bs=$bs status=none" \
		--prepare "fusermount3 -u $sq 2>/dev/null; sync; echo 3 > /proc/sys/vm/drop_caches; squashfuse $work/tree.sqfs $sq"
	for ra in 128 1024; do
		hf "dd bs=$bs cfs read_ahead_kb=$ra" "dd if=$mnt/big.bin of=/dev/null bs=$bs status=none" \
			--prepare "fusermount3 -u $mnt 2>/dev/null; sync; echo 3 > /proc/sys/vm/drop_caches; CFS_FUSE_READAHEAD_KB=$ra $mnt_bin $work/store bench $mnt --cache $work/cache"
	done
done
umount_all

}
[[ $sections == *5* ]] && {
echo "## (5) open and read every small file, all cached (kernel no_open vs answering OPEN/RELEASE)"
for t in local sqfs cfs cfs-open; do
	case $t in
	local) root=$tree/small ;;
	sqfs) sq_mount; root=$sq/small ;;
	cfs) cfs_mount; root=$mnt/small ;;
	cfs-open) cfs_mount CFS_FUSE_OPEN=1; root=$mnt/small ;;
	esac
	hf "cat every file, warm $t" "find $root -type f -exec cat {} + > /dev/null" --warmup 2
	umount_all
done

}
[[ $sections == *4* ]] && {
echo "## (4) negotiated sizes (libfuse -d) and the largest READ the kernel sent"
for ra in 128 1024; do
	CFS_FUSE_READAHEAD_KB=$ra "$mnt_bin" -d "$work/store" bench "$mnt" --cache "$work/cache" > "$work/debug-$ra.log" 2>&1 &
	pid=$!
	for _ in $(seq 50); do mountpoint -q "$mnt" && break; sleep 0.1; done
	ra_now=$(cat "/sys/class/bdi/$(mountpoint -d "$mnt")/read_ahead_kb")
	dd if="$mnt/big.bin" of=/dev/null bs=4M count=16 status=none
	fusermount3 -u "$mnt"; wait "$pid" || true
	# The daemon's INIT reply is the indented block; a READ reply's outsize
	# is the data plus the 16-byte header.
	init=$(grep -E '^   (max_write|max_readahead)=' "$work/debug-$ra.log" | tr -s ' \n' ' ')
	maxread=$(awk '/outsize:/ {print $NF - 16}' "$work/debug-$ra.log" | sort -n | tail -1)
	echo "read_ahead_kb=$ra_now: largest READ reply $maxread bytes; INIT reply:$init"
done

}
