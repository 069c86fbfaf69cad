#!/usr/bin/env bash
# Repack: packing the same tree again gives the same reference and writes nothing; a small change writes a few objects.
#
# Env (set by tests/meson.build): CFS_PACK, CFS_MKTREE.  Needs root for
# cfs-mktree (devices, trusted.* xattrs, chown); exits 77 otherwise.
# Does not mount.
set -euo pipefail

source "$(dirname "$0")/lib.sh"

need_root
: "${CFS_PACK:?}" "${CFS_MKTREE:?}"

make_workdir repack
cd "$W"

# pack NAME ARGS...: runs cfs-pack, prints the reference (last stdout line).
pack() {
	local name=$1
	shift
	"$CFS_PACK" "$@" >"$name.out" 2>"$name.err" ||
		fail "cfs-pack $* exited $?: $(tail -n 3 "$name.err")"
	ref_of "$name.out"
}

# snapshot STORE: one line per object with its inode and mtime, so that an
# object rewritten in place or replaced by rename shows as a change.
snapshot() {
	(cd "$1/objects" && find . -type f -printf '%P %i %T@\n' | LC_ALL=C sort)
}
names() {
	(cd "$1/objects" && find . -type f -printf '%P\n' | LC_ALL=C sort)
}

step "mktree: small tree (4 MiB big file, 200 small files)"
"$CFS_MKTREE" src --big-mb 4 --small-count 200 || fail "cfs-mktree exited $?"

step "pack 1: src into store"
ref1=$(pack p1 --tag one src store)
snapshot store >snap1
echo "   reference $ref1, $(wc -l <snap1) objects"
[ -s snap1 ] || fail "the store has no objects after a pack"

step "pack 2: the same tree again"
# Let a rewritten object get a visibly different mtime.
sleep 1.1
ref2=$(pack p2 --tag two src store)
snapshot store >snap2
[ "$ref2" = "$ref1" ] || fail "same tree, different references: $ref1 then $ref2"
if ! cmp -s snap1 snap2; then
	diff snap1 snap2 | head -n 10 >&2
	fail "packing the same tree again changed the store's objects (above: < before, > after)"
fi
echo "   same reference, no object written"

step "pack 3: same tree with -j 1 into a second store"
ref3=$(pack p3 -j 1 src store-j1)
[ "$ref3" = "$ref1" ] || fail "-j 1 gave $ref3, the default gave $ref1"
names store >names1
names store-j1 >names-j1
cmp -s names1 names-j1 || fail "-j 1 wrote a different set of objects than the default -j"
echo "   same reference and objects"

step "change: one byte of many/f00100 and one byte of files/big.bin"
f=src/many/f00100
[ -f "$f" ] || fail "$f missing from the tree"
b=$(od -An -tu1 -j5 -N1 "$f" | tr -d ' ')
printf "\\$(printf '%03o' $(((b + 1) % 256)))" | dd of="$f" bs=1 seek=5 conv=notrunc status=none
b=$(od -An -tu1 -j$((2 * 1024 * 1024 + 12345)) -N1 src/files/big.bin | tr -d ' ')
printf "\\$(printf '%03o' $(((b + 1) % 256)))" |
	dd of=src/files/big.bin bs=1 seek=$((2 * 1024 * 1024 + 12345)) conv=notrunc status=none

step "pack 4: the changed tree"
ref4=$(pack p4 --tag changed src store)
[ "$ref4" != "$ref1" ] || fail "a changed tree gave the unchanged tree's reference $ref1"
snapshot store >snap4
# Objects that were there must be untouched; count the new ones.
missing=$(LC_ALL=C comm -23 snap1 snap4 | head -n 3)
[ -z "$missing" ] || fail "repacking changed or removed existing objects: $missing"
new=$(LC_ALL=C comm -13 snap1 snap4 | wc -l)
echo "   reference $ref4, $new new objects"
# The new index, the small file's chunk, one or two chunks of big.bin
# (two where a content-defined boundary moves), with some slack.
[ "$new" -ge 2 ] || fail "only $new new objects: a changed chunk was not stored"
[ "$new" -lt 10 ] || fail "$new new objects for a two-byte change (expected fewer than 10)"

echo "PASS: repack"
