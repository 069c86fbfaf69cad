/* SPDX-License-Identifier: MIT */
/*
 * Zero-copy READ replies.  The bytes of a reply go from the cache files
 * into a pipe of the serving thread with splice(2), which passes page
 * references and copies nothing; pieces in memory (a chunk just fetched)
 * and holes are written into it.  libfuse then splices the pipe into
 * /dev/fuse behind the reply header (fuse_reply_data() with an fd-backed
 * buffer, FUSE_CAP_SPLICE_WRITE), and the kernel copies the pages into the
 * mount's page cache: one copy, in the kernel, where the copy path makes
 * three (read() into a buffer, into the reply, into the page cache).
 *
 * Why fill a pipe of our own rather than hand libfuse the cache file: a
 * file that comes up short (truncated under the mount) must never become a
 * short reply.  libfuse sends whatever its splice got, and the kernel takes
 * a short READ reply for end of file and shrinks the file.  Here a short
 * splice is caught before anything is sent; the caller drops the cache
 * entry and answers through the copy path, which has the chunk again.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

#include "cache.h"
#include "fs.h"
#include "image.h"
#include "util.h"

#define PAGE 4096u
/* Room for a 1 MiB reply at any offset, over two chunks, with a few
 * memory pieces.  Above /proc/sys/fs/pipe-max-size (1 MiB by default),
 * which only CAP_SYS_RESOURCE may exceed; without it pipes get what that
 * allows, and cfs_fs_splice_probe() makes READs small enough to fit. */
#define PIPE_BYTES (2u << 20)
#define PIPE_MIN (64u << 10)
/* libfuse's own pipe carries the reply header too, and it wants room for
 * three pages more than the reply (its sizing rule in fuse_send_data_iov). */
#define LIBFUSE_PIPE_EXTRA (4 * PAGE)
#define READ_MAX (1u << 20)

struct fs_pipe {
	int rd, wr;
	unsigned slots; /* buffers it holds: pages, give or take merging */
};

/* Holes, in the pipe or an iovec reply: never written, so reads of it map
 * the zero page and it costs no memory.  No hole in a reply is larger. */
static uint8_t zero_area[READ_MAX];

static pthread_key_t pipe_key;
static pthread_once_t pipe_once = PTHREAD_ONCE_INIT;
static int pipe_key_err;

static void pipe_free(void *p)
{
	struct fs_pipe *fp = p;

	if (!fp)
		return;
	close(fp->rd);
	close(fp->wr);
	free(fp);
}

static void pipe_key_init(void)
{
	pipe_key_err = -pthread_key_create(&pipe_key, pipe_free);
}

static int pipe_new(struct fs_pipe **out)
{
	struct fs_pipe *fp = malloc(sizeof(*fp));
	int fds[2], size;

	if (!fp)
		return -ENOMEM;
	/* Non-blocking: a pipe that turns out too small is an error to fall
	 * back from, never a thread stuck writing to itself. */
	if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) < 0) {
		free(fp);
		return -errno;
	}
	fp->rd = fds[0];
	fp->wr = fds[1];
	/* EPERM above pipe-max-size without CAP_SYS_RESOURCE: halve. */
	for (unsigned want = PIPE_BYTES; want >= PIPE_MIN; want /= 2)
		if (fcntl(fp->wr, F_SETPIPE_SZ, want) >= 0)
			break;
	size = fcntl(fp->wr, F_GETPIPE_SZ);
	fp->slots = size > 0 ? (unsigned)size / PAGE : 16;
	*out = fp;
	return 0;
}

static int pipe_get(struct fs_pipe **out)
{
	struct fs_pipe *fp = NULL;
	int ret;

	pthread_once(&pipe_once, pipe_key_init);
	if (pipe_key_err)
		return pipe_key_err;
	fp = pthread_getspecific(pipe_key);
	if (!fp) {
		ret = pipe_new(&fp);
		if (ret < 0)
			return ret;
		ret = -pthread_setspecific(pipe_key, fp);
		if (ret < 0) {
			pipe_free(fp);
			return ret;
		}
	}
	*out = fp;
	return 0;
}

/* A pipe left holding bytes would prefix them to the next reply: close it;
 * the thread's next reply makes a new one. */
static void pipe_discard(struct fs_pipe *fp)
{
	pthread_setspecific(pipe_key, NULL);
	pipe_free(fp);
}

