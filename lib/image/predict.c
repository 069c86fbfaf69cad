/* SPDX-License-Identifier: MIT */
/*
 * What a start-up will read next, for an image nobody profiled, from the
 * tree alone (docs/FORMAT.md, "Prediction without a profile").  A
 * program's start-up opens and reads files one after another, so each
 * first read of a file is one more round trip to the store unless it was
 * fetched before it was asked for.  Three guesses cut those rounds:
 *
 *  - a file that is read at all is read whole (an importer reads a module
 *    entirely; a loader maps a shared object and faults it in piece by
 *    piece): its first read queues the rest of it, up to a cap, and a
 *    shared object whatever its size;
 *  - a directory one file was read from will have its other small files
 *    read too (a package's modules, a locale's files): its first read
 *    queues the group chunks of the directory's small files, and in a
 *    Python package's __pycache__, the compiled modules of its subpackages;
 *  - what is read next lies near what was read last: the stream
 *    (prefetch.c) fetches the subtree of the directory of the latest first
 *    read, then its parent's, widening to the root;
 *  - a program or library that is loaded has its interpreter and needed
 *    libraries loaded next, wherever they lie: its first read queues the
 *    files the image's hints list for it (cfs-pack found them in its ELF
 *    headers, docs/FORMAT.md "Hints"), whole like a shared object.
 *
 * The packer numbers inodes depth first with entries in name order, so a
 * subtree is one range of inode numbers and its small files share group
 * chunks in that order.  The maps are built once when prefetch starts: one
 * pass over the directories, 8 bytes per inode.  Guesses only
 * ever queue fetches on the pool; a reader never waits for them.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cache.h"
#include "format.h"
#include "image_i.h"
#include "index.h"
#include "util.h"

/* A file's first read queues all of it up to this size: a module, a
 * config file, a small library.  Bigger ones are read whole only when
 * they are shared objects (below); the rest are left to sequential
 * readahead and the stream, so that one look into a big data file does
 * not fetch gigabytes. */
#define PREDICT_WHOLE_MAX (64ull << 20)
/* A shared object is mapped and faulted in page by page in no order
 * readahead can follow, and a loader touches most of it: whole, up to
 * this. */
#define PREDICT_ELF_MAX (1ull << 30)
/* Files under this size are the ones the packer groups. */
#define PREDICT_SMALL_MAX (64u << 10)
/* A package's first compiled module looks for its subpackages' in this
 * many directories below it at most (the walk holds the pool's lock). */
#define PREDICT_PKG_DIRS 4096

bool cfs_predict_bit_set(_Atomic uint64_t *map, uint64_t i)
{
	uint64_t bit = 1ull << (i % 64);

	return atomic_fetch_or_explicit(&map[i / 64], bit, memory_order_relaxed) & bit;
}

bool cfs_predict_bit_test(_Atomic uint64_t *map, uint64_t i)
{
	return atomic_load_explicit(&map[i / 64], memory_order_relaxed) & (1ull << (i % 64));
}

void cfs_predict_free(struct cfs_predict *p)
{
	free(p->parent);
	free(p->subtree_end);
	free(p->touched);
	free(p->packages);
	free(p->queued);
	memset(p, 0, sizeof(*p));
}

int cfs_predict_init(struct cfs_image *img, struct cfs_predict *p)
{
	struct cfs_index_info info;
	uint64_t n;

	cfs_index_info(img->idx, &info);
	memset(p, 0, sizeof(*p));
	n = info.inode_count;
	if (n > UINT32_MAX)
		return 0; /* no guesses: the maps hold 32-bit numbers */
	p->inodes = n;
	p->chunks = info.chunk_count;
	p->parent = calloc(n, sizeof(*p->parent));
	p->subtree_end = calloc(n, sizeof(*p->subtree_end));
	p->touched = calloc(n / 64 + 1, sizeof(*p->touched));
	p->packages = calloc(n / 64 + 1, sizeof(*p->packages));
	p->queued = calloc(p->chunks / 64 + 1, sizeof(*p->queued));
	if (!p->parent || !p->subtree_end || !p->touched || !p->packages || !p->queued) {
		cfs_predict_free(p);
		return -ENOMEM;
	}
	/* From the last inode back: a directory's children come after it in
	 * a depth-first numbering, so their subtrees are known by then, and
	 * the directory that names a hard-linked file first (the smallest
	 * number) writes its parent last.  A child numbered before its
	 * directory (not depth first) is left out of the range. */
	for (uint64_t ino = n; ino >= 1; ino--) {
		struct cfs_inode in;
		uint64_t end = ino;

		if (cfs_index_inode(img->idx, ino, &in) == 0 && S_ISDIR(in.mode)) {
			struct cfs_dirent de;

			for (uint64_t pos = 0; cfs_index_dirent(img->idx, ino, pos, &de) == 1; pos++) {
				if (de.ino < 1 || de.ino > n)
					continue;
				p->parent[de.ino - 1] = (uint32_t)ino;
				if (de.ino > ino && p->subtree_end[de.ino - 1] > end)
					end = p->subtree_end[de.ino - 1];
			}
		}
		p->subtree_end[ino - 1] = (uint32_t)end;
	}
	return 0;
}

