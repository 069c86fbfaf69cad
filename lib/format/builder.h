/* SPDX-License-Identifier: MIT */
/*
 * Building an image index: an in-memory tree that sources fill in any
 * order (a directory walk, a tar stream with entries out of order,
 * duplicates and hard links), serialised by cfs_builder_finish() into the
 * format of format.h.
 *
 * Inode numbers are assigned at finish, depth first with entries in name
 * order, so the same tree always gives the same index and the same image
 * reference whatever order the source listed it in.
 *
 * Not thread-safe, except cfs_builder_chunk_set(), which workers may call
 * concurrently for distinct chunk numbers.
 */
#ifndef CFS_BUILDER_H
#define CFS_BUILDER_H

#include <stddef.h>
#include <stdint.h>

#include "digest.h"

struct cfs_builder;

#define CFS_NODE_ROOT 0u

struct cfs_attr {
	uint32_t mode;  /* S_IF* type and permission bits */
	uint32_t uid, gid;
	int64_t mtime_sec;
	uint32_t mtime_nsec;
	uint64_t rdev;  /* devices */
	uint64_t size;  /* regular files */
};

int cfs_builder_new(uint32_t chunk_size, struct cfs_builder **out);
void cfs_builder_free(struct cfs_builder *b);

/* The root directory exists from the start (0755, 0:0, mtime 0). */
int cfs_builder_set_attr(struct cfs_builder *b, uint32_t node, const struct cfs_attr *a);

/* Adds name under directory parent.  An existing entry of the same name is
 * replaced, as a later tar member replaces an earlier one, except that a
 * directory added over a directory keeps its children and takes the new
 * attributes.  Returns 0 and *node, -EINVAL for a bad name, -ENOTDIR. */
int cfs_builder_add(struct cfs_builder *b, uint32_t parent, const char *name, size_t name_len,
		    const struct cfs_attr *a, uint32_t *node);

/* Same, by path relative to the root ("a/b/c", "./a//b/", "/a/b" are all
 * a/b).  Missing parents are created as 0755 root-owned directories.
 * -EINVAL for a path with a ".." component or an empty path. */
int cfs_builder_add_path(struct cfs_builder *b, const char *path, const struct cfs_attr *a,
			 uint32_t *node);
/* Node of an existing path, -ENOENT. */
int cfs_builder_find_path(struct cfs_builder *b, const char *path, uint32_t *node);

/* Hard link: a new name for an existing non-directory node. */
int cfs_builder_link(struct cfs_builder *b, uint32_t parent, const char *name, size_t name_len,
		     uint32_t target);
int cfs_builder_link_path(struct cfs_builder *b, const char *path, const char *target_path);

/* Layers, applied in order as a container engine stacks image layers.
 * Until the first cfs_builder_layer_begin() everything is layer 0. */
void cfs_builder_layer_begin(struct cfs_builder *b);
/* A whiteout in the current layer: removes dir_path/name if a lower layer
 * gave it (not if this layer did, before or after).  dir_path ("" for the
 * root) is made as an add would make it, unless a component of it is a
 * non-directory (a file this layer put over a lower directory, say): then
 * there is nothing below it to remove and nothing is made.  0 also when
 * there was nothing to remove; -EINVAL for a bad name, -ENOTDIR when
 * dir_path goes through a symlink. */
int cfs_builder_whiteout(struct cfs_builder *b, const char *dir_path, const char *name,
			 size_t name_len);
/* An opaque directory in the current layer: removes everything lower
 * layers gave under dir_path, this layer's own entries kept.  Nothing
 * (0) when dir_path is or goes through a non-directory, -ENOTDIR through
 * a symlink, as for a whiteout. */
int cfs_builder_opaque(struct cfs_builder *b, const char *dir_path);

