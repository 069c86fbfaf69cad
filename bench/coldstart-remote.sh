#!/usr/bin/env bash
# Cold start over the network: a container started from an image whose store
# sits behind a 20 ms link, by cfs (lazy mount) and by what users do instead,
# side by side in one run.
#
# Usage: bench/coldstart-remote.sh [RUNS]      (cold runs per method, default 5)
#
# What it does, all on 127.0.0.1:
#   workloads  busybox: the sample rootfs of scripts/mkrootfs.sh running
#              sh -c 'echo ready';
#              numpy: debootstrap --variant=minbase --include=python3,python3-numpy
#              bookworm (made once, cached in $ROOTFS_CACHE, default
#              /var/tmp/cfs-bench-rootfs) running
#              python3 -c 'import numpy; print(numpy.__version__)';
#              torch: the same with python3-torch too (Debian's PyTorch 1.13,
#              about 1.6 GB; cached in $ROOTFS_CACHE_TORCH, default
#              /var/tmp/cfs-bench-rootfs-torch) running
#              python3 -c 'import torch, numpy; print(torch.__version__)',
#              a large framework whose start-up reads hundreds of MB.
#   images     built once per workload into the server's directory (tmpfs),
#              for the methods not in SKIP: a cfs store (cfs-pack); if
#              cfs-mount --help shows --record and cfs-pack --help shows
#              --profile, a second image packed with the profile of one warm-up
#              run (cfs-mount --record, cfs-pack --profile) mounted with
#              --prefetch list; layer.tar.gz (gzip -6) and layer.tar.zst
#              (zstd -3); a casync index + chunk store (casync make); a
#              squashfs (mksquashfs, zstd if it has it).
#   link       nginx serves that directory; cfs-faultproxy in front of it adds
#              latency_ms=$LATENCY_MS (20) to every request's round trip.  Two
#              link models (LINK picks): "capped", the issue's "100 MB/s per
#              connection, 1 GB/s total, 20 ms RTT", as rate=$RATE per
#              connection (100000000 bytes/s) -- cfs-faultproxy has no
#              aggregate cap, so the 1 GB/s total is NOT modelled; and
#              "uncapped", no rate cap (loopback speed).  Every workload and
#              method runs under each model chosen; the rows say which.
#   methods    cfs           cfs-mount of the http:// store, runc on the mount
#              cfs-profile   the profile-packed image, --prefetch list
#              tar.gz/zst    curl | gzip -d / zstd -d | tar -x onto the local
#                            disk (download, decompress and extract streamed,
#                            which is what containerd does at best), runc
#              casync        casync mount of the .caidx with the chunk store
#                            over http, runc on the mount
#              squashfs      curl the .sqfs to the local disk, squashfuse, runc
#   per run    every cache emptied (cfs's disk cache dir, the downloaded or
#              extracted files, the page cache via drop_caches), then the clock
#              starts; "mount" = until the root is ready (mount returned, or
#              download/extract done), "first" = the container's first output
#              line, "total" = the container's exit.  Requests and bytes are
#              the proxy's counters (GET /__proxy_stats) for the run; cfs's
#              own counters (cfs-mount --stats) give the bytes the workload
#              read through the mount; "rounds" counts serial round trips in
#              the proxy's -v log (responses more than half an RTT apart);
#              "cpu-s/GB" is the FUSE daemon's CPU time (utime + stime of
#              /proc/PID/stat, at the container's exit: the whole life of the
#              daemon, which started within the run) per GB it served: for
#              cfs the read_bytes of cfs-mount --stats, for squashfuse and
#              casync the bytes they wrote to /dev/fuse (/proc/PID/io wchar:
#              the replies, headers and metadata included).  The clock tick
#              is 10 ms, so small runs' figures are coarse.
#              A method that fails (mount, extract or container) is reported
#              as FAILED and the benchmark goes on.
# Prints one table (median of RUNS; rows per link model), ratios against cfs,
# and the issue's goals; writes every run and the medians as JSON lines to
# $OUT_JSON and a bar chart of the medians' first_ms (bench/plot.sh) to
# $OUT_PNG.
#
# Needs root (mounts, runc, drop_caches).  Installs what is missing with
# apt-get: nginx, casync, squashfs-tools, squashfuse, debootstrap, zstd, runc,
# gnuplot-nox.
#
# Env: CFS_PACK, CFS_MOUNT, CFS_FAULTPROXY (binaries; default build/...),
#      LATENCY_MS (20), LINK (capped, uncapped or both: the default),
#      RATE (the capped model's per-connection cap, bytes/s, 100000000; the
#      proxy reads K, M, G as powers of 1024), WORKLOADS ("busybox numpy";
#      torch on request), SKIP (method names to leave out, e.g. "casync"),
#      ROOTFS_CACHE (/var/tmp/cfs-bench-rootfs), ROOTFS_CACHE_TORCH
#      (/var/tmp/cfs-bench-rootfs-torch), MIRROR (debootstrap mirror,
#      http://deb.debian.org/debian), BENCH_DIR (server data, /dev/shm),
#      CACHE_DIR (client side: caches, downloads, extraction; /var/tmp),
#      CFS_MOUNT_OPTS (extra cfs-mount options for both cfs methods),
#      RUN_TIMEOUT (seconds a container may run, 600), OUT_JSON
#      (coldstart-remote.jsonl), OUT_PNG (coldstart-remote.png; "" for none),
#      KEEP_LOG (a file to copy the raw per-run lines to).
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
runs=${1:-${RUNS:-5}}
latency=${LATENCY_MS:-20}
rate=${RATE:-}
workloads=${WORKLOADS:-busybox numpy}
skip=" ${SKIP:-} "
rootfs_cache=${ROOTFS_CACHE:-/var/tmp/cfs-bench-rootfs}
mirror=${MIRROR:-http://deb.debian.org/debian}

[ "$(id -u)" = 0 ] || die "needs root (mounts, runc, drop_caches)"
need_built "$pack" "$mnt_bin" "$proxy_bin"

find_missing nginx:nginx casync:casync mksquashfs:squashfs-tools squashfuse:squashfuse debootstrap:debootstrap \
	zstd:zstd runc:runc curl:curl busybox:busybox-static
apt_install_missing
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
export PATH="$PATH:/usr/sbin:/sbin"

# Profile-guided images only when both colleagues' options exist.
have_profile=0
if "$mnt_bin" --help 2>&1 | grep -q -- '--record' && "$pack" --help 2>&1 | grep -q -- '--profile'; then
	have_profile=1
fi
prefetch_opt=()
"$mnt_bin" --help 2>&1 | grep -q -- '--prefetch' && prefetch_opt=(--prefetch list)

# --- scratch, cleanup --------------------------------------------------------
ctr=cfsbench-csr-$$
make_scratch csr client
cleanup_extra() { runc delete -f "$ctr" > /dev/null 2>&1 || true; }
mkdir -p "$W/srv" "$W/res" "$C/mnt" "$C/x"
mp=$C/mnt
MOUNTS+=("$mp")

# --- workloads' root filesystems -------------------------------------------------
rootfs_of() { # WORKLOAD: prints the tree, making it if needed
	case $1 in
	busybox)
		[ -d "$W/rootfs-busybox" ] || bash "$top/scripts/mkrootfs.sh" "$W/rootfs-busybox" > /dev/null
		echo "$W/rootfs-busybox"
		;;
	numpy)
		if [ ! -x "$rootfs_cache/usr/bin/python3" ] || [ ! -d "$rootfs_cache/usr/lib/python3/dist-packages/numpy" ]; then
			note "debootstrap minbase + python3-numpy into $rootfs_cache (once; cached for reruns)"
			rm -rf --one-file-system "$rootfs_cache.tmp"
			debootstrap --variant=minbase --include=python3,python3-numpy bookworm "$rootfs_cache.tmp" "$mirror" \
				> "$W/debootstrap.log" 2>&1 || die "debootstrap failed: $(tail -n 5 "$W/debootstrap.log")"
			rm -rf --one-file-system "$rootfs_cache"
			mv "$rootfs_cache.tmp" "$rootfs_cache"
		fi
		echo "$rootfs_cache"
		;;
	*) die "unknown workload $1";;
	esac
}
cmd_of() {
	case $1 in
	busybox) echo "sh -c 'echo ready'";;
	numpy) echo "python3 -c 'import numpy; print(numpy.__version__)'";;
	esac
}
argv_of() { # prints the command's words, one per line
	case $1 in
	busybox) printf '%s\n' sh -c 'echo ready';;
	numpy) printf '%s\n' python3 -c 'import numpy; print(numpy.__version__)';;
	esac
}

