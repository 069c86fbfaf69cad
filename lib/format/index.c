/* SPDX-License-Identifier: MIT */
/*
 * Reading and validating an image index (format.h, index.h).
 *
 * The index comes from a store and is hostile until proven otherwise, so
 * cfs_index_open() checks every field once, in linear time, and the
 * accessors then trust what they read.  The passes, in order:
 *
 *   1. header and section table;
 *   2. chunk and xattr tables on their own (every record, used or not);
 *   3. each inode: type, fields, ranges into the tables, symlink targets,
 *      extents; dirent and extent ranges must not overlap and must cover
 *      their tables, so that the total work stays O(table sizes);
 *   4. each directory's entries: names, order, targets, link counts;
 *   5. the directory graph: a tree rooted at inode 1.
 *
 * The hints section is advice, checked on its own after all that: one
 * that fails leaves the image without hints, never refused.
 */
#include <endian.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "format.h"
#include "index.h"
#include "util.h"

struct cfs_index {
	uint8_t *buf;
	size_t len;
	const uint8_t *sec[CFS_SEC_COUNT];
	uint64_t strings_size;
	uint32_t ninodes;
	uint32_t ndirents;
	uint32_t nextents;
	uint32_t nchunks;
	uint32_t nxattrs;
	uint32_t version;
	uint32_t chunk_size;
	uint64_t total_file_bytes;
	bool has_prefetch;
	cfs_digest prefetch;
	bool has_config;
	cfs_digest config;
	uint64_t config_size;
	uint64_t *blocks; /* per inode (ino - 1), 512-byte units */
	/* Hints (format.h): NULL and 0 without. */
	const uint8_t *hint_trig, *hint_starts, *hint_ent;
	uint32_t hint_ntrig, hint_nlists, hint_nent;
};

static const size_t sec_rec_size[CFS_SEC_COUNT] = {
	[CFS_SEC_INODES] = sizeof(struct cfs_disk_inode),
	[CFS_SEC_DIRENTS] = sizeof(struct cfs_disk_dirent),
	[CFS_SEC_EXTENTS] = sizeof(struct cfs_disk_extent),
	[CFS_SEC_CHUNKS] = sizeof(struct cfs_disk_chunk),
	[CFS_SEC_XATTRS] = sizeof(struct cfs_disk_xattr),
	[CFS_SEC_STRINGS] = 1,
};

static const char *const sec_name[CFS_SEC_COUNT] = {
	"inodes", "dirents", "extents", "chunks", "xattrs", "strings",
};

/* Records are copied out of the buffer: it carries no alignment promise. */
static void load_inode(const struct cfs_index *idx, uint32_t i, struct cfs_disk_inode *d)
{
	memcpy(d, idx->sec[CFS_SEC_INODES] + (size_t)i * sizeof(*d), sizeof(*d));
	d->mode = le32toh(d->mode);
	d->uid = le32toh(d->uid);
	d->gid = le32toh(d->gid);
	d->nlink = le32toh(d->nlink);
	d->size = le64toh(d->size);
	d->mtime_sec = (int64_t)le64toh((uint64_t)d->mtime_sec);
	d->mtime_nsec = le32toh(d->mtime_nsec);
	d->parent = le32toh(d->parent);
	d->a = le64toh(d->a);
	d->b = le32toh(d->b);
	d->xattr_count = le32toh(d->xattr_count);
	d->xattr_first = le32toh(d->xattr_first);
	d->reserved = le32toh(d->reserved);
}

static void load_dirent(const struct cfs_index *idx, uint64_t i, struct cfs_disk_dirent *d)
{
	memcpy(d, idx->sec[CFS_SEC_DIRENTS] + (size_t)i * sizeof(*d), sizeof(*d));
	d->ino = le32toh(d->ino);
	d->name_off = le32toh(d->name_off);
	d->name_len = le16toh(d->name_len);
}

static void load_extent(const struct cfs_index *idx, uint64_t i, struct cfs_disk_extent *d)
{
	memcpy(d, idx->sec[CFS_SEC_EXTENTS] + (size_t)i * sizeof(*d), sizeof(*d));
	d->file_off = le64toh(d->file_off);
	d->len = le64toh(d->len);
	d->chunk = le32toh(d->chunk);
	d->chunk_off = le32toh(d->chunk_off);
}

static void load_chunk(const struct cfs_index *idx, uint64_t i, struct cfs_disk_chunk *d)
{
	memcpy(d, idx->sec[CFS_SEC_CHUNKS] + (size_t)i * sizeof(*d), sizeof(*d));
	d->raw_size = le32toh(d->raw_size);
	d->stored_size = le32toh(d->stored_size);
}

static void load_xattr(const struct cfs_index *idx, uint64_t i, struct cfs_disk_xattr *d)
{
	memcpy(d, idx->sec[CFS_SEC_XATTRS] + (size_t)i * sizeof(*d), sizeof(*d));
	d->name_off = le32toh(d->name_off);
	d->value_off = le32toh(d->value_off);
	d->value_len = le32toh(d->value_len);
	d->name_len = le16toh(d->name_len);
	d->reserved = le16toh(d->reserved);
}

static const char *str_at(const struct cfs_index *idx, uint64_t off)
{
	return (const char *)idx->sec[CFS_SEC_STRINGS] + off;
}

/* The order of directory entries and xattrs: memcmp, shorter first on a
 * common prefix. */
static int name_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
	int c = memcmp(a, b, CFS_MIN(alen, blen));

	if (c)
		return c;
	return alen < blen ? -1 : alen > blen;
}

static bool str_in_table(const struct cfs_index *idx, uint64_t off, uint64_t len)
{
	uint64_t end;

	return !__builtin_add_overflow(off, len, &end) && end <= idx->strings_size;
}

static bool range_in(uint64_t first, uint64_t count, uint64_t table)
{
	uint64_t end;

	return !__builtin_add_overflow(first, count, &end) && end <= table;
}

/* S_IF* type of a mode, or 0 for one that is not a file type of the format. */
static uint32_t mode_type(uint32_t mode)
{
	switch (mode & S_IFMT) {
	case S_IFDIR: case S_IFREG: case S_IFLNK: case S_IFCHR:
	case S_IFBLK: case S_IFIFO: case S_IFSOCK:
		return mode & S_IFMT;
	default:
		return 0;
	}
}

