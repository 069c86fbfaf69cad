#!/usr/bin/env bash
# The disk cache stays consistent: after kill -9 of the daemon mid-read, on a full cache filesystem, and with corrupt entries on disk.
#
# An http:// store (nginx, behind cfs-faultproxy for a slow link):
#  1. kill -9 the daemon while a 64 MiB file streams in, lazily unmount,
#     remount on the same cache: every file of the tree compares equal;
#  2. a 3 MiB tmpfs as the cache of a ~30 MiB image: every byte still reads
#     correctly (writes fail open) and the stats count the write errors;
#  3. flip a byte in one cache entry and truncate another, remount: the
#     reads are correct, the stats count the bad entries, and the proxy saw
#     those objects fetched again.
# Env: CFS_PACK, CFS_MOUNT, CFS_MKTREE, CFS_TREECMP, CFS_FAULTPROXY.
# Exit 77 without root, FUSE, nginx or curl (nginx is required under CI=true).
set -euo pipefail

source "$(dirname "$0")/lib.sh"

need_root "cache-crash needs root (mounts, tmpfs, nginx)"
need_fuse
need_nginx
need_cmds curl
: "${CFS_PACK:?}" "${CFS_MOUNT:?}" "${CFS_MKTREE:?}" "${CFS_TREECMP:?}" "${CFS_FAULTPROXY:?}"

make_workdir cache-crash
MiB=$((1024 * 1024))
PASSED=0
TMPFS=
cleanup_extra() {
	if [ "$PASSED" -eq 0 ]; then
		for f in "$W"/*.log "$W/nginx-http/error.log"; do
			[ -s "$f" ] || continue
			echo "--- last lines of $f" >&2
			tail -n 15 "$f" >&2
		done
	fi
	# The tmpfs goes before rm -rf --one-file-system runs over $W.
	[ -z "$TMPFS" ] || umount "$TMPFS" 2>/dev/null || umount -l "$TMPFS" 2>/dev/null || true
}

step "trees: cfs-mktree (--big-mb 8 --small-count 200) plus a 64 MiB file; a second tree of 30 MiB"
src=$W/src
"$CFS_MKTREE" "$src" --big-mb 8 --small-count 200 > /dev/null || fail "cfs-mktree exited $?"
mkdir -p "$src/huge"
head -c $((64 * MiB)) /dev/urandom > "$src/huge/h64"
src2=$W/src2
mkdir -p "$src2"
for i in $(seq -w 1 10); do
	head -c $((3 * MiB)) /dev/urandom > "$src2/f$i"
done
timeout 300 "$CFS_PACK" -q --tag crash "$src" "$W/store" > "$W/pack.out" || fail "cfs-pack src exited $?"
ref_of "$W/pack.out" > /dev/null
timeout 300 "$CFS_PACK" -q --tag small "$src2" "$W/store" > "$W/pack2.out" || fail "cfs-pack src2 exited $?"
ref_of "$W/pack2.out" > /dev/null

start_nginx "$W/store"
proxy_start "$NGINX_PORT"
url=http://127.0.0.1:$PROXY_PORT/
echo "nginx on $NGINX_PORT, proxy on $PROXY_PORT"

# --- 1. kill -9 mid-read ------------------------------------------------------
step "1. kill -9: read huge/h64 at 20 ms RTT and 1 MiB/s per connection"
m=$W/mnt
cache=$W/cache
proxy_set latency_ms=20 rate=1M
mount_bg "$m" "$url" crash --cache "$cache" --deadline 60000
pid=$MOUNT_PID
b0=$(proxy_stat bytes_down)
t0=$(now_ms)
cat "$m/huge/h64" > /dev/null 2>&1 &
reader=$!
# through_proxy BYTES: at least BYTES more came through the proxy than b0.
through_proxy() {
	[ $(($(proxy_stat bytes_down) - b0)) -ge "$1" ]
}
# Kill once 8 MiB have come through, with more in flight.
wait_until 60 --while "$reader" through_proxy $((8 * MiB)) || true
got=$(($(proxy_stat bytes_down) - b0))
alive "$reader" || fail "the read of huge/h64 ended before the kill ($got bytes through the proxy): too fast to test"
[ "$got" -ge $((8 * MiB)) ] || fail "only $got bytes came through in 60 s"
kill -9 "$pid"
entries=$(find "$cache" -type f | wc -l)
temps=$(find "$cache" -type f -name '*.tmp*' | wc -l)
echo "   killed the daemon $(($(now_ms) - t0)) ms into the read, $((got / MiB)) MiB through the proxy; $entries files in the cache, $temps of them temporaries"
wait_until 10 not alive "$pid" || fail "the daemon survived kill -9"
umount -l "$m" 2>/dev/null || fusermount3 -uz "$m" || fail "cannot detach the dead mount $m"
wait_until 30 not alive "$reader" || fail "the reader of the dead mount is still blocked 30 s after umount -l"
rc=0
wait "$reader" 2>/dev/null || rc=$?
echo "   the reader ended with status $rc"
mountpoint -q "$m" && fail "$m still mounted after umount -l"
proxy_set clear

# remount_compare STATS: image crash at $m on $cache again (pid in $pid),
# every file compared with the tree; its counters in STATS.
remount_compare() {
	mount_bg "$m" "$url" crash --cache "$cache"
	pid=$MOUNT_PID
	compare --approx-blocks "$src" "$m"
	mount_stats "$m" "$1"
	echo "   stats: $(cat "$1")"
}

step "1. remount on the same cache: every file of the tree"
# A temporary the kill left (a write between its open and its rename) is
# the pass's to delete once it is a minute old (a younger one may be a live
# writer's, of another process): age them, so that the remount's first
# pass must.
find "$cache" -type f -name '*.tmp*' -exec touch -d '2 minutes ago' {} +
find "$cache" -type f -printf '%s %P\n' | sort -k2 > "$W/cache-after-kill.txt"
echo "   cache: $(wc -l < "$W/cache-after-kill.txt") files, $(awk '{ s += $1 } END { print s + 0 }' "$W/cache-after-kill.txt") bytes"
remount_compare "$W/stats1.json"
hits=$(json_sum "$W/stats1.json" disk_hits)
[ "$hits" -gt 0 ] || fail "no cache_disk_hits after the remount: the entries written before the kill were not used"
bad=$(json_sum "$W/stats1.json" disk_bad)
[ "$bad" -eq 0 ] || fail "cache_disk_bad=$bad after kill -9: the cache held a torn entry"
unmount_wait "$m" "$pid" 30
leftover=$(find "$cache" -type f -name '*.tmp*' | wc -l)
[ "$leftover" -eq 0 ] || fail "$leftover temporary files still in the cache after a remount"
echo "   $hits disk hits, no bad entry, no temporary file left"

# --- 2. full cache filesystem -------------------------------------------------
step "2. a 3 MiB tmpfs as the cache of the 30 MiB image"
TMPFS=$W/tiny
mkdir -p "$TMPFS"
mount -t tmpfs -o size=3m tmpfs "$TMPFS" || skip "cannot mount a tmpfs"
m2=$W/mnt2
mount_bg "$m2" "$url" small --cache "$TMPFS/cache" --mem-cache 8M
pid=$MOUNT_PID
compare --approx-blocks "$src2" "$m2"
for f in "$src2"/*; do
	drop_file_cache "$m2/${f##*/}"
