/* SPDX-License-Identifier: MIT */
/*
 * The image builder: an in-memory tree serialised into the format of
 * format.h.
 *
 * Nodes live in one array (node id = index, root = 0).  Directory entries
 * live in one array too and are found by (parent, name) through an
 * open-addressing hash table, so a tar stream of 100k members costs O(1)
 * per lookup.  Replacing an entry only repoints it at another node, and
 * removing one (a whiteout) points it at ENT_GONE and takes it out of its
 * directory's list, so the table never deletes.
 *
 * Layers: each entry remembers the layer that last gave it (added,
 * replaced, or named on the way to something added), so a whiteout or an
 * opaque directory can hide what lower layers gave and nothing of its
 * own layer, wherever in the layer's tar it comes.  Names, symlink targets and xattrs are appended to
 * one byte arena and referred to by offset, which survives its realloc.
 *
 * Everything that decides the output bytes (inode numbers, dirent, extent
 * and chunk order, string offsets) is derived at finish from sorted names
 * and the resulting inode order, never from node ids or the order chunks
 * were reserved, so one tree gives one index whatever order it came in.
 * That serialising is builder_finish.c's; this file builds the tree.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <xxhash.h>

#include "builder_i.h"
#include "chunker.h"
#include "elf.h"
#include "format.h"
#include "util.h"


int cfs_builder_grow(void **v, size_t *cap, size_t need, size_t elem)
{
	size_t ncap = *cap ? *cap : 8;
	void *nv;

	if (need <= *cap)
		return 0;
	while (ncap < need) {
		if (ncap > SIZE_MAX / 2 / elem)
			return -ENOMEM;
		ncap *= 2;
	}
	nv = realloc(*v, ncap * elem);
	if (!nv)
		return -ENOMEM;
	*v = nv;
	*cap = ncap;
	return 0;
}

/* Same for the u32 capacities kept in nodes to keep them small. */
static int grow32(void **v, uint32_t *cap, size_t need, size_t elem)
{
	size_t c = *cap;
	int ret;

	if (need > CFS_BUILDER_MAX_ITEMS)
		return -EOVERFLOW;
	ret = cfs_builder_grow(v, &c, need, elem);
	if (ret)
		return ret;
	*cap = (uint32_t)CFS_MIN(c, (size_t)CFS_BUILDER_MAX_ITEMS);
	return 0;
}

static int arena_add(struct cfs_builder *b, const void *p, size_t len, uint64_t *off)
{
	int ret = cfs_builder_grow((void **)&b->arena, &b->arena_cap, b->arena_len + len + 1, 1);

	if (ret)
		return ret;
	if (len)
		memcpy(b->arena + b->arena_len, p, len);
	*off = b->arena_len;
	b->arena_len += len;
	return 0;
}

static bool name_valid(const char *name, size_t len)
{
	if (!name || len == 0 || len > CFS_NAME_MAX)
		return false;
	if (memchr(name, '/', len) || memchr(name, '\0', len))
		return false;
	if (name[0] == '.' && (len == 1 || (len == 2 && name[1] == '.')))
		return false;
	return true;
}

static bool attr_valid(const struct cfs_attr *a)
{
	if (!a || (a->mode & ~(uint32_t)(S_IFMT | 07777)) || a->mtime_nsec >= 1000000000u)
		return false;
	switch (a->mode & S_IFMT) {
	case S_IFREG:
	case S_IFDIR:
	case S_IFLNK:
	case S_IFCHR:
	case S_IFBLK:
	case S_IFIFO:
	case S_IFSOCK:
		return true;
	default:
		return false;
	}
}

static const struct cfs_attr cfs_implicit_dir = { .mode = S_IFDIR | 0755 };

