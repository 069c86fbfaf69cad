# shellcheck shell=bash
# Helpers of the OCI image tests (oci.sh, registry.sh), sourced after lib.sh:
# the umoci-built image both pack, the checks of a packed image against
# umoci's tree, hand-made layout blobs and skopeo (the registries are
# tests/lib-registry.sh's).
# They use $W, $srcdir, $CFS_PACK, $CFS_LS and $TMPDIR as the tests set them.

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

# manifest_of LAYOUT: the manifest file that index.json names first.
manifest_of() {
	blob_path "$1" "$(jq -r '.manifests[0].digest' "$1/index.json")"
}

# umoci_base_image: the image L:base that oci.sh and registry.sh pack:
# tests/oci-layers.py's three layers (in $lay) added by umoci, with a
# config; sets lay, L, manifest, config_digest, config_blob and ref_tree
# (umoci unpack's tree).
umoci_base_image() {
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
}

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
