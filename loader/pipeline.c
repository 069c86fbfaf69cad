/* SPDX-License-Identifier: MIT */
/*
 * cfs_model_load(): placement, then one of two paths.
 *
 * Placement: tensors in (shard, file offset) order, each at the next
 * offset aligned to opts.align, in one allocation of the target.
 *
 * In place (host target, buffered reads, not opts.staged): every tensor is
 * read straight into its destination, in pieces of slot_size/reads with
 * slots*reads of them in flight; tensors that follow each other in the
 * file and in the allocation are read as one.  One copy, the kernel's.
 *
 * Staged (the cuda target, O_DIRECT, or opts.staged): each shard's bytes
 * are cut into slot-sized windows (aligned for O_DIRECT), read into a ring
 * of opts.slots staging slots, each window as opts.reads reads.  When a
 * window's reads are all in, the pieces of every tensor it overlaps are
 * queued as copies to their destinations (merged where contiguous) and
 * the slot is marked done; a slot is read into again only once its
 * copies are over.  So reads of later windows are in flight while the
 * copies of earlier ones run, and a tensor may span any number of
 * windows.
 *
 * read_s is measured at the pipeline's own submit and reap points (the
 * completion time of a read is when the pipeline sees it).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "loader_i.h"
#include "util.h"

#define DEFAULT_SLOT_SIZE (16u << 20)
#define DEFAULT_SLOTS 4u
#define DEFAULT_READS 4u
#define DEFAULT_ALIGN 256u
#define MAX_SLOT_SIZE ((size_t)1 << 30)
#define MAX_SLOTS 256u
#define MAX_ALIGN ((size_t)1 << 30)
#define STAGING_ALIGN 4096u
#define REAP_MAX 64u
#define VERIFY_CHUNK ((size_t)16 << 20)
#define STALL_NS 20000u /* a slot_wait longer than this waited for copies */

CFS_EXPORT void cfs_load_opts_init(struct cfs_load_opts *o)
{
	if (!o)
		return;
	*o = (struct cfs_load_opts){
		.target = CFS_TARGET_HOST,
		.device = 0,
		.slot_size = DEFAULT_SLOT_SIZE,
		.slots = DEFAULT_SLOTS,
		.reads = DEFAULT_READS,
		.align = DEFAULT_ALIGN,
		.direct_io = -1,
		.staged = 0,
	};
}

/* Defaults for zeros, bounds for the rest. */
static int opts_normalize(const struct cfs_load_opts *in, struct cfs_load_opts *o, char *err,
			  size_t errlen)
{
	if (in)
		*o = *in;
	else
		cfs_load_opts_init(o);
	if (o->target != CFS_TARGET_HOST && o->target != CFS_TARGET_CUDA)
		return cfs_load_err(err, errlen, -EINVAL, "unknown target %d", o->target);
	if (!o->slot_size)
		o->slot_size = DEFAULT_SLOT_SIZE;
	if (o->slot_size > MAX_SLOT_SIZE)
		return cfs_load_err(err, errlen, -EINVAL, "slot size %zu: at most %zu", o->slot_size,
				    MAX_SLOT_SIZE);
	o->slot_size = CFS_ALIGN_UP(o->slot_size, (size_t)STAGING_ALIGN);
	if (!o->slots)
		o->slots = DEFAULT_SLOTS;
	if (o->slots > MAX_SLOTS)
		return cfs_load_err(err, errlen, -EINVAL, "%u slots: at most %u", o->slots,
				    MAX_SLOTS);
	if (!o->reads)
		o->reads = DEFAULT_READS;
	/* Each read at least a page (and aligned for O_DIRECT). */
	o->reads = (unsigned)CFS_MIN((size_t)o->reads, o->slot_size / STAGING_ALIGN);
	if (!o->align)
		o->align = DEFAULT_ALIGN;
	if (o->align & (o->align - 1) || o->align > MAX_ALIGN)
		return cfs_load_err(err, errlen, -EINVAL,
				    "alignment %zu: a power of two up to %zu expected", o->align,
				    MAX_ALIGN);
	if (o->direct_io < 0)
		o->direct_io = -1;
	else if (o->direct_io > 0)
		o->direct_io = 1;
	o->staged = !!o->staged;
	return 0;
}

