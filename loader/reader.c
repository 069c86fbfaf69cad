/* SPDX-License-Identifier: MIT */
/*
 * Asynchronous reads for the pipeline.
 *
 * Files (a source with fds) go through io_uring when it is built and the
 * kernel lets us have a ring; everything else (direct mode, no io_uring,
 * CFS_NO_IO_URING=1 in the environment) through a pool of threads calling
 * pread.  Both take requests with submit() and hand back completions with
 * reap(), in any order; a read comes back whole, or short only at the end
 * of the file: short reads elsewhere are resubmitted for the rest, EINTR
 * and EAGAIN retried.
 *
 * O_DIRECT (opts.direct_io): the source's fd is reopened through
 * /proc/self/fd with O_DIRECT, and a first 4 KiB read tells whether the
 * filesystem takes it (tmpfs before 6.6 and many FUSE mounts say EINVAL).
 * In auto mode a model that sits mostly in the page cache (cachestat) is
 * read buffered: that is one copy from memory, where O_DIRECT would go
 * back to the disk.
 *
 * Buffered reads go to io_uring with IOSQE_ASYNC: served from the page
 * cache, an inline read copies in the submitting thread, one core; punted,
 * io-wq workers copy on every core.  On a 2-core VM a 1 GiB in-place load
 * reads in the same 0.07 s either way (one core copies at memory speed
 * there), but staged loads gain (0.094 s against 0.120: the kernel's
 * copies overlap the pipeline's), as do hosts with more cores than one
 * copy saturates.  CFS_LOAD_NO_ASYNC=1 (benchmarks) reads inline.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cfs_config.h"
#include "loader_i.h"
#include "util.h"

#if CFS_HAVE_IO_URING
#include <liburing.h>
#endif

#define DIRECT_ALIGN 4096u
#define POOL_THREADS_MAX 16

#ifndef __NR_cachestat
#define __NR_cachestat 451 /* Linux 6.5, same number on every architecture */
#endif

struct rd_req {
	unsigned shard;
	unsigned tag;
	char *buf;       /* where the rest goes */
	size_t left;     /* bytes still to read */
	uint64_t off;    /* offset of the rest */
	size_t done;     /* bytes read so far */
	unsigned next;   /* free list */
};

struct cfs_reader {
	struct cfs_model *m;
	size_t align;
	bool direct;
	bool uring;
	bool async;          /* IOSQE_ASYNC on buffered reads */
	unsigned depth;
	int *fds;            /* per shard: fd to read, or -1 (src->ops->pread) */
	bool *own_fd;        /* fds[i] was opened here (O_DIRECT) */

	struct rd_req *reqs;
	unsigned free_head;  /* UINT32_MAX: none */
	unsigned inflight;   /* submitted, not completed */

	/* Completions not yet reaped (grows: submit may complete reads while
	 * it waits for a free request). */
	struct cfs_read_done *dq;
	size_t dq_head, dq_n, dq_cap;

#if CFS_HAVE_IO_URING
	struct io_uring ring;
#endif
	bool ring_ok;

	/* Thread pool. */
	pthread_t *threads;
	unsigned nthreads;
	pthread_mutex_t lock;
	pthread_cond_t work_cv;   /* work queued, or stop */
	pthread_cond_t done_cv;   /* a completion queued (and a request freed) */
	unsigned *wq;             /* queued request indexes, ring of depth */
	unsigned wq_head, wq_n;
	bool stop, locks_ok;
};

#define NO_REQ UINT32_MAX

static int req_get(struct cfs_reader *r, unsigned *idx)
{
	if (r->free_head == NO_REQ)
		return -EBUSY;
	*idx = r->free_head;
	r->free_head = r->reqs[*idx].next;
	return 0;
}

static void req_put(struct cfs_reader *r, unsigned idx)
{
	r->reqs[idx].next = r->free_head;
	r->free_head = idx;
}

/* Room for every completion that may come before the next reap: called
 * before a request goes out, so that completing one never fails. */
static int dq_reserve(struct cfs_reader *r)
{
	size_t cap, i;
	struct cfs_read_done *n;

	if (r->dq_cap >= r->dq_n + r->inflight + 1)
		return 0;
	cap = r->dq_cap * 2;
	n = malloc(cap * sizeof(*n));
	if (!n)
		return -ENOMEM;
	for (i = 0; i < r->dq_n; i++)
		n[i] = r->dq[(r->dq_head + i) % r->dq_cap];
	free(r->dq);
	r->dq = n;
	r->dq_head = 0;
	r->dq_cap = cap;
	return 0;
}

