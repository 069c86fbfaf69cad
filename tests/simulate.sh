#!/usr/bin/env bash
# cfs-simulate: a crafted trace replayed on a small image gives the rounds, requests, bytes and times the link model's arithmetic says.
#
# Packs a tree of known layout (64 KiB chunks: big.bin 5 chunks, lib/libx.so
# 4, lib/huge.dat 4, bin/tool 2, six small files in one group chunk), takes
# every chunk's stored size from the store's objects, and replays a trace
# that reads big.bin's chunks 0 and 2, two small files, libx.so's chunk 0
# and, by digest only, big.bin's chunk 4.  Checks: demand blocks once per
# distinct chunk and fetches exactly their stored bytes, in the time the
# model gives (mount, RTT and transfer of each, think time from the trace);
# wholefile and dir need fewer rounds; the wholefile cap spares big.bin but
# not the ELF libx.so; a total-rate cap shared by parallel transfers; the
# CPU cost of a fetched byte; the stream stays within its budget and the
# image; enough think time hides every fetch of stream and profile; bad
# input is refused with one line.  No mount.
# Env: CFS_PACK, CFS_LS, CFS_SIMULATE (set by tests/meson.build).
set -euo pipefail

source "$(dirname "$0")/lib.sh"

: "${CFS_PACK:?}" "${CFS_LS:?}" "${CFS_SIMULATE:?}"

make_workdir simulate
KiB=1024
src=$W/src
mkdir -p "$src/a" "$src/b" "$src/bin" "$src/lib"
head -c $((300 * KiB)) /dev/urandom > "$src/big.bin"
head -c $((200 * KiB)) /dev/urandom > "$src/lib/libx.so"
head -c $((200 * KiB)) /dev/urandom > "$src/lib/huge.dat"
head -c $((100 * KiB)) /dev/urandom > "$src/bin/tool"
# Fixed contents: the small files' group boundaries depend on them.
for f in a/s1 a/s2 a/s3 b/t1 b/t2 r; do
	printf 'small file %s\n' "$f" > "$src/$f.txt"
done
timeout 60 "$CFS_PACK" -q --chunk-size 64K --tag t "$src" "$W/store" > "$W/pack.out" ||
	fail "cfs-pack exited $?"
ref=$(ref_of "$W/pack.out")
chunks=$("$CFS_LS" --info "$W/store" t | awk '$1 == "chunks" { print $2 }')
[ "$chunks" = 16 ] || fail "image has $chunks chunks, the test's layout wants 16 (one small-file group)"

# digest FILE N: SHA-256 of 64 KiB chunk N of FILE, the chunk object's name.
digest() { dd if="$1" bs=64K skip="$2" count=1 2>/dev/null | sha256sum | cut -c1-64; }
# size HEX: the stored size of object HEX.
size() { stat -c %s "$W/store/objects/${1:0:2}/$1"; }

declare -A known=()
big=()
for i in 0 1 2 3 4; do
	d=$(digest "$src/big.bin" "$i")
	big+=("$(size "$d")")
	known[$d]=1
done
lib=()
for i in 0 1 2 3; do
	d=$(digest "$src/lib/libx.so" "$i")
	lib+=("$(size "$d")")
	known[$d]=1
	known[$(digest "$src/lib/huge.dat" "$i")]=1
done
for i in 0 1; do
	known[$(digest "$src/bin/tool" "$i")]=1