static const struct cfs_target_ops *target_ops(int kind)
{
	return kind == CFS_TARGET_CUDA ? &cfs_target_cuda : &cfs_target_host;
}

static double secs(uint64_t ns)
{
	return (double)ns * 1e-9;
}

/* A target error as a message: the CUDA runtime's text when there is one. */
static int target_err(struct cfs_target *t, char *err, size_t errlen, int ret, const char *what)
{
	const char *detail = cfs_target_cuda_error(t);

	if (detail)
		return cfs_load_err(err, errlen, ret, "%s on %s device %d: %s", what, t->ops->name,
				    t->device, detail);
	return cfs_load_err(err, errlen, ret, "%s on %s: %s", what, t->ops->name,
			    cfs_strerror(ret));
}

/* ---- the load in progress ---- */

struct load {
	struct cfs_model *m;
	struct cfs_load_opts o;
	struct cfs_target *t;
	struct cfs_reader *r;
	char *base;
	const uint64_t *dst_off;
	struct cfs_load_stats *st;
	char *err;
	size_t errlen;

	unsigned inflight;      /* reads */
	uint64_t busy_since;    /* ns, while inflight > 0 */
	uint64_t read_ns;
};

static void note_submit(struct load *L)
{
	if (L->inflight++ == 0)
		L->busy_since = cfs_now_ns();
}

static void note_done(struct load *L)
{
	if (--L->inflight == 0)
		L->read_ns += cfs_now_ns() - L->busy_since;
}

static int read_err(struct load *L, unsigned shard, uint64_t off, ssize_t res, size_t want)
{
	const char *path = L->m->shards[shard].path;

	if (res < 0)
		return cfs_load_err(L->err, L->errlen, (int)res, "%s: read at offset %" PRIu64 ": %s",
				    path, off, cfs_strerror((int)res));
	return cfs_load_err(L->err, L->errlen, -EIO,
			    "%s: short read at offset %" PRIu64 " (%zd of %zu bytes): the file "
			    "shrank while being loaded", path, off, res, want);
}

/* Bytes a read of len at off must return: all of them but past the end. */
static size_t read_need(const struct cfs_shard *sh, uint64_t off, size_t len)
{
	if (off >= sh->size)
		return 0;
	return (size_t)CFS_MIN((uint64_t)len, sh->size - off);
}

/* The reads that are done, at least one; 0 when none is in flight. */
static int reap(struct load *L, struct cfs_read_done *done)
{
	int n;

	if (!L->inflight)
		return 0;
	if (!cfs_reader_ready(L->r))
		L->st->read_stalls++;
	/* 0 from the reader: a short read went out again for the rest. */
	do {
		n = cfs_reader_reap(L->r, done, REAP_MAX);
	} while (n == 0);
	if (n < 0)
		return cfs_load_err(L->err, L->errlen, n, "reading the model: %s", cfs_strerror(n));
	return n;
}

/* ---- in place ---- */

struct piece_req {
	unsigned shard;
	uint64_t off;
	size_t len;
	unsigned next;  /* free list */
};

