/* SPDX-License-Identifier: MIT */
/*
 * test-reg-parse: the parsers of the docker:// source (tools/pack_reg.h):
 * image references (hosts, ports, docker.io's defaults, tags, digests,
 * and what they refuse), WWW-Authenticate challenges (Bearer over Basic,
 * quoted strings with commas and escapes, unknown schemes, malformed and
 * oversized values), token and error replies, and the credential files'
 * host matching.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "pack_reg.h"
#include "test.h"

#define HEX64 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static void test_ref(void)
{
	struct cfs_reg_ref r;
	char msg[128], big[2048];
	static const char *const bad[] = {
		"", "host:5000/", "host:5000/Repo", "host:5000/a//b", "host:5000/a/", "host:0/a",
		"host:65536/a", "host:5000/a:", "host:5000/a:-x", "host:5000/a@sha256:12",
		"host:5000/a@sha512:" HEX64, "host:5000/a@sha256:" HEX64 "0", "ho st/a",
		"host:5000/a:t\n", "h_st.x/a", "host:5000/-a", "[::1/a",
	};

	CHECK_EQ(cfs_reg_ref_parse("127.0.0.1:5000/cfs/test:1", &r, msg, sizeof(msg)), 0);
	CHECK(!strcmp(r.host, "127.0.0.1:5000") && !strcmp(r.repo, "cfs/test") &&
	      !strcmp(r.ref, "1") && !r.by_digest);
	CHECK_EQ(cfs_reg_ref_parse("localhost/app", &r, NULL, 0), 0);
	CHECK(!strcmp(r.host, "localhost") && !strcmp(r.repo, "app") && !strcmp(r.ref, "latest"));
	CHECK_EQ(cfs_reg_ref_parse("reg.example.com/a/b/c@sha256:" HEX64, &r, NULL, 0), 0);
	CHECK(r.by_digest && !strcmp(r.ref, "sha256:" HEX64) && !strcmp(r.repo, "a/b/c"));
	CHECK_EQ(cfs_reg_ref_parse("[::1]:5000/x.y_z-w:v1.2_3-rc", &r, NULL, 0), 0);
	CHECK(!strcmp(r.host, "[::1]:5000") && !strcmp(r.repo, "x.y_z-w") &&
	      !strcmp(r.ref, "v1.2_3-rc"));
	/* docker.io: the host, and library/ for a bare name */
	CHECK_EQ(cfs_reg_ref_parse("ubuntu:22.04", &r, NULL, 0), 0);
	CHECK(!strcmp(r.host, "registry-1.docker.io") && !strcmp(r.repo, "library/ubuntu") &&
	      !strcmp(r.ref, "22.04"));
	CHECK_EQ(cfs_reg_ref_parse("docker.io/user/app", &r, NULL, 0), 0);
	CHECK(!strcmp(r.host, "registry-1.docker.io") && !strcmp(r.repo, "user/app"));
	CHECK_EQ(cfs_reg_ref_parse("user/app", &r, NULL, 0), 0);
	CHECK(!strcmp(r.host, "registry-1.docker.io") && !strcmp(r.repo, "user/app"));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		msg[0] = '\0';
		CHECK(cfs_reg_ref_parse(bad[i], &r, msg, sizeof(msg)) == -EINVAL && msg[0],
		      "accepted '%s'", bad[i]);
	}
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	memcpy(big, "h.x/", 4);
	CHECK_EQ(cfs_reg_ref_parse(big, &r, NULL, 0), -EINVAL);
	/* a tag of 129 characters */
	memset(big, 'a', 200);
	memcpy(big, "h.x/r:", 6);
	big[6 + 129] = '\0';
	CHECK_EQ(cfs_reg_ref_parse(big, &r, NULL, 0), -EINVAL);
	big[6 + 128] = '\0';
	CHECK_EQ(cfs_reg_ref_parse(big, &r, NULL, 0), 0);
}

static int chal(const char *s, struct cfs_reg_challenge *c)
{
	return cfs_reg_challenge_parse(s, strlen(s), c);
}

