#!/usr/bin/env bash
# The zonal cache of docs/FLEET.md, its nginx blocks cut out of the doc and run as written: 8 cold cfs-mount clients at once through it fetch every object from the origin (nginx behind a 20 ms link) exactly once and read the right bytes; the origin's Cache-Control per path; a moved tag shows through after its short lifetime; with a store list, the zonal cache down, the origin serves; the same block in front of s3rver.
#
# Env (set by tests/meson.build): CFS_PACK, CFS_MOUNT, CFS_LS, CFS_MKTREE,
# CFS_TREECMP, CFS_FAULTPROXY, CFS_SRCDIR; CFS_S3RVER as in remote.sh (the
# s3 part is skipped without s3rver, except under CI=true).  ZONAL_CLIENTS
# (8), CFS_BIG_MB (24) and CFS_SMALL_COUNT (300) size it.  Needs root (the
# tree has devices and trusted.* xattrs), /dev/fuse, nginx and curl.  No
# timing is a pass/fail criterion but the generous bound on how long a
# moved tag may take to show (60 s; its lifetime is 5 s fresh + 5 s stale).
set -euo pipefail

source "$(dirname "$0")/lib.sh"

need_root
need_fuse
need_nginx
need_cmds mountpoint curl
: "${CFS_PACK:?}" "${CFS_MOUNT:?}" "${CFS_LS:?}" "${CFS_MKTREE:?}" "${CFS_TREECMP:?}"
: "${CFS_FAULTPROXY:?}" "${CFS_SRCDIR:?}"
doc=$CFS_SRCDIR/docs/FLEET.md
[ -f "$doc" ] || fail "$doc is missing"
clients=${ZONAL_CLIENTS:-8}

make_workdir zonal
unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_ENDPOINT_URL AWS_PROFILE

