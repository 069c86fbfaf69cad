#!/usr/bin/env bash
# Remote stores: the round-trip tree served by nginx over http:// and over https:// (TLS verified against a throwaway CA, HTTP/2) and packed straight into s3rver over s3://, mounted and compared; live --stats; clear errors.
#
# Env (set by tests/meson.build): CFS_PACK, CFS_MOUNT, CFS_LS, CFS_MKTREE,
# CFS_TREECMP; CFS_S3RVER (s3rver.js, or the prefix npm installed it under;
# default /opt/cfs-test-deps).  Needs root (the tree has devices and
# trusted.* xattrs), /dev/fuse, nginx and openssl, and node with s3rver for the s3
# part: without them it skips (exit 77) or skips the s3 part, except under
# CI=true, where a missing server fails.  CFS_BIG_MB / CFS_SMALL_COUNT
# shrink the tree.
set -euo pipefail

source "$(dirname "$0")/lib.sh"

need_root
need_fuse
need_cmds mountpoint curl openssl
: "${CFS_PACK:?}" "${CFS_MOUNT:?}" "${CFS_LS:?}" "${CFS_MKTREE:?}" "${CFS_TREECMP:?}"
need_nginx

make_workdir remote
# Never a developer's own credentials or endpoint.
unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_ENDPOINT_URL AWS_PROFILE
# Nor the CA bundle of the environment: https starts with the system's.
unset CURL_CA_BUNDLE SSL_CERT_FILE

# one_line_error WHAT FILE PATTERN: FILE (a failed command's output) is one
# line that matches PATTERN.
one_line_error() {
	local n
	n=$(wc -l <"$2")
	[ "$n" -eq 1 ] || fail "$1: expected one line of error, got $n: $(head -n 5 "$2")"
	grep -Eq -- "$3" "$2" || fail "$1: the error does not match '$3': $(cat "$2")"
	echo "   $1: $(cat "$2")"
}

# expect_fail WHAT SECONDS OUT CMD...: CMD must fail within SECONDS.
expect_fail() {
	local what=$1 secs=$2 out=$3 t0 rc=0
	shift 3
	t0=$(now_ms)
	timeout $((secs + 30)) "$@" >"$out" 2>&1 || rc=$?
	[ "$rc" -ne 0 ] || fail "$what: succeeded"
	[ "$rc" -ne 124 ] || fail "$what: still running after $((secs + 30)) s"
	[ $(($(now_ms) - t0)) -le $((secs * 1000)) ] ||
		fail "$what: took $(($(now_ms) - t0)) ms to fail (limit $secs s)"
}

count_objects() {
	find "$1" -type f | wc -l
}

cd "$W"
step "mktree: the round-trip tree in $W/src"
"$CFS_MKTREE" src ${CFS_BIG_MB:+--big-mb "$CFS_BIG_MB"} \
	${CFS_SMALL_COUNT:+--small-count "$CFS_SMALL_COUNT"} || fail "cfs-mktree exited $?"
src_mb=$(du -sm --apparent-size src | cut -f1)

step "pack: src into the directory store store/, tag rt"
"$CFS_PACK" --tag rt src store >pack.out 2>pack.err || fail "cfs-pack exited $?: $(tail -n 3 pack.err)"
ref=$(ref_of pack.out)
local_objects=$(count_objects store/objects)
echo "   $ref, $local_objects objects, $src_mb MB of files"
"$CFS_LS" store rt >ls-local.out || fail "cfs-ls store rt exited $?"

# --- http:// ---------------------------------------------------------------
step "http: nginx serving store/"
start_nginx "$W/store"
url=http://127.0.0.1:$NGINX_PORT/
echo "   $url"

step "http: mount $url rt"
: >"$NGINX_ACCESS_LOG"
# --learn no: looking for a learned profile (tests/learned.sh) is a request,
# which the request counts below would see.
mount_image "$url" rt "$W/mnt-http" --cache "$W/cache-http" --learn no
http_mount_ms=$MOUNT_MS
echo "   mounted in $http_mount_ms ms; $(wc -l <"$NGINX_ACCESS_LOG") requests to nginx"

step "http: treecmp src against the mount"
compare --approx-blocks src mnt-http

