/* SPDX-License-Identifier: MIT */
/*
 * cfs-mount: mount an image of a store read-only over FUSE.
 *
 * Everything that can fail because of the arguments (the store, the image,
 * its index, the cache, the mount point) fails with one line on stderr and
 * exit status 1 with nothing left behind.
 *
 * Without -f the process forks first: the parent waits on a pipe for one
 * status byte and exits 0 once the mount is ready, 1 if it failed.  The
 * child is the holder (holder.c): it mounts, keeps the /dev/fuse fd, and
 * runs the serving daemon as its child (first itself forked, later this
 * program exec'd with -f and the connection), starting it again if it
 * dies; the daemon opens
 * the store, the cache and the image (printing any error to the stderr
 * they all share; the holder then unmounts), serves until unmounted, and
 * writes the stats.  With -f this process opens everything before it
 * mounts, then serves.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <syslog.h>
#include <unistd.h>

#include <jansson.h>
#include <time.h>

#include "cache.h"
#include "cfs_config.h"
#include "fetch.h"
#include "format.h"
#include "fs.h"
#include "image.h"
#include "profile.h"
#include "sign.h"
#include "store.h"
#include "util.h"

#define PROG "cfs-mount"
#define DEFAULT_CACHE_SIZE (10ull << 30)
#define DEFAULT_MEM_CACHE (256ull << 20)
#define ENTRY_TIMEOUT 86400.0 /* the image is immutable */
#define MAX_IDLE_THREADS 10
#define MAX_THREADS 32
#define READAHEAD_KB "1024"
#define MALLOC_MMAP_THRESHOLD (CFS_CHUNK_MAX_SIZE + (1 << 20))
#define MALLOC_TRIM_THRESHOLD (256 << 20)
#define RECORD_SAVE_SEC 5 /* the profile is saved this often while it grows */

struct mount_args {
	bool foreground, debug;
	int verbose;
	bool allow_other, default_permissions;
	char *fuse_opts;          /* user -o options for libfuse, or NULL */
	const char *cache_dir;    /* NULL: the default */
	uint64_t cache_size, mem_cache;
	const char *stats_file, *log_file;
	const char *store, *image, *mountpoint;
	bool store_from_o;        /* store came from -o store= (a list: repeated) */
	const char *stats_of;     /* --stats MOUNTPOINT: print its counters */
	struct cfs_fetch_opts fetch;
	const char *ca_file;      /* --ca-file, or NULL */
	const char *trust;        /* --trust PUBKEY|DIR (absolute once set up), or NULL */
	unsigned readahead;       /* chunks ahead of a sequential reader; 0: off */
	const char *record;       /* --record FILE, or NULL */
	enum cfs_prefetch_mode prefetch;
	bool prefetch_set;        /* --prefetch given */
	bool o_rw;                /* -o rw */
	const char *status_of;    /* --status MOUNTPOINT */
	const char *upgrade_of;   /* --upgrade MOUNTPOINT */
	const char *bundle;       /* --bundle DIR, or NULL */
	const char *bundle_down;  /* --bundle-remove DIR, or NULL */
	char *bundle_lower;       /* DIR/lower, the mount point */
	/* -o store=... and the other values of the mount(8) form, owned. */
	char *o_vals[16];
	unsigned n_o_vals;
};

/* The daemon: the context the ops see, plus what main needs around it. */
struct daemon {
	struct cfs_fs fs;
	char *stats_path;         /* absolute, or NULL */
	char *record_path;        /* absolute, or NULL */
	size_t record_saved;      /* records in the last save (stats thread) */
	pthread_mutex_t stats_lock;
	pthread_t stats_thread;
	bool stats_thread_started;
	atomic_bool stopping;
	char ref[CFS_REF_STRLEN]; /* the image reference opened */
	FILE *log;
	char readahead_kb[16];    /* written to the mount's bdi read_ahead_kb */
	bool clone_fd;            /* a cloned /dev/fuse fd per loop thread */
};

/* Benchmark knobs, for bench/fuse-costs.sh only: each turns one of the FUSE
 * path choices off (or changes it) so that its effect can be measured.  Read
 * once here, before the session starts; unset, cfs behaves as it always does.
 *   CFS_FUSE_TIMEOUT=SEC         entry and attr timeout (default 86400)
 *   CFS_FUSE_NO_KEEP_CACHE=1     do not keep a file's page cache across opens
 *   CFS_FUSE_NO_READDIRPLUS=1    do not ask for READDIRPLUS
 *   CFS_FUSE_SPLICE=0            READ replies through a buffer, not spliced
 *                                from the cache files (also the fallback
 *                                where libfuse cannot splice)
 *   CFS_FUSE_READAHEAD_KB=KB     bdi read_ahead_kb (default 1024; 0 = leave
 *                                the kernel's default alone)
 *   CFS_FUSE_CLONE_FD=0|1        a cloned /dev/fuse fd per loop thread (default
 *                                1 in the foreground; always 0 under a holder) */
static void read_bench_knobs(struct daemon *d)
{
	const char *v;
	char *end;

	d->fs.timeout = ENTRY_TIMEOUT;
	v = getenv("CFS_FUSE_TIMEOUT");
	if (v && *v) {
		double t = strtod(v, &end);

		if (!*end && t >= 0)
			d->fs.timeout = t;
	}
	v = getenv("CFS_FUSE_NO_KEEP_CACHE");
	d->fs.no_keep_cache = v && !strcmp(v, "1");
	v = getenv("CFS_FUSE_NO_READDIRPLUS");
	d->fs.no_readdirplus = v && !strcmp(v, "1");
	v = getenv("CFS_FUSE_OPEN");
	d->fs.want_open = v && !strcmp(v, "1");
	v = getenv("CFS_FUSE_SPLICE");
	d->fs.splice = !(v && !strcmp(v, "0"));
	v = getenv("CFS_FUSE_CLONE_FD");
	d->clone_fd = v ? !strcmp(v, "1") : true;
	snprintf(d->readahead_kb, sizeof(d->readahead_kb), "%s", READAHEAD_KB);
	v = getenv("CFS_FUSE_READAHEAD_KB");
	if (v && *v) {
		unsigned long kb = strtoul(v, &end, 10);

		if (!*end && kb <= 1048576)
			snprintf(d->readahead_kb, sizeof(d->readahead_kb), "%lu", kb);
	}
}

static void usage(FILE *out)
{
	fprintf(out,
		"usage: " PROG " [options] STORE IMAGE MOUNTPOINT\n"
		"       " PROG " [options] IMAGE MOUNTPOINT -o store=STORE[,OPT...]\n"
		"       " PROG " [options] --bundle DIR STORE IMAGE\n"
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
		"deadline=, ca_file= and trust=, and ignores rw, _netdev, nofail, noauto, auto,\n"
		"defaults, user, users, nouser, x-* and comment=.\n"
		"--bundle mounts IMAGE at DIR/lower, an overlay with DIR/upper at\n"
		"DIR/rootfs, and writes DIR/config.json from the image config, so that\n"
		"`runc run -b DIR NAME` starts the image; --bundle-remove takes it down.\n"
		"\n"
		"  -f, --foreground       stay in the foreground\n"
		"  -d, --debug            libfuse debug output (implies -f)\n"
		"  -o OPT[,OPT...]        mount options: allow_other, default_permissions,\n"
		"                         dev, suid, and others passed to libfuse\n"
		"      --cache DIR        chunk cache directory (default /var/cache/cfs as\n"
		"                         root, else $XDG_CACHE_HOME/cfs)\n"
		"      --cache-size SIZE  bound of the disk cache (default 10G)\n"
		"      --mem-cache SIZE   bound of chunks held in memory: being written to the\n"
		"                         cache, or not writable there (default 256M)\n"
		"      --stats-file FILE  write counters as JSON at exit and on SIGUSR1\n"
		"      --log FILE         log here (default stderr; syslog once daemonized)\n"
		"      --readahead N      fetch up to N chunks ahead of a sequential reader\n"
		"                         (default 32; 0 turns it off)\n"
		"      --prefetch MODE    at mount, fetch the image's prefetch list (list,\n"
		"                         the default), then the rest of it too (all), or\n"
		"                         nothing (none); needs --readahead > 0\n"
		"      --trust PUBKEY|DIR mount a tag only if its signature (cfs-pack --sign,\n"
		"                         cfs-sign) is by an Ed25519 public key in the PEM\n"
		"                         file PUBKEY or in DIR's *.pem/*.pub; a sha256:\n"
		"                         reference needs none\n"
		"      --record FILE      write the order in which files and chunks are\n"
		"                         first read (an access profile, docs/PROFILE.md),\n"
		"                         every 5 s, on SIGUSR1 and at exit\n"
		"\n"
		"Remote stores (http://, https://, s3://BUCKET[/PREFIX]):\n"
		"      --deadline MS      a read the store cannot serve within MS\n"
		"                         milliseconds fails with EIO (default 30000)\n"
		"      --max-inflight N   requests on the wire at once (default 64)\n"
		"      --retries N        retries of a failed request, 1.. (default 6)\n"
		"      --ca-file FILE     verify TLS servers with the CA certificates in FILE\n"
		"                         (PEM) instead of the system's; without it,\n"
		"                         $CURL_CA_BUNDLE, then $SSL_CERT_FILE, if set\n"
		"      --insecure         no TLS certificate verification (tests only)\n"
		"\n"
		"      --stats MOUNTPOINT print the counters of a running mount (JSON)\n"
		"      --status MOUNTPOINT  print its holder's state: pids, uptime, restarts,\n"
		"                         the last restart's reason, cache use, requests\n"
		"                         in flight (JSON)\n"
		"      --upgrade MOUNTPOINT run the installed cfs-mount as the mount's daemon\n"
		"                         and retire the old one, without unmounting\n"
		"  -v, --verbose          more log output (twice for debug)\n"
		"  -h, --help             this text\n"
		"  -V, --version          the version\n");
}