static void dq_push(struct cfs_reader *r, unsigned tag, ssize_t res)
{
	r->dq[(r->dq_head + r->dq_n) % r->dq_cap] = (struct cfs_read_done){ .tag = tag, .res = res };
	r->dq_n++;
}

static unsigned dq_pop(struct cfs_reader *r, struct cfs_read_done *done, unsigned max)
{
	unsigned n = 0;

	while (n < max && r->dq_n) {
		done[n++] = r->dq[r->dq_head];
		r->dq_head = (r->dq_head + 1) % r->dq_cap;
		r->dq_n--;
	}
	return n;
}

/* Called with a read's latest result: 1 when the request is finished
 * (its result in *res), 0 when the rest must be read. */
static int req_advance(struct cfs_reader *r, struct rd_req *q, ssize_t got, ssize_t *res)
{
	uint64_t size = r->m->shards[q->shard].size;

	if (got == -EINTR || got == -EAGAIN)
		return 0;
	if (got < 0) {
		*res = got;
		return 1;
	}
	q->done += (size_t)got;
	q->left -= (size_t)got;
	q->off += (uint64_t)got;
	q->buf += got;
	/* EOF, or short at EOF; an O_DIRECT read cannot go on from an
	 * unaligned offset, and stops only at the end anyway. */
	if (got == 0 || q->left == 0 || q->off >= size || (r->direct && q->off % r->align)) {
		*res = (ssize_t)q->done;
		return 1;
	}
	return 0;
}

/* ---- io_uring ---- */

#if CFS_HAVE_IO_URING
static int uring_queue(struct cfs_reader *r, unsigned idx)
{
	struct rd_req *q = &r->reqs[idx];
	struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
	size_t len = CFS_MIN(q->left, (size_t)0x7ffff000); /* one read's maximum */

	if (!sqe) {
		int ret = io_uring_submit(&r->ring);

		if (ret < 0)
			return ret;
		sqe = io_uring_get_sqe(&r->ring);
		if (!sqe)
			return -EBUSY;
	}
	io_uring_prep_read(sqe, r->fds[q->shard], q->buf, (unsigned)len, q->off);
	if (r->async)
		sqe->flags |= IOSQE_ASYNC;
	io_uring_sqe_set_data64(sqe, idx);
	return 0;
}

static int uring_submit_now(struct cfs_reader *r)
{
	int ret;

	do {
		ret = io_uring_submit(&r->ring);
	} while (ret == -EINTR || ret == -EAGAIN);
	return ret < 0 ? ret : 0;
}

/* Takes the completions there are (waiting for one when wait), turning
 * finished requests into entries of the done queue. */
static int uring_collect(struct cfs_reader *r, bool wait)
{
	struct io_uring_cqe *cqe;
	bool resubmit = false;
	int ret, seen = 0;

	for (;;) {
		unsigned idx;
		ssize_t res;

		ret = seen || !wait ? io_uring_peek_cqe(&r->ring, &cqe)
				    : io_uring_wait_cqe(&r->ring, &cqe);
		if (ret == -EINTR && wait && !seen)
			continue;
		if (ret == -EAGAIN || (ret < 0 && seen))
			break;
		if (ret < 0)
			return ret;
		seen++;
		idx = (unsigned)io_uring_cqe_get_data64(cqe);
		ret = cqe->res;
		io_uring_cqe_seen(&r->ring, cqe);
		if (!req_advance(r, &r->reqs[idx], ret, &res)) {
			res = uring_queue(r, idx);
			if (res == 0) {
				resubmit = true;
				continue;
			}
		}
		/* Finished, or could not go on: the request fails with that. */
		r->inflight--;
		dq_push(r, r->reqs[idx].tag, res);
		req_put(r, idx);
	}
	if (resubmit)
		return uring_submit_now(r);
	return 0;
}
#endif

/* ---- thread pool ---- */

static ssize_t pool_read_once(struct cfs_reader *r, struct rd_req *q)
{
	struct cfs_src *src = r->m->src;
	int fd = r->fds[q->shard];
	ssize_t n;

	if (fd >= 0) {
		n = pread(fd, q->buf, q->left, (off_t)q->off);
		return n < 0 ? -errno : n;
	}
	return src->ops->pread(src, r->m->shards[q->shard].h, q->buf, q->left, q->off);
}

