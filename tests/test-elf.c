/* SPDX-License-Identifier: MIT */
/*
 * test-elf: the ELF reader (lib/format/elf.c) on this very program (its
 * interpreter and libc), on every prefix and on corrupted copies of it,
 * the one-pass scanner over the same bytes fed in odd pieces, and the
 * hints a packed tree gets (lib/format/builder_hints.c): needed names
 * found through $ORIGIN run paths, system directories and symlinks, the
 * closure, a missing library only counted.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "builder.h"
#include "chunker.h"
#include "digest.h"
#include "elf.h"
#include "index.h"
#include "util.h"

#include "test.h"

static bool str_is(const struct cfs_elf_str *s, const char *want)
{
	return s->len == strlen(want) && !memcmp(s->s, want, s->len);
}

static int parse_buf(const void *p, size_t len, struct cfs_elf_deps *d)
{
	struct cfs_elf_part part = { 0, p, len };

	return cfs_elf_parse(&part, 1, d);
}

static bool needs(const struct cfs_elf_deps *d, const char *name)
{
	for (uint32_t i = 0; i < d->nneeded; i++)
		if (str_is(&d->needed[i], name))
			return true;
	return false;
}

/* Scans buf in pieces of step bytes with a head of head_max. */
static int scan(const uint8_t *buf, size_t len, size_t step, size_t head_max,
		struct cfs_elf_scan **s, struct cfs_elf_deps *d)
{
	if (!*s && cfs_elf_scan_new(head_max, s))
		return -ENOMEM;
	cfs_elf_scan_begin(*s, len);
	for (size_t off = 0; off < len; off += step)
		cfs_elf_scan_data(*s, off, buf + off, CFS_MIN(step, len - off));
	return cfs_elf_scan_end(*s, d);
}

static void test_self(void)
{
	struct cfs_elf_scan *s = NULL;
	struct cfs_elf_deps d, e;
	uint8_t *buf, *copy;
	size_t len;
	uint64_t seed = 42;
	int r;

	CHECK_EQ(cfs_read_file_at(AT_FDCWD, "/proc/self/exe", 64u << 20, (void **)&buf, &len), 0);
	if (failures)
		return;
	CHECK_EQ(parse_buf(buf, len, &d), 0);
	CHECK(needs(&d, "libc.so.6"), "no libc.so.6 among %u needed", d.nneeded);
#if defined(__x86_64__)
	CHECK(d.machine == CFS_ELF_EM_X86_64);
	CHECK(str_is(&d.interp, "/lib64/ld-linux-x86-64.so.2"), "interp %.*s", (int)d.interp.len,
	      d.interp.s);
#elif defined(__aarch64__)
	CHECK(d.machine == CFS_ELF_EM_AARCH64);
	CHECK(str_is(&d.interp, "/lib/ld-linux-aarch64.so.1"));
#endif

	/* The scanner finds the same, in any piece size. */
	for (size_t step = 1; step <= 65536; step = step * 7 + 3) {
		CHECK_EQ(scan(buf, len, step, 8u << 20, &s, &e), 0);
		CHECK(e.nneeded == d.nneeded && e.interp.len == d.interp.len);
	}
	cfs_elf_scan_free(s);
	s = NULL;
	/* A head too short for the string table: unreadable, not wrong. */
	r = scan(buf, len, 4096, 4096, &s, &e);
	CHECK(r == 0 || r == -EINVAL, "r %d", r);
	cfs_elf_scan_free(s);
	s = NULL;
	/* Not an ELF: nothing kept. */
	CHECK_EQ(scan((const uint8_t *)"#!/bin/sh\n", 10, 3, 4096, &s, &e), -ENOEXEC);
	cfs_elf_scan_free(s);

	/* Every prefix: -ENOEXEC without the ELF header, never a crash; the
	 * whole headers once the prefix holds them. */
	copy = malloc(len);
	CHECK(copy != NULL);
	if (!copy)
		goto out;
	for (size_t n = 0; n < len; n += n < 4096 ? 1 : 509) {
		memcpy(copy, buf, n);
		r = parse_buf(copy, n, &e);
		if (n < 64)
			CHECK_EQ(r, -ENOEXEC);
		else
			CHECK(r == 0 || r == -EINVAL, "prefix %zu: %d", n, r);
	}
	/* Corrupt copies: one byte of the headers flipped, then random bytes
	 * anywhere; only 0, -EINVAL or -ENOEXEC (ASan sees the reads). */
	for (size_t i = 0; i < CFS_MIN(len, (size_t)8192); i++) {
		memcpy(copy, buf, len);
		copy[i] ^= 0xff;
		r = parse_buf(copy, len, &e);
		CHECK(r == 0 || r == -EINVAL || r == -ENOEXEC, "byte %zu: %d", i, r);
	}
	for (int round = 0; round < 2000; round++) {
		memcpy(copy, buf, len);
		for (int k = 0; k < 8; k++) {
			seed = seed * 6364136223846793005ull + 1442695040888963407ull;
			copy[(seed >> 33) % CFS_MIN(len, (size_t)65536)] = (uint8_t)(seed >> 17);
		}
		r = parse_buf(copy, len, &e);
		CHECK(r == 0 || r == -EINVAL || r == -ENOEXEC, "round %d: %d", round, r);
	}
	/* A 32-bit or big-endian ELF is not read. */
	memcpy(copy, buf, len);
	copy[4] = 1;
	CHECK_EQ(parse_buf(copy, len, &e), -ENOEXEC);
	copy[4] = 2;
	copy[5] = 2;
	CHECK_EQ(parse_buf(copy, len, &e), -ENOEXEC);
	free(copy);
out:
	free(buf);
}

