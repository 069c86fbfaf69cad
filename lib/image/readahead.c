/* SPDX-License-Identifier: MIT */
/*
 * Readahead for an opened image (image.h): a pool of threads that fetch
 * chunks into the cache ahead of the readers that will want them.  Reads
 * feed a per-file sequential detector (direct-mapped by ino), whose window
 * doubles while a file is read forward and drops on a jump; the loader
 * names what it reads next itself (cfs_image_willneed), and the first read
 * of a file or in a directory queues what predict.c expects next.  The
 * pool serves three queues, nearest need first (image_i.h, ra_level), and
 * its fetches are in the fetcher's background class, so readers waiting
 * on the store go before all of them.  Prefetch at mount (prefetch.c)
 * queues on the same pool, under the same lock, within a budget of its
 * own.
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
#include "util.h"

/* Reads that land this far around the last one still count as sequential:
 * the kernel's readahead and FUSE's worker threads deliver the requests of
 * one sequential reader slightly out of order. */
#define RA_SLACK (2ull << 20)
/* Prefetch keeps at most this many chunks per fetch thread queued or in
 * flight: every thread busy, one more each waiting, and the queue short
 * enough that a sequential reader's readahead, queued behind it, is not
 * held up for long. */
#define PREFETCH_PER_THREAD 2

/* Prefetch is only ever an optimisation: its errors never fail a read and
 * are logged once per image, since one cause (a store down) makes many. */
void cfs_image_prefetch_error(struct cfs_image *img, const char *what, uint32_t chunk, int err)
{
	if (atomic_exchange(&img->prefetch_warned, true))
		return;
	if (chunk == CFS_CHUNK_NONE)
		cfs_warn("prefetch: %s: %s; reads are not affected, further prefetch errors "
			 "not logged", what, cfs_strerror(err));
	else
		cfs_warn("prefetch: %s %u: %s; reads are not affected, further prefetch errors "
			 "not logged", what, chunk, cfs_strerror(err));
}

/* The next item, nearest level first; with ra->lock held and an item
 * queued. */
static struct ra_item ra_pop(struct ra_pool *ra, enum ra_level *level)
{
	struct ra_item it = { CFS_CHUNK_NONE, false };

	for (unsigned l = 0; l < RA_LEVELS; l++) {
		struct ra_ring *r = &ra->rings[l];

		if (!r->count)
			continue;
		it = r->q[r->head];
		r->head = (r->head + 1) % RA_QUEUE;
		r->count--;
		*level = (enum ra_level)l;
		break;
	}
	return it;
}

/* Items queued, all levels; with ra->lock held. */
static size_t ra_queued(const struct ra_pool *ra)
{
	size_t n = 0;

	for (unsigned l = 0; l < RA_LEVELS; l++)
		n += ra->rings[l].count;
	return n;
}

static void *ra_worker(void *arg)
{
	struct cfs_image *img = arg;
	struct ra_pool *ra = img->ra;

	/* Everything this pool fetches is ahead of need: readers waiting on
	 * the store go first; and it writes its own cache entries. */
	cfs_fetch_thread_background(true);
	cfs_cache_thread_write_sync(true);
	pthread_mutex_lock(&ra->lock);
	for (;;) {
		struct cfs_chunk c = { .raw_size = 0 };
		enum ra_level level = RA_NEAR;
		struct cfs_buf *b = NULL;
		struct ra_item it;
		int ret;

		while (!ra_queued(ra) && !ra->stop) {
			ra->idle++;
			pthread_cond_wait(&ra->wake, &ra->lock);
			ra->idle--;
		}
		if (ra->stop)
			break;
		it = ra_pop(ra, &level);
		ra->busy++;
		pthread_mutex_unlock(&ra->lock);

		/* Into the cache and straight out again: the reader that wanted
		 * it will find it there, or wait for this very fetch.  The
		 * stream's, with a stage, only into the stage (stage.c). */
		ret = cfs_index_chunk(img->idx, it.chunk, &c);
		if (ret == 0 && level == RA_STREAM && img->stage_fd >= 0) {
			ret = cfs_image_stage_fetch(img, it.chunk);
		} else if (ret == 0) {
			ret = cfs_cache_get(img->cache, &c.digest, c.raw_size, cfs_image_load_chunk, img, &b);
		}
		if (ret == 0 && b) {
			/* A cache file: start bringing it into the page cache. */
			cfs_buf_willneed(b);
			cfs_buf_unref(b);
		}
		if (it.prefetch) {
			if (ret == 0)
				stat_add(&img->prefetch_done, 1);
			else
				cfs_image_prefetch_error(img, level == RA_STREAM ? "stream chunk" : "chunk",
							 it.chunk, ret);
		}
		pthread_mutex_lock(&ra->lock);
		ra->busy--;
		if (it.prefetch)
			ra->pf_inflight -= c.raw_size;
		if (ra->pf_running)
			pthread_cond_broadcast(&ra->room);
	}
	pthread_mutex_unlock(&ra->lock);
	return NULL;
}

