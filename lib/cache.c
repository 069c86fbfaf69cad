/* SPDX-License-Identifier: MIT */
/*
 * Chunk cache (cache.h).  One mutex guards both tables (handles, and the
 * view of the disk directory) and their LRU lists; it is never held across
 * I/O, a load or a large free.  A handle is its own table entry: while it
 * loads, later callers sleep on its condition variable holding a
 * reference, so it outlives a failed load.  A memory handle leaves the
 * table once its file is written: from then on the file, through the page
 * cache, serves it.
 *
 * The disk tier's list is this process's view of a directory that other
 * processes write to and evict from.  A pass (disk_rescan) lists the
 * directory unlocked, folds the listing into the view under the mutex, and
 * evicts to disk_max while holding flock() on <dir>/.lock.  A process that
 * finds the lock taken appends a byte to the lock file first: the holder
 * checks its size once it lets go and goes round again, so an entry renamed
 * after the holder's listing is never left uncounted.
 *
 * A miss is single-flight across those processes too: before loading, it
 * locks the chunk's byte of <dir>/.fetch.lock (an OFD lock, by digest),
 * looks in the directory again once it has it (another process may just
 * have written the entry) and keeps it until the entry is renamed into
 * place or its write failed, on the ring's thread when the write goes
 * through io_uring: a waiter that found nothing would load it again.  A
 * lock, not a marker file, because the kernel lets go of it when its
 * holder dies; a live holder that hangs is waited for fetch_wait_ms at
 * most, by polling, since no lock call waits with a timeout.  Byte ranges
 * of one file, not a lock file per chunk, because a miss then creates and
 * unlinks nothing (a lock file per chunk cost a 4 KiB miss 50-60% more
 * CPU), nothing is left behind by a dead holder, and no taker can lock a
 * file its holder just unlinked.
 */
#include <dirent.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#include "cache.h"
#include "format.h"
#include "uring.h"
#include "util.h"

#define MEM_MAX_DEFAULT (256ull << 20)
#define DISK_MAX_DEFAULT (10ull << 30)
#define TABLE_MIN_BUCKETS 1024u
/* A temporary file this old is left over from a crash, not being written. */
#define TMP_STALE_SEC 60
/* A pass over the directory after writing disk_max / RESCAN_FRACTION bytes. */
#define RESCAN_FRACTION 8
/* Passes one call makes at most while other processes keep asking. */
#define RESCAN_ROUNDS 4
/* A disk hit moves the entry's mtime forward at most this often. */
#define TOUCH_SEC 60
#define LOCK_NAME ".lock"
/* A miss waits this long for another process fetching the same chunk,
 * then fetches too (cache.h): above a chunk's usual fetch, below the
 * fetcher's 30 s deadline, which ends a live but stuck fetch anyway. */
#define FETCH_WAIT_MS_DEFAULT 10000u
/* A taken chunk lock is polled from 1 ms, doubling up to this: the
 * delay a waiter adds to a fetch it waited for. */
#define FETCH_POLL_MAX_MS 8u
/* The chunk locks' file: a name no pass lists (only "hh" directories). */
#define FETCH_LOCK_NAME ".fetch.lock"
/* The lock file grows a byte per contended pass; its holder trims it. */
#define LOCK_TRIM 4096
#define NS_PER_SEC 1000000000ull
/* Listed entries folded into the view per hold of the mutex. */
#define FOLD_BATCH 256
/* Entries are the decompressed bytes of image files, 0600 ones included,
 * and the index names what 0700 directories hold: a mount checks modes for
 * its readers, so the cache must not let them around it.  Owner-only (root
 * for a mount), even in a directory someone made 0755 (docs/CACHE.md). */
#define DISK_FILE_MODE 0600
#define DISK_DIR_MODE 0700
/* Files written at once through the ring, and the bytes queued for it
 * before a loading thread waits (each holds a reference to its buffer). */
#define URING_DEPTH 64
#define URING_MAX_BYTES (64u << 20)
/* Cache files kept open for hits, at most; fewer under a low fd limit. */
#define MAX_FILES_DEFAULT 4096u
#define MAX_FILES_MIN 16u
/* A first-seen entry is hashed through a buffer this size. */
#define VERIFY_BUF (256u << 10)

/* The trailer follows the content, so that the content starts on a page
 * boundary of the file: a splice or read of a chunk touches its own pages
 * only.  Version 1 entries (a header in front) fail the check and are
 * loaded again. */
#define DISK_MAGIC "CFSCACH2"
struct disk_hdr {
	uint8_t magic[8];
	uint64_t len;      /* le */
	uint64_t xxh;      /* le, XXH3-64 of the content */
	uint64_t reserved; /* 0 */
};
static_assert(sizeof(struct disk_hdr) == 32, "cache entry trailer size");

/* "hh/" + 64 hex + NUL; ".tmp." + 16 hex more for temporaries. */
#define DISK_PATH_LEN (3 + CFS_DIGEST_HEX_LEN + 1)
#define DISK_TMP_LEN (DISK_PATH_LEN + 5 + 16)

/* An entry of a table and of an LRU list (next = more recent). */
struct node {
	cfs_digest d;
	struct node *hnext;
	struct node *prev, *next;
};

struct table {
	struct node **b;
	size_t mask;
	size_t count;
};

/* What a file was when it was last verified: a write, a truncation or a
 * replacement since changes one of these (ctime cannot be set back). */
struct ident {
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec ctime;
	struct timespec mtime; /* what the seal covers */
};

/* An entry whose content was verified carries a seal: an xattr holding a
 * hash of its digest, size and mtime.  Anything that writes to the file
 * through the filesystem moves its mtime, so the seal no longer matches,
 * and a process that opens the entry for the first time trusts it without
 * hashing only while it does.  Where the filesystem has no user xattrs,
 * first-seen entries are hashed. */
#define SEAL_XATTR "user.cfs.seal"

struct cfs_buf {
	struct node n;          /* c->mem while cached, under c->lock */
	atomic_uint refs;
	uint32_t len;
	int fd;                 /* >= 0: a file handle, content at offset 0 */
	struct ident id;        /* file handles: the file as verified */
	bool loading;           /* under c->lock */
	int err;                /* under c->lock: result for waiters */
	pthread_cond_t done;    /* broadcast when loading ends */
	uint8_t *data;          /* memory handles: the content */
};

struct disk_ent {
	struct node n;
	uint64_t size;          /* file bytes, trailer included */
	uint64_t used_ns;       /* last use here, or the file's mtime: the LRU key */
	int64_t stamp;          /* the file's mtime (s) as last set or seen */
	uint32_t confirmed;     /* c->gen when this process last wrote or read it */
	uint32_t seen;          /* c->gen of the last pass that listed it */
	bool writing;           /* reserved by a writer: only it may drop this */
	bool ours;              /* this process wrote it: trusted at first open */
	bool known;             /* id holds the file as this process verified it */
	struct ident id;
	struct cfs_buf *pending; /* while writing through the ring: the content */
};

struct cfs_cache {
	pthread_mutex_t lock;
	struct table mem, disk;         /* handles; the disk view */
	struct node mem_lru, disk_lru;  /* sentinels */
	uint64_t mem_bytes, mem_max;    /* memory handles */
	uint32_t files, max_files;      /* file handles */
	uint64_t disk_bytes, disk_max;
	int dirfd;                      /* -1: memory only */
	int lockfd;                     /* <dir>/.lock; -1: none */
	int fetchfd;                    /* <dir>/.fetch.lock; -1: no chunk locks */
	struct table held;              /* chunk locks this process holds (nodes) */
	unsigned fetch_wait_ms;         /* for another process's load */
	struct cfs_uring *ring;         /* NULL: synchronous disk writes */
	uint64_t since_scan;            /* bytes written since the last pass */
	uint32_t gen;                   /* passes begun */
	bool scanning, scan_again;      /* a pass is running; one more was asked */
	bool rescan_due;                /* a ring write asked for a pass */

	_Atomic uint64_t mem_hits, file_hits, disk_hits, misses, load_errors;
	_Atomic uint64_t disk_bad, disk_write_errors, evictions, rescans;
	_Atomic uint64_t verifies, stale;
	_Atomic uint64_t shared_waits, shared_hits, shared_timeouts;
	_Atomic uint64_t warned[2];     /* errno values already logged */
};

