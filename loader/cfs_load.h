/* SPDX-License-Identifier: MIT */
/*
 * cfs loader: safetensors model weights into GPU (CUDA) or host memory.
 *
 * A model is one .safetensors file, or a sharded model described by a
 * model.safetensors.index.json, read from any filesystem or, in direct
 * mode, straight from a cfs image (store + local chunk cache, no FUSE).
 * cfs_model_open() parses and checks every header; cfs_model_load() moves
 * the tensor bytes into one allocation in the target through a ring of
 * staging buffers, reads of slot k+1 overlapping the copy of slot k.
 *
 * Errors: 0 or -errno, and a one-line message in err (errlen bytes, may be
 * NULL) naming the file, the tensor and the problem.  Corrupt input is
 * -EUCLEAN (bad header) or -EINVAL (bad argument); a target that cannot
 * run here (no CUDA device, not built with CUDA) is -ENODEV / -ENOTSUP.
 *
 * Handles are independent: one thread per handle at a time.  This header
 * is the whole public interface (the Python binding binds it with ctypes:
 * keep it plain C, no macros in signatures).
 */
#ifndef CFS_LOAD_H
#define CFS_LOAD_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* safetensors dtypes; values are part of the ABI (the Python binding). */
enum cfs_dtype {
	CFS_DT_BOOL = 0,
	CFS_DT_U8,
	CFS_DT_I8,
	CFS_DT_F8_E4M3,  /* "F8_E4M3" */
	CFS_DT_F8_E5M2,  /* "F8_E5M2" */
	CFS_DT_U16,
	CFS_DT_I16,
	CFS_DT_F16,
	CFS_DT_BF16,
	CFS_DT_U32,
	CFS_DT_I32,
	CFS_DT_F32,
	CFS_DT_U64,
	CFS_DT_I64,
	CFS_DT_F64,
	CFS_DT_COUNT
};

/* "F16" -> CFS_DT_F16; -1 when unknown. */
int cfs_dtype_parse(const char *name);
const char *cfs_dtype_name(int dtype);  /* NULL when out of range */
unsigned cfs_dtype_size(int dtype);      /* bytes per element; 0 when out of range */

#define CFS_TENSOR_MAX_DIMS 8

struct cfs_tensor {
	const char *name;           /* NUL-terminated, owned by the model */
	int dtype;                  /* enum cfs_dtype */
	unsigned ndim;
	uint64_t shape[CFS_TENSOR_MAX_DIMS];
	uint64_t nbytes;            /* product of shape x dtype size */
	unsigned shard;             /* index into the model's files */
	uint64_t file_off;          /* absolute offset of its bytes in that file */
};

struct cfs_model;

/* MODEL: a .safetensors file, a model.safetensors.index.json, or a
 * directory holding one of those (the index first, then
 * model.safetensors).  Tensors come in order of (shard, file offset). */
int cfs_model_open(const char *path, struct cfs_model **out, char *err, size_t errlen);

/* Direct mode: path names a file or directory inside image (a tag or
 * "sha256:<hex>") of store (a directory, http(s):// or s3:// URL), read
 * through a chunk cache in cache_dir (NULL: memory only). */
int cfs_model_open_image(const char *store, const char *image, const char *path,
			 const char *cache_dir, struct cfs_model **out, char *err, size_t errlen);
/* cfs_model_open_image() where a tag must be signed by a key of trust (a
 * PEM public key file or a directory of them, as cfs-mount --trust; NULL:
 * no check).  A sha256: image needs no signature. */
int cfs_model_open_image_trusted(const char *store, const char *image, const char *path,
				 const char *cache_dir, const char *trust, struct cfs_model **out,
				 char *err, size_t errlen);
/* cfs_model_open_image() with options as cfs-mount's -o takes them, comma
 * separated: cache=DIR, cache_size=SIZE, mem_cache=SIZE, trust=PUBKEY|DIR,
 * deadline=MS, retries=N, max_inflight=N, ca_file=FILE, insecure (NULL or
 * "": none).  An unknown option or a bad value is -EINVAL. */
