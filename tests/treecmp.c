/* cfs-treecmp: compare two trees entry by entry: every stat field a
 * container cares about, symlink targets, xattrs, contents and hard-link
 * structure.  Exit 0 identical, 1 different, 2 on error.
 *
 * Usage: cfs-treecmp [--no-mtime-dirs] [--no-mtime-whiteouts] [--ignore-blocks | --approx-blocks] A B
 *
 * --no-mtime-whiteouts skips the mtime of character devices 0:0, the
 * whiteouts of a layer in overlay form, which an engine makes when it
 * extracts the layer and dates then.
 *
 * --approx-blocks lets st_blocks differ by up to 64 KiB: a filesystem
 * counts its own metadata there (ext4 counts an external xattr block or
 * an extent-tree block), which no image format records, while a lost hole
 * (a sparse file turned dense) still shows.
 *
 * The walk is openat()-relative, so depth and path length are bounded by
 * the fd limit, not PATH_MAX; paths are only built for messages.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/xattr.h>
#include <unistd.h>

#define CFS_TREECMP_MAX_LINES 50
#define CFS_TREECMP_BUF (4u << 20)
#define CFS_TREECMP_BLOCKS_SLACK (64 * 1024 / 512)

/* One hard-linked inode seen on one side: its partner on the other side
 * and the first path it was seen under, for messages. */
struct cfs_link {
	dev_t dev;
	ino_t ino;
	dev_t peer_dev;
	ino_t peer_ino;
	char *path;
	bool used;
};

struct cfs_linkmap {
	struct cfs_link *slots;
	size_t cap;   /* power of two */
	size_t count;
};

struct cfs_treecmp {
	bool no_mtime_dirs, no_mtime_whiteouts;
	bool ignore_blocks;
	bool approx_blocks;
	uint64_t entries;
	uint64_t bytes;
	uint64_t diffs;
	uint64_t errors;
	char *bufa, *bufb;
	/* Path of the current entry, grown as needed, only for messages. */
	char *path;
	size_t path_len, path_cap;
	struct cfs_linkmap a2b, b2a;
};

/* ---- messages ---------------------------------------------------------- */

/* Newlines, control bytes and non-UTF-8 names must stay on one visible
 * line, so everything outside printable ASCII becomes an escape. */
static void cfs_put_escaped(FILE *f, const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '\\')
			fputs("\\\\", f);
		else if (c == '\n')
			fputs("\\n", f);
		else if (c == '\t')
			fputs("\\t", f);
		else if (c < 0x20 || c >= 0x7f)
			fprintf(f, "\\x%02x", c);
		else
			fputc(c, f);
	}
}

static const char *cfs_cur_path(const struct cfs_treecmp *c)
{
	return c->path_len ? c->path : ".";
}

