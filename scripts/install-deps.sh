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
	libcurl4-openssl-dev libssl-dev libarchive-dev zlib1g-dev
	# cfs-load: safetensors headers are JSON (jansson); the Python binding's
	# test hands tensors to numpy through DLPack
	libjansson-dev python3 python3-numpy
	# fuzzers: clang, and the libFuzzer/sanitizer runtimes it only recommends
	clang libclang-rt-dev
	# run time, tests and demo
	fuse3 zstd runc busybox-static attr tar gzip util-linux coreutils
	ca-certificates
	# remote store tests: nginx serves a store over http:// and over https://
	# with HTTP/2 (nginx-light has the ssl and http_v2 modules) with a
	# certificate from a throwaway CA made by openssl; the S3 peer s3rver
	# (an npm package, below) plays s3://
	nginx-light nodejs npm curl openssl
	# OCI image tests: umoci builds images, a local docker-registry and
	# skopeo turn them into zstd layouts and docker-archives, jq edits the
	# JSON of hand-made layouts
	umoci skopeo docker-registry jq
	# the registries of tests/lib-registry.sh: htpasswd writes the bcrypt
	# hashes that docker-registry's Basic auth needs
	apache2-utils
	# container engines on cfs mounts (tests/runtimes.sh); podman build
	# and setcap for the conformance corpus (tests/conformance.sh)
	podman containerd libcap2-bin
)
# s3rver for tests/remote.sh, in a cache directory outside the tree.
S3RVER_VERSION=3.7.1
TEST_DEPS=${CFS_TEST_DEPS:-/opt/cfs-test-deps}

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

# A machine that has nginx (or nodejs) from elsewhere already has what the
# tests need: only ask apt for what is truly missing.
have_cmd() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
still_missing=()
for p in "${missing[@]}"; do
	case $p in
	nginx-light) have_cmd nginx && continue ;;
	nodejs) have_cmd node && continue ;;
	npm) have_cmd npm && continue ;;
	esac
	still_missing+=("$p")
done
missing=("${still_missing[@]}")

if [ ${#missing[@]} -eq 0 ] && [ "${CFS_FORCE_DEPS:-0}" != 1 ]; then
	echo "install-deps: all ${#packages[@]} packages already installed"
else
	[ ${#missing[@]} -eq 0 ] || echo "install-deps: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	had_nginx=0
	have_cmd nginx && had_nginx=1
	had_registry=0
	have_cmd docker-registry && had_registry=1
	had_containerd=0
	have_cmd containerd && had_containerd=1
	"${as_root[@]}" apt-get update
	# policy-rc.d 101: packages installed now do not start their services
	# (Debian's nginx would take port 80); the tests run their own.
	policy=/usr/sbin/policy-rc.d
	made_policy=0
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee "$policy" >/dev/null
		"${as_root[@]}" chmod 755 "$policy"
		made_policy=1
	fi
	rc=0
	"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
		apt-get install -y --no-install-recommends "${missing[@]}" || rc=$?
	[ "$made_policy" -eq 0 ] || "${as_root[@]}" rm -f "$policy"
	[ "$rc" -eq 0 ] || exit "$rc"
	# Where a service manager started it anyway, stop it: nothing of cfs
	# uses the system nginx.
	if [ "$had_nginx" -eq 0 ] && command -v systemctl >/dev/null 2>&1 &&
		[ -d /run/systemd/system ]; then
		"${as_root[@]}" systemctl disable --now nginx >/dev/null 2>&1 || true
	fi
	# The same for Debian's docker-registry service (port 5000): the OCI
	# test runs its own registry on a free port.
	if [ "$had_registry" -eq 0 ] && command -v systemctl >/dev/null 2>&1 &&
		[ -d /run/systemd/system ]; then
		"${as_root[@]}" systemctl disable --now docker-registry >/dev/null 2>&1 || true
	fi
	# And containerd's: tests/runtimes.sh starts one with its own root.
	if [ "$had_containerd" -eq 0 ] && command -v systemctl >/dev/null 2>&1 &&
		[ -d /run/systemd/system ]; then
		"${as_root[@]}" systemctl disable --now containerd >/dev/null 2>&1 || true
	fi
fi

# s3rver, pinned, with npm into $TEST_DEPS (idempotent: skipped when that
# version is there).  Its package asks for node >= 8.3; run here with node 20.
s3rver_pkg=$TEST_DEPS/node_modules/s3rver/package.json
if [ -f "$s3rver_pkg" ] && grep -q "\"version\": \"$S3RVER_VERSION\"" "$s3rver_pkg"; then
	echo "install-deps: s3rver $S3RVER_VERSION already in $TEST_DEPS"
elif command -v npm >/dev/null 2>&1; then
	echo "install-deps: npm install s3rver@$S3RVER_VERSION into $TEST_DEPS"
	"${as_root[@]}" mkdir -p "$TEST_DEPS"
	"${as_root[@]}" npm install --prefix "$TEST_DEPS" --no-audit --no-fund --loglevel=error \
		"s3rver@$S3RVER_VERSION"
else
	echo "install-deps: warning: npm missing; tests/remote.sh will skip its s3 part" >&2
fi

# FUSE needs /dev/fuse; load the module where the kernel has it as a module.
if [ ! -e /dev/fuse ] && command -v modprobe >/dev/null 2>&1; then
	"${as_root[@]}" modprobe fuse 2>/dev/null || true
fi
[ -e /dev/fuse ] || echo "install-deps: warning: /dev/fuse is missing; mounts will fail" >&2
echo "install-deps: done"
