/* SPDX-License-Identifier: MIT */
/* test-store: directory store open/create, objects, tags, resolve, stats. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store.h"
#include "store_remote.h"
#include "util.h"
#include "test.h"

static char base[64];

static void path_of(char *out, size_t size, const char *rel)
{
	snprintf(out, size, "%s/%s", base, rel);
}

static void write_text(const char *rel, const char *text)
{
	char p[512];
	FILE *f;

	path_of(p, sizeof(p), rel);
	f = fopen(p, "w");
	if (!f || fputs(text, f) < 0 || fclose(f)) {
		perror(p);
		exit(1);
	}
}

static void test_open(void)
{
	struct cfs_store *st = NULL;
	char p[512], url[600];
	int ret;

	printf("open: missing store is -ENOENT\n");
	path_of(p, sizeof(p), "missing");
	CHECK(cfs_store_open(p, 0, &st) == -ENOENT, "missing store");

	printf("open: a regular file is -ENOTDIR\n");
	write_text("file", "x");
	path_of(p, sizeof(p), "file");
	CHECK(cfs_store_open(p, 0, &st) == -ENOTDIR, "file as store");

	printf("open: a directory without marker is -EUCLEAN\n");
	path_of(p, sizeof(p), "plain");
	mkdir(p, 0755);
	CHECK(cfs_store_open(p, 0, &st) == -EUCLEAN, "plain dir");

	printf("open: create refuses an unrelated non-empty directory\n");
	write_text("plain/notes.txt", "mine");
	CHECK(cfs_store_open(p, CFS_STORE_CREATE, &st) == -EUCLEAN, "non-empty dir adopted");

	printf("open: unsupported URL schemes are -EPROTONOSUPPORT\n");
	CHECK(cfs_store_open("ftp://example.com/s", 0, &st) == -EPROTONOSUPPORT, "ftp");
	CHECK(cfs_store_open("nfs://example.com/s", 0, &st) == -EPROTONOSUPPORT, "nfs");

	printf("open: create, then reopen by path and by file:// URL\n");
	path_of(p, sizeof(p), "s");
	ret = cfs_store_open(p, CFS_STORE_CREATE, &st);
	CHECK(ret == 0, "create: %d", ret);
	cfs_store_free(st);
	st = NULL;
	path_of(p, sizeof(p), "s/cfs-store");
	{
		void *buf = NULL;
		size_t len = 0;

		CHECK(cfs_read_file_at(AT_FDCWD, p, 64, &buf, &len) == 0 && len == 12 &&
		      !memcmp(buf, "cfs-store 1\n", 12), "marker content");
		free(buf);
	}
	path_of(p, sizeof(p), "s");
	ret = cfs_store_open(p, 0, &st);
	CHECK(ret == 0, "reopen: %d", ret);
	CHECK(ret || !strcmp(cfs_store_location(st), p), "location");
	cfs_store_free(st);
	snprintf(url, sizeof(url), "file://%s", p);
	st = NULL;
	CHECK(cfs_store_open(url, 0, &st) == 0, "file:// URL");
	cfs_store_free(st);
	/* Creating over an existing store keeps it. */
	st = NULL;
	CHECK(cfs_store_open(p, CFS_STORE_CREATE, &st) == 0, "create existing");
	cfs_store_free(st);
	cfs_store_free(NULL);

	printf("open: another marker version is -EPROTONOSUPPORT, garbage -EUCLEAN\n");
	path_of(p, sizeof(p), "v2");
	mkdir(p, 0755);
	write_text("v2/cfs-store", "cfs-store 2\n");
	CHECK(cfs_store_open(p, 0, &st) == -EPROTONOSUPPORT, "marker version 2");
	write_text("v2/cfs-store", "hello\n");
	CHECK(cfs_store_open(p, 0, &st) == -EUCLEAN, "garbage marker");
}

