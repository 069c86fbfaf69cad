/* SPDX-License-Identifier: MIT */
/*
 * The backend-independent part of a store: location dispatch, object keys,
 * tags and statistics.  Backends only move bytes under keys.
 *
 * A store list, "STORE1,STORE2,..." (a comma inside a location written
 * %2C), reads from its members in order: a zonal cache first, the origin
 * last.  Whatever one member fails to give (missing, a server error, a
 * timeout, an object the caller found corrupt: cfs_store_get_from()) the
 * next one is asked for; all but the last answer within a third of the
 * deadline and retry once, so that a dead cache costs little.  A list is
 * read-only.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "store_i.h"
#include "util.h"

#define TAG_NAME_MAX CFS_TAG_NAME_MAX
/* "sha256:" + 64 hex + "\n"; a little slack so that a longer file is
 * reported as malformed rather than too big. */
#define TAG_FILE_MAX 128

/* "objects/" + "hh/" + 64 hex + NUL */
#define OBJ_KEY_LEN (8 + 3 + CFS_DIGEST_HEX_LEN + 1)
/* "tags/" or "sigs/" + name + NUL */
#define TAG_KEY_LEN (5 + TAG_NAME_MAX + 1)

static void stat_add(_Atomic uint64_t *v, uint64_t n)
{
	atomic_fetch_add_explicit(v, n, memory_order_relaxed);
}

static uint64_t stat_load(_Atomic uint64_t *v)
{
	return atomic_load_explicit(v, memory_order_relaxed);
}

static void obj_key(const cfs_digest *d, char key[OBJ_KEY_LEN])
{
	char hex[CFS_DIGEST_HEX_LEN + 1];

	cfs_digest_hex(d, hex);
	snprintf(key, OBJ_KEY_LEN, "objects/%.2s/%s", hex, hex);
}

