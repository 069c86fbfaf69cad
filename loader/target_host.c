/* SPDX-License-Identifier: MIT */
/*
 * Host-memory target: the model's allocation is anonymous memory of this
 * process.  Copies are memcpy in the calling thread, so slot_done and
 * slot_wait have nothing to wait for.
 *
 * Allocations are 2 MiB-aligned and asked for as transparent huge pages,
 * then, unless the pipeline will read straight into them (lazy_alloc: the
 * reads, running in parallel on io_uring's workers, fault the pages in
 * themselves), populated up front (MADV_POPULATE_WRITE) by several threads
 * at once, so that page faults are off the copy path; their cost shows in
 * the load's setup_s.  Measured on a 2-core VM: 4 KiB pages populate at about
 * 3 GB/s, huge pages at 15-30 GB/s when the kernel has them free, under
 * 1 GB/s when it must compact memory to make them; so each thread gives
 * huge pages up for the rest of its part once they come slower than
 * 1.5 GB/s (two steps of up to 32 MiB in a row, or on average).  Reads
 * into huge pages also miss the TLB less, and unmapping them is ten times
 * faster.  CFS_LOAD_NO_THP=1 (benchmarks) asks for small pages only.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "loader_i.h"
#include "util.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14 */
#endif

#define HUGE_SIZE (2u << 20)
#define POPULATE_THREADS_MAX 8
#define POPULATE_PER_THREAD (64u << 20) /* below this, one thread is enough */
#define POPULATE_STEP (32u << 20) /* at most; len/8 for smaller areas */
/* Bytes per ns (GB/s) below which huge pages cost more than small ones:
 * small pages populate at 2-3 GB/s in a VM, huge ones at 15-30 when free
 * and well under 1 while the kernel compacts memory for them. */
#define HUGE_MIN_GBPS 1.5

struct host_map {
	void *addr;      /* what the caller got */
	void *map;       /* what mmap returned */
	size_t map_len;
	struct host_map *next;
};

struct host_target {
	struct cfs_target t;
	struct host_map *maps;
	double *acc;      /* per slot: seconds of copies since slot_done */
	double *done_s;   /* per slot: the last finished round */
};

static struct host_target *host_of(struct cfs_target *t)
{
	return (struct host_target *)t;
}

static double now_s(void)
{
	return (double)cfs_now_ns() * 1e-9;
}

struct populate_part {
	char *p;
	size_t len;
	bool huge;
	int ret;
	pthread_t th;
};

static int populate_touch(char *p, size_t len)
{
	long pg = sysconf(_SC_PAGESIZE);
	size_t step = pg > 0 ? (size_t)pg : 4096, i;

	if (madvise(p, len, MADV_POPULATE_WRITE) == 0)
		return 0;
	if (errno != EINVAL)
		return -errno;
	/* Before 5.14: touch every page. */
	for (i = 0; i < len; i += step)
		((volatile char *)p)[i] = 0;
	return 0;
}

static bool slower(uint64_t bytes, uint64_t ns)
{
	return (double)bytes / ((double)ns + 1) < HUGE_MIN_GBPS;
}

/* Populates in steps; when huge pages come slower than small ones would
 * (the kernel compacting memory to make them) for two steps in a row or
 * on average over four or more (one stall does not decide), the rest gets
 * small pages. */
static int populate_range(char *p, size_t len, bool huge)
{
	size_t step = CFS_ALIGN_UP(CFS_MIN((size_t)POPULATE_STEP, len / 8), (size_t)HUGE_SIZE);
	uint64_t t0 = cfs_now_ns(), ts;
	unsigned steps = 0, slow = 0;
	size_t off, n;
	int ret;

	for (off = 0; off < len; off += n) {
		n = CFS_MIN(step, len - off);
		ts = cfs_now_ns();
		ret = populate_touch(p + off, n);
		if (ret < 0)
			return ret;
		if (!huge || off + n >= len)
			continue;
		slow = slower(n, cfs_now_ns() - ts) ? slow + 1 : 0;
		if (slow >= 2 || (++steps >= 4 && slower(off + n, cfs_now_ns() - t0))) {
			(void)madvise(p + off + n, len - off - n, MADV_NOHUGEPAGE);
			huge = false;
		}
	}
	return 0;
}

