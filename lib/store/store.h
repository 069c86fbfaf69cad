/* SPDX-License-Identifier: MIT */
/*
 * A store holds immutable, content-addressed objects and mutable tags:
 *
 *   cfs-store                 marker: "cfs-store 1\n"
 *   objects/<hh>/<64 hex>     objects, <hh> = first two hex digits
 *   tags/<name>               "sha256:<64 hex>\n"
 *   sigs/<name>               a tag's signature file (sign.h)
 *   profiles/<64 hex>         an image's learned access profile (mutable)
 *
 * The same tree can be served by any HTTP server or copied into an S3
 * bucket.  Backends are const tables (store_i.h), one file each: a local
 * directory (store_dir.c), a directory served over http:// or https://
 * (store_http.c, read-only) and an S3 bucket (store_s3.c).
 *
 * Remote stores do not look for the marker when they open (it would cost a
 * round trip on every mount); when a tag or object turns out to be missing
 * they look once, and report -ENXIO instead of -ENOENT where there is no
 * store at all.  Their errors: -EACCES (401, 403: credentials refused),
 * -ETIMEDOUT (the fetcher's deadline passed), -EIO (server or network
 * failure once retries are spent), -EPROTO (a reply that makes no sense),
 * -EKEYREJECTED (the server's TLS certificate failed verification);
 * each failure but a 404 is logged at warn level with the method, the URL
 * and the status, e.g. "GET http://host/store/objects/ab/ab12...: 403
 * Forbidden".
 *
 * All functions are thread-safe on one store handle.
 */
#ifndef CFS_STORE_H
#define CFS_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "digest.h"

struct cfs_store;

/* Largest object a store will hand out; bounds memory on a lying store. */
#define CFS_OBJECT_MAX_SIZE ((size_t)1 << 31)

#define CFS_STORE_CREATE 0x1u /* create the store (dir + marker) if absent */

struct cfs_store_stats {
	uint64_t gets;        /* objects read (successful gets) */
	uint64_t get_bytes;   /* bytes of those objects */
	uint64_t get_errors;  /* failed gets, ENOENT included */
	uint64_t puts;        /* objects written */
	uint64_t put_bytes;
	uint64_t put_skipped; /* puts of objects already present */
};

struct cfs_fetch_opts;

struct cfs_store_opts {
	/* Remote stores: how their fetcher behaves; NULL for the defaults.
	 * Copied (ca_file included): need not outlive the call. */
	const struct cfs_fetch_opts *fetch;
};

/* Most stores in a list. */
#define CFS_STORE_LIST_MAX 8

/* Opens the store at location: a directory path or file:// URL, an
 * http:// or https:// URL of a store directory served by any web server
 * (read-only), or s3://BUCKET[/PREFIX], configured like the AWS tools
 * (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
 * AWS_SESSION_TOKEN, AWS_REGION; path-style addressing).  A remote store
 * starts its fetcher thread on first use, so it may be opened before a
 * fork as long as nothing is fetched before it.
 * Same errors as cfs_store_open(), and -EACCES (credentials refused),
 * -EROFS (CFS_STORE_CREATE on an http(s) store, which is read-only), and
 * for s3:// with CFS_STORE_CREATE the errors of writing the marker.
 * "STORE1,STORE2,..." (a comma inside a location written %2C) opens a
 * store list: read-only (-EROFS for CFS_STORE_CREATE and every write), it
 * reads from its members in order and hands a request on to the next
 * member when one fails (store.c). */
int cfs_store_open_opts(const char *location, unsigned flags, const struct cfs_store_opts *opts,
			struct cfs_store **out);

/* Opens the store at location (a directory path or file:// URL).
 * Errors: -ENOENT (no such store), -ENOTDIR, -EUCLEAN (exists but is not a
 * cfs store, i.e. no marker), -EPROTONOSUPPORT (unknown URL scheme).
 * Free with cfs_store_free(). */
int cfs_store_open(const char *location, unsigned flags, struct cfs_store **out);
void cfs_store_free(struct cfs_store *st);
const char *cfs_store_location(const struct cfs_store *st);
/* True for http(s):// and s3:// stores: every access is a request. */
bool cfs_store_is_remote(const struct cfs_store *st);

/* Reads object d into a malloc'd buffer the caller frees.
 * -ENOENT when absent; -ENXIO when a remote store turns out not to exist.
 * From a list, the first member that gives it; else the last one's error. */
int cfs_store_get(struct cfs_store *st, const cfs_digest *d, void **buf, size_t *len);
/* cfs_store_get() from member *from on (0: all of them); *from is set to
 * the member that gave the object.  A caller that finds it corrupt asks
 * again from *from + 1; -ENOENT past the last member. */
