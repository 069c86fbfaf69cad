#!/usr/bin/env bash
# cfs-load: safetensors weights into memory, beside the peers that bound it
# or that users run instead, on the same model in the same run.
#
# Usage: bench/loader.sh [SIZE] [RUNS]   (SIZE of the model, default 2G;
#                                          RUNS per figure, default 5: medians)
#
# Sections (CASES, default "warm cold remote gpu"):
#   warm    the model file in the page cache (read once before): memcpy of
#           the tensors from a populated mmap into a prefaulted destination
#           (cfs-loadpeers memcpy: the ceiling), the same into fresh malloc'd
#           memory with its page faults on the clock (memcpy-fresh: what a
#           plain copy into a new buffer costs, as cfs-load's total_s
#           includes its allocation), a naive loader (cfs-loadpeers
#           naive: per tensor malloc, read, memcpy into the destination,
#           free), cfs-load --target host in place and --staged (buffered
#           reads: --no-direct, since O_DIRECT would skip the page cache),
#           and cfs-load with its default I/O.  Goals: cfs/memcpy >= 0.90,
#           cfs/naive >= 3.
#   cold    the page cache dropped before every run, the model on the local
#           disk: cfs-load default (O_DIRECT), --no-direct, the naive loader,
#           one-thread 16 MiB reads (cfs-loadpeers read, dd's figure).
#   remote  cfs-load direct mode (no FUSE) from a cfs store served by nginx
#           through cfs-faultproxy (latency_ms=LATENCY_MS, rate=RATE per
#           connection, as bench/remote.sh), a fresh chunk cache and cold
#           page cache each run, beside curl of the same model file from the
#           same nginx and proxy: one connection and 16 parallel ranges.
#           Goal: cfs >= 0.90 of the best curl.
#   gpu     only where nvidia-smi works: cfs-load --target cuda --probe
#           (pinned host-to-device bandwidth) against the end-to-end load of
#           a GPU_SIZE model (default 8G) from the page cache.  Goal >= 0.85.
# Seconds are what each tool measures itself (cfs-load --json total_s,
# allocation included; loadpeers: its copies / its loop, allocation included
# for naive); wall-s is the whole process (exec, parse, exit) for reference.
#
# Needs root (drop_caches).  Installs nginx and curl with apt-get if missing.
# Env: CFS_LOAD, CFS_MKMODEL, CFS_LOADPEERS, CFS_PACK, CFS_FAULTPROXY
#      (binaries; default build/...), SIZE, RUNS, CASES, LATENCY_MS (20),
#      RATE (100M), PAR (16, curl's ranges), GPU_SIZE (8G), DTYPE (mixed),
#      BENCH_DIR (server data, tmpfs: /dev/shm), CACHE_DIR (the model and the
#      client caches, the local disk: /var/tmp).
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
size=${1:-${SIZE:-2G}}
runs=${2:-${RUNS:-5}}
cases=${CASES:-warm cold remote gpu}
latency=${LATENCY_MS:-20}
rate=${RATE:-100M}
par=${PAR:-16}
gpu_size=${GPU_SIZE:-8G}
dtype=${DTYPE:-mixed}
load_bin=${CFS_LOAD:-$top/build/loader/cfs-load}
mkmodel=${CFS_MKMODEL:-$top/build/tools/cfs-mkmodel}
peers=${CFS_LOADPEERS:-$top/build/bench/cfs-loadpeers}

[ "$(id -u)" = 0 ] || die "needs root (drop_caches)"
need_built "$load_bin" "$mkmodel" "$peers"
case " $cases " in *" remote "*)
	need_built "$pack" "$proxy_bin"
	find_missing nginx:nginx curl:curl
	apt_install_missing
	nginx_bin=$(command -v nginx || echo /usr/sbin/nginx) ;;
esac

make_scratch loader
mkdir -p "$W/res" "$W/srv/raw"

