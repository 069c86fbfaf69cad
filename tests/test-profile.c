/* SPDX-License-Identifier: MIT */
/*
 * test-profile: the access-profile recorder on an index built with
 * cfs_builder (first reads recorded once, in order, with their paths and
 * chunks; odd names escaped and round-tripped; hard links; concurrent
 * readers; the bound and the window of a learned run), the parser's
 * refusals of malformed input, and the merge (bounded, filtered too).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "builder.h"
#include "format.h"
#include "index.h"
#include "layer.h"
#include "origin.h"
#include "profile.h"
#include "util.h"
#include "test.h"

#define CHUNK 65536u
#define ODD_NAME "odd name\\\n\x01\xc3\xa9"
#define ODD_NAME_ESC "odd\\x20name\\x5c\\x0a\\x01\\xc3\\xa9"

static char dir[256];

static void dig(cfs_digest *d, unsigned v)
{
	memset(d, 0, sizeof(*d));
	d->b[0] = (uint8_t)v;
	d->b[31] = (uint8_t)(v >> 8);
	d->b[5] = 0xab;
}

static struct cfs_attr reg(uint64_t size)
{
	return (struct cfs_attr){ .mode = S_IFREG | 0644, .size = size };
}

/*
 * /a           1 chunk (chunk A), 1000 bytes
 * /d/big       3 extents: 0..64K chunk B, 64K..128K hole, 128K..192K chunk C
 * /d/ODD_NAME  chunk A again (dedup: the chunk is one entry)
 * /d/link      a hard link to /a
 * /e/f/g       chunk D
 */
static struct cfs_index *build(cfs_digest ref[1])
{
	struct cfs_builder *b;
	struct cfs_index *idx = NULL;
	struct cfs_attr a;
	uint32_t na, nbig, nodd, ng, cA, cB, cC, cA2, cD;
	cfs_digest d;
	void *buf;
	size_t len;

	if (cfs_builder_new(CHUNK, &b) < 0)
		return NULL;
	a = reg(1000);
	CHECK_EQ(cfs_builder_add_path(b, "a", &a, &na), 0);
	a = reg(3 * CHUNK);
	CHECK_EQ(cfs_builder_add_path(b, "d/big", &a, &nbig), 0);
	a = reg(500);
	CHECK_EQ(cfs_builder_add_path(b, "d/" ODD_NAME, &a, &nodd), 0);
	CHECK_EQ(cfs_builder_link_path(b, "d/link", "a"), 0);
	a = reg(10);
	CHECK_EQ(cfs_builder_add_path(b, "e/f/g", &a, &ng), 0);
	CHECK_EQ(cfs_builder_chunk_new(b, &cA), 0);
	CHECK_EQ(cfs_builder_chunk_new(b, &cB), 0);
	CHECK_EQ(cfs_builder_chunk_new(b, &cC), 0);
	CHECK_EQ(cfs_builder_chunk_new(b, &cA2), 0);
	CHECK_EQ(cfs_builder_chunk_new(b, &cD), 0);
	CHECK_EQ(cfs_builder_add_extent(b, na, 0, 1000, cA, 0), 0);
	CHECK_EQ(cfs_builder_add_extent(b, nbig, 0, CHUNK, cB, 0), 0);
	CHECK_EQ(cfs_builder_add_extent(b, nbig, 2 * CHUNK, CHUNK, cC, 0), 0);
	CHECK_EQ(cfs_builder_add_extent(b, nodd, 0, 500, cA2, 0), 0);
	CHECK_EQ(cfs_builder_add_extent(b, ng, 0, 10, cD, 0), 0);
	dig(&d, 'A');
	CHECK_EQ(cfs_builder_chunk_set(b, cA, &d, 1000, 900), 0);
	CHECK_EQ(cfs_builder_chunk_set(b, cA2, &d, 1000, 900), 0);
	dig(&d, 'B');
	CHECK_EQ(cfs_builder_chunk_set(b, cB, &d, CHUNK, CHUNK), 0);
	dig(&d, 'C');
	CHECK_EQ(cfs_builder_chunk_set(b, cC, &d, CHUNK, CHUNK), 0);
	dig(&d, 'D');
	CHECK_EQ(cfs_builder_chunk_set(b, cD, &d, 10, 10), 0);
	if (cfs_builder_finish(b, &buf, &len, NULL) == 0) {
		cfs_sha256(buf, len, ref);
		if (cfs_index_open(buf, len, &idx) < 0)
			free(buf);
	}
	cfs_builder_free(b);
	CHECK(idx != NULL);
	return idx;
}

