/* SPDX-License-Identifier: MIT */
/*
 * The registry source of cfs-pack: docker://HOST[:PORT]/REPO[:TAG|@DIGEST],
 * the distribution API spoken with libcurl, over the image logic every
 * image source shares (pack_oci.c).
 *
 * The manifests and the config are small requests, made in turn on the
 * calling thread: GET /v2/ first, which tells whether and how the
 * registry wants credentials (a 401's WWW-Authenticate: Basic, or Bearer
 * with the token server's realm), then the manifest, whose bytes are
 * checked against the digest asked for and the Docker-Content-Digest the
 * registry gives.  Connection errors, 429 and 5xx are retried with
 * backoff a few times; a connect timeout and a stall timeout make a
 * registry that hangs fail in seconds, not hang the pack.  A 401 runs the
 * token flow once more with the scope it names.
 *
 * The layers stream.  As soon as the manifest is known, one thread of
 * this source drives a curl multi handle that downloads the layers in
 * order, in parts of PART_SIZE bytes (HTTP ranges), STREAMS_MAX parts at
 * a time, into memory, and starts a part only while the bytes fetched
 * and not yet packed stay within WINDOW_MAX.  So a large layer comes
 * over several connections at once (a per-connection cap is what a
 * registry's CDN and a long fat link impose), the network runs ahead of
 * the packing by a bounded window whatever the layers' sizes, and
 * nothing touches the disk.  A part cut short is asked again for the
 * rest of its range.  The first ranged reply tells whether the registry
 * serves ranges; one that answers with the whole blob gets each layer
 * whole from then on, on one connection, paused (CURL_WRITEFUNC_PAUSE)
 * while PART_SIZE of it waits.  The bytes are hashed as they are applied
 * (pack_oci_layer.c): a layer that fails its digest fails the pack,
 * which writes no index and no tag.
 *
 * Authorization goes in a header of our own; libcurl sends such a header
 * to the host of the URL only, not to the blob storage a redirect leads
 * to.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

#include "digest.h"
#include "util.h"

#include "pack.h"
#include "pack_oci_i.h"
#include "pack_reg.h"

#define CONNECT_TIMEOUT_S 5L
#define STALL_TIMEOUT_S 8L     /* no byte for this long: the registry hangs */
#define TRIES 4                /* attempts of a request */
#define BACKOFF_MS 250u        /* then x2 */
#define STREAMS_MAX 4u         /* transfers at a time */
#define PART_SIZE (8u << 20)   /* a layer is fetched in ranges of this size */
#define WINDOW_MAX (64u << 20) /* bytes fetched or on the way, not yet read */
#define PIECE_SIZE (256u << 10)
#define ERRBODY_MAX 4096u
#define AUTHFILE_MAX (1u << 20)
#define ACCEPT "Accept: " CFS_MT_OCI_MANIFEST ", " CFS_MT_OCI_INDEX ", " \
	CFS_MT_DOCKER_MANIFEST ", " CFS_MT_DOCKER_LIST

/* A reply's status, headers and (bounded) body. */
struct resp {
	long status;
	char *body;
	size_t len, max;
	bool too_big;
	char ctype[128];
	char dcd[CFS_REF_STRLEN + 8];  /* Docker-Content-Digest */
	char www[CFS_REG_REALM_MAX + 2 * CFS_REG_PARAM_MAX + 64];
	bool www_long;
};

struct piece {
	struct piece *next;
	size_t len, off;
	unsigned char data[];
};

/* Range support, as the first ranged reply tells it. */
enum ranges { RANGES_UNKNOWN, RANGES_YES, RANGES_NO };

/* A byte range of a layer on the wire: [off, off + len), or the whole
 * layer without a Range header (one part, or a registry without
 * ranges).  The fields below mu's line are under reg.mu. */
struct part {
	struct stream *s;
	uint64_t off;
	CURL *h;
	struct curl_slist *hdrs;
	char curl_err[CURL_ERROR_SIZE];
	char range[48];
	unsigned attempts;
	uint64_t retry_ns;     /* when a retry may start */
	bool in_multi, asked_range;
	/* -- under mu -- */
	uint64_t len;
	bool ranged, probe, checked;
	struct part *next;     /* the layer's next part */
	struct piece *head, *tail;
	size_t buffered;
	uint64_t received;     /* of the range */
	uint64_t taken;        /* of them, read by the packing */
	uint64_t charge;       /* what the part holds of reg.reserved */
	bool done, paused;
	int err;
	char msg[768];
	char errbody[ERRBODY_MAX];
	size_t errlen;
};

/* One layer: its parts, started in order and read in order. */
struct stream {
	struct reg *r;
	size_t i;
	char *url;
	uint64_t size;
	/* -- under mu -- */
	uint64_t next_off;     /* where the next part starts */
	struct part *parts, *last;  /* started, not yet read */
	uint64_t taken;
};

struct reg {
	struct cfs_pack_oci o;  /* first: the blobs' functions find the rest */
	struct cfs_reg_ref ref;
	char base[CFS_REG_HOST_MAX + 16];   /* "https://host[:port]" */
	bool insecure;
	const char *ca_file;
	char *basic;            /* base64 of user:pass, or NULL */
	char *auth;             /* "Authorization: ..." in use, or NULL */
	char scope[CFS_REG_PARAM_MAX];  /* of the token in auth */
	struct cfs_reg_challenge ch;
	CURL *h;                /* the small requests' */

	pthread_mutex_t mu;
	pthread_cond_t cv;
	pthread_t th;
	bool th_started, stop;
	CURLM *multi;
	struct stream *s;
	size_t n;
	size_t next;            /* the first layer with parts to start */
	struct part *xfer[STREAMS_MAX];  /* the parts on the wire */
	size_t active;
	uint64_t reserved;      /* bytes of started parts not yet read */
	enum ranges ranges;
	bool probing;           /* a ranged request's reply is awaited */
	bool oom;
	size_t npaused;
};

