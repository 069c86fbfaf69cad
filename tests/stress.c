/* cfs-stress: load generator and verifier for cfs mounts.  Processes x
 * threads, until a time bound, each do a random mix of reads of random
 * ranges (buffered, after dropping the mount's page cache, O_DIRECT),
 * whole files in sequence, mmap of a region, readdir walks with lstat of
 * what they list, lstat/stat and readlink, on any of the mounts given;
 * every byte and every field is compared with the source tree.
 *
 * Usage: cfs-stress [--seconds N] [--procs P] [--threads T] [--seed S]
 *                   [--drop PCT] [--stall-max SECS] SRC MNT [MNT...]
 *
 * The mounts must show SRC (a tree nothing writes to meanwhile).  Files
 * of 1 MiB or more are the targets of random reads and mmap.  Devices and
 * fifos are only stat'ed; stat() through a symlink is compared only when
 * its target stays inside the tree.  One line of totals on stdout at the
 * end.  Exit 0: everything matched; 1: a mismatch, an error on a mount
 * that the source did not have, a crashed worker, or an operation in
 * flight longer than --stall-max (a hang): each printed with the mount,
 * the path and the range; 2: bad usage or an unreadable SRC.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CFS_STRESS_MAX_MOUNTS 8
#define CFS_STRESS_MAX_WORKERS 1024
#define CFS_STRESS_BIG (1u << 20)        /* random-read and mmap targets */
#define CFS_STRESS_READ_MAX (2u << 20)   /* largest random read */
#define CFS_STRESS_MAP_MAX (4u << 20)    /* largest mapped region */
#define CFS_STRESS_CHUNK (1u << 20)      /* cfs-pack's default chunk size */
#define CFS_STRESS_PAGE 4096u
#define CFS_STRESS_WALK_STATS 24         /* lstat per listed directory */
#define CFS_STRESS_WALK_DEPTH 4
#define CFS_STRESS_MSGS 20               /* failures printed, at most */
#define NS_PER_SEC 1000000000ull

enum kind { K_PREAD, K_DIRECT, K_SEQ, K_MMAP, K_READDIR, K_STAT, K_READLINK, K_N };
static const char *const kind_name[K_N] = {
	"pread", "direct", "seq", "mmap", "readdir", "stat", "readlink",
};
/* Out of 100: the mix of operations. */
static const unsigned kind_weight[K_N] = { 30, 10, 12, 12, 10, 18, 8 };

/* One source entry, as lstat() saw it at start. */
struct ent {
	char *path;  /* relative to the roots; "." for the root */
	mode_t mode;
	off_t size;
};

struct list {
	size_t *ix;
	size_t n, cap;
};

/* Per worker, in memory shared with the parent: counters and the
 * operation in flight, for the totals and the watchdog.  Each field is
 * written by its worker only. */
struct slot {
	_Atomic uint64_t ops[K_N], bytes[K_N];
	_Atomic uint64_t worst_ns;
	_Atomic uint64_t busy_since; /* 0: between operations */
	_Atomic int kind, mnt;
	_Atomic int64_t ent, off, len;
};

struct shared {
	_Atomic int stop;
	_Atomic int failures;
	struct slot slot[];
};

struct cfg {
	unsigned seconds, procs, threads, drop_pct, stall_max;
	uint64_t seed;
	const char *src;
	const char *mnt[CFS_STRESS_MAX_MOUNTS];
	unsigned nmnt;
	int srcfd, mntfd[CFS_STRESS_MAX_MOUNTS];
	uint64_t deadline; /* CLOCK_MONOTONIC ns */
	struct ent *ents;
	size_t nents, cap;
	struct list regs, bigs, dirs, links;
	struct shared *sh;
};

struct worker {
	struct cfg *cfg;
	struct slot *slot;
	unsigned id;
	uint64_t rng;
	uint8_t *a, *b; /* CFS_STRESS_MAP_MAX bytes each, page-aligned */
	int mnt;        /* mount of the operation in flight */
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * NS_PER_SEC + (uint64_t)ts.tv_nsec;
}

static uint64_t rng_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* Uniform in [0, n); n > 0. */
static uint64_t rng_below(uint64_t *s, uint64_t n)
{
	return rng_next(s) % n;
}

/* 1 .. max, log-uniform: as many reads of a few bytes as of megabytes. */
static size_t rng_len(uint64_t *s, size_t max)
{
	unsigned bits = 0;
	size_t lo, len;

	while ((2ull << bits) <= max)
		bits++;
	lo = (size_t)1 << rng_below(s, bits + 1);
	len = lo + (size_t)rng_below(s, lo);
	return len > max ? max : len;
}

/* Names may hold newlines and bytes that are not UTF-8: escaped. */
static void put_escaped(FILE *f, const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p >= 0x20 && *p < 0x7f && *p != '\\')
			fputc(*p, f);
		else
			fprintf(f, "\\x%02x", *p);
	}
}

/* Reports a failure of the operation in flight (at most CFS_STRESS_MSGS
 * are printed) and stops the run. */
