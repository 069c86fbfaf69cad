/* SPDX-License-Identifier: MIT */
/*
 * cfs-profile: merge and show access profiles (docs/PROFILE.md).
 *
 *   cfs-profile merge -o OUT IN...   every file and chunk of the inputs, by
 *                                    earliest first access; OUT is replaced
 *                                    atomically ("-": stdout)
 *   cfs-profile show [-n N] IN       a summary and the first N entries
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cfs_config.h"
#include "profile.h"
#include "util.h"

#define PROG "cfs-profile"
#define SHOW_DEFAULT 20

static void usage(FILE *out)
{
	fprintf(out,
		"usage: " PROG " merge -o OUT IN...\n"
		"       " PROG " show [-n N] IN\n"
		"\n"
		"Merges access profiles recorded by `cfs-mount --record` (every file and\n"
		"chunk of any input, ordered by earliest first access; OUT '-' is stdout),\n"
		"or shows a summary of one and its first N entries (default %d).\n",
		SHOW_DEFAULT);
}

static int load(const char *path, struct cfs_profile **p)
{
	int ret = cfs_profile_load(path, p);

	/* -EINVAL was reported with its line by the parser. */
	if (ret < 0 && ret != -EINVAL)
		fprintf(stderr, PROG ": %s: %s\n", path, cfs_strerror(ret));
	return ret;
}

static int cmd_merge(int argc, char **argv)
{
	struct cfs_profile **in = NULL;
	const char *out = NULL;
	char *tmp = NULL;
	FILE *f = NULL;
	int c, n, i, ret, status = 1;

	optind = 1;
	while ((c = getopt(argc, argv, "o:h")) != -1) {
		switch (c) {
		case 'o':
			out = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	n = argc - optind;
	if (!out || n < 1) {
		fprintf(stderr, PROG ": merge: expected -o OUT and at least one input\n");
		return 2;
	}
	in = calloc((size_t)n, sizeof(*in));
	if (!in) {
		fprintf(stderr, PROG ": %s\n", strerror(ENOMEM));
		return 1;
	}
	for (i = 0; i < n; i++)
		if (load(argv[optind + i], &in[i]) < 0)
			goto out;

	if (!strcmp(out, "-")) {
		f = stdout;
	} else {
		if (asprintf(&tmp, "%s.tmp.%ld", out, (long)getpid()) < 0) {
			fprintf(stderr, PROG ": %s\n", strerror(ENOMEM));
			goto out;
		}
		f = fopen(tmp, "we");
		if (!f) {
			fprintf(stderr, PROG ": %s: %s\n", tmp, strerror(errno));
			goto out;
		}
	}
	ret = cfs_profile_merge(in, (size_t)n, f);
	if (f != stdout) {
		if (fclose(f) != 0 && ret == 0)
			ret = -errno;
		if (ret == 0 && rename(tmp, out) < 0)
			ret = -errno;
		if (ret < 0)
			unlink(tmp);
	} else if (fflush(stdout) != 0 && ret == 0) {
		ret = -errno;
	}
	if (ret < 0) {
		fprintf(stderr, PROG ": %s: %s\n", out, cfs_strerror(ret));
		goto out;
	}
	status = 0;
out:
	for (i = 0; i < n; i++)
		cfs_profile_free(in[i]);
	free(in);
	free(tmp);
	return status;
}

static void put_path(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c < 0x21 || c > 0x7e || c == '\\')
			printf("\\x%02x", c);
		else
			putchar(c);
	}
}

static int cmd_show(int argc, char **argv)
{
	struct cfs_profile *p;
	size_t files = 0, chunks = 0, n, i, max = SHOW_DEFAULT;
	uint64_t first = 0, last = 0;
	unsigned long max_arg;
	int c;

	optind = 1;
	while ((c = getopt(argc, argv, "n:h")) != -1) {
		switch (c) {
		case 'n':
			if (cfs_parse_uint(optarg, 0, SIZE_MAX, &max_arg) < 0) {
				fprintf(stderr, PROG ": -n: expected a count: '%s'\n", optarg);
				return 2;
			}
			max = max_arg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (argc - optind != 1) {
		fprintf(stderr, PROG ": show: expected one profile\n");
		return 2;
	}
	if (load(argv[optind], &p) < 0)
		return 1;
	n = cfs_profile_count(p);
	for (i = 0; i < n; i++) {
		const struct cfs_profile_entry *e = cfs_profile_entry(p, i);

		if (e->kind == 'f')
			files++;
		else
			chunks++;
		if (i == 0 || e->usec < first)
			first = e->usec;
		if (e->usec > last)
			last = e->usec;
	}
	printf("files: %zu\nchunks: %zu\nspan_ms: %.3f\n", files, chunks,
	       n ? (double)(last - first) / 1000.0 : 0.0);
	for (i = 0; i < n && i < max; i++) {
		const struct cfs_profile_entry *e = cfs_profile_entry(p, i);
		char hex[CFS_DIGEST_HEX_LEN + 1];

		printf("%10.3f ms  %c  ", (double)e->usec / 1000.0, e->kind);
		put_path(e->path, e->path_len);
		if (e->kind == 'c') {
			cfs_digest_hex(&e->digest, hex);
			printf(" @%" PRIu64 "  %.12s", e->offset, hex);
		}
		putchar('\n');
	}
	if (n > max)
		printf("... %zu more\n", n - max);
	cfs_profile_free(p);
	if (fflush(stdout) != 0) {
		fprintf(stderr, PROG ": stdout: %s\n", strerror(errno));
		return 1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	cfs_log_setup(PROG, CFS_LOG_WARN, NULL);
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(argv[1], "-V") || !strcmp(argv[1], "--version")) {
		printf(PROG " " CFS_VERSION "\n");
		return 0;
	}
	if (!strcmp(argv[1], "merge"))
		return cmd_merge(argc - 1, argv + 1);
	if (!strcmp(argv[1], "show"))
		return cmd_show(argc - 1, argv + 1);
	fprintf(stderr, PROG ": unknown command '%s' (merge or show)\n", argv[1]);
	return 2;
}
