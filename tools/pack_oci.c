/* SPDX-License-Identifier: MIT */
/*
 * Image sources for cfs-pack: what every image source shares, and the two
 * that read local files, an OCI image layout (oci:DIR[:REF]) and the
 * archive `docker save` / `podman save` / `skopeo copy docker-archive:`
 * write (docker-archive:FILE[:REF]).  The registry (docker://) is
 * pack_registry.c, over the same logic.
 *
 * The image is picked (a REF, the host's platform or --platform through
 * nested indexes), every blob read is checked against its descriptor's
 * digest and size, and the layers are applied in order through pack_tar.c
 * with the OCI whiteout rules, each decompressed and hashed on both sides
 * by pack_oci_layer.c.  The image config goes to the pipeline, which
 * stores it with the image.  Where the blobs come from is a table of
 * functions (struct cfs_pack_oci_blobs): here pread on a layout's files
 * or an archive's members.
 *
 * A layer is verified as it streams, so a layer that fails its digest has
 * already fed chunks to the store; they are content-addressed and
 * harmless, and no index or tag is written for the image.
 *
 * A docker-archive is a plain tar read in place: its members are located
 * by a small bounds-checked header parser (names, sizes, symlinks between
 * members) and read with pread, never extracted.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <jansson.h>

#include "digest.h"
#include "format.h"
#include "util.h"

#include "pack.h"
#include "pack_oci_i.h"

#define OCI_DEPTH_MAX 4               /* nested indexes */
#define OCI_LAYERS_MAX 1000u
#define DAR_MEMBERS_MAX 100000u
#define DAR_NAME_MAX 4096u
#define DAR_LINK_HOPS 8

/* The short name, in this file. */
#define fail cfs_pack_oci_fail
#define lfail(lc, ...) cfs_pack_oci_fail(&(lc)->o, __VA_ARGS__)

/* A member of a docker-archive. */
struct dar_member {
	char *name;
	char *link;     /* symlink or hard link target, else NULL */
	uint64_t off, size;
};

/* A layout or an archive: o first, so that the blobs' functions find the
 * rest. */
struct local {
	struct cfs_pack_oci o;
	int dirfd;      /* the layout */
	int fd;         /* the archive */
	uint64_t fd_size;
	struct dar_member *mem;
	size_t nmem;
};

/* A byte range holding a blob, and the read position of a layer in it. */
struct blob {
	struct local *lc;
	int fd;
	bool own;
	uint64_t off, len, pos;
};

int cfs_pack_oci_fail(struct cfs_pack_oci *o, int err, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return cfs_pack_fail(o->p, err, "%s: %s", o->loc, msg);
}

static void blob_close(struct blob *b)
{
	if (b->own && b->fd >= 0)
		close(b->fd);
	b->fd = -1;
}

/* ---- docker-archive members ---- */

/* A tar number: octal digits (spaces and NULs around them), or base-256
 * when the first byte has its top bit set.  -1 when malformed. */
static int64_t tar_num(const uint8_t *f, size_t n)
{
	uint64_t v = 0;
	size_t i = 0;

	if (f[0] & 0x80) {
		if (f[0] != 0x80)
			return -1; /* negative, or too large to care */
		for (i = 1; i < n; i++) {
			if (v >> 55)
				return -1;
			v = v << 8 | f[i];
		}
		return (int64_t)v;
	}
	while (i < n && (f[i] == ' ' || f[i] == '\0'))
		i++;
	for (; i < n && f[i] >= '0' && f[i] <= '7'; i++) {
		if (v >> 60)
			return -1;
		v = v << 3 | (uint64_t)(f[i] - '0');
	}
	for (; i < n; i++)
		if (f[i] != ' ' && f[i] != '\0')
			return -1;
	return (int64_t)v;
}

static char *field_dup(const uint8_t *f, size_t n)
{
	return strndup((const char *)f, strnlen((const char *)f, n));
}

/* Pulls "path" and "linkpath" out of a pax extended header. */
static int pax_parse(const char *d, size_t n, char **path, char **link)
{
	size_t i = 0;

	while (i < n) {
		size_t len = 0, j = i, klen;
		const char *kv, *eq;
		char **dst = NULL;

		while (j < n && d[j] >= '0' && d[j] <= '9' && len < n)
			len = len * 10 + (size_t)(d[j++] - '0');
		if (j >= n || d[j] != ' ' || len <= j - i + 1 || len > n - i || d[i + len - 1] != '\n')
			return -EINVAL;
		kv = d + j + 1;
		klen = (size_t)(d + i + len - 1 - kv);
		eq = memchr(kv, '=', klen);
		if (!eq)
			return -EINVAL;
		if ((size_t)(eq - kv) == 4 && !memcmp(kv, "path", 4))
			dst = path;
		else if ((size_t)(eq - kv) == 8 && !memcmp(kv, "linkpath", 8))
			dst = link;
		if (dst) {
			free(*dst);
			*dst = strndup(eq + 1, (size_t)(kv + klen - eq - 1));
			if (!*dst)
				return -ENOMEM;
		}
		i += len;
	}
	return 0;
}

/* "./a//b/" -> "a/b" in place. */
static void member_norm(char *s)
{
	char *r = s, *w = s;

	while (*r) {
		while (*r == '/')
			r++;
		if (r[0] == '.' && (r[1] == '/' || !r[1])) {
			r++;
			continue;
		}
		if (w != s && *r)
			*w++ = '/';
		while (*r && *r != '/')
			*w++ = *r++;
	}
	*w = '\0';
}

