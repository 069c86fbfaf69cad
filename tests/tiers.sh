#!/usr/bin/env bash
# Store lists (STORE1,STORE2: a zonal cache first, the origin last): what
# the first cannot serve comes from the next, with the right bytes in the
# end, for each fault kind: the first store down, missing the objects,
# answering 503, hanging past its deadline, sending flipped bytes.  The
# per-store counters of --stats say where the bytes came from.  Tags,
# signatures, cfs-ls and cfs-load direct mode read lists too; cfs-pack
# refuses to write to one; -o store=A,store=B is the mount(8) spelling.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
: "${CFS_PACK:?}" "${CFS_MOUNT:?}" "${CFS_LS:?}" "${CFS_FAULTPROXY:?}" "${CFS_SIGN:?}"
: "${CFS_LOAD:?}" "${CFS_MKMODEL:?}"
need_root
need_fuse
need_nginx
need_cmds python3
make_workdir tiers

S=$W/origin
mkdir -p "$W/src/etc" "$W/src/data"
echo "hello from the origin" >"$W/src/etc/motd"
head -c 9000000 /dev/urandom >"$W/src/data/big"
for i in $(seq 1 40); do head -c $((RANDOM % 5000 + 10)) /dev/urandom >"$W/src/data/small$i"; done
openssl genpkey -algorithm ed25519 -out "$W/k.pem" 2>/dev/null
openssl pkey -in "$W/k.pem" -pubout -out "$W/k.pub" 2>/dev/null
"$CFS_PACK" -q --tag app --sign "$W/k.pem" "$W/src" "$S" >/dev/null
mkdir -p "$W/empty-src"
"$CFS_PACK" -q "$W/empty-src" "$W/empty" >/dev/null

start_nginx "$S"
ORIGIN="http://127.0.0.1:$NGINX_PORT"
proxy_start "$NGINX_PORT"
ZONAL="http://127.0.0.1:$PROXY_PORT"
DEAD="http://127.0.0.1:$(free_port)"

# store_field STATS INDEX KEY: a counter of the INDEX-th store of a list.
store_field() {
	python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["stores"][int(sys.argv[2])][sys.argv[3]])' "$@"
}

m=$W/mnt
n=0
# run_case NAME STORE-LIST: mount with a fresh cache, read and compare every
# file, leave the counters in $W/NAME.json.
run_case() {
	local name=$1 list=$2
	n=$((n + 1))
	mount_bg "$m" "$list" app --cache "$W/cache$n" --deadline 3000 --prefetch none --readahead 0
	cmp -s "$m/data/big" "$W/src/data/big" || fail "$name: data/big differs"
	for f in "$W"/src/data/small*; do
		cmp -s "$m/data/${f##*/}" "$f" || fail "$name: ${f##*/} differs"
	done
	[ "$(cat "$m/etc/motd")" = "hello from the origin" ] || fail "$name: motd differs"
	mount_stats "$m" "$W/$name.json"
	unmount_wait "$m" "$MOUNT_PID"
	echo "  $name: first store gets $(store_field "$W/$name.json" 0 gets) passed_on $(store_field "$W/$name.json" 0 passed_on)," \
		"origin gets $(store_field "$W/$name.json" 1 gets), chunk_bad $(stat_of "$W/$name.json" chunk_bad)"
}

step "healthy zonal cache: everything from it"
run_case healthy "$ZONAL,$ORIGIN"
[ "$(store_field "$W/healthy.json" 1 gets)" -eq 0 ] || fail "healthy: the origin was asked"
[ "$(store_field "$W/healthy.json" 0 gets)" -gt 3 ] || fail "healthy: the zonal cache served nothing"

step "zonal cache down: the origin serves"
run_case down "$DEAD,$ORIGIN"
[ "$(store_field "$W/down.json" 0 passed_on)" -gt 0 ] || fail "down: nothing handed on"
[ "$(store_field "$W/down.json" 1 gets)" -gt 3 ] || fail "down: the origin served nothing"

