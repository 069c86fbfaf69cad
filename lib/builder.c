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
 */
#include <endian.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <xxhash.h>

#include "builder.h"
#include "chunker.h"
#include "format.h"
#include "util.h"

/* Data extent as added; holes are made at finish. */
struct cfs_bext {
	uint64_t off, len;
	uint32_t chunk, chunk_off;
};

struct cfs_bxattr {
	uint64_t name_off, val_off; /* into the arena */
	uint32_t val_len;
	uint16_t name_len;
};

struct cfs_bnode {
	struct cfs_attr attr;
	/* The file type never changes after creation, so one union will do. */
	union {
		struct {
			uint32_t *v; /* entry ids */
			uint32_t n, cap;
		} dir;
		struct {
			struct cfs_bext *v;
			uint32_t n, cap;
		} reg;
		struct {
			uint64_t off;
			uint32_t len; /* 0: not set yet */
		} lnk;
	} u;
	struct cfs_bxattr *xa;
	uint32_t nxa, xa_cap;
	/* Set by finish. */
	uint32_t ino, nlink, parent_ino;
};

struct cfs_bent {
	uint64_t hash;
	uint64_t name_off;
	uint32_t parent, child; /* child ENT_GONE: removed */
	uint32_t layer;
	uint16_t name_len;
};

#define ENT_GONE UINT32_MAX

struct cfs_bchunk {
	cfs_digest d;
	uint32_t raw_size, stored_size;
	bool set;
};

struct cfs_builder {
	uint32_t chunk_size;
	bool finished;

	struct cfs_bnode *nodes;
	size_t nnodes, nodes_cap;

	struct cfs_bent *ents;
	size_t nents, ents_cap;
	uint32_t *slots; /* entry id + 1, 0 = empty; power-of-two size */
	size_t slots_cap;

	char *arena;
	size_t arena_len, arena_cap;

	uint32_t layer; /* cfs_builder_layer_begin() count */

	/* Workers call chunk_set while the source calls chunk_new, which may
	 * move the table: both hold the lock. */
	pthread_mutex_t chunk_lock;
	struct cfs_bchunk *chunks;
	size_t nchunks, chunks_cap;
};

/* Keeps counts well inside the u32 fields of the format. */
#define CFS_BUILDER_MAX_ITEMS (UINT32_MAX - 2u)

static int grow(void **v, size_t *cap, size_t need, size_t elem)
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
	ret = grow(v, &c, need, elem);
	if (ret)
		return ret;
	*cap = (uint32_t)CFS_MIN(c, (size_t)CFS_BUILDER_MAX_ITEMS);
	return 0;
}

static int arena_add(struct cfs_builder *b, const void *p, size_t len, uint64_t *off)
{
	int ret = grow((void **)&b->arena, &b->arena_cap, b->arena_len + len + 1, 1);

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
	ret = grow((void **)&b->nodes, &b->nodes_cap, b->nnodes + 1, sizeof(*b->nodes));
	if (ret)
		return ret;
	memset(&b->nodes[b->nnodes], 0, sizeof(b->nodes[0]));
	b->nodes[b->nnodes].attr = *a;
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
	ret = grow((void **)&b->ents, &b->ents_cap, b->nents + 1, sizeof(*b->ents));
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
	return 0;
}

/* A directory added over a directory: a later tar member for the same
 * directory describes it afresh, so its xattrs go too; children stay. */
