/* SPDX-License-Identifier: MIT */
/*
 * Finishing an image builder (builder.c): its tree serialised into one
 * index of format.h.  Inodes are numbered depth first with entries in name
 * order; dirents, extents (holes made here), chunks (deduplicated by
 * digest, numbered in first-use order) and strings (interned, one copy
 * each) are laid out in that inode order, so the bytes depend on the tree
 * alone, never on node ids or the order chunks were reserved.
 */
#include <endian.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <xxhash.h>

#include "builder_i.h"
#include "format.h"
#include "util.h"

/* Interned strings: one copy of each distinct byte string in the table. */
struct cfs_istr {
	uint64_t hash;
	uint32_t off, len; /* len 0: empty slot */
};

struct cfs_bfinish {
	struct cfs_builder *b;
	uint32_t *order; /* node id by inode number - 1 */
	size_t ninodes, ndirents, nxattrs;

	struct cfs_disk_inode *inodes;
	struct cfs_disk_dirent *dirents;
	struct cfs_disk_xattr *xattrs;
	struct cfs_disk_extent *extents;
	size_t nextents, extents_cap;
	struct cfs_disk_chunk *chunks;
	size_t nchunks;

	uint32_t *chunk_map; /* reserved number -> written number */
	uint32_t *dslots;    /* digest table: written number + 1 */
	size_t dslots_cap;

	char *str;
	size_t str_len, str_cap;
	struct cfs_istr *islots;
	size_t islots_cap, nistr;
};

static int name_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
	int c = memcmp(a, b, CFS_MIN(alen, blen));

	if (c)
		return c;
	return alen < blen ? -1 : alen > blen;
}

static int ent_cmp(const void *x, const void *y, void *ctx)
{
	const struct cfs_builder *b = ctx;
	const struct cfs_bent *e = &b->ents[*(const uint32_t *)x];
	const struct cfs_bent *f = &b->ents[*(const uint32_t *)y];

	return name_cmp(b->arena + e->name_off, e->name_len, b->arena + f->name_off, f->name_len);
}

static int xattr_cmp(const void *x, const void *y, void *ctx)
{
	const struct cfs_builder *b = ctx;
	const struct cfs_bxattr *e = x, *f = y;

	return name_cmp(b->arena + e->name_off, e->name_len, b->arena + f->name_off, f->name_len);
}

/* qsort_r() may not be given NULL, which an empty vector is. */
static void dir_sort(struct cfs_builder *b, struct cfs_bnode *dir)
{
	if (dir->u.dir.n > 1)
		qsort_r(dir->u.dir.v, dir->u.dir.n, sizeof(uint32_t), ent_cmp, b);
}

/* Numbers the reachable nodes depth first, entries in name order, and
 * counts links and table sizes. */
static int fin_number(struct cfs_bfinish *f)
{
	struct cfs_builder *b = f->b;
	struct {
		uint32_t node, pos;
	} *stack;
	size_t depth = 0;

	for (size_t i = 0; i < b->nnodes; i++) {
		b->nodes[i].ino = 0;
		b->nodes[i].nlink = 0;
		b->nodes[i].parent_ino = 0;
	}
	f->order = malloc(b->nnodes * sizeof(*f->order));
	/* Directories form a tree, so the stack never holds more than all of
	 * them. */
	stack = malloc(b->nnodes * sizeof(*stack));
	if (!f->order || !stack) {
		free(stack);
		return -ENOMEM;
	}

	f->order[f->ninodes++] = CFS_NODE_ROOT;
	b->nodes[CFS_NODE_ROOT].ino = CFS_ROOT_INO;
	b->nodes[CFS_NODE_ROOT].parent_ino = CFS_ROOT_INO;
	b->nodes[CFS_NODE_ROOT].nlink = 2;
	f->nxattrs = b->nodes[CFS_NODE_ROOT].nxa;
	stack[depth].node = CFS_NODE_ROOT;
	stack[depth++].pos = 0;
	dir_sort(b, &b->nodes[CFS_NODE_ROOT]);

	while (depth) {
		struct cfs_bnode *dir = &b->nodes[stack[depth - 1].node];
		struct cfs_bnode *child;
		uint32_t cid;

		if (stack[depth - 1].pos == dir->u.dir.n) {
			depth--;
			continue;
		}
		cid = b->ents[dir->u.dir.v[stack[depth - 1].pos++]].child;
		child = &b->nodes[cid];
		f->ndirents++;
		if (S_ISDIR(child->attr.mode))
			dir->nlink++;
		if (child->ino) {
			/* Only a hard link can meet a numbered node. */
			if (S_ISDIR(child->attr.mode)) {
				free(stack);
				return -EUCLEAN;
			}
			child->nlink++;
			continue;
		}
		child->ino = (uint32_t)++f->ninodes;
		f->order[f->ninodes - 1] = cid;
		f->nxattrs += child->nxa;
		if (!S_ISDIR(child->attr.mode)) {
			child->nlink = 1;
			continue;
		}
		child->nlink = 2;
		child->parent_ino = dir->ino;
		dir_sort(b, child);
		stack[depth].node = cid;
		stack[depth++].pos = 0;
	}
	free(stack);
	return 0;
}

