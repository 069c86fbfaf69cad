#!/usr/bin/env bash
# Serving a big file from cfs's local disk cache, beside its peers, in one
# run: how fast a cold sequential read (`cat FILE > /dev/null`, page cache
# dropped) gets the bytes when every chunk is already in cfs's disk cache, and
# what the FUSE daemon spends doing it.
#
# Usage: bench/serving.sh [RUNS]        (RUNS: cold runs per method, default 5)
#
# Data: one file of SIZE (default 1G) incompressible deterministic bytes
# (AES-128-CTR keystream, as bench/remote.sh), on the local disk.  Methods,
# all reading the same bytes:
#   ext4          the plain file on the local disk (no FUSE)
#   squashfuse    mksquashfs of the file's directory (zstd level 3 where
#                 mksquashfs has zstd; the blocks stay stored, the data being
#                 incompressible), mounted with squashfuse -f
#   cfs           cfs-pack into a local directory store, cfs-mount --cache
#                 DIR: a fresh mount per run on a disk cache that holds every
#                 chunk (filled once, by a verifying read, before the runs)
#   cfs-nosplice  the same with CFS_FUSE_SPLICE=0 in cfs-mount's environment
#                 (replies copied through user space; a binary that does not
#                 read the variable measures the same as cfs, and the script
#                 says so)
#   cache-direct  cat of every file under the cfs cache directory, no FUSE:
#                 what reading the cached bytes costs by itself (a ceiling for
#                 cfs; FUSE passthrough could at best reach it): one cat,
#                 one file after another
#   cache-direct-par  the same files, PAR (8) cats at once (xargs -P PAR -n
#                 16): the disk's rate with more than one read in flight, as
#                 cfs's readahead threads have
# Runs are interleaved (every method's run 1, then every method's run 2,
# ...).  Each run: mount (FUSE methods), sync + drop_caches, then the clock
# covers the read alone; the FUSE daemon's CPU seconds (utime + stime of
# /proc/PID/stat) are taken before and after the read.  Mounts are torn down
# after each run (fusermount3 -u, then the daemon is waited for).
#
# Prints a table (median seconds, GB/s = bytes / 1e9 / s, daemon CPU-s per
# GB, seconds / cfs's seconds), writes every run and the medians as JSON
# lines to OUT_JSON, and a bar chart of GB/s to OUT_PNG (bench/plot.sh).
#
# Needs root (mounts, drop_caches).  Installs what is missing with apt-get:
# squashfs-tools, squashfuse, gnuplot-nox, jq.
#
# Env: SIZE (1G; head -c syntax: 256M, 2G), METHODS (the six above, in that
#      order), PAR (8), OUT_JSON (serving.jsonl), OUT_PNG (serving.png; empty: no
#      chart), CFS_PACK, CFS_MOUNT (binaries; default build/...),
#      CFS_MOUNT_OPTS (extra cfs-mount options, e.g. --cache-size 40G for a
#      SIZE near the default 10G bound), BENCH_DIR (logs and results, tmpfs:
#      /dev/shm), CACHE_DIR (data, squashfs image, store and cfs cache: must
#      be the local disk; default /var/tmp).
set -euo pipefail

# shellcheck source=bench/lib.sh disable=SC1091 # clean with and without shellcheck -x
source "$(dirname "$0")/lib.sh"
# shellcheck disable=SC2154 # set by lib.sh
{ top_dir=$top; cfs_pack=$pack; cfs_mount=$mnt_bin; }
runs=${1:-${RUNS:-5}}
size=${SIZE:-1G}
methods=${METHODS:-ext4 squashfuse cfs cfs-nosplice cache-direct cache-direct-par}
par=${PAR:-8}
out_json=${OUT_JSON:-serving.jsonl}
out_png=${OUT_PNG-serving.png}
[[ $runs =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive number, not '$runs'"
for m in $methods; do
	case $m in ext4 | squashfuse | cfs | cfs-nosplice | cache-direct | cache-direct-par) ;; *) die "unknown method $m" ;; esac
