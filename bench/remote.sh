#!/usr/bin/env bash
# Remote stores: cfs reading over HTTP through a slow link, beside what users
# pick instead (s3fs and rclone mounts of the same files in an S3 bucket) and
# beside curl fetching the same bytes (the link's ceiling), in one run.
#
# Usage: bench/remote.sh [RUNS]          (RUNS: cold runs per case, default 3)
#
# What it does, all on 127.0.0.1:
#   data    a 2 GiB file of incompressible deterministic bytes (AES-CTR
#           keystream) and a tree of 1000 files of 1-64 KiB in 20 directories
#           (the shape of a Python package tree; incompressible too, so cfs's
#           compression gains nothing here);
#   servers cfs-pack packs both into a directory store; nginx serves the store
#           and the raw files; s3rver (S3 API, Node) holds the raw files in a
#           bucket; all server data sits on tmpfs (a warm remote server);
#   link    cfs-faultproxy in front of nginx and in front of s3rver with
#           latency_ms=20 (20 ms added to every request's round trip) and
#           rate=100M (100 MiB/s per connection); a third proxy in front of
#           nginx with no faults measures the proxy's own ceiling;
#   cases   (a) cold sequential read of the big file (dd bs=1M), MB/s;
#           (b) cold read of every file of the tree once, one reader (cat over
#           find) and PAR readers (xargs -P), seconds from mount to done.
#   Before every run: page cache dropped, fresh cfs / rclone cache dirs, fresh
#   mounts.  Each figure is the median of RUNS runs; requests, connections
#   and bytes are the proxy's counters for the run (GET /__proxy_stats).
#
# Peers: curl (one connection; PAR parallel range requests; one file after
# another), s3fs (defaults; parallel_count/multipart_size tuned), rclone mount
# of the bucket (--vfs-cache-mode off and full).
#
# Needs root (mounts, drop_caches).  Installs what is missing: s3fs, rclone,
# nginx with apt-get, s3rver@3.7.1 with npm into /opt/cfs-test-deps.
#
# Env: CFS_PACK, CFS_MOUNT, CFS_FAULTPROXY (binaries; default build/...),
#      BIG_SIZE (2G), TREE_FILES (1000), LATENCY_MS (20), RATE (100M), PAR (8),
#      CASES ("diag big tree"), CFS_MOUNT_OPTS (extra cfs-mount options),
#      CFS_RA_KB (extra cfs runs with the mount's bdi read_ahead_kb set to
#      each value, e.g. "8192 32768"; empty: none),
#      SKIP ("" or a list of method names to leave out, e.g. "s3fs-tuned"),
#      BENCH_DIR (server data, tmpfs: /dev/shm), CACHE_DIR (client caches,
#      default /var/tmp: the local disk).
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
runs=${1:-${RUNS:-3}}
big_size=${BIG_SIZE:-2G}
tree_files=${TREE_FILES:-1000}
latency=${LATENCY_MS:-20}
rate=${RATE:-100M}
par=${PAR:-8}
cases=${CASES:-diag big tree}
ra_list=${CFS_RA_KB:-}
skip=" ${SKIP:-} "
s3rver_dir=/opt/cfs-test-deps
s3rver_bin=$s3rver_dir/node_modules/.bin/s3rver

[ "$(id -u)" = 0 ] || die "needs root (mounts, drop_caches)"
need_built "$pack" "$mnt_bin" "$proxy_bin"

# --- peers: install what is missing ----------------------------------------
find_missing nginx:nginx s3fs:s3fs rclone:rclone curl:curl openssl:openssl
command -v npm > /dev/null 2>&1 || [ -x "$s3rver_bin" ] || missing+=(nodejs npm)
apt_install_missing
if [ ! -x "$s3rver_bin" ]; then
	note "installing s3rver@3.7.1 into $s3rver_dir"
	mkdir -p "$s3rver_dir"
	npm install --prefix "$s3rver_dir" --no-audit --no-fund s3rver@3.7.1 > /dev/null || die "npm install s3rver failed"
fi
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)

# rclone mount runs "fusermount"; Debian 12's fuse3 ships only fusermount3.
# AWS_CA_BUNDLE in the environment makes rclone's S3 client refuse to start
# ("unsupported transport"); nothing here uses TLS.
unset AWS_CA_BUNDLE
export RCLONE_CONFIG=/dev/null

