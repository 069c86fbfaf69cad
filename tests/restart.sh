#!/usr/bin/env bash
# Containers outlive the daemon: a background mount (its holder keeps the
# FUSE connection) is read from by plain readers, an mmap reader, binaries
# executed from the image and a runc container, while its serving daemon is
# killed with SIGKILL 20 times at random moments (right after the mount
# too) and upgraded 10 times with cfs-mount --upgrade (the holder re-execs
# itself, then a new daemon replaces the old one).  Every byte read must
# be right, no reader may see an error (ENOTCONN, ECONNABORTED, EIO, ...),
# the container's output must be complete, the worst stall is reported and
# bounded, --status must count it all, and the mount must unmount cleanly.
#
# The store is served by nginx behind cfs-faultproxy (5 ms), the disk cache
# is small and every daemon prefetches the whole image as it starts, so the
# daemon is fetching and evicting all along: kills land on requests in
# flight, which FUSE_NOTIFY_RESEND hands to the next daemon.  RESTART_KILLS and RESTART_UPGRADES change the counts.
set -euo pipefail

source "$(dirname "$0")/lib.sh"

need_root "needs root (mounts, runc, drop_caches)"
need_fuse
need_nginx
command -v runc >/dev/null 2>&1 || {
	[ "${CI:-}" = true ] && fail "runc is not installed (required in CI)"
	skip "runc not installed"
}
command -v python3 >/dev/null 2>&1 || skip "python3 not installed"
: "${CFS_PACK:?}" "${CFS_MOUNT:?}" "${CFS_FAULTPROXY:?}"
srcdir=${CFS_SRCDIR:-$(cd "$(dirname "$0")/.." && pwd)}
kills=${RESTART_KILLS:-20}
upgrades=${RESTART_UPGRADES:-10}

make_workdir restart
m=$W/mnt
cid=cfs-restart-$$-$RANDOM
READERS=()
cleanup_extra() {
	local p
	for p in "${READERS[@]}"; do kill "$p" 2>/dev/null; done
	runc delete -f "$cid" >/dev/null 2>&1
	return 0
}

step "a tree: busybox, 24 files of 1 MiB, 300 small files"
bash "$srcdir/scripts/mkrootfs.sh" "$W/src" > /dev/null
mkdir -p "$W/src/data/big" "$W/src/data/small"
for i in $(seq -w 1 24); do head -c 1048576 /dev/urandom > "$W/src/data/big/f$i"; done
for i in $(seq 1 300); do head -c $((100 + i * 37)) /dev/urandom > "$W/src/data/small/s$i"; done
(cd "$W/src" && find data bin/busybox -type f -print0 | sort -z | xargs -0 md5sum) > "$W/sums"
# The container checks the same files with the image's own copy of the list.
sed 's|  |  /|' "$W/sums" > "$W/src/sums.txt"
timeout 120 "$CFS_PACK" -q --tag app "$W/src" "$W/store" > /dev/null || fail "cfs-pack exited $?"

start_nginx "$W/store"
proxy_start "$NGINX_PORT"
proxy_set latency_ms=5
url=http://127.0.0.1:$PROXY_PORT/

step "mount in the background (holder and daemon), a kill right away"
mkdir -p "$m"
MOUNTS+=("$m")
# --prefetch all: every daemon starts by fetching the whole image (through
# the readahead pool), so kills also land in mount-time prefetch.
timeout 60 "$CFS_MOUNT" --cache "$W/cache" --cache-size 8M --mem-cache 16M --log "$W/mount.log" \
	--prefetch all -o allow_other,default_permissions,dev,suid "$url" app "$m" ||
	fail "cfs-mount exited $?: $(tail -n 3 "$W/mount.log")"
status_of() { "$CFS_MOUNT" --status "$m"; }
st=$(status_of) || fail "cfs-mount --status failed"
echo "   $st"
holder=$(echo "$st" | grep -o '"holder_pid":[0-9]*' | cut -d: -f2)
PIDS+=("$holder")
echo "$st" | grep -q '"resend":true' || skip "the kernel has no FUSE_NOTIFY_RESEND (Linux >= 6.9)"
daemon_pid() { status_of | grep -o '"daemon_pid":[0-9]*' | cut -d: -f2; }
kill -9 "$(daemon_pid)"

step "readers: checksums in loops, an mmap reader, busybox executed from the image, a runc container"
# reader N: checks every file against the sums in a loop until told to
# stop; logs errors and its slowest pass-through of one file.
reader() {
	local n=$1 worst=0 t0 t1 line sum path
	while [ ! -e "$W/stop" ]; do
		while read -r sum path; do
			t0=$(now_ms)
			line=$(md5sum "$m/$path" 2>&1) || { echo "reader $n: $path: $line" >> "$W/errors"; continue; }
			t1=$(now_ms)
			[ "${line%% *}" = "$sum" ] || echo "reader $n: $path: wrong bytes" >> "$W/errors"
			((t1 - t0 > worst)) && worst=$((t1 - t0)) && echo "$worst $path" > "$W/worst.$n"
		done < <(shuf "$W/sums")
		echo x >> "$W/passes.$n"
	done
}
for n in 1 2 3; do
	reader "$n" &
	READERS+=($!)
