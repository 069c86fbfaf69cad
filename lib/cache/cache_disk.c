/* SPDX-License-Identifier: MIT */
/*
 * The chunk cache's disk entries, one at a time (cache_i.h): an entry's
 * path in the directory, its trailer, its seal, opening and verifying
 * it, and writing it to a temporary that is renamed into place.  Here
 * too are the calls that keep one entry of the view in step with what
 * an open found (used, gone, verified); whole passes over the directory
 * are cache_scan.c's.  Another process may write, touch or delete any
 * entry at any time, so every open checks the file it got, and trusts
 * it without hashing only when this process wrote or verified the file
 * in this very state, or when it carries its seal.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#include "cache_i.h"
#include "util.h"

/* A disk hit moves the entry's mtime forward at most this often. */
#define TOUCH_SEC 60
/* A first-seen entry is hashed through a buffer this size. */
#define VERIFY_BUF (256u << 10)

/* An entry whose content was verified carries a seal: an xattr holding a
 * hash of its digest, size and mtime.  Anything that writes to the file
 * through the filesystem moves its mtime, so the seal no longer matches,
 * and a process that opens the entry for the first time trusts it without
 * hashing only while it does.  Where the filesystem has no user xattrs,
 * first-seen entries are hashed. */
#define SEAL_XATTR "user.cfs.seal"

void cache_disk_path(const cfs_digest *d, char out[CFS_CACHE_PATH_LEN])
{
	char hex[CFS_DIGEST_HEX_LEN + 1];

	cfs_digest_hex(d, hex);
	snprintf(out, CFS_CACHE_PATH_LEN, "%.2s/%s", hex, hex);
}

/* Forgets an entry whose file turned out missing or bad. */
static void disk_forget(struct cfs_cache *c, const cfs_digest *d)
{
	struct disk_ent *e = NULL;
	struct node *n;

	pthread_mutex_lock(&c->lock);
	n = cache_table_find(&c->disk, d);
	if (n && !cache_ent_of(n)->writing) {
		e = cache_ent_of(n);
		cache_table_remove(&c->disk, n);
		cache_list_del(n);
		c->disk_bytes -= e->size;
	}
	pthread_mutex_unlock(&c->lock);
	free(e);
}

/* The wall clock, as file mtimes use it: CLOCK_REALTIME_COARSE is fine for
 * the LRU key of a hit; a new entry takes CLOCK_REALTIME, so that entries
 * written one after another stay in order (their files get that time). */
uint64_t cache_wall_ns(clockid_t clk)
{
	struct timespec ts;

	clock_gettime(clk, &ts);
	return (uint64_t)ts.tv_sec * CFS_CACHE_NS_PER_SEC + (uint64_t)ts.tv_nsec;
}

/* Marks an entry of the view used now (this process evicts by it);
 * returns true when its file's mtime is due to move forward too. */
bool cache_ent_use_locked(struct cfs_cache *c, struct disk_ent *e)
{
	uint64_t now = cache_wall_ns(CLOCK_REALTIME_COARSE);

	cache_list_touch(&c->disk_lru, &e->n);
	e->used_ns = now;
	e->confirmed = c->gen;
	if ((int64_t)(now / CFS_CACHE_NS_PER_SEC) - e->stamp < TOUCH_SEC)
		return false;
	e->stamp = (int64_t)(now / CFS_CACHE_NS_PER_SEC);
	return true;
}

/* Marks an entry just read as recently used, adding it when another
 * process sharing the directory wrote it.  Returns true when its mtime is
 * due to be moved forward, so that other processes see it in use. */
static bool disk_touch(struct cfs_cache *c, const cfs_digest *d, uint64_t size)
{
	struct disk_ent *e = NULL;
	bool refresh = false;
	struct node *n;

	pthread_mutex_lock(&c->lock);
	n = cache_table_find(&c->disk, d);
	if (n) {
		e = cache_ent_of(n);
	} else {
		e = calloc(1, sizeof(*e));
		if (e) {
			e->n.d = *d;
			e->size = size;
			cache_table_insert(&c->disk, &e->n);
			cache_list_add_head(&c->disk_lru, &e->n);
			c->disk_bytes += size;
		}
	}
	if (e)
		refresh = cache_ent_use_locked(c, e);
	pthread_mutex_unlock(&c->lock);
	return refresh;
}

