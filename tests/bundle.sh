#!/usr/bin/env bash
# An OCI image (umoci) packed by cfs-pack boots as itself: cfs-mount --bundle
# makes a runc bundle whose config.json comes from the image config, the
# container runs the image's entrypoint as the image's user and writes into
# the overlay, never into the image; --bundle-remove takes it all down; and
# mount -t fuse.cfs (mount(8) through mount.fuse3) mounts an image, from the
# command line and from an fstab line.
#
# Needs root, runc, umoci and FUSE; exits 77 (skip) without them, except in
# CI, where they are installed and their absence fails.
set -euo pipefail

source "$(dirname "$0")/lib.sh"

need_root "needs root (overlay, runc, mount(8))"
need_fuse
# mount(8) finds mount.fuse3 in /sbin even where PATH does not.
PATH=$PATH:/sbin need_ci_tools runc umoci mount.fuse3
: "${CFS_PACK:?}" "${CFS_MOUNT:?}" "${CFS_LS:?}"
srcdir=${CFS_SRCDIR:-$(cd "$(dirname "$0")/.." && pwd)}

make_workdir bundle
B=$W/bundle
cid=cfs-bundle-$$-$RANDOM
link=/usr/local/sbin/cfs
made_link=0
cleanup_extra() {
	runc delete -f "$cid" >/dev/null 2>&1
	umount "$W/m" 2>/dev/null
	"$CFS_MOUNT" --bundle-remove "$B" >/dev/null 2>&1
	umount -l "$B/rootfs" 2>/dev/null
	umount -l "$B/lower" 2>/dev/null
	[ "$made_link" = 1 ] && rm -f "$link"
	return 0
}

step "an OCI image with umoci: busybox, a user, an entrypoint"
bash "$srcdir/scripts/mkrootfs.sh" "$W/rootfs" > /dev/null
echo 'app:x:1000:1000::/home/app:/bin/sh' >> "$W/rootfs/etc/passwd"
printf 'app:x:1000:\nextra:x:1234:app\n' >> "$W/rootfs/etc/group"
mkdir -p "$W/rootfs/home/app" "$W/rootfs/srv"
echo "from the image" > "$W/rootfs/srv/data"
(cd "$W" && umoci init --layout oci && umoci new --image oci:app &&
	umoci unpack --image oci:app ub > /dev/null && cp -a rootfs/. ub/rootfs/ &&
	umoci repack --image oci:app ub) > "$W/umoci.log" 2>&1 || fail "umoci: $(tail -n 3 "$W/umoci.log")"
# The entrypoint prints what the runtime gave it, then writes where the
# image is read-only.
umoci config --image "$W/oci:app" --config.entrypoint /bin/sh --config.cmd -c \
	--config.cmd 'echo "id=$(id -u):$(id -g) groups=$(id -G) cwd=$(pwd) greeting=$GREETING"; echo written > /tmp/out; cat /srv/data' \
	--config.env GREETING=hello --config.workingdir /home/app --config.user app \
	--config.label org.example.kind=test >> "$W/umoci.log" 2>&1 || fail "umoci config failed"

timeout 120 "$CFS_PACK" -q --tag app "oci:$W/oci:app" "$W/store" > "$W/pack.out" || fail "cfs-pack exited $?"
ref=$(ref_of "$W/pack.out")
objects_before=$(find "$W/store" -type f -exec md5sum {} + | sort | md5sum)

step "cfs-mount --bundle: mounts, overlay, config.json"
timeout 60 "$CFS_MOUNT" --cache "$W/cache" --bundle "$B" "$W/store" app > "$W/bundle.log" 2>&1 ||
	fail "cfs-mount --bundle exited $?: $(cat "$W/bundle.log")"
mountpoint -q "$B/lower" || fail "$B/lower is not a mount point"
mountpoint -q "$B/rootfs" || fail "$B/rootfs is not a mount point"
[ -s "$B/config.json" ] || fail "no config.json"
for want in '"/bin/sh"' '"GREETING=hello"' '"cwd": "/home/app"' '"uid": 1000' '"gid": 1000' \
	'"org.example.kind": "test"' '"path": "rootfs"' '"PATH=/usr/local/sbin'; do
	grep -qF "$want" "$B/config.json" || fail "config.json lacks $want: $(cat "$B/config.json")"