static int load_in_place(struct load *L)
{
	const struct cfs_model *m = L->m;
	size_t piece = L->o.slot_size / L->o.reads;
	unsigned depth = L->o.slots * L->o.reads, free_head, i;
	struct cfs_read_done done[REAP_MAX];
	struct piece_req *reqs;
	size_t ti = 0;                /* next tensor to start a run with */
	uint64_t run_off = 0, run_left = 0;
	char *run_dst = NULL;
	unsigned run_shard = 0;
	int ret = 0, n;

	reqs = calloc(depth, sizeof(*reqs));
	if (!reqs)
		return cfs_load_err(L->err, L->errlen, -ENOMEM, "%s", strerror(ENOMEM));
	for (i = 0; i < depth; i++)
		reqs[i].next = i + 1 < depth ? i + 1 : UINT32_MAX;
	free_head = 0;

	for (;;) {
		/* Submit pieces while there is room. */
		while (free_head != UINT32_MAX) {
			struct piece_req *q;
			size_t len;

			if (!run_left) {
				/* The next run: tensors contiguous in file and allocation. */
				while (ti < m->ntensors && !m->tensors[ti].nbytes)
					ti++;
				if (ti == m->ntensors)
					break;
				run_shard = m->tensors[ti].shard;
				run_off = m->tensors[ti].file_off;
				run_dst = L->base + L->dst_off[ti];
				run_left = m->tensors[ti].nbytes;
				for (ti++; ti < m->ntensors; ti++) {
					const struct cfs_tensor *t = &m->tensors[ti];

					if (!t->nbytes)
						continue;
					if (t->shard != run_shard || t->file_off != run_off + run_left ||
					    L->base + L->dst_off[ti] != run_dst + run_left)
						break;
					run_left += t->nbytes;
				}
			}
			len = (size_t)CFS_MIN((uint64_t)piece, run_left);
			i = free_head;
			q = &reqs[i];
			free_head = q->next;
			*q = (struct piece_req){ .shard = run_shard, .off = run_off, .len = len };
			ret = cfs_reader_submit(L->r, run_shard, run_dst, len, run_off, i);
			if (ret < 0) {
				cfs_load_err(L->err, L->errlen, ret, "%s: read at offset %" PRIu64 ": %s",
					     m->shards[run_shard].path, run_off, cfs_strerror(ret));
				goto out;
			}
			note_submit(L);
			run_off += len;
			run_dst += len;
			run_left -= len;
		}
		n = reap(L, done);
		if (n <= 0) {
			ret = n;
			break;
		}
		for (int k = 0; k < n; k++) {
			struct piece_req *q = &reqs[done[k].tag];

			note_done(L);
			if (done[k].res < 0 || (size_t)done[k].res != q->len) {
				ret = read_err(L, q->shard, q->off, done[k].res, q->len);
				goto out;
			}
			L->st->read_bytes += q->len;
			q->next = free_head;
			free_head = done[k].tag;
		}
	}
out:
	free(reqs);
	return ret;
}

/* ---- staged ---- */

enum slot_state { SLOT_FREE = 0, SLOT_READING, SLOT_COPYING };

struct slot {
	enum slot_state state;
	char *buf;
	unsigned shard;
	uint64_t start;      /* the window in the file */
	size_t len;
	size_t first;        /* first tensor that may overlap it */
	unsigned pending;    /* reads not yet in */
};

/* Where the windows stand: the next one to read. */
struct windows {
	unsigned shard;
	uint64_t next, end;  /* of the current shard */
	size_t tensor;       /* first tensor of the shard ending after next */
	bool started, done;
};

/* The byte range of a shard's tensors, aligned to the reader's align. */
static bool shard_range(const struct cfs_model *m, unsigned s, size_t from, size_t align,
			uint64_t *start, uint64_t *end, size_t *first)
{
	uint64_t lo = UINT64_MAX, hi = 0;
	size_t i;

	for (i = from; i < m->ntensors && m->tensors[i].shard == s; i++) {
		const struct cfs_tensor *t = &m->tensors[i];

		if (!t->nbytes)
			continue;
		lo = CFS_MIN(lo, t->file_off);
		hi = CFS_MAX(hi, t->file_off + t->nbytes);
	}
	if (lo >= hi)
		return false;
	*start = lo / align * align;
	*end = CFS_ALIGN_UP(hi, (uint64_t)align);
	*first = from;
	return true;
}

