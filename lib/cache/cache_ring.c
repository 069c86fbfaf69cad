/* SPDX-License-Identifier: MIT */
/*
 * The chunk cache's disk writes through io_uring (uring.h, cache_i.h): a
 * loading thread queues the entry's file and returns, and the ring's
 * thread ends the write, which stamps and seals the file, lets go of the
 * chunk lock and ends the entry's reservation in the view.  Until then
 * the entry holds the buffer being written (pending), which serves a get
 * whose memory copy went already.  Without io_uring, or with
 * CFS_NO_IO_URING set, there is no ring and writes are synchronous.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "cache_i.h"
#include "uring.h"
#include "util.h"

/* Files written at once through the ring, and the bytes queued for it
 * before a loading thread waits (each holds a reference to its buffer). */
#define URING_DEPTH 64
#define URING_MAX_BYTES (64u << 20)

/* A disk write handed to the ring; holds a reference to b. */
struct ring_write {
	struct cfs_cache *c;
	struct disk_ent *e;
	struct cfs_buf *b;
	struct disk_hdr h;
	bool chunk_locked;      /* let go of once the entry is on disk, or failed */
	char path[CFS_CACHE_PATH_LEN];
};

/* On the ring's thread. */
static void ring_write_done(void *ctx, int res)
{
	struct ring_write *w = ctx;
	struct cfs_cache *c = w->c;

	if (res == 0) {
		uint64_t used;
		int fd;

		/* The time of the reservation, not of the (possibly late)
		 * rename. */
		pthread_mutex_lock(&c->lock);
		used = w->e->used_ns;
		pthread_mutex_unlock(&c->lock);
		fd = openat(c->dirfd, w->path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		if (fd >= 0) {
			cache_disk_stamp(fd, &w->b->n.d, used);
			close(fd);
		}
	}
	/* Sealed too: a waiting process trusts it without hashing. */
	if (w->chunk_locked)
		cache_chunk_lock_drop(c, &w->b->n.d);
	cache_disk_write_end(c, w->e, res, true);
	cfs_buf_unref(w->b);
	free(w);
}

/* Queues the write of b (reserved as e) on the ring, which lets go of the
 * chunk lock (if locked) once it completes.  Returns 0, or -errno when it
 * could not be queued: the caller writes it itself, and keeps the lock. */
int cache_ring_write(struct cfs_cache *c, struct cfs_buf *b, struct disk_ent *e, bool locked)
{
	char tmp[CFS_CACHE_TMP_LEN];
	struct ring_write *w = malloc(sizeof(*w));
	struct iovec iov[2];
	int ret;

	if (!w)
		return -ENOMEM;
	w->c = c;
	w->e = e;
	w->b = b;
	w->chunk_locked = locked;
	cache_disk_trailer_init(&w->h, b);
	iov[0] = (struct iovec){ b->data, b->len };
	iov[1] = (struct iovec){ &w->h, sizeof(w->h) };
	cache_disk_path(&b->n.d, w->path);
	cache_disk_tmp_name(w->path, tmp);
	cache_buf_ref(b);
	/* Before queueing: the completion clears it. */
	pthread_mutex_lock(&c->lock);
	e->pending = b;
	pthread_mutex_unlock(&c->lock);
	ret = cfs_uring_write_atomic(c->ring, c->dirfd, tmp, w->path, iov, 2, ring_write_done, w);
	if (ret < 0) {
		cfs_buf_unref(b);
		free(w);
	}
	return ret;
}

/* A chunk evicted from memory while its disk write is still queued is
 * copied from the buffer the ring holds: it is on disk in all but name. */
int cache_ring_read_pending(struct cfs_cache *c, struct cfs_buf *b)
{
	struct cfs_buf *p = NULL;
	struct node *n;

	if (!c->ring)
		return -ENOENT;
	pthread_mutex_lock(&c->lock);
	n = cache_table_find(&c->disk, &b->n.d);
	if (n && cache_ent_of(n)->pending && cache_ent_of(n)->pending->len == b->len) {
		p = cache_ent_of(n)->pending;
		cache_buf_ref(p);
	}
	pthread_mutex_unlock(&c->lock);
	if (!p)
		return -ENOENT;
	b->data = malloc(b->len ? b->len : 1);
	if (b->data)
		memcpy(b->data, p->data, b->len);
	cfs_buf_unref(p);
	return b->data ? 0 : -ENOMEM;
}

/* CFS_NO_IO_URING=1 in the environment keeps disk writes synchronous
 * (tests use it to cover the fallback). */
void cache_ring_start(struct cfs_cache *c)
{
	const char *no = getenv("CFS_NO_IO_URING");
	int ret;

	if (no && *no && strcmp(no, "0")) {
		cfs_info("chunk cache: synchronous disk writes (CFS_NO_IO_URING is set)");
		return;
	}
	ret = cfs_uring_new(URING_DEPTH, URING_MAX_BYTES, &c->ring);
	if (ret < 0) {
		c->ring = NULL;
		cfs_info("chunk cache: synchronous disk writes (io_uring: %s)", cfs_strerror(ret));
		return;
	}
	cfs_info("chunk cache: disk writes through io_uring");
}
