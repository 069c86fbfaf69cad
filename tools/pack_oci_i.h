/* SPDX-License-Identifier: MIT */
/*
 * Between the image sources (pack_oci.c) and their layer streams
 * (pack_oci_layer.c).
 */
#ifndef CFS_PACK_OCI_I_H
#define CFS_PACK_OCI_I_H

#include <stddef.h>
#include <stdint.h>

#include "digest.h"

struct cfs_pack_ctx;
struct cfs_pack_tar;

/* Applies layer i, the blob at [off, off + len) of fd, on top of the
 * layers before it in t: decompressed as its bytes say, its compressed
 * digest checked against cd (when known, else NULL) and its uncompressed
 * stream against diff_id.  loc names the source in messages.  0, or
 * -errno after cfs_pack_fail(). */
int cfs_pack_oci_layer(struct cfs_pack_ctx *p, const char *loc, struct cfs_pack_tar *t, size_t i,
		       int fd, uint64_t off, uint64_t len, const cfs_digest *cd,
		       const cfs_digest *diff_id);

#endif /* CFS_PACK_OCI_I_H */
