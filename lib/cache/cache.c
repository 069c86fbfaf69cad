/* SPDX-License-Identifier: MIT */
/*
 * Chunk cache (cache.h): the public calls, over the parts cache_i.h
 * lists.  A get finds the chunk's handle in the table, or inserts a
 * placeholder and fills it: from the disk directory when the entry there
 * verifies, else through the caller's load(), under the chunk's lock
 * between processes, and then stores it on disk.  A handle is its own
 * table entry: while it loads, later callers sleep on its condition
 * variable holding a reference, so it outlives a failed load.  A memory
 * handle leaves the table once its file is written: from then on the
 * file, through the page cache, serves it.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache_i.h"
#include "format.h"
#include "uring.h"
#include "util.h"

#define MEM_MAX_DEFAULT (256ull << 20)
#define DISK_MAX_DEFAULT (10ull << 30)
/* A miss waits this long for another process fetching the same chunk,
 * then fetches too (cache.h): above a chunk's usual fetch, below the
 * fetcher's 30 s deadline, which ends a live but stuck fetch anyway. */
#define FETCH_WAIT_MS_DEFAULT 10000u
/* Cache files kept open for hits, at most; fewer under a low fd limit. */
#define MAX_FILES_DEFAULT 4096u
#define MAX_FILES_MIN 16u

static _Thread_local bool tls_write_sync;

void cfs_cache_thread_write_sync(bool on)
{
	tls_write_sync = on;
}

static uint64_t stat_load(_Atomic uint64_t *v)
{
	return atomic_load_explicit(v, memory_order_relaxed);
}

/* Drops least recently used handles until mem_max and max_files hold. */
static void mem_evict_locked(struct cfs_cache *c, struct node **victims)
{
	struct node *n = c->mem_lru.prev;

	while ((c->mem_bytes > c->mem_max || c->files > c->max_files) && n != &c->mem_lru) {
		struct node *prev = n->prev;
		struct cfs_buf *b = cache_buf_of(n);

		if (b->fd >= 0 ? c->files > c->max_files : c->mem_bytes > c->mem_max) {
			cache_handle_remove_locked(c, b, victims);
			cache_stat_add(&c->evictions, 1);
		}
		n = prev;
	}
}

/* mkdir -p; the last component, the cache directory itself, is made
 * owner-only (an existing one keeps its mode: it may be anything, /tmp). */