# --- measuring -------------------------------------------------------------------
# jf FILE KEY: a number (a boolean as 1 or 0) of the one-line JSON object
# in FILE; nothing when absent
jf() {
	{ grep -o "\"$2\"[[:space:]]*:[[:space:]]*[-0-9.eE+a-z]*" "$1" || true; } | head -n 1 |
		sed 's/.*:[[:space:]]*//; s/^true$/1/; s/^false$/0/'
}

# measure SECTION METHOD PREP WHAT CMD...: RUNS runs of CMD, each after
# PREP (drop: page cache dropped; warm: MODEL_FILE(S) read; a command line
# for eval).  CMD prints a JSON object with total_s (cfs-load --json,
# cfs-loadpeers) or nothing (then the wall time counts).  One line per run
# in $W/res/SECTION.METHOD: seconds wall bytes direct_io in_place setup_s cpu_s
declare -A desc
order=()
measure() {
	local sec=$1 m=$2 prep=$3 r t0 t1 s wall b dio inp setup c0 c1 out=$W/out.json
	desc[$sec.$m]=$4
	shift 4
	order+=("$sec.$m")
	: > "$W/res/$sec.$m"
	for ((r = 0; r < runs; r++)); do
		case $prep in
		drop) drop_caches ;;
		warm) cat "${warm_files[@]}" > /dev/null ;;
		*) eval "$prep" ;;
		esac
		child_cpu c0
		t0=$(now)
		if ! "$@" > "$out" 2> "$W/err.txt"; then
			echo "  $sec $m run $((r + 1)): FAILED: $* : $(head -n 3 "$W/err.txt")" >&2
			echo FAIL > "$W/res/$sec.$m"
			return 0
		fi
		t1=$(now)
		child_cpu c1
		wall=$(calc "($t1 - $t0) / 1e9")
		s=$(jf "$out" total_s)
		[ -n "$s" ] || s=$wall
		b=$(jf "$out" bytes)
		dio=$(jf "$out" direct_io)
		inp=$(jf "$out" in_place)
		setup=$(jf "$out" setup_s)
		echo "$s $wall ${b:-nan} ${dio:--} ${inp:--} ${setup:-nan} $(calc "$c1 - $c0")" >> "$W/res/$sec.$m"
		echo "  $sec $m run $((r + 1)): $(tail -n 1 "$W/res/$sec.$m")" >&2
	done
}

# child_cpu VAR: VAR = CPU seconds (user + system) of the children this
# shell has waited for so far (bash's times, run in this shell, not in a
# command substitution's)
child_cpu() {
	local u s
	times > "$W/times"
	read -r u s < <(tail -n 1 "$W/times")
	printf -v "$1" '%s' "$(calc "$(sec_of "$u") + $(sec_of "$s")")"
}
sec_of() { # 1m2.345s -> 62.345
	local m=${1%%m*} r=${1#*m}
	calc "$m * 60 + ${r%s}"
}

# gbps KEY BYTES: GB/s of the median seconds
gbps() { calc "$2 / 1e9 / $(col "$1" 1)"; }

# --- the model ---------------------------------------------------------------------
note "cfs-mkmodel --size $size --dtype $dtype into $C/model (local disk)"
"$mkmodel" --size "$size" --dtype "$dtype" --seed 1 "$C/model/" > /dev/null || die "cfs-mkmodel failed"
model=$C/model/model.safetensors
[ -f "$model" ] || die "cfs-mkmodel wrote no $model: $(ls "$C/model")"
file_bytes=$(stat -c %s "$model")
sync
# the tensor bytes, as cfs-load counts them
"$load_bin" --json --no-direct "$model" > "$W/probe.json" || die "cfs-load $model failed"
bytes=$(jf "$W/probe.json" bytes)
warm_files=("$model")

for c in $cases; do
	case $c in
	warm)
		note "warm: from the page cache"
		measure warm memcpy warm "memcpy from a populated mmap into a prefaulted destination" \
			"$peers" memcpy "$model"
		measure warm memcpy-fresh warm "memcpy from a populated mmap into a fresh malloc (faults on the clock)" \
			"$peers" memcpy-fresh "$model"
		measure warm naive warm "naive: per tensor malloc, read(), memcpy, free" "$peers" naive "$model"
		measure warm cfs warm "cfs-load --target host --no-direct (in place)" \
			"$load_bin" --json --target host --no-direct "$model"
		measure warm cfs-staged warm "cfs-load --target host --no-direct --staged" \
			"$load_bin" --json --target host --no-direct --staged "$model"
		measure warm cfs-default warm "cfs-load --target host (default I/O)" \
			"$load_bin" --json --target host "$model"
		;;
	cold)
		note "cold: page cache dropped before every run"
		measure cold cfs drop "cfs-load --target host (default: O_DIRECT)" \
			"$load_bin" --json --target host "$model"
		measure cold cfs-nodirect drop "cfs-load --target host --no-direct" \
			"$load_bin" --json --target host --no-direct "$model"
		measure cold naive drop "naive: per tensor malloc, read(), memcpy, free" "$peers" naive "$model"
		measure cold read drop "read() 16 MiB blocks, one thread, into a prefaulted destination" \
			"$peers" read "$model"
		;;
	remote)
		note "remote: packing the model into a store on tmpfs; nginx; proxy latency_ms=$latency rate=$rate"
		"$pack" -q --tag model "$C/model" "$W/srv/store" > "$W/pack.out" || die "cfs-pack failed"
		ref=$(tail -n 1 "$W/pack.out")
		store_bytes=$(du -sb "$W/srv/store" | cut -f1)
		cp "$model" "$W/srv/raw/model.safetensors"
		echo ok > "$W/srv/ping"
		start_nginx ping
		start_proxy link "$ngx_port" "latency_ms=$latency
