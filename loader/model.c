/* SPDX-License-Identifier: MIT */
/*
 * cfs_model_open*(): resolves MODEL (a directory, a shard index or one
 * .safetensors file) through a source's ops only, so that files on a
 * filesystem and files inside a cfs image (direct mode) resolve the same
 * way; parses every header, checks a sharded model against its weight_map
 * and builds the table of tensors with a name lookup.
 *
 * The shards stay open for the life of the model: the pipeline reads
 * through their handles.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "loader_i.h"
#include "open.h"
#include "util.h"

#define INDEX_NAME "model.safetensors.index.json"
#define SINGLE_NAME "model.safetensors"

/* Open addressing over tensor indices: slot holds index + 1, 0 is empty. */
struct name_table {
	size_t mask;
	uint32_t slot[];
};

static size_t name_hash(const char *name)
{
	return (size_t)XXH3_64bits(name, strlen(name));
}

static long table_find(const struct cfs_model *m, const char *name)
{
	const struct name_table *nt = m->name_table;
	size_t i;

	if (!nt)
		return -1;
	for (i = name_hash(name) & nt->mask; nt->slot[i]; i = (i + 1) & nt->mask) {
		uint32_t k = nt->slot[i] - 1;

		if (!strcmp(m->tensors[k].name, name))
			return (long)k;
	}
	return -1;
}

/* Builds m->name_table; a name found twice (in two shards: one header
 * cannot hold it twice) is -EUCLEAN. */
static int table_build(struct cfs_model *m, const char *what, char *err, size_t errlen)
{
	struct name_table *nt;
	size_t cap = 16;

	if (m->ntensors >= UINT32_MAX)
		return cfs_load_err(err, errlen, -EUCLEAN, "%s: too many tensors (%zu)", what,
				    m->ntensors);
	while (cap < 2 * m->ntensors)
		cap *= 2;
	nt = calloc(1, sizeof(*nt) + cap * sizeof(nt->slot[0]));
	if (!nt)
		return -ENOMEM;
	nt->mask = cap - 1;
	m->name_table = nt;
	for (size_t k = 0; k < m->ntensors; k++) {
		const struct cfs_tensor *t = &m->tensors[k];
		size_t i;

		for (i = name_hash(t->name) & nt->mask; nt->slot[i]; i = (i + 1) & nt->mask) {
			const struct cfs_tensor *o = &m->tensors[nt->slot[i] - 1];

			char q[CFS_QUOTE_LEN];

			if (!strcmp(o->name, t->name))
				return cfs_load_err(err, errlen, -EUCLEAN,
						    "%s: tensor \"%s\" is in both %s and %s", what,
						    cfs_load_quote(q, sizeof(q), t->name),
						    m->shards[o->shard].path, m->shards[t->shard].path);
		}
		nt->slot[i] = (uint32_t)k + 1;
	}
	return 0;
}

/* Moves every name into one block (m->names), so that a model is a few
 * allocations however many tensors it has. */
static int names_pack(struct cfs_model *m)
{
	size_t total = 0, o = 0;
	char *block;

	for (size_t i = 0; i < m->ntensors; i++)
		total += strlen(m->tensors[i].name) + 1;
	block = malloc(total ? total : 1);
	if (!block)
		return -ENOMEM;
	for (size_t i = 0; i < m->ntensors; i++) {
		size_t len = strlen(m->tensors[i].name) + 1;

		memcpy(block + o, m->tensors[i].name, len);
		free((void *)(uintptr_t)m->tensors[i].name);
		m->tensors[i].name = block + o;
		o += len;
	}
	m->names = block;
	return 0;
}

/* "a/b/" + name; dir_len bytes of dir, a '/' put between when missing. */
static char *path_join(const char *dir, size_t dir_len, const char *name)
{
	bool slash = dir_len && dir[dir_len - 1] != '/';
	size_t nlen = strlen(name);
	char *p = malloc(dir_len + slash + nlen + 1);

	if (!p)
		return NULL;
	memcpy(p, dir, dir_len);
	if (slash)
		p[dir_len] = '/';
	memcpy(p + dir_len + slash, name, nlen + 1);
	return p;
}