static void stat_add(_Atomic uint64_t *v, uint64_t n)
{
	atomic_fetch_add_explicit(v, n, memory_order_relaxed);
}

static uint64_t stat_load(_Atomic uint64_t *v)
{
	return atomic_load_explicit(v, memory_order_relaxed);
}

/* ---- tables and lists ---- */

static int table_init(struct table *t)
{
	t->b = calloc(TABLE_MIN_BUCKETS, sizeof(*t->b));
	t->mask = TABLE_MIN_BUCKETS - 1;
	t->count = 0;
	return t->b ? 0 : -ENOMEM;
}

/* Digests are SHA-256 outputs of content that verified: uniform bits. */
static size_t table_slot(const struct table *t, const cfs_digest *d)
{
	uint64_t h;

	memcpy(&h, d->b, sizeof(h));
	return (size_t)h & t->mask;
}

static struct node *table_find(const struct table *t, const cfs_digest *d)
{
	for (struct node *n = t->b[table_slot(t, d)]; n; n = n->hnext)
		if (cfs_digest_eq(&n->d, d))
			return n;
	return NULL;
}

static void table_grow(struct table *t)
{
	size_t nb = (t->mask + 1) * 2;
	struct node **b = calloc(nb, sizeof(*b));
	struct table nt = { b, nb - 1, t->count };

	if (!b)
		return; /* longer chains, still correct */
	for (size_t i = 0; i <= t->mask; i++) {
		struct node *n = t->b[i], *next;

		for (; n; n = next) {
			size_t s = table_slot(&nt, &n->d);

			next = n->hnext;
			n->hnext = b[s];
			b[s] = n;
		}
	}
	free(t->b);
	*t = nt;
}

static void table_insert(struct table *t, struct node *n)
{
	size_t s;

	if (t->count >= t->mask + 1)
		table_grow(t);
	s = table_slot(t, &n->d);
	n->hnext = t->b[s];
	t->b[s] = n;
	t->count++;
}

static void table_remove(struct table *t, struct node *n)
{
	struct node **p = &t->b[table_slot(t, &n->d)];

	for (; *p; p = &(*p)->hnext) {
		if (*p == n) {
			*p = n->hnext;
			n->hnext = NULL;
			t->count--;
			return;
		}
	}
}

static void list_init(struct node *head)
{
	head->prev = head->next = head;
}

static void list_del(struct node *n)
{
	n->prev->next = n->next;
	n->next->prev = n->prev;
	n->prev = n->next = n;
}

static void list_add_head(struct node *head, struct node *n)
{
	n->next = head->next;
	n->prev = head;
	head->next->prev = n;
	head->next = n;
}

static void list_touch(struct node *head, struct node *n)
{
	list_del(n);
	list_add_head(head, n);
}

/* Moves every node of from onto the empty list to. */
static void list_move_all(struct node *to, struct node *from)
{
	if (from->next == from)
		return;
	to->next = from->next;
	to->prev = from->prev;
	to->next->prev = to;
	to->prev->next = to;
	list_init(from);
}

#define buf_of(np) ((struct cfs_buf *)((char *)(np) - offsetof(struct cfs_buf, n)))
#define ent_of(np) ((struct disk_ent *)((char *)(np) - offsetof(struct disk_ent, n)))

/* ---- buffers ---- */

/* A placeholder: the caller that inserts it fills it as a file or a
 * memory handle. */
static struct cfs_buf *buf_new(const cfs_digest *d, uint32_t len)
{
	struct cfs_buf *b = malloc(sizeof(*b));

	if (!b)
		return NULL;
	memset(b, 0, sizeof(*b));
	b->fd = -1;
	b->n.d = *d;
	list_init(&b->n);
	/* One reference for the cache's table, one for the loader. */
	atomic_init(&b->refs, 2);
	b->len = len;
	b->loading = true;
	if (pthread_cond_init(&b->done, NULL)) {
		free(b);
		return NULL;
	}
	return b;
}

static void buf_free(struct cfs_buf *b)
{
	if (b->fd >= 0)
		close(b->fd);
	free(b->data);
	pthread_cond_destroy(&b->done);
	free(b);
}

static void buf_ref(struct cfs_buf *b)
{
	atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
}

void cfs_buf_unref(struct cfs_buf *b)
{
	if (b && atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) == 1)
		buf_free(b);
}

const uint8_t *cfs_buf_data(const struct cfs_buf *b)
{
	return b->data;
}

int cfs_buf_fd(const struct cfs_buf *b)
{
	return b->fd;
}

int cfs_buf_read(const struct cfs_buf *b, void *dst, size_t n, uint64_t off)
{
	int ret;

	if (off > b->len || n > b->len - off)
		return -EINVAL;
	if (b->fd < 0) {
		memcpy(dst, b->data + off, n);
		return 0;
	}
	ret = cfs_pread_full(b->fd, dst, n, (off_t)off);
	/* Short: truncated since it was verified.  An I/O error says the
	 * same to the caller: this file cannot serve, the store can. */
	return ret < 0 ? -ESTALE : 0;
}

void cfs_buf_willneed(const struct cfs_buf *b)
{
	if (b->fd >= 0)
		(void)posix_fadvise(b->fd, 0, b->len, POSIX_FADV_WILLNEED);
}

size_t cfs_buf_len(const struct cfs_buf *b)
{
	return b->len;
}

/* Takes a loaded handle out of the table and its LRU; the table's
 * reference goes on *victims (through hnext), to be released after
 * unlocking, since the last reference may free megabytes or close. */
static void handle_remove_locked(struct cfs_cache *c, struct cfs_buf *b, struct node **victims)
{
	list_del(&b->n);
	table_remove(&c->mem, &b->n);
	if (b->fd >= 0)
		c->files--;
	else
		c->mem_bytes -= b->len;
	b->n.hnext = *victims;
	*victims = &b->n;
}

/* Drops least recently used handles until mem_max and max_files hold. */
static void mem_evict_locked(struct cfs_cache *c, struct node **victims)
{
	struct node *n = c->mem_lru.prev;

	while ((c->mem_bytes > c->mem_max || c->files > c->max_files) && n != &c->mem_lru) {
		struct node *prev = n->prev;
		struct cfs_buf *b = buf_of(n);

		if (b->fd >= 0 ? c->files > c->max_files : c->mem_bytes > c->mem_max) {
			handle_remove_locked(c, b, victims);
			stat_add(&c->evictions, 1);
		}
		n = prev;
	}
}

/* The handle of d, if the table holds a loaded one. */
static struct cfs_buf *handle_find_locked(struct cfs_cache *c, const cfs_digest *d)
{
	struct node *n = table_find(&c->mem, d);

	return n && !buf_of(n)->loading ? buf_of(n) : NULL;
}

static void release_victims(struct node *victims)
{
	while (victims) {
		struct node *next = victims->hnext;

		cfs_buf_unref(buf_of(victims));
		victims = next;
	}
}

/* ---- disk tier ---- */

static void disk_path(const cfs_digest *d, char out[DISK_PATH_LEN])
{
	char hex[CFS_DIGEST_HEX_LEN + 1];

	cfs_digest_hex(d, hex);
	snprintf(out, DISK_PATH_LEN, "%.2s/%s", hex, hex);
}

/* Logs a disk write failure once per errno value; the data is still
 * served from memory, so the caller never sees it. */
static void disk_write_failed(struct cfs_cache *c, int err)
{
	unsigned e = (unsigned)-err;

	stat_add(&c->disk_write_errors, 1);
	if (e < 128) {
		uint64_t bit = 1ull << (e % 64);

		if (atomic_fetch_or(&c->warned[e / 64], bit) & bit)
			return;
	}
	cfs_warn("chunk cache: cannot write to the cache directory (%s); "
		 "serving from memory", cfs_strerror(err));
}

/* Forgets an entry whose file turned out missing or bad. */
static void disk_forget(struct cfs_cache *c, const cfs_digest *d)
{
	struct disk_ent *e = NULL;
	struct node *n;

	pthread_mutex_lock(&c->lock);
	n = table_find(&c->disk, d);
	if (n && !ent_of(n)->writing) {
		e = ent_of(n);
		table_remove(&c->disk, n);
		list_del(n);
		c->disk_bytes -= e->size;
	}
	pthread_mutex_unlock(&c->lock);
	free(e);
}

