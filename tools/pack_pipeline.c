/* SPDX-License-Identifier: MIT */
/*
 * The cfs-pack pipeline: what every source feeds into, built into
 * libcfspack (tools/meson.build) for cfs-pack and the pack fuzzers.
 *
 * The source (the caller's thread) feeds the builder and the chunker;
 * sealed chunks go through a bounded queue to N workers that hash,
 * compress and store them, so memory stays bounded however large the
 * files are.  The index is written last, after every chunk is durable:
 * a tag set after cfs_pack_finish() never names an incomplete image.
 * The first failure of any thread is kept in the context as a message,
 * so that the caller reports the cause, not its consequences.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "builder.h"
#include "chunker.h"
#include "codec.h"
#include "digest.h"
#include "format.h"
#include "index.h"
#include "origin.h"
#include "store.h"
#include "util.h"

#include "pack.h"

#define PROGRESS_NS 500000000ull

struct job {
	struct cfs_builder *b;  /* whose chunk it is: a layer's, for image sources */
	uint32_t chunk;
	void *data;
	size_t len;
};

struct cfs_pack_pipe {
	pthread_mutex_t mu;
	pthread_cond_t not_empty, not_full, idle;
	struct job *q;
	size_t cap, head, count;
	size_t busy;           /* jobs taken and not done */
	bool closing;
	int err;               /* first worker error; stops the feed */

	struct cfs_pack_ctx *p;
	uint32_t chunk_size;

	/* Under mu. */
	uint64_t chunks, new_objects, present, stored_bytes;

	pthread_t *threads;
	unsigned nthreads, started;

	bool progress;
	uint64_t t0, last_progress;
};

int cfs_pack_fail(struct cfs_pack_ctx *p, int err, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&p->fail_mu);
	if (!p->fail_err) {
		p->fail_err = err;
		va_start(ap, fmt);
		vsnprintf(p->fail_msg, sizeof(p->fail_msg), fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&p->fail_mu);
	return err;
}

const char *cfs_pack_error(const struct cfs_pack_ctx *p)
{
	return p->fail_msg;
}

void cfs_pack_set_config(struct cfs_pack_ctx *p, void *config, size_t len)
{
	free(p->config);
	p->config = config;
	p->config_len = len;
}

int cfs_pack_set_origin(struct cfs_pack_ctx *p, const char *source, const cfs_digest *manifest,
			const cfs_digest *top)
{
	struct cfs_origin *o = calloc(1, sizeof(*o));

	if (!o)
		return cfs_pack_fail(p, -ENOMEM, "%s", cfs_strerror(-ENOMEM));
	snprintf(o->source, sizeof(o->source), "%s", source);
	o->manifest = *manifest;
	if (top && !cfs_digest_eq(top, manifest)) {
		o->has_top = true;
		o->top = *top;
	}
	free(p->origin);
	p->origin = o;
	return 0;
}

/* The origin beside image ref: a warning when it cannot be written. */
static void origin_put(struct cfs_pack_ctx *p, const cfs_digest *ref)
{
	char *buf;
	size_t len;
	int ret;

	/* the layers whose records went to the store (borrowed) */
	p->origin->layers = p->layer_blobs;
	p->origin->nlayers = p->nlayer_blobs;
	ret = cfs_origin_format(p->origin, &buf, &len);
	if (ret == 0) {
		ret = cfs_store_image_file_set(p->st, CFS_IMAGE_ORIGIN, ref, buf, len);
		free(buf);
	}
	if (ret < 0)
		cfs_warn("%s: the image's origin: %s", cfs_store_location(p->st), cfs_strerror(ret));
}

/* ---- workers ---- */

static int store_chunk(struct cfs_pack_pipe *pp, const struct job *j, void *obj, size_t cap,
		       bool *is_new, size_t *stored)
{
	struct cfs_pack_ctx *p = pp->p;
	cfs_digest d;
	char hex[CFS_DIGEST_HEX_LEN + 1];
	uint64_t oldlen;
	ssize_t n;
	int ret;

	cfs_sha256(j->data, j->len, &d);
	ret = cfs_store_has(p->st, &d, &oldlen);
	if (ret == 1) {
		/* Present: nothing to upload.  The index records the size of the
		 * object the store holds, which is what a reader will fetch. */
		*is_new = false;
		*stored = (size_t)oldlen;
		goto set;
	} else if (ret < 0) {
		goto fail;
	}
	n = cfs_obj_encode(obj, cap, j->data, j->len, p->level);
	if (n < 0) {
		ret = (int)n;
		cfs_digest_hex(&d, hex);
		return cfs_pack_fail(p, ret, "compressing chunk %s: %s", hex, cfs_strerror(ret));
	}
	ret = cfs_store_put_absent(p->st, &d, obj, (size_t)n);
	if (ret < 0)
		goto fail;
	*is_new = ret == 1;
	*stored = (size_t)n;
set:
	ret = cfs_builder_chunk_set(j->b, j->chunk, &d, (uint32_t)j->len, (uint32_t)*stored);
	if (ret < 0)
		return cfs_pack_fail(p, ret, "recording chunk %u: %s", j->chunk, cfs_strerror(ret));
	return 0;
fail:
	cfs_digest_hex(&d, hex);
	return cfs_pack_fail(p, ret, "%s: object %s: %s", cfs_store_location(p->st), hex,
			     cfs_strerror(ret));
}

