/* SPDX-License-Identifier: MIT */
/*
 * test-format: the index format (format.h) and its reader (index.h): every
 * accessor on a small hand-written image, one crafted violation per
 * validation rule, truncation at every length, a round trip through
 * cfs_builder, and the time to open a 200k-inode index.  "test-format --write-corpus DIR" writes the fuzzer's
 * seed corpus instead.
 */
#include <endian.h>
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "builder.h"
#include "format.h"
#include "index.h"
#include "util.h"
#include "test.h"

static const char *corpus_dir;

/*
 * A small index writer, independent of lib/format/builder.c so that the reader is
 * tested against the format as documented, and so that tests can write
 * what the builder never would.  Records are kept in host order and
 * converted at serialisation.
 */
struct tw {
	struct cfs_disk_inode *ino;
	struct cfs_disk_dirent *de;
	struct cfs_disk_extent *ext;
	struct cfs_disk_chunk *chunk;
	struct cfs_disk_xattr *xa;
	char *str;
	size_t nino, nde, next, nchunk, nxa, nstr;
	size_t cap[6];
	uint32_t chunk_size;
	uint64_t total_file_bytes;
	uint32_t hdr_size; /* 0: the second layout's 256 bytes, 272 with hints */
	const uint32_t *hints; /* a hints section's u32 words, after the strings */
	size_t nhints;
	/* Where the last tw_build put each section. */
	uint64_t sec_off[CFS_SEC_COUNT];
};

static void *grow(void *p, size_t *cap, size_t n, size_t elem)
{
	if (n < *cap)
		return p;
	*cap = *cap ? *cap * 2 : 16;
	if (*cap <= n)
		*cap = n + 1;
	p = realloc(p, *cap * elem);
	if (!p) {
		perror("realloc");
		exit(1);
	}
	return p;
}

static void tw_free(struct tw *t)
{
	free(t->ino);
	free(t->de);
	free(t->ext);
	free(t->chunk);
	free(t->xa);
	free(t->str);
	memset(t, 0, sizeof(*t));
}

static uint32_t tw_str(struct tw *t, const void *s, size_t len)
{
	uint32_t off = (uint32_t)t->nstr;

	t->str = grow(t->str, &t->cap[5], t->nstr + len, 1);
	memcpy(t->str + t->nstr, s, len);
	t->nstr += len;
	return off;
}

/* Adds an inode, returns its number. */
static uint32_t tw_inode(struct tw *t, uint32_t mode)
{
	struct cfs_disk_inode *d;

	t->ino = grow(t->ino, &t->cap[0], t->nino, sizeof(*t->ino));
	d = &t->ino[t->nino++];
	memset(d, 0, sizeof(*d));
	d->mode = mode;
	d->nlink = 1;
	return (uint32_t)t->nino;
}

static struct cfs_disk_inode *I(struct tw *t, uint32_t ino)
{
	return &t->ino[ino - 1];
}

/* Gives directory dir the n entries (already sorted) and sets the parent of
 * subdirectories. */
static void tw_dir(struct tw *t, uint32_t dir, const char *const *names, const uint32_t *inos,
		   size_t n)
{
	I(t, dir)->a = t->nde;
	I(t, dir)->b = (uint32_t)n;
	for (size_t i = 0; i < n; i++) {
		struct cfs_disk_dirent *e;

		t->de = grow(t->de, &t->cap[1], t->nde, sizeof(*t->de));
		e = &t->de[t->nde++];
		memset(e, 0, sizeof(*e));
		e->ino = inos[i];
		e->name_len = (uint16_t)strlen(names[i]);
		e->name_off = tw_str(t, names[i], e->name_len);
		if (S_ISDIR(I(t, inos[i])->mode))
			I(t, inos[i])->parent = dir;
	}
}

static uint32_t tw_extent(struct tw *t, uint64_t off, uint64_t len, uint32_t chunk,
			  uint32_t chunk_off)
{
	t->ext = grow(t->ext, &t->cap[2], t->next, sizeof(*t->ext));
	t->ext[t->next] = (struct cfs_disk_extent){ off, len, chunk, chunk_off };
	return (uint32_t)t->next++;
}

static uint32_t tw_chunk(struct tw *t, uint8_t fill, uint32_t raw, uint32_t stored)
{
	struct cfs_disk_chunk *c;

	t->chunk = grow(t->chunk, &t->cap[3], t->nchunk, sizeof(*t->chunk));
	c = &t->chunk[t->nchunk];
	memset(c->digest, fill, sizeof(c->digest));
	c->raw_size = raw;
	c->stored_size = stored;
	return (uint32_t)t->nchunk++;
}

static uint32_t tw_xattr(struct tw *t, const char *name, const void *value, size_t value_len)
{
	struct cfs_disk_xattr *x;

	t->xa = grow(t->xa, &t->cap[4], t->nxa, sizeof(*t->xa));
	x = &t->xa[t->nxa];
	memset(x, 0, sizeof(*x));
	x->name_len = (uint16_t)strlen(name);
	x->name_off = tw_str(t, name, x->name_len);
	x->value_len = (uint32_t)value_len;
	x->value_off = tw_str(t, value, value_len);
	return (uint32_t)t->nxa++;
}

/* nlink of every inode and type of every dirent from the entries. */
static void tw_fix_links(struct tw *t)
{
	for (size_t i = 0; i < t->nino; i++)
		t->ino[i].nlink = S_ISDIR(t->ino[i].mode) ? 2 : 0;
	for (size_t i = 0; i < t->nino; i++) {
		struct cfs_disk_inode *d = &t->ino[i];

		if (!S_ISDIR(d->mode))
			continue;
		for (uint64_t k = d->a; k < d->a + d->b; k++) {
			struct cfs_disk_inode *c = I(t, t->de[k].ino);

			t->de[k].type = (uint8_t)((c->mode & S_IFMT) >> 12);
			if (S_ISDIR(c->mode))
				d->nlink++;
			else
				c->nlink++;
		}
	}
}

static void put16(uint8_t *p, uint16_t v) { v = htole16(v); memcpy(p, &v, 2); }
static void put32(uint8_t *p, uint32_t v) { v = htole32(v); memcpy(p, &v, 4); }
static void put64(uint8_t *p, uint64_t v) { v = htole64(v); memcpy(p, &v, 8); }

#define H_VERSION 8
#define H_HEADER_SIZE 12
#define H_COMPAT 16
#define H_INCOMPAT 24
#define H_INDEX_SIZE 32
#define H_INODE_COUNT 44
#define H_SEC(i) (64 + 16 * (i))
#define H_RESERVED 160
#define H_CONFIG 208
#define H_HINTS 256

/* Serialises into a malloc'd buffer: header, then the sections in table
 * order, each 8-aligned. */
static uint8_t *tw_build(struct tw *t, size_t *lenp)
{
	size_t nrec[CFS_SEC_COUNT] = { t->nino, t->nde, t->next, t->nchunk, t->nxa, t->nstr };
	size_t rec[CFS_SEC_COUNT] = { 64, 12, 24, 40, 16, 1 };
	size_t hdr = t->hdr_size ? t->hdr_size
				 : t->nhints ? sizeof(struct cfs_disk_header) : CFS_HEADER_SIZE_CONFIG;
	size_t off = hdr, hints_off = 0;
	uint8_t *b, *p;

	for (int s = 0; s < CFS_SEC_COUNT; s++) {
		off = CFS_ALIGN_UP(off, 8);
		t->sec_off[s] = off;
		off += nrec[s] * rec[s];
	}
	if (t->nhints) {
		hints_off = off = CFS_ALIGN_UP(off, 8);
		off += t->nhints * 4;
	}
	b = calloc(1, off);
	if (!b) {
		perror("calloc");
		exit(1);
	}
	memcpy(b, CFS_INDEX_MAGIC, 8);
	put32(b + H_VERSION, CFS_INDEX_VERSION);
	put32(b + H_HEADER_SIZE, (uint32_t)hdr);
	put64(b + H_INDEX_SIZE, off);
	put32(b + 40, t->chunk_size);
	put32(b + H_INODE_COUNT, (uint32_t)t->nino);
	put64(b + 48, t->total_file_bytes);
	for (int s = 0; s < CFS_SEC_COUNT; s++) {
		put64(b + H_SEC(s), t->sec_off[s]);
		put64(b + H_SEC(s) + 8, nrec[s] * rec[s]);
	}
	p = b + t->sec_off[CFS_SEC_INODES];
	for (size_t i = 0; i < t->nino; i++, p += 64) {
		const struct cfs_disk_inode *d = &t->ino[i];

		put32(p, d->mode);
		put32(p + 4, d->uid);
		put32(p + 8, d->gid);
		put32(p + 12, d->nlink);
		put64(p + 16, d->size);
		put64(p + 24, (uint64_t)d->mtime_sec);
		put32(p + 32, d->mtime_nsec);
		put32(p + 36, d->parent);
		put64(p + 40, d->a);
		put32(p + 48, d->b);
		put32(p + 52, d->xattr_count);
		put32(p + 56, d->xattr_first);
		put32(p + 60, d->reserved);
	}
	p = b + t->sec_off[CFS_SEC_DIRENTS];
	for (size_t i = 0; i < t->nde; i++, p += 12) {
		put32(p, t->de[i].ino);
		put32(p + 4, t->de[i].name_off);
		put16(p + 8, t->de[i].name_len);
		p[10] = t->de[i].type;
		p[11] = t->de[i].reserved;
	}
	p = b + t->sec_off[CFS_SEC_EXTENTS];
	for (size_t i = 0; i < t->next; i++, p += 24) {
		put64(p, t->ext[i].file_off);
		put64(p + 8, t->ext[i].len);
		put32(p + 16, t->ext[i].chunk);
		put32(p + 20, t->ext[i].chunk_off);
	}
	p = b + t->sec_off[CFS_SEC_CHUNKS];
	for (size_t i = 0; i < t->nchunk; i++, p += 40) {
		memcpy(p, t->chunk[i].digest, 32);
		put32(p + 32, t->chunk[i].raw_size);
		put32(p + 36, t->chunk[i].stored_size);
	}
	p = b + t->sec_off[CFS_SEC_XATTRS];
	for (size_t i = 0; i < t->nxa; i++, p += 16) {
		put32(p, t->xa[i].name_off);
		put32(p + 4, t->xa[i].value_off);
		put32(p + 8, t->xa[i].value_len);
		put16(p + 12, t->xa[i].name_len);
		put16(p + 14, t->xa[i].reserved);
	}
	if (t->nstr)
		memcpy(b + t->sec_off[CFS_SEC_STRINGS], t->str, t->nstr);
	if (t->nhints) {
		put64(b + H_COMPAT, CFS_FEAT_COMPAT_HINTS);
		put64(b + H_HINTS, hints_off);
		put64(b + H_HINTS + 8, t->nhints * 4);
		for (size_t i = 0; i < t->nhints; i++)
			put32(b + hints_off + 4 * i, t->hints[i]);
	}
	*lenp = off;
	return b;
}

