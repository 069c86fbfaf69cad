/* cfs-mktree: build a deterministic tree holding every kind of entry a
 * container rootfs has, for the pack/mount round-trip tests.
 *
 * Usage: cfs-mktree DIR [--big-mb N] [--small-count N]
 *
 * DIR must not exist or be empty.  Needs root (devices, trusted.* and
 * security.* xattrs, chown).  Exits 0 on success, 1 with a one-line
 * message on the first failure.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/xattr.h>
#include <unistd.h>

#define CFS_MKTREE_SEED 0x6366732d6d6b7472ULL /* "cfs-mktr" */
#define CFS_MKTREE_UID 12345
#define CFS_MKTREE_GID 54321
#define CFS_MKTREE_DEPTH 40
#define CFS_MKTREE_IOBUF (1u << 20)

struct cfs_mktree {
	int root;          /* fd of DIR */
	uint64_t rng;      /* splitmix64 state */
	unsigned big_mb;
	unsigned small_count;
	char *buf;         /* CFS_MKTREE_IOBUF bytes */
	const char *what;  /* what failed, for the message */
};

static uint64_t cfs_rng_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static unsigned cfs_rng_range(uint64_t *s, unsigned lo, unsigned hi)
{
	return lo + (unsigned)(cfs_rng_next(s) % (hi - lo + 1));
}

static void cfs_fill_random(uint64_t *s, char *buf, size_t len)
{
	size_t i = 0;

	for (; i + 8 <= len; i += 8) {
		uint64_t v = cfs_rng_next(s);
		memcpy(buf + i, &v, 8);
	}
	if (i < len) {
		uint64_t v = cfs_rng_next(s);
		memcpy(buf + i, &v, len - i);
	}
}

/* Word salad: compresses well, unlike cfs_fill_random(). */
static void cfs_fill_text(uint64_t *s, char *buf, size_t len)
{
	static const char *const words[] = {
		"container", "layer", "chunk", "digest", "lazy", "fetch",
		"the", "of", "and", "a", "rootfs", "image", "store", "index",
		"inode", "mount", "kernel", "page", "cache", "zstd", "sha256",
	};
	size_t i = 0;

	while (i < len) {
		const char *w = words[cfs_rng_next(s) % (sizeof(words) / sizeof(words[0]))];
		size_t n = strlen(w);

		for (size_t k = 0; k < n && i < len; k++)
			buf[i++] = w[k];
		if (i < len)
			buf[i++] = (cfs_rng_next(s) % 12 == 0) ? '\n' : ' ';
	}
}

static int cfs_fail(struct cfs_mktree *t, const char *what, int err)
{
	t->what = what;
	return -err;
}

