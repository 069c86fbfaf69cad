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
#              a large framework whose start-up reads hundreds of MB;
#              pandas: the same with python3-pandas and python3-scipy
#              (cached in $ROOTFS_CACHE_PANDAS, default
#              /var/tmp/cfs-bench-rootfs-pandas) running
#              python3 -c 'import pandas, scipy.stats; print(pandas.__version__)',
#              another large Python stack.
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
#   methods    cfs           cfs-mount of the http:// store, runc on the mount,
#                            default options: the guesses of first reads and
#                            the stream (docs/FORMAT.md, "Prediction without a
#                            profile")
#              cfs-lean      the same with --prefetch list: guesses, no stream
#              cfs-learned   a second node: fresh cache, default options, after
#                            one earlier run (another node, --learn-to the
#                            store's directory) left its learned profile in
#                            the store (docs/PROFILE.md, "Learned profiles")
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
#      torch and pandas on request), SKIP (method names to leave out, e.g. "casync"),
#      ROOTFS_CACHE (/var/tmp/cfs-bench-rootfs), ROOTFS_CACHE_TORCH
#      (/var/tmp/cfs-bench-rootfs-torch), ROOTFS_CACHE_PANDAS
#      (/var/tmp/cfs-bench-rootfs-pandas), MIRROR (debootstrap mirror,
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
rate=${RATE:-100000000}
case ${LINK:-both} in
both) links="capped uncapped";;
capped | uncapped) links=$LINK;;
*) die "LINK must be capped, uncapped or both, not '$LINK'";;
esac
workloads=${WORKLOADS:-busybox numpy}
skip=" ${SKIP:-} "
rootfs_cache=${ROOTFS_CACHE:-/var/tmp/cfs-bench-rootfs}
rootfs_cache_torch=${ROOTFS_CACHE_TORCH:-/var/tmp/cfs-bench-rootfs-torch}
rootfs_cache_pandas=${ROOTFS_CACHE_PANDAS:-/var/tmp/cfs-bench-rootfs-pandas}
mirror=${MIRROR:-http://deb.debian.org/debian}
run_timeout=${RUN_TIMEOUT:-600}
out_json=${OUT_JSON:-coldstart-remote.jsonl}
out_png=${OUT_PNG-coldstart-remote.png}

[ "$(id -u)" = 0 ] || die "needs root (mounts, runc, drop_caches)"
need_built "$pack" "$mnt_bin" "$proxy_bin"

find_missing nginx:nginx casync:casync mksquashfs:squashfs-tools squashfuse:squashfuse debootstrap:debootstrap \
	zstd:zstd runc:runc curl:curl busybox:busybox-static
[ -z "$out_png" ] || find_missing gnuplot:gnuplot-nox
apt_install_missing
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
export PATH="$PATH:/usr/sbin:/sbin"

# skipped METHOD: METHOD is in SKIP
skipped() { case "$skip" in *" $1 "*) return 0;; esac; return 1; }

# Profile-guided images only when both colleagues' options exist.
have_profile=0
# (The help texts are read whole first: grep -q stops reading at its match,
# and under pipefail the writer's SIGPIPE would fail the test.)
mnt_help=$("$mnt_bin" --help 2>&1 || true)
pack_help=$("$pack" --help 2>&1 || true)
if grep -q -- '--record' <<< "$mnt_help" && grep -q -- '--profile' <<< "$pack_help"; then
	have_profile=1
fi
skipped cfs-profile && have_profile=0
prefetch_opt=()
grep -q -- '--prefetch' <<< "$mnt_help" && prefetch_opt=(--prefetch list)

# --- scratch, cleanup --------------------------------------------------------
ctr=cfsbench-csr-$$
make_scratch csr client
cleanup_extra() { runc delete -f "$ctr" > /dev/null 2>&1 || true; }
mkdir -p "$W/srv" "$W/res" "$C/mnt" "$C/x"
mp=$C/mnt
MOUNTS+=("$mp")
: > "$out_json" || die "cannot write $out_json"

