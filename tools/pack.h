/* SPDX-License-Identifier: MIT */
/*
 * libcfspack: the cfs-pack pipeline (pack_pipeline.c) and its sources.
 *
 * A pack runs in one context: a source, on the calling thread, feeds the
 * builder and the chunker; sealed chunks go to the workers through the
 * chunker's emit callback, which hash, compress and store them.  The
 * image sources read, hash and decompress each layer on a decode thread
 * of its own, a few blocks ahead of the tar reader (pack_oci_layer.c).
 * Sources are plug-ins, one const struct cfs_pack_source a file
 * (pack_dir.c, pack_tar.c, pack_oci.c), that call down into the pipeline
 * only: the builder, the chunker, cfs_pack_data(), cfs_pack_fail().
 * cfs-pack's main (pack.c) and the fuzzers in tests/ drive the same
 * entry points.
 *
 * Not thread-safe unless said: one thread runs a context's source.
 */
#ifndef CFS_PACK_H
#define CFS_PACK_H

#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "builder.h"
#include "chunker.h"
#include "digest.h"
#include "layer.h"
#include "util.h"

struct cfs_index;
struct cfs_origin;
struct cfs_profile;
struct cfs_store;
struct cfs_pack_pipe;

/* The files a profile names, in first-read order (pack_profile.c). */
struct cfs_pack_prof {
	char **paths;     /* normalised: relative to the root, "a/b" */
	size_t n;
	size_t *sorted;   /* indexes into paths, sorted by strcmp */
	bool *fed;        /* set by a source that fed paths[i] ahead of the rest */
};

struct cfs_pack_opts {
	/* chunk_size and small_max must be set (small_max below chunk_size):
	 * the sources need small_max resolved. */
	struct cfs_chunker_opts chunker;
	int level;              /* zstd level of every object */
	unsigned jobs;          /* worker threads, at least 1 */
	bool progress;          /* a progress line on stderr */
	/* Image sources: the image to take from a multi-platform index,
	 * "os/arch[/variant]", or NULL for the host's. */
	const char *platform;
	/* docker:// sources (pack_registry.c), borrowed: the credentials file
	 * (NULL: $REGISTRY_AUTH_FILE, ${XDG_RUNTIME_DIR}/containers/auth.json,
	 * ~/.docker/config.json), a CA bundle trusted beside the system's
	 * (NULL: none), and reg_insecure: no TLS verification, plain http
	 * allowed (--tls-verify=false). */
	const char *reg_authfile;
	const char *reg_ca_file;
	bool reg_insecure;
	/* --profile: the sources feed its files first, and the image gets
	 * their chunks as its prefetch list.  Borrowed for the context's life;
	 * NULL for none. */
	const struct cfs_profile *profile;
};

/* A pack in progress.  The fields above pipe are the sources' to use; the
 * rest is the pipeline's. */
struct cfs_pack_ctx {
	/* The builder the source fills and the chunker feeds: the image's
	 * (img), or while an image source reads a layer, the layer's. */
	struct cfs_builder *b;
	struct cfs_chunker *ch;
	struct cfs_builder *img;
	/* An image source's layers (pack_layers.c), and whether the last one
	 * is being read. */
	struct cfs_pack_layer *layers;
	size_t nlayers, layers_cap;
	bool in_layer;
	size_t layers_stored;   /* their indexes' bytes new to the store */
	cfs_digest *layer_blobs; /* the blobs whose records were written, for the origin */
	size_t nlayer_blobs;

	/* The store directory, skipped if the walk meets it. */
	bool store_known;
	dev_t store_dev;
	ino_t store_ino;

	/* The chunker's small_max: files below it share group chunks, so a
	 * source must feed them in the builder's order (pack_tar.c). */
	uint32_t small_max;
	uint32_t chunk_size;  /* the builders' */

	/* The sources feed these files first, in this order.  NULL without a
	 * profile. */
	struct cfs_pack_prof *prof;
	const char *platform;   /* cfs_pack_opts.platform */
	const char *reg_authfile, *reg_ca_file;   /* and the registry's */
	bool reg_insecure;

