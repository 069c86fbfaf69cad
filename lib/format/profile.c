/* SPDX-License-Identifier: MIT */
/*
 * Access profiles (profile.h, docs/PROFILE.md): the recorder the daemon
 * feeds from its read path, the parser and the merge.
 *
 * The recorder's hot path is a bit test per file and per chunk touched;
 * only what is new takes the mutex, to append a small record (ino, chunk
 * number, time).  Paths are reconstructed at save time from a reverse map
 * (ino -> parent, name) built once by a walk of the tree.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "digest.h"
#include "format.h"
#include "index.h"
#include "profile.h"
#include "util.h"

#define PROFILE_HEADER "cfs-profile"
#define PROFILE_VERSION 1
#define PROFILE_LINE_MAX 65536u          /* bytes of one line, newline excluded */
#define PROFILE_RECORDS_MAX (16u << 20)
#define PROFILE_DEPTH_MAX 4096u          /* path components while walking up */

/* ---- recorder ---------------------------------------------------------- */

struct rec {
	uint64_t usec;
	uint64_t ino;
	uint64_t off;    /* chunks: where in the file the read touched it */
	uint32_t chunk;  /* chunks; CFS_CHUNK_NONE for a file record */
};

struct name {
	uint64_t parent; /* 0: not reached (yet) */
	const char *name;
	uint32_t name_len;
};

struct cfs_recorder {
	const struct cfs_index *idx;
	cfs_digest ref;
	uint64_t t0_ns;
	uint64_t ninodes, nchunks;
	_Atomic uint64_t *ino_seen;   /* bit ino - 1 */
	_Atomic uint64_t *chunk_seen; /* bit chunk */

	pthread_mutex_t lock;         /* the records */
	struct rec *recs;
	size_t n, cap;
	size_t max;                   /* records kept at most (cfs_recorder_limit) */
	atomic_bool full;             /* max reached: note() returns at once */

	pthread_mutex_t save_lock;    /* saves, and the name map they build */
	struct name *names;           /* [ino - 1], built at the first save */
};

/* True when this call set the bit; a plain load first, so that the common
 * case (already seen) never writes the cache line. */
static bool bit_claim(_Atomic uint64_t *map, uint64_t bit)
{
	_Atomic uint64_t *w = &map[bit / 64];
	uint64_t m = UINT64_C(1) << (bit % 64);

	if (atomic_load_explicit(w, memory_order_relaxed) & m)
		return false;
	return !(atomic_fetch_or_explicit(w, m, memory_order_relaxed) & m);
}

CFS_EXPORT int cfs_recorder_new(const struct cfs_index *idx, const cfs_digest *ref,
				struct cfs_recorder **out)
{
	struct cfs_index_info info;
	struct cfs_recorder *r;

	if (!idx || !out)
		return -EINVAL;
	cfs_index_info(idx, &info);
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->idx = idx;
	if (ref)
		r->ref = *ref;
	r->ninodes = info.inode_count;
	r->nchunks = info.chunk_count;
	r->ino_seen = calloc(r->ninodes / 64 + 1, sizeof(*r->ino_seen));
	r->chunk_seen = calloc(r->nchunks / 64 + 1, sizeof(*r->chunk_seen));
	if (!r->ino_seen || !r->chunk_seen) {
		free(r->ino_seen);
		free(r->chunk_seen);
		free(r);
		return -ENOMEM;
	}
	r->max = SIZE_MAX;
	pthread_mutex_init(&r->lock, NULL);
	pthread_mutex_init(&r->save_lock, NULL);
	r->t0_ns = cfs_now_ns();
	*out = r;
	return 0;
}

CFS_EXPORT void cfs_recorder_free(struct cfs_recorder *r)
{
	if (!r)
		return;
	pthread_mutex_destroy(&r->lock);
	pthread_mutex_destroy(&r->save_lock);
	free(r->names);
	free(r->recs);
	free(r->ino_seen);
	free(r->chunk_seen);
	free(r);
}

static void rec_append(struct cfs_recorder *r, uint64_t ino, uint32_t chunk, uint64_t off)
{
	pthread_mutex_lock(&r->lock);
	if (r->n >= r->max) {
		atomic_store_explicit(&r->full, true, memory_order_relaxed);
		pthread_mutex_unlock(&r->lock);
		return;
	}
	if (r->n == r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 256;
		struct rec *p = realloc(r->recs, cap * sizeof(*p));

		if (!p) {
			/* The bit is set: this one is lost, which a profile
			 * (a hint) survives. */
			pthread_mutex_unlock(&r->lock);
			cfs_warn("profile: out of memory, a record is lost");
			return;
		}
		r->recs = p;
		r->cap = cap;
	}
	/* Timed under the lock, so that file order is time order. */
	r->recs[r->n++] = (struct rec){
		.usec = (cfs_now_ns() - r->t0_ns) / 1000, .ino = ino, .off = off, .chunk = chunk,
	};
	pthread_mutex_unlock(&r->lock);
}

