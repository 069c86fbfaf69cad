/* SPDX-License-Identifier: MIT */
/*
 * cfs-mount's command, split by what runs: main.c parses the arguments
 * and dispatches to the clients (client.c) or the daemon's start-up
 * (daemon.c), which runs the holder (holder.c) and serves (serve.c).
 * Calls only go down: main.c -> client.c, daemon.c; daemon.c -> serve.c
 * -> holder.c; client.c -> holder.c; fuse_args.c, mountinfo.c and log.c
 * sit below all of them and call none.  --layer-store (layerstore.c)
 * is the daemon's other personality: daemon.c opens it instead of an image.
 */
#ifndef CFS_MOUNT_I_H
#define CFS_MOUNT_I_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "fetch.h"
#include "fs.h"
#include "image.h"
#include "open.h"
#include "util.h"

#define PROG "cfs-mount"

struct cfs_mount_args {
	bool foreground, debug;
	int verbose;
	bool allow_other, default_permissions;
	char *fuse_opts;          /* user -o options for libfuse, or NULL */
	const char *stats_file, *log_file;
	const char *store, *image, *mountpoint;
	bool store_from_o;        /* store came from -o store= (a list: repeated) */
	const char *stats_of;     /* --stats MOUNTPOINT: print its counters */
	struct cfs_open_opts open; /* store, cache and trust (lib/image/open.h); a
				    * NULL cache_dir is the default, not memory */
	unsigned readahead;       /* chunks ahead of a sequential reader; 0: off */
	const char *record;       /* --record FILE, or NULL */
	bool learn_off;           /* --learn no */
	unsigned learn_window;    /* --learn-window SEC: the start-up learned */
	const char *learn_to;     /* --learn-to LOCATION, or NULL: the store */
	enum cfs_prefetch_mode prefetch;
	bool prefetch_set;        /* --prefetch given */
	uint64_t prefetch_budget; /* --prefetch-budget; 0: the default */
	bool o_rw;                /* -o rw */
	const char *status_of;    /* --status MOUNTPOINT */
	const char *upgrade_of;   /* --upgrade MOUNTPOINT */
	const char *bundle;       /* --bundle DIR, or NULL */
	const char *bundle_down;  /* --bundle-remove DIR, or NULL */
	char *bundle_lower;       /* DIR/lower, the mount point */
	bool layer_store;         /* --layer-store STORE MOUNTPOINT */
	const char *layer_mounts; /* --layer-mounts DIR, or NULL: the default */
	bool o_cfs_keys;          /* -o took a KEY=VALUE of cfs's own */
	/* --layer-store: the options its layer mounts are given too, as
	 * --NAME[=VALUE] (borrowed from argv; value NULL: none). */
	struct cfs_mount_fwd {
		const char *name, *value;
	} fwd[32];
	unsigned n_fwd;
	/* -o store=... and the other values of the mount(8) form, owned. */
	char *o_vals[16];
	unsigned n_o_vals;
};

/* The daemon: the context the ops see, plus what its start-up needs
 * around it. */
struct cfs_daemon {
	struct cfs_fs fs;
	char *stats_path;         /* absolute, or NULL */
	char *record_path;        /* absolute, or NULL */
	size_t record_saved;      /* records in the last save (stats thread) */
	struct cfs_store *learn_store; /* --learn-to, opened; or NULL */
	uint64_t learn_t0;        /* when the learned start-up window began */
	unsigned learn_window;    /* and its length, seconds */
	bool learn_done;          /* its profile saved, or none to save */
	pthread_mutex_t stats_lock;
	pthread_t stats_thread;
	bool stats_thread_started;
	atomic_bool stopping;
	char ref[CFS_REF_STRLEN]; /* the image reference opened */
	FILE *log;
	char readahead_kb[16];    /* written to the mount's bdi read_ahead_kb */
	bool clone_fd;            /* a cloned /dev/fuse fd per loop thread */
};

/* The status byte a starting daemon (or holder) writes on the pipe its
 * parent waits on. */
#define CFS_READY_OK 0
#define CFS_READY_FAILED 1

/* fuse_args.c: appends opt (len bytes) to the comma list *list (NULL:
 * empty).  0 or -ENOMEM. */
