/* SPDX-License-Identifier: MIT */
/* Store backend interface.  Keys are the relative paths of store.h
 * ("objects/ab/ab12...", "tags/name", "cfs-store"). */
#ifndef CFS_STORE_I_H
#define CFS_STORE_I_H

#include <stdatomic.h>

#include "store.h"

struct cfs_store_ops {
	const char *name;
	/* Sets st->priv.  Same errors as cfs_store_open(). */
	int (*open)(struct cfs_store *st, const char *location, unsigned flags);
	void (*close)(struct cfs_store *st);
	/* malloc'd whole object; -ENOENT when absent; -EFBIG over max. */
	int (*get)(struct cfs_store *st, const char *key, size_t max, void **buf, size_t *len);
	/* 1 present (and *size set when size is not NULL), 0 absent. */
	int (*has)(struct cfs_store *st, const char *key, uint64_t *size);
	/* Atomic.  With replace false, an existing key is kept and 0 returned. */
	int (*put)(struct cfs_store *st, const char *key, const void *buf, size_t len, bool replace);
	int (*sync)(struct cfs_store *st);
};

struct cfs_store {
	const struct cfs_store_ops *ops;
	void *priv;
	char *location;
	_Atomic uint64_t gets, get_bytes, get_errors;
	_Atomic uint64_t puts, put_bytes, put_skipped;
};

extern const struct cfs_store_ops cfs_store_dir_ops;

#endif /* CFS_STORE_I_H */
