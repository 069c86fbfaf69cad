/* SPDX-License-Identifier: MIT */
/*
 * The part of the http and s3 store backends that is the same for both:
 * the fetcher, made on first request so that a store may be opened before
 * the daemon forks, and object URLs.  Failed requests are logged by the
 * fetcher, one line each naming the method, the URL and the status.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_remote.h"
#include "util.h"

int cfs_remote_init(struct cfs_remote *r, struct cfs_store *st, const char *base,
		    const struct cfs_fetch_sigv4 *sigv4)
{
	int ret;

	memset(r, 0, sizeof(*r));
	r->base = strdup(base);
	if (!r->base)
		return -ENOMEM;
	ret = -pthread_mutex_init(&r->lock, NULL);
	if (ret < 0) {
		free(r->base);
		r->base = NULL;
		return ret;
	}
	r->opts = &st->fetch_opts;
	r->sigv4 = sigv4;
	return 0;
}

void cfs_remote_fini(struct cfs_remote *r)
{
	if (!r->base)
		return;
	cfs_fetcher_free(r->f);
	r->f = NULL;
	pthread_mutex_destroy(&r->lock);
	free(r->base);
	r->base = NULL;
}

static bool unreserved(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '.' || c == '_' || c == '~';
}

char *cfs_url_escape_path(const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	char *out = malloc(3 * strlen(s) + 1), *p = out;

	if (!out)
		return NULL;
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (unreserved(c) || c == '/') {
			*p++ = (char)c;
		} else {
			*p++ = '%';
			*p++ = hex[c >> 4];
			*p++ = hex[c & 15];
		}
	}
	*p = '\0';
	return out;
}

static int remote_fetcher(struct cfs_remote *r, struct cfs_fetcher **out)
{
	int ret = 0;

	pthread_mutex_lock(&r->lock);
	if (!r->f)
		ret = cfs_fetcher_new(r->opts, &r->f);
	*out = r->f;
	pthread_mutex_unlock(&r->lock);
	return ret;
}

/* The fetcher logs every failure but a 404 at warn level already; this
 * line only adds, with -v -v, which store asked. */
static void remote_log_error(const struct cfs_remote *r, enum cfs_fetch_method method,
			     const char *url, const struct cfs_fetch_result *res)
{
	cfs_debug("%s %s: %s (status %ld, %u attempt%s)", cfs_fetch_method_name(method), url,
		  cfs_strerror(res->err), res->status, res->attempts,
		  res->attempts == 1 ? "" : "s");
}

int cfs_remote_request(struct cfs_remote *r, enum cfs_fetch_method method, const char *key,
		       const void *body, size_t body_len, const char *const *headers,
		       size_t max_size, struct cfs_fetch_result *res)
{
	struct cfs_fetch_req req = { 0 };
	struct cfs_fetcher *f;
	char *esc, *url;
	int ret;

	memset(res, 0, sizeof(*res));
	esc = cfs_url_escape_path(key);
	if (!esc)
		return res->err = -ENOMEM;
	ret = asprintf(&url, "%s/%s", r->base, esc);
	free(esc);
	if (ret < 0)
		return res->err = -ENOMEM;

	ret = remote_fetcher(r, &f);
	if (ret < 0) {
		cfs_err("%s: cannot start the fetcher: %s", r->base, cfs_strerror(ret));
		res->err = ret;
		goto out;
	}
	req.method = method;
	req.url = url;
	req.body = body;
	req.body_len = body_len;
	req.headers = headers;
	req.max_size = max_size;
	req.sigv4 = r->sigv4;
	ret = cfs_fetch(f, &req, res);
	res->err = ret;
	if (ret < 0) {
		free(res->body);
		res->body = NULL;
		remote_log_error(r, method, url, res);
	}
out:
	free(url);
	return res->err;
}

int cfs_remote_get(struct cfs_remote *r, const char *key, size_t max, void **buf, size_t *len)
{
	struct cfs_fetch_result res;
	int ret;

	ret = cfs_remote_request(r, CFS_FETCH_GET, key, NULL, 0, NULL, max, &res);
	if (ret < 0)
		return ret;
	/* An empty object has no body to hand over: give the caller a buffer
	 * to free all the same. */
	if (!res.body) {
		res.body = malloc(1);
		if (!res.body)
			return -ENOMEM;
		res.len = 0;
	}
	*buf = res.body;
	*len = res.len;
	return 0;
}

int cfs_remote_has(struct cfs_remote *r, const char *key, uint64_t *size)
{
	struct cfs_fetch_result res;
	int ret;

	ret = cfs_remote_request(r, CFS_FETCH_HEAD, key, NULL, 0, NULL, 0, &res);
	if (ret == -ENOENT)
		return 0;
	if (ret < 0)
		return ret;
	if (size)
		*size = res.object_size;
	return 1;
}

void cfs_remote_fetch_stats(struct cfs_remote *r, struct cfs_fetch_stats *out)
{
	pthread_mutex_lock(&r->lock);
	if (r->f)
		cfs_fetcher_stats_get(r->f, out);
	else
		memset(out, 0, sizeof(*out));
	pthread_mutex_unlock(&r->lock);
}
