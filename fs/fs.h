/* SPDX-License-Identifier: MIT */
/* cfs-mount internals: the daemon's one context and its FUSE operations. */
#ifndef CFS_FS_H
#define CFS_FS_H

#define FUSE_USE_VERSION 312 /* FUSE_MAKE_VERSION(3, 12): fuse_loop_cfg_* */

#include <fuse_lowlevel.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "index.h"

struct cfs_store;
struct cfs_cache;
struct cfs_image;
struct cfs_recorder;
struct cfs_learned;
struct cfs_image_seg;
struct cfs_layerstore;

/* Everything the daemon has; passed to libfuse as the session's userdata
 * and reached in every op through fuse_req_userdata().  Read-only once the
 * session runs, apart from what the library objects guard themselves. */
struct cfs_fs {
	struct cfs_store *store;
	struct cfs_cache *cache;
	struct cfs_image *img;
	const struct cfs_index *idx; /* borrowed from img */
	struct cfs_index_info info;
	double timeout;              /* entry and attr timeout, seconds */
	/* Benchmark knobs (bench/fuse-costs.sh), read from the environment
	 * once at start-up; the defaults are what cfs does. */
	bool no_readdirplus;         /* CFS_FUSE_NO_READDIRPLUS=1 */
	bool want_open;              /* CFS_FUSE_OPEN=1: answer OPEN/RELEASE */
	bool no_open;                /* set at init: the kernel skips OPEN and RELEASE */
	bool splice;                 /* READ replies by splice (CFS_FUSE_SPLICE=0: off);
	                              * cleared at init when libfuse cannot */
	size_t max_read;             /* READ size that spliced replies fit; 0: any */
	/* Under a holder (serve.c): replies are not written, while a later
	 * daemon processes the INIT request the first one answered. */
	bool serve_drop_replies;
	struct cfs_recorder *rec;    /* --record or learning, or NULL */
	struct cfs_learned *learned; /* learned profiles (lib/image/learned.h), or NULL */
	struct cfs_layerstore *layers; /* --layer-store (layerstore.c): all it serves; the
	                              * image fields above are then NULL */
	_Atomic uint64_t read_splice; /* READ replies spliced */
	_Atomic uint64_t read_copy;   /* READ replies through a buffer */
};

/* The root of the mount answers getxattr of this name with the counters
 * (not listed by listxattr: the image's own xattrs are unchanged). */
#define CFS_FS_STATS_XATTR "user.cfs.stats"
#define CFS_FS_STATS_MAX 16384 /* the counters, and a list of up to 8 stores */

/* The daemon's counters as a one-line JSON object (no newline) in buf.
 * Returns its length or -EOVERFLOW.  Thread-safe. */
int cfs_fs_stats_json(struct cfs_fs *fs, char *buf, size_t cap);

/* Replies to a READ with the bytes of segs (total bytes in all) through a
 * pipe, without copying them in user space (fs/splice.c); pieces that are
 * all in memory go as an iovec reply instead.  0 once replied;
 * otherwise -errno and nothing was sent, so the caller replies through the
 * copy path: -E2BIG (too many pieces for the pipe), -ESTALE (a cache file
 * came up short; its entry was dropped, so the copy path has the chunk
 * again), -ENOMEM. */
int cfs_fs_reply_splice(struct cfs_fs *fs, fuse_req_t req, const struct cfs_image_seg *segs,
			unsigned nseg, size_t total);

/* Pieces of one READ reply, at most: a 1 MiB read of a big file is one or
 * two chunks, of small files' group chunks a few. */
#define FS_REPLY_SEGS_MAX 16

/* Probes, before the session starts, how large a spliced READ reply may
 * be: the pipes this process may make hold what pipe-max-size allows
 * (CAP_SYS_RESOURCE lifts it).  Returns the largest READ to ask the
 * kernel for (-o max_read) so that every reply fits, at most 1 MiB, or 0
 * when splicing cannot work at all. */
size_t cfs_fs_splice_probe(void);

/* The low-level operations; every one replies exactly once. */
extern const struct fuse_lowlevel_ops cfs_fs_ops;

/* readonly.c: each replies EROFS. */
void cfs_ro_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		struct fuse_file_info *fi);
void cfs_ro_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev);
void cfs_ro_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode);
void cfs_ro_unlink(fuse_req_t req, fuse_ino_t parent, const char *name);
void cfs_ro_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name);
void cfs_ro_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		const char *newname, unsigned int flags);
void cfs_ro_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname);
void cfs_ro_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		struct fuse_file_info *fi);
void cfs_ro_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		struct fuse_file_info *fi);
void cfs_ro_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
		size_t size, int flags);