static void *pool_main(void *arg)
{
	struct cfs_reader *r = arg;

	pthread_mutex_lock(&r->lock);
	for (;;) {
		struct rd_req *q;
		unsigned idx;
		ssize_t res;

		while (!r->wq_n && !r->stop)
			pthread_cond_wait(&r->work_cv, &r->lock);
		if (!r->wq_n)
			break;
		idx = r->wq[r->wq_head];
		r->wq_head = (r->wq_head + 1) % r->depth;
		r->wq_n--;
		q = &r->reqs[idx];
		pthread_mutex_unlock(&r->lock);
		while (!req_advance(r, q, pool_read_once(r, q), &res))
			;
		pthread_mutex_lock(&r->lock);
		r->inflight--;
		dq_push(r, q->tag, res);
		req_put(r, idx);
		pthread_cond_broadcast(&r->done_cv);
	}
	pthread_mutex_unlock(&r->lock);
	return NULL;
}

static void pool_stop(struct cfs_reader *r)
{
	unsigned i;

	if (!r->locks_ok)
		return;
	pthread_mutex_lock(&r->lock);
	r->stop = true;
	pthread_cond_broadcast(&r->work_cv);
	pthread_mutex_unlock(&r->lock);
	for (i = 0; i < r->nthreads; i++)
		pthread_join(r->threads[i], NULL);
	r->nthreads = 0;
}

static int pool_start(struct cfs_reader *r)
{
	unsigned n = CFS_MIN(r->depth, (unsigned)POOL_THREADS_MAX), i;
	int ret;

	r->wq = calloc(r->depth, sizeof(*r->wq));
	r->threads = calloc(n, sizeof(*r->threads));
	if (!r->wq || !r->threads)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		ret = pthread_create(&r->threads[i], NULL, pool_main, r);
		if (ret) {
			pool_stop(r);
			return -ret;
		}
		r->nthreads++;
	}
	return 0;
}

/* ---- choosing how to read ---- */

struct cachestat_range_ {
	uint64_t off, len;
};

struct cachestat_ {
	uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted;
};

/* True when at least half of the model's pages are in the page cache;
 * false when unknown (before 6.5). */
static bool mostly_cached(struct cfs_reader *r)
{
	uint64_t cached = 0, pages = 0;
	size_t i;

	for (i = 0; i < r->m->nshards; i++) {
		struct cachestat_range_ range = { 0, 0 };
		struct cachestat_ cs;

		if (syscall(__NR_cachestat, r->fds[i], &range, &cs, 0) < 0)
			return false;
		cached += cs.nr_cache;
		pages += (r->m->shards[i].size + 4095) / 4096;
	}
	return pages && cached * 2 >= pages;
}

/* Opens every shard with O_DIRECT and reads its first block.  0, or
 * -EINVAL when the filesystem does not take it, with its name in err. */
static int open_direct(struct cfs_reader *r, char *err, size_t errlen)
{
	void *probe = NULL;
	size_t i;
	int ret = 0;

	if (posix_memalign(&probe, DIRECT_ALIGN, DIRECT_ALIGN))
		return cfs_load_err(err, errlen, -ENOMEM, "%s", strerror(ENOMEM));
	for (i = 0; i < r->m->nshards; i++) {
		const char *name = r->m->shards[i].path;
		char proc[64];
		ssize_t n;
		int fd;

		snprintf(proc, sizeof(proc), "/proc/self/fd/%d", r->fds[i]);
		fd = open(proc, O_RDONLY | O_DIRECT | O_CLOEXEC);
		if (fd < 0) {
			ret = cfs_load_err(err, errlen, -errno, "%s: O_DIRECT: %s", name,
					   strerror(errno));
			break;
		}
		do {
			n = pread(fd, probe, DIRECT_ALIGN, 0);
		} while (n < 0 && (errno == EINTR || errno == EAGAIN));
		if (n < 0) {
			ret = cfs_load_err(err, errlen, -errno, "%s: O_DIRECT read: %s", name,
					   strerror(errno));
			close(fd);
			break;
		}
		r->fds[i] = fd;
		r->own_fd[i] = true;
	}
	free(probe);
	return ret;
}

static void close_direct(struct cfs_reader *r)
{
	size_t i;

	for (i = 0; i < r->m->nshards; i++) {
		if (r->own_fd[i]) {
			close(r->fds[i]);
			r->own_fd[i] = false;
			r->fds[i] = r->m->src->ops->fd(r->m->src, r->m->shards[i].h);
		}
	}
}

