/* SPDX-License-Identifier: MIT */
/*
 * Staged objects (image.h, cfs_image_set_stage): what the stream
 * (prefetch.c) fetches ahead is kept as the store sent it, compressed and
 * not yet verified, one file per object in a directory beside the cache.
 * Fetching ahead then costs the network and one write of the stored
 * bytes, not a decompression and a hash of every chunk: on two cores the
 * stream's decoding competed with the start-up it was fetching for, and
 * most of what it fetches is never read (docs/BENCHMARKS.md, "Cold path
 * CPU").  A read that needs a staged chunk decodes and verifies it from
 * there exactly as it would a network reply (image_load.c), and removes
 * the file; a staged copy that fails verification is dropped and the chunk
 * fetched from the store again.  Nothing unverified is ever handed out or
 * written to the cache.
 *
 * The directory holds at most the stream's budget of stored bytes; it is
 * emptied when an image is staged into it (what a dead daemon left) and
 * when the image is closed.  Mounts of one image sharing a cache directory
 * share it: one may empty what another staged, which only costs a fetch.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache.h"
#include "codec.h"
#include "format.h"
#include "image_i.h"
#include "index.h"
#include "store.h"
#include "util.h"

/* The largest stored object accepted for a chunk of raw_size bytes: zstd's
 * worst case (raw blocks) is a few bytes per 128 KiB block over the
 * content, so anything far beyond is not this chunk. */
static uint64_t stored_max(uint32_t raw_size)
{
	return (uint64_t)raw_size + raw_size / 64 + 4096;
}

/* Removes every file of the directory dfd (no subdirectories are made). */
static void stage_empty(int dfd)
{
	struct dirent *de;
	DIR *dir = cfs_opendir_at(dfd, ".");

	if (!dir)
		return;
	while ((de = readdir(dir)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			(void)unlinkat(dfd, de->d_name, 0);
	closedir(dir);
}

static int mkdir_one(const char *path)
{
	return mkdir(path, 0700) == 0 || errno == EEXIST ? 0 : -errno;
}

int cfs_image_set_stage(struct cfs_image *img, const char *dir)
{
	char hex[CFS_DIGEST_HEX_LEN + 1], path[PATH_MAX];
	int ret, fd;

	cfs_digest_hex(&img->ref, hex);
	if (snprintf(path, sizeof(path), "%s/stage", dir) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	ret = mkdir_one(path);
	if (ret < 0)
		return ret;
	if (snprintf(path, sizeof(path), "%s/stage/%s", dir, hex) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	ret = mkdir_one(path);
	if (ret < 0)
		return ret;
	fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	stage_empty(fd);
	if (img->stage_fd >= 0)
		close(img->stage_fd);
	img->stage_fd = fd;
	return 0;
}

void cfs_image_stage_close(struct cfs_image *img)
{
	if (img->stage_fd < 0)
		return;
	stage_empty(img->stage_fd);
	close(img->stage_fd);
	img->stage_fd = -1;
}

int cfs_image_stage_fetch(struct cfs_image *img, uint32_t chunk)
{
	char hex[CFS_DIGEST_HEX_LEN + 1];
	struct cfs_chunk c;
	size_t from = 0, len;
	void *obj = NULL;
	int ret;

	ret = cfs_index_chunk(img->idx, chunk, &c);
	if (ret < 0)
		return -EUCLEAN;
	if (cfs_cache_size(img->cache, &c.digest) >= 0)
		return 0; /* someone read it meanwhile */
	ret = cfs_store_get_from(img->st, &c.digest, &from, &obj, &len);
	if (ret < 0)
		return ret;
	stat_add(&img->chunk_fetches, 1);
	if (len > stored_max(c.raw_size)) {
		ret = -EUCLEAN; /* not this chunk: the read will fetch it */
		goto out;
	}
	cfs_digest_hex(&c.digest, hex);
	ret = cfs_write_file_at(img->stage_fd, hex, obj, len, 0600, false);
	if (ret == 0)
		stat_add(&img->stage_bytes, len);
out:
	free(obj);
	return ret;
}

int cfs_image_stage_load(struct cfs_image *img, const cfs_digest *d, uint32_t raw_size,
			 uint8_t *dst)
{
	char hex[CFS_DIGEST_HEX_LEN + 1];
	void *obj = NULL;
	size_t len;
	int ret;

	if (img->stage_fd < 0)
		return -ENOENT;
	cfs_digest_hex(d, hex);
	ret = cfs_read_file_at(img->stage_fd, hex, stored_max(raw_size), &obj, &len);
	if (ret == -ENOENT)
		return ret;
	/* Once read it is in the cache (or refused): the copy has served. */
	(void)unlinkat(img->stage_fd, hex, 0);
	if (ret == 0 && cfs_obj_decode(dst, raw_size, obj, len, d) == (ssize_t)raw_size) {
		stat_add(&img->stage_hits, 1);
	} else {
		stat_add(&img->stage_bad, 1);
		if (ret == 0)
			ret = -EUCLEAN;
	}
	free(obj);
	return ret;
}
