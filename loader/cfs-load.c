/* SPDX-License-Identifier: MIT */
/*
 * cfs-load: loads a safetensors model into GPU or host memory and says how
 * fast each stage went.  A thin front end over cfs_load.h.
 *
 * Exit status: 0, 1 on an error (one line "cfs-load: <message>"), 2 on a
 * usage error.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfs_config.h"
#include "cfs_load.h"
#include "loader_i.h"
#include "open.h"
#include "util.h"

#define PROG "cfs-load"
#define PROBE_SIZE ((size_t)256 << 20)
#define PROBE_REPS 8u

struct args {
	struct cfs_load_opts o;
	bool verify, json, probe, list;
	struct cfs_open_opts oo;           /* direct mode: store, cache, trust */
	const char *oo_given;              /* the name of the first of those given */
	const char *model;                 /* MODEL */
	const char *store, *image, *path;  /* direct mode */
};

static void usage(FILE *out)
{
	fprintf(out,
		"usage: " PROG " [options] MODEL\n"
		"       " PROG " [options] STORE IMAGE PATH\n"
		"       " PROG " --probe [--target cuda|host] [--device N]\n"
		"\n"
		"Loads the tensors of a safetensors model into GPU (CUDA) or host memory and\n"
		"prints the throughput of each stage.  MODEL is a .safetensors file, a\n"
		"model.safetensors.index.json or a directory holding one; in direct mode PATH\n"
		"names one inside IMAGE (a tag or sha256:<hex>) of STORE (a directory,\n"
		"http(s):// or s3:// URL), read through the chunk cache without a mount.\n"
		"\n"
		"  -t, --target cuda|host  where the tensors go (default host)\n"
		"  -d, --device N          CUDA device (default 0)\n"
		"      --slot-size SIZE    staging slot size (default 16M)\n"
		"      --slots N           staging slots in the ring (default 4)\n"
		"      --reads N           reads in flight per slot (default 4)\n"
		"      --align N           alignment of each tensor in the allocation (default 256)\n"
		"      --direct            read files with O_DIRECT, or fail\n"
		"      --no-direct         read files through the page cache\n"
		"                          (default: O_DIRECT where the filesystem takes it,\n"
		"                          unless the files are mostly in the page cache)\n"
		"      --staged            host target: go through the staging ring too\n"
		"      --verify            read every tensor again and compare it with the target\n"
		"      --list              after the load, print the tensor table: name, dtype,\n"
		"                          shape, offset in the allocation, file, offset in the file\n"
		"      --probe             measure the target's ceiling (pinned host-to-device\n"
		"                          copies; memcpy for host)\n"
		"      --json              one JSON object instead of text\n"
		"  -h, --help              this text\n"
		"  -V, --version           the version\n"
		"\n"
		"Direct mode (STORE IMAGE PATH), as cfs-mount takes them:\n"
		"      --cache DIR        chunk cache directory (default: memory only)\n"
		CFS_OPEN_CACHE_SIZE_USAGE
		CFS_OPEN_TRUST_USAGE
		"\n"
		CFS_OPEN_STORE_USAGE);
}

enum {
	OPT_SLOT_SIZE = 256,
	OPT_SLOTS,
	OPT_READS,
	OPT_ALIGN,
	OPT_DIRECT,
	OPT_NO_DIRECT,
	OPT_STAGED,
	OPT_VERIFY,
	OPT_LIST,
	OPT_PROBE,
	OPT_JSON,
};

static int parse_uint(const char *name, const char *s, unsigned long max, unsigned *out)
{
	unsigned long v;

	if (cfs_parse_uint(s, 0, max, &v) < 0) {
		fprintf(stderr, PROG ": %s: expected 0..%lu: '%s'\n", name, max, s);
		return -1;
	}
	*out = (unsigned)v;
	return 0;
}

static int parse_sz(const char *name, const char *s, size_t *out)
{
	uint64_t v;

	if (cfs_parse_size(s, &v) < 0 || v > SIZE_MAX) {
		fprintf(stderr, PROG ": %s: invalid size '%s'\n", name, s);
		return -1;
	}
	*out = (size_t)v;
	return 0;
}

