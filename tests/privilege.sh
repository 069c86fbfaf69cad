#!/usr/bin/env bash
# Privileges with a real unprivileged user: modes, allow_other, suid, dev, the cache's modes, and a hostile store that must not reach outside itself.
#
# As root: packs a tree with a 0600 file and a 0700 directory of uid 1000, a
# world-readable file, setuid and setgid copies of id(1), a character device
# like /dev/null and a FIFO; mounts it with several -o sets and checks, as
# uid 65534 (setpriv, no capabilities), what the kernel lets through and what
# the mount's flags are.  Then checks that the chunk cache (which holds the
# 0600 file's bytes) is root-only, and that a store with planted symlinks,
# FIFOs and path-like tags fails cleanly and touches nothing outside it.
# Needs root and FUSE (exit 77 without). Env: CFS_PACK, CFS_MOUNT, CFS_LS.
set -euo pipefail

source "$(dirname "$0")/lib.sh"

need_root "needs root (chown, mknod, setuid files, another user)"
need_fuse
need_cmds setpriv
: "${CFS_PACK:?}" "${CFS_MOUNT:?}" "${CFS_LS:?}"

make_workdir privilege
# The other user must reach the mount points (mktemp made $W 0700).
chmod 0755 "$W"
NOBODY=65534

# as_user CMD...: CMD as uid/gid 65534, no supplementary groups, no
# capabilities.
as_user() {
	setpriv --reuid=$NOBODY --regid=$NOBODY --clear-groups -- "$@"
}

# denied WHAT CMD...: CMD run as the user must fail with "Permission denied".
denied() {
	local what=$1 rc=0
	shift
	as_user timeout 10 "$@" > "$W/out" 2> "$W/err" < /dev/null || rc=$?
	[ "$rc" -ne 0 ] || fail "$what: the user could: $* ($(head -c 200 "$W/out"))"
	[ "$rc" -ne 124 ] || fail "$what: hung: $*"
	grep -q "Permission denied" "$W/err" ||
		fail "$what: failed ($rc) but not with EACCES: $(head -n 2 "$W/err")"
}

step "a tree with private, public, setuid, setgid, device and FIFO entries"
src=$W/src
mkdir -p "$src/bin" "$src/private"
secret_marker="cfs-privilege-secret-$RANDOM$RANDOM$RANDOM"
{ echo "$secret_marker"; head -c 20000 /dev/urandom | base64; } > "$src/secret"
chown 1000:1000 "$src/secret"
chmod 0600 "$src/secret"
echo "inside the private directory" > "$src/private/inner"
chmod 0644 "$src/private/inner"
chown -R 1000:1000 "$src/private"
chmod 0700 "$src/private"
head -c 70000 /dev/urandom > "$src/public"
chmod 0644 "$src/public"
cp /usr/bin/id "$src/bin/id-suid"
cp /usr/bin/id "$src/bin/id-sgid"
chown 0:0 "$src/bin/id-suid" "$src/bin/id-sgid"
chmod 4755 "$src/bin/id-suid"
chmod 2755 "$src/bin/id-sgid"
mknod -m 0666 "$src/null" c 1 3
mkfifo -m 0644 "$src/fifo"
chmod 0755 "$src" "$src/bin"

store=$W/store
timeout 120 "$CFS_PACK" -q --tag priv "$src" "$store" > "$W/pack.out" || fail "cfs-pack exited $?"
ref=$(ref_of "$W/pack.out")
echo "packed $ref"

# mount_opts NAME CACHE [OPTS...]: foreground mount at $W/mnt-NAME; sets m.
mount_opts() {
	local name=$1 cache=$2
	shift 2
	m=$W/mnt-$name
	mount_bg "$m" "$store" priv --cache "$cache" "$@"
}

# mnt_opts MOUNTPOINT: the mount's per-mount options (mountinfo field 6).
mnt_opts() {
	awk -v mp="$1" '$5 == mp { print $6 }' /proc/self/mountinfo | tail -n 1
}