/* Exactly len bytes at off: a short read means the file shrank since it
 * was opened, which is an I/O error, not a corrupt header. */
static int read_exact(struct cfs_src *src, uint64_t h, void *buf, size_t len, uint64_t off,
		      const char *path, char *err, size_t errlen)
{
	ssize_t n = src->ops->pread(src, h, buf, len, off);

	if (n < 0)
		return cfs_load_err(err, errlen, (int)n, "%s: read: %s", path, cfs_strerror((int)n));
	if ((size_t)n != len)
		return cfs_load_err(err, errlen, -EIO, "%s: file shrank while being read", path);
	return 0;
}

/* Opens path, a safetensors file that becomes shard m->nshards, and
 * appends its tensors.  Takes path (malloc'd) in every case. */
static int shard_add(struct cfs_model *m, char *path, char *err, size_t errlen)
{
	struct cfs_src *src = m->src;
	struct cfs_shard *sh, *grown;
	uint8_t prefix[8] = { 0 };
	uint64_t h, size, data_off;
	size_t total;
	bool is_dir;
	void *hdr;
	int ret;

	grown = realloc(m->shards, (m->nshards + 1) * sizeof(*grown));
	if (!grown) {
		ret = -ENOMEM;
		goto out_path;
	}
	m->shards = grown;
	ret = src->ops->open(src, path, &h, &size, &is_dir);
	if (ret < 0) {
		cfs_load_err(err, errlen, ret, "%s: %s", path, cfs_strerror(ret));
		goto out_path;
	}
	if (is_dir) {
		ret = cfs_load_err(err, errlen, -EISDIR, "%s: is a directory, not a safetensors file",
				   path);
		goto out_path;
	}
	if (size >= sizeof(prefix)) {
		ret = read_exact(src, h, prefix, sizeof(prefix), 0, path, err, errlen);
		if (ret < 0)
			goto out_close;
	}
	/* the length is checked against the file before it sizes anything */
	ret = cfs_safetensors_hdr_len(prefix, size, path, &total, err, errlen);
	if (ret < 0)
		goto out_close;
	hdr = malloc(total);
	if (!hdr) {
		ret = -ENOMEM;
		goto out_close;
	}
	memcpy(hdr, prefix, sizeof(prefix));
	ret = read_exact(src, h, (uint8_t *)hdr + sizeof(prefix), total - sizeof(prefix),
			 sizeof(prefix), path, err, errlen);
	if (ret == 0)
		ret = cfs_safetensors_parse(hdr, total, size, (unsigned)m->nshards, path,
					    &m->tensors, &m->ntensors, &data_off, err, errlen);
	free(hdr);
	if (ret < 0)
		goto out_close;

	sh = &m->shards[m->nshards++];
	sh->path = path;
	sh->h = h;
	sh->size = size;
	sh->data_off = data_off;
	sh->data_len = size - data_off;
	return 0;

out_close:
	src->ops->close(src, h);
out_path:
	free(path);
	return ret;
}

/* The union of the shards' tensors must be the weight_map: each tensor of
 * the map in the shard it names, and nothing else. */
