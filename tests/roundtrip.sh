#!/usr/bin/env bash
# Round trip: pack a tree with every entry kind (from a directory and from tar, gzip and zstd archives), mount it, and compare every byte and stat field.
#
# Env (set by tests/meson.build): CFS_PACK, CFS_MOUNT, CFS_LS, CFS_MKTREE,
# CFS_TREECMP.  Needs root (devices, trusted.* xattrs, chown in the source
# tree) and /dev/fuse; exits 77 otherwise.  CFS_BIG_MB / CFS_SMALL_COUNT
# shrink the tree for a quick run.
set -euo pipefail

source "$(dirname "$0")/lib.sh"

# A failed check that does not stop the later ones; the script fails at
# the end.
FAILED=0
soft_fail() { echo "FAIL: $*" >&2; FAILED=$((FAILED + 1)); }

need_root
need_fuse
need_cmds mountpoint
: "${CFS_PACK:?}" "${CFS_MOUNT:?}" "${CFS_LS:?}" "${CFS_MKTREE:?}" "${CFS_TREECMP:?}"

make_workdir roundtrip

# The store's object files; anything else under objects/ (a leftover .tmp,
# a misplaced object) is a failure.
count_objects() {
	local store=$1 bad
	bad=$(cd "$store/objects" && find . -mindepth 1 \( -type f -o -type l \) |
		grep -Ev '^\./([0-9a-f]{2})/\1[0-9a-f]{62}$' | head -n 3 || true)
	[ -z "$bad" ] || fail "unexpected files in $store/objects: $bad"
	find "$store/objects" -type f | wc -l
}

# pack SOURCE STORE TAG: packs, prints the reference.
pack() {
	local out=$W/pack-$3.out
	"$CFS_PACK" --tag "$3" "$1" "$2" >"$out" 2>"$W/pack-$3.err" ||
		fail "cfs-pack $1 $2 --tag $3 exited $?: $(tail -n 3 "$W/pack-$3.err")"
	[ -e "$2/tags/$3" ] || fail "cfs-pack --tag $3 did not create $2/tags/$3"
	ref_of "$out"
}

# st_blocks: no image format records a filesystem's own overhead (ext4
# counts an external xattr block or extent-tree blocks in st_blocks), so
# allow 64 KiB of slack per file; a sparse file that lost its holes is
# still caught.  Everything else is compared exactly.
BLOCKS=--approx-blocks

cd "$W"
step "mktree: generating the source tree in $W/src"
"$CFS_MKTREE" src ${CFS_BIG_MB:+--big-mb "$CFS_BIG_MB"} \
	${CFS_SMALL_COUNT:+--small-count "$CFS_SMALL_COUNT"} || fail "cfs-mktree exited $?"

# --- a. a directory source ------------------------------------------------
step "pack: directory src into store, tag rt"
ref=$(pack src store rt)
echo "   reference $ref, $(count_objects store) objects"

step "mount: store rt on mnt (allow_other,default_permissions,dev,suid, cache in cache/)"
mount_image store rt "$W/mnt" -o allow_other,default_permissions,dev,suid --cache "$W/cache"

# A container rootfs needs its device nodes and setuid binaries to work.
opts=$(awk -v mp="$W/mnt" '$2 == mp { print $4 }' /proc/mounts)
[[ ,$opts, == *,nosuid,* || ,$opts, == *,nodev,* ]] &&
	soft_fail "-o dev,suid did not take effect: mount options $opts"
head -c 1 mnt/dev/null >/dev/null || soft_fail "cannot open the device node mnt/dev/null"

step "treecmp: src against mnt"
compare $BLOCKS src mnt

step "mount: the same image by reference $ref on mnt2"
mount_image store "$ref" "$W/mnt2"
compare $BLOCKS src mnt2
unmount_image "$W/mnt2"

step "ls: cfs-ls store rt lists the odd names"
"$CFS_LS" store rt >ls.out 2>ls.err || fail "cfs-ls store rt exited $?: $(tail -n 3 ls.err)"
n=$(wc -l <ls.out)
[ "$n" -ge 3000 ] || fail "cfs-ls listed $n lines, expected one per entry (over 3000)"
longname=$(printf 'n%.0s' {1..255})
for want in -leading-dash "$longname" files/setuid "links/outside -> ../../etc/passwd"; do
	grep -qF -- "$want" ls.out || fail "cfs-ls output lacks '${want:0:40}'"