static int dar_read(struct local *o, void *buf, size_t n, uint64_t off)
{
	int ret = cfs_pread_full(o->fd, buf, n, (off_t)off);

	if (ret == -ENODATA || ret == 0)
		return ret == 0 ? 0 : lfail(o, -EUCLEAN, "truncated at byte %llu",
					   (unsigned long long)off);
	return ret < 0 ? lfail(o, ret, "read: %s", cfs_strerror(ret)) : 0;
}

static int dar_members(struct local *o)
{
	char *long_name = NULL, *long_link = NULL, *pax_path = NULL, *pax_link = NULL;
	uint8_t h[512];
	uint64_t pos = 0;
	int ret = 0;

	for (;;) {
		unsigned sum = 0, i;
		int64_t chk, size;
		char type, *name = NULL, *link = NULL;
		bool zero = true;

		if (pos + 512 > o->fd_size) {
			ret = lfail(o, -EUCLEAN, "truncated tar (no end marker)");
			break;
		}
		ret = dar_read(o, h, sizeof(h), pos);
		if (ret < 0)
			break;
		for (i = 0; i < 512; i++)
			zero &= h[i] == 0;
		if (zero)
			break; /* the end marker */
		for (i = 0; i < 512; i++)
			sum += (i >= 148 && i < 156) ? ' ' : h[i];
		chk = tar_num(h + 148, 8);
		size = tar_num(h + 124, 12);
		if (chk < 0 || (unsigned)chk != sum) {
			ret = lfail(o, -EUCLEAN, "not a tar archive (bad header at byte %llu)",
				   (unsigned long long)pos);
			break;
		}
		if (size < 0 || (uint64_t)size > o->fd_size - pos - 512) {
			ret = lfail(o, -EUCLEAN, "tar member at byte %llu runs past the end",
				   (unsigned long long)pos);
			break;
		}
		type = (char)h[156];
		if (type == 'L' || type == 'K' || type == 'x') {
			char *d, **dst = type == 'L' ? &long_name : &long_link;

			if (size > (int64_t)(type == 'x' ? 1u << 20 : DAR_NAME_MAX)) {
				ret = lfail(o, -EUCLEAN, "tar extension header too large at byte %llu",
					   (unsigned long long)pos);
				break;
			}
			d = malloc((size_t)size + 1);
			if (!d) {
				ret = lfail(o, -ENOMEM, "%s", cfs_strerror(-ENOMEM));
				break;
			}
			ret = dar_read(o, d, (size_t)size, pos + 512);
			d[size] = '\0';
			if (ret == 0 && type == 'x') {
				ret = pax_parse(d, (size_t)size, &pax_path, &pax_link);
				if (ret < 0)
					ret = lfail(o, -EUCLEAN, "bad pax header at byte %llu",
						   (unsigned long long)pos);
				free(d);
			} else if (ret == 0) {
				free(*dst);
				*dst = strndup(d, strnlen(d, (size_t)size));
				free(d);
			} else {
				free(d);
			}
			if (ret < 0)
				break;
			pos += 512 + CFS_ALIGN_UP((uint64_t)size, 512);
			continue;
		}
		if (long_name || pax_path) {
			name = pax_path ? pax_path : long_name;
			if (name == pax_path)
				free(long_name);
			else
				free(pax_path);
			long_name = pax_path = NULL;
		} else if (!memcmp(h + 257, "ustar", 5) && h[345]) {
			char *pre = field_dup(h + 345, 155), *nm = field_dup(h, 100);

			if (pre && nm && asprintf(&name, "%s/%s", pre, nm) < 0)
				name = NULL;
			free(pre);
			free(nm);
		} else {
			name = field_dup(h, 100);
		}
		if (type == '1' || type == '2') {
			link = pax_link ? pax_link : long_link ? long_link : field_dup(h + 157, 100);
			if (link != pax_link)
				free(pax_link);
			if (link != long_link)
				free(long_link);
			pax_link = long_link = NULL;
		} else {
			free(pax_link);
			free(long_link);
			pax_link = long_link = NULL;
		}
		if (!name || ((type == '1' || type == '2') && !link)) {
			free(name);
			free(link);
			ret = lfail(o, -ENOMEM, "%s", cfs_strerror(-ENOMEM));
			break;
		}
		if (type == '0' || type == '\0' || type == '7' || type == '1' || type == '2') {
			struct dar_member *m;

			if (o->nmem >= DAR_MEMBERS_MAX) {
				free(name);
				free(link);
				ret = lfail(o, -EFBIG, "more than %u members", DAR_MEMBERS_MAX);
				break;
			}
			m = realloc(o->mem, (o->nmem + 1) * sizeof(*o->mem));
			if (!m) {
				free(name);
				free(link);
				ret = lfail(o, -ENOMEM, "%s", cfs_strerror(-ENOMEM));
				break;
			}
			o->mem = m;
			member_norm(name);
			o->mem[o->nmem++] = (struct dar_member){ name, link, pos + 512,
								 (uint64_t)size };
		} else {
			free(name);
			free(link);
		}
		pos += 512 + CFS_ALIGN_UP((uint64_t)size, 512);
	}
	free(long_name);
	free(long_link);
	free(pax_path);
	free(pax_link);
	return ret;
}

/* The member a name leads to, through symlinks (relative to the link's
 * directory) and hard links (relative to the root). */
