/* SPDX-License-Identifier: MIT */
/*
 * What the fuzz targets of cfs-pack's sources (fuzz-oci, fuzz-oci-layout,
 * fuzz-tar) share: a run of the real pipeline (libcfspack, tools/pack.h)
 * into a temporary store, and the check of its outcome: a failure must be
 * a negative errno with a message, and an accepted input must give an
 * image whose index opens.  One worker and zstd level 1: the sources are
 * under test, not the codecs.  The store is under /dev/shm when there is
 * one (its sync costs nothing there) and is emptied every few hundred
 * runs, so that a long campaign does not fill it.
 *
 * Definitions, not only declarations: include it from the one .c of a
 * target.
 */
#ifndef CFS_FUZZ_PACK_H
#define CFS_FUZZ_PACK_H

#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz.h"
#include "index.h"
#include "store.h"
#include "util.h"

#include "pack.h"

#define FUZZ_CHUNK_SIZE (64u << 10)
#define FUZZ_SMALL_MAX 4096u
#define FUZZ_STORE_RUNS 256

static char fuzz_store_dir[80];
static struct cfs_store *fuzz_store;
static unsigned fuzz_store_runs;

/* nftw: removes everything below the root it was given. */
static int fuzz_rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	if (ftw->level > 0)
		remove(path);
	return 0;
}

static void fuzz_store_empty(void)
{
	cfs_store_free(fuzz_store);
	fuzz_store = NULL;
	nftw(fuzz_store_dir, fuzz_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void fuzz_store_remove(void)
{
	fuzz_store_empty();
	rmdir(fuzz_store_dir);
}

/* Logs go nowhere: a hostile input makes a lot of them. */
static void fuzz_pack_quiet(const char *prog)
{
	static FILE *devnull;

	if (!devnull) {
		devnull = fopen("/dev/null", "we");
		cfs_log_setup(prog, CFS_LOG_ERR, devnull);
	}
}

/* The temporary store, made on the first call, emptied now and then. */
static struct cfs_store *fuzz_pack_store(void)
{
	const char *tmp = getenv("TMPDIR");

	if (fuzz_store && ++fuzz_store_runs % FUZZ_STORE_RUNS == 0)
		fuzz_store_empty();
	if (fuzz_store)
		return fuzz_store;
	if (!fuzz_store_dir[0]) {
		if (access("/dev/shm", W_OK) == 0)
			tmp = "/dev/shm";
		snprintf(fuzz_store_dir, sizeof(fuzz_store_dir), "%.40s/fuzz-pack.XXXXXX",
			 tmp && *tmp ? tmp : "/tmp");
		FUZZ_ASSERT(mkdtemp(fuzz_store_dir));
		atexit(fuzz_store_remove);
	}
	FUZZ_ASSERT(cfs_store_open(fuzz_store_dir, CFS_STORE_CREATE, &fuzz_store) == 0);
	return fuzz_store;
}

/* Runs src over arg (and fd, see struct cfs_pack_source) through the
 * pipeline, platform as --platform gives it.  Returns the outcome, 0 or
 * -errno; on success *ref is the image's reference. */
static inline int fuzz_pack_ref(const struct cfs_pack_source *src, const char *arg, int fd,
				const char *platform, cfs_digest *ref)
{
	struct cfs_pack_opts o = {
		.chunker = { .chunk_size = FUZZ_CHUNK_SIZE, .small_max = FUZZ_SMALL_MAX },
		.level = 1,
		.jobs = 1,
		.platform = platform,
	};
	struct cfs_pack_ctx *p;
	int ret;

	FUZZ_ASSERT(cfs_pack_new(fuzz_pack_store(), &o, &p) == 0);
	ret = cfs_pack_run(p, src, arg, fd);
	if (ret == 0)
		ret = cfs_pack_finish(p, ref, NULL);
	FUZZ_ASSERT(ret <= 0);
	if (ret < 0)
		FUZZ_ASSERT(cfs_pack_error(p)[0]);
	cfs_pack_free(p);
	return ret;
}

/* fuzz_pack_ref(), and on success the image's index opens; *index is
 * that index (to be freed with cfs_index_free()) when index is not NULL. */
static inline int fuzz_pack_run(const struct cfs_pack_source *src, const char *arg, int fd,
				const char *platform, struct cfs_index **index)
{
	struct cfs_index *idx = NULL;
	cfs_digest ref;
	void *raw;
	size_t len;
	int ret;

	ret = fuzz_pack_ref(src, arg, fd, platform, &ref);
	if (ret < 0)
		return ret;
	FUZZ_ASSERT(cfs_pack_index_get(fuzz_store, &ref, &raw, &len) == 0);
	FUZZ_ASSERT(cfs_index_open(raw, len, &idx) == 0); /* idx owns raw */
	if (index)
		*index = idx;
	else
		cfs_index_free(idx);
	return 0;
}

/* An accepted image source: the index names a config, stored with the
 * image.  Frees idx. */
static inline void fuzz_pack_config_check(struct cfs_index *idx)
{
	cfs_digest d;
	uint64_t size = 0, stored;

	FUZZ_ASSERT(cfs_index_config(idx, &d, &size) == 0 && size > 0);
	FUZZ_ASSERT(cfs_store_has(fuzz_store, &d, &stored) == 1);
	cfs_index_free(idx);
}

#endif /* CFS_FUZZ_PACK_H */