static void *populate_main(void *arg)
{
	struct populate_part *pp = arg;

	pp->ret = populate_range(pp->p, pp->len, pp->huge);
	return NULL;
}

/* Populates [p, p+len) with up to one thread per CPU; p is 2 MiB-aligned. */
static int populate(char *p, size_t len, bool huge)
{
	struct populate_part parts[POPULATE_THREADS_MAX];
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	size_t n = len / POPULATE_PER_THREAD, per, off = 0, i, started = 0;
	int ret = 0;

	if (ncpu < 1)
		ncpu = 1;
	n = CFS_MIN(n, (size_t)ncpu);
	n = CFS_MIN(n, (size_t)POPULATE_THREADS_MAX);
	if (n <= 1)
		return populate_range(p, len, huge);
	per = CFS_ALIGN_UP(len / n, (size_t)HUGE_SIZE);
	for (i = 0; i < n && off < len; i++) {
		parts[i].p = p + off;
		parts[i].len = CFS_MIN(per, len - off);
		parts[i].huge = huge;
		parts[i].ret = 0;
		off += parts[i].len;
	}
	n = i;
	/* The caller's thread takes part 0. */
	for (i = 1; i < n; i++) {
		if (pthread_create(&parts[i].th, NULL, populate_main, &parts[i]) != 0)
			break;
		started = i;
	}
	for (i = started + 1; i < n; i++)
		parts[i].ret = populate_range(parts[i].p, parts[i].len, huge);
	parts[0].ret = populate_range(parts[0].p, parts[0].len, huge);
	for (i = 1; i <= started; i++)
		pthread_join(parts[i].th, NULL);
	for (i = 0; i < n; i++)
		if (parts[i].ret < 0 && ret == 0)
			ret = parts[i].ret;
	return ret;
}

/* A populated, 2 MiB-aligned mapping of at least len bytes. */
static int host_map_new(struct host_target *h, size_t len, void **out)
{
	struct host_map *m;
	size_t want, map_len;
	char *map, *addr;
	bool huge = false;
	int ret;

	if (len == 0)
		len = 1;
	want = CFS_ALIGN_UP(len, (size_t)4096);
	if (want < len)
		return -ENOMEM;
	/* Huge pages only pay for themselves on big areas. */
	map_len = want >= HUGE_SIZE ? want + HUGE_SIZE : want;
	if (map_len < want)
		return -ENOMEM;
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	map = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (map == MAP_FAILED) {
		ret = -errno;
		goto out_free;
	}
	addr = map;
	if (want >= HUGE_SIZE) {
		addr = (char *)CFS_ALIGN_UP((uintptr_t)map, (uintptr_t)HUGE_SIZE);
		/* Best effort: without THP these are 4 KiB pages. */
		huge = !getenv("CFS_LOAD_NO_THP") && madvise(addr, want, MADV_HUGEPAGE) == 0;
	}
	ret = h->t.lazy_alloc ? 0 : populate(addr, want, huge);
	if (ret < 0)
		goto out_unmap;
	m->addr = addr;
	m->map = map;
	m->map_len = map_len;
	m->next = h->maps;
	h->maps = m;
	*out = addr;
	return 0;

out_unmap:
	munmap(map, map_len);
out_free:
	free(m);
	return ret;
}

static void host_map_free(struct host_target *h, void *addr)
{
	struct host_map **pm, *m;

	for (pm = &h->maps; (m = *pm); pm = &m->next) {
		if (m->addr == addr) {
			*pm = m->next;
			munmap(m->map, m->map_len);
			free(m);
			return;
		}
	}
}