step "http: cfs-mount --stats while mounted"
# Once the fetcher is idle (readahead and prefetch run in the background):
# two snapshots in a row with nothing in flight or queued and the same
# attempts, so that nginx's log holds every request started.
prev=-1
for ((i = 0; i < 50; i++)); do
	mount_stats mnt-http stats-http.json
	attempts=$(stat_of stats-http.json fetch_attempts)
	[ "$(stat_of stats-http.json fetch_inflight)" -eq 0 ] &&
		[ "$(stat_of stats-http.json fetch_queued)" -eq 0 ] && [ "$attempts" -eq "$prev" ] && break
	prev=$attempts
	sleep 0.2
done
echo "   $(cat stats-http.json)"
requests=$(stat_of stats-http.json fetch_requests)
attempts=$(stat_of stats-http.json fetch_attempts)
gets=$(stat_of stats-http.json store_gets)
served=$(wc -l <"$NGINX_ACCESS_LOG")
[ "$requests" -gt 0 ] || fail "fetch_requests=0 after reading the whole tree"
[ "$gets" -ge $((local_objects * 9 / 10)) ] ||
	fail "store_gets=$gets after reading every file of $local_objects objects"
[ "$(stat_of stats-http.json fetch_errors)" -eq 0 ] || fail "fetch errors on a healthy server"
[ "$(stat_of stats-http.json read_errors)" -eq 0 ] || fail "read errors on a healthy server"
# Every attempt reached nginx, and nothing else did.
[ "$attempts" -eq "$served" ] || fail "fetch_attempts=$attempts but nginx served $served requests"
grep -v ' 200 ' "$NGINX_ACCESS_LOG" | grep -v ' 206 ' | head -n 3 >non200.out || true
[ ! -s non200.out ] || fail "nginx answered other than 200/206: $(cat non200.out)"
echo "   $requests requests, nginx served $served"

step "http: the stats xattr is not listed, and only the root has it"
getfattr -d -m - mnt-http 2>/dev/null | grep -q cfs.stats && fail "listxattr shows user.cfs.stats"
"$CFS_MOUNT" --stats mnt-http/files >/dev/null 2>stats-sub.err && fail "--stats on a subdirectory worked"
one_line_error "--stats on a subdirectory" stats-sub.err "not the root of a cfs mount"

step "http: cfs-ls $url rt"
"$CFS_LS" "$url" rt >ls-http.out 2>ls-http.err || fail "cfs-ls $url rt exited $?: $(cat ls-http.err)"
cmp -s ls-local.out ls-http.out || fail "cfs-ls over http differs from the local listing"

step "http: a store that refuses a chunk: EIO within the deadline, the 403 in the log, the mount stays up"
big=$(find src -type f -size +2M -printf '%s %P\n' | sort -n | tail -n 1 | cut -d' ' -f2-)
[ -n "$big" ] || fail "no file over 2 MiB in the tree"
# No prefetch: the stream could fetch the file before the store refuses.
mount_image "$url" rt "$W/mnt-deny" --cache "$W/cache-deny" --log "$W/deny.log" --deadline 5000 \
	--prefetch none --learn no
touch store/.deny-objects
t0=$(now_ms)
timeout 30 cat "mnt-deny/$big" >/dev/null 2>deny-read.err && fail "reading $big worked while objects were 403"
grep -q 'Input/output error' deny-read.err || fail "reading a refused chunk: not EIO: $(cat deny-read.err)"
[ $(($(now_ms) - t0)) -lt 10000 ] || fail "the refused read took $(($(now_ms) - t0)) ms"
grep -q ' 403 ' deny.log || fail "no log line with the 403: $(head -n 5 deny.log)"
echo "   EIO after $(($(now_ms) - t0)) ms; log: $(grep -m 1 ' 403 ' deny.log)"
rm store/.deny-objects
cmp "mnt-deny/$big" "src/$big" || fail "$big differs once the store serves it again"
mount_stats mnt-deny stats-deny.json
[ "$(stat_of stats-deny.json read_errors)" -ge 1 ] || fail "read_errors=0 after a refused read"
[ "$(stat_of stats-deny.json fetch_errors)" -ge 1 ] || fail "fetch_errors=0 after a 403"
unmount_image "$W/mnt-deny"

step "http: errors"
mkdir -p mnt-x
expect_fail "mount of a missing tag" 10 err-tag.out "$CFS_MOUNT" "$url" nosuchtag mnt-x
one_line_error "missing tag" err-tag.out "image 'nosuchtag' not found in store $url"
expect_fail "mount of a URL without a store" 10 err-nostore.out \
	"$CFS_MOUNT" "${url}objects/" rt mnt-x