CFS_EXPORT void cfs_recorder_note(struct cfs_recorder *r, uint64_t ino, uint64_t off, uint64_t len)
{
	struct cfs_extent e;
	uint64_t end;
	uint32_t i;

	if (!r || ino == 0 || ino > r->ninodes ||
	    atomic_load_explicit(&r->full, memory_order_relaxed))
		return;
	if (bit_claim(r->ino_seen, ino - 1)) {
		struct cfs_inode in;

		/* Checked once: the bit stays set for what is not a file. */
		if (cfs_index_inode(r->idx, ino, &in) < 0 || !S_ISREG(in.mode))
			return;
		rec_append(r, ino, CFS_CHUNK_NONE, 0);
	}
	if (len == 0 || cfs_index_extent_find(r->idx, ino, off, &i) != 0)
		return;
	end = off + len < off ? UINT64_MAX : off + len;
	for (; cfs_index_extent(r->idx, ino, i, &e) == 1 && e.file_off < end; i++) {
		if (e.chunk == CFS_CHUNK_NONE || e.chunk >= r->nchunks)
			continue;
		if (bit_claim(r->chunk_seen, e.chunk))
			rec_append(r, ino, e.chunk, CFS_MAX(off, e.file_off));
	}
}

CFS_EXPORT void cfs_recorder_limit(struct cfs_recorder *r, size_t max)
{
	pthread_mutex_lock(&r->lock);
	r->max = max;
	atomic_store_explicit(&r->full, r->n >= max, memory_order_relaxed);
	pthread_mutex_unlock(&r->lock);
}

CFS_EXPORT size_t cfs_recorder_count(struct cfs_recorder *r)
{
	size_t n;

	pthread_mutex_lock(&r->lock);
	n = r->n;
	pthread_mutex_unlock(&r->lock);
	return n;
}

/* Pre-order walk of the tree: every inode's first name, as (parent, name).
 * Iterative, with a stack of (directory, next position). */
static int names_build(struct cfs_recorder *r)
{
	struct frame {
		uint64_t dir, pos;
	} *stack = NULL, *p;
	size_t depth = 0, cap = 0;
	struct cfs_dirent de;
	int ret = 0;

	r->names = calloc(r->ninodes, sizeof(*r->names));
	if (!r->names)
		return -ENOMEM;
	r->names[CFS_ROOT_INO - 1].parent = CFS_ROOT_INO;
	cap = 64;
	stack = malloc(cap * sizeof(*stack));
	if (!stack) {
		ret = -ENOMEM;
		goto out;
	}
	stack[depth++] = (struct frame){ CFS_ROOT_INO, 0 };
	while (depth) {
		struct name *nm;
		int k;

		p = &stack[depth - 1];
		k = cfs_index_dirent(r->idx, p->dir, p->pos++, &de);
		if (k != 1) {
			depth--;
			continue;
		}
		if (de.ino == 0 || de.ino > r->ninodes)
			continue;
		nm = &r->names[de.ino - 1];
		if (nm->parent)
			continue; /* a hard link met again: the first name stays */
		nm->parent = p->dir;
		nm->name = de.name;
		nm->name_len = (uint32_t)de.name_len;
		if (de.type != DT_DIR)
			continue;
		if (depth == cap) {
			struct frame *s = realloc(stack, 2 * cap * sizeof(*s));

			if (!s) {
				ret = -ENOMEM;
				goto out;
			}
			stack = s;
			cap *= 2;
		}
		stack[depth++] = (struct frame){ de.ino, 0 };
	}
out:
	free(stack);
	if (ret < 0) {
		free(r->names);
		r->names = NULL;
	}
	return ret;
}

CFS_EXPORT int cfs_profile_put_escaped(FILE *f, const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c < 0x21 || c > 0x7e || c == '\\') {
			if (fprintf(f, "\\x%02x", c) < 0)
				return -EIO;
		} else if (putc(c, f) == EOF) {
			return -EIO;
		}
	}
	return 0;
}