static int node_new(struct cfs_builder *b, const struct cfs_attr *a, uint32_t *id)
{
	int ret;

	if (b->nnodes >= CFS_BUILDER_MAX_ITEMS)
		return -EOVERFLOW;
	ret = cfs_builder_grow((void **)&b->nodes, &b->nodes_cap, b->nnodes + 1, sizeof(*b->nodes));
	if (ret)
		return ret;
	memset(&b->nodes[b->nnodes], 0, sizeof(b->nodes[0]));
	b->nodes[b->nnodes].attr = *a;
	b->nodes[b->nnodes].implicit = a == &cfs_implicit_dir;
	*id = (uint32_t)b->nnodes++;
	return 0;
}

static void node_clear(struct cfs_bnode *n)
{
	if (S_ISDIR(n->attr.mode))
		free(n->u.dir.v);
	else if (S_ISREG(n->attr.mode))
		free(n->u.reg.v);
	free(n->xa);
}

static int node_check(const struct cfs_builder *b, uint32_t node)
{
	if (b->finished || node >= b->nnodes)
		return -EINVAL;
	return 0;
}

static int dir_check(const struct cfs_builder *b, uint32_t node)
{
	int ret = node_check(b, node);

	if (ret)
		return ret;
	return S_ISDIR(b->nodes[node].attr.mode) ? 0 : -ENOTDIR;
}

static uint64_t ent_hash(uint32_t parent, const char *name, size_t len)
{
	return XXH3_64bits_withSeed(name, len, parent);
}

/* The slot holding (parent, name), or the empty slot where it would go. */
static uint32_t *ent_slot(const struct cfs_builder *b, uint32_t parent, const char *name,
			  size_t len, uint64_t h)
{
	size_t mask = b->slots_cap - 1;

	for (size_t i = h & mask;; i = (i + 1) & mask) {
		const struct cfs_bent *e;

		if (!b->slots[i])
			return &b->slots[i];
		e = &b->ents[b->slots[i] - 1];
		if (e->hash == h && e->parent == parent && e->name_len == len &&
		    !memcmp(b->arena + e->name_off, name, len))
			return &b->slots[i];
	}
}

static int ent_rehash(struct cfs_builder *b, size_t cap)
{
	uint32_t *slots = calloc(cap, sizeof(*slots));

	if (!slots)
		return -ENOMEM;
	for (size_t i = 0; i < b->nents; i++) {
		size_t j = b->ents[i].hash & (cap - 1);

		while (slots[j])
			j = (j + 1) & (cap - 1);
		slots[j] = (uint32_t)i + 1;
	}
	free(b->slots);
	b->slots = slots;
	b->slots_cap = cap;
	return 0;
}

/* Entry id of (parent, name) or -ENOENT. */
static int ent_find(const struct cfs_builder *b, uint32_t parent, const char *name, size_t len)
{
	uint32_t s = *ent_slot(b, parent, name, len, ent_hash(parent, name, len));

	return s ? (int)(s - 1) : -ENOENT;
}

/* Adds a new entry; the caller has checked that the name is free. */
static int ent_insert(struct cfs_builder *b, uint32_t parent, const char *name, size_t len,
		      uint32_t child)
{
	struct cfs_bnode *dir = &b->nodes[parent];
	uint64_t h = ent_hash(parent, name, len), off;
	struct cfs_bent *e;
	int ret;

	if (b->nents >= CFS_BUILDER_MAX_ITEMS)
		return -EOVERFLOW;
	ret = cfs_builder_grow((void **)&b->ents, &b->ents_cap, b->nents + 1, sizeof(*b->ents));
	if (ret)
		return ret;
	/* Load factor at most 1/2 keeps probes short. */
	if ((b->nents + 1) * 2 > b->slots_cap) {
		ret = ent_rehash(b, b->slots_cap * 2);
		if (ret)
			return ret;
	}
	ret = grow32((void **)&dir->u.dir.v, &dir->u.dir.cap, dir->u.dir.n + 1,
		     sizeof(*dir->u.dir.v));
	if (ret)
		return ret;
	ret = arena_add(b, name, len, &off);
	if (ret)
		return ret;

	e = &b->ents[b->nents];
	e->hash = h;
	e->name_off = off;
	e->name_len = (uint16_t)len;
	e->parent = parent;
	e->child = child;
	e->layer = b->layer;
	*ent_slot(b, parent, name, len, h) = (uint32_t)b->nents + 1;
	dir->u.dir.v[dir->u.dir.n++] = (uint32_t)b->nents;
	b->nents++;
	return 0;
}

