#!/usr/bin/env bash
# cfs-mount --layer-store: podman 4.3.1 pulls an image with only the manifest and config from the registry and runs it from cfs (docs/LAYER-STORE.md).
#
# A 3-layer image (busybox; a whiteout of /etc/motd; an opaque /opq) made
# with umoci and packed by cfs-pack oci:, which keeps each layer as an
# image of its own in overlay form with its layer record; the store
# mounted with --layer-store in the background (holder and daemon).  Each
# layer's diff is compared with the layer extracted apart by Python's
# tarfile (tests/overlay-extract.py).
#  1. The FUSE view alone: info's JSON, blob's size and EIO, diff resolving
#     to a layer mount whose tree is the layer's, use and rmdir answering
#     ENOENT, unknown digests and names ENOENT, a corrupt record EIO, and
#     the daemon unharmed by all of it (the holder restarted nothing).
#  2. podman (its own graphroot; additionallayerstores = the mount), from a
#     docker-registry behind cfs-faultproxy, which logs every request: pull
#     fetches no layer blob, run prints the image's output, a container's
#     tree (podman export) equals that of the image pulled normally, rmi
#     leaves the store as it was; with one layer's record missing, the pull fetches
#     that layer only and the image still runs; a running container reads
#     on through SIGKILL of its layer mounts' daemons and of the layer
#     store's (the holders start the next ones).
# Env: CFS_PACK, CFS_MOUNT, CFS_TREECMP, CFS_FAULTPROXY (tests/meson.build).
# Exit 77 without root, FUSE, overlay, podman, runc, umoci, skopeo or
# docker-registry (a failure under CI=true).
set -euo pipefail

source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/lib-registry.sh"

need_root "needs root (mknod, trusted.* xattrs, podman's overlay)"
need_fuse
need_ci_tools podman runc umoci skopeo docker-registry python3 getfattr
grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null ||
	skip "no overlay filesystem in this kernel"
: "${CFS_PACK:?}" "${CFS_MOUNT:?}" "${CFS_LS:?}" "${CFS_TREECMP:?}" "${CFS_FAULTPROXY:?}"
srcdir=${CFS_SRCDIR:-$(cd "$(dirname "$0")/.." && pwd)}

