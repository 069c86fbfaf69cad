#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# check-layers.sh [BUILD_DIR]: checks that cfs keeps its layers (STYLE.md rule 1).
#
# The rule: the layers are
#
#     format -> store/fetch -> cache -> image -> fs / loader / tools
#
# each resting only on those to its left.  The first four are the core
# library, lib/, which includes no FUSE and no CUDA header and nothing of
# the commands above it.  fs/ (cfs-mount, the only FUSE glue), loader/
# (cfs-load, the only CUDA glue) and tools/ (the other commands) each sit
# on lib/ alone, never on one another; bench/ and tests/ sit on top of
# everything.  A capability that two of them need goes down into lib/.
#
# lib/ shows the first four as folders, under the base (lib/util.c):
#
#     lib/ (util) -> lib/format/ -> lib/store/ -> lib/cache/ -> lib/image/
#
# What is checked:
#   (a) no file in lib/ includes a header of fs/, tools/, loader/, bench/
#       or tests/, nor fuse*.h or cuda*.h;
#   (d) a file of lib/ includes headers of its own layer and of those to
#       its left only (lib/cache/ may include lib/store/'s, never
#       lib/image/'s);
#   (b) fs/, tools/ and loader/ include headers of their own folder and of
#       lib/ only (and system ones);
#   (c) no call circle between the .c files of one folder: from the
#       objects of a built tree (BUILD_DIR, default build/; meson puts them
#       at BUILD_DIR/<folder>/<target>.p/<file>.c.o), 'A calls a function
#       that B defines' within each target, merged per folder; every
#       circle is listed with its files and the functions on each edge.
#       Data is not followed: a dispatcher naming its backends' const
#       tables (STYLE.md rule 9) is not a call up.
#       Inside lib/ this is what holds the order above: a module calling
#       up into one that calls it closes a circle.
# Exits 0 when all hold, 1 with the list of violations, 2 when it cannot
# check (no built tree).  Needs bash, awk and nm (binutils) only.
set -euo pipefail

build=${1:-build}
case $build in /*) ;; *) build=$PWD/$build ;; esac
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."

dirs="lib fs tools loader bench tests"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# --- (a), (b): includes ----------------------------------------------------
# Every project header as "folder path-in-folder", lib/ first so that it
# wins where a name is in two folders.
for d in $dirs; do
	[ -d "$d" ] && find "$d" -name '*.h' -printf "$d %P\n"
done >"$tmp/headers"
find lib fs tools loader -name '*.[ch]' | sort >"$tmp/sources"

echo "check-layers: (a) lib/ includes no header of fs/ tools/ loader/ bench/ tests/, no fuse*.h, no cuda*.h"
echo "check-layers: (b) fs/ tools/ loader/ include their own and lib/'s headers only"
echo "check-layers: (d) lib/: util <- format/ <- store/ <- cache/ <- image/, each includes only leftwards"
# shellcheck disable=SC2046
awk '
BEGIN {
	rank[""] = 0; rank["format"] = 1; rank["store"] = 2; rank["cache"] = 3; rank["image"] = 4
}
FNR == NR {
	hdr[$1 SUBSEP $2] = 1
	n = split($2, p, "/")
	if (!(p[n] in owner)) {
		owner[p[n]] = $1
		layer[p[n]] = n > 1 ? p[1] : ""
	}
	next
}
FNR == 1 {
	n = split(FILENAME, p, "/")
	dir = p[1]
	mylayer = (dir == "lib" && n > 2) ? p[2] : ""
	if (dir == "lib" && !(mylayer in rank)) {
		print "  (d) " FILENAME ": lib/" mylayer "/ is not a layer of docs/ARCHITECTURE.md"
		bad++
	}
	nfiles++
}
/^[ \t]*#[ \t]*include[ \t]*[<"]/ {
	line = $0
	sub(/^[ \t]*#[ \t]*include[ \t]*/, "", line)
	q = substr(line, 1, 1)
	line = substr(line, 2)
	name = substr(line, 1, index(line, q == "<" ? ">" : "\"") - 1)
	n = split(name, p, "/")
	base = p[n]
	if (dir == "lib" && base ~ /^(fuse|cuda).*\.h$/) {
		print "  (a) " FILENAME ":" FNR ": includes " (q == "<" ? "<" name ">" : "\"" name "\"") \
		      ": lib/ is built without FUSE and CUDA"
		bad++
		next
	}
	if (dir == "lib" && q == "\"" && n == 1 && (base in layer) && owner[base] == "lib" &&
	    rank[layer[base]] > rank[mylayer]) {
		print "  (d) " FILENAME ":" FNR ": includes " name " of lib/" layer[base] "/: lib/" \
		      mylayer (mylayer == "" ? "" : "/") " is below it"
		bad++
		next
	}
	if ((dir SUBSEP name) in hdr)
		next                    # its own folder
	# Where the name leads: a path below a project folder, else by its
	# last component (the -I folders); anything else is a system header.
	from = ""
	if (n > 1 && ((p[1] SUBSEP substr(name, length(p[1]) + 2)) in hdr))
		from = p[1]
	else if (q == "\"" || n == 1)
		from = (base in owner) ? owner[base] : ""
	if (from == "" || from == "lib" || from == dir)
		next
	if (dir == "lib") {
		print "  (a) " FILENAME ":" FNR ": includes " name " of " from "/: lib/ includes nothing above it"
		bad++
	} else {
		print "  (b) " FILENAME ":" FNR ": includes " name " of " from "/: " dir "/ rests on lib/ only"
		bad++
	}
}
END {
	printf "check-layers:     %d files read, %d include violations\n", nfiles, bad
	exit bad > 0
}' "$tmp/headers" $(cat "$tmp/sources") >"$tmp/includes" || inc_bad=1
LC_ALL=C sort -s -b -k1,1 "$tmp/includes"

