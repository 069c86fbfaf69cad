#!/usr/bin/env bash
# Access profiles: cfs-mount --record writes the files and chunks first read, in order; cfs-profile merges and shows them.
#
# Packs a small tree (64 KiB chunks), mounts it twice with --record reading
# files in two known orders, checks each profile (order, chunks of a
# multi-chunk file, an escaped name, a save on SIGUSR1), merges them and
# checks the union and its order, and that a bad profile is refused with a
# clear one-line message.
# Env: CFS_PACK, CFS_MOUNT, CFS_PROFILE (set by tests/meson.build).
set -euo pipefail

source "$(dirname "$0")/lib.sh"

need_fuse
: "${CFS_PACK:?}" "${CFS_MOUNT:?}" "${CFS_PROFILE:?}"

make_workdir record
m=$W/mnt
MOUNTS+=("$m")
KiB=1024

src=$W/src
mkdir -p "$src/sub"
for f in a c d; do
	printf 'file %s\n' "$f" > "$src/$f.txt"
done
printf 'spaced\n' > "$src/sub/b file.txt"
head -c $((300 * KiB)) /dev/urandom > "$src/big.bin"

timeout 120 "$CFS_PACK" -q --chunk-size 64K --tag rec "$src" "$W/store" > "$W/pack.out" ||
	fail "cfs-pack exited $?"

# record_run NAME CMD...: mounts with --record $W/NAME.prof, runs CMD,
# unmounts and waits for the daemon's clean exit.
record_run() {
	local name=$1
	shift
	mount_bg "$m" "$W/store" rec --cache "$W/cache-$name" --record "$W/$name.prof"
	[ -s "$W/$name.prof" ] || fail "no profile written at mount"
	DAEMON=$MOUNT_PID
	# One read at a time: the kernel's readahead sends a file's next
	# reads together, and two daemon threads may take them in either
	# order, which the order checks below would see.
	local ra
	ra=/sys/class/bdi/$(mountpoint -d "$m")/read_ahead_kb
	[ ! -w "$ra" ] || echo 0 > "$ra"
	"$@"
	unmount_clean "$m" "$DAEMON"
	echo "--- $name.prof"
	cat "$W/$name.prof"
}

read_files() {
	local f
	for f in "$@"; do
		timeout 30 cat "$m/$f" | cmp - "$src/$f" || fail "$f differs"
		sleep 0.15
	done
}

# files_of PROFILE: its file records' paths, in order.
files_of() { awk '$1 == "f" { print $3 }' "$1"; }

run1() {
	read_files c.txt "sub/b file.txt" big.bin
	# SIGUSR1 saves the profile while mounted.
	kill -USR1 "$DAEMON"
	wait_until 5 grep -q '^f [0-9]* /big.bin$' "$W/run1.prof" || fail "SIGUSR1 did not save the profile"
	read_files a.txt
}
record_run run1 run1

head -n 1 "$W/run1.prof" | grep -qx 'cfs-profile 1' || fail "run1: no header"
grep -qx "image $(ref_of "$W/pack.out")" "$W/run1.prof" || fail "run1: no image line"
got=$(files_of "$W/run1.prof" | tr '\n' ' ')
[ "$got" = "/c.txt /sub/b\\x20file.txt /big.bin /a.txt " ] || fail "run1: files in order '$got'"
# 300 KiB in 64 KiB chunks: 5 chunks, each once, by increasing offset.
big=$(awk '$1 == "c" && $4 == "/big.bin" { print $5 }' "$W/run1.prof")
[ "$(wc -l <<< "$big")" -eq 5 ] || fail "run1: big.bin has $(wc -l <<< "$big") chunk records, want 5"
sort -n -c <<< "$big" || fail "run1: big.bin's chunks out of order"
[ "$(head -n 1 <<< "$big")" -eq 0 ] || fail "run1: big.bin's first chunk is not at 0"
dups=$(awk '$1 == "c" { print $3 }' "$W/run1.prof" | sort | uniq -d)
[ -z "$dups" ] || fail "run1: a chunk recorded twice: $dups"
# Every chunk record follows its file's record.
awk '$1 == "f" { seen[$3] = 1 } $1 == "c" && !seen[$4] { exit 1 }' "$W/run1.prof" ||
	fail "run1: a chunk record before its file's"