/* An absolute version of path (which need not exist): the daemon changes
 * to / when it detaches. */
static char *abs_path(const char *path)
{
	char cwd[PATH_MAX];
	char *out;

	if (path[0] == '/' || strstr(path, "://"))
		return strdup(path);
	if (!getcwd(cwd, sizeof(cwd)))
		return NULL;
	if (asprintf(&out, "%s/%s", cwd, path) < 0)
		return NULL;
	return out;
}

/* A store argument with each member of a list ("A,B,...") absolute: the
 * daemon leaves the working directory. */
static char *abs_store(const char *loc)
{
	char *out = NULL, *one, *joined;
	const char *p = loc;

	for (;;) {
		size_t n = strcspn(p, ",");
		char *member = strndup(p, n);

		one = member ? abs_path(member) : NULL;
		free(member);
		if (!one || asprintf(&joined, "%s%s%s", out ? out : "", out ? "," : "", one) < 0) {
			free(one);
			free(out);
			return NULL;
		}
		free(one);
		free(out);
		out = joined;
		if (!p[n])
			return out;
		p += n + 1;
	}
}

/* Appends opt to the comma list *list. */
static int opt_append(char **list, const char *opt, size_t len)
{
	size_t old = *list ? strlen(*list) : 0;
	char *p = realloc(*list, old + len + 2);

	if (!p)
		return -ENOMEM;
	if (old)
		p[old++] = ',';
	memcpy(p + old, opt, len);
	p[old + len] = '\0';
	*list = p;
	return 0;
}

/* The value of a KEY=VALUE -o option, owned by a. */
static char *o_value(struct mount_args *a, const char *s, size_t len, size_t key_len)
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

static int parse_count(const char *name, const char *s, unsigned long min, unsigned long max,
		       unsigned *out);
static int parse_prefetch(struct mount_args *a, const char *v);

/* A KEY=VALUE option of the mount(8) form: 1 if it was one (taken), 0 if
 * not, -1 on a bad value. */
static int parse_o_value(struct mount_args *a, const char *s, size_t len)
{
	static const char *const keys[] = { "store=", "cache=", "cache_size=", "mem_cache=",
					    "log=", "stats_file=", "readahead=", "prefetch=",
					    "deadline=", "ca_file=", "trust=" };
	size_t k;
	char *v;

	for (k = 0; k < CFS_ARRAY_SIZE(keys); k++)
		if (len >= strlen(keys[k]) && !strncmp(s, keys[k], strlen(keys[k])))
			break;
	if (k == CFS_ARRAY_SIZE(keys))
		return 0;
	v = o_value(a, s, len, strlen(keys[k]));
	if (!v) {
		fprintf(stderr, PROG ": -o: too many options\n");
		return -1;
	}
	switch (k) {
	case 0:
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
	case 1: a->cache_dir = v; return 1;
	case 2:
	case 3:
		if (cfs_parse_size(v, k == 2 ? &a->cache_size : &a->mem_cache) < 0) {
			fprintf(stderr, PROG ": -o %.*s: invalid size\n", (int)len, s);
			return -1;
		}
		return 1;
	case 4: a->log_file = v; return 1;
	case 5: a->stats_file = v; return 1;
	case 6: return parse_count("-o readahead", v, 0, 1024, &a->readahead) < 0 ? -1 : 1;
	case 7: return parse_prefetch(a, v) < 0 ? -1 : 1;
	case 8:
		return parse_count("-o deadline", v, 1, 24ul * 3600 * 1000,
				   &a->fetch.deadline_ms) < 0 ? -1 : 1;
	case 9: a->ca_file = v; return 1;
	default: a->trust = v; return 1;
	}
}

/* -o: note the options cfs cares about, pass the rest to libfuse. */
static int parse_o(struct mount_args *a, const char *s)
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
			if (len && opt_append(&a->fuse_opts, s, len) < 0)
				return -ENOMEM;
		}
		s += len;
		if (*s == ',')
			s++;
	}
	return 0;
}

enum {
	OPT_CACHE = 256,
	OPT_CACHE_SIZE,
	OPT_MEM_CACHE,
	OPT_STATS_FILE,
	OPT_LOG,
	OPT_DEADLINE,
	OPT_MAX_INFLIGHT,
	OPT_RETRIES,
	OPT_INSECURE,
	OPT_CA_FILE,
	OPT_STATS,
	OPT_READAHEAD,
	OPT_RECORD,
	OPT_PREFETCH,
	OPT_BUNDLE,
	OPT_BUNDLE_REMOVE,
	OPT_STATUS,
	OPT_UPGRADE,
	OPT_TRUST,
};

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

static int parse_prefetch(struct mount_args *a, const char *v)
{
	if (!strcmp(v, "none")) {
		a->prefetch = CFS_PREFETCH_NONE;
	} else if (!strcmp(v, "list")) {
		a->prefetch = CFS_PREFETCH_LIST;
	} else if (!strcmp(v, "all")) {
		a->prefetch = CFS_PREFETCH_ALL;
	} else {
		fprintf(stderr, PROG ": --prefetch: expected none, list or all: '%s'\n", v);
		return -1;
	}
	a->prefetch_set = true;
	return 0;
}