# --- (c): call circles -----------------------------------------------------
echo "check-layers: (c) no call circle between the .c files of a folder (objects in ${build#"$PWD"/})"
: >"$tmp/objs"
for d in $dirs; do
	[ -d "$build/$d" ] && find "$build/$d" -mindepth 2 -maxdepth 2 -path '*.p/*.o' >>"$tmp/objs"
done
if [ ! -s "$tmp/objs" ]; then
	echo "check-layers: no object files under $build/{${dirs// /,}}/*.p/: build the tree first (ninja -C ${1:-build})" >&2
	exit 2
fi
# nm -P: "OBJECT: SYMBOL TYPE [VALUE SIZE]".  A call is matched to its
# definition within the same target (the objects of one .p folder), so
# that two programs of one folder never link to each other's symbols.
# shellcheck disable=SC2046
nm -A -P $(cat "$tmp/objs") 2>/dev/null | awk -v build="$build" '
{
	obj = $1
	sub(/:$/, "", obj)
	rel = substr(obj, length(build) + 2)
	if (split(rel, p, "/") != 3)
		next
	src = p[3]
	sub(/\.o$/, "", src)
	if (src ~ /^\.\._/ || src ~ /^meson-generated/)
		next                    # a source of another folder, or generated
	# meson names lib/cache/cache.c lib/libcfs.a.p/cache_cache.c.o
	if (p[1] == "lib" && match(src, /^(format|store|cache|image)_/))
		src = substr(src, 1, RLENGTH - 1) "/" substr(src, RLENGTH + 1)
	node = p[1] "/" src
	tgt = p[1] "/" p[2]
	if ($3 == "U")
		ref[++nref] = tgt SUBSEP $2 SUBSEP node
	else if ($3 ~ /^[TWi]$/ && !((tgt SUBSEP $2) in def))
		def[tgt SUBSEP $2] = node
}
END {
	for (i = 1; i <= nref; i++) {
		split(ref[i], r, SUBSEP)
		k = r[1] SUBSEP r[2]
		if (!(k in def) || def[k] == r[3])
			continue
		a = r[3]; b = def[k]
		if (!((a SUBSEP b) in edge)) {
			edge[a SUBSEP b] = r[2]
			nsym[a SUBSEP b] = 1
			adj[a] = adj[a] " " b
			nodes[a] = 1; nodes[b] = 1
		} else if (index(" " edge[a SUBSEP b] " ", " " r[2] " ") == 0) {
			if (++nsym[a SUBSEP b] <= 3)
				edge[a SUBSEP b] = edge[a SUBSEP b] " " r[2]
		}
		nedges++
	}
	nn = 0
	for (v in nodes)
		name[++nn] = v
	# Sorted, so that circles are listed from their least file and once.
	for (i = 2; i <= nn; i++)
		for (j = i; j > 1 && name[j - 1] > name[j]; j--) {
			t = name[j]; name[j] = name[j - 1]; name[j - 1] = t
		}
	for (i = 1; i <= nn; i++) {
		start = name[i]
		split(start, sp, "/")
		walk(start, start, start, 1)
	}
	printf "check-layers:     %d files, %d calls between files, %d circles\n", nn, nedges, ncycles
	exit ncycles > 0
}
# Simple circles through start whose other files sort after it.
function walk(start, v, path, depth,    n, i, w, lst, k, e, s) {
	if (ncycles >= 200)
		return
	onpath[v] = 1
	n = split(adj[v], lst, " ")
	for (i = 1; i <= n; i++) {
		w = lst[i]
		if (w == start) {
			ncycles++
			split(path, k, " ")
			s = path
			gsub(/ /, " -> ", s)
			printf "  (c) circle in %s/: %s -> %s\n", sp[1], s, start
			for (e = 1; e <= depth; e++) {
				s = (e < depth) ? k[e + 1] : start
				printf "        %s -> %s: %s%s\n", k[e], s, edge[k[e] SUBSEP s],
				       (nsym[k[e] SUBSEP s] > 3 ? " ..." : "")
			}
			continue
		}
		if (w > start && !(w in onpath))
			walk(start, w, path " " w, depth + 1)
	}
	delete onpath[v]
}' >"$tmp/calls" || call_bad=1
cat "$tmp/calls"

if [ -n "${inc_bad:-}" ] || [ -n "${call_bad:-}" ]; then
	echo "check-layers: FAILED: the layers above do not hold" >&2
	exit 1
fi
echo "check-layers: ok"
