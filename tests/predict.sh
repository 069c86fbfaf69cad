#!/usr/bin/env bash
# Prediction without a profile (docs/FORMAT.md): a file's first read fetches
# the rest of it (a shared object whatever its size, other files up to the
# cap), the first read in a directory fetches its small files, --prefetch none
# guesses nothing, and the stream fetches the rest of the image within
# --prefetch-budget, never more, with every byte read still right.
#
# The counters are the daemon's (cfs-mount --stats): demand_fetches counts
# the reads that had to fetch their chunk themselves, so a guess that worked
# shows as a read that fetched nothing.
# Env: CFS_PACK, CFS_MOUNT, CFS_TREECMP (set by tests/meson.build).  Exit 77
# without FUSE.
set -euo pipefail

source "$(dirname "$0")/lib.sh"

need_fuse
: "${CFS_PACK:?}" "${CFS_MOUNT:?}"

make_workdir predict
m=$W/mnt
MiB=$((1024 * 1024))

step "tree: a package of small modules, 300 other small files, a 3 MiB file, a 70 MiB shared object, 70 MiB of data"
src=$W/src
mkdir -p "$src/pkg" "$src/other" "$src/lib"
# pkg/ (200 x 6.7 KB: over one 1 MiB group) and other/ (packed before pkg/:
# names in order) have many files, so that they take several group chunks
# and the first of other/ holds none of pkg/'s.
for i in $(seq -w 1 200); do
	{ printf 'module %s\n' "$i"; head -c 5000 /dev/urandom | base64; } > "$src/pkg/m$i.py"
done
for i in $(seq -w 1 300); do
	{ printf 'other %s\n' "$i"; head -c 2000 /dev/urandom | base64; } > "$src/other/o$i.txt"
done
head -c $((3 * MiB)) /dev/urandom > "$src/pkg/mid.bin"
# A Python package with two subpackages, each's compiled modules over a group.
for d in py py/sub1 py/sub2; do
	mkdir -p "$src/$d/__pycache__"
	for i in $(seq -w 1 160); do
		{ printf 'code %s\n' "$i"; head -c 5000 /dev/urandom | base64; } > "$src/$d/__pycache__/m$i.cpython-311.pyc"
	done
