/* SPDX-License-Identifier: MIT */
/* test-open: the options every command shares (long and KEY=VALUE forms) and opening an image from them, with the messages of each failure. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "open.h"
#include "store.h"
#include "test.h"

static void test_long_options(void)
{
	struct cfs_open_opts o;
	char msg[256] = "";

	printf("cfs_open_opt: each long option sets its field, bad values are refused\n");
	cfs_open_opts_init(&o);
	CHECK_EQ(cfs_open_opt(&o, CFS_OPT_CACHE, "/c", msg, sizeof(msg)), 1);
	CHECK_EQ(cfs_open_opt(&o, CFS_OPT_CACHE, "/d", msg, sizeof(msg)), 1);
	CHECK(o.cache_dir && !strcmp(o.cache_dir, "/d"), "the last --cache wins");
	CHECK_EQ(cfs_open_opt(&o, CFS_OPT_CACHE_SIZE, "2G", msg, sizeof(msg)), 1);
	CHECK_EQ(o.cache_size, 2ull << 30);
	CHECK_EQ(cfs_open_opt(&o, CFS_OPT_MEM_CACHE, "64M", msg, sizeof(msg)), 1);
	CHECK_EQ(o.mem_cache, 64ull << 20);
	CHECK_EQ(cfs_open_opt(&o, CFS_OPT_DEADLINE, "1500", msg, sizeof(msg)), 1);
	CHECK_EQ(o.fetch.deadline_ms, 1500);
	CHECK_EQ(cfs_open_opt(&o, CFS_OPT_RETRIES, "3", msg, sizeof(msg)), 1);
	CHECK_EQ(o.fetch.retries, 3);
	CHECK_EQ(cfs_open_opt(&o, CFS_OPT_MAX_INFLIGHT, "8", msg, sizeof(msg)), 1);
	CHECK_EQ(o.fetch.max_inflight, 8);
	CHECK_EQ(cfs_open_opt(&o, CFS_OPT_INSECURE, NULL, msg, sizeof(msg)), 1);
	CHECK(o.fetch.insecure);
	CHECK_EQ(cfs_open_opt(&o, CFS_OPT_CA_FILE, "ca.pem", msg, sizeof(msg)), 1);
	CHECK_EQ(cfs_open_opt(&o, CFS_OPT_TRUST, "keys", msg, sizeof(msg)), 1);
	CHECK(o.ca_file && !strcmp(o.ca_file, "ca.pem") && o.trust && !strcmp(o.trust, "keys"));
	CHECK_EQ(cfs_open_opt(&o, 'x', "whatever", msg, sizeof(msg)), 0);

	CHECK_EQ(cfs_open_opt(&o, CFS_OPT_RETRIES, "0", msg, sizeof(msg)), -EINVAL);
	CHECK(!strcmp(msg, "--retries: expected 1..100: '0'"), "message: %s", msg);
	CHECK_EQ(o.fetch.retries, 3);
	CHECK_EQ(cfs_open_opt(&o, CFS_OPT_DEADLINE, "86400001", msg, sizeof(msg)), -EINVAL);
	CHECK_EQ(cfs_open_opt(&o, CFS_OPT_CACHE_SIZE, "10X", msg, sizeof(msg)), -EINVAL);
	CHECK(!strcmp(msg, "--cache-size: invalid size '10X'"), "message: %s", msg);
	CHECK_EQ(cfs_open_opt(&o, CFS_OPT_CACHE, "", msg, sizeof(msg)), -EINVAL);
	cfs_open_opts_release(&o);
	CHECK(!o.cache_dir && !o.trust && !o.ca_file);
	cfs_open_opts_release(NULL);
}

static void test_kv_options(void)
{
	struct cfs_open_opts o;
	char msg[256] = "";
	const char *s;

	printf("cfs_open_kv: the KEY=VALUE form, and lists of it\n");
	cfs_open_opts_init(&o);
	s = "deadline=250,rest";
	CHECK_EQ(cfs_open_kv(&o, s, strlen("deadline=250"), msg, sizeof(msg)), 1);
	CHECK_EQ(o.fetch.deadline_ms, 250);
	CHECK_EQ(cfs_open_kv(&o, "cache=/x/y", 10, msg, sizeof(msg)), 1);
	CHECK(o.cache_dir && !strcmp(o.cache_dir, "/x/y"));
	CHECK_EQ(cfs_open_kv(&o, "allow_other", 11, msg, sizeof(msg)), 0);
	CHECK_EQ(cfs_open_kv(&o, "cachex=1", 8, msg, sizeof(msg)), 0);
	CHECK_EQ(cfs_open_kv(&o, "insecure=1", 10, msg, sizeof(msg)), -EINVAL);
	CHECK_EQ(cfs_open_kv(&o, "retries=", 8, msg, sizeof(msg)), -EINVAL);
	CHECK(!strcmp(msg, "-o retries: expected 1..100: ''"), "message: %s", msg);
	CHECK_EQ(cfs_open_kv(&o, "cache", 5, msg, sizeof(msg)), -EINVAL);

	CHECK_EQ(cfs_open_kv_list(&o, "retries=2,,insecure,mem_cache=1M,trust=/k", msg,
				  sizeof(msg)), 0);
	CHECK(o.fetch.retries == 2 && o.fetch.insecure && o.mem_cache == 1u << 20 &&
	      o.trust && !strcmp(o.trust, "/k"));
	CHECK_EQ(cfs_open_kv_list(&o, NULL, msg, sizeof(msg)), 0);
	CHECK_EQ(cfs_open_kv_list(&o, "", msg, sizeof(msg)), 0);
	CHECK_EQ(cfs_open_kv_list(&o, "retries=2,bogus=1", msg, sizeof(msg)), -EINVAL);
	CHECK(!strcmp(msg, "unknown option 'bogus=1'"), "message: %s", msg);
	cfs_open_opts_release(&o);
}

static void test_open_messages(const char *dir)
{
	struct cfs_open_opts o;
	struct cfs_opened op;
	struct cfs_store *st;
	char store[512], want[1024], msg[512] = "";
	cfs_digest d;

	printf("cfs_open_image: one line for each way it fails, nothing left open\n");
	snprintf(store, sizeof(store), "%s/store", dir);
	cfs_open_opts_init(&o);
	CHECK_EQ(cfs_open_image(&o, store, "app", NULL, &op, msg, sizeof(msg)), -ENOENT);
	snprintf(want, sizeof(want), "store %s: %s", store, strerror(ENOENT));
	CHECK(!strcmp(msg, want), "message: %s", msg);
	CHECK(!op.store && !op.cache && !op.img);

	CHECK_EQ(cfs_open_store(&o, store, CFS_STORE_CREATE, &st, msg, sizeof(msg)), 0);
	cfs_store_free(st);
	CHECK_EQ(cfs_open_image(&o, store, "app", NULL, &op, msg, sizeof(msg)), -ENOENT);
	snprintf(want, sizeof(want), "image 'app' not found in store %s", store);
	CHECK(!strcmp(msg, want), "message: %s", msg);
	CHECK_EQ(cfs_open_image(&o, store, "a/../b", NULL, &op, msg, sizeof(msg)), -EINVAL);
	CHECK(strstr(msg, "invalid image name 'a/../b'"), "message: %s", msg);

	/* A tag naming an index the store lacks. */
	memset(&d, 0xab, sizeof(d));
	CHECK_EQ(cfs_store_open(store, 0, &st), 0);
	CHECK_EQ(cfs_store_tag_set(st, "app", &d), 0);
	cfs_store_free(st);
	CHECK_EQ(cfs_open_image(&o, store, "app", NULL, &op, msg, sizeof(msg)), -ENOENT);
	CHECK(strstr(msg, "image 'app': the tag names sha256:abab"), "message: %s", msg);

	/* --trust: a key file that is not there fails before any tag is read. */
	CHECK_EQ(cfs_open_opt(&o, CFS_OPT_TRUST, "/nonexistent/key.pem", msg, sizeof(msg)), 1);
	CHECK_EQ(cfs_open_image(&o, store, "app", NULL, &op, msg, sizeof(msg)), -ENOENT);
	CHECK(!strcmp(msg, "--trust /nonexistent/key.pem: No such file or directory"),
	      "message: %s", msg);
	cfs_open_opts_release(&o);
}

int main(void)
{
	char dir[64];

	cfs_test_mkdtemp(dir, sizeof(dir), "open");
	test_long_options();
	test_kv_options();
	test_open_messages(dir);
	cfs_test_rmtree(dir);
	return cfs_test_done("test-open");
}
