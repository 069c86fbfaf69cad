/* SPDX-License-Identifier: MIT */
/*
 * Directory source for cfs-pack (cfs_pack_source_dir), a plug-in of the
 * pipeline in pack_pipeline.c.
 *
 * Symlinks are never followed: every component is opened with openat()
 * from its parent's fd and O_NOFOLLOW, so a tree that changes under us or
 * holds hostile links can only ever make us read what is inside it.  Entries
 * are visited in bytewise name order so the walk is deterministic (the
 * builder sorts anyway; this keeps chunk grouping stable too).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "builder.h"
#include "chunker.h"
#include "format.h"
#include "util.h"

#include "pack.h"

#define READ_SIZE (1u << 20)

struct link_slot {
	dev_t dev;
	ino_t ino;
	uint32_t node;
	bool used;
};

struct walk {
	struct cfs_pack_ctx *p;
	char *path;            /* for messages and the no-/proc fallback */
	size_t path_len, path_cap;
	size_t root_len;       /* of the root's part of path */
	uint8_t *buf;          /* file reads */
	bool have_proc;

	/* (st_dev, st_ino) -> node of the first name of a multiply linked
	 * non-directory. */
	struct link_slot *links;
	size_t links_cap, links_used;

	char *xnames;
	size_t xnames_cap;
	void *xval;
	size_t xval_cap;
};

static int fail_errno(struct walk *w, int err)
{
	return cfs_pack_fail(w->p, err, "%s: %s", w->path, cfs_strerror(err));
}

static int fail_what(struct walk *w, int err, const char *what)
{
	return cfs_pack_fail(w->p, err, "%s: %s: %s", w->path, what, cfs_strerror(err));
}

/* Appends "/name" to the path; returns the old length for path_pop. */
static int path_push(struct walk *w, const char *name, size_t *old)
{
	size_t n = strlen(name), need = w->path_len + 1 + n + 1;

	if (need > w->path_cap) {
		size_t cap = CFS_MAX(need, 2 * w->path_cap);
		char *np = realloc(w->path, cap);
		if (!np)
			return cfs_pack_fail(w->p, -ENOMEM, "%s: %s", w->path, cfs_strerror(-ENOMEM));
		w->path = np;
		w->path_cap = cap;
	}
	*old = w->path_len;
	if (w->path_len && w->path[w->path_len - 1] != '/')
		w->path[w->path_len++] = '/';
	memcpy(w->path + w->path_len, name, n + 1);
	w->path_len += n;
	return 0;
}

static void path_pop(struct walk *w, size_t old)
{
	w->path_len = old;
	w->path[old] = '\0';
}

/* ---- hard links ---- */

static size_t link_hash(dev_t dev, ino_t ino, size_t cap)
{
	uint64_t h = (uint64_t)ino * 0x9e3779b97f4a7c15ull ^ (uint64_t)dev * 0xc2b2ae3d27d4eb4full;

	return (size_t)(h ^ (h >> 29)) & (cap - 1);
}

static struct link_slot *link_find(struct walk *w, dev_t dev, ino_t ino)
{
	size_t i;

	if (!w->links_cap)
		return NULL;
	for (i = link_hash(dev, ino, w->links_cap); w->links[i].used; i = (i + 1) & (w->links_cap - 1))
		if (w->links[i].dev == dev && w->links[i].ino == ino)
			return &w->links[i];
	return NULL;
}

static int link_add(struct walk *w, dev_t dev, ino_t ino, uint32_t node)
{
	size_t i;

	if (2 * (w->links_used + 1) > w->links_cap) {
		size_t cap = w->links_cap ? 2 * w->links_cap : 256;
		struct link_slot *t = calloc(cap, sizeof(*t));

		if (!t)
			return -ENOMEM;
		for (size_t j = 0; j < w->links_cap; j++) {
			if (!w->links[j].used)
				continue;
			for (i = link_hash(w->links[j].dev, w->links[j].ino, cap); t[i].used;
			     i = (i + 1) & (cap - 1))
				;
			t[i] = w->links[j];
		}
		free(w->links);
		w->links = t;
		w->links_cap = cap;
	}
	for (i = link_hash(dev, ino, w->links_cap); w->links[i].used; i = (i + 1) & (w->links_cap - 1))
		;
	w->links[i] = (struct link_slot){ dev, ino, node, true };
	w->links_used++;
	return 0;
}

