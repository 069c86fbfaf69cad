/* SPDX-License-Identifier: MIT */
/*
 * Signed tags (sign.h): the signature file's parser and writer, Ed25519
 * keys and trust sets through OpenSSL, and the trusted resolve.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "sign.h"
#include "store.h"
#include "util.h"

#define SIG_MAGIC "cfs-signature 1\n"
#define ED25519_RAW_LEN 32
/* A trust directory is read up to this many keys; more is a mistake. */
#define TRUST_MAX_KEYS 256
#define PEM_FILE_MAX (64 * 1024)

struct cfs_key {
	EVP_PKEY *pkey;
	uint8_t id[CFS_KEY_ID_LEN];
};

struct trusted_key {
	EVP_PKEY *pkey;
	uint8_t id[CFS_KEY_ID_LEN];
};

struct cfs_trust {
	size_t n;
	struct trusted_key keys[TRUST_MAX_KEYS];
};

static void why_set(char *why, size_t whylen, const char *fmt, ...) CFS_PRINTF(3, 4);
static void why_set(char *why, size_t whylen, const char *fmt, ...)
{
	va_list ap;

	if (!why || !whylen)
		return;
	va_start(ap, fmt);
	vsnprintf(why, whylen, fmt, ap);
	va_end(ap);
}

void cfs_key_id_short(const uint8_t id[CFS_KEY_ID_LEN], char out[17])
{
	cfs_hex_encode(id, 8, out);
	out[16] = '\0';
}

/* The signed part: the first four lines.  Its length, or -ENOSPC. */
static int sig_header(const struct cfs_sig *s, char *buf, size_t size)
{
	char ref[CFS_REF_STRLEN];
	int n;

	cfs_digest_ref(&s->ref, ref);
	n = snprintf(buf, size, SIG_MAGIC "tag %s\nref %s\ntime %llu\n", s->tag, ref,
		     (unsigned long long)s->time);
	return n < 0 || (size_t)n >= size ? -ENOSPC : n;
}

int cfs_sig_format(const struct cfs_sig *s, char *buf, size_t size)
{
	int n = sig_header(s, buf, size);
	size_t len;

	if (n < 0)
		return n;
	len = (size_t)n;
	for (unsigned i = 0; i < s->nsigs; i++) {
		/* "ed25519 " + 64 + " " + 128 + "\n" */
		if (size - len < 8 + 64 + 1 + 128 + 1 + 1)
			return -ENOSPC;
		memcpy(buf + len, "ed25519 ", 8);
		len += 8;
		cfs_hex_encode(s->sigs[i].key_id, CFS_KEY_ID_LEN, buf + len);
		len += 64;
		buf[len++] = ' ';
		cfs_hex_encode(s->sigs[i].sig, CFS_SIG_LEN, buf + len);
		len += 128;
		buf[len++] = '\n';
	}
	buf[len] = '\0';
	return (int)len;
}

/* One line "<prefix><value>\n" at *p: the value and its length, or NULL. */
static const char *line_value(const char **p, const char *end, const char *prefix, size_t *vlen)
{
	size_t plen = strlen(prefix);
	const char *nl, *v;

	if ((size_t)(end - *p) < plen || memcmp(*p, prefix, plen))
		return NULL;
	v = *p + plen;
	nl = memchr(v, '\n', (size_t)(end - v));
	if (!nl)
		return NULL;
	*vlen = (size_t)(nl - v);
	*p = nl + 1;
	return v;
}