rate=$rate"
		# shellcheck disable=SC2154 # set by start_proxy
		plink=$port_link
		raw_url=http://127.0.0.1:$plink/raw/model.safetensors
		# remote_prep: cold client (page cache, empty chunk cache), the proxy's counters
		remote_prep() { rm -rf "$C/cache"; drop_caches; }
		# curl_ranges URL N: the file in N equal ranges at once
		curl_ranges() {
			local url=$1 n=$2 i lo hi step pids=()
			step=$(((file_bytes + n - 1) / n))
			for ((i = 0; i < n; i++)); do
				lo=$((i * step)); hi=$((lo + step - 1))
				[ "$hi" -lt "$file_bytes" ] || hi=$((file_bytes - 1))
				curl -sf -r "$lo-$hi" -o /dev/null "$url" &
				pids+=($!)
			done
			for i in "${pids[@]}"; do wait "$i" || return 1; done
		}
		s0=$(proxy_json "$plink")
		measure remote cfs remote_prep "cfs-load direct mode, http store via the proxy, fresh --cache" \
			"$load_bin" --json --target host --cache "$C/cache" "http://127.0.0.1:$plink/store" "$ref" model.safetensors
		s1=$(proxy_json "$plink")
		cfs_req=$((($(json_get "$s1" requests) - $(json_get "$s0" requests)) / runs))
		cfs_conn=$((($(json_get "$s1" connections) - $(json_get "$s0" connections) - 1) / runs))
		cfs_down=$((($(json_get "$s1" bytes_down) - $(json_get "$s0" bytes_down)) / runs))
		measure remote cfs-cache-sync remote_prep "the same, fresh --cache written without io_uring" \
			env CFS_NO_IO_URING=1 "$load_bin" --json --target host --cache "$C/cache" \
			"http://127.0.0.1:$plink/store" "$ref" model.safetensors
		measure remote cfs-nocache remote_prep "cfs-load direct mode, http store via the proxy, no cache dir" \
			"$load_bin" --json --target host "http://127.0.0.1:$plink/store" "$ref" model.safetensors
		measure remote curl-1 remote_prep "curl of the model file, 1 connection" curl -sf -o /dev/null "$raw_url"
		measure remote "curl-$par" remote_prep "curl of the model file, $par parallel ranges" \
			curl_ranges "$raw_url" "$par"
		;;
	gpu)
		if ! command -v nvidia-smi > /dev/null 2>&1 || ! nvidia-smi -L > /dev/null 2>&1; then
			note "gpu: skipped (no working nvidia-smi here)"
			gpu_skipped=1
			continue
		fi
		note "gpu: $(nvidia-smi -L | head -n 1); model of $gpu_size"
		"$mkmodel" --size "$gpu_size" --dtype "$dtype" --seed 2 "$C/gpumodel/" > /dev/null || die "cfs-mkmodel $gpu_size failed"
		gmodel=$C/gpumodel/model.safetensors
		"$load_bin" --json --no-direct "$gmodel" > "$W/gprobe.json" || die "cfs-load $gmodel failed"
		gbytes=$(jf "$W/gprobe.json" bytes)
		warm_files=("$gmodel")
		: > "$W/res/gpu.probe"
		for ((r = 0; r < runs; r++)); do
			"$load_bin" --target cuda --probe --json > "$W/p.json" 2> "$W/err.txt" ||
				{ echo "  gpu probe FAILED: $(head -n 3 "$W/err.txt")" >&2; break; }
			v=$(jf "$W/p.json" probe_gbps)
			[ -n "$v" ] || { echo "  gpu probe: no probe_gbps in $(cat "$W/p.json")" >&2; break; }
			v=$(calc "$v * 1e9")
			echo "$v" >> "$W/res/gpu.probe"
			echo "  gpu probe run $((r + 1)): $v B/s" >&2
		done
		measure gpu cuda warm "cfs-load --target cuda --no-direct, from the page cache" \
			"$load_bin" --json --target cuda --no-direct "$gmodel"
		measure gpu cuda-default warm "cfs-load --target cuda (default I/O), file in the page cache" \
			"$load_bin" --json --target cuda "$gmodel"
		measure gpu cuda-cold drop "cfs-load --target cuda (default I/O), page cache dropped" \
			"$load_bin" --json --target cuda "$gmodel"
		warm_files=("$model")
		;;
	*) die "unknown case $c" ;;
	esac
