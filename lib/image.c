/* SPDX-License-Identifier: MIT */
/*
 * An opened image: the validated index plus reads of file data that fetch
 * only the chunks they touch, through the chunk cache, each verified.
 * The readahead pool is readahead.c's, prefetch at mount prefetch.c's;
 * both fetch through cfs_image_load_chunk() here.
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

/* A store can hand out a bad object once (a torn read, a flaky disk or
 * proxy): fetch a chunk that fails verification this many times in all. */
#define CHUNK_FETCH_TRIES 2

/* A chunk whose fetch ran out of its deadline fails again at once for this
 * long: the kernel answers a failed read with more reads of the same range
 * (the read itself after a readahead, smaller pieces), each of which would
 * otherwise wait a whole new deadline on a store that hangs.  Short, so
 * that a store that comes back serves that chunk again soon. */
#define TIMEOUT_MEMORY_NS (2ull * 1000000000ull)

static uint64_t stat_load(_Atomic uint64_t *v)
{
	return atomic_load_explicit(v, memory_order_relaxed);
}

/* An object found corrupt (EBADMSG, EUCLEAN) on one member of a store
 * list is asked of the next: true when there is one to ask. */
static bool obj_next(struct obj_fetch *of, int err)
{
	if ((err != -EBADMSG && err != -EUCLEAN) || of->from + 1 >= cfs_store_count(of->st))
		return false;
	cfs_warn("object from %s: %s; asking %s",
		 cfs_store_location(cfs_store_member(of->st, of->from)), cfs_strerror(err),
		 cfs_store_location(cfs_store_member(of->st, of->from + 1)));
	free(of->obj);
	of->obj = NULL;
	of->from++;
	return true;
}

int cfs_image_obj_fetch(struct obj_fetch *of, const cfs_digest *d, int64_t *raw_size)
{
	int ret;

	do {
		ret = cfs_store_get_from(of->st, d, &of->from, &of->obj, &of->objlen);
		if (ret < 0)
			return ret;
		*raw_size = cfs_obj_raw_size(of->obj, of->objlen);
		if (*raw_size >= 0 && (*raw_size == 0 || (uint64_t)*raw_size > of->max))
			*raw_size = -EUCLEAN;
		ret = *raw_size < 0 ? (int)*raw_size : 0;
	} while (ret < 0 && obj_next(of, ret));
	return ret;
}

/* Decodes the fetched object into dst (raw_size bytes), verified against d. */
int cfs_image_obj_decode_into(struct obj_fetch *of, const cfs_digest *d, uint8_t *dst,
			      uint64_t raw_size)
{
	int64_t size;
	ssize_t n;
	int ret;

	for (;;) {
		if (!of->obj) {
			ret = cfs_image_obj_fetch(of, d, &size);
			if (ret < 0)
				return ret;
			if ((uint64_t)size != raw_size) {
				if (obj_next(of, -EUCLEAN))
					continue;
				return -EUCLEAN;
			}
		}
		n = cfs_obj_decode(dst, (size_t)raw_size, of->obj, of->objlen, d);
		if (n >= 0 && (uint64_t)n != raw_size)
			n = -EUCLEAN;
		if (n >= 0)
			return 0;
		if (!obj_next(of, (int)n))
			return (int)n;
	}
}

/* cfs_cache_load_fn for an object fetched whole. */
static int obj_decode(void *ctx, const cfs_digest *d, uint32_t raw_size, uint8_t *dst)
{
	return cfs_image_obj_decode_into(ctx, d, dst, raw_size);
}

/* A whole object (an index, an image config), verified against d, into a
 * malloc'd *out of *out_len bytes.  Such objects are content-addressed
 * like chunks, so they go through the chunk cache: a node that mounted the
 * image before finds them there instead of fetching and decoding them
 * again.  One too large for a cache entry is decoded straight into its
 * buffer.  size: the decompressed size when the caller knows it, else 0. */