/* The next window; false when there is none. */
static bool window_next(struct load *L, struct windows *w, unsigned *shard, uint64_t *start,
			size_t *len, size_t *first)
{
	const struct cfs_model *m = L->m;
	size_t align = cfs_reader_align(L->r);

	while (!w->done && (!w->started || w->next >= w->end)) {
		size_t from = w->tensor;

		if (w->started) {
			/* Past the current shard's tensors. */
			while (from < m->ntensors && m->tensors[from].shard == w->shard)
				from++;
		}
		w->started = true;
		if (from >= m->ntensors) {
			w->done = true;
			break;
		}
		w->shard = m->tensors[from].shard;
		w->tensor = from;
		if (!shard_range(m, w->shard, from, align, &w->next, &w->end, &w->tensor)) {
			w->next = w->end = 0;
			continue;
		}
	}
	if (w->done)
		return false;
	*shard = w->shard;
	*start = w->next;
	*len = (size_t)CFS_MIN((uint64_t)L->o.slot_size, w->end - w->next);
	/* Skip the tensors that end before this window. */
	while (w->tensor < m->ntensors && m->tensors[w->tensor].shard == w->shard &&
	       m->tensors[w->tensor].file_off + m->tensors[w->tensor].nbytes <= w->next)
		w->tensor++;
	*first = w->tensor;
	w->next += *len;
	return true;
}

static int slot_wait(struct load *L, unsigned k, struct slot *sl)
{
	uint64_t t0 = cfs_now_ns();
	int ret;

	if (sl->state != SLOT_COPYING)
		return 0;
	sl->state = SLOT_FREE;
	ret = L->t->ops->slot_wait(L->t, k);
	if (cfs_now_ns() - t0 > STALL_NS)
		L->st->copy_stalls++;
	L->st->copy_s += L->t->ops->slot_time(L->t, k);
	if (ret < 0)
		return target_err(L->t, L->err, L->errlen, ret, "copy");
	return 0;
}

/* Queues the copies of every tensor piece in the window of slot k. */
static int slot_copy(struct load *L, unsigned k, struct slot *sl)
{
	const struct cfs_model *m = L->m;
	const struct cfs_target_ops *ops = L->t->ops;
	uint64_t wend = sl->start + sl->len;
	char *cdst = NULL;
	const char *csrc = NULL;
	size_t clen = 0, i;
	int ret;

	for (i = sl->first; i < m->ntensors; i++) {
		const struct cfs_tensor *t = &m->tensors[i];
		uint64_t a, b;
		char *dst;
		const char *src;

		if (t->shard != sl->shard || t->file_off >= wend)
			break;
		a = CFS_MAX(t->file_off, sl->start);
		b = CFS_MIN(t->file_off + t->nbytes, wend);
		if (a >= b)
			continue;
		dst = L->base + L->dst_off[i] + (a - t->file_off);
		src = sl->buf + (a - sl->start);
		if (clen && cdst + clen == dst && csrc + clen == src) {
			clen += (size_t)(b - a);
			continue;
		}
		if (clen) {
			ret = ops->copy(L->t, k, cdst, csrc, clen);
			if (ret < 0)
				return target_err(L->t, L->err, L->errlen, ret, "copy");
		}
		cdst = dst;
		csrc = src;
		clen = (size_t)(b - a);
	}
	if (clen) {
		ret = ops->copy(L->t, k, cdst, csrc, clen);
		if (ret < 0)
			return target_err(L->t, L->err, L->errlen, ret, "copy");
	}
	ret = ops->slot_done(L->t, k);
	if (ret < 0)
		return target_err(L->t, L->err, L->errlen, ret, "copy");
	sl->state = SLOT_COPYING;
	return 0;
}

/* Submits the reads of window (shard, start, len) into slot k. */
static int slot_read(struct load *L, unsigned k, struct slot *sl)
{
	size_t align = cfs_reader_align(L->r), per, off;
	unsigned j;
	int ret;

	per = CFS_ALIGN_UP((sl->len + L->o.reads - 1) / L->o.reads, CFS_MAX(align, (size_t)1));
	sl->state = SLOT_READING;
	sl->pending = 0;
	for (j = 0, off = 0; off < sl->len; j++, off += per) {
		size_t len = CFS_MIN(per, sl->len - off);

		ret = cfs_reader_submit(L->r, sl->shard, sl->buf + off, len, sl->start + off,
					k * L->o.reads + j);
		if (ret < 0)
			return cfs_load_err(L->err, L->errlen, ret, "%s: read at offset %" PRIu64 ": %s",
					    L->m->shards[sl->shard].path, sl->start + off,
					    cfs_strerror(ret));
		note_submit(L);
		sl->pending++;
	}
	return 0;
}