static int cfs_write_all(int fd, const char *buf, size_t len, off_t off)
{
	while (len > 0) {
		ssize_t n = pwrite(fd, buf, len, off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		buf += n;
		len -= (size_t)n;
		off += n;
	}
	return 0;
}

enum cfs_fill { CFS_FILL_RANDOM, CFS_FILL_TEXT };

/* Create dirfd/name with len bytes of content and mode. */
static int cfs_mkfile(struct cfs_mktree *t, int dirfd, const char *name,
		      uint64_t len, enum cfs_fill fill, mode_t mode)
{
	uint64_t off = 0;
	int fd, ret = 0;

	fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return cfs_fail(t, name, errno);
	while (off < len) {
		size_t n = len - off > CFS_MKTREE_IOBUF ? CFS_MKTREE_IOBUF : (size_t)(len - off);

		if (fill == CFS_FILL_RANDOM)
			cfs_fill_random(&t->rng, t->buf, n);
		else
			cfs_fill_text(&t->rng, t->buf, n);
		ret = cfs_write_all(fd, t->buf, n, (off_t)off);
		if (ret < 0) {
			cfs_fail(t, name, -ret);
			goto out_close;
		}
		off += n;
	}
	/* openat() applies the umask; fchmod() does not. */
	if (fchmod(fd, mode) < 0)
		ret = cfs_fail(t, name, errno);
out_close:
	if (close(fd) < 0 && ret == 0)
		ret = cfs_fail(t, name, errno);
	return ret;
}

static int cfs_mkdir(struct cfs_mktree *t, int dirfd, const char *name, mode_t mode)
{
	if (mkdirat(dirfd, name, mode) < 0)
		return cfs_fail(t, name, errno);
	/* mkdirat() applies the umask and drops special bits. */
	if (fchmodat(dirfd, name, mode, 0) < 0)
		return cfs_fail(t, name, errno);
	return 0;
}

static int cfs_opendir(struct cfs_mktree *t, int dirfd, const char *name)
{
	int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

	if (fd < 0)
		return cfs_fail(t, name, errno);
	return fd;
}

static int cfs_symlink(struct cfs_mktree *t, const char *target, int dirfd, const char *name)
{
	if (symlinkat(target, dirfd, name) < 0)
		return cfs_fail(t, name, errno);
	return 0;
}

static int cfs_setxattr(struct cfs_mktree *t, int dirfd, const char *name,
			const char *key, const void *val, size_t len)
{
	char path[64 + NAME_MAX];

	/* No fsetxattr on symlinks or devices: go through /proc so the
	 * walk stays relative to dirfd and the last component is not
	 * followed. */
	snprintf(path, sizeof(path), "/proc/self/fd/%d/%s", dirfd, name);
	if (lsetxattr(path, key, val, len, 0) < 0)
		return cfs_fail(t, key, errno);
	return 0;
}

/* chown() drops setuid/setgid and security.capability, so callers chown
 * first, then chmod, then set xattrs. */
static int cfs_chown(struct cfs_mktree *t, int dirfd, const char *name)
{
	if (fchownat(dirfd, name, CFS_MKTREE_UID, CFS_MKTREE_GID, AT_SYMLINK_NOFOLLOW) < 0)
		return cfs_fail(t, name, errno);
	return 0;
}

static int cfs_chmod(struct cfs_mktree *t, int dirfd, const char *name, mode_t mode)
{
	if (fchmodat(dirfd, name, mode, 0) < 0)
		return cfs_fail(t, name, errno);
	return 0;
}

static int cfs_make_files(struct cfs_mktree *t)
{
	/* Capability v2 for cap_net_bind_service+ep (CAP_NET_BIND_SERVICE = 10):
	 * magic_etc = VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE, then
	 * {permitted, inheritable} for the low and high 32 capabilities. */
	static const unsigned char cap[20] = {
		0x01, 0x00, 0x00, 0x02,
		0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
		0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	};
	static const char binval[] = { 'a', 0, 'b', 0, 0, (char)0xff, '\n', 0 };
	int d, ret;

	ret = cfs_mkdir(t, t->root, "files", 0755);
	if (ret < 0)
		return ret;
	d = cfs_opendir(t, t->root, "files");
	if (d < 0)
		return d;
	if ((ret = cfs_mkfile(t, d, "empty", 0, CFS_FILL_TEXT, 0644)) < 0 ||
	    (ret = cfs_mkfile(t, d, "small.txt", 1234, CFS_FILL_TEXT, 0644)) < 0 ||
	    (ret = cfs_mkfile(t, d, "one-byte", 1, CFS_FILL_RANDOM, 0644)) < 0 ||
	    (ret = cfs_mkfile(t, d, "medium.bin", 300 * 1024 + 123, CFS_FILL_RANDOM, 0644)) < 0 ||
	    (ret = cfs_mkfile(t, d, "exact-4k.bin", 4096, CFS_FILL_RANDOM, 0644)) < 0 ||
	    (ret = cfs_mkfile(t, d, "exact-1m.bin", 1 << 20, CFS_FILL_RANDOM, 0644)) < 0 ||
	    (ret = cfs_mkfile(t, d, "big.bin", (uint64_t)t->big_mb << 20, CFS_FILL_RANDOM, 0644)) < 0 ||
	    (ret = cfs_mkfile(t, d, "text-large.txt", 2 << 20, CFS_FILL_TEXT, 0644)) < 0 ||
	    (ret = cfs_mkfile(t, d, "text-medium.txt", 200 * 1024 + 7, CFS_FILL_TEXT, 0644)) < 0 ||
	    (ret = cfs_mkfile(t, d, "text-small.txt", 5000, CFS_FILL_TEXT, 0644)) < 0)
		goto out;

	/* Sparse: 64 KiB of data, a 1 MiB hole, 64 KiB of data. */
	{
		int fd = openat(d, "sparse.bin", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);

		if (fd < 0) {
			ret = cfs_fail(t, "sparse.bin", errno);
			goto out;
		}
		cfs_fill_random(&t->rng, t->buf, 128 * 1024);
		ret = cfs_write_all(fd, t->buf, 64 * 1024, 0);
		if (ret == 0)
			ret = cfs_write_all(fd, t->buf + 64 * 1024, 64 * 1024, (64 + 1024) * 1024);
		if (ret < 0)
			cfs_fail(t, "sparse.bin", -ret);
		if (close(fd) < 0 && ret == 0)
			ret = cfs_fail(t, "sparse.bin", errno);
		if (ret < 0)
			goto out;
	}
	/* Sparse at the end: the size comes from ftruncate, not from data. */
	{
		int fd = openat(d, "sparse-tail.bin", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);

		if (fd < 0) {
			ret = cfs_fail(t, "sparse-tail.bin", errno);
			goto out;
		}
		cfs_fill_text(&t->rng, t->buf, 4096);
		ret = cfs_write_all(fd, t->buf, 4096, 0);
		if (ret == 0 && ftruncate(fd, 2 << 20) < 0)
			ret = -errno;
		if (ret < 0)
			cfs_fail(t, "sparse-tail.bin", -ret);
		if (close(fd) < 0 && ret == 0)
			ret = cfs_fail(t, "sparse-tail.bin", errno);
		if (ret < 0)
			goto out;
	}

	/* Owners and mode bits, in the order that keeps them (see cfs_chown). */
	if ((ret = cfs_mkfile(t, d, "setuid", 3000, CFS_FILL_RANDOM, 0755)) < 0 ||
	    (ret = cfs_chown(t, d, "setuid")) < 0 ||
	    (ret = cfs_chmod(t, d, "setuid", 04755)) < 0 ||
	    (ret = cfs_mkfile(t, d, "setgid", 3001, CFS_FILL_RANDOM, 0755)) < 0 ||
	    (ret = cfs_chmod(t, d, "setgid", 02755)) < 0 ||
	    (ret = cfs_mkfile(t, d, "all-special", 10, CFS_FILL_TEXT, 07777)) < 0 ||
	    (ret = cfs_mkfile(t, d, "mode-0000", 100, CFS_FILL_TEXT, 0)) < 0 ||
	    (ret = cfs_mkfile(t, d, "mode-0600", 100, CFS_FILL_TEXT, 0600)) < 0 ||
	    (ret = cfs_mkfile(t, d, "mode-0444", 100, CFS_FILL_TEXT, 0444)) < 0 ||
	    (ret = cfs_mkfile(t, d, "owned", 100, CFS_FILL_TEXT, 0640)) < 0 ||
	    (ret = cfs_chown(t, d, "owned")) < 0 ||
	    (ret = cfs_mkfile(t, d, "capability", 4000, CFS_FILL_RANDOM, 0755)) < 0 ||
	    (ret = cfs_setxattr(t, d, "capability", "security.capability", cap, sizeof(cap))) < 0)
		goto out;

	/* xattrs: binary values with NULs, an empty value, several namespaces. */
	if ((ret = cfs_mkfile(t, d, "xattrs", 500, CFS_FILL_TEXT, 0644)) < 0 ||
	    (ret = cfs_setxattr(t, d, "xattrs", "user.binary", binval, sizeof(binval))) < 0 ||
	    (ret = cfs_setxattr(t, d, "xattrs", "user.empty", "", 0)) < 0 ||
	    (ret = cfs_setxattr(t, d, "xattrs", "user.text", "hello world", 11)) < 0 ||
	    (ret = cfs_setxattr(t, d, "xattrs", "trusted.overlay.opaque", "y", 1)) < 0 ||
	    (ret = cfs_setxattr(t, d, "xattrs", "security.capability", cap, sizeof(cap))) < 0)
		goto out;
	cfs_fill_random(&t->rng, t->buf, 3000);
	if ((ret = cfs_setxattr(t, d, "xattrs", "user.large", t->buf, 3000)) < 0 ||
	    (ret = cfs_setxattr(t, d, "setuid", "user.mime_type", "application/x-executable", 24)) < 0)
		goto out;
	/* An xattr on the directory itself. */
	ret = cfs_setxattr(t, t->root, "files", "user.dir", "files\0dir", 9);
out:
	close(d);
	return ret;
}

static int cfs_make_links(struct cfs_mktree *t)
{
	int d, o, ret;

	if ((ret = cfs_mkdir(t, t->root, "links", 0755)) < 0)
		return ret;
	d = cfs_opendir(t, t->root, "links");
	if (d < 0)
		return d;
	if ((ret = cfs_symlink(t, "../files/small.txt", d, "relative")) < 0 ||
	    (ret = cfs_symlink(t, "/etc/hostname", d, "absolute")) < 0 ||
	    (ret = cfs_symlink(t, "does/not/exist", d, "dangling")) < 0 ||
	    (ret = cfs_symlink(t, "../../etc/passwd", d, "outside")) < 0 ||
	    (ret = cfs_symlink(t, "../files", d, "to-dir")) < 0 ||
	    (ret = cfs_symlink(t, ".", d, "self")) < 0 ||
	    (ret = cfs_symlink(t, "loop-b", d, "loop-a")) < 0 ||
	    (ret = cfs_symlink(t, "loop-a", d, "loop-b")) < 0 ||
	    (ret = cfs_symlink(t, "owned-link-target", d, "owned-link")) < 0 ||
	    (ret = cfs_chown(t, d, "owned-link")) < 0 ||
	    (ret = cfs_symlink(t, "relative", d, "xattr-link")) < 0 ||
	    /* user.* is not allowed on symlinks; trusted.* is. */
	    (ret = cfs_setxattr(t, d, "xattr-link", "trusted.cfs.test", "\0link\0", 6)) < 0)
		goto out_d;

	/* A symlink whose target is as long as a path component may be. */
	memset(t->buf, 'x', 1000);
	memcpy(t->buf + 1000, "/tail", 6);
	t->buf[255] = '/';
	t->buf[511] = '/';
	t->buf[767] = '/';
	if ((ret = cfs_symlink(t, t->buf, d, "long-target")) < 0)
		goto out_d;

	/* Hard links: one file with three names in three directories. */
	if ((ret = cfs_mkdir(t, t->root, "other", 0755)) < 0)
		goto out_d;
	o = cfs_opendir(t, t->root, "other");
	if (o < 0) {
		ret = o;
		goto out_d;
	}
	if ((ret = cfs_mkfile(t, d, "hardlink-1", 20000, CFS_FILL_RANDOM, 0644)) < 0 ||
	    (ret = cfs_setxattr(t, d, "hardlink-1", "user.shared", "one inode", 9)) < 0)
		goto out_o;
	if (linkat(d, "hardlink-1", o, "hardlink-2", 0) < 0) {
		ret = cfs_fail(t, "hardlink-2", errno);
		goto out_o;
	}
	if (linkat(d, "hardlink-1", t->root, "hardlink-3", 0) < 0) {
		ret = cfs_fail(t, "hardlink-3", errno);
		goto out_o;
	}
	/* Two names in one directory, and an empty file hard-linked twice. */
	if ((ret = cfs_mkfile(t, o, "pair-a", 77, CFS_FILL_TEXT, 0600)) < 0)
		goto out_o;
	if (linkat(o, "pair-a", o, "pair-b", 0) < 0) {
		ret = cfs_fail(t, "pair-b", errno);
		goto out_o;
	}
	if ((ret = cfs_mkfile(t, o, "empty-a", 0, CFS_FILL_TEXT, 0644)) < 0)
		goto out_o;
	if (linkat(o, "empty-a", d, "empty-b", 0) < 0) {
		ret = cfs_fail(t, "empty-b", errno);
		goto out_o;
	}
	/* A hard-linked symlink. */
	if ((ret = cfs_symlink(t, "../files/empty", o, "symlink-a")) < 0)
		goto out_o;
	if (linkat(o, "symlink-a", o, "symlink-b", 0) < 0)
		ret = cfs_fail(t, "symlink-b", errno);
out_o:
	close(o);
out_d:
	close(d);
	return ret;
}

static int cfs_make_specials(struct cfs_mktree *t)
{
	int d, ret;

	if ((ret = cfs_mkdir(t, t->root, "dev", 0755)) < 0)
		return ret;
	d = cfs_opendir(t, t->root, "dev");
	if (d < 0)
		return d;
	if (mknodat(d, "null", S_IFCHR | 0666, makedev(1, 3)) < 0) {
		ret = cfs_fail(t, "dev/null", errno);
		goto out;
	}
	if (mknodat(d, "loop0", S_IFBLK | 0660, makedev(7, 0)) < 0) {
		ret = cfs_fail(t, "dev/loop0", errno);
		goto out;
	}
	/* A device number that needs the wide encoding (major > 255). */
	if (mknodat(d, "wide", S_IFCHR | 0600, makedev(300, 70000)) < 0) {
		ret = cfs_fail(t, "dev/wide", errno);
		goto out;
	}
	if (mkfifoat(d, "fifo", 0644) < 0) {
		ret = cfs_fail(t, "dev/fifo", errno);
		goto out;
	}
	if ((ret = cfs_chmod(t, d, "null", 0666)) < 0 ||
	    (ret = cfs_chmod(t, d, "fifo", 0620)) < 0 ||
	    (ret = cfs_chown(t, d, "loop0")) < 0 ||
	    (ret = cfs_setxattr(t, d, "fifo", "trusted.on-fifo", "x", 1)) < 0 ||
	    (ret = cfs_setxattr(t, d, "null", "trusted.on-dev", "y", 1)) < 0)
		goto out;

	/* Directory modes: sticky, setgid, owned, closed. */
	if ((ret = cfs_mkdir(t, t->root, "sticky", 01777)) < 0 ||
	    (ret = cfs_mkfile(t, t->root, "sticky/inside", 0, CFS_FILL_TEXT, 0644)) < 0)
		goto out;
	if ((ret = cfs_mkdir(t, t->root, "setgid-dir", 0755)) < 0 ||
	    (ret = cfs_chown(t, t->root, "setgid-dir")) < 0 ||
	    (ret = cfs_chmod(t, t->root, "setgid-dir", 02775)) < 0 ||
	    (ret = cfs_mkdir(t, t->root, "closed", 0700)) < 0 ||
	    (ret = cfs_mkdir(t, t->root, "empty-dir", 0755)) < 0 ||
	    (ret = cfs_setxattr(t, t->root, "empty-dir", "user.empty", "", 0)) < 0 ||
	    (ret = cfs_setxattr(t, t->root, "empty-dir", "trusted.overlay.opaque", "y", 1)) < 0)
		goto out;
	{
		int c = cfs_opendir(t, t->root, "closed");

		if (c < 0) {
			ret = c;
			goto out;
		}
		ret = cfs_mkfile(t, c, "secret", 64, CFS_FILL_RANDOM, 0400);
		close(c);
		if (ret < 0)
			goto out;
	}
	/* Last, so making "secret" did not need the write bit. */
	ret = cfs_chmod(t, t->root, "closed", 0500);
out:
	close(d);
	return ret;
}

static int cfs_make_odd_names(struct cfs_mktree *t)
{
	char name[NAME_MAX + 1];
	int d, ret;

	if ((ret = cfs_mkdir(t, t->root, "odd", 0755)) < 0)
		return ret;
	d = cfs_opendir(t, t->root, "odd");
	if (d < 0)
		return d;
	memset(name, 'n', NAME_MAX);
	name[NAME_MAX] = '\0';
	if ((ret = cfs_mkfile(t, d, name, 255, CFS_FILL_TEXT, 0644)) < 0 ||
	    (ret = cfs_mkfile(t, d, "new\nline", 10, CFS_FILL_TEXT, 0644)) < 0 ||
	    (ret = cfs_mkfile(t, d, "\xff\xfe", 11, CFS_FILL_TEXT, 0644)) < 0 ||
	    (ret = cfs_mkfile(t, d, "latin1-caf\xe9", 12, CFS_FILL_TEXT, 0644)) < 0 ||
	    (ret = cfs_mkfile(t, d, "utf8-\xc3\xa9t\xc3\xa9-\xe2\x9c\x93", 13, CFS_FILL_TEXT, 0644)) < 0 ||
	    (ret = cfs_mkfile(t, d, "with spaces ", 14, CFS_FILL_TEXT, 0644)) < 0 ||
	    (ret = cfs_mkfile(t, d, " leading space", 15, CFS_FILL_TEXT, 0644)) < 0 ||
	    (ret = cfs_mkfile(t, d, "-leading-dash", 16, CFS_FILL_TEXT, 0644)) < 0 ||
	    (ret = cfs_mkfile(t, d, "--", 17, CFS_FILL_TEXT, 0644)) < 0 ||
	    (ret = cfs_mkfile(t, d, "tab\there", 18, CFS_FILL_TEXT, 0644)) < 0 ||
	    (ret = cfs_mkfile(t, d, "back\\slash", 19, CFS_FILL_TEXT, 0644)) < 0 ||
	    (ret = cfs_mkfile(t, d, "...", 20, CFS_FILL_TEXT, 0644)) < 0 ||
	    (ret = cfs_mkfile(t, d, "ctrl\x01\x1b", 21, CFS_FILL_TEXT, 0644)) < 0 ||
	    (ret = cfs_mkfile(t, d, "quote\"'$`*?[", 22, CFS_FILL_TEXT, 0644)) < 0 ||
	    (ret = cfs_mkfile(t, d, "link -> fake", 23, CFS_FILL_TEXT, 0644)) < 0 ||
	    (ret = cfs_mkdir(t, d, "dir with\nnewline", 0755)) < 0 ||
	    (ret = cfs_symlink(t, "new\nline", d, "\xff-link-to-newline")) < 0)
		goto out;
	/* An odd name on a hard link too. */
	if (linkat(d, "new\nline", d, "new\nline hard", 0) < 0)
		ret = cfs_fail(t, "new\\nline hard", errno);
out:
	close(d);
	return ret;
}

static int cfs_make_many(struct cfs_mktree *t)
{
	char name[32];
	int d, ret;

	if ((ret = cfs_mkdir(t, t->root, "many", 0755)) < 0)
		return ret;
	d = cfs_opendir(t, t->root, "many");
	if (d < 0)
		return d;
	for (unsigned i = 0; i < t->small_count; i++) {
		unsigned len = cfs_rng_range(&t->rng, 10, 8192);

		snprintf(name, sizeof(name), "f%05u", i);
		ret = cfs_mkfile(t, d, name, len,
				 i % 3 ? CFS_FILL_TEXT : CFS_FILL_RANDOM, 0644);
		if (ret < 0)
			goto out;
	}
	/* Identical contents under different names: chunk dedup food. */
	for (unsigned i = 0; i < 4; i++) {
		uint64_t saved = t->rng;

		snprintf(name, sizeof(name), "dup%u", i);
		t->rng = CFS_MKTREE_SEED;
		ret = cfs_mkfile(t, d, name, 70000, CFS_FILL_RANDOM, 0644);
		t->rng = saved;
		if (ret < 0)
			goto out;
	}
out:
	close(d);
	return ret;
}

static int cfs_make_deep(struct cfs_mktree *t)
{
	char name[16];
	int d, ret = 0;

	d = dup(t->root);
	if (d < 0)
		return cfs_fail(t, "dup", errno);
	for (int i = 0; i < CFS_MKTREE_DEPTH; i++) {
		int next;

		snprintf(name, sizeof(name), i == 0 ? "deep" : "d%02d", i);
		if ((ret = cfs_mkdir(t, d, name, 0755)) < 0)
			goto out;
		next = cfs_opendir(t, d, name);
		if (next < 0) {
			ret = next;
			goto out;
		}
		close(d);
		d = next;
	}
	if ((ret = cfs_mkfile(t, d, "bottom.txt", 42, CFS_FILL_TEXT, 0644)) < 0)
		goto out;
	ret = cfs_symlink(t, "../../../../../../../../../../../files/small.txt", d, "up");
out:
	close(d);
	return ret;
}

static uint64_t cfs_hash_name(uint64_t h, const char *name)
{
	for (const unsigned char *p = (const unsigned char *)name; *p; p++)
		h = (h ^ *p) * 0x100000001b3ULL;
	return h;
}

static int cfs_cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Times derived from the path hash, so they do not depend on readdir order.
 * Whole seconds in the past, nanoseconds that a seconds-only or
 * microseconds-only copy would lose. */
static int cfs_set_time(struct cfs_mktree *t, int dirfd, const char *name, uint64_t h)
{
	struct timespec ts[2];

	ts[1].tv_sec = 1500000000 + (time_t)(h % 200000000);
	ts[1].tv_nsec = (long)((h >> 32) % 1000000000);
	if (ts[1].tv_nsec % 1000 == 0)
		ts[1].tv_nsec += 1;
	ts[0] = ts[1];
	if (utimensat(dirfd, name, ts, AT_SYMLINK_NOFOLLOW) < 0)
		return cfs_fail(t, name, errno);
	return 0;
}

/* Deepest first, so setting a child's time after its parent's does not
 * bump the parent's mtime back to now. */
static int cfs_set_times(struct cfs_mktree *t, int dirfd, uint64_t h)
{
	char **names = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	DIR *dir;
	int fd, ret = 0;

	fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return cfs_fail(t, "opendir", errno);
	dir = fdopendir(fd);
	if (!dir) {
		close(fd);
		return cfs_fail(t, "fdopendir", errno);
	}
	while ((errno = 0, de = readdir(dir)) != NULL) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (n == cap) {
			char **nn;

			cap = cap ? cap * 2 : 64;
			nn = realloc(names, cap * sizeof(*names));
			if (!nn) {
				ret = cfs_fail(t, "realloc", ENOMEM);
				goto out_names;
			}
			names = nn;
		}
		names[n] = strdup(de->d_name);
		if (!names[n]) {
			ret = cfs_fail(t, "strdup", ENOMEM);
			goto out_names;
		}
		n++;
	}
	if (errno) {
		ret = cfs_fail(t, "readdir", errno);
		goto out_names;
	}
	/* names is NULL for an empty directory, and qsort wants a pointer. */
	if (n)
		qsort(names, n, sizeof(*names), cfs_cmp_names);
	for (size_t i = 0; i < n; i++) {
		uint64_t ch = cfs_hash_name(h * 31 + 7, names[i]);
		struct stat st;

		if (fstatat(dirfd, names[i], &st, AT_SYMLINK_NOFOLLOW) < 0) {
			ret = cfs_fail(t, names[i], errno);
			goto out_names;
		}
		if (S_ISDIR(st.st_mode)) {
			int sub = cfs_opendir(t, dirfd, names[i]);

			if (sub < 0) {
				ret = sub;
				goto out_names;
			}
			ret = cfs_set_times(t, sub, ch);
			close(sub);
			if (ret < 0)
				goto out_names;
		}
		ret = cfs_set_time(t, dirfd, names[i], ch);
		if (ret < 0)
			goto out_names;
	}
out_names:
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	closedir(dir);
	return ret;
}

