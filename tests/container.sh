#!/usr/bin/env bash
# End to end: pack a busybox rootfs, mount it with cfs-mount and boot a runc container from the mount.
#
# Needs root, runc and FUSE; exits 77 (skip) without them. Env: CFS_PACK,
# CFS_MOUNT, CFS_LS, CFS_SRCDIR (set by tests/meson.build).
set -euo pipefail

skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || skip "needs root (runc and allow_other)"
command -v runc >/dev/null 2>&1 || skip "runc not installed"
command -v fusermount3 >/dev/null 2>&1 || skip "fusermount3 not installed"
[ -c /dev/fuse ] || skip "/dev/fuse missing"
: "${CFS_PACK:?}" "${CFS_MOUNT:?}" "${CFS_LS:?}"
srcdir=${CFS_SRCDIR:-$(cd "$(dirname "$0")/.." && pwd)}

t=$(mktemp -d /tmp/cfs-container.XXXXXX)
m=$t/mnt
cid=cfs-test-$$-$RANDOM
cleanup() {
	runc delete -f "$cid" >/dev/null 2>&1 || true
	fusermount3 -u "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
	rm -rf "$t"
}
trap cleanup EXIT

# make_bundle DIR ROOT CMD: an OCI bundle (plain `runc spec`) that runs
# /bin/sh -c CMD, not on a terminal, with the read-only root ROOT.
make_bundle() {
	local b=$1
	case "$2$3" in
	*'"'* | *\\* | *'&'*) fail "make_bundle: no \", \\ or & in root or command" ;;
	esac
	mkdir -p "$b"
	(cd "$b" && runc spec)
	CFS_ROOT=$2 CFS_CMD=$3 awk '
		BEGIN { root = ENVIRON["CFS_ROOT"]; cmd = ENVIRON["CFS_CMD"] }
		skip { if ($0 ~ /^[ \t]*\],?[ \t]*$/) { skip = 0; print }; next }
		/"args": \[/ {
			print
			match($0, /^[ \t]*/)
			printf "%s\t\"/bin/sh\", \"-c\", \"%s\"\n", substr($0, 1, RLENGTH), cmd
			skip = 1
			next
		}
		/"terminal": true/ { sub(/true/, "false") }
		/"path": "rootfs"/ { sub(/"rootfs"/, "\"" root "\"") }
		/"readonly": false/ { sub(/false/, "true") }
		{ print }' "$b/config.json" > "$b/config.json.new"
	mv "$b/config.json.new" "$b/config.json"
	grep -q "\"path\": \"$2\"" "$b/config.json" || fail "make_bundle: root path not set"
	grep -q '"terminal": false' "$b/config.json" || fail "make_bundle: terminal not off"
}

echo "# rootfs"
bash "$srcdir/scripts/mkrootfs.sh" "$t/rootfs"

echo "# pack"
timeout 120 "$CFS_PACK" --tag busybox "$t/rootfs" "$t/store" > "$t/pack.out" ||
	fail "cfs-pack exited $?"
ref=$(tail -n 1 "$t/pack.out")
[[ $ref =~ ^sha256:[0-9a-f]{64}$ ]] || fail "last line of cfs-pack output is not a reference: '$ref'"
[ "$(cat "$t/store/tags/busybox")" = "$ref" ] || fail "tags/busybox does not hold $ref"
echo "reference $ref"

# cfs-ls sees the busybox binary and the applet links.
timeout 30 "$CFS_LS" "$t/store" "$ref" > "$t/ls.out" || fail "cfs-ls exited $?"
grep -q 'bin/busybox' "$t/ls.out" || fail "cfs-ls output has no bin/busybox"

echo "# mount"
mkdir "$m"
timeout 30 "$CFS_MOUNT" -o allow_other,default_permissions,dev,suid \
	--cache "$t/cache" "$t/store" busybox "$m" || fail "cfs-mount exited $?"
mountpoint -q "$m" || fail "cfs-mount returned but $m is not a mount point"

# What the container must see, computed from the source tree.
want_bins=$(find "$t/rootfs/bin" -mindepth 1 -maxdepth 1 | wc -l)
want_passwd=$(sha256sum < "$t/rootfs/etc/passwd" | cut -d' ' -f1)
want_busybox=$(sha256sum < "$t/rootfs/bin/busybox" | cut -d' ' -f1)

cmd="echo hello from a cfs container; echo uid=\$(id -u); echo bins=\$(ls /bin | wc -l)"
cmd+="; echo passwd=\$(sha256sum < /etc/passwd | cut -d' ' -f1)"
cmd+="; echo busybox=\$(sha256sum < /bin/busybox | cut -d' ' -f1)"
cmd+="; echo sh=\$(readlink /bin/sh)"
cmd+="; if touch /probe 2>/dev/null; then echo root=rw; else echo root=ro; fi"
cmd+="; echo root-user=\$(head -n 1 /etc/passwd | cut -d: -f1)"
make_bundle "$t/bundle" "$m" "$cmd"

echo "# runc run $cid"
rc=0
timeout 60 runc run -b "$t/bundle" "$cid" > "$t/out" 2> "$t/err" < /dev/null || rc=$?
sed 's/^/  | /' "$t/out"
if [ "$rc" -ne 0 ]; then
	sed 's/^/  runc: /' "$t/err" >&2
	fail "runc run exited $rc"
fi

expect() {
	grep -qxF -- "$1" "$t/out" || fail "container output lacks '$1'"
}
[ "$(head -n 1 "$t/out")" = "hello from a cfs container" ] || fail "first line is not the greeting"
expect "uid=0"
expect "bins=$want_bins"
expect "passwd=$want_passwd"
expect "busybox=$want_busybox"
expect "sh=/bin/busybox"
expect "root=ro"
expect "root-user=root"

runc delete -f "$cid" >/dev/null 2>&1 || true
mountpoint -q "$m" || fail "the mount went away while the container ran"
timeout 30 fusermount3 -u "$m" || fail "unmount failed"
echo "PASS"