/* Puts a removed entry back in its directory's list. */
static int ent_revive(struct cfs_builder *b, uint32_t ent, uint32_t child)
{
	struct cfs_bnode *dir = &b->nodes[b->ents[ent].parent];
	int ret;

	ret = grow32((void **)&dir->u.dir.v, &dir->u.dir.cap, dir->u.dir.n + 1,
		     sizeof(*dir->u.dir.v));
	if (ret)
		return ret;
	dir->u.dir.v[dir->u.dir.n++] = ent;
	b->ents[ent].child = child;
	b->ents[ent].layer = b->layer;
	return 0;
}

/* Takes an entry out of the tree; what it led to stays allocated but
 * unreachable, and finish writes only what is reachable. */
static void ent_remove(struct cfs_builder *b, uint32_t ent)
{
	struct cfs_bnode *dir = &b->nodes[b->ents[ent].parent];

	for (uint32_t i = 0; i < dir->u.dir.n; i++) {
		if (dir->u.dir.v[i] == ent) {
			dir->u.dir.v[i] = dir->u.dir.v[--dir->u.dir.n];
			break;
		}
	}
	b->ents[ent].child = ENT_GONE;
}

int cfs_builder_new(uint32_t chunk_size, struct cfs_builder **out)
{
	struct cfs_builder *b;
	uint32_t root;
	int ret;

	if (!chunk_size)
		chunk_size = CFS_CHUNK_SIZE_DEFAULT;
	if (chunk_size > CFS_CHUNK_MAX_SIZE)
		return -EINVAL;
	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->chunk_size = chunk_size;
	ret = -pthread_mutex_init(&b->chunk_lock, NULL);
	if (ret)
		goto err_free;
	/* Lookups never meet an empty table. */
	ret = ent_rehash(b, 1024);
	if (ret)
		goto err_mutex;
	ret = node_new(b, &cfs_implicit_dir, &root);
	if (ret)
		goto err_slots;
	*out = b;
	return 0;

err_slots:
	free(b->slots);
err_mutex:
	pthread_mutex_destroy(&b->chunk_lock);
err_free:
	free(b);
	return ret;
}

void cfs_builder_free(struct cfs_builder *b)
{
	if (!b)
		return;
	for (size_t i = 0; i < b->nnodes; i++)
		node_clear(&b->nodes[i]);
	free(b->nodes);
	free(b->ents);
	free(b->slots);
	free(b->arena);
	free(b->chunks);
	free(b->elfs);
	pthread_mutex_destroy(&b->chunk_lock);
	free(b);
}

int cfs_builder_set_attr(struct cfs_builder *b, uint32_t node, const struct cfs_attr *a)
{
	int ret = node_check(b, node);

	if (ret)
		return ret;
	/* The type picks the union member in use: it is fixed at creation. */
	if (!attr_valid(a) || (a->mode & S_IFMT) != (b->nodes[node].attr.mode & S_IFMT))
		return -EINVAL;
	b->nodes[node].attr = *a;
	b->nodes[node].implicit = false;
	return 0;
}

/* The overlay form's opaque mark, as a rootful overlay driver writes it
 * (a rootless one uses user.overlay.opaque: a mount can alias it). */
#define OVERLAY_OPAQUE "trusted.overlay.opaque"

static bool is_opaque(const struct cfs_builder *b, uint32_t node)
{
	const struct cfs_bnode *n = &b->nodes[node];

	for (uint32_t i = 0; i < n->nxa; i++)
		if (n->xa[i].name_len == strlen(OVERLAY_OPAQUE) &&
		    !memcmp(b->arena + n->xa[i].name_off, OVERLAY_OPAQUE, n->xa[i].name_len))
			return true;
	return false;
}