one_line_error "no store there" err-nostore.out "not a cfs store"
expect_fail "cfs-pack into http" 10 err-pack.out "$CFS_PACK" src "$url"
one_line_error "pack into http" err-pack.out "read-only store"
mountpoint -q mnt-x && fail "a failed mount left mnt-x mounted"
unmount_image "$W/mnt-http"

# --- https:// --------------------------------------------------------------
step "https: nginx with TLS and HTTP/2 serving store/, its certificate from a throwaway CA"
start_nginx_tls "$W/store"
surl=https://127.0.0.1:$NGINX_TLS_PORT/
cp "$NGINX_TLS_CA" ca.pem
echo "   $surl"

step "https: without the CA: fails at once, and says the certificate failed verification"
expect_fail "mount without the CA" 10 err-tls.out \
	"$CFS_MOUNT" --cache "$W/cache-tls-x" "$surl" rt mnt-x
# The fetcher's line (curl's reason) and the command's.
[ "$(wc -l <err-tls.out)" -le 2 ] || fail "mount without the CA: more than two lines: $(cat err-tls.out)"
tail -n 1 err-tls.out | grep -q "image 'rt': TLS certificate verification failed" ||
	fail "mount without the CA: not a certificate error: $(cat err-tls.out)"
grep -q 'certificate.* after 1 attempt' err-tls.out ||
	fail "mount without the CA: no log line with curl's reason, or retried: $(cat err-tls.out)"
sed 's/^/   /' err-tls.out
mountpoint -q mnt-x && fail "a failed mount left mnt-x mounted"
expect_fail "cfs-pack --ca-file of a missing file" 10 err-cafile.out \
	"$CFS_PACK" --ca-file no-such-ca.pem src store
one_line_error "missing --ca-file" err-cafile.out "--ca-file no-such-ca.pem: No such file or directory"

step "https: --ca-file ca.pem: mount, treecmp, every object over HTTP/2"
: >"$NGINX_TLS_ACCESS_LOG"
mount_image "$surl" rt "$W/mnt-https" --cache "$W/cache-https" --ca-file ca.pem --learn no
compare --approx-blocks src mnt-https
mount_stats mnt-https stats-https.json
[ "$(stat_of stats-https.json fetch_errors)" -eq 0 ] || fail "fetch errors over https"
[ "$(stat_of stats-https.json read_errors)" -eq 0 ] || fail "read errors over https"
attempts=$(stat_of stats-https.json fetch_attempts)
unmount_image "$W/mnt-https"

# "PROTOCOL CONNECTION METHOD URI STATUS BYTES"
objs=$(grep -c ' GET /objects/' "$NGINX_TLS_ACCESS_LOG" || true)
h2objs=$(grep -c '^HTTP/2.0 [0-9]* GET /objects/' "$NGINX_TLS_ACCESS_LOG" || true)
conns=$(cut -d' ' -f2 "$NGINX_TLS_ACCESS_LOG" | sort -u | wc -l)
served=$(wc -l <"$NGINX_TLS_ACCESS_LOG")
[ "$objs" -ge $((local_objects * 9 / 10)) ] ||
	fail "nginx served $objs object requests over https for $local_objects objects"
[ "$h2objs" -eq "$objs" ] ||
	fail "$((objs - h2objs)) of $objs object requests not over HTTP/2: $(grep -v '^HTTP/2.0' "$NGINX_TLS_ACCESS_LOG" | head -n 3)"
[ "$attempts" -eq "$served" ] || fail "fetch_attempts=$attempts but nginx served $served requests over https"
# Multiplexed: the fetcher waits for the first connection (PIPEWAIT)
# and puts every request on it, instead of opening one per request.
[ "$conns" -le 2 ] || fail "$served requests over $conns connections: not multiplexed"
echo "   $served requests, $h2objs objects over HTTP/2, $conns connection(s)"

step "https: learning on: looking for a learned profile there is not is a 404, not an error"
mount_image "$surl" rt "$W/mnt-https-learn" --cache "$W/cache-https-learn" --ca-file ca.pem
for _ in $(seq 100); do
	mount_stats mnt-https-learn stats-learn.json
	[ "$(stat_of stats-learn.json fetch_not_found)" -ge 1 ] && break
	sleep 0.1
done
[ "$(stat_of stats-learn.json fetch_not_found)" -ge 1 ] ||
	fail "no 404 counted for the learned profile's lookup: $(cat stats-learn.json)"
