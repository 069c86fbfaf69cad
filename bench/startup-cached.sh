#!/usr/bin/env bash
# A big framework's start-up served from cfs's disk cache, beside the same
# tree extracted on the local disk, in one run: the page cache is dropped
# before every run, so both read every byte from the disk.
#
# Usage: bench/startup-cached.sh ROOTFS [RUNS]     (RUNS default 5)
#
# ROOTFS: an extracted root filesystem on the local disk, e.g. the torch
# rootfs of bench/coldstart-remote.sh (/var/tmp/cfs-bench-rootfs-torch).
# CMD (default: python3 -c 'import torch, numpy') runs in it with chroot:
#   ext4   the extracted tree itself
#   cfs    cfs-pack of the tree into a local store, a fresh cfs-mount per
#          run on a disk cache that one warm-up run filled
# Prints the median seconds of each, cfs/ext4, the bytes the command read
# through the mount and the daemon's CPU seconds per GB served.  Root.
#
# Env: PROFILE=1 (the image gets a prefetch list recorded from one run;
#      cfs-mount prefetches it, from the disk cache, at mount), CMD, CFS_PACK, CFS_MOUNT, WORK (store, cache, mount; default
#      /var/tmp/cfs-startup-cached, on the local disk)
set -euo pipefail

# shellcheck source=bench/lib.sh disable=SC1091 # clean with and without shellcheck -x
source "$(dirname "$0")/lib.sh"
# shellcheck disable=SC2154 # set by lib.sh
{ cfs_pack=$pack; cfs_mount=$mnt_bin; }
rootfs=${1:?usage: bench/startup-cached.sh ROOTFS [RUNS]}
runs=${2:-5}
default_cmd="python3 -c 'import torch, numpy'"
cmd=${CMD:-$default_cmd}
work=${WORK:-/var/tmp/cfs-startup-cached}
[ "$(id -u)" = 0 ] || die "needs root (chroot, mounts, drop_caches)"
need_built "$cfs_pack" "$cfs_mount"
[ -x "$rootfs/bin/sh" ] || die "$rootfs: not a root filesystem"

mnt=$work/mnt
teardown() { umount "$mnt/dev" "$rootfs/dev" 2> /dev/null; fusermount3 -u "$mnt" 2> /dev/null || true; }
trap teardown EXIT
mkdir -p "$work" "$mnt"
if [ ! -s "$work/ref" ]; then
	note "packing $rootfs"
	"$cfs_pack" -q "$rootfs" "$work/store" | tail -n 1 > "$work/ref"
fi
ref=$(cat "$work/ref")

# in_root DIR: CMD chrooted in DIR with the host's /dev bound in (python
# wants /dev/urandom; the mount is nodev).
in_root() {
	mount --bind /dev "$1/dev"
	chroot "$1" sh -c "$cmd" > /dev/null 2>&1 || echo "bench/startup-cached.sh: $cmd failed in $1" >&2
	umount "$1/dev"
}
secs() { local t0; t0=$(now); "$@" > /dev/null 2>&1; calc "($(now) - $t0) / 1e9"; }
# cfs_up: mounts; prints the serving daemon's pid (the newest cfs-mount of
# this cache: a background mount is a holder and, its child, the daemon).
cfs_up() { "$cfs_mount" --cache "$work/cache" "$work/store" "$ref" "$mnt"; pgrep -n -f -- "cfs-mount --cache $work/cache"; }

note "warm-up: fills cfs's disk cache"
pid=$(cfs_up)
in_root "$mnt"
fusermount3 -u "$mnt"
while kill -0 "$pid" 2> /dev/null; do sleep 0.1; done
if [ "${PROFILE:-0}" = 1 ]; then
	# The image with a prefetch list from one recorded run: the mount then
	# reads the start-up set from the disk cache ahead of the command.
	note "PROFILE=1: recording a run, then cfs-pack --add-profile"
	"$cfs_mount" --cache "$work/cache" --record "$work/profile" "$work/store" "$ref" "$mnt"
	pid=$(pgrep -n -f -- "cfs-mount --cache $work/cache")
	in_root "$mnt"
	fusermount3 -u "$mnt"
	while kill -0 "$pid" 2> /dev/null; do sleep 0.1; done
	ref=$("$cfs_pack" --add-profile "$work/profile" -q "$work/store" "$ref" | tail -n 1)
fi

: > "$work/ext4" ; : > "$work/cfs"; : > "$work/cpu"
for ((r = 1; r <= runs; r++)); do
	drop_caches
	secs in_root "$rootfs" >> "$work/ext4"
	pid=$(cfs_up)
	drop_caches
	secs in_root "$mnt" >> "$work/cfs"
	read_b=$("$cfs_mount" --stats "$mnt" | grep -o '"read_bytes":[0-9]*' | cut -d: -f2)
	echo "$(calc "$(cpu_ticks "$pid") / $hz") $read_b" >> "$work/cpu"
	fusermount3 -u "$mnt"
	while kill -0 "$pid" 2> /dev/null; do sleep 0.1; done
	note "run $r: ext4 $(tail -n 1 "$work/ext4") s, cfs $(tail -n 1 "$work/cfs") s"
done
e=$(median < "$work/ext4")
c=$(median < "$work/cfs")
cpu=$(awk '{ print $1 / ($2 / 1e9) }' "$work/cpu" | median)
mb=$(awk '{ print $2 / 1e6 }' "$work/cpu" | median)
printf '# %s in %s, page cache dropped before each run, median of %d\n' "$cmd" "$rootfs" "$runs"
printf '%-8s %8s %10s %9s\n' method seconds MB-read cpu-s/GB
printf '%-8s %8.3f %10s %9s\n' ext4 "$e" - -
printf '%-8s %8.3f %10.1f %9.2f\n' cfs "$c" "$mb" "$cpu"
printf 'cfs / ext4: %.2fx (goal <= 1.1x)\n' "$(calc "$c / $e")"