static int set_opaque(struct cfs_builder *b, uint32_t node)
{
	return cfs_builder_set_xattr(b, node, OVERLAY_OPAQUE, "y", 1);
}

static bool is_whiteout(const struct cfs_builder *b, uint32_t node)
{
	return S_ISCHR(b->nodes[node].attr.mode) && b->nodes[node].attr.rdev == 0;
}

/* A directory added over a directory: a later tar member for the same
 * directory describes it afresh, so its xattrs go too; children stay, and
 * in overlay form its opaque mark (a ".wh..wh..opq" may come first). */
static int dir_redefine(struct cfs_builder *b, uint32_t node, const struct cfs_attr *a)
{
	struct cfs_bnode *n = &b->nodes[node];
	bool opaque = b->overlay && is_opaque(b, node);

	n->attr = *a;
	n->implicit = false;
	n->nxa = 0;
	return opaque ? set_opaque(b, node) : 0;
}

int cfs_builder_add(struct cfs_builder *b, uint32_t parent, const char *name, size_t name_len,
		    const struct cfs_attr *a, uint32_t *node)
{
	uint32_t id;
	int ret, ent;

	ret = dir_check(b, parent);
	if (ret)
		return ret;
	if (!name_valid(name, name_len) || !attr_valid(a))
		return -EINVAL;

	ent = ent_find(b, parent, name, name_len);
	if (ent >= 0) {
		uint32_t old = b->ents[ent].child;

		if (old != ENT_GONE && S_ISDIR(b->nodes[old].attr.mode) && S_ISDIR(a->mode)) {
			b->ents[ent].layer = b->layer;
			*node = old;
			return dir_redefine(b, old, a);
		}
		/* The old node stays allocated: other names may link to it,
		 * and finish only writes what is reachable. */
		ret = node_new(b, a, &id);
		if (ret)
			return ret;
		if (old == ENT_GONE) {
			ret = ent_revive(b, (uint32_t)ent, id);
			if (ret) {
				b->nnodes--;
				return ret;
			}
		}
		b->ents[ent].child = id;
		b->ents[ent].layer = b->layer;
		*node = id;
		/* overlay form: this layer's directory in place of the lower
		 * one its whiteout hid, not merged with it */
		if (b->overlay && old != ENT_GONE && is_whiteout(b, old) && S_ISDIR(a->mode))
			return set_opaque(b, id);
		return 0;
	}

	ret = node_new(b, a, &id);
	if (ret)
		return ret;
	ret = ent_insert(b, parent, name, name_len, id);
	if (ret) {
		b->nnodes--; /* nothing refers to it yet */
		return ret;
	}
	*node = id;
	return 0;
}

/* Next component of a path, skipping empty and "." ones: 1 with *name and
 * *len set, 0 at the end, -EINVAL for ".." or a name over CFS_NAME_MAX. */
static int path_next(const char **p, const char **name, size_t *len)
{
	const char *s = *p;

	for (;;) {
		size_t n;

		while (*s == '/')
			s++;
		if (!*s) {
			*p = s;
			return 0;
		}
		n = strcspn(s, "/");
		if (n == 1 && s[0] == '.') {
			s += n;
			continue;
		}
		if (n == 2 && s[0] == '.' && s[1] == '.')
			return -EINVAL;
		if (n > CFS_NAME_MAX)
			return -EINVAL;
		*name = s;
		*len = n;
		*p = s + n;
		return 1;
	}
}

/* Walks path down to the directory holding its last component, creating
 * missing directories when create is set.  *last is NULL when the path
 * names the root.  Every component is checked before anything is made. */
