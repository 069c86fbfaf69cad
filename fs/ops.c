/* SPDX-License-Identifier: MIT */
/*
 * The FUSE low-level operations of cfs-mount: the only glue between libfuse
 * and the image library.  Each op has a do_* helper that returns 0 or
 * -errno and replies exactly once itself.  Inode numbers are the index's,
 * so nothing is allocated per lookup and forget has nothing to free.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "format.h"
#include "fs.h"
#include "image.h"
#include "profile.h"
#include "util.h"

#define FS_BLKSIZE 4096u
#define FS_MAX_READAHEAD (1u << 20)
#define FS_MAX_BACKGROUND 64u /* outstanding readahead requests */
#define FS_MAX_GROUPS 64

static struct cfs_fs *fs_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

/* The inode the kernel names, which must be in the image: an unknown
 * number is a stale handle, not a missing name. */
static int fs_inode(struct cfs_fs *fs, fuse_ino_t ino, struct cfs_inode *out)
{
	int ret = cfs_index_inode(fs->idx, ino, out);

	return ret == -ENOENT ? -ESTALE : ret;
}

static void fs_fill_stat(const struct cfs_inode *in, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = in->ino;
	st->st_mode = in->mode;
	st->st_nlink = in->nlink;
	st->st_uid = in->uid;
	st->st_gid = in->gid;
	st->st_rdev = in->rdev;
	st->st_size = (off_t)in->size;
	st->st_blocks = (blkcnt_t)in->blocks;
	st->st_blksize = FS_BLKSIZE;
	st->st_mtim.tv_sec = in->mtime_sec;
	st->st_mtim.tv_nsec = in->mtime_nsec;
	st->st_atim = st->st_mtim;
	st->st_ctim = st->st_mtim;
}

static void fs_fill_entry(struct cfs_fs *fs, const struct cfs_inode *in,
			  struct fuse_entry_param *e)
{
	memset(e, 0, sizeof(*e));
	e->ino = in->ino;
	e->generation = 1;
	e->attr_timeout = fs->timeout;
	e->entry_timeout = fs->timeout;
	fs_fill_stat(in, &e->attr);
}

static void reply_err(fuse_req_t req, int neg_errno)
{
	fuse_reply_err(req, -neg_errno);
}

/* init ------------------------------------------------------------------ */

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	struct cfs_fs *fs = userdata;
	unsigned want = FUSE_CAP_ASYNC_READ | FUSE_CAP_READDIRPLUS | FUSE_CAP_READDIRPLUS_AUTO |
			FUSE_CAP_PARALLEL_DIROPS | FUSE_CAP_CACHE_SYMLINKS;

	conn->want |= want & conn->capable;
	/* Opening a file of an immutable read-only image has nothing to
	 * check that the VFS has not (the mount is "ro"), nothing to set up
	 * and nothing to release: with the kernel's no_open, an open() costs
	 * no round trip, and the page cache is kept as with keep_cache. */
	if (!fs->want_open && (conn->capable & FUSE_CAP_NO_OPEN_SUPPORT)) {
		conn->want |= FUSE_CAP_NO_OPEN_SUPPORT;
		fs->no_open = true;
	}
	/* READ replies spliced from the cache files (fs/splice.c). */
	if (fs->splice && (conn->capable & FUSE_CAP_SPLICE_WRITE))
		conn->want |= FUSE_CAP_SPLICE_WRITE;
	else
		fs->splice = false;
	/* What -o max_read said (libfuse insists on both). */
	if (fs->max_read && fs->max_read < (1u << 20))
		conn->max_read = (unsigned)fs->max_read;
	if (fs->no_readdirplus) /* benchmark knob only */
		conn->want &= ~(unsigned)(FUSE_CAP_READDIRPLUS | FUSE_CAP_READDIRPLUS_AUTO);
	/* The image never changes: nothing to invalidate, nothing to lock or
	 * write back, and no NFS export (no lookups of "." and ".."). */
	conn->want &= ~(unsigned)(FUSE_CAP_EXPORT_SUPPORT | FUSE_CAP_AUTO_INVAL_DATA |
				  FUSE_CAP_WRITEBACK_CACHE | FUSE_CAP_POSIX_LOCKS |
				  FUSE_CAP_FLOCK_LOCKS);
	/* libfuse caps this at what the kernel offered. */
	conn->max_readahead = FS_MAX_READAHEAD;
	conn->max_background = FS_MAX_BACKGROUND;
	conn->congestion_threshold = FS_MAX_BACKGROUND * 3 / 4;
	conn->time_gran = 1;
}

