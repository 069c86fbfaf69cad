/* SPDX-License-Identifier: MIT */
/*
 * Chunk cache: decoded chunk contents, by digest, in files on a bounded
 * disk directory whose pages the kernel's page cache keeps in memory.
 * Content-addressed, so one cache directory can serve every image of a
 * store.
 *
 * A get returns a handle: either an open cache file that holds the content
 * at offset 0 (cfs_buf_fd(), for zero-copy replies: splice, pread) or, for
 * a chunk not on disk (being written, a failed write, no directory), the
 * content in memory.  The page cache is the memory tier: once a chunk's
 * file is written its memory copy goes, and a bounded number of files stay
 * open for hits.  Without a directory, memory handles in an LRU bounded by
 * mem_max are all there is.
 *
 * Disk entries are <dir>/<hh>/<64 hex>: the content, page-aligned at offset
 * 0, then a 32-byte trailer (magic "CFSCACH2", content length, XXH3-64 of
 * the content).  They are written to a temporary file and renamed, so a
 * crash leaves either nothing or a whole entry; a failed disk write
 * (ENOSPC, EIO) is logged and ignored: the data is still served from
 * memory.
 *
 * Trust is decided once.  A chunk enters the cache verified (the load
 * callback checks its SHA-256).  An entry this process wrote is trusted;
 * one it finds on disk (another process's, or a previous run's) is checked
 * once against its trailer's XXH3 when first opened.  The file's identity
 * (inode, size, ctime) is remembered, and every hit compares it with an
 * fstat(): a file written to, truncated or replaced since (anything that
 * moves its ctime) is checked again before use, and dropped and loaded
 * again when it fails.  A hit never rehashes an unchanged file.  What this
 * cannot catch (docs/CACHE.md): a change that leaves ctime alone, i.e. a
 * write to the block device underneath or media corruption the disk does
 * not report.
 *
 * Several processes may share one directory (mounts of the same store, the
 * loader), each with its own cfs_cache, and disk_max bounds the directory
 * as a whole.  Each process keeps its own LRU of the entries it knows; after
 * writing disk_max/8 bytes it takes stock of the directory again (entries
 * it used keep its recency, the others are ordered by mtime, which hits
 * refresh at most once a minute) and evicts the oldest to the bound,
 * holding flock() on <dir>/.lock so that one process at a time evicts.  An
 * entry that another process evicted is a miss (a handle still open serves
 * on: the content is immutable).  Between passes the directory may exceed
 * disk_max by what the other processes wrote since their last pass (under
 * disk_max/8 each); once writes stop, the last pass leaves it within
 * disk_max (a process that finds the lock taken leaves a mark, and the
 * holder goes round again, up to a few rounds).
 *
 * A chunk is loaded once per directory, not once per process: a miss
 * locks the chunk's byte of <dir>/.fetch.lock (an OFD lock) before
 * loading, and keeps it until the entry is on disk (or its write failed).
 * Another process missing the same chunk meanwhile waits for that lock,
 * then finds the entry and serves it as a disk hit (checked like any entry
 * another process wrote).  The wait is bounded by fetch_wait_ms, after
 * which it loads the chunk itself: a hung holder delays others by that
 * much at most, and a dead one not at all (the kernel lets go of its
 * locks).  A miss pays two fcntl() calls for it; hits never lock, and
 * nothing is created or deleted per chunk (docs/CACHE.md).
 *
 * Disk writes go through io_uring when the build has liburing and the
 * kernel allows it (lib/cache/uring.h): the thread that loaded a chunk queues
 * the write and returns, a thread of the cache lands it, and until then
 * the entry counts in disk_bytes but is not on disk yet (a concurrent
 * reader of the directory sees a miss, never a torn entry).  Otherwise,
 * or with CFS_NO_IO_URING=1 in the environment, the loading thread writes
 * synchronously.
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
	uint64_t mem_max;  /* bytes of memory handles; 0 = 256 MiB */
	uint32_t max_files; /* cache files kept open for hits; 0 = from RLIMIT_NOFILE, <= 4096 */
	/* How long a miss waits for another process sharing dir that is
	 * loading the same chunk, before loading it too; 0 = 10000. */
	uint32_t fetch_wait_ms;
};

struct cfs_cache_stats {
	uint64_t mem_hits;     /* gets answered by a memory handle */
	uint64_t file_hits;    /* gets answered by a cache file already open */
	uint64_t disk_hits;    /* cache files opened */
	uint64_t misses;       /* loads through the callback */
	uint64_t load_errors;
	uint64_t disk_bad;     /* entries that failed their checks */
	uint64_t verifies;     /* entries hashed: first seen, or changed on disk */
	uint64_t stale;        /* open files found changed on disk */
	uint64_t disk_write_errors;
	uint64_t disk_bytes;   /* current */
	uint64_t mem_bytes;    /* current, memory handles */
	uint64_t files_open;   /* current, file handles */
	uint64_t evictions;
	uint64_t rescans;      /* passes over the directory, start-up included */
	uint64_t uring;        /* 1: disk writes go through io_uring; 0: synchronous */
	uint64_t shared_waits;    /* misses that waited for another process's load */
	uint64_t shared_hits;     /* of those, entries found on disk after: no load */
	uint64_t shared_timeouts; /* of those, waits given up after fetch_wait_ms */
};