static void failf(struct worker *w, const char *path, const char *fmt, ...)
{
	struct shared *sh = w->cfg->sh;
	va_list ap;

	atomic_store(&sh->stop, 1);
	if (atomic_fetch_add(&sh->failures, 1) >= CFS_STRESS_MSGS)
		return;
	flockfile(stderr);
	fprintf(stderr, "cfs-stress: worker %u: %s: ", w->id, w->cfg->mnt[w->mnt]);
	put_escaped(stderr, path);
	fputs(": ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	funlockfile(stderr);
}

static size_t first_diff(const uint8_t *a, const uint8_t *b, size_t n)
{
	size_t i = 0;

	while (i < n && a[i] == b[i])
		i++;
	return i;
}

/* Compares n bytes read at off from the mount (got) with the source's
 * (want); false after reporting the first byte that differs. */
static bool same_bytes(struct worker *w, const char *path, const char *how, const uint8_t *got,
		       const uint8_t *want, size_t n, uint64_t off)
{
	size_t i;

	if (!memcmp(got, want, n))
		return true;
	i = first_diff(got, want, n);
	failf(w, path, "%s of %zu bytes at %" PRIu64 ": byte %" PRIu64 " is 0x%02x, want 0x%02x",
	      how, n, off, off + i, got[i], want[i]);
	return false;
}

/* ---- the source tree ---- */

static int list_add(struct list *l, size_t ix)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 256;
		size_t *p = realloc(l->ix, cap * sizeof(*p));

		if (!p)
			return -ENOMEM;
		l->ix = p;
		l->cap = cap;
	}
	l->ix[l->n++] = ix;
	return 0;
}

static char *path_join(const char *dir, const char *name)
{
	char *p;

	if (!strcmp(dir, "."))
		return strdup(name);
	if (asprintf(&p, "%s/%s", dir, name) < 0)
		return NULL;
	return p;
}

static int ent_add(struct cfg *c, char *path, const struct stat *sb)
{
	size_t ix = c->nents;
	int ret = 0;

	if (c->nents == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 1024;
		struct ent *e = realloc(c->ents, cap * sizeof(*e));

		if (!e) {
			free(path);
			return -ENOMEM;
		}
		c->ents = e;
		c->cap = cap;
	}
	c->ents[c->nents++] = (struct ent){ .path = path, .mode = sb->st_mode, .size = sb->st_size };
	if (S_ISREG(sb->st_mode) && faccessat(c->srcfd, path, R_OK, AT_EACCESS) == 0) {
		ret = list_add(&c->regs, ix);
		if (!ret && sb->st_size >= CFS_STRESS_BIG)
			ret = list_add(&c->bigs, ix);
	} else if (S_ISDIR(sb->st_mode)) {
		ret = list_add(&c->dirs, ix);
	} else if (S_ISLNK(sb->st_mode)) {
		ret = list_add(&c->links, ix);
	}
	return ret;
}

/* Records every entry under rel (a directory of SRC), depth first. */
static int walk_src(struct cfg *c, const char *rel)
{
	struct dirent *de;
	DIR *d;
	int fd, ret = 0;

	fd = openat(c->srcfd, rel, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d) {
		ret = -errno;
		close(fd);
		return ret;
	}
	while ((errno = 0, de = readdir(d)) != NULL) {
		struct stat sb;
		char *path;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		path = path_join(rel, de->d_name);
		if (!path) {
			ret = -ENOMEM;
			break;
		}
		if (fstatat(c->srcfd, path, &sb, AT_SYMLINK_NOFOLLOW) < 0) {
			ret = -errno;
			free(path);
			break;
		}
		ret = ent_add(c, path, &sb);
		if (!ret && S_ISDIR(sb.st_mode))
			ret = walk_src(c, c->ents[c->nents - 1].path);
		if (ret < 0)
			break;
	}
	if (!ret && errno)
		ret = -errno;
	closedir(d);
	return ret;
}

/* ---- operations ---- */

static void op_begin(struct worker *w, enum kind k, size_t ent, uint64_t off, uint64_t len)
{
	atomic_store_explicit(&w->slot->kind, k, memory_order_relaxed);
	atomic_store_explicit(&w->slot->mnt, w->mnt, memory_order_relaxed);
	atomic_store_explicit(&w->slot->ent, (int64_t)ent, memory_order_relaxed);
	atomic_store_explicit(&w->slot->off, (int64_t)off, memory_order_relaxed);
	atomic_store_explicit(&w->slot->len, (int64_t)len, memory_order_relaxed);
	atomic_store(&w->slot->busy_since, now_ns());
}

static void op_end(struct worker *w, enum kind k, uint64_t bytes)
{
	uint64_t t = now_ns() - atomic_load(&w->slot->busy_since);

	atomic_store(&w->slot->busy_since, 0);
	atomic_fetch_add_explicit(&w->slot->ops[k], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&w->slot->bytes[k], bytes, memory_order_relaxed);
	if (t > atomic_load_explicit(&w->slot->worst_ns, memory_order_relaxed))
		atomic_store_explicit(&w->slot->worst_ns, t, memory_order_relaxed);
}