#define MIB (1024u * 1024u)

/*
 *  1 /            dir, xattr user.root=""
 *  2 /a           dir
 *  3 /ab, /a/hard regular, 10000 bytes in 2 extents, 2 xattrs, nlink 2
 *  4 /dev         char device 1:3
 *  5 /fifo
 *  6 /link        -> "a/hard"
 *  7 /sparse      3 MiB: hole, 4096 bytes of data, hole
 *  8 /sock
 *  9 /a/empty     empty regular file
 * 10 /a/sub       empty dir
 */
static void small_image(struct tw *t)
{
	static const char *const root_names[] = { "a", "ab", "dev", "fifo", "link", "sock", "sparse" };
	static const uint32_t root_inos[] = { 2, 3, 4, 5, 6, 8, 7 };
	static const char *const a_names[] = { "empty", "hard", "sub" };
	static const uint32_t a_inos[] = { 9, 3, 10 };

	memset(t, 0, sizeof(*t));
	t->chunk_size = 65536;
	t->total_file_bytes = 10000 + 3 * MIB;
	tw_inode(t, S_IFDIR | 0755);
	tw_inode(t, S_IFDIR | 0700);
	tw_inode(t, S_IFREG | 04755);
	tw_inode(t, S_IFCHR | 0666);
	tw_inode(t, S_IFIFO | 0644);
	tw_inode(t, S_IFLNK | 0777);
	tw_inode(t, S_IFREG | 0600);
	tw_inode(t, S_IFSOCK | 0755);
	tw_inode(t, S_IFREG | 0644);
	tw_inode(t, S_IFDIR | 0755);
	I(t, 1)->parent = 1;
	tw_dir(t, 1, root_names, root_inos, 7);
	tw_dir(t, 2, a_names, a_inos, 3);
	I(t, 10)->a = t->nde;

	tw_chunk(t, 0x11, 4096, 100);
	tw_chunk(t, 0x22, 8000, 5000);

	I(t, 3)->size = 10000;
	I(t, 3)->uid = 1000;
	I(t, 3)->gid = 100;
	I(t, 3)->mtime_sec = 1234567890;
	I(t, 3)->mtime_nsec = 500000000;
	I(t, 3)->a = tw_extent(t, 0, 4096, 0, 0);
	tw_extent(t, 4096, 5904, 1, 100);
	I(t, 3)->b = 2;

	I(t, 7)->size = 3 * MIB;
	I(t, 7)->mtime_sec = -1;
	I(t, 7)->a = tw_extent(t, 0, MIB, CFS_CHUNK_NONE, 0);
	tw_extent(t, MIB, 4096, 0, 0);
	tw_extent(t, MIB + 4096, 2 * MIB - 4096, CFS_CHUNK_NONE, 0);
	I(t, 7)->b = 3;
	I(t, 9)->a = t->next;

	I(t, 4)->a = makedev(1, 3);

	I(t, 6)->a = tw_str(t, "a/hard", 6);
	I(t, 6)->b = 6;
	I(t, 6)->size = 6;

	I(t, 1)->xattr_first = tw_xattr(t, "user.root", "", 0);
	I(t, 1)->xattr_count = 1;
	I(t, 3)->xattr_first = tw_xattr(t, "security.capability", "\x01\x02\x03", 3);
	tw_xattr(t, "user.a", "x", 1);
	I(t, 3)->xattr_count = 2;

	tw_fix_links(t);
}

/* An image of just the root directory. */
static void root_image(struct tw *t)
{
	memset(t, 0, sizeof(*t));
	tw_inode(t, S_IFDIR | 0755);
	I(t, 1)->parent = 1;
	tw_fix_links(t);
}

static void write_file(const char *name, const void *buf, size_t len)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", corpus_dir, name);
	f = fopen(path, "wb");
	if (!f || fwrite(buf, 1, len, f) != len || fclose(f)) {
		perror(path);
		exit(1);
	}
}

/* Opens a malloc'd copy of exactly len bytes (so that ASan sees any read
 * past the end) and checks the result. */
static int open_copy(const void *buf, size_t len, struct cfs_index **idx)
{
	void *copy = malloc(len ? len : 1);
	int r;

	if (!copy)
		exit(1);
	memcpy(copy, buf, len);
	r = cfs_index_open(copy, len, idx);
	if (r)
		free(copy);
	return r;
}

static void expect_bytes(const char *desc, const uint8_t *b, size_t len, int want, int line)
{
	struct cfs_index *idx = NULL;
	int r = open_copy(b, len, &idx);

	if (r != want) {
		fprintf(stderr, "line %d: %s: open gave %d (%s), want %d\n", line, desc, r,
			cfs_strerror(r), want);
		failures++;
	}
	if (r == 0)
		CHECK(idx != NULL);
	else
		CHECK(idx == NULL);
	cfs_index_free(idx);
}

static int case_no;

/* Writes bad-input cases into the corpus as well: they are the seeds that
 * reach the deepest checks. */
static void expect_tw(struct tw *t, const char *desc, int want, int line)
{
	size_t len;
	uint8_t *b = tw_build(t, &len);

	expect_bytes(desc, b, len, want, line);
	if (corpus_dir) {
		char name[64];

		snprintf(name, sizeof(name), "%s-%03d-line%d", want ? "bad" : "ok", case_no++, line);
		write_file(name, b, len);
	}
	free(b);
}

