/* SPDX-License-Identifier: MIT */
/* test-cache: memory LRU, disk tier (reuse, corruption, bound, write
 * failures), single flight and error propagation of the chunk cache. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"
#include "util.h"
#include "test.h"

#define CH (64u << 10)
#define HDR 32u

static char base[64];

/* Chunk i: a digest with random-looking leading bytes and i in its last
 * four, content a pattern derived from i.  The cache never verifies
 * digests (the load callback does), so these need not be real hashes. */
struct loader {
	atomic_uint loads;
	unsigned delay_ms;
	int fail; /* returned by every load while set */
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

static bool content_ok(const struct cfs_buf *b, unsigned i, size_t len)
{
	const uint8_t *p = cfs_buf_data(b);

	if (cfs_buf_len(b) != len)
		return false;
	for (size_t k = 0; k < len; k++)
		if (p[k] != pattern(i, k))
			return false;
	return true;
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

	if (ret < 0) {
		fprintf(stderr, "FAIL cfs_cache_new(%s): %d\n", dir ? dir : "memory", ret);
		exit(1);
	}
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
	CHECK(fd >= 0 && pwrite(fd, "\xff", 1, HDR + 1000) == 1, "corrupt %s", p);
	close(fd);
	get_put(c, &l, 1, CH);
	cfs_cache_stats_get(c, &s);
	CHECK(s.disk_bad == 1 && l.loads == 1, "bad %lu loads %u", (unsigned long)s.disk_bad, l.loads);

	printf("disk: a truncated entry likewise\n");
	entry_path(dir, 2, p, sizeof(p));
	CHECK(truncate(p, HDR + CH / 2) == 0, "truncate");
	get_put(c, &l, 2, CH);
	cfs_cache_stats_get(c, &s);
	CHECK(s.disk_bad == 2 && l.loads == 2, "bad %lu loads %u", (unsigned long)s.disk_bad, l.loads);

	printf("disk: a garbage header likewise\n");
	entry_path(dir, 0, p, sizeof(p));
	fd = open(p, O_RDWR);
	CHECK(fd >= 0 && pwrite(fd, "XX", 2, 0) == 2, "corrupt header");
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
	bytes = dir_bytes(dir, &files);
	cfs_cache_stats_get(c, &s);
	CHECK(bytes <= max && files == 3, "%lu bytes in %u files", (unsigned long)bytes, files);
	CHECK(s.disk_bytes == bytes, "disk_bytes %lu", (unsigned long)s.disk_bytes);
	/* The newest survive. */
	l.loads = 0;
	get_put(c, &l, 9, CH);
	get_put(c, &l, 8, CH);
	CHECK(l.loads == 0, "newest entries evicted");
	cfs_cache_free(c);

	printf("disk bound: a smaller disk_max at start evicts the oldest\n");
	c = cache_new(dir, CH, 2 * (CH + HDR));
	bytes = dir_bytes(dir, &files);
	CHECK(bytes <= 2 * (CH + HDR) && files == 2, "%lu bytes in %u files",
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
	cfs_cache_stats_get(c, &s);
	CHECK(l.loads == 0 && s.mem_hits == 3, "memory hits %lu", (unsigned long)s.mem_hits);
	CHECK(s.disk_write_errors == 3 && s.disk_bytes == 0, "write errors %lu disk %lu",
	      (unsigned long)s.disk_write_errors, (unsigned long)s.disk_bytes);
	cfs_cache_free(c);
	umount2(dir, MNT_DETACH);
}

int main(void)
{
	cfs_test_mkdtemp(base, sizeof(base), "cache");
	test_memory();
	test_disk();
	test_disk_bound();
	test_single_flight();
	test_stress();
	test_unwritable();

	cfs_test_rmtree(base);
	return cfs_test_done("test-cache");
}