/* The escaped absolute path of ino; an inode the walk never reached (not
 * possible in a valid index) is written as "/?ino=N". */
static int put_path(FILE *f, const struct cfs_recorder *r, uint64_t ino)
{
	uint64_t chain[PROFILE_DEPTH_MAX];
	size_t n = 0;

	while (ino != CFS_ROOT_INO && n < PROFILE_DEPTH_MAX) {
		if (ino == 0 || ino > r->ninodes || !r->names[ino - 1].parent)
			return fprintf(f, "/?ino=%" PRIu64, ino) < 0 ? -EIO : 0;
		chain[n++] = ino;
		ino = r->names[ino - 1].parent;
	}
	if (n == 0)
		return putc('/', f) == EOF ? -EIO : 0;
	while (n--) {
		const struct name *nm = &r->names[chain[n] - 1];

		if (putc('/', f) == EOF || cfs_profile_put_escaped(f, nm->name, nm->name_len) < 0)
			return -EIO;
	}
	return 0;
}

static int write_header(FILE *f, const cfs_digest *ref)
{
	char s[CFS_REF_STRLEN];

	if (fprintf(f, PROFILE_HEADER " %d\n", PROFILE_VERSION) < 0)
		return -EIO;
	if (ref) {
		cfs_digest_ref(ref, s);
		if (fprintf(f, "image %s\n", s) < 0)
			return -EIO;
	}
	return 0;
}

/* Writes through fn into a temporary file next to path, then renames it
 * over path. */
static int write_atomic(const char *path, int (*fn)(FILE *f, void *arg), void *arg)
{
	char *tmp = NULL;
	FILE *f;
	int fd, ret;

	if (asprintf(&tmp, "%s.tmp.%ld", path, (long)getpid()) < 0)
		return -ENOMEM;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		ret = -errno;
		goto out_free;
	}
	f = fdopen(fd, "w");
	if (!f) {
		ret = -errno;
		close(fd);
		goto out_unlink;
	}
	ret = fn(f, arg);
	if (fflush(f) != 0 && ret == 0)
		ret = -errno;
	if (ret == 0 && fsync(fd) < 0)
		ret = -errno;
	if (fclose(f) != 0 && ret == 0)
		ret = -errno;
	if (ret == 0 && rename(tmp, path) < 0)
		ret = -errno;
out_unlink:
	if (ret < 0)
		unlink(tmp);
out_free:
	free(tmp);
	return ret;
}

struct save_arg {
	struct cfs_recorder *r;
	const struct rec *recs;
	size_t n;
	struct rec *copy; /* recs, owned */
};

static int save_fn(FILE *f, void *arg)
{
	const struct save_arg *s = arg;
	char hex[CFS_DIGEST_HEX_LEN + 1];
	int ret = write_header(f, &s->r->ref);

	for (size_t i = 0; ret == 0 && i < s->n; i++) {
		const struct rec *rc = &s->recs[i];
		struct cfs_chunk ch;

		if (rc->chunk == CFS_CHUNK_NONE) {
			if (fprintf(f, "f %" PRIu64 " ", rc->usec) < 0 ||
			    put_path(f, s->r, rc->ino) < 0 || putc('\n', f) == EOF)
				ret = -EIO;
			continue;
		}
		if (cfs_index_chunk(s->r->idx, rc->chunk, &ch) < 0)
			continue;
		cfs_digest_hex(&ch.digest, hex);
		if (fprintf(f, "c %" PRIu64 " %s ", rc->usec, hex) < 0 ||
		    put_path(f, s->r, rc->ino) < 0 || fprintf(f, " %" PRIu64 "\n", rc->off) < 0)
			ret = -EIO;
	}
	return ret;
}

/* With save_lock held: the name map, and a copy of the first max records
 * noted at most max_usec after the start, so that reads are not held up
 * while the file is written.  The records are in time order. */
static int snapshot(struct cfs_recorder *r, size_t max, uint64_t max_usec, struct save_arg *s)
{
	int ret;

	*s = (struct save_arg){ .r = r };
	if (!r->names && (ret = names_build(r)) < 0)
		return ret;
	pthread_mutex_lock(&r->lock);
	s->n = CFS_MIN(r->n, max);
	while (s->n && r->recs[s->n - 1].usec > max_usec)
		s->n--;
	if (s->n) {
		s->copy = malloc(s->n * sizeof(*s->copy));
		if (s->copy)
			memcpy(s->copy, r->recs, s->n * sizeof(*s->copy));
	}
	pthread_mutex_unlock(&r->lock);
	if (s->n && !s->copy)
		return -ENOMEM;
	s->recs = s->copy;
	return 0;
}

