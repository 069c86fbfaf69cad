/* SPDX-License-Identifier: MIT */
/*
 * fuzz-index: libFuzzer target for the index parser.  Whatever the input,
 * cfs_index_open() must not crash; when it accepts an index, every
 * accessor over every inode must work and agree with the others (a failed
 * invariant aborts, which the fuzzer reports).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "format.h"
#include "fuzz.h"
#include "index.h"



static volatile unsigned sink;

static void check_dir(const struct cfs_index *idx, const struct cfs_inode *in)
{
	struct cfs_dirent de;
	uint64_t ino, pos;

	for (pos = 0;; pos++) {
		struct cfs_inode child;
		int r = cfs_index_dirent(idx, in->ino, pos, &de);

		FUZZ_ASSERT(r == 0 || r == 1);
		if (r == 0)
			break;
		FUZZ_ASSERT(de.name_len >= 1 && de.name_len <= CFS_NAME_MAX);
		FUZZ_ASSERT(!memchr(de.name, '/', de.name_len) && !memchr(de.name, 0, de.name_len));
		FUZZ_ASSERT(cfs_index_lookup(idx, in->ino, de.name, de.name_len, &ino) == 0);
		FUZZ_ASSERT(ino == de.ino);
		FUZZ_ASSERT(cfs_index_inode(idx, de.ino, &child) == 0);
		FUZZ_ASSERT(de.type == ((child.mode & S_IFMT) >> 12));
		if (S_ISDIR(child.mode))
			FUZZ_ASSERT(child.parent == in->ino);
		/* a name just past this one is absent or the next entry */
		if (de.name_len < CFS_NAME_MAX) {
			char name[CFS_NAME_MAX + 1];
			int lr;

			memcpy(name, de.name, de.name_len);
			name[de.name_len] = '\x01';
			lr = cfs_index_lookup(idx, in->ino, name, de.name_len + 1, &ino);
			FUZZ_ASSERT(lr == 0 || lr == -ENOENT);
		}
	}
	FUZZ_ASSERT(pos == in->nentries);
	FUZZ_ASSERT(cfs_index_lookup(idx, in->ino, "", 0, &ino) == -ENOENT);
	FUZZ_ASSERT(cfs_index_lookup(idx, in->ino, "a/b", 3, &ino) == -ENOENT);
}

static uint64_t run_blocks(uint64_t start, uint64_t end)
{
	uint64_t first = start / 4096, last = end / 4096 + (end % 4096 != 0);

	return (last - first) * 8;
}

static void check_file(const struct cfs_index *idx, const struct cfs_inode *in)
{
	struct cfs_extent e;
	struct cfs_chunk c;
	uint64_t next = 0, blocks = 0, run = UINT64_MAX; /* start of the open data run */
	uint32_t i, found;

	for (i = 0;; i++) {
		int r = cfs_index_extent(idx, in->ino, i, &e);

		FUZZ_ASSERT(r == 0 || r == 1);
		if (r == 0)
			break;
		FUZZ_ASSERT(e.file_off == next && e.len > 0);
		next = e.file_off + e.len;
		if (e.chunk != CFS_CHUNK_NONE) {
			FUZZ_ASSERT(cfs_index_chunk(idx, e.chunk, &c) == 0);
			FUZZ_ASSERT((uint64_t)e.chunk_off + e.len <= c.raw_size);
			if (run == UINT64_MAX)
				run = e.file_off;
		} else if (run != UINT64_MAX) {
			/* st_blocks: the 4 KiB blocks each data run touches */
			blocks += run_blocks(run, e.file_off);
			run = UINT64_MAX;
		}
		/* first, last and middle byte of each extent */
		FUZZ_ASSERT(cfs_index_extent_find(idx, in->ino, e.file_off, &found) == 0 && found == i);
		FUZZ_ASSERT(cfs_index_extent_find(idx, in->ino, next - 1, &found) == 0 && found == i);
		FUZZ_ASSERT(cfs_index_extent_find(idx, in->ino, e.file_off + e.len / 2, &found) == 0 &&
		       found == i);
	}
	if (run != UINT64_MAX)
		blocks += run_blocks(run, next);
	FUZZ_ASSERT(i == in->nentries && next == in->size && blocks == in->blocks);
	FUZZ_ASSERT(cfs_index_extent_find(idx, in->ino, in->size, &found) == 1);
	FUZZ_ASSERT(cfs_index_extent_find(idx, in->ino, UINT64_MAX, &found) == 1);
}

