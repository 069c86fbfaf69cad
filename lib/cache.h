/* SPDX-License-Identifier: MIT */
/*
 * Chunk cache: decoded chunk contents, by digest, in a bounded in-memory LRU
 * in front of a bounded on-disk directory.  Content-addressed, so one cache
 * directory can serve every image of a store.
 *
 * Disk entries are <dir>/<hh>/<64 hex>: a 32-byte header (magic "CFSCACH1",
 * content length, XXH3-64 of the content) and the content.  They are
 * written to a temporary file and renamed, so a crash leaves either nothing
 * or a whole entry; an entry whose checksum fails is deleted and counts as
 * a miss.  A failed disk write (ENOSPC, EIO) is logged and ignored: the
 * data is still served from memory.
 *
 * Several processes may share one directory (mounts of the same store, the
 * loader), each with its own cfs_cache, and disk_max bounds the directory
 * as a whole.  Each process keeps its own LRU of the entries it knows; after
 * writing disk_max/8 bytes it takes stock of the directory again (entries
 * it used keep its recency, the others are ordered by mtime, which disk
 * hits refresh at most once a minute) and evicts the oldest to the bound,
 * holding flock() on <dir>/.lock so that one process at a time evicts.  An
 * entry that another process evicted is a miss.  Between passes the
 * directory may exceed disk_max by what the other processes wrote since
 * their last pass (under disk_max/8 each); once writes stop, the last pass
 * leaves it within disk_max (a process that finds the lock taken leaves a
 * mark, and the holder goes round again, up to a few rounds).
 *
 * Disk writes go through io_uring when the build has liburing and the
 * kernel allows it (lib/uring.h): the thread that loaded a chunk queues
 * the write and returns, a thread of the cache lands it, and until then
 * the entry counts in disk_bytes but is not on disk yet (a concurrent
 * reader of the directory sees a miss, never a torn entry).  Otherwise,
 * or with CFS_NO_IO_URING=1 in the environment, the loading thread writes
 * synchronously.  Reads of disk entries are always a synchronous pread:
 * they are on the demand path.
 *
 * Thread-safe.
 */
#ifndef CFS_CACHE_H
#define CFS_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "digest.h"

struct cfs_cache;
struct cfs_buf;

struct cfs_cache_opts {
	const char *dir;   /* NULL: memory only */
	uint64_t disk_max; /* bytes on disk; 0 = 10 GiB */
	uint64_t mem_max;  /* bytes in memory; 0 = 256 MiB */
};

struct cfs_cache_stats {
	uint64_t mem_hits;
	uint64_t disk_hits;
	uint64_t misses;       /* loads through the callback */
	uint64_t load_errors;
	uint64_t disk_bad;     /* entries that failed their checksum */
	uint64_t disk_write_errors;
	uint64_t disk_bytes;   /* current */
	uint64_t mem_bytes;    /* current */
	uint64_t evictions;
	uint64_t rescans;      /* passes over the directory, start-up included */
	uint64_t uring;        /* 1: disk writes go through io_uring; 0: synchronous */
};

/* Creates the directory if needed and takes stock of what it holds. */
int cfs_cache_new(const struct cfs_cache_opts *opts, struct cfs_cache **out);
/* Waits for the disk writes still queued, then frees; NULL is fine. */
void cfs_cache_free(struct cfs_cache *c);

/* Fills dst with exactly raw_size verified bytes of chunk d.
 * Returns 0 or -errno. */
typedef int (*cfs_cache_load_fn)(void *ctx, const cfs_digest *d, uint32_t raw_size, uint8_t *dst);

/* Returns in *out a reference to the content of chunk d (raw_size bytes):
 * from memory, else from disk, else from load(), which runs once however
 * many threads ask for d at the same time (the others wait for it).  A
 * load error is returned to every waiter and not remembered: the next call
 * tries again.  Release the reference with cfs_buf_unref(). */
int cfs_cache_get(struct cfs_cache *c, const cfs_digest *d, uint32_t raw_size,
		  cfs_cache_load_fn load, void *ctx, struct cfs_buf **out);

const uint8_t *cfs_buf_data(const struct cfs_buf *b);
size_t cfs_buf_len(const struct cfs_buf *b);
void cfs_buf_unref(struct cfs_buf *b); /* NULL is fine */

void cfs_cache_stats_get(struct cfs_cache *c, struct cfs_cache_stats *out);

/* Waits until every disk write queued before the call is on disk or has
 * failed (and counts in the stats), then runs the pass over the directory
 * those writes asked for, if any (with io_uring, passes run in the threads
 * that write or flush, never on the ring's).  Without io_uring writes are
 * already done when cfs_cache_get() returns.  NULL is fine. */
void cfs_cache_flush(struct cfs_cache *c);

/* Takes stock of the directory now and, unless another process is at it,
 * evicts the oldest entries until disk_max holds; the cache does this by
 * itself after writing disk_max/8 bytes.  Runs in the caller's thread
 * without holding up gets, except for an in-memory merge.  Returns 0
 * (also when another thread of c is already at it: that one goes round
 * again) or -errno; a memory-only cache has nothing to do. */
int cfs_cache_rescan(struct cfs_cache *c);

#endif /* CFS_CACHE_H */