static void put16(uint8_t *p, uint16_t v) { v = htole16(v); memcpy(p, &v, 2); }
static void put32(uint8_t *p, uint32_t v) { v = htole32(v); memcpy(p, &v, 4); }
static void put64(uint8_t *p, uint64_t v) { v = htole64(v); memcpy(p, &v, 8); }

#define MK_SIZE 2048u

/* A minimal x86_64 shared object: one PT_LOAD over the file, PT_INTERP
 * (interp not NULL) at 256, strings at 512, PT_DYNAMIC at 1024. */
static void mk_elf(uint8_t *b, const char *interp, const char *runpath, const char *const *needed)
{
	uint8_t *ph = b + 64, *dyn = b + 1024;
	uint32_t str = 1;

	memset(b, 0, MK_SIZE);
	memcpy(b, "\177ELF\2\1\1", 7);
	put16(b + 16, 3);
	put16(b + 18, CFS_ELF_EM_X86_64);
	put32(b + 20, 1);
	put64(b + 32, 64);
	put16(b + 52, 64);
	put16(b + 54, 56);
	put16(b + 56, interp ? 3 : 2);
	put32(ph, 1); /* PT_LOAD */
	put64(ph + 32, MK_SIZE);
	put32(ph + 56, 2); /* PT_DYNAMIC */
	put64(ph + 56 + 8, 1024);
	put64(ph + 56 + 16, 1024);
	put64(ph + 56 + 32, 1024);
	if (interp) {
		put32(ph + 112, 3);
		put64(ph + 112 + 8, 256);
		put64(ph + 112 + 32, strlen(interp) + 1);
		memcpy(b + 256, interp, strlen(interp));
	}
	for (; needed && *needed; needed++, dyn += 16) {
		put64(dyn, 1);
		put64(dyn + 8, str);
		memcpy(b + 512 + str, *needed, strlen(*needed));
		str += (uint32_t)strlen(*needed) + 1;
	}
	if (runpath) {
		put64(dyn, 29);
		put64(dyn + 8, str);
		memcpy(b + 512 + str, runpath, strlen(runpath));
		str += (uint32_t)strlen(runpath) + 1;
		dyn += 16;
	}
	put64(dyn, 5);
	put64(dyn + 8, 512);
	put64(dyn + 16, 10);
	put64(dyn + 24, str);
}