/* 0, 1 when the program should exit 0 (help, version), or -1. */
static int parse_args(int argc, char **argv, struct mount_args *a)
{
	static const struct option longopts[] = {
		{ "foreground", no_argument, NULL, 'f' },
		{ "debug", no_argument, NULL, 'd' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ "cache", required_argument, NULL, OPT_CACHE },
		{ "cache-size", required_argument, NULL, OPT_CACHE_SIZE },
		{ "mem-cache", required_argument, NULL, OPT_MEM_CACHE },
		{ "stats-file", required_argument, NULL, OPT_STATS_FILE },
		{ "log", required_argument, NULL, OPT_LOG },
		{ "deadline", required_argument, NULL, OPT_DEADLINE },
		{ "readahead", required_argument, NULL, OPT_READAHEAD },
		{ "max-inflight", required_argument, NULL, OPT_MAX_INFLIGHT },
		{ "retries", required_argument, NULL, OPT_RETRIES },
		{ "insecure", no_argument, NULL, OPT_INSECURE },
		{ "ca-file", required_argument, NULL, OPT_CA_FILE },
		{ "stats", required_argument, NULL, OPT_STATS },
		{ "record", required_argument, NULL, OPT_RECORD },
		{ "prefetch", required_argument, NULL, OPT_PREFETCH },
		{ "bundle", required_argument, NULL, OPT_BUNDLE },
		{ "bundle-remove", required_argument, NULL, OPT_BUNDLE_REMOVE },
		{ "status", required_argument, NULL, OPT_STATUS },
		{ "upgrade", required_argument, NULL, OPT_UPGRADE },
		{ "trust", required_argument, NULL, OPT_TRUST },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	a->cache_size = DEFAULT_CACHE_SIZE;
	a->mem_cache = DEFAULT_MEM_CACHE;
	while ((c = getopt_long(argc, argv, "fdvhVo:", longopts, NULL)) != -1) {
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
		case OPT_CACHE:
			a->cache_dir = optarg;
			break;
		case OPT_CACHE_SIZE:
		case OPT_MEM_CACHE:
			if (cfs_parse_size(optarg, c == OPT_CACHE_SIZE ? &a->cache_size
								       : &a->mem_cache) < 0) {
				fprintf(stderr, PROG ": %s: invalid size '%s'\n",
					c == OPT_CACHE_SIZE ? "--cache-size" : "--mem-cache", optarg);
				return -1;
			}
			break;
		case OPT_STATS_FILE:
			a->stats_file = optarg;
			break;
		case OPT_LOG:
			a->log_file = optarg;
			break;
		case OPT_DEADLINE:
			if (parse_count("--deadline", optarg, 1, 24ul * 3600 * 1000,
					&a->fetch.deadline_ms) < 0)
				return -1;
			break;
		case OPT_MAX_INFLIGHT:
			if (parse_count("--max-inflight", optarg, 1, 4096, &a->fetch.max_inflight) < 0)
				return -1;
			break;
		case OPT_RETRIES:
			/* The fetcher reads 0 as its default. */
			if (parse_count("--retries", optarg, 1, 100, &a->fetch.retries) < 0)
				return -1;
			break;
		case OPT_INSECURE:
			a->fetch.insecure = true;
			break;
		case OPT_CA_FILE:
			a->ca_file = optarg;
			break;
		case OPT_READAHEAD:
			if (parse_count("--readahead", optarg, 0, 1024, &a->readahead) < 0)
				return -1;
			break;
		case OPT_STATS:
			a->stats_of = optarg;
			break;
		case OPT_RECORD:
			a->record = optarg;
			break;
		case OPT_PREFETCH:
			if (parse_prefetch(a, optarg) < 0)
				return -1;
			break;
		case OPT_BUNDLE:
			a->bundle = optarg;
			break;
		case OPT_BUNDLE_REMOVE:
			a->bundle_down = optarg;
			break;
		case OPT_STATUS:
			a->status_of = optarg;
			break;
		case OPT_UPGRADE:
			a->upgrade_of = optarg;
			break;
		case OPT_TRUST:
			a->trust = optarg;
			break;
		default:
			usage(stderr);
			return -1;
		}
	}
	if (a->prefetch_set && a->prefetch != CFS_PREFETCH_NONE && a->readahead == 0) {
		fprintf(stderr, PROG ": --prefetch %s needs the fetch threads of --readahead (> 0)\n",
			a->prefetch == CFS_PREFETCH_ALL ? "all" : "list");
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

/* stats ------------------------------------------------------------------ */

static int stats_write(struct daemon *d)
{
	char json[CFS_FS_STATS_MAX + 1], *tmp = NULL;
	int fd, n, ret;

	n = cfs_fs_stats_json(&d->fs, json, sizeof(json) - 1);
	if (n < 0)
		return n;
	json[n++] = '\n';

	pthread_mutex_lock(&d->stats_lock);
	if (asprintf(&tmp, "%s.tmp.%ld", d->stats_path, (long)getpid()) < 0) {
		ret = -ENOMEM;
		goto out_unlock;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		ret = -errno;
		goto out_free;
	}
	ret = cfs_write_full(fd, json, (size_t)n);
	if (close(fd) < 0 && ret == 0)
		ret = -errno;
	if (ret == 0 && rename(tmp, d->stats_path) < 0)
		ret = -errno;
	if (ret < 0)
		unlink(tmp);
out_free:
	free(tmp);
out_unlock:
	pthread_mutex_unlock(&d->stats_lock);
	if (ret < 0)
		cfs_err("stats file %s: %s", d->stats_path, cfs_strerror(ret));
	return ret;
}

/* Saves the profile (atomically); quiet is for the periodic save, which
 * skips a profile that has not grown. */
static int record_write(struct daemon *d, bool quiet)
{
	size_t n;
	int ret;

	if (!d->fs.rec)
		return 0;
	n = cfs_recorder_count(d->fs.rec);
	if (quiet && n == d->record_saved)
		return 0;
	ret = cfs_recorder_save(d->fs.rec, d->record_path);
	if (ret < 0)
		cfs_err("profile %s: %s", d->record_path, cfs_strerror(ret));
	else
		d->record_saved = n;
	return ret;
}

/* The daemon's housekeeping thread.  SIGUSR1 is blocked in every thread;
 * this one takes it with sigtimedwait(), so writing the stats and the
 * profile needs no signal handler and no global.  It also wakes once a
 * second to run the cache pass that ring writes asked for (readers that
 * went quiet run none), and saves the profile every RECORD_SAVE_SEC. */
static void *stats_thread_main(void *arg)
{
	const struct timespec period = { .tv_sec = 1 };
	struct daemon *d = arg;
	unsigned ticks = 0;
	sigset_t set;
	int sig;

	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	for (;;) {
		sig = sigtimedwait(&set, NULL, &period);
		if (atomic_load(&d->stopping))
			break;
		if (sig < 0 && errno == EAGAIN) {
			cfs_cache_tick(d->fs.cache);
			if (d->fs.rec && ++ticks % RECORD_SAVE_SEC == 0)
				record_write(d, true);
			continue;
		}
		if (sig != SIGUSR1)
			continue;
		if (d->stats_path)
			stats_write(d);
		record_write(d, false);
	}
	return NULL;
}

static int stats_thread_start(struct daemon *d)
{
	sigset_t all, old;
	int ret;

	/* The thread takes no signal but through sigwait: SIGTERM and SIGINT
	 * must reach a thread of the FUSE loop. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	ret = -pthread_create(&d->stats_thread, NULL, stats_thread_main, d);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (ret == 0)
		d->stats_thread_started = true;
	return ret;
}

static void stats_thread_stop(struct daemon *d)
{
	if (!d->stats_thread_started)
		return;
	atomic_store(&d->stopping, true);
	pthread_kill(d->stats_thread, SIGUSR1);
	pthread_join(d->stats_thread, NULL);
	d->stats_thread_started = false;
}

/* logging ---------------------------------------------------------------- */

static ssize_t syslog_write(void *cookie, const char *buf, size_t len)
{
	int n = (int)CFS_MIN(len, (size_t)INT_MAX);

	(void)cookie;
	while (n > 0 && buf[n - 1] == '\n')
		n--;
	if (n > 0)
		syslog(LOG_ERR, "%.*s", n, buf);
	return (ssize_t)len;
}

/* Once detached, stderr is /dev/null: without --log, log to syslog. */
static FILE *syslog_file(void)
{
	static const cookie_io_functions_t io = { .write = syslog_write };
	FILE *f;

	openlog(PROG, LOG_PID, LOG_DAEMON);
	f = fopencookie(NULL, "w", io);
	if (f)
		setvbuf(f, NULL, _IOLBF, 0);
	return f;
}

/* setup ------------------------------------------------------------------ */

static char *default_cache_dir(void)
{
	const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
	char *out;

	if (geteuid() == 0)
		return strdup("/var/cache/cfs");
	if (xdg && xdg[0] == '/')
		return asprintf(&out, "%s/cfs", xdg) < 0 ? NULL : out;
	if (home && home[0] == '/')
		return asprintf(&out, "%s/.cache/cfs", home) < 0 ? NULL : out;
	return strdup("/var/tmp/cfs-cache");
}

/* Appends s to the option list with ',' and '\' escaped, as libfuse's
 * option parser expects. */
static int opt_append_escaped(char **list, const char *prefix, const char *s)
{
	size_t n = strlen(prefix) + 2 * strlen(s) + 1;
	char *buf = malloc(n), *p;
	int ret;

	if (!buf)
		return -ENOMEM;
	p = stpcpy(buf, prefix);
	for (; *s; s++) {
		if (*s == ',' || *s == '\\')
			*p++ = '\\';
		*p++ = *s;
	}
	*p = '\0';
	ret = opt_append(list, buf, (size_t)(p - buf));
	free(buf);
	return ret;
}

static int build_fuse_args(const struct mount_args *a, const char *store_abs, size_t max_read,
			   struct fuse_args *args)
{
	char *opts = NULL, mr[32];
	int ret = -ENOMEM;

	if (fuse_opt_add_arg(args, PROG) < 0)
		return -ENOMEM;
	if (a->debug && fuse_opt_add_arg(args, "-d") < 0)
		return -ENOMEM;
	if (opt_append(&opts, "ro", 2) < 0 ||
	    opt_append_escaped(&opts, "fsname=cfs:", store_abs) < 0 ||
	    opt_append(&opts, "subtype=cfs", 11) < 0)
		goto out;
	/* With other users let in, let the kernel check permissions. */
	if (a->allow_other && !a->default_permissions &&
	    opt_append(&opts, "default_permissions", 19) < 0)
		goto out;
	/* Spliced replies must fit the pipes (fs/splice.c); the user's own
	 * -o max_read, after it, wins. */
	if (max_read && max_read < (1u << 20)) {
		int n = snprintf(mr, sizeof(mr), "max_read=%zu", max_read);

		if (opt_append(&opts, mr, (size_t)n) < 0)
			goto out;
	}
	if (a->fuse_opts && opt_append(&opts, a->fuse_opts, strlen(a->fuse_opts)) < 0)
		goto out;
	if (fuse_opt_add_arg(args, "-o") < 0 || fuse_opt_add_arg(args, opts) < 0)
		goto out;
	ret = 0;
out:
	free(opts);
	return ret;
}

/* Opens store, cache and image, printing one line for what failed. */
static int open_image(const struct mount_args *a, struct daemon *d, const char *store_abs)
{
	struct cfs_store_opts so = { .fetch = &a->fetch };
	struct cfs_cache_opts co = { 0 };
	struct cfs_trust *trust = NULL;
	char ref[CFS_REF_STRLEN], why[256] = "";
	const char *pinned;
	char *cache_dir = NULL;
	cfs_digest dg;
	int ret;

	ret = cfs_store_open_opts(store_abs, 0, &so, &d->fs.store);
	if (ret < 0) {
		fprintf(stderr, PROG ": store %s: %s\n", a->store,
			ret == -EUCLEAN ? "not a cfs store" : cfs_strerror(ret));
		return ret;
	}

	cache_dir = a->cache_dir ? abs_path(a->cache_dir) : default_cache_dir();
	if (!cache_dir) {
		fprintf(stderr, PROG ": %s\n", strerror(ENOMEM));
		return -ENOMEM;
	}
	co.dir = cache_dir;
	co.disk_max = a->cache_size;
	co.mem_max = a->mem_cache;
	ret = cfs_cache_new(&co, &d->fs.cache);
	if (ret < 0) {
		fprintf(stderr, PROG ": cache %s: %s\n", cache_dir, cfs_strerror(ret));
		goto out;
	}

	/* A restarted daemon opens what the mount's first daemon opened, by
	 * reference: the tag may have moved since, and the signature was
	 * checked then. */
	pinned = getenv(CFS_SERVE_FD_ENV) ? getenv(CFS_SERVE_REF_ENV) : NULL;
	if (pinned && cfs_digest_parse(pinned, false, &dg) < 0)
		pinned = NULL;
	if (pinned) {
		ret = 0;
	} else if (a->trust) {
		ret = cfs_trust_load(a->trust, &trust);
		if (ret < 0) {
			fprintf(stderr, PROG ": --trust %s: %s\n", a->trust,
				ret == -EINVAL ? "no Ed25519 public keys (PEM) there" : cfs_strerror(ret));
			goto out;
		}
		ret = cfs_store_resolve_trusted(d->fs.store, trust, a->image, &dg, NULL, why,
						sizeof(why));
		cfs_trust_free(trust);
	} else {
		ret = cfs_store_resolve(d->fs.store, a->image, &dg);
	}
	if (ret == -ENOKEY) {
		fprintf(stderr, PROG ": image '%s' refused: %s in store %s; sign it (cfs-pack --sign, "
			"cfs-sign sign) or mount it by sha256: reference\n", a->image, why, a->store);
		goto out;
	} else if ((ret == -EPERM || ret == -EUCLEAN) && why[0]) {
		fprintf(stderr, PROG ": image '%s' refused: %s\n", a->image, why);
		goto out;
	} else if (ret == -ENXIO) {
		fprintf(stderr, PROG ": store %s: not a cfs store (no cfs-store marker there)\n",
			a->store);
		goto out;
	} else if (ret == -ENOENT) {
		fprintf(stderr, PROG ": image '%s' not found in store %s\n", a->image, a->store);
		goto out;
	} else if (ret == -EINVAL) {
		fprintf(stderr, PROG ": invalid image name '%s' (a tag or sha256:<64 hex>)\n",
			a->image);
		goto out;
	} else if (ret < 0) {
		fprintf(stderr, PROG ": image '%s': %s\n", a->image, cfs_strerror(ret));
		goto out;
	}
	/* Open what the tag named just now, even if it moves meanwhile. */
	cfs_digest_ref(&dg, ref);
	memcpy(d->ref, ref, sizeof(d->ref));
	ret = cfs_image_open(d->fs.store, d->fs.cache, ref, &d->fs.img);
	if (ret == -ENXIO) {
		fprintf(stderr, PROG ": store %s: not a cfs store (no cfs-store marker there)\n",
			a->store);
		goto out;
	} else if (ret == -ENOENT && strcmp(a->image, ref)) {
		fprintf(stderr, PROG ": image '%s': the tag names %s, which is not in store %s\n",
			a->image, ref, a->store);
		goto out;
	} else if (ret == -ENOENT) {
		fprintf(stderr, PROG ": image '%s' not found in store %s\n", a->image, a->store);
		goto out;
	} else if (ret < 0) {
		fprintf(stderr, PROG ": image %s: %s\n", ref, cfs_strerror(ret));
		goto out;
	}
	if (a->readahead) {
		ret = cfs_image_set_readahead(d->fs.img, CFS_READAHEAD_THREADS_DEFAULT, a->readahead);
		if (ret < 0) {
			fprintf(stderr, PROG ": readahead: %s\n", cfs_strerror(ret));
			goto out;
		}
	}
	d->fs.idx = cfs_image_index(d->fs.img);
	if (d->record_path) {
		ret = cfs_recorder_new(d->fs.idx, &dg, &d->fs.rec);
		if (ret < 0) {
			fprintf(stderr, PROG ": --record: %s\n", cfs_strerror(ret));
			goto out;
		}
		/* Now, so that a bad path fails the mount rather than the exit. */
		ret = cfs_recorder_save(d->fs.rec, d->record_path);
		if (ret < 0) {
			fprintf(stderr, PROG ": --record %s: %s\n", a->record, cfs_strerror(ret));
			goto out;
		}
	}
	/* Without readahead threads there is nothing to prefetch with; an
	 * explicit --prefetch was refused at parse time. */
	if (a->prefetch != CFS_PREFETCH_NONE && a->readahead) {
		ret = cfs_image_prefetch_start(d->fs.img, a->prefetch);
		if (ret < 0) {
			fprintf(stderr, PROG ": prefetch: %s\n", cfs_strerror(ret));
			goto out;
		}
	}
	cfs_index_info(d->fs.idx, &d->fs.info);
	cfs_info("image %s: %" PRIu64 " inodes, %" PRIu64 " chunks, %" PRIu64 " bytes of files",
		 ref, d->fs.info.inode_count, d->fs.info.chunk_count, d->fs.info.total_file_bytes);
out:
	free(cache_dir);
	return ret;
}

static int check_mountpoint(const char *mp, char **out)
{
	struct stat st;

	if (stat(mp, &st) < 0) {
		fprintf(stderr, PROG ": mountpoint %s: %s\n", mp, strerror(errno));
		return -1;
	}
	if (!S_ISDIR(st.st_mode)) {
		fprintf(stderr, PROG ": mountpoint %s: %s\n", mp, strerror(ENOTDIR));
		return -1;
	}
	*out = realpath(mp, NULL);
	if (!*out) {
		fprintf(stderr, PROG ": mountpoint %s: %s\n", mp, strerror(errno));
		return -1;
	}
	return 0;
}

/* The kernel gives a FUSE mount 128 KiB of readahead whatever the daemon
 * asks for; its bdi setting is what lets sequential reads arrive as 1 MiB
 * requests (fewer round trips, about twice the throughput here).  Root
 * only, best effort.  Reads mountinfo rather than stat()ing the mount point,
 * which would wait for the loop that is not running yet. */
static void raise_readahead(const char *mountpoint, const char *kb)
{
	char line[4096], dev[64] = "", path[PATH_MAX + 64];
	FILE *f;
	int fd;

	if (!strcmp(kb, "0") || geteuid() != 0 || strpbrk(mountpoint, " \t\n\\"))
		return;
	f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		char d[64], mp[PATH_MAX];

		/* id parent major:minor root mountpoint ...; the last match is ours */
		if (sscanf(line, "%*s %*s %63s %*s %4095s", d, mp) == 2 && !strcmp(mp, mountpoint))
			snprintf(dev, sizeof(dev), "%s", d);
	}
	fclose(f);
	if (!dev[0])
		return;
	snprintf(path, sizeof(path), "/sys/class/bdi/%s/read_ahead_kb", dev);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	if (cfs_write_full(fd, kb, strlen(kb)) < 0)
		cfs_info("%s: cannot raise readahead", path);
	close(fd);
}

/* The chunk cache keeps cache files open for hits, up to half the soft
 * limit: take the hard one (systemd and most shells give 1024 soft). */
static void raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/* --stats MOUNTPOINT: the running daemon's counters, one JSON line. */
static int print_stats(const char *mountpoint)
{
	char json[CFS_FS_STATS_MAX + 1];
	ssize_t n;

	n = getxattr(mountpoint, CFS_FS_STATS_XATTR, json, sizeof(json) - 1);
	if (n < 0) {
		if (errno == ENODATA || errno == ENOTSUP)
			fprintf(stderr, PROG ": %s: not the root of a cfs mount (no %s)\n", mountpoint,
				CFS_FS_STATS_XATTR);
		else
			fprintf(stderr, PROG ": %s: %s\n", mountpoint, strerror(errno));
		return 1;
	}
	json[n] = '\0';
	if (printf("%s\n", json) < 0 || fflush(stdout) != 0) {
		fprintf(stderr, PROG ": stdout: %s\n", strerror(errno));
		return 1;
	}
	return 0;
}

/* Forks the daemon.  Returns 0 in the child, with the write end of the
 * status pipe in *ready_fd; the parent exits with the child's verdict: 0
 * once it wrote READY_OK, 1 when it wrote anything else (it printed why on
 * the stderr they share) or died; with parent_returns, it returns 1 once
 * the mount is ready instead of exiting 0. */
#define READY_OK 0
#define READY_FAILED 1

static int daemon_fork(int *ready_fd, bool parent_returns)
{
	unsigned char status;
	int fds[2], wstatus;
	ssize_t n;
	pid_t pid;

	if (pipe2(fds, O_CLOEXEC) < 0) {
		fprintf(stderr, PROG ": pipe: %s\n", strerror(errno));
		return -1;
	}
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		fprintf(stderr, PROG ": fork: %s\n", strerror(errno));
		close(fds[0]);
		close(fds[1]);
		return -1;
	}
	if (pid == 0) {
		close(fds[0]);
		*ready_fd = fds[1];
		return 0;
	}
	close(fds[1]);
	do {
		n = read(fds[0], &status, 1);
	} while (n < 0 && errno == EINTR);
	if (n == 1 && status == READY_OK && parent_returns)
		return 1;
	if (n == 1)
		_exit(status == READY_OK ? 0 : 1);
	/* No byte: the child died before it could say. */
	if (waitpid(pid, &wstatus, 0) == pid && WIFSIGNALED(wstatus))
		fprintf(stderr, PROG ": the daemon was killed by signal %d before the mount was ready\n",
			WTERMSIG(wstatus));
	else
		fprintf(stderr, PROG ": the daemon exited before the mount was ready\n");
	_exit(1);
}

/* The child, once mounted: leaves the terminal and the working directory,
 * then lets the parent go. */
static int daemon_detach(int *ready_fd)
{
	unsigned char ok = READY_OK;
	int nullfd;

	if (setsid() < 0 || chdir("/") < 0) {
		fprintf(stderr, PROG ": cannot detach: %s\n", strerror(errno));
		return -1;
	}
	nullfd = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (nullfd < 0) {
		fprintf(stderr, PROG ": /dev/null: %s\n", strerror(errno));
		return -1;
	}
	fflush(NULL);
	/* Before the parent exits: whoever waits for its output must not wait
	 * for the daemon's too. */
	dup2(nullfd, STDIN_FILENO);
	dup2(nullfd, STDOUT_FILENO);
	dup2(nullfd, STDERR_FILENO);
	if (nullfd > STDERR_FILENO)
		close(nullfd);
	if (write(*ready_fd, &ok, 1) != 1)
		return -1;
	close(*ready_fd);
	*ready_fd = -1;
	return 0;
}

static void daemon_failed(int *ready_fd)
{
	unsigned char failed = READY_FAILED;

	if (*ready_fd < 0)
		return;
	fflush(NULL);
	if (write(*ready_fd, &failed, 1) != 1) {
		/* The parent then sees the pipe close, which says the same. */
	}
	close(*ready_fd);
	*ready_fd = -1;
}

static void close_image(struct daemon *d)
{
	cfs_recorder_free(d->fs.rec);
	d->fs.rec = NULL;
	cfs_image_free(d->fs.img);
	d->fs.img = NULL;
	cfs_cache_free(d->fs.cache);
	d->fs.cache = NULL;
	cfs_store_free(d->fs.store);
	d->fs.store = NULL;
}

/* --bundle, in the parent once the daemon serves DIR/lower: the image
 * config (opened here again, from the cache the daemon just filled), the
 * overlay and config.json.  On failure the mount goes again.  0 or 1. */
static int bundle_finish(const struct mount_args *a, const char *store_abs, const char *lower)
{
	struct mount_args ba = *a;
	struct daemon bd = { 0 };
	char err[512] = "", *spec = NULL;
	void *cfg = NULL;
	size_t cfg_len = 0;
	int ret, rootfd = -1;

	ba.readahead = 0;
	ba.prefetch = CFS_PREFETCH_NONE;
	ba.record = NULL;
	ret = open_image(&ba, &bd, store_abs);
	if (ret == 0) {
		ret = cfs_image_config(bd.fs.img, &cfg, &cfg_len);
		if (ret == -ENOENT)
			ret = 0; /* packed from a directory or a tar: no config */
		else if (ret < 0)
			snprintf(err, sizeof(err), "image config: %s", cfs_strerror(ret));
	}
	close_image(&bd);
	if (ret == 0) {
		rootfd = open(lower, O_PATH | O_DIRECTORY | O_CLOEXEC);
		ret = rootfd < 0 ? -errno : 0;
		if (ret < 0)
			snprintf(err, sizeof(err), "%s: %s", lower, strerror(errno));
	}
	if (ret == 0)
		ret = cfs_bundle_spec(cfg, cfg_len, rootfd, &spec, err, sizeof(err));
	if (rootfd >= 0)
		close(rootfd);
	if (ret == 0)
		ret = cfs_bundle_up(a->bundle, spec, err, sizeof(err));
	free(cfg);
	free(spec);
	if (ret == 0)
		return 0;
	if (err[0] || ret != -ENOENT)
		fprintf(stderr, PROG ": --bundle %s: %s\n", a->bundle,
			err[0] ? err : cfs_strerror(ret));
	/* The daemon exits when its mount goes. */
	if (umount2(lower, MNT_DETACH) < 0)
		fprintf(stderr, PROG ": unmounting %s: %s\n", lower, strerror(errno));
	return 1;
}

/* ---- --status and --upgrade ------------------------------------------- */

/* The holder's state file of a mount point, parsed.  The mount point is
 * resolved without entering the mount (its daemon may be down). */
static json_t *holder_state(const char *mp, char **path_out)
{
	char *copy = strdup(mp), *slash, *dir, *full = NULL, *path = NULL;
	const char *base;
	json_error_t je;
	json_t *st = NULL;

	if (!copy)
		return NULL;
	while (strlen(copy) > 1 && copy[strlen(copy) - 1] == '/')
		copy[strlen(copy) - 1] = '\0';
	slash = strrchr(copy, '/');
	base = slash ? slash + 1 : copy;
	if (slash == copy)
		dir = realpath("/", NULL);
	else if (slash)
		*slash = '\0', dir = realpath(copy, NULL);
	else
		dir = realpath(".", NULL);
	if (dir && asprintf(&full, "%s%s%s", dir, strcmp(dir, "/") ? "/" : "", base) < 0)
		full = NULL;
	if (full && cfs_holder_state_path(full, &path) == 0) {
		st = json_load_file(path, 0, &je);
		if (!st)
			fprintf(stderr, PROG ": %s: no holder state for this mount point (%s): "
				"not a background cfs mount, or not mounted\n", full, path);
	}
	if (path_out)
		*path_out = path;
	else
		free(path);
	free(full);
	free(dir);
	free(copy);
	return st;
}

/* FUSE requests the kernel has queued or sent to the daemon and not seen
 * answered: /sys/fs/fuse/connections/<dev>/waiting. */
static long long fuse_waiting(const char *mp)
{
	char line[4096], path[128];
	long long v = -1;
	unsigned maj, min;
	FILE *f = fopen("/proc/self/mountinfo", "re");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		char m[PATH_MAX];

		if (sscanf(line, "%*s %*s %u:%u %*s %4095s", &maj, &min, m) == 3 && !strcmp(m, mp)) {
			snprintf(path, sizeof(path), "/sys/fs/fuse/connections/%u/waiting", min);
			FILE *w = fopen(path, "re");

			if (w) {
				if (fscanf(w, "%lld", &v) != 1)
					v = -1;
				fclose(w);
			}
		}
	}
	fclose(f);
	return v;
}