# --- scratch, cleanup --------------------------------------------------------
make_scratch remote
mkdir -p "$W/bin" "$W/res" "$W/srv/raw/big" "$W/srv/raw/tree" "$W/mnt"
if ! command -v fusermount > /dev/null 2>&1; then
	ln -s "$(command -v fusermount3)" "$W/bin/fusermount"
	export PATH="$W/bin:$PATH"
fi

# --- data ----------------------------------------------------------------------
keystream() { # deterministic incompressible bytes: AES-128-CTR of zeros
	openssl enc -aes-128-ctr -K "$1" -iv 00000000000000000000000000000000 -in /dev/zero 2> /dev/null || true
}
note "making data in $W/srv/raw: $big_size file, $tree_files-file tree"
keystream 000102030405060708090a0b0c0d0e0f | head -c "$big_size" > "$W/srv/raw/big/big.bin"
big_bytes=$(stat -c %s "$W/srv/raw/big/big.bin")
# The tree: 4 packages x 5 subpackages, files mod000.py... of 1-64 KiB, sizes
# from a fixed LCG, contents cut from one keystream.
awk -v n="$tree_files" 'BEGIN { x = 12345; for (i = 0; i < n; i++) {
		x = (x * 1103515245 + 12345) % 2147483648
		printf "pkg%d/sub%d/mod%03d.py %d\n", i % 4, int(i / 4) % 5, i, 1024 + x % (63 * 1024 + 1) } }' > "$W/tree.list"
keystream 0f0e0d0c0b0a09080706050403020100 | head -c $((tree_files * 65 * 1024)) > "$W/tree.blob"
off=0
while read -r f sz; do
	mkdir -p "$W/srv/raw/tree/${f%/*}"
	dd if="$W/tree.blob" of="$W/srv/raw/tree/$f" bs=64K skip="$off" count="$sz" \
		iflag=skip_bytes,count_bytes status=none
	off=$((off + sz))
done < "$W/tree.list"
rm -f "$W/tree.blob"
tree_bytes=$(awk '{s += $2} END {print s}' "$W/tree.list")

note "packing into a directory store"
"$pack" -q --tag big "$W/srv/raw/big" "$W/srv/store" > /dev/null
"$pack" -q --tag tree "$W/srv/raw/tree" "$W/srv/store" > /dev/null
store_bytes=$(du -sb "$W/srv/store" | cut -f1)

# --- servers -----------------------------------------------------------------
start_nginx store/cfs-store "" "autoindex on;"

s3_port=$(free_port)
mkdir -p "$W/s3"
"$s3rver_bin" -d "$W/s3" -a 127.0.0.1 -p "$s3_port" --silent --configure-bucket bench > "$W/s3rver.log" 2>&1 &
PIDS+=($!)
wait_for curl -s -o /dev/null "http://127.0.0.1:$s3_port/" || die "s3rver did not start: $(cat "$W/s3rver.log")"

# s3rver's accepted credentials; path-style addressing.
s3_flags=(--s3-provider Other --s3-access-key-id S3RVER --s3-secret-access-key S3RVER --s3-force-path-style=true)
echo S3RVER:S3RVER > "$W/s3.passwd"
chmod 600 "$W/s3.passwd"
note "uploading the raw files into s3rver (bucket bench, prefix d/)"
# Directory objects first ("d/tree/", ...), made by s3fs's mkdir: s3rver
# 3.7.1 lists no common prefix for a directory that holds only directories,
# so without them s3fs and rclone would see an empty tree.
mkdir -p "$W/mnt/up"
MOUNTS+=("$W/mnt/up")
s3fs bench:/d "$W/mnt/up" -o "url=http://127.0.0.1:$s3_port,use_path_request_style,passwd_file=$W/s3.passwd" ||
	die "s3fs mount of s3rver failed"
(cd "$W/srv/raw" && find . -mindepth 1 -type d -printf '%P\0' | (cd "$W/mnt/up" && xargs -0 mkdir -p))
fusermount3 -u "$W/mnt/up"
rclone copy "${s3_flags[@]}" --s3-endpoint "http://127.0.0.1:$s3_port" --transfers 8 \
	"$W/srv/raw" :s3:bench/d || die "upload to s3rver failed"