int cfs_sig_parse(const void *buf, size_t len, struct cfs_sig *out)
{
	const char *p = buf, *end = p + len, *v;
	size_t vlen;

	memset(out, 0, sizeof(*out));
	if (len > CFS_SIG_FILE_MAX || len < sizeof(SIG_MAGIC) - 1 ||
	    memcmp(p, SIG_MAGIC, sizeof(SIG_MAGIC) - 1))
		return -EUCLEAN;
	p += sizeof(SIG_MAGIC) - 1;

	v = line_value(&p, end, "tag ", &vlen);
	if (!v || vlen > CFS_TAG_NAME_MAX || memchr(v, '\0', vlen))
		return -EUCLEAN;
	memcpy(out->tag, v, vlen);
	out->tag[vlen] = '\0';
	if (!cfs_tag_name_valid(out->tag))
		return -EUCLEAN;

	v = line_value(&p, end, "ref ", &vlen);
	if (!v || vlen != CFS_REF_STRLEN - 1)
		return -EUCLEAN;
	/* Lower-case hex only: the canonical form. */
	if (memcmp(v, "sha256:", 7) || cfs_hex_decode(v + 7, CFS_DIGEST_LEN, out->ref.b, true) < 0)
		return -EUCLEAN;

	/* Decimal, no sign, no leading zero: one spelling per value. */
	v = line_value(&p, end, "time ", &vlen);
	if (!v || vlen == 0 || vlen > 19 || (vlen > 1 && v[0] == '0'))
		return -EUCLEAN;
	for (size_t i = 0; i < vlen; i++) {
		if (v[i] < '0' || v[i] > '9')
			return -EUCLEAN;
		out->time = out->time * 10 + (uint64_t)(v[i] - '0');
	}

	while (p < end) {
		struct cfs_sig_line *l;

		v = line_value(&p, end, "ed25519 ", &vlen);
		if (!v || vlen != 64 + 1 + 128 || v[64] != ' ' || out->nsigs == CFS_SIG_MAX)
			return -EUCLEAN;
		l = &out->sigs[out->nsigs];
		if (cfs_hex_decode(v, CFS_KEY_ID_LEN, l->key_id, true) < 0 ||
		    cfs_hex_decode(v + 65, CFS_SIG_LEN, l->sig, true) < 0)
			return -EUCLEAN;
		for (unsigned i = 0; i < out->nsigs; i++)
			if (!memcmp(out->sigs[i].key_id, l->key_id, CFS_KEY_ID_LEN))
				return -EUCLEAN;
		out->nsigs++;
	}
	return out->nsigs ? 0 : -EUCLEAN;
}

static int pkey_id(EVP_PKEY *pk, uint8_t id[CFS_KEY_ID_LEN])
{
	uint8_t raw[ED25519_RAW_LEN];
	size_t n = sizeof(raw);
	cfs_digest d;

	if (EVP_PKEY_get_raw_public_key(pk, raw, &n) != 1 || n != sizeof(raw))
		return -EINVAL;
	cfs_sha256(raw, n, &d);
	memcpy(id, d.b, CFS_KEY_ID_LEN);
	return 0;
}

/* A PEM file's bytes through a memory BIO: bounded, and one error path. */
static int pem_bio(const char *path, BIO **out)
{
	struct stat sb;
	char *buf;
	ssize_t n;
	int fd, ret;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &sb) < 0) {
		ret = -errno;
		goto out_close;
	}
	if (!S_ISREG(sb.st_mode) || sb.st_size > PEM_FILE_MAX) {
		ret = S_ISDIR(sb.st_mode) ? -EISDIR : -EINVAL;
		goto out_close;
	}
	buf = malloc((size_t)sb.st_size + 1);
	if (!buf) {
		ret = -ENOMEM;
		goto out_close;
	}
	n = sb.st_size;
	ret = cfs_pread_full(fd, buf, (size_t)n, 0);
	if (ret < 0) {
		free(buf);
		goto out_close;
	}
	*out = BIO_new(BIO_s_mem());
	if (!*out || BIO_write(*out, buf, (int)n) != (int)n) {
		BIO_free(*out);
		*out = NULL;
		ret = -ENOMEM;
	} else {
		ret = 0;
	}
	explicit_bzero(buf, (size_t)n); /* may be a private key */
	free(buf);
out_close:
	close(fd);
	return ret;
}

int cfs_key_load(const char *path, struct cfs_key **out)
{
	struct cfs_key *k;
	EVP_PKEY *pk;
	BIO *bio;
	int ret;

	ret = pem_bio(path, &bio);
	if (ret < 0)
		return ret;
	pk = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
	BIO_free(bio);
	ERR_clear_error();
	if (!pk || EVP_PKEY_get_base_id(pk) != EVP_PKEY_ED25519) {
		EVP_PKEY_free(pk);
		return -EINVAL;
	}
	k = calloc(1, sizeof(*k));
	if (!k) {
		EVP_PKEY_free(pk);
		return -ENOMEM;
	}
	k->pkey = pk;
	if (pkey_id(pk, k->id) < 0) {
		cfs_key_free(k);
		return -EINVAL;
	}
	*out = k;
	return 0;
}

void cfs_key_free(struct cfs_key *k)
{
	if (!k)
		return;
	EVP_PKEY_free(k->pkey);
	free(k);
}

void cfs_key_id(const struct cfs_key *k, uint8_t id[CFS_KEY_ID_LEN])
{
	memcpy(id, k->id, CFS_KEY_ID_LEN);
}