/* Linux DT_* values are the S_IF* type shifted down. */
static uint8_t mode_dt(uint32_t mode)
{
	return (uint8_t)((mode & S_IFMT) >> 12);
}

#define BAD(...)                         \
	do {                             \
		cfs_debug("index: " __VA_ARGS__); \
		return -EUCLEAN;         \
	} while (0)

/* The header as a whole struct: the bytes past a shorter header_size
 * (the first layout) read as zero.  len >= CFS_HEADER_SIZE_MIN. */
static void header_read(const void *buf, size_t len, struct cfs_disk_header *h)
{
	uint32_t hs;

	memset(h, 0, sizeof(*h));
	memcpy(h, buf, CFS_MIN(len, sizeof(*h)));
	hs = le32toh(h->header_size);
	if (hs < sizeof(*h))
		memset((uint8_t *)h + CFS_MAX(hs, CFS_HEADER_SIZE_MIN), 0,
		       sizeof(*h) - CFS_MAX(hs, CFS_HEADER_SIZE_MIN));
}

static int check_header(struct cfs_index *idx, const struct cfs_disk_header *h, size_t len)
{
	struct { uint64_t off, end; int sec; } s[CFS_SEC_COUNT];
	uint32_t header_size = le32toh(h->header_size);
	uint64_t incompat = le64toh(h->features_incompat);
	uint64_t compat = le64toh(h->features_compat);
	uint64_t inodes_size;
	bool digest_set = false;

	if (memcmp(h->magic, CFS_INDEX_MAGIC, sizeof(h->magic)))
		BAD("bad magic");
	idx->version = le32toh(h->version);
	if (idx->version != CFS_INDEX_VERSION) {
		cfs_debug("index: version %u not supported", idx->version);
		return -EPROTONOSUPPORT;
	}
	if (incompat & ~CFS_FEAT_INCOMPAT_KNOWN) {
		cfs_debug("index: unknown incompat features %#llx",
			  (unsigned long long)(incompat & ~CFS_FEAT_INCOMPAT_KNOWN));
		return -EPROTONOSUPPORT;
	}
	if (header_size < CFS_HEADER_SIZE_MIN || header_size > len)
		BAD("header size %u", header_size);
	if (le64toh(h->index_size) != len)
		BAD("index size %llu, have %zu bytes", (unsigned long long)le64toh(h->index_size), len);
	for (size_t i = 0; i < sizeof(h->reserved); i++)
		if (h->reserved[i])
			BAD("reserved header byte %zu set", i);
	for (size_t i = 0; i < sizeof(h->prefetch); i++)
		digest_set |= h->prefetch[i] != 0;
	if (digest_set != !!(compat & CFS_FEAT_COMPAT_PREFETCH))
		BAD("prefetch digest %s but feature bit %s", digest_set ? "set" : "zero",
		    compat & CFS_FEAT_COMPAT_PREFETCH ? "set" : "clear");
	idx->has_prefetch = digest_set;
	memcpy(idx->prefetch.b, h->prefetch, sizeof(idx->prefetch.b));

	/* cfs_index_open() zeroed the fields a short (first layout) header
	 * does not have. */
	for (size_t i = 0; i < sizeof(h->reserved2); i++)
		if (h->reserved2[i])
			BAD("reserved header byte %zu set", sizeof(h->reserved) + i);
	digest_set = false;
	for (size_t i = 0; i < sizeof(h->config); i++)
		digest_set |= h->config[i] != 0;
	if (digest_set != !!(compat & CFS_FEAT_COMPAT_CONFIG))
		BAD("config digest %s but feature bit %s", digest_set ? "set" : "zero",
		    compat & CFS_FEAT_COMPAT_CONFIG ? "set" : "clear");
	idx->config_size = le64toh(h->config_size);
	if (digest_set ? !idx->config_size || idx->config_size > CFS_CONFIG_MAX_SIZE
		       : idx->config_size != 0)
		BAD("config size %llu", (unsigned long long)idx->config_size);
	idx->has_config = digest_set;
	memcpy(idx->config.b, h->config, sizeof(idx->config.b));

	for (int i = 0; i < CFS_SEC_COUNT; i++) {
		uint64_t off = le64toh(h->sec[i].offset);
		uint64_t size = le64toh(h->sec[i].size);
		uint64_t end;

		if (off % 8)
			BAD("%s section offset %llu not 8-aligned", sec_name[i], (unsigned long long)off);
		if (__builtin_add_overflow(off, size, &end) || off < header_size || end > len)
			BAD("%s section [%llu, +%llu) outside the index", sec_name[i],
			    (unsigned long long)off, (unsigned long long)size);
		if (size % sec_rec_size[i])
			BAD("%s section size %llu not a multiple of %zu", sec_name[i],
			    (unsigned long long)size, sec_rec_size[i]);
		/* Insertion sort by offset, for the overlap check. */
		int j = i;
		while (j > 0 && s[j - 1].off > off) {
			s[j] = s[j - 1];
			j--;
		}
		s[j].off = off;
		s[j].end = end;
		s[j].sec = i;
		idx->sec[i] = idx->buf + off;
	}
	/* Empty sections hold nothing and so overlap nothing. */
	uint64_t prev_end = 0;
	int prev = -1;
	for (int i = 0; i < CFS_SEC_COUNT; i++) {
		if (s[i].off == s[i].end)
			continue;
		if (prev >= 0 && s[i].off < prev_end)
			BAD("sections %s and %s overlap", sec_name[prev], sec_name[s[i].sec]);
		prev_end = s[i].end;
		prev = s[i].sec;
	}

	/* The index is at most CFS_INDEX_MAX_SIZE (2 GiB), so every record
	 * count fits 32 bits. */
	inodes_size = le64toh(h->sec[CFS_SEC_INODES].size);
	idx->ninodes = le32toh(h->inode_count);
	if (idx->ninodes < 1 || idx->ninodes > UINT32_MAX - 1 ||
	    idx->ninodes != inodes_size / sizeof(struct cfs_disk_inode))
		BAD("inode count %u, inode section of %llu bytes", idx->ninodes,
		    (unsigned long long)inodes_size);
	idx->ndirents = (uint32_t)(le64toh(h->sec[CFS_SEC_DIRENTS].size) / sizeof(struct cfs_disk_dirent));
	idx->nextents = (uint32_t)(le64toh(h->sec[CFS_SEC_EXTENTS].size) / sizeof(struct cfs_disk_extent));
	idx->nchunks = (uint32_t)(le64toh(h->sec[CFS_SEC_CHUNKS].size) / sizeof(struct cfs_disk_chunk));
	idx->nxattrs = (uint32_t)(le64toh(h->sec[CFS_SEC_XATTRS].size) / sizeof(struct cfs_disk_xattr));
	idx->strings_size = le64toh(h->sec[CFS_SEC_STRINGS].size);
	idx->chunk_size = le32toh(h->chunk_size);
	idx->total_file_bytes = le64toh(h->total_file_bytes);
	return 0;
}

