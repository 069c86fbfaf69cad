/* SPDX-License-Identifier: MIT */
/*
 * What loading an ELF file opens, from its headers: the program
 * interpreter (PT_INTERP), the libraries it needs (DT_NEEDED) and where it
 * asks for them to be looked up (DT_RUNPATH, else DT_RPATH).  cfs-pack
 * reads them from every file it packs, to store which files a start-up
 * that loads one will open next (docs/FORMAT.md, "Hints").
 *
 * The bytes are outside input: every offset and size is checked against
 * the bytes given, and the parser reads nothing else.  Only ELF64
 * little-endian executables and shared objects for x86_64 and aarch64 are
 * read; anything else is -ENOEXEC.
 *
 * Not thread-safe per object; distinct objects are independent.
 */
#ifndef CFS_ELF_H
#define CFS_ELF_H

#include <stddef.h>
#include <stdint.h>

#define CFS_ELF_EM_X86_64 62u
#define CFS_ELF_EM_AARCH64 183u

/* DT_NEEDED entries past this many are ignored. */
#define CFS_ELF_NEEDED_MAX 128u
/* Longer PT_INTERP, DT_RUNPATH or DT_NEEDED strings make the file -EINVAL. */
#define CFS_ELF_STR_MAX 4095u

/* Bytes [off, off + len) of the file at p.  A parse reads only bytes that
 * lie wholly inside one part. */
struct cfs_elf_part {
	uint64_t off;
	const void *p;
	size_t len;
};

struct cfs_elf_str {
	const char *s; /* not NUL-terminated; NULL when len is 0 */
	size_t len;    /* 0: absent */
};

struct cfs_elf_deps {
	uint16_t machine;            /* CFS_ELF_EM_* */
	uint16_t type;               /* 2 executable, 3 shared object or PIE */
	struct cfs_elf_str interp;   /* PT_INTERP, without its NUL */
	struct cfs_elf_str runpath;  /* DT_RUNPATH, else DT_RPATH: ':'-separated */
	uint32_t nneeded;
	struct cfs_elf_str needed[CFS_ELF_NEEDED_MAX]; /* in DT_NEEDED order */
};

/* Parses the ELF whose bytes the parts give (parts in any order, not
 * overlapping).  Strings point into the parts.  0; -ENOEXEC: not an ELF
 * file this reads (magic, class, byte order, machine or type); -EINVAL: an
 * ELF whose headers, dynamic section or strings are malformed or lie
 * outside the parts. */
int cfs_elf_parse(const struct cfs_elf_part *parts, size_t nparts, struct cfs_elf_deps *out);

/* A parse of a file whose bytes go by once, in order (a packer's feed):
 * it keeps the first head_max bytes and the dynamic section, wherever
 * that is, and nothing of a file that does not start like an ELF. */
struct cfs_elf_scan;

/* 0, -EINVAL (head_max under 4 KiB), -ENOMEM. */
int cfs_elf_scan_new(size_t head_max, struct cfs_elf_scan **out);
void cfs_elf_scan_free(struct cfs_elf_scan *s);
/* Starts a file of size bytes. */
void cfs_elf_scan_begin(struct cfs_elf_scan *s, uint64_t size);
/* Its bytes at increasing offsets; gaps are holes.  An allocation that
 * fails only makes the file unreadable (-ENOMEM at the end). */
void cfs_elf_scan_data(struct cfs_elf_scan *s, uint64_t off, const void *p, size_t len);
/* cfs_elf_parse() of what was kept; the strings live until the next
 * begin.  Its errors, or -ENOMEM. */
int cfs_elf_scan_end(struct cfs_elf_scan *s, struct cfs_elf_deps *out);

#endif /* CFS_ELF_H */
