#!/usr/bin/env bash
# One fetch per chunk per node: two cfs-mount daemons on one cache directory, read at once by several readers each, and cfs-load's direct mode beside a mount, fetch every object from the store once between them (nginx's access log counts), with every byte right.
#
# Packs CFS_SHARE_MB (default 200) MiB of random data in 5 files, 300 small
# files and a 16 MiB safetensors model, serves the store with nginx, mounts
# the image twice (--cache on one directory, --prefetch none), reads every
# file through both mounts at the same time (three readers per mount: one
# compares with the source), then counts the GETs per object.  Then a third
# mount and cfs-load --cache share a fresh directory while both read the
# model.  Env (tests/meson.build): CFS_PACK, CFS_MOUNT, CFS_LOAD,
# CFS_MKMODEL.  Needs /dev/fuse and nginx: skips without them (exit 77),
# except that CI=true fails without nginx.
set -euo pipefail

source "$(dirname "$0")/lib.sh"

need_fuse
need_nginx
need_cmds mountpoint curl
: "${CFS_PACK:?}" "${CFS_MOUNT:?}"

make_workdir cache-share
MiB=$((1024 * 1024))
big_mb=${CFS_SHARE_MB:-200}

step "tree: $big_mb MiB of random data in 5 files, 300 small files, a model"
src=$W/src
mkdir -p "$src/big" "$src/model"
for i in 1 2 3 4 5; do
	head -c $((big_mb * MiB / 5 + i * 4099)) /dev/urandom >"$src/big/blob-$i.bin"
done
for i in $(seq 1 300); do
	d=$src/small/d$((i % 6))
	mkdir -p "$d"
	head -c $((1000 + i * 37)) /dev/urandom >"$d/s$i.bin"
done
have_load=0
if [ -n "${CFS_LOAD:-}" ] && [ -n "${CFS_MKMODEL:-}" ]; then
	timeout 120 "$CFS_MKMODEL" --size 16M "$src/model/" >"$W/mkmodel.out" 2>&1 ||
		fail "cfs-mkmodel exited $?: $(tail -n 3 "$W/mkmodel.out")"
	have_load=1
fi
(cd "$src" && find . -type f | sed 's|^\./||' | sort) >"$W/files"
nfiles=$(wc -l <"$W/files")

step "pack"
timeout 300 "$CFS_PACK" -q --tag share "$src" "$W/store" >"$W/pack.out" 2>"$W/pack.err" ||
	fail "cfs-pack exited $?: $(tail -n 3 "$W/pack.err")"
ref=$(ref_of "$W/pack.out")
nobj=$(find "$W/store/objects" -type f | wc -l)
echo "   $ref: $nobj objects for $nfiles files"
[ "$nobj" -ge 150 ] || fail "only $nobj objects: too few to count single flight on"

start_nginx "$W/store"
url=http://127.0.0.1:$NGINX_PORT/

