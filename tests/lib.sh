# shellcheck shell=bash
# Helpers for the shell tests, sourced first thing: source "$(dirname "$0")/lib.sh"
#
# Exit 77 skips a test.  make_workdir gives a scratch directory $W and an
# exit trap that runs the test's own cleanup_extra (if it defines one),
# unmounts what is in MOUNTS, ends the daemons in PIDS (by pid) and removes
# $W, keeping the exit status.

skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*" >&2; exit 1; }
step() { echo "== $*"; }

need_root() {
	[ "$(id -u)" -eq 0 ] || skip "${1:-needs root}"
}

# need_fuse: fusermount3, /dev/fuse and the right to open it.
need_fuse() {
	command -v fusermount3 >/dev/null 2>&1 || skip "fusermount3 not installed"
	[ -c /dev/fuse ] || skip "/dev/fuse missing"
	[ "$(id -u)" -eq 0 ] || [ -w /dev/fuse ] || skip "no access to /dev/fuse"
}

# need_cmds CMD...: skips unless every CMD is installed.
need_cmds() {
	local c
	for c; do
		command -v "$c" >/dev/null 2>&1 || skip "$c not installed"
	done
}

# need_ci_tools TOOL...: skips unless every TOOL is installed; under CI
# (CI=true), where scripts/install-deps.sh installs them, a missing one fails.
need_ci_tools() {
	local t
	for t; do
		command -v "$t" >/dev/null 2>&1 && continue
		[ "${CI:-}" = true ] && fail "$t is not installed (required in CI)"
		skip "$t not installed (scripts/install-deps.sh installs it)"
	done
}

MOUNTS=() # mountpoints to unmount at exit
PIDS=()   # daemons to end at exit

# make_workdir NAME: creates /tmp/cfs-NAME.XXXXXX as $W and sets the traps.
make_workdir() {
	W=$(mktemp -d "/tmp/cfs-$1.XXXXXX")
	trap lib_cleanup EXIT
	trap 'exit 130' INT TERM
}

unmount_quiet() {
	fusermount3 -u "$1" 2>/dev/null || umount "$1" 2>/dev/null || umount -l "$1" 2>/dev/null || true
}

lib_cleanup() {
	local rc=$? mp pid
	if declare -F cleanup_extra >/dev/null; then
		cleanup_extra || true
	fi
	for mp in "${MOUNTS[@]}"; do
		unmount_quiet "$mp"
	done
	# Only the daemons this test started, by pid.
	for pid in "${PIDS[@]}"; do
		alive "$pid" && kill "$pid" 2>/dev/null
	done
	# --one-file-system: never descend into a mount that would not go away.
	rm -rf --one-file-system "$W"
	exit "$rc"
}

# alive PID: running, and not a zombie that nobody has reaped yet (daemons
# are reparented to whatever pid 1 is, which may reap late).
alive() {
	local stat
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	stat=${stat##*) }
	[ "${stat%% *}" != Z ]
}

# not CMD...: succeeds when CMD fails (for wait_until).
not() {
	! "$@"
}

# wait_until SECONDS [--while PID] CMD...: runs CMD every 0.1 s until it
# succeeds (returns 0) or SECONDS have passed (returns 1); with --while,
# gives up as soon as the process PID is gone (returns 2).
wait_until() {
	local tries=$(($1 * 10)) pid='' i
	shift
	if [ "$1" = --while ]; then
		pid=$2
		shift 2
	fi
	for ((i = 0; ; i++)); do
		"$@" && return 0
		[ -z "$pid" ] || alive "$pid" || return 2
		[ "$i" -lt "$tries" ] || return 1
		sleep 0.1
	done
}

# serving PID SECONDS CMD...: waits until CMD succeeds (a server answers)
# while the server PID runs; then PID goes into PIDS for the exit trap and
# it returns 0.  It returns 1, with that server ended, when it dies first
# or never answers.
serving() {
	local pid=$1 secs=$2
	shift 2
	if wait_until "$secs" --while "$pid" "$@"; then
		PIDS+=("$pid")
		return 0
	fi
	kill "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	return 1
}

# fails_alone WHAT CMD...: CMD (stdin /dev/null, stdout in $W/out, stderr
# in $W/err) must fail by itself, with a status from 1 to 123: not 0, not
# timeout's 124 (a hang), 125 to 127 (not run) or 128 and up (a signal: a
# crash).  FAILED_RC is its status.
fails_alone() {
	local what=$1
	shift
	FAILED_RC=0
	"$@" >"$W/out" 2>"$W/err" </dev/null || FAILED_RC=$?
	case $FAILED_RC in
	0) fail "$what: succeeded: $*" ;;
	124) fail "$what: hung (killed by timeout): $*" ;;
	125 | 126 | 127) fail "$what: could not run (status $FAILED_RC): $*" ;;
	esac
	[ "$FAILED_RC" -lt 128 ] || fail "$what: killed by signal $((FAILED_RC - 128)) (crash): $*"
}