static int load_staged(struct load *L, char *staging)
{
	const struct cfs_model *m = L->m;
	unsigned nslots = L->o.slots, k, next = 0;
	size_t align = cfs_reader_align(L->r);
	struct cfs_read_done done[REAP_MAX];
	struct windows w = { 0 };
	struct slot *slots;
	bool more = true;
	int ret = 0, n, i;

	slots = calloc(nslots, sizeof(*slots));
	if (!slots)
		return cfs_load_err(L->err, L->errlen, -ENOMEM, "%s", strerror(ENOMEM));
	for (k = 0; k < nslots; k++)
		slots[k].buf = staging + (size_t)k * L->o.slot_size;

	for (;;) {
		/* Read into every slot whose last window's copies are queued,
		 * in window order. */
		while (more) {
			struct slot *sl = &slots[next];

			if (sl->state == SLOT_READING)
				break;
			ret = slot_wait(L, next, sl);
			if (ret < 0)
				goto out;
			more = window_next(L, &w, &sl->shard, &sl->start, &sl->len, &sl->first);
			if (!more)
				break;
			ret = slot_read(L, next, sl);
			if (ret < 0)
				goto out;
			next = (next + 1) % nslots;
		}
		n = reap(L, done);
		if (n <= 0) {
			ret = n;
			break;
		}
		for (i = 0; i < n; i++) {
			unsigned kk = done[i].tag / L->o.reads, j = done[i].tag % L->o.reads;
			struct slot *sl = &slots[kk];
			size_t per = CFS_ALIGN_UP((sl->len + L->o.reads - 1) / L->o.reads,
						  CFS_MAX(align, (size_t)1));
			uint64_t off = sl->start + (uint64_t)j * per;
			size_t len = CFS_MIN(per, sl->len - (size_t)j * per);
			size_t need = read_need(&m->shards[sl->shard], off, len);

			note_done(L);
			sl->pending--;
			if (done[i].res < 0 || (size_t)done[i].res < need) {
				ret = read_err(L, sl->shard, off, done[i].res, need);
				goto out;
			}
			L->st->read_bytes += (uint64_t)done[i].res;
			if (!sl->pending) {
				ret = slot_copy(L, kk, sl);
				if (ret < 0)
					goto out;
			}
		}
	}
	/* The last copies. */
	for (k = 0; ret == 0 && k < nslots; k++)
		ret = slot_wait(L, k, &slots[k]);
out:
	if (ret < 0) {
		/* No copy may read a slot after this returns: the caller frees
		 * the staging memory (the reader is drained by its free). */
		for (k = 0; k < nslots; k++)
			if (slots[k].state == SLOT_COPYING)
				L->t->ops->slot_wait(L->t, k);
	}
	free(slots);
	return ret;
}

/* ---- the public calls ---- */

static void loaded_unlink(struct cfs_loaded *l)
{
	struct cfs_loaded **p;

	if (!l->m)
		return;
	for (p = &l->m->loads; *p; p = &(*p)->next) {
		if (*p == l) {
			*p = l->next;
			break;
		}
	}
}

CFS_EXPORT void cfs_loaded_free(struct cfs_loaded *l)
{
	if (!l)
		return;
	loaded_unlink(l);
	if (l->t) {
		l->t->ops->free(l->t, l->base);
		l->t->ops->close(l->t);
	}
	free(l->dst_off);
	free(l);
}

CFS_EXPORT int cfs_model_load(struct cfs_model *m, const struct cfs_load_opts *opts,
			      struct cfs_loaded **out, char *err, size_t errlen)
{
	struct load L = { .m = m, .err = err, .errlen = errlen };
	const struct cfs_target_ops *ops;
	struct cfs_loaded *l;
	char *staging = NULL;
	size_t staging_len = 0;
	uint64_t t0 = cfs_now_ns(), size = 0;
	size_t i;
	bool in_place;
	int ret;