static int check_chunks(const struct cfs_index *idx)
{
	for (uint32_t i = 0; i < idx->nchunks; i++) {
		struct cfs_disk_chunk c;

		load_chunk(idx, i, &c);
		if (c.raw_size < 1 || c.raw_size > CFS_CHUNK_MAX_SIZE)
			BAD("chunk %u: raw size %u", i, c.raw_size);
	}
	return 0;
}

/* Checks every xattr record and fills run_end[i]: the end of the longest
 * strictly sorted run starting at record i.  An inode's range [f, f + n)
 * is then sorted without duplicates iff f + n <= run_end[f], in O(1), which
 * lets inodes share xattr ranges without quadratic validation. */
static int check_xattrs(const struct cfs_index *idx, uint32_t *run_end)
{
	struct cfs_disk_xattr x, next = { 0 };

	for (uint32_t i = idx->nxattrs; i-- > 0;) {
		load_xattr(idx, i, &x);
		if (x.reserved)
			BAD("xattr %u: reserved field set", i);
		if (x.name_len < 1 || x.name_len > CFS_XATTR_NAME_MAX ||
		    !str_in_table(idx, x.name_off, x.name_len))
			BAD("xattr %u: bad name (offset %u, length %u)", i, x.name_off, x.name_len);
		/* Names are C strings in the xattr system calls. */
		if (memchr(str_at(idx, x.name_off), '\0', x.name_len))
			BAD("xattr %u: NUL in name", i);
		if (x.value_len > CFS_XATTR_VALUE_MAX || !str_in_table(idx, x.value_off, x.value_len))
			BAD("xattr %u: bad value (offset %u, length %u)", i, x.value_off, x.value_len);
		if (i + 1 < idx->nxattrs &&
		    name_cmp(str_at(idx, x.name_off), x.name_len,
			     str_at(idx, next.name_off), next.name_len) < 0)
			run_end[i] = run_end[i + 1];
		else
			run_end[i] = i + 1;
		next = x;
	}
	return 0;
}

static inline bool bit_test_set(uint64_t *map, uint64_t i)
{
	uint64_t m = 1ull << (i % 64);
	bool was = map[i / 64] & m;

	map[i / 64] |= m;
	return was;
}

struct check_state {
	uint64_t *dirent_owned; /* bitmaps over the dirent and extent tables */
	uint64_t *extent_owned;
	uint64_t dirents_owned, extents_owned;
	uint32_t *run_end;      /* see check_xattrs */
	uint32_t *refs;         /* dirents naming each inode */
	uint8_t *state;         /* tree walk: 0 new, 1 on the path, 2 reaches the root */
	uint32_t ndirs;
};

/* st_blocks counts the 4 KiB blocks a run of data touches, as a local file
 * system would allocate them: a run cut into extents at chunk boundaries
 * that are not 4 KiB multiples is still counted once. */
static uint64_t run_blocks(uint64_t start, uint64_t end)
{
	if (end <= start)
		return 0;
	if (end <= UINT64_MAX - 4095)
		end = CFS_ALIGN_UP(end, 4096);
	return (end - (start & ~(uint64_t)4095)) / 512;
}

static int check_regular(struct cfs_index *idx, struct check_state *st, uint32_t i,
			 const struct cfs_disk_inode *d)
{
	uint64_t pos = 0, blocks = 0, run_start = 0, run_end = 0;

	if (!range_in(d->a, d->b, idx->nextents))
		BAD("inode %u: extents [%llu, +%u) outside the table", i + 1,
		    (unsigned long long)d->a, d->b);
	for (uint64_t e = d->a; e < d->a + d->b; e++) {
		struct cfs_disk_extent x;
		struct cfs_disk_chunk c;
		uint64_t end;

		if (bit_test_set(st->extent_owned, e))
			BAD("inode %u: extent %llu used twice", i + 1, (unsigned long long)e);
		st->extents_owned++;
		load_extent(idx, e, &x);
		if (x.file_off != pos || x.len == 0 || __builtin_add_overflow(pos, x.len, &end))
			BAD("inode %u: extent %llu [%llu, +%llu) not contiguous at %llu", i + 1,
			    (unsigned long long)e, (unsigned long long)x.file_off,
			    (unsigned long long)x.len, (unsigned long long)pos);
		pos = end;
		if (x.chunk == CFS_CHUNK_NONE) {
			blocks += run_blocks(run_start, run_end);
			run_start = run_end = end;
			if (x.chunk_off)
				BAD("inode %u: hole extent %llu with chunk offset", i + 1,
				    (unsigned long long)e);
			continue;
		}
		if (x.chunk >= idx->nchunks)
			BAD("inode %u: extent %llu: chunk %u out of range", i + 1,
			    (unsigned long long)e, x.chunk);
		load_chunk(idx, x.chunk, &c);
		if (x.len > c.raw_size || x.chunk_off > c.raw_size - x.len)
			BAD("inode %u: extent %llu outside chunk %u", i + 1, (unsigned long long)e,
			    x.chunk);
		run_end = end;
	}
	/* At most 2^64 / 512 blocks in all: the sums cannot overflow. */
	blocks += run_blocks(run_start, run_end);
	if (pos != d->size)
		BAD("inode %u: extents end at %llu, size %llu", i + 1, (unsigned long long)pos,
		    (unsigned long long)d->size);
	idx->blocks[i] = blocks;
	return 0;
}