# --- servers -----------------------------------------------------------------------
echo hello > "$W/srv/ping"
start_nginx ping "master_process off;"

start_proxy proxy "$ngx_port" "latency_ms=$latency${rate:+
rate=$rate}" -v
# shellcheck disable=SC2154 # set by start_proxy
P=$port_proxy
U=http://127.0.0.1:$P
# rounds FROM_LINE: serial round trips among the GETs the proxy logged
# (-v: one line per response head, ms clock) after line FROM_LINE: a
# response more than LATENCY/2 ms after the previous one starts a new round.
# Requests in flight together answer within a few ms of each other, so this
# counts the chain of dependent (or one-at-a-time) requests.
rounds() {
	tail -n +"$(($1 + 1))" "$W/proxy.log" | awk -v gap="$((latency > 2 ? latency / 2 : 1))" '
		/ GET / && !/__proxy_stats/ { split($2, a, ":"); t = a[1] * 3600000 + a[2] * 60000 + a[3] * 1000
			if (n++ == 0 || t - p > gap) r++; p = t }
		END { print r + 0 }'
}

# --- methods -------------------------------------------------------------------------
# Each prep_M WORKLOAD makes the container's root ready at $root (mount, or
# download + extract) and may leave a daemon pid in $daemon_pid; undo_M
# takes it down.  The harness times prep and the container around them.
daemon_pid=
root=
unmount_mp() {
	local i
	mountpoint -q "$mp" || return 0
	fusermount3 -u "$mp" 2> /dev/null || umount "$mp" 2> /dev/null || umount -l "$mp"
	if [ -n "$daemon_pid" ]; then
		wait "$daemon_pid" 2> /dev/null || true
		daemon_pid=
	fi
	for ((i = 0; i < 500; i++)); do mountpoint -q "$mp" || return 0; sleep 0.01; done
}
# shellcheck disable=SC2086 # CFS_MOUNT_OPTS is a list of words
prep_cfs() { # IMAGE [extra options]
	local img=$1
	shift
	# cfs-mount daemonizes once the mount is up: its return is "mounted".
	"$mnt_bin" ${CFS_MOUNT_OPTS:-} "$@" --cache "$C/cfs-cache" --log "$W/cfs-mount.log" \
		-o allow_other,default_permissions,dev,suid "$U/store/" "$img" "$mp"
	root=$mp
}
prep_extract() { # WORKLOAD gz|zst
	local dec=(gzip -d -c)
	[ "$2" = zst ] && dec=(zstd -q -d -c)
	curl -sf "$U/$1.tar.$2" | "${dec[@]}" |
		tar --xattrs --xattrs-include='*' --numeric-owner -C "$C/x" -xf - || return 1
	root=$C/x
}
prep_casync() { # WORKLOAD
	casync mount --store="$U/casync-store/" "$U/$1.caidx" "$mp" > "$W/casync.log" 2>&1 &
	daemon_pid=$!
	PIDS+=("$daemon_pid")
	wait_mounted "$daemon_pid" 20000 0.002 || { echo "casync mount failed: $(tail -n 3 "$W/casync.log")" >&2; daemon_pid=; return 1; }
	root=$mp
}
prep_squashfs() { # WORKLOAD
	curl -sf -o "$C/img.sqfs" "$U/$1.sqfs" || return 1
	squashfuse -o allow_other "$C/img.sqfs" "$mp" || return 1
	root=$mp
}

