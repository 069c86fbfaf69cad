/* SPDX-License-Identifier: MIT */
/*
 * cfs-simulate: replays a recorded access trace against a model of the
 * link and a prefetch policy, and predicts what a cold start over that
 * link costs: time, serial rounds, requests, bytes.  A policy is compared
 * in a second instead of a 15 s end-to-end run (issue 20).
 *
 *   cfs-mount --record T.prof STORE IMAGE MNT    (local store, fresh mount)
 *   ... run the workload, unmount ...
 *   cfs-simulate --store STORE --image REF --trace T.prof [--policy all]
 *
 * Why a model and how it works.  The trace (docs/PROFILE.md) lists the
 * first read of every file and chunk in order, with its time.  Recorded
 * from a local store, the gap between two records is the application's own
 * work: the simulated application is one serial thread that spends each gap
 * computing, then needs the record's chunk, and waits while it is not yet
 * fetched.  The image's index gives every chunk's stored size and every
 * file's chunks, directory and place in the depth-first inode order.  The
 * simulation is discrete-event over fluid shares, which keeps the
 * arithmetic exact between events:
 *
 *   request    one chunk object, on one of --conns connections: --rtt-ms of
 *              latency, then its stored bytes at min(--conn-rate,
 *              --total-rate / requests transferring) (equal shares: every
 *              transfer finishes in the order of its remaining bytes, so a
 *              heap keyed by per-transfer "virtual bytes" replays them)
 *   queue      a free connection takes a demand request first, then hints
 *              (whole files, directories, a profile's list) in the order
 *              queued, then the background stream; a request on the wire is
 *              never cut off (demand preempts the queue, not the link)
 *   client CPU every fetched (stored) byte costs --cpu-ns-per-byte to
 *              decompress, verify and write before it can be read; those
 *              jobs and the application's thinking share --cores cores
 *              equally (as the scheduler shares threads), so a busy stream
 *              slows the application down, and a chunk is ready only when
 *              its job is done
 *   mount      before the first record: resolving a tag (one RTT) and
 *              fetching the index (one RTT plus its stored bytes at
 *              the rate of one request)
 *
 * Policies (--policy NAME, or all):
 *   demand     a chunk is fetched when the application first needs it
 *   wholefile  demand, and on the first read of a file all its chunks, the
 *              one read first, when the file is at most --wholefile-max
 *              (64M) or an ELF; ELF is judged by name (*.so, *.so.*, or
 *              directly in a directory named bin or sbin), no data is read;
 *              and the whole of each file the image's hints name for it
 *              (docs/FORMAT.md "Hints": what loading an ELF file opens)
 *   dir        wholefile, and on the first read of a file in directory D
 *              the chunks of D's own regular files under --small-max (64K:
 *              they share group chunks)
 *   stream     dir, and a background stream that keeps free connections
 *              busy with the rest of the image, "focus" first: the chunks of
 *              the subtree of the directory of the file read first most
 *              recently, then of its parent's, widening to the root (a
 *              subtree is a range of the inode order); it stops at the first
 *              chunk that would take the bytes requested, all kinds
 *              together, past --budget (default: the image's stored size)
 *   profile    demand, and the image's prefetch list (or that of the trace
 *              --profile FILE) queued in order once the list object is
 *              fetched (one RTT after the mount); replaying a trace against
 *              the profile-packed image gives that image's layout too
 *
 * Output, one row per policy: predicted time (mount included), serial
 * rounds (blocks of the application on a fetch lasting at least half an
 * RTT, which is what bench/coldstart-remote.sh counts from the proxy's
 * log; "blocks" in --json counts every one), requests and MB (10^6 bytes)
 * fetched by the time the application is done (a transfer under way then
 * counts its bytes so far), amplification (that over the stored bytes of
 * the chunks the trace reads, what demand fetches), and what the time went
 * to: think (the application's own work), rtt (waiting on latency, the
 * mount's included), link (waiting on a transfer), conns (waiting for a
 * free connection), cpu (waiting on a chunk's CPU job, or thinking slowed
 * down by them); the largest is the row's "limit".  --json prints one
 * object per policy with these as <name>_ms, the bytes by kind of request
 * (bytes_demand, bytes_hint, bytes_stream), the trace's and the model's
 * figures.
 *
 * Trace records map to the image by path and offset (so a trace recorded
 * against one image of a tree replays against another: a repack with a
 * profile or hints), and by chunk digest when the path is not in the image.
 * Records that map to nothing are counted and skipped.
 *
 * Exit 0, 1 with a one-line message on an error, 2 for a usage mistake.
 */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "digest.h"
#include "format.h"
#include "image.h"
#include "index.h"
#include "open.h"
#include "profile.h"
#include "store.h"
#include "util.h"

#define PROG "cfs-simulate"

enum policy { POL_DEMAND, POL_WHOLEFILE, POL_DIR, POL_STREAM, POL_PROFILE, POL_COUNT };
static const char *const policy_names[POL_COUNT] = { "demand", "wholefile", "dir", "stream",
						     "profile" };

/* Request kinds, which are also the queue priorities (lower first). */
enum kind { K_DEMAND, K_HINT, K_STREAM, K_COUNT };
static const char *const kind_names[K_COUNT] = { "demand", "hint", "stream" };

/* Where the application's time goes. */
enum bucket { B_THINK, B_RTT, B_LINK, B_CONNS, B_CPU, B_COUNT };
static const char *const bucket_names[B_COUNT] = { "think", "rtt", "link", "conns", "cpu" };

struct model {
	double rtt_s;
	double conn_rate;       /* bytes/s per request */
	double total_rate;      /* bytes/s over all requests; 0: no cap */
	double cpu_s_per_byte;
	double cores;
	unsigned conns;
	bool think_fixed;       /* --think-us: think_s before every record */
	double think_s;
	uint64_t budget;        /* 0: the image's stored size */
	uint64_t wholefile_max;
	uint64_t small_max;
};

/* The rate of a request on the wire alone. */
static double alone_rate(const struct model *m)
{
	return m->total_rate > 0 ? CFS_MIN(m->conn_rate, m->total_rate) : m->conn_rate;
}

