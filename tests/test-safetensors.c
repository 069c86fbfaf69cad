/* SPDX-License-Identifier: MIT */
/*
 * test-safetensors: the safetensors header parser on headers built in
 * memory (valid ones: zero-size tensors, odd offsets, metadata, padding;
 * and every refusal of docs/LOADER.md "Checks", each -EUCLEAN naming the
 * tensor), the shard index parser, the dtype table, and cfs_model_open()
 * end to end on files: single, sharded (by index and by directory), and
 * shards that disagree with their weight_map.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "loader_i.h"
#include "util.h"
#include "test.h"

static char dir[256];

/* A whole safetensors file: length, header json, then buf_len bytes. */
static uint8_t *mkst(const char *json, uint64_t buf_len, size_t *len)
{
	size_t n = strlen(json), total = 8 + n + buf_len;
	uint8_t *b = malloc(total);

	if (!b) {
		perror("malloc");
		exit(1);
	}
	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)((uint64_t)n >> (8 * i));
	memcpy(b + 8, json, n);
	for (size_t i = 0; i < buf_len; i++)
		b[8 + n + i] = (uint8_t)(i * 7 + 1);
	*len = total;
	return b;
}

/* Parses json + buf_len bytes as one file; returns the parser's result
 * and leaves the tensors in *t / *n. */
static int parse(const char *json, uint64_t buf_len, struct cfs_tensor **t, size_t *n,
		 uint64_t *data_off, char *err)
{
	size_t len;
	uint8_t *b = mkst(json, buf_len, &len);
	int r = cfs_safetensors_parse(b, len, len, 0, "m.safetensors", t, n, data_off, err,
				      CFS_ERR_LEN);

	free(b);
	return r;
}

#define ACCEPT(json, buf_len) accept_(__LINE__, json, buf_len)
#define REFUSE(json, buf_len, ...) refuse_(__LINE__, json, buf_len, (const char *[]){ __VA_ARGS__, NULL })

/* Accepts and returns the number of tensors (their array freed). */
static size_t accept_(int line, const char *json, uint64_t buf_len)
{
	struct cfs_tensor *t = NULL;
	size_t n = 0;
	char err[CFS_ERR_LEN] = "";
	int r = parse(json, buf_len, &t, &n, NULL, err);

	CHECK(r == 0, " (line %d) refused: %d %s", line, r, err);
	cfs_tensors_free(t, n);
	return n;
}

/* Expects -EUCLEAN with every one of the strings in the message. */
static void refuse_(int line, const char *json, uint64_t buf_len, const char **want)
{
	struct cfs_tensor *t = NULL;
	size_t n = 0;
	char err[CFS_ERR_LEN] = "";
	int r = parse(json, buf_len, &t, &n, NULL, err);

	CHECK(r == -EUCLEAN, " (line %d) got %d (%s) for %s", line, r, err, json);
	CHECK(t == NULL && n == 0, " (line %d) tensors left after a refusal", line);
	CHECK(strncmp(err, "m.safetensors: ", 15) == 0, " (line %d) message \"%s\" does not name the file", line, err);
	CHECK(!strchr(err, '\n'), " (line %d) message of several lines", line);
	for (; *want; want++)
		CHECK(strstr(err, *want), " (line %d) message \"%s\" lacks \"%s\"", line, err, *want);
}

static void test_dtypes(void)
{
	static const char *names[] = { "BOOL", "U8", "I8", "F8_E4M3", "F8_E5M2", "U16", "I16", "F16",
				       "BF16", "U32", "I32", "F32", "U64", "I64", "F64" };
	static const unsigned sizes[] = { 1, 1, 1, 1, 1, 2, 2, 2, 2, 4, 4, 4, 8, 8, 8 };

	CHECK_EQ(CFS_ARRAY_SIZE(names), CFS_DT_COUNT);
	for (int i = 0; i < CFS_DT_COUNT; i++) {
		CHECK_EQ(cfs_dtype_parse(names[i]), i);
		CHECK(cfs_dtype_name(i) && !strcmp(cfs_dtype_name(i), names[i]));
		CHECK_EQ(cfs_dtype_size(i), sizes[i]);
	}
	CHECK_EQ(cfs_dtype_parse("f16"), -1);
	CHECK_EQ(cfs_dtype_parse("F16 "), -1);
	CHECK_EQ(cfs_dtype_parse(""), -1);
	CHECK_EQ(cfs_dtype_parse(NULL), -1);
	CHECK(cfs_dtype_name(-1) == NULL && cfs_dtype_name(CFS_DT_COUNT) == NULL);
	CHECK_EQ(cfs_dtype_size(-1), 0);
	CHECK_EQ(cfs_dtype_size(CFS_DT_COUNT), 0);
}

