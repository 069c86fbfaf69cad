/* SPDX-License-Identifier: MIT */
/*
 * Learned profiles (docs/PROFILE.md, "Learned profiles"): every mount
 * records what its start-up reads and leaves the result, merged with what
 * earlier runs left, under the image's digest, in the local cache
 * (<cache dir>/learned/<64 hex>.prof) and in a writable store
 * (profiles/<64 hex>); the next mount of an image without a prefetch list
 * of its own prefetches the chunks it names.  A learned profile is only a
 * hint: one that is missing, corrupt or hostile is logged once and ignored.
 *
 * Thread-safe: the prefetch feeder reads while the daemon's housekeeping
 * thread saves.
 */
#ifndef CFS_LEARNED_H
#define CFS_LEARNED_H

#include <stddef.h>
#include <stdint.h>

#include "digest.h"

struct cfs_image;
struct cfs_recorder;
struct cfs_store;
struct cfs_learned;

/* Records a learned profile keeps at most (files and chunks): the earliest
 * ones; the tail is dropped when runs are merged. */
#define CFS_LEARN_RECORDS_MAX 65536u
/* The start-up a mount learns: its first this many seconds, unless
 * cfs-mount --learn-window says otherwise. */
#define CFS_LEARN_WINDOW_SEC 30u
/* The largest learned profile read (bytes); a larger one is ignored. */
#define CFS_LEARN_FILE_MAX ((size_t)16 << 20)

/* Where the learned profiles of image live: cache_dir (its learned/
 * directory, created at the first save; NULL: none) and store (borrowed,
 * must outlive the handle; NULL: none).  0 or -ENOMEM. */
int cfs_learned_new(const cfs_digest *image, const char *cache_dir, struct cfs_store *store,
		    struct cfs_learned **out);
void cfs_learned_free(struct cfs_learned *l);

/* Lets img's prefetch at mount (cfs_image_prefetch_start()) fetch the
 * learned profile's chunks when the image has no prefetch list of its
 * own.  l is borrowed: it must outlive img (free img first).  Call before
 * cfs_image_prefetch_start(). */
void cfs_image_set_learned(struct cfs_image *img, struct cfs_learned *l);

/* The chunks of img that its learned profile names, in the profile's
 * order, each once: the local copy if there is a valid one, else the
 * store's.  0 with *chunks malloc'd (the caller frees; NULL when *count is
 * 0, which is also the answer when there is no learned profile, or only a
 * bad one: that is logged in one line), or -ENOMEM. */
int cfs_image_learned_list(struct cfs_image *img, uint32_t **chunks, size_t *count);

/* Merges what r (recording img) recorded in its first max_usec
 * microseconds (at most CFS_LEARN_RECORDS_MAX records) with the learned
 * profiles of img there are (cfs_image_set_learned(); -EINVAL without),
 * keeping of theirs only records of img's chunks and files, and writes the
 * result to both places: the cache's atomically (temporary file
 * and rename), the store's as one replacing write (skipped when it would
 * not change, and silently on a read-only store: -EROFS, -EACCES, -EPERM).
 * Nothing is written for a run that recorded nothing.  Logs one info line
 * for a profile written, one warning per place that failed.  Returns the
 * records written (0: none), or -errno when neither place took it. */
int cfs_image_learned_save(struct cfs_image *img, struct cfs_recorder *r, uint64_t max_usec);

struct cfs_learned_stats {
	const char *source;      /* where the list prefetched came from: "none",
				  * "cache" or "store"; static */
	uint64_t chunks;         /* chunks of the image it named */
	uint64_t saves;          /* learned profiles written */
	uint64_t saved_records;  /* records in the last one */
};

/* NULL l gives zeros and "none". */
void cfs_learned_stats_get(struct cfs_learned *l, struct cfs_learned_stats *out);

#endif /* CFS_LEARNED_H */
