/* SPDX-License-Identifier: MIT */
/*
 * Local directory store backend.  Every access is relative to an
 * O_DIRECTORY descriptor of the root, so a renamed or replaced path does
 * not redirect an open store.
 *
 * A store may be hostile (docs/FORMAT.md), and its reader is often root: a
 * key is opened only once it is known to be a regular file, so a planted
 * FIFO cannot hang a reader and a symlink to a device cannot make root
 * open it.  Symlinks to regular files are followed, as an HTTP server
 * serving the same tree would: what an object holds is verified against its
 * name, what a tag holds must parse as a reference, and neither is ever
 * echoed.  Writes stay beneath the root: the directory a key goes into is
 * opened with RESOLVE_BENEATH, so a symlink planted in the store that
 * leads out of it (tags/x -> /etc) cannot make a writer, often root,
 * create or replace files elsewhere.  Symlinks within the store still work.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <linux/openat2.h>

#include "store_i.h"
#include "util.h"

#define MARKER CFS_STORE_MARKER
#define MARKER_TEXT CFS_STORE_MARKER_TEXT
#define MARKER_MAX CFS_STORE_MARKER_MAX

struct dir_store {
	int rootfd;
	bool have_proc; /* /proc/self/fd, to reopen an O_PATH descriptor */
};

static int rootfd(struct cfs_store *st)
{
	return ((struct dir_store *)st->priv)->rootfd;
}

/* Reads key like cfs_read_file_at(), but opens it for reading only when
 * it is a regular file (-EINVAL otherwise): the O_PATH descriptor is looked
 * at first, then reopened through /proc, which names that very file, so a
 * swap in between changes nothing.  Without /proc the check and the open
 * are two lookups, and a swap in between is not caught. */
static int read_key(const struct dir_store *ds, const char *key, size_t max, void **buf,
		    size_t *len)
{
	char proc[32];
	struct stat sb;
	int fd, ret;

	fd = openat(ds->rootfd, key, O_PATH | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &sb) < 0) {
		ret = -errno;
		goto out_close;
	}
	if (!S_ISREG(sb.st_mode)) {
		ret = -EINVAL;
		goto out_close;
	}
	if (ds->have_proc) {
		snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
		ret = cfs_read_file_at(AT_FDCWD, proc, max, buf, len);
	} else {
		ret = cfs_read_file_at(ds->rootfd, key, max, buf, len);
	}
out_close:
	close(fd);
	return ret;
}

/* Creates the directories above key (mkdir -p of its dirname). */
/* Opens directory dir (relative to the root; "" is the root) for *at()
 * calls, never leaving the tree under the root whatever symlinks it holds.
 * Without openat2 (Linux < 5.6) a plain lookup. */
static int open_dir_beneath(int rootfd, const char *dir)
{
	struct open_how how = { .flags = O_PATH | O_DIRECTORY | O_CLOEXEC,
				.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS };
	int fd;

	if (!*dir)
		dir = ".";
	fd = (int)syscall(SYS_openat2, rootfd, dir, &how, sizeof(how));
	if (fd < 0 && errno == ENOSYS)
		fd = openat(rootfd, dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

/* Creates the directories above key (mkdir -p of its dirname), each in
 * its parent opened beneath the root. */
static int mkdir_parents(int rootfd, const char *key)
{
	char path[PATH_MAX];
	size_t len = strlen(key);

	if (len >= sizeof(path))
		return -ENAMETOOLONG;
	memcpy(path, key, len + 1);
	for (char *p = strchr(path, '/'); p; p = strchr(p + 1, '/')) {
		char *name;
		int pfd, ret = 0;

		*p = '\0';
		name = strrchr(path, '/');
		if (name)
			*name = '\0';
		pfd = open_dir_beneath(rootfd, name ? path : "");
		if (name)
			*name = '/';
		if (pfd < 0)
			return pfd;
		if (mkdirat(pfd, name ? name + 1 : path, 0755) < 0 && errno != EEXIST)
			ret = -errno;
		close(pfd);
		if (ret < 0)
			return ret;
		*p = '/';
	}
	return 0;
}

static int marker_check(const struct dir_store *ds)
{
	void *buf;
	size_t len;
	int ret;

	ret = read_key(ds, MARKER, MARKER_MAX, &buf, &len);
	if (ret == -EFBIG || ret == -EINVAL)
		return -EUCLEAN;
	if (ret < 0)
		return ret;
	ret = cfs_store_marker_parse(buf, len);
	free(buf);
	return ret;
}

/* A directory may become a store when it holds nothing but what an
 * interrupted create leaves: turning some unrelated non-empty directory
 * into a store would be a surprise. */
static int dir_adoptable(int fd)
{
	struct dirent *de;
	DIR *d = cfs_opendir_at(fd, ".");
	int ret = 0;

	if (!d)
		return -errno;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") ||
		    !strcmp(de->d_name, "objects") || !strcmp(de->d_name, "tags") ||
		    !strncmp(de->d_name, MARKER ".tmp.", strlen(MARKER ".tmp.")))
			continue;
		ret = -EUCLEAN;
		break;
	}
	closedir(d);
	return ret;
}

