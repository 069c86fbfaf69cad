/* SPDX-License-Identifier: MIT */
/*
 * cfs-pack: turns a directory, a tar archive or a container image into an
 * image in a store.
 *
 * The thin CLI over libcfspack (pack.h): parses the options, opens the
 * store, picks the source and runs the pipeline, then signs and sets the
 * tag and prints the summary.  --profile-run runs the pipeline twice,
 * with a recorded run of the first image between (pack_run.c).  The tag
 * is set after the pipeline wrote the index, which it writes after every
 * chunk is durable: a reader never sees a tag whose image is incomplete.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chunker.h"
#include "codec.h"
#include "digest.h"
#include "fetch.h"
#include "format.h"
#include "profile.h"
#include "sign.h"
#include "store.h"
#include "util.h"

#include "open.h"
#include "pack.h"

#define PROG "cfs-pack"
/* Workers for a remote store: each spends most of its time waiting for a
 * HEAD or a PUT, not compressing. */
#define REMOTE_JOBS_MIN 16

/* The sources that a prefix selects; a path is a directory or a tar. */
static const struct cfs_pack_source *const prefixed[] = {
	&cfs_pack_source_oci,
	&cfs_pack_source_docker_archive,
	&cfs_pack_source_registry,
};

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
		"                [--small-max SIZE] [--group-bits N] [store options]\n"
		"                [--profile FILE | --profile-run CMD [--profile-timeout SEC]]\n"
		"                [--platform OS/ARCH[/VARIANT]] [--authfile FILE] [--ca-file FILE]\n"
		"                [--tls-verify=false] SOURCE STORE\n"
		"       " PROG " --add-profile FILE [-q] [--tag NAME [--sign KEY]]\n"
		"                [store options] STORE IMAGE\n"
		"\n"
		"Packs SOURCE into STORE (a directory, created if absent, or\n"
		"s3://BUCKET[/PREFIX]) and prints the image reference, sha256:<hex>, on\n"
		"stdout.  SOURCE is a directory, a tar archive (plain, gzip, zstd, xz,\n"
		"bzip2), an OCI image layout as oci:DIR[:REF], a docker save archive as\n"
		"docker-archive:FILE[:NAME:TAG], or an image in a registry as\n"
		"docker://HOST[:PORT]/REPO[:TAG|@sha256:HEX] (tag latest by default; its\n"
		"layers stream into the store, nothing is written to disk on the way); an\n"
		"image's config is stored with it.\n"
		"\n"
		"  -q, --quiet           no summary on stderr\n"
		"      --platform OS/ARCH[/VARIANT]  the image to take from a multi-platform\n"
		"                        index (default: this machine's)\n"
		"      --authfile FILE   docker:// credentials ({\"auths\":{\"HOST\":{\"auth\":..}}});\n"
		"                        default: $REGISTRY_AUTH_FILE, else\n"
		"                        $XDG_RUNTIME_DIR/containers/auth.json, else\n"
		"                        ~/.docker/config.json; --ca-file FILE (below) is\n"
		"                        trusted beside the system's CAs for the registry\n"
		"      --tls-verify=false  docker://: no TLS verification, and plain http when\n"
		"                        the registry does not speak TLS\n"
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
		"      --profile-run CMD  pack SOURCE, run /bin/sh -c CMD chrooted in that\n"
		"                        image mounted with cfs-mount --record (as root; CMD's\n"
		"                        output goes to stderr), then pack again with what it\n"
		"                        read as --profile; CMD failing is a warning, reading\n"
		"                        nothing an error.  cfs-mount: $CFS_MOUNT, else beside\n"
		"                        " PROG ", ../fs/cfs-mount from it, or " CFS_BINDIR "\n"
		"      --profile-timeout SEC  kill CMD after SEC seconds and pack with what\n"
		"                        it read until then (default %d)\n"
		"      --no-hints        store no hints: what each ELF file's loading opens,\n"
		"                        fetched with its first read (docs/FORMAT.md, \"Hints\")\n"
		"      --add-profile FILE  give IMAGE a prefetch list from FILE without\n"
		"                        repacking: writes a new index (no chunk) and prints\n"
		"                        its reference\n"
		"\n"
		CFS_OPEN_STORE_USAGE,
		REMOTE_JOBS_MIN, CFS_ZSTD_LEVEL_DEFAULT, CFS_GROUP_BITS_DEFAULT,
		CFS_PACK_RUN_TIMEOUT_DEFAULT);
}