# check_modes: what the user may and may not do on the mount at $m, which
# lets other users in and has the kernel check the modes.
check_modes() {
	local what=$1
	denied "$what: read 0600 file" cat "$m/secret"
	denied "$what: list 0700 dir" ls "$m/private"
	denied "$what: traverse 0700 dir" cat "$m/private/inner"
	denied "$what: stat in 0700 dir" stat "$m/private/inner"
	as_user test -r "$m/secret" && fail "$what: test -r says the user may read the 0600 file"
	as_user test -x "$m/private" && fail "$what: test -x says the user may search the 0700 dir"
	as_user test -r "$m/public" || fail "$what: test -r says the user may not read the 0644 file"
	as_user test -e "$m/fifo" -a -p "$m/fifo" || fail "$what: the FIFO is not a FIFO"
	as_user timeout 10 cat "$m/public" > "$W/public.out" ||
		fail "$what: the user cannot read the 0644 file"
	cmp "$W/public.out" "$src/public" || fail "$what: the 0644 file read as the user differs"
	# Root is not held back by modes (the kernel's check, CAP_DAC_OVERRIDE).
	timeout 10 cmp "$m/secret" "$src/secret" || fail "$what: root cannot read the 0600 file"
	timeout 10 cmp "$m/private/inner" "$src/private/inner" ||
		fail "$what: root cannot read inside the 0700 dir"
	stat -c '%a %u:%g %F %t:%T' "$m/secret" "$m/private" "$m/bin/id-suid" "$m/bin/id-sgid" \
		"$m/null" "$m/fifo" > "$W/stat.out"
	diff <(stat -c '%a %u:%g %F %t:%T' "$src/secret" "$src/private" "$src/bin/id-suid" \
		"$src/bin/id-sgid" "$src/null" "$src/fifo") "$W/stat.out" ||
		fail "$what: modes, owners or types differ from the source"
}

# check_nosuid_nodev: setuid and setgid are ignored, devices cannot be
# opened, and the mount says nosuid,nodev.
check_nosuid_nodev() {
	local what=$1 opts out
	opts=$(mnt_opts "$m")
	echo "$what: mount options $opts"
	[[ ,$opts, == *,nosuid,* ]] || fail "$what: mount is not nosuid: $opts"
	[[ ,$opts, == *,nodev,* ]] || fail "$what: mount is not nodev: $opts"
	[[ ,$opts, == *,ro,* ]] || fail "$what: mount is not ro: $opts"
	out=$(as_user timeout 10 "$m/bin/id-suid") || fail "$what: id-suid did not run"
	[[ $out != *euid=* ]] || fail "$what: setuid honoured on a nosuid mount: $out"
	out=$(as_user timeout 10 "$m/bin/id-sgid") || fail "$what: id-sgid did not run"
	[[ $out != *egid=* ]] || fail "$what: setgid honoured on a nosuid mount: $out"
	# Root included: nodev is the mount's, not a permission.
	{ timeout 10 head -c 1 "$m/null" > /dev/null; } 2> "$W/err" &&
		fail "$what: the device node opened for reading on a nodev mount"
	grep -q "Permission denied" "$W/err" || fail "$what: device read: $(cat "$W/err")"
	{ printf x > "$m/null"; } 2> "$W/err" &&
		fail "$what: the device node opened for writing on a nodev mount"
	grep -q "Permission denied" "$W/err" || fail "$what: device write: $(cat "$W/err")"
	denied "$what: device as the user" head -c 1 "$m/null"
}

step "-o allow_other,default_permissions"
mount_opts ad "$W/cache" -o allow_other,default_permissions
check_modes "allow_other,default_permissions"
check_nosuid_nodev "allow_other,default_permissions"
unmount_wait "$m" "$MOUNT_PID"

step "-o allow_other (cfs-mount adds default_permissions)"
mount_opts a "$W/cache" -o allow_other
opts=$(awk -v mp="$m" '$5 == mp { print $NF }' /proc/self/mountinfo | tail -n 1)
[[ ,$opts, == *,default_permissions,* ]] ||
	fail "allow_other alone: default_permissions not among the super options: $opts"
[[ ,$opts, == *,allow_other,* ]] || fail "allow_other alone: allow_other not in effect: $opts"
check_modes "allow_other"
check_nosuid_nodev "allow_other"
unmount_wait "$m" "$MOUNT_PID"

step "no allow_other: the user cannot even stat the mount"
mount_opts none "$W/cache"
denied "no allow_other: stat" stat "$m"
denied "no allow_other: stat public" stat "$m/public"
denied "no allow_other: read public" cat "$m/public"
timeout 10 cmp "$m/public" "$src/public" || fail "no allow_other: root cannot read public"
unmount_wait "$m" "$MOUNT_PID"

