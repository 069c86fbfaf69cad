/* SPDX-License-Identifier: MIT */
/*
 * fuzz-safetensors: libFuzzer target for the safetensors header parser and
 * the shard index parser.  The input is a whole .safetensors file: its
 * header is taken with the loader's own length checks and parsed; when it
 * is accepted, the tensor table must be sorted, inside the file, tile the
 * byte buffer and agree with the shapes (a failed invariant aborts, which
 * the fuzzer reports).  An input that starts with '{' also goes to the
 * shard index parser.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "loader_i.h"



#define SHARD 3u

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Names unique (the JSON had no duplicate keys) */
static void check_unique(const char **names, size_t n)
{
	qsort(names, n, sizeof(*names), name_cmp);
	for (size_t i = 1; i < n; i++)
		FUZZ_ASSERT(strcmp(names[i - 1], names[i]) != 0);
}

static void check_message(int r, const char *err)
{
	FUZZ_ASSERT(r == -EUCLEAN || r == -ENOMEM);
	FUZZ_ASSERT(err[0] && !strchr(err, '\n') && strlen(err) < CFS_ERR_LEN);
}

static void check_tensors(const struct cfs_tensor *t, size_t n, uint64_t data_off,
			  uint64_t size)
{
	const char **names = calloc(n ? n : 1, sizeof(*names));
	uint64_t at = data_off;

	FUZZ_ASSERT(names);
	for (size_t i = 0; i < n; i++) {
		size_t len;
		uint64_t nbytes = cfs_dtype_size(t[i].dtype);
		bool zero = false;

		FUZZ_ASSERT(t[i].name);
		len = strlen(t[i].name);
		FUZZ_ASSERT(len >= 1 && len <= 4096);
		names[i] = t[i].name;
		FUZZ_ASSERT(t[i].dtype >= 0 && t[i].dtype < CFS_DT_COUNT);
		FUZZ_ASSERT(t[i].ndim <= CFS_TENSOR_MAX_DIMS);
		FUZZ_ASSERT(t[i].shard == SHARD);
		for (unsigned d = 0; d < t[i].ndim; d++)
			zero |= t[i].shape[d] == 0;
		for (unsigned d = 0; d < t[i].ndim && !zero; d++)
			FUZZ_ASSERT(!__builtin_mul_overflow(nbytes, t[i].shape[d], &nbytes));
		FUZZ_ASSERT(t[i].nbytes == (zero ? 0 : nbytes));
		FUZZ_ASSERT(t[i].file_off >= data_off && t[i].file_off <= size);
		FUZZ_ASSERT(t[i].nbytes <= size - t[i].file_off);
		if (i)
			FUZZ_ASSERT(t[i - 1].file_off <= t[i].file_off);
		/* the non-empty tensors tile the byte buffer */
		if (t[i].nbytes) {
			FUZZ_ASSERT(t[i].file_off == at);
			at += t[i].nbytes;
		}
	}
	FUZZ_ASSERT(at == size);
	check_unique(names, n);
	free(names);
}

static void fuzz_safetensors(const uint8_t *data, size_t size)
{
	struct cfs_tensor *t = NULL;
	size_t n = 0, total;
	uint64_t data_off = 0;
	char err[CFS_ERR_LEN] = "";
	uint8_t *hdr;
	int r;

	r = cfs_safetensors_hdr_len(data, size, "fuzz", &total, err, sizeof(err));
	if (r < 0) {
		check_message(r, err);
		/* the parser refuses it the same way */
		err[0] = 0;
		r = cfs_safetensors_parse(data, size, size, SHARD, "fuzz", &t, &n, &data_off, err,
					  sizeof(err));
		check_message(r, err);
		FUZZ_ASSERT(!t && !n);
		return;
	}
	FUZZ_ASSERT(total >= 9 && total <= size);
	/* exactly the header, so that a read past it is caught */
	hdr = malloc(total);
	FUZZ_ASSERT(hdr);
	memcpy(hdr, data, total);
	r = cfs_safetensors_parse(hdr, total, size, SHARD, "fuzz", &t, &n, &data_off, err,
				  sizeof(err));
	if (r < 0) {
		check_message(r, err);
		FUZZ_ASSERT(!t && !n);
		free(hdr);
		return;
	}
	FUZZ_ASSERT(data_off == total);
	check_tensors(t, n, data_off, size);

	/* appending a second time keeps the first part and repeats it */
	{
		size_t n1 = n;

		FUZZ_ASSERT(cfs_safetensors_parse(hdr, total, size, SHARD, "fuzz", &t, &n, NULL, err,
					     sizeof(err)) == 0);
		FUZZ_ASSERT(n == 2 * n1);
		for (size_t i = 0; i < n1; i++) {
			FUZZ_ASSERT(!strcmp(t[i].name, t[n1 + i].name) && t[i].name != t[n1 + i].name);
			FUZZ_ASSERT(t[i].file_off == t[n1 + i].file_off && t[i].nbytes == t[n1 + i].nbytes);
		}
	}
	cfs_tensors_free(t, n);
	free(hdr);
}

static void fuzz_index(const uint8_t *data, size_t size)
{
	char **files = NULL, **names = NULL;
	unsigned *idx = NULL;
	size_t nf = 0, nm = 0;
	char err[CFS_ERR_LEN] = "";
	int r = cfs_shard_index_parse(data, size, &files, &nf, &names, &idx, &nm, err, sizeof(err));

	if (r < 0) {
		check_message(r, err);
		FUZZ_ASSERT(!files && !names && !idx);
		return;
	}
	FUZZ_ASSERT(nf >= 1 && nm >= nf);
	{
		bool *used = calloc(nf, sizeof(*used));

		FUZZ_ASSERT(used);
		for (size_t i = 0; i < nm; i++) {
			size_t len = strlen(names[i]);

			FUZZ_ASSERT(len >= 1 && len <= 4096);
			FUZZ_ASSERT(idx[i] < nf);
			used[idx[i]] = true;
		}
		for (size_t i = 0; i < nf; i++) {
			FUZZ_ASSERT(used[i]);
			FUZZ_ASSERT(files[i][0] && !strchr(files[i], '/'));
			FUZZ_ASSERT(strcmp(files[i], ".") && strcmp(files[i], ".."));
		}
		free(used);
	}
	check_unique((const char **)(void *)files, nf);
	check_unique((const char **)(void *)names, nm);
	cfs_shard_index_free(files, nf, names, idx, nm);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_safetensors(data, size);
	if (size && data[0] == '{')
		fuzz_index(data, size);
	return 0;
}
