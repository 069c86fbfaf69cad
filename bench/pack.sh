#!/usr/bin/env bash
# Pack throughput: cfs-pack beside the layer builders users run today
# (tar | zstd -T0, tar | gzip, as container engines build layers), on the same
# tree, in the same run, from a warm page cache.  Prints MB/s and ratios.
#
# Usage: bench/pack.sh [SOURCE_DIR] [RUNS]
#   SOURCE_DIR  defaults to /usr/lib/x86_64-linux-gnu (a real mix of
#               shared libraries and small files); RUNS defaults to 3 (median).
# Needs a build in build/ (scripts/demo.sh or scripts/test.sh make one).
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
src=${1:-/usr/lib/x86_64-linux-gnu}
runs=${2:-3}
[ -x "$pack" ] || die "$pack not built (run: meson setup build && ninja -C build)"
[ -d "$src" ] || die "$src: not a directory"

work=$(mktemp -d /tmp/cfs-bench-pack.XXXXXX)
trap 'rm -rf "$work"' EXIT

bytes=$(du -sb --apparent-size "$src" | cut -f1)
files=$(find "$src" -type f | wc -l)
# Warm the page cache so every tool reads the same way.
tar -C "$src" -cf - . > /dev/null

time_cmd() { # prints ms
	local t0 t1
	t0=$(now)
	"$@" > /dev/null 2>&1
	t1=$(now)
	echo $(( (t1 - t0) / 1000000 ))
}

declare -A ms out
run_cfs() { rm -rf "$work/store"; "$pack" -q "$src" "$work/store"; }
run_cfs_repack() { "$pack" -q "$src" "$work/store"; }
run_zstd() { tar -C "$src" -cf - . | zstd -q -3 -T0 -o "$work/layer.tar.zst" -f; }
run_gzip() { tar -C "$src" -cf - . | gzip -6 > "$work/layer.tar.gz"; }

for tool in cfs cfs_repack zstd gzip; do
	for _ in $(seq "$runs"); do
		[ "$tool" = cfs_repack ] && [ ! -d "$work/store" ] && run_cfs
		time_cmd "run_$tool"
	done | median > "$work/$tool.ms"
	ms[$tool]=$(cat "$work/$tool.ms")
done
out[cfs]=$(du -sb "$work/store" | cut -f1)
out[cfs_repack]=0
out[zstd]=$(stat -c %s "$work/layer.tar.zst")
out[gzip]=$(stat -c %s "$work/layer.tar.gz")

printf 'source: %s (%d files, %.1f MB), %d CPUs, median of %d runs\n' \
	"$src" "$files" "$(calc "$bytes / 1000000")" "$(nproc)" "$runs"
printf '%-28s %10s %10s %12s %12s\n' tool seconds MB/s "output MB" "vs cfs"
for tool in cfs cfs_repack zstd gzip; do
	case $tool in
	cfs) name="cfs-pack (new store)";;
	cfs_repack) name="cfs-pack (unchanged re-pack)";;
	zstd) name="tar | zstd -3 -T0";;
	gzip) name="tar | gzip -6";;
	esac
	t=${ms[$tool]}; [ "$t" -gt 0 ] || t=1
	printf '%-28s %10.2f %10.0f %12.1f %11.2fx\n' "$name" \
		"$(calc "$t / 1000")" \
		"$(calc "$bytes / 1000 / $t")" \
		"$(calc "${out[$tool]} / 1000000")" \
		"$(calc "$t / ${ms[cfs]}")"
done
echo "(vs cfs: the tool's time divided by cfs-pack's; above 1 means cfs-pack is faster)"
