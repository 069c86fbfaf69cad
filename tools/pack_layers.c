/* SPDX-License-Identifier: MIT */
/*
 * The layers of an image source, each kept as an image of its own
 * (docs/LAYER-STORE.md).  The tar reader (pack_tar.c) reads each layer
 * into a builder of its own in overlay form (builder.h), the chunker
 * filling it; after the last one, once the workers have stored every
 * chunk (cfs_pack_drain), cfs_pack_layers_done() stacks the layers into
 * the image's builder (cfs_builder_apply_layer) and stores each layer's
 * index and record (layer.h, layers/<hex of the blob's digest>), all
 * before cfs_pack_finish() writes the image's own index.  So
 * the image and its layers share every chunk: a layer costs the store
 * its index and a record.
 *
 * A hard link in a layer to a file of a lower layer has no target in the
 * layer's own tree: the layer's image gets a copy (what an overlay
 * driver's diff holds then too), and the image the link itself.
 */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "builder.h"
#include "chunker.h"
#include "layer.h"
#include "store.h"
#include "util.h"

#include "pack.h"

struct cfs_pack_link {
	char *path, *target;
};

struct cfs_pack_layer {
	struct cfs_builder *b;
	struct cfs_pack_link *links;
	size_t nlinks;
	bool has_blob;        /* the record needs the blob's digest */
	cfs_digest blob;
	struct cfs_layer_rec rec;
};

static struct cfs_pack_layer *cur(struct cfs_pack_ctx *p)
{
	return p->in_layer ? &p->layers[p->nlayers - 1] : NULL;
}

int cfs_pack_layer_begin(struct cfs_pack_ctx *p)
{
	struct cfs_pack_layer *l;
	struct cfs_builder *b;
	int ret;

	if (p->in_layer)
		return cfs_pack_fail(p, -EINVAL, "a layer inside a layer");
	if (p->nlayers == p->layers_cap) {
		size_t cap = p->layers_cap ? 2 * p->layers_cap : 16;
		void *v = realloc(p->layers, cap * sizeof(*p->layers));

		if (!v)
			return cfs_pack_fail(p, -ENOMEM, "layers: %s", cfs_strerror(-ENOMEM));
		p->layers = v;
		p->layers_cap = cap;
	}
	ret = cfs_builder_new(p->chunk_size, &b);
	if (ret < 0)
		return cfs_pack_fail(p, ret, "layer builder: %s", cfs_strerror(ret));
	cfs_builder_set_overlay(b);
	ret = cfs_chunker_set_builder(p->ch, b);
	if (ret < 0) {
		cfs_builder_free(b);
		return cfs_pack_fail(p, ret, "chunker: %s", cfs_strerror(ret));
	}
	l = &p->layers[p->nlayers++];
	*l = (struct cfs_pack_layer){ .b = b };
	p->b = b;
	p->in_layer = true;
	return 0;
}

int cfs_pack_layer_link(struct cfs_pack_ctx *p, const char *path, const char *target)
{
	struct cfs_pack_layer *l = cur(p);
	struct cfs_pack_link *v;

	if (!l)
		return -EINVAL;
	v = realloc(l->links, (l->nlinks + 1) * sizeof(*l->links));
	if (!v)
		return cfs_pack_fail(p, -ENOMEM, "%s: %s", path, cfs_strerror(-ENOMEM));
	l->links = v;
	v[l->nlinks].path = strdup(path);
	v[l->nlinks].target = strdup(target);
	if (!v[l->nlinks].path || !v[l->nlinks].target) {
		free(v[l->nlinks].path);
		free(v[l->nlinks].target);
		return cfs_pack_fail(p, -ENOMEM, "%s: %s", path, cfs_strerror(-ENOMEM));
	}
	l->nlinks++;
	return 0;
}

int cfs_pack_layer_end(struct cfs_pack_ctx *p)
{
	int ret;

	if (!p->in_layer)
		return 0;
	p->in_layer = false;
	/* The layer's last group chunk is its own. */
	ret = cfs_chunker_flush(p->ch);
	if (ret == 0)
		ret = cfs_chunker_set_builder(p->ch, p->img);
	p->b = p->img;
	if (ret < 0)
		return cfs_pack_fail(p, ret, "chunker: %s", cfs_strerror(ret));
	return 0;
}

void cfs_pack_layer_meta(struct cfs_pack_ctx *p, const cfs_digest *blob, const cfs_digest *diff_id,
			 uint64_t diff_size, uint64_t size, enum cfs_layer_comp comp)
{
	struct cfs_pack_layer *l;

	if (!p->nlayers)
		return;
	l = &p->layers[p->nlayers - 1];
	l->has_blob = blob != NULL;
	if (blob)
		l->blob = *blob;
	l->rec.diff_id = *diff_id;
	l->rec.diff_size = diff_size;
	l->rec.size = size;
	l->rec.comp = comp;
}