# run_container BUNDLE T0: prints "first_ns total_ns" since T0
run_container() {
	local first
	first=$( (cd "$1" && runc run "$ctr" 2> "$W/runc.err") | { IFS= read -r line; now; echo "$line" > "$W/first.line"; cat > /dev/null; })
	[ -n "$first" ] && [ -s "$W/first.line" ] || return 1
	echo "$((first - $2)) $(($(now) - $2))"
}

declare -A desc
declare -a order
# measure WORKLOAD METHOD DESCRIPTION PREP...
measure() {
	local wl=$1 m=$2 r t0 t1 ft s0 s1 ok cbytes l0
	shift 2
	case "$skip" in *" $m "*) return 0;; esac
	[ -n "${desc[$wl.$m]:-}" ] || order+=("$wl.$m")
	desc[$wl.$m]=$1
	shift
	: > "$W/res/$wl.$m"
	for ((r = 0; r < runs; r++)); do
		unmount_mp
		rm -rf --one-file-system "$C/cfs-cache" "$C/x" "$C/img.sqfs"
		mkdir -p "$C/x"
		drop_caches
		s0=$(proxy_json "$P")
		l0=$(wc -l < "$W/proxy.log")
		ok=1 ft=
		t0=$(now)
		"$@" || ok=0
		t1=$(now)
		if [ "$ok" = 1 ]; then
			ft=$(run_container "$W/bundle-$wl-$([ "$root" = "$mp" ] && echo mnt || echo x)" "$t0") || ok=0
		fi
		s1=$(proxy_json "$P")
		cbytes=nan
		if [[ $m == cfs* ]] && [ "$ok" = 1 ]; then
			"$mnt_bin" --stats "$mp" > "$W/res/$wl.$m.stats.$r" 2> /dev/null || true
			cbytes=$(json_get "$(cat "$W/res/$wl.$m.stats.$r")" read_bytes)
			cbytes=${cbytes:-nan}
		fi
		runc delete -f "$ctr" > /dev/null 2>&1 || true
		unmount_mp
		if [ "$ok" = 0 ]; then
			echo "  $wl $m run $((r + 1)): FAILED ($(tail -n 2 "$W/runc.err" 2> /dev/null | tr '\n' ' '))" >&2
			echo FAIL > "$W/res/$wl.$m"
			return 0
		fi
		# mount_s first_s total_s requests bytes_down cfs_read_bytes rounds
		printf '%s %s %s %s %s %s %s\n' "$(calc "($t1 - $t0) / 1e9")" "$(calc "${ft% *} / 1e9")" \
			"$(calc "${ft#* } / 1e9")" $(($(json_get "$s1" requests) - $(json_get "$s0" requests))) \
			$(($(json_get "$s1" bytes_down) - $(json_get "$s0" bytes_down))) "$cbytes" "$(rounds "$l0")" >> "$W/res/$wl.$m"
		echo "  $wl $m run $((r + 1)): $(tail -n 1 "$W/res/$wl.$m") first line: $(cat "$W/first.line")" >&2
	done
}

