/* SPDX-License-Identifier: MIT */
/*
 * cfs-pack internals shared by the pipeline (pack.c) and the two sources
 * (pack_dir.c, pack_tar.c).  A source runs on the main thread and feeds
 * the builder and the chunker; sealed chunks go to the workers through the
 * chunker's emit callback.
 */
#ifndef CFS_PACK_H
#define CFS_PACK_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "builder.h"
#include "chunker.h"
#include "util.h"

struct cfs_pack {
	struct cfs_builder *b;
	struct cfs_chunker *ch;

	/* The store directory, skipped if the walk meets it. */
	bool store_known;
	dev_t store_dev;
	ino_t store_ino;

	/* The chunker's small_max: files below it share group chunks, so a
	 * source must feed them in the builder's order (pack_tar.c). */
	uint32_t small_max;

	/* Counted by the sources. */
	uint64_t files, dirs, other;
	uint64_t bytes_in;    /* data bytes read (holes not counted) */

	struct cfs_pack_pipe *pipe;
};

/* Records the first error of the pack as "<what>: <why>" for main() to
 * print, and returns err.  Thread-safe.  Later errors are dropped: the
 * first one is the cause, the rest are usually its consequences. */
int cfs_pack_fail(struct cfs_pack *p, int err, const char *fmt, ...) CFS_PRINTF(3, 4);

/* Feeds one regular file's data range to the chunker; counts bytes_in.
 * Errors are recorded with the path. */
int cfs_pack_data(struct cfs_pack *p, const char *path, uint64_t off, const void *buf,
		  size_t len);

/* Sources.  Both return 0 or -errno after cfs_pack_fail(). */
int cfs_pack_dir(struct cfs_pack *p, const char *root);
/* Reads a tar stream (plain or compressed) from fd; name is for messages. */
int cfs_pack_tar(struct cfs_pack *p, int fd, const char *name);

#endif /* CFS_PACK_H */