/* An integer option in min..max, or a message and -EINVAL. */
static int arg_uint(const char *opt, const char *arg, long min, long max, long *out)
{
	unsigned long v;

	if (cfs_parse_uint(arg, (unsigned long)min, (unsigned long)max, &v) < 0) {
		fprintf(stderr, PROG ": %s: expected %ld..%ld: %s\n", opt, min, max, arg);
		return -EINVAL;
	}
	*out = (long)v;
	return 0;
}

/* A size option (cfs_parse_size) in min..max, which fit 32 bits, or the
 * message "<opt>: <want>: <arg>" and -EINVAL. */
static int arg_size(const char *opt, const char *arg, uint64_t min, uint64_t max,
		    const char *want, uint32_t *out)
{
	uint64_t v;

	if (cfs_parse_size(arg, &v) < 0 || v < min || v > max) {
		fprintf(stderr, PROG ": %s: %s: %s\n", opt, want, arg);
		return -EINVAL;
	}
	*out = (uint32_t)v;
	return 0;
}

/* Opens the store at location (flags: CFS_STORE_CREATE to pack into it)
 * with the store options; says what went wrong on stderr. */
static int store_open(const struct cfs_open_opts *oo, const char *location, unsigned flags,
		      struct cfs_store **st)
{
	char msg[512];
	int ret = cfs_open_store(oo, location, flags, st, msg, sizeof(msg));

	if (ret < 0)
		fprintf(stderr, PROG ": %s\n", msg);
	return ret;
}

/* --add-profile: the image's index with a prefetch list, as a new image.
 * Writes the list object and the index object, never a chunk. */