static void test_challenge(void)
{
	struct cfs_reg_challenge c;
	char big[4096];

	CHECK_EQ(chal("Bearer realm=\"https://auth.example/token\",service=\"registry\","
		      "scope=\"repository:a/b:pull,push\"", &c), 0);
	CHECK(c.scheme == CFS_REG_AUTH_BEARER && !strcmp(c.realm, "https://auth.example/token") &&
	      !strcmp(c.service, "registry") && !strcmp(c.scope, "repository:a/b:pull,push"));
	CHECK_EQ(chal("Basic realm=\"Registry Realm\"", &c), 0);
	CHECK(c.scheme == CFS_REG_AUTH_BASIC && !strcmp(c.realm, "Registry Realm"));
	/* Bearer wins over Basic in either order; unknown schemes skipped */
	CHECK_EQ(chal("Basic realm=\"x\", Negotiate, Bearer realm=\"https://t/\" , service=s", &c),
		 0);
	CHECK(c.scheme == CFS_REG_AUTH_BEARER && !strcmp(c.realm, "https://t/") &&
	      !strcmp(c.service, "s"));
	CHECK_EQ(chal("bearer REALM=\"a\\\"b\\\\c\", error=\"insufficient_scope\"", &c), 0);
	CHECK(!strcmp(c.realm, "a\"b\\c") && !c.scope[0]);
	CHECK_EQ(chal("Negotiate abc==, Basic", &c), 0);
	CHECK(c.scheme == CFS_REG_AUTH_BASIC && !c.realm[0]);
	CHECK_EQ(chal("Negotiate", &c), -ENOENT);
	CHECK_EQ(chal("", &c), -ENOENT);
	CHECK_EQ(chal("Bearer service=x", &c), -EINVAL);          /* no realm */
	CHECK_EQ(chal("Bearer realm=\"unterminated", &c), -EINVAL);
	CHECK_EQ(chal("Bearer realm=\"a\\", &c), -EINVAL);
	CHECK_EQ(chal("=x", &c), -EINVAL);
	CHECK_EQ(chal("Bearer realm=\"a\x01\"", &c), -EINVAL);
	CHECK_EQ(cfs_reg_challenge_parse("Basic realm=\"a\0b\"", 18, &c), -EINVAL);
	/* only len bytes are read */
	CHECK_EQ(cfs_reg_challenge_parse("Bearer realm=abcXXX", 16, &c), 0);
	CHECK(!strcmp(c.realm, "abc"));
	/* a realm longer than its buffer is refused, not cut */
	memset(big, 'r', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	memcpy(big, "Bearer realm=", 13);
	CHECK_EQ(chal(big, &c), -EINVAL);
}

static void test_json(void)
{
	char *tok = NULL, code[16], msg[64];
	static const char err[] =
		"{\"errors\":[{\"code\":\"MANIFEST_UNKNOWN\",\"message\":\"manifest\\nunknown\"}]}";

	CHECK_EQ(cfs_reg_token_parse("{\"token\":\"abc.def\"}", 19, &tok), 0);
	CHECK(tok && !strcmp(tok, "abc.def"));
	free(tok);
	CHECK_EQ(cfs_reg_token_parse("{\"token\":\"\",\"access_token\":\"z\"}", 31, &tok), 0);
	CHECK(tok && !strcmp(tok, "z"));
	free(tok);
	CHECK_EQ(cfs_reg_token_parse("{\"token\":\"a b\"}", 15, &tok), -EINVAL);
	CHECK_EQ(cfs_reg_token_parse("{\"token\":\"a\\r\\nX: y\"}", 21, &tok), -EINVAL);
	CHECK_EQ(cfs_reg_token_parse("{\"token\":1}", 11, &tok), -EINVAL);
	CHECK_EQ(cfs_reg_token_parse("[", 1, &tok), -EINVAL);
	CHECK(tok == NULL);

	cfs_reg_error_parse(err, sizeof(err) - 1, code, sizeof(code), msg, sizeof(msg));
	CHECK(!strcmp(code, "MANIFEST_UNKNOW") && !strcmp(msg, "manifest?unknown"),
	      "code '%s' message '%s'", code, msg);
	cfs_reg_error_parse("not json", 8, code, sizeof(code), msg, sizeof(msg));
	CHECK(!code[0] && !msg[0]);
	cfs_reg_error_parse(NULL, 0, code, sizeof(code), msg, sizeof(msg));
	CHECK(!code[0] && !msg[0]);
}

static int find(const char *json, const char *host, char **u, char **p)
{
	return cfs_reg_auth_find(json, strlen(json), host, u, p);
}

static void test_auth(void)
{
	char *u = NULL, *p = NULL;
	/* base64("alice:s3cr:et") and base64("bob:pw") */
	static const char file[] =
		"{\"auths\":{\"https://reg.example:5000/v1/\":{\"auth\":\"Ym9iOnB3\"},"
		"\"reg.example:5000\":{\"auth\":\"YWxpY2U6czNjcjpldA==\"},"
		"\"http://other.example\":{\"auth\":\"Ym9iOnB3\"},"
		"\"helper.example\":{},\"bad.example\":{\"auth\":\"!!!!\"},"
		"\"nocolon.example\":{\"auth\":\"Ym9i\"}}}";

	CHECK_EQ(find(file, "reg.example:5000", &u, &p), 0);
	CHECK(u && p && !strcmp(u, "alice") && !strcmp(p, "s3cr:et"));
	free(u);
	free(p);
	CHECK_EQ(find(file, "other.example", &u, &p), 0);
	CHECK(u && !strcmp(u, "bob") && !strcmp(p, "pw"));
	free(u);
	free(p);
	CHECK_EQ(find(file, "reg.example", &u, &p), -ENOENT);   /* the port matters */
	CHECK_EQ(find(file, "helper.example", &u, &p), -ENOENT);
	CHECK_EQ(find(file, "bad.example", &u, &p), -EINVAL);
	CHECK_EQ(find(file, "nocolon.example", &u, &p), -EINVAL);
	CHECK_EQ(find("{}", "x", &u, &p), -ENOENT);
	CHECK_EQ(find("{\"auths\":[]}", "x", &u, &p), -EINVAL);
	CHECK_EQ(find("{", "x", &u, &p), -EINVAL);
	CHECK(u == NULL && p == NULL);
}

int main(void)
{
	test_ref();
	test_challenge();
	test_json();
	test_auth();
	return cfs_test_done("test-reg-parse");
}
