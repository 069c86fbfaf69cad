#!/usr/bin/env bash
# Signed tags: cfs-pack --sign, cfs-sign, cfs-mount --trust (local, mount(8)
# form, http store), cfs-load --trust, cfs-ls --trust.  A signed tag mounts; an unsigned one,
# one signed by an untrusted key, a signature replayed under another tag,
# a tampered, truncated, garbage, empty or oversized signature file each
# fail with one line and a non-zero exit, and nothing is mounted.  A
# sha256: reference needs no signature.  Whoever rewrites tags/NAME cannot
# redirect a --trust mount.  A mount keeps serving the image it opened when
# its daemon restarts after the tag moved (with and without --trust).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
: "${CFS_PACK:?}" "${CFS_MOUNT:?}" "${CFS_LS:?}" "${CFS_SIGN:?}" "${CFS_LOAD:?}" "${CFS_MKMODEL:?}" "${CFS_LOAD_LIB:?}" "${CFS_SRCDIR:?}"
need_root
need_fuse
need_cmds openssl
make_workdir sign

S=$W/store
key() { openssl genpkey -algorithm ed25519 -out "$W/$1.pem" 2>/dev/null &&
	openssl pkey -in "$W/$1.pem" -pubout -out "$W/$1.pub" 2>/dev/null; }
key k1
key k2
key k3

mkdir -p "$W/v1/etc" "$W/v2/etc"
echo "version one" >"$W/v1/etc/release"
echo "version two" >"$W/v2/etc/release"
head -c 3000000 /dev/urandom >"$W/v1/blob"
head -c 3000000 /dev/urandom >"$W/v2/blob"

# expect_refused WHAT PATTERN CMD...: CMD fails with exactly one line on
# stderr that matches PATTERN.
expect_refused() {
	local what=$1 pat=$2
	shift 2
	fails_one_line "$what" "$@"
	grep -q -- "$pat" "$W/err" || fail "$what: '$(cat "$W/err")' does not say '$pat'"
	echo "  $what: $(cat "$W/err")"
}

step "cfs-pack --sign, cfs-sign verify"
ref1=$("$CFS_PACK" -q --tag app --sign "$W/k1.pem" "$W/v1" "$S")
ref2=$("$CFS_PACK" -q --tag plain "$W/v2" "$S")
[ -f "$S/sigs/app" ] || fail "no sigs/app after cfs-pack --sign"
[ ! -e "$S/sigs/plain" ] || fail "sigs/plain without --sign"
"$CFS_SIGN" verify --trust "$W/k1.pub" "$S" app | grep -q "^app $ref1 signed at " ||
	fail "cfs-sign verify of a signed tag"
expect_refused "verify, unsigned tag" "no signature" "$CFS_SIGN" verify --trust "$W/k1.pub" "$S" plain
expect_refused "verify, untrusted key" "signed by no trusted key" \
	"$CFS_SIGN" verify --trust "$W/k2.pub" "$S" app
# cfs-ls takes cfs-mount's --trust (lib/image/open.c): the signed tag
# lists, the unsigned one is refused.
"$CFS_LS" --trust "$W/k1.pub" "$S" app /etc | grep -q " /etc/release$" ||
	fail "cfs-ls --trust of a signed tag"
expect_refused "cfs-ls --trust, unsigned tag" "no signature" "$CFS_LS" --trust "$W/k1.pub" "$S" plain
expect_refused "--sign without --tag" "give --tag" "$CFS_PACK" -q --sign "$W/k1.pem" "$W/v1" "$S"
expect_refused "--sign with a public key" "not an Ed25519 private key" \
	"$CFS_PACK" -q --tag x --sign "$W/k1.pub" "$W/v1" "$W/nostore"
[ ! -e "$W/nostore" ] || fail "a bad --sign key still created the store"
expect_refused "--trust with a private key" "no Ed25519 public keys" \
	"$CFS_SIGN" verify --trust "$W/k1.pem" "$S" app
