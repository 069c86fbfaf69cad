/* SPDX-License-Identifier: MIT */
/*
 * The chunk cache's locks between the processes that share its directory
 * (cache_i.h), both in files of the directory and both let go of by the
 * kernel when their holder dies.
 *
 * A miss is single-flight across those processes: before loading, it
 * locks the chunk's byte of <dir>/.fetch.lock (an OFD lock, by digest),
 * looks in the directory again once it has it (another process may just
 * have written the entry) and keeps it until the entry is renamed into
 * place or its write failed, on the ring's thread when the write goes
 * through io_uring: a waiter that found nothing would load it again.  A
 * lock, not a marker file, because the kernel lets go of it when its
 * holder dies; a live holder that hangs is waited for fetch_wait_ms at
 * most, by polling, since no lock call waits with a timeout.  Byte ranges
 * of one file, not a lock file per chunk, because a miss then creates and
 * unlinks nothing (a lock file per chunk cost a 4 KiB miss 50-60% more
 * CPU), nothing is left behind by a dead holder, and no taker can lock a
 * file its holder just unlinked.
 *
 * The directory's lock, flock() on <dir>/.lock, lets one pass at a time
 * evict; a taker that finds it taken appends a byte to the file, so that
 * its holder goes round again (cache_scan.c).
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cache_i.h"
#include "util.h"

#define LOCK_NAME ".lock"
/* A taken chunk lock is polled from 1 ms, doubling up to this: the
 * delay a waiter adds to a fetch it waited for. */
#define FETCH_POLL_MAX_MS 8u
/* The chunk locks' file: a name no pass lists (only "hh" directories). */
#define FETCH_LOCK_NAME ".fetch.lock"
/* The lock file grows a byte per contended pass; its holder trims it. */
#define LOCK_TRIM 4096

void cache_locks_open(struct cfs_cache *c)
{
	/* Without it (a read-only directory) eviction is unserialised. */
	c->lockfd = openat(c->dirfd, LOCK_NAME,
			   O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, CFS_CACHE_FILE_MODE);
	/* Without it, every process that misses a chunk loads it. */
	c->fetchfd = openat(c->dirfd, FETCH_LOCK_NAME,
			    O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, CFS_CACHE_FILE_MODE);
}

void cache_locks_close(struct cfs_cache *c)
{
	if (c->fetchfd >= 0)
		close(c->fetchfd);
	if (c->lockfd >= 0)
		close(c->lockfd);
}

/* ---- chunk locks: one load per chunk among the processes ---- */

/* A chunk's lock is one byte of <dir>/.fetch.lock at an offset taken from
 * its digest (62 bits: two chunks share a byte by chance only, and then
 * load one after the other), held as an OFD lock through c->fetchfd.  The
 * kernel lets go of them all when the process dies.  Threads of one
 * process own the same locks, so c->held says which this process holds. */
static off_t chunk_lock_off(const cfs_digest *d)
{
	uint64_t h;

	memcpy(&h, d->b + 8, sizeof(h));
	return (off_t)(le64toh(h) >> 2);
}

/* Takes d's chunk lock: 0 (then cache_chunk_lock_drop() it), else -errno and
 * the caller loads unlocked, as with a directory of its own: -ETIMEDOUT
 * after waiting fetch_wait_ms for the holder, or the error of a directory
 * without the lock file or OFD locks.  Sets *waited when the lock was
 * taken: by another process, or by a thread of this one still writing
 * the entry whose memory copy went already. */