/* Creates the directory if needed and takes stock of what it holds. */
int cfs_cache_new(const struct cfs_cache_opts *opts, struct cfs_cache **out);
/* Waits for the disk writes still queued, then frees; NULL is fine. */
void cfs_cache_free(struct cfs_cache *c);

/* Fills dst with exactly raw_size verified bytes of chunk d.
 * Returns 0 or -errno. */
typedef int (*cfs_cache_load_fn)(void *ctx, const cfs_digest *d, uint32_t raw_size, uint8_t *dst);

/* Returns in *out a reference to the content of chunk d (raw_size bytes):
 * a handle already held, else the disk entry, else from load(), which runs
 * once however many threads ask for d at the same time (the others wait
 * for it), and once however many processes sharing the directory do,
 * unless one waits past fetch_wait_ms.  A load error is returned to every
 * waiter and not remembered: the next call tries again.  Release the reference with cfs_buf_unref(). */
int cfs_cache_get(struct cfs_cache *c, const cfs_digest *d, uint32_t raw_size,
		  cfs_cache_load_fn load, void *ctx, struct cfs_buf **out);

/* The length of d's content if the cache holds it (a handle, or an entry
 * on disk as last listed), for an object whose size is not known
 * beforehand (an image index); else -ENOENT.  A hint: the entry may go
 * before the get that follows. */
int64_t cfs_cache_size(struct cfs_cache *c, const cfs_digest *d);

/* The content in memory, or NULL for a file handle. */
const uint8_t *cfs_buf_data(const struct cfs_buf *b);
/* The open cache file holding the content at offset 0 (the reference
 * keeps it open), or -1 for a memory handle.  Read it, never change it. */
int cfs_buf_fd(const struct cfs_buf *b);
size_t cfs_buf_len(const struct cfs_buf *b);
void cfs_buf_unref(struct cfs_buf *b); /* NULL is fine */

/* Copies n bytes at off of the content into dst, from memory or with
 * pread.  0, -EINVAL (out of range), or -ESTALE: the file came up short
 * (truncated under us): call cfs_cache_invalidate() and get it again. */
int cfs_buf_read(const struct cfs_buf *b, void *dst, size_t n, uint64_t off);

/* Starts reading a file handle's content into the page cache without
 * waiting; nothing for a memory handle. */
void cfs_buf_willneed(const struct cfs_buf *b);

/* For a handle whose file turned out short or unreadable while in use:
 * forgets the handle and deletes the disk entry, so that the next get
 * loads the chunk again.  The caller's reference stays valid. */
void cfs_cache_invalidate(struct cfs_cache *c, struct cfs_buf *b);

void cfs_cache_stats_get(struct cfs_cache *c, struct cfs_cache_stats *out);

/* Marks the calling thread as one that works ahead of need (a readahead
 * or prefetch worker): the entries its loads store are written by the
 * thread itself, before cfs_cache_get() returns, instead of through the
 * io_uring writer.  Nothing waits on such a thread, and the chunk it just
 * decoded and verified is still in its CPU's cache: writing it there costs
 * less CPU than the handoff to the ring's thread and its kernel worker,
 * which copy it cold.  Waiters in this process are woken before the write
 * either way.  Off by default; per thread, for every cache. */
void cfs_cache_thread_write_sync(bool on);

/* Waits until every disk write queued before the call is on disk or has
 * failed (and counts in the stats), then runs the pass over the directory
 * those writes asked for, if any (with io_uring, passes run in the threads
 * that write or flush, never on the ring's).  Without io_uring writes are
 * already done when cfs_cache_get() returns.  NULL is fine. */
void cfs_cache_flush(struct cfs_cache *c);

/* Runs a pass that ring writes asked for and no later write or flush ran
 * yet, without waiting for anything: call it now and then (cfs-mount does,
 * every second), or a cache whose readers went quiet stays over disk_max
 * by what the last writes added.  NULL is fine. */
void cfs_cache_tick(struct cfs_cache *c);

/* Takes stock of the directory now and, unless another process is at it,
 * evicts the oldest entries until disk_max holds; the cache does this by
 * itself after writing disk_max/8 bytes.  Runs in the caller's thread
 * without holding up gets, except for an in-memory merge.  Returns 0
 * (also when another thread of c is already at it: that one goes round
 * again) or -errno; a memory-only cache has nothing to do. */
int cfs_cache_rescan(struct cfs_cache *c);

#endif /* CFS_CACHE_H */
