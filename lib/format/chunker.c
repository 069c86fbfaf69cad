/* SPDX-License-Identifier: MIT */
/*
 * Chunking (chunker.h, docs/FORMAT.md "Chunking").
 *
 * Two open buffers: the current large file's chunk and the shared group
 * chunk of small files.  Each is malloc'd at chunk_size when its first byte
 * arrives and handed to emit when sealed, so a chunk never holds bytes of
 * two large files and never exceeds chunk_size.
 *
 * Every file's bytes also go by an ELF scanner (elf.c), which keeps the
 * headers of the ELF files among them; what it reads is only a hint, so
 * a file it cannot read is packed all the same.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "builder.h"
#include "chunker.h"
#include "elf.h"
#include "format.h"
#include "util.h"

#define CFS_CHUNK_SIZE_MIN (64u << 10)
/* The ELF scanner keeps this much of a file's start: the dynamic string
 * table of the biggest libraries seen (LLVM, libtorch_cpu) ends 4.4 MiB
 * in. */
#define CHUNKER_ELF_HEAD (8u << 20)

/* A chunk being filled. */
struct open_chunk {
	uint8_t *buf;    /* NULL until the first byte */
	size_t len;
	uint32_t chunk;  /* reserved with the first byte */
};

/* Extent not yet given to the builder: contiguous data is coalesced. */
struct pending_extent {
	uint64_t file_off, len;
	uint32_t chunk, chunk_off;
};

struct cfs_chunker {
	struct cfs_builder *b;
	cfs_chunk_emit_fn emit;
	void *ctx;
	uint32_t chunk_size, small_max, group_bits;
	int err;               /* sticky: the chunker is unusable after one */

	struct open_chunk group;  /* small files */
	struct open_chunk large;  /* the current large file */

	bool in_file, small;
	uint32_t node;
	uint64_t size;
	uint64_t next_off;     /* data must start at or after this */
	size_t small_start;    /* the small file's first byte in group.buf */
	struct pending_extent ext;

	struct cfs_elf_scan *elf; /* NULL: no hints */
};

int cfs_chunker_new(const struct cfs_chunker_opts *opts, struct cfs_builder *b,
		    cfs_chunk_emit_fn emit, void *ctx, struct cfs_chunker **out)
{
	struct cfs_chunker_opts o = opts ? *opts : (struct cfs_chunker_opts){ 0 };
	struct cfs_chunker *c;

	if (!b || !emit || !out)
		return -EINVAL;
	if (!o.chunk_size)
		o.chunk_size = CFS_CHUNK_SIZE_DEFAULT;
	if (!o.small_max)
		o.small_max = CFS_MIN(CFS_SMALL_MAX_DEFAULT, o.chunk_size / 2);
	if (!o.group_bits)
		o.group_bits = CFS_GROUP_BITS_DEFAULT;
	if (o.chunk_size < CFS_CHUNK_SIZE_MIN || o.chunk_size > CFS_CHUNK_MAX_SIZE ||
	    o.small_max >= o.chunk_size || o.group_bits > 32)
		return -EINVAL;

	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->b = b;
	c->emit = emit;
	c->ctx = ctx;
	c->chunk_size = o.chunk_size;
	c->small_max = o.small_max;
	c->group_bits = o.group_bits;
	if (!o.no_hints && cfs_elf_scan_new(CHUNKER_ELF_HEAD, &c->elf) < 0) {
		free(c);
		return -ENOMEM;
	}
	*out = c;
	return 0;
}

void cfs_chunker_free(struct cfs_chunker *c)
{
	if (!c)
		return;
	free(c->group.buf);
	free(c->large.buf);
	cfs_elf_scan_free(c->elf);
	free(c);
}

static int fail(struct cfs_chunker *c, int err)
{
	if (!c->err)
		c->err = err;
	return err;
}

/* Hands a non-empty chunk to emit, which owns the buffer from then on. */
static int seal(struct cfs_chunker *c, struct open_chunk *oc)
{
	void *buf = oc->buf;
	size_t len = oc->len;
	uint32_t chunk = oc->chunk;
	int ret;

	if (!buf)
		return 0;
	*oc = (struct open_chunk){ 0 };
	ret = c->emit(c->ctx, chunk, buf, len);
	return ret < 0 ? fail(c, ret) : 0;
}

/* Makes room for the first byte of a chunk: reserves its number. */
static int open_chunk(struct cfs_chunker *c, struct open_chunk *oc)
{
	int ret;

	if (oc->buf)
		return 0;
	oc->buf = malloc(c->chunk_size);
	if (!oc->buf)
		return fail(c, -ENOMEM);
	oc->len = 0;
	ret = cfs_builder_chunk_new(c->b, &oc->chunk);
	if (ret < 0) {
		free(oc->buf);
		oc->buf = NULL;
		return fail(c, ret);
	}
	return 0;
}

