#!/usr/bin/env bash
# Conformance with the real tools: images made by umoci, podman build and skopeo are packed from their OCI layout and from a docker-archive, mounted, and compared with `umoci unpack` and with `podman export`.
#
# The corpus, built here on each run (no network; a few MB):
#   swap      umoci repack of a layer that makes the directory swap/ a file:
#             umoci 0.4.7 writes the file, then swap/.wh.x under it;
#   insert    umoci insert layers, which end right after the last file's
#             data (no padding, no end marker), with --whiteout and --opaque;
#   built     podman build of a Containerfile FROM a busybox base (itself
#             an umoci insert layer, with security.capability and a user
#             xattr): RUN steps that delete a file and a directory, make a
#             file a directory and a directory a file, hard-link a lower
#             layer's file, remove a directory and make it again (podman
#             writes an opaque marker), a symlink, setuid, setgid, sticky,
#             owners, a device node and a fifo;
#   built-*   skopeo copy of built: zstd, gzip again, uncompressed layers
#             (through dir:, as skopeo 1.9's oci: transport keeps the
#             compression), Docker v2s2 manifests in an OCI layout;
#   many      41 umoci insert layers, each a file and a whiteout of an
#             earlier one;
#   multi     an index of two platforms (umoci tags, jq), packed with
#             --platform linux/amd64 and linux/arm64.
# Every image is packed from its OCI layout and from `skopeo copy` to a
# docker-archive (the platform's, for multi; none from built-zstd, which
# skopeo refuses to write as a docker image, or from built-v2s2, which it
# does not find in an OCI layout, though cfs-pack does); both give the same
# reference, and the converted layouts that of built: a reference covers
# the whole tree, so one mount per reference is compared.  The mount is
# compared with cfs-treecmp, entry by entry (type, mode with setuid and
# sticky bits, uid, gid, size, nlink and hard-link structure, st_blocks to
# 64 KiB, rdev of devices, symlink targets, every xattr, contents, mtime
# of everything, directories too), with:
#   - `umoci unpack`'s rootfs: all of it (umoci restores a directory's
#     mtime after each change in it, so it holds the headers' mtimes);
#   - `podman export` of a container created from the image (skopeo copy
#     to podman's containers-storage, podman create, export), extracted by GNU tar as root with --xattrs
#     --xattrs-include='*' --numeric-owner -p: all of it but the root's own
#     mode, owner and mtime, for which the export has no entry (the
#     extraction's root takes the mount's).  Tar restores directory mtimes
#     after their contents, so those are compared too.
# Not compared: atime and ctime (no image keeps them), and trusted.*
# xattrs (none here; podman's overlay keeps its own).
# A registry: each image is also pushed to a local docker-registry and
# packed from there with cfs-pack docker:// (registry_pack).
#
# Env (tests/meson.build): CFS_PACK, CFS_MOUNT, CFS_TREECMP, CFS_SRCDIR.
# Needs root, FUSE, umoci, skopeo, podman, runc, jq and the attr and
# libcap tools; exits 77 without them (fails under CI=true without them).
set -euo pipefail

source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/lib-registry.sh"

need_root "needs root (podman, umoci unpack of devices and owners)"
need_fuse
need_ci_tools umoci skopeo podman runc jq setfattr getfattr setcap tar gzip busybox docker-registry curl
: "${CFS_PACK:?}" "${CFS_MOUNT:?}" "${CFS_TREECMP:?}"
srcdir=${CFS_SRCDIR:-$(cd "$(dirname "$0")/.." && pwd)}

make_workdir conformance
mkdir -p "$W/tmp"
export TMPDIR=$W/tmp
cleanup_extra() {
	# podman's overlay mounts under its storage root
	grep -o " $W/[^ ]*" /proc/mounts | sort -r | while read -r mp; do umount -l "$mp"; done
	return 0
}
# Podman as tests/runtimes.sh runs it: a storage of the test's own, runc,
# cgroupfs, no network, small ulimits (no CAP_SYS_RESOURCE for its default).
PODMAN=(podman --root "$W/proot" --runroot "$W/prun" --storage-driver overlay --runtime runc
	--cgroup-manager cgroupfs --events-backend file)
