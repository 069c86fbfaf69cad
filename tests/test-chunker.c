/* SPDX-License-Identifier: MIT */
/*
 * Chunker: fixed-size chunks of large files from their own start, holes not
 * stored, small files grouped with content-defined boundaries, bad calls
 * rejected.  Files are checked end to end through a real builder and index:
 * every file read back from its extents and the emitted chunks.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <xxhash.h>

#include "builder.h"
#include "chunker.h"
#include "digest.h"
#include "format.h"
#include "index.h"
#include "test.h"

#define KiB 1024u
#define CS (64 * KiB)

/* ---- a run: builder + chunker + an emit that records chunks ---- */

struct rec_chunk {
	uint32_t chunk;
	uint8_t *data;
	size_t len;
	cfs_digest d;
};

struct run {
	struct cfs_builder *b;
	struct cfs_chunker *c;
	struct rec_chunk *chunks;
	size_t n, cap;
	int fail_emit;         /* emit returns this when set */
	struct cfs_index *idx; /* after finish() */
};

static int emit(void *ctx, uint32_t chunk, void *data, size_t len)
{
	struct run *r = ctx;
	struct rec_chunk *rc;

	if (r->fail_emit) {
		free(data);
		return r->fail_emit;
	}
	if (r->n == r->cap) {
		r->cap = r->cap ? 2 * r->cap : 16;
		r->chunks = realloc(r->chunks, r->cap * sizeof(*r->chunks));
		if (!r->chunks)
			abort();
	}
	rc = &r->chunks[r->n++];
	rc->chunk = chunk;
	rc->data = data;
	rc->len = len;
	cfs_sha256(data, len, &rc->d);
	return cfs_builder_chunk_set(r->b, chunk, &rc->d, (uint32_t)len, (uint32_t)len);
}

static void run_init(struct run *r, uint32_t cs, uint32_t small_max, uint32_t bits)
{
	struct cfs_chunker_opts o = { cs, small_max, bits, false };

	memset(r, 0, sizeof(*r));
	if (cfs_builder_new(cs, &r->b) < 0 || cfs_chunker_new(&o, r->b, emit, r, &r->c) < 0) {
		fprintf(stderr, "cannot create builder or chunker\n");
		exit(1);
	}
}

static void run_free(struct run *r)
{
	for (size_t i = 0; i < r->n; i++)
		free(r->chunks[i].data);
	free(r->chunks);
	cfs_chunker_free(r->c);
	cfs_builder_free(r->b);
	cfs_index_free(r->idx);
}

/* Adds a regular file and feeds the given ranges (offsets into data). */
struct range {
	uint64_t off;
	size_t len;
};

static uint32_t add_file(struct run *r, const char *name, uint64_t size, const uint8_t *data,
			 const struct range *rg, size_t nrg, size_t piece)
{
	struct cfs_attr a = { .mode = S_IFREG | 0644, .size = size };
	uint32_t node = 0;

	CHECK_EQ(cfs_builder_add(r->b, CFS_NODE_ROOT, name, strlen(name), &a, &node), 0);
	CHECK_EQ(cfs_chunker_file_begin(r->c, node, size), 0);
	for (size_t i = 0; i < nrg; i++) {
		for (size_t o = 0; o < rg[i].len; o += piece) {
			size_t n = rg[i].len - o < piece ? rg[i].len - o : piece;
			CHECK_EQ(cfs_chunker_file_data(r->c, rg[i].off + o, data + rg[i].off + o, n), 0);
		}
	}
	CHECK_EQ(cfs_chunker_file_end(r->c), 0);
	return node;
}

static void finish(struct run *r)
{
	void *buf;
	size_t len;

	CHECK_EQ(cfs_chunker_flush(r->c), 0);
	if (cfs_builder_finish(r->b, &buf, &len, NULL) < 0) {
		fprintf(stderr, "cfs_builder_finish failed\n");
		exit(1);
	}
	if (cfs_index_open(buf, len, &r->idx) < 0) {
		fprintf(stderr, "cfs_index_open failed on the builder's index\n");
		free(buf);
		exit(1);
	}
}

static const struct rec_chunk *find_chunk(const struct run *r, const cfs_digest *d)
{
	for (size_t i = 0; i < r->n; i++)
		if (cfs_digest_eq(&r->chunks[i].d, d))
			return &r->chunks[i];
	return NULL;
}

/* Reads a file back through the index's extents and the emitted chunks and
 * compares it with want (size bytes, holes as zeros).  Returns the number
 * of bytes the file has in chunks. */
