#!/usr/bin/env bash
# docker:// sources: cfs-pack straight from a docker-registry (plain http, Basic over TLS, Bearer tokens), compared with umoci unpack and with oci: of the same image; by tag, by digest, multi-platform; and the errors a user meets, each one line, no tag.
#
# The umoci-built image of oci.sh (tests/lib-oci.sh) is pushed with skopeo
# to registries of tests/lib-registry.sh.  Packed from the registry it must
# give the very reference `cfs-pack oci:` gives for the layout it came from
# (the index depends on the tree and the config blob only) and mount equal
# to `umoci unpack`; a layer of several parts comes in ranges, resumed
# when cut, and whole from a registry without ranges.  The error cases: a tag or repository that is not
# there (the registry's MANIFEST_UNKNOWN in the message), a registry that
# is down, one that hangs (cfs-faultproxy hang=1: the stall timeout must
# end it, not the test's timeout), a flipped byte in the config and in a
# layer (cfs-faultproxy flip=1), TLS without the CA, a wrong password and
# no credentials; each must fail by itself with one line on stderr and
# point no tag.
#
# Env (set by tests/meson.build): CFS_PACK, CFS_MOUNT, CFS_LS, CFS_TREECMP,
# CFS_FAULTPROXY, CFS_SRCDIR.  Needs root, FUSE, umoci, skopeo,
# docker-registry, htpasswd, openssl, jq and python3; exits 77 without them
# (fails under CI=true without the tools).
set -euo pipefail

here=$(dirname "$0")
source "$here/lib.sh"
source "$here/lib-oci.sh"
source "$here/lib-registry.sh"

need_root "needs root: umoci unpack of the reference tree, and FUSE mounts"
need_ci_tools umoci skopeo jq python3 sha256sum getfattr curl docker-registry htpasswd openssl
need_fuse
: "${CFS_PACK:?}" "${CFS_MOUNT:?}" "${CFS_LS:?}" "${CFS_TREECMP:?}" "${CFS_FAULTPROXY:?}"
srcdir=${CFS_SRCDIR:-$(cd "$(dirname "$0")/.." && pwd)}

make_workdir registry
mkdir -p "$W/tmp"
export TMPDIR=$W/tmp
# No auth file of the host's may answer for the test registries.
export HOME=$W/home XDG_RUNTIME_DIR=$W/run
unset REGISTRY_AUTH_FILE
mkdir -p "$HOME" "$XDG_RUNTIME_DIR"

umoci_base_image
ref=$(pack "$W/store-oci" base "oci:$L:base")
echo "   oci:L:base gives $ref"

# refuse NAME HINT SOURCE [OPTS...]: cfs-pack must fail by itself within
# the test's timeout (30 s, three times the stall timeout) with one line on
# stderr naming SOURCE's host and matching the extended regex HINT, and
# point no tag in the store.
hstore=$W/store-bad
refuse() {
	local name=$1 hint=$2 src=$3
	shift 3
	fails_one_line "$name: cfs-pack $src" timeout 30 "$CFS_PACK" -q --tag "bad-$name" "$@" "$src" "$hstore"
	grep -Eq -- "$hint" "$W/err" || fail "$name: the message does not match /$hint/: $(cat "$W/err")"
	[ ! -e "$hstore/tags/bad-$name" ] || fail "$name: a failed cfs-pack pointed tag bad-$name"
	printf '   %-14s exit %d: %s\n' "$name" "$FAILED_RC" "$(cat "$W/err")"
}

# --- plain http -------------------------------------------------------------
step "plain: docker-registry over http, skopeo copy oci:L:base there"
start_registry plain
reg_push "oci:$L:base" cfs/test:1
reg_push "oci:$L:base" cfs/test:latest
plain=$REG_HOST

step "plain: cfs-pack --tls-verify=false docker://$plain/cfs/test:1"
r=$(pack "$W/store" base "docker://$plain/cfs/test:1" --tls-verify=false)
[ "$r" = "$ref" ] || fail "docker:// gave $r, oci: of the same image $ref"
check_mount "$W/store" base registry
check_config "$W/store" base "$config_blob"
r=$(pack "$W/store" latest "docker://$plain/cfs/test" --tls-verify=false)
[ "$r" = "$ref" ] || fail "docker://.../cfs/test (tag latest) gave $r, want $ref"

