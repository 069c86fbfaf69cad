#!/usr/bin/env bash
# Lazy loading: a mount reads only the index, and reading one small file fetches one chunk, not the image.
#
# Packs 40 x 4 MiB of random data plus 500 small files, mounts with
# --stats-file and a fresh cache, and checks the daemon's store counters.
# Env: CFS_PACK, CFS_MOUNT (set by tests/meson.build). Exit 77 without FUSE.
set -euo pipefail

skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*" >&2; exit 1; }

command -v fusermount3 >/dev/null 2>&1 || skip "fusermount3 not installed"
[ -c /dev/fuse ] || skip "/dev/fuse missing"
[ "$(id -u)" -eq 0 ] || [ -w /dev/fuse ] || skip "no access to /dev/fuse"
: "${CFS_PACK:?}" "${CFS_MOUNT:?}"

t=$(mktemp -d /tmp/cfs-lazy.XXXXXX)
m=$t/mnt
pid=
cleanup() {
	fusermount3 -u "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		kill "$pid" 2>/dev/null || true
	fi
	rm -rf "$t"
}
trap cleanup EXIT

MiB=$((1024 * 1024))

echo "# tree: 40 x 4 MiB random files, 500 small files"
src=$t/src
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
timeout 300 "$CFS_PACK" --tag lazy "$src" "$t/store" > "$t/pack.out" || fail "cfs-pack exited $?"
ref=$(tail -n 1 "$t/pack.out")
[[ $ref =~ ^sha256:[0-9a-f]{64}$ ]] || fail "not a reference: '$ref'"
hex=${ref#sha256:}
index_obj=$t/store/objects/${hex:0:2}/$hex
[ -f "$index_obj" ] || fail "index object $index_obj missing"

stored=$(find "$t/store/objects" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
nobj=$(find "$t/store/objects" -type f | wc -l)
echo "store: $nobj objects, $stored bytes; index object $(stat -c %s "$index_obj") bytes"
[ "$stored" -gt $((100 * MiB)) ] || fail "store holds only $stored bytes for 160 MiB of random data"

# stat_of FILE KEY: the integer value of "KEY" in the stats JSON.
stat_of() {
	local v
	v=$(grep -o "\"$2\"[[:space:]]*:[[:space:]]*[0-9]*" "$1" | grep -o '[0-9]*$') ||
		fail "no \"$2\" in $1: $(cat "$1")"
	printf '%s\n' "$v"
}

# mount_run NAME CMD...: mount in the foreground (-f, in the background of
# this shell) with a fresh cache, run CMD, unmount, and wait for the daemon
# to exit with status 0. The stats land in $t/stats-NAME.json.
mount_run() {
	local name=$1 rc=0 i
	shift
	mkdir -p "$m"
	"$CFS_MOUNT" -f --cache "$t/cache-$name" --stats-file "$t/stats-$name.json" \
		"$t/store" lazy "$m" &
	pid=$!
	for i in $(seq 300); do
		mountpoint -q "$m" && break
		kill -0 "$pid" 2>/dev/null || { wait "$pid" || rc=$?; fail "cfs-mount -f exited $rc before mounting"; }
		sleep 0.1
	done
	mountpoint -q "$m" || fail "not mounted after 30 s"
	"$@"
	timeout 30 fusermount3 -u "$m" || fail "unmount failed"
	for i in $(seq 300); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -0 "$pid" 2>/dev/null && fail "cfs-mount still running 30 s after unmount"
	wait "$pid" || rc=$?
	pid=
	[ "$rc" -eq 0 ] || fail "cfs-mount exited $rc after unmount"
	[ -s "$t/stats-$name.json" ] || fail "no stats file after exit"
	echo "stats ($name): $(cat "$t/stats-$name.json")"
}

read_probe() {
	timeout 30 cat "$m/$probe" > "$t/probe.out" || fail "reading $probe failed"
	cmp "$t/probe.out" "$src/$probe" || fail "$probe differs from the source"
}

echo "# mount, read one small file, unmount"
mount_run read read_probe
f=$t/stats-read.json
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
f=$t/stats-noread.json
gets=$(stat_of "$f" store_gets)
bytes=$(stat_of "$f" store_get_bytes)
echo "mount only: store_gets=$gets store_get_bytes=$bytes"
[ "$gets" -eq 1 ] || fail "store_gets=$gets: a mount alone must read the index object only"
[ "$bytes" -lt $((2 * MiB)) ] || fail "store_get_bytes=$bytes for the index alone"

echo "PASS"
