#!/usr/bin/env bash
# The container engines users run, on cfs mounts:
#  1. podman run --rootfs MNT:O on a cfs mount (podman's overlay on top);
#  2. podman's additional image store: a containers-storage root with an
#     image loaded (podman load of a docker-archive), packed by cfs-pack and
#     mounted read-only, named in storage.conf's additionalimagestores, so
#     `podman run IMAGE` starts from the cfs mount with nothing pulled or
#     copied (overlay whiteout devices, trusted.overlay.* xattrs and the
#     store's lock files must come through exactly);
#  3. containerd (started here, its own root and socket): ctr run --rootfs on
#     the writable rootfs of cfs-mount --bundle.
# Podman runs with runc, --network none, cgroupfs and small ulimits: this VM
# has no CAP_SYS_RESOURCE for podman's default RLIMIT_NOFILE, and crun
# refuses its hybrid cgroup setup.
#
# Needs root, FUSE, podman, containerd, runc, umoci and skopeo; exits 77
# (skip) without them, except in CI, where their absence fails.
set -euo pipefail

source "$(dirname "$0")/lib.sh"

need_root "needs root (podman, containerd, overlay)"
need_fuse
need_ci_tools podman containerd ctr runc umoci skopeo
: "${CFS_PACK:?}" "${CFS_MOUNT:?}"
srcdir=${CFS_SRCDIR:-$(cd "$(dirname "$0")/.." && pwd)}

make_workdir runtimes
CTD_PID=
cleanup_extra() {
	[ -n "$CTD_PID" ] && kill "$CTD_PID" 2>/dev/null
	"$CFS_MOUNT" --bundle-remove "$W/bundle" >/dev/null 2>&1
	umount -l "$W/bundle/rootfs" "$W/bundle/lower" 2>/dev/null
	# podman's overlay mounts under its temporary roots
	grep -o " $W/[^ ]*" /proc/mounts | sort -r | while read -r mp; do umount -l "$mp"; done
	return 0
}
PODMAN=(podman --runtime runc --cgroup-manager cgroupfs --events-backend file)
RUN_OPTS=(--rm --network none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024)

step "an image: busybox with an entrypoint, as OCI (umoci) and docker-archive (skopeo)"
bash "$srcdir/scripts/mkrootfs.sh" "$W/rootfs" > /dev/null
echo "from the image" > "$W/rootfs/etc/motd"
(cd "$W" && umoci init --layout oci && umoci new --image oci:app &&
	umoci unpack --image oci:app ub > /dev/null && cp -a rootfs/. ub/rootfs/ &&
	umoci repack --image oci:app ub && rm -rf ub &&
	umoci unpack --image oci:app ub > /dev/null && rm ub/rootfs/etc/motd &&
	mkdir -p ub/rootfs/etc/motd.d && echo layer2 > ub/rootfs/etc/motd.d/x &&
	umoci repack --image oci:app ub &&
	umoci config --image oci:app --config.entrypoint /bin/sh --config.cmd -c \
		--config.cmd 'echo entry; ls /etc/motd.d; test ! -e /etc/motd && echo whiteout-ok') \
	> "$W/umoci.log" 2>&1 || fail "umoci: $(tail -n 3 "$W/umoci.log")"
skopeo copy "oci:$W/oci:app" "docker-archive:$W/app.tar:localhost/cfs-app:1" > "$W/skopeo.log" 2>&1 ||
	fail "skopeo: $(tail -n 3 "$W/skopeo.log")"
timeout 120 "$CFS_PACK" -q --tag app "oci:$W/oci:app" "$W/store" > /dev/null || fail "cfs-pack exited $?"

step "1. podman run --rootfs MNT:O on a cfs mount"
mount_image "$W/store" app "$W/mnt" --cache "$W/cache" -o allow_other,dev,suid
timeout 120 "${PODMAN[@]}" --root "$W/p1" --runroot "$W/p1run" run "${RUN_OPTS[@]}" \
	--rootfs "$W/mnt:O" /bin/sh -c 'cat /etc/motd.d/x; echo w > /tmp/w && cat /tmp/w' \
	> "$W/p1.out" 2> "$W/p1.err" || fail "podman --rootfs exited $?: $(tail -n 3 "$W/p1.err")"