/* lookup, forget, getattr ---------------------------------------------- */

static int do_lookup(struct cfs_fs *fs, fuse_ino_t parent, const char *name,
		     struct fuse_entry_param *e)
{
	struct cfs_inode dir, in;
	size_t len = strlen(name);
	uint64_t ino;
	int ret;

	ret = fs_inode(fs, parent, &dir);
	if (ret < 0)
		return ret;
	if (!S_ISDIR(dir.mode))
		return -ENOTDIR;
	if (len > CFS_NAME_MAX)
		return -ENAMETOOLONG;
	ret = cfs_index_lookup(fs->idx, parent, name, len, &ino);
	if (ret < 0)
		return ret;
	ret = cfs_index_inode(fs->idx, ino, &in);
	if (ret < 0)
		return -EUCLEAN; /* the validated index pointed there */
	fs_fill_entry(fs, &in, e);
	return 0;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct cfs_fs *fs = fs_of(req);
	struct fuse_entry_param e;
	int ret = do_lookup(fs, parent, name, &e);

	if (ret == -ENOENT) {
		/* A negative entry: the kernel caches the absence too. */
		memset(&e, 0, sizeof(e));
		e.ino = 0;
		e.entry_timeout = fs->timeout;
		fuse_reply_entry(req, &e);
	} else if (ret < 0) {
		reply_err(req, ret);
	} else {
		fuse_reply_entry(req, &e);
	}
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	(void)ino;
	(void)nlookup;
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	(void)count;
	(void)forgets;
	fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct cfs_fs *fs = fs_of(req);
	struct cfs_inode in;
	struct stat st;
	int ret;

	(void)fi;
	ret = fs_inode(fs, ino, &in);
	if (ret < 0) {
		reply_err(req, ret);
		return;
	}
	fs_fill_stat(&in, &st);
	fuse_reply_attr(req, &st, fs->timeout);
}

static int do_readlink(struct cfs_fs *fs, fuse_ino_t ino, char *out, size_t cap)
{
	struct cfs_inode in;
	const char *target;
	size_t len;
	int ret;

	ret = fs_inode(fs, ino, &in);
	if (ret < 0)
		return ret;
	ret = cfs_index_readlink(fs->idx, ino, &target, &len);
	if (ret < 0)
		return ret;
	if (len >= cap)
		return -ENAMETOOLONG;
	memcpy(out, target, len);
	out[len] = '\0';
	return 0;
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	char target[CFS_SYMLINK_MAX + 1];
	int ret = do_readlink(fs_of(req), ino, target, sizeof(target));

	if (ret < 0)
		reply_err(req, ret);
	else
		fuse_reply_readlink(req, target);
}

/* directories ------------------------------------------------------------ */

static int do_opendir(struct cfs_fs *fs, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct cfs_inode in;
	int ret;

	ret = fs_inode(fs, ino, &in);
	if (ret < 0)
		return ret;
	if (!S_ISDIR(in.mode))
		return -ENOTDIR;
	if ((fi->flags & O_ACCMODE) != O_RDONLY)
		return -EROFS;
	/* Listings never change: let the kernel keep them. */
	fi->cache_readdir = 1;
	fi->keep_cache = 1;
	return 0;
}

/* Replies to open and opendir: the error, or fi as do_open* filled it in. */
static void reply_open(fuse_req_t req, int ret, const struct fuse_file_info *fi)
{
	if (ret < 0)
		reply_err(req, ret);
	else
		fuse_reply_open(req, fi);
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	reply_open(req, do_opendir(fs_of(req), ino, fi), fi);
}

/* Adds one entry; returns its size, which exceeds rem when it did not fit
 * (and then nothing was added). */
static size_t dir_add(struct cfs_fs *fs, fuse_req_t req, bool plus, char *p, size_t rem,
		      const char *name, const struct cfs_inode *in, bool dot, off_t next)
{
	if (plus) {
		struct fuse_entry_param e;

		if (dot) {
			/* "." and "..": no lookup count, so no entry either */
			memset(&e, 0, sizeof(e));
			e.attr.st_ino = in->ino;
			e.attr.st_mode = in->mode;
		} else {
			fs_fill_entry(fs, in, &e);
		}
		return fuse_add_direntry_plus(req, p, rem, name, &e, next);
	} else {
		struct stat st;

		memset(&st, 0, sizeof(st));
		st.st_ino = in->ino;
		st.st_mode = in->mode & S_IFMT;
		return fuse_add_direntry(req, p, rem, name, &st, next);
	}
}

/* Offsets: 0 is ".", 1 "..", 2 + i entry i of the index: stable and derived
 * from the image, so a listing can resume anywhere. */
