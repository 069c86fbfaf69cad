/* SPDX-License-Identifier: MIT */
/*
 * An opened image: the validated index plus reads of file data that fetch
 * only the chunks they touch, through the chunk cache, each verified.
 * The readahead pool is readahead.c's, the guesses a first read makes
 * predict.c's, prefetch at mount prefetch.c's, the stream's fetched but
 * unread objects stage.c's; all fetch through image_load.c.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "codec.h"
#include "format.h"
#include "image_i.h"
#include "index.h"
#include "store.h"
#include "util.h"

static uint64_t stat_load(_Atomic uint64_t *v)
{
	return atomic_load_explicit(v, memory_order_relaxed);
}

/* The index, verified against ref and validated. */
static int image_load_index(struct cfs_store *st, struct cfs_cache *cache, const cfs_digest *ref,
			    struct cfs_index **out)
{
	uint8_t *raw;
	size_t len;
	int ret;

	ret = cfs_image_load_obj(st, cache, ref, CFS_INDEX_MAX_SIZE, 0, &raw, &len);
	if (ret < 0)
		return ret;
	ret = cfs_index_open(raw, len, out);
	if (ret < 0)
		free(raw); /* else the index owns it */
	return ret;
}

int cfs_image_config(struct cfs_image *img, void **out, size_t *len)
{
	cfs_digest d;
	uint64_t size;
	uint8_t *raw;
	int ret;

	ret = cfs_index_config(img->idx, &d, &size);
	if (ret < 0)
		return ret;
	ret = cfs_image_load_obj(img->st, img->cache, &d, CFS_CONFIG_MAX_SIZE, size, &raw, len);
	if (ret < 0)
		return ret;
	*out = raw;
	return 0;
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
	img->stage_fd = -1;
	pthread_mutex_init(&img->timeout_lock, NULL);

	ret = cfs_store_resolve(st, image, &img->ref);
	if (ret < 0)
		goto out_free;
	ret = image_load_index(st, cache, &img->ref, &img->idx);
	if (ret < 0)
		goto out_free;
	*out = img;
	return 0;

out_free:
	pthread_mutex_destroy(&img->timeout_lock);
	free(img);
	return ret;
}

