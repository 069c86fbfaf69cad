/* SPDX-License-Identifier: MIT */
/*
 * Learned profiles (learned.h, docs/PROFILE.md): the profile a mount leaves
 * for the next mount of the same image, and the prefetch list made of it.
 *
 * A learned profile is an ordinary access profile (profile.h), parsed by
 * the same parser under its limits, and further bounded here: at most
 * CFS_LEARN_FILE_MAX bytes are read and only the first
 * CFS_LEARN_RECORDS_MAX records are parsed (the buffer is cut after them),
 * so a hostile one costs a bounded amount of memory and time.  Its chunk
 * records name chunks by digest; they are matched to this image's chunk
 * numbers by sorting the profile's digests and looking up each chunk of the
 * index's table in them, which a profile chosen to collide cannot slow
 * down the way it could a hash table.
 *
 * Saving merges the run with the copies there are (cache and store) by
 * cfs_profile_merge_max(): earliest time wins, the tail past the bound is
 * dropped.  Writers on many nodes race; the last one wins, and every copy
 * is whole (rename locally, one PUT on a store).  A copy found bad is
 * remembered, so that it is logged once and then only overwritten.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "digest.h"
#include "format.h"
#include "image_i.h"
#include "index.h"
#include "learned.h"
#include "profile.h"
#include "store.h"
#include "util.h"

enum { SRC_CACHE, SRC_STORE, SRC_N };

static const char *const src_name[SRC_N + 1] = { "cache", "store", "none" };

struct cfs_learned {
	cfs_digest image;
	char *dir;                  /* <cache dir>/learned, or NULL */
	char *path;                 /* dir/<64 hex>.prof, or NULL */
	char *store_name;           /* <store>/profiles/<64 hex>, for messages */
	struct cfs_store *store;    /* borrowed, or NULL */
	atomic_bool bad[SRC_N];     /* found corrupt: logged, not read again */
	_Atomic int used;           /* SRC_* the list came from; SRC_N: none */
	_Atomic uint64_t chunks, saves, saved_records;
	pthread_mutex_t save_lock;
	bool swept;                 /* dead writers' temporary files removed */
};

int cfs_learned_new(const cfs_digest *image, const char *cache_dir, struct cfs_store *store,
		    struct cfs_learned **out)
{
	char hex[CFS_DIGEST_HEX_LEN + 1];
	struct cfs_learned *l;

	if (!image || !out)
		return -EINVAL;
	l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->image = *image;
	l->store = store;
	atomic_init(&l->used, SRC_N);
	cfs_digest_hex(image, hex);
	if ((cache_dir && (asprintf(&l->dir, "%s/learned", cache_dir) < 0 ||
			   asprintf(&l->path, "%s/%s.prof", l->dir, hex) < 0)) ||
	    (store && asprintf(&l->store_name, "%s/profiles/%s", cfs_store_location(store), hex) < 0)) {
		cfs_learned_free(l);
		return -ENOMEM;
	}
	pthread_mutex_init(&l->save_lock, NULL);
	*out = l;
	return 0;
}

void cfs_learned_free(struct cfs_learned *l)
{
	if (!l)
		return;
	pthread_mutex_destroy(&l->save_lock);
	free(l->dir);
	free(l->path);
	free(l->store_name);
	free(l);
}

void cfs_image_set_learned(struct cfs_image *img, struct cfs_learned *l)
{
	img->learned = l;
}

void cfs_learned_stats_get(struct cfs_learned *l, struct cfs_learned_stats *out)
{
	int used = l ? atomic_load(&l->used) : SRC_N;

	*out = (struct cfs_learned_stats){ .source = src_name[used] };
	if (!l)
		return;
	out->chunks = atomic_load(&l->chunks);
	out->saves = atomic_load(&l->saves);
	out->saved_records = atomic_load(&l->saved_records);
}

/* ---- reading ------------------------------------------------------------ */

/* The length of buf's first CFS_LEARN_RECORDS_MAX record lines (and the
 * lines among them), so that the parser never holds more entries. */