openssl genpkey -algorithm rsa -pkeyopt rsa_keygen_bits:1024 -out "$W/rsa.pem" 2>/dev/null
openssl pkey -in "$W/rsa.pem" -pubout -out "$W/rsa.pub" 2>/dev/null
expect_refused "--trust with an RSA key" "no Ed25519 public keys" \
	"$CFS_SIGN" verify --trust "$W/rsa.pub" "$S" app
[ "$("$CFS_SIGN" key-id "$W/k1.pem")" = "$("$CFS_SIGN" key-id "$W/k1.pub")" ] ||
	fail "key-id differs between a private key and its public key"

step "a trust directory, a second signer"
mkdir -p "$W/trust" "$W/trust-empty"
cp "$W/k2.pub" "$W/trust/ops.pem"
echo "not a key" >"$W/trust/README"
expect_refused "verify, dir without the signer" "signed by no trusted key" \
	"$CFS_SIGN" verify --trust "$W/trust" "$S" app
"$CFS_SIGN" sign --key "$W/k2.pem" "$S" app >/dev/null
[ "$(grep -c '^ed25519 ' "$S/sigs/app")" -eq 2 ] || fail "a second signer did not add a line"
"$CFS_SIGN" verify --trust "$W/trust" "$S" app >/dev/null || fail "verify with a trust dir"
"$CFS_SIGN" verify --trust "$W/k1.pub" "$S" app >/dev/null || fail "first signer lost"
expect_refused "empty trust dir" "no Ed25519 public keys" \
	"$CFS_SIGN" verify --trust "$W/trust-empty" "$S" app

step "cfs-mount --trust: a signed tag mounts, a digest needs no signature"
m=$W/mnt
mount_image "$S" app "$m" --trust "$W/k1.pub" --cache "$W/cache"
[ "$(cat "$m/etc/release")" = "version one" ] || fail "signed mount serves the wrong image"
cmp -s "$m/blob" "$W/v1/blob" || fail "signed mount: blob differs"
unmount_image "$m"
mount_image "$S" "$ref2" "$m" --trust "$W/k1.pub" --cache "$W/cache"
[ "$(cat "$m/etc/release")" = "version two" ] || fail "digest mount under --trust"
unmount_image "$m"

step "cfs-mount --trust refuses, with one line, and mounts nothing"
mkdir -p "$m"
refuse_mount() {
	local what=$1 pat=$2
	shift 2
	expect_refused "$what" "$pat" timeout 60 "$CFS_MOUNT" --cache "$W/cache" "$@" "$m"
	! mountpoint -q "$m" || fail "$what: mounted anyway"
}
refuse_mount "unsigned tag" "no signature" --trust "$W/k1.pub" "$S" plain
refuse_mount "untrusted signer" "signed by no trusted key" --trust "$W/k3.pub" "$S" app
refuse_mount "missing trust file" "No such file" --trust "$W/nope.pub" "$S" app
refuse_mount "unsigned tag, foreground" "no signature" -f --trust "$W/k1.pub" "$S" plain

# Attacks on the store: each keeps a pristine copy of sigs/app to restore.
cp "$S/sigs/app" "$W/sig.good"
restore() { cp "$W/sig.good" "$S/sigs/app"; }

# Replay: app's statement under the tag plain.
cp "$W/sig.good" "$S/sigs/plain"
refuse_mount "replayed signature" "is for tag 'app'" --trust "$W/k1.pub" "$S" plain
rm "$S/sigs/plain"

# Another reference in the signed statement.
sed "s/^ref .*/ref $ref2/" "$W/sig.good" >"$S/sigs/app"
refuse_mount "ref rewritten" "does not verify" --trust "$W/k1.pub" "$S" app
# A newer time, same reference (a rollback defence would look at it).
sed "s/^time .*/time 4102444800/" "$W/sig.good" >"$S/sigs/app"
refuse_mount "time rewritten" "does not verify" --trust "$W/k1.pub" "$S" app
# One hex digit of the signature changed.
awk '/^ed25519 /{ c = substr($3, 1, 1); $3 = (c == "0" ? "1" : "0") substr($3, 2) } { print }' \
	"$W/sig.good" >"$S/sigs/app"