# gets_report WHAT: the GETs of objects in nginx's log since it was last
# emptied: prints objects, requests and duplicates, sets OBJECTS and DUPS.
gets_report() {
	local counts
	counts=$(awk '$1 == "GET" && $2 ~ /^\/objects\// { n[$2]++ }
		END { for (u in n) { o++; r += n[u]; if (n[u] > 1) d += n[u] - 1 }
		      print o + 0, r + 0, d + 0 }' "$NGINX_ACCESS_LOG")
	read -r OBJECTS requests DUPS <<<"$counts"
	echo "   $1: $OBJECTS objects fetched, $requests requests, $DUPS duplicates"
	if [ "$DUPS" -gt 0 ]; then
		awk '$1 == "GET" && $2 ~ /^\/objects\// { n[$2]++ }
			END { for (u in n) if (n[u] > 1) print "   fetched " n[u] " times: " u }' \
			"$NGINX_ACCESS_LOG" | head -n 10
	fi
	grep -v ' 200 ' "$NGINX_ACCESS_LOG" | head -n 3 >"$W/non200" || true
	[ ! -s "$W/non200" ] || fail "nginx answered other than 200: $(cat "$W/non200")"
}

# readers MNT: three readers of every file of MNT in the background (pids
# appended to READERS): one compares each with the source, in order, one
# reads in reverse order, one in a shuffled order.
READERS=()
readers() {
	local m=$1
	(while read -r f; do
		cmp -s "$src/$f" "$m/$f" || { echo "differs: $m/$f" >&2; exit 1; }
	done <"$W/files") &
	READERS+=($!)
	(tac "$W/files" | while read -r f; do cat "$m/$f" >/dev/null || exit 1; done) &
	READERS+=($!)
	(shuf "$W/files" | while read -r f; do cat "$m/$f" >/dev/null || exit 1; done) &
	READERS+=($!)
}

wait_readers() {
	local pid rc=0
	for pid in "${READERS[@]}"; do
		wait "$pid" || rc=1
	done
	READERS=()
	[ "$rc" -eq 0 ] || fail "a reader failed (see above)"
}

# misses MNT: the mount's cache_misses, i.e. chunks it fetched.
misses() {
	mount_stats "$1" "$W/stats.json"
	stat_of "$W/stats.json" cache_misses
}

cache=$W/cache
step "two mounts of $url share $cache"
: >"$NGINX_ACCESS_LOG"
mount_bg "$W/mnt-a" "$url" share --cache "$cache" --prefetch none
pid_a=$MOUNT_PID
mount_bg "$W/mnt-b" "$url" share --cache "$cache" --prefetch none
pid_b=$MOUNT_PID

step "read every file through both mounts at once, 3 readers each"
t0=$(now_ms)
readers "$W/mnt-a"
readers "$W/mnt-b"
wait_readers
echo "   $((6 * nfiles)) file reads in $(($(now_ms) - t0)) ms; every byte equal to the source"
miss_a=$(misses "$W/mnt-a")
miss_b=$(misses "$W/mnt-b")
gets_report "both mounts"
echo "   chunks fetched: $miss_a by one mount, $miss_b by the other"
[ "$DUPS" -eq 0 ] || fail "$DUPS objects fetched more than once by two mounts sharing a cache"
[ "$OBJECTS" -ge $((nobj * 9 / 10)) ] ||
	fail "only $OBJECTS of $nobj objects fetched after reading every file"
[ "$miss_a" -gt 0 ] && [ "$miss_b" -gt 0 ] ||
	echo "   (one mount fetched everything: the readers did not overlap much)"
for f in .lock .fetch.lock; do
	[ "$(stat -c %a "$cache/$f")" = 600 ] || fail "$cache/$f is not 0600"
done
extra=$(find "$cache" -mindepth 2 -type f ! -regex '.*/[0-9a-f][0-9a-f]/[0-9a-f]*' | head -n 3)
[ -z "$extra" ] || fail "files in the cache that are no entries: $extra"

step "unmount both"
unmount_wait "$W/mnt-a" "$pid_a" 30
unmount_wait "$W/mnt-b" "$pid_b" 30
MOUNTS=()

if [ "$have_load" = 1 ]; then
	step "cfs-load --cache and a mount share a fresh directory, both read the model"
	cache2=$W/cache2
	: >"$NGINX_ACCESS_LOG"
	mount_bg "$W/mnt-c" "$url" share --cache "$cache2" --prefetch none
	pid_c=$MOUNT_PID
	cat "$W/mnt-c/model/model.safetensors" >"$W/model.out" &
	cat_pid=$!
	timeout 120 "$CFS_LOAD" --json --verify --cache "$cache2" "$url" share \
		model/model.safetensors >"$W/load.json" 2>"$W/load.err" ||
		fail "cfs-load exited $?: $(head -n 3 "$W/load.err")"
	wait "$cat_pid" || fail "reading the model through the mount failed"
	cmp -s "$W/model.out" "$src/model/model.safetensors" || fail "the model differs from the source"
	gets_report "cfs-load and a mount"
	[ "$DUPS" -eq 0 ] || fail "$DUPS objects fetched twice by cfs-load and a mount sharing a cache"
	unmount_wait "$W/mnt-c" "$pid_c" 30
	MOUNTS=()
fi
echo "PASS"