/* ASCII only: ctype.h follows the locale. */
static bool is_alpha(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_alnum(char c)
{
	return is_alpha(c) || (c >= '0' && c <= '9');
}

/* Length of a "scheme://" prefix, or 0 when location is a plain path. */
static size_t url_scheme_len(const char *location)
{
	const char *p = location;

	if (!is_alpha(*p))
		return 0;
	while (is_alnum(*p) || *p == '+' || *p == '-' || *p == '.')
		p++;
	return strncmp(p, "://", 3) ? 0 : (size_t)(p - location) + 3;
}

int cfs_store_marker_parse(const void *buf, size_t len)
{
	static const char prefix[] = CFS_STORE_MARKER " ";

	if (len == strlen(CFS_STORE_MARKER_TEXT) && !memcmp(buf, CFS_STORE_MARKER_TEXT, len))
		return 0;
	/* Another version is a format we do not speak; anything else is not
	 * a store. */
	if (len > strlen(prefix) && !memcmp(buf, prefix, strlen(prefix)))
		return -EPROTONOSUPPORT;
	return -EUCLEAN;
}

/* The backend of location, and the location it is given: a directory path
 * for dir (file:// stripped), the URL itself for the others. */
static int store_backend(const char *location, const struct cfs_store_ops **ops,
			 const char **path)
{
	size_t scheme = url_scheme_len(location);

	*ops = &cfs_store_dir_ops;
	*path = location;
	if (!scheme)
		return 0;
	if (!strncasecmp(location, "http://", scheme) || !strncasecmp(location, "https://", scheme)) {
		*ops = &cfs_store_http_ops;
		return 0;
	}
	if (!strncasecmp(location, "s3://", scheme)) {
		*ops = &cfs_store_s3_ops;
		return 0;
	}
	if (strncasecmp(location, "file://", scheme)) {
		cfs_err("%s: unsupported store location: a directory (a path or file:// URL), "
			"http://, https:// or s3://", location);
		return -EPROTONOSUPPORT;
	}
	/* file:///abs/path; a host part other than localhost is not ours. */
	*path = location + scheme;
	if (!strncmp(*path, "localhost/", 10))
		*path += 9;
	if (**path != '/') {
		cfs_err("%s: a file:// URL needs an absolute path", location);
		return -EINVAL;
	}
	return 0;
}

static int store_open_one(const char *location, unsigned flags, const struct cfs_store_opts *opts,
			  struct cfs_store **out)
{
	const struct cfs_store_ops *ops;
	const char *path;
	struct cfs_store *st;
	int ret;

	ret = store_backend(location, &ops, &path);
	if (ret < 0)
		return ret;

	st = calloc(1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	st->ops = ops;
	st->location = strdup(location);
	if (!st->location) {
		ret = -ENOMEM;
		goto out_free;
	}
	if (opts && opts->fetch) {
		st->fetch_opts = *opts->fetch;
		st->fetch_opts.ca_file = NULL;
		if (opts->fetch->ca_file) {
			st->ca_file = strdup(opts->fetch->ca_file);
			if (!st->ca_file) {
				ret = -ENOMEM;
				goto out_free_location;
			}
			st->fetch_opts.ca_file = st->ca_file;
		}
	}
	ret = ops->open(st, path, flags);
	if (ret < 0)
		goto out_free_location;
	*out = st;
	return 0;

out_free_location:
	free(st->ca_file);
	free(st->location);
out_free:
	free(st);
	return ret;
}

/* One member's location: %2C decoded back to a comma. */
static char *member_location(const char *s, size_t n)
{
	char *out = malloc(n + 1), *o = out;

	if (!out)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		if (i + 2 < n && s[i] == '%' && s[i + 1] == '2' && (s[i + 2] == 'C' || s[i + 2] == 'c')) {
			*o++ = ',';
			i += 2;
		} else {
			*o++ = s[i];
		}
	}
	*o = '\0';
	return out;
}

static int store_open_list(const char *location, unsigned flags,
			   const struct cfs_store_opts *opts, struct cfs_store **out)
{
	struct cfs_fetch_opts fo = { 0 };
	struct cfs_store_opts mo = { .fetch = &fo };
	struct cfs_store *st;
	const char *p = location;
	size_t n = 1;
	int ret;

	if (flags & CFS_STORE_CREATE) {
		cfs_err("%s: a store list is read-only: write to one store", location);
		return -EROFS;
	}
	for (const char *c = location; *c; c++)
		n += *c == ',';
	if (n > CFS_STORE_LIST_MAX) {
		cfs_err("%s: more than %d stores", location, CFS_STORE_LIST_MAX);
		return -E2BIG;
	}
	st = calloc(1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	st->location = strdup(location);
	st->members = calloc(n, sizeof(*st->members));
	if (!st->location || !st->members) {
		ret = -ENOMEM;
		goto fail;
	}
	for (size_t i = 0; i < n; i++) {
		size_t len = strcspn(p, ",");
		char *loc;

		if (!len) {
			cfs_err("%s: an empty store in the list", location);
			ret = -EINVAL;
			goto fail;
		}
		loc = member_location(p, len);
		if (!loc) {
			ret = -ENOMEM;
			goto fail;
		}
		if (opts && opts->fetch)
			fo = *opts->fetch;
		/* Not the origin: give up soon and hand on (store.c's top). */
		if (i + 1 < n) {
			unsigned deadline = fo.deadline_ms ? fo.deadline_ms : 30000;

			fo.deadline_ms = CFS_MAX(deadline / 3, 1u);
			fo.retries = 1;
		}
		ret = store_open_one(loc, flags, &mo, &st->members[i]);
		if (ret < 0)
			cfs_err("%s: %s", loc, cfs_strerror(ret));
		free(loc);
		if (ret < 0)
			goto fail;
		st->nmembers++;
		p += len + 1;
	}
	*out = st;
	return 0;
fail:
	cfs_store_free(st);
	return ret;
}

int cfs_store_open_opts(const char *location, unsigned flags, const struct cfs_store_opts *opts,
			struct cfs_store **out)
{
	if (!location || !*location || !out)
		return -EINVAL;
	if (strchr(location, ','))
		return store_open_list(location, flags, opts, out);
	return store_open_one(location, flags, opts, out);
}

int cfs_store_open(const char *location, unsigned flags, struct cfs_store **out)
{
	return cfs_store_open_opts(location, flags, NULL, out);
}

static bool is_list(const struct cfs_store *st)
{
	return st->members != NULL;
}

void cfs_store_free(struct cfs_store *st)
{
	if (!st)
		return;
	if (is_list(st)) {
		for (size_t i = 0; i < st->nmembers; i++)
			cfs_store_free(st->members[i]);
		free(st->members);
	} else {
		st->ops->close(st);
	}
	free(st->ca_file);
	free(st->location);
	free(st);
}

size_t cfs_store_count(const struct cfs_store *st)
{
	return is_list(st) ? st->nmembers : 1;
}

struct cfs_store *cfs_store_member(struct cfs_store *st, size_t i)
{
	if (!is_list(st))
		return i == 0 ? st : NULL;
	return i < st->nmembers ? st->members[i] : NULL;
}

uint64_t cfs_store_passed_on(const struct cfs_store *st)
{
	return atomic_load_explicit(&st->passed_on, memory_order_relaxed);
}

bool cfs_store_is_remote(const struct cfs_store *st)
{
	if (is_list(st)) {
		for (size_t i = 0; i < st->nmembers; i++)
			if (cfs_store_is_remote(st->members[i]))
				return true;
		return false;
	}
	return st->ops->fetch_stats != NULL;
}

int cfs_store_fetch_stats(struct cfs_store *st, struct cfs_fetch_stats *out)
{
	if (is_list(st)) {
		struct cfs_fetch_stats m;
		int ret = -ENOTSUP;

		memset(out, 0, sizeof(*out));
		for (size_t i = 0; i < st->nmembers; i++) {
			if (cfs_store_fetch_stats(st->members[i], &m) < 0)
				continue;
			out->requests += m.requests;
			out->attempts += m.attempts;
			out->retries += m.retries;
			out->errors += m.errors;
			out->timeouts += m.timeouts;
			out->bytes += m.bytes;
			out->bytes_sent += m.bytes_sent;
			out->inflight += m.inflight;
			out->queued += m.queued;
			ret = 0;
		}
		return ret;
	}
	if (!st->ops->fetch_stats)
		return -ENOTSUP;
	st->ops->fetch_stats(st, out);
	return 0;
}

/* A tag or object that a lazy-marker store says is missing: is the store
 * there at all?  Returns what to report instead of -ENOENT.  A definite
 * answer is remembered; a failed look (network) is not, and leaves -ENOENT. */
static int store_missing(struct cfs_store *st)
{
	void *buf;
	size_t len;
	int state, ret;

	if (!st->ops->lazy_marker)
		return -ENOENT;
	state = atomic_load(&st->marker_state);
	if (state)
		return state > 0 ? -ENOENT : state;
	ret = st->ops->get(st, CFS_STORE_MARKER, CFS_STORE_MARKER_MAX, &buf, &len);
	if (ret == 0) {
		ret = cfs_store_marker_parse(buf, len);
		free(buf);
	} else if (ret == -ENOENT || ret == -EFBIG) {
		ret = -EUCLEAN;
	} else {
		return -ENOENT;
	}
	if (ret == 0)
		state = 1;
	else if (ret == -EPROTONOSUPPORT)
		state = -EPROTONOSUPPORT;
	else
		state = -ENXIO;
	if (state < 0)
		cfs_debug("%s: no cfs store there: %s", st->location,
			  state == -ENXIO ? "no valid cfs-store marker" : cfs_strerror(state));
	atomic_store(&st->marker_state, state);
	return state > 0 ? -ENOENT : state;
}

const char *cfs_store_location(const struct cfs_store *st)
{
	return st->location;
}

/* A member failed: hand on to the next unless the failure is ours. */
static bool pass_on(struct cfs_store *m, int err, bool last)
{
	if (err == -ENOMEM || err == -EINVAL)
		return false;
	if (!last)
		stat_add(&m->passed_on, 1);
	return true;
}

int cfs_store_get_from(struct cfs_store *st, const cfs_digest *d, size_t *from, void **buf,
		       size_t *len)
{
	int ret = -ENOENT;

	if (!is_list(st))
		return *from == 0 ? cfs_store_get(st, d, buf, len) : -ENOENT;
	for (size_t i = *from; i < st->nmembers; i++) {
		ret = cfs_store_get(st->members[i], d, buf, len);
		if (ret == 0) {
			*from = i;
			return 0;
		}
		if (!pass_on(st->members[i], ret, i + 1 == st->nmembers))
			return ret;
	}
	return ret;
}

int cfs_store_get(struct cfs_store *st, const cfs_digest *d, void **buf, size_t *len)
{
	char key[OBJ_KEY_LEN];
	int ret;

	if (is_list(st)) {
		size_t from = 0;

		return cfs_store_get_from(st, d, &from, buf, len);
	}
	obj_key(d, key);
	ret = st->ops->get(st, key, CFS_OBJECT_MAX_SIZE, buf, len);
	if (ret == -ENOENT)
		ret = store_missing(st);
	if (ret < 0) {
		stat_add(&st->get_errors, 1);
		return ret;
	}
	stat_add(&st->gets, 1);
	stat_add(&st->get_bytes, *len);
	return 0;
}

int cfs_store_has(struct cfs_store *st, const cfs_digest *d, uint64_t *size)
{
	char key[OBJ_KEY_LEN];

	if (is_list(st)) {
		int ret = 0;

		for (size_t i = 0; i < st->nmembers; i++) {
			ret = cfs_store_has(st->members[i], d, size);
			if (ret == 1 || !pass_on(st->members[i], ret < 0 ? ret : -ENOENT,
						 i + 1 == st->nmembers))
				return ret;
		}
		return ret;
	}
	obj_key(d, key);
	return st->ops->has(st, key, size);
}

static int store_put(struct cfs_store *st, const cfs_digest *d, const void *buf, size_t len,
		     bool checked)
{
	char key[OBJ_KEY_LEN];
	int ret;

	/* The content is not checked against d here: the writer just hashed
	 * it, and every reader verifies it anyway. */
	if (len > CFS_OBJECT_MAX_SIZE)
		return -EFBIG;
	if (is_list(st))
		return -EROFS;
	obj_key(d, key);
	/* A remote store's presence check is a round trip: when the caller
	 * has just made it, a plain write of the same content is harmless.  A
	 * directory's is a stat, and keeps the no-replace rename. */
	ret = st->ops->put(st, key, buf, len, checked && cfs_store_is_remote(st));
	if (ret < 0)
		return ret;
	if (ret) {
		stat_add(&st->puts, 1);
		stat_add(&st->put_bytes, len);
	} else {
		stat_add(&st->put_skipped, 1);
	}
	return ret;
}

int cfs_store_put(struct cfs_store *st, const cfs_digest *d, const void *buf, size_t len)
{
	return store_put(st, d, buf, len, false);
}

int cfs_store_put_absent(struct cfs_store *st, const cfs_digest *d, const void *buf, size_t len)
{
	return store_put(st, d, buf, len, true);
}

int cfs_store_sync(struct cfs_store *st)
{
	return is_list(st) ? -EROFS : st->ops->sync(st);
}

bool cfs_tag_name_valid(const char *name)
{
	size_t len, comp = 0;

	if (!name)
		return false;
	len = strnlen(name, TAG_NAME_MAX + 1);
	if (len == 0 || len > TAG_NAME_MAX || name[0] == '/' || name[len - 1] == '/')
		return false;
	for (size_t i = 0; i <= len; i++) {
		char c = name[i];

		if (c == '/' || c == '\0') {
			/* Empty, "." and ".." components would escape tags/ or
			 * alias another name. */
			if (comp == 0 || (comp == 1 && name[i - 1] == '.') ||
			    (comp == 2 && name[i - 1] == '.' && name[i - 2] == '.'))
				return false;
			comp = 0;
			continue;
		}
		if (!is_alnum(c) && !strchr("._:@+-", c))
			return false;
		comp++;
	}
	return true;
}

static int tag_key(const char *name, char key[TAG_KEY_LEN])
{
	if (!cfs_tag_name_valid(name))
		return -EINVAL;
	snprintf(key, TAG_KEY_LEN, "tags/%s", name);
	return 0;
}

static int sig_key(const char *name, char key[TAG_KEY_LEN])
{
	if (!cfs_tag_name_valid(name))
		return -EINVAL;
	snprintf(key, TAG_KEY_LEN, "sigs/%s", name);
	return 0;
}

/* A mutable file of the store (sigs/, profiles/) at key: read from a list's
 * members in order, written to a single store only. */
static int mutable_get(struct cfs_store *st, const char *key, size_t max, void **buf, size_t *len)
{
	int ret = -ENOENT;

	if (is_list(st)) {
		for (size_t i = 0; i < st->nmembers; i++) {
			ret = mutable_get(st->members[i], key, max, buf, len);
			if (!ret || !pass_on(st->members[i], ret, i + 1 == st->nmembers))
				return ret;
		}
		return ret;
	}
	ret = st->ops->get(st, key, max, buf, len);
	return ret == -ENOENT ? store_missing(st) : ret;
}

static int mutable_set(struct cfs_store *st, const char *key, const void *buf, size_t len)
{
	int ret;

	if (is_list(st))
		return -EROFS;
	ret = st->ops->put(st, key, buf, len, true);
	return ret < 0 ? ret : 0;
}

int cfs_store_sig_get(struct cfs_store *st, const char *name, size_t max, void **buf,
		      size_t *len)
{
	char key[TAG_KEY_LEN];
	int ret = sig_key(name, key);

	return ret < 0 ? ret : mutable_get(st, key, max, buf, len);
}

int cfs_store_sig_set(struct cfs_store *st, const char *name, const void *buf, size_t len)
{
	char key[TAG_KEY_LEN];
	int ret = sig_key(name, key);

	return ret < 0 ? ret : mutable_set(st, key, buf, len);
}

/* "profiles/" or "origins/" + 64 hex + NUL */
#define IMAGE_KEY_LEN (9 + CFS_DIGEST_HEX_LEN + 1)

/* The key of a mutable file about an image: dir/<its index's hex>. */
static void image_key(const char *dir, const cfs_digest *image, char key[IMAGE_KEY_LEN])
{
	char hex[CFS_DIGEST_HEX_LEN + 1];

	cfs_digest_hex(image, hex);
	snprintf(key, IMAGE_KEY_LEN, "%s/%s", dir, hex);
}

static const char *const image_file_dir[] = {
	[CFS_IMAGE_PROFILE] = "profiles",
	[CFS_IMAGE_ORIGIN] = "origins",
	[CFS_LAYER_RECORD] = "layers",
};

int cfs_store_image_file_get(struct cfs_store *st, enum cfs_image_file kind,
			     const cfs_digest *image, size_t max, void **buf, size_t *len)
{
	char key[IMAGE_KEY_LEN];

	if (!st || !image || (unsigned)kind >= CFS_ARRAY_SIZE(image_file_dir))
		return -EINVAL;
	image_key(image_file_dir[kind], image, key);
	return mutable_get(st, key, max, buf, len);
}

int cfs_store_image_file_set(struct cfs_store *st, enum cfs_image_file kind,
			     const cfs_digest *image, const void *buf, size_t len)
{
	char key[IMAGE_KEY_LEN];

	if (!st || !image || (unsigned)kind >= CFS_ARRAY_SIZE(image_file_dir))
		return -EINVAL;
	image_key(image_file_dir[kind], image, key);
	return mutable_set(st, key, buf, len);
}

int cfs_store_tag_get(struct cfs_store *st, const char *name, cfs_digest *out)
{
	char key[TAG_KEY_LEN];
	void *buf;
	size_t len;
	int ret;

	ret = tag_key(name, key);
	if (ret < 0)
		return ret;
	if (is_list(st)) {
		/* A member that lies (a malformed tag) is passed over too. */
		for (size_t i = 0; i < st->nmembers; i++) {
			ret = cfs_store_tag_get(st->members[i], name, out);
			if (!ret || !pass_on(st->members[i], ret, i + 1 == st->nmembers))
				return ret;
		}
		return ret;
	}
	ret = st->ops->get(st, key, TAG_FILE_MAX, &buf, &len);
	if (ret == -ENOENT)
		return store_missing(st);
	if (ret == -EFBIG)
		return -EUCLEAN;
	if (ret < 0)
		return ret;
	ret = cfs_tag_parse(buf, len, out);
	free(buf);
	return ret;
}

int cfs_tag_parse(const void *buf, size_t len, cfs_digest *out)
{
	char text[TAG_FILE_MAX + 1];

	/* Exactly "sha256:<64 hex>", the newline optional. */
	if (len > TAG_FILE_MAX)
		return -EUCLEAN;
	memcpy(text, buf, len);
	if (len && text[len - 1] == '\n')
		len--;
	text[len] = '\0';
	if (len != CFS_REF_STRLEN - 1 || cfs_digest_parse(text, false, out) < 0)
		return -EUCLEAN;
	return 0;
}

int cfs_store_tag_set(struct cfs_store *st, const char *name, const cfs_digest *d)
{
	char key[TAG_KEY_LEN], text[CFS_REF_STRLEN + 1];
	int ret;

	ret = tag_key(name, key);
	if (ret < 0)
		return ret;
	if (is_list(st))
		return -EROFS;
	cfs_digest_ref(d, text);
	text[CFS_REF_STRLEN - 1] = '\n';
	ret = st->ops->put(st, key, text, CFS_REF_STRLEN, true);
	return ret < 0 ? ret : 0;
}

int cfs_store_resolve(struct cfs_store *st, const char *image, cfs_digest *out)
{
	if (!image)
		return -EINVAL;
	if (!strncmp(image, "sha256:", 7))
		return cfs_digest_parse(image, false, out);
	return cfs_store_tag_get(st, image, out);
}

void cfs_store_stats_get(struct cfs_store *st, struct cfs_store_stats *out)
{
	if (is_list(st)) {
		struct cfs_store_stats m;

		memset(out, 0, sizeof(*out));
		for (size_t i = 0; i < st->nmembers; i++) {
			cfs_store_stats_get(st->members[i], &m);
			out->gets += m.gets;
			out->get_bytes += m.get_bytes;
			out->get_errors += m.get_errors;
			out->puts += m.puts;
			out->put_bytes += m.put_bytes;
			out->put_skipped += m.put_skipped;
		}
		return;
	}
	out->gets = stat_load(&st->gets);
	out->get_bytes = stat_load(&st->get_bytes);
	out->get_errors = stat_load(&st->get_errors);
	out->puts = stat_load(&st->puts);
	out->put_bytes = stat_load(&st->put_bytes);
	out->put_skipped = stat_load(&st->put_skipped);
}
