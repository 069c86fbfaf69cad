/* SPDX-License-Identifier: MIT */
/*
 * Source over the files of a cfs image, read through lib/ without FUSE
 * (direct mode): the store (a directory, http(s):// or s3:// URL), a chunk
 * cache (memory, plus a directory when given: the same one cfs-mount uses
 * can be shared) and the image, opened as cfs-mount opens them.  Reads are
 * cfs_image_read(): verified bytes only, chunks fetched ahead by the
 * image's readahead while a file is read forward.
 *
 * A handle is the inode number.  Paths are resolved inside the image, its
 * root being "/"; symlinks are followed there (absolute ones from the
 * image's root, never the host's), as a model in a Hugging Face cache
 * (snapshots/REV/x.safetensors -> ../../blobs/HASH) needs.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "format.h"
#include "image.h"
#include "index.h"
#include "loader_i.h"
#include "open.h"
#include "util.h"

#define SYMLINK_MAX 40 /* as the kernel's MAXSYMLINKS */

/* The loader reads a file front to back with many reads in flight, which
 * the image's sequential detection takes for jumps: the source asks for
 * the chunks ahead itself.  AHEAD_BYTES stays well inside the memory
 * cache (256 MiB) so that nothing fetched ahead is evicted before it is
 * read; READAHEAD_THREADS requests on the wire fill a 20 ms link. */
#define AHEAD_BYTES (128ull << 20)
#define READAHEAD_THREADS 64u
#define AHEAD_FILES 64u

struct ahead {
	uint64_t ino;   /* 0: free */
	uint64_t end;   /* queued up to here */
};

struct image_src {
	struct cfs_src s;
	struct cfs_opened op;            /* store, cache and image */
	struct cfs_image *img;           /* op.img */
	const struct cfs_index *idx;
	pthread_mutex_t lock;            /* ahead[] */
	struct ahead ahead[AHEAD_FILES]; /* by ino % AHEAD_FILES */
};

static struct image_src *image_of(struct cfs_src *s)
{
	return (struct image_src *)s;
}

/* path with every symlink followed; 0, -ENOENT, -ENOTDIR, -ELOOP, -ENOMEM. */
static int resolve(const struct cfs_index *idx, const char *path, uint64_t *out)
{
	uint64_t cur = CFS_ROOT_INO, next;
	char *buf = strdup(path);
	const char *p = buf, *name;
	unsigned links = 0;
	size_t n;
	int ret = 0;

	if (!buf)
		return -ENOMEM;
	while ((n = cfs_path_next(&p, &name))) {
		struct cfs_inode in;
		const char *target;
		size_t tlen, rest;
		char *nb;

		if (n == 2 && name[0] == '.' && name[1] == '.') {
			ret = cfs_index_inode(idx, cur, &in);
			if (ret < 0)
				break;
			cur = in.parent ? in.parent : cur;
			continue;
		}
		ret = cfs_index_lookup(idx, cur, name, n, &next);
		if (ret == 0)
			ret = cfs_index_inode(idx, next, &in);
		if (ret < 0)
			break;
		if (!S_ISLNK(in.mode)) {
			cur = next;
			continue;
		}
		if (++links > SYMLINK_MAX) {
			ret = -ELOOP;
			break;
		}
		ret = cfs_index_readlink(idx, next, &target, &tlen);
		if (ret < 0)
			break;
		/* The link's target, then what is left of the path. */
		rest = strlen(p);
		nb = malloc(tlen + 1 + rest + 1);
		if (!nb) {
			ret = -ENOMEM;
			break;
		}
		memcpy(nb, target, tlen);
		nb[tlen] = '/';
		memcpy(nb + tlen + 1, p, rest + 1);
		if (tlen && target[0] == '/')
			cur = CFS_ROOT_INO;
		free(buf);
		buf = nb;
		p = buf;
	}
	free(buf);
	if (ret == 0)
		*out = cur;
	return ret;
}

static int image_open(struct cfs_src *s, const char *path, uint64_t *h, uint64_t *size,
		      bool *is_dir)
{
	struct image_src *is = image_of(s);
	struct cfs_inode in;
	uint64_t ino = 0;
	int ret;

	if (!path || !h || !size || !is_dir)
		return -EINVAL;
	ret = resolve(is->idx, path, &ino);
	if (ret < 0)
		return ret;
	ret = cfs_index_inode(is->idx, ino, &in);
	if (ret < 0)
		return ret;
	if (S_ISDIR(in.mode)) {
		*h = UINT64_MAX;
		*size = 0;
		*is_dir = true;
		return 0;
	}
	if (!S_ISREG(in.mode))
		return -EINVAL;
	*h = ino;
	*size = in.size;
	*is_dir = false;
	return 0;
}

/* Keeps the chunks up to AHEAD_BYTES past this read queued for fetching. */
static void read_ahead(struct image_src *is, uint64_t ino, uint64_t off, size_t len)
{
	struct ahead *a = &is->ahead[ino % AHEAD_FILES];
	uint64_t want = off + len + AHEAD_BYTES;
	int64_t n;

	pthread_mutex_lock(&is->lock);
	if (a->ino != ino)
		*a = (struct ahead){ .ino = ino, .end = off };
	if (a->end < off)
		a->end = off;
	if (a->end < want) {
		n = cfs_image_willneed(is->img, ino, a->end, want - a->end);
		if (n > 0)
			a->end += (uint64_t)n;
	}
	pthread_mutex_unlock(&is->lock);
}

static ssize_t image_pread(struct cfs_src *s, uint64_t h, void *buf, size_t len, uint64_t off)
{
	struct image_src *is = image_of(s);

	read_ahead(is, h, off, len);
	/* Already whole: short only at the end of the file. */
	return cfs_image_read(is->img, h, buf, len, off);
}

static int image_fd(struct cfs_src *s, uint64_t h)
{
	return -1;
}

static void image_close(struct cfs_src *s, uint64_t h)
{
}

static void image_free(struct cfs_src *s)
{
	struct image_src *is;

	if (!s)
		return;
	is = image_of(s);
	cfs_open_close(&is->op);
	pthread_mutex_destroy(&is->lock);
	free(is);
}

static const struct cfs_src_ops image_ops = {
	.name = "image",
	.open = image_open,
	.pread = image_pread,
	.fd = image_fd,
	.close = image_close,
	.free = image_free,
};

int cfs_src_image_new(const char *store, const char *image, const struct cfs_open_opts *oo,
		      struct cfs_src **out, char *err, size_t errlen)
{
	struct image_src *is;
	char msg[512];
	int ret;

	is = calloc(1, sizeof(*is));
	if (!is)
		return cfs_load_err(err, errlen, -ENOMEM, "%s", strerror(ENOMEM));
	is->s.ops = &image_ops;
	pthread_mutex_init(&is->lock, NULL);

	ret = cfs_open_image(oo, store, image, NULL, &is->op, msg, sizeof(msg));
	if (ret < 0) {
		cfs_load_err(err, errlen, ret, "%s", msg);
		goto fail;
	}
	is->img = is->op.img;
	ret = cfs_image_set_readahead(is->img, READAHEAD_THREADS, CFS_READAHEAD_CHUNKS_DEFAULT);
	if (ret < 0) {
		cfs_load_err(err, errlen, ret, "image %s: readahead: %s", is->op.ref,
			     cfs_strerror(ret));
		goto fail;
	}
	is->idx = cfs_image_index(is->img);
	*out = &is->s;
	return 0;

fail:
	image_free(&is->s);
	return ret;
}