static int check_inode(struct cfs_index *idx, struct check_state *st, uint32_t i)
{
	struct cfs_disk_inode d;
	uint32_t type;
	const char *s;
	int r;

	load_inode(idx, i, &d);
	type = mode_type(d.mode);
	if (!type || (d.mode & ~(uint32_t)(S_IFMT | 07777)))
		BAD("inode %u: bad mode %#o", i + 1, d.mode);
	if (d.reserved)
		BAD("inode %u: reserved field set", i + 1);
	if (d.mtime_nsec >= 1000000000u)
		BAD("inode %u: mtime nanoseconds %u", i + 1, d.mtime_nsec);
	if (d.xattr_count && !range_in(d.xattr_first, d.xattr_count, idx->nxattrs))
		BAD("inode %u: xattrs [%u, +%u) outside the table", i + 1, d.xattr_first,
		    d.xattr_count);
	if (d.xattr_count && d.xattr_first + (uint64_t)d.xattr_count > st->run_end[d.xattr_first])
		BAD("inode %u: xattrs not sorted by name or duplicated", i + 1);
	if (type != S_IFDIR && d.parent)
		BAD("inode %u: parent set on a non-directory", i + 1);
	if (i + 1 == CFS_ROOT_INO && (type != S_IFDIR || d.parent != CFS_ROOT_INO))
		BAD("root inode: not a directory that is its own parent");

	switch (type) {
	case S_IFDIR:
		if (d.size)
			BAD("inode %u: directory with size %llu", i + 1, (unsigned long long)d.size);
		if (d.parent < 1 || d.parent > idx->ninodes)
			BAD("inode %u: parent %u out of range", i + 1, d.parent);
		if (!range_in(d.a, d.b, idx->ndirents))
			BAD("inode %u: dirents [%llu, +%u) outside the table", i + 1,
			    (unsigned long long)d.a, d.b);
		for (uint64_t e = d.a; e < d.a + d.b; e++)
			if (bit_test_set(st->dirent_owned, e))
				BAD("inode %u: dirent %llu belongs to two directories", i + 1,
				    (unsigned long long)e);
		st->dirents_owned += d.b;
		st->ndirs++;
		break;
	case S_IFREG:
		r = check_regular(idx, st, i, &d);
		if (r)
			return r;
		break;
	case S_IFLNK:
		if (d.b < 1 || d.b > CFS_SYMLINK_MAX || d.size != d.b ||
		    !str_in_table(idx, d.a, d.b))
			BAD("inode %u: bad symlink target (offset %llu, length %u, size %llu)",
			    i + 1, (unsigned long long)d.a, d.b, (unsigned long long)d.size);
		/* readlink(2) hands out a C string. */
		s = str_at(idx, d.a);
		if (memchr(s, '\0', d.b))
			BAD("inode %u: NUL in symlink target", i + 1);
		break;
	case S_IFCHR:
	case S_IFBLK:
		if (d.b || d.size)
			BAD("inode %u: device with b or size set", i + 1);
		break;
	default: /* fifo, socket */
		if (d.a || d.b || d.size)
			BAD("inode %u: fifo or socket with a, b or size set", i + 1);
		break;
	}
	return 0;
}

static int check_dir(const struct cfs_index *idx, struct check_state *st, uint32_t i,
		     const struct cfs_disk_inode *d)
{
	struct cfs_disk_dirent e, prev = { 0 };
	uint32_t subdirs = 0;

	for (uint64_t k = d->a; k < d->a + d->b; k++) {
		struct cfs_disk_inode t;
		const char *name;

		load_dirent(idx, k, &e);
		if (e.reserved)
			BAD("dirent %llu: reserved field set", (unsigned long long)k);
		if (e.name_len < 1 || e.name_len > CFS_NAME_MAX ||
		    !str_in_table(idx, e.name_off, e.name_len))
			BAD("dirent %llu: bad name (offset %u, length %u)", (unsigned long long)k,
			    e.name_off, e.name_len);
		name = str_at(idx, e.name_off);
		if (memchr(name, '/', e.name_len) || memchr(name, '\0', e.name_len) ||
		    (name[0] == '.' && (e.name_len == 1 || (e.name_len == 2 && name[1] == '.'))))
			BAD("dirent %llu: bad name \"%.*s\"", (unsigned long long)k, (int)e.name_len,
			    name);
		if (k > d->a && name_cmp(str_at(idx, prev.name_off), prev.name_len, name,
					 e.name_len) >= 0)
			BAD("inode %u: entries not sorted or duplicated at \"%.*s\"", i + 1,
			    (int)e.name_len, name);
		prev = e;
		if (e.ino < 1 || e.ino > idx->ninodes)
			BAD("dirent %llu: inode %u out of range", (unsigned long long)k, e.ino);
		load_inode(idx, e.ino - 1, &t);
		if (e.type != mode_dt(t.mode))
			BAD("dirent %llu: type %u, inode %u has type %u", (unsigned long long)k,
			    e.type, e.ino, mode_dt(t.mode));
		if (S_ISDIR(t.mode)) {
			if (t.parent != i + 1)
				BAD("dirent %llu: directory %u has parent %u, found in %u",
				    (unsigned long long)k, e.ino, t.parent, i + 1);
			subdirs++;
		}
		/* At most 2^31 / 12 dirents: cannot wrap. */
		st->refs[e.ino - 1]++;
	}
	if (d->nlink != 2ull + subdirs)
		BAD("inode %u: directory nlink %u, %u subdirectories", i + 1, d->nlink, subdirs);
	return 0;
}

/* Every directory's parent chain must reach the root without a cycle.
 * Each directory is walked over once: the walk stops at the first one
 * already known to reach the root. */
