/* SPDX-License-Identifier: MIT */
/*
 * Reading an image index (format.h).  cfs_index_open() validates the whole
 * index once, so that the accessors can answer from it without further
 * checks beyond the arguments they are given: every section inside the
 * buffer, every reference inside its table, every name well-formed and
 * every directory sorted, the directory graph a tree rooted at inode 1,
 * every regular file's extents contiguous from 0 to its size and inside
 * their chunks.
 *
 * An opened index is immutable; every accessor is thread-safe.  Pointers it
 * returns (names, symlink targets, xattr values) live as long as the index.
 */
#ifndef CFS_INDEX_H
#define CFS_INDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "digest.h"

struct cfs_index;

struct cfs_index_info {
	uint32_t version;
	uint32_t chunk_size;
	uint64_t inode_count;
	uint64_t chunk_count;
	uint64_t total_file_bytes;
	uint64_t index_size;
	/* Hints (cfs_index_hints): inodes with some, distinct lists, and the
	 * inodes in those; 0 for an image without (or with malformed) hints. */
	uint32_t hint_triggers, hint_lists, hint_entries;
};

struct cfs_inode {
	uint64_t ino;
	uint32_t mode, uid, gid, nlink;
	uint64_t size;
	uint64_t blocks;      /* 512-byte units: data extents rounded up to 4 KiB */
	int64_t mtime_sec;
	uint32_t mtime_nsec;
	uint64_t parent;      /* directories: parent ino (root: itself); else 0 */
	uint64_t rdev;        /* devices */
	uint32_t nentries;    /* directories: entries; regular: extents */
	uint32_t nxattrs;
	uint64_t extent_first; /* regular: its first extent's place in the index */
};

struct cfs_dirent {
	uint64_t ino;
	const char *name;     /* not NUL-terminated */
	size_t name_len;
	uint8_t type;         /* DT_* */
};

struct cfs_xattr {
	const char *name;     /* not NUL-terminated */
	size_t name_len;
	const void *value;
	size_t value_len;
};

struct cfs_extent {
	uint64_t file_off;
	uint64_t len;
	uint32_t chunk;       /* CFS_CHUNK_NONE for a hole */
	uint32_t chunk_off;
};

struct cfs_chunk {
	cfs_digest digest;
	uint32_t raw_size;
	uint32_t stored_size;
};

/* Validates len bytes of decompressed index at buf.  On success the index
 * owns buf (malloc'd; freed by cfs_index_free); on failure the caller still
 * owns it.  Returns 0, -EUCLEAN for any inconsistency (logged at debug
 * level with the reason), -EPROTONOSUPPORT for an unknown version or
 * incompat feature, -ENOMEM. */
int cfs_index_open(void *buf, size_t len, struct cfs_index **out);
void cfs_index_free(struct cfs_index *idx);

void cfs_index_info(const struct cfs_index *idx, struct cfs_index_info *out);

/* 0 or -ENOENT when ino is not in the image. */
int cfs_index_inode(const struct cfs_index *idx, uint64_t ino, struct cfs_inode *out);

/* Binary search in a directory.  0, -ENOENT, -ENOTDIR. */
int cfs_index_lookup(const struct cfs_index *idx, uint64_t dir, const char *name,
		     size_t name_len, uint64_t *ino);

/* Walks path from the root, one cfs_index_lookup per component; "", "/",
 * empty and "." components name the directory they are in.  0, -ENOENT,
 * -ENOTDIR (a component before the last is not a directory). */
int cfs_index_lookup_path(const struct cfs_index *idx, const char *path, uint64_t *ino);

/* Entry pos (0-based, sorted order) of a directory: 1 filled, 0 past the
 * end, -ENOTDIR, -ENOENT. */
int cfs_index_dirent(const struct cfs_index *idx, uint64_t dir, uint64_t pos,
		     struct cfs_dirent *out);

/* 0, -EINVAL when not a symlink, -ENOENT. */
int cfs_index_readlink(const struct cfs_index *idx, uint64_t ino, const char **target,
		       size_t *len);