static const struct dar_member *dar_find(struct local *o, const char *want)
{
	char name[DAR_NAME_MAX + 1];
	int hops = 0;

	if (strlen(want) > DAR_NAME_MAX)
		return NULL;
	strcpy(name, want);
	member_norm(name);
	for (;;) {
		const struct dar_member *m = NULL;
		char next[2 * DAR_NAME_MAX + 2], *s, *w;
		int n;

		for (size_t i = o->nmem; i-- > 0;) { /* a later member wins, as on extraction */
			if (!strcmp(o->mem[i].name, name)) {
				m = &o->mem[i];
				break;
			}
		}
		if (!m || !m->link)
			return m;
		if (++hops > DAR_LINK_HOPS)
			return NULL;
		if (m->link[0] == '/') {
			n = snprintf(next, sizeof(next), "%s", m->link);
		} else {
			const char *slash = strrchr(m->name, '/');
			int dl = slash ? (int)(slash - m->name) : 0;

			n = snprintf(next, sizeof(next), "%.*s%s%s", dl, m->name, dl ? "/" : "",
				     m->link);
		}
		if (n < 0 || (size_t)n >= sizeof(next))
			return NULL;
		/* Resolve "..": never above the archive's root. */
		w = name;
		s = next;
		*w = '\0';
		while (*s) {
			size_t len;

			while (*s == '/')
				s++;
			len = strcspn(s, "/");
			if (!len)
				break;
			if (len == 2 && s[0] == '.' && s[1] == '.') {
				char *up = strrchr(name, '/');

				if (!*name)
					return NULL;
				if (up)
					*up = '\0';
				else
					*name = '\0';
				w = name + strlen(name);
			} else if (!(len == 1 && s[0] == '.')) {
				if ((size_t)(w - name) + len + 2 > sizeof(name))
					return NULL;
				if (w != name)
					*w++ = '/';
				memcpy(w, s, len);
				w += len;
				*w = '\0';
			}
			s += len;
		}
	}
}

/* The digest a docker-archive member's name gives, "<hex>.json",
 * "<hex>/layer.tar" or "blobs/sha256/<hex>", if any. */
static bool name_digest(const char *name, cfs_digest *d)
{
	const char *base = strrchr(name, '/');
	char hex[CFS_DIGEST_HEX_LEN + 1];

	base = base ? base + 1 : name;
	if (!strncmp(name, "blobs/sha256/", 13) && strlen(base) == CFS_DIGEST_HEX_LEN)
		return cfs_digest_parse(base, true, d) == 0;
	if (strlen(base) == CFS_DIGEST_HEX_LEN + 5 && !strcmp(base + CFS_DIGEST_HEX_LEN, ".json")) {
		memcpy(hex, base, CFS_DIGEST_HEX_LEN);
		hex[CFS_DIGEST_HEX_LEN] = '\0';
		return cfs_digest_parse(hex, true, d) == 0;
	}
	return false;
}

/* ---- local blobs ---- */

