/* SPDX-License-Identifier: MIT */
/*
 * cfs-pack internals shared by the pipeline (pack.c) and the two sources
 * (pack_dir.c, pack_tar.c).  A source runs on the main thread and feeds
 * the builder and the chunker; sealed chunks go to the workers through the
 * chunker's emit callback.
 */
#ifndef CFS_PACK_H
#define CFS_PACK_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "builder.h"
#include "chunker.h"
#include "util.h"

struct cfs_index;
struct cfs_profile;

/* The files a profile names, in first-read order (pack_profile.c). */
struct cfs_pack_prof {
	char **paths;     /* normalised: relative to the root, "a/b" */
	size_t n;
	size_t *sorted;   /* indexes into paths, sorted by strcmp */
	bool *fed;        /* set by a source that fed paths[i] ahead of the rest */
};

struct cfs_pack {
	struct cfs_builder *b;
	struct cfs_chunker *ch;

	/* The store directory, skipped if the walk meets it. */
	bool store_known;
	dev_t store_dev;
	ino_t store_ino;

	/* The chunker's small_max: files below it share group chunks, so a
	 * source must feed them in the builder's order (pack_tar.c). */
	uint32_t small_max;

	/* --profile: the sources feed these files first, in this order.
	 * NULL without a profile. */
	struct cfs_pack_prof *prof;

	/* Counted by the sources. */
	uint64_t files, dirs, other;
	uint64_t bytes_in;    /* data bytes read (holes not counted) */

	struct cfs_pack_pipe *pipe;
};

/* Records the first error of the pack as "<what>: <why>" for main() to
 * print, and returns err.  Thread-safe.  Later errors are dropped: the
 * first one is the cause, the rest are usually its consequences. */
int cfs_pack_fail(struct cfs_pack *p, int err, const char *fmt, ...) CFS_PRINTF(3, 4);

/* Feeds one regular file's data range to the chunker; counts bytes_in.
 * Errors are recorded with the path. */
int cfs_pack_data(struct cfs_pack *p, const char *path, uint64_t off, const void *buf,
		  size_t len);

/* Sources.  Both return 0 or -errno after cfs_pack_fail(). */
int cfs_pack_dir(struct cfs_pack *p, const char *root);
/* Reads a tar stream (plain or compressed) from fd; name is for messages. */
int cfs_pack_tar(struct cfs_pack *p, int fd, const char *name);

/* Image layers (pack_oci.c): tar streams applied in order by the OCI
 * rules (whiteouts, opaque directories) when layers is set.  Small files
 * of every layer wait in one spool, fed by cfs_pack_tar_end(t, true). */
struct cfs_pack_tar;
/* The next bytes of an uncompressed layer: *buf and their count, 0 at the
 * end, or -errno after cfs_pack_fail(). */
typedef ssize_t (*cfs_pack_read_fn)(void *ctx, const void **buf);
int cfs_pack_tar_begin(struct cfs_pack *p, bool layers, struct cfs_pack_tar **out);
/* Applies one layer on top of the ones before.  Reads the tar up to its
 * end marker; the caller reads what follows (padding) itself. */
int cfs_pack_tar_layer(struct cfs_pack_tar *t, cfs_pack_read_fn rd, void *ctx, const char *name);
/* Feeds the spooled small files when feed is set (the pack went well) and
 * frees t (NULL is fine).  0 or -errno. */
int cfs_pack_tar_end(struct cfs_pack_tar *t, bool feed);

/* OCI image layout (oci:DIR[:REF]) and docker-archive:FILE[:REF] sources:
 * spec is the part after the prefix.  Fills *config (malloc'd) with the
 * image config blob, stored with the image.  platform: "os/arch[/variant]"
 * or NULL for the host's. */
int cfs_pack_oci(struct cfs_pack *p, const char *spec, bool docker_archive,
		 const char *platform, void **config, size_t *config_len);

/* Profile-guided layout (pack_profile.c). */
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

#endif /* CFS_PACK_H */