/* ---- the image ---- */

enum { F_REG = 1, F_DIR = 2, F_ELF = 4, F_BINDIR = 8 };

struct image {
	const struct cfs_index *idx;
	uint64_t ninodes;
	uint32_t nchunks;
	uint32_t *stored;
	uint64_t total_stored;
	/* Per inode (1..ninodes; [0] unused): the directory holding its first
	 * name depth first (the root its own), the last inode of a
	 * directory's subtree, F_* flags, and where its chunks start in occ. */
	uint64_t *parent;
	uint64_t *sub_end;
	uint8_t *flags;
	size_t *occ_start;      /* ninodes + 2 entries: [ninodes + 1] = nocc */
	uint32_t *occ;          /* each regular file's chunks, inode order */
	size_t nocc;
	uint32_t *dmap;         /* digest -> chunk + 1, open addressing */
	size_t dmap_mask;
	double mount_s;
};

static void image_release(struct image *im)
{
	free(im->stored);
	free(im->parent);
	free(im->sub_end);
	free(im->flags);
	free(im->occ_start);
	free(im->occ);
	free(im->dmap);
	memset(im, 0, sizeof(*im));
}

static size_t digest_hash(const cfs_digest *d)
{
	uint64_t h;

	/* SHA-256 bytes are uniform already. */
	memcpy(&h, d->b, sizeof(h));
	return (size_t)h;
}

/* The chunk named d, or -1. */
static int64_t image_chunk_of_digest(const struct image *im, const cfs_digest *d)
{
	for (size_t i = digest_hash(d) & im->dmap_mask;; i = (i + 1) & im->dmap_mask) {
		struct cfs_chunk ch;
		uint32_t v = im->dmap[i];

		if (!v)
			return -1;
		if (cfs_index_chunk(im->idx, v - 1, &ch) == 0 && cfs_digest_eq(&ch.digest, d))
			return v - 1;
	}
}

static bool name_is_elf(const char *name, size_t len)
{
	if (len >= 3 && memcmp(name + len - 3, ".so", 3) == 0)
		return true;
	for (size_t i = 0; i + 4 <= len; i++)
		if (memcmp(name + i, ".so.", 4) == 0)
			return true;
	return false;
}

struct frame {
	uint64_t ino, pos;
};

/* Depth first from the root, as inodes are numbered: every inode's
 * directory, every directory's subtree end, the ELF guesses. */
static int image_walk(struct image *im)
{
	struct frame *stack;
	size_t depth = 0, cap = 64;
	uint64_t maxino = CFS_ROOT_INO;
	int ret;

	stack = malloc(cap * sizeof(*stack));
	if (!stack)
		return -ENOMEM;
	im->parent[CFS_ROOT_INO] = CFS_ROOT_INO;
	im->flags[CFS_ROOT_INO] |= F_DIR;
	stack[depth++] = (struct frame){ CFS_ROOT_INO, 0 };
	while (depth) {
		struct frame *f = &stack[depth - 1];
		uint64_t dir = f->ino;
		struct cfs_dirent de;

		ret = cfs_index_dirent(im->idx, dir, f->pos++, &de);
		if (ret < 0)
			goto out;
		if (ret == 0) {
			im->sub_end[dir] = maxino;
			depth--;
			continue;
		}
		if (de.ino < 1 || de.ino > im->ninodes || im->parent[de.ino])
			continue; /* a second name of a hard-linked file */
		im->parent[de.ino] = dir;
		maxino = CFS_MAX(maxino, de.ino);
		if (de.type == DT_REG) {
			im->flags[de.ino] |= F_REG;
			if ((im->flags[dir] & F_BINDIR) || name_is_elf(de.name, de.name_len))
				im->flags[de.ino] |= F_ELF;
		} else if (de.type == DT_DIR) {
			im->flags[de.ino] |= F_DIR;
			if ((de.name_len == 3 && memcmp(de.name, "bin", 3) == 0) ||
			    (de.name_len == 4 && memcmp(de.name, "sbin", 4) == 0))
				im->flags[de.ino] |= F_BINDIR;
			if (depth == cap) {
				struct frame *ns = realloc(stack, 2 * cap * sizeof(*stack));

				if (!ns) {
					ret = -ENOMEM;
					goto out;
				}
				stack = ns;
				cap *= 2;
			}
			stack[depth++] = (struct frame){ de.ino, 0 };
		}
	}
	ret = 0;
out:
	free(stack);
	return ret;
}

/* Every regular file's chunks in inode order, each file's once per run of
 * extents in the same chunk. */
static int image_chunks(struct image *im)
{
	size_t cap = 1024;

	im->occ = malloc(cap * sizeof(*im->occ));
	if (!im->occ)
		return -ENOMEM;
	for (uint64_t ino = 1; ino <= im->ninodes; ino++) {
		struct cfs_inode in;
		int ret;

		im->occ_start[ino] = im->nocc;
		if (!(im->flags[ino] & F_REG))
			continue;
		ret = cfs_index_inode(im->idx, ino, &in);
		if (ret < 0)
			return ret;
		for (uint32_t i = 0; i < in.nentries; i++) {
			struct cfs_extent ext;

			ret = cfs_index_file_extent(im->idx, &in, i, &ext);
			if (ret < 0)
				return ret;
			if (ret == 0)
				break;
			if (ext.chunk == CFS_CHUNK_NONE ||
			    (im->nocc > im->occ_start[ino] && im->occ[im->nocc - 1] == ext.chunk))
				continue;
			if (im->nocc == cap) {
				uint32_t *n = realloc(im->occ, 2 * cap * sizeof(*im->occ));

				if (!n)
					return -ENOMEM;
				im->occ = n;
				cap *= 2;
			}
			im->occ[im->nocc++] = ext.chunk;
		}
	}
	im->occ_start[im->ninodes + 1] = im->nocc;
	return 0;
}

