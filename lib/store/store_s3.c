/* SPDX-License-Identifier: MIT */
/*
 * s3://BUCKET[/PREFIX] store backend, configured the way the AWS tools are:
 * AWS_ENDPOINT_URL (default https://s3.<region>.amazonaws.com), AWS_REGION
 * (or AWS_DEFAULT_REGION; default us-east-1), AWS_ACCESS_KEY_ID,
 * AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN (no key: anonymous requests).
 * Path-style URLs, <endpoint>/<bucket>/<prefix>/<key>, which every
 * S3-compatible store speaks; requests signed with SigV4 by the fetcher.
 *
 * put is a HEAD, then a PUT when the object is absent (replace: the PUT
 * alone).  A PUT that returned is durable, so sync has nothing to do.
 *
 * Every PUT stores a Cache-Control that S3 serves back with the object, so
 * that the HTTP caches between a fleet and its bucket (a zonal nginx, a
 * CDN; docs/FLEET.md) hold each key as long as it may be held: objects are
 * content-addressed, never change, and are cached for a year; tags and
 * signatures move, and are fresh for 5 s, then served stale for at most 5 s
 * more while one request revalidates them, so a herd of readers of a tag
 * that just expired costs the bucket one request and a moved tag is seen
 * everywhere within 10 s; the store marker changes only when a store is
 * made again, and is fresh for 5 minutes.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_remote.h"
#include "util.h"

struct s3_store {
	struct cfs_remote r;
	struct cfs_fetch_sigv4 sigv4;
	char *provider, *key_id, *secret, *token;
};

static struct cfs_remote *remote_of(struct cfs_store *st)
{
	return &((struct s3_store *)st->priv)->r;
}

static const char *env(const char *name)
{
	const char *v = getenv(name);

	return v && *v ? v : NULL;
}

static bool bucket_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '.' || c == '_';
}

/* "<endpoint>/<bucket>[/<escaped prefix>]" from "s3://BUCKET[/PREFIX]". */
static int s3_base_url(const char *location, const char *region, char **out)
{
	const char *bucket = location + strlen("s3://"), *endpoint = env("AWS_ENDPOINT_URL");
	size_t blen = strcspn(bucket, "/"), plen, elen;
	const char *prefix = bucket + blen;
	char *def = NULL, *esc = NULL, *pfx = NULL;
	int ret = -EINVAL;

	for (size_t i = 0; i < blen; i++)
		if (!bucket_char(bucket[i]))
			blen = 0;
	if (blen == 0 || blen > 255) {
		cfs_err("%s: expected s3://BUCKET[/PREFIX]", location);
		return -EINVAL;
	}
	while (*prefix == '/')
		prefix++;
	plen = strlen(prefix);
	while (plen && prefix[plen - 1] == '/')
		plen--;
	pfx = strndup(prefix, plen);
	if (!pfx)
		return -ENOMEM;
	if (strstr(pfx, "//") || strpbrk(pfx, "?#")) {
		cfs_err("%s: the prefix has an empty component, '?' or '#'", location);
		goto out;
	}
	ret = -ENOMEM;
	esc = cfs_url_escape_path(pfx);
	if (!esc)
		goto out;
	if (!endpoint) {
		if (asprintf(&def, "https://s3.%s.amazonaws.com", region) < 0) {
			def = NULL;
			goto out;
		}
		endpoint = def;
	}
	elen = strlen(endpoint);
	while (elen && endpoint[elen - 1] == '/')
		elen--;
	if (asprintf(out, "%.*s/%.*s%s%s", (int)elen, endpoint, (int)blen, bucket,
		     *esc ? "/" : "", esc) < 0)
		goto out;
	ret = 0;
out:
	free(def);
	free(esc);
	free(pfx);
	return ret;
}

static int s3_credentials(struct s3_store *ss, const char *location, const char *region)
{
	const char *id = env("AWS_ACCESS_KEY_ID"), *secret = env("AWS_SECRET_ACCESS_KEY");
	const char *token = env("AWS_SESSION_TOKEN");

	if (!id && !secret)
		return 0; /* anonymous: public buckets */
	if (!id || !secret) {
		cfs_err("%s: %s is set but %s is not", location,
			id ? "AWS_ACCESS_KEY_ID" : "AWS_SECRET_ACCESS_KEY",
			id ? "AWS_SECRET_ACCESS_KEY" : "AWS_ACCESS_KEY_ID");
		return -EINVAL;
	}
	ss->key_id = strdup(id);
	ss->secret = strdup(secret);
	ss->token = token ? strdup(token) : NULL;
	if (asprintf(&ss->provider, "aws:amz:%s:s3", region) < 0)
		ss->provider = NULL;
	if (!ss->key_id || !ss->secret || (token && !ss->token) || !ss->provider)
		return -ENOMEM;
	ss->sigv4.provider = ss->provider;
	ss->sigv4.key_id = ss->key_id;
	ss->sigv4.secret = ss->secret;
	ss->sigv4.session_token = ss->token;
	return 1;
}

