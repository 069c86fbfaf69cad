#!/usr/bin/env bash
# Bad input gives a clear error or EIO, never a hang or a crash: missing tags and stores, corrupt indexes and chunks.
#
# Every command runs under `timeout 30`; status 124 counts as a hang and a
# status of 128 or more (a signal) as a crash. Each case prints the error it
# got so a reader can judge the message. Env: CFS_PACK, CFS_MOUNT, CFS_LS.
set -euo pipefail

source "$(dirname "$0")/lib.sh"

need_fuse
: "${CFS_PACK:?}" "${CFS_MOUNT:?}" "${CFS_LS:?}"

make_workdir badinput
m=$W/mnt
mkdir "$m"
MOUNTS+=("$m")

MiB=$((1024 * 1024))

# expect_fail CASE CMD...: CMD must fail by itself within 30 s and say why
# on stderr; the message is left in $W/err.
expect_fail() {
	local name=$1
	shift
	fails_alone "$name" timeout 30 "$@"
	[ -s "$W/err" ] || fail "$name: failed with status $FAILED_RC but printed no error"
	printf '%-32s exit %d: %s\n' "$name" "$FAILED_RC" "$(head -n 1 "$W/err")"
	if [ "$(wc -l < "$W/err")" -gt 1 ]; then
		echo "  (more lines on stderr:)"
		sed -n '2,6s/^/  | /p' "$W/err"
	fi
}

# not_mounted CASE: a failed mount must leave nothing behind.
not_mounted() {
	if mountpoint -q "$m"; then
		fail "$1: $m is mounted although cfs-mount failed"
	fi
}

# objects STORE: the names of all objects in STORE, sorted.
objects() {
	find "$1/objects" -type f -printf '%f\n' | sort
}

# A tree with three 3 MiB files of distinct random data (so each has chunks
# of its own) and some small files.
src=$W/src
mkdir -p "$src/data" "$src/etc"
for f in A B C; do
	head -c $((3 * MiB)) /dev/urandom > "$src/data/$f"
done
for i in $(seq 1 50); do
	printf 'small file %d\n' "$i" > "$src/etc/small-$i"