static void *worker(void *arg)
{
	struct cfs_pack_pipe *pp = arg;
	size_t cap = cfs_obj_bound(pp->chunk_size);
	void *obj = malloc(cap);

	for (;;) {
		struct job j;
		bool skip, is_new = false;
		size_t stored = 0;
		int ret;

		pthread_mutex_lock(&pp->mu);
		while (!pp->count && !pp->closing)
			pthread_cond_wait(&pp->not_empty, &pp->mu);
		if (!pp->count) {
			pthread_mutex_unlock(&pp->mu);
			break;
		}
		j = pp->q[pp->head];
		pp->head = (pp->head + 1) % pp->cap;
		pp->count--;
		pp->busy++;
		pthread_cond_signal(&pp->not_full);
		if (!obj && !pp->err) {
			pp->err = cfs_pack_fail(pp->p, -ENOMEM, "worker buffer: %s",
						cfs_strerror(-ENOMEM));
			pthread_cond_broadcast(&pp->not_full);
		}
		skip = pp->err != 0;
		pthread_mutex_unlock(&pp->mu);

		/* After an error the queue is only drained, so that the feed
		 * never waits on a full queue nobody serves. */
		ret = skip ? 0 : store_chunk(pp, &j, obj, cap, &is_new, &stored);
		free(j.data);

		pthread_mutex_lock(&pp->mu);
		if (--pp->busy == 0 && !pp->count)
			pthread_cond_broadcast(&pp->idle);
		if (skip) {
			pthread_mutex_unlock(&pp->mu);
			continue;
		}
		if (ret < 0) {
			if (!pp->err)
				pp->err = ret;
			pthread_cond_broadcast(&pp->not_full);
		} else if (is_new) {
			pp->new_objects++;
			pp->stored_bytes += stored;
		} else {
			pp->present++;
		}
		pthread_mutex_unlock(&pp->mu);
	}
	free(obj);
	return NULL;
}

static void progress(struct cfs_pack_pipe *pp, bool final)
{
	uint64_t now = cfs_now_ns();
	double s;

	if (!pp->progress || (!final && now - pp->last_progress < PROGRESS_NS))
		return;
	pp->last_progress = now;
	if (final) {
		fputs("\r\033[K", stderr);
		return;
	}
	s = (double)(now - pp->t0) / 1e9;
	fprintf(stderr, "\r\033[Kcfs-pack: %llu files, %.1f MB, %llu chunks, %.1f s",
		(unsigned long long)pp->p->files, (double)pp->p->bytes_in / 1e6,
		(unsigned long long)pp->chunks, s);
}

/* The chunker's emit: queue the chunk, waiting while the queue is full. */
static int emit(void *ctx, uint32_t chunk, void *data, size_t len)
{
	struct cfs_pack_pipe *pp = ctx;
	int err;

	pthread_mutex_lock(&pp->mu);
	while (pp->count == pp->cap && !pp->err)
		pthread_cond_wait(&pp->not_full, &pp->mu);
	err = pp->err;
	if (!err) {
		/* the builder the chunker fills, which the source owns */
		pp->q[(pp->head + pp->count) % pp->cap] = (struct job){ pp->p->b, chunk, data, len };
		pp->count++;
		pp->chunks++;
		pthread_cond_signal(&pp->not_empty);
	}
	pthread_mutex_unlock(&pp->mu);
	if (err) {
		free(data);
		return err;
	}
	progress(pp, false);
	return 0;
}