static uint64_t ino_of(const struct cfs_index *idx, const char *path)
{
	uint64_t ino = CFS_ROOT_INO;
	const char *p = path;

	while (*p == '/')
		p++;
	while (*p) {
		size_t n = strcspn(p, "/");

		if (cfs_index_lookup(idx, ino, p, n, &ino) < 0)
			return 0;
		p += n;
		while (*p == '/')
			p++;
	}
	return ino;
}

static char *slurp(const char *path)
{
	void *buf;
	size_t len;
	char *s;

	if (cfs_read_file_at(AT_FDCWD, path, 1 << 20, &buf, &len) < 0)
		return NULL;
	s = realloc(buf, len + 1);
	if (!s) {
		free(buf);
		return NULL;
	}
	s[len] = '\0';
	return s;
}

static void put_file(const char *path, const char *text, size_t len)
{
	FILE *f = fopen(path, "w");

	if (!f || fwrite(text, 1, len, f) != len || fclose(f) != 0) {
		perror(path);
		exit(1);
	}
}

static void test_record(void)
{
	struct cfs_recorder *r;
	struct cfs_profile *p = NULL;
	struct cfs_index *idx;
	cfs_digest ref, dA, dB, dC;
	char path[300], *text, refs[CFS_REF_STRLEN];
	uint64_t ia, ibig, iodd, ilink, ig;
	const struct cfs_profile_entry *e;

	idx = build(&ref);
	if (!idx)
		return;
	ia = ino_of(idx, "/a");
	ibig = ino_of(idx, "/d/big");
	iodd = ino_of(idx, "/d/" ODD_NAME);
	ilink = ino_of(idx, "/d/link");
	ig = ino_of(idx, "/e/f/g");
	CHECK(ia && ibig && iodd && ig);
	CHECK_EQ(ilink, ia);
	dig(&dA, 'A');
	dig(&dB, 'B');
	dig(&dC, 'C');

	CHECK_EQ(cfs_recorder_new(idx, &ref, &r), 0);
	snprintf(path, sizeof(path), "%s/p1", dir);
	/* An empty profile saves too. */
	CHECK_EQ(cfs_recorder_save(r, path), 0);
	CHECK_EQ(cfs_recorder_count(r), 0);

	cfs_recorder_note(r, ig, 0, 10);
	usleep(2000);
	cfs_recorder_note(r, ig, 0, 10);           /* nothing new */
	cfs_recorder_note(r, ibig, 1000, 3 * CHUNK); /* B, hole, C */
	cfs_recorder_note(r, ibig, 0, 10);         /* nothing new */
	cfs_recorder_note(r, ilink, 0, 100);       /* a, by its first name; chunk A */
	cfs_recorder_note(r, iodd, 0, 500);        /* the file only: A is seen */
	cfs_recorder_note(r, 0, 0, 1);             /* out of range: ignored */
	cfs_recorder_note(r, 9999, 0, 1);
	cfs_recorder_note(r, ino_of(idx, "/d"), 0, 1); /* a directory: ignored */
	CHECK_EQ(cfs_recorder_count(r), 8);
	CHECK_EQ(cfs_recorder_save(r, path), 0);
	cfs_recorder_free(r);
	cfs_recorder_free(NULL);

	text = slurp(path);
	CHECK(text != NULL);
	if (text) {
		cfs_digest_ref(&ref, refs);
		CHECK(!strncmp(text, "cfs-profile 1\nimage sha256:", 27), "header: %.40s", text);
		CHECK(strstr(text, refs) != NULL);
		CHECK(strstr(text, " /d/" ODD_NAME_ESC "\n") != NULL, "escaped name in:\n%s", text);
		free(text);
	}
	CHECK_EQ(cfs_profile_load(path, &p), 0);
	if (!p)
		goto out;
	CHECK_EQ(cfs_profile_count(p), 8);
	if (cfs_profile_count(p) == 8) {
		struct {
			char kind;
			const char *path;
			const cfs_digest *d;
			uint64_t off;
		} want[] = {
			{ 'f', "/e/f/g", NULL, 0 },
			{ 'c', "/e/f/g", NULL, 0 },
			{ 'f', "/d/big", NULL, 0 },
			{ 'c', "/d/big", &dB, 1000 },
			{ 'c', "/d/big", &dC, 2 * CHUNK },
			{ 'f', "/a", NULL, 0 },
			{ 'c', "/a", &dA, 0 },
			{ 'f', "/d/" ODD_NAME, NULL, 0 },
		};
		uint64_t prev = 0;

		for (size_t i = 0; i < CFS_ARRAY_SIZE(want); i++) {
			e = cfs_profile_entry(p, i);
			CHECK(e->kind == want[i].kind, "entry %zu kind %c", i, e->kind);
			CHECK(e->path_len == strlen(want[i].path) && !strcmp(e->path, want[i].path),
			      "entry %zu path '%s', want '%s'", i, e->path, want[i].path);
			if (want[i].d)
				CHECK(cfs_digest_eq(&e->digest, want[i].d), "entry %zu digest", i);
			if (e->kind == 'c')
				CHECK_EQ(e->offset, want[i].off);
			CHECK(e->usec >= prev, "entry %zu goes back in time", i);
			prev = e->usec;
		}
		CHECK(cfs_profile_entry(p, 2)->usec >= 2000, "the sleep is not in the times");
		CHECK(cfs_profile_entry(p, 8) == NULL);
	}
	cfs_profile_free(p);
out:
	cfs_index_free(idx);
}