# --- workloads' root filesystems -------------------------------------------------
# debian_rootfs DIR CHECK PACKAGES: a bookworm minbase with PACKAGES in DIR,
# made by debootstrap unless DIR/CHECK is there already; prints DIR
debian_rootfs() {
	local t0
	if [ ! -x "$1/usr/bin/python3" ] || [ ! -e "$1/$2" ]; then
		note "debootstrap minbase + $3 into $1 (once; cached for reruns)"
		rm -rf --one-file-system "$1.tmp"
		t0=$(now)
		debootstrap --variant=minbase --include="$3" bookworm "$1.tmp" "$mirror" \
			> "$W/debootstrap.log" 2>&1 || die "debootstrap failed: $(tail -n 5 "$W/debootstrap.log")"
		note "debootstrap took $(calc "int(($(now) - $t0) / 1e9)") s"
		rm -rf --one-file-system "$1"
		mv "$1.tmp" "$1"
	fi
	echo "$1"
}
rootfs_of() { # WORKLOAD: prints the tree, making it if needed
	case $1 in
	busybox)
		[ -d "$W/rootfs-busybox" ] || bash "$top/scripts/mkrootfs.sh" "$W/rootfs-busybox" > /dev/null
		echo "$W/rootfs-busybox"
		;;
	numpy) debian_rootfs "$rootfs_cache" usr/lib/python3/dist-packages/numpy python3,python3-numpy;;
	torch) debian_rootfs "$rootfs_cache_torch" usr/lib/python3/dist-packages/torch python3,python3-numpy,python3-torch;;
	pandas) debian_rootfs "$rootfs_cache_pandas" usr/lib/python3/dist-packages/pandas python3,python3-pandas,python3-scipy;;
	*) die "unknown workload $1";;
	esac
}
argv_of() { # prints the command's words, one per line
	case $1 in
	busybox) printf '%s\n' sh -c 'echo ready';;
	numpy) printf '%s\n' python3 -c 'import numpy; print(numpy.__version__)';;
	torch) printf '%s\n' python3 -c 'import torch, numpy; print(torch.__version__)';;
	pandas) printf '%s\n' python3 -c 'import pandas, scipy.stats; print(pandas.__version__)';;
	esac
}
cmd_of() { # the command, quoted as a shell would take it
	local a out=
	while IFS= read -r a; do
		[[ $a =~ ^[A-Za-z0-9_./=-]+$ ]] || a="'$a'"
		out+="${out:+ }$a"
	done < <(argv_of "$1")
	echo "$out"
}

# --- servers -----------------------------------------------------------------------
echo hello > "$W/srv/ping"
start_nginx ping "master_process off;"

# link_control LINK: the proxy's control text for a link model
link_control() {
	echo "latency_ms=$latency"
	if [ "$1" = capped ]; then echo "rate=$rate"; fi
}
link_desc() {
	case $1 in
	capped) echo "capped: latency_ms=$latency, rate=$rate bytes/s per connection; the 1 GB/s total cap is NOT modelled (cfs-faultproxy has no aggregate rate limit)";;
	uncapped) echo "uncapped: latency_ms=$latency, no rate cap";;
	esac
}
# set_link LINK: the proxy re-reads its control file (a new inode) at its next request
set_link() {
	link_control "$1" > "$W/proxy.control.tmp"
	mv "$W/proxy.control.tmp" "$W/proxy.control"
}
start_proxy proxy "$ngx_port" "$(link_control "${links%% *}")" -v
# shellcheck disable=SC2154 # set by start_proxy
P=$port_proxy
U=http://127.0.0.1:$P
# rounds FROM_LINE: the serial round trips (lib.sh) the proxy logged after line FROM_LINE
rounds() { serial_rounds "$W/proxy.log" "$1" "$latency"; }

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
		-o allow_other,default_permissions,dev,suid "$U/store/" "$img" "$mp" || return 1
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

