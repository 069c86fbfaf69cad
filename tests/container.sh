#!/usr/bin/env bash
# End to end: pack a busybox rootfs, mount it with cfs-mount and boot a runc container from the mount.
#
# Needs root, runc and FUSE; exits 77 (skip) without them. Env: CFS_PACK,
# CFS_MOUNT, CFS_LS, CFS_SRCDIR (set by tests/meson.build).
set -euo pipefail

source "$(dirname "$0")/lib.sh"

need_root "needs root (runc and allow_other)"
need_cmds runc
need_fuse
: "${CFS_PACK:?}" "${CFS_MOUNT:?}" "${CFS_LS:?}"
srcdir=${CFS_SRCDIR:-$(cd "$(dirname "$0")/.." && pwd)}

make_workdir container
m=$W/mnt
MOUNTS+=("$m")
cid=cfs-test-$$-$RANDOM
cleanup_extra() {
	runc delete -f "$cid" >/dev/null 2>&1
}

echo "# rootfs"
bash "$srcdir/scripts/mkrootfs.sh" "$W/rootfs"

echo "# pack"
timeout 120 "$CFS_PACK" --tag busybox "$W/rootfs" "$W/store" > "$W/pack.out" ||
	fail "cfs-pack exited $?"
ref=$(ref_of "$W/pack.out")
[ "$(cat "$W/store/tags/busybox")" = "$ref" ] || fail "tags/busybox does not hold $ref"
echo "reference $ref"

# cfs-ls sees the busybox binary and the applet links.
timeout 30 "$CFS_LS" "$W/store" "$ref" > "$W/ls.out" || fail "cfs-ls exited $?"
grep -q 'bin/busybox' "$W/ls.out" || fail "cfs-ls output has no bin/busybox"

echo "# mount"
mkdir "$m"
timeout 30 "$CFS_MOUNT" -o allow_other,default_permissions,dev,suid \
	--cache "$W/cache" "$W/store" busybox "$m" || fail "cfs-mount exited $?"
mountpoint -q "$m" || fail "cfs-mount returned but $m is not a mount point"

# What the container must see, computed from the source tree.
want_bins=$(find "$W/rootfs/bin" -mindepth 1 -maxdepth 1 | wc -l)
want_passwd=$(sha256sum < "$W/rootfs/etc/passwd" | cut -d' ' -f1)
want_busybox=$(sha256sum < "$W/rootfs/bin/busybox" | cut -d' ' -f1)

cmd="echo hello from a cfs container; echo uid=\$(id -u); echo bins=\$(ls /bin | wc -l)"
cmd+="; echo passwd=\$(sha256sum < /etc/passwd | cut -d' ' -f1)"
cmd+="; echo busybox=\$(sha256sum < /bin/busybox | cut -d' ' -f1)"
cmd+="; echo sh=\$(readlink /bin/sh)"
cmd+="; if touch /probe 2>/dev/null; then echo root=rw; else echo root=ro; fi"
cmd+="; echo root-user=\$(head -n 1 /etc/passwd | cut -d: -f1)"
bash "$srcdir/scripts/mkbundle.sh" "$W/bundle" "$m" -- /bin/sh -c "$cmd" ||
	fail "mkbundle.sh exited $?"

echo "# runc run $cid"
rc=0
timeout 60 runc run -b "$W/bundle" "$cid" > "$W/out" 2> "$W/err" < /dev/null || rc=$?
sed 's/^/  | /' "$W/out"
if [ "$rc" -ne 0 ]; then
	sed 's/^/  runc: /' "$W/err" >&2
	fail "runc run exited $rc"
fi

expect() {
	grep -qxF -- "$1" "$W/out" || fail "container output lacks '$1'"
}
[ "$(head -n 1 "$W/out")" = "hello from a cfs container" ] || fail "first line is not the greeting"
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