static void check_xattrs(const struct cfs_index *idx, const struct cfs_inode *in)
{
	struct cfs_xattr x, y;
	char name[CFS_XATTR_NAME_MAX + 1];
	uint32_t i;

	for (i = 0;; i++) {
		int r = cfs_index_xattr(idx, in->ino, i, &x);

		FUZZ_ASSERT(r == 0 || r == 1);
		if (r == 0)
			break;
		FUZZ_ASSERT(x.name_len >= 1 && x.name_len <= CFS_XATTR_NAME_MAX);
		FUZZ_ASSERT(x.value_len <= CFS_XATTR_VALUE_MAX);
		memcpy(name, x.name, x.name_len);
		name[x.name_len] = 0;
		FUZZ_ASSERT(cfs_index_getxattr(idx, in->ino, name, &y) == 0);
		FUZZ_ASSERT(y.name == x.name && y.value == x.value && y.value_len == x.value_len);
		/* touch every byte, for the sanitizers */
		for (size_t k = 0; k < x.value_len; k++)
			sink += ((const uint8_t *)x.value)[k];
	}
	FUZZ_ASSERT(i == in->nxattrs);
	FUZZ_ASSERT(cfs_index_getxattr(idx, in->ino, "", &y) == -ENODATA);
}

/* Hints: each list inside the inodes, increasing; the counts agree. */
static void check_hints(const struct cfs_index *idx, const struct cfs_index_info *info)
{
	uint64_t triggers = 0;

	for (uint64_t ino = 0; ino <= info->inode_count + 1; ino++) {
		uint32_t first = 0, n = cfs_index_hints(idx, ino, &first);
		uint64_t prev = 0;

		if (ino < 1 || ino > info->inode_count)
			FUZZ_ASSERT(n == 0);
		triggers += n > 0;
		FUZZ_ASSERT(n <= CFS_HINTS_LIST_MAX && (uint64_t)first + n <= info->hint_entries);
		for (uint32_t k = 0; k < n; k++) {
			uint64_t h = cfs_index_hint(idx, first + k);

			FUZZ_ASSERT(h > prev && h <= info->inode_count);
			prev = h;
		}
	}
	FUZZ_ASSERT(triggers == info->hint_triggers);
	FUZZ_ASSERT(cfs_index_hint(idx, info->hint_entries) == 0);
	FUZZ_ASSERT(!info->hint_triggers == !info->hint_lists && !info->hint_lists == !info->hint_entries);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cfs_index *idx;
	struct cfs_index_info info;
	struct cfs_inode in;
	struct cfs_chunk c;
	void *buf = malloc(size ? size : 1);
	uint64_t ino;

	if (!buf)
		return 0;
	memcpy(buf, data, size);
	if (cfs_index_open(buf, size, &idx)) {
		free(buf);
		return 0;
	}
	cfs_index_info(idx, &info);
	FUZZ_ASSERT(info.inode_count >= 1 && info.index_size == size);
	FUZZ_ASSERT(cfs_index_inode(idx, 0, &in) == -ENOENT);
	FUZZ_ASSERT(cfs_index_inode(idx, info.inode_count + 1, &in) == -ENOENT);
	FUZZ_ASSERT(cfs_index_inode(idx, CFS_ROOT_INO, &in) == 0 && S_ISDIR(in.mode) &&
	       in.parent == CFS_ROOT_INO);
	for (ino = 1; ino <= info.inode_count; ino++) {
		const char *target;
		size_t tlen;
		uint32_t i;

		FUZZ_ASSERT(cfs_index_inode(idx, ino, &in) == 0 && in.ino == ino);
		check_xattrs(idx, &in);
		if (S_ISDIR(in.mode)) {
			check_dir(idx, &in);
			FUZZ_ASSERT(cfs_index_extent(idx, ino, 0, (struct cfs_extent[1]){}) == -EINVAL);
		} else {
			FUZZ_ASSERT(cfs_index_dirent(idx, ino, 0, (struct cfs_dirent[1]){}) == -ENOTDIR);
			FUZZ_ASSERT(in.nlink >= 1 && in.parent == 0);
		}
		if (S_ISREG(in.mode))
			check_file(idx, &in);
		else
			FUZZ_ASSERT(cfs_index_extent_find(idx, ino, 0, &i) == -EINVAL);
		if (S_ISLNK(in.mode)) {
			FUZZ_ASSERT(cfs_index_readlink(idx, ino, &target, &tlen) == 0);
			FUZZ_ASSERT(tlen >= 1 && tlen <= CFS_SYMLINK_MAX && tlen == in.size);
			FUZZ_ASSERT(!memchr(target, 0, tlen));
		} else {
			FUZZ_ASSERT(cfs_index_readlink(idx, ino, &target, &tlen) == -EINVAL);
		}
	}
	for (uint64_t i = 0; i < info.chunk_count; i++) {
		FUZZ_ASSERT(cfs_index_chunk(idx, (uint32_t)i, &c) == 0);
		FUZZ_ASSERT(c.raw_size >= 1 && c.raw_size <= CFS_CHUNK_MAX_SIZE);
	}
	FUZZ_ASSERT(cfs_index_chunk(idx, (uint32_t)info.chunk_count, &c) == -ENOENT);
	check_hints(idx, &info);
	cfs_index_free(idx);
	return 0;
}