/* Offset of s in the string table, adding it on first sight. */
static int fin_intern(struct cfs_bfinish *f, const char *s, size_t len, uint32_t *off)
{
	uint64_t h;
	size_t i;
	int ret;

	if (len == 0) {
		*off = 0;
		return 0;
	}
	if ((f->nistr + 1) * 2 > f->islots_cap) {
		size_t cap = f->islots_cap ? f->islots_cap * 2 : 4096;
		struct cfs_istr *n = calloc(cap, sizeof(*n));

		if (!n)
			return -ENOMEM;
		for (size_t j = 0; j < f->islots_cap; j++) {
			if (!f->islots[j].len)
				continue;
			for (i = f->islots[j].hash & (cap - 1); n[i].len; i = (i + 1) & (cap - 1))
				;
			n[i] = f->islots[j];
		}
		free(f->islots);
		f->islots = n;
		f->islots_cap = cap;
	}

	h = XXH3_64bits(s, len);
	for (i = h & (f->islots_cap - 1); f->islots[i].len; i = (i + 1) & (f->islots_cap - 1)) {
		const struct cfs_istr *e = &f->islots[i];

		if (e->hash == h && e->len == len && !memcmp(f->str + e->off, s, len)) {
			*off = e->off;
			return 0;
		}
	}
	if (f->str_len + len > CFS_INDEX_MAX_SIZE)
		return -EFBIG;
	ret = cfs_builder_grow((void **)&f->str, &f->str_cap, f->str_len + len, 1);
	if (ret)
		return ret;
	memcpy(f->str + f->str_len, s, len);
	f->islots[i].hash = h;
	f->islots[i].off = (uint32_t)f->str_len;
	f->islots[i].len = (uint32_t)len;
	f->nistr++;
	*off = (uint32_t)f->str_len;
	f->str_len += len;
	return 0;
}

/* Written number of a reserved chunk: numbered on first reference, one
 * entry per distinct digest. */
static int fin_chunk(struct cfs_bfinish *f, uint32_t chunk, uint32_t *out)
{
	const struct cfs_bchunk *c = &f->b->chunks[chunk];
	size_t mask = f->dslots_cap - 1, i;
	struct cfs_disk_chunk *dc;
	uint64_t h;

	if (f->chunk_map[chunk] != CFS_CHUNK_NONE) {
		*out = f->chunk_map[chunk];
		return 0;
	}
	/* SHA-256 output is uniform: its first bytes are hash enough. */
	memcpy(&h, c->d.b, sizeof(h));
	for (i = h & mask; f->dslots[i]; i = (i + 1) & mask) {
		dc = &f->chunks[f->dslots[i] - 1];
		if (!memcmp(dc->digest, c->d.b, CFS_DIGEST_LEN)) {
			/* Equal digests mean equal content. */
			if (le32toh(dc->raw_size) != c->raw_size) {
				cfs_debug("builder: chunk %u: digest of another size", chunk);
				return -EINVAL;
			}
			f->chunk_map[chunk] = f->dslots[i] - 1;
			*out = f->chunk_map[chunk];
			return 0;
		}
	}
	dc = &f->chunks[f->nchunks];
	memcpy(dc->digest, c->d.b, CFS_DIGEST_LEN);
	dc->raw_size = htole32(c->raw_size);
	dc->stored_size = htole32(c->stored_size);
	f->dslots[i] = (uint32_t)++f->nchunks;
	f->chunk_map[chunk] = (uint32_t)(f->nchunks - 1);
	*out = f->chunk_map[chunk];
	return 0;
}

