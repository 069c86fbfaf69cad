/* SPDX-License-Identifier: MIT */
/*
 * test-builder: builds trees through every builder.h call, then checks the
 * index twice: with an independent strict decoder written from format.h
 * (layout, padding, pre-order numbering, chunk order, nlink) and with
 * cfs_index_open() and every index.h accessor.  Also determinism across
 * insertion orders, error returns, concurrent chunk_set and a 100k tree.
 */
#include <endian.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "builder.h"
#include "format.h"
#include "index.h"
#include "util.h"
#include "test.h"

/* ---- independent decoder -------------------------------------------- */

struct dec {
	const uint8_t *buf; /* only valid during dec_open */
	size_t len;
	struct cfs_disk_header h;
	struct cfs_disk_inode *ino; size_t nino;
	struct cfs_disk_dirent *de; size_t nde;
	struct cfs_disk_extent *ex; size_t nex;
	struct cfs_disk_chunk *ch; size_t nch;
	struct cfs_disk_xattr *xa; size_t nxa;
	char *str; size_t nstr;
	char why[256];
};

#define DFAIL(...) do { snprintf(d->why, sizeof(d->why), __VA_ARGS__); return -1; } while (0)

static int dname_cmp(const char *a, size_t al, const char *b, size_t bl)
{
	int c = memcmp(a, b, al < bl ? al : bl);
	if (c) return c;
	return al < bl ? -1 : al > bl;
}

static void *dsec(struct dec *d, int s, size_t rec, size_t *n)
{
	uint64_t off = d->h.sec[s].offset, sz = d->h.sec[s].size;
	void *p;
	*n = sz / rec;
	p = malloc(sz ? sz : 1);
	memcpy(p, d->buf + off, sz);
	return p;
}

static void dec_free(struct dec *d)
{
	free(d->ino); free(d->de); free(d->ex); free(d->ch); free(d->xa); free(d->str);
	memset(d, 0, sizeof(*d));
}

/* Reads the fields as stored: valid on little-endian hosts, which is all
 * this test claims to cover. */
static int dec_open(struct dec *d, const void *buf, size_t len)
{
	static const size_t recs[CFS_SEC_COUNT] = { 64, 12, 24, 40, 16, 1 };
	uint64_t prev_end;
	memset(d, 0, sizeof(*d));
	d->buf = buf; d->len = len;
	/* The builder writes the second layout's 256 bytes without hints. */
	if (len < CFS_HEADER_SIZE_CONFIG) DFAIL("short");
	memcpy(&d->h, buf, CFS_HEADER_SIZE_CONFIG);
	if (memcmp(d->h.magic, CFS_INDEX_MAGIC, 8)) DFAIL("magic");
	if (le32toh(d->h.version) != 1 || le32toh(d->h.header_size) != CFS_HEADER_SIZE_CONFIG) DFAIL("version");
	if (d->h.features_compat || d->h.features_incompat) DFAIL("features");
	if (le64toh(d->h.index_size) != len) DFAIL("index_size %llu != %zu", (unsigned long long)d->h.index_size, len);
	if (d->h.created_sec) DFAIL("created_sec");
	for (size_t i = 0; i < sizeof(d->h.reserved); i++) if (d->h.reserved[i]) DFAIL("reserved");
	for (size_t i = 0; i < sizeof(d->h.prefetch); i++) if (d->h.prefetch[i]) DFAIL("prefetch digest set by the builder");
	for (size_t i = 0; i < sizeof(d->h.config); i++) if (d->h.config[i]) DFAIL("config digest set by the builder");
	if (d->h.config_size) DFAIL("config_size");
	for (size_t i = 0; i < sizeof(d->h.reserved2); i++) if (d->h.reserved2[i]) DFAIL("reserved2");
	prev_end = CFS_HEADER_SIZE_CONFIG;
	for (int s = 0; s < CFS_SEC_COUNT; s++) {
		uint64_t off = d->h.sec[s].offset, sz = d->h.sec[s].size;
		if (off % 8) DFAIL("sec %d unaligned", s);
		if (off < prev_end || off - prev_end >= 8) DFAIL("sec %d not packed (off %llu prev_end %llu)", s, (unsigned long long)off, (unsigned long long)prev_end);
		for (uint64_t k = prev_end; k < off; k++) if (d->buf[k]) DFAIL("padding nonzero");
		if (off > len || sz > len - off) DFAIL("sec %d out of bounds", s);
		if (sz % recs[s]) DFAIL("sec %d size", s);
		prev_end = off + sz;
	}
	if (prev_end != len) DFAIL("trailing bytes");
	d->ino = dsec(d, CFS_SEC_INODES, 64, &d->nino);
	d->de = dsec(d, CFS_SEC_DIRENTS, 12, &d->nde);
	d->ex = dsec(d, CFS_SEC_EXTENTS, 24, &d->nex);
	d->ch = dsec(d, CFS_SEC_CHUNKS, 40, &d->nch);
	d->xa = dsec(d, CFS_SEC_XATTRS, 16, &d->nxa);
	d->str = dsec(d, CFS_SEC_STRINGS, 1, &d->nstr);
	if (d->nino != d->h.inode_count || d->nino < 1) DFAIL("inode_count");
	if (d->h.chunk_size == 0 || d->h.chunk_size > CFS_CHUNK_MAX_SIZE) DFAIL("chunk_size");

	/* chunks */
	for (size_t i = 0; i < d->nch; i++) {
		if (d->ch[i].raw_size == 0 || d->ch[i].raw_size > CFS_CHUNK_MAX_SIZE) DFAIL("chunk raw");
		for (size_t j = 0; j < i; j++)
			if (!memcmp(d->ch[i].digest, d->ch[j].digest, 32)) DFAIL("dup chunk digest");
	}
	/* xattrs */
	for (size_t i = 0; i < d->nxa; i++) {
		struct cfs_disk_xattr *x = &d->xa[i];
		if (x->reserved) DFAIL("xattr reserved");
		if (!x->name_len || x->name_len > 255 || x->name_off + (uint64_t)x->name_len > d->nstr) DFAIL("xattr name");
		if (memchr(d->str + x->name_off, 0, x->name_len)) DFAIL("xattr name nul");
		if (x->value_len > CFS_XATTR_VALUE_MAX || x->value_off + (uint64_t)x->value_len > d->nstr) DFAIL("xattr value");
	}
	/* inodes */
	uint32_t *seen_de = calloc(d->nde + 1, 4), *seen_x = calloc(d->nxa + 1, 4), *seen_e = calloc(d->nex + 1, 4);
	uint32_t *refs = calloc(d->nino + 1, 4), *subdirs = calloc(d->nino + 1, 4), *dparent = calloc(d->nino + 1, 4);
	uint64_t total = 0;
	int rc = 0;
#define DF(...) do { snprintf(d->why, sizeof(d->why), __VA_ARGS__); rc = -1; goto out; } while (0)
	for (size_t i = 0; i < d->nino; i++) {
		struct cfs_disk_inode *n = &d->ino[i];
		uint32_t ino = (uint32_t)i + 1;
		if (n->reserved) DF("inode reserved");
		if (n->mode & ~(uint32_t)(S_IFMT | 07777)) DF("mode bits");
		if (n->mtime_nsec >= 1000000000u) DF("nsec");
		if ((uint64_t)n->xattr_first + n->xattr_count > d->nxa) DF("xattr range");
		for (uint32_t k = 0; k < n->xattr_count; k++) {
			struct cfs_disk_xattr *x = &d->xa[n->xattr_first + k];
			if (seen_x[n->xattr_first + k]++) DF("xattr shared");
			if (k && dname_cmp(d->str + x[-1].name_off, x[-1].name_len, d->str + x->name_off, x->name_len) >= 0) DF("xattrs unsorted");
		}
		switch (n->mode & S_IFMT) {
		case S_IFDIR:
			if (n->size) DF("dir size");
			if (n->a + n->b > d->nde) DF("dirent range");
			for (uint32_t k = 0; k < n->b; k++) {
				struct cfs_disk_dirent *e = &d->de[n->a + k];
				if (seen_de[n->a + k]++) DF("dirent shared");
				if (e->reserved) DF("dirent reserved");
				if (!e->name_len || e->name_len > 255 || e->name_off + (uint64_t)e->name_len > d->nstr) DF("dirent name range");
				const char *nm = d->str + e->name_off;
				if (memchr(nm, '/', e->name_len) || memchr(nm, 0, e->name_len)) DF("bad name char");
				if ((e->name_len == 1 && nm[0] == '.') || (e->name_len == 2 && nm[0] == '.' && nm[1] == '.')) DF("dot name");
				if (k && dname_cmp(d->str + e[-1].name_off, e[-1].name_len, nm, e->name_len) >= 0) DF("dirents unsorted in ino %u", ino);
				if (e->ino < 1 || e->ino > d->nino) DF("dirent ino");
				if (e->ino == 1) DF("link to root");
				struct cfs_disk_inode *c = &d->ino[e->ino - 1];
				if (e->type != ((c->mode & S_IFMT) >> 12)) DF("dirent type");
				refs[e->ino]++;
				if (S_ISDIR(c->mode)) { subdirs[ino]++; dparent[e->ino] = ino; }
			}
			break;
		case S_IFREG: {
			uint64_t pos = 0;
			total += n->size;
			if (n->a + n->b > d->nex) DF("extent range");
			for (uint32_t k = 0; k < n->b; k++) {
				struct cfs_disk_extent *x = &d->ex[n->a + k];
				if (seen_e[n->a + k]++) DF("extent shared");
				if (x->file_off != pos || !x->len) DF("extent gap ino %u", ino);
				if (k && x->chunk == CFS_CHUNK_NONE && x[-1].chunk == CFS_CHUNK_NONE) DF("adjacent holes");
				if (x->chunk != CFS_CHUNK_NONE) {
					if (x->chunk >= d->nch) DF("chunk ref");
					if ((uint64_t)x->chunk_off + x->len > d->ch[x->chunk].raw_size) DF("extent outside chunk");
				} else if (x->chunk_off) DF("hole chunk_off");
				pos += x->len;
			}
			if (pos != n->size) DF("extents cover %llu of %llu (ino %u)", (unsigned long long)pos, (unsigned long long)n->size, ino);
			if (n->parent) DF("non-dir parent");
			break; }
		case S_IFLNK:
			if (!n->b || n->b > CFS_SYMLINK_MAX || n->a + n->b > d->nstr || n->size != n->b) DF("symlink");
			if (memchr(d->str + n->a, 0, n->b)) DF("symlink nul");
			if (n->parent) DF("non-dir parent");
			break;
		case S_IFCHR: case S_IFBLK:
			if (n->b || n->size || n->parent) DF("dev");
			break;
		case S_IFIFO: case S_IFSOCK:
			if (n->a || n->b || n->size || n->parent) DF("fifo");
			break;
		default: DF("type");
		}
	}
	if (total != d->h.total_file_bytes) DF("total_file_bytes");
	for (size_t i = 0; i < d->nde; i++) if (!seen_de[i]) DF("orphan dirent");
	for (size_t i = 0; i < d->nex; i++) if (!seen_e[i]) DF("orphan extent");
	for (size_t i = 0; i < d->nxa; i++) if (!seen_x[i]) DF("orphan xattr");
	if (!S_ISDIR(d->ino[0].mode) || d->ino[0].parent != 1) DF("root");
	for (size_t i = 0; i < d->nino; i++) {
		struct cfs_disk_inode *n = &d->ino[i];
		uint32_t ino = (uint32_t)i + 1;
		if (S_ISDIR(n->mode)) {
			if (ino != 1 && refs[ino] != 1) DF("dir refs %u", refs[ino]);
			if (ino != 1 && n->parent != dparent[ino]) DF("dir parent");
			if (n->nlink != 2 + subdirs[ino]) DF("dir nlink");
		} else {
			if (!refs[ino]) DF("unreferenced inode %u", ino);
			if (n->nlink != refs[ino]) DF("nlink ino %u: %u vs %u", ino, n->nlink, refs[ino]);
		}
	}
	/* Pre-order numbering and chunk first-reference order. */
	{
		uint32_t next = 2, nextc = 0;
		uint32_t *stk = malloc(sizeof(uint32_t) * 2 * (d->nino + 1)), sp = 0;
		uint8_t *vis = calloc(d->nino + 1, 1);
		vis[1] = 1;
		stk[0] = 1; stk[1] = 0; sp = 1;
		while (sp) {
			uint32_t dir = stk[2 * (sp - 1)], pos = stk[2 * (sp - 1) + 1];
			struct cfs_disk_inode *n = &d->ino[dir - 1];
			if (pos == n->b) { sp--; continue; }
			stk[2 * (sp - 1) + 1]++;
			uint32_t c = d->de[n->a + pos].ino;
			if (vis[c]) continue;
			if (c != next) { free(stk); free(vis); DF("not pre-order: got %u want %u", c, next); }
			vis[c] = 1; next++;
			if (S_ISDIR(d->ino[c - 1].mode)) { stk[2 * sp] = c; stk[2 * sp + 1] = 0; sp++; }
		}
		free(stk); free(vis);
		if (next != d->nino + 1) DF("unreachable inodes");
		/* dirent blocks in inode order */
		uint64_t dp = 0, ep = 0, xp = 0;
		for (size_t i = 0; i < d->nino; i++) {
			struct cfs_disk_inode *n = &d->ino[i];
			if (S_ISDIR(n->mode)) { if (n->a != dp) DF("dirent block order"); dp += n->b; }
			if (S_ISREG(n->mode)) {
				if (n->a != ep) DF("extent block order");
				for (uint32_t k = 0; k < n->b; k++) {
					uint32_t c = d->ex[n->a + k].chunk;
					if (c == CFS_CHUNK_NONE) continue;
					if (c > nextc) DF("chunk numbering not first-reference");
					if (c == nextc) nextc++;
				}
				ep += n->b;
			}
			if (n->xattr_first != xp) DF("xattr block order");
			xp += n->xattr_count;
		}
		if (nextc != d->nch) DF("unreferenced chunks");
	}
out:
	free(seen_de); free(seen_x); free(seen_e); free(refs); free(subdirs); free(dparent);
	return rc;
}

