/* SPDX-License-Identifier: MIT */
/*
 * The daemon's counters as one JSON object: written to --stats-file at exit
 * and on SIGUSR1, and answered to getxattr("user.cfs.stats") on the root of
 * the mount, which is what `cfs-mount --stats MOUNTPOINT` reads.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "fetch.h"
#include "fs.h"
#include "image.h"
#include "learned.h"
#include "store.h"
#include "util.h"

int cfs_fs_stats_json(struct cfs_fs *fs, char *buf, size_t cap)
{
	struct cfs_fetch_stats fst = { 0 };
	struct cfs_store_stats ss;
	struct cfs_cache_stats cs;
	struct cfs_image_stats is;
	struct cfs_learned_stats ls;
	char *stores = NULL;
	size_t len = 0;
	FILE *f;
	int n;

	cfs_store_stats_get(fs->store, &ss);
	cfs_cache_stats_get(fs->cache, &cs);
	cfs_image_stats_get(fs->img, &is);
	/* A local store has no fetcher: its counters stay 0, so that every
	 * mount answers with the same keys. */
	cfs_store_fetch_stats(fs->store, &fst);
	n = snprintf(buf, cap,
		     "{\"store_gets\":%" PRIu64 ",\"store_get_bytes\":%" PRIu64
		     ",\"store_get_errors\":%" PRIu64 ",\"chunk_fetches\":%" PRIu64
		     ",\"chunk_bad\":%" PRIu64 ",\"cache_mem_hits\":%" PRIu64
		     ",\"cache_disk_hits\":%" PRIu64 ",\"cache_misses\":%" PRIu64
		     ",\"reads\":%" PRIu64 ",\"read_bytes\":%" PRIu64 ",\"read_errors\":%" PRIu64
		     ",\"cache_load_errors\":%" PRIu64 ",\"cache_disk_bad\":%" PRIu64
		     ",\"cache_disk_write_errors\":%" PRIu64 ",\"cache_disk_bytes\":%" PRIu64
		     ",\"cache_mem_bytes\":%" PRIu64 ",\"cache_evictions\":%" PRIu64
		     ",\"fetch_requests\":%" PRIu64 ",\"fetch_attempts\":%" PRIu64
		     ",\"fetch_retries\":%" PRIu64 ",\"fetch_errors\":%" PRIu64 ",\"fetch_not_found\":%" PRIu64
		     ",\"fetch_timeouts\":%" PRIu64 ",\"fetch_bytes\":%" PRIu64
		     ",\"fetch_bytes_sent\":%" PRIu64 ",\"fetch_inflight\":%" PRIu64
		     ",\"fetch_queued\":%" PRIu64 ",\"readahead_chunks\":%" PRIu64
		     ",\"readahead_dropped\":%" PRIu64 ",\"cache_rescans\":%" PRIu64
		     ",\"prefetch_queued\":%" PRIu64 ",\"prefetch_done\":%" PRIu64
		     ",\"demand_fetches\":%" PRIu64 ",\"hint_chunks\":%" PRIu64 ",\"elf_hint_chunks\":%" PRIu64 ",\"stream_chunks\":%" PRIu64
		     ",\"stream_bytes\":%" PRIu64 ",\"readahead_pending\":%" PRIu64
		     ",\"stage_bytes\":%" PRIu64 ",\"stage_hits\":%" PRIu64 ",\"stage_bad\":%" PRIu64
		     ",\"cache_file_hits\":%" PRIu64 ",\"cache_verifies\":%" PRIu64
		     ",\"cache_stale\":%" PRIu64 ",\"cache_files_open\":%" PRIu64
		     ",\"cache_shared_waits\":%" PRIu64 ",\"cache_shared_hits\":%" PRIu64
		     ",\"cache_shared_timeouts\":%" PRIu64
		     ",\"read_splice\":%" PRIu64 ",\"read_copy\":%" PRIu64 ",\"splice\":%s",
		     ss.gets, ss.get_bytes, ss.get_errors, is.chunk_fetches, is.chunk_bad,
		     cs.mem_hits, cs.disk_hits, cs.misses, is.reads, is.read_bytes, is.read_errors,
		     cs.load_errors, cs.disk_bad, cs.disk_write_errors, cs.disk_bytes, cs.mem_bytes,
		     cs.evictions, fst.requests, fst.attempts, fst.retries, fst.errors,
		     fst.not_found, fst.timeouts,
		     fst.bytes, fst.bytes_sent, fst.inflight, fst.queued, is.ra_chunks,
		     is.ra_dropped, cs.rescans, is.prefetch_queued, is.prefetch_done, is.demand_fetches, is.hint_chunks, is.elf_hint_chunks,
		     is.stream_chunks, is.stream_bytes, is.ra_pending, is.stage_bytes,
		     is.stage_hits, is.stage_bad, cs.file_hits,
		     cs.verifies, cs.stale, cs.files_open, cs.shared_waits, cs.shared_hits,
		     cs.shared_timeouts,
		     atomic_load_explicit(&fs->read_splice, memory_order_relaxed),
		     atomic_load_explicit(&fs->read_copy, memory_order_relaxed),
		     fs->splice ? "true" : "false");
	if (n < 0 || (size_t)n >= cap)
		return -EOVERFLOW;
	/* The learned profile: where the one prefetched came from ("none"),
	 * the chunks it named, and what this mount left. */
	cfs_learned_stats_get(fs->learned, &ls);
	len = (size_t)n;
	n = snprintf(buf + len, cap - len,
		     ",\"learned\":\"%s\",\"learned_chunks\":%" PRIu64 ",\"learned_saves\":%" PRIu64
		     ",\"learned_records\":%" PRIu64,
		     ls.source, ls.chunks, ls.saves, ls.saved_records);
	if (n < 0 || (size_t)n >= cap - len)
		return -EOVERFLOW;
	n += (int)len;
	len = 0;
	/* Where the bytes came from: each store of a list (one for a single
	 * store), with the requests it failed and handed on to the next. */
	f = open_memstream(&stores, &len);
	if (!f)
		return -ENOMEM;
	for (size_t i = 0; i < cfs_store_count(fs->store); i++) {
		struct cfs_store *m = cfs_store_member(fs->store, i);

		cfs_store_stats_get(m, &ss);
		fprintf(f, "%s{\"location\":", i ? "," : ",\"stores\":[");
		cfs_json_str(f, cfs_store_location(m));
		fprintf(f, ",\"gets\":%" PRIu64 ",\"get_bytes\":%" PRIu64 ",\"get_errors\":%" PRIu64
			",\"passed_on\":%" PRIu64 "}",
			ss.gets, ss.get_bytes, ss.get_errors, cfs_store_passed_on(m));
	}
	fputs("]}", f);
	if (fclose(f) != 0) {
		free(stores);
		return -ENOMEM;
	}
	if ((size_t)n + len >= cap) {
		free(stores);
		return -EOVERFLOW;
	}
	memcpy(buf + n, stores, len + 1);
	free(stores);
	return n + (int)len;
}
