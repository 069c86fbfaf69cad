# shellcheck shell=bash
# Helpers for the benchmarks, sourced first thing:
#   source "$(dirname "$0")/lib.sh"
#
# Sets top (the source tree) and the binaries' paths: pack, mnt_bin,
# proxy_bin (CFS_PACK, CFS_MOUNT, CFS_FAULTPROXY; default build/...).
#
# make_scratch gives a server directory $W and a client directory $C and an
# exit trap that runs the script's own cleanup_extra (if it defines one),
# unmounts what is in MOUNTS, ends the daemons in PIDS (by pid) and removes
# $W and $C, keeping the exit status.  start_nginx and start_proxy serve $W/srv
# on 127.0.0.1 and read $nginx_bin and $proxy_bin.
# shellcheck disable=SC2034,SC2154 # pack, mnt_bin, proxy_pid: read by the scripts; nginx_bin: set by them
top=$(cd "$(dirname "$0")/.." && pwd)
pack=${CFS_PACK:-$top/build/tools/cfs-pack}
mnt_bin=${CFS_MOUNT:-$top/build/fs/cfs-mount}
proxy_bin=${CFS_FAULTPROXY:-$top/build/tests/cfs-faultproxy}

die() { echo "bench/${0##*/}: $*" >&2; exit 1; }
note() { echo "# $*" >&2; }

# need_built BIN...: every BIN executable, else die
need_built() {
	local b
	for b in "$@"; do
		[ -x "$b" ] || die "$b not built (meson setup build && ninja -C build; or set CFS_PACK, CFS_MOUNT, CFS_FAULTPROXY)"
	done
}

