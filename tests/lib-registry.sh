# shellcheck shell=bash
# A local docker-registry for the tests, with or without auth, sourced after
# tests/lib.sh: source "$(dirname "$0")/lib-registry.sh"
#
# start_registry MODE runs Debian's docker-registry (distribution 2.8) on
# 127.0.0.1, its storage under $W, ended by lib.sh's exit trap:
#   plain  http, no auth
#   basic  https, htpasswd (bcrypt) auth: docker-registry refuses htpasswd
#          without TLS
#   token  https, Bearer tokens from tests/registry-token.py (also https),
#          which grants $REG_USER pull and push and anyone pull on
#          $REG_PUBLIC
# TLS certificates come from one throwaway CA per test (make_tls_certs).
# Then these are set and exported, for the last registry started:
#   REG_MODE      the MODE
#   REG_HOST      127.0.0.1:PORT, what docker:// references name
#   REG_URL       http://REG_HOST or https://REG_HOST
#   REG_CA        the CA's certificate (PEM); empty in plain mode
#   REG_CERT_DIR  a directory holding it as ca.crt (skopeo's --cert-dir)
#   REG_USER, REG_PASS   the account (empty in plain mode)
#   REG_AUTHFILE  an auth.json with that account for REG_HOST, as skopeo,
#                 podman and docker write it (plain mode: an empty "auths")
#   REG_PUBLIC    the repository anonymous clients may pull (token mode)
#   REG_TOKEN_URL the token server's realm (token mode)
#   REG_TOKEN_LOG its request log, one line a request: "GET PATH STATUS USER
#                 GRANTED" (see tests/registry-token.py); empty otherwise
# and the bash arrays REG_SRC_OPTS and REG_DEST_OPTS hold the skopeo copy
# options that reach it with that account (--src-creds, --src-cert-dir or
# --src-tls-verify=false, and --dest-...); REG_INSPECT_OPTS the same for
# skopeo inspect.
#
# reg_push SRC REPO:TAG copies SRC (any skopeo source, oci:DIR:REF...) to
# docker://$REG_HOST/REPO:TAG.

_reg_skopeo_opts() {
	local p=$1
	case $REG_MODE in
	plain) printf '%s\n' "--${p}tls-verify=false" ;;
	*) printf '%s\n' "--${p}creds=$REG_USER:$REG_PASS" "--${p}cert-dir=$REG_CERT_DIR" ;;
	esac
}

# _reg_config D PORT MODE: D/config.yml for a registry on 127.0.0.1:PORT.
_reg_config() {
	local d=$1 port=$2 mode=$3 tls=$W/registry-tls
	{
		cat <<-EOF
			version: 0.1
			log:
			  level: warn
			  accesslog:
			    disabled: true
			storage:
			  filesystem:
			    rootdirectory: $d/data
			http:
			  addr: 127.0.0.1:$port
			  secret: cfs-registry-test
		EOF
		[ "$mode" = plain ] || cat <<-EOF
			  tls:
			    certificate: $tls/server.pem
			    key: $tls/server.key
		EOF
		case $mode in
		basic)
			cat <<-EOF
				auth:
				  htpasswd:
				    realm: cfs-test
				    path: $d/htpasswd
			EOF
			;;
		token)
			cat <<-EOF
				auth:
				  token:
				    realm: $REG_TOKEN_URL
				    service: cfs-test-registry
				    issuer: cfs-test-token
				    rootcertbundle: $tls/ca.pem
			EOF
			;;
		esac
	} >"$d/config.yml"
}

# _reg_start_token D: tests/registry-token.py over TLS on a port of its own
# choosing; sets REG_TOKEN_URL and REG_TOKEN_LOG.
_reg_start_token() {
	local d=$1 tls=$W/registry-tls pid port
	local script=${CFS_SRCDIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}/tests/registry-token.py
	REG_TOKEN_LOG=$d/token.log
	printf '%s:%s\n' "$REG_USER" "$REG_PASS" >"$d/users"
	: >"$REG_TOKEN_LOG"
	rm -f "$d/token.port"
	python3 "$script" --key "$tls/server.key" --cert "$tls/server.pem" --issuer cfs-test-token \
		--users "$d/users" --public "$REG_PUBLIC" --port-file "$d/token.port" \
		--tls-cert "$tls/server.pem" --tls-key "$tls/server.key" --log "$REG_TOKEN_LOG" \
		>"$d/token.err" 2>&1 &
	pid=$!
	serving "$pid" 10 test -s "$d/token.port" ||
		fail "registry-token.py did not start: $(tail -n 3 "$d/token.err")"
	port=$(cat "$d/token.port")
	REG_TOKEN_URL=https://127.0.0.1:$port/token
	# Its first request would otherwise be one the test counts.
	curl -s -o /dev/null --cacert "$tls/ca.pem" "https://127.0.0.1:$port/" ||
		fail "registry-token.py on port $port does not answer: $(tail -n 3 "$d/token.err")"
	: >"$REG_TOKEN_LOG"
}