int cache_chunk_lock_take(struct cfs_cache *c, const cfs_digest *d, bool *waited)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_len = 1 };
	uint64_t deadline = 0, now, ns;
	unsigned poll_ms = 1;
	struct timespec ts;
	struct node *n;
	bool ours;
	int ret;

	*waited = false;
	if (c->fetchfd < 0)
		return -ENOLCK;
	n = calloc(1, sizeof(*n));
	if (!n)
		return -ENOMEM;
	n->d = *d;
	fl.l_start = chunk_lock_off(d);
	for (;;) {
		pthread_mutex_lock(&c->lock);
		ours = cache_table_find(&c->held, d) != NULL;
		if (!ours)
			cache_table_insert(&c->held, n);
		pthread_mutex_unlock(&c->lock);
		if (!ours) {
			if (fcntl(c->fetchfd, F_OFD_SETLK, &fl) == 0)
				return 0;
			ret = -errno;
			pthread_mutex_lock(&c->lock);
			cache_table_remove(&c->held, n);
			pthread_mutex_unlock(&c->lock);
			if (ret != -EAGAIN && ret != -EACCES)
				break;
		}
		if (!*waited) {
			*waited = true;
			cache_stat_add(&c->shared_waits, 1);
			deadline = cfs_now_ns() + (uint64_t)c->fetch_wait_ms * 1000000ull;
		}
		now = cfs_now_ns();
		if (now >= deadline) {
			cache_stat_add(&c->shared_timeouts, 1);
			ret = -ETIMEDOUT;
			break;
		}
		/* No lock call waits with a timeout: poll. */
		ns = CFS_MIN((uint64_t)poll_ms * 1000000ull, deadline - now);
		ts.tv_sec = (time_t)(ns / CFS_CACHE_NS_PER_SEC);
		ts.tv_nsec = (long)(ns % CFS_CACHE_NS_PER_SEC);
		nanosleep(&ts, NULL);
		poll_ms = CFS_MIN(poll_ms * 2, FETCH_POLL_MAX_MS);
	}
	free(n);
	return ret;
}

/* Lets go of d's chunk lock, taken by cache_chunk_lock_take(). */
void cache_chunk_lock_drop(struct cfs_cache *c, const cfs_digest *d)
{
	struct flock fl = { .l_type = F_UNLCK, .l_whence = SEEK_SET, .l_len = 1 };
	struct node *n;

	fl.l_start = chunk_lock_off(d);
	(void)fcntl(c->fetchfd, F_OFD_SETLK, &fl);
	pthread_mutex_lock(&c->lock);
	n = cache_table_find(&c->held, d);
	if (n)
		cache_table_remove(&c->held, n);
	pthread_mutex_unlock(&c->lock);
	free(n);
}

/* ---- the directory's lock: one evicting pass at a time ---- */

/* The lock file's size counts the passes that found the lock taken. */
static off_t lock_marks(const struct cfs_cache *c)
{
	struct stat sb;

	return fstat(c->lockfd, &sb) < 0 ? -1 : sb.st_size;
}

/* Takes the directory's lock for a pass's eviction: 0 (then
 * cache_dir_lock_drop() it with *marks), -EWOULDBLOCK while another
 * process holds it, or another -errno (no lock file, or no flock() on
 * this filesystem): then the pass evicts unserialised. */
int cache_dir_lock_take(struct cfs_cache *c, off_t *marks)
{
	if (c->lockfd < 0)
		return -ENOLCK;
	/* Mark before trying: a holder that misses our newest entry is
	 * still holding the lock, so it sees the mark when it lets go. */
	if (write(c->lockfd, "", 1) < 0) {
		/* ENOSPC: the holder may miss us; our next write asks again. */
	}
	if (flock(c->lockfd, LOCK_EX | LOCK_NB) < 0)
		return -errno;
	*marks = lock_marks(c);
	if (*marks > LOCK_TRIM && ftruncate(c->lockfd, 1) == 0)
		*marks = 1; /* 1, not 0: a full disk keeps the block */
	return 0;
}

/* Lets go of the directory's lock; true when another process found it
 * taken meanwhile: that process's newest entries may have missed the
 * pass's listing. */
bool cache_dir_lock_drop(struct cfs_cache *c, off_t marks)
{
	flock(c->lockfd, LOCK_UN);
	return lock_marks(c) != marks;
}