/* 0, 1 to exit 0 (help, version), -1 on a usage error. */
static int parse_args(int argc, char **argv, struct args *a)
{
	static const struct option longopts[] = {
		{ "target", required_argument, NULL, 't' },
		{ "device", required_argument, NULL, 'd' },
		{ "slot-size", required_argument, NULL, OPT_SLOT_SIZE },
		{ "slots", required_argument, NULL, OPT_SLOTS },
		{ "reads", required_argument, NULL, OPT_READS },
		{ "align", required_argument, NULL, OPT_ALIGN },
		{ "direct", no_argument, NULL, OPT_DIRECT },
		{ "no-direct", no_argument, NULL, OPT_NO_DIRECT },
		{ "staged", no_argument, NULL, OPT_STAGED },
		CFS_OPEN_CACHE_OPTIONS,
		CFS_OPEN_STORE_OPTIONS,
		CFS_OPEN_TRUST_OPTION,
		{ "verify", no_argument, NULL, OPT_VERIFY },
		{ "list", no_argument, NULL, OPT_LIST },
		{ "probe", no_argument, NULL, OPT_PROBE },
		{ "json", no_argument, NULL, OPT_JSON },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	char msg[256];
	unsigned dev;
	int c, li, npos, ret;

	cfs_load_opts_init(&a->o);
	while ((c = getopt_long(argc, argv, "t:d:hV", longopts, &li)) != -1) {
		switch (c) {
		case 't':
			if (!strcmp(optarg, "cuda")) {
				a->o.target = CFS_TARGET_CUDA;
			} else if (!strcmp(optarg, "host")) {
				a->o.target = CFS_TARGET_HOST;
			} else {
				fprintf(stderr, PROG ": --target: expected cuda or host: '%s'\n", optarg);
				return -1;
			}
			break;
		case 'd':
			if (parse_uint("--device", optarg, 1024, &dev) < 0)
				return -1;
			a->o.device = (int)dev;
			break;
		case OPT_SLOT_SIZE:
			if (parse_sz("--slot-size", optarg, &a->o.slot_size) < 0)
				return -1;
			if (a->o.slot_size < 4096 || a->o.slot_size > ((size_t)1 << 30)) {
				fprintf(stderr, PROG ": --slot-size: expected 4K..1G: '%s'\n", optarg);
				return -1;
			}
			break;
		case OPT_SLOTS:
			if (parse_uint("--slots", optarg, 256, &a->o.slots) < 0)
				return -1;
			if (!a->o.slots) {
				fprintf(stderr, PROG ": --slots: expected 1..256: '%s'\n", optarg);
				return -1;
			}
			break;
		case OPT_READS:
			if (parse_uint("--reads", optarg, 256, &a->o.reads) < 0)
				return -1;
			if (!a->o.reads) {
				fprintf(stderr, PROG ": --reads: expected 1..256: '%s'\n", optarg);
				return -1;
			}
			break;
		case OPT_ALIGN:
			if (parse_sz("--align", optarg, &a->o.align) < 0)
				return -1;
			if (!a->o.align || (a->o.align & (a->o.align - 1)) ||
			    a->o.align > ((size_t)1 << 30)) {
				fprintf(stderr, PROG ": --align: expected a power of two up to 1G: '%s'\n",
					optarg);
				return -1;
			}
			break;
		case OPT_DIRECT:
			a->o.direct_io = 1;
			break;
		case OPT_NO_DIRECT:
			a->o.direct_io = 0;
			break;
		case OPT_STAGED:
			a->o.staged = 1;
			break;
		case OPT_VERIFY:
			a->verify = true;
			break;
		case OPT_LIST:
			a->list = true;
			break;
		case OPT_PROBE:
			a->probe = true;
			break;
		case OPT_JSON:
			a->json = true;
			break;
		case 'h':
			usage(stdout);
			return 1;
		case 'V':
			printf(PROG " " CFS_VERSION "\n");
			return 1;
		default:
			ret = cfs_open_opt(&a->oo, c, optarg, msg, sizeof(msg));
			if (ret < 0)
				fprintf(stderr, PROG ": %s\n", msg);
			else if (ret == 0)
				usage(stderr);
			if (ret <= 0)
				return -1;
			if (!a->oo_given)
				a->oo_given = longopts[li].name;
		}
	}
	npos = argc - optind;
	if (npos == 1) {
		a->model = argv[optind];
	} else if (npos == 3) {
		a->store = argv[optind];
		a->image = argv[optind + 1];
		a->path = argv[optind + 2];
	} else if (!(npos == 0 && a->probe)) {
		fprintf(stderr, PROG ": expected MODEL, or STORE IMAGE PATH\n");
		usage(stderr);
		return -1;
	}
	if (a->oo_given && !a->store) {
		fprintf(stderr, PROG ": --%s is for direct mode (STORE IMAGE PATH)\n", a->oo_given);
		return -1;
	}
	return 0;
}

static double gbps(uint64_t bytes, double s)
{
	return s > 0 ? (double)bytes / s / 1e9 : 0;
}

static void shape_print(FILE *f, const struct cfs_tensor *t)
{
	unsigned d;

	fputc('[', f);
	for (d = 0; d < t->ndim; d++)
		fprintf(f, "%s%" PRIu64, d ? ", " : "", t->shape[d]);
	fputc(']', f);
}

static void list_print(const struct cfs_model *m, const struct cfs_loaded *l, bool json)
{
	size_t i, n = cfs_model_tensor_count(m);
	char *base = cfs_loaded_base(l);

	if (json)
		printf(",\"tensor_table\":[");
	for (i = 0; i < n; i++) {
		const struct cfs_tensor *t = cfs_model_tensor(m, i);
		const char *dt = cfs_dtype_name(t->dtype);
		uint64_t off = (uint64_t)((char *)cfs_loaded_tensor_ptr(l, i) - base);

		if (json) {
			printf("%s{\"name\":", i ? "," : "");
			cfs_json_str(stdout, t->name);
			printf(",\"dtype\":\"%s\",\"shape\":", dt ? dt : "?");
			shape_print(stdout, t);
			printf(",\"offset\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"file\":%u"
			       ",\"file_offset\":%" PRIu64 "}", off, t->nbytes, t->shard, t->file_off);
		} else {
			printf("%s\t%s\t", t->name, dt ? dt : "?");
			shape_print(stdout, t);
			printf("\t%" PRIu64 "\t%u\t%" PRIu64 "\n", off, t->shard, t->file_off);
		}
	}
	if (json)
		printf("]");
}

static const char *target_name(int target)
{
	return target == CFS_TARGET_CUDA ? "cuda" : "host";
}

static void report_text(const struct args *a, const struct cfs_model *m,
			const struct cfs_load_stats *s, bool have_probe, double probe)
{
	const char *what = a->model ? a->model : a->path;
	size_t nfiles = cfs_model_file_count(m);

	printf("model       %s (%zu file%s, %zu tensors, %" PRIu64 " bytes)\n", what, nfiles,
	       nfiles == 1 ? "" : "s", cfs_model_tensor_count(m), s->bytes);
	if (a->o.target == CFS_TARGET_CUDA)
		printf("target      cuda:%d", a->o.device);
	else
		printf("target      host");
	if (s->in_place)
		printf(", in place (reads land in the allocation)");
	else
		printf(", staged (%u x %zu-byte slots, %u reads each)", a->o.slots, a->o.slot_size,
		       a->o.reads);
	printf(", %s%s\n", s->direct_io ? "O_DIRECT" : "buffered reads",
	       s->uring ? " through io_uring" : " on threads");
	printf("setup       %.3f s\n", s->setup_s);
	printf("read        %.2f GB/s  (%" PRIu64 " bytes in %.3f s, %" PRIu64 " stalls)\n",
	       gbps(s->bytes, s->read_s), s->read_bytes, s->read_s, s->read_stalls);
	if (s->in_place)
		printf("copy        none (in place)\n");
	else
		printf("copy        %.2f GB/s  (%.3f s busy, %" PRIu64 " stalls)\n",
		       gbps(s->bytes, s->copy_s), s->copy_s, s->copy_stalls);
	printf("end-to-end  %.2f GB/s  (%.3f s; %.2f GB/s after setup)\n", gbps(s->bytes, s->total_s),
	       s->total_s, gbps(s->bytes, s->total_s - s->setup_s));
	if (have_probe)
		printf("probe       %.2f GB/s  (%s ceiling; end-to-end at %.0f%% of it)\n",
		       probe / 1e9, a->o.target == CFS_TARGET_CUDA ? "pinned host-to-device"
								   : "memcpy",
		       probe > 0 ? 100.0 * gbps(s->bytes, s->total_s) * 1e9 / probe : 0.0);
}

static void report_json(const struct args *a, const struct cfs_model *m,
			const struct cfs_load_stats *s)
{
	printf("{\"model\":");
	cfs_json_str(stdout, a->model ? a->model : a->path);
	if (a->store) {
		printf(",\"store\":");
		cfs_json_str(stdout, a->store);
		printf(",\"image\":");
		cfs_json_str(stdout, a->image);
	}
	printf(",\"target\":\"%s\",\"device\":%d,\"files\":%zu,\"tensors\":%zu", target_name(a->o.target),
	       a->o.device, cfs_model_file_count(m), cfs_model_tensor_count(m));
	printf(",\"bytes\":%" PRIu64 ",\"read_bytes\":%" PRIu64, s->bytes, s->read_bytes);
	printf(",\"setup_s\":%.6f,\"read_s\":%.6f,\"copy_s\":%.6f,\"total_s\":%.6f", s->setup_s,
	       s->read_s, s->copy_s, s->total_s);
	printf(",\"read_gbps\":%.3f,\"copy_gbps\":%.3f,\"e2e_gbps\":%.3f,\"after_setup_gbps\":%.3f",
	       gbps(s->bytes, s->read_s), gbps(s->bytes, s->copy_s), gbps(s->bytes, s->total_s),
	       gbps(s->bytes, s->total_s - s->setup_s));
	printf(",\"read_stalls\":%" PRIu64 ",\"copy_stalls\":%" PRIu64, s->read_stalls,
	       s->copy_stalls);
	printf(",\"direct_io\":%s,\"in_place\":%s,\"uring\":%s", s->direct_io ? "true" : "false",
	       s->in_place ? "true" : "false", s->uring ? "true" : "false");
	printf(",\"slot_size\":%zu,\"slots\":%u,\"reads\":%u,\"align\":%zu", a->o.slot_size,
	       a->o.slots, a->o.reads, a->o.align);
}

int main(int argc, char **argv)
{
	struct args a = { 0 };
	struct cfs_model *m = NULL;
	struct cfs_loaded *l = NULL;
	struct cfs_load_stats st;
	char err[512] = "";
	double probe = 0;
	int ret, status = 1;

	cfs_open_opts_init(&a.oo);
	ret = parse_args(argc, argv, &a);
	if (ret) {
		cfs_open_opts_release(&a.oo);
		return ret > 0 ? 0 : 2;
	}
	cfs_log_setup(PROG, CFS_LOG_WARN, stderr);
	cfs_malloc_tune();

	if (a.probe) {
		ret = cfs_target_probe(&a.o, PROBE_SIZE, PROBE_REPS, &probe, err, sizeof(err));
		if (ret < 0)
			goto fail;
		if (!a.model && !a.store) {
			if (a.json)
				printf("{\"target\":\"%s\",\"device\":%d,\"probe_gbps\":%.3f}\n",
				       target_name(a.o.target), a.o.device, probe / 1e9);
			else
				printf("probe       %.2f GB/s  (%s ceiling)\n", probe / 1e9,
				       a.o.target == CFS_TARGET_CUDA ? "pinned host-to-device"
								     : "memcpy");
			return 0;
		}
	}

	if (a.model)
		ret = cfs_model_open(a.model, &m, err, sizeof(err));
	else
		ret = cfs_model_open_image_with(a.store, a.image, a.path, &a.oo, &m, err,
						sizeof(err));
	if (ret < 0)
		goto fail;
	ret = cfs_model_load(m, &a.o, &l, err, sizeof(err));
	if (ret < 0)
		goto fail;
	cfs_loaded_stats(l, &st);
	if (a.verify) {
		ret = cfs_loaded_verify(l, err, sizeof(err));
		if (ret < 0)
			goto fail;
	}

	if (a.json) {
		report_json(&a, m, &st);
		if (a.probe)
			printf(",\"probe_gbps\":%.3f", probe / 1e9);
		if (a.verify)
			printf(",\"verified\":true");
		if (a.list)
			list_print(m, l, true);
		printf("}\n");
	} else {
		if (a.list)
			list_print(m, l, false);
		report_text(&a, m, &st, a.probe, probe);
		if (a.verify)
			printf("verified %zu tensors, %" PRIu64 " bytes\n", cfs_model_tensor_count(m),
			       cfs_model_bytes(m));
	}
	errno = 0;
	if (fflush(stdout) != 0 || ferror(stdout)) {
		/* An earlier write may have failed, leaving nothing to flush. */
		ret = errno ? -errno : -EIO;
		snprintf(err, sizeof(err), "stdout: %s", strerror(-ret));
		goto fail;
	}
	status = 0;
	goto out;

fail:
	fprintf(stderr, PROG ": %s\n", err[0] ? err : cfs_strerror(ret));
out:
	cfs_model_free(m); /* frees l */
	cfs_open_opts_release(&a.oo);
	return status;
}
