/* SPDX-License-Identifier: MIT */
/*
 * An opened image: the validated index plus reads of file data that fetch
 * only the chunks they touch, through the chunk cache, each verified.
 */
#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "codec.h"
#include "format.h"
#include "image.h"
#include "index.h"
#include "store.h"
#include "util.h"

/* A store can hand out a bad object once (a torn read, a flaky disk or
 * proxy): fetch a chunk that fails verification this many times in all. */
#define CHUNK_FETCH_TRIES 2

struct cfs_image {
	struct cfs_store *st;      /* borrowed */
	struct cfs_cache *cache;   /* borrowed */
	struct cfs_index *idx;
	cfs_digest ref;

	_Atomic uint64_t reads;
	_Atomic uint64_t read_bytes;
	_Atomic uint64_t read_errors;
	_Atomic uint64_t chunk_fetches;
	_Atomic uint64_t chunk_bad;
};

static void stat_add(_Atomic uint64_t *v, uint64_t n)
{
	atomic_fetch_add_explicit(v, n, memory_order_relaxed);
}

static uint64_t stat_load(_Atomic uint64_t *v)
{
	return atomic_load_explicit(v, memory_order_relaxed);
}

/* Fetches the index object, verifies it against ref and validates it. */
static int image_load_index(struct cfs_store *st, const cfs_digest *ref, struct cfs_index **out)
{
	void *obj = NULL, *raw = NULL;
	size_t objlen;
	int64_t raw_size;
	ssize_t n;
	int ret;

	ret = cfs_store_get(st, ref, &obj, &objlen);
	if (ret < 0)
		return ret;

	raw_size = cfs_obj_raw_size(obj, objlen);
	if (raw_size < 0) {
		ret = (int)raw_size;
		goto out_free_obj;
	}
	if (raw_size == 0 || (uint64_t)raw_size > CFS_INDEX_MAX_SIZE) {
		ret = -EUCLEAN;
		goto out_free_obj;
	}
	raw = malloc((size_t)raw_size);
	if (!raw) {
		ret = -ENOMEM;
		goto out_free_obj;
	}
	n = cfs_obj_decode(raw, (size_t)raw_size, obj, objlen, ref);
	if (n < 0) {
		ret = (int)n;
		goto out_free_raw;
	}
	if (n != raw_size) {
		ret = -EUCLEAN;
		goto out_free_raw;
	}
	free(obj);
	obj = NULL;

	ret = cfs_index_open(raw, (size_t)n, out);
	if (ret < 0)
		goto out_free_raw;
	return 0; /* the index owns raw now */

out_free_raw:
	free(raw);
out_free_obj:
	free(obj);
	return ret;
}

int cfs_image_open(struct cfs_store *st, struct cfs_cache *cache, const char *image,
		   struct cfs_image **out)
{
	struct cfs_image *img;
	int ret;

	if (!st || !cache || !image || !out)
		return -EINVAL;
	img = calloc(1, sizeof(*img));
	if (!img)
		return -ENOMEM;
	img->st = st;
	img->cache = cache;

	ret = cfs_store_resolve(st, image, &img->ref);
	if (ret < 0)
		goto out_free;
	ret = image_load_index(st, &img->ref, &img->idx);
	if (ret < 0)
		goto out_free;
	*out = img;
	return 0;

out_free:
	free(img);
	return ret;
}

void cfs_image_free(struct cfs_image *img)
{
	if (!img)
		return;
	cfs_index_free(img->idx);
	free(img);
}

const struct cfs_index *cfs_image_index(const struct cfs_image *img)
{
	return img->idx;
}

void cfs_image_digest(const struct cfs_image *img, cfs_digest *out)
{
	*out = img->ref;
}

/* cfs_cache_load_fn: fetch chunk d from the store and decode it into dst,
 * verified.  Runs once per chunk however many readers want it. */
