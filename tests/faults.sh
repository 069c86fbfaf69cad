#!/usr/bin/env bash
# Faults between cfs and an HTTP store (cfs-faultproxy before nginx): each one is retried and read correctly, or gives EIO within the deadline; never wrong bytes, never a hang.
#
# One mount of an http:// store through the proxy, short --deadline, few
# --retries.  For each fault a file not read before: 500 x2, 503 SlowDown,
# 429, a reset mid-body and a truncated body are retried and read correctly;
# a flipped byte is refetched or gives EIO; a permanent 500, a hung server
# and a dead store give EIO within the deadline.  After each: the mount is
# still up, the proxy logged the fault, and once it clears the same file
# reads correctly (nothing bad was cached).  Then 20 ms RTT with a bandwidth
# cap, and a remount on the same cache that compares every file.
# Env: CFS_PACK, CFS_MOUNT, CFS_TREECMP, CFS_FAULTPROXY. Exit 77 without
# root, FUSE, nginx or curl (nginx is required under CI=true).
set -euo pipefail

source "$(dirname "$0")/lib.sh"

need_root "faults needs root (mounts, nginx)"
need_fuse
need_nginx
need_cmds curl
: "${CFS_PACK:?}" "${CFS_MOUNT:?}" "${CFS_TREECMP:?}" "${CFS_FAULTPROXY:?}"

make_workdir faults
MiB=$((1024 * 1024))
DEADLINE=3000 # ms, per read
RETRIES=3
# EIO must come within the deadline: the kernel may ask twice (readahead,
# then the read itself), but a chunk that just timed out fails again at
# once (lib/image/image_load.c), so one deadline and scheduling slack.
EIO_BOUND=$((DEADLINE + 3000))

