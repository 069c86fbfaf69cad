/* SPDX-License-Identifier: MIT */
/*
 * cfs-mkmodel: writes a valid, deterministic safetensors model (one file,
 * or shards plus model.safetensors.index.json) with the tensor names and
 * shapes of a llama-style transformer, sized to about --size bytes of
 * tensor data, for the loader's tests and benchmarks.
 *
 * Tensor bytes are a pure function of (seed, tensor name, offset in the
 * tensor), counter-based so that any range can be regenerated to check a
 * load.  Floats are kept finite (|x| < 2) so that frameworks comparing
 * tensors never meet a NaN.  Plain C on purpose: it includes nothing from
 * the project, so it can be copied to any machine that benchmarks.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define PROG "cfs-mkmodel"
#define BUF_SIZE (8u << 20)
#define MAX_DIMS 4
#define NAME_LEN 96

enum dt { DT_BOOL, DT_U8, DT_I8, DT_F16, DT_BF16, DT_F32, DT_COUNT };

static const struct {
	const char *name;
	unsigned size;
	uint64_t keep;  /* bits of each 64-bit word kept (floats: finite values) */
} dts[DT_COUNT] = {
	[DT_BOOL] = { "BOOL", 1, 0x0101010101010101ull },
	[DT_U8] = { "U8", 1, ~0ull },
	[DT_I8] = { "I8", 1, ~0ull },
	/* the top exponent bit cleared: never Inf or NaN, |x| < 2 */
	[DT_F16] = { "F16", 2, ~0x4000400040004000ull },
	[DT_BF16] = { "BF16", 2, ~0x4000400040004000ull },
	[DT_F32] = { "F32", 4, ~0x4000000040000000ull },
};

struct tensor {
	char name[NAME_LEN];
	enum dt dt;
	unsigned ndim;
	uint64_t shape[MAX_DIMS];
	uint64_t nbytes;
	unsigned shard;
	uint64_t begin;  /* in its shard's byte buffer */
};

struct model {
	struct tensor *t;
	size_t n, cap;
};

/* dtypes of the parts of the model */
struct dtypes {
	enum dt embed, attn, mlp, norm, head;
};

struct shape_plan {
	uint64_t hidden, inter, layers, vocab;
};

