/* SPDX-License-Identifier: MIT */
/* test-cache: memory LRU, disk tier (reuse, corruption, bound, write
 * failures), single flight and error propagation of the chunk cache, and
 * one directory shared by several caches and processes; disk writes
 * through io_uring, or synchronous when run with CFS_NO_IO_URING=1 (meson
 * runs it both ways), a burst of writes landing, and one load per chunk
 * among processes sharing a directory, whose holder may die or hang. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"
#include "uring.h"
#include "util.h"
#include "test.h"

#define CH (64u << 10)
#define HDR 32u /* the trailer */

static char base[64];
/* Whether disk writes should go through io_uring in this run. */
static bool want_uring;

/* Chunk i: a digest with random-looking leading bytes and i in its last
 * four, content a pattern derived from i.  The cache never verifies
 * digests (the load callback does), so these need not be real hashes. */
struct loader {
	atomic_uint loads;
	unsigned delay_ms;
	int fail; /* returned by every load while set */
	bool fast; /* memset for benchmarks: content_ok() fails */
};

static void chunk_digest(unsigned i, cfs_digest *d)
{
	uint64_t x = i;

	for (int k = 0; k < 3; k++) {
		uint64_t z = (x += 0x9e3779b97f4a7c15ull);

		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
		z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
		z ^= z >> 31;
		memcpy(d->b + 8 * k, &z, 8);
	}
	memset(d->b + 24, 0, 4);
	memcpy(d->b + 28, &i, 4);
}

static uint8_t pattern(unsigned i, size_t off)
{
	return (uint8_t)(i * 131u + off * 7u + (off >> 9));
}

/* Memory or file handle alike, through cfs_buf_read(). */
static bool content_ok(const struct cfs_buf *b, unsigned i, size_t len)
{
	uint8_t *p;
	bool ok = true;

	if (cfs_buf_len(b) != len)
		return false;
	p = malloc(len ? len : 1);
	if (!p || cfs_buf_read(b, p, len, 0) < 0) {
		free(p);
		return false;
	}
	for (size_t k = 0; k < len && ok; k++)
		ok = p[k] == pattern(i, k);
	free(p);
	return ok;
}

static int load_fn(void *ctx, const cfs_digest *d, uint32_t raw_size, uint8_t *dst)
{
	struct loader *l = ctx;
	unsigned i;

	atomic_fetch_add(&l->loads, 1);
	if (l->delay_ms) {
		struct timespec ts = { 0, (long)l->delay_ms * 1000000L };

		nanosleep(&ts, NULL);
	}
	if (l->fail)
		return l->fail;
	memcpy(&i, d->b + 28, 4);
	if (l->fast) {
		memset(dst, (int)i, raw_size);
		return 0;
	}
	for (size_t k = 0; k < raw_size; k++)
		dst[k] = pattern(i, k);
	return 0;
}

/* Gets chunk i and checks its content; returns the reference or NULL. */
static struct cfs_buf *get(struct cfs_cache *c, struct loader *l, unsigned i, uint32_t len)
{
	struct cfs_buf *b = NULL;
	cfs_digest d;
	int ret;

	chunk_digest(i, &d);
	ret = cfs_cache_get(c, &d, len, load_fn, l, &b);
	CHECK(ret == 0, "get chunk %u: %d", i, ret);
	if (ret < 0)
		return NULL;
	CHECK(content_ok(b, i, len), "content of chunk %u", i);
	return b;
}

/* A get whose content is not checked (the fast loader's). */
static void get_fast(struct cfs_cache *c, struct loader *l, unsigned i, uint32_t len)
{
	struct cfs_buf *b = NULL;
	cfs_digest d;

	chunk_digest(i, &d);
	CHECK(cfs_cache_get(c, &d, len, load_fn, l, &b) == 0, "get chunk %u", i);
	cfs_buf_unref(b);
}

static void get_put(struct cfs_cache *c, struct loader *l, unsigned i, uint32_t len)
{
	cfs_buf_unref(get(c, l, i, len));
}

static void entry_path(const char *dir, unsigned i, char *out, size_t size)
{
	char hex[CFS_DIGEST_HEX_LEN + 1];
	cfs_digest d;

	chunk_digest(i, &d);
	cfs_digest_hex(&d, hex);
	snprintf(out, size, "%s/%.2s/%s", dir, hex, hex);
}

/* Bytes of the regular files under dir, one level of fan-out. */
static uint64_t dir_bytes(const char *dir, unsigned *files)
{
	uint64_t sum = 0;
	struct dirent *de, *fe;
	DIR *d = opendir(dir);

	*files = 0;
	while (d && (de = readdir(d))) {
		char sub[512];
		DIR *s;

		if (de->d_name[0] == '.')
			continue;
		snprintf(sub, sizeof(sub), "%s/%s", dir, de->d_name);
		s = opendir(sub);
		while (s && (fe = readdir(s))) {
			char p[1024];
			struct stat st;

			snprintf(p, sizeof(p), "%s/%s", sub, fe->d_name);
			if (fe->d_name[0] != '.' && !stat(p, &st) && S_ISREG(st.st_mode)) {
				sum += (uint64_t)st.st_size;
				(*files)++;
			}
		}
		if (s)
			closedir(s);
	}
	if (d)
		closedir(d);
	return sum;
}

static struct cfs_cache *cache_new(const char *dir, uint64_t mem_max, uint64_t disk_max)
{
	struct cfs_cache_opts o = { .dir = dir, .mem_max = mem_max, .disk_max = disk_max };
	struct cfs_cache *c = NULL;
	int ret = cfs_cache_new(&o, &c);

	struct cfs_cache_stats s;

	if (ret < 0) {
		fprintf(stderr, "FAIL cfs_cache_new(%s): %d\n", dir ? dir : "memory", ret);
		exit(1);
	}
	cfs_cache_stats_get(c, &s);
	CHECK_EQ(s.uring, dir && want_uring);
	return c;
}

static void test_memory(void)
{
	struct loader l = { 0 };
	struct cfs_cache *c = cache_new(NULL, 3 * CH, 0);
	struct cfs_cache_stats s;
	struct cfs_buf *a, *b, *held;
	cfs_digest d;

	printf("memory: a second get is a hit on the same buffer\n");
	a = get(c, &l, 0, CH);
	b = get(c, &l, 0, CH);
	CHECK(a && a == b && l.loads == 1, "loads %u", l.loads);
	cfs_cache_stats_get(c, &s);
	CHECK(s.mem_hits == 1 && s.misses == 1 && s.mem_bytes == CH, "stats");
	cfs_buf_unref(a);
	cfs_buf_unref(b);
	cfs_buf_unref(NULL);

	printf("memory: a hit with another size is -EUCLEAN\n");
	chunk_digest(0, &d);
	CHECK(cfs_cache_get(c, &d, CH - 1, load_fn, &l, &b) == -EUCLEAN, "size mismatch");

	printf("memory: LRU eviction keeps referenced buffers alive\n");
	held = get(c, &l, 0, CH);
	for (unsigned i = 1; i <= 4; i++)
		get_put(c, &l, i, CH);
	cfs_cache_stats_get(c, &s);
	CHECK(s.evictions >= 2 && s.mem_bytes <= 3 * CH, "evictions %lu mem %lu",
	      (unsigned long)s.evictions, (unsigned long)s.mem_bytes);
	CHECK(held && content_ok(held, 0, CH), "evicted buffer still readable");
	cfs_buf_unref(held);
	l.loads = 0;
	get_put(c, &l, 0, CH);
	CHECK(l.loads == 1, "evicted chunk not reloaded");

	printf("memory: a hit makes an entry most recently used\n");
	get_put(c, &l, 1, CH);
	get_put(c, &l, 2, CH);
	get_put(c, &l, 3, CH);   /* 1, 2, 3 cached; 1 oldest */
	get_put(c, &l, 1, CH);   /* 2 oldest now */
	get_put(c, &l, 4, CH);   /* evicts 2 */
	l.loads = 0;
	get_put(c, &l, 1, CH);
	CHECK(l.loads == 0, "touched entry evicted");
	get_put(c, &l, 2, CH);
	CHECK(l.loads == 1, "oldest entry kept");
	cfs_cache_free(c);

	printf("memory: thousands of entries (table growth)\n");
	c = cache_new(NULL, 0, 0);
	for (unsigned i = 0; i < 5000; i++)
		get_put(c, &l, i, 16);
	l.loads = 0;
	for (unsigned i = 0; i < 5000; i++)
		get_put(c, &l, i, 16);
	CHECK(l.loads == 0, "%u reloads", l.loads);
	cfs_cache_free(c);
	cfs_cache_free(NULL);
}