/* Threads noting the same ranges: each file and chunk recorded once. */
struct race {
	struct cfs_recorder *r;
	uint64_t ino[4];
	pthread_barrier_t *bar;
};

static void *race_main(void *arg)
{
	struct race *x = arg;

	pthread_barrier_wait(x->bar);
	for (int k = 0; k < 2000; k++)
		for (int i = 0; i < 4; i++)
			cfs_recorder_note(x->r, x->ino[i], (uint64_t)(k % 3) * CHUNK, 3 * CHUNK);
	return NULL;
}

static void test_concurrent(void)
{
	struct cfs_profile *p = NULL;
	struct cfs_index *idx;
	pthread_barrier_t bar;
	pthread_t t[8];
	struct race x;
	char path[300];
	cfs_digest ref;
	size_t files = 0, chunks = 0;

	idx = build(&ref);
	if (!idx)
		return;
	CHECK_EQ(cfs_recorder_new(idx, &ref, &x.r), 0);
	x.ino[0] = ino_of(idx, "/a");
	x.ino[1] = ino_of(idx, "/d/big");
	x.ino[2] = ino_of(idx, "/d/" ODD_NAME);
	x.ino[3] = ino_of(idx, "/e/f/g");
	x.bar = &bar;
	pthread_barrier_init(&bar, NULL, 8);
	for (int i = 0; i < 8; i++)
		CHECK_EQ(pthread_create(&t[i], NULL, race_main, &x), 0);
	snprintf(path, sizeof(path), "%s/race", dir);
	/* Saves while the threads note. */
	for (int i = 0; i < 20; i++)
		CHECK_EQ(cfs_recorder_save(x.r, path), 0);
	for (int i = 0; i < 8; i++)
		pthread_join(t[i], NULL);
	pthread_barrier_destroy(&bar);
	CHECK_EQ(cfs_recorder_save(x.r, path), 0);
	CHECK_EQ(cfs_profile_load(path, &p), 0);
	for (size_t i = 0; i < cfs_profile_count(p); i++) {
		if (cfs_profile_entry(p, i)->kind == 'f')
			files++;
		else
			chunks++;
	}
	CHECK_EQ(files, 4);
	CHECK_EQ(chunks, 4); /* A, B, C, D */
	cfs_profile_free(p);
	cfs_recorder_free(x.r);
	cfs_index_free(idx);
}