static int pipe_write_all(int wr, const uint8_t *p, size_t len)
{
	while (len) {
		ssize_t n = write(wr, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno == EAGAIN ? -E2BIG : -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Splices len bytes at off of a cache file into the pipe: 0, -E2BIG (no
 * room), or -ESTALE: the file ended early or failed to read, so it cannot
 * serve this chunk. */
static int pipe_splice_file(int wr, int fd, uint64_t off, size_t len)
{
	loff_t pos = (loff_t)off;

	while (len) {
		ssize_t n = splice(fd, &pos, wr, NULL, len, SPLICE_F_NONBLOCK);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return -E2BIG;
		if (n <= 0)
			return -ESTALE;
		len -= (size_t)n;
	}
	return 0;
}

/* Pipe buffers the segments take at most: a spliced page each, a written
 * piece rounded up plus one it may start in. */
static unsigned segs_slots(const struct cfs_image_seg *segs, unsigned n)
{
	unsigned slots = 0;

	for (unsigned k = 0; k < n; k++) {
		const struct cfs_image_seg *s = &segs[k];

		if (s->buf && cfs_buf_fd(s->buf) >= 0)
			slots += (unsigned)(((s->off % PAGE) + s->len + PAGE - 1) / PAGE);
		else
			slots += (unsigned)((s->len + PAGE - 1) / PAGE) + 1;
	}
	return slots;
}

size_t cfs_fs_splice_probe(void)
{
	struct fs_pipe *fp;
	size_t bytes, max;

	if (pipe_new(&fp) < 0)
		return 0;
	bytes = (size_t)fp->slots * PAGE;
	pipe_free(fp);
	if (bytes < PIPE_MIN)
		return 0;
	/* Ours takes the data of a page-aligned READ; libfuse's the same
	 * plus its extra. */
	max = bytes - LIBFUSE_PIPE_EXTRA;
	max -= max % PAGE;
	return CFS_MIN(max, (size_t)READ_MAX);
}

/* Every piece in memory or a hole: an iovec each into the reply, which
 * the kernel copies once, as from a buffer. */
static int reply_iov(fuse_req_t req, const struct cfs_image_seg *segs, unsigned nseg)
{
	struct iovec iov[FS_REPLY_SEGS_MAX];
	unsigned k = 0;

	for (unsigned i = 0; i < nseg; i++) {
		const struct cfs_image_seg *s = &segs[i];

		if (k == FS_REPLY_SEGS_MAX || (!s->buf && s->len > sizeof(zero_area)))
			return -E2BIG;
		/* fuse_reply_iov() only reads what the iovecs point to. */
		iov[k].iov_base = s->buf ? (void *)(uintptr_t)(cfs_buf_data(s->buf) + s->off)
					 : zero_area;
		iov[k].iov_len = s->len;
		k++;
	}
	fuse_reply_iov(req, iov, (int)k);
	return 0;
}

int cfs_fs_reply_splice(struct cfs_fs *fs, fuse_req_t req, const struct cfs_image_seg *segs,
			unsigned nseg, size_t total)
{
	struct fuse_bufvec bv = FUSE_BUFVEC_INIT(total);
	struct fs_pipe *fp = NULL;
	int ret, queued = 0;
	unsigned k;

	for (k = 0; k < nseg; k++)
		if (segs[k].buf && cfs_buf_fd(segs[k].buf) >= 0)
			break;
	if (k == nseg)
		return reply_iov(req, segs, nseg);
	ret = pipe_get(&fp);
	if (ret < 0)
		return ret;
	if (segs_slots(segs, nseg) > fp->slots)
		return -E2BIG;
	for (k = 0; k < nseg; k++) {
		const struct cfs_image_seg *s = &segs[k];

		if (!s->buf)
			ret = s->len <= sizeof(zero_area) ? pipe_write_all(fp->wr, zero_area, s->len)
							  : -E2BIG;
		else if (cfs_buf_fd(s->buf) >= 0)
			ret = pipe_splice_file(fp->wr, cfs_buf_fd(s->buf), s->off, s->len);
		else
			ret = pipe_write_all(fp->wr, cfs_buf_data(s->buf) + s->off, s->len);
		if (ret < 0) {
			pipe_discard(fp);
			if (ret == -ESTALE) {
				cfs_cache_invalidate(fs->cache, s->buf);
				cfs_info("cache file of chunk %u came up short; fetching it again",
					 s->chunk);
			}
			return ret;
		}
	}

	/* RETRY: where libfuse reads the pipe instead of splicing it, all of it. */
	bv.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_RETRY;
	bv.buf[0].fd = fp->rd;
	/* Replied whatever it returns (an error is the kernel's: the request
	 * was interrupted, say). */
	fuse_reply_data(req, &bv, 0);
	if (ioctl(fp->rd, FIONREAD, &queued) < 0 || queued > 0)
		pipe_discard(fp);
	return 0;
}
