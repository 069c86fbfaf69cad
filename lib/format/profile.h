/* SPDX-License-Identifier: MIT */
/*
 * Access profiles: the order in which a mount first read its files and
 * chunks, recorded by `cfs-mount --record FILE`, merged across runs, and
 * used by `cfs-pack --profile FILE` to lay start-up data out first and to
 * give the image a prefetch list.
 *
 * The file is plain text, one record per line (docs/PROFILE.md):
 *
 *   cfs-profile 1
 *   image sha256:<64 hex>            the image the run mounted (informational)
 *   f <usec> <path>                  first read of a file
 *   c <usec> <sha256 hex> <path> <offset>   first read of a chunk, by a read of <path> at <offset>
 *
 * <usec> counts from the mount; paths are absolute within the image, with
 * '\\', newline, spaces and bytes outside 0x21..0x7e escaped as \xHH.
 * Unknown record kinds are skipped, so the format can grow.
 *
 * A recorder is thread-safe; a parsed profile is immutable.
 */
#ifndef CFS_PROFILE_H
#define CFS_PROFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "digest.h"

struct cfs_index;
struct cfs_profile;
struct cfs_recorder;

/* ---- recording (the daemon) ---- */

/* Starts recording the reads of the image whose index is idx (borrowed;
 * must outlive the recorder), timed from now. */
int cfs_recorder_new(const struct cfs_index *idx, const cfs_digest *ref, struct cfs_recorder **out);
void cfs_recorder_free(struct cfs_recorder *r);

/* Notes a read of [off, off + len) of regular file ino.  Cheap when nothing
 * is new (a bit test per file and per chunk); safe from any thread. */
void cfs_recorder_note(struct cfs_recorder *r, uint64_t ino, uint64_t off, uint64_t len);

/* Writes the profile so far to path atomically (temporary file + rename). */
int cfs_recorder_save(struct cfs_recorder *r, const char *path);

/* Writes the first max records noted at most max_usec after the start to
 * f (not atomically; UINT64_MAX: any time).  0 or -errno. */
int cfs_recorder_write(struct cfs_recorder *r, FILE *f, size_t max, uint64_t max_usec);

/* Keeps at most max records (the default: no bound): once they are
 * noted, note() returns at once, before any bit test.  0 stops recording.
 * Thread-safe. */
void cfs_recorder_limit(struct cfs_recorder *r, size_t max);

/* Records (files and chunks) noted so far: lets a caller skip a save when
 * nothing is new.  Thread-safe. */
size_t cfs_recorder_count(struct cfs_recorder *r);

/* ---- reading and merging ---- */

struct cfs_profile_entry {
	char kind;          /* 'f' file, 'c' chunk */
	uint64_t usec;
	const char *path;   /* unescaped, NUL-terminated; lives with the profile */
	size_t path_len;
	cfs_digest digest;  /* chunks */
	uint64_t offset;    /* chunks: the read's offset in path */
};

/* Parses a profile file.  -EINVAL (with a one-line reason logged naming
 * the line) for a malformed one; bounded: at most 16 Mi records. */
int cfs_profile_load(const char *path, struct cfs_profile **out);
/* The same from len bytes at buf (name is used in the messages). */
int cfs_profile_load_buf(const void *buf, size_t len, const char *name, struct cfs_profile **out);
void cfs_profile_free(struct cfs_profile *p);
size_t cfs_profile_count(const struct cfs_profile *p);
/* Entry i, in file order (which is first-access order). */
const struct cfs_profile_entry *cfs_profile_entry(const struct cfs_profile *p, size_t i);

/* Merges several profiles into one written to out: every file and chunk
 * seen in any run, ordered by its earliest access time across runs (ties
 * by the order of the inputs).  The image line is the first input's. */
int cfs_profile_merge(struct cfs_profile *const *in, size_t n, FILE *out);
/* The same, writing the max earliest records only (the tail dropped) of
 * those keep (when not NULL) keeps: it sees each record once, its earliest;
 * returns how many it wrote (capped at INT_MAX), or -errno. */
typedef bool cfs_profile_keep_fn(const struct cfs_profile_entry *e, void *arg);
int cfs_profile_merge_max(struct cfs_profile *const *in, size_t n, size_t max,
			  cfs_profile_keep_fn *keep, void *arg, FILE *out);

/* The escaping of profile paths, which origins (origin.h) share: writes
 * s (len bytes) with '\\', spaces and bytes outside 0x21..0x7e as \xHH.
 * 0 or -EIO. */
int cfs_profile_put_escaped(FILE *f, const char *s, size_t len);
/* Unescapes NUL-terminated s into out, which has room for strlen(s) + 1
 * bytes and may be s itself; *len is the result's length.  NULL, or why s is malformed (a
 * byte that should have been escaped, a bad \xHH, an escaped NUL). */
const char *cfs_profile_unescape(const char *s, char *out, size_t *len);

#endif /* CFS_PROFILE_H */
