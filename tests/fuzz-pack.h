/* SPDX-License-Identifier: MIT */
/*
 * What the fuzz targets of cfs-pack's sources (fuzz-oci, fuzz-oci-layout,
 * fuzz-tar) share: a stand-in for pack.c, and the check that an accepted
 * input serialises to an index that opens.  The stand-in hashes and records
 * chunks but neither compresses nor stores them: the sources are under
 * test, not the codecs or the store.
 *
 * Definitions, not only declarations: include it from the one .c of a
 * target (which links with the sources in tools/, not with pack.c).
 */
#ifndef CFS_FUZZ_PACK_H
#define CFS_FUZZ_PACK_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "builder.h"
#include "chunker.h"
#include "digest.h"
#include "index.h"
#include "util.h"

#include "../tools/pack.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_ASSERT(cond)                                                          \
	do {                                                                       \
		if (!(cond)) {                                                     \
			fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, #cond); \
			abort();                                                   \
		}                                                                  \
	} while (0)

#define FUZZ_CHUNK_SIZE (64u << 10)
#define FUZZ_SMALL_MAX 4096u

/* The first error a source recorded, 0 if none. */
static int fuzz_pack_err;

int cfs_pack_fail(struct cfs_pack *p, int err, const char *fmt, ...)
{
	(void)p;
	(void)fmt;
	if (!fuzz_pack_err)
		fuzz_pack_err = err;
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

static int fuzz_pack_emit(void *ctx, uint32_t chunk, void *data, size_t len)
{
	struct cfs_pack *p = ctx;
	cfs_digest d;
	int ret;

	cfs_sha256(data, len, &d);
	ret = cfs_builder_chunk_set(p->b, chunk, &d, (uint32_t)len, (uint32_t)len);
	free(data);
	return ret;
}

/* Logs go nowhere: a hostile input makes a lot of them. */
static void fuzz_pack_quiet(const char *prog)
{
	static FILE *devnull;

	if (!devnull) {
		devnull = fopen("/dev/null", "we");
		cfs_log_setup(prog, CFS_LOG_ERR, devnull);
	}
}

/* A fresh builder and chunker in *p, as pack.c sets them up. */
static void fuzz_pack_begin(struct cfs_pack *p)
{
	struct cfs_chunker_opts co = { .chunk_size = FUZZ_CHUNK_SIZE,
				       .small_max = FUZZ_SMALL_MAX };

	*p = (struct cfs_pack){ .small_max = FUZZ_SMALL_MAX };
	fuzz_pack_err = 0;
	FUZZ_ASSERT(cfs_builder_new(co.chunk_size, &p->b) == 0);
	FUZZ_ASSERT(cfs_chunker_new(&co, p->b, fuzz_pack_emit, p, &p->ch) == 0);
}

/* After the source returned ret: a failure must be a negative errno that
 * the source recorded; a success must flush, finish and give an index
 * that opens.  Frees what fuzz_pack_begin() made; returns the outcome. */
static int fuzz_pack_end(struct cfs_pack *p, int ret)
{
	struct cfs_index *idx = NULL;
	void *index = NULL;
	size_t index_len = 0;

	FUZZ_ASSERT(ret <= 0);
	if (ret < 0)
		FUZZ_ASSERT(fuzz_pack_err < 0);
	if (ret == 0)
		ret = cfs_chunker_flush(p->ch);
	if (ret == 0) {
		ret = cfs_builder_finish(p->b, &index, &index_len, NULL);
		if (ret == 0) {
			FUZZ_ASSERT(cfs_index_open(index, index_len, &idx) == 0);
			cfs_index_free(idx); /* frees index */
		}
	}
	FUZZ_ASSERT(ret <= 0);
	cfs_chunker_free(p->ch);
	cfs_builder_free(p->b);
	p->ch = NULL;
	p->b = NULL;
	return ret;
}

#endif /* CFS_FUZZ_PACK_H */
