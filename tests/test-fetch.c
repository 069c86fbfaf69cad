/* SPDX-License-Identifier: MIT */
/*
 * test-fetch: the fetcher against a scripted HTTP/1.1 server in this process
 * (ranges, HEAD, PUT, 5xx/429 then success, 404, 403, resets, short bodies,
 * hangs, trickles, concurrency, cancellation, connection reuse), and
 * against a real nginx when /usr/sbin/nginx exists.
 *
 * The server's behaviour is in the path: /MODE/N/SIZE/KEY, where the fault
 * MODE applies to the first N requests for that exact path (0: all of them)
 * and the object is SIZE bytes of a pattern.  CFS_FETCH_BENCH=1 also times
 * 200 sequential and 200 parallel 1 MiB GETs from nginx.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "digest.h"
#include "fetch.h"
#include "test.h"
#include "util.h"

/* ---- the scripted server ---- */

#define MAX_PATHS 512
#define MAX_CONNS 1024

struct path_rec {
	char path[256];
	unsigned hits;
	uint8_t *put_body; /* last PUT that succeeded */
	size_t put_len;
	char sha_hdr[80];  /* x-amz-content-sha256 of the last request */
	char auth[512];
	bool token;
};

static struct server {
	int lfd;
	int port;
	pthread_t accept_thread;
	pthread_mutex_t lock;
	struct path_rec paths[MAX_PATHS];
	unsigned npaths;
	int conn_fds[MAX_CONNS];
	pthread_t conn_threads[MAX_CONNS];
	unsigned nconns;
	atomic_uint accepted;
	atomic_bool stop;
} srv;

static uint8_t pat(uint64_t i)
{
	return (uint8_t)((i * 2654435761u) >> 13 ^ i >> 9);
}

static bool pat_ok(const uint8_t *p, size_t len, uint64_t off)
{
	for (size_t i = 0; i < len; i++)
		if (p[i] != pat(off + i))
			return false;
	return true;
}

/* Records the request and returns its hit number (1 = first). */
static unsigned path_hit(const char *path, const char *sha, const char *auth, bool token)
{
	struct path_rec *p = NULL;
	unsigned n;

	pthread_mutex_lock(&srv.lock);
	for (unsigned i = 0; i < srv.npaths; i++)
		if (!strcmp(srv.paths[i].path, path))
			p = &srv.paths[i];
	if (!p && srv.npaths < MAX_PATHS) {
		p = &srv.paths[srv.npaths++];
		snprintf(p->path, sizeof(p->path), "%s", path);
	}
	if (!p) {
		pthread_mutex_unlock(&srv.lock);
		return 1;
	}
	n = ++p->hits;
	snprintf(p->sha_hdr, sizeof(p->sha_hdr), "%s", sha);
	snprintf(p->auth, sizeof(p->auth), "%s", auth);
	p->token = token;
	pthread_mutex_unlock(&srv.lock);
	return n;
}

static void path_put(const char *path, const uint8_t *body, size_t len)
{
	pthread_mutex_lock(&srv.lock);
	for (unsigned i = 0; i < srv.npaths; i++) {
		if (!strcmp(srv.paths[i].path, path)) {
			free(srv.paths[i].put_body);
			srv.paths[i].put_body = malloc(len ? len : 1);
			memcpy(srv.paths[i].put_body, body, len);
			srv.paths[i].put_len = len;
		}
	}
	pthread_mutex_unlock(&srv.lock);
}

static struct path_rec *path_find(const char *path)
{
	struct path_rec *p = NULL;

	pthread_mutex_lock(&srv.lock);
	for (unsigned i = 0; i < srv.npaths; i++)
		if (!strcmp(srv.paths[i].path, path))
			p = &srv.paths[i];
	pthread_mutex_unlock(&srv.lock);
	return p;
}

static int send_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int send_pattern(int fd, uint64_t off, uint64_t len)
{
	uint8_t buf[16384];

	while (len) {
		size_t n = (size_t)CFS_MIN(len, sizeof(buf));
		for (size_t i = 0; i < n; i++)
			buf[i] = pat(off + i);
		if (send_all(fd, buf, n))
			return -1;
		off += n;
		len -= n;
	}
	return 0;
}

static int send_head(int fd, int status, const char *extra, uint64_t clen)
{
	char h[512];
	int n = snprintf(h, sizeof(h), "HTTP/1.1 %d X\r\nContent-Length: %" PRIu64 "\r\n%s\r\n",
			 status, clen, extra);
	return send_all(fd, h, (size_t)n);
}

static void hard_close(int fd)
{
	struct linger l = { 1, 0 };

	setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
}

static const char *header_val(const char *head, const char *name)
{
	size_t n = strlen(name);

	for (const char *p = strstr(head, "\r\n"); p && p[2]; p = strstr(p + 2, "\r\n"))
		if (!strncasecmp(p + 2, name, n) && p[2 + n] == ':') {
			p += 3 + n;
			while (*p == ' ')
				p++;
			return p;
		}
	return NULL;
}

static void copy_val(char *dst, size_t size, const char *v)
{
	size_t n = v ? strcspn(v, "\r\n") : 0;

	snprintf(dst, size, "%.*s", (int)CFS_MIN(n, size - 1), v ? v : "");
}

/* Serves one request from buf; returns 0 to keep the connection, -1 to
 * close it.  *used is how much of buf the request took. */
