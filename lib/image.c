/* SPDX-License-Identifier: MIT */
/*
 * An opened image: the validated index plus reads of file data that fetch
 * only the chunks they touch, through the chunk cache, each verified.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cache.h"
#include "codec.h"
#include "fetch.h"
#include "format.h"
#include "image.h"
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
#define TIMEOUT_SLOTS 64

/* Files whose sequential reads are tracked at once (direct-mapped by ino):
 * a collision only costs a window restart. */
#define RA_SLOTS 256
#define RA_QUEUE 1024
/* Reads that land this far around the last one still count as sequential:
 * the kernel's readahead and FUSE's worker threads deliver the requests of
 * one sequential reader slightly out of order. */
#define RA_SLACK (2ull << 20)
/* Prefetch keeps at most this many chunks per fetch thread queued or in
 * flight: every thread busy, one more each waiting, and the queue short
 * enough that a sequential reader's readahead, queued behind it, is not
 * held up for long. */
#define PREFETCH_PER_THREAD 2

struct ra_file {
	uint64_t ino;
	uint64_t next;   /* end of the furthest read */
	uint64_t ahead;  /* readahead queued up to here */
	unsigned window; /* chunks; 0: not sequential */
};

struct ra_item {
	uint32_t chunk;
	bool prefetch;   /* counts against the prefetch budget */
};

struct ra_pool {
	pthread_mutex_t lock;
	pthread_cond_t wake;
	pthread_cond_t room;  /* the prefetch feeder waits here */
	struct ra_file files[RA_SLOTS];
	struct ra_item *q;    /* ring */
	size_t qhead, qcount;
	pthread_t *threads;
	unsigned nthreads;
	unsigned max_chunks;
	bool stop;

	/* Prefetch at mount: one feeder thread. */
	pthread_t pf_thread;
	bool pf_running;
	enum cfs_prefetch_mode pf_mode;
	uint64_t pf_inflight; /* bytes of prefetch items queued or being fetched */
	uint64_t pf_budget;   /* at most this many */
};

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
	_Atomic uint64_t ra_chunks;
	_Atomic uint64_t ra_dropped;
	_Atomic uint64_t prefetch_queued;
	_Atomic uint64_t prefetch_done;
	atomic_bool prefetch_warned;

	/* Chunks whose last fetch timed out, direct-mapped by digest. */
	pthread_mutex_t timeout_lock;
	struct {
		cfs_digest d;
		uint64_t until_ns;  /* 0: free */
	} timed_out[TIMEOUT_SLOTS];

	struct ra_pool *ra; /* NULL: no readahead */
};

static void stat_add(_Atomic uint64_t *v, uint64_t n)
{
	atomic_fetch_add_explicit(v, n, memory_order_relaxed);
}

static uint64_t stat_load(_Atomic uint64_t *v)
{
	return atomic_load_explicit(v, memory_order_relaxed);
}

/* An object (an index, an image config) as fetched, for obj_decode();
 * obj NULL: fetch it. */
struct obj_fetch {
	struct cfs_store *st;
	uint64_t max;   /* the largest decompressed size accepted */
	void *obj;
	size_t objlen;
	size_t from;    /* the member of a store list that gave obj */
};

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

