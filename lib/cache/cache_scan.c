/* SPDX-License-Identifier: MIT */
/*
 * The chunk cache's view of its disk directory (cache_i.h): the entries
 * it knows, in an LRU, and their bytes against disk_max.  A write
 * reserves its entry here first, evicting to make room, and ends the
 * reservation when the file is in place or failed.
 *
 * The disk tier's list is this process's view of a directory that other
 * processes write to and evict from.  A pass (cache_disk_rescan) lists the
 * directory unlocked, folds the listing into the view under the mutex, and
 * evicts to disk_max while holding flock() on <dir>/.lock.  A process that
 * finds the lock taken appends a byte to the lock file first: the holder
 * checks its size once it lets go and goes round again, so an entry renamed
 * after the holder's listing is never left uncounted.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cache_i.h"
#include "util.h"

/* A temporary file this old is left over from a crash, not being written. */
#define TMP_STALE_SEC 60
/* A pass over the directory after writing disk_max / RESCAN_FRACTION bytes. */
#define RESCAN_FRACTION 8
/* Passes one call makes at most while other processes keep asking. */
#define RESCAN_ROUNDS 4
/* Listed entries folded into the view per hold of the mutex. */
#define FOLD_BATCH 256

/* ---- eviction ---- */

static void unlink_victims(struct cfs_cache *c, struct node *victims)
{
	char path[CFS_CACHE_PATH_LEN];

	while (victims) {
		struct node *next = victims->hnext;

		cache_disk_path(&victims->d, path);
		unlinkat(c->dirfd, path, 0);
		free(cache_ent_of(victims));
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

		if (!cache_ent_of(n)->writing) {
			struct cfs_buf *b = cache_handle_find_locked(c, &n->d);

			if (b && b->fd >= 0)
				cache_handle_remove_locked(c, b, handles);
			cache_list_del(n);
			cache_table_remove(&c->disk, n);
			c->disk_bytes -= cache_ent_of(n)->size;
			n->hnext = *victims;
			*victims = n;
			cache_stat_add(&c->evictions, 1);
		}
		n = prev;
	}
}

/* ---- writes' reservations ---- */

/* Reserves b's entry (size bytes on disk) in the view, as being written,
 * and evicts to make room; NULL when it is present or another thread is
 * writing it, or out of memory. */
struct disk_ent *cache_disk_reserve(struct cfs_cache *c, const struct cfs_buf *b, uint64_t size)
{
	struct node *victims = NULL, *handles = NULL;
	struct disk_ent *e;

	e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	e->n.d = b->n.d;
	e->size = size;
	e->used_ns = cache_wall_ns(CLOCK_REALTIME);
	e->stamp = (int64_t)(e->used_ns / CFS_CACHE_NS_PER_SEC);
	e->writing = true;

	pthread_mutex_lock(&c->lock);
	if (cache_table_find(&c->disk, &b->n.d)) {
		pthread_mutex_unlock(&c->lock);
		free(e);
		return NULL;
	}
	cache_table_insert(&c->disk, &e->n);
	cache_list_add_head(&c->disk_lru, &e->n);
	c->disk_bytes += size;
	disk_evict_locked(c, &victims, &handles);
	pthread_mutex_unlock(&c->lock);

	/* Here, not on the ring's thread: a pass must never list a file
	 * that the view already evicted. */
	unlink_victims(c, victims);
	cache_release_victims(handles);
	return e;
}

/* Logs a disk write failure once per errno value; the data is still
 * served from memory, so the caller never sees it. */
static void disk_write_failed(struct cfs_cache *c, int err)
{
	unsigned e = (unsigned)-err;

	cache_stat_add(&c->disk_write_errors, 1);
	if (e < 128) {
		uint64_t bit = 1ull << (e % 64);

		if (atomic_fetch_or(&c->warned[e / 64], bit) & bit)
			return;
	}
	cfs_warn("chunk cache: cannot write to the cache directory (%s); "
		 "serving from memory", cfs_strerror(err));
}

/* Ends the reservation e of a write that returned ret: the entry stands,
 * or goes and the failure is counted.  After every disk_max /
 * RESCAN_FRACTION bytes written, brings the view up to date. */