static int serve_one(int fd, char *buf, size_t have, size_t *used, bool *need_more)
{
	char method[16], path[256], mode[32], key[128], sha[80], auth[512];
	char *end = memmem(buf, have, "\r\n\r\n", 4);
	unsigned n, hit;
	uint64_t size, clen = 0, off = 0, len;
	const char *v;
	bool head, ranged = false, fault;

	*need_more = false;
	if (!end) {
		*need_more = true;
		return 0;
	}
	*end = '\0';
	if (sscanf(buf, "%15s %255s", method, path) != 2)
		return -1;
	if ((v = header_val(buf, "Content-Length")))
		clen = strtoull(v, NULL, 10);
	if ((size_t)(end + 4 - buf) + clen > have) {
		*end = '\r';
		*need_more = true;
		return 0;
	}
	*used = (size_t)(end + 4 - buf) + clen;
	copy_val(sha, sizeof(sha), header_val(buf, "x-amz-content-sha256"));
	copy_val(auth, sizeof(auth), header_val(buf, "Authorization"));
	hit = path_hit(path, sha, auth, header_val(buf, "x-amz-security-token") != NULL);
	if (sscanf(path, "/%31[^/]/%u/%" SCNu64 "/%127s", mode, &n, &size, key) != 4)
		return send_head(fd, 400, "", 0);
	head = !strcmp(method, "HEAD");
	fault = n == 0 || hit <= n;

	if (!strcmp(method, "PUT")) {
		if (fault && mode[0] == 's')
			return send_head(fd, atoi(mode + 1), "", 0);
		path_put(path, (const uint8_t *)end + 4, clen);
		return send_head(fd, 201, "", 0);
	}
	if (fault && !strcmp(mode, "hang")) {
		char c;
		while (!atomic_load(&srv.stop) && recv(fd, &c, 1, 0) > 0)
			;
		return -1;
	}
	if (fault && mode[0] == 's' && mode[1] >= '0' && mode[1] <= '9') {
		int st = atoi(mode + 1);
		const char *extra = st == 301 ? "Location: /elsewhere\r\n" : "";
		const char *body = "<Error><Code>SlowDown</Code></Error>";
		if (send_head(fd, st, extra, head ? 0 : strlen(body)))
			return -1;
		return head ? 0 : send_all(fd, body, strlen(body));
	}

	off = 0;
	len = size;
	if ((v = header_val(buf, "Range")) && strcmp(mode, "norange")) {
		uint64_t a, b;
		if (sscanf(v, "bytes=%" SCNu64 "-%" SCNu64, &a, &b) == 2 && a <= b && a < size) {
			ranged = true;
			off = a;
			len = CFS_MIN(b, size - 1) - a + 1;
			if (fault && !strcmp(mode, "badrange"))
				off++;
		}
	}
	if (ranged) {
		char extra[128];
		snprintf(extra, sizeof(extra), "Content-Range: bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64 "\r\n",
			 off, off + len - 1, size);
		if (send_head(fd, 206, extra, len))
			return -1;
	} else if (fault && !strcmp(mode, "nolen")) {
		const char *h = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n";
		if (send_all(fd, h, strlen(h)) || head)
			return -1;
		send_pattern(fd, 0, size);
		return -1;
	} else if (send_head(fd, 200, "", len)) {
		return -1;
	}
	if (head)
		return 0;
	if (fault && !strcmp(mode, "reset")) {
		send_pattern(fd, off, len / 2);
		hard_close(fd);
		return -1;
	}
	if (fault && !strcmp(mode, "short")) {
		send_pattern(fd, off, len / 2);
		return -1;
	}
	if (fault && !strcmp(mode, "slow")) {
		/* 100 bytes a second, far below the stall limit of 1 KiB/s. */
		for (uint64_t i = 0; i < len && !atomic_load(&srv.stop); i += 10) {
			if (send_pattern(fd, off + i, CFS_MIN(10, len - i)))
				return -1;
			usleep(100 * 1000);
		}
		return -1;
	}
	return send_pattern(fd, off, len);
}

static void *conn_main(void *arg)
{
	int fd = (int)(intptr_t)arg;
	size_t cap = 1 << 16, have = 0, used;
	char *buf = malloc(cap + 1);
	bool more;

	while (buf) {
		ssize_t r;
		if (have == cap) {
			char *nb = realloc(buf, cap * 2 + 1);
			if (!nb)
				break;
			buf = nb;
			cap *= 2;
		}
		r = recv(fd, buf + have, cap - have, 0);
		if (r <= 0)
			break;
		have += (size_t)r;
		for (;;) {
			buf[have] = '\0';
			used = 0;
			if (serve_one(fd, buf, have, &used, &more) < 0)
				goto out;
			if (more)
				break;
			memmove(buf, buf + used, have - used);
			have -= used;
		}
	}
out:
	free(buf);
	shutdown(fd, SHUT_RDWR);
	return NULL;
}

static void *accept_main(void *arg)
{
	for (;;) {
		int fd = accept(srv.lfd, NULL, NULL);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			break;
		}
		atomic_fetch_add(&srv.accepted, 1);
		/* Head and body go in separate writes: no Nagle wait between them. */
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int){ 1 }, sizeof(int));
		pthread_mutex_lock(&srv.lock);
		if (atomic_load(&srv.stop) || srv.nconns == MAX_CONNS) {
			pthread_mutex_unlock(&srv.lock);
			close(fd);
			continue;
		}
		srv.conn_fds[srv.nconns] = fd;
		if (pthread_create(&srv.conn_threads[srv.nconns], NULL, conn_main, (void *)(intptr_t)fd))
			close(fd);
		else
			srv.nconns++;
		pthread_mutex_unlock(&srv.lock);
	}
	return NULL;
}