PASSED=0
cleanup_extra() {
	if [ "$PASSED" -eq 0 ] && [ -n "${W:-}" ]; then
		for f in "$W"/*.log "$W/nginx-http/error.log"; do
			[ -s "$f" ] || continue
			echo "--- last lines of $f" >&2
			tail -n 15 "$f" >&2
		done
	fi
}

step "tree: 17 files of 3 MiB and one of 16 MiB (random), 50 small files"
src=$W/src
mkdir -p "$src/data" "$src/big" "$src/etc"
for i in $(seq -w 1 17); do
	head -c $((3 * MiB)) /dev/urandom > "$src/data/f$i"
done
head -c $((16 * MiB)) /dev/urandom > "$src/big/b1"
for i in $(seq 1 50); do
	printf 'small file %d\n' "$i" > "$src/etc/small-$i"
done
timeout 300 "$CFS_PACK" -q --tag faults "$src" "$W/store" > "$W/pack.out" || fail "cfs-pack exited $?"
ref=$(ref_of "$W/pack.out")
echo "image $ref, $(find "$W/store/objects" -type f | wc -l) objects"

step "servers: nginx serving the store, cfs-faultproxy in front"
start_nginx "$W/store"
proxy_start "$NGINX_PORT"
echo "nginx on $NGINX_PORT, proxy on $PROXY_PORT"
curl -sf -o /dev/null "http://127.0.0.1:$PROXY_PORT/cfs-store" || fail "the store marker is not served through the proxy"

# mount_fg NAME URL [OPTS...]: mounts image faults of URL at $W/NAME with
# cache $W/cache-NAME and the short deadline, fetching only what is read
# (--prefetch none), so that the faults injected meet the reads; sets
# MOUNT_PID.
mount_fg() {
	local name=$1 url=$2
	shift 2
	mount_bg "$W/$name" "$url" faults --cache "$W/cache-$name" \
		--deadline "$DEADLINE" --retries "$RETRIES" --prefetch none "$@"
}

m=$W/mnt
step "mount http://127.0.0.1:$PROXY_PORT/ (--deadline $DEADLINE --retries $RETRIES)"
mount_fg mnt "http://127.0.0.1:$PROXY_PORT/"
mnt_pid=$MOUNT_PID
step "mount http://127.0.0.1:$NGINX_PORT/ directly, daemonized (for the dead store)"
mkdir -p "$W/direct"
MOUNTS+=("$W/direct")
timeout 60 "$CFS_MOUNT" --cache "$W/cache-direct" --log "$W/direct.log" --deadline "$DEADLINE" \
	--retries "$RETRIES" --prefetch none "http://127.0.0.1:$NGINX_PORT/" faults "$W/direct" ||
	fail "cfs-mount (daemonized) exited $?"
mountpoint -q "$W/direct" || fail "cfs-mount returned but $W/direct is not mounted"

still_up() {
	mountpoint -q "$m" || fail "$1: the mount is gone (daemon died?)"
	alive "$mnt_pid" || fail "$1: cfs-mount exited"
}

retries_now() {
	mount_stats "$m" "$W/stats.json"
	json_sum "$W/stats.json" retr
}

# read_ok CASE FILE [MOUNT]: FILE reads back equal to the source.
read_ok() {
	local mp=${3:-$m} rc=0 t0 t1 out err
	out=$W/out-${2//\//_} err=$W/err-${2//\//_}
	t0=$(now_ms)
	timeout 60 cat "$mp/$2" > "$out" 2> "$err" || rc=$?
	t1=$(now_ms)
	[ "$rc" -ne 124 ] || fail "$1: reading $2 hung (killed after 60 s)"
	[ "$rc" -eq 0 ] || fail "$1: reading $2 failed (exit $rc): $(head -n 1 "$err")"
	cmp -s "$out" "$src/$2" || fail "$1: $2 read back WRONG BYTES: $(cmp "$out" "$src/$2" 2>&1 || true)"
	echo "   $1: $2 correct ($((t1 - t0)) ms)"
}

# read_eio CASE FILE [MOUNT]: reading FILE fails with EIO within
# EIO_BOUND ms, and whatever came out before is the true content.
read_eio() {
	expect_eio "$1" "${3:-$m}/$2" "$src/$2" 60
	[ "$READ_MS" -lt "$EIO_BOUND" ] ||
		fail "$1: EIO after $READ_MS ms, deadline $DEADLINE ms (bound $EIO_BOUND ms)"
	echo "   $1: $2 EIO after $READ_MS ms ($READ_BYTES good bytes before it)"
}

# after_fault CASE FILE: the mount is up; with the faults cleared the same
# file reads correctly from the daemon (not the page cache).
after_fault() {
	proxy_set clear
	still_up "$1"
	drop_file_cache "$m/$2"
	read_ok "$1, cleared" "$2"
	still_up "$1"
}

# expect_faults CASE KIND BEFORE: the proxy logged more KIND faults than BEFORE.
expect_faults() {
	local now
	now=$(proxy_faults "$2")
	[ "$now" -gt "$3" ] || fail "$1: the proxy injected no $2 fault (log: $(tail -n 3 "$PROXY_LOG"))"
	echo "   $1: $((now - $3)) $2 fault(s) injected"
}

# retried CASE FILE KIND CONTROL...: with CONTROL set, FILE reads correctly
# after retries.
retried() {
	local name=$1 file=$2 kind=$3 before r0 r1
	shift 3
	step "$name: ${*}"
	before=$(proxy_faults "$kind")
	r0=$(retries_now)
	proxy_set "$@"
	read_ok "$name" "$file"
	expect_faults "$name" "$kind" "$before"
	r1=$(retries_now)
	[ "$r1" -gt "$r0" ] || fail "$name: the retry counter did not move ($r0 -> $r1): $(cat "$W/stats.json")"
	echo "   $name: retries $r0 -> $r1"
	after_fault "$name" "$file"
}

# always_eio CASE FILE KIND CONTROL...: with CONTROL set, reading FILE gives
# EIO within the deadline and the proxy logs KIND faults.
always_eio() {
	local name=$1 file=$2 kind=$3 before
	shift 3
	before=$(proxy_faults "$kind")
	proxy_set "$@"
	read_eio "$name" "$file"
	expect_faults "$name" "$kind" "$before"
}

step "baseline: one file through the proxy, no faults"
read_ok baseline data/f14
still_up baseline

retried "500 x2" data/f01 status status=500 count=2
retried "503 SlowDown x2" data/f02 status status=503 count=2
retried "429 x2" data/f03 status status=429 count=2
retried "reset mid-body x2" data/f04 reset reset_after=65536 count=2
retried "truncated body x2" data/f05 truncate truncate_after=65536 count=2

step "flipped byte once: refetched and correct, or EIO; never wrong bytes"
before=$(proxy_faults flip)
proxy_set flip=1 count=1
rc=0
timeout 60 cat "$m/data/f06" > "$W/out" 2> "$W/err" || rc=$?
[ "$rc" -ne 124 ] || fail "flip once: read hung"
n=$(stat -c %s "$W/out")
cmp -s -n "$n" "$W/out" "$src/data/f06" || fail "flip once: WRONG BYTES read from data/f06"
if [ "$rc" -eq 0 ]; then
	cmp -s "$W/out" "$src/data/f06" || fail "flip once: data/f06 short or wrong"
	echo "   flip once: refetched, data/f06 correct"
else
	grep -q 'Input/output error' "$W/err" || fail "flip once: expected EIO, got: $(head -n 1 "$W/err")"
	echo "   flip once: EIO after $n good bytes (not refetched)"
fi
expect_faults "flip once" flip "$before"
after_fault "flip once" data/f06

step "flipped byte on every object: EIO, never wrong bytes"
always_eio "flip always" data/f07 flip flip=1 path=/objects/
after_fault "flip always" data/f07

step "permanent 500 on every object: EIO within the deadline"
always_eio "500 always" data/f08 status status=500 path=/objects/
after_fault "500 always" data/f08

step "hung server on one chunk: EIO within the deadline, other files still read meanwhile"
hung=$(chunks_of "$src" data/f09 | head -n 1)
[ -n "$hung" ] || fail "no chunk found for data/f09"
[ -f "$W/store/objects/${hung:0:2}/$hung" ] || fail "chunk $hung of data/f09 alone is not in the image"
before=$(proxy_faults hang)
proxy_set hang=1 "path=$hung"
(read_eio "hang" data/f09) > "$W/hang.out" 2>&1 &
hang_reader=$!
sleep 0.5
read_ok "during the hang" data/f13
alive "$hang_reader" || fail "hang: the read of data/f09 ended before the deadline: $(cat "$W/hang.out")"
rc=0
wait "$hang_reader" || rc=$?
cat "$W/hang.out"
[ "$rc" -eq 0 ] || fail "hang: the read of data/f09 did not end in EIO within the deadline"
expect_faults "hang" hang "$before"
# A chunk that timed out fails at once for 2 s (lib/image/image_load.c): that is what
# keeps the kernel's retries from waiting a deadline each.
sleep 2.1
after_fault "hang" data/f09

step "hung server on every object: EIO within the deadline"
always_eio "hang always" data/f15 hang hang=1 path=/objects/
sleep 2.1
after_fault "hang always" data/f15

step "reset on every object: EIO within the deadline"
always_eio "reset always" data/f10 reset reset_after=4096 path=/objects/
after_fault "reset always" data/f10

# refused CASE FILE CODE WORDS: every object answers CODE: the read fails
# with EIO at once and one line of the daemon's log names the object, the
# store, and CODE or WORDS (the errno message).
refused() {
	local mark line
	step "$1: every object answers $3"
	mark=$(wc -l < "$W/mnt.log")
	proxy_set "status=$3" path=/objects/
	read_eio "$1" "$2"
	line=$(tail -n +$((mark + 1)) "$W/mnt.log" | grep -F "127.0.0.1:$PROXY_PORT" |
		grep -E '[0-9a-f]{64}' | grep -E -m 1 "$3|$4") ||
		fail "$1: no log line names the object, the store and $3: $(tail -n +$((mark + 1)) "$W/mnt.log" | head -n 5)"
	echo "   $1: $line"
	after_fault "$1" "$2"
}
refused "404 Not Found" data/f16 404 "No such file"
refused "403 Forbidden" data/f17 403 "Permission denied"

step "20 ms RTT and a 20 MiB/s cap per connection: the 16 MiB file"
proxy_set latency_ms=20 rate=20M
read_ok "latency+rate" big/b1
proxy_set clear
still_up "latency+rate"
mount_stats "$m" "$W/stats.json"
echo "   stats: $(cat "$W/stats.json")"

step "dead store: nginx stopped, EIO within the deadline on both mounts"
stop_nginx
curl -s -o /dev/null "http://127.0.0.1:$NGINX_PORT/" && fail "nginx still answers after being stopped"
read_eio "store down (through the proxy)" data/f11
read_eio "store down (connection refused)" data/f12 "$W/direct"
still_up "store down"
mountpoint -q "$W/direct" || fail "store down: the direct mount is gone"
step "dead store: nginx back on port $NGINX_PORT, the same files read"
restart_nginx
read_ok "store back (through the proxy)" data/f11
drop_file_cache "$W/direct/data/f12"
read_ok "store back (direct)" data/f12 "$W/direct"
read_ok "store back (direct, new file)" data/f13 "$W/direct"

step "every file, both mounts"
for mp in "$m" "$W/direct"; do
	compare --approx-blocks "$src" "$mp"
done
mount_stats "$m" "$W/stats.json"
echo "   proxy mount stats: $(cat "$W/stats.json")"
echo "   proxy: $(curl -s "http://127.0.0.1:$PROXY_PORT/__proxy_stats")"

step "remount on the same cache (no faults): every file from the cache is correct"
unmount_wait "$m" "$mnt_pid" 30
unmount_wait "$W/direct" "" 30
mount_fg mnt "http://127.0.0.1:$PROXY_PORT/"
mnt_pid=$MOUNT_PID
compare --approx-blocks "$src" "$m"
mount_stats "$m" "$W/stats.json"
echo "   stats: $(cat "$W/stats.json")"
unmount_wait "$m" "$mnt_pid" 30

PASSED=1
echo "PASS"