done
idx=$(size "${ref#sha256:}")
known[${ref#sha256:}]=1
# The one object left is the small files' group chunk.
group=
for o in "$W"/store/objects/*/*; do
	[ -n "${known[$(basename "$o")]:-}" ] || group=$(stat -c %s "$o")
done
[ -n "$group" ] || fail "no group chunk object found"
[ "${big[0]}" = "${big[1]}" ] && [ "${big[0]}" = "${big[3]}" ] ||
	fail "big.bin's full chunks differ in stored size: ${big[*]}"

zero=$(printf '0%.0s' $(seq 64))
cat > "$W/t.prof" <<EOF
cfs-profile 1
image $ref
f 1000 /big.bin
c 1000 $(digest "$src/big.bin" 0) /big.bin 0
c 2000 $(digest "$src/big.bin" 2) /big.bin 131072
f 3000 /a/s1.txt
c 3000 $zero /a/s1.txt 0
f 4000 /a/s2.txt
c 4000 $zero /a/s2.txt 0
f 5000 /lib/libx.so
c 5000 $zero /lib/libx.so 0
c 6000 $(digest "$src/big.bin" 4) /gone 0
EOF
cat > "$W/one.prof" <<EOF
cfs-profile 1
f 0 /big.bin
c 0 $zero /big.bin 0
EOF

# sim POLICY TRACE ARGS...: the policy's JSON line.
sim() {
	local pol=$1 trace=$2
	shift 2
	"$CFS_SIMULATE" --store "$W/store" --image t --trace "$trace" --policy "$pol" --json "$@" ||
		fail "cfs-simulate --policy $pol $* exited $?"
}
# field NAME LINE: a number of a JSON line.
field() { sed -n "s/.*\"$1\":\([^,}]*\).*/\1/p" <<< "$2"; }
# near A B: |A - B| < 0.001 (milliseconds).
near() { awk -v a="$1" -v b="$2" 'BEGIN { exit !((a - b) ^ 2 < 1e-6) }'; }
expect() { # expect WHAT GOT WANT
	[ "$2" = "$3" ] || fail "$1: got $2, want $3"
}

# A plain link: 20 ms, 1 MB/s per request, no total cap, no CPU cost.
plain=(--rtt-ms 20 --conn-rate 1e6 --total-rate 0 --cpu-ns-per-byte 0)
mount_ms=$(awk -v i="$idx" 'BEGIN { printf "%.3f", 40 + i / 1e3 }')

step "demand: one round per distinct chunk, their bytes, the model's time"
d=$(sim demand "$W/t.prof" "${plain[@]}" --think-us 0)
echo "$d"
expect "trace chunks" "$(field trace_chunks "$d")" 5
expect "unmapped records" "$(field trace_unmapped "$d")" 0
expect "demand rounds" "$(field rounds "$d")" 5
expect "demand blocks" "$(field blocks "$d")" 5
expect "demand requests" "$(field requests "$d")" 5
touched=$((big[0] + big[2] + group + lib[0] + big[4]))
expect "demand bytes" "$(field bytes_fetched "$d")" "$touched"
expect "trace bytes" "$(field trace_bytes "$d")" "$touched"
near "$(field mount_ms "$d")" "$mount_ms" || fail "mount_ms $(field mount_ms "$d"), want $mount_ms"
want=$(awk -v m="$mount_ms" -v b="$touched" 'BEGIN { print m + 5 * 20 + b / 1e3 }')
near "$(field time_ms "$d")" "$want" || fail "demand time $(field time_ms "$d") ms, want $want"
d2=$(sim demand "$W/t.prof" "${plain[@]}")
near "$(field time_ms "$d2")" "$(awk -v w="$want" 'BEGIN { print w + 6 }')" ||
	fail "demand with the trace's 6 ms of think time: $(field time_ms "$d2") ms, want $want + 6"
near "$(field think_ms "$d2")" 6 || fail "think_ms $(field think_ms "$d2"), want 6"

step "wholefile and dir: fewer rounds; the size cap spares big.bin, not libx.so"
w=$(sim wholefile "$W/t.prof" "${plain[@]}" --think-us 0)
echo "$w"
expect "wholefile rounds" "$(field rounds "$w")" 3
expect "wholefile requests" "$(field requests "$w")" 10
all_big=$((big[0] + big[1] + big[2] + big[3] + big[4]))
all_lib=$((lib[0] + lib[1] + lib[2] + lib[3]))
expect "wholefile bytes" "$(field bytes_fetched "$w")" $((all_big + group + all_lib))
w=$(sim wholefile "$W/t.prof" "${plain[@]}" --think-us 0 --wholefile-max 100K)
expect "capped wholefile rounds" "$(field rounds "$w")" 5
expect "capped wholefile requests" "$(field requests "$w")" 8
dir=$(sim dir "$W/t.prof" "${plain[@]}" --think-us 0)
echo "$dir"
[ "$(field rounds "$dir")" -le 3 ] || fail "dir needs $(field rounds "$dir") rounds, more than wholefile's 3"

step "a total-rate cap shared by parallel transfers, the CPU cost per byte"
# big.bin's 5 chunks at once through 1 MB/s in all: the largest ends when
# all their bytes have passed.
w=$(sim wholefile "$W/one.prof" --rtt-ms 20 --conn-rate 1e6 --total-rate 1e6 --cpu-ns-per-byte 0)
want=$(awk -v m="$mount_ms" -v b="$all_big" 'BEGIN { print m + 20 + b / 1e3 }')
near "$(field time_ms "$w")" "$want" || fail "shared link: $(field time_ms "$w") ms, want $want"
# 1 us per byte: the chunk's job runs alone on a core after its transfer.
d=$(sim demand "$W/one.prof" --rtt-ms 20 --conn-rate 1e6 --total-rate 0 --cpu-ns-per-byte 1000)
want=$(awk -v m="$mount_ms" -v b="${big[0]}" 'BEGIN { print m + 20 + b / 1e3 + b / 1e3 }')
near "$(field time_ms "$d")" "$want" || fail "CPU cost: $(field time_ms "$d") ms, want $want"
near "$(field cpu_ms "$d")" "$(awk -v b="${big[0]}" 'BEGIN { print b / 1e3 }')" ||
	fail "cpu_ms $(field cpu_ms "$d")"

step "stream: within its budget and the image; think time hides every fetch"
image_bytes=$(field image_bytes "$d")
s=$(sim stream "$W/t.prof")
echo "$s"
[ "$(field bytes_fetched "$s")" -le "$image_bytes" ] || fail "stream fetched more than the image"
s=$(sim stream "$W/t.prof" --budget 100000)
[ "$(field bytes_stream "$s")" -le 100000 ] || fail "stream fetched $(field bytes_stream "$s") bytes, budget 100000"
s=$(sim stream "$W/t.prof" "${plain[@]}" --think-us 200000)
expect "stream rounds with 200 ms think" "$(field rounds "$s")" 0
expect "stream bytes with 200 ms think" "$(field bytes_fetched "$s")" "$image_bytes"
d=$(sim demand "$W/t.prof" "${plain[@]}" --think-us 200000)
expect "demand rounds with 200 ms think" "$(field rounds "$d")" 5

step "profile: demand without a list; a list that is the trace hides every fetch"
p=$(sim profile "$W/t.prof" "${plain[@]}" --think-us 0)
d=$(sim demand "$W/t.prof" "${plain[@]}" --think-us 0)
expect "profile without a list" "$(field no_list "$p")" true
expect "profile without a list: time" "$(field time_ms "$p")" "$(field time_ms "$d")"
p=$(sim profile "$W/t.prof" "${plain[@]}" --think-us 200000 --profile "$W/t.prof")
expect "profile rounds" "$(field rounds "$p")" 0
expect "profile bytes" "$(field bytes_fetched "$p")" "$touched"

step "--policy all: a row per policy; bad input refused in one line"
rows=$("$CFS_SIMULATE" --store "$W/store" --image t --trace "$W/t.prof" |
	awk '$1 ~ /^(demand|wholefile|dir|stream|profile)$/' | wc -l)
expect "table rows" "$rows" 5
printf 'not a profile\n' > "$W/bad.prof"
rc=0
"$CFS_SIMULATE" --store "$W/store" --image t --trace "$W/bad.prof" 2> "$W/err" || rc=$?
expect "exit status, bad trace" "$rc" 1
[ "$(wc -l < "$W/err")" = 1 ] && grep -q 'bad.prof:1:' "$W/err" || fail "bad trace: $(cat "$W/err")"
for args in "--policy nope" "--conns 0" "--rtt-ms -1" "--budget 0"; do
	rc=0
	# shellcheck disable=SC2086 # the words are the options
	"$CFS_SIMULATE" --store "$W/store" --image t --trace "$W/t.prof" $args 2> "$W/err" || rc=$?
	expect "exit status, $args" "$rc" 2
	[ "$(wc -l < "$W/err")" = 1 ] || fail "$args: $(cat "$W/err")"
done
echo "PASS"
