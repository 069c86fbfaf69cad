#!/usr/bin/env bash
# Fleet: N cold nodes start the same image at once, through one zonal nginx
# cache (the configuration of docs/FLEET.md) and, for contrast, straight at
# the origin; what each node waits and what the origin serves.
#
# Usage: bench/fleet.sh [N...]           (client counts, default 1 4 16 64)
#
# What it does, all on 127.0.0.1:
#   image    a tree of SMALL_FILES (300) files of 1-32 KiB, first.txt, and
#            one BIG_MB (64) MiB file, all incompressible random bytes,
#            packed by cfs-pack into a directory store on tmpfs;
#   origin   nginx running the origin block of docs/FLEET.md on that store
#            (one worker), behind cfs-faultproxy with latency_ms=$LATENCY_MS
#            (20 ms added to every round trip) and rate=$RATE per connection
#            (100M = 100 MiB/s; the proxy has no aggregate cap);
#   zonal    nginx running the zonal block of docs/FLEET.md, cut out of the
#            doc as tests/zonal.sh does (worker_processes auto), in front of
#            that link, with an empty cache directory for every run;
#   clients  N processes started together (each opens a FIFO, then all
#            are released at once by closing its last writer), each a node
#            of its own: its own cfs-mount (default options plus
#            CFS_MOUNT_OPTS; the image has no prefetch list, so the default
#            --prefetch list fetches nothing ahead) with its own disk cache
#            under CACHE_DIR; the workload mounts the image, reads
#            first.txt ("first": the workload's first output), then every
#            file in path order through sha256sum, checked against the
#            tree's ("total"); times from the common release;
#   modes    "zonal": the nodes mount http://zonal/, cold; "zonal-warm":
#            the same after one node mounted the image through the zonal
#            cache and read all of it (a rollout that warms each zone
#            before it moves the tag; that node's origin requests count,
#            its times do not); "direct": the nodes mount the link to the
#            origin, no zonal cache; "shared": N mounts on ONE node (one
#            disk cache directory for all of them, lib/cache/cache_lock.c's
#            cross-process single flight), straight at the origin link
#            (goal: 1.00 requests per object, as through a zonal cache).
# Per N and mode: origin requests per unique object (object GETs in the
# origin's access log / objects in the store; goal 1.00 through the zonal
# cache), origin bytes / unique object bytes (every body byte the origin
# sent / the store's object bytes; goal <= 1.02), p50 and p99 (nearest
# rank) of first and total, and the cfs-mount daemons' CPU seconds
# (utime + stime of the serving daemon at the workload's end) per GB they
# served (read_bytes of cfs-mount --stats), summed over the nodes.
#
# On a 2-core machine N > 2 clients share two cores with each other, both
# nginx and the proxy: the figures for N > 2 measure coalescing and origin
# load, not how a node's latency scales with N (the script says so too).
#
# Needs root (mounts).  Needs nginx and curl (installed with apt-get when
# missing).  Raises its open-file limit for 64 nodes' connections.
#
# Env: CFS_PACK, CFS_MOUNT, CFS_FAULTPROXY (binaries; default build/...),
#      LATENCY_MS (20), RATE (100M), BIG_MB (64), SMALL_FILES (300),
#      MODES ("zonal zonal-warm direct shared"), CFS_MOUNT_OPTS (extra cfs-mount options),
#      RUN_TIMEOUT (seconds a node may take, 600), OUT_JSON (fleet.jsonl),
#      BENCH_DIR (server data, tmpfs: /dev/shm), CACHE_DIR (client caches,
#      /var/tmp: the local disk).
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
counts=${*:-1 4 16 64}
latency=${LATENCY_MS:-20}
rate=${RATE:-100M}
big_mb=${BIG_MB:-64}
small_files=${SMALL_FILES:-300}
modes=${MODES:-zonal zonal-warm direct shared}
run_timeout=${RUN_TIMEOUT:-600}
out_json=${OUT_JSON:-fleet.jsonl}
doc=$top/docs/FLEET.md

[ "$(id -u)" = 0 ] || die "needs root (mounts)"
need_built "$pack" "$mnt_bin" "$proxy_bin"
[ -f "$doc" ] || die "$doc is missing"
find_missing nginx:nginx curl:curl
apt_install_missing
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
ulimit -n 65536 2> /dev/null || ulimit -n "$(ulimit -Hn)"