static int load_text(const char *text, size_t len, struct cfs_profile **p)
{
	char path[300];

	snprintf(path, sizeof(path), "%s/in", dir);
	put_file(path, text, len);
	*p = NULL;
	return cfs_profile_load(path, p);
}

static void test_malformed(void)
{
	static const char *const bad[] = {
		"",
		"cfs-profile\n",
		"cfs-profile 2\nf 1 /a\n",
		"cfs-profile 01\n",
		"CFS-PROFILE 1\n",
		"f 1 /a\n",
		"cfs-profile 1\nf 1 a\n",            /* relative */
		"cfs-profile 1\nf 1 /a b\n",         /* 4 fields */
		"cfs-profile 1\nf 1 /a\\x4\n",       /* short escape */
		"cfs-profile 1\nf 1 /a\\xzz\n",
		"cfs-profile 1\nf 1 /a\\n\n",
		"cfs-profile 1\nf 1 /a\\x00b\n",     /* NUL */
		"cfs-profile 1\nf 1 /a\tb\n",        /* unescaped byte */
		"cfs-profile 1\nf 1 /\xc3\xa9\n",
		"cfs-profile 1\nf -1 /a\n",
		"cfs-profile 1\nf +1 /a\n",
		"cfs-profile 1\nf 01 /a\n",
		"cfs-profile 1\nf 18446744073709551616 /a\n",
		"cfs-profile 1\nf 1x /a\n",
		"cfs-profile 1\nf  1 /a\n",          /* double space */
		"cfs-profile 1\nc 1 0123 /a 0\n",    /* short digest */
		"cfs-profile 1\nc 1 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdeg /a 0\n",
		"cfs-profile 1\nc 1 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef /a\n",
		"cfs-profile 1\nc 1 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef /a x\n",
		"cfs-profile 1\nimage sha256:00\n",
		"cfs-profile 1\nimage 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n",
		"cfs-profile 1\nimage sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n"
		"image sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n",
	};
	struct cfs_profile *p;
	char *big;
	size_t n;

	for (size_t i = 0; i < CFS_ARRAY_SIZE(bad); i++) {
		CHECK(load_text(bad[i], strlen(bad[i]), &p) == -EINVAL, "accepted bad[%zu]: %s", i,
		      bad[i]);
		CHECK(p == NULL);
		cfs_profile_free(p);
	}
	/* A NUL byte. */
	CHECK_EQ(load_text("cfs-profile 1\nf 1 /a\0b\n", 23, &p), -EINVAL);
	/* A huge line. */
	n = 200000;
	big = malloc(n + 32);
	if (big) {
		memcpy(big, "cfs-profile 1\nf 1 /", 19);
		memset(big + 19, 'x', n);
		big[19 + n] = '\n';
		CHECK_EQ(load_text(big, 20 + n, &p), -EINVAL);
		free(big);
	}
	CHECK_EQ(cfs_profile_load("/nonexistent/profile", &p), -ENOENT);

	/* Good: unknown kinds and blank lines skipped, no trailing newline,
	 * upper-case hex, escapes of every byte class. */
	{
		char text[1024];
		const struct cfs_profile_entry *e;

		snprintf(text, sizeof(text),
			 "cfs-profile 1\n\nx what ever\nf 0 /a\\x20b\\x5cc\\xC3\\xA9\n"
			 "c 18446744073709551615 %s /a 12", "0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef");
		CHECK_EQ(load_text(text, strlen(text), &p), 0);
		CHECK_EQ(cfs_profile_count(p), 2);
		if (cfs_profile_count(p) == 2) {
			e = cfs_profile_entry(p, 0);
			CHECK(e->path_len == 8 && !memcmp(e->path, "/a b\\c\xc3\xa9", 9));
			e = cfs_profile_entry(p, 1);
			CHECK_EQ(e->kind, 'c');
			CHECK(e->usec == UINT64_MAX);
			CHECK_EQ(e->offset, 12);
			CHECK_EQ(e->digest.b[0], 0x01);
			CHECK_EQ(e->digest.b[31], 0xef);
		}
		cfs_profile_free(p);
		CHECK_EQ(cfs_profile_load_buf(text, strlen(text), "buf", &p), 0);
		CHECK_EQ(cfs_profile_count(p), 2);
		cfs_profile_free(p);
		CHECK_EQ(cfs_profile_load_buf(text, 0, "buf", &p), -EINVAL);
	}
}