done
store=$W/store
timeout 120 "$CFS_PACK" --tag good "$src" "$store" > "$W/pack.out" || fail "cfs-pack $src exited $?"
ref=$(ref_of "$W/pack.out")
hex=${ref#sha256:}
index_rel=objects/${hex:0:2}/$hex
[ -f "$store/$index_rel" ] || fail "index object $index_rel missing"
echo "good image $ref"

# Sanity: the good image mounts and reads.
timeout 30 "$CFS_MOUNT" --cache "$W/cache-good" "$store" good "$m" || fail "good image does not mount"
timeout 30 cmp "$m/data/C" "$src/data/C" || fail "good image: data/C differs"
timeout 30 fusermount3 -u "$m" || fail "unmount failed"

echo
echo "# cfs-mount"
# (a) a tag that does not exist
expect_fail "(a) nonexistent tag" "$CFS_MOUNT" "$store" no-such-tag "$m"
grep -q 'no-such-tag' "$W/err" || fail "(a): the message does not name the tag"
not_mounted "(a)"

# (a2) a well-formed reference that is not in the store
expect_fail "(a2) unknown reference" "$CFS_MOUNT" "$store" "sha256:$(printf '0%.0s' $(seq 64))" "$m"
not_mounted "(a2)"

# (b) a store directory that does not exist
expect_fail "(b) nonexistent store" "$CFS_MOUNT" "$W/no-such-store" good "$m"
grep -q 'no-such-store' "$W/err" || echo "  note: the message does not name the store path"
not_mounted "(b)"

# (b2) a directory that is not a store
mkdir "$W/not-a-store"
expect_fail "(b2) directory is not a store" "$CFS_MOUNT" "$W/not-a-store" good "$m"
not_mounted "(b2)"

# (c) a mount point that is a regular file, or missing
: > "$W/regular-file"
expect_fail "(c) mountpoint is a file" "$CFS_MOUNT" "$store" good "$W/regular-file"
expect_fail "(c2) mountpoint missing" "$CFS_MOUNT" "$store" good "$W/no-such-dir"

# (d) the index object truncated to half its size
cp -a "$store" "$W/store-d"
size=$(stat -c %s "$W/store-d/$index_rel")
truncate -s $((size / 2)) "$W/store-d/$index_rel"
expect_fail "(d) truncated index" "$CFS_MOUNT" --cache "$W/cache-d" "$W/store-d" good "$m"
not_mounted "(d)"
expect_fail "(d) cfs-ls truncated index" "$CFS_LS" "$W/store-d" good

# (d2) the index object missing
cp -a "$store" "$W/store-d2"
rm "$W/store-d2/$index_rel"
expect_fail "(d2) missing index" "$CFS_MOUNT" --cache "$W/cache-d2" "$W/store-d2" good "$m"
not_mounted "(d2)"

# (e) one byte flipped in the middle of the compressed index object
cp -a "$store" "$W/store-e"
flip_byte "$W/store-e/$index_rel" $((size / 2))
cmp -s "$store/$index_rel" "$W/store-e/$index_rel" && fail "(e): flip_byte changed nothing"
expect_fail "(e) corrupt index" "$CFS_MOUNT" --cache "$W/cache-e" "$W/store-e" good "$m"
not_mounted "(e)"
expect_fail "(e) cfs-ls corrupt index" "$CFS_LS" "$W/store-e" good

echo
echo "# (f) a corrupt chunk of data/A, a missing chunk of data/B"
# The chunks of A and of B (chunks_of).
for f in A B; do
	chunks_of "$src" "data/$f" > "$W/chunks$f"
	[ -s "$W/chunks$f" ] || fail "no chunk objects found for data/$f"
	missing=$(comm -23 "$W/chunks$f" <(objects "$store"))
	[ -z "$missing" ] || fail "chunks of data/$f packed alone are not in the full image (chunking depends on neighbours?)"
	echo "data/$f: $(wc -l < "$W/chunks$f") chunk object(s)"
done
[ -z "$(comm -12 "$W/chunksA" "$W/chunksB")" ] || fail "data/A and data/B share a chunk"

cp -a "$store" "$W/store-f"
# The middle chunk of A (any one would do), flipped in the middle.
a=$(sed -n "$(( ($(wc -l < "$W/chunksA") + 1) / 2 ))p" "$W/chunksA")
a_obj=$W/store-f/objects/${a:0:2}/$a
flip_byte "$a_obj" $(($(stat -c %s "$a_obj") / 2))
b=$(head -n 1 "$W/chunksB")
rm "$W/store-f/objects/${b:0:2}/$b"

timeout 30 "$CFS_MOUNT" --cache "$W/cache-f" --stats-file "$W/stats-f.json" \
	"$W/store-f" good "$m" || fail "(f): the image with bad chunks does not mount"
mountpoint -q "$m" || fail "(f): not mounted"

# read_eio CASE FILE: reading FILE fails with EIO, and whatever came out
# before the error is the true content.
read_eio() {
	expect_eio "$1" "$m/$2" "$src/$2"
	printf '%-32s exit %d: %s\n' "$1" "$FAILED_RC" "$(head -n 1 "$W/err")"
	echo "  ($READ_BYTES good bytes before the error)"
}
for pass in 1 2; do
	read_eio "(f) corrupt chunk, read $pass" data/A
	read_eio "(f) missing chunk, read $pass" data/B
	mountpoint -q "$m" || fail "(f): the daemon died (mount gone)"
done
timeout 30 cmp "$m/data/C" "$src/data/C" || fail "(f): data/C no longer reads back intact"
timeout 30 cmp "$m/etc/small-7" "$src/etc/small-7" || fail "(f): etc/small-7 differs"
echo "(f) data/C and a small file still read back intact"
mountpoint -q "$m" || fail "(f): the daemon died (mount gone)"
timeout 30 fusermount3 -u "$m" || fail "(f): unmount failed"
if wait_until 10 grep -q '}' "$W/stats-f.json" 2>/dev/null; then
	echo "(f) daemon stats: $(cat "$W/stats-f.json")"
	errs=$(stat_of "$W/stats-f.json" read_errors)
	[ "$errs" -ge 2 ] || fail "(f): read_errors=$errs, expected at least 2"
else
	fail "(f): the daemon wrote no stats file within 10 s of unmount"
fi

echo
echo "# cfs-pack and cfs-ls"
expect_fail "(g) pack: missing source" "$CFS_PACK" "$W/no-such-source" "$W/store-g"
tar -C "$src" -czf "$W/src.tar.gz" .
head -c $(($(stat -c %s "$W/src.tar.gz") / 2)) "$W/src.tar.gz" > "$W/truncated.tar.gz"
expect_fail "(h) pack: truncated tar.gz" "$CFS_PACK" "$W/truncated.tar.gz" "$W/store-h"
head -c 100000 /dev/urandom > "$W/garbage.tar"
expect_fail "(h2) pack: garbage as tar" "$CFS_PACK" "$W/garbage.tar" "$W/store-h2"
expect_fail "(i) ls: nonexistent tag" "$CFS_LS" "$store" no-such-tag
grep -q 'no-such-tag' "$W/err" || fail "(i): the message does not name the tag"

echo "PASS"
