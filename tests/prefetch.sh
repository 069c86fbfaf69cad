#!/usr/bin/env bash
# Profile-guided layout and prefetch: --profile repacks identically with a prefetch list, --add-profile adds one without chunks, the mount prefetches it under concurrent reads, and a corrupt list never fails a read.
#
# Env: CFS_PACK, CFS_MOUNT, CFS_LS, CFS_MKTREE, CFS_TREECMP (tests/meson.build).
# Exit 77 without FUSE or root (the tree has devices and owned files).
set -euo pipefail

source "$(dirname "$0")/lib.sh"

need_fuse
need_root "the test tree has devices and files of other owners"
: "${CFS_PACK:?}" "${CFS_MOUNT:?}" "${CFS_LS:?}" "${CFS_MKTREE:?}" "${CFS_TREECMP:?}"

make_workdir prefetch
m=$W/mnt
MOUNTS+=("$m")
src=$W/src

step "tree"
"$CFS_MKTREE" "$src" --big-mb 8 --small-count 300 >/dev/null
[ -f "$src/files/big.bin" ] || fail "cfs-mktree made no files/big.bin"

# 20 small files spread over many/, each under the 64 KiB group limit.
small=()
for f in $(cd "$src" && find many -maxdepth 1 -type f -name 'f*' -size -60k | sort); do
	small+=("$f")