/* The wall clock, as file mtimes use it: CLOCK_REALTIME_COARSE is fine for
 * the LRU key of a hit; a new entry takes CLOCK_REALTIME, so that entries
 * written one after another stay in order (their files get that time). */
static uint64_t wall_ns(clockid_t clk)
{
	struct timespec ts;

	clock_gettime(clk, &ts);
	return (uint64_t)ts.tv_sec * NS_PER_SEC + (uint64_t)ts.tv_nsec;
}

/* Marks an entry just read as recently used, adding it when another
 * process sharing the directory wrote it.  Returns true when its mtime is
 * due to be moved forward, so that other processes see it in use. */
/* Marks an entry of the view used now (this process evicts by it);
 * returns true when its file's mtime is due to move forward too. */
static bool ent_use_locked(struct cfs_cache *c, struct disk_ent *e)
{
	uint64_t now = wall_ns(CLOCK_REALTIME_COARSE);

	list_touch(&c->disk_lru, &e->n);
	e->used_ns = now;
	e->confirmed = c->gen;
	if ((int64_t)(now / NS_PER_SEC) - e->stamp < TOUCH_SEC)
		return false;
	e->stamp = (int64_t)(now / NS_PER_SEC);
	return true;
}

static bool disk_touch(struct cfs_cache *c, const cfs_digest *d, uint64_t size)
{
	struct disk_ent *e = NULL;
	bool refresh = false;
	struct node *n;

	pthread_mutex_lock(&c->lock);
	n = table_find(&c->disk, d);
	if (n) {
		e = ent_of(n);
	} else {
		e = calloc(1, sizeof(*e));
		if (e) {
			e->n.d = *d;
			e->size = size;
			table_insert(&c->disk, &e->n);
			list_add_head(&c->disk_lru, &e->n);
			c->disk_bytes += size;
		}
	}
	if (e)
		refresh = ent_use_locked(c, e);
	pthread_mutex_unlock(&c->lock);
	return refresh;
}

/* Deletes a torn, truncated or flipped entry; the load rewrites it. */
static void disk_drop(struct cfs_cache *c, const cfs_digest *d)
{
	char path[DISK_PATH_LEN];

	disk_path(d, path);
	stat_add(&c->disk_bad, 1);
	cfs_info("chunk cache: entry %s failed its check; reloading", path);
	unlinkat(c->dirfd, path, 0);
	disk_forget(c, d);
}

static int ident_get(int fd, struct ident *id)
{
	struct stat sb;

	if (fstat(fd, &sb) < 0)
		return -errno;
	id->dev = sb.st_dev;
	id->ino = sb.st_ino;
	id->size = sb.st_size;
	id->ctime = sb.st_ctim;
	id->mtime = sb.st_mtim;
	return 0;
}

static uint64_t seal_of(const cfs_digest *d, const struct ident *id)
{
	struct {
		uint8_t d[CFS_DIGEST_LEN];
		int64_t size, sec, nsec;
	} s;

	memset(&s, 0, sizeof(s));
	memcpy(s.d, d->b, sizeof(s.d));
	s.size = (int64_t)id->size;
	s.sec = (int64_t)id->mtime.tv_sec;
	s.nsec = (int64_t)id->mtime.tv_nsec;
	return XXH3_64bits(&s, sizeof(s));
}

/* Seals fd as it is now and returns its identity after (the xattr moves
 * ctime).  Best effort: an unsealed entry costs one hash per process. */
static void seal_set(int fd, const cfs_digest *d, struct ident *id)
{
	uint64_t v;

	if (ident_get(fd, id) < 0)
		return;
	v = htole64(seal_of(d, id));
	if (fsetxattr(fd, SEAL_XATTR, &v, sizeof(v), 0) == 0)
		ident_get(fd, id);
}

static bool seal_ok(int fd, const cfs_digest *d, const struct ident *id)
{
	uint64_t v;

	return fgetxattr(fd, SEAL_XATTR, &v, sizeof(v)) == (ssize_t)sizeof(v) &&
	       le64toh(v) == seal_of(d, id);
}

static bool ident_eq(const struct ident *a, const struct ident *b)
{
	return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
	       a->ctime.tv_sec == b->ctime.tv_sec && a->ctime.tv_nsec == b->ctime.tv_nsec;
}

/* Whether this process may use the file as it is without hashing it: it
 * verified the file in this very state, or wrote it and never opened it
 * since, or the file carries its seal.  Records nothing. */
static bool disk_trusted(struct cfs_cache *c, int fd, const cfs_digest *d, const struct ident *id)
{
	struct node *n;
	bool ok = false;

	pthread_mutex_lock(&c->lock);
	n = table_find(&c->disk, d);
	if (n)
		ok = ent_of(n)->known ? ident_eq(&ent_of(n)->id, id) : ent_of(n)->ours;
	pthread_mutex_unlock(&c->lock);
	return ok || seal_ok(fd, d, id);
}

static void disk_remember(struct cfs_cache *c, const cfs_digest *d, const struct ident *id)
{
	struct node *n;

	pthread_mutex_lock(&c->lock);
	n = table_find(&c->disk, d);
	if (n) {
		ent_of(n)->known = true;
		ent_of(n)->id = *id;
	}
	pthread_mutex_unlock(&c->lock);
}

/* XXH3 of the first len bytes of fd against want: 0, -EUCLEAN (mismatch
 * or short), or -errno of a read that failed. */
static int disk_hash(struct cfs_cache *c, int fd, uint32_t len, uint64_t want)
{
	XXH3_state_t *st = XXH3_createState();
	uint8_t *buf = malloc(VERIFY_BUF);
	uint64_t off = 0;
	int ret = 0;

	if (!st || !buf) {
		ret = -ENOMEM;
		goto out;
	}
	stat_add(&c->verifies, 1);
	XXH3_64bits_reset(st);
	while (off < len) {
		size_t n = CFS_MIN((size_t)VERIFY_BUF, (size_t)(len - off));

		ret = cfs_pread_full(fd, buf, n, (off_t)off);
		if (ret < 0)
			goto out;
		XXH3_64bits_update(st, buf, n);
		off += n;
	}
	if (XXH3_64bits_digest(st) != want)
		ret = -EUCLEAN;
out:
	free(buf);
	XXH3_freeState(st);
	return ret == -ENODATA ? -EUCLEAN : ret;
}

/* Opens the entry for b as a file handle: 0 on a verified hit, else a
 * miss: -ERANGE when the entry holds another size than the caller asked
 * for.  A first-seen or changed entry is hashed once; see cache.h. */
static int disk_open(struct cfs_cache *c, struct cfs_buf *b)
{
	char path[DISK_PATH_LEN];
	struct disk_hdr h;
	struct ident id;
	int fd, ret;

	disk_path(&b->n.d, path);
	fd = openat(c->dirfd, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		/* ENOENT: never written, or another process evicted it. */
		ret = -errno;
		if (ret == -ENOENT)
			disk_forget(c, &b->n.d);
		return ret;
	}
	ret = ident_get(fd, &id);
	if (ret < 0)
		goto out_close; /* a miss; the file may be fine */
	if (id.size < (off_t)sizeof(h))
		goto bad;
	ret = cfs_pread_full(fd, &h, sizeof(h), id.size - (off_t)sizeof(h));
	if (ret == -ENODATA)
		goto bad; /* shrank under us */
	if (ret < 0)
		goto out_close;
	if (memcmp(h.magic, DISK_MAGIC, sizeof(h.magic)))
		goto bad;
	if (le64toh(h.len) != b->len) {
		ret = -ERANGE; /* the caller's size disagrees: the load decides */
		goto out_close;
	}
	if ((uint64_t)id.size != sizeof(h) + (uint64_t)b->len)
		goto bad;
	if (!disk_trusted(c, fd, &b->n.d, &id)) {
		ret = disk_hash(c, fd, b->len, le64toh(h.xxh));
		if (ret == -EUCLEAN)
			goto bad;
		if (ret < 0)
			goto out_close;
		seal_set(fd, &b->n.d, &id);
	}
	/* Best effort: a read-only directory still serves hits.  The touch
	 * moves mtime: seal again, and take the identity after. */
	if (disk_touch(c, &b->n.d, (uint64_t)id.size) && futimens(fd, NULL) == 0)
		seal_set(fd, &b->n.d, &id);
	disk_remember(c, &b->n.d, &id);
	b->fd = fd;
	b->id = id;
	return 0;

out_close:
	close(fd);
	return ret;

bad:
	close(fd);
	disk_drop(c, &b->n.d);
	return -EUCLEAN;
}