# mp_daemon_pid: the FUSE daemon (cfs-mount, squashfuse, casync) serving $mp:
# the newest process naming it (a background cfs mount is a holder and, its
# child, the daemon that serves).
mp_daemon_pid() {
	local p found=
	for p in $(pgrep -x 'cfs-mount|squashfuse|casync'); do
		tr '\0' '\n' < "/proc/$p/cmdline" 2> /dev/null | grep -qxF -- "$mp" && found=$p
	done
	[ -n "$found" ] && echo "$found"
}
# cpu_s PID: its CPU seconds so far, all threads (utime + stime)
cpu_s() { [ -r "/proc/$1/stat" ] || return 1; calc "$(cpu_ticks "$1") / $hz"; }
# wchar PID: bytes it wrote with write(2) and the like (a FUSE daemon: its replies)
wchar() { awk '$1 == "wchar:" { print $2 }' "/proc/$1/io"; }

# run_container BUNDLE T0: prints "first_ns total_ns" since T0
run_container() {
	local first
	first=$( (cd "$1" && timeout "$run_timeout" runc run "$ctr" 2> "$W/runc.err") |
		{ IFS= read -r line; now; echo "$line" > "$W/first.line"; cat > /dev/null; })
	[ -n "$first" ] && [ -s "$W/first.line" ] || return 1
	echo "$((first - $2)) $(($(now) - $2))"
}

# to_json KIND LINK WORKLOAD METHOD [RUN]: the result line on stdin (the
# columns of $W/res files, or FAIL) as one JSON object
to_json() {
	awk -v kind="$1" -v link="$2" -v wl="$3" -v m="$4" -v run="${5:-}" '
		function num(v, scale, fmt) { return (v == "nan" || v == "") ? "null" : sprintf(fmt, v * scale) }
		{
			printf "{\"kind\":\"%s\",\"workload\":\"%s\",\"link\":\"%s\",\"method\":\"%s\"", kind, wl, link, m
			if (run != "") printf ",\"run\":%d", run
			if ($1 == "FAIL") { print ",\"failed\":true}"; next }
			printf ",\"first_ms\":%s,\"total_ms\":%s,\"mount_ms\":%s,\"requests\":%s,\"rounds\":%s", num($2, 1000, "%.1f"),
				num($3, 1000, "%.1f"), num($1, 1000, "%.1f"), num($4, 1, "%d"), num($7, 1, "%d")
			printf ",\"mb_fetched\":%s,\"read_mb\":%s,\"cpu_s\":%s,\"served_mb\":%s,\"cpu_s_per_gb\":%s}\n", num($5, 1e-6, "%.3f"),
				num($6, 1e-6, "%.3f"), num($8, 1, "%.2f"), num($9, 1e-6, "%.3f"), num($10, 1, "%.2f")
		}'
}

