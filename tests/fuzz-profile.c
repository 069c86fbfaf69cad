/* SPDX-License-Identifier: MIT */
/*
 * fuzz-profile: libFuzzer target for the access-profile parser.  Whatever
 * the input, cfs_profile_load_buf() must not crash; when it accepts one,
 * every entry must be well-formed, and merging it with itself must give a
 * profile that parses again to the same entries, deduplicated.  The same
 * bytes go to the origins parser (origin.h), which shares the profile's
 * escaping: an origin it accepts must format and parse back unchanged;
 * and to the layer records' (layer.h), with the same round trip.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "layer.h"
#include "origin.h"
#include "profile.h"
#include "util.h"

/* The origins parser on the same bytes. */
static void fuzz_origin(const uint8_t *data, size_t size)
{
	struct cfs_origin o, back;
	char *buf;
	size_t len;

	if (cfs_origin_parse(data, size, &o) < 0)
		return;
	FUZZ_ASSERT(o.source[0] && strlen(o.source) <= CFS_ORIGIN_SOURCE_MAX);
	FUZZ_ASSERT(cfs_origin_format(&o, &buf, &len) == 0);
	FUZZ_ASSERT(cfs_origin_parse(buf, len, &back) == 0);
	FUZZ_ASSERT(!strcmp(o.source, back.source) && cfs_digest_eq(&o.manifest, &back.manifest));
	FUZZ_ASSERT(o.has_top == back.has_top && (!o.has_top || cfs_digest_eq(&o.top, &back.top)));
	FUZZ_ASSERT(o.nlayers == back.nlayers && o.nlayers <= CFS_ORIGIN_LAYERS_MAX);
	for (size_t i = 0; i < o.nlayers; i++)
		FUZZ_ASSERT(cfs_digest_eq(&o.layers[i], &back.layers[i]));
	cfs_origin_release(&o);
	cfs_origin_release(&back);
	free(buf);
}

/* The layer records' parser on the same bytes. */
static void fuzz_layer_rec(const uint8_t *data, size_t size)
{
	struct cfs_layer_rec r, back;
	char *buf;
	size_t len;

	if (cfs_layer_rec_parse(data, size, &r) < 0)
		return;
	FUZZ_ASSERT(cfs_layer_rec_format(&r, &buf, &len) == 0);
	FUZZ_ASSERT(cfs_layer_rec_parse(buf, len, &back) == 0);
	FUZZ_ASSERT(cfs_digest_eq(&r.image, &back.image) && cfs_digest_eq(&r.diff_id, &back.diff_id) &&
		    r.diff_size == back.diff_size && r.size == back.size && r.comp == back.comp);
	free(buf);
}

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
	fuzz_origin(data, size);
	fuzz_layer_rec(data, size);
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