/* Deletes a torn, truncated or flipped entry; the load rewrites it. */
void cache_disk_drop(struct cfs_cache *c, const cfs_digest *d)
{
	char path[CFS_CACHE_PATH_LEN];

	cache_disk_path(d, path);
	cache_stat_add(&c->disk_bad, 1);
	cfs_info("chunk cache: entry %s failed its check; reloading", path);
	unlinkat(c->dirfd, path, 0);
	disk_forget(c, d);
}

int cache_ident_get(int fd, struct ident *id)
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

/* Seals fd as it is now; true when it did.  Best effort: an unsealed
 * entry costs one hash per process. */
static bool seal_write(int fd, const cfs_digest *d, struct ident *id)
{
	uint64_t v;

	if (cache_ident_get(fd, id) < 0)
		return false;
	v = htole64(seal_of(d, id));
	return fsetxattr(fd, SEAL_XATTR, &v, sizeof(v), 0) == 0;
}

/* Seals fd as it is now and returns its identity after (the xattr moves
 * ctime). */
void cache_seal_set(int fd, const cfs_digest *d, struct ident *id)
{
	if (seal_write(fd, d, id))
		cache_ident_get(fd, id);
}

static bool seal_ok(int fd, const cfs_digest *d, const struct ident *id)
{
	uint64_t v;

	return fgetxattr(fd, SEAL_XATTR, &v, sizeof(v)) == (ssize_t)sizeof(v) &&
	       le64toh(v) == seal_of(d, id);
}

bool cache_ident_eq(const struct ident *a, const struct ident *b)
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
	n = cache_table_find(&c->disk, d);
	if (n)
		ok = cache_ent_of(n)->known ? cache_ident_eq(&cache_ent_of(n)->id, id) : cache_ent_of(n)->ours;
	pthread_mutex_unlock(&c->lock);
	return ok || seal_ok(fd, d, id);
}

