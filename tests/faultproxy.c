/* SPDX-License-Identifier: MIT */
/*
 * cfs-faultproxy: an HTTP/1.1 proxy that injects faults between cfs and a
 * web server, for the fault tests.
 *
 * Usage: cfs-faultproxy --listen HOST:PORT --upstream HOST:PORT
 *                       [--port-file F] [--control F] [--log F] [-v]
 *
 * PORT 0 picks a free port; the chosen one is printed on stdout and, with
 * --port-file, written to F (atomically: the file appears whole).  One
 * thread per client connection, each with its own upstream connection,
 * reused while both sides keep it alive.  A connection to the upstream that
 * fails resets the client connection (as a dead server would).
 *
 * Faults come from the control file, re-read whenever it changes (inode,
 * size or mtime: write a temporary file and rename it over F), checked once
 * per request.  Each re-read replaces every setting and restarts the count.
 * Lines are key=value, '#' starts a comment; byte values take K, M or G
 * (powers of 1024):
 *
 *   latency_ms=N      N/2 ms before forwarding a request and N/2 ms before
 *                     its response head: adds N ms of round-trip time
 *   rate=BYTES        per-connection cap on response body bytes per second
 *                     (token bucket, burst of 1/50 s, at least 4 KiB)
 *   status=CODE       answer locally with CODE and a tiny body instead of
 *                     forwarding (503 says <Code>SlowDown</Code>)
 *   reset_after=B     forward the response, then reset the connection
 *                     (SO_LINGER 0 + close) after B bytes of its body
 *   truncate_after=B  send the head unchanged, B bytes of the body, then
 *                     close cleanly: a body shorter than its Content-Length
 *   flip=1            invert the middle byte of the response body
 *   hang=1            read the request, never answer, until the client
 *                     closes the connection
 *   count=N           the faults above apply to the next N requests that
 *                     they fit (absent: every request); one fault per
 *                     request, in the order hang, status, reset, truncate,
 *                     flip
 *   path=SUBSTR       every fault, latency and rate included, only for
 *                     requests whose path contains SUBSTR
 *   clear             no faults (as is an empty or missing file)
 *
 * The body faults (reset, truncate, flip) fit only 2xx responses whose
 * Content-Length body is longer than B (non-empty for flip); chunked and
 * close-delimited bodies pass through untouched, as do the rate limit's
 * neighbours.  Every injected fault logs one line "fault KIND ..." to the
 * log (stderr by default); -v logs every request too.
 *
 * GET /__proxy_stats is answered by the proxy itself, never faulted, with
 * its counters as JSON.
 *
 * Exits only on a signal, or 1 on a setup error.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define FP_BUF_SIZE (64u * 1024)
#define FP_HEAD_MAX (32u * 1024)
#define FP_PATH_MAX 1024

enum fp_fault { FP_NONE = 0, FP_HANG, FP_STATUS, FP_RESET, FP_TRUNCATE, FP_FLIP, FP_NKINDS };

struct fp_config {
	unsigned latency_ms;
	uint64_t rate;           /* bytes/s, 0 = unlimited */
	int status;              /* 0 = none */
	uint64_t reset_after;    /* valid when has_reset */
	uint64_t truncate_after; /* valid when has_truncate */
	bool has_reset, has_truncate, flip, hang;
	long long count_left;    /* -1 = unlimited */
	char path[FP_PATH_MAX];  /* "" = every request */
};

struct fp_stats {
	atomic_ullong connections, active, requests, responses, upstream_errors;
	atomic_ullong bytes_down, bytes_up, reloads;
	atomic_ullong faults[FP_NKINDS];
};

struct fp_proxy {
	struct addrinfo *upstream;
	const char *control;
	FILE *log;
	bool verbose;
	pthread_mutex_t lock; /* cfg, control_st, log */
	struct fp_config cfg;
	struct stat control_st;
	bool control_seen;
	struct fp_stats st;
};

/* One side of a connection, with read-ahead. */
struct fp_conn {
	int fd;
	char *buf;
	size_t start, end;
};

struct fp_bucket {
	double tokens;
	struct timespec last;
};

struct fp_client {
	struct fp_proxy *p;
	struct fp_conn cli, up;
	struct fp_bucket bucket;
};

/* A parsed request or response head. */
struct fp_head {
	char *raw; /* NUL-terminated copy, head_len bytes */
	size_t head_len;
	char method[16];
	char path[FP_PATH_MAX];
	int status;
	bool has_length, chunked, close, expect_continue, http10;
	uint64_t length;
};