make_scratch fleet client
mkdir -p "$W/srv" "$W/res"
: > "$out_json" || die "cannot write $out_json"

# --- the image -----------------------------------------------------------------------
note "image: $small_files small files + first.txt + a $big_mb MiB file, random bytes"
mkdir -p "$W/tree/lib"
for ((i = 0; i < small_files; i++)); do
	head -c $((1024 + RANDOM % 31744)) /dev/urandom > "$W/tree/lib/$(printf 'mod%04d.py' "$i")"
done
echo ready > "$W/tree/first.txt"
head -c $((big_mb << 20)) /dev/urandom > "$W/tree/big.bin"
# the workload's reading order, and the hash of everything it reads
(cd "$W/tree" && find . -type f | LC_ALL=C sort) > "$W/files"
want_sum=$(cd "$W/tree" && tr '\n' '\0' < "$W/files" | xargs -0 cat | sha256sum | cut -d' ' -f1)
"$pack" -q --tag fleet "$W/tree" "$W/srv/store" > /dev/null || die "cfs-pack failed"
n_obj=$(find "$W/srv/store/objects" -type f | wc -l)
obj_bytes=$(find "$W/srv/store/objects" -type f -printf '%s\n' | awk '{ s += $1 } END { print s }')
tree_bytes=$(du -sb --apparent-size "$W/tree" | cut -f1)
note "store: $n_obj objects, $obj_bytes bytes (tree $tree_bytes bytes)"