void cfs_ro_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name);
void cfs_ro_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
		struct fuse_file_info *fi);

/* OCI runtime bundles (bundle.c): DIR/lower (the cfs mount), DIR/upper,
 * DIR/work, DIR/rootfs (their overlay) and DIR/config.json.  Each returns 0
 * or -errno with a one-line reason in err where it has one. */
int cfs_bundle_path(const char *dir, const char *name, char **out);
/* Makes DIR and its subdirectories (0700). */
int cfs_bundle_prepare(const char *dir);
/* config.json's text from an image config (NULL: the image has none, and
 * the process is "sh"); users and groups named there are looked up in the
 * image's /etc/passwd and /etc/group under rootfd.  *out is malloc'd. */
int cfs_bundle_spec(const char *image_config, size_t len, int rootfd, char **out, char *err,
		    size_t errlen);
/* Mounts the overlay at DIR/rootfs and writes DIR/config.json (atomically). */
int cfs_bundle_up(const char *dir, const char *spec, char *err, size_t errlen);
/* Unmounts DIR/rootfs and DIR/lower (the daemon then exits) and removes
 * what cfs_bundle_prepare() and cfs_bundle_up() made, the container's
 * writes in DIR/upper included. */
int cfs_bundle_down(const char *dir, char *err, size_t errlen);

/* The holder (holder.c): owns the /dev/fuse fd and the mount, runs the
 * serving daemon as a child and starts it again when it dies. */
#define CFS_HOLDER_STATE_DIR "/run/cfs/mounts"
/* How a holder hands a daemon its connection (environment of the exec). */
#define CFS_SERVE_FD_ENV "CFS_SERVE_FD"       /* the /dev/fuse fd */
#define CFS_SERVE_INIT_ENV "CFS_SERVE_INIT"   /* a memfd with the INIT request */
#define CFS_SERVE_READY_ENV "CFS_SERVE_READY" /* write one byte once serving */
/* The image reference the mount's first daemon opened: every later daemon
 * opens it too, whatever its tag names by then (a mount's files never
 * change under its readers). */
#define CFS_SERVE_REF_ENV "CFS_SERVE_REF"
#define CFS_SERVE_REPLY_ENV "CFS_SERVE_REPLY" /* 1: answer INIT (first daemon) */
/* A holder exec'ing its upgrade passes its state on in this. */
#define CFS_HOLDER_RESUME_ENV "CFS_HOLDER_RESUME"

struct cfs_holder {
	int fuse_fd, init_fd;
	char *exe;                /* the binary a daemon runs (the installed one) */
	char **argv;              /* its arguments */
	char **holder_argv;       /* the holder's own, for its upgrade */
	const char *cwd;          /* its working directory (relative paths) */
	const char *mountpoint, *image, *store;
	char ref[CFS_REF_STRLEN]; /* the image reference served, "" until known */
	char *state_path;         /* NULL: no state file */
	pid_t daemon, retiring;
	unsigned restarts, upgrades, holder_execs;
	bool resend_ok;
	bool fork_first;          /* the first daemon: fork this process, no exec */
	long long started_unix, daemon_started_unix, last_restart_unix;
	uint64_t daemon_started_ms;
	char last_reason[128];
};

/* Writes FUSE_NOTIFY_RESEND: the requests daemons read and did not answer
 * go back in the queue.  0, or -EINVAL where the kernel lacks it. */
int cfs_holder_resend(int fuse_fd);
/* Reads the kernel's INIT request (the first request of a new mount) into
 * a sealed memfd. */
int cfs_holder_read_init(int fuse_fd, int *init_fd);
/* The saved INIT request, malloc'd. */
int cfs_holder_load_init(int init_fd, void **buf, size_t *len);
int cfs_holder_state_path(const char *mountpoint, char **out);
/* Starts the first daemon (it answers INIT) and waits until it serves.
 * With fork_first, returns CFS_HOLDER_CHILD in the forked daemon, which
 * goes on to serve (its connection in the CFS_SERVE_* environment). */
#define CFS_HOLDER_CHILD 2
int cfs_holder_start(struct cfs_holder *h);
/* A holder after its upgrade (exec): its state, and its mount point (a
 * pointer into env), from CFS_HOLDER_RESUME. */
int cfs_holder_resume(struct cfs_holder *h, const char *env);
/* Holds the mount until it is unmounted (0) or the holder is told to end
 * it (1: SIGTERM or SIGINT; the caller unmounts); restarts daemons that
 * die, upgrades the daemon on SIGHUP and itself (exec) on SIGUSR2. */
int cfs_holder_run(struct cfs_holder *h);

#endif /* CFS_FS_H */