static int check_tree(const struct cfs_index *idx, struct check_state *st)
{
	struct cfs_disk_inode d;

	st->state[CFS_ROOT_INO - 1] = 2;
	for (uint32_t i = 0; i < idx->ninodes; i++) {
		uint32_t cur = i;

		load_inode(idx, i, &d);
		if (!S_ISDIR(d.mode))
			continue;
		/* Walk up, marking the path... */
		while (st->state[cur] != 2) {
			if (st->state[cur] == 1)
				BAD("directory cycle through inode %u", cur + 1);
			load_inode(idx, cur, &d);
			if (!S_ISDIR(d.mode))
				BAD("inode %u: parent is not a directory", cur + 1);
			st->state[cur] = 1;
			cur = d.parent - 1;
		}
		/* ...then mark it as reaching the root. */
		for (cur = i; st->state[cur] == 1; cur = d.parent - 1) {
			load_inode(idx, cur, &d);
			st->state[cur] = 2;
		}
	}
	return 0;
}

static int check_links(const struct cfs_index *idx, const struct check_state *st)
{
	struct cfs_disk_inode d;

	for (uint32_t i = 0; i < idx->ninodes; i++) {
		load_inode(idx, i, &d);
		if (S_ISDIR(d.mode)) {
			/* Named once, in its parent (checked by check_dir). */
			if (st->refs[i] != (i + 1 == CFS_ROOT_INO ? 0u : 1u))
				BAD("directory %u named by %u entries", i + 1, st->refs[i]);
		} else if (st->refs[i] == 0 || d.nlink != st->refs[i]) {
			BAD("inode %u: nlink %u, named by %u entries", i + 1, d.nlink, st->refs[i]);
		}
	}
	return 0;
}

#undef BAD

static int check_all(struct cfs_index *idx)
{
	struct check_state st = { 0 };
	struct cfs_disk_inode d;
	int r = -ENOMEM;

	st.dirent_owned = calloc(idx->ndirents / 64 + 1, sizeof(uint64_t));
	st.extent_owned = calloc(idx->nextents / 64 + 1, sizeof(uint64_t));
	st.run_end = malloc((idx->nxattrs + 1ull) * sizeof(uint32_t));
	st.refs = calloc(idx->ninodes, sizeof(uint32_t));
	st.state = calloc(idx->ninodes, 1);
	if (!st.dirent_owned || !st.extent_owned || !st.run_end || !st.refs || !st.state)
		goto out;

	r = check_chunks(idx);
	if (r)
		goto out;
	r = check_xattrs(idx, st.run_end);
	if (r)
		goto out;
	for (uint32_t i = 0; i < idx->ninodes; i++) {
		r = check_inode(idx, &st, i);
		if (r)
			goto out;
	}
	/* Every record is reachable, so that none escapes validation. */
	r = -EUCLEAN;
	if (st.dirents_owned != idx->ndirents) {
		cfs_debug("index: %u dirents, %llu in directories", idx->ndirents,
			  (unsigned long long)st.dirents_owned);
		goto out;
	}
	if (st.extents_owned != idx->nextents) {
		cfs_debug("index: %u extents, %llu in files", idx->nextents,
			  (unsigned long long)st.extents_owned);
		goto out;
	}
	for (uint32_t i = 0; i < idx->ninodes; i++) {
		load_inode(idx, i, &d);
		if (!S_ISDIR(d.mode))
			continue;
		r = check_dir(idx, &st, i, &d);
		if (r)
			goto out;
	}
	r = check_links(idx, &st);
	if (r)
		goto out;
	r = check_tree(idx, &st);
out:
	free(st.state);
	free(st.refs);
	free(st.run_end);
	free(st.extent_owned);
	free(st.dirent_owned);
	return r;
}

static uint32_t get32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
	return le32toh(v);
}

#define NO_HINTS(...)                          \
	do {                                   \
		cfs_debug("index: hints ignored: " __VA_ARGS__); \
		return;                        \
	} while (0)

/* The hints section (format.h), in time linear in its size: kept when
 * every rule holds, else left out. */
static void check_hints(struct cfs_index *idx, const struct cfs_disk_header *h)
{
	uint64_t off = le64toh(h->hints.offset), size = le64toh(h->hints.size), end, need;
	struct cfs_disk_hints hd;
	const uint8_t *p, *trig, *starts, *ent;

	if (!(le64toh(h->features_compat) & CFS_FEAT_COMPAT_HINTS) ||
	    le32toh(h->header_size) < sizeof(*h))
		return;
	if (off % 8 || __builtin_add_overflow(off, size, &end) || off < le32toh(h->header_size) ||
	    end > idx->len || size < sizeof(hd))
		NO_HINTS("section [%llu, +%llu) outside the index", (unsigned long long)off,
			 (unsigned long long)size);
	for (int i = 0; i < CFS_SEC_COUNT; i++) {
		uint64_t so = le64toh(h->sec[i].offset), ss = le64toh(h->sec[i].size);

		if (ss && so < end && off < so + ss)
			NO_HINTS("section overlaps the %s", sec_name[i]);
	}
	p = idx->buf + off;
	memcpy(&hd, p, sizeof(hd));
	hd.version = le32toh(hd.version);
	hd.triggers = le32toh(hd.triggers);
	hd.lists = le32toh(hd.lists);
	hd.entries = le32toh(hd.entries);
	if (hd.version != CFS_HINTS_VERSION)
		NO_HINTS("version %u", hd.version);
	need = sizeof(hd) + (uint64_t)hd.triggers * sizeof(struct cfs_disk_hint) +
	       ((uint64_t)hd.lists + 1 + hd.entries) * 4;
	if (need != size)
		NO_HINTS("%u triggers, %u lists, %u entries in %llu bytes", hd.triggers, hd.lists,
			 hd.entries, (unsigned long long)size);
	trig = p + sizeof(hd);
	starts = trig + (size_t)hd.triggers * sizeof(struct cfs_disk_hint);
	ent = starts + ((size_t)hd.lists + 1) * 4;
	for (uint32_t i = 0, prev = 0; i < hd.triggers; i++) {
		uint32_t ino = get32(trig + (size_t)i * 8), list = get32(trig + (size_t)i * 8 + 4);

		if (ino <= prev || ino > idx->ninodes || list >= hd.lists)
			NO_HINTS("trigger %u (inode %u, list %u)", i, ino, list);
		prev = ino;
	}
	if (get32(starts) != 0 || get32(starts + (size_t)hd.lists * 4) != hd.entries)
		NO_HINTS("list starts do not span the entries");
	for (uint32_t l = 0; l < hd.lists; l++) {
		uint32_t a = get32(starts + (size_t)l * 4), b = get32(starts + (size_t)l * 4 + 4);

		if (b <= a || b > hd.entries || b - a > CFS_HINTS_LIST_MAX)
			NO_HINTS("list %u [%u, %u)", l, a, b);
		for (uint32_t k = a, prev = 0; k < b; k++) {
			uint32_t ino = get32(ent + (size_t)k * 4);

			if (ino <= prev || ino > idx->ninodes)
				NO_HINTS("list %u: entry %u (inode %u)", l, k - a, ino);
			prev = ino;
		}
	}
	idx->hint_trig = trig;
	idx->hint_starts = starts;
	idx->hint_ent = ent;
	idx->hint_ntrig = hd.triggers;
	idx->hint_nlists = hd.lists;
	idx->hint_nent = hd.entries;
}

