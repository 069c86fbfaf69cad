#!/usr/bin/env bash
# Packing a large image straight from a registry over a capped link, beside
# what users do today (skopeo copy to an OCI layout, then cfs-pack oci:) and
# beside packing the same layout already on local disk, in one run.
#
# Usage: bench/pack-registry.sh [RUNS]      (cold runs per method, default 3)
#
# What it does, all on 127.0.0.1:
#   image    a tree of $ROOTFS (default the torch rootfs of
#            bench/coldstart-remote.sh, /var/tmp/cfs-bench-rootfs-torch, about
#            1.6 GB: make it with WORKLOADS=torch bench/coldstart-remote.sh 1)
#            split into up to four layers (usr/lib/x86_64-linux-gnu, the rest
#            of usr/lib, var, everything else), gzip-compressed by umoci raw
#            add-layer into an OCI layout, made once and cached in
#            $IMAGE_CACHE (/var/tmp/cfs-bench-oci-pack-registry).
#   registry docker-registry (tests/lib-registry.sh, plain http, no auth),
#            its storage in $W (tmpfs: the server side is not the bottleneck),
#            the image pushed there once with skopeo as bench/big:1.
#   link     cfs-faultproxy in front of it: latency_ms=$LATENCY_MS (20) and
#            rate=$RATE (100000000 bytes/s) per connection, the issue's capped
#            link model (no aggregate cap: the proxy has none).
#   methods  (a) skopeo+pack  skopeo copy docker://PROXY/bench/big:1 oci:DIR:1,
#                             then cfs-pack oci:DIR:1 STORE: two passes
#            (b) pack-local   cfs-pack oci:$IMAGE_CACHE:1 STORE, the image
#                             already on local disk: the issue's baseline
#            (c) pack-docker  cfs-pack --tls-verify=false docker://PROXY/bench/big:1
#                             STORE, measured only when cfs-pack --help
#                             mentions docker://
#   per run  a fresh store, the previous run's layout removed, the page cache
#            dropped (the registry's tmpfs stays: server memory), then timed:
#            wall time; CPU-s, user + system of the commands (/usr/bin/time,
#            summed for (a)); peak RSS (the larger one for (a)); peak disk,
#            the most bytes the run's directory held outside the store (the
#            layout, and TMPDIR, which points there), sampled by du every
#            0.2 s; link MB, the bytes the proxy carried (at least the
#            layers' for (a) and (c), or the run is refused).  Every method
#            must give the same image reference.
# Prints one table (median of RUNS) with ratios against (b), and the issue's
# goals: (c)/(b) <= 1.15 and (a)/(c) >= 1.15 in wall time, (c) no disk
# beyond the store.
#
# Needs root (drop_caches), a build in build/ (cfs-pack, cfs-faultproxy),
# docker-registry, skopeo, umoci, curl, jq (scripts/install-deps.sh).
#
# Env: CFS_PACK, CFS_FAULTPROXY (binaries; default build/...), LATENCY_MS
#      (20), RATE (100000000), ROOTFS (the tree to pack), IMAGE_CACHE (the
#      OCI layout made from it), BENCH_DIR (registry storage, /dev/shm),
#      CACHE_DIR (layouts and stores: the local disk, /var/tmp).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib-capped.sh
source "$here/lib-capped.sh"

[ "$(id -u)" = 0 ] || die "needs root (drop_caches)"
need_built "$pack" "$proxy_bin"
for c in docker-registry skopeo umoci curl jq /usr/bin/time; do
	command -v "$c" > /dev/null 2>&1 || die "$c not installed (scripts/install-deps.sh)"
done
pack_help=$("$pack" --help 2>&1 || true)
have_docker=0
grep -q 'docker://' <<< "$pack_help" && have_docker=1

make_scratch pack-registry run
run=$C/run
# skopeo's and umoci's temporary files count as the run's disk.
export TMPDIR=$run/tmp
mkdir -p "$TMPDIR" "$W/res"

# --- the image, once --------------------------------------------------------------
[ -s "$image/index.json" ] || make_oci_image "$rootfs" "$image"
manifest=$image/blobs/sha256/$(jq -r '.manifests[0].digest | ltrimstr("sha256:")' "$image/index.json")
[ -f "$manifest" ] || die "$image/index.json names no manifest that is there"
layers_bytes=$(jq '[.layers[].size] | add' "$manifest")
n_layers=$(jq '.layers | length' "$manifest")
tree_bytes=$(du -sb --apparent-size "$rootfs" 2> /dev/null | cut -f1 || echo 0)

# --- registry and link ---------------------------------------------------------------
start_registry plain
note "pushing the image to $REG_HOST"
reg_push "oci:$image:1" bench/big:1
start_proxy proxy "${REG_HOST#*:}" "$(printf 'latency_ms=%s\nrate=%s\n' "$latency" "$rate")"
# shellcheck disable=SC2154 # set by start_proxy
remote=docker://127.0.0.1:$port_proxy/bench/big:1