sqfs_comp=()
mksquashfs 2>&1 | grep -q zstd && sqfs_comp=(-comp zstd)

declare -A tree_bytes tree_files img_sizes
for wl in $workloads; do
	rfs=$(rootfs_of "$wl")
	tree_bytes[$wl]=$(du -sb --apparent-size "$rfs" | cut -f1)
	tree_files[$wl]=$(find "$rfs" | wc -l)
	note "$wl: building images of $rfs (${tree_bytes[$wl]} bytes, ${tree_files[$wl]} entries)"
	s0=$(du -sb "$W/srv/store" 2> /dev/null | cut -f1 || echo 0)
	c0=$(du -sb "$W/srv/casync-store" 2> /dev/null | cut -f1 || echo 0)
	"$pack" -q --tag "$wl" "$rfs" "$W/srv/store" > /dev/null
	tar --format=posix --xattrs --xattrs-include='*' --numeric-owner -C "$rfs" -cf - . | gzip -6 > "$W/srv/$wl.tar.gz"
	tar --format=posix --xattrs --xattrs-include='*' --numeric-owner -C "$rfs" -cf - . | zstd -q -3 -T0 > "$W/srv/$wl.tar.zst"
	casync make --store="$W/srv/casync-store" "$W/srv/$wl.caidx" "$rfs" > /dev/null 2> "$W/casync-make.log" ||
		note "casync make failed: $(tail -n 2 "$W/casync-make.log")"
	mksquashfs "$rfs" "$W/srv/$wl.sqfs" "${sqfs_comp[@]}" -noappend -quiet -no-progress > /dev/null 2>&1 ||
		note "mksquashfs failed"
	img_sizes[$wl]=$(printf 'cfs %.1f MB (new objects in the store), tar.gz %.1f MB, tar.zst %.1f MB, casync %.1f MB (new chunks), sqfs %.1f MB' \
		"$(calc "($(du -sb "$W/srv/store" | cut -f1) - ${s0:-0}) / 1e6")" \
		"$(calc "$(stat -c %s "$W/srv/$wl.tar.gz") / 1e6")" "$(calc "$(stat -c %s "$W/srv/$wl.tar.zst") / 1e6")" \
		"$(calc "($(du -sb "$W/srv/casync-store" 2> /dev/null | cut -f1 || echo 0) - ${c0:-0}) / 1e6")" \
		"$(calc "$(stat -c %s "$W/srv/$wl.sqfs" 2> /dev/null || echo 0) / 1e6")")
	mapfile -t argv < <(argv_of "$wl")
	bash "$top/scripts/mkbundle.sh" "$W/bundle-$wl-mnt" "$mp" -- "${argv[@]}"
	bash "$top/scripts/mkbundle.sh" "$W/bundle-$wl-x" "$C/x" -- "${argv[@]}"

	if [ "$have_profile" = 1 ]; then
		note "$wl: warm-up run with --record, then cfs-pack --profile"
		rm -rf --one-file-system "$C/cfs-cache"
		prep_cfs "$wl" --record "$W/$wl.profile"
		run_container "$W/bundle-$wl-mnt" "$(now)" > /dev/null || note "warm-up run failed"
		runc delete -f "$ctr" > /dev/null 2>&1 || true
		unmount_mp
		# the daemon writes the profile as it exits, after the unmount
		wait_for test -s "$W/$wl.profile" || true
		sleep 0.3
		if [ -s "$W/$wl.profile" ]; then
			"$pack" -q --profile "$W/$wl.profile" --tag "$wl-prof" "$rfs" "$W/srv/store" > /dev/null ||
				note "cfs-pack --profile failed"
		else
			note "no profile written"
		fi
	fi

	measure "$wl" cfs "cfs mount (lazy, http store)" prep_cfs "$wl"
	if [ "$have_profile" = 1 ] && [ -e "$W/srv/store/tags/$wl-prof" ]; then
		measure "$wl" cfs-profile "cfs, profile-packed, ${prefetch_opt[*]:-default prefetch}" prep_cfs "$wl-prof" "${prefetch_opt[@]}"
	fi
	measure "$wl" tar.gz "curl | gzip -d | tar -x, runc" prep_extract "$wl" gz
	measure "$wl" tar.zst "curl | zstd -d | tar -x, runc" prep_extract "$wl" zst
	measure "$wl" casync "casync mount (http chunk store)" prep_casync "$wl"
	measure "$wl" squashfs "curl .sqfs, squashfuse" prep_squashfs "$wl"
	[ -z "${KEEP_LOG:-}" ] || for k in "${order[@]}"; do echo "$k $(tr '\n' ';' < "$W/res/$k")"; done > "$KEEP_LOG"