static int image_load(struct image *im, const struct cfs_opened *op, const char *ref,
		      const struct model *m)
{
	struct cfs_index_info info;
	uint64_t index_stored = 0;
	size_t n;
	int ret;

	im->idx = cfs_image_index(op->img);
	cfs_index_info(im->idx, &info);
	if (info.chunk_count > UINT32_MAX || info.inode_count > SIZE_MAX / 16 - 2)
		return -EFBIG;
	im->ninodes = info.inode_count;
	im->nchunks = (uint32_t)info.chunk_count;
	n = im->ninodes + 2;
	for (im->dmap_mask = 1; im->dmap_mask < 2 * (size_t)im->nchunks; im->dmap_mask <<= 1)
		;
	im->stored = calloc(im->nchunks + 1, sizeof(*im->stored));
	im->dmap = calloc(im->dmap_mask, sizeof(*im->dmap));
	im->dmap_mask--;
	im->parent = calloc(n, sizeof(*im->parent));
	im->sub_end = calloc(n, sizeof(*im->sub_end));
	im->flags = calloc(n, sizeof(*im->flags));
	im->occ_start = calloc(n, sizeof(*im->occ_start));
	if (!im->stored || !im->dmap || !im->parent || !im->sub_end || !im->flags || !im->occ_start)
		return -ENOMEM;
	for (uint32_t c = 0; c < im->nchunks; c++) {
		struct cfs_chunk ch;
		size_t i;

		ret = cfs_index_chunk(im->idx, c, &ch);
		if (ret < 0)
			return ret;
		im->stored[c] = ch.stored_size;
		im->total_stored += ch.stored_size;
		if (image_chunk_of_digest(im, &ch.digest) >= 0)
			continue; /* the same object twice: the first is the one fetched */
		for (i = digest_hash(&ch.digest) & im->dmap_mask; im->dmap[i];
		     i = (i + 1) & im->dmap_mask)
			;
		im->dmap[i] = c + 1;
	}
	ret = image_walk(im);
	if (ret < 0)
		return ret;
	ret = image_chunks(im);
	if (ret < 0)
		return ret;
	/* The mount's serial requests: the tag, then the index object. */
	if (cfs_store_has(op->store, &op->digest, &index_stored) < 0)
		index_stored = info.index_size;
	im->mount_s = (strncmp(ref, "sha256:", 7) ? m->rtt_s : 0) + m->rtt_s +
		      (double)index_stored / alone_rate(m);
	return 0;
}

/* ---- the trace ---- */

struct rec {
	uint64_t usec;
	uint64_t ino;    /* the file read, 0 when only the digest mapped */
	uint32_t chunk;  /* 'c' */
	char kind;       /* 'f' or 'c' */
};

struct trace {
	struct rec *r;
	size_t n;
	size_t unmapped;
	uint64_t files, chunks;  /* distinct */
	uint64_t touched_stored; /* stored bytes of the distinct chunks read */
};

/* The regular file at path, or 0. */
static uint64_t file_of_path(const struct image *im, const char *path)
{
	uint64_t ino;

	if (cfs_index_lookup_path(im->idx, path, &ino) < 0 || ino > im->ninodes ||
	    !(im->flags[ino] & F_REG))
		return 0;
	return ino;
}

/* The chunk a 'c' record names: by path and offset, else by digest; -1. */
static int64_t chunk_of_entry(const struct image *im, const struct cfs_profile_entry *e,
			      uint64_t ino)
{
	struct cfs_extent ext;
	uint32_t i;

	if (ino && cfs_index_extent_find(im->idx, ino, e->offset, &i) == 0 &&
	    cfs_index_extent(im->idx, ino, i, &ext) == 1 && ext.chunk != CFS_CHUNK_NONE)
		return ext.chunk;
	return image_chunk_of_digest(im, &e->digest);
}

static int trace_load(const struct image *im, const char *path, struct trace *t)
{
	struct cfs_profile *p;
	uint8_t *seen_chunk = NULL, *seen_file = NULL;
	size_t n;
	int ret;

	memset(t, 0, sizeof(*t));
	ret = cfs_profile_load(path, &p);
	if (ret < 0)
		return ret;
	n = cfs_profile_count(p);
	t->r = malloc((n ? n : 1) * sizeof(*t->r));
	seen_chunk = calloc(im->nchunks + 1, 1);
	seen_file = calloc(im->ninodes + 1, 1);
	if (!t->r || !seen_chunk || !seen_file) {
		ret = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		const struct cfs_profile_entry *e = cfs_profile_entry(p, i);
		struct rec *r = &t->r[t->n];
		int64_t c = -1;

		r->usec = e->usec;
		r->kind = e->kind;
		r->ino = file_of_path(im, e->path);
		if (e->kind == 'c')
			c = chunk_of_entry(im, e, r->ino);
		if (e->kind == 'f' ? !r->ino : c < 0) {
			t->unmapped++;
			continue;
		}
		if (c >= 0) {
			r->chunk = (uint32_t)c;
			if (!seen_chunk[c]) {
				seen_chunk[c] = 1;
				t->chunks++;
				t->touched_stored += im->stored[c];
			}
		}
		if (r->ino && !seen_file[r->ino]) {
			seen_file[r->ino] = 1;
			t->files++;
		}
		t->n++;
	}
	ret = 0;
out:
	free(seen_chunk);
	free(seen_file);
	cfs_profile_free(p);
	return ret;
}

/* ---- the simulation ---- */

enum cstate { C_IDLE, C_QUEUED, C_RTT, C_XFER, C_CPU, C_DONE };
enum app { APP_READY, APP_THINK, APP_WAIT, APP_DONE };

struct fifo {
	uint32_t *v;
	size_t head, tail;
};

struct heap {
	struct hent {
		double key;
		uint32_t c;
	} *v;
	size_t n;
};

static void heap_push(struct heap *h, double key, uint32_t c)
{
	size_t i = h->n++;

	while (i > 0 && h->v[(i - 1) / 2].key > key) {
		h->v[i] = h->v[(i - 1) / 2];
		i = (i - 1) / 2;
	}
	h->v[i] = (struct hent){ key, c };
}

