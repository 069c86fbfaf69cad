#!/usr/bin/env bash
# The read path: READ replies spliced from the cache files and copied (CFS_FUSE_SPLICE=0) give the same bytes; a remount trusts its sealed cache without hashing or fetching; a cache file written to or truncated under the running mount is refetched, never served wrong.
#
# Env: CFS_PACK, CFS_MOUNT, CFS_TREECMP (set by tests/meson.build).
# Exit 77 without FUSE.
set -euo pipefail

source "$(dirname "$0")/lib.sh"

need_fuse
: "${CFS_PACK:?}" "${CFS_MOUNT:?}" "${CFS_TREECMP:?}"

make_workdir readpath
m=$W/mnt
cache=$W/cache
MiB=$((1024 * 1024))

step "tree: big files (page-aligned and not), a sparse file, small files in group chunks"
src=$W/src
mkdir -p "$src/big" "$src/small"
head -c $((5 * MiB)) /dev/urandom > "$src/big/aligned.bin"
head -c $((3 * MiB + 12345)) /dev/urandom > "$src/big/odd.bin"
# Holes between data: zeros segments inside a spliced reply.
truncate -s $((6 * MiB)) "$src/big/sparse.bin"
head -c 70000 /dev/urandom | dd of="$src/big/sparse.bin" bs=1 seek=$((2 * MiB + 100)) conv=notrunc status=none
head -c 5000 /dev/urandom | dd of="$src/big/sparse.bin" bs=1 seek=$((6 * MiB - 5000)) conv=notrunc status=none
for i in $(seq 1 300); do
	head -c $((100 + i * 37)) /dev/urandom > "$src/small/f$i"
done
timeout 300 "$CFS_PACK" --tag rp "$src" "$W/store" > "$W/pack.out" || fail "cfs-pack exited $?"

# drop_all: the next reads go to the daemon, and the daemon's reads of its
# cache files to the disk.
drop_all() {
	sync
	echo 3 > /proc/sys/vm/drop_caches 2>/dev/null ||
		find "$m" -type f -exec dd if={} iflag=nocache count=0 status=none \; 2>/dev/null || true
}

# odd_reads: reads at offsets and sizes that are not page multiples.
odd_reads() {
	local f=$1 size off
	size=$(stat -c %s "$src/$f")
	for off in 1 4095 $((MiB - 7)) $((2 * MiB + 99)) $((size - 3)); do
		[ "$off" -lt "$size" ] || continue
		cmp -s <(tail -c +$((off + 1)) "$m/$f" | head -c 300000) \
			<(tail -c +$((off + 1)) "$src/$f" | head -c 300000) ||
			fail "$f: 300000 bytes at $off differ"
	done
}

step "1. first mount: every chunk fetched, spliced where the kernel lets us"
mount_bg "$m" "$W/store" rp --cache "$cache"
compare "$src" "$m"
odd_reads big/odd.bin
odd_reads big/sparse.bin
mount_stats "$m" "$W/s1.json"
splice=$(stat_of "$W/s1.json" splice)
echo "   splice=$splice read_splice=$(stat_of "$W/s1.json" read_splice) read_copy=$(stat_of "$W/s1.json" read_copy)"
if [ "$splice" -eq 1 ]; then
	[ "$(stat_of "$W/s1.json" read_splice)" -gt 0 ] || fail "splice on, but no spliced replies: $(cat "$W/s1.json")"
else
	echo "   (libfuse or the pipes cannot splice here: the copy path served)"
fi
unmount_wait "$m" "$MOUNT_PID" 30