static bool time_up(struct worker *w)
{
	return atomic_load_explicit(&w->cfg->sh->stop, memory_order_relaxed) ||
	       now_ns() >= w->cfg->deadline;
}

static int mnt_open(struct worker *w, const char *path, int flags)
{
	return openat(w->cfg->mntfd[w->mnt], path, flags | O_CLOEXEC);
}

static int src_open(struct worker *w, const char *path)
{
	return openat(w->cfg->srcfd, path, O_RDONLY | O_CLOEXEC);
}

static const struct ent *pick(struct worker *w, const struct list *l, size_t *ix)
{
	*ix = l->ix[rng_below(&w->rng, l->n)];
	return &w->cfg->ents[*ix];
}

/* A random range of a file of size bytes: anywhere, across a chunk
 * boundary, or running past the end. */
static void pick_range(struct worker *w, uint64_t size, size_t max, uint64_t *off, size_t *len)
{
	*len = rng_len(&w->rng, max);
	switch (rng_below(&w->rng, 8)) {
	case 0: { /* across a chunk boundary */
		uint64_t b = CFS_STRESS_CHUNK * (1 + rng_below(&w->rng, size / CFS_STRESS_CHUNK + 1));

		*off = b - (b > *len / 2 ? *len / 2 : b);
		break;
	}
	case 1: /* the tail, and past the end */
		*off = size - (size > *len / 2 ? *len / 2 : size);
		break;
	default:
		*off = rng_below(&w->rng, size);
	}
}

static void drop_cache(struct worker *w, int fd, uint64_t off, uint64_t len)
{
	if (rng_below(&w->rng, 100) < w->cfg->drop_pct)
		posix_fadvise(fd, (off_t)off, (off_t)len, POSIX_FADV_DONTNEED);
}

