/* SPDX-License-Identifier: MIT */
/*
 * The hints section of an index (format.h, docs/FORMAT.md "Hints"), made
 * when the builder finishes, from what the chunker read of each ELF file
 * (cfs_builder_set_elf).  A start-up that loads a program or dlopens a
 * library then opens its interpreter and needed libraries one after
 * another, each a demand miss unless fetched before it is asked for; so
 * each ELF file gets, as its hints, every file its loading opens.
 *
 * A needed name is looked up as the dynamic loader would on this tree:
 * in the file's own DT_RUNPATH (or DT_RPATH) directories with $ORIGIN
 * its directory, then the system directories of its machine, following
 * symlinks inside the tree; a name with a '/' is a path.  /etc/ld.so.cache
 * and ld.so.conf are not read (their files' bytes are in chunks by now),
 * which only loses hints for libraries in directories only they name.
 * Each ELF's list is the transitive closure of what that finds, bounded,
 * as sorted inode numbers; equal lists are stored once, since most
 * libraries of a system share theirs (libc and the loader).
 */
#include <endian.h>
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <xxhash.h>

#include "builder_i.h"
#include "elf.h"
#include "format.h"
#include "util.h"

/* Inodes in one ELF's list at most: the closure stops growing there. */
#define HINTS_CLOSURE_MAX 256u
/* Symlinks followed in one lookup, as Linux's MAXSYMLINKS. */
#define HINTS_LINKS_MAX 40u
#define NONE UINT32_MAX

static const char *const std_dirs_x86_64[] = {
	"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64",
	"/lib", "/usr/lib", "/usr/local/lib/x86_64-linux-gnu", "/usr/local/lib",
};
static const char *const std_dirs_aarch64[] = {
	"/lib/aarch64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/lib64", "/usr/lib64",
	"/lib", "/usr/lib", "/usr/local/lib/aarch64-linux-gnu", "/usr/local/lib",
};
#define STD_DIRS CFS_ARRAY_SIZE(std_dirs_x86_64)
static_assert(CFS_ARRAY_SIZE(std_dirs_aarch64) == STD_DIRS, "system directories");

struct hctx {
	struct cfs_builder *b;
	const uint32_t *order;
	uint32_t *elf_of;    /* node -> its record in b->elfs, or NONE */
	uint32_t *dir_of;    /* record -> the directory first naming its file, or NONE */
	uint32_t **direct;   /* record -> the nodes its own headers lead to */
	uint32_t *ndirect;   /* their count; NONE: not resolved yet */
	uint32_t *seen;      /* node -> closure generation */
	uint32_t gen;
	uint32_t std[2][STD_DIRS]; /* x86_64, aarch64: directory nodes or NONE */
	uint64_t unresolved;

	/* The section being made. */
	struct cfs_disk_hint *trig;
	size_t ntrig, trig_cap;
	uint32_t *starts;    /* lists + 1 */
	size_t nlists, starts_cap;
	uint64_t *lhash;     /* per list */
	size_t lhash_cap;
	uint32_t *ent;
	size_t nent, ent_cap;
	uint32_t *slots;     /* lists by hash: list + 1, 0 empty; power of two */
	size_t slots_cap;
};

static uint32_t parent_node(const struct hctx *h, uint32_t dir)
{
	return h->order[h->b->nodes[dir].parent_ino - 1];
}

/* The node path names from directory dir, as open(2) would resolve it in
 * the tree: symlinks followed (*links more at most).  0 and *out,
 * -ENOENT, -ENOTDIR, -ELOOP, -ENAMETOOLONG. */
static int resolve(const struct hctx *h, uint32_t dir, const char *path, size_t len,
		   unsigned *links, uint32_t *out)
{
	const struct cfs_builder *b = h->b;
	char buf[CFS_SYMLINK_MAX + 1];
	const char *p = buf, *name;
	uint32_t cur = dir;
	size_t n;
	int ret;

	if (len >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, path, len);
	buf[len] = '\0';
	if (buf[0] == '/')
		cur = CFS_NODE_ROOT;
	while ((n = cfs_path_next(&p, &name))) {
		const struct cfs_bnode *c;
		uint32_t child;

		if (!S_ISDIR(b->nodes[cur].attr.mode))
			return -ENOTDIR;
		if (n == 2 && name[0] == '.' && name[1] == '.') {
			cur = parent_node(h, cur);
			continue;
		}
		if (cfs_builder_child(b, cur, name, n, &child))
			return -ENOENT;
		c = &b->nodes[child];
		if (S_ISLNK(c->attr.mode)) {
			if (!*links)
				return -ELOOP;
			(*links)--;
			ret = resolve(h, cur, b->arena + c->u.lnk.off, c->u.lnk.len, links, &child);
			if (ret)
				return ret;
		}
		cur = child;
	}
	*out = cur;
	return 0;
}

