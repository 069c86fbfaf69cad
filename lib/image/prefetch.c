/* SPDX-License-Identifier: MIT */
/*
 * Prefetch at mount (image.h, docs/FORMAT.md "Prefetch list"): one feeder
 * thread per image fetches the image's prefetch list and queues its
 * chunks, in order, on the readahead pool (readahead.c), never more bytes
 * not yet in the cache than the pool's budget, so that demand reads still
 * find fetch slots.  Then, unless told to stop at the list, it streams the
 * rest of the image within a byte budget, in the order predict.c guesses
 * from where the readers are (docs/FORMAT.md, "Prediction without a
 * profile"): many fetches in flight to fill the link, on the pool's last
 * queue, so that what a reader waits for or was just predicted to want
 * goes first, and three quarters of the pool's threads always free for
 * them.
 * Prefetch only ever saves time: its errors are logged once and never fail
 * a read.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/stat.h>

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

/* Waits until the pool takes one more prefetch item of size bytes at
 * level within max bytes in flight; false when the pool stops.  With
 * ra->lock held. */
static bool wait_room(struct ra_pool *ra, enum ra_level level, uint64_t size, uint64_t max)
{
	while (!ra->stop && (cfs_image_ra_full(ra, level) ||
			     (ra->pf_inflight && ra->pf_inflight + size > max)))
		pthread_cond_wait(&ra->room, &ra->lock);
	return !ra->stop;
}

/* The list, in order, through the pool: many fetches in flight, but never
 * more than the budget of bytes not yet in the cache.  false: stopped. */
static bool feed_list(struct cfs_image *img, const uint32_t *list, size_t n)
{
	struct ra_pool *ra = img->ra;
	uint64_t pf_bytes = 0, t0 = cfs_now_ns();
	bool stop;

	for (size_t i = 0; i < n; i++) {
		struct cfs_chunk c;

		if (cfs_index_chunk(img->idx, list[i], &c) < 0)
			continue; /* parse checked the range */
		pthread_mutex_lock(&ra->lock);
		if (!wait_room(ra, RA_AHEAD, c.raw_size, ra->pf_budget)) {
			pthread_mutex_unlock(&ra->lock);
			return false;
		}
		cfs_image_ra_push(ra, RA_AHEAD, list[i], true);
		cfs_predict_bit_set(img->pred.queued, list[i]);
		ra->pf_inflight += c.raw_size;
		pf_bytes += c.raw_size;
		stat_add(&img->prefetch_queued, 1);
		cfs_image_ra_wake(ra);
		pthread_mutex_unlock(&ra->lock);
	}
	if (!n)
		return true;
	/* Say when the list is in: what start-up waited for, if anything. */
	pthread_mutex_lock(&ra->lock);
	while (!ra->stop && ra->pf_inflight)
		pthread_cond_wait(&ra->room, &ra->lock);
	stop = ra->stop;
	pthread_mutex_unlock(&ra->lock);
	if (!stop)
		cfs_info("prefetch: list of %zu chunks (%.1f MiB) in cache after %.0f ms", n,
			 (double)pf_bytes / (1 << 20), (double)(cfs_now_ns() - t0) / 1e6);
	return !stop;
}

/* The stream's walk: the inodes it has been through, and its spending. */
struct stream {
	struct cfs_image *img;
	_Atomic uint64_t *scanned; /* bit per inode (predict.c's bitmaps) */
	uint64_t spent;      /* stored bytes queued */
	uint32_t focus;      /* the focus the walk started from */
};

enum { STREAM_ON, STREAM_REFOCUS, STREAM_DONE };

/* Queues the chunks of file in that no one queued and the cache lacks.
 * STREAM_REFOCUS when a reader moved the focus meanwhile (the file is
 * taken up again from there later), STREAM_DONE when the budget is spent
 * or the pool stops. */
static int stream_file(struct stream *s, const struct cfs_inode *in)
{
	struct cfs_image *img = s->img;
	struct ra_pool *ra = img->ra;
	struct cfs_predict *p = &img->pred;
	struct cfs_extent e;

	for (uint32_t i = 0; cfs_index_file_extent(img->idx, in, i, &e) == 1; i++) {
		struct cfs_chunk c;
		int ret = STREAM_ON;
		uint64_t cost;

		if (e.chunk == CFS_CHUNK_NONE || e.chunk >= p->chunks ||
		    cfs_predict_bit_test(p->queued, e.chunk) ||
		    cfs_index_chunk(img->idx, e.chunk, &c) < 0)
			continue;
		if (cfs_cache_size(img->cache, &c.digest) >= 0) {
			cfs_predict_bit_set(p->queued, e.chunk);
			continue;
		}
		cost = c.stored_size ? c.stored_size : c.raw_size;
		if (cost > ra->pf_stream_budget - s->spent)
			return STREAM_DONE;
		pthread_mutex_lock(&ra->lock);
		if (!wait_room(ra, RA_STREAM, c.raw_size, ra->pf_stream_max))
			ret = STREAM_DONE;
		else if (atomic_load_explicit(&p->focus, memory_order_relaxed) != s->focus)
			ret = STREAM_REFOCUS;
		else if (!cfs_predict_bit_set(p->queued, e.chunk)) {
			cfs_image_ra_push(ra, RA_STREAM, e.chunk, true);
			ra->pf_inflight += c.raw_size;
			s->spent += cost;
			stat_add(&img->prefetch_queued, 1);
			stat_add(&img->stream_chunks, 1);
			stat_add(&img->stream_bytes, cost);
			cfs_image_ra_wake(ra);
		}
		pthread_mutex_unlock(&ra->lock);
		if (ret != STREAM_ON)
			return ret;
	}
	return STREAM_ON;
}