/* ---- chunk locks: one load per chunk among the processes ---- */

/* A chunk's lock is one byte of <dir>/.fetch.lock at an offset taken from
 * its digest (62 bits: two chunks share a byte by chance only, and then
 * load one after the other), held as an OFD lock through c->fetchfd.  The
 * kernel lets go of them all when the process dies.  Threads of one
 * process own the same locks, so c->held says which this process holds. */
static off_t chunk_lock_off(const cfs_digest *d)
{
	uint64_t h;

	memcpy(&h, d->b + 8, sizeof(h));
	return (off_t)(le64toh(h) >> 2);
}

/* Takes d's chunk lock: 0 (then chunk_lock_drop() it), else -errno and
 * the caller loads unlocked, as with a directory of its own: -ETIMEDOUT
 * after waiting fetch_wait_ms for the holder, or the error of a directory
 * without the lock file or OFD locks.  Sets *waited when the lock was
 * taken: by another process, or by a thread of this one still writing
 * the entry whose memory copy went already. */
static int chunk_lock_take(struct cfs_cache *c, const cfs_digest *d, bool *waited)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_len = 1 };
	uint64_t deadline = 0, now, ns;
	unsigned poll_ms = 1;
	struct timespec ts;
	struct node *n;
	bool ours;
	int ret;

	*waited = false;
	if (c->fetchfd < 0)
		return -ENOLCK;
	n = calloc(1, sizeof(*n));
	if (!n)
		return -ENOMEM;
	n->d = *d;
	fl.l_start = chunk_lock_off(d);
	for (;;) {
		pthread_mutex_lock(&c->lock);
		ours = table_find(&c->held, d) != NULL;
		if (!ours)
			table_insert(&c->held, n);
		pthread_mutex_unlock(&c->lock);
		if (!ours) {
			if (fcntl(c->fetchfd, F_OFD_SETLK, &fl) == 0)
				return 0;
			ret = -errno;
			pthread_mutex_lock(&c->lock);
			table_remove(&c->held, n);
			pthread_mutex_unlock(&c->lock);
			if (ret != -EAGAIN && ret != -EACCES)
				break;
		}
		if (!*waited) {
			*waited = true;
			stat_add(&c->shared_waits, 1);
			deadline = cfs_now_ns() + (uint64_t)c->fetch_wait_ms * 1000000ull;
		}
		now = cfs_now_ns();
		if (now >= deadline) {
			stat_add(&c->shared_timeouts, 1);
			ret = -ETIMEDOUT;
			break;
		}
		/* No lock call waits with a timeout: poll. */
		ns = CFS_MIN((uint64_t)poll_ms * 1000000ull, deadline - now);
		ts.tv_sec = (time_t)(ns / NS_PER_SEC);
		ts.tv_nsec = (long)(ns % NS_PER_SEC);
		nanosleep(&ts, NULL);
		poll_ms = CFS_MIN(poll_ms * 2, FETCH_POLL_MAX_MS);
	}
	free(n);
	return ret;
}

/* Lets go of d's chunk lock, taken by chunk_lock_take(). */
static void chunk_lock_drop(struct cfs_cache *c, const cfs_digest *d)
{
	struct flock fl = { .l_type = F_UNLCK, .l_whence = SEEK_SET, .l_len = 1 };
	struct node *n;

	fl.l_start = chunk_lock_off(d);
	(void)fcntl(c->fetchfd, F_OFD_SETLK, &fl);
	pthread_mutex_lock(&c->lock);
	n = table_find(&c->held, d);
	if (n)
		table_remove(&c->held, n);
	pthread_mutex_unlock(&c->lock);
	free(n);
}

static void unlink_victims(struct cfs_cache *c, struct node *victims)
{
	char path[DISK_PATH_LEN];

	while (victims) {
		struct node *next = victims->hnext;

		disk_path(&victims->d, path);
		unlinkat(c->dirfd, path, 0);
		free(ent_of(victims));
		victims = next;
	}
}

/* Evicts unreserved entries, oldest first, until disk_max holds; their
 * open handles go too (on *handles), so that the space is given back once
 * the readers using them are done. */
static void disk_evict_locked(struct cfs_cache *c, struct node **victims, struct node **handles)
{
	struct node *n = c->disk_lru.prev;

	while (c->disk_bytes > c->disk_max && n != &c->disk_lru) {
		struct node *prev = n->prev;

		if (!ent_of(n)->writing) {
			struct cfs_buf *b = handle_find_locked(c, &n->d);

			if (b && b->fd >= 0)
				handle_remove_locked(c, b, handles);
			list_del(n);
			table_remove(&c->disk, n);
			c->disk_bytes -= ent_of(n)->size;
			n->hnext = *victims;
			*victims = n;
			stat_add(&c->evictions, 1);
		}
		n = prev;
	}
}

static void disk_trailer_init(struct disk_hdr *h, const struct cfs_buf *b)
{
	memcpy(h->magic, DISK_MAGIC, sizeof(h->magic));
	h->len = htole64(b->len);
	h->xxh = htole64(XXH3_64bits(b->data, b->len));
	h->reserved = 0;
}

/* <path>.tmp.<16 hex>: unique among writers of every process. */
static void disk_tmp_name(const char *path, char tmp[DISK_TMP_LEN])
{
	uint64_t r;

	if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != sizeof(r))
		r = cfs_now_ns();
	snprintf(tmp, DISK_TMP_LEN, "%s.tmp.%016" PRIx64, path, r);
}

/* Gives a just written entry the time of its reservation as mtime (the
 * view orders entries by it, and passes take a file's age from it), then
 * its seal.  Best effort: failing, only the order of a later eviction
 * suffers, or a later process hashes the entry once. */
static void disk_stamp(int fd, const cfs_digest *d, uint64_t used_ns)
{
	struct timespec ts[2];
	struct ident id;

	ts[0].tv_sec = ts[1].tv_sec = (time_t)(used_ns / NS_PER_SEC);
	ts[0].tv_nsec = ts[1].tv_nsec = (long)(used_ns % NS_PER_SEC);
	if (futimens(fd, ts) == 0)
		seal_set(fd, d, &id);
}

static int disk_write_file(struct cfs_cache *c, const struct cfs_buf *b, uint64_t used_ns)
{
	char path[DISK_PATH_LEN], tmp[DISK_TMP_LEN];
	struct disk_hdr h;
	int fd, ret;

	disk_trailer_init(&h, b);
	disk_path(&b->n.d, path);
	disk_tmp_name(path, tmp);
	fd = openat(c->dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, DISK_FILE_MODE);
	if (fd < 0 && errno == ENOENT) {
		/* The fan-out directory, made on first use. */
		char dir[3] = { path[0], path[1], '\0' };

		if (mkdirat(c->dirfd, dir, DISK_DIR_MODE) < 0 && errno != EEXIST)
			return -errno;
		fd = openat(c->dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, DISK_FILE_MODE);
	}
	if (fd < 0)
		return -errno;

	/* No fsync: after a crash a torn entry is short (the filesystem
	 * extends the size only over data written) and fails its checks. */
	ret = cfs_write_full(fd, b->data, b->len);
	if (!ret)
		ret = cfs_write_full(fd, &h, sizeof(h));
	/* The rename keeps both. */
	if (!ret)
		disk_stamp(fd, &b->n.d, used_ns);
	if (close(fd) < 0 && !ret)
		ret = -errno;
	if (!ret && renameat(c->dirfd, tmp, c->dirfd, path) < 0)
		ret = -errno;
	if (ret < 0)
		unlinkat(c->dirfd, tmp, 0);
	return ret;
}

static int disk_rescan(struct cfs_cache *c, bool account);

/* Ends the reservation e of a write that returned ret: the entry stands,
 * or goes and the failure is counted.  After every disk_max /
 * RESCAN_FRACTION bytes written, brings the view up to date. */