/* Sets r->direct, and the fds to read, as opts.direct_io asks. */
static int choose_direct(struct cfs_reader *r, const struct cfs_load_opts *o, bool files,
			 char *err, size_t errlen)
{
	char why[CFS_ERR_LEN];
	int ret;

	if (o->direct_io == 0 || r->m->nshards == 0)
		return 0;
	if (!files) {
		if (o->direct_io > 0)
			return cfs_load_err(err, errlen, -EINVAL,
					    "O_DIRECT is for files; the %s source reads through its "
					    "chunk cache", r->m->src->ops->name);
		return 0;
	}
	if (o->direct_io < 0 && mostly_cached(r))
		return 0;
	ret = open_direct(r, why, sizeof(why));
	if (ret == 0) {
		r->direct = true;
		r->align = DIRECT_ALIGN;
		return 0;
	}
	close_direct(r);
	if (o->direct_io > 0)
		return cfs_load_err(err, errlen, ret, "%s", why);
	/* Auto: whatever O_DIRECT runs into, buffered reads still work. */
	return 0;
}

/* ---- the interface ---- */

int cfs_reader_new(struct cfs_model *m, const struct cfs_load_opts *o, struct cfs_reader **out,
		   char *err, size_t errlen)
{
	const char *no_uring = getenv("CFS_NO_IO_URING"), *no_async = getenv("CFS_LOAD_NO_ASYNC");
	struct cfs_reader *r;
	bool files = m->nshards > 0;
	unsigned i;
	int ret;

	r = calloc(1, sizeof(*r));
	if (!r)
		return cfs_load_err(err, errlen, -ENOMEM, "%s", strerror(ENOMEM));
	r->m = m;
	r->align = 1;
	r->depth = CFS_MAX(1u, (o->slots ? o->slots : 4) * (o->reads ? o->reads : 4));
	r->free_head = NO_REQ;
	r->fds = calloc(m->nshards + 1, sizeof(*r->fds));
	r->own_fd = calloc(m->nshards + 1, sizeof(*r->own_fd));
	r->reqs = calloc(r->depth, sizeof(*r->reqs));
	r->dq_cap = r->depth;
	r->dq = calloc(r->dq_cap, sizeof(*r->dq));
	if (!r->fds || !r->own_fd || !r->reqs || !r->dq) {
		ret = cfs_load_err(err, errlen, -ENOMEM, "%s", strerror(ENOMEM));
		goto fail;
	}
	for (i = r->depth; i-- > 0;)
		req_put(r, i);
	for (i = 0; i < m->nshards; i++) {
		r->fds[i] = m->src->ops->fd(m->src, m->shards[i].h);
		if (r->fds[i] < 0)
			files = false;
	}
	ret = choose_direct(r, o, files, err, errlen);
	if (ret < 0)
		goto fail;

	/* Benchmark knob: CFS_LOAD_NO_ASYNC=1 reads buffered data inline. */
	r->async = !r->direct && !(no_async && !strcmp(no_async, "1"));
#if CFS_HAVE_IO_URING
	if (files && !(no_uring && !strcmp(no_uring, "1"))) {
		/* -ENOSYS, -EPERM (kernel.io_uring_disabled), -ENOMEM (memlock
		 * on old kernels): the thread pool does the same job. */
		if (io_uring_queue_init(r->depth, &r->ring, 0) == 0) {
			r->ring_ok = true;
			r->uring = true;
		}
	}
#else
	(void)no_uring;
#endif
	if (pthread_mutex_init(&r->lock, NULL) == 0) {
		if (pthread_cond_init(&r->work_cv, NULL) == 0) {
			if (pthread_cond_init(&r->done_cv, NULL) == 0) {
				r->locks_ok = true;
			} else {
				pthread_cond_destroy(&r->work_cv);
				pthread_mutex_destroy(&r->lock);
			}
		} else {
			pthread_mutex_destroy(&r->lock);
		}
	}
	if (!r->locks_ok) {
		ret = cfs_load_err(err, errlen, -ENOMEM, "%s", strerror(ENOMEM));
		goto fail;
	}
	if (!r->uring) {
		ret = pool_start(r);
		if (ret < 0) {
			cfs_load_err(err, errlen, ret, "reader threads: %s", strerror(-ret));
			goto fail;
		}
	}
	*out = r;
	return 0;

fail:
	cfs_reader_free(r);
	return ret;
}

/* Waits for every read in flight: their buffers must outlive them. */
static void drain(struct cfs_reader *r)
{
	if (r->uring) {
#if CFS_HAVE_IO_URING
		while (r->inflight) {
			/* Only a broken ring fails here: nothing left to wait with. */
			if (uring_collect(r, true) < 0)
				break;
			r->dq_n = 0;
		}
#endif
		return;
	}
	if (!r->locks_ok)
		return;
	pthread_mutex_lock(&r->lock);
	while (r->inflight)
		pthread_cond_wait(&r->done_cv, &r->lock);
	pthread_mutex_unlock(&r->lock);
}