static uint64_t check_file(struct run *r, const char *name, const uint8_t *want, uint64_t size)
{
	struct cfs_extent e;
	struct cfs_inode in;
	uint64_t ino, stored = 0, at = 0;
	uint8_t *got = calloc(1, size + 1);

	if (!got)
		abort();
	CHECK_EQ(cfs_index_lookup(r->idx, CFS_ROOT_INO, name, strlen(name), &ino), 0);
	CHECK_EQ(cfs_index_inode(r->idx, ino, &in), 0);
	CHECK(in.size == size);
	for (uint32_t i = 0; cfs_index_extent(r->idx, ino, i, &e) == 1; i++) {
		struct cfs_chunk ch;
		const struct rec_chunk *rc;

		CHECK(e.file_off == at);
		at = e.file_off + e.len;
		if (e.file_off + e.len > size)
			break;
		if (e.chunk == CFS_CHUNK_NONE)
			continue;
		CHECK_EQ(cfs_index_chunk(r->idx, e.chunk, &ch), 0);
		rc = find_chunk(r, &ch.digest);
		CHECK(rc != NULL);
		if (!rc || e.chunk_off + e.len > rc->len) {
			failures++;
			continue;
		}
		memcpy(got + e.file_off, rc->data + e.chunk_off, e.len);
		stored += e.len;
	}
	CHECK(at == size);
	CHECK(!memcmp(got, want, size));
	free(got);
	return stored;
}

static uint64_t rng_state = 0x243f6a8885a308d3ull;

static uint64_t rnd(void)
{
	return cfs_test_rand(&rng_state);
}

static void fill(uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(rnd() >> 32);
}

/* ---- tests ---- */

/* A 3.5-chunk file: 4 chunks, chunk k is exactly bytes [k*cs, (k+1)*cs). */
static void test_large(void)
{
	uint64_t size = 3 * CS + CS / 2;
	uint8_t *data = malloc(size);
	struct range all = { 0, size };
	struct run r;

	fill(data, size);
	run_init(&r, CS, 0, 0);
	add_file(&r, "big", size, data, &all, 1, 10007);
	finish(&r);
	CHECK(r.n == 4);
	for (size_t k = 0; k < r.n && k < 4; k++) {
		size_t want = k < 3 ? CS : CS / 2;
		CHECK(r.chunks[k].len == want);
		CHECK(!memcmp(r.chunks[k].data, data + k * CS, want));
	}
	CHECK(check_file(&r, "big", data, size) == size);
	run_free(&r);
	free(data);
}

/* The same large file after different small files chunks the same way:
 * chunking of a large file depends on nothing but its bytes. */
static void test_large_stable(void)
{
	uint64_t size = 2 * CS + 123;
	uint8_t *data = malloc(size), small[1000];
	struct range all = { 0, size }, s = { 0, sizeof(small) };
	cfs_digest d1[3];
	struct run r;

	fill(data, size);
	fill(small, sizeof(small));
	run_init(&r, CS, 0, 0);
	add_file(&r, "big", size, data, &all, 1, CS);
	CHECK(r.n == 3);
	for (size_t i = 0; i < 3 && i < r.n; i++)
		d1[i] = r.chunks[i].d;
	run_free(&r);

	run_init(&r, CS, 0, 0);
	add_file(&r, "a", sizeof(small), small, &s, 1, 77);
	add_file(&r, "big", size, data, &all, 1, 4096);
	finish(&r);
	for (size_t i = 0; i < 3; i++)
		CHECK(find_chunk(&r, &d1[i]) != NULL);
	CHECK(check_file(&r, "big", data, size) == size);
	run_free(&r);
	free(data);
}

/* Sparse input: data, gap, data, trailing hole.  Only data is stored. */
static void test_sparse(void)
{
	uint64_t size = 10 * CS;
	uint8_t *data = calloc(1, size);
	struct range rg[] = { { 100, 5000 }, { 5 * CS + 7, CS + 100 } };
	size_t total = 0, data_bytes = rg[0].len + rg[1].len;
	struct run r;

	fill(data + rg[0].off, rg[0].len);
	fill(data + rg[1].off, rg[1].len);
	run_init(&r, CS, 0, 0);
	add_file(&r, "sparse", size, data, rg, 2, 3000);
	/* An all-hole file of large size stores nothing at all. */
	add_file(&r, "holes", size, data, NULL, 0, 1);
	finish(&r);
	for (size_t i = 0; i < r.n; i++) {
		CHECK(r.chunks[i].len > 0);
		total += r.chunks[i].len;
	}
	CHECK(total == data_bytes);
	CHECK(r.n == 2); /* 5000 + 64K + 100 bytes: one full chunk and a tail */
	CHECK(check_file(&r, "sparse", data, size) == data_bytes);
	memset(data, 0, size);
	CHECK(check_file(&r, "holes", data, size) == 0);
	run_free(&r);
	free(data);
}