/* ino of a path (no normalisation: components split by '/'), 0 if missing */
static uint32_t dec_lookup(struct dec *d, const char *path)
{
	uint32_t cur = 1;
	while (*path) {
		size_t n = strcspn(path, "/");
		struct cfs_disk_inode *in = &d->ino[cur - 1];
		uint32_t found = 0;
		if (!S_ISDIR(in->mode)) return 0;
		for (uint32_t k = 0; k < in->b; k++) {
			struct cfs_disk_dirent *e = &d->de[in->a + k];
			if (e->name_len == n && !memcmp(d->str + e->name_off, path, n)) { found = e->ino; break; }
		}
		if (!found) return 0;
		cur = found;
		path += n;
		if (*path == '/') path++;
	}
	return cur;
}

/* ---- tests ----------------------------------------------------------- */


static struct cfs_attr A(uint32_t mode) { struct cfs_attr a = { .mode = mode, .uid = 1000, .gid = 100, .mtime_sec = 1700000000, .mtime_nsec = 5 }; return a; }
static struct cfs_attr F(uint64_t size) { struct cfs_attr a = A(S_IFREG | 0644); a.size = size; return a; }

static void dig(cfs_digest *d, int v) { memset(d, 0, sizeof(*d)); d->b[0] = (uint8_t)v; d->b[1] = (uint8_t)(v >> 8); d->b[2] = (uint8_t)(v >> 16); d->b[31] = 0x5a; }

/* Finish, validate with the independent decoder (and the real reader). */
static int finish_check(struct cfs_builder *b, struct dec *d, void **out, size_t *outlen, struct cfs_builder_stats *st)
{
	void *buf; size_t len;
	struct cfs_builder_stats s;
	int r;
	memset(d, 0, sizeof(*d));
	r = cfs_builder_finish(b, &buf, &len, &s);
	if (r) { fprintf(stderr, "finish: %d\n", r); failures++; return r; }
	if (dec_open(d, buf, len)) { fprintf(stderr, "decoder rejects: %s\n", d->why); failures++; }
	{
		void *copy = malloc(len); struct cfs_index *idx;
		memcpy(copy, buf, len);
		r = cfs_index_open(copy, len, &idx);
		if (r) { fprintf(stderr, "cfs_index_open rejects: %d\n", r); failures++; free(copy); }
		else {
			/* compare every accessor against the decoder */
			struct cfs_index_info info; cfs_index_info(idx, &info);
			CHECK_EQ(info.inode_count, d->nino); CHECK_EQ(info.chunk_count, d->nch); CHECK_EQ(info.total_file_bytes, d->h.total_file_bytes); CHECK_EQ(info.index_size, len);
			for (size_t i = 0; i < d->nino; i++) {
				struct cfs_inode in; struct cfs_disk_inode *n = &d->ino[i];
				CHECK_EQ(cfs_index_inode(idx, i + 1, &in), 0);
				CHECK_EQ(in.ino, i + 1); CHECK_EQ(in.mode, n->mode); CHECK_EQ(in.uid, n->uid); CHECK_EQ(in.gid, n->gid); CHECK_EQ(in.nlink, n->nlink);
				CHECK_EQ(in.size, n->size); CHECK_EQ(in.mtime_sec, n->mtime_sec); CHECK_EQ(in.mtime_nsec, n->mtime_nsec); CHECK_EQ(in.parent, n->parent); CHECK_EQ(in.nxattrs, n->xattr_count);
				if (S_ISCHR(n->mode) || S_ISBLK(n->mode)) CHECK_EQ(in.rdev, n->a);
				if (S_ISDIR(n->mode)) {
					CHECK_EQ(in.nentries, n->b);
					for (uint32_t k = 0; k < n->b; k++) {
						struct cfs_dirent de; struct cfs_disk_dirent *e = &d->de[n->a + k]; uint64_t li;
						CHECK_EQ(cfs_index_dirent(idx, i + 1, k, &de), 1);
						CHECK_EQ(de.ino, e->ino); CHECK_EQ(de.name_len, e->name_len); CHECK_EQ(de.type, e->type);
						CHECK(!memcmp(de.name, d->str + e->name_off, e->name_len));
						CHECK_EQ(cfs_index_lookup(idx, i + 1, d->str + e->name_off, e->name_len, &li), 0); CHECK_EQ(li, e->ino);
					}
					{ struct cfs_dirent de; CHECK_EQ(cfs_index_dirent(idx, i + 1, n->b, &de), 0); }
				}
				if (S_ISREG(n->mode)) {
					CHECK_EQ(in.nentries, n->b);
					for (uint32_t k = 0; k < n->b; k++) {
						struct cfs_extent x; struct cfs_disk_extent *e = &d->ex[n->a + k]; uint32_t fi;
						CHECK_EQ(cfs_index_extent(idx, i + 1, k, &x), 1);
						CHECK_EQ(x.file_off, e->file_off); CHECK_EQ(x.len, e->len); CHECK_EQ(x.chunk, e->chunk); CHECK_EQ(x.chunk_off, e->chunk_off);
						CHECK_EQ(cfs_index_extent_find(idx, i + 1, e->file_off + e->len - 1, &fi), 0); CHECK_EQ(fi, k);
					}
				}
				if (S_ISLNK(n->mode)) {
					const char *t; size_t tl;
					CHECK_EQ(cfs_index_readlink(idx, i + 1, &t, &tl), 0); CHECK_EQ(tl, n->b); CHECK(!memcmp(t, d->str + n->a, tl));
				}
				for (uint32_t k = 0; k < n->xattr_count; k++) {
					struct cfs_xattr x; struct cfs_disk_xattr *e = &d->xa[n->xattr_first + k];
					CHECK_EQ(cfs_index_xattr(idx, i + 1, k, &x), 1);
					CHECK_EQ(x.name_len, e->name_len); CHECK_EQ(x.value_len, e->value_len);
					CHECK(!memcmp(x.name, d->str + e->name_off, e->name_len));
					CHECK(!e->value_len || !memcmp(x.value, d->str + e->value_off, e->value_len));
				}
			}
			for (size_t c = 0; c < d->nch; c++) {
				struct cfs_chunk ch; CHECK_EQ(cfs_index_chunk(idx, (uint32_t)c, &ch), 0);
				CHECK(!memcmp(ch.digest.b, d->ch[c].digest, 32)); CHECK_EQ(ch.raw_size, d->ch[c].raw_size); CHECK_EQ(ch.stored_size, d->ch[c].stored_size);
			}
			cfs_index_free(idx);
		}
	}
	if (st) *st = s;
	CHECK_EQ(s.inodes, d->nino); CHECK_EQ(s.unique_chunks, d->nch); CHECK_EQ(s.file_bytes, d->h.total_file_bytes);
	if (out) { *out = buf; *outlen = len; } else free(buf);
	return 0;
}