make_workdir layerstore
ALS=$W/als LM=$W/layer-mounts
cleanup_extra() {
	local mp i
	# a container of step 2c that a failure left running
	[ ! -f "$W/p3.conf" ] || CONTAINERS_STORAGE_CONF=$W/p3.conf timeout 30 \
		"${PODMAN[@]}" rm -f -t 0 cfs-loop >/dev/null 2>&1 || true
	# podman's overlays, the layer mounts (their holders end with them),
	# the layer store: innermost first; again while a podman that was
	# still ending (a container's cleanup) mounts its storage once more.
	for i in 1 2 3 4 5 6 7 8 9 10; do
		grep -q " $W/" /proc/mounts || break
		grep -o " $W/[^ ]*" /proc/mounts | sort -r | while read -r mp; do umount -l "$mp"; done
		sleep 0.5
	done
	return 0
}
PODMAN=(podman --runtime runc --cgroup-manager cgroupfs --events-backend file)
RUN_OPTS=(--rm --network none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
EXPECT=$(printf 'layer2\nwhiteout-ok\nc')

step "a 3-layer image: rootfs; whiteout of /etc/motd; opaque /opq"
bash "$srcdir/scripts/mkrootfs.sh" "$W/rootfs" >/dev/null
echo "from the image" >"$W/rootfs/etc/motd"
mkdir "$W/rootfs/opq" && echo a >"$W/rootfs/opq/a" && echo b >"$W/rootfs/opq/b"
mkdir -p "$W/l3/opq" && echo c >"$W/l3/opq/c" && : >"$W/l3/opq/.wh..wh..opq"
tar -C "$W/l3" --numeric-owner --owner 0 --group 0 -cf "$W/l3.tar" opq/.wh..wh..opq opq/c
(cd "$W" && umoci init --layout oci && umoci new --image oci:app &&
	umoci unpack --image oci:app ub >/dev/null && cp -a rootfs/. ub/rootfs/ &&
	umoci repack --image oci:app ub && rm -rf ub &&
	umoci unpack --image oci:app ub >/dev/null && rm ub/rootfs/etc/motd &&
	mkdir -p ub/rootfs/etc/motd.d && echo layer2 >ub/rootfs/etc/motd.d/x &&
	umoci repack --image oci:app ub && rm -rf ub &&
	umoci raw add-layer --image oci:app l3.tar &&
	umoci config --image oci:app --config.entrypoint /bin/sh --config.cmd -c \
		--config.cmd 'cat /etc/motd.d/x; test ! -e /etc/motd && echo whiteout-ok; ls /opq') \
	>"$W/umoci.log" 2>&1 || fail "umoci: $(tail -n 3 "$W/umoci.log")"

step "cfs-pack oci: the image, each layer an image of its own with its record"
timeout 120 "$CFS_PACK" -q --tag app "oci:$W/oci:app" "$W/store" >"$W/pack.out" 2>"$W/pack.err" ||
	fail "cfs-pack: $(tail -n 3 "$W/pack.err")"
mkdir -p "$W/trees"
python3 "$srcdir/tests/overlay-extract.py" "$W/oci" app "$W/trees" \
	>"$W/layers" 2>"$W/layers.err" || fail "overlay-extract.py: $(grep -v "^ " "$W/layers.err" | tail -n 3)"
mapfile -t LAYERS < <(awk '{print $3}' "$W/layers")
mapfile -t SIZES < <(awk '{print $4}' "$W/layers")
mapfile -t DIFF_IDS < <(awk '{print $5}' "$W/layers")
[ "${#LAYERS[@]}" -eq 3 ] || fail "expected 3 layers"
IMAGES=()
for i in 0 1 2; do
	rec=$W/store/layers/${LAYERS[$i]#sha256:}
	[ -f "$rec" ] || fail "cfs-pack wrote no record for layer $i (${LAYERS[$i]})"
	grep -qx "diff_id ${DIFF_IDS[$i]}" "$rec" && grep -qx "size ${SIZES[$i]}" "$rec" &&
		grep -qx "compression gzip" "$rec" || fail "layer $i: record $(cat "$rec")"
	IMAGES+=("$(sed -n 's/^image //p' "$rec")")
	echo "   layer $i ${LAYERS[$i]}: image ${IMAGES[$i]}"
done
# cfs-ls --info lists them, in order, from the image's origin
"$CFS_LS" --info "$W/store" app >"$W/info" || fail "cfs-ls --info exited $?"
for i in 0 1 2; do
	grep -q "^layer $((i + 1)) ${LAYERS[$i]} image ${IMAGES[$i]} diff_id ${DIFF_IDS[$i]} .* size ${SIZES[$i]} compression gzip$" "$W/info" ||
		fail "cfs-ls --info: no line for layer $i: $(grep ^layer "$W/info")"
done

step "cfs-mount --layer-store (background, under a holder)"
mkdir -p "$ALS"
MOUNTS+=("$ALS")
timeout 60 "$CFS_MOUNT" --layer-store --cache "$W/cache" --layer-mounts "$LM" --log "$W/als.log" \
	"$W/store" "$ALS" >"$W/mount.out" 2>&1 || fail "cfs-mount --layer-store exited $?: $(cat "$W/mount.out")"
mountpoint -q "$ALS" || fail "cfs-mount --layer-store returned but $ALS is not mounted"
remember_daemon "$ALS"

step "1. the FUSE view"
B64=$(printf %s "localhost/cfs/app:1" | base64 -w0)
L=$ALS/$B64/${LAYERS[0]}
[ -z "$(ls -A "$ALS")" ] || fail "the root lists something"
[ -z "$(ls -A "$ALS/$B64")" ] || fail "a reference's directory lists something"
[ -d "$L" ] || fail "$L: not a directory"
[ "$(stat -c %s "$L/info")" -eq "$(wc -c <"$L/info")" ] || fail "info: st_size is not its length"
python3 - "$L/info" "${LAYERS[0]}" "${SIZES[0]}" "${DIFF_IDS[0]}" <<'EOF' || fail "info: wrong JSON"
import json, sys
i = json.load(open(sys.argv[1]))
want = {"compressed-diff-digest": sys.argv[2], "compressed-size": int(sys.argv[3]),
        "diff-digest": sys.argv[4], "compression": 2}
assert all(i[k] == v for k, v in want.items()), i
assert i["diff-size"] > 0 and set(i) == set(want) | {"diff-size"}, i
EOF
[ "$(stat -c %s "$L/blob")" -eq "${SIZES[0]}" ] || fail "blob: not the compressed size"
not cat "$L/blob" >/dev/null 2>"$W/blob.err" || fail "blob: read succeeded"
grep -q "Input/output error" "$W/blob.err" || fail "blob: not EIO: $(cat "$W/blob.err")"
grep -q "layer ${LAYERS[0]}: blob read.*podman save and push need the original blob" "$W/als.log" ||
	fail "no log line for the blob read"
for i in 0 1 2; do
	d=$ALS/$B64/${LAYERS[$i]}/diff
	[ "$(readlink "$d")" = "$LM/${IMAGES[$i]#sha256:}" ] || fail "diff -> $(readlink "$d")"
	compare --no-mtime-dirs --no-mtime-whiteouts --ignore-blocks "$W/trees/layer$i" "$d/"
done
[ -c "$ALS/$B64/${LAYERS[1]}/diff/etc/motd" ] || fail "layer 1: no whiteout device"
[ "$(getfattr --only-values -n trusted.overlay.opaque "$ALS/$B64/${LAYERS[2]}/diff/opq" 2>/dev/null)" = y ] ||
	fail "layer 2: /opq is not opaque"
# errno ERRNO CALL...: the python os call fails with ERRNO.
errno() {
	python3 -c 'import errno, os, sys
try:
    eval(sys.argv[2])
except OSError as e:
    sys.exit(0 if e.errno == getattr(errno, sys.argv[1]) else "%s: %s" % (sys.argv[2], e))
sys.exit(sys.argv[2] + ": succeeded")' "$@" || fail "expected $1"
}
errno ENOENT "os.stat('$L/use')"
errno ENOENT "os.open('$L/use', os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o666)"
errno ENOENT "os.rmdir('$L')"
errno EROFS "os.mkdir('$L/x')"
errno ENOENT "os.stat('$L/tar-split')"
errno ENOENT "os.stat('$ALS/$B64/sha256:$(printf '0%.0s' {1..64})')"
errno ENOENT "os.stat('$ALS/$B64/sha256:ABC')"
errno ENOENT "os.stat('$ALS/$B64/${LAYERS[0]^^}')"
errno ENOENT "os.stat('$ALS/not-base64!')"
errno ENOENT "os.stat('$ALS/$(printf 'a b' | base64 -w0)')"
errno ENOENT "os.stat('$ALS/${B64%=}')"
bad=sha256:$(printf 'bad' | sha256sum | cut -d' ' -f1)
echo garbage >"$W/store/layers/${bad#sha256:}"
errno EIO "os.stat('$ALS/$B64/$bad/info')"
grep -q "layer $bad: its record (layers/${bad#sha256:}) is corrupt" "$W/als.log" ||
	fail "no log line for the corrupt record"
head -c 5000 /dev/zero >"$W/store/layers/${bad#sha256:}" # over CFS_LAYER_REC_MAX
errno EIO "os.stat('$ALS/$B64/$bad')"
grep -q "layer $bad: reading its record: " "$W/als.log" || fail "no log line for the store's error"
rm "$W/store/layers/${bad#sha256:}"
errno ENOENT "os.stat('$ALS/$B64/$bad')"
# still serving, and never restarted
[ -s "$ALS/$B64/${LAYERS[1]}/info" ] || fail "the layer store stopped serving"
"$CFS_MOUNT" --status "$ALS" >"$W/status.json" || fail "--status of the layer store failed"
[ "$(stat_of "$W/status.json" restarts)" -eq 0 ] || fail "the layer store's daemon restarted: $(cat "$W/status.json")"
mountpoint -q "$LM/${IMAGES[0]#sha256:}" || fail "no layer mount"

step "1b. layer mounts outlive the layer store, and a new one uses them again"
# mounts_at DIR: how many mounts are stacked at DIR
mounts_at() { awk -v d="$1" '$2 == d' /proc/mounts | wc -l; }
unmount_image "$ALS"
for i in 0 1 2; do
	[ "$(mounts_at "$LM/${IMAGES[$i]#sha256:}")" -eq 1 ] || fail "layer mount $i gone with the store"
done
# A layer mount taken away meanwhile is started again, once for lookups at
# the same time.
umount "$LM/${IMAGES[1]#sha256:}"
timeout 60 "$CFS_MOUNT" --layer-store -v --cache "$W/cache" --layer-mounts "$LM" --log "$W/als.log" \
	"$W/store" "$ALS" >"$W/mount.out" 2>&1 || fail "cfs-mount --layer-store again: $(cat "$W/mount.out")"
remember_daemon "$ALS"
: >"$W/als.log"
for _ in 1 2 3 4; do stat -L "$ALS/$B64/${LAYERS[1]}/diff/etc" >/dev/null & done
wait
for i in 0 1 2; do
	[ -d "$ALS/$B64/${LAYERS[$i]}/diff/." ] || fail "layer $i: diff is no directory"
	[ "$(mounts_at "$LM/${IMAGES[$i]#sha256:}")" -eq 1 ] ||
		fail "layer mount $i: $(mounts_at "$LM/${IMAGES[$i]#sha256:}") mounts, not 1"
done
[ "$(grep -c "mounting layer image" "$W/als.log")" -eq 1 ] ||
	fail "expected one layer mount started: $(grep "mounting layer image" "$W/als.log")"

step "2. podman with the layer store, from a registry behind a logging proxy"
start_registry plain
proxy_start "${REG_HOST#*:}"
REF=127.0.0.1:$PROXY_PORT/cfs/app:1
timeout 120 skopeo --insecure-policy copy -q --dest-tls-verify=false "oci:$W/oci:app" "docker://$REF" \
	>"$W/push.log" 2>&1 || fail "skopeo push: $(tail -n 3 "$W/push.log")"
storage_conf() { # storage_conf NAME: a graphroot of its own, the layer store
	cat >"$W/$1.conf" <<-EOF
		[storage]
		driver = "overlay"
		runroot = "$W/$1-run"
		graphroot = "$W/$1-root"
		[storage.options]
		additionallayerstores = ["$ALS:ref"]
	EOF
	export CONTAINERS_STORAGE_CONF=$W/$1.conf
}
# layer_gets: sets n to how many layer blobs the registry served since the
# last call (not in a subshell: it moves LOGPOS on)
layer_gets() {
	local l
	tail -n +"$((${LOGPOS:-0} + 1))" "$PROXY_LOG" >"$W/proxy.new"
	LOGPOS=$(wc -l <"$PROXY_LOG")
	n=0
	for l in "${LAYERS[@]}"; do
		if grep -q "GET /v2/cfs/app/blobs/$l -> 200" "$W/proxy.new"; then n=$((n + 1)); fi
	done
}
layer_gets
snapshot() { (cd "$W/store" && find . -printf '%y %m %s %P\n' | sort && find . -type f -exec sha256sum {} + | sort); }
snapshot >"$W/store.before"

storage_conf p1
timeout 120 "${PODMAN[@]}" pull -q --tls-verify=false "$REF" >"$W/pull1.out" 2>"$W/pull1.err" ||
	fail "podman pull: $(tail -n 3 "$W/pull1.err")"
layer_gets
[ "$n" -eq 0 ] || fail "podman pull fetched $n layer blobs: $(grep blobs "$W/proxy.new")"
grep -q "GET /v2/cfs/app/manifests/1 -> 200" "$W/proxy.new" || fail "no manifest GET"
grep -c "GET /v2/cfs/app/blobs/" "$W/proxy.new" | grep -qx 1 || fail "more than the config fetched"
echo "  pull: the manifest and the config only"
timeout 120 "${PODMAN[@]}" run "${RUN_OPTS[@]}" "$REF" >"$W/run1.out" 2>"$W/run1.err" ||
	fail "podman run: $(tail -n 3 "$W/run1.err")"
cat "$W/run1.out"
[ "$(cat "$W/run1.out")" = "$EXPECT" ] || fail "podman run: unexpected output"
not grep -q "GC doesn't seem to be supported" "$W/pull1.err" "$W/run1.err" ||
	fail "podman warned about the layer store: $(grep -h GC "$W/pull1.err" | head -n 2)"
# The container's tree from the layer store is podman's own of the image
# pulled normally: podman export of each, extracted alike, compared.
export_tree() { # export_tree NAME: podman export of a container of $REF into $W/NAME
	timeout 120 "${PODMAN[@]}" create --name "cfs-$1" "$REF" >/dev/null 2>"$W/$1.err" ||
		fail "podman create ($1): $(tail -n 3 "$W/$1.err")"
	timeout 120 "${PODMAN[@]}" export "cfs-$1" >"$W/$1.tar" 2>"$W/$1.err" ||
		fail "podman export ($1): $(tail -n 3 "$W/$1.err")"
	"${PODMAN[@]}" rm "cfs-$1" >/dev/null 2>&1 || fail "podman rm ($1)"
	mkdir "$W/$1"
	tar -C "$W/$1" --xattrs --xattrs-include='*' --numeric-owner -xpf "$W/$1.tar" ||
		fail "tar -x of the $1 export exited $?"
	touch -d @0 "$W/$1"
}
export_tree export-als
printf '[storage]\ndriver = "overlay"\nrunroot = "%s"\ngraphroot = "%s"\n' \
	"$W/p0-run" "$W/p0-root" >"$W/p0.conf"
CONTAINERS_STORAGE_CONF=$W/p0.conf timeout 120 "${PODMAN[@]}" pull -q --tls-verify=false "$REF" \
	>/dev/null 2>"$W/pull0.err" || fail "podman pull without the layer store: $(tail -n 3 "$W/pull0.err")"
layer_gets
[ "$n" -eq 3 ] || fail "the pull without the layer store did not fetch the 3 layers"
CONTAINERS_STORAGE_CONF=$W/p0.conf export_tree export-plain
# Not the directories' mtimes: c/storage dates a directory that a layer
# holds entries in without naming it (layer 3's opq) as it extracts it.
compare --ignore-blocks --no-mtime-dirs "$W/export-plain" "$W/export-als"
echo "  the container's tree equals podman export of the image pulled normally"
timeout 120 "${PODMAN[@]}" rmi "$REF" >"$W/rmi.out" 2>&1 || fail "podman rmi: $(tail -n 3 "$W/rmi.out")"
snapshot >"$W/store.after"
diff "$W/store.before" "$W/store.after" >/dev/null || fail "podman rmi changed the store"
echo "  run: the image's output; rmi: the store as it was"

step "2b. a layer the store lacks is pulled normally, the others come from cfs"
mv "$W/store/layers/${LAYERS[2]#sha256:}" "$W/layer2.rec"
storage_conf p2
timeout 120 "${PODMAN[@]}" pull -q --tls-verify=false "$REF" >"$W/pull2.out" 2>"$W/pull2.err" ||
	fail "podman pull (a layer missing): $(tail -n 3 "$W/pull2.err")"
layer_gets
{ [ "$n" -eq 1 ] && grep -q "GET /v2/cfs/app/blobs/${LAYERS[2]} -> 200" "$W/proxy.new"; } ||
	fail "expected layer 2 alone fetched, got $n: $(grep blobs "$W/proxy.new")"
timeout 120 "${PODMAN[@]}" run "${RUN_OPTS[@]}" "$REF" >"$W/run2.out" 2>"$W/run2.err" ||
	fail "podman run (a layer pulled): $(tail -n 3 "$W/run2.err")"
[ "$(cat "$W/run2.out")" = "$EXPECT" ] || fail "podman run (a layer pulled): unexpected output"
mv "$W/layer2.rec" "$W/store/layers/${LAYERS[2]#sha256:}"
timeout 120 "${PODMAN[@]}" rmi "$REF" >/dev/null 2>&1 || fail "podman rmi (2b)"
echo "  only the missing layer was fetched; run OK"
"$CFS_MOUNT" --status "$ALS" >"$W/status.json" || fail "--status of the layer store failed"
[ "$(stat_of "$W/status.json" restarts)" -eq 0 ] || fail "the layer store's daemon restarted"

step "2c. a running container outlives its layer mounts' daemons and the layer store's"
# As for an image mount: the holder keeps each mount, SIGKILL of a daemon
# starts the next one, and the container's reads go on.
storage_conf p3
timeout 120 "${PODMAN[@]}" pull -q --tls-verify=false "$REF" >/dev/null 2>"$W/pull3.err" ||
	fail "podman pull (2c): $(tail -n 3 "$W/pull3.err")"
timeout 120 "${PODMAN[@]}" run -d --name cfs-loop --network none --ulimit nofile=1024:1024 \
	--ulimit nproc=1024:1024 "$REF" -c 'while :; do cat /etc/motd.d/x; ls /opq; sleep 0.2; done' \
	>"$W/run3.out" 2>"$W/run3.err" || fail "podman run -d: $(tail -n 3 "$W/run3.err")"
# logged: how many passes the container has printed; printed N: at least N
logged() { "${PODMAN[@]}" logs cfs-loop 2>/dev/null | grep -c layer2 || true; }
printed() { [ "$(logged)" -ge "$1" ]; }
wait_until 30 printed 2 || fail "the container printed nothing: $("${PODMAN[@]}" logs cfs-loop 2>&1 | tail -n 3)"
# daemon_of MOUNTPOINT: its daemon's pid, from --status
daemon_of() { "$CFS_MOUNT" --status "$1" | grep -o '"daemon_pid":[0-9]*' | cut -d: -f2; }
# by its name, as ps and pgrep show it (not "exe")
pid=$(daemon_of "$LM/${IMAGES[0]#sha256:}")
[ "$(cat "/proc/$pid/comm")" = cfs-mount ] || fail "a layer mount's daemon is named $(cat "/proc/$pid/comm")"
for i in 0 1 2; do kill -9 "$(daemon_of "$LM/${IMAGES[$i]#sha256:}")"; done
kill -9 "$(daemon_of "$ALS")"
before=$(logged)
wait_until 30 printed $((before + 5)) ||
	fail "the container stopped reading after the kills: $("${PODMAN[@]}" logs cfs-loop 2>&1 | tail -n 3)"
"${PODMAN[@]}" logs cfs-loop >"$W/loop.log" 2>&1 || fail "podman logs exited $?"
if grep -qi 'error\|transport endpoint' "$W/loop.log"; then
	fail "the container met errors: $(grep -i 'error\|endpoint' "$W/loop.log" | head -n 3)"
fi
for m in "$LM/${IMAGES[0]#sha256:}" "$ALS"; do
	"$CFS_MOUNT" --status "$m" >"$W/status.json" || fail "--status of $m failed"
	[ "$(stat_of "$W/status.json" restarts)" -ge 1 ] || fail "$m: no restart after SIGKILL: $(cat "$W/status.json")"
done
[ -s "$ALS/$B64/${LAYERS[1]}/info" ] || fail "the layer store stopped serving after SIGKILL"
"${PODMAN[@]}" rm -f cfs-loop >/dev/null 2>&1 || fail "podman rm -f"
# conmon's "podman container cleanup" may still be running
wait_until 30 not pgrep -f "container cleanup" || true
echo "  the container read on through SIGKILL of 3 layer daemons and the store's"
echo "PASS"
