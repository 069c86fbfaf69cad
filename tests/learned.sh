#!/usr/bin/env bash
# Learned profiles: a mount leaves what it read in the cache and the store, the next mount with a fresh cache prefetches it, runs merge, a bad one is ignored with one log line, --learn no and an http store write nothing.
#
# Packs a small tree (64 KiB chunks, no prefetch list), mounts it from a
# directory store and reads some files; after the unmount the learned
# profile is in <cache>/learned/<hex>.prof and in store/profiles/<hex>.
# A second mount with a fresh cache finds it and prefetches its chunks
# before anything is read; what that run reads is merged in.  Corrupt and
# hostile profiles (garbage, a wrong header, a line over the limit, chunks
# of another image) never break a mount.  --learn no, -o learn=no and an
# http:// store (nginx) write nothing.
# Env: CFS_PACK, CFS_MOUNT (set by tests/meson.build).
set -euo pipefail

source "$(dirname "$0")/lib.sh"

need_fuse
need_nginx
: "${CFS_PACK:?}" "${CFS_MOUNT:?}"

make_workdir learned
m=$W/mnt
KiB=1024

src=$W/src
mkdir -p "$src/sub"
for f in a b c d; do
	printf 'file %s\n' "$f" > "$src/$f.txt"
done
head -c $((300 * KiB)) /dev/urandom > "$src/big.bin"
head -c $((200 * KiB)) /dev/urandom > "$src/sub/other.bin"

timeout 120 "$CFS_PACK" -q --chunk-size 64K --tag app "$src" "$W/store" > "$W/pack.out" ||
	fail "cfs-pack exited $?"
ref=$(ref_of "$W/pack.out")
hex=${ref#sha256:}
sprof=$W/store/profiles/$hex

# run NAME STORE CMD [MOUNT OPTS...]: mounts STORE's app with the cache
# $W/cache-NAME (kept if it exists), log $W/log-NAME, runs CMD, writes the
# live stats to $W/stats-NAME.json, unmounts (the daemon must exit 0).
run() {
	local name=$1 store=$2 cmd=$3
	shift 3
	mount_bg "$m" "$store" app --cache "$W/cache-$name" --log "$W/log-$name" -v "$@"
	local pid=$MOUNT_PID
	$cmd
	mount_stats "$m" "$W/stats-$name.json"
	unmount_clean "$m" "$pid"
}

check() {
	local f
	for f in "$@"; do
		timeout 30 cat "$m/$f" | cmp - "$src/$f" || fail "$f: wrong bytes"
	done
}

read_ab() { check a.txt big.bin; }
read_c() { check c.txt; }
read_all() { check a.txt b.txt c.txt d.txt big.bin sub/other.bin; }
nothing() { :; }

# files_of PROFILE: its file records' paths, sorted.
files_of() { awk '$1 == "f" { print $3 }' "$1" | sort | tr '\n' ' '; }

step "first mount: reads a.txt and big.bin; the unmount leaves the learned profile"
run one "$W/store" read_ab
lprof=$W/cache-one/learned/$hex.prof
[ -f "$lprof" ] || fail "no learned profile in the cache: $(ls -R "$W/cache-one" | head)"
[ -f "$sprof" ] || fail "no learned profile in the store"
cmp "$lprof" "$sprof" || fail "the cache's and the store's learned profiles differ"
head -n 1 "$sprof" | grep -qx 'cfs-profile 1' || fail "no profile header: $(head -n 2 "$sprof")"
grep -qx "image $ref" "$sprof" || fail "no image line"
[ "$(files_of "$sprof")" = "/a.txt /big.bin " ] || fail "files learned: $(files_of "$sprof")"
# 300 KiB in 64 KiB chunks: 5, and a.txt's.
[ "$(grep -c '^c ' "$sprof")" -ge 6 ] || fail "chunks learned: $(grep -c '^c ' "$sprof")"
grep -q 'learned profile: .* records' "$W/log-one" || fail "no log line for the write: $(cat "$W/log-one")"
[ "$(stat_of "$W/stats-one.json" learned_chunks)" -eq 0 ] || fail "first mount used a learned list"
grep -q '"learned":"none"' "$W/stats-one.json" || fail "first mount: learned is not none"
ls "$W/cache-one/learned" | grep -q tmp && fail "a temporary file is left in the cache"

step "second mount, fresh cache: the store's profile is prefetched before any read"
nchunks=$(grep -c '^c ' "$sprof")
prefetched() {
	mount_stats "$m" "$W/live.json"
	[ "$(stat_of "$W/live.json" prefetch_done)" -ge "$nchunks" ]
}
before_read() {
	wait_until 10 prefetched || fail "prefetch_done short of $nchunks: $(cat "$W/live.json")"
	grep -q '"learned":"store"' "$W/live.json" || fail "learned list not from the store: $(cat "$W/live.json")"
	[ "$(stat_of "$W/live.json" learned_chunks)" -eq "$nchunks" ] ||
		fail "learned_chunks $(stat_of "$W/live.json" learned_chunks), the profile has $nchunks"
	local fetched
	fetched=$(stat_of "$W/live.json" chunk_fetches)
	read_ab
	mount_stats "$m" "$W/live.json"
	[ "$(stat_of "$W/live.json" chunk_fetches)" -eq "$fetched" ] ||
		fail "reading the learned files fetched $(($(stat_of "$W/live.json" chunk_fetches) - fetched)) more chunks"
	read_c
}
run two "$W/store" before_read
echo "   $(grep -o 'learned profile[^"]*' "$W/log-two" | tr '\n' ';')"