/* The regular file name (len bytes, no '/') in directory dir. */
static bool file_in(const struct hctx *h, uint32_t dir, const char *name, size_t len,
		    uint32_t *node)
{
	unsigned links = HINTS_LINKS_MAX;

	return dir != NONE && resolve(h, dir, name, len, &links, node) == 0 &&
	       S_ISREG(h->b->nodes[*node].attr.mode);
}

/* Directory node of one run path entry of record r, or NONE: $ORIGIN
 * (or ${ORIGIN}) is the file's directory; other substitutions ($LIB,
 * $PLATFORM) and relative entries, which depend on the process, name
 * none. */
static uint32_t runpath_dir(const struct hctx *h, uint32_t r, const char *s, size_t len)
{
	unsigned links = HINTS_LINKS_MAX;
	uint32_t base = CFS_NODE_ROOT, node;
	size_t skip = 0;

	if (len >= 7 && !memcmp(s, "$ORIGIN", 7))
		skip = 7;
	else if (len >= 9 && !memcmp(s, "${ORIGIN}", 9))
		skip = 9;
	if (skip) {
		base = h->dir_of[r];
		if (base == NONE || (len > skip && s[skip] != '/'))
			return NONE;
		/* What follows is relative to it, not to the root. */
		s += skip + (len > skip);
		len -= skip + (len > skip);
	} else if (!len || s[0] != '/') {
		return NONE;
	}
	if (memchr(s, '$', len) || resolve(h, base, s, len, &links, &node) ||
	    !S_ISDIR(h->b->nodes[node].attr.mode))
		return NONE;
	return node;
}

/* Where the loader finds needed name n for record r: 0 and *node, or
 * -ENOENT. */
static int find_needed(const struct hctx *h, uint32_t r, const char *runpath, const char *n,
		       uint32_t *node)
{
	const struct cfs_belf *e = &h->b->elfs[r];
	size_t len = strlen(n);
	const char *p = runpath;

	if (strchr(n, '/')) {
		unsigned links = HINTS_LINKS_MAX;

		/* A relative path is the process's working directory's. */
		if (n[0] == '/' && resolve(h, CFS_NODE_ROOT, n, len, &links, node) == 0 &&
		    S_ISREG(h->b->nodes[*node].attr.mode))
			return 0;
		return -ENOENT;
	}
	while (*p) {
		const char *end = strchrnul(p, ':');

		if (file_in(h, runpath_dir(h, r, p, (size_t)(end - p)), n, len, node))
			return 0;
		p = *end ? end + 1 : end;
	}
	for (size_t i = 0; i < STD_DIRS; i++)
		if (file_in(h, h->std[e->machine == CFS_ELF_EM_AARCH64][i], n, len, node))
			return 0;
	return -ENOENT;
}

static void unresolved(struct hctx *h, uint32_t r, const char *name)
{
	h->unresolved++;
	cfs_debug("builder: hints: %s, needed by inode %u, is not in the image", name,
		  h->b->nodes[h->b->elfs[r].node].ino);
}

/* The files record r's own headers lead to, resolved once. */
static int direct_deps(struct hctx *h, uint32_t r)
{
	const struct cfs_belf *e = &h->b->elfs[r];
	const char *interp = h->b->arena + e->off;
	const char *runpath = interp + strlen(interp) + 1;
	const char *n = runpath + strlen(runpath) + 1;
	uint32_t *v, count = 0, node;

	if (h->ndirect[r] != NONE)
		return 0;
	v = malloc((e->nneeded + 1ull) * sizeof(*v));
	if (!v)
		return -ENOMEM;
	if (*interp) {
		unsigned links = HINTS_LINKS_MAX;

		if (resolve(h, CFS_NODE_ROOT, interp, strlen(interp), &links, &node) == 0 &&
		    S_ISREG(h->b->nodes[node].attr.mode))
			v[count++] = node;
		else
			unresolved(h, r, interp);
	}
	for (uint32_t i = 0; i < e->nneeded; i++, n += strlen(n) + 1) {
		if (find_needed(h, r, runpath, n, &node) == 0)
			v[count++] = node;
		else
			unresolved(h, r, n);
	}
	h->direct[r] = v;
	h->ndirect[r] = count;
	return 0;
}

static int u32_cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/* The closure of record r into list (HINTS_CLOSURE_MAX nodes): breadth
 * first, as the loader goes, without r's own file.  Its length. */
