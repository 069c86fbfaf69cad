/* SPDX-License-Identifier: MIT */
/*
 * Source over plain files on any filesystem.  A handle is the file
 * descriptor itself, so that the reader can hand it to io_uring or reopen
 * it with O_DIRECT through /proc/self/fd.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "loader_i.h"
#include "util.h"

static int file_open(struct cfs_src *s, const char *path, uint64_t *h, uint64_t *size,
		     bool *is_dir)
{
	struct stat st;
	int fd, ret;

	if (!path || !*path || !h || !size || !is_dir)
		return -EINVAL;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		ret = -errno;
		goto out_close;
	}
	if (S_ISDIR(st.st_mode)) {
		/* nothing to read from a directory: no handle to keep */
		close(fd);
		*h = UINT64_MAX;
		*size = 0;
		*is_dir = true;
		return 0;
	}
	if (!S_ISREG(st.st_mode)) {
		ret = -EINVAL;
		goto out_close;
	}
	*h = (uint64_t)fd;
	*size = (uint64_t)st.st_size;
	*is_dir = false;
	return 0;

out_close:
	close(fd);
	return ret;
}

static ssize_t file_pread(struct cfs_src *s, uint64_t h, void *buf, size_t len, uint64_t off)
{
	char *p = buf;
	size_t done = 0;

	if (off > (uint64_t)INT64_MAX)
		return -EINVAL;
	if (len > SSIZE_MAX)
		len = SSIZE_MAX;
	while (done < len) {
		ssize_t n = pread((int)h, p + done, len - done, (off_t)(off + done));

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		done += (size_t)n;
	}
	return (ssize_t)done;
}

static int file_fd(struct cfs_src *s, uint64_t h)
{
	return h <= INT_MAX ? (int)h : -1;
}

static void file_close(struct cfs_src *s, uint64_t h)
{
	if (h <= INT_MAX)
		close((int)h);
}

static void file_free(struct cfs_src *s)
{
	free(s);
}

static const struct cfs_src_ops file_ops = {
	.name = "file",
	.open = file_open,
	.pread = file_pread,
	.fd = file_fd,
	.close = file_close,
	.free = file_free,
};

int cfs_src_file_new(struct cfs_src **out)
{
	struct cfs_src *s;

	if (!out)
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->ops = &file_ops;
	*out = s;
	return 0;
}
