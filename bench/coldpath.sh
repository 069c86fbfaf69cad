#!/usr/bin/env bash
# The CPU cost of the cold path: fetch, decompress, verify and write to the
# cache, with no reader and no FUSE traffic.  Packs a tree, mounts it with
# --prefetch all and a fresh cache, waits until the stream is done and the
# pool idle, and takes the daemon's CPU (utime + stime) from /proc: over an
# http store (nginx), and over a local directory store, which splits curl's
# share from the rest.  The peer, in the same run: `curl | zstd -d | tar -x`
# of the same tree's tar.zst.  Prints CPU-s per GB fetched (stored bytes)
# for each, median of RUNS, the page cache dropped before every run.
#
#   bench/coldpath.sh [SOURCE_DIR...]   (default: /usr/lib/x86_64-linux-gnu /usr/share)
#
# Every cold run writes (the cache, or tar's tree) into a freshly made
# ext4 filesystem on a loop file under CACHE_DIR: a fresh node's disk.  On a
# directory that just lost thousands of files, ext4 spends a tenth of the
# daemon's CPU skipping recently deleted inodes for every file it creates.
#
# Environment: RUNS (3), BENCH_DIR (/dev/shm: the server side), CACHE_DIR
# (/var/tmp: the client side, a real disk), BASE_MOUNT=PATH to an older
# cfs-mount to run beside this one (rows "base"; its file must be named
# cfs-mount), PERF=1 to record the http mount's daemon of the last run with
# perf (into $PERF_OUT, default /var/tmp/coldpath.perf.data).  Needs root
# (drop_caches, FUSE, loop mounts), mkfs.ext4, nginx, zstd and curl.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

