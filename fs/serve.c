/* SPDX-License-Identifier: MIT */
/*
 * A daemon under a holder (holder.c) serves a connection it did not make:
 * the holder's /dev/fuse fd, with the INIT request the kernel sent when it
 * was mounted, which the daemon processes as if it had just arrived.  Only
 * the mount's first daemon answers it (the kernel sets the connection up
 * once); later ones drop that reply, through custom I/O whose userdata,
 * the session's, says so.  Once it serves, the daemon writes one byte and
 * the reference it serves on the pipe the holder waits on.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "mount_i.h"

static ssize_t serve_read(int fd, void *buf, size_t len, void *userdata)
{
	(void)userdata;
	return read(fd, buf, len);
}

static ssize_t serve_writev(int fd, struct iovec *iov, int count, void *userdata)
{
	const struct cfs_fs *fs = userdata;
	ssize_t n = 0;

	if (!fs->serve_drop_replies)
		return writev(fd, iov, count);
	for (int i = 0; i < count; i++)
		n += (ssize_t)iov[i].iov_len;
	return n;
}

/* libfuse 3.14 offers splice only to custom I/O that has these. */
static ssize_t serve_splice(int fdin, off_t *offin, int fdout, off_t *offout, size_t len,
			    unsigned int flags, void *userdata)
{
	(void)userdata;
	return splice(fdin, offin, fdout, offout, len, flags);
}

static int env_fd(const char *name)
{
	const char *v = getenv(name);
	unsigned long n;

	if (!v || cfs_parse_uint(v, 0, INT_MAX, &n) < 0)
		return -1;
	return (int)n;
}

/* Attaches the session to the holder's connection: the fd, then the INIT
 * request the kernel sent when it was mounted, processed as if it had
 * just arrived.  *ready_fd: where to say that the daemon serves. */
int cfs_serve_attach(struct fuse_session *se, struct cfs_fs *fs, int *ready_fd)
{
	static const struct fuse_custom_io io = { .read = serve_read, .writev = serve_writev,
						  .splice_receive = serve_splice,
						  .splice_send = serve_splice };
	int fd = env_fd(CFS_SERVE_FD_ENV), init_fd = env_fd(CFS_SERVE_INIT_ENV);
	const char *reply = getenv(CFS_SERVE_REPLY_ENV);
	struct fuse_buf fbuf = { 0 };
	void *init = NULL;
	size_t len = 0;
	int ret;

	*ready_fd = env_fd(CFS_SERVE_READY_ENV);
	if (fd < 0 || init_fd < 0 || *ready_fd < 0) {
		fprintf(stderr, PROG ": bad %s/%s/%s from the holder\n", CFS_SERVE_FD_ENV,
			CFS_SERVE_INIT_ENV, CFS_SERVE_READY_ENV);
		return -EINVAL;
	}
	fcntl(*ready_fd, F_SETFD, FD_CLOEXEC);
	fcntl(fd, F_SETFD, FD_CLOEXEC);
	ret = cfs_holder_load_init(init_fd, &init, &len);
	close(init_fd);
	if (ret < 0) {
		fprintf(stderr, PROG ": the holder's INIT request: %s\n", cfs_strerror(ret));
		return ret;
	}
	ret = fuse_session_custom_io(se, &io, fd);
	if (ret < 0) {
		free(init);
		fprintf(stderr, PROG ": attaching to the holder's connection: %s\n",
			strerror(-ret));
		return ret;
	}
	fbuf.mem = init;
	fbuf.size = len;
	fs->serve_drop_replies = !(reply && !strcmp(reply, "1"));
	fuse_session_process_buf(se, &fbuf);
	fs->serve_drop_replies = false;
	free(init);
	return 0;
}

/* Tells the holder that this daemon serves.  Its stderr was the user's
 * until now (for the errors of a failed start); from here on it holds no
 * one's terminal or pipe open, or `x=$(cfs-mount ...)` would wait for it. */
void cfs_serve_ready(int *ready_fd, const char *ref)
{
	char c[1 + CFS_REF_STRLEN] = { CFS_READY_OK };
	int nullfd;

	if (*ready_fd < 0)
		return;
	fflush(NULL);
	nullfd = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (nullfd >= 0) {
		dup2(nullfd, STDIN_FILENO);
		dup2(nullfd, STDOUT_FILENO);
		dup2(nullfd, STDERR_FILENO);
		if (nullfd > STDERR_FILENO)
			close(nullfd);
	}
	/* One write, which a pipe keeps whole: the byte and the reference
	 * served, which the holder hands to later daemons. */
	memcpy(c + 1, ref, CFS_REF_STRLEN - 1);
	if (write(*ready_fd, c, sizeof(c) - 1) != (ssize_t)sizeof(c) - 1) {
		/* The holder then sees the pipe close: it says the same. */
	}
	close(*ready_fd);
	*ready_fd = -1;
}
