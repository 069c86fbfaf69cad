#!/usr/bin/env bash
# The test registries of tests/lib-registry.sh: plain, Basic (htpasswd over TLS) and Bearer (tests/registry-token.py) each checked with skopeo and curl.
#
# skopeo, the reference client, pushes a small umoci image to each and
# inspects it with and without the account, with a wrong password and with
# the auth.json that lib-registry.sh writes; curl walks the protocol by hand:
# 401 with the WWW-Authenticate challenge the mode promises, a token from
# the realm it names (Bearer), then 200 for the manifest.  Anonymous pulls
# of the public repository work in token mode, nothing else does without
# the account.  So the registry paths of cfs-pack are tested against
# servers that are known to behave as real registries do.
#
# Env (set by tests/meson.build): CFS_SRCDIR.  Needs docker-registry,
# skopeo, umoci, htpasswd, openssl, curl, jq and python3; exits 77 without
# them (fails under CI=true).
set -euo pipefail

source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/lib-registry.sh"

need_ci_tools docker-registry skopeo umoci htpasswd openssl curl jq python3 base64

make_workdir registry-auth
mkdir -p "$W/tmp"
export TMPDIR=$W/tmp

step "umoci: a one-layer image L:1"
mkdir -p "$W/tree/etc"
echo "hello from the registry test" >"$W/tree/etc/motd"
tar -C "$W/tree" -cf "$W/layer.tar" etc
umoci init --layout "$W/L" >/dev/null || fail "umoci init exited $?"
umoci new --image "$W/L:1" >/dev/null || fail "umoci new exited $?"
umoci raw add-layer --image "$W/L:1" "$W/layer.tar" >/dev/null || fail "umoci raw add-layer exited $?"
src=oci:$W/L:1

# inspect_ok WHAT ARGS...: skopeo inspect ARGS must succeed and name the layer.
inspect_ok() {
	local what=$1
	shift
	timeout 60 skopeo inspect "$@" >"$W/inspect.out" 2>"$W/inspect.err" ||
		fail "$what: skopeo inspect $* exited $?: $(tail -n 3 "$W/inspect.err")"
	jq -e '.Layers | length == 1' "$W/inspect.out" >/dev/null ||
		fail "$what: skopeo inspect $* shows no one layer: $(head -c 300 "$W/inspect.out")"
}

# inspect_refused WHAT ARGS...: skopeo inspect ARGS must fail as unauthorized.
inspect_refused() {
	local what=$1
	shift
	fails_alone "$what" timeout 60 skopeo inspect "$@"
	grep -qi 'unauthorized\|authentication required\|denied' "$W/err" ||
		fail "$what: skopeo inspect $* failed, but not as unauthorized: $(tail -n 2 "$W/err")"
}

# http_status CURL_ARGS...: the HTTP status curl gets (headers in $W/headers).
http_status() {
	curl -s -o "$W/body" -D "$W/headers" -w '%{http_code}' "$@" || true
}

# challenge: the WWW-Authenticate header of the last http_status.
challenge() {
	grep -i '^www-authenticate:' "$W/headers" | head -n 1 | tr -d '\r' | cut -d' ' -f2-
}

manifest_accept='Accept: application/vnd.oci.image.manifest.v1+json'

# --- plain -----------------------------------------------------------------
step "plain: http, no auth"
start_registry plain
[ "$REG_URL" = "http://$REG_HOST" ] || fail "plain: REG_URL is $REG_URL"
reg_push "$src" cfs/app:1
inspect_ok "plain" "${REG_INSPECT_OPTS[@]}" "docker://$REG_HOST/cfs/app:1"
[ "$(http_status -H "$manifest_accept" "$REG_URL/v2/cfs/app/manifests/1")" = 200 ] ||
	fail "plain: GET the manifest without credentials is not 200"
jq -e '.auths == {}' "$REG_AUTHFILE" >/dev/null || fail "plain: $REG_AUTHFILE is not an empty auths"

# --- basic -----------------------------------------------------------------
step "basic: https, htpasswd"
start_registry basic
[ "$REG_URL" = "https://$REG_HOST" ] || fail "basic: REG_URL is $REG_URL"
[ -s "$REG_CA" ] && [ -s "$REG_CERT_DIR/ca.crt" ] || fail "basic: no CA in REG_CA / REG_CERT_DIR"
reg_push "$src" cfs/app:1
inspect_ok "basic, with the account" "${REG_INSPECT_OPTS[@]}" "docker://$REG_HOST/cfs/app:1"
inspect_ok "basic, with REG_AUTHFILE" --authfile "$REG_AUTHFILE" --cert-dir "$REG_CERT_DIR" \
	"docker://$REG_HOST/cfs/app:1"
inspect_refused "basic, without credentials" --cert-dir "$REG_CERT_DIR" "docker://$REG_HOST/cfs/app:1"
inspect_refused "basic, wrong password" --creds "$REG_USER:wrong" --cert-dir "$REG_CERT_DIR" \
	"docker://$REG_HOST/cfs/app:1"
# TLS is really verified: the CA is what makes the certificate good.
fails_alone "basic, curl without the CA" curl -s -o /dev/null "$REG_URL/v2/"
[ "$(http_status --cacert "$REG_CA" "$REG_URL/v2/cfs/app/manifests/1")" = 401 ] ||
	fail "basic: GET the manifest without credentials is not 401"
[ "$(challenge)" = 'Basic realm="cfs-test"' ] || fail "basic: the challenge is '$(challenge)'"
[ "$(http_status --cacert "$REG_CA" -u "$REG_USER:wrong" "$REG_URL/v2/cfs/app/manifests/1")" = 401 ] ||
	fail "basic: GET the manifest with a wrong password is not 401"