done

# --- report ----------------------------------------------------------------------------
printf '\nmachine: %d CPUs, %s, kernel %s, %s GiB RAM; model %s (%.1f MB of tensors, %s); median of %d runs\n' \
	"$(nproc)" "$(. /etc/os-release && echo "$PRETTY_NAME")" "$(uname -r)" \
	"$(awk '/MemTotal/ {printf "%.0f", $2 / 1048576}' /proc/meminfo)" "$size" "$(calc "$bytes / 1e6")" "$dtype" "$runs"
printf 'transparent huge pages: enabled %s, defrag %s\n' \
	"$(grep -o '\[[a-z+]*\]' /sys/kernel/mm/transparent_hugepage/enabled 2> /dev/null || echo '?')" \
	"$(grep -o '\[[a-z+]*\]' /sys/kernel/mm/transparent_hugepage/defrag 2> /dev/null || echo '?')"
printf '%-7s %-13s %8s %7s %7s %7s %6s %4s %5s %8s  %s\n' section method seconds GB/s setup-s wall-s cpu-s dio inpl \
	"vs cfs" what
for k in "${order[@]}"; do
	sec=${k%%.*}; m=${k#*.}
	if grep -q FAIL "$W/res/$k"; then
		printf '%-7s %-13s %8s  %s\n' "$sec" "$m" FAILED "${desc[$k]}"
		continue
	fi
	b=$bytes
	[ "$sec" != gpu ] || b=$gbytes
	[ "$sec" != remote ] || [[ $m == cfs* ]] || b=$file_bytes
	ratio=-
	base=$sec.cfs
	[ "$sec" != gpu ] || base=gpu.cuda
	if ok_res "$base"; then
		ratio=$(printf '%.2fx' "$(calc "$(col "$k" 1) / $(col "$base" 1)")")
	fi
	setup=$(col "$k" 6)
	[ "$setup" = nan ] && setup=- || setup=$(printf '%.3f' "$setup")
	printf '%-7s %-13s %8.3f %7.2f %7s %7.3f %6.2f %4s %5s %8s  %s\n' "$sec" "$m" "$(col "$k" 1)" \
		"$(gbps "$k" "$b")" "$setup" "$(col "$k" 2)" "$(col "$k" 7)" "$(awk 'NR==1 {print $4}' "$W/res/$k")" "$(awk 'NR==1 {print $5}' "$W/res/$k")" \
		"$ratio" "${desc[$k]}"
done
echo "(seconds: each tool's own clock, cfs-load's total_s includes its allocation, setup-s (its part) alone;"
echo " wall-s: the whole process (exec, parse, page faults of a prefaulted destination, exit); cpu-s: its CPU"
echo " seconds, user + system (curl: all of its processes);"
echo " dio/inpl: cfs-load's direct_io / in_place flags; vs cfs: seconds / cfs's seconds, above 1: cfs faster;"
echo " remote GB/s: the file's bytes for curl, the tensor bytes for cfs)"
if [ -n "${cfs_req:-}" ]; then
	printf 'remote, per cfs run: %d requests, %d connections, %.1f MB down (the store holds %.1f MB; the file is %.1f MB)\n' \
		"$cfs_req" "$cfs_conn" "$(calc "$cfs_down / 1e6")" "$(calc "$store_bytes / 1e6")" "$(calc "$file_bytes / 1e6")"
fi

# --- goals -------------------------------------------------------------------------------
goal() { # TEXT VALUE GOAL
	printf 'goal %s: %.2f (goal >= %s) %s\n' "$1" "$2" "$3" "$(awk "BEGIN{print ($2 >= $3) ? \"met\" : \"NOT met\"}")"
}
if ok_res warm.cfs && ok_res warm.memcpy; then
	goal "warm, cfs in place / memcpy (GB/s)" "$(calc "$(col warm.memcpy 1) / $(col warm.cfs 1)")" 0.90
	ok_res warm.cfs-staged &&
		goal "warm, cfs staged / memcpy (GB/s)" "$(calc "$(col warm.memcpy 1) / $(col warm.cfs-staged 1)")" 0.90
	# memcpy's destination is prefaulted outside its clock: the same for cfs
	rs=$(awk '{print $1 - $6}' "$W/res/warm.cfs" | median)
	goal "warm, cfs in place without its setup (allocation) / memcpy (GB/s)" "$(calc "$(col warm.memcpy 1) / $rs")" 0.90
fi
if ok_res warm.cfs && ok_res warm.memcpy-fresh; then
	goal "warm, cfs in place / memcpy into fresh memory, both with their allocation (GB/s)" \
		"$(calc "$(col warm.memcpy-fresh 1) / $(col warm.cfs 1)")" 0.90
fi
if ok_res warm.cfs && ok_res warm.naive; then
	goal "warm, cfs / naive (GB/s)" "$(calc "$(col warm.naive 1) / $(col warm.cfs 1)")" 3
fi
if ok_res cold.cfs && ok_res cold.naive; then
	goal "cold, cfs / naive (GB/s)" "$(calc "$(col cold.naive 1) / $(col cold.cfs 1)")" 1
fi
if ok_res remote.cfs; then
	best=
	for k in remote.curl-1 "remote.curl-$par"; do
		ok_res "$k" || continue
		v=$(gbps "$k" "$file_bytes")
		if [ -z "$best" ] || awk "BEGIN{exit !($v > $best)}"; then best=$v; fi
	done
	[ -z "$best" ] || goal "remote, cfs direct mode / best curl (GB/s)" "$(calc "$(gbps remote.cfs "$bytes") / $best")" 0.90
fi
if [ -s "$W/res/gpu.probe" ] && ok_res gpu.cuda; then
	pb=$(median < "$W/res/gpu.probe")
	printf 'gpu: pinned H2D probe %.2f GB/s; model %.1f GB\n' "$(calc "$pb / 1e9")" "$(calc "$gbytes / 1e9")"
	goal "gpu, end-to-end / pinned H2D (page cache)" "$(calc "$gbytes / $(col gpu.cuda 1) / $pb")" 0.85
elif [ -n "${gpu_skipped:-}" ]; then
	echo "gpu: skipped, no working nvidia-smi on this machine"
fi