static int blob_by_digest(struct local *o, const struct cfs_pack_oci_desc *dsc, struct blob *b)
{
	char hex[CFS_DIGEST_HEX_LEN + 1], path[16 + CFS_DIGEST_HEX_LEN];
	struct stat sb;

	cfs_digest_hex(&dsc->d, hex);
	snprintf(path, sizeof(path), "blobs/sha256/%s", hex);
	b->lc = o;
	if (o->fd >= 0) {
		const struct dar_member *m = dar_find(o, path);

		if (!m)
			return lfail(o, -ENOENT, "blob %s missing", dsc->digest);
		*b = (struct blob){ .lc = o, .fd = o->fd, .off = m->off, .len = m->size };
		return 0;
	}
	b->fd = openat(o->dirfd, path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (b->fd < 0)
		return lfail(o, -errno, "blob %s: %s", dsc->digest,
			     errno == ENOENT ? "missing from the layout" : strerror(errno));
	b->own = true;
	b->off = 0;
	if (fstat(b->fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
		blob_close(b);
		return lfail(o, -EINVAL, "blob %s: not a regular file", dsc->digest);
	}
	b->len = (uint64_t)sb.st_size;
	return 0;
}

/* A whole small blob, NUL-terminated for the JSON parser. */
static int blob_slurp(struct local *o, const struct blob *b, size_t max, const char *what,
		      char **out, size_t *len)
{
	char *buf;
	int ret;

	if (b->len > max)
		return lfail(o, -EFBIG, "%s: %llu bytes, more than %zu", what,
			     (unsigned long long)b->len, max);
	buf = malloc((size_t)b->len + 1);
	if (!buf)
		return lfail(o, -ENOMEM, "%s: %s", what, cfs_strerror(-ENOMEM));
	ret = cfs_pread_full(b->fd, buf, (size_t)b->len, (off_t)b->off);
	if (ret < 0) {
		free(buf);
		return lfail(o, ret == -ENODATA ? -EUCLEAN : ret, "%s: %s", what,
			     ret == -ENODATA ? "truncated" : cfs_strerror(ret));
	}
	buf[b->len] = '\0';
	*out = buf;
	*len = (size_t)b->len;
	return 0;
}

static int local_get(struct cfs_pack_oci *o, const struct cfs_pack_oci_desc *d, bool manifest,
		     size_t max, const char *what, char **buf, size_t *len)
{
	struct local *lc = (struct local *)o;
	struct blob b = { .fd = -1 };
	int ret;

	(void)manifest;
	ret = blob_by_digest(lc, d, &b);
	if (ret < 0)
		return ret;
	/* A wrong size is told before a large blob is read. */
	if (b.len != d->size)
		ret = fail(o, -EBADMSG, "%s %s: %llu bytes, the descriptor says %llu", what,
			   d->digest, (unsigned long long)b.len, (unsigned long long)d->size);
	else
		ret = blob_slurp(lc, &b, max, what, buf, len);
	blob_close(&b);
	return ret;
}

/* cfs_pack_oci_read_fn over a blob's byte range. */
static ssize_t local_read(void *ctx, void *buf, size_t len)
{
	struct blob *b = ctx;
	size_t n = (size_t)CFS_MIN((uint64_t)len, b->len - b->pos);
	int ret;

	if (!n)
		return 0;
	ret = cfs_pread_full(b->fd, buf, n, (off_t)(b->off + b->pos));
	if (ret < 0)
		return lfail(b->lc, ret == -ENODATA ? -EUCLEAN : ret, "blob read: %s",
			     ret == -ENODATA ? "truncated" : cfs_strerror(ret));
	b->pos += n;
	return (ssize_t)n;
}

static void local_layer_close(struct cfs_pack_oci *o, void *ctx)
{
	(void)o;
	if (ctx)
		blob_close(ctx);
	free(ctx);
}

/* Layer i: a descriptor d (a layout), or a member path l (a
 * docker-archive, where only a blobs/sha256/<hex> path gives the
 * compressed digest; <hex>/layer.tar of the old layout is a layer id). */
static int local_layer_open(struct cfs_pack_oci *o, json_t *l, const struct cfs_pack_oci_desc *d,
			    size_t i, cfs_pack_oci_read_fn *rd, void **ctx, cfs_digest *cd,
			    bool *have_cd)
{
	struct local *lc = (struct local *)o;
	struct blob *b = calloc(1, sizeof(*b));
	int ret;

	if (!b)
		return fail(o, -ENOMEM, "%s", cfs_strerror(-ENOMEM));
	b->fd = -1;
	b->lc = lc;
	if (!d) {
		const char *path = json_string_value(l);
		const struct dar_member *m = path ? dar_find(lc, path) : NULL;

		if (!m) {
			free(b);
			return fail(o, -ENOENT, "layer %zu (%.200s) missing from the archive", i + 1,
				    path ? path : "?");
		}
		*have_cd = !strncmp(path, "blobs/", 6) && name_digest(path, cd);
		b->fd = lc->fd;
		b->off = m->off;
		b->len = m->size;
	} else {
		ret = blob_by_digest(lc, d, b);
		if (ret < 0) {
			free(b);
			return ret;
		}
		if (b->len != d->size) {
			ret = fail(o, -EBADMSG, "layer %zu (%.19s): %llu bytes, the manifest says %llu",
				   i + 1, d->digest, (unsigned long long)b->len,
				   (unsigned long long)d->size);
			local_layer_close(o, b);
			return ret;
		}
		*cd = d->d;
		*have_cd = true;
	}
	*rd = local_read;
	*ctx = b;
	return 0;
}

static const struct cfs_pack_oci_blobs local_blobs = {
	.get = local_get,
	.layer_open = local_layer_open,
	.layer_close = local_layer_close,
};

/* ---- what every image source shares ---- */

static int json_parse(struct cfs_pack_oci *o, const char *buf, size_t len, const char *what,
		      json_t **out)
{
	json_error_t err;

	*out = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &err);
	if (!*out)
		return fail(o, -EUCLEAN, "%s: bad JSON: %s (line %d)", what, err.text, err.line);
	return 0;
}

/* A whole blob is what d says: its size, its digest. */
static int blob_verify(struct cfs_pack_oci *o, const struct cfs_pack_oci_desc *d, const char *buf,
		       size_t len, const char *what)
{
	cfs_digest got;

	if (len != d->size)
		return fail(o, -EBADMSG, "%s %s: %zu bytes, the descriptor says %llu", what,
			    d->digest, len, (unsigned long long)d->size);
	cfs_sha256(buf, len, &got);
	if (!cfs_digest_eq(&got, &d->d))
		return fail(o, -EBADMSG, "%s %s: digest mismatch", what, d->digest);
	return 0;
}

/* The small blob d names, fetched, verified and parsed. */
static int get_json(struct cfs_pack_oci *o, const struct cfs_pack_oci_desc *d, bool manifest,
		    const char *what, json_t **out)
{
	char *buf = NULL;
	size_t len = 0;
	int ret;

	ret = o->blobs->get(o, d, manifest, CFS_OCI_JSON_MAX, what, &buf, &len);
	if (ret == 0)
		ret = blob_verify(o, d, buf, len, what);
	if (ret == 0)
		ret = json_parse(o, buf, len, what, out);
	free(buf);
	return ret;
}

static const char *jstr(json_t *obj, const char *key)
{
	json_t *v = json_is_object(obj) ? json_object_get(obj, key) : NULL;

	return json_is_string(v) ? json_string_value(v) : NULL;
}

static int desc_parse(struct cfs_pack_oci *o, json_t *j, const char *what, struct cfs_pack_oci_desc *out)
{
	const char *dg = jstr(j, "digest");
	json_t *size = json_is_object(j) ? json_object_get(j, "size") : NULL;

	if (!dg || !json_is_integer(size) || json_integer_value(size) < 0)
		return fail(o, -EUCLEAN, "%s: a descriptor without digest or size", what);
	if (cfs_digest_parse(dg, false, &out->d) < 0)
		return fail(o, -EPROTONOSUPPORT, "%s: digest %.80s: only sha256 digests are supported",
			    what, dg);
	cfs_digest_ref(&out->d, out->digest);
	out->media = jstr(j, "mediaType") ? jstr(j, "mediaType") : "";
	out->size = (uint64_t)json_integer_value(size);
	out->obj = j;
	return 0;
}

static void plat_host(struct cfs_pack_oci_plat *p)
{
	static const struct { const char *m, *arch, *variant; } map[] = {
		{ "x86_64", "amd64", "" },   { "aarch64", "arm64", "" }, { "armv7l", "arm", "v7" },
		{ "armv6l", "arm", "v6" },   { "i686", "386", "" },      { "i386", "386", "" },
		{ "ppc64le", "ppc64le", "" }, { "s390x", "s390x", "" },  { "riscv64", "riscv64", "" },
	};
	struct utsname u;

	snprintf(p->os, sizeof(p->os), "linux");
	snprintf(p->arch, sizeof(p->arch), "unknown");
	p->variant[0] = '\0';
	if (uname(&u) < 0)
		return;
	snprintf(p->arch, sizeof(p->arch), "%.31s", u.machine);
	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
		if (!strcmp(u.machine, map[i].m)) {
			snprintf(p->arch, sizeof(p->arch), "%s", map[i].arch);
			snprintf(p->variant, sizeof(p->variant), "%s", map[i].variant);
		}
	}
}