step "plain: by digest"
digest=sha256:$(skopeo inspect --raw --tls-verify=false "docker://$plain/cfs/test:1" | sha256sum | cut -d' ' -f1)
[ "$digest" = "$(jq -r '.manifests[0].digest' "$L/index.json")" ] ||
	fail "the registry's manifest $digest is not the layout's"
r=$(pack "$W/store" bydigest "docker://$plain/cfs/test@$digest" --tls-verify=false)
[ "$r" = "$ref" ] || fail "docker://...@$digest gave $r, want $ref"

step "origin: cfs-ls --info names the source and the manifest"
# info_has STORE IMAGE LINE: cfs-ls --info of IMAGE prints LINE.
info_has() {
	"$CFS_LS" --info "$1" "$2" >"$W/info" || fail "cfs-ls --info $2 exited $?"
	grep -qxF -- "$3" "$W/info" || fail "cfs-ls --info $2 lacks '$3': $(grep ^origin "$W/info")"
}
info_has "$W/store" bydigest "origin docker://$plain/cfs/test@$digest"
info_has "$W/store" bydigest "origin_manifest $digest"
! grep -q '^origin_top' "$W/info" || fail "a lone manifest came with an origin_top"
info_has "$W/store-oci" base "origin oci:$L:base"
info_has "$W/store-oci" base "origin_manifest $digest"
# A store that never heard of origins, or a malformed file: a line, no failure.
rm -r "$W/store-oci/origins"
info_has "$W/store-oci" base "origin none"
mkdir -p "$W/store-oci/origins"
printf 'cfs-origin 1\nsource x\n' >"$W/store-oci/origins/${ref#sha256:}"
info_has "$W/store-oci" base "origin unknown"

step "plain: a multi-platform index, --platform"
M=$W/M
cp -a "$L" "$M"
for plat in amd64:amd64 arm64:arm64; do
	umoci raw add-layer --image "$M:base" --tag "${plat%%:*}" "$lay/arch-${plat%%:*}.tar" ||
		fail "umoci raw add-layer arch-${plat%%:*}.tar exited $?"
	umoci config --image "$M:${plat%%:*}" --os linux --architecture "${plat#*:}" ||
		fail "umoci config exited $?"
done
jq -c '{schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json",
	manifests: [.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] as $t |
		$t == "arm64" or $t == "amd64") | {mediaType, digest, size,
		platform: {os: "linux", architecture: .annotations["org.opencontainers.image.ref.name"]}}]}' \
	"$M/index.json" >"$W/tmp/multi.json"
[ "$(jq '.manifests | length' "$W/tmp/multi.json")" = 2 ] || fail "the index lacks a platform: $(cat "$W/tmp/multi.json")"
blob "$M" "$W/tmp/multi.json"
set_index "$M" "$(descriptor application/vnd.oci.image.index.v1+json)" multi
skopeo_q --dest-tls-verify=false --all "oci:$M:multi" "docker://$plain/cfs/multi:1"
r_amd=$(pack "$W/store-multi" amd "oci:$M:multi" --platform linux/amd64)
r_arm=$(pack "$W/store-multi" arm "oci:$M:multi" --platform linux/arm64)
[ "$r_amd" != "$r_arm" ] || fail "linux/amd64 and linux/arm64 gave the same image"
for p in amd:linux/amd64 arm:linux/arm64; do
	r=$(pack "$W/store-multi" "reg-${p%%:*}" "docker://$plain/cfs/multi:1" --tls-verify=false --platform "${p#*:}")
	want=r_${p%%:*}
	[ "$r" = "${!want}" ] || fail "docker:// --platform ${p#*:} gave $r, oci: ${!want}"
done
# Through an index: the platform's manifest, and the index the tag named.
multi=sha256:$(skopeo inspect --raw --tls-verify=false "docker://$plain/cfs/multi:1" | sha256sum | cut -d' ' -f1)
info_has "$W/store-multi" reg-arm "origin_top $multi"
info_has "$W/store-multi" reg-arm "origin_manifest $(jq -r '.manifests[] | select(.platform.architecture == "arm64") | .digest' "$W/tmp/multi.json")"
refuse no-platform 's390x' "docker://$plain/cfs/multi:1" --tls-verify=false --platform linux/s390x