	/* Counted by the sources. */
	uint64_t files, dirs, other;
	uint64_t bytes_in;    /* data bytes read (holes not counted) */

	struct cfs_pack_pipe *pipe;
	struct cfs_store *st;       /* borrowed */
	const struct cfs_profile *profile;
	int level;
	/* The image config a source handed over (cfs_pack_set_config). */
	void *config;
	size_t config_len;
	/* Where the image came from (cfs_pack_set_origin), when a source
	 * with manifests said. */
	struct cfs_origin *origin;
	/* The first failure: see cfs_pack_fail(). */
	pthread_mutex_t fail_mu;
	int fail_err;
	char fail_msg[PATH_MAX + 256];
};

/* A source: packs what arg names into p and returns 0, or -errno after
 * cfs_pack_fail().  fd is arg opened for reading by the caller, for the
 * sources that take a path (cfs-pack opens it before it touches the
 * store), else -1; the source does not close it. */
struct cfs_pack_source {
	const char *name;
	/* The prefix that selects it ("oci:"); NULL for a path source,
	 * chosen by what the path names. */
	const char *prefix;
	int (*pack)(struct cfs_pack_ctx *p, const char *arg, int fd);
};

extern const struct cfs_pack_source cfs_pack_source_dir;     /* pack_dir.c */
extern const struct cfs_pack_source cfs_pack_source_tar;     /* pack_tar.c */
extern const struct cfs_pack_source cfs_pack_source_oci;     /* pack_oci.c */
extern const struct cfs_pack_source cfs_pack_source_docker_archive;
extern const struct cfs_pack_source cfs_pack_source_registry; /* pack_registry.c */

/* What a finished pack did, for the summary line. */
struct cfs_pack_stats {
	uint64_t files, dirs;       /* in the image (the builder's count) */
	uint64_t bytes_in;
	uint64_t chunks, new_objects, present;
	uint64_t written;           /* bytes of the objects new in the store */
	size_t index_len;
	size_t prefetch_count;      /* chunks in the prefetch list */
	/* Hints (struct cfs_builder_stats), and the section's bytes. */
	uint64_t elf_files, hint_triggers, hint_lists, hint_entries, elf_unresolved;
	size_t hints_len;
	uint64_t t0_ns;             /* when the pack started (cfs_now_ns) */
};

/* ---- the pipeline (pack_pipeline.c) ---- */

/* A context packing into st (borrowed, must outlive it), its workers
 * started.  0, or -errno with a message on stderr's log (cfs_err). */
int cfs_pack_new(struct cfs_store *st, const struct cfs_pack_opts *o, struct cfs_pack_ctx **out);
/* Stops the workers and frees p (NULL is fine). */
void cfs_pack_free(struct cfs_pack_ctx *p);

/* Runs src over arg (see struct cfs_pack_source), flushes the chunker and
 * waits for the workers to store every chunk.  0, or -errno with
 * cfs_pack_error() set.  Once per context. */
int cfs_pack_run(struct cfs_pack_ctx *p, const struct cfs_pack_source *src, const char *arg,
		 int fd);
/* After cfs_pack_run(): builds the index, stores the image config and
 * the prefetch list, writes the index object and the origin (a warning
 * when that fails: it is only informational) and syncs the store; *ref
 * names the image.  0, or -errno with cfs_pack_error() set. */
int cfs_pack_finish(struct cfs_pack_ctx *p, cfs_digest *ref, struct cfs_pack_stats *stats);
/* The first failure as "<what>: <why>", "" if none.  Lives as long as p. */
const char *cfs_pack_error(const struct cfs_pack_ctx *p);

/* Records the first error of the pack as "<what>: <why>" for
 * cfs_pack_error(), and returns err.  Thread-safe.  Later errors are
 * dropped: the first one is the cause, the rest are usually its
 * consequences. */
int cfs_pack_fail(struct cfs_pack_ctx *p, int err, const char *fmt, ...) CFS_PRINTF(3, 4);

/* Waits until the workers have stored every chunk emitted so far (their
 * digests are in the builders).  0, or their first error. */