static void test_disk(void)
{
	struct loader l = { 0 };
	struct cfs_cache_stats s;
	struct cfs_cache *c;
	char dir[128], p[300], tmp_old[400], tmp_new[400];
	struct timespec old[2] = { { time(NULL) - 3600, 0 }, { time(NULL) - 3600, 0 } };
	unsigned files;
	int fd;

	snprintf(dir, sizeof(dir), "%s/disk/sub", base);
	printf("disk: entries survive a new cache instance\n");
	c = cache_new(dir, 0, 0);
	for (unsigned i = 0; i < 3; i++)
		get_put(c, &l, i, CH);
	cfs_cache_stats_get(c, &s);
	CHECK(s.disk_bytes == 3 * (CH + HDR), "disk bytes %lu", (unsigned long)s.disk_bytes);
	cfs_cache_free(c);
	CHECK(dir_bytes(dir, &files) == 3 * (CH + HDR) && files == 3, "%u files", files);

	/* A stale temporary is deleted at start, a fresh one left alone. */
	entry_path(dir, 0, p, sizeof(p));
	snprintf(tmp_old, sizeof(tmp_old), "%s.tmp.old", p);
	snprintf(tmp_new, sizeof(tmp_new), "%s.tmp.new", p);
	fd = open(tmp_old, O_CREAT | O_WRONLY, 0644);
	close(fd);
	utimensat(AT_FDCWD, tmp_old, old, 0);
	fd = open(tmp_new, O_CREAT | O_WRONLY, 0644);
	close(fd);

	l.loads = 0;
	c = cache_new(dir, 0, 0);
	cfs_cache_stats_get(c, &s);
	CHECK(s.disk_bytes == 3 * (CH + HDR), "disk bytes at start %lu", (unsigned long)s.disk_bytes);
	get_put(c, &l, 0, CH);
	cfs_cache_stats_get(c, &s);
	CHECK(l.loads == 0 && s.disk_hits == 1, "disk hit: loads %u", l.loads);
	printf("disk: stale temporaries are removed at start\n");
	CHECK(access(tmp_old, F_OK) < 0, "stale temporary left");
	CHECK(access(tmp_new, F_OK) == 0, "fresh temporary removed");
	unlink(tmp_new);

	printf("disk: a flipped byte is detected, counted and reloaded\n");
	entry_path(dir, 1, p, sizeof(p));
	fd = open(p, O_RDWR);
	CHECK(fd >= 0 && pwrite(fd, "\xff", 1, 1000) == 1, "corrupt %s", p);
	close(fd);
	get_put(c, &l, 1, CH);
	cfs_cache_stats_get(c, &s);
	CHECK(s.disk_bad == 1 && l.loads == 1, "bad %lu loads %u", (unsigned long)s.disk_bad, l.loads);

	printf("disk: a truncated entry likewise\n");
	entry_path(dir, 2, p, sizeof(p));
	CHECK(truncate(p, CH / 2) == 0, "truncate");
	get_put(c, &l, 2, CH);
	cfs_cache_stats_get(c, &s);
	CHECK(s.disk_bad == 2 && l.loads == 2, "bad %lu loads %u", (unsigned long)s.disk_bad, l.loads);

	printf("disk: a garbage trailer likewise\n");
	entry_path(dir, 0, p, sizeof(p));
	fd = open(p, O_RDWR);
	CHECK(fd >= 0 && pwrite(fd, "XX", 2, CH) == 2, "corrupt trailer");
	close(fd);
	cfs_cache_free(c);
	c = cache_new(dir, 0, 0);
	get_put(c, &l, 0, CH);
	cfs_cache_stats_get(c, &s);
	CHECK(s.disk_bad == 1 && l.loads == 3, "bad %lu loads %u", (unsigned long)s.disk_bad, l.loads);
	cfs_cache_free(c);

	printf("disk: reloaded entries were rewritten\n");
	l.loads = 0;
	c = cache_new(dir, 0, 0);
	for (unsigned i = 0; i < 3; i++)
		get_put(c, &l, i, CH);
	cfs_cache_stats_get(c, &s);
	CHECK(l.loads == 0 && s.disk_hits == 3 && s.disk_bad == 0, "loads %u", l.loads);
	cfs_cache_free(c);

	/* Content is fixed by the digest: when the verified load has another
	 * size than the entry's header, the header was the wrong one. */
	printf("disk: an entry of another size than the verified load is replaced\n");
	c = cache_new(dir, 0, 0);
	get_put(c, &l, 0, CH / 2);
	cfs_cache_stats_get(c, &s);
	CHECK(l.loads == 1 && s.disk_bad == 1, "loads %u bad %lu", l.loads,
	      (unsigned long)s.disk_bad);
	cfs_cache_free(c);
	c = cache_new(dir, 0, 0);
	get_put(c, &l, 0, CH / 2);
	cfs_cache_stats_get(c, &s);
	CHECK(l.loads == 1 && s.disk_hits == 1, "loads %u", l.loads);
	cfs_cache_free(c);
}

/* The page cache is the memory tier: a written chunk is served from its
 * open file, verified once, and a file changed under the cache is caught
 * by the identity check on the next hit. */
static void test_handles(void)
{
	char dir[128], p[256];
	struct loader l = { 0 };
	struct cfs_cache_stats s;
	struct cfs_cache *c;
	struct cfs_buf *a, *b;
	uint8_t x[16];
	bool sealed;
	int fd;

	snprintf(dir, sizeof(dir), "%s/handles", base);
	c = cache_new(dir, 0, 0);

	printf("handles: a loaded chunk leaves memory once its file is written\n");
	a = get(c, &l, 0, CH);
	CHECK(a && cfs_buf_fd(a) < 0 && cfs_buf_data(a), "a miss is a memory handle");
	cfs_buf_unref(a);
	cfs_cache_flush(c);
	cfs_cache_stats_get(c, &s);
	CHECK(s.mem_bytes == 0, "mem_bytes %lu after the write", (unsigned long)s.mem_bytes);

	printf("handles: then a file handle, trusted without hashing (this cache wrote it)\n");
	a = get(c, &l, 0, CH);
	CHECK(a && cfs_buf_fd(a) >= 0 && !cfs_buf_data(a), "a file handle");
	cfs_cache_stats_get(c, &s);
	CHECK(s.disk_hits == 1 && s.verifies == 0 && s.files_open == 1 && l.loads == 1,
	      "disk_hits %lu verifies %lu files %lu loads %u", (unsigned long)s.disk_hits,
	      (unsigned long)s.verifies, (unsigned long)s.files_open, l.loads);
	cfs_buf_willneed(a);

	printf("handles: a second get is a file hit on the same handle, nothing hashed\n");
	b = get(c, &l, 0, CH);
	cfs_cache_stats_get(c, &s);
	CHECK(b == a && s.file_hits == 1 && s.verifies == 0, "file_hits %lu verifies %lu",
	      (unsigned long)s.file_hits, (unsigned long)s.verifies);
	cfs_buf_unref(b);
	CHECK(cfs_buf_read(a, x, sizeof(x), CH - 8) == -EINVAL, "read past the content");
	cfs_buf_unref(a);
	cfs_cache_free(c);

	printf("handles: another cache trusts a sealed entry without hashing\n");
	entry_path(dir, 0, p, sizeof(p));
	sealed = getxattr(p, "user.cfs.seal", x, sizeof(x)) == 8;
	if (!sealed)
		printf("   (no user xattrs here: %s; first-seen entries are hashed)\n",
		       strerror(errno));
	c = cache_new(dir, 0, 0);
	get_put(c, &l, 0, CH);
	get_put(c, &l, 0, CH);
	cfs_cache_stats_get(c, &s);
	CHECK(s.verifies == !sealed && s.file_hits == 1 && l.loads == 1, "verifies %lu loads %u",
	      (unsigned long)s.verifies, l.loads);
	cfs_cache_free(c);

	printf("handles: an unsealed entry is hashed once, sealed, then trusted\n");
	entry_path(dir, 0, p, sizeof(p));
	if (removexattr(p, "user.cfs.seal") < 0)
		printf("   (no seal to remove: %s)\n", strerror(errno));
	c = cache_new(dir, 0, 0);
	get_put(c, &l, 0, CH);
	cfs_cache_stats_get(c, &s);
	CHECK(s.verifies == 1 && l.loads == 1, "verifies %lu loads %u", (unsigned long)s.verifies,
	      l.loads);
	cfs_cache_free(c);
	c = cache_new(dir, 0, 0);
	get_put(c, &l, 0, CH);
	cfs_cache_stats_get(c, &s);
	CHECK(s.verifies == !sealed && l.loads == 1, "verifies %lu after sealing",
	      (unsigned long)s.verifies);

	printf("handles: a byte written into a sealed entry while unused: hashed, reloaded\n");
	cfs_cache_free(c);
	fd = open(p, O_RDWR);
	CHECK(fd >= 0 && pwrite(fd, "\xfe", 1, 200) == 1, "corrupt %s", p);
	close(fd);
	c = cache_new(dir, 0, 0);
	get_put(c, &l, 0, CH);
	cfs_cache_stats_get(c, &s);
	CHECK(s.verifies == 1 && s.disk_bad == 1 && l.loads == 2, "verifies %lu bad %lu loads %u",
	      (unsigned long)s.verifies, (unsigned long)s.disk_bad, l.loads);
	cfs_cache_flush(c);
	get_put(c, &l, 0, CH);

	printf("handles: a byte written into an open entry: caught at the next hit, reloaded\n");
	entry_path(dir, 0, p, sizeof(p));
	fd = open(p, O_RDWR);
	CHECK(fd >= 0 && pwrite(fd, "\xff", 1, 100) == 1, "corrupt %s", p);
	close(fd);
	get_put(c, &l, 0, CH); /* content_ok checks every byte */
	cfs_cache_stats_get(c, &s);
	CHECK(s.stale == 1 && s.disk_bad == 2 && l.loads == 3, "stale %lu bad %lu loads %u",
	      (unsigned long)s.stale, (unsigned long)s.disk_bad, l.loads);
	cfs_cache_flush(c);

	printf("handles: an entry truncated while a reader holds it: -ESTALE, then reloaded\n");
	a = get(c, &l, 0, CH);
	CHECK(a && cfs_buf_fd(a) >= 0, "a file handle again");
	entry_path(dir, 0, p, sizeof(p));
	CHECK(truncate(p, CH / 2) == 0, "truncate");
	CHECK(a && cfs_buf_read(a, x, sizeof(x), CH - 100) == -ESTALE, "short read not -ESTALE");
	cfs_cache_invalidate(c, a);
	cfs_buf_unref(a);
	get_put(c, &l, 0, CH);
	cfs_cache_stats_get(c, &s);
	CHECK(l.loads == 4, "loads %u after the truncation", l.loads);

	printf("handles: a touch (mtime only) is rechecked by hash and kept\n");
	cfs_cache_flush(c);
	get_put(c, &l, 0, CH);
	CHECK(utimensat(AT_FDCWD, p, NULL, 0) == 0, "touch");
	cfs_cache_stats_get(c, &s);
	{
		uint64_t v = s.verifies;

		get_put(c, &l, 0, CH);
		cfs_cache_stats_get(c, &s);
		CHECK(s.verifies == v + 1 && l.loads == 4, "verifies %lu loads %u",
		      (unsigned long)(s.verifies - v), l.loads);
	}
	cfs_cache_free(c);

	printf("handles: at most max_files files stay open\n");
	{
		struct cfs_cache_opts o = { .dir = dir, .max_files = 16 };

		CHECK(cfs_cache_new(&o, &c) == 0, "cache");
		for (unsigned i = 0; i < 40; i++)
			get_put(c, &l, 100 + i, 4096);
		cfs_cache_flush(c);
		for (unsigned i = 0; i < 40; i++)
			get_put(c, &l, 100 + i, 4096);
		cfs_cache_stats_get(c, &s);
		CHECK(s.files_open <= 16 && s.evictions >= 24, "files %lu evictions %lu",
		      (unsigned long)s.files_open, (unsigned long)s.evictions);
		cfs_cache_free(c);
	}
}