# --- measuring ---------------------------------------------------------------------------
# disk_sampler FILE: writes the most bytes seen in $run outside its store to
# FILE, every 0.2 s, until killed.
disk_sampler() {
	local max=0 b
	while :; do
		b=$(du -sb --exclude=store "$run" 2> /dev/null | cut -f1) || b=0
		[ "${b:-0}" -gt "$max" ] && { max=$b; echo "$max" > "$1"; }
		sleep 0.2
	done
}
# timed NAME CMD...: CMD under /usr/bin/time, its "wall user sys maxrss_kb"
# appended to $run/NAME.time; stdout in $run/NAME.out
timed() {
	local name=$1
	shift
	/usr/bin/time -f '%e %U %S %M' -a -o "$run/times" "$@" > "$run/$name.out" 2> "$run/$name.err" ||
		die "$name: $* exited $?: $(tail -n 3 "$run/$name.err")"
}
do_a() {
	timed skopeo skopeo --insecure-policy copy -q --src-tls-verify=false "$remote" "oci:$run/layout:1"
	timed pack "$pack" -q "oci:$run/layout:1" "$run/store"
}
do_b() { timed pack "$pack" -q "oci:$image:1" "$run/store"; }
do_c() { timed pack "$pack" -q --tls-verify=false "$remote" "$run/store"; }

ref=
declare -a methods=(a b)
[ "$have_docker" = 1 ] && methods+=(c)
# measure M: one cold run of method M; appends "wall cpu rss_mb disk_mb
# link_mb first_wall" to $W/res/M (link_mb: bytes through the proxy;
# first_wall: the first command's wall time, skopeo's for (a))
measure() {
	local m=$1 t0 t1 spid r d0 d1
	rm -rf --one-file-system "$run"
	mkdir -p "$TMPDIR"
	: > "$run/times"
	echo 0 > "$W/disk.max"
	drop_caches
	disk_sampler "$W/disk.max" &
	spid=$!
	d0=$(json_get "$(proxy_json "$port_proxy")" bytes_down)
	t0=$(now)
	"do_$m"
	t1=$(now)
	d1=$(json_get "$(proxy_json "$port_proxy")" bytes_down)
	[ "$m" = b ] || [ $((d1 - d0)) -ge "$layers_bytes" ] ||
		die "($m): only $((d1 - d0)) bytes came through the link, the layers are $layers_bytes"
	kill "$spid" 2> /dev/null || true
	wait "$spid" 2> /dev/null || true
	r=$(grep -o 'sha256:[0-9a-f]*' "$run/pack.out" | head -n 1)
	[ -n "$r" ] || die "($m): cfs-pack printed no reference"
	[ -z "$ref" ] || [ "$r" = "$ref" ] || die "($m) gave $r, (a) gave $ref: not the same image"
	ref=$r
	# The last sample may miss the final size: the run's directory as it ends counts too.
	du -sb --exclude=store "$run" | cut -f1 >> "$W/disk.max"
	awk -v wall="$(calc "($t1 - $t0) / 1e9")" -v disk="$(sort -n "$W/disk.max" | tail -n 1)" -v link=$((d1 - d0)) '
		NR == 1 { first = $1 } { cpu += $2 + $3; if ($4 > rss) rss = $4 }
		END { printf "%.2f %.2f %.0f %.0f %.0f %.2f\n", wall, cpu, rss / 1024, disk / 1e6, link / 1e6, first }' \
		"$run/times" >> "$W/res/$m"
}

note "$runs cold runs of: ${methods[*]}"
for ((i = 1; i <= runs; i++)); do
	for m in "${methods[@]}"; do
		measure "$m"
		note "run $i ($m): $(tail -n 1 "$W/res/$m") (wall s, CPU-s, peak RSS MB, peak disk MB, link MB, first step s)"
	done
done

# --- report ------------------------------------------------------------------------------
name_of() {
	case $1 in
	a) echo "(a) skopeo copy + cfs-pack oci:";;
	b) echo "(b) cfs-pack oci: (local disk)";;
	c) echo "(c) cfs-pack docker://";;
	esac
}
printf 'image: %s, %d layers, %.0f MB compressed (gzip), %.0f MB tree; %d CPUs, median of %d cold runs\n' \
	"$rootfs" "$n_layers" "$(calc "$layers_bytes / 1e6")" "$(calc "$tree_bytes / 1e6")" "$(nproc)" "$runs"
printf 'link: docker-registry behind cfs-faultproxy, latency_ms=%s, rate=%s bytes/s per connection\n' "$latency" "$rate"
printf 'image reference: %s\n' "$ref"
printf '%-34s %8s %8s %8s %8s %8s %8s\n' method wall_s cpu_s rss_MB disk_MB link_MB "vs (b)"
wall_b=$(col b 1)
for m in "${methods[@]}"; do
	printf '%-34s %8.2f %8.2f %8.0f %8.0f %8.0f %7.2fx\n' "$(name_of "$m")" "$(col "$m" 1)" "$(col "$m" 2)" \
		"$(col "$m" 3)" "$(col "$m" 4)" "$(col "$m" 5)" "$(calc "$(col "$m" 1) / $wall_b")"
done
printf '(a) of which skopeo copy: %.2f s\n' "$(col a 6)"
if [ "$have_docker" = 1 ]; then
	printf 'goal (c)/(b) <= 1.15: %.2f; goal (a)/(c) >= 1.15: %.2f; goal (c) disk beyond the store 0: %.0f MB\n' \
		"$(calc "$(col c 1) / $wall_b")" "$(calc "$(col a 1) / $(col c 1)")" "$(col c 4)"
else
	printf '(c) not measured: cfs-pack --help does not mention docker://; (a)/(b): %.2f\n' \
		"$(calc "$(col a 1) / $wall_b")"
fi
