#!/usr/bin/env bash
# podman pull && podman run of a large Python image from a registry behind a
# capped link, with and without cfs's additional layer store
# (cfs-mount --layer-store, docs/LAYER-STORE.md), in one run.
#
# Usage: bench/podman.sh [RUNS]      (cold runs per method, default 3)
#
# What it does, all on 127.0.0.1:
#   image    the OCI layout of bench/pack-registry.sh: the torch rootfs of
#            bench/coldstart-remote.sh ($ROOTFS, /var/tmp/cfs-bench-rootfs-torch,
#            1.6 GB tree) in four gzip layers (767 MB), cached in $IMAGE_CACHE
#            (/var/tmp/cfs-bench-oci-pack-registry) and made here if absent
#            (bench/lib.sh make_oci_image).  Its config is umoci's bare one (no
#            Env, no Cmd): the container runs
#            python3 -c 'import torch, numpy; print(torch.__version__)'
#            ($PYCODE) with PATH given by --env.
#   registry docker-registry (tests/lib-registry.sh, plain http), storage on
#            tmpfs ($W), the image pushed once as bench/big:1.
#   store    the cfs store, packed once by cfs-pack docker:// from the
#            registry (not through the link: setup, not measured), which
#            writes a layer record for each layer; packed without a profile,
#            so no prefetch list: this is the first start of an image nobody
#            profiled, with cfs-mount's default prefetch policy (the stream)
#            and nothing learned (a fresh cache every run, and an http store
#            learned profiles cannot be written to).  nginx serves it (tmpfs).
#   link     two cfs-faultproxy, one in front of the registry and one in front
#            of nginx, each latency_ms=$LATENCY_MS (20) and rate=$RATE
#            (100000000 bytes/s) per connection: both methods pay the same
#            link.  The issue's 1 GB/s total cap is NOT modelled (the proxy has
#            no aggregate limit).
#   podman   podman 4.x as root as tests/layerstore.sh runs it: runc,
#            cgroupfs, --network none, small --ulimit (this VM cannot raise
#            rlimits), a storage.conf of the run's own (overlay driver,
#            graphroot and runroot on the local disk, $CACHE_DIR), TMPDIR there
#            too (podman pull stages blobs in it).
#   methods  (a) podman        storage.conf without a layer store: podman pull
#                              fetches, decompresses and extracts every layer
#            (b) podman + cfs  storage.conf additionallayerstores =
#                              ["MOUNTPOINT:ref"]; the clock starts before
#                              cfs-mount --layer-store --cache FRESH
#                              http://STORE-PROXY/store/ MOUNTPOINT (a fresh
#                              cache per run, so its start is per run and
#                              counted as mount_s, part of total_s); podman
#                              pull fetches the manifest and config only, each
#                              layer's diff is a cfs mount the layer store
#                              starts on its first lookup
#            then, in both: podman pull REF; podman run --rm REF python3 -c ...
#   per run  a fresh graphroot, a fresh cfs cache, the page cache dropped
#            (the servers' tmpfs stays), then timed: mount_s (b's layer store
#            up), pull_s, run_s (to the container's exit), total_s (all of
#            it); reg_MB and store_MB, the bytes each proxy carried (the
#            proxies' counters, to the container's exit); rounds, serial round
#            trips through the store's proxy (bench/lib.sh serial_rounds);
#            pull_cpu, CPU-s of podman pull (/usr/bin/time: user + system, its
#            children included); cfs_cpu, CPU-s of every cfs-mount process
#            alive at the container's exit (the layer store's holder and
#            daemon, each layer mount's holder and daemon: all started in the
#            run, so /proc/PID/stat's utime + stime is their run; the
#            launching commands, which exit once mounted, are not counted);
#            served_MB, the file bytes the layer mounts served (read_bytes of
#            cfs-mount --stats of each), and cfs_cpu per GB of it.  Afterwards
#            podman rmi, the layer mounts (they outlive the layer store) and
#            the layer store unmounted, the daemons waited for.
#            Every run checks (b)'s output against (a)'s; a mismatch ends the
#            benchmark.
# Prints one table (median of RUNS) with ratios against (b), and the issue's
# goals: (a)/(b) >= 3 in total time, (b)'s registry bytes < 1% of the image.
#
# Needs root (drop_caches, mounts, podman's overlay), a build in build/
# (cfs-pack, cfs-mount, cfs-faultproxy), podman, runc, docker-registry,
# skopeo, umoci, nginx, curl, jq (scripts/install-deps.sh).
#
# Env: CFS_PACK, CFS_MOUNT, CFS_FAULTPROXY (binaries; default build/...),
#      LATENCY_MS (20), RATE (100000000), ROOTFS (the tree the image is made
#      from), IMAGE_CACHE (the OCI layout), PYCODE (the Python the container
#      runs), CFS_MOUNT_OPTS (extra options for cfs-mount --layer-store, passed
#      on to the layer mounts; default none), BENCH_DIR (registry, store,
#      logs: /dev/shm), CACHE_DIR (graphroot, cfs cache: the local disk,
#      /var/tmp), RUN_TIMEOUT (seconds a pull or a container may take, 600),
#      KEEP_LOGS (a directory to copy the proxies' -v logs, the layer store's
#      log and the per-run results to at exit).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib-capped.sh
source "$here/lib-capped.sh"
pycode=${PYCODE:-import torch, numpy; print(torch.__version__)}
run_timeout=${RUN_TIMEOUT:-600}