#define fail cfs_pack_oci_fail

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* ---- credentials ---- */

static int read_small(const char *path, char **buf, size_t *len)
{
	FILE *f = fopen(path, "re");
	char *b;
	size_t n;

	if (!f)
		return -errno;
	b = malloc(AUTHFILE_MAX + 1);
	if (!b) {
		fclose(f);
		return -ENOMEM;
	}
	n = fread(b, 1, AUTHFILE_MAX + 1, f);
	if (ferror(f) || n > AUTHFILE_MAX) {
		int err = ferror(f) ? -EIO : -EFBIG;

		fclose(f);
		free(b);
		return err;
	}
	fclose(f);
	b[n] = '\0';
	*buf = b;
	*len = n;
	return 0;
}

/* The credentials for the registry from the first auth file that exists,
 * as skopeo and podman look (docker's last); --authfile must exist. */
static int creds_load(struct reg *r, const char *authfile)
{
	const char *env = getenv("REGISTRY_AUTH_FILE"), *xdg = getenv("XDG_RUNTIME_DIR");
	const char *home = getenv("HOME");
	const char *hosts[] = { r->ref.host, "docker.io", "index.docker.io" };
	char paths[2][PATH_MAX];
	const char *cand[4];
	size_t nc = 0;
	int ret = 0;

	if (authfile) {
		cand[nc++] = authfile;
	} else {
		if (env && *env)
			cand[nc++] = env;
		if (xdg && *xdg) {
			snprintf(paths[0], sizeof(paths[0]), "%s/containers/auth.json", xdg);
			cand[nc++] = paths[0];
		}
		if (home && *home) {
			snprintf(paths[1], sizeof(paths[1]), "%s/.docker/config.json", home);
			cand[nc++] = paths[1];
		}
	}
	for (size_t k = 0; k < nc; k++) {
		char *buf = NULL, *user = NULL, *pass = NULL, *pair = NULL;
		size_t len = 0, nh = strcmp(r->ref.host, "registry-1.docker.io") ? 1 : 3;

		ret = read_small(cand[k], &buf, &len);
		if (ret == -ENOENT && !authfile)
			continue;
		if (ret < 0)
			return fail(&r->o, ret, "auth file %s: %s", cand[k], cfs_strerror(ret));
		ret = -ENOENT;
		for (size_t j = 0; j < nh && ret == -ENOENT; j++)
			ret = cfs_reg_auth_find(buf, len, hosts[j], &user, &pass);
		free(buf);
		if (ret == -ENOENT)
			return 0; /* the first file that exists is the one, as skopeo reads */
		if (ret < 0)
			return fail(&r->o, ret, "auth file %s: %s", cand[k],
				    ret == -EINVAL ? "not valid JSON or a bad \"auth\" entry" :
						     cfs_strerror(ret));
		if (asprintf(&pair, "%s:%s", user, pass) >= 0) {
			size_t pn = strlen(pair);

			r->basic = malloc(4 * ((pn + 2) / 3) + 1);
			if (r->basic)
				EVP_EncodeBlock((unsigned char *)r->basic, (unsigned char *)pair,
						(int)pn);
			OPENSSL_cleanse(pair, pn);
			free(pair);
		}
		OPENSSL_cleanse(pass, strlen(pass));
		free(user);
		free(pass);
		return r->basic ? 0 : fail(&r->o, -ENOMEM, "%s", cfs_strerror(-ENOMEM));
	}
	return 0;
}

/* ---- one easy handle ---- */

/* Trusts --ca-file beside the CAs libcurl loads by default. */
static CURLcode ssl_ctx_cb(CURL *h, void *ssl_ctx, void *arg)
{
	const struct reg *r = arg;

	(void)h;
	return SSL_CTX_load_verify_locations(ssl_ctx, r->ca_file, NULL) == 1 ?
		CURLE_OK : CURLE_SSL_CACERT_BADFILE;
}

static void easy_setup(struct reg *r, CURL *h, const char *url, struct curl_slist *hdrs,
		       char *errbuf)
{
#if LIBCURL_VERSION_NUM >= 0x075500
	const char *protos = r->insecure ? "http,https" : "https";
#endif

	curl_easy_reset(h);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "cfs-pack");
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
	curl_easy_setopt(h, CURLOPT_MAXREDIRS, 5L);
#if LIBCURL_VERSION_NUM >= 0x075500
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, protos);
	curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, protos);
#else
	long pmask = r->insecure ? CURLPROTO_HTTP | CURLPROTO_HTTPS : CURLPROTO_HTTPS;

	curl_easy_setopt(h, CURLOPT_PROTOCOLS, pmask);
	curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS, pmask);
#endif
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, CONNECT_TIMEOUT_S);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, STALL_TIMEOUT_S);
	if (r->insecure) {
		curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
	} else if (r->ca_file) {
		curl_easy_setopt(h, CURLOPT_SSL_CTX_FUNCTION, ssl_ctx_cb);
		curl_easy_setopt(h, CURLOPT_SSL_CTX_DATA, r);
	}
	errbuf[0] = '\0';
}

/* "name: value" of a header line, if it is name's; *vn its length without
 * the line end. */
static const char *header_value(const char *line, size_t n, const char *name, size_t *vn)
{
	size_t k = strlen(name);

	if (n <= k || strncasecmp(line, name, k) || line[k] != ':')
		return NULL;
	line += k + 1;
	n -= k + 1;
	while (n && (*line == ' ' || *line == '\t')) {
		line++;
		n--;
	}
	while (n && (line[n - 1] == '\r' || line[n - 1] == '\n' || line[n - 1] == ' '))
		n--;
	*vn = n;
	return line;
}

