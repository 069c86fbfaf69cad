/* SPDX-License-Identifier: MIT */
/*
 * test-tar: where a layer's tar may end (tools/pack_tar.c).  A layer cut
 * at every byte offset, fed in pieces of several sizes through the real
 * pipeline (fuzz-pack.h), must be accepted exactly where Go's archive/tar
 * (umoci, podman) reads it to the end with no data lost: at a member
 * boundary, anywhere in the padding after the last member's data (what
 * `umoci insert` writes), after the first block of the end marker; and
 * then give the image of the members before the cut.  Everywhere else (a
 * header or a member's data cut short, half a zero block) it must fail.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "test.h"
#include "fuzz-pack.h"

#define BLOCK 512
#define MAX_TAR (16 * BLOCK)

/* One ustar header at h: name, type, size (the rest fixed). */
static void header(uint8_t *h, const char *name, char type, unsigned size, const char *link)
{
	unsigned sum = 0;

	memset(h, 0, BLOCK);
	snprintf((char *)h, 100, "%s", name);
	snprintf((char *)h + 100, 8, "%07o", type == '5' ? 0755u : 0644u);
	snprintf((char *)h + 108, 8, "%07o", 1000u);
	snprintf((char *)h + 116, 8, "%07o", 100u);
	snprintf((char *)h + 124, 12, "%011o", size);
	snprintf((char *)h + 136, 12, "%011o", 1700000000u);
	h[156] = (uint8_t)type;
	if (link)
		snprintf((char *)h + 157, 100, "%s", link);
	memcpy(h + 257, "ustar\0" "00", 8);
	memset(h + 148, ' ', 8);
	for (size_t i = 0; i < BLOCK; i++)
		sum += h[i];
	snprintf((char *)h + 148, 8, "%06o", sum);
}

struct member {
	const char *name;
	char type;
	unsigned size;
	const char *link;
};

/* The layer: a directory, a file whose data ends inside a block, a hard
 * link, a file of exactly one block, a small last file. */
static const struct member members[] = {
	{ "d/", '5', 0, NULL },
	{ "d/a", '0', 700, NULL },
	{ "d/hl", '1', 0, "d/a" },
	{ "d/b", '0', 512, NULL },
	{ "e", '0', 5, NULL },
};
#define NMEMBERS (sizeof(members) / sizeof(members[0]))

static uint8_t tarbuf[MAX_TAR];
static size_t ends[NMEMBERS];     /* offset after member i's padding */
static size_t data_end[NMEMBERS]; /* offset after member i's data */
static size_t tar_len;            /* with the end marker */

static void build(void)
{
	size_t off = 0;

	for (size_t i = 0; i < NMEMBERS; i++) {
		const struct member *m = &members[i];

		header(tarbuf + off, m->name, m->type, m->size, m->link);
		off += BLOCK;
		for (unsigned j = 0; j < m->size; j++)
			tarbuf[off + j] = (uint8_t)('a' + (i + j) % 26);
		data_end[i] = off + m->size;
		off += (m->size + BLOCK - 1) / BLOCK * BLOCK;
		ends[i] = off;
	}
	tar_len = off + 2 * BLOCK; /* the marker: zeros already */
}

/* The layer source's input: buf, given piece bytes at a time. */
static const uint8_t *in_buf;
static size_t in_len, in_pos, in_piece;

static ssize_t piece_read(void *ctx, const void **buf)
{
	size_t n = CFS_MIN(in_piece, in_len - in_pos);

	(void)ctx;
	*buf = in_buf + in_pos;
	in_pos += n;
	return (ssize_t)n;
}

static int pack_one_layer(struct cfs_pack_ctx *p, const char *arg, int fd)
{
	struct cfs_pack_tar *t = NULL;
	int ret;

	(void)arg;
	(void)fd;
	ret = cfs_pack_tar_begin(p, true, &t);
	if (ret == 0)
		ret = cfs_pack_tar_layer(t, piece_read, NULL, "layer 1");
	return cfs_pack_tar_end(t, ret == 0) ?: ret;
}

static const struct cfs_pack_source one_layer = {
	.name = "one layer",
	.pack = pack_one_layer,
};

static int pack_buf(const uint8_t *buf, size_t len, size_t piece, cfs_digest *ref)
{
	in_buf = buf;
	in_len = len;
	in_pos = 0;
	in_piece = piece;
	return fuzz_pack_ref(&one_layer, "layer", -1, NULL, ref);
}

/* The members a cut at c keeps whole (their count), or -1 when the cut
 * must be refused. */
static int expected(size_t c)
{
	size_t marker = ends[NMEMBERS - 1];
	int whole = 0;

	if (c >= marker)
		return c == marker || c >= marker + BLOCK ? (int)NMEMBERS : -1;
	while ((size_t)whole < NMEMBERS && ends[whole] <= c)
		whole++;
	if (whole > 0 && c == ends[whole - 1])
		return whole;
	/* Inside member whole's padding, its data all there. */
	if (c >= data_end[whole] && c < ends[whole] && members[whole].type == '0')
		return whole + 1;
	return -1;
}

int main(void)
{
	static const size_t pieces[] = { MAX_TAR, 100, 1 };
	static uint8_t prefix[MAX_TAR];
	cfs_digest want[NMEMBERS + 1], got;
	unsigned accepted = 0, refused = 0;

	fuzz_pack_quiet("test-tar");
	build();
	/* The image of the first k members, each from a tar that ends well. */
	for (size_t k = 1; k <= NMEMBERS; k++) {
		size_t n = ends[k - 1];

		memcpy(prefix, tarbuf, n);
		memset(prefix + n, 0, 2 * BLOCK);
		CHECK_EQ(pack_buf(prefix, n + 2 * BLOCK, MAX_TAR, &want[k]), 0);
	}
	CHECK(!cfs_digest_eq(&want[1], &want[NMEMBERS]));

	/* Under one block, libarchive cannot tell a tar: not a question of
	 * where it ends. */
	for (size_t c = BLOCK; c <= tar_len; c++) {
		int k = expected(c);

		for (size_t i = 0; i < sizeof(pieces) / sizeof(pieces[0]); i++) {
			/* One-byte pieces at the interesting offsets only. */
			if (pieces[i] == 1 && c % 97 && expected(c - 1) == k && expected(c + 1) == k)
				continue;
			int ret = pack_buf(tarbuf, c, pieces[i], &got);

			if (k < 0) {
				CHECK(ret < 0, "cut at %zu (pieces of %zu): accepted", c, pieces[i]);
				refused++;
			} else {
				CHECK(ret == 0, "cut at %zu (pieces of %zu): refused (%d)", c, pieces[i],
				      ret);
				CHECK(ret < 0 || cfs_digest_eq(&got, &want[k]),
				      "cut at %zu (pieces of %zu): not the image of %d members", c,
				      pieces[i], k);
				accepted++;
			}
		}
	}
	printf("%u cuts accepted, %u refused\n", accepted, refused);
	return cfs_test_done("test-tar");
}