static int server_start(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof(a);

	pthread_mutex_init(&srv.lock, NULL);
	srv.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (srv.lfd < 0 || bind(srv.lfd, (struct sockaddr *)&a, sizeof(a)) ||
	    listen(srv.lfd, 256) || getsockname(srv.lfd, (struct sockaddr *)&a, &alen))
		return -errno;
	srv.port = ntohs(a.sin_port);
	return -pthread_create(&srv.accept_thread, NULL, accept_main, NULL);
}

static void server_stop(void)
{
	atomic_store(&srv.stop, true);
	shutdown(srv.lfd, SHUT_RDWR);
	pthread_join(srv.accept_thread, NULL);
	close(srv.lfd);
	pthread_mutex_lock(&srv.lock);
	for (unsigned i = 0; i < srv.nconns; i++)
		shutdown(srv.conn_fds[i], SHUT_RDWR);
	pthread_mutex_unlock(&srv.lock);
	for (unsigned i = 0; i < srv.nconns; i++) {
		pthread_join(srv.conn_threads[i], NULL);
		close(srv.conn_fds[i]);
	}
	for (unsigned i = 0; i < srv.npaths; i++)
		free(srv.paths[i].put_body);
	pthread_mutex_destroy(&srv.lock);
}

/* ---- helpers ---- */

static char *url_of(char *buf, size_t size, const char *fmt, ...) CFS_PRINTF(3, 4);
static char *url_of(char *buf, size_t size, const char *fmt, ...)
{
	va_list ap;
	int n = snprintf(buf, size, "http://127.0.0.1:%d", srv.port);

	va_start(ap, fmt);
	vsnprintf(buf + n, size - (size_t)n, fmt, ap);
	va_end(ap);
	return buf;
}

static double secs_since(uint64_t t0)
{
	return (double)(cfs_now_ns() - t0) / 1e9;
}

/* GET (range) of a pattern object and check everything about it. */
static void check_get(struct cfs_fetcher *f, const char *path, uint64_t off, uint64_t len,
		      uint64_t size, unsigned attempts, int line)
{
	struct cfs_fetch_req rq = { .method = CFS_FETCH_GET, .range_off = off, .range_len = len };
	struct cfs_fetch_result res;
	char url[256];
	int err;

	rq.url = url_of(url, sizeof(url), "%s", path);
	err = cfs_fetch(f, &rq, &res);
	CHECK(err == 0, " line %d: GET %s: %s", line, path, cfs_strerror(err));
	CHECK(res.len == (len ? len : size), " line %d: %s: len %zu", line, path, res.len);
	CHECK(res.body && pat_ok(res.body, res.len, off), " line %d: %s: content", line, path);
	CHECK(res.object_size == size, " line %d: %s: object_size %" PRIu64, line, path,
	      res.object_size);
	if (attempts)
		CHECK(res.attempts == attempts, " line %d: %s: %u attempts, want %u", line, path,
		      res.attempts, attempts);
	free(res.body);
}

static int get_err(struct cfs_fetcher *f, const char *path, uint64_t off, uint64_t len,
		   size_t max_size, unsigned deadline_ms, struct cfs_fetch_result *res)
{
	struct cfs_fetch_req rq = { .method = CFS_FETCH_GET, .range_off = off, .range_len = len,
				    .max_size = max_size, .deadline_ms = deadline_ms };
	char url[256];
	int err;

	rq.url = url_of(url, sizeof(url), "%s", path);
	err = cfs_fetch(f, &rq, res);
	free(res->body);
	res->body = NULL;
	return err;
}

/* ---- the tests ---- */

static void test_basic(struct cfs_fetcher *f)
{
	struct cfs_fetch_req rq = { .method = CFS_FETCH_HEAD };
	struct cfs_fetch_result res;
	char url[256];
	int err;

	check_get(f, "/ok/0/100000/whole", 0, 0, 100000, 1, __LINE__);
	check_get(f, "/ok/0/100000/range", 1000, 5000, 100000, 1, __LINE__);
	check_get(f, "/ok/0/100000/range", 99999, 1, 100000, 1, __LINE__);
	check_get(f, "/ok/0/0/empty", 0, 0, 0, 1, __LINE__);
	/* A server that ignores Range: the reply is cut to the range. */
	check_get(f, "/norange/0/100000/a", 777, 3000, 100000, 1, __LINE__);
	/* Close-delimited body, no Content-Length. */
	check_get(f, "/nolen/0/300000/a", 0, 0, 300000, 1, __LINE__);

	rq.url = url_of(url, sizeof(url), "/ok/0/123457/head");
	err = cfs_fetch(f, &rq, &res);
	CHECK(err == 0 && res.object_size == 123457 && !res.body, ": HEAD: %d size %" PRIu64, err,
	      res.object_size);

	rq.url = url_of(url, sizeof(url), "/s404/0/1/head");
	CHECK_EQ(cfs_fetch(f, &rq, &res), -ENOENT);
	CHECK_EQ(res.attempts, 1);
	CHECK_EQ(res.status, 404);
}

