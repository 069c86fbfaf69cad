/* SPDX-License-Identifier: MIT */
/*
 * Layer records: what cfs-pack keeps about each layer of an image it
 * packed from an image source (a registry, an OCI layout, a
 * docker-archive), so that a container engine can take the layer from cfs
 * instead of pulling its blob (cfs-mount --layer-store,
 * docs/LAYER-STORE.md).  Stored as layers/<64 hex> for the layer blob's
 * compressed digest, the name by which engines ask for a layer; many
 * images may share one.  Plain text, like origin.h's:
 *
 *   cfs-layer 1
 *   image sha256:<64 hex>      the layer's own cfs image: its tree in
 *                              overlay form (docs/FORMAT.md, "Layers")
 *   diff_id sha256:<64 hex>    the uncompressed tar's digest
 *   diff_size N                and its length
 *   size N                     the compressed blob's length
 *   compression gzip           gzip, zstd or none: the blob's
 *
 * Unknown lines are skipped, so the format can grow.
 */
#ifndef CFS_LAYER_H
#define CFS_LAYER_H

#include <stddef.h>
#include <stdint.h>

#include "digest.h"

#define CFS_LAYER_REC_MAX 4096u /* bytes of a record */

enum cfs_layer_comp {
	CFS_LAYER_NONE,
	CFS_LAYER_GZIP,
	CFS_LAYER_ZSTD,
};

struct cfs_layer_rec {
	cfs_digest image;
	cfs_digest diff_id;
	uint64_t diff_size;
	uint64_t size;
	enum cfs_layer_comp comp;
};

/* The compression's name in records: "none", "gzip", "zstd". */
const char *cfs_layer_comp_name(enum cfs_layer_comp c);
/* r as text in a malloc'd *buf of *len bytes.  0 or -ENOMEM. */
int cfs_layer_rec_format(const struct cfs_layer_rec *r, char **buf, size_t *len);
/* Parses a record: 0, or -EINVAL when it is not one (no header, a
 * missing or repeated field, a bad digest, number or compression, too
 * long, cut short), -ENOMEM. */
int cfs_layer_rec_parse(const void *buf, size_t len, struct cfs_layer_rec *out);

#endif /* CFS_LAYER_H */
