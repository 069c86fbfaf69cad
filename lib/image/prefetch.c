/* SPDX-License-Identifier: MIT */
/*
 * Prefetch at mount (image.h, docs/FORMAT.md "Prefetch list"): one feeder
 * thread per image fetches the image's prefetch list and queues its
 * chunks, in order, on the readahead pool (readahead.c), never more bytes
 * not yet in the cache than the pool's budget, so that demand reads still
 * find fetch slots; with CFS_PREFETCH_ALL it then fetches every other
 * chunk itself, one at a time.  Prefetch only ever saves time: its errors
 * are logged once and never fail a read.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

#include "cache.h"
#include "fetch.h"
#include "format.h"
#include "image_i.h"
#include "index.h"
#include "learned.h"
#include "util.h"

/* Fetches, verifies and parses the image's prefetch list.  0 with *count 0
 * when the image has none. */
int cfs_image_prefetch_list(struct cfs_image *img, uint32_t **chunks, size_t *count)
{
	struct cfs_index_info info;
	struct obj_fetch of = { .st = img->st };
	cfs_digest d;
	uint8_t *raw = NULL;
	int64_t raw_size;
	int ret;

	*chunks = NULL;
	*count = 0;
	if (cfs_index_prefetch(img->idx, &d) < 0)
		return 0;
	cfs_index_info(img->idx, &info);
	/* The list has at most one entry per chunk. */
	of.max = sizeof(struct cfs_disk_prefetch) + info.chunk_count * 4;
	ret = cfs_image_obj_fetch(&of, &d, &raw_size);
	if (ret < 0)
		goto out;
	raw = malloc((size_t)raw_size + 1);
	if (!raw) {
		ret = -ENOMEM;
		goto out;
	}
	ret = cfs_image_obj_decode_into(&of, &d, raw, (uint64_t)raw_size);
	if (ret == 0)
		ret = cfs_prefetch_parse(img->idx, raw, (size_t)raw_size, chunks, count);
out:
	free(raw);
	free(of.obj);
	return ret;
}

static void *prefetch_thread(void *arg)
{
	struct cfs_image *img = arg;
	struct ra_pool *ra = img->ra;
	struct cfs_index_info info;
	uint32_t *list = NULL;
	uint64_t *listed = NULL, pf_bytes = 0, t0 = cfs_now_ns();
	size_t n = 0;
	int ret;

	ret = cfs_image_prefetch_list(img, &list, &n);
	if (ret < 0)
		cfs_image_prefetch_error(img, "list", CFS_CHUNK_NONE, ret);
	else if (n == 0 && cfs_image_learned_list(img, &list, &n) < 0)
		cfs_image_prefetch_error(img, "learned list", CFS_CHUNK_NONE, -ENOMEM);

	/* The list, in order, through the pool: many fetches in flight, but
	 * never more than the budget of bytes not yet in the cache. */
	for (size_t i = 0; i < n; i++) {
		struct cfs_chunk c;

		if (cfs_index_chunk(img->idx, list[i], &c) < 0)
			continue; /* parse checked the range */
		pthread_mutex_lock(&ra->lock);
		while (!ra->stop && (ra->qcount == RA_QUEUE ||
				     (ra->pf_inflight && ra->pf_inflight + c.raw_size > ra->pf_budget)))
			pthread_cond_wait(&ra->room, &ra->lock);
		if (ra->stop) {
			pthread_mutex_unlock(&ra->lock);
			goto out;
		}
		cfs_image_ra_push(ra, list[i], true);
		ra->pf_inflight += c.raw_size;
		pf_bytes += c.raw_size;
		stat_add(&img->prefetch_queued, 1);
		pthread_cond_signal(&ra->wake);
		pthread_mutex_unlock(&ra->lock);
	}
	if (n) {
		/* Say when the list is in: what start-up waited for, if anything. */
		bool stop;

		pthread_mutex_lock(&ra->lock);
		while (!ra->stop && ra->pf_inflight)
			pthread_cond_wait(&ra->room, &ra->lock);
		stop = ra->stop;
		pthread_mutex_unlock(&ra->lock);
		if (!stop)
			cfs_info("prefetch: list of %zu chunks (%.1f MiB) in cache after %.0f ms", n,
			 (double)pf_bytes / (1 << 20), (double)(cfs_now_ns() - t0) / 1e6);
	}
	if (ra->pf_mode != CFS_PREFETCH_ALL)
		goto out;
	cfs_fetch_thread_background(true);

	/* Then the rest, one chunk at a time on this thread alone: at most one
	 * fetch of a demand read's bandwidth goes to it. */
	cfs_index_info(img->idx, &info);
	listed = calloc(info.chunk_count / 64 + 1, sizeof(*listed));
	if (!listed) {
		cfs_image_prefetch_error(img, "all", CFS_CHUNK_NONE, -ENOMEM);
		goto out;
	}
	for (size_t i = 0; i < n; i++)
		listed[list[i] / 64] |= 1ull << (list[i] % 64);
	for (uint32_t ci = 0; ci < info.chunk_count; ci++) {
		struct cfs_chunk c;
		struct cfs_buf *b;
		bool stop;

		if (listed[ci / 64] & (1ull << (ci % 64)))
			continue;
		pthread_mutex_lock(&ra->lock);
		stop = ra->stop;
		pthread_mutex_unlock(&ra->lock);
		if (stop)
			break;
		stat_add(&img->prefetch_queued, 1);
		(void)cfs_index_chunk(img->idx, ci, &c); /* ci < chunk_count: cannot fail */
		ret = cfs_cache_get(img->cache, &c.digest, c.raw_size, cfs_image_load_chunk, img, &b);
		if (ret == 0) {
			cfs_buf_unref(b);
			stat_add(&img->prefetch_done, 1);
		} else {
			cfs_image_prefetch_error(img, "chunk", ci, ret);
		}
	}
out:
	free(listed);
	free(list);
	return NULL;
}

int cfs_image_prefetch_start(struct cfs_image *img, enum cfs_prefetch_mode mode)
{
	struct ra_pool *ra = img->ra;
	cfs_digest d;
	int ret;

	if (mode == CFS_PREFETCH_NONE)
		return 0;
	if (mode != CFS_PREFETCH_LIST && mode != CFS_PREFETCH_ALL)
		return -EINVAL;
	if (!ra)
		return -EINVAL;
	if (mode == CFS_PREFETCH_LIST && cfs_index_prefetch(img->idx, &d) < 0 && !img->learned)
		return 0; /* nothing to do */
	pthread_mutex_lock(&ra->lock);
	if (ra->pf_running) {
		pthread_mutex_unlock(&ra->lock);
		return -EBUSY;
	}
	ra->pf_mode = mode;
	ret = -pthread_create(&ra->pf_thread, NULL, prefetch_thread, img);
	if (ret == 0)
		ra->pf_running = true;
	pthread_mutex_unlock(&ra->lock);
	return ret;
}
