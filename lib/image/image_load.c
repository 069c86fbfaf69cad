/* SPDX-License-Identifier: MIT */
/*
 * Loading what an image reads from its store: chunks and whole objects
 * (the index, the config, the prefetch list), each verified against its
 * digest, with a corrupt copy fetched again from the next member of a
 * store list.  Below the reads (image.c), readahead (readahead.c) and
 * prefetch (prefetch.c), which all fetch through here and never call one
 * another back.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "codec.h"
#include "fetch.h"
#include "format.h"
#include "image_i.h"
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

	/* The stream may have fetched it already (stage.c): decoded and
	 * verified here like a reply; a bad copy is fetched again. */
	if (cfs_image_stage_load(img, d, raw_size, dst) == 0)
		return 0;
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
		if (!cfs_fetch_thread_is_background())
			stat_add(&img->demand_fetches, 1);

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

/* A whole object (an index, an image config), verified against d, into a
 * malloc'd *out of *out_len bytes.  Such objects are content-addressed
 * like chunks, so they go through the chunk cache: a node that mounted the
 * image before finds them there instead of fetching and decoding them
 * again.  One too large for a cache entry is decoded straight into its
 * buffer.  size: the decompressed size when the caller knows it, else 0. */
int cfs_image_load_obj(struct cfs_store *st, struct cfs_cache *cache, const cfs_digest *d,
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
