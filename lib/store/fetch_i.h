/* SPDX-License-Identifier: MIT */
/* The fetcher's insides, shared by fetch.c (the loop thread: queue, heaps,
 * multi handle, submission) and fetch_req.c (one request: its curl handle's
 * options, callbacks and body, and what an attempt's reply means). */
#ifndef CFS_FETCH_I_H
#define CFS_FETCH_I_H

#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "fetch.h"

/* RS_INCOMING: not yet seen by the loop; the others are in the deadline
 * heap, and RS_NONE is in nothing else. */
enum req_state { RS_INCOMING, RS_NONE, RS_QUEUED, RS_ACTIVE, RS_RETRY };
enum { HEAP_DEADLINE, HEAP_RETRY };

struct sync_wait {
	pthread_mutex_t m;
	pthread_cond_t c;
	bool done;
	bool claimed; /* under f->lock: the loop is completing it, wait for done */
	uint64_t give_up_ns;
	struct cfs_fetch_result res;
};

struct req {
	struct req *next, *prev; /* incoming list or pending queue */
	struct cfs_fetcher *f;
	enum req_state state;
	enum cfs_fetch_method method;
	char *url;
	uint64_t range_off, range_len;
	const uint8_t *body;
	size_t body_len;
	size_t max_size;
	struct curl_slist *headers;
	char *sigv4_provider, *sigv4_key, *sigv4_secret; /* one allocation, at sigv4_provider */
	size_t sigv4_alloc;

	uint64_t deadline_ns, retry_ns;
	size_t hidx[2];
	unsigned attempts;
	CURL *easy;

	/* The body of the current attempt. */
	uint8_t *buf;
	size_t len, cap;
	uint64_t rx_total;   /* bytes the server sent for this attempt */
	int body_mode;       /* 0 undecided, 1 keep all, 2 keep the range window, 3 discard */
	int abort_err;       /* why the write callback stopped the transfer */
	bool background;     /* queued behind foreground requests */
	char crange[96];     /* Content-Range of the reply, "" if none */
	size_t put_off;

	/* The last attempt's outcome, for the final error and the log. */
	long status;
	CURLcode cc;
	char errbuf[CURL_ERROR_SIZE];

	cfs_fetch_done_fn done;
	void *ctx;
	struct sync_wait *sync; /* under f->lock; NULL once the caller gave up */
};

struct heap {
	struct req **v;
	size_t n, cap;
	int which;
};

struct cfs_fetcher {
	/* Settings. */
	unsigned max_inflight;
	long connect_timeout_ms;
	long stall_s;
	unsigned deadline_ms;
	unsigned retries;
	unsigned backoff_ms;
	bool insecure;
	char *ca_file;

	pthread_t thread;
	CURLM *multi;
	CURLSH *share;

	/* Shared with submitters, under lock. */
	pthread_mutex_t lock;
	struct req *in_head, *in_tail;
	bool stopping;
	bool wake_pending;

	/* Loop thread only. */
	struct {
		struct req *head, *tail;
	} q[2];                      /* pending, FIFO: [0] foreground, [1] background */
	unsigned max_background;     /* background requests on the wire at most */
	unsigned active_bg;
	struct heap deadlines, retry_at;
	CURL **pool;
	size_t pool_n;
	bool handle_per_attempt;     /* see easy_reusable() */
	unsigned active;
	uint64_t rng;

	struct {
		atomic_uint_fast64_t requests, attempts, retries, errors, not_found, timeouts,
			bytes, bytes_sent,
			inflight, queued;
	} st;
};

static inline void stat_add(atomic_uint_fast64_t *v, uint64_t n)
{
	atomic_fetch_add_explicit(v, n, memory_order_relaxed);
}

static inline void stat_sub(atomic_uint_fast64_t *v, uint64_t n)
{
	atomic_fetch_sub_explicit(v, n, memory_order_relaxed);
}

/* ---- fetch_req.c ---- */

/* A request from the caller's description, on the caller's thread: 0,
 * -EINVAL (malformed), -EFBIG (range over max_size), -ENOMEM. */
int cfs_fetch_req_new(struct cfs_fetcher *f, const struct cfs_fetch_req *in, struct req **out);
void cfs_fetch_req_free(struct req *r); /* NULL is fine */

/* Sets r's options on e (a retry on the same handle keeps them): 0, or the
 * -errno of the option curl refused, with r->cc its code. */
int cfs_fetch_easy_setup(struct cfs_fetcher *f, struct req *r, CURL *e);

/* Clears what the previous attempt left in r. */
void cfs_fetch_attempt_reset(struct req *r);

/* What the attempt that ended with cc means: 0 and *size the object size
 * for a reply that is what was asked for, else its -errno, logged at debug
 * level, with *retry set when another attempt may do better. */
int cfs_fetch_attempt_outcome(struct req *r, CURLcode cc, uint64_t *size, bool *retry);

/* The warning for a request that failed with err (none for -ENOENT or
 * -ECANCELED, which callers expect). */
void cfs_fetch_log_failure(const struct req *r, int err);

#endif /* CFS_FETCH_I_H */
