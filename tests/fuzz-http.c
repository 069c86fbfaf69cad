/* SPDX-License-Identifier: MIT */
/*
 * fuzz-http: libFuzzer target for the HTTP replies cfs interprets, through
 * the real path: libcurl, the fetcher's header and body callbacks
 * (Content-Range, body size bounds, check_reply(), status to errno,
 * retries) and the http and s3 store backends above it (objects, HEAD
 * sizes, tags, the store marker looked for after a 404, a PUT).
 *
 * The input is the raw reply.  A loopback server thread, started once,
 * answers every connection with it: it reads the request (headers, and
 * the body a Content-Length announces), writes the reply, and closes.  So
 * no request waits for a deadline; a reply that would make one wait is a
 * hang the fuzzer reports.  An input may hold several replies separated by
 * REPLY_SEP: the connections of one input get them in turn, round and
 * round, so that a retry, the marker check after a 404 or the next request
 * on a reused handle can see another reply than the first.  Per input: an object get, a HEAD and a tag get
 * on an http:// store and an s3:// store, a tag set (PUT) on the s3 one,
 * and a ranged GET straight through a fetcher.  Every call must return 0
 * (1 for a present object) or one of the errors fetch.h and store.h
 * document, and what a success hands back must be consistent with the
 * reply: a body is no longer than the reply and, unless chunked, a part of
 * it; a range has its exact length; a tag's digest is spelled in it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "digest.h"
#include "fetch.h"
#include "fuzz.h"
#include "store.h"
#include "store_i.h"
#include "util.h"



#define REQ_HEAD_MAX (64u << 10)
#define REQ_BODY_MAX (1u << 20)
#define RANGE_OFF 3u
#define RANGE_LEN 5u
#define TAG "fuzz/latest"
#define REPLY_SEP "\n--next--\n"

/* The replies the server writes, replaced for each input, and the number
 * of connections it answered since. */
static pthread_mutex_t reply_lock = PTHREAD_MUTEX_INITIALIZER;
static uint8_t *reply;
static size_t reply_len;
static unsigned conn_count;

static struct cfs_store *http_st, *s3_st;
static struct cfs_fetcher *fetcher;
static char object_url[256];

/* ---- the server ---- */

static const char *find_ci(const char *h, size_t n, const char *needle)
{
	size_t k = strlen(needle);

	for (size_t i = 0; i + k <= n; i++)
		if (!strncasecmp(h + i, needle, k))
			return h + i;
	return NULL;
}

/* Reads one request: its headers, then the body its Content-Length
 * announces, so that closing never resets the connection under the
 * reply.  Whatever goes wrong, the reply is written all the same. */
