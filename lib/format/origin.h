/* SPDX-License-Identifier: MIT */
/*
 * Origins: where cfs-pack found an image that came from an image source
 * with manifests (a registry, an OCI layout), kept beside the image in the
 * store as origins/<64 hex> (docs/FORMAT.md, "Origins").
 *
 * The index cannot hold it: the same image reached through gzip, zstd or
 * uncompressed layers, or through a docker-archive, which has no
 * manifest, is one image, one reference, and each of those has its own
 * manifest digest.  So the record is a mutable side file, as a learned
 * profile is: the last pack of the image from such a source replaces it,
 * and it is informational only (cfs-ls --info shows it; nothing is
 * verified or opened through it).  Plain text:
 *
 *   cfs-origin 1
 *   source docker://127.0.0.1:5000/app:1      what cfs-pack was given
 *   manifest sha256:<64 hex>                   the image manifest packed
 *   top sha256:<64 hex>                        optional: what the reference
 *                                              resolved to, when that was
 *                                              an index or manifest list
 *   layer sha256:<64 hex>                      each layer's blob, in order,
 *                                              whose record (layer.h) the
 *                                              pack wrote
 *
 * The source is escaped as profile paths are: '\\', spaces and bytes
 * outside 0x21..0x7e as \xHH.  Unknown lines are skipped, so the format
 * can grow.
 */
#ifndef CFS_ORIGIN_H
#define CFS_ORIGIN_H

#include <stdbool.h>
#include <stddef.h>

#include "digest.h"

#define CFS_ORIGIN_SOURCE_MAX 1024u /* bytes of a source, unescaped */
#define CFS_ORIGIN_LAYERS_MAX 1000u /* layer lines */
#define CFS_ORIGIN_MAX (128u << 10) /* bytes of an origins file */

struct cfs_origin {
	char source[CFS_ORIGIN_SOURCE_MAX + 1];
	cfs_digest manifest;
	bool has_top;
	cfs_digest top;
	cfs_digest *layers;     /* malloc'd by cfs_origin_parse() */
	size_t nlayers;
};

/* o as text in a malloc'd *buf of *len bytes (a source longer than
 * CFS_ORIGIN_SOURCE_MAX is cut there).  0 or -ENOMEM. */
int cfs_origin_format(const struct cfs_origin *o, char **buf, size_t *len);
/* Parses an origins file: 0, or -EINVAL when it is not one (no header,
 * no source or manifest line, a bad digest or escape, more than
 * CFS_ORIGIN_LAYERS_MAX layers, too long), -ENOMEM.  Release *out. */
int cfs_origin_parse(const void *buf, size_t len, struct cfs_origin *out);
/* Frees what cfs_origin_parse() gave o. */
void cfs_origin_release(struct cfs_origin *o);

#endif /* CFS_ORIGIN_H */