static size_t records_cut(const char *buf, size_t len)
{
	size_t pos = 0, records = 0;

	while (pos < len) {
		const char *nl = memchr(buf + pos, '\n', len - pos);
		size_t end = nl ? (size_t)(nl - buf) + 1 : len;

		if (end - pos > 2 && (buf[pos] == 'f' || buf[pos] == 'c') && buf[pos + 1] == ' ' &&
		    ++records > CFS_LEARN_RECORDS_MAX)
			return pos;
		pos = end;
	}
	return len;
}

/* Reads and parses the copy at src: 0 with *out (NULL when there is none,
 * or it is bad: logged), and with raw its bytes in *raw, *raw_len (the
 * caller frees).  -ENOMEM. */
static int learned_read(struct cfs_learned *l, int src, struct cfs_profile **out, void **raw,
			size_t *raw_len)
{
	const char *name = src == SRC_CACHE ? l->path : l->store_name;
	void *buf = NULL;
	size_t len = 0;
	int ret;

	*out = NULL;
	if (!name || atomic_load(&l->bad[src]))
		return 0;
	if (src == SRC_CACHE)
		ret = cfs_read_file_at(AT_FDCWD, l->path, CFS_LEARN_FILE_MAX, &buf, &len);
	else
		ret = cfs_store_image_file_get(l->store, CFS_IMAGE_PROFILE, &l->image,
					       CFS_LEARN_FILE_MAX, &buf, &len);
	if (ret == -ENOENT)
		return 0;
	if (ret == -ENOMEM)
		return ret;
	if (ret == 0) {
		ret = cfs_profile_load_buf(buf, records_cut(buf, len), name, out);
		if (ret == -ENOMEM)
			goto out;
		if (ret < 0) /* the parser said why, naming the line */
			atomic_store(&l->bad[src], true);
	} else {
		/* An unreadable copy (too big, a store error): one line. */
		cfs_warn("learned profile %s: %s: ignored", name, cfs_strerror(ret));
		if (ret != -ETIMEDOUT && ret != -EIO)
			atomic_store(&l->bad[src], true);
	}
	ret = 0;
	if (raw && *out) {
		*raw = buf;
		*raw_len = len;
		buf = NULL;
	}
out:
	free(buf);
	return ret;
}

struct digest_ref {
	cfs_digest d;
	uint32_t pos;  /* among the profile's chunk records */
};

static int digest_ref_cmp(const void *a, const void *b)
{
	const struct digest_ref *x = a, *y = b;
	int c = memcmp(x->d.b, y->d.b, sizeof(x->d.b));

	return c ? c : (x->pos > y->pos) - (x->pos < y->pos);
}

static int digest_cmp(const void *key, const void *elem)
{
	const cfs_digest *d = key;
	const struct digest_ref *r = elem;

	return memcmp(d->b, r->d.b, sizeof(d->b));
}

/* The chunk numbers of idx that p's chunk records name, in p's order, each
 * once. */
static int map_chunks(const struct cfs_index *idx, const struct cfs_profile *p, uint32_t **chunks,
		      size_t *count)
{
	struct cfs_index_info info;
	struct digest_ref *refs = NULL;
	uint32_t *at = NULL, *list = NULL;
	size_t n = 0, m = 0, k = 0;
	int ret = -ENOMEM;

	for (size_t i = 0; i < cfs_profile_count(p); i++)
		n += cfs_profile_entry(p, i)->kind == 'c';
	if (n == 0)
		return 0;
	refs = malloc(n * sizeof(*refs));
	at = malloc(n * sizeof(*at));
	if (!refs || !at)
		goto out;
	for (size_t i = 0; i < cfs_profile_count(p); i++) {
		const struct cfs_profile_entry *e = cfs_profile_entry(p, i);

		if (e->kind == 'c') {
			refs[k] = (struct digest_ref){ e->digest, (uint32_t)k };
			at[k++] = CFS_CHUNK_NONE;
		}
	}
	/* By digest, a digest's first record first; its later ones go. */
	qsort(refs, n, sizeof(*refs), digest_ref_cmp);
	for (size_t i = 0; i < n; i++)
		if (m == 0 || !cfs_digest_eq(&refs[m - 1].d, &refs[i].d))
			refs[m++] = refs[i];
	cfs_index_info(idx, &info);
	for (uint32_t ci = 0; ci < info.chunk_count; ci++) {
		const struct digest_ref *r;
		struct cfs_chunk c;

		if (cfs_index_chunk(idx, ci, &c) < 0)
			continue;
		r = bsearch(&c.digest, refs, m, sizeof(*refs), digest_cmp);
		if (r && at[r->pos] == CFS_CHUNK_NONE)
			at[r->pos] = ci;
	}
	list = malloc(n * sizeof(*list));
	if (!list)
		goto out;
	k = 0;
	for (size_t i = 0; i < n; i++)
		if (at[i] != CFS_CHUNK_NONE)
			list[k++] = at[i];
	if (k == 0) {
		free(list);
		list = NULL;
	}
	*chunks = list;
	*count = k;
	ret = 0;
out:
	free(refs);
	free(at);
	return ret;
}