void cfs_reader_free(struct cfs_reader *r)
{
	if (!r)
		return;
	drain(r);
	pool_stop(r);
#if CFS_HAVE_IO_URING
	if (r->ring_ok)
		io_uring_queue_exit(&r->ring);
#endif
	if (r->locks_ok) {
		pthread_cond_destroy(&r->done_cv);
		pthread_cond_destroy(&r->work_cv);
		pthread_mutex_destroy(&r->lock);
	}
	if (r->fds && r->own_fd)
		close_direct(r);
	free(r->threads);
	free(r->wq);
	free(r->dq);
	free(r->reqs);
	free(r->own_fd);
	free(r->fds);
	free(r);
}

size_t cfs_reader_align(const struct cfs_reader *r)
{
	return r->align;
}

bool cfs_reader_direct(const struct cfs_reader *r)
{
	return r->direct;
}

bool cfs_reader_uring(const struct cfs_reader *r)
{
	return r->uring;
}

int cfs_reader_submit(struct cfs_reader *r, unsigned shard, void *buf, size_t len, uint64_t off,
		      unsigned tag)
{
	struct rd_req *q;
	unsigned idx;
	int ret;

	if (shard >= r->m->nshards)
		return -EINVAL;
	if (r->direct && ((uintptr_t)buf % r->align || len % r->align || off % r->align))
		return -EINVAL;
	if (r->uring) {
#if CFS_HAVE_IO_URING
		while (req_get(r, &idx) < 0) {
			ret = uring_collect(r, true);
			if (ret < 0)
				return ret;
		}
		ret = dq_reserve(r);
		if (ret < 0) {
			req_put(r, idx);
			return ret;
		}
		q = &r->reqs[idx];
		*q = (struct rd_req){ .shard = shard, .tag = tag, .buf = buf, .left = len, .off = off };
		if (len == 0) {
			req_put(r, idx);
			dq_push(r, tag, 0);
			return 0;
		}
		ret = uring_queue(r, idx);
		if (ret == 0)
			ret = uring_submit_now(r);
		if (ret < 0) {
			req_put(r, idx);
			return ret;
		}
		r->inflight++;
		return 0;
#endif
	}
	pthread_mutex_lock(&r->lock);
	while (req_get(r, &idx) < 0)
		pthread_cond_wait(&r->done_cv, &r->lock);
	ret = dq_reserve(r);
	if (ret < 0) {
		req_put(r, idx);
		pthread_mutex_unlock(&r->lock);
		return ret;
	}
	q = &r->reqs[idx];
	*q = (struct rd_req){ .shard = shard, .tag = tag, .buf = buf, .left = len, .off = off };
	if (len == 0) {
		req_put(r, idx);
		dq_push(r, tag, 0);
		pthread_mutex_unlock(&r->lock);
		return 0;
	}
	r->wq[(r->wq_head + r->wq_n) % r->depth] = idx;
	r->wq_n++;
	r->inflight++;
	pthread_cond_signal(&r->work_cv);
	pthread_mutex_unlock(&r->lock);
	return 0;
}

int cfs_reader_reap(struct cfs_reader *r, struct cfs_read_done *done, unsigned max)
{
	int ret = 0;

	if (!max)
		return -EINVAL;
	if (r->uring) {
#if CFS_HAVE_IO_URING
		if (!r->dq_n) {
			if (!r->inflight)
				return -EINVAL; /* nothing would ever come */
			ret = uring_collect(r, true);
		} else if (r->inflight) {
			ret = uring_collect(r, false);
		}
		if (ret < 0 && !r->dq_n)
			return ret;
		return (int)dq_pop(r, done, max);
#endif
	}
	pthread_mutex_lock(&r->lock);
	while (!r->dq_n && r->inflight)
		pthread_cond_wait(&r->done_cv, &r->lock);
	ret = r->dq_n ? (int)dq_pop(r, done, max) : -EINVAL;
	pthread_mutex_unlock(&r->lock);
	return ret;
}

bool cfs_reader_ready(struct cfs_reader *r)
{
	bool ready;

	if (r->uring) {
#if CFS_HAVE_IO_URING
		return r->dq_n || io_uring_cq_ready(&r->ring);
#endif
	}
	pthread_mutex_lock(&r->lock);
	ready = r->dq_n > 0;
	pthread_mutex_unlock(&r->lock);
	return ready;
}
