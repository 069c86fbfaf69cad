/* SPDX-License-Identifier: MIT */
/*
 * The options that every command reading a store shares, and opening a
 * store, cache and image from them (open.h).  One table describes each
 * option once, for its long form (--cache-size) and its KEY=VALUE form
 * (cache_size=, in mount -o and in the loader's option strings), so that a
 * new option reaches every command and a value is checked the same way
 * wherever it is given.  The messages for what fails to open are written
 * here once, so that cfs-mount, cfs-load and cfs-ls say the same thing for
 * the same store.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "image.h"
#include "open.h"
#include "sign.h"
#include "util.h"

enum kind { K_STR, K_SIZE, K_COUNT, K_FLAG };

struct opt_def {
	int id;
	const char *name;       /* long form, also the message's name */
	const char *key;        /* KEY=VALUE form */
	enum kind kind;         /* what the field at off is: char *, uint64_t,
				 * unsigned or bool */
	size_t off;             /* in struct cfs_open_opts */
	unsigned long min, max; /* K_COUNT */
};

#define DAY_MS (24ul * 3600 * 1000)
#define AT(field) offsetof(struct cfs_open_opts, field)

static const struct opt_def defs[] = {
	{ CFS_OPT_CACHE, "cache", "cache", K_STR, AT(cache_dir), 0, 0 },
	{ CFS_OPT_CACHE_SIZE, "cache-size", "cache_size", K_SIZE, AT(cache_size), 0, 0 },
	{ CFS_OPT_MEM_CACHE, "mem-cache", "mem_cache", K_SIZE, AT(mem_cache), 0, 0 },
	{ CFS_OPT_DEADLINE, "deadline", "deadline", K_COUNT, AT(fetch.deadline_ms), 1, DAY_MS },
	{ CFS_OPT_MAX_INFLIGHT, "max-inflight", "max_inflight", K_COUNT, AT(fetch.max_inflight),
	  1, 4096 },
	/* 0 would read as the fetcher's default. */
	{ CFS_OPT_RETRIES, "retries", "retries", K_COUNT, AT(fetch.retries), 1, 100 },
	{ CFS_OPT_INSECURE, "insecure", "insecure", K_FLAG, AT(fetch.insecure), 0, 0 },
	{ CFS_OPT_CA_FILE, "ca-file", "ca_file", K_STR, AT(ca_file), 0, 0 },
	{ CFS_OPT_TRUST, "trust", "trust", K_STR, AT(trust), 0, 0 },
};

/* Writes a message and returns err. */
__attribute__((format(printf, 4, 5))) static int say(char *msg, size_t msglen, int err,
						      const char *fmt, ...)
{
	va_list ap;

	if (msglen) {
		va_start(ap, fmt);
		vsnprintf(msg, msglen, fmt, ap);
		va_end(ap);
	}
	return err;
}

void cfs_open_opts_init(struct cfs_open_opts *o)
{
	memset(o, 0, sizeof(*o));
}

void cfs_open_opts_release(struct cfs_open_opts *o)
{
	if (!o)
		return;
	free(o->cache_dir);
	free(o->ca_file);
	free(o->trust);
	memset(o, 0, sizeof(*o));
}

/* Sets option def from v; how names the option in a message ("--deadline",
 * "-o deadline"). */
static int apply(struct cfs_open_opts *o, const struct opt_def *def, const char *how,
		 const char *v, char *msg, size_t msglen)
{
	char *field = (char *)o + def->off, *str;
	unsigned long n;

	switch (def->kind) {
	case K_FLAG:
		if (v)
			return say(msg, msglen, -EINVAL, "%s takes no value", how);
		*(bool *)field = true;
		return 1;
	case K_STR:
		if (!v || !*v)
			return say(msg, msglen, -EINVAL, "%s needs a value", how);
		str = strdup(v);
		if (!str)
			return -ENOMEM;
		free(*(char **)field);
		*(char **)field = str;
		return 1;
	case K_SIZE:
		if (!v || cfs_parse_size(v, (uint64_t *)field) < 0)
			return say(msg, msglen, -EINVAL, "%s: invalid size '%s'", how, v ? v : "");
		return 1;
	case K_COUNT:
		if (!v || cfs_parse_uint(v, def->min, def->max, &n) < 0)
			return say(msg, msglen, -EINVAL, "%s: expected %lu..%lu: '%s'", how, def->min,
				   def->max, v ? v : "");
		*(unsigned *)field = (unsigned)n;
		return 1;
	}
	return 0;
}

