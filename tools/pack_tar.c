/* SPDX-License-Identifier: MIT */
/*
 * Tar source for cfs-pack (cfs_pack_source_tar), and the tar streams that
 * the image sources apply as layers (cfs_pack_tar_begin/layer/end),
 * through libarchive's read side only: nothing is ever extracted, so a
 * hostile archive can at most make a strange image, never touch the
 * filesystem.  Names are checked here ("..") as well as by the builder,
 * to give a clear message.
 *
 * Small files share group chunks in the order the chunker sees them, so to
 * give the image of the same tree whatever the member order, their data is
 * spooled to an anonymous temporary file and fed at the end of the archive
 * in the builder's order (depth first, names sorted), as the directory
 * source feeds them.  Large files have chunks of their own and stream
 * straight through.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>

#include "builder.h"
#include "chunker.h"
#include "format.h"
#include "util.h"

#include "pack.h"

#define TAR_MAX_ENTRIES 10000000ull
#define TAR_BLOCK_SIZE (1u << 20)
/* Spool write buffer and read window. */
#define SPOOL_IO_SIZE (1u << 20)
/* The names of spooled files are held in memory until the end; a hostile
 * archive of long names meets this cap on their total (over 200 bytes a
 * name at TAR_MAX_ENTRIES) rather than the memory limit. */
#define SPOOL_MAX_PATH_BYTES (2ull << 30)

/* A data segment of a spooled file: file bytes [off, off + len) are at
 * spool offset at.  A file's segments are consecutive in the spool. */
struct spool_seg {
	uint64_t off, len, at;
};

/* A small regular file whose data waits in the spool. */
struct spool_file {
	uint32_t node;
	uint64_t size;
	size_t seg, nseg;     /* in spool.segs */
	size_t name;          /* paths offset of its first live name in the
	                       * builder's order; SIZE_MAX if none (replaced) */
	uint32_t rank;        /* --profile: first place of a live name in the
	                       * profile; UINT32_MAX if none */
};

/* A name given to a node: a small file's own path or a hard link's. */
struct spool_name {
	size_t path;          /* offset in spool.paths, NUL-terminated */
	uint32_t node;
};

struct spool {
	int fd;               /* -1 until the first byte */
	uint64_t end;         /* bytes spooled, buffered ones included */
	uint8_t *buf;         /* write buffer, then read window */
	size_t buf_len;

	struct spool_file *files;
	size_t nfiles, files_cap;
	struct spool_seg *segs;
	size_t nsegs, segs_cap;
	struct spool_name *names;
	size_t nnames, names_cap;
	char *paths;
	size_t paths_len, paths_cap;
};

/* "/a//./b/" -> "a/b" into out (PATH_MAX); "" is the root.  -EXDEV for a
 * ".." component, -ENAMETOOLONG. */
static int norm_path(const char *in, char *out)
{
	size_t o = 0;

	if (strlen(in) >= PATH_MAX)
		return -ENAMETOOLONG;
	while (*in) {
		const char *s = in;
		size_t n;

		while (*in && *in != '/')
			in++;
		n = (size_t)(in - s);
		while (*in == '/')
			in++;
		if (!n || (n == 1 && s[0] == '.'))
			continue;
		if (n == 2 && s[0] == '.' && s[1] == '.')
			return -EXDEV;
		if (o)
			out[o++] = '/';
		memcpy(out + o, s, n);
		o += n;
	}
	out[o] = '\0';
	return 0;
}

static int path_error(struct cfs_pack_ctx *p, const char *name, int err)
{
	if (err == -EXDEV)
		return cfs_pack_fail(p, -EINVAL, "path escapes the image: %s", name);
	return cfs_pack_fail(p, err, "%s: %s", name, cfs_strerror(err));
}

static int entry_attr(struct cfs_pack_ctx *p, struct archive_entry *e, const char *path,
		      struct cfs_attr *a)
{
	la_int64_t uid = archive_entry_uid(e), gid = archive_entry_gid(e);

