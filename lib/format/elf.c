/* SPDX-License-Identifier: MIT */
/*
 * Reading what an ELF file loads (elf.h).  A loader opens a file, reads
 * its ELF and program headers, maps PT_INTERP's interpreter for an
 * executable, then walks PT_DYNAMIC: DT_NEEDED names in the string table
 * that DT_STRTAB points to, by virtual address, which the PT_LOAD
 * segments map back to file offsets.  This follows the same path over
 * bytes it does not trust: each read goes through part_at(), which hands
 * out a pointer only when the whole range lies inside one part.
 *
 * The scanner keeps a packer's feed of a file: the head (ELF headers, and
 * in every linker's layout the dynamic string table, which GNU ld puts in
 * the first, read-only segment, up to a few MiB into a big library) and
 * the dynamic section, which sits in the writable segment near the end.
 * A file that does not start with the ELF magic costs its first bytes'
 * copy and nothing more.
 */
#include <endian.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "elf.h"
#include "util.h"

#define EHDR_SIZE 64u
#define PHDR_SIZE 56u
#define DYN_SIZE 16u
#define PT_LOAD 1u
#define PT_DYNAMIC 2u
#define PT_INTERP 3u
#define DT_NULL 0u
#define DT_NEEDED 1u
#define DT_STRTAB 5u
#define DT_STRSZ 10u
#define DT_RPATH 15u
#define DT_RUNPATH 29u
#define ET_EXEC 2u
#define ET_DYN 3u
/* More program headers or dynamic entries than any linker writes. */
#define PHDR_MAX 256u
#define DYN_MAX 4096u
/* The scanner keeps a dynamic section up to this size. */
#define SCAN_DYN_MAX (64u << 10)

struct phdr {
	uint32_t type;
	uint64_t offset, vaddr, filesz;
};

/* The bytes from off to the end of the part that holds off: a pointer and
 * *avail, or NULL. */
static const uint8_t *part_span(const struct cfs_elf_part *parts, size_t nparts, uint64_t off,
				uint64_t *avail)
{
	for (size_t i = 0; i < nparts; i++) {
		const struct cfs_elf_part *pt = &parts[i];

		if (off >= pt->off && off - pt->off < pt->len) {
			*avail = pt->len - (off - pt->off);
			return (const uint8_t *)pt->p + (off - pt->off);
		}
	}
	return NULL;
}

/* [off, off + len) when one part holds all of it, else NULL. */
static const uint8_t *part_at(const struct cfs_elf_part *parts, size_t nparts, uint64_t off,
			      uint64_t len)
{
	uint64_t avail;
	const uint8_t *p = part_span(parts, nparts, off, &avail);

	return p && len <= avail ? p : NULL;
}

static uint16_t get16(const uint8_t *p)
{
	uint16_t v;

	memcpy(&v, p, sizeof(v));
	return le16toh(v);
}

static uint32_t get32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
	return le32toh(v);
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
	return le64toh(v);
}

/* The file offset of virtual address addr, through the PT_LOAD segment
 * whose file bytes hold it: 0 or -EINVAL. */
static int vaddr_off(const struct phdr *ph, size_t n, uint64_t addr, uint64_t *off)
{
	for (size_t i = 0; i < n; i++) {
		if (ph[i].type != PT_LOAD || addr < ph[i].vaddr || addr - ph[i].vaddr >= ph[i].filesz)
			continue;
		if (__builtin_add_overflow(ph[i].offset, addr - ph[i].vaddr, off))
			return -EINVAL;
		return 0;
	}
	return -EINVAL;
}

/* The NUL-terminated string at table offset at of the string table
 * [tab, tab + tabsz) of the file: 0 or -EINVAL (empty, too long, or not
 * ended inside the table and the part that holds its start). */
static int str_get(const struct cfs_elf_part *parts, size_t nparts, uint64_t tab, uint64_t tabsz,
		   uint64_t at, struct cfs_elf_str *out)
{
	uint64_t off, avail;
	const uint8_t *p, *nul;

	if (at >= tabsz || __builtin_add_overflow(tab, at, &off))
		return -EINVAL;
	p = part_span(parts, nparts, off, &avail);
	if (!p)
		return -EINVAL;
	avail = CFS_MIN(avail, CFS_MIN(tabsz - at, (uint64_t)CFS_ELF_STR_MAX + 1));
	nul = memchr(p, '\0', (size_t)avail);
	if (!nul || nul == p)
		return -EINVAL;
	out->s = (const char *)p;
	out->len = (size_t)(nul - p);
	return 0;
}

static int read_phdrs(const struct cfs_elf_part *parts, size_t nparts, const uint8_t *eh,
		      struct phdr *ph, size_t *nph)
{
	uint64_t phoff = get64(eh + 32);
	uint16_t phentsize = get16(eh + 54), phnum = get16(eh + 56);
	const uint8_t *p;