uint64_t cfs_image_ra_pending(struct cfs_image *img)
{
	struct ra_pool *ra = img->ra;
	uint64_t n;

	if (!ra)
		return 0;
	pthread_mutex_lock(&ra->lock);
	n = ra->busy + ra_queued(ra);
	pthread_mutex_unlock(&ra->lock);
	return n;
}

bool cfs_image_ra_full(const struct ra_pool *ra, enum ra_level level)
{
	return ra->rings[level].count == RA_QUEUE;
}

bool cfs_image_ra_push(struct ra_pool *ra, enum ra_level level, uint32_t chunk, bool prefetch)
{
	struct ra_ring *r = &ra->rings[level];

	if (r->count == RA_QUEUE)
		return false;
	r->q[(r->head + r->count) % RA_QUEUE] = (struct ra_item){ chunk, prefetch };
	r->count++;
	ra->unwoken++;
	return true;
}

/* One worker per new item, not the whole pool: on this VM's two cores a
 * broadcast to 32 threads for every read's guesses cost the daemon more
 * CPU than decompressing and verifying what it served (they all woke,
 * fought for the lock and went back to sleep).  A worker takes the next
 * item before it waits again, so waking fewer never strands one. */
void cfs_image_ra_wake(struct ra_pool *ra)
{
	unsigned n = CFS_MIN(ra->unwoken, ra->idle);

	ra->unwoken = 0;
	if (n == ra->idle && n) {
		pthread_cond_broadcast(&ra->wake);
		return;
	}
	while (n--)
		pthread_cond_signal(&ra->wake);
}

/* Queues the chunks holding [from, to) of a file; returns where it got to
 * (short of to when the queue is full).  Called with ra->lock held. */
static uint64_t ra_queue(struct cfs_image *img, const struct cfs_inode *in, uint64_t from,
			 uint64_t to)
{
	struct ra_pool *ra = img->ra;
	struct cfs_extent e;
	uint32_t i, last = CFS_CHUNK_NONE;
	uint64_t pos = from;

	if (cfs_index_file_extent_find(img->idx, in, from, &i) != 0)
		return to;
	while (pos < to && cfs_index_file_extent(img->idx, in, i++, &e) == 1) {
		if (e.chunk != CFS_CHUNK_NONE && e.chunk != last) {
			if (!cfs_image_ra_push(ra, RA_AHEAD, e.chunk, false)) {
				stat_add(&img->ra_dropped, 1);
				return pos;
			}
			stat_add(&img->ra_chunks, 1);
			last = e.chunk;
		}
		pos = e.file_off + e.len;
	}
	return CFS_MAX(pos, to);
}

void cfs_image_ra_note(struct cfs_image *img, const struct cfs_inode *in, uint64_t off,
		       uint64_t n)
{
	struct ra_pool *ra = img->ra;
	uint64_t ino = in->ino, end = off + n, want;
	struct ra_file *f = &ra->files[ino % RA_SLOTS];
	struct cfs_index_info info;

	cfs_index_info(img->idx, &info);

	pthread_mutex_lock(&ra->lock);
	if (f->ino != ino) {
		/* A first read from the start is the commonest sequential one. */
		*f = (struct ra_file){ .ino = ino, .next = end, .ahead = end, .window = off ? 0 : 1 };
	} else if (off + RA_SLACK >= f->next && off <= f->next + RA_SLACK) {
		/* Only a read that moves forward grows the window; one that
		 * arrived late, behind another, neither grows nor breaks it. */
		if (end > f->next) {
			f->window = CFS_MIN(f->window ? f->window * 2 : 2, ra->max_chunks);
			f->next = end;
		}
	} else {
		f->window = 0;
		f->next = f->ahead = end;
	}
	if (f->window) {
		want = CFS_MIN(in->size, f->next + (uint64_t)f->window * info.chunk_size);
		if (f->ahead < f->next)
			f->ahead = f->next;
		if (f->ahead < want)
			f->ahead = ra_queue(img, in, f->ahead, want);
	}
	cfs_image_ra_wake(ra); /* nothing, if nothing was pushed */
	pthread_mutex_unlock(&ra->lock);
}

