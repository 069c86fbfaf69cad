/* SPDX-License-Identifier: MIT */
/*
 * cfs-mount: mount an image of a store read-only over FUSE.
 *
 * This file is the command line only: it parses the options (the long
 * ones and mount(8)'s -o KEY=VALUE forms) and hands over to a client of a
 * running mount (client.c), to --bundle-remove (bundle.c), or to the
 * daemon's start-up (daemon.c), which opens the image, mounts and serves.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cfs_config.h"
#include "learned.h"
#include "mount_i.h"

enum {
	/* Beside the store, cache and trust options of lib/image/open.h. */
	OPT_STATS_FILE = 256, OPT_LOG, OPT_STATS, OPT_READAHEAD, OPT_RECORD, OPT_PREFETCH,
	OPT_PREFETCH_BUDGET, OPT_LEARN, OPT_LEARN_TO, OPT_LEARN_WINDOW,
	OPT_BUNDLE, OPT_BUNDLE_REMOVE, OPT_STATUS, OPT_UPGRADE,
	OPT_LAYER_STORE, OPT_LAYER_MOUNTS,
	OPT_STORE, /* -o store= only */
};

/* A KEY= of the mount(8) form and the option it stands for. */
struct o_key {
	const char *key;
	int opt;
};

static void usage(FILE *out)
{
	fprintf(out,
		"usage: " PROG " [options] STORE IMAGE MOUNTPOINT\n"
		"       " PROG " [options] IMAGE MOUNTPOINT -o store=STORE[,OPT...]\n"
		"       " PROG " [options] --bundle DIR STORE IMAGE\n"
		"       " PROG " [options] --layer-store STORE MOUNTPOINT\n"
		"       " PROG " --bundle-remove DIR\n"
		"       " PROG " --stats MOUNTPOINT\n"
		"       " PROG " --status MOUNTPOINT | --upgrade MOUNTPOINT\n"
		"\n"
		"Mounts IMAGE (a tag or sha256:<hex>) of STORE read-only at MOUNTPOINT.\n"
		"STORE is a directory, an http(s):// or s3:// URL, or a list STORE1,STORE2,...\n"
		"read in order, a zonal cache first and the origin last (a comma inside a\n"
		"URL written %%2C; in -o: store=STORE1,store=STORE2): what one cannot serve\n"
		"(missing, failing, too slow, corrupt) is asked of the next.\n"
		"The second form is mount(8)'s (mount -t fuse.cfs IMAGE MNT -o store=STORE,\n"
		"through mount.fuse3 and a `cfs` link to this program): -o also takes\n"
		"cache=, cache_size=, mem_cache=, log=, stats_file=, readahead=, prefetch=,\n"
		"prefetch_budget=, learn=, learn_to=, learn_window=, deadline=, max_inflight=, retries=,\n"
		"ca_file=, insecure and trust=, and ignores rw, _netdev, nofail, noauto, auto,\n"
		"defaults, user, users, nouser, x-* and comment=.\n"
		"--bundle mounts IMAGE at DIR/lower, an overlay with DIR/upper at\n"
		"DIR/rootfs, and writes DIR/config.json from the image config, so that\n"
		"`runc run -b DIR NAME` starts the image; --bundle-remove takes it down.\n"
		"--layer-store serves the layers cfs-pack recorded in STORE as an additional\n"
		"layer store of podman and CRI-O (storage.conf: additionallayerstores =\n"
		"[\"MOUNTPOINT:ref\"]; docs/LAYER-STORE.md); each layer's diff is a cfs mount\n"
		"of its own, started on first use with the options given here.\n"
		"\n"
		"  -f, --foreground       stay in the foreground\n"
		"  -d, --debug            libfuse debug output (implies -f)\n"
		"  -o OPT[,OPT...]        mount options: allow_other, default_permissions,\n"
		"                         dev, suid, and others passed to libfuse\n"
		"      --cache DIR        chunk cache directory (default /var/cache/cfs as\n"
		"                         root, else $XDG_CACHE_HOME/cfs)\n"
		CFS_OPEN_CACHE_SIZE_USAGE
		"      --stats-file FILE  write counters as JSON at exit and on SIGUSR1\n"
		"      --log FILE         log here (default stderr; syslog once daemonized)\n"
		"      --readahead N      fetch up to N chunks ahead of a sequential reader\n"
		"                         (default 32; 0 turns it off)\n"
		"      --prefetch MODE    at mount, fetch the image's prefetch list, then\n"
		"                         stream the rest nearest the readers first, within\n"
		"                         --prefetch-budget (stream, the default); the list\n"
		"                         only (list); all of the image (all); or nothing\n"
		"                         (none); needs --readahead > 0\n"
		"      --prefetch-budget SIZE  stored bytes the stream may fetch (default\n"
		"                         1G; K, M, G suffixes)\n"
		CFS_OPEN_TRUST_USAGE
		"      --record FILE      write the order in which files and chunks are\n"
		"                         first read (an access profile, docs/PROFILE.md),\n"
		"                         every 5 s, on SIGUSR1 and at exit\n"
		"      --learn yes|no     learn what start-up reads (its first\n"
		"                         --learn-window SEC, default 30) and\n"
		"                         leave it, merged with earlier runs, in the cache\n"
		"                         and a writable store, for the next mount of the\n"
		"                         image to prefetch when it has no list (default\n"
		"                         yes; docs/PROFILE.md, \"Learned profiles\")\n"
		"      --learn-to LOCATION  read and write learned profiles there (a\n"
		"                         directory or s3:// URL) instead of the store\n"
		"      --layer-mounts DIR where --layer-store mounts the layers (DIR/<hex of\n"
		"                         the layer's image>; default " CFS_LAYER_MOUNTS_ROOT "\n"
		"                         as root, else $XDG_RUNTIME_DIR/cfs/layer-mounts);\n"
		"                         they outlive the layer store and are used again\n"
		"\n"
		CFS_OPEN_STORE_USAGE
		"\n"
		"      --stats MOUNTPOINT print the counters of a running mount (JSON)\n"
		"      --status MOUNTPOINT  print its holder's state: pids, uptime, restarts,\n"
		"                         the last restart's reason, requests in flight\n"
		"                         (JSON); never enters the mount, so it answers\n"
		"                         while the mount hangs\n"
		"      --upgrade MOUNTPOINT run the installed cfs-mount as the mount's daemon\n"
		"                         and retire the old one, without unmounting\n"
		"  -v, --verbose          more log output (twice for debug)\n"
		"  -h, --help             this text\n"
		"  -V, --version          the version\n");
}