done
[[ $out_json == /* ]] || out_json=$PWD/$out_json
[ -z "$out_png" ] || [[ $out_png == /* ]] || out_png=$PWD/$out_png

[ "$(id -u)" = 0 ] || die "needs root (mounts, drop_caches)"
need_built "$cfs_pack" "$cfs_mount"
find_missing mksquashfs:squashfs-tools squashfuse:squashfuse gnuplot:gnuplot-nox jq:jq openssl:openssl \
	fusermount3:fuse3
apt_install_missing

# --- scratch, cleanup --------------------------------------------------------
# $W (tmpfs): logs, results, file lists.  $C (local disk): everything read.
make_scratch serving data
[ "$(stat -f -c %T "$C")" != tmpfs ] || die "$C is on tmpfs; set CACHE_DIR to a directory on the local disk"
mkdir -p "$W/res" "$C/data" "$C/mnt"
: > "$W/order"

dpid= # the running FUSE daemon, started by fuse_start
mp=   # its mountpoint
# fuse_start MOUNTPOINT LOG CMD...: a foreground FUSE daemon in the
# background; returns once MOUNTPOINT is mounted (or the daemon died)
fuse_start() {
	mp=$1
	mkdir -p "$mp"
	MOUNTS+=("$mp")
	"${@:3}" > "$2" 2>&1 &
	dpid=$!
	PIDS+=("$dpid")
	wait_mounted "$dpid" || { echo "mount failed: ${*:3}: $(tail -n 3 "$2")" >&2; fuse_stop; return 1; }
}
# fuse_stop: unmounts $mp and waits for the daemon to exit
fuse_stop() {
	local p keep=()
	[ -n "$mp" ] || return 0
	if mountpoint -q "$mp"; then
		fusermount3 -u "$mp" 2> /dev/null || umount -l "$mp"
	fi
	if [ -n "$dpid" ]; then
		wait "$dpid" 2> /dev/null || true
		for p in "${PIDS[@]}"; do [ "$p" = "$dpid" ] || keep+=("$p"); done
		PIDS=("${keep[@]}")
	fi
	dpid='' mp=''
}


# disk_desc DIR: "/dev/vda ext4, virtio_blk, 256G" for the disk under DIR
disk_desc() {
	local src fs disk drv sz model
	src=$(findmnt -no SOURCE -T "$1" 2> /dev/null || echo '?')
	fs=$(findmnt -no FSTYPE -T "$1" 2> /dev/null || echo '?')
	disk=$(lsblk -no PKNAME "$src" 2> /dev/null | head -n 1 || true)
	[ -n "$disk" ] || disk=${src#/dev/}
	drv=$(basename "$(readlink -f "/sys/block/$disk/device/driver" 2> /dev/null)" 2> /dev/null || true)
	sz=$(lsblk -dno SIZE "/dev/$disk" 2> /dev/null | tr -d ' ' || true)
	model=$(lsblk -dno MODEL "/dev/$disk" 2> /dev/null | sed 's/ *$//' || true)
	printf '%s %s%s%s%s' "$src" "$fs" "${drv:+, $drv}" "${model:+, $model}" "${sz:+, $sz}"
}

# --- data and images ---------------------------------------------------------
keystream() { # deterministic incompressible bytes: AES-128-CTR of zeros
	openssl enc -aes-128-ctr -K "$1" -iv 00000000000000000000000000000000 -nosalt -in /dev/zero 2> /dev/null || true
}
file=$C/data/big.bin
note "making $size of data in $file"
keystream 000102030405060708090a0b0c0d0e0f | head -c "$size" > "$file"
bytes=$(stat -c %s "$file")
[ "$bytes" -gt 0 ] || die "no data made (SIZE=$size)"

note "mksquashfs"
sq_comp=(-comp zstd -Xcompression-level 3)
sq_help=$(mksquashfs -help 2>&1 || true)
grep -qw zstd <<< "$sq_help" || sq_comp=()
mksquashfs "$C/data" "$C/big.sqfs" -noappend -quiet "${sq_comp[@]}" > "$W/mksquashfs.log" 2>&1 ||
	die "mksquashfs failed: $(tail -n 3 "$W/mksquashfs.log")"
sq_ver=$(squashfuse --version 2>&1 || true) # exits 254 after printing it
sq_desc="squashfuse ${sq_ver:+$(awk 'NR == 1 {print $2}' <<< "$sq_ver") }of a ${sq_comp[1]:-gzip} squashfs"

note "cfs-pack into a directory store"
ref=$("$cfs_pack" -q "$C/data" "$C/store" | tail -n 1)
[[ $ref == sha256:* ]] || die "cfs-pack printed no reference"
cache=$C/cache

# shellcheck disable=SC2086 # CFS_MOUNT_OPTS is a list of words
mount_cfs() { # [VAR=VALUE...]: a fresh cfs mount on $cache
	fuse_start "$C/mnt/cfs" "$W/cfs-mount.log" env "$@" "$cfs_mount" -f ${CFS_MOUNT_OPTS:-} --cache "$cache" \
		--stats-file "$W/cfs-stats.json" "$C/store" "$ref" "$C/mnt/cfs"
}
mount_sq() { fuse_start "$C/mnt/sq" "$W/squashfuse.log" squashfuse -f "$C/big.sqfs" "$C/mnt/sq"; }
# chunk_fetches: chunks the last cfs mount fetched from the store (its stats at exit)
chunk_fetches() { jq -r '.chunk_fetches // 0' "$W/cfs-stats.json" 2> /dev/null || echo '?'; }

note "filling the cfs disk cache (one read through cfs, compared with the file) and checking squashfuse"
rm -f "$W/cfs-stats.json"
mount_cfs || die "cfs-mount failed"
cmp "$file" "$mp/big.bin" || die "cfs serves other bytes than the file's"
fuse_stop
note "cfs fetched $(chunk_fetches) chunks from the store into $cache"
mount_sq || die "squashfuse failed"
cmp "$file" "$mp/big.bin" || die "squashfuse serves other bytes than the file's"
fuse_stop
find "$cache" -type f -print0 > "$W/cache.list"
cache_bytes=$(find "$cache" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
cache_files=$(tr -cd '\0' < "$W/cache.list" | wc -c)
splice_known=1
grep -qa CFS_FUSE_SPLICE "$cfs_mount" || {
	splice_known=0
	note "$cfs_mount does not read CFS_FUSE_SPLICE: cfs-nosplice measures the same path as cfs"
}

# --- measuring -----------------------------------------------------------------
declare -A desc=(
	[ext4]="cat of the file on the local disk ($(findmnt -no FSTYPE -T "$C"), no FUSE)"
	[squashfuse]="cat through $sq_desc, fresh mount"
	[cfs]="cat through cfs-mount, fresh mount, every chunk in its disk cache"
	[cfs-nosplice]="the same, CFS_FUSE_SPLICE=0$([ "$splice_known" = 1 ] || echo ' (not read by this cfs-mount)')"
	[cache-direct]="cat of the $cache_files files of cfs's disk cache, one after another, no FUSE (ceiling)"
	[cache-direct-par]="the same, $par cats at once (xargs -P $par -n 16)"
)
for m in $methods; do : > "$W/res/$m"; done

# run_one METHOD RUN: mount, drop caches, time the read; appends
# "seconds bytes daemon_cpu_s" (daemon_cpu_s: nan without a daemon) to $W/res/METHOD
run_one() {
	local m=$1 r=$2 src=$file n=$bytes t0 t1 c0=0 c1=0 ok=1 secs cpu=nan
	case $m in
	squashfuse) mount_sq || ok=0; src=$C/mnt/sq/big.bin ;;
	cfs) rm -f "$W/cfs-stats.json"; mount_cfs || ok=0; src=$C/mnt/cfs/big.bin ;;
	cfs-nosplice) rm -f "$W/cfs-stats.json"; mount_cfs CFS_FUSE_SPLICE=0 || ok=0; src=$C/mnt/cfs/big.bin ;;
	cache-direct*) n=$cache_bytes ;;
	esac
	if [ "$ok" = 1 ]; then
		drop_caches
		[ -z "$dpid" ] || c0=$(cpu_ticks "$dpid")
		t0=$(now)
		if [ "$m" = cache-direct ]; then
			xargs -0 cat < "$W/cache.list" > /dev/null || ok=0
		elif [ "$m" = cache-direct-par ]; then
			xargs -0 -P "$par" -n 16 cat < "$W/cache.list" > /dev/null || ok=0
		else
			cat "$src" > /dev/null || ok=0
		fi
		t1=$(now)
		[ -z "$dpid" ] || { c1=$(cpu_ticks "$dpid"); cpu=$(calc "($c1 - $c0) / $hz"); }
	fi
	fuse_stop
	if [ "$ok" = 0 ]; then
		echo "  $m run $r: FAILED" >&2
		echo FAIL >> "$W/res/$m"
		return 0
	fi
	if [[ $m == cfs* ]] && [ "$(chunk_fetches)" != 0 ]; then
		note "warning: $m run $r fetched $(chunk_fetches) chunks from the store (not all from the disk cache)"
	fi
	secs=$(calc "($t1 - $t0) / 1e9")
	echo "$secs $n $cpu" >> "$W/res/$m"
	printf '  %-16s run %d: %7.3f s %6.2f GB/s%s\n' "$m" "$r" "$secs" "$(calc "$n / 1e9 / $secs")" \
		"$([ "$cpu" = nan ] || echo ", daemon $cpu CPU-s")" >&2
}

note "$runs runs of: $methods ($bytes bytes, page cache dropped before each read)"
for ((r = 1; r <= runs; r++)); do
	for m in $methods; do run_one "$m" "$r"; done
done

# --- report ------------------------------------------------------------------------
# ok M: every run of M worked; med M COL: the median of column COL of M's runs
ok() { [ -s "$W/res/$1" ] && ! grep -q FAIL "$W/res/$1"; }
med() { awk -v c="$2" '$c != "nan" {print $c}' "$W/res/$1" | median; }
date_now=$(date -u '+%Y-%m-%d %H:%M UTC')
machine="$(nproc) CPUs, $(sed -n 's/^PRETTY_NAME="*\([^"]*\)"*$/\1/p' /etc/os-release), kernel $(uname -r), disk $(disk_desc "$C")"
commit=$(git -C "$top_dir" describe --always --dirty 2> /dev/null || echo unknown)
[ -z "${CFS_MOUNT:-}" ] || commit="binaries $cfs_pack, $cfs_mount"
cfs_s=
ok cfs && cfs_s=$(med cfs 1)

: > "$out_json"
jq -nc --arg machine "$machine" --arg date "$date_now" --arg commit "$commit" --argjson bytes "$bytes" \
	--argjson runs "$runs" --arg size "$size" \
	'{kind: "machine", bench: "serving", machine: $machine, date: $date, cfs_commit: $commit, size: $size,
	  bytes: $bytes, runs: $runs}' >> "$out_json"
for m in $methods; do
	r=0
	while read -r s n cpu; do
		r=$((r + 1))
		[ "$s" != FAIL ] || { jq -nc --arg m "$m" --argjson r "$r" '{kind: "run", method: $m, run: $r, failed: true}'; continue; }
		jq -nc --arg m "$m" --argjson r "$r" --argjson s "$s" --argjson n "$n" --arg cpu "$cpu" \
			'{kind: "run", method: $m, run: $r, seconds: $s, bytes: $n, gbps: ($n / 1e9 / $s),
			  daemon_cpu_s: (if $cpu == "nan" then null else ($cpu | tonumber) end)}'
	done < "$W/res/$m" >> "$out_json"
done

printf '# serving a %s-byte file (SIZE=%s) cold: page cache dropped before each read, median of %d runs; cfs %s\n' \
	"$bytes" "$size" "$runs" "$commit"
printf '# %s; %s\n' "$machine" "$date_now"
printf '%-16s %8s %7s %9s %7s  %s\n' method seconds GB/s cpu-s/GB "vs cfs" what
for m in $methods; do
	if ! ok "$m"; then
		printf '%-16s %8s %7s %9s %7s  %s\n' "$m" FAILED - - - "${desc[$m]}"
		jq -nc --arg m "$m" --arg d "${desc[$m]}" '{kind: "median", method: $m, failed: true, desc: $d}' >> "$out_json"
		continue
	fi
	s=$(med "$m" 1) n=$(med "$m" 2)
	gbps=$(calc "$n / 1e9 / $s")
	cpu_gb=$(awk '$3 != "nan" {print $3 / ($2 / 1e9)}' "$W/res/$m" | median)
	ratio=nan
	[ -z "$cfs_s" ] || ratio=$(calc "$s / $cfs_s")
	printf '%-16s %8.3f %7.2f %9s %7s  %s\n' "$m" "$s" "$gbps" \
		"$([ "$cpu_gb" = nan ] && echo - || printf '%.2f' "$cpu_gb")" \
		"$([ "$ratio" = nan ] && echo - || printf '%.2fx' "$ratio")" "${desc[$m]}"
	jq -nc --arg m "$m" --argjson runs "$(wc -l < "$W/res/$m")" --argjson s "$s" --argjson n "$n" \
		--argjson gbps "$gbps" --arg cpu "$cpu_gb" --arg ratio "$ratio" --arg d "${desc[$m]}" \
		'{kind: "median", method: $m, runs: $runs, seconds: $s, bytes: $n, gbps: $gbps,
		  daemon_cpu_s_per_gb: (if $cpu == "nan" then null else ($cpu | tonumber) end),
		  vs_cfs: (if $ratio == "nan" then null else ($ratio | tonumber) end), desc: $d}' >> "$out_json"
done
echo "(seconds: the read alone, mount and drop_caches before the clock; GB/s: bytes / 1e9 / seconds;"
echo " cpu-s/GB: CPU seconds of the FUSE daemon during the read per GB read; vs cfs: seconds / cfs's seconds, below 1: faster than cfs)"
note "runs and medians: $out_json"
if [ -n "$out_png" ]; then
	"$top_dir/bench/plot.sh" "$out_json" "$out_png" \
		"Cold read of a $size file, every chunk in cfs's disk cache (median of $runs, $(uname -r), $(nproc) CPUs)" ||
		die "plot.sh failed"
	note "chart: $out_png"
fi
