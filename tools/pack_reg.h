/* SPDX-License-Identifier: MIT */
/*
 * The parsers of what a registry source (pack_registry.c) reads from
 * outside: the image reference the user typed, the registry's
 * WWW-Authenticate challenges, its token and error replies, and the
 * credential files skopeo, podman and docker keep.  Pure functions over
 * bounded buffers, apart so that tests/test-registry.c and
 * tests/fuzz-registry.c call them directly.
 */
#ifndef CFS_PACK_REG_H
#define CFS_PACK_REG_H

#include <stdbool.h>
#include <stddef.h>

#define CFS_REG_HOST_MAX 256
#define CFS_REG_REPO_MAX 256
#define CFS_REG_TAG_MAX 128

/* docker://HOST[:PORT]/REPO[:TAG|@sha256:HEX], as parsed. */
struct cfs_reg_ref {
	char host[CFS_REG_HOST_MAX];   /* "host[:port]", as written */
	char repo[CFS_REG_REPO_MAX];   /* "a/b/c" */
	/* The tag ("latest" when none was given) or "sha256:<hex>". */
	char ref[CFS_REG_TAG_MAX + 8];
	bool by_digest;
};

/* Parses s, what follows "docker://".  A first component without '.' or
 * ':' that is not "localhost" is a repository on docker.io (HOST
 * "registry-1.docker.io", "library/" before a one-component name), as
 * docker and skopeo read it.  0, or -EINVAL with why in msg (len bytes,
 * may be NULL). */
int cfs_reg_ref_parse(const char *s, struct cfs_reg_ref *out, char *msg, size_t len);

enum cfs_reg_scheme { CFS_REG_AUTH_NONE = 0, CFS_REG_AUTH_BASIC, CFS_REG_AUTH_BEARER };

#define CFS_REG_REALM_MAX 1024
#define CFS_REG_PARAM_MAX 512

/* The challenge of a 401 to use: Bearer when the header offers it, else
 * Basic. */
struct cfs_reg_challenge {
	enum cfs_reg_scheme scheme;
	char realm[CFS_REG_REALM_MAX];
	char service[CFS_REG_PARAM_MAX];
	char scope[CFS_REG_PARAM_MAX];
};

/* Parses one WWW-Authenticate value (len bytes, need not be
 * NUL-terminated): challenges separated by commas, each a scheme and
 * auth-params KEY=TOKEN or KEY="quoted \"string\"", commas inside quotes
 * kept.  Unknown schemes and parameters are skipped.  0, -ENOENT when it
 * offers neither Basic nor Bearer, -EINVAL when malformed or a value is
 * too long. */
int cfs_reg_challenge_parse(const char *hdr, size_t len, struct cfs_reg_challenge *out);

/* The token of a token server's JSON reply (buf, len bytes): "token",
 * else "access_token".  *tok malloc'd.  0, -EINVAL (no token, bad JSON,
 * a token with a character not allowed in a header), -ENOMEM. */
int cfs_reg_token_parse(const char *buf, size_t len, char **tok);

/* The first error of a registry's JSON error body,
 * {"errors":[{"code":"MANIFEST_UNKNOWN","message":"..."}]}: code and
 * message copied (printable ASCII only, cut to fit), "" when the body
 * says nothing of the kind. */
void cfs_reg_error_parse(const char *buf, size_t len, char *code, size_t code_len, char *message,
			 size_t message_len);

/* The credentials for host ("host[:port]") in an auth file (buf, len
 * bytes: {"auths":{"KEY":{"auth":"base64(user:pass)"}}}), where KEY is
 * host, or host after "http://" or "https://" and before an optional
 * path ("https://index.docker.io/v1/" for docker.io).  *user and *pass
 * malloc'd.  0, -ENOENT (no entry for host), -EINVAL (bad JSON, an entry
 * whose auth is no base64 of user:pass), -ENOMEM. */
int cfs_reg_auth_find(const char *buf, size_t len, const char *host, char **user, char **pass);

#endif /* CFS_PACK_REG_H */