/* A deterministic set of small files. */
struct smalls {
	size_t n;
	uint8_t **data;
	size_t *len;
};

static void smalls_make(struct smalls *s, size_t n, size_t maxlen, uint64_t seed)
{
	rng_state = seed;
	s->n = n;
	s->data = calloc(n, sizeof(*s->data));
	s->len = calloc(n, sizeof(*s->len));
	for (size_t i = 0; i < n; i++) {
		/* Some empty files too: they take no room and never cut a group. */
		s->len[i] = i % 17 == 3 ? 0 : 1 + rnd() % (maxlen - 1);
		s->data[i] = malloc(s->len[i] + 1);
		fill(s->data[i], s->len[i]);
	}
}

static void smalls_free(struct smalls *s)
{
	for (size_t i = 0; i < s->n; i++)
		free(s->data[i]);
	free(s->data);
	free(s->len);
}

static void feed_smalls(struct run *r, const struct smalls *s)
{
	char name[32];

	for (size_t i = 0; i < s->n; i++) {
		struct range all = { 0, s->len[i] };
		snprintf(name, sizeof(name), "f%05zu", i);
		add_file(r, name, s->len[i], s->data[i], &all, 1, 1000);
	}
	finish(r);
}

/* The rule of chunker.h, modelled independently: the expected groups as
 * concatenations of files. */
static size_t model_groups(const struct smalls *s, uint32_t cs, uint32_t bits, size_t *ends,
			   size_t *lens)
{
	size_t ng = 0, glen = 0;
	uint64_t mask = (1ull << bits) - 1;

	for (size_t i = 0; i < s->n; i++) {
		if (glen + s->len[i] > cs) {
			ends[ng] = i;
			lens[ng++] = glen;
			glen = 0;
		}
		glen += s->len[i];
		if (s->len[i] && !(XXH3_64bits(s->data[i], s->len[i]) & mask)) {
			ends[ng] = i + 1;
			lens[ng++] = glen;
			glen = 0;
		}
	}
	if (glen) {
		ends[ng] = s->n;
		lens[ng++] = glen;
	}
	return ng;
}

static void test_groups(void)
{
	const uint32_t bits = 3;
	struct smalls s;
	size_t *ends, *lens, ng, first = 0, multi = 0;
	char name[32];
	struct run r;

	smalls_make(&s, 400, 6000, 42);
	ends = calloc(s.n + 1, sizeof(*ends));
	lens = calloc(s.n + 1, sizeof(*lens));
	ng = model_groups(&s, CS, bits, ends, lens);

	run_init(&r, CS, 8 * KiB, bits);
	feed_smalls(&r, &s);
	CHECK(r.n == ng);
	for (size_t g = 0; g < ng && g < r.n; g++) {
		size_t at = 0;

		CHECK(r.chunks[g].len == lens[g]);
		CHECK(r.chunks[g].len > 0 && r.chunks[g].len <= CS);
		for (size_t i = first; i < ends[g] && at + s.len[i] <= r.chunks[g].len; i++) {
			CHECK(!memcmp(r.chunks[g].data + at, s.data[i], s.len[i]));
			at += s.len[i];
		}
		CHECK(at == r.chunks[g].len);
		if (ends[g] - first > 1)
			multi++;
		first = ends[g];
	}
	CHECK(multi > 0);  /* files really share chunks */
	CHECK(ng > 10);    /* and boundaries do come from the hash */
	for (size_t i = 0; i < s.n; i++) {
		snprintf(name, sizeof(name), "f%05zu", i);
		CHECK(check_file(&r, name, s.data[i], s.len[i]) == s.len[i]);
	}
	run_free(&r);
	free(ends);
	free(lens);
	smalls_free(&s);
}

static size_t count_missing(const struct run *from, const struct run *in)
{
	size_t n = 0;

	for (size_t i = 0; i < from->n; i++)
		if (!find_chunk(in, &from->chunks[i].d))
			n++;
	return n;
}

/* Changing one small file changes only its own group: at most the group
 * it was in (two if the change moves a boundary), every other chunk the
 * same. */
