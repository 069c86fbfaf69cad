/* SPDX-License-Identifier: MIT */
/*
 * Opening an image from a command line: the one way every command that
 * reads a store (cfs-mount, cfs-load, cfs-ls, cfs-sign, cfs-pack) turns the
 * options they share into an open store, cache and image, with one option
 * table (long options and the KEY=VALUE form of mount -o and of the
 * loader's option strings) and one wording for what fails.
 *
 * Messages go to msg (msglen bytes, may be 0): one line without the
 * program's name and without a newline, for the caller to print.
 */
#ifndef CFS_OPEN_H
#define CFS_OPEN_H

#include <getopt.h>
#include <stddef.h>
#include <stdint.h>

#include "digest.h"
#include "fetch.h"
#include "store.h"

struct cfs_cache;
struct cfs_image;

/* What the shared options set.  Strings are owned (copies): release with
 * cfs_open_opts_release(). */
struct cfs_open_opts {
	char *cache_dir;             /* --cache DIR: NULL means memory only */
	uint64_t cache_size;         /* --cache-size; 0: the cache's default (10 GiB) */
	uint64_t mem_cache;          /* --mem-cache; 0: the cache's default (256 MiB) */
	char *ca_file;               /* --ca-file, or NULL: $CURL_CA_BUNDLE, $SSL_CERT_FILE */
	char *trust;                 /* --trust PUBKEY|DIR, or NULL: tags need no signature */
	struct cfs_fetch_opts fetch; /* --deadline, --max-inflight, --retries, --insecure
				      * (fetch.ca_file is not used: ca_file is) */
};

/* Long option values, above any short option's character. */
enum {
	CFS_OPT_CACHE = 0x1000,
	CFS_OPT_CACHE_SIZE,
	CFS_OPT_MEM_CACHE,
	CFS_OPT_DEADLINE,
	CFS_OPT_MAX_INFLIGHT,
	CFS_OPT_RETRIES,
	CFS_OPT_INSECURE,
	CFS_OPT_CA_FILE,
	CFS_OPT_TRUST,
};

/* Entries for a getopt_long() table, by what a command reads: a remote
 * store, a chunk cache, signed tags. */
#define CFS_OPEN_STORE_OPTIONS                                                  \
	{ "deadline", required_argument, NULL, CFS_OPT_DEADLINE },              \
	{ "max-inflight", required_argument, NULL, CFS_OPT_MAX_INFLIGHT },      \
	{ "retries", required_argument, NULL, CFS_OPT_RETRIES },                \
	{ "insecure", no_argument, NULL, CFS_OPT_INSECURE },                    \
	{ "ca-file", required_argument, NULL, CFS_OPT_CA_FILE }
#define CFS_OPEN_CACHE_OPTIONS                                                  \
	{ "cache", required_argument, NULL, CFS_OPT_CACHE },                    \
	{ "cache-size", required_argument, NULL, CFS_OPT_CACHE_SIZE },          \
	{ "mem-cache", required_argument, NULL, CFS_OPT_MEM_CACHE }
#define CFS_OPEN_TRUST_OPTION { "trust", required_argument, NULL, CFS_OPT_TRUST }

/* The help text of those options, to paste into a usage string. */
#define CFS_OPEN_STORE_USAGE                                                    \
	"Remote stores (http://, https://, s3://BUCKET[/PREFIX]):\n"            \
	"      --deadline MS      a read the store cannot serve within MS\n"    \
	"                         milliseconds fails with EIO (default 30000)\n" \
	"      --max-inflight N   requests on the wire at once (default 64)\n"  \
	"      --retries N        retries of a failed request, 1.. (default 6)\n" \
	"      --ca-file FILE     verify TLS servers with the CA certificates in FILE\n" \
	"                         (PEM) instead of the system's; without it,\n" \
	"                         $CURL_CA_BUNDLE, then $SSL_CERT_FILE, if set\n" \
	"      --insecure         no TLS certificate verification (tests only)\n"