# Times never go back.
awk '$1 == "f" || $1 == "c" { if ($2 < last) exit 1; last = $2 }' "$W/run1.prof" ||
	fail "run1: times go back"

record_run run2 read_files d.txt a.txt c.txt
got=$(files_of "$W/run2.prof" | tr '\n' ' ')
[ "$got" = "/d.txt /a.txt /c.txt " ] || fail "run2: files in order '$got'"

echo "# merge"
"$CFS_PROFILE" merge -o "$W/merged.prof" "$W/run1.prof" "$W/run2.prof" || fail "merge exited $?"
cat "$W/merged.prof"
got=$(files_of "$W/merged.prof" | sort | tr '\n' ' ')
[ "$got" = "/a.txt /big.bin /c.txt /d.txt /sub/b\\x20file.txt " ] || fail "merged files '$got'"
awk '$1 == "f" || $1 == "c" { if ($2 < last) exit 1; last = $2 }' "$W/merged.prof" ||
	fail "merged: not ordered by time"
dups=$(awk '$1 == "c" { print $3 }' "$W/merged.prof" | sort | uniq -d)
[ -z "$dups" ] || fail "merged: a chunk twice: $dups"
nchunks=$(cat "$W/run1.prof" "$W/run2.prof" | awk '$1 == "c" { print $3 }' | sort -u | wc -l)
[ "$(grep -c '^c ' "$W/merged.prof")" -eq "$nchunks" ] || fail "merged: not the union of the chunks"
# Each file's time is its earliest in either run.
for f in /a.txt /c.txt; do
	t1=$(awk -v f="$f" '$1 == "f" && $3 == f { print $2 }' "$W/run1.prof")
	t2=$(awk -v f="$f" '$1 == "f" && $3 == f { print $2 }' "$W/run2.prof")
	tm=$(awk -v f="$f" '$1 == "f" && $3 == f { print $2 }' "$W/merged.prof")
	[ "$tm" -eq "$((t1 < t2 ? t1 : t2))" ] || fail "merged: $f at $tm, runs at $t1 and $t2"
done

echo "# show"
"$CFS_PROFILE" show -n 3 "$W/merged.prof" > "$W/show.out" || fail "show exited $?"
cat "$W/show.out"
grep -qx 'files: 5' "$W/show.out" || fail "show: files"
grep -qx "chunks: $nchunks" "$W/show.out" || fail "show: chunks"
grep -q '^span_ms: ' "$W/show.out" || fail "show: span"
grep -q 'more$' "$W/show.out" || fail "show: -n 3 shows everything"

echo "# bad input"
printf 'not a profile\n' > "$W/bad.prof"
rc=0
"$CFS_PROFILE" show "$W/bad.prof" > /dev/null 2> "$W/err" || rc=$?
cat "$W/err"
[ "$rc" -eq 1 ] || fail "show of a bad profile exited $rc, want 1"
[ "$(wc -l < "$W/err")" -eq 1 ] || fail "show of a bad profile: not one line of error"
grep -q "bad.prof:1: not a cfs profile" "$W/err" || fail "unclear error: $(cat "$W/err")"
rc=0
"$CFS_PROFILE" merge -o "$W/x.prof" "$W/run1.prof" "$W/bad.prof" 2> "$W/err" || rc=$?
[ "$rc" -eq 1 ] || fail "merge with a bad input exited $rc, want 1"
[ ! -e "$W/x.prof" ] || fail "merge with a bad input wrote its output"
rc=0
"$CFS_PROFILE" merge "$W/run1.prof" 2> /dev/null || rc=$?
[ "$rc" -eq 2 ] || fail "merge without -o exited $rc, want 2"
rc=0
"$CFS_MOUNT" -f --record /nonexistent/dir/p "$W/store" rec "$m" 2> "$W/err" || rc=$?
[ "$rc" -eq 1 ] || fail "--record to a bad path exited $rc, want 1"
grep -q -- '--record' "$W/err" || fail "--record to a bad path: $(cat "$W/err")"
mountpoint -q "$m" && fail "mounted despite a bad --record path"

echo "PASS"