static struct cfs_disk_inode *INO(struct dec *d, const char *path)
{
	uint32_t i = dec_lookup(d, path);
	if (!i) { fprintf(stderr, "missing path %s\n", path); failures++; static struct cfs_disk_inode z; return &z; }
	return &d->ino[i - 1];
}

static void test_empty(void)
{
	struct cfs_builder *b; struct dec d; struct cfs_builder_stats s;
	CHECK_EQ(cfs_builder_new(0, &b), 0);
	finish_check(b, &d, NULL, NULL, &s);
	CHECK_EQ(d.nino, 1); CHECK_EQ(d.nde, 0); CHECK_EQ(d.ino[0].nlink, 2); CHECK_EQ(d.ino[0].mode, S_IFDIR | 0755); CHECK_EQ(d.ino[0].uid, 0); CHECK_EQ(d.h.chunk_size, 1u << 20);
	CHECK_EQ(s.dirs, 1); CHECK_EQ(s.files, 0);
	/* after finish everything refuses */
	uint32_t n; struct cfs_attr a = F(0);
	CHECK_EQ(cfs_builder_add_path(b, "x", &a, &n), -EINVAL);
	void *buf; size_t len;
	CHECK_EQ(cfs_builder_finish(b, &buf, &len, NULL), -EINVAL);
	dec_free(&d); cfs_builder_free(b);
	cfs_builder_free(NULL);
	CHECK_EQ(cfs_builder_new(CFS_CHUNK_MAX_SIZE + 1, &b), -EINVAL);
}

static void test_types(void)
{
	struct cfs_builder *b; struct dec d; uint32_t n, f, c, l; cfs_digest dg;
	struct cfs_attr a;
	CHECK_EQ(cfs_builder_new(65536, &b), 0);
	a = F(10000); CHECK_EQ(cfs_builder_add(b, CFS_NODE_ROOT, "file", 4, &a, &f), 0);
	CHECK_EQ(cfs_builder_chunk_new(b, &c), 0);
	CHECK_EQ(cfs_builder_add_extent(b, f, 0, 4096, c, 100), 0);
	CHECK_EQ(cfs_builder_add_extent(b, f, 8192, 1808, c, 4196), 0);
	dig(&dg, 1); CHECK_EQ(cfs_builder_chunk_set(b, c, &dg, 8000, 3000), 0);
	a = A(S_IFDIR | 0700); CHECK_EQ(cfs_builder_add(b, CFS_NODE_ROOT, "dir", 3, &a, &n), 0);
	a = A(S_IFLNK | 0777); CHECK_EQ(cfs_builder_add_path(b, "dir/link", &a, &l), 0);
	CHECK_EQ(cfs_builder_set_symlink(b, l, "../file", 7), 0);
	CHECK_EQ(cfs_builder_set_symlink(b, f, "x", 1), -EINVAL);
	CHECK_EQ(cfs_builder_set_symlink(b, l, "", 0), -EINVAL);
	CHECK_EQ(cfs_builder_set_symlink(b, l, "a\0b", 3), -EINVAL);
	a = A(S_IFCHR | 0600); a.rdev = makedev(1, 3); CHECK_EQ(cfs_builder_add_path(b, "dev/null", &a, &n), 0);
	a = A(S_IFBLK | 0600); a.rdev = makedev(8, 1); CHECK_EQ(cfs_builder_add_path(b, "dev/sda1", &a, &n), 0);
	a = A(S_IFIFO | 0644); CHECK_EQ(cfs_builder_add_path(b, "fifo", &a, &n), 0);
	a = A(S_IFSOCK | 0644); CHECK_EQ(cfs_builder_add_path(b, "sock", &a, &n), 0);
	a = F(0); CHECK_EQ(cfs_builder_add_path(b, "empty", &a, &n), 0);
	CHECK_EQ(cfs_builder_set_xattr(b, f, "user.b", "2", 1), 0);
	CHECK_EQ(cfs_builder_set_xattr(b, f, "security.capability", "cap", 3), 0);
	CHECK_EQ(cfs_builder_set_xattr(b, f, "user.a", "old", 3), 0);
	CHECK_EQ(cfs_builder_set_xattr(b, f, "user.a", "newvalue", 8), 0);
	CHECK_EQ(cfs_builder_set_xattr(b, f, "user.empty", NULL, 0), 0);
	CHECK_EQ(cfs_builder_set_xattr(b, n, "user.a", "newvalue", 8), 0);
	CHECK_EQ(cfs_builder_set_xattr(b, CFS_NODE_ROOT, "user.root", "r", 1), 0);
	{
		char big[CFS_XATTR_VALUE_MAX + 1] = { 0 }; char nm[300];
		CHECK_EQ(cfs_builder_set_xattr(b, f, "user.big", big, sizeof(big)), -EINVAL);
		memset(nm, 'x', 256); nm[256] = 0;
		CHECK_EQ(cfs_builder_set_xattr(b, f, nm, "v", 1), -EINVAL);
		CHECK_EQ(cfs_builder_set_xattr(b, f, "", "v", 1), -EINVAL);
	}
	/* bad attrs */
	a = A(0170000); CHECK_EQ(cfs_builder_add_path(b, "bad", &a, &n), -EINVAL);
	a = A(S_IFREG | 010000); CHECK_EQ(cfs_builder_add_path(b, "bad", &a, &n), -EINVAL);
	a = A(S_IFREG); a.mtime_nsec = 1000000000; CHECK_EQ(cfs_builder_add_path(b, "bad", &a, &n), -EINVAL);
	a = A(S_IFDIR | 0755); CHECK_EQ(cfs_builder_set_attr(b, f, &a), -EINVAL);
	CHECK_EQ(cfs_builder_add(b, f, "x", 1, &a, &n), -ENOTDIR);
	CHECK_EQ(cfs_builder_add(b, 9999, "x", 1, &a, &n), -EINVAL);
	/* extent errors */
	CHECK_EQ(cfs_builder_add_extent(b, f, 9000, 10, c, 0), -EINVAL);  /* overlaps 8192+1808 */
	CHECK_EQ(cfs_builder_add_extent(b, f, 100, 10, c, 0), -EINVAL);   /* backwards */
	CHECK_EQ(cfs_builder_add_extent(b, f, 20000, 0, c, 0), -EINVAL);  /* empty */
	CHECK_EQ(cfs_builder_add_extent(b, f, 20000, 1, c + 5, 0), -EINVAL);
	CHECK_EQ(cfs_builder_add_extent(b, l, 0, 1, c, 0), -EINVAL);
	CHECK_EQ(cfs_builder_chunk_set(b, c + 5, &dg, 1, 1), -EINVAL);
	CHECK_EQ(cfs_builder_chunk_set(b, c, &dg, 0, 1), -EINVAL);

	finish_check(b, &d, NULL, NULL, NULL);
	struct cfs_disk_inode *fi = INO(&d, "file");
	CHECK_EQ(fi->size, 10000); CHECK_EQ(fi->b, 3); CHECK_EQ(fi->nlink, 1); CHECK_EQ(fi->uid, 1000); CHECK_EQ(fi->gid, 100); CHECK_EQ(fi->mtime_sec, 1700000000); CHECK_EQ(fi->mtime_nsec, 5);
	CHECK_EQ(d.ex[fi->a].len, 4096); CHECK_EQ(d.ex[fi->a].chunk_off, 100); CHECK_EQ(d.ex[fi->a].chunk, 0);
	CHECK_EQ(d.ex[fi->a + 1].chunk, CFS_CHUNK_NONE); CHECK_EQ(d.ex[fi->a + 1].len, 4096);
	CHECK_EQ(d.ex[fi->a + 2].file_off, 8192); CHECK_EQ(d.ex[fi->a + 2].len, 1808);
	CHECK_EQ(fi->xattr_count, 4);
	{
		struct cfs_disk_xattr *x = &d.xa[fi->xattr_first];
		CHECK(x[0].name_len == 19 && !memcmp(d.str + x[0].name_off, "security.capability", 19));
		CHECK(x[1].name_len == 6 && !memcmp(d.str + x[1].name_off, "user.a", 6));
		CHECK(x[1].value_len == 8 && !memcmp(d.str + x[1].value_off, "newvalue", 8));
		CHECK(x[3].name_len == 10 && x[3].value_len == 0);
	}
	struct cfs_disk_inode *li = INO(&d, "dir/link");
	CHECK_EQ(li->mode, S_IFLNK | 0777); CHECK_EQ(li->size, 7); CHECK(!memcmp(d.str + li->a, "../file", 7));
	CHECK_EQ(INO(&d, "dir")->mode, S_IFDIR | 0700); CHECK_EQ(INO(&d, "dir")->nlink, 2);
	CHECK_EQ(INO(&d, "dev")->mode, S_IFDIR | 0755); CHECK_EQ(INO(&d, "dev")->uid, 0); CHECK_EQ(INO(&d, "dev")->mtime_sec, 0);
	CHECK_EQ(INO(&d, "dev/null")->a, makedev(1, 3)); CHECK_EQ(INO(&d, "dev/sda1")->a, makedev(8, 1));
	CHECK_EQ(INO(&d, "fifo")->mode, S_IFIFO | 0644); CHECK_EQ(INO(&d, "sock")->mode, S_IFSOCK | 0644);
	CHECK_EQ(INO(&d, "empty")->b, 0);
	CHECK_EQ(d.ino[0].nlink, 4); CHECK_EQ(d.ino[0].xattr_count, 1);
	CHECK_EQ(d.h.total_file_bytes, 10000);
	CHECK_EQ(d.nch, 1); CHECK_EQ(d.ch[0].raw_size, 8000); CHECK_EQ(d.ch[0].stored_size, 3000);
	dec_free(&d); cfs_builder_free(b);
}