static int path_walk(struct cfs_builder *b, const char *path, bool create, uint32_t *dir,
		     const char **last, size_t *last_len)
{
	const char *p = path, *name = NULL;
	uint32_t cur = CFS_NODE_ROOT;
	size_t len = 0;
	int ret;

	if (b->finished || !path || !*path)
		return -EINVAL;
	while ((ret = path_next(&p, &name, &len)) > 0)
		;
	if (ret < 0)
		return ret;

	p = path;
	*last = NULL;
	*last_len = 0;
	for (;;) {
		const char *next;
		size_t next_len;
		int ent;

		ret = path_next(&p, &name, &len);
		if (ret == 0)
			break;
		/* Look ahead: the last component is the caller's. */
		{
			const char *q = p;

			ret = path_next(&q, &next, &next_len);
		}
		if (ret == 0) {
			*last = name;
			*last_len = len;
			break;
		}
		ent = ent_find(b, cur, name, len);
		if (ent >= 0 && b->ents[ent].child != ENT_GONE) {
			uint32_t child = b->ents[ent].child;

			if (!S_ISDIR(b->nodes[child].attr.mode))
				return -ENOTDIR;
			/* Named on the way to something this layer adds. */
			if (create)
				b->ents[ent].layer = b->layer;
			cur = child;
			continue;
		}
		if (!create)
			return -ENOENT;
		ret = cfs_builder_add(b, cur, name, len, &cfs_implicit_dir, &cur);
		if (ret)
			return ret;
	}
	*dir = cur;
	return 0;
}

int cfs_builder_add_path(struct cfs_builder *b, const char *path, const struct cfs_attr *a,
			 uint32_t *node)
{
	const char *last;
	size_t len;
	uint32_t dir;
	int ret;

	if (!attr_valid(a))
		return -EINVAL;
	ret = path_walk(b, path, true, &dir, &last, &len);
	if (ret)
		return ret;
	if (!last) {
		if (!S_ISDIR(a->mode))
			return -EINVAL;
		dir_redefine(b, CFS_NODE_ROOT, a);
		*node = CFS_NODE_ROOT;
		return 0;
	}
	return cfs_builder_add(b, dir, last, len, a, node);
}

int cfs_builder_find_path(struct cfs_builder *b, const char *path, uint32_t *node)
{
	const char *last;
	size_t len;
	uint32_t dir;
	int ret, ent;

	ret = path_walk(b, path, false, &dir, &last, &len);
	if (ret)
		return ret;
	if (!last) {
		*node = CFS_NODE_ROOT;
		return 0;
	}
	ent = ent_find(b, dir, last, len);
	if (ent < 0 || b->ents[ent].child == ENT_GONE)
		return -ENOENT;
	*node = b->ents[ent].child;
	return 0;
}

int cfs_builder_link(struct cfs_builder *b, uint32_t parent, const char *name, size_t name_len,
		     uint32_t target)
{
	int ret, ent;

	ret = dir_check(b, parent);
	if (ret)
		return ret;
	if (!name_valid(name, name_len) || target >= b->nnodes)
		return -EINVAL;
	/* Directories form a tree: each has exactly one name. */
	if (S_ISDIR(b->nodes[target].attr.mode))
		return -EPERM;
	ent = ent_find(b, parent, name, name_len);
	if (ent >= 0) {
		if (b->ents[ent].child == ENT_GONE)
			return ent_revive(b, (uint32_t)ent, target);
		b->ents[ent].child = target;
		b->ents[ent].layer = b->layer;
		return 0;
	}
	return ent_insert(b, parent, name, name_len, target);
}

void cfs_builder_layer_begin(struct cfs_builder *b)
{
	b->layer++;
}

/* The directory a path names, walking as an add does: missing ones are
 * made, and every one on the way counts as given by this layer. */
