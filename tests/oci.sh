#!/usr/bin/env bash
# OCI and docker images: pack umoci-built, registry-round-tripped (zstd, docker-archive) and hand-made layouts, mount them, compare with umoci unpack; multi-platform picks; hostile images refused.
#
# The layers come from tests/oci-layers.py, which spells out every layer rule
# in tar order (whiteouts, an opaque marker after new children, replacements
# both ways, a hard link into a lower layer, PAX xattrs, setuid, devices).
# umoci builds the image; a local docker-registry and skopeo turn it into a
# zstd OCI layout and a docker-archive; a hand-made layout mixes plain,
# multi-member gzip and zstd layers.  Every variant must give the same cfs
# reference (it depends on the tree and the config blob, not on how layers
# are compressed or packaged), and every mount must equal `umoci unpack`.
# docker save archives of both layouts (docker up to 24 and from 25) give it
# too.  Multi-platform indexes pick linux/amd64 unless --platform.  Hostile
# images must be refused with one line on stderr and nothing written outside
# the store.
#
# Env (set by tests/meson.build): CFS_PACK, CFS_MOUNT, CFS_LS, CFS_TREECMP,
# CFS_SRCDIR.  Needs root (umoci unpack of device nodes, owners and
# security.capability), FUSE, umoci, skopeo, docker-registry, jq, zstd and
# python3; exits 77 without them (fails under CI=true without the tools).
set -euo pipefail

source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/lib-registry.sh"

need_root "needs root (umoci unpack makes device nodes, owners, security.capability)"
need_fuse
need_ci_tools umoci skopeo jq zstd gzip python3 sha256sum getfattr curl docker-registry
: "${CFS_PACK:?}" "${CFS_MOUNT:?}" "${CFS_LS:?}" "${CFS_TREECMP:?}"
srcdir=${CFS_SRCDIR:-$(cd "$(dirname "$0")/.." && pwd)}

make_workdir oci
# skopeo and umoci keep their temporary files here, not in /var/tmp.
mkdir -p "$W/tmp"
export TMPDIR=$W/tmp

# skopeo ARGS...: no signature policy (the host's policy.json is no part of
# the test), no TLS to the local registry.
skopeo_q() {
	timeout 120 skopeo --insecure-policy copy -q "$@" >"$W/skopeo.log" 2>&1 ||
		fail "skopeo copy $* exited $?: $(tail -n 3 "$W/skopeo.log")"
}

# pack STORE NAME SOURCE [OPTS...]: cfs-pack OPTS --tag NAME SOURCE STORE;
# prints the reference.
pack() {
	local store=$1 name=$2 src=$3 out=$W/pack-$2.out err=$W/pack-$2.err
	shift 3
	timeout 120 "$CFS_PACK" --tag "$name" "$@" "$src" "$store" >"$out" 2>"$err" </dev/null ||
		fail "cfs-pack --tag $name $* $src exited $?: $(tail -n 3 "$err")"
	[ -e "$store/tags/$name" ] || fail "cfs-pack --tag $name did not create $store/tags/$name"
	ref_of "$out"
}

# --- hand-made OCI layouts ------------------------------------------------
# What umoci and skopeo never write (mixed compression, broken digests) is
# assembled here: blobs named by sha256sum, JSON by jq.

# blob LAYOUT FILE: copies FILE into LAYOUT's blobs under its digest; sets
# BLOB_DIGEST and BLOB_SIZE.
blob() {
	local hex
	hex=$(sha256sum "$2" | cut -d' ' -f1)
	mkdir -p "$1/blobs/sha256"
	cp "$2" "$1/blobs/sha256/$hex"
	BLOB_DIGEST=sha256:$hex BLOB_SIZE=$(stat -c %s "$2")
}

# descriptor MEDIATYPE: the descriptor of the last blob.
descriptor() {
	jq -cn --arg m "$1" --arg d "$BLOB_DIGEST" --argjson s "$BLOB_SIZE" \
		'{mediaType: $m, digest: $d, size: $s}'
}

# blob_path LAYOUT DIGEST: the file of a blob.
blob_path() {
	echo "$1/blobs/sha256/${2#sha256:}"
}

# set_index LAYOUT DESCRIPTOR [REF]: index.json with one manifest (or
# index), named REF by the annotation umoci and skopeo use for tags.
set_index() {
	echo '{"imageLayoutVersion": "1.0.0"}' >"$1/oci-layout"
	jq -cn --argjson d "$2" --arg r "${3:-}" \
		'{schemaVersion: 2, manifests: [$d + (if $r == "" then {} else
			{annotations: {"org.opencontainers.image.ref.name": $r}} end)]}' >"$1/index.json"
}