done
grep -A3 '"additionalGids"' "$B/config.json" | grep -q 1234 ||
	fail "config.json: app's supplementary group 1234 missing"

step "runc runs the image's entrypoint"
timeout 60 runc run -b "$B" "$cid" > "$W/run.out" 2> "$W/run.err" ||
	fail "runc run exited $?: $(cat "$W/run.err")"
cat "$W/run.out"
grep -qx 'id=1000:1000 groups=1000 1234 cwd=/home/app greeting=hello' "$W/run.out" ||
	fail "the entrypoint saw another process setup: $(head -n 1 "$W/run.out")"
grep -qx 'from the image' "$W/run.out" || fail "the container did not read /srv/data"
[ "$(cat "$B/upper/tmp/out" 2>/dev/null)" = written ] ||
	fail "the container's write is not in the overlay's upper directory"
[ ! -e "$B/lower/tmp/out" ] || fail "the write reached the image"
runc delete -f "$cid" > /dev/null 2>&1 || true
[ "$(find "$W/store" -type f -exec md5sum {} + | sort | md5sum)" = "$objects_before" ] ||
	fail "the store changed while the container ran"

step "--bundle-remove takes it down"
timeout 60 "$CFS_MOUNT" --bundle-remove "$B" || fail "--bundle-remove exited $?"
grep -q " $B/" /proc/mounts && fail "still mounted under $B: $(grep " $B/" /proc/mounts)"
[ ! -e "$B" ] || fail "$B still exists: $(ls -la "$B")"

step "a user the image does not have: one line, nothing left mounted"
umoci config --image "$W/oci:app" --config.user nosuchuser >> "$W/umoci.log" 2>&1
timeout 120 "$CFS_PACK" -q --tag bad "oci:$W/oci:app" "$W/store" > /dev/null || fail "cfs-pack exited $?"
rc=0
timeout 60 "$CFS_MOUNT" --cache "$W/cache" --bundle "$B" "$W/store" bad > "$W/bad.log" 2>&1 || rc=$?
cat "$W/bad.log"
[ "$rc" -ne 0 ] || fail "--bundle with an unknown user succeeded"
grep -q "nosuchuser" "$W/bad.log" || fail "the error does not name the user"
mountpoint -q "$B/lower" && fail "$B/lower left mounted after the failure"
"$CFS_MOUNT" --bundle-remove "$B" > /dev/null 2>&1 || true

step "mount -t fuse.cfs (mount(8), mount.fuse3)"
# mount(8) runs helpers with a PATH of its own; /usr/local/sbin is on it.
if [ ! -e "$link" ]; then
	ln -s "$CFS_MOUNT" "$link"
	made_link=1
fi
[ "$(readlink -f "$link")" = "$(readlink -f "$CFS_MOUNT")" ] || skip "$link is another program"
mkdir -p "$W/m"
timeout 60 mount -t fuse.cfs app "$W/m" -o "store=$W/store,cache=$W/cache,_netdev,nofail" ||
	fail "mount -t fuse.cfs exited $?"
mountpoint -q "$W/m" || fail "mount -t fuse.cfs returned but $W/m is not mounted"
grep -q " $W/m fuse.cfs " /proc/mounts || fail "$W/m is not fuse.cfs in /proc/mounts"
cmp "$W/m/srv/data" "$W/rootfs/srv/data" || fail "srv/data differs through mount(8)"
umount "$W/m" || fail "umount exited $?"
rc=0
timeout 60 mount -t fuse.cfs app "$W/m" -o "store=$W/no-store" 2> "$W/m.err" || rc=$?
[ "$rc" -ne 0 ] || fail "mount of a missing store succeeded"
grep -q "no-store" "$W/m.err" || fail "the error does not name the store: $(cat "$W/m.err")"

step "an fstab line"
printf '%s %s fuse.cfs store=%s,cache=%s,allow_other,noauto,_netdev 0 0\n' \
	"$ref" "$W/m" "$W/store" "$W/cache" > "$W/fstab"
timeout 60 mount --fstab "$W/fstab" "$W/m" || fail "mount --fstab exited $?"
cmp "$W/m/srv/data" "$W/rootfs/srv/data" || fail "srv/data differs through fstab"
grep " $W/m " /proc/mounts | grep -q allow_other || fail "allow_other not honoured"
umount "$W/m" || fail "umount exited $?"
echo "PASS"