done
head -c $((70 * MiB)) /dev/urandom > "$src/lib/libbig.so.1"
head -c $((70 * MiB)) /dev/urandom > "$src/lib/data.bin"
timeout 300 "$CFS_PACK" --tag p "$src" "$W/store" > "$W/pack.out" || fail "cfs-pack exited $?"
stored=$(find "$W/store/objects" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')

# mount_p NAME OPTS... [URL]: mounts tag p of $W/store (or the store at
# URL, which then ends the options) with a fresh cache, learning nothing
# (tests/learned.sh): each mount guesses from the tree alone.
mount_p() {
	local name=$1 store=$W/store
	shift
	case ${*: -1} in http://*) store=${*: -1}; set -- "${@:1:$#-1}";; esac
	mount_bg "$m" "$store" p --cache "$W/cache-$name" --log "$W/log-$name" --learn no "$@"
}
mount_end() {
	unmount_clean "$m" "$MOUNT_PID"
}
# live: the mount's counters into $W/live.json
live() { mount_stats "$m" "$W/live.json"; }
counter() { live; stat_of "$W/live.json" "$1"; }
# settled: the pool has nothing queued or in flight (the queued chunks are in)
settled() { pool_settled "$m" "$W/live.json"; }
# read_at FILE OFF_MIB: 4 KiB at OFF_MIB MiB of FILE through the mount,
# checked against the source
read_at() {
	dd if="$m/$1" bs=4096 count=1 skip=$(($2 * 256)) iflag=direct status=none > "$W/piece" ||
		fail "reading $1 at $2 MiB failed"
	dd if="$src/$1" bs=4096 count=1 skip=$(($2 * 256)) status=none | cmp -s - "$W/piece" ||
		fail "$1 at $2 MiB differs from the source"
}

step "--prefetch list (no list in this image): guesses from first reads, no stream"
mount_p lean --prefetch list
cmp "$m/pkg/m001.py" "$src/pkg/m001.py" || fail "pkg/m001.py differs"
wait_until 20 settled || fail "the pool did not settle: $(cat "$W/live.json")"
hints=$(stat_of "$W/live.json" hint_chunks)
[ "$hints" -ge 1 ] || fail "the first read in pkg/ queued no chunk: $(cat "$W/live.json")"
[ "$(stat_of "$W/live.json" stream_chunks)" -eq 0 ] || fail "--prefetch list streamed"
before=$(stat_of "$W/live.json" demand_fetches)
for f in "$src"/pkg/m*.py; do cmp "$f" "$m/pkg/${f##*/}" || fail "${f##*/} differs"; done
after=$(counter demand_fetches)
[ "$after" -eq "$before" ] || fail "reading pkg/'s other modules fetched $((after - before)) chunks: the first read should have queued them"
echo "pkg/: one read queued $hints chunks; the other 199 modules fetched nothing"

before=$after
cmp "$m/other/o007.txt" "$src/other/o007.txt" || fail "other/o007.txt differs"
after=$(counter demand_fetches)
[ "$after" -gt "$before" ] || fail "other/ was fetched without a read in it (no stream with --prefetch list)"

step "a package's first compiled module queues its subpackages' compiled modules"
cmp "$m/py/__pycache__/m001.cpython-311.pyc" "$src/py/__pycache__/m001.cpython-311.pyc" || fail "py/ m001 differs"
wait_until 20 settled || fail "the pool did not settle"
before=$(counter demand_fetches)
# (One file of each, far from the groups py/__pycache__ shares: a read
# that finds its chunk queued but not yet in waits for that fetch, which
# demand_fetches does not count, so reading on through a directory would
# not tell.)
for f in py/sub1/__pycache__/m080.cpython-311.pyc py/sub2/__pycache__/m160.cpython-311.pyc; do
	cmp "$src/$f" "$m/$f" || fail "$f differs"
done
after=$(counter demand_fetches)
echo "py/: demand fetches $before -> $after, hint_chunks $(stat_of "$W/live.json" hint_chunks)"
[ "$after" -eq "$before" ] || fail "reading py/'s subpackages fetched $((after - before)) chunks: py/__pycache__'s first read should have queued them"

step "a first read fetches the rest of the file: 3 MiB whole"
read_at pkg/mid.bin 0
wait_until 20 settled || fail "the pool did not settle"
before=$(counter demand_fetches)
read_at pkg/mid.bin 2
[ "$(counter demand_fetches)" -eq "$before" ] || fail "pkg/mid.bin at 2 MiB was not fetched with its first read"

step "a shared object whole beyond the cap, a 70 MiB data file not"
read_at lib/libbig.so.1 1
read_at lib/data.bin 10
wait_until 30 settled || fail "the pool did not settle"
before=$(counter demand_fetches)
read_at lib/libbig.so.1 65
[ "$(counter demand_fetches)" -eq "$before" ] || fail "libbig.so.1 at 65 MiB was not fetched with its first read"
read_at lib/data.bin 60
[ "$(counter demand_fetches)" -gt "$before" ] || fail "data.bin (70 MiB, not a shared object) was fetched whole on a first read"
[ "$(stat_of "$W/live.json" read_errors)" -eq 0 ] || fail "read errors"
mount_end

step "--prefetch none: no guesses"
mount_p none --prefetch none
cmp "$m/pkg/m001.py" "$src/pkg/m001.py" || fail "pkg/m001.py differs"
read_at pkg/mid.bin 0
sleep 0.3
[ "$(counter hint_chunks)" -eq 0 ] || fail "--prefetch none guessed: $(cat "$W/live.json")"
[ "$(stat_of "$W/live.json" prefetch_queued)" -eq 0 ] || fail "--prefetch none prefetched"
mount_end

step "the stream (the default) within --prefetch-budget 5M"
mount_p budget -v --prefetch-budget 5M
wait_until 30 grep -q 'stream queued' "$W/log-budget" || fail "no end of stream in the log: $(cat "$W/log-budget")"
wait_until 30 settled || fail "the pool did not settle"
sb=$(stat_of "$W/live.json" stream_bytes)
echo "stream: $sb bytes, $(stat_of "$W/live.json" stream_chunks) chunks; log: $(grep 'stream queued' "$W/log-budget")"
[ "$sb" -gt 0 ] || fail "the stream fetched nothing"
[ "$sb" -le $((5 * MiB)) ] || fail "the stream fetched $sb bytes, over its 5 MiB budget"
grep -q 'budget spent' "$W/log-budget" || fail "the log does not say the budget was spent"
mount_end

step "the stream, default budget: the whole image, then every read is a hit"
mount_p all -v
wait_until 60 grep -q 'stream queued' "$W/log-all" || fail "no end of stream in the log: $(cat "$W/log-all")"
wait_until 60 settled || fail "the pool did not settle"
sb=$(stat_of "$W/live.json" stream_bytes)
fetched=$(stat_of "$W/live.json" store_get_bytes)
echo "stream: $sb of $stored stored bytes; store_get_bytes $fetched"
[ "$fetched" -le "$stored" ] || fail "fetched $fetched bytes, more than the $stored the store holds"
stage=$W/cache-all/stage
[ "$(stat_of "$W/live.json" stage_bytes)" -gt 0 ] || fail "the stream staged nothing"
[ "$(find "$stage" -type f | wc -l)" -gt 0 ] || fail "nothing in $stage after the stream"
compare --approx-blocks "$src" "$m"
[ "$(counter demand_fetches)" -eq 0 ] || fail "reads after the stream fetched $(stat_of "$W/live.json" demand_fetches) chunks"
[ "$(stat_of "$W/live.json" stage_hits)" -gt 0 ] || fail "no read decoded a staged chunk"
mount_end
[ "$(find "$stage" -type f | wc -l)" -eq 0 ] || fail "staged copies left after the unmount: $(find "$stage" -type f | head -n 3)"

step "staged copies that lie are refused and fetched again, the bytes right"
mount_p liar -v
wait_until 60 grep -q 'stream queued' "$W/log-liar" || fail "no end of stream in the log"
wait_until 60 settled || fail "the pool did not settle"
n=0
for f in "$W"/cache-liar/stage/*/*; do
	[ -f "$f" ] || continue
	printf 'not the chunk' > "$f"
	n=$((n + 1))
done
[ "$n" -gt 0 ] || fail "nothing staged to corrupt"
compare --approx-blocks "$src" "$m"
live
echo "corrupted $n staged copies: stage_bad $(stat_of "$W/live.json" stage_bad), read_errors $(stat_of "$W/live.json" read_errors)"
[ "$(stat_of "$W/live.json" stage_bad)" -gt 0 ] || fail "no corrupt staged copy was refused"
[ "$(stat_of "$W/live.json" read_errors)" -eq 0 ] || fail "read errors after corrupt staged copies"
mount_end

step "demand first: a read during the stream of the whole image over a slow link is served among the first"
# The stream (--prefetch all) starts at mount from the root, whose first
# file is lib/data.bin (70 chunks, read in order): its chunk at 60 MiB is the
# stream's 61st.  A read of it right after the mount must not queue behind
# the stream: it is fetched in the foreground, before the stream's queue.
# Order in the proxy's log, not time, is checked.  (A large file's chunks
# are cut from its start, and a chunk's name is the SHA-256 of its bytes.)
need_nginx
start_nginx "$W/store"
proxy_start "$NGINX_PORT"
proxy_set latency_ms=40 rate=20M
c60=$(dd if="$src/lib/data.bin" bs=1M skip=60 count=1 status=none | sha256sum | cut -d' ' -f1)
mount_p slow --prefetch all "http://127.0.0.1:$PROXY_PORT/"
read_at lib/data.bin 60
wait_until 60 settled || fail "the pool did not settle"
pos=$(grep ' GET /objects/' "$PROXY_LOG" | grep -n "/$c60 " | head -n 1 | cut -d: -f1)
total=$(grep -c ' GET /objects/' "$PROXY_LOG")
[ -n "$pos" ] || fail "lib/data.bin's chunk at 60 MiB ($c60) was never fetched"
echo "lib/data.bin at 60 MiB came in as object $pos of $total"
[ "$total" -ge 100 ] || fail "the stream fetched only $total objects"
[ "$pos" -le 45 ] || fail "lib/data.bin at 60 MiB came in as object $pos of $total: behind the stream"
mount_end

echo "PASS"