static void dir_redefine(struct cfs_builder *b, uint32_t node, const struct cfs_attr *a)
{
	struct cfs_bnode *n = &b->nodes[node];

	n->attr = *a;
	n->nxa = 0;
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
			dir_redefine(b, old, a);
			b->ents[ent].layer = b->layer;
			*node = old;
			return 0;
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

int cfs_builder_whiteout(struct cfs_builder *b, const char *dir_path, const char *name,
			 size_t name_len)
{
	uint32_t dir;
	int ret, ent;

	if (b->finished || !name_valid(name, name_len))
		return -EINVAL;
	ret = dir_walk(b, dir_path, &dir);
	if (ret)
		return ret;
	ent = ent_find(b, dir, name, name_len);
	if (ent >= 0 && b->ents[ent].child != ENT_GONE && b->ents[ent].layer < b->layer)
		ent_remove(b, (uint32_t)ent);
	return 0;
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
	ret = dir_walk(b, dir_path, &dir);
	if (ret)
		return ret;
	opaque_dir(b, dir);
	return 0;
}

int cfs_builder_link_path(struct cfs_builder *b, const char *path, const char *target_path)
{
	const char *last;
	uint32_t target, dir;
	size_t len;
	int ret;

	ret = cfs_builder_find_path(b, target_path, &target);
	if (ret)
		return ret;
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

int cfs_builder_chunk_new(struct cfs_builder *b, uint32_t *chunk)
{
	int ret;

	if (b->finished)
		return -EINVAL;
	pthread_mutex_lock(&b->chunk_lock);
	ret = b->nchunks >= CFS_BUILDER_MAX_ITEMS ? -EOVERFLOW : 0;
	if (!ret)
		ret = grow((void **)&b->chunks, &b->chunks_cap, b->nchunks + 1, sizeof(*b->chunks));
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

/* ---- finish ---------------------------------------------------------- */

/* Interned strings: one copy of each distinct byte string in the table. */
struct cfs_istr {
	uint64_t hash;
	uint32_t off, len; /* len 0: empty slot */
};

struct cfs_bfinish {
	struct cfs_builder *b;
	uint32_t *order; /* node id by inode number - 1 */
	size_t ninodes, ndirents, nxattrs;

	struct cfs_disk_inode *inodes;
	struct cfs_disk_dirent *dirents;
	struct cfs_disk_xattr *xattrs;
	struct cfs_disk_extent *extents;
	size_t nextents, extents_cap;
	struct cfs_disk_chunk *chunks;
	size_t nchunks;

	uint32_t *chunk_map; /* reserved number -> written number */
	uint32_t *dslots;    /* digest table: written number + 1 */
	size_t dslots_cap;

	char *str;
	size_t str_len, str_cap;
	struct cfs_istr *islots;
	size_t islots_cap, nistr;
};

static int name_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
	int c = memcmp(a, b, CFS_MIN(alen, blen));

	if (c)
		return c;
	return alen < blen ? -1 : alen > blen;
}

static int ent_cmp(const void *x, const void *y, void *ctx)
{
	const struct cfs_builder *b = ctx;
	const struct cfs_bent *e = &b->ents[*(const uint32_t *)x];
	const struct cfs_bent *f = &b->ents[*(const uint32_t *)y];

	return name_cmp(b->arena + e->name_off, e->name_len, b->arena + f->name_off, f->name_len);
}

static int xattr_cmp(const void *x, const void *y, void *ctx)
{
	const struct cfs_builder *b = ctx;
	const struct cfs_bxattr *e = x, *f = y;

	return name_cmp(b->arena + e->name_off, e->name_len, b->arena + f->name_off, f->name_len);
}

/* qsort_r() may not be given NULL, which an empty vector is. */
static void dir_sort(struct cfs_builder *b, struct cfs_bnode *dir)
{
	if (dir->u.dir.n > 1)
		qsort_r(dir->u.dir.v, dir->u.dir.n, sizeof(uint32_t), ent_cmp, b);
}

/* Numbers the reachable nodes depth first, entries in name order, and
 * counts links and table sizes. */
static int fin_number(struct cfs_bfinish *f)
{
	struct cfs_builder *b = f->b;
	struct {
		uint32_t node, pos;
	} *stack;
	size_t depth = 0;

	for (size_t i = 0; i < b->nnodes; i++) {
		b->nodes[i].ino = 0;
		b->nodes[i].nlink = 0;
		b->nodes[i].parent_ino = 0;
	}
	f->order = malloc(b->nnodes * sizeof(*f->order));
	/* Directories form a tree, so the stack never holds more than all of
	 * them. */
	stack = malloc(b->nnodes * sizeof(*stack));
	if (!f->order || !stack) {
		free(stack);
		return -ENOMEM;
	}

	f->order[f->ninodes++] = CFS_NODE_ROOT;
	b->nodes[CFS_NODE_ROOT].ino = CFS_ROOT_INO;
	b->nodes[CFS_NODE_ROOT].parent_ino = CFS_ROOT_INO;
	b->nodes[CFS_NODE_ROOT].nlink = 2;
	f->nxattrs = b->nodes[CFS_NODE_ROOT].nxa;
	stack[depth].node = CFS_NODE_ROOT;
	stack[depth++].pos = 0;
	dir_sort(b, &b->nodes[CFS_NODE_ROOT]);

	while (depth) {
		struct cfs_bnode *dir = &b->nodes[stack[depth - 1].node];
		struct cfs_bnode *child;
		uint32_t cid;

		if (stack[depth - 1].pos == dir->u.dir.n) {
			depth--;
			continue;
		}
		cid = b->ents[dir->u.dir.v[stack[depth - 1].pos++]].child;
		child = &b->nodes[cid];
		f->ndirents++;
		if (S_ISDIR(child->attr.mode))
			dir->nlink++;
		if (child->ino) {
			/* Only a hard link can meet a numbered node. */
			if (S_ISDIR(child->attr.mode)) {
				free(stack);
				return -EUCLEAN;
			}
			child->nlink++;
			continue;
		}
		child->ino = (uint32_t)++f->ninodes;
		f->order[f->ninodes - 1] = cid;
		f->nxattrs += child->nxa;
		if (!S_ISDIR(child->attr.mode)) {
			child->nlink = 1;
			continue;
		}
		child->nlink = 2;
		child->parent_ino = dir->ino;
		dir_sort(b, child);
		stack[depth].node = cid;
		stack[depth++].pos = 0;
	}
	free(stack);
	return 0;
}

/* Offset of s in the string table, adding it on first sight. */
static int fin_intern(struct cfs_bfinish *f, const char *s, size_t len, uint32_t *off)
{
	uint64_t h;
	size_t i;
	int ret;

	if (len == 0) {
		*off = 0;
		return 0;
	}
	if ((f->nistr + 1) * 2 > f->islots_cap) {
		size_t cap = f->islots_cap ? f->islots_cap * 2 : 4096;
		struct cfs_istr *n = calloc(cap, sizeof(*n));

		if (!n)
			return -ENOMEM;
		for (size_t j = 0; j < f->islots_cap; j++) {
			if (!f->islots[j].len)
				continue;
			for (i = f->islots[j].hash & (cap - 1); n[i].len; i = (i + 1) & (cap - 1))
				;
			n[i] = f->islots[j];
		}
		free(f->islots);
		f->islots = n;
		f->islots_cap = cap;
	}

	h = XXH3_64bits(s, len);
	for (i = h & (f->islots_cap - 1); f->islots[i].len; i = (i + 1) & (f->islots_cap - 1)) {
		const struct cfs_istr *e = &f->islots[i];

		if (e->hash == h && e->len == len && !memcmp(f->str + e->off, s, len)) {
			*off = e->off;
			return 0;
		}
	}
	if (f->str_len + len > CFS_INDEX_MAX_SIZE)
		return -EFBIG;
	ret = grow((void **)&f->str, &f->str_cap, f->str_len + len, 1);
	if (ret)
		return ret;
	memcpy(f->str + f->str_len, s, len);
	f->islots[i].hash = h;
	f->islots[i].off = (uint32_t)f->str_len;
	f->islots[i].len = (uint32_t)len;
	f->nistr++;
	*off = (uint32_t)f->str_len;
	f->str_len += len;
	return 0;
}

/* Written number of a reserved chunk: numbered on first reference, one
 * entry per distinct digest. */
static int fin_chunk(struct cfs_bfinish *f, uint32_t chunk, uint32_t *out)
{
	const struct cfs_bchunk *c = &f->b->chunks[chunk];
	size_t mask = f->dslots_cap - 1, i;
	struct cfs_disk_chunk *dc;
	uint64_t h;

	if (f->chunk_map[chunk] != CFS_CHUNK_NONE) {
		*out = f->chunk_map[chunk];
		return 0;
	}
	/* SHA-256 output is uniform: its first bytes are hash enough. */
	memcpy(&h, c->d.b, sizeof(h));
	for (i = h & mask; f->dslots[i]; i = (i + 1) & mask) {
		dc = &f->chunks[f->dslots[i] - 1];
		if (!memcmp(dc->digest, c->d.b, CFS_DIGEST_LEN)) {
			/* Equal digests mean equal content. */
			if (le32toh(dc->raw_size) != c->raw_size) {
				cfs_debug("builder: chunk %u: digest of another size", chunk);
				return -EINVAL;
			}
			f->chunk_map[chunk] = f->dslots[i] - 1;
			*out = f->chunk_map[chunk];
			return 0;
		}
	}
	dc = &f->chunks[f->nchunks];
	memcpy(dc->digest, c->d.b, CFS_DIGEST_LEN);
	dc->raw_size = htole32(c->raw_size);
	dc->stored_size = htole32(c->stored_size);
	f->dslots[i] = (uint32_t)++f->nchunks;
	f->chunk_map[chunk] = (uint32_t)(f->nchunks - 1);
	*out = f->chunk_map[chunk];
	return 0;
}

static int fin_extent(struct cfs_bfinish *f, uint64_t off, uint64_t len, uint32_t chunk,
		      uint32_t chunk_off)
{
	struct cfs_disk_extent *e;
	int ret;

	ret = grow((void **)&f->extents, &f->extents_cap, f->nextents + 1, sizeof(*f->extents));
	if (ret)
		return ret;
	e = &f->extents[f->nextents++];
	e->file_off = htole64(off);
	e->len = htole64(len);
	e->chunk = htole32(chunk);
	e->chunk_off = htole32(chunk_off);
	return 0;
}

/* Extents of one file with the holes filled in; returns the count. */
static int fin_file(struct cfs_bfinish *f, const struct cfs_bnode *n, uint32_t *count)
{
	size_t first = f->nextents;
	uint64_t pos = 0, size = n->attr.size;
	/* Last data extent written for this file, for merging. */
	uint64_t m_off = 0, m_len = 0;
	uint32_t m_chunk = CFS_CHUNK_NONE, m_coff = 0;
	int ret;

	for (uint32_t i = 0; i < n->u.reg.n; i++) {
		const struct cfs_bext *e = &n->u.reg.v[i];
		uint32_t c;

		if (e->off + e->len > size) {
			cfs_debug("builder: extent at %llu past the end of a file of %llu bytes",
				  (unsigned long long)e->off, (unsigned long long)size);
			return -EINVAL;
		}
		ret = fin_chunk(f, e->chunk, &c);
		if (ret)
			return ret;
		if ((uint64_t)e->chunk_off + e->len > f->b->chunks[e->chunk].raw_size) {
			cfs_debug("builder: extent past the end of chunk %u", e->chunk);
			return -EINVAL;
		}
		if (e->off > pos) {
			ret = fin_extent(f, pos, e->off - pos, CFS_CHUNK_NONE, 0);
			if (ret)
				return ret;
			m_chunk = CFS_CHUNK_NONE;
		}
		/* Chunks merged by digest can make neighbours contiguous. */
		if (m_chunk == c && m_off + m_len == e->off && m_coff + m_len == e->chunk_off) {
			m_len += e->len;
			f->extents[f->nextents - 1].len = htole64(m_len);
		} else {
			ret = fin_extent(f, e->off, e->len, c, e->chunk_off);
			if (ret)
				return ret;
			m_off = e->off;
			m_len = e->len;
			m_chunk = c;
			m_coff = e->chunk_off;
		}
		pos = e->off + e->len;
	}
	if (pos < size) {
		ret = fin_extent(f, pos, size - pos, CFS_CHUNK_NONE, 0);
		if (ret)
			return ret;
	}
	if (f->nextents - first > UINT32_MAX)
		return -EFBIG;
	*count = (uint32_t)(f->nextents - first);
	return 0;
}

static int fin_inode(struct cfs_bfinish *f, size_t idx, size_t *dpos, size_t *xpos,
		     uint64_t *file_bytes, uint64_t *files, uint64_t *dirs)
{
	struct cfs_builder *b = f->b;
	struct cfs_bnode *n = &b->nodes[f->order[idx]];
	struct cfs_disk_inode *di = &f->inodes[idx];
	uint32_t mode = n->attr.mode, a32, cnt;
	uint64_t size = 0, a = 0;
	uint32_t bcount = 0;
	int ret;

	if (n->nxa > 1)
		qsort_r(n->xa, n->nxa, sizeof(*n->xa), xattr_cmp, b);
	di->xattr_first = htole32((uint32_t)*xpos);
	di->xattr_count = htole32(n->nxa);
	for (uint32_t i = 0; i < n->nxa; i++) {
		struct cfs_disk_xattr *dx = &f->xattrs[(*xpos)++];
		uint32_t no, vo;

		ret = fin_intern(f, b->arena + n->xa[i].name_off, n->xa[i].name_len, &no);
		if (!ret)
			ret = fin_intern(f, b->arena + n->xa[i].val_off, n->xa[i].val_len, &vo);
		if (ret)
			return ret;
		dx->name_off = htole32(no);
		dx->name_len = htole16(n->xa[i].name_len);
		dx->value_off = htole32(vo);
		dx->value_len = htole32(n->xa[i].val_len);
	}

	switch (mode & S_IFMT) {
	case S_IFDIR:
		(*dirs)++;
		a = *dpos;
		bcount = n->u.dir.n;
		for (uint32_t i = 0; i < n->u.dir.n; i++) {
			const struct cfs_bent *e = &b->ents[n->u.dir.v[i]];
			const struct cfs_bnode *c = &b->nodes[e->child];
			struct cfs_disk_dirent *dd = &f->dirents[(*dpos)++];
			uint32_t no;

			ret = fin_intern(f, b->arena + e->name_off, e->name_len, &no);
			if (ret)
				return ret;
			dd->ino = htole32(c->ino);
			dd->name_off = htole32(no);
			dd->name_len = htole16(e->name_len);
			dd->type = (uint8_t)((c->attr.mode & S_IFMT) >> 12); /* IFTODT */
		}
		break;
	case S_IFREG:
		(*files)++;
		size = n->attr.size;
		*file_bytes += size;
		a = f->nextents;
		ret = fin_file(f, n, &cnt);
		if (ret)
			return ret;
		bcount = cnt;
		break;
	case S_IFLNK:
		if (!n->u.lnk.len) {
			cfs_debug("builder: symlink inode %u without a target", n->ino);
			return -EINVAL;
		}
		ret = fin_intern(f, b->arena + n->u.lnk.off, n->u.lnk.len, &a32);
		if (ret)
			return ret;
		a = a32;
		bcount = n->u.lnk.len;
		size = n->u.lnk.len;
		break;
	case S_IFCHR:
	case S_IFBLK:
		a = n->attr.rdev;
		break;
	default:
		break;
	}

	di->mode = htole32(mode);
	di->uid = htole32(n->attr.uid);
	di->gid = htole32(n->attr.gid);
	di->nlink = htole32(n->nlink);
	di->size = htole64(size);
	di->mtime_sec = (int64_t)htole64((uint64_t)n->attr.mtime_sec);
	di->mtime_nsec = htole32(n->attr.mtime_nsec);
	di->parent = htole32(n->parent_ino);
	di->a = htole64(a);
	di->b = htole32(bcount);
	return 0;
}

static void fin_section(struct cfs_disk_header *h, enum cfs_section s, size_t *pos, size_t size)
{
	*pos = CFS_ALIGN_UP(*pos, (size_t)8);
	h->sec[s].offset = htole64(*pos);
	h->sec[s].size = htole64(size);
	*pos += size;
}

static void fin_free(struct cfs_bfinish *f)
{
	free(f->order);
	free(f->inodes);
	free(f->dirents);
	free(f->xattrs);
	free(f->extents);
	free(f->chunks);
	free(f->chunk_map);
	free(f->dslots);
	free(f->str);
	free(f->islots);
}

int cfs_builder_finish(struct cfs_builder *b, void **index, size_t *len,
		       struct cfs_builder_stats *stats)
{
	struct cfs_bfinish f = { .b = b };
	uint64_t file_bytes = 0, files = 0, dirs = 0;
	struct cfs_disk_header h;
	size_t dpos = 0, xpos = 0, pos, nchunks;
	uint8_t *buf;
	int ret;

	if (b->finished)
		return -EINVAL;

	/* Workers are done by now; the lock orders their writes before ours. */
	pthread_mutex_lock(&b->chunk_lock);
	nchunks = b->nchunks;
	pthread_mutex_unlock(&b->chunk_lock);
	for (size_t i = 0; i < nchunks; i++) {
		if (!b->chunks[i].set) {
			cfs_debug("builder: chunk %zu reserved but never set", i);
			return -EINVAL;
		}
	}

	ret = fin_number(&f);
	if (ret)
		goto out;

	ret = -ENOMEM;
	f.inodes = calloc(f.ninodes, sizeof(*f.inodes));
	f.dirents = calloc(f.ndirents ? f.ndirents : 1, sizeof(*f.dirents));
	f.xattrs = calloc(f.nxattrs ? f.nxattrs : 1, sizeof(*f.xattrs));
	f.chunks = calloc(nchunks ? nchunks : 1, sizeof(*f.chunks));
	f.chunk_map = malloc((nchunks ? nchunks : 1) * sizeof(*f.chunk_map));
	for (f.dslots_cap = 16; f.dslots_cap < nchunks * 2; f.dslots_cap *= 2)
		;
	f.dslots = calloc(f.dslots_cap, sizeof(*f.dslots));
	if (!f.inodes || !f.dirents || !f.xattrs || !f.chunks || !f.chunk_map || !f.dslots)
		goto out;
	memset(f.chunk_map, 0xff, nchunks * sizeof(*f.chunk_map));

	for (size_t i = 0; i < f.ninodes; i++) {
		ret = fin_inode(&f, i, &dpos, &xpos, &file_bytes, &files, &dirs);
		if (ret)
			goto out;
	}

	memset(&h, 0, sizeof(h));
	memcpy(h.magic, CFS_INDEX_MAGIC, sizeof(h.magic));
	pos = sizeof(h);
	fin_section(&h, CFS_SEC_INODES, &pos, f.ninodes * sizeof(*f.inodes));
	fin_section(&h, CFS_SEC_DIRENTS, &pos, f.ndirents * sizeof(*f.dirents));
	fin_section(&h, CFS_SEC_EXTENTS, &pos, f.nextents * sizeof(*f.extents));
	fin_section(&h, CFS_SEC_CHUNKS, &pos, f.nchunks * sizeof(*f.chunks));
	fin_section(&h, CFS_SEC_XATTRS, &pos, f.nxattrs * sizeof(*f.xattrs));
	fin_section(&h, CFS_SEC_STRINGS, &pos, f.str_len);
	if (pos > CFS_INDEX_MAX_SIZE) {
		ret = -EFBIG;
		goto out;
	}
	h.version = htole32(CFS_INDEX_VERSION);
	h.header_size = htole32(sizeof(h));
	h.features_compat = htole64(0);
	h.features_incompat = htole64(0);
	h.index_size = htole64(pos);
	h.chunk_size = htole32(b->chunk_size);
	h.inode_count = htole32((uint32_t)f.ninodes);
	h.total_file_bytes = htole64(file_bytes);
	h.created_sec = htole64(0);

	/* calloc: the padding between sections must be zero. */
	buf = calloc(1, pos);
	if (!buf) {
		ret = -ENOMEM;
		goto out;
	}
	memcpy(buf, &h, sizeof(h));
	memcpy(buf + le64toh(h.sec[CFS_SEC_INODES].offset), f.inodes,
	       f.ninodes * sizeof(*f.inodes));
	if (f.ndirents)
		memcpy(buf + le64toh(h.sec[CFS_SEC_DIRENTS].offset), f.dirents,
		       f.ndirents * sizeof(*f.dirents));
	if (f.nextents)
		memcpy(buf + le64toh(h.sec[CFS_SEC_EXTENTS].offset), f.extents,
		       f.nextents * sizeof(*f.extents));
	if (f.nchunks)
		memcpy(buf + le64toh(h.sec[CFS_SEC_CHUNKS].offset), f.chunks,
		       f.nchunks * sizeof(*f.chunks));
	if (f.nxattrs)
		memcpy(buf + le64toh(h.sec[CFS_SEC_XATTRS].offset), f.xattrs,
		       f.nxattrs * sizeof(*f.xattrs));
	if (f.str_len)
		memcpy(buf + le64toh(h.sec[CFS_SEC_STRINGS].offset), f.str, f.str_len);

	if (stats) {
		stats->inodes = f.ninodes;
		stats->files = files;
		stats->dirs = dirs;
		stats->file_bytes = file_bytes;
		stats->chunks = nchunks;
		stats->unique_chunks = f.nchunks;
	}
	*index = buf;
	*len = pos;
	b->finished = true;
	ret = 0;
out:
	fin_free(&f);
	return ret;
}