# --- servers -------------------------------------------------------------------------
# doc_block FIRST LAST: the lines of docs/FLEET.md from FIRST to LAST
doc_block() {
	local out
	out=$(sed -n "\\|^$1\$|,\\|^$2\$|p" "$doc")
	[ -n "$out" ] && [ "$(printf '%s\n' "$out" | tail -n 1)" = "$2" ] || die "$doc: no block from '$1' to '$2'"
	printf '%s\n' "$out"
}
# replace VAR FROM TO: every FROM in $VAR becomes TO (it must be there)
replace() {
	local -n text=$1
	[[ $text == *"$2"* ]] || die "$doc: the block has no '$2' to replace"
	text=${text//"$2"/"$3"}
}
# run_nginx NAME WORKERS HTTP_TEXT: nginx with HTTP_TEXT in its http block,
# "@PORT@" in it replaced by a free port, in $W/NAME; sets ngx_port, ngx_pid
run_nginx() {
	local d=$W/$1 t
	mkdir -p "$d/tmp"
	ngx_port=$(free_port) || die "no free port"
	{
		echo "daemon off; master_process on; worker_processes $2; user root;"
		echo "pid $d/nginx.pid; error_log $d/error.log warn; worker_rlimit_nofile 65536;"
		echo "events { worker_connections 16384; }"
		echo "http {"
		for t in client_body proxy fastcgi uwsgi scgi; do echo "${t}_temp_path $d/tmp;"; done
		echo "sendfile on; keepalive_requests 1000000; keepalive_timeout 300s;"
		printf '%s\n' "${3//@PORT@/$ngx_port}"
		echo "}"
	} > "$d/nginx.conf"
	"$nginx_bin" -c "$d/nginx.conf" -p "$d" -e "$d/error.log" &
	ngx_pid=$!
	PIDS+=("$ngx_pid")
	wait_for curl -s -o /dev/null "http://127.0.0.1:$ngx_port/" || die "nginx $1 did not start: $(tail -n 3 "$d/error.log")"
}
stop_nginx() {
	kill "$1" 2> /dev/null || true
	wait "$1" 2> /dev/null || true
}

origin=$(doc_block '# --- cfs origin: a store directory ---' '# --- end of the cfs origin ---')
replace origin 'listen 8080;' 'listen 127.0.0.1:@PORT@;'
replace origin 'root /srv/cfs-store;' "root $W/srv/store;"
# shellcheck disable=SC2016 # nginx's variables
run_nginx origin 1 "log_format origin '\$request_method \$uri \$status \$body_bytes_sent';
access_log $W/origin.log origin;
$origin"
origin_port=$ngx_port
start_proxy link "$origin_port" "$(printf 'latency_ms=%s\nrate=%s' "$latency" "$rate")"
# shellcheck disable=SC2154 # set by start_proxy
link_port=$port_link

zonal_text=$(doc_block '# --- cfs zonal cache ---' '# --- end of the cfs zonal cache ---')
replace zonal_text 'server origin.internal:8080;' "server 127.0.0.1:$link_port;"
replace zonal_text 'proxy_set_header Host origin.internal;' 'proxy_set_header Host 127.0.0.1;'
replace zonal_text 'listen 80;' 'listen 127.0.0.1:@PORT@;'
# start_zonal RUN: a zonal nginx with an empty cache for RUN; sets zonal_pid
start_zonal() {
	local conf=$zonal_text
	replace conf 'proxy_cache_path /var/cache/nginx/cfs ' "proxy_cache_path $W/zcache-$1 "
	# shellcheck disable=SC2016 # nginx's variables
	run_nginx "zonal-$1" auto "log_format zonal '\$request_method \$uri \$status \$upstream_cache_status \$body_bytes_sent';
access_log $W/zonal-$1.log zonal;
$conf"
	zonal_pid=$ngx_pid
}

# --- a node --------------------------------------------------------------------------
# node RUN I URL: waits for the release, mounts URL at $C/RUN-I, reads
# first.txt, then every file; writes "first_ns total_ns cpu_ticks
# served_bytes rss_kb ok|FAIL why" to $W/res/RUN.I (absolute clock; the
# daemon's CPU ticks and VmRSS at the end)
node() {
	local run=$1 i=$2 url=$3 mp=$C/$1-$2 t1 t2 sum pid cpu served rss
	local res=$W/res/$run.$i cache=${SHARED_CACHE:-$C/cache-$1-$2}
	exec 4< "$W/go-$run"
	: > "$W/ready-$run.$i"
	read -r _ <&4 || true
	exec 4<&-
	# shellcheck disable=SC2086 # CFS_MOUNT_OPTS is a list of words
	if ! "$mnt_bin" ${CFS_MOUNT_OPTS:-} --cache "$cache" --log "$W/$run-$i.log" \
		"$url" fleet "$mp" > "$W/$run-$i.out" 2>&1; then
		echo "0 0 0 0 0 FAIL mount: $(tail -n 1 "$W/$run-$i.out")" > "$res"
		return
	fi
	if ! head -n 1 "$mp/first.txt" > /dev/null; then
		echo "0 0 0 0 0 FAIL first.txt" > "$res"
		return
	fi
	t1=$(now)
	sum=$(cd "$mp" && tr '\n' '\0' < "$W/files" | xargs -0 cat 2> "$W/$run-$i.err" | sha256sum | cut -d' ' -f1)
	t2=$(now)
	pid=$(pgrep -f -- "cfs-mount.* $mp\$" | sort -n | tail -n 1 || true)
	cpu=$([ -n "$pid" ] && cpu_ticks "$pid" || echo 0)
	served=$(json_get "$("$mnt_bin" --stats "$mp" 2> /dev/null || true)" read_bytes)
	rss=$(awk '$1 == "VmRSS:" { print $2 }' "/proc/$pid/status" 2> /dev/null || true)
	if [ "$sum" != "$want_sum" ]; then
		echo "$t1 $t2 $cpu ${served:-0} ${rss:-0} FAIL wrong bytes: $(head -n 1 "$W/$run-$i.err")" > "$res"
	else
		echo "$t1 $t2 $cpu ${served:-0} ${rss:-0} ok" > "$res"
	fi
}
export -f node now cpu_ticks json_get
export W C mnt_bin want_sum hz

# warm RUN URL: one node mounts URL, reads every file and unmounts
warm() {
	local mp=$C/$1-warm sum
	mkdir -p "$mp"
	MOUNTS+=("$mp")
	# shellcheck disable=SC2086 # CFS_MOUNT_OPTS is a list of words
	"$mnt_bin" ${CFS_MOUNT_OPTS:-} --cache "$C/cache-$1-warm" --log "$W/$1-warm.log" "$2" fleet "$mp" ||
		die "the warming node's mount failed: $(tail -n 3 "$W/$1-warm.log")"
	sum=$(cd "$mp" && tr '\n' '\0' < "$W/files" | xargs -0 cat | sha256sum | cut -d' ' -f1)
	[ "$sum" = "$want_sum" ] || die "the warming node read wrong bytes"
	fusermount3 -u "$mp"
	rm -rf --one-file-system "$C/cache-$1-warm"
}

# pct P FILE: the P-th percentile (nearest rank) of the numbers in FILE
pct() { sort -g "$2" | awk -v p="$1" '{ a[NR] = $1 } END { r = int((p * NR + 99) / 100); if (r < 1) r = 1; print a[r] }'; }

# one_run MODE N: N nodes at once; appends a result line to $W/res/table
one_run() {
	local mode=$1 n=$2 run=$1-$2 url i t0 reqs uniq bytes tags fails=0 mps=() shared=
	local -a nodes=()
	case $mode in
	zonal | zonal-warm) start_zonal "$run"; url=http://127.0.0.1:$ngx_port/;;
	direct) url=http://127.0.0.1:$link_port/;;
	shared) url=http://127.0.0.1:$link_port/ shared=$C/cache-$run-shared;;
	*) die "unknown mode $mode";;
	esac
	: > "$W/origin.log"
	[ "$mode" = zonal-warm ] && warm "$run" "$url"
	rm -f "$W/go-$run" "$W"/ready-"$run".*
	mkfifo "$W/go-$run"
	exec 3<> "$W/go-$run" # a writer, so that the nodes' opens do not block
	for ((i = 1; i <= n; i++)); do
		mkdir -p "$C/$run-$i"
		MOUNTS+=("$C/$run-$i")
		mps+=("$C/$run-$i")
		# 3>&-: the nodes must not hold the FIFO's writer
		CFS_MOUNT_OPTS=${CFS_MOUNT_OPTS:-} SHARED_CACHE=$shared timeout "$run_timeout" \
			bash -c 'node "$@"' _ "$run" "$i" "$url" 3>&- &
		nodes+=($!)
	done
	wait_for bash -c "[ \$(ls $W | grep -c '^ready-$run\.') -eq $n ]" || die "the nodes did not get ready"
	t0=$(now)
	exec 3>&- # the last writer: every node reads EOF, at once
	for i in "${!nodes[@]}"; do
		wait "${nodes[$i]}" || echo "0 0 0 0 0 FAIL timeout or error ($?)" > "$W/res/$run.$((i + 1))"
	done
	for mp in "${mps[@]}"; do
		fusermount3 -u "$mp" 2> /dev/null || umount -l "$mp" 2> /dev/null || true
	done
	[ "$mode" = zonal ] && stop_nginx "$zonal_pid"
	# origin: object GETs, distinct objects, every body byte, tag GETs
	reqs=$(awk '$1 == "GET" && $2 ~ /\/objects\//' "$W/origin.log" | wc -l)
	uniq=$(awk '$1 == "GET" && $2 ~ /\/objects\// { print $2 }' "$W/origin.log" | sort -u | wc -l)
	bytes=$(awk '{ s += $4 } END { print s + 0 }' "$W/origin.log")
	tags=$(awk '$2 ~ /\/tags\//' "$W/origin.log" | wc -l)
	: > "$W/first.$run"
	: > "$W/total.$run"
	cpu=0 served=0 rss_max=0
	for ((i = 1; i <= n; i++)); do
		read -r t1 t2 c s r ok why < "$W/res/$run.$i" || { t1=0 ok=FAIL why="no result"; }
		if [ "$ok" != ok ]; then
			fails=$((fails + 1))
			note "$run node $i: FAILED ${why:-}"
			continue
		fi
		calc "($t1 - $t0) / 1e6" >> "$W/first.$run"
		calc "($t2 - $t0) / 1e6" >> "$W/total.$run"
		cpu=$((cpu + c)) served=$((served + s))
		[ "$r" -gt "$rss_max" ] && rss_max=$r
	done
	rm -rf --one-file-system "$C"/cache-"$run"-* "$W/zcache-$run"
	rmdir "$C/$run"-* 2> /dev/null || true
	local f50=nan f99=nan t50=nan t99=nan per=nan
	if [ -s "$W/first.$run" ]; then
		f50=$(pct 50 "$W/first.$run") f99=$(pct 99 "$W/first.$run")
		t50=$(pct 50 "$W/total.$run") t99=$(pct 99 "$W/total.$run")
	fi
	[ "$served" -gt 0 ] && per=$(calc "$cpu / $hz / ($served / 1e9)")
	local rpo bamp
	rpo=$(calc "$reqs / $n_obj") bamp=$(calc "$bytes / $obj_bytes")
	printf '%s %s %s %s %s %s %s %s %s %s %s %s %s\n' "$mode" "$n" "$rpo" "$bamp" "$f50" "$f99" "$t50" "$t99" \
		"$per" "$reqs" "$uniq" "$tags" "$fails" >> "$W/res/table"
	printf '{"bench":"fleet","mode":"%s","n":%d,"origin_requests_per_object":%.3f,"origin_bytes_per_object_byte":%.3f,' \
		"$mode" "$n" "$rpo" "$bamp" >> "$out_json"
	printf '"first_p50_ms":%s,"first_p99_ms":%s,"total_p50_ms":%s,"total_p99_ms":%s,"cpu_s_per_gb":%s,' \
		"$f50" "$f99" "$t50" "$t99" "$per" | sed 's/nan/null/g' >> "$out_json"
	printf '"origin_object_requests":%d,"origin_distinct_objects":%d,"origin_tag_requests":%d,"objects":%d,"object_bytes":%d,"failed_nodes":%d,"daemon_rss_max_kb":%d}\n' \
		"$reqs" "$uniq" "$tags" "$n_obj" "$obj_bytes" "$fails" "$rss_max" >> "$out_json"
	note "$mode N=$n: origin $reqs object requests ($uniq distinct of $n_obj), $bytes bytes; first p50 $f50 ms p99 $f99 ms; total p50 $t50 ms p99 $t99 ms; daemon RSS max $rss_max kB; $fails failed"
}