static void test_paths(void)
{
	struct cfs_builder *b; struct dec d; uint32_t n, m; struct cfs_attr a;
	char name[300];
	CHECK_EQ(cfs_builder_new(0, &b), 0);
	a = F(0);
	CHECK_EQ(cfs_builder_add_path(b, "./a//b/", &a, &n), 0);
	CHECK_EQ(cfs_builder_find_path(b, "/a/b", &m), 0); CHECK_EQ(m, n);
	CHECK_EQ(cfs_builder_find_path(b, "a/./b", &m), 0); CHECK_EQ(m, n);
	CHECK_EQ(cfs_builder_add_path(b, "", &a, &n), -EINVAL);
	CHECK_EQ(cfs_builder_add_path(b, "a/../b", &a, &n), -EINVAL);
	CHECK_EQ(cfs_builder_add_path(b, "..", &a, &n), -EINVAL);
	CHECK_EQ(cfs_builder_add_path(b, "x/y/..", &a, &n), -EINVAL);
	CHECK_EQ(cfs_builder_find_path(b, "x", &m), -ENOENT); /* nothing made by the failed call */
	CHECK_EQ(cfs_builder_add_path(b, "a/b/c", &a, &n), -ENOTDIR);
	CHECK_EQ(cfs_builder_find_path(b, "a/b/c", &m), -ENOTDIR);
	CHECK_EQ(cfs_builder_find_path(b, "a/zz", &m), -ENOENT);
	CHECK_EQ(cfs_builder_find_path(b, "", &m), -EINVAL);
	CHECK_EQ(cfs_builder_find_path(b, ".", &m), 0); CHECK_EQ(m, 0);
	CHECK_EQ(cfs_builder_find_path(b, "/", &m), 0); CHECK_EQ(m, 0);
	CHECK_EQ(cfs_builder_add_path(b, ".", &a, &n), -EINVAL); /* root must stay a dir */
	a = A(S_IFDIR | 0711); a.uid = 5;
	CHECK_EQ(cfs_builder_add_path(b, "./", &a, &n), 0); CHECK_EQ(n, 0);
	a = A(S_IFDIR | 0700); CHECK_EQ(cfs_builder_add_path(b, "/", &a, &n), 0); CHECK_EQ(n, 0);
	/* names */
	a = F(0);
	CHECK_EQ(cfs_builder_add(b, 0, "", 0, &a, &n), -EINVAL);
	CHECK_EQ(cfs_builder_add(b, 0, ".", 1, &a, &n), -EINVAL);
	CHECK_EQ(cfs_builder_add(b, 0, "..", 2, &a, &n), -EINVAL);
	CHECK_EQ(cfs_builder_add(b, 0, "a/b", 3, &a, &n), -EINVAL);
	CHECK_EQ(cfs_builder_add(b, 0, "a\0b", 3, &a, &n), -EINVAL);
	CHECK_EQ(cfs_builder_add(b, 0, "...", 3, &a, &n), 0);
	CHECK_EQ(cfs_builder_add(b, 0, ".x", 2, &a, &n), 0);
	memset(name, 'n', 256);
	CHECK_EQ(cfs_builder_add(b, 0, name, 256, &a, &n), -EINVAL);
	CHECK_EQ(cfs_builder_add(b, 0, name, 255, &a, &n), 0);
	name[256] = 0; CHECK_EQ(cfs_builder_add_path(b, name, &a, &n), -EINVAL);
	name[255] = 0; CHECK_EQ(cfs_builder_add_path(b, name, &a, &m), 0); /* same name: replaces */
	/* byte order: unsigned, shorter first */
	CHECK_EQ(cfs_builder_add(b, 0, "\xff", 1, &a, &n), 0);
	CHECK_EQ(cfs_builder_add(b, 0, "ab", 2, &a, &n), 0);
	CHECK_EQ(cfs_builder_add(b, 0, "a\x01", 2, &a, &n), 0);
	CHECK_EQ(cfs_builder_add(b, 0, "B", 1, &a, &n), 0);
	/* 40 deep */
	char deep[40 * 3 + 10] = ""; 
	for (int i = 0; i < 40; i++) { char c[4]; snprintf(c, sizeof(c), "%c%c/", 'a' + i % 26, 'A' + i / 26); strcat(deep, c); }
	strcat(deep, "leaf");
	CHECK_EQ(cfs_builder_add_path(b, deep, &a, &n), 0);
	finish_check(b, &d, NULL, NULL, NULL);
	CHECK_EQ(d.ino[0].mode, S_IFDIR | 0700); CHECK_EQ(d.ino[0].uid, 1000);
	CHECK_EQ(INO(&d, name)->mode, S_IFREG | 0644);
	CHECK_EQ(INO(&d, deep)->mode, S_IFREG | 0644);
	{
		/* root entries in order */
		const char *want[] = { "...", ".x", "B", "a", "a\x01", "aA", "ab", name, "\xff" };
		struct cfs_disk_inode *r = &d.ino[0];
		CHECK_EQ(r->b, CFS_ARRAY_SIZE(want));
		for (uint32_t k = 0; k < r->b && k < CFS_ARRAY_SIZE(want); k++) {
			struct cfs_disk_dirent *e = &d.de[r->a + k];
			if (e->name_len != strlen(want[k]) || memcmp(d.str + e->name_off, want[k], e->name_len)) { fprintf(stderr, "root entry %u wrong\n", k); failures++; }
		}
	}
	dec_free(&d); cfs_builder_free(b);
}

