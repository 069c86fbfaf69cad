/* SPDX-License-Identifier: MIT */
/*
 * Loader internals shared by its modules:
 *
 *   safetensors.c  header parser (one file) and the shard index parser
 *   model.c        cfs_model_open*(): resolves MODEL, opens shards, merges tables
 *   src_file.c     source: files on any filesystem (fds)
 *   src_image.c    source: files of a cfs image, through lib/ (direct mode)
 *   reader.c       asynchronous reads for the pipeline: io_uring (O_DIRECT when
 *                  the filesystem allows it) or a thread pool over src->pread
 *   pipeline.c     cfs_model_load(): placement, staging ring, copies, stats, verify
 *   target_host.c  host-memory target
 *   target_cuda.c  CUDA runtime target (the only file that includes CUDA headers)
 *
 * Nothing here includes FUSE; only target_cuda.c includes CUDA.
 */
#ifndef CFS_LOADER_I_H
#define CFS_LOADER_I_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "cfs_load.h"

#define CFS_ERR_LEN 256

/* Formats a one-line message into err (may be NULL) and returns ret. */
int cfs_load_err(char *err, size_t errlen, int ret, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* ---- sources: where the files of a model are read from ---- */

struct cfs_src;

struct cfs_src_ops {
	const char *name;  /* "file", "image" */
	/* Opens path (relative paths against the source's root; a directory
	 * gives *is_dir and no handle).  *h is the handle for pread/close. */
	int (*open)(struct cfs_src *s, const char *path, uint64_t *h, uint64_t *size, bool *is_dir);
	/* Synchronous read; short only at end of file.  Thread-safe. */
	ssize_t (*pread)(struct cfs_src *s, uint64_t h, void *buf, size_t len, uint64_t off);
	/* The fd behind h when the source is plain files (io_uring, O_DIRECT
	 * reopen), else -1. */
	int (*fd)(struct cfs_src *s, uint64_t h);
	void (*close)(struct cfs_src *s, uint64_t h);
	void (*free)(struct cfs_src *s);
};

struct cfs_src {
	const struct cfs_src_ops *ops;
};

struct cfs_open_opts;

int cfs_src_file_new(struct cfs_src **out);
/* Direct mode: store, cache and image opened from oo as every command opens them
 * (lib/image/open.h). */
int cfs_src_image_new(const char *store, const char *image, const struct cfs_open_opts *oo,
		      struct cfs_src **out, char *err, size_t errlen);
/* cfs_model_open_image() with all of oo. */
int cfs_model_open_image_with(const char *store, const char *image, const char *path,
			      const struct cfs_open_opts *oo, struct cfs_model **out, char *err,
			      size_t errlen);

/* ---- the parsed model ---- */

struct cfs_shard {
	char *path;          /* as given or resolved (relative to the index's directory) */
	uint64_t h;          /* source handle */
	uint64_t size;       /* file size */
	uint64_t data_off;   /* 8 + header length: start of the byte buffer */
	uint64_t data_len;   /* size - data_off */
};

struct cfs_model {
	struct cfs_src *src;
	struct cfs_shard *shards;
	size_t nshards;
	struct cfs_tensor *tensors;   /* sorted by (shard, file_off) */
	size_t ntensors;
	char *names;                  /* storage of every tensor name */
	void *name_table;             /* lookup by name (model.c) */
	uint64_t bytes;
	struct cfs_loaded *loads;     /* list of loads not yet freed */
};

/* Parses one safetensors file's header, read from src handle h of the
 * given size: checks everything in docs/LOADER.md "Checks" and appends its
 * tensors (file_off absolute, shard = shard) to *t / *n (realloc'd),
 * names copied into malloc'd strings the caller frees.  0, -EUCLEAN with
 * err naming the tensor and problem, -ENOMEM, or a read error. */
int cfs_safetensors_parse(const void *hdr, size_t hdr_len, uint64_t file_size, unsigned shard,
			  const char *file_name, struct cfs_tensor **t, size_t *n,
			  uint64_t *data_off, char *err, size_t errlen);

/* Upper bound on the JSON header (safetensors' own reader uses 100 MB). */
#define CFS_SAFETENSORS_HDR_MAX (100u << 20)

/* Parses a model.safetensors.index.json: fills *files (malloc'd array of
 * malloc'd shard file names, plain names only: no '/', not "." or "..")
 * and, for each tensor of its weight_map, the index of its file
 * (*map_names / *map_files, malloc'd, count *nmap).  0 or -EUCLEAN with err. */
int cfs_shard_index_parse(const void *json, size_t len, char ***files, size_t *nfiles,
			  char ***map_names, unsigned **map_files, size_t *nmap,
			  char *err, size_t errlen);

/* ---- asynchronous reads for the pipeline ---- */

struct cfs_reader;

struct cfs_read_done {
	unsigned tag;    /* as submitted */
	ssize_t res;     /* bytes read (short only at end of file) or -errno */
};

/* A reader over the model's source.  align: the alignment that offsets,
 * lengths and buffers must have (4096 with O_DIRECT, else 1). */
int cfs_reader_new(struct cfs_model *m, const struct cfs_load_opts *o, struct cfs_reader **out,
		   char *err, size_t errlen);
void cfs_reader_free(struct cfs_reader *r);
size_t cfs_reader_align(const struct cfs_reader *r);
bool cfs_reader_direct(const struct cfs_reader *r);
/* Queues a read of shard's bytes [off, off+len) into buf; may block when
 * the reader is at its depth.  0 or -errno. */
int cfs_reader_submit(struct cfs_reader *r, unsigned shard, void *buf, size_t len, uint64_t off,
		      unsigned tag);
/* Waits for at least one completion (up to max), returns how many, or -errno. */
int cfs_reader_reap(struct cfs_reader *r, struct cfs_read_done *done, unsigned max);

/* ---- targets: where the bytes go ---- */

struct cfs_target;

struct cfs_target_ops {
	const char *name;
	/* Checks the device (-ENODEV with a message when there is none). */
	int (*open)(const struct cfs_load_opts *o, struct cfs_target **out, char *err, size_t errlen);
	void (*close)(struct cfs_target *t);
	/* The model's allocation. */
	int (*alloc)(struct cfs_target *t, size_t size, void **dev);
	void (*free)(struct cfs_target *t, void *dev);
	/* Staging memory (pinned where that matters), 4096-aligned. */
	int (*alloc_staging)(struct cfs_target *t, size_t size, void **host);
	void (*free_staging)(struct cfs_target *t, void *host, size_t size);
	/* Queues a copy of len bytes from staging slot memory to dev. */
	int (*copy)(struct cfs_target *t, unsigned slot, void *dev, const void *host, size_t len);
	/* Marks the end of slot's copies; slot_wait() then waits for them. */
	int (*slot_done)(struct cfs_target *t, unsigned slot);
	int (*slot_wait)(struct cfs_target *t, unsigned slot);
	/* Seconds the copies of slot took, once waited for (0 if unknown). */
	double (*slot_time)(struct cfs_target *t, unsigned slot);
	/* Synchronous copy back to host (verify). */
	int (*download)(struct cfs_target *t, void *host, const void *dev, size_t len);
	int (*probe)(struct cfs_target *t, size_t size, unsigned reps, double *bytes_per_s,
		     char *err, size_t errlen);
	bool host_visible;  /* dev memory is host memory: reads may land in place */
};

extern const struct cfs_target_ops cfs_target_host;
/* Present in every build: without CUDA its open() says so (-ENOTSUP). */
extern const struct cfs_target_ops cfs_target_cuda;

struct cfs_target {
	const struct cfs_target_ops *ops;
	unsigned slots;
	int device;
	bool lazy_alloc;  /* set before alloc(): reads will fault the pages in */
};

struct cfs_loaded {
	struct cfs_model *m;
	struct cfs_loaded *next;   /* in m->loads */
	struct cfs_target *t;
	void *base;
	uint64_t size;
	int target, device;
	uint64_t *dst_off;         /* per tensor */
	struct cfs_load_stats stats;
};

/* ---- safetensors.c: helpers for model.c, the tests and the fuzz target ---- */

/* Checks the 8-byte little-endian header length N at the start of a
 * safetensors file of file_size bytes (buf holds those 8 bytes; it is not
 * read when file_size < 8): 0 with *total = 8 + N when 0 < N <=
 * CFS_SAFETENSORS_HDR_MAX and 8 + N <= file_size, else -EUCLEAN with err.
 * Lets a reader size its buffer before allocating it. */
int cfs_safetensors_hdr_len(const void *buf, uint64_t file_size, const char *file_name,
			    size_t *total, char *err, size_t errlen);

/* Frees the names of t[0..n) and t (NULL is fine): for arrays filled by
 * cfs_safetensors_parse(). */
void cfs_tensors_free(struct cfs_tensor *t, size_t n);

/* Quotes a tensor name for a one-line message: control characters, '"'
 * and '\\' written as \xNN, cut with "..." after 72 bytes.  Returns buf,
 * which should have CFS_QUOTE_LEN bytes. */
#define CFS_QUOTE_LEN 88
const char *cfs_load_quote(char *buf, size_t size, const char *name);

/* Frees what cfs_shard_index_parse() returned (NULLs are fine). */
void cfs_shard_index_free(char **files, size_t nfiles, char **map_names, unsigned *map_files,
			  size_t nmap);

/* ---- reader.c (additions) ---- */

/* True when reap() would not wait: a completion is there. */
bool cfs_reader_ready(struct cfs_reader *r);
/* True when reads go through io_uring (else the thread pool). */
bool cfs_reader_uring(const struct cfs_reader *r);

/* ---- target_cuda.c (additions) ---- */

/* The text of the last CUDA error of a cuda target ("cudaMalloc: out of
 * memory"), for messages; NULL for another target or none yet. */
const char *cfs_target_cuda_error(const struct cfs_target *t);

#endif /* CFS_LOADER_I_H */