static void test_group_locality(void)
{
	const uint32_t bits = 4;
	struct smalls s;
	struct run r1, r2;
	size_t changed_total = 0;

	smalls_make(&s, 600, 3000, 7);
	run_init(&r1, CS, 8 * KiB, bits);
	feed_smalls(&r1, &s);
	CHECK(r1.n > 20);

	for (size_t k = 50; k < s.n; k += 97) {
		uint8_t save;

		if (!s.len[k])
			continue;
		save = s.data[k][0];
		s.data[k][0] ^= 0x5a;
		run_init(&r2, CS, 8 * KiB, bits);
		feed_smalls(&r2, &s);
		size_t added = count_missing(&r2, &r1), removed = count_missing(&r1, &r2);
		CHECK(added >= 1 && added <= 2);
		CHECK(removed >= 1 && removed <= 2);
		changed_total += added;
		run_free(&r2);
		s.data[k][0] = save;
	}
	CHECK(changed_total > 0);
	run_free(&r1);
	smalls_free(&s);
}

/* Small files only: no chunk over chunk_size, none empty, even with files
 * just under small_max and a group rule that never fires. */
static void test_small_bound(void)
{
	struct smalls s;
	struct run r;

	smalls_make(&s, 300, 16 * KiB, 99);
	run_init(&r, CS, 16 * KiB, 32);
	feed_smalls(&r, &s);
	for (size_t i = 0; i < r.n; i++)
		CHECK(r.chunks[i].len > 0 && r.chunks[i].len <= CS);
	run_free(&r);
	smalls_free(&s);
}

static void test_invalid(void)
{
	struct cfs_chunker_opts bad[] = {
		{ 1000, 0, 0, false },                  /* chunk too small */
		{ CFS_CHUNK_MAX_SIZE + 1, 0, 0, false }, /* too big */
		{ CS, CS, 0, false },                   /* small_max not below chunk_size */
		{ CS, 0, 33, false },                   /* group_bits */
	};
	struct cfs_chunker *c;
	uint8_t buf[100] = { 1 };
	struct run r;
	uint32_t node;
	struct cfs_attr a = { .mode = S_IFREG | 0644, .size = 100 };

	run_init(&r, CS, 0, 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK_EQ(cfs_chunker_new(&bad[i], r.b, emit, &r, &c), -EINVAL);
	CHECK_EQ(cfs_chunker_new(NULL, r.b, NULL, &r, &c), -EINVAL);

	CHECK_EQ(cfs_chunker_file_data(r.c, 0, buf, 10), -EINVAL); /* outside a file */
	CHECK_EQ(cfs_chunker_file_end(r.c), -EINVAL);
	CHECK_EQ(cfs_builder_add(r.b, CFS_NODE_ROOT, "f", 1, &a, &node), 0);
	CHECK_EQ(cfs_chunker_file_begin(r.c, node, 100), 0);
	CHECK_EQ(cfs_chunker_file_begin(r.c, node, 100), -EINVAL); /* nested */
	CHECK_EQ(cfs_chunker_flush(r.c), -EINVAL);                 /* inside a file */
	CHECK_EQ(cfs_chunker_file_data(r.c, 50, buf, 10), 0);
	CHECK_EQ(cfs_chunker_file_data(r.c, 55, buf, 10), -EINVAL); /* overlaps */
	CHECK_EQ(cfs_chunker_file_data(r.c, 10, buf, 10), -EINVAL); /* goes back */
	CHECK_EQ(cfs_chunker_file_data(r.c, 95, buf, 10), -EINVAL); /* past size */
	CHECK_EQ(cfs_chunker_file_data(r.c, UINT64_MAX - 5, buf, 10), -EINVAL);
	CHECK_EQ(cfs_chunker_file_data(r.c, 60, buf, 40), 0);
	CHECK_EQ(cfs_chunker_file_end(r.c), 0);
	finish(&r);
	run_free(&r);

	/* An emit error aborts the feed and sticks. */
	run_init(&r, CS, 0, 0);
	a.size = 2 * CS;
	CHECK_EQ(cfs_builder_add(r.b, CFS_NODE_ROOT, "g", 1, &a, &node), 0);
	CHECK_EQ(cfs_chunker_file_begin(r.c, node, 2 * CS), 0);
	r.fail_emit = -ENOSPC;
	{
		uint8_t *big = calloc(1, CS);
		CHECK_EQ(cfs_chunker_file_data(r.c, 0, big, CS), -ENOSPC);
		CHECK_EQ(cfs_chunker_file_data(r.c, CS, big, 10), -ENOSPC);
		CHECK_EQ(cfs_chunker_file_end(r.c), -ENOSPC);
		free(big);
	}
	run_free(&r);
}

int main(void)
{
	test_large();
	test_large_stable();
	test_sparse();
	test_groups();
	test_group_locality();
	test_small_bound();
	test_invalid();
	return cfs_test_done("test-chunker");
}