/* A case: start from the small image, apply code, build, open. */
#define CASE(want, ...)                                          \
	do {                                                     \
		struct tw t;                                     \
		small_image(&t);                                 \
		__VA_ARGS__;                                     \
		expect_tw(&t, #__VA_ARGS__, want, __LINE__);     \
		tw_free(&t);                                     \
	} while (0)

/* Same on the serialised bytes b[len]. */
#define BYTES(want, ...)                                         \
	do {                                                     \
		struct tw t;                                     \
		size_t len;                                      \
		uint8_t *b;                                      \
		small_image(&t);                                 \
		b = tw_build(&t, &len);                          \
		__VA_ARGS__;                                     \
		expect_bytes(#__VA_ARGS__, b, len, want, __LINE__); \
		if (corpus_dir) {                                \
			char name_[64];                          \
			snprintf(name_, sizeof(name_), "%s-%03d-line%d", want ? "bad" : "ok", \
				 case_no++, __LINE__);           \
			write_file(name_, b, len);               \
		}                                                \
		free(b);                                         \
		tw_free(&t);                                     \
	} while (0)

static bool name_is(const char *p, size_t len, const char *s)
{
	return len == strlen(s) && !memcmp(p, s, len);
}

static void test_accessors(void)
{
	struct tw t;
	struct cfs_index *idx;
	struct cfs_index_info info;
	struct cfs_inode in;
	struct cfs_dirent de;
	struct cfs_xattr x;
	struct cfs_extent e;
	struct cfs_chunk c;
	const char *target;
	char longname[300];
	size_t len, tlen;
	uint64_t ino;
	uint32_t i;
	uint8_t *b;

	small_image(&t);
	b = tw_build(&t, &len);
	if (corpus_dir)
		write_file("small", b, len);
	if (open_copy(b, len, &idx)) {
		fprintf(stderr, "small image does not open\n");
		failures++;
		free(b);
		tw_free(&t);
		return;
	}

	cfs_index_info(idx, &info);
	CHECK(info.version == 1);
	CHECK(info.chunk_size == 65536);
	CHECK(info.inode_count == 10);
	CHECK(info.chunk_count == 2);
	CHECK(info.total_file_bytes == 10000 + 3 * MIB);
	CHECK(info.index_size == len);

	CHECK(cfs_index_inode(idx, 0, &in) == -ENOENT);
	CHECK(cfs_index_inode(idx, 11, &in) == -ENOENT);
	CHECK(cfs_index_inode(idx, UINT64_MAX, &in) == -ENOENT);
	CHECK(cfs_index_inode(idx, 1ull << 32, &in) == -ENOENT);

	CHECK(cfs_index_inode(idx, 1, &in) == 0);
	CHECK(in.ino == 1 && in.mode == (S_IFDIR | 0755) && in.nlink == 3 && in.parent == 1);
	CHECK(in.nentries == 7 && in.nxattrs == 1 && in.size == 0 && in.blocks == 0);
	CHECK(cfs_index_inode(idx, 2, &in) == 0);
	CHECK(in.mode == (S_IFDIR | 0700) && in.nlink == 3 && in.parent == 1 && in.nentries == 3);
	CHECK(cfs_index_inode(idx, 10, &in) == 0);
	CHECK(in.nlink == 2 && in.parent == 2 && in.nentries == 0);
	CHECK(cfs_index_inode(idx, 3, &in) == 0);
	CHECK(in.ino == 3 && in.mode == (S_IFREG | 04755) && in.uid == 1000 && in.gid == 100);
	CHECK(in.nlink == 2 && in.size == 10000 && in.blocks == 24 && in.parent == 0);
	CHECK(in.mtime_sec == 1234567890 && in.mtime_nsec == 500000000);
	CHECK(in.nentries == 2 && in.nxattrs == 2 && in.rdev == 0);
	CHECK(cfs_index_inode(idx, 7, &in) == 0);
	CHECK(in.size == 3 * MIB && in.blocks == 8 && in.nentries == 3 && in.mtime_sec == -1);
	CHECK(cfs_index_inode(idx, 4, &in) == 0);
	CHECK(S_ISCHR(in.mode) && in.rdev == makedev(1, 3) && in.nentries == 0 && in.nlink == 1);
	CHECK(cfs_index_inode(idx, 6, &in) == 0);
	CHECK(S_ISLNK(in.mode) && in.size == 6 && in.nentries == 0 && in.blocks == 0);
	CHECK(cfs_index_inode(idx, 9, &in) == 0);
	CHECK(S_ISREG(in.mode) && in.size == 0 && in.nentries == 0 && in.blocks == 0);

	/* lookup, including names that are prefixes of each other */
	static const char *const names[] = { "a", "ab", "dev", "fifo", "link", "sock", "sparse" };
	static const uint32_t inos[] = { 2, 3, 4, 5, 6, 8, 7 };
	static const uint8_t types[] = { DT_DIR, DT_REG, DT_CHR, DT_FIFO, DT_LNK, DT_SOCK, DT_REG };
	for (i = 0; i < 7; i++) {
		CHECK(cfs_index_lookup(idx, 1, names[i], strlen(names[i]), &ino) == 0);
		CHECK(ino == inos[i]);
		CHECK(cfs_index_dirent(idx, 1, i, &de) == 1);
		CHECK(de.ino == inos[i] && de.type == types[i]);
		CHECK(name_is(de.name, de.name_len, names[i]));
	}
	CHECK(cfs_index_dirent(idx, 1, 7, &de) == 0);
	CHECK(cfs_index_dirent(idx, 1, UINT64_MAX, &de) == 0);
	CHECK(cfs_index_dirent(idx, 10, 0, &de) == 0);
	CHECK(cfs_index_dirent(idx, 3, 0, &de) == -ENOTDIR);
	CHECK(cfs_index_dirent(idx, 11, 0, &de) == -ENOENT);
	CHECK(cfs_index_lookup(idx, 2, "hard", 4, &ino) == 0 && ino == 3);
	CHECK(cfs_index_lookup(idx, 2, "sub", 3, &ino) == 0 && ino == 10);
	CHECK(cfs_index_lookup(idx, 2, "empty", 5, &ino) == 0 && ino == 9);
	CHECK(cfs_index_lookup(idx, 1, "abc", 3, &ino) == -ENOENT);
	CHECK(cfs_index_lookup(idx, 1, "", 0, &ino) == -ENOENT);
	CHECK(cfs_index_lookup(idx, 1, "0", 1, &ino) == -ENOENT);
	CHECK(cfs_index_lookup(idx, 1, "zzz", 3, &ino) == -ENOENT);
	CHECK(cfs_index_lookup(idx, 1, "a/hard", 6, &ino) == -ENOENT);
	CHECK(cfs_index_lookup(idx, 1, "sparsely", 8, &ino) == -ENOENT);
	CHECK(cfs_index_lookup(idx, 1, "so", 2, &ino) == -ENOENT);
	memset(longname, 'a', sizeof(longname));
	CHECK(cfs_index_lookup(idx, 1, longname, sizeof(longname), &ino) == -ENOENT);
	CHECK(cfs_index_lookup(idx, 10, "a", 1, &ino) == -ENOENT);
	CHECK(cfs_index_lookup(idx, 3, "a", 1, &ino) == -ENOTDIR);
	CHECK(cfs_index_lookup(idx, 0, "a", 1, &ino) == -ENOENT);
	CHECK(cfs_index_lookup(idx, 12, "a", 1, &ino) == -ENOENT);
	/* whole paths: empty and "." components, repeated and trailing slashes */
	CHECK(cfs_index_lookup_path(idx, "", &ino) == 0 && ino == 1);
	CHECK(cfs_index_lookup_path(idx, "/", &ino) == 0 && ino == 1);
	CHECK(cfs_index_lookup_path(idx, "a/hard", &ino) == 0 && ino == 3);
	CHECK(cfs_index_lookup_path(idx, "//a/./sub/", &ino) == 0 && ino == 10);
	CHECK(cfs_index_lookup_path(idx, "/./a//empty", &ino) == 0 && ino == 9);
	CHECK(cfs_index_lookup_path(idx, "/a/nope", &ino) == -ENOENT);
	CHECK(cfs_index_lookup_path(idx, "/ab/x", &ino) == -ENOTDIR);
	CHECK(cfs_index_lookup_path(idx, "/a/../ab", &ino) == -ENOENT);
	{
		const char *p = "//./a/b./", *name = NULL;

		CHECK(cfs_path_next(&p, &name) == 1 && !memcmp(name, "a/", 2));
		CHECK(cfs_path_next(&p, &name) == 2 && !memcmp(name, "b./", 3));
		CHECK(cfs_path_next(&p, &name) == 0 && *p == '\0');
	}

	CHECK(cfs_index_readlink(idx, 6, &target, &tlen) == 0);
	CHECK(name_is(target, tlen, "a/hard"));
	CHECK(cfs_index_readlink(idx, 3, &target, &tlen) == -EINVAL);
	CHECK(cfs_index_readlink(idx, 1, &target, &tlen) == -EINVAL);
	CHECK(cfs_index_readlink(idx, 0, &target, &tlen) == -ENOENT);

	CHECK(cfs_index_xattr(idx, 1, 0, &x) == 1);
	CHECK(name_is(x.name, x.name_len, "user.root") && x.value_len == 0);
	CHECK(cfs_index_xattr(idx, 1, 1, &x) == 0);
	CHECK(cfs_index_xattr(idx, 3, 0, &x) == 1);
	CHECK(name_is(x.name, x.name_len, "security.capability") && x.value_len == 3 &&
	      !memcmp(x.value, "\x01\x02\x03", 3));
	CHECK(cfs_index_xattr(idx, 3, 1, &x) == 1);
	CHECK(name_is(x.name, x.name_len, "user.a") && x.value_len == 1 && !memcmp(x.value, "x", 1));
	CHECK(cfs_index_xattr(idx, 3, 2, &x) == 0);
	CHECK(cfs_index_xattr(idx, 3, UINT32_MAX, &x) == 0);
	CHECK(cfs_index_xattr(idx, 5, 0, &x) == 0);
	CHECK(cfs_index_xattr(idx, 11, 0, &x) == -ENOENT);
	CHECK(cfs_index_getxattr(idx, 3, "user.a", &x) == 0);
	CHECK(name_is(x.name, x.name_len, "user.a") && x.value_len == 1);
	CHECK(cfs_index_getxattr(idx, 3, "security.capability", &x) == 0);
	CHECK(x.value_len == 3);
	CHECK(cfs_index_getxattr(idx, 3, "user.ab", &x) == -ENODATA);
	CHECK(cfs_index_getxattr(idx, 3, "user.", &x) == -ENODATA);
	CHECK(cfs_index_getxattr(idx, 3, "", &x) == -ENODATA);
	CHECK(cfs_index_getxattr(idx, 3, "a", &x) == -ENODATA);
	CHECK(cfs_index_getxattr(idx, 3, "zzz", &x) == -ENODATA);
	CHECK(cfs_index_getxattr(idx, 1, "user.root", &x) == 0 && x.value_len == 0);
	CHECK(cfs_index_getxattr(idx, 5, "user.a", &x) == -ENODATA);
	CHECK(cfs_index_getxattr(idx, 0, "user.a", &x) == -ENOENT);

	/* extents */
	static const struct { uint64_t ino, off; int r; uint32_t i; } finds[] = {
		{ 3, 0, 0, 0 }, { 3, 4095, 0, 0 }, { 3, 4096, 0, 1 }, { 3, 9999, 0, 1 },
		{ 3, 10000, 1, 0 }, { 3, UINT64_MAX, 1, 0 },
		{ 7, 0, 0, 0 }, { 7, MIB - 1, 0, 0 }, { 7, MIB, 0, 1 }, { 7, MIB + 4095, 0, 1 },
		{ 7, MIB + 4096, 0, 2 }, { 7, 3 * MIB - 1, 0, 2 }, { 7, 3 * MIB, 1, 0 },
		{ 9, 0, 1, 0 }, { 1, 0, -EINVAL, 0 }, { 6, 0, -EINVAL, 0 }, { 0, 0, -ENOENT, 0 },
		{ 11, 0, -ENOENT, 0 },
	};
	for (i = 0; i < CFS_ARRAY_SIZE(finds); i++) {
		uint32_t got = 12345;
		int r = cfs_index_extent_find(idx, finds[i].ino, finds[i].off, &got);

		CHECK(r == finds[i].r);
		if (r != finds[i].r || (r == 0 && got != finds[i].i))
			fprintf(stderr, "extent_find(%llu, %llu) = %d, %u\n",
				(unsigned long long)finds[i].ino, (unsigned long long)finds[i].off,
				r, got);
		if (r == 0)
			CHECK(got == finds[i].i);
	}
	CHECK(cfs_index_extent(idx, 3, 0, &e) == 1);
	CHECK(e.file_off == 0 && e.len == 4096 && e.chunk == 0 && e.chunk_off == 0);
	CHECK(cfs_index_extent(idx, 3, 1, &e) == 1);
	CHECK(e.file_off == 4096 && e.len == 5904 && e.chunk == 1 && e.chunk_off == 100);
	CHECK(cfs_index_extent(idx, 3, 2, &e) == 0);
	CHECK(cfs_index_extent(idx, 7, 0, &e) == 1);
	CHECK(e.file_off == 0 && e.len == MIB && e.chunk == CFS_CHUNK_NONE);
	CHECK(cfs_index_extent(idx, 7, 2, &e) == 1);
	CHECK(e.file_off == MIB + 4096 && e.len == 2 * MIB - 4096 && e.chunk == CFS_CHUNK_NONE);
	CHECK(cfs_index_extent(idx, 9, 0, &e) == 0);
	CHECK(cfs_index_extent(idx, 6, 0, &e) == -EINVAL);
	CHECK(cfs_index_extent(idx, 2, 0, &e) == -EINVAL);
	CHECK(cfs_index_extent(idx, 11, 0, &e) == -ENOENT);
	/* By a decoded inode: the same answers; one that is not this index's
	 * (extents past its table) is refused, not read. */
	CHECK(cfs_index_inode(idx, 3, &in) == 0);
	CHECK(cfs_index_file_extent(idx, &in, 1, &e) == 1 && e.file_off == 4096 && e.chunk == 1);
	CHECK(cfs_index_file_extent_find(idx, &in, 4096, &i) == 0 && i == 1);
	in.extent_first = UINT32_MAX;
	CHECK(cfs_index_file_extent(idx, &in, 0, &e) == -EINVAL);
	CHECK(cfs_index_file_extent_find(idx, &in, 0, &i) == -EINVAL);

	CHECK(cfs_index_chunk(idx, 0, &c) == 0);
	CHECK(c.raw_size == 4096 && c.stored_size == 100 && c.digest.b[0] == 0x11 &&
	      c.digest.b[31] == 0x11);
	CHECK(cfs_index_chunk(idx, 1, &c) == 0);
	CHECK(c.raw_size == 8000 && c.stored_size == 5000 && c.digest.b[17] == 0x22);
	CHECK(cfs_index_chunk(idx, 2, &c) == -ENOENT);
	CHECK(cfs_index_chunk(idx, CFS_CHUNK_NONE, &c) == -ENOENT);

	cfs_index_free(idx);
	cfs_index_free(NULL);
	free(b);
	tw_free(&t);

	/* The smallest image. */
	root_image(&t);
	b = tw_build(&t, &len);
	if (corpus_dir)
		write_file("root-only", b, len);
	CHECK(open_copy(b, len, &idx) == 0);
	if (!failures) {
		CHECK(cfs_index_inode(idx, 1, &in) == 0 && in.nlink == 2 && in.nentries == 0);
		CHECK(cfs_index_dirent(idx, 1, 0, &de) == 0);
		CHECK(cfs_index_lookup(idx, 1, "a", 1, &ino) == -ENOENT);
		CHECK(cfs_index_chunk(idx, 0, &c) == -ENOENT);
		cfs_index_free(idx);
	}
	free(b);
	tw_free(&t);
}

/* Variants that must open: what the rules allow at their edges. */
static void test_valid_edges(void)
{
	char name[256];

	/* unknown compat feature: ignored */
	BYTES(0, put64(b + H_COMPAT, 1ull << 63));
	/* a header larger than ours */
	CASE(0, t.hdr_size = 264);
	/* the first layout's 208-byte header: no config fields, still read */
	CASE(0, t.hdr_size = 208);
	/* an image config named with its bit and size */
	BYTES(0, b[H_CONFIG] = 1; put64(b + H_CONFIG + 32, 100);
	      put64(b + H_COMPAT, CFS_FEAT_COMPAT_CONFIG));
	/* no xattrs: an empty section, then moved inside another one and to
	 * the very end */
	CASE(0, I(&t, 1)->xattr_count = 0; I(&t, 1)->xattr_first = 0;
	     I(&t, 3)->xattr_count = 0; I(&t, 3)->xattr_first = 3; t.nxa = 0);
	{
		struct tw t;
		size_t len;
		uint8_t *b;

		small_image(&t);
		I(&t, 1)->xattr_count = 0;
		I(&t, 3)->xattr_count = 0;
		t.nxa = 0;
		b = tw_build(&t, &len);
		put64(b + H_SEC(CFS_SEC_XATTRS), t.sec_off[CFS_SEC_INODES] + 64);
		expect_bytes("empty section inside another", b, len, 0, __LINE__);
		put64(b + H_SEC(CFS_SEC_XATTRS), CFS_ALIGN_UP(len, 8) - 8);
		expect_bytes("empty section at the end", b, len, 0, __LINE__);
		free(b);
		tw_free(&t);
	}
	/* names and values at their limits */
	memset(name, 'z', sizeof(name));
	name[255] = 0;
	CASE(0, t.de[6].name_off = tw_str(&t, name, 255); t.de[6].name_len = 255);
	CASE(0, t.xa[2].name_off = tw_str(&t, name, 255); t.xa[2].name_len = 255);
	CASE(0, void *v = calloc(1, CFS_XATTR_VALUE_MAX); t.xa[2].value_off = tw_str(&t, v,
	     CFS_XATTR_VALUE_MAX); t.xa[2].value_len = CFS_XATTR_VALUE_MAX; free(v));
	CASE(0, char *s = malloc(CFS_SYMLINK_MAX); memset(s, 'l', CFS_SYMLINK_MAX);
	     I(&t, 6)->a = tw_str(&t, s, CFS_SYMLINK_MAX); I(&t, 6)->b = CFS_SYMLINK_MAX;
	     I(&t, 6)->size = CFS_SYMLINK_MAX; free(s));
	/* names with any bytes but '/' and NUL, "..." and ".x" */
	CASE(0, t.de[0].name_off = tw_str(&t, "\x01", 1));
	CASE(0, t.de[0].name_off = tw_str(&t, "...", 3); t.de[0].name_len = 3);
	CASE(0, t.de[0].name_off = tw_str(&t, ".a", 2); t.de[0].name_len = 2);
	CASE(0, t.de[6].name_off = tw_str(&t, "\xff\xfe", 2); t.de[6].name_len = 2);
	/* chunk at its maximum; data extent filling a chunk exactly */
	CASE(0, t.chunk[1].raw_size = CFS_CHUNK_MAX_SIZE);
	CASE(0, t.chunk[1].raw_size = 6004);
	/* shared xattr ranges, mode with no permission bits */
	CASE(0, I(&t, 5)->xattr_first = 1; I(&t, 5)->xattr_count = 2);
	CASE(0, I(&t, 8)->mode = S_IFSOCK);
	/* strings shared between names */
	CASE(0, t.de[1].name_off = t.de[0].name_off);
	CASE(0, I(&t, 6)->a = t.de[1].name_off; I(&t, 6)->b = 2; I(&t, 6)->size = 2);
}

static void test_violations(void)
{
	char name[300];

	/* header */
	BYTES(-EUCLEAN, b[0] = 'X');
	BYTES(-EUCLEAN, b[7] = '\n' + 1);
	BYTES(-EPROTONOSUPPORT, put32(b + H_VERSION, 2));
	BYTES(-EPROTONOSUPPORT, put32(b + H_VERSION, 0));
	BYTES(-EPROTONOSUPPORT, put64(b + H_INCOMPAT, 1));
	BYTES(-EPROTONOSUPPORT, put64(b + H_INCOMPAT, 1ull << 63));
	BYTES(-EUCLEAN, put32(b + H_HEADER_SIZE, 207));
	BYTES(-EUCLEAN, put32(b + H_HEADER_SIZE, 0));
	BYTES(-EUCLEAN, put32(b + H_HEADER_SIZE, (uint32_t)len + 8));
	BYTES(-EUCLEAN, put32(b + H_HEADER_SIZE, 264)); /* inodes start inside it */
	BYTES(-EUCLEAN, put64(b + H_INDEX_SIZE, len + 1));
	BYTES(-EUCLEAN, put64(b + H_INDEX_SIZE, len - 1));
	BYTES(-EUCLEAN, b[H_RESERVED] = 1);
	BYTES(-EUCLEAN, b[H_RESERVED + 47] = 0x80);
	/* the image config: digest, bit and size agree or the index is bad */
	BYTES(-EUCLEAN, b[H_CONFIG] = 1);
	BYTES(-EUCLEAN, put64(b + H_COMPAT, CFS_FEAT_COMPAT_CONFIG));
	BYTES(-EUCLEAN, b[H_CONFIG] = 1; put64(b + H_COMPAT, CFS_FEAT_COMPAT_CONFIG));
	BYTES(-EUCLEAN, b[H_CONFIG] = 1; put64(b + H_CONFIG + 32, CFS_CONFIG_MAX_SIZE + 1ull);
	      put64(b + H_COMPAT, CFS_FEAT_COMPAT_CONFIG));
	BYTES(-EUCLEAN, put64(b + H_CONFIG + 32, 5));
	BYTES(-EUCLEAN, b[H_CONFIG + 40] = 1); /* reserved2 */
	/* sections */
	BYTES(-EUCLEAN, put64(b + H_SEC(CFS_SEC_STRINGS), t.sec_off[CFS_SEC_STRINGS] + 1);
	      put64(b + H_SEC(CFS_SEC_STRINGS) + 8, 0));
	BYTES(-EUCLEAN, put64(b + H_SEC(CFS_SEC_STRINGS), t.sec_off[CFS_SEC_STRINGS] + 8));
	BYTES(-EUCLEAN, put64(b + H_SEC(CFS_SEC_STRINGS) + 8, UINT64_MAX));
	BYTES(-EUCLEAN, put64(b + H_SEC(CFS_SEC_STRINGS), UINT64_MAX - 7));
	BYTES(-EUCLEAN, put64(b + H_SEC(CFS_SEC_CHUNKS), 1ull << 62));
	BYTES(-EUCLEAN, put64(b + H_SEC(CFS_SEC_DIRENTS), 0));
	BYTES(-EUCLEAN, put64(b + H_SEC(CFS_SEC_DIRENTS), 200));
	BYTES(-EUCLEAN, put64(b + H_SEC(CFS_SEC_XATTRS) + 8, 47));
	BYTES(-EUCLEAN, put64(b + H_SEC(CFS_SEC_DIRENTS) + 8, 12 * 10 + 6));
	BYTES(-EUCLEAN, put64(b + H_SEC(CFS_SEC_INODES) + 8, 64 * 9 + 32);
	      put32(b + H_INODE_COUNT, 9));
	/* overlapping sections (both orders of the table) */
	BYTES(-EUCLEAN, put64(b + H_SEC(CFS_SEC_XATTRS), t.sec_off[CFS_SEC_CHUNKS]));
	BYTES(-EUCLEAN, put64(b + H_SEC(CFS_SEC_CHUNKS), t.sec_off[CFS_SEC_XATTRS]));
	BYTES(-EUCLEAN, put64(b + H_SEC(CFS_SEC_DIRENTS), t.sec_off[CFS_SEC_DIRENTS] - 8));
	BYTES(-EUCLEAN, put64(b + H_SEC(CFS_SEC_STRINGS), t.sec_off[CFS_SEC_INODES]));
	/* inode count */
	BYTES(-EUCLEAN, put32(b + H_INODE_COUNT, 0));
	BYTES(-EUCLEAN, put32(b + H_INODE_COUNT, 9));
	BYTES(-EUCLEAN, put32(b + H_INODE_COUNT, 11));
	BYTES(-EUCLEAN, put32(b + H_INODE_COUNT, UINT32_MAX));
	BYTES(-EUCLEAN, put64(b + H_SEC(CFS_SEC_INODES) + 8, 0); put32(b + H_INODE_COUNT, 0));
	BYTES(-EUCLEAN, put64(b + H_SEC(CFS_SEC_INODES) + 8, 64 * 9); put32(b + H_INODE_COUNT, 9));

	/* inodes: fields */
	CASE(-EUCLEAN, I(&t, 5)->mode = 0644);
	CASE(-EUCLEAN, I(&t, 5)->mode = 0170644);
	CASE(-EUCLEAN, I(&t, 5)->mode = 0030644);
	CASE(-EUCLEAN, I(&t, 5)->mode |= 0200000);
	CASE(-EUCLEAN, I(&t, 5)->mode |= 0x80000000u);
	CASE(-EUCLEAN, I(&t, 5)->reserved = 1);
	CASE(-EUCLEAN, I(&t, 3)->mtime_nsec = 1000000000);
	CASE(-EUCLEAN, I(&t, 3)->parent = 1);
	CASE(-EUCLEAN, I(&t, 5)->parent = 1);
	/* root */
	CASE(-EUCLEAN, I(&t, 1)->parent = 2);
	CASE(-EUCLEAN, I(&t, 1)->parent = 0);
	CASE(-EUCLEAN, tw_free(&t); root_image(&t); I(&t, 1)->mode = S_IFREG | 0644; I(&t, 1)->parent = 0);
	/* directories */
	CASE(-EUCLEAN, I(&t, 10)->size = 1);
	CASE(-EUCLEAN, I(&t, 10)->parent = 0);
	CASE(-EUCLEAN, I(&t, 10)->parent = 11);
	CASE(-EUCLEAN, I(&t, 10)->parent = 1);
	CASE(-EUCLEAN, I(&t, 10)->parent = 3);
	CASE(-EUCLEAN, I(&t, 10)->a = 11);
	CASE(-EUCLEAN, I(&t, 2)->b = 4);
	CASE(-EUCLEAN, I(&t, 2)->a = UINT64_MAX);
	CASE(-EUCLEAN, I(&t, 2)->a = 5);               /* overlaps the root's */
	CASE(-EUCLEAN, I(&t, 2)->b = 2);               /* leaves a dirent out */
	CASE(-EUCLEAN, I(&t, 1)->nlink = 2);
	CASE(-EUCLEAN, I(&t, 2)->nlink = 2);
	CASE(-EUCLEAN, I(&t, 10)->nlink = 3);
	CASE(-EUCLEAN, I(&t, 10)->nlink = 0);
	/* regular files */
	CASE(-EUCLEAN, I(&t, 3)->nlink = 1);
	CASE(-EUCLEAN, I(&t, 3)->nlink = 3);
	CASE(-EUCLEAN, I(&t, 5)->nlink = 0);
	CASE(-EUCLEAN, I(&t, 3)->size = 10001);
	CASE(-EUCLEAN, I(&t, 3)->size = 9999);
	CASE(-EUCLEAN, I(&t, 9)->size = 1);
	CASE(-EUCLEAN, I(&t, 3)->b = 3);               /* extent of the next file */
	CASE(-EUCLEAN, I(&t, 3)->b = 1; I(&t, 3)->size = 4096); /* extent left over */
	CASE(-EUCLEAN, I(&t, 7)->a = 1; I(&t, 7)->b = 4);
	CASE(-EUCLEAN, I(&t, 3)->a = UINT64_MAX - 1);
	CASE(-EUCLEAN, I(&t, 3)->a = 6);
	CASE(-EUCLEAN, t.ext[0].file_off = 1);
	CASE(-EUCLEAN, t.ext[1].file_off = 4097);      /* gap */
	CASE(-EUCLEAN, t.ext[1].file_off = 4095);      /* overlap */
	CASE(-EUCLEAN, t.ext[0].len = 0; t.ext[1].file_off = 0; I(&t, 3)->size = 5904);
	CASE(-EUCLEAN, t.ext[4].len = UINT64_MAX; I(&t, 7)->size = MIB + 4095);
	CASE(-EUCLEAN, t.ext[4].len = UINT64_MAX - MIB - 4096 + 1; I(&t, 7)->size = 0);
	CASE(-EUCLEAN, t.ext[0].chunk = 2);
	CASE(-EUCLEAN, t.ext[0].chunk = CFS_CHUNK_NONE - 1);
	CASE(-EUCLEAN, t.ext[0].chunk_off = 1);        /* past the end of chunk 0 */
	CASE(-EUCLEAN, t.ext[1].chunk_off = 2097);
	CASE(-EUCLEAN, t.ext[1].chunk_off = UINT32_MAX);
	CASE(-EUCLEAN, t.ext[0].chunk = 1; t.ext[0].len = 8001; t.ext[1].file_off = 8001;
	     t.ext[1].len = 1999; t.ext[1].chunk_off = 0);
	CASE(-EUCLEAN, t.ext[2].chunk_off = 1);        /* hole with an offset */
	CASE(-EUCLEAN, t.chunk[1].raw_size = 6003);
	/* chunks */
	CASE(-EUCLEAN, tw_chunk(&t, 0x33, 0, 0));
	CASE(-EUCLEAN, tw_chunk(&t, 0x33, CFS_CHUNK_MAX_SIZE + 1, 1));
	/* symlinks */
	CASE(-EUCLEAN, I(&t, 6)->b = 0; I(&t, 6)->size = 0);
	CASE(-EUCLEAN, I(&t, 6)->size = 5);
	CASE(-EUCLEAN, I(&t, 6)->b = 5);
	CASE(-EUCLEAN, I(&t, 6)->a = t.nstr - 5);
	CASE(-EUCLEAN, I(&t, 6)->a = UINT64_MAX - 2);
	CASE(-EUCLEAN, I(&t, 6)->a = tw_str(&t, "ab\0cd", 5); I(&t, 6)->b = 5; I(&t, 6)->size = 5);
	CASE(-EUCLEAN, char *s = calloc(1, CFS_SYMLINK_MAX + 1); memset(s, 'l', CFS_SYMLINK_MAX + 1);
	     I(&t, 6)->a = tw_str(&t, s, CFS_SYMLINK_MAX + 1); I(&t, 6)->b = CFS_SYMLINK_MAX + 1;
	     I(&t, 6)->size = CFS_SYMLINK_MAX + 1; free(s));
	/* devices, fifos, sockets */
	CASE(-EUCLEAN, I(&t, 4)->b = 1);
	CASE(-EUCLEAN, I(&t, 4)->size = 1);
	CASE(-EUCLEAN, I(&t, 5)->a = 1);
	CASE(-EUCLEAN, I(&t, 8)->b = 1);
	CASE(-EUCLEAN, I(&t, 8)->size = 1);
	/* xattrs */
	CASE(-EUCLEAN, I(&t, 3)->xattr_count = 3);
	CASE(-EUCLEAN, I(&t, 3)->xattr_first = 3);
	CASE(-EUCLEAN, I(&t, 3)->xattr_first = UINT32_MAX);
	CASE(-EUCLEAN, I(&t, 1)->xattr_count = 2);     /* "user.root" > "security..." */
	CASE(-EUCLEAN, t.xa[2].name_off = t.xa[1].name_off; t.xa[2].name_len = t.xa[1].name_len);
	CASE(-EUCLEAN, t.xa[2].name_len = 0);
	CASE(-EUCLEAN, t.xa[2].name_off = tw_str(&t, "user\0b", 6); t.xa[2].name_len = 6);
	memset(name, 'x', sizeof(name));
	CASE(-EUCLEAN, t.xa[2].name_off = tw_str(&t, name, 256); t.xa[2].name_len = 256);
	CASE(-EUCLEAN, t.xa[2].name_off = (uint32_t)t.nstr);
	CASE(-EUCLEAN, t.xa[2].name_off = UINT32_MAX);
	CASE(-EUCLEAN, t.xa[2].value_off = (uint32_t)t.nstr);
	CASE(-EUCLEAN, t.xa[2].value_off = UINT32_MAX);
	CASE(-EUCLEAN, t.xa[2].value_len = UINT32_MAX);
	CASE(-EUCLEAN, void *v = calloc(1, CFS_XATTR_VALUE_MAX + 1);
	     t.xa[2].value_off = tw_str(&t, v, CFS_XATTR_VALUE_MAX + 1);
	     t.xa[2].value_len = CFS_XATTR_VALUE_MAX + 1; free(v));
	CASE(-EUCLEAN, t.xa[0].reserved = 1);
	/* an unused record is checked too */
	CASE(-EUCLEAN, tw_xattr(&t, "user.z", "", 0); t.xa[3].name_len = 0);
	/* dirents */
	CASE(-EUCLEAN, t.de[0].reserved = 1);
	CASE(-EUCLEAN, t.de[0].name_len = 0);
	CASE(-EUCLEAN, t.de[0].name_off = tw_str(&t, ".", 1));
	CASE(-EUCLEAN, t.de[0].name_off = tw_str(&t, "..", 2); t.de[0].name_len = 2);
	CASE(-EUCLEAN, t.de[0].name_off = tw_str(&t, "/", 1));
	CASE(-EUCLEAN, t.de[1].name_off = tw_str(&t, "a/", 2));
	CASE(-EUCLEAN, t.de[1].name_off = tw_str(&t, "a\0", 2));
	CASE(-EUCLEAN, t.de[6].name_off = tw_str(&t, name, 256); t.de[6].name_len = 256);
	CASE(-EUCLEAN, t.de[6].name_off = (uint32_t)t.nstr - 1; t.de[6].name_len = 2);
	CASE(-EUCLEAN, t.de[6].name_off = UINT32_MAX);
	CASE(-EUCLEAN, t.de[1].name_off = t.de[0].name_off; t.de[1].name_len = 1);  /* duplicate */
	CASE(-EUCLEAN, t.de[5].name_off = t.de[6].name_off; t.de[5].name_len = 6;
	     t.de[6].name_off = tw_str(&t, "sock", 4); t.de[6].name_len = 4);     /* unsorted */
	CASE(-EUCLEAN, t.de[1].name_off = tw_str(&t, "A", 1); t.de[1].name_len = 1);                     /* unsorted */
	CASE(-EUCLEAN, t.de[0].ino = 0);
	CASE(-EUCLEAN, t.de[0].ino = 11);
	CASE(-EUCLEAN, t.de[0].ino = UINT32_MAX);
	CASE(-EUCLEAN, t.de[2].type = DT_BLK);
	CASE(-EUCLEAN, t.de[2].type = DT_UNKNOWN);
	CASE(-EUCLEAN, t.de[1].type = DT_DIR);
	/* the tree */
	CASE(-EUCLEAN, t.de[0].ino = 1);               /* root named in itself */
	CASE(-EUCLEAN, t.de[9].ino = 1; t.de[9].type = DT_DIR); /* root named in /a */
	CASE(-EUCLEAN, t.de[9].ino = 2; t.de[9].type = DT_DIR); /* /a named in /a */
	CASE(-EUCLEAN, t.de[2].ino = 10; t.de[2].type = DT_DIR; I(&t, 1)->nlink = 4;
	     I(&t, 4)->nlink = 0);                      /* /a/sub also at /dev */
	CASE(-EUCLEAN, t.de[2].ino = 3; t.de[2].type = DT_REG; I(&t, 3)->nlink = 3); /* /dev orphaned */
	CASE(-EUCLEAN, t.de[2].ino = 3; t.de[2].type = DT_REG; I(&t, 3)->nlink = 3;
	     I(&t, 4)->nlink = 0);
	/* /a named twice in the root */
	CASE(-EUCLEAN, t.de[2].ino = 2; t.de[2].type = DT_DIR; I(&t, 1)->nlink = 4);
	/* a cycle off to the side: /a/sub and a new dir 11 name each other,
	 * each in its parent, neither reachable from the root */
	CASE(-EUCLEAN, uint32_t d = tw_inode(&t, S_IFDIR | 0755);
	     static const char *const n1[] = { "x" }; uint32_t i1[] = { d };
	     static const char *const n2[] = { "y" }; uint32_t i2[] = { 10 };
	     t.de[9].ino = 5; t.de[9].type = DT_FIFO; I(&t, 5)->nlink = 2; I(&t, 2)->nlink = 2;
	     tw_dir(&t, 10, n1, i1, 1); tw_dir(&t, d, n2, i2, 1);
	     I(&t, 10)->nlink = 3; I(&t, d)->nlink = 3; t.de[10].type = DT_DIR;
	     t.de[11].type = DT_DIR);
	/* a directory that is its own parent, naming itself */
	CASE(-EUCLEAN, static const char *const n1[] = { "self" }; uint32_t i1[] = { 10 };
	     t.de[9].ino = 5; t.de[9].type = DT_FIFO; I(&t, 5)->nlink = 2; I(&t, 2)->nlink = 2;
	     tw_dir(&t, 10, n1, i1, 1); I(&t, 10)->nlink = 3; t.de[10].type = DT_DIR);
	/* an inode no entry names */
	CASE(-EUCLEAN, tw_inode(&t, S_IFIFO | 0644));
	CASE(-EUCLEAN, tw_inode(&t, S_IFIFO | 0644); I(&t, 11)->nlink = 0);
	CASE(-EUCLEAN, uint32_t d = tw_inode(&t, S_IFDIR | 0755); I(&t, d)->parent = 1;
	     I(&t, d)->nlink = 2; I(&t, 1)->nlink = 4);
	/* a dirent no directory holds */
	CASE(-EUCLEAN, t.de = grow(t.de, &t.cap[1], t.nde, sizeof(*t.de));
	     t.de[t.nde++] = t.de[0]);
}

/* Truncation at every length: with the header's index_size left alone and
 * with it patched to the new length, so that the section checks are
 * reached too. */
static void test_truncation(void)
{
	struct tw t;
	size_t len, bad = 0;
	uint8_t *b;

	small_image(&t);
	b = tw_build(&t, &len);
	for (size_t n = 0; n < len; n++) {
		struct cfs_index *idx;
		uint8_t *c = malloc(n ? n : 1);

		memcpy(c, b, n);
		if (cfs_index_open(c, n, &idx) != -EUCLEAN)
			bad++;
		if (n >= sizeof(struct cfs_disk_header))
			put64(c + H_INDEX_SIZE, n);
		if (cfs_index_open(c, n, &idx) != -EUCLEAN)
			bad++;
		free(c);
	}
	if (bad) {
		fprintf(stderr, "truncation: %zu lengths did not fail with EUCLEAN\n", bad);
		failures++;
	}
	free(b);
	tw_free(&t);
}

/* Inode of a path ("a/b") from the root, or 0. */
static uint64_t walk(const struct cfs_index *idx, const char *path)
{
	uint64_t ino = CFS_ROOT_INO;

	while (*path) {
		size_t n = strcspn(path, "/");

		if (cfs_index_lookup(idx, ino, path, n, &ino))
			return 0;
		path += n;
		path += *path == '/';
	}
	return ino;
}

#define BCHECK(call)                                                         \
	do {                                                                 \
		int r_ = (call);                                             \
		if (r_) {                                                    \
			fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, \
				#call, cfs_strerror(r_));                    \
			failures++;                                          \
			goto out;                                            \
		}                                                            \
	} while (0)

/* Round trip through the real writer: every kind of inode, hard links,
 * xattrs given out of order, holes, and chunks that dedup. */
static void test_builder(void)
{
	struct cfs_builder *b = NULL;
	struct cfs_builder_stats stats;
	struct cfs_index *idx = NULL;
	struct cfs_index_info info;
	struct cfs_inode in, in2;
	struct cfs_extent e;
	struct cfs_chunk c;
	struct cfs_xattr x;
	struct cfs_dirent de;
	const char *target = NULL;
	size_t len, tlen = 0;
	uint64_t ino, ino2;
	uint32_t node, ca, cb, cc, cd, i;
	cfs_digest da, db, dc;
	void *buf = NULL;

	memset(&da, 0xaa, sizeof(da));
	memset(&db, 0xbb, sizeof(db));
	memset(&dc, 0xcc, sizeof(dc));
	BCHECK(cfs_builder_new(1 << 20, &b));
	BCHECK(cfs_builder_set_attr(b, CFS_NODE_ROOT, &(struct cfs_attr){
		.mode = S_IFDIR | 0751, .mtime_sec = 100 }));
	BCHECK(cfs_builder_chunk_new(b, &ca));
	BCHECK(cfs_builder_chunk_new(b, &cb));
	BCHECK(cfs_builder_chunk_new(b, &cc));
	BCHECK(cfs_builder_chunk_new(b, &cd));
	BCHECK(cfs_builder_chunk_set(b, ca, &da, 8192, 1000));
	BCHECK(cfs_builder_chunk_set(b, cb, &db, MIB, MIB + 10));
	BCHECK(cfs_builder_chunk_set(b, cc, &dc, 200, 150));
	BCHECK(cfs_builder_chunk_set(b, cd, &da, 8192, 1000)); /* same content as ca */

	/* given in no particular order */
	BCHECK(cfs_builder_add_path(b, "run/sock", &(struct cfs_attr){ .mode = S_IFSOCK | 0777 },
				    &node));
	BCHECK(cfs_builder_add_path(b, "bin/sh", &(struct cfs_attr){
		.mode = S_IFREG | 0755, .uid = 2, .gid = 3, .mtime_sec = -5, .mtime_nsec = 7,
		.size = 3 * MIB }, &node));
	BCHECK(cfs_builder_add_extent(b, node, 0, MIB / 2, cb, 0));
	BCHECK(cfs_builder_add_extent(b, node, MIB / 2, MIB / 2, cb, MIB / 2)); /* merges */
	BCHECK(cfs_builder_add_extent(b, node, 2 * MIB, 100, cc, 50));
	BCHECK(cfs_builder_link_path(b, "bin/bash", "bin/sh"));
	BCHECK(cfs_builder_add_path(b, "etc", &(struct cfs_attr){
		.mode = S_IFDIR | 0700, .uid = 7, .mtime_sec = 200 }, &node));
	BCHECK(cfs_builder_add_path(b, "etc/passwd", &(struct cfs_attr){
		.mode = S_IFREG | 0644, .size = 5000 }, &node));
	BCHECK(cfs_builder_add_extent(b, node, 0, 5000, ca, 0));
	BCHECK(cfs_builder_set_xattr(b, node, "user.b", "2", 1));
	BCHECK(cfs_builder_set_xattr(b, node, "security.selinux", "ctx\0", 4));
	BCHECK(cfs_builder_set_xattr(b, node, "user.a", "old", 3));
	BCHECK(cfs_builder_set_xattr(b, node, "user.a", "1", 1));
	BCHECK(cfs_builder_add_path(b, "etc/group", &(struct cfs_attr){
		.mode = S_IFREG | 0644, .size = 100 }, &node));
	BCHECK(cfs_builder_add_extent(b, node, 0, 100, cd, 8000));
	BCHECK(cfs_builder_add_path(b, "lib", &(struct cfs_attr){ .mode = S_IFLNK | 0777 }, &node));
	BCHECK(cfs_builder_set_symlink(b, node, "usr/lib", 7));
	BCHECK(cfs_builder_add_path(b, "dev/null", &(struct cfs_attr){
		.mode = S_IFCHR | 0666, .rdev = makedev(1, 3) }, &node));
	BCHECK(cfs_builder_add_path(b, "dev/sda", &(struct cfs_attr){
		.mode = S_IFBLK | 0660, .gid = 6, .rdev = makedev(8, 0) }, &node));
	BCHECK(cfs_builder_add_path(b, "run/fifo", &(struct cfs_attr){ .mode = S_IFIFO | 0600 },
				    &node));
	BCHECK(cfs_builder_add_path(b, "empty", &(struct cfs_attr){ .mode = S_IFREG | 0600 },
				    &node));
	BCHECK(cfs_builder_set_xattr(b, CFS_NODE_ROOT, "trusted.x", "", 0));
	BCHECK(cfs_builder_finish(b, &buf, &len, &stats));
	if (corpus_dir)
		write_file("builder", buf, len);
	BCHECK(cfs_index_open(buf, len, &idx));
	buf = NULL;

	cfs_index_info(idx, &info);
	CHECK(info.version == CFS_INDEX_VERSION && info.inode_count == 14);
	CHECK(info.chunk_count == 3 && info.chunk_size == 1 << 20 && info.index_size == len);

	CHECK(cfs_index_inode(idx, CFS_ROOT_INO, &in) == 0);
	CHECK(in.mode == (S_IFDIR | 0751) && in.nlink == 6 && in.mtime_sec == 100);
	CHECK(in.nentries == 6 && in.nxattrs == 1 && in.parent == CFS_ROOT_INO);
	CHECK(cfs_index_getxattr(idx, CFS_ROOT_INO, "trusted.x", &x) == 0 && x.value_len == 0);
	static const char *const top[] = { "bin", "dev", "empty", "etc", "lib", "run" };
	for (i = 0; i < 6; i++) {
		CHECK(cfs_index_dirent(idx, CFS_ROOT_INO, i, &de) == 1);
		CHECK(name_is(de.name, de.name_len, top[i]));
	}
	CHECK(cfs_index_dirent(idx, CFS_ROOT_INO, 6, &de) == 0);

	/* implicit parent */
	ino = walk(idx, "bin");
	CHECK(ino && cfs_index_inode(idx, ino, &in) == 0);
	CHECK(in.mode == (S_IFDIR | 0755) && in.uid == 0 && in.nlink == 2 && in.parent == 1);
	ino = walk(idx, "etc");
	CHECK(ino && cfs_index_inode(idx, ino, &in) == 0);
	CHECK(in.mode == (S_IFDIR | 0700) && in.uid == 7 && in.mtime_sec == 200 && in.nentries == 2);

	/* hard link, holes, merged extents */
	ino = walk(idx, "bin/sh");
	ino2 = walk(idx, "bin/bash");
	CHECK(ino && ino == ino2);
	CHECK(cfs_index_inode(idx, ino, &in) == 0);
	CHECK(in.mode == (S_IFREG | 0755) && in.uid == 2 && in.gid == 3 && in.nlink == 2);
	CHECK(in.mtime_sec == -5 && in.mtime_nsec == 7 && in.size == 3 * MIB);
	CHECK(in.nentries == 4 && in.blocks == 2048 + 8);
	CHECK(cfs_index_extent(idx, ino, 0, &e) == 1);
	CHECK(e.file_off == 0 && e.len == MIB && e.chunk_off == 0);
	CHECK(cfs_index_chunk(idx, e.chunk, &c) == 0 && cfs_digest_eq(&c.digest, &db));
	CHECK(c.raw_size == MIB && c.stored_size == MIB + 10);
	CHECK(cfs_index_extent(idx, ino, 1, &e) == 1);
	CHECK(e.file_off == MIB && e.len == MIB && e.chunk == CFS_CHUNK_NONE);
	CHECK(cfs_index_extent(idx, ino, 2, &e) == 1);
	CHECK(e.file_off == 2 * MIB && e.len == 100 && e.chunk_off == 50);
	CHECK(cfs_index_chunk(idx, e.chunk, &c) == 0 && cfs_digest_eq(&c.digest, &dc));
	CHECK(cfs_index_extent(idx, ino, 3, &e) == 1);
	CHECK(e.file_off == 2 * MIB + 100 && e.len == MIB - 100 && e.chunk == CFS_CHUNK_NONE);
	CHECK(cfs_index_extent(idx, ino, 4, &e) == 0);
	CHECK(cfs_index_extent_find(idx, ino, 2 * MIB + 99, &i) == 0 && i == 2);
	CHECK(cfs_index_extent_find(idx, ino, 2 * MIB + 100, &i) == 0 && i == 3);

	/* xattrs sorted, replaced value; chunks deduplicated */
	ino = walk(idx, "etc/passwd");
	CHECK(ino && cfs_index_inode(idx, ino, &in) == 0);
	CHECK(in.size == 5000 && in.nlink == 1 && in.nxattrs == 3 && in.blocks == 16);
	CHECK(cfs_index_xattr(idx, ino, 0, &x) == 1 && name_is(x.name, x.name_len, "security.selinux"));
	CHECK(x.value_len == 4 && !memcmp(x.value, "ctx\0", 4));
	CHECK(cfs_index_xattr(idx, ino, 1, &x) == 1 && name_is(x.name, x.name_len, "user.a"));
	CHECK(x.value_len == 1 && !memcmp(x.value, "1", 1));
	CHECK(cfs_index_xattr(idx, ino, 2, &x) == 1 && name_is(x.name, x.name_len, "user.b"));
	CHECK(cfs_index_getxattr(idx, ino, "user.b", &x) == 0 && !memcmp(x.value, "2", 1));
	CHECK(cfs_index_getxattr(idx, ino, "user.c", &x) == -ENODATA);
	CHECK(cfs_index_extent(idx, ino, 0, &e) == 1);
	ino2 = walk(idx, "etc/group");
	CHECK(ino2 && cfs_index_extent(idx, ino2, 0, &e) == 1);
	CHECK(e.len == 100 && e.chunk_off == 8000);
	CHECK(cfs_index_chunk(idx, e.chunk, &c) == 0 && cfs_digest_eq(&c.digest, &da));
	CHECK(c.raw_size == 8192);

	ino = walk(idx, "lib");
	CHECK(ino && cfs_index_readlink(idx, ino, &target, &tlen) == 0);
	CHECK(name_is(target, tlen, "usr/lib"));
	CHECK(cfs_index_inode(idx, ino, &in) == 0 && in.size == 7 && S_ISLNK(in.mode));
	ino = walk(idx, "dev/null");
	CHECK(ino && cfs_index_inode(idx, ino, &in) == 0);
	CHECK(in.mode == (S_IFCHR | 0666) && in.rdev == makedev(1, 3));
	ino = walk(idx, "dev/sda");
	CHECK(ino && cfs_index_inode(idx, ino, &in) == 0);
	CHECK(in.mode == (S_IFBLK | 0660) && in.rdev == makedev(8, 0) && in.gid == 6);
	CHECK(cfs_index_inode(idx, walk(idx, "run/fifo"), &in) == 0 && S_ISFIFO(in.mode));
	CHECK(cfs_index_inode(idx, walk(idx, "run/sock"), &in) == 0 && S_ISSOCK(in.mode));
	CHECK(cfs_index_inode(idx, walk(idx, "empty"), &in2) == 0);
	CHECK(S_ISREG(in2.mode) && in2.size == 0 && in2.nentries == 0);
	CHECK(walk(idx, "etc/shadow") == 0);
out:
	cfs_index_free(idx);
	free(buf);
	cfs_builder_free(b);
}

/* 200001 inodes: the root, 1000 directories of 199 files each, one extent
 * and a shared xattr per file. */
static void test_large(void)
{
	enum { DIRS = 1000, FILES = 199 };
	static const char *dnames[DIRS], *fnames[FILES];
	static char dbuf[DIRS][8], fbuf[FILES][8];
	static uint32_t inos[FILES > DIRS ? FILES : DIRS];
	struct cfs_index *idx;
	struct cfs_inode in;
	struct tw t = { 0 };
	uint32_t xa, ino = 1;
	uint64_t t0, t1, found;
	size_t len;
	uint8_t *b;
	int r;

	for (uint32_t i = 0; i < DIRS; i++) {
		snprintf(dbuf[i], sizeof(dbuf[i]), "d%04u", i);
		dnames[i] = dbuf[i];
	}
	for (uint32_t i = 0; i < FILES; i++) {
		snprintf(fbuf[i], sizeof(fbuf[i]), "f%05u", i);
		fnames[i] = fbuf[i];
	}
	t.chunk_size = 1 << 20;
	tw_inode(&t, S_IFDIR | 0755);
	I(&t, 1)->parent = 1;
	for (uint32_t i = 0; i < 1000; i++)
		tw_chunk(&t, (uint8_t)i, 1 << 20, 1 << 19);
	xa = tw_xattr(&t, "security.selinux", "system_u:object_r:usr_t:s0", 26);
	for (uint32_t d = 0; d < DIRS; d++)
		inos[d] = tw_inode(&t, S_IFDIR | 0755);
	tw_dir(&t, 1, dnames, inos, DIRS);
	for (uint32_t d = 0; d < DIRS; d++) {
		uint32_t dir = d + 2;

		for (uint32_t f = 0; f < FILES; f++) {
			ino = tw_inode(&t, S_IFREG | 0644);
			inos[f] = ino;
			I(&t, ino)->size = 1000 + f;
			I(&t, ino)->a = tw_extent(&t, 0, 1000 + f, (d * FILES + f) % 1000, f * 1000);
			I(&t, ino)->b = 1;
			I(&t, ino)->xattr_first = xa;
			I(&t, ino)->xattr_count = 1;
		}
		tw_dir(&t, dir, fnames, inos, FILES);
	}
	tw_fix_links(&t);
	b = tw_build(&t, &len);

	t0 = cfs_now_ns();
	r = cfs_index_open(b, len, &idx);
	t1 = cfs_now_ns();
	CHECK(r == 0);
	if (r) {
		free(b);
		tw_free(&t);
		return;
	}
	printf("open of a %zu-inode index (%zu bytes): %.2f ms\n", t.nino, len, (t1 - t0) / 1e6);
	CHECK(cfs_index_lookup(idx, 1, "d0999", 5, &found) == 0 && found == 1001);
	CHECK(cfs_index_lookup(idx, found, "f00198", 6, &found) == 0 && found == ino);
	CHECK(cfs_index_inode(idx, found, &in) == 0 && in.size == 1198 && in.blocks == 8);
	cfs_index_free(idx);
	tw_free(&t);
}

/* The prefetch digest of the header and the list object's parser. */
static void test_prefetch(void)
{
	const size_t at = offsetof(struct cfs_disk_header, prefetch);
	struct cfs_index *idx = NULL;
	struct cfs_index_info info;
	cfs_digest d, got;
	uint32_t *chunks;
	size_t n, llen;
	void *list;
	uint8_t *lb;

	memset(d.b, 0xab, sizeof(d.b));
	CHECK(at == 160);
	BYTES(0, CHECK(cfs_index_set_prefetch(b, len, &d) == 0));
	BYTES(0, CHECK(cfs_index_set_prefetch(b, len, &d) == 0);
	      CHECK(cfs_index_set_prefetch(b, len, NULL) == 0));
	BYTES(-EUCLEAN, b[at + 31] = 1);
	BYTES(-EUCLEAN, put64(b + 16, CFS_FEAT_COMPAT_PREFETCH));
	BYTES(-EUCLEAN, b[at + 32] = 1); /* what is left of the reserved bytes */
	BYTES(0, put64(b + 16, 1ull << 63)); /* unknown compat bits are ignored */
	BYTES(-EUCLEAN, CHECK(cfs_index_set_prefetch(b, len, &d) == 0); b[at] = 0; b[at + 1] = 0;
	      memset(b + at, 0, 32));
	{
		struct tw t;
		uint8_t *b;

		small_image(&t);
		b = tw_build(&t, &llen);
		CHECK(cfs_index_set_prefetch(b, llen - 1, &d) == -EUCLEAN);
		CHECK(cfs_index_set_prefetch(b, llen, &d) == 0);
		CHECK(open_copy(b, llen, &idx) == 0);
		free(b);
		tw_free(&t);
	}
	if (!idx)
		return;
	CHECK(cfs_index_prefetch(idx, &got) == 0 && cfs_digest_eq(&got, &d));
	cfs_index_info(idx, &info);
	CHECK(info.chunk_count >= 2);

	/* The list object. */
	CHECK(cfs_prefetch_encode((const uint32_t[]){ 1, 0 }, 2, &list, &llen) == 0);
	CHECK(llen == 16 + 8);
	CHECK(cfs_prefetch_parse(idx, list, llen, &chunks, &n) == 0);
	CHECK(n == 2 && chunks[0] == 1 && chunks[1] == 0);
	free(chunks);
	lb = list;
	CHECK(cfs_prefetch_parse(idx, lb, llen - 1, &chunks, &n) == -EUCLEAN);
	CHECK(cfs_prefetch_parse(idx, lb, 15, &chunks, &n) == -EUCLEAN);
	put32(lb + 20, 1); /* 1, 1: a duplicate */
	CHECK(cfs_prefetch_parse(idx, lb, llen, &chunks, &n) == -EUCLEAN && !chunks && !n);
	put32(lb + 16, (uint32_t)info.chunk_count); /* out of range */
	CHECK(cfs_prefetch_parse(idx, lb, llen, &chunks, &n) == -EUCLEAN);
	put32(lb + 16, 0);
	put32(lb + 12, 3); /* count beyond the bytes */
	CHECK(cfs_prefetch_parse(idx, lb, llen, &chunks, &n) == -EUCLEAN);
	put32(lb + 12, (uint32_t)info.chunk_count + 1); /* more entries than chunks */
	CHECK(cfs_prefetch_parse(idx, lb, llen, &chunks, &n) == -EUCLEAN);
	put32(lb + 12, 2);
	put32(lb + 8, 2);
	CHECK(cfs_prefetch_parse(idx, lb, llen, &chunks, &n) == -EPROTONOSUPPORT);
	put32(lb + 8, 1);
	lb[7] = 'x';
	CHECK(cfs_prefetch_parse(idx, lb, llen, &chunks, &n) == -EUCLEAN);
	free(list);
	CHECK(cfs_prefetch_encode(NULL, 0, &list, &llen) == 0 && llen == 16);
	CHECK(cfs_prefetch_parse(idx, list, llen, &chunks, &n) == 0 && n == 0 && !chunks);
	free(list);
	cfs_index_free(idx);
}

/* A valid hints section over small_image: inode 3 leads to 5 and 7,
 * inode 6 to 9.  Words: header, triggers, list starts, entries. */
static const uint32_t good_hints[] = { CFS_HINTS_VERSION, 2, 2, 3, 3, 0, 6, 1, 0, 2, 3, 5, 7, 9 };
#define HW CFS_ARRAY_SIZE(good_hints)

/* Opens small_image with hints words w[n] (bytes edited by edit when not
 * NULL): the open's result, and the triggers it kept in *triggers. */
static int open_hints(const uint32_t *w, size_t n, void (*edit)(uint8_t *b, size_t len),
		      uint32_t *triggers, struct cfs_index **out)
{
	struct cfs_index_info info;
	struct cfs_index *idx;
	struct tw t;
	size_t len;
	uint8_t *b;
	int r;

	small_image(&t);
	t.hints = w;
	t.nhints = n;
	b = tw_build(&t, &len);
	tw_free(&t);
	if (edit)
		edit(b, len);
	if (corpus_dir) {
		char name[64];

		snprintf(name, sizeof(name), "hints-%03d", case_no++);
		write_file(name, b, len);
	}
	r = open_copy(b, len, &idx);
	free(b);
	*triggers = 0;
	if (r == 0) {
		cfs_index_info(idx, &info);
		*triggers = info.hint_triggers;
		if (out)
			*out = idx;
		else
			cfs_index_free(idx);
	}
	return r;
}

static void bit_clear(uint8_t *b, size_t len) { (void)len; put64(b + H_COMPAT, 0); }
static void header_256(uint8_t *b, size_t len) { (void)len; put32(b + H_HEADER_SIZE, 256); }
static void onto_strings(uint8_t *b, size_t len)
{
	(void)len;
	memcpy(b + H_HINTS, b + H_SEC(CFS_SEC_STRINGS), 8); /* the strings' offset */
}
static void past_end(uint8_t *b, size_t len) { put64(b + H_HINTS + 8, len); }
static void unaligned(uint8_t *b, size_t len)
{
	(void)len;
	put64(b + H_HINTS, le64toh(*(uint64_t *)(b + H_HINTS)) + 4);
	put64(b + H_HINTS + 8, HW * 4 - 4);
}

/* The hints section: read when valid, dropped (never refused) when not, and
 * kept through an edit of the header. */
static void test_hints(void)
{
	struct {
		size_t word;
		uint32_t value;
	} bad[] = {
		{ 0, 2 },           /* version */
		{ 1, 3 },           /* more triggers than the bytes hold */
		{ 4, 0 },           /* trigger inode 0 */
		{ 6, 11 },          /* beyond the 10 inodes */
		{ 6, 3 },           /* triggers not increasing */
		{ 7, 2 },           /* list out of range */
		{ 8, 1 },           /* the first list does not start at 0 */
		{ 9, 0 },           /* an empty list */
		{ 10, 4 },          /* the last does not end at the entries */
		{ 11, 8 },          /* entries not increasing */
		{ 13, 0 },          /* entry inode 0 */
		{ 13, 11 },         /* entry past the inodes */
	};
	struct cfs_index *idx = NULL;
	uint32_t w[HW], first, trig;
	cfs_digest d;

	CHECK(open_hints(good_hints, HW, NULL, &trig, &idx) == 0 && trig == 2);
	if (idx) {
		CHECK(cfs_index_hints(idx, 3, &first) == 2);
		CHECK(cfs_index_hint(idx, first) == 5 && cfs_index_hint(idx, first + 1) == 7);
		CHECK(cfs_index_hints(idx, 6, &first) == 1 && cfs_index_hint(idx, first) == 9);
		CHECK(cfs_index_hints(idx, 1, &first) == 0);
		CHECK(cfs_index_hints(idx, 4, &first) == 0);
		CHECK(cfs_index_hints(idx, 11, &first) == 0);
		CHECK(cfs_index_hint(idx, 3) == 0);
		cfs_index_free(idx);
	}
	for (size_t i = 0; i < CFS_ARRAY_SIZE(bad); i++) {
		memcpy(w, good_hints, sizeof(w));
		w[bad[i].word] = bad[i].value;
		CHECK(open_hints(w, HW, NULL, &trig, NULL) == 0);
		if (trig)
			fprintf(stderr, "hints word %zu = %u kept\n", bad[i].word, bad[i].value);
		CHECK(trig == 0);
	}
	CHECK(open_hints(good_hints, HW - 1, NULL, &trig, NULL) == 0 && trig == 0);
	CHECK(open_hints(good_hints, HW, bit_clear, &trig, NULL) == 0 && trig == 0);
	CHECK(open_hints(good_hints, HW, header_256, &trig, NULL) == 0 && trig == 0);
	CHECK(open_hints(good_hints, HW, onto_strings, &trig, NULL) == 0 && trig == 0);
	CHECK(open_hints(good_hints, HW, past_end, &trig, NULL) == 0 && trig == 0);
	CHECK(open_hints(good_hints, HW, unaligned, &trig, NULL) == 0 && trig == 0);

	/* An image config added to an image with hints keeps them; one added
	 * to a 256-byte header writes none of the bytes after it. */
	{
		struct tw t;
		size_t len;
		uint8_t *b;

		memset(d.b, 0xcd, sizeof(d.b));
		small_image(&t);
		t.hints = good_hints;
		t.nhints = HW;
		b = tw_build(&t, &len);
		CHECK(cfs_index_set_config(b, len, &d, 100) == 0);
		CHECK(open_copy(b, len, &idx) == 0);
		if (idx) {
			CHECK(cfs_index_hints(idx, 3, &first) == 2);
			cfs_index_free(idx);
		}
		free(b);
		t.nhints = 0;
		b = tw_build(&t, &len);
		CHECK(cfs_index_set_config(b, len, &d, 100) == 0);
		CHECK(le64toh(*(uint64_t *)(b + H_SEC(CFS_SEC_INODES))) == 256);
		CHECK(open_copy(b, len, &idx) == 0);
		cfs_index_free(idx);
		free(b);
		tw_free(&t);
	}
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "--write-corpus")) {
		corpus_dir = argv[2];
		if (mkdir(corpus_dir, 0755) && errno != EEXIST) {
			perror(corpus_dir);
			return 1;
		}
	} else if (argc != 1) {
		fprintf(stderr, "usage: %s [--write-corpus DIR]\n", argv[0]);
		return 1;
	}
	if (getenv("CFS_DEBUG"))
		cfs_log_setup("test-format", CFS_LOG_DEBUG, NULL);

	test_accessors();
	test_valid_edges();
	test_violations();
	test_builder();
	test_prefetch();
	test_hints();
	if (corpus_dir)
		return failures ? 1 : 0;
	test_truncation();
	test_large();
	return cfs_test_done("test-format");
}