static void disk_write_end(struct cfs_cache *c, struct disk_ent *e, int ret, bool async)
{
	struct node *victims = NULL;
	bool rescan = false;

	pthread_mutex_lock(&c->lock);
	e->pending = NULL;
	if (ret == 0) {
		/* The page cache holds it now: the memory copy goes (readers
		 * holding it keep their reference), and the next get opens
		 * the file, which it trusts since it wrote it. */
		struct cfs_buf *b = handle_find_locked(c, &e->n.d);

		if (b && b->fd < 0)
			handle_remove_locked(c, b, &victims);
		e->ours = true;
		e->known = false;
	}
	if (ret < 0) {
		table_remove(&c->disk, &e->n);
		list_del(&e->n);
		c->disk_bytes -= e->size;
	} else {
		/* The entry keeps its place in the LRU, taken when it was
		 * reserved: writes complete out of order (a retried chain, a
		 * busy worker), and the order of use is what eviction wants. */
		e->writing = false;
		e->confirmed = c->gen;
		c->since_scan += e->size;
		rescan = c->since_scan >= c->disk_max / RESCAN_FRACTION ||
			 c->disk_bytes > c->disk_max;
		/* From the ring's thread, the next write or flush runs the
		 * pass: one here would list the directory while loading
		 * threads evict from it. */
		if (rescan && async) {
			c->rescan_due = true;
			rescan = false;
		}
	}
	pthread_mutex_unlock(&c->lock);

	release_victims(victims);
	if (ret < 0) {
		free(e);
		disk_write_failed(c, ret);
	}
	if (rescan)
		disk_rescan(c, false);
}

/* Runs the pass a ring write asked for, in a caller's thread. */
static void disk_rescan_if_due(struct cfs_cache *c)
{
	bool due;

	pthread_mutex_lock(&c->lock);
	due = c->rescan_due;
	c->rescan_due = false;
	pthread_mutex_unlock(&c->lock);
	if (due)
		disk_rescan(c, false);
}

/* A disk write handed to the ring; holds a reference to b. */
struct ring_write {
	struct cfs_cache *c;
	struct disk_ent *e;
	struct cfs_buf *b;
	struct disk_hdr h;
	bool chunk_locked;      /* let go of once the entry is on disk, or failed */
	char path[DISK_PATH_LEN];
};

