/* SPDX-License-Identifier: MIT */
/*
 * An opened image: its index, and reads of file data that fetch only the
 * chunks they touch, through the cache, each verified against its digest.
 * Shared by the FUSE daemon and, later, the loader's direct mode.
 * Thread-safe.
 */
#ifndef CFS_IMAGE_H
#define CFS_IMAGE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "digest.h"

struct cfs_store;
struct cfs_cache;
struct cfs_index;
struct cfs_inode;
struct cfs_image;
struct cfs_buf;

struct cfs_image_stats {
	uint64_t reads;        /* cfs_image_read calls */
	uint64_t read_bytes;
	uint64_t read_errors;
	uint64_t chunk_fetches; /* chunk objects fetched from the store */
	uint64_t demand_fetches; /* of those, by a reader itself: a read that
				  * found its chunk neither cached nor coming */
	uint64_t chunk_bad;     /* fetched chunks that failed verification */
	uint64_t ra_chunks;     /* chunks queued by readahead */
	uint64_t ra_dropped;    /* readahead requests dropped, queue full */
	uint64_t prefetch_queued; /* chunks queued by prefetch at mount */
	uint64_t prefetch_done;   /* of those, fetched (or found cached) */
	uint64_t hint_chunks;     /* chunks queued by a first read's prediction */
	uint64_t elf_hint_chunks; /* of those, of the files the index's hints name */
	uint64_t stream_chunks;   /* chunks queued by the stream (in prefetch_queued) */
	uint64_t stream_bytes;    /* their stored size (raw where the index has none) */
	uint64_t ra_pending;      /* chunks queued on the pool or being fetched by it, now */
	uint64_t stage_bytes;     /* stored bytes the stream staged */
	uint64_t stage_hits;      /* staged chunks decoded for a read */
	uint64_t stage_bad;       /* staged copies refused (fetched again) */
};

/* Resolves image (a tag or "sha256:<hex>"), fetches the index object, checks
 * its digest and validates it.  Reads nothing else.  Errors: -ENOENT
 * (unknown tag or missing index object), -EBADMSG (index digest mismatch),
 * -EUCLEAN (corrupt index), -EPROTONOSUPPORT, -EINVAL (malformed argument).
 * The store and cache are borrowed and must outlive the image. */
int cfs_image_open(struct cfs_store *st, struct cfs_cache *cache, const char *image,
		   struct cfs_image **out);
void cfs_image_free(struct cfs_image *img);

const struct cfs_index *cfs_image_index(const struct cfs_image *img);
void cfs_image_digest(const struct cfs_image *img, cfs_digest *out);

/* The image config the image was packed with (an OCI image's config JSON,
 * as it was in the source), verified against the digest the index names:
 * a malloc'd *out of *len bytes.  -ENOENT when the image has none, else
 * the errors of a chunk read. */
int cfs_image_config(struct cfs_image *img, void **out, size_t *len);

/* Reads up to len bytes at off of regular file ino into buf.  Returns the
 * count (short only at end of file), -EINVAL (not a regular file), or the
 * error of the first chunk that could not be had: -ENOENT (object missing
 * from the store), -EBADMSG (digest mismatch), -EUCLEAN (corrupt object),
 * -ESTALE (its cache file came up short twice), -EIO.  Never returns
 * unverified bytes. */
ssize_t cfs_image_read(struct cfs_image *img, uint64_t ino, void *buf, size_t len, uint64_t off);
/* The same for a caller that has decoded the file's inode already
 * (cfs_index_inode() of cfs_image_index(img)), as the FUSE daemon has to
 * check it: one read then decodes it once. */
ssize_t cfs_image_read_inode(struct cfs_image *img, const struct cfs_inode *in, void *buf,
			     size_t len, uint64_t off);

/* One piece of a mapped read: len bytes at off of a chunk's content, which
 * buf references (a memory or file handle, lib/cache/cache.h), or zeros when buf
 * is NULL (a hole). */
struct cfs_image_seg {
	struct cfs_buf *buf;
	uint32_t chunk;   /* index in the chunk table, or CFS_CHUNK_NONE */
	uint64_t off;
	size_t len;
};

