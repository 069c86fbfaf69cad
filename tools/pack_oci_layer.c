/* SPDX-License-Identifier: MIT */
/*
 * The layers of an image source (pack_oci.c): a layer blob decompressed
 * here, not by libarchive, because both sides are hashed as it streams
 * into the tar reader (pack_tar.c): the compressed bytes against the
 * manifest's digest, the uncompressed stream against the config's
 * diff_id.  The compression is sniffed from the bytes (gzip, multi-member
 * too, zstd or none), as container engines do.  Apart from pack_oci.c so
 * that the image formats (JSON, docker-archive members) and the byte
 * streams of a layer each have a file.  The bytes come from a reader, so
 * that a layer streams from a file (pread) or from the network alike,
 * never staged in a temporary copy.  The reading, both digests and the
 * decompression run on a decode thread per layer, a ring of blocks ahead
 * of the tar reader on the caller's thread.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <zlib.h>
#include <zstd.h>

#include "digest.h"
#include "util.h"

#include "pack.h"
#include "pack_oci_i.h"

#define OCI_IO_SIZE (1u << 20)
/* Decoded blocks between the decode thread and the tar reader: one the
 * reader holds, one the decoder fills, and slack for their jitter. */
#define OCI_RING 4

enum comp { COMP_NONE, COMP_GZIP, COMP_ZSTD };

struct layer {
	struct cfs_pack_ctx *p;
	const char *where;     /* "<source>: layer N (<digest>)", for messages */
	cfs_pack_oci_read_fn rd;
	void *rd_ctx;
	/* The decode thread's alone once it runs. */
	EVP_MD_CTX *cmd, *umd;
	enum comp comp;
	z_stream z;
	bool z_init, z_ended;
	ZSTD_DCtx *zd;
	size_t zret;          /* last ZSTD_decompressStream(): 0 at a frame's end */
	uint8_t *in;
	size_t in_len, in_pos;
	bool in_eof;
	uint64_t craw, raw;   /* bytes read, bytes decoded: the record's sizes */
	/* The hand-off, under mu: blocks [head, head + count) of the ring are
	 * decoded, the first one held by the reader while held is set. */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	uint8_t *blk[OCI_RING];
	size_t blk_len[OCI_RING];
	unsigned head, count;
	bool held, done, stop;
	int err;              /* the decoder's end: 0 at the stream's end, or -errno */
};

/* Records "<where>: <why>[: <detail>]" and returns err. */
static int bad(struct layer *l, int err, const char *why, const char *detail)
{
	return cfs_pack_fail(l->p, err, "%s: %s%s%s", l->where, why, detail ? ": " : "",
			     detail ? detail : "");
}

static int layer_fill(struct layer *l)
{
	ssize_t n;

	if (l->in_pos < l->in_len || l->in_eof)
		return 0;
	n = l->rd(l->rd_ctx, l->in, OCI_IO_SIZE);
	if (n < 0)
		return (int)n;
	if (n == 0) {
		l->in_eof = true;
		l->in_len = l->in_pos = 0;
		return 0;
	}
	EVP_DigestUpdate(l->cmd, l->in, (size_t)n);
	l->craw += (uint64_t)n;
	l->in_len = (size_t)n;
	l->in_pos = 0;
	return 0;
}

/* Decodes the next bytes of the layer into out (at most cap): their
 * count, 0 at its end, or -errno after cfs_pack_fail(). */