static int mkdir_p(const char *path)
{
	char p[PATH_MAX];
	size_t len = strlen(path);

	if (len == 0 || len >= sizeof(p))
		return -ENAMETOOLONG;
	memcpy(p, path, len + 1);
	for (char *s = strchr(p + 1, '/'); s; s = strchr(s + 1, '/')) {
		*s = '\0';
		if (mkdir(p, 0755) < 0 && errno != EEXIST)
			return -errno;
		*s = '/';
	}
	if (mkdir(p, CFS_CACHE_DIR_MODE) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

/* Half the descriptors the process may open, leaving room for the rest
 * of the daemon (FUSE, sockets, the ring). */
static uint32_t max_files_default(void)
{
	struct rlimit rl;
	uint64_t n = MAX_FILES_DEFAULT;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
		n = rl.rlim_cur > 256 ? (rl.rlim_cur - 128) / 2 : MAX_FILES_MIN;
	return (uint32_t)CFS_MAX(CFS_MIN(n, (uint64_t)MAX_FILES_DEFAULT), (uint64_t)MAX_FILES_MIN);
}

int cfs_cache_new(const struct cfs_cache_opts *opts, struct cfs_cache **out)
{
	struct cfs_cache *c;
	int ret;

	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->dirfd = -1;
	c->lockfd = -1;
	c->fetchfd = -1;
	c->mem_max = opts && opts->mem_max ? opts->mem_max : MEM_MAX_DEFAULT;
	c->max_files = opts && opts->max_files ? opts->max_files : max_files_default();
	c->disk_max = opts && opts->disk_max ? opts->disk_max : DISK_MAX_DEFAULT;
	c->fetch_wait_ms = opts && opts->fetch_wait_ms ? opts->fetch_wait_ms : FETCH_WAIT_MS_DEFAULT;
	cache_list_init(&c->mem_lru);
	cache_list_init(&c->disk_lru);
	ret = -pthread_mutex_init(&c->lock, NULL);
	if (ret < 0)
		goto out_free;
	ret = cache_table_init(&c->mem);
	if (ret < 0)
		goto out_mutex;
	ret = cache_table_init(&c->disk);
	if (ret < 0)
		goto out_mem_table;
	ret = cache_table_init(&c->held);
	if (ret < 0)
		goto out_disk_table;

	if (opts && opts->dir) {
		ret = mkdir_p(opts->dir);
		if (ret < 0)
			goto out_held_table;
		c->dirfd = open(opts->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (c->dirfd < 0) {
			ret = -errno;
			goto out_held_table;
		}
		cache_locks_open(c);
		ret = cache_disk_rescan(c, true);
		if (ret < 0)
			goto out_close;
		cache_ring_start(c);
	}
	*out = c;
	return 0;

out_close:
	cache_locks_close(c);
	cache_disk_ents_free(&c->disk);
	close(c->dirfd);
out_held_table:
	free(c->held.b);
out_disk_table:
	free(c->disk.b);
out_mem_table:
	free(c->mem.b);
out_mutex:
	pthread_mutex_destroy(&c->lock);
out_free:
	free(c);
	return ret;
}

void cfs_cache_free(struct cfs_cache *c)
{
	if (!c)
		return;
	/* Lands the writes still queued; their callbacks use the tables. */
	cfs_uring_free(c->ring);
	/* No get may be running: buffers still referenced by callers stay
	 * valid, only the cache's references go. */
	for (size_t i = 0; i <= c->mem.mask; i++) {
		for (struct node *n = c->mem.b[i], *next; n; n = next) {
			next = n->hnext;
			cfs_buf_unref(cache_buf_of(n));
		}
	}
	cache_disk_ents_free(&c->disk);
	/* Empty: the ring let go of its locks above, and no get runs. */
	free(c->held.b);
	free(c->mem.b);
	free(c->disk.b);
	cache_locks_close(c);
	if (c->dirfd >= 0)
		close(c->dirfd);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

/* Stores a freshly loaded buffer on disk, making room first in this
 * process's view.  With a ring, queues it and returns at once; the entry
 * stays reserved (writing) until the file is renamed into place.
 * Failures are counted and logged, never returned.  With locked, lets go
 * of b's chunk lock once the entry is on disk or will not be. */
static void disk_write(struct cfs_cache *c, struct cfs_buf *b, bool locked)
{
	uint64_t size = sizeof(struct disk_hdr) + (uint64_t)b->len;
	struct disk_ent *e;
	int ret;

	if (size > c->disk_max)
		goto out_unlock;
	if (c->ring)
		cache_disk_rescan_if_due(c);
	e = cache_disk_reserve(c, b, size);
	if (!e)
		goto out_unlock;
	if (c->ring && !tls_write_sync) {
		if (cache_ring_write(c, b, e, locked) == 0)
			return;
		pthread_mutex_lock(&c->lock);
		e->pending = NULL;
		pthread_mutex_unlock(&c->lock);
	}
	ret = cache_disk_write_file(c, b, e->used_ns);
	/* Before the end, which may run a pass: waiters need the file only. */
	if (locked)
		cache_chunk_lock_drop(c, &b->n.d);
	cache_disk_write_end(c, e, ret, false);
	return;

out_unlock:
	if (locked)
		cache_chunk_lock_drop(c, &b->n.d);
}

/* Fills a placeholder from disk (a file handle) or through load() (a
 * memory handle); no lock held.  A load takes d's chunk lock first, which
 * the caller hands on to disk_write() (*locked). */
static int cache_fill(struct cfs_cache *c, struct cfs_buf *b, cfs_cache_load_fn load, void *ctx,
		      bool *loaded, bool *locked)
{
	int disk = -ENOENT, ret;
	bool waited;

	*loaded = false;
	*locked = false;
	if (c->dirfd >= 0 && cache_ring_read_pending(c, b) == 0) {
		cache_stat_add(&c->disk_hits, 1);
		return 0;
	}
	if (c->dirfd >= 0) {
		disk = cache_disk_open(c, b);
		if (disk == 0) {
			cache_stat_add(&c->disk_hits, 1);
			return 0;
		}
		/* Another process may be loading it, or may have written it
		 * since the open: look again once the lock is ours, or once
		 * its holder was waited for long enough. */
		ret = cache_chunk_lock_take(c, &b->n.d, &waited);
		*locked = ret == 0;
		if (*locked || waited) {
			disk = cache_disk_open(c, b);
			if (disk == 0) {
				if (*locked)
					cache_chunk_lock_drop(c, &b->n.d);
				*locked = false;
				if (waited)
					cache_stat_add(&c->shared_hits, 1);
				cache_stat_add(&c->disk_hits, 1);
				return 0;
			}
		}
	}
	cache_stat_add(&c->misses, 1);
	/* 16-byte aligned by malloc; never 0 bytes, which may be NULL. */
	b->data = malloc(b->len ? b->len : 1);
	if (!b->data) {
		ret = -ENOMEM;
		goto out_unlock;
	}
	ret = load(ctx, &b->n.d, b->len, b->data);
	if (ret < 0) {
		cache_stat_add(&c->load_errors, 1);
		goto out_unlock;
	}
	/* The load verified this size, so the entry's trailer was wrong. */
	if (disk == -ERANGE)
		cache_disk_drop(c, &b->n.d);
	*loaded = true;
	return 0;

out_unlock:
	if (*locked)
		cache_chunk_lock_drop(c, &b->n.d);
	*locked = false;
	return ret;
}

/* The caller that inserted b loads it and wakes the waiters. */
static int cache_load(struct cfs_cache *c, struct cfs_buf *b, cfs_cache_load_fn load, void *ctx)
{
	struct node *victims = NULL;
	bool loaded, locked;
	int ret;

	ret = cache_fill(c, b, load, ctx, &loaded, &locked);

	pthread_mutex_lock(&c->lock);
	b->loading = false;
	b->err = ret;
	if (ret < 0) {
		/* Not remembered: the next caller tries again. */
		cache_table_remove(&c->mem, &b->n);
	} else {
		cache_list_add_head(&c->mem_lru, &b->n);
		if (b->fd >= 0)
			c->files++;
		else
			c->mem_bytes += b->len;
		mem_evict_locked(c, &victims);
	}
	pthread_cond_broadcast(&b->done);
	pthread_mutex_unlock(&c->lock);
	cache_release_victims(victims);

	if (ret < 0) {
		cfs_buf_unref(b); /* the table's */
		cfs_buf_unref(b); /* ours */
		return ret;
	}
	/* After publishing: waiters in this process need not wait for the
	 * disk; those of others wait for the chunk lock, until it lands. */
	if (loaded && c->dirfd >= 0)
		disk_write(c, b, locked);
	return 0;
}

/* A file handle's file is what it was when verified.  When the hit is due
 * to refresh the file's mtime for other processes' passes, does that too
 * (taking the new identity).  One fstat() per hit, and no hashing. */
static bool handle_fresh(struct cfs_cache *c, struct cfs_buf *b, bool touch)
{
	struct ident id;

	bool same;

	if (cache_ident_get(b->fd, &id) < 0)
		return false;
	pthread_mutex_lock(&c->lock);
	same = cache_ident_eq(&id, &b->id);
	pthread_mutex_unlock(&c->lock);
	if (!same)
		return false;
	if (touch && futimens(b->fd, NULL) == 0) {
		cache_seal_set(b->fd, &b->n.d, &id);
		pthread_mutex_lock(&c->lock);
		b->id = id;
		pthread_mutex_unlock(&c->lock);
		cache_disk_remember(c, &b->n.d, &id);
	}
	return true;
}

/* Forgets a handle whose file changed or failed (if the table still holds
 * it) and, with drop, deletes the disk entry too. */
static void handle_forget(struct cfs_cache *c, struct cfs_buf *b, bool drop)
{
	struct node *victims = NULL;

	pthread_mutex_lock(&c->lock);
	if (cache_handle_find_locked(c, &b->n.d) == b)
		cache_handle_remove_locked(c, b, &victims);
	pthread_mutex_unlock(&c->lock);
	cache_release_victims(victims);
	if (drop && c->dirfd >= 0)
		cache_disk_drop(c, &b->n.d);
}

void cfs_cache_invalidate(struct cfs_cache *c, struct cfs_buf *b)
{
	if (c && b && b->fd >= 0)
		handle_forget(c, b, true);
}

int cfs_cache_get(struct cfs_cache *c, const cfs_digest *d, uint32_t raw_size,
		  cfs_cache_load_fn load, void *ctx, struct cfs_buf **out)
{
	struct cfs_buf *b, *fresh = NULL;
	bool touch = false, retried = false;
	struct node *n;
	int ret;

	if (!c || !d || !load || !out)
		return -EINVAL;
	if (raw_size > CFS_CHUNK_MAX_SIZE)
		return -EUCLEAN;

again:
	pthread_mutex_lock(&c->lock);
	while (!(n = cache_table_find(&c->mem, d))) {
		if (fresh) {
			/* Still absent: this caller loads it. */
			cache_table_insert(&c->mem, &fresh->n);
			pthread_mutex_unlock(&c->lock);
			ret = cache_load(c, fresh, load, ctx);
			if (ret < 0)
				return ret;
			*out = fresh;
			return 0;
		}
		/* Allocate unlocked, then look again. */
		pthread_mutex_unlock(&c->lock);
		fresh = cache_buf_new(d, raw_size);
		if (!fresh)
			return -ENOMEM;
		pthread_mutex_lock(&c->lock);
	}

	b = cache_buf_of(n);
	cache_buf_ref(b);
	if (b->loading) {
		while (b->loading)
			pthread_cond_wait(&b->done, &c->lock);
		ret = b->err;
	} else {
		cache_list_touch(&c->mem_lru, n);
		if (b->fd >= 0) {
			struct node *e = cache_table_find(&c->disk, d);

			cache_stat_add(&c->file_hits, 1);
			if (e)
				touch = cache_ent_use_locked(c, cache_ent_of(e));
		} else {
			cache_stat_add(&c->mem_hits, 1);
		}
		ret = 0;
	}
	pthread_mutex_unlock(&c->lock);

	/* The content is fixed by the digest; a caller with another size was
	 * given a wrong one. */
	if (!ret && b->len != raw_size)
		ret = -EUCLEAN;
	if (!ret && b->fd >= 0 && !retried && !handle_fresh(c, b, touch)) {
		/* Written to, truncated or replaced since it was verified: the
		 * next open checks it again, and drops it if it fails. */
		cache_stat_add(&c->stale, 1);
		handle_forget(c, b, false);
		cfs_buf_unref(b);
		retried = true;
		touch = false;
		goto again;
	}
	if (ret < 0)
		cfs_buf_unref(b);
	else
		*out = b;
	if (fresh)
		cache_buf_free(fresh);
	return ret;
}

int64_t cfs_cache_size(struct cfs_cache *c, const cfs_digest *d)
{
	int64_t ret = -ENOENT;
	struct node *n;

	pthread_mutex_lock(&c->lock);
	if ((n = cache_table_find(&c->mem, d)) && !cache_buf_of(n)->loading)
		ret = cache_buf_of(n)->len;
	else if ((n = cache_table_find(&c->disk, d)) && cache_ent_of(n)->size > sizeof(struct disk_hdr))
		ret = (int64_t)(cache_ent_of(n)->size - sizeof(struct disk_hdr));
	pthread_mutex_unlock(&c->lock);
	return ret;
}

void cfs_cache_stats_get(struct cfs_cache *c, struct cfs_cache_stats *out)
{
	out->mem_hits = stat_load(&c->mem_hits);
	out->file_hits = stat_load(&c->file_hits);
	out->disk_hits = stat_load(&c->disk_hits);
	out->misses = stat_load(&c->misses);
	out->load_errors = stat_load(&c->load_errors);
	out->disk_bad = stat_load(&c->disk_bad);
	out->disk_write_errors = stat_load(&c->disk_write_errors);
	out->evictions = stat_load(&c->evictions);
	out->rescans = stat_load(&c->rescans);
	out->verifies = stat_load(&c->verifies);
	out->stale = stat_load(&c->stale);
	out->shared_waits = stat_load(&c->shared_waits);
	out->shared_hits = stat_load(&c->shared_hits);
	out->shared_timeouts = stat_load(&c->shared_timeouts);
	out->uring = c->ring != NULL;
	pthread_mutex_lock(&c->lock);
	out->disk_bytes = c->disk_bytes;
	out->mem_bytes = c->mem_bytes;
	out->files_open = c->files;
	pthread_mutex_unlock(&c->lock);
}

void cfs_cache_tick(struct cfs_cache *c)
{
	if (c && c->ring)
		cache_disk_rescan_if_due(c);
}

void cfs_cache_flush(struct cfs_cache *c)
{
	if (!c || !c->ring)
		return;
	cfs_uring_drain(c->ring);
	cache_disk_rescan_if_due(c);
}

int cfs_cache_rescan(struct cfs_cache *c)
{
	if (!c)
		return -EINVAL;
	if (c->dirfd < 0)
		return 0;
	return cache_disk_rescan(c, true);
}