static void header_copy(char *dst, size_t cap, const char *v, size_t n, bool *too_long)
{
	if (n >= cap) {
		if (too_long)
			*too_long = true;
		n = cap - 1;
	}
	memcpy(dst, v, n);
	dst[n] = '\0';
}

static size_t resp_header(char *line, size_t size, size_t n, void *arg)
{
	struct resp *rs = arg;
	const char *v;
	size_t vn;

	(void)size;
	if (n >= 5 && !strncmp(line, "HTTP/", 5)) {
		/* a new reply (after a redirect): forget the last one's */
		rs->ctype[0] = rs->dcd[0] = rs->www[0] = '\0';
		rs->www_long = false;
	} else if ((v = header_value(line, n, "Content-Type", &vn))) {
		header_copy(rs->ctype, sizeof(rs->ctype), v, strcspn(v, ";") < vn ?
			    strcspn(v, ";") : vn, NULL);
	} else if ((v = header_value(line, n, "Docker-Content-Digest", &vn))) {
		header_copy(rs->dcd, sizeof(rs->dcd), v, vn, NULL);
	} else if ((v = header_value(line, n, "WWW-Authenticate", &vn)) && !rs->www[0]) {
		header_copy(rs->www, sizeof(rs->www), v, vn, &rs->www_long);
	}
	return n;
}

static size_t resp_body(char *data, size_t size, size_t n, void *arg)
{
	struct resp *rs = arg;
	char *b;

	(void)size;
	if (rs->len + n > rs->max) {
		rs->too_big = true;
		return 0;
	}
	b = realloc(rs->body, rs->len + n + 1);
	if (!b)
		return 0;
	memcpy(b + rs->len, data, n);
	rs->body = b;
	rs->len += n;
	b[rs->len] = '\0';
	return n;
}

static void resp_reset(struct resp *rs, size_t max)
{
	free(rs->body);
	*rs = (struct resp){ .max = max };
}

static bool retryable(CURLcode c)
{
	return c == CURLE_COULDNT_CONNECT || c == CURLE_RECV_ERROR || c == CURLE_SEND_ERROR ||
	       c == CURLE_GOT_NOTHING || c == CURLE_PARTIAL_FILE || c == CURLE_COULDNT_RESOLVE_HOST;
}

static bool status_retryable(long st)
{
	return st == 429 || st >= 500;
}

/* What a failed transfer means, for its one line. */
static int curl_fail(struct cfs_pack_oci *o, const char *url, CURLcode c, const char *errbuf,
		     bool too_big)
{
	const char *why = errbuf[0] ? errbuf : curl_easy_strerror(c);

	if (too_big)
		return fail(o, -EFBIG, "GET %s: the reply is larger than expected", url);
	switch (c) {
	case CURLE_COULDNT_CONNECT:
	case CURLE_COULDNT_RESOLVE_HOST:
		return fail(o, -ECONNREFUSED, "GET %s: cannot connect (is the registry up?): %s",
			    url, why);
	case CURLE_OPERATION_TIMEDOUT:
		return fail(o, -ETIMEDOUT, "GET %s: no answer for %ld s (the registry hangs): %s",
			    url, STALL_TIMEOUT_S, why);
	case CURLE_SSL_CONNECT_ERROR:
		return fail(o, -EPROTO, "GET %s: TLS: %s (a registry on plain http: "
			    "--tls-verify=false)", url, why);
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CACERT_BADFILE:
		return fail(o, -EKEYREJECTED, "GET %s: TLS: %s (--ca-file FILE, or "
			    "--tls-verify=false)", url, why);
	default:
		return fail(o, -EIO, "GET %s: %s", url, why);
	}
}

static int status_errno(long st)
{
	return st == 404 ? -ENOENT : st == 401 || st == 403 ? -EACCES : st >= 500 || st == 429 ?
		-EIO : -EPROTO;
}

/* "GET URL: HTTP 404 MANIFEST_UNKNOWN: manifest unknown[hint]". */
static int http_fail(struct cfs_pack_oci *o, const char *url, long st, const char *body,
		     size_t len, const char *hint)
{
	char code[64], msg[256];

	cfs_reg_error_parse(body, len, code, sizeof(code), msg, sizeof(msg));
	return fail(o, status_errno(st), "GET %s: HTTP %ld%s%s%s%s%s", url, st, code[0] ? " " : "",
		    code, msg[0] ? ": " : "", msg, hint ? hint : "");
}

/* One GET on the small requests' handle, retried.  extra: more header
 * lines (NULL-terminated, or NULL); auth: the Authorization line, or
 * NULL.  0 with rs filled (any status), or -errno after the failure. */
static int get_once(struct reg *r, const char *url, const char *const *extra, const char *auth,
		    size_t max, struct resp *rs)
{
	char errbuf[CURL_ERROR_SIZE];
	struct curl_slist *hdrs = NULL, *t;
	CURLcode c = CURLE_OK;
	int ret = 0;

	for (size_t k = 0; extra && extra[k]; k++) {
		t = curl_slist_append(hdrs, extra[k]);
		if (!t)
			goto nomem;
		hdrs = t;
	}
	if (auth) {
		t = curl_slist_append(hdrs, auth);
		if (!t)
			goto nomem;
		hdrs = t;
	}
	for (unsigned attempt = 0; attempt < TRIES; attempt++) {
		if (attempt)
			sleep_ms(BACKOFF_MS << (attempt - 1));
		resp_reset(rs, max);
		easy_setup(r, r->h, url, hdrs, errbuf);
		curl_easy_setopt(r->h, CURLOPT_HEADERFUNCTION, resp_header);
		curl_easy_setopt(r->h, CURLOPT_HEADERDATA, rs);
		curl_easy_setopt(r->h, CURLOPT_WRITEFUNCTION, resp_body);
		curl_easy_setopt(r->h, CURLOPT_WRITEDATA, rs);
		c = curl_easy_perform(r->h);
		curl_easy_getinfo(r->h, CURLINFO_RESPONSE_CODE, &rs->status);
		if (c == CURLE_OK && !status_retryable(rs->status))
			break;
		if (c != CURLE_OK && !retryable(c))
			break;
	}
	if (c != CURLE_OK)
		ret = curl_fail(&r->o, url, c, errbuf, rs->too_big);
	curl_slist_free_all(hdrs);
	return ret;
nomem:
	curl_slist_free_all(hdrs);
	return fail(&r->o, -ENOMEM, "%s", cfs_strerror(-ENOMEM));
}