#define CFS_OPEN_CACHE_SIZE_USAGE                                               \
	"      --cache-size SIZE  bound of the disk cache (default 10G)\n"      \
	"      --mem-cache SIZE   bound of chunks held in memory: being written to the\n" \
	"                         cache, or not writable there (default 256M)\n"
#define CFS_OPEN_TRUST_USAGE                                                    \
	"      --trust PUBKEY|DIR open a tag only if its signature (cfs-pack --sign,\n" \
	"                         cfs-sign) is by an Ed25519 public key in the PEM\n" \
	"                         file PUBKEY or in DIR's *.pem/*.pub; a sha256:\n" \
	"                         reference needs none\n"

void cfs_open_opts_init(struct cfs_open_opts *o);
/* Frees the strings and zeroes o; NULL is fine. */
void cfs_open_opts_release(struct cfs_open_opts *o);

/* Takes getopt_long()'s c and optarg: 1 when c is a CFS_OPT_* option (set
 * in o), 0 when it is not one of these, -EINVAL (message in msg) for a bad
 * value, -ENOMEM. */
int cfs_open_opt(struct cfs_open_opts *o, int c, const char *arg, char *msg, size_t msglen);

/* The same options as KEY=VALUE (len bytes of s, not NUL-terminated): cache=,
 * cache_size=, mem_cache=, deadline=, max_inflight=, retries=, ca_file=,
 * trust=, and insecure (no value).  1 taken, 0 not one of these, -EINVAL
 * (msg), -ENOMEM. */
int cfs_open_kv(struct cfs_open_opts *o, const char *s, size_t len, char *msg, size_t msglen);

/* Parses a comma-separated list of cfs_open_kv() options (NULL or "" is
 * none): 0, or -EINVAL for an unknown key or a bad value (msg). */
int cfs_open_kv_list(struct cfs_open_opts *o, const char *list, char *msg, size_t msglen);

/* Opens the store (or store list) at location with o's fetch options and
 * CA bundle; flags as cfs_store_open_opts(). */
int cfs_open_store(const struct cfs_open_opts *o, const char *location, unsigned flags,
		   struct cfs_store **out, char *msg, size_t msglen);

/* Replaces o->ca_file by the CA bundle cfs_open_store() would verify with,
 * as an absolute path: the environment's ($CURL_CA_BUNDLE, $SSL_CERT_FILE)
 * when none is given, none without verification (--insecure).  For a
 * daemon that leaves its directory, and to fail before it does.  0 or
 * -errno (msg). */
int cfs_open_ca_resolve(struct cfs_open_opts *o, char *msg, size_t msglen);

/* The chunk cache of o: a directory when o->cache_dir is set, else memory only. */
int cfs_open_cache(const struct cfs_open_opts *o, struct cfs_cache **out, char *msg,
		   size_t msglen);

/* Resolves image (a tag or sha256:<hex>) in st, through a signature by a
 * key of o->trust when that is set.  Errors as cfs_store_resolve_trusted(),
 * the message naming the image and the store. */
int cfs_open_resolve(const struct cfs_open_opts *o, struct cfs_store *st, const char *image,
		     cfs_digest *out, uint64_t *signed_at, char *msg, size_t msglen);

/* An open image and what it reads through; close with cfs_open_close(). */
struct cfs_opened {
	struct cfs_store *store;
	struct cfs_cache *cache;
	struct cfs_image *img;
	cfs_digest digest;           /* the image's index */
	char ref[CFS_REF_STRLEN];    /* "sha256:<hex>" of digest */
};

/* Opens the store at location, o's cache and image, resolved once: the
 * image opened is what the tag named then, even if it moves meanwhile.
 * pinned, when not NULL, is a sha256: reference opened instead of
 * resolving image (a restarted daemon keeps its first one's image), with
 * no signature check.  On failure nothing is left open. */
int cfs_open_image(const struct cfs_open_opts *o, const char *location, const char *image,
		   const char *pinned, struct cfs_opened *out, char *msg, size_t msglen);
/* Frees what cfs_open_image() opened; a zeroed or closed one is fine. */
void cfs_open_close(struct cfs_opened *op);

#endif /* CFS_OPEN_H */