int cfs_image_learned_list(struct cfs_image *img, uint32_t **chunks, size_t *count)
{
	struct cfs_learned *l = img->learned;
	struct cfs_profile *p = NULL;
	int src, ret = 0;

	*chunks = NULL;
	*count = 0;
	if (!l)
		return 0;
	for (src = 0; src < SRC_N && !p; src++) {
		ret = learned_read(l, src, &p, NULL, NULL);
		if (ret < 0)
			return ret;
	}
	if (!p)
		return 0;
	ret = map_chunks(img->idx, p, chunks, count);
	cfs_profile_free(p);
	if (ret < 0)
		return ret;
	atomic_store(&l->used, src - 1);
	atomic_store(&l->chunks, *count);
	cfs_info("learned profile from the %s: %zu chunks to prefetch", src_name[src - 1], *count);
	return 0;
}

/* ---- saving ------------------------------------------------------------- */

/* The text of what r recorded in its window, parsed. */
static int run_profile(struct cfs_recorder *r, uint64_t max_usec, struct cfs_profile **out)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f;
	int ret;

	f = open_memstream(&buf, &len);
	if (!f)
		return -ENOMEM;
	ret = cfs_recorder_write(r, f, CFS_LEARN_RECORDS_MAX, max_usec);
	if (fclose(f) != 0 && ret == 0)
		ret = -ENOMEM;
	if (ret == 0)
		ret = cfs_profile_load_buf(buf, len, "this run's profile", out);
	free(buf);
	return ret;
}

/* Writes len bytes at buf to l->path atomically, owner-only like the
 * cache's entries: it names files the user may not be allowed to see.
 * The first write also removes what writers that died mid-write left
 * (the directory is outside the chunk cache's scans).  With save_lock. */
static int cache_write(struct cfs_learned *l, const void *buf, size_t len)
{
	if (mkdir(l->dir, 0700) < 0 && errno != EEXIST)
		return -errno;
	if (!l->swept) {
		int n = cfs_write_file_sweep(AT_FDCWD, l->dir);

		if (n > 0)
			cfs_info("learned: removed %d temporary file%s of writers that died", n,
				 n == 1 ? "" : "s");
		l->swept = true;
	}
	return cfs_write_file_at(AT_FDCWD, l->path, buf, len, 0600, true);
}

static int digest_order(const void *a, const void *b)
{
	return memcmp(((const cfs_digest *)a)->b, ((const cfs_digest *)b)->b, sizeof(cfs_digest));
}

/* What a merge keeps of the earlier copies: what names a chunk or a
 * regular file of this image, so that records of another image (or made
 * up) never hold on to places under the bound. */
struct keep_arg {
	const struct cfs_index *idx;
	cfs_digest *digests;  /* the image's chunks, sorted */
	size_t n;
};

static bool keep_entry(const struct cfs_profile_entry *e, void *arg)
{
	const struct keep_arg *k = arg;
	struct cfs_inode in;
	uint64_t ino;

	if (e->kind == 'c')
		return bsearch(&e->digest, k->digests, k->n, sizeof(*k->digests), digest_order);
	return cfs_index_lookup_path(k->idx, e->path, &ino) == 0 &&
	       cfs_index_inode(k->idx, ino, &in) == 0 && S_ISREG(in.mode);
}