[ "$(stat_of stats-learn.json fetch_errors)" -eq 0 ] ||
	fail "a learned profile's 404 counted as a fetch error: $(cat stats-learn.json)"
unmount_image "$W/mnt-https-learn"

step "https: CURL_CA_BUNDLE, then SSL_CERT_FILE, then --insecure"
CURL_CA_BUNDLE=ca.pem mount_image "$surl" rt "$W/mnt-https-env" --cache "$W/cache-https-env"
cmp "mnt-https-env/$big" "src/$big" || fail "$big differs over https with CURL_CA_BUNDLE"
unmount_image "$W/mnt-https-env"
SSL_CERT_FILE=$W/ca.pem "$CFS_LS" "$surl" rt >ls-https.out 2>ls-https.err ||
	fail "SSL_CERT_FILE: cfs-ls $surl rt exited $?: $(cat ls-https.err)"
cmp -s ls-local.out ls-https.out || fail "cfs-ls over https differs from the local listing"
# Without verification the environment's bundle is not even read.
CURL_CA_BUNDLE=/nonexistent.pem mount_image "$surl" rt "$W/mnt-https-ins" \
	--cache "$W/cache-https-ins" --insecure
cmp "mnt-https-ins/$big" "src/$big" || fail "$big differs over https with --insecure"
unmount_image "$W/mnt-https-ins"

# --- s3:// -----------------------------------------------------------------
if ! find_s3rver; then
	[ "${CI:-}" = true ] && fail "node or s3rver missing (scripts/install-deps.sh installs them)"
	echo "SKIP (s3 part): node or s3rver not found; run scripts/install-deps.sh or set CFS_S3RVER"
	echo "PASS: remote (http only)"
	exit 0
fi

step "s3: s3rver with bucket cfs"
start_s3rver cfs
echo "   $AWS_ENDPOINT_URL"
s3=s3://cfs/images/prefix
tag='rt:v1@x+y' # characters that S3 URLs must escape

step "s3: cfs-pack src straight into $s3, tag $tag"
t0=$(now_ms)
"$CFS_PACK" --tag "$tag" src "$s3" >pack-s3.out 2>pack-s3.err ||
	fail "cfs-pack src $s3 exited $?: $(tail -n 3 pack-s3.err)"
pack_ms=$(($(now_ms) - t0))
s3ref=$(ref_of pack-s3.out)
[ "$s3ref" = "$ref" ] || fail "packing into s3 gave $s3ref, into a directory $ref"
cat pack-s3.err
s3_objects=$(find "$S3_DIR/cfs/images/prefix/objects" -name '*._S3rver_object' | wc -l)
[ "$s3_objects" -eq "$local_objects" ] ||
	fail "the bucket holds $s3_objects objects, the directory store $local_objects"
[ -f "$S3_DIR/cfs/images/prefix/tags/$tag._S3rver_object" ] ||
	fail "tag $tag is not stored under its own name: $(ls "$S3_DIR/cfs/images/prefix/tags")"
[ -f "$S3_DIR/cfs/images/prefix/cfs-store._S3rver_object" ] || fail "no cfs-store marker in the bucket"
echo "   $s3_objects objects in $pack_ms ms"

step "s3: pack again: nothing new"
"$CFS_PACK" --tag "$tag" src "$s3" >pack-s3b.out 2>pack-s3b.err ||
	fail "second cfs-pack exited $?: $(tail -n 3 pack-s3b.err)"
grep -q ' 0 new objects' pack-s3b.err || fail "the second pack uploaded objects: $(cat pack-s3b.err)"
[ "$(ref_of pack-s3b.out)" = "$ref" ] || fail "the second pack gave another reference"