static ssize_t decode_step(struct layer *l, uint8_t *out, size_t cap)
{
	int ret;

	for (;;) {
		ret = layer_fill(l);
		if (ret < 0)
			return ret;
		switch (l->comp) {
		case COMP_NONE: {
			size_t n = CFS_MIN(cap, l->in_len - l->in_pos);

			if (l->in_eof)
				return 0;
			memcpy(out, l->in + l->in_pos, n);
			l->in_pos += n;
			return (ssize_t)n;
		}
		case COMP_GZIP: {
			size_t avail = l->in_len - l->in_pos;
			int r;

			if (l->in_eof) {
				if (!l->z_ended)
					return bad(l, -EUCLEAN, "truncated gzip stream", NULL);
				return 0;
			}
			if (l->z_ended) {
				/* Another member follows, or padding of zeros. */
				if (l->in[l->in_pos] == 0) {
					for (size_t i = l->in_pos; i < l->in_len; i++)
						if (l->in[i])
							return bad(l, -EUCLEAN,
								   "garbage after the gzip stream",
								   NULL);
					l->in_pos = l->in_len;
					continue;
				}
				if (inflateReset(&l->z) != Z_OK)
					return bad(l, -EIO, "zlib reset", NULL);
				l->z_ended = false;
			}
			l->z.next_in = l->in + l->in_pos;
			l->z.avail_in = (uInt)avail;
			l->z.next_out = out;
			l->z.avail_out = (uInt)cap;
			r = inflate(&l->z, Z_NO_FLUSH);
			l->in_pos += avail - l->z.avail_in;
			if (r == Z_STREAM_END)
				l->z_ended = true;
			else if (r != Z_OK && r != Z_BUF_ERROR)
				return bad(l, -EUCLEAN, "bad gzip data",
					   l->z.msg ? l->z.msg : "inflate error");
			if (cap - l->z.avail_out)
				return (ssize_t)(cap - l->z.avail_out);
			continue;
		}
		case COMP_ZSTD: {
			ZSTD_inBuffer zin = { l->in, l->in_len, l->in_pos };
			ZSTD_outBuffer zout = { out, cap, 0 };

			if (l->in_eof) {
				if (l->zret)
					return bad(l, -EUCLEAN, "truncated zstd stream", NULL);
				return 0;
			}
			l->zret = ZSTD_decompressStream(l->zd, &zout, &zin);
			if (ZSTD_isError(l->zret))
				return bad(l, -EUCLEAN, "bad zstd data",
					   ZSTD_getErrorName(l->zret));
			l->in_pos = zin.pos;
			if (zout.pos)
				return (ssize_t)zout.pos;
			continue;
		}
		}
	}
}

/* The decode thread: fills free blocks of the ring, whole ones (fewer
 * hand-offs), until the stream ends, fails, or the reader stops. */
static void *decode_thread(void *arg)
{
	struct layer *l = arg;
	ssize_t n = 0;

	for (;;) {
		uint8_t *out;
		size_t got = 0;
		unsigned slot;

		pthread_mutex_lock(&l->mu);
		while (l->count == OCI_RING && !l->stop)
			pthread_cond_wait(&l->cv, &l->mu);
		slot = (l->head + l->count) % OCI_RING;
		n = l->stop ? -ECANCELED : 0;
		pthread_mutex_unlock(&l->mu);
		if (n < 0)
			break;
		out = l->blk[slot];
		while (got < OCI_IO_SIZE && (n = decode_step(l, out + got, OCI_IO_SIZE - got)) > 0)
			got += (size_t)n;
		if (got)
			EVP_DigestUpdate(l->umd, out, got);
		l->raw += got;
		pthread_mutex_lock(&l->mu);
		if (got) {
			l->blk_len[slot] = got;
			l->count++;
		}
		if (n <= 0) {
			l->done = true;
			l->err = (int)n;
		}
		pthread_cond_broadcast(&l->cv);
		pthread_mutex_unlock(&l->mu);
		if (n <= 0)
			break;
	}
	return NULL;
}

/* cfs_pack_read_fn: the layer's uncompressed bytes, a block at a time,
 * the one returned before given back to the decoder. */
static ssize_t layer_read(void *ctx, const void **buf)
{
	struct layer *l = ctx;
	ssize_t ret;

	pthread_mutex_lock(&l->mu);
	if (l->held) {
		l->held = false;
		l->head = (l->head + 1) % OCI_RING;
		l->count--;
		pthread_cond_broadcast(&l->cv);
	}
	while (!l->count && !l->done)
		pthread_cond_wait(&l->cv, &l->mu);
	if (l->count) {
		l->held = true;
		*buf = l->blk[l->head];
		ret = (ssize_t)l->blk_len[l->head];
	} else {
		ret = l->err;
	}
	pthread_mutex_unlock(&l->mu);
	return ret;
}

static void layer_free(struct layer *l)
{
	if (l->z_init)
		inflateEnd(&l->z);
	ZSTD_freeDCtx(l->zd);
	EVP_MD_CTX_free(l->cmd);
	EVP_MD_CTX_free(l->umd);
	free(l->in);
	for (unsigned k = 0; k < OCI_RING; k++)
		free(l->blk[k]);
}

