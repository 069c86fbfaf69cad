/* SPDX-License-Identifier: MIT */
/*
 * Profile-guided packing for cfs-pack (docs/FORMAT.md, "Prefetch list"):
 * the files a profile names, in first-read order, for the sources to feed
 * first, and the mapping of the profile onto a finished index, which gives
 * the image its prefetch list (written by cfs_pack_finish(), and by
 * cfs-pack --add-profile onto an image already in a store).
 *
 * A profile describes reads of an earlier image, whose chunks may differ
 * from this one's: its chunk records are mapped by path and offset, never
 * by digest.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "format.h"
#include "index.h"
#include "profile.h"
#include "util.h"

#include "pack.h"

/* Profile paths are absolute within the image; the sources use them
 * relative to the root, without empty or "." components. */
static char *norm_dup(const char *path)
{
	size_t len = strlen(path), o = 0, n;
	char *out = malloc(len + 1);
	const char *s;

	if (!out)
		return NULL;
	while ((n = cfs_path_next(&path, &s))) {
		if (o)
			out[o++] = '/';
		memcpy(out + o, s, n);
		o += n;
	}
	out[o] = '\0';
	return out;
}

struct rank_key {
	const struct cfs_pack_prof *pf;
	const char *path;
};

static int rank_cmp(const void *key, const void *elem)
{
	const struct rank_key *k = key;

	return strcmp(k->path, k->pf->paths[*(const size_t *)elem]);
}

static int find_sorted(const struct cfs_pack_prof *pf, const char *path, size_t *rank)
{
	struct rank_key k = { pf, path };
	const size_t *r = pf->n ? bsearch(&k, pf->sorted, pf->n, sizeof(*pf->sorted), rank_cmp)
				: NULL;

	if (!r)
		return -ENOENT;
	*rank = *r;
	return 0;
}

int cfs_pack_prof_new(const struct cfs_profile *prof, struct cfs_pack_prof **out)
{
	size_t count = cfs_profile_count(prof);
	struct cfs_pack_prof *pf = calloc(1, sizeof(*pf));
	int ret = -ENOMEM;

	*out = NULL;
	if (!pf)
		return -ENOMEM;
	pf->paths = calloc(count + 1, sizeof(*pf->paths));
	pf->sorted = calloc(count + 1, sizeof(*pf->sorted));
	pf->fed = calloc(count + 1, sizeof(*pf->fed));
	if (!pf->paths || !pf->sorted || !pf->fed)
		goto err;
	/* Files in order of first appearance, in 'f' or 'c' records alike:
	 * a merged or hand-written profile may lack the 'f' of a file. */
	for (size_t i = 0; i < count; i++) {
		const struct cfs_profile_entry *e = cfs_profile_entry(prof, i);
		size_t r, lo = 0, hi = pf->n;
		char *p;

		if (e->kind != 'f' && e->kind != 'c')
			continue;
		p = norm_dup(e->path);
		if (!p)
			goto err;
		if (!*p || find_sorted(pf, p, &r) == 0) {
			free(p);
			continue;
		}
		/* Insertion into the sorted view: profiles are a few thousand
		 * files, and this keeps lookups valid while building. */
		while (lo < hi) {
			size_t mid = lo + (hi - lo) / 2;

			if (strcmp(p, pf->paths[pf->sorted[mid]]) < 0)
				hi = mid;
			else
				lo = mid + 1;
		}
		memmove(pf->sorted + lo + 1, pf->sorted + lo, (pf->n - lo) * sizeof(*pf->sorted));
		pf->sorted[lo] = pf->n;
		pf->paths[pf->n++] = p;
	}
	*out = pf;
	return 0;
err:
	cfs_pack_prof_free(pf);
	return ret;
}

void cfs_pack_prof_free(struct cfs_pack_prof *pf)
{
	if (!pf)
		return;
	for (size_t i = 0; i < pf->n; i++)
		free(pf->paths[i]);
	free(pf->paths);
	free(pf->sorted);
	free(pf->fed);
	free(pf);
}