done
compare --approx-blocks "$src2" "$m2"
mount_stats "$m2" "$W/stats2.json"
echo "   stats: $(cat "$W/stats2.json")"
echo "   tmpfs: $(df -k --output=used,size "$TMPFS" | tail -n 1) KiB used/size"
werr=$(json_sum "$W/stats2.json" write_err)
[ "$werr" -gt 0 ] || fail "the stats count no disk write errors on a full cache: $(cat "$W/stats2.json")"
echo "   $werr disk write errors, every byte correct"
mountpoint -q "$m2" || fail "the mount on the full cache died"
unmount_wait "$m2" "$pid" 30
umount "$TMPFS" || umount -l "$TMPFS"
TMPFS=

# --- 3. corrupt entries on disk ----------------------------------------------
step "3. corrupt cache entries: flip a byte in one, truncate another"
# The cache of part 1 holds every chunk of the tree now.  Entries are
# <hh>/<64 hex>, a 32-byte header, then the content.
mapfile -t ent < <(find "$cache" -type f -size +64k -regextype egrep -regex '.*/[0-9a-f]{2}/[0-9a-f]{64}' | sort | head -n 2)
[ "${#ent[@]}" -eq 2 ] || fail "found ${#ent[@]} cache entries over 64 KiB under $cache, need 2"
flipped=${ent[0]##*/} truncated=${ent[1]##*/}
size=$(stat -c %s "${ent[0]}")
off=$((size / 2))
flip_byte "${ent[0]}" "$off"
truncate -s $(($(stat -c %s "${ent[1]}") / 2)) "${ent[1]}"
echo "   flipped byte $off of $flipped, truncated $truncated"
mark=$(wc -l < "$PROXY_LOG")
remount_compare "$W/stats3.json"
bad=$(json_sum "$W/stats3.json" disk_bad)
[ "$bad" -ge 2 ] || fail "disk_bad=$bad after corrupting two entries"
for d in "$flipped" "$truncated"; do
	tail -n +$((mark + 1)) "$PROXY_LOG" | grep -q "GET /objects/${d:0:2}/$d " ||
		fail "object $d (corrupt in the cache) was not fetched from the store again"
done
echo "   disk_bad=$bad; both objects fetched again from the store"
unmount_wait "$m" "$pid" 30

step "3. once more on the repaired cache: served from disk, nothing bad"
mark=$(wc -l < "$PROXY_LOG")
remount_compare "$W/stats4.json"
bad=$(json_sum "$W/stats4.json" disk_bad)
[ "$bad" -eq 0 ] || fail "disk_bad=$bad on the repaired cache"
n=$(tail -n +$((mark + 1)) "$PROXY_LOG" | grep -c 'GET /objects/' || true)
echo "   $n object requests"
unmount_wait "$m" "$pid" 30

PASSED=1
echo "PASS"