/* Tar-like: out of order, implicit parents, duplicates, dir over dir. */
static void test_tar(void)
{
	struct cfs_builder *b; struct dec d; uint32_t n, old; struct cfs_attr a;
	CHECK_EQ(cfs_builder_new(0, &b), 0);
	a = F(5); CHECK_EQ(cfs_builder_add_path(b, "usr/lib/x/a.py", &a, &n), 0);
	a = F(6); CHECK_EQ(cfs_builder_add_path(b, "usr/lib/x/b.py", &a, &n), 0);
	a = A(S_IFDIR | 0750); a.mtime_sec = 42;
	CHECK_EQ(cfs_builder_add_path(b, "usr/lib/", &a, &n), 0); /* dir over implicit dir: keeps children */
	CHECK_EQ(cfs_builder_set_xattr(b, n, "user.gone", "1", 1), 0);
	a = A(S_IFDIR | 0751); CHECK_EQ(cfs_builder_add_path(b, "usr/lib", &a, &n), 0); /* again: xattrs reset */
	a = F(7); CHECK_EQ(cfs_builder_add_path(b, "usr/lib/x/a.py", &a, &n), 0); /* dup replaces */
	/* file over dir drops subtree */
	a = F(1); CHECK_EQ(cfs_builder_add_path(b, "opt/sub/deep/f", &a, &n), 0);
	a = F(3); CHECK_EQ(cfs_builder_add_path(b, "opt/sub", &a, &n), 0);
	/* dir over file */
	a = F(2); CHECK_EQ(cfs_builder_add_path(b, "var", &a, &old), 0);
	a = A(S_IFDIR | 0755); CHECK_EQ(cfs_builder_add_path(b, "var", &a, &n), 0); CHECK(n != old);
	a = F(9); CHECK_EQ(cfs_builder_add_path(b, "var/log", &a, &n), 0);
	finish_check(b, &d, NULL, NULL, NULL);
	CHECK_EQ(INO(&d, "usr/lib")->mode, S_IFDIR | 0751); CHECK_EQ(INO(&d, "usr/lib")->xattr_count, 0);
	CHECK_EQ(INO(&d, "usr/lib/x/a.py")->size, 7); CHECK_EQ(INO(&d, "usr/lib/x/b.py")->size, 6);
	CHECK_EQ(INO(&d, "usr")->mode, S_IFDIR | 0755);
	CHECK_EQ(INO(&d, "opt/sub")->size, 3); CHECK_EQ(INO(&d, "opt")->nlink, 2);
	CHECK_EQ(INO(&d, "var/log")->size, 9);
	CHECK_EQ(d.nino, 10); /* root usr lib x a b opt sub var log */
	CHECK_EQ(d.h.total_file_bytes, 7 + 6 + 3 + 9);
	dec_free(&d); cfs_builder_free(b);
}

/* OCI layers: whiteouts and opaque directories hide what lower layers
 * gave, never what their own layer gave, wherever they come in it. */
static void test_layers(void)
{
	struct cfs_builder *b; struct dec d; uint32_t n, keep; struct cfs_attr a;
	CHECK_EQ(cfs_builder_new(0, &b), 0);
	cfs_builder_layer_begin(b);
	a = F(1); CHECK_EQ(cfs_builder_add_path(b, "etc/gone", &a, &n), 0);
	a = F(2); CHECK_EQ(cfs_builder_add_path(b, "etc/kept", &a, &keep), 0);
	a = F(3); CHECK_EQ(cfs_builder_add_path(b, "opq/lower", &a, &n), 0);
	a = F(4); CHECK_EQ(cfs_builder_add_path(b, "opq/sub/lower2", &a, &n), 0);
	a = F(5); CHECK_EQ(cfs_builder_add_path(b, "again", &a, &n), 0);
	a = F(6); CHECK_EQ(cfs_builder_add_path(b, "dir/x", &a, &n), 0);
	a = F(14); CHECK_EQ(cfs_builder_add_path(b, "swap/x", &a, &n), 0);
	a = A(S_IFDIR | 0755); CHECK_EQ(cfs_builder_add_path(b, "e", &a, &n), 0);
	a = F(15); CHECK_EQ(cfs_builder_add_path(b, "e/x", &a, &n), 0);
	a = A(S_IFLNK | 0777); CHECK_EQ(cfs_builder_add_path(b, "lnk", &a, &n), 0);
	CHECK_EQ(cfs_builder_set_symlink(b, n, "e", 1), 0);
	cfs_builder_layer_begin(b);
	CHECK_EQ(cfs_builder_whiteout(b, "etc", "gone", 4), 0);
	CHECK_EQ(cfs_builder_whiteout(b, "etc", "never-there", 11), 0);
	CHECK_EQ(cfs_builder_whiteout(b, "nodir/deeper", "x", 1), 0); /* made, like an extraction */
	CHECK_EQ(cfs_builder_whiteout(b, "etc", "..", 2), -EINVAL);
	/* Under a non-directory: nothing to hide, nothing made (as umoci). */
	CHECK_EQ(cfs_builder_whiteout(b, "etc/kept", "x", 1), 0);
	CHECK_EQ(cfs_builder_whiteout(b, "etc/kept/deeper", "x", 1), 0);
	CHECK_EQ(cfs_builder_opaque(b, "etc/kept"), 0);
	a = F(16); CHECK_EQ(cfs_builder_add_path(b, "swap", &a, &n), 0);        /* a file over swap/ */
	CHECK_EQ(cfs_builder_whiteout(b, "swap", "x", 1), 0);                  /* umoci writes it next */
	CHECK_EQ(cfs_builder_opaque(b, "swap"), 0);
	/* Through a symlink: refused (umoci follows it, podman fails). */
	CHECK_EQ(cfs_builder_whiteout(b, "lnk", "x", 1), -ENOTDIR);
	CHECK_EQ(cfs_builder_opaque(b, "lnk"), -ENOTDIR);
	a = F(7); CHECK_EQ(cfs_builder_add_path(b, "opq/new", &a, &n), 0);      /* before the marker */
	a = F(8); CHECK_EQ(cfs_builder_add_path(b, "opq/sub/new2", &a, &n), 0); /* sub: this layer's too */
	CHECK_EQ(cfs_builder_opaque(b, "opq"), 0);
	a = F(9); CHECK_EQ(cfs_builder_add_path(b, "opq/after", &a, &n), 0);    /* after it */
	a = F(10); CHECK_EQ(cfs_builder_add_path(b, "again", &a, &n), 0);       /* replaced, then */
	CHECK_EQ(cfs_builder_whiteout(b, "", "again", 5), 0);                   /* its whiteout: this layer's, kept */
	a = A(S_IFDIR | 0700); CHECK_EQ(cfs_builder_add_path(b, "etc/kept2", &a, &n), 0);
	CHECK_EQ(cfs_builder_link_path(b, "hard", "etc/kept"), 0);             /* into a lower layer */
	a = F(11); CHECK_EQ(cfs_builder_add_path(b, "dir", &a, &n), 0);         /* a file over a directory */
	cfs_builder_layer_begin(b);
	CHECK_EQ(cfs_builder_whiteout(b, "etc", "kept", 4), 0);                 /* the other name stays */
	CHECK_EQ(cfs_builder_find_path(b, "etc/kept", &n), -ENOENT);
	a = F(12); CHECK_EQ(cfs_builder_add_path(b, "etc/gone", &a, &n), 0);    /* back in a later layer */
	CHECK_EQ(cfs_builder_whiteout(b, "", "dir", 3), 0);
	a = A(S_IFDIR | 0711); CHECK_EQ(cfs_builder_add_path(b, "dir", &a, &n), 0); /* and a directory again */
	a = F(13); CHECK_EQ(cfs_builder_add_path(b, "dir/y", &a, &n), 0);
	finish_check(b, &d, NULL, NULL, NULL);
	CHECK_EQ(INO(&d, "etc/gone")->size, 12);
	CHECK_EQ(dec_lookup(&d, "etc/kept"), 0); CHECK_EQ(INO(&d, "hard")->size, 2);
	CHECK_EQ(INO(&d, "hard")->nlink, 1);
	CHECK_EQ(dec_lookup(&d, "opq/lower"), 0); CHECK_EQ(dec_lookup(&d, "opq/sub/lower2"), 0);
	CHECK_EQ(INO(&d, "opq/new")->size, 7); CHECK_EQ(INO(&d, "opq/sub/new2")->size, 8);
	CHECK_EQ(INO(&d, "opq/after")->size, 9); CHECK_EQ(INO(&d, "again")->size, 10);
	CHECK(dec_lookup(&d, "nodir/deeper") != 0);
	CHECK_EQ(INO(&d, "etc/kept2")->mode, S_IFDIR | 0700);
	CHECK_EQ(INO(&d, "swap")->size, 16); CHECK_EQ(INO(&d, "e/x")->size, 15);
	CHECK_EQ(INO(&d, "dir")->mode, S_IFDIR | 0711); CHECK_EQ(dec_lookup(&d, "dir/x"), 0);
	CHECK_EQ(INO(&d, "dir/y")->size, 13);
	CHECK_EQ(INO(&d, "etc")->nlink, 3); /* etc, ., kept2 */
	dec_free(&d); cfs_builder_free(b);
}

/* ---- layers in overlay form, stacked ---- */

/* One step of a layer, as the tar reader gives it: 'f' a file of size
 * (data in one chunk of digest v when v), 'd' a directory of mode, 'l' a
 * symlink, 'w' a whiteout of name under path, 'o' an opaque path, 'h' a
 * hard link at path to name, 'x' an xattr name on path. */
struct lop { int layer; char kind; const char *path, *name; uint32_t mode; uint64_t size; int v; };