/* Sniffs the compression from the first bytes read. */
static int layer_sniff(struct layer *l)
{
	int ret = layer_fill(l);

	if (ret < 0)
		return ret;
	if (l->in_len >= 2 && l->in[0] == 0x1f && l->in[1] == 0x8b) {
		l->comp = COMP_GZIP;
		/* 16 + MAX_WBITS: gzip framing only. */
		if (inflateInit2(&l->z, 16 + MAX_WBITS) != Z_OK)
			return bad(l, -ENOMEM, "zlib init", NULL);
		l->z_init = true;
		/* Not the CRC-32 as well: both digests cover every byte. */
		inflateValidate(&l->z, 0);
	} else if (l->in_len >= 4 && !memcmp(l->in, "\x28\xb5\x2f\xfd", 4)) {
		l->comp = COMP_ZSTD;
		l->zd = ZSTD_createDCtx();
		if (!l->zd)
			return bad(l, -ENOMEM, "zstd init", NULL);
		l->zret = 1;
	}
	return 0;
}

/* Applies the decoded stream to the tar reader and drains what follows
 * its end marker, which counts towards both digests. */
static int layer_apply(struct layer *l, struct cfs_pack_tar *t, const char *what)
{
	const void *buf;
	ssize_t n;
	int ret;

	ret = cfs_pack_tar_layer(t, layer_read, l, what);
	if (ret < 0)
		return ret;
	while ((n = layer_read(l, &buf)) > 0)
		;
	return (int)n;
}

/* The decoding, hashing and inflating of a layer's bytes, runs on a
 * thread of its own a few blocks ahead of the tar reader: that is half
 * of a layer's CPU, which the source's thread would otherwise do in
 * series with the tar and the chunker while the workers wait. */
int cfs_pack_oci_layer(struct cfs_pack_ctx *p, const char *loc, struct cfs_pack_tar *t, size_t i,
		       cfs_pack_oci_read_fn rd, void *ctx, const cfs_digest *cd,
		       const cfs_digest *diff_id)
{
	struct layer l = { .p = p, .rd = rd, .rd_ctx = ctx,
			   .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };
	char what[64], where[PATH_MAX + 96], ref[CFS_REF_STRLEN];
	unsigned char md[EVP_MAX_MD_SIZE];
	pthread_t th;
	cfs_digest got;
	bool ok = true;
	int ret;

	cfs_digest_ref(cd ? cd : diff_id, ref);
	snprintf(what, sizeof(what), "layer %zu (%.19s)", i + 1, ref);
	snprintf(where, sizeof(where), "%s: %s", loc, what);
	l.where = where;
	l.in = malloc(OCI_IO_SIZE);
	for (unsigned k = 0; k < OCI_RING; k++)
		ok &= (l.blk[k] = malloc(OCI_IO_SIZE)) != NULL;
	l.cmd = EVP_MD_CTX_new();
	l.umd = EVP_MD_CTX_new();
	if (!ok || !l.in || !l.cmd || !l.umd ||
	    !EVP_DigestInit_ex(l.cmd, EVP_sha256(), NULL) ||
	    !EVP_DigestInit_ex(l.umd, EVP_sha256(), NULL)) {
		ret = bad(&l, -ENOMEM, cfs_strerror(-ENOMEM), NULL);
		goto out;
	}
	ret = layer_sniff(&l);
	if (ret < 0)
		goto out;
	ret = pthread_create(&th, NULL, decode_thread, &l);
	if (ret) {
		ret = bad(&l, -ret, "decode thread", strerror(ret));
		goto out;
	}
	ret = layer_apply(&l, t, what);
	pthread_mutex_lock(&l.mu);
	l.stop = true;
	pthread_cond_broadcast(&l.cv);
	pthread_mutex_unlock(&l.mu);
	pthread_join(th, NULL);
	if (ret < 0)
		goto out;
	if (cd) {
		EVP_DigestFinal_ex(l.cmd, md, NULL);
		memcpy(got.b, md, sizeof(got.b));
		if (!cfs_digest_eq(&got, cd)) {
			ret = bad(&l, -EBADMSG, "blob digest mismatch", NULL);
			goto out;
		}
	}
	EVP_DigestFinal_ex(l.umd, md, NULL);
	memcpy(got.b, md, sizeof(got.b));
	if (!cfs_digest_eq(&got, diff_id)) {
		cfs_digest_ref(diff_id, ref);
		ret = cfs_pack_fail(p, -EBADMSG, "%s: uncompressed content does not match the "
				    "config's diff_id %s", where, ref);
		goto out;
	}
	cfs_pack_layer_meta(p, cd, diff_id, l.raw, l.craw,
			    l.comp == COMP_GZIP ? CFS_LAYER_GZIP :
			    l.comp == COMP_ZSTD ? CFS_LAYER_ZSTD : CFS_LAYER_NONE);
	ret = 0;
out:
	layer_free(&l);
	return ret;
}