/* pread of the source: what the mount must return for [off, off+len). */
static ssize_t src_pread(struct worker *w, const char *path, void *buf, size_t len, uint64_t off)
{
	int fd = src_open(w, path);
	ssize_t n = -1;
	size_t got = 0;

	if (fd < 0) {
		failf(w, path, "source: open: %s", strerror(errno));
		return -1;
	}
	while (got < len) {
		n = pread(fd, (uint8_t *)buf + got, len - got, (off_t)(off + got));
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	if (n < 0)
		failf(w, path, "source: pread: %s", strerror(errno));
	close(fd);
	return n < 0 ? -1 : (ssize_t)got;
}

/* One pread of a random range (buffered, or O_DIRECT): all of it that
 * the file holds must come back in one call.  O_DIRECT ranges and buffers
 * are unaligned on purpose: FUSE passes them to the daemon as they are
 * (a block filesystem would answer EINVAL). */
static void do_pread(struct worker *w, bool direct)
{
	enum kind k = direct ? K_DIRECT : K_PREAD;
	size_t ix, len;
	const struct ent *e = pick(w, &w->cfg->bigs, &ix);
	uint64_t off;
	ssize_t n, want;
	int fd;

	pick_range(w, (uint64_t)e->size, CFS_STRESS_READ_MAX, &off, &len);
	op_begin(w, k, ix, off, len);
	fd = mnt_open(w, e->path, O_RDONLY | (direct ? O_DIRECT : 0));
	if (fd < 0) {
		failf(w, e->path, "open%s: %s", direct ? " O_DIRECT" : "", strerror(errno));
		return;
	}
	if (!direct)
		drop_cache(w, fd, off, len);
	n = pread(fd, w->a, len, (off_t)off);
	if (n < 0) {
		failf(w, e->path, "%s of %zu bytes at %" PRIu64 ": %s", kind_name[k], len, off,
		      strerror(errno));
		goto out;
	}
	want = src_pread(w, e->path, w->b, len, off);
	if (want < 0)
		goto out;
	if (n != want) {
		failf(w, e->path, "%s of %zu bytes at %" PRIu64 " returned %zd, want %zd",
		      kind_name[k], len, off, n, want);
		goto out;
	}
	if (same_bytes(w, e->path, kind_name[k], w->a, w->b, (size_t)n, off))
		op_end(w, k, (uint64_t)n);
out:
	close(fd);
}

/* A whole file front to back in reads of one random size; it must end
 * where the source ends.  Stops early (and counts what it read) when the
 * time is up. */
static void do_seq(struct worker *w)
{
	static const size_t sizes[] = { 4096, 65536, 131072, 1u << 20, 100003, 7 };
	size_t ix, bs;
	const struct ent *e = rng_below(&w->rng, 6) || !w->cfg->bigs.n ?
		pick(w, &w->cfg->regs, &ix) : pick(w, &w->cfg->bigs, &ix);
	uint64_t off = 0;
	int fd, sfd;

	bs = sizes[rng_below(&w->rng, sizeof(sizes) / sizeof(sizes[0]) - (e->size > 65536))];
	op_begin(w, K_SEQ, ix, 0, (uint64_t)e->size);
	fd = mnt_open(w, e->path, O_RDONLY);
	if (fd < 0) {
		failf(w, e->path, "open: %s", strerror(errno));
		return;
	}
	sfd = src_open(w, e->path);
	if (sfd < 0) {
		failf(w, e->path, "source: open: %s", strerror(errno));
		goto out;
	}
	drop_cache(w, fd, 0, 0);
	for (;;) {
		ssize_t n = read(fd, w->a, bs), m;

		if (n < 0) {
			failf(w, e->path, "read of %zu bytes at %" PRIu64 ": %s", bs, off,
			      strerror(errno));
			goto out_src;
		}
		m = pread(sfd, w->b, bs, (off_t)off);
		if (m < 0) {
			failf(w, e->path, "source: pread: %s", strerror(errno));
			goto out_src;
		}
		if (n != m) {
			failf(w, e->path, "read of %zu bytes at %" PRIu64 " returned %zd, want %zd",
			      bs, off, n, m);
			goto out_src;
		}
		if (!same_bytes(w, e->path, "read", w->a, w->b, (size_t)n, off))
			goto out_src;
		off += (uint64_t)n;
		if (n == 0 || time_up(w))
			break;
	}
	op_end(w, K_SEQ, off);
out_src:
	close(sfd);
out:
	close(fd);
}

/* A region of a file mapped (shared or private), its pages touched in a
 * random order first (one byte of each), then compared whole. */
static void do_mmap(struct worker *w)
{
	size_t ix, len, pages;
	const struct ent *e = pick(w, &w->cfg->bigs, &ix);
	uint64_t off;
	ssize_t want;
	uint8_t *p;
	int fd;

	pick_range(w, (uint64_t)e->size, CFS_STRESS_MAP_MAX, &off, &len);
	off &= ~(uint64_t)(CFS_STRESS_PAGE - 1);
	if (off >= (uint64_t)e->size)
		off = 0;
	if (len > (uint64_t)e->size - off)
		len = (size_t)((uint64_t)e->size - off);
	op_begin(w, K_MMAP, ix, off, len);
	fd = mnt_open(w, e->path, O_RDONLY);
	if (fd < 0) {
		failf(w, e->path, "open: %s", strerror(errno));
		return;
	}
	drop_cache(w, fd, off, len);
	p = mmap(NULL, len, PROT_READ, rng_below(&w->rng, 2) ? MAP_SHARED : MAP_PRIVATE, fd,
		 (off_t)off);
	if (p == MAP_FAILED) {
		failf(w, e->path, "mmap of %zu bytes at %" PRIu64 ": %s", len, off, strerror(errno));
		goto out;
	}
	want = src_pread(w, e->path, w->b, len, off);
	if (want < 0)
		goto out_unmap;
	if ((size_t)want != len) {
		failf(w, e->path, "source: %zd bytes at %" PRIu64 ", want %zu", want, off, len);
		goto out_unmap;
	}
	pages = (len + CFS_STRESS_PAGE - 1) / CFS_STRESS_PAGE;
	for (size_t i = 0; i < pages; i++) {
		size_t at = (size_t)rng_below(&w->rng, pages) * CFS_STRESS_PAGE;

		at += (size_t)rng_below(&w->rng, CFS_STRESS_PAGE);
		if (at >= len)
			at = len - 1;
		if (p[at] != w->b[at]) {
			failf(w, e->path, "mmap of %zu bytes at %" PRIu64 ": byte %" PRIu64
			      " is 0x%02x, want 0x%02x", len, off, off + at, p[at], w->b[at]);
			goto out_unmap;
		}
	}
	if (same_bytes(w, e->path, "mmap", p, w->b, len, off))
		op_end(w, K_MMAP, len);
out_unmap:
	munmap(p, len);
out:
	close(fd);
}

/* The fields a container sees; a directory's size is the filesystem's
 * own business, its nlink is not. */
static bool same_stat(struct worker *w, const char *path, const char *how, const struct stat *got,
		      const struct stat *want)
{
	const char *what = NULL;

	if (got->st_mode != want->st_mode)
		what = "mode";
	else if (got->st_uid != want->st_uid)
		what = "uid";
	else if (got->st_gid != want->st_gid)
		what = "gid";
	else if (got->st_nlink != want->st_nlink)
		what = "nlink";
	else if (!S_ISDIR(want->st_mode) && got->st_size != want->st_size)
		what = "size";
	else if ((S_ISCHR(want->st_mode) || S_ISBLK(want->st_mode)) && got->st_rdev != want->st_rdev)
		what = "rdev";
	else if (got->st_mtim.tv_sec != want->st_mtim.tv_sec ||
		 got->st_mtim.tv_nsec != want->st_mtim.tv_nsec)
		what = "mtime";
	if (!what)
		return true;
	failf(w, path, "%s: %s differs: mode 0%o size %lld nlink %lu mtime %lld.%09ld, "
	      "want mode 0%o size %lld nlink %lu mtime %lld.%09ld", how, what,
	      (unsigned)got->st_mode, (long long)got->st_size, (unsigned long)got->st_nlink,
	      (long long)got->st_mtim.tv_sec, got->st_mtim.tv_nsec,
	      (unsigned)want->st_mode, (long long)want->st_size, (unsigned long)want->st_nlink,
	      (long long)want->st_mtim.tv_sec, want->st_mtim.tv_nsec);
	return false;
}

/* Whether a symlink at path with this target resolves inside the tree
 * (lexically: an absolute target, or more ".." than the link is deep,
 * would compare the host's files around the roots). */
static bool target_inside(const char *path, const char *target)
{
	long depth = 0;

	if (target[0] == '/')
		return false;
	for (const char *p = path; *p; p++)
		depth += *p == '/';
	for (const char *p = target; *p;) {
		size_t n = strcspn(p, "/");

		if (n == 2 && p[0] == '.' && p[1] == '.') {
			if (--depth < 0)
				return false;
		} else if (n && !(n == 1 && p[0] == '.')) {
			depth++;
		}
		p += n;
		p += *p == '/';
	}
	return true;
}

/* lstat() (and, for a symlink pointing inside the tree, stat()) of one
 * entry on both sides. */
static void do_stat(struct worker *w)
{
	size_t ix = (size_t)rng_below(&w->rng, w->cfg->nents);
	const struct ent *e = &w->cfg->ents[ix];
	struct stat got, want;

	op_begin(w, K_STAT, ix, 0, 0);
	if (fstatat(w->cfg->mntfd[w->mnt], e->path, &got, AT_SYMLINK_NOFOLLOW) < 0) {
		failf(w, e->path, "lstat: %s", strerror(errno));
		return;
	}
	if (fstatat(w->cfg->srcfd, e->path, &want, AT_SYMLINK_NOFOLLOW) < 0) {
		failf(w, e->path, "source: lstat: %s", strerror(errno));
		return;
	}
	if (!same_stat(w, e->path, "lstat", &got, &want))
		return;
	if (S_ISLNK(e->mode)) {
		char target[PATH_MAX];
		ssize_t n = readlinkat(w->cfg->srcfd, e->path, target, sizeof(target) - 1);
		int eg = 0, ew = 0;

		if (n < 0) {
			failf(w, e->path, "source: readlink: %s", strerror(errno));
			return;
		}
		target[n] = '\0';
		if (target_inside(e->path, target)) {
			if (fstatat(w->cfg->mntfd[w->mnt], e->path, &got, 0) < 0)
				eg = errno;
			if (fstatat(w->cfg->srcfd, e->path, &want, 0) < 0)
				ew = errno;
			if (eg != ew) {
				failf(w, e->path, "stat: %s, want %s", eg ? strerror(eg) : "success",
				      ew ? strerror(ew) : "success");
				return;
			}
			if (!eg && !same_stat(w, e->path, "stat", &got, &want))
				return;
		}
	}
	op_end(w, K_STAT, 0);
}

static void do_readlink(struct worker *w)
{
	char got[PATH_MAX + 1], want[PATH_MAX + 1];
	size_t ix;
	const struct ent *e = pick(w, &w->cfg->links, &ix);
	ssize_t n, m;

	op_begin(w, K_READLINK, ix, 0, 0);
	n = readlinkat(w->cfg->mntfd[w->mnt], e->path, got, sizeof(got));
	if (n < 0) {
		failf(w, e->path, "readlink: %s", strerror(errno));
		return;
	}
	m = readlinkat(w->cfg->srcfd, e->path, want, sizeof(want));
	if (m < 0) {
		failf(w, e->path, "source: readlink: %s", strerror(errno));
		return;
	}
	if (n != m || memcmp(got, want, (size_t)n)) {
		got[n] = want[m] = '\0';
		failf(w, e->path, "readlink: '%s', want '%s'", got, want);
		return;
	}
	op_end(w, K_READLINK, (uint64_t)n);
}

struct dent {
	char *name;
	unsigned char type;
};

static int dent_cmp(const void *a, const void *b)
{
	return strcmp(((const struct dent *)a)->name, ((const struct dent *)b)->name);
}

static void dents_free(struct dent *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i].name);
	free(v);
}

