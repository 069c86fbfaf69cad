/* SPDX-License-Identifier: MIT */
/*
 * The cfs on-disk format: one header for every structure that is stored.
 * docs/FORMAT.md explains it for people writing other readers.
 *
 * All integers are little-endian and fixed width.  Structures are naturally
 * aligned and their sizes are checked below; readers copy them out of the
 * index buffer with memcpy and convert with le*toh, so no alignment is
 * assumed of the buffer.
 *
 * Objects.  Everything in a store is an object: a single zstd frame (with the
 * content size in its header) whose decompressed bytes hash, with SHA-256, to
 * the object's name.  Chunks of file data and image indexes are both objects.
 * Naming by the decompressed content keeps dedup independent of the
 * compression level, and a reader verifies what it will actually use.
 *
 * Index.  The metadata of one image is one object: a header followed by
 * sections (inodes, dirents, extents, chunks, xattrs, strings).  The image
 * reference is the index object's name, so one trusted hash covers the
 * whole image: the index names every chunk by digest.
 */
#ifndef CFS_FORMAT_H
#define CFS_FORMAT_H

#include <assert.h>
#include <stdint.h>

#define CFS_INDEX_MAGIC "CFSIDX\r\n" /* 8 bytes; \r\n catches text-mode mangling */
#define CFS_INDEX_VERSION 1u

/* Feature bits.  A reader must refuse an index with an unknown incompat bit
 * and may ignore unknown compat bits. */
#define CFS_FEAT_COMPAT_PREFETCH (1ull << 0) /* header.prefetch names a list */
#define CFS_FEAT_COMPAT_CONFIG (1ull << 1)   /* header.config names an image config */
#define CFS_FEAT_COMPAT_HINTS (1ull << 2)    /* header.hints holds a hints section */
#define CFS_FEAT_INCOMPAT_KNOWN 0ull
#define CFS_FEAT_COMPAT_KNOWN (CFS_FEAT_COMPAT_PREFETCH | CFS_FEAT_COMPAT_CONFIG | \
			       CFS_FEAT_COMPAT_HINTS)

/* Sanity caps, enforced by readers; writers never get close. */
#define CFS_INDEX_MAX_SIZE (1ull << 31)   /* decompressed index bytes */
#define CFS_CHUNK_MAX_SIZE (64u << 20)    /* decompressed chunk bytes */
#define CFS_NAME_MAX 255u
#define CFS_SYMLINK_MAX 4095u
#define CFS_XATTR_NAME_MAX 255u
#define CFS_XATTR_VALUE_MAX 65536u
#define CFS_CONFIG_MAX_SIZE (16u << 20)   /* image config bytes */

#define CFS_ROOT_INO 1u       /* inode numbers are table index + 1 */
#define CFS_CHUNK_NONE 0xffffffffu /* extent of a hole: reads as zeros */

enum cfs_section {
	CFS_SEC_INODES = 0,
	CFS_SEC_DIRENTS,
	CFS_SEC_EXTENTS,
	CFS_SEC_CHUNKS,
	CFS_SEC_XATTRS,
	CFS_SEC_STRINGS,
	CFS_SEC_COUNT
};

struct cfs_disk_section {
	uint64_t offset; /* from the start of the index; 8-byte aligned */
	uint64_t size;   /* bytes; a multiple of the record size */
};
static_assert(sizeof(struct cfs_disk_section) == 16, "section size");

struct cfs_disk_header {
	uint8_t magic[8];            /* CFS_INDEX_MAGIC */
	uint32_t version;            /* CFS_INDEX_VERSION */
	uint32_t header_size;        /* sizeof(struct cfs_disk_header) */
	uint64_t features_compat;
	uint64_t features_incompat;
	uint64_t index_size;         /* total bytes of the index object */
	uint32_t chunk_size;         /* nominal chunk size used by the packer */
	uint32_t inode_count;        /* >= 1; inode 1 is the root directory */
	uint64_t total_file_bytes;   /* sum of regular file sizes (statfs) */
	uint64_t created_sec;        /* informational; 0 for reproducible images */
	struct cfs_disk_section sec[CFS_SEC_COUNT];
	uint8_t prefetch[32];        /* digest of the prefetch list object, or zero;
	                              * non-zero iff CFS_FEAT_COMPAT_PREFETCH */
	uint8_t reserved[16];        /* zero */
	/* From here on, only in a header of 256 bytes or more; a reader takes
	 * a 208-byte header (the first layout) as having these fields zero. */
	uint8_t config[32];          /* digest of the image config object, or
	                              * zero; non-zero iff CFS_FEAT_COMPAT_CONFIG */
	uint64_t config_size;        /* its bytes, <= CFS_CONFIG_MAX_SIZE */
	uint8_t reserved2[8];        /* zero */
	/* From here on, only in a header of 272 bytes or more, which writers
	 * write only for an image with hints: readers that know 256 bytes
	 * skip it, and take the section as absent. */
	struct cfs_disk_section hints; /* struct cfs_disk_hints; used iff
					* CFS_FEAT_COMPAT_HINTS */
};
static_assert(sizeof(struct cfs_disk_header) == 272, "header size");
#define CFS_HEADER_SIZE_MIN 208u    /* the first layout, still read */
#define CFS_HEADER_SIZE_CONFIG 256u /* the second: config, no hints */