# diff_ids_config FILE TAR...: a minimal linux/amd64 config with the
# diff_ids of the uncompressed TARs.
diff_ids_config() {
	local out=$1 t
	shift
	for t; do echo "sha256:$(sha256sum "$t" | cut -d' ' -f1)"; done |
		jq -R . | jq -cs '{architecture: "amd64", os: "linux", config: {},
			rootfs: {type: "layers", diff_ids: .}}' >"$out"
}

# make_layout LAYOUT CONFIG LAYER=MEDIATYPE...: an OCI layout with one image,
# tagged "t", from the config blob file CONFIG and the layer blob files.
make_layout() {
	local dir=$1 config=$2 l cfg
	local -a layers=()
	shift 2
	mkdir -p "$dir"
	for l; do
		blob "$dir" "${l%%=*}"
		layers+=("$(descriptor "${l#*=}")")
	done
	blob "$dir" "$config"
	cfg=$(descriptor application/vnd.oci.image.config.v1+json)
	printf '%s\n' "${layers[@]}" | jq -cs --argjson c "$cfg" \
		'{schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
		  config: $c, layers: .}' >"$W/tmp/manifest.json"
	blob "$dir" "$W/tmp/manifest.json"
	set_index "$dir" "$(descriptor application/vnd.oci.image.manifest.v1+json)" t
}

# manifest_of LAYOUT: the manifest file that index.json names first.
manifest_of() {
	blob_path "$1" "$(jq -r '.manifests[0].digest' "$1/index.json")"
}

# edit_manifest LAYOUT JQ-FILTER: rewrites the manifest of a one-image
# layout (new blob, index.json pointed at it).
edit_manifest() {
	jq -c "$2" "$(manifest_of "$1")" >"$W/tmp/manifest.json"
	blob "$1" "$W/tmp/manifest.json"
	set_index "$1" "$(descriptor application/vnd.oci.image.manifest.v1+json)" t
}

# --- the layers and the umoci image ---------------------------------------
step "layers: tests/oci-layers.py"
lay=$W/layers
mkdir -p "$lay"
python3 "$srcdir/tests/oci-layers.py" "$lay" || fail "oci-layers.py exited $?"

step "umoci: image L:base, three layers and a config"
L=$W/L
umoci init --layout "$L" || fail "umoci init exited $?"
umoci new --image "$L:base" || fail "umoci new exited $?"
for i in 1 2 3; do
	umoci raw add-layer --image "$L:base" "$lay/layer$i.tar" ||
		fail "umoci raw add-layer layer$i.tar exited $?"
done
# Repeated options append: entrypoint ["/bin/sh", "-c"], two Env entries.
umoci config --image "$L:base" --config.entrypoint /bin/sh --config.entrypoint -c \
	--config.cmd 'echo hello from cfs' --config.env PATH=/usr/bin:/bin --config.env CFS_TEST=1 \
	--config.workingdir /etc --config.user 1000:100 --author 'cfs oci test' ||
	fail "umoci config exited $?"
manifest=$(manifest_of "$L")
config_digest=$(jq -r .config.digest "$manifest")
config_blob=$(blob_path "$L" "$config_digest")
jq -e '.layers | length == 3 and all(.mediaType | endswith("tar+gzip"))' "$manifest" >/dev/null ||
	fail "umoci's manifest does not have 3 gzip layers: $(cat "$manifest")"
echo "   config $config_digest"

step "umoci unpack: the reference tree"
bundle=$W/bundle
umoci unpack --image "$L:base" "$bundle" >"$W/unpack.log" 2>&1 ||
	fail "umoci unpack exited $?: $(tail -n 3 "$W/unpack.log")"
ref_tree=$bundle/rootfs

# check_rules ROOT: each layer rule, by name, on the merged tree, so that a
# failure says which rule broke (treecmp only says what differs).
check_rules() {
	local r=$1 t
	[ ! -e "$r/etc/gone" ] || fail "$r: whiteout etc/.wh.gone (layer 2) left etc/gone"
	[ "$(cat "$r/etc/samelayer")" = "layer 2" ] ||
		fail "$r: etc/.wh.samelayer must remove layer 1's file only, not layer 2's (got '$(cat "$r/etc/samelayer" 2>&1)')"
	[ ! -e "$r/opq/old1" ] && [ ! -e "$r/opq/olddir" ] ||
		fail "$r: opaque opq/.wh..wh..opq left layer 1's children: $(ls -A "$r/opq")"
	[ -f "$r/opq/new1" ] && [ -f "$r/opq/newdir/x" ] ||
		fail "$r: layer 2's children of opq/, before its opaque marker in the tar, are gone: $(ls -A "$r/opq")"
	[ "$(stat -c %a "$r/opq")" = 750 ] || fail "$r: opq/ lost layer 2's mode 750: $(stat -c %a "$r/opq")"
	[ -f "$r/repl" ] && [ ! -L "$r/repl" ] ||
		fail "$r: repl (file, dir in layer 2, file in layer 3) is not a file"
	[ "$(cat "$r/repl")" = "a file again in layer 3" ] || fail "$r: repl has the wrong contents"
	[ "$(stat -c '%a %u:%g' "$r/attrdir")" = "700 1000:1000" ] ||
		fail "$r: attrdir/ redefined by layer 2 has $(stat -c '%a %u:%g' "$r/attrdir"), want 700 1000:1000"
	[ -f "$r/attrdir/child" ] || fail "$r: directory over directory lost attrdir/child"
	[ "$(stat -c %i "$r/data/hl")" = "$(stat -c %i "$r/data/target")" ] ||
		fail "$r: data/hl (layer 2) is not a hard link of data/target (layer 1)"
	[ "$(stat -c %h "$r/data/target")" = 2 ] || fail "$r: data/target nlink $(stat -c %h "$r/data/target"), want 2"
	[ "$(stat -c %i "$r/data/big-link")" = "$(stat -c %i "$r/data/big")" ] ||
		fail "$r: data/big-link is not a hard link of data/big"
	[ "$(getfattr --only-values -n user.cfs.test "$r/etc/caps" 2>/dev/null)" = "hello xattr" ] ||
		fail "$r: etc/caps lacks the PAX xattr user.cfs.test"
	t=$(getfattr --only-values -n security.capability "$r/etc/caps" 2>/dev/null | od -An -tx1 | tr -d ' \n')
	[ "$t" = 0100000200040000000000000000000000000000 ] ||
		fail "$r: etc/caps security.capability is '$t', want cap_net_bind_service=ep"
	[ "$(stat -c %a "$r/usr/bin/suid")" = 4755 ] || fail "$r: usr/bin/suid lost its setuid bit"
	[ ! -e "$r/usr/bin/sgid" ] || fail "$r: whiteout usr/bin/.wh.sgid (layer 3) left layer 2's file"
	[ -f "$r/usr/bin/tool" ] || fail "$r: usr/bin/tool (layer 1) is gone"
	[ "$(stat -c '%F %t:%T' "$r/dev/null")" = "character special file 1:3" ] ||
		fail "$r: dev/null is $(stat -c '%F %t:%T' "$r/dev/null"), want character device 1:3"
	[ -p "$r/dev/fifo" ] || fail "$r: dev/fifo is not a fifo"
	[ "$(readlink "$r/lnk")" = etc/passwd ] || fail "$r: lnk is not a symlink to etc/passwd"
	grep -qx 'root:x:0:0:root:/root:/bin/bash' "$r/etc/passwd" ||
		fail "$r: etc/passwd is not layer 3's"
	[ "$(stat -c '%a %u:%g' "$r/etc/keep")" = "640 1000:100" ] || fail "$r: etc/keep lost its owner or mode"
	t=$(find "$r" -name '.wh.*' | head -n 3)
	[ -z "$t" ] || fail "$r: whiteout names leaked into the tree: $t"
}
check_rules "$ref_tree"

# check_config STORE IMAGE CONFIG-BLOB: cfs-ls --config prints the config
# blob byte for byte, and --info names its digest and shows it.
check_config() {
	local store=$1 image=$2 want=$3 out=$W/config.out
	timeout 30 "$CFS_LS" --config "$store" "$image" >"$out" 2>"$W/config.err" ||
		fail "cfs-ls --config $store $image exited $?: $(tail -n 3 "$W/config.err")"
	cmp -s "$out" "$want" ||
		fail "cfs-ls --config $image differs from the config blob: $(jq -cS . "$out" 2>&1 | head -c 300)"
	[ "$(jq -cS . "$out")" = "$(jq -cS . "$want")" ] || fail "cfs-ls --config $image: JSON differs"
	timeout 30 "$CFS_LS" --info "$store" "$image" >"$W/info.out" 2>"$W/config.err" ||
		fail "cfs-ls --info $store $image exited $?: $(tail -n 3 "$W/config.err")"
	grep -qx "config_digest sha256:$(sha256sum "$want" | cut -d' ' -f1)" "$W/info.out" ||
		fail "cfs-ls --info $image has no config_digest line for its config: $(cat "$W/info.out")"
	# and the config itself, on one line
	[ "$(sed -n 's/^config //p' "$W/info.out" | jq -cS .)" = "$(jq -cS . "$want")" ] ||
		fail "cfs-ls --info $image: its config line is not the config"
}

# check_mount STORE IMAGE NAME: mounts IMAGE, compares it with umoci's
# tree, checks each rule, unmounts; the daemon must exit 0.
check_mount() {
	local store=$1 image=$2 mp=$W/mnt-$3
	mount_bg "$mp" "$store" "$image" --cache "$W/cache-$3"
	# Everything is compared, directory mtimes too: umoci restores a
	# directory's mtime after each entry it adds or removes in it, so the
	# tree holds the mtimes of the tar headers, as a cfs image does.
	# st_blocks has 64 KiB of slack, as in roundtrip.sh.
	compare --approx-blocks "$ref_tree" "$mp"
	check_rules "$mp"
	unmount_clean "$mp" "$MOUNT_PID"
}

# --- variant a: umoci's layout as it is -------------------------------------
step "pack: oci:L:base (umoci, gzip layers)"
ref=$(pack "$W/store-umoci" base "oci:$L:base")
echo "   reference $ref"
check_mount "$W/store-umoci" base umoci
check_config "$W/store-umoci" base "$config_blob"
check_config "$W/store-umoci" "$ref" "$config_blob"
# Entrypoint and Env are there as umoci wrote them.
jq -e '.config.Entrypoint == ["/bin/sh", "-c"] and (.config.Env | index("CFS_TEST=1"))
	and .config.WorkingDir == "/etc" and .config.User == "1000:100"' "$W/config.out" >/dev/null ||
	fail "the stored config lost Entrypoint/Env/WorkingDir/User: $(cat "$W/config.out")"

# Without REF the layout's one image is taken.
r=$(pack "$W/store-umoci" noref "oci:$L")
[ "$r" = "$ref" ] || fail "oci:L (no ref) gave $r, oci:L:base gave $ref"

# --- variant b: by hand, one layer each plain, multi-member gzip, zstd ---------
step "pack: a hand-made layout: plain, multi-member gzip and zstd layers, umoci's config"
# Layer 2 as two gzip members, cut in the middle of a 512-byte tar block: a
# reader that stops after the first member sees a truncated tar.
half=$(($(stat -c %s "$lay/layer2.tar") / 2 + 137))
{
	head -c "$half" "$lay/layer2.tar" | gzip -n
	tail -c +$((half + 1)) "$lay/layer2.tar" | gzip -n
} >"$W/tmp/layer2.tar.gz"
zstd -q -c "$lay/layer3.tar" >"$W/tmp/layer3.tar.zst"
make_layout "$W/mixed" "$config_blob" \
	"$lay/layer1.tar=application/vnd.oci.image.layer.v1.tar" \
	"$W/tmp/layer2.tar.gz=application/vnd.oci.image.layer.v1.tar+gzip" \
	"$W/tmp/layer3.tar.zst=application/vnd.oci.image.layer.v1.tar+zstd"
r=$(pack "$W/store-mixed" mixed "oci:$W/mixed:t")
[ "$r" = "$ref" ] || fail "the mixed-compression layout gave $r, umoci's $ref: same layers, same tree"
check_mount "$W/store-mixed" mixed mixed
check_config "$W/store-mixed" mixed "$config_blob"

# --- variants c and d: through a registry, back as zstd OCI and docker-archive ---
step "registry: docker-registry on 127.0.0.1, skopeo copy oci:L:base there"
start_registry plain
remote=docker://$REG_HOST/cfs/test:1
reg_push "oci:$L:base" cfs/test:1

step "skopeo: registry -> oci:Z:zst with zstd layers"
skopeo_q "${REG_SRC_OPTS[@]}" --dest-compress-format zstd "$remote" "oci:$W/Z:zst"
jq -e '.layers | length == 3 and all(.mediaType | endswith("tar+zstd"))' "$(manifest_of "$W/Z")" >/dev/null ||
	fail "skopeo --dest-compress-format zstd wrote no zstd layers: $(cat "$(manifest_of "$W/Z")")"
r=$(pack "$W/store-zstd" zst "oci:$W/Z:zst")
[ "$r" = "$ref" ] || fail "the zstd layout from the registry gave $r, umoci's $ref"
check_mount "$W/store-zstd" zst zstd
check_config "$W/store-zstd" zst "$config_blob"

step "skopeo: registry -> docker-archive:img.tar"
archive=$W/img.tar
skopeo_q "${REG_SRC_OPTS[@]}" "$remote" "docker-archive:$archive:cfs/test:1"
# skopeo writes the name as docker normalizes it; cfs matches what is written.
repotag=$(tar -xOf "$archive" manifest.json | jq -r '.[0].RepoTags[0]')
[ -n "$repotag" ] && [ "$repotag" != null ] || fail "img.tar's manifest.json names no RepoTags"
echo "   RepoTags $repotag"
r=$(pack "$W/store-archive" archive "docker-archive:$archive:$repotag")
[ "$r" = "$ref" ] || fail "docker-archive:img.tar:$repotag gave $r, umoci's $ref"
r=$(pack "$W/store-archive" archive1 "docker-archive:$archive")
[ "$r" = "$ref" ] || fail "docker-archive:img.tar (its one image) gave $r, umoci's $ref"
check_mount "$W/store-archive" archive archive
check_config "$W/store-archive" archive "$config_blob"

# docker_save OUT STYLE: a docker-archive laid out as `docker save` writes
# it, from the uncompressed layers and umoci's config, manifest.json last
# (a reader must not need it first): STYLE classic is docker up to 24
# (<id>/layer.tar, <hex>.json), blobs is docker 25 on (blobs/sha256/<hex>).
docker_save() {
	local out=$1 style=$2 d=$W/tmp/save-$2 i hex cfg
	local -a layers=() members=()
	mkdir -p "$d"
	for i in 1 2 3; do
		hex=$(sha256sum "$lay/layer$i.tar" | cut -d' ' -f1)
		if [ "$style" = classic ]; then
			mkdir -p "$d/$hex"
			cp "$lay/layer$i.tar" "$d/$hex/layer.tar"
			echo 1.0 >"$d/$hex/VERSION"
			layers+=("$hex/layer.tar")
			members+=("$hex")
		else
			mkdir -p "$d/blobs/sha256"
			cp "$lay/layer$i.tar" "$d/blobs/sha256/$hex"
			layers+=("blobs/sha256/$hex")
		fi
	done
	if [ "$style" = classic ]; then
		cfg=${config_digest#sha256:}.json
		cp "$config_blob" "$d/$cfg"
		members+=("$cfg")
	else
		cfg=blobs/sha256/${config_digest#sha256:}
		cp "$config_blob" "$d/$cfg"
		members=(blobs)
	fi
	printf '%s\n' "${layers[@]}" | jq -R . | jq -cs --arg c "$cfg" \
		'[{Config: $c, RepoTags: ["cfs/test:1"], Layers: .}]' >"$d/manifest.json"
	tar -C "$d" -cf "$out" -- "${members[@]}" manifest.json || fail "tar -c of $out exited $?"
}
for style in classic blobs; do
	step "pack: docker-archive as docker save writes it ($style layout)"
	docker_save "$W/save-$style.tar" "$style"
	r=$(pack "$W/store-archive" "save-$style" "docker-archive:$W/save-$style.tar:cfs/test:1")
	[ "$r" = "$ref" ] || fail "the $style docker save archive gave $r, umoci's $ref"
	check_config "$W/store-archive" "save-$style" "$config_blob"
done

# --- multi-platform index ---------------------------------------------------
step "multi-platform: index -> nested index of linux/amd64, linux/arm64, linux/arm/v7, an attestation"
M=$W/M
cp -a "$L" "$M"
# Each platform: the base image plus its own etc/arch, tagged by umoci.
for plat in amd64:amd64 arm64:arm64 armv7:arm; do
	tag=${plat%%:*} arch=${plat#*:}
	umoci raw add-layer --image "$M:base" --tag "$tag" "$lay/arch-$tag.tar" ||
		fail "umoci raw add-layer arch-$tag.tar exited $?"
	umoci config --image "$M:$tag" --os linux --architecture "$arch" ||
		fail "umoci config --architecture $arch exited $?"
done
# An attestation manifest as buildkit writes it: platform unknown/unknown, an
# in-toto layer that is no tar; a packer that took it would fail.
echo '{"_type": "https://in-toto.io/Statement/v0.1", "predicateType": "https://spdx.dev/Document"}' \
	>"$W/tmp/intoto.json"
blob "$M" "$W/tmp/intoto.json"
att_layer=$(descriptor application/vnd.in-toto+json |
	jq -c '. + {annotations: {"in-toto.io/predicate-type": "https://spdx.dev/Document"}}')
jq -cn --arg d "$BLOB_DIGEST" '{architecture: "unknown", os: "unknown", config: {},
	rootfs: {type: "layers", diff_ids: [$d]}}' >"$W/tmp/att-config.json"
blob "$M" "$W/tmp/att-config.json"
jq -cn --argjson c "$(descriptor application/vnd.oci.image.config.v1+json)" --argjson l "$att_layer" \
	'{schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
	  config: $c, layers: [$l]}' >"$W/tmp/att-manifest.json"
blob "$M" "$W/tmp/att-manifest.json"
att=$(descriptor application/vnd.oci.image.manifest.v1+json)
# plat_desc TAG ARCH [VARIANT]: the descriptor of the manifest umoci tagged
# TAG, with its platform, as an index lists it.
plat_desc() {
	jq -c --arg t "$1" --arg a "$2" --arg v "${3:-}" '.manifests[] |
		select(.annotations["org.opencontainers.image.ref.name"] == $t) |
		{mediaType, digest, size, platform: ({os: "linux", architecture: $a} +
			if $v == "" then {} else {variant: $v} end)}' "$M/index.json"
}
amd=$(plat_desc amd64 amd64)
arm=$(plat_desc arm64 arm64)
armv7=$(plat_desc armv7 arm v7)
[ -n "$amd" ] && [ -n "$arm" ] && [ -n "$armv7" ] ||
	fail "umoci's index.json lacks a platform tag: $(cat "$M/index.json")"
att=$(jq -c --argjson m "$amd" '. + {platform: {architecture: "unknown", os: "unknown"},
	annotations: {"vnd.docker.reference.digest": $m.digest,
		"vnd.docker.reference.type": "attestation-manifest"}}' <<<"$att")
# The attestation first: a packer that takes the first manifest fails.
jq -cn --argjson a "$att" --argjson x "$amd" --argjson y "$arm" --argjson z "$armv7" \
	'{schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json",
	  manifests: [$a, $y, $z, $x]}' >"$W/tmp/nested.json"
blob "$M" "$W/tmp/nested.json"
set_index "$M" "$(descriptor application/vnd.oci.image.index.v1+json)" multi
# config_of DESCRIPTOR: the config blob file of a manifest of $M.
config_of() {
	blob_path "$M" "$(jq -r .config.digest "$(blob_path "$M" "$(jq -r .digest <<<"$1")")")"
}
amd_config=$(config_of "$amd")
arm_config=$(config_of "$arm")

ms=$W/store-multi
r_amd=$(pack "$ms" multi "oci:$M:multi")
r_noref=$(pack "$ms" multi-noref "oci:$M")
r_amd2=$(pack "$ms" multi-amd64 "oci:$M:multi" --platform linux/amd64)
r_arm=$(pack "$ms" multi-arm64 "oci:$M:multi" --platform linux/arm64)
r_armv7=$(pack "$ms" multi-armv7 "oci:$M:multi" --platform linux/arm/v7)
echo "   default $r_amd, linux/arm64 $r_arm, linux/arm/v7 $r_armv7"
[ "$r_noref" = "$r_amd" ] || fail "oci:M (no ref) gave $r_noref, oci:M:multi $r_amd"
[ "$r_amd2" = "$r_amd" ] || fail "--platform linux/amd64 gave $r_amd2, the default pick $r_amd"
[ "$r_arm" != "$r_amd" ] || fail "--platform linux/arm64 gave the same image as linux/amd64"
[ "$r_armv7" != "$r_amd" ] && [ "$r_armv7" != "$r_arm" ] ||
	fail "--platform linux/arm/v7 gave the image of another platform"
[ "$r_amd" != "$ref" ] || fail "the multi-platform pick is the base image, without etc/arch"
check_config "$ms" multi "$amd_config"
check_config "$ms" multi-arm64 "$arm_config"
for pick in multi:amd64 multi-arm64:arm64 multi-armv7:armv7; do
	mp=$W/mnt-${pick%%:*}
	mount_bg "$mp" "$ms" "${pick%%:*}" --cache "$W/cache-multi"
	got=$(cat "$mp/etc/arch" 2>&1) || true
	[ "$got" = "${pick#*:}" ] || fail "tag ${pick%%:*}: etc/arch is '$got', want ${pick#*:}"
	[ -f "$mp/data/big" ] || fail "tag ${pick%%:*}: the base layers are missing"
	unmount_wait "$mp" "$MOUNT_PID" 30
done

# --- refusals -----------------------------------------------------------------
# refuse CASE HINT SOURCE [OPTS...]: cfs-pack -q must fail by itself (no
# hang, no signal) with exactly one line on stderr that matches the
# extended regex HINT (case-insensitive), and point no tag.  It runs in a
# directory three levels under $W, so a relative escape would land in $W.
hstore=$W/store-hostile
cwd=$W/cwd/a/b
mkdir -p "$cwd"
refuse() {
	local name=$1 hint=$2 src=$3
	shift 3
	fails_one_line "$name: cfs-pack of $src" \
		env -C "$cwd" timeout 60 "$CFS_PACK" -q --tag "bad-$name" "$@" "$src" "$hstore"
	# The hint must be in the message, not in the path of the work directory.
	sed "s|$W|W|g" "$W/err" | grep -Eiq -- "$hint" ||
		fail "$name: the message does not match /$hint/: $(cat "$W/err")"
	[ ! -e "$hstore/tags/bad-$name" ] || fail "$name: a failed cfs-pack pointed tag bad-$name"
	printf '   %-16s exit %d: %s\n' "$name" "$FAILED_RC" "$(cat "$W/err")"
}

step "refusals: which image is meant"
A=$W/A
cp -a "$L" "$A"
umoci tag --image "$A:base" other || fail "umoci tag exited $?"
r=$(pack "$W/store-umoci" other "oci:$A:other")
[ "$r" = "$ref" ] || fail "oci:A:other (a second tag of base) gave $r, want $ref"
refuse ambiguous 'base|other|images|ambiguous|more than one|name one' "oci:$A"
refuse no-such-ref 'nope' "oci:$L:nope"
refuse no-platform 's390x|platform' "oci:$M:multi" --platform linux/s390x
refuse no-variant 'v6|variant|platform' "oci:$M:multi" --platform linux/arm/v6
refuse archive-name 'nope' "docker-archive:$archive:cfs/nope:1"

step "refusals: hostile blobs"
# A flipped byte in the gzip header's MTIME: the layer decompresses to the
# same tar (diff_id fine), only the blob digest is wrong.
H=$W/h-digest
cp -a "$L" "$H"
l0=$(blob_path "$H" "$(jq -r '.layers[0].digest' "$(manifest_of "$H")")")
flip_byte "$l0" 4
refuse blob-digest 'digest|mismatch|does not match' "oci:$H:base"

# The config edited under its old name, same size, still valid JSON: only
# its digest tells.
H=$W/h-config
cp -a "$L" "$H"
f=$(blob_path "$H" "$config_digest")
sed -i 's/cfs oci test/cfs OCI test/g' "$f"
cmp -s "$f" "$config_blob" && fail "editing the config blob changed nothing"
refuse config-digest 'digest|mismatch' "oci:$H:base"

# last_byte_space FILE: its final newline made a space, in place: same
# size, same JSON, another digest.
last_byte_space() {
	[ "$(tail -c 1 "$1" | od -An -c | tr -d ' ')" = '\n' ] || fail "$1 does not end in a newline"
	printf ' ' | dd of="$1" bs=1 seek=$(($(stat -c %s "$1") - 1)) count=1 conv=notrunc status=none
}
# The manifest, and the nested index of the multi-platform layout, so edited.
H=$W/h-manifest
cp -a "$L" "$H"
last_byte_space "$(manifest_of "$H")"
refuse manifest-digest 'digest|mismatch' "oci:$H:base"
H=$W/h-index
cp -a "$M" "$H"
last_byte_space "$(manifest_of "$H")"
refuse index-digest 'digest|mismatch' "oci:$H:multi"

# A layer file cut short in place: the descriptor's size is past its end.
H=$W/h-short
cp -a "$L" "$H"
l0=$(blob_path "$H" "$(jq -r '.layers[0].digest' "$(manifest_of "$H")")")
truncate -s -100 "$l0"
refuse blob-truncated '[0-9] bytes|size|short|truncat|digest|mismatch' "oci:$H:base"

# The descriptor claims 1000 bytes more than the (intact) blob holds.
H=$W/h-size
diff_ids_config "$W/tmp/config1.json" "$lay/layer1.tar"
gzip -n -c "$lay/layer1.tar" >"$W/tmp/layer1.tar.gz"
make_layout "$H" "$W/tmp/config1.json" "$W/tmp/layer1.tar.gz=application/vnd.oci.image.layer.v1.tar+gzip"
edit_manifest "$H" '.layers[0].size += 1000'
refuse size-past-blob '[0-9] bytes|size|short|truncat|eof|end of' "oci:$H:t"

# The config's diff_id is that of another layer.
H=$W/h-diffid
diff_ids_config "$W/tmp/config-wrong.json" "$lay/layer2.tar"
make_layout "$H" "$W/tmp/config-wrong.json" "$W/tmp/layer1.tar.gz=application/vnd.oci.image.layer.v1.tar+gzip"
refuse diff-id 'diff_?id' "oci:$H:t"

# A gzip stream cut in the middle, with a correct descriptor of the cut blob.
H=$W/h-gzip
head -c $(($(stat -c %s "$W/tmp/layer1.tar.gz") / 2)) "$W/tmp/layer1.tar.gz" >"$W/tmp/cut.tar.gz"
make_layout "$H" "$W/tmp/config1.json" "$W/tmp/cut.tar.gz=application/vnd.oci.image.layer.v1.tar+gzip"
refuse gzip-truncated 'gzip|truncat|unexpected|eof|end of|corrupt|decompress' "oci:$H:t"

# A schema1 manifest (docker's legacy, unverifiable format).
H=$W/h-schema1
mkdir -p "$H"
blob "$H" "$W/tmp/layer1.tar.gz"
jq -cn --arg d "$BLOB_DIGEST" '{schemaVersion: 1, name: "cfs/test", tag: "1", architecture: "amd64",
	fsLayers: [{blobSum: $d}], history: [{v1Compatibility: "{\"id\":\"0\"}"}]}' >"$W/tmp/schema1.json"
