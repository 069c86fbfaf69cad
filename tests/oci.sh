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
source "$(dirname "$0")/lib-oci.sh"
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

umoci_base_image
check_rules "$ref_tree"

# --- hand-made OCI layouts ------------------------------------------------
# What umoci and skopeo never write (mixed compression, broken digests) is
# assembled here: blobs named by sha256sum, JSON by jq.

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

# edit_manifest LAYOUT JQ-FILTER: rewrites the manifest of a one-image
# layout (new blob, index.json pointed at it).
edit_manifest() {
	jq -c "$2" "$(manifest_of "$1")" >"$W/tmp/manifest.json"
	blob "$1" "$W/tmp/manifest.json"
	set_index "$1" "$(descriptor application/vnd.oci.image.manifest.v1+json)" t
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