/* xattr i of an inode: 1 filled, 0 past the end, -ENOENT. */
int cfs_index_xattr(const struct cfs_index *idx, uint64_t ino, uint32_t i, struct cfs_xattr *out);
/* By full name: 0, -ENODATA, -ENOENT. */
int cfs_index_getxattr(const struct cfs_index *idx, uint64_t ino, const char *name,
		       struct cfs_xattr *out);

/* Index (within the file) of the extent holding byte off of a regular
 * file: 0 and *i set, 1 when off >= size, -EINVAL not a regular file,
 * -ENOENT. */
int cfs_index_extent_find(const struct cfs_index *idx, uint64_t ino, uint64_t off, uint32_t *i);
/* Extent i of a regular file: 1 filled, 0 past the end, -EINVAL, -ENOENT. */
int cfs_index_extent(const struct cfs_index *idx, uint64_t ino, uint32_t i, struct cfs_extent *out);
/* The same two for a file whose inode the caller has decoded already
 * (cfs_index_inode() of this index), so that a read that walks many
 * extents decodes it once: as above, without -ENOENT. */
int cfs_index_file_extent_find(const struct cfs_index *idx, const struct cfs_inode *in,
			       uint64_t off, uint32_t *i);
int cfs_index_file_extent(const struct cfs_index *idx, const struct cfs_inode *in, uint32_t i,
			  struct cfs_extent *out);

/* The inodes that a first read of ino leads to (docs/FORMAT.md, "Hints"):
 * for an ELF file, the files its loading opens.  Returns their count, 0
 * for none (also for an image without hints), with *first for
 * cfs_index_hint(): entries first .. first + count - 1 are the list, in
 * increasing inode order, each 1..inode_count.  Only advice: the inodes
 * may be of any type. */
uint32_t cfs_index_hints(const struct cfs_index *idx, uint64_t ino, uint32_t *first);
/* Entry k of the hint lists, or 0 past their end. */
uint64_t cfs_index_hint(const struct cfs_index *idx, uint32_t k);

/* 0 or -ENOENT. */
int cfs_index_chunk(const struct cfs_index *idx, uint32_t chunk, struct cfs_chunk *out);

/* The digest of the image's prefetch list object: 0, or -ENOENT when the
 * image has none. */
int cfs_index_prefetch(const struct cfs_index *idx, cfs_digest *out);

/* Sets the prefetch list of a serialised index in place (len bytes at
 * buf, not an opened index): the header's digest and its feature bit;
 * d == NULL clears both (an all-zero d makes an index that fails to open).  Touches nothing else, so the result is valid
 * whenever the input was; the caller hashes it anew for its name.  0 or
 * -EUCLEAN when buf does not start with an index header. */
int cfs_index_set_prefetch(void *buf, size_t len, const cfs_digest *d);

/* The digest and size of the image config object (the OCI image config
 * JSON of the image it was packed from): 0, or -ENOENT when it has none. */
int cfs_index_config(const struct cfs_index *idx, cfs_digest *out, uint64_t *size);

/* Sets or (d NULL) clears the image config of a serialised index in place,
 * as cfs_index_set_prefetch() does the list.  -EINVAL for a size of 0 or
 * over CFS_CONFIG_MAX_SIZE; -EUCLEAN also for a first-layout header, which
 * has no room for it. */
int cfs_index_set_config(void *buf, size_t len, const cfs_digest *d, uint64_t size);

/* ---- prefetch list objects (format.h, struct cfs_disk_prefetch) ---- */

/* Serialises count chunk numbers into *buf (malloc'd, the caller frees).
 * The numbers must be distinct; they are not checked against any index.
 * 0, -EINVAL (more than UINT32_MAX), -ENOMEM. */
int cfs_prefetch_encode(const uint32_t *chunks, size_t count, void **buf, size_t *len);

/* Validates the decompressed content of a prefetch list object against
 * the index it belongs to and returns its chunk numbers in *chunks
 * (malloc'd, the caller frees; NULL when count is 0).  0, -EUCLEAN (bad
 * magic, size, count, a chunk number out of range or repeated),
 * -EPROTONOSUPPORT (unknown version), -ENOMEM. */
int cfs_prefetch_parse(const struct cfs_index *idx, const void *buf, size_t len,
		       uint32_t **chunks, size_t *count);

#endif /* CFS_INDEX_H */
