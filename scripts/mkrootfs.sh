#!/usr/bin/env bash
# Build a small busybox-static root filesystem in DIR (used by demo.sh and tests/container.sh).
#
# Usage: scripts/mkrootfs.sh DIR
#
# DIR must not exist or be empty. The tree holds bin/busybox, a symlink for
# every applet (the links `busybox --install -s` makes inside a chroot, made
# here from `busybox --list-full` so no chroot or root is needed), etc/passwd,
# etc/group, etc/os-release, empty proc sys dev tmp root, and about 400 KB of
# deterministic text and data under usr/share so the image is a little
# realistic. The same busybox gives the same tree, byte for byte.
set -euo pipefail

die() { printf 'mkrootfs: %s\n' "$*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: mkrootfs.sh DIR"
dir=$1

find_busybox() {
	local b
	for b in /bin/busybox /usr/bin/busybox "$(command -v busybox 2>/dev/null || true)"; do
		if [ -z "$b" ] || [ ! -x "$b" ]; then continue; fi
		# A dynamically linked busybox would need its libraries in the rootfs.
		if command -v file >/dev/null 2>&1 && ! file -L "$b" | grep -q 'statically linked'; then
			continue
		fi
		printf '%s\n' "$b"
		return 0
	done
	return 1
}

bb=$(find_busybox) || die "no static busybox found (apt-get install busybox-static)"

if [ -e "$dir" ] && [ -n "$(ls -A "$dir")" ]; then
	die "$dir exists and is not empty"
fi

mkdir -p "$dir"
cd "$dir"
mkdir -p bin sbin usr/bin usr/sbin etc proc sys dev tmp root home var/log usr/share/cfs-demo
chmod 1777 tmp
chmod 0700 root

install -m 0755 "$bb" bin/busybox

# One symlink per applet, at the path busybox itself would install it.
"$bb" --list-full | while IFS= read -r applet; do
	[ -n "$applet" ] || continue
	case "$applet" in
	bin/busybox) continue ;;
	esac
	mkdir -p "$(dirname "$applet")"
	[ -e "$applet" ] || [ -L "$applet" ] || ln -s /bin/busybox "$applet"
done
[ -L bin/sh ] || ln -s /bin/busybox bin/sh

cat > etc/passwd <<'EOF'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat > etc/group <<'EOF'
root:x:0:
daemon:x:1:
nogroup:x:65534:
EOF
cat > etc/os-release <<'EOF'
NAME="cfs demo"
ID=cfs-demo
PRETTY_NAME="cfs demo rootfs (busybox)"
HOME_URL="https://example.invalid/cfs"
EOF
printf 'cfs-demo\n' > etc/hostname
printf '127.0.0.1 localhost\n::1 localhost\n' > etc/hosts
chmod 0644 etc/passwd etc/group etc/os-release etc/hostname etc/hosts

# About 400 KB of deterministic extra content: text files of several sizes
# and a few pseudo-random binary blobs (an LCG written by awk, no /dev/urandom).
share=usr/share/cfs-demo
for i in $(seq 1 24); do
	seq -f "line %g of file $i: the quick brown fox jumps over the lazy dog" 1 $((i * 10)) > "$share/text-$i.txt"
done
for i in 1 2 3 4; do
	awk -v seed="$i" 'BEGIN {
		s = seed * 7919
		for (n = 0; n < 16384; n++) {
			s = (s * 69069 + 1) % 4294967296   # stays below 2^53: exact in awk
			printf "%08x", s
		}
	}' > "$share/blob-$i.hex"
done
mkdir -p usr/share/doc/busybox
"$bb" 2>&1 | head -40 > usr/share/doc/busybox/README || true
printf '%s\n' "This rootfs was made by scripts/mkrootfs.sh for the cfs demo and tests." > usr/share/cfs-demo/README