# find_missing CMD:PACKAGE...: adds to missing[] the packages whose command
# is neither on PATH nor in /usr/sbin; apt_install_missing installs them.
missing=()
find_missing() {
	local p
	for p in "$@"; do
		command -v "${p%%:*}" > /dev/null 2>&1 || [ -x "/usr/sbin/${p%%:*}" ] || missing+=("${p#*:}")
	done
}
apt_install_missing() {
	[ ${#missing[@]} -gt 0 ] || return 0
	note "installing ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" > /dev/null ||
		{ apt-get update > /dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" > /dev/null; } ||
		die "apt-get install ${missing[*]} failed"
}

# --- scratch, cleanup --------------------------------------------------------
MOUNTS=() # mountpoints to unmount at exit
PIDS=()   # daemons to end at exit
cleanup() {
	local rc=$? mp pid
	trap - EXIT INT TERM
	if declare -F cleanup_extra > /dev/null; then cleanup_extra; fi
	for mp in "${MOUNTS[@]}"; do
		mountpoint -q "$mp" 2> /dev/null &&
			{ fusermount3 -u "$mp" 2> /dev/null || umount "$mp" 2> /dev/null || umount -l "$mp" 2> /dev/null || true; }
	done
	for pid in "${PIDS[@]}"; do
		kill "$pid" 2> /dev/null || true
	done
	for pid in "${PIDS[@]}"; do
		wait "$pid" 2> /dev/null || true
	done
	rm -rf --one-file-system "$W" "$C"
	exit "$rc"
}
# make_scratch NAME: $W in BENCH_DIR (server data, tmpfs: /dev/shm) and $C in
# CACHE_DIR (client side, the local disk: /var/tmp), and the traps
make_scratch() {
	W=$(mktemp -d "${BENCH_DIR:-/dev/shm}/cfs-bench-$1.XXXXXX")
	C=$(mktemp -d "${CACHE_DIR:-/var/tmp}/cfs-bench-$1-${2:-cache}.XXXXXX")
	trap cleanup EXIT
	trap 'exit 130' INT TERM
}

# --- measuring -----------------------------------------------------------------
now() { date +%s%N; }
calc() { awk "BEGIN { print $* }"; }
median() { sort -g | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]; else print "nan"}'; }
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
free_port() {
	local p
	for p in $(shuf -i 20000-60000 -n 100); do
		ss -Htln "sport = :$p" | grep -q . || { echo "$p"; return 0; }
	done
	return 1
}
# wait_for CMD...: up to 20 s
wait_for() {
	local i
	for ((i = 0; i < 2000; i++)); do
		"$@" && return 0
		sleep 0.01
	done
	return 1
}
# wait_mounted PID [TRIES [SECONDS]]: waits for $mp to be a mount while PID
# lives, polling TRIES times (3000) every SECONDS (0.005)
wait_mounted() {
	local i
	for ((i = 0; i < ${2:-3000}; i++)); do
		mountpoint -q "$mp" && return 0
		kill -0 "$1" 2> /dev/null || return 1
		sleep "${3:-0.005}"
	done
	return 1
}
# col KEY N: the median of column N of $W/res/KEY; ok_res KEY: KEY ran and did not fail
col() { awk -v c="$2" '{print $c}' "$W/res/$1" | median; }
ok_res() { [ -s "$W/res/$1" ] && ! grep -q FAIL "$W/res/$1"; }

# --- servers -------------------------------------------------------------------
# start_nginx PING_PATH [MAIN_DIRECTIVES] [SERVER_DIRECTIVES]: nginx serving
# $W/srv on 127.0.0.1:$ngx_port until GET PING_PATH answers
start_nginx() {
	ngx_port=$(free_port)
	mkdir -p "$W/tmp"
	cat > "$W/nginx.conf" << EOF
daemon off;
${2:-}
user root;
worker_processes 1;
pid $W/nginx.pid;
error_log $W/nginx.err warn;
events { worker_connections 4096; }
http {
	access_log off;
	sendfile on;
	tcp_nopush on;
	keepalive_requests 1000000;
	keepalive_timeout 300s;
	default_type application/octet-stream;
	client_body_temp_path $W/tmp;
	proxy_temp_path $W/tmp;
	fastcgi_temp_path $W/tmp;
	uwsgi_temp_path $W/tmp;
	scgi_temp_path $W/tmp;
	server {
		listen 127.0.0.1:$ngx_port;
		root $W/srv;
		${3:-}
	}
}
EOF
	"$nginx_bin" -c "$W/nginx.conf" -p "$W" -e "$W/nginx.err" &
	PIDS+=($!)
	wait_for curl -sf -o /dev/null "http://127.0.0.1:$ngx_port/$1" || die "nginx did not start: $(cat "$W/nginx.err")"
}

# start_proxy NAME UPSTREAM_PORT CONTROL_TEXT [OPTION...]: a cfs-faultproxy
# logging to $W/NAME.log; sets port_NAME and proxy_pid[its port]
declare -A proxy_pid
start_proxy() {
	printf '%s\n' "$3" > "$W/$1.control"
	"$proxy_bin" --listen 127.0.0.1:0 --upstream "127.0.0.1:$2" --port-file "$W/$1.port" \
		--control "$W/$1.control" --log "$W/$1.log" "${@:4}" > /dev/null &
	PIDS+=($!)
	wait_for test -s "$W/$1.port" || die "proxy $1 did not start: $(cat "$W/$1.log")"
	printf -v "port_$1" '%s' "$(cat "$W/$1.port")"
	proxy_pid[$(cat "$W/$1.port")]=$!
}
# proxy_json PORT: the proxy's counters; json_get JSON KEY: one number of them
proxy_json() { curl -s "http://127.0.0.1:$1/__proxy_stats"; }
json_get() { grep -o "\"$2\":[0-9]*" <<< "$1" | head -n 1 | cut -d: -f2; }

# cpu_ticks PID: user + system clock ticks of a process so far (0 if gone);
# hz: ticks per second
cpu_ticks() {
	local st
	st=$(cat "/proc/$1/stat" 2> /dev/null) || { echo 0; return; }
	st=${st##*) }
	# shellcheck disable=SC2086 # split the fields
	set -- $st
	echo $((${12} + ${13}))
}
hz=$(getconf CLK_TCK)

# --- images ----------------------------------------------------------------------
# make_oci_image ROOTFS LAYOUT: the OCI layout LAYOUT:1 from the tree ROOTFS
# in four gzip layers at most (usr/lib/x86_64-linux-gnu, the rest of
# usr/lib, var, everything else; umoci raw add-layer), the layer tars
# passing through $C.  The large image of bench/pack-registry.sh and
# bench/podman.sh, made once and kept: its config is umoci's bare one (no
# Env, no Cmd).
make_oci_image() {
	local rootfs=$1 image=$2 i=0 part t0
	[ -d "$rootfs/usr" ] ||
		die "$rootfs: no tree (make it: WORKLOADS=torch bench/coldstart-remote.sh 1, or set ROOTFS)"
	note "making $image from $rootfs (once; cached for reruns)"
	t0=$(now)
	rm -rf --one-file-system "$image.tmp"
	umoci init --layout "$image.tmp" > /dev/null
	umoci new --image "$image.tmp:1" > /dev/null
	for part in lib rest-lib var rest; do
		local -a sel=()
		case $part in
		lib) sel=(./usr/lib/x86_64-linux-gnu);;
		rest-lib) sel=(--exclude=./usr/lib/x86_64-linux-gnu ./usr/lib);;
		var) sel=(./var);;
		rest) sel=(--exclude=./usr/lib --exclude=./var .);;
		esac
		[ -e "$rootfs/${sel[-1]}" ] || continue
		tar -C "$rootfs" --numeric-owner --xattrs --xattrs-include='*' -cf "$C/layer.tar" "${sel[@]}"
		umoci raw add-layer --image "$image.tmp:1" "$C/layer.tar" > /dev/null
		rm -f "$C/layer.tar"
		i=$((i + 1))
	done
	mv "$image.tmp" "$image"
	note "made $i layers in $(calc "int(($(now) - $t0) / 1e9)") s"
}

# serial_rounds LOG FROM_LINE LATENCY_MS: serial round trips among the GETs
# a cfs-faultproxy -v LOG (one line per response head, ms clock) holds after
# line FROM_LINE: a response more than LATENCY/2 ms after the previous one
# starts a new round.  Requests in flight together answer within a few ms
# of each other, so this counts the chain of dependent (or one-at-a-time)
# requests.
serial_rounds() {
	tail -n +"$(($2 + 1))" "$1" | awk -v gap="$(($3 > 2 ? $3 / 2 : 1))" '
		/ GET / && !/__proxy_stats/ { split($2, a, ":"); t = a[1] * 3600000 + a[2] * 60000 + a[3] * 1000
			if (n++ == 0 || t - p > gap) r++; p = t }
		END { print r + 0 }'
}