uint32_t cfs_pack_prof_rank(const struct cfs_pack_prof *pf, const char *path)
{
	size_t r;

	if (!pf || find_sorted(pf, path, &r) < 0 || r >= UINT32_MAX)
		return UINT32_MAX;
	return (uint32_t)r;
}

/* The regular file at an absolute image path, or -ENOENT. */
static int lookup_file(const struct cfs_index *idx, const char *path, uint64_t *ino)
{
	struct cfs_inode in;
	uint64_t cur;
	int ret;

	ret = cfs_index_lookup_path(idx, path, &cur);
	if (ret < 0)
		return -ENOENT;
	ret = cfs_index_inode(idx, cur, &in);
	if (ret < 0 || !S_ISREG(in.mode))
		return -ENOENT;
	*ino = cur;
	return 0;
}

/* The chunk holding byte off of file ino, or CFS_CHUNK_NONE (a hole, or
 * past the end: the file changed since the profile was recorded).  For a
 * file record (first), the first chunk with data at or after off. */
static uint32_t chunk_at(const struct cfs_index *idx, uint64_t ino, uint64_t off, bool first)
{
	struct cfs_extent e;
	uint32_t i;

	if (cfs_index_extent_find(idx, ino, off, &i) != 0)
		return CFS_CHUNK_NONE;
	while (cfs_index_extent(idx, ino, i++, &e) == 1) {
		if (e.chunk != CFS_CHUNK_NONE || !first)
			return e.chunk;
	}
	return CFS_CHUNK_NONE;
}

int cfs_pack_prefetch_map(const struct cfs_index *idx, const struct cfs_profile *prof,
			  uint32_t **chunks, size_t *count)
{
	struct cfs_index_info info;
	size_t n = cfs_profile_count(prof), k = 0;
	uint64_t *seen;
	uint32_t *out;

	*chunks = NULL;
	*count = 0;
	cfs_index_info(idx, &info);
	seen = calloc(info.chunk_count / 64 + 1, sizeof(*seen));
	out = malloc((CFS_MIN((uint64_t)n, info.chunk_count) + 1) * sizeof(*out));
	if (!seen || !out) {
		free(seen);
		free(out);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n && k < info.chunk_count; i++) {
		const struct cfs_profile_entry *e = cfs_profile_entry(prof, i);
		uint64_t ino;
		uint32_t c;

		if (e->kind != 'f' && e->kind != 'c')
			continue;
		if (lookup_file(idx, e->path, &ino) < 0)
			continue; /* not in this image */
		c = chunk_at(idx, ino, e->kind == 'c' ? e->offset : 0, e->kind == 'f');
		if (c == CFS_CHUNK_NONE || (seen[c / 64] & (1ull << (c % 64))))
			continue;
		seen[c / 64] |= 1ull << (c % 64);
		out[k++] = c;
	}
	free(seen);
	*chunks = out;
	*count = k;
	return 0;
}

int cfs_pack_prefetch_attach(struct cfs_store *st, const struct cfs_profile *prof, void *idx,
			     size_t len, int level, size_t *count, size_t *stored)
{
	struct cfs_index *ix = NULL;
	uint32_t *chunks = NULL;
	void *copy = malloc(len), *list = NULL;
	size_t n = 0, list_len;
	cfs_digest d;
	int ret;

	*count = 0;
	*stored = 0;
	if (!copy)
		return -ENOMEM;
	memcpy(copy, idx, len);
	ret = cfs_index_open(copy, len, &ix);
	if (ret < 0) {
		free(copy);
		return ret;
	}
	ret = cfs_pack_prefetch_map(ix, prof, &chunks, &n);
	if (ret < 0 || n == 0)
		goto out;
	ret = cfs_prefetch_encode(chunks, n, &list, &list_len);
	if (ret < 0)
		goto out;
	ret = cfs_pack_obj_put(st, list, list_len, level, &d, stored);
	if (ret < 0)
		goto out;
	ret = cfs_index_set_prefetch(idx, len, &d);
	if (ret == 0)
		*count = n;
out:
	free(list);
	free(chunks);
	cfs_index_free(ix);
	return ret;
}