static int fin_extent(struct cfs_bfinish *f, uint64_t off, uint64_t len, uint32_t chunk,
		      uint32_t chunk_off)
{
	struct cfs_disk_extent *e;
	int ret;

	ret = cfs_builder_grow((void **)&f->extents, &f->extents_cap, f->nextents + 1, sizeof(*f->extents));
	if (ret)
		return ret;
	e = &f->extents[f->nextents++];
	e->file_off = htole64(off);
	e->len = htole64(len);
	e->chunk = htole32(chunk);
	e->chunk_off = htole32(chunk_off);
	return 0;
}

/* Extents of one file with the holes filled in; returns the count. */
static int fin_file(struct cfs_bfinish *f, const struct cfs_bnode *n, uint32_t *count)
{
	size_t first = f->nextents;
	uint64_t pos = 0, size = n->attr.size;
	/* Last data extent written for this file, for merging. */
	uint64_t m_off = 0, m_len = 0;
	uint32_t m_chunk = CFS_CHUNK_NONE, m_coff = 0;
	int ret;

	for (uint32_t i = 0; i < n->u.reg.n; i++) {
		const struct cfs_bext *e = &n->u.reg.v[i];
		uint32_t c;

		if (e->off + e->len > size) {
			cfs_debug("builder: extent at %llu past the end of a file of %llu bytes",
				  (unsigned long long)e->off, (unsigned long long)size);
			return -EINVAL;
		}
		ret = fin_chunk(f, e->chunk, &c);
		if (ret)
			return ret;
		if ((uint64_t)e->chunk_off + e->len > f->b->chunks[e->chunk].raw_size) {
			cfs_debug("builder: extent past the end of chunk %u", e->chunk);
			return -EINVAL;
		}
		if (e->off > pos) {
			ret = fin_extent(f, pos, e->off - pos, CFS_CHUNK_NONE, 0);
			if (ret)
				return ret;
			m_chunk = CFS_CHUNK_NONE;
		}
		/* Chunks merged by digest can make neighbours contiguous. */
		if (m_chunk == c && m_off + m_len == e->off && m_coff + m_len == e->chunk_off) {
			m_len += e->len;
			f->extents[f->nextents - 1].len = htole64(m_len);
		} else {
			ret = fin_extent(f, e->off, e->len, c, e->chunk_off);
			if (ret)
				return ret;
			m_off = e->off;
			m_len = e->len;
			m_chunk = c;
			m_coff = e->chunk_off;
		}
		pos = e->off + e->len;
	}
	if (pos < size) {
		ret = fin_extent(f, pos, size - pos, CFS_CHUNK_NONE, 0);
		if (ret)
			return ret;
	}
	if (f->nextents - first > UINT32_MAX)
		return -EFBIG;
	*count = (uint32_t)(f->nextents - first);
	return 0;
}

