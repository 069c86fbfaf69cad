/* SPDX-License-Identifier: MIT */
/*
 * The libfuse command line of a mount: libfuse takes its mount options as
 * one comma list, which the -o parser (main.c) and the daemon's start-up
 * (daemon.c) both add to; here, below both, so that neither calls the
 * other.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mount_i.h"

int cfs_mount_opt_append(char **list, const char *opt, size_t len)
{
	size_t old = *list ? strlen(*list) : 0;
	char *p = realloc(*list, old + len + 2);

	if (!p)
		return -ENOMEM;
	if (old)
		p[old++] = ',';
	memcpy(p + old, opt, len);
	p[old + len] = '\0';
	*list = p;
	return 0;
}

/* Appends s to the option list with ',' and '\' escaped, as libfuse's
 * option parser expects. */
static int opt_append_escaped(char **list, const char *prefix, const char *s)
{
	size_t n = strlen(prefix) + 2 * strlen(s) + 1;
	char *buf = malloc(n), *p;
	int ret;

	if (!buf)
		return -ENOMEM;
	p = stpcpy(buf, prefix);
	for (; *s; s++) {
		if (*s == ',' || *s == '\\')
			*p++ = '\\';
		*p++ = *s;
	}
	*p = '\0';
	ret = cfs_mount_opt_append(list, buf, (size_t)(p - buf));
	free(buf);
	return ret;
}

int cfs_mount_fuse_args(const struct cfs_mount_args *a, const char *store_abs, size_t max_read,
			struct fuse_args *args)
{
	char *opts = NULL, mr[32];
	int ret = -ENOMEM;

	if (fuse_opt_add_arg(args, PROG) < 0)
		return -ENOMEM;
	if (a->debug && fuse_opt_add_arg(args, "-d") < 0)
		return -ENOMEM;
	/* A layer store is read-only too, but must see CREATE and RMDIR, which
	 * the VFS refuses on a read-only mount before they reach it
	 * (layerstore.c). */
	if ((!a->layer_store && cfs_mount_opt_append(&opts, "ro", 2) < 0) ||
	    opt_append_escaped(&opts, "fsname=cfs:", store_abs) < 0 ||
	    (a->layer_store ? cfs_mount_opt_append(&opts, "subtype=cfs-layers", 18) :
			      cfs_mount_opt_append(&opts, "subtype=cfs", 11)) < 0)
		goto out;
	/* With other users let in, let the kernel check permissions. */
	if (a->allow_other && !a->default_permissions &&
	    cfs_mount_opt_append(&opts, "default_permissions", 19) < 0)
		goto out;
	/* Spliced replies must fit the pipes (fs/splice.c); the user's own
	 * -o max_read, after it, wins. */
	if (max_read && max_read < (1u << 20)) {
		int n = snprintf(mr, sizeof(mr), "max_read=%zu", max_read);

		if (cfs_mount_opt_append(&opts, mr, (size_t)n) < 0)
			goto out;
	}
	if (a->fuse_opts && cfs_mount_opt_append(&opts, a->fuse_opts, strlen(a->fuse_opts)) < 0)
		goto out;
	if (fuse_opt_add_arg(args, "-o") < 0 || fuse_opt_add_arg(args, opts) < 0)
		goto out;
	ret = 0;
out:
	free(opts);
	return ret;
}

/* An absolute version of path (which need not exist): the daemon changes
 * to / when it detaches. */
char *cfs_mount_abs_path(const char *path)
{
	char cwd[PATH_MAX];
	char *out;

	if (path[0] == '/' || strstr(path, "://"))
		return strdup(path);
	if (!getcwd(cwd, sizeof(cwd)))
		return NULL;
	if (asprintf(&out, "%s/%s", cwd, path) < 0)
		return NULL;
	return out;
}

/* A store argument with each member of a list ("A,B,...") absolute: the
 * daemon leaves the working directory. */
char *cfs_mount_abs_store(const char *loc)
{
	char *out = NULL, *one, *joined;
	const char *p = loc;

	for (;;) {
		size_t n = strcspn(p, ",");
		char *member = strndup(p, n);

		one = member ? cfs_mount_abs_path(member) : NULL;
		free(member);
		if (!one || asprintf(&joined, "%s%s%s", out ? out : "", out ? "," : "", one) < 0) {
			free(one);
			free(out);
			return NULL;
		}
		free(one);
		free(out);
		out = joined;
		if (!p[n])
			return out;
		p += n + 1;
	}
}

/* The binary installed at the path this process was started from (an
 * upgrade replaces that file, and the name is what ps and pgrep show). */
char *cfs_mount_self_exe(void)
{
	char buf[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
	const char *del = " (deleted)";

	if (n <= 0)
		return NULL;
	buf[n] = '\0';
	if ((size_t)n > strlen(del) && !strcmp(buf + n - strlen(del), del))
		buf[n - strlen(del)] = '\0';
	return strdup(buf);
}