static uint32_t heap_pop(struct heap *h)
{
	uint32_t top = h->v[0].c;
	struct hent last = h->v[--h->n];
	size_t i = 0;

	for (;;) {
		size_t k = 2 * i + 1;

		if (k >= h->n)
			break;
		if (k + 1 < h->n && h->v[k + 1].key < h->v[k].key)
			k++;
		if (last.key <= h->v[k].key)
			break;
		h->v[i] = h->v[k];
		i = k;
	}
	if (h->n)
		h->v[i] = last;
	return top;
}

struct result {
	double time_s;
	uint64_t rounds, blocks, requests;
	double fetched;              /* bytes, partial transfers included */
	double kind_bytes[K_COUNT];
	double bucket_s[B_COUNT];
	bool no_list;                /* profile without a list */
};

struct sim {
	const struct model *m;
	const struct image *im;
	const struct trace *tr;
	const uint32_t *list;        /* profile: the chunks to queue */
	size_t nlist;
	enum policy pol;
	struct result *res;

	double t;
	uint8_t *st;                 /* enum cstate per chunk */
	uint8_t *kind;               /* queued: its queue; later: who asked first */
	double *rtt_end;
	struct fifo q[K_STREAM];     /* demand, hint */
	struct fifo rttq;            /* requests in their latency, by end time */
	struct heap xfer, cpu;       /* keyed by virtual bytes / seconds at the end */
	double vx, vc;
	unsigned inflight;
	double requested;            /* bytes of every request started */
	uint64_t budget;
	bool stream_on;
	uint64_t focus;
	size_t *cursor;              /* per directory: the stream's place in occ */
	uint8_t *touched, *hinted;   /* per inode */
	double list_at;              /* profile: when the list arrives; < 0 done */

	enum app app;
	size_t next;
	bool thought;                /* the gap before record next is spent */
	double think_left, wait_from;
	uint32_t wait_chunk;
};

static void enqueue(struct sim *s, uint32_t c, enum kind k)
{
	if (s->st[c] == C_IDLE || (s->st[c] == C_QUEUED && k < s->kind[c])) {
		s->st[c] = C_QUEUED;
		s->kind[c] = (uint8_t)k;
		s->q[k].v[s->q[k].tail++] = c;
	}
}

/* The next queued chunk of q (entries promoted to a higher queue since
 * are stale and skipped). */
static bool fifo_take(struct sim *s, enum kind k, uint32_t *out)
{
	struct fifo *q = &s->q[k];

	while (q->head < q->tail) {
		uint32_t c = q->v[q->head++];

		if (s->st[c] == C_QUEUED && s->kind[c] == k) {
			*out = c;
			return true;
		}
	}
	return false;
}

/* The stream's next chunk: the first not yet asked for in the focus
 * directory's subtree, then its parent's, up to the root's. */
static bool stream_take(struct sim *s, uint32_t *out)
{
	const struct image *im = s->im;
	uint64_t d = s->focus;

	while (s->stream_on) {
		size_t end = im->occ_start[im->sub_end[d] + 1], *cur = &s->cursor[d];

		if (*cur < im->occ_start[d])
			*cur = im->occ_start[d];
		while (*cur < end && s->st[im->occ[*cur]] != C_IDLE)
			(*cur)++;
		if (*cur < end) {
			uint32_t c = im->occ[*cur];

			if (s->requested + im->stored[c] > (double)s->budget) {
				s->stream_on = false;
				break;
			}
			*out = c;
			return true;
		}
		if (d == CFS_ROOT_INO)
			s->stream_on = false;
		d = im->parent[d];
	}
	return false;
}

static void dispatch(struct sim *s)
{
	while (s->inflight < s->m->conns) {
		enum kind k;
		uint32_t c;

		if (fifo_take(s, K_DEMAND, &c))
			k = K_DEMAND;
		else if (fifo_take(s, K_HINT, &c))
			k = K_HINT;
		else if (s->pol == POL_STREAM && stream_take(s, &c))
			k = K_STREAM;
		else
			break;
		s->st[c] = C_RTT;
		s->kind[c] = (uint8_t)k;
		s->rtt_end[c] = s->t + s->m->rtt_s;
		s->rttq.v[s->rttq.tail++] = c;
		s->inflight++;
		s->requested += s->im->stored[c];
		s->res->requests++;
	}
}

static void enqueue_file(struct sim *s, uint64_t ino)
{
	for (size_t i = s->im->occ_start[ino]; i < s->im->occ_start[ino + 1]; i++)
		enqueue(s, s->im->occ[i], K_HINT);
}

/* The hints of the first read of a file (record i). */
static int first_touch(struct sim *s, size_t i)
{
	const struct image *im = s->im;
	const struct rec *r = &s->tr->r[i];
	uint64_t ino = r->ino, dir = im->parent[ino];
	struct cfs_inode in;
	int ret;

	s->touched[ino] = 1;
	if (s->pol == POL_DEMAND || s->pol == POL_PROFILE)
		return 0;
	ret = cfs_index_inode(im->idx, ino, &in);
	if (ret < 0)
		return ret;
	if (in.size <= s->m->wholefile_max || (im->flags[ino] & F_ELF)) {
		/* The chunk read first goes first: this record's, or that of
		 * the read that follows the file's 'f' record. */
		const struct rec *c = r;

		if (c->kind != 'c' && i + 1 < s->tr->n)
			c = &s->tr->r[i + 1];
		if (c->kind == 'c' && c->ino == ino)
			enqueue(s, c->chunk, K_HINT);
		enqueue_file(s, ino);
	}
	for (uint32_t first, k = 0, n = cfs_index_hints(im->idx, ino, &first); k < n; k++) {
		uint64_t h = cfs_index_hint(im->idx, first + k);

		if (h >= 1 && h <= im->ninodes && !s->touched[h] && (im->flags[h] & F_REG))
			enqueue_file(s, h);
	}
	if (s->pol != POL_WHOLEFILE && !s->hinted[dir]) {
		struct cfs_dirent de;

		s->hinted[dir] = 1;
		for (uint64_t pos = 0; (ret = cfs_index_dirent(im->idx, dir, pos, &de)) == 1; pos++) {
			if (de.type != DT_REG || de.ino > im->ninodes || im->parent[de.ino] != dir)
				continue;
			ret = cfs_index_inode(im->idx, de.ino, &in);
			if (ret < 0)
				return ret;
			if (in.size < s->m->small_max)
				enqueue_file(s, de.ino);
		}
		if (ret < 0)
			return ret;
	}
	if (s->pol == POL_STREAM)
		s->focus = dir;
	return 0;
}