step "-o allow_other,suid,dev: setuid, setgid and devices work"
mount_opts sd "$W/cache" -o allow_other,suid,dev
opts=$(mnt_opts "$m")
echo "suid,dev: mount options $opts"
[[ ,$opts, != *,nosuid,* ]] || fail "suid,dev: mount is still nosuid: $opts"
[[ ,$opts, != *,nodev,* ]] || fail "suid,dev: mount is still nodev: $opts"
if [ "$(awk '/^NoNewPrivs:/ { print $2 }' /proc/self/status)" = 1 ]; then
	echo "note: no_new_privs is set for this test: setuid cannot take effect, not checked"
else
	out=$(as_user timeout 10 "$m/bin/id-suid") || fail "suid: id-suid did not run"
	echo "id-suid as $NOBODY: $out"
	[[ $out == *euid=0\(* ]] || fail "suid: setuid root not honoured with -o suid: $out"
	out=$(as_user timeout 10 "$m/bin/id-sgid") || fail "suid: id-sgid did not run"
	echo "id-sgid as $NOBODY: $out"
	[[ $out == *egid=0\(* ]] || fail "suid: setgid root not honoured with -o suid: $out"
fi
printf x > "$m/null" || fail "dev: writing to the device node failed"
n=$(timeout 10 head -c 16 "$m/null" | wc -c) || fail "dev: reading the device node failed"
[ "$n" -eq 0 ] || fail "dev: the device node (1,3) gave $n bytes, not EOF"
n=$(as_user timeout 10 head -c 16 "$m/null" | wc -c) || fail "dev: the user cannot read the 0666 device"
[ "$n" -eq 0 ] || fail "dev: the device node gave the user $n bytes"
# Modes still hold with suid,dev.
denied "suid,dev: read 0600 file" cat "$m/secret"
unmount_wait "$m" "$MOUNT_PID"

step "the chunk cache is root-only"
# $W/cache was made by cfs-mount; it holds the 0600 file's bytes (root read
# it above).  A second cache directory made beforehand by someone else with
# mode 0755 must not expose the entries either.
grep -rlq -- "$secret_marker" "$W/cache" || fail "the secret is not in the cache (test is void)"
mkdir -m 0755 "$W/cache-open"
# The synchronous writes here, the io_uring ones (where there is io_uring)
# in the mounts above.
CFS_NO_IO_URING=1 mount_opts open "$W/cache-open"
timeout 10 cmp "$m/secret" "$src/secret" || fail "cache-open: root cannot read the 0600 file"
unmount_wait "$m" "$MOUNT_PID"
grep -rlq -- "$secret_marker" "$W/cache-open" || fail "the secret is not in cache-open"
for c in "$W/cache" "$W/cache-open"; do
	find "$c" -mindepth 1 -printf '%M %u %p\n' | sed "s|$W/||" | sort -k3 | head -n 6
	as_user grep -rlq -- "$secret_marker" "$c" 2> /dev/null &&
		fail "the user found the 0600 file's content in the cache $c"
	bad=$(find "$c" -mindepth 1 -perm /077 -printf '%M %p\n')
	[ -z "$bad" ] || fail "cache entries with group or other permissions: $(head -n 5 <<< "$bad")"
	while IFS= read -r f; do
		as_user test -r "$f" && fail "the user may read cache file $f"
	done < <(find "$c" -type f)
done
[ "$(stat -c %a "$W/cache")" = 700 ] ||
	fail "the cache directory cfs-mount made is mode $(stat -c %a "$W/cache"), not 700"

# --- a hostile store --------------------------------------------------------

# Whoever can write a store directory may plant anything in it; the reader
# (root) must fail cleanly or serve verified bytes, never block on a FIFO,
# open a device, echo what a symlink points at, or write outside its cache.
canary=$W/canary
mkdir -m 0700 "$canary"
canary_marker="cfs-privilege-canary-$RANDOM$RANDOM$RANDOM"
echo "$canary_marker" > "$canary/secret"
chmod 0600 "$canary/secret"
printf 'sha256:%064d\n' 0 > "$canary/ref-shaped"
mkfifo -m 0600 "$canary/fifo"
canary_list() {
	find "$canary" -printf '%p %y %s %M %u %T@\n' | sort
}
canary_list > "$W/canary.before"

hex=${ref#sha256:}
index_rel=objects/${hex:0:2}/$hex

# hostile NAME: a fresh copy of the good store as $hs.
hostile() {
	hs=$W/hostile-$1
	cp -a "$store" "$hs"
}

# ls_and_mount_fail CASE: cfs-ls and cfs-mount of tag priv in $hs must fail
# by themselves within 30 s with one line on stderr that gives away none of
# the canary, and leave nothing mounted.
ls_and_mount_fail() {
	local name=$1 cmd mp=$W/mnt-hostile
	mkdir -p "$mp"
	for cmd in ls mount; do
		if [ $cmd = ls ]; then
			fails_one_line "$name: cfs-$cmd" timeout 30 "$CFS_LS" "$hs" priv
		else
			fails_one_line "$name: cfs-$cmd" \
				timeout 30 "$CFS_MOUNT" --cache "$W/cache-hostile" "$hs" priv "$mp"
		fi
		grep -q -- "$canary_marker" "$W/out" "$W/err" &&
			fail "$name: cfs-$cmd printed the canary's content"
		printf '%-40s cfs-%-5s exit %d: %s\n' "$name" "$cmd" "$FAILED_RC" "$(cat "$W/err")"
	done
	mountpoint -q "$mp" && fail "$name: mounted although cfs-mount failed"
	return 0
}

step "a hostile store: tags and the index object"
hostile tag-dotdot
printf 'sha256:../../../..%s/evil\n' "$canary" > "$hs/tags/priv"
ls_and_mount_fail "tag holds sha256:../../..path"
hostile tag-path
printf '%s\n' "$canary/secret" > "$hs/tags/priv"
ls_and_mount_fail "tag holds a path"
hostile tag-symlink
ln -sf "$canary/secret" "$hs/tags/priv"
ls_and_mount_fail "tag is a symlink to a 0600 file"
hostile tag-shadow
ln -sf /etc/shadow "$hs/tags/priv"
ls_and_mount_fail "tag is a symlink to /etc/shadow"
hostile tag-fifo
rm "$hs/tags/priv"
mkfifo "$hs/tags/priv"
ls_and_mount_fail "tag is a FIFO"
hostile index-symlink
ln -sf "$canary/secret" "$hs/$index_rel"
ls_and_mount_fail "index object is a symlink to a 0600 file"
hostile index-shadow
ln -sf /etc/shadow "$hs/$index_rel"
ls_and_mount_fail "index object is a symlink to /etc/shadow"
hostile index-fifo
rm "$hs/$index_rel"
mkfifo "$hs/$index_rel"
ls_and_mount_fail "index object is a FIFO"
hostile index-dev
ln -sf /dev/zero "$hs/$index_rel"
ls_and_mount_fail "index object is a symlink to /dev/zero"

# A symlink to a FIFO outside the store with a writer waiting on it: the
# writer's open returns only if a reader opens the FIFO.
step "a hostile store: the FIFO behind a symlink is never opened"
hostile fifo-probe
ln -sf "$canary/fifo" "$hs/$index_rel"
ln -sf "$canary/fifo" "$hs/tags/fifo"
# shellcheck disable=SC2016 # sh's own arguments
(exec timeout 60 sh -c 'echo x > "$1" && : > "$2"' sh "$canary/fifo" "$W/fifo-opened") &
writer=$!
PIDS+=("$writer")
ls_and_mount_fail "index object is a symlink to a FIFO"
timeout 30 "$CFS_LS" "$hs" fifo > /dev/null 2>&1 && fail "cfs-ls of a FIFO tag succeeded"
sleep 0.2
[ -e "$W/fifo-opened" ] && fail "cfs opened the FIFO a store symlink points at"
kill "$writer" 2> /dev/null || true
wait "$writer" 2> /dev/null || true

step "a hostile store: chunk objects"
# Every object but the index: symlinks to the good store's copies serve
# the image; symlinks to anything else (a 0600 file, a FIFO) are bytes that
# fail their digest or no file at all, and reads fail with EIO.
hostile chunks-good
find "$hs/objects" -type f ! -name "$hex" -printf '%P\n' > "$W/chunks"
[ -s "$W/chunks" ] || fail "no chunk objects in the store"
while IFS= read -r c; do
	ln -sf "$store/objects/$c" "$hs/objects/$c"
done < "$W/chunks"
m=$W/mnt-chunks-good
mount_bg "$m" "$hs" priv --cache "$W/cache-chunks-good"
timeout 30 cmp "$m/public" "$src/public" || fail "chunks symlinked to the good ones: public differs"
timeout 30 cmp "$m/secret" "$src/secret" || fail "chunks symlinked to the good ones: secret differs"
unmount_wait "$m" "$MOUNT_PID"

hostile chunks-bad
i=0
while IFS= read -r c; do
	rm "$hs/objects/$c"
	case $((i++ % 3)) in
	0) ln -s "$canary/secret" "$hs/objects/$c" ;;
	1) mkfifo "$hs/objects/$c" ;;
	2) ln -s "$canary/fifo" "$hs/objects/$c" ;;
	esac
