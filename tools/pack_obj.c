/* SPDX-License-Identifier: MIT */
/*
 * Whole objects in and out of the store for cfs-pack: an index, a prefetch
 * list or an image config, encoded and named by their content.  Below the
 * pipeline (pack_pipeline.c) and the profile mapping (pack_profile.c),
 * which both write such objects, so that neither calls the other back.
 */
#include <errno.h>
#include <stdlib.h>

#include "codec.h"
#include "digest.h"
#include "format.h"
#include "store.h"

#include "pack.h"

int cfs_pack_obj_put(struct cfs_store *st, const void *buf, size_t len, int level, cfs_digest *d,
		     size_t *stored)
{
	size_t cap = cfs_obj_bound(len);
	void *obj = malloc(cap);
	ssize_t n;
	int ret;

	if (!obj)
		return -ENOMEM;
	cfs_sha256(buf, len, d);
	n = cfs_obj_encode(obj, cap, buf, len, level);
	if (n < 0) {
		ret = (int)n;
		goto out;
	}
	ret = cfs_store_put(st, d, obj, (size_t)n);
	*stored = ret == 1 ? (size_t)n : 0;
out:
	free(obj);
	return ret < 0 ? ret : 0;
}

int cfs_pack_index_get(struct cfs_store *st, const cfs_digest *ref, void **raw, size_t *len)
{
	void *obj = NULL, *buf = NULL;
	size_t objlen;
	int64_t raw_size;
	ssize_t n;
	int ret;

	ret = cfs_store_get(st, ref, &obj, &objlen);
	if (ret < 0)
		return ret;
	raw_size = cfs_obj_raw_size(obj, objlen);
	ret = raw_size < 0 ? (int)raw_size : -EUCLEAN;
	if (raw_size <= 0 || (uint64_t)raw_size > CFS_INDEX_MAX_SIZE)
		goto out;
	buf = malloc((size_t)raw_size);
	ret = -ENOMEM;
	if (!buf)
		goto out;
	n = cfs_obj_decode(buf, (size_t)raw_size, obj, objlen, ref);
	ret = n < 0 ? (int)n : -EUCLEAN;
	if (n != raw_size)
		goto out;
	*raw = buf;
	*len = (size_t)n;
	buf = NULL;
	ret = 0;
out:
	free(buf);
	free(obj);
	return ret;
}