static int obj_fetch(struct obj_fetch *of, const cfs_digest *d, int64_t *raw_size)
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
static int obj_decode_into(struct obj_fetch *of, const cfs_digest *d, uint8_t *dst,
			   uint64_t raw_size)
{
	int64_t size;
	ssize_t n;
	int ret;

	for (;;) {
		if (!of->obj) {
			ret = obj_fetch(of, d, &size);
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
	return obj_decode_into(ctx, d, dst, raw_size);
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
		ret = obj_fetch(&of, d, &raw_size);
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
		ret = obj_decode_into(&of, d, raw, (uint64_t)raw_size);
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

static void ra_stop(struct cfs_image *img);

void cfs_image_free(struct cfs_image *img)
{
	if (!img)
		return;
	ra_stop(img);
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
static int image_load_chunk(void *ctx, const cfs_digest *d, uint32_t raw_size, uint8_t *dst)
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
	ret = cfs_cache_get(img->cache, &c.digest, c.raw_size, image_load_chunk, img, &b);
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
 * once. */
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
			return ret == -ESTALE ? -EIO : ret;
	}
}

/* Called for each piece of a read, in file order: n bytes at coff of chunk
 * ci (CFS_CHUNK_NONE: a hole), landing at rel bytes into the read. */
typedef int (*image_piece_fn)(struct cfs_image *img, void *ctx, uint32_t ci, uint64_t coff,
			      size_t n, uint64_t rel);

/* Walks the extents that hold [off, off + len) of file ino.  Returns the
 * bytes covered (short only at end of file) or the first error. */
static ssize_t image_walk(struct cfs_image *img, uint64_t ino, uint64_t off, size_t len,
			  image_piece_fn fn, void *ctx)
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

static ssize_t image_read(struct cfs_image *img, uint64_t ino, uint8_t *buf, size_t len,
			  uint64_t off)
{
	return image_walk(img, ino, off, len, read_piece, buf);
}

static void ra_note(struct cfs_image *img, uint64_t ino, uint64_t off, uint64_t n);

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

static ssize_t image_map(struct cfs_image *img, uint64_t ino, uint64_t off, size_t len,
			 struct cfs_image_seg *segs, unsigned max, unsigned *nseg)
{
	struct map_ctx m = { segs, max, 0 };
	ssize_t n = image_walk(img, ino, off, len, map_piece, &m);

	if (n < 0) {
		cfs_image_unmap(segs, m.k);
		m.k = 0;
	}
	*nseg = m.k;
	return n;
}

/* Counts a read that returned n, and feeds the readahead's detector. */
static void read_account(struct cfs_image *img, uint64_t ino, uint64_t off, ssize_t n)
{
	stat_add(&img->reads, 1);
	if (n < 0) {
		stat_add(&img->read_errors, 1);
	} else {
		stat_add(&img->read_bytes, (uint64_t)n);
		if (img->ra && n > 0)
			ra_note(img, ino, off, (uint64_t)n);
	}
}

ssize_t cfs_image_map(struct cfs_image *img, uint64_t ino, uint64_t off, size_t len,
		      struct cfs_image_seg *segs, unsigned max, unsigned *nseg)
{
	ssize_t n;

	if (len > SSIZE_MAX)
		len = SSIZE_MAX;
	n = image_map(img, ino, off, len, segs, max, nseg);
	/* Too many pieces is not an error: the caller reads instead. */
	if (n != -E2BIG)
		read_account(img, ino, off, n);
	return n;
}

void cfs_image_unmap(struct cfs_image_seg *segs, unsigned n)
{
	for (unsigned k = 0; k < n; k++) {
		cfs_buf_unref(segs[k].buf);
		segs[k].buf = NULL;
	}
}

/* ---- readahead ---- */

/* Prefetch is only ever an optimisation: its errors never fail a read and
 * are logged once per image, since one cause (a store down) makes many. */
static void prefetch_error(struct cfs_image *img, const char *what, uint32_t chunk, int err)
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

static void *ra_worker(void *arg)
{
	struct cfs_image *img = arg;
	struct ra_pool *ra = img->ra;

	/* Everything this pool fetches is ahead of need: readers waiting on
	 * the store go first. */
	cfs_fetch_thread_background(true);
	pthread_mutex_lock(&ra->lock);
	for (;;) {
		struct cfs_chunk c = { .raw_size = 0 };
		struct cfs_buf *b;
		struct ra_item it;
		int ret;

		while (!ra->qcount && !ra->stop)
			pthread_cond_wait(&ra->wake, &ra->lock);
		if (ra->stop)
			break;
		it = ra->q[ra->qhead];
		ra->qhead = (ra->qhead + 1) % RA_QUEUE;
		ra->qcount--;
		pthread_mutex_unlock(&ra->lock);

		/* Into the cache and straight out again: the reader that wanted
		 * it will find it there, or wait for this very fetch. */
		ret = cfs_index_chunk(img->idx, it.chunk, &c);
		if (ret == 0)
			ret = cfs_cache_get(img->cache, &c.digest, c.raw_size, image_load_chunk, img, &b);
		if (ret == 0) {
			/* A cache file: start bringing it into the page cache. */
			cfs_buf_willneed(b);
			cfs_buf_unref(b);
		}
		if (it.prefetch) {
			if (ret == 0)
				stat_add(&img->prefetch_done, 1);
			else
				prefetch_error(img, "chunk", it.chunk, ret);
		}
		pthread_mutex_lock(&ra->lock);
		if (it.prefetch)
			ra->pf_inflight -= c.raw_size;
		if (ra->pf_running)
			pthread_cond_broadcast(&ra->room);
	}
	pthread_mutex_unlock(&ra->lock);
	return NULL;
}

/* Queues the chunks holding [from, to) of a file; returns where it got to
 * (short of to when the queue is full).  Called with ra->lock held. */
static uint64_t ra_queue(struct cfs_image *img, uint64_t ino, uint64_t from, uint64_t to)
{
	struct ra_pool *ra = img->ra;
	struct cfs_extent e;
	uint32_t i, last = CFS_CHUNK_NONE;
	uint64_t pos = from;

	if (cfs_index_extent_find(img->idx, ino, from, &i) != 0)
		return to;
	while (pos < to && cfs_index_extent(img->idx, ino, i++, &e) == 1) {
		if (e.chunk != CFS_CHUNK_NONE && e.chunk != last) {
			if (ra->qcount == RA_QUEUE) {
				stat_add(&img->ra_dropped, 1);
				return pos;
			}
			ra->q[(ra->qhead + ra->qcount) % RA_QUEUE] = (struct ra_item){ e.chunk, false };
			ra->qcount++;
			stat_add(&img->ra_chunks, 1);
			last = e.chunk;
		}
		pos = e.file_off + e.len;
	}
	return CFS_MAX(pos, to);
}

static void ra_note(struct cfs_image *img, uint64_t ino, uint64_t off, uint64_t n)
{
	struct ra_pool *ra = img->ra;
	struct ra_file *f = &ra->files[ino % RA_SLOTS];
	struct cfs_index_info info;
	struct cfs_inode in;
	uint64_t end = off + n, want;
	bool queued = false;

	if (cfs_index_inode(img->idx, ino, &in) < 0)
		return;
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
		want = CFS_MIN(in.size, f->next + (uint64_t)f->window * info.chunk_size);
		if (f->ahead < f->next)
			f->ahead = f->next;
		if (f->ahead < want) {
			f->ahead = ra_queue(img, ino, f->ahead, want);
			queued = true;
		}
	}
	if (queued)
		pthread_cond_broadcast(&ra->wake);
	pthread_mutex_unlock(&ra->lock);
}

static void ra_stop(struct cfs_image *img)
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
	free(ra->threads);
	free(ra->q);
	free(ra);
}

