/* SPDX-License-Identifier: MIT */
/*
 * The registry source's parsers (pack_reg.h).  Everything here comes from
 * outside, a user's command line, a registry's headers and bodies, a
 * credential file, so every copy is into a buffer of fixed size and
 * anything that does not fit is refused, never cut, but for the error
 * texts, which only feed a message.  JSON goes through jansson; the
 * reference and the WWW-Authenticate grammar (RFC 7235: challenges and
 * auth-params in one comma-separated list, quoted strings with
 * backslash escapes) are scanned by hand, one byte at a time.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "pack_reg.h"

#define REF_MAX 1024
#define TOKEN_MAX (64u << 10)
#define AUTH_B64_MAX 8192u

static int ref_bad(char *msg, size_t len, const char *why)
{
	if (msg && len)
		snprintf(msg, len, "%s", why);
	return -EINVAL;
}

static bool is_lower_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool is_alnum(char c)
{
	return is_lower_alnum(c) || (c >= 'A' && c <= 'Z');
}

/* A repository path: components of [a-z0-9] separated by '.', '_' or '-'
 * runs, joined by '/'. */
static bool repo_valid(const char *s, size_t n)
{
	size_t i = 0;

	if (!n)
		return false;
	while (i < n) {
		size_t start = i;

		while (i < n && s[i] != '/') {
			char c = s[i];

			if (!is_lower_alnum(c) && c != '.' && c != '_' && c != '-')
				return false;
			i++;
		}
		if (i == start || !is_lower_alnum(s[start]) || !is_lower_alnum(s[i - 1]))
			return false;
		if (i < n && ++i == n)
			return false; /* a trailing '/' */
	}
	return true;
}

/* host[:port] or [v6]:port. */
static bool host_valid(const char *s, size_t n)
{
	size_t i = 0, colon = n;

	if (!n)
		return false;
	if (s[0] == '[') {
		for (i = 1; i < n && s[i] != ']'; i++)
			if (!strchr("0123456789abcdefABCDEF:.", s[i]))
				return false;
		if (i >= n || i == 1)
			return false;
		i++;
		if (i < n && s[i] != ':')
			return false;
		colon = i;
	} else {
		for (; i < n && s[i] != ':'; i++)
			if (!is_alnum(s[i]) && s[i] != '.' && s[i] != '-')
				return false;
		if (i == 0)
			return false;
		colon = i;
	}
	if (colon < n) {
		unsigned long port = 0;
		size_t j;

		if (colon + 1 == n || n - colon - 1 > 5)
			return false;
		for (j = colon + 1; j < n; j++) {
			if (s[j] < '0' || s[j] > '9')
				return false;
			port = port * 10 + (unsigned long)(s[j] - '0');
		}
		if (port == 0 || port > 65535)
			return false;
	}
	return true;
}

int cfs_reg_ref_parse(const char *s, struct cfs_reg_ref *out, char *msg, size_t len)
{
	size_t n = strnlen(s, REF_MAX + 1), hn, rn, i;
	const char *slash, *rest, *at, *colon = NULL, *end;
	bool docker_io;

	memset(out, 0, sizeof(*out));
	if (n > REF_MAX)
		return ref_bad(msg, len, "reference too long");
	for (i = 0; i < n; i++)
		if ((unsigned char)s[i] <= ' ' || (unsigned char)s[i] >= 0x7f)
			return ref_bad(msg, len, "a space or control character in the reference");
	slash = memchr(s, '/', n);
	hn = slash ? (size_t)(slash - s) : 0;
	docker_io = !slash || (!memchr(s, '.', hn) && !memchr(s, ':', hn) &&
			       !(hn == 9 && !memcmp(s, "localhost", 9)));
	if (docker_io || (hn == 9 && !memcmp(s, "docker.io", 9)) ||
	    (hn == 15 && !memcmp(s, "index.docker.io", 15))) {
		snprintf(out->host, sizeof(out->host), "registry-1.docker.io");
		rest = docker_io ? s : slash + 1;
	} else {
		if (!host_valid(s, hn) || hn >= sizeof(out->host))
			return ref_bad(msg, len, "bad registry host (want HOST[:PORT]/REPO[:TAG])");
		memcpy(out->host, s, hn);
		rest = slash + 1;
	}
	end = s + n;
	at = memchr(rest, '@', (size_t)(end - rest));
	if (at) {
		const char *hex = at + 1;

		if ((size_t)(end - hex) != 7 + 64 || memcmp(hex, "sha256:", 7))
			return ref_bad(msg, len, "only @sha256:<64 hex digits> digests are supported");
		for (i = 7; i < 71; i++)
			if (!strchr("0123456789abcdef", hex[i]) || !hex[i])
				return ref_bad(msg, len, "only @sha256:<64 hex digits> digests are supported");
		memcpy(out->ref, hex, 71);
		out->by_digest = true;
		end = at;
	} else {
		for (const char *c = end; c > rest; c--) {
			if (c[-1] == '/')
				break;
			if (c[-1] == ':') {
				colon = c - 1;
				break;
			}
		}
		if (colon) {
			size_t tn = (size_t)(end - colon - 1);

			if (!tn || tn > CFS_REG_TAG_MAX || !(is_alnum(colon[1]) || colon[1] == '_'))
				return ref_bad(msg, len, "bad tag");
			for (i = 1; i <= tn; i++)
				if (!is_alnum(colon[i]) && !strchr("_.-", colon[i]))
					return ref_bad(msg, len, "bad tag");
			memcpy(out->ref, colon + 1, tn);
			end = colon;
		} else {
			snprintf(out->ref, sizeof(out->ref), "latest");
		}
	}
	rn = (size_t)(end - rest);
	if (!repo_valid(rest, rn))
		return ref_bad(msg, len, "bad repository name (lowercase letters, digits, . _ - and /)");
	if (docker_io && !memchr(rest, '/', rn)) {
		if (rn + 8 >= sizeof(out->repo))
			return ref_bad(msg, len, "repository name too long");
		snprintf(out->repo, sizeof(out->repo), "library/%.*s", (int)rn, rest);
	} else {
		if (rn >= sizeof(out->repo))
			return ref_bad(msg, len, "repository name too long");
		memcpy(out->repo, rest, rn);
	}
	return 0;
}

