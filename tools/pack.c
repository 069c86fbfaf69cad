/* SPDX-License-Identifier: MIT */
/*
 * cfs-pack: turns a directory or a tar archive into an image in a store.
 *
 * The source walker (main thread) feeds the builder and the chunker; sealed
 * chunks go through a bounded queue to N workers that hash, compress and
 * store them, so memory stays bounded however large the files are.  The
 * index is written last, after every chunk is durable, and the tag after
 * the index: a reader never sees a tag whose image is incomplete.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "builder.h"
#include "chunker.h"
#include "codec.h"
#include "digest.h"
#include "fetch.h"
#include "format.h"
#include "index.h"
#include "profile.h"
#include "sign.h"
#include "store.h"
#include "util.h"

#include "pack.h"

#define PROG "cfs-pack"
#define PROGRESS_NS 500000000ull
/* Workers for a remote store: each spends most of its time waiting for a
 * HEAD or a PUT, not compressing. */
#define REMOTE_JOBS_MIN 16

struct job {
	uint32_t chunk;
	void *data;
	size_t len;
};

struct cfs_pack_pipe {
	pthread_mutex_t mu;
	pthread_cond_t not_empty, not_full;
	struct job *q;
	size_t cap, head, count;
	bool closing;
	int err;               /* first worker error; stops the feed */

	struct cfs_pack *p;
	struct cfs_store *st;
	struct cfs_builder *b;
	uint32_t chunk_size;
	int level;

	/* Under mu. */
	uint64_t chunks, new_objects, present, stored_bytes;

	pthread_t *threads;
	unsigned nthreads, started;

	bool progress;
	uint64_t t0, last_progress;
};

/* First error message of the pack: written once, read by main(). */
static pthread_mutex_t fail_mu = PTHREAD_MUTEX_INITIALIZER;
static char fail_msg[PATH_MAX + 256];
static int fail_err;