#undef NO_HINTS

CFS_EXPORT int cfs_index_open(void *buf, size_t len, struct cfs_index **out)
{
	struct cfs_disk_header h;
	struct cfs_index *idx;
	int r;

	*out = NULL;
	if (len < CFS_HEADER_SIZE_MIN || len > CFS_INDEX_MAX_SIZE) {
		cfs_debug("index: size %zu out of bounds", len);
		return -EUCLEAN;
	}
	idx = calloc(1, sizeof(*idx));
	if (!idx)
		return -ENOMEM;
	idx->buf = buf;
	idx->len = len;
	header_read(buf, len, &h);
	r = check_header(idx, &h, len);
	if (r)
		goto err_idx;
	r = -ENOMEM;
	idx->blocks = calloc(idx->ninodes, sizeof(*idx->blocks));
	if (!idx->blocks)
		goto err_idx;
	r = check_all(idx);
	if (r)
		goto err_blocks;
	check_hints(idx, &h);
	*out = idx;
	return 0;

err_blocks:
	free(idx->blocks);
err_idx:
	free(idx); /* buf stays the caller's */
	return r;
}

CFS_EXPORT void cfs_index_free(struct cfs_index *idx)
{
	if (!idx)
		return;
	free(idx->blocks);
	free(idx->buf);
	free(idx);
}

CFS_EXPORT void cfs_index_info(const struct cfs_index *idx, struct cfs_index_info *out)
{
	out->version = idx->version;
	out->chunk_size = idx->chunk_size;
	out->inode_count = idx->ninodes;
	out->chunk_count = idx->nchunks;
	out->total_file_bytes = idx->total_file_bytes;
	out->index_size = idx->len;
	out->hint_triggers = idx->hint_ntrig;
	out->hint_lists = idx->hint_nlists;
	out->hint_entries = idx->hint_nent;
}

CFS_EXPORT uint32_t cfs_index_hints(const struct cfs_index *idx, uint64_t ino, uint32_t *first)
{
	uint32_t lo = 0, hi = idx->hint_ntrig;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		uint32_t t = get32(idx->hint_trig + (size_t)mid * 8);

		if (t == ino) {
			uint32_t l = get32(idx->hint_trig + (size_t)mid * 8 + 4);

			*first = get32(idx->hint_starts + (size_t)l * 4);
			return get32(idx->hint_starts + (size_t)l * 4 + 4) - *first;
		}
		if (t < ino)
			lo = mid + 1;
		else
			hi = mid;
	}
	return 0;
}

CFS_EXPORT uint64_t cfs_index_hint(const struct cfs_index *idx, uint32_t k)
{
	return k < idx->hint_nent ? get32(idx->hint_ent + (size_t)k * 4) : 0;
}

/* Loads inode ino, or -ENOENT when it is not in the image. */
static int get_inode(const struct cfs_index *idx, uint64_t ino, struct cfs_disk_inode *d)
{
	if (ino < 1 || ino > idx->ninodes)
		return -ENOENT;
	load_inode(idx, (uint32_t)(ino - 1), d);
	return 0;
}

CFS_EXPORT int cfs_index_inode(const struct cfs_index *idx, uint64_t ino, struct cfs_inode *out)
{
	struct cfs_disk_inode d;
	int r = get_inode(idx, ino, &d);

	if (r)
		return r;
	memset(out, 0, sizeof(*out));
	out->ino = ino;
	out->mode = d.mode;
	out->uid = d.uid;
	out->gid = d.gid;
	out->nlink = d.nlink;
	out->size = d.size;
	out->blocks = idx->blocks[ino - 1];
	out->mtime_sec = d.mtime_sec;
	out->mtime_nsec = d.mtime_nsec;
	out->parent = d.parent;
	if (S_ISCHR(d.mode) || S_ISBLK(d.mode))
		out->rdev = d.a;
	if (S_ISDIR(d.mode) || S_ISREG(d.mode))
		out->nentries = d.b;
	if (S_ISREG(d.mode))
		out->extent_first = d.a;
	out->nxattrs = d.xattr_count;
	return 0;
}

static int get_dir(const struct cfs_index *idx, uint64_t dir, struct cfs_disk_inode *d)
{
	int r = get_inode(idx, dir, d);

	if (r)
		return r;
	return S_ISDIR(d->mode) ? 0 : -ENOTDIR;
}