/* ---- WWW-Authenticate ---- */

static bool is_tchar(char c)
{
	return is_alnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* A value: a quoted string or a run up to a comma or a space, into dst
 * (cap bytes with the NUL) when dst is set.  *pos past it. */
static int param_value(const char *h, size_t n, size_t *pos, char *dst, size_t cap)
{
	size_t i = *pos, w = 0;

	if (i < n && h[i] == '"') {
		for (i++;; i++) {
			char c;

			if (i >= n)
				return -EINVAL; /* unterminated */
			c = h[i];
			if (c == '"')
				break;
			if (c == '\\') {
				if (++i >= n)
					return -EINVAL;
				c = h[i];
			}
			if ((unsigned char)c < ' ' || c == 0x7f)
				return -EINVAL;
			if (dst) {
				if (w + 1 >= cap)
					return -EINVAL;
				dst[w++] = c;
			}
		}
		i++;
	} else {
		for (; i < n && h[i] != ',' && h[i] != ' ' && h[i] != '\t'; i++) {
			if ((unsigned char)h[i] < ' ' || h[i] == 0x7f || h[i] == '"')
				return -EINVAL;
			if (dst) {
				if (w + 1 >= cap)
					return -EINVAL;
				dst[w++] = h[i];
			}
		}
	}
	if (dst)
		dst[w] = '\0';
	*pos = i;
	return 0;
}

int cfs_reg_challenge_parse(const char *h, size_t n, struct cfs_reg_challenge *out)
{
	struct cfs_reg_challenge bearer = { .scheme = CFS_REG_AUTH_NONE },
				 basic = { .scheme = CFS_REG_AUTH_NONE };
	struct cfs_reg_challenge *cur = NULL;
	bool any_scheme = false;
	size_t i = 0;

	memset(out, 0, sizeof(*out));
	while (i < n) {
		size_t t0, tn;
		int ret;

		while (i < n && (h[i] == ' ' || h[i] == '\t' || h[i] == ','))
			i++;
		if (i >= n)
			break;
		t0 = i;
		while (i < n && is_tchar(h[i]))
			i++;
		tn = i - t0;
		if (!tn)
			return -EINVAL;
		while (i < n && (h[i] == ' ' || h[i] == '\t'))
			i++;
		if (i < n && h[i] == '=' && any_scheme) {
			char *dst = NULL;
			size_t cap = 0;

			i++;
			while (i < n && (h[i] == ' ' || h[i] == '\t'))
				i++;
			if (cur && tn == 5 && !strncasecmp(h + t0, "realm", 5)) {
				dst = cur->realm;
				cap = sizeof(cur->realm);
			} else if (cur == &bearer && tn == 7 && !strncasecmp(h + t0, "service", 7)) {
				dst = cur->service;
				cap = sizeof(cur->service);
			} else if (cur == &bearer && tn == 5 && !strncasecmp(h + t0, "scope", 5)) {
				dst = cur->scope;
				cap = sizeof(cur->scope);
			}
			ret = param_value(h, n, &i, dst, cap);
			if (ret < 0)
				return ret;
			continue;
		}
		/* A new challenge's scheme. */
		any_scheme = true;
		if (tn == 6 && !strncasecmp(h + t0, "bearer", 6)) {
			cur = &bearer;
			bearer.scheme = CFS_REG_AUTH_BEARER;
		} else if (tn == 5 && !strncasecmp(h + t0, "basic", 5)) {
			cur = &basic;
			basic.scheme = CFS_REG_AUTH_BASIC;
		} else {
			cur = NULL;
		}
		/* A token68 credential after the scheme ("abc==", not
		 * "realm=x"): skipped. */
		if (i < n && h[i] != ',') {
			size_t j = i;

			while (j < n && (is_alnum(h[j]) || (h[j] && strchr("-._~+/", h[j]))))
				j++;
			while (j > i && j < n && h[j] == '=')
				j++;
			if (j > i && (j >= n || h[j] == ',' || h[j] == ' ' || h[j] == '\t'))
				i = j;
		}
	}
	if (bearer.scheme) {
		if (!bearer.realm[0])
			return -EINVAL;
		*out = bearer;
		return 0;
	}
	if (basic.scheme) {
		*out = basic;
		return 0;
	}
	return -ENOENT;
}

/* ---- JSON replies ---- */

int cfs_reg_token_parse(const char *buf, size_t len, char **tok)
{
	json_t *j = json_loadb(buf, len, 0, NULL), *v;
	const char *s = NULL;
	size_t n;
	int ret = -EINVAL;

	*tok = NULL;
	if (!json_is_object(j))
		goto out;
	v = json_object_get(j, "token");
	if (!json_is_string(v) || !json_string_length(v))
		v = json_object_get(j, "access_token");
	if (!json_is_string(v))
		goto out;
	s = json_string_value(v);
	n = json_string_length(v);
	if (!n || n > TOKEN_MAX)
		goto out;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] <= ' ' || (unsigned char)s[i] >= 0x7f)
			goto out;
	*tok = strndup(s, n);
	ret = *tok ? 0 : -ENOMEM;