static int closure(struct hctx *h, uint32_t r, uint32_t *list, uint32_t *count)
{
	uint32_t n = 0;
	int ret;

	if (++h->gen == 0) {
		memset(h->seen, 0, h->b->nnodes * sizeof(*h->seen));
		h->gen = 1;
	}
	h->seen[h->b->elfs[r].node] = h->gen;
	for (uint32_t at = 0, cur = r;;) {
		ret = direct_deps(h, cur);
		if (ret)
			return ret;
		for (uint32_t i = 0; i < h->ndirect[cur] && n < HINTS_CLOSURE_MAX; i++) {
			uint32_t d = h->direct[cur][i];

			if (h->seen[d] == h->gen)
				continue;
			h->seen[d] = h->gen;
			list[n++] = d;
		}
		/* The next file of the list that is an ELF with a record. */
		while (at < n && h->elf_of[list[at]] == NONE)
			at++;
		if (at == n)
			break;
		cur = h->elf_of[list[at++]];
	}
	for (uint32_t i = 0; i < n; i++)
		list[i] = h->b->nodes[list[i]].ino;
	qsort(list, n, sizeof(*list), u32_cmp);
	*count = n;
	return 0;
}

/* The empty slot for list id, or its own. */
static uint32_t *list_slot(const struct hctx *h, uint64_t hash, const uint32_t *v, uint32_t n)
{
	size_t mask = h->slots_cap - 1;

	for (size_t i = hash & mask;; i = (i + 1) & mask) {
		uint32_t k = h->slots[i] - 1;

		if (!h->slots[i] || (h->lhash[k] == hash && h->starts[k + 1] - h->starts[k] == n &&
				     !memcmp(h->ent + h->starts[k], v, n * sizeof(*v))))
			return &h->slots[i];
	}
}

/* The number of list v (n inodes), stored on first sight. */
static int list_id(struct hctx *h, const uint32_t *v, uint32_t n, uint32_t *id)
{
	uint64_t hash = XXH3_64bits(v, n * sizeof(*v));
	uint32_t *slot;
	int ret;

	if ((h->nlists + 1) * 2 > h->slots_cap) {
		/* Rebuilt from the lists themselves, each hashed once. */
		free(h->slots);
		h->slots_cap = h->slots_cap ? h->slots_cap * 2 : 1024;
		h->slots = calloc(h->slots_cap, sizeof(*h->slots));
		if (!h->slots)
			return -ENOMEM;
		for (size_t k = 0; k < h->nlists; k++)
			*list_slot(h, h->lhash[k], h->ent + h->starts[k],
				   h->starts[k + 1] - h->starts[k]) = (uint32_t)k + 1;
	}
	slot = list_slot(h, hash, v, n);
	if (*slot) {
		*id = *slot - 1;
		return 0;
	}
	if (h->nent + n > CFS_INDEX_MAX_SIZE / sizeof(uint32_t))
		return -EFBIG;
	ret = cfs_builder_grow((void **)&h->ent, &h->ent_cap, h->nent + n, sizeof(*h->ent));
	if (!ret)
		ret = cfs_builder_grow((void **)&h->starts, &h->starts_cap, h->nlists + 2,
				       sizeof(*h->starts));
	if (!ret)
		ret = cfs_builder_grow((void **)&h->lhash, &h->lhash_cap, h->nlists + 1,
				       sizeof(*h->lhash));
	if (ret)
		return ret;
	memcpy(h->ent + h->nent, v, n * sizeof(*v));
	h->lhash[h->nlists] = hash;
	h->nent += n;
	*id = (uint32_t)h->nlists++;
	h->starts[h->nlists] = (uint32_t)h->nent;
	*slot = *id + 1;
	return 0;
}

static int trig_cmp(const void *a, const void *b)
{
	return u32_cmp(&((const struct cfs_disk_hint *)a)->ino, &((const struct cfs_disk_hint *)b)->ino);
}

/* Which directory names each record's file first, in inode order: its
 * $ORIGIN. */
static void find_dirs(struct hctx *h, size_t ninodes)
{
	const struct cfs_builder *b = h->b;

	for (size_t i = 0; i < ninodes; i++) {
		const struct cfs_bnode *d = &b->nodes[h->order[i]];

		if (!S_ISDIR(d->attr.mode))
			continue;
		for (uint32_t k = 0; k < d->u.dir.n; k++) {
			uint32_t r = h->elf_of[b->ents[d->u.dir.v[k]].child];

			if (r != NONE && h->dir_of[r] == NONE)
				h->dir_of[r] = h->order[i];
		}
	}
}

static void std_dirs(struct hctx *h)
{
	for (size_t i = 0; i < STD_DIRS; i++) {
		const char *dirs[2] = { std_dirs_x86_64[i], std_dirs_aarch64[i] };

		for (size_t m = 0; m < 2; m++) {
			unsigned links = HINTS_LINKS_MAX;
			uint32_t node;

			h->std[m][i] = NONE;
			if (resolve(h, CFS_NODE_ROOT, dirs[m], strlen(dirs[m]), &links, &node) == 0 &&
			    S_ISDIR(h->b->nodes[node].attr.mode))
				h->std[m][i] = node;
		}
	}
}

