/* SPDX-License-Identifier: MIT */
/*
 * fuzz-oci: libFuzzer target for cfs-pack's image sources.  The input is a
 * docker-archive (the tar `docker save` writes), run through the whole
 * source of tools/pack_oci.c: the tar member parser, manifest.json and the
 * image config (jansson), symlinks between members, layer sniffing and
 * decompression (gzip, zstd, plain), the digest and diff_id checks, and the
 * layer tars with the whiteout rules into a real builder and chunker.
 * Whatever the input, nothing may crash, hang or leak, and a failure must
 * come with an error code; an accepted image must serialise to an index
 * that opens.
 *
 * The driver stands in for pack.c: chunks are hashed and recorded, not
 * compressed or stored.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "builder.h"
#include "chunker.h"
#include "digest.h"
#include "index.h"
#include "util.h"

#include "../tools/pack.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ASSERT(cond)                                                                 \
	do {                                                                         \
		if (!(cond)) {                                                       \
			fprintf(stderr, "fuzz-oci: %s:%d: %s\n", __FILE__, __LINE__, #cond); \
			abort();                                                     \
		}                                                                    \
	} while (0)

static int fail_err;

int cfs_pack_fail(struct cfs_pack *p, int err, const char *fmt, ...)
{
	(void)p;
	(void)fmt;
	if (!fail_err)
		fail_err = err;
	return err;
}

int cfs_pack_data(struct cfs_pack *p, const char *path, uint64_t off, const void *buf, size_t len)
{
	int ret = cfs_chunker_file_data(p->ch, off, buf, len);

	if (ret < 0)
		return cfs_pack_fail(p, ret, "%s", path);
	p->bytes_in += len;
	return 0;
}

static int emit(void *ctx, uint32_t chunk, void *data, size_t len)
{
	struct cfs_pack *p = ctx;
	cfs_digest d;
	int ret;

	cfs_sha256(data, len, &d);
	ret = cfs_builder_chunk_set(p->b, chunk, &d, (uint32_t)len, (uint32_t)len);
	free(data);
	return ret;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static FILE *devnull;
	struct cfs_chunker_opts co = { .chunk_size = 64u << 10, .small_max = 4096 };
	struct cfs_pack p = { .small_max = 4096 };
	struct cfs_index *idx = NULL;
	void *config = NULL, *index = NULL;
	size_t config_len = 0, index_len = 0;
	char spec[64];
	int fd, ret;

	if (!devnull) {
		devnull = fopen("/dev/null", "we");
		cfs_log_setup("fuzz-oci", CFS_LOG_ERR, devnull);
	}
	fd = memfd_create("fuzz-oci", MFD_CLOEXEC);
	ASSERT(fd >= 0);
	ASSERT(size == 0 || cfs_write_full(fd, data, size) == 0);
	snprintf(spec, sizeof(spec), "/proc/self/fd/%d", fd);
	ASSERT(cfs_builder_new(co.chunk_size, &p.b) == 0);
	ASSERT(cfs_chunker_new(&co, p.b, emit, &p, &p.ch) == 0);

	fail_err = 0;
	ret = cfs_pack_oci(&p, spec, true, NULL, &config, &config_len);
	if (ret == 0)
		ret = cfs_chunker_flush(p.ch);
	if (ret < 0) {
		ASSERT(fail_err < 0 || ret != 0);
		ASSERT(!config);
	} else {
		ASSERT(config && config_len > 0);
		ret = cfs_builder_finish(p.b, &index, &index_len, NULL);
		if (ret == 0) {
			ASSERT(cfs_index_open(index, index_len, &idx) == 0);
			cfs_index_free(idx); /* frees index */
		}
	}
	free(config);
	cfs_chunker_free(p.ch);
	cfs_builder_free(p.b);
	close(fd);
	return 0;
}