int cfs_store_get_from(struct cfs_store *st, const cfs_digest *d, size_t *from, void **buf,
		       size_t *len);

/* The members of a list (1 and st itself for any other store), and the
 * requests a member failed and handed on to the next. */
size_t cfs_store_count(const struct cfs_store *st);
struct cfs_store *cfs_store_member(struct cfs_store *st, size_t i);
uint64_t cfs_store_passed_on(const struct cfs_store *st);

/* 1 when present, 0 when absent, or -errno.  When present and size is not
 * NULL, *size is the object's stored size (a stat or HEAD, not a read). */
int cfs_store_has(struct cfs_store *st, const cfs_digest *d, uint64_t *size);

/* Writes object d atomically (temporary file, then rename; one PUT on S3)
 * unless it is already present.  Returns 1 when written, 0 when present,
 * or -errno; -EROFS on an http(s) store.
 * Objects are not durable until cfs_store_sync(). */
int cfs_store_put(struct cfs_store *st, const cfs_digest *d, const void *buf, size_t len);
/* cfs_store_put() for a caller that cfs_store_has() just told the object
 * is absent: a remote store skips its own presence check (a HEAD) and
 * writes.  Same returns. */
int cfs_store_put_absent(struct cfs_store *st, const cfs_digest *d, const void *buf, size_t len);

/* Makes every object written so far durable: call before a tag that
 * points at them. */
int cfs_store_sync(struct cfs_store *st);

#define CFS_TAG_NAME_MAX 200
/* Tag names: 1..CFS_TAG_NAME_MAX bytes of [A-Za-z0-9._:@+-] and '/', no empty, "." or
 * ".." component, no leading or trailing '/'. */
bool cfs_tag_name_valid(const char *name);

/* -ENOENT unknown tag, -EINVAL bad name, -EUCLEAN malformed tag object;
 * -ENXIO (no store there) and -EPROTONOSUPPORT (a store of another
 * version) from a remote store that was not checked at open. */
int cfs_store_tag_get(struct cfs_store *st, const char *name, cfs_digest *out);
/* A tag file's bytes: "sha256:<64 hex>", the newline optional.  0 or
 * -EUCLEAN. */
int cfs_tag_parse(const void *buf, size_t len, cfs_digest *out);
/* Points a tag at d, atomically replacing any previous value. */
int cfs_store_tag_set(struct cfs_store *st, const char *name, const cfs_digest *d);

/* Signature files (sign.h), sigs/<name> for tag name: the raw bytes, at
 * most max (-EFBIG beyond); -ENOENT when there is none, -EINVAL for a bad
 * name, and the remote errors of cfs_store_tag_get(). */
int cfs_store_sig_get(struct cfs_store *st, const char *name, size_t max, void **buf,
		      size_t *len);
/* Writes sigs/<name> atomically. */
int cfs_store_sig_set(struct cfs_store *st, const char *name, const void *buf, size_t len);

/* The mutable files a store keeps about an image, <dir>/<64 hex> for the
 * image whose index is image: its learned profile (docs/PROFILE.md,
 * profiles/) and where cfs-pack found it (origin.h, origins/); and about
 * a layer, for the digest of its compressed blob: its record (layer.h,
 * layers/).  Text, at
 * most max bytes (-EFBIG beyond); -ENOENT when there is none, and the
 * remote errors of cfs_store_tag_get().  Mutable like a tag: _set replaces
 * it atomically; -EROFS on an http(s) store or a list. */
enum cfs_image_file {
	CFS_IMAGE_PROFILE,
	CFS_IMAGE_ORIGIN,
	CFS_LAYER_RECORD,
};
int cfs_store_image_file_get(struct cfs_store *st, enum cfs_image_file kind,
			     const cfs_digest *image, size_t max, void **buf, size_t *len);
int cfs_store_image_file_set(struct cfs_store *st, enum cfs_image_file kind,
			     const cfs_digest *image, const void *buf, size_t len);

/* An image argument: "sha256:<hex>" is a reference, anything else a tag. */
int cfs_store_resolve(struct cfs_store *st, const char *image, cfs_digest *out);

void cfs_store_stats_get(struct cfs_store *st, struct cfs_store_stats *out);

struct cfs_fetch_stats;
/* The fetcher's counters of a remote store; -ENOTSUP for a local one. */
int cfs_store_fetch_stats(struct cfs_store *st, struct cfs_fetch_stats *out);

#endif /* CFS_STORE_H */