	if (uid < 0 || uid > UINT32_MAX || gid < 0 || gid > UINT32_MAX)
		return cfs_pack_fail(p, -ERANGE, "%s: uid or gid out of range", path);
	*a = (struct cfs_attr){
		.mode = (uint32_t)archive_entry_mode(e),
		.uid = (uint32_t)uid,
		.gid = (uint32_t)gid,
	};
	if (archive_entry_mtime_is_set(e)) {
		a->mtime_sec = archive_entry_mtime(e);
		a->mtime_nsec = (uint32_t)archive_entry_mtime_nsec(e);
	}
	if (S_ISCHR(a->mode) || S_ISBLK(a->mode))
		a->rdev = archive_entry_rdev(e);
	if (S_ISREG(a->mode)) {
		la_int64_t size = archive_entry_size(e);
		if (size < 0)
			return cfs_pack_fail(p, -EINVAL, "%s: negative size", path);
		a->size = (uint64_t)size;
	}
	return 0;
}

static int entry_xattrs(struct cfs_pack_ctx *p, struct archive_entry *e, const char *path,
			uint32_t node)
{
	const char *name;
	const void *value;
	size_t len;
	int ret;

	archive_entry_xattr_reset(e);
	while (archive_entry_xattr_next(e, &name, &value, &len) == ARCHIVE_OK) {
		ret = cfs_builder_set_xattr(p->b, node, name, value, len);
		if (ret < 0)
			return cfs_pack_fail(p, ret, "%s: xattr %s: %s", path, name, cfs_strerror(ret));
	}
	return 0;
}

/* ---- the small-file spool ---- */

static void spool_free(struct spool *s)
{
	if (s->fd >= 0)
		close(s->fd);
	free(s->buf);
	free(s->files);
	free(s->segs);
	free(s->names);
	free(s->paths);
}

/* Grows *v (of *cap elements of size sz) to hold n + 1. */
static int vec_grow(void **v, size_t *cap, size_t n, size_t sz)
{
	size_t ncap;
	void *nv;

	if (n < *cap)
		return 0;
	ncap = *cap ? 2 * *cap : 256;
	if (ncap > SIZE_MAX / sz)
		return -ENOMEM;
	nv = realloc(*v, ncap * sz);
	if (!nv)
		return -ENOMEM;
	*v = nv;
	*cap = ncap;
	return 0;
}

/* An unnamed file in $TMPDIR or /tmp: O_TMPFILE where the filesystem has
 * it, else a name that is unlinked at once.  Either way it disappears with
 * the process, whatever path it exits by. */
static int spool_open(struct cfs_pack_ctx *p, struct spool *s)
{
	const char *dir = getenv("TMPDIR");
	char tmpl[PATH_MAX];
	int fd, n;

	if (!dir || !*dir)
		dir = "/tmp";
	fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0) {
		n = snprintf(tmpl, sizeof(tmpl), "%s/cfs-pack-XXXXXX", dir);
		if (n < 0 || (size_t)n >= sizeof(tmpl))
			return cfs_pack_fail(p, -ENAMETOOLONG, "spool in %s: %s", dir,
					     cfs_strerror(-ENAMETOOLONG));
		fd = mkostemp(tmpl, O_CLOEXEC);
		if (fd < 0)
			return cfs_pack_fail(p, -errno, "spool in %s: %s", dir, cfs_strerror(-errno));
		unlink(tmpl);
	}
	s->fd = fd;
	return 0;
}

static int spool_flush(struct cfs_pack_ctx *p, struct spool *s)
{
	size_t done = 0;

	while (done < s->buf_len) {
		ssize_t n = write(s->fd, s->buf + done, s->buf_len - done);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return cfs_pack_fail(p, -errno, "writing the spool: %s", cfs_strerror(-errno));
		}
		done += (size_t)n;
	}
	s->buf_len = 0;
	return 0;
}

static int spool_write(struct cfs_pack_ctx *p, struct spool *s, const void *data, size_t len)
{
	const uint8_t *d = data;
	int ret;

	if (s->fd < 0) {
		ret = spool_open(p, s);
		if (ret < 0)
			return ret;
	}
	if (!s->buf) {
		s->buf = malloc(SPOOL_IO_SIZE);
		if (!s->buf)
			return cfs_pack_fail(p, -ENOMEM, "spool: %s", cfs_strerror(-ENOMEM));
	}
	while (len) {
		size_t n = CFS_MIN(len, SPOOL_IO_SIZE - s->buf_len);

		memcpy(s->buf + s->buf_len, d, n);
		s->buf_len += n;
		s->end += n;
		d += n;
		len -= n;
		if (s->buf_len == SPOOL_IO_SIZE) {
			ret = spool_flush(p, s);
			if (ret < 0)
				return ret;
		}
	}
	return 0;
}

