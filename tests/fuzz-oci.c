/* SPDX-License-Identifier: MIT */
/*
 * fuzz-oci: libFuzzer target for cfs-pack's image sources.  The input is a
 * docker-archive (the tar `docker save` writes), run through the whole
 * source of tools/pack_oci.c: the tar member parser, manifest.json and the
 * image config (jansson), symlinks between members, layer sniffing and
 * decompression (gzip, zstd, plain), the digest and diff_id checks, and the
 * layer tars with the whiteout rules, through the real pipeline into a
 * temporary store (fuzz-pack.h).  Whatever the input, nothing may crash,
 * hang or leak, and a failure must come with an error code; an accepted
 * image must have its config and an index that opens.  (fuzz-oci-layout
 * does the oci:DIR source.)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz-pack.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cfs_index *idx = NULL;
	char spec[64];
	int fd;

	fuzz_pack_quiet("fuzz-oci");
	fd = memfd_create("fuzz-oci", MFD_CLOEXEC);
	FUZZ_ASSERT(fd >= 0);
	FUZZ_ASSERT(size == 0 || cfs_write_full(fd, data, size) == 0);
	snprintf(spec, sizeof(spec), "/proc/self/fd/%d", fd);
	if (fuzz_pack_run(&cfs_pack_source_docker_archive, spec, -1, NULL, &idx) == 0)
		fuzz_pack_config_check(idx);
	close(fd);
	return 0;
}
