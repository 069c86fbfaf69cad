/* SPDX-License-Identifier: MIT */
/*
 * cfs-ls STORE IMAGE [PATH]: lists an image's index, depth first in name
 * order, one line per entry:
 *
 *   <mode> <nlink> <uid> <gid> <size or major,minor> <mtime sec.nsec> <path> [-> target]
 *
 * Paths and targets escape '\n', '\\' and non-printable bytes (\xHH) so
 * that every entry is exactly one line.  Reads only the index object.
 *
 * cfs-ls --info STORE IMAGE prints the index header instead, one
 * "key value" line each, the prefetch list's length and the image config
 * on one line included (which read those objects too).  cfs-ls --config STORE IMAGE prints the image
 * config the image was packed with (an OCI image's config JSON), as it was.
 * Over https:// it verifies with $CURL_CA_BUNDLE or $SSL_CERT_FILE when set.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "cache.h"
#include "digest.h"
#include "fetch.h"
#include "format.h"
#include "image.h"
#include "index.h"
#include "store.h"
#include "util.h"

#define PROG "cfs-ls"

static void put_escaped(const char *s, size_t n, FILE *f)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '\n')
			fputs("\\n", f);
		else if (c == '\\')
			fputs("\\\\", f);
		else if (c < 0x20 || c >= 0x7f)
			fprintf(f, "\\x%02x", c);
		else
			putc(c, f);
	}
}

static void mode_string(uint32_t mode, char out[11])
{
	static const char rwx[] = "rwxrwxrwx";
	char t;

	switch (mode & S_IFMT) {
	case S_IFDIR: t = 'd'; break;
	case S_IFLNK: t = 'l'; break;
	case S_IFCHR: t = 'c'; break;
	case S_IFBLK: t = 'b'; break;
	case S_IFIFO: t = 'p'; break;
	case S_IFSOCK: t = 's'; break;
	case S_IFREG: t = '-'; break;
	default: t = '?'; break;
	}
	out[0] = t;
	for (int i = 0; i < 9; i++)
		out[1 + i] = (mode & (0400u >> i)) ? rwx[i] : '-';
	if (mode & S_ISUID)
		out[3] = (mode & S_IXUSR) ? 's' : 'S';
	if (mode & S_ISGID)
		out[6] = (mode & S_IXGRP) ? 's' : 'S';
	if (mode & S_ISVTX)
		out[9] = (mode & S_IXOTH) ? 't' : 'T';
	out[10] = '\0';
}

static int print_entry(const struct cfs_index *idx, uint64_t ino, const char *path, size_t plen)
{
	struct cfs_inode in;
	char mode[11];
	int ret;

	ret = cfs_index_inode(idx, ino, &in);
	if (ret < 0)
		return ret;
	mode_string(in.mode, mode);
	printf("%s %u %u %u ", mode, in.nlink, in.uid, in.gid);
	if (S_ISCHR(in.mode) || S_ISBLK(in.mode))
		printf("%u,%u", major(in.rdev), minor(in.rdev));
	else
		printf("%llu", (unsigned long long)in.size);
	printf(" %lld.%09u ", (long long)in.mtime_sec, in.mtime_nsec);
	put_escaped(path, plen, stdout);
	if (S_ISLNK(in.mode)) {
		const char *target;
		size_t tlen;

		ret = cfs_index_readlink(idx, ino, &target, &tlen);
		if (ret < 0)
			return ret;
		fputs(" -> ", stdout);
		put_escaped(target, tlen, stdout);
	}
	putchar('\n');
	return 0;
}

struct frame {
	uint64_t ino, pos;
	size_t plen;
};

/* Depth first with an explicit stack: a deep tree cannot overflow ours. */
static int list_tree(const struct cfs_index *idx, uint64_t top, const char *start)
{
	struct frame *stack = NULL;
	size_t depth = 0, stack_cap = 0, plen = strlen(start), pcap = plen + 256;
	char *path = malloc(pcap);
	struct cfs_inode in;
	int ret;

	if (!path)
		return -ENOMEM;
	memcpy(path, start, plen + 1);
	ret = print_entry(idx, top, path, plen);
	if (ret < 0)
		goto out;
	ret = cfs_index_inode(idx, top, &in);
	if (ret < 0 || !S_ISDIR(in.mode))
		goto out;
	stack_cap = 64;
	stack = malloc(stack_cap * sizeof(*stack));
	if (!stack) {
		ret = -ENOMEM;
		goto out;
	}
	stack[depth++] = (struct frame){ top, 0, plen };

	while (depth) {
		struct frame *f = &stack[depth - 1];
		struct cfs_dirent de;
		size_t base = f->plen, need;

		ret = cfs_index_dirent(idx, f->ino, f->pos++, &de);
		if (ret < 0)
			goto out;
		if (ret == 0) {
			depth--;
			continue;
		}
		need = base + 1 + de.name_len + 1;
		if (need > pcap) {
			char *np = realloc(path, pcap = CFS_MAX(need, 2 * pcap));
			if (!np) {
				ret = -ENOMEM;
				goto out;
			}
			path = np;
		}
		plen = base;
		if (!plen || path[plen - 1] != '/')
			path[plen++] = '/';
		memcpy(path + plen, de.name, de.name_len);
		plen += de.name_len;
		path[plen] = '\0';
		ret = print_entry(idx, de.ino, path, plen);
		if (ret < 0)
			goto out;
		if (de.type == DT_DIR) {
			if (depth == stack_cap) {
				struct frame *ns = realloc(stack, 2 * stack_cap * sizeof(*stack));
				if (!ns) {
					ret = -ENOMEM;
					goto out;
				}
				stack = ns;
				stack_cap *= 2;
			}
			stack[depth++] = (struct frame){ de.ino, 0, plen };
		}
	}
	ret = 0;
out:
	free(stack);
	free(path);
	return ret;
}

