/* SPDX-License-Identifier: MIT */
/*
 * Chunk cache internals (cache.h): what its parts share; not installed.
 * One mutex, c->lock, guards both tables (handles, and the view of the
 * disk directory) and their LRU lists; it is never held across I/O, a
 * load or a large free.  The parts, each calling only those below it:
 *
 *   cache.c       the public calls: a get, filled from disk or loaded,
 *                 then stored
 *   cache_ring.c  disk writes through io_uring, and reads of queued ones
 *   cache_scan.c  the view of the directory: writes' reservations, passes
 *                 over the directory, eviction
 *   cache_disk.c  one entry's file: path, trailer, seal, open and verify,
 *                 write
 *   cache_lock.c  the locks between processes: per chunk, and the
 *                 directory's for eviction
 *   cache_buf.c   handles (cfs_buf), and the tables they and the view
 *                 live in
 *
 * The list and table calls every part makes under the mutex, on the hot
 * path too, are inline here.
 */
#ifndef CFS_CACHE_I_H
#define CFS_CACHE_I_H

#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>

#include "cache.h"

#define CFS_CACHE_NS_PER_SEC 1000000000ull
/* Entries are the decompressed bytes of image files, 0600 ones included,
 * and the index names what 0700 directories hold: a mount checks modes for
 * its readers, so the cache must not let them around it.  Owner-only (root
 * for a mount), even in a directory someone made 0755 (docs/CACHE.md). */
#define CFS_CACHE_FILE_MODE 0600
#define CFS_CACHE_DIR_MODE 0700

/* The trailer follows the content, so that the content starts on a page
 * boundary of the file: a splice or read of a chunk touches its own pages
 * only.  Version 1 entries (a header in front) fail the check and are
 * loaded again. */
#define CFS_CACHE_MAGIC "CFSCACH2"
struct disk_hdr {
	uint8_t magic[8];
	uint64_t len;      /* le */
	uint64_t xxh;      /* le, XXH3-64 of the content */
	uint64_t reserved; /* 0 */
};
static_assert(sizeof(struct disk_hdr) == 32, "cache entry trailer size");

/* "hh/" + 64 hex + NUL; ".tmp." + 16 hex more for temporaries. */
#define CFS_CACHE_PATH_LEN (3 + CFS_DIGEST_HEX_LEN + 1)
#define CFS_CACHE_TMP_LEN (CFS_CACHE_PATH_LEN + 5 + 16)

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

/* ---- counters, tables and lists ---- */

static inline void cache_stat_add(_Atomic uint64_t *v, uint64_t n)
{
	atomic_fetch_add_explicit(v, n, memory_order_relaxed);
}

/* Digests are SHA-256 outputs of content that verified: uniform bits. */
static inline size_t cache_table_slot(const struct table *t, const cfs_digest *d)
{
	uint64_t h;

	memcpy(&h, d->b, sizeof(h));
	return (size_t)h & t->mask;
}

static inline struct node *cache_table_find(const struct table *t, const cfs_digest *d)
{
	for (struct node *n = t->b[cache_table_slot(t, d)]; n; n = n->hnext)
		if (cfs_digest_eq(&n->d, d))
			return n;
	return NULL;
}

static inline void cache_list_init(struct node *head)
{
	head->prev = head->next = head;
}

static inline void cache_list_del(struct node *n)
{
	n->prev->next = n->next;
	n->next->prev = n->prev;
	n->prev = n->next = n;
}

static inline void cache_list_add_head(struct node *head, struct node *n)
{
	n->next = head->next;
	n->prev = head;
	head->next->prev = n;
	head->next = n;
}

static inline void cache_list_touch(struct node *head, struct node *n)
{
	cache_list_del(n);
	cache_list_add_head(head, n);
}

/* Moves every node of from onto the empty list to. */
static inline void cache_list_move_all(struct node *to, struct node *from)
{
	if (from->next == from)
		return;
	to->next = from->next;
	to->prev = from->prev;
	to->next->prev = to;
	to->prev->next = to;
	cache_list_init(from);
}

static inline struct cfs_buf *cache_buf_of(struct node *n)
{
	return (struct cfs_buf *)((char *)n - offsetof(struct cfs_buf, n));
}

static inline struct disk_ent *cache_ent_of(struct node *n)
{
	return (struct disk_ent *)((char *)n - offsetof(struct disk_ent, n));
}

static inline void cache_buf_ref(struct cfs_buf *b)
{
	atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
}

/* ---- cache_buf.c ---- */

int cache_table_init(struct table *t);
void cache_table_insert(struct table *t, struct node *n);
void cache_table_remove(struct table *t, struct node *n);
struct cfs_buf *cache_buf_new(const cfs_digest *d, uint32_t len);
void cache_buf_free(struct cfs_buf *b);
void cache_handle_remove_locked(struct cfs_cache *c, struct cfs_buf *b, struct node **victims);
struct cfs_buf *cache_handle_find_locked(struct cfs_cache *c, const cfs_digest *d);
void cache_release_victims(struct node *victims);

/* ---- cache_lock.c ---- */

void cache_locks_open(struct cfs_cache *c);
void cache_locks_close(struct cfs_cache *c);
int cache_chunk_lock_take(struct cfs_cache *c, const cfs_digest *d, bool *waited);
void cache_chunk_lock_drop(struct cfs_cache *c, const cfs_digest *d);
int cache_dir_lock_take(struct cfs_cache *c, off_t *marks);
bool cache_dir_lock_drop(struct cfs_cache *c, off_t marks);

/* ---- cache_disk.c ---- */

uint64_t cache_wall_ns(clockid_t clk);
void cache_disk_path(const cfs_digest *d, char out[CFS_CACHE_PATH_LEN]);
bool cache_ent_use_locked(struct cfs_cache *c, struct disk_ent *e);
void cache_disk_drop(struct cfs_cache *c, const cfs_digest *d);
int cache_ident_get(int fd, struct ident *id);
bool cache_ident_eq(const struct ident *a, const struct ident *b);
void cache_seal_set(int fd, const cfs_digest *d, struct ident *id);
void cache_disk_remember(struct cfs_cache *c, const cfs_digest *d, const struct ident *id);
int cache_disk_open(struct cfs_cache *c, struct cfs_buf *b);
void cache_disk_trailer_init(struct disk_hdr *h, const struct cfs_buf *b);
void cache_disk_tmp_name(const char *path, char tmp[CFS_CACHE_TMP_LEN]);
void cache_disk_stamp(int fd, const cfs_digest *d, uint64_t used_ns);
int cache_disk_write_file(struct cfs_cache *c, const struct cfs_buf *b, uint64_t used_ns);

/* ---- cache_scan.c ---- */

struct disk_ent *cache_disk_reserve(struct cfs_cache *c, const struct cfs_buf *b, uint64_t size);
void cache_disk_write_end(struct cfs_cache *c, struct disk_ent *e, int ret, bool async);
int cache_disk_rescan(struct cfs_cache *c, bool account);
void cache_disk_rescan_if_due(struct cfs_cache *c);
void cache_disk_ents_free(struct table *t);

/* ---- cache_ring.c ---- */

void cache_ring_start(struct cfs_cache *c);
int cache_ring_write(struct cfs_cache *c, struct cfs_buf *b, struct disk_ent *e, bool locked);
int cache_ring_read_pending(struct cfs_cache *c, struct cfs_buf *b);

#endif /* CFS_CACHE_I_H */