# expect_eio WHAT FILE SOURCE [SECONDS]: reading FILE (cat, killed after
# SECONDS, default 30) fails by itself with EIO, and the bytes it gave
# before the error ($W/out) are SOURCE's first ones.  Sets READ_MS and
# READ_BYTES.
expect_eio() {
	local what=$1 file=$2 source=$3 t0
	t0=$(now_ms)
	fails_alone "$what: reading $file" timeout "${4:-30}" cat "$file"
	# shellcheck disable=SC2034 # for the caller
	READ_MS=$(($(now_ms) - t0))
	grep -q 'Input/output error' "$W/err" || fail "$what: reading $file: not EIO: $(head -n 1 "$W/err")"
	READ_BYTES=$(stat -c %s "$W/out")
	cmp -s -n "$READ_BYTES" "$W/out" "$source" ||
		fail "$what: the $READ_BYTES bytes $file gave before its error are WRONG BYTES"
}

# fails_one_line WHAT CMD...: fails_alone, and exactly one line on stderr.
fails_one_line() {
	local n
	fails_alone "$@"
	n=$(grep -c '' "$W/err" || true)
	[ "$n" -eq 1 ] || fail "$1: $n lines on stderr, want exactly one: $(head -n 5 "$W/err")"
}

# unmount_wait MOUNTPOINT [PID [SECONDS]]: unmounts, then waits until the
# mount is gone and the daemon PID (if given) has exited, SECONDS (default
# 10) for each; fails the test if either is still there, else drops PID
# from PIDS.
unmount_wait() {
	local mp=$1 pid=${2:-} secs=${3:-10} p keep=()
	timeout 30 fusermount3 -u "$mp" || fail "fusermount3 -u $mp failed"
	wait_until "$secs" not mountpoint -q "$mp" || fail "$mp still mounted $secs s after fusermount3 -u"
	[ -z "$pid" ] && return 0
	wait_until "$secs" not alive "$pid" || fail "cfs-mount daemon $pid still running $secs s after unmount"
	# Gone: the exit trap must not end whatever gets its pid next.
	for p in "${PIDS[@]}"; do
		[ "$p" = "$pid" ] || keep+=("$p")
	done
	PIDS=("${keep[@]}")
}

# unmount_clean MOUNTPOINT PID: unmount_wait (30 s), and the daemon PID, a
# child of this shell (mount_bg's MOUNT_PID), must have exited 0.
unmount_clean() {
	local rc=0
	unmount_wait "$1" "$2" 30
	wait "$2" || rc=$?
	[ "$rc" -eq 0 ] || fail "cfs-mount exited $rc after the unmount of $1"
}