/* --config: the stored image config, byte for byte. */
static int print_config(struct cfs_image *img, const char *image)
{
	void *buf;
	size_t len;
	int ret;

	ret = cfs_image_config(img, &buf, &len);
	if (ret < 0) {
		fprintf(stderr, PROG ": %s: %s\n", image,
			ret == -ENOENT ? "no image config (packed from a directory or tar?)" :
					 cfs_strerror(ret));
		return ret;
	}
	ret = fwrite(buf, 1, len, stdout) == len ? 0 : -EIO;
	free(buf);
	return ret;
}

static int print_info(struct cfs_image *img, const char *ref)
{
	const struct cfs_index *idx = cfs_image_index(img);
	struct cfs_index_info info;
	uint32_t *list = NULL;
	size_t n = 0;
	cfs_digest d;
	char pref[CFS_REF_STRLEN];
	int ret;

	uint64_t config_size;

	cfs_index_info(idx, &info);
	printf("image %s\nversion %u\nchunk_size %u\ninodes %llu\nchunks %llu\n"
	       "file_bytes %llu\nindex_size %llu\n", ref, info.version, info.chunk_size,
	       (unsigned long long)info.inode_count, (unsigned long long)info.chunk_count,
	       (unsigned long long)info.total_file_bytes, (unsigned long long)info.index_size);
	if (cfs_index_config(idx, &d, &config_size) == 0) {
		void *cfg;
		size_t len;

		cfs_digest_ref(&d, pref);
		printf("config_digest %s\nconfig_size %llu\n", pref, (unsigned long long)config_size);
		ret = cfs_image_config(img, &cfg, &len);
		if (ret < 0) {
			fprintf(stderr, PROG ": image config %s: %s\n", pref, cfs_strerror(ret));
			return ret;
		}
		/* On one line: a raw line break in JSON is only ever whitespace. */
		for (size_t i = 0; i < len; i++)
			if (((char *)cfg)[i] == '\n' || ((char *)cfg)[i] == '\r')
				((char *)cfg)[i] = ' ';
		printf("config %.*s\n", (int)len, (char *)cfg);
		free(cfg);
	} else {
		printf("config_digest none\nconfig_size 0\n");
	}
	if (cfs_index_prefetch(idx, &d) < 0) {
		printf("prefetch none\nprefetch_chunks 0\n");
		return 0;
	}
	cfs_digest_ref(&d, pref);
	printf("prefetch %s\n", pref);
	ret = cfs_image_prefetch_list(img, &list, &n);
	if (ret < 0) {
		fprintf(stderr, PROG ": prefetch list %s: %s\n", pref, cfs_strerror(ret));
		return ret;
	}
	free(list);
	printf("prefetch_chunks %zu\n", n);
	return 0;
}