for n in $counts; do
	for mode in $modes; do
		one_run "$mode" "$n"
	done
done

# --- report --------------------------------------------------------------------------
# shellcheck disable=SC1091 # os-release: read at run time
printf '\nmachine: %d CPUs (%s), %s, kernel %s\n' "$(nproc)" \
	"$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)" "$(. /etc/os-release && echo "$PRETTY_NAME")" "$(uname -r)"
echo "image: $small_files files of 1-32 KiB + a $big_mb MiB file (random bytes), $n_obj objects, $obj_bytes bytes"
echo "link to the origin: cfs-faultproxy latency_ms=$latency, rate=$rate per connection (no aggregate cap)"
echo "zonal: the zonal block of docs/FLEET.md, worker_processes auto, cold for every run"
echo "cfs-mount options: defaults${CFS_MOUNT_OPTS:+ + $CFS_MOUNT_OPTS} (--prefetch list; the image has no list)"
echo "NOTE: $(nproc) cores: with N > $(nproc) the nodes, both nginx and the proxy share them; these rows measure"
echo "      coalescing and origin load, not how a node's latency scales with N."
printf '%-10s %4s %9s %9s %9s %9s %9s %9s %9s %7s %7s\n' mode N req/obj bytes/obj first-p50 first-p99 total-p50 \
	total-p99 cpu-s/GB tag-req failed