/* Runs the application until it thinks, waits or is done. */
static int app_run(struct sim *s)
{
	while (s->app == APP_READY) {
		const struct rec *r;
		int ret;

		if (s->next == s->tr->n) {
			s->app = APP_DONE;
			break;
		}
		r = &s->tr->r[s->next];
		if (!s->thought) {
			double gap = s->m->think_fixed ? s->m->think_s :
				     s->next == 0 ? r->usec / 1e6 :
				     r->usec > s->tr->r[s->next - 1].usec ?
						    (r->usec - s->tr->r[s->next - 1].usec) / 1e6 : 0;

			s->thought = true;
			if (gap > 0) {
				s->think_left = gap;
				s->app = APP_THINK;
				break;
			}
		}
		s->thought = false;
		if (r->ino && !s->touched[r->ino]) {
			ret = first_touch(s, s->next);
			if (ret < 0)
				return ret;
		}
		s->next++;
		if (r->kind == 'c' && s->st[r->chunk] != C_DONE) {
			enqueue(s, r->chunk, K_DEMAND);
			s->app = APP_WAIT;
			s->wait_chunk = r->chunk;
			s->wait_from = s->t;
		}
		dispatch(s);
	}
	return 0;
}

static void chunk_ready(struct sim *s, uint32_t c)
{
	s->st[c] = C_DONE;
	if (s->app == APP_WAIT && s->wait_chunk == c) {
		double w = s->t - s->wait_from;

		s->res->blocks++;
		if (w >= s->m->rtt_s / 2)
			s->res->rounds++;
		s->app = APP_READY;
	}
}

static void transfer_done(struct sim *s, uint32_t c)
{
	double work = s->m->cpu_s_per_byte * s->im->stored[c];

	s->inflight--;
	s->res->fetched += s->im->stored[c];
	s->res->kind_bytes[s->kind[c]] += s->im->stored[c];
	if (work > 0) {
		s->st[c] = C_CPU;
		heap_push(&s->cpu, s->vc + work, c);
	} else {
		chunk_ready(s, c);
	}
}

static bool due(double left, double scale)
{
	return left <= 1e-12 * (1 + fabs(scale));
}

/* One step: to the next event, everything due then handled. */
static int step(struct sim *s)
{
	enum { E_NONE, E_RTT, E_XFER, E_CPU, E_THINK, E_LIST } ev = E_NONE;
	const struct model *m = s->m;
	double dt = INFINITY, rx = m->conn_rate, rc = 1;
	unsigned nrun = (unsigned)s->cpu.n + (s->app == APP_THINK);

	if (m->total_rate > 0 && s->xfer.n)
		rx = CFS_MIN(rx, m->total_rate / (double)s->xfer.n);
	if (nrun > m->cores)
		rc = m->cores / nrun;
	if (s->rttq.head < s->rttq.tail && s->rtt_end[s->rttq.v[s->rttq.head]] - s->t < dt) {
		dt = s->rtt_end[s->rttq.v[s->rttq.head]] - s->t;
		ev = E_RTT;
	}
	if (s->xfer.n && (s->xfer.v[0].key - s->vx) / rx < dt) {
		dt = (s->xfer.v[0].key - s->vx) / rx;
		ev = E_XFER;
	}
	if (s->cpu.n && (s->cpu.v[0].key - s->vc) / rc < dt) {
		dt = (s->cpu.v[0].key - s->vc) / rc;
		ev = E_CPU;
	}
	if (s->app == APP_THINK && s->think_left / rc < dt) {
		dt = s->think_left / rc;
		ev = E_THINK;
	}
	if (s->list_at >= 0 && s->list_at - s->t < dt) {
		dt = s->list_at - s->t;
		ev = E_LIST;
	}
	if (ev == E_NONE)
		return -EDEADLK; /* the application waits on nothing under way */
	dt = CFS_MAX(dt, 0);

	if (s->app == APP_THINK) {
		s->res->bucket_s[B_THINK] += rc * dt;
		s->res->bucket_s[B_CPU] += (1 - rc) * dt;
		s->think_left -= rc * dt;
	} else if (s->app == APP_WAIT) {
		static const enum bucket of_state[] = {
			[C_IDLE] = B_CONNS, [C_QUEUED] = B_CONNS, [C_RTT] = B_RTT,
			[C_XFER] = B_LINK, [C_CPU] = B_CPU, [C_DONE] = B_CPU,
		};

		s->res->bucket_s[of_state[s->st[s->wait_chunk]]] += dt;
	}
	s->t += dt;
	if (s->xfer.n)
		s->vx += rx * dt;
	if (s->cpu.n)
		s->vc += rc * dt;
	/* The event that set dt is due exactly, whatever the rounding. */
	switch (ev) {
	case E_RTT: s->t = s->rtt_end[s->rttq.v[s->rttq.head]]; break;
	case E_XFER: s->vx = s->xfer.v[0].key; break;
	case E_CPU: s->vc = s->cpu.v[0].key; break;
	case E_THINK: s->think_left = 0; break;
	case E_LIST: s->t = s->list_at; break;
	case E_NONE: break;
	}

	while (s->rttq.head < s->rttq.tail &&
	       due(s->rtt_end[s->rttq.v[s->rttq.head]] - s->t, s->t)) {
		uint32_t c = s->rttq.v[s->rttq.head++];

		s->st[c] = C_XFER;
		heap_push(&s->xfer, s->vx + s->im->stored[c], c);
	}
	while (s->xfer.n && due(s->xfer.v[0].key - s->vx, s->vx))
		transfer_done(s, heap_pop(&s->xfer));
	while (s->cpu.n && due(s->cpu.v[0].key - s->vc, s->vc))
		chunk_ready(s, heap_pop(&s->cpu));
	if (s->app == APP_THINK && due(s->think_left, s->t))
		s->app = APP_READY;
	if (s->list_at >= 0 && due(s->list_at - s->t, s->t)) {
		s->list_at = -1;
		for (size_t i = 0; i < s->nlist; i++)
			enqueue(s, s->list[i], K_HINT);
	}
	dispatch(s);
	return 0;
}