static void test_errors(struct cfs_fetcher *f)
{
	struct cfs_fetch_result res;

	CHECK_EQ(get_err(f, "/s404/0/10/a", 0, 0, 0, 0, &res), -ENOENT);
	CHECK_EQ(res.attempts, 1);
	CHECK_EQ(get_err(f, "/s403/0/10/a", 0, 0, 0, 0, &res), -EACCES);
	CHECK_EQ(res.attempts, 1);
	CHECK_EQ(get_err(f, "/s401/0/10/a", 0, 0, 0, 0, &res), -EACCES);
	CHECK_EQ(get_err(f, "/s301/0/10/a", 0, 0, 0, 0, &res), -EPROTO);
	CHECK_EQ(res.attempts, 1);
	CHECK_EQ(get_err(f, "/s400/0/10/a", 0, 0, 0, 0, &res), -EIO);
	CHECK_EQ(res.attempts, 1);
	/* Range past the end: the server sends less than asked. */
	CHECK_EQ(get_err(f, "/ok/0/1000/a", 900, 200, 0, 0, &res), -EPROTO);
	CHECK_EQ(get_err(f, "/ok/0/1000/a", 1000, 200, 0, 0, &res), -EPROTO); /* 200, not 416 */
	CHECK_EQ(get_err(f, "/badrange/0/1000/a", 100, 200, 0, 0, &res), -EPROTO);
	CHECK_EQ(get_err(f, "/norange/0/1000/a", 900, 200, 0, 0, &res), -EPROTO);
	/* max_size, with and without a Content-Length. */
	CHECK_EQ(get_err(f, "/ok/0/100000/big", 0, 0, 50000, 0, &res), -EFBIG);
	CHECK_EQ(get_err(f, "/nolen/0/300000/big", 0, 0, 100000, 0, &res), -EFBIG);
	CHECK_EQ(get_err(f, "/ok/0/100000/big", 0, 60000, 50000, 0, &res), -EFBIG);
	check_get(f, "/ok/0/100000/big", 0, 50000, 100000, 0, __LINE__);
	/* Permanent 500: every attempt, then -EIO. */
	CHECK_EQ(get_err(f, "/s500/0/10/always", 0, 0, 0, 0, &res), -EIO);
	CHECK_EQ(res.attempts, 4); /* retries = 3 */
	CHECK_EQ(res.status, 500);
	/* Nothing listens there. */
	{
		struct cfs_fetch_req rq = { .url = "http://127.0.0.1:1/x", .deadline_ms = 3000 };
		int err = cfs_fetch(f, &rq, &res);
		CHECK(err == -EIO || err == -ETIMEDOUT, ": connection refused: %d", err);
		CHECK(res.attempts >= 2, ": refused was not retried");
	}
	{
		struct cfs_fetch_req rq = { .url = "ftp://127.0.0.1/x" };
		CHECK(cfs_fetch(f, &rq, &res) < 0);
		rq.url = NULL;
		CHECK_EQ(cfs_fetch(f, &rq, &res), -EINVAL);
	}
}

static void test_retries(struct cfs_fetcher *f)
{
	check_get(f, "/s500/2/5000/a", 0, 0, 5000, 3, __LINE__);
	check_get(f, "/s503/1/5000/a", 0, 0, 5000, 2, __LINE__);
	check_get(f, "/s429/1/5000/a", 0, 0, 5000, 2, __LINE__);
	check_get(f, "/s502/1/5000/a", 100, 200, 5000, 2, __LINE__);
	check_get(f, "/reset/1/200000/a", 0, 0, 200000, 2, __LINE__);
	check_get(f, "/reset/2/200000/b", 1000, 100000, 200000, 3, __LINE__);
	check_get(f, "/short/1/200000/a", 0, 0, 200000, 2, __LINE__);
	check_get(f, "/short/1/200000/b", 5, 100000, 200000, 2, __LINE__);
}

static void test_stall(void)
{
	struct cfs_fetch_opts o = { .stall_timeout_ms = 1000, .backoff_ms = 10 };
	struct cfs_fetcher *f;

	if (cfs_fetcher_new(&o, &f)) {
		CHECK(0, ": fetcher");
		return;
	}
	check_get(f, "/slow/1/20000/a", 0, 0, 20000, 2, __LINE__);
	cfs_fetcher_free(f);
}

static void test_put(struct cfs_fetcher *f)
{
	struct cfs_fetch_sigv4 sv = { "aws:amz:us-east-1:s3", "AKIDEXAMPLE", "secret", "tok" };
	size_t len = 3 * 1024 * 1024 + 17;
	uint8_t *body = malloc(len);
	struct cfs_fetch_req rq = { .method = CFS_FETCH_PUT, .body = body, .body_len = len };
	struct cfs_fetch_result res;
	const char *paths[] = { "/ok/0/0/put", "/s500/1/0/put", "/s503/2/0/put", "/ok/0/0/empty-put" };
	struct path_rec *p;
	char url[256], hex[CFS_DIGEST_HEX_LEN + 1];
	cfs_digest d;

	for (size_t i = 0; i < len; i++)
		body[i] = pat(i * 3);
	for (unsigned i = 0; i < CFS_ARRAY_SIZE(paths); i++) {
		rq.url = url_of(url, sizeof(url), "%s", paths[i]);
		rq.body_len = i == 3 ? 0 : len;
		CHECK_EQ(cfs_fetch(f, &rq, &res), 0);
		CHECK_EQ(res.attempts, i == 3 ? 1 : i + 1);
		CHECK_EQ(res.status, 201);
		p = path_find(paths[i]);
		CHECK(p && p->put_len == rq.body_len &&
			      (!rq.body_len || !memcmp(p->put_body, body, len)),
		      ": %s: body did not arrive intact", paths[i]);
	}

	/* SigV4: the payload hash is sent and signed, the token too. */
	rq.url = url_of(url, sizeof(url), "/ok/0/0/signed-put");
	rq.body_len = len;
	rq.sigv4 = &sv;
	CHECK_EQ(cfs_fetch(f, &rq, &res), 0);
	cfs_sha256(body, len, &d);
	cfs_digest_hex(&d, hex);
	p = path_find("/ok/0/0/signed-put");
	CHECK(p && !strcmp(p->sha_hdr, hex), ": x-amz-content-sha256 %s", p ? p->sha_hdr : "-");
	CHECK(p && strstr(p->auth, "AWS4-HMAC-SHA256") &&
		      strstr(p->auth, "x-amz-content-sha256;x-amz-date;x-amz-security-token") &&
		      !strstr(p->auth, "expect"),
	      ": Authorization: %s", p ? p->auth : "-");
	CHECK(p && p->token && p->put_len == len && !memcmp(p->put_body, body, len));

	rq.method = CFS_FETCH_GET;
	rq.body = NULL;
	rq.body_len = 0;
	rq.url = url_of(url, sizeof(url), "/ok/0/100/signed-get");
	CHECK_EQ(cfs_fetch(f, &rq, &res), 0);
	free(res.body);
	p = path_find("/ok/0/100/signed-get");
	CHECK(p && !strcmp(p->sha_hdr, "UNSIGNED-PAYLOAD") &&
		      strstr(p->auth, "SignedHeaders=host;x-amz-content-sha256;"),
	      ": signed GET: %s / %s", p ? p->sha_hdr : "-", p ? p->auth : "-");
	free(body);
}