[ "$(id -u)" = 0 ] || die "needs root (drop_caches, mounts, podman's overlay)"
need_built "$pack" "$mnt_bin" "$proxy_bin"
export PATH="$PATH:/usr/sbin:/sbin"
for c in podman runc docker-registry skopeo umoci nginx curl jq /usr/bin/time; do
	command -v "$c" > /dev/null 2>&1 || die "$c not installed (scripts/install-deps.sh)"
done
nginx_bin=$(command -v nginx)
[ -e /dev/fuse ] || die "no /dev/fuse"
grep -qw overlay /proc/filesystems || modprobe overlay 2> /dev/null || die "no overlay filesystem in this kernel"
grep -q -- '--layer-store' <<< "$("$mnt_bin" --help 2>&1 || true)" || die "$mnt_bin has no --layer-store"

make_scratch podman run
run=$C/run
als=$C/als   # the layer store's mountpoint (no ':' nor ',': storage.conf's syntax)
lm=$C/layer-mounts
# Mounts under $run (podman's overlays) and $C (the layer mounts, the layer
# store), innermost first; the holders and daemons end with their mounts.
unmount_under() {
	local mp
	{ grep -o " $1/[^ ]*" /proc/mounts || true; } | sort -r | while read -r mp; do
		umount "$mp" 2> /dev/null || umount -l "$mp" 2> /dev/null || true
	done
	return 0
}
cleanup_extra() {
	unmount_under "$C"
	[ -z "${KEEP_LOGS:-}" ] || { mkdir -p "$KEEP_LOGS" && cp -r "$W"/*.log "$W/res" "$KEEP_LOGS/" 2> /dev/null; } || true
}
mkdir -p "$W/srv" "$W/res"

# --- the image, once --------------------------------------------------------------
[ -s "$image/index.json" ] || make_oci_image "$rootfs" "$image"
manifest=$image/blobs/sha256/$(jq -r '.manifests[0].digest | ltrimstr("sha256:")' "$image/index.json")
[ -f "$manifest" ] || die "$image/index.json names no manifest that is there"
layers_bytes=$(jq '[.layers[].size] | add' "$manifest")
mapfile -t layer_digests < <(jq -r '.layers[].digest' "$manifest")

# --- registry, store, links ----------------------------------------------------------
start_registry plain
note "pushing the image to $REG_HOST"
reg_push "oci:$image:1" bench/big:1
note "packing the store: cfs-pack docker://$REG_HOST/bench/big:1"
t0=$(now)
"$pack" -q --tls-verify=false "docker://$REG_HOST/bench/big:1" "$W/srv/store" > "$W/pack.out" 2> "$W/pack.err" ||
	die "cfs-pack exited $?: $(tail -n 3 "$W/pack.err")"
note "packed in $(calc "int(($(now) - $t0) / 1e9)") s: $(cat "$W/pack.out")"
for d in "${layer_digests[@]}"; do
	[ -s "$W/srv/store/layers/${d#sha256:}" ] || die "cfs-pack wrote no layer record for $d"
done
store_bytes=$(du -sb "$W/srv/store" | cut -f1)
echo hello > "$W/srv/ping"
start_nginx ping "master_process off;"
link=$(printf 'latency_ms=%s\nrate=%s\n' "$latency" "$rate")
start_proxy reg "${REG_HOST#*:}" "$link" -v
start_proxy store "$ngx_port" "$link" -v
# shellcheck disable=SC2154 # set by start_proxy
ref=127.0.0.1:$port_reg/bench/big:1
# shellcheck disable=SC2154
store_url=http://127.0.0.1:$port_store/store/

# --- podman --------------------------------------------------------------------------
PODMAN=(podman --runtime runc --cgroup-manager cgroupfs --events-backend file)
RUN_OPTS=(--rm --network none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024
	--env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin)
# storage_conf [LAYER_STORE]: the run's storage.conf, a graphroot of its own
storage_conf() {
	{
		printf '[storage]\ndriver = "overlay"\nrunroot = "%s"\ngraphroot = "%s"\n' "$run/runroot" "$run/root"
		[ -z "${1:-}" ] || printf '[storage.options]\nadditionallayerstores = ["%s:ref"]\n' "$1"
	} > "$run/storage.conf"
	export CONTAINERS_STORAGE_CONF=$run/storage.conf
}
# timed NAME CMD...: CMD under timeout and /usr/bin/time, its "user sys" in
# $run/NAME.time, stdout in $run/NAME.out
timed() {
	local name=$1
	shift
	/usr/bin/time -f '%U %S' -o "$run/$name.time" timeout "$run_timeout" "$@" > "$run/$name.out" 2> "$run/$name.err" ||
		die "$name: $* exited $?: $(tail -n 3 "$run/$name.err")"
}

# cfs_pids: the cfs-mount processes of this benchmark (holders and daemons):
# running $mnt_bin with a path in $C among their arguments.  Not by name: the
# layer mounts are spawned as /proc/self/exe, so their comm is "exe".
mnt_real=$(readlink -f "$mnt_bin")
cfs_pids() {
	local p
	for p in $(pgrep -f -- "$C/"); do
		[ "$(readlink "/proc/$p/exe" 2> /dev/null)" = "$mnt_real" ] && echo "$p"
	done
	return 0
}
# teardown: podman's image, podman's mounts, the layer mounts and the layer
# store, their daemons; then the run's files and the cfs cache
teardown() {
	local pids p i
	if [ -f "$run/storage.conf" ]; then
		timeout 120 "${PODMAN[@]}" rmi -f "$ref" > /dev/null 2>&1 || true
	fi
	pids=$(cfs_pids)
	unmount_under "$run"
	unmount_under "$lm"
	unmount_under "$C"
	# The daemons write learned profiles to the cache as they exit.
	for p in $pids; do
		for ((i = 0; i < 1000; i++)); do
			kill -0 "$p" 2> /dev/null || break
			sleep 0.01
		done
	done
	rm -rf --one-file-system "$run" "$C/cfs-cache" "$lm"
}

expect=
# measure M: one cold run of method M (a or b); appends "mount_s pull_s run_s
# total_s reg_bytes store_bytes rounds pull_cpu cfs_cpu served_bytes layer_mounts"
# to $W/res/M
measure() {
	local m=$1 t0 tm t1 t2 r0 r1 s0 s1 l0 out cpu=0 served=0 nlm=0 p b
	teardown
	mkdir -p "$run/tmp" "$als"
	export TMPDIR=$run/tmp
	if [ "$m" = b ]; then storage_conf "$als"; else storage_conf; fi
	drop_caches
	r0=$(json_get "$(proxy_json "$port_reg")" bytes_down)
	s0=$(json_get "$(proxy_json "$port_store")" bytes_down)
	l0=$(wc -l < "$W/store.log")
	t0=$(now)
	if [ "$m" = b ]; then
		# shellcheck disable=SC2086 # CFS_MOUNT_OPTS is a list of words
		timeout 60 "$mnt_bin" --layer-store ${CFS_MOUNT_OPTS:-} --cache "$C/cfs-cache" --layer-mounts "$lm" \
			--log "$W/als.log" "$store_url" "$als" > "$W/als.out" 2>&1 ||
			die "cfs-mount --layer-store exited $?: $(cat "$W/als.out")"
	fi
	tm=$(now)
	[ "$m" = b ] || tm=$t0
	timed pull "${PODMAN[@]}" pull -q --tls-verify=false "$ref"
	t1=$(now)
	timed ctr "${PODMAN[@]}" run "${RUN_OPTS[@]}" "$ref" python3 -c "$pycode"
	t2=$(now)
	r1=$(json_get "$(proxy_json "$port_reg")" bytes_down)
	s1=$(json_get "$(proxy_json "$port_store")" bytes_down)
	out=$(cat "$run/ctr.out")
	[ -n "$out" ] || die "($m): the container printed nothing: $(tail -n 3 "$run/ctr.err")"
	if [ "$m" = a ]; then
		expect=$out
	elif [ "$out" != "$expect" ]; then
		die "(b) printed '$out', (a) '$expect': not the same image"
	fi
	if [ "$m" = b ]; then
		for p in $(cfs_pids); do cpu=$((cpu + $(cpu_ticks "$p"))); done
		for p in "$lm"/*; do
			mountpoint -q "$p" || continue
			nlm=$((nlm + 1))
			b=$(json_get "$("$mnt_bin" --stats "$p" 2> /dev/null)" read_bytes)
			served=$((served + ${b:-0}))
		done
		[ "$nlm" -gt 0 ] || die "(b): the layer store started no layer mount (podman pulled the layers?)"
	fi
	printf '%s %s %s %s %s %s %s %s %s %s %s\n' "$(calc "($tm - $t0) / 1e9")" "$(calc "($t1 - $tm) / 1e9")" \
		"$(calc "($t2 - $t1) / 1e9")" "$(calc "($t2 - $t0) / 1e9")" $((r1 - r0)) $((s1 - s0)) \
		"$(serial_rounds "$W/store.log" "$l0" "$latency")" "$(awk '{print $1 + $2}' "$run/pull.time")" \
		"$(calc "$cpu / $hz")" "$served" "$nlm" >> "$W/res/$m"
}

note "$runs cold runs of (a) podman and (b) podman + cfs layer store; ref $ref"
for ((i = 1; i <= runs; i++)); do
	for m in a b; do
		measure "$m"
		note "run $i ($m): $(tail -n 1 "$W/res/$m") (mount pull run total s, reg store bytes, rounds, pull CPU-s, cfs CPU-s, served bytes, layer mounts); output: $(cat "$run/ctr.out")"
	done
done
teardown
unset CONTAINERS_STORAGE_CONF
[ ! -d "$W/srv/store/profiles" ] || note "the store holds learned profiles: not a first start"

# --- report ------------------------------------------------------------------------------
mb() { calc "$1 / 1e6"; }
printf 'image: %s, %d layers, %.0f MB compressed (gzip); cfs store %.0f MB; %d CPUs, median of %d cold runs\n' \
	"$rootfs" "${#layer_digests[@]}" "$(mb "$layers_bytes")" "$(mb "$store_bytes")" "$(nproc)" "$runs"
printf 'link: docker-registry and nginx (the cfs store) each behind cfs-faultproxy, latency_ms=%s, rate=%s bytes/s per connection\n' \
	"$latency" "$rate"
printf "podman %s; container: python3 -c '%s' -> %s\n" "$(podman --version | awk '{print $3}')" "$pycode" "$expect"
printf 'cfs: no profile, no prefetch list, fresh cache per run; cfs-mount options: %s\n' "${CFS_MOUNT_OPTS:-(defaults)}"
printf '%-20s %7s %7s %7s %8s %8s %9s %6s %8s %7s %9s %8s %7s\n' method mount_s pull_s run_s total_s reg_MB store_MB \
	rounds pull_cpu cfs_cpu served_MB cpu_s/GB "vs (b)"
tot_b=$(col b 4)
for m in a b; do
	case $m in a) name="(a) podman";; b) name="(b) podman + cfs";; esac
	cfs_cpu=- served=- per=-
	if [ "$m" = b ]; then
		cfs_cpu=$(printf '%.2f' "$(col b 9)") served=$(printf '%.0f' "$(mb "$(col b 10)")")
		per=$(printf '%.2f' "$(calc "$(col b 9) / ($(col b 10) > 0 ? $(col b 10) / 1e9 : 1)")")
	fi
	printf '%-20s %7.2f %7.2f %7.2f %8.2f %8.2f %9.2f %6d %8.2f %7s %9s %8s %6.2fx\n' "$name" "$(col "$m" 1)" \
		"$(col "$m" 2)" "$(col "$m" 3)" "$(col "$m" 4)" "$(mb "$(col "$m" 5)")" "$(mb "$(col "$m" 6)")" \
		"$(col "$m" 7)" "$(col "$m" 8)" "$cfs_cpu" "$served" "$per" "$(calc "$(col "$m" 4) / $tot_b")"
done
printf '(b) layer mounts started per run: %s; the output of (b) equalled (a)'"'"'s in every run\n' "$(col b 11)"
yn() { awk "BEGIN{exit !($1)}" && echo met || echo MISSED; }
ratio=$(calc "$(col a 4) / $tot_b")
regpct=$(calc "100 * $(col b 5) / $layers_bytes")
printf 'goal (a)/(b) >= 3 in total time: %.2fx, %s; goal (b) registry bytes < 1%% of the image: %.0f bytes, %.4f%%, %s\n' \
	"$ratio" "$(yn "$ratio >= 3")" "$(col b 5)" "$regpct" "$(yn "$regpct < 1")"
