#!/usr/bin/env bash
# ELF hints (docs/FORMAT.md, "Hints"): cfs-pack stores, for each program and
# library, the files its loading opens (interpreter and DT_NEEDED closure,
# looked up as the loader would, through symlinks); a mount's first read of
# the program queues all of them, so that the loader's opens, one after
# another, find them fetched.  An image packed with --no-hints (the index an
# older cfs-pack writes) mounts the same with no such guesses.
# Env: CFS_PACK, CFS_MOUNT, CFS_LS, CFS_FAULTPROXY (set by tests/meson.build).
# Exit 77 without FUSE, nginx, or an x86_64/aarch64 /bin/ls.
set -euo pipefail

source "$(dirname "$0")/lib.sh"

need_fuse
need_nginx
: "${CFS_PACK:?}" "${CFS_MOUNT:?}" "${CFS_LS:?}"
case $(uname -m) in x86_64 | aarch64) ;; *) skip "no ELF hints for $(uname -m)" ;; esac
command -v ldd > /dev/null || skip "no ldd"

make_workdir elfhints
m=$W/mnt

step "tree: /bin/ls and what ldd says it loads, laid out as a merged-/usr root"
src=$W/src
mkdir -p "$src/usr/bin"
ln -s usr/lib "$src/lib"
cp -L /bin/ls "$src/usr/bin/ls"
libs=()
while read -r name arrow path _; do
	if [ "$arrow" = "=>" ] && [ "${path#/}" != "$path" ]; then
		# /lib/x86_64-linux-gnu/libc.so.6 -> usr/lib/x86_64-linux-gnu/libc.so.6
		dir=$(dirname "$path")
		dir=usr/${dir#/usr/}
		dir=${dir//\/\//\/}
		mkdir -p "$src/$dir"
		cp -L "$path" "$src/$dir/$name"
		libs+=("$dir/$name")
	elif [ "${name#/}" != "$name" ]; then
		interp=$name # the program interpreter: a real file under usr/lib, linked from its path
		base=$(basename "$interp")
		mkdir -p "$src/usr/lib/interp" "$src$(dirname "$interp")"
		cp -L "$interp" "$src/usr/lib/interp/$base"
		[ -e "$src$interp" ] || ln -s "/usr/lib/interp/$base" "$src$interp"
		libs+=("usr/lib/interp/$base")
	fi
done < <(ldd /bin/ls)
[ "${#libs[@]}" -ge 2 ] || skip "ldd /bin/ls names under two libraries"
# A versioned library behind its soname's symlink, as packages install them.
first=${libs[0]}
mv "$src/$first" "$src/$first.0"
ln -s "$(basename "$first").0" "$src/$first"
libs[0]=$first.0
echo "libraries: ${libs[*]}"

timeout 120 "$CFS_PACK" --tag p "$src" "$W/store" > "$W/pack.out" 2> "$W/pack.err" ||
	fail "cfs-pack exited $?: $(cat "$W/pack.err")"
cat "$W/pack.err"
grep -q 'hints: ' "$W/pack.err" || fail "cfs-pack reported no hints"
"$CFS_LS" --info "$W/store" p > "$W/info" || fail "cfs-ls --info exited $?"
grep -q '^hint_triggers [1-9]' "$W/info" || fail "the index has no hints: $(cat "$W/info")"
timeout 120 "$CFS_PACK" --no-hints --tag old "$src" "$W/store" > "$W/pack-old.out" 2> "$W/pack-old.err" ||
	fail "cfs-pack --no-hints exited $?"
"$CFS_LS" --info "$W/store" old > "$W/info-old" || fail "cfs-ls --info exited $?"
grep -q '^hint_triggers 0$' "$W/info-old" || fail "--no-hints stored hints: $(cat "$W/info-old")"

need_nginx
start_nginx "$W/store"
proxy_start "$NGINX_PORT"
url=http://127.0.0.1:$PROXY_PORT/

# counter KEY: one of the mount's counters, all of them in $W/live.json
counter() {
	mount_stats "$m" "$W/live.json"
	stat_of "$W/live.json" "$1"
}
# first_page TAG: mounts TAG over the proxy with guesses from first reads
# and nothing else, and reads ls's first 4 KiB
first_page() {
	: > "$PROXY_LOG"
	mount_bg "$m" "$url" "$1" --cache "$W/cache-$1" --log "$W/log-$1" --learn no \
		--prefetch list
	dd if="$m/usr/bin/ls" bs=4096 count=1 iflag=direct status=none > "$W/piece" ||
		fail "reading usr/bin/ls failed"
	head -c 4096 "$src/usr/bin/ls" | cmp -s - "$W/piece" || fail "usr/bin/ls differs"
	wait_until 20 pool_settled "$m" "$W/live.json" || fail "the pool did not settle: $(cat "$W/live.json")"
}

step "the first read of the program fetches every library it loads"
first_page p
hints=$(stat_of "$W/live.json" elf_hint_chunks)
echo "elf_hint_chunks $hints after one 4 KiB read of usr/bin/ls"
[ "$hints" -ge "${#libs[@]}" ] || fail "elf_hint_chunks $hints for ${#libs[@]} libraries"
# Files of 64 KiB and more have chunks of their own: cut from their start
# at 1 MiB, each named by its SHA-256.
for lib in "${libs[@]}"; do
	[ "$(stat -c %s "$src/$lib")" -ge 65536 ] || continue
	rm -rf "$W/split" && mkdir "$W/split"
	split -b 1M "$src/$lib" "$W/split/c"
	for c in "$W"/split/c*; do
		d=$(sha256sum < "$c" | cut -d' ' -f1)
		grep -q " GET /objects/.*/$d " "$PROXY_LOG" || fail "$lib's chunk $d was not fetched"
	done
done
before=$(counter demand_fetches)
for lib in "${libs[@]}"; do
	cmp "$src/$lib" "$m/$lib" || fail "$lib differs"
done
after=$(counter demand_fetches)
[ "$after" -eq "$before" ] || fail "reading the libraries fetched $((after - before)) chunks: the program's first read should have queued them"
[ "$(stat_of "$W/live.json" read_errors)" -eq 0 ] || fail "read errors"
unmount_clean "$m" "$MOUNT_PID"

step "an image without hints (cfs-pack --no-hints, as older ones wrote) mounts the same, guessing nothing"
first_page old
[ "$(stat_of "$W/live.json" elf_hint_chunks)" -eq 0 ] || fail "hints from an image without"
before=$(stat_of "$W/live.json" demand_fetches)
for lib in "${libs[@]}"; do
	cmp "$src/$lib" "$m/$lib" || fail "$lib differs"
done
after=$(counter demand_fetches)
[ "$after" -gt "$before" ] || fail "without hints, the libraries were fetched before they were read"
compare --approx-blocks "$src" "$m"
unmount_clean "$m" "$MOUNT_PID"

echo "PASS"