void cache_disk_write_end(struct cfs_cache *c, struct disk_ent *e, int ret, bool async)
{
	struct node *victims = NULL;
	bool rescan = false;

	pthread_mutex_lock(&c->lock);
	e->pending = NULL;
	if (ret == 0) {
		/* The page cache holds it now: the memory copy goes (readers
		 * holding it keep their reference), and the next get opens
		 * the file, which it trusts since it wrote it. */
		struct cfs_buf *b = cache_handle_find_locked(c, &e->n.d);

		if (b && b->fd < 0)
			cache_handle_remove_locked(c, b, &victims);
		e->ours = true;
		e->known = false;
	}
	if (ret < 0) {
		cache_table_remove(&c->disk, &e->n);
		cache_list_del(&e->n);
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

	cache_release_victims(victims);
	if (ret < 0) {
		free(e);
		disk_write_failed(c, ret);
	}
	if (rescan)
		cache_disk_rescan(c, false);
}

/* Runs the pass a ring write asked for, in a caller's thread. */
void cache_disk_rescan_if_due(struct cfs_cache *c)
{
	bool due;

	pthread_mutex_lock(&c->lock);
	due = c->rescan_due;
	c->rescan_due = false;
	pthread_mutex_unlock(&c->lock);
	if (due)
		cache_disk_rescan(c, false);
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

	d = cfs_opendir_at(c->dirfd, hh);
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
		cache_list_init(&e->n);
		e->size = (uint64_t)sb.st_size;
		e->used_ns = (uint64_t)sb.st_mtim.tv_sec * CFS_CACHE_NS_PER_SEC + (uint64_t)sb.st_mtim.tv_nsec;
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

	d = cfs_opendir_at(c->dirfd, ".");
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
		struct node *n = cache_table_find(&c->disk, &s->n.d);

		if (!n) {
			s->seen = gen;
			cache_table_insert(&c->disk, &s->n);
			cache_list_add_head(newer, &s->n);
			continue;
		}
		e = cache_ent_of(n);
		e->seen = gen;
		if (!e->writing)
			e->size = s->size;
		if (s->stamp > e->stamp)
			e->stamp = s->stamp;
		if (s->used_ns > e->used_ns) {
			e->used_ns = s->used_ns;
			cache_list_del(n);
			cache_list_add_head(newer, n);
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
	cache_list_init(&out);
	for (;;) {
		struct node *x = c->disk_lru.prev, *y = newer->prev, *pick;
		struct disk_ent *e;

		if (x == &c->disk_lru && y == newer)
			break;
		if (y == newer || (x != &c->disk_lru && cache_ent_of(x)->used_ns < cache_ent_of(y)->used_ns))
			pick = x;
		else
			pick = y;
		e = cache_ent_of(pick);
		cache_list_del(pick);
		if (e->seen != gen && e->confirmed != gen && !e->writing) {
			struct cfs_buf *b = cache_handle_find_locked(c, &pick->d);

			if (b && b->fd >= 0)
				cache_handle_remove_locked(c, b, handles);
			cache_table_remove(&c->disk, pick);
			pick->hnext = *garbage;
			*garbage = pick;
			continue;
		}
		cache_list_add_head(&out, pick);
		bytes += e->size;
	}
	cache_list_move_all(&c->disk_lru, &out);
	c->disk_bytes = bytes;
}

static void free_ents(struct node *n)
{
	while (n) {
		struct node *next = n->hnext;

		free(cache_ent_of(n));
		n = next;
	}
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
	bool locked, evict = true;
	off_t marks = 0;
	uint64_t written;
	uint32_t gen;
	int ret;

	*again = false;
	ret = cache_dir_lock_take(c, &marks);
	locked = ret == 0;
	if (ret == -EWOULDBLOCK) {
		if (!account)
			return 0;
		evict = false;
	}
	/* Other errors (no lock file, no flock on this filesystem): evict
	 * unserialised. */

	pthread_mutex_lock(&c->lock);
	gen = ++c->gen;
	written = c->since_scan;
	pthread_mutex_unlock(&c->lock);

	ret = disk_list(c, &l);
	if (ret < 0)
		goto out_unlock;

	cache_list_init(&newer);
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

	cache_stat_add(&c->rescans, 1);
	free_ents(garbage);
	unlink_victims(c, victims);
	cache_release_victims(handles);
out_unlock:
	listing_free(&l);
	if (locked)
		*again = cache_dir_lock_drop(c, marks);
	return ret;
}

/* Passes until nobody, in this process or another, asked for one while it
 * ran, or RESCAN_ROUNDS; one thread of c at a time, another asking
 * meanwhile makes it go round again. */
int cache_disk_rescan(struct cfs_cache *c, bool account)
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

/* Frees every entry of a disk table, leaving it empty. */
void cache_disk_ents_free(struct table *t)
{
	for (size_t i = 0; i <= t->mask; i++) {
		free_ents(t->b[i]);
		t->b[i] = NULL;
	}
	t->count = 0;
}