/* The name under which dir lists ino: true and *de filled, or false. */
static bool name_in(struct cfs_image *img, uint64_t dir, uint64_t ino, struct cfs_dirent *de)
{
	for (uint64_t pos = 0; cfs_index_dirent(img->idx, dir, pos, de) == 1; pos++)
		if (de->ino == ino)
			return true;
	return false;
}

/* Whether ino is named like a shared object in dir: "*.so" or "*.so.*". */
static bool named_shared_object(struct cfs_image *img, uint64_t dir, uint64_t ino)
{
	struct cfs_dirent de;

	if (!name_in(img, dir, ino, &de))
		return false;
	for (size_t i = 0; i + 3 <= de.name_len; i++)
		if (!memcmp(de.name + i, ".so", 3) && (i + 3 == de.name_len || de.name[i + 3] == '.'))
			return true;
	return false;
}

/* Queues chunk ci at level unless a hint or the stream queued it before,
 * or it is skip: the chunk the read that made the guess fetches itself, in
 * the foreground, which a pool thread must not take over in the
 * background.  Whether it queued it.  With ra->lock held. */
static bool queue_chunk(struct cfs_image *img, enum ra_level level, uint32_t ci, uint32_t skip)
{
	struct ra_pool *ra = img->ra;
	struct cfs_predict *p = &img->pred;

	if (ci == CFS_CHUNK_NONE || ci == skip || ci >= p->chunks ||
	    cfs_predict_bit_test(p->queued, ci))
		return false;
	if (!cfs_image_ra_push(ra, level, ci, false)) {
		stat_add(&img->ra_dropped, 1);
		return false;
	}
	cfs_predict_bit_set(p->queued, ci);
	stat_add(&img->hint_chunks, 1);
	return true;
}

/* The chunks of file in from off to its end, then from its start to off:
 * the read at off fetches its own chunk, and goes on forward.  How many
 * it queued. */
static uint64_t queue_file(struct cfs_image *img, enum ra_level level, const struct cfs_inode *in,
			   uint64_t off, uint32_t skip)
{
	struct cfs_extent e;
	uint32_t first = 0, i;
	uint64_t n = 0;

	if (cfs_index_file_extent_find(img->idx, in, off, &first) != 0)
		first = 0;
	for (i = first; cfs_index_file_extent(img->idx, in, i, &e) == 1; i++)
		n += queue_chunk(img, level, e.chunk, skip);
	for (i = 0; i < first && cfs_index_file_extent(img->idx, in, i, &e) == 1; i++)
		n += queue_chunk(img, level, e.chunk, skip);
	return n;
}

/* The small files of directory dir, in entry order, which is the order
 * the packer grouped them in. */
static void queue_dir(struct cfs_image *img, enum ra_level level, uint64_t dir, uint32_t skip)
{
	struct cfs_dirent de;

	for (uint64_t pos = 0; cfs_index_dirent(img->idx, dir, pos, &de) == 1; pos++) {
		struct cfs_inode in;

		if (de.type != (S_IFREG >> 12) || cfs_index_inode(img->idx, de.ino, &in) < 0 ||
		    !S_ISREG(in.mode) || in.size >= PREDICT_SMALL_MAX || !in.size)
			continue;
		queue_file(img, level, &in, 0, skip);
	}
}