done < "$W/chunks"
m=$W/mnt-chunks-bad
mount_bg "$m" "$hs" priv --cache "$W/cache-chunks-bad"
for f in public secret; do
	expect_eio chunks-bad "$m/$f" "$src/$f"
	grep -q -- "$canary_marker" "$W/out" && fail "chunks-bad: $f read gave the canary's content"
done
echo "chunks-bad: reads fail with EIO: $(cat "$W/err")"
alive "$MOUNT_PID" || fail "chunks-bad: the daemon died"
unmount_wait "$m" "$MOUNT_PID"
grep -rlq -- "$canary_marker" "$W/cache-chunks-bad" && fail "the canary's content is in the cache"

step "tag names that are paths are refused"
for t in ../x a/../../x /etc/passwd .. ./x; do
	fails_alone "cfs-ls of tag '$t'" timeout 30 "$CFS_LS" "$store" "$t"
	fails_one_line "cfs-mount of tag '$t'" \
		timeout 30 "$CFS_MOUNT" --cache "$W/cache-hostile" "$store" "$t" "$W/mnt-hostile"
	mountpoint -q "$W/mnt-hostile" && fail "tag '$t' mounted"
	fails_alone "cfs-pack --tag '$t'" timeout 30 "$CFS_PACK" -q --tag "$t" "$src" "$store"
	echo "tag '$t': $(cat "$W/err")"
