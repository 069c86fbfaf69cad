/* SPDX-License-Identifier: MIT */
/*
 * Applying a layer kept in overlay form (cfs_builder_set_overlay) to the
 * image below it (builder.h).  cfs-pack reads each layer of an image into
 * a builder of its own, which becomes the layer's own image (what an
 * engine's overlay driver would hold as its diff); the image itself is
 * the stack of those, made here by replaying each layer's tree through
 * the same calls a layer tar takes (add_path, whiteout, opaque), so the
 * rules of stacking stay in builder.c alone.  The files keep the layer's
 * chunks: the image adds no data of its own, and an unchanged layer
 * shares everything with every image built on it.
 *
 * The replay walks the layer depth first.  Order within a layer does not
 * matter to those rules (a whiteout hides only what lower layers gave,
 * before or after this layer's own entries), except that an opaque
 * directory must drop the lower entries before its own are added.
 */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "builder.h"
#include "builder_i.h"
#include "elf.h"
#include "format.h"
#include "util.h"

#define UNSET UINT32_MAX

struct replay {
	struct cfs_builder *b;
	const struct cfs_builder *l;
	uint32_t *chunks;     /* layer chunk -> b's, UNSET until used */
	uint32_t *nodes;      /* layer node -> b's, for hard links */
	uint32_t *elf_of;     /* layer node -> its cfs_belf, UNSET */
	char path[PATH_MAX];
};

static bool overlay_xattr(const char *name, size_t len)
{
	return (len == 22 && !memcmp(name, "trusted.overlay.opaque", 22)) ||
	       (len == 19 && !memcmp(name, "user.overlay.opaque", 19));
}

/* b's chunk for src's chunk c, made on first use. */
static int chunk_map(struct cfs_builder *b, const struct cfs_builder *src, uint32_t *map,
		     uint32_t c)
{
	const struct cfs_bchunk *k;
	uint32_t id;
	int ret;

	if (c >= src->nchunks || !src->chunks[c].set)
		return -EINVAL;
	if (map[c] != UNSET)
		return 0;
	k = &src->chunks[c];
	ret = cfs_builder_chunk_new(b, &id);
	if (!ret)
		ret = cfs_builder_chunk_set(b, id, &k->d, k->raw_size, k->stored_size);
	if (!ret)
		map[c] = id;
	return ret;
}

/* A chunk map for src, every entry UNSET. */
static uint32_t *chunk_map_new(const struct cfs_builder *src)
{
	uint32_t *map = malloc((src->nchunks + 1) * sizeof(*map));

	if (map)
		memset(map, 0xff, (src->nchunks + 1) * sizeof(*map));
	return map;
}

/* Node n of src onto b's node bn: xattrs (not the overlay form's own),
 * and a symlink's target or a file's extents. */
static int node_copy(struct cfs_builder *b, uint32_t bn, const struct cfs_builder *src,
		     uint32_t n, uint32_t *map)
{
	const struct cfs_bnode *sn = &src->nodes[n];
	int ret = 0;

	for (uint32_t i = 0; !ret && i < sn->nxa; i++) {
		const struct cfs_bxattr *x = &sn->xa[i];
		char name[CFS_XATTR_NAME_MAX + 1];

		memcpy(name, src->arena + x->name_off, x->name_len);
		name[x->name_len] = '\0';
		if (!overlay_xattr(name, x->name_len))
			ret = cfs_builder_set_xattr(b, bn, name, src->arena + x->val_off, x->val_len);
	}
	if (!ret && S_ISLNK(sn->attr.mode))
		ret = cfs_builder_set_symlink(b, bn, src->arena + sn->u.lnk.off, sn->u.lnk.len);
	for (uint32_t i = 0; !ret && S_ISREG(sn->attr.mode) && i < sn->u.reg.n; i++) {
		const struct cfs_bext *e = &sn->u.reg.v[i];

		ret = chunk_map(b, src, map, e->chunk);
		if (!ret)
			ret = cfs_builder_add_extent(b, bn, e->off, e->len, map[e->chunk],
						     e->chunk_off);
	}
	return ret;
}

/* What loading node opens, as the layer read it, onto b's node bn. */
static int elf_copy(struct replay *r, uint32_t node, uint32_t bn)
{
	const struct cfs_belf *e;
	struct cfs_elf_deps d = { 0 };
	const char *s;

	if (r->elf_of[node] == UNSET)
		return 0;
	e = &r->l->elfs[r->elf_of[node]];
	d.machine = e->machine;
	d.nneeded = CFS_MIN(e->nneeded, (uint32_t)CFS_ELF_NEEDED_MAX);
	s = r->l->arena + e->off;
	d.interp = (struct cfs_elf_str){ strlen(s) ? s : NULL, strlen(s) };
	s += strlen(s) + 1;
	d.runpath = (struct cfs_elf_str){ strlen(s) ? s : NULL, strlen(s) };
	for (uint32_t i = 0; i < d.nneeded; i++) {
		s += strlen(s) + 1;
		d.needed[i] = (struct cfs_elf_str){ strlen(s) ? s : NULL, strlen(s) };
	}
	return cfs_builder_set_elf(r->b, bn, &d);
}