int cfs_pack_drain(struct cfs_pack_ctx *p);

/* Feeds one regular file's data range to the chunker; counts bytes_in.
 * Errors are recorded with the path. */
int cfs_pack_data(struct cfs_pack_ctx *p, const char *path, uint64_t off, const void *buf,
		  size_t len);

/* Hands the image config (malloc'd, stored with the image) to the
 * pipeline, which frees it. */
void cfs_pack_set_config(struct cfs_pack_ctx *p, void *config, size_t len);
/* Says where the image came from (a source with manifests: a registry, an
 * OCI layout): cfs_pack_finish() stores it beside the image (origin.h,
 * origins/), informational only.  source names what cfs-pack was given;
 * top, when not NULL, is what the reference resolved to when that was an
 * index.  -ENOMEM after cfs_pack_fail(), else 0. */
int cfs_pack_set_origin(struct cfs_pack_ctx *p, const char *source, const cfs_digest *manifest,
			const cfs_digest *top);

/* Writes one whole object (an index, a prefetch list, an image config),
 * named by its content: *d its digest, *stored its size when it was new
 * to the store, else 0.  0 or -errno. */
int cfs_pack_obj_put(struct cfs_store *st, const void *buf, size_t len, int level, cfs_digest *d,
		     size_t *stored);
/* The serialised index of image ref from st, verified against ref:
 * *raw malloc'd.  0, -ENOENT (missing), -EUCLEAN (corrupt), -EBADMSG,
 * -ENOMEM or the store's errors. */
int cfs_pack_index_get(struct cfs_store *st, const cfs_digest *ref, void **raw, size_t *len);

/* ---- an image source's layers, each an image too (pack_layers.c) ---- */

/* The next layer: a builder of its own in overlay form, which p->b and the
 * chunker fill until cfs_pack_layer_end().  0, or -errno after
 * cfs_pack_fail(). */
int cfs_pack_layer_begin(struct cfs_pack_ctx *p);
/* A hard link in the layer to target, which the layer does not have: a
 * file of a lower layer, resolved when the layers are stacked. */
int cfs_pack_layer_link(struct cfs_pack_ctx *p, const char *path, const char *target);
/* Seals the layer's last group chunk; p->b is the image's again. */
int cfs_pack_layer_end(struct cfs_pack_ctx *p);
/* What the layer record of the last layer says (layer.h): its blob's
 * digest (NULL when unknown: no record is written), diff_id, uncompressed
 * and compressed sizes and compression. */
void cfs_pack_layer_meta(struct cfs_pack_ctx *p, const cfs_digest *blob, const cfs_digest *diff_id,
			 uint64_t diff_size, uint64_t size, enum cfs_layer_comp comp);
/* After the last layer (cfs_pack_tar_end): waits for the workers to
 * store every chunk so far, stacks the layers into p->img in order,
 * writes each layer's index and record, and frees them.  0, or -errno
 * after cfs_pack_fail(). */
int cfs_pack_layers_done(struct cfs_pack_ctx *p);
/* Frees the layers (after a failure; NULL-safe, idempotent). */
void cfs_pack_layers_free(struct cfs_pack_ctx *p);

/* ---- tar streams (pack_tar.c), for the tar source and image layers ---- */

/* Tar streams applied in order by the OCI rules (whiteouts, opaque
 * directories) when layers is set: each layer read into a builder of its
 * own, its small files fed at its end, and the image stacked from them
 * by cfs_pack_tar_end(t, true) (pack_layers.c).  Without layers, small
 * files wait in a spool fed by cfs_pack_tar_end(t, true). */
struct cfs_pack_tar;
/* The next bytes of an uncompressed layer: *buf and their count, 0 at the
 * end, or -errno after cfs_pack_fail(). */
typedef ssize_t (*cfs_pack_read_fn)(void *ctx, const void **buf);
int cfs_pack_tar_begin(struct cfs_pack_ctx *p, bool layers, struct cfs_pack_tar **out);
/* Applies one layer on top of the ones before.  Reads the tar up to its
 * end marker; the caller reads what follows (padding) itself. */
