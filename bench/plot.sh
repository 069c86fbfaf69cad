#!/usr/bin/env bash
# A horizontal bar chart, one bar per method, of the median rows of a
# benchmark's JSON lines (as bench/serving.sh writes them), drawn with gnuplot.
#
# Usage: bench/plot.sh JSONL PNG TITLE
#
# JSONL: one JSON object a line; the rows with "kind":"median" and a numeric
# FIELD are drawn, top to bottom in file order, labelled with their "method".
# Env: FIELD (gbps), XLABEL ("GB/s, higher is better"), WIDTH x HEIGHT of the
# image in pixels (900; HEIGHT: 140 + 50 per bar).  Uses jq where installed,
# else awk (flat objects only); pngcairo where gnuplot has it, else png.
set -euo pipefail

die() { echo "bench/${0##*/}: $*" >&2; exit 1; }
[ $# -eq 3 ] || die "usage: bench/plot.sh JSONL PNG TITLE"
jsonl=$1 png=$2 title=$3
field=${FIELD:-gbps}
xlabel=${XLABEL:-GB/s, higher is better}
[ -r "$jsonl" ] || die "cannot read $jsonl"
command -v gnuplot > /dev/null || die "gnuplot missing (apt-get install gnuplot-nox)"

data=$(mktemp)
trap 'rm -f "$data"' EXIT
# method <TAB> value, for the median rows that have the field
if command -v jq > /dev/null; then
	jq -r --arg f "$field" 'select(.kind == "median" and (.[$f] | type) == "number") | [.method, .[$f]] | @tsv' \
		"$jsonl" > "$data"
else
	awk -v f="$field" '
		function get(k,   m) {
			if (match($0, "\"" k "\"[ \t]*:[ \t]*(\"[^\"]*\"|[-0-9.eE+]+)")) {
				m = substr($0, RSTART, RLENGTH); sub(/^"[^"]*"[ \t]*:[ \t]*/, "", m); gsub(/"/, "", m); return m
			}
			return ""
		}
		get("kind") == "median" && get(f) ~ /^[-0-9.eE+]+$/ { printf "%s\t%s\n", get("method"), get(f) }' \
		"$jsonl" > "$data"
fi
n=$(wc -l < "$data")
[ "$n" -gt 0 ] || die "no median rows with a numeric $field in $jsonl"

term=png
gnuplot -e 'set terminal' 2>&1 | grep -qw pngcairo && term=pngcairo
width=${WIDTH:-900} height=${HEIGHT:-$((140 + 50 * n))}
# gnuplot strings in single quotes: double every ' of the title and labels
q() { printf "'%s'" "${1//\'/\'\'}"; }

gnuplot << EOF || die "gnuplot failed"
set terminal $term size $width,$height $([ "$term" = pngcairo ] && echo "font 'sans,10'" || echo "font 'sans' 10")
set output $(q "$png")
set title $(q "$title") noenhanced
set datafile separator "\t"
set style fill solid 0.7 border -1
unset key
set grid xtics
set xlabel $(q "$xlabel") noenhanced
set xrange [0:*]
set offsets 0, graph 0.12, 0.5, 0.5
set yrange [*:*] reverse
set ytics nomirror noenhanced
set tics scale 0
plot $(q "$data") using (\$2 / 2):0:(\$2 / 2):(0.35):ytic(1) with boxxyerror lc rgb '#4477aa', \
	'' using 2:0:(sprintf('  %.2f', \$2)) with labels left noenhanced
EOF