cat "$W/p1.out"
[ "$(cat "$W/p1.out")" = "$(printf 'layer2\nw')" ] || fail "podman --rootfs: unexpected output"
[ ! -e "$W/mnt/tmp/w" ] || fail "the container's write reached the image"
unmount_image "$W/mnt"

step "2. podman's additional image store on a cfs mount"
timeout 120 "${PODMAN[@]}" --root "$W/src-store" --runroot "$W/src-run" --storage-driver overlay \
	load -i "$W/app.tar" > "$W/load.log" 2>&1 || fail "podman load: $(tail -n 3 "$W/load.log")"
# podman leaves its overlay driver's "l" links and lock files; pack it all.
timeout 120 "$CFS_PACK" -q --tag ais "$W/src-store" "$W/store" > /dev/null || fail "cfs-pack of the store exited $?"
mount_image "$W/store" ais "$W/ais" --cache "$W/cache" -o allow_other,dev,suid
cat > "$W/storage.conf" <<EOF
[storage]
driver = "overlay"
runroot = "$W/p2run"
graphroot = "$W/p2"
[storage.options]
additionalimagestores = ["$W/ais"]
EOF
export CONTAINERS_STORAGE_CONF=$W/storage.conf
"${PODMAN[@]}" images > "$W/images.out" 2>&1 || fail "podman images: $(cat "$W/images.out")"
cat "$W/images.out"
grep -q 'localhost/cfs-app .*true' "$W/images.out" || fail "the image is not listed as read-only from the cfs store"
timeout 120 "${PODMAN[@]}" run "${RUN_OPTS[@]}" localhost/cfs-app:1 > "$W/p2.out" 2> "$W/p2.err" ||
	fail "podman run from the additional store exited $?: $(tail -n 3 "$W/p2.err")"
cat "$W/p2.out"
[ "$(cat "$W/p2.out")" = "$(printf 'entry\nx\nwhiteout-ok')" ] ||
	fail "podman run from the additional store: unexpected output"
# Nothing was pulled or copied into podman's own store: no image there.
[ -z "$(find "$W/p2/overlay-images" -mindepth 1 -maxdepth 1 -type d 2>/dev/null)" ] ||
	fail "podman copied the image into its own store: $(ls "$W/p2/overlay-images")"
unset CONTAINERS_STORAGE_CONF
unmount_image "$W/ais"

step "3. containerd: ctr run --rootfs on a --bundle rootfs"
mkdir -p "$W/ctd"
cat > "$W/ctd/config.toml" <<EOF
version = 2
root = "$W/ctd/root"
state = "$W/ctd/state"
[grpc]
  address = "$W/ctd/ctd.sock"
[ttrpc]
  address = "$W/ctd/ctd.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  disable_cgroup = true
EOF
containerd --config "$W/ctd/config.toml" > "$W/ctd/log" 2>&1 &
CTD_PID=$!
rc=0
wait_until 10 --while "$CTD_PID" test -S "$W/ctd/ctd.sock" || rc=$?
[ "$rc" -ne 2 ] || fail "containerd exited: $(tail -n 5 "$W/ctd/log")"
[ "$rc" -eq 0 ] || fail "containerd did not open its socket"
timeout 60 "$CFS_MOUNT" --cache "$W/cache" --bundle "$W/bundle" "$W/store" app > "$W/bundle.log" 2>&1 ||
	fail "cfs-mount --bundle exited $?: $(cat "$W/bundle.log")"
timeout 120 ctr --address "$W/ctd/ctd.sock" run --rm --rootfs "$W/bundle/rootfs" "cfs-$$" \
	/bin/sh -c 'cat /etc/motd.d/x; echo c > /tmp/c' > "$W/ctr.out" 2> "$W/ctr.err" ||
	fail "ctr run exited $?: $(tail -n 3 "$W/ctr.err")"
cat "$W/ctr.out"
[ "$(cat "$W/ctr.out")" = layer2 ] || fail "ctr run: unexpected output"
[ "$(cat "$W/bundle/upper/tmp/c")" = c ] || fail "the containerd container's write is not in the overlay"
"$CFS_MOUNT" --bundle-remove "$W/bundle" || fail "--bundle-remove exited $?"
echo "PASS"