static int fin_inode(struct cfs_bfinish *f, size_t idx, size_t *dpos, size_t *xpos,
		     uint64_t *file_bytes, uint64_t *files, uint64_t *dirs)
{
	struct cfs_builder *b = f->b;
	struct cfs_bnode *n = &b->nodes[f->order[idx]];
	struct cfs_disk_inode *di = &f->inodes[idx];
	uint32_t mode = n->attr.mode, a32, cnt;
	uint64_t size = 0, a = 0;
	uint32_t bcount = 0;
	int ret;

	if (n->nxa > 1)
		qsort_r(n->xa, n->nxa, sizeof(*n->xa), xattr_cmp, b);
	di->xattr_first = htole32((uint32_t)*xpos);
	di->xattr_count = htole32(n->nxa);
	for (uint32_t i = 0; i < n->nxa; i++) {
		struct cfs_disk_xattr *dx = &f->xattrs[(*xpos)++];
		uint32_t no, vo;

		ret = fin_intern(f, b->arena + n->xa[i].name_off, n->xa[i].name_len, &no);
		if (!ret)
			ret = fin_intern(f, b->arena + n->xa[i].val_off, n->xa[i].val_len, &vo);
		if (ret)
			return ret;
		dx->name_off = htole32(no);
		dx->name_len = htole16(n->xa[i].name_len);
		dx->value_off = htole32(vo);
		dx->value_len = htole32(n->xa[i].val_len);
	}

	switch (mode & S_IFMT) {
	case S_IFDIR:
		(*dirs)++;
		a = *dpos;
		bcount = n->u.dir.n;
		for (uint32_t i = 0; i < n->u.dir.n; i++) {
			const struct cfs_bent *e = &b->ents[n->u.dir.v[i]];
			const struct cfs_bnode *c = &b->nodes[e->child];
			struct cfs_disk_dirent *dd = &f->dirents[(*dpos)++];
			uint32_t no;

			ret = fin_intern(f, b->arena + e->name_off, e->name_len, &no);
			if (ret)
				return ret;
			dd->ino = htole32(c->ino);
			dd->name_off = htole32(no);
			dd->name_len = htole16(e->name_len);
			dd->type = (uint8_t)((c->attr.mode & S_IFMT) >> 12); /* IFTODT */
		}
		break;
	case S_IFREG:
		(*files)++;
		size = n->attr.size;
		*file_bytes += size;
		a = f->nextents;
		ret = fin_file(f, n, &cnt);
		if (ret)
			return ret;
		bcount = cnt;
		break;
	case S_IFLNK:
		if (!n->u.lnk.len) {
			cfs_debug("builder: symlink inode %u without a target", n->ino);
			return -EINVAL;
		}
		ret = fin_intern(f, b->arena + n->u.lnk.off, n->u.lnk.len, &a32);
		if (ret)
			return ret;
		a = a32;
		bcount = n->u.lnk.len;
		size = n->u.lnk.len;
		break;
	case S_IFCHR:
	case S_IFBLK:
		a = n->attr.rdev;
		break;
	default:
		break;
	}

	di->mode = htole32(mode);
	di->uid = htole32(n->attr.uid);
	di->gid = htole32(n->attr.gid);
	di->nlink = htole32(n->nlink);
	di->size = htole64(size);
	di->mtime_sec = (int64_t)htole64((uint64_t)n->attr.mtime_sec);
	di->mtime_nsec = htole32(n->attr.mtime_nsec);
	di->parent = htole32(n->parent_ino);
	di->a = htole64(a);
	di->b = htole32(bcount);
	return 0;
}

static void fin_section(struct cfs_disk_header *h, enum cfs_section s, size_t *pos, size_t size)
{
	*pos = CFS_ALIGN_UP(*pos, (size_t)8);
	h->sec[s].offset = htole64(*pos);
	h->sec[s].size = htole64(size);
	*pos += size;
}

/* The header, then each section where h places it. */
static void fin_copy(const struct cfs_bfinish *f, const struct cfs_disk_header *h, uint8_t *buf,
		     const void *hints)
{
	const void *sec[CFS_SEC_COUNT] = {
		[CFS_SEC_INODES] = f->inodes,   [CFS_SEC_DIRENTS] = f->dirents,
		[CFS_SEC_EXTENTS] = f->extents, [CFS_SEC_CHUNKS] = f->chunks,
		[CFS_SEC_XATTRS] = f->xattrs,   [CFS_SEC_STRINGS] = f->str,
	};

	memcpy(buf, h, le32toh(h->header_size));
	for (unsigned s = 0; s < CFS_SEC_COUNT; s++) {
		if (h->sec[s].size)
			memcpy(buf + le64toh(h->sec[s].offset), sec[s], le64toh(h->sec[s].size));
	}
	if (hints)
		memcpy(buf + le64toh(h->hints.offset), hints, le64toh(h->hints.size));
}

static void fin_free(struct cfs_bfinish *f)
{
	free(f->order);
	free(f->inodes);
	free(f->dirents);
	free(f->xattrs);
	free(f->extents);
	free(f->chunks);
	free(f->chunk_map);
	free(f->dslots);
	free(f->str);
	free(f->islots);
}

int cfs_builder_finish(struct cfs_builder *b, void **index, size_t *len,
		       struct cfs_builder_stats *stats)
{
	struct cfs_bfinish f = { .b = b };
	uint64_t file_bytes = 0, files = 0, dirs = 0;
	struct cfs_builder_stats hs = { 0 };
	struct cfs_disk_header h;
	size_t dpos = 0, xpos = 0, pos, nchunks, hints_len = 0;
	void *hints = NULL;
	uint8_t *buf;
	int ret;

	if (b->finished)
		return -EINVAL;

	/* Workers are done by now; the lock orders their writes before ours. */
	pthread_mutex_lock(&b->chunk_lock);
	nchunks = b->nchunks;
	pthread_mutex_unlock(&b->chunk_lock);
	for (size_t i = 0; i < nchunks; i++) {
		if (!b->chunks[i].set) {
			cfs_debug("builder: chunk %zu reserved but never set", i);
			return -EINVAL;
		}
	}