int cfs_mount_opt_append(char **list, const char *opt, size_t len);
/* The libfuse arguments of a mount: ro, fsname, subtype, max_read (when
 * spliced replies need a smaller one) and the user's -o. */
int cfs_mount_fuse_args(const struct cfs_mount_args *a, const char *store_abs, size_t max_read,
			struct fuse_args *args);

/* The absolute form of a path argument (which need not exist; a URL is
 * left as it is), and of each member of a store list "A,B,...": the
 * daemon leaves the working directory.  malloc'd, or NULL (ENOMEM). */
char *cfs_mount_abs_path(const char *path);
char *cfs_mount_abs_store(const char *loc);
/* The binary this process runs, by the path it was started from (" (deleted)"
 * dropped: an upgrade installed a new one there).  malloc'd, or NULL. */
char *cfs_mount_self_exe(void);

/* mountinfo.c: the device number of the last mount at mp (absolute) in
 * /proc/self/mountinfo, which names it without entering it.  0, -ENOENT
 * when nothing is mounted there, or -errno. */
int cfs_mountinfo_dev(const char *mp, unsigned *major, unsigned *minor);
/* The same, and the mount's type ("fuse.cfs") in fstype[cap]; any of
 * major, minor and fstype may be NULL. */
int cfs_mountinfo_find(const char *mp, unsigned *major, unsigned *minor, char *fstype,
		       size_t cap);

/* log.c: a line-buffered FILE whose lines go to syslog (LOG_ERR), for a
 * process whose stderr is /dev/null.  NULL on failure. */
FILE *cfs_mount_syslog(void);

/* client.c: --stats, --status and --upgrade of a running mount.  Each
 * prints its answer (or one line on stderr) and returns the exit status. */
int cfs_client_stats(const char *mountpoint);
int cfs_client_status(const char *mountpoint);
int cfs_client_upgrade(const char *mountpoint);

/* serve.c: attaches the session to the holder's connection (the fd and
 * the INIT request in the CFS_SERVE_* environment); *ready_fd is where to
 * say that the daemon serves.  fs is the session's userdata.  0 or -errno,
 * printed. */
int cfs_serve_attach(struct fuse_session *se, struct cfs_fs *fs, int *ready_fd);
/* Tells the holder that this daemon serves ref, and lets go of the
 * user's stderr. */
void cfs_serve_ready(int *ready_fd, const char *ref);

/* holder.c: the holder's side of a background mount: mounts with a
 * session of its own that never serves, keeps the fd and the INIT
 * request, runs the daemons.  Returns the exit status, or
 * CFS_HOLDER_MOUNT_CHILD in the first daemon (forked), which goes on to
 * serve. */
#define CFS_HOLDER_MOUNT_CHILD (-2)
int cfs_holder_mount(const struct cfs_mount_args *a, struct cfs_daemon *d,
		     struct fuse_args *args, const char *mountpoint, int argc, char **argv,
		     int *ready_fd, enum cfs_log_level level);
/* A holder after its own upgrade (SIGUSR2, exec): carries on holding.
 * Returns the exit status. */
int cfs_holder_takeover(const struct cfs_mount_args *a, int argc, char **argv,
			struct cfs_daemon *d, enum cfs_log_level level);

/* layerstore.c: cfs-mount --layer-store (docs/LAYER-STORE.md), the
 * daemon's other personality.  _open opens the store (fs->store) and the
 * context of cfs_layerstore_ops (fs->layers), printing one line for what
 * fails: 0 or -errno.  _free frees that context (NULL is fine); the
 * layer mounts it started stay. */
int cfs_layerstore_open(const struct cfs_mount_args *a, const char *store_abs, struct cfs_fs *fs);
void cfs_layerstore_free(struct cfs_layerstore *ls);
extern const struct fuse_lowlevel_ops cfs_layerstore_ops;
/* Where layer mounts go without --layer-mounts: /run/cfs/layer-mounts
 * as root, else $XDG_RUNTIME_DIR/cfs/layer-mounts. */
#define CFS_LAYER_MOUNTS_ROOT "/run/cfs/layer-mounts"

/* daemon.c: everything but the clients and --bundle-remove: opens the
 * image, mounts (in the background under a holder), serves until
 * unmounted.  Returns the exit status. */
int cfs_daemon_main(struct cfs_mount_args *a, int argc, char **argv);

#endif /* CFS_MOUNT_I_H */