static void test_objects(struct cfs_store *st)
{
	static const char content[] = "object content, not even compressed";
	struct cfs_store_stats s;
	struct stat a, b;
	char hex[CFS_DIGEST_HEX_LEN + 1], p[512], rel[128];
	cfs_digest d, missing;
	uint64_t osize = 0;
	void *buf = NULL;
	size_t len = 0;
	int ret;

	cfs_sha256(content, sizeof(content), &d);
	cfs_sha256("nope", 4, &missing);
	cfs_digest_hex(&d, hex);

	printf("objects: put, has, get\n");
	CHECK(cfs_store_has(st, &d, NULL) == 0, "has before put");
	ret = cfs_store_put(st, &d, content, sizeof(content));
	CHECK(ret == 1, "first put: %d", ret);
	CHECK(cfs_store_has(st, &d, &osize) == 1 && osize == sizeof(content), "has after put");
	ret = cfs_store_get(st, &d, &buf, &len);
	CHECK(ret == 0 && len == sizeof(content) && !memcmp(buf, content, len), "get: %d", ret);
	free(buf);
	CHECK(cfs_store_get(st, &missing, &buf, &len) == -ENOENT, "get of a missing object");

	printf("objects: stored as objects/<hh>/<hex>, no temporary left\n");
	snprintf(rel, sizeof(rel), "s/objects/%.2s/%s", hex, hex);
	path_of(p, sizeof(p), rel);
	CHECK(stat(p, &a) == 0 && S_ISREG(a.st_mode), "object file %s", p);
	{
		char dir[512];
		struct dirent *de;
		DIR *dd;
		int n = 0;

		snprintf(rel, sizeof(rel), "s/objects/%.2s", hex);
		path_of(dir, sizeof(dir), rel);
		dd = opendir(dir);
		while (dd && (de = readdir(dd)))
			n += de->d_name[0] != '.';
		if (dd)
			closedir(dd);
		CHECK(n == 1, "%d entries in the fan-out directory", n);
	}

	printf("objects: a second put returns 0 and leaves the file alone\n");
	ret = cfs_store_put(st, &d, "different bytes", 15);
	CHECK(ret == 0, "second put: %d", ret);
	CHECK(stat(p, &b) == 0 && a.st_ino == b.st_ino && b.st_size == (off_t)sizeof(content),
	      "object rewritten");

	printf("objects: sync\n");
	CHECK(cfs_store_sync(st) == 0, "sync");

	printf("objects: stats counters\n");
	cfs_store_stats_get(st, &s);
	CHECK(s.gets == 1 && s.get_bytes == sizeof(content) && s.get_errors == 1,
	      "get stats %lu %lu %lu", (unsigned long)s.gets, (unsigned long)s.get_bytes,
	      (unsigned long)s.get_errors);
	CHECK(s.puts == 1 && s.put_bytes == sizeof(content) && s.put_skipped == 1,
	      "put stats %lu %lu %lu", (unsigned long)s.puts, (unsigned long)s.put_bytes,
	      (unsigned long)s.put_skipped);
}

struct racer {
	struct cfs_store *st;
	cfs_digest d;
	int ret;
};

static void *race_put(void *arg)
{
	struct racer *r = arg;

	r->ret = cfs_store_put(r->st, &r->d, "race", 4);
	return NULL;
}

static void test_race(struct cfs_store *st)
{
	struct racer r[8];
	pthread_t t[8];
	int written = 0, present = 0;

	printf("objects: 8 threads put one new object, exactly one writes it\n");
	for (int i = 0; i < 8; i++) {
		r[i].st = st;
		cfs_sha256("race", 4, &r[i].d);
		pthread_create(&t[i], NULL, race_put, &r[i]);
	}
	for (int i = 0; i < 8; i++) {
		pthread_join(t[i], NULL);
		written += r[i].ret == 1;
		present += r[i].ret == 0;
	}
	CHECK(written == 1 && present == 7, "%d written, %d present", written, present);
}