/* ---- authentication ---- */

/* The stream thread reads r->auth as it starts a transfer. */
static int set_auth(struct reg *r, const char *scheme, const char *cred)
{
	char *a;

	if (asprintf(&a, "Authorization: %s %s", scheme, cred) < 0)
		return fail(&r->o, -ENOMEM, "%s", cfs_strerror(-ENOMEM));
	pthread_mutex_lock(&r->mu);
	if (r->auth)
		OPENSSL_cleanse(r->auth, strlen(r->auth));
	free(r->auth);
	r->auth = a;
	pthread_mutex_unlock(&r->mu);
	return 0;
}

/* Answers the challenge ch: Basic with our credentials, or a token from
 * its realm for its scope (ours when it names none). */
static int auth_flow(struct reg *r, const struct cfs_reg_challenge *ch)
{
	struct resp rs = { 0 };
	char *url = NULL, *svc = NULL, *sc = NULL, *basic = NULL, *tok = NULL, scope[CFS_REG_PARAM_MAX];
	int ret;

	if (ch->scheme == CFS_REG_AUTH_BASIC) {
		if (!r->basic)
			return fail(&r->o, -EACCES, "%s wants a user name and password (Basic "
				    "auth): none for %s in the auth files (--authfile FILE)",
				    r->base, r->ref.host);
		return set_auth(r, "Basic", r->basic);
	}
	if (ch->scope[0])
		snprintf(scope, sizeof(scope), "%s", ch->scope);
	else
		snprintf(scope, sizeof(scope), "repository:%s:pull", r->ref.repo);
	svc = curl_easy_escape(r->h, ch->service, 0);
	sc = curl_easy_escape(r->h, scope, 0);
	if (!svc || !sc || asprintf(&url, "%s%sservice=%s&scope=%s", ch->realm,
				    strchr(ch->realm, '?') ? "&" : "?", svc, sc) < 0) {
		url = NULL;
		ret = fail(&r->o, -ENOMEM, "%s", cfs_strerror(-ENOMEM));
		goto out;
	}
	if (r->basic && asprintf(&basic, "Authorization: Basic %s", r->basic) < 0) {
		basic = NULL;
		ret = fail(&r->o, -ENOMEM, "%s", cfs_strerror(-ENOMEM));
		goto out;
	}
	ret = get_once(r, url, NULL, basic, 1u << 20, &rs);
	if (ret < 0)
		goto out;
	if (rs.status != 200) {
		ret = http_fail(&r->o, url, rs.status, rs.body, rs.len,
				rs.status == 401 ? (r->basic ? " (wrong user name or password?)" :
					" (no credentials for this registry: --authfile FILE)") : NULL);
		goto out;
	}
	ret = cfs_reg_token_parse(rs.body, rs.len, &tok);
	if (ret < 0) {
		ret = fail(&r->o, -EPROTO, "GET %s: no token in the token server's reply", url);
		goto out;
	}
	ret = set_auth(r, "Bearer", tok);
	snprintf(r->scope, sizeof(r->scope), "%s", scope);
out:
	if (basic)
		OPENSSL_cleanse(basic, strlen(basic));
	free(basic);
	free(tok);
	free(url);
	curl_free(svc);
	curl_free(sc);
	resp_reset(&rs, 0);
	return ret;
}

/* A GET with the credentials the registry wants: a 401 runs the flow its
 * challenge asks for and tries again, once. */
static int reg_get(struct reg *r, const char *url, const char *const *extra, size_t max,
		   struct resp *rs)
{
	struct cfs_reg_challenge ch;
	int ret;

	ret = get_once(r, url, extra, r->auth, max, rs);
	if (ret < 0 || rs->status != 401)
		return ret;
	if (rs->www_long || cfs_reg_challenge_parse(rs->www, strlen(rs->www), &ch) < 0)
		return http_fail(&r->o, url, rs->status, rs->body, rs->len,
				 " (no challenge this client can answer)");
	/* Already answered with these credentials for this scope: wrong. */
	if (r->auth && (ch.scheme == CFS_REG_AUTH_BASIC ||
			(ch.scope[0] ? !strcmp(ch.scope, r->scope) : true)))
		return http_fail(&r->o, url, rs->status, rs->body, rs->len,
				 r->basic ? " (wrong user name or password?)" :
					    " (no credentials: --authfile FILE)");
	ret = auth_flow(r, &ch);
	if (ret < 0)
		return ret;
	ret = get_once(r, url, extra, r->auth, max, rs);
	if (ret == 0 && rs->status == 401)
		return http_fail(&r->o, url, rs->status, rs->body, rs->len,
				 r->basic ? " (wrong user name or password?)" :
					    " (no credentials: --authfile FILE)");
	return ret;
}

/* GET /v2/: whether the registry answers, over TLS or (--tls-verify=false
 * with a server that does not speak it) plain http, and the challenge it
 * sets, answered before the first real request. */