int cfs_pack_fail(struct cfs_pack *p, int err, const char *fmt, ...)
{
	va_list ap;

	(void)p;
	pthread_mutex_lock(&fail_mu);
	if (!fail_err) {
		fail_err = err;
		va_start(ap, fmt);
		vsnprintf(fail_msg, sizeof(fail_msg), fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&fail_mu);
	return err;
}

/* ---- workers ---- */

static int store_chunk(struct cfs_pack_pipe *pp, const struct job *j, void *obj, size_t cap,
		       bool *is_new, size_t *stored)
{
	cfs_digest d;
	char hex[CFS_DIGEST_HEX_LEN + 1];
	uint64_t oldlen;
	ssize_t n;
	int ret;

	cfs_sha256(j->data, j->len, &d);
	ret = cfs_store_has(pp->st, &d, &oldlen);
	if (ret == 1) {
		/* Present: nothing to upload.  The index records the size of the
		 * object the store holds, which is what a reader will fetch. */
		*is_new = false;
		*stored = (size_t)oldlen;
		goto set;
	} else if (ret < 0) {
		goto fail;
	}
	n = cfs_obj_encode(obj, cap, j->data, j->len, pp->level);
	if (n < 0) {
		ret = (int)n;
		cfs_digest_hex(&d, hex);
		return cfs_pack_fail(pp->p, ret, "compressing chunk %s: %s", hex, cfs_strerror(ret));
	}
	ret = cfs_store_put_absent(pp->st, &d, obj, (size_t)n);
	if (ret < 0)
		goto fail;
	*is_new = ret == 1;
	*stored = (size_t)n;
set:
	ret = cfs_builder_chunk_set(pp->b, j->chunk, &d, (uint32_t)j->len, (uint32_t)*stored);
	if (ret < 0)
		return cfs_pack_fail(pp->p, ret, "recording chunk %u: %s", j->chunk,
				     cfs_strerror(ret));
	return 0;
fail:
	cfs_digest_hex(&d, hex);
	return cfs_pack_fail(pp->p, ret, "%s: object %s: %s", cfs_store_location(pp->st), hex,
			     cfs_strerror(ret));
}

static void *worker(void *arg)
{
	struct cfs_pack_pipe *pp = arg;
	size_t cap = cfs_obj_bound(pp->chunk_size);
	void *obj = malloc(cap);

	for (;;) {
		struct job j;
		bool skip, is_new = false;
		size_t stored = 0;
		int ret;

		pthread_mutex_lock(&pp->mu);
		while (!pp->count && !pp->closing)
			pthread_cond_wait(&pp->not_empty, &pp->mu);
		if (!pp->count) {
			pthread_mutex_unlock(&pp->mu);
			break;
		}
		j = pp->q[pp->head];
		pp->head = (pp->head + 1) % pp->cap;
		pp->count--;
		pthread_cond_signal(&pp->not_full);
		if (!obj && !pp->err) {
			pp->err = cfs_pack_fail(pp->p, -ENOMEM, "worker buffer: %s",
						cfs_strerror(-ENOMEM));
			pthread_cond_broadcast(&pp->not_full);
		}
		skip = pp->err != 0;
		pthread_mutex_unlock(&pp->mu);

		/* After an error the queue is only drained, so that the feed
		 * never waits on a full queue nobody serves. */
		ret = skip ? 0 : store_chunk(pp, &j, obj, cap, &is_new, &stored);
		free(j.data);
		if (skip)
			continue;

		pthread_mutex_lock(&pp->mu);
		if (ret < 0) {
			if (!pp->err)
				pp->err = ret;
			pthread_cond_broadcast(&pp->not_full);
		} else if (is_new) {
			pp->new_objects++;
			pp->stored_bytes += stored;
		} else {
			pp->present++;
		}
		pthread_mutex_unlock(&pp->mu);
	}
	free(obj);
	return NULL;
}

static void progress(struct cfs_pack_pipe *pp, bool final)
{
	uint64_t now = cfs_now_ns();
	double s;

	if (!pp->progress || (!final && now - pp->last_progress < PROGRESS_NS))
		return;
	pp->last_progress = now;
	if (final) {
		fputs("\r\033[K", stderr);
		return;
	}
	s = (double)(now - pp->t0) / 1e9;
	fprintf(stderr, "\r\033[K" PROG ": %llu files, %.1f MB, %llu chunks, %.1f s",
		(unsigned long long)pp->p->files, (double)pp->p->bytes_in / 1e6,
		(unsigned long long)pp->chunks, s);
}

/* The chunker's emit: queue the chunk, waiting while the queue is full. */
static int emit(void *ctx, uint32_t chunk, void *data, size_t len)
{
	struct cfs_pack_pipe *pp = ctx;
	int err;

	pthread_mutex_lock(&pp->mu);
	while (pp->count == pp->cap && !pp->err)
		pthread_cond_wait(&pp->not_full, &pp->mu);
	err = pp->err;
	if (!err) {
		pp->q[(pp->head + pp->count) % pp->cap] = (struct job){ chunk, data, len };
		pp->count++;
		pp->chunks++;
		pthread_cond_signal(&pp->not_empty);
	}
	pthread_mutex_unlock(&pp->mu);
	if (err) {
		free(data);
		return err;
	}
	progress(pp, false);
	return 0;
}

static int pipe_start(struct cfs_pack_pipe *pp, unsigned nthreads)
{
	int ret;

	pp->nthreads = nthreads;
	pp->cap = 2 * (size_t)nthreads;
	pp->q = calloc(pp->cap, sizeof(*pp->q));
	pp->threads = calloc(nthreads, sizeof(*pp->threads));
	if (!pp->q || !pp->threads)
		return -ENOMEM;
	for (pp->started = 0; pp->started < nthreads; pp->started++) {
		ret = pthread_create(&pp->threads[pp->started], NULL, worker, pp);
		if (ret)
			return -ret;
	}
	return 0;
}

/* Lets the workers finish the queue and stop; returns their first error. */
static int pipe_stop(struct cfs_pack_pipe *pp)
{
	pthread_mutex_lock(&pp->mu);
	pp->closing = true;
	pthread_cond_broadcast(&pp->not_empty);
	pthread_mutex_unlock(&pp->mu);
	for (unsigned i = 0; i < pp->started; i++)
		pthread_join(pp->threads[i], NULL);
	pp->started = 0;
	/* Anything still queued (no thread could start) is dropped. */
	while (pp->count) {
		free(pp->q[pp->head].data);
		pp->head = (pp->head + 1) % pp->cap;
		pp->count--;
	}
	return pp->err;
}

int cfs_pack_data(struct cfs_pack *p, const char *path, uint64_t off, const void *buf, size_t len)
{
	int ret = cfs_chunker_file_data(p->ch, off, buf, len);

	if (ret < 0)
		return cfs_pack_fail(p, ret, "%s: %s", path, cfs_strerror(ret));
	p->bytes_in += len;
	return 0;
}

/* ---- main ---- */

/* A tag moved without --sign keeps its old signature, which --trust mounts
 * go on following: say so rather than let it surprise anyone. */
static void warn_stale_signature(struct cfs_store *st, const char *tag, const cfs_digest *ref)
{
	struct cfs_sig *s = malloc(sizeof(*s));
	char old[CFS_REF_STRLEN];
	void *buf;
	size_t len;

	if (!s)
		return;
	if (!cfs_store_sig_get(st, tag, CFS_SIG_FILE_MAX, &buf, &len)) {
		if (!cfs_sig_parse(buf, len, s) && !cfs_digest_eq(&s->ref, ref)) {
			cfs_digest_ref(&s->ref, old);
			cfs_warn("tag %s keeps its signature for %s: cfs-mount --trust mounts that "
				 "one until the new image is signed (cfs-sign sign)", tag, old);
		}
		free(buf);
	}
	free(s);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: " PROG " [-q] [--tag NAME [--sign KEY]] [-j N] [--chunk-size SIZE] [--level N]\n"
		"                [--small-max SIZE] [--group-bits N] [--ca-file FILE]\n"
		"                [--profile FILE] [--platform OS/ARCH[/VARIANT]] SOURCE STORE\n"
		"       " PROG " --add-profile FILE [-q] [--tag NAME [--sign KEY]] [--ca-file FILE]\n"
		"                STORE IMAGE\n"
		"\n"
		"Packs SOURCE into STORE (a directory, created if absent, or\n"
		"s3://BUCKET[/PREFIX]) and prints the image reference, sha256:<hex>, on\n"
		"stdout.  SOURCE is a directory, a tar archive (plain, gzip, zstd, xz,\n"
		"bzip2), an OCI image layout as oci:DIR[:REF], or a docker save archive as\n"
		"docker-archive:FILE[:NAME:TAG]; an image's config is stored with it.\n"
		"\n"
		"  -q, --quiet           no summary on stderr\n"
		"      --platform OS/ARCH[/VARIANT]  the image to take from a multi-platform\n"
		"                        index (default: this machine's)\n"
		"  -t, --tag NAME        point tag NAME at the image\n"
		"      --sign KEY        sign the tag with the Ed25519 private key in KEY (PEM,\n"
		"                        openssl genpkey -algorithm ed25519): cfs-mount --trust\n"
		"                        mounts only signed tags\n"
		"  -j, --jobs N          worker threads (default: online CPUs; at least %d\n"
		"                        for an s3:// store, where uploads wait on the network)\n"
		"  -c, --chunk-size SIZE chunk size, 64K..64M (default 1M)\n"
		"  -l, --level N         zstd level (default %d)\n"
		"      --small-max SIZE  files smaller than this share group chunks (default 64K)\n"
		"      --group-bits N    groups average 2^N small files (default %d)\n"
		"      --profile FILE    lay out first, in access order, the files that the\n"
		"                        access profile FILE (cfs-mount --record) names, and\n"
		"                        give the image their chunks as its prefetch list\n"
		"      --add-profile FILE  give IMAGE a prefetch list from FILE without\n"
		"                        repacking: writes a new index (no chunk) and prints\n"
		"                        its reference\n"
		"      --ca-file FILE    verify TLS servers with the CA certificates in FILE\n"
		"                        (PEM) instead of the system's; without it,\n"
		"                        $CURL_CA_BUNDLE, then $SSL_CERT_FILE, if set\n",
		REMOTE_JOBS_MIN, CFS_ZSTD_LEVEL_DEFAULT, CFS_GROUP_BITS_DEFAULT);
}