/* The first max records within max_usec, to path atomically or to f. */
static int recorder_emit(struct cfs_recorder *r, size_t max, uint64_t max_usec, const char *path,
			 FILE *f)
{
	struct save_arg s;
	int ret;

	pthread_mutex_lock(&r->save_lock);
	ret = snapshot(r, max, max_usec, &s);
	if (ret == 0)
		ret = path ? write_atomic(path, save_fn, &s) : save_fn(f, &s);
	if (ret == 0 && f && fflush(f) != 0)
		ret = -EIO;
	pthread_mutex_unlock(&r->save_lock);
	free(s.copy);
	return ret;
}

CFS_EXPORT int cfs_recorder_save(struct cfs_recorder *r, const char *path)
{
	if (!r || !path)
		return -EINVAL;
	return recorder_emit(r, SIZE_MAX, UINT64_MAX, path, NULL);
}

CFS_EXPORT int cfs_recorder_write(struct cfs_recorder *r, FILE *f, size_t max, uint64_t max_usec)
{
	if (!r || !f)
		return -EINVAL;
	return recorder_emit(r, max, max_usec, NULL, f);
}

/* ---- parsing ----------------------------------------------------------- */

struct cfs_profile {
	struct cfs_profile_entry *e;
	size_t n, cap;
	char *paths;     /* every path, NUL-terminated, back to back */
	size_t paths_len, paths_cap;
	bool has_image;
	cfs_digest image;
};

CFS_EXPORT void cfs_profile_free(struct cfs_profile *p)
{
	if (!p)
		return;
	free(p->e);
	free(p->paths);
	free(p);
}

CFS_EXPORT size_t cfs_profile_count(const struct cfs_profile *p)
{
	return p ? p->n : 0;
}

CFS_EXPORT const struct cfs_profile_entry *cfs_profile_entry(const struct cfs_profile *p, size_t i)
{
	return p && i < p->n ? &p->e[i] : NULL;
}

CFS_EXPORT const char *cfs_profile_unescape(const char *s, char *out, size_t *len)
{
	char *d = out;

	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		int hi, lo;

		if (c < 0x21 || c > 0x7e)
			return "unescaped byte";
		if (c != '\\') {
			*d++ = (char)c;
			continue;
		}
		if (s[1] != 'x' || (hi = cfs_hex_value(s[2])) < 0 || (lo = cfs_hex_value(s[3])) < 0)
			return "bad escape (expected \\xHH)";
		if (hi == 0 && lo == 0)
			return "NUL byte";
		*d++ = (char)(hi << 4 | lo);
		s += 3;
	}
	*d = '\0';
	*len = (size_t)(d - out);
	return NULL;
}

/* Unescapes path s into the profile's path store; its offset in *off.
 * Returns NULL or the reason it is malformed. */
static const char *path_add(struct cfs_profile *p, const char *s, size_t *off, size_t *len)
{
	size_t n = strlen(s);
	const char *why;

	if (s[0] != '/')
		return "path is not absolute";
	if (p->paths_cap - p->paths_len < n + 1) {
		size_t cap = CFS_MAX(p->paths_cap * 2, p->paths_len + n + 1 + 4096);
		char *np = realloc(p->paths, cap);

		if (!np)
			return "out of memory";
		p->paths = np;
		p->paths_cap = cap;
	}
	why = cfs_profile_unescape(s, p->paths + p->paths_len, len);
	if (why)
		return why;
	*off = p->paths_len;
	p->paths_len += *len + 1;
	return NULL;
}

/* Splits line at single spaces into at most max fields; the count, or
 * max + 1 when there are more. */
static size_t split(char *line, char **f, size_t max)
{
	size_t n = 0;

	for (;;) {
		if (n == max)
			return max + 1;
		f[n++] = line;
		line = strchr(line, ' ');
		if (!line)
			return n;
		*line++ = '\0';
	}
}

