/* SPDX-License-Identifier: MIT */
/* test-codec: object encode/decode round trips, and clean errors for
 * truncated, bit-flipped, concatenated and otherwise hostile objects. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zstd.h>

#include "codec.h"
#include "digest.h"
#include "test.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
	return cfs_test_rand(&rng);
}

static void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (!p) {
		perror("malloc");
		exit(1);
	}
	return p;
}

/* Encodes src; returns a malloc'd object and its length in *objlen. */
static uint8_t *encode(const void *src, size_t len, int level, size_t *objlen)
{
	size_t cap = cfs_obj_bound(len);
	uint8_t *obj = xmalloc(cap);
	ssize_t n = cfs_obj_encode(obj, cap, src, len, level);

	if (n < 0) {
		fprintf(stderr, "FAIL encode %zu bytes: %zd\n", len, n);
		exit(1);
	}
	*objlen = (size_t)n;
	return obj;
}

static void round_trip(const char *what, const void *src, size_t len)
{
	cfs_digest d;
	size_t objlen;
	uint8_t *obj = encode(src, len, CFS_ZSTD_LEVEL_DEFAULT, &objlen);
	uint8_t *dst = xmalloc(len);
	ssize_t n;

	printf("round trip: %s (%zu bytes -> %zu)\n", what, len, objlen);
	cfs_sha256(src, len, &d);
	CHECK(cfs_obj_raw_size(obj, objlen) == (int64_t)len, "%s: raw size", what);
	n = cfs_obj_decode(dst, len, obj, objlen, &d);
	CHECK(n == (ssize_t)len, "%s: decode returned %zd", what, n);
	CHECK(n < 0 || !memcmp(dst, src, len), "%s: content differs", what);

	/* Any other digest is a mismatch. */
	d.b[7] ^= 1;
	n = cfs_obj_decode(dst, len, obj, objlen, &d);
	CHECK(n == -EBADMSG, "%s: wrong digest gave %zd", what, n);
	free(dst);
	free(obj);
}

/* A hostile variant of an object must decode to a clean error, or, when
 * zstd happens to ignore the changed bit, to the original content. */
static bool hostile_ok(const uint8_t *obj, size_t objlen, const uint8_t *src, size_t len,
		       const cfs_digest *d, uint8_t *dst)
{
	ssize_t n = cfs_obj_decode(dst, len, obj, objlen, d);

	if (n == -EUCLEAN || n == -EBADMSG)
		return true;
	return n == (ssize_t)len && !memcmp(dst, src, len);
}

/* Small objects get every truncation and every bit of the frame header
 * flipped; larger ones a sample of each (samples = 0 means all). */
static void hostile(const char *what, const uint8_t *src, size_t len, unsigned samples)
{
	size_t objlen;
	uint8_t *obj = encode(src, len, CFS_ZSTD_LEVEL_DEFAULT, &objlen);
	uint8_t *copy = xmalloc(objlen);
	uint8_t *dst = xmalloc(len);
	unsigned bad = 0, flips = 0;
	cfs_digest d;

	cfs_sha256(src, len, &d);

	/* Truncated copies are exact-size allocations, so ASan sees any read
	 * past the end. */
	printf("hostile: %s: %s truncations of a %zu-byte object\n", what,
	       samples ? "sampled" : "all", objlen);
	for (size_t k = 0; k < (samples ? samples : objlen); k++) {
		size_t cut = samples ? (k < 64 ? k : objlen - 1 - rnd() % (objlen - 1)) : k;
		uint8_t *t = xmalloc(cut);
		ssize_t n;

		memcpy(t, obj, cut);
		n = cfs_obj_decode(dst, len, t, cut, &d);
		if (n != -EUCLEAN && n != -EBADMSG)
			bad++;
		if (cfs_obj_raw_size(t, cut) != -EUCLEAN)
			bad++;
		free(t);
	}
	CHECK(!bad, "%s: %u truncations not rejected", what, bad);

	printf("hostile: %s: bit flips\n", what);
	bad = 0;
	for (size_t k = 0; k < (samples ? samples : objlen); k++) {
		size_t i = samples && k >= 32 ? rnd() % objlen : k;
		/* Every bit of the header area, then a random bit per byte. */
		unsigned nbits = k < 32 ? 8 : 1;

		for (unsigned b = 0; b < nbits; b++) {
			unsigned bit = nbits == 8 ? b : (unsigned)(rnd() & 7);

			memcpy(copy, obj, objlen);
			copy[i] ^= (uint8_t)(1u << bit);
			flips++;
			if (!hostile_ok(copy, objlen, src, len, &d, dst))
				bad++;
		}
	}
	CHECK(!bad, "%s: %u of %u bit flips not rejected", what, bad, flips);

	printf("hostile: %s: random byte overwrites\n", what);
	bad = 0;
	for (unsigned k = 0; k < (samples ? samples : 2000); k++) {
		memcpy(copy, obj, objlen);
		for (unsigned j = 0; j < 4; j++)
			copy[rnd() % objlen] = (uint8_t)rnd();
		if (!hostile_ok(copy, objlen, src, len, &d, dst))
			bad++;
	}
	CHECK(!bad, "%s: %u random overwrites not rejected", what, bad);

	free(dst);
	free(copy);
	free(obj);
}