static int index_match(struct cfs_model *m, const char *index_path, char **files,
		       char **map_names, const unsigned *map_files, size_t nmap, char *err,
		       size_t errlen)
{
	bool *seen = calloc(m->ntensors ? m->ntensors : 1, sizeof(*seen));
	char q[CFS_QUOTE_LEN];
	int ret = 0;

	if (!seen)
		return -ENOMEM;
	for (size_t i = 0; i < nmap; i++) {
		long k = table_find(m, map_names[i]);

		if (k < 0) {
			ret = cfs_load_err(err, errlen, -EUCLEAN,
					   "%s: tensor \"%s\" is mapped to %s but not in it",
					   index_path, cfs_load_quote(q, sizeof(q), map_names[i]),
					   files[map_files[i]]);
			goto out;
		}
		if (m->tensors[k].shard != map_files[i]) {
			ret = cfs_load_err(err, errlen, -EUCLEAN,
					   "%s: tensor \"%s\" is mapped to %s but is in %s",
					   index_path, cfs_load_quote(q, sizeof(q), map_names[i]),
					   files[map_files[i]],
					   files[m->tensors[k].shard]);
			goto out;
		}
		seen[k] = true;
	}
	for (size_t k = 0; k < m->ntensors; k++)
		if (!seen[k]) {
			ret = cfs_load_err(err, errlen, -EUCLEAN,
					   "%s: tensor \"%s\" of %s is not in the weight_map",
					   index_path, cfs_load_quote(q, sizeof(q), m->tensors[k].name),
					   files[m->tensors[k].shard]);
			goto out;
		}
out:
	free(seen);
	return ret;
}

/* A shard index at path, already opened as h (size bytes): its shards
 * resolve against the index's directory. */
static int index_open(struct cfs_model *m, const char *path, uint64_t h, uint64_t size,
		      char *err, size_t errlen)
{
	char **files = NULL, **map_names = NULL;
	unsigned *map_files = NULL;
	size_t nfiles = 0, nmap = 0, len;
	const char *slash = strrchr(path, '/');
	size_t dir_len = slash ? (size_t)(slash - path) + 1 : 0;
	char *json;
	int ret;

	if (size > CFS_SAFETENSORS_HDR_MAX)
		return cfs_load_err(err, errlen, -EUCLEAN,
				    "%s: %" PRIu64 " bytes, over the %u-byte limit of a shard index",
				    path, size, CFS_SAFETENSORS_HDR_MAX);
	len = (size_t)size;
	json = malloc(len ? len : 1);
	if (!json)
		return -ENOMEM;
	ret = read_exact(m->src, h, json, len, 0, path, err, errlen);
	if (ret == 0) {
		ret = cfs_shard_index_parse(json, len, &files, &nfiles, &map_names, &map_files,
					    &nmap, err, errlen);
		/* the parser does not know the file's name: put it in front */
		if (ret == -EUCLEAN && err && errlen) {
			char msg[CFS_ERR_LEN];

			snprintf(msg, sizeof(msg), "%s", err);
			cfs_load_err(err, errlen, ret, "%s: %s", path, msg);
		}
	}
	free(json);
	if (ret < 0)
		return ret;

	for (size_t i = 0; i < nfiles; i++) {
		char *shard = path_join(path, dir_len, files[i]);

		if (!shard) {
			ret = -ENOMEM;
			goto out;
		}
		ret = shard_add(m, shard, err, errlen);
		if (ret < 0)
			goto out;
	}
	ret = names_pack(m);
	if (ret < 0)
		goto out;
	ret = table_build(m, path, err, errlen);
	if (ret < 0)
		goto out;
	ret = index_match(m, path, files, map_names, map_files, nmap, err, errlen);
out:
	cfs_shard_index_free(files, nfiles, map_names, map_files, nmap);
	return ret;
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), k = strlen(suffix);

	return n >= k && !strcmp(s + n - k, suffix);
}

/* MODEL through the source: a directory (index first, then the single
 * file), an index by its .json name, or a single safetensors file. */