static int add_profile(struct cfs_store *st, const char *image, const struct cfs_profile *prof,
		       int level, cfs_digest *ref, size_t *count)
{
	cfs_digest old;
	void *raw = NULL;
	size_t len, stored;
	int ret;

	ret = cfs_store_resolve(st, image, &old);
	if (ret < 0) {
		fprintf(stderr, PROG ": %s: %s\n", image,
			ret == -ENOENT ? "no such tag in the store" : cfs_strerror(ret));
		return ret;
	}
	ret = cfs_pack_index_get(st, &old, &raw, &len);
	if (ret < 0)
		goto fail_index;
	/* Opens (validates) a copy of it before anything is written. */
	ret = cfs_pack_prefetch_attach(st, prof, raw, len, level, count, &stored);
	if (ret < 0)
		goto fail_index;
	if (*count == 0) {
		fprintf(stderr, PROG ": %s: the profile names no data of this image\n", image);
		ret = -ENOENT;
		goto out;
	}
	ret = cfs_pack_obj_put(st, raw, len, level, ref, &stored);
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

/* The source SOURCE names, and what it gets: *arg (after a prefix) and,
 * for a path, *fd opened here, before the store is touched, so that a
 * typo does not leave an empty store.  A directory's fd is closed again
 * (the walk opens it itself).  1 on a message on stderr. */
static int source_pick(const char *source, const struct cfs_pack_source **src, const char **arg,
		       int *fd)
{
	struct stat sb;
	int fl;

	for (size_t i = 0; i < CFS_ARRAY_SIZE(prefixed); i++) {
		size_t n = strlen(prefixed[i]->prefix);

		if (!strncmp(source, prefixed[i]->prefix, n)) {
			*src = prefixed[i];
			*arg = source + n;
			return 0;
		}
	}
	*arg = source;
	if (!strcmp(source, "-"))
		*fd = dup(STDIN_FILENO);
	else
		*fd = open(source, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (*fd < 0 || fstat(*fd, &sb) < 0) {
		fprintf(stderr, PROG ": %s: %s\n", source, strerror(errno));
		return 1;
	}
	if (S_ISDIR(sb.st_mode)) {
		close(*fd);
		*fd = -1;
		*src = &cfs_pack_source_dir;
		return 0;
	}
	/* Reads of a FIFO or a pipe must block. */
	fl = fcntl(*fd, F_GETFL);
	if (fl >= 0)
		fcntl(*fd, F_SETFL, fl & ~O_NONBLOCK);
	*src = &cfs_pack_source_tar;
	return 0;
}

static void summary(const struct cfs_pack_stats *ps)
{
	double s = (double)(cfs_now_ns() - ps->t0_ns) / 1e9;
	char in[32], wr[32];

	human((double)ps->bytes_in, in, sizeof(in));
	human((double)ps->written, wr, sizeof(wr));
	fprintf(stderr,
		PROG ": %llu files, %llu dirs, %s in, %llu chunks, %llu new objects "
		"(%llu already stored), %s written, index %zu bytes, %.2f s, %.1f MB/s\n",
		(unsigned long long)ps->files, (unsigned long long)ps->dirs, in,
		(unsigned long long)ps->chunks, (unsigned long long)ps->new_objects,
		(unsigned long long)ps->present, wr, ps->index_len, s,
		s > 0 ? (double)ps->bytes_in / 1e6 / s : 0.0);
	if (ps->elf_files)
		fprintf(stderr,
			PROG ": hints: %llu ELF files, %llu with hints, %llu lists of %llu inodes "
			"(%zu bytes), %llu needed names not in the image\n",
			(unsigned long long)ps->elf_files, (unsigned long long)ps->hint_triggers,
			(unsigned long long)ps->hint_lists, (unsigned long long)ps->hint_entries,
			ps->hints_len, (unsigned long long)ps->elf_unresolved);
}

/* One pass of the pipeline: src over arg (fd as source_pick() gave it)
 * into st; says what failed on stderr. */
static int pack_pass(struct cfs_store *st, const struct cfs_pack_opts *po,
		     const struct cfs_pack_source *src, const char *arg, int fd, cfs_digest *ref,
		     struct cfs_pack_stats *ps)
{
	struct cfs_pack_ctx *p = NULL;
	int ret;

	ret = cfs_pack_new(st, po, &p);
	if (ret < 0)
		return ret;
	ret = cfs_pack_run(p, src, arg, fd);
	if (ret == 0)
		ret = cfs_pack_finish(p, ref, ps);
	if (ret < 0)
		fprintf(stderr, PROG ": %s\n", cfs_pack_error(p));
	cfs_pack_free(p);
	return ret;
}

/* --profile-run's first pass and run: packs plainly, records run->cmd on
 * that image and leaves the profile in *prof, and fd (a file source)
 * rewound for the second pass. */
static int profile_run(struct cfs_store *st, const struct cfs_pack_opts *po,
		       const struct cfs_pack_source *src, const char *arg, int fd,
		       struct cfs_pack_run_opts *run, bool quiet, struct cfs_profile **prof)
{
	struct cfs_pack_stats ps = { 0 };
	char refstr[CFS_REF_STRLEN], *loc_copy;
	const char *loc;
	cfs_digest ref;
	int ret;

	ret = pack_pass(st, po, src, arg, fd, &ref, &ps);
	if (ret < 0)
		return ret;
	if (!quiet)
		summary(&ps);
	if (fd >= 0 && lseek(fd, 0, SEEK_SET) < 0) {
		ret = -errno;
		fprintf(stderr, PROG ": rewinding the source: %s\n", strerror(errno));
		return ret;
	}
	cfs_digest_ref(&ref, refstr);
	/* A directory by its absolute path: the mount is another process. */
	loc = cfs_store_location(st);
	loc_copy = strstr(loc, "://") ? strdup(loc) : realpath(loc, NULL);
	if (!loc_copy) {
		ret = -errno;
		fprintf(stderr, PROG ": %s: %s\n", loc, strerror(errno));
		return ret;
	}
	run->store = loc_copy;
	run->image = refstr;
	ret = cfs_pack_run_record(run, prof);
	free(loc_copy);
	return ret;
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
		{ "profile", required_argument, NULL, 'P' },
		{ "add-profile", required_argument, NULL, 'a' },
		{ "profile-run", required_argument, NULL, 'R' },
		{ "profile-timeout", required_argument, NULL, 'T' },
		{ "platform", required_argument, NULL, 'p' },
		{ "authfile", required_argument, NULL, 'A' },
		{ "tls-verify", required_argument, NULL, 'V' },
		{ "sign", required_argument, NULL, 'K' },
		{ "no-hints", no_argument, NULL, 'H' },
		{ "help", no_argument, NULL, 'h' },
		CFS_OPEN_STORE_OPTIONS,
		{ NULL, 0, NULL, 0 },
	};
	struct cfs_open_opts oo;
	struct cfs_pack_opts po = { 0 };
	struct cfs_chunker_opts *copts = &po.chunker;
	struct cfs_pack_stats ps = { 0 };
	struct cfs_pack_run_opts run = { .timeout_s = CFS_PACK_RUN_TIMEOUT_DEFAULT };
	const struct cfs_pack_source *src = NULL;
	struct cfs_store *st = NULL;
	const char *tag = NULL, *source, *store_loc, *arg = NULL;
	const char *profile_path = NULL, *add_profile_path = NULL;
	const char *sign_path = NULL;
	struct cfs_key *sign_key = NULL;
	struct cfs_profile *prof = NULL;
	size_t prefetch_count = 0;
	char msg[512];
	bool quiet = false, jobs_set = false;
	long jobs, level = CFS_ZSTD_LEVEL_DEFAULT, v = 0;
	cfs_digest ref;
	char refstr[CFS_REF_STRLEN];
	int opt, li, src_fd = -1, ret, rc = 1;

	cfs_open_opts_init(&oo);
	jobs = sysconf(_SC_NPROCESSORS_ONLN);
	if (jobs < 1)
		jobs = 1;
	while ((opt = getopt_long(argc, argv, "qt:j:c:l:h", longopts, &li)) != -1) {
		switch (opt) {
		case 'q':
			quiet = true;
			break;
		case 't':
			tag = optarg;
			if (!cfs_tag_name_valid(tag)) {
				fprintf(stderr, PROG ": invalid tag name: %s\n", tag);
				goto usage;
			}
			break;
		case 'j':
			if (arg_uint("-j", optarg, 1, 1024, &jobs) < 0)
				goto usage;
			jobs_set = true;
			break;
		case 'c':
			if (arg_size("--chunk-size", optarg, 64u << 10, CFS_CHUNK_MAX_SIZE,
				     "expected 64K..64M", &copts->chunk_size) < 0)
				goto usage;
			break;
		case 'l':
			if (arg_uint("--level", optarg, 1, 22, &level) < 0)
				goto usage;
			break;
		case 'S':
			if (arg_size("--small-max", optarg, 1, CFS_CHUNK_MAX_SIZE, "bad size",
				     &copts->small_max) < 0)
				goto usage;
			break;
		case 'G':
			if (arg_uint("--group-bits", optarg, 1, 32, &v) < 0)
				goto usage;
			copts->group_bits = (uint32_t)v;
			break;
		case 'P':
			profile_path = optarg;
			break;
		case 'a':
			add_profile_path = optarg;
			break;
		case 'R':
			run.cmd = optarg;
			break;
		case 'T':
			if (arg_uint("--profile-timeout", optarg, 1, 86400, &v) < 0)
				goto usage;
			run.timeout_s = (unsigned)v;
			break;
		case 'p':
			po.platform = optarg;
			break;
		case 'A':
			po.reg_authfile = optarg;
			break;
		case 'V':
			if (strcmp(optarg, "true") && strcmp(optarg, "false")) {
				fprintf(stderr, PROG ": --tls-verify: true or false: %s\n", optarg);
				goto usage;
			}
			po.reg_insecure = !strcmp(optarg, "false");
			break;
		case 'K':
			sign_path = optarg;
			break;
		case 'H':
			copts->no_hints = true;
			break;
		case 'h':
			usage(stdout);
			rc = 0;
			goto out;
		default:
			ret = cfs_open_opt(&oo, opt, optarg, msg, sizeof(msg));
			if (ret < 0)
				fprintf(stderr, PROG ": %s\n", msg);
			else if (ret == 0)
				usage(stderr);
			if (ret <= 0)
				goto usage;
			/* The mount of --profile-run opens the store the same way. */
			if (cfs_pack_run_store_opt(&run, longopts[li].name,
						   longopts[li].has_arg ? optarg : NULL) < 0) {
				fprintf(stderr, PROG ": too many store options\n");
				goto usage;
			}
		}
	}
	if (argc - optind != 2) {
		usage(stderr);
		goto usage;
	}
	if (sign_path && !tag) {
		fprintf(stderr, PROG ": --sign signs a tag: give --tag NAME\n");
		goto usage;
	}
	if (!!profile_path + !!add_profile_path + !!run.cmd > 1) {
		fprintf(stderr, PROG ": --profile, --profile-run and --add-profile exclude each other\n");
		goto usage;
	}
	if (run.timeout_s != CFS_PACK_RUN_TIMEOUT_DEFAULT && !run.cmd) {
		fprintf(stderr, PROG ": --profile-timeout goes with --profile-run\n");
		goto usage;
	}
	source = argv[optind];
	store_loc = argv[optind + 1];
	if (add_profile_path)
		store_loc = argv[optind]; /* STORE IMAGE */
	if (!copts->chunk_size)
		copts->chunk_size = CFS_CHUNK_SIZE_DEFAULT;
	if (copts->small_max >= copts->chunk_size) {
		fprintf(stderr, PROG ": --small-max must be below the chunk size\n");
		goto usage;
	}
	/* The chunker's default, resolved here so that the sources know it. */
	if (!copts->small_max)
		copts->small_max = CFS_MIN(CFS_SMALL_MAX_DEFAULT, copts->chunk_size / 2);
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
		if (store_open(&oo, store_loc, 0, &st) < 0)
			goto out;
		ret = add_profile(st, argv[optind + 1], prof, (int)level, &ref, &prefetch_count);
		if (ret < 0)
			goto out;
		goto done;
	}

	if (source_pick(source, &src, &arg, &src_fd))
		goto out;
	if (run.cmd && src_fd >= 0 && lseek(src_fd, 0, SEEK_CUR) < 0) {
		fprintf(stderr, PROG ": --profile-run packs SOURCE twice: %s is not a file\n", source);
		goto out;
	}
	if (store_open(&oo, store_loc, CFS_STORE_CREATE, &st) < 0)
		goto out;
	if (cfs_store_is_remote(st) && !jobs_set && jobs < REMOTE_JOBS_MIN)
		jobs = REMOTE_JOBS_MIN;
	po.reg_ca_file = oo.ca_file;
	po.level = (int)level;
	po.jobs = (unsigned)jobs;
	po.progress = !quiet && isatty(STDERR_FILENO);
	if (run.cmd && profile_run(st, &po, src, arg, src_fd, &run, quiet, &prof) < 0)
		goto out;
	po.profile = prof;
	if (pack_pass(st, &po, src, arg, src_fd, &ref, &ps) < 0)
		goto out;
	prefetch_count = ps.prefetch_count;
	if (prof && !prefetch_count)
		cfs_warn("%s: names no data of this image: no prefetch list",
			 run.cmd ? "the profile of --profile-run" : profile_path);
done:
	/* The signature before the tag: under --trust the signature alone
	 * names the image, so a mount never sees a signed tag half-moved. */
	if (tag && sign_key) {
		ret = cfs_store_sign(st, sign_key, tag, &ref, 0);
		if (ret < 0) {
			fprintf(stderr, PROG ": %s: signing tag %s: %s\n", store_loc, tag,
				cfs_strerror(ret));
			goto out;
		}
	}
	if (tag && !sign_key)
		warn_stale_signature(st, tag, &ref);
	if (tag) {
		ret = cfs_store_tag_set(st, tag, &ref);
		if (ret < 0) {
			fprintf(stderr, PROG ": %s: tag %s: %s\n", store_loc, tag, cfs_strerror(ret));
			goto out;
		}
	}

	if (!quiet && add_profile_path) {
		fprintf(stderr, PROG ": prefetch list of %zu chunks added\n", prefetch_count);
	} else if (!quiet) {
		summary(&ps);
		if (prof)
			fprintf(stderr, PROG ": prefetch list of %zu chunks\n", prefetch_count);
	}
	cfs_digest_ref(&ref, refstr);
	if (printf("%s\n", refstr) < 0 || fflush(stdout) != 0) {
		fprintf(stderr, PROG ": stdout: %s\n", strerror(errno));
		goto out;
	}
	rc = 0;
	goto out;
usage:
	rc = 2;
out:
	cfs_pack_run_opts_release(&run);
	cfs_profile_free(prof);
	cfs_key_free(sign_key);
	cfs_store_free(st);
	cfs_open_opts_release(&oo);
	if (src_fd >= 0)
		close(src_fd);
	return rc;
}