/* Python's compiled modules: importing a package imports most of its
 * subpackages, one directory after another, each a round trip.  So the
 * first read in a package's __pycache__ queues the __pycache__ files of
 * every package below it (not the sources, which an import only stats
 * while the compiled module is fresh), within PREDICT_PKG_DIRS
 * directories of the subtree. */
static void queue_package(struct cfs_image *img, uint64_t cache_dir, uint32_t skip)
{
	struct cfs_predict *p = &img->pred;
	uint64_t pkg = p->parent[cache_dir - 1], end, seen = 0;
	struct cfs_dirent de;

	if (!pkg || cfs_predict_bit_set(p->packages, pkg - 1) || !name_in(img, pkg, cache_dir, &de) ||
	    de.name_len != 11 || memcmp(de.name, "__pycache__", 11))
		return;
	end = p->subtree_end[pkg - 1];
	for (uint64_t d = pkg + 1; d <= end && seen < PREDICT_PKG_DIRS; d++) {
		struct cfs_inode in;
		uint64_t c;

		if (cfs_index_inode(img->idx, d, &in) < 0 || !S_ISDIR(in.mode))
			continue;
		seen++;
		if (cfs_index_lookup(img->idx, d, "__pycache__", 11, &c) == 0 && c >= 1 &&
		    c <= p->inodes && !cfs_predict_bit_set(p->touched, c - 1))
			queue_dir(img, RA_AHEAD, c, skip);
	}
}

/* The files the image's hints name for ino (for an ELF file, what its
 * loading opens), each whole up to the shared object cap, at the level a
 * first read of it would queue it; files read already queued their own. */
static void queue_hints(struct cfs_image *img, uint64_t ino, uint32_t skip)
{
	struct cfs_predict *p = &img->pred;
	uint32_t first, n = cfs_index_hints(img->idx, ino, &first);
	uint64_t queued = 0;

	for (uint32_t k = 0; k < n; k++) {
		uint64_t h = cfs_index_hint(img->idx, first + k);
		struct cfs_inode hin;

		if (h < 1 || h > p->inodes || cfs_predict_bit_test(p->touched, h - 1) ||
		    cfs_index_inode(img->idx, h, &hin) < 0 || !S_ISREG(hin.mode) ||
		    hin.size > PREDICT_ELF_MAX)
			continue;
		queued += queue_file(img, hin.size < PREDICT_SMALL_MAX ? RA_NEAR : RA_AHEAD, &hin, 0,
				     skip);
	}
	stat_add(&img->elf_hint_chunks, queued);
}

void cfs_predict_touch(struct cfs_image *img, const struct cfs_inode *in, uint64_t off)
{
	struct ra_pool *ra = img->ra;
	uint32_t skip = CFS_CHUNK_NONE, i;
	struct cfs_predict *p;
	struct cfs_extent e;
	uint64_t dir;

	if (!ra || !atomic_load_explicit(&img->hints, memory_order_acquire))
		return;
	p = &img->pred;
	if (!p->inodes || in->ino < 1 || in->ino > p->inodes ||
	    cfs_predict_bit_test(p->touched, in->ino - 1) ||
	    cfs_predict_bit_set(p->touched, in->ino - 1))
		return;
	dir = p->parent[in->ino - 1];
	if (cfs_index_file_extent_find(img->idx, in, off, &i) == 0 &&
	    cfs_index_file_extent(img->idx, in, i, &e) == 1)
		skip = e.chunk;

	pthread_mutex_lock(&ra->lock);
	if (in->size <= PREDICT_WHOLE_MAX)
		queue_file(img, in->size < PREDICT_SMALL_MAX ? RA_NEAR : RA_AHEAD, in, off, skip);
	else if (dir && in->size <= PREDICT_ELF_MAX && named_shared_object(img, dir, in->ino))
		queue_file(img, RA_AHEAD, in, off, skip);
	queue_hints(img, in->ino, skip);
	if (dir && !cfs_predict_bit_set(p->touched, dir - 1)) {
		queue_dir(img, RA_NEAR, dir, skip);
		queue_package(img, dir, skip);
	}
	if (dir)
		atomic_store_explicit(&p->focus, (uint32_t)dir, memory_order_relaxed);
	cfs_image_ra_wake(ra);
	/* The stream looks at the focus whenever it wakes. */
	if (ra->pf_running)
		pthread_cond_broadcast(&ra->room);
	pthread_mutex_unlock(&ra->lock);
}