done

# --- report -------------------------------------------------------------------------
# shellcheck disable=SC1091 # os-release: read at run time
printf '\nmachine: %d CPUs, %s, kernel %s; link: cfs-faultproxy latency_ms=%s, %s; median of %d cold runs\n' \
	"$(nproc)" "$(. /etc/os-release && echo "$PRETTY_NAME")" "$(uname -r)" "$latency" \
	"${rate:+rate=$rate per connection}${rate:-no rate cap}" "$runs"
[ "$have_profile" = 1 ] || echo "(cfs-mount --record / cfs-pack --profile not in this build: plain cfs image only)"
for wl in $workloads; do
	printf '%s: %s; tree %.1f MB in %d entries\n  images: %s\n' \
		"$wl" "$(cmd_of "$wl")" "$(calc "${tree_bytes[$wl]} / 1e6")" "${tree_files[$wl]}" "${img_sizes[$wl]}"
done
printf '%-8s %-12s %8s %8s %8s %8s %6s %9s %8s %7s %8s  %s\n' workload method mount-s first-s total-s requests rounds \
	MB-down MB-read "vs cfs" "vs prof" what
for k in "${order[@]}"; do
	wl=${k%%.*}; m=${k#*.}
	if ! ok_res "$k"; then
		printf '%-8s %-12s %8s  %s\n' "$wl" "$m" FAILED "${desc[$k]}"
		continue
	fi
	ratio=- ratio_p=-
	ok_res "$wl.cfs" && ratio=$(printf '%.2fx' "$(calc "$(col "$k" 3) / $(col "$wl.cfs" 3)")")
	ok_res "$wl.cfs-profile" && ratio_p=$(printf '%.2fx' "$(calc "$(col "$k" 3) / $(col "$wl.cfs-profile" 3)")")
	rd=$(col "$k" 6)
	[ "$rd" = nan ] && rd=- || rd=$(printf '%.2f' "$(calc "$rd / 1e6")")
	printf '%-8s %-12s %8.3f %8.3f %8.3f %8s %6s %9.2f %8s %7s %8s  %s\n' "$wl" "$m" "$(col "$k" 1)" "$(col "$k" 2)" \
		"$(col "$k" 3)" "$(col "$k" 4)" "$(col "$k" 7)" "$(calc "$(col "$k" 5) / 1e6")" "$rd" "$ratio" "$ratio_p" "${desc[$k]}"
done
echo "(mount-s: until the root is ready (mounted, or downloaded and extracted); first-s, total-s: to the"
echo " container's first output line and exit, from the same start; vs cfs, vs prof: total / the total of"
echo " cfs (plain image) and of cfs-profile, above 1: cfs faster; requests, MB-down: the proxy's counters; rounds: serial round trips in the proxy's log"
echo " (responses more than half an RTT apart); MB-read: file bytes the workload read through the cfs mount)"

# --- goals ---------------------------------------------------------------------------
for wl in $workloads; do
	for cm in cfs cfs-profile; do
		ok_res "$wl.$cm" || continue
		t=$(col "$wl.$cm" 3)
		best='' bestm=''
		for m in tar.zst casync squashfs; do
			ok_res "$wl.$m" || continue
			v=$(col "$wl.$m" 3)
			if [ -z "$best" ] || awk "BEGIN{exit !($v < $best)}"; then best=$v bestm=$m; fi
		done
		gz=nan
		ok_res "$wl.tar.gz" && gz=$(col "$wl.tar.gz" 3)
		down=$(col "$wl.$cm" 5) rd=$(col "$wl.$cm" 6)
		yn() { awk "BEGIN{exit !($1)}" && echo met || echo MISSED; }
		gzr="n/a (not run)"
		[ "$gz" = nan ] || gzr="$(printf '%.2fx' "$(calc "$gz / $t")") (>=10x: $(yn "$gz / $t >= 10"))"
		printf 'goals %s/%s: total %.3f s (<0.5 s: %s); tar.gz %s; best other peer %s %.2fx (>=3x: %s); fetched/read %.2f (<=2: %s)\n' \
			"$wl" "$cm" "$t" "$(yn "$t < 0.5")" "$gzr" \
			"${bestm:-none}" "$(calc "${best:-0} / $t")" "$(yn "${best:-0} / $t >= 3")" \
			"$(calc "$down / ($rd > 0 ? $rd : 1)")" "$(yn "$down / ($rd > 0 ? $rd : 1) <= 2")"
	done
done