step "plain: errors"
refuse no-tag "MANIFEST_UNKNOWN" "docker://$plain/cfs/test:nope" --tls-verify=false
refuse no-repo "_UNKNOWN" "docker://$plain/cfs/nope:1" --tls-verify=false
refuse bad-digest "MANIFEST_UNKNOWN|digest" "docker://$plain/cfs/test@sha256:$(printf x | sha256sum | cut -d' ' -f1)" --tls-verify=false
refuse tls-to-http "TLS|tls-verify" "docker://$plain/cfs/test:1"
port=$(free_port)
refuse down "$port.*cannot connect" "docker://127.0.0.1:$port/cfs/test:1" --tls-verify=false
refuse bad-ref "repository" "docker://$plain/Cfs/Test:1" --tls-verify=false

step "plain: through cfs-faultproxy: a hang, flipped bytes"
proxy_start "${plain#*:}"
via=127.0.0.1:$PROXY_PORT
r=$(pack "$W/store" proxied "docker://$via/cfs/test:1" --tls-verify=false)
[ "$r" = "$ref" ] || fail "docker:// through the proxy gave $r, want $ref"
proxy_set hang=1 path=/manifests/
refuse hang "hangs" "docker://$via/cfs/test:1" --tls-verify=false
proxy_set hang=1 path=/blobs/
refuse hang-blob "hangs" "docker://$via/cfs/test:1" --tls-verify=false
proxy_set flip=1 "path=${config_digest#sha256:}"
refuse flip-config "digest mismatch" "docker://$via/cfs/test:1" --tls-verify=false
layer0=$(jq -r '.layers[0].digest' "$manifest")
proxy_set flip=1 "path=${layer0#sha256:}"
refuse flip-layer "digest|diff_id|gzip" "docker://$via/cfs/test:1" --tls-verify=false
proxy_set status=503
refuse unavailable "HTTP 503" "docker://$via/cfs/test:1" --tls-verify=false
proxy_set

step "plain: blobs redirected to another host get no Authorization"
# nginx A (127.0.0.1) asks for Basic credentials and sends every blob on to
# nginx B ("localhost", another host to libcurl) with a 307, as a registry
# does to its blob storage; both pass the rest to the registry.  B logs
# the Authorization header of what it serves: the credentials are A's.
need_ci_tools nginx htpasswd
_nginx_require
rd=$W/redirect
mkdir -p "$rd/a" "$rd/b"
htpasswd -b -c "$rd/htpasswd" cfs-redir s3cret >/dev/null 2>&1 || fail "htpasswd exited $?"
pb=$(free_port)
# shellcheck disable=SC2016 # nginx's variables, for nginx
_nginx_conf "$rd/b" '$request_uri $status auth=[$http_authorization]' "$rd/b/access.log" \
	"127.0.0.1:$pb" "$rd/b" "location / { proxy_pass http://$plain; }"
