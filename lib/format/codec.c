/* SPDX-License-Identifier: MIT */
/*
 * Object codec: one zstd frame with its content size, named by the SHA-256
 * of the content.  Everything handed to the decoder may come from a hostile
 * store, so every path ends in a clean -EUCLEAN or -EBADMSG.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <zstd.h>
#include <zstd_errors.h>

#include "codec.h"
#include "util.h"

/* The first four bytes of a zstd data frame, little-endian 0xFD2FB528. */
static const uint8_t zstd_magic[4] = { 0x28, 0xb5, 0x2f, 0xfd };

/* Contexts are cached per thread: creating one costs more than compressing
 * a small chunk.  The keys' destructors free them when a thread exits. */
static pthread_once_t ctx_once = PTHREAD_ONCE_INIT;
static pthread_key_t cctx_key, dctx_key;
static int ctx_key_err;

static void cctx_destroy(void *p)
{
	ZSTD_freeCCtx(p);
}

static void dctx_destroy(void *p)
{
	ZSTD_freeDCtx(p);
}

static void ctx_keys_init(void)
{
	int ret = pthread_key_create(&cctx_key, cctx_destroy);

	if (!ret) {
		ret = pthread_key_create(&dctx_key, dctx_destroy);
		if (ret)
			pthread_key_delete(cctx_key);
	}
	ctx_key_err = ret;
}

static ZSTD_CCtx *thread_cctx(void)
{
	ZSTD_CCtx *cctx;

	if (pthread_once(&ctx_once, ctx_keys_init) || ctx_key_err)
		return NULL;
	cctx = pthread_getspecific(cctx_key);
	if (cctx)
		return cctx;
	cctx = ZSTD_createCCtx();
	if (cctx && pthread_setspecific(cctx_key, cctx)) {
		ZSTD_freeCCtx(cctx);
		return NULL;
	}
	return cctx;
}

static ZSTD_DCtx *thread_dctx(void)
{
	ZSTD_DCtx *dctx;

	if (pthread_once(&ctx_once, ctx_keys_init) || ctx_key_err)
		return NULL;
	dctx = pthread_getspecific(dctx_key);
	if (dctx)
		return dctx;
	dctx = ZSTD_createDCtx();
	if (dctx && pthread_setspecific(dctx_key, dctx)) {
		ZSTD_freeDCtx(dctx);
		return NULL;
	}
	return dctx;
}

size_t cfs_obj_bound(size_t raw_len)
{
	return ZSTD_compressBound(raw_len);
}

ssize_t cfs_obj_encode(void *dst, size_t cap, const void *src, size_t len, int level)
{
	ZSTD_CCtx *cctx;
	size_t n;

	if (len > (size_t)SSIZE_MAX)
		return -EINVAL;
	cctx = thread_cctx();
	if (!cctx)
		return -ENOMEM;
	/* Parameters are sticky across calls on a cached context: set them all
	 * every time so that one caller's level never leaks into another's. */
	ZSTD_CCtx_reset(cctx, ZSTD_reset_session_and_parameters);
	if (ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level)) ||
	    ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 1)) ||
	    ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 0)))
		return -EINVAL;

	n = ZSTD_compress2(cctx, dst, cap, src, len);
	if (ZSTD_isError(n)) {
		switch (ZSTD_getErrorCode(n)) {
		case ZSTD_error_dstSize_tooSmall:
			return -ENOBUFS;
		case ZSTD_error_memory_allocation:
			return -ENOMEM;
		default:
			cfs_debug("zstd compress: %s", ZSTD_getErrorName(n));
			return -EINVAL;
		}
	}
	return (ssize_t)n;
}

int64_t cfs_obj_raw_size(const void *obj, size_t objlen)
{
	unsigned long long raw;
	size_t frame;

	/* Skippable frames "declare" size 0 to ZSTD_getFrameContentSize():
	 * only a data frame is an object. */
	if (!obj || objlen < sizeof(zstd_magic) || memcmp(obj, zstd_magic, sizeof(zstd_magic)))
		return -EUCLEAN;
	raw = ZSTD_getFrameContentSize(obj, objlen);
	if (raw == ZSTD_CONTENTSIZE_UNKNOWN || raw == ZSTD_CONTENTSIZE_ERROR || raw > INT64_MAX)
		return -EUCLEAN;
	/* Walks the block headers: catches truncation, trailing bytes and a
	 * second frame before anything is decompressed. */
	frame = ZSTD_findFrameCompressedSize(obj, objlen);
	if (ZSTD_isError(frame) || frame != objlen)
		return -EUCLEAN;
	return (int64_t)raw;
}

ssize_t cfs_obj_decode(void *dst, size_t cap, const void *obj, size_t objlen,
		       const cfs_digest *expect)
{
	ZSTD_DCtx *dctx;
	cfs_digest got;
	int64_t raw;
	size_t n;

	raw = cfs_obj_raw_size(obj, objlen);
	if (raw < 0)
		return raw;
	if ((uint64_t)raw > cap || (uint64_t)raw > SSIZE_MAX)
		return -EUCLEAN;
	dctx = thread_dctx();
	if (!dctx)
		return -ENOMEM;

	/* A capacity of exactly the declared size: the frame cannot write
	 * more, and zstd checks that it wrote no less. */
	n = ZSTD_decompressDCtx(dctx, dst, (size_t)raw, obj, objlen);
	if (ZSTD_isError(n)) {
		/* Each call starts a fresh frame: nothing to reset here. */
		if (ZSTD_getErrorCode(n) == ZSTD_error_memory_allocation)
			return -ENOMEM;
		return -EUCLEAN;
	}
	if (n != (size_t)raw)
		return -EUCLEAN;

	cfs_sha256(dst, n, &got);
	if (!cfs_digest_eq(&got, expect))
		return -EBADMSG;
	return (ssize_t)n;
}