	ret = fin_number(&f);
	if (ret)
		goto out;

	ret = -ENOMEM;
	f.inodes = calloc(f.ninodes, sizeof(*f.inodes));
	f.dirents = calloc(f.ndirents ? f.ndirents : 1, sizeof(*f.dirents));
	f.xattrs = calloc(f.nxattrs ? f.nxattrs : 1, sizeof(*f.xattrs));
	f.chunks = calloc(nchunks ? nchunks : 1, sizeof(*f.chunks));
	f.chunk_map = malloc((nchunks ? nchunks : 1) * sizeof(*f.chunk_map));
	for (f.dslots_cap = 16; f.dslots_cap < nchunks * 2; f.dslots_cap *= 2)
		;
	f.dslots = calloc(f.dslots_cap, sizeof(*f.dslots));
	if (!f.inodes || !f.dirents || !f.xattrs || !f.chunks || !f.chunk_map || !f.dslots)
		goto out;
	memset(f.chunk_map, 0xff, nchunks * sizeof(*f.chunk_map));

	for (size_t i = 0; i < f.ninodes; i++) {
		ret = fin_inode(&f, i, &dpos, &xpos, &file_bytes, &files, &dirs);
		if (ret)
			goto out;
	}

	ret = cfs_builder_hints(b, f.order, f.ninodes, &hints, &hints_len, &hs);
	if (ret)
		goto out;

	memset(&h, 0, sizeof(h));
	memcpy(h.magic, CFS_INDEX_MAGIC, sizeof(h.magic));
	/* Without hints, the header an older cfs-pack wrote: the same tree
	 * gives the same image as before. */
	pos = hints ? sizeof(h) : CFS_HEADER_SIZE_CONFIG;
	fin_section(&h, CFS_SEC_INODES, &pos, f.ninodes * sizeof(*f.inodes));
	fin_section(&h, CFS_SEC_DIRENTS, &pos, f.ndirents * sizeof(*f.dirents));
	fin_section(&h, CFS_SEC_EXTENTS, &pos, f.nextents * sizeof(*f.extents));
	fin_section(&h, CFS_SEC_CHUNKS, &pos, f.nchunks * sizeof(*f.chunks));
	fin_section(&h, CFS_SEC_XATTRS, &pos, f.nxattrs * sizeof(*f.xattrs));
	fin_section(&h, CFS_SEC_STRINGS, &pos, f.str_len);
	if (hints) {
		pos = CFS_ALIGN_UP(pos, (size_t)8);
		h.hints.offset = htole64(pos);
		h.hints.size = htole64(hints_len);
		pos += hints_len;
	}
	if (pos > CFS_INDEX_MAX_SIZE) {
		ret = -EFBIG;
		goto out;
	}
	h.version = htole32(CFS_INDEX_VERSION);
	h.header_size = htole32(hints ? sizeof(h) : CFS_HEADER_SIZE_CONFIG);
	h.features_compat = htole64(hints ? CFS_FEAT_COMPAT_HINTS : 0);
	h.features_incompat = htole64(0);
	h.index_size = htole64(pos);
	h.chunk_size = htole32(b->chunk_size);
	h.inode_count = htole32((uint32_t)f.ninodes);
	h.total_file_bytes = htole64(file_bytes);
	h.created_sec = htole64(0);

	/* calloc: the padding between sections must be zero. */
	buf = calloc(1, pos);
	if (!buf) {
		ret = -ENOMEM;
		goto out;
	}
	fin_copy(&f, &h, buf, hints);

	if (stats) {
		stats->inodes = f.ninodes;
		stats->files = files;
		stats->dirs = dirs;
		stats->file_bytes = file_bytes;
		stats->chunks = nchunks;
		stats->unique_chunks = f.nchunks;
		stats->elf_files = hs.elf_files;
		stats->hint_triggers = hs.hint_triggers;
		stats->hint_lists = hs.hint_lists;
		stats->hint_entries = hs.hint_entries;
		stats->elf_unresolved = hs.elf_unresolved;
		stats->hints_len = hints_len;
	}
	*index = buf;
	*len = pos;
	b->finished = true;
	ret = 0;
out:
	free(hints);
	fin_free(&f);
	return ret;
}