static struct cfs_profile *parse(const char *text)
{
	struct cfs_profile *p = NULL;

	CHECK_EQ(cfs_profile_load_buf(text, strlen(text), "merge-input", &p), 0);
	return p;
}

static bool drop_x(const struct cfs_profile_entry *e, void *arg)
{
	(void)arg;
	return !(e->kind == 'f' && !strcmp(e->path, "/x"));
}

static void test_merge(void)
{
	const char *a =
		"cfs-profile 1\n"
		"image sha256:1111111111111111111111111111111111111111111111111111111111111111\n"
		"f 10 /x\n"
		"c 11 aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa /x 0\n"
		"f 30 /y\\x20z\n"
		"c 31 bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb /y\\x20z 0\n";
	const char *b =
		"cfs-profile 1\n"
		"image sha256:2222222222222222222222222222222222222222222222222222222222222222\n"
		"f 5 /w\n"
		"f 10 /y\\x20z\n"
		"c 20 bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb /y\\x20z 65536\n"
		"f 40 /x\n";
	const char *want =
		"cfs-profile 1\n"
		"image sha256:1111111111111111111111111111111111111111111111111111111111111111\n"
		"f 5 /w\n"
		"f 10 /x\n"
		"f 10 /y\\x20z\n"
		"c 11 aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa /x 0\n"
		"c 20 bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb /y\\x20z 65536\n";
	struct cfs_profile *in[2] = { parse(a), parse(b) };
	char *buf = NULL;
	size_t len = 0;
	FILE *f;

	f = open_memstream(&buf, &len);
	CHECK(f != NULL);
	if (!f || !in[0] || !in[1])
		goto out;
	CHECK_EQ(cfs_profile_merge(in, 2, f), 0);
	fclose(f);
	CHECK(buf && !strcmp(buf, want), "merged:\n%s", buf ? buf : "(null)");
	free(buf);

	/* Merging a profile with itself changes nothing; none gives a header. */
	f = open_memstream(&buf, &len);
	CHECK_EQ(cfs_profile_merge(in, 1, f), 0);
	fclose(f);
	CHECK(buf && !strcmp(buf, a), "self-merge:\n%s", buf ? buf : "(null)");
	free(buf);
	f = open_memstream(&buf, &len);
	CHECK_EQ(cfs_profile_merge(in, 0, f), 0);
	fclose(f);
	CHECK(buf && !strcmp(buf, "cfs-profile 1\n"));
	free(buf);
	/* Bounded: the earliest 3 records only; keep drops /x's file record
	 * (and sees each record once, its earliest). */
	f = open_memstream(&buf, &len);
	CHECK_EQ(cfs_profile_merge_max(in, 2, 3, drop_x, NULL, f), 3);
	fclose(f);
	CHECK(buf && !strcmp(buf, "cfs-profile 1\n"
			      "image sha256:1111111111111111111111111111111111111111111111111111111111111111\n"
			      "f 5 /w\n"
			      "f 10 /y\\x20z\n"
			      "c 11 aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa /x 0\n"),
	      "bounded merge:\n%s", buf ? buf : "(null)");
	free(buf);
out:
	cfs_profile_free(in[0]);
	cfs_profile_free(in[1]);
}