static int parse_uint(const char *s, long min, long max, long *out)
{
	unsigned long v;
	int ret = cfs_parse_uint(s, (unsigned long)min, (unsigned long)max, &v);

	if (ret == 0)
		*out = (long)v;
	return ret;
}

/* A size (cfs_parse_size) in min..max, which fit 32 bits. */
static int parse_size_range(const char *s, uint64_t min, uint64_t max, uint32_t *out)
{
	uint64_t v;

	if (cfs_parse_size(s, &v) < 0 || v < min || v > max)
		return -EINVAL;
	*out = (uint32_t)v;
	return 0;
}

/* The CA bundle of --ca-file or the environment into fopts; *ca_file is
 * the caller's to free. */
static int resolve_ca(const char *ca_arg, struct cfs_fetch_opts *fopts, char **ca_file)
{
	int ret = cfs_fetch_ca_resolve(ca_arg, ca_file);

	if (ret < 0) {
		fprintf(stderr, PROG ": %s%s: %s\n", ca_arg ? "--ca-file " : "CA bundle",
			ca_arg ? ca_arg : "", cfs_strerror(ret));
		return ret;
	}
	fopts->ca_file = *ca_file;
	return 0;
}

/* The store directory's identity, so that the walk can skip it. */
static void note_store(struct cfs_pack *p, const char *location)
{
	struct stat sb;

	if (!strncmp(location, "file://", 7))
		location += 7;
	if (stat(location, &sb) == 0 && S_ISDIR(sb.st_mode)) {
		p->store_known = true;
		p->store_dev = sb.st_dev;
		p->store_ino = sb.st_ino;
	}
}

