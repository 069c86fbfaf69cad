/* SPDX-License-Identifier: MIT */
/*
 * Asynchronous atomic file writes (uring.h).  Callers append requests to a
 * queue under a mutex and wake the writer thread through an eventfd that
 * the ring itself reads, so the thread sleeps in one place: waiting for
 * completions.  Each file in flight owns one slot of a sparse registered
 * file table, which is how the chain's WRITEV and CLOSE name the file the
 * linked OPENAT has not opened yet.
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <liburing.h>

#include "uring.h"
#include "util.h"

/* Steps of a write chain, in user_data's low bits. */
enum { STEP_OPEN, STEP_WRITE, STEP_CLOSE, STEP_RENAME, STEPS };
#define STEP_MASK 3u
#define EVENTFD_TAG 1u /* user_data of the eventfd read: no request */

struct req {
	struct req *next;
	bool retried;               /* the parent directory was made once */
	int dirfd;
	unsigned slot;
	unsigned cqes_left;
	int res[STEPS];
	size_t bytes;
	struct iovec iov[CFS_URING_IOV_MAX];
	unsigned iovcnt;
	cfs_uring_done_fn done;
	void *ctx;
	char tmp[CFS_URING_NAME_MAX];
	char path[CFS_URING_NAME_MAX];
} __attribute__((aligned(8)));

struct cfs_uring {
	struct io_uring ring;
	pthread_t thread;
	int efd;
	uint64_t ebuf;              /* the eventfd read's target */

	pthread_mutex_t lock;
	pthread_cond_t room;        /* bytes went down or completed went up */
	struct req *qhead, **qtail; /* queued, not yet taken by the thread */
	size_t bytes, max_bytes;    /* queued or in flight */
	uint64_t queued, completed; /* requests */
	unsigned waiters;           /* callers asleep on room */
	bool stop, idle;

	/* The writer thread's own. */
	struct req *pend, **ptail;  /* taken, waiting for a slot */
	unsigned *free_slots, nfree;
	unsigned inflight;
	size_t done_bytes;          /* finished since the last account() */
	uint64_t done_reqs;
};

static struct io_uring_sqe *get_sqe(struct cfs_uring *u)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);

	if (!sqe) {
		io_uring_submit(&u->ring);
		sqe = io_uring_get_sqe(&u->ring);
	}
	return sqe;
}

static void arm_eventfd(struct cfs_uring *u)
{
	struct io_uring_sqe *sqe = get_sqe(u);

	io_uring_prep_read(sqe, u->efd, &u->ebuf, sizeof(u->ebuf), 0);
	io_uring_sqe_set_data64(sqe, EVENTFD_TAG);
}

/* The SQ holds 4 entries per slot and one more: a chain always fits. */
static void submit_chain(struct cfs_uring *u, struct req *r)
{
	struct io_uring_sqe *sqe;
	uint64_t tag = (uint64_t)(uintptr_t)r;

	r->slot = u->free_slots[--u->nfree];
	r->cqes_left = STEPS;
	for (unsigned i = 0; i < STEPS; i++)
		r->res[i] = -ECANCELED;
	u->inflight++;

	sqe = get_sqe(u);
	/* Direct descriptors refuse O_CLOEXEC: they are no fds at all.
	 * Owner-only, like the cache's own writes (uring.h). */
	io_uring_prep_openat_direct(sqe, r->dirfd, r->tmp, O_WRONLY | O_CREAT | O_EXCL, 0600,
				    r->slot);
	sqe->flags |= IOSQE_IO_LINK;
	io_uring_sqe_set_data64(sqe, tag | STEP_OPEN);

	sqe = get_sqe(u);
	io_uring_prep_writev(sqe, (int)r->slot, r->iov, r->iovcnt, 0);
	sqe->flags |= IOSQE_FIXED_FILE | IOSQE_IO_LINK;
	io_uring_sqe_set_data64(sqe, tag | STEP_WRITE);

	sqe = get_sqe(u);
	io_uring_prep_close_direct(sqe, r->slot);
	sqe->flags |= IOSQE_IO_LINK;
	io_uring_sqe_set_data64(sqe, tag | STEP_CLOSE);

	sqe = get_sqe(u);
	io_uring_prep_renameat(sqe, r->dirfd, r->tmp, r->dirfd, r->path, 0);
	io_uring_sqe_set_data64(sqe, tag | STEP_RENAME);
}

/* Counted by account(), once per batch of completions. */
static void req_finish(struct cfs_uring *u, struct req *r, int res)
{
	u->done_bytes += r->bytes;
	u->done_reqs++;
	if (r->done)
		r->done(r->ctx, res);
	free(r);
}

/* Gives back the room of the requests finished since the last call, under
 * one lock, and wakes sleepers only when there are any: with a pool of
 * loaders queued behind a busy disk, a wake per file made each of them
 * contend for the lock once per completion. */
