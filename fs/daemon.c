/* SPDX-License-Identifier: MIT */
/*
 * cfs-mount: mount an image of a store read-only over FUSE.
 * cfs-mount's daemon: opens the store, the cache and the image, mounts
 * and serves until unmounted.
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
#include <inttypes.h>
#include <limits.h>
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
#include <syslog.h>
#include <unistd.h>

#include "cache.h"
#include "fetch.h"
#include "image.h"
#include "learned.h"
#include "profile.h"
#include "sign.h"
#include "store.h"
#include "util.h"

#include "mount_i.h"

#define ENTRY_TIMEOUT 86400.0 /* the image is immutable */
#define MAX_IDLE_THREADS 10
#define MAX_THREADS 32
#define READAHEAD_KB "1024"
#define RECORD_SAVE_SEC 5 /* the profile is saved this often while it grows */

/* Benchmark knobs, for bench/fuse-costs.sh only: each turns one of the FUSE
 * path choices off (or changes it) so that its effect can be measured.  Read
 * once here, before the session starts; unset, cfs behaves as it always does.
 *   CFS_FUSE_TIMEOUT=SEC         entry and attr timeout (default 86400)
 *   CFS_FUSE_NO_READDIRPLUS=1    do not ask for READDIRPLUS
 *   CFS_FUSE_SPLICE=0            READ replies through a buffer, not spliced
 *                                from the cache files (also the fallback
 *                                where libfuse cannot splice)
 *   CFS_FUSE_READAHEAD_KB=KB     bdi read_ahead_kb (default 1024; 0 = leave
 *                                the kernel's default alone)
 *   CFS_FUSE_CLONE_FD=0|1        a cloned /dev/fuse fd per loop thread (default
 *                                1 in the foreground; always 0 under a holder) */
static void read_bench_knobs(struct cfs_daemon *d)
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

/* stats ------------------------------------------------------------------ */

static int stats_write(struct cfs_daemon *d)
{
	char json[CFS_FS_STATS_MAX + 1];
	int n, ret;

	n = cfs_fs_stats_json(&d->fs, json, sizeof(json) - 1);
	if (n < 0)
		return n;
	json[n++] = '\n';

	pthread_mutex_lock(&d->stats_lock);
	ret = cfs_write_file_at(AT_FDCWD, d->stats_path, json, (size_t)n, 0644, false);
	pthread_mutex_unlock(&d->stats_lock);
	if (ret < 0)
		cfs_err("stats file %s: %s", d->stats_path, cfs_strerror(ret));
	return ret;
}

/* Saves the profile (atomically); quiet is for the periodic save, which
 * skips a profile that has not grown. */