/* On the ring's thread. */
static void ring_write_done(void *ctx, int res)
{
	struct ring_write *w = ctx;
	struct cfs_cache *c = w->c;

	if (res == 0) {
		uint64_t used;
		int fd;

		/* The time of the reservation, not of the (possibly late)
		 * rename. */
		pthread_mutex_lock(&c->lock);
		used = w->e->used_ns;
		pthread_mutex_unlock(&c->lock);
		fd = openat(c->dirfd, w->path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		if (fd >= 0) {
			disk_stamp(fd, &w->b->n.d, used);
			close(fd);
		}
	}
	/* Sealed too: a waiting process trusts it without hashing. */
	if (w->chunk_locked)
		chunk_lock_drop(c, &w->b->n.d);
	disk_write_end(c, w->e, res, true);
	cfs_buf_unref(w->b);
	free(w);
}

/* Queues the write of b (reserved as e) on the ring, which lets go of the
 * chunk lock (if locked) once it completes.  Returns 0, or -errno when it
 * could not be queued: the caller writes it itself, and keeps the lock. */
static int disk_write_ring(struct cfs_cache *c, struct cfs_buf *b, struct disk_ent *e,
			   bool locked)
{
	char tmp[DISK_TMP_LEN];
	struct ring_write *w = malloc(sizeof(*w));
	struct iovec iov[2];
	int ret;

	if (!w)
		return -ENOMEM;
	w->c = c;
	w->e = e;
	w->b = b;
	w->chunk_locked = locked;
	disk_trailer_init(&w->h, b);
	iov[0] = (struct iovec){ b->data, b->len };
	iov[1] = (struct iovec){ &w->h, sizeof(w->h) };
	disk_path(&b->n.d, w->path);
	disk_tmp_name(w->path, tmp);
	buf_ref(b);
	/* Before queueing: the completion clears it. */
	pthread_mutex_lock(&c->lock);
	e->pending = b;
	pthread_mutex_unlock(&c->lock);
	ret = cfs_uring_write_atomic(c->ring, c->dirfd, tmp, w->path, iov, 2, ring_write_done, w);
	if (ret < 0) {
		cfs_buf_unref(b);
		free(w);
	}
	return ret;
}

/* Stores a freshly loaded buffer on disk, making room first in this
 * process's view.  With a ring, queues it and returns at once; the entry
 * stays reserved (writing) until the file is renamed into place.
 * Failures are counted and logged, never returned.  With locked, lets go
 * of b's chunk lock once the entry is on disk or will not be. */
static void disk_write(struct cfs_cache *c, struct cfs_buf *b, bool locked)
{
	uint64_t size = sizeof(struct disk_hdr) + (uint64_t)b->len;
	struct node *victims = NULL, *handles = NULL;
	struct disk_ent *e;
	int ret;

	if (size > c->disk_max)
		goto out_unlock;
	if (c->ring)
		disk_rescan_if_due(c);
	e = calloc(1, sizeof(*e));
	if (!e)
		goto out_unlock;
	e->n.d = b->n.d;
	e->size = size;
	e->used_ns = wall_ns(CLOCK_REALTIME);
	e->stamp = (int64_t)(e->used_ns / NS_PER_SEC);
	e->writing = true;

	pthread_mutex_lock(&c->lock);
	if (table_find(&c->disk, &b->n.d)) {
		/* Present, or another thread is writing it. */
		pthread_mutex_unlock(&c->lock);
		free(e);
		goto out_unlock;
	}
	table_insert(&c->disk, &e->n);
	list_add_head(&c->disk_lru, &e->n);
	c->disk_bytes += size;
	disk_evict_locked(c, &victims, &handles);
	pthread_mutex_unlock(&c->lock);

	/* Here, not on the ring's thread: a pass must never list a file
	 * that the view already evicted. */
	unlink_victims(c, victims);
	release_victims(handles);
	if (c->ring) {
		if (disk_write_ring(c, b, e, locked) == 0)
			return;
		pthread_mutex_lock(&c->lock);
		e->pending = NULL;
		pthread_mutex_unlock(&c->lock);
	}
	ret = disk_write_file(c, b, e->used_ns);
	/* Before the end, which may run a pass: waiters need the file only. */
	if (locked)
		chunk_lock_drop(c, &b->n.d);
	disk_write_end(c, e, ret, false);
	return;

out_unlock:
	if (locked)
		chunk_lock_drop(c, &b->n.d);
}

/* ---- passes over the directory ---- */

static int ent_age_cmp(const void *a, const void *b)
{
	uint64_t x = (*(struct disk_ent *const *)a)->used_ns;
	uint64_t y = (*(struct disk_ent *const *)b)->used_ns;

	return (x > y) - (x < y);
}

static bool lower_hex(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

static DIR *opendir_at(int dirfd, const char *name)
{
	int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	DIR *d;

	if (fd < 0)
		return NULL;
	d = fdopendir(fd);
	if (!d)
		close(fd);
	return d;
}

struct listing {
	struct disk_ent **e;
	size_t n, cap;
};

static void listing_free(struct listing *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->e[i]);
	free(l->e);
}

/* Adds the entries of one fan-out directory to l; deletes stale
 * temporaries (fresh ones belong to live writers, maybe other processes).
 * A fan-out directory that vanished is empty. */
static int scan_fanout(struct cfs_cache *c, const char *hh, struct listing *l)
{
	time_t now = time(NULL);
	struct dirent *de;
	DIR *d;
	int ret = 0;

	d = opendir_at(c->dirfd, hh);
	if (!d)
		return 0;
	while ((de = readdir(d))) {
		const char *name = de->d_name;
		struct disk_ent *e;
		struct stat sb;

		if (name[0] == '.')
			continue;
		/* ENOENT: another process evicted it after readdir. */
		if (fstatat(dirfd(d), name, &sb, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(sb.st_mode))
			continue;
		if (strstr(name, ".tmp")) {
			if (now - sb.st_mtime > TMP_STALE_SEC)
				unlinkat(dirfd(d), name, 0);
			continue;
		}
		if (strlen(name) != CFS_DIGEST_HEX_LEN || !lower_hex(name, CFS_DIGEST_HEX_LEN) ||
		    memcmp(name, hh, 2))
			continue;
		if (l->n == l->cap) {
			size_t ncap = l->cap ? l->cap * 2 : 256;
			struct disk_ent **ne = realloc(l->e, ncap * sizeof(*ne));

			if (!ne) {
				ret = -ENOMEM;
				break;
			}
			l->e = ne;
			l->cap = ncap;
		}
		e = calloc(1, sizeof(*e));
		if (!e) {
			ret = -ENOMEM;
			break;
		}
		cfs_digest_parse(name, true, &e->n.d);
		list_init(&e->n);
		e->size = (uint64_t)sb.st_size;
		e->used_ns = (uint64_t)sb.st_mtim.tv_sec * NS_PER_SEC + (uint64_t)sb.st_mtim.tv_nsec;
		e->stamp = sb.st_mtim.tv_sec;
		l->e[l->n++] = e;
	}
	closedir(d);
	return ret;
}

/* Lists every entry of the directory, oldest first; no lock held. */
static int disk_list(struct cfs_cache *c, struct listing *l)
{
	struct dirent *de;
	DIR *d;
	int ret = 0;

	d = opendir_at(c->dirfd, ".");
	if (!d)
		return -errno;
	while (!ret && (de = readdir(d)))
		if (strlen(de->d_name) == 2 && lower_hex(de->d_name, 2))
			ret = scan_fanout(c, de->d_name, l);
	closedir(d);
	if (ret < 0)
		return ret;
	if (l->n)
		qsort(l->e, l->n, sizeof(*l->e), ent_age_cmp);
	return 0;
}

/* Folds listed entries [from, to) (oldest first) into the view of pass
 * gen: a known entry takes the newer of its own last use and the file's
 * mtime, an unknown one joins.  Those whose key moved go on *newer,
 * newest first; listed duplicates on *garbage, to be freed unlocked.
 * Called in batches, dropping the mutex in between: meanwhile other
 * threads may touch or forget entries on *newer, which only takes them
 * off it. */
static void disk_fold_locked(struct cfs_cache *c, struct listing *l, size_t from, size_t to,
			     uint32_t gen, struct node *newer, struct node **garbage)
{
	for (size_t i = from; i < to; i++) {
		struct disk_ent *s = l->e[i], *e;
		struct node *n = table_find(&c->disk, &s->n.d);

		if (!n) {
			s->seen = gen;
			table_insert(&c->disk, &s->n);
			list_add_head(newer, &s->n);
			continue;
		}
		e = ent_of(n);
		e->seen = gen;
		if (!e->writing)
			e->size = s->size;
		if (s->stamp > e->stamp)
			e->stamp = s->stamp;
		if (s->used_ns > e->used_ns) {
			e->used_ns = s->used_ns;
			list_del(n);
			list_add_head(newer, n);
		}
		s->n.hnext = *garbage;
		*garbage = &s->n;
	}
}

/* Ends pass gen: drops the entries the listing lacked (another process
 * evicted them) unless this process wrote or read them since the pass
 * began, with their open handles (on *handles, like an eviction's: a
 * handle nobody hits again would otherwise keep the deleted file, and its
 * space, until max_files newer handles push it out), merges *newer back
 * into the LRU and recounts disk_bytes.  O(entries); no I/O. */
static void disk_settle_locked(struct cfs_cache *c, uint32_t gen, struct node *newer,
			       struct node **garbage, struct node **handles)
{
	struct node out;
	uint64_t bytes = 0;

	/* Both runs go newest to oldest: merge them from their oldest ends;
	 * on a tie, what this process used counts as newer.  Everything on
	 * *newer was listed. */
	list_init(&out);
	for (;;) {
		struct node *x = c->disk_lru.prev, *y = newer->prev, *pick;
		struct disk_ent *e;

		if (x == &c->disk_lru && y == newer)
			break;
		if (y == newer || (x != &c->disk_lru && ent_of(x)->used_ns < ent_of(y)->used_ns))
			pick = x;
		else
			pick = y;
		e = ent_of(pick);
		list_del(pick);
		if (e->seen != gen && e->confirmed != gen && !e->writing) {
			struct cfs_buf *b = handle_find_locked(c, &pick->d);

			if (b && b->fd >= 0)
				handle_remove_locked(c, b, handles);
			table_remove(&c->disk, pick);
			pick->hnext = *garbage;
			*garbage = pick;
			continue;
		}
		list_add_head(&out, pick);
		bytes += e->size;
	}
	list_move_all(&c->disk_lru, &out);
	c->disk_bytes = bytes;
}

static void free_ents(struct node *n)
{
	while (n) {
		struct node *next = n->hnext;

		free(ent_of(n));
		n = next;
	}
}

/* The lock file's size counts the passes that found the lock taken. */
static off_t lock_marks(const struct cfs_cache *c)
{
	struct stat sb;

	return fstat(c->lockfd, &sb) < 0 ? -1 : sb.st_size;
}

/* One pass: lists the directory, folds the listing into the view and,
 * holding <dir>/.lock, evicts to disk_max.  When the lock is taken, a pass
 * with account set still updates the view (evicting is left to the
 * holder); one without does nothing.  Sets *again when another process
 * found the lock taken while this pass held it: that process's newest
 * entries may have missed our listing. */
static int disk_rescan_once(struct cfs_cache *c, bool account, bool *again)
{
	struct listing l = { 0 };
	struct node newer, *garbage = NULL, *victims = NULL, *handles = NULL;
	bool locked = false, evict = true;
	off_t marks = 0;
	uint64_t written;
	uint32_t gen;
	int ret;

	*again = false;
	if (c->lockfd >= 0) {
		/* Mark before trying: a holder that misses our newest entry is
		 * still holding the lock, so it sees the mark when it lets go. */
		if (write(c->lockfd, "", 1) < 0) {
			/* ENOSPC: the holder may miss us; our next write asks again. */
		}
		if (flock(c->lockfd, LOCK_EX | LOCK_NB) == 0) {
			locked = true;
			marks = lock_marks(c);
			if (marks > LOCK_TRIM && ftruncate(c->lockfd, 1) == 0)
				marks = 1; /* 1, not 0: a full disk keeps the block */
		} else if (errno == EWOULDBLOCK) {
			if (!account)
				return 0;
			evict = false;
		}
		/* Other errors (no flock on this filesystem): evict unserialised. */
	}

	pthread_mutex_lock(&c->lock);
	gen = ++c->gen;
	written = c->since_scan;
	pthread_mutex_unlock(&c->lock);

	ret = disk_list(c, &l);
	if (ret < 0)
		goto out_unlock;

	list_init(&newer);
	for (size_t i = 0; i < l.n; i += FOLD_BATCH) {
		pthread_mutex_lock(&c->lock);
		disk_fold_locked(c, &l, i, i + FOLD_BATCH < l.n ? i + FOLD_BATCH : l.n, gen,
				 &newer, &garbage);
		pthread_mutex_unlock(&c->lock);
	}
	l.n = 0; /* every listed entry is in the table or on garbage */

	pthread_mutex_lock(&c->lock);
	disk_settle_locked(c, gen, &newer, &garbage, &handles);
	if (evict) {
		disk_evict_locked(c, &victims, &handles);
		c->since_scan -= written;
	}
	pthread_mutex_unlock(&c->lock);

	stat_add(&c->rescans, 1);
	free_ents(garbage);
	unlink_victims(c, victims);
	release_victims(handles);
out_unlock:
	listing_free(&l);
	if (locked) {
		flock(c->lockfd, LOCK_UN);
		*again = lock_marks(c) != marks;
	}
	return ret;
}

/* Passes until nobody, in this process or another, asked for one while it
 * ran, or RESCAN_ROUNDS; one thread of c at a time, another asking
 * meanwhile makes it go round again. */
static int disk_rescan(struct cfs_cache *c, bool account)
{
	pthread_mutex_lock(&c->lock);
	if (c->scanning) {
		c->scan_again = true;
		pthread_mutex_unlock(&c->lock);
		return 0;
	}
	c->scanning = true;
	c->scan_again = false;
	pthread_mutex_unlock(&c->lock);

	for (unsigned round = 1;; round++) {
		bool again;
		int ret = disk_rescan_once(c, account, &again);

		pthread_mutex_lock(&c->lock);
		again = !ret && (again || c->scan_again) && round < RESCAN_ROUNDS;
		c->scan_again = false;
		if (!again)
			c->scanning = false;
		pthread_mutex_unlock(&c->lock);
		if (!again)
			return ret;
	}
}

/* mkdir -p; the last component, the cache directory itself, is made
 * owner-only (an existing one keeps its mode: it may be anything, /tmp). */
static int mkdir_p(const char *path)
{
	char p[PATH_MAX];
	size_t len = strlen(path);

	if (len == 0 || len >= sizeof(p))
		return -ENAMETOOLONG;
	memcpy(p, path, len + 1);
	for (char *s = strchr(p + 1, '/'); s; s = strchr(s + 1, '/')) {
		*s = '\0';
		if (mkdir(p, 0755) < 0 && errno != EEXIST)
			return -errno;
		*s = '/';
	}
	if (mkdir(p, DISK_DIR_MODE) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

/* Frees every entry of a disk table, leaving it empty. */
static void free_ents_table(struct table *t)
{
	for (size_t i = 0; i <= t->mask; i++) {
		free_ents(t->b[i]);
		t->b[i] = NULL;
	}
	t->count = 0;
}

/* ---- public ---- */

/* Half the descriptors the process may open, leaving room for the rest
 * of the daemon (FUSE, sockets, the ring). */
static uint32_t max_files_default(void)
{
	struct rlimit rl;
	uint64_t n = MAX_FILES_DEFAULT;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
		n = rl.rlim_cur > 256 ? (rl.rlim_cur - 128) / 2 : MAX_FILES_MIN;
	return (uint32_t)CFS_MAX(CFS_MIN(n, (uint64_t)MAX_FILES_DEFAULT), (uint64_t)MAX_FILES_MIN);
}

/* CFS_NO_IO_URING=1 in the environment keeps disk writes synchronous
 * (tests use it to cover the fallback). */
static void cache_ring_start(struct cfs_cache *c)
{
	const char *no = getenv("CFS_NO_IO_URING");
	int ret;

	if (no && *no && strcmp(no, "0")) {
		cfs_info("chunk cache: synchronous disk writes (CFS_NO_IO_URING is set)");
		return;
	}
	ret = cfs_uring_new(URING_DEPTH, URING_MAX_BYTES, &c->ring);
	if (ret < 0) {
		c->ring = NULL;
		cfs_info("chunk cache: synchronous disk writes (io_uring: %s)", cfs_strerror(ret));
		return;
	}
	cfs_info("chunk cache: disk writes through io_uring");
}

int cfs_cache_new(const struct cfs_cache_opts *opts, struct cfs_cache **out)
{
	struct cfs_cache *c;
	int ret;

	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->dirfd = -1;
	c->lockfd = -1;
	c->fetchfd = -1;
	c->mem_max = opts && opts->mem_max ? opts->mem_max : MEM_MAX_DEFAULT;
	c->max_files = opts && opts->max_files ? opts->max_files : max_files_default();
	c->disk_max = opts && opts->disk_max ? opts->disk_max : DISK_MAX_DEFAULT;
	c->fetch_wait_ms = opts && opts->fetch_wait_ms ? opts->fetch_wait_ms : FETCH_WAIT_MS_DEFAULT;
	list_init(&c->mem_lru);
	list_init(&c->disk_lru);
	ret = -pthread_mutex_init(&c->lock, NULL);
	if (ret < 0)
		goto out_free;
	ret = table_init(&c->mem);
	if (ret < 0)
		goto out_mutex;
	ret = table_init(&c->disk);
	if (ret < 0)
		goto out_mem_table;
	ret = table_init(&c->held);
	if (ret < 0)
		goto out_disk_table;

	if (opts && opts->dir) {
		ret = mkdir_p(opts->dir);
		if (ret < 0)
			goto out_held_table;
		c->dirfd = open(opts->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (c->dirfd < 0) {
			ret = -errno;
			goto out_held_table;
		}
		/* Without it (a read-only directory) eviction is unserialised. */
		c->lockfd = openat(c->dirfd, LOCK_NAME,
				   O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, DISK_FILE_MODE);
		/* Without it, every process that misses a chunk loads it. */
		c->fetchfd = openat(c->dirfd, FETCH_LOCK_NAME,
				    O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, DISK_FILE_MODE);
		ret = disk_rescan(c, true);
		if (ret < 0)
			goto out_close;
		cache_ring_start(c);
	}
	*out = c;
	return 0;

out_close:
	if (c->fetchfd >= 0)
		close(c->fetchfd);
	if (c->lockfd >= 0)
		close(c->lockfd);
	free_ents_table(&c->disk);
	close(c->dirfd);
out_held_table:
	free(c->held.b);
out_disk_table:
	free(c->disk.b);
out_mem_table:
	free(c->mem.b);
out_mutex:
	pthread_mutex_destroy(&c->lock);
out_free:
	free(c);
	return ret;
}

void cfs_cache_free(struct cfs_cache *c)
{
	if (!c)
		return;
	/* Lands the writes still queued; their callbacks use the tables. */
	cfs_uring_free(c->ring);
	/* No get may be running: buffers still referenced by callers stay
	 * valid, only the cache's references go. */
	for (size_t i = 0; i <= c->mem.mask; i++) {
		for (struct node *n = c->mem.b[i], *next; n; n = next) {
			next = n->hnext;
			cfs_buf_unref(buf_of(n));
		}
	}
	free_ents_table(&c->disk);
	/* Empty: the ring let go of its locks above, and no get runs. */
	free(c->held.b);
	free(c->mem.b);
	free(c->disk.b);
	if (c->fetchfd >= 0)
		close(c->fetchfd);
	if (c->lockfd >= 0)
		close(c->lockfd);
	if (c->dirfd >= 0)
		close(c->dirfd);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

/* A chunk evicted from memory while its disk write is still queued is
 * copied from the buffer the ring holds: it is on disk in all but name. */
static int disk_read_pending(struct cfs_cache *c, struct cfs_buf *b)
{
	struct cfs_buf *p = NULL;
	struct node *n;

	if (!c->ring)
		return -ENOENT;
	pthread_mutex_lock(&c->lock);
	n = table_find(&c->disk, &b->n.d);
	if (n && ent_of(n)->pending && ent_of(n)->pending->len == b->len) {
		p = ent_of(n)->pending;
		buf_ref(p);
	}
	pthread_mutex_unlock(&c->lock);
	if (!p)
		return -ENOENT;
	b->data = malloc(b->len ? b->len : 1);
	if (b->data)
		memcpy(b->data, p->data, b->len);
	cfs_buf_unref(p);
	return b->data ? 0 : -ENOMEM;
}

/* Fills a placeholder from disk (a file handle) or through load() (a
 * memory handle); no lock held.  A load takes d's chunk lock first, which
 * the caller hands on to disk_write() (*locked). */
static int cache_fill(struct cfs_cache *c, struct cfs_buf *b, cfs_cache_load_fn load, void *ctx,
		      bool *loaded, bool *locked)
{
	int disk = -ENOENT, ret;
	bool waited;

	*loaded = false;
	*locked = false;
	if (c->dirfd >= 0 && disk_read_pending(c, b) == 0) {
		stat_add(&c->disk_hits, 1);
		return 0;
	}
	if (c->dirfd >= 0) {
		disk = disk_open(c, b);
		if (disk == 0) {
			stat_add(&c->disk_hits, 1);
			return 0;
		}
		/* Another process may be loading it, or may have written it
		 * since the open: look again once the lock is ours, or once
		 * its holder was waited for long enough. */
		ret = chunk_lock_take(c, &b->n.d, &waited);
		*locked = ret == 0;
		if (*locked || waited) {
			disk = disk_open(c, b);
			if (disk == 0) {
				if (*locked)
					chunk_lock_drop(c, &b->n.d);
				*locked = false;
				if (waited)
					stat_add(&c->shared_hits, 1);
				stat_add(&c->disk_hits, 1);
				return 0;
			}
		}
	}
	stat_add(&c->misses, 1);
	/* 16-byte aligned by malloc; never 0 bytes, which may be NULL. */
	b->data = malloc(b->len ? b->len : 1);
	if (!b->data) {
		ret = -ENOMEM;
		goto out_unlock;
	}
	ret = load(ctx, &b->n.d, b->len, b->data);
	if (ret < 0) {
		stat_add(&c->load_errors, 1);
		goto out_unlock;
	}
	/* The load verified this size, so the entry's trailer was wrong. */
	if (disk == -ERANGE)
		disk_drop(c, &b->n.d);
	*loaded = true;
	return 0;

out_unlock:
	if (*locked)
		chunk_lock_drop(c, &b->n.d);
	*locked = false;
	return ret;
}

/* The caller that inserted b loads it and wakes the waiters. */
static int cache_load(struct cfs_cache *c, struct cfs_buf *b, cfs_cache_load_fn load, void *ctx)
{
	struct node *victims = NULL;
	bool loaded, locked;
	int ret;

	ret = cache_fill(c, b, load, ctx, &loaded, &locked);

	pthread_mutex_lock(&c->lock);
	b->loading = false;
	b->err = ret;
	if (ret < 0) {
		/* Not remembered: the next caller tries again. */
		table_remove(&c->mem, &b->n);
	} else {
		list_add_head(&c->mem_lru, &b->n);
		if (b->fd >= 0)
			c->files++;
		else
			c->mem_bytes += b->len;
		mem_evict_locked(c, &victims);
	}
	pthread_cond_broadcast(&b->done);
	pthread_mutex_unlock(&c->lock);
	release_victims(victims);

	if (ret < 0) {
		cfs_buf_unref(b); /* the table's */
		cfs_buf_unref(b); /* ours */
		return ret;
	}
	/* After publishing: waiters in this process need not wait for the
	 * disk; those of others wait for the chunk lock, until it lands. */
	if (loaded && c->dirfd >= 0)
		disk_write(c, b, locked);
	return 0;
}

/* A file handle's file is what it was when verified.  When the hit is due
 * to refresh the file's mtime for other processes' passes, does that too
 * (taking the new identity).  One fstat() per hit, and no hashing. */
static bool handle_fresh(struct cfs_cache *c, struct cfs_buf *b, bool touch)
{
	struct ident id;

	bool same;

	if (ident_get(b->fd, &id) < 0)
		return false;
	pthread_mutex_lock(&c->lock);
	same = ident_eq(&id, &b->id);
	pthread_mutex_unlock(&c->lock);
	if (!same)
		return false;
	if (touch && futimens(b->fd, NULL) == 0) {
		seal_set(b->fd, &b->n.d, &id);
		pthread_mutex_lock(&c->lock);
		b->id = id;
		pthread_mutex_unlock(&c->lock);
		disk_remember(c, &b->n.d, &id);
	}
	return true;
}

/* Forgets a handle whose file changed or failed (if the table still holds
 * it) and, with drop, deletes the disk entry too. */
static void handle_forget(struct cfs_cache *c, struct cfs_buf *b, bool drop)
{
	struct node *victims = NULL;

	pthread_mutex_lock(&c->lock);
	if (handle_find_locked(c, &b->n.d) == b)
		handle_remove_locked(c, b, &victims);
	pthread_mutex_unlock(&c->lock);
	release_victims(victims);
	if (drop && c->dirfd >= 0)
		disk_drop(c, &b->n.d);
}

void cfs_cache_invalidate(struct cfs_cache *c, struct cfs_buf *b)
{
	if (c && b && b->fd >= 0)
		handle_forget(c, b, true);
}

int cfs_cache_get(struct cfs_cache *c, const cfs_digest *d, uint32_t raw_size,
		  cfs_cache_load_fn load, void *ctx, struct cfs_buf **out)
{
	struct cfs_buf *b, *fresh = NULL;
	bool touch = false, retried = false;
	struct node *n;
	int ret;

	if (!c || !d || !load || !out)
		return -EINVAL;
	if (raw_size > CFS_CHUNK_MAX_SIZE)
		return -EUCLEAN;

again:
	pthread_mutex_lock(&c->lock);
	while (!(n = table_find(&c->mem, d))) {
		if (fresh) {
			/* Still absent: this caller loads it. */
			table_insert(&c->mem, &fresh->n);
			pthread_mutex_unlock(&c->lock);
			ret = cache_load(c, fresh, load, ctx);
			if (ret < 0)
				return ret;
			*out = fresh;
			return 0;
		}
		/* Allocate unlocked, then look again. */
		pthread_mutex_unlock(&c->lock);
		fresh = buf_new(d, raw_size);
		if (!fresh)
			return -ENOMEM;
		pthread_mutex_lock(&c->lock);
	}

	b = buf_of(n);
	buf_ref(b);
	if (b->loading) {
		while (b->loading)
			pthread_cond_wait(&b->done, &c->lock);
		ret = b->err;
	} else {
		list_touch(&c->mem_lru, n);
		if (b->fd >= 0) {
			struct node *e = table_find(&c->disk, d);

			stat_add(&c->file_hits, 1);
			if (e)
				touch = ent_use_locked(c, ent_of(e));
		} else {
			stat_add(&c->mem_hits, 1);
		}
		ret = 0;
	}
	pthread_mutex_unlock(&c->lock);

	/* The content is fixed by the digest; a caller with another size was
	 * given a wrong one. */
	if (!ret && b->len != raw_size)
		ret = -EUCLEAN;
	if (!ret && b->fd >= 0 && !retried && !handle_fresh(c, b, touch)) {
		/* Written to, truncated or replaced since it was verified: the
		 * next open checks it again, and drops it if it fails. */
		stat_add(&c->stale, 1);
		handle_forget(c, b, false);
		cfs_buf_unref(b);
		retried = true;
		touch = false;
		goto again;
	}
	if (ret < 0)
		cfs_buf_unref(b);
	else
		*out = b;
	if (fresh)
		buf_free(fresh);
	return ret;
}

int64_t cfs_cache_size(struct cfs_cache *c, const cfs_digest *d)
{
	int64_t ret = -ENOENT;
	struct node *n;

	pthread_mutex_lock(&c->lock);
	if ((n = table_find(&c->mem, d)) && !buf_of(n)->loading)
		ret = buf_of(n)->len;
	else if ((n = table_find(&c->disk, d)) && ent_of(n)->size > sizeof(struct disk_hdr))
		ret = (int64_t)(ent_of(n)->size - sizeof(struct disk_hdr));
	pthread_mutex_unlock(&c->lock);
	return ret;
}

void cfs_cache_stats_get(struct cfs_cache *c, struct cfs_cache_stats *out)
{
	out->mem_hits = stat_load(&c->mem_hits);
	out->file_hits = stat_load(&c->file_hits);
	out->disk_hits = stat_load(&c->disk_hits);
	out->misses = stat_load(&c->misses);
	out->load_errors = stat_load(&c->load_errors);
	out->disk_bad = stat_load(&c->disk_bad);
	out->disk_write_errors = stat_load(&c->disk_write_errors);
	out->evictions = stat_load(&c->evictions);
	out->rescans = stat_load(&c->rescans);
	out->verifies = stat_load(&c->verifies);
	out->stale = stat_load(&c->stale);
	out->shared_waits = stat_load(&c->shared_waits);
	out->shared_hits = stat_load(&c->shared_hits);
	out->shared_timeouts = stat_load(&c->shared_timeouts);
	out->uring = c->ring != NULL;
	pthread_mutex_lock(&c->lock);
	out->disk_bytes = c->disk_bytes;
	out->mem_bytes = c->mem_bytes;
	out->files_open = c->files;
	pthread_mutex_unlock(&c->lock);
}

void cfs_cache_tick(struct cfs_cache *c)
{
	if (c && c->ring)
		disk_rescan_if_due(c);
}

void cfs_cache_flush(struct cfs_cache *c)
{
	if (!c || !c->ring)
		return;
	cfs_uring_drain(c->ring);
	disk_rescan_if_due(c);
}

int cfs_cache_rescan(struct cfs_cache *c)
{
	if (!c)
		return -EINVAL;
	if (c->dirfd < 0)
		return 0;
	return disk_rescan(c, true);
}