_nginx_launch "$rd/b" 10 "http://127.0.0.1:$pb/v2/" || fail "nginx B did not start: $(tail -n 3 "$rd/b/error.log")"
pa=$(free_port)
# shellcheck disable=SC2016 # nginx's variables, for nginx
_nginx_conf "$rd/a" '$request_uri $status auth=[$http_authorization]' "$rd/a/access.log" \
	"127.0.0.1:$pa" "$rd/a" "location /v2/ {
		auth_basic cfs-redirect; auth_basic_user_file $rd/htpasswd;
		location ~ /blobs/ { return 307 http://localhost:$pb\$request_uri; }
		proxy_pass http://$plain; }"
_nginx_launch "$rd/a" 10 "http://127.0.0.1:$pa/v2/" || fail "nginx A did not start: $(tail -n 3 "$rd/a/error.log")"
printf '{"auths":{"127.0.0.1:%s":{"auth":"%s"}}}\n' "$pa" "$(printf cfs-redir:s3cret | base64)" >"$rd/auth.json"
r=$(pack "$W/store" redirected "docker://127.0.0.1:$pa/cfs/test:1" --tls-verify=false --authfile "$rd/auth.json")
[ "$r" = "$ref" ] || fail "docker:// with redirected blobs gave $r, want $ref"
grep -q '/manifests/.* 200 auth=\[Basic ' "$rd/a/access.log" || fail "A never saw the credentials: $(cat "$rd/a/access.log")"
grep -q '/blobs/.* 200 ' "$rd/b/access.log" || fail "no blob came from B: $(cat "$rd/b/access.log")"
# nginx logs an absent header as "-".
! grep -v 'auth=\[-\]$' "$rd/b/access.log" | grep -q . || fail "B saw credentials: $(grep -v 'auth=\[-\]$' "$rd/b/access.log")"
echo "   $(grep -c /blobs/ "$rd/b/access.log") blobs from B, none with an Authorization header"

step "plain: a layer of several parts: ranges, a cut part resumed, a registry without ranges"
# A 20 MiB layer of random bytes is three parts (PART_SIZE 8 MiB): asked
# as ranges; a part cut short by the proxy asked again for the rest only;
# and through an nginx that drops the Range header (a registry without
# ranges), the whole layer on one request.
mkdir -p "$W/bigtree/data"
head -c $((20 << 20)) /dev/urandom >"$W/bigtree/data/random.bin"
echo small >"$W/bigtree/data/small.txt"
tar -C "$W/bigtree" --numeric-owner -cf "$W/big.tar" data
BL=$W/BL
umoci init --layout "$BL" && umoci new --image "$BL:1" && umoci raw add-layer --image "$BL:1" "$W/big.tar" ||
	fail "umoci: the image with a 20 MiB layer"
ref_big=$(pack "$W/store-oci" big "oci:$BL:1")
reg_push "oci:$BL:1" cfs/big:1
big_layer=$(jq -r '.layers[0].digest' "$(manifest_of "$BL")")
big_size=$(jq -r '.layers[0].size' "$(manifest_of "$BL")")
rg=$W/ranges
# range_nginx NAME LOCATION_LINES: an nginx in front of the registry that
# logs each request's Range header and bytes sent to $rg/NAME/access.log;
# its port in $rport.
range_nginx() {
	mkdir -p "$rg/$1"
	rport=$(free_port)
	# shellcheck disable=SC2016 # nginx's variables, for nginx
	_nginx_conf "$rg/$1" '$request_uri $status range=[$http_range] $body_bytes_sent' \
		"$rg/$1/access.log" "127.0.0.1:$rport" "$rg/$1" "location / { $2 proxy_pass http://$plain; }"
	_nginx_launch "$rg/$1" 10 "http://127.0.0.1:$rport/v2/" ||
		fail "nginx $1 did not start: $(tail -n 3 "$rg/$1/error.log")"
}
range_nginx c ""
pc=$rport
r=$(pack "$W/store" ranged "docker://127.0.0.1:$pc/cfs/big:1" --tls-verify=false)
[ "$r" = "$ref_big" ] || fail "docker:// of the 20 MiB layer gave $r, oci: $ref_big"
n=$(grep -c "/blobs/$big_layer 206 range=\[bytes=" "$rg/c/access.log" || true)
[ "$n" -eq 3 ] || fail "the 20 MiB layer came in $n ranged replies, want 3: $(grep "$big_layer" "$rg/c/access.log")"
echo "   the $big_size-byte layer in $n ranges"
range_nginx d 'proxy_set_header Range "";'
pd=$rport
r=$(pack "$W/store" unranged "docker://127.0.0.1:$pd/cfs/big:1" --tls-verify=false)
[ "$r" = "$ref_big" ] || fail "docker:// without ranges gave $r, oci: $ref_big"
grep "/blobs/$big_layer " "$rg/d/access.log" >"$rg/d/big.log" || true
[ "$(wc -l <"$rg/d/big.log")" -eq 1 ] && grep -q " 200 range=\[bytes=0-" "$rg/d/big.log" ||
	fail "without ranges: want one whole reply to a ranged request: $(cat "$rg/d/big.log")"
echo "   without ranges: one whole reply ($(cut -d' ' -f4 "$rg/d/big.log") bytes)"
proxy_set truncate_after=3M count=1 "path=${big_layer#sha256:}"
down0=$(proxy_stat bytes_down)
r=$(pack "$W/store" resumed "docker://$via/cfs/big:1" --tls-verify=false)
[ "$r" = "$ref_big" ] || fail "docker:// with a part cut gave $r, oci: $ref_big"
[ "$(proxy_faults truncate)" -ge 1 ] || fail "the proxy cut no part: $(tail -n 5 "$PROXY_LOG")"
down=$(($(proxy_stat bytes_down) - down0))
# the layer once, and the small blobs and heads: not the 3 MiB cut again
[ "$down" -lt $((big_size + (1 << 20))) ] ||
	fail "with a part cut at 3 MiB the proxy sent $down bytes for a $big_size-byte layer: not resumed"
echo "   a part cut at 3 MiB: resumed, $down bytes through the proxy"
proxy_set

# --- Basic auth over TLS ------------------------------------------------------
step "basic: htpasswd over TLS, --ca-file, --authfile"
start_registry basic
reg_push "oci:$L:base" cfs/test:1
r=$(pack "$W/store" basic "docker://$REG_HOST/cfs/test:1" --ca-file "$REG_CA" --authfile "$REG_AUTHFILE")
[ "$r" = "$ref" ] || fail "docker:// with Basic auth gave $r, want $ref"
# The auth file where podman keeps it, found without --authfile.
mkdir -p "$XDG_RUNTIME_DIR/containers"
cp "$REG_AUTHFILE" "$XDG_RUNTIME_DIR/containers/auth.json"
r=$(pack "$W/store" basic-xdg "docker://$REG_HOST/cfs/test:1" --ca-file "$REG_CA")
[ "$r" = "$ref" ] || fail "docker:// with \$XDG_RUNTIME_DIR/containers/auth.json gave $r, want $ref"
rm "$XDG_RUNTIME_DIR/containers/auth.json"
refuse no-ca "TLS|certificate" "docker://$REG_HOST/cfs/test:1" --authfile "$REG_AUTHFILE"
printf '{"auths":{"https://%s":{"auth":"%s"}}}\n' "$REG_HOST" \
	"$(printf '%s:wrong' "$REG_USER" | base64 -w0)" >"$W/wrong.json"
refuse wrong-pass "401.*(wrong|password)" "docker://$REG_HOST/cfs/test:1" --ca-file "$REG_CA" --authfile "$W/wrong.json"
refuse no-creds "user name|credentials" "docker://$REG_HOST/cfs/test:1" --ca-file "$REG_CA"
refuse no-authfile "$W/nope.json" "docker://$REG_HOST/cfs/test:1" --ca-file "$REG_CA" --authfile "$W/nope.json"

# --- Bearer tokens ------------------------------------------------------------
step "token: Bearer from tests/registry-token.py, anonymous for a public repository"
start_registry token
reg_push "oci:$L:base" cfs/test:1
reg_push "oci:$L:base" "$REG_PUBLIC:1"
r=$(pack "$W/store" token "docker://$REG_HOST/cfs/test:1" --ca-file "$REG_CA" --authfile "$REG_AUTHFILE")
[ "$r" = "$ref" ] || fail "docker:// with a Bearer token gave $r, want $ref"
grep -q "$REG_USER" "$REG_TOKEN_LOG" || fail "no token request with the account: $(cat "$REG_TOKEN_LOG")"
r=$(pack "$W/store" anon "docker://$REG_HOST/$REG_PUBLIC:1" --ca-file "$REG_CA")
[ "$r" = "$ref" ] || fail "docker:// of the public repository, anonymous, gave $r, want $ref"
refuse token-anon "401|UNAUTHORIZED|DENIED|credentials" "docker://$REG_HOST/cfs/test:1" --ca-file "$REG_CA"
printf '{"auths":{"%s":{"auth":"%s"}}}\n' "$REG_HOST" \
	"$(printf '%s:wrong' "$REG_USER" | base64 -w0)" >"$W/wrong.json"
refuse token-wrong "401.*(wrong|password)" "docker://$REG_HOST/cfs/test:1" --ca-file "$REG_CA" --authfile "$W/wrong.json"

echo "PASS"