static int dir_walk(struct cfs_builder *b, const char *path, uint32_t *dir)
{
	const char *last;
	size_t len;
	uint32_t parent;
	int ret, ent;

	if (!*path) {
		*dir = CFS_NODE_ROOT;
		return 0;
	}
	ret = path_walk(b, path, true, &parent, &last, &len);
	if (ret)
		return ret;
	if (!last) {
		*dir = CFS_NODE_ROOT;
		return 0;
	}
	ent = ent_find(b, parent, last, len);
	if (ent < 0 || b->ents[ent].child == ENT_GONE)
		return cfs_builder_add(b, parent, last, len, &cfs_implicit_dir, dir);
	if (!S_ISDIR(b->nodes[b->ents[ent].child].attr.mode))
		return -ENOTDIR;
	b->ents[ent].layer = b->layer;
	*dir = b->ents[ent].child;
	return 0;
}

/* 1 when a component of path (the last one too) is a file, a device, a
 * fifo or a socket: nothing can be below it, so a whiteout or an opaque
 * marker there has nothing to hide, as umoci and podman find (umoci
 * writes "swap" and then "swap/.wh.x" when a layer makes a directory a
 * file).  -ENOTDIR at a symlink, which extractors disagree on (umoci
 * follows it, podman fails): refused, as for any other entry.  0 when every
 * component met is a directory, up to the first that is missing. */
static int under_nondir(struct cfs_builder *b, const char *path)
{
	const char *p = path, *name;
	uint32_t cur = CFS_NODE_ROOT;
	size_t len;
	int ret, ent;

	while ((ret = path_next(&p, &name, &len)) > 0) {
		uint32_t mode;

		ent = ent_find(b, cur, name, len);
		if (ent < 0 || b->ents[ent].child == ENT_GONE)
			return 0;
		cur = b->ents[ent].child;
		mode = b->nodes[cur].attr.mode;
		if (S_ISLNK(mode))
			return -ENOTDIR;
		if (!S_ISDIR(mode))
			return 1;
	}
	return ret;
}

int cfs_builder_whiteout(struct cfs_builder *b, const char *dir_path, const char *name,
			 size_t name_len)
{
	uint32_t dir;
	int ret, ent;

	if (b->finished || !name_valid(name, name_len))
		return -EINVAL;
	ret = under_nondir(b, dir_path);
	if (ret)
		return ret < 0 ? ret : 0;
	ret = dir_walk(b, dir_path, &dir);
	if (ret)
		return ret;
	ent = ent_find(b, dir, name, name_len);
	if (b->overlay) {
		static const struct cfs_attr wh = { .mode = S_IFCHR };
		uint32_t node;

		if (ent < 0 || b->ents[ent].child == ENT_GONE)
			return cfs_builder_add(b, dir, name, name_len, &wh, &node);
		node = b->ents[ent].child;
		return S_ISDIR(b->nodes[node].attr.mode) ? set_opaque(b, node) : 0;
	}
	if (ent >= 0 && b->ents[ent].child != ENT_GONE && b->ents[ent].layer < b->layer)
		ent_remove(b, (uint32_t)ent);
	return 0;
}

void cfs_builder_set_overlay(struct cfs_builder *b)
{
	b->overlay = true;
}

/* Removes what lower layers gave under dir, and looks into the
 * directories this layer gave for the same. */
static void opaque_dir(struct cfs_builder *b, uint32_t dir)
{
	struct cfs_bnode *n = &b->nodes[dir];

	for (uint32_t i = n->u.dir.n; i-- > 0;) {
		uint32_t ent = n->u.dir.v[i];
		const struct cfs_bent *e = &b->ents[ent];

		if (e->layer < b->layer)
			ent_remove(b, ent);
		else if (S_ISDIR(b->nodes[e->child].attr.mode))
			opaque_dir(b, e->child);
		n = &b->nodes[dir];
	}
}

int cfs_builder_opaque(struct cfs_builder *b, const char *dir_path)
{
	uint32_t dir;
	int ret;

	if (b->finished)
		return -EINVAL;
	ret = under_nondir(b, dir_path);
	if (ret)
		return ret < 0 ? ret : 0;
	ret = dir_walk(b, dir_path, &dir);
	if (ret)
		return ret;
	if (b->overlay)
		return set_opaque(b, dir);
	opaque_dir(b, dir);
	return 0;
}