/* The entries of directory fd (consumed), "." and ".." included, sorted;
 * -errno on failure. */
static ssize_t list_dir(int fd, struct dent **out)
{
	struct dent *v = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	DIR *d = fdopendir(fd);
	int err = 0;

	if (!d) {
		err = errno;
		close(fd);
		return -err;
	}
	while ((errno = 0, de = readdir(d)) != NULL) {
		if (n == cap) {
			struct dent *p = realloc(v, (cap = cap ? cap * 2 : 64) * sizeof(*v));

			if (!p) {
				err = ENOMEM;
				break;
			}
			v = p;
		}
		v[n].name = strdup(de->d_name);
		if (!v[n].name) {
			err = ENOMEM;
			break;
		}
		v[n++].type = de->d_type;
	}
	if (!err)
		err = errno;
	closedir(d);
	if (err) {
		dents_free(v, n);
		return -err;
	}
	if (n)
		qsort(v, n, sizeof(*v), dent_cmp);
	*out = v;
	return (ssize_t)n;
}

/* Lists a directory on both sides and compares names and types, lstat()s
 * some of its entries by name (lookups), then goes on into one of its
 * subdirectories, a few levels down. */
static void do_readdir(struct worker *w)
{
	size_t ix;
	const struct ent *e = pick(w, &w->cfg->dirs, &ix);
	char *path = strdup(e->path);
	uint64_t entries = 0;

	op_begin(w, K_READDIR, ix, 0, 0);
	for (unsigned depth = 0; path && depth < CFS_STRESS_WALK_DEPTH && !time_up(w); depth++) {
		struct dent *got = NULL, *want = NULL;
		ssize_t n, m;
		size_t sub = 0, nsub = 0;
		int fd, sfd;
		char *next = NULL;

		fd = mnt_open(w, path, O_RDONLY | O_DIRECTORY);
		if (fd < 0) {
			failf(w, path, "open directory: %s", strerror(errno));
			break;
		}
		sfd = openat(w->cfg->srcfd, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (sfd < 0) {
			failf(w, path, "source: open directory: %s", strerror(errno));
			close(fd);
			break;
		}
		n = list_dir(fd, &got);
		m = list_dir(sfd, &want);
		if (n < 0 || m < 0) {
			failf(w, path, "%sreaddir: %s", n < 0 ? "" : "source: ",
			      strerror((int)-(n < 0 ? n : m)));
			goto next;
		}
		if (n != m) {
			failf(w, path, "readdir: %zd entries, want %zd", n, m);
			goto next;
		}
		for (ssize_t i = 0; i < n; i++) {
			if (strcmp(got[i].name, want[i].name)) {
				failf(w, path, "readdir: entry %zd is '%s', want '%s'", i, got[i].name,
				      want[i].name);
				goto next;
			}
			if (got[i].type != DT_UNKNOWN && want[i].type != DT_UNKNOWN &&
			    got[i].type != want[i].type) {
				failf(w, path, "readdir: '%s' has type %u, want %u", got[i].name,
				      got[i].type, want[i].type);
				goto next;
			}
			if (want[i].type == DT_DIR && strcmp(want[i].name, ".") &&
			    strcmp(want[i].name, "..") && rng_below(&w->rng, ++nsub) == 0)
				sub = (size_t)i;
		}
		entries += (uint64_t)n;
		for (unsigned k = 0; k < CFS_STRESS_WALK_STATS && n > 2; k++) {
			const char *name = want[rng_below(&w->rng, (uint64_t)n)].name;
			char *p = path_join(path, name);
			struct stat sg, sw;

			if (!p || !strcmp(name, "..") || !strcmp(name, "."))
				goto next_stat;
			if (fstatat(w->cfg->mntfd[w->mnt], p, &sg, AT_SYMLINK_NOFOLLOW) < 0) {
				failf(w, p, "lstat: %s", strerror(errno));
				free(p);
				goto next;
			}
			if (fstatat(w->cfg->srcfd, p, &sw, AT_SYMLINK_NOFOLLOW) < 0) {
				failf(w, p, "source: lstat: %s", strerror(errno));
				free(p);
				goto next;
			}
			if (!same_stat(w, p, "lstat", &sg, &sw)) {
				free(p);
				goto next;
			}
next_stat:
			free(p);
		}
		if (nsub)
			next = path_join(path, want[sub].name);
next:
		dents_free(got, n > 0 ? (size_t)n : 0);
		dents_free(want, m > 0 ? (size_t)m : 0);
		free(path);
		path = next;
		if (!next || atomic_load(&w->cfg->sh->stop))
			break;
	}
	free(path);
	if (!atomic_load(&w->cfg->sh->stop))
		op_end(w, K_READDIR, entries);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	unsigned total = 0;

	for (int k = 0; k < K_N; k++)
		total += kind_weight[k];
	while (!time_up(w)) {
		unsigned r = (unsigned)rng_below(&w->rng, total);
		enum kind k = 0;

		while (r >= kind_weight[k])
			r -= kind_weight[k++];
		w->mnt = (int)rng_below(&w->rng, w->cfg->nmnt);
		if ((k == K_PREAD || k == K_DIRECT || k == K_MMAP) && !w->cfg->bigs.n)
			k = K_SEQ;
		if (k == K_READLINK && !w->cfg->links.n)
			k = K_STAT;
		switch (k) {
		case K_PREAD: do_pread(w, false); break;
		case K_DIRECT: do_pread(w, true); break;
		case K_SEQ: if (w->cfg->regs.n) do_seq(w); break;
		case K_MMAP: do_mmap(w); break;
		case K_READDIR: do_readdir(w); break;
		case K_STAT: do_stat(w); break;
		case K_READLINK: do_readlink(w); break;
		default: break;
		}
		atomic_store(&w->slot->busy_since, 0);
	}
	return NULL;
}

/* One process: cfg->threads workers; exits 0, or 1 when one failed. */
static int proc_main(struct cfg *c, unsigned p)
{
	struct worker *w = calloc(c->threads, sizeof(*w));
	pthread_t *tid = calloc(c->threads, sizeof(*tid));
	unsigned started = 0;

	if (!w || !tid) {
		fprintf(stderr, "cfs-stress: out of memory\n");
		return 1;
	}
	for (unsigned t = 0; t < c->threads; t++) {
		struct worker *x = &w[t];
		int err;

		x->cfg = c;
		x->id = p * c->threads + t;
		x->slot = &c->sh->slot[x->id];
		x->rng = c->seed ^ ((uint64_t)x->id * 0x2545f4914f6cdd1dULL);
		rng_next(&x->rng);
		if (posix_memalign((void **)&x->a, CFS_STRESS_PAGE, CFS_STRESS_MAP_MAX) ||
		    posix_memalign((void **)&x->b, CFS_STRESS_PAGE, CFS_STRESS_MAP_MAX)) {
			fprintf(stderr, "cfs-stress: out of memory\n");
			atomic_store(&c->sh->stop, 1);
			atomic_fetch_add(&c->sh->failures, 1);
			break;
		}
		err = pthread_create(&tid[t], NULL, worker_main, x);
		if (err) {
			fprintf(stderr, "cfs-stress: pthread_create: %s\n", strerror(err));
			atomic_store(&c->sh->stop, 1);
			atomic_fetch_add(&c->sh->failures, 1);
			break;
		}
		started++;
	}
	for (unsigned t = 0; t < started; t++)
		pthread_join(tid[t], NULL);
	for (unsigned t = 0; t < c->threads; t++) {
		free(w[t].a);
		free(w[t].b);
	}
	free(tid);
	free(w);
	return atomic_load(&c->sh->failures) ? 1 : 0;
}

/* ---- the parent: watchdog and totals ---- */

static void report_busy(struct cfg *c, unsigned nslots, uint64_t older_than_ns)
{
	uint64_t now = now_ns();

	for (unsigned i = 0; i < nslots; i++) {
		struct slot *s = &c->sh->slot[i];
		uint64_t since = atomic_load(&s->busy_since);
		int64_t ent = atomic_load(&s->ent);

		if (!since || now - since < older_than_ns)
			continue;
		fprintf(stderr, "cfs-stress: worker %u: %s in flight for %.1f s: %s ", i,
			kind_name[atomic_load(&s->kind)], (double)(now - since) / NS_PER_SEC,
			c->mnt[atomic_load(&s->mnt)]);
		if (ent >= 0 && (size_t)ent < c->nents)
			put_escaped(stderr, c->ents[ent].path);
		fprintf(stderr, " off %" PRId64 " len %" PRId64 "\n", atomic_load(&s->off),
			atomic_load(&s->len));
	}
}

static void cfg_free(struct cfg *c)
{
	for (size_t i = 0; i < c->nents; i++)
		free(c->ents[i].path);
	free(c->ents);
	free(c->regs.ix);
	free(c->bigs.ix);
	free(c->dirs.ix);
	free(c->links.ix);
}

static bool parse_uint(const char *s, unsigned max, unsigned *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end || v > max)
		return false;
	*out = (unsigned)v;
	return true;
}

