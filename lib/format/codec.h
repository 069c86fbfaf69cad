/* SPDX-License-Identifier: MIT */
/*
 * Store objects: one zstd frame, content size recorded, whose decompressed
 * bytes hash with SHA-256 to the object's name (see format.h).
 */
#ifndef CFS_CODEC_H
#define CFS_CODEC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "digest.h"

#define CFS_ZSTD_LEVEL_DEFAULT 3

/* Worst-case object size for raw_len bytes of content. */
size_t cfs_obj_bound(size_t raw_len);

/* Encodes len bytes of src into dst (cap bytes, at least cfs_obj_bound(len)).
 * Incompressible data ends up in raw zstd blocks, so decoding it costs a
 * memcpy.  Returns the object size or -errno (-ENOBUFS when cap is short).
 * Thread-safe; compression contexts are cached per thread. */
ssize_t cfs_obj_encode(void *dst, size_t cap, const void *src, size_t len, int level);

/* The content size an object declares in its frame header, or -EUCLEAN
 * when obj is not a single zstd frame with a known content size. */
int64_t cfs_obj_raw_size(const void *obj, size_t objlen);

/* Decodes obj into dst (cap bytes) and checks that the content hashes to
 * *expect.  Returns the content size, -EUCLEAN for anything that is not a
 * well-formed frame (or a content size over cap), -EBADMSG when the digest
 * does not match.  dst holds garbage after an error.  Thread-safe. */
ssize_t cfs_obj_decode(void *dst, size_t cap, const void *obj, size_t objlen,
		       const cfs_digest *expect);

#endif /* CFS_CODEC_H */
