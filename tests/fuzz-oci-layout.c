/* SPDX-License-Identifier: MIT */
/*
 * fuzz-oci-layout: libFuzzer target for cfs-pack's oci:DIR[:REF] source
 * (tools/pack_oci.c): index.json, nested image indexes, platform and
 * reference picking, manifests, descriptors, the image config and its
 * diff_ids, then the layers, through the real pipeline (fuzz-pack.h).
 *
 * The input is a tar of the layout.  A strict extractor of its own writes
 * it into a private directory: regular files and directories only, names
 * of [A-Za-z0-9._-] components, no "." or "..", a few levels deep, a few
 * MiB in all; every other member is skipped.
 *
 * Blobs are named by their digests, which a mutation breaks at once, so
 * the input may name them by placeholders instead: a blob stored as
 * blobs/sha256/NAME, NAME not 64 hex digits, is renamed to the digest of
 * its content, and in every file "@D:NAME@" becomes "sha256:<hex>" and
 * "@S:NAME@" its size.  A blob's placeholders are resolved before its own
 * digest is taken (up to a few levels; a cycle stays unresolved).  Blobs
 * with real digest names are left as they are, so a digest mismatch is
 * still an input.  A top-level file fuzz-ref, if any, gives the REF.
 * The platform asked for is linux/arm64/v8.
 *
 * Whatever the input, nothing may crash, hang or leak; a failure must come
 * with an error code; an accepted image must have a config and an index
 * that opens.
 */
#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz-pack.h"

#define LAYOUT_FILES_MAX 64
#define LAYOUT_BYTES_MAX (4u << 20)
#define NAME_COMP_MAX 80
#define NAME_DEPTH_MAX 4
#define TOKEN_NAME_MAX 64
#define RESOLVE_ROUNDS 8
#define BLOBS "blobs/sha256/"

struct lfile {
	char path[NAME_DEPTH_MAX * (NAME_COMP_MAX + 1)];
	uint8_t *data;
	size_t len;
	bool dir;
	bool placeholder;  /* under blobs/sha256/ without a digest name */
	bool resolved;
	char hex[CFS_DIGEST_HEX_LEN + 1];
};

struct layout {
	struct lfile f[LAYOUT_FILES_MAX];
	size_t n;
	size_t bytes;
};

static char root[64];

/* ---- the strict extractor ---- */

static bool name_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == '_' || c == '-';
}

/* "./a/b/" -> "a/b" into out, or false for a name the extractor refuses. */
static bool safe_name(const char *in, char *out, size_t size)
{
	size_t o = 0, depth = 0;

	while (in[0] == '.' && in[1] == '/')
		in += 2;
	while (*in) {
		size_t n = 0;

		while (in[n] && in[n] != '/')
			if (!name_char(in[n++]))
				return false;
		if (!n || n > NAME_COMP_MAX || (n == 1 && in[0] == '.') ||
		    (n == 2 && in[0] == '.' && in[1] == '.') || ++depth > NAME_DEPTH_MAX)
			return false;
		if (o + n + 2 > size)
			return false;
		if (o)
			out[o++] = '/';
		memcpy(out + o, in, n);
		o += n;
		in += n;
		while (*in == '/')
			in++;
	}
	out[o] = '\0';
	return o > 0;
}