static int simulate(const struct model *m, const struct image *im, const struct trace *tr,
		    const uint32_t *list, size_t nlist, enum policy pol, struct result *res)
{
	size_t nc = (size_t)im->nchunks + 1, ni = im->ninodes + 2;
	struct sim s = {
		.m = m, .im = im, .tr = tr, .pol = pol, .res = res,
		.t = im->mount_s, .focus = CFS_ROOT_INO, .list_at = -1,
		.budget = m->budget ? m->budget : im->total_stored,
		.stream_on = pol == POL_STREAM, .app = APP_READY,
	};
	int ret = -ENOMEM;

	memset(res, 0, sizeof(*res));
	s.st = calloc(nc, 1);
	s.kind = calloc(nc, 1);
	s.rtt_end = calloc(nc, sizeof(*s.rtt_end));
	s.q[K_DEMAND].v = malloc(nc * sizeof(uint32_t));
	s.q[K_HINT].v = malloc(nc * sizeof(uint32_t));
	s.rttq.v = malloc(nc * sizeof(uint32_t));
	s.xfer.v = malloc(nc * sizeof(struct hent));
	s.cpu.v = malloc(nc * sizeof(struct hent));
	s.cursor = calloc(ni, sizeof(*s.cursor));
	s.touched = calloc(ni, 1);
	s.hinted = calloc(ni, 1);
	if (!s.st || !s.kind || !s.rtt_end || !s.q[K_DEMAND].v || !s.q[K_HINT].v || !s.rttq.v ||
	    !s.xfer.v || !s.cpu.v || !s.cursor || !s.touched || !s.hinted)
		goto out;
	res->bucket_s[B_RTT] = im->mount_s;
	if (pol == POL_PROFILE) {
		s.list = list;
		s.nlist = nlist;
		res->no_list = nlist == 0;
		if (nlist)
			s.list_at = s.t + m->rtt_s + (double)(16 + 4 * nlist) / alone_rate(m);
	}
	dispatch(&s);
	for (;;) {
		ret = app_run(&s);
		if (ret < 0 || s.app == APP_DONE)
			break;
		ret = step(&s);
		if (ret < 0)
			break;
	}
	if (ret < 0)
		goto out;
	res->time_s = s.t;
	/* What is on the wire at the end counts what it carried so far. */
	for (size_t i = 0; i < s.xfer.n; i++) {
		uint32_t c = s.xfer.v[i].c;
		double part = im->stored[c] - (s.xfer.v[i].key - s.vx);

		res->fetched += part;
		res->kind_bytes[s.kind[c]] += part;
	}
	ret = 0;
out:
	free(s.st);
	free(s.kind);
	free(s.rtt_end);
	free(s.q[K_DEMAND].v);
	free(s.q[K_HINT].v);
	free(s.rttq.v);
	free(s.xfer.v);
	free(s.cpu.v);
	free(s.cursor);
	free(s.touched);
	free(s.hinted);
	return ret;
}

/* ---- the command ---- */

static enum bucket top_bucket(const struct result *r)
{
	enum bucket b = B_THINK;

	for (int i = 1; i < B_COUNT; i++)
		if (r->bucket_s[i] > r->bucket_s[b])
			b = (enum bucket)i;
	return b;
}

static double amp_of(const struct result *r, const struct trace *tr)
{
	return tr->touched_stored ? r->fetched / (double)tr->touched_stored : 0;
}

static void print_json(const char *name, const struct result *r, const struct trace *tr,
		       const struct model *m, const struct image *im)
{
	printf("{\"policy\":");
	cfs_json_str(stdout, name);
	printf(",\"time_ms\":%.3f,\"mount_ms\":%.3f,\"rounds\":%" PRIu64 ",\"blocks\":%" PRIu64
	       ",\"requests\":%" PRIu64 ",\"bytes_fetched\":%.0f,\"mb_fetched\":%.3f,\"amp\":%.4f"
	       ",\"limit\":\"%s\"",
	       r->time_s * 1e3, im->mount_s * 1e3, r->rounds, r->blocks, r->requests, r->fetched,
	       r->fetched / 1e6, amp_of(r, tr), bucket_names[top_bucket(r)]);
	for (int k = 0; k < K_COUNT; k++)
		printf(",\"bytes_%s\":%.0f", kind_names[k], r->kind_bytes[k]);
	for (int b = 0; b < B_COUNT; b++)
		printf(",\"%s_ms\":%.3f", bucket_names[b], r->bucket_s[b] * 1e3);
	printf(",\"budget\":%" PRIu64 ",\"no_list\":%s,\"trace_records\":%zu,\"trace_unmapped\":%zu"
	       ",\"trace_chunks\":%" PRIu64 ",\"trace_bytes\":%" PRIu64 ",\"image_bytes\":%" PRIu64
	       ",\"model_rtt_ms\":%g,\"model_conn_rate\":%g,\"model_total_rate\":%g"
	       ",\"model_conns\":%u,\"model_cpu_ns_per_byte\":%g,\"model_cores\":%g}\n",
	       m->budget ? m->budget : im->total_stored, r->no_list ? "true" : "false", tr->n,
	       tr->unmapped, tr->chunks, tr->touched_stored, im->total_stored, m->rtt_s * 1e3,
	       m->conn_rate, m->total_rate, m->conns, m->cpu_s_per_byte * 1e9, m->cores);
}