__attribute__((format(printf, 3, 4)))
static void cfs_diff(struct cfs_treecmp *c, const char *path, const char *fmt, ...)
{
	va_list ap;

	c->diffs++;
	if (c->diffs > CFS_TREECMP_MAX_LINES)
		return;
	cfs_put_escaped(stderr, path, strlen(path));
	fputs(": ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

__attribute__((format(printf, 3, 4)))
static void cfs_error(struct cfs_treecmp *c, int err, const char *fmt, ...)
{
	va_list ap;

	c->errors++;
	fputs("treecmp: error: ", stderr);
	cfs_put_escaped(stderr, cfs_cur_path(c), strlen(cfs_cur_path(c)));
	fputs(": ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, ": %s\n", strerror(err));
}

/* Escaped copy of bytes for use inside a diff message. */
static char *cfs_escape_dup(const char *s, size_t len)
{
	char *out = NULL;
	size_t out_len = 0;
	FILE *f = open_memstream(&out, &out_len);

	if (!f)
		return NULL;
	cfs_put_escaped(f, s, len);
	if (fclose(f) != 0) {
		free(out);
		return NULL;
	}
	return out;
}

static int cfs_path_push(struct cfs_treecmp *c, const char *name, size_t *saved)
{
	size_t n = strlen(name);
	size_t need = c->path_len + 1 + n + 1;

	if (need > c->path_cap) {
		size_t cap = c->path_cap ? c->path_cap : 256;
		char *p;

		while (cap < need)
			cap *= 2;
		p = realloc(c->path, cap);
		if (!p)
			return -ENOMEM;
		c->path = p;
		c->path_cap = cap;
	}
	*saved = c->path_len;
	if (c->path_len)
		c->path[c->path_len++] = '/';
	memcpy(c->path + c->path_len, name, n + 1);
	c->path_len += n;
	return 0;
}

static void cfs_path_pop(struct cfs_treecmp *c, size_t saved)
{
	c->path_len = saved;
	if (c->path)
		c->path[saved] = '\0';
}

/* ---- hard-link map ----------------------------------------------------- */

static size_t cfs_link_hash(dev_t dev, ino_t ino, size_t cap)
{
	uint64_t h = (uint64_t)ino * 0x9e3779b97f4a7c15ULL ^ (uint64_t)dev * 0xc2b2ae3d27d4eb4fULL;

	return (size_t)(h ^ (h >> 29)) & (cap - 1);
}

static struct cfs_link *cfs_linkmap_find(struct cfs_linkmap *m, dev_t dev, ino_t ino)
{
	if (!m->cap)
		return NULL;
	for (size_t i = cfs_link_hash(dev, ino, m->cap);; i = (i + 1) & (m->cap - 1)) {
		struct cfs_link *l = &m->slots[i];

		if (!l->used)
			return NULL;
		if (l->dev == dev && l->ino == ino)
			return l;
	}
}

static int cfs_linkmap_add(struct cfs_linkmap *m, dev_t dev, ino_t ino,
			   dev_t peer_dev, ino_t peer_ino, const char *path)
{
	struct cfs_link *l;
	size_t i;

	/* Keep the load under one half so probes stay short. */
	if ((m->count + 1) * 2 > m->cap) {
		size_t cap = m->cap ? m->cap * 2 : 64;
		struct cfs_link *slots = calloc(cap, sizeof(*slots));

		if (!slots)
			return -ENOMEM;
		for (size_t k = 0; k < m->cap; k++) {
			if (!m->slots[k].used)
				continue;
			for (i = cfs_link_hash(m->slots[k].dev, m->slots[k].ino, cap);
			     slots[i].used; i = (i + 1) & (cap - 1))
				;
			slots[i] = m->slots[k];
		}
		free(m->slots);
		m->slots = slots;
		m->cap = cap;
	}
	for (i = cfs_link_hash(dev, ino, m->cap); m->slots[i].used; i = (i + 1) & (m->cap - 1))
		;
	l = &m->slots[i];
	l->path = strdup(path);
	if (!l->path)
		return -ENOMEM;
	l->dev = dev;
	l->ino = ino;
	l->peer_dev = peer_dev;
	l->peer_ino = peer_ino;
	l->used = true;
	m->count++;
	return 0;
}

static void cfs_linkmap_free(struct cfs_linkmap *m)
{
	for (size_t i = 0; i < m->cap; i++)
		if (m->slots[i].used)
			free(m->slots[i].path);
	free(m->slots);
}

static int cfs_links(struct cfs_treecmp *c, const struct stat *sa, const struct stat *sb)
{
	struct cfs_link *la, *lb;
	int ret;

	if (S_ISDIR(sa->st_mode) || (sa->st_nlink < 2 && sb->st_nlink < 2))
		return 0;
	la = cfs_linkmap_find(&c->a2b, sa->st_dev, sa->st_ino);
	lb = cfs_linkmap_find(&c->b2a, sb->st_dev, sb->st_ino);
	if (la && (la->peer_dev != sb->st_dev || la->peer_ino != sb->st_ino)) {
		char *e = cfs_escape_dup(la->path, strlen(la->path));

		cfs_diff(c, cfs_cur_path(c), "hard link: same inode as %s in A, not in B",
			 e ? e : "?");
		free(e);
	}
	if (lb && (lb->peer_dev != sa->st_dev || lb->peer_ino != sa->st_ino)) {
		char *e = cfs_escape_dup(lb->path, strlen(lb->path));

		cfs_diff(c, cfs_cur_path(c), "hard link: same inode as %s in B, not in A",
			 e ? e : "?");
		free(e);
	}
	if (!la && (ret = cfs_linkmap_add(&c->a2b, sa->st_dev, sa->st_ino,
					  sb->st_dev, sb->st_ino, cfs_cur_path(c))) < 0)
		return ret;
	if (!lb && (ret = cfs_linkmap_add(&c->b2a, sb->st_dev, sb->st_ino,
					  sa->st_dev, sa->st_ino, cfs_cur_path(c))) < 0)
		return ret;
	return 0;
}

/* ---- xattrs ------------------------------------------------------------ */

struct cfs_xattrs {
	char *names;    /* NUL-separated, as llistxattr() returns them */
	size_t len;
	const char **sorted;
	size_t count;
};

static int cfs_cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The list can grow between the size probe and the read: retry on ERANGE. */
static int cfs_xattr_list(const char *path, struct cfs_xattrs *x)
{
	ssize_t n;

	memset(x, 0, sizeof(*x));
	for (;;) {
		n = llistxattr(path, NULL, 0);
		if (n < 0) {
			if (errno == ENOTSUP || errno == ENOSYS)
				return 0;
			return -errno;
		}
		if (n == 0)
			return 0;
		free(x->names);
		x->names = malloc((size_t)n);
		if (!x->names)
			return -ENOMEM;
		n = llistxattr(path, x->names, (size_t)n);
		if (n >= 0)
			break;
		if (errno != ERANGE)
			return -errno;
	}
	x->len = (size_t)n;
	for (size_t i = 0; i < x->len; i += strlen(x->names + i) + 1)
		x->count++;
	x->sorted = calloc(x->count ? x->count : 1, sizeof(*x->sorted));
	if (!x->sorted)
		return -ENOMEM;
	x->count = 0;
	for (size_t i = 0; i < x->len; i += strlen(x->names + i) + 1)
		x->sorted[x->count++] = x->names + i;
	qsort(x->sorted, x->count, sizeof(*x->sorted), cfs_cmp_str);
	return 0;
}

static void cfs_xattrs_free(struct cfs_xattrs *x)
{
	free(x->names);
	free(x->sorted);
}

static int cfs_xattr_get(const char *path, const char *name, char **val, size_t *len)
{
	ssize_t n;

	*val = NULL;
	for (;;) {
		n = lgetxattr(path, name, NULL, 0);
		if (n < 0)
			return -errno;
		free(*val);
		*val = malloc(n ? (size_t)n : 1);
		if (!*val)
			return -ENOMEM;
		n = lgetxattr(path, name, *val, (size_t)n);
		if (n >= 0)
			break;
		if (errno != ERANGE) {
			int err = errno;

			free(*val);
			*val = NULL;
			return -err;
		}
	}
	*len = (size_t)n;
	return 0;
}

static void cfs_diff_xattr_name(struct cfs_treecmp *c, const char *name, const char *what)
{
	char *e = cfs_escape_dup(name, strlen(name));

	cfs_diff(c, cfs_cur_path(c), "xattr %s %s", e ? e : "?", what);
	free(e);
}

/* No fd for symlinks and devices, and opening a FIFO or device has side
 * effects: name the entry through its parent's /proc/self/fd link, which
 * keeps the walk relative and does not follow the last component. */
static int cfs_cmp_xattrs(struct cfs_treecmp *c, int da, int db, const char *name)
{
	char pa[64 + 256], pb[64 + 256];
	struct cfs_xattrs xa, xb;
	size_t i = 0, j = 0;
	int ret;

	snprintf(pa, sizeof(pa), "/proc/self/fd/%d/%s", da, name);
	snprintf(pb, sizeof(pb), "/proc/self/fd/%d/%s", db, name);
	ret = cfs_xattr_list(pa, &xa);
	if (ret < 0) {
		cfs_error(c, -ret, "listxattr in A");
		cfs_xattrs_free(&xa);
		return 0;
	}
	ret = cfs_xattr_list(pb, &xb);
	if (ret < 0) {
		cfs_error(c, -ret, "listxattr in B");
		goto out;
	}
	while (i < xa.count || j < xb.count) {
		int k = i >= xa.count ? 1 : j >= xb.count ? -1 : strcmp(xa.sorted[i], xb.sorted[j]);
		char *va, *vb;
		size_t la, lb;

		if (k < 0) {
			cfs_diff_xattr_name(c, xa.sorted[i++], "only in A");
			continue;
		}
		if (k > 0) {
			cfs_diff_xattr_name(c, xb.sorted[j++], "only in B");
			continue;
		}
		ret = cfs_xattr_get(pa, xa.sorted[i], &va, &la);
		if (ret < 0) {
			cfs_error(c, -ret, "getxattr %s in A", xa.sorted[i]);
			goto next;
		}
		ret = cfs_xattr_get(pb, xb.sorted[j], &vb, &lb);
		if (ret < 0) {
			cfs_error(c, -ret, "getxattr %s in B", xb.sorted[j]);
			free(va);
			goto next;
		}
		if (la != lb || memcmp(va, vb, la)) {
			char *ea = cfs_escape_dup(va, la > 64 ? 64 : la);
			char *eb = cfs_escape_dup(vb, lb > 64 ? 64 : lb);
			char *en = cfs_escape_dup(xa.sorted[i], strlen(xa.sorted[i]));

			cfs_diff(c, cfs_cur_path(c), "xattr %s value differs: A=\"%s\"%s (%zu bytes) B=\"%s\"%s (%zu bytes)",
				 en ? en : "?", ea ? ea : "?", la > 64 ? "..." : "", la,
				 eb ? eb : "?", lb > 64 ? "..." : "", lb);
			free(ea);
			free(eb);
			free(en);
		}
		free(va);
		free(vb);
next:
		i++;
		j++;
	}
out:
	cfs_xattrs_free(&xa);
	cfs_xattrs_free(&xb);
	return 0;
}

/* ---- contents ---------------------------------------------------------- */

/* Fill buf as far as the file allows; short reads from FUSE are legal. */
static ssize_t cfs_read_full(int fd, char *buf, size_t len)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = read(fd, buf + got, len - got);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

static int cfs_cmp_contents(struct cfs_treecmp *c, int da, int db, const char *name)
{
	uint64_t off = 0;
	int fa, fb;

	fa = openat(da, name, O_RDONLY | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC);
	if (fa < 0) {
		cfs_error(c, errno, "open in A");
		return 0;
	}
	fb = openat(db, name, O_RDONLY | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC);
	if (fb < 0) {
		cfs_error(c, errno, "open in B");
		goto out_a;
	}
	for (;;) {
		ssize_t na = cfs_read_full(fa, c->bufa, CFS_TREECMP_BUF);
		ssize_t nb;

		if (na < 0) {
			cfs_error(c, (int)-na, "read in A at %llu", (unsigned long long)off);
			break;
		}
		nb = cfs_read_full(fb, c->bufb, CFS_TREECMP_BUF);
		if (nb < 0) {
			cfs_error(c, (int)-nb, "read in B at %llu", (unsigned long long)off);
			break;
		}
		if (memcmp(c->bufa, c->bufb, (size_t)(na < nb ? na : nb))) {
			size_t k = 0;

			while (c->bufa[k] == c->bufb[k])
				k++;
			cfs_diff(c, cfs_cur_path(c), "contents differ at byte %llu (A=0x%02x B=0x%02x)",
				 (unsigned long long)(off + k),
				 (unsigned char)c->bufa[k], (unsigned char)c->bufb[k]);
			break;
		}
		c->bytes += (uint64_t)(na < nb ? na : nb);
		if (na != nb) {
			cfs_diff(c, cfs_cur_path(c), "contents: %s ends at byte %llu, the other goes on",
				 na < nb ? "A" : "B",
				 (unsigned long long)(off + (uint64_t)(na < nb ? na : nb)));
			break;
		}
		if (na == 0)
			break;
		off += (uint64_t)na;
	}
	close(fb);
out_a:
	close(fa);
	return 0;
}

/* ---- walk -------------------------------------------------------------- */

static const char *cfs_type_name(mode_t m)
{
	switch (m & S_IFMT) {
	case S_IFREG: return "regular file";
	case S_IFDIR: return "directory";
	case S_IFLNK: return "symlink";
	case S_IFCHR: return "character device";
	case S_IFBLK: return "block device";
	case S_IFIFO: return "fifo";
	case S_IFSOCK: return "socket";
	default: return "unknown";
	}
}

static int cfs_cmp_dir(struct cfs_treecmp *c, int da, int db);

static int cfs_cmp_symlink(struct cfs_treecmp *c, int da, int db, const char *name,
			   const struct stat *sa, const struct stat *sb)
{
	size_t la = (size_t)sa->st_size + 2, lb = (size_t)sb->st_size + 2;
	char *ta, *tb;
	ssize_t na, nb;
	int ret = 0;

	/* st_size of a symlink may be 0 on some filesystems (procfs, some
	 * FUSE): fall back to a generous buffer. */
	if (la < 4096)
		la = 4096;
	if (lb < 4096)
		lb = 4096;
	ta = malloc(la);
	tb = malloc(lb);
	if (!ta || !tb) {
		ret = -ENOMEM;
		goto out;
	}
	na = readlinkat(da, name, ta, la);
	if (na < 0) {
		cfs_error(c, errno, "readlink in A");
		goto out;
	}
	nb = readlinkat(db, name, tb, lb);
	if (nb < 0) {
		cfs_error(c, errno, "readlink in B");
		goto out;
	}
	if (na != nb || memcmp(ta, tb, (size_t)na)) {
		char *ea = cfs_escape_dup(ta, (size_t)na);
		char *eb = cfs_escape_dup(tb, (size_t)nb);

		cfs_diff(c, cfs_cur_path(c), "symlink target differs: A -> %s, B -> %s",
			 ea ? ea : "?", eb ? eb : "?");
		free(ea);
		free(eb);
	}
out:
	free(ta);
	free(tb);
	return ret;
}

/* Compare one entry present in both trees; recurses into directories. */
static int cfs_cmp_entry(struct cfs_treecmp *c, int da, int db, const char *name)
{
	const char *p = cfs_cur_path(c);
	struct stat sa, sb;
	int ret;

	c->entries++;
	if (fstatat(da, name, &sa, AT_SYMLINK_NOFOLLOW) < 0) {
		cfs_error(c, errno, "lstat in A");
		return 0;
	}
	if (fstatat(db, name, &sb, AT_SYMLINK_NOFOLLOW) < 0) {
		cfs_error(c, errno, "lstat in B");
		return 0;
	}
	if ((sa.st_mode & S_IFMT) != (sb.st_mode & S_IFMT)) {
		cfs_diff(c, p, "type differs: A is a %s, B is a %s",
			 cfs_type_name(sa.st_mode), cfs_type_name(sb.st_mode));
		return 0;
	}
	if (sa.st_mode != sb.st_mode)
		cfs_diff(c, p, "mode differs: A %06o, B %06o",
			 (unsigned)sa.st_mode, (unsigned)sb.st_mode);
	if (sa.st_uid != sb.st_uid)
		cfs_diff(c, p, "uid differs: A %u, B %u", (unsigned)sa.st_uid, (unsigned)sb.st_uid);
	if (sa.st_gid != sb.st_gid)
		cfs_diff(c, p, "gid differs: A %u, B %u", (unsigned)sa.st_gid, (unsigned)sb.st_gid);
	if (sa.st_nlink != sb.st_nlink)
		cfs_diff(c, p, "nlink differs: A %lu, B %lu",
			 (unsigned long)sa.st_nlink, (unsigned long)sb.st_nlink);
	if (!S_ISDIR(sa.st_mode) && sa.st_size != sb.st_size)
		cfs_diff(c, p, "size differs: A %lld, B %lld",
			 (long long)sa.st_size, (long long)sb.st_size);
	if (S_ISREG(sa.st_mode) && !c->ignore_blocks && sa.st_blocks != sb.st_blocks &&
	    !(c->approx_blocks && llabs((long long)sa.st_blocks - (long long)sb.st_blocks) <=
				  CFS_TREECMP_BLOCKS_SLACK))
		cfs_diff(c, p, "st_blocks differs: A %lld, B %lld",
			 (long long)sa.st_blocks, (long long)sb.st_blocks);
	if ((S_ISCHR(sa.st_mode) || S_ISBLK(sa.st_mode)) && sa.st_rdev != sb.st_rdev)
		cfs_diff(c, p, "rdev differs: A %u:%u, B %u:%u",
			 major(sa.st_rdev), minor(sa.st_rdev), major(sb.st_rdev), minor(sb.st_rdev));
	if (!(S_ISDIR(sa.st_mode) && c->no_mtime_dirs) &&
	    !(S_ISCHR(sa.st_mode) && sa.st_rdev == 0 && c->no_mtime_whiteouts) &&
	    (sa.st_mtim.tv_sec != sb.st_mtim.tv_sec || sa.st_mtim.tv_nsec != sb.st_mtim.tv_nsec))
		cfs_diff(c, p, "mtime differs: A %lld.%09ld, B %lld.%09ld",
			 (long long)sa.st_mtim.tv_sec, sa.st_mtim.tv_nsec,
			 (long long)sb.st_mtim.tv_sec, sb.st_mtim.tv_nsec);
	if ((ret = cfs_links(c, &sa, &sb)) < 0)
		return ret;
	if ((ret = cfs_cmp_xattrs(c, da, db, name)) < 0)
		return ret;

	if (S_ISLNK(sa.st_mode))
		return cfs_cmp_symlink(c, da, db, name, &sa, &sb);
	if (S_ISREG(sa.st_mode))
		return cfs_cmp_contents(c, da, db, name);
	if (S_ISDIR(sa.st_mode)) {
		int sda, sdb;

		sda = openat(da, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (sda < 0) {
			cfs_error(c, errno, "open directory in A");
			return 0;
		}
		sdb = openat(db, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (sdb < 0) {
			cfs_error(c, errno, "open directory in B");
			close(sda);
			return 0;
		}
		ret = cfs_cmp_dir(c, sda, sdb);
		close(sdb);
		close(sda);
		return ret;
	}
	return 0;
}

struct cfs_names {
	char **v;
	size_t n, cap;
};

static void cfs_names_free(struct cfs_names *ns)
{
	for (size_t i = 0; i < ns->n; i++)
		free(ns->v[i]);
	free(ns->v);
}

/* Sorted entry names of dirfd, without "." and "..". */
static int cfs_names_read(int dirfd, struct cfs_names *ns)
{
	struct dirent *de;
	DIR *dir;
	int fd, ret = 0;

	memset(ns, 0, sizeof(*ns));
	/* A fresh fd: fdopendir() takes it over, and dirfd stays usable. */
	fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	dir = fdopendir(fd);
	if (!dir) {
		ret = -errno;
		close(fd);
		return ret;
	}
	while ((errno = 0, de = readdir(dir)) != NULL) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (ns->n == ns->cap) {
			size_t cap = ns->cap ? ns->cap * 2 : 64;
			char **v = realloc(ns->v, cap * sizeof(*v));

			if (!v) {
				ret = -ENOMEM;
				goto out;
			}
			ns->v = v;
			ns->cap = cap;
		}
		ns->v[ns->n] = strdup(de->d_name);
		if (!ns->v[ns->n]) {
			ret = -ENOMEM;
			goto out;
		}
		ns->n++;
	}
	if (errno)
		ret = -errno;
	else if (ns->n) /* ns->v is NULL for an empty directory */
		qsort(ns->v, ns->n, sizeof(*ns->v), cfs_cmp_str);
out:
	closedir(dir);
	return ret;
}

static void cfs_diff_only(struct cfs_treecmp *c, const char *name, const char *side)
{
	size_t saved;

	if (cfs_path_push(c, name, &saved) < 0) {
		cfs_diff(c, name, "only in %s", side);
		return;
	}
	cfs_diff(c, c->path, "only in %s", side);
	cfs_path_pop(c, saved);
}

static int cfs_cmp_dir(struct cfs_treecmp *c, int da, int db)
{
	struct cfs_names na, nb;
	size_t i = 0, j = 0;
	int ret;

	ret = cfs_names_read(da, &na);
	if (ret < 0) {
		cfs_error(c, -ret, "readdir in A");
		cfs_names_free(&na);
		return 0;
	}
	ret = cfs_names_read(db, &nb);
	if (ret < 0) {
		cfs_error(c, -ret, "readdir in B");
		ret = 0;
		goto out;
	}
	while (i < na.n || j < nb.n) {
		int k = i >= na.n ? 1 : j >= nb.n ? -1 : strcmp(na.v[i], nb.v[j]);
		size_t saved;

		if (k < 0) {
			cfs_diff_only(c, na.v[i++], "A");
			continue;
		}
		if (k > 0) {
			cfs_diff_only(c, nb.v[j++], "B");
			continue;
		}
		ret = cfs_path_push(c, na.v[i], &saved);
		if (ret < 0)
			goto out;
		ret = cfs_cmp_entry(c, da, db, na.v[i]);
		cfs_path_pop(c, saved);
		if (ret < 0)
			goto out;
		i++;
		j++;
	}
out:
	cfs_names_free(&na);
	cfs_names_free(&nb);
	return ret;
}

/* ---- main -------------------------------------------------------------- */

static void cfs_usage(FILE *f)
{
	fputs("usage: cfs-treecmp [--no-mtime-dirs] [--no-mtime-whiteouts] "
	      "[--ignore-blocks | --approx-blocks] A B\n", f);
}

int main(int argc, char **argv)
{
	struct cfs_treecmp c = { 0 };
	const char *roots[2] = { NULL, NULL };
	int nroots = 0, fa = -1, fb = -1, ret, rc = 2;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--no-mtime-dirs")) {
			c.no_mtime_dirs = true;
		} else if (!strcmp(argv[i], "--no-mtime-whiteouts")) {
			c.no_mtime_whiteouts = true;
		} else if (!strcmp(argv[i], "--ignore-blocks")) {
			c.ignore_blocks = true;
		} else if (!strcmp(argv[i], "--approx-blocks")) {
			c.approx_blocks = true;
		} else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			cfs_usage(stdout);
			return 0;
		} else if (argv[i][0] == '-' && argv[i][1]) {
			cfs_usage(stderr);
			return 2;
		} else {
			if (nroots < 2)
				roots[nroots] = argv[i];
			nroots++;
		}
	}
	if (nroots != 2) {
		cfs_usage(stderr);
		return 2;
	}

	c.bufa = malloc(CFS_TREECMP_BUF);
	c.bufb = malloc(CFS_TREECMP_BUF);
	if (!c.bufa || !c.bufb) {
		fputs("treecmp: out of memory\n", stderr);
		goto out;
	}
	/* The roots are compared as entries too (mode, owner, mtime, xattrs),
	 * through their parents, so open the parents and use the last
	 * component as the name. */
	fa = open(roots[0], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fa < 0) {
		fprintf(stderr, "treecmp: %s: %s\n", roots[0], strerror(errno));
		goto out;
	}
	fb = open(roots[1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fb < 0) {
		fprintf(stderr, "treecmp: %s: %s\n", roots[1], strerror(errno));
		goto out;
	}
	/* "." relative to the root fds: fstatat and /proc/self/fd/N/. both
	 * name the root itself. */
	ret = cfs_cmp_entry(&c, fa, fb, ".");
	if (ret < 0) {
		fprintf(stderr, "treecmp: %s\n", strerror(-ret));
		goto out;
	}
	if (c.diffs > CFS_TREECMP_MAX_LINES)
		fprintf(stderr, "... and %llu more differences\n",
			(unsigned long long)(c.diffs - CFS_TREECMP_MAX_LINES));
	printf("treecmp: %llu entries, %llu bytes compared, %llu differences\n",
	       (unsigned long long)c.entries, (unsigned long long)c.bytes,
	       (unsigned long long)c.diffs);
	if (c.errors)
		fprintf(stderr, "treecmp: %llu errors\n", (unsigned long long)c.errors);
	rc = c.errors ? 2 : c.diffs ? 1 : 0;
out:
	if (fb >= 0)
		close(fb);
	if (fa >= 0)
		close(fa);
	cfs_linkmap_free(&c.a2b);
	cfs_linkmap_free(&c.b2a);
	free(c.path);
	free(c.bufa);
	free(c.bufb);
	return rc;
}