static void test_deadline(void)
{
	struct cfs_fetch_opts o = { .max_inflight = 1, .deadline_ms = 1000 };
	struct cfs_fetch_result res;
	struct cfs_fetcher *f;
	uint64_t t0;
	double dt;
	int err;

	if (cfs_fetcher_new(&o, &f)) {
		CHECK(0, ": fetcher");
		return;
	}
	t0 = cfs_now_ns();
	err = get_err(f, "/hang/0/10/a", 0, 0, 0, 0, &res);
	dt = secs_since(t0);
	CHECK_EQ(err, -ETIMEDOUT);
	CHECK(dt >= 0.9 && dt < 3.0, ": hang took %.2f s for a 1 s deadline", dt);

	/* A per-request deadline, and retries that would outlast it. */
	t0 = cfs_now_ns();
	err = get_err(f, "/s503/0/10/a", 0, 0, 0, 400, &res);
	dt = secs_since(t0);
	CHECK(err == -ETIMEDOUT || err == -EIO, ": 503 forever: %d", err);
	CHECK(dt < 1.5, ": 503 forever took %.2f s for a 0.4 s deadline", dt);
	cfs_fetcher_free(f);
}

struct async_state {
	pthread_mutex_t m;
	pthread_cond_t c;
	unsigned done, ok, canceled, other;
};

struct async_ctx {
	struct async_state *s;
	uint64_t off;
};

static void async_done(void *ctx, struct cfs_fetch_result *res)
{
	struct async_state *s = ((struct async_ctx *)ctx)->s;
	uint64_t off = ((struct async_ctx *)ctx)->off;

	pthread_mutex_lock(&s->m);
	if (res->err == 0 && res->len == 4096 && pat_ok(res->body, res->len, off))
		s->ok++;
	else if (res->err == -ECANCELED)
		s->canceled++;
	else
		s->other++;
	s->done++;
	pthread_cond_signal(&s->c);
	pthread_mutex_unlock(&s->m);
	free(res->body);
}

static void test_async(struct cfs_fetcher *f)
{
	static struct async_state s = { .m = PTHREAD_MUTEX_INITIALIZER, .c = PTHREAD_COND_INITIALIZER };
	static struct async_ctx ctx[200];
	struct cfs_fetch_req rq = { .method = CFS_FETCH_GET, .range_len = 4096 };
	char url[256];
	unsigned n = CFS_ARRAY_SIZE(ctx);

	rq.url = url_of(url, sizeof(url), "/ok/0/1000000/async");
	for (unsigned i = 0; i < n; i++) {
		ctx[i].s = &s;
		ctx[i].off = rq.range_off = (uint64_t)i * 4000;
		CHECK_EQ(cfs_fetch_submit(f, &rq, async_done, &ctx[i]), 0);
	}
	pthread_mutex_lock(&s.m);
	while (s.done < n)
		pthread_cond_wait(&s.c, &s.m);
	pthread_mutex_unlock(&s.m);
	CHECK_EQ(s.ok, n);
}

static void test_cancel(void)
{
	static struct async_state s = { .m = PTHREAD_MUTEX_INITIALIZER, .c = PTHREAD_COND_INITIALIZER };
	static struct async_ctx ctx[40];
	struct cfs_fetch_opts o = { .max_inflight = 8 };
	struct cfs_fetch_req rq = { .method = CFS_FETCH_GET, .range_len = 4096 };
	struct cfs_fetch_stats st;
	struct cfs_fetcher *f;
	char url[256];

	if (cfs_fetcher_new(&o, &f)) {
		CHECK(0, ": fetcher");
		return;
	}
	for (unsigned i = 0; i < CFS_ARRAY_SIZE(ctx); i++) {
		ctx[i].s = &s;
		rq.url = url_of(url, sizeof(url), "/%s/0/10000/cancel%u", i % 2 ? "hang" : "s503", i);
		CHECK_EQ(cfs_fetch_submit(f, &rq, async_done, &ctx[i]), 0);
	}
	usleep(300 * 1000);
	cfs_fetcher_stats_get(f, &st);
	CHECK(st.inflight + st.queued <= CFS_ARRAY_SIZE(ctx) && st.inflight <= 8,
	      ": inflight %" PRIu64 " queued %" PRIu64, st.inflight, st.queued);
	cfs_fetcher_free(f);
	CHECK_EQ(s.done, CFS_ARRAY_SIZE(ctx));
	CHECK_EQ(s.canceled, CFS_ARRAY_SIZE(ctx));
}

