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
 * "key value" line each, the prefetch list's length, the image config on
 * one line and where cfs-pack found the image (origins/, origin.h)
 * included (which read those too).  cfs-ls --config STORE IMAGE prints the
 * image config the image was packed with (an OCI image's config JSON), as
 * it was.
 * The store and trust options are cfs-mount's (lib/image/open.h).
 */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "digest.h"
#include "format.h"
#include "image.h"
#include "open.h"
#include "index.h"
#include "layer.h"
#include "origin.h"
#include "profile.h"
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

/* Layer i of the image, by its blob's digest, and what its record says
 * (layer.h): "layer I BLOB image REF diff_id D diff_size N size N
 * compression C", or "layer I BLOB none" when the store has no record
 * ("unknown" and a line on stderr when it is malformed). */
static void print_layer(struct cfs_store *st, size_t i, const cfs_digest *blob)
{
	char ref[CFS_REF_STRLEN], img[CFS_REF_STRLEN], id[CFS_REF_STRLEN];
	struct cfs_layer_rec r;
	void *buf = NULL;
	size_t len = 0;
	int ret;

	cfs_digest_ref(blob, ref);
	ret = cfs_store_image_file_get(st, CFS_LAYER_RECORD, blob, CFS_LAYER_REC_MAX, &buf, &len);
	if (ret == 0)
		ret = cfs_layer_rec_parse(buf, len, &r);
	free(buf);
	if (ret == -ENOENT || ret == -EROFS) {
		printf("layer %zu %s none\n", i + 1, ref);
		return;
	}
	if (ret < 0) {
		fprintf(stderr, PROG ": layer %zu's record: %s\n", i + 1, cfs_strerror(ret));
		printf("layer %zu %s unknown\n", i + 1, ref);
		return;
	}
	cfs_digest_ref(&r.image, img);
	cfs_digest_ref(&r.diff_id, id);
	printf("layer %zu %s image %s diff_id %s diff_size %llu size %llu compression %s\n", i + 1,
	       ref, img, id, (unsigned long long)r.diff_size, (unsigned long long)r.size,
	       cfs_layer_comp_name(r.comp));
}

/* Where cfs-pack found the image (origin.h), when it said: informational,
 * so a missing or malformed file is a line of output, never a failure. */
static void print_origin(struct cfs_store *st, const cfs_digest *image)
{
	struct cfs_origin o;
	char ref[CFS_REF_STRLEN];
	void *buf = NULL;
	size_t len = 0;
	int ret;

	ret = cfs_store_image_file_get(st, CFS_IMAGE_ORIGIN, image, CFS_ORIGIN_MAX, &buf, &len);
	if (ret == 0)
		ret = cfs_origin_parse(buf, len, &o);
	free(buf);
	if (ret == -ENOENT || ret == -EROFS) {
		printf("origin none\n");
		return;
	}
	if (ret < 0) {
		fprintf(stderr, PROG ": the image's origin: %s\n", cfs_strerror(ret));
		printf("origin unknown\n");
		return;
	}
	/* The source as the file escapes it: one line, whatever it holds. */
	printf("origin ");
	cfs_profile_put_escaped(stdout, o.source, strlen(o.source));
	cfs_digest_ref(&o.manifest, ref);
	printf("\norigin_manifest %s\n", ref);
	if (o.has_top) {
		cfs_digest_ref(&o.top, ref);
		printf("origin_top %s\n", ref);
	}
	for (size_t i = 0; i < o.nlayers; i++)
		print_layer(st, i, &o.layers[i]);
	cfs_origin_release(&o);
}

static int print_info(struct cfs_store *st, struct cfs_image *img, const cfs_digest *digest,
		      const char *ref)
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
	printf("hint_triggers %u\nhint_lists %u\nhint_entries %u\n", info.hint_triggers,
	       info.hint_lists, info.hint_entries);
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
	print_origin(st, digest);
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

static void usage(FILE *f)
{
	fprintf(f, "usage: " PROG " [options] STORE IMAGE [PATH]\n"
		"       " PROG " --info [options] STORE IMAGE\n"
		"       " PROG " --config [options] STORE IMAGE\n"
		"\n"
		CFS_OPEN_TRUST_USAGE
		"\n"
		CFS_OPEN_STORE_USAGE);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "info", no_argument, NULL, 'i' },
		{ "config", no_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		CFS_OPEN_STORE_OPTIONS,
		CFS_OPEN_TRUST_OPTION,
		{ NULL, 0, NULL, 0 },
	};
	struct cfs_open_opts oo;
	struct cfs_opened op = { 0 };
	const struct cfs_index *idx;
	const char *store_loc, *image, *path;
	char *start = NULL, msg[512];
	uint64_t ino;
	bool info = false, config = false;
	int c, ret, rc = 1;

	/* ls reads no file data: a memory cache, whatever the options. */
	cfs_open_opts_init(&oo);
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		if (c == 'i') {
			info = true;
		} else if (c == 'c') {
			config = true;
		} else if (c == 'h') {
			usage(stdout);
			rc = 0;
			goto out;
		} else if ((ret = cfs_open_opt(&oo, c, optarg, msg, sizeof(msg))) < 0) {
			fprintf(stderr, PROG ": %s\n", msg);
			rc = 2;
			goto out;
		} else if (ret == 0) {
			usage(stderr);
			rc = 2;
			goto out;
		}
	}
	if (argc - optind < 2 || argc - optind > 3 - (info || config) || (info && config)) {
		usage(stderr);
		rc = 2;
		goto out;
	}
	store_loc = argv[optind];
	image = argv[optind + 1];
	path = argc - optind == 3 ? argv[optind + 2] : "/";
	cfs_log_setup(PROG, CFS_LOG_WARN, stderr);

	ret = cfs_open_image(&oo, store_loc, image, NULL, &op, msg, sizeof(msg));
	if (ret < 0) {
		fprintf(stderr, PROG ": %s\n", msg);
		goto out;
	}
	if (info || config) {
		ret = info ? print_info(op.store, op.img, &op.digest, op.ref)
			   : print_config(op.img, image);
		if (ret < 0)
			goto out;
		goto flush;
	}
	idx = cfs_image_index(op.img);
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
		const char *p = path, *name;
		size_t o = 0, n;

		start[o++] = '/';
		while ((n = cfs_path_next(&p, &name))) {
			if (o > 1)
				start[o++] = '/';
			memcpy(start + o, name, n);
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
	cfs_open_close(&op);
	cfs_open_opts_release(&oo);
	return rc;
}