static int plat_parse(const char *s, struct cfs_pack_oci_plat *p)
{
	const char *a = strchr(s, '/'), *v;

	if (!a || a == s || !a[1])
		return -EINVAL;
	v = strchr(a + 1, '/');
	if ((size_t)(a - s) >= sizeof(p->os) ||
	    (v ? (size_t)(v - a - 1) : strlen(a + 1)) >= sizeof(p->arch) ||
	    (v && (!v[1] || strlen(v + 1) >= sizeof(p->variant) || strchr(v + 1, '/'))))
		return -EINVAL;
	snprintf(p->os, sizeof(p->os), "%.*s", (int)(a - s), s);
	snprintf(p->arch, sizeof(p->arch), "%.*s", v ? (int)(v - a - 1) : (int)strlen(a + 1),
		 a + 1);
	snprintf(p->variant, sizeof(p->variant), "%s", v ? v + 1 : "");
	return 0;
}

/* 2: the descriptor names the wanted platform; 1: it names none (a
 * single-image layout); 0: another one. */
static int plat_match(const struct cfs_pack_oci *o, json_t *d)
{
	json_t *pl = json_object_get(d, "platform");
	const char *os, *arch, *variant;

	if (!json_is_object(pl))
		return 1;
	os = jstr(pl, "os");
	arch = jstr(pl, "architecture");
	variant = jstr(pl, "variant");
	if (!os || !arch || strcmp(os, o->want.os) || strcmp(arch, o->want.arch))
		return 0;
	/* A wanted variant must match; none wanted takes any. */
	if (o->want.variant[0] && variant && strcmp(variant, o->want.variant))
		return 0;
	return 2;
}

static bool is_index(const char *mt)
{
	return !strcmp(mt, CFS_MT_OCI_INDEX) || !strcmp(mt, CFS_MT_DOCKER_LIST);
}

static bool is_manifest(const char *mt)
{
	return !strcmp(mt, CFS_MT_OCI_MANIFEST) || !strcmp(mt, CFS_MT_DOCKER_MANIFEST);
}

static bool ref_matches(json_t *d, const char *ref)
{
	json_t *ann = json_object_get(d, "annotations");
	const char *names[] = { jstr(ann, "org.opencontainers.image.ref.name"),
				jstr(ann, "io.containerd.image.name") };

	for (size_t i = 0; i < 2; i++) {
		size_t n, r = strlen(ref);

		if (!names[i])
			continue;
		n = strlen(names[i]);
		/* "base" or a full name ending in ":base" */
		if (!strcmp(names[i], ref) || (n > r && names[i][n - r - 1] == ':' &&
					       !strcmp(names[i] + n - r, ref)))
			return true;
	}
	return false;
}

struct pick {
	struct cfs_pack_oci_desc best;
	json_t *keep;   /* holds best.obj */
	int score;      /* plat_match of best */
	int found;      /* images seen with that score */
	int others;     /* images for other platforms */
	int named;      /* entries the REF named */
};

static int pick_index(struct cfs_pack_oci *o, json_t *idx, const char *ref, int depth, struct pick *pk)
{
	json_t *ms = json_object_get(idx, "manifests"), *m;
	size_t i;
	int ret;

	if (!json_is_array(ms))
		return fail(o, -EUCLEAN, "an index without a manifests array");
	json_array_foreach(ms, i, m) {
		struct cfs_pack_oci_desc d;
		const char *kind;
		int score;

		ret = desc_parse(o, m, "index", &d);
		if (ret < 0)
			return ret;
		if (ref && !ref_matches(m, ref))
			continue;
		pk->named++;
		kind = jstr(json_object_get(m, "annotations"), "vnd.docker.reference.type");
		if (kind && !strcmp(kind, "attestation-manifest"))
			continue;
		if (!strncmp(d.media, CFS_MT_DOCKER_V1, strlen(CFS_MT_DOCKER_V1)))
			return fail(o, -EPROTONOSUPPORT, "%s: a schema 1 manifest: not supported "
				    "(convert it with skopeo copy --format v2s2)", d.digest);
		score = plat_match(o, m);
		if (!score) {
			pk->others++;
			continue;
		}
		if (is_index(d.media)) {
			json_t *sub;

			if (depth >= OCI_DEPTH_MAX)
				return fail(o, -ELOOP, "indexes nested more than %d deep",
					    OCI_DEPTH_MAX);
			ret = get_json(o, &d, true, "index", &sub);
			if (ret < 0)
				return ret;
			ret = pick_index(o, sub, NULL, depth + 1, pk);
			json_decref(sub);
			if (ret < 0)
				return ret;
			continue;
		}
		if (d.media[0] && !is_manifest(d.media))
			continue; /* not an image (an artifact, a signature) */
		if (score > pk->score) {
			pk->score = score;
			pk->found = 0;
		}
		if (score == pk->score && pk->found++ == 0) {
			json_decref(pk->keep);
			pk->keep = json_incref(m);
			pk->best = d;
		}
	}
	return 0;
}

