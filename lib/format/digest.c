/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <string.h>

#include <openssl/evp.h>

#include "digest.h"

void cfs_sha256(const void *data, size_t len, cfs_digest *out)
{
	unsigned int n = CFS_DIGEST_LEN;

	/* EVP_Digest cannot fail for SHA-256 short of memory exhaustion inside
	 * OpenSSL; zero the output then so that it never matches anything. */
	if (!EVP_Digest(data, len, out->b, &n, EVP_sha256(), NULL))
		memset(out->b, 0, sizeof(out->b));
}

void cfs_hex_encode(const void *bytes, size_t n, char *out)
{
	static const char hex[] = "0123456789abcdef";
	const uint8_t *b = bytes;

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = hex[b[i] >> 4];
		out[2 * i + 1] = hex[b[i] & 15];
	}
}

void cfs_digest_hex(const cfs_digest *d, char out[CFS_DIGEST_HEX_LEN + 1])
{
	cfs_hex_encode(d->b, CFS_DIGEST_LEN, out);
	out[CFS_DIGEST_HEX_LEN] = '\0';
}

void cfs_digest_ref(const cfs_digest *d, char out[CFS_REF_STRLEN])
{
	memcpy(out, "sha256:", 7);
	cfs_digest_hex(d, out + 7);
}

int cfs_hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int cfs_hex_decode(const char *s, size_t n, void *out, bool lower_only)
{
	uint8_t *b = out;

	for (size_t i = 0; i < n; i++) {
		int hi = cfs_hex_value(s[2 * i]), lo = cfs_hex_value(s[2 * i + 1]);

		if (hi < 0 || lo < 0 ||
		    (lower_only && ((s[2 * i] >= 'A' && s[2 * i] <= 'F') ||
				    (s[2 * i + 1] >= 'A' && s[2 * i + 1] <= 'F'))))
			return -EINVAL;
		b[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

int cfs_digest_parse(const char *s, bool bare_ok, cfs_digest *out)
{
	if (!strncmp(s, "sha256:", 7))
		s += 7;
	else if (!bare_ok)
		return -EINVAL;
	if (strlen(s) != CFS_DIGEST_HEX_LEN)
		return -EINVAL;
	return cfs_hex_decode(s, CFS_DIGEST_LEN, out->b, false);
}

bool cfs_digest_eq(const cfs_digest *a, const cfs_digest *b)
{
	return !memcmp(a->b, b->b, CFS_DIGEST_LEN);
}
