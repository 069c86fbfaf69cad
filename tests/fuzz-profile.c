/* SPDX-License-Identifier: MIT */
/*
 * fuzz-profile: libFuzzer target for the access-profile parser.  Whatever
 * the input, cfs_profile_load_buf() must not crash; when it accepts one,
 * every entry must be well-formed, and merging it with itself must give a
 * profile that parses again to the same entries, deduplicated.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "profile.h"
#include "util.h"



int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static FILE *devnull;
	struct cfs_profile *p = NULL, *q = NULL, *in[2];
	char *buf = NULL;
	size_t len = 0, n;
	FILE *f;
	int r;


	/* The parser's messages for rejected inputs are noise here. */
	if (!devnull) {
		devnull = fopen("/dev/null", "we");
		cfs_log_setup("fuzz-profile", CFS_LOG_ERR, devnull);
	}
	r = cfs_profile_load_buf(data, size, "fuzz", &p);
	FUZZ_ASSERT(r == 0 || r == -EINVAL || r == -ENOMEM);
	if (r < 0)
		return 0;
	n = cfs_profile_count(p);
	for (size_t i = 0; i < n; i++) {
		const struct cfs_profile_entry *e = cfs_profile_entry(p, i);

		FUZZ_ASSERT(e->kind == 'f' || e->kind == 'c');
		FUZZ_ASSERT(e->path_len >= 1 && e->path[0] == '/' && e->path[e->path_len] == '\0');
		FUZZ_ASSERT(strlen(e->path) == e->path_len);
	}
	FUZZ_ASSERT(cfs_profile_entry(p, n) == NULL);
	f = open_memstream(&buf, &len);
	FUZZ_ASSERT(f);
	in[0] = in[1] = p;
	FUZZ_ASSERT(cfs_profile_merge(in, 2, f) == 0);
	FUZZ_ASSERT(fclose(f) == 0);
	FUZZ_ASSERT(cfs_profile_load_buf(buf, len, "merged", &q) == 0);
	FUZZ_ASSERT(cfs_profile_count(q) <= n);
	for (size_t i = 1; i < cfs_profile_count(q); i++)
		FUZZ_ASSERT(cfs_profile_entry(q, i - 1)->usec <= cfs_profile_entry(q, i)->usec);
	cfs_profile_free(q);
	free(buf);
	cfs_profile_free(p);
	return 0;
}
