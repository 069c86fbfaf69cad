/* SPDX-License-Identifier: MIT */
/* Store backend interface.  Keys are the relative paths of store.h
 * ("objects/ab/ab12...", "tags/name", "cfs-store"). */
#ifndef CFS_STORE_I_H
#define CFS_STORE_I_H

#include <stdatomic.h>

#include "fetch.h"
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
	/* Remote backends only (NULL otherwise): the fetcher's counters, all
	 * zero before the first request. */
	void (*fetch_stats)(struct cfs_store *st, struct cfs_fetch_stats *out);
	/* The backend does not look for the marker at open (a round trip on
	 * every mount): store.c checks it when a tag or object is missing. */
	bool lazy_marker;
};

struct cfs_store {
	const struct cfs_store_ops *ops;
	void *priv;
	char *location;
	/* The caller's fetcher options, copied (remote backends). */
	struct cfs_fetch_opts fetch_opts;
	char *ca_file;              /* fetch_opts.ca_file points here */
	/* lazy_marker: 0 unknown, 1 present, or the -errno that the missing
	 * tag or object is reported as (-ENXIO, -EPROTONOSUPPORT). */
	_Atomic int marker_state;
	_Atomic uint64_t gets, get_bytes, get_errors;
	_Atomic uint64_t puts, put_bytes, put_skipped;
	_Atomic uint64_t passed_on; /* a list's member: requests it failed, handed on */
	/* A store list (STORE1,STORE2,...): its members in order, ops NULL. */
	struct cfs_store **members;
	size_t nmembers;
};

extern const struct cfs_store_ops cfs_store_dir_ops;
extern const struct cfs_store_ops cfs_store_http_ops;
extern const struct cfs_store_ops cfs_store_s3_ops;

/* The marker: "cfs-store <version>\n". */
#define CFS_STORE_MARKER "cfs-store"
#define CFS_STORE_MARKER_TEXT "cfs-store 1\n"
#define CFS_STORE_MARKER_MAX 64

/* 0 for a marker of this version, -EPROTONOSUPPORT for another version,
 * -EUCLEAN for anything else. */
int cfs_store_marker_parse(const void *buf, size_t len);

#endif /* CFS_STORE_I_H */