/* Writes one object (an index, a prefetch list, an image config): named by
 * its content. */
static int write_index(struct cfs_store *st, const void *idx, size_t len, int level,
		       cfs_digest *d, size_t *stored)
{
	size_t cap = cfs_obj_bound(len);
	void *obj = malloc(cap);
	ssize_t n;
	int ret;

	if (!obj)
		return -ENOMEM;
	cfs_sha256(idx, len, d);
	n = cfs_obj_encode(obj, cap, idx, len, level);
	if (n < 0) {
		ret = (int)n;
		goto out;
	}
	ret = cfs_store_put(st, d, obj, (size_t)n);
	*stored = ret == 1 ? (size_t)n : 0;
out:
	free(obj);
	return ret < 0 ? ret : 0;
}

/* Maps a profile onto a serialised index, writes the prefetch list object
 * and sets the index's header to name it.  *count 0: the profile names
 * nothing in this image, and the index is left as it was. */
static int attach_prefetch(struct cfs_store *st, const struct cfs_profile *prof, void *idx,
			   size_t len, int level, size_t *count, size_t *stored)
{
	struct cfs_index *ix = NULL;
	uint32_t *chunks = NULL;
	void *copy = malloc(len), *list = NULL;
	size_t n = 0, list_len;
	cfs_digest d;
	int ret;

	*count = 0;
	*stored = 0;
	if (!copy)
		return -ENOMEM;
	memcpy(copy, idx, len);
	ret = cfs_index_open(copy, len, &ix);
	if (ret < 0) {
		free(copy);
		return ret;
	}
	ret = cfs_pack_prefetch_map(ix, prof, &chunks, &n);
	if (ret < 0 || n == 0)
		goto out;
	ret = cfs_prefetch_encode(chunks, n, &list, &list_len);
	if (ret < 0)
		goto out;
	ret = write_index(st, list, list_len, level, &d, stored);
	if (ret < 0)
		goto out;
	ret = cfs_index_set_prefetch(idx, len, &d);
	if (ret == 0)
		*count = n;
out:
	free(list);
	free(chunks);
	cfs_index_free(ix);
	return ret;
}

/* --add-profile: the image's index with a prefetch list, as a new image.
 * Writes the list object and the index object, never a chunk. */
