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
 * never staged in a temporary copy.
 */
#include <errno.h>
#include <limits.h>
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

enum comp { COMP_NONE, COMP_GZIP, COMP_ZSTD };

struct layer {
	struct cfs_pack_ctx *p;
	const char *where;     /* "<source>: layer N (<digest>)", for messages */
	cfs_pack_oci_read_fn rd;
	void *rd_ctx;
	EVP_MD_CTX *cmd, *umd;
	enum comp comp;
	z_stream z;
	bool z_init, z_ended;
	ZSTD_DCtx *zd;
	size_t zret;          /* last ZSTD_decompressStream(): 0 at a frame's end */
	uint8_t *in, *out;
	size_t in_len, in_pos;
	bool in_eof;
	uint64_t raw;
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
	l->in_len = (size_t)n;
	l->in_pos = 0;
	return 0;
}

static ssize_t layer_out(struct layer *l, const void **buf, size_t n, const uint8_t *p)
{
	EVP_DigestUpdate(l->umd, p, n);
	l->raw += n;
	*buf = p;
	return (ssize_t)n;
}

/* cfs_pack_read_fn: the layer's uncompressed bytes. */
static ssize_t layer_read(void *ctx, const void **buf)
{
	struct layer *l = ctx;
	int ret;

	for (;;) {
		ret = layer_fill(l);
		if (ret < 0)
			return ret;
		switch (l->comp) {
		case COMP_NONE: {
			size_t n = l->in_len - l->in_pos;

			if (l->in_eof)
				return 0;
			l->in_pos = l->in_len;
			return layer_out(l, buf, n, l->in);
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
			l->z.next_out = l->out;
			l->z.avail_out = OCI_IO_SIZE;
			r = inflate(&l->z, Z_NO_FLUSH);
			l->in_pos += avail - l->z.avail_in;
			if (r == Z_STREAM_END)
				l->z_ended = true;
			else if (r != Z_OK && r != Z_BUF_ERROR)
				return bad(l, -EUCLEAN, "bad gzip data",
					   l->z.msg ? l->z.msg : "inflate error");
			if (OCI_IO_SIZE - l->z.avail_out)
				return layer_out(l, buf, OCI_IO_SIZE - l->z.avail_out, l->out);
			continue;
		}
		case COMP_ZSTD: {
			ZSTD_inBuffer zin = { l->in, l->in_len, l->in_pos };
			ZSTD_outBuffer zout = { l->out, OCI_IO_SIZE, 0 };

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
				return layer_out(l, buf, zout.pos, l->out);
			continue;
		}
		}
	}
}

static void layer_free(struct layer *l)
{
	if (l->z_init)
		inflateEnd(&l->z);
	ZSTD_freeDCtx(l->zd);
	EVP_MD_CTX_free(l->cmd);
	EVP_MD_CTX_free(l->umd);
	free(l->in);
	free(l->out);
}

int cfs_pack_oci_layer(struct cfs_pack_ctx *p, const char *loc, struct cfs_pack_tar *t, size_t i,
		       cfs_pack_oci_read_fn rd, void *ctx, const cfs_digest *cd,
		       const cfs_digest *diff_id)
{
	struct layer l = { .p = p, .rd = rd, .rd_ctx = ctx };
	char what[64], where[PATH_MAX + 96], ref[CFS_REF_STRLEN];
	unsigned char md[EVP_MAX_MD_SIZE];
	const void *buf;
	cfs_digest got;
	ssize_t n;
	int ret;

	cfs_digest_ref(cd ? cd : diff_id, ref);
	snprintf(what, sizeof(what), "layer %zu (%.19s)", i + 1, ref);
	snprintf(where, sizeof(where), "%s: %s", loc, what);
	l.where = where;
	l.in = malloc(OCI_IO_SIZE);
	l.out = malloc(OCI_IO_SIZE);
	l.cmd = EVP_MD_CTX_new();
	l.umd = EVP_MD_CTX_new();
	if (!l.in || !l.out || !l.cmd || !l.umd ||
	    !EVP_DigestInit_ex(l.cmd, EVP_sha256(), NULL) ||
	    !EVP_DigestInit_ex(l.umd, EVP_sha256(), NULL)) {
		ret = bad(&l, -ENOMEM, cfs_strerror(-ENOMEM), NULL);
		goto out;
	}
	ret = layer_fill(&l);
	if (ret < 0)
		goto out;
	if (l.in_len >= 2 && l.in[0] == 0x1f && l.in[1] == 0x8b) {
		l.comp = COMP_GZIP;
		/* 16 + MAX_WBITS: gzip framing only. */
		if (inflateInit2(&l.z, 16 + MAX_WBITS) != Z_OK) {
			ret = bad(&l, -ENOMEM, "zlib init", NULL);
			goto out;
		}
		l.z_init = true;
	} else if (l.in_len >= 4 && !memcmp(l.in, "\x28\xb5\x2f\xfd", 4)) {
		l.comp = COMP_ZSTD;
		l.zd = ZSTD_createDCtx();
		if (!l.zd) {
			ret = bad(&l, -ENOMEM, "zstd init", NULL);
			goto out;
		}
		l.zret = 1;
	}

	ret = cfs_pack_tar_layer(t, layer_read, &l, what);
	if (ret < 0)
		goto out;
	/* What follows the tar's end marker counts towards both digests. */
	while ((n = layer_read(&l, &buf)) > 0)
		;
	if (n < 0) {
		ret = (int)n;
		goto out;
	}
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
	ret = 0;
out:
	layer_free(&l);
	return ret;
}
