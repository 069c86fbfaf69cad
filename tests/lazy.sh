#!/usr/bin/env bash
# Lazy loading: a mount reads only the index, reading one small file fetches one chunk, and only sequential reads fetch ahead.
#
# Packs 40 x 4 MiB of random data plus 500 small files, mounts with
# --stats-file and a fresh cache, and checks the daemon's store counters.
# Env: CFS_PACK, CFS_MOUNT (set by tests/meson.build). Exit 77 without FUSE.
set -euo pipefail

source "$(dirname "$0")/lib.sh"

need_fuse
: "${CFS_PACK:?}" "${CFS_MOUNT:?}"

make_workdir lazy
m=$W/mnt
MOUNTS+=("$m")

MiB=$((1024 * 1024))

echo "# tree: 40 x 4 MiB random files, 500 small files"
src=$W/src
mkdir -p "$src/big"
for i in $(seq -w 1 40); do
	head -c $((4 * MiB)) /dev/urandom > "$src/big/blob-$i.bin"
done
for i in $(seq 1 500); do
	d=$src/small/d$((i % 10))
	mkdir -p "$d"
	{
		printf 'small file %d\n' "$i"
		head -c $((300 + i * 3)) /dev/urandom | base64
	} > "$d/s$i.txt"
done
probe=small/d3/s123.txt

echo "# pack"
timeout 300 "$CFS_PACK" --tag lazy "$src" "$W/store" > "$W/pack.out" || fail "cfs-pack exited $?"
ref=$(ref_of "$W/pack.out")
hex=${ref#sha256:}
index_obj=$W/store/objects/${hex:0:2}/$hex
[ -f "$index_obj" ] || fail "index object $index_obj missing"

stored=$(find "$W/store/objects" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
nobj=$(find "$W/store/objects" -type f | wc -l)
echo "store: $nobj objects, $stored bytes; index object $(stat -c %s "$index_obj") bytes"
[ "$stored" -gt $((100 * MiB)) ] || fail "store holds only $stored bytes for 160 MiB of random data"

# mount_run NAME CMD...: mount in the foreground (-f, in the background of
# this shell) with a fresh cache (CACHE=NAME: that earlier mount's cache), run CMD, unmount, and wait for the daemon
# to exit with status 0. The stats land in $W/stats-NAME.json.  With
# --prefetch none: no stream and no guesses from a first read (tests/predict.sh
# has those), so what is fetched is what was read; --learn no: a learned
# profile (tests/learned.sh) would have the next mount prefetch what an earlier
# one read.
mount_run() {
	local name=$1
	shift
	mount_bg "$m" "$W/store" lazy --cache "$W/cache-${CACHE:-$name}" --stats-file "$W/stats-$name.json" \
		--prefetch none --learn no
	"$@"
	unmount_clean "$m" "$MOUNT_PID"
	[ -s "$W/stats-$name.json" ] || fail "no stats file after exit"
	echo "stats ($name): $(cat "$W/stats-$name.json")"
}

read_probe() {
	timeout 30 cat "$m/$probe" > "$W/probe.out" || fail "reading $probe failed"
	cmp "$W/probe.out" "$src/$probe" || fail "$probe differs from the source"
}

echo "# mount, read one small file, unmount"
mount_run read read_probe
f=$W/stats-read.json
gets=$(stat_of "$f" store_gets)
bytes=$(stat_of "$f" store_get_bytes)
errors=$(stat_of "$f" read_errors)
echo "read one file: store_gets=$gets store_get_bytes=$bytes of $stored stored ($((bytes * 10000 / stored)) / 10000)"
[ "$gets" -ge 2 ] || fail "store_gets=$gets: the index and a chunk must come from the store"
[ "$gets" -le 3 ] || fail "store_gets=$gets: reading one small file should fetch the index and one chunk (3 allowed)"
[ "$bytes" -lt $((stored / 100)) ] || fail "store_get_bytes=$bytes is not under 1% of the $stored bytes stored"
[ "$bytes" -lt $((2 * MiB)) ] || fail "store_get_bytes=$bytes is not under 2 MiB"
[ "$errors" -eq 0 ] || fail "read_errors=$errors"

echo "# mount and unmount without reading"
mount_run noread true
f=$W/stats-noread.json
gets=$(stat_of "$f" store_gets)
bytes=$(stat_of "$f" store_get_bytes)
echo "mount only: store_gets=$gets store_get_bytes=$bytes"
[ "$gets" -eq 1 ] || fail "store_gets=$gets: a mount alone must read the index object only"
[ "$bytes" -lt $((2 * MiB)) ] || fail "store_get_bytes=$bytes for the index alone"

# The index is content-addressed like a chunk: a node that mounted the image
# before keeps it in the chunk cache and does not fetch it again.  A cache
# entry that fails its check is dropped and the index fetched anew.
echo "# remount on the same cache: the index comes from the cache"
CACHE=noread mount_run noread2 true
gets=$(stat_of "$W/stats-noread2.json" store_gets)
echo "warm remount: store_gets=$gets"
[ "$gets" -eq 0 ] || fail "store_gets=$gets: a remount on a warm cache fetched the index again"
idx_entry=$W/cache-noread/${hex:0:2}/$hex
[ -f "$idx_entry" ] || fail "the index is not in the cache as $idx_entry"
printf 'X' | dd of="$idx_entry" bs=1 seek=100 conv=notrunc status=none
CACHE=noread mount_run noread3 read_probe
gets=$(stat_of "$W/stats-noread3.json" store_gets)
echo "remount with a corrupt cached index: store_gets=$gets"
[ "$gets" -ge 2 ] || fail "store_gets=$gets: a corrupt cached index must be fetched from the store again"

# Readahead: a sequential read of a 4 MiB file (4 chunks) queues the chunks
# after the one being read; scattered 4 KiB reads of another file (backwards,
# so never sequential) queue none, and fetch only the chunks they touch.
read_seq() {
	timeout 30 cat "$m/big/blob-07.bin" | cmp - "$src/big/blob-07.bin" || fail "blob-07 differs"
}
read_scattered() {
	local off
	for off in 3900 2700 1500 300; do # KiB, one in each 1 MiB chunk, in reverse
		timeout 30 dd if="$m/big/blob-08.bin" of="$W/piece" bs=4k skip=$((off / 4)) count=1 \
			iflag=direct status=none || fail "reading blob-08 at ${off}K failed"
		cmp -s "$W/piece" <(dd if="$src/big/blob-08.bin" bs=4k skip=$((off / 4)) count=1 status=none) ||
			fail "blob-08 at ${off}K differs"
	done
}

echo "# readahead on a sequential read"
mount_run seq read_seq
ra=$(stat_of "$W/stats-seq.json" readahead_chunks)
echo "sequential 4 MiB read: readahead_chunks=$ra"
[ "$ra" -ge 1 ] || fail "readahead_chunks=$ra: a sequential read must fetch ahead"

echo "# no readahead on scattered reads"
mount_run scattered read_scattered
ra=$(stat_of "$W/stats-scattered.json" readahead_chunks)
fetches=$(stat_of "$W/stats-scattered.json" chunk_fetches)
echo "scattered reads: readahead_chunks=$ra chunk_fetches=$fetches"
[ "$ra" -eq 0 ] || fail "readahead_chunks=$ra: scattered reads must not fetch ahead"
[ "$fetches" -eq 4 ] || fail "chunk_fetches=$fetches: four scattered reads touch four chunks"

echo "PASS"