done
echo "   $n lines"

step "read-only: writes to mnt fail with EROFS"
err=$(touch mnt/x 2>&1) && fail "touch mnt/x succeeded on a read-only image"
[[ $err == *"Read-only file system"* ]] || fail "touch mnt/x failed, but not with EROFS: $err"
err=$( (echo x >>mnt/files/small.txt) 2>&1) && fail "appending to mnt/files/small.txt succeeded"
[[ $err == *"Read-only file system"* ]] || fail "append to mnt/files/small.txt: not EROFS: $err"
mkdir mnt/newdir 2>/dev/null && fail "mkdir mnt/newdir succeeded"
rm -f mnt/files/empty 2>/dev/null && [ ! -e mnt/files/empty ] && fail "rm mnt/files/empty succeeded"
chmod 0777 mnt/files/small.txt 2>/dev/null && fail "chmod on mnt succeeded"

step "unmount: mnt"
unmount_image "$W/mnt"

# --- b. tar sources -------------------------------------------------------
step "tar: archiving src (pax, xattrs, sparse, numeric owners)"
# Members in readdir order, as a plain tar -c writes them; another archive
# with the members sorted by name.
tar --format=posix --xattrs --xattrs-include='*' --sparse --numeric-owner \
	-C src -cf t.tar . || fail "tar -c exited $?"
tar --format=posix --xattrs --xattrs-include='*' --sparse --numeric-owner \
	--sort=name -C src -cf sorted.tar . || fail "tar -c --sort=name exited $?"
archives=(sorted.tar t.tar)
gzip -n -c t.tar >t.tar.gz || fail "gzip exited $?"
archives+=(t.tar.gz)
if command -v zstd >/dev/null 2>&1; then
	zstd -q -c t.tar >t.tar.zst || fail "zstd exited $?"
	archives+=(t.tar.zst)
else
	echo "   zstd not installed: no .tar.zst case"
fi

tar_ref=
for a in "${archives[@]}"; do
	before=$(count_objects store)
	step "pack: $a into the same store, tag tar"
	r=$(pack "$a" store tar)
	after=$(count_objects store)
	new=$((after - before))
	echo "   reference $r, $new new objects"
	# The archive holds the same tree as src and the image names chunks by
	# content, so its data is in the store already: allow the index and a
	# few chunks cut differently from a tar stream (sparse files).
	[ "$new" -le 5 ] ||
		soft_fail "$a added $new objects to a store that already holds the same tree"
	if [ "$a" = sorted.tar ]; then
		# Same tree, same order as the directory walk: nothing may differ.
		[ "$r" = "$ref" ] ||
			soft_fail "$a (members sorted by name) gave $r, the directory gave $ref"
	elif [ -z "$tar_ref" ]; then
		tar_ref=$r
		[ "$r" = "$ref" ] ||
			soft_fail "$a gave $r, the directory gave $ref: the reference depends on member order"
	else
		# Compression is no part of the image: same archive, same image.
		[ "$r" = "$tar_ref" ] || soft_fail "$a gave $r, t.tar gave $tar_ref"
	fi

	step "mount: tag tar ($a) on mnt-tar"
	mount_image store tar "$W/mnt-tar" -o allow_other,default_permissions,dev,suid \
		--cache "$W/cache-tar"
	# Directory mtimes are compared too: the packer reads them from the
	# archive's own entries rather than extracting, and GNU tar's pax
	# headers keep them to the nanosecond (tar -x of this archive
	# reproduces src exactly).  Only st_blocks is relaxed, as above.
	step "treecmp: src against mnt-tar"
	compare $BLOCKS src mnt-tar
	step "unmount: mnt-tar"
	unmount_image "$W/mnt-tar"
done

[ "$FAILED" -eq 0 ] || fail "$FAILED checks failed (above)"
echo "PASS: roundtrip"