static void test_disk_bound(void)
{
	struct loader l = { 0 };
	uint64_t max = 3 * (CH + HDR) + 100;
	struct cfs_cache_stats s;
	struct cfs_cache *c;
	char dir[128];
	unsigned files;
	uint64_t bytes;

	printf("disk bound: 10 chunks under a 3-chunk disk_max\n");
	snprintf(dir, sizeof(dir), "%s/bound", base);
	c = cache_new(dir, CH, max);
	for (unsigned i = 0; i < 10; i++)
		get_put(c, &l, i, CH);
	cfs_cache_flush(c);
	bytes = dir_bytes(dir, &files);
	cfs_cache_stats_get(c, &s);
	CHECK(bytes <= max && files == 3, "%lu bytes in %u files", (unsigned long)bytes, files);
	CHECK(s.disk_bytes == bytes, "disk_bytes %lu", (unsigned long)s.disk_bytes);
	/* The newest survive. */
	l.loads = 0;
	get_put(c, &l, 9, CH);
	get_put(c, &l, 8, CH);
	cfs_cache_stats_get(c, &s);
	CHECK(l.loads == 0, "newest entries evicted: loads %u, disk hits %lu, %lu bytes, bad %lu, mem hits %lu",
	      l.loads, (unsigned long)s.disk_hits, (unsigned long)s.disk_bytes, (unsigned long)s.disk_bad, (unsigned long)s.mem_hits);

	cfs_cache_free(c);

	printf("disk bound: a smaller disk_max at start evicts the oldest\n");
	c = cache_new(dir, CH, 2 * (CH + HDR));
	bytes = dir_bytes(dir, &files);
	CHECK(bytes <= 2 * (CH + HDR) && files == 2, "%lu bytes in %u files",
	      (unsigned long)bytes, files);
	cfs_cache_free(c);
}

/* With io_uring the last writes ask for a pass that no write or flush
 * follows: cfs_cache_tick() runs it, without waiting on the ring. */
static void test_tick(void)
{
	struct loader l = { 0 };
	uint64_t max = 3 * (CH + HDR) + 100, bytes = 0, prev;
	struct cfs_cache *c;
	char dir[128];
	unsigned files = 0;

	printf("disk bound: cfs_cache_tick runs the pass the last ring writes asked for\n");
	snprintf(dir, sizeof(dir), "%s/tick", base);
	c = cache_new(dir, CH, max);
	for (unsigned i = 0; i < 10; i++)
		get_put(c, &l, i, CH);
	/* Until the ring's writes have landed (no flush: it runs the pass):
	 * some bytes there, unchanged for 50 ms; a loaded machine may start
	 * the first write late. */
	for (int i = 0, still = 0; i < 500 && still < 5; i++) {
		prev = bytes;
		bytes = dir_bytes(dir, &files);
		still = bytes && bytes == prev ? still + 1 : 0;
		usleep(10000);
	}
	/* Over the bound here unless a write's own pass came last (timing):
	 * either way the tick must leave it within. */
	printf("   before the tick: %lu bytes in %u files\n", (unsigned long)bytes, files);
	cfs_cache_tick(c);
	bytes = dir_bytes(dir, &files);
	CHECK(bytes <= max && files == 3, "after the tick: %lu bytes in %u files",
	      (unsigned long)bytes, files);
	cfs_cache_free(c);
}

struct thread_arg {
	struct cfs_cache *c;
	struct loader *l;
	pthread_barrier_t *bar;
	unsigned chunk;
	struct cfs_buf *b;
	int ret;
};

static void *flight_thread(void *p)
{
	struct thread_arg *a = p;
	cfs_digest d;

	chunk_digest(a->chunk, &d);
	pthread_barrier_wait(a->bar);
	a->ret = cfs_cache_get(a->c, &d, CH, load_fn, a->l, &a->b);
	return NULL;
}

static void run_flight(struct cfs_cache *c, struct loader *l, unsigned chunk,
		       struct thread_arg *a, unsigned n)
{
	pthread_barrier_t bar;
	pthread_t t[16];

	pthread_barrier_init(&bar, NULL, n);
	for (unsigned i = 0; i < n; i++) {
		a[i] = (struct thread_arg){ c, l, &bar, chunk, NULL, 1 };
		pthread_create(&t[i], NULL, flight_thread, &a[i]);
	}
	for (unsigned i = 0; i < n; i++)
		pthread_join(t[i], NULL);
	pthread_barrier_destroy(&bar);
}

static void test_single_flight(void)
{
	struct loader l = { .delay_ms = 50 };
	struct cfs_cache *c = cache_new(NULL, 0, 0);
	struct cfs_cache_stats s;
	struct thread_arg a[8];
	unsigned ok = 0, eio = 0;

	printf("single flight: 8 threads, one load\n");
	run_flight(c, &l, 7, a, 8);
	for (unsigned i = 0; i < 8; i++) {
		ok += a[i].ret == 0 && a[i].b == a[0].b && content_ok(a[i].b, 7, CH);
		cfs_buf_unref(a[i].b);
	}
	CHECK(ok == 8 && l.loads == 1, "%u ok, %u loads", ok, l.loads);

	printf("single flight: a load error reaches every waiter, then a retry\n");
	l.loads = 0;
	l.fail = -EIO;
	run_flight(c, &l, 8, a, 8);
	for (unsigned i = 0; i < 8; i++)
		eio += a[i].ret == -EIO;
	CHECK(eio == 8 && l.loads == 1, "%u EIO, %u loads", eio, l.loads);
	l.fail = 0;
	l.delay_ms = 0;
	get_put(c, &l, 8, CH);
	cfs_cache_stats_get(c, &s);
	CHECK(l.loads == 2 && s.load_errors == 1, "loads %u errors %lu", l.loads,
	      (unsigned long)s.load_errors);
	cfs_cache_free(c);
}

struct stress_arg {
	struct cfs_cache *c;
	struct loader *l;
	unsigned seed;
	unsigned bad;
};

static void *stress_thread(void *p)
{
	struct stress_arg *a = p;

	for (unsigned k = 0; k < 1000; k++) {
		struct cfs_buf *b = NULL;
		unsigned i = (a->seed = a->seed * 1103515245u + 12345u) >> 16 & 15;
		cfs_digest d;

		chunk_digest(i, &d);
		if (cfs_cache_get(a->c, &d, 4096, load_fn, a->l, &b) < 0 || !content_ok(b, i, 4096))
			a->bad++;
		cfs_buf_unref(b);
	}
	return NULL;
}