# That storage as skopeo names it: images go in as podman pull puts them
# (the same library), under names of the test's choosing (podman pull
# oci:DIR names an image after DIR, which must then be lowercase).
CS="containers-storage:[overlay@$W/proot+$W/prun]"

# quiet LOG CMD...: runs CMD with its output in $W/LOG, failing with its tail.
quiet() {
	local log=$W/$1.log
	shift
	timeout 300 "$@" >"$log" 2>&1 || fail "$* exited $?: $(tail -n 3 "$log")"
}
skopeo_q() {
	quiet skopeo skopeo --insecure-policy copy -q "$@"
}
# manifest_of LAYOUT TAG: the manifest blob a tag names.
manifest_of() {
	local d
	d=$(jq -r --arg t "$2" '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $t) |
		.digest' "$1/index.json")
	[ -n "$d" ] || fail "$1 has no tag $2"
	echo "$1/blobs/sha256/${d#sha256:}"
}
# layer_tar LAYOUT TAG N: the uncompressed bytes of layer N (from 0) on stdout.
layer_tar() {
	local d
	d=$(jq -r ".layers[$3].digest" "$(manifest_of "$1" "$2")")
	gzip -dcf "$1/blobs/sha256/${d#sha256:}"
}

# layer_names LAYOUT TAG I: the names in layer I, normalised ("." the root).
layer_names() {
	# GNU tar lists umoci insert's layers, then fails at their end.
	layer_tar "$1" "$2" "$3" | { tar -t 2>/dev/null || true; } | sed 's|^\./||; s|/$||; s|^$|.|'
}
# unnamed_dirs LAYOUT TAG ROOT: the directories under ROOT (relative, "."
# for ROOT) that no layer of the image names: umoci and podman make them
# as they unpack, with that moment as mtime (cfs: 0).  With "implied"
# after ROOT, also those that some layer holds entries in without naming
# them (`umoci insert --whiteout` writes the whiteout alone): podman's
# overlay makes them in that layer's diff, so the export has the moment of
# the copy as their mtime, where umoci and cfs keep the lower layer's.
unnamed_dirs() {
	local n i
	n=$(jq '.layers | length' "$(manifest_of "$1" "$2")")
	for ((i = 0; i < n; i++)); do
		layer_names "$1" "$2" "$i"
	done | sort -u >"$W/named.list"
	(cd "$3" && find . -type d | sed 's|^\./||; s|^$|.|') | sort >"$W/dirs.list"
	{
		comm -23 "$W/dirs.list" "$W/named.list"
		[ "${4:-}" != implied ] || for ((i = 0; i < n; i++)); do
			layer_names "$1" "$2" "$i" | awk '{ named[$0] = 1; p = $0
				while (sub(/\/[^\/]*$/, "", p)) up[p] = 1 }
				END { for (d in up) if (!(d in named)) print d }'
		done
	} | sort -u
}

# --- the corpus ---------------------------------------------------------------
L=$W/oci
umoci init --layout "$L"

step "swap: umoci repack makes the directory swap/ a file"
umoci new --image "$L:swap"
quiet umoci umoci unpack --image "$L:swap" "$W/b"
mkdir -p "$W/b/rootfs/swap" "$W/b/rootfs/keep"
echo x >"$W/b/rootfs/swap/x"
echo y >"$W/b/rootfs/swap/y"
echo k >"$W/b/rootfs/keep/k"
quiet umoci umoci repack --image "$L:swap" "$W/b"
rm -rf "$W/b"
quiet umoci umoci unpack --image "$L:swap" "$W/b"
rm -rf "$W/b/rootfs/swap"
echo "a file now" >"$W/b/rootfs/swap"
quiet umoci umoci repack --image "$L:swap" "$W/b"
rm -rf "$W/b"
# The shape this image is here for: the file, then a whiteout under it.
layer_tar "$L" swap 1 | tar -t >"$W/swap.list"
grep -qx swap "$W/swap.list" && grep -qx 'swap/.wh.x' "$W/swap.list" ||
	fail "umoci no longer writes swap and then swap/.wh.x: $(tr '\n' ' ' <"$W/swap.list")"