done
[ "${#small[@]}" -ge 100 ] || fail "only ${#small[@]} small files in many/"
picked=()
step_n=$((${#small[@]} / 20))
for ((i = 0; i < 20; i++)); do
	picked+=("${small[$((i * step_n + step_n / 2))]}")
done

# objects STORE: the number of objects in a directory store.
objects() { find "$1/objects" -type f | wc -l; }

step "pack without a profile"
timeout 300 "$CFS_PACK" -q "$src" "$W/plain" > "$W/plain.out" || fail "cfs-pack exited $?"
ref1=$(ref_of "$W/plain.out")
"$CFS_LS" --info "$W/plain" "$ref1" > "$W/info1" || fail "cfs-ls --info failed"
grep -qx 'prefetch none' "$W/info1" || fail "a plain image has a prefetch list: $(cat "$W/info1")"

step "profile (by hand): 20 small files in first-read order, then a big file"
{
	echo "cfs-profile 1"
	echo "image $ref1"
	t=1000
	# In reverse name order: the layout must follow the profile, not the names.
	for ((i = ${#picked[@]} - 1; i >= 0; i--)); do
		echo "f $t /${picked[$i]}"
		t=$((t + 10))
	done
	echo "f $t /files/big.bin"
	# A chunk record: the digest belongs to another image; the path and
	# offset say which chunk of this one.
	echo "c $((t + 5)) $(printf '%064d' 0) /files/big.bin 5000000"
} > "$W/profile"

step "pack with --profile"
timeout 300 "$CFS_PACK" --profile "$W/profile" "$src" "$W/prof" > "$W/prof.out" 2> "$W/prof.err" ||
	fail "cfs-pack --profile exited $?: $(cat "$W/prof.err")"
cat "$W/prof.err"
ref2=$(ref_of "$W/prof.out")
"$CFS_LS" --info "$W/prof" "$ref2" > "$W/info2" || fail "cfs-ls --info failed"
cat "$W/info2"
n2=$(awk '$1 == "prefetch_chunks" { print $2 }' "$W/info2")
[ -n "$n2" ] && [ "$n2" -ge 3 ] || fail "prefetch list of '$n2' chunks: the small files' groups, big.bin's first chunk and the one at 5 MB"
[ "$n2" -le 22 ] || fail "prefetch list of $n2 chunks for 21 files and one chunk record"

# mount_start NAME STORE IMAGE ARGS...: foreground mount with a fresh cache.
mount_start() {
	local name=$1 store=$2 image=$3
	shift 3
	rm -rf "$W/cache-$name"
	mount_bg "$m" "$store" "$image" --cache "$W/cache-$name" --log "$W/log-$name" \
		--stats-file "$W/stats-$name.json" "$@"
	MPID=$MOUNT_PID
}

mount_stop() {
	unmount_clean "$m" "$MPID"
}

# prefetched: the live stats of $m (in $W/live.json) count the whole list
# of $n2 chunks prefetched.
prefetched() {
	mount_stats "$m" "$W/live.json"
	[ "$(stat_of "$W/live.json" prefetch_done)" -ge "$n2" ]
}

step "mount with the prefetch list, read everything at once (demand reads race prefetch)"
mount_start pf "$W/prof" "$ref2" --prefetch list
compare --approx-blocks "$src" "$m"
wait_until 10 prefetched || true
done_n=$(stat_of "$W/live.json" prefetch_done)
queued=$(stat_of "$W/live.json" prefetch_queued)
echo "prefetch: queued $queued, done $done_n of a list of $n2"
[ "$queued" -eq "$n2" ] || fail "prefetch_queued=$queued, list of $n2"
[ "$done_n" -eq "$n2" ] || fail "prefetch_done=$done_n, list of $n2"
[ "$(stat_of "$W/live.json" read_errors)" -eq 0 ] || fail "read errors"
mount_stop

step "mount with the list and no reads: prefetch alone fetches it"
mount_start pf2 "$W/prof" "$ref2" --prefetch list
wait_until 10 prefetched || true
[ "$(stat_of "$W/live.json" prefetch_done)" -eq "$n2" ] || fail "prefetch_done: $(cat "$W/live.json")"
# What start-up reads is now in the cache: reading it fetches nothing more.
# (The guesses of those reads may fetch their neighbours, in the pool:
# demand_fetches counts the reads that had to fetch for themselves.)
before=$(stat_of "$W/live.json" demand_fetches)
for f in "${picked[@]}"; do cat "$m/$f" > /dev/null; done
mount_stats "$m" "$W/live.json"
after=$(stat_of "$W/live.json" demand_fetches)
[ "$after" -eq "$before" ] || fail "reading the profiled files after prefetch fetched $((after - before)) chunks"
mount_stop

# fetches_for STORE IMAGE: chunks fetched to read the 20 files, no prefetch.
fetches_for() {
	mount_start "count-$1" "$W/$1" "$2" --prefetch none --readahead 0
	for f in "${picked[@]}"; do
		cmp "$m/$f" "$src/$f" || fail "$f differs"
	done
	mount_stats "$m" "$W/live.json"
	mount_stop
	stat_of "$W/live.json" chunk_fetches
}
step "layout: the profiled files in fewer chunks"
c1=$(fetches_for plain "$ref1")
c2=$(fetches_for prof "$ref2")
echo "chunks to read the 20 files: $c1 plain, $c2 profile-packed"
[ "$c2" -lt "$c1" ] || fail "profile-packed image needs $c2 chunk fetches, plain $c1"

step "--add-profile: a list for the plain image, no chunk written"
o1=$(objects "$W/plain")
timeout 120 "$CFS_PACK" --add-profile "$W/profile" --tag withpf "$W/plain" "$ref1" \
	> "$W/add.out" 2> "$W/add.err" || fail "cfs-pack --add-profile exited $?: $(cat "$W/add.err")"
ref3=$(ref_of "$W/add.out")
[ "$ref3" != "$ref1" ] || fail "--add-profile gave the same reference"
o2=$(objects "$W/plain")
[ "$o2" -eq $((o1 + 2)) ] || fail "--add-profile wrote $((o2 - o1)) objects, expected 2 (list and index)"
"$CFS_LS" --info "$W/plain" withpf > "$W/info3" || fail "cfs-ls --info withpf failed"
n3=$(awk '$1 == "prefetch_chunks" { print $2 }' "$W/info3")
[ -n "$n3" ] && [ "$n3" -ge 3 ] || fail "added list of '$n3' chunks"
mount_start add "$W/plain" withpf
compare --approx-blocks "$src" "$m"
mount_stop

step "corrupt prefetch list object: mount and reads still work, one log line"
pl=$(awk '$1 == "prefetch" { print $2 }' "$W/info2")
hex=${pl#sha256:}
obj=$W/prof/objects/${hex:0:2}/$hex
[ -f "$obj" ] || fail "prefetch list object $obj missing"
chmod u+w "$obj" 2>/dev/null || true
printf 'garbage, not a zstd frame' > "$obj"
mount_start bad "$W/prof" "$ref2" --prefetch list
compare --approx-blocks "$src" "$m"
sleep 0.5
mount_stop
grep -q 'prefetch' "$W/log-bad" || fail "no log line for the corrupt list: $(cat "$W/log-bad")"
grep -c 'prefetch' "$W/log-bad" | grep -qx 1 || fail "more than one prefetch log line: $(cat "$W/log-bad")"
echo "log: $(grep prefetch "$W/log-bad")"

echo "PASS"