static int cfs_parse_uint(const char *s, unsigned *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end || v > 1000000)
		return -EINVAL;
	*out = (unsigned)v;
	return 0;
}

static void cfs_usage(void)
{
	fprintf(stderr, "usage: cfs-mktree DIR [--big-mb N] [--small-count N]\n");
}

int main(int argc, char **argv)
{
	struct cfs_mktree t = {
		.root = -1, .rng = CFS_MKTREE_SEED, .big_mb = 64, .small_count = 3000,
	};
	const char *dir = NULL;
	int ret;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--big-mb") && i + 1 < argc) {
			if (cfs_parse_uint(argv[++i], &t.big_mb) < 0) {
				fprintf(stderr, "cfs-mktree: bad --big-mb '%s'\n", argv[i]);
				return 1;
			}
		} else if (!strcmp(argv[i], "--small-count") && i + 1 < argc) {
			if (cfs_parse_uint(argv[++i], &t.small_count) < 0) {
				fprintf(stderr, "cfs-mktree: bad --small-count '%s'\n", argv[i]);
				return 1;
			}
		} else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			cfs_usage();
			return 0;
		} else if (argv[i][0] == '-' || dir) {
			cfs_usage();
			return 1;
		} else {
			dir = argv[i];
		}
	}
	if (!dir) {
		cfs_usage();
		return 1;
	}

	/* Modes are set explicitly everywhere, but keep creation modes exact
	 * too, in case a colleague's fs honours them differently. */
	umask(0);
	if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
		fprintf(stderr, "cfs-mktree: mkdir %s: %s\n", dir, strerror(errno));
		return 1;
	}
	t.root = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (t.root < 0) {
		fprintf(stderr, "cfs-mktree: open %s: %s\n", dir, strerror(errno));
		return 1;
	}
	t.buf = malloc(CFS_MKTREE_IOBUF + 8);
	if (!t.buf) {
		fprintf(stderr, "cfs-mktree: out of memory\n");
		ret = -ENOMEM;
		goto out_close;
	}

	if ((ret = cfs_make_files(&t)) < 0 ||
	    (ret = cfs_make_links(&t)) < 0 ||
	    (ret = cfs_make_specials(&t)) < 0 ||
	    (ret = cfs_make_odd_names(&t)) < 0 ||
	    (ret = cfs_make_many(&t)) < 0 ||
	    (ret = cfs_make_deep(&t)) < 0 ||
	    (ret = cfs_setxattr(&t, t.root, ".", "user.root", "top", 3)) < 0 ||
	    (ret = cfs_set_times(&t, t.root, 0xcbf29ce484222325ULL)) < 0 ||
	    (ret = cfs_set_time(&t, t.root, ".", 0x1234567890abcdefULL)) < 0) {
		/* Names may hold newlines; print them escaped on one line. */
		fprintf(stderr, "cfs-mktree: ");
		for (const unsigned char *p = (const unsigned char *)(t.what ? t.what : "?"); *p; p++) {
			if (*p >= 0x20 && *p < 0x7f && *p != '\\')
				fputc(*p, stderr);
			else
				fprintf(stderr, "\\x%02x", *p);
		}
		fprintf(stderr, ": %s\n", strerror(-ret));
	}
	free(t.buf);
out_close:
	close(t.root);
	return ret < 0 ? 1 : 0;
}