/* Layer l's links to files below it: a copy in the layer, resolved in the
 * image as it is under the layer (targets in *targets, malloc'd). */
static int links_resolve(struct cfs_pack_ctx *p, struct cfs_pack_layer *l, size_t i,
			 uint32_t **targets)
{
	int ret;

	*targets = NULL;
	if (!l->nlinks)
		return 0;
	*targets = calloc(l->nlinks, sizeof(**targets));
	if (!*targets)
		return cfs_pack_fail(p, -ENOMEM, "layer %zu: %s", i + 1, cfs_strerror(-ENOMEM));
	for (size_t k = 0; k < l->nlinks; k++) {
		const struct cfs_pack_link *lk = &l->links[k];

		ret = cfs_builder_find_path(p->img, lk->target, &(*targets)[k]);
		if (ret == -ENOENT)
			return cfs_pack_fail(p, ret, "layer %zu: %s: hard link to a missing file: %s",
					     i + 1, lk->path, lk->target);
		if (ret == 0)
			ret = cfs_builder_copy_node(l->b, lk->path, p->img, (*targets)[k]);
		if (ret < 0)
			return cfs_pack_fail(p, ret, "layer %zu: %s: hard link to %s: %s", i + 1,
					     lk->path, lk->target, cfs_strerror(ret));
	}
	return 0;
}

static int layers_stack(struct cfs_pack_ctx *p)
{
	char where[PATH_MAX];
	int ret = 0;

	for (size_t i = 0; i < p->nlayers && ret == 0; i++) {
		struct cfs_pack_layer *l = &p->layers[i];
		uint32_t *targets;

		ret = links_resolve(p, l, i, &targets);
		if (ret == 0) {
			ret = cfs_builder_apply_layer(p->img, l->b, where, sizeof(where));
			if (ret < 0)
				cfs_pack_fail(p, ret, "layer %zu: %s: %s", i + 1, where,
					      cfs_strerror(ret));
		}
		for (size_t k = 0; ret == 0 && k < l->nlinks; k++) {
			ret = cfs_builder_link_at(p->img, l->links[k].path, targets[k]);
			if (ret < 0)
				cfs_pack_fail(p, ret, "layer %zu: %s: hard link to %s: %s", i + 1,
					      l->links[k].path, l->links[k].target,
					      cfs_strerror(ret));
		}
		free(targets);
	}
	return ret;
}

static int layers_put(struct cfs_pack_ctx *p)
{
	const char *loc = cfs_store_location(p->st);

	for (size_t i = 0; i < p->nlayers; i++) {
		struct cfs_pack_layer *l = &p->layers[i];
		char *rec = NULL, hex[CFS_DIGEST_HEX_LEN + 1];
		struct cfs_builder_stats bs;
		void *idx = NULL;
		size_t len, n = 0;
		int ret;

		ret = cfs_builder_finish(l->b, &idx, &len, &bs);
		if (ret == 0)
			ret = cfs_pack_obj_put(p->st, idx, len, p->level, &l->rec.image, &n);
		free(idx);
		if (ret < 0)
			return cfs_pack_fail(p, ret, "%s: layer %zu's index: %s", loc, i + 1,
					     cfs_strerror(ret));
		p->layers_stored += n;
		if (!l->has_blob)
			continue; /* a docker-archive's old layout: no name to find it by */
		ret = cfs_layer_rec_format(&l->rec, &rec, &len);
		if (ret == 0)
			ret = cfs_store_image_file_set(p->st, CFS_LAYER_RECORD, &l->blob, rec, len);
		free(rec);
		if (ret == 0) {
			cfs_digest *v = realloc(p->layer_blobs, (p->nlayer_blobs + 1) * sizeof(*v));

			if (!v)
				ret = -ENOMEM;
			else
				(p->layer_blobs = v)[p->nlayer_blobs++] = l->blob;
		}
		if (ret < 0) {
			cfs_digest_hex(&l->blob, hex);
			return cfs_pack_fail(p, ret, "%s: layers/%s: %s", loc, hex, cfs_strerror(ret));
		}
	}
	return 0;
}

int cfs_pack_layers_done(struct cfs_pack_ctx *p)
{
	int ret = cfs_pack_drain(p);

	if (ret == 0)
		ret = layers_stack(p);
	if (ret == 0)
		ret = layers_put(p);
	cfs_pack_layers_free(p);
	return ret;
}

void cfs_pack_layers_free(struct cfs_pack_ctx *p)
{
	/* The workers may hold chunks of these builders still. */
	if (p->nlayers)
		cfs_pack_drain(p);
	for (size_t i = 0; i < p->nlayers; i++) {
		struct cfs_pack_layer *l = &p->layers[i];

		cfs_builder_free(l->b);
		for (size_t k = 0; k < l->nlinks; k++) {
			free(l->links[k].path);
			free(l->links[k].target);
		}
		free(l->links);
	}
	free(p->layers);
	p->layers = NULL;
	p->nlayers = p->layers_cap = 0;
}
