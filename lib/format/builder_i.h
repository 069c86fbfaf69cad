/* SPDX-License-Identifier: MIT */
/* The builder's tree (builder.c), as finishing it (builder_finish.c) reads
 * it: nodes, entries, the byte arena and the reserved chunks. */
#ifndef CFS_BUILDER_I_H
#define CFS_BUILDER_I_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "builder.h"
#include "digest.h"

/* Data extent as added; holes are made at finish. */
struct cfs_bext {
	uint64_t off, len;
	uint32_t chunk, chunk_off;
};

struct cfs_bxattr {
	uint64_t name_off, val_off; /* into the arena */
	uint32_t val_len;
	uint16_t name_len;
};

struct cfs_bnode {
	struct cfs_attr attr;
	/* The file type never changes after creation, so one union will do. */
	union {
		struct {
			uint32_t *v; /* entry ids */
			uint32_t n, cap;
		} dir;
		struct {
			struct cfs_bext *v;
			uint32_t n, cap;
		} reg;
		struct {
			uint64_t off;
			uint32_t len; /* 0: not set yet */
		} lnk;
	} u;
	struct cfs_bxattr *xa;
	uint32_t nxa, xa_cap;
	/* A directory made on the way to something (its attributes are the
	 * default, not given): applying a layer leaves the one below as is. */
	bool implicit;
	/* Set by finish. */
	uint32_t ino, nlink, parent_ino;
};

struct cfs_bent {
	uint64_t hash;
	uint64_t name_off;
	uint32_t parent, child; /* child ENT_GONE: removed */
	uint32_t layer;
	uint16_t name_len;
};

#define ENT_GONE UINT32_MAX

struct cfs_bchunk {
	cfs_digest d;
	uint32_t raw_size, stored_size;
	bool set;
};

/* What an ELF file's loading opens, as read from it (cfs_builder_set_elf):
 * in the arena from off, NUL-terminated each, the interpreter, the run
 * path and nneeded needed names ("" for an absent one). */
struct cfs_belf {
	uint64_t off;
	uint32_t node, nneeded;
	uint16_t machine;
};

struct cfs_builder {
	uint32_t chunk_size;
	bool finished;

	struct cfs_bnode *nodes;
	size_t nnodes, nodes_cap;

	struct cfs_bent *ents;
	size_t nents, ents_cap;
	uint32_t *slots; /* entry id + 1, 0 = empty; power-of-two size */
	size_t slots_cap;

	char *arena;
	size_t arena_len, arena_cap;

	uint32_t layer; /* cfs_builder_layer_begin() count */
	bool overlay;   /* cfs_builder_set_overlay(): one layer, overlay form */

	struct cfs_belf *elfs;
	size_t nelfs, elfs_cap;

	/* Workers call chunk_set while the source calls chunk_new, which may
	 * move the table: both hold the lock. */
	pthread_mutex_t chunk_lock;
	struct cfs_bchunk *chunks;
	size_t nchunks, chunks_cap;
};

/* Keeps counts well inside the u32 fields of the format. */
#define CFS_BUILDER_MAX_ITEMS (UINT32_MAX - 2u)

/* Grows the array *v of *cap elements of elem bytes to hold need, by
 * doubling: 0 or -ENOMEM. */
int cfs_builder_grow(void **v, size_t *cap, size_t need, size_t elem);

/* The node that directory dir names name (a symlink not followed): 0 and
 * *node, or -ENOENT. */
int cfs_builder_child(const struct cfs_builder *b, uint32_t dir, const char *name, size_t len,
		      uint32_t *node);

/* ---- finishing (builder_finish.c, builder_hints.c) ---- */

/* The hints section of the finished tree: order maps inode numbers - 1 to
 * node ids (ninodes of them), nodes carry their ino.  *sec (malloc'd, NULL
 * when there is nothing to hint) of *len bytes.  Counts into stats.  0 or
 * -ENOMEM; a needed name that resolves to nothing is only counted. */
int cfs_builder_hints(struct cfs_builder *b, const uint32_t *order, size_t ninodes, void **sec,
		      size_t *len, struct cfs_builder_stats *stats);

#endif /* CFS_BUILDER_I_H */