static void test_stress(void)
{
	struct loader l = { 0 };
	struct stress_arg a[8];
	pthread_t t[8];
	char dir[128];
	struct cfs_cache *c;
	unsigned bad = 0;

	printf("stress: 8 threads, 16 chunks, memory for 4, disk for 8\n");
	snprintf(dir, sizeof(dir), "%s/stress", base);
	c = cache_new(dir, 4 * 4096, 8 * (4096 + HDR));
	for (unsigned i = 0; i < 8; i++) {
		a[i] = (struct stress_arg){ c, &l, i + 1, 0 };
		pthread_create(&t[i], NULL, stress_thread, &a[i]);
	}
	for (unsigned i = 0; i < 8; i++) {
		pthread_join(t[i], NULL);
		bad += a[i].bad;
	}
	CHECK(bad == 0, "%u bad gets", bad);
	cfs_cache_free(c);
}

static void test_unwritable(void)
{
	struct loader l = { 0 };
	struct cfs_cache_stats s;
	struct cfs_cache *c;
	char dir[128];
	uint32_t len = 100u << 10;

	snprintf(dir, sizeof(dir), "%s/tiny", base);
	mkdir(dir, 0755);
	if (geteuid() != 0 || mount("tmpfs", dir, "tmpfs", 0, "size=64k") < 0) {
		printf("unwritable: SKIPPED (needs root and mount permission)\n");
		return;
	}
	printf("unwritable: a full cache directory keeps serving from memory\n");
	c = cache_new(dir, 0, 0);
	for (unsigned i = 0; i < 3; i++)
		get_put(c, &l, i, len);
	l.loads = 0;
	for (unsigned i = 0; i < 3; i++)
		get_put(c, &l, i, len);
	cfs_cache_flush(c);
	cfs_cache_stats_get(c, &s);
	CHECK(l.loads == 0 && s.mem_hits == 3, "memory hits %lu", (unsigned long)s.mem_hits);
	CHECK(s.disk_write_errors == 3 && s.disk_bytes == 0, "write errors %lu disk %lu",
	      (unsigned long)s.disk_write_errors, (unsigned long)s.disk_bytes);
	cfs_cache_free(c);
	umount2(dir, MNT_DETACH);
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static bool entry_exists(const char *dir, unsigned i)
{
	char p[300];

	entry_path(dir, i, p, sizeof(p));
	return access(p, F_OK) == 0;
}

/* A thread marked cfs_cache_thread_write_sync() has its entries on disk,
 * whole and trusted by another cache, when its get returns, ring or not. */
static void test_thread_sync(void)
{
	printf("thread-sync: a worker's entries are on disk when its get returns\n");
	struct loader l = { .loads = 0 };
	struct cfs_cache_stats s;
	struct cfs_cache *c, *c2;
	char dir[128], p[300];
	struct stat st;

	snprintf(dir, sizeof(dir), "%s/thread-sync", base);
	c = cache_new(dir, 64u << 20, 1ull << 30);
	cfs_cache_thread_write_sync(true);
	for (unsigned i = 0; i < 8; i++) {
		get_put(c, &l, 900 + i, CH);
		entry_path(dir, 900 + i, p, sizeof(p));
		CHECK(stat(p, &st) == 0 && st.st_size == (off_t)(CH + HDR),
		      "entry %u on disk once its get returned", i);
	}
	cfs_cache_thread_write_sync(false);
	cfs_cache_stats_get(c, &s);
	CHECK_EQ(s.disk_write_errors, 0);
	c2 = cache_new(dir, 64u << 20, 1ull << 30);
	for (unsigned i = 0; i < 8; i++)
		get_put(c2, &l, 900 + i, CH);
	CHECK_EQ(atomic_load(&l.loads), 8u);
	cfs_cache_stats_get(c2, &s);
	CHECK_EQ(s.disk_hits, 8);
	/* Sealed where the filesystem has user xattrs, else hashed. */
	entry_path(dir, 900, p, sizeof(p));
	if (getxattr(p, "user.cfs.seal", NULL, 0) == 8)
		CHECK_EQ(s.verifies, 0);
	cfs_cache_free(c2);
	cfs_cache_free(c);
}

/* While this test holds <dir>/.lock, as another process in a pass would,
 * writes through c neither wait nor pass but leave a mark; once it lets go
 * a pass settles the bound. */
static void check_lock_taken(struct cfs_cache *c, struct loader *l, const char *dir,
			     uint64_t max)
{
	struct cfs_cache_stats s0, s1;
	struct stat st0, st1;
	char lock[200];
	unsigned files;
	uint64_t bytes;
	int fd;

	printf("shared: while another holds the lock, writes neither wait nor pass, "
	       "and leave a mark\n");
	snprintf(lock, sizeof(lock), "%s/.lock", dir);
	fd = open(lock, O_RDWR | O_CLOEXEC);
	CHECK(fd >= 0 && flock(fd, LOCK_EX) == 0 && fstat(fd, &st0) == 0, "lock %s", lock);
	cfs_cache_stats_get(c, &s0);
	get_put(c, l, 20, CH);
	get_put(c, l, 21, CH);
	cfs_cache_flush(c);
	cfs_cache_stats_get(c, &s1);
	/* One mark per pass asked for: with io_uring, two writes completing
	 * close together ask for one. */
	CHECK(fstat(fd, &st1) == 0 && st1.st_size >= st0.st_size + 1 &&
	      st1.st_size <= st0.st_size + 2, "lock file %ld -> %ld",
	      (long)st0.st_size, (long)st1.st_size);
	CHECK(s1.rescans == s0.rescans, "passes %lu -> %lu", (unsigned long)s0.rescans,
	      (unsigned long)s1.rescans);
	flock(fd, LOCK_UN);
	close(fd);
	CHECK(cfs_cache_rescan(c) == 0, "rescan");
	cfs_cache_stats_get(c, &s1);
	CHECK(s1.rescans == s0.rescans + 1, "passes %lu", (unsigned long)s1.rescans);
	bytes = dir_bytes(dir, &files);
	CHECK(bytes <= max, "%lu bytes in %u files", (unsigned long)bytes, files);
}

/* Two caches on one directory, as two processes would have: the bound
 * holds for the directory, and an entry one evicted is a miss for the
 * other.  The sleeps keep mtimes apart (file times are coarse). */
static void test_shared(void)
{
	uint64_t ent = CH + HDR, max = 4 * ent, bytes;
	struct loader l = { 0 };
	struct cfs_cache_stats sa, sb;
	struct cfs_cache *a, *b;
	unsigned files;
	char dir[128];

	printf("shared: two caches, disk_max 4 chunks each, 12 chunks between them\n");
	snprintf(dir, sizeof(dir), "%s/shared", base);
	a = cache_new(dir, CH, max);
	b = cache_new(dir, CH, max);
	for (unsigned i = 0; i < 12; i++) {
		/* a writes 0-3, b 4-7, then they take turns. */
		get_put(i < 4 || (i >= 8 && i % 2) ? a : b, &l, i, CH);
		cfs_cache_flush(a);
		cfs_cache_flush(b);
		bytes = dir_bytes(dir, &files);
		CHECK(bytes <= max, "after chunk %u: %lu bytes in %u files", i,
		      (unsigned long)bytes, files);
		sleep_ms(10);
	}
	bytes = dir_bytes(dir, &files);
	printf("   directory: %lu bytes in %u files (disk_max %lu)\n", (unsigned long)bytes,
	       files, (unsigned long)max);
	CHECK(bytes <= max && files == 4, "%lu bytes in %u files", (unsigned long)bytes, files);
	for (unsigned i = 8; i < 12; i++)
		CHECK(entry_exists(dir, i), "newest chunk %u evicted", i);

	printf("shared: a chunk the other cache evicted is a miss, reloaded\n");
	CHECK(!entry_exists(dir, 0), "chunk 0 still on disk");
	l.loads = 0;
	get_put(a, &l, 0, CH);  /* a wrote it, b evicted it */
	cfs_cache_flush(a);
	CHECK(l.loads == 1, "loads %u", l.loads);
	CHECK(entry_exists(dir, 0), "chunk 0 not written back");
	sleep_ms(10);
	printf("shared: a chunk the other cache wrote is a disk hit\n");
	l.loads = 0;
	get_put(a, &l, 10, CH); /* b wrote it */
	CHECK(l.loads == 0, "loads %u", l.loads);
	sleep_ms(10);

	printf("shared: both views match the directory after a pass\n");
	CHECK(cfs_cache_rescan(a) == 0 && cfs_cache_rescan(b) == 0, "rescan");
	bytes = dir_bytes(dir, &files);
	cfs_cache_stats_get(a, &sa);
	cfs_cache_stats_get(b, &sb);
	CHECK(sa.disk_bytes == bytes && sb.disk_bytes == bytes, "a %lu b %lu dir %lu",
	      (unsigned long)sa.disk_bytes, (unsigned long)sb.disk_bytes, (unsigned long)bytes);
	CHECK(sa.disk_bad == 0 && sb.disk_bad == 0, "bad entries");
	CHECK(sa.rescans > 0 && sb.rescans > 0, "rescans %lu %lu", (unsigned long)sa.rescans,
	      (unsigned long)sb.rescans);

	printf("shared: every chunk reads back right through either cache\n");
	for (unsigned i = 0; i < 12; i++) {
		get_put(a, &l, i, CH);
		get_put(b, &l, 11 - i, CH);
	}
	cfs_cache_flush(a);
	cfs_cache_flush(b);
	bytes = dir_bytes(dir, &files);
	CHECK(bytes <= max, "%lu bytes in %u files", (unsigned long)bytes, files);

	check_lock_taken(a, &l, dir, max);
	cfs_cache_free(a);
	cfs_cache_free(b);
	CHECK(cfs_cache_rescan(NULL) == -EINVAL, "rescan(NULL)");
}

/* Random gets of chunks [first, first + count) of len bytes, by threads. */
struct mp_arg {
	struct cfs_cache *c;
	struct loader *l;
	uint64_t seed;
	unsigned first, count, len, iters;
	unsigned bad;
};

static void *mp_thread(void *p)
{
	struct mp_arg *a = p;

	for (unsigned k = 0; k < a->iters; k++) {
		unsigned i = a->first + (unsigned)(cfs_test_rand(&a->seed) % a->count);
		struct cfs_buf *b = NULL;
		cfs_digest d;

		chunk_digest(i, &d);
		if (cfs_cache_get(a->c, &d, a->len, load_fn, a->l, &b) < 0 ||
		    !content_ok(b, i, a->len))
			a->bad++;
		cfs_buf_unref(b);
	}
	return NULL;
}

/* Runs nthreads of mp_thread over caches[k % ncaches]; returns bad gets. */
static unsigned mp_run(struct cfs_cache **caches, unsigned ncaches, unsigned nthreads,
		       uint64_t seed, unsigned first, unsigned count, unsigned len, unsigned iters)
{
	struct loader l = { 0 };
	struct mp_arg a[8];
	pthread_t t[8];
	unsigned bad = 0;

	for (unsigned k = 0; k < nthreads; k++) {
		a[k] = (struct mp_arg){ caches[k % ncaches], &l, seed + k, first, count, len,
					iters, 0 };
		pthread_create(&t[k], NULL, mp_thread, &a[k]);
	}
	for (unsigned k = 0; k < nthreads; k++) {
		pthread_join(t[k], NULL);
		bad += a[k].bad;
	}
	return bad;
}

/* Child: its own cache on dir; on each byte from go_fd, writes 12 chunks
 * and answers on done_fd, then 4 threads of random gets.  Exits with its
 * bad gets + bad entries (capped), or 100+ when it could not start. */
static void child_main(const char *dir, uint64_t max, int go_fd, int done_fd)
{
	struct cfs_cache_opts o = { .dir = dir, .mem_max = 2 * 4096, .disk_max = max };
	struct cfs_cache_stats s;
	struct cfs_cache *c = NULL;
	struct loader l = { 0 };
	unsigned bad = 0;
	char go;

	if (read(go_fd, &go, 1) != 1 || cfs_cache_new(&o, &c) < 0)
		_exit(100);
	for (unsigned i = 1000; i < 1012; i++) {
		struct cfs_buf *b = NULL;
		cfs_digest d;

		chunk_digest(i, &d);
		if (cfs_cache_get(c, &d, 4096, load_fn, &l, &b) < 0 || !content_ok(b, i, 4096))
			bad++;
		cfs_buf_unref(b);
		sleep_ms(2);
	}
	cfs_cache_flush(c);
	if (write(done_fd, "d", 1) != 1 || read(go_fd, &go, 1) != 1)
		_exit(101);
	bad += mp_run(&c, 1, 4, 77, 0, 40, 4096, 1500);
	cfs_cache_stats_get(c, &s);
	bad += (unsigned)s.disk_bad;
	cfs_cache_free(c);
	_exit(bad > 99 ? 99 : (int)bad);
}

static int child_wait(pid_t pid)
{
	int st;

	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st))
		return -1;
	return WEXITSTATUS(st);
}