static int flush_extent(struct cfs_chunker *c)
{
	struct pending_extent *e = &c->ext;
	int ret;

	if (!e->len)
		return 0;
	ret = cfs_builder_add_extent(c->b, c->node, e->file_off, e->len, e->chunk, e->chunk_off);
	e->len = 0;
	return ret < 0 ? fail(c, ret) : 0;
}

/* Records that file bytes [off, off + len) sit at chunk_off in chunk. */
static int map_extent(struct cfs_chunker *c, uint64_t off, uint64_t len, uint32_t chunk,
		      uint32_t chunk_off)
{
	struct pending_extent *e = &c->ext;
	int ret;

	if (e->len && e->chunk == chunk && e->file_off + e->len == off &&
	    (uint64_t)e->chunk_off + e->len == chunk_off) {
		e->len += len;
		return 0;
	}
	ret = flush_extent(c);
	if (ret < 0)
		return ret;
	*e = (struct pending_extent){ off, len, chunk, chunk_off };
	return 0;
}

int cfs_chunker_file_begin(struct cfs_chunker *c, uint32_t node, uint64_t size)
{
	int ret;

	if (c->err)
		return c->err;
	if (c->in_file)
		return -EINVAL;
	c->small = size < c->small_max;
	if (c->small && c->group.len + size > c->chunk_size) {
		/* The file's data would not fit: close the group before it, so a
		 * small file is never split across chunks. */
		ret = seal(c, &c->group);
		if (ret < 0)
			return ret;
	}
	c->in_file = true;
	c->node = node;
	c->size = size;
	c->next_off = 0;
	c->small_start = c->group.len;
	c->ext = (struct pending_extent){ 0 };
	if (c->elf)
		cfs_elf_scan_begin(c->elf, size);
	return 0;
}

int cfs_chunker_file_data(struct cfs_chunker *c, uint64_t off, const void *data, size_t len)
{
	struct open_chunk *oc;
	const uint8_t *p = data;
	int ret;

	if (c->err)
		return c->err;
	if (!c->in_file || off < c->next_off || off > c->size || len > c->size - off ||
	    (len && !data))
		return -EINVAL;
	if (!len)
		return 0;
	c->next_off = off + len;
	oc = c->small ? &c->group : &c->large;
	if (c->elf)
		cfs_elf_scan_data(c->elf, off, data, len);

	while (len) {
		size_t n;

		ret = open_chunk(c, oc);
		if (ret < 0)
			return ret;
		/* A small file always fits (checked at begin); a large one fills
		 * the chunk to exactly chunk_size and goes on in the next. */
		n = CFS_MIN(len, c->chunk_size - oc->len);
		memcpy(oc->buf + oc->len, p, n);
		ret = map_extent(c, off, n, oc->chunk, (uint32_t)oc->len);
		if (ret < 0)
			return ret;
		oc->len += n;
		p += n;
		off += n;
		len -= n;
		if (!c->small && oc->len == c->chunk_size) {
			ret = seal(c, oc);
			if (ret < 0)
				return ret;
		}
	}
	return 0;
}

/* The content-defined group boundary: a file whose hash has its low
 * group_bits bits zero ends its group.  Files without data do not count,
 * or every empty file would cut at the same hash. */
static bool ends_group(const struct cfs_chunker *c)
{
	size_t n = c->group.len - c->small_start;
	uint64_t h, mask;

	if (!c->group.buf || !n)
		return false;
	h = XXH3_64bits(c->group.buf + c->small_start, n);
	mask = c->group_bits >= 64 ? UINT64_MAX : (1ull << c->group_bits) - 1;
	return (h & mask) == 0;
}

/* What the file's ELF headers say its loading opens, to the builder. */
static int elf_end(struct cfs_chunker *c)
{
	struct cfs_elf_deps d;
	int ret;

	if (!c->elf || cfs_elf_scan_end(c->elf, &d) < 0 || (!d.interp.len && !d.nneeded))
		return 0;
	ret = cfs_builder_set_elf(c->b, c->node, &d);
	return ret < 0 ? fail(c, ret) : 0;
}

int cfs_chunker_file_end(struct cfs_chunker *c)
{
	int ret;

	if (c->err)
		return c->err;
	if (!c->in_file)
		return -EINVAL;
	c->in_file = false;
	ret = flush_extent(c);
	if (ret < 0)
		return ret;
	ret = elf_end(c);
	if (ret < 0)
		return ret;
	if (c->small)
		return ends_group(c) ? seal(c, &c->group) : 0;
	return seal(c, &c->large);
}

int cfs_chunker_flush(struct cfs_chunker *c)
{
	if (c->err)
		return c->err;
	if (c->in_file)
		return -EINVAL;
	return seal(c, &c->group);
}

int cfs_chunker_set_builder(struct cfs_chunker *c, struct cfs_builder *b)
{
	if (c->err)
		return c->err;
	if (c->in_file || c->group.len)
		return -EINVAL;
	c->b = b;
	return 0;
}
