/* SPDX-License-Identifier: MIT */
/* SHA-256 digests: the names of every object in a store. */
#ifndef CFS_DIGEST_H
#define CFS_DIGEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CFS_DIGEST_LEN 32
#define CFS_DIGEST_HEX_LEN 64
/* "sha256:" + 64 hex + NUL */
#define CFS_REF_STRLEN (7 + CFS_DIGEST_HEX_LEN + 1)

typedef struct cfs_digest {
	uint8_t b[CFS_DIGEST_LEN];
} cfs_digest;

/* SHA-256 of len bytes.  Thread-safe. */
void cfs_sha256(const void *data, size_t len, cfs_digest *out);

/* 64 lower-case hex digits plus NUL into out[65]. */
void cfs_digest_hex(const cfs_digest *d, char out[CFS_DIGEST_HEX_LEN + 1]);
/* "sha256:<hex>" plus NUL into out[CFS_REF_STRLEN]. */
void cfs_digest_ref(const cfs_digest *d, char out[CFS_REF_STRLEN]);

/* Parses "sha256:<64 hex>" or, when bare_ok, a bare "<64 hex>" (either
 * case).  0 or -EINVAL. */
int cfs_digest_parse(const char *s, bool bare_ok, cfs_digest *out);

/* The value 0-15 of one hex digit (either case), or -1. */
int cfs_hex_value(char c);
/* n bytes as 2n lower-case hex digits into out (no NUL). */
void cfs_hex_encode(const void *bytes, size_t n, char *out);
/* 2n hex digits at s into n bytes: 0, or -EINVAL for anything else (an
 * upper-case digit too when lower_only). */
int cfs_hex_decode(const char *s, size_t n, void *out, bool lower_only);

bool cfs_digest_eq(const cfs_digest *a, const cfs_digest *b);

#endif /* CFS_DIGEST_H */
