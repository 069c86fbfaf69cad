#!/usr/bin/env bash
# Writes an OCI bundle for runc: `runc spec`, edited to run CMD (not on a terminal) on the read-only root ROOT_PATH.
#
# Usage: scripts/mkbundle.sh BUNDLE_DIR ROOT_PATH -- CMD...
# BUNDLE_DIR is created if needed and gets config.json only; ROOT_PATH is
# used as given (absolute, or relative to BUNDLE_DIR).  CMD's words go into
# process.args as JSON strings, so they may hold any printable text.
# Used by scripts/demo.sh, tests/container.sh and bench/coldstart.sh.
set -euo pipefail

die() { echo "mkbundle.sh: $*" >&2; exit 1; }

[ $# -ge 4 ] && [ "$3" = -- ] || die "usage: mkbundle.sh BUNDLE_DIR ROOT_PATH -- CMD..."
bundle=$1
root=$2
shift 3
command -v runc >/dev/null 2>&1 || die "runc not installed"

mkdir -p "$bundle"
rm -f "$bundle/config.json"
(cd "$bundle" && runc spec)

# ARGV: config.json, then ROOT_PATH and CMD..., taken in BEGIN and cut off
# so that awk reads only the file.
awk '
	function json(s,   out, i, c) {
		out = ""
		for (i = 1; i <= length(s); i++) {
			c = substr(s, i, 1)
			if (c == "\\" || c == "\"")
				out = out "\\" c
			else if (c == "\n")
				out = out "\\n"
			else if (c == "\t")
				out = out "\\t"
			else if (c == "\r")
				out = out "\\r"
			else
				out = out c
		}
		return "\"" out "\""
	}
	BEGIN {
		root = json(ARGV[2])
		args = json(ARGV[3])
		for (i = 4; i < ARGC; i++)
			args = args ", " json(ARGV[i])
		ARGC = 2
	}
	skip { if ($0 ~ /^[ \t]*\],?[ \t]*$/) { skip = 0; print }; next }
	/"args": \[/ {
		print
		match($0, /^[ \t]*/)
		print substr($0, 1, RLENGTH) "\t" args
		skip = 1
		set_args = 1
		next
	}
	/"terminal": true/ { sub(/true/, "false") }
	/"terminal": false/ { set_term = 1 }
	/"path": "rootfs"/ {
		i = index($0, "\"rootfs\"")
		$0 = substr($0, 1, i - 1) root substr($0, i + 8)
		set_root = 1
	}
	/"readonly": false/ { sub(/false/, "true") }
	/"readonly": true/ { set_ro = 1 }
	{ print }
	END { exit !(set_args && set_term && set_root && set_ro) }
' "$bundle/config.json" "$root" "$@" > "$bundle/config.json.new" ||
	die "runc spec's config.json has no args, terminal, root path or readonly to set"
mv "$bundle/config.json.new" "$bundle/config.json"