# ref_of FILE: the last line of cfs-pack's stdout, checked for the
# sha256:<64 hex> format.
ref_of() {
	local ref
	ref=$(tail -n 1 "$1")
	[[ $ref =~ ^sha256:[0-9a-f]{64}$ ]] ||
		fail "cfs-pack's last stdout line is not sha256:<64 hex>: '$ref' (output in $1)"
	echo "$ref"
}

# stat_of FILE KEY: the integer value of "KEY" in a JSON object (cfs-mount's
# stats, cfs-load --json), a boolean as 1 or 0.
stat_of() {
	local v
	v=$(grep -o "\"$2\"[[:space:]]*:[[:space:]]*\([0-9][0-9]*\|true\|false\)" "$1" | head -n 1 |
		sed 's/.*:[[:space:]]*//; s/^true$/1/; s/^false$/0/')
	[ -n "$v" ] || fail "no \"$2\" in $1: $(cat "$1")"
	printf '%s\n' "$v"
}

# flip_byte FILE OFFSET: invert the bits of one byte in place.
flip_byte() {
	local v
	v=$(od -An -tu1 -j "$2" -N 1 "$1" | tr -d ' ')
	[ -n "$v" ] || fail "flip_byte: $1 has no byte at $2"
	# shellcheck disable=SC2059 # the format is the octal escape we build
	printf "\\$(printf %03o $((v ^ 255)))" |
		dd of="$1" bs=1 seek="$2" count=1 conv=notrunc status=none
}

# --- fault-injection helpers (faults.sh, cache-crash.sh) ---------------------

# need_nginx: nginx installed, or skip; under CI (CI=true) its absence fails.
need_nginx() {
	PATH=$PATH:/usr/sbin need_ci_tools nginx
}

# proxy_start UPSTREAM_PORT: starts cfs-faultproxy in front of
# 127.0.0.1:UPSTREAM_PORT; sets PROXY_PORT, PROXY_PID, PROXY_CTL (its
# control file) and PROXY_LOG.
proxy_start() {
	local rc=0
	: "${CFS_FAULTPROXY:?}"
	PROXY_CTL=$W/proxy.ctl PROXY_LOG=$W/proxy.log
	: > "$PROXY_CTL"
	rm -f "$W/proxy.port"
	"$CFS_FAULTPROXY" --listen 127.0.0.1:0 --upstream "127.0.0.1:$1" --port-file "$W/proxy.port" \
		--control "$PROXY_CTL" --log "$PROXY_LOG" -v > /dev/null &
	PROXY_PID=$!
	PIDS+=("$PROXY_PID")
	wait_until 5 --while "$PROXY_PID" test -s "$W/proxy.port" || rc=$?
	[ "$rc" -ne 2 ] || fail "cfs-faultproxy exited: $(tail -n 3 "$PROXY_LOG")"
	PROXY_PORT=$(cat "$W/proxy.port") || fail "cfs-faultproxy wrote no port file"
}

# proxy_set KEY=VALUE...: replaces the proxy's faults (none: clear them).
# Written whole and renamed, so the proxy never reads half a file.
proxy_set() {
	printf '%s\n' "$@" > "$PROXY_CTL.tmp"
	mv -f "$PROXY_CTL.tmp" "$PROXY_CTL"
}

# proxy_stat KEY: one counter of the proxy's /__proxy_stats.
proxy_stat() {
	local f=$W/proxy-stats.json
	curl -s -m 10 -o "$f" "http://127.0.0.1:$PROXY_PORT/__proxy_stats" ||
		fail "cfs-faultproxy does not answer /__proxy_stats"
	stat_of "$f" "$1"
}

# proxy_faults KIND: how many "fault KIND" lines the proxy has logged.
proxy_faults() {
	grep -c " fault $1 " "$PROXY_LOG" || true
}