static void framing(void)
{
	static const uint8_t skippable[8] = { 0x50, 0x2a, 0x4d, 0x18, 0, 0, 0, 0 };
	const char *s = "some content, some content, some content";
	size_t len = strlen(s), objlen, cap;
	uint8_t *obj = encode(s, len, CFS_ZSTD_LEVEL_DEFAULT, &objlen);
	uint8_t *two = xmalloc(2 * objlen + 8);
	uint8_t dst[256];
	ZSTD_CCtx *cctx;
	cfs_digest d;
	ssize_t n;

	cfs_sha256(s, len, &d);

	printf("framing: a cap one byte short is -EUCLEAN\n");
	n = cfs_obj_decode(dst, len - 1, obj, objlen, &d);
	CHECK(n == -EUCLEAN, "short cap gave %zd", n);
	n = cfs_obj_decode(dst, sizeof(dst), obj, objlen, &d);
	CHECK(n == (ssize_t)len, "larger cap gave %zd", n);

	printf("framing: two concatenated frames are rejected\n");
	memcpy(two, obj, objlen);
	memcpy(two + objlen, obj, objlen);
	CHECK(cfs_obj_raw_size(two, 2 * objlen) == -EUCLEAN, "raw size of two frames");
	n = cfs_obj_decode(dst, sizeof(dst), two, 2 * objlen, &d);
	CHECK(n == -EUCLEAN, "two frames gave %zd", n);

	printf("framing: one trailing byte is rejected\n");
	two[objlen] = 0;
	n = cfs_obj_decode(dst, sizeof(dst), two, objlen + 1, &d);
	CHECK(n == -EUCLEAN, "trailing byte gave %zd", n);

	printf("framing: skippable frames are not objects\n");
	cfs_sha256("", 0, &d);
	n = cfs_obj_decode(dst, sizeof(dst), skippable, sizeof(skippable), &d);
	CHECK(n == -EUCLEAN, "skippable frame gave %zd", n);
	memcpy(two, skippable, sizeof(skippable));
	memcpy(two + sizeof(skippable), obj, objlen);
	CHECK(cfs_obj_raw_size(two, sizeof(skippable) + objlen) == -EUCLEAN,
	      "skippable + data frame");

	printf("framing: a frame without a content size is rejected\n");
	cctx = ZSTD_createCCtx();
	ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 0);
	{
		ZSTD_outBuffer out = { two, 2 * objlen + 8, 0 };
		ZSTD_inBuffer in = { s, len, 0 };
		size_t r = ZSTD_compressStream2(cctx, &out, &in, ZSTD_e_end);

		CHECK(r == 0, "streaming compress: %zu", r);
		CHECK(cfs_obj_raw_size(two, out.pos) == -EUCLEAN, "unknown content size");
	}
	ZSTD_freeCCtx(cctx);

	printf("framing: NULL and empty input\n");
	CHECK(cfs_obj_raw_size(NULL, 0) == -EUCLEAN, "NULL object");
	CHECK(cfs_obj_raw_size("", 0) == -EUCLEAN, "empty object");

	printf("framing: encode into a short buffer is -ENOBUFS\n");
	cap = 4;
	n = cfs_obj_encode(two, cap, s, len, CFS_ZSTD_LEVEL_DEFAULT);
	CHECK(n == -ENOBUFS, "short encode buffer gave %zd", n);

	free(two);
	free(obj);
}

static void levels(const uint8_t *src, size_t len)
{
	static const int lv[] = { -5, 1, 3, 19, 3 };
	size_t objlen;

	/* Contexts are cached per thread: a level must not stick. */
	printf("levels: round trip at levels -5, 1, 3, 19, 3\n");
	for (size_t i = 0; i < sizeof(lv) / sizeof(lv[0]); i++) {
		uint8_t *obj = encode(src, len, lv[i], &objlen);
		uint8_t *dst = xmalloc(len);
		cfs_digest d;

		cfs_sha256(src, len, &d);
		CHECK(cfs_obj_decode(dst, len, obj, objlen, &d) == (ssize_t)len &&
		      !memcmp(dst, src, len), "level %d", lv[i]);
		free(dst);
		free(obj);
	}
}

int main(void)
{
	size_t mib = 1 << 20;
	uint8_t *rand1m = xmalloc(mib), *zeros = calloc(1, 4 * mib), *text = xmalloc(300000);

	if (!zeros)
		return 1;
	for (size_t i = 0; i < mib; i += 8) {
		uint64_t v = rnd();
		memcpy(rand1m + i, &v, 8);
	}
	/* Compressible but varied, long enough for several blocks. */
	for (size_t i = 0; i < 300000; i++)
		text[i] = (uint8_t)("abcdefgh"[rnd() & 7] + (i / 4096 % 3));

	round_trip("empty", "", 0);
	round_trip("small", "hello, world\n", 13);
	round_trip("1 MiB random", rand1m, mib);
	round_trip("4 MiB zeros", zeros, 4 * mib);
	round_trip("300 kB text", text, 300000);

	framing();
	levels(text, 300000);
	hostile("small text", text, 2000, 0);
	hostile("300 kB text", text, 300000, 1000);
	hostile("64 KiB random", rand1m, 65536, 1000);

	free(text);
	free(zeros);
	free(rand1m);
	return cfs_test_done("test-codec");
}