/* Parses one record line into p; NULL or the reason. */
static const char *parse_line(struct cfs_profile *p, char *line)
{
	struct cfs_profile_entry e = { 0 };
	size_t nf, off, len;
	const char *why;
	char *f[6];

	nf = split(line, f, 5);
	if (!strcmp(f[0], "image")) {
		if (p->has_image)
			return "second image line";
		if (nf != 2 || cfs_digest_parse(f[1], false, &p->image) < 0)
			return "bad image line (expected 'image sha256:<64 hex>')";
		p->has_image = true;
		return NULL;
	}
	if (!strcmp(f[0], "f")) {
		if (nf != 3)
			return "a file record has 3 fields: f <usec> <path>";
	} else if (!strcmp(f[0], "c")) {
		if (nf != 5)
			return "a chunk record has 5 fields: c <usec> <sha256 hex> <path> <offset>";
		if (strlen(f[2]) != CFS_DIGEST_HEX_LEN || cfs_digest_parse(f[2], true, &e.digest) < 0)
			return "bad chunk digest (expected 64 hex digits)";
		if (cfs_parse_u64(f[4], &e.offset) < 0)
			return "bad offset";
	} else {
		return NULL; /* a kind this version does not know: skipped */
	}
	if (cfs_parse_u64(f[1], &e.usec) < 0)
		return "bad time";
	if (p->n >= PROFILE_RECORDS_MAX)
		return "too many records (the limit is 16777216)";
	why = path_add(p, f[f[0][0] == 'f' ? 2 : 3], &off, &len);
	if (why)
		return why;
	if (p->n == p->cap) {
		size_t cap = p->cap ? p->cap * 2 : 256;
		struct cfs_profile_entry *ne = realloc(p->e, cap * sizeof(*ne));

		if (!ne)
			return "out of memory";
		p->e = ne;
		p->cap = cap;
	}
	e.kind = f[0][0];
	e.path = (const char *)(uintptr_t)off; /* pointed into the store at the end */
	e.path_len = len;
	p->e[p->n++] = e;
	return NULL;
}

/* Reads one line of at most PROFILE_LINE_MAX bytes into buf (newline
 * removed).  1 a line, 0 at end of file, -E2BIG too long, -EILSEQ a NUL
 * byte, -EIO. */
static int read_line(FILE *f, char *buf, size_t cap)
{
	size_t n = 0;
	int c;

	while ((c = getc(f)) != EOF && c != '\n') {
		if (n + 1 >= cap)
			return -E2BIG;
		if (c == '\0')
			return -EILSEQ;
		buf[n++] = (char)c;
	}
	if (ferror(f))
		return -EIO;
	if (c == EOF && n == 0)
		return 0;
	buf[n] = '\0';
	return 1;
}

static int profile_parse(FILE *in, const char *name, struct cfs_profile **out)
{
	struct cfs_profile *p;
	const char *why = NULL;
	size_t lineno = 0;
	char *line;
	int ret;

	p = calloc(1, sizeof(*p));
	line = malloc(PROFILE_LINE_MAX + 2);
	if (!p || !line) {
		ret = -ENOMEM;
		goto out_free;
	}
	for (;;) {
		ret = read_line(in, line, PROFILE_LINE_MAX + 2);
		lineno++;
		if (ret == -E2BIG) {
			why = "line too long (the limit is 65536 bytes)";
		} else if (ret == -EILSEQ) {
			why = "NUL byte";
		} else if (ret < 0) {
			cfs_err("%s: %s", name, cfs_strerror(ret));
			goto out_free;
		} else if (ret == 0) {
			if (lineno == 1)
				why = "empty file, not a cfs profile";
			break;
		} else if (lineno == 1) {
			if (strncmp(line, PROFILE_HEADER " ", sizeof(PROFILE_HEADER)))
				why = "not a cfs profile (no 'cfs-profile 1' header)";
			else if (strcmp(line + sizeof(PROFILE_HEADER), "1"))
				why = "unsupported profile version (this reader knows version 1)";
		} else if (line[0]) {
			why = parse_line(p, line);
		}
		if (why)
			break;
	}
	if (why) {
		cfs_err("%s:%zu: %s", name, lineno, why);
		ret = strcmp(why, "out of memory") ? -EINVAL : -ENOMEM;
		goto out_free;
	}
	for (size_t i = 0; i < p->n; i++)
		p->e[i].path = p->paths + (uintptr_t)p->e[i].path;
	free(line);
	*out = p;
	return 0;
out_free:
	free(line);
	cfs_profile_free(p);
	return ret;
}

CFS_EXPORT int cfs_profile_load(const char *path, struct cfs_profile **out)
{
	FILE *f;
	int ret;

	if (!path || !out)
		return -EINVAL;
	f = fopen(path, "re");
	if (!f)
		return -errno;
	ret = profile_parse(f, path, out);
	fclose(f);
	return ret;
}

CFS_EXPORT int cfs_profile_load_buf(const void *buf, size_t len, const char *name,
				    struct cfs_profile **out)
{
	FILE *f;
	int ret;