static int pipe_start(struct cfs_pack_pipe *pp, unsigned nthreads)
{
	int ret;

	pp->nthreads = nthreads;
	pp->cap = 2 * (size_t)nthreads;
	pp->q = calloc(pp->cap, sizeof(*pp->q));
	pp->threads = calloc(nthreads, sizeof(*pp->threads));
	if (!pp->q || !pp->threads)
		return -ENOMEM;
	for (pp->started = 0; pp->started < nthreads; pp->started++) {
		ret = pthread_create(&pp->threads[pp->started], NULL, worker, pp);
		if (ret)
			return -ret;
	}
	return 0;
}

/* Lets the workers finish the queue and stop; returns their first error. */
static int pipe_stop(struct cfs_pack_pipe *pp)
{
	pthread_mutex_lock(&pp->mu);
	pp->closing = true;
	pthread_cond_broadcast(&pp->not_empty);
	pthread_mutex_unlock(&pp->mu);
	for (unsigned i = 0; i < pp->started; i++)
		pthread_join(pp->threads[i], NULL);
	pp->started = 0;
	/* Anything still queued (no thread could start) is dropped. */
	while (pp->count) {
		free(pp->q[pp->head].data);
		pp->head = (pp->head + 1) % pp->cap;
		pp->count--;
	}
	return pp->err;
}

int cfs_pack_drain(struct cfs_pack_ctx *p)
{
	struct cfs_pack_pipe *pp = p->pipe;
	int err;

	pthread_mutex_lock(&pp->mu);
	while ((pp->count || pp->busy) && pp->started)
		pthread_cond_wait(&pp->idle, &pp->mu);
	err = pp->err;
	pthread_mutex_unlock(&pp->mu);
	return err;
}

int cfs_pack_data(struct cfs_pack_ctx *p, const char *path, uint64_t off, const void *buf,
		  size_t len)
{
	int ret = cfs_chunker_file_data(p->ch, off, buf, len);

	if (ret < 0)
		return cfs_pack_fail(p, ret, "%s: %s", path, cfs_strerror(ret));
	p->bytes_in += len;
	return 0;
}

/* ---- a pack ---- */

/* The store directory's identity, so that the walk can skip it. */
static void note_store(struct cfs_pack_ctx *p, const char *location)
{
	struct stat sb;

	if (!strncmp(location, "file://", 7))
		location += 7;
	if (stat(location, &sb) == 0 && S_ISDIR(sb.st_mode)) {
		p->store_known = true;
		p->store_dev = sb.st_dev;
		p->store_ino = sb.st_ino;
	}
}

int cfs_pack_new(struct cfs_store *st, const struct cfs_pack_opts *o, struct cfs_pack_ctx **out)
{
	struct cfs_pack_ctx *p = calloc(1, sizeof(*p));
	struct cfs_pack_pipe *pp = calloc(1, sizeof(*pp));
	int ret;

	*out = NULL;
	if (!p || !pp) {
		free(p);
		free(pp);
		cfs_err("%s", cfs_strerror(-ENOMEM));
		return -ENOMEM;
	}
	pthread_mutex_init(&p->fail_mu, NULL);
	pthread_mutex_init(&pp->mu, NULL);
	pthread_cond_init(&pp->not_empty, NULL);
	pthread_cond_init(&pp->not_full, NULL);
	pthread_cond_init(&pp->idle, NULL);
	p->pipe = pp;
	p->st = st;
	p->level = o->level;
	p->platform = o->platform;
	p->reg_authfile = o->reg_authfile;
	p->reg_ca_file = o->reg_ca_file;
	p->reg_insecure = o->reg_insecure;
	p->profile = o->profile;
	p->small_max = o->chunker.small_max;
	p->chunk_size = o->chunker.chunk_size;
	pp->p = p;
	pp->chunk_size = o->chunker.chunk_size;
	pp->progress = o->progress;
	pp->t0 = pp->last_progress = cfs_now_ns();
	note_store(p, cfs_store_location(st));

	if (o->profile) {
		ret = cfs_pack_prof_new(o->profile, &p->prof);
		if (ret < 0) {
			cfs_err("profile: %s", cfs_strerror(ret));
			goto fail;
		}
	}
	ret = cfs_builder_new(o->chunker.chunk_size, &p->img);
	if (ret < 0) {
		cfs_err("builder: %s", cfs_strerror(ret));
		goto fail;
	}
	p->b = p->img;
	ret = cfs_chunker_new(&o->chunker, p->b, emit, pp, &p->ch);
	if (ret < 0) {
		cfs_err("chunker: %s", cfs_strerror(ret));
		goto fail;
	}
	ret = pipe_start(pp, o->jobs);
	if (ret < 0) {
		cfs_err("starting workers: %s", cfs_strerror(ret));
		goto fail;
	}
	*out = p;
	return 0;
fail:
	cfs_pack_free(p);
	return ret;
}

