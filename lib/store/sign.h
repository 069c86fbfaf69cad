/* SPDX-License-Identifier: MIT */
/*
 * Signed tags.  An image reference (sha256:...) names its bytes, so it
 * needs no signature; a tag is only a name that whoever can write the store
 * (or sits on an http:// link) can point elsewhere.  A signature file
 * beside the tag, sigs/<tag> in the store, says which reference the tag
 * names, signed with Ed25519 (OpenSSL libcrypto):
 *
 *   cfs-signature 1
 *   tag <name>
 *   ref sha256:<64 hex>
 *   time <unix seconds>
 *   ed25519 <key id: 64 hex> <signature: 128 hex>
 *   ... (up to CFS_SIG_MAX signature lines, one per signer)
 *
 * Every signature covers the first four lines exactly as written (the
 * parser accepts only that canonical form, so the signed bytes are known).
 * The tag's name is among them: a signature replayed under another tag
 * does not verify.  A key id is the SHA-256 of the 32-byte raw public key.
 *
 * With a trust set, the signature file is the tag: the reference comes from
 * the verified statement and tags/<name> is not read, so a publisher that
 * writes the signature and then the tag leaves no window where the two
 * disagree.  What a signature cannot stop is a rollback: an older statement
 * signed for the same tag verifies too (its time is shown, docs/SECURITY.md).
 */
#ifndef CFS_SIGN_H
#define CFS_SIGN_H

#include <stddef.h>
#include <stdint.h>

#include "digest.h"
#include "store.h"

#define CFS_SIG_MAX 16              /* signature lines in one file */
#define CFS_SIG_FILE_MAX 4096       /* bytes of a signature file */
#define CFS_SIG_LEN 64              /* an Ed25519 signature */
#define CFS_KEY_ID_LEN CFS_DIGEST_LEN

struct cfs_sig_line {
	uint8_t key_id[CFS_KEY_ID_LEN];
	uint8_t sig[CFS_SIG_LEN];
};

/* A parsed signature file. */
struct cfs_sig {
	char tag[CFS_TAG_NAME_MAX + 1];
	cfs_digest ref;
	uint64_t time;
	unsigned nsigs;
	struct cfs_sig_line sigs[CFS_SIG_MAX];
};

/* Parses a signature file.  0, or -EUCLEAN for anything but the canonical
 * form above (bad tag name, duplicate key ids, trailing bytes, no
 * signature line...). */
int cfs_sig_parse(const void *buf, size_t len, struct cfs_sig *out);

/* The file for s into buf: its length, or -ENOSPC. */
int cfs_sig_format(const struct cfs_sig *s, char *buf, size_t size);

/* A private Ed25519 key. */
struct cfs_key;

/* Reads a PEM private key (`openssl genpkey -algorithm ed25519`).
 * -ENOENT etc. from opening the file, -EINVAL when it holds no Ed25519
 * private key. */
int cfs_key_load(const char *path, struct cfs_key **out);
void cfs_key_free(struct cfs_key *k);
void cfs_key_id(const struct cfs_key *k, uint8_t id[CFS_KEY_ID_LEN]);

/* Adds (or replaces) k's signature line in s; its tag, ref and time must be
 * set.  0, -ENOSPC (CFS_SIG_MAX signers already) or -EIO (OpenSSL). */
int cfs_sig_add(struct cfs_sig *s, const struct cfs_key *k);

/* A set of trusted public keys. */
struct cfs_trust;

/* path is a PEM file of one or more public keys (`openssl pkey -pubout`)
 * or a directory whose *.pem and *.pub files are.  -ENOENT etc. from
 * reading, -EINVAL for a file holding anything but Ed25519 public keys, or
 * a directory with none. */
int cfs_trust_load(const char *path, struct cfs_trust **out);
void cfs_trust_free(struct cfs_trust *t);
size_t cfs_trust_count(const struct cfs_trust *t);
/* The id of key i < cfs_trust_count(t). */
void cfs_trust_key_id(const struct cfs_trust *t, size_t i, uint8_t id[CFS_KEY_ID_LEN]);

/* 0 when some line of s is by a key of t and verifies, else -EPERM with
 * the reason in why. */
int cfs_sig_verify(const struct cfs_sig *s, const struct cfs_trust *t, char *why, size_t whylen);

/* Resolves image like cfs_store_resolve(), but a tag must carry a
 * signature by a key of t, and the reference comes from that signature
 * (and its time into *signed_at unless NULL; 0 for a reference).
 * A sha256: reference is returned as it is.  Errors: those of
 * cfs_store_resolve(), -ENOKEY (no signature file), -EUCLEAN (a malformed
 * one), -EPERM (the signature does not hold: why says which way). */
int cfs_store_resolve_trusted(struct cfs_store *st, const struct cfs_trust *t, const char *image,
			      cfs_digest *out, uint64_t *signed_at, char *why, size_t whylen);

/* Signs tag -> ref with k into the store's sigs/<tag>: a file for the same
 * tag and reference gains (or renews) k's line, anything else is replaced.
 * time is the statement's time (0: now). */
int cfs_store_sign(struct cfs_store *st, const struct cfs_key *k, const char *tag,
		   const cfs_digest *ref, uint64_t time);

/* The first 16 hex digits of a key id, for messages: out[17]. */
void cfs_key_id_short(const uint8_t id[CFS_KEY_ID_LEN], char out[17]);

#endif /* CFS_SIGN_H */