static int image_load_obj(struct cfs_store *st, struct cfs_cache *cache, const cfs_digest *d,
			  uint64_t max, uint64_t size, uint8_t **out, size_t *out_len)
{
	struct obj_fetch of = { .st = st, .max = max };
	struct cfs_buf *b = NULL;
	uint8_t *raw = NULL;
	int64_t raw_size = (int64_t)size;
	int ret;

	if (!raw_size)
		raw_size = cfs_cache_size(cache, d);
	if (raw_size <= 0 || raw_size > CFS_CHUNK_MAX_SIZE) {
		ret = cfs_image_obj_fetch(&of, d, &raw_size);
		if (ret < 0)
			goto out;
		if (size && (uint64_t)raw_size != size) {
			ret = -EUCLEAN;
			goto out;
		}
	}
	if ((uint64_t)raw_size > max) {
		ret = -EUCLEAN;
		goto out;
	}
	raw = malloc((size_t)raw_size);
	if (!raw) {
		ret = -ENOMEM;
		goto out;
	}
	ret = 1;
	if (raw_size <= CFS_CHUNK_MAX_SIZE) {
		ret = cfs_cache_get(cache, d, (uint32_t)raw_size, obj_decode, &of, &b);
		if (ret == 0)
			ret = cfs_buf_read(b, raw, (size_t)raw_size, 0);
		if (ret == -ESTALE) {
			/* The cache file was cut short under us: drop it, go to the store. */
			cfs_cache_invalidate(cache, b);
			ret = 1;
		}
	}
	if (ret == 1)
		ret = cfs_image_obj_decode_into(&of, d, raw, (uint64_t)raw_size);
	if (ret < 0)
		goto out;
	*out = raw;
	*out_len = (size_t)raw_size;
	raw = NULL;
out:
	cfs_buf_unref(b);
	free(raw);
	free(of.obj);
	return ret;
}

/* The index, verified against ref and validated. */
static int image_load_index(struct cfs_store *st, struct cfs_cache *cache, const cfs_digest *ref,
			    struct cfs_index **out)
{
	uint8_t *raw;
	size_t len;
	int ret;

	ret = image_load_obj(st, cache, ref, CFS_INDEX_MAX_SIZE, 0, &raw, &len);
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
	ret = image_load_obj(img->st, img->cache, &d, CFS_CONFIG_MAX_SIZE, size, &raw, len);
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

static unsigned timeout_slot(const cfs_digest *d)
{
	/* The digest is uniform: its first bytes are as good as a hash. */
	return (unsigned)(d->b[0] | d->b[1] << 8) % TIMEOUT_SLOTS;
}

/* True when d's fetch timed out less than TIMEOUT_MEMORY_NS ago. */
static bool timeout_recent(struct cfs_image *img, const cfs_digest *d)
{
	unsigned i = timeout_slot(d);
	bool hit;

	pthread_mutex_lock(&img->timeout_lock);
	hit = img->timed_out[i].until_ns > cfs_now_ns() &&
	      !memcmp(&img->timed_out[i].d, d, sizeof(*d));
	pthread_mutex_unlock(&img->timeout_lock);
	return hit;
}

static void timeout_note(struct cfs_image *img, const cfs_digest *d)
{
	unsigned i = timeout_slot(d);

	pthread_mutex_lock(&img->timeout_lock);
	img->timed_out[i].d = *d;
	img->timed_out[i].until_ns = cfs_now_ns() + TIMEOUT_MEMORY_NS;
	pthread_mutex_unlock(&img->timeout_lock);
}

/* cfs_cache_load_fn: fetch chunk d from the store and decode it into dst,
 * verified.  Runs once per chunk however many readers want it. */
int cfs_image_load_chunk(void *ctx, const cfs_digest *d, uint32_t raw_size, uint8_t *dst)
{
	struct cfs_image *img = ctx;
	char ref[CFS_REF_STRLEN];
	size_t from = 0, members = cfs_store_count(img->st);
	int ret = -EIO;

	if (timeout_recent(img, d))
		return -ETIMEDOUT;
	/* A corrupt copy is fetched again: from the next member of a store
	 * list (a lying cache in front of the origin), else from the same. */
	for (int attempt = 1; attempt <= CHUNK_FETCH_TRIES + (int)members - 1; attempt++) {
		void *obj;
		size_t objlen;
		ssize_t n;

		ret = cfs_store_get_from(img->st, d, &from, &obj, &objlen);
		if (ret < 0) {
			if (ret == -ETIMEDOUT)
				timeout_note(img, d);
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
			cfs_store_location(cfs_store_member(img->st, from)),
			attempt < CHUNK_FETCH_TRIES + (int)members - 1 ? "; fetching it again" : "");
		if (from + 1 < members)
			from++;
	}
	return ret;
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
	out->chunk_bad = stat_load(&img->chunk_bad);
	out->prefetch_queued = stat_load(&img->prefetch_queued);
	out->prefetch_done = stat_load(&img->prefetch_done);
}
