#!/usr/bin/env bash
# cfs-pack --profile-run CMD: packs, records CMD chrooted in the mount, repacks with the profile in one command; nothing left behind; a failing CMD warns, a hanging one is killed, reading nothing fails.
#
# Env: CFS_PACK, CFS_MOUNT, CFS_LS, CFS_SRCDIR (tests/meson.build).  Needs
# root (chroot) and FUSE, and a static busybox for scripts/mkrootfs.sh;
# exits 77 without them.
set -euo pipefail

source "$(dirname "$0")/lib.sh"

need_fuse
need_root "--profile-run chroots into the mount"
: "${CFS_PACK:?}" "${CFS_MOUNT:?}" "${CFS_LS:?}"
srcdir=${CFS_SRCDIR:-$(cd "$(dirname "$0")/.." && pwd)}

make_workdir profile-run
src=$W/rootfs
store=$W/store
m=$W/mnt
MOUNTS+=("$m")
# cfs-pack's temporary directories go here, to be looked for afterwards.
export TMPDIR=$W/tmp
mkdir -p "$TMPDIR"

step "rootfs"
bash "$srcdir/scripts/mkrootfs.sh" "$src" > /dev/null 2>&1 || skip "scripts/mkrootfs.sh: no static busybox"
# Small files that the plain layout spreads over many group chunks.
mkdir -p "$src/usr/share/filler"
for i in $(seq -w 1 240); do
	seq -f "filler $i line %g" 1 $((40 + 10#$i)) > "$src/usr/share/filler/f$i"
done
read_files=(/etc/hostname /usr/share/filler/f010 /usr/share/filler/f090 /usr/share/filler/f170
	/usr/share/filler/f230 /usr/share/doc/busybox/README)

# nothing_left WHAT: no temporary directory and no mount of cfs-pack's.
nothing_left() {
	[ -z "$(ls -A "$TMPDIR")" ] || fail "$1: left in \$TMPDIR: $(ls -A "$TMPDIR")"
	! grep -q -- "$TMPDIR" /proc/self/mountinfo || fail "$1: a mount left: $(grep -- "$TMPDIR" /proc/self/mountinfo)"
}

# prefetch_chunks IMAGE: the length of IMAGE's prefetch list in $store.
prefetch_chunks() {
	"$CFS_LS" --info "$store" "$1" > "$W/info" || fail "cfs-ls --info $1 failed"
	awk '$1 == "prefetch_chunks" { print $2 }' "$W/info"
}

step "--profile-run: one command, one reference on stdout"
timeout 300 "$CFS_PACK" --tag t \
	--profile-run "echo marker-out; cat ${read_files[*]} > /dev/null" "$src" "$store" \
	> "$W/out" 2> "$W/err" || fail "cfs-pack --profile-run exited $?: $(cat "$W/err")"
cat "$W/err"
[ "$(wc -l < "$W/out")" -eq 1 ] || fail "stdout is not one line: $(cat "$W/out")"
ref=$(ref_of "$W/out")
[ "$(cat "$store/tags/t")" = "$ref" ] || fail "tag t does not name $ref"
grep -qx marker-out "$W/err" || fail "CMD's stdout did not reach stderr"
nothing_left "--profile-run"
n=$(prefetch_chunks t)
echo "prefetch list of $n chunks"
[ "${n:-0}" -ge 2 ] || fail "prefetch list of '$n' chunks: CMD read /bin/busybox and ${#read_files[@]} files"

step "the files CMD read are laid out first: fewer chunks to read them"
timeout 120 "$CFS_PACK" -q "$src" "$store" > "$W/plain.out" || fail "plain cfs-pack exited $?"
plain=$(ref_of "$W/plain.out")
[ "$plain" != "$ref" ] || fail "the profiled image is the plain one"
# fetches_for IMAGE: chunks fetched to read the files CMD read, no prefetch.
fetches_for() {
	rm -rf "$W/cache"
	mount_bg "$m" "$store" "$1" --cache "$W/cache" --prefetch none --readahead 0 --learn no
	for f in "${read_files[@]}"; do
		cmp "$m$f" "$src$f" || fail "$f differs in $1"
	done
	mount_stats "$m" "$W/live.json"
	unmount_clean "$m" "$MOUNT_PID"
	stat_of "$W/live.json" chunk_fetches
}
c_plain=$(fetches_for "$plain")
c_prof=$(fetches_for "$ref")
echo "chunks to read them: $c_plain plain, $c_prof profile-packed"
[ "$c_prof" -lt "$c_plain" ] || fail "profile-packed needs $c_prof chunk fetches, plain $c_plain"

step "CMD exits 3: a warning, still profiled (cfs-mount found beside cfs-pack)"
env -u CFS_MOUNT timeout 300 "$CFS_PACK" --tag t3 \
	--profile-run 'cat /etc/passwd > /dev/null; exit 3' "$src" "$store" > "$W/out" 2> "$W/err" ||
	fail "cfs-pack --profile-run with a failing CMD exited $?: $(cat "$W/err")"
ref_of "$W/out" > /dev/null
grep -q "exited 3: packing with what it read" "$W/err" || fail "no warning: $(cat "$W/err")"
[ -e "$store/tags/t3" ] || fail "tag t3 not written"
[ "$(prefetch_chunks t3)" -ge 1 ] || fail "no prefetch list after a failing CMD"
nothing_left "failing CMD"

step "CMD hangs: killed at --profile-timeout 2, still profiled (a tar source)"
tar -C "$src" -cf "$W/rootfs.tar" .
timeout 120 "$CFS_PACK" --tag th --profile-timeout 2 \
	--profile-run 'echo cmdpid=$$; cat /etc/group > /dev/null; exec sleep 600' "$W/rootfs.tar" "$store" \
	> "$W/out" 2> "$W/err" || fail "cfs-pack with a hanging CMD exited $?: $(cat "$W/err")"
ref_of "$W/out" > /dev/null
grep -q "still running after 2 s: killed" "$W/err" || fail "no timeout warning: $(cat "$W/err")"
pid=$(sed -n 's/^cmdpid=\([0-9]*\)$/\1/p' "$W/err")
[ -n "$pid" ] || fail "CMD printed no pid"
! alive "$pid" || fail "CMD ($pid) still running after cfs-pack returned"
[ "$(prefetch_chunks th)" -ge 1 ] || fail "no prefetch list after a killed CMD"
nothing_left "hanging CMD"

step "nothing read (no /bin/sh in the image): one line, no tag"
mkdir -p "$W/nosh/etc"
echo data > "$W/nosh/etc/data"
fails_one_line "nothing read" timeout 120 "$CFS_PACK" -q --tag tn --profile-run 'cat /etc/data' \
	"$W/nosh" "$store"
cat "$W/err"
grep -q "nothing was read, no profile" "$W/err" || fail "unclear message: $(cat "$W/err")"
[ ! -e "$store/tags/tn" ] || fail "tag tn written for an empty profile"
nothing_left "empty profile"

step "a source read from a pipe is refused: it is packed twice"
fails_one_line "pipe" timeout 60 sh -c "cat '$W/rootfs.tar' | '$CFS_PACK' -q --profile-run true - '$store'"
grep -q "packs SOURCE twice" "$W/err" || fail "unclear message: $(cat "$W/err")"

step "--profile-run and --profile exclude each other"
fails_one_line "both" "$CFS_PACK" --profile "$W/x" --profile-run true "$src" "$store"