# json_sum FILE SUBSTR: the sum of every integer value in a JSON object
# whose key contains SUBSTR (so "retries" finds "fetch_retries" too); fails
# when no key does.
json_sum() {
	local pairs
	pairs=$(grep -o "\"[a-z0-9_]*$2[a-z0-9_]*\"[[:space:]]*:[[:space:]]*[0-9]*" "$1") ||
		fail "no key containing \"$2\" in $1: $(cat "$1")"
	printf '%s\n' "$pairs" | grep -o '[0-9]*$' | awk '{ s += $1 } END { print s + 0 }'
}

# mount_stats MOUNTPOINT FILE: the live counters of the mount, from
# `cfs-mount --stats MOUNTPOINT`: one line, a JSON object.
mount_stats() {
	timeout 30 "$CFS_MOUNT" --stats "$1" > "$2" 2> "$2.err" ||
		fail "cfs-mount --stats $1 exited $?: $(head -n 3 "$2.err")"
	[ "$(wc -l < "$2")" -eq 1 ] || fail "cfs-mount --stats $1 printed $(wc -l < "$2") lines, not one"
	grep -q '^{.*}$' "$2" || fail "cfs-mount --stats $1 printed no JSON object: $(head -c 300 "$2")"
}

# pool_settled MOUNTPOINT FILE: the mount's counters into FILE; true when its
# readahead pool has nothing queued or in flight (what was queued is in).
pool_settled() {
	mount_stats "$1" "$2"
	[ "$(stat_of "$2" readahead_pending)" -eq 0 ]
}

# drop_file_cache FILE: drops FILE's clean pages from the page cache, so the
# next read goes to the daemon again.
drop_file_cache() {
	dd if="$1" iflag=nocache count=0 status=none 2>/dev/null || true
}