/* A decimal in [min, max] for option name. */
static int parse_count(const char *name, const char *s, unsigned long min, unsigned long max,
		       unsigned *out)
{
	unsigned long v;

	if (cfs_parse_uint(s, min, max, &v) < 0) {
		fprintf(stderr, PROG ": %s: expected %lu..%lu: '%s'\n", name, min, max, s);
		return -1;
	}
	*out = (unsigned)v;
	return 0;
}

/* ---- the other options -------------------------------------------------- */

static int parse_prefetch(struct cfs_mount_args *a, const char *name, const char *v)
{
	if (!strcmp(v, "none")) {
		a->prefetch = CFS_PREFETCH_NONE;
	} else if (!strcmp(v, "list")) {
		a->prefetch = CFS_PREFETCH_LIST;
	} else if (!strcmp(v, "stream")) {
		a->prefetch = CFS_PREFETCH_STREAM;
	} else if (!strcmp(v, "all")) {
		a->prefetch = CFS_PREFETCH_ALL;
	} else {
		fprintf(stderr, PROG ": %s: expected none, list, stream or all: '%s'\n", name, v);
		return -1;
	}
	a->prefetch_set = true;
	return 0;
}

static const char *prefetch_name(enum cfs_prefetch_mode m)
{
	switch (m) {
	case CFS_PREFETCH_LIST: return "list";
	case CFS_PREFETCH_STREAM: return "stream";
	case CFS_PREFETCH_ALL: return "all";
	default: return "none";
	}
}

