/* SPDX-License-Identifier: MIT */
/* An opened image's insides, shared by image.c (opening, objects, chunk
 * loads and reads), readahead.c (the pool that fetches ahead of readers)
 * and prefetch.c (the list fetched at mount, through that pool). */
#ifndef CFS_IMAGE_I_H
#define CFS_IMAGE_I_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "digest.h"
#include "image.h"
#include "index.h"

/* Chunks remembered as timed out (image.c), direct-mapped by digest. */
#define TIMEOUT_SLOTS 64

/* Files whose sequential reads are tracked at once (direct-mapped by ino):
 * a collision only costs a window restart. */
#define RA_SLOTS 256
#define RA_QUEUE 1024

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

	/* Prefetch at mount (prefetch.c): one feeder thread. */
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
	struct cfs_learned *learned; /* learned.c: borrowed, or NULL */
};

static inline void stat_add(_Atomic uint64_t *v, uint64_t n)
{
	atomic_fetch_add_explicit(v, n, memory_order_relaxed);
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

/* ---- image_load.c ---- */

/* Fetches the object d names for of (from of->from on, when of->st is a
 * store list) and checks its decompressed size, into *raw_size, against
 * of->max: 0, -EUCLEAN or the store's error. */
int cfs_image_obj_fetch(struct obj_fetch *of, const cfs_digest *d, int64_t *raw_size);

/* Decodes the fetched object (fetching it first if of->obj is NULL) into
 * dst, raw_size bytes, verified against d; a copy found corrupt is asked of
 * the next member of a store list.  0 or -errno. */
int cfs_image_obj_decode_into(struct obj_fetch *of, const cfs_digest *d, uint8_t *dst,
			      uint64_t raw_size);

/* cfs_cache_load_fn (ctx: the image): fetches chunk d and decodes it into
 * dst, verified. */
int cfs_image_load_chunk(void *ctx, const cfs_digest *d, uint32_t raw_size, uint8_t *dst);

/* A whole object (an index, an image config), verified against d, into a
 * malloc'd *out of *out_len bytes, through the chunk cache when it fits a
 * cache entry.  size: its decompressed size when the caller knows it, else
 * 0; max: the largest accepted.  0 or -errno. */
int cfs_image_load_obj(struct cfs_store *st, struct cfs_cache *cache, const cfs_digest *d,
		       uint64_t max, uint64_t size, uint8_t **out, size_t *out_len);

/* ---- readahead.c ---- */

/* Feeds a read of n > 0 bytes at off of the file whose inode is in to the
 * sequential detector. */
void cfs_image_ra_note(struct cfs_image *img, const struct cfs_inode *in, uint64_t off,
		       uint64_t n);

/* Stops the pool, the prefetch thread with it, and frees it (none: no-op). */
void cfs_image_ra_stop(struct cfs_image *img);

/* Queues chunk on the pool, which must have room; with ra->lock held. */
void cfs_image_ra_push(struct ra_pool *ra, uint32_t chunk, bool prefetch);

/* Logs a prefetch failure (what: "list", "chunk" or "all"; chunk
 * CFS_CHUNK_NONE when none) the first time only: prefetch never fails a
 * read, and one cause (a store down) makes many. */
void cfs_image_prefetch_error(struct cfs_image *img, const char *what, uint32_t chunk, int err);

#endif /* CFS_IMAGE_I_H */