static int add_profile(struct cfs_store *st, const char *image, const struct cfs_profile *prof,
		       int level, cfs_digest *ref, size_t *count)
{
	cfs_digest old;
	void *obj = NULL, *raw = NULL;
	size_t objlen, stored;
	int64_t raw_size;
	ssize_t n;
	int ret;

	ret = cfs_store_resolve(st, image, &old);
	if (ret < 0) {
		fprintf(stderr, PROG ": %s: %s\n", image,
			ret == -ENOENT ? "no such tag in the store" : cfs_strerror(ret));
		return ret;
	}
	ret = cfs_store_get(st, &old, &obj, &objlen);
	if (ret < 0)
		goto fail_index;
	raw_size = cfs_obj_raw_size(obj, objlen);
	ret = raw_size < 0 ? (int)raw_size : -EUCLEAN;
	if (raw_size <= 0 || (uint64_t)raw_size > CFS_INDEX_MAX_SIZE)
		goto fail_index;
	raw = malloc((size_t)raw_size);
	ret = -ENOMEM;
	if (!raw)
		goto fail_index;
	n = cfs_obj_decode(raw, (size_t)raw_size, obj, objlen, &old);
	ret = n < 0 ? (int)n : -EUCLEAN;
	if (n != raw_size)
		goto fail_index;
	/* Opens (validates) a copy of it before anything is written. */
	ret = attach_prefetch(st, prof, raw, (size_t)n, level, count, &stored);
	if (ret < 0)
		goto fail_index;
	if (*count == 0) {
		fprintf(stderr, PROG ": %s: the profile names no data of this image\n", image);
		ret = -ENOENT;
		goto out;
	}
	ret = write_index(st, raw, (size_t)n, level, ref, &stored);
	if (ret < 0) {
		fprintf(stderr, PROG ": %s: writing the index: %s\n", cfs_store_location(st),
			cfs_strerror(ret));
		goto out;
	}
	ret = cfs_store_sync(st);
	if (ret < 0)
		fprintf(stderr, PROG ": %s: sync: %s\n", cfs_store_location(st), cfs_strerror(ret));
	goto out;
fail_index:
	fprintf(stderr, PROG ": %s: index: %s\n", image,
		ret == -ENOENT ? "index object missing from the store" : cfs_strerror(ret));
out:
	free(raw);
	free(obj);
	return ret;
}