static void test_synthetic(void)
{
	static const char *const needed[] = { "libfoo.so.1", "libbar.so.3", NULL };
	uint8_t b[MK_SIZE];
	struct cfs_elf_deps d;

	mk_elf(b, "/lib64/ld.so", "$ORIGIN/../lib:/opt", needed);
	CHECK_EQ(parse_buf(b, sizeof(b), &d), 0);
	CHECK(str_is(&d.interp, "/lib64/ld.so") && str_is(&d.runpath, "$ORIGIN/../lib:/opt"));
	CHECK(d.nneeded == 2 && str_is(&d.needed[0], "libfoo.so.1") &&
	      str_is(&d.needed[1], "libbar.so.3"));
	/* The string table split across two parts: a string must lie in one. */
	{
		struct cfs_elf_part parts[2] = { { 0, b, 514 }, { 514, b + 514, sizeof(b) - 514 } };

		CHECK_EQ(cfs_elf_parse(parts, 2, &d), -EINVAL);
		parts[0].len = 513;
		parts[1] = (struct cfs_elf_part){ 513, b + 513, sizeof(b) - 513 };
		CHECK_EQ(cfs_elf_parse(parts, 2, &d), 0);
	}
	/* The string table's size cuts the last string: refused. */
	put64(b + 1024 + 16 * 3 + 24, 12);
	CHECK_EQ(parse_buf(b, sizeof(b), &d), -EINVAL);
	/* DT_STRTAB outside every PT_LOAD. */
	mk_elf(b, NULL, NULL, needed);
	put64(b + 1024 + 16 * 2 + 8, MK_SIZE + 10);
	CHECK_EQ(parse_buf(b, sizeof(b), &d), -EINVAL);
	/* An interpreter without its NUL. */
	mk_elf(b, "/ld", NULL, NULL);
	put64(b + 64 + 112 + 32, 3);
	CHECK_EQ(parse_buf(b, sizeof(b), &d), -EINVAL);
	/* Program headers past the bytes. */
	mk_elf(b, NULL, NULL, needed);
	put64(b + 32, MK_SIZE - 100);
	CHECK_EQ(parse_buf(b, sizeof(b), &d), -EINVAL);
}

/* ---- hints from a packed tree ---- */

struct tree {
	struct cfs_builder *b;
	struct cfs_chunker *c;
};

static int emit(void *ctx, uint32_t chunk, void *data, size_t len)
{
	struct tree *t = ctx;
	cfs_digest d;
	int r;

	cfs_sha256(data, len, &d);
	r = cfs_builder_chunk_set(t->b, chunk, &d, (uint32_t)len, (uint32_t)len);
	free(data);
	return r;
}

static void add_file(struct tree *t, const char *path, const void *data, size_t len)
{
	struct cfs_attr a = { .mode = S_IFREG | 0755, .size = len };
	uint32_t node;

	CHECK_EQ(cfs_builder_add_path(t->b, path, &a, &node), 0);
	CHECK_EQ(cfs_chunker_file_begin(t->c, node, len), 0);
	CHECK_EQ(cfs_chunker_file_data(t->c, 0, data, len), 0);
	CHECK_EQ(cfs_chunker_file_end(t->c), 0);
}

static void add_link(struct tree *t, const char *path, const char *target)
{
	struct cfs_attr a = { .mode = S_IFLNK | 0777 };
	uint32_t node;

	CHECK_EQ(cfs_builder_add_path(t->b, path, &a, &node), 0);
	CHECK_EQ(cfs_builder_set_symlink(t->b, node, target, strlen(target)), 0);
}

static uint64_t ino_of(const struct cfs_index *idx, const char *path)
{
	uint64_t ino = 0;

	CHECK_EQ(cfs_index_lookup_path(idx, path, &ino), 0);
	return ino;
}