/* The recorder's bound and the window of cfs_recorder_write(). */
static void test_limit(void)
{
	struct cfs_recorder *r;
	struct cfs_profile *p = NULL;
	struct cfs_index *idx;
	cfs_digest ref;
	char *buf = NULL;
	size_t len = 0;
	FILE *f;

	idx = build(&ref);
	if (!idx)
		return;
	CHECK_EQ(cfs_recorder_new(idx, &ref, &r), 0);
	cfs_recorder_limit(r, 3);
	usleep(2000); /* every record after the first millisecond */
	cfs_recorder_note(r, ino_of(idx, "/e/f/g"), 0, 10);          /* f, c */
	cfs_recorder_note(r, ino_of(idx, "/d/big"), 1000, 3 * CHUNK); /* f; then full */
	cfs_recorder_note(r, ino_of(idx, "/a"), 0, 10);
	CHECK_EQ(cfs_recorder_count(r), 3);
	/* The first 2 records only, and a window that takes them all. */
	f = open_memstream(&buf, &len);
	CHECK_EQ(cfs_recorder_write(r, f, 2, UINT64_MAX), 0);
	fclose(f);
	CHECK_EQ(cfs_profile_load_buf(buf, len, "limited", &p), 0);
	CHECK_EQ(cfs_profile_count(p), 2);
	cfs_profile_free(p);
	free(buf);
	/* A window that ends before anything: a header alone. */
	f = open_memstream(&buf, &len);
	CHECK_EQ(cfs_recorder_write(r, f, SIZE_MAX, 1000), 0);
	fclose(f);
	CHECK(buf && !strstr(buf, "\nf ") && !strstr(buf, "\nc "), "window of 1 ms:\n%s", buf);
	free(buf);
	/* Stopped: nothing more is noted. */
	cfs_recorder_limit(r, 0);
	cfs_recorder_note(r, ino_of(idx, "/d/" ODD_NAME), 0, 10);
	CHECK_EQ(cfs_recorder_count(r), 3);
	cfs_recorder_free(r);
	cfs_index_free(idx);
}

/* Origins share the profile's escaping: a source with spaces, a newline
 * and a backslash comes back whole, on one line. */
#define HEX64 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static void test_origin(void)
{
	static const char *const bad[] = {
		"",
		"cfs-origin 2\nsource x\nmanifest sha256:" HEX64 "\n",
		"cfs-origin 1\nsource x\n",                              /* no manifest */
		"cfs-origin 1\nmanifest sha256:" HEX64 "\n",             /* no source */
		"cfs-origin 1\nsource a b\nmanifest sha256:" HEX64 "\n", /* unescaped space */
		"cfs-origin 1\nsource a\\x0\nmanifest sha256:" HEX64 "\n",
		"cfs-origin 1\nsource x\nmanifest sha256:12\n",
		"cfs-origin 1\nsource x\nmanifest sha256:" HEX64 "\nmanifest sha256:" HEX64 "\n",
		"cfs-origin 1\nsource x\nmanifest sha256:" HEX64,         /* cut short */
	};
	cfs_digest layers[2];
	struct cfs_origin o = { .has_top = true, .layers = layers, .nlayers = 2 }, back;
	char *buf;
	size_t len;

	snprintf(o.source, sizeof(o.source), "oci:/a dir/x\\y\nz:1");
	memset(&o.manifest, 0xab, sizeof(o.manifest));
	memset(&o.top, 0xcd, sizeof(o.top));
	memset(&layers[0], 0x01, sizeof(layers[0]));
	memset(&layers[1], 0x02, sizeof(layers[1]));
	CHECK_EQ(cfs_origin_format(&o, &buf, &len), 0);
	CHECK(memchr(buf, '\n', len) && !strstr(buf, "a dir"), "source not escaped: %s", buf);
	CHECK_EQ(cfs_origin_parse(buf, len, &back), 0);
	CHECK(!strcmp(back.source, o.source), "source %s, want %s", back.source, o.source);
	CHECK(cfs_digest_eq(&back.manifest, &o.manifest) && back.has_top &&
	      cfs_digest_eq(&back.top, &o.top), "digests changed");
	CHECK(back.nlayers == 2 && cfs_digest_eq(&back.layers[0], &layers[0]) &&
	      cfs_digest_eq(&back.layers[1], &layers[1]), "layers changed");
	cfs_origin_release(&back);
	/* Unknown lines are skipped. */
	buf = realloc(buf, len + 16);
	CHECK(buf, "out of memory");
	memcpy(buf + len, "future x y\n", 11);
	CHECK_EQ(cfs_origin_parse(buf, len + 11, &back), 0);
	cfs_origin_release(&back);
	free(buf);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK(cfs_origin_parse(bad[i], strlen(bad[i]), &back) == -EINVAL, "bad[%zu] accepted", i);
}