static int parse_budget(struct cfs_mount_args *a, const char *name, const char *v)
{
	if (cfs_parse_size(v, &a->prefetch_budget) < 0 || !a->prefetch_budget) {
		fprintf(stderr, PROG ": %s: expected a size above 0 (K, M, G): '%s'\n", name, v);
		return -1;
	}
	return 0;
}

static int parse_learn(struct cfs_mount_args *a, const char *name, const char *v)
{
	if (!strcmp(v, "yes")) {
		a->learn_off = false;
	} else if (!strcmp(v, "no")) {
		a->learn_off = true;
	} else {
		fprintf(stderr, PROG ": %s: expected yes or no: '%s'\n", name, v);
		return -1;
	}
	return 0;
}

/* An option with a value that is not the store's: 0, -1 on a bad value
 * (printed), 1 if opt is none of them. */
static int mount_opt(struct cfs_mount_args *a, int opt, const char *name, const char *v)
{
	switch (opt) {
	case OPT_STATS_FILE: a->stats_file = v; return 0;
	case OPT_LOG: a->log_file = v; return 0;
	case OPT_READAHEAD: return parse_count(name, v, 0, 1024, &a->readahead);
	case OPT_PREFETCH: return parse_prefetch(a, name, v);
	case OPT_PREFETCH_BUDGET: return parse_budget(a, name, v);
	case OPT_STATS: a->stats_of = v; return 0;
	case OPT_RECORD: a->record = v; return 0;
	case OPT_LEARN: return parse_learn(a, name, v);
	case OPT_LEARN_TO: a->learn_to = v; return 0;
	case OPT_LEARN_WINDOW: return parse_count(name, v, 1, 3600, &a->learn_window);
	case OPT_BUNDLE: a->bundle = v; return 0;
	case OPT_BUNDLE_REMOVE: a->bundle_down = v; return 0;
	case OPT_STATUS: a->status_of = v; return 0;
	case OPT_UPGRADE: a->upgrade_of = v; return 0;
	case OPT_LAYER_STORE: a->layer_store = true; return 0;
	case OPT_LAYER_MOUNTS: a->layer_mounts = v; return 0;
	default: return 1;
	}
}

/* ---- -o ---------------------------------------------------------------- */

/* The value of a KEY=VALUE -o option, owned by a. */
static char *o_value(struct cfs_mount_args *a, const char *s, size_t len, size_t key_len)
{
	char *v;

	if (a->n_o_vals >= CFS_ARRAY_SIZE(a->o_vals))
		return NULL;
	v = strndup(s + key_len, len - key_len);
	if (v)
		a->o_vals[a->n_o_vals++] = v;
	return v;
}

/* What mount(8), fstab and systemd put in -o that is no business of
 * cfs or the kernel's FUSE. */
static bool o_ignored(const char *s, size_t len)
{
	static const char *const skip[] = { "_netdev", "nofail", "noauto", "auto", "defaults",
					    "user", "users", "nouser" };

	for (size_t i = 0; i < CFS_ARRAY_SIZE(skip); i++)
		if (len == strlen(skip[i]) && !strncmp(s, skip[i], len))
			return true;
	return (len > 2 && !strncmp(s, "x-", 2)) || (len >= 8 && !strncmp(s, "comment=", 8));
}

static const struct o_key *o_key_find(const struct o_key *keys, size_t n, const char *s,
				      size_t len)
{
	for (size_t i = 0; i < n; i++)
		if (len >= strlen(keys[i].key) && !strncmp(s, keys[i].key, strlen(keys[i].key)))
			return &keys[i];
	return NULL;
}

/* A KEY=VALUE option of the mount(8) form: 1 if it was one (taken), 0 if
 * not, -1 on a bad value. */