static const struct lop lops[] = {
	{ 1, 'f', "etc/gone", 0, 0, 1, 0 }, { 1, 'f', "etc/kept", 0, 0, 2, 3 },
	{ 1, 'f', "opq/lower", 0, 0, 3, 0 }, { 1, 'f', "opq/sub/lower2", 0, 0, 4, 0 },
	{ 1, 'f', "again", 0, 0, 5, 0 }, { 1, 'f', "dir/x", 0, 0, 6, 4 },
	{ 1, 'f', "swap/x", 0, 0, 14, 0 }, { 1, 'd', "e", 0, S_IFDIR | 0750, 0, 0 },
	{ 1, 'x', "e", "user.e", 0, 0, 0 }, { 1, 'f', "e/x", 0, 0, 15, 5 },
	{ 1, 'l', "lnk", "e", 0, 0, 0 }, { 1, 'h', "e/x2", "e/x", 0, 0, 0 },
	{ 2, 'w', "etc", "gone", 0, 0, 0 }, { 2, 'w', "etc", "never-there", 0, 0, 0 },
	{ 2, 'w', "nodir/deeper", "x", 0, 0, 0 }, { 2, 'w', "etc/kept", "x", 0, 0, 0 },
	{ 2, 'o', "etc/kept", 0, 0, 0, 0 }, { 2, 'f', "swap", 0, 0, 16, 0 },
	{ 2, 'w', "swap", "x", 0, 0, 0 }, { 2, 'o', "swap", 0, 0, 0, 0 },
	{ 2, 'f', "opq/new", 0, 0, 7, 6 }, { 2, 'f', "opq/sub/new2", 0, 0, 8, 0 },
	{ 2, 'o', "opq", 0, 0, 0, 0 }, { 2, 'f', "opq/after", 0, 0, 9, 0 },
	{ 2, 'f', "again", 0, 0, 10, 0 }, { 2, 'w', "", "again", 0, 0, 0 },
	{ 2, 'd', "etc/kept2", 0, S_IFDIR | 0700, 0, 0 }, { 2, 'h', "hard", "e/x", 0, 0, 0 },
	{ 2, 'f', "dir", 0, 0, 11, 0 }, { 2, 'd', "e", 0, S_IFDIR | 0755, 0, 0 },
	{ 3, 'w', "etc", "kept", 0, 0, 0 }, { 3, 'f', "etc/gone", 0, 0, 12, 7 },
	{ 3, 'w', "", "dir", 0, 0, 0 }, { 3, 'd', "dir", 0, S_IFDIR | 0711, 0, 0 },
	{ 3, 'f', "dir/y", 0, 0, 13, 0 }, { 3, 'o', "e", 0, 0, 0, 0 },
};

/* Applies op to b; *pending gets a hard link whose target b lacks (a
 * lower layer's file, in overlay form). */
static void lop_do(struct cfs_builder *b, const struct lop *o, const struct lop **pending)
{
	struct cfs_attr a; uint32_t n, c; cfs_digest dg; int r;
	switch (o->kind) {
	case 'f':
		a = F(o->size); CHECK_EQ(cfs_builder_add_path(b, o->path, &a, &n), 0);
		if (o->v) {
			CHECK_EQ(cfs_builder_chunk_new(b, &c), 0);
			CHECK_EQ(cfs_builder_add_extent(b, n, 0, o->size, c, 0), 0);
			dig(&dg, o->v); CHECK_EQ(cfs_builder_chunk_set(b, c, &dg, (uint32_t)o->size, 9), 0);
		}
		break;
	case 'd': a = A(o->mode); CHECK_EQ(cfs_builder_add_path(b, o->path, &a, &n), 0); break;
	case 'l': a = A(S_IFLNK | 0777); CHECK_EQ(cfs_builder_add_path(b, o->path, &a, &n), 0);
		CHECK_EQ(cfs_builder_set_symlink(b, n, o->name, strlen(o->name)), 0); break;
	case 'w': CHECK_EQ(cfs_builder_whiteout(b, o->path, o->name, strlen(o->name)), 0); break;
	case 'o': CHECK_EQ(cfs_builder_opaque(b, o->path), 0); break;
	case 'x': CHECK_EQ(cfs_builder_find_path(b, o->path, &n), 0);
		CHECK_EQ(cfs_builder_set_xattr(b, n, o->name, "v", 1), 0); break;
	case 'h':
		r = cfs_builder_link_path(b, o->path, o->name);
		if (r == -ENOENT && pending) *pending = o;
		else CHECK_EQ(r, 0);
		break;
	}
}

/* The same layers read one at a time into overlay builders and stacked
 * give the very index the layers applied in place give; the overlay
 * form holds whiteouts and opaque marks as an overlay driver's diff. */
static void test_overlay_stack(void)
{
	struct cfs_builder *one, *stack, *l = NULL; struct dec d; uint32_t n, t = 0;
	const struct lop *pend = NULL;
	void *a, *b; size_t alen, blen;
	const struct cfs_disk_inode *in;
	char where[256];

	CHECK_EQ(cfs_builder_new(0, &one), 0);
	CHECK_EQ(cfs_builder_new(0, &stack), 0);
	for (size_t i = 0; i < sizeof(lops) / sizeof(lops[0]); i++) {
		if (i == 0 || lops[i].layer != lops[i - 1].layer) cfs_builder_layer_begin(one);
		lop_do(one, &lops[i], NULL);
	}
	for (size_t i = 0; i <= sizeof(lops) / sizeof(lops[0]); i++) {
		if (l && (i == sizeof(lops) / sizeof(lops[0]) || lops[i].layer != lops[i - 1].layer)) {
			if (pend) {
				CHECK_EQ(cfs_builder_find_path(stack, pend->name, &t), 0);
				CHECK_EQ(cfs_builder_copy_node(l, pend->path, stack, t), 0);
			}
			if (lops[i - 1].layer == 2) {
				/* the overlay form of layer 2, before it is stacked */
				finish_check(l, &d, NULL, NULL, NULL);
				CHECK_EQ(INO(&d, "etc/gone")->mode, S_IFCHR); CHECK_EQ(INO(&d, "etc/gone")->a, 0);
				CHECK_EQ(dec_lookup(&d, "again") != 0, 1); CHECK_EQ(INO(&d, "again")->size, 10);
				CHECK_EQ(INO(&d, "swap")->mode & S_IFMT, S_IFREG); /* its own file: nothing hidden */
				CHECK_EQ(INO(&d, "hard")->size, 15);               /* a copy of the lower file */
				dec_free(&d);
				cfs_builder_free(l); l = NULL;
				/* read again: finish consumes the builder */
				CHECK_EQ(cfs_builder_new(0, &l), 0); cfs_builder_set_overlay(l);
				for (size_t k = 0; k < i; k++) if (lops[k].layer == 2) lop_do(l, &lops[k], &pend);
				CHECK_EQ(cfs_builder_copy_node(l, pend->path, stack, t), 0);
			}
			CHECK_EQ(cfs_builder_apply_layer(stack, l, where, sizeof(where)), 0);
			if (pend) { CHECK_EQ(cfs_builder_link_at(stack, pend->path, t), 0); pend = NULL; }
			cfs_builder_free(l); l = NULL;
		}
		if (i == sizeof(lops) / sizeof(lops[0])) break;
		if (!l) { CHECK_EQ(cfs_builder_new(0, &l), 0); cfs_builder_set_overlay(l); }
		lop_do(l, &lops[i], &pend);
	}
	CHECK_EQ(cfs_builder_finish(one, &a, &alen, NULL), 0);
	CHECK_EQ(cfs_builder_finish(stack, &b, &blen, NULL), 0);
	CHECK(alen == blen && !memcmp(a, b, alen), "the stacked layers give another index (%zu, %zu bytes)", alen, blen);
	free(a); free(b);
	cfs_builder_free(one); cfs_builder_free(stack);

	/* Overlay form alone: an opaque mark outlives the directory given
	 * again; a directory over its own whiteout is opaque. */
	CHECK_EQ(cfs_builder_new(0, &l), 0); cfs_builder_set_overlay(l);
	{ struct cfs_attr at = A(S_IFDIR | 0755);
	  CHECK_EQ(cfs_builder_opaque(l, "o"), 0);
	  CHECK_EQ(cfs_builder_add_path(l, "o", &at, &n), 0);
	  CHECK_EQ(cfs_builder_whiteout(l, "", "w", 1), 0);
	  CHECK_EQ(cfs_builder_add_path(l, "w", &at, &n), 0);
	  CHECK_EQ(cfs_builder_whiteout(l, "lnkless", "x", 1), 0); }
	finish_check(l, &d, NULL, NULL, NULL);
	in = INO(&d, "o"); CHECK(in && in->xattr_count == 1, "o: no opaque mark");
	in = INO(&d, "w"); CHECK(in && in->xattr_count == 1 && S_ISDIR(in->mode), "w: not an opaque directory");
	dec_free(&d); cfs_builder_free(l);

	/* Stacking through a lower symlink is refused, naming the entry. */
	CHECK_EQ(cfs_builder_new(0, &stack), 0);
	CHECK_EQ(cfs_builder_new(0, &l), 0); cfs_builder_set_overlay(l);
	{ struct cfs_attr at = A(S_IFLNK | 0777);
	  CHECK_EQ(cfs_builder_add_path(stack, "s", &at, &n), 0);
	  CHECK_EQ(cfs_builder_set_symlink(stack, n, "t", 1), 0); }
	CHECK_EQ(cfs_builder_whiteout(l, "s", "x", 1), 0);
	CHECK_EQ(cfs_builder_apply_layer(stack, l, where, sizeof(where)), -ENOTDIR);
	CHECK(!strcmp(where, "s/x"), "where: %s", where);
	cfs_builder_free(l); cfs_builder_free(stack);
}