static int model_resolve(struct cfs_model *m, const char *path, char *err, size_t errlen)
{
	struct cfs_src *src = m->src;
	char *file = NULL;
	uint64_t h, size;
	bool is_dir;
	int ret;

	ret = src->ops->open(src, path, &h, &size, &is_dir);
	if (ret < 0)
		return cfs_load_err(err, errlen, ret, "%s: %s", path, cfs_strerror(ret));
	if (is_dir) {
		file = path_join(path, strlen(path), INDEX_NAME);
		if (!file)
			return -ENOMEM;
		ret = src->ops->open(src, file, &h, &size, &is_dir);
		if (ret == 0 && !is_dir) {
			ret = index_open(m, file, h, size, err, errlen);
			src->ops->close(src, h);
			goto out;
		}
		if (ret < 0 && ret != -ENOENT) {
			cfs_load_err(err, errlen, ret, "%s: %s", file, cfs_strerror(ret));
			goto out;
		}
		free(file);
		file = path_join(path, strlen(path), SINGLE_NAME);
		if (!file)
			return -ENOMEM;
		ret = src->ops->open(src, file, &h, &size, &is_dir);
		if (ret == -ENOENT || (ret == 0 && is_dir)) {
			ret = cfs_load_err(err, errlen, -ENOENT,
					   "%s: a directory with neither " INDEX_NAME " nor "
					   SINGLE_NAME, path);
			goto out;
		}
		if (ret < 0) {
			cfs_load_err(err, errlen, ret, "%s: %s", file, cfs_strerror(ret));
			goto out;
		}
		/* shard_add opens it again: one code path for every shard */
		src->ops->close(src, h);
		ret = shard_add(m, file, err, errlen);
		file = NULL;
		goto out;
	}
	if (ends_with(path, ".json")) {
		ret = index_open(m, path, h, size, err, errlen);
		src->ops->close(src, h);
		return ret;
	}
	src->ops->close(src, h);
	file = strdup(path);
	if (!file)
		return -ENOMEM;
	ret = shard_add(m, file, err, errlen);
	file = NULL;
out:
	free(file);
	return ret;
}

/* Takes src: freed with the model, on failure too. */
static int model_open_src(struct cfs_src *src, const char *path, struct cfs_model **out,
			  char *err, size_t errlen)
{
	struct cfs_model *m = calloc(1, sizeof(*m));
	int ret;

	if (!m) {
		src->ops->free(src);
		return cfs_load_err(err, errlen, -ENOMEM, "out of memory");
	}
	m->src = src;
	ret = model_resolve(m, path, err, errlen);
	if (ret < 0)
		goto out_free;
	/* the index path built these while checking the weight_map */
	if (!m->names) {
		ret = names_pack(m);
		if (ret < 0)
			goto out_free;
		ret = table_build(m, path, err, errlen);
		if (ret < 0)
			goto out_free;
	}
	for (size_t i = 0; i < m->ntensors; i++)
		m->bytes += m->tensors[i].nbytes;
	*out = m;
	return 0;

out_free:
	if (ret == -ENOMEM)
		cfs_load_err(err, errlen, ret, "%s: out of memory", path);
	cfs_model_free(m);
	return ret;
}

CFS_EXPORT int cfs_model_open(const char *path, struct cfs_model **out, char *err, size_t errlen)
{
	struct cfs_src *src;
	int ret;

	if (out)
		*out = NULL;
	if (!path || !*path || !out)
		return cfs_load_err(err, errlen, -EINVAL, "cfs_model_open: no model path");
	ret = cfs_src_file_new(&src);
	if (ret < 0)
		return cfs_load_err(err, errlen, ret, "%s: %s", path, cfs_strerror(ret));
	return model_open_src(src, path, out, err, errlen);
}

CFS_EXPORT int cfs_model_open_image(const char *store, const char *image, const char *path,
				    const char *cache_dir, struct cfs_model **out, char *err,
				    size_t errlen)
{
	return cfs_model_open_image_trusted(store, image, path, cache_dir, NULL, out, err, errlen);
}