void cache_disk_remember(struct cfs_cache *c, const cfs_digest *d, const struct ident *id)
{
	struct node *n;

	pthread_mutex_lock(&c->lock);
	n = cache_table_find(&c->disk, d);
	if (n) {
		cache_ent_of(n)->known = true;
		cache_ent_of(n)->id = *id;
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
	cache_stat_add(&c->verifies, 1);
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
int cache_disk_open(struct cfs_cache *c, struct cfs_buf *b)
{
	char path[CFS_CACHE_PATH_LEN];
	struct disk_hdr h;
	struct ident id;
	int fd, ret;

	cache_disk_path(&b->n.d, path);
	fd = openat(c->dirfd, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		/* ENOENT: never written, or another process evicted it. */
		ret = -errno;
		if (ret == -ENOENT)
			disk_forget(c, &b->n.d);
		return ret;
	}
	ret = cache_ident_get(fd, &id);
	if (ret < 0)
		goto out_close; /* a miss; the file may be fine */
	if (id.size < (off_t)sizeof(h))
		goto bad;
	ret = cfs_pread_full(fd, &h, sizeof(h), id.size - (off_t)sizeof(h));
	if (ret == -ENODATA)
		goto bad; /* shrank under us */
	if (ret < 0)
		goto out_close;
	if (memcmp(h.magic, CFS_CACHE_MAGIC, sizeof(h.magic)))
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
		cache_seal_set(fd, &b->n.d, &id);
	}
	/* Best effort: a read-only directory still serves hits.  The touch
	 * moves mtime: seal again, and take the identity after. */
	if (disk_touch(c, &b->n.d, (uint64_t)id.size) && futimens(fd, NULL) == 0)
		cache_seal_set(fd, &b->n.d, &id);
	cache_disk_remember(c, &b->n.d, &id);
	b->fd = fd;
	b->id = id;
	return 0;

out_close:
	close(fd);
	return ret;

bad:
	close(fd);
	cache_disk_drop(c, &b->n.d);
	return -EUCLEAN;
}

/* ---- writing an entry ---- */

void cache_disk_trailer_init(struct disk_hdr *h, const struct cfs_buf *b)
{
	memcpy(h->magic, CFS_CACHE_MAGIC, sizeof(h->magic));
	h->len = htole64(b->len);
	h->xxh = htole64(XXH3_64bits(b->data, b->len));
	h->reserved = 0;
}

/* <path>.tmp.<16 hex>: unique among writers of every process.  Each
 * thread draws a random start once and counts from it (a syscall per entry
 * adds up over a stream of thousands); the file is made O_EXCL, so even a
 * collision only fails that one write. */
void cache_disk_tmp_name(const char *path, char tmp[CFS_CACHE_TMP_LEN])
{
	static _Thread_local uint64_t next;

	if (!next && getrandom(&next, sizeof(next), GRND_NONBLOCK) != sizeof(next))
		next = cfs_now_ns() ^ (uint64_t)(uintptr_t)&next;
	snprintf(tmp, CFS_CACHE_TMP_LEN, "%s.tmp.%016" PRIx64, path, next++);
}

/* Gives a just written entry the time of its reservation as mtime (the
 * view orders entries by it, and passes take a file's age from it), then
 * its seal.  Best effort: failing, only the order of a later eviction
 * suffers, or a later process hashes the entry once. */
void cache_disk_stamp(int fd, const cfs_digest *d, uint64_t used_ns)
{
	struct timespec ts[2];
	struct ident id;

	ts[0].tv_sec = ts[1].tv_sec = (time_t)(used_ns / CFS_CACHE_NS_PER_SEC);
	ts[0].tv_nsec = ts[1].tv_nsec = (long)(used_ns % CFS_CACHE_NS_PER_SEC);
	if (futimens(fd, ts) == 0)
		(void)seal_write(fd, d, &id);
}

/* The content and then the trailer (a copy of *h), in one call unless the
 * first comes back short. */
static int write_entry(int fd, const struct cfs_buf *b, struct disk_hdr h)
{
	struct iovec iov[2] = { { b->data, b->len }, { &h, sizeof(h) } };
	size_t done;
	ssize_t n;

	do
		n = writev(fd, iov, 2);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	done = (size_t)n;
	if (done < b->len) {
		int ret = cfs_write_full(fd, b->data + done, b->len - done);

		return ret < 0 ? ret : cfs_write_full(fd, &h, sizeof(h));
	}
	done -= b->len;
	return cfs_write_full(fd, (const uint8_t *)&h + done, sizeof(h) - done);
}

int cache_disk_write_file(struct cfs_cache *c, const struct cfs_buf *b, uint64_t used_ns)
{
	char path[CFS_CACHE_PATH_LEN], tmp[CFS_CACHE_TMP_LEN];
	struct disk_hdr h;
	int fd, ret;

	cache_disk_trailer_init(&h, b);
	cache_disk_path(&b->n.d, path);
	cache_disk_tmp_name(path, tmp);
	fd = openat(c->dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, CFS_CACHE_FILE_MODE);
	if (fd < 0 && errno == ENOENT) {
		/* The fan-out directory, made on first use. */
		char dir[3] = { path[0], path[1], '\0' };

		if (mkdirat(c->dirfd, dir, CFS_CACHE_DIR_MODE) < 0 && errno != EEXIST)
			return -errno;
		fd = openat(c->dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, CFS_CACHE_FILE_MODE);
	}
	if (fd < 0)
		return -errno;

	/* No fsync: after a crash a torn entry is short (the filesystem
	 * extends the size only over data written) and fails its checks. */
	ret = write_entry(fd, b, h);
	/* The rename keeps both. */
	if (!ret)
		cache_disk_stamp(fd, &b->n.d, used_ns);
	if (close(fd) < 0 && !ret)
		ret = -errno;
	if (!ret && renameat(c->dirfd, tmp, c->dirfd, path) < 0)
		ret = -errno;
	if (ret < 0)
		unlinkat(c->dirfd, tmp, 0);
	return ret;
}