/* ---- attributes ---- */

static void attr_of(const struct stat *sb, struct cfs_attr *a)
{
	*a = (struct cfs_attr){
		.mode = sb->st_mode,
		.uid = sb->st_uid,
		.gid = sb->st_gid,
		.mtime_sec = sb->st_mtim.tv_sec,
		.mtime_nsec = (uint32_t)sb->st_mtim.tv_nsec,
		.rdev = (S_ISCHR(sb->st_mode) || S_ISBLK(sb->st_mode)) ? sb->st_rdev : 0,
		.size = S_ISREG(sb->st_mode) ? (uint64_t)sb->st_size : 0,
	};
}

static int grow(void **buf, size_t *cap, size_t need)
{
	void *p;

	if (need <= *cap)
		return 0;
	p = realloc(*buf, need);
	if (!p)
		return -ENOMEM;
	*buf = p;
	*cap = need;
	return 0;
}

static ssize_t x_list(int fd, const char *lpath, char *buf, size_t len)
{
	ssize_t n = fd >= 0 ? flistxattr(fd, buf, len) : llistxattr(lpath, buf, len);
	return n < 0 ? -errno : n;
}

static ssize_t x_get(int fd, const char *lpath, const char *name, void *buf, size_t len)
{
	ssize_t n = fd >= 0 ? fgetxattr(fd, name, buf, len) : lgetxattr(lpath, name, buf, len);
	return n < 0 ? -errno : n;
}

/* Copies every xattr of an inode, read through fd or, for inodes we must
 * not open (symlinks, devices, FIFOs), through lpath with the l* calls. */
static int copy_xattrs(struct walk *w, int fd, const char *lpath, uint32_t node)
{
	ssize_t n;
	int ret;

	for (;;) {
		n = x_list(fd, lpath, NULL, 0);
		if (n == -ENOTSUP || n == 0)
			return 0;
		if (n < 0)
			return fail_what(w, (int)n, "listing xattrs");
		ret = grow((void **)&w->xnames, &w->xnames_cap, (size_t)n);
		if (ret < 0)
			return fail_errno(w, ret);
		n = x_list(fd, lpath, w->xnames, w->xnames_cap);
		if (n != -ERANGE)
			break;
	}
	if (n < 0)
		return fail_what(w, (int)n, "listing xattrs");

	for (char *name = w->xnames; name < w->xnames + n; name += strlen(name) + 1) {
		ssize_t v;

		for (;;) {
			v = x_get(fd, lpath, name, NULL, 0);
			if (v < 0)
				break;
			ret = grow(&w->xval, &w->xval_cap, (size_t)v + 1);
			if (ret < 0)
				return fail_errno(w, ret);
			v = x_get(fd, lpath, name, w->xval, w->xval_cap);
			if (v != -ERANGE)
				break;
		}
		if (v == -ENODATA)
			continue; /* removed since the listing */
		if (v < 0)
			return cfs_pack_fail(w->p, (int)v, "%s: xattr %s: %s", w->path, name,
					     cfs_strerror((int)v));
		ret = cfs_builder_set_xattr(w->p->b, node, name, w->xval, (size_t)v);
		if (ret < 0)
			return cfs_pack_fail(w->p, ret, "%s: xattr %s: %s", w->path, name,
					     cfs_strerror(ret));
	}
	return 0;
}

/* Path for the l* xattr calls: through the parent's fd where /proc is
 * there (only the fd link is followed, never the entry), else the path. */
static const char *lpath_of(struct walk *w, int dirfd, const char *name, char *buf, size_t len)
{
	if (w->have_proc) {
		snprintf(buf, len, "/proc/self/fd/%d/%s", dirfd, name);
		return buf;
	}
	return w->path;
}

/* ---- file data ---- */

static int read_range(struct walk *w, int fd, uint64_t off, uint64_t end)
{
	while (off < end) {
		size_t want = (size_t)CFS_MIN((uint64_t)READ_SIZE, end - off);
		ssize_t n = pread(fd, w->buf, want, (off_t)off);
		int ret;

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return fail_what(w, -errno, "read");
		}
		if (n == 0)
			return fail_what(w, -EIO, "file shrank while being packed");
		ret = cfs_pack_data(w->p, w->path, off, w->buf, (size_t)n);
		if (ret < 0)
			return ret;
		off += (uint64_t)n;
	}
	return 0;
}