	if (phentsize != PHDR_SIZE || phnum < 1 || phnum > PHDR_MAX)
		return -EINVAL;
	p = part_at(parts, nparts, phoff, (uint64_t)phnum * PHDR_SIZE);
	if (!p)
		return -EINVAL;
	for (size_t i = 0; i < phnum; i++, p += PHDR_SIZE) {
		ph[i].type = get32(p);
		ph[i].offset = get64(p + 8);
		ph[i].vaddr = get64(p + 16);
		ph[i].filesz = get64(p + 32);
	}
	*nph = phnum;
	return 0;
}

static int read_dynamic(const struct cfs_elf_part *parts, size_t nparts, const struct phdr *ph,
			size_t nph, const struct phdr *dyn, struct cfs_elf_deps *out)
{
	uint64_t strtab = 0, strsz = 0, runpath = 0, rpath = 0, off;
	bool has_strtab = false, has_strsz = false, has_runpath = false, has_rpath = false;
	uint64_t needed[CFS_ELF_NEEDED_MAX];
	uint32_t nneeded = 0;
	const uint8_t *p;
	size_t n;
	int ret;

	if (dyn->filesz % DYN_SIZE || dyn->filesz / DYN_SIZE > DYN_MAX)
		return -EINVAL;
	n = (size_t)(dyn->filesz / DYN_SIZE);
	p = part_at(parts, nparts, dyn->offset, dyn->filesz);
	if (!p)
		return -EINVAL;
	for (size_t i = 0; i < n; i++, p += DYN_SIZE) {
		uint64_t tag = get64(p), val = get64(p + 8);

		if (tag == DT_NULL)
			break;
		switch (tag) {
		case DT_NEEDED:
			if (nneeded < CFS_ELF_NEEDED_MAX)
				needed[nneeded++] = val;
			break;
		case DT_STRTAB:
			strtab = val;
			has_strtab = true;
			break;
		case DT_STRSZ:
			strsz = val;
			has_strsz = true;
			break;
		case DT_RUNPATH:
			runpath = val;
			has_runpath = true;
			break;
		case DT_RPATH:
			rpath = val;
			has_rpath = true;
			break;
		default:
			break;
		}
	}
	if (!nneeded && !has_runpath && !has_rpath)
		return 0;
	if (!has_strtab || !has_strsz)
		return -EINVAL;
	ret = vaddr_off(ph, nph, strtab, &off);
	if (ret)
		return ret;
	for (uint32_t i = 0; i < nneeded; i++) {
		ret = str_get(parts, nparts, off, strsz, needed[i], &out->needed[i]);
		if (ret)
			return ret;
	}
	out->nneeded = nneeded;
	/* The loader ignores DT_RPATH when DT_RUNPATH is there. */
	if (has_runpath || has_rpath)
		return str_get(parts, nparts, off, strsz, has_runpath ? runpath : rpath,
			       &out->runpath);
	return 0;
}

int cfs_elf_parse(const struct cfs_elf_part *parts, size_t nparts, struct cfs_elf_deps *out)
{
	struct phdr ph[PHDR_MAX];
	const struct phdr *dyn = NULL;
	const uint8_t *eh;
	size_t nph = 0;
	int ret;

	memset(out, 0, sizeof(*out));
	eh = part_at(parts, nparts, 0, EHDR_SIZE);
	if (!eh || memcmp(eh, "\177ELF", 4))
		return -ENOEXEC;
	/* ELFCLASS64, ELFDATA2LSB, EV_CURRENT. */
	if (eh[4] != 2 || eh[5] != 1 || eh[6] != 1)
		return -ENOEXEC;
	out->type = get16(eh + 16);
	out->machine = get16(eh + 18);
	if ((out->type != ET_EXEC && out->type != ET_DYN) ||
	    (out->machine != CFS_ELF_EM_X86_64 && out->machine != CFS_ELF_EM_AARCH64))
		return -ENOEXEC;
	if (get32(eh + 20) != 1 || get16(eh + 52) != EHDR_SIZE)
		return -EINVAL;
	ret = read_phdrs(parts, nparts, eh, ph, &nph);
	if (ret)
		goto fail;
	for (size_t i = 0; i < nph; i++) {
		if (ph[i].type == PT_INTERP && !out->interp.len) {
			const uint8_t *s = part_at(parts, nparts, ph[i].offset, ph[i].filesz);

			ret = -EINVAL;
			/* The path and its NUL, nothing after. */
			if (!s || ph[i].filesz < 2 || ph[i].filesz > CFS_ELF_STR_MAX + 1 ||
			    s[ph[i].filesz - 1] || memchr(s, '\0', ph[i].filesz - 1))
				goto fail;
			out->interp.s = (const char *)s;
			out->interp.len = ph[i].filesz - 1;
		} else if (ph[i].type == PT_DYNAMIC && !dyn) {
			dyn = &ph[i];
		}
	}
	if (dyn) {
		ret = read_dynamic(parts, nparts, ph, nph, dyn, out);
		if (ret)
			goto fail;
	}
	return 0;
fail:
	memset(out, 0, sizeof(*out));
	return ret;
}

/* ---- the scanner ---- */