/* The section: header, triggers, list starts, entries. */
static int serialise(struct hctx *h, void **sec, size_t *len)
{
	struct cfs_disk_hints hd = {
		.version = htole32(CFS_HINTS_VERSION),
		.triggers = htole32((uint32_t)h->ntrig),
		.lists = htole32((uint32_t)h->nlists),
		.entries = htole32((uint32_t)h->nent),
	};
	size_t size = sizeof(hd) + h->ntrig * sizeof(*h->trig) + (h->nlists + 1 + h->nent) * 4;
	uint8_t *p, *out;

	out = malloc(size);
	if (!out)
		return -ENOMEM;
	memcpy(out, &hd, sizeof(hd));
	p = out + sizeof(hd);
	for (size_t i = 0; i < h->ntrig; i++, p += sizeof(*h->trig)) {
		struct cfs_disk_hint t = { htole32(h->trig[i].ino), htole32(h->trig[i].list) };

		memcpy(p, &t, sizeof(t));
	}
	for (size_t i = 0; i <= h->nlists; i++, p += 4) {
		uint32_t v = htole32(h->starts[i]);

		memcpy(p, &v, 4);
	}
	for (size_t i = 0; i < h->nent; i++, p += 4) {
		uint32_t v = htole32(h->ent[i]);

		memcpy(p, &v, 4);
	}
	*sec = out;
	*len = size;
	return 0;
}

int cfs_builder_hints(struct cfs_builder *b, const uint32_t *order, size_t ninodes, void **sec,
		      size_t *len, struct cfs_builder_stats *stats)
{
	struct hctx h = { .b = b, .order = order };
	uint32_t list[HINTS_CLOSURE_MAX];
	int ret = -ENOMEM;

	*sec = NULL;
	*len = 0;
	if (!b->nelfs)
		return 0;
	h.elf_of = malloc(b->nnodes * sizeof(*h.elf_of));
	h.seen = calloc(b->nnodes, sizeof(*h.seen));
	h.dir_of = malloc(b->nelfs * sizeof(*h.dir_of));
	h.direct = calloc(b->nelfs, sizeof(*h.direct));
	h.ndirect = malloc(b->nelfs * sizeof(*h.ndirect));
	h.trig = malloc(b->nelfs * sizeof(*h.trig));
	h.starts = calloc(1, sizeof(*h.starts));
	if (!h.elf_of || !h.seen || !h.dir_of || !h.direct || !h.ndirect || !h.trig || !h.starts)
		goto out;
	h.starts_cap = 1;
	memset(h.elf_of, 0xff, b->nnodes * sizeof(*h.elf_of));
	memset(h.dir_of, 0xff, b->nelfs * sizeof(*h.dir_of));
	memset(h.ndirect, 0xff, b->nelfs * sizeof(*h.ndirect));
	/* A file given twice keeps its last record. */
	for (size_t r = 0; r < b->nelfs; r++)
		h.elf_of[b->elfs[r].node] = (uint32_t)r;
	find_dirs(&h, ninodes);
	std_dirs(&h);

	for (size_t r = 0; r < b->nelfs; r++) {
		const struct cfs_belf *e = &b->elfs[r];
		uint32_t n, id;

		/* Unreachable (replaced, removed) or superseded. */
		if (!b->nodes[e->node].ino || h.elf_of[e->node] != r)
			continue;
		if (stats)
			stats->elf_files++;
		ret = closure(&h, (uint32_t)r, list, &n);
		if (!ret && n)
			ret = list_id(&h, list, n, &id);
		if (ret)
			goto out;
		if (n)
			h.trig[h.ntrig++] = (struct cfs_disk_hint){ b->nodes[e->node].ino, id };
	}
	ret = 0;
	if (!h.ntrig)
		goto out;
	qsort(h.trig, h.ntrig, sizeof(*h.trig), trig_cmp);
	ret = serialise(&h, sec, len);
	if (ret == 0 && stats) {
		stats->hint_triggers = h.ntrig;
		stats->hint_lists = h.nlists;
		stats->hint_entries = h.nent;
	}
out:
	if (stats)
		stats->elf_unresolved = h.unresolved;
	for (size_t r = 0; h.direct && r < b->nelfs; r++)
		free(h.direct[r]);
	free(h.direct);
	free(h.ndirect);
	free(h.dir_of);
	free(h.seen);
	free(h.elf_of);
	free(h.trig);
	free(h.starts);
	free(h.ent);
	free(h.lhash);
	free(h.slots);
	return ret;
}