static int keep_init(struct keep_arg *k, const struct cfs_index *idx)
{
	struct cfs_index_info info;
	struct cfs_chunk c;

	cfs_index_info(idx, &info);
	*k = (struct keep_arg){ .idx = idx };
	k->digests = malloc((info.chunk_count ? info.chunk_count : 1) * sizeof(*k->digests));
	if (!k->digests)
		return -ENOMEM;
	for (uint32_t ci = 0; ci < info.chunk_count; ci++)
		if (cfs_index_chunk(idx, ci, &c) == 0)
			k->digests[k->n++] = c.digest;
	qsort(k->digests, k->n, sizeof(*k->digests), digest_order);
	return 0;
}

int cfs_image_learned_save(struct cfs_image *img, struct cfs_recorder *r, uint64_t max_usec)
{
	struct cfs_learned *l = img ? img->learned : NULL;
	struct cfs_profile *in[1 + SRC_N] = { NULL };
	struct keep_arg keep = { 0 };
	void *store_raw = NULL;
	size_t store_len = 0, n = 1, len = 0;
	char *out = NULL, where[64] = "";
	int ret, wrote = 0, records = 0;
	FILE *f;

	if (!l || !r)
		return -EINVAL;
	pthread_mutex_lock(&l->save_lock);
	ret = run_profile(r, max_usec, &in[0]);
	if (ret < 0 || cfs_profile_count(in[0]) == 0)
		goto out;
	for (int src = 0; src < SRC_N; src++) {
		ret = learned_read(l, src, &in[n], src == SRC_STORE ? &store_raw : NULL,
				   &store_len);
		if (ret < 0)
			goto out;
		n += in[n] != NULL;
	}
	ret = keep_init(&keep, img->idx);
	if (ret < 0)
		goto out;
	f = open_memstream(&out, &len);
	if (!f) {
		ret = -ENOMEM;
		goto out;
	}
	records = cfs_profile_merge_max(in, n, CFS_LEARN_RECORDS_MAX, keep_entry, &keep, f);
	if (fclose(f) != 0 && records >= 0)
		records = -ENOMEM;
	if (records < 0) {
		ret = records;
		goto out;
	}
	ret = l->path ? cache_write(l, out, len) : -ENOENT;
	if (ret == 0) {
		atomic_store(&l->bad[SRC_CACHE], false);
		strcat(where, "the cache");
		wrote++;
	} else if (l->path) {
		cfs_warn("learned profile %s: %s", l->path, cfs_strerror(ret));
	}
	if (l->store && (!store_raw || store_len != len || memcmp(store_raw, out, len))) {
		ret = cfs_store_image_file_set(l->store, CFS_IMAGE_PROFILE, &l->image, out, len);
		if (ret == 0) {
			atomic_store(&l->bad[SRC_STORE], false);
			strcat(where, wrote ? " and the store" : "the store");
			wrote++;
		} else if (ret != -EROFS && ret != -EACCES && ret != -EPERM) {
			cfs_warn("learned profile %s: %s", l->store_name, cfs_strerror(ret));
		}
	} else if (l->store) {
		strcat(where, wrote ? " (the store's is the same)" : "the store (unchanged)");
		wrote++;
	}
	if (!wrote) {
		ret = ret < 0 ? ret : -EIO;
		goto out;
	}
	atomic_fetch_add(&l->saves, 1);
	atomic_store(&l->saved_records, (uint64_t)records);
	cfs_info("learned profile: %d records in %s (this run: %zu records; earlier copies "
		 "merged: %zu)", records, where, cfs_profile_count(in[0]), n - 1);
	ret = records;
out:
	pthread_mutex_unlock(&l->save_lock);
	for (size_t i = 0; i < CFS_ARRAY_SIZE(in); i++)
		cfs_profile_free(in[i]);
	free(keep.digests);
	free(store_raw);
	free(out);
	return ret;
}