void cfs_pack_free(struct cfs_pack_ctx *p)
{
	struct cfs_pack_pipe *pp;

	if (!p)
		return;
	pp = p->pipe;
	/* The workers are joined before anything they use is freed. */
	pipe_stop(pp);
	free(pp->q);
	free(pp->threads);
	pthread_cond_destroy(&pp->not_empty);
	pthread_cond_destroy(&pp->not_full);
	pthread_cond_destroy(&pp->idle);
	pthread_mutex_destroy(&pp->mu);
	free(pp);
	cfs_chunker_free(p->ch);
	cfs_builder_free(p->img);
	cfs_pack_prof_free(p->prof);
	free(p->config);
	free(p->origin);
	free(p->layer_blobs);
	pthread_mutex_destroy(&p->fail_mu);
	free(p);
}

int cfs_pack_run(struct cfs_pack_ctx *p, const struct cfs_pack_source *src, const char *arg,
		 int fd)
{
	int ret, err;

	ret = src->pack(p, arg, fd);
	if (ret == 0) {
		ret = cfs_chunker_flush(p->ch);
		if (ret < 0)
			cfs_pack_fail(p, ret, "chunker: %s", cfs_strerror(ret));
	}
	/* Always drain: the workers must be joined before anything is freed. */
	err = pipe_stop(p->pipe);
	progress(p->pipe, true);
	if (ret == 0)
		ret = err;
	if (ret == 0)
		ret = p->fail_err;
	if (ret < 0 && !p->fail_err)
		cfs_pack_fail(p, ret, "%s", cfs_strerror(ret));
	return ret;
}

int cfs_pack_finish(struct cfs_pack_ctx *p, cfs_digest *ref, struct cfs_pack_stats *stats)
{
	struct cfs_pack_pipe *pp = p->pipe;
	const char *loc = cfs_store_location(p->st);
	struct cfs_builder_stats bs = { 0 };
	size_t idx_len = 0, idx_stored = 0, config_stored = 0, list_stored = 0, count = 0;
	void *idx = NULL;
	int ret;

	ret = cfs_builder_finish(p->img, &idx, &idx_len, &bs);
	if (ret < 0)
		return cfs_pack_fail(p, ret, "building the index: %s", cfs_strerror(ret));
	if (p->config) {
		cfs_digest cd;

		ret = cfs_pack_obj_put(p->st, p->config, p->config_len, p->level, &cd,
				       &config_stored);
		if (ret == 0)
			ret = cfs_index_set_config(idx, idx_len, &cd, p->config_len);
		if (ret < 0) {
			cfs_pack_fail(p, ret, "%s: image config: %s", loc, cfs_strerror(ret));
			goto out;
		}
	}
	if (p->profile) {
		ret = cfs_pack_prefetch_attach(p->st, p->profile, idx, idx_len, p->level, &count,
					       &list_stored);
		if (ret < 0) {
			cfs_pack_fail(p, ret, "%s: prefetch list: %s", loc, cfs_strerror(ret));
			goto out;
		}
	}
	ret = cfs_pack_obj_put(p->st, idx, idx_len, p->level, ref, &idx_stored);
	if (ret < 0) {
		cfs_pack_fail(p, ret, "%s: writing the index: %s", loc, cfs_strerror(ret));
		goto out;
	}
	if (p->origin)
		origin_put(p, ref);
	ret = cfs_store_sync(p->st);
	if (ret < 0) {
		cfs_pack_fail(p, ret, "%s: sync: %s", loc, cfs_strerror(ret));
		goto out;
	}
	if (stats)
		*stats = (struct cfs_pack_stats){
			.files = bs.files,
			.dirs = bs.dirs,
			.bytes_in = p->bytes_in,
			.chunks = pp->chunks,
			.new_objects = pp->new_objects,
			.present = pp->present,
			.written = pp->stored_bytes + idx_stored + list_stored + config_stored +
				   p->layers_stored,
			.index_len = idx_len,
			.prefetch_count = count,
			.t0_ns = pp->t0,
			.elf_files = bs.elf_files,
			.hint_triggers = bs.hint_triggers,
			.hint_lists = bs.hint_lists,
			.hint_entries = bs.hint_entries,
			.elf_unresolved = bs.elf_unresolved,
			.hints_len = bs.hints_len,
		};
out:
	free(idx);
	return ret;
}