static void print_row(const char *name, const struct result *r, const struct trace *tr)
{
	enum bucket b = top_bucket(r);

	printf("%-10s %10.1f %7" PRIu64 " %9" PRIu64 " %11.2f %6.2f  %s %.0f%%%s\n", name,
	       r->time_s * 1e3, r->rounds, r->requests, r->fetched / 1e6, amp_of(r, tr),
	       bucket_names[b], r->time_s > 0 ? 100 * r->bucket_s[b] / r->time_s : 0,
	       r->no_list ? " (no list: demand)" : "");
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: " PROG " --store STORE --image REF --trace FILE [options]\n"
		"\n"
		"Replays an access trace (cfs-mount --record, from a local store and a fresh\n"
		"mount) against a model of a link and prefetch policies; prints the predicted\n"
		"time, serial rounds, requests and MB fetched of each (bench/simulate.c).\n"
		"\n"
		"      --policy NAME      demand, wholefile, dir, stream, profile or all (default)\n"
		"      --rtt-ms MS        round trip of a request (default 20)\n"
		"      --conn-rate B/S    bytes/s of one request (default 100e6)\n"
		"      --total-rate B/S   bytes/s of all requests together, 0: no cap (default 1e9)\n"
		"      --conns N          requests on the wire at once (default 64)\n"
		"      --cpu-ns-per-byte NS  client CPU per fetched byte (default 2.5)\n"
		"      --cores N          client cores the application and that CPU share (default 2)\n"
		"      --think-from-trace the application's work between two records is their\n"
		"                         gap in the trace (the default)\n"
		"      --think-us US      instead, US microseconds before every record\n"
		"      --budget SIZE      stream: bytes requested in all (default: the image's)\n"
		"      --wholefile-max SIZE  wholefile: largest non-ELF file (default 64M)\n"
		"      --small-max SIZE   dir: a directory's files under SIZE (default 64K)\n"
		"      --profile FILE     profile: the chunks of this trace, not the image's list\n"
		"      --json             one JSON object per policy instead of the table\n"
		"\n"
		CFS_OPEN_TRUST_USAGE
		"\n"
		CFS_OPEN_STORE_USAGE);
}

/* A finite number >= min (> min when strict), times scale into out. */
static int parse_num(const char *s, double min, bool strict, double scale, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !isfinite(v) || v < min || (strict && v == min))
		return -EINVAL;
	*out = v * scale;
	return 0;
}

enum {
	O_STORE = 0x2000, O_IMAGE, O_TRACE, O_POLICY, O_RTT, O_CONN_RATE, O_TOTAL_RATE, O_CONNS,
	O_CPU, O_CORES, O_THINK_TRACE, O_THINK_US, O_BUDGET, O_WHOLEFILE_MAX, O_SMALL_MAX,
	O_PROFILE, O_JSON, O_HELP,
};

/* Sets the option c of the model; 0, or -EINVAL for a bad value. */
static int model_opt(struct model *m, int c, const char *arg)
{
	unsigned long n;

	switch (c) {
	case O_RTT:
		return parse_num(arg, 0, false, 1e-3, &m->rtt_s);
	case O_CONN_RATE:
		return parse_num(arg, 0, true, 1, &m->conn_rate);
	case O_TOTAL_RATE:
		return parse_num(arg, 0, false, 1, &m->total_rate);
	case O_CONNS:
		if (cfs_parse_uint(arg, 1, 1u << 20, &n) < 0)
			return -EINVAL;
		m->conns = (unsigned)n;
		return 0;
	case O_CPU:
		return parse_num(arg, 0, false, 1e-9, &m->cpu_s_per_byte);
	case O_CORES:
		return parse_num(arg, 0, true, 1, &m->cores);
	case O_THINK_TRACE:
		m->think_fixed = false;
		return 0;
	case O_THINK_US:
		m->think_fixed = true;
		return parse_num(arg, 0, false, 1e-6, &m->think_s);
	case O_BUDGET:
		return cfs_parse_size(arg, &m->budget) < 0 || !m->budget ? -EINVAL : 0;
	case O_WHOLEFILE_MAX:
		return cfs_parse_size(arg, &m->wholefile_max) < 0 ? -EINVAL : 0;
	case O_SMALL_MAX:
		return cfs_parse_size(arg, &m->small_max) < 0 ? -EINVAL : 0;
	}
	return -EINVAL;
}

/* The profile policy's list: --profile's chunks in order, each once, or
 * the image's prefetch list. */