	if (!buf || !out)
		return -EINVAL;
	if (len == 0) {
		cfs_err("%s:1: empty file, not a cfs profile", name ? name : "profile");
		return -EINVAL;
	}
	f = fmemopen((void *)(uintptr_t)buf, len, "r");
	if (!f)
		return -errno;
	ret = profile_parse(f, name ? name : "profile", out);
	fclose(f);
	return ret;
}

/* ---- merging ----------------------------------------------------------- */

struct mref {
	const struct cfs_profile_entry *e;
	size_t input, pos;
};

static int mref_cmp(const void *a, const void *b)
{
	const struct mref *x = a, *y = b;

	if (x->e->usec != y->e->usec)
		return x->e->usec < y->e->usec ? -1 : 1;
	if (x->input != y->input)
		return x->input < y->input ? -1 : 1;
	return x->pos < y->pos ? -1 : x->pos > y->pos;
}

static uint64_t entry_hash(const struct cfs_profile_entry *e)
{
	uint64_t h = 1469598103934665603ull;

	if (e->kind == 'c') {
		memcpy(&h, e->digest.b, sizeof(h));
		return h ^ 0x9e3779b97f4a7c15ull;
	}
	for (size_t i = 0; i < e->path_len; i++)
		h = (h ^ (unsigned char)e->path[i]) * 1099511628211ull;
	return h;
}

static bool entry_same(const struct cfs_profile_entry *a, const struct cfs_profile_entry *b)
{
	if (a->kind != b->kind)
		return false;
	if (a->kind == 'c')
		return cfs_digest_eq(&a->digest, &b->digest);
	return a->path_len == b->path_len && !memcmp(a->path, b->path, a->path_len);
}

static int put_entry(FILE *f, const struct cfs_profile_entry *e)
{
	char hex[CFS_DIGEST_HEX_LEN + 1];

	if (e->kind == 'f') {
		if (fprintf(f, "f %" PRIu64 " ", e->usec) < 0 || cfs_profile_put_escaped(f, e->path, e->path_len) < 0 ||
		    putc('\n', f) == EOF)
			return -EIO;
		return 0;
	}
	cfs_digest_hex(&e->digest, hex);
	if (fprintf(f, "c %" PRIu64 " %s ", e->usec, hex) < 0 ||
	    cfs_profile_put_escaped(f, e->path, e->path_len) < 0 || fprintf(f, " %" PRIu64 "\n", e->offset) < 0)
		return -EIO;
	return 0;
}

CFS_EXPORT int cfs_profile_merge(struct cfs_profile *const *in, size_t n, FILE *out)
{
	int ret = cfs_profile_merge_max(in, n, SIZE_MAX, NULL, NULL, out);

	return ret < 0 ? ret : 0;
}

CFS_EXPORT int cfs_profile_merge_max(struct cfs_profile *const *in, size_t n, size_t max,
				     cfs_profile_keep_fn *keep, void *arg, FILE *out)
{
	const struct cfs_profile_entry **set = NULL;
	struct mref *all = NULL;
	size_t total = 0, k = 0, slots = 1, written = 0;
	int ret;

	if (!out || (n && !in))
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		total += in[i] ? in[i]->n : 0;
	while (slots < 2 * total + 2)
		slots *= 2;
	all = malloc((total ? total : 1) * sizeof(*all));
	set = calloc(slots, sizeof(*set));
	if (!all || !set) {
		ret = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; in[i] && j < in[i]->n; j++)
			all[k++] = (struct mref){ &in[i]->e[j], i, j };
	qsort(all, total, sizeof(*all), mref_cmp);

	ret = write_header(out, n && in[0] && in[0]->has_image ? &in[0]->image : NULL);
	for (size_t i = 0; ret == 0 && i < total && written < max; i++) {
		const struct cfs_profile_entry *e = all[i].e;
		size_t s = (size_t)entry_hash(e) & (slots - 1);

		/* Sorted by time: the first of a kind is the earliest. */
		while (set[s] && !entry_same(set[s], e))
			s = (s + 1) & (slots - 1);
		if (set[s])
			continue;
		set[s] = e;
		if (keep && !keep(e, arg))
			continue;
		ret = put_entry(out, e);
		written++;
	}
	if (ret == 0 && fflush(out) != 0)
		ret = -EIO;
out:
	free(all);
	free(set);
	return ret < 0 ? ret : (int)CFS_MIN(written, (size_t)INT_MAX);
}
