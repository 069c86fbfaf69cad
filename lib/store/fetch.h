/* SPDX-License-Identifier: MIT */
/*
 * The fetcher: every HTTP(S) request cfs makes, for the http and s3 stores,
 * the filesystem and the loader alike.  One libcurl multi handle driven by
 * one thread of its own: connections are reused, HTTP/2 is used where the
 * server offers it (one connection multiplexes many requests), and at most
 * max_inflight requests are on the wire; the rest queue in submission order.
 *
 * Failure handling lives here so that every caller gets the same: each
 * attempt has a connect timeout and a stall timeout (the transfer fails when
 * fewer than 1 KiB/s arrive for that long); connection errors, timeouts, 5xx,
 * 429 and 503 SlowDown are retried with exponential backoff and full jitter;
 * and every request has a deadline after which it fails with -ETIMEDOUT,
 * whatever the retries were doing, so no caller waits forever.
 *
 * Thread-safe.  Starting a fetcher starts its thread: a daemon creates it
 * after it forks.
 */
#ifndef CFS_FETCH_H
#define CFS_FETCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cfs_fetcher;

struct cfs_fetch_opts {
	unsigned max_inflight;       /* 0 = 64: sized for 20-50 ms first-byte stores */
	unsigned connect_timeout_ms; /* 0 = 3000 */
	unsigned stall_timeout_ms;   /* 0 = 10000 */
	unsigned deadline_ms;        /* per request, retries included; 0 = 30000 */
	unsigned retries;            /* attempts after the first; 0 = 6 */
	unsigned backoff_ms;         /* first backoff; 0 = 50 (then x2, jittered, max 2 s) */
	bool insecure;               /* no TLS verification: tests with self-signed certs */
	const char *ca_file;         /* CA bundle (PEM) to verify servers with, instead
				      * of the system's; NULL: the system's */
};

/* The CA bundle a command should use: ca_file when it is not NULL (it must
 * be readable), else $CURL_CA_BUNDLE, else $SSL_CERT_FILE, as the curl tool
 * does (empty values count as unset).  *out is an absolute path, since a
 * daemon changes directory, that the caller frees; NULL when none is set
 * (the system's bundle).  Returns 0, or -errno for an unreadable ca_file
 * or no memory. */
int cfs_fetch_ca_resolve(const char *ca_file, char **out);

enum cfs_fetch_method { CFS_FETCH_GET = 0, CFS_FETCH_HEAD, CFS_FETCH_PUT };

/* "GET", "HEAD" or "PUT", for messages; a static string. */
const char *cfs_fetch_method_name(enum cfs_fetch_method m);

/* AWS Signature V4 through libcurl (CURLOPT_AWS_SIGV4). */
struct cfs_fetch_sigv4 {
	const char *provider;      /* "aws:amz:<region>:s3" */
	const char *key_id;
	const char *secret;
	const char *session_token; /* or NULL */
};

struct cfs_fetch_req {
	enum cfs_fetch_method method;
	const char *url;           /* copied: need not outlive the call */
	uint64_t range_off;        /* GET: bytes [range_off, range_off + range_len) */
	uint64_t range_len;        /* 0: the whole object */
	const void *body;          /* PUT; must stay valid until completion */
	size_t body_len;
	size_t max_size;           /* larger bodies fail with -EFBIG; 0 = 1 GiB */
	const struct cfs_fetch_sigv4 *sigv4; /* copied; NULL: unsigned */
	unsigned deadline_ms;      /* 0: the fetcher's default */
	const char *const *headers; /* extra "Name: value" lines, NULL-terminated, or
				     * NULL; copied; signed with the rest under SigV4;
				     * one with CR, LF or no ':' is -EINVAL */
};

struct cfs_fetch_result {
	int err;                   /* 0 or -errno, see cfs_fetch() */
	long status;               /* last HTTP status, 0 if none */
	void *body;                /* GET: malloc'd, owned by the receiver */
	size_t len;
	uint64_t object_size;      /* HEAD: Content-Length; GET: full object size when known */
	unsigned attempts;
};

int cfs_fetcher_new(const struct cfs_fetch_opts *opts, struct cfs_fetcher **out);
/* Fails whatever is still queued or in flight with -ECANCELED, then stops
 * the thread.  NULL is fine. */
void cfs_fetcher_free(struct cfs_fetcher *f);

/* Performs req and waits for it.  Returns res->err:
 *   0            2xx (206 for a range; a 200 to a range request is cut to
 *                the range, and a body of the wrong length is an error)
 *   -ENOENT      404
 *   -EACCES      401, 403
 *   -EKEYREJECTED the server's TLS certificate failed verification (or the
 *                CA bundle could not be loaded); not retried
 *   -ETIMEDOUT   the deadline passed
 *   -EFBIG       the body exceeds max_size
 *   -EPROTO      a reply that makes no sense (bad length, bad range, no or
 *                a malformed status line or header)
 *   -EIO         anything else once retries are spent (5xx, reset, ...)
 *   -ECANCELED   the fetcher is being freed
 * On success a GET's body is in res->body (free it). */
int cfs_fetch(struct cfs_fetcher *f, const struct cfs_fetch_req *req, struct cfs_fetch_result *res);

/* Asynchronous form: returns 0 once queued (or -errno); done() runs once,
 * on the fetcher's thread, and owns res->body.  It must not block. */
typedef void (*cfs_fetch_done_fn)(void *ctx, struct cfs_fetch_result *res);
int cfs_fetch_submit(struct cfs_fetcher *f, const struct cfs_fetch_req *req, cfs_fetch_done_fn done,
		     void *ctx);

/* Marks the requests the calling thread makes from now on as background
 * (on) or foreground (off, the default): speculative work such as
 * readahead and prefetch.  Background requests queue behind every
 * foreground one and never hold more than three quarters of max_inflight,
 * so a reader that waits for its data always finds a connection free. */
void cfs_fetch_thread_background(bool on);
bool cfs_fetch_thread_is_background(void);

struct cfs_fetch_stats {
	uint64_t requests;  /* completed, successful or not */
	uint64_t attempts;  /* transfers started, retries included */
	uint64_t retries;
	uint64_t errors;    /* requests that failed, but for a 404 */
	uint64_t not_found; /* 404s: an answer, counted apart from errors */
	uint64_t timeouts;  /* requests that hit their deadline */
	uint64_t bytes;     /* body bytes received */
	uint64_t bytes_sent;
	uint64_t inflight;  /* now */
	uint64_t queued;    /* now */
};
void cfs_fetcher_stats_get(struct cfs_fetcher *f, struct cfs_fetch_stats *out);

#endif /* CFS_FETCH_H */