void cfs_image_free(struct cfs_image *img)
{
	if (!img)
		return;
	cfs_image_ra_stop(img);
	cfs_predict_free(&img->pred);
	cfs_image_stage_close(img);
	cfs_index_free(img->idx);
	pthread_mutex_destroy(&img->timeout_lock);
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

/* A reference to chunk ci, with bytes [coff, coff + n) checked in range. */
static int image_get_chunk(struct cfs_image *img, uint32_t ci, uint64_t coff, size_t n,
			   struct cfs_buf **out)
{
	struct cfs_chunk c;
	struct cfs_buf *b;
	int ret;

	ret = cfs_index_chunk(img->idx, ci, &c);
	if (ret < 0)
		return -EUCLEAN; /* the validated index named it */
	ret = cfs_cache_get(img->cache, &c.digest, c.raw_size, cfs_image_load_chunk, img, &b);
	if (ret < 0)
		return ret;
	if (cfs_buf_len(b) != c.raw_size || coff > c.raw_size || n > c.raw_size - coff) {
		cfs_buf_unref(b);
		return -EIO;
	}
	*out = b;
	return 0;
}

/* Copies n bytes at offset coff of chunk ci into dst.  A cache file that
 * came up short (truncated under us) is dropped and the chunk had again,
 * once; a second short one is -ESTALE, for the caller's log to say so. */
static int image_copy_chunk(struct cfs_image *img, uint32_t ci, uint64_t coff, void *dst, size_t n)
{
	struct cfs_buf *b;
	int ret;

	for (int attempt = 0;; attempt++) {
		ret = image_get_chunk(img, ci, coff, n, &b);
		if (ret < 0)
			return ret;
		/* No lock is held here: the reference keeps the content alive. */
		ret = cfs_buf_read(b, dst, n, coff);
		if (ret == -ESTALE)
			cfs_cache_invalidate(img->cache, b);
		cfs_buf_unref(b);
		if (ret != -ESTALE || attempt)
			return ret;
	}
}

/* Called for each piece of a read, in file order: n bytes at coff of chunk
 * ci (CFS_CHUNK_NONE: a hole), landing at rel bytes into the read. */
typedef int (*image_piece_fn)(struct cfs_image *img, void *ctx, uint32_t ci, uint64_t coff,
			      size_t n, uint64_t rel);

/* Walks the extents that hold [off, off + len) of the file whose inode is
 * in.  Returns the bytes covered (short only at end of file) or the first
 * error. */
static ssize_t image_walk(struct cfs_image *img, const struct cfs_inode *in, uint64_t off,
			  size_t len, image_piece_fn fn, void *ctx)
{
	uint64_t pos, end;
	uint32_t i;
	int ret;

	ret = cfs_index_file_extent_find(img->idx, in, off, &i);
	if (ret < 0)
		return ret;
	if (ret == 1 || len == 0)
		return 0; /* at or past the end */

	end = off + CFS_MIN((uint64_t)len, in->size - off);
	pos = off;
	while (pos < end) {
		struct cfs_extent e;
		uint64_t eoff;
		size_t n;

		ret = cfs_index_file_extent(img->idx, in, i++, &e);
		if (ret < 0)
			return ret;
		if (ret == 0 || pos < e.file_off || pos - e.file_off >= e.len)
			return -EUCLEAN; /* extents must tile the file */
		eoff = pos - e.file_off;
		n = (size_t)CFS_MIN(e.len - eoff, end - pos);
		ret = fn(img, ctx, e.chunk, (uint64_t)e.chunk_off + eoff, n, pos - off);
		if (ret < 0)
			return ret;
		pos += n;
	}
	return (ssize_t)(end - off);
}

static int read_piece(struct cfs_image *img, void *ctx, uint32_t ci, uint64_t coff, size_t n,
		      uint64_t rel)
{
	uint8_t *dst = (uint8_t *)ctx + rel;

	if (ci == CFS_CHUNK_NONE) {
		memset(dst, 0, n);
		return 0;
	}
	return image_copy_chunk(img, ci, coff, dst, n);
}

struct map_ctx {
	struct cfs_image_seg *segs;
	unsigned max, k;
};

static int map_piece(struct cfs_image *img, void *ctx, uint32_t ci, uint64_t coff, size_t n,
		     uint64_t rel)
{
	struct map_ctx *m = ctx;
	struct cfs_image_seg *last = m->k ? &m->segs[m->k - 1] : NULL;
	int ret;

	(void)rel;
	/* Adjacent pieces of one chunk (or holes) are one segment. */
	if (last && last->chunk == ci && (ci == CFS_CHUNK_NONE || last->off + last->len == coff)) {
		if (last->buf && last->off + last->len + n > cfs_buf_len(last->buf))
			return -EUCLEAN;
		last->len += n;
		return 0;
	}
	if (m->k == m->max)
		return -E2BIG;
	m->segs[m->k] = (struct cfs_image_seg){ .buf = NULL, .chunk = ci, .off = coff, .len = n };
	if (ci != CFS_CHUNK_NONE) {
		ret = image_get_chunk(img, ci, coff, n, &m->segs[m->k].buf);
		if (ret < 0)
			return ret;
	}
	m->k++;
	return 0;
}

static ssize_t image_map(struct cfs_image *img, const struct cfs_inode *in, uint64_t off,
			 size_t len, struct cfs_image_seg *segs, unsigned max, unsigned *nseg)
{
	struct map_ctx m = { segs, max, 0 };
	ssize_t n = image_walk(img, in, off, len, map_piece, &m);

	if (n < 0) {
		cfs_image_unmap(segs, m.k);
		m.k = 0;
	}
	*nseg = m.k;
	return n;
}

/* Counts a read of in (NULL when it could not be had) that returned n, and
 * feeds the readahead's detector. */
static void read_account(struct cfs_image *img, const struct cfs_inode *in, uint64_t off,
			 ssize_t n)
{
	stat_add(&img->reads, 1);
	if (n < 0) {
		stat_add(&img->read_errors, 1);
	} else {
		stat_add(&img->read_bytes, (uint64_t)n);
		if (img->ra && n > 0)
			cfs_image_ra_note(img, in, off, (uint64_t)n);
	}
}

ssize_t cfs_image_map(struct cfs_image *img, const struct cfs_inode *in, uint64_t off, size_t len,
		      struct cfs_image_seg *segs, unsigned max, unsigned *nseg)
{
	ssize_t n;

	if (len > SSIZE_MAX)
		len = SSIZE_MAX;
	cfs_predict_touch(img, in, off);
	n = image_map(img, in, off, len, segs, max, nseg);
	/* Too many pieces is not an error: the caller reads instead. */
	if (n != -E2BIG)
		read_account(img, in, off, n);
	return n;
}

void cfs_image_unmap(struct cfs_image_seg *segs, unsigned n)
{
	for (unsigned k = 0; k < n; k++) {
		cfs_buf_unref(segs[k].buf);
		segs[k].buf = NULL;
	}
}

ssize_t cfs_image_read_inode(struct cfs_image *img, const struct cfs_inode *in, void *buf,
			     size_t len, uint64_t off)
{
	ssize_t n;

	if (len > SSIZE_MAX)
		len = SSIZE_MAX;
	cfs_predict_touch(img, in, off);
	n = image_walk(img, in, off, len, read_piece, buf);
	read_account(img, in, off, n);
	return n;
}

ssize_t cfs_image_read(struct cfs_image *img, uint64_t ino, void *buf, size_t len, uint64_t off)
{
	struct cfs_inode in;
	int ret = cfs_index_inode(img->idx, ino, &in);

	if (ret < 0) {
		read_account(img, NULL, off, ret);
		return ret;
	}
	return cfs_image_read_inode(img, &in, buf, len, off);
}

void cfs_image_stats_get(struct cfs_image *img, struct cfs_image_stats *out)
{
	out->ra_chunks = stat_load(&img->ra_chunks);
	out->ra_dropped = stat_load(&img->ra_dropped);
	out->reads = stat_load(&img->reads);
	out->read_bytes = stat_load(&img->read_bytes);
	out->read_errors = stat_load(&img->read_errors);
	out->chunk_fetches = stat_load(&img->chunk_fetches);
	out->demand_fetches = stat_load(&img->demand_fetches);
	out->chunk_bad = stat_load(&img->chunk_bad);
	out->prefetch_queued = stat_load(&img->prefetch_queued);
	out->prefetch_done = stat_load(&img->prefetch_done);
	out->hint_chunks = stat_load(&img->hint_chunks);
	out->elf_hint_chunks = stat_load(&img->elf_hint_chunks);
	out->stream_chunks = stat_load(&img->stream_chunks);
	out->stream_bytes = stat_load(&img->stream_bytes);
	out->ra_pending = cfs_image_ra_pending(img);
	out->stage_bytes = stat_load(&img->stage_bytes);
	out->stage_hits = stat_load(&img->stage_hits);
	out->stage_bad = stat_load(&img->stage_bad);
}