/* The file being written, removed when a run dies half way. */
static char cur_tmp[4096];

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void die(const char *fmt, ...)
{
	va_list ap;

	if (cur_tmp[0])
		unlink(cur_tmp);

	fputs(PROG ": ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

/* ---- content ----------------------------------------------------------- */

static uint64_t mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t tensor_key(uint64_t seed, const char *name)
{
	uint64_t h = 0xcbf29ce484222325ull;  /* FNV-1a */

	for (const unsigned char *p = (const unsigned char *)name; *p; p++)
		h = (h ^ *p) * 0x100000001b3ull;
	return mix64(seed * 0x9e3779b97f4a7c15ull ^ h);
}

/* Word w of a tensor: byte o of the tensor is byte o % 8 of word o / 8,
 * little-endian. */
static inline uint64_t word(uint64_t key, uint64_t w, uint64_t keep)
{
	return mix64(key + (w + 1) * 0x9e3779b97f4a7c15ull) & keep;
}

static void fill(uint8_t *dst, size_t len, uint64_t key, uint64_t keep, uint64_t off)
{
	while (len && off % 8) {
		uint64_t v = word(key, off / 8, keep);
		size_t b = off % 8, k = 8 - b < len ? 8 - b : len;

		for (size_t i = 0; i < k; i++)
			dst[i] = (uint8_t)(v >> (8 * (b + i)));
		dst += k;
		off += k;
		len -= k;
	}
	for (; len >= 8; len -= 8, off += 8, dst += 8) {
		uint64_t v = htole64(word(key, off / 8, keep));

		memcpy(dst, &v, 8);
	}
	if (len) {
		uint64_t v = word(key, off / 8, keep);

		for (size_t i = 0; i < len; i++)
			dst[i] = (uint8_t)(v >> (8 * i));
	}
}

/* ---- the model's tensors ----------------------------------------------- */

static struct tensor *add(struct model *m, enum dt dt, unsigned ndim, const uint64_t *shape,
			  const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static struct tensor *add(struct model *m, enum dt dt, unsigned ndim, const uint64_t *shape,
			  const char *fmt, ...)
{
	struct tensor *t;
	va_list ap;
	uint64_t nbytes = dts[dt].size;

	if (m->n == m->cap) {
		size_t cap = m->cap ? 2 * m->cap : 256;

		t = realloc(m->t, cap * sizeof(*t));
		if (!t)
			die("out of memory");
		m->t = t;
		m->cap = cap;
	}
	t = &m->t[m->n++];
	memset(t, 0, sizeof(*t));
	va_start(ap, fmt);
	vsnprintf(t->name, sizeof(t->name), fmt, ap);
	va_end(ap);
	t->dt = dt;
	t->ndim = ndim;
	for (unsigned i = 0; i < ndim; i++) {
		t->shape[i] = shape[i];
		if (__builtin_mul_overflow(nbytes, shape[i], &nbytes))
			die("tensor %s: size overflows", t->name);
	}
	t->nbytes = nbytes;
	return t;
}

#define SHAPE(...) (sizeof((uint64_t[]){ __VA_ARGS__ }) / sizeof(uint64_t)), (uint64_t[]){ __VA_ARGS__ }

static uint64_t round_up(uint64_t x, uint64_t a)
{
	return (x + a - 1) / a * a;
}

static uint64_t inter_of(uint64_t h)
{
	/* llama: 8/3 of hidden, rounded up (4096 -> 11008) */
	return round_up(h * 8 / 3, h >= 256 ? 256 : 8);
}

/* Bytes of the --odd extras of layer i (see build()). */
static uint64_t odd_bytes(uint64_t h, uint64_t i)
{
	return 3 * (2 * (h / 8) + 1) + (2 * i + 7) + (h + 1);
}

static uint64_t layer_bytes(const struct dtypes *d, uint64_t h, bool odd)
{
	return 4 * h * h * dts[d->attn].size + 3 * h * inter_of(h) * dts[d->mlp].size +
	       2 * h * dts[d->norm].size + (odd ? odd_bytes(h, 0) : 0);
}

/*
 * The largest hidden size whose layers (hidden / 128 of them, at least 1)
 * leave room for a vocabulary of at least max(32, hidden / 4); the
 * vocabulary then takes up the rest, so the total lands within 2 * hidden
 * elements of the target.  Very large targets get more layers instead of
 * an unrealistic vocabulary.
 */
static bool plan(uint64_t target, const struct dtypes *d, bool odd, struct shape_plan *p)
{
	static const uint64_t hs[] = { 16384, 12288, 8192, 6144, 5120, 4096, 3072, 2560, 2048,
				       1536, 1024, 768, 512, 384, 256, 192, 128, 96, 64, 48,
				       32, 24, 16, 8 };

	for (size_t i = 0; i < sizeof(hs) / sizeof(hs[0]); i++) {
		uint64_t h = hs[i], layers = h / 128 ? h / 128 : 1;
		uint64_t lb = layer_bytes(d, h, odd), per_vocab = h * (dts[d->embed].size +
								      dts[d->head].size);
		uint64_t fixed = h * dts[d->norm].size, vmin = h / 4 > 32 ? h / 4 : 32, vocab;

		if (target < fixed + layers * lb)
			continue;
		vocab = (target - fixed - layers * lb) / per_vocab;
		if (vocab < vmin)
			continue;
		if (vocab > 256000) {
			vocab = 32000;
			layers = (target - fixed - vocab * per_vocab) / lb;
			vocab = (target - fixed - layers * lb) / per_vocab;
		}
		*p = (struct shape_plan){ h, inter_of(h), layers, vocab };
		return true;
	}
	*p = (struct shape_plan){ 8, inter_of(8), 1, 32 };
	return false;
}

static uint64_t parse_size(const char *opt, const char *s)
{
	char *end;
	uint64_t v, mul = 1;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *s == '-')
		die("%s: bad size \"%s\"", opt, s);
	switch (*end) {
	case 'k': case 'K': mul = 1ull << 10; end++; break;
	case 'm': case 'M': mul = 1ull << 20; end++; break;
	case 'g': case 'G': mul = 1ull << 30; end++; break;
	case 't': case 'T': mul = 1ull << 40; end++; break;
	default: break;
	}
	if (*end == 'i' && mul > 1)
		end++;
	if ((*end == 'b' || *end == 'B') && mul > 1)
		end++;
	if (*end || __builtin_mul_overflow(v, mul, &v))
		die("%s: bad size \"%s\"", opt, s);
	return v;
}

static void build(struct model *m, const struct shape_plan *p, const struct dtypes *d,
		  bool odd, bool zero, uint64_t huge, enum dt huge_dt)
{
	uint64_t h = p->hidden, in = p->inter;

	if (zero)
		add(m, d->embed, SHAPE(0), "model.embed_positions.weight");
	add(m, d->embed, SHAPE(p->vocab, h), "model.embed_tokens.weight");
	if (huge) {
		uint64_t elems = huge / dts[huge_dt].size, cols = 4096;

		while (cols > 1 && elems % cols)
			cols /= 2;
		if (cols > 1)
			add(m, huge_dt, SHAPE(elems / cols, cols), "model.huge_table.weight");
		else
			add(m, huge_dt, SHAPE(elems), "model.huge_table.weight");
	}
	for (uint64_t i = 0; i < p->layers; i++) {
		add(m, d->norm, SHAPE(h), "model.layers.%" PRIu64 ".input_layernorm.weight", i);
		add(m, d->attn, SHAPE(h, h), "model.layers.%" PRIu64 ".self_attn.q_proj.weight", i);
		/* odd byte counts push every later tensor off alignment */
		if (odd)
			add(m, DT_U8, SHAPE(3, 2 * (h / 8) + 1),
			    "model.layers.%" PRIu64 ".self_attn.q_proj.qzeros", i);
		if (zero && i == 0)
			add(m, DT_F32, SHAPE(0, h), "model.layers.%" PRIu64 ".self_attn.rope_cache", i);
		add(m, d->attn, SHAPE(h, h), "model.layers.%" PRIu64 ".self_attn.k_proj.weight", i);
		add(m, d->attn, SHAPE(h, h), "model.layers.%" PRIu64 ".self_attn.v_proj.weight", i);
		add(m, d->attn, SHAPE(h, h), "model.layers.%" PRIu64 ".self_attn.o_proj.weight", i);
		add(m, d->norm, SHAPE(h),
		    "model.layers.%" PRIu64 ".post_attention_layernorm.weight", i);
		add(m, d->mlp, SHAPE(in, h), "model.layers.%" PRIu64 ".mlp.gate_proj.weight", i);
		add(m, d->mlp, SHAPE(in, h), "model.layers.%" PRIu64 ".mlp.up_proj.weight", i);
		if (odd)
			add(m, DT_BOOL, SHAPE(2 * i + 7), "model.layers.%" PRIu64 ".mlp.act_mask", i);
		add(m, d->mlp, SHAPE(h, in), "model.layers.%" PRIu64 ".mlp.down_proj.weight", i);
		if (odd)
			add(m, DT_I8, SHAPE(h + 1), "model.layers.%" PRIu64 ".mlp.down_proj.qscale", i);
	}
	add(m, d->norm, SHAPE(h), "model.norm.weight");
	add(m, d->head, SHAPE(p->vocab, h), "lm_head.weight");
	if (zero)
		add(m, d->head, SHAPE(h, 0), "model.final_state");
}

/* Shards in file order, each at least one tensor, cut where the running
 * total passes k / nshards of the bytes. */
static void assign_shards(struct model *m, unsigned nshards, uint64_t total)
{
	uint64_t cum = 0, begin = 0;
	unsigned shard = 0;
	size_t in_shard = 0;

	for (size_t i = 0; i < m->n; i++) {
		struct tensor *t = &m->t[i];
		bool must = m->n - i == nshards - 1 - shard;

		if (shard + 1 < nshards && in_shard &&
		    (must || (double)cum + t->nbytes / 2.0 > (double)total * (shard + 1) / nshards)) {
			shard++;
			begin = 0;
			in_shard = 0;
		}
		t->shard = shard;
		t->begin = begin;
		begin += t->nbytes;
		cum += t->nbytes;
		in_shard++;
	}
}

static int name_cmp(const void *a, const void *b)
{
	const struct tensor *const *x = a, *const *y = b;

	return strcmp((*x)->name, (*y)->name);
}

/* ---- output ------------------------------------------------------------ */

struct out {
	int fd;
	const char *path;
	uint8_t *buf;
	size_t len;
};

static void out_flush(struct out *o)
{
	size_t done = 0;

	while (done < o->len) {
		ssize_t n = write(o->fd, o->buf + done, o->len - done);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("%s: write: %s", o->path, strerror(errno));
		}
		done += (size_t)n;
	}
	o->len = 0;
}

static void out_put(struct out *o, const void *p, size_t len)
{
	while (len) {
		size_t k = BUF_SIZE - o->len < len ? BUF_SIZE - o->len : len;

		memcpy(o->buf + o->len, p, k);
		o->len += k;
		p = (const uint8_t *)p + k;
		len -= k;
		if (o->len == BUF_SIZE)
			out_flush(o);
	}
}

/* A growing string for the JSON. */
struct str {
	char *p;
	size_t len, cap;
};

static void str_add(struct str *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void str_add(struct str *s, const char *fmt, ...)
{
	va_list ap;
	int n;

	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(s->p + s->len, s->cap - s->len, fmt, ap);
		va_end(ap);
		if (n < 0)
			die("out of memory");
		if ((size_t)n < s->cap - s->len)
			break;
		s->cap = (s->cap + (size_t)n + 1) * 2;
		s->p = realloc(s->p, s->cap);
		if (!s->p)
			die("out of memory");
	}
	s->len += (size_t)n;
}

static void str_init(struct str *s)
{
	s->cap = 4096;
	s->len = 0;
	s->p = malloc(s->cap);
	if (!s->p)
		die("out of memory");
	s->p[0] = 0;
}

static int out_open(const char *path, char *tmp, size_t tmp_size)
{
	int fd;

	if ((size_t)snprintf(tmp, tmp_size, "%s.tmp", path) >= tmp_size)
		die("%s: path too long", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		die("%s: %s", tmp, strerror(errno));
	snprintf(cur_tmp, sizeof(cur_tmp), "%s", tmp);
	return fd;
}

/* Written under NAME.tmp and renamed, so that an interrupted run never
 * leaves a file that looks complete.  No fsync: these are test fixtures,
 * and benchmarks want to make 8 GiB models quickly. */
static void out_close(int fd, const char *tmp, const char *path)
{
	if (close(fd) < 0)
		die("%s: close: %s", tmp, strerror(errno));
	if (rename(tmp, path) < 0)
		die("%s: rename: %s", path, strerror(errno));
	cur_tmp[0] = 0;
}

static void write_shard(const struct model *m, unsigned shard, const char *path, uint64_t seed,
			bool odd, uint8_t *buf)
{
	struct tensor **byname;
	struct str js;
	struct out o = { .path = path, .buf = buf };
	char tmp[4096];
	size_t k = 0, pad;
	uint8_t len8[8];
	uint64_t n;

	byname = calloc(m->n, sizeof(*byname));
	if (!byname)
		die("out of memory");
	for (size_t i = 0; i < m->n; i++)
		if (m->t[i].shard == shard)
			byname[k++] = &m->t[i];
	/* keys in name order, as the reference writer does: not the data order */
	qsort(byname, k, sizeof(*byname), name_cmp);
	str_init(&js);
	str_add(&js, "{\"__metadata__\":{\"format\":\"pt\"}");
	for (size_t i = 0; i < k; i++) {
		const struct tensor *t = byname[i];

		str_add(&js, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", t->name, dts[t->dt].name);
		for (unsigned d = 0; d < t->ndim; d++)
			str_add(&js, "%s%" PRIu64, d ? "," : "", t->shape[d]);
		str_add(&js, "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", t->begin,
			t->begin + t->nbytes);
	}
	str_add(&js, "}");
	free(byname);
	/* padded with spaces to a multiple of 8 (the reference writer's
	 * alignment), or with --odd to 5 mod 8 so nothing is aligned */
	pad = odd ? (13 - js.len % 8) % 8 : (8 - js.len % 8) % 8;
	for (size_t i = 0; i < pad; i++)
		str_add(&js, " ");
	n = js.len;
	for (int i = 0; i < 8; i++)
		len8[i] = (uint8_t)(n >> (8 * i));

	o.fd = out_open(path, tmp, sizeof(tmp));
	out_put(&o, len8, sizeof(len8));
	out_put(&o, js.p, js.len);
	free(js.p);
	for (size_t i = 0; i < m->n; i++) {
		const struct tensor *t = &m->t[i];
		uint64_t key = tensor_key(seed, t->name), off = 0;

		if (t->shard != shard)
			continue;
		while (off < t->nbytes) {
			size_t room = BUF_SIZE - o.len;
			size_t len = t->nbytes - off < room ? (size_t)(t->nbytes - off) : room;

			fill(o.buf + o.len, len, key, dts[t->dt].keep, off);
			o.len += len;
			off += len;
			if (o.len == BUF_SIZE)
				out_flush(&o);
		}
	}
	out_flush(&o);
	out_close(o.fd, tmp, path);
}

static void write_index(const struct model *m, unsigned nshards, const char *dir,
			uint64_t total)
{
	struct tensor **byname = calloc(m->n, sizeof(*byname));
	struct str js;
	char path[4096], tmp[4096];
	int fd;

	if (!byname)
		die("out of memory");
	for (size_t i = 0; i < m->n; i++)
		byname[i] = &m->t[i];
	qsort(byname, m->n, sizeof(*byname), name_cmp);
	str_init(&js);
	str_add(&js, "{\n  \"metadata\": {\n    \"total_size\": %" PRIu64 "\n  },\n"
		"  \"weight_map\": {\n", total);
	for (size_t i = 0; i < m->n; i++)
		str_add(&js, "    \"%s\": \"model-%05u-of-%05u.safetensors\"%s\n", byname[i]->name,
			byname[i]->shard + 1, nshards, i + 1 < m->n ? "," : "");
	str_add(&js, "  }\n}\n");
	free(byname);
	if ((size_t)snprintf(path, sizeof(path), "%s/model.safetensors.index.json", dir) >=
	    sizeof(path))
		die("%s: path too long", dir);
	fd = out_open(path, tmp, sizeof(tmp));
	{
		struct out o = { .fd = fd, .path = path, .buf = (uint8_t *)js.p, .len = js.len };

		out_flush(&o);
	}
	free(js.p);
	out_close(fd, tmp, path);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: " PROG " [--size BYTES] [--shards N] [--dtype F16|BF16|F32|I8|mixed]\n"
		"                   [--seed S] [--odd] [--zero] [--huge-tensor BYTES] OUTDIR_OR_FILE\n"
		"Writes a deterministic llama-shaped safetensors model of about BYTES of tensor\n"
		"data (K/M/G/T suffixes; default 16M).  --shards N > 1 writes\n"
		"model-0000k-of-0000N.safetensors and model.safetensors.index.json into OUTDIR\n"
		"(made if missing); N = 1 writes model.safetensors into OUTDIR, or FILE.\n"
		"  --odd          header length and some tensor sizes not multiples of 8\n"
		"  --zero         add zero-size tensors (first, after layer 0's q_proj, last)\n"
		"  --huge-tensor  add one tensor of BYTES bytes (counted in --size)\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "size", required_argument, NULL, 's' },
		{ "shards", required_argument, NULL, 'n' },
		{ "dtype", required_argument, NULL, 'd' },
		{ "seed", required_argument, NULL, 'S' },
		{ "odd", no_argument, NULL, 'o' },
		{ "zero", no_argument, NULL, 'z' },
		{ "huge-tensor", required_argument, NULL, 'H' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct dtypes d = { DT_F16, DT_F16, DT_F16, DT_F16, DT_F16 };
	const char *dtype = "F16", *outp;
	uint64_t size = 16ull << 20, seed = 0, huge = 0, total = 0, rest;
	unsigned long nshards = 1;
	bool odd = false, zero = false, is_dir = false;
	struct shape_plan p;
	struct model m = { 0 };
	struct stat st;
	enum dt huge_dt;
	uint8_t *buf;
	char *end;
	int c;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			size = parse_size("--size", optarg);
			break;
		case 'n':
			errno = 0;
			nshards = strtoul(optarg, &end, 10);
			if (errno || end == optarg || *end || nshards < 1 || nshards > 99999)
				die("--shards: \"%s\" is not a number from 1 to 99999", optarg);
			break;
		case 'd':
			dtype = optarg;
			break;
		case 'S':
			errno = 0;
			seed = strtoull(optarg, &end, 0);
			if (errno || end == optarg || *end)
				die("--seed: \"%s\" is not a number", optarg);
			break;
		case 'o':
			odd = true;
			break;
		case 'z':
			zero = true;
			break;
		case 'H':
			huge = parse_size("--huge-tensor", optarg);
			if (!huge)
				die("--huge-tensor: must be more than 0 bytes");
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind + 1 != argc) {
		usage(stderr);
		return 2;
	}
	outp = argv[optind];
	if (!*outp)
		die("the output path is empty");

	if (!strcmp(dtype, "F16"))
		d = (struct dtypes){ DT_F16, DT_F16, DT_F16, DT_F16, DT_F16 };
	else if (!strcmp(dtype, "BF16"))
		d = (struct dtypes){ DT_BF16, DT_BF16, DT_BF16, DT_BF16, DT_BF16 };
	else if (!strcmp(dtype, "F32"))
		d = (struct dtypes){ DT_F32, DT_F32, DT_F32, DT_F32, DT_F32 };
	else if (!strcmp(dtype, "I8"))
		d = (struct dtypes){ DT_I8, DT_I8, DT_I8, DT_F16, DT_I8 };  /* float norms */
	else if (!strcmp(dtype, "mixed"))
		d = (struct dtypes){ DT_BF16, DT_BF16, DT_F16, DT_F32, DT_F32 };
	else
		die("--dtype: \"%s\" is not F16, BF16, F32, I8 or mixed", dtype);
	huge_dt = huge % dts[d.attn].size ? DT_U8 : d.attn;

	rest = huge < size ? size - huge : 0;
	if (!plan(rest, &d, odd, &p) && !huge)
		die("--size: %" PRIu64 " bytes is below the smallest model", size);
	build(&m, &p, &d, odd, zero, huge, huge_dt);
	for (size_t i = 0; i < m.n; i++)
		total += m.t[i].nbytes;
	if (nshards > m.n)
		die("--shards: %lu shards for %zu tensors", nshards, m.n);
	assign_shards(&m, (unsigned)nshards, total);

	if (stat(outp, &st) == 0) {
		is_dir = S_ISDIR(st.st_mode);
	} else if (errno != ENOENT) {
		die("%s: %s", outp, strerror(errno));
	} else if (nshards > 1 || outp[strlen(outp) - 1] == '/') {
		if (mkdir(outp, 0755) < 0)
			die("%s: mkdir: %s", outp, strerror(errno));
		is_dir = true;
	}
	if (nshards > 1 && !is_dir)
		die("%s: not a directory (--shards needs one)", outp);

	/* refuse up front rather than fill the disk and fail at the end */
	{
		char dir[4096];
		struct statvfs vfs;
		const char *slash = strrchr(outp, '/');

		if (is_dir)
			snprintf(dir, sizeof(dir), "%s", outp);
		else if (slash)
			snprintf(dir, sizeof(dir), "%.*s", (int)(slash - outp + 1), outp);
		else
			snprintf(dir, sizeof(dir), ".");
		if (statvfs(dir, &vfs) == 0 &&
		    (uint64_t)vfs.f_bavail * vfs.f_frsize < total + (total >> 6) + (1u << 20))
			die("%s: %" PRIu64 " bytes needed, %" PRIu64 " free", dir, total,
			    (uint64_t)vfs.f_bavail * vfs.f_frsize);
	}

	buf = malloc(BUF_SIZE);
	if (!buf)
		die("out of memory");
	if (nshards == 1) {
		char path[4096];

		if ((size_t)snprintf(path, sizeof(path), "%s%s", outp,
				     is_dir ? "/model.safetensors" : "") >= sizeof(path))
			die("%s: path too long", outp);
		write_shard(&m, 0, path, seed, odd, buf);
	} else {
		for (unsigned k = 0; k < nshards; k++) {
			char path[4096];

			if ((size_t)snprintf(path, sizeof(path), "%s/model-%05u-of-%05lu.safetensors",
					     outp, k + 1, nshards) >= sizeof(path))
				die("%s: path too long", outp);
			write_shard(&m, k, path, seed, odd, buf);
		}
		write_index(&m, (unsigned)nshards, outp, total);
	}
	printf(PROG ": %s: %lu file%s, %zu tensors, %" PRIu64 " bytes (hidden %" PRIu64
	       ", layers %" PRIu64 ", vocab %" PRIu64 ", %s)\n", outp, nshards,
	       nshards > 1 ? "s" : "", m.n, total, p.hidden, p.layers, p.vocab, dtype);
	free(buf);
	free(m.t);
	return 0;
}