static void test_tags(struct cfs_store *st)
{
	static const char *bad[] = { "../x", "a//b", "", "/abs", "a/", ".", "..", "a/./b",
				     "a/../b", "x y", "a\\b", "tab\t", "caf\xc3\xa9" };
	char hex[CFS_DIGEST_HEX_LEN + 1], ref[CFS_REF_STRLEN], text[200], longname[302];
	cfs_digest d1, d2, got;
	int ret;

	cfs_sha256("one", 3, &d1);
	cfs_sha256("two", 3, &d2);

	printf("tags: set, get, replace, nested names\n");
	CHECK(cfs_store_tag_get(st, "latest", &got) == -ENOENT, "unknown tag");
	CHECK(cfs_store_tag_set(st, "latest", &d1) == 0, "set");
	CHECK(cfs_store_tag_get(st, "latest", &got) == 0 && cfs_digest_eq(&got, &d1), "get");
	CHECK(cfs_store_tag_set(st, "latest", &d2) == 0, "replace");
	CHECK(cfs_store_tag_get(st, "latest", &got) == 0 && cfs_digest_eq(&got, &d2),
	      "get after replace");
	CHECK(cfs_store_tag_set(st, "org/app:v1.2@x+y-z_", &d1) == 0, "nested set");
	CHECK(cfs_store_tag_get(st, "org/app:v1.2@x+y-z_", &got) == 0 &&
	      cfs_digest_eq(&got, &d1), "nested get");
	CHECK(cfs_store_tag_get(st, "org", &got) == -ENOENT, "a tag directory is no tag");
	CHECK(cfs_store_tag_get(st, "latest/x", &got) == -ENOENT, "below a tag file");
	{
		void *buf = NULL;
		size_t len = 0;
		char p[512];

		cfs_digest_ref(&d2, ref);
		snprintf(text, sizeof(text), "%s\n", ref);
		path_of(p, sizeof(p), "s/tags/latest");
		CHECK(cfs_read_file_at(AT_FDCWD, p, 200, &buf, &len) == 0 &&
		      len == strlen(text) && !memcmp(buf, text, len), "tag file format");
		free(buf);
	}

	printf("tags: invalid names are rejected\n");
	memset(longname, 'a', 300);
	longname[300] = '\0';
	CHECK(!cfs_tag_name_valid(longname), "300 chars valid");
	CHECK(cfs_store_tag_set(st, longname, &d1) == -EINVAL, "300-char set");
	longname[200] = '\0';
	CHECK(cfs_tag_name_valid(longname), "200 chars invalid");
	longname[200] = 'a';
	longname[201] = '\0';
	CHECK(!cfs_tag_name_valid(longname), "201 chars valid");
	CHECK(!cfs_tag_name_valid(NULL), "NULL valid");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		CHECK(!cfs_tag_name_valid(bad[i]), "'%s' valid", bad[i]);
		CHECK(cfs_store_tag_set(st, bad[i], &d1) == -EINVAL, "'%s' set", bad[i]);
		CHECK(cfs_store_tag_get(st, bad[i], &got) == -EINVAL, "'%s' get", bad[i]);
	}
	CHECK(cfs_tag_name_valid("a.b/..c/.d"), "dots inside components");

	printf("tags: malformed tag files are -EUCLEAN\n");
	cfs_digest_hex(&d1, hex);
	snprintf(text, sizeof(text), "sha256:%s", hex);
	write_text("s/tags/nonl", text);
	CHECK(cfs_store_tag_get(st, "nonl", &got) == 0 && cfs_digest_eq(&got, &d1),
	      "missing newline tolerated");
	{
		static const char *corrupt[] = {
			"garbage\n", "", "\n",
			"sha256:0123\n",
			"md5:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n",
			"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdeg\n",
			"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n\n",
			"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef \n",
			" sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n",
			"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n",
		};
		char big[4096];

		for (size_t i = 0; i < sizeof(corrupt) / sizeof(corrupt[0]); i++) {
			write_text("s/tags/bad", corrupt[i]);
			ret = cfs_store_tag_get(st, "bad", &got);
			CHECK(ret == -EUCLEAN, "corrupt tag %zu: %d", i, ret);
		}
		memset(big, 'x', sizeof(big) - 1);
		big[sizeof(big) - 1] = '\0';
		write_text("s/tags/bad", big);
		CHECK(cfs_store_tag_get(st, "bad", &got) == -EUCLEAN, "huge tag file");
	}

	printf("tags: resolve a reference and a tag\n");
	cfs_digest_ref(&d2, ref);
	CHECK(cfs_store_resolve(st, ref, &got) == 0 && cfs_digest_eq(&got, &d2), "resolve ref");
	CHECK(cfs_store_resolve(st, "latest", &got) == 0 && cfs_digest_eq(&got, &d2),
	      "resolve tag");
	CHECK(cfs_store_resolve(st, "sha256:abc", &got) == -EINVAL, "resolve bad ref");
	CHECK(cfs_store_resolve(st, "nosuchtag", &got) == -ENOENT, "resolve unknown tag");
	CHECK(cfs_store_resolve(st, "../x", &got) == -EINVAL, "resolve bad tag name");
}

/* Remote stores, without a server: what opening checks, URLs, and errors
 * of a server that is not there.  tests/remote.sh does the rest. */