	if (out)
		*out = NULL;
	if (!m || !out)
		return cfs_load_err(err, errlen, -EINVAL, "cfs_model_load: model and out are required");
	ret = opts_normalize(opts, &L.o, err, errlen);
	if (ret < 0)
		return ret;
	ops = target_ops(L.o.target);

	l = calloc(1, sizeof(*l));
	if (!l)
		return cfs_load_err(err, errlen, -ENOMEM, "%s", strerror(ENOMEM));
	l->m = m;
	l->target = L.o.target;
	l->device = L.o.target == CFS_TARGET_CUDA ? L.o.device : 0;
	L.st = &l->stats;
	l->dst_off = calloc(m->ntensors ? m->ntensors : 1, sizeof(*l->dst_off));
	if (!l->dst_off) {
		ret = cfs_load_err(err, errlen, -ENOMEM, "%s", strerror(ENOMEM));
		goto out_free;
	}
	for (i = 0; i < m->ntensors; i++) {
		uint64_t at = CFS_ALIGN_UP(size, (uint64_t)L.o.align);

		if (at < size || at + m->tensors[i].nbytes < at) {
			ret = cfs_load_err(err, errlen, -EOVERFLOW, "the model does not fit in memory");
			goto out_free;
		}
		l->dst_off[i] = at;
		size = at + m->tensors[i].nbytes;
	}
	if (size > SIZE_MAX) {
		ret = cfs_load_err(err, errlen, -ENOMEM, "%" PRIu64 " bytes do not fit in memory",
				   size);
		goto out_free;
	}
	L.dst_off = l->dst_off;
	l->size = size;
	l->stats.bytes = m->bytes;

	ret = cfs_reader_new(m, &L.o, &L.r, err, errlen);
	if (ret < 0)
		goto out_free;
	in_place = ops->host_visible && !L.o.staged && !cfs_reader_direct(L.r);
	ret = ops->open(&L.o, &L.t, err, errlen);
	if (ret < 0)
		goto out_reader;
	l->t = L.t;
	/* Reads in place fault the pages in themselves, on io_uring's workers
	 * in parallel and each page once, zeroing and filling back to back:
	 * measured faster than populating first (2 GiB warm: 0.12-0.14 s
	 * against 0.17-0.20 s).  Copies from a staging ring run on one
	 * thread, which must not take the faults. */
	L.t->lazy_alloc = in_place;
	ret = ops->alloc(L.t, (size_t)size, &l->base);
	if (ret < 0) {
		char what[64];

		snprintf(what, sizeof(what), "allocating %" PRIu64 " bytes", size);
		target_err(L.t, err, errlen, ret, what);
		goto out_close;
	}
	L.base = l->base;

	if (!in_place) {
		staging_len = (size_t)L.o.slots * L.o.slot_size;
		ret = ops->alloc_staging(L.t, staging_len, (void **)&staging);
		if (ret < 0) {
			char what[80];

			snprintf(what, sizeof(what), "allocating %zu bytes of staging memory",
				 staging_len);
			target_err(L.t, err, errlen, ret, what);
			goto out_dealloc;
		}
	}
	l->stats.setup_s = secs(cfs_now_ns() - t0);
	l->stats.direct_io = cfs_reader_direct(L.r);
	l->stats.in_place = in_place;
	l->stats.uring = cfs_reader_uring(L.r);

	ret = in_place ? load_in_place(&L) : load_staged(&L, staging);
	/* Drains the reads in flight before their buffers go. */
	cfs_reader_free(L.r);
	L.r = NULL;
	if (staging)
		ops->free_staging(L.t, staging, staging_len);
	if (ret < 0)
		goto out_dealloc;
	l->stats.read_s = secs(L.read_ns);
	l->stats.total_s = secs(cfs_now_ns() - t0);
	l->next = m->loads;
	m->loads = l;
	*out = l;
	return 0;

out_dealloc:
	ops->free(L.t, l->base);
	l->base = NULL;
out_close:
	ops->close(L.t);
	l->t = NULL;
out_reader:
	cfs_reader_free(L.r);
out_free:
	free(l->dst_off);
	free(l);
	return ret;
}