static int parse_o_value(struct cfs_mount_args *a, const char *s, size_t len)
{
	static const struct o_key keys[] = { { "store=", OPT_STORE },
					     { "log=", OPT_LOG },
					     { "stats_file=", OPT_STATS_FILE },
					     { "readahead=", OPT_READAHEAD },
					     { "prefetch=", OPT_PREFETCH },
					     { "prefetch_budget=", OPT_PREFETCH_BUDGET },
					     { "learn=", OPT_LEARN },
					     { "learn_to=", OPT_LEARN_TO },
					     { "learn_window=", OPT_LEARN_WINDOW } };
	const struct o_key *k;
	char name[32], msg[256], *v;
	int r;

	r = cfs_open_kv(&a->open, s, len, msg, sizeof(msg));
	if (r < 0)
		fprintf(stderr, PROG ": %s\n", msg);
	if (r != 0) {
		a->o_cfs_keys = true;
		return r < 0 ? -1 : 1;
	}
	k = o_key_find(keys, CFS_ARRAY_SIZE(keys), s, len);
	if (!k)
		return 0;
	v = o_value(a, s, len, strlen(k->key));
	if (!v) {
		fprintf(stderr, PROG ": -o: too many options\n");
		return -1;
	}
	if (k->opt == OPT_STORE) {
		/* store= again: the next store of a list (-o's commas part
		 * options, so a list is written store=A,store=B). */
		if (a->store && a->store_from_o) {
			char *list;

			if (asprintf(&list, "%s,%s", a->store, v) < 0)
				return -1;
			free(v);
			a->o_vals[a->n_o_vals - 1] = list;
			v = list;
		}
		a->store = v;
		a->store_from_o = true;
		return 1;
	}
	a->o_cfs_keys = true;
	snprintf(name, sizeof(name), "-o %.*s", (int)strlen(k->key) - 1, k->key);
	r = mount_opt(a, k->opt, name, v);
	return r < 0 ? -1 : 1;
}

/* -o: note the options cfs cares about, pass the rest to libfuse. */
static int parse_o(struct cfs_mount_args *a, const char *s)
{
	while (*s) {
		size_t len = strcspn(s, ",");
		int r = parse_o_value(a, s, len);

		if (r < 0)
			return -EINVAL;
		if (r || o_ignored(s, len)) {
			/* taken, or none of ours */
		} else if (len == 2 && !strncmp(s, "rw", 2)) {
			/* mount(8) says rw unless told ro; the mount is read-only
			 * anyway, so only a user who asks for it is told no. */
			a->o_rw = true;
		} else {
			if (len == 11 && !strncmp(s, "allow_other", len))
				a->allow_other = true;
			if (len == 19 && !strncmp(s, "default_permissions", len))
				a->default_permissions = true;
			if (len && cfs_mount_opt_append(&a->fuse_opts, s, len) < 0)
				return -ENOMEM;
		}
		s += len;
		if (*s == ',')
			s++;
	}
	return 0;
}

/* ---- --layer-store ------------------------------------------------------- */

/* The options a layer store gives its layer mounts too: the store's, the
 * cache's, the trust and how the image is read.  Not its own, and not
 * what names one file for one mount (--stats-file, --record). */
static bool forwarded(int opt)
{
	switch (opt) {
	case OPT_LOG: case OPT_READAHEAD: case OPT_PREFETCH: case OPT_PREFETCH_BUDGET:
	case OPT_LEARN: case OPT_LEARN_TO: case OPT_LEARN_WINDOW:
		return true;
	default:
		return opt >= CFS_OPT_CACHE && opt <= CFS_OPT_TRUST;
	}
}

/* Noted for any mount (--layer-store may come later); more than fit
 * fail a layer store only. */
static void fwd_add(struct cfs_mount_args *a, const char *name, const char *value)
{
	if (a->n_fwd < CFS_ARRAY_SIZE(a->fwd)) {
		a->fwd[a->n_fwd].name = name;
		a->fwd[a->n_fwd].value = value;
	}
	a->n_fwd++;
}