# start_registry MODE: see the head of this file.
start_registry() {
	local mode=${1:-plain} d=$W/registry-${1:-plain} tls=$W/registry-tls try port scheme pid
	local -a curl_tls=()
	case $mode in
	plain | basic | token) ;;
	*) fail "start_registry: unknown mode '$mode' (plain, basic or token)" ;;
	esac
	command -v docker-registry >/dev/null 2>&1 || fail "docker-registry is not installed"
	mkdir -p "$d/data"
	REG_MODE=$mode REG_CA='' REG_CERT_DIR='' REG_USER='' REG_PASS='' REG_PUBLIC=''
	REG_TOKEN_URL='' REG_TOKEN_LOG=''
	scheme=http
	if [ "$mode" != plain ]; then
		make_tls_certs "$tls"
		REG_CA=$tls/ca.pem
		REG_CERT_DIR=$tls/certs.d
		mkdir -p "$REG_CERT_DIR"
		cp "$REG_CA" "$REG_CERT_DIR/ca.crt"
		REG_USER=cfs-user
		REG_PASS=cfs-pass-$RANDOM$RANDOM
		scheme=https
		curl_tls=(--cacert "$REG_CA")
	fi
	case $mode in
	basic)
		command -v htpasswd >/dev/null 2>&1 || fail "htpasswd is not installed (apache2-utils)"
		# bcrypt: the only hash docker-registry's htpasswd accepts.
		htpasswd -Bbn "$REG_USER" "$REG_PASS" >"$d/htpasswd" 2>"$d/htpasswd.err" ||
			fail "htpasswd exited $?: $(cat "$d/htpasswd.err")"
		;;
	token)
		REG_PUBLIC=cfs/public
		_reg_start_token "$d"
		;;
	esac
	for ((try = 0; try < 10; try++)); do
		port=$(free_port)
		_reg_config "$d" "$port" "$mode"
		docker-registry serve "$d/config.yml" >"$d/log" 2>&1 &
		pid=$!
		# Any answer will do (401 with auth): it is up.
		if serving "$pid" 10 curl -s -o /dev/null "${curl_tls[@]}" "$scheme://127.0.0.1:$port/v2/"; then
			REG_HOST=127.0.0.1:$port
			REG_URL=$scheme://$REG_HOST
			REG_AUTHFILE=$d/auth.json
			if [ -n "$REG_USER" ]; then
				printf '{"auths":{"%s":{"auth":"%s"}}}\n' "$REG_HOST" \
					"$(printf '%s:%s' "$REG_USER" "$REG_PASS" | base64 -w0)" >"$REG_AUTHFILE"
			else
				echo '{"auths":{}}' >"$REG_AUTHFILE"
			fi
			# shellcheck disable=SC2034 # for the caller
			mapfile -t REG_SRC_OPTS < <(_reg_skopeo_opts src-)
			mapfile -t REG_DEST_OPTS < <(_reg_skopeo_opts dest-)
			# shellcheck disable=SC2034 # for the caller
			mapfile -t REG_INSPECT_OPTS < <(_reg_skopeo_opts '')
			export REG_MODE REG_HOST REG_URL REG_CA REG_CERT_DIR REG_USER REG_PASS REG_AUTHFILE
			export REG_PUBLIC REG_TOKEN_URL REG_TOKEN_LOG
			return 0
		fi
	done
	fail "docker-registry ($mode) did not start: $(tail -n 3 "$d/log")"
}

# reg_push SRC REPO:TAG: skopeo copy SRC docker://$REG_HOST/REPO:TAG with
# the registry's account; no signature policy (the host's policy.json is no
# part of a test).
reg_push() {
	local log=$W/registry-$REG_MODE/push.log
	timeout 300 skopeo --insecure-policy copy -q "${REG_DEST_OPTS[@]}" "$1" "docker://$REG_HOST/$2" \
		>"$log" 2>&1 || fail "skopeo copy $1 docker://$REG_HOST/$2 exited $?: $(tail -n 3 "$log")"
}