[ "$(http_status --cacert "$REG_CA" -u "$REG_USER:$REG_PASS" -H "$manifest_accept" \
	"$REG_URL/v2/cfs/app/manifests/1")" = 200 ] || fail "basic: GET the manifest with the account is not 200"
jq -e '.layers | length == 1' "$W/body" >/dev/null || fail "basic: the manifest has no one layer: $(head -c 300 "$W/body")"
[ "$(jq -r --arg h "$REG_HOST" '.auths[$h].auth' "$REG_AUTHFILE" | base64 -d)" = "$REG_USER:$REG_PASS" ] ||
	fail "basic: $REG_AUTHFILE does not hold the account for $REG_HOST"

# --- token -----------------------------------------------------------------
step "token: https, Bearer tokens from registry-token.py"
start_registry token
[ -n "$REG_TOKEN_URL" ] && [ -f "$REG_TOKEN_LOG" ] || fail "token: no REG_TOKEN_URL / REG_TOKEN_LOG"
[ ! -s "$REG_TOKEN_LOG" ] || fail "token: the token log is not empty before any client: $(cat "$REG_TOKEN_LOG")"
reg_push "$src" cfs/app:1
reg_push "$src" "$REG_PUBLIC:1"
grep -q "^GET /token?.* 200 $REG_USER repository:cfs/app:.*push" "$REG_TOKEN_LOG" ||
	fail "token: the push got no push token for cfs/app: $(cat "$REG_TOKEN_LOG")"
inspect_ok "token, with the account" "${REG_INSPECT_OPTS[@]}" "docker://$REG_HOST/cfs/app:1"
inspect_ok "token, with REG_AUTHFILE" --authfile "$REG_AUTHFILE" --cert-dir "$REG_CERT_DIR" \
	"docker://$REG_HOST/cfs/app:1"
inspect_refused "token, anonymous, private repository" --cert-dir "$REG_CERT_DIR" \
	"docker://$REG_HOST/cfs/app:1"
inspect_ok "token, anonymous, public repository" --cert-dir "$REG_CERT_DIR" \
	"docker://$REG_HOST/$REG_PUBLIC:1"
inspect_refused "token, wrong password" --creds "$REG_USER:wrong" --cert-dir "$REG_CERT_DIR" \
	"docker://$REG_HOST/cfs/app:1"
grep -q "^GET /token?.* 401 $REG_USER -\$" "$REG_TOKEN_LOG" ||
	fail "token: the wrong password was not refused by the token server: $(tail -n 3 "$REG_TOKEN_LOG")"
fails_alone "token, anonymous push to the public repository" timeout 60 skopeo --insecure-policy copy -q \
	--dest-cert-dir "$REG_CERT_DIR" "$src" "docker://$REG_HOST/$REG_PUBLIC:2"

# By hand: the challenge, a token from the realm it names, the manifest.
[ "$(http_status --cacert "$REG_CA" -H "$manifest_accept" "$REG_URL/v2/cfs/app/manifests/1")" = 401 ] ||
	fail "token: GET the manifest without a token is not 401"
want="Bearer realm=\"$REG_TOKEN_URL\",service=\"cfs-test-registry\",scope=\"repository:cfs/app:pull\""
[ "$(challenge)" = "$want" ] || fail "token: the challenge is '$(challenge)', want '$want'"
n=$(wc -l <"$REG_TOKEN_LOG")
token_url="$REG_TOKEN_URL?service=cfs-test-registry&scope=repository:cfs/app:pull"
[ "$(http_status --cacert "$REG_CA" -u "$REG_USER:$REG_PASS" "$token_url")" = 200 ] ||
	fail "token: the token server refused the account: $(cat "$W/body")"
jq -e '(.token | split(".") | length == 3) and .access_token == .token and .expires_in == 300
	and (.issued_at | test("^[0-9]{4}-"))' "$W/body" >/dev/null ||
	fail "token: the token reply is not what clients expect: $(head -c 300 "$W/body")"
tok=$(jq -r .token "$W/body")
[ "$(wc -l <"$REG_TOKEN_LOG")" -eq $((n + 1)) ] || fail "token: one token request did not log one line"
[ "$(http_status --cacert "$REG_CA" -H "Authorization: Bearer $tok" -H "$manifest_accept" \
	"$REG_URL/v2/cfs/app/manifests/1")" = 200 ] || fail "token: GET the manifest with the token is not 200"
jq -e '.layers | length == 1' "$W/body" >/dev/null || fail "token: the manifest has no one layer"
[ "$(http_status --cacert "$REG_CA" -u "$REG_USER:wrong" "$token_url")" = 401 ] ||
	fail "token: the token server gave a token for a wrong password"
# An anonymous token for a private repository grants nothing: the registry refuses it.
[ "$(http_status --cacert "$REG_CA" "$token_url")" = 200 ] || fail "token: no anonymous token"
tok=$(jq -r .token "$W/body")
[ "$(http_status --cacert "$REG_CA" -H "Authorization: Bearer $tok" -H "$manifest_accept" \
	"$REG_URL/v2/cfs/app/manifests/1")" = 401 ] || fail "token: an anonymous token read the private repository"
[ "$(http_status --cacert "$REG_CA" "$REG_TOKEN_URL?service=cfs-test-registry&scope=repository:$REG_PUBLIC:pull")" = 200 ] ||
	fail "token: no anonymous token for the public repository"
tok=$(jq -r .token "$W/body")
[ "$(http_status --cacert "$REG_CA" -H "Authorization: Bearer $tok" -H "$manifest_accept" \
	"$REG_URL/v2/$REG_PUBLIC/manifests/1")" = 200 ] || fail "token: an anonymous token did not read the public repository"
echo "   $(wc -l <"$REG_TOKEN_LOG") token requests logged"
echo "PASS"