static void usage(FILE *f)
{
	fputs("usage: cfs-stress [--seconds N] [--procs P] [--threads T] [--seed S]\n"
	      "                  [--drop PCT] [--stall-max SECS] SRC MNT [MNT...]\n", f);
}

int main(int argc, char **argv)
{
	struct cfg c = {
		.seconds = 30, .procs = 3, .threads = 4, .drop_pct = 50, .stall_max = 60,
		.seed = 1, .srcfd = -1,
	};
	unsigned nslots, running, dead = 0;
	uint64_t start, ops = 0, worst = 0;
	pid_t *pids;
	int ret;

	for (int i = 1; i < argc; i++) {
		unsigned *u = NULL, max = 100000;
		const char *a = argv[i];

		if (!strcmp(a, "--seconds"))
			u = &c.seconds;
		else if (!strcmp(a, "--procs"))
			u = &c.procs, max = 64;
		else if (!strcmp(a, "--threads"))
			u = &c.threads, max = 64;
		else if (!strcmp(a, "--drop"))
			u = &c.drop_pct, max = 100;
		else if (!strcmp(a, "--stall-max"))
			u = &c.stall_max;
		if (u || !strcmp(a, "--seed")) {
			char *end;
			bool ok;

			if (i + 1 >= argc) {
				usage(stderr);
				return 2;
			}
			if (u) {
				ok = parse_uint(argv[++i], max, u);
			} else {
				errno = 0;
				c.seed = strtoull(argv[++i], &end, 0);
				ok = !errno && end != argv[i] && !*end;
			}
			if (!ok) {
				fprintf(stderr, "cfs-stress: bad %s '%s'\n", a, argv[i]);
				return 2;
			}
		} else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			return 0;
		} else if (a[0] == '-') {
			usage(stderr);
			return 2;
		} else if (!c.src) {
			c.src = a;
		} else if (c.nmnt < CFS_STRESS_MAX_MOUNTS) {
			c.mnt[c.nmnt++] = a;
		} else {
			fprintf(stderr, "cfs-stress: at most %d mounts\n", CFS_STRESS_MAX_MOUNTS);
			return 2;
		}
	}
	if (!c.src || !c.nmnt || !c.procs || !c.threads || c.procs * c.threads > CFS_STRESS_MAX_WORKERS) {
		usage(stderr);
		return 2;
	}
	c.srcfd = open(c.src, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (c.srcfd < 0) {
		fprintf(stderr, "cfs-stress: %s: %s\n", c.src, strerror(errno));
		return 2;
	}
	for (unsigned i = 0; i < c.nmnt; i++) {
		c.mntfd[i] = open(c.mnt[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (c.mntfd[i] < 0) {
			fprintf(stderr, "cfs-stress: %s: %s\n", c.mnt[i], strerror(errno));
			return 2;
		}
	}
	{
		struct stat sb;

		ret = fstat(c.srcfd, &sb) < 0 ? -errno : 0;
		if (ret < 0 || (ret = ent_add(&c, strdup("."), &sb)) < 0 ||
		    (ret = walk_src(&c, ".")) < 0) {
			fprintf(stderr, "cfs-stress: walking %s: %s\n", c.src, strerror(-ret));
			return 2;
		}
	}
	if (!c.regs.n) {
		fprintf(stderr, "cfs-stress: %s holds no readable file\n", c.src);
		return 2;
	}

	nslots = c.procs * c.threads;
	c.sh = mmap(NULL, sizeof(*c.sh) + nslots * sizeof(struct slot), PROT_READ | PROT_WRITE,
		    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	pids = calloc(c.procs, sizeof(*pids));
	if (c.sh == MAP_FAILED || !pids) {
		fprintf(stderr, "cfs-stress: out of memory\n");
		return 2;
	}
	start = now_ns();
	c.deadline = start + (uint64_t)c.seconds * NS_PER_SEC;
	fflush(stdout);
	fflush(stderr);
	for (unsigned p = 0; p < c.procs; p++) {
		pids[p] = fork();
		if (pids[p] == 0)
			_exit(proc_main(&c, p));
		if (pids[p] < 0) {
			fprintf(stderr, "cfs-stress: fork: %s\n", strerror(errno));
			atomic_store(&c.sh->stop, 1);
			atomic_fetch_add(&c.sh->failures, 1);
			c.procs = p;
			break;
		}
	}

	/* Watchdog: a worker in one operation for longer than stall_max is a
	 * hang; the run ends, and the children are killed. */
	running = c.procs;
	while (running) {
		uint64_t stall = (uint64_t)c.stall_max * NS_PER_SEC, now = now_ns();
		bool hung = false;
		int st;
		pid_t pid = waitpid(-1, &st, WNOHANG);

		if (pid > 0) {
			running--;
			if (WIFSIGNALED(st)) {
				fprintf(stderr, "cfs-stress: a worker process died of signal %d (%s); "
					"operations in flight:\n", WTERMSIG(st), strsignal(WTERMSIG(st)));
				report_busy(&c, nslots, 0);
				atomic_store(&c.sh->stop, 1);
				dead++;
			} else if (WEXITSTATUS(st) && !atomic_load(&c.sh->failures)) {
				dead++;
			}
			continue;
		}
		for (unsigned i = 0; i < nslots; i++) {
			uint64_t since = atomic_load(&c.sh->slot[i].busy_since);

			hung |= since && now > since && now - since > stall;
		}
		if (hung) {
			fprintf(stderr, "cfs-stress: hang: an operation has been in flight for over "
				"%u s:\n", c.stall_max);
			report_busy(&c, nslots, stall);
			atomic_store(&c.sh->stop, 1);
			atomic_fetch_add(&c.sh->failures, 1);
			for (unsigned p = 0; p < c.procs; p++)
				kill(pids[p], SIGKILL);
			while (wait(NULL) > 0)
				;
			ret = 1;
			goto out;
		}
		usleep(100000);
	}

	printf("cfs-stress: %.1f s, %u procs x %u threads on %u mount%s:",
	       (double)(now_ns() - start) / NS_PER_SEC, c.procs, c.threads, c.nmnt,
	       c.nmnt == 1 ? "" : "s");
	for (int k = 0; k < K_N; k++) {
		uint64_t n = 0, b = 0;

		for (unsigned i = 0; i < nslots; i++) {
			n += atomic_load(&c.sh->slot[i].ops[k]);
			b += atomic_load(&c.sh->slot[i].bytes[k]);
		}
		ops += n;
		if (k <= K_MMAP)
			printf(" %s %" PRIu64 " (%.1f MiB)", kind_name[k], n, (double)b / (1 << 20));
		else if (k == K_READDIR)
			printf(" %s %" PRIu64 " (%" PRIu64 " entries)", kind_name[k], n, b);
		else
			printf(" %s %" PRIu64, kind_name[k], n);
	}
	for (unsigned i = 0; i < nslots; i++) {
		uint64_t t = atomic_load(&c.sh->slot[i].worst_ns);

		worst = t > worst ? t : worst;
	}
	printf("; %" PRIu64 " ops verified, slowest %.0f ms, %d failures\n", ops,
	       (double)worst / 1e6, atomic_load(&c.sh->failures) + (int)dead);
	ret = atomic_load(&c.sh->failures) || dead ? 1 : 0;
out:
	munmap(c.sh, sizeof(*c.sh) + nslots * sizeof(struct slot));
	free(pids);
	cfg_free(&c);
	return ret;
}
