/* SPDX-License-Identifier: MIT */
/*
 * cfs-loadpeers: what bench/loader.sh measures cfs-load against, on the
 * same model (the tensor table comes from libcfsload's parser; nothing of
 * its loading path is used).
 *
 *   cfs-loadpeers memcpy MODEL   memcpy of every tensor from a populated
 *                                mmap of its file into one prefaulted
 *                                destination (huge pages): the ceiling of a
 *                                load from the page cache
 *   cfs-loadpeers memcpy-fresh MODEL
 *                                the same memcpy into a fresh malloc'd
 *                                destination, the allocation and its page
 *                                faults on the clock (as cfs-load's total_s
 *                                has its allocation)
 *   cfs-loadpeers naive MODEL    what simple loaders do: one destination
 *                                (malloc), then per tensor malloc a buffer,
 *                                pread() the tensor into it, memcpy it into
 *                                the destination, free it
 *   cfs-loadpeers read MODEL     pread() of each file's tensor bytes in
 *                                16 MiB blocks straight into a prefaulted
 *                                destination, one thread (dd's figure)
 *
 * Prints one JSON line: {"peer":..,"bytes":..,"total_s":..,"gbps":..,
 * "check":..}; total_s covers what the peer does with the bytes
 * (memcpy: the copies alone; naive: allocation included, as cfs-load's
 * total_s).  check is a sum over the destination, so no copy is elided.
 * Exit 0, or 1 with a message.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cfs_load.h"

#define BLOCK (16u << 20)

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Reads len bytes at off; 0 or -errno (-EIO on a short file). */
static int pread_full(int fd, void *buf, size_t len, uint64_t off)
{
	char *p = buf;

	while (len > 0) {
		ssize_t n = pread(fd, p, len, (off_t)off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

/* One word per page and the last byte: enough that no copy is dead. */
static uint64_t check_sum(const unsigned char *p, size_t len)
{
	uint64_t s = 0;
	size_t i;

	for (i = 0; i + 8 <= len; i += 4096) {
		uint64_t w;

		memcpy(&w, p + i, 8);
		s += w;
	}
	if (len)
		s += p[len - 1];
	return s;
}

/* The best destination a copy can have: 2 MiB-aligned, transparent huge
 * pages asked for (as cfs-load's host target does), every page touched. */
static void *alloc_prefaulted(size_t len, void **map, size_t *map_len)
{
	size_t huge = 2u << 20;
	char *p;

	*map_len = (len ? len : 1) + huge;
	*map = mmap(NULL, *map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (*map == MAP_FAILED)
		return NULL;
	p = (char *)(((uintptr_t)*map + huge - 1) & ~(uintptr_t)(huge - 1));
	madvise(p, len, MADV_HUGEPAGE);
	memset(p, 0, len);
	return p;
}

struct files {
	size_t n;
	int *fd;
	unsigned char **map;
	uint64_t *size;
};

static void files_close(struct files *f)
{
	size_t i;

	for (i = 0; i < f->n; i++) {
		if (f->map && f->map[i] && f->map[i] != MAP_FAILED)
			munmap(f->map[i], f->size[i] ? f->size[i] : 1);
		if (f->fd[i] >= 0)
			close(f->fd[i]);
	}
	free(f->fd);
	free(f->map);
	free(f->size);
}

static int files_open(const struct cfs_model *m, int with_map, struct files *f)
{
	size_t i;

	f->n = cfs_model_file_count(m);
	f->fd = calloc(f->n, sizeof(*f->fd));
	f->map = calloc(f->n, sizeof(*f->map));
	f->size = calloc(f->n, sizeof(*f->size));
	if (!f->fd || !f->map || !f->size) {
		f->n = 0;
		files_close(f);
		return -ENOMEM;
	}
	for (i = 0; i < f->n; i++)
		f->fd[i] = -1;
	for (i = 0; i < f->n; i++) {
		const char *path = cfs_model_file_path(m, i);
		struct stat st;

		f->fd[i] = open(path, O_RDONLY | O_CLOEXEC);
		if (f->fd[i] < 0 || fstat(f->fd[i], &st) < 0) {
			int ret = -errno;

			fprintf(stderr, "cfs-loadpeers: %s: %s\n", path, strerror(errno));
			files_close(f);
			return ret;
		}
		f->size[i] = (uint64_t)st.st_size;
		if (with_map) {
			f->map[i] = mmap(NULL, st.st_size ? (size_t)st.st_size : 1, PROT_READ,
					 MAP_SHARED | MAP_POPULATE, f->fd[i], 0);
			if (f->map[i] == MAP_FAILED) {
				int ret = -errno;

				fprintf(stderr, "cfs-loadpeers: mmap %s: %s\n", path, strerror(errno));
				files_close(f);
				return ret;
			}
		}
	}
	return 0;
}

/*
 * A peer's copy of every tensor into *dst, on the clock: memcpy and read
 * fill the destination they are given, naive allocates its own (its
 * allocation is on the clock too, as cfs-load's) and frees it on failure.
 */
typedef int (*peer_copy_fn)(const struct cfs_model *m, const struct files *f,
			    unsigned char **dst);

static int copy_memcpy(const struct cfs_model *m, const struct files *f, unsigned char **dst)
{
	size_t i, n = cfs_model_tensor_count(m);
	uint64_t off = 0;

	for (i = 0; i < n; i++) {
		const struct cfs_tensor *t = cfs_model_tensor(m, i);

		memcpy(*dst + off, f->map[t->shard] + t->file_off, t->nbytes);
		off += t->nbytes;
	}
	return 0;
}

static int copy_naive(const struct cfs_model *m, const struct files *f, unsigned char **dstp)
{
	size_t i, n = cfs_model_tensor_count(m);
	uint64_t off = 0;
	unsigned char *dst;
	int ret;

	dst = malloc(cfs_model_bytes(m) ? cfs_model_bytes(m) : 1);
	if (!dst)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		const struct cfs_tensor *t = cfs_model_tensor(m, i);
		void *buf = malloc(t->nbytes ? t->nbytes : 1);

		if (!buf) {
			ret = -ENOMEM;
			goto out_dst;
		}
		ret = pread_full(f->fd[t->shard], buf, t->nbytes, t->file_off);
		if (ret < 0) {
			fprintf(stderr, "cfs-loadpeers: reading %s: %s\n", t->name, strerror(-ret));
			free(buf);
			goto out_dst;
		}
		memcpy(dst + off, buf, t->nbytes);
		free(buf);
		off += t->nbytes;
	}
	*dstp = dst;
	return 0;

out_dst:
	free(dst);
	return ret;
}

/* Tensors are contiguous in each file: read each file's span of them. */
static int copy_read(const struct cfs_model *m, const struct files *f, unsigned char **dst)
{
	size_t i, n = cfs_model_tensor_count(m);
	uint64_t off = 0;
	int ret;

	for (i = 0; i < n;) {
		const struct cfs_tensor *t = cfs_model_tensor(m, i);
		uint64_t lo = t->file_off, hi = t->file_off + t->nbytes, pos;
		unsigned shard = t->shard;

		for (i++; i < n; i++) {
			const struct cfs_tensor *u = cfs_model_tensor(m, i);

			if (u->shard != shard || u->file_off != hi)
				break;
			hi += u->nbytes;
		}
		for (pos = lo; pos < hi; pos += BLOCK) {
			size_t len = hi - pos < BLOCK ? (size_t)(hi - pos) : BLOCK;

			ret = pread_full(f->fd[shard], *dst + off, len, pos);
			if (ret < 0) {
				fprintf(stderr, "cfs-loadpeers: reading %s: %s\n",
					cfs_model_file_path(m, shard), strerror(-ret));
				return ret;
			}
			off += len;
		}
	}
	return 0;
}

/* Opens the model's files (mapped with with_map), then times COPY; the
 * opening is off the clock. */
static int peer_run(const struct cfs_model *m, int with_map, peer_copy_fn copy,
		    unsigned char **dst, double *secs)
{
	struct files f;
	int ret = files_open(m, with_map, &f);
	double t0;

	if (ret < 0)
		return ret;
	t0 = now_s();
	ret = copy(m, &f, dst);
	*secs = now_s() - t0;
	files_close(&f);
	return ret;
}

int main(int argc, char **argv)
{
	char err[256] = "";
	struct cfs_model *m = NULL;
	unsigned char *dst = NULL;
	void *map = NULL;
	size_t map_len = 0;
	double secs = 0;
	uint64_t bytes;
	int ret, naive = 0;

	if (argc != 3 || (strcmp(argv[1], "memcpy") && strcmp(argv[1], "memcpy-fresh") &&
			  strcmp(argv[1], "naive") && strcmp(argv[1], "read"))) {
		fprintf(stderr, "usage: cfs-loadpeers memcpy|memcpy-fresh|naive|read MODEL\n");
		return 2;
	}
	ret = cfs_model_open(argv[2], &m, err, sizeof(err));
	if (ret < 0) {
		fprintf(stderr, "cfs-loadpeers: %s\n", err[0] ? err : strerror(-ret));
		return 1;
	}
	bytes = cfs_model_bytes(m);
	if (!strcmp(argv[1], "naive")) {
		naive = 1;
		ret = peer_run(m, 0, copy_naive, &dst, &secs);
	} else if (!strcmp(argv[1], "memcpy-fresh")) {
		/* malloc of this size is a lazy mmap: the page faults (and the
		 * kernel zeroing the pages) land inside copy_memcpy's clock. */
		naive = 1; /* freed with free() */
		dst = malloc(bytes ? bytes : 1);
		ret = dst ? peer_run(m, 1, copy_memcpy, &dst, &secs) : -ENOMEM;
	} else {
		dst = alloc_prefaulted(bytes, &map, &map_len);
		if (!dst) {
			ret = -ENOMEM;
		} else if (!strcmp(argv[1], "memcpy")) {
			ret = peer_run(m, 1, copy_memcpy, &dst, &secs);
		} else {
			ret = peer_run(m, 0, copy_read, &dst, &secs);
		}
	}
	if (ret < 0) {
		fprintf(stderr, "cfs-loadpeers %s %s: %s\n", argv[1], argv[2], strerror(-ret));
		goto out;
	}
	printf("{\"peer\":\"%s\",\"bytes\":%" PRIu64 ",\"total_s\":%.6f,\"gbps\":%.3f,"
	       "\"check\":%" PRIu64 "}\n", argv[1], bytes, secs,
	       secs > 0 ? bytes / secs / 1e9 : 0.0, check_sum(dst, bytes));
out:
	if (naive)
		free(dst);
	else if (dst)
		munmap(map, map_len);
	cfs_model_free(m);
	return ret < 0 ? 1 : 0;
}