step "insert: umoci insert layers (no padding, no end marker), --whiteout, --opaque"
mkdir -p "$W/ins/sub" "$W/ins2"
printf 'odd size' >"$W/ins/sub/f"
printf 'abc' >"$W/ins/g"
echo again >"$W/ins2/new"
umoci new --image "$L:insert"
quiet umoci umoci insert --image "$L:insert" "$W/ins" /opt/ins
quiet umoci umoci insert --image "$L:insert" --whiteout /opt/ins/g
quiet umoci umoci insert --image "$L:insert" --opaque "$W/ins2" /opt/ins
n=$(layer_tar "$L" insert 0 | wc -c)
[ $((n % 512)) -ne 0 ] || [ -n "$(layer_tar "$L" insert 0 | tail -c 1024 | tr -d '\0')" ] ||
	fail "umoci insert now ends its layer with the end marker: this image no longer covers that"

step "built: podman build FROM a busybox base"
bash "$srcdir/scripts/mkrootfs.sh" "$W/rootfs" >/dev/null
setcap cap_net_bind_service=ep "$W/rootfs/bin/busybox"
setfattr -n user.cfs.test -v "from the base" "$W/rootfs/etc/group"
umoci new --image "$L:base"
quiet umoci umoci insert --image "$L:base" "$W/rootfs" /
quiet umoci umoci config --image "$L:base" --config.cmd /bin/sh
skopeo_q "oci:$L:base" "${CS}localhost/cfs-base:1"
mkdir -p "$W/ctx"
cat >"$W/ctx/Containerfile" <<'EOF'
FROM localhost/cfs-base:1
RUN mkdir -p /t/dir /t/gone /t/opq/sub && echo a > /t/file && echo b > /t/gone/x && \
    echo c > /t/dir/y && echo h > /t/hl && ln -s ../etc/passwd /t/sym && chmod 4755 /t/file && \
    mkdir -m 1777 /t/sticky && chown 1000:100 /t/dir/y && mknod /t/null c 1 3 && mknod /t/fifo p && \
    echo old > /t/opq/old && echo s > /t/opq/sub/s && rm /etc/os-release
RUN rm -rf /t/gone /t/file && mkdir /t/file && echo inner > /t/file/in && rm -rf /t/dir && \
    echo now-a-file > /t/dir && ln /t/hl /t/hl2 && rm -rf /t/opq && mkdir /t/opq && \
    echo new > /t/opq/new && chmod 2750 /t/sticky && chown -h 7:8 /t/sym
EOF
quiet podman "${PODMAN[@]}" build --network none --cap-add MKNOD --ulimit nofile=1024:1024 \
	--ulimit nproc=1024:1024 -t localhost/cfs-built:1 "$W/ctx"
quiet podman "${PODMAN[@]}" push localhost/cfs-built:1 "oci:$L:built"
layer_tar "$L" built 2 | tar -t >"$W/built.list"
grep -qx 't/opq/.wh..wh..opq' "$W/built.list" && grep -qx 't/.wh.gone' "$W/built.list" ||
	fail "podman build's last layer has no opaque marker or whiteout: $(tr '\n' ' ' <"$W/built.list")"