/* The hints of path, as "ino ino ..." compared with the inodes of want. */
static void check_hints(const struct cfs_index *idx, const char *path, const char *const *want)
{
	uint64_t ino = ino_of(idx, path), got[16], exp[16];
	uint32_t first, n = cfs_index_hints(idx, ino, &first), k = 0;

	for (; want[k]; k++)
		exp[k] = ino_of(idx, want[k]);
	CHECK(n == k, "%s: %u hints, want %u", path, n, k);
	for (uint32_t i = 0; i < n && i < 16; i++)
		got[i] = cfs_index_hint(idx, first + i);
	/* Both in inode order: the want lists are given in path order, which
	 * depth-first numbering keeps. */
	for (uint32_t i = 0; i < n && i < k; i++)
		CHECK(got[i] == exp[i], "%s: hint %u is inode %llu, want %s (%llu)", path, i,
		      (unsigned long long)got[i], want[i], (unsigned long long)exp[i]);
}

static void test_tree(void)
{
	static const char *const prog_needs[] = { "libfoo.so.1", "libmissing.so", NULL };
	static const char *const foo_needs[] = { "libbar.so.3", NULL };
	static const char *const bar_needs[] = { "libc.so.6", "/opt/abs/libabs.so", NULL };
	struct cfs_chunker_opts co = { 0 };
	struct cfs_builder_stats st;
	struct tree t = { 0 };
	struct cfs_index *idx;
	uint8_t elf[MK_SIZE];
	void *buf;
	size_t len;

	CHECK_EQ(cfs_builder_new(0, &t.b), 0);
	CHECK_EQ(cfs_chunker_new(&co, t.b, emit, &t, &t.c), 0);
	if (failures)
		return;
	mk_elf(elf, "/lib64/ld.so", "$ORIGIN/../lib", prog_needs);
	add_file(&t, "app/bin/prog", elf, sizeof(elf));
	mk_elf(elf, NULL, NULL, foo_needs);
	add_file(&t, "app/lib/libfoo.so.1.2", elf, sizeof(elf));
	add_link(&t, "app/lib/libfoo.so.1", "libfoo.so.1.2");
	mk_elf(elf, NULL, NULL, bar_needs);
	add_file(&t, "usr/lib/x86_64-linux-gnu/libbar.so.3", elf, sizeof(elf));
	add_file(&t, "usr/lib/x86_64-linux-gnu/libc.so.6", "not an ELF", 10);
	add_file(&t, "usr/lib/ld.so", "loader", 6);
	add_file(&t, "opt/abs/libabs.so", "abs", 3);
	/* Merged /usr: /lib is a symlink, and /lib64/ld.so one into it. */
	add_link(&t, "lib", "usr/lib");
	add_link(&t, "lib64/ld.so", "../lib/ld.so");
	CHECK_EQ(cfs_chunker_flush(t.c), 0);
	CHECK_EQ(cfs_builder_finish(t.b, &buf, &len, &st), 0);
	if (failures)
		goto out;
	CHECK(st.elf_files == 3 && st.hint_triggers == 3, "%llu ELF files, %llu triggers",
	      (unsigned long long)st.elf_files, (unsigned long long)st.hint_triggers);
	CHECK(st.elf_unresolved == 1, "%llu unresolved", (unsigned long long)st.elf_unresolved);
	CHECK_EQ(cfs_index_open(buf, len, &idx), 0);
	if (failures) {
		free(buf);
		goto out;
	}
	check_hints(idx, "app/bin/prog",
		    (const char *const[]){ "app/lib/libfoo.so.1.2", "opt/abs/libabs.so",
					   "usr/lib/ld.so", "usr/lib/x86_64-linux-gnu/libbar.so.3",
					   "usr/lib/x86_64-linux-gnu/libc.so.6", NULL });
	check_hints(idx, "app/lib/libfoo.so.1.2",
		    (const char *const[]){ "opt/abs/libabs.so", "usr/lib/x86_64-linux-gnu/libbar.so.3",
					   "usr/lib/x86_64-linux-gnu/libc.so.6", NULL });
	check_hints(idx, "usr/lib/x86_64-linux-gnu/libc.so.6", (const char *const[]){ NULL });
	cfs_index_free(idx);
out:
	cfs_chunker_free(t.c);
	cfs_builder_free(t.b);
}

int main(void)
{
	if (getenv("CFS_DEBUG"))
		cfs_log_setup("test-elf", CFS_LOG_DEBUG, NULL);
	test_self();
	test_synthetic();
	test_tree();
	return cfs_test_done("test-elf");
}