CFS_EXPORT void *cfs_loaded_base(const struct cfs_loaded *l)
{
	return l ? l->base : NULL;
}

CFS_EXPORT uint64_t cfs_loaded_size(const struct cfs_loaded *l)
{
	return l ? l->size : 0;
}

CFS_EXPORT void *cfs_loaded_tensor_ptr(const struct cfs_loaded *l, size_t i)
{
	if (!l || i >= l->m->ntensors)
		return NULL;
	return (char *)l->base + l->dst_off[i];
}

CFS_EXPORT int cfs_loaded_target(const struct cfs_loaded *l)
{
	return l ? l->target : -1;
}

CFS_EXPORT int cfs_loaded_device(const struct cfs_loaded *l)
{
	return l ? l->device : -1;
}

CFS_EXPORT void cfs_loaded_stats(const struct cfs_loaded *l, struct cfs_load_stats *out)
{
	if (!out)
		return;
	if (l)
		*out = l->stats;
	else
		memset(out, 0, sizeof(*out));
}

CFS_EXPORT int cfs_loaded_verify(struct cfs_loaded *l, char *err, size_t errlen)
{
	const struct cfs_model *m;
	struct cfs_src *src;
	char *want = NULL, *got = NULL;
	size_t i, chunk;
	int ret = 0;

	if (!l)
		return cfs_load_err(err, errlen, -EINVAL, "cfs_loaded_verify: no load");
	m = l->m;
	src = m->src;
	chunk = (size_t)CFS_MIN((uint64_t)VERIFY_CHUNK, CFS_MAX(m->bytes, (uint64_t)1));
	want = malloc(chunk);
	got = malloc(chunk);
	if (!want || !got) {
		ret = cfs_load_err(err, errlen, -ENOMEM, "%s", strerror(ENOMEM));
		goto out;
	}
	for (i = 0; i < m->ntensors; i++) {
		const struct cfs_tensor *t = &m->tensors[i];
		const struct cfs_shard *sh = &m->shards[t->shard];
		uint64_t done;

		for (done = 0; done < t->nbytes; done += chunk) {
			size_t len = (size_t)CFS_MIN((uint64_t)chunk, t->nbytes - done);
			ssize_t n = src->ops->pread(src, sh->h, want, len, t->file_off + done);

			if (n < 0 || (size_t)n != len) {
				ret = cfs_load_err(err, errlen, n < 0 ? (int)n : -EIO,
						   "%s: read at offset %" PRIu64 ": %s", sh->path,
						   t->file_off + done,
						   n < 0 ? cfs_strerror((int)n) : "short read");
				goto out;
			}
			ret = l->t->ops->download(l->t, got, (char *)l->base + l->dst_off[i] + done,
						  len);
			if (ret < 0) {
				target_err(l->t, err, errlen, ret, "copy back");
				goto out;
			}
			if (memcmp(want, got, len)) {
				size_t b = 0;

				while (want[b] == got[b])
					b++;
				ret = cfs_load_err(err, errlen, -EBADMSG,
						   "tensor %s differs from %s at byte %" PRIu64, t->name,
						   sh->path, done + b);
				goto out;
			}
		}
	}
out:
	free(got);
	free(want);
	return ret;
}

CFS_EXPORT int cfs_target_probe(const struct cfs_load_opts *opts, size_t size, unsigned reps,
				double *bytes_per_s, char *err, size_t errlen)
{
	const struct cfs_target_ops *ops;
	struct cfs_load_opts o;
	struct cfs_target *t;
	int ret;

	if (!bytes_per_s)
		return cfs_load_err(err, errlen, -EINVAL, "cfs_target_probe: bytes_per_s is required");
	ret = opts_normalize(opts, &o, err, errlen);
	if (ret < 0)
		return ret;
	ops = target_ops(o.target);
	ret = ops->open(&o, &t, err, errlen);
	if (ret < 0)
		return ret;
	ret = ops->probe(t, size, reps, bytes_per_s, err, errlen);
	ops->close(t);
	return ret;
}