/* Feeds the data ranges of a regular file; holes are found with
 * SEEK_DATA/SEEK_HOLE and not read at all. */
static int read_file(struct walk *w, int fd, const struct stat *sb)
{
	uint64_t size = (uint64_t)sb->st_size, off = 0;

	/* Fully allocated files (nearly all) need no seeking. */
	if ((uint64_t)sb->st_blocks * 512 >= size)
		return read_range(w, fd, 0, size);
	while (off < size) {
		off_t data = lseek(fd, (off_t)off, SEEK_DATA), hole;

		if (data < 0) {
			if (errno == ENXIO)
				return 0; /* a hole up to the end */
			if (errno == EINVAL || errno == EOPNOTSUPP)
				return read_range(w, fd, off, size);
			return fail_what(w, -errno, "lseek");
		}
		if ((uint64_t)data >= size)
			return 0;
		hole = lseek(fd, data, SEEK_HOLE);
		if (hole < 0 || (uint64_t)hole > size)
			hole = (off_t)size;
		int ret = read_range(w, fd, (uint64_t)data, (uint64_t)hole);
		if (ret < 0)
			return ret;
		off = (uint64_t)hole;
	}
	return 0;
}

/* ---- the walk ---- */

static int cmp_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void free_names(char **names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

/* The names in a directory, sorted bytewise (strcmp compares unsigned). */
static int list_dir(struct walk *w, int dirfd, char ***out, size_t *count)
{
	char **names = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	DIR *d = cfs_opendir_at(dirfd, ".");
	int ret = 0;

	if (!d)
		return fail_errno(w, -errno);
	for (;;) {
		errno = 0;
		de = readdir(d);
		if (!de) {
			if (errno)
				ret = fail_what(w, -errno, "readdir");
			break;
		}
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (n == cap) {
			char **nn = realloc(names, (cap = cap ? 2 * cap : 64) * sizeof(*names));
			if (!nn) {
				ret = fail_errno(w, -ENOMEM);
				break;
			}
			names = nn;
		}
		names[n] = strdup(de->d_name);
		if (!names[n]) {
			ret = fail_errno(w, -ENOMEM);
			break;
		}
		n++;
	}
	closedir(d);
	if (ret < 0) {
		free_names(names, n);
		return ret;
	}
	if (n)
		qsort(names, n, sizeof(*names), cmp_name);
	*out = names;
	*count = n;
	return 0;
}

static int walk_dir(struct walk *w, int dirfd, uint32_t dir);

static int add_node(struct walk *w, uint32_t dir, const char *name, const struct stat *sb,
		    uint32_t *node)
{
	struct cfs_attr a;
	int ret;

	attr_of(sb, &a);
	ret = cfs_builder_add(w->p->b, dir, name, strlen(name), &a, node);
	return ret < 0 ? fail_errno(w, ret) : 0;
}

static int do_regular(struct walk *w, int dirfd, const char *name, uint32_t dir,
		      const struct stat *lsb, uint32_t *node)
{
	struct stat sb;
	int fd, ret;

	/* O_NONBLOCK: if the entry became a FIFO since fstatat, open must not
	 * hang; it changes nothing for reads of a regular file. */
	fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return fail_errno(w, -errno);
	if (fstat(fd, &sb) < 0) {
		ret = fail_errno(w, -errno);
		goto out;
	}
	if (!S_ISREG(sb.st_mode) || sb.st_ino != lsb->st_ino || sb.st_dev != lsb->st_dev) {
		ret = fail_what(w, -EAGAIN, "changed while being packed");
		goto out;
	}
	ret = add_node(w, dir, name, &sb, node);
	if (ret < 0)
		goto out;
	ret = copy_xattrs(w, fd, NULL, *node);
	if (ret < 0)
		goto out;
	ret = cfs_chunker_file_begin(w->p->ch, *node, (uint64_t)sb.st_size);
	if (ret < 0) {
		ret = fail_errno(w, ret);
		goto out;
	}
	ret = read_file(w, fd, &sb);
	if (ret < 0)
		goto out;
	ret = cfs_chunker_file_end(w->p->ch);
	if (ret < 0)
		ret = fail_errno(w, ret);
	w->p->files++;
out:
	close(fd);
	return ret;
}

static int do_dir(struct walk *w, int dirfd, const char *name, uint32_t dir)
{
	struct stat sb;
	uint32_t node;
	int fd, ret;

	fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return fail_errno(w, -errno);
	if (fstat(fd, &sb) < 0) {
		ret = fail_errno(w, -errno);
		goto out;
	}
	if (w->p->store_known && sb.st_dev == w->p->store_dev && sb.st_ino == w->p->store_ino) {
		cfs_warn("%s: skipped: this is the store being written", w->path);
		ret = 0;
		goto out;
	}
	ret = add_node(w, dir, name, &sb, &node);
	if (ret < 0)
		goto out;
	ret = copy_xattrs(w, fd, NULL, node);
	if (ret < 0)
		goto out;
	w->p->dirs++;
	ret = walk_dir(w, fd, node);
out:
	close(fd);
	return ret;
}

static int do_symlink(struct walk *w, int dirfd, const char *name, uint32_t dir,
		      const struct stat *sb, uint32_t *node)
{
	char target[CFS_SYMLINK_MAX + 2], lp[64 + NAME_MAX];
	ssize_t n;
	int ret;

	n = readlinkat(dirfd, name, target, sizeof(target));
	if (n < 0)
		return fail_what(w, -errno, "readlink");
	if ((size_t)n > CFS_SYMLINK_MAX)
		return fail_what(w, -ENAMETOOLONG, "symlink target");
	ret = add_node(w, dir, name, sb, node);
	if (ret < 0)
		return ret;
	ret = cfs_builder_set_symlink(w->p->b, *node, target, (size_t)n);
	if (ret < 0)
		return fail_what(w, ret, "symlink");
	return copy_xattrs(w, -1, lpath_of(w, dirfd, name, lp, sizeof(lp)), *node);
}

static int do_entry(struct walk *w, int dirfd, const char *name, uint32_t dir)
{
	struct link_slot *ls = NULL;
	char lp[64 + NAME_MAX];
	struct stat sb;
	uint32_t node;
	int ret;

	if (fstatat(dirfd, name, &sb, AT_SYMLINK_NOFOLLOW) < 0)
		return fail_errno(w, -errno);

	if (!S_ISDIR(sb.st_mode) && sb.st_nlink > 1)
		ls = link_find(w, sb.st_dev, sb.st_ino);
	if (ls) {
		ret = cfs_builder_link(w->p->b, dir, name, strlen(name), ls->node);
		return ret < 0 ? fail_what(w, ret, "hard link") : 0;
	}

	switch (sb.st_mode & S_IFMT) {
	case S_IFDIR:
		return do_dir(w, dirfd, name, dir);
	case S_IFREG:
		ret = do_regular(w, dirfd, name, dir, &sb, &node);
		break;
	case S_IFLNK:
		ret = do_symlink(w, dirfd, name, dir, &sb, &node);
		w->p->other++;
		break;
	case S_IFCHR:
	case S_IFBLK:
	case S_IFIFO:
	case S_IFSOCK:
		/* Never opened: opening a device or a FIFO has side effects. */
		ret = add_node(w, dir, name, &sb, &node);
		if (ret == 0)
			ret = copy_xattrs(w, -1, lpath_of(w, dirfd, name, lp, sizeof(lp)), node);
		w->p->other++;
		break;
	default:
		cfs_warn("%s: skipped: unknown file type 0%o", w->path, sb.st_mode & S_IFMT);
		return 0;
	}
	if (ret < 0)
		return ret;
	if (sb.st_nlink > 1) {
		ret = link_add(w, sb.st_dev, sb.st_ino, node);
		if (ret < 0)
			return fail_errno(w, ret);
	}
	return 0;
}

static int walk_dir(struct walk *w, int dirfd, uint32_t dir)
{
	char **names = NULL;
	size_t n = 0, old;
	int ret;

	ret = list_dir(w, dirfd, &names, &n);
	if (ret < 0)
		return ret;
	for (size_t i = 0; i < n; i++) {
		uint32_t rank;

		ret = path_push(w, names[i], &old);
		if (ret < 0)
			break;
		/* A file of the profile is in already (prefeed). */
		rank = cfs_pack_prof_rank(w->p->prof, w->path + w->root_len +
					  (w->path[w->root_len] == '/'));
		if (rank != UINT32_MAX && w->p->prof->fed[rank]) {
			path_pop(w, old);
			continue;
		}
		ret = do_entry(w, dirfd, names[i], dir);
		path_pop(w, old);
		if (ret < 0)
			break;
	}
	free_names(names, n);
	return ret;
}

/* Feeds the regular file at rel (normalised, inside the source) ahead of
 * the walk, adding its directories on the way with their own attributes;
 * the walk meets them again and keeps what they hold.  A path that is not
 * there, or not a regular file, is skipped: the profile may be older than
 * the tree.  Like the walk, it never follows a symlink. */
static int prefeed_one(struct walk *w, int rootfd, const char *rel, bool *fed)
{
	char *buf = strdup(rel), *comp, *next;
	size_t old = w->path_len;
	uint32_t dir = CFS_NODE_ROOT, node;
	int dirfd = rootfd, fd, ret = 0;
	struct stat sb;

	if (!buf)
		return cfs_pack_fail(w->p, -ENOMEM, "%s: %s", rel, cfs_strerror(-ENOMEM));
	for (comp = buf; (next = strchr(comp, '/')); comp = next + 1) {
		size_t o;

		*next = '\0';
		fd = openat(dirfd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0 || fstat(fd, &sb) < 0 ||
		    (w->p->store_known && sb.st_dev == w->p->store_dev &&
		     sb.st_ino == w->p->store_ino)) {
			if (fd >= 0)
				close(fd);
			goto out; /* skipped */
		}
		if (dirfd != rootfd)
			close(dirfd);
		dirfd = fd;
		ret = path_push(w, comp, &o);
		if (ret < 0)
			goto out;
		ret = add_node(w, dir, comp, &sb, &node);
		if (ret < 0)
			goto out;
		ret = copy_xattrs(w, dirfd, NULL, node);
		if (ret < 0)
			goto out;
		dir = node;
	}
	if (fstatat(dirfd, comp, &sb, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(sb.st_mode))
		goto out;
	ret = path_push(w, comp, &(size_t){ 0 });
	if (ret < 0)
		goto out;
	ret = do_entry(w, dirfd, comp, dir);
	if (ret == 0)
		*fed = true;
out:
	path_pop(w, old);
	if (dirfd != rootfd)
		close(dirfd);
	free(buf);
	return ret;
}

/* The caller's fd goes unused: the walk opens root with O_DIRECTORY. */
static int pack_dir(struct cfs_pack_ctx *p, const char *root, int srcfd)
{
	struct walk w = { .p = p };
	struct cfs_attr a;
	struct rlimit rl;
	struct stat sb;
	size_t old;
	int fd = -1, ret;

	(void)srcfd;
	/* One fd per directory level is held open during the walk. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	w.have_proc = access("/proc/self/fd", X_OK) == 0;
	w.buf = malloc(READ_SIZE);
	if (!w.buf)
		return cfs_pack_fail(p, -ENOMEM, "%s: %s", root, cfs_strerror(-ENOMEM));
	w.path_len = 0;
	ret = path_push(&w, root, &old);
	if (ret < 0)
		goto out;

	fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		ret = fail_errno(&w, -errno);
		goto out;
	}
	if (fstat(fd, &sb) < 0) {
		ret = fail_errno(&w, -errno);
		goto out;
	}
	if (p->store_known && sb.st_dev == p->store_dev && sb.st_ino == p->store_ino) {
		ret = fail_what(&w, -EINVAL, "refusing to pack the store into itself");
		goto out;
	}
	attr_of(&sb, &a);
	ret = cfs_builder_set_attr(p->b, CFS_NODE_ROOT, &a);
	if (ret < 0) {
		ret = fail_errno(&w, ret);
		goto out;
	}
	ret = copy_xattrs(&w, fd, NULL, CFS_NODE_ROOT);
	if (ret < 0)
		goto out;
	p->dirs++;
	w.root_len = w.path_len;
	for (size_t i = 0; p->prof && i < p->prof->n; i++) {
		ret = prefeed_one(&w, fd, p->prof->paths[i], &p->prof->fed[i]);
		if (ret < 0)
			goto out;
	}
	ret = walk_dir(&w, fd, CFS_NODE_ROOT);
out:
	if (fd >= 0)
		close(fd);
	free(w.links);
	free(w.xnames);
	free(w.xval);
	free(w.path);
	free(w.buf);
	return ret;
}

const struct cfs_pack_source cfs_pack_source_dir = {
	.name = "directory",
	.pack = pack_dir,
};