int cfs_sig_add(struct cfs_sig *s, const struct cfs_key *k)
{
	char msg[512];
	struct cfs_sig_line *l = NULL;
	size_t siglen = CFS_SIG_LEN;
	EVP_MD_CTX *ctx;
	int n, ret = -EIO;

	n = sig_header(s, msg, sizeof(msg));
	if (n < 0)
		return n;
	for (unsigned i = 0; i < s->nsigs; i++)
		if (!memcmp(s->sigs[i].key_id, k->id, CFS_KEY_ID_LEN))
			l = &s->sigs[i];
	if (!l) {
		if (s->nsigs == CFS_SIG_MAX)
			return -ENOSPC;
		l = &s->sigs[s->nsigs];
	}
	ctx = EVP_MD_CTX_new();
	if (!ctx)
		return -ENOMEM;
	/* Ed25519 signs the message itself (no digest): md NULL, one shot. */
	if (EVP_DigestSignInit(ctx, NULL, NULL, NULL, k->pkey) == 1 &&
	    EVP_DigestSign(ctx, l->sig, &siglen, (const uint8_t *)msg, (size_t)n) == 1 &&
	    siglen == CFS_SIG_LEN) {
		memcpy(l->key_id, k->id, CFS_KEY_ID_LEN);
		if (l == &s->sigs[s->nsigs])
			s->nsigs++;
		ret = 0;
	}
	EVP_MD_CTX_free(ctx);
	ERR_clear_error();
	return ret;
}

/* Adds every public key of one PEM file.  -EINVAL when it holds anything
 * else (a private key given by mistake, an RSA key) or nothing. */
static int trust_add_file(struct cfs_trust *t, const char *path)
{
	size_t before = t->n;
	BIO *bio;
	int ret;

	ret = pem_bio(path, &bio);
	if (ret < 0)
		return ret;
	for (;;) {
		EVP_PKEY *pk = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
		struct trusted_key *tk;
		bool dup = false;

		/* NULL at the end: PEM blocks of other kinds (a private key
		 * given by mistake) are skipped, and a file of nothing else
		 * is refused below. */
		if (!pk)
			break;
		if (EVP_PKEY_get_base_id(pk) != EVP_PKEY_ED25519) {
			EVP_PKEY_free(pk);
			ret = -EINVAL;
			break;
		}
		if (t->n == TRUST_MAX_KEYS) {
			EVP_PKEY_free(pk);
			ret = -E2BIG;
			break;
		}
		tk = &t->keys[t->n];
		if (pkey_id(pk, tk->id) < 0) {
			EVP_PKEY_free(pk);
			ret = -EINVAL;
			break;
		}
		for (size_t i = 0; i < t->n; i++)
			dup |= !memcmp(t->keys[i].id, tk->id, CFS_KEY_ID_LEN);
		if (dup) {
			EVP_PKEY_free(pk);
			continue;
		}
		tk->pkey = pk;
		t->n++;
	}
	BIO_free(bio);
	ERR_clear_error();
	if (!ret && t->n == before)
		ret = -EINVAL;
	return ret;
}

static bool trust_file_name(const char *name)
{
	size_t n = strlen(name);

	return name[0] != '.' && n > 4 &&
	       (!strcmp(name + n - 4, ".pem") || !strcmp(name + n - 4, ".pub"));
}

int cfs_trust_load(const char *path, struct cfs_trust **out)
{
	struct cfs_trust *t;
	struct stat sb;
	int ret = 0;

	if (stat(path, &sb) < 0)
		return -errno;
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	if (S_ISDIR(sb.st_mode)) {
		struct dirent **names;
		int n = scandir(path, &names, NULL, alphasort);

		if (n < 0) {
			ret = -errno;
			goto fail;
		}
		for (int i = 0; i < n; i++) {
			char *file;

			if (!ret && trust_file_name(names[i]->d_name)) {
				if (asprintf(&file, "%s/%s", path, names[i]->d_name) < 0) {
					ret = -ENOMEM;
				} else {
					ret = trust_add_file(t, file);
					free(file);
				}
			}
			free(names[i]);
		}
		free(names);
		if (!ret && !t->n)
			ret = -EINVAL;
	} else {
		ret = trust_add_file(t, path);
	}
	if (ret < 0)
		goto fail;
	*out = t;
	return 0;
fail:
	cfs_trust_free(t);
	return ret;
}

void cfs_trust_free(struct cfs_trust *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->n; i++)
		EVP_PKEY_free(t->keys[i].pkey);
	free(t);
}

size_t cfs_trust_count(const struct cfs_trust *t)
{
	return t ? t->n : 0;
}

void cfs_trust_key_id(const struct cfs_trust *t, size_t i, uint8_t id[CFS_KEY_ID_LEN])
{
	memcpy(id, t->keys[i].id, CFS_KEY_ID_LEN);
}

static bool ed25519_verify(EVP_PKEY *pk, const uint8_t sig[CFS_SIG_LEN], const char *msg,
			   size_t len)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	bool ok;

	if (!ctx)
		return false;
	ok = EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, pk) == 1 &&
	     EVP_DigestVerify(ctx, sig, CFS_SIG_LEN, (const uint8_t *)msg, len) == 1;
	EVP_MD_CTX_free(ctx);
	ERR_clear_error();
	return ok;
}

