/* SPDX-License-Identifier: MIT */
/*
 * Helpers shared by the unit test programs (tests/test-*.c): checks that
 * count failures and carry on, a scratch directory, a seeded generator and
 * the exit status.  Each test program is one translation unit, so the
 * counter is a file-scope static defined here.
 */
#ifndef CFS_TEST_H
#define CFS_TEST_H

#include <ftw.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Failed checks so far; cfs_test_done() turns it into the exit status. */
static int failures;

static inline void __attribute__((format(printf, 4, 5)))
cfs_test_fail_(const char *file, int line, const char *expr, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "FAIL %s:%d", file, line);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	if (expr)
		fputs(expr, stderr);
	fputc('\n', stderr);
	failures++;
}

/* CHECK(cond) or CHECK(cond, "printf format", args...): on failure prints
 * the file, line and the message (or the condition) and counts it.  The
 * message arguments are evaluated only when cond is false. */
#define CHECK(cond, ...)                                                           \
	do {                                                                       \
		if (!(cond))                                                       \
			cfs_test_fail_(__FILE__, __LINE__, #__VA_ARGS__[0] ? NULL : #cond, \
				       ": " __VA_ARGS__);                          \
	} while (0)

/* CHECK_EQ(got, want): integer equality, printing both values. */
#define CHECK_EQ(got, want)                                                        \
	do {                                                                       \
		long long cfs_got_ = (long long)(got), cfs_want_ = (long long)(want); \
		if (cfs_got_ != cfs_want_)                                         \
			cfs_test_fail_(__FILE__, __LINE__, NULL, ": %s = %lld, want %lld", \
				       #got, cfs_got_, cfs_want_);                 \
	} while (0)

/* Prints the verdict line and returns the exit status: 0 pass, 1 fail. */
static inline int cfs_test_done(const char *name)
{
	if (failures) {
		fprintf(stderr, "%s: %d check(s) failed\n", name, failures);
		return 1;
	}
	printf("%s: all checks passed\n", name);
	return 0;
}

/* xorshift64: a fast, repeatable sequence from a non-zero *state. */
static inline uint64_t cfs_test_rand(uint64_t *state)
{
	*state ^= *state << 13;
	*state ^= *state >> 7;
	*state ^= *state << 17;
	return *state;
}

/* Makes a fresh /tmp/cfs-test-NAME.XXXXXX into dir; exits 1 if it cannot. */
static inline void cfs_test_mkdtemp(char *dir, size_t size, const char *name)
{
	snprintf(dir, size, "/tmp/cfs-test-%s.XXXXXX", name);
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		exit(1);
	}
}

static inline int cfs_test_rm_(const char *path, const struct stat *st, int type,
			       struct FTW *ftw)
{
	return remove(path) ? -1 : 0;
}

/* Removes dir and everything below it, without crossing into mounts. */
static inline void cfs_test_rmtree(const char *dir)
{
	if (nftw(dir, cfs_test_rm_, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT))
		fprintf(stderr, "could not remove %s\n", dir);
}

#endif /* CFS_TEST_H */