static int dir_put(struct cfs_store *st, const char *key, const void *buf, size_t len,
		   bool replace);

static int dir_create(struct cfs_store *st, int fd)
{
	int ret;

	ret = dir_adoptable(fd);
	if (ret < 0)
		return ret;
	if (mkdirat(fd, "objects", 0755) < 0 && errno != EEXIST)
		return -errno;
	if (mkdirat(fd, "tags", 0755) < 0 && errno != EEXIST)
		return -errno;
	/* The marker last: a store that has one is complete. */
	ret = dir_put(st, MARKER, MARKER_TEXT, strlen(MARKER_TEXT), false);
	return ret < 0 ? ret : 0;
}

static int dir_open(struct cfs_store *st, const char *location, unsigned flags)
{
	struct dir_store *ds;
	int ret;

	ds = calloc(1, sizeof(*ds));
	if (!ds)
		return -ENOMEM;
	if ((flags & CFS_STORE_CREATE) && mkdir(location, 0755) < 0 && errno != EEXIST) {
		ret = -errno;
		goto out_free;
	}
	ds->rootfd = open(location, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (ds->rootfd < 0) {
		ret = -errno;
		goto out_free;
	}
	ds->have_proc = access("/proc/self/fd", X_OK) == 0;
	st->priv = ds;

	ret = marker_check(ds);
	if (ret == -ENOENT)
		ret = (flags & CFS_STORE_CREATE) ? dir_create(st, ds->rootfd) : -EUCLEAN;
	if (ret < 0) {
		cfs_debug("%s: not a cfs store: %s", location, cfs_strerror(ret));
		goto out_close;
	}
	return 0;

out_close:
	st->priv = NULL;
	close(ds->rootfd);
out_free:
	free(ds);
	return ret;
}

static void dir_close(struct cfs_store *st)
{
	struct dir_store *ds = st->priv;

	if (!ds)
		return;
	close(ds->rootfd);
	free(ds);
	st->priv = NULL;
}

static int dir_get(struct cfs_store *st, const char *key, size_t max, void **buf, size_t *len)
{
	struct stat sb;
	int ret;

	ret = read_key(st->priv, key, max, buf, len);
	/* A component that is a file (tag "a" asked as "a/b") means absent. */
	if (ret == -ENOTDIR)
		return -ENOENT;
	if (ret == -EINVAL) {
		/* Not a regular file: a directory is just not this key (tag
		 * "a" when only "a/b" exists); anything else is damage. */
		if (fstatat(rootfd(st), key, &sb, 0) == 0 && S_ISDIR(sb.st_mode))
			return -ENOENT;
		return -EUCLEAN;
	}
	return ret;
}

static int dir_has(struct cfs_store *st, const char *key, uint64_t *size)
{
	struct stat sb;

	if (fstatat(rootfd(st), key, &sb, 0) < 0)
		return (errno == ENOENT || errno == ENOTDIR) ? 0 : -errno;
	if (!S_ISREG(sb.st_mode))
		return 0;
	if (size)
		*size = (uint64_t)sb.st_size;
	return 1;
}

static void tmp_name(const char *key, char *out, size_t size)
{
	uint64_t r;

	/* Uniqueness only matters among concurrent writers, and O_EXCL
	 * catches the rest. */
	if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != sizeof(r))
		r = cfs_now_ns() ^ ((uint64_t)getpid() << 32);
	snprintf(out, size, "%s.tmp.%016" PRIx64, key, r);
}