step "two runs merge: the records of both"
[ "$(files_of "$sprof")" = "/a.txt /big.bin /c.txt " ] || fail "merged files: $(files_of "$sprof")"
cmp "$W/cache-two/learned/$hex.prof" "$sprof" || fail "cache and store differ after the merge"
dups=$(awk '$1 == "c" { print $3 }' "$sprof" | sort | uniq -d)
[ -z "$dups" ] || fail "a chunk twice in the merged profile: $dups"
awk '$1 == "f" || $1 == "c" { if ($2 < last) exit 1; last = $2 }' "$sprof" ||
	fail "merged profile not in time order"

step "the local copy comes first"
run two "$W/store" nothing
grep -q '"learned":"cache"' "$W/stats-two.json" || fail "not the cache's: $(cat "$W/stats-two.json")"

# hostile NAME WHERE: writes a bad learned profile of kind NAME to WHERE
# (a path), mounts with a fresh cache, reads everything, and checks one log
# line names the bad copy and that the mount worked.
hostile() {
	local name=$1 where=$2 log=$W/log-bad-$1
	rm -rf "$W/cache-bad-$name"
	mkdir -p "$(dirname "$where")"
	case $name in
	garbage) head -c 5000 /dev/urandom > "$where" ;;
	header) printf 'cfs-profile 2\nf 1 /a.txt\n' > "$where" ;;
	longline) { echo 'cfs-profile 1'; printf 'f 1 /'; head -c 70000 /dev/zero | tr '\0' a; echo; } > "$where" ;;
	foreign)
		{
			echo 'cfs-profile 1'
			for ((i = 0; i < 50; i++)); do
				printf 'f %d /nowhere/%d\nc %d %064x /nowhere/%d 0\n' "$i" "$i" "$i" "$i" "$i"
			done
		} > "$where"
		;;
	esac
	cp "$where" "$W/bad-$name"
	run "bad-$name" "$W/store" read_all
	cat "$W/stats-bad-$name.json" > /dev/null
	[ "$(stat_of "$W/stats-bad-$name.json" read_errors)" -eq 0 ] || fail "$name: read errors"
	[ "$(stat_of "$W/stats-bad-$name.json" learned_chunks)" -eq 0 ] || fail "$name: chunks listed"
	if [ "$name" != foreign ]; then
		n=$(grep -c -F "$where" "$log" || true)
		[ "$n" -eq 1 ] || fail "$name: $n log lines name $where, want 1: $(cat "$log")"
		echo "   $name: $(grep -F "$where" "$log")"
	fi
	# The bad copy is replaced by this run's; nothing of another image is kept.
	head -n 1 "$where" | grep -qx 'cfs-profile 1' || fail "$name: the bad copy was not replaced"
	[ "$(files_of "$where")" = "/a.txt /b.txt /big.bin /c.txt /d.txt /sub/other.bin " ] ||
		fail "$name: files in the new copy: $(files_of "$where")"
}

step "corrupt and hostile learned profiles in the store: ignored, one log line"
for kind in garbage header longline foreign; do
	hostile "$kind" "$sprof"
done
[ "$(files_of "$sprof")" = "$(files_of "$W/cache-bad-foreign/learned/$hex.prof")" ] ||
	fail "store and cache differ"

