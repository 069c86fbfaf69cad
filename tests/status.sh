#!/usr/bin/env bash
# --status answers while the mount hangs: with the serving daemon stopped (SIGSTOP) and a reader waiting on it, `cfs-mount --status` reads only the holder's state, /proc and /sys, and prints valid JSON within 3 s; after SIGCONT the reader finishes with the right bytes.
#
# A background mount (holder and daemon) of a local directory store; the
# reader asks for a file the kernel has not seen, so its request waits in
# the FUSE queue (fuse_requests_waiting >= 1 where fusectl is mounted).
# Env: CFS_PACK, CFS_MOUNT (set by tests/meson.build). Exit 77 without root
# (the holder keeps its state file only as root) or FUSE.
set -euo pipefail

source "$(dirname "$0")/lib.sh"

need_root "needs root (the holder's state file is in /run/cfs)"
need_fuse
command -v python3 >/dev/null 2>&1 || skip "python3 not installed"
: "${CFS_PACK:?}" "${CFS_MOUNT:?}"

make_workdir status
m=$W/mnt
daemon=
cleanup_extra() {
	# A stopped daemon would keep the mount (and the cleanup) waiting.
	[ -n "$daemon" ] && kill -CONT "$daemon" 2>/dev/null
	return 0
}

step "pack a small tree, mount it in the background"
mkdir -p "$W/src"
head -c 1048576 /dev/urandom > "$W/src/first"
head -c 1048576 /dev/urandom > "$W/src/second"
timeout 60 "$CFS_PACK" -q --tag app "$W/src" "$W/store" > /dev/null || fail "cfs-pack exited $?"
mkdir -p "$m"
MOUNTS+=("$m")
timeout 60 "$CFS_MOUNT" --cache "$W/cache" --log "$W/mount.log" "$W/store" app "$m" ||
	fail "cfs-mount exited $?: $(tail -n 3 "$W/mount.log")"
st=$(timeout 10 "$CFS_MOUNT" --status "$m") || fail "cfs-mount --status failed"
holder=$(echo "$st" | grep -o '"holder_pid":[0-9]*' | cut -d: -f2)
daemon=$(echo "$st" | grep -o '"daemon_pid":[0-9]*' | cut -d: -f2)
[ -n "$holder" ] && [ -n "$daemon" ] && [ "$daemon" != 0 ] || fail "no pids in --status: $st"
PIDS+=("$holder")
cmp "$W/src/first" "$m/first" || fail "first: wrong bytes"

step "stop the daemon, a reader waits on it, --status answers"
kill -STOP "$daemon"
(cat "$m/second" > "$W/second.out" 2> "$W/second.err"; echo $? > "$W/second.rc") &
reader=$!
sleep 1
[ -e "$W/second.rc" ] && fail "the reader finished while the daemon was stopped"
rc=0
st=$(timeout 3 "$CFS_MOUNT" --status "$m" 2> "$W/status.err") || rc=$?
[ "$rc" = 0 ] || fail "cfs-mount --status exited $rc with the daemon stopped (124: it hung): $(cat "$W/status.err")"
echo "   $st"
echo "$st" | python3 -c '
import json, sys
st = json.load(sys.stdin)
assert st["daemon_pid"] == int(sys.argv[1]), "daemon_pid"
assert st["daemon_state"] == "T", "daemon_state %r, want T (stopped)" % st["daemon_state"]
assert st["holder_alive"] is True, "holder_alive"
assert st["mounted"] is True, "mounted"
w = st["fuse_requests_waiting"]
assert w is None or w >= 1, "fuse_requests_waiting %r with a reader waiting" % w
' "$daemon" || fail "--status with the daemon stopped: not the JSON expected: $st"

step "SIGCONT: the reader finishes, the mount serves again"
kill -CONT "$daemon"
timeout 30 tail --pid="$reader" -f /dev/null || fail "the reader is still blocked 30 s after SIGCONT"
[ "$(cat "$W/second.rc")" = 0 ] || fail "the reader failed: $(cat "$W/second.err")"
cmp "$W/src/second" "$W/second.out" || fail "second: wrong bytes"
timeout 10 "$CFS_MOUNT" --stats "$m" > /dev/null || fail "--stats failed after SIGCONT"
st=$(timeout 3 "$CFS_MOUNT" --status "$m") || fail "--status failed after SIGCONT"
echo "$st" | grep -q '"restarts":0' || fail "the daemon was restarted: $st"

step "unmount"
unmount_wait "$m" "$holder" 20
daemon=
echo "PASS"
