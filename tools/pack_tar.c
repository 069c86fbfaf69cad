/* SPDX-License-Identifier: MIT */
/*
 * Tar source for cfs-pack, through libarchive's read side only: nothing is
 * ever extracted, so a hostile archive can at most make a strange image,
 * never touch the filesystem.  Names are checked here ("..") as well as
 * by the builder, to give a clear message.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <archive.h>
#include <archive_entry.h>

#include "builder.h"
#include "chunker.h"
#include "format.h"
#include "util.h"

#include "pack.h"

#define TAR_MAX_ENTRIES 10000000ull
#define TAR_BLOCK_SIZE (1u << 20)

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

static int path_error(struct cfs_pack *p, const char *name, int err)
{
	if (err == -EXDEV)
		return cfs_pack_fail(p, -EINVAL, "path escapes the image: %s", name);
	return cfs_pack_fail(p, err, "%s: %s", name, cfs_strerror(err));
}

static int entry_attr(struct cfs_pack *p, struct archive_entry *e, const char *path,
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

static int entry_xattrs(struct cfs_pack *p, struct archive_entry *e, const char *path,
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

static int entry_data(struct cfs_pack *p, struct archive *ar, const char *src, const char *path,
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
	p->files++;
	return 0;
}

static int do_entry(struct cfs_pack *p, struct archive *ar, struct archive_entry *e,
		    const char *src, const char *raw, const char *path)
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
		if (ret == -ENOENT)
			return cfs_pack_fail(p, ret, "%s: hard link to a missing file: %s", raw, hl);
		if (ret < 0)
			return cfs_pack_fail(p, ret, "%s: hard link to %s: %s", raw, hl,
					     cfs_strerror(ret));
		return 0;
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
		return entry_data(p, ar, src, raw, node, a.size);
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

int cfs_pack_tar(struct cfs_pack *p, int fd, const char *src)
{
	struct archive_entry *e;
	struct archive *ar;
	char path[PATH_MAX];
	uint64_t n = 0;
	int r, ret = 0;

	ar = archive_read_new();
	if (!ar)
		return cfs_pack_fail(p, -ENOMEM, "%s: %s", src, cfs_strerror(-ENOMEM));
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

	for (;;) {
		const char *raw;

		r = archive_read_next_header(ar, &e);
		if (r == ARCHIVE_EOF)
			break;
		if (r == ARCHIVE_WARN) {
			cfs_warn("%s: %s", src, archive_error_string(ar));
		} else if (r != ARCHIVE_OK) {
			ret = cfs_pack_fail(p, -EIO, "%s: %s", src,
					    archive_error_string(ar) ? archive_error_string(ar) :
								       "read error");
			goto out;
		}
		if (++n > TAR_MAX_ENTRIES) {
			ret = cfs_pack_fail(p, -EFBIG, "%s: more than %llu entries", src,
					    TAR_MAX_ENTRIES);
			goto out;
		}
		raw = archive_entry_pathname(e);
		if (!raw) {
			cfs_warn("%s: entry %llu: skipped: no usable name", src,
				 (unsigned long long)n);
			continue;
		}
		ret = norm_path(raw, path);
		if (ret < 0) {
			path_error(p, raw, ret);
			goto out;
		}
		ret = do_entry(p, ar, e, src, raw, path);
		if (ret < 0)
			goto out;
	}
	if (n == 0)
		cfs_warn("%s: empty archive", src);
out:
	archive_read_free(ar);
	return ret;
}