/* Background requests that hang hold at most three quarters of the
 * connections: a foreground request queued after them still goes at once. */
static void test_background(void)
{
	static struct async_state s = { .m = PTHREAD_MUTEX_INITIALIZER, .c = PTHREAD_COND_INITIALIZER };
	static struct async_ctx ctx[8];
	struct cfs_fetch_opts o = { .max_inflight = 4, .deadline_ms = 2000 };
	struct cfs_fetch_req rq = { .method = CFS_FETCH_GET };
	struct cfs_fetch_result res;
	struct cfs_fetch_stats st;
	struct cfs_fetcher *f;
	char url[256];
	uint64_t t0;
	double dt;

	if (cfs_fetcher_new(&o, &f)) {
		CHECK(0, ": fetcher");
		return;
	}
	cfs_fetch_thread_background(true);
	for (unsigned i = 0; i < CFS_ARRAY_SIZE(ctx); i++) {
		ctx[i].s = &s;
		rq.url = url_of(url, sizeof(url), "/hang/0/10/bg%u", i);
		CHECK_EQ(cfs_fetch_submit(f, &rq, async_done, &ctx[i]), 0);
	}
	cfs_fetch_thread_background(false);
	usleep(200 * 1000);
	cfs_fetcher_stats_get(f, &st);
	CHECK(st.inflight == 3 && st.queued == 5, ": background: inflight %" PRIu64 " queued %" PRIu64,
	      st.inflight, st.queued);

	t0 = cfs_now_ns();
	CHECK_EQ(get_err(f, "/ok/0/100/fg", 0, 0, 0, 0, &res), 0);
	dt = secs_since(t0);
	free(res.body);
	CHECK(dt < 1.0, ": a foreground GET behind hanging background ones took %.2f s", dt);
	cfs_fetcher_free(f);
	CHECK_EQ(s.done, CFS_ARRAY_SIZE(ctx));
}

struct worker {
	struct cfs_fetcher *f;
	unsigned id;
	unsigned ok;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	uint64_t seed = 0x9e3779b97f4a7c15ull * (w->id + 1);

	for (unsigned i = 0; i < 8; i++) {
		struct cfs_fetch_req rq = { .method = CFS_FETCH_GET };
		struct cfs_fetch_result res;
		char url[256];

		rq.range_off = cfs_test_rand(&seed) % 3000000;
		rq.range_len = 1 + cfs_test_rand(&seed) % 1000000;
		rq.url = url_of(url, sizeof(url), "/ok/0/4000000/conc");
		if (cfs_fetch(w->f, &rq, &res) == 0 && res.len == rq.range_len &&
		    pat_ok(res.body, res.len, rq.range_off) && res.object_size == 4000000)
			w->ok++;
		free(res.body);
	}
	return NULL;
}

static void test_concurrent(struct cfs_fetcher *f)
{
	struct worker w[8];
	pthread_t t[8];

	for (unsigned i = 0; i < 8; i++) {
		w[i] = (struct worker){ .f = f, .id = i };
		pthread_create(&t[i], NULL, worker_main, &w[i]);
	}
	for (unsigned i = 0; i < 8; i++) {
		pthread_join(t[i], NULL);
		CHECK(w[i].ok == 8, ": worker %u: %u of 8 fetches right", i, w[i].ok);
	}
}

static void test_reuse(struct cfs_fetcher *f)
{
	unsigned before = atomic_load(&srv.accepted), after;
	char path[64];

	for (unsigned i = 0; i < 100; i++) {
		snprintf(path, sizeof(path), "/ok/0/%u/reuse%u", 1000 + i, i);
		check_get(f, path, 0, 0, 1000 + i, 1, __LINE__);
	}
	after = atomic_load(&srv.accepted);
	CHECK(after - before <= 3, ": 100 sequential GETs used %u connections", after - before);
}

/* ---- nginx ---- */

static pid_t nginx_pid;
static int nginx_port;

static int free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;

	if (fd >= 0 && !bind(fd, (struct sockaddr *)&a, sizeof(a)) &&
	    !getsockname(fd, (struct sockaddr *)&a, &alen))
		port = ntohs(a.sin_port);
	if (fd >= 0)
		close(fd);
	return port;
}

static int write_file(const char *path, const void *buf, size_t len)
{
	FILE *fp = fopen(path, "w");
	int ok = fp && fwrite(buf, 1, len, fp) == len;

	if (fp && fclose(fp))
		ok = 0;
	return ok ? 0 : -1;
}