static void ra_free(struct ra_pool *ra)
{
	for (unsigned l = 0; l < RA_LEVELS; l++)
		free(ra->rings[l].q);
	free(ra->threads);
	free(ra);
}

void cfs_image_ra_stop(struct cfs_image *img)
{
	struct ra_pool *ra = img->ra;

	if (!ra)
		return;
	pthread_mutex_lock(&ra->lock);
	ra->stop = true;
	pthread_cond_broadcast(&ra->wake);
	pthread_cond_broadcast(&ra->room);
	pthread_mutex_unlock(&ra->lock);
	if (ra->pf_running)
		pthread_join(ra->pf_thread, NULL);
	for (unsigned t = 0; t < ra->nthreads; t++)
		pthread_join(ra->threads[t], NULL);
	img->ra = NULL;
	pthread_cond_destroy(&ra->room);
	pthread_cond_destroy(&ra->wake);
	pthread_mutex_destroy(&ra->lock);
	ra_free(ra);
}

int cfs_image_set_readahead(struct cfs_image *img, unsigned threads, unsigned max_chunks)
{
	struct cfs_index_info info;
	struct ra_pool *ra;
	int ret = -ENOMEM;

	cfs_image_ra_stop(img);
	if (!threads)
		return 0;
	if (threads > 256 || max_chunks < 1 || max_chunks > RA_QUEUE)
		return -EINVAL;
	ra = calloc(1, sizeof(*ra));
	if (!ra)
		return -ENOMEM;
	for (unsigned l = 0; l < RA_LEVELS; l++)
		if (!(ra->rings[l].q = calloc(RA_QUEUE, sizeof(*ra->rings[l].q))))
			goto err_free;
	ra->threads = calloc(threads, sizeof(*ra->threads));
	if (!ra->threads)
		goto err_free;
	ra->max_chunks = max_chunks;
	cfs_index_info(img->idx, &info);
	ra->pf_budget = (uint64_t)PREFETCH_PER_THREAD * threads * info.chunk_size;
	/* A quarter of the threads for the stream: with three quarters it
	 * started pandas no faster (10% slower, bench/coldstart-remote.sh,
	 * interleaved runs) and fetched 450 MB instead of 260-300, since on
	 * two cores its receiving competes with the guesses and the reader
	 * that the other threads serve. */
	ra->pf_stream_max = (uint64_t)CFS_MAX(threads / 4, 1u) * info.chunk_size;
	pthread_mutex_init(&ra->lock, NULL);
	pthread_cond_init(&ra->wake, NULL);
	pthread_cond_init(&ra->room, NULL);
	img->ra = ra;
	for (; ra->nthreads < threads; ra->nthreads++) {
		ret = -pthread_create(&ra->threads[ra->nthreads], NULL, ra_worker, img);
		if (ret < 0) {
			cfs_image_ra_stop(img);
			return ret;
		}
	}
	return 0;

err_free:
	ra_free(ra);
	return ret;
}

int64_t cfs_image_willneed(struct cfs_image *img, uint64_t ino, uint64_t off, uint64_t len)
{
	struct ra_pool *ra = img->ra;
	struct cfs_inode in;
	uint64_t end, got;

	if (!ra || cfs_index_inode(img->idx, ino, &in) < 0 || !S_ISREG(in.mode))
		return -EINVAL;
	if (off >= in.size || !len)
		return 0;
	end = len > in.size - off ? in.size : off + len;
	pthread_mutex_lock(&ra->lock);
	got = ra_queue(img, &in, off, end);
	cfs_image_ra_wake(ra);
	pthread_mutex_unlock(&ra->lock);
	return (int64_t)(CFS_MIN(got, end) - off);
}