blob "$H" "$W/tmp/schema1.json"
set_index "$H" "$(descriptor application/vnd.docker.distribution.manifest.v1+json)" t
refuse schema1 'schema ?1|manifest\.v1' "oci:$H:t"

step "refusals: hostile layer entries"
for evil in dotdot:escape-cfs-test abs:x-cfs-test wh:'\.wh\.'; do
	H=$W/h-${evil%%:*}
	diff_ids_config "$W/tmp/config-evil.json" "$lay/evil-${evil%%:*}.tar"
	make_layout "$H" "$W/tmp/config-evil.json" \
		"$lay/evil-${evil%%:*}.tar=application/vnd.oci.image.layer.v1.tar"
	refuse "entry-${evil%%:*}" "${evil#*:}" "oci:$H:t"
done

step "refusals: a docker-archive whose manifest.json names a missing layer"
mkdir -p "$W/tmp/arch"
tar -C "$W/tmp/arch" -xf "$archive"
missing=$(jq -r '.[0].Layers[1]' "$W/tmp/arch/manifest.json")
rm -f "$W/tmp/arch/$missing"
# Top-level names as docker save writes them (no ./ prefix).
(cd "$W/tmp/arch" && tar -cf "$W/bad-archive.tar" -- *) || fail "tar -c of the bad archive exited $?"
refuse archive-missing "${missing%.tar}|missing|not found|no such" "docker-archive:$W/bad-archive.tar"

step "nothing outside the store"
# The bad entries must not exist anywhere: not beside the store, not under
# the working directory of cfs-pack, not at / (what /abs/../../x means).
# /tmp to depth 2 covers a packer that unpacks in a temporary directory
# there.
hits=$({
	find "$W" \( -name escape-cfs-test -o -name x-cfs-test \) -print
	find /tmp -maxdepth 2 \( -name escape-cfs-test -o -name x-cfs-test \) -print
} 2>/dev/null | head -n 5)
[ -z "$hits" ] || fail "a hostile entry was written: $hits"
for p in /escape-cfs-test /x-cfs-test; do
	[ ! -e "$p" ] || fail "a hostile entry was written: $p"
done

echo "PASS"