static int print_status(const char *mp)
{
	json_t *st = holder_state(mp, NULL), *stats = NULL;
	const char *mpr;
	char json[CFS_FS_STATS_MAX + 1], *out;
	long long started;
	pid_t holder;
	ssize_t n;

	if (!st)
		return 1;
	mpr = json_string_value(json_object_get(st, "mountpoint"));
	holder = (pid_t)json_integer_value(json_object_get(st, "holder_pid"));
	started = json_integer_value(json_object_get(st, "started_unix"));
	json_object_set_new(st, "holder_alive", json_boolean(holder > 0 && kill(holder, 0) == 0));
	json_object_set_new(st, "uptime_s", json_integer(time(NULL) - started));
	if (mpr) {
		long long w = fuse_waiting(mpr);

		/* null without fusectl mounted at /sys/fs/fuse/connections */
		json_object_set_new(st, "fuse_requests_waiting", w >= 0 ? json_integer(w) : json_null());
		/* The daemon's counters: cache use, store requests in flight. */
		n = getxattr(mpr, CFS_FS_STATS_XATTR, json, sizeof(json) - 1);
		if (n > 0) {
			json[n] = '\0';
			stats = json_loads(json, 0, NULL);
		}
	}
	if (stats) {
		json_object_set(st, "cache_disk_bytes", json_object_get(stats, "cache_disk_bytes"));
		json_object_set(st, "cache_mem_bytes", json_object_get(stats, "cache_mem_bytes"));
		json_object_set(st, "fetch_inflight", json_object_get(stats, "fetch_inflight"));
		json_object_set(st, "reads", json_object_get(stats, "reads"));
		json_decref(stats);
	}
	out = json_dumps(st, JSON_COMPACT);
	json_decref(st);
	if (!out || printf("%s\n", out) < 0 || fflush(stdout) != 0) {
		free(out);
		return 1;
	}
	free(out);
	return 0;
}