static int load_list(const struct image *im, struct cfs_image *img, const char *profile,
		     uint32_t **list, size_t *n, char *msg, size_t msglen)
{
	struct trace t;
	uint8_t *seen;
	int ret;

	*list = NULL;
	*n = 0;
	if (!profile) {
		cfs_digest d;

		if (cfs_index_prefetch(im->idx, &d) < 0)
			return 0;
		ret = cfs_image_prefetch_list(img, list, n);
		if (ret < 0)
			snprintf(msg, msglen, "prefetch list: %s", cfs_strerror(ret));
		return ret;
	}
	ret = trace_load(im, profile, &t);
	if (ret < 0) {
		/* -EINVAL was reported with its line by the parser. */
		if (ret != -EINVAL)
			snprintf(msg, msglen, "%s: %s", profile, cfs_strerror(ret));
		return ret;
	}
	seen = calloc(im->nchunks + 1, 1);
	*list = malloc((t.n ? t.n : 1) * sizeof(**list));
	if (!seen || !*list) {
		free(*list);
		*list = NULL;
		ret = -ENOMEM;
		snprintf(msg, msglen, "%s", cfs_strerror(ret));
		goto out;
	}
	for (size_t i = 0; i < t.n; i++)
		if (t.r[i].kind == 'c' && !seen[t.r[i].chunk]) {
			seen[t.r[i].chunk] = 1;
			(*list)[(*n)++] = t.r[i].chunk;
		}
out:
	free(seen);
	free(t.r);
	return ret;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "store", required_argument, NULL, O_STORE },
		{ "image", required_argument, NULL, O_IMAGE },
		{ "trace", required_argument, NULL, O_TRACE },
		{ "policy", required_argument, NULL, O_POLICY },
		{ "rtt-ms", required_argument, NULL, O_RTT },
		{ "conn-rate", required_argument, NULL, O_CONN_RATE },
		{ "total-rate", required_argument, NULL, O_TOTAL_RATE },
		{ "conns", required_argument, NULL, O_CONNS },
		{ "cpu-ns-per-byte", required_argument, NULL, O_CPU },
		{ "cores", required_argument, NULL, O_CORES },
		{ "think-from-trace", no_argument, NULL, O_THINK_TRACE },
		{ "think-us", required_argument, NULL, O_THINK_US },
		{ "budget", required_argument, NULL, O_BUDGET },
		{ "wholefile-max", required_argument, NULL, O_WHOLEFILE_MAX },
		{ "small-max", required_argument, NULL, O_SMALL_MAX },
		{ "profile", required_argument, NULL, O_PROFILE },
		{ "json", no_argument, NULL, O_JSON },
		{ "help", no_argument, NULL, O_HELP },
		CFS_OPEN_STORE_OPTIONS,
		CFS_OPEN_TRUST_OPTION,
		{ NULL, 0, NULL, 0 },
	};
	struct model m = {
		.rtt_s = 0.020, .conn_rate = 100e6, .total_rate = 1e9, .conns = 64,
		.cpu_s_per_byte = 2.5e-9, .cores = 2,
		.wholefile_max = 64ull << 20, .small_max = 64u << 10,
	};
	const char *store = NULL, *image = NULL, *trace_path = NULL, *profile = NULL;
	struct cfs_open_opts oo;
	struct cfs_opened op = { 0 };
	struct image im = { 0 };
	struct trace tr = { 0 };
	uint32_t *list = NULL;
	size_t nlist = 0;
	int pol = -1, c, li, ret, rc = 1;
	bool json = false;
	char msg[512];

	cfs_open_opts_init(&oo);
	while ((c = getopt_long(argc, argv, "h", longopts, &li)) != -1) {
		switch (c) {
		case O_STORE: store = optarg; continue;
		case O_IMAGE: image = optarg; continue;
		case O_TRACE: trace_path = optarg; continue;
		case O_PROFILE: profile = optarg; continue;
		case O_JSON: json = true; continue;
		case 'h':
		case O_HELP:
			usage(stdout);
			rc = 0;
			goto out;
		case O_POLICY:
			pol = POL_COUNT; /* "all" */
			for (int i = 0; i < POL_COUNT; i++)
				if (strcmp(optarg, policy_names[i]) == 0)
					pol = i;
			if (pol == POL_COUNT && strcmp(optarg, "all") != 0) {
				fprintf(stderr, PROG ": unknown policy '%s' (demand, wholefile, dir, "
					"stream, profile, all)\n", optarg);
				rc = 2;
				goto out;
			}
			continue;
		}
		if (c >= O_RTT && c <= O_SMALL_MAX) {
			if (model_opt(&m, c, optarg) < 0) {
				fprintf(stderr, PROG ": bad value '%s' for --%s\n", optarg,
					longopts[li].name);
				rc = 2;
				goto out;
			}
			continue;
		}
		ret = cfs_open_opt(&oo, c, optarg, msg, sizeof(msg));
		if (ret < 0) {
			fprintf(stderr, PROG ": %s\n", msg);
			rc = 2;
			goto out;
		}
		if (ret == 0) {
			usage(stderr);
			rc = 2;
			goto out;
		}
	}
	if (optind != argc || !store || !image || !trace_path) {
		usage(stderr);
		rc = 2;
		goto out;
	}
	if (pol < 0)
		pol = POL_COUNT;
	cfs_log_setup(PROG, CFS_LOG_WARN, stderr);

	ret = cfs_open_image(&oo, store, image, NULL, &op, msg, sizeof(msg));
	if (ret < 0) {
		fprintf(stderr, PROG ": %s\n", msg);
		goto out;
	}
	ret = image_load(&im, &op, image, &m);
	if (ret < 0) {
		fprintf(stderr, PROG ": %s: %s\n", image, cfs_strerror(ret));
		goto out;
	}
	ret = trace_load(&im, trace_path, &tr);
	if (ret < 0) {
		if (ret != -EINVAL)
			fprintf(stderr, PROG ": %s: %s\n", trace_path, cfs_strerror(ret));
		goto out;
	}
	msg[0] = '\0';
	if ((pol == POL_PROFILE || pol == POL_COUNT) &&
	    load_list(&im, op.img, profile, &list, &nlist, msg, sizeof(msg)) < 0) {
		if (msg[0])
			fprintf(stderr, PROG ": %s\n", msg);
		goto out;
	}
	if (!json) {
		printf("image %s: %" PRIu32 " chunks, %.2f MB stored; mount %.1f ms\n", op.ref,
		       im.nchunks, im.total_stored / 1e6, im.mount_s * 1e3);
		printf("trace %s: %zu records (%zu unmapped), %" PRIu64 " files, %" PRIu64
		       " chunks, %.2f MB stored\n", trace_path, tr.n, tr.unmapped, tr.files,
		       tr.chunks, tr.touched_stored / 1e6);
		printf("link: rtt %g ms, %g MB/s per request, %s%g MB/s total, %u conns; "
		       "client %g ns/byte on %g cores; think %s\n",
		       m.rtt_s * 1e3, m.conn_rate / 1e6, m.total_rate > 0 ? "" : "no cap on ",
		       m.total_rate / 1e6, m.conns, m.cpu_s_per_byte * 1e9, m.cores,
		       m.think_fixed ? "fixed" : "from trace");
		printf("%-10s %10s %7s %9s %11s %6s  %s\n", "policy", "time_ms", "rounds",
		       "requests", "MB_fetched", "amp", "limit");
	}
	for (int p = 0; p < POL_COUNT; p++) {
		struct result r;

		if (pol != POL_COUNT && pol != p)
			continue;
		ret = simulate(&m, &im, &tr, list, nlist, (enum policy)p, &r);
		if (ret < 0) {
			fprintf(stderr, PROG ": %s: %s\n", policy_names[p], cfs_strerror(ret));
			goto out;
		}
		if (json)
			print_json(policy_names[p], &r, &tr, &m, &im);
		else
			print_row(policy_names[p], &r, &tr);
	}
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, PROG ": stdout: %s\n", strerror(errno));
		goto out;
	}
	rc = 0;
out:
	free(list);
	free(tr.r);
	image_release(&im);
	cfs_open_close(&op);
	cfs_open_opts_release(&oo);
	return rc;
}