static int image_load_chunk(void *ctx, const cfs_digest *d, uint32_t raw_size, uint8_t *dst)
{
	struct cfs_image *img = ctx;
	char ref[CFS_REF_STRLEN];
	int ret = -EIO;

	for (int attempt = 1; attempt <= CHUNK_FETCH_TRIES; attempt++) {
		void *obj;
		size_t objlen;
		ssize_t n;

		ret = cfs_store_get(img->st, d, &obj, &objlen);
		if (ret < 0) {
			cfs_digest_ref(d, ref);
			cfs_err("chunk %s: %s (store %s)", ref, cfs_strerror(ret),
				cfs_store_location(img->st));
			return ret;
		}
		stat_add(&img->chunk_fetches, 1);

		n = cfs_obj_decode(dst, raw_size, obj, objlen, d);
		free(obj);
		if (n >= 0 && (size_t)n != raw_size)
			n = -EUCLEAN; /* the right content, but not what the index says */
		if (n >= 0)
			return 0;

		ret = (int)n;
		if (ret != -EBADMSG && ret != -EUCLEAN)
			return ret; /* ENOMEM and the like: not the object's fault */
		stat_add(&img->chunk_bad, 1);
		cfs_digest_ref(d, ref);
		cfs_err("chunk %s: %s (store %s)%s", ref, cfs_strerror(ret),
			cfs_store_location(img->st),
			attempt < CHUNK_FETCH_TRIES ? "; fetching it again" : "");
	}
	return ret;
}

/* Copies n bytes at offset coff of chunk ci into dst. */
static int image_copy_chunk(struct cfs_image *img, uint32_t ci, uint64_t coff, void *dst, size_t n)
{
	struct cfs_chunk c;
	struct cfs_buf *b;
	int ret;

	ret = cfs_index_chunk(img->idx, ci, &c);
	if (ret < 0)
		return -EUCLEAN; /* the validated index named it */
	ret = cfs_cache_get(img->cache, &c.digest, c.raw_size, image_load_chunk, img, &b);
	if (ret < 0)
		return ret;
	if (cfs_buf_len(b) != c.raw_size || coff > c.raw_size || n > c.raw_size - coff) {
		cfs_buf_unref(b);
		return -EIO;
	}
	/* No lock is held here: the reference keeps the content alive. */
	memcpy(dst, cfs_buf_data(b) + coff, n);
	cfs_buf_unref(b);
	return 0;
}

static ssize_t image_read(struct cfs_image *img, uint64_t ino, uint8_t *buf, size_t len,
			  uint64_t off)
{
	struct cfs_inode inode;
	uint64_t pos, end;
	uint32_t i;
	int ret;

	ret = cfs_index_inode(img->idx, ino, &inode);
	if (ret < 0)
		return ret;
	ret = cfs_index_extent_find(img->idx, ino, off, &i);
	if (ret < 0)
		return ret;
	if (ret == 1 || len == 0)
		return 0; /* at or past the end */

	end = off + CFS_MIN((uint64_t)len, inode.size - off);
	pos = off;
	while (pos < end) {
		struct cfs_extent e;
		uint64_t eoff;
		size_t n;

		ret = cfs_index_extent(img->idx, ino, i++, &e);
		if (ret < 0)
			return ret;
		if (ret == 0 || pos < e.file_off || pos - e.file_off >= e.len)
			return -EUCLEAN; /* extents must tile the file */
		eoff = pos - e.file_off;
		n = (size_t)CFS_MIN(e.len - eoff, end - pos);
		if (e.chunk == CFS_CHUNK_NONE) {
			memset(buf + (pos - off), 0, n);
		} else {
			ret = image_copy_chunk(img, e.chunk, (uint64_t)e.chunk_off + eoff,
					       buf + (pos - off), n);
			if (ret < 0)
				return ret;
		}
		pos += n;
	}
	return (ssize_t)(end - off);
}

ssize_t cfs_image_read(struct cfs_image *img, uint64_t ino, void *buf, size_t len, uint64_t off)
{
	ssize_t n;

	stat_add(&img->reads, 1);
	if (len > SSIZE_MAX)
		len = SSIZE_MAX;
	n = image_read(img, ino, buf, len, off);
	if (n < 0)
		stat_add(&img->read_errors, 1);
	else
		stat_add(&img->read_bytes, (uint64_t)n);
	return n;
}

void cfs_image_stats_get(struct cfs_image *img, struct cfs_image_stats *out)
{
	out->reads = stat_load(&img->reads);
	out->read_bytes = stat_load(&img->read_bytes);
	out->read_errors = stat_load(&img->read_errors);
	out->chunk_fetches = stat_load(&img->chunk_fetches);
	out->chunk_bad = stat_load(&img->chunk_bad);
}