int cfs_model_open_image_with(const char *store, const char *image, const char *path,
			      const struct cfs_open_opts *oo, struct cfs_model **out, char *err,
			      size_t errlen)
{
	struct cfs_src *src;
	int ret;

	if (out)
		*out = NULL;
	if (!store || !image || !path || !*path || !out)
		return cfs_load_err(err, errlen, -EINVAL,
				    "cfs_model_open_image: store, image and path are required");
	ret = cfs_src_image_new(store, image, oo, &src, err, errlen);
	if (ret < 0)
		return ret;
	return model_open_src(src, path, out, err, errlen);
}

/* Sets a string option of oo from a public entry point's argument. */
static int opts_from_args(struct cfs_open_opts *oo, const char *cache_dir, const char *trust,
			  char *err, size_t errlen)
{
	cfs_open_opts_init(oo);
	if ((cache_dir && !(oo->cache_dir = strdup(cache_dir))) ||
	    (trust && !(oo->trust = strdup(trust)))) {
		cfs_open_opts_release(oo);
		return cfs_load_err(err, errlen, -ENOMEM, "%s", strerror(ENOMEM));
	}
	return 0;
}

CFS_EXPORT int cfs_model_open_image_trusted(const char *store, const char *image,
					    const char *path, const char *cache_dir,
					    const char *trust, struct cfs_model **out, char *err,
					    size_t errlen)
{
	struct cfs_open_opts oo;
	int ret;

	if (out)
		*out = NULL;
	ret = opts_from_args(&oo, cache_dir, trust, err, errlen);
	if (ret < 0)
		return ret;
	ret = cfs_model_open_image_with(store, image, path, &oo, out, err, errlen);
	cfs_open_opts_release(&oo);
	return ret;
}

CFS_EXPORT int cfs_model_open_image_opts(const char *store, const char *image, const char *path,
					 const char *options, struct cfs_model **out, char *err,
					 size_t errlen)
{
	struct cfs_open_opts oo;
	char msg[512];
	int ret;

	if (out)
		*out = NULL;
	cfs_open_opts_init(&oo);
	ret = cfs_open_kv_list(&oo, options, msg, sizeof(msg));
	if (ret < 0)
		cfs_load_err(err, errlen, ret, "options: %s", msg);
	else
		ret = cfs_model_open_image_with(store, image, path, &oo, out, err, errlen);
	cfs_open_opts_release(&oo);
	return ret;
}

CFS_EXPORT void cfs_model_free(struct cfs_model *m)
{
	struct cfs_loaded *l;

	if (!m)
		return;
	/* Unlinked before it is freed, so that cfs_loaded_free() finds the
	 * list already without it, whichever way it unlinks. */
	while ((l = m->loads)) {
		m->loads = l->next;
		cfs_loaded_free(l);
	}
	free(m->name_table);
	if (m->names) {
		free(m->tensors);
		free(m->names);
	} else {
		cfs_tensors_free(m->tensors, m->ntensors);
	}
	for (size_t i = 0; i < m->nshards; i++) {
		m->src->ops->close(m->src, m->shards[i].h);
		free(m->shards[i].path);
	}
	free(m->shards);
	if (m->src)
		m->src->ops->free(m->src);
	free(m);
}

CFS_EXPORT size_t cfs_model_tensor_count(const struct cfs_model *m)
{
	return m ? m->ntensors : 0;
}

CFS_EXPORT const struct cfs_tensor *cfs_model_tensor(const struct cfs_model *m, size_t i)
{
	return m && i < m->ntensors ? &m->tensors[i] : NULL;
}

CFS_EXPORT long cfs_model_find(const struct cfs_model *m, const char *name)
{
	return m && name ? table_find(m, name) : -1;
}

CFS_EXPORT size_t cfs_model_file_count(const struct cfs_model *m)
{
	return m ? m->nshards : 0;
}

CFS_EXPORT const char *cfs_model_file_path(const struct cfs_model *m, size_t i)
{
	return m && i < m->nshards ? m->shards[i].path : NULL;
}

CFS_EXPORT uint64_t cfs_model_bytes(const struct cfs_model *m)
{
	return m ? m->bytes : 0;
}