int cfs_pack_tar_layer(struct cfs_pack_tar *t, cfs_pack_read_fn rd, void *ctx, const char *name);
/* Feeds the spooled small files when feed is set (the pack went well) and
 * frees t (NULL is fine).  0 or -errno. */
int cfs_pack_tar_end(struct cfs_pack_tar *t, bool feed);

/* ---- profile-guided layout (pack_profile.c) ---- */

int cfs_pack_prof_new(const struct cfs_profile *prof, struct cfs_pack_prof **out);
void cfs_pack_prof_free(struct cfs_pack_prof *pf);
/* Position of a normalised path in the profile's file order, or
 * UINT32_MAX when it names no such file (or pf is NULL). */
uint32_t cfs_pack_prof_rank(const struct cfs_pack_prof *pf, const char *path);
/* The image's prefetch list: the chunks of the profile's records, mapped
 * by path and offset onto idx, in profile order, without duplicates.
 * *chunks is malloc'd.  0 or -ENOMEM. */
int cfs_pack_prefetch_map(const struct cfs_index *idx, const struct cfs_profile *prof,
			  uint32_t **chunks, size_t *count);
/* Maps prof onto the serialised index idx, writes the prefetch list
 * object to st and sets idx's header to name it.  *count 0: the profile
 * names nothing in this image, and idx is left as it was.  *stored: the
 * list's bytes new to the store.  0 or -errno. */
int cfs_pack_prefetch_attach(struct cfs_store *st, const struct cfs_profile *prof, void *idx,
			     size_t len, int level, size_t *count, size_t *stored);

/* ---- --profile-run: record a run, for the second pass (pack_run.c) ---- */

#define CFS_PACK_RUN_ARGS_MAX 16
#define CFS_PACK_RUN_TIMEOUT_DEFAULT 120

struct cfs_pack_run_opts {
	/* Borrowed; not const, as they become an argv. */
	char *cmd;              /* run as /bin/sh -c CMD chrooted in the image */
	unsigned timeout_s;     /* then CMD's process group is killed */
	char *store;            /* the store's location, as cfs-mount takes it */
	char *image;            /* "sha256:<hex>": the image to mount */
	/* More cfs-mount options (the store options cfs-pack was given),
	 * owned: cfs_pack_run_store_opt() adds, cfs_pack_run_opts_release()
	 * frees. */
	char *args[CFS_PACK_RUN_ARGS_MAX];
	size_t n_args;
};

/* Adds --NAME=ARG (--NAME when arg is NULL) to o's cfs-mount options.
 * 0, -E2BIG (more than CFS_PACK_RUN_ARGS_MAX) or -ENOMEM. */
int cfs_pack_run_store_opt(struct cfs_pack_run_opts *o, const char *name, const char *arg);
void cfs_pack_run_opts_release(struct cfs_pack_run_opts *o);

/* The cfs-mount to run: $CFS_MOUNT when set; else cfs-mount beside this
 * program, ../fs/cfs-mount from it (the build tree), or in the bindir it
 * was built for.  Its path in buf; 0 or -ENOENT. */
int cfs_pack_run_mount_bin(char *buf, size_t len);

/* Mounts o->image read-only with cfs-mount --record (prefetch and
 * learning off, a private cache and mountpoint in a temporary directory
 * under $TMPDIR or /tmp), runs o->cmd chrooted into it with stdin
 * /dev/null and stdout on stderr, kills its process group when it ends
 * or after o->timeout_s, unmounts and returns the recorded profile in
 * *prof (cfs_profile_free()).  CMD failing or timing out is a warning.
 * Removes everything it made on every path, and catches SIGINT, SIGTERM
 * and SIGHUP meanwhile to do so.  0, or -errno with one line on the log:
 * -ENODATA when nothing was read (/bin/sh missing from the image
 * included), -EINTR for a signal, -EPERM when chroot is not allowed. */
int cfs_pack_run_record(const struct cfs_pack_run_opts *o, struct cfs_profile **prof);

#endif /* CFS_PACK_H */
