/* SPDX-License-Identifier: MIT */
/*
 * The origins file (origin.h): written whole by cfs-pack, read by cfs-ls.
 * The reader is bounded like every parser of what a store holds: the
 * file's size, one header, a line at a time, each field checked, the
 * source unescaped in place and bounded before it is copied.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "origin.h"
#include "profile.h"
#include "util.h"

#define ORIGIN_HEADER "cfs-origin 1"

CFS_EXPORT int cfs_origin_format(const struct cfs_origin *o, char **buf, size_t *len)
{
	char ref[CFS_REF_STRLEN];
	FILE *f;
	int ret = 0;

	*buf = NULL;
	*len = 0;
	f = open_memstream(buf, len);
	if (!f)
		return -ENOMEM;
	cfs_digest_ref(&o->manifest, ref);
	if (fprintf(f, ORIGIN_HEADER "\nsource ") < 0 ||
	    cfs_profile_put_escaped(f, o->source, strnlen(o->source, CFS_ORIGIN_SOURCE_MAX)) < 0 ||
	    fprintf(f, "\nmanifest %s\n", ref) < 0)
		ret = -ENOMEM;
	if (ret == 0 && o->has_top) {
		cfs_digest_ref(&o->top, ref);
		if (fprintf(f, "top %s\n", ref) < 0)
			ret = -ENOMEM;
	}
	for (size_t i = 0; ret == 0 && i < CFS_MIN(o->nlayers, (size_t)CFS_ORIGIN_LAYERS_MAX); i++) {
		cfs_digest_ref(&o->layers[i], ref);
		if (fprintf(f, "layer %s\n", ref) < 0)
			ret = -ENOMEM;
	}
	if (fclose(f) != 0)
		ret = -ENOMEM;
	if (ret < 0) {
		free(*buf);
		*buf = NULL;
	}
	return ret;
}

/* What the lines of an origins file fill in. */
struct origin_parse {
	struct cfs_origin o;
	bool source, manifest;
};

/* One line after the header, NUL-terminated, into ctx (an origin_parse). */
static int origin_line(char *line, void *ctx)
{
	struct origin_parse *op = ctx;
	struct cfs_origin *o = &op->o;
	bool *source = &op->source, *manifest = &op->manifest;
	char *sp = strchr(line, ' '), *val;
	size_t n;

	if (!sp)
		return 0; /* a line this version does not know */
	*sp = '\0';
	val = sp + 1;
	if (!strcmp(line, "source")) {
		/* in place: the line is the reader's own copy */
		if (*source || cfs_profile_unescape(val, val, &n) || n == 0 ||
		    n > CFS_ORIGIN_SOURCE_MAX)
			return -EINVAL;
		memcpy(o->source, val, n + 1);
		*source = true;
	} else if (!strcmp(line, "manifest")) {
		if (*manifest || cfs_digest_parse(val, false, &o->manifest) < 0)
			return -EINVAL;
		*manifest = true;
	} else if (!strcmp(line, "top")) {
		if (o->has_top || cfs_digest_parse(val, false, &o->top) < 0)
			return -EINVAL;
		o->has_top = true;
	} else if (!strcmp(line, "layer")) {
		cfs_digest *v;

		if (o->nlayers == CFS_ORIGIN_LAYERS_MAX)
			return -EINVAL;
		v = realloc(o->layers, (o->nlayers + 1) * sizeof(*v));
		if (!v)
			return -ENOMEM;
		o->layers = v;
		if (cfs_digest_parse(val, false, &v[o->nlayers]) < 0)
			return -EINVAL;
		o->nlayers++;
	}
	return 0;
}

CFS_EXPORT void cfs_origin_release(struct cfs_origin *o)
{
	free(o->layers);
	o->layers = NULL;
	o->nlayers = 0;
}

CFS_EXPORT int cfs_origin_parse(const void *buf, size_t len, struct cfs_origin *out)
{
	struct origin_parse op = { 0 };
	int ret = cfs_parse_lines(buf, len, CFS_ORIGIN_MAX, ORIGIN_HEADER, origin_line, &op);

	if (ret == 0 && (!op.source || !op.manifest))
		ret = -EINVAL;
	if (ret == 0)
		*out = op.o;
	else
		cfs_origin_release(&op.o);
	return ret;
}
