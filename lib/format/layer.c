/* SPDX-License-Identifier: MIT */
/*
 * Layer records (layer.h): written whole by cfs-pack, read by cfs-mount
 * --layer-store and cfs-ls.  Bounded like every parser of what a store
 * holds: the record's size, one header, a line at a time, each field
 * checked and given once.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layer.h"
#include "util.h"

#define LAYER_HEADER "cfs-layer 1"

static const char *const comp_names[] = {
	[CFS_LAYER_NONE] = "none",
	[CFS_LAYER_GZIP] = "gzip",
	[CFS_LAYER_ZSTD] = "zstd",
};

CFS_EXPORT const char *cfs_layer_comp_name(enum cfs_layer_comp c)
{
	return (unsigned)c < CFS_ARRAY_SIZE(comp_names) ? comp_names[c] : "unknown";
}

CFS_EXPORT int cfs_layer_rec_format(const struct cfs_layer_rec *r, char **buf, size_t *len)
{
	char image[CFS_REF_STRLEN], diff_id[CFS_REF_STRLEN];
	FILE *f;
	int ret = 0;

	*buf = NULL;
	*len = 0;
	f = open_memstream(buf, len);
	if (!f)
		return -ENOMEM;
	cfs_digest_ref(&r->image, image);
	cfs_digest_ref(&r->diff_id, diff_id);
	if (fprintf(f, LAYER_HEADER "\nimage %s\ndiff_id %s\ndiff_size %" PRIu64 "\nsize %" PRIu64
		    "\ncompression %s\n", image, diff_id, r->diff_size, r->size,
		    cfs_layer_comp_name(r->comp)) < 0)
		ret = -ENOMEM;
	if (fclose(f) != 0)
		ret = -ENOMEM;
	if (ret < 0) {
		free(*buf);
		*buf = NULL;
	}
	return ret;
}

enum { F_IMAGE, F_DIFF_ID, F_DIFF_SIZE, F_SIZE, F_COMP, F_ALL = (1 << 5) - 1 };

/* What the lines of a record fill in: seen collects the fields met. */
struct rec_parse {
	struct cfs_layer_rec r;
	unsigned seen;
};

/* One line after the header, NUL-terminated, into ctx (a rec_parse). */
static int layer_line(char *line, void *ctx)
{
	struct cfs_layer_rec *r = &((struct rec_parse *)ctx)->r;
	unsigned *seen = &((struct rec_parse *)ctx)->seen;
	static const char *const keys[] = {
		[F_IMAGE] = "image", [F_DIFF_ID] = "diff_id", [F_DIFF_SIZE] = "diff_size",
		[F_SIZE] = "size", [F_COMP] = "compression",
	};
	char *sp = strchr(line, ' '), *val;
	unsigned k;

	if (!sp)
		return 0; /* a line this version does not know */
	*sp = '\0';
	val = sp + 1;
	for (k = 0; k < CFS_ARRAY_SIZE(keys) && strcmp(line, keys[k]); k++)
		;
	if (k == CFS_ARRAY_SIZE(keys))
		return 0;
	if (*seen & (1u << k))
		return -EINVAL;
	*seen |= 1u << k;
	switch (k) {
	case F_IMAGE:
		return cfs_digest_parse(val, false, &r->image) < 0 ? -EINVAL : 0;
	case F_DIFF_ID:
		return cfs_digest_parse(val, false, &r->diff_id) < 0 ? -EINVAL : 0;
	case F_DIFF_SIZE:
		return cfs_parse_u64(val, &r->diff_size);
	case F_SIZE:
		return cfs_parse_u64(val, &r->size);
	default:
		for (unsigned c = 0; c < CFS_ARRAY_SIZE(comp_names); c++)
			if (!strcmp(val, comp_names[c])) {
				r->comp = (enum cfs_layer_comp)c;
				return 0;
			}
		return -EINVAL;
	}
}

CFS_EXPORT int cfs_layer_rec_parse(const void *buf, size_t len, struct cfs_layer_rec *out)
{
	struct rec_parse rp = { 0 };
	int ret = cfs_parse_lines(buf, len, CFS_LAYER_REC_MAX, LAYER_HEADER, layer_line, &rp);

	if (ret == 0 && rp.seen != F_ALL)
		ret = -EINVAL;
	if (ret == 0)
		*out = rp.r;
	return ret;
}