step "first store misses (an empty local store): the origin serves"
run_case miss "$W/empty,$ORIGIN"
[ "$(store_field "$W/miss.json" 1 gets)" -gt 3 ] || fail "miss: the origin served nothing"

step "zonal cache answers 503"
proxy_set status=503
run_case 5xx "$ZONAL,$ORIGIN"
[ "$(store_field "$W/5xx.json" 0 passed_on)" -gt 0 ] || fail "5xx: nothing handed on"
[ "$(store_field "$W/5xx.json" 0 gets)" -eq 0 ] || fail "5xx: the zonal cache served"

step "zonal cache hangs on objects past its deadline (a third of --deadline)"
proxy_set hang=1 path=/objects/ count=3
t0=$(now_ms)
run_case slow "$ZONAL,$ORIGIN"
echo "  (took $(($(now_ms) - t0)) ms)"
[ "$(store_field "$W/slow.json" 0 passed_on)" -ge 1 ] || fail "slow: nothing handed on"

step "zonal cache flips bytes in objects: verified, fetched from the origin"
proxy_set flip=1 path=/objects/
run_case lying "$ZONAL,$ORIGIN"
[ "$(stat_of "$W/lying.json" chunk_bad)" -gt 0 ] || fail "lying: no corrupt chunk seen (did the proxy flip?)"
[ "$(store_field "$W/lying.json" 1 gets)" -gt 0 ] || fail "lying: the origin served nothing"
proxy_set

step "a comma inside a store's location: %2C"
mkdir -p "$W/with,comma"
cp -a "$S/." "$W/with,comma/"
run_case comma "$DEAD,$W/with%2Ccomma"

step "--trust through a list, cfs-ls, cfs-load, mount(8) form"
proxy_set status=404 path=/sigs/
mount_bg "$m" "$ZONAL,$ORIGIN" app --cache "$W/cache-trust" --trust "$W/k.pub"
[ "$(cat "$m/etc/motd")" = "hello from the origin" ] || fail "--trust through a list"
unmount_wait "$m" "$MOUNT_PID"
proxy_set
"$CFS_LS" "$DEAD,$ORIGIN" app /etc >"$W/ls.out" 2>"$W/ls.err" || fail "cfs-ls of a list: $(cat "$W/ls.err")"
grep -q "/etc/motd" "$W/ls.out" || fail "cfs-ls of a list lists no /etc/motd"
mkdir -p "$W/model"
"$CFS_MKMODEL" --size 2M "$W/model" >/dev/null
"$CFS_PACK" -q --tag model "$W/model" "$S" >/dev/null
timeout 60 "$CFS_LOAD" --target host --verify "$DEAD,$ORIGIN" model model.safetensors >/dev/null 2>"$W/load.err" ||
	fail "cfs-load direct mode from a list: $(cat "$W/load.err")"
mkdir -p "$m"
"$CFS_MOUNT" app "$m" -o "store=$DEAD,store=$ORIGIN,cache=$W/cache-o" >"$W/o.out" 2>&1 ||
	fail "mount(8) form with two store= options: $(cat "$W/o.out")"
MOUNTS+=("$m")
cmp -s "$m/data/big" "$W/src/data/big" || fail "mount(8) form: data/big differs"
mount_stats "$m" "$W/o.json"
[ "$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["stores"]))' "$W/o.json")" -eq 2 ] ||
	fail "mount(8) form: not a list of two stores"
unmount_wait "$m" ""

step "a list is read-only"
rc=0
"$CFS_PACK" -q "$W/src" "$W/empty,$S" >/dev/null 2>"$W/err" || rc=$?
[ "$rc" -ne 0 ] && [ "$rc" -lt 128 ] || fail "cfs-pack into a list exited $rc"
echo "  cfs-pack into a list: $(cat "$W/err")"

echo "PASS"
