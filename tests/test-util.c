/* SPDX-License-Identifier: MIT */
/* test-util: the option parsers every command shares (sizes and counts),
 * and whole-file writes and reads. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"
#include "util.h"

static void test_parse_uint(void)
{
	static const char *const bad[] = { "", "-1", " -1", "+-1", "1x", "x1", "1 ", "0x10",
					   "99999999999999999999999", NULL };
	unsigned long v = 0;

	printf("cfs_parse_uint: counts in range, everything else refused\n");
	CHECK(cfs_parse_uint("0", 0, 10, &v) == 0 && v == 0);
	CHECK(cfs_parse_uint("10", 0, 10, &v) == 0 && v == 10);
	CHECK(cfs_parse_uint("007", 1, 10, &v) == 0 && v == 7);
	CHECK(cfs_parse_uint("18446744073709551615", 0, ULONG_MAX, &v) == 0 && v == ULONG_MAX);
	CHECK_EQ(cfs_parse_uint("11", 0, 10, &v), -EINVAL);
	CHECK_EQ(cfs_parse_uint("0", 1, 10, &v), -EINVAL);
	CHECK_EQ(cfs_parse_uint(NULL, 0, 10, &v), -EINVAL);
	for (unsigned i = 0; bad[i]; i++) {
		v = 42;
		CHECK(cfs_parse_uint(bad[i], 0, ULONG_MAX, &v) == -EINVAL && v == 42, "'%s'", bad[i]);
	}
}

static void test_parse_size(void)
{
	static const char *const bad[] = { "", "-1", " -1", "+1", " 1", "1X", "1KX", "K", "1 K",
					   "99999999999999999999X", NULL };
	uint64_t v = 0;

	printf("cfs_parse_size: powers of 1024, suffixes, overflow\n");
	CHECK(cfs_parse_size("4096", &v) == 0 && v == 4096);
	CHECK(cfs_parse_size("64K", &v) == 0 && v == 64u << 10);
	CHECK(cfs_parse_size("512MiB", &v) == 0 && v == 512ull << 20);
	CHECK(cfs_parse_size("10g", &v) == 0 && v == 10ull << 30);
	CHECK(cfs_parse_size("1TB", &v) == 0 && v == 1ull << 40);
	CHECK(cfs_parse_size("18446744073709551615", &v) == 0 && v == UINT64_MAX);
	CHECK(cfs_parse_size("16777215T", &v) == 0 && v == 16777215ull << 40);
	CHECK_EQ(cfs_parse_size("16777216T", &v), -ERANGE);
	/* Too large for 64 bits before any suffix: the same answer. */
	CHECK_EQ(cfs_parse_size("18446744073709551616", &v), -ERANGE);
	CHECK_EQ(cfs_parse_size("99999999999999999999K", &v), -ERANGE);
	for (unsigned i = 0; bad[i]; i++)
		CHECK(cfs_parse_size(bad[i], &v) == -EINVAL, "'%s'", bad[i]);
}

static mode_t cur_umask(void)
{
	mode_t m = umask(0);

	umask(m);
	return m;
}

/* Entries of directory dfd other than . and .. */
static unsigned dir_entries(int dfd)
{
	/* Its own open file: a dup() would share (and leave) the offset. */
	DIR *d = fdopendir(openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
	struct dirent *de;
	unsigned n = 0;

	CHECK(d != NULL);
	while (d && (de = readdir(d)))
		n += strcmp(de->d_name, ".") && strcmp(de->d_name, "..");
	if (d)
		closedir(d);
	return n;
}

static void test_write_file(void)
{
	char dir[] = "/tmp/cfs-test-util.XXXXXX";
	struct stat st;
	void *buf = NULL;
	size_t len = 0;
	int dfd;

	CHECK(mkdtemp(dir) != NULL);
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	CHECK(dfd >= 0);
	CHECK_EQ(cfs_write_file_at(dfd, "f", "first", 5, 0600, true), 0);
	CHECK_EQ(cfs_write_file_at(dfd, "f", "second", 6, 0644, false), 0);
	CHECK_EQ(cfs_read_file_at(dfd, "f", 64, &buf, &len), 0);
	CHECK(len == 6 && !memcmp(buf, "second", 6), ": read back %zu bytes", len);
	free(buf);
	/* Each write is a new file, with the mode given (umask aside); no
	 * temporary file is left behind. */
	CHECK(fstatat(dfd, "f", &st, 0) == 0 && (st.st_mode & 0777) == (0644 & ~cur_umask()));
	CHECK_EQ(dir_entries(dfd), 1);
	/* A path whose directory is missing fails and leaves nothing. */
	CHECK_EQ(cfs_write_file_at(dfd, "no/f", "x", 1, 0600, false), -ENOENT);
	CHECK_EQ(cfs_read_file_at(dfd, "f", 5, &buf, &len), -EFBIG);
	CHECK_EQ(dir_entries(dfd), 1);
	/* A dead writer's temporary file goes; a live one's, and names that
	 * only look alike, stay. */
	{
		char dead[64], live[64];
		pid_t child = fork();

		if (child == 0)
			_exit(0);
		CHECK(child > 0 && waitpid(child, NULL, 0) == child);
		snprintf(dead, sizeof(dead), "f.tmp.%ld.%ld", (long)child, (long)child);
		snprintf(live, sizeof(live), "f.tmp.%ld.7", (long)getpid());
		CHECK_EQ(cfs_write_file_at(dfd, dead, "x", 1, 0600, false), 0);
		CHECK_EQ(cfs_write_file_at(dfd, live, "x", 1, 0600, false), 0);
		CHECK_EQ(cfs_write_file_at(dfd, "f.tmp.x.1", "x", 1, 0600, false), 0);
		CHECK_EQ(cfs_write_file_at(dfd, "f.tmp.12.", "x", 1, 0600, false), 0);
		CHECK_EQ(dir_entries(dfd), 5);
		CHECK_EQ(cfs_write_file_sweep(dfd, "."), 1);
		CHECK(faccessat(dfd, dead, F_OK, 0) < 0 && errno == ENOENT);
		CHECK_EQ(dir_entries(dfd), 4);
		CHECK(unlinkat(dfd, live, 0) == 0 && unlinkat(dfd, "f.tmp.x.1", 0) == 0 &&
		      unlinkat(dfd, "f.tmp.12.", 0) == 0);
	}
	CHECK(unlinkat(dfd, "f", 0) == 0);
	close(dfd);
	CHECK(rmdir(dir) == 0);
}

int main(void)
{
	test_parse_uint();
	test_parse_size();
	test_write_file();
	return cfs_test_done("test-util");
}
