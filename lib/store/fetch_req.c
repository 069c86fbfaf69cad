/* SPDX-License-Identifier: MIT */
/*
 * One request of the fetcher (fetch.h), as the loop thread (fetch.c)
 * drives it: built from the caller's description on the caller's thread
 * (headers, SigV4 credentials, the payload hash), then its curl handle's
 * options, the callbacks that keep the body (or only the asked-for window
 * of a server that ignored Range) and the Content-Range, and what the
 * reply of an attempt means: success, an -errno, and whether to retry.
 * Nothing here knows of queues, heaps or other requests.
 */
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cfs_config.h"
#include "digest.h"
#include "fetch_i.h"
#include "util.h"

#define RECV_BUFFER_SIZE (256 * 1024)
#define BODY_INITIAL_CAP (64 * 1024)
/* A server's Content-Length sizes the buffer up front only this far; past
 * it the buffer grows as the bytes arrive.  Otherwise one reply claiming
 * the largest object allowed (2 GiB) costs that allocation before a byte
 * of it came (fuzz-http found it); objects are chunks, far below this. */
#define BODY_PREALLOC_MAX ((size_t)64 << 20)

static _Thread_local bool tls_background;

void cfs_fetch_thread_background(bool on)
{
	tls_background = on;
}

bool cfs_fetch_thread_is_background(void)
{
	return tls_background;
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
 * buffer once when the length is known (a server's up to
 * BODY_PREALLOC_MAX). */
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
		return body_reserve(r, CFS_MIN((size_t)cl, BODY_PREALLOC_MAX));
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

void cfs_fetch_req_free(struct req *r)
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

int cfs_fetch_req_new(struct cfs_fetcher *f, const struct cfs_fetch_req *in, struct req **out)
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
	cfs_fetch_req_free(r);
	return err;
}

int cfs_fetch_easy_setup(struct cfs_fetcher *f, struct req *r, CURL *e)
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
	if (cc == CURLE_OK)
		return 0;
	r->cc = cc;
	return curl_errno(cc);
}

void cfs_fetch_log_failure(const struct req *r, int err)
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

void cfs_fetch_attempt_reset(struct req *r)
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

int cfs_fetch_attempt_outcome(struct req *r, CURLcode cc, uint64_t *size, bool *retry)
{
	char url[512];
	int err;

	*retry = false;
	r->cc = cc;
	curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &r->status);
	if (cc == CURLE_WRITE_ERROR && r->abort_err) {
		err = r->abort_err;
	} else if (cc != CURLE_OK) {
		err = attempt_errno(r, cc);
		*retry = curl_transient(cc);
	} else if (r->status >= 200 && r->status <= 299) {
		err = check_reply(r, size);
		if (!err)
			return 0;
	} else {
		err = status_errno(r->status);
		*retry = status_transient(r->status);
	}

	url_for_log(r->url, url, sizeof(url));
	cfs_debug("%s %s: attempt %u: status %ld, %s%s%s", cfs_fetch_method_name(r->method), url,
		  r->attempts, r->status, curl_easy_strerror(cc), r->errbuf[0] ? ": " : "", r->errbuf);
	return err;
}