/* Waits until the holder's state file counts key above before (0), says
 * why it failed (1, printed), or the time is up (1). */
static int wait_state(const char *mp, const char *key, unsigned before, json_t **out)
{
	for (int i = 0; i < 1200; i++) {
		const char *why;
		json_t *st;

		usleep(100000);
		st = holder_state(mp, NULL);
		if (!st)
			return 1;
		why = json_string_value(json_object_get(st, "last_restart_reason"));
		if ((unsigned)json_integer_value(json_object_get(st, key)) > before) {
			*out = st;
			return 0;
		}
		if (why && strstr(why, "upgrade failed")) {
			fprintf(stderr, PROG ": %s: %s\n", mp, why);
			json_decref(st);
			return 1;
		}
		json_decref(st);
	}
	fprintf(stderr, PROG ": %s: no %s after 120 s\n", mp, key);
	return 1;
}

/* --upgrade: the holder execs the installed binary (SIGUSR2), then starts
 * a daemon from it and retires the old one (SIGHUP); each step is seen
 * done in the holder's state file. */
static int do_upgrade(const char *mp)
{
	json_t *st = holder_state(mp, NULL);
	unsigned before, execs;
	pid_t holder, old;

	if (!st)
		return 1;
	holder = (pid_t)json_integer_value(json_object_get(st, "holder_pid"));
	old = (pid_t)json_integer_value(json_object_get(st, "daemon_pid"));
	before = (unsigned)json_integer_value(json_object_get(st, "upgrades"));
	execs = (unsigned)json_integer_value(json_object_get(st, "holder_execs"));
	json_decref(st);
	if (holder <= 0 || kill(holder, SIGUSR2) < 0) {
		fprintf(stderr, PROG ": %s: holder %ld: %s\n", mp, (long)holder, strerror(errno));
		return 1;
	}
	if (wait_state(mp, "holder_execs", execs, &st))
		return 1;
	json_decref(st);
	if (kill(holder, SIGHUP) < 0) {
		fprintf(stderr, PROG ": %s: holder %ld: %s\n", mp, (long)holder, strerror(errno));
		return 1;
	}
	if (wait_state(mp, "upgrades", before, &st))
		return 1;
	printf("%s: holder %ld re-executed, daemon %ld replaced by %ld\n", mp, (long)holder,
	       (long)old, (long)json_integer_value(json_object_get(st, "daemon_pid")));
	json_decref(st);
	return 0;
}