static int nginx_start(const char *tmp)
{
	char conf[4096], path[512];
	int n;

	nginx_port = free_port();
	if (nginx_port < 0)
		return -1;
	snprintf(path, sizeof(path), "%s/www", tmp);
	mkdir(path, 0755);
	n = snprintf(conf, sizeof(conf),
		     "daemon off;\nworker_processes 2;\npid %s/nginx.pid;\n"
		     "error_log %s/err.log;\nevents { worker_connections 1024; }\n"
		     "http {\n access_log off;\n keepalive_requests 100000;\n"
		     " client_body_temp_path %s;\n proxy_temp_path %s;\n fastcgi_temp_path %s;\n"
		     " uwsgi_temp_path %s;\n scgi_temp_path %s;\n"
		     " server { listen 127.0.0.1:%d; root %s/www; }\n}\n",
		     tmp, tmp, tmp, tmp, tmp, tmp, tmp, nginx_port, tmp);
	snprintf(path, sizeof(path), "%s/nginx.conf", tmp);
	if (write_file(path, conf, (size_t)n))
		return -1;
	nginx_pid = fork();
	if (nginx_pid < 0)
		return -1;
	if (nginx_pid == 0) {
		int nul = open("/dev/null", O_RDWR);
		dup2(nul, 1);
		dup2(nul, 2);
		execl("/usr/sbin/nginx", "nginx", "-p", tmp, "-c", path, (char *)NULL);
		_exit(127);
	}
	/* Wait until it listens. */
	for (int i = 0; i < 100; i++) {
		struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)nginx_port),
					 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		int ok = fd >= 0 && !connect(fd, (struct sockaddr *)&a, sizeof(a));
		if (fd >= 0)
			close(fd);
		if (ok)
			return 0;
		if (waitpid(nginx_pid, NULL, WNOHANG) == nginx_pid) {
			nginx_pid = 0;
			return -1;
		}
		usleep(50 * 1000);
	}
	return -1;
}

static void nginx_stop(void)
{
	if (nginx_pid > 0) {
		kill(nginx_pid, SIGTERM);
		waitpid(nginx_pid, NULL, 0);
		nginx_pid = 0;
	}
}

struct bench {
	pthread_mutex_t m;
	pthread_cond_t c;
	unsigned done, ok;
};

static void bench_done(void *ctx, struct cfs_fetch_result *res)
{
	struct bench *b = ctx;

	pthread_mutex_lock(&b->m);
	b->done++;
	b->ok += res->err == 0 && res->len == (1u << 20);
	pthread_cond_signal(&b->c);
	pthread_mutex_unlock(&b->m);
	free(res->body);
}

static void nginx_bench(struct cfs_fetcher *f)
{
	struct bench b = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0 };
	struct cfs_fetch_req rq = { .method = CFS_FETCH_GET };
	struct cfs_fetch_result res;
	char url[256];
	uint64_t t0;
	double dt;
	unsigned ok = 0;

	/* Warm the connections. */
	for (unsigned i = 0; i < 64; i++) {
		snprintf(url, sizeof(url), "http://127.0.0.1:%d/mb%u", nginx_port, i);
		rq.url = url;
		CHECK_EQ(cfs_fetch_submit(f, &rq, bench_done, &b), 0);
	}
	pthread_mutex_lock(&b.m);
	while (b.done < 64)
		pthread_cond_wait(&b.c, &b.m);
	b.done = b.ok = 0;
	pthread_mutex_unlock(&b.m);

	t0 = cfs_now_ns();
	for (unsigned i = 0; i < 200; i++) {
		snprintf(url, sizeof(url), "http://127.0.0.1:%d/mb%u", nginx_port, i % 64);
		rq.url = url;
		if (cfs_fetch(f, &rq, &res) == 0 && res.len == (1u << 20))
			ok++;
		free(res.body);
	}
	dt = secs_since(t0);
	printf("bench: 200 sequential 1 MiB GETs: %.3f s, %.0f MB/s, %.0f req/s (%u ok)\n", dt,
	       200 * 1.048576 / dt, 200 / dt, ok);

	t0 = cfs_now_ns();
	for (unsigned i = 0; i < 200; i++) {
		snprintf(url, sizeof(url), "http://127.0.0.1:%d/mb%u", nginx_port, i % 64);
		rq.url = url;
		CHECK_EQ(cfs_fetch_submit(f, &rq, bench_done, &b), 0);
	}
	pthread_mutex_lock(&b.m);
	while (b.done < 200)
		pthread_cond_wait(&b.c, &b.m);
	pthread_mutex_unlock(&b.m);
	dt = secs_since(t0);
	printf("bench: 200 parallel 1 MiB GETs (64 in flight): %.3f s, %.0f MB/s, %.0f req/s (%u ok)\n",
	       dt, 200 * 1.048576 / dt, 200 / dt, b.ok);
}

