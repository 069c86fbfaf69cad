/* SPDX-License-Identifier: MIT */
/*
 * Asynchronous whole-file writes through one io_uring and a thread that
 * owns it, for the chunk cache's disk tier.
 *
 * cfs_uring_write_atomic() queues "create <tmp> with O_EXCL, write the
 * iovecs, close, rename <tmp> to <path>" and returns at once; the writer
 * thread submits what is queued in batches, each file as one linked chain
 * (OPENAT into a registered file slot, WRITEV, CLOSE, RENAMEAT), so the
 * rename comes last and only after the whole content was written.  A
 * failed step cancels the rest and the temporary is unlinked.  When the
 * open fails with ENOENT the parent directory of tmp (one level) is made
 * and the chain tried once more.  Files are created 0600 and directories
 * 0700: the chunks of private files must stay their owner's.
 *
 * Built without liburing, cfs_uring_new() returns -ENOTSUP and the rest
 * are never reached; at run time it may return -ENOSYS, -EPERM (the
 * kernel.io_uring_disabled sysctl) or -ENOMEM: callers fall back to their
 * synchronous path.
 *
 * Thread-safe: any thread may queue; the completion callbacks run on the
 * writer thread, one at a time, and must not queue on the same ring.
 */
#ifndef CFS_URING_H
#define CFS_URING_H

#include <errno.h>
#include <stddef.h>
#include <sys/uio.h>

#include "cfs_config.h"

struct cfs_uring;

/* Called once per queued write with 0 or the -errno of the first failed
 * step (a short write reads as -ENOSPC). */
typedef void (*cfs_uring_done_fn)(void *ctx, int res);

/* Longest tmp or path name, NUL included. */
#define CFS_URING_NAME_MAX 128
#define CFS_URING_IOV_MAX 2

#if CFS_HAVE_IO_URING

/* depth: files in flight at once; max_bytes: bytes queued or in flight
 * before cfs_uring_write_atomic() waits (one write is always let in).
 * Returns 0 or -errno. */
int cfs_uring_new(unsigned depth, size_t max_bytes, struct cfs_uring **out);

/* Waits for every queued write and its callback, then frees; NULL is fine. */
void cfs_uring_free(struct cfs_uring *u);

/* Queues the write; tmp and path (relative to dirfd) are copied, the
 * iovecs and what they point to must stay valid until done(ctx, res) runs.
 * dirfd must stay open until then too.  Returns 0, or -ENAMETOOLONG /
 * -EINVAL (then done is not called). */
int cfs_uring_write_atomic(struct cfs_uring *u, int dirfd, const char *tmp, const char *path,
			   const struct iovec *iov, unsigned iovcnt, cfs_uring_done_fn done,
			   void *ctx);

/* Waits until everything queued before the call has completed and its
 * callback returned.  Not from a callback. */
void cfs_uring_drain(struct cfs_uring *u);

#else

static inline int cfs_uring_new(unsigned depth, size_t max_bytes, struct cfs_uring **out)
{
	return -ENOTSUP;
}

static inline void cfs_uring_free(struct cfs_uring *u)
{
}

static inline int cfs_uring_write_atomic(struct cfs_uring *u, int dirfd, const char *tmp,
					 const char *path, const struct iovec *iov,
					 unsigned iovcnt, cfs_uring_done_fn done, void *ctx)
{
	return -ENOTSUP;
}

static inline void cfs_uring_drain(struct cfs_uring *u)
{
}

#endif /* CFS_HAVE_IO_URING */

#endif /* CFS_URING_H */
