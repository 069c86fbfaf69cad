#!/usr/bin/env bash
# Two builds of cfs-mount side by side in one run: did a change make the read
# path slower?  For restructurings that must not change behaviour or speed
# (issue 21), and any change to fs/ or lib/ that says so.
#
# Usage: CFS_MOUNT_A=OLD/cfs-mount [CFS_MOUNT=NEW/cfs-mount] bench/ab-mount.sh [RUNS]
#   (RUNS: runs per case and build, default 5; SIZE: the file, default 1G)
#
# One file of SIZE incompressible deterministic bytes (AES-128-CTR
# keystream), packed by this tree's cfs-pack into a directory store on the
# local disk.  Cases, each a `cat FILE > /dev/null` through a fresh
# foreground mount, page cache dropped first:
#   warm  every chunk already in the disk cache (filled once before the runs)
#   cold  a fresh, empty cache: every chunk read from the store, decoded,
#         verified and written to the cache
# Runs interleave A and B (A warm, A cold, B warm, B cold, then again), so
# that a disk that slows down during the run slows both.  Prints the median
# seconds, GB/s and the daemon's CPU-seconds per GB (utime + stime of
# /proc/PID/stat around the read) of each, and B's time over A's.
#
# Needs root (mounts, drop_caches) and openssl.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

runs=${1:-5}
size=${SIZE:-1G}
a_bin=${CFS_MOUNT_A:?set CFS_MOUNT_A to the cfs-mount to compare with (e.g. a build of main)}
b_bin=$mnt_bin
[ "$(id -u)" -eq 0 ] || die "needs root (mounts, drop_caches)"
need_built "$pack" "$a_bin" "$b_bin"
command -v openssl > /dev/null || die "needs openssl"

BENCH_DIR=${BENCH_DIR:-/var/tmp} make_scratch ab
bytes=$(numfmt --from=iec "$size")
mkdir -p "$W/src" "$W/mnt" "$W/res"
{ openssl enc -aes-128-ctr -pass pass:cfs -nosalt -pbkdf2 -in /dev/zero 2> /dev/null || true; } |
	head -c "$bytes" > "$W/src/big.bin"
"$pack" -q -t big "$W/src" "$W/store" > /dev/null
mp=$W/mnt
MOUNTS+=("$mp")

# one BIN CACHE: "ms cpu-ticks" of a cat through a fresh mount of BIN on CACHE
one() {
	local pid t0 t1 c0 c1
	"$1" -f --cache "$2" "$W/store" big "$mp" &
	pid=$!
	wait_mounted "$pid" || die "$1 did not mount"
	drop_caches
	c0=$(cpu_ticks "$pid")
	t0=$(now)
	cat "$mp/big.bin" > /dev/null
	t1=$(now)
	c1=$(cpu_ticks "$pid")
	fusermount3 -u "$mp"
	wait "$pid" || die "$1 exited $?"
	echo "$(((t1 - t0) / 1000000)) $((c1 - c0))"
}

note "filling the warm cache"
one "$b_bin" "$C/warm" > /dev/null
for ((r = 1; r <= runs; r++)); do
	for v in A B; do
		bin=$a_bin
		[ $v = B ] && bin=$b_bin
		one "$bin" "$C/warm" >> "$W/res/warm-$v"
		rm -rf "$C/cold"
		one "$bin" "$C/cold" >> "$W/res/cold-$v"
	done
	note "round $r of $runs done"
done

echo "A: $a_bin"
echo "B: $b_bin"
printf '%-6s %-3s %9s %7s %9s %6s\n' case bin seconds GB/s cpu-s/GB B/A
for c in warm cold; do
	ta=$(col "$c-A" 1)
	for v in A B; do
		t=$(col "$c-$v" 1)
		cpu=$(col "$c-$v" 2)
		printf '%-6s %-3s %9.3f %7.2f %9.2f %6s\n' "$c" "$v" "$(calc "$t / 1000")" \
			"$(calc "$bytes / 1e6 / $t")" "$(calc "$cpu / $hz / ($bytes / 1e9)")" \
			"$([ $v = B ] && printf '%.2fx' "$(calc "$t / $ta")" || echo -)"
	done
done
