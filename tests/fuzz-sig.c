/* SPDX-License-Identifier: MIT */
/*
 * fuzz-sig: libFuzzer target for what a store hands over as a tag or a
 * signature file (lib/store/store.c cfs_tag_parse, lib/store/sign.c cfs_sig_parse).
 * Whatever the input, nothing may crash.  An accepted tag must print back
 * to the same reference; an accepted signature file must be canonical (it
 * formats back to the input byte for byte, so the signed bytes are known),
 * must not verify against a key that did not sign it, and once signed by
 * the fixed test key must verify, and stop verifying when its reference
 * changes.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "fuzz.h"
#include "sign.h"
#include "store.h"
#include "util.h"



static struct cfs_key *key;
static struct cfs_trust *trust;

/* The test key, from a fixed seed, through PEM files as a user gives them. */
static void setup(void)
{
	static const uint8_t seed[32] = "cfs fuzz-sig fixed test key 0001";
	char priv[] = "/tmp/fuzz-sig-key.XXXXXX", pub[] = "/tmp/fuzz-sig-pub.XXXXXX";
	EVP_PKEY *pk = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed, sizeof(seed));
	int fd1 = mkstemp(priv), fd2 = mkstemp(pub);
	FILE *f1, *f2;

	FUZZ_ASSERT(pk && fd1 >= 0 && fd2 >= 0);
	f1 = fdopen(fd1, "w");
	f2 = fdopen(fd2, "w");
	FUZZ_ASSERT(f1 && f2);
	FUZZ_ASSERT(PEM_write_PrivateKey(f1, pk, NULL, NULL, 0, NULL, NULL) == 1);
	FUZZ_ASSERT(PEM_write_PUBKEY(f2, pk) == 1);
	fclose(f1);
	fclose(f2);
	EVP_PKEY_free(pk);
	FUZZ_ASSERT(cfs_key_load(priv, &key) == 0);
	FUZZ_ASSERT(cfs_trust_load(pub, &trust) == 0 && cfs_trust_count(trust) == 1);
	unlink(priv);
	unlink(pub);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char out[CFS_SIG_FILE_MAX + 1];
	static struct cfs_sig s, t;
	char why[256], ref[CFS_REF_STRLEN];
	uint8_t id[CFS_KEY_ID_LEN];
	cfs_digest d;
	int n;

	if (!key)
		setup();

	if (cfs_tag_parse(data, size, &d) == 0) {
		cfs_digest_ref(&d, ref);
		FUZZ_ASSERT(size == CFS_REF_STRLEN - 1 ||
		       (size == CFS_REF_STRLEN && data[CFS_REF_STRLEN - 1] == '\n'));
		FUZZ_ASSERT(!strncasecmp((const char *)data, ref, CFS_REF_STRLEN - 1));
	}

	if (cfs_sig_parse(data, size, &s) < 0)
		return 0;
	FUZZ_ASSERT(s.nsigs >= 1 && s.nsigs <= CFS_SIG_MAX && cfs_tag_name_valid(s.tag));
	n = cfs_sig_format(&s, out, sizeof(out));
	FUZZ_ASSERT(n >= 0 && (size_t)n == size && !memcmp(out, data, size));

	/* Only the test key is trusted: unless the input carries a real
	 * signature by it (it cannot, short of a forgery), no verify. */
	cfs_key_id(key, id);
	for (unsigned i = 0; i < s.nsigs; i++)
		if (!memcmp(s.sigs[i].key_id, id, sizeof(id)))
			goto sign;
	FUZZ_ASSERT(cfs_sig_verify(&s, trust, why, sizeof(why)) == -EPERM && why[0]);
sign:
	t = s;
	if (cfs_sig_add(&t, key) == 0) {
		FUZZ_ASSERT(cfs_sig_verify(&t, trust, why, sizeof(why)) == 0);
		t.ref.b[size % CFS_DIGEST_LEN] ^= 1;
		FUZZ_ASSERT(cfs_sig_verify(&t, trust, why, sizeof(why)) == -EPERM);
	} else {
		FUZZ_ASSERT(t.nsigs == CFS_SIG_MAX);
	}
	return 0;
}