static int ping(struct reg *r)
{
	struct cfs_reg_challenge ch;
	struct resp rs = { 0 };
	char url[sizeof(r->base) + 8];
	char errbuf[CURL_ERROR_SIZE];
	CURLcode c;
	int ret = 0;

	snprintf(url, sizeof(url), "%s/v2/", r->base);
	c = CURLE_COULDNT_CONNECT;
	if (r->insecure) {
		/* One try at TLS: a plain-http server answers its hello with
		 * what no TLS library takes. */
		resp_reset(&rs, 1u << 16);
		easy_setup(r, r->h, url, NULL, errbuf);
		curl_easy_setopt(r->h, CURLOPT_HEADERFUNCTION, resp_header);
		curl_easy_setopt(r->h, CURLOPT_HEADERDATA, &rs);
		curl_easy_setopt(r->h, CURLOPT_WRITEFUNCTION, resp_body);
		curl_easy_setopt(r->h, CURLOPT_WRITEDATA, &rs);
		c = curl_easy_perform(r->h);
		curl_easy_getinfo(r->h, CURLINFO_RESPONSE_CODE, &rs.status);
		if (c == CURLE_SSL_CONNECT_ERROR || c == CURLE_RECV_ERROR || c == CURLE_GOT_NOTHING) {
			snprintf(r->base, sizeof(r->base), "http://%s", r->ref.host);
			snprintf(url, sizeof(url), "%s/v2/", r->base);
		}
	}
	if (c != CURLE_OK || status_retryable(rs.status)) {
		ret = get_once(r, url, NULL, NULL, 1u << 16, &rs);
		if (ret < 0)
			goto out;
	}
	if (rs.status == 401) {
		if (rs.www_long || cfs_reg_challenge_parse(rs.www, strlen(rs.www), &ch) < 0) {
			ret = http_fail(&r->o, url, rs.status, rs.body, rs.len,
					" (no challenge this client can answer)");
			goto out;
		}
		ret = auth_flow(r, &ch);
	} else if (rs.status != 200) {
		ret = http_fail(&r->o, url, rs.status, rs.body, rs.len,
				rs.status < 500 ? " (not a registry?)" : NULL);
	}
out:
	resp_reset(&rs, 0);
	return ret;
}

/* ---- small blobs ---- */

static int blob_url(struct reg *r, bool manifest, const char *ref, char **url)
{
	if (asprintf(url, "%s/v2/%s/%s/%s", r->base, r->ref.repo, manifest ? "manifests" : "blobs",
		     ref) < 0) {
		*url = NULL;
		return fail(&r->o, -ENOMEM, "%s", cfs_strerror(-ENOMEM));
	}
	return 0;
}

static int reg_blob_get(struct cfs_pack_oci *o, const struct cfs_pack_oci_desc *d, bool manifest,
			size_t max, const char *what, char **buf, size_t *len)
{
	struct reg *r = (struct reg *)o;
	static const char *const accept[] = { ACCEPT, NULL };
	struct resp rs = { 0 };
	char *url;
	int ret;

	(void)what;
	ret = blob_url(r, manifest, d->digest, &url);
	if (ret < 0)
		return ret;
	ret = reg_get(r, url, manifest ? accept : NULL, max, &rs);
	if (ret == 0 && rs.status != 200)
		ret = http_fail(o, url, rs.status, rs.body, rs.len, NULL);
	if (ret == 0) {
		if (!rs.body && !(rs.body = strdup("")))
			ret = fail(o, -ENOMEM, "%s", cfs_strerror(-ENOMEM));
		*buf = rs.body;
		*len = rs.len;
		rs.body = NULL;
	}
	resp_reset(&rs, 0);
	free(url);
	return ret;
}

/* ---- layer streams ---- */

/* What a part costs the window: its bytes, or, for a whole layer beyond
 * PART_SIZE (a registry without ranges), the PART_SIZE it may buffer. */
static bool part_big(const struct part *p)
{
	return p->len > PART_SIZE;
}

/* Starts the next part in order (on the stream thread, mu held), or
 * returns false when there is none or no room for it. */
static bool part_next(struct reg *r)
{
	struct stream *s;
	struct part *p;
	uint64_t len, cost;
	size_t slot;

	while (r->next < r->n && r->s[r->next].next_off >= r->s[r->next].size)
		r->next++;
	if (r->next == r->n || r->active == STREAMS_MAX)
		return false;
	s = &r->s[r->next];
	len = s->size - s->next_off;
	/* Until a ranged request has told whether ranges work, no other
	 * layer of several parts starts. */
	if (len > PART_SIZE && r->ranges == RANGES_UNKNOWN && r->probing)
		return false;
	if (r->ranges != RANGES_NO)
		len = CFS_MIN(len, (uint64_t)PART_SIZE);
	cost = CFS_MIN(len, (uint64_t)PART_SIZE);
	if (r->reserved && r->reserved + cost > WINDOW_MAX)
		return false;
	p = calloc(1, sizeof(*p));
	if (!p) {
		/* the layer being read waits on a part that never comes */
		r->oom = true;
		pthread_cond_broadcast(&r->cv);
		return false;
	}
	p->s = s;
	p->off = s->next_off;
	p->len = len;
	p->ranged = len < s->size;
	p->probe = p->ranged && r->ranges == RANGES_UNKNOWN;
	r->probing |= p->probe;
	p->charge = cost;
	r->reserved += cost;
	s->next_off += len;
	if (s->last)
		s->last->next = p;
	else
		s->parts = p;
	s->last = p;
	for (slot = 0; r->xfer[slot]; slot++)
		;
	r->xfer[slot] = p;
	r->active++;
	return true;
}