out:
	json_decref(j);
	return ret;
}

/* Copies s into dst (cap bytes), '?' for what is not printable ASCII. */
static void copy_printable(char *dst, size_t cap, const char *s)
{
	size_t i;

	if (!cap)
		return;
	for (i = 0; s && s[i] && i + 1 < cap; i++)
		dst[i] = ((unsigned char)s[i] < ' ' || (unsigned char)s[i] >= 0x7f) ? '?' : s[i];
	dst[i] = '\0';
}

void cfs_reg_error_parse(const char *buf, size_t len, char *code, size_t code_len, char *message,
			 size_t message_len)
{
	json_t *j = buf && len ? json_loadb(buf, len, 0, NULL) : NULL;
	json_t *e = json_array_get(json_object_get(j, "errors"), 0);

	copy_printable(code, code_len, json_string_value(json_object_get(e, "code")));
	copy_printable(message, message_len, json_string_value(json_object_get(e, "message")));
	json_decref(j);
}

/* ---- credential files ---- */

/* "https://host/v1/" -> "host"; *n its length. */
static const char *auth_key_host(const char *key, size_t *n)
{
	const char *s = key;

	if (!strncasecmp(s, "https://", 8))
		s += 8;
	else if (!strncasecmp(s, "http://", 7))
		s += 7;
	*n = strcspn(s, "/");
	return s;
}

static int auth_decode(const char *b64, char **user, char **pass)
{
	size_t n = strlen(b64), pad = 0, out_len;
	unsigned char *raw;
	char *colon;
	int got;

	if (!n || n > AUTH_B64_MAX || n % 4)
		return -EINVAL;
	raw = malloc(n / 4 * 3 + 1);
	if (!raw)
		return -ENOMEM;
	got = EVP_DecodeBlock(raw, (const unsigned char *)b64, (int)n);
	if (got < 0) {
		free(raw);
		return -EINVAL;
	}
	while (pad < 2 && b64[n - 1 - pad] == '=')
		pad++;
	out_len = (size_t)got - pad;
	raw[out_len] = '\0';
	colon = memchr(raw, ':', out_len);
	if (!colon || memchr(raw, '\0', out_len) || colon == (char *)raw) {
		free(raw);
		return -EINVAL;
	}
	*colon = '\0';
	*user = strdup((char *)raw);
	*pass = strdup(colon + 1);
	free(raw);
	if (!*user || !*pass) {
		free(*user);
		free(*pass);
		*user = *pass = NULL;
		return -ENOMEM;
	}
	return 0;
}

int cfs_reg_auth_find(const char *buf, size_t len, const char *host, char **user, char **pass)
{
	json_t *j = json_loadb(buf, len, 0, NULL), *auths, *v, *best = NULL;
	size_t hn = strlen(host);
	const char *key;
	int ret = -ENOENT;

	*user = *pass = NULL;
	if (!json_is_object(j)) {
		ret = -EINVAL;
		goto out;
	}
	auths = json_object_get(j, "auths");
	if (auths && !json_is_object(auths)) {
		ret = -EINVAL;
		goto out;
	}
	json_object_foreach(auths, key, v) {
		size_t kn;
		const char *kh = auth_key_host(key, &kn);

		if (kn != hn || strncasecmp(kh, host, hn))
			continue;
		/* The bare host wins over a URL naming it. */
		if (!best || !strcasecmp(key, host))
			best = v;
	}
	if (best) {
		json_t *a = json_object_get(best, "auth");

		if (!json_is_string(a))
			goto out; /* an entry without inline credentials (a helper's) */
		ret = auth_decode(json_string_value(a), user, pass);
	}
out:
	json_decref(j);
	return ret;
}