int main(int argc, char **argv)
{
	struct cfs_cache_opts co = { 0 }; /* memory only: ls reads no file data */
	struct cfs_fetch_opts fopts = { 0 };
	struct cfs_store_opts sopts = { .fetch = &fopts };
	struct cfs_store *st = NULL;
	struct cfs_cache *cache = NULL;
	struct cfs_image *img = NULL;
	const struct cfs_index *idx;
	const char *store_loc, *image, *path;
	char *start = NULL, *ca_file = NULL, ref[CFS_REF_STRLEN];
	cfs_digest dg;
	uint64_t ino;
	bool info = false, config = false;
	int ret, rc = 1;

	if (argc > 1 && !strcmp(argv[1], "--info")) {
		info = true;
		argv++;
		argc--;
	} else if (argc > 1 && !strcmp(argv[1], "--config")) {
		config = true;
		argv++;
		argc--;
	}
	if (argc < 3 || argc > 4 - (info || config) || argv[1][0] == '-') {
		fprintf(stderr, "usage: " PROG " STORE IMAGE [PATH]\n"
			"       " PROG " --info STORE IMAGE\n"
			"       " PROG " --config STORE IMAGE\n");
		return 2;
	}
	store_loc = argv[1];
	image = argv[2];
	path = argc == 4 ? argv[3] : "/";
	cfs_log_setup(PROG, CFS_LOG_WARN, stderr);

	/* The CA bundle of the environment, as cfs-mount and cfs-pack use it. */
	ret = cfs_fetch_ca_resolve(NULL, &ca_file);
	if (ret < 0) {
		fprintf(stderr, PROG ": CA bundle: %s\n", cfs_strerror(ret));
		goto out;
	}
	fopts.ca_file = ca_file;
	ret = cfs_store_open_opts(store_loc, 0, &sopts, &st);
	if (ret < 0) {
		fprintf(stderr, PROG ": %s: %s\n", store_loc, cfs_strerror(ret));
		goto out;
	}
	ret = cfs_cache_new(&co, &cache);
	if (ret < 0) {
		fprintf(stderr, PROG ": cache: %s\n", cfs_strerror(ret));
		goto out;
	}
	/* Resolve first, as cfs-mount does, so that -ENOENT from the open
	 * below can only mean the index object is missing. */
	ret = cfs_store_resolve(st, image, &dg);
	if (ret == -ENXIO) {
		fprintf(stderr, PROG ": %s: not a cfs store (no cfs-store marker there)\n", store_loc);
		goto out;
	} else if (ret < 0) {
		fprintf(stderr, PROG ": %s: %s\n", image,
			ret == -ENOENT ? "no such tag in the store" : cfs_strerror(ret));
		goto out;
	}
	cfs_digest_ref(&dg, ref);
	ret = cfs_image_open(st, cache, ref, &img);
	if (ret == -ENXIO) {
		fprintf(stderr, PROG ": %s: not a cfs store (no cfs-store marker there)\n", store_loc);
		goto out;
	} else if (ret < 0) {
		fprintf(stderr, PROG ": %s: index: %s\n", image,
			ret == -ENOENT ? "index object missing from the store" : cfs_strerror(ret));
		goto out;
	}
	if (info || config) {
		if ((info ? print_info(img, ref) : print_config(img, image)) < 0)
			goto out;
		goto flush;
	}
	idx = cfs_image_index(img);
	ret = cfs_index_lookup_path(idx, path, &ino);
	if (ret < 0) {
		fprintf(stderr, PROG ": %s: %s\n", path, cfs_strerror(ret));
		goto out;
	}
	/* Paths print absolute within the image: "/", "/etc/passwd". */
	start = malloc(strlen(path) + 2);
	if (!start) {
		fprintf(stderr, PROG ": %s\n", cfs_strerror(-ENOMEM));
		goto out;
	}
	{
		size_t o = 0;
		const char *s = path;

		start[o++] = '/';
		while (*s) {
			const char *c = s;
			size_t n;

			while (*s && *s != '/')
				s++;
			n = (size_t)(s - c);
			while (*s == '/')
				s++;
			if (!n || (n == 1 && *c == '.'))
				continue;
			if (o > 1)
				start[o++] = '/';
			memcpy(start + o, c, n);
			o += n;
		}
		start[o] = '\0';
	}
	ret = list_tree(idx, ino, start);
	if (ret < 0) {
		fprintf(stderr, PROG ": %s: %s\n", image, cfs_strerror(ret));
		goto out;
	}
flush:
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, PROG ": stdout: %s\n", strerror(errno));
		goto out;
	}
	rc = 0;
out:
	free(start);
	cfs_image_free(img);
	cfs_cache_free(cache);
	cfs_store_free(st);
	free(ca_file);
	return rc;
}