# chunks_of SRC FILE: the chunk objects of SRC/FILE, one hex name a line,
# sorted: FILE packed alone at the same path (large files are chunked from
# their own start), less that image's index.
chunks_of() {
	local d=$W/solo-${2//\//_} r
	mkdir -p "$d/src/$(dirname "$2")"
	cp "$1/$2" "$d/src/$2"
	timeout 120 "$CFS_PACK" -q "$d/src" "$d/store" > "$d/pack.out" || fail "cfs-pack $2 alone exited $?"
	r=$(ref_of "$d/pack.out")
	find "$d/store/objects" -type f -printf '%f\n' | { grep -vx "${r#sha256:}" || true; } | sort
}

# now_ms: a monotonic-enough clock in milliseconds.
now_ms() {
	echo $(($(date +%s%N) / 1000000))
}

# py_cfs_load PYTHON ARGS...: PYTHON with the cfs_load binding on its path
# (CFS_SRCDIR, CFS_LOAD_LIB).  A sanitized libcfsload.so (the ASan+UBSan
# build) needs its runtimes loaded before anything else in an interpreter
# that was not built with them; the interpreter's own allocations at exit
# are not ours to report.
py_cfs_load() {
	local py=$1 pre=() so
	shift
	for so in $(ldd "$CFS_LOAD_LIB" | awk '/lib(a|ub)san\.so/ {print $3}'); do
		pre+=("$so")
	done
	if [ ${#pre[@]} -gt 0 ]; then
		LD_PRELOAD="${pre[*]}" ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" \
			PYTHONPATH=$CFS_SRCDIR/loader/python CFS_LOAD_LIB=$CFS_LOAD_LIB timeout 300 "$py" "$@"
	else
		PYTHONPATH=$CFS_SRCDIR/loader/python CFS_LOAD_LIB=$CFS_LOAD_LIB timeout 300 "$py" "$@"
	fi
}

# mount_bg MOUNTPOINT STORE IMAGE [OPTS...]: cfs-mount -f in the background
# (log in MOUNTPOINT.log, unless OPTS give another --log), waits until
# mounted; sets MOUNT_PID and adds the mount and the daemon to MOUNTS and
# PIDS.
mount_bg() {
	local mp=$1 store=$2 image=$3 log=$1.log a prev='' rc=0
	shift 3
	for a; do
		[ "$prev" = --log ] && log=$a
		prev=$a
	done
	mkdir -p "$mp"
	"$CFS_MOUNT" -f --log "$mp.log" "$@" "$store" "$image" "$mp" &
	MOUNT_PID=$!
	PIDS+=("$MOUNT_PID")
	MOUNTS+=("$mp")
	wait_until 30 --while "$MOUNT_PID" mountpoint -q "$mp" || rc=$?
	case $rc in
	0) return 0 ;;
	1) fail "cfs-mount $store $image: not mounted after 30 s" ;;
	esac
	rc=0
	wait "$MOUNT_PID" || rc=$?
	fail "cfs-mount $store $image exited $rc before mounting: $(tail -n 3 "$log" 2>/dev/null)"
}

# --- servers for the remote stores (remote.sh) ------------------------------

# free_port: a TCP port on 127.0.0.1 that nothing listens on just now.
free_port() {
	local port i
	for ((i = 0; i < 50; i++)); do
		port=$((20000 + RANDOM % 30000))
		(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return 0; }
	done
	fail "no free port found"
}

# _nginx_conf D LOG_FORMAT ACCESS_LOG LISTEN ROOT [SERVER_LINES]: writes
# D/nginx.conf, one nginx without master process serving ROOT on LISTEN,
# every request logged in LOG_FORMAT (nginx's variables) to ACCESS_LOG,
# errors in D/error.log, temporary files under D/tmp; SERVER_LINES go into
# the server block as they are.
_nginx_conf() {
	local d=$1 format=$2 access_log=$3 listen=$4 root=$5 server_lines=${6:-}
	mkdir -p "$d/tmp"
	cat >"$d/nginx.conf" <<-NGINX
		daemon off;
		master_process off;
		worker_processes 1;
		$([ "$(id -u)" -eq 0 ] && echo 'user root;')
		pid $d/nginx.pid;
		error_log $d/error.log;
		events { worker_connections 1024; }
		http {
			log_format cfs '$format';
			access_log $access_log cfs;
			client_body_temp_path $d/tmp;
			proxy_temp_path $d/tmp;
			fastcgi_temp_path $d/tmp;
			uwsgi_temp_path $d/tmp;
			scgi_temp_path $d/tmp;
			sendfile on;
			keepalive_requests 100000;
			server {
				listen $listen;
				root $root;
		$server_lines
			}
		}
	NGINX
}

# _nginx_launch D SECONDS CURL_ARG...: runs nginx on D/nginx.conf and waits
# up to SECONDS until curl CURL_ARG... gets an answer.
# Then NGINX_LAUNCHED_PID is its pid, in PIDS for the exit trap, and it
# returns 0; it returns 1, with that nginx ended, when it dies first or
# never answers.
_nginx_launch() {
	local d=$1 secs=$2 pid nginx_bin
	shift 2
	nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
	"$nginx_bin" -c "$d/nginx.conf" -e "$d/error.log" &
	pid=$!
	serving "$pid" "$secs" curl -s -o /dev/null "$@" || return 1
	NGINX_LAUNCHED_PID=$pid
}

# _nginx_require: fails the test when there is no nginx to run.
_nginx_require() {
	[ -x "$(command -v nginx || echo /usr/sbin/nginx)" ] || fail "nginx is not installed"
}

# start_nginx DIR: serves DIR at http://127.0.0.1:$NGINX_PORT/ with nginx
# (plain HTTP/1.1: nginx speaks HTTP/2 over TLS only), configured under
# $W/nginx-http; every request is one line "METHOD URI STATUS BYTES" in
# $NGINX_ACCESS_LOG.  While DIR/.deny-objects exists, every object is 403
# Forbidden.  The daemon is ended by the exit trap.
start_nginx() {
	local dir=$1 d=$W/nginx-http try
	_nginx_require
	NGINX_ACCESS_LOG=$d/access.log
	for ((try = 0; try < 10; try++)); do
		NGINX_PORT=$(free_port)
		# While DIR/.deny-objects exists, objects are 403.
		# shellcheck disable=SC2016 # nginx's variables, for nginx
		_nginx_conf "$d" '$request_method $uri $status $body_bytes_sent' \
			"$NGINX_ACCESS_LOG" "127.0.0.1:$NGINX_PORT" "$dir" \
			'location /objects/ { if (-f $document_root/.deny-objects) { return 403; } }'
		if _nginx_launch "$d" 5 "http://127.0.0.1:$NGINX_PORT/"; then
			NGINX_PID=$NGINX_LAUNCHED_PID
			return 0
		fi
	done
	fail "nginx did not start: $(tail -n 3 "$d/error.log" 2>/dev/null)"
}

# make_tls_certs D: a throwaway CA made by the openssl CLI, D/ca.pem (its
# key D/ca.key), and a server certificate it signs for the address 127.0.0.1
# (CN and IP SAN, not a name), D/server.pem with its key D/server.key (RSA).
# Made once: a second call on the same D keeps what is there.
make_tls_certs() {
	local d=$1
	[ -s "$d/server.pem" ] && return 0
	command -v openssl >/dev/null 2>&1 || fail "openssl is not installed"
	mkdir -p "$d"
	openssl req -x509 -new -newkey rsa:2048 -nodes -days 2 -subj "/CN=cfs test CA" \
		-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
		-keyout "$d/ca.key" -out "$d/ca.pem" >"$d/openssl.log" 2>&1 ||
		fail "openssl: making the test CA failed: $(tail -n 3 "$d/openssl.log")"
	openssl req -new -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
		-keyout "$d/server.key" -out "$d/server.csr" >>"$d/openssl.log" 2>&1 ||
		fail "openssl: the server key failed: $(tail -n 3 "$d/openssl.log")"
	printf '%s\n' basicConstraints=CA:FALSE keyUsage=digitalSignature,keyEncipherment \
		extendedKeyUsage=serverAuth subjectAltName=IP:127.0.0.1 >"$d/server.ext"
	openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" \
		-CAcreateserial -days 2 -extfile "$d/server.ext" -out "$d/server.pem" >>"$d/openssl.log" 2>&1 ||
		fail "openssl: signing the server certificate failed: $(tail -n 3 "$d/openssl.log")"
}

# start_nginx_tls DIR: serves DIR at https://127.0.0.1:$NGINX_TLS_PORT/
# with nginx over TLS with HTTP/2 offered (ALPN h2 and http/1.1), with a
# throwaway CA made here by the openssl CLI: $NGINX_TLS_CA is its
# certificate (PEM), which signed the server's (CN and IP SAN 127.0.0.1).
# Every request is one line "PROTOCOL CONNECTION METHOD URI STATUS BYTES"
# in $NGINX_TLS_ACCESS_LOG, e.g. "HTTP/2.0 7 GET /objects/ab/ab12... 200
# 1234" (CONNECTION is nginx's serial number of the connection).
# Configured under $W/nginx-tls; the daemon is ended by the exit trap.
start_nginx_tls() {
	local dir=$1 d=$W/nginx-tls try
	_nginx_require
	NGINX_TLS_CA=$d/ca.pem
	NGINX_TLS_ACCESS_LOG=$d/access.log
	make_tls_certs "$d"
	for ((try = 0; try < 10; try++)); do
		NGINX_TLS_PORT=$(free_port)
		# shellcheck disable=SC2016 # nginx's variables, for nginx
		_nginx_conf "$d" \
			'$server_protocol $connection $request_method $uri $status $body_bytes_sent' \
			"$NGINX_TLS_ACCESS_LOG" "127.0.0.1:$NGINX_TLS_PORT ssl http2" "$dir" \
			"ssl_certificate $d/server.pem; ssl_certificate_key $d/server.key;"
		if _nginx_launch "$d" 5 --cacert "$NGINX_TLS_CA" "https://127.0.0.1:$NGINX_TLS_PORT/"; then
			NGINX_TLS_PID=$NGINX_LAUNCHED_PID
			return 0
		fi
	done
	fail "nginx (TLS) did not start: $(tail -n 3 "$d/error.log" 2>/dev/null)"
}

# find_s3rver: the s3rver command (CFS_S3RVER, or what
# scripts/install-deps.sh installed under /opt/cfs-test-deps) in S3RVER, and
# node in NODE; returns 1 when either is missing.
find_s3rver() {
	local cand
	NODE=$(command -v node || command -v nodejs || true)
	[ -n "$NODE" ] || return 1
	for cand in "${CFS_S3RVER:-}" "${CFS_S3RVER:+$CFS_S3RVER/node_modules/s3rver/bin/s3rver.js}" \
		/opt/cfs-test-deps/node_modules/s3rver/bin/s3rver.js; do
		[ -n "$cand" ] && [ -f "$cand" ] && { S3RVER=$cand; return 0; }
	done
	return 1
}

# start_s3rver BUCKET: runs the S3 peer s3rver on 127.0.0.1:$S3_PORT with
# its data in $S3_DIR and BUCKET created, and exports the AWS_* variables
# that point cfs at it.  Ended by the exit trap.
start_s3rver() {
	local bucket=$1 pid try
	find_s3rver || fail "s3rver not found"
	S3_DIR=$W/s3rver
	mkdir -p "$S3_DIR"
	for ((try = 0; try < 10; try++)); do
		S3_PORT=$(free_port)
		"$NODE" "$S3RVER" --directory "$S3_DIR" --address 127.0.0.1 --port "$S3_PORT" \
			--silent --configure-bucket "$bucket" >"$W/s3rver.log" 2>&1 &
		pid=$!
		# Any answer will do (curl without -f): s3rver is up.
		if serving "$pid" 10 curl -s -o /dev/null "http://127.0.0.1:$S3_PORT/$bucket"; then
			S3RVER_PID=$pid
			export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER
			export AWS_ENDPOINT_URL=http://127.0.0.1:$S3_PORT AWS_REGION=us-east-1
			unset AWS_SESSION_TOKEN
			return 0
		fi
	done
	fail "s3rver did not start: $(tail -n 5 "$W/s3rver.log")"
}

# --- restarting the nginx of start_nginx (faults.sh) ---------------------------

# stop_nginx: ends the nginx of start_nginx; its port then refuses
# connections.
stop_nginx() {
	kill "$NGINX_PID" 2>/dev/null || true
	wait "$NGINX_PID" 2>/dev/null || true
}

# restart_nginx: starts the nginx of start_nginx again, same configuration
# and port ($NGINX_PORT), after stop_nginx.
restart_nginx() {
	local d=$W/nginx-http
	[ -f "$d/nginx.conf" ] || fail "restart_nginx: no $d/nginx.conf (start_nginx first)"
	_nginx_launch "$d" 10 "http://127.0.0.1:$NGINX_PORT/" ||
		fail "nginx did not restart on port $NGINX_PORT: $(tail -n 3 "$d/error.log" 2>/dev/null)"
	NGINX_PID=$NGINX_LAUNCHED_PID
}

# mount_image STORE IMAGE MOUNTPOINT [cfs-mount options...]: cfs-mount as a
# daemon, registered for cleanup; sets MOUNT_MS to how long it took to return.
mount_image() {
	local store=$1 image=$2 mp=$3 t0
	shift 3
	mkdir -p "$mp"
	MOUNTS+=("$mp")
	t0=$(now_ms)
	timeout 60 "$CFS_MOUNT" "$@" "$store" "$image" "$mp" >"$mp.log" 2>&1 ||
		fail "cfs-mount $* $store $image $mp exited $?: $(tail -n 3 "$mp.log")"
	MOUNT_MS=$(($(now_ms) - t0))
	mountpoint -q "$mp" || fail "cfs-mount returned but $mp is not a mountpoint"
	remember_daemon "$mp"
}

# remember_daemon MOUNTPOINT: the pid of the cfs-mount daemon that forked
# off to serve MOUNTPOINT, in PIDS and in MOUNTPOINT.pid (for
# unmount_image), so that it can be waited for and, on failure, ended by
# pid.  The mountpoint is unique to this run.
remember_daemon() {
	local pid
	pid=$(pgrep -f -- "cfs-mount.* $1\$" | head -n 1 || true)
	[ -n "$pid" ] && PIDS+=("$pid")
	echo "$pid" >"$1.pid"
}

# unmount_image MOUNTPOINT: unmount and wait until its daemon is gone.
unmount_image() {
	unmount_wait "$1" "$(cat "$1.pid")"
}

# compare FLAGS... A B: cfs-treecmp must find the trees identical.
compare() {
	local rc=0
	"$CFS_TREECMP" "$@" >"$W/treecmp.out" 2>"$W/treecmp.err" || rc=$?
	cat "$W/treecmp.out"
	if [ "$rc" -ne 0 ]; then
		head -n 60 "$W/treecmp.err" >&2
		fail "cfs-treecmp $* exited $rc"
	fi
}

# --- nginx with a configuration of the test's own (zonal.sh) --------------------

# start_nginx_http NAME HTTP_TEXT: runs an nginx whose http block holds
# HTTP_TEXT as it is, after every "@PORT@" in it is replaced by a free port;
# configured under $W/nginx-NAME (temporary files in its tmp/, errors in its
# error.log).  Sets NGINX_HTTP_PORT and NGINX_HTTP_PID (also in PIDS, for
# the exit trap) once http://127.0.0.1:PORT/ answers with any status.
start_nginx_http() {
	local name=$1 text=$2 d=$W/nginx-$1 try t
	_nginx_require
	mkdir -p "$d/tmp"
	for ((try = 0; try < 10; try++)); do
		NGINX_HTTP_PORT=$(free_port)
		{
			echo 'daemon off;'
			echo 'master_process off;'
			echo 'worker_processes 1;'
			[ "$(id -u)" -eq 0 ] && echo 'user root;'
			echo "pid $d/nginx.pid;"
			echo "error_log $d/error.log;"
			echo 'events { worker_connections 4096; }'
			echo 'http {'
			for t in client_body proxy fastcgi uwsgi scgi; do echo "${t}_temp_path $d/tmp;"; done
			printf '%s\n' "${text//@PORT@/$NGINX_HTTP_PORT}"
			echo '}'
		} >"$d/nginx.conf"
		if _nginx_launch "$d" 5 "http://127.0.0.1:$NGINX_HTTP_PORT/"; then
			NGINX_HTTP_PID=$NGINX_LAUNCHED_PID
			return 0
		fi
		# A configuration error is not a busy port: say so at once.
		grep -q 'emerg' "$d/error.log" 2>/dev/null && ! grep -q 'Address already in use' "$d/error.log" &&
			fail "nginx $name: $(grep emerg "$d/error.log" | tail -n 3)"
	done
	fail "nginx $name did not start: $(tail -n 3 "$d/error.log" 2>/dev/null)"
}

# doc_block FILE FIRST LAST: the lines of FILE from the one that is FIRST to
# the one that is LAST, both included (a block a test runs as the docs show
# it); fails when there is no such block.
doc_block() {
	local out
	out=$(sed -n "\\|^$2\$|,\\|^$3\$|p" "$1")
	[ -n "$out" ] && [ "$(printf '%s\n' "$out" | tail -n 1)" = "$3" ] ||
		fail "$1: no block from '$2' to '$3'"
	printf '%s\n' "$out"
}
