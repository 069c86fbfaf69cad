/* SPDX-License-Identifier: MIT */
/*
 * fuzz-elf: libFuzzer target for the ELF reader cfs-pack runs on every
 * file it packs (lib/format/elf.c).  Whatever the input, cfs_elf_parse()
 * must return 0, -EINVAL or -ENOEXEC, and on 0 every string must lie
 * inside the input without a NUL; the one-pass scanner, fed the input in
 * pieces, must agree with it whenever its head held the whole input.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "elf.h"
#include "fuzz.h"



static void check_str(const struct cfs_elf_str *s, const uint8_t *data, size_t size)
{
	if (!s->len)
		return;
	FUZZ_ASSERT(s->len <= CFS_ELF_STR_MAX);
	FUZZ_ASSERT((const uint8_t *)s->s >= data && (const uint8_t *)s->s + s->len <= data + size);
	FUZZ_ASSERT(!memchr(s->s, '\0', s->len));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cfs_elf_part part = { 0, data, size };
	struct cfs_elf_deps d, e;
	struct cfs_elf_scan *s;
	size_t step = size ? (size_t)data[size - 1] * 13 + 1 : 1;
	int r = cfs_elf_parse(&part, 1, &d), rs;

	FUZZ_ASSERT(r == 0 || r == -EINVAL || r == -ENOEXEC);
	if (r == 0) {
		FUZZ_ASSERT(d.nneeded <= CFS_ELF_NEEDED_MAX);
		check_str(&d.interp, data, size);
		check_str(&d.runpath, data, size);
		for (uint32_t i = 0; i < d.nneeded; i++)
			check_str(&d.needed[i], data, size);
	}
	if (cfs_elf_scan_new(1u << 20, &s))
		return 0;
	cfs_elf_scan_begin(s, size);
	for (size_t off = 0; off < size; off += step)
		cfs_elf_scan_data(s, off, data + off, size - off < step ? size - off : step);
	rs = cfs_elf_scan_end(s, &e);
	FUZZ_ASSERT(rs == 0 || rs == -EINVAL || rs == -ENOEXEC || rs == -ENOMEM);
	if (size <= (1u << 20) && rs != -ENOMEM) {
		FUZZ_ASSERT(rs == r);
		if (r == 0)
			FUZZ_ASSERT(e.nneeded == d.nneeded && e.interp.len == d.interp.len &&
			       e.runpath.len == d.runpath.len);
	}
	cfs_elf_scan_free(s);
	return 0;
}
