/* SPDX-License-Identifier: MIT */
/*
 * Cutting file data into chunks (docs/FORMAT.md, "Chunking").
 *
 * Large files are cut into chunks of chunk_size data bytes counted from the
 * start of the file, one file per chunk, so an unchanged file gives the
 * same chunks in every image.  Files smaller than small_max share group
 * chunks so that a directory of small files costs a few fetches, not one
 * each; a group ends at a file whose XXH3 hash has its low group_bits bits
 * zero (or when the next file would not fit), so a change to one small
 * file only changes its own group.  Holes are never stored.
 *
 * On the way, it reads the headers of every ELF file that goes by (elf.h)
 * and gives what its loading opens to the builder, for the image's hints
 * (docs/FORMAT.md, "Hints"): the packer reads each file once.
 *
 * Not thread-safe: one source feeds it in order.
 */
#ifndef CFS_CHUNKER_H
#define CFS_CHUNKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cfs_builder;
struct cfs_chunker;

#define CFS_CHUNK_SIZE_DEFAULT (1u << 20)
#define CFS_SMALL_MAX_DEFAULT (64u << 10)
#define CFS_GROUP_BITS_DEFAULT 5

struct cfs_chunker_opts {
	uint32_t chunk_size; /* 0 = default; 64 KiB..CFS_CHUNK_MAX_SIZE */
	uint32_t small_max;  /* 0 = default; < chunk_size */
	uint32_t group_bits; /* 0 = default; groups average 2^bits files */
	bool no_hints;       /* read no ELF headers: an image without hints */
};

/* Receives a sealed chunk: number (from cfs_builder_chunk_new), content and
 * length.  Takes ownership of data (malloc'd).  Returns 0 or -errno, which
 * aborts the feed call that sealed it. */
typedef int (*cfs_chunk_emit_fn)(void *ctx, uint32_t chunk, void *data, size_t len);

int cfs_chunker_new(const struct cfs_chunker_opts *opts, struct cfs_builder *b,
		    cfs_chunk_emit_fn emit, void *ctx, struct cfs_chunker **out);
void cfs_chunker_free(struct cfs_chunker *c);

/* Starts regular file node of logical size bytes. */
int cfs_chunker_file_begin(struct cfs_chunker *c, uint32_t node, uint64_t size);
/* Data at increasing offsets within [0, size); anything not given is a hole. */
int cfs_chunker_file_data(struct cfs_chunker *c, uint64_t off, const void *data, size_t len);
/* Ends the file: adds its extents to the builder. */
int cfs_chunker_file_end(struct cfs_chunker *c);
/* Seals the open group chunk.  Call once after the last file. */
int cfs_chunker_flush(struct cfs_chunker *c);
/* Files from now on go to builder b (an image source's next layer, say):
 * only between files, with no group open (after a flush).  0, -EINVAL. */
int cfs_chunker_set_builder(struct cfs_chunker *c, struct cfs_builder *b);

#endif /* CFS_CHUNKER_H */
