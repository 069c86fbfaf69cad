/* SPDX-License-Identifier: MIT */
/*
 * fuzz-tar: libFuzzer target for cfs-pack's tar source (tools/pack_tar.c)
 * over libarchive: names ("..", absolute, long GNU and pax ones), hard
 * links to missing, later or linked members, symlinks, duplicates, a file
 * over a directory, devices, pax xattrs, sizes that lie, truncation, and
 * the small-file spool that feeds files in the builder's order.
 *
 * An input runs through the real pipeline into a temporary store
 * (fuzz-pack.h):
 *   1. as image layers through cfs_pack_tar_begin/layer/end, with the OCI
 *      whiteout rules: the input is cut after each end-of-archive marker
 *      (two zero blocks on a block boundary), so a concatenation of tars is
 *      a stack of layers.  That cut may fall inside a file of zeros, which
 *      only makes another odd input.
 *   2. when it is compressed, also as `cfs-pack FILE` reads it: the tar
 *      source on a memfd, through libarchive's decompression
 *      filters, whiteouts plain names.  A bare tar would meet the same
 *      entry code as in 1, at a quarter of the speed (the source's 1 MiB
 *      read block costs an mmap a run under ASan), so it is not run twice.
 * Nothing may crash, hang or leak; a failure must come with an error code
 * recorded by the source, and an accepted tar must give an index that
 * opens.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz-pack.h"

#define BLOCK 512
#define LAYERS_MAX 8

struct slice {
	const uint8_t *p;
	size_t len;
	bool done;
};

/* cfs_pack_read_fn: the whole slice at once, then the end. */
static ssize_t slice_read(void *ctx, const void **buf)
{
	struct slice *s = ctx;

	if (s->done)
		return 0;
	s->done = true;
	*buf = s->p;
	return (ssize_t)s->len;
}

static bool zero_block(const uint8_t *p)
{
	for (size_t i = 0; i < BLOCK; i++)
		if (p[i])
			return false;
	return true;
}

/* Length of the layer at the start of d: up to and including the first
 * end-of-archive marker, else all of it. */
static size_t layer_len(const uint8_t *d, size_t n)
{
	for (size_t off = 0; off + 2 * BLOCK <= n; off += BLOCK)
		if (zero_block(d + off) && zero_block(d + off + BLOCK))
			return off + 2 * BLOCK;
	return n;
}

/* The magics of the filters the tar source enables. */
static bool compressed(const uint8_t *d, size_t n)
{
	static const struct {
		const char *m;
		size_t len;
	} magic[] = {
		{ "\x1f\x8b", 2 },             /* gzip */
		{ "BZh", 3 },                  /* bzip2 */
		{ "\xfd" "7zXZ\0", 6 },        /* xz */
		{ "\x5d\0\0", 3 },             /* lzma */
		{ "\x28\xb5\x2f\xfd", 4 },     /* zstd */
		{ "\x04\x22\x4d\x18", 4 },     /* lz4 */
	};

	for (size_t i = 0; i < sizeof(magic) / sizeof(magic[0]); i++)
		if (n >= magic[i].len && !memcmp(d, magic[i].m, magic[i].len))
			return true;
	return false;
}

static void run_plain(const uint8_t *data, size_t size)
{
	int fd;

	fd = memfd_create("fuzz-tar", MFD_CLOEXEC);
	FUZZ_ASSERT(fd >= 0);
	FUZZ_ASSERT(size == 0 || cfs_write_full(fd, data, size) == 0);
	FUZZ_ASSERT(lseek(fd, 0, SEEK_SET) == 0);
	fuzz_pack_run(&cfs_pack_source_tar, "fuzz.tar", fd, NULL, NULL);
	close(fd);
}

/* The input of run_layers(), for the source below. */
static struct slice layers_input;

/* A source that applies layers_input as a stack of layers, as the image
 * sources do. */
static int pack_layers(struct cfs_pack_ctx *p, const char *arg, int fd)
{
	const uint8_t *data = layers_input.p;
	size_t size = layers_input.len, off = 0;
	struct cfs_pack_tar *t = NULL;
	int ret;

	(void)arg;
	(void)fd;
	ret = cfs_pack_tar_begin(p, true, &t);
	for (unsigned i = 0; ret == 0 && off < size && i < LAYERS_MAX; i++) {
		struct slice s = { data + off, layer_len(data + off, size - off), false };
		char name[32];

		snprintf(name, sizeof(name), "layer %u", i + 1);
		ret = cfs_pack_tar_layer(t, slice_read, &s, name);
		off += s.len;
		/* The padding of zero blocks after a marker belongs to no layer. */
		while (size - off >= BLOCK && zero_block(data + off))
			off += BLOCK;
	}
	return cfs_pack_tar_end(t, ret == 0) ?: ret;
}

static const struct cfs_pack_source layers_source = {
	.name = "image layers",
	.pack = pack_layers,
};

static void run_layers(const uint8_t *data, size_t size)
{
	layers_input = (struct slice){ data, size, false };
	fuzz_pack_run(&layers_source, "layers", -1, NULL, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_pack_quiet("fuzz-tar");
	run_layers(data, size);
	if (compressed(data, size))
		run_plain(data, size);
	return 0;
}