/* The config's rootfs.diff_ids, n of them. */
static int diff_ids(struct cfs_pack_oci *o, json_t *cfg, size_t n, cfs_digest **out)
{
	json_t *rootfs = json_object_get(cfg, "rootfs"), *ids, *v;
	const char *type = jstr(rootfs, "type");
	cfs_digest *d;
	size_t i;

	ids = json_object_get(rootfs, "diff_ids");
	if (!type || strcmp(type, "layers") || !json_is_array(ids))
		return fail(o, -EUCLEAN, "image config: no rootfs.diff_ids");
	if (json_array_size(ids) != n)
		return fail(o, -EUCLEAN, "image config: %zu diff_ids for %zu layers",
			    json_array_size(ids), n);
	d = calloc(n ? n : 1, sizeof(*d));
	if (!d)
		return fail(o, -ENOMEM, "%s", cfs_strerror(-ENOMEM));
	json_array_foreach(ids, i, v) {
		if (!json_is_string(v) || cfs_digest_parse(json_string_value(v), false, &d[i]) < 0) {
			free(d);
			return fail(o, -EUCLEAN, "image config: diff_id %zu is not a sha256 digest",
				    i + 1);
		}
	}
	*out = d;
	return 0;
}


/* A layer descriptor of a manifest, with a media type that is a layer's. */
static int layer_desc(struct cfs_pack_oci *o, json_t *l, size_t i, struct cfs_pack_oci_desc *d)
{
	char what[32];
	int ret;

	snprintf(what, sizeof(what), "layer %zu", i + 1);
	ret = desc_parse(o, l, what, d);
	if (ret < 0)
		return ret;
	if (!strstr(d->media, ".layer.") && !strstr(d->media, ".rootfs."))
		return fail(o, -EPROTONOSUPPORT, "%s: media type %.100s is not a layer", what,
			    d->media[0] ? d->media : "(none)");
	return 0;
}

/* Applies the layers in order, each checked against its diff_id.  ds:
 * their descriptors, NULL when the layers are member paths (a
 * docker-archive). */
static int apply_layers(struct cfs_pack_oci *o, json_t *layers, const struct cfs_pack_oci_desc *ds,
			json_t *cfg, struct cfs_pack_tar *t)
{
	cfs_digest *ids = NULL;
	json_t *l;
	size_t i;
	int ret;

	ret = diff_ids(o, cfg, json_array_size(layers), &ids);
	if (ret < 0)
		return ret;
	json_array_foreach(layers, i, l) {
		cfs_pack_oci_read_fn rd = NULL;
		void *ctx = NULL;
		cfs_digest cd;
		bool have_cd = false;

		ret = o->blobs->layer_open(o, l, ds ? &ds[i] : NULL, i, &rd, &ctx, &cd, &have_cd);
		if (ret < 0)
			break;
		ret = cfs_pack_oci_layer(o->p, o->loc, t, i, rd, ctx, have_cd ? &cd : NULL, &ids[i]);
		o->blobs->layer_close(o, ctx);
		if (ret < 0)
			break;
	}
	free(ids);
	return ret;
}

static int layers_check(struct cfs_pack_oci *o, json_t *layers)
{
	if (!json_is_array(layers))
		return fail(o, -EUCLEAN, "manifest: no layers array");
	if (json_array_size(layers) > OCI_LAYERS_MAX)
		return fail(o, -EFBIG, "manifest: %zu layers, more than %u", json_array_size(layers),
			    OCI_LAYERS_MAX);
	return 0;
}

/* The image from its layers and its config (cfg_buf, cfg_len bytes,
 * handed to the pipeline on success, freed here otherwise). */
static int image_apply(struct cfs_pack_oci *o, json_t *layers, const struct cfs_pack_oci_desc *ds,
		       char *cfg_buf, size_t cfg_len)
{
	struct cfs_pack_tar *t = NULL;
	json_t *cfg = NULL;
	int ret;

	ret = json_parse(o, cfg_buf, cfg_len, "image config", &cfg);
	if (ret < 0)
		goto out;
	ret = cfs_pack_tar_begin(o->p, true, &t);
	if (ret < 0)
		goto out;
	ret = apply_layers(o, layers, ds, cfg, t);
	ret = cfs_pack_tar_end(t, ret == 0) ?: ret;
	if (ret < 0)
		goto out;
	cfs_pack_set_config(o->p, cfg_buf, cfg_len);
	cfg_buf = NULL;
out:
	json_decref(cfg);
	free(cfg_buf);
	return ret;
}

/* An image manifest (parsed; digest names it in messages): its config
 * and layers through o->blobs. */
static int pack_manifest(struct cfs_pack_oci *o, json_t *man, const char *digest)
{
	struct cfs_pack_oci_desc cd, *ds = NULL;
	json_t *v = json_object_get(man, "schemaVersion"), *layers, *l;
	char *cfg_buf = NULL;
	size_t cfg_len = 0, i, n;
	int ret;

	if (json_is_integer(v) && json_integer_value(v) == 1)
		return fail(o, -EPROTONOSUPPORT, "%s: a schema 1 manifest: not supported "
			    "(convert it with skopeo copy --format v2s2)", digest);
	if (!json_is_integer(v) || json_integer_value(v) != 2 ||
	    (jstr(man, "mediaType") && !is_manifest(jstr(man, "mediaType"))))
		return fail(o, -EUCLEAN, "%s: not an image manifest", digest);
	ret = desc_parse(o, json_object_get(man, "config"), "manifest config", &cd);
	if (ret < 0)
		return ret;
	layers = json_object_get(man, "layers");
	ret = layers_check(o, layers);
	if (ret < 0)
		return ret;
	n = json_array_size(layers);
	ds = calloc(n ? n : 1, sizeof(*ds));
	if (!ds)
		return fail(o, -ENOMEM, "%s", cfs_strerror(-ENOMEM));
	json_array_foreach(layers, i, l) {
		ret = layer_desc(o, l, i, &ds[i]);
		if (ret < 0)
			goto out;
	}
	if (o->blobs->layers_start) {
		ret = o->blobs->layers_start(o, ds, n);
		if (ret < 0)
			goto out;
	}
	ret = o->blobs->get(o, &cd, false, CFS_CONFIG_MAX_SIZE, "image config", &cfg_buf,
			    &cfg_len);
	if (ret == 0)
		ret = blob_verify(o, &cd, cfg_buf, cfg_len, "image config");
	if (ret < 0) {
		free(cfg_buf);
		goto out;
	}
	ret = image_apply(o, layers, ds, cfg_buf, cfg_len);
out:
	free(ds);
	return ret;
}