static void read_request(int fd)
{
	char *buf = malloc(REQ_HEAD_MAX + 1);
	const char *end = NULL, *cl;
	size_t got = 0, body = 0;
	ssize_t n;

	if (!buf)
		return;
	while (!end && got < REQ_HEAD_MAX) {
		n = recv(fd, buf + got, REQ_HEAD_MAX - got, 0);
		if (n <= 0)
			goto out;
		got += (size_t)n;
		buf[got] = '\0';
		end = strstr(buf, "\r\n\r\n");
	}
	if (!end)
		goto out;
	end += 4;
	cl = find_ci(buf, (size_t)(end - buf), "\r\nContent-Length:");
	/* A client that waits for 100 Continue sends no body before it. */
	if (cl && !find_ci(buf, (size_t)(end - buf), "\r\nExpect: 100"))
		body = strtoul(cl + 17, NULL, 10);
	body = body > REQ_BODY_MAX ? REQ_BODY_MAX : body;
	got -= (size_t)(end - buf);
	while (got < body) {
		n = recv(fd, buf, REQ_HEAD_MAX, 0);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
out:
	free(buf);
}

/* Reply k of the input, round and round: *len bytes at the result. */
static const uint8_t *reply_pick(unsigned k, size_t *len)
{
	const size_t sl = strlen(REPLY_SEP);
	const uint8_t *p = reply, *end = reply + reply_len, *s;
	unsigned n = 1;

	for (s = p; (s = memmem(s, (size_t)(end - s), REPLY_SEP, sl)); s += sl)
		n++;
	for (k %= n; k; k--)
		p = (const uint8_t *)memmem(p, (size_t)(end - p), REPLY_SEP, sl) + sl;
	s = memmem(p, (size_t)(end - p), REPLY_SEP, sl);
	*len = (size_t)((s ? s : end) - p);
	return p;
}

static void *server_main(void *arg)
{
	int lfd = (int)(intptr_t)arg;
	struct timeval tv = { .tv_sec = 1 };

	for (;;) {
		const uint8_t *r;
		uint8_t *copy;
		size_t len, off = 0;
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);

		if (fd < 0)
			continue;
		/* Bounds a client that sends nothing or reads nothing. */
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		read_request(fd);
		pthread_mutex_lock(&reply_lock);
		r = reply_pick(conn_count++, &len);
		copy = malloc(len ? len : 1);
		if (copy && len)
			memcpy(copy, r, len);
		pthread_mutex_unlock(&reply_lock);
		while (copy && off < len) {
			ssize_t n = send(fd, copy + off, len - off, MSG_NOSIGNAL);

			if (n <= 0)
				break;
			off += (size_t)n;
		}
		free(copy);
		shutdown(fd, SHUT_WR);
		close(fd);
	}
	return NULL;
}

static uint16_t server_start(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);
	pthread_t th;
	int lfd;

	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	FUZZ_ASSERT(lfd >= 0);
	FUZZ_ASSERT(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
	FUZZ_ASSERT(listen(lfd, 64) == 0);
	FUZZ_ASSERT(getsockname(lfd, (struct sockaddr *)&sa, &sl) == 0);
	FUZZ_ASSERT(pthread_create(&th, NULL, server_main, (void *)(intptr_t)lfd) == 0);
	pthread_detach(th);
	return ntohs(sa.sin_port);
}

/* ---- the clients, made once ---- */

static void setup(void)
{
	/* Fast failures: one retry (0 means the default of 6), 1 ms backoff,
	 * and a deadline that no reply should come near, since the server
	 * always closes. */
	static const struct cfs_fetch_opts fo = {
		.max_inflight = 4,
		.connect_timeout_ms = 1000,
		.stall_timeout_ms = 1000,
		.deadline_ms = 2000,
		.retries = 1,
		.backoff_ms = 1,
	};
	const struct cfs_store_opts so = { .fetch = &fo };
	static const char *const proxies[] = { "http_proxy", "HTTP_PROXY", "https_proxy",
					       "HTTPS_PROXY", "all_proxy", "ALL_PROXY" };
	static FILE *devnull;
	char url[64];
	uint16_t port;

	devnull = fopen("/dev/null", "we");
	cfs_log_setup("fuzz-http", CFS_LOG_ERR, devnull);
	for (size_t i = 0; i < sizeof(proxies) / sizeof(proxies[0]); i++)
		unsetenv(proxies[i]);
	port = server_start();
	snprintf(url, sizeof(url), "http://127.0.0.1:%u", port);
	setenv("AWS_ENDPOINT_URL", url, 1);
	setenv("AWS_ACCESS_KEY_ID", "AKIDFUZZ", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "fuzzsecret", 1);
	setenv("AWS_SESSION_TOKEN", "fuzztoken", 1);
	setenv("AWS_REGION", "us-east-1", 1);
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/store", port);
	FUZZ_ASSERT(cfs_store_open_opts(url, 0, &so, &http_st) == 0);
	FUZZ_ASSERT(cfs_store_open_opts("s3://bucket/prefix", 0, &so, &s3_st) == 0);
	FUZZ_ASSERT(cfs_fetcher_new(&fo, &fetcher) == 0);
	snprintf(object_url, sizeof(object_url), "%s/objects/ab/%064x", url, 0xab);
}