/* util ---------------------------------------------------------------------- */

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(double ms)
{
	struct timespec ts;

	if (ms <= 0)
		return;
	ts.tv_sec = (time_t)(ms / 1000);
	ts.tv_nsec = (long)((ms - (double)ts.tv_sec * 1000) * 1e6);
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static void fp_log(struct fp_proxy *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fp_log(struct fp_proxy *p, const char *fmt, ...)
{
	struct timespec ts;
	struct tm tm;
	va_list ap;

	clock_gettime(CLOCK_REALTIME, &ts);
	localtime_r(&ts.tv_sec, &tm);
	pthread_mutex_lock(&p->lock);
	fprintf(p->log, "faultproxy %02d:%02d:%02d.%03ld ", tm.tm_hour, tm.tm_min, tm.tm_sec,
		ts.tv_nsec / 1000000);
	va_start(ap, fmt);
	vfprintf(p->log, fmt, ap);
	va_end(ap);
	fputc('\n', p->log);
	fflush(p->log);
	pthread_mutex_unlock(&p->lock);
}

/* "123", "64K", "100M", "1G": bytes, powers of 1024. */
static int parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -EINVAL;
	switch (*end) {
	case 'k': case 'K': v <<= 10; end++; break;
	case 'm': case 'M': v <<= 20; end++; break;
	case 'g': case 'G': v <<= 30; end++; break;
	default: break;
	}
	if (*end == 'i' && end[1] == 'B')
		end += 2;
	else if (*end == 'B')
		end++;
	if (*end)
		return -EINVAL;
	*out = v;
	return 0;
}

static int send_all(int fd, const void *buf, size_t len)
{
	const char *b = buf;

	while (len) {
		ssize_t n = send(fd, b, len, MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		b += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Resets the connection: the peer sees ECONNRESET, not a clean end. */
static void close_reset(int fd)
{
	struct linger l = { .l_onoff = 1, .l_linger = 0 };

	if (fd < 0)
		return;
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
	close(fd);
}

/* connections ---------------------------------------------------------------- */

static void conn_init(struct fp_conn *c, int fd, char *buf)
{
	c->fd = fd;
	c->buf = buf;
	c->start = c->end = 0;
}

static void conn_close(struct fp_conn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->start = c->end = 0;
}

/* Reads more into the buffer.  Returns bytes read, 0 at EOF, or -errno. */
static ssize_t conn_fill(struct fp_conn *c)
{
	ssize_t n;

	if (c->start == c->end)
		c->start = c->end = 0;
	if (c->end == FP_BUF_SIZE) {
		memmove(c->buf, c->buf + c->start, c->end - c->start);
		c->end -= c->start;
		c->start = 0;
	}
	if (c->end == FP_BUF_SIZE)
		return -ENOBUFS;
	do
		n = recv(c->fd, c->buf + c->end, FP_BUF_SIZE - c->end, 0);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	c->end += (size_t)n;
	return n;
}

/* Reads a head ending in CRLF CRLF into h->raw and consumes it.  Returns
 * 1, 0 at a clean EOF before any byte, or -errno (-EPROTO: EOF inside the
 * head or a head over FP_HEAD_MAX). */
static int conn_read_head(struct fp_conn *c, struct fp_head *h)
{
	for (;;) {
		char *s = c->buf + c->start, *e;
		size_t avail = c->end - c->start;
		ssize_t n;

		e = avail >= 4 ? memmem(s, avail, "\r\n\r\n", 4) : NULL;
		if (e) {
			h->head_len = (size_t)(e - s) + 4;
			h->raw = malloc(h->head_len + 1);
			if (!h->raw)
				return -ENOMEM;
			memcpy(h->raw, s, h->head_len);
			h->raw[h->head_len] = '\0';
			c->start += h->head_len;
			return 1;
		}
		/* A head starts with a method or "HTTP/": anything else (a TLS
		 * hello to a plain-http port) is refused at once, as an HTTP
		 * server does, not waited on. */
		if (avail >= FP_HEAD_MAX || (avail && (s[0] < 'A' || s[0] > 'Z')))
			return -EPROTO;
		n = conn_fill(c);
		if (n < 0)
			return (int)n;
		if (n == 0)
			return avail ? -EPROTO : 0;
	}
}

/* Copies exactly len bytes from src to dst (dst < 0: discard). */
static int relay_n(struct fp_conn *src, int dst, uint64_t len)
{
	while (len) {
		size_t avail = src->end - src->start, n;
		ssize_t r;

		if (!avail) {
			r = conn_fill(src);
			if (r <= 0)
				return r ? (int)r : -EPROTO;
			continue;
		}
		n = avail < len ? avail : (size_t)len;
		if (dst >= 0) {
			int ret = send_all(dst, src->buf + src->start, n);

			if (ret < 0)
				return ret;
		}
		src->start += n;
		len -= n;
	}
	return 0;
}

/* Reads one CRLF-terminated line (CRLF included) into line. */
static int conn_read_line(struct fp_conn *c, char *line, size_t cap)
{
	for (;;) {
		char *s = c->buf + c->start, *e;
		size_t avail = c->end - c->start, n;
		ssize_t r;

		e = memchr(s, '\n', avail);
		if (e) {
			n = (size_t)(e - s) + 1;
			if (n >= cap)
				return -EPROTO;
			memcpy(line, s, n);
			line[n] = '\0';
			c->start += n;
			return (int)n;
		}
		if (avail >= cap)
			return -EPROTO;
		r = conn_fill(c);
		if (r <= 0)
			return r ? (int)r : -EPROTO;
	}
}

/* Passes a chunked body through unchanged (dst < 0: discard). */
static int relay_chunked(struct fp_conn *src, int dst)
{
	char line[1024];
	int n, ret;

	for (;;) {
		unsigned long long size;

		n = conn_read_line(src, line, sizeof(line));
		if (n < 0)
			return n;
		if (dst >= 0 && (ret = send_all(dst, line, (size_t)n)) < 0)
			return ret;
		size = strtoull(line, NULL, 16);
		if (size == 0)
			break;
		if ((ret = relay_n(src, dst, size + 2)) < 0)
			return ret;
	}
	/* trailers, up to the empty line */
	do {
		n = conn_read_line(src, line, sizeof(line));
		if (n < 0)
			return n;
		if (dst >= 0 && (ret = send_all(dst, line, (size_t)n)) < 0)
			return ret;
	} while (strcmp(line, "\r\n") != 0 && strcmp(line, "\n") != 0);
	return 0;
}

/* heads -------------------------------------------------------------------- */

static bool header_is(const char *line, size_t len, const char *name, const char **value)
{
	size_t nl = strlen(name);

	if (len <= nl || strncasecmp(line, name, nl) != 0 || line[nl] != ':')
		return false;
	line += nl + 1;
	while (*line == ' ' || *line == '\t')
		line++;
	*value = line;
	return true;
}

static bool value_has(const char *v, const char *end, const char *token)
{
	size_t tl = strlen(token);

	for (; v + tl <= end; v++)
		if (strncasecmp(v, token, tl) == 0)
			return true;
	return false;
}

/* Parses the header fields of h (after the start line). */
static int head_parse_fields(struct fp_head *h)
{
	char *line = strstr(h->raw, "\r\n");

	while (line && (line += 2) && *line && strncmp(line, "\r\n", 2) != 0) {
		char *eol = strstr(line, "\r\n");
		const char *v;

		if (!eol)
			return -EPROTO;
		if (header_is(line, (size_t)(eol - line), "Content-Length", &v)) {
			char *e;

			errno = 0;
			h->length = strtoull(v, &e, 10);
			if (errno || e == v)
				return -EPROTO;
			h->has_length = true;
		} else if (header_is(line, (size_t)(eol - line), "Transfer-Encoding", &v)) {
			h->chunked = value_has(v, eol, "chunked");
		} else if (header_is(line, (size_t)(eol - line), "Connection", &v)) {
			if (value_has(v, eol, "close"))
				h->close = true;
		} else if (header_is(line, (size_t)(eol - line), "Expect", &v)) {
			h->expect_continue = value_has(v, eol, "100-continue");
		}
		line = eol;
	}
	return 0;
}

static int head_parse_request(struct fp_head *h)
{
	char version[16];

	if (sscanf(h->raw, "%15s %1023s %15s", h->method, h->path, version) != 3)
		return -EPROTO;
	h->http10 = strcmp(version, "HTTP/1.0") == 0;
	return head_parse_fields(h);
}

static int head_parse_response(struct fp_head *h)
{
	char version[16];

	if (sscanf(h->raw, "%15s %d", version, &h->status) != 2 || strncmp(version, "HTTP/1.", 7) != 0)
		return -EPROTO;
	h->http10 = strcmp(version, "HTTP/1.0") == 0;
	return head_parse_fields(h);
}

/* The request head without its Expect field: the proxy answers 100 itself. */
static void head_strip_expect(struct fp_head *h)
{
	char *line = strstr(h->raw, "\r\n");

	while (line && (line += 2) && *line && strncmp(line, "\r\n", 2) != 0) {
		char *eol = strstr(line, "\r\n");
		const char *v;

		if (!eol)
			return;
		if (header_is(line, (size_t)(eol - line), "Expect", &v)) {
			size_t cut = (size_t)(eol + 2 - line);

			memmove(line, eol + 2, strlen(eol + 2) + 1);
			h->head_len -= cut;
			line -= 2;
			continue;
		}
		line = eol;
	}
}

static void head_free(struct fp_head *h)
{
	free(h->raw);
	memset(h, 0, sizeof(*h));
}

/* control file --------------------------------------------------------------- */

static void config_parse(struct fp_proxy *p, FILE *f, struct fp_config *cfg)
{
	char line[2048];

	memset(cfg, 0, sizeof(*cfg));
	cfg->count_left = -1;
	while (fgets(line, sizeof(line), f)) {
		char *k = line, *v, *e;
		uint64_t n;

		if ((e = strchr(k, '#')))
			*e = '\0';
		while (*k == ' ' || *k == '\t')
			k++;
		e = k + strlen(k);
		while (e > k && (e[-1] == '\n' || e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t'))
			*--e = '\0';
		if (!*k)
			continue;
		if (strcmp(k, "clear") == 0) {
			memset(cfg, 0, sizeof(*cfg));
			cfg->count_left = -1;
			continue;
		}
		v = strchr(k, '=');
		if (!v)
			goto bad;
		*v++ = '\0';
		if (strcmp(k, "path") == 0) {
			snprintf(cfg->path, sizeof(cfg->path), "%s", v);
			continue;
		}
		if (parse_size(v, &n) < 0)
			goto bad;
		if (strcmp(k, "latency_ms") == 0)
			cfg->latency_ms = (unsigned)n;
		else if (strcmp(k, "rate") == 0)
			cfg->rate = n;
		else if (strcmp(k, "status") == 0 && n >= 100 && n <= 599)
			cfg->status = (int)n;
		else if (strcmp(k, "reset_after") == 0)
			cfg->has_reset = true, cfg->reset_after = n;
		else if (strcmp(k, "truncate_after") == 0)
			cfg->has_truncate = true, cfg->truncate_after = n;
		else if (strcmp(k, "flip") == 0)
			cfg->flip = n != 0;
		else if (strcmp(k, "hang") == 0)
			cfg->hang = n != 0;
		else if (strcmp(k, "count") == 0)
			cfg->count_left = (long long)n;
		else
			goto bad;
		continue;
bad:
		fprintf(p->log, "faultproxy: %s: ignoring bad line '%s%s%s'\n", p->control, k,
			v ? "=" : "", v ? v : "");
	}
}

/* Re-reads the control file if it changed.  Call with p->lock held. */
static void config_refresh_locked(struct fp_proxy *p)
{
	struct stat st;
	FILE *f;

	if (!p->control)
		return;
	if (stat(p->control, &st) < 0) {
		if (p->control_seen) {
			memset(&p->cfg, 0, sizeof(p->cfg));
			p->cfg.count_left = -1;
			p->control_seen = false;
			atomic_fetch_add(&p->st.reloads, 1);
		}
		return;
	}
	if (p->control_seen && st.st_ino == p->control_st.st_ino && st.st_size == p->control_st.st_size &&
	    st.st_mtim.tv_sec == p->control_st.st_mtim.tv_sec &&
	    st.st_mtim.tv_nsec == p->control_st.st_mtim.tv_nsec)
		return;
	f = fopen(p->control, "r");
	if (!f)
		return;
	config_parse(p, f, &p->cfg);
	fclose(f);
	p->control_st = st;
	p->control_seen = true;
	atomic_fetch_add(&p->st.reloads, 1);
	fprintf(p->log,
		"faultproxy: control: latency_ms=%u rate=%llu status=%d reset_after=%lld "
		"truncate_after=%lld flip=%d hang=%d count=%lld path='%s'\n",
		p->cfg.latency_ms, (unsigned long long)p->cfg.rate, p->cfg.status,
		p->cfg.has_reset ? (long long)p->cfg.reset_after : -1,
		p->cfg.has_truncate ? (long long)p->cfg.truncate_after : -1, p->cfg.flip, p->cfg.hang,
		p->cfg.count_left, p->cfg.path);
	fflush(p->log);
}

/* Takes one fault of the kinds allowed by mask (bits 1 << FP_x) for a
 * request on path, consuming the count.  body_len: the response body's
 * length for the body faults.  Returns the kind taken or FP_NONE. */
static enum fp_fault fault_take(struct fp_proxy *p, const char *path, unsigned mask, uint64_t body_len,
				struct fp_config *snap)
{
	struct fp_config *c = &p->cfg;
	enum fp_fault k = FP_NONE;

	pthread_mutex_lock(&p->lock);
	*snap = *c;
	if (c->count_left == 0 || (c->path[0] && !strstr(path, c->path)))
		goto out;
	if ((mask & 1u << FP_HANG) && c->hang)
		k = FP_HANG;
	else if ((mask & 1u << FP_STATUS) && c->status)
		k = FP_STATUS;
	else if ((mask & 1u << FP_RESET) && c->has_reset && body_len > c->reset_after)
		k = FP_RESET;
	else if ((mask & 1u << FP_TRUNCATE) && c->has_truncate && body_len > c->truncate_after)
		k = FP_TRUNCATE;
	else if ((mask & 1u << FP_FLIP) && c->flip && body_len > 0)
		k = FP_FLIP;
	if (k != FP_NONE && c->count_left > 0)
		c->count_left--;
out:
	snap->count_left = c->count_left;
	pthread_mutex_unlock(&p->lock);
	if (snap->path[0] && !strstr(path, snap->path)) {
		snap->latency_ms = 0;
		snap->rate = 0;
	}
	if (k != FP_NONE)
		atomic_fetch_add(&p->st.faults[k], 1);
	return k;
}

/* Latency and rate for a request on path: zero when the path filter says no. */
static void config_snapshot(struct fp_proxy *p, const char *path, struct fp_config *snap)
{
	pthread_mutex_lock(&p->lock);
	config_refresh_locked(p);
	*snap = p->cfg;
	pthread_mutex_unlock(&p->lock);
	if (snap->path[0] && !strstr(path, snap->path)) {
		snap->latency_ms = 0;
		snap->rate = 0;
	}
}

/* rate limit ------------------------------------------------------------------ */

/* Waits until n bytes may go out at rate bytes/s. */
static void bucket_take(struct fp_bucket *b, uint64_t rate, size_t n)
{
	double burst = (double)rate / 50, t = now_s(), last;

	if (burst < 4096)
		burst = 4096;
	last = (double)b->last.tv_sec + (double)b->last.tv_nsec / 1e9;
	if (last == 0)
		b->tokens = burst;
	else
		b->tokens += (t - last) * (double)rate;
	if (b->tokens > burst)
		b->tokens = burst;
	/* Go into debt and sleep it off: the next call credits the whole time
	 * since this one, oversleeping included, so the average holds. */
	b->tokens -= (double)n;
	b->last.tv_sec = (time_t)t;
	b->last.tv_nsec = (long)((t - (double)b->last.tv_sec) * 1e9);
	if (b->tokens < 0)
		sleep_ms(-b->tokens * 1000 / (double)rate);
}

/* Sends a body of len bytes from the upstream to the client, applying the
 * rate and the body fault.  Returns 0, -EPIPE when the fault cut it (the
 * connection must close), or -errno. */
static int relay_body(struct fp_client *c, uint64_t len, const struct fp_config *cfg, enum fp_fault fault)
{
	uint64_t off = 0, stop = len, flip_at = len / 2;
	size_t slice = 64 * 1024;
	int ret;

	if (fault == FP_RESET)
		stop = cfg->reset_after;
	else if (fault == FP_TRUNCATE)
		stop = cfg->truncate_after;
	if (cfg->rate && cfg->rate / 50 < slice)
		slice = cfg->rate / 50 > 1024 ? (size_t)(cfg->rate / 50) : 1024;
	while (off < stop) {
		size_t avail = c->up.end - c->up.start, n;
		char *s = c->up.buf + c->up.start;

		if (!avail) {
			ssize_t r = conn_fill(&c->up);

			if (r <= 0)
				return r ? (int)r : -EPROTO;
			continue;
		}
		n = avail < slice ? avail : slice;
		if (n > stop - off)
			n = (size_t)(stop - off);
		if (cfg->rate)
			bucket_take(&c->bucket, cfg->rate, n);
		if (fault == FP_FLIP && flip_at >= off && flip_at < off + n)
			s[flip_at - off] ^= (char)0xff;
		if ((ret = send_all(c->cli.fd, s, n)) < 0)
			return ret;
		atomic_fetch_add(&c->p->st.bytes_down, n);
		c->up.start += n;
		off += n;
	}
	return stop < len ? -EPIPE : 0;
}

/* per-request work ------------------------------------------------------------ */

static int upstream_connect(struct fp_client *c)
{
	struct addrinfo *ai;
	int fd = -1, one = 1;

	for (ai = c->p->upstream; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
		if (fd < 0)
			continue;
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		close(fd);
		fd = -1;
	}
	if (fd < 0)
		return -errno ? -errno : -ECONNREFUSED;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	conn_init(&c->up, fd, c->up.buf);
	return 0;
}

static int reply_local(struct fp_client *c, const struct fp_head *req, int status, const char *ctype,
		       const char *body)
{
	char head[512];
	const char *reason;
	bool head_only = strcmp(req->method, "HEAD") == 0;
	int n;

	switch (status) {
	case 200: reason = "OK"; break;
	case 403: reason = "Forbidden"; break;
	case 404: reason = "Not Found"; break;
	case 429: reason = "Too Many Requests"; break;
	case 500: reason = "Internal Server Error"; break;
	case 502: reason = "Bad Gateway"; break;
	case 503: reason = "Service Unavailable"; break;
	default: reason = "Fault"; break;
	}
	n = snprintf(head, sizeof(head),
		     "HTTP/1.1 %d %s\r\nServer: cfs-faultproxy\r\nContent-Type: %s\r\n"
		     "Content-Length: %zu\r\n%s\r\n",
		     status, reason, ctype, strlen(body), req->close ? "Connection: close\r\n" : "");
	if (send_all(c->cli.fd, head, (size_t)n) < 0)
		return -EPIPE;
	if (!head_only && send_all(c->cli.fd, body, strlen(body)) < 0)
		return -EPIPE;
	return 0;
}

static int reply_stats(struct fp_client *c, const struct fp_head *req)
{
	struct fp_stats *s = &c->p->st;
	char body[1024];
	long long left;

	pthread_mutex_lock(&c->p->lock);
	config_refresh_locked(c->p);
	left = c->p->cfg.count_left;
	pthread_mutex_unlock(&c->p->lock);
	snprintf(body, sizeof(body),
		 "{\"connections\":%llu,\"active\":%llu,\"requests\":%llu,\"responses\":%llu,"
		 "\"upstream_errors\":%llu,\"bytes_down\":%llu,\"bytes_up\":%llu,\"reloads\":%llu,"
		 "\"faults\":%llu,\"hang\":%llu,\"status\":%llu,\"reset\":%llu,\"truncate\":%llu,"
		 "\"flip\":%llu,\"count_left\":%lld}\n",
		 s->connections, s->active, s->requests, s->responses, s->upstream_errors,
		 s->bytes_down, s->bytes_up, s->reloads,
		 s->faults[FP_HANG] + s->faults[FP_STATUS] + s->faults[FP_RESET] +
			 s->faults[FP_TRUNCATE] + s->faults[FP_FLIP],
		 s->faults[FP_HANG], s->faults[FP_STATUS], s->faults[FP_RESET], s->faults[FP_TRUNCATE],
		 s->faults[FP_FLIP], left);
	return reply_local(c, req, 200, "application/json", body);
}

static int discard_request_body(struct fp_client *c, const struct fp_head *req)
{
	if (req->chunked)
		return relay_chunked(&c->cli, -1);
	if (req->has_length)
		return relay_n(&c->cli, -1, req->length);
	return 0;
}

/* Holds the request unanswered until the client closes the connection. */
static void hang_until_close(struct fp_client *c)
{
	char buf[4096];

	for (;;) {
		ssize_t n = recv(c->cli.fd, buf, sizeof(buf), 0);

		if (n == 0 || (n < 0 && errno != EINTR))
			return;
	}
}

/* Sends the request upstream and reads the response head.  A reused
 * connection that the server closed meanwhile is reopened once, for
 * requests without a body. */
static int forward_request(struct fp_client *c, struct fp_head *req, struct fp_head *resp)
{
	bool has_body = req->chunked || (req->has_length && req->length);
	int ret = -ECONNRESET, attempt;

	for (attempt = 0; attempt < 2; attempt++) {
		bool reused = c->up.fd >= 0;

		if (!reused && (ret = upstream_connect(c)) < 0)
			return ret;
		ret = send_all(c->up.fd, req->raw, req->head_len);
		if (ret == 0 && has_body) {
			if (req->chunked)
				ret = relay_chunked(&c->cli, c->up.fd);
			else
				ret = relay_n(&c->cli, c->up.fd, req->length);
			if (ret == 0)
				atomic_fetch_add(&c->p->st.bytes_up, req->length);
		}
		if (ret == 0) {
			/* Interim 1xx responses go to the client as they are. */
			for (;;) {
				ret = conn_read_head(&c->up, resp);
				if (ret == 0)
					ret = -ECONNRESET;
				if (ret < 0)
					break;
				if ((ret = head_parse_response(resp)) < 0)
					return ret;
				if (resp->status >= 200 || resp->status == 101)
					return 0;
				if ((ret = send_all(c->cli.fd, resp->raw, resp->head_len)) < 0)
					return ret;
				head_free(resp);
			}
		}
		conn_close(&c->up);
		if (!reused || has_body)
			return ret;
	}
	return ret;
}

/* Serves one request.  Returns 1 to keep the connection, 0 to close it,
 * or -1 when it was already closed (reset). */
static int serve_one(struct fp_client *c, struct fp_head *req)
{
	struct fp_proxy *p = c->p;
	struct fp_head resp = { 0 };
	struct fp_config cfg;
	enum fp_fault fault;
	uint64_t body_len = 0;
	bool has_body, keep = !req->close && !req->http10;
	int ret;

	if (strcmp(req->method, "GET") == 0 && strcmp(req->path, "/__proxy_stats") == 0)
		return reply_stats(c, req) == 0 && keep ? 1 : 0;

	atomic_fetch_add(&p->st.requests, 1);
	config_snapshot(p, req->path, &cfg);
	if (req->expect_continue) {
		head_strip_expect(req);
		if (send_all(c->cli.fd, "HTTP/1.1 100 Continue\r\n\r\n", 25) < 0)
			return 0;
	}
	sleep_ms(cfg.latency_ms / 2.0);

	fault = fault_take(p, req->path, 1u << FP_HANG | 1u << FP_STATUS, 0, &cfg);
	if (fault == FP_HANG) {
		fp_log(p, "fault hang %s %s (left %lld)", req->method, req->path, cfg.count_left);
		hang_until_close(c);
		fp_log(p, "hang ended: the client closed the connection (%s)", req->path);
		return 0;
	}
	if (fault == FP_STATUS) {
		const char *body = "<Error><Code>InternalError</Code></Error>\n";

		if (cfg.status == 503)
			body = "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>\n";
		else if (cfg.status == 429)
			body = "<Error><Code>TooManyRequests</Code></Error>\n";
		fp_log(p, "fault status %d %s %s (left %lld)", cfg.status, req->method, req->path,
		       cfg.count_left);
		if (discard_request_body(c, req) < 0)
			return 0;
		sleep_ms(cfg.latency_ms / 2.0);
		return reply_local(c, req, cfg.status, "application/xml", body) == 0 && keep ? 1 : 0;
	}

	ret = forward_request(c, req, &resp);
	if (ret < 0) {
		atomic_fetch_add(&p->st.upstream_errors, 1);
		fp_log(p, "upstream error %s %s: %s: resetting the client connection", req->method,
		       req->path, strerror(-ret));
		close_reset(c->cli.fd);
		c->cli.fd = -1;
		return -1;
	}
	sleep_ms(cfg.latency_ms / 2.0);

	has_body = strcmp(req->method, "HEAD") != 0 && resp.status != 204 && resp.status != 304;
	if (has_body && resp.has_length && !resp.chunked)
		body_len = resp.length;
	if (resp.close || resp.http10)
		keep = false;
	fault = FP_NONE;
	if (body_len && resp.status >= 200 && resp.status < 300)
		fault = fault_take(p, req->path, 1u << FP_RESET | 1u << FP_TRUNCATE | 1u << FP_FLIP,
				   body_len, &cfg);
	if (p->verbose)
		fp_log(p, "%s %s -> %d %s%llu", req->method, req->path, resp.status,
		       has_body && resp.chunked ? "chunked " : "", (unsigned long long)body_len);

	if ((ret = send_all(c->cli.fd, resp.raw, resp.head_len)) < 0)
		goto close;
	if (!has_body) {
		atomic_fetch_add(&p->st.responses, 1);
		head_free(&resp);
		return keep ? 1 : 0;
	}
	if (resp.chunked) {
		ret = relay_chunked(&c->up, c->cli.fd);
	} else if (resp.has_length) {
		switch (fault) {
		case FP_RESET:
			fp_log(p, "fault reset %s %s after %llu of %llu body bytes (left %lld)", req->method,
			       req->path, (unsigned long long)cfg.reset_after,
			       (unsigned long long)body_len, cfg.count_left);
			break;
		case FP_TRUNCATE:
			fp_log(p, "fault truncate %s %s after %llu of %llu body bytes (left %lld)",
			       req->method, req->path, (unsigned long long)cfg.truncate_after,
			       (unsigned long long)body_len, cfg.count_left);
			break;
		case FP_FLIP:
			fp_log(p, "fault flip %s %s byte %llu of %llu (left %lld)", req->method, req->path,
			       (unsigned long long)(body_len / 2), (unsigned long long)body_len,
			       cfg.count_left);
			break;
		default:
			break;
		}
		ret = relay_body(c, body_len, &cfg, fault);
		if (ret == -EPIPE) {
			head_free(&resp);
			conn_close(&c->up);
			if (fault == FP_RESET) {
				close_reset(c->cli.fd);
			} else {
				shutdown(c->cli.fd, SHUT_WR);
				close(c->cli.fd);
			}
			c->cli.fd = -1;
			return -1;
		}
	} else {
		/* No length: the body runs to the upstream's EOF. */
		while ((ret = (int)conn_fill(&c->up)) > 0) {
			size_t n = c->up.end - c->up.start;

			if ((ret = send_all(c->cli.fd, c->up.buf + c->up.start, n)) < 0)
				break;
			c->up.start = c->up.end;
		}
		keep = false;
	}
close:
	head_free(&resp);
	if (ret < 0) {
		conn_close(&c->up);
		return 0;
	}
	atomic_fetch_add(&p->st.responses, 1);
	if (!keep)
		conn_close(&c->up);
	return keep ? 1 : 0;
}

static void *client_main(void *arg)
{
	struct fp_client *c = arg;
	struct fp_proxy *p = c->p;

	for (;;) {
		struct fp_head req = { 0 };
		int ret = conn_read_head(&c->cli, &req);

		if (ret <= 0) {
			head_free(&req);
			break;
		}
		if (head_parse_request(&req) < 0) {
			head_free(&req);
			break;
		}
		ret = serve_one(c, &req);
		head_free(&req);
		if (ret <= 0)
			break;
	}
	if (c->cli.fd >= 0)
		close(c->cli.fd);
	if (c->up.fd >= 0)
		close(c->up.fd);
	atomic_fetch_sub(&p->st.active, 1);
	free(c->cli.buf);
	free(c->up.buf);
	free(c);
	return NULL;
}

/* setup ----------------------------------------------------------------------- */

/* "HOST:PORT", "[V6]:PORT" */
static int resolve(const char *spec, bool passive, struct addrinfo **out)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	char host[256], *colon;
	int ret;

	if (snprintf(host, sizeof(host), "%s", spec) >= (int)sizeof(host))
		return -ENAMETOOLONG;
	colon = strrchr(host, ':');
	if (!colon)
		return -EINVAL;
	*colon = '\0';
	if (host[0] == '[' && colon[-1] == ']') {
		colon[-1] = '\0';
		memmove(host, host + 1, strlen(host));
	}
	if (passive)
		hints.ai_flags = AI_PASSIVE;
	ret = getaddrinfo(host[0] ? host : NULL, colon + 1, &hints, out);
	return ret ? -EINVAL : 0;
}

static int write_port_file(const char *path, unsigned port)
{
	char tmp[PATH_MAX];
	FILE *f;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	f = fopen(tmp, "w");
	if (!f)
		return -errno;
	fprintf(f, "%u\n", port);
	if (fclose(f) != 0 || rename(tmp, path) < 0)
		return -errno;
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: cfs-faultproxy --listen HOST:PORT --upstream HOST:PORT\n"
		   "                      [--port-file F] [--control F] [--log F] [-v]\n");
}

int main(int argc, char **argv)
{
	const char *listen_spec = NULL, *upstream_spec = NULL, *port_file = NULL, *log_file = NULL;
	struct fp_proxy p = { .log = stderr };
	struct addrinfo *la = NULL;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	unsigned port;
	int lfd = -1, one = 1, i;

	for (i = 1; i < argc; i++) {
		const char *a = argv[i], **dst = NULL;

		if (strcmp(a, "--listen") == 0)
			dst = &listen_spec;
		else if (strcmp(a, "--upstream") == 0)
			dst = &upstream_spec;
		else if (strcmp(a, "--port-file") == 0)
			dst = &port_file;
		else if (strcmp(a, "--control") == 0)
			dst = &p.control;
		else if (strcmp(a, "--log") == 0)
			dst = &log_file;
		else if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0)
			p.verbose = true;
		else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0)
			return usage(stdout), 0;
		else
			return usage(stderr), 1;
		if (dst) {
			if (++i == argc)
				return usage(stderr), 1;
			*dst = argv[i];
		}
	}
	if (!listen_spec || !upstream_spec)
		return usage(stderr), 1;
	if (log_file && !(p.log = fopen(log_file, "a"))) {
		fprintf(stderr, "cfs-faultproxy: %s: %s\n", log_file, strerror(errno));
		return 1;
	}
	pthread_mutex_init(&p.lock, NULL);
	p.cfg.count_left = -1;
	signal(SIGPIPE, SIG_IGN);
	if (resolve(upstream_spec, false, &p.upstream) < 0) {
		fprintf(stderr, "cfs-faultproxy: bad --upstream '%s'\n", upstream_spec);
		return 1;
	}
	if (resolve(listen_spec, true, &la) < 0) {
		fprintf(stderr, "cfs-faultproxy: bad --listen '%s'\n", listen_spec);
		return 1;
	}
	lfd = socket(la->ai_family, la->ai_socktype | SOCK_CLOEXEC, la->ai_protocol);
	if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(lfd, la->ai_addr, la->ai_addrlen) < 0 || listen(lfd, 1024) < 0 ||
	    getsockname(lfd, (struct sockaddr *)&ss, &sl) < 0) {
		fprintf(stderr, "cfs-faultproxy: listen on %s: %s\n", listen_spec, strerror(errno));
		return 1;
	}
	freeaddrinfo(la);
	port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
					      : ((struct sockaddr_in *)&ss)->sin_port);
	printf("%u\n", port);
	fflush(stdout);
	if (port_file && write_port_file(port_file, port) < 0) {
		fprintf(stderr, "cfs-faultproxy: %s: %s\n", port_file, strerror(errno));
		return 1;
	}
	fp_log(&p, "listening on port %u, upstream %s", port, upstream_spec);

	for (;;) {
		struct fp_client *c;
		pthread_attr_t attr;
		pthread_t t;
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EMFILE || errno == ENFILE) {
				sleep_ms(10);
				continue;
			}
			fprintf(stderr, "cfs-faultproxy: accept: %s\n", strerror(errno));
			return 1;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		c = calloc(1, sizeof(*c));
		if (c) {
			c->cli.buf = malloc(FP_BUF_SIZE);
			c->up.buf = malloc(FP_BUF_SIZE);
		}
		if (!c || !c->cli.buf || !c->up.buf) {
			if (c) {
				free(c->cli.buf);
				free(c->up.buf);
			}
			free(c);
			close(fd);
			continue;
		}
		c->p = &p;
		conn_init(&c->cli, fd, c->cli.buf);
		conn_init(&c->up, -1, c->up.buf);
		atomic_fetch_add(&p.st.connections, 1);
		atomic_fetch_add(&p.st.active, 1);
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		pthread_attr_setstacksize(&attr, 256 * 1024);
		if (pthread_create(&t, &attr, client_main, c) != 0) {
			atomic_fetch_sub(&p.st.active, 1);
			close(fd);
			free(c->cli.buf);
			free(c->up.buf);
			free(c);
		}
		pthread_attr_destroy(&attr);
	}
}