static size_t part_error(struct part *p, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Fails the part with a message (mu held); 0, which ends its transfer. */
static size_t part_error(struct part *p, int err, const char *fmt, ...)
{
	va_list ap;

	p->err = err;
	va_start(ap, fmt);
	vsnprintf(p->msg, sizeof(p->msg), fmt, ap);
	va_end(ap);
	return 0;
}

/* The first bytes of an attempt's body (mu held): is the reply the range
 * asked for?  The first ranged reply tells whether the registry serves
 * ranges; one that sends the whole blob instead makes its part the whole
 * layer, and every later one. */
static bool part_check(struct reg *r, struct part *p, long st)
{
	struct stream *s = p->s;

	if (st == 206 && p->asked_range) {
		if (p->probe)
			r->ranges = RANGES_YES;
	} else if (st == 200 && p->probe && !p->received) {
		r->ranges = RANGES_NO;
		p->ranged = false;
		p->len = s->size - p->off;
		s->next_off = s->size;
	} else if (st != 200 || p->asked_range) {
		part_error(p, -EPROTO, "GET %s: HTTP %ld to a request for bytes %s", s->url, st,
			   p->asked_range ? p->range : "(all)");
		return false;
	}
	if (p->probe)
		r->probing = p->probe = false;
	p->checked = true;
	return true;
}

static size_t stream_write(char *data, size_t size, size_t n, void *arg)
{
	struct part *p = arg;
	struct reg *r = p->s->r;
	long st = 0;
	size_t ret = n;

	(void)size;
	curl_easy_getinfo(p->h, CURLINFO_RESPONSE_CODE, &st);
	pthread_mutex_lock(&r->mu);
	if (st != 200 && st != 206) {
		/* an error's body, for its code */
		size_t k = CFS_MIN(n, sizeof(p->errbody) - 1 - p->errlen);

		memcpy(p->errbody + p->errlen, data, k);
		p->errlen += k;
		p->errbody[p->errlen] = '\0';
		goto out;
	}
	if (!p->checked && !part_check(r, p, st)) {
		ret = 0;
		goto out;
	}
	if (p->received + n > p->len) {
		ret = part_error(p, -EBADMSG, "GET %s: more bytes than the %llu the manifest says",
				 p->s->url, (unsigned long long)p->s->size);
		goto out;
	}
	if (part_big(p) && p->buffered + n > PART_SIZE) {
		if (!p->paused)
			r->npaused++;
		p->paused = true;
		ret = CURL_WRITEFUNC_PAUSE;
		goto out;
	}
	while (n) {
		struct piece *pc = p->tail;
		size_t k;

		if (!pc || pc->len == PIECE_SIZE) {
			pc = malloc(sizeof(*pc) + PIECE_SIZE);
			if (!pc) {
				ret = part_error(p, -ENOMEM, "%s", cfs_strerror(-ENOMEM));
				goto out;
			}
			*pc = (struct piece){ 0 };
			if (p->tail)
				p->tail->next = pc;
			else
				p->head = pc;
			p->tail = pc;
		}
		k = CFS_MIN(n, PIECE_SIZE - pc->len);
		memcpy(pc->data + pc->len, data, k);
		pc->len += k;
		data += k;
		n -= k;
		p->buffered += k;
		p->received += k;
	}
	pthread_cond_broadcast(&r->cv);
out:
	pthread_mutex_unlock(&r->mu);
	return ret;
}

/* The easy handle of a part's next attempt: the rest of its range. */
static int part_setup(struct reg *r, struct part *p)
{
	struct curl_slist *t = NULL;

	if (!p->h && !(p->h = curl_easy_init()))
		return -ENOMEM;
	curl_slist_free_all(p->hdrs);
	p->hdrs = NULL;
	if (r->auth) {
		t = curl_slist_append(NULL, r->auth);
		if (!t)
			return -ENOMEM;
	}
	p->hdrs = t;
	easy_setup(r, p->h, p->s->url, p->hdrs, p->curl_err);
	p->asked_range = p->ranged || p->received;
	if (p->asked_range) {
		snprintf(p->range, sizeof(p->range), "%llu-%llu",
			 (unsigned long long)(p->off + p->received),
			 (unsigned long long)(p->off + p->len - 1));
		curl_easy_setopt(p->h, CURLOPT_RANGE, p->range);
	}
	p->checked = false;
	p->errlen = 0;
	curl_easy_setopt(p->h, CURLOPT_WRITEFUNCTION, stream_write);
	curl_easy_setopt(p->h, CURLOPT_WRITEDATA, p);
	curl_easy_setopt(p->h, CURLOPT_PRIVATE, p);
	return 0;
}

/* A finished transfer (on the stream thread, mu held): done, or tried
 * again: from its start while none of its bytes came, else from where
 * it stopped, where the registry serves ranges. */
static void stream_end(struct reg *r, struct part *p, CURLcode c)
{
	const char *url = p->s->url;
	long st = 0;

	curl_easy_getinfo(p->h, CURLINFO_RESPONSE_CODE, &st);
	curl_multi_remove_handle(r->multi, p->h);
	p->in_multi = false;
	if (!p->err && c == CURLE_OK && p->received == p->len && (st == 200 || st == 206))
		goto done;
	if (!p->err && ++p->attempts < TRIES && (!p->received || r->ranges == RANGES_YES) &&
	    (c != CURLE_OK ? retryable(c) : status_retryable(st) || p->received < p->len)) {
		p->retry_ns = cfs_now_ns() + (uint64_t)(BACKOFF_MS << (p->attempts - 1)) * 1000000u;
		return;
	}
	if (p->err)
		;
	else if (c == CURLE_OPERATION_TIMEDOUT)
		part_error(p, -ETIMEDOUT, "GET %s: no data for %ld s (the registry hangs)", url,
			   STALL_TIMEOUT_S);
	else if (c != CURLE_OK)
		part_error(p, c == CURLE_COULDNT_CONNECT ? -ECONNREFUSED : -EIO, "GET %s: %s", url,
			   p->curl_err[0] ? p->curl_err : curl_easy_strerror(c));
	else if (st != 200 && st != 206) {
		char code[64], msg[256];

		cfs_reg_error_parse(p->errbody, p->errlen, code, sizeof(code), msg, sizeof(msg));
		part_error(p, status_errno(st), "GET %s: HTTP %ld%s%s%s%s", url, st,
			   code[0] ? " " : "", code, msg[0] ? ": " : "", msg);
	} else
		part_error(p, -EBADMSG, "GET %s: %llu bytes, the manifest says %llu", url,
			   (unsigned long long)(p->off + p->received),
			   (unsigned long long)p->s->size);
done:
	p->done = true;
	if (p->probe)
		r->probing = p->probe = false;
	for (size_t k = 0; k < STREAMS_MAX; k++)
		if (r->xfer[k] == p)
			r->xfer[k] = NULL;
	r->active--;
	pthread_cond_broadcast(&r->cv);
}

static void *stream_thread(void *arg)
{
	struct reg *r = arg;

	pthread_mutex_lock(&r->mu);
	while (!r->stop) {
		uint64_t now = cfs_now_ns();
		bool ended = false;
		CURLMsg *m;
		int left, running;

		while (part_next(r))
			;
		for (size_t k = 0; k < STREAMS_MAX; k++) {
			struct part *p = r->xfer[k];

			if (!p)
				continue;
			if (!p->in_multi && p->retry_ns <= now) {
				if (part_setup(r, p) < 0) {
					part_error(p, -ENOMEM, "%s", cfs_strerror(-ENOMEM));
					p->attempts = TRIES;
					stream_end(r, p, CURLE_OUT_OF_MEMORY);
					continue;
				}
				p->in_multi = true;
				curl_multi_add_handle(r->multi, p->h);
			}
			if (p->paused && p->buffered < PART_SIZE / 2) {
				p->paused = false;
				r->npaused--;
				pthread_mutex_unlock(&r->mu);
				curl_easy_pause(p->h, CURLPAUSE_CONT);
				pthread_mutex_lock(&r->mu);
			}
		}
		pthread_mutex_unlock(&r->mu);
		curl_multi_perform(r->multi, &running);
		pthread_mutex_lock(&r->mu);
		while ((m = curl_multi_info_read(r->multi, &left))) {
			struct part *p = NULL;

			if (m->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&p);
			if (p) {
				stream_end(r, p, m->data.result);
				ended = true;
			}
		}
		if (r->stop)
			break;
		if (ended)
			continue;  /* its slot takes the next part at once */
		pthread_mutex_unlock(&r->mu);
		curl_multi_poll(r->multi, NULL, 0, 100, NULL);
		pthread_mutex_lock(&r->mu);
	}
	pthread_mutex_unlock(&r->mu);
	return NULL;
}

static int reg_layers_start(struct cfs_pack_oci *o, const struct cfs_pack_oci_desc *ds, size_t n)
{
	struct reg *r = (struct reg *)o;
	int ret;

	r->s = calloc(n ? n : 1, sizeof(*r->s));
	r->multi = curl_multi_init();
	if (!r->s || !r->multi)
		return fail(o, -ENOMEM, "%s", cfs_strerror(-ENOMEM));
	for (size_t i = 0; i < n; i++) {
		struct stream *s = &r->s[i];

		s->r = r;
		s->i = i;
		s->size = ds[i].size;
		r->n = i + 1;
		ret = blob_url(r, false, ds[i].digest, &s->url);
		if (ret < 0)
			return ret;
	}
	ret = pthread_create(&r->th, NULL, stream_thread, r);
	if (ret)
		return fail(o, -ret, "thread: %s", strerror(ret));
	r->th_started = true;
	return 0;
}

/* Takes a read part off its layer (mu held). */
static void part_free(struct reg *r, struct stream *s, struct part *p)
{
	while (p->head) {
		struct piece *pc = p->head;

		p->head = pc->next;
		free(pc);
	}
	s->parts = p->next;
	if (!s->parts)
		s->last = NULL;
	r->reserved -= p->charge;
	if (p->h)
		curl_easy_cleanup(p->h);
	curl_slist_free_all(p->hdrs);
	free(p);
}

static ssize_t stream_read(void *ctx, void *buf, size_t len)
{
	struct stream *s = ctx;
	struct reg *r = s->r;
	struct part *p;
	size_t got = 0;
	bool wake = false;
	int err = 0;
	char msg[sizeof(p->msg)];

	pthread_mutex_lock(&r->mu);
	for (;;) {
		p = s->parts;
		if (!p) {
			if (s->taken >= s->size)
				break;
			if (r->oom) {
				err = -ENOMEM;
				snprintf(msg, sizeof(msg), "%s", cfs_strerror(err));
				break;
			}
		} else if (p->buffered) {
			break;
		} else if (p->done && p->err) {
			err = p->err;
			memcpy(msg, p->msg, sizeof(msg));
			break;
		} else if (p->done && p->taken == p->len) {
			part_free(r, s, p);
			wake = true;
			continue;
		}
		pthread_cond_wait(&r->cv, &r->mu);
	}
	while (p && got < len && p->head) {
		struct piece *pc = p->head;
		size_t k = CFS_MIN(len - got, pc->len - pc->off);

		memcpy((char *)buf + got, pc->data + pc->off, k);
		pc->off += k;
		got += k;
		p->buffered -= k;
		p->taken += k;
		s->taken += k;
		if (!part_big(p)) {
			p->charge -= k;
			r->reserved -= k;
		}
		/* the tail, while the transfer still appends to it, stays */
		if (pc->off < pc->len || (!pc->next && pc->len < PIECE_SIZE && !p->done))
			break;
		p->head = pc->next;
		if (!p->head)
			p->tail = NULL;
		free(pc);
		wake |= p->paused;
	}
	pthread_mutex_unlock(&r->mu);
	if (wake)
		curl_multi_wakeup(r->multi);
	if (err)
		return fail(&r->o, err, "layer %zu: %s", s->i + 1, msg);
	return (ssize_t)got;
}

static int reg_layer_open(struct cfs_pack_oci *o, json_t *l, const struct cfs_pack_oci_desc *d,
			  size_t i, cfs_pack_oci_read_fn *rd, void **ctx, cfs_digest *cd,
			  bool *have_cd)
{
	struct reg *r = (struct reg *)o;

	(void)l;
	if (i >= r->n)
		return fail(o, -EINVAL, "layer %zu: not started", i + 1);
	*cd = d->d;
	*have_cd = true;
	*rd = stream_read;
	*ctx = &r->s[i];
	return 0;
}

/* What is left of a layer's bytes stays until reg_release(): a part may
 * still be on the wire. */
static void reg_layer_close(struct cfs_pack_oci *o, void *ctx)
{
	(void)o;
	(void)ctx;
}

static const struct cfs_pack_oci_blobs reg_blobs = {
	.get = reg_blob_get,
	.layers_start = reg_layers_start,
	.layer_open = reg_layer_open,
	.layer_close = reg_layer_close,
};

static void reg_release(struct reg *r)
{
	if (r->th_started) {
		pthread_mutex_lock(&r->mu);
		r->stop = true;
		pthread_mutex_unlock(&r->mu);
		curl_multi_wakeup(r->multi);
		pthread_join(r->th, NULL);
	}
	for (size_t i = 0; i < r->n; i++) {
		struct stream *s = &r->s[i];

		while (s->parts) {
			if (s->parts->in_multi)
				curl_multi_remove_handle(r->multi, s->parts->h);
			part_free(r, s, s->parts);
		}
		free(s->url);
	}
	free(r->s);
	curl_multi_cleanup(r->multi);
	curl_easy_cleanup(r->h);
	if (r->basic)
		OPENSSL_cleanse(r->basic, strlen(r->basic));
	free(r->basic);
	if (r->auth)
		OPENSSL_cleanse(r->auth, strlen(r->auth));
	free(r->auth);
	free(r->o.loc);
	pthread_mutex_destroy(&r->mu);
	pthread_cond_destroy(&r->cv);
}

/* The manifest the reference names, checked against the digest asked for
 * and the one the registry says, then the image it leads to. */
static int pack_top(struct reg *r)
{
	static const char *const accept[] = { ACCEPT, NULL };
	struct resp rs = { 0 };
	cfs_digest got, want;
	char *url = NULL, gotref[CFS_REF_STRLEN];
	int ret;

	ret = blob_url(r, true, r->ref.ref, &url);
	if (ret < 0)
		return ret;
	ret = reg_get(r, url, accept, CFS_OCI_JSON_MAX, &rs);
	if (ret < 0)
		goto out;
	if (rs.status != 200) {
		ret = http_fail(&r->o, url, rs.status, rs.body, rs.len, NULL);
		goto out;
	}
	if (!strncmp(rs.ctype, CFS_MT_DOCKER_V1, strlen(CFS_MT_DOCKER_V1))) {
		ret = fail(&r->o, -EPROTONOSUPPORT, "GET %s: a schema 1 manifest: not supported "
			   "(convert it with skopeo copy --format v2s2)", url);
		goto out;
	}
	cfs_sha256(rs.body ? rs.body : "", rs.len, &got);
	cfs_digest_ref(&got, gotref);
	if (r->ref.by_digest && (cfs_digest_parse(r->ref.ref, false, &want) < 0 ||
				 !cfs_digest_eq(&got, &want))) {
		ret = fail(&r->o, -EBADMSG, "GET %s: digest mismatch: the manifest is %s", url,
			   gotref);
		goto out;
	}
	if (rs.dcd[0] && strcmp(rs.dcd, gotref)) {
		ret = fail(&r->o, -EBADMSG, "GET %s: digest mismatch: the manifest is %s, the "
			   "registry says %.80s", url, gotref, rs.dcd);
		goto out;
	}
	/* A type of the four asked for, else the JSON tells. */
	ret = cfs_pack_oci_top(&r->o, rs.body ? rs.body : "", rs.len,
			       strstr(ACCEPT, rs.ctype) && rs.ctype[0] ? rs.ctype : NULL, &got,
			       NULL);
out:
	resp_reset(&rs, 0);
	free(url);
	return ret;
}

static int pack_registry(struct cfs_pack_ctx *p, const char *spec, int fd)
{
	struct reg r = { .o.blobs = &reg_blobs };
	char msg[128];
	int ret;

	(void)fd;
	pthread_mutex_init(&r.mu, NULL);
	pthread_cond_init(&r.cv, NULL);
	ret = cfs_pack_oci_init(&r.o, p, "docker://", spec);
	if (ret < 0)
		goto out;
	if (cfs_reg_ref_parse(spec, &r.ref, msg, sizeof(msg)) < 0) {
		ret = fail(&r.o, -EINVAL, "%s (want docker://HOST[:PORT]/REPO[:TAG|@sha256:HEX])",
			   msg);
		goto out;
	}
	r.insecure = p->reg_insecure;
	r.ca_file = p->reg_ca_file;
	snprintf(r.base, sizeof(r.base), "https://%s", r.ref.host);
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || !(r.h = curl_easy_init())) {
		ret = fail(&r.o, -ENOMEM, "libcurl init failed");
		goto out;
	}
	ret = creds_load(&r, p->reg_authfile);
	if (ret == 0)
		ret = ping(&r);
	if (ret == 0)
		ret = pack_top(&r);
out:
	reg_release(&r);
	return ret;
}

const struct cfs_pack_source cfs_pack_source_registry = {
	.name = "registry",
	.prefix = "docker://",
	.pack = pack_registry,
};
