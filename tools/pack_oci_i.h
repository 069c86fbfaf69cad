/* SPDX-License-Identifier: MIT */
/*
 * Between the image sources and what they share.  pack_oci.c holds the
 * JSON logic of every image source: picking from an index, the manifest
 * and its config, the diff_ids, the layers applied in order; where the
 * blobs come from is a small table (struct cfs_pack_oci_blobs), one for
 * an OCI layout and a docker-archive (pack_oci.c, pread on local files)
 * and one for a registry (pack_registry.c, HTTP).  pack_oci_layer.c turns
 * a layer's byte stream into tar entries, hashing both sides.
 */
#ifndef CFS_PACK_OCI_I_H
#define CFS_PACK_OCI_I_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

#include "digest.h"
#include "util.h"

struct cfs_pack_ctx;
struct cfs_pack_tar;

#define CFS_OCI_JSON_MAX (4u << 20)   /* an index or a manifest */

#define CFS_MT_OCI_INDEX "application/vnd.oci.image.index.v1+json"
#define CFS_MT_OCI_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define CFS_MT_DOCKER_LIST "application/vnd.docker.distribution.manifest.list.v2+json"
#define CFS_MT_DOCKER_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"
#define CFS_MT_DOCKER_V1 "application/vnd.docker.distribution.manifest.v1"

/* The next bytes of a blob into buf (at most len): their count, 0 at its
 * end, or -errno after cfs_pack_fail().  A layer's is called on its
 * decode thread (pack_oci_layer.c), not the one that opened it, between
 * layer_open and layer_close only. */
typedef ssize_t (*cfs_pack_oci_read_fn)(void *ctx, void *buf, size_t len);

struct cfs_pack_oci_plat {
	char os[32], arch[32], variant[32];
};

/* A descriptor, as an index or a manifest gives it. */
struct cfs_pack_oci_desc {
	const char *media;  /* "" when absent */
	char digest[CFS_REF_STRLEN];
	cfs_digest d;
	uint64_t size;
	json_t *obj;        /* borrowed from the document */
};

struct cfs_pack_oci;

/* Where the blobs of an image come from. */
struct cfs_pack_oci_blobs {
	/* The whole blob d names (a manifest or index when manifest is set,
	 * which a registry serves apart), at most max bytes: *buf malloc'd
	 * and NUL-terminated.  The caller checks its size and digest.  0, or
	 * -errno after cfs_pack_oci_fail(). */
	int (*get)(struct cfs_pack_oci *o, const struct cfs_pack_oci_desc *d, bool manifest,
		   size_t max, const char *what, char **buf, size_t *len);
	/* Optional: the manifest's layer descriptors (n of them, checked),
	 * before the config is read, so that a source can start fetching. */
	int (*layers_start)(struct cfs_pack_oci *o, const struct cfs_pack_oci_desc *l, size_t n);
	/* Opens layer i, the manifest's entry l: d is its descriptor,
	 * checked, or NULL when l is a member path (a docker-archive).  *rd
	 * and *ctx read its bytes, *cd is its compressed digest when
	 * *have_cd.  0 or -errno after the failure. */
	int (*layer_open)(struct cfs_pack_oci *o, json_t *l, const struct cfs_pack_oci_desc *d,
			  size_t i, cfs_pack_oci_read_fn *rd, void **ctx, cfs_digest *cd,
			  bool *have_cd);
	/* Ends what layer_open began (ctx may be NULL). */
	void (*layer_close)(struct cfs_pack_oci *o, void *ctx);
};

/* One image being packed. */
struct cfs_pack_oci {
	struct cfs_pack_ctx *p;
	char *loc;      /* "oci:DIR", "docker://HOST/REPO:TAG", for messages */
	struct cfs_pack_oci_plat want;
	const struct cfs_pack_oci_blobs *blobs;
};

/* Records "<loc>: <what>" as the pack's failure; returns err. */
int cfs_pack_oci_fail(struct cfs_pack_oci *o, int err, const char *fmt, ...) CFS_PRINTF(3, 4);

/* Sets o->loc to "<prefix><spec>" and o->want from the context's
 * --platform (the host's without).  0 or -errno after the failure. */
int cfs_pack_oci_init(struct cfs_pack_oci *o, struct cfs_pack_ctx *p, const char *prefix,
		      const char *spec);

/* Packs the image a top document names: buf (len bytes) is an index or
 * manifest list (picked from by platform, and by ref when set) or a
 * manifest, as media says (NULL or "": as its JSON says); its digest is
 * d.  Config and layers come through o->blobs.  0, or -errno after the
 * failure. */
int cfs_pack_oci_top(struct cfs_pack_oci *o, const char *buf, size_t len, const char *media,
		     const cfs_digest *d, const char *ref);

/* Applies layer i, read through rd, on top of the layers before it in t:
 * decompressed as its bytes say, its compressed digest checked against cd
 * (when known, else NULL) and its uncompressed stream against diff_id.
 * rd runs on a thread of this call's, joined before it returns.  loc
 * names the source in messages.  0, or -errno after cfs_pack_fail(). */
int cfs_pack_oci_layer(struct cfs_pack_ctx *p, const char *loc, struct cfs_pack_tar *t, size_t i,
		       cfs_pack_oci_read_fn rd, void *ctx, const cfs_digest *cd,
		       const cfs_digest *diff_id);

#endif /* CFS_PACK_OCI_I_H */
