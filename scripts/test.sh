#!/usr/bin/env bash
# Build cfs and run the whole test suite: plain build, ASan/UBSan build, and a short libFuzzer run.
#
# Environment:
#   CFS_SKIP_DEPS=1      do not run scripts/install-deps.sh
#   CFS_SKIP_SANITIZE=1  skip the ASan/UBSan build and the fuzz run
#   CFS_FUZZ_SECONDS=N   length of the fuzz run (default 60)
# Tests that mount or boot containers need root: as a user with sudo it
# re-runs itself through sudo (CFS_NO_SUDO=1 runs as the user, and those
# tests skip with 77).
# Exits non-zero if any stage fails; every stage runs unless an earlier one it needs failed.
set -euo pipefail

cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."
root=$PWD

if [ "$(id -u)" -ne 0 ] && [ "${CFS_NO_SUDO:-0}" != 1 ] && command -v sudo >/dev/null 2>&1; then
	exec sudo -E -- bash "$root/scripts/test.sh" "$@"
fi

failed=()
log() { printf '\n==> %s\n' "$*"; }
fail() { printf 'test.sh: FAILED: %s\n' "$*" >&2; failed+=("$*"); }
fuzz_reports=()

if [ "${CFS_SKIP_DEPS:-0}" != 1 ]; then
	log "dependencies"
	bash scripts/install-deps.sh
fi

# setup_build DIR [meson options...]: configure DIR once, then build it.
setup_build() {
	local dir=$1
	shift
	if [ ! -f "$dir/build.ninja" ]; then
		meson setup "$dir" "$@" || return 1
	fi
	ninja -C "$dir"
}

# sanitizer_reports DIR: print and count the reports that sanitizers wrote
# under DIR (log_path catches those of daemonized cfs-mount, whose stderr is
# /dev/null).
sanitizer_reports() {
	local dir=$1 f n=0
	for f in "$dir"/*; do
		[ -s "$f" ] || continue
		n=$((n + 1))
		printf '%s\n' "---- $f"
		cat "$f"
	done
	[ "$n" -eq 0 ]
}

# 1. Plain build and tests.
log "build (build/)"
if setup_build build; then
	log "layers (scripts/check-layers.sh, docs/ARCHITECTURE.md)"
	bash scripts/check-layers.sh build || fail "layer check"
	log "tests (build/)"
	meson test -C build --print-errorlogs || fail "tests in build/"
else
	fail "build in build/"
fi

if [ "${CFS_SKIP_SANITIZE:-0}" = 1 ]; then
	log "sanitizer build and fuzz run skipped (CFS_SKIP_SANITIZE=1)"
else
	# 2. ASan + UBSan build and tests.
	log "build (build-asan/, ASan+UBSan)"
	if setup_build build-asan -Db_sanitize=address,undefined -Db_lundef=false; then
		log "tests (build-asan/)"
		san_logs=$(mktemp -d /tmp/cfs-san.XXXXXX)
		if ! ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:log_path=$san_logs/asan" \
			UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$san_logs/ubsan" \
			meson test -C build-asan --print-errorlogs; then
			fail "tests in build-asan/"
		fi
		if ! sanitizer_reports "$san_logs"; then
			fail "sanitizer reports in build-asan/ tests (see above)"
		fi
		rm -rf "$san_logs"
	else
		fail "build in build-asan/"
	fi

	# 3. libFuzzer smoke runs over the parsers of outside input.
	if command -v clang >/dev/null 2>&1; then
		log "build (build-fuzz/, clang libFuzzer)"
		if [ ! -f build-fuzz/build.ninja ]; then
			CC=clang meson setup build-fuzz -Dfuzzers=true \
				-Db_sanitize=address,undefined -Db_lundef=false || fail "meson setup build-fuzz"
		fi
		secs=${CFS_FUZZ_SECONDS:-60}
		# Every parser of outside input: the image index, access profiles,
		# safetensors headers (with shard indexes), docker-archives and OCI
		# layouts (cfs-pack's image sources: tar members, JSON, layers),
		# tar streams, HTTP and S3 replies (through libcurl and the
		# fetcher), tags and signature files (docs/SECURITY.md), ELF
		# headers (cfs-pack's hints), the docker:// source's references,
		# challenges, tokens, error bodies and auth files.
		for target in index profile safetensors oci oci-layout tar http sig elf registry; do
			if ! { [ -f build-fuzz/build.ninja ] && ninja -C build-fuzz "tests/fuzz-$target"; }; then
				fail "build of build-fuzz/tests/fuzz-$target"
				continue
			fi
			log "fuzz-$target for ${secs}s"
			# New inputs go to a copy of the corpus, crash files to build-fuzz/,
			# so the run never writes into the source tree.
			corpus=$(mktemp -d /tmp/cfs-corpus.XXXXXX)
			if [ -d "tests/corpus/$target" ]; then
				cp -a "tests/corpus/$target/." "$corpus/"
			fi
			mkdir -p build-fuzz/fuzz-artifacts
			flog=build-fuzz/fuzz-$target.log
			if ! "build-fuzz/tests/fuzz-$target" -max_total_time="$secs" -print_final_stats=1 \
				-artifact_prefix="$root/build-fuzz/fuzz-artifacts/" "$corpus" > "$flog" 2>&1; then
				tail -n 20 "$flog"
				fail "fuzz-$target (crash inputs in build-fuzz/fuzz-artifacts/, log $flog)"
				# The report, for the summary at the end: a CI log keeps
				# only its tail.
				fuzz_reports+=("$(grep -v -E '^#[0-9]+' "$flog" | tail -n 60)")
			else
				tail -n 8 "$flog"
			fi
			rm -rf "$corpus"
		done
	else
		log "clang not found: fuzz run skipped"
	fi
fi

echo
if [ ${#failed[@]} -ne 0 ]; then
	for r in "${fuzz_reports[@]}"; do
		printf 'test.sh: fuzzer report:\n%s\n' "$r"
	done
	printf 'test.sh: %d stage(s) failed:\n' "${#failed[@]}"
	printf '  - %s\n' "${failed[@]}"
	exit 1
fi
echo "test.sh: all stages passed"