int cfs_pack_oci_top(struct cfs_pack_oci *o, const char *buf, size_t len, const char *media,
		     const cfs_digest *d, const char *ref)
{
	struct pick pk = { 0 };
	char digest[CFS_REF_STRLEN] = "the manifest";
	json_t *top = NULL, *man = NULL;
	int ret;

	if (d)
		cfs_digest_ref(d, digest);
	ret = json_parse(o, buf, len, d ? digest : "index.json", &top);
	if (ret < 0)
		return ret;
	if (!media || !media[0])
		media = jstr(top, "mediaType") ? jstr(top, "mediaType") :
			json_object_get(top, "manifests") ? CFS_MT_OCI_INDEX : CFS_MT_OCI_MANIFEST;
	if (!is_index(media)) {
		ret = pack_manifest(o, top, digest);
		if (ret == 0 && d)
			ret = cfs_pack_set_origin(o->p, o->loc, d, NULL);
		goto out;
	}
	ret = pick_index(o, top, ref, 0, &pk);
	if (ret < 0)
		goto out;
	if (!pk.found) {
		if (ref && !pk.named)
			ret = fail(o, -ENOENT, "no image named %s", ref);
		else
			ret = fail(o, -ENOENT, "no image for %s/%s%s%s (%d for other platforms)",
				   o->want.os, o->want.arch, o->want.variant[0] ? "/" : "",
				   o->want.variant, pk.others);
		goto out;
	}
	if (pk.found > 1) {
		ret = fail(o, -EINVAL, "%d images for %s/%s: name one (%s)", pk.found,
			   o->want.os, o->want.arch, ref || d ? "--platform" : "oci:DIR:REF");
		goto out;
	}
	ret = get_json(o, &pk.best, true, "manifest", &man);
	if (ret == 0)
		ret = pack_manifest(o, man, pk.best.digest);
	/* A layout's index.json is not content-addressed: no top then. */
	if (ret == 0)
		ret = cfs_pack_set_origin(o->p, o->loc, &pk.best.d, d);
out:
	json_decref(pk.keep);
	json_decref(man);
	json_decref(top);
	return ret;
}

int cfs_pack_oci_init(struct cfs_pack_oci *o, struct cfs_pack_ctx *p, const char *prefix,
		      const char *spec)
{
	o->p = p;
	if (asprintf(&o->loc, "%s%s", prefix, spec) < 0) {
		o->loc = NULL;
		return cfs_pack_fail(p, -ENOMEM, "%s", cfs_strerror(-ENOMEM));
	}
	if (!p->platform) {
		plat_host(&o->want);
		return 0;
	}
	if (plat_parse(p->platform, &o->want) < 0)
		return fail(o, -EINVAL, "--platform %s: want OS/ARCH[/VARIANT]", p->platform);
	return 0;
}

/* ---- the two local sources ---- */

/* The image in layout dir. */
static int layout_pack(struct local *lc, const char *dir, const char *ref)
{
	struct blob b = { .fd = -1 };
	char *buf = NULL;
	size_t len;
	int ret, fd;
	struct stat sb;

	lc->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (lc->dirfd < 0)
		return lfail(lc, -errno, "%s", strerror(errno));
	fd = openat(lc->dirfd, "oci-layout", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return lfail(lc, -EINVAL, "not an OCI image layout (no oci-layout file)");
	close(fd);
	fd = openat(lc->dirfd, "index.json", O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &sb) < 0) {
		ret = lfail(lc, -errno, "index.json: %s", strerror(errno));
		if (fd >= 0)
			close(fd);
		return ret;
	}
	b = (struct blob){ .fd = fd, .own = true, .len = (uint64_t)sb.st_size };
	ret = blob_slurp(lc, &b, CFS_OCI_JSON_MAX, "index.json", &buf, &len);
	blob_close(&b);
	if (ret < 0)
		return ret;
	ret = cfs_pack_oci_top(&lc->o, buf, len, CFS_MT_OCI_INDEX, NULL, ref);
	free(buf);
	return ret;
}

/* The image in docker-archive file: its manifest.json entry, its config
 * (checked when the member's name gives its digest), its layers. */