refuse_mount "flipped signature" "does not verify" --trust "$W/k1.pub" "$S" app
head -c 150 "$W/sig.good" >"$S/sigs/app"
refuse_mount "truncated signature file" "malformed signature" --trust "$W/k1.pub" "$S" app
: >"$S/sigs/app"
refuse_mount "empty signature file" "malformed signature" --trust "$W/k1.pub" "$S" app
head -c 600 /dev/urandom >"$S/sigs/app"
refuse_mount "garbage signature file" "malformed signature" --trust "$W/k1.pub" "$S" app
{ cat "$W/sig.good"; head -c 5000 /dev/zero | tr '\0' 'x'; } >"$S/sigs/app"
refuse_mount "oversized signature file" "malformed signature" --trust "$W/k1.pub" "$S" app
tr 'a-f' 'A-F' <"$W/sig.good" | sed 's/^CFS-SIGNATURE/cfs-signature/; s/^TAG/tag/; s/^REF SHA256/ref sha256/; s/^TIME/time/; s/^ED25519/ed25519/' >"$S/sigs/app"
refuse_mount "upper-case hex" "malformed signature" --trust "$W/k1.pub" "$S" app
restore

step "a rewritten tag cannot redirect a --trust mount"
cp "$S/tags/plain" "$S/tags/app"
mount_image "$S" app "$m" --trust "$W/k1.pub" --cache "$W/cache"
[ "$(cat "$m/etc/release")" = "version one" ] || fail "--trust followed a rewritten tag"
unmount_image "$m"
"$CFS_SIGN" verify --trust "$W/k1.pub" "$S" app 2>"$W/err" >/dev/null || fail "verify after tag rewrite"
grep -q "which is not signed" "$W/err" || fail "cfs-sign verify does not point out the unsigned tag"
# Without --trust the tag is followed: that is what --trust is for.
mount_image "$S" app "$m" --cache "$W/cache"
[ "$(cat "$m/etc/release")" = "version two" ] || fail "a plain mount did not follow the tag"
unmount_image "$m"
printf '%s\n' "$ref1" >"$S/tags/app"

step "cfs-pack warns when it moves a signed tag without --sign"
"$CFS_PACK" --tag app "$W/v2" "$S" >/dev/null 2>"$W/err"
grep -q "keeps its signature" "$W/err" || fail "no warning for a stale signature: $(cat "$W/err")"
mount_image "$S" app "$m" --trust "$W/k1.pub" --cache "$W/cache"
[ "$(cat "$m/etc/release")" = "version one" ] || fail "--trust mounted the unsigned new image"
unmount_image "$m"
printf '%s\n' "$ref1" >"$S/tags/app"

step "mount(8) form: -o trust="
mkdir -p "$m"
"$CFS_MOUNT" app "$m" -o "store=$S,cache=$W/cache,trust=$W/k1.pub" >"$W/out" 2>&1 ||
	fail "mount(8) form with trust=: $(cat "$W/out")"
MOUNTS+=("$m")
[ "$(cat "$m/etc/release")" = "version one" ] || fail "mount(8) form serves the wrong image"
unmount_wait "$m" ""
expect_refused "mount(8) form, unsigned" "no signature" \
	"$CFS_MOUNT" plain "$m" -o "store=$S,cache=$W/cache,trust=$W/k1.pub"

step "an http store: the signature travels like a tag"
if command -v nginx >/dev/null 2>&1; then
	start_nginx "$S"
	U="http://127.0.0.1:$NGINX_PORT"
	mount_image "$U" app "$m" --trust "$W/trust" --cache "$W/cache-http"
	cmp -s "$m/blob" "$W/v1/blob" || fail "http --trust mount: blob differs"
	unmount_image "$m"
	expect_refused "http, unsigned" "no signature" \
		timeout 60 "$CFS_MOUNT" --trust "$W/k1.pub" --cache "$W/cache-http" "$U" plain "$m"
	"$CFS_SIGN" verify --trust "$W/k1.pub" "$U" app >/dev/null || fail "cfs-sign verify over http"