static int record_write(struct cfs_daemon *d, bool quiet)
{
	size_t n;
	int ret;

	if (!d->record_path)
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

/* Leaves the learned profile of the start-up (lib/image/learned.h), once:
 * when the window ends or at exit, whichever comes first.  Then a
 * recorder that only learned stops recording. */
static void learn_write(struct cfs_daemon *d)
{
	if (d->learn_done || !d->fs.rec)
		return;
	d->learn_done = true;
	/* Its own failures are logged; a hint never fails the mount. */
	if (d->fs.learned)
		(void)cfs_image_learned_save(d->fs.img, d->fs.rec,
					     (uint64_t)d->learn_window * 1000000);
	if (!d->record_path)
		cfs_recorder_limit(d->fs.rec, 0);
}

/* The daemon's housekeeping thread.  SIGUSR1 is blocked in every thread;
 * this one takes it with sigtimedwait(), so writing the stats and the
 * profile needs no signal handler and no global.  It also wakes once a
 * second to run the cache pass that ring writes asked for (readers that
 * went quiet run none), and saves the profile every RECORD_SAVE_SEC. */
static void *stats_thread_main(void *arg)
{
	const struct timespec period = { .tv_sec = 1 };
	struct cfs_daemon *d = arg;
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
			if (d->record_path && ++ticks % RECORD_SAVE_SEC == 0)
				record_write(d, true);
			if (!d->learn_done &&
			    cfs_now_ns() - d->learn_t0 >= (uint64_t)d->learn_window * 1000000000)
				learn_write(d);
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

static int stats_thread_start(struct cfs_daemon *d)
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

static void stats_thread_stop(struct cfs_daemon *d)
{
	if (!d->stats_thread_started)
		return;
	atomic_store(&d->stopping, true);
	pthread_kill(d->stats_thread, SIGUSR1);
	pthread_join(d->stats_thread, NULL);
	d->stats_thread_started = false;
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


/* The recorder (--record, learning) and the learned profiles of the
 * image: read by its prefetch, written after the start-up.  A restarted
 * daemon (restart) did not see the start-up: it learns nothing. */
static int open_learning(const struct cfs_mount_args *a, struct cfs_daemon *d,
			 const cfs_digest *dg, const char *cache_dir, bool restart)
{
	char msg[1024], *loc;
	int ret;

	d->learn_done = a->learn_off || restart;
	if (!a->learn_off) {
		if (a->learn_to) {
			loc = cfs_mount_abs_path(a->learn_to);
			if (!loc)
				snprintf(msg, sizeof(msg), "%s", strerror(ENOMEM));
			ret = loc ? cfs_open_store(&a->open, loc, CFS_STORE_CREATE, &d->learn_store, msg,
						   sizeof(msg)) : -ENOMEM;
			free(loc);
			if (ret < 0) {
				fprintf(stderr, PROG ": --learn-to: %s\n", msg);
				return ret;
			}
		}
		ret = cfs_learned_new(dg, cache_dir, d->learn_store ? d->learn_store : d->fs.store,
				      &d->fs.learned);
		if (ret < 0) {
			fprintf(stderr, PROG ": learned profiles: %s\n", cfs_strerror(ret));
			return ret;
		}
		cfs_image_set_learned(d->fs.img, d->fs.learned);
	}
	if (!d->record_path && d->learn_done)
		return 0;
	ret = cfs_recorder_new(d->fs.idx, dg, &d->fs.rec);
	if (ret < 0) {
		fprintf(stderr, PROG ": %s: %s\n", d->record_path ? "--record" : "learning",
			cfs_strerror(ret));
		return ret;
	}
	d->learn_t0 = cfs_now_ns();
	d->learn_window = a->learn_window;
	if (!d->record_path) {
		/* Learning alone: bounded memory. */
		cfs_recorder_limit(d->fs.rec, CFS_LEARN_RECORDS_MAX);
		return 0;
	}
	/* Now, so that a bad path fails the mount rather than the exit. */
	ret = cfs_recorder_save(d->fs.rec, d->record_path);
	if (ret < 0)
		fprintf(stderr, PROG ": --record %s: %s\n", a->record, cfs_strerror(ret));
	return ret;
}

/* Opens store, cache and image (lib/image/open.c), printing one line for
 * what failed. */
static int open_image(const struct cfs_mount_args *a, struct cfs_daemon *d, const char *store_abs)
{
	struct cfs_open_opts o = a->open; /* borrowed strings: not released */
	struct cfs_opened op;
	char msg[1024], *cache_dir, *trust = NULL;
	const char *pinned;
	cfs_digest dg;
	int ret;

	cache_dir = o.cache_dir ? cfs_mount_abs_path(o.cache_dir) : default_cache_dir();
	if (!cache_dir || (o.trust && !(trust = cfs_mount_abs_path(o.trust)))) {
		fprintf(stderr, PROG ": %s\n", strerror(ENOMEM));
		ret = -ENOMEM;
		goto out;
	}
	o.cache_dir = cache_dir;
	o.trust = trust;
	/* A restarted daemon opens what the mount's first daemon opened, by
	 * reference: the tag may have moved since, and the signature was
	 * checked then. */
	pinned = getenv(CFS_SERVE_FD_ENV) ? getenv(CFS_SERVE_REF_ENV) : NULL;
	ret = cfs_open_image(&o, store_abs, a->image, pinned, &op, msg, sizeof(msg));
	if (ret < 0) {
		fprintf(stderr, PROG ": %s\n", msg);
		goto out;
	}
	d->fs.store = op.store;
	d->fs.cache = op.cache;
	d->fs.img = op.img;
	dg = op.digest;
	memcpy(d->ref, op.ref, sizeof(d->ref));
	if (a->readahead) {
		ret = cfs_image_set_readahead(d->fs.img, CFS_READAHEAD_THREADS_DEFAULT, a->readahead);
		if (ret < 0) {
			fprintf(stderr, PROG ": readahead: %s\n", cfs_strerror(ret));
			goto out;
		}
	}
	d->fs.idx = cfs_image_index(d->fs.img);
	ret = open_learning(a, d, &dg, cache_dir, pinned != NULL);
	if (ret < 0)
		goto out;
	/* Without readahead threads there is nothing to prefetch with; an
	 * explicit --prefetch was refused at parse time. */
	if (a->prefetch != CFS_PREFETCH_NONE && a->readahead) {
		/* Best effort: without a stage the stream decodes into the cache. */
		if ((a->prefetch == CFS_PREFETCH_STREAM || a->prefetch == CFS_PREFETCH_ALL) &&
		    (ret = cfs_image_set_stage(d->fs.img, cache_dir)) < 0)
			cfs_warn("%s/stage: %s; the stream decodes what it fetches", cache_dir,
				 cfs_strerror(ret));
		ret = cfs_image_prefetch_start(d->fs.img, a->prefetch, a->prefetch_budget);
		if (ret < 0) {
			fprintf(stderr, PROG ": prefetch: %s\n", cfs_strerror(ret));
			goto out;
		}
	}
	cfs_index_info(d->fs.idx, &d->fs.info);
	cfs_info("image %s: %" PRIu64 " inodes, %" PRIu64 " chunks, %" PRIu64 " bytes of files",
		 d->ref, d->fs.info.inode_count, d->fs.info.chunk_count, d->fs.info.total_file_bytes);
out:
	free(cache_dir);
	free(trust);
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
 * only, best effort.  Finds the mount in mountinfo rather than stat()ing
 * the mount point, which would wait for the loop that is not running yet. */
static void raise_readahead(const char *mountpoint, const char *kb)
{
	char path[128];
	unsigned maj, min;
	int fd;

	if (!strcmp(kb, "0") || geteuid() != 0 || cfs_mountinfo_dev(mountpoint, &maj, &min) < 0)
		return;
	snprintf(path, sizeof(path), "/sys/class/bdi/%u:%u/read_ahead_kb", maj, min);
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

/* Forks the daemon.  Returns 0 in the child, with the write end of the
 * status pipe in *ready_fd; the parent exits with the child's verdict: 0
 * once it wrote CFS_READY_OK, 1 when it wrote anything else (it printed
 * why on the stderr they share) or died; with parent_returns, it returns 1 once
 * the mount is ready instead of exiting 0. */
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
	if (n == 1 && status == CFS_READY_OK && parent_returns)
		return 1;
	if (n == 1)
		_exit(status == CFS_READY_OK ? 0 : 1);
	/* No byte: the child died before it could say. */
	if (waitpid(pid, &wstatus, 0) == pid && WIFSIGNALED(wstatus))
		fprintf(stderr, PROG ": the daemon was killed by signal %d before the mount was ready\n",
			WTERMSIG(wstatus));
	else
		fprintf(stderr, PROG ": the daemon exited before the mount was ready\n");
	_exit(1);
}

static void daemon_failed(int *ready_fd)
{
	unsigned char failed = CFS_READY_FAILED;

	if (*ready_fd < 0)
		return;
	fflush(NULL);
	if (write(*ready_fd, &failed, 1) != 1) {
		/* The parent then sees the pipe close, which says the same. */
	}
	close(*ready_fd);
	*ready_fd = -1;
}

static void close_image(struct cfs_daemon *d)
{
	cfs_layerstore_free(d->fs.layers);
	d->fs.layers = NULL;
	cfs_recorder_free(d->fs.rec);
	d->fs.rec = NULL;
	cfs_image_free(d->fs.img);
	d->fs.img = NULL;
	/* After the image, whose prefetch reads it. */
	cfs_learned_free(d->fs.learned);
	d->fs.learned = NULL;
	cfs_store_free(d->learn_store);
	d->learn_store = NULL;
	cfs_cache_free(d->fs.cache);
	d->fs.cache = NULL;
	cfs_store_free(d->fs.store);
	d->fs.store = NULL;
}

/* --bundle, in the parent once the daemon serves DIR/lower: the image
 * config (opened here again, from the cache the daemon just filled), the
 * overlay and config.json.  On failure the mount goes again.  0 or 1. */
static int bundle_finish(const struct cfs_mount_args *a, const char *store_abs, const char *lower)
{
	struct cfs_mount_args ba = *a;
	struct cfs_daemon bd = { 0 };
	char err[512] = "", *spec = NULL;
	void *cfg = NULL;
	size_t cfg_len = 0;
	int ret, rootfd = -1;

	ba.readahead = 0;
	ba.prefetch = CFS_PREFETCH_NONE;
	ba.record = NULL;
	ba.learn_off = true;
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

int cfs_daemon_main(struct cfs_mount_args *a, int argc, char **argv)
{
	struct cfs_daemon d = { 0 };
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	struct fuse_session *se;
	struct fuse_loop_config *cfg;
	char *mountpoint = NULL, *store_abs = NULL, msg[512];
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
	if (a->bundle && !serve) {
		if (geteuid() != 0) {
			fprintf(stderr, PROG ": --bundle needs root (it mounts an overlay)\n");
			goto out_args;
		}
		ret = cfs_bundle_prepare(a->bundle);
		if (ret < 0) {
			fprintf(stderr, PROG ": --bundle %s: %s\n", a->bundle, cfs_strerror(ret));
			goto out_args;
		}
	}

	level = a->debug || a->verbose >= 2 ? CFS_LOG_DEBUG : a->verbose ? CFS_LOG_INFO : CFS_LOG_WARN;
	if (a->log_file) {
		char *p = cfs_mount_abs_path(a->log_file);

		d.log = p ? fopen(p, "ae") : NULL;
		if (!d.log) {
			fprintf(stderr, PROG ": log %s: %s\n", a->log_file,
				strerror(p ? errno : ENOMEM));
			free(p);
			goto out_args;
		}
		free(p);
		setvbuf(d.log, NULL, _IOLBF, 0);
	}
	cfs_log_setup(PROG, level, d.log);
	raise_nofile();
	if (getenv(CFS_HOLDER_RESUME_ENV)) {
		status = cfs_holder_takeover(a, argc, argv, &d, level);
		goto out_log;
	}

	if ((a->stats_file && !(d.stats_path = cfs_mount_abs_path(a->stats_file))) ||
	    (a->record && !(d.record_path = cfs_mount_abs_path(a->record)))) {
		fprintf(stderr, PROG ": %s\n", strerror(ENOMEM));
		goto out_log;
	}
	/* A daemon under a holder must not look at the mount point: nothing
	 * serves it until this daemon does. */
	if (serve ? !(mountpoint = cfs_mount_abs_path(a->mountpoint)) :
		    check_mountpoint(a->mountpoint, &mountpoint) < 0)
		goto out_log;
	store_abs = cfs_mount_abs_store(a->store);
	if (!store_abs) {
		fprintf(stderr, PROG ": %s\n", strerror(ENOMEM));
		goto out_log;
	}
	/* Absolute before the daemon leaves the directory, and checked here,
	 * where a bad --ca-file is still told to the user's terminal. */
	ret = cfs_open_ca_resolve(&a->open, msg, sizeof(msg));
	if (ret < 0) {
		fprintf(stderr, PROG ": %s\n", msg);
		goto out_image;
	}
	/* Before the store is opened: see the top of this file. */
	if (!a->foreground) {
		ret = daemon_fork(&ready_fd, a->bundle != NULL);
		if (ret < 0)
			goto out_image;
		if (ret > 0) {
			/* The parent of a --bundle mount: the mount serves now. */
			status = bundle_finish(a, store_abs, mountpoint);
			goto out_image;
		}
	}
	/* Background mounts run under a holder, which opens nothing of the
	 * image: its first daemon does, and a failure there (printed on the
	 * stderr they share) unmounts again.  A daemon the holder starts
	 * (serve) and a foreground one open the image and serve here. */
	holder = !a->foreground && !serve;
	read_bench_knobs(&d);
	/* A layer store replies with a few hundred bytes at most. */
	if (a->layer_store)
		d.fs.splice = false;
	if (d.fs.splice) {
		d.fs.max_read = cfs_fs_splice_probe();
		d.fs.splice = d.fs.max_read > 0;
		if (!d.fs.splice)
			cfs_info("READ replies copied: no pipe to splice through");
		else if (d.fs.max_read < (1u << 20))
			cfs_info("READs of %zu KiB at most: pipe-max-size is too small for 1 MiB "
				 "replies (raise it, or give CAP_SYS_RESOURCE)", d.fs.max_read >> 10);
	}

	if (cfs_mount_fuse_args(a, store_abs, d.fs.max_read, &args) < 0) {
		fprintf(stderr, PROG ": %s\n", strerror(ENOMEM));
		goto out_image;
	}
	if (holder) {
		status = cfs_holder_mount(a, &d, &args, mountpoint, argc, argv, &ready_fd, level);
		if (status != CFS_HOLDER_MOUNT_CHILD)
			goto out_image;
		/* The holder's first daemon, forked: one exec and dynamic load
		 * fewer on the way to the first READ.  It serves as an exec'd
		 * one does, with arguments of its own (libfuse took options out
		 * of the holder's). */
		status = 1;
		serve = true;
		fuse_opt_free_args(&args);
		if (cfs_mount_fuse_args(a, store_abs, d.fs.max_read, &args) < 0) {
			fprintf(stderr, PROG ": %s\n", strerror(ENOMEM));
			goto out_image;
		}
	}
	if ((a->layer_store ? cfs_layerstore_open(a, store_abs, &d.fs) :
			      open_image(a, &d, store_abs)) < 0)
		goto out_image;
	se = fuse_session_new(&args, a->layer_store ? &cfs_layerstore_ops : &cfs_fs_ops,
			      sizeof(cfs_fs_ops), &d.fs);
	if (!se) {
		fprintf(stderr, PROG ": invalid mount options (see above)\n");
		goto out_image;
	}
	if (fuse_set_signal_handlers(se) < 0) {
		fprintf(stderr, PROG ": cannot set signal handlers\n");
		goto out_session;
	}
	if (serve) {
		if (cfs_serve_attach(se, &d.fs, &ready_fd) < 0)
			goto out_signals;
	} else if (fuse_session_mount(se, mountpoint) < 0) {
		fprintf(stderr, PROG ": cannot mount at %s (see above)\n", a->mountpoint);
		goto out_signals;
	}
	raise_readahead(mountpoint, d.readahead_kb);
	if (serve) {
		/* Log where the holder logs: the file, else syslog. */
		if (!d.log) {
			d.log = cfs_mount_syslog();
			cfs_log_setup(PROG, level, d.log);
		}
		cfs_serve_ready(&ready_fd, d.ref);
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
	if (served)
		learn_write(&d);
out_image:
	close_image(&d);
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
	pthread_mutex_destroy(&d.stats_lock);
	/* A daemon that failed before it was ready: its messages are out and
	 * nothing is left mounted; now the parent may exit 1. */
	daemon_failed(&ready_fd);
	return status;
}