/* Moves tmp to key without ever replacing an existing key: 1 when moved,
 * 0 when key was there already (tmp is left for the caller), or -errno. */
static int link_noreplace(int fd, const char *tmp, const char *key)
{
	if (renameat2(fd, tmp, fd, key, RENAME_NOREPLACE) == 0)
		return 1;
	if (errno == EEXIST)
		return 0;
	if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP)
		return -errno;

	/* No RENAME_NOREPLACE here (some network and FUSE filesystems). */
	if (linkat(fd, tmp, fd, key, 0) == 0) {
		unlinkat(fd, tmp, 0);
		return 1;
	}
	if (errno == EEXIST)
		return 0;
	if (errno != EPERM && errno != ENOTSUP && errno != EOPNOTSUPP)
		return -errno;

	/* Nor hard links.  Content addressing makes the race harmless: a
	 * concurrent writer of the same key wrote the same bytes. */
	if (faccessat(fd, key, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
		return 0;
	return renameat(fd, tmp, fd, key) < 0 ? -errno : 1;
}

static int dir_put(struct cfs_store *st, const char *key, const void *buf, size_t len,
		   bool replace)
{
	char tmp[PATH_MAX], dir[PATH_MAX];
	const char *slash = strrchr(key, '/'), *base = slash ? slash + 1 : key;
	int fd, dfd = -1, ret;

	if (!replace) {
		/* The common case of a re-pack: skip the write entirely. */
		ret = dir_has(st, key, NULL);
		if (ret)
			return ret < 0 ? ret : 0;
	}
	if (strlen(key) + 32 > sizeof(tmp))
		return -ENAMETOOLONG;
	snprintf(dir, sizeof(dir), "%.*s", slash ? (int)(slash - key) : 0, key);

	for (int tries = 0;; tries++) {
		if (dfd < 0) {
			dfd = open_dir_beneath(rootfd(st), dir);
			if (dfd == -ENOENT && tries == 0) {
				/* The fan-out or tag directory is made on first use. */
				ret = mkdir_parents(rootfd(st), key);
				if (ret < 0)
					return ret;
				continue;
			}
			if (dfd < 0)
				return dfd;
		}
		tmp_name(base, tmp, sizeof(tmp));
		fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
		if (fd >= 0)
			break;
		ret = -errno;
		if (ret == -EEXIST && tries < 4)
			continue;
		close(dfd);
		return ret;
	}

	ret = cfs_write_full(fd, buf, len);
	if (close(fd) < 0 && ret == 0)
		ret = -errno;
	if (ret < 0)
		goto out_unlink;

	if (replace) {
		if (renameat(dfd, tmp, dfd, base) < 0) {
			ret = -errno;
			goto out_unlink;
		}
		close(dfd);
		return 1;
	}
	ret = link_noreplace(dfd, tmp, base);
	if (ret < 1)
		goto out_unlink;
	close(dfd);
	return 1;

out_unlink:
	unlinkat(dfd, tmp, 0);
	close(dfd);
	return ret;
}

static int dir_sync(struct cfs_store *st)
{
	return syncfs(rootfd(st)) < 0 ? -errno : 0;
}

const struct cfs_store_ops cfs_store_dir_ops = {
	.name = "dir",
	.open = dir_open,
	.close = dir_close,
	.get = dir_get,
	.has = dir_has,
	.put = dir_put,
	.sync = dir_sync,
};