/* Records that node has the name path (normalised). */
static int spool_name(struct cfs_pack_ctx *p, struct spool *s, const char *path, uint32_t node)
{
	size_t len = strlen(path) + 1;

	if (s->paths_len + len > SPOOL_MAX_PATH_BYTES)
		return cfs_pack_fail(p, -EFBIG, "%s: the names of small files exceed %llu bytes",
				     path, SPOOL_MAX_PATH_BYTES);
	if (s->paths_len + len > s->paths_cap) {
		size_t cap = CFS_MAX(s->paths_len + len, s->paths_cap ? 2 * s->paths_cap : 65536);
		char *np = realloc(s->paths, cap);

		if (!np)
			return cfs_pack_fail(p, -ENOMEM, "%s: %s", path, cfs_strerror(-ENOMEM));
		s->paths = np;
		s->paths_cap = cap;
	}
	if (vec_grow((void **)&s->names, &s->names_cap, s->nnames, sizeof(*s->names)) < 0)
		return cfs_pack_fail(p, -ENOMEM, "%s: %s", path, cfs_strerror(-ENOMEM));
	memcpy(s->paths + s->paths_len, path, len);
	s->names[s->nnames++] = (struct spool_name){ s->paths_len, node };
	s->paths_len += len;
	return 0;
}

/* The builder's order of two normalised paths: component by component,
 * each by bytes and then length, a directory before what it holds. */
static int dfs_cmp(const char *a, const char *b)
{
	for (;;) {
		size_t an = strcspn(a, "/"), bn = strcspn(b, "/");
		int c = memcmp(a, b, CFS_MIN(an, bn));

		if (c)
			return c;
		if (an != bn)
			return an < bn ? -1 : 1;
		a += an;
		b += bn;
		if (!*a || !*b)
			return (*a != '\0') - (*b != '\0');
		a++;
		b++;
	}
}

static int file_node_cmp(const void *x, const void *y)
{
	const struct spool_file *f = x, *g = y;

	return (f->node > g->node) - (f->node < g->node);
}

/* The files of a profile first, in its order; then the builder's. */
static int file_name_cmp(const void *x, const void *y, void *ctx)
{
	const struct spool_file *f = x, *g = y;
	const char *paths = ctx;

	if (f->rank != g->rank)
		return f->rank < g->rank ? -1 : 1;
	return dfs_cmp(paths + f->name, paths + g->name);
}

/* Feeds one spooled file, reading the spool in windows of SPOOL_IO_SIZE. */
static int spool_feed_file(struct cfs_pack_ctx *p, struct spool *s, const struct spool_file *f)
{
	const char *path = s->paths + f->name;
	uint64_t win_at = 0, win_len = 0;
	int ret;

	ret = cfs_chunker_file_begin(p->ch, f->node, f->size);
	if (ret < 0)
		return cfs_pack_fail(p, ret, "%s: %s", path, cfs_strerror(ret));
	for (size_t i = f->seg; i < f->seg + f->nseg; i++) {
		const struct spool_seg *sg = &s->segs[i];
		uint64_t done = 0;

		while (done < sg->len) {
			uint64_t pos = sg->at + done, n;

			if (pos < win_at || pos >= win_at + win_len) {
				const struct spool_seg *last = &s->segs[f->seg + f->nseg - 1];
				uint64_t want = CFS_MIN((uint64_t)SPOOL_IO_SIZE, last->at + last->len - pos);
				ssize_t r = pread(s->fd, s->buf, (size_t)want, (off_t)pos);

				if (r < 0 && errno == EINTR)
					continue;
				if (r < 0)
					return cfs_pack_fail(p, -errno, "reading the spool: %s",
							     cfs_strerror(-errno));
				if (r == 0)
					return cfs_pack_fail(p, -EIO, "reading the spool: %s",
							     "unexpected end");
				win_at = pos;
				win_len = (uint64_t)r;
			}
			n = CFS_MIN(sg->len - done, win_at + win_len - pos);
			ret = cfs_chunker_file_data(p->ch, sg->off + done, s->buf + (pos - win_at),
						    (size_t)n);
			if (ret < 0)
				return cfs_pack_fail(p, ret, "%s: %s", path, cfs_strerror(ret));
			done += n;
		}
	}
	ret = cfs_chunker_file_end(p->ch);
	if (ret < 0)
		return cfs_pack_fail(p, ret, "%s: %s", path, cfs_strerror(ret));
	return 0;
}