static int do_readdir(struct cfs_fs *fs, fuse_req_t req, fuse_ino_t ino, bool plus, char *buf,
		      size_t size, off_t off, size_t *used)
{
	struct cfs_inode dir, in;
	char name[CFS_NAME_MAX + 1];
	size_t pos = 0, n;
	int ret;

	ret = fs_inode(fs, ino, &dir);
	if (ret < 0)
		return ret;
	if (!S_ISDIR(dir.mode))
		return -ENOTDIR;
	if (off < 0)
		return -EINVAL;

	if (off == 0) {
		n = dir_add(fs, req, plus, buf + pos, size - pos, ".", &dir, true, 1);
		if (n > size - pos)
			goto out;
		pos += n;
		off = 1;
	}
	if (off == 1) {
		ret = cfs_index_inode(fs->idx, dir.parent, &in);
		if (ret < 0)
			return -EUCLEAN;
		n = dir_add(fs, req, plus, buf + pos, size - pos, "..", &in, true, 2);
		if (n > size - pos)
			goto out;
		pos += n;
		off = 2;
	}
	for (uint64_t i = (uint64_t)off - 2;; i++) {
		struct cfs_dirent d;

		ret = cfs_index_dirent(fs->idx, ino, i, &d);
		if (ret < 0)
			return ret;
		if (ret == 0)
			break;
		if (d.name_len > CFS_NAME_MAX)
			return -EUCLEAN;
		ret = cfs_index_inode(fs->idx, d.ino, &in);
		if (ret < 0)
			return -EUCLEAN;
		memcpy(name, d.name, d.name_len);
		name[d.name_len] = '\0';
		n = dir_add(fs, req, plus, buf + pos, size - pos, name, &in, false,
			    (off_t)(i + 3));
		if (n > size - pos)
			break;
		pos += n;
	}
out:
	*used = pos;
	return 0;
}

static void fs_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus)
{
	size_t used = 0;
	char *buf;
	int ret;

	buf = malloc(size ? size : 1);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	ret = do_readdir(fs_of(req), req, ino, plus, buf, size, off, &used);
	if (ret < 0)
		reply_err(req, ret);
	else
		fuse_reply_buf(req, buf, used);
	free(buf);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	(void)fi;
	fs_readdir(req, ino, size, off, false);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			   struct fuse_file_info *fi)
{
	(void)fi;
	fs_readdir(req, ino, size, off, true);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	fuse_reply_err(req, 0);
}

/* files ------------------------------------------------------------------ */

static int do_open(struct cfs_fs *fs, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct cfs_inode in;
	int ret;

	ret = fs_inode(fs, ino, &in);
	if (ret < 0)
		return ret;
	if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & (O_TRUNC | O_CREAT)))
		return -EROFS;
	if (S_ISDIR(in.mode))
		return -EISDIR;
	/* The data never changes: keep the page cache across opens, and
	 * closing has nothing to flush. */
	fi->keep_cache = 1;
	fi->noflush = 1;
	return 0;
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct cfs_fs *fs = fs_of(req);

	/* ENOSYS once turns OPEN off for the life of the connection. */
	if (fs->no_open)
		reply_err(req, -ENOSYS);
	else
		reply_open(req, do_open(fs, ino, fi), fi);
}

/* The inode of a file to read, decoded here once for the whole read. */
static int read_check(struct cfs_fs *fs, fuse_ino_t ino, size_t size, off_t off,
		      struct cfs_inode *in)
{
	int ret;

	ret = fs_inode(fs, ino, in);
	if (ret < 0)
		return ret;
	if (S_ISDIR(in->mode))
		return -EISDIR;
	if (!S_ISREG(in->mode))
		return -EINVAL;
	if (off < 0)
		return -EINVAL;
	/* Noted as asked, not as answered: the kernel's readahead sends a
	 * file's next reads together and they complete in any order, so a
	 * profile noted on completion could list a file's tail first. A
	 * read_splice that falls back to a copy notes twice, which the
	 * recorder ignores. */
	if (fs->rec)
		cfs_recorder_note(fs->rec, ino, (uint64_t)off, (uint64_t)size);
	return 0;
}

/* What a read's outcome n means to the reader, logged once here. */
static ssize_t read_done(struct cfs_fs *fs, fuse_ino_t ino, size_t size, off_t off, ssize_t n)
{
	if (n < 0) {
		cfs_err("read of inode %" PRIu64 " (%zu bytes at %lld): %s", (uint64_t)ino, size,
			(long long)off, cfs_strerror((int)n));
		/* Missing, corrupt or mismatched data, and a store that failed,
		 * refused or did not answer in time (ETIMEDOUT, EACCES, EPROTO,
		 * ...), are an I/O error to the reader: the log line above says
		 * which. */
		if (n != -ENOMEM && n != -EINVAL)
			n = -EIO;
	}
	return n;
}