/* --layer-store STORE MOUNTPOINT (n, args: the operands). */
static int layer_store_args(struct cfs_mount_args *a, int n, char **args)
{
	const char *other = a->bundle ? "--bundle" : a->stats_file ? "--stats-file" :
			    a->record ? "--record" : NULL;

	if (other) {
		fprintf(stderr, PROG ": --layer-store: %s is for one image's mount\n", other);
		return -1;
	}
	/* The layer mounts take the long options only. */
	if (a->o_cfs_keys || a->store) {
		fprintf(stderr, PROG ": --layer-store: give cfs's options as --KEY VALUE, "
			"not -o KEY=VALUE\n");
		return -1;
	}
	if (a->n_fwd > CFS_ARRAY_SIZE(a->fwd)) {
		fprintf(stderr, PROG ": --layer-store: too many options\n");
		return -1;
	}
	if (n != 2) {
		fprintf(stderr, PROG ": expected --layer-store STORE MOUNTPOINT\n");
		return -1;
	}
	a->store = args[0];
	a->mountpoint = args[1];
	a->image = "layer-store"; /* what the holder's state names */
	/* podman asks as root; any user may look (stargz-store does the same). */
	if (geteuid() == 0 && !a->allow_other && parse_o(a, "allow_other") < 0)
		return -1;
	return 0;
}