static void account(struct cfs_uring *u)
{
	if (!u->done_reqs)
		return;
	pthread_mutex_lock(&u->lock);
	u->bytes -= u->done_bytes;
	u->completed += u->done_reqs;
	if (u->waiters)
		pthread_cond_broadcast(&u->room);
	pthread_mutex_unlock(&u->lock);
	u->done_bytes = 0;
	u->done_reqs = 0;
}

/* Makes the one directory level above tmp ("hh/name" makes "hh"). */
static int make_parent(int dirfd, const char *tmp)
{
	char dir[CFS_URING_NAME_MAX];
	const char *slash = strrchr(tmp, '/');

	if (!slash || slash == tmp)
		return -ENOENT;
	memcpy(dir, tmp, (size_t)(slash - tmp));
	dir[slash - tmp] = '\0';
	if (mkdirat(dirfd, dir, 0700) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

/* All four completions of r are in. */
static void chain_done(struct cfs_uring *u, struct req *r)
{
	int ret = 0;

	if (r->res[STEP_OPEN] >= 0 && r->res[STEP_CLOSE] < 0) {
		int none = -1;

		/* The chain broke before CLOSE: empty the slot ourselves. */
		io_uring_register_files_update(&u->ring, r->slot, &none, 1);
	}
	u->free_slots[u->nfree++] = r->slot;
	u->inflight--;

	if (r->res[STEP_OPEN] == -ENOENT && !r->retried) {
		r->retried = true;
		ret = make_parent(r->dirfd, r->tmp);
		if (!ret) {
			/* First in line for the next slot. */
			r->next = u->pend;
			u->pend = r;
			if (u->ptail == &u->pend)
				u->ptail = &r->next;
			return;
		}
	} else if (r->res[STEP_OPEN] < 0) {
		ret = r->res[STEP_OPEN];
	} else if (r->res[STEP_WRITE] < 0) {
		ret = r->res[STEP_WRITE];
	} else if ((size_t)r->res[STEP_WRITE] != r->bytes) {
		ret = -ENOSPC; /* short: what the next write would have said */
	} else if (r->res[STEP_CLOSE] < 0) {
		ret = r->res[STEP_CLOSE];
	} else {
		ret = r->res[STEP_RENAME] < 0 ? r->res[STEP_RENAME] : 0;
	}
	if (ret < 0 && r->res[STEP_OPEN] >= 0)
		unlinkat(r->dirfd, r->tmp, 0);
	req_finish(u, r, ret);
}

static void reap(struct cfs_uring *u)
{
	struct io_uring_cqe *cqe;
	unsigned head, n = 0;
	bool rearm = false;

	io_uring_for_each_cqe(&u->ring, head, cqe) {
		uint64_t tag = io_uring_cqe_get_data64(cqe);
		struct req *r;

		n++;
		if (tag == EVENTFD_TAG) {
			rearm = true;
			continue;
		}
		r = (struct req *)(uintptr_t)(tag & ~(uint64_t)STEP_MASK);
		r->res[tag & STEP_MASK] = cqe->res;
		if (--r->cqes_left == 0) {
			/* Done with the CQ entry before a callback that may block. */
			io_uring_cq_advance(&u->ring, n);
			n = 0;
			chain_done(u, r);
		}
	}
	io_uring_cq_advance(&u->ring, n);
	account(u);
	if (rearm)
		arm_eventfd(u);
}

static void *writer_main(void *arg)
{
	struct cfs_uring *u = arg;

	arm_eventfd(u);
	for (;;) {
		struct req *q;
		bool stop;
		int ret;

		pthread_mutex_lock(&u->lock);
		q = u->qhead;
		u->qhead = NULL;
		u->qtail = &u->qhead;
		stop = u->stop;
		u->idle = false;
		pthread_mutex_unlock(&u->lock);

		if (q) {
			*u->ptail = q;
			while (q->next)
				q = q->next;
			u->ptail = &q->next;
		}
		while (u->pend && u->nfree) {
			struct req *r = u->pend;

			u->pend = r->next;
			if (!u->pend)
				u->ptail = &u->pend;
			submit_chain(u, r);
		}
		if (stop && !u->inflight && !u->pend)
			break;

		pthread_mutex_lock(&u->lock);
		/* Callers write the eventfd only while we sleep. */
		u->idle = !u->qhead;
		pthread_mutex_unlock(&u->lock);
		if (!u->idle && !io_uring_sq_ready(&u->ring))
			continue;
		ret = io_uring_submit_and_wait(&u->ring, u->idle ? 1 : 0);
		if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY)
			cfs_warn("io_uring: submit: %s", cfs_strerror(ret));
		reap(u);
	}
	return NULL;
}

int cfs_uring_new(unsigned depth, size_t max_bytes, struct cfs_uring **out)
{
	struct io_uring_params p;
	struct cfs_uring *u;
	int ret;

	if (!depth || depth > 4096)
		return -EINVAL;
	u = calloc(1, sizeof(*u));
	if (!u)
		return -ENOMEM;
	u->free_slots = calloc(depth, sizeof(*u->free_slots));
	if (!u->free_slots) {
		ret = -ENOMEM;
		goto out_free;
	}
	for (unsigned i = 0; i < depth; i++)
		u->free_slots[u->nfree++] = depth - 1 - i;
	u->max_bytes = max_bytes;
	u->qtail = &u->qhead;
	u->ptail = &u->pend;

	memset(&p, 0, sizeof(p));
	p.flags = IORING_SETUP_COOP_TASKRUN;
	ret = io_uring_queue_init_params(depth * STEPS + 1, &u->ring, &p);
	if (ret == -EINVAL) {
		/* Before 5.19. */
		memset(&p, 0, sizeof(p));
		ret = io_uring_queue_init_params(depth * STEPS + 1, &u->ring, &p);
	}
	if (ret < 0)
		goto out_slots;
	/* RENAMEAT came with 5.11, like the NODROP CQ this relies on. */
	if (!(p.features & IORING_FEAT_NODROP)) {
		ret = -ENOSYS;
		goto out_ring;
	}
	ret = io_uring_register_files_sparse(&u->ring, depth);
	if (ret < 0)
		goto out_ring;
	u->efd = eventfd(0, EFD_CLOEXEC);
	if (u->efd < 0) {
		ret = -errno;
		goto out_ring;
	}
	ret = -pthread_mutex_init(&u->lock, NULL);
	if (ret < 0)
		goto out_efd;
	ret = -pthread_cond_init(&u->room, NULL);
	if (ret < 0)
		goto out_mutex;
	ret = -pthread_create(&u->thread, NULL, writer_main, u);
	if (ret < 0)
		goto out_cond;
	*out = u;
	return 0;

out_cond:
	pthread_cond_destroy(&u->room);
out_mutex:
	pthread_mutex_destroy(&u->lock);
out_efd:
	close(u->efd);
out_ring:
	io_uring_queue_exit(&u->ring);
out_slots:
	free(u->free_slots);
out_free:
	free(u);
	return ret;
}

static void wake(struct cfs_uring *u)
{
	uint64_t one = 1;

	if (write(u->efd, &one, sizeof(one)) < 0) {
		/* EAGAIN: the counter is full, the thread wakes anyway. */
	}
}

/* Appends r; waits while the queue holds max_bytes already. */
static void enqueue(struct cfs_uring *u, struct req *r)
{
	bool idle;

	pthread_mutex_lock(&u->lock);
	u->waiters++;
	while (u->bytes && u->bytes + r->bytes > u->max_bytes)
		pthread_cond_wait(&u->room, &u->lock);
	u->waiters--;
	u->bytes += r->bytes;
	u->queued++;
	*u->qtail = r;
	u->qtail = &r->next;
	idle = u->idle;
	u->idle = false;
	pthread_mutex_unlock(&u->lock);
	if (idle)
		wake(u);
}

int cfs_uring_write_atomic(struct cfs_uring *u, int dirfd, const char *tmp, const char *path,
			   const struct iovec *iov, unsigned iovcnt, cfs_uring_done_fn done,
			   void *ctx)
{
	struct req *r;

	if (!u || !iovcnt || iovcnt > CFS_URING_IOV_MAX)
		return -EINVAL;
	if (strlen(tmp) >= CFS_URING_NAME_MAX || strlen(path) >= CFS_URING_NAME_MAX)
		return -ENAMETOOLONG;
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->dirfd = dirfd;
	strcpy(r->tmp, tmp);
	strcpy(r->path, path);
	for (unsigned i = 0; i < iovcnt; i++) {
		r->iov[i] = iov[i];
		r->bytes += iov[i].iov_len;
	}
	r->iovcnt = iovcnt;
	r->done = done;
	r->ctx = ctx;
	enqueue(u, r);
	return 0;
}

void cfs_uring_drain(struct cfs_uring *u)
{
	uint64_t target;

	if (!u)
		return;
	pthread_mutex_lock(&u->lock);
	target = u->queued;
	u->waiters++;
	while (u->completed < target)
		pthread_cond_wait(&u->room, &u->lock);
	u->waiters--;
	pthread_mutex_unlock(&u->lock);
}

void cfs_uring_free(struct cfs_uring *u)
{
	if (!u)
		return;
	pthread_mutex_lock(&u->lock);
	u->stop = true;
	pthread_mutex_unlock(&u->lock);
	wake(u);
	pthread_join(u->thread, NULL);
	/* Cancels the eventfd read still pending. */
	io_uring_queue_exit(&u->ring);
	close(u->efd);
	pthread_cond_destroy(&u->room);
	pthread_mutex_destroy(&u->lock);
	free(u->free_slots);
	free(u);
}
