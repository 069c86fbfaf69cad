/* SPDX-License-Identifier: MIT */
/*
 * The fetcher (fetch.h): one thread per fetcher drives one libcurl multi
 * handle.  Other threads only touch the incoming queue, under f->lock, and
 * wake the loop with curl_multi_wakeup(); everything else (the multi, the
 * easy handles, the pending queue, the deadline and retry heaps) belongs to
 * the loop thread alone.
 */
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "cfs_config.h"
#include "digest.h"
#include "fetch.h"
#include "util.h"

#define NS_PER_MS 1000000ull
#define BACKOFF_MAX_MS 2000u
#define SAFETY_SLACK_NS (1000 * NS_PER_MS) /* sync callers give up this long after the deadline */
#define RECV_BUFFER_SIZE (256 * 1024)
#define BODY_INITIAL_CAP (64 * 1024)

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
		atomic_uint_fast64_t requests, attempts, retries, errors, timeouts, bytes, bytes_sent,
			inflight, queued;
	} st;
};

static void stat_add(atomic_uint_fast64_t *v, uint64_t n)
{
	atomic_fetch_add_explicit(v, n, memory_order_relaxed);
}

static void stat_sub(atomic_uint_fast64_t *v, uint64_t n)
{
	atomic_fetch_sub_explicit(v, n, memory_order_relaxed);
}

/* ---- heaps of requests, by deadline or by retry time ---- */

static uint64_t heap_key(const struct heap *h, const struct req *r)
{
	return h->which == HEAP_DEADLINE ? r->deadline_ns : r->retry_ns;
}

static void heap_set(struct heap *h, size_t i, struct req *r)
{
	h->v[i] = r;
	r->hidx[h->which] = i;
}

static void heap_up(struct heap *h, size_t i)
{
	struct req *r = h->v[i];

	while (i > 0) {
		size_t p = (i - 1) / 2;
		if (heap_key(h, h->v[p]) <= heap_key(h, r))
			break;
		heap_set(h, i, h->v[p]);
		i = p;
	}
	heap_set(h, i, r);
}

static void heap_down(struct heap *h, size_t i)
{
	struct req *r = h->v[i];

	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= h->n)
			break;
		if (c + 1 < h->n && heap_key(h, h->v[c + 1]) < heap_key(h, h->v[c]))
			c++;
		if (heap_key(h, r) <= heap_key(h, h->v[c]))
			break;
		heap_set(h, i, h->v[c]);
		i = c;
	}
	heap_set(h, i, r);
}