static ssize_t do_read(struct cfs_fs *fs, fuse_ino_t ino, void *buf, size_t size, off_t off)
{
	struct cfs_inode in;
	int ret = read_check(fs, ino, size, off, &in);

	if (ret < 0)
		return ret;
	return read_done(fs, ino, size, off,
			 cfs_image_read_inode(fs->img, &in, buf, size, (uint64_t)off));
}

/* Through a buffer: read() of the cache file or the chunk in memory,
 * copied into the reply. */
static void read_copy(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off)
{
	struct cfs_fs *fs = fs_of(req);
	ssize_t n;
	void *buf;

	buf = malloc(size ? size : 1);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	n = do_read(fs, ino, buf, size, off);
	if (n < 0) {
		reply_err(req, (int)n);
	} else {
		atomic_fetch_add_explicit(&fs->read_copy, 1, memory_order_relaxed);
		fuse_reply_buf(req, buf, (size_t)n);
	}
	free(buf);
}

/* Spliced from the cache files: 0 once replied, else the caller copies. */
static int read_splice(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off)
{
	struct cfs_fs *fs = fs_of(req);
	struct cfs_image_seg segs[FS_REPLY_SEGS_MAX];
	struct cfs_inode in;
	unsigned nseg = 0;
	ssize_t n;
	int ret;

	ret = read_check(fs, ino, size, off, &in);
	if (ret < 0) {
		reply_err(req, ret);
		return 0;
	}
	n = cfs_image_map(fs->img, &in, (uint64_t)off, size, segs, FS_REPLY_SEGS_MAX, &nseg);
	if (n == -E2BIG)
		return (int)n;
	if (n < 0) {
		reply_err(req, (int)read_done(fs, ino, size, off, n));
		return 0;
	}
	ret = cfs_fs_reply_splice(fs, req, segs, nseg, (size_t)n);
	cfs_image_unmap(segs, nseg);
	if (ret == 0) {
		atomic_fetch_add_explicit(&fs->read_splice, 1, memory_order_relaxed);
		read_done(fs, ino, size, off, n);
	}
	return ret;
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	(void)fi;
	if (fs_of(req)->splice && read_splice(req, ino, size, off) == 0)
		return;
	read_copy(req, ino, size, off);
}

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	fuse_reply_err(req, 0);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	(void)ino;
	(void)datasync;
	(void)fi;
	fuse_reply_err(req, 0);
}

/* statfs, xattrs, access ------------------------------------------------- */

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct cfs_fs *fs = fs_of(req);
	struct statvfs sv;

	(void)ino;
	memset(&sv, 0, sizeof(sv));
	sv.f_bsize = FS_BLKSIZE;
	sv.f_frsize = FS_BLKSIZE;
	sv.f_blocks = (fsblkcnt_t)((fs->info.total_file_bytes + FS_BLKSIZE - 1) / FS_BLKSIZE);
	sv.f_bfree = 0;
	sv.f_bavail = 0;
	sv.f_files = (fsfilcnt_t)fs->info.inode_count;
	sv.f_ffree = 0;
	sv.f_favail = 0;
	sv.f_namemax = CFS_NAME_MAX;
	sv.f_flag = ST_RDONLY;
	fuse_reply_statfs(req, &sv);
}

static int do_getxattr(struct cfs_fs *fs, fuse_ino_t ino, const char *name,
		       struct cfs_xattr *x)
{
	struct cfs_inode in;
	int ret;

	ret = fs_inode(fs, ino, &in);
	if (ret < 0)
		return ret;
	return cfs_index_getxattr(fs->idx, ino, name, x);
}

/* getxattr("user.cfs.stats") on the root: the live counters. */
static void reply_stats(fuse_req_t req, size_t size)
{
	char json[CFS_FS_STATS_MAX];
	int n = cfs_fs_stats_json(fs_of(req), json, sizeof(json));

	if (n < 0)
		reply_err(req, n);
	else if (size == 0)
		/* The counters may grow before the caller asks again: leave room. */
		fuse_reply_xattr(req, CFS_MIN((size_t)n + 512, sizeof(json)));
	else if (size < (size_t)n)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, json, (size_t)n);
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	struct cfs_xattr x;
	int ret;

	if (ino == CFS_ROOT_INO && !strcmp(name, CFS_FS_STATS_XATTR)) {
		reply_stats(req, size);
		return;
	}
	ret = do_getxattr(fs_of(req), ino, name, &x);

	if (ret < 0)
		reply_err(req, ret);
	else if (size == 0)
		fuse_reply_xattr(req, x.value_len);
	else if (size < x.value_len)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, x.value, x.value_len);
}