done
# mmap reader: maps the big files and compares them page by page.
python3 - "$m" "$W/sums" "$W/stop" "$W/errors" <<'EOF' &
import hashlib, mmap, os, sys, random
m, sums, stop, errors = sys.argv[1:5]
want = [l.split() for l in open(sums) if "/big/" in l]
while not os.path.exists(stop):
    random.shuffle(want)
    for s, p in want:
        try:
            with open(os.path.join(m, p), "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mm:
                if hashlib.md5(mm).hexdigest() != s:
                    open(errors, "a").write("mmap: %s: wrong bytes\n" % p)
        except OSError as e:
            open(errors, "a").write("mmap: %s: %s\n" % (p, e))
EOF
READERS+=($!)
# executing binaries from the image, and holding one file open throughout
exec 7<"$m/data/big/f01"
(
	while [ ! -e "$W/stop" ]; do
		"$m/bin/busybox" true || echo "exec: busybox true failed: $?" >> "$W/errors"
		"$m/bin/busybox" md5sum "$m/data/small/s7" > /dev/null || echo "exec: busybox md5sum failed" >> "$W/errors"
	done
) &
READERS+=($!)
# a container on the mount, checking its own files in a loop
# (for as long as the kills and upgrades last: about 25 s)
ccmd="end=\$((\$(date +%s) + 30)); while [ \$(date +%s) -lt \$end ]; do md5sum -c -s /sums.txt || echo BAD; done; echo container-done"
bash "$srcdir/scripts/mkbundle.sh" "$W/bundle" "$m" -- /bin/sh -c "$ccmd" > /dev/null ||
	fail "mkbundle.sh exited $?"
touch "$m/.probe" 2>/dev/null && fail "the mount is writable"
(
	rc=0
	timeout 600 runc run -b "$W/bundle" "$cid" > "$W/container.out" 2> "$W/container.err" || rc=$?
	echo "$rc" > "$W/container.rc"
) &
READERS+=($!)

step "$kills kills at random moments, $upgrades upgrades"
sleep 1
t0=$(now_ms)
for action in $( (yes K | head -n "$kills"; yes U | head -n "$upgrades") | shuf); do
	sleep "0.$((RANDOM % 9 + 3))"
	if [ "$action" = U ]; then
		timeout 150 "$CFS_MOUNT" --upgrade "$m" > /dev/null 2> "$W/upgrade.err" ||
			fail "cfs-mount --upgrade failed: $(cat "$W/upgrade.err")"
	else
		pid=$(daemon_pid)
		[ -n "$pid" ] && [ "$pid" != 0 ] && kill -9 "$pid" 2>/dev/null || true
	fi
done
echo "   done in $(($(now_ms) - t0)) ms"
sleep 2
touch "$W/stop"
wait_readers() {
	local p
	for p in "${READERS[@]}"; do
		timeout 120 tail --pid="$p" -f /dev/null || fail "a reader is still blocked 120 s after the stop"
	done
}
wait_readers
exec 7<&-

step "results"
st=$(status_of)
echo "   $st"
restarts=$(echo "$st" | grep -o '"restarts":[0-9]*' | cut -d: -f2)
ups=$(echo "$st" | grep -o '"upgrades":[0-9]*' | cut -d: -f2)
echo "   restarts=$restarts upgrades=$ups passes: $(cat "$W"/passes.* 2>/dev/null | wc -l)"
worst=$(cat "$W"/worst.* 2>/dev/null | sort -n | tail -n 1)
echo "   worst stall of one file read: ${worst:-none} ms"
echo "   container: rc $(cat "$W/container.rc"), $(wc -l < "$W/container.out") lines"
if [ -s "$W/errors" ]; then
	head -n 20 "$W/errors"
	fail "$(wc -l < "$W/errors") read errors while the daemon was killed and upgraded"
fi
[ "$restarts" -ge "$kills" ] || fail "restarts=$restarts: fewer than the $kills kills (some kill found no daemon?)"
[ "$ups" -eq "$upgrades" ] || fail "upgrades=$ups, want $upgrades"
execs=$(echo "$st" | grep -o '"holder_execs":[0-9]*' | cut -d: -f2)
[ "$execs" -eq "$upgrades" ] || fail "holder_execs=$execs: the holder did not re-exec itself on each upgrade"
[ "$(echo "$st" | grep -o '"holder_pid":[0-9]*' | cut -d: -f2)" = "$holder" ] ||
	fail "the holder's pid changed across its upgrades"
[ "$(cat "$W/container.rc")" = 0 ] || fail "the container exited $(cat "$W/container.rc"): $(tail -n 3 "$W/container.err")"
grep -q BAD "$W/container.out" && fail "the container saw bad checksums"
[ "$(tail -n 1 "$W/container.out")" = container-done ] || fail "the container's output is incomplete"
[ "${worst%% *}" -lt 10000 ] || fail "a read stalled ${worst%% *} ms"
[ "$(cat "$W"/passes.* | wc -l)" -ge 3 ] || fail "the readers made fewer than 3 passes"

step "unmount: holder and daemon exit, state removed"
unmount_wait "$m" "$holder" 20
"$CFS_MOUNT" --status "$m" > /dev/null 2>&1 && fail "--status still answers after the unmount"
echo "PASS"