# replace VAR FROM TO: every FROM in $VAR becomes TO; fails when $VAR has
# no FROM (the doc changed under the test).
replace() {
	local -n text=$1
	[[ $text == *"$2"* ]] || fail "docs/FLEET.md: the block has no '$2' to replace"
	text=${text//"$2"/"$3"}
}

# header URL NAME: the value of response header NAME of a HEAD of URL.
header() {
	curl -sfI -m 10 "$1" | tr -d '\r' | grep -i "^$2:" | head -n 1 | sed 's/^[^:]*: *//' || true
}

# per_uri LOG: "COUNT URI" for every object GET in an access log whose
# lines start "METHOD URI STATUS".
per_uri() {
	awk '$1 == "GET" && $2 ~ /\/objects\// { print $2 }' "$1" | sort | uniq -c
}

# start_clients STORE IMAGE PREFIX: $clients cfs-mount daemons started at
# once, each with its own cache (a node of its own), at $W/PREFIX-$i;
# --learn no: the lookup of a learned profile (tests/learned.sh) is a 404
# that the request and error counts here would see.
start_clients() {
	local store=$1 image=$2 prefix=$3 i rc
	local -a starters=()
	for ((i = 1; i <= clients; i++)); do
		mkdir -p "$W/$prefix-$i"
		MOUNTS+=("$W/$prefix-$i")
		timeout 60 "$CFS_MOUNT" --cache "$W/cache-$prefix-$i" --log "$W/$prefix-$i.log" \
			--learn no "$store" "$image" "$W/$prefix-$i" >"$W/$prefix-$i.out" 2>&1 &
		starters+=($!)
	done
	for ((i = 1; i <= clients; i++)); do
		rc=0
		wait "${starters[$((i - 1))]}" || rc=$?
		[ "$rc" -eq 0 ] || fail "client $i: cfs-mount $store $image exited $rc: $(tail -n 3 "$W/$prefix-$i.out" "$W/$prefix-$i.log" 2>/dev/null)"
		mountpoint -q "$W/$prefix-$i" || fail "client $i: $W/$prefix-$i is not mounted"
		remember_daemon "$W/$prefix-$i"
	done
}

# read_all PREFIX SRC: every client at $W/PREFIX-* compared with SRC, all
# at once.
read_all() {
	local prefix=$1 src=$2 i rc
	local -a readers=()
	for ((i = 1; i <= clients; i++)); do
		"$CFS_TREECMP" --approx-blocks "$src" "$W/$prefix-$i" >"$W/$prefix-$i.cmp" 2>&1 &
		readers+=($!)
	done
	for ((i = 1; i <= clients; i++)); do
		rc=0
		wait "${readers[$((i - 1))]}" || rc=$?
		[ "$rc" -eq 0 ] || fail "client $i read wrong bytes or fields (treecmp exited $rc): $(head -n 20 "$W/$prefix-$i.cmp")"
	done
}

stop_clients() {
	local prefix=$1 i
	for ((i = 1; i <= clients; i++)); do
		unmount_image "$W/$prefix-$i"
	done
}

cd "$W"
step "mktree and pack: src into store/, tag v1"
"$CFS_MKTREE" src --big-mb "${CFS_BIG_MB:-24}" --small-count "${CFS_SMALL_COUNT:-300}" ||
	fail "cfs-mktree exited $?"
"$CFS_PACK" --tag v1 src store >pack.out 2>pack.err || fail "cfs-pack exited $?: $(tail -n 3 pack.err)"
ref1=$(ref_of pack.out)
nobj=$(find store/objects -type f | wc -l)
echo "   $ref1: $nobj objects, $(du -sm --apparent-size store/objects | cut -f1) MB"

# --- the origin ---------------------------------------------------------------
step "origin: nginx running the origin block of docs/FLEET.md on store/"
origin=$(doc_block "$doc" '# --- cfs origin: a store directory ---' '# --- end of the cfs origin ---')
replace origin 'listen 8080;' 'listen 127.0.0.1:@PORT@;'
replace origin 'root /srv/cfs-store;' "root $W/store;"
# shellcheck disable=SC2016 # nginx's variables, for nginx
start_nginx_http origin "log_format origin '\$request_method \$uri \$status \$body_bytes_sent';
access_log $W/origin.log origin;
$origin"
origin_port=$NGINX_HTTP_PORT
obj=$(cd store && find objects -type f -print -quit)
cc_obj=$(header "http://127.0.0.1:$origin_port/$obj" Cache-Control)
cc_tag=$(header "http://127.0.0.1:$origin_port/tags/v1" Cache-Control)
cc_marker=$(header "http://127.0.0.1:$origin_port/cfs-store" Cache-Control)
echo "   $obj: $cc_obj; tags/v1: $cc_tag; cfs-store: $cc_marker"
[ "$cc_obj" = "public, max-age=31536000, immutable" ] || fail "the origin's object Cache-Control: '$cc_obj'"
[ "$cc_tag" = "public, max-age=5, stale-while-revalidate=5" ] || fail "the origin's tag Cache-Control: '$cc_tag'"
[ "$cc_marker" = "public, max-age=300" ] || fail "the origin's marker Cache-Control: '$cc_marker'"
code=$(curl -s -o /dev/null -D 404.h -w '%{http_code}' "http://127.0.0.1:$origin_port/tags/nosuch")
[ "$code" = 404 ] || fail "a missing tag: $code, not 404"
grep -qi '^cache-control' 404.h && fail "a 404 carries a Cache-Control: $(cat 404.h)"

step "link: cfs-faultproxy adds 20 ms of round trip in front of the origin"
proxy_start "$origin_port"
proxy_set latency_ms=20

# --- the zonal cache ------------------------------------------------------------
# zonal_conf VAR ORIGIN CACHE_DIR LOG: the zonal block of docs/FLEET.md in
# VAR, for ORIGIN (host:port), its cache in CACHE_DIR, logged to LOG.
zonal_conf() {
	local -n conf=$1
	conf=$(doc_block "$doc" '# --- cfs zonal cache ---' '# --- end of the cfs zonal cache ---')
	replace conf 'proxy_cache_path /var/cache/nginx/cfs ' "proxy_cache_path $3 "
	replace conf 'server origin.internal:8080;' "server $2;"
	replace conf 'proxy_set_header Host origin.internal;' "proxy_set_header Host ${2%:*};"
	replace conf 'listen 80;' 'listen 127.0.0.1:@PORT@;'
	# shellcheck disable=SC2016 # nginx's variables, for nginx
	conf="log_format zonal '\$request_method \$uri \$status \$upstream_cache_status \$body_bytes_sent';
access_log $4 zonal;
$conf"
}
step "zonal: nginx running the zonal block of docs/FLEET.md in front of the link"
zconf=
zonal_conf zconf "127.0.0.1:$PROXY_PORT" "$W/zonal-cache" "$W/zonal.log"
start_nginx_http zonal "$zconf"
zonal_pid=$NGINX_HTTP_PID
zurl=http://127.0.0.1:$NGINX_HTTP_PORT/
echo "   $zurl -> 127.0.0.1:$PROXY_PORT (20 ms) -> 127.0.0.1:$origin_port"

step "$clients cold clients at once through the zonal cache: mount, then every file read by all at once"
: >origin.log
: >zonal.log
t0=$(now_ms)
start_clients "$zurl" v1 zc
read_all zc src
echo "   all $clients mounted and compared in $(($(now_ms) - t0)) ms"
per_uri origin.log >origin-per-uri.txt
per_uri zonal.log >zonal-per-uri.txt
uniq_origin=$(wc -l <origin-per-uri.txt)
dups=$(awk '$1 != 1 && n++ < 5' origin-per-uri.txt)
[ -z "$dups" ] || fail "the origin served an object more than once (count uri): $dups"
[ "$uniq_origin" -eq "$nobj" ] ||
	fail "the origin served $uniq_origin distinct objects; the store holds $nobj, all read"
bad=$(awk '$2 ~ /\/objects\// && $3 != 200 && n++ < 3' origin.log)
[ -z "$bad" ] || fail "the origin answered object requests other than 200: $bad"
zonal_obj=$(awk '$1 == "GET" && $2 ~ /\/objects\//' zonal.log | wc -l)
zonal_miss=$(awk '$1 == "GET" && $2 ~ /\/objects\// && $4 == "MISS"' zonal.log | wc -l)
zonal_hit=$(awk '$1 == "GET" && $2 ~ /\/objects\// && $4 == "HIT"' zonal.log | wc -l)
origin_tags=$(grep -c ' /tags/v1 ' origin.log || true)
[ "$zonal_miss" -eq "$nobj" ] || fail "the zonal cache logged $zonal_miss object misses for $nobj objects"
# Every client read every object once (its own disk cache after that).
[ "$zonal_obj" -ge $((clients * nobj)) ] ||
	fail "the zonal cache served $zonal_obj object requests; $clients clients x $nobj objects expected"
echo "   origin: $uniq_origin objects each requested once, tags/v1 $origin_tags time(s)," \
	"$(wc -l <origin.log) requests in all; zonal: $zonal_obj object requests, $zonal_miss MISS, $zonal_hit HIT"
for ((i = 1; i <= clients; i++)); do
	mount_stats "$W/zc-$i" "zc-$i.stats"
	[ "$(stat_of "zc-$i.stats" read_errors)" -eq 0 ] || fail "client $i: read errors"
	[ "$(stat_of "zc-$i.stats" fetch_errors)" -eq 0 ] || fail "client $i: fetch errors"
done
stop_clients zc

step "the zonal cache passes the origin's Cache-Control on, and serves objects from its cache"
[ "$(header "${zurl}$obj" Cache-Control)" = "public, max-age=31536000, immutable" ] ||
	fail "an object through the zonal cache: Cache-Control '$(header "${zurl}$obj" Cache-Control)'"
[ "$(header "${zurl}$obj" X-Cache-Status)" = HIT ] || fail "an object read by $clients clients is not a HIT"

# --- a tag that moves ---------------------------------------------------------
step "tag: v1 moves on the origin; the zonal cache shows the new one after the tag's lifetime"
cp -a src src2
echo "v2 of the image" >src2/moved-tag.txt
curl -sf -m 10 -o tag-before "${zurl}tags/v1" || fail "GET tags/v1 through the zonal cache failed"
cmp -s tag-before store/tags/v1 || fail "tags/v1 through the zonal cache differs from the origin's before the move"
"$CFS_PACK" --tag v1 src2 store >pack2.out 2>pack2.err || fail "cfs-pack src2 exited $?: $(tail -n 3 pack2.err)"
ref2=$(ref_of pack2.out)
[ "$ref2" != "$ref1" ] || fail "src2 packed into the same image"
t0=$(now_ms)
curl -sf -m 10 -o tag-now "${zurl}tags/v1" || fail "GET tags/v1 through the zonal cache failed"
cmp -s tag-now tag-before && first="the old tag (cached)" || first="the new tag already"
while ! cmp -s tag-now store/tags/v1; do
	[ $(($(now_ms) - t0)) -lt 60000 ] || fail "the zonal cache still serves the old tags/v1 60 s after it moved"
	sleep 0.5
	curl -sf -m 10 -o tag-now "${zurl}tags/v1" || fail "GET tags/v1 through the zonal cache failed"
done
echo "   right after the move: $first; the new one after $(($(now_ms) - t0)) ms"
"$CFS_LS" "$zurl" v1 >ls-zonal.out 2>ls-zonal.err || fail "cfs-ls through the zonal cache: $(cat ls-zonal.err)"
"$CFS_LS" store v1 >ls-store.out || fail "cfs-ls store v1 exited $?"
cmp -s ls-zonal.out ls-store.out || fail "cfs-ls v1 through the zonal cache differs from the store's"
grep -q 'moved-tag.txt' ls-zonal.out || fail "v1 through the zonal cache has no moved-tag.txt"

# --- a store list: the zonal cache first, the origin last ----------------------------
# store_field STATS INDEX KEY: a counter of the INDEX-th store of --stats.
store_field() {
	local v
	v=$(grep -o '"stores":\[.*\]' "$1" | sed 's/},{/}\n{/g' | sed -n "$(($2 + 1))p" |
		grep -o "\"$3\":[0-9]*" | cut -d: -f2)
	[ -n "$v" ] || fail "no stores[$2].$3 in $1: $(cat "$1")"
	echo "$v"
}
list="$zurl,http://127.0.0.1:$origin_port/"
step "list $list: everything from the zonal cache while it is up"
mount_bg "$W/list-up" "$list" v1 --cache "$W/cache-list-up"
compare --approx-blocks src2 list-up
mount_stats "$W/list-up" list-up.stats
[ "$(store_field list-up.stats 0 gets)" -gt 0 ] || fail "the zonal cache served nothing"
[ "$(store_field list-up.stats 1 gets)" -eq 0 ] || fail "the origin was asked while the zonal cache was up"
unmount_wait "$W/list-up" "$MOUNT_PID"
step "list: the zonal cache down, a new node reads everything from the origin"
kill "$zonal_pid"
wait "$zonal_pid" 2>/dev/null || true
: >origin.log
mount_bg "$W/list-down" "$list" v1 --cache "$W/cache-list-down"
compare --approx-blocks src2 list-down
mount_stats "$W/list-down" list-down.stats
[ "$(store_field list-down.stats 0 passed_on)" -gt 0 ] || fail "the dead zonal cache passed nothing on"
[ "$(store_field list-down.stats 1 gets)" -gt 0 ] || fail "the origin served nothing"
[ "$(per_uri origin.log | wc -l)" -gt 0 ] || fail "the origin's log has no object request"
echo "   zonal cache down: $(store_field list-down.stats 0 passed_on) requests passed on," \
	"$(store_field list-down.stats 1 gets) gets from the origin"
unmount_wait "$W/list-down" "$MOUNT_PID"

# --- an S3 origin ---------------------------------------------------------------
if ! find_s3rver; then
	[ "${CI:-}" = true ] && fail "node or s3rver missing (scripts/install-deps.sh installs them)"
	echo "SKIP (s3 part): node or s3rver not found; run scripts/install-deps.sh or set CFS_S3RVER"
	echo "PASS: zonal (nginx origin only)"
	exit 0
fi
step "s3: the same zonal block in front of s3rver (anonymous reads), nodes on plain http"
start_s3rver cfs
"$CFS_PACK" --tag v1 src s3://cfs/fleet >pack-s3.out 2>pack-s3.err ||
	fail "cfs-pack into s3 exited $?: $(tail -n 3 pack-s3.err)"
[ "$(ref_of pack-s3.out)" = "$ref1" ] || fail "packing into s3 gave another image"
s3conf=
zonal_conf s3conf "127.0.0.1:$S3_PORT" "$W/zonal-s3-cache" "$W/zonal-s3.log"
start_nginx_http zonal-s3 "$s3conf"
z3url=http://127.0.0.1:$NGINX_HTTP_PORT/cfs/fleet/
[ "$(header "${z3url}$obj" Cache-Control)" = "public, max-age=31536000, immutable" ] ||
	fail "an object stored by cfs-pack, through the zonal cache: Cache-Control '$(header "${z3url}$obj" Cache-Control)'"
: >zonal-s3.log
start_clients "$z3url" v1 zs3
read_all zs3 src
misses=$(awk '$1 == "GET" && $2 ~ /\/objects\// && $4 == "MISS"' zonal-s3.log | sort -u -k2,2 | wc -l)
miss_lines=$(awk '$1 == "GET" && $2 ~ /\/objects\// && $4 == "MISS"' zonal-s3.log | wc -l)
[ "$miss_lines" -eq "$misses" ] || fail "the zonal cache went to s3rver $miss_lines times for $misses objects"
echo "   $clients clients compared; the zonal cache fetched each of $misses objects from s3rver once"
stop_clients zs3

echo "PASS: zonal"