struct cfs_elf_scan {
	uint8_t *head;
	size_t head_len, head_cap, head_max;
	bool head_done;   /* a hole or the cap ended it */
	bool not_elf;
	bool dyn_known;   /* the program headers were looked at */
	bool nomem;
	uint8_t *dyn;     /* the dynamic section when it lies past the head */
	uint64_t dyn_off, dyn_len, dyn_have;
	size_t dyn_cap;
	uint64_t size;
};

int cfs_elf_scan_new(size_t head_max, struct cfs_elf_scan **out)
{
	struct cfs_elf_scan *s;

	*out = NULL;
	if (head_max < 4096)
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->head_max = head_max;
	*out = s;
	return 0;
}

void cfs_elf_scan_free(struct cfs_elf_scan *s)
{
	if (!s)
		return;
	free(s->head);
	free(s->dyn);
	free(s);
}

void cfs_elf_scan_begin(struct cfs_elf_scan *s, uint64_t size)
{
	s->head_len = 0;
	s->head_done = false;
	s->not_elf = size < EHDR_SIZE;
	s->dyn_known = false;
	s->nomem = false;
	s->dyn_off = s->dyn_len = s->dyn_have = 0;
	s->size = size;
}

static bool grow(uint8_t **buf, size_t *cap, size_t need)
{
	size_t n = *cap ? *cap : 4096;
	uint8_t *p;

	if (need <= *cap)
		return true;
	while (n < need)
		n *= 2;
	p = realloc(*buf, n);
	if (!p)
		return false;
	*buf = p;
	*cap = n;
	return true;
}

/* Once the head holds the program headers: where the dynamic section is,
 * and a buffer for it when the head will not reach it. */
static void scan_locate_dynamic(struct cfs_elf_scan *s)
{
	const uint8_t *eh = s->head;
	uint64_t phoff = get64(eh + 32), end;
	uint16_t phnum = get16(eh + 56);
	const uint8_t *p;

	if (get16(eh + 54) != PHDR_SIZE || !phnum || phnum > PHDR_MAX ||
	    __builtin_add_overflow(phoff, (uint64_t)phnum * PHDR_SIZE, &end))
		goto done;
	if (end > s->head_len) {
		if (!s->head_done && end <= CFS_MIN(s->size, (uint64_t)s->head_max))
			return; /* not yet */
		goto done;
	}
	p = s->head + phoff;
	for (uint16_t i = 0; i < phnum; i++, p += PHDR_SIZE) {
		uint64_t off = get64(p + 8), len = get64(p + 32);

		if (get32(p) != PT_DYNAMIC)
			continue;
		if (__builtin_add_overflow(off, len, &end) || !len || len > SCAN_DYN_MAX ||
		    end > s->size)
			break;
		if (end <= CFS_MIN(s->size, (uint64_t)s->head_max))
			break; /* the head will hold it */
		if (!grow(&s->dyn, &s->dyn_cap, (size_t)len)) {
			s->nomem = true;
			break;
		}
		s->dyn_off = off;
		s->dyn_len = len;
		break;
	}
done:
	s->dyn_known = true;
}

void cfs_elf_scan_data(struct cfs_elf_scan *s, uint64_t off, const void *p, size_t len)
{
	const uint8_t *b = p;
	uint64_t end = off + len;

	if (s->not_elf || !len)
		return;
	if (!s->head_done) {
		if (off != s->head_len) {
			s->head_done = true; /* a hole */
		} else {
			size_t n = (size_t)CFS_MIN((uint64_t)len, s->head_max - s->head_len);

			if (!grow(&s->head, &s->head_cap, s->head_len + n)) {
				s->nomem = s->head_done = true;
				return;
			}
			memcpy(s->head + s->head_len, b, n);
			s->head_len += n;
			if (s->head_len == s->head_max)
				s->head_done = true;
		}
		if (s->head_len < 4 || memcmp(s->head, "\177ELF", 4)) {
			/* Not an ELF (or a hole before its magic): keep nothing. */
			if (s->head_len >= 4 || s->head_done)
				s->not_elf = true;
			return;
		}
	}
	if (!s->dyn_known && s->head_len >= EHDR_SIZE)
		scan_locate_dynamic(s);
	if (s->dyn_len && end > s->dyn_off && off < s->dyn_off + s->dyn_len) {
		uint64_t from = CFS_MAX(off, s->dyn_off);
		uint64_t to = CFS_MIN(end, s->dyn_off + s->dyn_len);

		/* In order and without overlap: the count says it is whole. */
		memcpy(s->dyn + (from - s->dyn_off), b + (from - off), (size_t)(to - from));
		s->dyn_have += to - from;
	}
}

int cfs_elf_scan_end(struct cfs_elf_scan *s, struct cfs_elf_deps *out)
{
	struct cfs_elf_part parts[2] = { { 0, s->head, s->head_len } };
	size_t n = 1;

	memset(out, 0, sizeof(*out));
	if (s->not_elf || s->head_len < EHDR_SIZE)
		return -ENOEXEC;
	if (s->nomem)
		return -ENOMEM;
	if (s->dyn_len && s->dyn_have == s->dyn_len)
		parts[n++] = (struct cfs_elf_part){ s->dyn_off, s->dyn, (size_t)s->dyn_len };
	return cfs_elf_parse(parts, n, out);
}