/* ---- checks ---- */

/* The errors fetch.h and store.h document for these calls. */
static bool documented(int ret)
{
	switch (-ret) {
	case ENOENT:
	case ENXIO:
	case EPROTONOSUPPORT:
	case EACCES:
	case ETIMEDOUT:
	case EIO:
	case EPROTO:
	case EFBIG:
	case ENOMEM:
	case EUCLEAN:
	case EKEYREJECTED:
		return true;
	default:
		return false;
	}
}

static bool has_ci(const uint8_t *d, size_t n, const char *needle)
{
	size_t k = strlen(needle);

	for (size_t i = 0; i + k <= n; i++)
		if (!strncasecmp((const char *)d + i, needle, k))
			return true;
	return false;
}

/* A body that came out of the reply: no longer than it and, when not
 * chunked (so not decoded), a run of its bytes. */
static void check_body(const uint8_t *data, size_t size, bool chunked, const void *body,
		       size_t len)
{
	FUZZ_ASSERT(body);
	FUZZ_ASSERT(len <= size);
	if (!chunked && len)
		FUZZ_ASSERT(memmem(data, size, body, len));
}

static void check_store(struct cfs_store *st, const uint8_t *data, size_t size, bool chunked)
{
	char ref[CFS_REF_STRLEN];
	cfs_digest d, tag;
	uint64_t osize = 0;
	void *buf = NULL;
	size_t len = 0;
	int ret;

	/* Each input starts from a store whose marker is not known yet. */
	atomic_store(&st->marker_state, 0);
	memset(&d, 0xab, sizeof(d));

	ret = cfs_store_get(st, &d, &buf, &len);
	FUZZ_ASSERT(ret == 0 || documented(ret));
	if (ret == 0)
		check_body(data, size, chunked, buf, len);
	free(buf);

	ret = cfs_store_has(st, &d, &osize);
	FUZZ_ASSERT(ret == 0 || ret == 1 || documented(ret));

	ret = cfs_store_tag_get(st, TAG, &tag);
	FUZZ_ASSERT(ret == 0 || documented(ret));
	if (ret == 0 && !chunked) {
		cfs_digest_ref(&tag, ref);
		FUZZ_ASSERT(has_ci(data, size, ref));
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool ready;
	struct cfs_fetch_req req = {
		.method = CFS_FETCH_GET,
		.url = object_url,
		.range_off = RANGE_OFF,
		.range_len = RANGE_LEN,
	};
	struct cfs_fetch_result res;
	bool chunked = has_ci(data, size, "chunked");
	cfs_digest d;
	uint8_t *copy;
	int ret;

	if (!ready) {
		setup();
		ready = true;
	}
	copy = malloc(size ? size : 1);
	FUZZ_ASSERT(copy);
	memcpy(copy, data, size);
	pthread_mutex_lock(&reply_lock);
	free(reply);
	reply = copy;
	reply_len = size;
	conn_count = 0;
	pthread_mutex_unlock(&reply_lock);

	check_store(http_st, data, size, chunked);
	check_store(s3_st, data, size, chunked);

	memset(&d, 0xcd, sizeof(d));
	ret = cfs_store_tag_set(s3_st, TAG, &d);
	FUZZ_ASSERT(ret == 0 || documented(ret));

	ret = cfs_fetch(fetcher, &req, &res);
	FUZZ_ASSERT(ret == res.err);
	FUZZ_ASSERT(ret == 0 || documented(ret));
	if (ret == 0) {
		FUZZ_ASSERT(res.len == RANGE_LEN);
		check_body(data, size, chunked, res.body, res.len);
	} else {
		FUZZ_ASSERT(!res.body);
	}
	free(res.body);
	return 0;
}