static int archive_pack(struct local *o, const char *file, const char *ref)
{
	const struct dar_member *m;
	json_t *man = NULL, *e, *pick = NULL;
	struct cfs_pack_oci_desc cd = { 0 };
	struct blob b;
	struct stat sb;
	uint8_t magic[4];
	char *buf = NULL, *cfg_buf = NULL;
	size_t len, i, cfg_len = 0;
	const char *cpath;
	int ret, found = 0;

	o->fd = open(file, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (o->fd < 0 || fstat(o->fd, &sb) < 0)
		return lfail(o, -errno, "%s", strerror(errno));
	if (!S_ISREG(sb.st_mode))
		return lfail(o, -EINVAL, "not a regular file");
	o->fd_size = (uint64_t)sb.st_size;
	if (o->fd_size >= 4 && cfs_pread_full(o->fd, magic, 4, 0) == 0 &&
	    ((magic[0] == 0x1f && magic[1] == 0x8b) || !memcmp(magic, "\x28\xb5\x2f\xfd", 4)))
		return lfail(o, -EINVAL, "a compressed archive: decompress it first");
	ret = dar_members(o);
	if (ret < 0)
		return ret;
	m = dar_find(o, "manifest.json");
	if (!m)
		return lfail(o, -EINVAL, "no manifest.json: not a docker-archive");
	b = (struct blob){ .fd = o->fd, .off = m->off, .len = m->size };
	ret = blob_slurp(o, &b, CFS_OCI_JSON_MAX, "manifest.json", &buf, &len);
	if (ret < 0)
		return ret;
	ret = json_parse(&o->o, buf, len, "manifest.json", &man);
	free(buf);
	if (ret < 0)
		return ret;
	if (!json_is_array(man)) {
		ret = lfail(o, -EUCLEAN, "manifest.json: not an array");
		goto out;
	}
	json_array_foreach(man, i, e) {
		json_t *tags = json_object_get(e, "RepoTags"), *tg;
		size_t k;
		bool match = !ref;

		json_array_foreach(tags, k, tg) {
			const char *s = json_string_value(tg);
			size_t n = s ? strlen(s) : 0, r = ref ? strlen(ref) : 0;

			if (ref && s && (!strcmp(s, ref) ||
					 (n > r && s[n - r - 1] == '/' && !strcmp(s + n - r, ref))))
				match = true;
		}
		if (match && found++ == 0)
			pick = e;
	}
	if (!found) {
		ret = lfail(o, -ENOENT, ref ? "no image tagged %s" : "no image in manifest.json%s",
			   ref ? ref : "");
		goto out;
	}
	if (found > 1) {
		ret = lfail(o, -EINVAL, "%d images: name one (docker-archive:FILE:NAME:TAG)", found);
		goto out;
	}
	cpath = jstr(pick, "Config");
	if (!cpath) {
		ret = lfail(o, -EUCLEAN, "manifest.json: no Config");
		goto out;
	}
	m = dar_find(o, cpath);
	if (!m) {
		ret = lfail(o, -ENOENT, "config %.200s missing from the archive", cpath);
		goto out;
	}
	b = (struct blob){ .fd = o->fd, .off = m->off, .len = m->size };
	ret = blob_slurp(o, &b, CFS_CONFIG_MAX_SIZE, "image config", &cfg_buf, &cfg_len);
	if (ret < 0)
		goto out;
	if (name_digest(cpath, &cd.d)) {
		cfs_digest_ref(&cd.d, cd.digest);
		cd.size = m->size;
		ret = blob_verify(&o->o, &cd, cfg_buf, cfg_len, "image config");
		if (ret < 0)
			goto out;
	}
	ret = layers_check(&o->o, json_object_get(pick, "Layers"));
	if (ret < 0)
		goto out;
	ret = image_apply(&o->o, json_object_get(pick, "Layers"), NULL, cfg_buf, cfg_len);
	cfg_buf = NULL;
out:
	free(cfg_buf);
	json_decref(man);
	return ret;
}

/* Both local sources: spec is the part after the prefix. */
static int pack_local(struct cfs_pack_ctx *p, const char *spec, bool docker_archive)
{
	struct local lc = { .o.blobs = &local_blobs, .dirfd = -1, .fd = -1 };
	char *path = NULL, *ref;
	struct stat sb;
	int ret;

	ret = cfs_pack_oci_init(&lc.o, p, docker_archive ? "docker-archive:" : "oci:", spec);
	if (ret < 0)
		goto out;
	path = strdup(spec);
	if (!path) {
		ret = fail(&lc.o, -ENOMEM, "%s", cfs_strerror(-ENOMEM));
		goto out;
	}
	/* PATH:REF, split at the first colon (as skopeo does) unless the
	 * whole spec names something that exists. */
	ref = NULL;
	if (stat(path, &sb) < 0 && (ref = strchr(path, ':'))) {
		*ref++ = '\0';
		if (!*ref)
			ref = NULL;
	}
	if (!*path) {
		ret = fail(&lc.o, -EINVAL, "no path given");
		goto out;
	}
	if (docker_archive)
		ret = archive_pack(&lc, path, ref);
	else
		ret = layout_pack(&lc, path, ref);
out:
	for (size_t i = 0; i < lc.nmem; i++) {
		free(lc.mem[i].name);
		free(lc.mem[i].link);
	}
	free(lc.mem);
	if (lc.dirfd >= 0)
		close(lc.dirfd);
	if (lc.fd >= 0)
		close(lc.fd);
	free(lc.o.loc);
	free(path);
	return ret;
}

/* The fd of a path source goes unused: these open what they need. */
static int pack_oci(struct cfs_pack_ctx *p, const char *spec, int fd)
{
	(void)fd;
	return pack_local(p, spec, false);
}

static int pack_docker_archive(struct cfs_pack_ctx *p, const char *spec, int fd)
{
	(void)fd;
	return pack_local(p, spec, true);
}

const struct cfs_pack_source cfs_pack_source_oci = {
	.name = "OCI image layout",
	.prefix = "oci:",
	.pack = pack_oci,
};

const struct cfs_pack_source cfs_pack_source_docker_archive = {
	.name = "docker-archive",
	.prefix = "docker-archive:",
	.pack = pack_docker_archive,
};