CFS_EXPORT int cfs_index_lookup(const struct cfs_index *idx, uint64_t dir, const char *name,
				size_t name_len, uint64_t *ino)
{
	struct cfs_disk_inode d;
	uint64_t lo, hi;
	int r = get_dir(idx, dir, &d);

	if (r)
		return r;
	/* No stored name is empty or longer; and name may be NULL when empty. */
	if (name_len < 1 || name_len > CFS_NAME_MAX)
		return -ENOENT;
	lo = d.a;
	hi = d.a + d.b;
	while (lo < hi) {
		uint64_t mid = lo + (hi - lo) / 2;
		struct cfs_disk_dirent e;
		int c;

		load_dirent(idx, mid, &e);
		c = name_cmp(name, name_len, str_at(idx, e.name_off), e.name_len);
		if (c == 0) {
			*ino = e.ino;
			return 0;
		}
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return -ENOENT;
}

CFS_EXPORT int cfs_index_lookup_path(const struct cfs_index *idx, const char *path,
				     uint64_t *ino)
{
	uint64_t cur = CFS_ROOT_INO;
	const char *name;
	size_t n;

	while ((n = cfs_path_next(&path, &name))) {
		int r = cfs_index_lookup(idx, cur, name, n, &cur);

		if (r < 0)
			return r;
	}
	*ino = cur;
	return 0;
}

CFS_EXPORT int cfs_index_dirent(const struct cfs_index *idx, uint64_t dir, uint64_t pos,
				struct cfs_dirent *out)
{
	struct cfs_disk_inode d;
	struct cfs_disk_dirent e;
	int r = get_dir(idx, dir, &d);

	if (r)
		return r;
	if (pos >= d.b)
		return 0;
	load_dirent(idx, d.a + pos, &e);
	out->ino = e.ino;
	out->name = str_at(idx, e.name_off);
	out->name_len = e.name_len;
	out->type = e.type;
	return 1;
}

CFS_EXPORT int cfs_index_readlink(const struct cfs_index *idx, uint64_t ino, const char **target,
				  size_t *len)
{
	struct cfs_disk_inode d;
	int r = get_inode(idx, ino, &d);

	if (r)
		return r;
	if (!S_ISLNK(d.mode))
		return -EINVAL;
	*target = str_at(idx, d.a);
	*len = d.b;
	return 0;
}

static void fill_xattr(const struct cfs_index *idx, uint64_t i, struct cfs_xattr *out)
{
	struct cfs_disk_xattr x;

	load_xattr(idx, i, &x);
	out->name = str_at(idx, x.name_off);
	out->name_len = x.name_len;
	out->value = str_at(idx, x.value_off);
	out->value_len = x.value_len;
}

CFS_EXPORT int cfs_index_xattr(const struct cfs_index *idx, uint64_t ino, uint32_t i,
			       struct cfs_xattr *out)
{
	struct cfs_disk_inode d;
	int r = get_inode(idx, ino, &d);

	if (r)
		return r;
	if (i >= d.xattr_count)
		return 0;
	fill_xattr(idx, (uint64_t)d.xattr_first + i, out);
	return 1;
}

CFS_EXPORT int cfs_index_getxattr(const struct cfs_index *idx, uint64_t ino, const char *name,
				  struct cfs_xattr *out)
{
	struct cfs_disk_inode d;
	size_t len = strlen(name);
	uint64_t lo, hi;
	int r = get_inode(idx, ino, &d);

	if (r)
		return r;
	if (len < 1 || len > CFS_XATTR_NAME_MAX)
		return -ENODATA;
	lo = d.xattr_first;
	hi = lo + d.xattr_count;
	while (lo < hi) {
		uint64_t mid = lo + (hi - lo) / 2;
		struct cfs_disk_xattr x;
		int c;

		load_xattr(idx, mid, &x);
		c = name_cmp(name, len, str_at(idx, x.name_off), x.name_len);
		if (c == 0) {
			fill_xattr(idx, mid, out);
			return 0;
		}
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return -ENODATA;
}

/* The extents of regular file in: 0 and where they start in the table, or
 * -EINVAL for another type or an inode that is not this index's. */
static int file_extents(const struct cfs_index *idx, const struct cfs_inode *in, uint64_t *first)
{
	if (!S_ISREG(in->mode) || in->extent_first > idx->nextents ||
	    in->nentries > idx->nextents - in->extent_first)
		return -EINVAL;
	*first = in->extent_first;
	return 0;
}

CFS_EXPORT int cfs_index_file_extent_find(const struct cfs_index *idx, const struct cfs_inode *in,
					  uint64_t off, uint32_t *i)
{
	uint32_t lo = 0, hi;
	uint64_t first;
	int r = file_extents(idx, in, &first);

	if (r)
		return r;
	if (off >= in->size)
		return 1;
	/* The last extent starting at or before off; extents are contiguous
	 * from 0, so it holds off. */
	hi = in->nentries;
	while (hi - lo > 1) {
		uint32_t mid = lo + (hi - lo) / 2;
		struct cfs_disk_extent x;

		load_extent(idx, first + mid, &x);
		if (x.file_off <= off)
			lo = mid;
		else
			hi = mid;
	}
	*i = lo;
	return 0;
}

CFS_EXPORT int cfs_index_file_extent(const struct cfs_index *idx, const struct cfs_inode *in,
				     uint32_t i, struct cfs_extent *out)
{
	struct cfs_disk_extent x;
	uint64_t first;
	int r = file_extents(idx, in, &first);

	if (r)
		return r;
	if (i >= in->nentries)
		return 0;
	load_extent(idx, first + i, &x);
	out->file_off = x.file_off;
	out->len = x.len;
	out->chunk = x.chunk;
	out->chunk_off = x.chunk_off;
	return 1;
}

CFS_EXPORT int cfs_index_extent_find(const struct cfs_index *idx, uint64_t ino, uint64_t off,
				     uint32_t *i)
{
	struct cfs_inode in;
	int r = cfs_index_inode(idx, ino, &in);

	return r ? r : cfs_index_file_extent_find(idx, &in, off, i);
}

CFS_EXPORT int cfs_index_extent(const struct cfs_index *idx, uint64_t ino, uint32_t i,
				struct cfs_extent *out)
{
	struct cfs_inode in;
	int r = cfs_index_inode(idx, ino, &in);

	return r ? r : cfs_index_file_extent(idx, &in, i, out);
}

CFS_EXPORT int cfs_index_chunk(const struct cfs_index *idx, uint32_t chunk, struct cfs_chunk *out)
{
	struct cfs_disk_chunk c;

	if (chunk >= idx->nchunks)
		return -ENOENT;
	load_chunk(idx, chunk, &c);
	memcpy(out->digest.b, c.digest, sizeof(out->digest.b));
	out->raw_size = c.raw_size;
	out->stored_size = c.stored_size;
	return 0;
}

CFS_EXPORT int cfs_index_prefetch(const struct cfs_index *idx, cfs_digest *out)
{
	if (!idx->has_prefetch)
		return -ENOENT;
	*out = idx->prefetch;
	return 0;
}

CFS_EXPORT int cfs_index_config(const struct cfs_index *idx, cfs_digest *out, uint64_t *size)
{
	if (!idx->has_config)
		return -ENOENT;
	*out = idx->config;
	*size = idx->config_size;
	return 0;
}

/* The header of a serialised index, for an edit; -EUCLEAN if the buffer is
 * no index or its header too short for the fields edited. */
static int header_edit(void *buf, size_t len, size_t need, struct cfs_disk_header *h)
{
	if (len < CFS_HEADER_SIZE_MIN)
		return -EUCLEAN;
	header_read(buf, len, h);
	if (memcmp(h->magic, CFS_INDEX_MAGIC, sizeof(h->magic)) ||
	    le32toh(h->header_size) < need || le32toh(h->header_size) > len ||
	    le64toh(h->index_size) != len)
		return -EUCLEAN;
	return 0;
}

CFS_EXPORT int cfs_index_set_config(void *buf, size_t len, const cfs_digest *d, uint64_t size)
{
	struct cfs_disk_header h;
	uint64_t compat;
	int ret;

	ret = header_edit(buf, len, CFS_HEADER_SIZE_CONFIG, &h);
	if (ret)
		return ret;
	if (d && (!size || size > CFS_CONFIG_MAX_SIZE))
		return -EINVAL;
	compat = le64toh(h.features_compat);
	if (d) {
		memcpy(h.config, d->b, sizeof(h.config));
		h.config_size = htole64(size);
		compat |= CFS_FEAT_COMPAT_CONFIG;
	} else {
		memset(h.config, 0, sizeof(h.config));
		h.config_size = 0;
		compat &= ~CFS_FEAT_COMPAT_CONFIG;
	}
	h.features_compat = htole64(compat);
	memcpy(buf, &h, CFS_MIN((size_t)le32toh(h.header_size), sizeof(h)));
	return 0;
}

CFS_EXPORT int cfs_index_set_prefetch(void *buf, size_t len, const cfs_digest *d)
{
	struct cfs_disk_header h;
	uint64_t compat;
	uint32_t hs;
	int ret;

	ret = header_edit(buf, len, CFS_HEADER_SIZE_MIN, &h);
	if (ret)
		return ret;
	hs = le32toh(h.header_size);
	compat = le64toh(h.features_compat);
	if (d) {
		memcpy(h.prefetch, d->b, sizeof(h.prefetch));
		compat |= CFS_FEAT_COMPAT_PREFETCH;
	} else {
		memset(h.prefetch, 0, sizeof(h.prefetch));
		compat &= ~CFS_FEAT_COMPAT_PREFETCH;
	}
	h.features_compat = htole64(compat);
	/* Only the header's own bytes: a first-layout one is shorter. */
	memcpy(buf, &h, CFS_MIN((size_t)hs, sizeof(h)));
	return 0;
}

CFS_EXPORT int cfs_prefetch_encode(const uint32_t *chunks, size_t count, void **buf, size_t *len)
{
	struct cfs_disk_prefetch h = { .version = htole32(CFS_PREFETCH_VERSION) };
	uint8_t *p;

	*buf = NULL;
	if (count > UINT32_MAX)
		return -EINVAL;
	p = malloc(sizeof(h) + count * sizeof(uint32_t));
	if (!p)
		return -ENOMEM;
	memcpy(h.magic, CFS_PREFETCH_MAGIC, sizeof(h.magic));
	h.count = htole32((uint32_t)count);
	memcpy(p, &h, sizeof(h));
	for (size_t i = 0; i < count; i++) {
		uint32_t v = htole32(chunks[i]);

		memcpy(p + sizeof(h) + i * sizeof(v), &v, sizeof(v));
	}
	*buf = p;
	*len = sizeof(h) + count * sizeof(uint32_t);
	return 0;
}

CFS_EXPORT int cfs_prefetch_parse(const struct cfs_index *idx, const void *buf, size_t len,
				  uint32_t **chunks, size_t *count)
{
	struct cfs_disk_prefetch h;
	const uint8_t *p = buf;
	uint64_t *seen = NULL;
	uint32_t *out = NULL, n;
	int ret = -EUCLEAN;

	*chunks = NULL;
	*count = 0;
	if (len < sizeof(h)) {
		cfs_debug("prefetch list: %zu bytes", len);
		return -EUCLEAN;
	}
	memcpy(&h, p, sizeof(h));
	if (memcmp(h.magic, CFS_PREFETCH_MAGIC, sizeof(h.magic))) {
		cfs_debug("prefetch list: bad magic");
		return -EUCLEAN;
	}
	if (le32toh(h.version) != CFS_PREFETCH_VERSION) {
		cfs_debug("prefetch list: version %u not supported", le32toh(h.version));
		return -EPROTONOSUPPORT;
	}
	n = le32toh(h.count);
	/* No duplicates: at most one entry per chunk. */
	if (n > idx->nchunks || len != sizeof(h) + (uint64_t)n * sizeof(uint32_t)) {
		cfs_debug("prefetch list: count %u, %zu bytes, %u chunks", n, len, idx->nchunks);
		return -EUCLEAN;
	}
	if (!n)
		return 0;
	out = malloc((size_t)n * sizeof(*out));
	seen = calloc(idx->nchunks / 64 + 1, sizeof(*seen));
	if (!out || !seen) {
		ret = -ENOMEM;
		goto err;
	}
	for (uint32_t i = 0; i < n; i++) {
		uint32_t v;

		memcpy(&v, p + sizeof(h) + (size_t)i * sizeof(v), sizeof(v));
		v = le32toh(v);
		if (v >= idx->nchunks) {
			cfs_debug("prefetch list: entry %u: chunk %u of %u", i, v, idx->nchunks);
			goto err;
		}
		if (bit_test_set(seen, v)) {
			cfs_debug("prefetch list: entry %u: chunk %u repeated", i, v);
			goto err;
		}
		out[i] = v;
	}
	free(seen);
	*chunks = out;
	*count = n;
	return 0;
err:
	free(seen);
	free(out);
	return ret;
}