static void s3_free(struct s3_store *ss)
{
	cfs_remote_fini(&ss->r);
	free(ss->provider);
	free(ss->key_id);
	/* The secret does not linger in freed memory. */
	if (ss->secret)
		explicit_bzero(ss->secret, strlen(ss->secret));
	free(ss->secret);
	free(ss->token);
	free(ss);
}

static int s3_put(struct cfs_store *st, const char *key, const void *buf, size_t len,
		  bool replace);

/* CFS_STORE_CREATE: the marker, unless there is one. */
static int s3_create(struct cfs_store *st)
{
	void *buf;
	size_t len;
	int ret;

	ret = cfs_remote_get(remote_of(st), CFS_STORE_MARKER, CFS_STORE_MARKER_MAX, &buf, &len);
	if (ret == 0) {
		ret = cfs_store_marker_parse(buf, len);
		free(buf);
	} else if (ret == -EFBIG) {
		ret = -EUCLEAN;
	} else if (ret == -ENOENT) {
		ret = s3_put(st, CFS_STORE_MARKER, CFS_STORE_MARKER_TEXT,
			     strlen(CFS_STORE_MARKER_TEXT), true);
	}
	if (ret >= 0)
		atomic_store(&st->marker_state, 1);
	return ret < 0 ? ret : 0;
}

static int s3_open(struct cfs_store *st, const char *location, unsigned flags)
{
	const char *region = env("AWS_REGION");
	struct s3_store *ss;
	char *base = NULL;
	int ret;

	if (!region)
		region = env("AWS_DEFAULT_REGION");
	if (!region)
		region = "us-east-1";
	ss = calloc(1, sizeof(*ss));
	if (!ss)
		return -ENOMEM;
	ret = s3_credentials(ss, location, region);
	if (ret < 0)
		goto out_free;
	ret = s3_base_url(location, region, &base);
	if (ret < 0)
		goto out_free;
	ret = cfs_remote_init(&ss->r, st, base, ss->provider ? &ss->sigv4 : NULL);
	free(base);
	if (ret < 0)
		goto out_free;
	st->priv = ss;
	if (flags & CFS_STORE_CREATE) {
		ret = s3_create(st);
		if (ret < 0)
			goto out_priv;
	}
	return 0;

out_priv:
	st->priv = NULL;
out_free:
	s3_free(ss);
	return ret;
}

static void s3_close(struct cfs_store *st)
{
	if (!st->priv)
		return;
	s3_free(st->priv);
	st->priv = NULL;
}

static int s3_get(struct cfs_store *st, const char *key, size_t max, void **buf, size_t *len)
{
	return cfs_remote_get(remote_of(st), key, max, buf, len);
}

static int s3_has(struct cfs_store *st, const char *key, uint64_t *size)
{
	return cfs_remote_has(remote_of(st), key, size);
}

/* The Cache-Control request header a PUT of key stores (see the top). */
static const char *s3_cache_control(const char *key)
{
	if (strncmp(key, "objects/", strlen("objects/")) == 0)
		return "Cache-Control: public, max-age=31536000, immutable";
	if (strcmp(key, CFS_STORE_MARKER) == 0)
		return "Cache-Control: public, max-age=300";
	/* tags/, sigs/, and any key added later: it may change. */
	return "Cache-Control: public, max-age=5, stale-while-revalidate=5";
}

static int s3_put(struct cfs_store *st, const char *key, const void *buf, size_t len,
		  bool replace)
{
	const char *headers[] = { s3_cache_control(key), NULL };
	struct cfs_fetch_result res;
	int ret;

	if (!replace) {
		ret = cfs_remote_has(remote_of(st), key, NULL);
		if (ret)
			return ret < 0 ? ret : 0;
	}
	ret = cfs_remote_request(remote_of(st), CFS_FETCH_PUT, key, buf, len, headers, 0, &res);
	free(res.body);
	return ret < 0 ? ret : 1;
}

static int s3_sync(struct cfs_store *st)
{
	return 0;
}

static void s3_fetch_stats(struct cfs_store *st, struct cfs_fetch_stats *out)
{
	cfs_remote_fetch_stats(remote_of(st), out);
}

const struct cfs_store_ops cfs_store_s3_ops = {
	.name = "s3",
	.open = s3_open,
	.close = s3_close,
	.get = s3_get,
	.has = s3_has,
	.put = s3_put,
	.sync = s3_sync,
	.fetch_stats = s3_fetch_stats,
	.lazy_marker = true,
};
