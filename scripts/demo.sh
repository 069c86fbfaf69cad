#!/usr/bin/env bash
# One-command demo: build cfs, pack a busybox rootfs, mount it lazily, boot it with runc, and print a cold-start breakdown.
#
# Run from anywhere: as root, or as a user with sudo (it re-runs itself
# through sudo, keeping the environment).
# Environment:
#   CFS_SKIP_DEPS=1  do not run scripts/install-deps.sh
#   CFS_DEMO_KEEP=1  keep the work directory (store, rootfs, stats) afterwards
set -euo pipefail

cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

# runc, allow_other and dropping caches need root.
if [ "$(id -u)" -ne 0 ]; then
	command -v sudo >/dev/null 2>&1 || die "run as root (runc, allow_other and dropping caches need it)"
	exec sudo -E -- bash "$(readlink -f "${BASH_SOURCE[0]}")" "$@"
fi

if [ "${CFS_SKIP_DEPS:-0}" != 1 ]; then
	say "checking dependencies"
	bash scripts/install-deps.sh
fi
for c in meson ninja runc fusermount3 busybox; do
	command -v "$c" >/dev/null 2>&1 || die "$c not found (run scripts/install-deps.sh)"
done
[ -c /dev/fuse ] || die "/dev/fuse is missing: FUSE is not available on this machine"

say "building"
[ -f build/build.ninja ] || meson setup build
ninja -C build
pack=$PWD/build/tools/cfs-pack
mountcmd=$PWD/build/fs/cfs-mount
lscmd=$PWD/build/tools/cfs-ls

work=$(mktemp -d /tmp/cfs-demo.XXXXXX)
m=$work/mnt
cid=cfs-demo-$$-$RANDOM
store=$work/demo-store
cleanup() {
	runc delete -f "$cid" >/dev/null 2>&1 || true
	fusermount3 -u "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
	if [ "${CFS_DEMO_KEEP:-0}" = 1 ]; then
		echo "demo: kept $work"
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s%N; }
# ms START END: the time between two `now` stamps in ms, one decimal.
ms() {
	local us=$((($2 - $1) / 1000))
	printf '%d.%d' $((us / 1000)) $((us % 1000 / 100))
}

say "making a busybox rootfs"
bash scripts/mkrootfs.sh "$work/rootfs"
rootfs_bytes=$(du -sb "$work/rootfs" | cut -f1)
rootfs_files=$(find "$work/rootfs" | wc -l)
echo "$rootfs_files entries, $rootfs_bytes bytes"

say "packing into $store"
t0=$(now)
"$pack" --tag demo "$work/rootfs" "$store" > "$work/pack.out"
t1=$(now)
ref=$(tail -n 1 "$work/pack.out")
[[ $ref =~ ^sha256:[0-9a-f]{64}$ ]] || die "cfs-pack printed no reference"
pack_ms=$(ms "$t0" "$t1")
pack_mbs=$(awk -v b="$rootfs_bytes" -v ns=$((t1 - t0)) 'BEGIN { printf "%.1f", b / 1e6 / (ns / 1e9) }')
store_objects=$(find "$store/objects" -type f | wc -l)
store_bytes=$(find "$store/objects" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
echo "image $ref"
echo "store: $store_objects objects, $store_bytes bytes; $("$lscmd" "$store" demo | wc -l) entries in the image"

# The bundle only names the mount point, so it is ready before the clock starts.
cmd="echo hello from cfs; cat /etc/os-release 2>/dev/null; busybox | head -1"
mkdir -p "$m"
bash scripts/mkbundle.sh "$work/bundle" "$m" -- /bin/sh -c "$cmd"

say "cold start"
sync
if echo 3 > /proc/sys/vm/drop_caches 2>/dev/null; then
	caches="page cache dropped"
else
	caches="page cache NOT dropped (no permission)"
fi
rm -rf "$work/cache"   # the cfs disk cache starts empty
echo "$caches; cfs cache empty"

tm0=$(now)
"$mountcmd" -o allow_other,default_permissions,dev,suid --cache "$work/cache" \
	--stats-file "$work/stats.json" "$store" demo "$m"
tm1=$(now)
mountpoint -q "$m" || die "cfs-mount returned but nothing is mounted at $m"

# Stamp the first line the container prints; runc's own status goes to a file.
tc0=$(now)
set +e
runc run -b "$work/bundle" "$cid" < /dev/null 2> "$work/runc.err" |
	while IFS= read -r line; do
		[ -e "$work/first" ] || now > "$work/first"
		printf '  container | %s\n' "$line"
	done
rc=${PIPESTATUS[0]}
set -e
tc1=$(now)
if [ "$rc" -ne 0 ]; then
	sed 's/^/  runc: /' "$work/runc.err" >&2
	die "runc run exited $rc"
fi
[ -s "$work/first" ] || die "the container printed nothing"
tf=$(cat "$work/first")
runc delete -f "$cid" >/dev/null 2>&1 || true

# The daemon: the cfs-mount process whose last argument is our mount point.
daemon_pid() {
	local p args
	for p in /proc/[0-9]*; do
		[ "$(readlink "$p/exe" 2>/dev/null)" = "$mountcmd" ] || continue
		mapfile -d '' args < "$p/cmdline" 2>/dev/null || continue
		[ "${#args[@]}" -gt 0 ] && [ "${args[-1]}" = "$m" ] && { echo "${p#/proc/}"; return 0; }
	done
	return 0
}
dpid=$(daemon_pid)

tu0=$(now)
fusermount3 -u "$m"
# Wait for the daemon to exit; it writes its stats as it goes.
for _ in $(seq 400); do
	if [ -n "$dpid" ]; then
		# Gone, or a zombie waiting for init to reap it: it has exited.
		state=$(cut -d' ' -f3 "/proc/$dpid/stat" 2>/dev/null) || break
		[ "$state" != Z ] || break
	elif [ -s "$work/stats.json" ]; then
		break
	fi
	sleep 0.005
done
tu1=$(now)

stat_of() {
	grep -o "\"$1\"[[:space:]]*:[[:space:]]*[0-9]*" "$work/stats.json" 2>/dev/null | grep -o '[0-9]*$' || echo "?"
}
gets=$(stat_of store_gets)
get_bytes=$(stat_of store_get_bytes)
pct="?"
if [ "$get_bytes" != "?" ] && [ "$store_bytes" -gt 0 ]; then
	pct=$(awk -v a="$get_bytes" -v b="$store_bytes" 'BEGIN { printf "%.1f%%", 100 * a / b }')
fi

echo
say "cold-start breakdown ($(nproc) CPUs, $(uname -r))"
row() { printf '  %-34s %14s  %s\n' "$1" "$2" "${3:-}"; }
row "pack (rootfs -> store)" "$pack_ms ms" "$pack_mbs MB/s over $rootfs_bytes bytes"
row "image in store" "$store_bytes B" "$store_objects objects"
row "cfs-mount (start -> return)" "$(ms "$tm0" "$tm1") ms" "$caches"
row "first container output" "$(ms "$tm0" "$tf") ms" "from cfs-mount start"
row "container run (runc run)" "$(ms "$tc0" "$tc1") ms" "create, start, run, exit"
row "unmount (-> daemon exit)" "$(ms "$tu0" "$tu1") ms"
row "objects fetched from store" "$gets" "index included"
row "bytes fetched from store" "$get_bytes B" "$pct of the image"
if [ ! -s "$work/stats.json" ]; then
	echo "  (no stats file from cfs-mount: fetch counts unknown)"
fi