# learn_once WORKLOAD: one run of the plain image, as a first node would,
# that leaves its learned profile in the store (profiles/<hex>; nginx
# serves that directory, so later mounts find it over http).  Once per
# workload; false when no profile was left.
declare -A learned
learn_once() {
	local ref prof
	[ -n "${learned[$1]:-}" ] && return "${learned[$1]}"
	learned[$1]=1
	ref=$(head -n 1 "$W/srv/store/tags/$1" 2> /dev/null) || return 1
	prof=$W/srv/store/profiles/${ref#sha256:}
	rm -rf --one-file-system "$C/cfs-cache"
	drop_caches
	if prep_cfs "$1" --learn-to "$W/srv/store"; then
		run_container "$W/bundle-$1-mnt" "$(now)" > /dev/null || note "learning run failed"
		runc delete -f "$ctr" > /dev/null 2>&1 || true
		unmount_mp
		# the daemon writes it as it exits, after the unmount
		wait_for test -s "$prof" || true
	fi
	if [ -s "$prof" ]; then
		learned[$1]=0
	else
		note "$1: no learned profile left in the store (cfs-learned not measured)"
	fi
	return "${learned[$1]}"
}

declare -A desc
declare -a order
# measure LINK WORKLOAD METHOD DESCRIPTION PREP...
measure() {
	local link=$1 wl=$2 m=$3 r t0 t1 ft s0 s1 ok cbytes l0 dpid cpu served per line why
	local k=$1.$2.$3
	shift 3
	skipped "$m" && return 0
	order+=("$k")
	desc[$wl.$m]=$1
	shift
	: > "$W/res/$k"
	for ((r = 0; r < runs; r++)); do
		unmount_mp
		rm -rf --one-file-system "$C/cfs-cache" "$C/x" "$C/img.sqfs"
		mkdir -p "$C/x"
		drop_caches
		s0=$(proxy_json "$P")
		l0=$(wc -l < "$W/proxy.log")
		ok=1 ft="" why="mount or download failed"
		: > "$W/runc.err"
		t0=$(now)
		"$@" || ok=0
		t1=$(now)
		if [ "$ok" = 1 ]; then
			ft=$(run_container "$W/bundle-$wl-$([ "$root" = "$mp" ] && echo mnt || echo x)" "$t0") ||
				{ ok=0 why="container failed: $(tail -n 2 "$W/runc.err" 2> /dev/null | tr '\n' ' ')"; }
		fi
		s1=$(proxy_json "$P")
		cbytes=nan cpu=nan served=nan per=nan
		if [ "$ok" = 1 ] && [ "$root" = "$mp" ] && dpid=$(mp_daemon_pid); then
			cpu=$(cpu_s "$dpid" 2> /dev/null || echo nan)
			if [[ $m == cfs* ]]; then
				"$mnt_bin" --stats "$mp" > "$W/res/$k.stats.$r" 2> /dev/null || true
				cbytes=$(json_get "$(cat "$W/res/$k.stats.$r")" read_bytes)
				cbytes=${cbytes:-nan} served=$cbytes
			else
				served=$(wchar "$dpid" 2> /dev/null || echo nan)
			fi
			[ "$cpu" = nan ] || [ "$served" = nan ] || [ "$served" -le 0 ] || per=$(calc "$cpu / ($served / 1e9)")
		fi
		runc delete -f "$ctr" > /dev/null 2>&1 || true
		unmount_mp
		if [ "$ok" = 0 ]; then
			echo "  $link $wl $m run $((r + 1)): FAILED, $why" >&2
			echo FAIL > "$W/res/$k"
			echo FAIL | to_json run "$link" "$wl" "$m" "$((r + 1))" >> "$out_json"
			return 0
		fi
		# mount_s first_s total_s requests bytes_down cfs_read_bytes rounds cpu_s served_bytes cpu_s_per_gb
		line=$(printf '%s %s %s %s %s %s %s %s %s %s' "$(calc "($t1 - $t0) / 1e9")" "$(calc "${ft% *} / 1e9")" \
			"$(calc "${ft#* } / 1e9")" $(($(json_get "$s1" requests) - $(json_get "$s0" requests))) \
			$(($(json_get "$s1" bytes_down) - $(json_get "$s0" bytes_down))) "$cbytes" "$(rounds "$l0")" \
			"$cpu" "$served" "$per")
		echo "$line" >> "$W/res/$k"
		to_json run "$link" "$wl" "$m" "$((r + 1))" <<< "$line" >> "$out_json"
		echo "  $link $wl $m run $((r + 1)): $line first line: $(cat "$W/first.line")" >&2
	done
}

sqfs_comp=()
mksquashfs 2>&1 | grep -q zstd && sqfs_comp=(-comp zstd)

# build WHAT CMD...: runs CMD (an image build); a failure is noted, not fatal
build() {
	local what=$1
	shift
	"$@" || note "$what failed (the methods that need it will fail)"
}
tar_layer() { # ROOTFS OUT COMPRESSOR...
	local rfs=$1 out=$2
	shift 2
	tar --format=posix --xattrs --xattrs-include='*' --numeric-owner -C "$rfs" -cf - . | "$@" > "$out"
}
sizeof() { calc "$(stat -c %s "$1" 2> /dev/null || echo 0) / 1e6"; }

declare -A tree_bytes tree_files img_sizes
for wl in $workloads; do
	rfs=$(rootfs_of "$wl")
	tree_bytes[$wl]=$(du -sb --apparent-size "$rfs" | cut -f1)
	tree_files[$wl]=$(find "$rfs" | wc -l)
	note "$wl: building images of $rfs (${tree_bytes[$wl]} bytes, ${tree_files[$wl]} entries)"
	s0=$(du -sb "$W/srv/store" 2> /dev/null | cut -f1 || echo 0)
	c0=$(du -sb "$W/srv/casync-store" 2> /dev/null | cut -f1 || echo 0)
	sizes=
	if ! skipped cfs || [ "$have_profile" = 1 ]; then
		build cfs-pack "$pack" -q --tag "$wl" "$rfs" "$W/srv/store" > /dev/null
		sizes+=$(printf 'cfs %.1f MB (new objects in the store), ' "$(calc "($(du -sb "$W/srv/store" | cut -f1) - ${s0:-0}) / 1e6")")
	fi
	skipped tar.gz || { build "tar | gzip" tar_layer "$rfs" "$W/srv/$wl.tar.gz" gzip -6
		sizes+=$(printf 'tar.gz %.1f MB, ' "$(sizeof "$W/srv/$wl.tar.gz")"); }
	skipped tar.zst || { build "tar | zstd" tar_layer "$rfs" "$W/srv/$wl.tar.zst" zstd -q -3 -T0
		sizes+=$(printf 'tar.zst %.1f MB, ' "$(sizeof "$W/srv/$wl.tar.zst")"); }
	if ! skipped casync; then
		casync make --store="$W/srv/casync-store" "$W/srv/$wl.caidx" "$rfs" > /dev/null 2> "$W/casync-make.log" ||
			note "casync make failed: $(tail -n 2 "$W/casync-make.log")"
		sizes+=$(printf 'casync %.1f MB (new chunks), ' \
			"$(calc "($(du -sb "$W/srv/casync-store" 2> /dev/null | cut -f1 || echo 0) - ${c0:-0}) / 1e6")")
	fi
	if ! skipped squashfs; then
		mksquashfs "$rfs" "$W/srv/$wl.sqfs" "${sqfs_comp[@]}" -noappend -quiet -no-progress > /dev/null 2>&1 ||
			note "mksquashfs failed"
		sizes+=$(printf 'sqfs %.1f MB, ' "$(sizeof "$W/srv/$wl.sqfs")")
	fi
	img_sizes[$wl]=${sizes%, }
	mapfile -t argv < <(argv_of "$wl")
	bash "$top/scripts/mkbundle.sh" "$W/bundle-$wl-mnt" "$mp" -- "${argv[@]}"
	bash "$top/scripts/mkbundle.sh" "$W/bundle-$wl-x" "$C/x" -- "${argv[@]}"

	if [ "$have_profile" = 1 ]; then
		note "$wl: warm-up run with --record, then cfs-pack --profile"
		rm -rf --one-file-system "$C/cfs-cache"
		if prep_cfs "$wl" --record "$W/$wl.profile"; then
			run_container "$W/bundle-$wl-mnt" "$(now)" > /dev/null || note "warm-up run failed"
			runc delete -f "$ctr" > /dev/null 2>&1 || true
			unmount_mp
			# the daemon writes the profile as it exits, after the unmount
			wait_for test -s "$W/$wl.profile" || true
			sleep 0.3
		else
			note "warm-up mount failed"
		fi
		if [ -s "$W/$wl.profile" ]; then
			"$pack" -q --profile "$W/$wl.profile" --tag "$wl-prof" "$rfs" "$W/srv/store" > /dev/null ||
				note "cfs-pack --profile failed"
		else
			note "no profile written"
		fi
	fi

	for link in $links; do
		set_link "$link"
		note "$wl: link $(link_desc "$link")"
		# The first start anywhere: nothing learned yet (--learn no keeps
		# the runs from teaching each other).
		measure "$link" "$wl" cfs "cfs mount, no profile, default prefetch (guesses + stream)" prep_cfs "$wl" --learn no
		measure "$link" "$wl" cfs-lean "cfs mount, no profile, guesses only (--prefetch list)" prep_cfs "$wl" --prefetch list --learn no
		if ! skipped cfs-learned && learn_once "$wl"; then
			measure "$link" "$wl" cfs-learned "cfs mount, fresh cache, the profile one earlier run on another node learned" prep_cfs "$wl"
		fi
		if [ "$have_profile" = 1 ] && [ -e "$W/srv/store/tags/$wl-prof" ]; then
			measure "$link" "$wl" cfs-profile "cfs, profile-packed, ${prefetch_opt[*]:-default prefetch}" prep_cfs "$wl-prof" "${prefetch_opt[@]}"
		fi
		measure "$link" "$wl" tar.gz "curl | gzip -d | tar -x, runc" prep_extract "$wl" gz
		measure "$link" "$wl" tar.zst "curl | zstd -d | tar -x, runc" prep_extract "$wl" zst
		measure "$link" "$wl" casync "casync mount (http chunk store)" prep_casync "$wl"
		measure "$link" "$wl" squashfs "curl .sqfs, squashfuse" prep_squashfs "$wl"
		[ -z "${KEEP_LOG:-}" ] || for k in "${order[@]}"; do echo "$k $(tr '\n' ';' < "$W/res/$k")"; done > "$KEEP_LOG"
	done
done

# --- report -------------------------------------------------------------------------
# shellcheck disable=SC1091 # os-release: read at run time
printf '\nmachine: %d CPUs, %s, kernel %s; median of %d cold runs\n' \
	"$(nproc)" "$(. /etc/os-release && echo "$PRETTY_NAME")" "$(uname -r)" "$runs"
for link in $links; do echo "link $(link_desc "$link")"; done
[ "$have_profile" = 1 ] || skipped cfs-profile || echo "(cfs-mount --record / cfs-pack --profile not in this build: plain cfs image only)"
for wl in $workloads; do
	printf '%s: %s; tree %.1f MB in %d entries\n  images: %s\n' \
		"$wl" "$(cmd_of "$wl")" "$(calc "${tree_bytes[$wl]} / 1e6")" "${tree_files[$wl]}" "${img_sizes[$wl]}"
done
# the medians, as JSON, and as the chart's rows (labelled with workload and link)
plot_rows=$W/plot.jsonl
: > "$plot_rows"
printf '%-8s %-8s %-12s %8s %8s %8s %8s %6s %9s %8s %6s %8s %7s %8s  %s\n' workload link method mount-s first-s total-s \
	requests rounds MB-down MB-read amp cpu-s/GB "vs cfs" "vs prof" what
for link in $links; do
	for k in "${order[@]}"; do
		[ "${k%%.*}" = "$link" ] || continue
		rest=${k#*.}
		wl=${rest%%.*} m=${rest#*.}
		if ! ok_res "$k"; then
			printf '%-8s %-8s %-12s %8s  %s\n' "$wl" "$link" "$m" FAILED "${desc[$wl.$m]}"
			echo FAIL | to_json median "$link" "$wl" "$m" >> "$out_json"
			continue
		fi
		med=$(for c in 1 2 3 4 5 6 7 8 9 10; do col "$k" "$c"; done | tr '\n' ' ')
		to_json median "$link" "$wl" "$m" <<< "$med" >> "$out_json"
		to_json median "$link" "$wl" "$wl $link $m" <<< "$med" >> "$plot_rows"
		ratio=- ratio_p=-
		ok_res "$link.$wl.cfs" && ratio=$(printf '%.2fx' "$(calc "$(col "$k" 3) / $(col "$link.$wl.cfs" 3)")")
		ok_res "$link.$wl.cfs-profile" && ratio_p=$(printf '%.2fx' "$(calc "$(col "$k" 3) / $(col "$link.$wl.cfs-profile" 3)")")
		rd=$(col "$k" 6) amp=-
		[ "$rd" = nan ] || [ "$rd" = 0 ] || amp=$(printf '%.2f' "$(calc "$(col "$k" 5) / $rd")")
		[ "$rd" = nan ] && rd=- || rd=$(printf '%.2f' "$(calc "$rd / 1e6")")
		per=$(col "$k" 10)
		[ "$per" = nan ] && per=- || per=$(printf '%.2f' "$per")
		printf '%-8s %-8s %-12s %8.3f %8.3f %8.3f %8s %6s %9.2f %8s %6s %8s %7s %8s  %s\n' "$wl" "$link" "$m" "$(col "$k" 1)" \
			"$(col "$k" 2)" "$(col "$k" 3)" "$(col "$k" 4)" "$(col "$k" 7)" "$(calc "$(col "$k" 5) / 1e6")" "$rd" "$amp" "$per" \
			"$ratio" "$ratio_p" "${desc[$wl.$m]}"
	done
done
echo "(mount-s: until the root is ready (mounted, or downloaded and extracted); first-s, total-s: to the"
echo " container's first output line and exit, from the same start; vs cfs, vs prof: total / the total of"
echo " cfs (plain image) and of cfs-profile on the same link, above 1: cfs faster; requests, MB-down: the proxy's"
echo " counters; rounds: serial round trips in the proxy's log (responses more than half an RTT apart);"
echo " MB-read: file bytes the workload read through the cfs mount; amp: MB-down / MB-read; cpu-s/GB: the FUSE daemon's CPU seconds"
echo " (utime+stime) per GB it served (cfs: MB-read; squashfuse, casync: bytes written to /dev/fuse), - without one)"

# --- goals ---------------------------------------------------------------------------
yn() { awk "BEGIN{exit !($1)}" && echo met || echo MISSED; }
for link in $links; do
	for wl in $workloads; do
		for cm in cfs cfs-profile; do
			ok_res "$link.$wl.$cm" || continue
			t=$(col "$link.$wl.$cm" 3)
			best='' bestm=''
			for m in tar.zst casync squashfs; do
				ok_res "$link.$wl.$m" || continue
				v=$(col "$link.$wl.$m" 3)
				if [ -z "$best" ] || awk "BEGIN{exit !($v < $best)}"; then best=$v bestm=$m; fi
			done
			gz=nan
			ok_res "$link.$wl.tar.gz" && gz=$(col "$link.$wl.tar.gz" 3)
			down=$(col "$link.$wl.$cm" 5) rd=$(col "$link.$wl.$cm" 6)
			gzr="n/a (not run)"
			[ "$gz" = nan ] || gzr="$(printf '%.2fx' "$(calc "$gz / $t")") (>=10x: $(yn "$gz / $t >= 10"))"
			printf 'goals %s/%s/%s: total %.3f s (<0.5 s: %s); tar.gz %s; best other peer %s %.2fx (>=3x: %s); fetched/read %.2f (<=2: %s)\n' \
				"$link" "$wl" "$cm" "$t" "$(yn "$t < 0.5")" "$gzr" \
				"${bestm:-none}" "$(calc "${best:-0} / $t")" "$(yn "${best:-0} / $t >= 3")" \
				"$(calc "$down / ($rd > 0 ? $rd : 1)")" "$(yn "$down / ($rd > 0 ? $rd : 1) <= 2")"
		done
	done
done

# --- chart ---------------------------------------------------------------------------
echo "results: $out_json (every run and the medians, JSON lines)"
if [ -n "$out_png" ]; then
	if [ -s "$plot_rows" ] && FIELD=first_ms XLABEL="ms to the container's first output line (median), lower is better" \
		bash "$top/bench/plot.sh" "$plot_rows" "$out_png" "cold start over a ${latency} ms link: $workloads; link $links"; then
		echo "chart: $out_png (first_ms of the medians)"
	else
		note "no chart drawn"
	fi
fi