else
	echo "  nginx not installed: http part skipped"
fi

step "a restarted daemon serves the image its mount opened, not where the tag went"
# new_daemon PID: $m is served by a daemon (its pid in npid) other than PID.
new_daemon() {
	npid=$("$CFS_MOUNT" --status "$m" | grep -o '"daemon_pid":[0-9]*' | cut -d: -f2)
	[ -n "$npid" ] && [ "$npid" != "$1" ] && [ "$npid" != 0 ]
}
for mode in trust plain; do
	opts=(--cache "$W/cache")
	[ "$mode" = trust ] && opts+=(--trust "$W/k1.pub")
	mount_image "$S" app "$m" "${opts[@]}"
	exec {fd}<"$m/etc/release"
	# Publish v2 under the same tag, signed, then kill the daemon.
	"$CFS_PACK" -q --tag app --sign "$W/k1.pem" "$W/v2" "$S" >/dev/null
	st=$("$CFS_MOUNT" --status "$m")
	echo "$st" | grep -q "\"ref\":\"$ref1\"" || fail "$mode: --status does not show the ref: $st"
	pid=$(echo "$st" | grep -o '"daemon_pid":[0-9]*' | cut -d: -f2)
	kill -9 "$pid"
	wait_until 10 new_daemon "$pid" || true
	[ "$npid" != "$pid" ] || fail "$mode: no new daemon"
	[ "$(cat "$m/etc/release")" = "version one" ] || fail "$mode: the restarted daemon switched images"
	[ "$(cat <&"$fd")" = "version one" ] || fail "$mode: an open file changed"
	cmp -s "$m/blob" "$W/v1/blob" || fail "$mode: blob differs after the restart"
	exec {fd}<&-
	unmount_image "$m"
	# Back to v1 for the next round.
	"$CFS_PACK" -q --tag app --sign "$W/k1.pem" "$W/v1" "$S" >/dev/null
done

step "cfs-load --trust (direct mode)"
mkdir -p "$W/model"
"$CFS_MKMODEL" --size 4M --seed 7 "$W/model" >/dev/null
"$CFS_PACK" -q --tag model --sign "$W/k1.pem" "$W/model" "$S" >/dev/null
"$CFS_PACK" -q --tag model-unsigned "$W/model" "$S" >/dev/null
timeout 60 "$CFS_LOAD" --target host --verify --trust "$W/k1.pub" "$S" model model.safetensors \
	>/dev/null 2>"$W/err" || fail "cfs-load --trust of a signed model: $(cat "$W/err")"
expect_refused "cfs-load, unsigned" "no signature" \
	timeout 60 "$CFS_LOAD" --target host --trust "$W/k1.pub" "$S" model-unsigned model.safetensors
expect_refused "cfs-load, untrusted" "signed by no trusted key" \
	timeout 60 "$CFS_LOAD" --target host --trust "$W/k2.pub" "$S" model model.safetensors

if command -v python3 >/dev/null 2>&1; then
	cat >"$W/trust.py" <<'PYEOF'
import sys
import cfs_load
store, pub, bad = sys.argv[1:4]


def refused(tag, key, words, what):
    """from_image of TAG under KEY must raise cfs_load.Error saying WORDS."""
    try:
        cfs_load.Model.from_image(store, tag, "model.safetensors", trust=key)
    except cfs_load.Error as e:
        assert words in str(e), e
    else:
        raise SystemExit(what)


m = cfs_load.Model.from_image(store, "model", "model.safetensors", trust=pub)
assert len(m) > 0
m.close()
refused("model-unsigned", pub, "no signature", "an unsigned tag loaded under trust")
refused("model", bad, "no trusted key", "an untrusted signature loaded")
PYEOF
	py_cfs_load python3 "$W/trust.py" "$S" "$W/k1.pub" "$W/k2.pub" || fail "python from_image(trust=)"
	echo "  python: Model.from_image(trust=) loads signed, refuses unsigned and untrusted"
fi

echo "PASS"
