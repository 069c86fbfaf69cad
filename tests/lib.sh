# shellcheck shell=bash
# Helpers for the shell tests, sourced first thing: source "$(dirname "$0")/lib.sh"
#
# Exit 77 skips a test.  make_workdir gives a scratch directory $W and an
# exit trap that runs the test's own cleanup_extra (if it defines one),
# unmounts what is in MOUNTS, ends the daemons in PIDS (by pid) and removes
# $W, keeping the exit status.

skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*" >&2; exit 1; }
step() { echo "== $*"; }

need_root() {
	[ "$(id -u)" -eq 0 ] || skip "${1:-needs root}"
}

# need_fuse: fusermount3, /dev/fuse and the right to open it.
need_fuse() {
	command -v fusermount3 >/dev/null 2>&1 || skip "fusermount3 not installed"
	[ -c /dev/fuse ] || skip "/dev/fuse missing"
	[ "$(id -u)" -eq 0 ] || [ -w /dev/fuse ] || skip "no access to /dev/fuse"
}

MOUNTS=() # mountpoints to unmount at exit
PIDS=()   # daemons to end at exit

# make_workdir NAME: creates /tmp/cfs-NAME.XXXXXX as $W and sets the traps.
make_workdir() {
	W=$(mktemp -d "/tmp/cfs-$1.XXXXXX")
	trap lib_cleanup EXIT
	trap 'exit 130' INT TERM
}

unmount_quiet() {
	fusermount3 -u "$1" 2>/dev/null || umount "$1" 2>/dev/null || umount -l "$1" 2>/dev/null || true
}

lib_cleanup() {
	local rc=$? mp pid
	if declare -F cleanup_extra >/dev/null; then
		cleanup_extra || true
	fi
	for mp in "${MOUNTS[@]}"; do
		unmount_quiet "$mp"
	done
	# Only the daemons this test started, by pid.
	for pid in "${PIDS[@]}"; do
		alive "$pid" && kill "$pid" 2>/dev/null
	done
	# --one-file-system: never descend into a mount that would not go away.
	rm -rf --one-file-system "$W"
	exit "$rc"
}

# alive PID: running, and not a zombie that nobody has reaped yet (daemons
# are reparented to whatever pid 1 is, which may reap late).
alive() {
	local stat
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	stat=${stat##*) }
	[ "${stat%% *}" != Z ]
}

# unmount_wait MOUNTPOINT [PID [SECONDS]]: unmounts, then waits until the
# mount is gone and the daemon PID (if given) has exited, SECONDS (default
# 10) for each; fails the test if either is still there.
unmount_wait() {
	local mp=$1 pid=${2:-} secs=${3:-10} i
	timeout 30 fusermount3 -u "$mp" || fail "fusermount3 -u $mp failed"
	for ((i = 0; i < secs * 10; i++)); do
		mountpoint -q "$mp" || break
		sleep 0.1
	done
	mountpoint -q "$mp" && fail "$mp still mounted $secs s after fusermount3 -u"
	if [ -n "$pid" ]; then
		for ((i = 0; i < secs * 10; i++)); do
			alive "$pid" || break
			sleep 0.1
		done
		alive "$pid" && fail "cfs-mount daemon $pid still running $secs s after unmount"
	fi
	return 0
}

# ref_of FILE: the last line of cfs-pack's stdout, checked for the
# sha256:<64 hex> format.
ref_of() {
	local ref
	ref=$(tail -n 1 "$1")
	[[ $ref =~ ^sha256:[0-9a-f]{64}$ ]] ||
		fail "cfs-pack's last stdout line is not sha256:<64 hex>: '$ref' (output in $1)"
	echo "$ref"
}

# stat_of FILE KEY: the integer value of "KEY" in cfs-mount's stats JSON.
stat_of() {
	local v
	v=$(grep -o "\"$2\"[[:space:]]*:[[:space:]]*[0-9]*" "$1" | grep -o '[0-9]*$') ||
		fail "no \"$2\" in $1: $(cat "$1")"
	printf '%s\n' "$v"
}