step "2. remount on the filled cache, caches dropped: nothing fetched, nothing hashed"
drop_all
mount_bg "$m" "$W/store" rp --cache "$cache"
compare "$src" "$m"
mount_stats "$m" "$W/s2.json"
echo "   $(tr ',' '\n' < "$W/s2.json" | grep -E 'chunk_fetches|verifies|file_hits|disk_hits|read_splice|read_copy' | tr -d '\n{}')"
[ "$(stat_of "$W/s2.json" chunk_fetches)" -eq 0 ] || fail "the remount fetched chunks: $(cat "$W/s2.json")"
[ "$(stat_of "$W/s2.json" cache_disk_hits)" -gt 0 ] || fail "no cache hits on the remount"
if getfattr -n user.cfs.seal "$(find "$cache" -type f -name '[0-9a-f]*' | head -n 1)" >/dev/null 2>&1 ||
	! command -v getfattr >/dev/null; then
	[ "$(stat_of "$W/s2.json" cache_verifies)" -eq 0 ] ||
		fail "sealed entries were hashed on the remount: $(cat "$W/s2.json")"
fi

step "3. under the running mount: a byte written into one cache file, another truncated"
mapfile -t ent < <(find "$cache" -type f -size +512k -regextype egrep -regex '.*/[0-9a-f]{2}/[0-9a-f]{64}' | sort | head -n 2)
[ "${#ent[@]}" -eq 2 ] || fail "found ${#ent[@]} cache entries over 512 KiB, need 2"
size=$(stat -c %s "${ent[0]}")
off=$((size / 3))
v=$(od -An -tu1 -j "$off" -N 1 "${ent[0]}" | tr -d ' ')
# shellcheck disable=SC2059 # the format is the octal escape we build
printf "\\$(printf %03o $((v ^ 255)))" | dd of="${ent[0]}" bs=1 seek="$off" count=1 conv=notrunc status=none
truncate -s $(($(stat -c %s "${ent[1]}") / 2)) "${ent[1]}"
before=$(stat_of "$W/s2.json" chunk_fetches)
drop_all
compare "$src" "$m"
odd_reads big/aligned.bin
mount_stats "$m" "$W/s3.json"
stale=$(stat_of "$W/s3.json" cache_stale)
bad=$(stat_of "$W/s3.json" cache_disk_bad)
fetched=$(( $(stat_of "$W/s3.json" chunk_fetches) - before ))
echo "   stale=$stale disk_bad=$bad fetched again=$fetched; every byte right"
[ "$bad" -ge 2 ] || fail "disk_bad=$bad after damaging two cache files under the mount"
[ "$fetched" -ge 2 ] || fail "the two damaged chunks were not fetched again ($fetched)"
unmount_wait "$m" "$MOUNT_PID" 30

step "4. CFS_FUSE_SPLICE=0: the copy path, same bytes"
drop_all
CFS_FUSE_SPLICE=0 mount_bg "$m" "$W/store" rp --cache "$cache"
compare "$src" "$m"
odd_reads big/sparse.bin
mount_stats "$m" "$W/s4.json"
[ "$(stat_of "$W/s4.json" splice)" -eq 0 ] || fail "CFS_FUSE_SPLICE=0 still splices"
[ "$(stat_of "$W/s4.json" read_splice)" -eq 0 ] || fail "spliced replies with CFS_FUSE_SPLICE=0"
[ "$(stat_of "$W/s4.json" read_copy)" -gt 0 ] || fail "no copied replies with CFS_FUSE_SPLICE=0"
unmount_wait "$m" "$MOUNT_PID" 30

# A background mount's daemon runs under its holder with libfuse's custom
# I/O (fs/holder.c), which libfuse lets splice only when asked right.
step "5. a background mount (holder and daemon) splices as the foreground one does"
drop_all
mount_image "$W/store" rp "$m" --cache "$cache"
compare "$src" "$m"
mount_stats "$m" "$W/s5.json"
[ "$(stat_of "$W/s5.json" splice)" -eq "$splice" ] ||
	fail "splice=$(stat_of "$W/s5.json" splice) under the holder, $splice in the foreground"
if [ "$splice" -eq 1 ]; then
	[ "$(stat_of "$W/s5.json" read_splice)" -gt 0 ] || fail "no spliced replies under the holder"
fi
unmount_image "$m"

echo "PASS"