/* Another process, with its own cache, writing and evicting at the same
 * time as two caches of this one. */
static void test_processes(void)
{
	uint64_t ent = 4096 + HDR, max = 4 * ent, bytes;
	struct cfs_cache_stats sa, sb;
	struct cfs_cache *cs[2];
	struct loader l = { 0 };
	unsigned files, bad;
	int go[2], done[2], rc;
	char dir[128], ack;
	pid_t pid;

	snprintf(dir, sizeof(dir), "%s/procs", base);
	mkdir(dir, 0755);
	if (pipe(go) < 0 || pipe(done) < 0) {
		perror("pipe");
		exit(1);
	}
	fflush(stdout);
	pid = fork();
	if (pid < 0) {
		perror("fork");
		exit(1);
	}
	if (pid == 0) {
		close(go[1]);
		close(done[0]);
		child_main(dir, max, go[0], done[1]);
	}
	close(go[0]);
	close(done[1]);

	printf("processes: a child and this process write 12 chunks each, disk_max 4\n");
	cs[0] = cache_new(dir, 2 * 4096, max);
	cs[1] = cache_new(dir, 2 * 4096, max);
	CHECK(write(go[1], "g", 1) == 1, "start the child");
	for (unsigned i = 2000; i < 2012; i++) {
		get_put(cs[i % 2], &l, i, 4096);
		sleep_ms(2);
	}
	cfs_cache_flush(cs[0]);
	cfs_cache_flush(cs[1]);
	CHECK(read(done[0], &ack, 1) == 1, "the child's writes");
	close(done[0]);
	bytes = dir_bytes(dir, &files);
	printf("   directory: %lu bytes in %u files (disk_max %lu)\n", (unsigned long)bytes,
	       files, (unsigned long)max);
	CHECK(bytes <= max, "%lu bytes in %u files", (unsigned long)bytes, files);

	printf("processes: 4 threads here on two caches, 4 in the child, 40 chunks\n");
	CHECK(write(go[1], "g", 1) == 1, "start the child");
	close(go[1]);
	bad = mp_run(cs, 2, 4, 1, 0, 40, 4096, 1500);
	cfs_cache_flush(cs[0]);
	cfs_cache_flush(cs[1]);
	rc = child_wait(pid);
	CHECK(bad == 0, "%u bad gets here", bad);
	CHECK(rc == 0, "child exited %d (bad gets and entries, or 100+: setup failed)", rc);
	cfs_cache_stats_get(cs[0], &sa);
	cfs_cache_stats_get(cs[1], &sb);
	CHECK(sa.disk_bad == 0 && sb.disk_bad == 0, "bad entries %lu %lu",
	      (unsigned long)sa.disk_bad, (unsigned long)sb.disk_bad);
	bytes = dir_bytes(dir, &files);
	printf("   directory after the stress: %lu bytes in %u files; passes %lu + %lu, "
	       "evictions %lu + %lu\n", (unsigned long)bytes, files,
	       (unsigned long)sa.rescans, (unsigned long)sb.rescans,
	       (unsigned long)sa.evictions, (unsigned long)sb.evictions);
	/* A pass gives up after a few rounds while others keep asking; a
	 * pass once everyone is quiet settles it. */
	CHECK(cfs_cache_rescan(cs[0]) == 0, "rescan");
	bytes = dir_bytes(dir, &files);
	CHECK(bytes <= max, "%lu bytes in %u files after a pass", (unsigned long)bytes, files);

	printf("processes: every chunk still reads back right\n");
	for (unsigned i = 0; i < 40; i++)
		get_put(cs[i % 2], &l, i, 4096);
	for (unsigned i = 1000; i < 1012; i++)
		get_put(cs[0], &l, i, 4096);
	cfs_cache_free(cs[0]);
	cfs_cache_free(cs[1]);
}


/* ---- one load per chunk among processes ---- */

static double ms_since(uint64_t t0)
{
	return (double)(cfs_now_ns() - t0) / 1e6;
}

#define XP_FIRST 7000u
#define XP_CHUNKS 24u

/* Shared by the processes of a test (MAP_SHARED). */
struct xp_shared {
	atomic_uint loads[XP_CHUNKS]; /* by chunk, whoever loaded it */
	atomic_uint waits, hits, timeouts; /* the child's cache stats */
};

enum xp_mode { XP_LOAD, XP_DIE, XP_HANG };

/* A slow load counted in shared memory; XP_DIE and XP_HANG tell the
 * parent on note_fd that the load (and so the chunk lock) is under way,
 * then wait for a byte on hold_fd: die by SIGKILL, or carry on. */
struct xp_loader {
	struct xp_shared *sh;
	enum xp_mode mode;
	unsigned delay_ms;
	int note_fd, hold_fd;
};