step "a bad copy in the cache: one line, then the store's is used"
good=$(cat "$sprof")
rm -rf "$W/cache-bad-local"
mkdir -p "$W/cache-bad-local/learned"
printf 'cfs-profile 1\nf x /a.txt\n' > "$W/cache-bad-local/learned/$hex.prof"
check_store_used() {
	wait_until 10 prefetched || fail "prefetch_done short: $(cat "$W/live.json")"
	grep -q '"learned":"store"' "$W/live.json" || fail "not the store's: $(cat "$W/live.json")"
	read_all
}
nchunks=$(grep -c "^c " <<< "$good")
run bad-local "$W/store" check_store_used
[ "$(grep -c "learned/$hex.prof:2: bad time" "$W/log-bad-local")" -eq 1 ] ||
	fail "no single line for the bad local copy: $(cat "$W/log-bad-local")"

step "--learn no and -o learn=no: nothing read or written"
cp -a "$W/store" "$W/store-no"
rm -rf "$W/store-no/profiles"
run no "$W/store-no" read_all --learn no
run no2 "$W/store-no" read_all -o learn=no
[ ! -e "$W/store-no/profiles" ] || fail "--learn no wrote to the store"
[ ! -e "$W/cache-no/learned" ] && [ ! -e "$W/cache-no2/learned" ] || fail "--learn no wrote to the cache"
grep -q '"learned":"none"' "$W/stats-no.json" || fail "--learn no: learned is not none"
rc=0
"$CFS_MOUNT" -f --learn maybe "$W/store" app "$m" 2> "$W/err" || rc=$?
[ "$rc" -eq 1 ] && grep -q -- "--learn: expected yes or no" "$W/err" || fail "--learn maybe: rc $rc: $(cat "$W/err")"

step "--learn-to DIR: profiles there, not in the store"
run to "$W/store-no" read_ab --learn-to "$W/fleet"
[ -f "$W/fleet/profiles/$hex" ] || fail "nothing in --learn-to: $(find "$W/fleet" | head)"
[ ! -e "$W/store-no/profiles" ] || fail "--learn-to wrote to the image's store"
rm -rf "$W/cache-to"
run to "$W/store-no" nothing --learn-to "$W/fleet"
grep -q '"learned":"store"' "$W/stats-to.json" || fail "--learn-to's profile not used: $(cat "$W/stats-to.json")"

step "http:// store: read-only, nothing written, no error"
start_nginx "$W/store-no"
run http "http://127.0.0.1:$NGINX_PORT/" read_all
[ ! -e "$W/store-no/profiles" ] || fail "an http store was written to"
grep -vE '^(GET|HEAD) ' "$NGINX_ACCESS_LOG" && fail "requests other than GET and HEAD to nginx"
grep -iE 'error|warn' "$W/log-http" && fail "the http mount logged a problem"
[ -f "$W/cache-http/learned/$hex.prof" ] || fail "no learned profile in the cache of the http mount"

step "--learn-window 1: the profile is written when the window ends, while mounted"
# (--learn-to a new place: no earlier run's records to merge with.)
mount_bg "$m" "$W/store" app --cache "$W/cache-win" --log "$W/log-win" -v --learn-window 1 \
	--learn-to "$W/learn-win"
win_pid=$MOUNT_PID
check a.txt
for _ in $(seq 100); do
	[ -f "$W/cache-win/learned/$hex.prof" ] && break
	sleep 0.1
done
[ -f "$W/cache-win/learned/$hex.prof" ] || fail "no learned profile 10 s into a 1 s window"
grep -q ' /a.txt$' "$W/cache-win/learned/$hex.prof" ||
	fail "the window's profile lacks a.txt: $(cat "$W/cache-win/learned/$hex.prof")"
check c.txt
unmount_clean "$m" "$win_pid"
grep -q ' /c.txt$' "$W/cache-win/learned/$hex.prof" &&
	fail "a read after the window was learned"
timeout 10 "$CFS_MOUNT" --learn-window 0 "$W/store" app "$m" 2> "$W/err-win.out" &&
	fail "--learn-window 0 mounted"
[ "$(wc -l < "$W/err-win.out")" -eq 1 ] && grep -q 'learn-window' "$W/err-win.out" ||
	fail "--learn-window 0: $(cat "$W/err-win.out")"

step "a writer that died mid-write: its temporary file goes with the next save"
mkdir -p "$W/cache-sweep/learned"
sh -c 'exit 0' &
dead=$!
wait "$dead"
stale="$W/cache-sweep/learned/$hex.prof.tmp.$dead.$dead"
echo partial > "$stale"
run sweep "$W/store" read_c
[ ! -e "$stale" ] || fail "a dead writer's temporary file is still there"
[ -f "$W/cache-sweep/learned/$hex.prof" ] || fail "no learned profile after the sweep"
grep -q 'removed 1 temporary file of writers that died' "$W/log-sweep" ||
	fail "the sweep was not logged: $(grep learned "$W/log-sweep")"

echo "PASS"