/* 0, 1 when the program should exit 0 (help, version), or -1. */
static int parse_args(int argc, char **argv, struct cfs_mount_args *a)
{
	static const struct option longopts[] = {
		{ "foreground", no_argument, NULL, 'f' },
		{ "debug", no_argument, NULL, 'd' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		CFS_OPEN_CACHE_OPTIONS,
		CFS_OPEN_STORE_OPTIONS,
		CFS_OPEN_TRUST_OPTION,
		{ "stats-file", required_argument, NULL, OPT_STATS_FILE },
		{ "log", required_argument, NULL, OPT_LOG },
		{ "readahead", required_argument, NULL, OPT_READAHEAD },
		{ "stats", required_argument, NULL, OPT_STATS },
		{ "record", required_argument, NULL, OPT_RECORD },
		{ "learn", required_argument, NULL, OPT_LEARN },
		{ "learn-to", required_argument, NULL, OPT_LEARN_TO },
		{ "learn-window", required_argument, NULL, OPT_LEARN_WINDOW },
		{ "prefetch", required_argument, NULL, OPT_PREFETCH },
		{ "prefetch-budget", required_argument, NULL, OPT_PREFETCH_BUDGET },
		{ "bundle", required_argument, NULL, OPT_BUNDLE },
		{ "bundle-remove", required_argument, NULL, OPT_BUNDLE_REMOVE },
		{ "status", required_argument, NULL, OPT_STATUS },
		{ "upgrade", required_argument, NULL, OPT_UPGRADE },
		{ "layer-store", no_argument, NULL, OPT_LAYER_STORE },
		{ "layer-mounts", required_argument, NULL, OPT_LAYER_MOUNTS },
		{ NULL, 0, NULL, 0 },
	};
	char name[32], msg[256];
	int c, li = 0, r;

	while ((c = getopt_long(argc, argv, "fdvhVo:", longopts, &li)) != -1) {
		switch (c) {
		case 'f':
			a->foreground = true;
			break;
		case 'd':
			a->debug = true;
			a->foreground = true;
			break;
		case 'v':
			a->verbose++;
			break;
		case 'h':
			usage(stdout);
			return 1;
		case 'V':
			printf(PROG " " CFS_VERSION "\n");
			return 1;
		case 'o':
			if (parse_o(a, optarg) < 0)
				return -1;
			break;
		case '?':
			usage(stderr);
			return -1;
		default:
			snprintf(name, sizeof(name), "--%s", longopts[li].name);
			r = cfs_open_opt(&a->open, c, optarg, msg, sizeof(msg));
			if (r < 0) {
				fprintf(stderr, PROG ": %s\n", msg);
				return -1;
			}
			r = r ? 0 : mount_opt(a, c, name, optarg);
			if (r == 1)
				usage(stderr);
			if (r != 0)
				return -1;
			if (forwarded(c))
				fwd_add(a, longopts[li].name, optarg);
			break;
		}
	}
	if (a->prefetch_set && a->prefetch != CFS_PREFETCH_NONE && a->readahead == 0) {
		fprintf(stderr, PROG ": --prefetch %s needs the fetch threads of --readahead (> 0)\n",
			prefetch_name(a->prefetch));
		return -1;
	}
	if (a->stats_of) {
		if (argc != optind) {
			fprintf(stderr, PROG ": --stats MOUNTPOINT takes no other argument\n");
			return -1;
		}
		return 0;
	}
	if (a->status_of || a->upgrade_of) {
		if (argc != optind) {
			fprintf(stderr, PROG ": --%s MOUNTPOINT takes no other argument\n",
				a->status_of ? "status" : "upgrade");
			return -1;
		}
		return 0;
	}
	if (a->bundle_down) {
		if (argc != optind) {
			fprintf(stderr, PROG ": --bundle-remove DIR takes no other argument\n");
			return -1;
		}
		return 0;
	}
	if (a->layer_store)
		return layer_store_args(a, argc - optind, argv + optind);
	if (a->bundle) {
		if (argc - optind != 2) {
			fprintf(stderr, PROG ": expected --bundle DIR STORE IMAGE\n");
			return -1;
		}
		if (a->foreground && !getenv(CFS_SERVE_FD_ENV)) {
			fprintf(stderr, PROG ": --bundle sets up the bundle once the daemon serves: "
				"it cannot run in the foreground (-f, -d)\n");
			return -1;
		}
		a->store = argv[optind];
		a->image = argv[optind + 1];
		if (cfs_bundle_path(a->bundle, "lower", &a->bundle_lower) < 0)
			return -1;
		/* The container's users reach the image through the overlay
		 * with their own credentials, and the kernel checks the
		 * image's modes for them. */
		if (!a->allow_other && parse_o(a, "allow_other") < 0)
			return -1;
		a->mountpoint = a->bundle_lower;
	} else if (a->store && argc - optind == 2) {
		/* mount(8): IMAGE MOUNTPOINT -o store=STORE */
		a->image = argv[optind];
		a->mountpoint = argv[optind + 1];
		return 0;
	} else if (argc - optind != 3) {
		fprintf(stderr, PROG ": expected STORE IMAGE MOUNTPOINT (or IMAGE MOUNTPOINT "
			"-o store=STORE)\n");
		usage(stderr);
		return -1;
	} else {
		a->store = argv[optind];
		a->image = argv[optind + 1];
		a->mountpoint = argv[optind + 2];
	}
	if (a->o_rw) {
		fprintf(stderr, PROG ": -o rw: images are read-only\n");
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct cfs_mount_args a = { .readahead = CFS_READAHEAD_CHUNKS_DEFAULT,
				    .learn_window = CFS_LEARN_WINDOW_SEC,
				    .prefetch = CFS_PREFETCH_STREAM };
	char err[512] = "";
	int ret, status;

	/* Before any thread and any chunk-sized buffer (lib/util.h). */
	cfs_malloc_tune();
	cfs_open_opts_init(&a.open);
	ret = parse_args(argc, argv, &a);
	if (ret != 0) {
		status = ret > 0 ? 0 : 1;
	} else if (a.stats_of) {
		status = cfs_client_stats(a.stats_of);
	} else if (a.status_of) {
		status = cfs_client_status(a.status_of);
	} else if (a.upgrade_of) {
		status = cfs_client_upgrade(a.upgrade_of);
	} else if (a.bundle_down) {
		ret = cfs_bundle_down(a.bundle_down, err, sizeof(err));
		if (ret < 0)
			fprintf(stderr, PROG ": --bundle-remove: %s\n", err[0] ? err : cfs_strerror(ret));
		status = ret < 0;
	} else {
		status = cfs_daemon_main(&a, argc, argv);
	}
	free(a.fuse_opts);
	free(a.bundle_lower);
	for (unsigned i = 0; i < a.n_o_vals; i++)
		free(a.o_vals[i]);
	cfs_open_opts_release(&a.open);
	return status;
}