static void test_remote(void)
{
	struct cfs_fetch_opts fo = { .retries = 1, .backoff_ms = 1, .deadline_ms = 5000 };
	struct cfs_store_opts so = { .fetch = &fo };
	struct cfs_fetch_stats fs;
	struct cfs_store *st = NULL;
	cfs_digest d, got;
	uint64_t t0;
	char *e;
	int ret;

	printf("remote: keys are escaped as RFC 3986 wants (S3 signs the path as sent)\n");
	e = cfs_url_escape_path("tags/v1:a@b+c/x y~_.-Z9%");
	CHECK(e && !strcmp(e, "tags/v1%3Aa%40b%2Bc/x%20y~_.-Z9%25"), "escaped: %s", e);
	free(e);

	printf("remote: http(s) opens without a request; creating one is -EROFS\n");
	ret = cfs_store_open("http://127.0.0.1:1/store/", 0, &st);
	CHECK(ret == 0, "open http: %d", ret);
	if (ret == 0) {
		CHECK(cfs_store_is_remote(st), "http is remote");
		CHECK(cfs_store_fetch_stats(st, &fs) == 0 && fs.requests == 0, "no request yet");
		cfs_store_free(st);
	}
	ret = cfs_store_open("https://example.com", 0, &st);
	CHECK(ret == 0, "open https: %d", ret);
	if (ret == 0)
		cfs_store_free(st);
	CHECK(cfs_store_open("http://127.0.0.1:1/s", CFS_STORE_CREATE, &st) == -EROFS, "create http");
	CHECK(cfs_store_open("http://", 0, &st) == -EINVAL, "no host");
	CHECK(cfs_store_open("http:///path", 0, &st) == -EINVAL, "empty host");

	printf("remote: put and sync on http are -EROFS; a dead server is -EIO, soon\n");
	ret = cfs_store_open_opts("http://127.0.0.1:1/s", 0, &so, &st);
	CHECK(ret == 0, "open http: %d", ret);
	if (ret == 0) {
		memset(&d, 0x5a, sizeof(d));
		CHECK(cfs_store_put(st, &d, "x", 1) == -EROFS, "put");
		CHECK(cfs_store_sync(st) == -EROFS, "sync");
		t0 = cfs_now_ns();
		ret = cfs_store_tag_get(st, "v1", &got);
		CHECK(ret == -EIO, "tag get from a closed port: %d", ret);
		CHECK(cfs_now_ns() - t0 < 5000000000ull, "took %llu ms",
		      (unsigned long long)((cfs_now_ns() - t0) / 1000000));
		CHECK(cfs_store_fetch_stats(st, &fs) == 0 && fs.requests >= 1 && fs.errors >= 1,
		      "stats: %llu requests, %llu errors", (unsigned long long)fs.requests,
		      (unsigned long long)fs.errors);
		cfs_store_free(st);
	}

	printf("remote: s3 location and credentials are checked at open\n");
	unsetenv("AWS_ACCESS_KEY_ID");
	unsetenv("AWS_SECRET_ACCESS_KEY");
	setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1", 1);
	ret = cfs_store_open("s3://bucket/some/prefix/", 0, &st);
	CHECK(ret == 0, "open s3 anonymous: %d", ret);
	if (ret == 0) {
		CHECK(cfs_store_is_remote(st), "s3 is remote");
		cfs_store_free(st);
	}
	CHECK(cfs_store_open("s3://", 0, &st) == -EINVAL, "no bucket");
	CHECK(cfs_store_open("s3://bad:bucket/p", 0, &st) == -EINVAL, "bad bucket");
	CHECK(cfs_store_open("s3://b/p//q", 0, &st) == -EINVAL, "empty prefix component");
	setenv("AWS_ACCESS_KEY_ID", "id", 1);
	CHECK(cfs_store_open("s3://bucket", 0, &st) == -EINVAL, "key id without secret");
	unsetenv("AWS_ACCESS_KEY_ID");
	unsetenv("AWS_ENDPOINT_URL");
}

int main(void)
{
	struct cfs_store *st = NULL;
	char p[512];
	int ret;

	cfs_test_mkdtemp(base, sizeof(base), "store");
	test_open();
	test_remote();

	path_of(p, sizeof(p), "s");
	ret = cfs_store_open(p, 0, &st);
	if (ret < 0) {
		fprintf(stderr, "FAIL open store: %d\n", ret);
		return 1;
	}
	test_objects(st);
	test_race(st);
	test_tags(st);
	cfs_store_free(st);

	cfs_test_rmtree(base);
	return cfs_test_done("test-store");
}