start_proxy ngx "$ngx_port" "latency_ms=$latency
rate=$rate"
start_proxy s3 "$s3_port" "latency_ms=$latency
rate=$rate"
start_proxy clean "$ngx_port" ""
# shellcheck disable=SC2154 # set by start_proxy
{ P_NGX=$port_ngx; P_S3=$port_s3; P_CLEAN=$port_clean; }

# busy_ticks: "busy total" clock ticks of the whole machine so far
busy_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9; exit}' /proc/stat; }

# --- measuring -------------------------------------------------------------------
# Every method is a function run_M that mounts (if it mounts), reads, and
# leaves its mountpoint in $mp; the harness drops caches, snapshots the
# proxy's counters, times, and unmounts.  It records one line per run in
# $W/res/CASE.M: seconds requests connections bytes.
mp=$W/mnt/m
mkdir -p "$mp"
MOUNTS+=("$mp")
mount_pid=

unmount() {
	mountpoint -q "$mp" || return 0
	fusermount3 -u "$mp" 2> /dev/null || umount -l "$mp"
	if [ -n "$mount_pid" ]; then
		wait "$mount_pid" 2> /dev/null || true
		mount_pid=
	fi
}
# bg_mount CMD...: starts a foreground FUSE daemon in the background
bg_mount() {
	"$@" > "$W/mount.log" 2>&1 &
	mount_pid=$!
	PIDS+=("$mount_pid")
	wait_mounted "$mount_pid" || { echo "mount failed: $*: $(tail -n 3 "$W/mount.log")" >&2; mount_pid=; return 1; }
}

cfs_store_url() { echo "http://127.0.0.1:$P_NGX/store/"; }
# shellcheck disable=SC2086 # CFS_MOUNT_OPTS is a list of words
mount_cfs() { # IMAGE [RA_KB]
	rm -rf "$C/cfs"
	bg_mount "$mnt_bin" -f ${CFS_MOUNT_OPTS:-} --cache "$C/cfs" --stats-file "$W/cfs-stats.json" \
		"$(cfs_store_url)" "$1" "$mp" || return 1
	if [ -n "${2:-}" ]; then
		echo "$2" > "/sys/class/bdi/$(mountpoint -d "$mp")/read_ahead_kb"
	fi
}
mount_s3fs() { # extra -o options
	bg_mount s3fs bench:/d "$mp" -f -o "ro,url=http://127.0.0.1:$P_S3,use_path_request_style,passwd_file=$W/s3.passwd${1:+,$1}"
}
mount_rclone() { # flags...
	rm -rf "$C/rclone"
	bg_mount rclone mount --read-only "${s3_flags[@]}" --s3-endpoint "http://127.0.0.1:$P_S3" \
		--cache-dir "$C/rclone" "$@" :s3:bench/d "$mp"
}

read_big() { dd if="$1" of=/dev/null bs=1M status=none; }
read_tree_seq() { find "$1" -type f -print0 | xargs -0 cat > /dev/null; }
read_tree_par() { find "$1" -type f -print0 | xargs -0 -P "$par" -n 16 cat > /dev/null; }

# curl_ranges URL N: the object in N equal ranges, N connections at once
curl_ranges() {
	local url=$1 n=$2 i lo hi step pids=()
	step=$(((big_bytes + n - 1) / n))
	for ((i = 0; i < n; i++)); do
		lo=$((i * step)); hi=$((lo + step - 1))
		[ "$hi" -lt "$big_bytes" ] || hi=$((big_bytes - 1))
		curl -sf -r "$lo-$hi" -o /dev/null "$url" &
		pids+=($!)
	done
	for i in "${pids[@]}"; do wait "$i" || return 1; done
}
curl_files() { # PORT PREFIX [parallel]
	awk -v u="http://127.0.0.1:$1/$2" '{print "url = \"" u $1 "\"\noutput = \"/dev/null\""}' \
		"$W/tree.list" > "$W/curl.cfg"
	if [ -n "${3:-}" ]; then
		curl -sf --no-progress-meter -Z --parallel-max "$par" -K "$W/curl.cfg"
	else
		curl -sf -K "$W/curl.cfg"
	fi
}