static int heap_push(struct heap *h, struct req *r)
{
	if (h->n == h->cap) {
		size_t cap = h->cap ? h->cap * 2 : 64;
		struct req **v = realloc(h->v, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		h->v = v;
		h->cap = cap;
	}
	h->v[h->n] = r;
	r->hidx[h->which] = h->n;
	heap_up(h, h->n++);
	return 0;
}

static void heap_remove(struct heap *h, struct req *r)
{
	size_t i = r->hidx[h->which];
	struct req *last = h->v[--h->n];

	if (i == h->n)
		return;
	heap_set(h, i, last);
	heap_down(h, i);
	heap_up(h, last->hidx[h->which]);
}

static struct req *heap_top(const struct heap *h)
{
	return h->n ? h->v[0] : NULL;
}

/* ---- the pending queue (loop thread) ---- */

static void queue_unlink(struct cfs_fetcher *f, struct req *r)
{
	__typeof__(f->q[0]) *q = &f->q[r->background];

	if (r->prev)
		r->prev->next = r->next;
	else
		q->head = r->next;
	if (r->next)
		r->next->prev = r->prev;
	else
		q->tail = r->prev;
	r->next = r->prev = NULL;
}

static void queue_push_tail(struct cfs_fetcher *f, struct req *r)
{
	__typeof__(f->q[0]) *q = &f->q[r->background];

	r->next = NULL;
	r->prev = q->tail;
	if (q->tail)
		q->tail->next = r;
	else
		q->head = r;
	q->tail = r;
	r->state = RS_QUEUED;
}

static void queue_push_head(struct cfs_fetcher *f, struct req *r)
{
	__typeof__(f->q[0]) *q = &f->q[r->background];

	r->prev = NULL;
	r->next = q->head;
	if (q->head)
		q->head->prev = r;
	else
		q->tail = r;
	q->head = r;
	r->state = RS_QUEUED;
}

/* ---- helpers ---- */

static _Thread_local bool tls_background;

void cfs_fetch_thread_background(bool on)
{
	tls_background = on;
}

const char *cfs_fetch_method_name(enum cfs_fetch_method m)
{
	switch (m) {
	case CFS_FETCH_HEAD:
		return "HEAD";
	case CFS_FETCH_PUT:
		return "PUT";
	default:
		return "GET";
	}
}

/* The URL without user information or query string (a presigned URL
 * carries its signature there), for the log. */
static void url_for_log(const char *url, char *out, size_t size)
{
	const char *host = strstr(url, "://");
	const char *at, *end;
	size_t pre, n;

	host = host ? host + 3 : url;
	end = host + strcspn(host, "/?#");
	at = memchr(host, '@', (size_t)(end - host));
	pre = (size_t)(host - url);
	if (at)
		snprintf(out, size, "%.*s%s", (int)pre, url, at + 1);
	else
		snprintf(out, size, "%s", url);
	n = strcspn(out, "?#");
	if (out[n])
		snprintf(out + n, size - n, "?...");
}

static uint64_t rng_next(struct cfs_fetcher *f)
{
	uint64_t x = f->rng;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	f->rng = x;
	return x;
}

static bool curl_transient(CURLcode cc)
{
	switch (cc) {
	case CURLE_COULDNT_CONNECT:
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
		return true;
	default:
		return false;
	}
}

static int curl_errno(CURLcode cc)
{
	switch (cc) {
	case CURLE_OUT_OF_MEMORY:
		return -ENOMEM;
	case CURLE_URL_MALFORMAT:
	case CURLE_UNSUPPORTED_PROTOCOL:
		return -EINVAL;
	/* Distinct from -EIO so that the command can say what to fix; curl's
	 * error buffer, in the log line, says why. */
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_ISSUER_ERROR:
	case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
	case CURLE_SSL_INVALIDCERTSTATUS:
		return -EKEYREJECTED;
	default:
		return -EIO;
	}
}

/* libcurl reports a reply that has no status line (HTTP/0.9, which it
 * refuses) as CURLE_UNSUPPORTED_PROTOCOL, the code of a URL of another
 * scheme too, and a malformed one as CURLE_WEIRD_SERVER_REPLY.  Once the
 * request went out, either is the server's doing: -EPROTO, a reply that
 * makes no sense, not the caller's -EINVAL or a network -EIO. */
static int attempt_errno(struct req *r, CURLcode cc)
{
	long sent = 0;

	if (cc == CURLE_WEIRD_SERVER_REPLY)
		return -EPROTO;
	if (cc == CURLE_UNSUPPORTED_PROTOCOL &&
	    curl_easy_getinfo(r->easy, CURLINFO_REQUEST_SIZE, &sent) == CURLE_OK && sent > 0)
		return -EPROTO;
	return curl_errno(cc);
}

static bool status_transient(long status)
{
	return status == 408 || status == 429 ||
	       (status >= 500 && status <= 599 && status != 501 && status != 505);
}

static int status_errno(long status)
{
	if (status == 404 || status == 410)
		return -ENOENT;
	if (status == 401 || status == 403)
		return -EACCES;
	if ((status >= 300 && status <= 399) || status == 416)
		return -EPROTO;
	return -EIO;
}

/* ---- curl callbacks (loop thread) ---- */

static int body_reserve(struct req *r, size_t need)
{
	size_t cap;
	uint8_t *p;

	if (need <= r->cap)
		return 0;
	if (need > r->max_size)
		return -EFBIG;
	cap = r->cap ? r->cap : BODY_INITIAL_CAP;
	while (cap < need)
		cap = cap > SIZE_MAX / 2 ? need : cap * 2;
	if (cap > r->max_size)
		cap = r->max_size;
	p = realloc(r->buf, cap);
	if (!p)
		return -ENOMEM;
	r->buf = p;
	r->cap = cap;
	return 0;
}

/* Decides on the first bytes of a reply what to keep of it, and sizes the
 * buffer once when the length is known. */
static int body_start(struct req *r)
{
	curl_off_t cl = -1;
	long status = 0;

	curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_getinfo(r->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
	if (r->method != CFS_FETCH_GET || status < 200 || status > 299) {
		r->body_mode = 3; /* error documents and PUT replies are not kept */
		return 0;
	}
	if (r->range_len && status == 200) {
		/* The server ignored Range: keep only the window. */
		r->body_mode = 2;
		return body_reserve(r, (size_t)r->range_len);
	}
	r->body_mode = 1;
	if (r->range_len && status == 206) {
		if (cl >= 0 && (uint64_t)cl != r->range_len)
			return -EPROTO;
		return body_reserve(r, (size_t)r->range_len);
	}
	if (cl > 0) {
		if ((uint64_t)cl > r->max_size)
			return -EFBIG;
		return body_reserve(r, (size_t)cl);
	}
	return 0;
}

static size_t write_cb(char *data, size_t size, size_t nmemb, void *arg)
{
	struct req *r = arg;
	size_t n = size * nmemb;
	int err;

	stat_add(&r->f->st.bytes, n);
	if (!r->body_mode) {
		err = body_start(r);
		if (err) {
			r->abort_err = err;
			return 0;
		}
	}
	if (r->body_mode == 3) {
		r->rx_total += n;
		return n;
	}
	if (r->body_mode == 2) {
		uint64_t lo = r->range_off, hi = r->range_off + r->range_len;
		uint64_t a = CFS_MAX(r->rx_total, lo), b = CFS_MIN(r->rx_total + n, hi);
		if (a < b) {
			memcpy(r->buf + (a - lo), data + (a - r->rx_total), (size_t)(b - a));
			r->len = (size_t)(b - lo);
		}
		r->rx_total += n;
		return n;
	}
	if (r->len + n < r->len) {
		r->abort_err = -EFBIG;
		return 0;
	}
	err = body_reserve(r, r->len + n);
	if (err) {
		r->abort_err = err;
		return 0;
	}
	memcpy(r->buf + r->len, data, n);
	r->len += n;
	r->rx_total += n;
	return n;
}

/* Keeps the Content-Range of the final reply (curl_easy_header() needs
 * libcurl 7.84). */
static size_t header_cb(char *data, size_t size, size_t nmemb, void *arg)
{
	struct req *r = arg;
	size_t n = size * nmemb, k = sizeof("Content-Range:") - 1;

	if (n >= 5 && !memcmp(data, "HTTP/", 5)) {
		r->crange[0] = '\0'; /* a new reply (after a 100 Continue) */
	} else if (n > k && !strncasecmp(data, "Content-Range:", k)) {
		size_t m = n - k;
		data += k;
		while (m && (*data == ' ' || *data == '\t'))
			data++, m--;
		while (m && (data[m - 1] == '\r' || data[m - 1] == '\n' || data[m - 1] == ' '))
			m--;
		if (m >= sizeof(r->crange)) {
			snprintf(r->crange, sizeof(r->crange), "?"); /* check_reply() refuses it */
		} else {
			memcpy(r->crange, data, m);
			r->crange[m] = '\0';
		}
	}
	return n;
}

static size_t read_cb(char *buf, size_t size, size_t nitems, void *arg)
{
	struct req *r = arg;
	size_t n = CFS_MIN(size * nitems, r->body_len - r->put_off);

	if (!n)
		return 0;
	memcpy(buf, r->body + r->put_off, n);
	r->put_off += n;
	stat_add(&r->f->st.bytes_sent, n);
	return n;
}

static int seek_cb(void *arg, curl_off_t off, int origin)
{
	struct req *r = arg;

	if (origin != SEEK_SET || off < 0 || (uint64_t)off > r->body_len)
		return CURL_SEEKFUNC_CANTSEEK;
	r->put_off = (size_t)off;
	return CURL_SEEKFUNC_OK;
}

/* ---- requests ---- */

static void req_free(struct req *r)
{
	if (!r)
		return;
	if (r->sigv4_provider) {
		explicit_bzero(r->sigv4_provider, r->sigv4_alloc);
		free(r->sigv4_provider);
	}
	curl_slist_free_all(r->headers);
	free(r->buf);
	free(r->url);
	free(r);
}

static int headers_add(struct curl_slist **l, const char *h)
{
	struct curl_slist *n = curl_slist_append(*l, h);

	if (!n)
		return -ENOMEM;
	*l = n;
	return 0;
}

static int req_new(struct cfs_fetcher *f, const struct cfs_fetch_req *in, struct req **out)
{
	const struct cfs_fetch_sigv4 *sv = in->sigv4;
	struct req *r;
	int err = -ENOMEM;

	if (!in->url || in->method > CFS_FETCH_PUT || (in->body_len && !in->body))
		return -EINVAL;
	if (in->method == CFS_FETCH_GET && in->range_len &&
	    (in->range_off + in->range_len < in->range_off || in->range_len > SIZE_MAX))
		return -EINVAL;
	if (sv && (!sv->provider || !sv->key_id || !sv->secret))
		return -EINVAL;
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->f = f;
	r->method = in->method;
	r->background = tls_background;
	r->url = strdup(in->url);
	if (!r->url)
		goto fail;
	if (r->method == CFS_FETCH_GET) {
		r->range_off = in->range_off;
		r->range_len = in->range_len;
	}
	if (r->method == CFS_FETCH_PUT) {
		r->body = in->body;
		r->body_len = in->body_len;
	}
	r->max_size = in->max_size ? in->max_size : (size_t)1 << 30;
	if (r->range_len > r->max_size) {
		err = -EFBIG;
		goto fail;
	}

	if (sv) {
		size_t lp = strlen(sv->provider) + 1, lk = strlen(sv->key_id) + 1;
		size_t ls = strlen(sv->secret) + 1;
		char hdr[32 + 2 * CFS_DIGEST_LEN + 1];

		r->sigv4_alloc = lp + lk + ls;
		r->sigv4_provider = malloc(r->sigv4_alloc);
		if (!r->sigv4_provider)
			goto fail;
		r->sigv4_key = r->sigv4_provider + lp;
		r->sigv4_secret = r->sigv4_key + lk;
		memcpy(r->sigv4_provider, sv->provider, lp);
		memcpy(r->sigv4_key, sv->key_id, lk);
		memcpy(r->sigv4_secret, sv->secret, ls);
		/* libcurl 7.88 neither adds x-amz-content-sha256 nor hashes an
		 * uploaded body; it signs our header and takes its value as the
		 * payload hash.  Hash here, on the caller's thread. */
		if (r->method == CFS_FETCH_PUT) {
			char hex[CFS_DIGEST_HEX_LEN + 1];
			cfs_digest d;

			cfs_sha256(r->body, r->body_len, &d);
			cfs_digest_hex(&d, hex);
			snprintf(hdr, sizeof(hdr), "x-amz-content-sha256: %s", hex);
		} else {
			snprintf(hdr, sizeof(hdr), "x-amz-content-sha256: UNSIGNED-PAYLOAD");
		}
		if (headers_add(&r->headers, hdr))
			goto fail;
		if (sv->session_token) {
			char *tok;
			if (asprintf(&tok, "x-amz-security-token: %s", sv->session_token) < 0)
				goto fail;
			err = headers_add(&r->headers, tok);
			explicit_bzero(tok, strlen(tok));
			free(tok);
			if (err)
				goto fail;
			err = -ENOMEM;
		}
	} else if (r->method == CFS_FETCH_PUT) {
		/* No 100-continue round trip.  Not with SigV4: libcurl would sign
		 * the empty header it never sends. */
		if (headers_add(&r->headers, "Expect:"))
			goto fail;
	}
	for (const char *const *h = in->headers; h && *h; h++) {
		if (!strchr(*h, ':') || strpbrk(*h, "\r\n")) {
			err = -EINVAL;
			goto fail;
		}
		if (headers_add(&r->headers, *h))
			goto fail;
	}
	*out = r;
	return 0;
fail:
	req_free(r);
	return err;
}

/* libcurl before 8.1.0 keeps, across the transfers of a handle, a pointer
 * to the last header of the previous one, freed since (curl issue 11101):
 * a reply whose first header line is a folded continuation then writes
 * through it, so any server could corrupt the heap of a process that
 * reuses handles.  There a handle serves one attempt and is freed; the
 * connections, in the multi's cache, are reused all the same. */
static bool easy_reusable(void)
{
	return curl_version_info(CURLVERSION_NOW)->version_num >= 0x080100;
}

static CURL *easy_get(struct cfs_fetcher *f)
{
	if (f->pool_n)
		return f->pool[--f->pool_n];
	return curl_easy_init();
}

static void easy_put(struct cfs_fetcher *f, CURL *e)
{
	if (f->handle_per_attempt || f->pool_n == f->max_inflight) {
		curl_easy_cleanup(e); /* or a retry was holding one more */
		return;
	}
	curl_easy_reset(e);
	f->pool[f->pool_n++] = e;
}

static CURLcode easy_setup(struct cfs_fetcher *f, struct req *r, CURL *e)
{
	CURLcode cc = CURLE_OK;
	char range[48];

#define SET(opt, val)                                                                      \
	do {                                                                               \
		if (cc == CURLE_OK)                                                        \
			cc = curl_easy_setopt(e, opt, val);                                \
	} while (0)
	SET(CURLOPT_URL, r->url);
	SET(CURLOPT_PRIVATE, (void *)r);
	SET(CURLOPT_SHARE, f->share);
	SET(CURLOPT_ERRORBUFFER, r->errbuf);
	SET(CURLOPT_NOSIGNAL, 1L);
#if LIBCURL_VERSION_NUM >= 0x075500
	SET(CURLOPT_PROTOCOLS_STR, "http,https");
#else
	SET(CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
	SET(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
	/* Over TLS, wait to learn whether the first connection multiplexes
	 * (h2) rather than open one per request; plain http is HTTP/1.1. */
	if (!strncasecmp(r->url, "https:", 6))
		SET(CURLOPT_PIPEWAIT, 1L);
	SET(CURLOPT_FOLLOWLOCATION, 0L);
	SET(CURLOPT_TCP_NODELAY, 1L);
	SET(CURLOPT_TCP_KEEPALIVE, 1L);
	SET(CURLOPT_TCP_KEEPIDLE, 30L);
	SET(CURLOPT_TCP_KEEPINTVL, 10L);
	SET(CURLOPT_CONNECTTIMEOUT_MS, f->connect_timeout_ms);
	SET(CURLOPT_LOW_SPEED_LIMIT, 1024L);
	SET(CURLOPT_LOW_SPEED_TIME, f->stall_s);
	SET(CURLOPT_USERAGENT, "cfs/" CFS_VERSION);
	SET(CURLOPT_SSL_VERIFYPEER, f->insecure ? 0L : 1L);
	SET(CURLOPT_SSL_VERIFYHOST, f->insecure ? 0L : 2L);
	if (f->ca_file)
		SET(CURLOPT_CAINFO, f->ca_file);
	/* Fewer, larger writes.  libcurl 7.88 refuses a new size for a handle
	 * that kept its buffer from an earlier transfer: that one is as big. */
	curl_easy_setopt(e, CURLOPT_BUFFERSIZE, (long)RECV_BUFFER_SIZE);
	SET(CURLOPT_WRITEFUNCTION, write_cb);
	SET(CURLOPT_WRITEDATA, (void *)r);
	SET(CURLOPT_HEADERFUNCTION, header_cb);
	SET(CURLOPT_HEADERDATA, (void *)r);
	switch (r->method) {
	case CFS_FETCH_HEAD:
		SET(CURLOPT_NOBODY, 1L);
		break;
	case CFS_FETCH_PUT:
		SET(CURLOPT_UPLOAD, 1L);
		SET(CURLOPT_READFUNCTION, read_cb);
		SET(CURLOPT_READDATA, (void *)r);
		SET(CURLOPT_SEEKFUNCTION, seek_cb);
		SET(CURLOPT_SEEKDATA, (void *)r);
		SET(CURLOPT_INFILESIZE_LARGE, (curl_off_t)r->body_len);
		SET(CURLOPT_EXPECT_100_TIMEOUT_MS, 0L);
		break;
	default:
		if (r->range_len) {
			snprintf(range, sizeof(range), "%" PRIu64 "-%" PRIu64, r->range_off,
				 r->range_off + r->range_len - 1);
			SET(CURLOPT_RANGE, range);
		}
		break;
	}
	if (r->headers)
		SET(CURLOPT_HTTPHEADER, r->headers);
	if (r->sigv4_provider) {
		SET(CURLOPT_AWS_SIGV4, r->sigv4_provider);
		SET(CURLOPT_USERNAME, r->sigv4_key);
		SET(CURLOPT_PASSWORD, r->sigv4_secret);
	}
#undef SET
	return cc;
}

/* ---- completion (loop thread) ---- */

static void req_detach(struct cfs_fetcher *f, struct req *r)
{
	heap_remove(&f->deadlines, r);
	switch (r->state) {
	case RS_QUEUED:
		queue_unlink(f, r);
		stat_sub(&f->st.queued, 1);
		break;
	case RS_ACTIVE:
		curl_multi_remove_handle(f->multi, r->easy);
		f->active--;
		f->active_bg -= r->background;
		stat_sub(&f->st.inflight, 1);
		break;
	case RS_RETRY:
		heap_remove(&f->retry_at, r);
		break;
	default:
		break;
	}
	if (r->easy) { /* a retry keeps its handle between attempts */
		easy_put(f, r->easy);
		r->easy = NULL;
	}
	r->state = RS_NONE;
}

static void log_failure(const struct req *r, int err)
{
	const char *m = cfs_fetch_method_name(r->method);
	char url[512];

	if (err == -ENOENT || err == -ECANCELED)
		return;
	url_for_log(r->url, url, sizeof(url));
	if (r->status && r->status != 200 && r->status != 206)
		cfs_warn("%s %s: %ld after %u attempt%s (%s)", m, url, r->status,
			 r->attempts, r->attempts == 1 ? "" : "s", cfs_strerror(err));
	else if (r->cc != CURLE_OK)
		cfs_warn("%s %s: %s after %u attempt%s (%s)", m, url,
			 r->errbuf[0] ? r->errbuf : curl_easy_strerror(r->cc), r->attempts,
			 r->attempts == 1 ? "" : "s", cfs_strerror(err));
	else
		cfs_warn("%s %s: %s after %u attempt%s", m, url, cfs_strerror(err),
			 r->attempts, r->attempts == 1 ? "" : "s");
}

/* Removes r from wherever it is, reports err (or success) and frees it. */
static void req_complete(struct cfs_fetcher *f, struct req *r, int err, uint64_t object_size)
{
	struct cfs_fetch_result res = {
		.err = err,
		.status = r->status,
		.attempts = r->attempts,
	};
	struct sync_wait *w;

	if (r->state != RS_INCOMING)
		req_detach(f, r);
	/* An empty body is still a body. */
	if (!err && r->method == CFS_FETCH_GET && !r->buf && !(r->buf = malloc(1)))
		res.err = err = -ENOMEM;
	if (!err) {
		res.object_size = object_size;
		if (r->method == CFS_FETCH_GET) {
			res.body = r->buf;
			res.len = r->len;
			r->buf = NULL;
		}
	} else {
		stat_add(&f->st.errors, 1);
		if (err == -ETIMEDOUT)
			stat_add(&f->st.timeouts, 1);
		log_failure(r, err);
	}
	stat_add(&f->st.requests, 1);

	if (r->done) {
		r->done(r->ctx, &res);
		req_free(r);
		return;
	}
	pthread_mutex_lock(&f->lock);
	w = r->sync;
	if (w)
		w->claimed = true;
	r->sync = NULL;
	pthread_mutex_unlock(&f->lock);
	if (w) {
		pthread_mutex_lock(&w->m);
		w->res = res;
		w->done = true;
		pthread_cond_signal(&w->c);
		pthread_mutex_unlock(&w->m);
	} else {
		free(res.body); /* the caller gave up */
	}
	req_free(r);
}

static int parse_content_range(const char *v, uint64_t *start, uint64_t *end, uint64_t *total)
{
	unsigned long long a, b;
	char *p;

	if (!*v)
		return -ENOENT;
	if (strncasecmp(v, "bytes ", 6))
		return -EPROTO;
	v += 6;
	errno = 0;
	if (*v < '0' || *v > '9')
		return -EPROTO;
	a = strtoull(v, &p, 10);
	if (*p != '-' || errno)
		return -EPROTO;
	v = p + 1;
	if (*v < '0' || *v > '9')
		return -EPROTO;
	b = strtoull(v, &p, 10);
	if (*p != '/' || errno || b < a)
		return -EPROTO;
	*start = a;
	*end = b;
	v = p + 1;
	if (*v == '*') {
		*total = 0;
		return 0;
	}
	if (*v < '0' || *v > '9')
		return -EPROTO;
	*total = strtoull(v, &p, 10);
	if (errno || *total <= b)
		return -EPROTO;
	return 0;
}

/* A 2xx reply: is it what was asked for?  0 or -EPROTO; *size gets the
 * object size. */
static int check_reply(struct req *r, uint64_t *size)
{
	uint64_t a, b, total;
	curl_off_t cl = -1;
	int err;

	switch (r->method) {
	case CFS_FETCH_HEAD:
		curl_easy_getinfo(r->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
		if (cl < 0)
			return -EPROTO;
		*size = (uint64_t)cl;
		return 0;
	case CFS_FETCH_PUT:
		*size = r->body_len;
		return 0;
	default:
		break;
	}
	if (!r->range_len) {
		if (r->status == 206)
			return -EPROTO;
		*size = r->len;
		return 0;
	}
	if (r->status == 200) {
		if (r->rx_total < r->range_off + r->range_len)
			return -EPROTO;
		*size = r->rx_total;
		return 0;
	}
	if (r->status != 206 || r->len != r->range_len)
		return -EPROTO;
	err = parse_content_range(r->crange, &a, &b, &total);
	if (err == -ENOENT) {
		*size = 0;
		return 0;
	}
	if (err || a != r->range_off || b - a + 1 != r->range_len)
		return -EPROTO;
	*size = total;
	return 0;
}

static void attempt_reset(struct req *r)
{
	r->len = 0;
	r->rx_total = 0;
	r->body_mode = 0;
	r->abort_err = 0;
	r->crange[0] = '\0';
	r->put_off = 0;
	r->status = 0;
	r->cc = CURLE_OK;
	r->errbuf[0] = '\0';
}

static void req_start(struct cfs_fetcher *f, struct req *r)
{
	CURLcode cc;
	CURLMcode mc;
	CURL *e;

	queue_unlink(f, r);
	stat_sub(&f->st.queued, 1);
	r->state = RS_NONE;
	attempt_reset(r);
	if (r->easy && f->handle_per_attempt) { /* a retry, on a fresh handle */
		easy_put(f, r->easy);
		r->easy = NULL;
	}
	e = r->easy ? r->easy : easy_get(f);
	if (!e) {
		req_complete(f, r, -ENOMEM, 0);
		return;
	}
	r->easy = e;
	/* A retry keeps its options; only the body state starts over. */
	if (!r->attempts || f->handle_per_attempt) {
		cc = easy_setup(f, r, e);
		if (cc != CURLE_OK) {
			r->cc = cc;
			r->easy = NULL;
			easy_put(f, e);
			r->state = RS_NONE;
			req_complete(f, r, curl_errno(cc), 0);
			return;
		}
	}
	mc = curl_multi_add_handle(f->multi, e);
	if (mc != CURLM_OK) {
		r->easy = NULL;
		easy_put(f, e);
		req_complete(f, r, mc == CURLM_OUT_OF_MEMORY ? -ENOMEM : -EIO, 0);
		return;
	}
	r->attempts++;
	r->state = RS_ACTIVE;
	f->active++;
	f->active_bg += r->background;
	stat_add(&f->st.inflight, 1);
	stat_add(&f->st.attempts, 1);
}

static void req_finished(struct cfs_fetcher *f, struct req *r, CURLcode cc)
{
	char url[512];
	uint64_t size = 0, now, backoff_ns, cap_ms;
	bool retry = false;
	int err;

	r->cc = cc;
	curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &r->status);
	if (cc == CURLE_WRITE_ERROR && r->abort_err) {
		err = r->abort_err;
	} else if (cc != CURLE_OK) {
		err = attempt_errno(r, cc);
		retry = curl_transient(cc);
	} else if (r->status >= 200 && r->status <= 299) {
		err = check_reply(r, &size);
		if (!err) {
			req_complete(f, r, 0, size);
			return;
		}
	} else {
		err = status_errno(r->status);
		retry = status_transient(r->status);
	}

	url_for_log(r->url, url, sizeof(url));
	cfs_debug("%s %s: attempt %u: status %ld, %s%s%s", cfs_fetch_method_name(r->method), url,
		  r->attempts, r->status, curl_easy_strerror(cc), r->errbuf[0] ? ": " : "", r->errbuf);

	if (!retry || r->attempts > f->retries) {
		req_complete(f, r, err, 0);
		return;
	}
	/* Full jitter: uniform in [0, min(max, base << n)]. */
	cap_ms = f->backoff_ms;
	for (unsigned i = 1; i < r->attempts && cap_ms < BACKOFF_MAX_MS; i++)
		cap_ms *= 2;
	cap_ms = CFS_MIN(cap_ms, BACKOFF_MAX_MS);
	backoff_ns = (rng_next(f) >> 11) % (cap_ms * NS_PER_MS + 1);
	now = cfs_now_ns();
	if (now + backoff_ns >= r->deadline_ns) {
		req_complete(f, r, -ETIMEDOUT, 0);
		return;
	}
	curl_multi_remove_handle(f->multi, r->easy);
	f->active--;
	f->active_bg -= r->background;
	stat_sub(&f->st.inflight, 1);
	stat_add(&f->st.retries, 1);
	r->retry_ns = now + backoff_ns;
	if (heap_push(&f->retry_at, r)) {
		r->state = RS_NONE;
		easy_put(f, r->easy);
		r->easy = NULL;
		req_complete(f, r, -ENOMEM, 0);
		return;
	}
	r->state = RS_RETRY;
}

/* ---- the loop ---- */

static void take_incoming(struct cfs_fetcher *f, bool *stopping)
{
	struct req *r, *next;

	pthread_mutex_lock(&f->lock);
	r = f->in_head;
	f->in_head = f->in_tail = NULL;
	f->wake_pending = false;
	*stopping = f->stopping;
	pthread_mutex_unlock(&f->lock);

	for (; r; r = next) {
		next = r->next;
		r->next = NULL;
		if (*stopping) {
			stat_sub(&f->st.queued, 1);
			req_complete(f, r, -ECANCELED, 0);
			continue;
		}
		if (heap_push(&f->deadlines, r)) {
			stat_sub(&f->st.queued, 1);
			req_complete(f, r, -ENOMEM, 0);
			continue;
		}
		queue_push_tail(f, r);
	}
}

static void handle_timers(struct cfs_fetcher *f)
{
	uint64_t now = cfs_now_ns();
	struct req *r;

	while ((r = heap_top(&f->deadlines)) && r->deadline_ns <= now)
		req_complete(f, r, -ETIMEDOUT, 0);
	/* Retries go to the head of the queue: they were admitted before. */
	while ((r = heap_top(&f->retry_at)) && r->retry_ns <= now) {
		heap_remove(&f->retry_at, r);
		queue_push_head(f, r);
		stat_add(&f->st.queued, 1);
	}
}

/* Foreground first; background only up to its own limit, so that some
 * connections are always left for a reader that waits. */
static void start_pending(struct cfs_fetcher *f)
{
	while (f->q[0].head && f->active < f->max_inflight)
		req_start(f, f->q[0].head);
	while (f->q[1].head && f->active < f->max_inflight && f->active_bg < f->max_background)
		req_start(f, f->q[1].head);
}

static int next_timeout_ms(struct cfs_fetcher *f)
{
	uint64_t next = UINT64_MAX, now;
	long curl_ms = -1;
	struct req *r;
	int ms = 1000;

	curl_multi_timeout(f->multi, &curl_ms);
	if (curl_ms >= 0 && curl_ms < ms)
		ms = (int)curl_ms;
	if ((r = heap_top(&f->deadlines)))
		next = r->deadline_ns;
	if ((r = heap_top(&f->retry_at)) && r->retry_ns < next)
		next = r->retry_ns;
	if (next != UINT64_MAX) {
		now = cfs_now_ns();
		if (next <= now)
			return 0;
		/* Round up so the deadline has passed when the poll returns. */
		next = (next - now + NS_PER_MS - 1) / NS_PER_MS;
		if (next < (uint64_t)ms)
			ms = (int)next;
	}
	return ms;
}

static void *loop_main(void *arg)
{
	struct cfs_fetcher *f = arg;
	bool stopping = false;
	int running;
	CURLMsg *msg;
	struct req *r;

	for (;;) {
		take_incoming(f, &stopping);
		if (stopping)
			break;
		handle_timers(f);
		start_pending(f);
		curl_multi_perform(f->multi, &running);
		while ((msg = curl_multi_info_read(f->multi, &running))) {
			if (msg->msg != CURLMSG_DONE)
				continue;
			r = NULL;
			curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
			if (r)
				req_finished(f, r, msg->data.result);
		}
		start_pending(f);
		curl_multi_poll(f->multi, NULL, 0, next_timeout_ms(f), NULL);
	}

	/* Every admitted request is in the deadline heap. */
	while ((r = heap_top(&f->deadlines)))
		req_complete(f, r, -ECANCELED, 0);
	return NULL;
}

/* ---- public ---- */

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc;

static void global_init(void)
{
	global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

int cfs_fetch_ca_resolve(const char *ca_file, char **out)
{
	const char *path = ca_file;
	char cwd[PATH_MAX];
	size_t n;

	*out = NULL;
	if (!path) {
		path = getenv("CURL_CA_BUNDLE");
		if (!path || !*path)
			path = getenv("SSL_CERT_FILE");
		if (!path || !*path)
			return 0;
	} else if (access(path, R_OK) < 0) {
		return -errno;
	}
	if (path[0] == '/')
		return (*out = strdup(path)) ? 0 : -ENOMEM;
	if (!getcwd(cwd, sizeof(cwd)))
		return -errno;
	n = strlen(cwd) + 1 + strlen(path) + 1;
	if (!(*out = malloc(n)))
		return -ENOMEM;
	snprintf(*out, n, "%s/%s", cwd, path);
	return 0;
}

int cfs_fetcher_new(const struct cfs_fetch_opts *opts, struct cfs_fetcher **out)
{
	static const struct cfs_fetch_opts defaults;
	struct cfs_fetcher *f;
	sigset_t all, old;
	int err = -ENOMEM;
	unsigned stall_ms;

	if (!opts)
		opts = &defaults;
	pthread_once(&global_once, global_init);
	if (global_rc != CURLE_OK)
		return -ENOMEM;
	f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	f->max_inflight = opts->max_inflight ? opts->max_inflight : 64;
	/* A quarter of the connections stay for foreground requests. */
	f->max_background = f->max_inflight > 1 ? f->max_inflight - f->max_inflight / 4 : 1;
	f->connect_timeout_ms = opts->connect_timeout_ms ? (long)opts->connect_timeout_ms : 3000;
	stall_ms = opts->stall_timeout_ms ? opts->stall_timeout_ms : 10000;
	f->stall_s = (long)((stall_ms + 999) / 1000);
	f->deadline_ms = opts->deadline_ms ? opts->deadline_ms : 30000;
	f->retries = opts->retries ? opts->retries : 6;
	f->backoff_ms = opts->backoff_ms ? opts->backoff_ms : 50;
	f->insecure = opts->insecure;
	f->handle_per_attempt = !easy_reusable();
	f->deadlines.which = HEAP_DEADLINE;
	f->retry_at.which = HEAP_RETRY;
	f->rng = (cfs_now_ns() ^ (uint64_t)(uintptr_t)f) | 1;
	if (opts->ca_file && !(f->ca_file = strdup(opts->ca_file)))
		goto fail;
	f->pool = calloc(f->max_inflight, sizeof(*f->pool));
	if (!f->pool)
		goto fail;
	err = -pthread_mutex_init(&f->lock, NULL);
	if (err)
		goto fail;

	err = -ENOMEM;
	f->share = curl_share_init();
	if (!f->share)
		goto fail_lock;
	/* Only the loop thread uses the share: no lock functions needed. */
	curl_share_setopt(f->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
	curl_share_setopt(f->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
	f->multi = curl_multi_init();
	if (!f->multi)
		goto fail_share;
	curl_multi_setopt(f->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
	/* HTTP/1.1 stores (S3 among them) need a connection per request in
	 * flight: at 20 ms RTT, 16 connections gave a third of the request
	 * rate of 64.  Over h2, PIPEWAIT keeps it to one multiplexed one. */
	curl_multi_setopt(f->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)f->max_inflight);
	curl_multi_setopt(f->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)f->max_inflight);
	curl_multi_setopt(f->multi, CURLMOPT_MAXCONNECTS, (long)f->max_inflight);

	/* The loop takes no signals: they belong to the application. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	err = -pthread_create(&f->thread, NULL, loop_main, f);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err)
		goto fail_multi;
	*out = f;
	return 0;

fail_multi:
	curl_multi_cleanup(f->multi);
fail_share:
	curl_share_cleanup(f->share);
fail_lock:
	pthread_mutex_destroy(&f->lock);
fail:
	free(f->pool);
	free(f->ca_file);
	free(f);
	return err;
}

void cfs_fetcher_free(struct cfs_fetcher *f)
{
	if (!f)
		return;
	pthread_mutex_lock(&f->lock);
	f->stopping = true;
	curl_multi_wakeup(f->multi);
	pthread_mutex_unlock(&f->lock);
	pthread_join(f->thread, NULL);

	while (f->pool_n)
		curl_easy_cleanup(f->pool[--f->pool_n]);
	curl_multi_cleanup(f->multi);
	curl_share_cleanup(f->share);
	pthread_mutex_destroy(&f->lock);
	free(f->deadlines.v);
	free(f->retry_at.v);
	free(f->pool);
	free(f->ca_file);
	free(f);
}

/* Hands r to the loop, which owns it from then on. */
static int submit(struct cfs_fetcher *f, struct req *r, unsigned deadline_ms)
{
	unsigned ms = deadline_ms ? deadline_ms : f->deadline_ms;

	r->deadline_ns = cfs_now_ns() + (uint64_t)ms * NS_PER_MS;
	r->state = RS_INCOMING;
	if (r->sync)
		r->sync->give_up_ns = r->deadline_ns + SAFETY_SLACK_NS;
	pthread_mutex_lock(&f->lock);
	if (f->stopping) {
		pthread_mutex_unlock(&f->lock);
		return -ECANCELED;
	}
	if (f->in_tail)
		f->in_tail->next = r;
	else
		f->in_head = r;
	f->in_tail = r;
	stat_add(&f->st.queued, 1);
	/* One wakeup per batch: the loop clears the flag when it drains. */
	if (!f->wake_pending) {
		f->wake_pending = true;
		curl_multi_wakeup(f->multi);
	}
	pthread_mutex_unlock(&f->lock);
	return 0;
}

int cfs_fetch_submit(struct cfs_fetcher *f, const struct cfs_fetch_req *req, cfs_fetch_done_fn done,
		     void *ctx)
{
	struct req *r;
	int err;

	if (!f || !req || !done)
		return -EINVAL;
	err = req_new(f, req, &r);
	if (err)
		return err;
	r->done = done;
	r->ctx = ctx;
	err = submit(f, r, req->deadline_ms);
	if (err)
		req_free(r);
	return err;
}

int cfs_fetch(struct cfs_fetcher *f, const struct cfs_fetch_req *req, struct cfs_fetch_result *res)
{
	struct sync_wait w = { .done = false };
	pthread_condattr_t ca;
	struct timespec ts;
	uint64_t give_up;
	struct req *r;
	bool detached = false;
	int err;

	if (!res)
		return -EINVAL;
	memset(res, 0, sizeof(*res));
	if (!f || !req)
		return res->err = -EINVAL;
	if (pthread_equal(pthread_self(), f->thread))
		return res->err = -EDEADLK; /* from a done() callback */
	err = req_new(f, req, &r);
	if (err)
		return res->err = err;
	pthread_mutex_init(&w.m, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&w.c, &ca);
	pthread_condattr_destroy(&ca);
	r->sync = &w;
	err = submit(f, r, req->deadline_ms);
	if (err) {
		req_free(r);
		res->err = err;
		goto out;
	}
	/* The loop enforces the deadline; this wait only guards against a
	 * loop that is stuck. */
	give_up = w.give_up_ns;
	ts.tv_sec = (time_t)(give_up / 1000000000ull);
	ts.tv_nsec = (long)(give_up % 1000000000ull);
	pthread_mutex_lock(&w.m);
	while (!w.done) {
		if (pthread_cond_timedwait(&w.c, &w.m, &ts) == ETIMEDOUT && !w.done) {
			pthread_mutex_unlock(&w.m);
			pthread_mutex_lock(&f->lock);
			if (!w.claimed) {
				r->sync = NULL; /* the loop frees it whenever it gets to it */
				detached = true;
			}
			pthread_mutex_unlock(&f->lock);
			pthread_mutex_lock(&w.m);
			if (detached)
				break;
			while (!w.done) /* being completed right now */
				pthread_cond_wait(&w.c, &w.m);
		}
	}
	pthread_mutex_unlock(&w.m);
	if (detached) {
		cfs_warn("%s: no answer from the fetcher's loop %u ms after the deadline",
			 cfs_fetch_method_name(req->method), (unsigned)(SAFETY_SLACK_NS / NS_PER_MS));
		res->err = -ETIMEDOUT;
	} else {
		*res = w.res;
	}
out:
	pthread_cond_destroy(&w.c);
	pthread_mutex_destroy(&w.m);
	return res->err;
}

void cfs_fetcher_stats_get(struct cfs_fetcher *f, struct cfs_fetch_stats *out)
{
	memset(out, 0, sizeof(*out));
	if (!f)
		return;
#define GET(x) out->x = atomic_load_explicit(&f->st.x, memory_order_relaxed)
	GET(requests);
	GET(attempts);
	GET(retries);
	GET(errors);
	GET(timeouts);
	GET(bytes);
	GET(bytes_sent);
	GET(inflight);
	GET(queued);
#undef GET
}