int cfs_sig_verify(const struct cfs_sig *s, const struct cfs_trust *t, char *why, size_t whylen)
{
	char msg[512], id[17];
	const struct cfs_sig_line *bad = NULL;
	int n = sig_header(s, msg, sizeof(msg));

	if (n < 0) {
		why_set(why, whylen, "malformed signature");
		return -EPERM;
	}
	for (unsigned i = 0; i < s->nsigs; i++) {
		for (size_t j = 0; j < t->n; j++) {
			if (memcmp(s->sigs[i].key_id, t->keys[j].id, CFS_KEY_ID_LEN))
				continue;
			if (ed25519_verify(t->keys[j].pkey, s->sigs[i].sig, msg, (size_t)n))
				return 0;
			bad = &s->sigs[i];
		}
	}
	if (bad) {
		cfs_key_id_short(bad->key_id, id);
		why_set(why, whylen, "the signature by trusted key %s does not verify", id);
	} else {
		char ids[3 * 18] = "";
		size_t o = 0;

		for (unsigned i = 0; i < s->nsigs && i < 3; i++) {
			cfs_key_id_short(s->sigs[i].key_id, id);
			o += (size_t)snprintf(ids + o, sizeof(ids) - o, "%s%s", i ? " " : "", id);
		}
		why_set(why, whylen, "signed by no trusted key (signer%s: %s%s)",
			s->nsigs == 1 ? "" : "s", ids, s->nsigs > 3 ? " ..." : "");
	}
	return -EPERM;
}

int cfs_store_resolve_trusted(struct cfs_store *st, const struct cfs_trust *t, const char *image,
			      cfs_digest *out, uint64_t *signed_at, char *why, size_t whylen)
{
	struct cfs_sig *s;
	void *buf;
	size_t len;
	int ret;

	if (!image)
		return -EINVAL;
	if (signed_at)
		*signed_at = 0;
	/* A reference names its bytes: verifying them is enough. */
	if (!strncmp(image, "sha256:", 7) || !t)
		return cfs_store_resolve(st, image, out);
	ret = cfs_store_sig_get(st, image, CFS_SIG_FILE_MAX, &buf, &len);
	if (ret == -ENOENT) {
		why_set(why, whylen, "no signature (sigs/%s)", image);
		return -ENOKEY;
	}
	if (ret == -EFBIG) {
		why_set(why, whylen, "malformed signature file sigs/%s (over %d bytes)", image,
			CFS_SIG_FILE_MAX);
		return -EUCLEAN;
	}
	if (ret < 0)
		return ret;
	s = malloc(sizeof(*s));
	if (!s) {
		free(buf);
		return -ENOMEM;
	}
	ret = cfs_sig_parse(buf, len, s);
	free(buf);
	if (ret < 0) {
		why_set(why, whylen, "malformed signature file sigs/%s", image);
		goto out;
	}
	if (strcmp(s->tag, image)) {
		why_set(why, whylen, "the signature in sigs/%s is for tag '%s'", image, s->tag);
		ret = -EPERM;
		goto out;
	}
	ret = cfs_sig_verify(s, t, why, whylen);
	if (!ret) {
		*out = s->ref;
		if (signed_at)
			*signed_at = s->time;
	}
out:
	free(s);
	return ret;
}

int cfs_store_sign(struct cfs_store *st, const struct cfs_key *k, const char *tag,
		   const cfs_digest *ref, uint64_t time_s)
{
	char text[CFS_SIG_FILE_MAX + 1];
	struct cfs_sig *s, old;
	void *buf;
	size_t len;
	int ret;

	if (!cfs_tag_name_valid(tag))
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	/* Another signer's statement of the same tag and reference is kept
	 * (its time too, which every line covers); anything else goes. */
	ret = cfs_store_sig_get(st, tag, CFS_SIG_FILE_MAX, &buf, &len);
	if (!ret) {
		if (!cfs_sig_parse(buf, len, &old) && !strcmp(old.tag, tag) &&
		    cfs_digest_eq(&old.ref, ref))
			*s = old;
		free(buf);
	} else if (ret != -ENOENT && ret != -EFBIG) {
		goto out;
	}
	if (!s->nsigs) {
		snprintf(s->tag, sizeof(s->tag), "%s", tag);
		s->ref = *ref;
		s->time = time_s ? time_s : (uint64_t)time(NULL);
	}
	ret = cfs_sig_add(s, k);
	if (ret < 0)
		goto out;
	ret = cfs_sig_format(s, text, sizeof(text));
	if (ret < 0)
		goto out;
	ret = cfs_store_sig_set(st, tag, text, (size_t)ret);
out:
	free(s);
	return ret;
}