step "built-*: skopeo copy to zstd, gzip, uncompressed, Docker v2s2"
# Each in a layout of its own: skopeo reuses the blobs a layout has.
C=$W/conv
skopeo_q --dest-compress-format zstd "oci:$L:built" "oci:$C-zstd:built"
skopeo_q --dest-compress-format gzip "oci:$C-zstd:built" "oci:$C-gzip:built"
skopeo_q --dest-decompress "oci:$L:built" "dir:$W/built-dir"
skopeo_q --dest-oci-accept-uncompressed-layers "dir:$W/built-dir" "oci:$C-plain:built"
skopeo_q --format v2s2 "oci:$L:built" "oci:$C-v2s2:built"
for v in zstd:tar+zstd gzip:tar+gzip plain:v1.tar v2s2:diff.tar.gzip; do
	jq -e --arg s "${v#*:}" '.layers | length == 3 and all(.mediaType | endswith($s))' \
		"$(manifest_of "$C-${v%%:*}" built)" >/dev/null ||
		fail "skopeo wrote no ${v#*:} layers for built-${v%%:*}: $(cat "$(manifest_of "$C-${v%%:*}" built)")"
done

step "many: 41 umoci insert layers"
umoci new --image "$L:many"
for i in $(seq 0 40); do
	mkdir -p "$W/many/$i"
	echo "layer $i" >"$W/many/$i/f$i"
	quiet umoci umoci insert --no-history --image "$L:many" "$W/many/$i" "/m/$i"
	if [ $((i % 3)) -eq 2 ]; then
		quiet umoci umoci insert --no-history --image "$L:many" --whiteout "/m/$((i - 2))/f$((i - 2))"
	fi
done
n=$(jq '.layers | length' "$(manifest_of "$L" many)")
[ "$n" -ge 40 ] || fail "many has $n layers, want 40 or more"

step "multi: an index of linux/amd64 and linux/arm64"
for arch in amd64 arm64; do
	mkdir -p "$W/arch-$arch/etc"
	echo "$arch" >"$W/arch-$arch/etc/arch"
	quiet umoci umoci insert --image "$L:insert" --tag "multi-$arch" "$W/arch-$arch/etc" /etc
	quiet umoci umoci config --image "$L:multi-$arch" --os linux --architecture "$arch"
done
jq -c '[.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] | startswith("multi-")) |
	{mediaType, digest, size, platform: {os: "linux",
		architecture: (.annotations["org.opencontainers.image.ref.name"] | ltrimstr("multi-"))}}] |
	{schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json", manifests: .}' \
	"$L/index.json" >"$W/tmp/multi.json"
hex=$(sha256sum "$W/tmp/multi.json" | cut -d' ' -f1)
cp "$W/tmp/multi.json" "$L/blobs/sha256/$hex"
jq --arg d "sha256:$hex" --argjson s "$(stat -c %s "$W/tmp/multi.json")" \
	'.manifests += [{mediaType: "application/vnd.oci.image.index.v1+json", digest: $d, size: $s,
		annotations: {"org.opencontainers.image.ref.name": "multi"}}]' "$L/index.json" >"$W/tmp/index.json"
mv "$W/tmp/index.json" "$L/index.json"
du -sh "$L" | sed 's/^/   layout /'