# measure CASE METHOD PROXY_PORT WHAT: WHAT is "mount:...;read:..." run by
# eval; the clock covers both for the tree and the read only for the big file.
declare -A desc
declare -a order
measure() {
	local cs=$1 m=$2 pport=$3 mountcmd=$4 readcmd=$5 r s0 s1 t0 t1 t2 ok c0 c1 p0 p1 a0 a1 b0 b1 cpu
	case "$skip" in *" $m "*) return 0;; esac
	[ -n "${desc[$cs.$m]:-}" ] || order+=("$cs.$m")
	desc[$cs.$m]=$6
	: > "$W/res/$cs.$m"
	for ((r = 0; r < runs; r++)); do
		unmount
		rm -rf "$C/cfs" "$C/rclone"
		drop_caches
		s0=
		[ -z "$pport" ] || s0=$(proxy_json "$pport")
		ok=1
		t0=$(now)
		if [ -n "$mountcmd" ]; then eval "$mountcmd" || ok=0; fi
		t1=$(now)
		c0=0 p0=0 c1=0 p1=0
		[ -z "$mount_pid" ] || c0=$(cpu_ticks "$mount_pid")
		[ -z "$pport" ] || p0=$(cpu_ticks "${proxy_pid[$pport]}")
		read -r b0 a0 < <(busy_ticks)
		if [ "$ok" = 1 ]; then eval "$readcmd" || ok=0; fi
		t2=$(now)
		read -r b1 a1 < <(busy_ticks)
		[ -z "$mount_pid" ] || c1=$(cpu_ticks "$mount_pid")
		[ -z "$pport" ] || p1=$(cpu_ticks "${proxy_pid[$pport]}")
		cpu=$(printf '%s %s %s' "$(calc "($c1 - $c0) / $hz")" "$(calc "($p1 - $p0) / $hz")" \
			"$(calc "100 * ($b1 - $b0) / ($a1 - $a0 > 0 ? $a1 - $a0 : 1)")")
		s1=
		[ -z "$pport" ] || s1=$(proxy_json "$pport")
		if [ "$m" = cfs ] || [[ $m == cfs-* ]]; then
			# the daemon's own counters: --stats on the live mount, else the stats file at exit
			"$mnt_bin" --stats "$mp" > "$W/res/$cs.$m.stats" 2> /dev/null || true
			unmount
			[ -s "$W/res/$cs.$m.stats" ] || cp "$W/cfs-stats.json" "$W/res/$cs.$m.stats" 2> /dev/null || true
		fi
		unmount
		if [ "$ok" = 0 ]; then
			echo "  $cs $m run $((r + 1)): FAILED" >&2
			echo "FAIL" > "$W/res/$cs.$m"
			return 0
		fi
		[ "$cs" = big ] && t0=$t1 # big file: MB/s of the read alone
		if [ -z "$pport" ]; then
			printf '%s nan nan nan %s\n' "$(calc "($t2 - $t0) / 1e9")" "$cpu"
		else # the /__proxy_stats connection counts as one; its request does not
			printf '%s %s %s %s %s\n' "$(calc "($t2 - $t0) / 1e9")" \
				$(($(json_get "$s1" requests) - $(json_get "$s0" requests))) \
				$(($(json_get "$s1" connections) - $(json_get "$s0" connections) - 1)) \
				$(($(json_get "$s1" bytes_down) - $(json_get "$s0" bytes_down))) "$cpu"
		fi >> "$W/res/$cs.$m"
		echo "  $cs $m run $((r + 1)): $(tail -n 1 "$W/res/$cs.$m")" >&2
	done
}