static bool is_hex_digest(const char *s)
{
	size_t i;

	for (i = 0; s[i]; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return i == CFS_DIGEST_HEX_LEN;
}

static void layout_add(struct layout *l, struct archive *ar, struct archive_entry *e)
{
	mode_t type = archive_entry_filetype(e);
	const char *name = archive_entry_pathname(e);
	la_int64_t size = archive_entry_size(e);
	struct lfile *f;
	la_ssize_t n;

	if (l->n == LAYOUT_FILES_MAX || !name || (type != AE_IFREG && type != AE_IFDIR))
		return;
	f = &l->f[l->n];
	*f = (struct lfile){ .dir = type == AE_IFDIR };
	if (!safe_name(name, f->path, sizeof(f->path)))
		return;
	if (!f->dir) {
		if (size < 0 || (uint64_t)size > LAYOUT_BYTES_MAX - l->bytes)
			return;
		f->data = malloc(size ? (size_t)size : 1);
		FUZZ_ASSERT(f->data);
		n = archive_read_data(ar, f->data, (size_t)size);
		f->len = n > 0 ? (size_t)n : 0; /* a truncated member keeps what came */
		l->bytes += f->len;
		f->placeholder = !strncmp(f->path, BLOBS, strlen(BLOBS)) &&
				 !strchr(f->path + strlen(BLOBS), '/') &&
				 !is_hex_digest(f->path + strlen(BLOBS));
	}
	l->n++;
}

static void layout_read(struct layout *l, const uint8_t *data, size_t size)
{
	struct archive *ar = archive_read_new();
	struct archive_entry *e;

	FUZZ_ASSERT(ar);
	archive_read_support_format_tar(ar);
	archive_read_support_format_gnutar(ar);
	if (archive_read_open_memory(ar, data, size) == ARCHIVE_OK)
		while (archive_read_next_header(ar, &e) == ARCHIVE_OK)
			layout_add(l, ar, e);
	archive_read_free(ar);
}

/* ---- placeholders ---- */

static struct lfile *placeholder(struct layout *l, const char *name, size_t n)
{
	for (size_t i = 0; i < l->n; i++) {
		const char *b = l->f[i].path + strlen(BLOBS);

		if (l->f[i].placeholder && strlen(b) == n && !memcmp(b, name, n))
			return &l->f[i];
	}
	return NULL;
}

/* The placeholder blob the token at p names ("@D:NAME@" or "@S:NAME@",
 * *tlen its length), or NULL when there is none. */
static struct lfile *token(struct layout *l, const uint8_t *p, size_t avail, size_t *tlen)
{
	size_t n = 0;

	if (avail < 5 || p[0] != '@' || (p[1] != 'D' && p[1] != 'S') || p[2] != ':')
		return NULL;
	while (3 + n < avail && n < TOKEN_NAME_MAX && name_char((char)p[3 + n]))
		n++;
	if (!n || 3 + n >= avail || p[3 + n] != '@')
		return NULL;
	*tlen = 4 + n;
	return placeholder(l, (const char *)p + 3, n);
}

/* True when every placeholder f's content names is resolved. */
static bool ready(struct layout *l, const struct lfile *f)
{
	for (size_t i = 0; i < f->len; i++) {
		struct lfile *t;
		size_t tl;

		if ((t = token(l, f->data + i, f->len - i, &tl)) && !t->resolved)
			return false;
	}
	return true;
}

/* Replaces the tokens of resolved placeholders in f's content. */
static void substitute(struct layout *l, struct lfile *f)
{
	size_t cap = f->len + 1, o = 0;
	uint8_t *out = malloc(cap);

	FUZZ_ASSERT(out);
	for (size_t i = 0; i < f->len;) {
		char rep[CFS_REF_STRLEN + 24];
		struct lfile *t;
		size_t tl, rl;

		t = token(l, f->data + i, f->len - i, &tl);
		if (!t || !t->resolved) {
			out[o++] = f->data[i++];
			continue;
		}
		if (f->data[i + 1] == 'D')
			rl = (size_t)snprintf(rep, sizeof(rep), "sha256:%s", t->hex);
		else
			rl = (size_t)snprintf(rep, sizeof(rep), "%zu", t->len);
		if (o + rl + f->len - i > cap) {
			cap = 2 * (o + rl + f->len - i);
			out = realloc(out, cap);
			FUZZ_ASSERT(out);
		}
		memcpy(out + o, rep, rl);
		o += rl;
		i += tl;
	}
	free(f->data);
	f->data = out;
	f->len = o;
}

static void resolve(struct layout *l)
{
	cfs_digest d;

	for (int round = 0; round < RESOLVE_ROUNDS; round++) {
		bool progress = false;

		for (size_t i = 0; i < l->n; i++) {
			struct lfile *f = &l->f[i];

			if (!f->placeholder || f->resolved || !ready(l, f))
				continue;
			substitute(l, f);
			cfs_sha256(f->data, f->len, &d);
			cfs_digest_hex(&d, f->hex);
			f->resolved = progress = true;
		}
		if (!progress)
			break;
	}
	for (size_t i = 0; i < l->n; i++) {
		struct lfile *f = &l->f[i];

		if (!f->dir && !f->resolved)
			substitute(l, f);
		if (f->resolved)
			snprintf(f->path, sizeof(f->path), BLOBS "%s", f->hex);
	}
}

/* ---- the directory ---- */

/* Makes the parents of path (relative to dfd). */
static void make_parents(int dfd, const char *path)
{
	char tmp[sizeof(((struct lfile *)0)->path)];

	snprintf(tmp, sizeof(tmp), "%s", path);
	for (char *s = strchr(tmp, '/'); s; s = strchr(s + 1, '/')) {
		*s = '\0';
		mkdirat(dfd, tmp, 0755);
		*s = '/';
	}
}

static void layout_write(const struct layout *l, int dfd)
{
	for (size_t i = 0; i < l->n; i++) {
		const struct lfile *f = &l->f[i];
		int fd;

		make_parents(dfd, f->path);
		if (f->dir) {
			mkdirat(dfd, f->path, 0755);
			continue;
		}
		/* A name taken by a directory, or by a file given twice: the
		 * later member replaces a file, and a directory stays. */
		fd = openat(dfd, f->path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
		if (fd < 0)
			continue;
		FUZZ_ASSERT(f->len == 0 || cfs_write_full(fd, f->data, f->len) == 0);
		close(fd);
	}
}

static void root_remove(void)
{
	rmdir(root);
}

/* fuzz-ref's first line, when it is a usable REF. */
static bool layout_ref(const struct layout *l, char *ref, size_t size)
{
	for (size_t i = 0; i < l->n; i++) {
		const struct lfile *f = &l->f[i];
		const uint8_t *nl;
		size_t n;

		if (f->dir || strcmp(f->path, "fuzz-ref"))
			continue;
		nl = memchr(f->data, '\n', f->len);
		n = nl ? (size_t)(nl - f->data) : f->len;
		if (!n || n >= size || memchr(f->data, '\0', n))
			return false;
		memcpy(ref, f->data, n);
		ref[n] = '\0';
		return true;
	}
	return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct layout l;
	struct cfs_index *idx = NULL;
	char spec[sizeof(root) + 80], ref[64];
	int dfd;

	fuzz_pack_quiet("fuzz-oci-layout");
	if (!root[0]) {
		const char *tmp = getenv("TMPDIR");

		snprintf(root, sizeof(root), "%.40s/fuzz-oci-layout.XXXXXX",
			 tmp && *tmp ? tmp : "/tmp");
		FUZZ_ASSERT(mkdtemp(root));
		atexit(root_remove);
	}
	memset(&l, 0, sizeof(l));
	layout_read(&l, data, size);
	resolve(&l);
	dfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	FUZZ_ASSERT(dfd >= 0);
	layout_write(&l, dfd);
	close(dfd);
	if (layout_ref(&l, ref, sizeof(ref)))
		snprintf(spec, sizeof(spec), "%s:%s", root, ref);
	else
		snprintf(spec, sizeof(spec), "%s", root);

	if (fuzz_pack_run(&cfs_pack_source_oci, spec, -1, "linux/arm64/v8", &idx) == 0)
		fuzz_pack_config_check(idx);

	nftw(root, fuzz_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	for (size_t i = 0; i < l.n; i++)
		free(l.f[i].data);
	return 0;
}