static void test_valid(void)
{
	struct cfs_tensor *t = NULL;
	size_t n = 0;
	uint64_t data_off = 0;
	char err[CFS_ERR_LEN] = "";
	/* keys not in offset order; a zero-size tensor at each end and two
	 * at one offset; odd sizes so that offsets are odd */
	const char *js = "{\"__metadata__\":{\"format\":\"pt\",\"x\":\"\"},"
			 "\"b\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[3,9]},"
			 "\"z\":{\"dtype\":\"F32\",\"shape\":[0,4],\"data_offsets\":[3,3]},"
			 "\"a\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[0,3]},"
			 "\"y\":{\"shape\":[4,0],\"data_offsets\":[3,3],\"dtype\":\"BF16\"},"
			 "\"first\":{\"dtype\":\"I64\",\"shape\":[0],\"data_offsets\":[0,0]},"
			 "\"c\":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[9,17]},"
			 "\"last\":{\"dtype\":\"BOOL\",\"shape\":[7,0,2],\"data_offsets\":[17,17]}}   ";
	static const char *order[] = { "first", "a", "y", "z", "b", "c", "last" };
	size_t hlen = strlen(js);

	CHECK_EQ(parse(js, 17, &t, &n, &data_off, err), 0);
	CHECK(!err[0], " message on success: %s", err);
	CHECK_EQ(n, 7);
	CHECK_EQ(data_off, 8 + hlen);
	for (size_t i = 0; i < n && i < CFS_ARRAY_SIZE(order); i++)
		CHECK(!strcmp(t[i].name, order[i]), " tensor %zu is %s, want %s", i, t[i].name,
		      order[i]);
	if (n == 7) {
		CHECK_EQ(t[1].dtype, CFS_DT_U8);
		CHECK_EQ(t[1].file_off, data_off);
		CHECK_EQ(t[1].nbytes, 3);
		CHECK_EQ(t[4].dtype, CFS_DT_F16);
		CHECK_EQ(t[4].file_off, data_off + 3);
		CHECK_EQ(t[4].nbytes, 6);
		CHECK_EQ(t[4].ndim, 1);
		CHECK_EQ(t[4].shape[0], 3);
		CHECK_EQ(t[5].ndim, 0);
		CHECK_EQ(t[5].nbytes, 8);
		CHECK_EQ(t[3].ndim, 2);
		CHECK_EQ(t[3].nbytes, 0);
		CHECK_EQ(t[6].file_off, data_off + 17);
		CHECK_EQ(t[6].ndim, 3);
		CHECK_EQ(t[6].shape[2], 2);
	}

	/* appending: a second file's tensors after the first's */
	{
		const char *js2 = "{\"q\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
		size_t len;
		uint8_t *b = mkst(js2, 8, &len);
		struct cfs_tensor *keep;

		CHECK_EQ(cfs_safetensors_parse(b, len, len, 5, "s2", &t, &n, &data_off, err,
					       sizeof(err)), 0);
		CHECK_EQ(n, 8);
		CHECK(!strcmp(t[7].name, "q") && t[7].shard == 5 && t[7].file_off == 8 + strlen(js2));
		CHECK(!strcmp(t[0].name, "first") && t[0].shard == 0);
		/* a refusal leaves the array as it was */
		keep = t;
		b[8 + 20] = 'X';
		CHECK_EQ(cfs_safetensors_parse(b, len, len, 6, "s3", &t, &n, NULL, err, sizeof(err)),
			 -EUCLEAN);
		CHECK(t == keep && n == 8);
		/* header bytes beyond the json are ignored; fewer is a caller bug */
		free(b);
		b = mkst(js2, 8, &len);
		CHECK_EQ(cfs_safetensors_parse(b, 8 + strlen(js2), len, 0, "s2", &t, &n, NULL, err,
					       sizeof(err)), 0);
		CHECK_EQ(n, 9);
		CHECK_EQ(cfs_safetensors_parse(b, 8 + strlen(js2) - 1, len, 0, "s2", &t, &n, NULL,
					       err, sizeof(err)), -EINVAL);
		free(b);
	}
	cfs_tensors_free(t, n);

	CHECK_EQ(ACCEPT("{}", 0), 0);
	CHECK_EQ(ACCEPT("{\"__metadata__\":{}}", 0), 0);
	CHECK_EQ(ACCEPT("{\"__metadata__\":{\"k\":\"v\"},\"a\":{\"dtype\":\"F8_E5M2\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1), 1);
	CHECK_EQ(ACCEPT("{\"a\":{\"dtype\":\"F8_E4M3\",\"shape\":[1],\"data_offsets\":[0,1]}}\t\n \r", 1), 1);
	CHECK_EQ(ACCEPT("{\"\xe6\xa8\xa1\xe5\x9e\x8b.w\":{\"dtype\":\"U16\",\"shape\":[1,1,1,1,1,1,1,2],\"data_offsets\":[0,4]}}", 4), 1);
	CHECK_EQ(ACCEPT("{\"only zero\":{\"dtype\":\"U64\",\"shape\":[0],\"data_offsets\":[0,0]}}", 0), 1);
	/* a shape whose other dimensions overflow is still empty with a 0 */
	CHECK_EQ(ACCEPT("{\"e\":{\"dtype\":\"F32\",\"shape\":[1099511627776,1099511627776,0],\"data_offsets\":[0,0]}}", 0), 1);
	/* a name of exactly 4096 bytes */
	{
		char *js3 = malloc(4096 + 100);
		int k;

		if (!js3) {
			perror("malloc");
			exit(1);
		}
		k = sprintf(js3, "{\"");

		memset(js3 + k, 'n', 4096);
		strcpy(js3 + k + 4096, "\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}");
		CHECK_EQ(ACCEPT(js3, 1), 1);
		memmove(js3 + k + 1, js3 + k, strlen(js3 + k) + 1);
		js3[k] = 'n';
		REFUSE(js3, 1, "nnnn", "4097");
		free(js3);
	}
}

#define T(name, body) "\"" name "\":{" body "}"
#define F32_2x2 "\"dtype\":\"F32\",\"shape\":[2,2]"

static void test_refusals(void)
{
	struct cfs_tensor *t = NULL;
	size_t n = 0, len;
	char err[CFS_ERR_LEN] = "";
	uint8_t small[16] = { 0 };
	uint64_t big = CFS_SAFETENSORS_HDR_MAX + 1ull;

	/* the length word */
	for (int i = 0; i < 8; i++)
		small[i] = (uint8_t)(big >> (8 * i));
	CHECK_EQ(cfs_safetensors_parse(small, sizeof(small), UINT64_C(1) << 40, 0, "m", &t, &n,
				       NULL, err, sizeof(err)), -EUCLEAN);
	CHECK(strstr(err, "over the"), " %s", err);
	memset(small, 0, sizeof(small));
	small[0] = 100;
	CHECK_EQ(cfs_safetensors_parse(small, sizeof(small), 50, 0, "m", &t, &n, NULL, err,
				       sizeof(err)), -EUCLEAN);
	CHECK(strstr(err, "beyond the end"), " %s", err);
	small[0] = 8; /* 8 + 8 = 16 > 15 */
	CHECK_EQ(cfs_safetensors_parse(small, sizeof(small), 15, 0, "m", &t, &n, NULL, err,
				       sizeof(err)), -EUCLEAN);
	small[0] = 0;
	CHECK_EQ(cfs_safetensors_parse(small, sizeof(small), 16, 0, "m", &t, &n, NULL, err,
				       sizeof(err)), -EUCLEAN);
	CHECK(strstr(err, "length is 0"), " %s", err);
	CHECK_EQ(cfs_safetensors_parse(small, 7, 7, 0, "m", &t, &n, NULL, err, sizeof(err)),
		 -EUCLEAN);
	CHECK(strstr(err, "too short"), " %s", err);
	CHECK_EQ(cfs_safetensors_parse(small, 0, 0, 0, "m", &t, &n, NULL, err, sizeof(err)),
		 -EUCLEAN);
	CHECK(t == NULL && n == 0);
	{
		/* NUL padding is not the spaces the format allows */
		uint8_t *b = mkst("{}  ", 0, &len);

		b[10] = 0;
		CHECK_EQ(cfs_safetensors_parse(b, len, len, 0, "m", &t, &n, NULL, err, sizeof(err)),
			 -EUCLEAN);
		CHECK(strstr(err, "not valid JSON"), " %s", err);
		free(b);
		b = mkst("{}", 0, &len);

		CHECK_EQ(cfs_safetensors_parse(b, len, len, 0, "m", &t, &n, NULL, NULL, 0), 0);
		CHECK_EQ(cfs_safetensors_parse(b, len, len, 0, NULL, &t, &n, NULL, NULL, 0), -EINVAL);
		free(b);
	}

	/* the JSON itself */
	REFUSE("{\"a\": }", 0, "not valid JSON");
	REFUSE("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}", 1, "not valid JSON");
	REFUSE("[1,2]", 0, "not a JSON object");
	REFUSE("\"x\"", 0, "not a JSON object");
	REFUSE(" {}", 0, "not a JSON object");
	REFUSE("{} x", 0, "not valid JSON");
	REFUSE("{" T("a", F32_2x2 ",\"data_offsets\":[0,16]") "," T("a", F32_2x2 ",\"data_offsets\":[0,16]") "}",
	       16, "duplicate");
	REFUSE("{" T("a", "\"dtype\":\"U8\",\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]") "}", 1, "duplicate");
	REFUSE("{\"a\\u0000b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, "not valid JSON");
	REFUSE("{\"a\xff\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, "not valid JSON");

	/* metadata */
	REFUSE("{\"__metadata__\":{\"k\":1}}", 0, "__metadata__", "\"k\"");
	REFUSE("{\"__metadata__\":[]}", 0, "__metadata__");
	REFUSE("{\"__metadata__\":\"x\"}", 0, "__metadata__");
	REFUSE("{\"__metadata__\":{\"k\":{\"n\":\"v\"}}}", 0, "__metadata__");

	/* keys of a tensor */
	REFUSE("{\"w.0\":[1]}", 0, "tensor \"w.0\"", "not an object");
	REFUSE("{" T("w.0", "\"shape\":[1],\"data_offsets\":[0,1]") "}", 1, "tensor \"w.0\"", "missing \"dtype\"");
	REFUSE("{" T("w.0", "\"dtype\":\"U8\",\"data_offsets\":[0,1]") "}", 1, "tensor \"w.0\"", "missing \"shape\"");
	REFUSE("{" T("w.0", "\"dtype\":\"U8\",\"shape\":[1]") "}", 1, "tensor \"w.0\"", "missing \"data_offsets\"");
	REFUSE("{" T("w.0", "\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"foo\":1") "}", 1,
	       "tensor \"w.0\"", "unexpected key \"foo\"");
	REFUSE("{" T("", "\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]") "}", 1, "empty name");

	/* dtype */
	REFUSE("{" T("w.1", "\"dtype\":\"F4\",\"shape\":[1],\"data_offsets\":[0,1]") "}", 1, "tensor \"w.1\"", "unknown dtype \"F4\"");
	REFUSE("{" T("w.1", "\"dtype\":\"f16\",\"shape\":[1],\"data_offsets\":[0,2]") "}", 2, "tensor \"w.1\"", "unknown dtype");
	REFUSE("{" T("w.1", "\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,1]") "}", 1, "tensor \"w.1\"", "\"dtype\" is not a string");

	/* shape */
	REFUSE("{" T("w.2", "\"dtype\":\"U8\",\"shape\":3,\"data_offsets\":[0,3]") "}", 3, "tensor \"w.2\"", "\"shape\" is not an array");
	REFUSE("{" T("w.2", "\"dtype\":\"U8\",\"shape\":{},\"data_offsets\":[0,3]") "}", 3, "tensor \"w.2\"", "not an array");
	REFUSE("{" T("w.2", "\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,0]") "}", 0, "tensor \"w.2\"", "shape[0]");
	REFUSE("{" T("w.2", "\"dtype\":\"U8\",\"shape\":[2,1.5],\"data_offsets\":[0,3]") "}", 3, "tensor \"w.2\"", "shape[1]");
	REFUSE("{" T("w.2", "\"dtype\":\"U8\",\"shape\":[1.0],\"data_offsets\":[0,1]") "}", 1, "tensor \"w.2\"", "shape[0]");
	REFUSE("{" T("w.2", "\"dtype\":\"U8\",\"shape\":[\"1\"],\"data_offsets\":[0,1]") "}", 1, "tensor \"w.2\"", "shape[0]");
	REFUSE("{" T("w.2", "\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]") "}", 1,
	       "tensor \"w.2\"", "9 dimensions");
	REFUSE("{" T("w.2", "\"dtype\":\"U8\",\"shape\":[99999999999999999999],\"data_offsets\":[0,1]") "}", 1,
	       "not valid JSON");
	REFUSE("{" T("w.3", "\"dtype\":\"F32\",\"shape\":[1099511627776,1099511627776],\"data_offsets\":[0,0]") "}", 0,
	       "tensor \"w.3\"", "overflows");
	REFUSE("{" T("w.3", "\"dtype\":\"F64\",\"shape\":[2305843009213693952],\"data_offsets\":[0,0]") "}", 0,
	       "tensor \"w.3\"", "overflows");

	/* data_offsets */
	REFUSE("{" T("w.4", F32_2x2 ",\"data_offsets\":[16,0]") "}", 16, "tensor \"w.4\"", "[16, 0] are reversed");
	REFUSE("{" T("w.4", F32_2x2 ",\"data_offsets\":[0,16]") "}", 15, "tensor \"w.4\"", "beyond the 15-byte buffer");
	REFUSE("{" T("w.4", F32_2x2 ",\"data_offsets\":[0]") "}", 16, "tensor \"w.4\"", "data_offsets");
	REFUSE("{" T("w.4", F32_2x2 ",\"data_offsets\":[0,16,16]") "}", 16, "tensor \"w.4\"", "data_offsets");
	REFUSE("{" T("w.4", F32_2x2 ",\"data_offsets\":[-1,15]") "}", 16, "tensor \"w.4\"", "data_offsets");
	REFUSE("{" T("w.4", F32_2x2 ",\"data_offsets\":{}") "}", 16, "tensor \"w.4\"", "data_offsets");
	REFUSE("{" T("w.4", F32_2x2 ",\"data_offsets\":[0.0,16]") "}", 16, "tensor \"w.4\"", "data_offsets");
	REFUSE("{" T("layers.0.wq", "\"dtype\":\"F32\",\"shape\":[5,4],\"data_offsets\":[0,100]") "}", 100,
	       "m.safetensors: tensor \"layers.0.wq\": data_offsets [0, 100] but shape [5, 4] x F32 is 80 bytes");
	REFUSE("{" T("w.5", "\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,1]") "}", 1, "tensor \"w.5\"", "is 0 bytes");

	/* tiling of the byte buffer */
	REFUSE("{" T("a", "\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]") ","
	       T("b", "\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[4,12]") "}", 12,
	       "tensor \"b\"", "overlap tensor \"a\" [0, 8]");
	REFUSE("{" T("a", "\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]") ","
	       T("b", "\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]") "}", 8,
	       "tensor \"b\"", "overlap tensor \"a\"");
	REFUSE("{" T("a", "\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]") ","
	       T("b", "\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[8,12]") "}", 12,
	       "tensor \"b\"", "hole of 4 bytes");
	REFUSE("{" T("b", "\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[2,6]") "}", 6,
	       "tensor \"b\"", "hole of 2 bytes");
	REFUSE("{" T("a", "\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]") "}", 8,
	       "byte buffer is 8 bytes but the tensors end at 4");
	REFUSE("{}", 1, "byte buffer is 1 bytes");
	REFUSE("{" T("z", "\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[9,9]") "}", 8,
	       "tensor \"z\"", "beyond the 8-byte buffer");

	/* a hostile name is quoted on one line */
	REFUSE("{\"x\\n\\\"y\":{\"dtype\":\"Q\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
	       "tensor \"x\\x0a\\x22y\"");
	CHECK(t == NULL && n == 0);
}

static void test_shard_index(void)
{
	char **files = NULL, **names = NULL;
	unsigned *idx = NULL;
	size_t nf = 0, nm = 0;
	char err[CFS_ERR_LEN];
	const char *good = "{\"metadata\":{\"total_size\":12},\"weight_map\":{"
			   "\"a\":\"s1.safetensors\",\"b\":\"s2.safetensors\","
			   "\"c\":\"s1.safetensors\",\"d\":\"..x\"}}";
	static const struct {
		const char *json, *want;
	} bad[] = {
		{ "{\"weight_map\":{\"a\":\"../x\"}}", "tensor \"a\": shard \"../x\" is not a plain" },
		{ "{\"weight_map\":{\"a\":\"a/b\"}}", "\"a/b\"" },
		{ "{\"weight_map\":{\"a\":\"/abs\"}}", "\"/abs\"" },
		{ "{\"weight_map\":{\"a\":\"..\"}}", "not a plain" },
		{ "{\"weight_map\":{\"a\":\".\"}}", "not a plain" },
		{ "{\"weight_map\":{\"a\":\"\"}}", "not a plain" },
		{ "{\"weight_map\":{\"a\":1}}", "tensor \"a\": file name is not a string" },
		{ "{\"weight_map\":{\"a\":null}}", "not a string" },
		{ "{\"weight_map\":{\"a\":[\"s\"]}}", "not a string" },
		{ "{\"weight_map\":{\"\":\"s\"}}", "name is 0 bytes" },
		{ "{\"weight_map\":{\"a\":\"s\\u0000\"}}", "not valid JSON" },
		{ "{\"weight_map\":{\"a\":\"s\",\"a\":\"s\"}}", "duplicate" },
		{ "{\"weight_map\":{}}", "empty" },
		{ "{\"weight_map\":[]}", "\"weight_map\" is not an object" },
		{ "{\"metadata\":{}}", "no \"weight_map\"" },
		{ "{\"metadata\":1,\"weight_map\":{\"a\":\"s\"}}", "\"metadata\" is not an object" },
		{ "[]", "not a JSON object" },
		{ "", "not valid JSON" },
		{ "{\"weight_map\":{\"a\":\"s\"}", "not valid JSON" },
	};

	CHECK_EQ(cfs_shard_index_parse(good, strlen(good), &files, &nf, &names, &idx, &nm, err,
				       sizeof(err)), 0);
	CHECK_EQ(nf, 3);
	CHECK_EQ(nm, 4);
	if (nf == 3 && nm == 4) {
		CHECK(!strcmp(files[0], "s1.safetensors") && !strcmp(files[1], "s2.safetensors") &&
		      !strcmp(files[2], "..x"));
		CHECK(!strcmp(names[0], "a") && !strcmp(names[1], "b") && !strcmp(names[2], "c") &&
		      !strcmp(names[3], "d"));
		CHECK(idx[0] == 0 && idx[1] == 1 && idx[2] == 0 && idx[3] == 2);
	}
	cfs_shard_index_free(files, nf, names, idx, nm);

	for (size_t i = 0; i < CFS_ARRAY_SIZE(bad); i++) {
		files = names = NULL;
		idx = NULL;
		err[0] = 0;
		CHECK_EQ(cfs_shard_index_parse(bad[i].json, strlen(bad[i].json), &files, &nf, &names,
					       &idx, &nm, err, sizeof(err)), -EUCLEAN);
		CHECK(files == NULL && names == NULL && idx == NULL);
		CHECK(strstr(err, bad[i].want), " %s: message \"%s\" lacks \"%s\"", bad[i].json, err,
		      bad[i].want);
	}
	cfs_shard_index_free(NULL, 0, NULL, NULL, 0);
}

/* ---- cfs_model_open on files ------------------------------------------- */

static void write_file(const char *sub, const char *name, const void *data, size_t len)
{
	char path[512];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, sub);
	mkdir(path, 0755);
	snprintf(path, sizeof(path), "%s/%s/%s", dir, sub, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, data, len) != (ssize_t)len || close(fd)) {
		perror(path);
		exit(1);
	}
}

static void write_st(const char *sub, const char *name, const char *json, uint64_t buf_len)
{
	size_t len;
	uint8_t *b = mkst(json, buf_len, &len);

	write_file(sub, name, b, len);
	free(b);
}

static int open_model(const char *sub, struct cfs_model **m, char *err)
{
	char path[512];

	snprintf(path, sizeof(path), "%s%s%s", dir, *sub ? "/" : "", sub);
	err[0] = 0;
	return cfs_model_open(path, m, err, CFS_ERR_LEN);
}

/* s1: a [0,8) b [8,20)      s2: c [0,2) d zero-size */
#define S1 "{" T("b", "\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[8,20]") "," \
	       T("a", "\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]") "}"
#define S2 "{" T("c", "\"dtype\":\"BF16\",\"shape\":[1],\"data_offsets\":[0,2]") "," \
	       T("d", "\"dtype\":\"F16\",\"shape\":[0],\"data_offsets\":[2,2]") "}"
#define MAP(...) "{\"metadata\":{\"total_size\":22},\"weight_map\":{" __VA_ARGS__ "}}"
#define GOOD_MAP MAP("\"a\":\"s1.safetensors\",\"b\":\"s1.safetensors\"," \
		     "\"c\":\"s2.safetensors\",\"d\":\"s2.safetensors\"")

static void check_sharded(struct cfs_model *m, const char *index_dir)
{
	static const char *order[] = { "a", "b", "c", "d" };
	char want[512];

	CHECK_EQ(cfs_model_tensor_count(m), 4);
	CHECK_EQ(cfs_model_file_count(m), 2);
	CHECK_EQ(cfs_model_bytes(m), 22);
	snprintf(want, sizeof(want), "%s%ss2.safetensors", index_dir, *index_dir ? "/" : "");
	CHECK(cfs_model_file_path(m, 1) && !strcmp(cfs_model_file_path(m, 1), want),
	      " path %s, want %s", cfs_model_file_path(m, 1), want);
	CHECK(cfs_model_file_path(m, 2) == NULL);
	for (size_t i = 0; i < 4; i++) {
		const struct cfs_tensor *t = cfs_model_tensor(m, i);

		CHECK(t && !strcmp(t->name, order[i]));
		CHECK_EQ(cfs_model_find(m, order[i]), (long)i);
		if (t)
			CHECK_EQ(t->shard, i / 2);
	}
	CHECK_EQ(cfs_model_tensor(m, 2)->file_off, 8 + strlen(S2));
	CHECK_EQ(cfs_model_tensor(m, 3)->file_off, 8 + strlen(S2) + 2);
	CHECK(cfs_model_tensor(m, 4) == NULL);
	CHECK_EQ(cfs_model_find(m, "e"), -1);
	CHECK_EQ(cfs_model_find(m, ""), -1);
}

static void expect_open_fail(int line, const char *sub, int want, const char *w1, const char *w2)
{
	struct cfs_model *m = (struct cfs_model *)&m;
	char err[CFS_ERR_LEN];
	int r = open_model(sub, &m, err);

	CHECK(r == want, " (line %d) %s: got %d (%s), want %d", line, sub, r, err, want);
	CHECK(m == NULL, " (line %d) *out set on failure", line);
	CHECK(!w1 || strstr(err, w1), " (line %d) message \"%s\" lacks \"%s\"", line, err, w1);
	CHECK(!w2 || strstr(err, w2), " (line %d) message \"%s\" lacks \"%s\"", line, err, w2);
	if (r == 0)
		cfs_model_free(m);
}

#define OPEN_FAIL(sub, want, w1, w2) expect_open_fail(__LINE__, sub, want, w1, w2)

static void test_model_open(void)
{
	struct cfs_model *m = NULL;
	char err[CFS_ERR_LEN], path[512], cwd[4096];

	/* single file, by path and by directory */
	write_st("single", "model.safetensors", S1, 20);
	CHECK_EQ(open_model("single/model.safetensors", &m, err), 0);
	CHECK(!err[0], " %s", err);
	if (m) {
		CHECK_EQ(cfs_model_tensor_count(m), 2);
		CHECK_EQ(cfs_model_file_count(m), 1);
		CHECK_EQ(cfs_model_bytes(m), 20);
		CHECK_EQ(cfs_model_find(m, "b"), 1);
		CHECK_EQ(cfs_model_tensor(m, 1)->file_off, 8 + strlen(S1) + 8);
		CHECK_EQ(cfs_model_tensor(m, 1)->dtype, CFS_DT_F32);
		CHECK_EQ(cfs_model_tensor(m, 1)->shard, 0);
		snprintf(path, sizeof(path), "%s/single/model.safetensors", dir);
		CHECK(!strcmp(cfs_model_file_path(m, 0), path));
		CHECK(m->shards[0].data_off == 8 + strlen(S1) && m->shards[0].data_len == 20);
		CHECK(m->src->ops->fd(m->src, m->shards[0].h) >= 0);
	}
	cfs_model_free(m);
	m = NULL;
	CHECK_EQ(open_model("single", &m, err), 0);
	CHECK_EQ(cfs_model_tensor_count(m), 2);
	cfs_model_free(m);
	cfs_model_free(NULL);
	CHECK_EQ(cfs_model_tensor_count(NULL), 0);
	CHECK_EQ(cfs_model_find(NULL, "a"), -1);

	/* sharded: by index, by directory (the index wins over a
	 * model.safetensors beside it), and by a relative index path */
	write_st("sharded", "s1.safetensors", S1, 20);
	write_st("sharded", "s2.safetensors", S2, 2);
	write_file("sharded", "model.safetensors.index.json", GOOD_MAP, strlen(GOOD_MAP));
	write_st("sharded", "model.safetensors", "{}", 0);
	snprintf(path, sizeof(path), "%s/sharded", dir);
	m = NULL;
	CHECK_EQ(open_model("sharded/model.safetensors.index.json", &m, err), 0);
	CHECK(!err[0], " %s", err);
	if (m)
		check_sharded(m, path);
	cfs_model_free(m);
	m = NULL;
	CHECK_EQ(open_model("sharded", &m, err), 0);
	if (m)
		check_sharded(m, path);
	cfs_model_free(m);
	m = NULL;
	CHECK_EQ(open_model("sharded/", &m, err), 0);
	if (m)
		check_sharded(m, path);
	cfs_model_free(m);
	if (!getcwd(cwd, sizeof(cwd)) || chdir(path)) {
		perror("chdir");
		exit(1);
	}
	m = NULL;
	CHECK_EQ(cfs_model_open("model.safetensors.index.json", &m, err, sizeof(err)), 0);
	if (m)
		check_sharded(m, "");
	cfs_model_free(m);
	if (chdir(cwd)) {
		perror("chdir");
		exit(1);
	}

	/* shards that disagree with the weight_map */
	write_st("missing", "s1.safetensors", S1, 20);
	write_st("missing", "s2.safetensors", S2, 2);
	{
		const char *js = MAP("\"a\":\"s1.safetensors\",\"b\":\"s1.safetensors\",\"x\":\"s1.safetensors\","
				     "\"c\":\"s2.safetensors\",\"d\":\"s2.safetensors\"");

		write_file("missing", "model.safetensors.index.json", js, strlen(js));
	}
	OPEN_FAIL("missing", -EUCLEAN, "tensor \"x\" is mapped to s1.safetensors but not in it",
		  "model.safetensors.index.json");
	{
		const char *js = MAP("\"a\":\"s1.safetensors\",\"b\":\"s1.safetensors\",\"c\":\"s2.safetensors\"");

		write_st("unmapped", "s1.safetensors", S1, 20);
		write_st("unmapped", "s2.safetensors", S2, 2);
		write_file("unmapped", "model.safetensors.index.json", js, strlen(js));
	}
	OPEN_FAIL("unmapped", -EUCLEAN, "tensor \"d\" of s2.safetensors is not in the weight_map", NULL);
	{
		const char *js = MAP("\"a\":\"s1.safetensors\",\"b\":\"s2.safetensors\","
				     "\"c\":\"s2.safetensors\",\"d\":\"s2.safetensors\"");

		write_st("moved", "s1.safetensors", S1, 20);
		write_st("moved", "s2.safetensors", S2, 2);
		write_file("moved", "model.safetensors.index.json", js, strlen(js));
	}
	OPEN_FAIL("moved", -EUCLEAN, "tensor \"b\"", "is in s1.safetensors");
	{
		const char *js = MAP("\"a\":\"s1.safetensors\",\"b\":\"s1.safetensors\","
				     "\"c\":\"s2.safetensors\",\"d\":\"s2.safetensors\"");

		write_st("twice", "s1.safetensors", S1, 20);
		write_st("twice", "s2.safetensors",
			 "{" T("c", "\"dtype\":\"BF16\",\"shape\":[1],\"data_offsets\":[0,2]") ","
			 T("a", "\"dtype\":\"F16\",\"shape\":[0],\"data_offsets\":[2,2]") ","
			 T("d", "\"dtype\":\"F16\",\"shape\":[0],\"data_offsets\":[2,2]") "}", 2);
		write_file("twice", "model.safetensors.index.json", js, strlen(js));
	}
	OPEN_FAIL("twice", -EUCLEAN, "tensor \"a\" is in both", "s2.safetensors");
	{
		const char *js = MAP("\"a\":\"s1.safetensors\",\"b\":\"s1.safetensors\","
				     "\"c\":\"s3.safetensors\"");

		write_st("noshard", "s1.safetensors", S1, 20);
		write_file("noshard", "model.safetensors.index.json", js, strlen(js));
	}
	OPEN_FAIL("noshard", -ENOENT, "s3.safetensors", NULL);
	{
		const char *js = MAP("\"a\":\"s1.safetensors\",\"b\":\"../single/model.safetensors\"");

		write_file("escape", "model.safetensors.index.json", js, strlen(js));
	}
	OPEN_FAIL("escape", -EUCLEAN, "model.safetensors.index.json: shard index: tensor \"b\"",
		  "not a plain file name");
	write_st("badshard", "s1.safetensors", S1, 20);
	write_st("badshard", "s2.safetensors",
		 "{" T("c", "\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,2]") "}", 2);
	write_file("badshard", "model.safetensors.index.json", GOOD_MAP, strlen(GOOD_MAP));
	OPEN_FAIL("badshard", -EUCLEAN, "s2.safetensors: tensor \"c\"", "is 4 bytes");

	/* other failures */
	OPEN_FAIL("nothing-here", -ENOENT, "No such file", NULL);
	mkdir(strcat(strcpy(path, dir), "/empty"), 0755);
	OPEN_FAIL("empty", -ENOENT, "neither model.safetensors.index.json nor model.safetensors", NULL);
	{
		size_t len;
		uint8_t *b = mkst(S1, 20, &len);

		write_file("short", "model.safetensors", b, 8 + strlen(S1) - 1);
		write_file("short", "tiny.safetensors", b, 5);
		write_file("short", "trunc.safetensors", b, len - 1);
		free(b);
	}
	OPEN_FAIL("short", -EUCLEAN, "beyond the end", NULL);
	OPEN_FAIL("short/tiny.safetensors", -EUCLEAN, "too short", NULL);
	OPEN_FAIL("short/trunc.safetensors", -EUCLEAN, "tensor \"b\"", "beyond the 19-byte buffer");
	write_file("json", "model.safetensors.index.json", "{", 1);
	OPEN_FAIL("json/model.safetensors.index.json", -EUCLEAN, "not valid JSON", NULL);
	mkdir(strcat(strcpy(path, dir), "/dirshard"), 0755);
	mkdir(strcat(strcpy(path, dir), "/dirshard/s1.safetensors"), 0755);
	write_file("dirshard", "model.safetensors.index.json", GOOD_MAP, strlen(GOOD_MAP));
	OPEN_FAIL("dirshard", -EISDIR, "s1.safetensors", NULL);
	CHECK_EQ(cfs_model_open(NULL, &m, err, sizeof(err)), -EINVAL);
	CHECK_EQ(cfs_model_open("", &m, NULL, 0), -EINVAL);
}

int main(void)
{
	cfs_test_mkdtemp(dir, sizeof(dir), "safetensors");
	test_dtypes();
	test_valid();
	test_refusals();
	test_shard_index();
	test_model_open();
	cfs_test_rmtree(dir);
	return cfs_test_done("test-safetensors");
}