while read -r mode n rpo bamp f50 f99 t50 t99 per reqs uniq tags fails; do
	# shellcheck disable=SC2059 # the format is the caller's
	fmt() { if [ "$1" = nan ]; then echo -; else printf "$2" "$1"; fi; }
	printf '%-10s %4s %9.2f %9.3f %9s %9s %9s %9s %9s %7s %7s\n' "$mode" "$n" "$rpo" "$bamp" "$(fmt "$f50" %.0f)" \
		"$(fmt "$f99" %.0f)" "$(fmt "$t50" %.0f)" "$(fmt "$t99" %.0f)" "$(fmt "$per" %.2f)" "$tags" "$fails"
done < "$W/res/table"
echo "(req/obj: object GETs the origin served / objects in the store (goal 1.00 through the zonal cache);"
echo " bytes/obj: body bytes the origin sent / the store's object bytes (goal <= 1.02); first, total: ms from the"
echo " common release to first.txt read / every file read and checked, p50 and p99 (nearest rank) over the nodes"
echo " that did not fail; failed: nodes whose mount or reads failed (an EIO past --deadline) or read wrong bytes;"
echo " cpu-s/GB: the nodes' cfs-mount daemons' CPU seconds per GB they served; tag-req: tag GETs at the origin)"
echo "results: $out_json"
