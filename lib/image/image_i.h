/* SPDX-License-Identifier: MIT */
/* An opened image's insides, shared by image.c (opening, objects, chunk
 * loads and reads), readahead.c (the pool that fetches ahead of readers),
 * predict.c (what a start-up will read next, from the tree alone) and
 * prefetch.c (the list and the stream fetched at mount, through that
 * pool). */
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

/* The pool's queues, served in this order: what a reader that just
 * started on a file or a directory is about to want (its neighbours, the
 * rest of a small file), then what a reader is known or seen to go on to
 * (sequential readahead, willneed, a big file whole, the prefetch list),
 * then the stream that fills the rest of the link. */
enum ra_level { RA_NEAR = 0, RA_AHEAD, RA_STREAM, RA_LEVELS };

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

struct ra_ring {
	struct ra_item *q;    /* RA_QUEUE items */
	size_t head, count;
};

/* Predictions from the tree (predict.c), built when prefetch starts.  The
 * packer numbers inodes depth first, so a directory's subtree is the
 * inode range [dir, subtree_end[dir]]; an image that does not (an old or
 * a hostile one) only gets worse guesses, never wrong bytes. */
struct cfs_predict {
	uint64_t inodes, chunks;
	uint32_t *parent;      /* [ino - 1]: the directory first naming it; 0: none */
	uint32_t *subtree_end; /* [ino - 1]: the last inode of its subtree */
	_Atomic uint64_t *touched; /* bit per inode: files read, dirs whose files queued */
	_Atomic uint64_t *packages; /* bit per inode: packages whose subpackages queued */
	_Atomic uint64_t *queued;  /* bit per chunk: queued by a hint or the stream */
	_Atomic uint32_t focus;    /* the directory of the latest first read; 0: none */
};

struct ra_pool {
	pthread_mutex_t lock;
	pthread_cond_t wake;
	pthread_cond_t room;  /* the prefetch feeder waits here */
	struct ra_file files[RA_SLOTS];
	struct ra_ring rings[RA_LEVELS];
	pthread_t *threads;
	unsigned nthreads;
	unsigned max_chunks;
	unsigned busy;        /* workers fetching */
	unsigned idle;        /* workers waiting on wake */
	unsigned unwoken;     /* items pushed since the last cfs_image_ra_wake */
	bool stop;

	/* Prefetch at mount (prefetch.c): one feeder thread. */
	pthread_t pf_thread;
	bool pf_running;
	enum cfs_prefetch_mode pf_mode;
	uint64_t pf_stream_budget; /* bytes the stream may fetch; UINT64_MAX: all */
	uint64_t pf_inflight; /* bytes of prefetch items queued or being fetched */
	uint64_t pf_budget;   /* at most this many for the list */
	uint64_t pf_stream_max; /* and for the stream: a quarter of the threads */
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
	_Atomic uint64_t demand_fetches;
	_Atomic uint64_t chunk_bad;
	_Atomic uint64_t ra_chunks;
	_Atomic uint64_t ra_dropped;
	_Atomic uint64_t prefetch_queued;
	_Atomic uint64_t prefetch_done;
	_Atomic uint64_t hint_chunks;
	_Atomic uint64_t elf_hint_chunks;
	_Atomic uint64_t stream_chunks;
	_Atomic uint64_t stream_bytes;
	atomic_bool prefetch_warned;

	/* Chunks whose last fetch timed out, direct-mapped by digest. */
	pthread_mutex_t timeout_lock;
	struct {
		cfs_digest d;
		uint64_t until_ns;  /* 0: free */
	} timed_out[TIMEOUT_SLOTS];

	struct ra_pool *ra; /* NULL: no readahead */

	/* predict.c's guesses: on (release, after pred is built) with any
	 * prefetch but none. */
	struct cfs_predict pred;
	atomic_bool hints;

	/* stage.c: the stream's objects as stored, until read; -1: none. */
	int stage_fd;
	_Atomic uint64_t stage_bytes;
	_Atomic uint64_t stage_hits;
	_Atomic uint64_t stage_bad;
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

/* Queues chunk on the pool at level; false when that queue is full.  With
 * ra->lock held. */
bool cfs_image_ra_push(struct ra_pool *ra, enum ra_level level, uint32_t chunk, bool prefetch);
/* Chunks queued on the pool or being fetched by it. */
uint64_t cfs_image_ra_pending(struct cfs_image *img);
/* Whether level's queue is full; with ra->lock held. */
bool cfs_image_ra_full(const struct ra_pool *ra, enum ra_level level);
/* Wakes one idle worker per item pushed since the last call; with
 * ra->lock held, after pushing. */
void cfs_image_ra_wake(struct ra_pool *ra);

/* ---- stage.c ---- */

/* Fetches chunk into the stage as stored, unverified (not when the cache
 * has it): 0 or the store's error. */
int cfs_image_stage_fetch(struct cfs_image *img, uint32_t chunk);
/* Decodes chunk d from its staged copy into dst, verified, and removes the
 * copy: 0, -ENOENT when none is staged, else the copy was bad (dropped:
 * fetch it from the store). */
int cfs_image_stage_load(struct cfs_image *img, const cfs_digest *d, uint32_t raw_size,
			 uint8_t *dst);
void cfs_image_stage_close(struct cfs_image *img);

/* ---- predict.c ---- */

/* Builds img->pred for img's tree: 0 or -ENOMEM. */
int cfs_predict_init(struct cfs_image *img, struct cfs_predict *p);
void cfs_predict_free(struct cfs_predict *p);

/* A read at off of the file whose inode is in is about to be served: the
 * first one of that file queues the rest of it (bounded) and, the first
 * time in its directory, the directory's small files, and makes that
 * directory the stream's focus.  Cheap after the first: one bit test. */
void cfs_predict_touch(struct cfs_image *img, const struct cfs_inode *in, uint64_t off);

/* Atomically sets bit i of map; returns whether it was set before. */
bool cfs_predict_bit_set(_Atomic uint64_t *map, uint64_t i);
bool cfs_predict_bit_test(_Atomic uint64_t *map, uint64_t i);

/* Logs a prefetch failure (what: "list", "chunk" or "all"; chunk
 * CFS_CHUNK_NONE when none) the first time only: prefetch never fails a
 * read, and one cause (a store down) makes many. */
void cfs_image_prefetch_error(struct cfs_image *img, const char *what, uint32_t chunk, int err);

#endif /* CFS_IMAGE_I_H */