step "s3: what cfs-pack stored carries a Cache-Control (docs/FLEET.md): objects a year, the tag seconds"
# s3_cache_control METHOD KEY: the Cache-Control s3rver returns for KEY (as
# escaped in a URL) to a SigV4-signed HEAD or GET.
s3_cache_control() {
	local how=(-I)
	[ "$1" = GET ] && how=(-D - -o /dev/null)
	curl -sf -m 10 "${how[@]}" --aws-sigv4 "aws:amz:$AWS_REGION:s3" \
		--user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' \
		"$AWS_ENDPOINT_URL/cfs/images/prefix/$2" | tr -d '\r' | grep -i '^cache-control:' |
		sed 's/^[^:]*: *//' || true
}
s3obj=$(cd "$S3_DIR/cfs/images/prefix" && find objects -name '*._S3rver_object' -print -quit)
s3obj=${s3obj%._S3rver_object}
for m in HEAD GET; do
	cc=$(s3_cache_control $m "$s3obj")
	[ "$cc" = "public, max-age=31536000, immutable" ] || fail "$m $s3obj: Cache-Control '$cc'"
	cc=$(s3_cache_control $m 'tags/rt%3Av1%40x%2By')
	[ "$cc" = "public, max-age=5, stale-while-revalidate=5" ] || fail "$m tags/$tag: Cache-Control '$cc'"
done
cc=$(s3_cache_control HEAD cfs-store)
[ "$cc" = "public, max-age=300" ] || fail "HEAD cfs-store: Cache-Control '$cc'"
echo "   $s3obj: $(s3_cache_control GET "$s3obj"); tags/$tag: $(s3_cache_control GET 'tags/rt%3Av1%40x%2By')"

step "s3: mount $s3 $tag"
mount_image "$s3" "$tag" "$W/mnt-s3" --cache "$W/cache-s3"
s3_mount_ms=$MOUNT_MS
echo "   mounted in $s3_mount_ms ms"
compare --approx-blocks src mnt-s3
mount_stats mnt-s3 stats-s3.json
echo "   $(cat stats-s3.json)"
[ "$(stat_of stats-s3.json fetch_requests)" -gt 0 ] || fail "fetch_requests=0 over s3"
[ "$(stat_of stats-s3.json read_errors)" -eq 0 ] || fail "read errors over s3"
unmount_image "$W/mnt-s3"

step "s3: the mount left its learned profile in the bucket; a fresh cache prefetches it"
mount_image "$s3" "$tag" "$W/mnt-s3b" --cache "$W/cache-s3b"
wait_until 10 eval 'mount_stats mnt-s3b stats-s3b.json; [ "$(stat_of stats-s3b.json prefetch_done)" -gt 0 ]' ||
	fail "no learned prefetch over s3: $(cat stats-s3b.json)"
grep -q '"learned":"store"' stats-s3b.json || fail "learned profile not from s3: $(cat stats-s3b.json)"
echo "   learned_chunks $(stat_of stats-s3b.json learned_chunks), prefetch_done $(stat_of stats-s3b.json prefetch_done)"
unmount_image "$W/mnt-s3b"

step "s3: cfs-ls"
"$CFS_LS" "$s3" "$tag" >ls-s3.out 2>ls-s3.err || fail "cfs-ls $s3 exited $?: $(cat ls-s3.err)"
cmp -s ls-local.out ls-s3.out || fail "cfs-ls over s3 differs from the local listing"

step "s3: errors"
expect_fail "mount of a missing tag" 10 err-s3tag.out "$CFS_MOUNT" "$s3" nosuchtag mnt-x
one_line_error "missing tag" err-s3tag.out "image 'nosuchtag' not found in store $s3"
expect_fail "cfs-ls of a prefix without a store" 10 err-s3none.out "$CFS_LS" s3://cfs/elsewhere rt
one_line_error "no store there" err-s3none.out "not a cfs store"
# s3rver checks the access key but not V4 signatures: a wrong key stands
# for wrong credentials.  The fetcher logs the 403; the command says what
# failed.
expect_fail "wrong credentials" 10 err-s3key.out \
	env AWS_ACCESS_KEY_ID=WRONGKEY "$CFS_MOUNT" "$s3" "$tag" mnt-x
grep -q '403' err-s3key.out || fail "wrong credentials: no 403 in the error: $(cat err-s3key.out)"
grep -q 'Permission denied' err-s3key.out || fail "wrong credentials: not EACCES: $(cat err-s3key.out)"
[ "$(wc -l <err-s3key.out)" -le 2 ] || fail "wrong credentials: more than two lines: $(cat err-s3key.out)"
sed 's/^/   /' err-s3key.out
mountpoint -q mnt-x && fail "a failed mount left mnt-x mounted"

echo "figures: tree $src_mb MB; http mount ${http_mount_ms} ms; s3 mount ${s3_mount_ms} ms;" \
	"pack into s3 ${pack_ms} ms ($((src_mb * 1000 / (pack_ms > 0 ? pack_ms : 1))) MB/s)"
echo "PASS: remote"