# --- the registry ---------------------------------------------------------------
# Each image also goes to a local docker-registry (tests/lib-registry.sh,
# plain http) by skopeo and is packed from there with cfs-pack docker://;
# the reference must be the OCI layout's.
# registry_pack NAME LAYOUT:TAG WANT [ARCH [SKOPEO-OPTS...]]: packs
# docker://$REG_HOST/cfs/NAME:1 (pushed from oci:LAYOUT:TAG, the whole
# index for multi) and checks that the reference is WANT.
registry_pack() {
	local name=$1 tag=$2 want=$3 arch=${4:-} r
	local -a plat=()
	shift $(($# < 4 ? $# : 4))
	[ -n "${REG_HOST:-}" ] || start_registry plain
	skopeo_q --all --dest-tls-verify=false "$@" "oci:$tag" "docker://$REG_HOST/cfs/$name:1"
	[ -z "$arch" ] || plat=(--platform "linux/$arch")
	r=$(pack "$name-registry" "docker://$REG_HOST/cfs/$name:1" "${plat[@]}" --tls-verify=false)
	[ "$r" = "$want" ] || fail "$name: docker:// gave $r, the OCI layout $want"
	echo "   $name: docker://$REG_HOST/cfs/$name:1 gives the layout's $r"
}

# --- pack, mount, compare -------------------------------------------------------
S=$W/store
# pack NAME SOURCE [OPTS...]: cfs-pack OPTS --tag NAME SOURCE $S; prints the reference.
pack() {
	local name=$1 src=$2
	shift 2
	timeout 120 "$CFS_PACK" --tag "$name" "$@" "$src" "$S" >"$W/pack.out" 2>"$W/pack.err" </dev/null ||
		fail "cfs-pack $* $src exited $?: $(tail -n 3 "$W/pack.err")"
	ref_of "$W/pack.out"
}

# layer_conform NAME MANIFEST: each layer's own cfs image (its record in
# the store, layers/<hex of the manifest's digest>) mounted and compared
# with the layer of the same diff_id in podman's overlay storage, which
# c/storage extracted from the same blob (or, for podman build's own
# layers, the build's upper directory): whiteouts as 0:0 devices, opaque
# directories by trusted.overlay.opaque.  Not compared: the whiteouts'
# mtimes and the directories' (c/storage dates what it makes: a whiteout,
# a directory the layer holds entries in without naming it), and the
# diff's root, c/storage's own directory.
layer_conform() {
	local name=$1 man=$2 d rec img id diff mp=$W/lmnt-$1 n=0
	for d in $(jq -r '.layers[].digest' "$man"); do
		rec=$S/layers/${d#sha256:}
		[ -f "$rec" ] || fail "$name: no layer record layers/${d#sha256:}"
		img=$(sed -n 's/^image //p' "$rec")
		# by diff_id: podman build's own layers have no compressed digest
		id=$(jq -r --arg d "$(sed -n 's/^diff_id //p' "$rec")" \
			'map(select(."diff-digest" == $d)) | .[0].id // empty' "$W/proot/overlay-layers/layers.json")
		[ -n "$id" ] || fail "$name: podman's storage has no layer of blob $d"
		diff=$W/proot/overlay/$id/diff
		mount_bg "$mp" "$S" "$img" --cache "$W/cache" -o allow_other,dev,suid
		chmod --reference="$mp" "$diff"
		chown --reference="$mp" "$diff"
		compare --approx-blocks --no-mtime-dirs --no-mtime-whiteouts "$diff" "$mp" >/dev/null
		unmount_clean "$mp" "$MOUNT_PID"
		n=$((n + 1))
	done
	echo "   $name: $n layers' own images equal to podman's overlay diffs of them"
}

# conform NAME TAG [ARCH]: the checks above for the layout's TAG (an index
# with ARCH, whose own tag multi-ARCH umoci unpacks); prints the reference.
conform() {
	local name=$1 tag=$2 arch=${3:-} r ra img utag mp=$W/mnt-$1 ex=$W/export-$1
	local -a plat=() sarch=()
	if [ -n "$arch" ]; then
		plat=(--platform "linux/$arch")
		sarch=(--override-arch "$arch")
	fi
	r=$(pack "$name" "oci:$L:$tag" "${plat[@]}")
	skopeo_q "${sarch[@]}" "oci:$L:$tag" "docker-archive:$W/$name.tar:localhost/cfs/$name:1"
	ra=$(pack "$name-archive" "docker-archive:$W/$name.tar")
	[ "$ra" = "$r" ] || fail "$name: the docker-archive gave $ra, the OCI layout $r"
	registry_pack "$name" "$L:$tag" "$r" "$arch"

	quiet umoci umoci unpack --image "$L:${arch:+multi-}${arch:-$tag}" "$W/unpack-$name"
	img=localhost/cfs/$name:1
	skopeo_q "${sarch[@]}" "oci:$L:$tag" "$CS$img"
	quiet podman "${PODMAN[@]}" create --name "cfs-$name" "$img" /bin/sh
	mkdir -p "$ex"
	"${PODMAN[@]}" export "cfs-$name" >"$W/export.tar" 2>"$W/podman.log" ||
		fail "podman export exited $?: $(tail -n 3 "$W/podman.log")"
	tar -C "$ex" --xattrs --xattrs-include='*' --numeric-owner -xpf "$W/export.tar" ||
		fail "$name: tar -x of podman's export exited $?"
	"${PODMAN[@]}" rm "cfs-$name" >/dev/null 2>&1 || true

	mount_bg "$mp" "$S" "$name" --cache "$W/cache" -o allow_other,dev,suid
	# The export has no entry for the root.
	chmod --reference="$mp" "$ex"
	chown --reference="$mp" "$ex"
	touch --reference="$mp" "$ex"
	utag=${arch:+multi-}${arch:-$tag}
	unnamed_dirs "$L" "$utag" "$mp" >"$W/unnamed.list"
	while read -r d; do
		touch --reference="$mp/$d" "$W/unpack-$name/rootfs/$d"
	done <"$W/unnamed.list"
	unnamed_dirs "$L" "$utag" "$mp" implied >"$W/implied.list"
	while read -r d; do
		[ ! -d "$mp/$d" ] || touch --reference="$mp/$d" "$ex/$d"
	done <"$W/implied.list"
	echo "   $name: mtime not compared for $(grep -c '' "$W/unnamed.list") directories no layer" \
		"names ($(grep -c '' "$W/implied.list") for podman)"
	echo "   $name: umoci unpack"
	compare --approx-blocks "$W/unpack-$name/rootfs" "$mp"
	echo "   $name: podman export"
	compare --approx-blocks "$ex" "$mp"
	unmount_clean "$mp" "$MOUNT_PID"
	layer_conform "$name" "$(manifest_of "$L" "$utag")"
	rm -rf "$ex" "$W/unpack-$name" "$W/export.tar" "$W/$name.tar"
	LAST_REF=$r
}

for name in swap insert built many; do
	step "conform: $name"
	conform "$name" "$name"
	[ "$name" != built ] || built_ref=$LAST_REF
done
for v in zstd gzip plain v2s2; do
	step "conform: built-$v is built"
	r=$(pack "built-$v" "oci:$C-$v:built")
	[ "$r" = "$built_ref" ] || fail "built-$v gave $r, built $built_ref: same layers and config"
	# skopeo writes no docker-archive from zstd layers ("not supported for
	# docker images"), and reads no v2s2 manifest from an OCI layout.
	if [ "$v" = gzip ] || [ "$v" = plain ]; then
		skopeo_q "oci:$C-$v:built" "docker-archive:$W/built-$v.tar:localhost/cfs/built-$v:1"
		r=$(pack "built-$v-archive" "docker-archive:$W/built-$v.tar")
		[ "$r" = "$built_ref" ] || fail "built-$v as a docker-archive gave $r, built $built_ref"
		rm -f "$W/built-$v.tar"
	fi
	if [ "$v" = v2s2 ]; then
		registry_pack "built-$v" "$L:built" "$built_ref" "" --format v2s2
	else
		registry_pack "built-$v" "$C-$v:built" "$built_ref"
	fi
done
for arch in amd64 arm64; do
	step "conform: multi --platform linux/$arch"
	conform "multi-$arch" multi "$arch"
	eval "ref_$arch=\$LAST_REF"
done
# shellcheck disable=SC2154 # set by the eval above
[ "$ref_amd64" != "$ref_arm64" ] || fail "both platforms of multi gave one image"
echo "PASS"