/* One layer in overlay form, as a container engine's overlay driver
 * keeps a layer's diff (docs/FORMAT.md, "Layers"): from now on, a whiteout
 * is a character device 0:0 under the hidden name (none where this layer
 * has its own entry of that name, which hides the lower one anyway; a
 * directory of its own becomes opaque instead), and an opaque directory
 * carries the xattr trusted.overlay.opaque "y", kept when the directory
 * is given again.  Call before anything is added;
 * layer numbers have no use then. */
void cfs_builder_set_overlay(struct cfs_builder *b);
/* Applies layer, a builder in overlay form whose chunks are all set, on
 * top of b as its next layer (cfs_builder_layer_begin() is called): every
 * entry as cfs_builder_add_path(), whiteout() and opaque() would take it
 * from the layer's tar, files with the same chunks, directories the layer
 * only made on the way left as they are below.  On failure, where (cap
 * bytes) names the entry's path.  0 or -errno (-ENOTDIR as add_path). */
int cfs_builder_apply_layer(struct cfs_builder *b, const struct cfs_builder *layer, char *where,
			    size_t cap);
/* Adds at path a copy of src's non-directory node: attributes, xattrs,
 * target or data (the same chunks, set in src).  For a hard link in a
 * layer to a file of a lower one, which the layer alone can only show so.
 * 0 or -errno. */
int cfs_builder_copy_node(struct cfs_builder *dst, const char *path, const struct cfs_builder *src,
			  uint32_t node);
/* A new name at path (parents made as add_path makes them) for existing
 * non-directory node target. */
int cfs_builder_link_at(struct cfs_builder *b, const char *path, uint32_t target);

int cfs_builder_set_symlink(struct cfs_builder *b, uint32_t node, const char *target, size_t len);

/* Sets (or replaces) one xattr.  -EINVAL for names or values over the
 * limits of format.h. */
int cfs_builder_set_xattr(struct cfs_builder *b, uint32_t node, const char *name,
			  const void *value, size_t value_len);

/* Appends a data extent to a regular file.  Extents are added in file
 * order; gaps between them and after the last are holes.  chunk is a
 * number from cfs_builder_chunk_new().  Replaces nothing: a file whose
 * data is given again must be a new node. */
int cfs_builder_add_extent(struct cfs_builder *b, uint32_t node, uint64_t file_off, uint64_t len,
			   uint32_t chunk, uint32_t chunk_off);

/* Reserves a chunk number for content whose digest is not known yet. */
int cfs_builder_chunk_new(struct cfs_builder *b, uint32_t *chunk);
/* Records the digest and sizes of a reserved chunk.  Thread-safe. */
int cfs_builder_chunk_set(struct cfs_builder *b, uint32_t chunk, const cfs_digest *d,
			  uint32_t raw_size, uint32_t stored_size);

struct cfs_elf_deps;

/* Records what loading regular file node opens (elf.h, as the chunker
 * read it from the file's bytes), for finish to resolve against the tree
 * and store as the image's hints (docs/FORMAT.md, "Hints").  Copies the
 * strings.  0, -EINVAL (not a regular file), -ENOMEM. */
int cfs_builder_set_elf(struct cfs_builder *b, uint32_t node, const struct cfs_elf_deps *d);

struct cfs_builder_stats {
	uint64_t inodes, files, dirs, file_bytes, chunks, unique_chunks;
	/* Hints: ELF files read, of those with hints (triggers), their
	 * distinct lists and the inodes in those, and the needed names that
	 * named nothing in the tree. */
	uint64_t elf_files, hint_triggers, hint_lists, hint_entries, elf_unresolved;
	size_t hints_len; /* the section's bytes */
};

/* Serialises the tree.  Chunks with equal digests become one entry.  Every
 * reserved chunk must have been set.  *index is malloc'd, the caller frees
 * it.  The builder can only be freed afterwards. */
int cfs_builder_finish(struct cfs_builder *b, void **index, size_t *len,
		       struct cfs_builder_stats *stats);

#endif /* CFS_BUILDER_H */