/* Like cfs_image_read_inode(), but instead of copying, returns in
 * segs[0..*nseg) references to where the bytes are, in order (adjacent
 * pieces of one chunk merged), for a caller that moves them itself (a
 * splice).  Returns
 * the count covered (short only at end of file), the errors of
 * cfs_image_read(), or -E2BIG when more than max segments would be needed
 * (nothing is held then: read instead).  Release with cfs_image_unmap(). */
ssize_t cfs_image_map(struct cfs_image *img, const struct cfs_inode *in, uint64_t off, size_t len,
		      struct cfs_image_seg *segs, unsigned max, unsigned *nseg);
void cfs_image_unmap(struct cfs_image_seg *segs, unsigned n);

void cfs_image_stats_get(struct cfs_image *img, struct cfs_image_stats *out);

/* Readahead: when reads of a file go forward sequentially, the chunks after
 * the one being read are fetched into the cache by a pool of threads, the
 * window doubling from 2 chunks up to max_chunks while the pattern holds
 * and dropping to nothing on a jump.  Demand reads of a chunk already being
 * fetched wait for that fetch (the cache's single flight), so nothing is
 * fetched twice.  threads = 0 turns it off (the default).  Starts threads:
 * call it after any fork.  0 or -errno. */
#define CFS_READAHEAD_THREADS_DEFAULT 32
#define CFS_READAHEAD_CHUNKS_DEFAULT 32
int cfs_image_set_readahead(struct cfs_image *img, unsigned threads, unsigned max_chunks);

/* Like posix_fadvise(WILLNEED): queues the chunks holding [off, off+len)
 * of regular file ino on the readahead pool, in file order, for a reader
 * that knows what it reads next (the loader, reading a model front to
 * back with many reads in flight, which the sequential detection above
 * would take for jumps).  Returns how many bytes from off were queued
 * (short when the queue is full: ask again later), -EINVAL (no readahead
 * threads, not a regular file). */
int64_t cfs_image_willneed(struct cfs_image *img, uint64_t ino, uint64_t off, uint64_t len);

/* Prefetch at mount (docs/FORMAT.md, "Prefetch list" and "Prediction
 * without a profile"): fetch the image's prefetch list, if it has one, in
 * its order, in the background, through the readahead pool (so
 * set_readahead must have started threads: else -EINVAL), keeping at most
 * a memory budget of chunks queued ahead, or else a learned one
 * (learned.h); with CFS_PREFETCH_STREAM and no list, the rest of the
 * image, nearest the readers first, until budget stored bytes were fetched
 * (0: CFS_PREFETCH_BUDGET_DEFAULT); CFS_PREFETCH_ALL streams after a list
 * too, without a budget.  Every mode but CFS_PREFETCH_NONE also
 * turns on the guesses a first read makes (a file whole, its directory's
 * small files: predict.c), which the list and the stream skip.  The stream
 * keeps many fetches in flight but behind every demand read and every
 * prediction.  A demand
 * read of a chunk that is queued but not started fetches it at once (it
 * jumps the queue); one being fetched waits for that fetch.  0 or -errno. */
enum cfs_prefetch_mode {
	CFS_PREFETCH_NONE = 0,
	CFS_PREFETCH_LIST,
	CFS_PREFETCH_STREAM,
	CFS_PREFETCH_ALL,
};
#define CFS_PREFETCH_BUDGET_DEFAULT (1ull << 30)
int cfs_image_prefetch_start(struct cfs_image *img, enum cfs_prefetch_mode mode, uint64_t budget);

/* Keeps what the stream fetches as the store sent it, in DIR/stage/<image
 * hex>/ (made, emptied now and when the image is freed), for reads to
 * decode and verify when they want it: the stream then costs no
 * decompression or hashing of what nobody reads (lib/image/stage.c).
 * Without it the stream decodes into the cache.  0 or -errno. */
int cfs_image_set_stage(struct cfs_image *img, const char *dir);

/* The image's prefetch list, fetched from the store now and verified:
 * 0 and the chunk numbers in *chunks (malloc'd, the caller frees; NULL
 * when *count is 0, which is also the answer for an image without one),
 * or the error of the fetch: -ENOENT (object missing), -EBADMSG,
 * -EUCLEAN (corrupt list), -EPROTONOSUPPORT, -ENOMEM. */
int cfs_image_prefetch_list(struct cfs_image *img, uint32_t **chunks, size_t *count);

#endif /* CFS_IMAGE_H */