int cfs_builder_link_path(struct cfs_builder *b, const char *path, const char *target_path)
{
	uint32_t target;
	int ret;

	ret = cfs_builder_find_path(b, target_path, &target);
	if (ret)
		return ret;
	return cfs_builder_link_at(b, path, target);
}

int cfs_builder_link_at(struct cfs_builder *b, const char *path, uint32_t target)
{
	const char *last;
	uint32_t dir;
	size_t len;
	int ret;

	if (target >= b->nnodes)
		return -EINVAL;
	if (S_ISDIR(b->nodes[target].attr.mode))
		return -EPERM;
	ret = path_walk(b, path, true, &dir, &last, &len);
	if (ret)
		return ret;
	if (!last)
		return -EINVAL; /* the root is a directory */
	return cfs_builder_link(b, dir, last, len, target);
}

int cfs_builder_set_symlink(struct cfs_builder *b, uint32_t node, const char *target, size_t len)
{
	struct cfs_bnode *n;
	uint64_t off;
	int ret;

	ret = node_check(b, node);
	if (ret)
		return ret;
	n = &b->nodes[node];
	if (!S_ISLNK(n->attr.mode) || !target || len == 0 || len > CFS_SYMLINK_MAX ||
	    memchr(target, '\0', len))
		return -EINVAL;
	ret = arena_add(b, target, len, &off);
	if (ret)
		return ret;
	n = &b->nodes[node];
	n->u.lnk.off = off;
	n->u.lnk.len = (uint32_t)len;
	return 0;
}

int cfs_builder_set_xattr(struct cfs_builder *b, uint32_t node, const char *name,
			  const void *value, size_t value_len)
{
	struct cfs_bxattr *x = NULL;
	struct cfs_bnode *n;
	uint64_t name_off, val_off;
	size_t name_len;
	int ret;

	ret = node_check(b, node);
	if (ret)
		return ret;
	if (!name || (value_len && !value))
		return -EINVAL;
	name_len = strnlen(name, CFS_XATTR_NAME_MAX + 1);
	if (name_len == 0 || name_len > CFS_XATTR_NAME_MAX || value_len > CFS_XATTR_VALUE_MAX)
		return -EINVAL;

	/* Everything that can fail comes before the xattr changes, so a failed
	 * call leaves the node as it was. */
	ret = arena_add(b, value, value_len, &val_off);
	if (ret)
		return ret;
	n = &b->nodes[node];
	for (uint32_t i = 0; i < n->nxa; i++) {
		if (n->xa[i].name_len == name_len &&
		    !memcmp(b->arena + n->xa[i].name_off, name, name_len)) {
			x = &n->xa[i];
			break;
		}
	}
	if (!x) {
		ret = grow32((void **)&n->xa, &n->xa_cap, n->nxa + 1, sizeof(*n->xa));
		if (ret)
			return ret;
		ret = arena_add(b, name, name_len, &name_off);
		if (ret)
			return ret;
		x = &n->xa[n->nxa++];
		x->name_off = name_off;
		x->name_len = (uint16_t)name_len;
	}
	x->val_off = val_off;
	x->val_len = (uint32_t)value_len;
	return 0;
}

int cfs_builder_add_extent(struct cfs_builder *b, uint32_t node, uint64_t file_off, uint64_t len,
			   uint32_t chunk, uint32_t chunk_off)
{
	struct cfs_bnode *n;
	struct cfs_bext *e;
	int ret;

	ret = node_check(b, node);
	if (ret)
		return ret;
	n = &b->nodes[node];
	if (!S_ISREG(n->attr.mode) || len == 0 || file_off + len < file_off ||
	    chunk >= b->nchunks || (uint64_t)chunk_off + len > CFS_CHUNK_MAX_SIZE)
		return -EINVAL;
	if (n->u.reg.n) {
		e = &n->u.reg.v[n->u.reg.n - 1];
		if (file_off < e->off + e->len)
			return -EINVAL;
		/* Merge what the chunker did not already coalesce. */
		if (file_off == e->off + e->len && chunk == e->chunk &&
		    chunk_off == (uint64_t)e->chunk_off + e->len) {
			e->len += len;
			return 0;
		}
	}
	ret = grow32((void **)&n->u.reg.v, &n->u.reg.cap, n->u.reg.n + 1, sizeof(*n->u.reg.v));
	if (ret)
		return ret;
	e = &n->u.reg.v[n->u.reg.n++];
	e->off = file_off;
	e->len = len;
	e->chunk = chunk;
	e->chunk_off = chunk_off;
	return 0;
}