static void human(double v, char *buf, size_t len)
{
	const char *u[] = { "B", "kB", "MB", "GB", "TB" };
	unsigned i = 0;

	while (v >= 1000 && i + 1 < CFS_ARRAY_SIZE(u)) {
		v /= 1000;
		i++;
	}
	snprintf(buf, len, i ? "%.1f %s" : "%.0f %s", v, u[i]);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "quiet", no_argument, NULL, 'q' },
		{ "tag", required_argument, NULL, 't' },
		{ "jobs", required_argument, NULL, 'j' },
		{ "chunk-size", required_argument, NULL, 'c' },
		{ "level", required_argument, NULL, 'l' },
		{ "small-max", required_argument, NULL, 'S' },
		{ "group-bits", required_argument, NULL, 'G' },
		{ "ca-file", required_argument, NULL, 'A' },
		{ "profile", required_argument, NULL, 'P' },
		{ "add-profile", required_argument, NULL, 'a' },
		{ "platform", required_argument, NULL, 'p' },
		{ "sign", required_argument, NULL, 'K' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct cfs_chunker_opts copts = { 0 };
	struct cfs_pack p = { 0 };
	struct cfs_pack_pipe pp = { .mu = PTHREAD_MUTEX_INITIALIZER,
				    .not_empty = PTHREAD_COND_INITIALIZER,
				    .not_full = PTHREAD_COND_INITIALIZER };
	struct cfs_builder_stats bs = { 0 };
	struct cfs_fetch_opts fopts = { 0 };
	struct cfs_store_opts sopts = { .fetch = &fopts };
	struct cfs_store *st = NULL;
	const char *tag = NULL, *source, *store_loc, *ca_arg = NULL;
	const char *profile_path = NULL, *add_profile_path = NULL, *platform = NULL;
	const char *image_src = NULL; /* oci: or docker-archive: after the prefix */
	const char *sign_path = NULL;
	struct cfs_key *sign_key = NULL;
	bool docker_archive = false;
	void *config = NULL;
	size_t config_len = 0, config_stored = 0;
	struct cfs_profile *prof = NULL;
	size_t prefetch_count = 0, list_stored = 0;
	char *ca_file = NULL;
	bool quiet = false, jobs_set = false, is_dir;
	long jobs, level = CFS_ZSTD_LEVEL_DEFAULT, v = 0;
	void *idx = NULL;
	size_t idx_len = 0, idx_stored = 0;
	cfs_digest ref;
	char refstr[CFS_REF_STRLEN];
	struct stat sb;
	int opt, src_fd = -1, ret, rc = 1;

	jobs = sysconf(_SC_NPROCESSORS_ONLN);
	if (jobs < 1)
		jobs = 1;
	while ((opt = getopt_long(argc, argv, "qt:j:c:l:h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'q':
			quiet = true;
			break;
		case 't':
			tag = optarg;
			if (!cfs_tag_name_valid(tag)) {
				fprintf(stderr, PROG ": invalid tag name: %s\n", tag);
				return 2;
			}
			break;
		case 'j':
			if (parse_uint(optarg, 1, 1024, &jobs) < 0) {
				fprintf(stderr, PROG ": -j: expected 1..1024: %s\n", optarg);
				return 2;
			}
			jobs_set = true;
			break;
		case 'c':
			if (parse_size_range(optarg, 64u << 10, CFS_CHUNK_MAX_SIZE,
					     &copts.chunk_size) < 0) {
				fprintf(stderr, PROG ": --chunk-size: expected 64K..64M: %s\n", optarg);
				return 2;
			}
			break;
		case 'l':
			if (parse_uint(optarg, 1, 22, &level) < 0) {
				fprintf(stderr, PROG ": --level: expected 1..22: %s\n", optarg);
				return 2;
			}
			break;
		case 'S':
			if (parse_size_range(optarg, 1, CFS_CHUNK_MAX_SIZE, &copts.small_max) < 0) {
				fprintf(stderr, PROG ": --small-max: bad size: %s\n", optarg);
				return 2;
			}
			break;
		case 'G':
			if (parse_uint(optarg, 1, 32, &v) < 0) {
				fprintf(stderr, PROG ": --group-bits: expected 1..32: %s\n", optarg);
				return 2;
			}
			copts.group_bits = (uint32_t)v;
			break;
		case 'A':
			ca_arg = optarg;
			break;
		case 'P':
			profile_path = optarg;
			break;
		case 'a':
			add_profile_path = optarg;
			break;
		case 'p':
			platform = optarg;
			break;
		case 'K':
			sign_path = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (argc - optind != 2) {
		usage(stderr);
		return 2;
	}
	if (sign_path && !tag) {
		fprintf(stderr, PROG ": --sign signs a tag: give --tag NAME\n");
		return 2;
	}
	if (profile_path && add_profile_path) {
		fprintf(stderr, PROG ": --profile and --add-profile exclude each other\n");
		return 2;
	}
	source = argv[optind];
	store_loc = argv[optind + 1];
	if (add_profile_path)
		store_loc = argv[optind]; /* STORE IMAGE */
	if (!copts.chunk_size)
		copts.chunk_size = CFS_CHUNK_SIZE_DEFAULT;
	if (copts.small_max >= copts.chunk_size) {
		fprintf(stderr, PROG ": --small-max must be below the chunk size\n");
		return 2;
	}
	/* The chunker's default, resolved here so that the sources know it. */
	if (!copts.small_max)
		copts.small_max = CFS_MIN(CFS_SMALL_MAX_DEFAULT, copts.chunk_size / 2);
	cfs_log_setup(PROG, quiet ? CFS_LOG_ERR : CFS_LOG_WARN, stderr);
	cfs_malloc_tune();

	/* The key before any work: a wrong path must not cost a whole pack. */
	if (sign_path) {
		ret = cfs_key_load(sign_path, &sign_key);
		if (ret < 0) {
			fprintf(stderr, PROG ": --sign %s: %s\n", sign_path,
				ret == -EINVAL ? "not an Ed25519 private key (PEM)" : cfs_strerror(ret));
			goto out;
		}
	}

	if (profile_path || add_profile_path) {
		const char *pp_path = profile_path ? profile_path : add_profile_path;

		ret = cfs_profile_load(pp_path, &prof);
		if (ret < 0) {
			fprintf(stderr, PROG ": %s: %s\n", pp_path,
				ret == -EINVAL ? "not a valid profile" : cfs_strerror(ret));
			goto out;
		}
	}
	if (add_profile_path) {
		ret = resolve_ca(ca_arg, &fopts, &ca_file);
		if (ret < 0)
			goto out;
		ret = cfs_store_open_opts(store_loc, 0, &sopts, &st);
		if (ret < 0) {
			fprintf(stderr, PROG ": %s: %s\n", store_loc, cfs_strerror(ret));
			goto out;
		}
		ret = add_profile(st, argv[optind + 1], prof, (int)level, &ref, &prefetch_count);
		if (ret < 0)
			goto out;
		goto done;
	}
	if (prof) {
		ret = cfs_pack_prof_new(prof, &p.prof);
		if (ret < 0) {
			fprintf(stderr, PROG ": %s: %s\n", profile_path, cfs_strerror(ret));
			goto out;
		}
	}

	/* The source first, so that a typo does not leave an empty store. */
	if (!strncmp(source, "oci:", 4)) {
		image_src = source + 4;
	} else if (!strncmp(source, "docker-archive:", 15)) {
		image_src = source + 15;
		docker_archive = true;
	}
	if (image_src) {
		is_dir = false;
	} else if (!strcmp(source, "-")) {
		src_fd = dup(STDIN_FILENO);
	} else {
		src_fd = open(source, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	}
	if (!image_src && (src_fd < 0 || fstat(src_fd, &sb) < 0)) {
		fprintf(stderr, PROG ": %s: %s\n", source, strerror(errno));
		goto out;
	}
	if (!image_src)
		is_dir = S_ISDIR(sb.st_mode);
	if (!image_src && !is_dir) {
		/* Reads of a FIFO or a pipe must block. */
		int fl = fcntl(src_fd, F_GETFL);
		if (fl >= 0)
			fcntl(src_fd, F_SETFL, fl & ~O_NONBLOCK);
	}

	ret = resolve_ca(ca_arg, &fopts, &ca_file);
	if (ret < 0)
		goto out;
	ret = cfs_store_open_opts(store_loc, CFS_STORE_CREATE, &sopts, &st);
	if (ret == -EROFS && strstr(store_loc, "://")) {
		fprintf(stderr, PROG ": %s: a read-only store (a web server serves a store, it "
			"does not take one): pack into a directory or s3:// store\n", store_loc);
		goto out;
	} else if (ret < 0) {
		fprintf(stderr, PROG ": %s: %s\n", store_loc,
			ret == -EUCLEAN ? "exists but is not a cfs store" : cfs_strerror(ret));
		goto out;
	}
	note_store(&p, store_loc);
	if (cfs_store_is_remote(st) && !jobs_set && jobs < REMOTE_JOBS_MIN)
		jobs = REMOTE_JOBS_MIN;

	ret = cfs_builder_new(copts.chunk_size, &p.b);
	if (ret < 0) {
		fprintf(stderr, PROG ": builder: %s\n", cfs_strerror(ret));
		goto out;
	}
	p.small_max = copts.small_max;
	pp.p = &p;
	pp.st = st;
	pp.b = p.b;
	pp.chunk_size = copts.chunk_size;
	pp.level = (int)level;
	pp.progress = !quiet && isatty(STDERR_FILENO);
	pp.t0 = pp.last_progress = cfs_now_ns();
	p.pipe = &pp;
	ret = cfs_chunker_new(&copts, p.b, emit, &pp, &p.ch);
	if (ret < 0) {
		fprintf(stderr, PROG ": chunker: %s\n", cfs_strerror(ret));
		goto out;
	}
	ret = pipe_start(&pp, (unsigned)jobs);
	if (ret < 0) {
		fprintf(stderr, PROG ": starting workers: %s\n", cfs_strerror(ret));
		goto out_pipe;
	}

	if (image_src) {
		ret = cfs_pack_oci(&p, image_src, docker_archive, platform, &config, &config_len);
	} else if (is_dir) {
		close(src_fd);
		src_fd = -1;
		ret = cfs_pack_dir(&p, source);
	} else {
		ret = cfs_pack_tar(&p, src_fd, source);
	}
	if (ret == 0) {
		ret = cfs_chunker_flush(p.ch);
		if (ret < 0)
			cfs_pack_fail(&p, ret, "chunker: %s", cfs_strerror(ret));
	}
	/* Always drain: the workers must be joined before anything is freed. */
	if (pipe_stop(&pp) < 0 || ret < 0 || fail_err)
		goto out_failed;
	progress(&pp, true);

	ret = cfs_builder_finish(p.b, &idx, &idx_len, &bs);
	if (ret < 0) {
		fprintf(stderr, PROG ": building the index: %s\n", cfs_strerror(ret));
		goto out_pipe;
	}
	if (config) {
		cfs_digest cd;

		ret = write_index(st, config, config_len, (int)level, &cd, &config_stored);
		if (ret == 0)
			ret = cfs_index_set_config(idx, idx_len, &cd, config_len);
		if (ret < 0) {
			fprintf(stderr, PROG ": %s: image config: %s\n", store_loc,
				cfs_strerror(ret));
			goto out_pipe;
		}
	}
	if (prof) {
		ret = attach_prefetch(st, prof, idx, idx_len, (int)level, &prefetch_count,
				      &list_stored);
		if (ret < 0) {
			fprintf(stderr, PROG ": %s: prefetch list: %s\n", store_loc,
				cfs_strerror(ret));
			goto out_pipe;
		}
		if (!prefetch_count)
			cfs_warn("%s: names no data of this image: no prefetch list", profile_path);
	}
	ret = write_index(st, idx, idx_len, (int)level, &ref, &idx_stored);
	if (ret < 0) {
		fprintf(stderr, PROG ": %s: writing the index: %s\n", store_loc, cfs_strerror(ret));
		goto out_pipe;
	}
	ret = cfs_store_sync(st);
	if (ret < 0) {
		fprintf(stderr, PROG ": %s: sync: %s\n", store_loc, cfs_strerror(ret));
		goto out_pipe;
	}
done:
	/* The signature before the tag: under --trust the signature alone
	 * names the image, so a mount never sees a signed tag half-moved. */
	if (tag && sign_key) {
		ret = cfs_store_sign(st, sign_key, tag, &ref, 0);
		if (ret < 0) {
			fprintf(stderr, PROG ": %s: signing tag %s: %s\n", store_loc, tag,
				cfs_strerror(ret));
			goto out_pipe;
		}
	}
	if (tag && !sign_key)
		warn_stale_signature(st, tag, &ref);
	if (tag) {
		ret = cfs_store_tag_set(st, tag, &ref);
		if (ret < 0) {
			fprintf(stderr, PROG ": %s: tag %s: %s\n", store_loc, tag, cfs_strerror(ret));
			goto out_pipe;
		}
	}

	if (!quiet && add_profile_path) {
		fprintf(stderr, PROG ": prefetch list of %zu chunks added\n", prefetch_count);
	} else if (!quiet) {
		double s = (double)(cfs_now_ns() - pp.t0) / 1e9;
		char in[32], wr[32];

		human((double)p.bytes_in, in, sizeof(in));
		human((double)(pp.stored_bytes + idx_stored + list_stored + config_stored), wr,
		      sizeof(wr));
		fprintf(stderr,
			PROG ": %llu files, %llu dirs, %s in, %llu chunks, %llu new objects "
			"(%llu already stored), %s written, index %zu bytes, %.2f s, %.1f MB/s\n",
			(unsigned long long)bs.files, (unsigned long long)bs.dirs, in,
			(unsigned long long)pp.chunks, (unsigned long long)pp.new_objects,
			(unsigned long long)pp.present, wr, idx_len, s,
			s > 0 ? (double)p.bytes_in / 1e6 / s : 0.0);
		if (prof)
			fprintf(stderr, PROG ": prefetch list of %zu chunks\n", prefetch_count);
	}
	cfs_digest_ref(&ref, refstr);
	if (printf("%s\n", refstr) < 0 || fflush(stdout) != 0) {
		fprintf(stderr, PROG ": stdout: %s\n", strerror(errno));
		goto out_pipe;
	}
	rc = 0;
	goto out_pipe;

out_failed:
	progress(&pp, true);
	if (fail_err)
		fprintf(stderr, PROG ": %s\n", fail_msg);
	else
		fprintf(stderr, PROG ": %s\n", cfs_strerror(ret < 0 ? ret : pp.err));
out_pipe:
	pipe_stop(&pp);
	free(pp.q);
	free(pp.threads);
out:
	free(idx);
	free(config);
	cfs_pack_prof_free(p.prof);
	cfs_profile_free(prof);
	cfs_key_free(sign_key);
	cfs_chunker_free(p.ch);
	cfs_builder_free(p.b);
	cfs_store_free(st);
	free(ca_file);
	if (src_fd >= 0)
		close(src_fd);
	return rc;
}