static void test_links(void)
{
	struct cfs_builder *b; struct dec d; uint32_t f, dn, n; struct cfs_attr a; cfs_digest dg; uint32_t c;
	CHECK_EQ(cfs_builder_new(0, &b), 0);
	a = F(100); CHECK_EQ(cfs_builder_add_path(b, "z/orig", &a, &f), 0);
	CHECK_EQ(cfs_builder_chunk_new(b, &c), 0); CHECK_EQ(cfs_builder_add_extent(b, f, 0, 100, c, 0), 0);
	dig(&dg, 7); CHECK_EQ(cfs_builder_chunk_set(b, c, &dg, 100, 50), 0);
	CHECK_EQ(cfs_builder_link_path(b, "a/hard1", "z/orig"), 0);  /* creates a/ ; sorts before z */
	CHECK_EQ(cfs_builder_link_path(b, "m/n/hard2", "/z//orig"), 0);
	CHECK_EQ(cfs_builder_find_path(b, "z", &dn), 0);
	CHECK_EQ(cfs_builder_link(b, dn, "hard3", 5, f), 0);
	CHECK_EQ(cfs_builder_link(b, dn, "hard3", 5, f), 0); /* same again: no-op */
	CHECK_EQ(cfs_builder_link(b, 0, "x", 1, dn), -EPERM);
	CHECK_EQ(cfs_builder_link_path(b, "x", "z"), -EPERM);
	CHECK_EQ(cfs_builder_link_path(b, "x", "nope"), -ENOENT);
	CHECK_EQ(cfs_builder_link_path(b, ".", "z/orig"), -EINVAL);
	a = F(0); CHECK_EQ(cfs_builder_add_path(b, "a/victim", &a, &n), 0);
	CHECK_EQ(cfs_builder_link_path(b, "a/victim", "z/orig"), 0); /* link replaces a file */
	a = F(1); CHECK_EQ(cfs_builder_add_path(b, "z/replaced", &a, &n), 0);
	CHECK_EQ(cfs_builder_link_path(b, "z/replaced2", "z/replaced"), 0);
	a = F(2); CHECK_EQ(cfs_builder_add_path(b, "z/replaced", &a, &n), 0); /* old node lives on via replaced2 */
	struct cfs_builder_stats s;
	finish_check(b, &d, NULL, NULL, &s);
	uint32_t ino = dec_lookup(&d, "a/hard1");
	CHECK_EQ(ino, 3); /* root=1, a=2, a/hard1=3 */
	CHECK_EQ(dec_lookup(&d, "z/orig"), ino); CHECK_EQ(dec_lookup(&d, "m/n/hard2"), ino); CHECK_EQ(dec_lookup(&d, "z/hard3"), ino); CHECK_EQ(dec_lookup(&d, "a/victim"), ino);
	CHECK_EQ(d.ino[ino - 1].nlink, 5);
	CHECK_EQ(INO(&d, "z/replaced")->size, 2); CHECK_EQ(INO(&d, "z/replaced2")->size, 1); CHECK_EQ(INO(&d, "z/replaced2")->nlink, 1);
	CHECK_EQ(d.h.total_file_bytes, 103); CHECK_EQ(s.files, 3);
	dec_free(&d); cfs_builder_free(b);
}

static void test_sparse_and_chunks(void)
{
	struct cfs_builder *b; struct dec d; uint32_t f, g, c[6]; struct cfs_attr a; cfs_digest dg;
	CHECK_EQ(cfs_builder_new(0, &b), 0);
	for (int i = 0; i < 6; i++) CHECK_EQ(cfs_builder_chunk_new(b, &c[i]), 0);
	/* c0,c2 same digest; c5 unused; c1,c3 digest B; c4 C */
	dig(&dg, 10); CHECK_EQ(cfs_builder_chunk_set(b, c[0], &dg, 1000, 500), 0); CHECK_EQ(cfs_builder_chunk_set(b, c[2], &dg, 1000, 600), 0);
	dig(&dg, 11); CHECK_EQ(cfs_builder_chunk_set(b, c[1], &dg, 2000, 1), 0); CHECK_EQ(cfs_builder_chunk_set(b, c[3], &dg, 2000, 1), 0);
	dig(&dg, 12); CHECK_EQ(cfs_builder_chunk_set(b, c[4], &dg, 3000, 1), 0);
	dig(&dg, 13); CHECK_EQ(cfs_builder_chunk_set(b, c[5], &dg, 3000, 1), 0);
	/* "b" is numbered before "z": its first reference (c4) gets chunk 0 */
	a = F(6ull << 30); CHECK_EQ(cfs_builder_add_path(b, "z", &a, &f), 0);
	CHECK_EQ(cfs_builder_add_extent(b, f, 0, 500, c[1], 0), 0);
	CHECK_EQ(cfs_builder_add_extent(b, f, 500, 500, c[3], 500), 0); /* same digest, contiguous -> merged */
	CHECK_EQ(cfs_builder_add_extent(b, f, 1000, 100, c[0], 0), 0);
	CHECK_EQ(cfs_builder_add_extent(b, f, 1100, 100, c[0], 100), 0); /* merged at add */
	CHECK_EQ(cfs_builder_add_extent(b, f, (9ull << 29), 1000, c[2], 0), 0); /* 4.5 GiB; hole > 4 GiB before */
	a = F(10); CHECK_EQ(cfs_builder_add_path(b, "b", &a, &g), 0);
	CHECK_EQ(cfs_builder_add_extent(b, g, 0, 10, c[4], 2990), 0);
	struct cfs_builder_stats s;
	finish_check(b, &d, NULL, NULL, &s);
	CHECK_EQ(s.chunks, 6); CHECK_EQ(s.unique_chunks, 3); CHECK_EQ(d.nch, 3);
	CHECK_EQ(d.ch[0].raw_size, 3000); CHECK_EQ(d.ch[1].raw_size, 2000); CHECK_EQ(d.ch[2].raw_size, 1000); CHECK_EQ(d.ch[2].stored_size, 500);
	struct cfs_disk_inode *z = INO(&d, "z");
	CHECK_EQ(z->b, 5); CHECK_EQ(d.ex[z->a + 4].chunk, CFS_CHUNK_NONE); CHECK_EQ(d.ex[z->a + 4].len, (6ull << 30) - (9ull << 29) - 1000);
	struct cfs_disk_extent *e = &d.ex[z->a];
	CHECK_EQ(e[0].len, 1000); CHECK_EQ(e[0].chunk, 1);
	CHECK_EQ(e[1].file_off, 1000); CHECK_EQ(e[1].len, 200); CHECK_EQ(e[1].chunk, 2);
	CHECK_EQ(e[2].chunk, CFS_CHUNK_NONE); CHECK_EQ(e[2].len, (9ull << 29) - 1200);
	CHECK_EQ(e[3].chunk, 2); CHECK_EQ(e[3].file_off, 9ull << 29); CHECK_EQ(e[3].len, 1000);
	dec_free(&d); cfs_builder_free(b);
}

static void test_errors_at_finish(void)
{
	struct cfs_builder *b; uint32_t f, c; struct cfs_attr a; cfs_digest dg; void *buf; size_t len;
	/* unset chunk */
	CHECK_EQ(cfs_builder_new(0, &b), 0); CHECK_EQ(cfs_builder_chunk_new(b, &c), 0);
	CHECK_EQ(cfs_builder_finish(b, &buf, &len, NULL), -EINVAL);
	dig(&dg, 1); CHECK_EQ(cfs_builder_chunk_set(b, c, &dg, 10, 10), 0);
	CHECK_EQ(cfs_builder_finish(b, &buf, &len, NULL), 0); free(buf); /* retry works; unreferenced chunk dropped */
	cfs_builder_free(b);
	/* extent past size */
	CHECK_EQ(cfs_builder_new(0, &b), 0); CHECK_EQ(cfs_builder_chunk_new(b, &c), 0); CHECK_EQ(cfs_builder_chunk_set(b, c, &dg, 10, 10), 0);
	a = F(5); CHECK_EQ(cfs_builder_add_path(b, "f", &a, &f), 0); CHECK_EQ(cfs_builder_add_extent(b, f, 0, 6, c, 0), 0);
	CHECK_EQ(cfs_builder_finish(b, &buf, &len, NULL), -EINVAL);
	a = F(6); CHECK_EQ(cfs_builder_set_attr(b, f, &a), 0);
	CHECK_EQ(cfs_builder_finish(b, &buf, &len, NULL), 0); free(buf);
	cfs_builder_free(b);
	/* extent past chunk */
	CHECK_EQ(cfs_builder_new(0, &b), 0); CHECK_EQ(cfs_builder_chunk_new(b, &c), 0); CHECK_EQ(cfs_builder_chunk_set(b, c, &dg, 10, 10), 0);
	a = F(20); CHECK_EQ(cfs_builder_add_path(b, "f", &a, &f), 0); CHECK_EQ(cfs_builder_add_extent(b, f, 0, 6, c, 5), 0);
	CHECK_EQ(cfs_builder_finish(b, &buf, &len, NULL), -EINVAL);
	cfs_builder_free(b);
	/* symlink without target */
	CHECK_EQ(cfs_builder_new(0, &b), 0);
	a = A(S_IFLNK | 0777); CHECK_EQ(cfs_builder_add_path(b, "l", &a, &f), 0);
	CHECK_EQ(cfs_builder_finish(b, &buf, &len, NULL), -EINVAL);
	cfs_builder_free(b);
	/* unreachable stuff is fine: unset-target symlink in a dropped subtree */
	CHECK_EQ(cfs_builder_new(0, &b), 0);
	a = A(S_IFLNK | 0777); CHECK_EQ(cfs_builder_add_path(b, "d/l", &a, &f), 0);
	a = F(0); CHECK_EQ(cfs_builder_add_path(b, "d", &a, &f), 0);
	CHECK_EQ(cfs_builder_finish(b, &buf, &len, NULL), 0); free(buf);
	cfs_builder_free(b);
}