big_url_ngx=http://127.0.0.1:$P_NGX/raw/big/big.bin
for c in $cases; do
	case $c in
	diag)
		note "diag: the proxy's own ceiling (no faults) and nginx direct"
		measure diag curl-nginx-1 "" "" "curl -sf -o /dev/null http://127.0.0.1:$ngx_port/raw/big/big.bin" \
			"curl, nginx direct, 1 connection"
		measure diag "curl-nginx-$par" "" "" "curl_ranges http://127.0.0.1:$ngx_port/raw/big/big.bin $par" \
			"curl, nginx direct, $par ranges"
		measure diag curl-clean-1 "$P_CLEAN" "" "curl -sf -o /dev/null http://127.0.0.1:$P_CLEAN/raw/big/big.bin" \
			"curl, proxy without faults, 1 connection"
		measure diag "curl-clean-$par" "$P_CLEAN" "" "curl_ranges http://127.0.0.1:$P_CLEAN/raw/big/big.bin $par" \
			"curl, proxy without faults, $par ranges"
		measure diag cfs-clean "$P_CLEAN" "P_SAVE=\$P_NGX; P_NGX=\$P_CLEAN; mount_cfs big; P_NGX=\$P_SAVE" "read_big $mp/big.bin" \
			"cfs mount, proxy without faults"
		for ra in $ra_list; do :; done
		if [ -n "$ra_list" ]; then
			measure diag "cfs-clean-ra$ra" "$P_CLEAN" "P_SAVE=\$P_NGX; P_NGX=\$P_CLEAN; mount_cfs big $ra; P_NGX=\$P_SAVE" \
				"read_big $mp/big.bin" "cfs mount, proxy without faults, bdi read_ahead_kb=$ra"
		fi
		;;
	big)
		note "big: cold sequential read of $big_bytes bytes"
		measure big cfs "$P_NGX" "mount_cfs big" "read_big $mp/big.bin" "cfs mount (http store via proxy)"
		measure big cfs-sync "$P_NGX" "CFS_NO_IO_URING=1 mount_cfs big" "read_big $mp/big.bin" \
			"cfs mount, cache writes without io_uring"
		for ra in $ra_list; do
			measure big "cfs-ra$ra" "$P_NGX" "mount_cfs big $ra" "read_big $mp/big.bin" \
				"cfs mount, bdi read_ahead_kb=$ra"
		done
		measure big curl-1 "$P_NGX" "" "curl -sf -o /dev/null $big_url_ngx" "curl, 1 connection (nginx)"
		for n in 4 "$par" 16; do
			measure big "curl-$n" "$P_NGX" "" "curl_ranges $big_url_ngx $n" "curl, $n parallel ranges (nginx)"
		done
		measure big curl-s3-1 "$P_S3" "" "curl -sf -o /dev/null http://127.0.0.1:$P_S3/bench/d/big/big.bin" \
			"curl, 1 connection (s3rver)"
		measure big "curl-s3-$par" "$P_S3" "" "curl_ranges http://127.0.0.1:$P_S3/bench/d/big/big.bin $par" \
			"curl, $par parallel ranges (s3rver)"
		measure big s3fs "$P_S3" "mount_s3fs" "read_big $mp/big/big.bin" "s3fs, defaults"
		measure big s3fs-tuned "$P_S3" "mount_s3fs parallel_count=16,multipart_size=16" "read_big $mp/big/big.bin" \
			"s3fs, parallel_count=16,multipart_size=16"
		measure big rclone-off "$P_S3" "mount_rclone --vfs-cache-mode off" "read_big $mp/big/big.bin" \
			"rclone mount, --vfs-cache-mode off"
		measure big rclone-full "$P_S3" "mount_rclone --vfs-cache-mode full" "read_big $mp/big/big.bin" \
			"rclone mount, --vfs-cache-mode full"
		measure big rclone-tuned "$P_S3" \
			"mount_rclone --vfs-cache-mode full --vfs-read-chunk-size 16M --vfs-read-ahead 512M --buffer-size 64M" \
			"read_big $mp/big/big.bin" "rclone mount, full, chunk 16M, read-ahead 512M"
		;;
	tree)
		for how in seq par; do
			note "tree ($how): cold read of $tree_files files, $tree_bytes bytes"
			measure "tree-$how" cfs "$P_NGX" "mount_cfs tree" "read_tree_$how $mp" "cfs mount (http store via proxy)"
			measure "tree-$how" curl "$P_NGX" "" "curl_files $P_NGX raw/tree/ $([ $how = par ] && echo y)" \
				"curl, the known file list, $([ $how = par ] && echo "$par at once" || echo "one after another")"
			measure "tree-$how" s3fs "$P_S3" "mount_s3fs" "read_tree_$how $mp/tree" "s3fs, defaults"
			measure "tree-$how" rclone-off "$P_S3" "mount_rclone --vfs-cache-mode off" "read_tree_$how $mp/tree" \
				"rclone mount, --vfs-cache-mode off"
			measure "tree-$how" rclone-full "$P_S3" "mount_rclone --vfs-cache-mode full" "read_tree_$how $mp/tree" \
				"rclone mount, --vfs-cache-mode full"
		done
		;;
	*) die "unknown case $c";;
	esac