int cfs_model_open_image_opts(const char *store, const char *image, const char *path,
			      const char *options, struct cfs_model **out, char *err,
			      size_t errlen);

void cfs_model_free(struct cfs_model *m); /* NULL is fine; frees loads not freed */

size_t cfs_model_tensor_count(const struct cfs_model *m);
/* Borrowed, valid until cfs_model_free(); NULL when i is out of range. */
const struct cfs_tensor *cfs_model_tensor(const struct cfs_model *m, size_t i);
/* -1 when absent. */
long cfs_model_find(const struct cfs_model *m, const char *name);
size_t cfs_model_file_count(const struct cfs_model *m);
const char *cfs_model_file_path(const struct cfs_model *m, size_t i);
uint64_t cfs_model_bytes(const struct cfs_model *m); /* sum of nbytes */

enum cfs_target_kind { CFS_TARGET_HOST = 0, CFS_TARGET_CUDA = 1 };

struct cfs_load_opts {
	int target;          /* enum cfs_target_kind */
	int device;          /* CUDA device ordinal */
	size_t slot_size;    /* bytes per staging slot; 0: 16 MiB */
	unsigned slots;      /* staging slots in the ring; 0: 4 */
	unsigned reads;      /* reads in flight per slot; 0: 4 */
	size_t align;        /* tensor alignment in the allocation; 0: 256 */
	int direct_io;       /* O_DIRECT for files: -1 auto (default), 0 off, 1 required */
	int staged;          /* host target: 1 forces the staging ring (as cuda does);
			      * 0 lets reads land in place */
};

/* Fills o with the defaults above (target host). */
void cfs_load_opts_init(struct cfs_load_opts *o);

struct cfs_load_stats {
	uint64_t bytes;        /* tensor bytes loaded */
	uint64_t read_bytes;   /* bytes read from the source (alignment included) */
	double total_s;        /* wall time of cfs_model_load, allocation included */
	double read_s;         /* wall time with at least one read in flight */
	double copy_s;         /* time the copy engine (or memcpy) was busy */
	double setup_s;        /* target set-up: device, allocation, staging */
	uint64_t read_stalls;  /* waits for a read with the copy side idle */
	uint64_t copy_stalls;  /* waits for a free slot (copies behind reads) */
	unsigned direct_io;    /* 1: files were read with O_DIRECT */
	unsigned in_place;     /* 1: reads landed in the allocation, no staging */
	unsigned uring;        /* 1: files were read through io_uring (else threads) */
};

struct cfs_loaded;

/* Loads every tensor of m into one allocation of the target.  The result
 * belongs to the model (freed with it, or earlier with cfs_loaded_free). */
int cfs_model_load(struct cfs_model *m, const struct cfs_load_opts *o, struct cfs_loaded **out,
		   char *err, size_t errlen);
void cfs_loaded_free(struct cfs_loaded *l); /* NULL is fine */

/* The allocation: a device pointer (cuda) or host pointer (host). */
void *cfs_loaded_base(const struct cfs_loaded *l);
uint64_t cfs_loaded_size(const struct cfs_loaded *l);
/* base + tensor i's dst_off; NULL when out of range. */
void *cfs_loaded_tensor_ptr(const struct cfs_loaded *l, size_t i);
int cfs_loaded_target(const struct cfs_loaded *l);  /* enum cfs_target_kind */
int cfs_loaded_device(const struct cfs_loaded *l);
void cfs_loaded_stats(const struct cfs_loaded *l, struct cfs_load_stats *out);

/* Reads every tensor again from the source (plain reads, no ring), copies
 * it back from the target and compares byte for byte.  0, -EBADMSG on the
 * first difference (named in err), or -errno. */
int cfs_loaded_verify(struct cfs_loaded *l, char *err, size_t errlen);

/* Pinned host-to-device bandwidth in bytes/s of the target, copying
 * size bytes reps times from one pinned buffer (the ceiling a load is
 * measured against).  Host target: memcpy bandwidth between two buffers. */
int cfs_target_probe(const struct cfs_load_opts *o, size_t size, unsigned reps, double *bytes_per_s,
		     char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif /* CFS_LOAD_H */