int cfs_builder_child(const struct cfs_builder *b, uint32_t dir, const char *name, size_t len,
		      uint32_t *node)
{
	int ent = ent_find(b, dir, name, len);

	if (ent < 0 || b->ents[ent].child == ENT_GONE)
		return -ENOENT;
	*node = b->ents[ent].child;
	return 0;
}

/* One NUL-terminated string into the arena, for cfs_belf. */
static int arena_str(struct cfs_builder *b, const struct cfs_elf_str *s)
{
	uint64_t off;
	int ret = arena_add(b, s->s, s->len, &off);

	if (ret)
		return ret;
	b->arena[b->arena_len++] = '\0'; /* arena_add leaves room for it */
	return 0;
}

int cfs_builder_set_elf(struct cfs_builder *b, uint32_t node, const struct cfs_elf_deps *d)
{
	size_t arena_len = b->arena_len;
	struct cfs_belf *e;
	int ret;

	ret = node_check(b, node);
	if (ret)
		return ret;
	if (!S_ISREG(b->nodes[node].attr.mode))
		return -EINVAL;
	ret = cfs_builder_grow((void **)&b->elfs, &b->elfs_cap, b->nelfs + 1, sizeof(*b->elfs));
	if (ret)
		return ret;
	e = &b->elfs[b->nelfs];
	e->off = b->arena_len;
	e->node = node;
	e->nneeded = d->nneeded;
	e->machine = d->machine;
	ret = arena_str(b, &d->interp);
	if (!ret)
		ret = arena_str(b, &d->runpath);
	for (uint32_t i = 0; !ret && i < d->nneeded; i++)
		ret = arena_str(b, &d->needed[i]);
	if (ret) {
		b->arena_len = arena_len;
		return ret;
	}
	b->nelfs++;
	return 0;
}

int cfs_builder_chunk_new(struct cfs_builder *b, uint32_t *chunk)
{
	int ret;

	if (b->finished)
		return -EINVAL;
	pthread_mutex_lock(&b->chunk_lock);
	ret = b->nchunks >= CFS_BUILDER_MAX_ITEMS ? -EOVERFLOW : 0;
	if (!ret)
		ret = cfs_builder_grow((void **)&b->chunks, &b->chunks_cap, b->nchunks + 1, sizeof(*b->chunks));
	if (!ret) {
		memset(&b->chunks[b->nchunks], 0, sizeof(b->chunks[0]));
		*chunk = (uint32_t)b->nchunks++;
	}
	pthread_mutex_unlock(&b->chunk_lock);
	return ret;
}

int cfs_builder_chunk_set(struct cfs_builder *b, uint32_t chunk, const cfs_digest *d,
			  uint32_t raw_size, uint32_t stored_size)
{
	int ret = 0;

	if (!d || raw_size == 0 || raw_size > CFS_CHUNK_MAX_SIZE)
		return -EINVAL;
	pthread_mutex_lock(&b->chunk_lock);
	if (chunk >= b->nchunks) {
		ret = -EINVAL;
	} else {
		struct cfs_bchunk *c = &b->chunks[chunk];

		c->d = *d;
		c->raw_size = raw_size;
		c->stored_size = stored_size;
		c->set = true;
	}
	pthread_mutex_unlock(&b->chunk_lock);
	return ret;
}
