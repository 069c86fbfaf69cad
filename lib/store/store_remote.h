/* SPDX-License-Identifier: MIT */
/*
 * What the http and s3 store backends share: a fetcher made on first use
 * and object URLs.
 */
#ifndef CFS_STORE_REMOTE_H
#define CFS_STORE_REMOTE_H

#include <pthread.h>
#include <stdbool.h>

#include "fetch.h"
#include "store_i.h"

struct cfs_remote {
	pthread_mutex_t lock;
	struct cfs_fetcher *f;             /* under lock; made on first request */
	const struct cfs_fetch_opts *opts; /* the store's copy */
	char *base;                        /* URL the escaped keys follow, no '/' at the end */
	const struct cfs_fetch_sigv4 *sigv4; /* NULL: unsigned requests */
};

/* base is copied.  Makes no request and starts no thread. */
int cfs_remote_init(struct cfs_remote *r, struct cfs_store *st, const char *base,
		    const struct cfs_fetch_sigv4 *sigv4);
void cfs_remote_fini(struct cfs_remote *r);

/* s with every byte but RFC 3986's unreserved ones and '/' percent-encoded:
 * what S3's SigV4 canonical URI wants, and libcurl signs the path as it is
 * sent.  malloc'd, or NULL. */
char *cfs_url_escape_path(const char *s);

/* One request for key: returns res->err.  On success a GET's body is in
 * res->body.  headers: extra request headers, as cfs_fetch_req's (NULL:
 * none).  (The fetcher logs failures but 404s.) */
int cfs_remote_request(struct cfs_remote *r, enum cfs_fetch_method method, const char *key,
		       const void *body, size_t body_len, const char *const *headers,
		       size_t max_size, struct cfs_fetch_result *res);

/* The cfs_store_ops of the shared parts. */
int cfs_remote_get(struct cfs_remote *r, const char *key, size_t max, void **buf, size_t *len);
int cfs_remote_has(struct cfs_remote *r, const char *key, uint64_t *size);
void cfs_remote_fetch_stats(struct cfs_remote *r, struct cfs_fetch_stats *out);

#endif /* CFS_STORE_REMOTE_H */