/* Layer records: every field given once, and back unchanged. */
#define LREC(img, extra) "cfs-layer 1\nimage sha256:" img "\ndiff_id sha256:" HEX64 \
	"\ndiff_size 3584\nsize 189\ncompression gzip\n" extra

static void test_layer_rec(void)
{
	static const char *const bad[] = {
		"",
		"cfs-layer 2\nimage sha256:" HEX64 "\n",
		LREC("12", ""),                               /* short digest */
		LREC(HEX64, "size 7\n"),                      /* repeated */
		"cfs-layer 1\nimage sha256:" HEX64 "\ndiff_id sha256:" HEX64
		"\ndiff_size 1\nsize 1\n",                     /* no compression */
		"cfs-layer 1\nimage sha256:" HEX64 "\ndiff_id sha256:" HEX64
		"\ndiff_size 01\nsize 1\ncompression none\n",  /* leading zero */
		"cfs-layer 1\nimage sha256:" HEX64 "\ndiff_id sha256:" HEX64
		"\ndiff_size 18446744073709551616\nsize 1\ncompression none\n",
		"cfs-layer 1\nimage sha256:" HEX64 "\ndiff_id sha256:" HEX64
		"\ndiff_size 1\nsize 1\ncompression xz\n",
		"cfs-layer 1\nimage sha256:" HEX64 "\ndiff_id sha256:" HEX64
		"\ndiff_size 1\nsize 1\ncompression none",      /* cut short */
	};
	struct cfs_layer_rec r = { .diff_size = 1ull << 40, .size = 0, .comp = CFS_LAYER_ZSTD }, back;
	const char *good = LREC(HEX64, "future x y\n");
	char *buf;
	size_t len;

	memset(&r.image, 0x12, sizeof(r.image));
	memset(&r.diff_id, 0x34, sizeof(r.diff_id));
	CHECK_EQ(cfs_layer_rec_format(&r, &buf, &len), 0);
	CHECK_EQ(cfs_layer_rec_parse(buf, len, &back), 0);
	CHECK(cfs_digest_eq(&back.image, &r.image) && cfs_digest_eq(&back.diff_id, &r.diff_id) &&
	      back.diff_size == r.diff_size && back.size == 0 && back.comp == CFS_LAYER_ZSTD,
	      "record changed: %s", buf);
	free(buf);
	CHECK_EQ(cfs_layer_rec_parse(good, strlen(good), &back), 0);
	CHECK(back.diff_size == 3584 && back.size == 189 && back.comp == CFS_LAYER_GZIP,
	      "fields of %s", good);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK(cfs_layer_rec_parse(bad[i], strlen(bad[i]), &back) == -EINVAL,
		      "bad[%zu] accepted", i);
}

int main(void)
{
	cfs_log_setup("test-profile", CFS_LOG_ERR, NULL);
	cfs_test_mkdtemp(dir, sizeof(dir), "profile");
	test_record();
	test_concurrent();
	test_malformed();
	test_merge();
	test_limit();
	test_origin();
	test_layer_rec();
	cfs_test_rmtree(dir);
	return cfs_test_done("test-profile");
}