done

# --- report ------------------------------------------------------------------------
printf '\nmachine: %d CPUs, %s, kernel %s; link: latency_ms=%s rate=%s per connection (cfs-faultproxy)\n' \
	"$(nproc)" "$(. /etc/os-release && echo "$PRETTY_NAME")" "$(uname -r)" "$latency" "$rate"
printf 'big file %.1f MB; tree %d files, %.1f MB; cfs store %.1f MB; median of %d cold runs\n' \
	"$(calc "$big_bytes / 1e6")" "$tree_files" "$(calc "$tree_bytes / 1e6")" "$(calc "$store_bytes / 1e6")" "$runs"
printf '%-10s %-14s %8s %7s %8s %5s %8s %7s %6s %5s %7s  %s\n' case method seconds MB/s requests conns MB-down \
	mnt-cpu prx-cpu busy% "vs cfs" what
for k in "${order[@]}"; do
	cs=${k%%.*}; m=${k#*.}
	if grep -q FAIL "$W/res/$k"; then
		printf '%-10s %-14s %9s\n' "$cs" "$m" FAILED
		continue
	fi
	s=$(col "$k" 1)
	if [ "$cs" = big ] || [ "$cs" = diag ]; then bytes=$big_bytes; else bytes=$tree_bytes; fi
	ratio=-
	if [ -s "$W/res/$cs.cfs" ] && ! grep -q FAIL "$W/res/$cs.cfs"; then
		ratio=$(printf '%.2fx' "$(calc "$s / $(col "$cs.cfs" 1)")")
	fi
	req=$(col "$k" 2) conns=$(col "$k" 3) down=$(col "$k" 4)
	[ "$down" = nan ] || down=$(calc "$down / 1e6")
	printf '%-10s %-14s %8.2f %7.0f %8s %5s %8s %7.2f %6.2f %5.0f %7s  %s\n' "$cs" "$m" "$s" \
		"$(calc "$bytes / 1e6 / $s")" "${req/nan/-}" "${conns/nan/-}" "${down/nan/-}" \
		"$(col "$k" 5)" "$(col "$k" 6)" "$(col "$k" 7)" "$ratio" "${desc[$k]}"
done
echo "(seconds: big = the read alone, tree = mount + read; vs cfs: seconds / cfs's seconds, above 1: cfs faster;"
echo " requests, conns, MB-down: the proxy's counters for one run; curl knows the file list, the mounts list it;"
echo " mnt-cpu, prx-cpu: CPU seconds of the FUSE daemon and of the proxy during the read; busy%: both cores)"
for k in "${order[@]}"; do
	[ -s "$W/res/$k.stats" ] && printf 'cfs counters, %s: %s\n' "$k" "$(tr -d '\n' < "$W/res/$k.stats")"
done

# --- goals -----------------------------------------------------------------------
if ok_res big.cfs; then
	best=0 bestm=
	for k in "${order[@]}"; do
		case $k in big.curl-[0-9]*) ;; *) continue;; esac
		ok_res "$k" || continue
		v=$(calc "$big_bytes / 1e6 / $(col "$k" 1)")
		if awk "BEGIN{exit !($v > $best)}"; then best=$v bestm=${k#big.}; fi
	done
	c=$(calc "$big_bytes / 1e6 / $(col big.cfs 1)")
	printf 'goal big file: cfs %.0f MB/s = %.0f%% of the aggregate link rate %.0f MB/s (%s, the best curl through the proxy); goal 90%%\n' \
		"$c" "$(calc "100 * $c / ($best > 0 ? $best : 1)")" "$best" "$bestm"
fi
for how in seq par; do
	ok_res "tree-$how.cfs" || continue
	best='' bestm=''
	for m in s3fs rclone-off rclone-full; do
		ok_res "tree-$how.$m" || continue
		v=$(col "tree-$how.$m" 1)
		if [ -z "$best" ] || awk "BEGIN{exit !($v < $best)}"; then best=$v bestm=$m; fi
	done
	[ -n "$best" ] || continue
	printf 'goal tree (%s): cfs %.2f s, the fastest peer %s %.2f s: %.1fx; goal 5x\n' \
		"$how" "$(col "tree-$how.cfs" 1)" "$bestm" "$best" "$(calc "$best / $(col "tree-$how.cfs" 1)")"
done