/* ---- under a holder (holder.c) ---------------------------------------- */

/* A daemon started by a holder drops its reply to the saved INIT request
 * unless it is the first: the kernel set the connection up once. */
static bool serve_drop_writes;

static ssize_t serve_read(int fd, void *buf, size_t len, void *userdata)
{
	(void)userdata;
	return read(fd, buf, len);
}

static ssize_t serve_writev(int fd, struct iovec *iov, int count, void *userdata)
{
	ssize_t n = 0;

	(void)userdata;
	if (!serve_drop_writes)
		return writev(fd, iov, count);
	for (int i = 0; i < count; i++)
		n += (ssize_t)iov[i].iov_len;
	return n;
}

/* libfuse 3.14 offers splice only to custom I/O that has these. */
static ssize_t serve_splice(int fdin, off_t *offin, int fdout, off_t *offout, size_t len,
			    unsigned int flags, void *userdata)
{
	(void)userdata;
	return splice(fdin, offin, fdout, offout, len, flags);
}

static int env_fd(const char *name)
{
	const char *v = getenv(name);
	unsigned long n;

	if (!v || cfs_parse_uint(v, 0, INT_MAX, &n) < 0)
		return -1;
	return (int)n;
}

/* Attaches the session to the holder's connection: the fd, then the INIT
 * request the kernel sent when it was mounted, processed as if it had
 * just arrived.  *ready_fd: where to say that the daemon serves. */
static int serve_attach(struct fuse_session *se, int *ready_fd)
{
	static const struct fuse_custom_io io = { .read = serve_read, .writev = serve_writev,
						  .splice_receive = serve_splice,
						  .splice_send = serve_splice };
	int fd = env_fd(CFS_SERVE_FD_ENV), init_fd = env_fd(CFS_SERVE_INIT_ENV);
	const char *reply = getenv(CFS_SERVE_REPLY_ENV);
	struct fuse_buf fbuf = { 0 };
	void *init = NULL;
	size_t len = 0;
	int ret;

	*ready_fd = env_fd(CFS_SERVE_READY_ENV);
	if (fd < 0 || init_fd < 0 || *ready_fd < 0) {
		fprintf(stderr, PROG ": bad %s/%s/%s from the holder\n", CFS_SERVE_FD_ENV,
			CFS_SERVE_INIT_ENV, CFS_SERVE_READY_ENV);
		return -EINVAL;
	}
	fcntl(*ready_fd, F_SETFD, FD_CLOEXEC);
	fcntl(fd, F_SETFD, FD_CLOEXEC);
	ret = cfs_holder_load_init(init_fd, &init, &len);
	close(init_fd);
	if (ret < 0) {
		fprintf(stderr, PROG ": the holder's INIT request: %s\n", cfs_strerror(ret));
		return ret;
	}
	ret = fuse_session_custom_io(se, &io, fd);
	if (ret < 0) {
		free(init);
		fprintf(stderr, PROG ": attaching to the holder's connection: %s\n",
			strerror(-ret));
		return ret;
	}
	fbuf.mem = init;
	fbuf.size = len;
	serve_drop_writes = !(reply && !strcmp(reply, "1"));
	fuse_session_process_buf(se, &fbuf);
	serve_drop_writes = false;
	free(init);
	return 0;
}

/* Tells the holder that this daemon serves.  Its stderr was the user's
 * until now (for the errors of a failed start); from here on it holds no
 * one's terminal or pipe open, or `x=$(cfs-mount ...)` would wait for it. */
static void serve_ready(int *ready_fd, const char *ref)
{
	char c[1 + CFS_REF_STRLEN] = { READY_OK };
	int nullfd;

	if (*ready_fd < 0)
		return;
	fflush(NULL);
	nullfd = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (nullfd >= 0) {
		dup2(nullfd, STDIN_FILENO);
		dup2(nullfd, STDOUT_FILENO);
		dup2(nullfd, STDERR_FILENO);
		if (nullfd > STDERR_FILENO)
			close(nullfd);
	}
	/* One write, which a pipe keeps whole: the byte and the reference
	 * served, which the holder hands to later daemons. */
	memcpy(c + 1, ref, CFS_REF_STRLEN - 1);
	if (write(*ready_fd, c, sizeof(c) - 1) != (ssize_t)sizeof(c) - 1) {
		/* The holder then sees the pipe close: it says the same. */
	}
	close(*ready_fd);
	*ready_fd = -1;
}