runs=${RUNS:-3}
[ "$(id -u)" -eq 0 ] || die "needs root (drop_caches, FUSE)"
need_built "$pack" "$mnt_bin"
find_missing nginx:nginx zstd:zstd curl:curl mkfs.ext4:e2fsprogs
apt_install_missing
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
[ $# -gt 0 ] || set -- /usr/lib/x86_64-linux-gnu /usr/share
for s in "$@"; do [ -d "$s" ] || die "$s: not a directory"; done

make_scratch coldpath
mkdir -p "$W/srv" "$W/res" "$C/mnt" "$C/disk"
mp=$C/mnt
MOUNTS+=("$mp")
# (lib.sh's cleanup has a local mp of its own: name the paths here)
cleanup_extra() {
	if mountpoint -q "$C/mnt" 2> /dev/null; then
		fusermount3 -u "$C/mnt" 2> /dev/null || umount -l "$C/mnt" || true
	fi
	if mountpoint -q "$C/disk" 2> /dev/null; then umount -l "$C/disk" || true; fi
	rm -f "$C/disk.img"
}
# fresh_disk: an empty ext4 filesystem at $C/disk
fresh_disk() {
	truncate -s 16G "$C/disk.img"
	mkfs.ext4 -q -F "$C/disk.img" || die "mkfs.ext4 failed"
	mount -o loop "$C/disk.img" "$C/disk" || die "loop mount failed"
}
drop_disk() {
	umount "$C/disk" || umount -l "$C/disk"
	rm -f "$C/disk.img"
}

note "tar.zst of $*"
tar -C / -cf - --warning=none "${@#/}" | zstd -3 -T0 -q -o "$W/srv/tree.tar.zst"
note "cfs-pack"
"$pack" -q -t tree "$W/srv/tree.tar.zst" "$W/srv/store" > /dev/null
tarzst_bytes=$(stat -c %s "$W/srv/tree.tar.zst")
start_nginx tree.tar.zst

# daemon_pid: the cfs-mount serving $mp (the holder's child: the newest
# cfs-mount naming $mp)
daemon_pid() {
	local p found=
	for p in $(pgrep -x cfs-mount); do
		tr '\0' '\n' < "/proc/$p/cmdline" 2> /dev/null | grep -qxF -- "$mp" && found=$p
	done
	[ -n "$found" ] && echo "$found"
}
stat_of() { json_get "$("$mnt_bin" --stats "$mp" 2> /dev/null)" "$1"; }
stream_done() {
	grep -q 'stream queued' "$W/mount.log" 2> /dev/null && [ "$(stat_of readahead_pending)" = 0 ]
}

# run_cfs KEY BIN STORE [PERF]: one cold mount by BIN streaming the whole
# image; appends "cpu_s fetched_bytes wall_s" to $W/res/KEY
run_cfs() {
	local key=$1 bin=$2 store=$3 cache=$C/disk/cache t0 pid cpu bytes i perf_pid=
	fresh_disk
	: > "$W/mount.log"
	drop_caches
	t0=$(now)
	"$bin" -v --prefetch all --cache "$cache" --log "$W/mount.log" "$store" tree "$mp" ||
		die "mount failed: $(tail -n 3 "$W/mount.log")"
	pid=$(daemon_pid) || die "no daemon for $mp"
	if [ -n "${4:-}" ]; then
		perf record -g -o "${PERF_OUT:-/var/tmp/coldpath.perf.data}" -p "$pid" 2> /dev/null &
		perf_pid=$!
	fi
	for ((i = 0; i < 60000; i++)); do
		stream_done && break
		sleep 0.05
	done
	stream_done || die "stream did not finish: $(tail -n 3 "$W/mount.log")"
	local wall
	wall=$(calc "($(now) - $t0) / 1e9")
	# The ring's last writes land within moments of the pool going idle.
	sleep 0.5
	cpu=$(calc "$(cpu_ticks "$pid") / $hz")
	bytes=$(stat_of store_get_bytes)
	[ -z "$perf_pid" ] || { kill -INT "$perf_pid"; wait "$perf_pid" || true; }
	fusermount3 -u "$mp" 2> /dev/null || umount "$mp"
	# The daemon lets go of the cache directory as it exits.
	for ((i = 0; i < 400; i++)); do kill -0 "$pid" 2> /dev/null || break; sleep 0.05; done
	echo "$cpu $bytes $wall" >> "$W/res/$key"
	drop_disk
}

# run_tarzst: the peer; appends "cpu_s fetched_bytes wall_s"
run_tarzst() {
	local x=$C/disk/x t0 cpu
	fresh_disk
	mkdir -p "$x"
	drop_caches
	t0=$(now)
	# shellcheck disable=SC2016 # expanded by that sh
	cpu=$( { /usr/bin/time -f '%U %S' sh -c \
		'curl -sf "$1" | zstd -dcq | tar -x -C "$2"' sh "http://127.0.0.1:$ngx_port/tree.tar.zst" "$x" \
		2>&1 >/dev/null; } | awk 'NF == 2 { print $1 + $2 }' | tail -n 1)
	echo "$cpu $tarzst_bytes $(calc "($(now) - $t0) / 1e9")" >> "$W/res/tarzst"
	drop_disk
}

keys=(http dir)
[ -z "${BASE_MOUNT:-}" ] || keys+=(http-base dir-base)
keys+=(tarzst)
for ((r = 1; r <= runs; r++)); do
	note "run $r/$runs"
	perf_arg=
	[ "${PERF:-0}" != 1 ] || [ "$r" != "$runs" ] || perf_arg=perf
	run_cfs http "$mnt_bin" "http://127.0.0.1:$ngx_port/store" $perf_arg
	run_cfs dir "$mnt_bin" "$W/srv/store"
	if [ -n "${BASE_MOUNT:-}" ]; then
		run_cfs http-base "$BASE_MOUNT" "http://127.0.0.1:$ngx_port/store"
		run_cfs dir-base "$BASE_MOUNT" "$W/srv/store"
	fi
	run_tarzst
done

# per_gb KEY: the median CPU-s per GB fetched of KEY's runs
per_gb() { awk '{ print $1 / ($2 / 1e9) }' "$W/res/$1" | median; }
printf '%-28s %10s %12s %10s %14s\n' method cpu_s mb_fetched wall_s cpu_s_per_gb
for k in "${keys[@]}"; do
	case $k in
	http) name="cfs, http store" ;;
	dir) name="cfs, local dir store" ;;
	http-base) name="base cfs, http store" ;;
	dir-base) name="base cfs, local dir store" ;;
	tarzst) name="curl | zstd -d | tar -x" ;;
	esac
	printf '%-28s %10.2f %12.1f %10.2f %14.2f\n' "$name" "$(col "$k" 1)" "$(calc "$(col "$k" 2) / 1e6")" \
		"$(col "$k" 3)" "$(per_gb "$k")"
done
echo "ratio cfs http / tar.zst: $(calc "$(per_gb http) / $(per_gb tarzst)")"
