/* SPDX-License-Identifier: MIT */
/* Small helpers shared by every module: logging, errors, sizes, full I/O. */
#ifndef CFS_UTIL_H
#define CFS_UTIL_H

#include <dirent.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#define CFS_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define CFS_MIN(a, b) ((a) < (b) ? (a) : (b))
#define CFS_MAX(a, b) ((a) > (b) ? (a) : (b))
#define CFS_ALIGN_UP(x, a) (((x) + ((a) - 1)) & ~((__typeof__(x))(a) - 1))
#define CFS_EXPORT __attribute__((visibility("default")))
#define CFS_PRINTF(f, a) __attribute__((format(printf, f, a)))

enum cfs_log_level { CFS_LOG_ERR = 0, CFS_LOG_WARN, CFS_LOG_INFO, CFS_LOG_DEBUG };

/* The log goes to stderr by default.  These are process-wide settings made
 * once at start-up by a program's main(), before threads exist. */
void cfs_log_setup(const char *prog, enum cfs_log_level level, FILE *out);
void cfs_log(enum cfs_log_level level, const char *fmt, ...) CFS_PRINTF(2, 3);
#define cfs_err(...) cfs_log(CFS_LOG_ERR, __VA_ARGS__)
#define cfs_warn(...) cfs_log(CFS_LOG_WARN, __VA_ARGS__)
#define cfs_info(...) cfs_log(CFS_LOG_INFO, __VA_ARGS__)
#define cfs_debug(...) cfs_log(CFS_LOG_DEBUG, __VA_ARGS__)

/* strerror() for a negative errno, with the project's meanings of the
 * aliased values: EUCLEAN is a corrupt image or object, EBADMSG a digest
 * mismatch, EKEYREJECTED a server whose TLS certificate failed
 * verification, EXDEV a store path that a symlink leads out of the store. */
const char *cfs_strerror(int neg_errno);

/* "4096", "64K", "512M", "10G", "1T" (powers of 1024; "KiB", "KB" and
 * the like too).  0, -EINVAL (not a size: empty, no leading digit, an
 * unknown suffix), or -ERANGE (a valid size of 2^64 bytes or more). */
int cfs_parse_size(const char *s, uint64_t *out);

/* A decimal count in [min, max] (no sign, nothing after it): 0 or -EINVAL. */
int cfs_parse_uint(const char *s, unsigned long min, unsigned long max, unsigned long *out);
/* A decimal of a file cfs writes: digits only, no leading zero, fitting
 * 64 bits.  0 or -EINVAL. */
int cfs_parse_u64(const char *s, uint64_t *out);
/* The small text files a store keeps beside images and layers (origins,
 * layer records): buf (len bytes, at most max, no NUL) must start with
 * the line header and end with a newline (written whole or not at all);
 * each line after the header goes to line(), NUL-terminated in a private
 * copy it may change, until one returns non-zero.  0, -EINVAL, -ENOMEM,
 * or what line() returned. */
int cfs_parse_lines(const void *buf, size_t len, size_t max, const char *header,
		    int (*line)(char *line, void *ctx), void *ctx);

/* The next component of a '/'-separated path, skipping empty and "."
 * components: its start in *name and its length, with *path moved past it
 * and the slashes after it; 0 at the end of the path. */
size_t cfs_path_next(const char **path, const char **name);

/* Full reads and writes that retry on EINTR and short transfers.
 * Return 0 or -errno; cfs_pread_full returns -ENODATA on early EOF. */
int cfs_pread_full(int fd, void *buf, size_t len, off_t off);
int cfs_write_full(int fd, const void *buf, size_t len);

/* Writes len bytes at buf as file path (relative to dirfd, which may be
 * AT_FDCWD) whole or not at all: into a temporary file beside it, named by
 * process and thread, then renamed over it; mode for a new file; sync:
 * fsync before the rename.  The temporary file is removed on failure.
 * 0 or -errno. */
int cfs_write_file_at(int dirfd, const char *path, const void *buf, size_t len, mode_t mode,
		      bool sync);
/* Removes from directory dir (relative to at, which may be AT_FDCWD)
 * the temporary files cfs_write_file_at() left when its process died
 * mid-write (a crash, SIGKILL): names ending in .tmp.PID.TID whose PID no
 * longer runs.  Another live writer's are left alone.  How many it
 * removed, or -errno. */
int cfs_write_file_sweep(int at, const char *dir);

/* Read a whole file into a malloc'd buffer, refusing files over max bytes
 * (-EFBIG).  The caller frees *buf.  dirfd may be AT_FDCWD. */
int cfs_read_file_at(int dirfd, const char *path, size_t max, void **buf, size_t *len);

/* Opens directory name (relative to dirfd, which may be AT_FDCWD; "."
 * for dirfd itself, through a descriptor of its own) for readdir(),
 * without following a symlink.  NULL with errno set on failure. */
DIR *cfs_opendir_at(int dirfd, const char *name);

/* Removes the directory tree at path (absent is fine), depth first,
 * without following symlinks or entering another filesystem: a mount
 * point left inside stays, and so do the directories above it.  0 or
 * -errno. */
int cfs_rm_tree(const char *path);

/* For programs that move chunks through malloc'd buffers of about 1 MiB:
 * keeps freed memory in the process for reuse instead of giving each
 * buffer back with munmap (or trimming the heap) and having the kernel
 * fault in and zero fresh pages for the next one (page clearing led perf
 * profiles of direct-mode loads; 2 GiB from a tmpfs store took 1.9-3.4 s
 * with glibc's defaults and 1.1-1.2 s with these, interleaved runs).
 * Process-wide (mallopt): call it once from main(), before threads; never
 * from library code. */
void cfs_malloc_tune(void);

/* Writes s to f as a JSON string: quoted, with '"' and '\\' escaped and
 * control bytes as \u00XX; other bytes (UTF-8 included) as they are. */
void cfs_json_str(FILE *f, const char *s);

/* Monotonic clock in nanoseconds. */
uint64_t cfs_now_ns(void);

#endif /* CFS_UTIL_H */
