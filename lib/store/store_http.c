/* SPDX-License-Identifier: MIT */
/*
 * http:// and https:// store backend: a store directory served by any
 * static web server.  get is a GET of <base>/<key>, has a HEAD (the size
 * from Content-Length).  A web server store is read-only: put and sync
 * fail with -EROFS, and so does opening it to create it.  Nothing is
 * requested at open; store.c looks for the marker when something is
 * missing.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "store_remote.h"
#include "util.h"

struct http_store {
	struct cfs_remote r;
};

static struct cfs_remote *remote_of(struct cfs_store *st)
{
	return &((struct http_store *)st->priv)->r;
}

static int http_open(struct cfs_store *st, const char *location, unsigned flags)
{
	const char *host = strstr(location, "://");
	struct http_store *hs;
	char *base;
	size_t len;
	int ret;

	if (flags & CFS_STORE_CREATE) {
		cfs_debug("%s: a web server store is read-only", location);
		return -EROFS;
	}
	/* scheme://host[:port][/path]; no query or fragment: keys follow it. */
	if (!host || !host[3] || host[3] == '/' || strpbrk(location, "?#")) {
		cfs_err("%s: expected http(s)://HOST[:PORT][/PATH]", location);
		return -EINVAL;
	}
	len = strlen(location);
	while (len > 0 && location[len - 1] == '/')
		len--;
	base = strndup(location, len);
	if (!base)
		return -ENOMEM;
	hs = calloc(1, sizeof(*hs));
	if (!hs) {
		ret = -ENOMEM;
		goto out;
	}
	ret = cfs_remote_init(&hs->r, st, base, NULL);
	if (ret < 0) {
		free(hs);
		goto out;
	}
	st->priv = hs;
out:
	free(base);
	return ret;
}

static void http_close(struct cfs_store *st)
{
	struct http_store *hs = st->priv;

	if (!hs)
		return;
	cfs_remote_fini(&hs->r);
	free(hs);
	st->priv = NULL;
}

static int http_get(struct cfs_store *st, const char *key, size_t max, void **buf, size_t *len)
{
	return cfs_remote_get(remote_of(st), key, max, buf, len);
}

static int http_has(struct cfs_store *st, const char *key, uint64_t *size)
{
	return cfs_remote_has(remote_of(st), key, size);
}

static int http_put(struct cfs_store *st, const char *key, const void *buf, size_t len,
		    bool replace)
{
	return -EROFS;
}

static int http_sync(struct cfs_store *st)
{
	return -EROFS;
}

static void http_fetch_stats(struct cfs_store *st, struct cfs_fetch_stats *out)
{
	cfs_remote_fetch_stats(remote_of(st), out);
}

const struct cfs_store_ops cfs_store_http_ops = {
	.name = "http",
	.open = http_open,
	.close = http_close,
	.get = http_get,
	.has = http_has,
	.put = http_put,
	.sync = http_sync,
	.fetch_stats = http_fetch_stats,
	.lazy_marker = true,
};