static int host_open(const struct cfs_load_opts *o, struct cfs_target **out, char *err,
		     size_t errlen)
{
	struct host_target *h;
	unsigned slots = o->slots ? o->slots : 1;

	h = calloc(1, sizeof(*h));
	if (!h)
		return cfs_load_err(err, errlen, -ENOMEM, "%s", strerror(ENOMEM));
	h->acc = calloc(slots, sizeof(*h->acc));
	h->done_s = calloc(slots, sizeof(*h->done_s));
	if (!h->acc || !h->done_s) {
		free(h->acc);
		free(h->done_s);
		free(h);
		return cfs_load_err(err, errlen, -ENOMEM, "%s", strerror(ENOMEM));
	}
	h->t.ops = &cfs_target_host;
	h->t.slots = slots;
	h->t.device = -1;
	*out = &h->t;
	return 0;
}

static void host_close(struct cfs_target *t)
{
	struct host_target *h;

	if (!t)
		return;
	h = host_of(t);
	while (h->maps)
		host_map_free(h, h->maps->addr);
	free(h->acc);
	free(h->done_s);
	free(h);
}

static int host_alloc(struct cfs_target *t, size_t size, void **dev)
{
	return host_map_new(host_of(t), size, dev);
}

static void host_free(struct cfs_target *t, void *dev)
{
	if (dev)
		host_map_free(host_of(t), dev);
}

static int host_alloc_staging(struct cfs_target *t, size_t size, void **host)
{
	return host_map_new(host_of(t), size, host);
}

static void host_free_staging(struct cfs_target *t, void *host, size_t size)
{
	if (host)
		host_map_free(host_of(t), host);
}

static int host_copy(struct cfs_target *t, unsigned slot, void *dev, const void *host, size_t len)
{
	struct host_target *h = host_of(t);
	double t0 = now_s();

	memcpy(dev, host, len);
	if (slot < t->slots)
		h->acc[slot] += now_s() - t0;
	return 0;
}

static int host_slot_done(struct cfs_target *t, unsigned slot)
{
	struct host_target *h = host_of(t);

	if (slot >= t->slots)
		return -EINVAL;
	h->done_s[slot] = h->acc[slot];
	h->acc[slot] = 0;
	return 0;
}

static int host_slot_wait(struct cfs_target *t, unsigned slot)
{
	return slot < t->slots ? 0 : -EINVAL;
}

static double host_slot_time(struct cfs_target *t, unsigned slot)
{
	struct host_target *h = host_of(t);
	double s;

	if (slot >= t->slots)
		return 0;
	/* Counted once: the pipeline asks after each wait. */
	s = h->done_s[slot];
	h->done_s[slot] = 0;
	return s;
}

static int host_download(struct cfs_target *t, void *host, const void *dev, size_t len)
{
	memcpy(host, dev, len);
	return 0;
}

static int host_probe(struct cfs_target *t, size_t size, unsigned reps, double *bytes_per_s,
		      char *err, size_t errlen)
{
	struct host_target *h = host_of(t);
	void *a = NULL, *b = NULL;
	double t0, dt;
	unsigned i;
	int ret;

	if (!size || !reps)
		return cfs_load_err(err, errlen, -EINVAL, "probe: size and repetitions must be > 0");
	ret = host_map_new(h, size, &a);
	if (ret == 0)
		ret = host_map_new(h, size, &b);
	if (ret < 0) {
		cfs_load_err(err, errlen, ret, "probe: %zu bytes of host memory: %s", size,
			     strerror(-ret));
		goto out;
	}
	memset(a, 0x5a, size);
	memcpy(b, a, size); /* warm-up */
	t0 = now_s();
	for (i = 0; i < reps; i++)
		memcpy(b, a, size);
	dt = now_s() - t0;
	*bytes_per_s = dt > 0 ? (double)size * reps / dt : 0;
out:
	host_map_free(h, b);
	host_map_free(h, a);
	return ret;
}

const struct cfs_target_ops cfs_target_host = {
	.name = "host",
	.open = host_open,
	.close = host_close,
	.alloc = host_alloc,
	.free = host_free,
	.alloc_staging = host_alloc_staging,
	.free_staging = host_free_staging,
	.copy = host_copy,
	.slot_done = host_slot_done,
	.slot_wait = host_slot_wait,
	.slot_time = host_slot_time,
	.download = host_download,
	.probe = host_probe,
	.host_visible = true,
};