static int xp_load_fn(void *ctx, const cfs_digest *d, uint32_t raw_size, uint8_t *dst)
{
	struct xp_loader *l = ctx;
	unsigned i;
	char c;

	memcpy(&i, d->b + 28, 4);
	atomic_fetch_add(&l->sh->loads[(i - XP_FIRST) % XP_CHUNKS], 1);
	if (l->mode != XP_LOAD) {
		if (write(l->note_fd, "l", 1) != 1 || read(l->hold_fd, &c, 1) != 1)
			_exit(102);
		if (l->mode == XP_DIE)
			kill(getpid(), SIGKILL);
	}
	sleep_ms(l->delay_ms);
	for (size_t k = 0; k < raw_size; k++)
		dst[k] = pattern(i, k);
	return 0;
}

static struct xp_shared *xp_shared_new(void)
{
	struct xp_shared *sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE,
				    MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	if (sh == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
	memset(sh, 0, sizeof(*sh));
	return sh;
}

static struct cfs_cache *xp_cache(const char *dir, unsigned wait_ms)
{
	struct cfs_cache_opts o = { .dir = dir, .fetch_wait_ms = wait_ms };
	struct cfs_cache *c = NULL;

	return cfs_cache_new(&o, &c) < 0 ? NULL : c;
}

/* The chunk locks' file is empty and owner-only, like entries. */
static bool xp_lock_file_ok(const char *dir)
{
	struct stat st;
	char p[300];

	snprintf(p, sizeof(p), "%s/.fetch.lock", dir);
	if (stat(p, &st) < 0 || (st.st_mode & 07777) != 0600 || st.st_size != 0) {
		fprintf(stderr, "%s: mode %o size %ld\n", p, (unsigned)st.st_mode,
			(long)st.st_size);
		return false;
	}
	return true;
}

struct xp_arg {
	struct cfs_cache *c;
	struct xp_loader *l;
	unsigned start;   /* first chunk of the round */
	unsigned bad;
};

/* Every chunk once, from a thread's own starting point. */
static void *xp_thread(void *p)
{
	struct xp_arg *a = p;

	for (unsigned k = 0; k < XP_CHUNKS; k++) {
		unsigned i = XP_FIRST + (a->start + k) % XP_CHUNKS;
		struct cfs_buf *b = NULL;
		cfs_digest d;

		chunk_digest(i, &d);
		if (cfs_cache_get(a->c, &d, CH, xp_load_fn, a->l, &b) < 0 || !content_ok(b, i, CH))
			a->bad++;
		cfs_buf_unref(b);
	}
	return NULL;
}

/* 4 threads of one process over every chunk, in the same order in every
 * process (the most contention); returns bad gets. */
static unsigned xp_run(struct cfs_cache *c, struct xp_loader *l)
{
	struct xp_arg a[4];
	pthread_t t[4];
	unsigned bad = 0;

	for (unsigned k = 0; k < 4; k++) {
		a[k] = (struct xp_arg){ c, l, k * (XP_CHUNKS / 4), 0 };
		pthread_create(&t[k], NULL, xp_thread, &a[k]);
	}
	for (unsigned k = 0; k < 4; k++) {
		pthread_join(t[k], NULL);
		bad += a[k].bad;
	}
	cfs_cache_flush(c);
	return bad;
}

static pid_t xp_fork(void)
{
	pid_t pid;

	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0) {
		perror("fork");
		exit(1);
	}
	return pid;
}

/* Two processes, 4 threads each, every chunk at once through caches on one
 * directory, each load 50 ms: one load per chunk in all. */
static void test_xproc_once(void)
{
	struct xp_shared *sh = xp_shared_new();
	struct xp_loader l = { sh, XP_LOAD, 50, -1, -1 };
	struct cfs_cache_stats s;
	struct cfs_cache *c;
	unsigned total = 0, once = 0, bad, files;
	int ready[2], go[2], rc;
	char dir[128], x;
	uint64_t t0;
	pid_t pid;

	printf("processes: 2 x 4 threads load %u chunks at once, 50 ms each, through one "
	       "directory\n", XP_CHUNKS);
	snprintf(dir, sizeof(dir), "%s/xproc", base);
	if (pipe(ready) < 0 || pipe(go) < 0) {
		perror("pipe");
		exit(1);
	}
	pid = xp_fork();
	if (pid == 0) {
		struct cfs_cache *cc = xp_cache(dir, 20000);

		if (!cc || write(ready[1], "r", 1) != 1 || read(go[0], &x, 1) != 1)
			_exit(100);
		bad = xp_run(cc, &l);
		cfs_cache_stats_get(cc, &s);
		sh->waits = (unsigned)s.shared_waits;
		sh->hits = (unsigned)s.shared_hits;
		sh->timeouts = (unsigned)s.shared_timeouts;
		bad += (unsigned)(s.disk_bad + s.load_errors);
		cfs_cache_free(cc);
		_exit(bad > 99 ? 99 : (int)bad);
	}
	c = cache_new(dir, 0, 0);
	CHECK(read(ready[0], &x, 1) == 1, "the child's cache");
	CHECK(write(go[1], "g", 1) == 1, "start the child");
	t0 = cfs_now_ns();
	bad = xp_run(c, &l);
	rc = child_wait(pid);
	CHECK(bad == 0, "%u bad gets here", bad);
	CHECK(rc == 0, "child exited %d (bad gets, or 100+: setup failed)", rc);
	for (unsigned k = 0; k < XP_CHUNKS; k++) {
		total += sh->loads[k];
		once += sh->loads[k] == 1;
	}
	cfs_cache_stats_get(c, &s);
	printf("   %u loads of %u chunks in %.0f ms; waited for the other process: here %lu "
	       "(%lu found the entry, %lu timed out), there %u (%u, %u)\n", total, XP_CHUNKS,
	       ms_since(t0), (unsigned long)s.shared_waits, (unsigned long)s.shared_hits,
	       (unsigned long)s.shared_timeouts, sh->waits, sh->hits, sh->timeouts);
	CHECK(total == XP_CHUNKS && once == XP_CHUNKS, "%u loads, %u chunks loaded once",
	      total, once);
	CHECK(s.shared_timeouts == 0 && sh->timeouts == 0, "timeouts %lu %u",
	      (unsigned long)s.shared_timeouts, sh->timeouts);
	CHECK(s.shared_hits + sh->hits > 0, "no process found the other's entry");
	CHECK(s.disk_bad == 0, "bad entries %lu", (unsigned long)s.disk_bad);
	/* Nothing but entries in the fan-out directories. */
	CHECK(dir_bytes(dir, &files) == XP_CHUNKS * (uint64_t)(CH + HDR) && files == XP_CHUNKS,
	      "%u files", files);
	CHECK(xp_lock_file_ok(dir), "the lock file");

	printf("processes: a second round reads every chunk from disk\n");
	memset(sh->loads, 0, sizeof(sh->loads));
	cfs_cache_free(c);
	c = cache_new(dir, 0, 0);
	CHECK(xp_run(c, &l) == 0, "bad gets");
	for (unsigned k = 0; k < XP_CHUNKS; k++)
		CHECK(sh->loads[k] == 0, "chunk %u loaded again", k);
	cfs_cache_free(c);
	munmap(sh, sizeof(*sh));
	close(ready[0]);
	close(ready[1]);
	close(go[0]);
	close(go[1]);
	cfs_test_rmtree(dir);
}

/* The chunk lock's holder is a child whose load never finishes by itself:
 * on a byte from this process it dies by SIGKILL (mode XP_DIE) or carries
 * on (XP_HANG).  Returns its pid once its load has begun. */
static pid_t xp_holder(const char *dir, struct xp_shared *sh, enum xp_mode mode, unsigned chunk,
		       int *hold_w)
{
	int note[2], hold[2];
	pid_t pid;
	char x;

	if (pipe(note) < 0 || pipe(hold) < 0) {
		perror("pipe");
		exit(1);
	}
	pid = xp_fork();
	if (pid == 0) {
		struct xp_loader l = { sh, mode, 0, note[1], hold[0] };
		struct cfs_cache *cc = xp_cache(dir, 20000);
		struct cfs_buf *b = NULL;
		cfs_digest d;
		int bad;

		close(hold[1]);
		if (!cc)
			_exit(100);
		chunk_digest(chunk, &d);
		bad = cfs_cache_get(cc, &d, CH, xp_load_fn, &l, &b) < 0 || !content_ok(b, chunk, CH);
		cfs_buf_unref(b);
		cfs_cache_free(cc);
		_exit(bad);
	}
	close(note[1]);
	close(hold[0]);
	CHECK(read(note[0], &x, 1) == 1, "the holder's load did not begin");
	close(note[0]);
	*hold_w = hold[1];
	return pid;
}

struct xp_get {
	struct cfs_cache *c;
	struct xp_loader *l;
	unsigned chunk;
	int ret;
	double ms;
};

