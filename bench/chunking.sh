#!/usr/bin/env bash
# Chunking parameters versus store size and update dedup (docs/FORMAT.md, "Chunking").
#
# usage: bench/chunking.sh [SOURCE_DIR...]
#   default sources: /usr/lib/python3.* and /usr/lib/x86_64-linux-gnu
# Env: CFS_PACK (default: build/tools/cfs-pack), BENCH_DIR (scratch space,
#      default /dev/shm when it exists, else /tmp), CHUNK_SIZES ("256K 1M 4M"),
#      GROUP_BITS ("3 5 7"), UPDATE_EVERY (100: modify every 100th file).
#
# For each chunk size and group_bits: pack the tree into an empty store and
# count objects and stored bytes; then pack an "update" of the tree (every
# UPDATE_EVERY-th regular file modified: files over 1 MiB get 4 KiB rewritten
# in the middle, smaller ones get a line appended) into the same store and
# count what it added.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
pack=${CFS_PACK:-$here/../build/tools/cfs-pack}
[ -x "$pack" ] || { echo "cfs-pack not found at $pack (set CFS_PACK)" >&2; exit 1; }
chunk_sizes=${CHUNK_SIZES:-256K 1M 4M}
group_bits=${GROUP_BITS:-3 5 7}
every=${UPDATE_EVERY:-100}
if [ $# -eq 0 ]; then
	set -- /usr/lib/python3.* /usr/lib/x86_64-linux-gnu
fi
scratch=${BENCH_DIR:-$( [ -d /dev/shm ] && echo /dev/shm || echo /tmp )}

t=$(mktemp -d "$scratch/cfs-chunking.XXXXXX")
trap 'rm -rf "$t"' EXIT

# The tree, and its update.
mkdir "$t/base"
for s in "$@"; do
	cp -a "$s" "$t/base/"
done
cp -a "$t/base" "$t/update"
nfiles=0 nmod=0
while IFS= read -r -d '' f; do
	nfiles=$((nfiles + 1))
	[ $((nfiles % every)) -eq 0 ] || continue
	nmod=$((nmod + 1))
	size=$(stat -c %s "$f")
	if [ "$size" -gt $((1024 * 1024)) ]; then
		head -c 4096 /dev/urandom |
			dd of="$f" bs=4096 seek=$((size / 2 / 4096)) conv=notrunc status=none
	else
		printf 'cfs-bench update %d\n' "$nmod" >> "$f"
	fi
done < <(find "$t/update" -type f -print0 | LC_ALL=C sort -z)
raw=$(find "$t/base" -type f -printf '%s\n' | awk '{s += $1} END {print s}')

# count STORE: "<objects> <bytes>"
count() {
	find "$1/objects" -type f -printf '%s\n' | awk '{n++; s += $1} END {print n + 0, s + 0}'
}
mb() { awk -v b="$1" 'BEGIN {printf "%.1f", b / 1e6}'; }

printf 'tree: %s\n' "$*"
printf '%d regular files, %s MB of data; update modifies %d files (1 in %d)\n\n' \
	"$nfiles" "$(mb "$raw")" "$nmod" "$every"
printf '%-6s %4s | %8s %10s %6s | %9s %9s %7s\n' \
	chunk bits objects stored_MB ratio upd_objs upd_MB upd_%
printf -- '-------------+----------------------------+----------------------------\n'
for cs in $chunk_sizes; do
	for bits in $group_bits; do
		st=$t/store
		rm -rf "$st"
		"$pack" -q --chunk-size "$cs" --group-bits "$bits" "$t/base" "$st" > /dev/null
		read -r n1 b1 < <(count "$st")
		"$pack" -q --chunk-size "$cs" --group-bits "$bits" "$t/update" "$st" > /dev/null
		read -r n2 b2 < <(count "$st")
		printf '%-6s %4s | %8d %10s %6s | %9d %9s %7s\n' "$cs" "$bits" \
			"$n1" "$(mb "$b1")" "$(awk -v a="$b1" -v r="$raw" 'BEGIN {printf "%.2f", a / r}')" \
			$((n2 - n1)) "$(mb $((b2 - b1)))" \
			"$(awk -v a=$((b2 - b1)) -v b="$b1" 'BEGIN {printf "%.2f", 100 * a / b}')"
	done
done
rm -rf "$t/store"
printf '\nratio: stored/raw bytes.  upd_*: objects and bytes the update added (index included).\n'
