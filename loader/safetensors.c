/* SPDX-License-Identifier: MIT */
/*
 * safetensors headers and model.safetensors.index.json (docs/LOADER.md,
 * "Checks"), the dtype table and the loader's error formatter.
 *
 * Everything here is outside input: JSON goes through jansson with
 * duplicate keys refused, every count and offset is checked against the
 * file before it is used, and sizes are computed with overflow checks.
 * A header is accepted only when its tensors tile the byte buffer
 * exactly, so that a loader may read the buffer in large sequential runs
 * and trust that every byte belongs to exactly one tensor.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "loader_i.h"
#include "util.h"

#define NAME_MAX_LEN 4096u      /* bytes of a tensor name */
#define QNAME_MAX 72u           /* bytes of a name quoted in a message */
_Static_assert(CFS_QUOTE_LEN >= QNAME_MAX + 16, "room for the last escape and \"...\"");

int cfs_load_err(char *err, size_t errlen, int ret, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return ret;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	/* One line: a name with a newline in it must not split the message. */
	for (char *p = err; *p; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	return ret;
}

/* ---- dtypes ------------------------------------------------------------ */

static const struct {
	const char *name;
	unsigned size;
} dtypes[CFS_DT_COUNT] = {
	[CFS_DT_BOOL] = { "BOOL", 1 },
	[CFS_DT_U8] = { "U8", 1 },
	[CFS_DT_I8] = { "I8", 1 },
	[CFS_DT_F8_E4M3] = { "F8_E4M3", 1 },
	[CFS_DT_F8_E5M2] = { "F8_E5M2", 1 },
	[CFS_DT_U16] = { "U16", 2 },
	[CFS_DT_I16] = { "I16", 2 },
	[CFS_DT_F16] = { "F16", 2 },
	[CFS_DT_BF16] = { "BF16", 2 },
	[CFS_DT_U32] = { "U32", 4 },
	[CFS_DT_I32] = { "I32", 4 },
	[CFS_DT_F32] = { "F32", 4 },
	[CFS_DT_U64] = { "U64", 8 },
	[CFS_DT_I64] = { "I64", 8 },
	[CFS_DT_F64] = { "F64", 8 },
};

CFS_EXPORT int cfs_dtype_parse(const char *name)
{
	if (!name)
		return -1;
	for (int i = 0; i < CFS_DT_COUNT; i++)
		if (!strcmp(name, dtypes[i].name))
			return i;
	return -1;
}

CFS_EXPORT const char *cfs_dtype_name(int dtype)
{
	return dtype >= 0 && dtype < CFS_DT_COUNT ? dtypes[dtype].name : NULL;
}

CFS_EXPORT unsigned cfs_dtype_size(int dtype)
{
	return dtype >= 0 && dtype < CFS_DT_COUNT ? dtypes[dtype].size : 0;
}

/* ---- message helpers --------------------------------------------------- */

/* Quoted so that a hostile name can neither split a message nor hide
 * what follows it. */
const char *cfs_load_quote(char *buf, size_t size, const char *name)
{
	size_t o = 0;
	const unsigned char *p = (const unsigned char *)name;

	if (size < 8) {
		if (size)
			buf[0] = 0;
		return buf;
	}
	for (; *p && o < QNAME_MAX && o + 8 < size; p++) {
		if (*p < 0x20 || *p == 0x7f || *p == '"' || *p == '\\')
			o += (size_t)snprintf(buf + o, size - o, "\\x%02x", *p);
		else
			buf[o++] = (char)*p;
	}
	if (*p)
		o += (size_t)snprintf(buf + o, size - o, "...");
	buf[o] = 0;
	return buf;
}

static const char *fmt_shape(char *buf, size_t size, const uint64_t *shape, unsigned ndim)
{
	size_t o = 0;

	o += (size_t)snprintf(buf, size, "[");
	for (unsigned i = 0; i < ndim && o < size; i++)
		o += (size_t)snprintf(buf + o, size - o, "%s%" PRIu64, i ? ", " : "", shape[i]);
	if (o < size)
		snprintf(buf + o, size - o, "]");
	return buf;
}

/* A parse failure is corrupt input, unless jansson ran out of memory. */
static int json_err(const json_error_t *e)
{
#if JANSSON_VERSION_HEX >= 0x020b00
	if (json_error_code(e) == json_error_out_of_memory)
		return -ENOMEM;
#endif
	return -EUCLEAN;
}

/* ---- one safetensors header -------------------------------------------- */

int cfs_safetensors_hdr_len(const void *buf, uint64_t file_size, const char *file_name,
			    size_t *total, char *err, size_t errlen)
{
	const uint8_t *b = buf;
	uint64_t n = 0;

	if (file_size < 8)
		return cfs_load_err(err, errlen, -EUCLEAN,
				    "%s: %" PRIu64 " bytes, too short for a safetensors header",
				    file_name, file_size);
	for (int i = 7; i >= 0; i--)
		n = n << 8 | b[i];
	if (n == 0)
		return cfs_load_err(err, errlen, -EUCLEAN, "%s: header length is 0", file_name);
	if (n > CFS_SAFETENSORS_HDR_MAX)
		return cfs_load_err(err, errlen, -EUCLEAN,
				    "%s: header length %" PRIu64 " is over the %u-byte limit",
				    file_name, n, CFS_SAFETENSORS_HDR_MAX);
	if (n > file_size - 8)
		return cfs_load_err(err, errlen, -EUCLEAN,
				    "%s: header length %" PRIu64 " is beyond the end of the %" PRIu64
				    "-byte file", file_name, n, file_size);
	*total = (size_t)(8 + n);
	return 0;
}

void cfs_tensors_free(struct cfs_tensor *t, size_t n)
{
	if (!t)
		return;
	for (size_t i = 0; i < n; i++)
		free((void *)(uintptr_t)t[i].name);
	free(t);
}

/* Offset order; at equal offsets the zero-size tensors first, by name, so
 * that the order never depends on the order of the JSON keys. */
static int tensor_cmp(const void *a, const void *b)
{
	const struct cfs_tensor *x = a, *y = b;

	if (x->file_off != y->file_off)
		return x->file_off < y->file_off ? -1 : 1;
	if ((x->nbytes != 0) != (y->nbytes != 0))
		return x->nbytes ? 1 : -1;
	return strcmp(x->name, y->name);
}

/* A JSON integer >= 0 in *v, else false. */
static bool json_u64(const json_t *j, uint64_t *v)
{
	json_int_t i;

	if (!json_is_integer(j))
		return false;
	i = json_integer_value(j);
	if (i < 0)
		return false;
	*v = (uint64_t)i;
	return true;
}

static int check_metadata(json_t *md, const char *file, char *err, size_t errlen)
{
	char q[CFS_QUOTE_LEN];
	void *it;

	if (!json_is_object(md))
		return cfs_load_err(err, errlen, -EUCLEAN,
				    "%s: \"__metadata__\" is not an object of strings", file);
	for (it = json_object_iter(md); it; it = json_object_iter_next(md, it))
		if (!json_is_string(json_object_iter_value(it)))
			return cfs_load_err(err, errlen, -EUCLEAN,
					    "%s: \"__metadata__\" value of \"%s\" is not a string",
					    file, cfs_load_quote(q, sizeof(q), json_object_iter_key(it)));
	return 0;
}

/* One tensor entry into *t (its name not yet set).  buf_len: bytes of the
 * byte buffer; data_off: where it starts in the file. */
static int parse_tensor(const char *name, json_t *v, uint64_t data_off, uint64_t buf_len,
			const char *file, struct cfs_tensor *t, char *err, size_t errlen)
{
	char q[CFS_QUOTE_LEN], sh[256];
	const json_t *dt, *shape, *offs;
	uint64_t begin, end, nbytes;
	size_t len = strlen(name);
	bool zero = false, over = false;
	void *it;

	if (len == 0)
		return cfs_load_err(err, errlen, -EUCLEAN, "%s: a tensor has an empty name", file);
	if (len > NAME_MAX_LEN)
		return cfs_load_err(err, errlen, -EUCLEAN,
				    "%s: tensor \"%s\": name is %zu bytes, over %u", file,
				    cfs_load_quote(q, sizeof(q), name), len, NAME_MAX_LEN);
	cfs_load_quote(q, sizeof(q), name);
	if (!json_is_object(v))
		return cfs_load_err(err, errlen, -EUCLEAN, "%s: tensor \"%s\": not an object",
				    file, q);
	for (it = json_object_iter(v); it; it = json_object_iter_next(v, it)) {
		const char *k = json_object_iter_key(it);
		char qk[CFS_QUOTE_LEN];

		if (strcmp(k, "dtype") && strcmp(k, "shape") && strcmp(k, "data_offsets"))
			return cfs_load_err(err, errlen, -EUCLEAN,
					    "%s: tensor \"%s\": unexpected key \"%s\"", file, q,
					    cfs_load_quote(qk, sizeof(qk), k));
	}
	dt = json_object_get(v, "dtype");
	shape = json_object_get(v, "shape");
	offs = json_object_get(v, "data_offsets");
	if (!dt || !shape || !offs)
		return cfs_load_err(err, errlen, -EUCLEAN, "%s: tensor \"%s\": missing \"%s\"",
				    file, q, !dt ? "dtype" : !shape ? "shape" : "data_offsets");

	if (!json_is_string(dt))
		return cfs_load_err(err, errlen, -EUCLEAN,
				    "%s: tensor \"%s\": \"dtype\" is not a string", file, q);
	t->dtype = cfs_dtype_parse(json_string_value(dt));
	if (t->dtype < 0) {
		char qd[CFS_QUOTE_LEN];

		return cfs_load_err(err, errlen, -EUCLEAN, "%s: tensor \"%s\": unknown dtype \"%s\"",
				    file, q, cfs_load_quote(qd, sizeof(qd), json_string_value(dt)));
	}

	if (!json_is_array(shape))
		return cfs_load_err(err, errlen, -EUCLEAN,
				    "%s: tensor \"%s\": \"shape\" is not an array", file, q);
	if (json_array_size(shape) > CFS_TENSOR_MAX_DIMS)
		return cfs_load_err(err, errlen, -EUCLEAN,
				    "%s: tensor \"%s\": shape has %zu dimensions, more than %u",
				    file, q, json_array_size(shape), CFS_TENSOR_MAX_DIMS);
	t->ndim = (unsigned)json_array_size(shape);
	for (unsigned i = 0; i < t->ndim; i++)
		if (!json_u64(json_array_get(shape, i), &t->shape[i]))
			return cfs_load_err(err, errlen, -EUCLEAN,
					    "%s: tensor \"%s\": shape[%u] is not an integer >= 0",
					    file, q, i);

	/* A zero dimension makes the tensor empty whatever the others are;
	 * otherwise the product must fit, as it is a byte count. */
	nbytes = cfs_dtype_size(t->dtype);
	for (unsigned i = 0; i < t->ndim; i++)
		if (t->shape[i] == 0)
			zero = true;
		else if (__builtin_mul_overflow(nbytes, t->shape[i], &nbytes))
			over = true;
	if (zero)
		nbytes = 0;
	else if (over)
		return cfs_load_err(err, errlen, -EUCLEAN,
				    "%s: tensor \"%s\": shape %s x %s overflows 64 bits", file, q,
				    fmt_shape(sh, sizeof(sh), t->shape, t->ndim),
				    cfs_dtype_name(t->dtype));
	t->nbytes = nbytes;

	if (!json_is_array(offs) || json_array_size(offs) != 2 ||
	    !json_u64(json_array_get(offs, 0), &begin) || !json_u64(json_array_get(offs, 1), &end))
		return cfs_load_err(err, errlen, -EUCLEAN,
				    "%s: tensor \"%s\": \"data_offsets\" is not [begin, end] "
				    "(integers >= 0)", file, q);
	if (begin > end)
		return cfs_load_err(err, errlen, -EUCLEAN,
				    "%s: tensor \"%s\": data_offsets [%" PRIu64 ", %" PRIu64
				    "] are reversed", file, q, begin, end);
	if (end > buf_len)
		return cfs_load_err(err, errlen, -EUCLEAN,
				    "%s: tensor \"%s\": data_offsets [%" PRIu64 ", %" PRIu64
				    "] end beyond the %" PRIu64 "-byte buffer", file, q, begin, end,
				    buf_len);
	if (end - begin != nbytes)
		return cfs_load_err(err, errlen, -EUCLEAN,
				    "%s: tensor \"%s\": data_offsets [%" PRIu64 ", %" PRIu64
				    "] but shape %s x %s is %" PRIu64 " bytes", file, q, begin, end,
				    fmt_shape(sh, sizeof(sh), t->shape, t->ndim),
				    cfs_dtype_name(t->dtype), nbytes);
	t->file_off = data_off + begin;
	return 0;
}

/* The non-empty tensors, in offset order, must cover [0, buf_len) of the
 * byte buffer with neither gap nor overlap. */
static int check_tiling(const struct cfs_tensor *t, size_t n, uint64_t data_off,
			uint64_t buf_len, const char *file, char *err, size_t errlen)
{
	const struct cfs_tensor *prev = NULL;
	char q[CFS_QUOTE_LEN], qp[CFS_QUOTE_LEN];
	uint64_t at = 0;

	for (size_t i = 0; i < n; i++) {
		uint64_t begin = t[i].file_off - data_off, end = begin + t[i].nbytes;

		if (!t[i].nbytes)
			continue;
		if (begin < at)
			return cfs_load_err(err, errlen, -EUCLEAN,
					    "%s: tensor \"%s\": data_offsets [%" PRIu64 ", %" PRIu64
					    "] overlap tensor \"%s\" [%" PRIu64 ", %" PRIu64 "]",
					    file, cfs_load_quote(q, sizeof(q), t[i].name), begin, end,
					    cfs_load_quote(qp, sizeof(qp), prev->name),
					    prev->file_off - data_off,
					    prev->file_off - data_off + prev->nbytes);
		if (begin > at)
			return cfs_load_err(err, errlen, -EUCLEAN,
					    "%s: tensor \"%s\": data_offsets [%" PRIu64 ", %" PRIu64
					    "] leave a hole of %" PRIu64 " bytes before them", file,
					    cfs_load_quote(q, sizeof(q), t[i].name), begin, end, begin - at);
		at = end;
		prev = &t[i];
	}
	if (at != buf_len)
		return cfs_load_err(err, errlen, -EUCLEAN,
				    "%s: byte buffer is %" PRIu64 " bytes but the tensors end at %"
				    PRIu64, file, buf_len, at);
	return 0;
}

/*
 * hdr: the first hdr_len bytes of the file, which must hold the 8-byte
 * length and the N bytes of JSON it announces (anything after them is
 * ignored; fewer is -EINVAL).  On success the tensors are appended to
 * *t / *n in offset order, each name a malloc'd string that the caller
 * frees (cfs_tensors_free()), and *data_off (may be NULL) is 8 + N; on
 * failure *t and *n are as they were.
 */
int cfs_safetensors_parse(const void *hdr, size_t hdr_len, uint64_t file_size, unsigned shard,
			  const char *file_name, struct cfs_tensor **t, size_t *n,
			  uint64_t *data_off, char *err, size_t errlen)
{
	struct cfs_tensor *tt = NULL, *grown;
	size_t total, count, nt = 0;
	uint64_t buf_len;
	const char *json;
	json_error_t jerr;
	json_t *root;
	void *it;
	int ret;

	if (!hdr || !t || !n || (*n && !*t) || !file_name)
		return -EINVAL;
	if (hdr_len < 8 && file_size >= 8)
		return cfs_load_err(err, errlen, -EINVAL, "%s: %zu header bytes given, 8 needed",
				    file_name, hdr_len);
	ret = cfs_safetensors_hdr_len(hdr, file_size, file_name, &total, err, errlen);
	if (ret < 0)
		return ret;
	if (hdr_len < total)
		return cfs_load_err(err, errlen, -EINVAL,
				    "%s: %zu header bytes given, %zu needed", file_name, hdr_len,
				    total);
	buf_len = file_size - total;

	/* The format says the header starts with '{': refuse leading
	 * whitespace like the reference reader does. */
	json = (const char *)hdr + 8;
	if (json[0] != '{')
		return cfs_load_err(err, errlen, -EUCLEAN, "%s: header is not a JSON object",
				    file_name);
	root = json_loadb(json, total - 8, JSON_REJECT_DUPLICATES, &jerr);
	if (!root)
		return cfs_load_err(err, errlen, json_err(&jerr),
				    "%s: header is not valid JSON: %s (byte %d)", file_name,
				    jerr.text, jerr.position);
	if (!json_is_object(root)) {
		ret = cfs_load_err(err, errlen, -EUCLEAN, "%s: header is not a JSON object",
				   file_name);
		goto out_json;
	}

	count = json_object_size(root);
	tt = calloc(count ? count : 1, sizeof(*tt));
	if (!tt) {
		ret = cfs_load_err(err, errlen, -ENOMEM, "%s: out of memory", file_name);
		goto out_json;
	}
	for (it = json_object_iter(root); it; it = json_object_iter_next(root, it)) {
		const char *name = json_object_iter_key(it);
		json_t *v = json_object_iter_value(it);
		struct cfs_tensor *x = &tt[nt];

		if (!strcmp(name, "__metadata__")) {
			ret = check_metadata(v, file_name, err, errlen);
			if (ret < 0)
				goto out_tensors;
			continue;
		}
		ret = parse_tensor(name, v, total, buf_len, file_name, x, err, errlen);
		if (ret < 0)
			goto out_tensors;
		x->shard = shard;
		x->name = strdup(name);
		if (!x->name) {
			ret = cfs_load_err(err, errlen, -ENOMEM, "%s: out of memory", file_name);
			goto out_tensors;
		}
		nt++;
	}

	qsort(tt, nt, sizeof(*tt), tensor_cmp);
	ret = check_tiling(tt, nt, total, buf_len, file_name, err, errlen);
	if (ret < 0)
		goto out_tensors;

	if (nt) {
		if (*n > SIZE_MAX / sizeof(*tt) - nt) {
			ret = cfs_load_err(err, errlen, -ENOMEM, "%s: out of memory", file_name);
			goto out_tensors;
		}
		grown = realloc(*t, (*n + nt) * sizeof(*tt));
		if (!grown) {
			ret = cfs_load_err(err, errlen, -ENOMEM, "%s: out of memory", file_name);
			goto out_tensors;
		}
		memcpy(grown + *n, tt, nt * sizeof(*tt));
		*t = grown;
		*n += nt;
	}
	free(tt);
	json_decref(root);
	if (data_off)
		*data_off = total;
	return 0;

out_tensors:
	cfs_tensors_free(tt, nt);
out_json:
	json_decref(root);
	return ret;
}

/* ---- model.safetensors.index.json -------------------------------------- */

static bool plain_file_name(const char *s)
{
	return *s && strcmp(s, ".") && strcmp(s, "..") && !strchr(s, '/');
}

void cfs_shard_index_free(char **files, size_t nfiles, char **map_names, unsigned *map_files,
			  size_t nmap)
{
	if (files)
		for (size_t i = 0; i < nfiles; i++)
			free(files[i]);
	free(files);
	if (map_names)
		for (size_t i = 0; i < nmap; i++)
			free(map_names[i]);
	free(map_names);
	free(map_files);
}

int cfs_shard_index_parse(const void *json, size_t len, char ***files, size_t *nfiles,
			  char ***map_names, unsigned **map_files, size_t *nmap,
			  char *err, size_t errlen)
{
	char q[CFS_QUOTE_LEN], qf[CFS_QUOTE_LEN];
	char **fv = NULL, **names = NULL;
	unsigned *idx = NULL;
	size_t nf = 0, nm = 0, count;
	json_t *root, *wm, *md, *seen = NULL;
	json_error_t jerr;
	void *it;
	int ret;

	if (!json || !files || !nfiles || !map_names || !map_files || !nmap)
		return -EINVAL;
	root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root)
		return cfs_load_err(err, errlen, json_err(&jerr),
				    "shard index is not valid JSON: %s (byte %d)", jerr.text,
				    jerr.position);
	if (!json_is_object(root)) {
		ret = cfs_load_err(err, errlen, -EUCLEAN, "shard index is not a JSON object");
		goto out_json;
	}
	md = json_object_get(root, "metadata");
	if (md && !json_is_object(md)) {
		ret = cfs_load_err(err, errlen, -EUCLEAN,
				   "shard index: \"metadata\" is not an object");
		goto out_json;
	}
	wm = json_object_get(root, "weight_map");
	if (!json_is_object(wm)) {
		ret = cfs_load_err(err, errlen, -EUCLEAN, "shard index: %s",
				   wm ? "\"weight_map\" is not an object" : "no \"weight_map\"");
		goto out_json;
	}
	count = json_object_size(wm);
	if (!count) {
		ret = cfs_load_err(err, errlen, -EUCLEAN, "shard index: \"weight_map\" is empty");
		goto out_json;
	}
	if (count > UINT32_MAX) {
		ret = cfs_load_err(err, errlen, -EUCLEAN, "shard index: too many tensors");
		goto out_json;
	}
	/* file name -> its index, for the distinct names in order of first
	 * appearance (a jansson object is a hash table, and keeps order) */
	seen = json_object();
	fv = calloc(count, sizeof(*fv));
	names = calloc(count, sizeof(*names));
	idx = calloc(count, sizeof(*idx));
	if (!seen || !fv || !names || !idx) {
		ret = cfs_load_err(err, errlen, -ENOMEM, "shard index: out of memory");
		goto out_free;
	}
	for (it = json_object_iter(wm); it; it = json_object_iter_next(wm, it)) {
		const char *name = json_object_iter_key(it), *file;
		json_t *v = json_object_iter_value(it), *known;
		size_t nlen = strlen(name);

		cfs_load_quote(q, sizeof(q), name);
		if (!nlen || nlen > NAME_MAX_LEN) {
			ret = cfs_load_err(err, errlen, -EUCLEAN,
					   "shard index: tensor \"%s\": name is %zu bytes", q, nlen);
			goto out_free;
		}
		if (!json_is_string(v)) {
			ret = cfs_load_err(err, errlen, -EUCLEAN,
					   "shard index: tensor \"%s\": file name is not a string", q);
			goto out_free;
		}
		file = json_string_value(v);
		if (!plain_file_name(file)) {
			ret = cfs_load_err(err, errlen, -EUCLEAN,
					   "shard index: tensor \"%s\": shard \"%s\" is not a plain "
					   "file name", q, cfs_load_quote(qf, sizeof(qf), file));
			goto out_free;
		}
		known = json_object_get(seen, file);
		if (known) {
			idx[nm] = (unsigned)json_integer_value(known);
		} else {
			if (json_object_set_new(seen, file, json_integer((json_int_t)nf)) < 0) {
				ret = cfs_load_err(err, errlen, -ENOMEM, "shard index: out of memory");
				goto out_free;
			}
			fv[nf] = strdup(file);
			if (!fv[nf]) {
				ret = cfs_load_err(err, errlen, -ENOMEM, "shard index: out of memory");
				goto out_free;
			}
			idx[nm] = (unsigned)nf++;
		}
		names[nm] = strdup(name);
		if (!names[nm]) {
			ret = cfs_load_err(err, errlen, -ENOMEM, "shard index: out of memory");
			goto out_free;
		}
		nm++;
	}
	json_decref(seen);
	json_decref(root);
	*files = fv;
	*nfiles = nf;
	*map_names = names;
	*map_files = idx;
	*nmap = nm;
	return 0;

out_free:
	cfs_shard_index_free(fv, nf, names, idx, nm);
	json_decref(seen);
out_json:
	json_decref(root);
	return ret;
}