static int do_listxattr(struct cfs_fs *fs, fuse_ino_t ino, char **list, size_t *total)
{
	struct cfs_inode in;
	struct cfs_xattr x;
	size_t len = 0, pos = 0;
	char *buf;
	int ret;

	ret = fs_inode(fs, ino, &in);
	if (ret < 0)
		return ret;
	for (uint32_t i = 0;; i++) {
		ret = cfs_index_xattr(fs->idx, ino, i, &x);
		if (ret < 0)
			return ret;
		if (ret == 0)
			break;
		len += x.name_len + 1;
	}
	buf = malloc(len ? len : 1);
	if (!buf)
		return -ENOMEM;
	for (uint32_t i = 0; pos < len; i++) {
		ret = cfs_index_xattr(fs->idx, ino, i, &x);
		if (ret <= 0 || x.name_len + 1 > len - pos) {
			free(buf);
			return ret < 0 ? ret : -EUCLEAN;
		}
		memcpy(buf + pos, x.name, x.name_len);
		pos += x.name_len;
		buf[pos++] = '\0';
	}
	*list = buf;
	*total = len;
	return 0;
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	size_t total = 0;
	char *list = NULL;
	int ret = do_listxattr(fs_of(req), ino, &list, &total);

	if (ret < 0)
		reply_err(req, ret);
	else if (size == 0)
		fuse_reply_xattr(req, total);
	else if (size < total)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, list, total);
	free(list);
}

static bool in_groups(fuse_req_t req, gid_t gid)
{
	gid_t groups[FS_MAX_GROUPS];
	int n = fuse_req_getgroups(req, FS_MAX_GROUPS, groups);

	for (int i = 0; i < n && i < FS_MAX_GROUPS; i++)
		if (groups[i] == gid)
			return true;
	return false;
}

/* Only called without -o default_permissions: the kernel then asks for
 * access(2) and chdir. */
static int do_access(struct cfs_fs *fs, fuse_req_t req, fuse_ino_t ino, int mask)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct cfs_inode in;
	unsigned bits;
	int ret;

	ret = fs_inode(fs, ino, &in);
	if (ret < 0)
		return ret;
	if (mask == F_OK)
		return 0;
	if (mask & W_OK)
		return -EROFS;
	if (ctx->uid == 0) {
		/* root may execute only what someone may execute */
		if ((mask & X_OK) && !S_ISDIR(in.mode) && !(in.mode & 0111))
			return -EACCES;
		return 0;
	}
	if (ctx->uid == in.uid)
		bits = (in.mode >> 6) & 7;
	else if (ctx->gid == in.gid || in_groups(req, in.gid))
		bits = (in.mode >> 3) & 7;
	else
		bits = in.mode & 7;
	if (((unsigned)mask & (R_OK | X_OK)) & ~bits)
		return -EACCES;
	return 0;
}

static void op_access(fuse_req_t req, fuse_ino_t ino, int mask)
{
	reply_err(req, do_access(fs_of(req), req, ino, mask));
}

const struct fuse_lowlevel_ops cfs_fs_ops = {
	.init = op_init,
	.lookup = op_lookup,
	.forget = op_forget,
	.forget_multi = op_forget_multi,
	.getattr = op_getattr,
	.readlink = op_readlink,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.readdirplus = op_readdirplus,
	.releasedir = op_release,
	.fsyncdir = op_fsync,
	.open = op_open,
	.read = op_read,
	.flush = op_flush,
	.release = op_release,
	.fsync = op_fsync,
	.statfs = op_statfs,
	.getxattr = op_getxattr,
	.listxattr = op_listxattr,
	.access = op_access,
	.setattr = cfs_ro_setattr,
	.mknod = cfs_ro_mknod,
	.mkdir = cfs_ro_mkdir,
	.unlink = cfs_ro_unlink,
	.rmdir = cfs_ro_unlink,
	.symlink = cfs_ro_symlink,
	.rename = cfs_ro_rename,
	.link = cfs_ro_link,
	.write = cfs_ro_write,
	.create = cfs_ro_create,
	.setxattr = cfs_ro_setxattr,
	.removexattr = cfs_ro_removexattr,
	.fallocate = cfs_ro_fallocate,
};