int cfs_image_set_readahead(struct cfs_image *img, unsigned threads, unsigned max_chunks)
{
	struct cfs_index_info info;
	struct ra_pool *ra;
	int ret;

	ra_stop(img);
	if (!threads)
		return 0;
	if (threads > 256 || max_chunks < 1 || max_chunks > RA_QUEUE)
		return -EINVAL;
	ra = calloc(1, sizeof(*ra));
	if (!ra)
		return -ENOMEM;
	ra->q = calloc(RA_QUEUE, sizeof(*ra->q));
	ra->threads = calloc(threads, sizeof(*ra->threads));
	if (!ra->q || !ra->threads) {
		ret = -ENOMEM;
		goto err_free;
	}
	ra->max_chunks = max_chunks;
	cfs_index_info(img->idx, &info);
	ra->pf_budget = (uint64_t)PREFETCH_PER_THREAD * threads * info.chunk_size;
	pthread_mutex_init(&ra->lock, NULL);
	pthread_cond_init(&ra->wake, NULL);
	pthread_cond_init(&ra->room, NULL);
	img->ra = ra;
	for (; ra->nthreads < threads; ra->nthreads++) {
		ret = -pthread_create(&ra->threads[ra->nthreads], NULL, ra_worker, img);
		if (ret < 0) {
			ra_stop(img);
			return ret;
		}
	}
	return 0;

err_free:
	free(ra->threads);
	free(ra->q);
	free(ra);
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
	got = ra_queue(img, ino, off, end);
	pthread_cond_broadcast(&ra->wake);
	pthread_mutex_unlock(&ra->lock);
	return (int64_t)(CFS_MIN(got, end) - off);
}

ssize_t cfs_image_read(struct cfs_image *img, uint64_t ino, void *buf, size_t len, uint64_t off)
{
	ssize_t n;

	if (len > SSIZE_MAX)
		len = SSIZE_MAX;
	n = image_read(img, ino, buf, len, off);
	read_account(img, ino, off, n);
	return n;
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

/* ---- prefetch at mount ---- */

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
	ret = obj_fetch(&of, &d, &raw_size);
	if (ret < 0)
		goto out;
	raw = malloc((size_t)raw_size + 1);
	if (!raw) {
		ret = -ENOMEM;
		goto out;
	}
	ret = obj_decode_into(&of, &d, raw, (uint64_t)raw_size);
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
		prefetch_error(img, "list", CFS_CHUNK_NONE, ret);

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
		ra->q[(ra->qhead + ra->qcount) % RA_QUEUE] = (struct ra_item){ list[i], true };
		ra->qcount++;
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
		prefetch_error(img, "all", CFS_CHUNK_NONE, -ENOMEM);
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
		ret = cfs_index_chunk(img->idx, ci, &c);
		if (ret == 0)
			ret = cfs_cache_get(img->cache, &c.digest, c.raw_size, image_load_chunk, img, &b);
		if (ret == 0) {
			cfs_buf_unref(b);
			stat_add(&img->prefetch_done, 1);
		} else {
			prefetch_error(img, "chunk", ci, ret);
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
	if (mode == CFS_PREFETCH_LIST && cfs_index_prefetch(img->idx, &d) < 0)
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