/* The binary a holder runs for its daemons: the one installed at the path
 * this process was started from (an upgrade replaces that file). */
static char *self_exe(void)
{
	char buf[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
	const char *del = " (deleted)";

	if (n <= 0)
		return NULL;
	buf[n] = '\0';
	if ((size_t)n > strlen(del) && !strcmp(buf + n - strlen(del), del))
		buf[n - strlen(del)] = '\0';
	return strdup(buf);
}

/* What a holder runs its daemons with: the binary installed at the path
 * this process came from, its arguments plus -f, the working directory
 * (for relative paths in them), its own arguments for its upgrade.  The
 * caller frees h->exe and h->argv.  0 or -errno. */
static int holder_args(struct cfs_holder *h, int argc, char **argv, char *cwd, size_t cwd_len)
{
	char *exe = self_exe(), **dargv = calloc((size_t)argc + 2, sizeof(*dargv));

	if (!exe || !dargv || !getcwd(cwd, cwd_len)) {
		int e = errno ? errno : ENOMEM;

		free(exe);
		free(dargv);
		return -e;
	}
	memcpy(dargv, argv, (size_t)argc * sizeof(*dargv));
	dargv[argc] = (char *)"-f";
	h->exe = exe;
	h->argv = dargv;
	h->holder_argv = argv;
	h->cwd = cwd;
	return 0;
}

/* In the holder's first daemon (forked): the holder's session, left as it
 * is (freeing it would close the connection's fd, unmounting it is the
 * holder's business); volatile, so that the store that keeps it reachable
 * for the leak checker is not optimised away. */
static struct fuse_session *volatile holder_session;
#define RUN_HOLDER_CHILD (-2)

/* The holder's side of a background mount: mounts with a session of its
 * own that never serves, keeps the fd and the INIT request, runs the
 * daemons.  Returns the exit status, or RUN_HOLDER_CHILD in the first
 * daemon, which the holder forked and which goes on to serve. */
static int run_holder(const struct mount_args *a, struct daemon *d, struct fuse_args *args,
		      const char *mountpoint, int argc, char **argv, int *ready_fd,
		      enum cfs_log_level level)
{
	static const struct fuse_lowlevel_ops no_ops = { 0 };
	struct cfs_holder h = { .fuse_fd = -1, .init_fd = -1, .mountpoint = mountpoint,
				.image = a->image, .store = a->store };
	struct fuse_session *se;
	char cwd[PATH_MAX];
	int ret, status = 1;

	se = fuse_session_new(args, &no_ops, sizeof(no_ops), NULL);
	if (!se) {
		fprintf(stderr, PROG ": invalid mount options (see above)\n");
		return 1;
	}
	ret = holder_args(&h, argc, argv, cwd, sizeof(cwd));
	if (ret < 0) {
		fprintf(stderr, PROG ": %s\n", strerror(-ret));
		goto out_session;
	}
	h.fork_first = true;
	if (geteuid() == 0)
		cfs_holder_state_path(mountpoint, &h.state_path);
	if (fuse_session_mount(se, mountpoint) < 0) {
		fprintf(stderr, PROG ": cannot mount at %s (see above)\n", a->mountpoint);
		goto out_session;
	}
	h.fuse_fd = fuse_session_fd(se);
	ret = cfs_holder_read_init(h.fuse_fd, &h.init_fd);
	if (ret < 0) {
		fprintf(stderr, PROG ": reading INIT from the kernel: %s\n", cfs_strerror(ret));
		goto out_unmount;
	}
	ret = cfs_holder_start(&h);
	if (ret == CFS_HOLDER_CHILD) {
		/* The first daemon, forked: it serves from main(), with its own
		 * session; the holder's stays with the holder (kept reachable
		 * here: it is the holder's to unmount and free). */
		holder_session = se;
		close(*ready_fd); /* the command's pipe is the holder's to answer */
		*ready_fd = -1;
		free(h.state_path);
		free(h.argv);
		free(h.exe);
		return RUN_HOLDER_CHILD;
	}
	if (ret < 0) {
		/* The daemon printed why on the stderr we share. */
		if (ret == -ETIMEDOUT)
			fprintf(stderr, PROG ": the daemon did not serve within a minute\n");
		goto out_unmount;
	}
	if (daemon_detach(ready_fd) < 0)
		goto out_stop;
	if (!d->log) {
		d->log = syslog_file();
		cfs_log_setup(PROG, level, d->log);
	}
	ret = cfs_holder_run(&h);
	if (ret < 0)
		cfs_err("holder: %s", cfs_strerror(ret));
	status = ret < 0;
	/* Unmounted already, unless told to end it (1): libfuse sees that
	 * (POLLERR on the fd) and only frees what it kept. */
	goto out_unmount;
out_stop:
	if (h.daemon)
		kill(h.daemon, SIGKILL);
out_unmount:
	fuse_session_unmount(se);
out_session:
	fuse_session_destroy(se);
	if (h.init_fd >= 0)
		close(h.init_fd);
	free(h.state_path);
	free(h.argv);
	free(h.exe);
	return status;
}

/* Unmounts what a resumed holder holds (it has no session to do it). */
static void holder_unmount(const char *mp)
{
	pid_t pid;
	int st;

	if (geteuid() == 0 && umount2(mp, 0) == 0)
		return;
	pid = fork();
	if (pid == 0) {
		execlp("fusermount3", "fusermount3", "-u", "-z", "--", mp, (char *)NULL);
		_exit(127);
	}
	if (pid > 0)
		waitpid(pid, &st, 0);
}

/* A holder after its own upgrade (SIGUSR2, exec): carries on holding. */
static int run_holder_resumed(const struct mount_args *a, int argc, char **argv,
			      struct daemon *d, enum cfs_log_level level)
{
	struct cfs_holder h = { .fuse_fd = -1, .init_fd = -1, .image = a->image,
				.store = a->store };
	char *env = strdup(getenv(CFS_HOLDER_RESUME_ENV));
	char cwd[PATH_MAX];
	int ret, status = 1;

	/* Its daemons must not take themselves for holders. */
	unsetenv(CFS_HOLDER_RESUME_ENV);
	if (!d->log) {
		d->log = syslog_file();
		cfs_log_setup(PROG, level, d->log);
	}
	if (!env || holder_args(&h, argc, argv, cwd, sizeof(cwd)) < 0 ||
	    cfs_holder_resume(&h, env) < 0) {
		cfs_err("holder upgrade: cannot take over (%s): the mount lives as long as its "
			"daemon", env ? env : "no state");
		goto out;
	}
	if (geteuid() == 0)
		cfs_holder_state_path(h.mountpoint, &h.state_path);
	if (chdir("/") < 0) {
		/* nothing depends on it */
	}
	cfs_info("holder upgraded (%u): holding %s, daemon %ld", h.holder_execs, h.mountpoint,
		 (long)h.daemon);
	ret = cfs_holder_run(&h);
	if (ret == 1)
		holder_unmount(h.mountpoint);
	status = ret < 0;
out:
	free(h.state_path);
	free(h.argv);
	free(h.exe);
	free(env);
	return status;
}

int main(int argc, char **argv)
{
	struct mount_args a = { .readahead = CFS_READAHEAD_CHUNKS_DEFAULT,
				.prefetch = CFS_PREFETCH_LIST };
	struct daemon d = { 0 };
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	struct fuse_session *se;
	struct fuse_loop_config *cfg;
	char *mountpoint = NULL, *store_abs = NULL, *ca_file = NULL;
	enum cfs_log_level level;
	sigset_t usr1;
	bool served = false, serve = getenv(CFS_SERVE_FD_ENV) != NULL, holder;
	int ret, status = 1, ready_fd = -1;

	/* Before any thread exists: SIGUSR1 is taken by the stats thread with
	 * sigwait(), and must not kill us while we start up. */
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &usr1, NULL);
	pthread_mutex_init(&d.stats_lock, NULL);
	/* Every chunk fetch and FUSE read allocates about a chunk: keep such
	 * buffers in the heap for reuse instead of paying page faults on a
	 * fresh mmap each time. */
	mallopt(M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD);
	mallopt(M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD);

	ret = parse_args(argc, argv, &a);
	if (ret != 0) {
		status = ret > 0 ? 0 : 1;
		goto out_args;
	}
	if (a.stats_of) {
		status = print_stats(a.stats_of);
		goto out_args;
	}
	if (a.status_of || a.upgrade_of) {
		status = a.status_of ? print_status(a.status_of) : do_upgrade(a.upgrade_of);
		goto out_args;
	}
	if (a.bundle_down) {
		char err[512] = "";

		ret = cfs_bundle_down(a.bundle_down, err, sizeof(err));
		if (ret < 0)
			fprintf(stderr, PROG ": --bundle-remove: %s\n", err[0] ? err : cfs_strerror(ret));
		status = ret < 0;
		goto out_args;
	}
	if (a.bundle && !serve) {
		if (geteuid() != 0) {
			fprintf(stderr, PROG ": --bundle needs root (it mounts an overlay)\n");
			goto out_args;
		}
		ret = cfs_bundle_prepare(a.bundle);
		if (ret < 0) {
			fprintf(stderr, PROG ": --bundle %s: %s\n", a.bundle, cfs_strerror(ret));
			goto out_args;
		}
	}

	level = a.debug || a.verbose >= 2 ? CFS_LOG_DEBUG : a.verbose ? CFS_LOG_INFO : CFS_LOG_WARN;
	if (a.log_file) {
		char *p = abs_path(a.log_file);

		d.log = p ? fopen(p, "ae") : NULL;
		if (!d.log) {
			fprintf(stderr, PROG ": log %s: %s\n", a.log_file,
				strerror(p ? errno : ENOMEM));
			free(p);
			goto out_args;
		}
		free(p);
		setvbuf(d.log, NULL, _IOLBF, 0);
	}
	cfs_log_setup(PROG, level, d.log);
	cfs_malloc_tune();
	raise_nofile();
	if (getenv(CFS_HOLDER_RESUME_ENV)) {
		status = run_holder_resumed(&a, argc, argv, &d, level);
		goto out_log;
	}

	if ((a.stats_file && !(d.stats_path = abs_path(a.stats_file))) ||
	    (a.record && !(d.record_path = abs_path(a.record)))) {
		fprintf(stderr, PROG ": %s\n", strerror(ENOMEM));
		goto out_log;
	}
	/* A daemon under a holder must not look at the mount point: nothing
	 * serves it until this daemon does. */
	if (serve ? !(mountpoint = abs_path(a.mountpoint)) :
		    check_mountpoint(a.mountpoint, &mountpoint) < 0)
		goto out_log;
	store_abs = abs_store(a.store);
	if (!store_abs) {
		fprintf(stderr, PROG ": %s\n", strerror(ENOMEM));
		goto out_log;
	}
	/* Absolute before the daemon leaves the directory; the environment's
	 * bundle does not matter without verification. */
	if (a.ca_file || !a.fetch.insecure) {
		ret = cfs_fetch_ca_resolve(a.ca_file, &ca_file);
		if (ret < 0) {
			fprintf(stderr, PROG ": %s%s: %s\n", a.ca_file ? "--ca-file " : "CA bundle",
				a.ca_file ? a.ca_file : "", cfs_strerror(ret));
			goto out_image;
		}
		a.fetch.ca_file = ca_file;
	}
	/* Before the store is opened: see the top of this file. */
	if (!a.foreground) {
		ret = daemon_fork(&ready_fd, a.bundle != NULL);
		if (ret < 0)
			goto out_image;
		if (ret > 0) {
			/* The parent of a --bundle mount: the mount serves now. */
			status = bundle_finish(&a, store_abs, mountpoint);
			goto out_image;
		}
	}
	/* Background mounts run under a holder, which opens nothing of the
	 * image: its first daemon does, and a failure there (printed on the
	 * stderr they share) unmounts again.  A daemon the holder starts
	 * (serve) and a foreground one open the image and serve here. */
	holder = !a.foreground && !serve;
	read_bench_knobs(&d);
	if (d.fs.splice) {
		d.fs.max_read = cfs_fs_splice_probe();
		d.fs.splice = d.fs.max_read > 0;
		if (!d.fs.splice)
			cfs_info("READ replies copied: no pipe to splice through");
		else if (d.fs.max_read < (1u << 20))
			cfs_info("READs of %zu KiB at most: pipe-max-size is too small for 1 MiB "
				 "replies (raise it, or give CAP_SYS_RESOURCE)", d.fs.max_read >> 10);
	}

	if (build_fuse_args(&a, store_abs, d.fs.max_read, &args) < 0) {
		fprintf(stderr, PROG ": %s\n", strerror(ENOMEM));
		goto out_image;
	}
	if (holder) {
		status = run_holder(&a, &d, &args, mountpoint, argc, argv, &ready_fd, level);
		if (status != RUN_HOLDER_CHILD)
			goto out_image;
		/* The holder's first daemon, forked: one exec and dynamic load
		 * fewer on the way to the first READ.  It serves as an exec'd
		 * one does, with arguments of its own (libfuse took options out
		 * of the holder's). */
		status = 1;
		serve = true;
		fuse_opt_free_args(&args);
		if (build_fuse_args(&a, store_abs, d.fs.max_read, &args) < 0) {
			fprintf(stderr, PROG ": %s\n", strerror(ENOMEM));
			goto out_image;
		}
	}
	if (open_image(&a, &d, store_abs) < 0)
		goto out_image;
	se = fuse_session_new(&args, &cfs_fs_ops, sizeof(cfs_fs_ops), &d.fs);
	if (!se) {
		fprintf(stderr, PROG ": invalid mount options (see above)\n");
		goto out_image;
	}
	if (fuse_set_signal_handlers(se) < 0) {
		fprintf(stderr, PROG ": cannot set signal handlers\n");
		goto out_session;
	}
	if (serve) {
		if (serve_attach(se, &ready_fd) < 0)
			goto out_signals;
	} else if (fuse_session_mount(se, mountpoint) < 0) {
		fprintf(stderr, PROG ": cannot mount at %s (see above)\n", a.mountpoint);
		goto out_signals;
	}
	raise_readahead(mountpoint, d.readahead_kb);
	if (serve) {
		/* Log where the holder logs: the file, else syslog. */
		if (!d.log) {
			d.log = syslog_file();
			cfs_log_setup(PROG, level, d.log);
		}
		serve_ready(&ready_fd, d.ref);
	}
	if ((ret = stats_thread_start(&d)) < 0)
		cfs_warn("no stats or profile saves on SIGUSR1, no idle cache passes: %s",
			 strerror(-ret));

	cfg = fuse_loop_cfg_create();
	if (!cfg) {
		cfs_err("%s", strerror(ENOMEM));
		goto out_stats;
	}
	/* A cloned fd per thread would take the requests it read along when
	 * the daemon dies; under a holder they must stay on the holder's. */
	fuse_loop_cfg_set_clone_fd(cfg, d.clone_fd && !serve);
	fuse_loop_cfg_set_idle_threads(cfg, MAX_IDLE_THREADS);
	fuse_loop_cfg_set_max_threads(cfg, MAX_THREADS);
	ret = fuse_session_loop_mt(se, cfg);
	fuse_loop_cfg_destroy(cfg);
	served = true;
	/* A positive value is the signal that ended the loop: a clean exit. */
	if (ret < 0)
		cfs_err("FUSE session: %s", strerror(-ret));
	else
		status = 0;

out_stats:
	stats_thread_stop(&d);
	/* Under a holder the mount is the holder's to end. */
	if (!serve)
		fuse_session_unmount(se);
out_signals:
	fuse_remove_signal_handlers(se);
out_session:
	fuse_session_destroy(se);
	if (served && d.stats_path && stats_write(&d) < 0)
		status = 1;
	if (served && record_write(&d, false) < 0)
		status = 1;
out_image:
	close_image(&d);
	free(ca_file);
	free(store_abs);
	free(mountpoint);
out_log:
	free(d.stats_path);
	free(d.record_path);
	cfs_log_setup(PROG, level, NULL);
	if (d.log)
		fclose(d.log);
	closelog();
out_args:
	fuse_opt_free_args(&args);
	free(a.fuse_opts);
	free(a.bundle_lower);
	for (unsigned i = 0; i < a.n_o_vals; i++)
		free(a.o_vals[i]);
	pthread_mutex_destroy(&d.stats_lock);
	/* A daemon that failed before it was ready: its messages are out and
	 * nothing is left mounted; now the parent may exit 1. */
	daemon_failed(&ready_fd);
	return status;
}