static void *xp_get_thread(void *p)
{
	struct xp_get *g = p;
	struct cfs_buf *b = NULL;
	uint64_t t0 = cfs_now_ns();
	cfs_digest d;

	chunk_digest(g->chunk, &d);
	g->ret = cfs_cache_get(g->c, &d, CH, xp_load_fn, g->l, &b);
	g->ms = ms_since(t0);
	if (!g->ret && !content_ok(b, g->chunk, CH))
		g->ret = -EBADMSG;
	cfs_buf_unref(b);
	return NULL;
}

/* Until c counts n waits for another process, 20 s at most. */
static bool xp_await_wait(struct cfs_cache *c, uint64_t n)
{
	for (unsigned k = 0; k < 2000; k++) {
		struct cfs_cache_stats s;

		cfs_cache_stats_get(c, &s);
		if (s.shared_waits >= n)
			return true;
		sleep_ms(10);
	}
	return false;
}

/* The holder dies while this process waits for it: the kernel lets go of
 * its lock and the wait ends then, not at fetch_wait_ms (10 s here). */
static void test_xproc_dead(void)
{
	struct xp_shared *sh = xp_shared_new();
	struct xp_loader l = { sh, XP_LOAD, 50, -1, -1 };
	struct xp_get g;
	struct cfs_cache_stats s;
	struct cfs_cache *c;
	pthread_t t;
	char dir[128];
	unsigned files;
	uint64_t t0;
	int hold, st = 0;
	pid_t pid;

	printf("processes: the holder of a chunk lock dies by SIGKILL while another waits\n");
	snprintf(dir, sizeof(dir), "%s/xdead", base);
	pid = xp_holder(dir, sh, XP_DIE, XP_FIRST, &hold);
	c = xp_cache(dir, 10000);
	CHECK(c != NULL, "cache on %s", dir);
	if (!c)
		return;
	g = (struct xp_get){ c, &l, XP_FIRST, 0, 0 };
	pthread_create(&t, NULL, xp_get_thread, &g);
	CHECK(xp_await_wait(c, 1), "the get never waited for the holder");
	t0 = cfs_now_ns();
	CHECK(write(hold, "k", 1) == 1, "kill the holder");
	close(hold);
	CHECK(waitpid(pid, &st, 0) == pid && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL,
	      "holder status %#x", st);
	pthread_join(t, NULL);
	cfs_cache_stats_get(c, &s);
	printf("   served %.0f ms after the kill (the load takes 50 ms; %.0f ms in all)\n",
	       ms_since(t0), g.ms);
	CHECK(g.ret == 0, "get: %d", g.ret);
	CHECK(s.shared_waits == 1 && s.shared_timeouts == 0 && s.shared_hits == 0,
	      "waits %lu timeouts %lu hits %lu", (unsigned long)s.shared_waits,
	      (unsigned long)s.shared_timeouts, (unsigned long)s.shared_hits);
	CHECK(sh->loads[0] == 2, "loads %u: the dead one's and ours", sh->loads[0]);
	cfs_cache_flush(c);
	CHECK(dir_bytes(dir, &files) == CH + HDR && files == 1, "%u files", files);
	CHECK(xp_lock_file_ok(dir), "the lock file");
	cfs_cache_free(c);
	munmap(sh, sizeof(*sh));
	cfs_test_rmtree(dir);
}

/* The holder hangs: this process waits fetch_wait_ms (1 s here), then
 * loads the chunk itself. */
static void test_xproc_hung(void)
{
	struct xp_shared *sh = xp_shared_new();
	struct xp_loader l = { sh, XP_LOAD, 50, -1, -1 };
	struct xp_get g;
	struct cfs_cache_stats s;
	struct cfs_cache *c;
	char dir[128];
	int hold, rc;
	pid_t pid;

	printf("processes: the holder of a chunk lock hangs; another loads after "
	       "fetch_wait_ms (1 s)\n");
	snprintf(dir, sizeof(dir), "%s/xhung", base);
	pid = xp_holder(dir, sh, XP_HANG, XP_FIRST, &hold);
	c = xp_cache(dir, 1000);
	CHECK(c != NULL, "cache on %s", dir);
	if (!c)
		return;
	g = (struct xp_get){ c, &l, XP_FIRST, 0, 0 };
	xp_get_thread(&g);
	cfs_cache_stats_get(c, &s);
	printf("   served after %.0f ms\n", g.ms);
	CHECK(g.ret == 0, "get: %d", g.ret);
	/* 1 s at least by the clock the wait runs on; the upper bound is
	 * generous for a loaded machine. */
	CHECK(g.ms >= 1000 && g.ms < 10000, "served after %.0f ms", g.ms);
	CHECK(s.shared_waits == 1 && s.shared_timeouts == 1, "waits %lu timeouts %lu",
	      (unsigned long)s.shared_waits, (unsigned long)s.shared_timeouts);
	CHECK(sh->loads[0] == 2, "loads %u", sh->loads[0]);

	printf("processes: meanwhile other chunks load without waiting\n");
	g = (struct xp_get){ c, &l, XP_FIRST + 1, 0, 0 };
	xp_get_thread(&g);
	cfs_cache_stats_get(c, &s);
	CHECK(g.ret == 0 && s.shared_waits == 1, "get: %d, waits %lu", g.ret,
	      (unsigned long)s.shared_waits);
	CHECK(write(hold, "c", 1) == 1, "release the holder");
	close(hold);
	rc = child_wait(pid);
	CHECK(rc == 0, "holder exited %d", rc);
	CHECK(sh->loads[0] == 2 && sh->loads[1] == 1, "loads %u %u", sh->loads[0], sh->loads[1]);
	cfs_cache_free(c);
	munmap(sh, sizeof(*sh));
	cfs_test_rmtree(dir);
}

/* Figures, not checks: what a chunk lock adds to a miss (its two fcntl()
 * calls, timed alone), beside a whole 4 KiB miss. */
static void bench_chunk_lock(void)
{
	const unsigned n = 2000;
	struct loader l = { .fast = true };
	struct cfs_cache *c;
	double lock_us, miss_us, mem_us;
	char dir[128], path[300];
	uint64_t t0;
	int fd;

	snprintf(dir, sizeof(dir), "%s/bench-lock", base);
	mkdir(dir, 0700);
	snprintf(path, sizeof(path), "%s/.fetch.lock", dir);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	t0 = cfs_now_ns();
	for (unsigned i = 0; i < n; i++) {
		struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET,
				    .l_start = (off_t)i * 7919 * 104729, .l_len = 1 };

		CHECK(fcntl(fd, F_OFD_SETLK, &fl) == 0, "lock %u", i);
		fl.l_type = F_UNLCK;
		fcntl(fd, F_OFD_SETLK, &fl);
	}
	lock_us = ms_since(t0) * 1e3 / n;
	close(fd);

	c = cache_new(NULL, 1ull << 30, 0);
	t0 = cfs_now_ns();
	for (unsigned i = 0; i < n; i++)
		get_fast(c, &l, 300000 + i, 4096);
	mem_us = ms_since(t0) * 1e3 / n;
	cfs_cache_free(c);
	c = cache_new(dir, 1ull << 30, 0);
	t0 = cfs_now_ns();
	for (unsigned i = 0; i < n; i++)
		get_fast(c, &l, 300000 + i, 4096);
	cfs_cache_flush(c);
	miss_us = ms_since(t0) * 1e3 / n;
	cfs_cache_free(c);
	printf("bench: a chunk lock (lock and unlock a byte) %.2f us; a 4 KiB miss %.1f us "
	       "with the directory (%s writes), %.1f us memory only\n", lock_us, miss_us,
	       want_uring ? "io_uring" : "sync", mem_us);
	cfs_test_rmtree(dir);
}

/* 200 chunks of assorted sizes loaded back to back through a cache whose
 * memory holds a few: read back at once (from memory, the queued writes
 * or disk), then every write has landed and a new cache finds each entry
 * intact. */
static void test_burst(void)
{
	struct loader l = { 0 };
	struct cfs_cache_stats s;
	struct cfs_cache *c;
	uint64_t want = 0, bytes;
	unsigned files, n = 200;
	char dir[128];

	printf("burst: %u chunk writes land and verify after reopening\n", n);
	snprintf(dir, sizeof(dir), "%s/burst", base);
	c = cache_new(dir, 4 * CH, 0);
	for (unsigned i = 0; i < n; i++) {
		uint32_t len = 4096 + (i * 7919u) % (2 * CH);

		get_put(c, &l, 5000 + i, len);
		want += len + HDR;
	}
	for (unsigned i = 0; i < n; i++)
		get_put(c, &l, 5000 + i, 4096 + (i * 7919u) % (2 * CH));
	cfs_cache_stats_get(c, &s);
	CHECK(l.loads == n, "loads %u: a queued write was not served", l.loads);
	CHECK(s.disk_bytes == want, "disk bytes %lu want %lu", (unsigned long)s.disk_bytes,
	      (unsigned long)want);
	cfs_cache_free(c);
	bytes = dir_bytes(dir, &files);
	CHECK(bytes == want && files == n, "%lu bytes in %u files", (unsigned long)bytes, files);

	l.loads = 0;
	c = cache_new(dir, 4 * CH, 0);
	for (unsigned i = 0; i < n; i++)
		get_put(c, &l, 5000 + i, 4096 + (i * 7919u) % (2 * CH));
	cfs_cache_stats_get(c, &s);
	CHECK(l.loads == 0 && s.disk_hits == n && s.disk_bad == 0 && s.disk_write_errors == 0,
	      "loads %u disk hits %lu bad %lu", l.loads, (unsigned long)s.disk_hits,
	      (unsigned long)s.disk_bad);
	cfs_cache_free(c);
	cfs_test_rmtree(dir);
}