static void test_nginx(const char *tmp)
{
	struct cfs_fetch_req rq = { .method = CFS_FETCH_GET };
	struct cfs_fetch_result res;
	struct cfs_fetcher *f;
	size_t mb = 1u << 20;
	uint8_t *buf = malloc(mb);
	char path[512], url[256];
	int err;

	if (access("/usr/sbin/nginx", X_OK)) {
		printf("nginx: not installed, skipped\n");
		free(buf);
		return;
	}
	if (nginx_start(tmp)) {
		CHECK(0, ": nginx did not start (see %s/err.log)", tmp);
		nginx_stop();
		free(buf);
		return;
	}
	for (size_t i = 0; i < mb; i++)
		buf[i] = pat(i);
	for (unsigned i = 0; i < 64; i++) {
		snprintf(path, sizeof(path), "%s/www/mb%u", tmp, i);
		CHECK(write_file(path, buf, mb) == 0);
	}
	if (cfs_fetcher_new(NULL, &f)) {
		CHECK(0, ": fetcher");
		goto out;
	}
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/mb1", nginx_port);
	rq.url = url;
	err = cfs_fetch(f, &rq, &res);
	CHECK(err == 0 && res.len == mb && pat_ok(res.body, res.len, 0) && res.object_size == mb &&
		      res.status == 200,
	      ": nginx GET: %d", err);
	free(res.body);
	rq.range_off = 12345;
	rq.range_len = 100000;
	err = cfs_fetch(f, &rq, &res);
	CHECK(err == 0 && res.len == 100000 && pat_ok(res.body, res.len, 12345) &&
		      res.object_size == mb && res.status == 206,
	      ": nginx range: %d", err);
	free(res.body);
	rq.range_off = mb - 10;
	rq.range_len = 100;
	CHECK_EQ(cfs_fetch(f, &rq, &res), -EPROTO); /* 206 with 10 bytes */
	free(res.body);
	rq.range_off = mb + 10;
	CHECK_EQ(cfs_fetch(f, &rq, &res), -EPROTO); /* 416 */
	rq.range_off = rq.range_len = 0;
	rq.method = CFS_FETCH_HEAD;
	err = cfs_fetch(f, &rq, &res);
	CHECK(err == 0 && res.object_size == mb, ": nginx HEAD: %d", err);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/nope", nginx_port);
	CHECK_EQ(cfs_fetch(f, &rq, &res), -ENOENT);
	rq.method = CFS_FETCH_GET;
	CHECK_EQ(cfs_fetch(f, &rq, &res), -ENOENT);
	CHECK_EQ(res.attempts, 1);
	if (getenv("CFS_FETCH_BENCH"))
		nginx_bench(f);
	cfs_fetcher_free(f);
out:
	nginx_stop();
	free(buf);
}

/* Run with no fetcher alive: it changes the environment. */
static void test_ca_resolve(const char *tmp)
{
	char cwd[PATH_MAX], want[PATH_MAX + 16], ca[512];
	char *out = NULL;

	CHECK(getcwd(cwd, sizeof(cwd)) != NULL);
	snprintf(ca, sizeof(ca), "%s/ca.pem", tmp);
	CHECK(write_file(ca, "x", 1) == 0);
	unsetenv("CURL_CA_BUNDLE");
	unsetenv("SSL_CERT_FILE");
	CHECK(cfs_fetch_ca_resolve(NULL, &out) == 0 && !out, ": nothing set: %s", out);
	free(out);
	/* Like curl: CURL_CA_BUNDLE first, then SSL_CERT_FILE; empty is unset;
	 * relative paths made absolute, and not checked. */
	setenv("SSL_CERT_FILE", "rel/b.pem", 1);
	snprintf(want, sizeof(want), "%s/rel/b.pem", cwd);
	CHECK(cfs_fetch_ca_resolve(NULL, &out) == 0 && out && !strcmp(out, want), ": got %s", out);
	free(out);
	setenv("CURL_CA_BUNDLE", "", 1);
	CHECK(cfs_fetch_ca_resolve(NULL, &out) == 0 && out && !strcmp(out, want), ": got %s", out);
	free(out);
	setenv("CURL_CA_BUNDLE", "/a.pem", 1);
	CHECK(cfs_fetch_ca_resolve(NULL, &out) == 0 && out && !strcmp(out, "/a.pem"), ": got %s", out);
	free(out);
	/* An explicit file wins, and must be readable. */
	CHECK(cfs_fetch_ca_resolve(ca, &out) == 0 && out && !strcmp(out, ca), ": got %s", out);
	free(out);
	out = (char *)"junk";
	CHECK_EQ(cfs_fetch_ca_resolve("/nonexistent/ca.pem", &out), -ENOENT);
	CHECK(out == NULL);
	unsetenv("CURL_CA_BUNDLE");
	unsetenv("SSL_CERT_FILE");
	unlink(ca);
}

int main(void)
{
	struct cfs_fetch_opts o = { .retries = 3, .backoff_ms = 5, .deadline_ms = 10000 };
	struct cfs_fetch_stats st;
	struct cfs_fetcher *f;
	char tmp[256];

	signal(SIGPIPE, SIG_IGN);
	if (getenv("CFS_FETCH_DEBUG"))
		cfs_log_setup("test-fetch", CFS_LOG_DEBUG, NULL);
	else
		cfs_log_setup("test-fetch", CFS_LOG_ERR, NULL);
	if (server_start()) {
		perror("server");
		return 1;
	}
	if (cfs_fetcher_new(&o, &f)) {
		fprintf(stderr, "cfs_fetcher_new failed\n");
		return 1;
	}
	test_basic(f);
	test_errors(f);
	test_retries(f);
	test_put(f);
	test_async(f);
	test_concurrent(f);
	test_reuse(f);
	cfs_fetcher_stats_get(f, &st);
	CHECK(st.requests > 300 && st.attempts > st.requests && st.retries > 10 && st.errors > 10 &&
		      st.not_found >= 1 &&
		      st.bytes > 20000000 && st.bytes_sent > 9000000 && st.inflight == 0 &&
		      st.queued == 0,
	      ": stats: %" PRIu64 " requests, %" PRIu64 " attempts, %" PRIu64 " retries, %" PRIu64
		" errors, %" PRIu64 " bytes, %" PRIu64 " sent",
	      st.requests, st.attempts, st.retries, st.errors, st.bytes, st.bytes_sent);
	cfs_fetcher_free(f);
	cfs_fetcher_free(NULL);

	test_stall();
	test_deadline();
	test_cancel();
	test_background();
	server_stop();

	cfs_test_mkdtemp(tmp, sizeof(tmp), "fetch");
	test_nginx(tmp);
	test_ca_resolve(tmp);
	cfs_test_rmtree(tmp);
	return cfs_test_done("test-fetch");
}
