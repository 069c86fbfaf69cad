#!/usr/bin/env bash
# Install every Debian 12 package that building, testing and the demo of cfs need (idempotent).
#
# Runs apt-get directly as root, through sudo otherwise. When every package is
# already installed it does nothing (set CFS_FORCE_DEPS=1 to run apt anyway).
set -euo pipefail

packages=(
	# build
	build-essential meson ninja-build pkg-config
	libfuse3-dev libzstd-dev libxxhash-dev liburing-dev
	libcurl4-openssl-dev libssl-dev libarchive-dev
	# fuzzers: clang, and the libFuzzer/sanitizer runtimes it only recommends
	clang libclang-rt-dev
	# run time, tests and demo
	fuse3 zstd runc busybox-static attr tar gzip util-linux coreutils
	ca-certificates
)
# Later issues (HTTP store server, web UI) will add their packages here, e.g.:
# packages+=(nginx nodejs npm)

if [ "$(id -u)" -eq 0 ]; then
	as_root=()
elif command -v sudo >/dev/null 2>&1; then
	as_root=(sudo)
else
	echo "install-deps: not root and no sudo; install these packages by hand:" >&2
	echo "  ${packages[*]}" >&2
	exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
	echo "install-deps: apt-get not found; this script targets Debian 12 (bookworm)" >&2
	exit 1
fi

missing=()
for p in "${packages[@]}"; do
	if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
		missing+=("$p")
	fi
done

if [ ${#missing[@]} -eq 0 ] && [ "${CFS_FORCE_DEPS:-0}" != 1 ]; then
	echo "install-deps: all ${#packages[@]} packages already installed"
	exit 0
fi

[ ${#missing[@]} -eq 0 ] || echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
	apt-get install -y --no-install-recommends "${packages[@]}"

# FUSE needs /dev/fuse; load the module where the kernel has it as a module.
if [ ! -e /dev/fuse ] && command -v modprobe >/dev/null 2>&1; then
	"${as_root[@]}" modprobe fuse 2>/dev/null || true
fi
[ -e /dev/fuse ] || echo "install-deps: warning: /dev/fuse is missing; mounts will fail" >&2
echo "install-deps: done"
