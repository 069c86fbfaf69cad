/* SPDX-License-Identifier: MIT */
/*
 * fuzz-registry: libFuzzer target for the parsers of the docker:// source
 * (tools/pack_reg.h), each given the whole input: an image reference (up
 * to its first NUL), a WWW-Authenticate value, a token server's reply, a
 * registry's error body and an auth file, looked up for a fixed host and
 * for the input's first line.  Nothing may crash or read past the input,
 * and what is accepted must hold: a reference has a host, a repository in
 * lowercase and a tag or a 64-digit digest; a Bearer challenge a realm; a
 * token and an error text only printable characters; credentials a user
 * name.
 */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "pack_reg.h"

static void printable(const char *s)
{
	for (; *s; s++)
		FUZZ_ASSERT((unsigned char)*s >= ' ' && (unsigned char)*s < 0x7f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cfs_reg_ref ref;
	struct cfs_reg_challenge ch;
	char *s = malloc(size + 1), *tok = NULL, *user = NULL, *pass = NULL, code[64], msg[256];
	char host[CFS_REG_HOST_MAX];
	size_t hn;

	FUZZ_ASSERT(s);
	memcpy(s, data, size);
	s[size] = '\0';

	if (cfs_reg_ref_parse(s, &ref, msg, sizeof(msg)) == 0) {
		FUZZ_ASSERT(ref.host[0] && ref.repo[0] && ref.ref[0]);
		for (const char *c = ref.repo; *c; c++)
			FUZZ_ASSERT(!isupper((unsigned char)*c) && *c > ' ');
		if (ref.by_digest)
			FUZZ_ASSERT(strlen(ref.ref) == 71 && !strncmp(ref.ref, "sha256:", 7));
		else
			FUZZ_ASSERT(strlen(ref.ref) <= CFS_REG_TAG_MAX);
	}

	if (cfs_reg_challenge_parse((const char *)data, size, &ch) == 0) {
		FUZZ_ASSERT(ch.scheme == CFS_REG_AUTH_BASIC || ch.scheme == CFS_REG_AUTH_BEARER);
		FUZZ_ASSERT(ch.scheme != CFS_REG_AUTH_BEARER || ch.realm[0]);
		FUZZ_ASSERT(strlen(ch.realm) < sizeof(ch.realm) && strlen(ch.scope) < sizeof(ch.scope));
	}

	if (cfs_reg_token_parse((const char *)data, size, &tok) == 0) {
		FUZZ_ASSERT(tok && tok[0]);
		printable(tok);
		free(tok);
	}

	cfs_reg_error_parse((const char *)data, size, code, sizeof(code), msg, sizeof(msg));
	printable(code);
	printable(msg);

	hn = strcspn(s, "\n");
	if (hn >= sizeof(host))
		hn = sizeof(host) - 1;
	memcpy(host, s, hn);
	host[hn] = '\0';
	for (int k = 0; k < 2; k++) {
		if (cfs_reg_auth_find((const char *)data, size, k ? host : "reg.example:5000", &user,
				      &pass) == 0) {
			FUZZ_ASSERT(user && pass && user[0]);
			free(user);
			free(pass);
		} else {
			FUZZ_ASSERT(!user && !pass);
		}
		user = pass = NULL;
	}
	free(s);
	return 0;
}