/* ---- determinism ---- */
struct op { char path[64]; int kind; uint64_t size; int chunkv; };

static void build_ops(struct cfs_builder *b, struct op *ops, int nops)
{
	/* reserve chunks in op order so numbers differ between orders */
	for (int i = 0; i < nops; i++) {
		struct cfs_attr a; uint32_t n, c; cfs_digest dg;
		switch (ops[i].kind) {
		case 0: a = F(ops[i].size); CHECK_EQ(cfs_builder_add_path(b, ops[i].path, &a, &n), 0);
			if (ops[i].size) {
				CHECK_EQ(cfs_builder_chunk_new(b, &c), 0);
				CHECK_EQ(cfs_builder_add_extent(b, n, 0, ops[i].size, c, 0), 0);
				dig(&dg, ops[i].chunkv * 10 + (int)(ops[i].size / 100)); CHECK_EQ(cfs_builder_chunk_set(b, c, &dg, (uint32_t)ops[i].size, 7), 0);
			}
			CHECK_EQ(cfs_builder_set_xattr(b, n, "user.z", "z", 1), 0);
			CHECK_EQ(cfs_builder_set_xattr(b, n, "user.a", ops[i].path, strlen(ops[i].path)), 0);
			break;
		case 1: a = A(S_IFLNK | 0777); CHECK_EQ(cfs_builder_add_path(b, ops[i].path, &a, &n), 0); CHECK_EQ(cfs_builder_set_symlink(b, n, "__init__.py", 11), 0); break;
		case 2: a = A(S_IFDIR | 0755); a.uid = 0; a.gid = 0; a.mtime_sec = 0; a.mtime_nsec = 0; CHECK_EQ(cfs_builder_add_path(b, ops[i].path, &a, &n), 0); break;
		}
	}
}

static void test_determinism(void)
{
	enum { N = 2000 };
	static struct op ops[N];
	void *b1, *b2; size_t l1, l2; struct dec d;
	struct cfs_builder *b;
	srand(1);
	for (int i = 0; i < N; i++) {
		int k = rand() % 10;
		snprintf(ops[i].path, sizeof(ops[i].path), "d%d/e%d/%s%d", rand() % 7, rand() % 5, k == 9 ? "l" : "__init__.py", i);
		ops[i].kind = k == 9 ? 1 : 0;
		ops[i].size = (uint64_t)(rand() % 3) * 100;
		ops[i].chunkv = rand() % 50;
		if (k == 8) { ops[i].kind = 2; snprintf(ops[i].path, sizeof(ops[i].path), "d%d/dir%d", rand() % 7, i); }
	}
	CHECK_EQ(cfs_builder_new(0, &b), 0); build_ops(b, ops, N); finish_check(b, &d, &b1, &l1, NULL); dec_free(&d); cfs_builder_free(b);
	for (int i = N - 1; i > 0; i--) { int j = rand() % (i + 1); struct op t = ops[i]; ops[i] = ops[j]; ops[j] = t; }
	CHECK_EQ(cfs_builder_new(0, &b), 0); build_ops(b, ops, N); finish_check(b, &d, &b2, &l2, NULL); dec_free(&d); cfs_builder_free(b);
	CHECK_EQ(l1, l2); CHECK(l1 == l2 && !memcmp(b1, b2, l1));
	/* string interning: "__init__.py" target stored once */
	CHECK(memmem(b1, l1, "__init__.py", 11) != NULL);
	{
		const char *p = b1; size_t cnt = 0; const char *q;
		while ((q = memmem(p, l1 - (size_t)(p - (const char *)b1), "user.z", 6))) { cnt++; p = q + 1; }
		CHECK_EQ(cnt, 1);
	}
	free(b1); free(b2);
}

static void test_bigdir(void)
{
	struct cfs_builder *b; struct dec d; uint32_t n, dir; struct cfs_attr a = F(1);
	char nm[32];
	CHECK_EQ(cfs_builder_new(0, &b), 0);
	a = A(S_IFDIR | 0755); CHECK_EQ(cfs_builder_add_path(b, "big", &a, &dir), 0);
	a = F(1);
	for (int i = 2999; i >= 0; i--) { int l = snprintf(nm, sizeof(nm), "f%d", i * 7919 % 3000); CHECK_EQ(cfs_builder_add(b, dir, nm, (size_t)l, &a, &n), 0); }
	finish_check(b, &d, NULL, NULL, NULL);
	CHECK_EQ(INO(&d, "big")->b, 3000); CHECK_EQ(d.h.total_file_bytes, 3000);
	dec_free(&d); cfs_builder_free(b);
}

struct thr { struct cfs_builder *b; uint32_t first, n; };
static void *setter(void *p)
{
	struct thr *t = p; cfs_digest dg;
	for (uint32_t i = 0; i < t->n; i++) { dig(&dg, (int)(t->first + i) % 1000); CHECK_EQ(cfs_builder_chunk_set(t->b, t->first + i, &dg, 4096, 100), 0); }
	return NULL;
}

static void test_perf_threads(void)
{
	enum { N = 100000 };
	struct cfs_builder *b; struct dec d; uint32_t n, c; struct cfs_attr a; char p[64];
	uint64_t t0 = cfs_now_ns(), t1, t2;
	pthread_t th[4]; struct thr ts[4];
	CHECK_EQ(cfs_builder_new(0, &b), 0);
	int started = 0;
	for (int i = 0; i < N; i++) {
		snprintf(p, sizeof(p), "usr/lib/python3/site-packages/pkg%d/mod%d/__init__.py", i % 97, i % 1013);
		a = F(4096);
		CHECK_EQ(cfs_builder_add_path(b, p, &a, &n), 0);
		CHECK_EQ(cfs_builder_chunk_new(b, &c), 0);
		CHECK_EQ(cfs_builder_add_extent(b, n, 0, 4096, c, 0), 0);
		if (i % 25000 == 24999) { ts[started] = (struct thr){ b, (uint32_t)(i - 24999), 25000 }; pthread_create(&th[started], NULL, setter, &ts[started]); started++; }
	}
	for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
	t1 = cfs_now_ns();
	void *buf; size_t len; struct cfs_builder_stats s;
	CHECK_EQ(cfs_builder_finish(b, &buf, &len, &s), 0);
	t2 = cfs_now_ns();
	printf("100k adds: %.1f ms, finish %.1f ms, index %zu bytes, inodes %llu unique chunks %llu\n", (t1 - t0) / 1e6, (t2 - t1) / 1e6, len, (unsigned long long)s.inodes, (unsigned long long)s.unique_chunks);
	if (dec_open(&d, buf, len)) { fprintf(stderr, "perf: decoder: %s\n", d.why); failures++; }
	CHECK_EQ(s.unique_chunks, 1000);
	{ struct cfs_index *idx; uint64_t t3 = cfs_now_ns(); int r = cfs_index_open(buf, len, &idx); CHECK_EQ(r, 0);
	  printf("cfs_index_open of it: %.1f ms\n", (cfs_now_ns() - t3) / 1e6); if (!r) { cfs_index_free(idx); buf = NULL; } }
	dec_free(&d); free(buf); cfs_builder_free(b);
	/* a flat 100k dir */
	CHECK_EQ(cfs_builder_new(0, &b), 0);
	t0 = cfs_now_ns();
	for (int i = 0; i < N; i++) { int l = snprintf(p, sizeof(p), "%x", (unsigned)(i * 2654435761u)); a = F(0); CHECK_EQ(cfs_builder_add(b, 0, p, (size_t)l, &a, &n), 0); }
	CHECK_EQ(cfs_builder_finish(b, &buf, &len, &s), 0);
	t1 = cfs_now_ns();
	printf("flat 100k dir: %.1f ms total\n", (t1 - t0) / 1e6);
	/* Generous for sanitizer builds; quadratic behaviour takes minutes. */
	CHECK(t1 - t0 < 5000000000ull);
	free(buf); cfs_builder_free(b);
}

int main(void)
{
	if (htole32(1) != 1) {
		printf("SKIP: the decoder reads fields as stored (little-endian hosts)\n");
		return 77;
	}
	test_empty();
	test_types();
	test_paths();
	test_tar();
	test_links();
	test_layers();
	test_overlay_stack();
	test_sparse_and_chunks();
	test_errors_at_finish();
	test_determinism();
	test_bigdir();
	test_perf_threads();
	return cfs_test_done("test-builder");
}