/*
 * Hints section (docs/FORMAT.md, "Hints"): for some inodes (triggers),
 * the inodes that a first read of the trigger leads to; for an ELF file,
 * the files its loading opens (its interpreter and DT_NEEDED closure).
 * Lists are stored once and shared by every trigger that has the same.
 * Content, all u32: this header; triggers records, sorted by ino without
 * duplicates; lists + 1 list starts (the first 0, strictly increasing, the
 * last entries); entries inode numbers, each list's strictly increasing.
 * Only advice: a reader that finds it malformed takes the image as having
 * no hints, never as corrupt.
 */
#define CFS_HINTS_VERSION 1u
#define CFS_HINTS_LIST_MAX 4096u /* entries per list, enforced by readers */

struct cfs_disk_hints {
	uint32_t version;     /* CFS_HINTS_VERSION; another: no hints */
	uint32_t triggers;
	uint32_t lists;
	uint32_t entries;
};
static_assert(sizeof(struct cfs_disk_hints) == 16, "hints header size");

struct cfs_disk_hint {
	uint32_t ino;         /* the trigger, 1..inode_count */
	uint32_t list;        /* < lists */
};
static_assert(sizeof(struct cfs_disk_hint) == 8, "hint size");

/*
 * Prefetch list (docs/FORMAT.md, "Prefetch list"): an object of its own,
 * named from the index header, holding the chunks that start-up reads, in
 * the order it reads them.  Content: this header, then count little-endian
 * u32 chunk numbers (indexes into the index's chunk table), each below the
 * chunk count, without duplicates.
 */
#define CFS_PREFETCH_MAGIC "CFSPFL\r\n"
#define CFS_PREFETCH_VERSION 1u

struct cfs_disk_prefetch {
	uint8_t magic[8];     /* CFS_PREFETCH_MAGIC */
	uint32_t version;     /* CFS_PREFETCH_VERSION */
	uint32_t count;       /* <= the index's chunk count */
};
static_assert(sizeof(struct cfs_disk_prefetch) == 16, "prefetch list header size");

/*
 * Inode, 64 bytes.  The meaning of a/b depends on the file type:
 *   directory: a = first dirent index, b = dirent count (entries sorted by
 *              name, bytewise, without "." and ".."); parent = parent ino
 *              (the root is its own parent)
 *   regular:   a = first extent index, b = extent count (extents cover
 *              [0, size) in order, without gaps)
 *   symlink:   a = offset of the target in the string table, b = length
 *   chr/blk:   a = rdev as Linux encodes it (makedev), b = 0
 *   fifo/sock: a = b = 0
 */
struct cfs_disk_inode {
	uint32_t mode;        /* S_IF* type and all 12 permission bits */
	uint32_t uid;
	uint32_t gid;
	uint32_t nlink;       /* links within the image; dirs: 2 + subdirs */
	uint64_t size;        /* regular: bytes; symlink: target length; dir: 0 */
	int64_t mtime_sec;
	uint32_t mtime_nsec;
	uint32_t parent;      /* directories only, else 0 */
	uint64_t a;
	uint32_t b;
	uint32_t xattr_count;
	uint32_t xattr_first;
	uint32_t reserved;
};
static_assert(sizeof(struct cfs_disk_inode) == 64, "inode size");

/* Directory entry, 12 bytes.  Names are 1..255 bytes, no '/' or NUL, never
 * "." or "..", unique within a directory, and sorted with memcmp (shorter
 * first on a common prefix). */
struct cfs_disk_dirent {
	uint32_t ino;
	uint32_t name_off;    /* into the string table */
	uint16_t name_len;
	uint8_t type;         /* DT_* value of the target, for readdir */
	uint8_t reserved;
};
static_assert(sizeof(struct cfs_disk_dirent) == 12, "dirent size");

/* File extent, 24 bytes: bytes [file_off, file_off + len) of the file are
 * bytes [chunk_off, chunk_off + len) of the chunk's decompressed content, or
 * zeros when chunk == CFS_CHUNK_NONE. */
struct cfs_disk_extent {
	uint64_t file_off;
	uint64_t len;
	uint32_t chunk;
	uint32_t chunk_off;
};
static_assert(sizeof(struct cfs_disk_extent) == 24, "extent size");

/* Chunk, 40 bytes.  The object named by digest decompresses to raw_size
 * bytes.  stored_size is the packer's object size: a hint for fetch
 * planning only, since another image may have stored the same content with
 * other compression settings. */
struct cfs_disk_chunk {
	uint8_t digest[32];   /* SHA-256 of the decompressed content */
	uint32_t raw_size;    /* 1..CFS_CHUNK_MAX_SIZE */
	uint32_t stored_size;
};
static_assert(sizeof(struct cfs_disk_chunk) == 40, "chunk size");

/* Extended attribute, 16 bytes; name is the full name ("security.capability"),
 * the xattrs of one inode are consecutive and sorted by name. */
struct cfs_disk_xattr {
	uint32_t name_off;
	uint32_t value_off;
	uint32_t value_len;
	uint16_t name_len;
	uint16_t reserved;
};
static_assert(sizeof(struct cfs_disk_xattr) == 16, "xattr size");

#endif /* CFS_FORMAT_H */