struct hit_arg {
	struct cfs_cache *c;
	atomic_bool stop;
	uint64_t max_ns, gets;
};

static void *hit_thread(void *p)
{
	struct hit_arg *a = p;
	struct loader l = { 0 };
	cfs_digest d;

	chunk_digest(0, &d);
	while (!atomic_load(&a->stop)) {
		struct cfs_buf *b = NULL;
		uint64_t t0 = cfs_now_ns(), dt;

		cfs_cache_get(a->c, &d, 4096, load_fn, &l, &b);
		dt = cfs_now_ns() - t0;
		cfs_buf_unref(b);
		if (dt > a->max_ns)
			a->max_ns = dt;
		a->gets++;
	}
	return NULL;
}

/* Figures, not checks: what a pass over 10,000 entries costs, and how long
 * a memory hit waits meanwhile (the merge holds the cache's mutex). */
static void bench_rescan(void)
{
	struct cfs_cache_stats s;
	struct hit_arg h = { 0 }, h0 = { 0 };
	struct loader l = { 0 };
	struct cfs_cache *c, *c2;
	const unsigned n = 10000, reps = 5;
	double best = 1e9, best2 = 1e9, t_new, t_all;
	pthread_t t;
	char dir[128];
	uint64_t t0;

	snprintf(dir, sizeof(dir), "%s/bench", base);
	c = cache_new(dir, 1 << 20, 1ull << 30);
	for (unsigned i = 0; i < n; i++)
		get_put(c, &l, i, 4096);
	cfs_cache_flush(c);
	cfs_cache_stats_get(c, &s);
	CHECK(s.rescans == 1 && s.disk_bytes == (uint64_t)n * (4096 + HDR), "rescans %lu",
	      (unsigned long)s.rescans);

	t0 = cfs_now_ns();
	c2 = cache_new(dir, 1 << 20, 1ull << 30);
	t_new = ms_since(t0);
	for (unsigned r = 0; r < reps; r++) {
		t0 = cfs_now_ns();
		cfs_cache_rescan(c2);
		if (ms_since(t0) < best2)
			best2 = ms_since(t0);
	}
	cfs_cache_free(c2);

	h.c = h0.c = c;
	get_put(c, &l, 0, 4096);
	pthread_create(&t, NULL, hit_thread, &h);
	t0 = cfs_now_ns();
	for (unsigned r = 0; r < reps; r++) {
		uint64_t t1 = cfs_now_ns();

		CHECK(cfs_cache_rescan(c) == 0, "rescan");
		if (ms_since(t1) < best)
			best = ms_since(t1);
	}
	t_all = ms_since(t0);
	atomic_store(&h.stop, true);
	pthread_join(t, NULL);
	/* The same hits as long again, without passes: the machine's noise. */
	pthread_create(&t, NULL, hit_thread, &h0);
	sleep_ms((unsigned)t_all + 1);
	atomic_store(&h0.stop, true);
	pthread_join(t, NULL);
	cfs_cache_stats_get(c, &s);
	CHECK(s.disk_bytes == (uint64_t)n * (4096 + HDR), "disk bytes %lu",
	      (unsigned long)s.disk_bytes);
	printf("bench: pass over %u entries (warm dentries): %.1f ms for a new cache, "
	       "%.1f ms best of %u for a cache that knows them, %.1f ms for another's\n"
	       "bench: slowest of %lu memory hits during %u passes %.3f ms, "
	       "of %lu without %.3f ms\n",
	       n, t_new, best, reps, best2, (unsigned long)h.gets, reps,
	       (double)h.max_ns / 1e6, (unsigned long)h0.gets, (double)h0.max_ns / 1e6);
	cfs_cache_free(c);
}

/* A cache on dir with synchronous writes or through the ring. */
static struct cfs_cache *cache_new_mode(const char *dir, bool ring, uint64_t mem_max)
{
	struct cfs_cache_opts o = { .dir = dir, .mem_max = mem_max, .disk_max = 1ull << 40 };
	char *saved = getenv("CFS_NO_IO_URING");
	struct cfs_cache_stats s;
	struct cfs_cache *c = NULL;

	saved = saved ? strdup(saved) : NULL;
	if (ring)
		unsetenv("CFS_NO_IO_URING");
	else
		setenv("CFS_NO_IO_URING", "1", 1);
	if (cfs_cache_new(&o, &c) < 0) {
		fprintf(stderr, "FAIL cfs_cache_new(%s)\n", dir);
		exit(1);
	}
	if (saved)
		setenv("CFS_NO_IO_URING", saved, 1);
	else
		unsetenv("CFS_NO_IO_URING");
	free(saved);
	cfs_cache_stats_get(c, &s);
	CHECK_EQ(s.uring, ring);
	return c;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

/* Figures, not checks: how long a loading thread takes to return from a
 * 1 MiB miss, and the throughput of 1000 chunk writes, synchronous and
 * through the ring. */
static void bench_writes(void)
{
	const unsigned misses = 64, nw = 1000;
	const uint32_t big = 1u << 20, small = 256u << 10;
	static const char *const mode[] = { "memory only", "sync write", "io_uring" };
	struct loader l = { .fast = true };
	uint64_t t[64];

	/* ring -1: a memory-only cache, what a miss costs without the disk. */
	for (int ring = -1; ring <= (int)want_uring; ring++) {
		struct cfs_cache_stats s;
		struct cfs_cache *c;
		double get_ms = 0, all_ms, load_ms;
		char dir[128];
		uint64_t t0;

		snprintf(dir, sizeof(dir), "%s/bench-w%d", base, ring);
		/* The load itself, for reference: memset of 1 MiB. */
		t0 = cfs_now_ns();
		for (unsigned i = 0; i < misses; i++) {
			static uint8_t scratch[1u << 20];
			cfs_digest d;

			chunk_digest(i, &d);
			load_fn(&l, &d, big, scratch);
		}
		load_ms = ms_since(t0) / misses;

		c = ring < 0 ? cache_new(NULL, 1ull << 30, 0) : cache_new_mode(dir, ring, 1ull << 30);
		for (unsigned i = 0; i < misses; i++) {
			t0 = cfs_now_ns();
			get_fast(c, &l, 100000 + i, big);
			t[i] = cfs_now_ns() - t0;
			if (ring > 0)
				cfs_cache_flush(c); /* one at a time: the latency alone */
		}
		qsort(t, misses, sizeof(t[0]), cmp_u64);
		printf("bench: %s: a 1 MiB miss returns in %.3f ms median, %.3f ms p90 "
		       "(the load alone %.3f ms)\n", mode[ring + 1],
		       (double)t[misses / 2] / 1e6, (double)t[misses * 9 / 10] / 1e6, load_ms);

		t0 = cfs_now_ns();
		for (unsigned i = 0; i < nw; i++) {
			uint64_t t1 = cfs_now_ns();

			get_fast(c, &l, 200000 + i, small);
			get_ms += ms_since(t1);
		}
		cfs_cache_flush(c);
		all_ms = ms_since(t0);
		cfs_cache_stats_get(c, &s);
		CHECK(s.disk_write_errors == 0, "write errors %lu", (unsigned long)s.disk_write_errors);
		printf("bench: %s: %u writes of 256 KiB: %.0f MB/s to disk (%.1f ms), "
		       "the loading thread busy %.1f ms\n", mode[ring + 1], nw,
		       (double)nw * small / 1e3 / all_ms, all_ms, get_ms);
		cfs_cache_free(c);
		if (ring >= 0)
			cfs_test_rmtree(dir);
	}
}

int main(void)
{
	const char *no = getenv("CFS_NO_IO_URING");
	struct cfs_uring *probe = NULL;

	want_uring = !(no && *no && strcmp(no, "0")) && cfs_uring_new(1, 1, &probe) == 0;
	cfs_uring_free(probe);
	printf("disk writes: %s\n", want_uring ? "io_uring" : "synchronous");
	cfs_test_mkdtemp(base, sizeof(base), "cache");
	test_memory();
	test_disk();
	test_handles();
	test_disk_bound();
	test_tick();
	test_single_flight();
	test_stress();
	test_unwritable();
	test_thread_sync();
	test_shared();
	test_processes();
	test_xproc_once();
	test_xproc_dead();
	test_xproc_hung();
	test_burst();
	bench_rescan();
	bench_writes();
	bench_chunk_lock();

	cfs_test_rmtree(base);
	return cfs_test_done("test-cache");
}