/* At the end of the archive: feeds the spooled files that are still in the
 * tree, each at the first of its names in the builder's order, which is
 * where the directory source meets it. */
static int spool_feed(struct cfs_pack_ctx *p, struct spool *s)
{
	size_t n = 0;
	int ret;

	if (!s->nfiles)
		return 0;
	if (s->fd >= 0) {
		ret = spool_flush(p, s);
		if (ret < 0)
			return ret;
	}

	/* Nodes are unique per file; a name counts only if it still leads to
	 * its node (a later member may have replaced it or its directory). */
	qsort(s->files, s->nfiles, sizeof(*s->files), file_node_cmp);
	for (size_t i = 0; i < s->nnames; i++) {
		const struct spool_name *nm = &s->names[i];
		struct spool_file key = { .node = nm->node }, *f;
		uint32_t node;

		f = bsearch(&key, s->files, s->nfiles, sizeof(*s->files), file_node_cmp);
		if (!f)
			continue; /* a hard link to something not spooled */
		if (cfs_builder_find_path(p->b, s->paths + nm->path, &node) < 0 || node != nm->node)
			continue;
		if (f->name == SIZE_MAX || dfs_cmp(s->paths + nm->path, s->paths + f->name) < 0)
			f->name = nm->path;
		f->rank = CFS_MIN(f->rank, cfs_pack_prof_rank(p->prof, s->paths + nm->path));
	}
	for (size_t i = 0; i < s->nfiles; i++)
		if (s->files[i].name != SIZE_MAX)
			s->files[n++] = s->files[i];
	s->nfiles = n;
	if (n > 1)
		qsort_r(s->files, n, sizeof(*s->files), file_name_cmp, s->paths);

	for (size_t i = 0; i < n; i++) {
		ret = spool_feed_file(p, s, &s->files[i]);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* Streams a large file's data to the chunker. */
static int entry_stream(struct cfs_pack_ctx *p, struct archive *ar, const char *src, const char *path,
			uint32_t node, uint64_t size)
{
	const void *buf;
	size_t len;
	la_int64_t off;
	int r, ret;

	ret = cfs_chunker_file_begin(p->ch, node, size);
	if (ret < 0)
		return cfs_pack_fail(p, ret, "%s: %s", path, cfs_strerror(ret));
	for (;;) {
		r = archive_read_data_block(ar, &buf, &len, &off);
		if (r == ARCHIVE_EOF)
			break;
		if (r == ARCHIVE_WARN) {
			cfs_warn("%s: %s: %s", src, path, archive_error_string(ar));
		} else if (r != ARCHIVE_OK) {
			return cfs_pack_fail(p, -EIO, "%s: %s: %s", src, path,
					     archive_error_string(ar));
		}
		if (off < 0 || (uint64_t)off > size || len > size - (uint64_t)off)
			return cfs_pack_fail(p, -EINVAL, "%s: %s: data outside the file's size",
					     src, path);
		ret = cfs_pack_data(p, path, (uint64_t)off, buf, len);
		if (ret < 0)
			return ret;
	}
	ret = cfs_chunker_file_end(p->ch);
	if (ret < 0)
		return cfs_pack_fail(p, ret, "%s: %s", path, cfs_strerror(ret));
	return 0;
}

/* Spools a small file's data, its holes kept, for spool_feed(). */
static int entry_spool(struct cfs_pack_ctx *p, struct spool *sp, struct archive *ar, const char *src,
		       const char *raw, const char *path, uint32_t node, uint64_t size)
{
	struct spool_file f = { .node = node, .size = size, .seg = sp->nsegs, .name = SIZE_MAX,
				.rank = UINT32_MAX };
	uint64_t next = 0;
	const void *buf;
	size_t len;
	la_int64_t off;
	int r, ret;

	for (;;) {
		r = archive_read_data_block(ar, &buf, &len, &off);
		if (r == ARCHIVE_EOF)
			break;
		if (r == ARCHIVE_WARN) {
			cfs_warn("%s: %s: %s", src, raw, archive_error_string(ar));
		} else if (r != ARCHIVE_OK) {
			return cfs_pack_fail(p, -EIO, "%s: %s: %s", src, raw,
					     archive_error_string(ar));
		}
		if (off < 0 || (uint64_t)off > size || len > size - (uint64_t)off)
			return cfs_pack_fail(p, -EINVAL, "%s: %s: data outside the file's size",
					     src, raw);
		if (!len)
			continue;
		/* Checked now, as the chunker would check it when fed. */
		if ((uint64_t)off < next)
			return cfs_pack_fail(p, -EINVAL, "%s: %s: overlapping or unordered data",
					     src, raw);
		if (f.nseg && sp->segs[sp->nsegs - 1].off + sp->segs[sp->nsegs - 1].len ==
				      (uint64_t)off) {
			sp->segs[sp->nsegs - 1].len += len;
		} else {
			if (vec_grow((void **)&sp->segs, &sp->segs_cap, sp->nsegs,
				     sizeof(*sp->segs)) < 0)
				return cfs_pack_fail(p, -ENOMEM, "%s: %s", raw,
						     cfs_strerror(-ENOMEM));
			sp->segs[sp->nsegs++] = (struct spool_seg){ (uint64_t)off, len, sp->end };
			f.nseg++;
		}
		ret = spool_write(p, sp, buf, len);
		if (ret < 0)
			return ret;
		next = (uint64_t)off + len;
		p->bytes_in += len;
	}
	if (vec_grow((void **)&sp->files, &sp->files_cap, sp->nfiles, sizeof(*sp->files)) < 0)
		return cfs_pack_fail(p, -ENOMEM, "%s: %s", raw, cfs_strerror(-ENOMEM));
	ret = spool_name(p, sp, path, node);
	if (ret < 0)
		return ret;
	sp->files[sp->nfiles++] = f;
	return 0;
}

static int entry_data(struct cfs_pack_ctx *p, struct spool *sp, struct archive *ar, const char *src,
		      const char *raw, const char *path, uint32_t node, uint64_t size)
{
	int ret;

	if (size < p->small_max)
		ret = entry_spool(p, sp, ar, src, raw, path, node, size);
	else
		ret = entry_stream(p, ar, src, raw, node, size);
	if (ret < 0)
		return ret;
	p->files++;
	return 0;
}

static int do_entry(struct cfs_pack_ctx *p, struct spool *sp, struct archive *ar,
		    struct archive_entry *e, const char *src, const char *raw, const char *path)
{
	const char *hl = archive_entry_hardlink(e), *target;
	char tpath[PATH_MAX];
	struct cfs_attr a;
	uint32_t node;
	int ret;

	if (hl) {
		ret = norm_path(hl, tpath);
		if (ret < 0)
			return path_error(p, hl, ret);
		if (!*path || !*tpath)
			return cfs_pack_fail(p, -EINVAL, "%s: hard link to or of the root", raw);
		ret = cfs_builder_link_path(p->b, path, tpath);
		/* a layer's link to a file of a lower layer */
		if (ret == -ENOENT && p->in_layer)
			return cfs_pack_layer_link(p, path, tpath);
		if (ret == -ENOENT)
			return cfs_pack_fail(p, ret, "%s: hard link to a missing file: %s", raw, hl);
		if (ret < 0)
			return cfs_pack_fail(p, ret, "%s: hard link to %s: %s", raw, hl,
					     cfs_strerror(ret));
		/* The new name may come first in the builder's order. */
		ret = cfs_builder_find_path(p->b, path, &node);
		if (ret < 0)
			return cfs_pack_fail(p, ret, "%s: %s", raw, cfs_strerror(ret));
		return sp->nfiles ? spool_name(p, sp, path, node) : 0;
	}

	ret = entry_attr(p, e, raw, &a);
	if (ret < 0)
		return ret;
	switch (a.mode & S_IFMT) {
	case S_IFDIR:
	case S_IFREG:
	case S_IFLNK:
	case S_IFCHR:
	case S_IFBLK:
	case S_IFIFO:
	case S_IFSOCK:
		break;
	default:
		cfs_warn("%s: %s: skipped: unsupported entry type 0%o", src, raw, a.mode & S_IFMT);
		return 0;
	}

	if (!*path) {
		/* "." or "/": the root's own attributes. */
		if (!S_ISDIR(a.mode)) {
			cfs_warn("%s: %s: skipped: the root must be a directory", src, raw);
			return 0;
		}
		node = CFS_NODE_ROOT;
		ret = cfs_builder_set_attr(p->b, node, &a);
	} else {
		ret = cfs_builder_add_path(p->b, path, &a, &node);
	}
	if (ret < 0)
		return cfs_pack_fail(p, ret, "%s: %s", raw, cfs_strerror(ret));
	ret = entry_xattrs(p, e, raw, node);
	if (ret < 0)
		return ret;

	switch (a.mode & S_IFMT) {
	case S_IFDIR:
		p->dirs++;
		return 0;
	case S_IFREG:
		return entry_data(p, sp, ar, src, raw, path, node, a.size);
	case S_IFLNK:
		target = archive_entry_symlink(e);
		if (!target)
			return cfs_pack_fail(p, -EINVAL, "%s: symlink without a target", raw);
		ret = cfs_builder_set_symlink(p->b, node, target, strlen(target));
		if (ret < 0)
			return cfs_pack_fail(p, ret, "%s: symlink: %s", raw, cfs_strerror(ret));
		p->other++;
		return 0;
	default:
		p->other++;
		return 0;
	}
}

/* libarchive converts pax names (UTF-8) to the current locale and, where
 * it cannot (non-ASCII names in the C locale, names that are not UTF-8),
 * keeps the raw bytes and says so.  The raw bytes are what we want. */
static bool conversion_notice(struct archive *ar, struct archive_entry *e)
{
	const char *msg = archive_error_string(ar);

	return msg && archive_entry_pathname(e) && strstr(msg, " can't be converted from ") &&
	       strstr(msg, " to current locale");
}

/* OCI layer rules for an entry whose name is a whiteout (".wh." first):
 * 1 when it was one (applied, or ignored as the rules say), 0 when not. */
static int layer_whiteout(struct cfs_pack_ctx *p, const char *src, const char *raw, char *path)
{
	char *slash = strrchr(path, '/');
	const char *dir = slash ? path : "", *base = slash ? slash + 1 : path;
	int ret;

	if (strncmp(base, ".wh.", 4))
		return 0;
	if (slash)
		*slash = '\0';
	if (!strcmp(base, ".wh..wh..opq"))
		ret = cfs_builder_opaque(p->b, dir);
	else if (!strncmp(base, ".wh..wh.", 8))
		ret = 0; /* reserved for the runtime's own use: not part of the image */
	else if (!base[4])
		return cfs_pack_fail(p, -EINVAL, "%s: %s: a whiteout that names nothing", src, raw);
	else
		ret = cfs_builder_whiteout(p->b, dir, base + 4, strlen(base + 4));
	if (ret == -EINVAL)
		return cfs_pack_fail(p, ret, "%s: %s: bad whiteout name", src, raw);
	if (ret == -ENOTDIR)
		return cfs_pack_fail(p, ret, "%s: %s: a whiteout through a symlink", src, raw);
	if (ret < 0)
		return cfs_pack_fail(p, ret, "%s: %s: %s", src, raw, cfs_strerror(ret));
	return 1;
}

struct cfs_pack_tar {
	struct cfs_pack_ctx *p;
	struct spool sp;
	bool layers;
};

int cfs_pack_tar_begin(struct cfs_pack_ctx *p, bool layers, struct cfs_pack_tar **out)
{
	struct cfs_pack_tar *t = calloc(1, sizeof(*t));

	if (!t)
		return cfs_pack_fail(p, -ENOMEM, "tar: %s", cfs_strerror(-ENOMEM));
	t->p = p;
	t->sp.fd = -1;
	t->layers = layers;
	*out = t;
	return 0;
}

int cfs_pack_tar_end(struct cfs_pack_tar *t, bool feed)
{
	int ret = 0;

	if (!t)
		return 0;
	if (feed)
		ret = spool_feed(t->p, &t->sp);
	/* The layers, each fed at its end, make the image now. */
	if (t->layers && feed && ret == 0)
		ret = cfs_pack_layers_done(t->p);
	if (t->layers)
		cfs_pack_layers_free(t->p);
	spool_free(&t->sp);
	free(t);
	return ret;
}

/* A layer's bytes, for libarchive.  Writers that stop right after the
 * last member's data, without its padding to the 512-byte block and the
 * two zero blocks of the end marker (`umoci insert`), write what Go's
 * archive/tar reads to the end, and so umoci and podman: when the stream
 * ends inside the padding of the member just read, the missing zeros are
 * supplied here, and libarchive meets the end at a block boundary, which
 * it takes as the end.  A member whose data is cut short still fails: the
 * zeros are only ever those past its data. */
struct layer_read {
	cfs_pack_read_fn rd;
	void *ctx;
	uint64_t at;          /* bytes rd has given */
	bool eof;
	uint64_t pad_from, pad_to; /* the current member's padding, if any */
};

static const uint8_t zero_block[512];

static la_ssize_t layer_read_cb(struct archive *ar, void *ctx, const void **buf)
{
	struct layer_read *lr = ctx;
	ssize_t n;

	if (lr->eof)
		return 0;
	n = lr->rd(lr->ctx, buf);
	if (n < 0) {
		archive_set_error(ar, (int)-n, "%s", cfs_strerror((int)n));
		return -1;
	}
	if (n > 0) {
		lr->at += (uint64_t)n;
		return n;
	}
	lr->eof = true;
	if (lr->at < lr->pad_from || lr->at >= lr->pad_to)
		return 0;
	*buf = zero_block;
	return (la_ssize_t)(lr->pad_to - lr->at);
}

/* After a header: where the padding of a regular member's data lies in
 * the stream (a sparse member's stored size is not its size: none). */
static void layer_member(struct layer_read *lr, struct archive *ar, struct archive_entry *e)
{
	la_int64_t at = archive_filter_bytes(ar, -1), size = archive_entry_size(e);

	lr->pad_from = lr->pad_to = 0;
	if (!S_ISREG(archive_entry_mode(e)) || archive_entry_hardlink(e) ||
	    archive_entry_sparse_count(e) > 0 || at < 0 || size <= 0 || size % 512 == 0)
		return;
	lr->pad_from = (uint64_t)at + (uint64_t)size;
	lr->pad_to = (uint64_t)at + ((uint64_t)size + 511) / 512 * 512;
}

/* Reads the entries of an opened archive into the tree; lr is the layer's
 * reader, NULL for the tar source. */
static int tar_entries(struct cfs_pack_tar *t, struct archive *ar, const char *src,
		       struct layer_read *lr)
{
	struct cfs_pack_ctx *p = t->p;
	struct archive_entry *e;
	char path[PATH_MAX];
	uint64_t n = 0;
	int r, ret = 0;

	for (;;) {
		const char *raw;

		r = archive_read_next_header(ar, &e);
		if (r == ARCHIVE_EOF)
			break;
		if (r == ARCHIVE_WARN) {
			if (!conversion_notice(ar, e))
				cfs_warn("%s: %s", src, archive_error_string(ar));
		} else if (r != ARCHIVE_OK) {
			return cfs_pack_fail(p, -EIO, "%s: %s", src,
					     archive_error_string(ar) ? archive_error_string(ar) :
									"read error");
		}
		if (lr)
			layer_member(lr, ar, e);
		if (++n > TAR_MAX_ENTRIES)
			return cfs_pack_fail(p, -EFBIG, "%s: more than %llu entries", src,
					     TAR_MAX_ENTRIES);
		/* The name's bytes as stored, whatever their encoding. */
		raw = archive_entry_pathname(e);
		if (!raw) {
			cfs_warn("%s: entry %llu: skipped: no usable name", src,
				 (unsigned long long)n);
			continue;
		}
		ret = norm_path(raw, path);
		if (ret < 0) {
			/* path_error() names the entry; the source, for a layer. */
			if (ret == -EXDEV)
				return cfs_pack_fail(p, -EINVAL, "%s: path escapes the image: %s",
						     src, raw);
			return path_error(p, raw, ret);
		}
		if (t->layers) {
			ret = layer_whiteout(p, src, raw, path);
			if (ret < 0)
				return ret;
			if (ret)
				continue;
		}
		ret = do_entry(p, &t->sp, ar, e, src, raw, path);
		if (ret < 0)
			return ret;
	}
	if (n == 0 && !t->layers)
		cfs_warn("%s: empty archive", src);
	return 0;
}

int cfs_pack_tar_layer(struct cfs_pack_tar *t, cfs_pack_read_fn rd, void *ctx, const char *src)
{
	struct layer_read lr = { .rd = rd, .ctx = ctx };
	struct archive *ar;
	int ret;

	/* The layer into a builder of its own, its small files fed at its
	 * end, so that its chunks are its own (pack_layers.c). */
	ret = cfs_pack_layer_begin(t->p);
	if (ret < 0)
		return ret;
	ar = archive_read_new();
	if (!ar) {
		ret = cfs_pack_fail(t->p, -ENOMEM, "%s: %s", src, cfs_strerror(-ENOMEM));
		goto out;
	}
	/* The caller decompresses (it hashes both sides): the tar family only. */
	archive_read_support_format_tar(ar);
	archive_read_support_format_gnutar(ar);
	if (archive_read_open(ar, &lr, NULL, layer_read_cb, NULL) != ARCHIVE_OK)
		ret = cfs_pack_fail(t->p, -EIO, "%s: %s", src, archive_error_string(ar));
	else
		ret = tar_entries(t, ar, src, &lr);
	archive_read_free(ar);
	if (ret == 0)
		ret = spool_feed(t->p, &t->sp);
	spool_free(&t->sp);
	t->sp = (struct spool){ .fd = -1 };
out:
	return cfs_pack_layer_end(t->p) ?: ret;
}

/* A tar archive, plain or compressed: read from fd, or from src opened
 * here when fd is -1. */
static int pack_tar(struct cfs_pack_ctx *p, const char *src, int fd)
{
	struct cfs_pack_tar *t = NULL;
	struct archive *ar = NULL;
	int own = -1, ret;

	if (fd < 0) {
		own = fd = open(src, O_RDONLY | O_CLOEXEC | O_NOCTTY);
		if (fd < 0)
			return cfs_pack_fail(p, -errno, "%s: %s", src, strerror(errno));
	}
	ret = cfs_pack_tar_begin(p, false, &t);
	if (ret < 0)
		goto out;
	ar = archive_read_new();
	if (!ar) {
		ret = cfs_pack_fail(p, -ENOMEM, "%s: %s", src, cfs_strerror(-ENOMEM));
		goto out;
	}
	/* Compression filters backed by libraries only (not "all", which may
	 * run external programs), and the tar family only. */
	archive_read_support_filter_gzip(ar);
	archive_read_support_filter_bzip2(ar);
	archive_read_support_filter_xz(ar);
	archive_read_support_filter_lzma(ar);
	archive_read_support_filter_zstd(ar);
	archive_read_support_filter_lz4(ar);
	archive_read_support_format_tar(ar);
	archive_read_support_format_gnutar(ar);
	if (archive_read_open_fd(ar, fd, TAR_BLOCK_SIZE) != ARCHIVE_OK) {
		ret = cfs_pack_fail(p, -EIO, "%s: %s", src, archive_error_string(ar));
		goto out;
	}
	ret = tar_entries(t, ar, src, NULL);
out:
	archive_read_free(ar);
	ret = cfs_pack_tar_end(t, ret == 0) ?: ret;
	if (own >= 0)
		close(own);
	return ret;
}

const struct cfs_pack_source cfs_pack_source_tar = {
	.name = "tar archive",
	.pack = pack_tar,
};