int cfs_open_opt(struct cfs_open_opts *o, int c, const char *arg, char *msg, size_t msglen)
{
	char how[32];

	for (size_t i = 0; i < CFS_ARRAY_SIZE(defs); i++) {
		if (defs[i].id != c)
			continue;
		snprintf(how, sizeof(how), "--%s", defs[i].name);
		return apply(o, &defs[i], how, arg, msg, msglen);
	}
	return 0;
}

int cfs_open_kv(struct cfs_open_opts *o, const char *s, size_t len, char *msg, size_t msglen)
{
	size_t klen = 0;
	char how[32], *v = NULL;
	int ret;

	while (klen < len && s[klen] != '=')
		klen++;
	for (size_t i = 0; i < CFS_ARRAY_SIZE(defs); i++) {
		if (strlen(defs[i].key) != klen || strncmp(s, defs[i].key, klen))
			continue;
		if (klen < len) {
			v = strndup(s + klen + 1, len - klen - 1);
			if (!v)
				return -ENOMEM;
		}
		snprintf(how, sizeof(how), "-o %s", defs[i].key);
		ret = apply(o, &defs[i], how, v, msg, msglen);
		free(v);
		return ret;
	}
	return 0;
}

int cfs_open_kv_list(struct cfs_open_opts *o, const char *list, char *msg, size_t msglen)
{
	const char *s = list;

	while (s && *s) {
		size_t len = strcspn(s, ",");
		int ret = len ? cfs_open_kv(o, s, len, msg, msglen) : 1;

		if (ret == 0)
			return say(msg, msglen, -EINVAL, "unknown option '%.*s'", (int)len, s);
		if (ret < 0)
			return ret;
		s += len;
		if (*s == ',')
			s++;
	}
	return 0;
}

/* The CA bundle o's stores verify with, absolute, into *out (NULL: the
 * system's); the environment's bundle does not matter without
 * verification. */
static int ca_resolve(const struct cfs_open_opts *o, char **out, char *msg, size_t msglen)
{
	int ret = 0;

	*out = NULL;
	if (o->ca_file || !o->fetch.insecure)
		ret = cfs_fetch_ca_resolve(o->ca_file, out);
	if (ret < 0)
		return say(msg, msglen, ret, "%s%s: %s", o->ca_file ? "--ca-file " : "CA bundle",
			   o->ca_file ? o->ca_file : "", cfs_strerror(ret));
	return 0;
}

int cfs_open_ca_resolve(struct cfs_open_opts *o, char *msg, size_t msglen)
{
	char *ca_file;
	int ret = ca_resolve(o, &ca_file, msg, msglen);

	if (ret < 0)
		return ret;
	free(o->ca_file);
	o->ca_file = ca_file;
	return 0;
}

int cfs_open_store(const struct cfs_open_opts *o, const char *location, unsigned flags,
		   struct cfs_store **out, char *msg, size_t msglen)
{
	struct cfs_fetch_opts fo = o->fetch;
	struct cfs_store_opts so = { .fetch = &fo };
	char *ca_file;
	int ret;

	*out = NULL;
	ret = ca_resolve(o, &ca_file, msg, msglen);
	if (ret < 0)
		return ret;
	fo.ca_file = ca_file;
	ret = cfs_store_open_opts(location, flags, &so, out);
	free(ca_file);
	if (ret == -EROFS && (flags & CFS_STORE_CREATE) && strstr(location, "://"))
		return say(msg, msglen, ret, "store %s: a read-only store (a web server serves a "
			   "store, it does not take one): pack into a directory or s3:// store",
			   location);
	if (ret < 0)
		return say(msg, msglen, ret, "store %s: %s", location,
			   ret != -EUCLEAN ? cfs_strerror(ret)
			   : (flags & CFS_STORE_CREATE) ? "exists but is not a cfs store"
							: "not a cfs store");
	return 0;
}