done
[ "$(find "$store/tags" -mindepth 1 -printf '%P\n')" = priv ] ||
	fail "the store's tags changed: $(find "$store/tags" -mindepth 1 -printf '%P ')"

step "cfs-pack never writes through a symlink that leads out of the store"
# Root packing into a store someone else can write: a planted tags/ or
# objects/ symlink must not let them create or replace files elsewhere.
ws=$W/store-writes
"$CFS_PACK" -q "$src" "$ws" > /dev/null
ln -s "$canary" "$ws/tags/out"
rc=0
"$CFS_PACK" -q --tag out/evil "$src" "$ws" > /dev/null 2> "$W/err" || rc=$?
((rc > 0 && rc < 124)) || fail "cfs-pack --tag through an outward symlink exited $rc"
grep -q "leads out of" "$W/err" || fail "cfs-pack: unclear error: $(cat "$W/err")"
echo "tag through tags/out -> canary: $(cat "$W/err")"
ws2=$W/store-writes2
mkdir -p "$ws2" && printf 'cfs-store 1\n' > "$ws2/cfs-store" && ln -s "$canary" "$ws2/objects"
rc=0
"$CFS_PACK" -q "$src" "$ws2" > /dev/null 2> "$W/err" || rc=$?
((rc > 0 && rc < 124)) || fail "cfs-pack into objects -> canary exited $rc"
echo "objects -> canary: $(cat "$W/err")"
# A symlink that stays within the store is fine.
mkdir -p "$ws/tags/real" && ln -s real "$ws/tags/alias"
"$CFS_PACK" -q --tag alias/ok "$src" "$ws" > /dev/null || fail "a symlink inside the store refused"
[ -f "$ws/tags/real/ok" ] || fail "tags/alias/ok did not land in tags/real"

canary_list > "$W/canary.after"
diff "$W/canary.before" "$W/canary.after" || fail "something touched the canary directory"
[ ! -e "$canary/evil" ] || fail "a file appeared at $canary/evil"

echo PASS