/* Walks inodes [lo, hi] not walked before. */
static int stream_range(struct stream *s, uint64_t lo, uint64_t hi)
{
	struct cfs_image *img = s->img;

	for (uint64_t ino = lo; ino <= hi; ino++) {
		struct cfs_inode in;
		int ret;

		if (cfs_predict_bit_test(s->scanned, ino - 1))
			continue;
		if (cfs_index_inode(img->idx, ino, &in) == 0 && S_ISREG(in.mode)) {
			ret = stream_file(s, &in);
			if (ret != STREAM_ON)
				return ret;
		}
		cfs_predict_bit_set(s->scanned, ino - 1);
	}
	return STREAM_ON;
}

/* The rest of the image, nearest the readers first: the subtree of the
 * directory of the latest first read, then its parent's, up to the root,
 * then anything a malformed tree left outside it; taken up afresh from
 * wherever a reader goes next.  Each chunk at most once, cached ones
 * skipped, within the stream's byte budget. */
static void stream_thread(struct cfs_image *img)
{
	struct ra_pool *ra = img->ra;
	struct cfs_predict *p = &img->pred;
	struct stream s = { .img = img };
	uint64_t t0 = cfs_now_ns();
	int ret = STREAM_ON;

	if (!p->inodes)
		return;
	s.scanned = calloc(p->inodes / 64 + 1, sizeof(*s.scanned));
	if (!s.scanned) {
		cfs_image_prefetch_error(img, "stream", CFS_CHUNK_NONE, -ENOMEM);
		return;
	}
	do {
		uint64_t d;

		s.focus = atomic_load_explicit(&p->focus, memory_order_relaxed);
		d = s.focus ? s.focus : 1;
		for (unsigned depth = 0; depth < 4096; depth++) {
			uint64_t end = p->subtree_end[d - 1];

			ret = stream_range(&s, d, end < d ? d : end);
			if (ret != STREAM_ON || !p->parent[d - 1] || p->parent[d - 1] == d)
				break;
			d = p->parent[d - 1];
		}
		if (ret == STREAM_ON)
			ret = stream_range(&s, 1, p->inodes);
	} while (ret == STREAM_REFOCUS);
	if (!ra->stop)
		cfs_info("prefetch: stream queued %.1f MiB in %.0f ms%s", (double)s.spent / (1 << 20),
			 (double)(cfs_now_ns() - t0) / 1e6,
			 ret == STREAM_DONE && !ra->stop ? " (budget spent)" : "");
	free(s.scanned);
}

static void *prefetch_thread(void *arg)
{
	struct cfs_image *img = arg;
	struct ra_pool *ra = img->ra;
	uint32_t *list = NULL;
	size_t n = 0;
	int ret;

	ret = cfs_image_prefetch_list(img, &list, &n);
	if (ret < 0)
		cfs_image_prefetch_error(img, "list", CFS_CHUNK_NONE, ret);
	else if (n == 0 && cfs_image_learned_list(img, &list, &n) < 0)
		cfs_image_prefetch_error(img, "learned list", CFS_CHUNK_NONE, -ENOMEM);
	/* A list (the image's, or one learned from earlier runs) is the better
	 * prediction: with one, the stream, whose fetching competes with the
	 * start-up for the CPU, is left to --prefetch all. */
	if (feed_list(img, list, n) &&
	    (ra->pf_mode == CFS_PREFETCH_ALL || (ra->pf_mode == CFS_PREFETCH_STREAM && !n))) {
		cfs_fetch_thread_background(true);
		stream_thread(img);
	}
	free(list);
	return NULL;
}

int cfs_image_prefetch_start(struct cfs_image *img, enum cfs_prefetch_mode mode, uint64_t budget)
{
	struct ra_pool *ra = img->ra;
	cfs_digest d;
	int ret;

	if (mode == CFS_PREFETCH_NONE)
		return 0;
	if (mode != CFS_PREFETCH_LIST && mode != CFS_PREFETCH_STREAM && mode != CFS_PREFETCH_ALL)
		return -EINVAL;
	if (!ra)
		return -EINVAL;
	if (!img->pred.parent) {
		ret = cfs_predict_init(img, &img->pred);
		if (ret < 0)
			return ret;
	}
	atomic_store_explicit(&img->hints, true, memory_order_release);
	if (mode == CFS_PREFETCH_LIST && cfs_index_prefetch(img->idx, &d) < 0 && !img->learned)
		return 0; /* nothing to do but the hints */
	pthread_mutex_lock(&ra->lock);
	if (ra->pf_running) {
		pthread_mutex_unlock(&ra->lock);
		return -EBUSY;
	}
	ra->pf_mode = mode;
	ra->pf_stream_budget = mode == CFS_PREFETCH_ALL ? UINT64_MAX
			       : budget ? budget : CFS_PREFETCH_BUDGET_DEFAULT;
	ret = -pthread_create(&ra->pf_thread, NULL, prefetch_thread, img);
	if (ret == 0)
		ra->pf_running = true;
	pthread_mutex_unlock(&ra->lock);
	return ret;
}