int cfs_open_cache(const struct cfs_open_opts *o, struct cfs_cache **out, char *msg,
		   size_t msglen)
{
	struct cfs_cache_opts co = {
		.dir = o->cache_dir,
		.disk_max = o->cache_size,
		.mem_max = o->mem_cache,
	};
	int ret = cfs_cache_new(&co, out);

	if (ret < 0)
		return say(msg, msglen, ret, "cache %s: %s", o->cache_dir ? o->cache_dir : "(memory)",
			   cfs_strerror(ret));
	return 0;
}

int cfs_open_resolve(const struct cfs_open_opts *o, struct cfs_store *st, const char *image,
		     cfs_digest *out, uint64_t *signed_at, char *msg, size_t msglen)
{
	const char *loc = cfs_store_location(st);
	struct cfs_trust *trust = NULL;
	char why[256] = "";
	int ret;

	if (o->trust) {
		ret = cfs_trust_load(o->trust, &trust);
		if (ret < 0)
			return say(msg, msglen, ret, "--trust %s: %s", o->trust,
				   ret == -EINVAL ? "no Ed25519 public keys (PEM) there"
						  : cfs_strerror(ret));
	}
	ret = cfs_store_resolve_trusted(st, trust, image, out, signed_at, why, sizeof(why));
	cfs_trust_free(trust);
	if (ret == -ENOKEY)
		return say(msg, msglen, ret, "image '%s' refused: %s in store %s; sign it "
			   "(cfs-pack --sign, cfs-sign sign) or name it by its sha256: reference",
			   image, why, loc);
	if ((ret == -EPERM || ret == -EUCLEAN) && why[0])
		return say(msg, msglen, ret, "image '%s' refused: %s", image, why);
	if (ret == -ENXIO)
		return say(msg, msglen, ret, "store %s: not a cfs store (no cfs-store marker there)",
			   loc);
	if (ret == -ENOENT)
		return say(msg, msglen, ret, "image '%s' not found in store %s", image, loc);
	if (ret == -EINVAL)
		return say(msg, msglen, ret, "invalid image name '%s' (a tag or sha256:<64 hex>)",
			   image);
	if (ret < 0)
		return say(msg, msglen, ret, "image '%s': %s", image, cfs_strerror(ret));
	return 0;
}

void cfs_open_close(struct cfs_opened *op)
{
	if (!op)
		return;
	cfs_image_free(op->img);
	cfs_cache_free(op->cache);
	cfs_store_free(op->store);
	op->img = NULL;
	op->cache = NULL;
	op->store = NULL;
}

int cfs_open_image(const struct cfs_open_opts *o, const char *location, const char *image,
		   const char *pinned, struct cfs_opened *out, char *msg, size_t msglen)
{
	int ret;

	memset(out, 0, sizeof(*out));
	ret = cfs_open_store(o, location, 0, &out->store, msg, msglen);
	if (ret < 0)
		return ret;
	ret = cfs_open_cache(o, &out->cache, msg, msglen);
	if (ret < 0)
		goto fail;
	if (pinned && cfs_digest_parse(pinned, false, &out->digest) == 0)
		ret = 0;
	else
		ret = cfs_open_resolve(o, out->store, image, &out->digest, NULL, msg, msglen);
	if (ret < 0)
		goto fail;
	/* Open what the tag named just now, even if it moves meanwhile. */
	cfs_digest_ref(&out->digest, out->ref);
	ret = cfs_image_open(out->store, out->cache, out->ref, &out->img);
	if (ret == -ENXIO)
		say(msg, msglen, ret, "store %s: not a cfs store (no cfs-store marker there)",
		    location);
	else if (ret == -ENOENT && strcmp(image, out->ref))
		say(msg, msglen, ret, "image '%s': the tag names %s, which is not in store %s", image,
		    out->ref, location);
	else if (ret == -ENOENT)
		say(msg, msglen, ret, "image '%s' not found in store %s", image, location);
	else if (ret < 0)
		say(msg, msglen, ret, "image %s: %s", out->ref, cfs_strerror(ret));
	if (ret < 0)
		goto fail;
	return 0;

fail:
	cfs_open_close(out);
	return ret;
}