static bool has_opaque(const struct cfs_builder *l, uint32_t node)
{
	const struct cfs_bnode *n = &l->nodes[node];

	for (uint32_t i = 0; i < n->nxa; i++)
		if (overlay_xattr(l->arena + n->xa[i].name_off, n->xa[i].name_len))
			return true;
	return false;
}

/* Layer node at r->path (len bytes of it; "" is the root). */
static int replay_node(struct replay *r, uint32_t node, size_t len)
{
	const struct cfs_bnode *n = &r->l->nodes[node];
	uint32_t bn;
	int ret;

	if (S_ISCHR(n->attr.mode) && n->attr.rdev == 0) {
		char *slash = strrchr(r->path, '/');

		if (!slash)
			return cfs_builder_whiteout(r->b, "", r->path, len);
		*slash = '\0';
		ret = cfs_builder_whiteout(r->b, r->path, slash + 1, strlen(slash + 1));
		*slash = '/';
		return ret;
	}
	if (!S_ISDIR(n->attr.mode)) {
		if (r->nodes[node] != UNSET)
			return cfs_builder_link_at(r->b, r->path, r->nodes[node]);
		ret = cfs_builder_add_path(r->b, r->path, &n->attr, &bn);
		if (!ret)
			ret = node_copy(r->b, bn, r->l, node, r->chunks);
		if (!ret)
			ret = elf_copy(r, node, bn);
		if (!ret)
			r->nodes[node] = bn;
		return ret;
	}
	if (!n->implicit) {
		ret = len ? cfs_builder_add_path(r->b, r->path, &n->attr, &bn)
			  : cfs_builder_set_attr(r->b, bn = CFS_NODE_ROOT, &n->attr);
		if (!ret)
			ret = node_copy(r->b, bn, r->l, node, r->chunks);
		if (ret)
			return ret;
	}
	if (has_opaque(r->l, node)) {
		ret = cfs_builder_opaque(r->b, r->path);
		if (ret)
			return ret;
	}
	for (uint32_t i = 0; i < r->l->nodes[node].u.dir.n; i++) {
		const struct cfs_bent *e = &r->l->ents[r->l->nodes[node].u.dir.v[i]];
		size_t at = len ? len + 1 : 0;

		if (e->child == ENT_GONE)
			continue;
		if (at + e->name_len >= sizeof(r->path))
			return -ENAMETOOLONG;
		if (len)
			r->path[len] = '/';
		memcpy(r->path + at, r->l->arena + e->name_off, e->name_len);
		r->path[at + e->name_len] = '\0';
		ret = replay_node(r, e->child, at + e->name_len);
		if (ret)
			return ret;
		r->path[len] = '\0';
	}
	return 0;
}

int cfs_builder_apply_layer(struct cfs_builder *b, const struct cfs_builder *layer, char *where,
			    size_t cap)
{
	struct replay *r = calloc(1, sizeof(*r));
	int ret = -ENOMEM;

	if (where && cap)
		where[0] = '\0';
	if (!r)
		return -ENOMEM;
	r->b = b;
	r->l = layer;
	r->chunks = chunk_map_new(layer);
	r->nodes = malloc(layer->nnodes * sizeof(*r->nodes));
	r->elf_of = malloc(layer->nnodes * sizeof(*r->elf_of));
	if (!r->chunks || !r->nodes || !r->elf_of)
		goto out;
	memset(r->nodes, 0xff, layer->nnodes * sizeof(*r->nodes));
	memset(r->elf_of, 0xff, layer->nnodes * sizeof(*r->elf_of));
	for (size_t i = 0; i < layer->nelfs; i++)
		r->elf_of[layer->elfs[i].node] = (uint32_t)i;
	cfs_builder_layer_begin(b);
	ret = replay_node(r, CFS_NODE_ROOT, 0);
	if (ret && where && cap)
		snprintf(where, cap, "%s", r->path[0] ? r->path : ".");
out:
	free(r->chunks);
	free(r->nodes);
	free(r->elf_of);
	free(r);
	return ret;
}

int cfs_builder_copy_node(struct cfs_builder *dst, const char *path, const struct cfs_builder *src,
			  uint32_t node)
{
	uint32_t bn, *map;
	int ret;

	if (node >= src->nnodes || S_ISDIR(src->nodes[node].attr.mode))
		return -EINVAL;
	map = chunk_map_new(src);
	if (!map)
		return -ENOMEM;
	ret = cfs_builder_add_path(dst, path, &src->nodes[node].attr, &bn);
	if (!ret)
		ret = node_copy(dst, bn, src, node, map);
	free(map);
	return ret;
}
