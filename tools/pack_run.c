/* SPDX-License-Identifier: MIT */
/*
 * cfs-pack --profile-run CMD: records what CMD reads of the image cfs-pack
 * has just packed plainly, and hands the profile back for the second pass
 * (docs/PROFILE.md, "In one command").  It does what a person does by
 * hand: cfs-mount -f --record in a private temporary directory (mountpoint,
 * cache, profile), with prefetch and learning off so that what is recorded
 * is what CMD read and nothing else; /bin/sh -c CMD chrooted into the
 * mount, in a process group of its own that is killed at the timeout; then
 * the unmount, after which the daemon writes the profile and exits.
 *
 * The mount runs in the foreground, as a child: its exit is how we know
 * the profile is complete.  Children get /dev/null for stdin and stderr
 * for stdout, so that cfs-pack's stdout stays the image reference.  Every
 * way out passes through one cleanup: CMD's group killed, the mount taken
 * down (detached if something outside the group still holds it), the
 * daemon reaped, the directory removed.  SIGINT, SIGTERM and SIGHUP are
 * caught while the mount exists, so that an interrupted run cleans up too.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sched.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "profile.h"
#include "util.h"

#include "pack.h"

#ifndef CFS_BINDIR
#define CFS_BINDIR "/usr/local/bin"
#endif

#define MOUNT_WAIT_SEC 60   /* for cfs-mount to mount */
#define DAEMON_WAIT_SEC 30  /* for it to write the profile and exit */
#define POLL_NS 10000000ull /* 10 ms between looks at a child */

/* A signal that asked us to stop: caught only while there is something to
 * clean up, and acted on between the waits. */
static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
	stop_signal = sig;
}

/* What a child that could not start says on its pipe before _exit(). */
struct start_err {
	int stage; /* 1: before the exec (stdin, stdout, chroot), 2: the exec */
	int err;
};

struct run {
	char root[PATH_MAX];
	char mnt[PATH_MAX + 8];
	char cache[PATH_MAX + 8];
	char prof[PATH_MAX + 8];
	char dev[PATH_MAX + 16]; /* the image's /dev in the mount, "" if it has none */
	pid_t mount_pid;
	pid_t cmd_pid;
	struct sigaction old[3];
};

static const int caught[] = { SIGINT, SIGTERM, SIGHUP };

int cfs_pack_run_store_opt(struct cfs_pack_run_opts *o, const char *name, const char *arg)
{
	char *s;
	int n;

	if (o->n_args >= CFS_PACK_RUN_ARGS_MAX)
		return -E2BIG;
	n = arg ? asprintf(&s, "--%s=%s", name, arg) : asprintf(&s, "--%s", name);
	if (n < 0)
		return -ENOMEM;
	o->args[o->n_args++] = s;
	return 0;
}

void cfs_pack_run_opts_release(struct cfs_pack_run_opts *o)
{
	for (size_t i = 0; i < o->n_args; i++)
		free(o->args[i]);
	o->n_args = 0;
}

static bool executable(const char *path)
{
	struct stat sb;

	return stat(path, &sb) == 0 && S_ISREG(sb.st_mode) && access(path, X_OK) == 0;
}

int cfs_pack_run_mount_bin(char *buf, size_t len)
{
	static const char *const beside[] = { "cfs-mount", "../fs/cfs-mount" };
	const char *env = getenv("CFS_MOUNT");
	char exe[PATH_MAX];
	ssize_t n;

	if (env && *env) {
		if (!executable(env))
			return -ENOENT;
		snprintf(buf, len, "%s", env);
		return 0;
	}
	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n > 0) {
		char *slash;

		exe[n] = '\0';
		slash = strrchr(exe, '/');
		if (slash)
			slash[1] = '\0';
		for (size_t i = 0; slash && i < CFS_ARRAY_SIZE(beside); i++) {
			if ((size_t)snprintf(buf, len, "%s%s", exe, beside[i]) < len &&
			    executable(buf))
				return 0;
		}
	}
	if ((size_t)snprintf(buf, len, "%s/cfs-mount", CFS_BINDIR) < len && executable(buf))
		return 0;
	return -ENOENT;
}

/* The device nodes a shell's redirections and a program's start-up use. */
static const struct {
	const char *name;
	unsigned major, minor;
} dev_nodes[] = {
	{ "null", 1, 3 }, { "zero", 1, 5 }, { "full", 1, 7 }, { "random", 1, 8 }, { "urandom", 1, 9 },
};

/* In the child, before its chroot: a mount namespace of its own (gone
 * with the last process in it, so nothing is left to undo), with a tmpfs
 * holding dev_nodes on the image's /dev (read-only and usually empty),
 * when the image has that directory.  Only system calls: the child of a
 * threaded process.  Failing, CMD runs without them, and says so. */
static void child_dev(const struct run *r)
{
	static const char no_dev[] = "cfs-pack: --profile-run: no /dev/null in the image's /dev\n";
	int fd;

	if (!r->dev[0])
		return;
	if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
	    mount("tmpfs", r->dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=64k") < 0)
		goto fail;
	fd = open(r->dev, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		goto fail;
	umask(0);
	for (size_t i = 0; i < CFS_ARRAY_SIZE(dev_nodes); i++)
		mknodat(fd, dev_nodes[i].name, S_IFCHR | 0666,
			makedev(dev_nodes[i].major, dev_nodes[i].minor));
	close(fd);
	umask(022);
	return;
fail:
	(void)!write(STDERR_FILENO, no_dev, sizeof(no_dev) - 1);
}

/* Forks argv[0] (looked up in $PATH when it has no '/') in a process group
 * of its own, stdin devnull and stdout stderr; with r, chrooted into
 * r->mnt with child_dev()'s /dev.  A child that cannot chroot or exec
 * says why on the pipe *errfd (close-on-exec: reading it gives 0 bytes
 * once the exec succeeded).  0 or -errno. */
static int spawn(char *const argv[], const struct run *r, int devnull, pid_t *pid, int *errfd)
{
	int fds[2];

	if (pipe2(fds, O_CLOEXEC) < 0)
		return -errno;
	*pid = fork();
	if (*pid < 0) {
		int ret = -errno;

		close(fds[0]);
		close(fds[1]);
		return ret;
	}
	if (*pid == 0) {
		struct start_err e = { 1, 0 };

		setpgid(0, 0);
		if (r)
			child_dev(r);
		if (dup2(devnull, STDIN_FILENO) < 0 || dup2(STDERR_FILENO, STDOUT_FILENO) < 0 ||
		    (r && (chroot(r->mnt) < 0 || chdir("/") < 0))) {
			e.err = errno;
		} else {
			execvp(argv[0], argv);
			e.stage = 2;
			e.err = errno;
		}
		(void)!write(fds[1], &e, sizeof(e));
		_exit(127);
	}
	/* Both sides, so that a kill of the group cannot miss it. */
	setpgid(*pid, *pid);
	close(fds[1]);
	*errfd = fds[0];
	return 0;
}

/* What the child of spawn() said: 0 when it runs its program, else the
 * stage that failed, its errno in *err. */
static int start_result(int fd, int *err)
{
	struct start_err e;
	ssize_t n;

	do
		n = read(fd, &e, sizeof(e));
	while (n < 0 && errno == EINTR);
	close(fd);
	if (n != (ssize_t)sizeof(e))
		return 0;
	*err = e.err;
	return e.stage;
}

static void pause_ns(uint64_t ns)
{
	struct timespec ts = { (time_t)(ns / 1000000000ull), (long)(ns % 1000000000ull) };

	nanosleep(&ts, NULL);
}

/* Waits until child pid exits (its wait status in *status), sec seconds
 * pass (-ETIMEDOUT) or, when stoppable, a caught signal asks us to stop
 * (-EINTR).  When
 * done is not NULL, also returns 1 as soon as done(arg) holds. */
static int wait_child(pid_t pid, unsigned sec, int *status, bool stoppable,
		      bool (*done)(const char *), const char *arg)
{
	uint64_t end = cfs_now_ns() + (uint64_t)sec * 1000000000ull;

	for (;;) {
		pid_t r = waitpid(pid, status, WNOHANG);

		if (r == pid)
			return 0;
		if (r < 0 && errno != EINTR)
			return -errno;
		if (done && done(arg))
			return 1;
		if (stoppable && stop_signal)
			return -EINTR;
		if (cfs_now_ns() >= end)
			return -ETIMEDOUT;
		pause_ns(POLL_NS);
	}
}

/* A mount on path: its device differs from its parent's. */
static bool is_mounted(const char *path)
{
	char parent[PATH_MAX + 8];
	struct stat a, b;

	snprintf(parent, sizeof(parent), "%s/..", path);
	return stat(path, &a) == 0 && stat(parent, &b) == 0 && a.st_dev != b.st_dev;
}

/* "exited 3", "killed by signal 9": what a wait status says. */
static void status_str(int status, char *buf, size_t len)
{
	if (WIFEXITED(status))
		snprintf(buf, len, "exited %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(buf, len, "killed by signal %d", WTERMSIG(status));
	else
		snprintf(buf, len, "stopped (status 0x%x)", (unsigned)status);
}

/* Ends child pid of ours: SIGTERM, then SIGKILL after sec seconds. */
static void end_child(pid_t pid, unsigned sec)
{
	int st;

	if (waitpid(pid, &st, WNOHANG) == pid)
		return;
	kill(pid, SIGTERM);
	if (wait_child(pid, sec, &st, false, NULL, NULL) != 0) {
		kill(pid, SIGKILL);
		waitpid(pid, &st, 0);
	}
}

/* Unmounts r->mnt as the tests and the bench do: umount(2) as root, else
 * fusermount3 -u; while CMD's leftovers (outside its group) hold it, a
 * few tries, then a lazy detach, which the daemon sees as an unmount
 * once they let go. */
static void unmount(struct run *r, int devnull)
{
	for (int i = 0; i < 20 && is_mounted(r->mnt); i++) {
		char *fu[] = { "fusermount3", "-u", "--", r->mnt, NULL };
		pid_t pid;
		int efd, st;

		if (umount2(r->mnt, 0) == 0)
			break;
		if (errno == EPERM && spawn(fu, NULL, devnull, &pid, &efd) == 0) {
			start_result(efd, &st);
			waitpid(pid, &st, 0);
			if (!is_mounted(r->mnt))
				break;
		}
		pause_ns(100 * 1000000ull);
	}
	if (is_mounted(r->mnt)) {
		cfs_warn("--profile-run: %s is busy: detaching it", r->mnt);
		if (umount2(r->mnt, MNT_DETACH) < 0)
			cfs_warn("--profile-run: unmounting %s: %s", r->mnt, strerror(errno));
	}
}

/* Takes down what r holds, in reverse order: CMD's group, the mount,
 * the daemon, which has written the profile once it exited.  Waits for
 * the daemon whatever signal came: it must not outlive us. */
static void take_down(struct run *r, int devnull)
{
	char why[64];
	int st, ret;

	if (r->cmd_pid > 0) {
		kill(-r->cmd_pid, SIGKILL);
		waitpid(r->cmd_pid, &st, 0);
		r->cmd_pid = 0;
	}
	if (r->mnt[0] && is_mounted(r->mnt))
		unmount(r, devnull);
	if (r->mount_pid <= 0)
		return;
	ret = wait_child(r->mount_pid, DAEMON_WAIT_SEC, &st, false, NULL, NULL);
	if (ret != 0) {
		cfs_warn("--profile-run: cfs-mount did not exit %d s after the unmount: ending it",
			 DAEMON_WAIT_SEC);
		end_child(r->mount_pid, 5);
	} else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		status_str(st, why, sizeof(why));
		cfs_warn("--profile-run: cfs-mount %s after the unmount", why);
	}
	r->mount_pid = 0;
}

static void signals_catch(struct run *r)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	stop_signal = 0;
	for (size_t i = 0; i < CFS_ARRAY_SIZE(caught); i++)
		sigaction(caught[i], &sa, &r->old[i]);
}

static void signals_restore(struct run *r)
{
	for (size_t i = 0; i < CFS_ARRAY_SIZE(caught); i++)
		sigaction(caught[i], &r->old[i], NULL);
}

/* The private directory and the paths in it. */
static int make_root(struct run *r)
{
	const char *tmp = getenv("TMPDIR");

	if (!tmp || !*tmp)
		tmp = "/tmp";
	if ((size_t)snprintf(r->root, sizeof(r->root), "%s/cfs-pack-run.XXXXXX", tmp) >=
	    sizeof(r->root)) {
		r->root[0] = '\0';
		return -ENAMETOOLONG;
	}
	if (!mkdtemp(r->root)) {
		int ret = -errno;

		cfs_err("--profile-run: a temporary directory in %s: %s", tmp, strerror(errno));
		r->root[0] = '\0';
		return ret;
	}
	snprintf(r->mnt, sizeof(r->mnt), "%s/mnt", r->root);
	snprintf(r->cache, sizeof(r->cache), "%s/cache", r->root);
	snprintf(r->prof, sizeof(r->prof), "%s/profile", r->root);
	if (mkdir(r->mnt, 0700) < 0) {
		cfs_err("--profile-run: %s: %s", r->mnt, strerror(errno));
		return -errno;
	}
	return 0;
}

static int start_mount(const struct cfs_pack_run_opts *o, struct run *r, char *bin,
		       int devnull)
{
	char *argv[16 + CFS_PACK_RUN_ARGS_MAX];
	size_t n = 0;
	char why[64];
	int efd, err = 0, st, ret;

	argv[n++] = bin;
	argv[n++] = "-f";
	argv[n++] = "--record";
	argv[n++] = r->prof;
	argv[n++] = "--prefetch";
	argv[n++] = "none";
	argv[n++] = "--learn";
	argv[n++] = "no";
	argv[n++] = "--cache";
	argv[n++] = r->cache;
	for (size_t i = 0; i < o->n_args; i++)
		argv[n++] = o->args[i];
	argv[n++] = "--";
	argv[n++] = o->store;
	argv[n++] = o->image;
	argv[n++] = r->mnt;
	argv[n] = NULL;
	ret = spawn(argv, NULL, devnull, &r->mount_pid, &efd);
	if (ret < 0) {
		cfs_err("--profile-run: starting %s: %s", bin, cfs_strerror(ret));
		return ret;
	}
	if (start_result(efd, &err)) {
		waitpid(r->mount_pid, &st, 0);
		r->mount_pid = 0;
		cfs_err("--profile-run: %s: %s", bin, strerror(err));
		return -err;
	}
	ret = wait_child(r->mount_pid, MOUNT_WAIT_SEC, &st, true, is_mounted, r->mnt);
	if (ret == 1)
		return 0;
	if (ret == 0) {
		r->mount_pid = 0;
		status_str(st, why, sizeof(why));
		cfs_err("--profile-run: cfs-mount %s before mounting %s", why, o->image);
		return -EIO;
	}
	if (ret == -ETIMEDOUT)
		cfs_err("--profile-run: cfs-mount did not mount %s in %d s", o->image,
			MOUNT_WAIT_SEC);
	return ret;
}

/* Runs CMD in the mount.  0 when it ran (whatever it returned: a warning
 * says how it ended), -EINTR, or -errno when it could not start;
 * *exec_err: the errno of a failed exec of /bin/sh in the image. */
static int run_cmd(const struct cfs_pack_run_opts *o, struct run *r, int devnull,
		   int *exec_err)
{
	char *argv[] = { "/bin/sh", "-c", o->cmd, NULL };
	struct stat sb;
	char why[64];
	int efd, err = 0, st, ret;

	*exec_err = 0;
	/* lstat: a /dev that is a symlink names a place outside the image. */
	snprintf(r->dev, sizeof(r->dev), "%s/dev", r->mnt);
	if (lstat(r->dev, &sb) < 0 || !S_ISDIR(sb.st_mode))
		r->dev[0] = '\0';
	ret = spawn(argv, r, devnull, &r->cmd_pid, &efd);
	if (ret < 0) {
		cfs_err("--profile-run: fork: %s", cfs_strerror(ret));
		return ret;
	}
	switch (start_result(efd, &err)) {
	case 1:
		cfs_err("--profile-run: entering the image: %s%s", strerror(err),
			err == EPERM ? " (it needs root)" : "");
		return -err;
	case 2:
		/* Nothing of the image was read: the empty profile says so. */
		*exec_err = err;
		return 0;
	}
	ret = wait_child(r->cmd_pid, o->timeout_s, &st, true, NULL, NULL);
	if (ret == -ETIMEDOUT) {
		cfs_warn("--profile-run: '%s' still running after %u s: killed; packing with what "
			 "it read until then", o->cmd, o->timeout_s);
		return 0; /* take_down() kills the group */
	}
	if (ret < 0)
		return ret;
	/* Its leftovers in the group would hold the mount. */
	kill(-r->cmd_pid, SIGKILL);
	r->cmd_pid = 0;
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		status_str(st, why, sizeof(why));
		cfs_warn("--profile-run: '%s' %s: packing with what it read", o->cmd, why);
	}
	return 0;
}

/* The f and c records of p. */
static size_t records(const struct cfs_profile *p)
{
	size_t n = 0;

	for (size_t i = 0; p && i < cfs_profile_count(p); i++) {
		char k = cfs_profile_entry(p, i)->kind;

		n += k == 'f' || k == 'c';
	}
	return n;
}

int cfs_pack_run_record(const struct cfs_pack_run_opts *o, struct cfs_profile **prof)
{
	struct run r = { .mount_pid = 0 };
	char bin[PATH_MAX];
	int devnull, exec_err = 0, ret;

	*prof = NULL;
	ret = cfs_pack_run_mount_bin(bin, sizeof(bin));
	if (ret < 0) {
		cfs_err("--profile-run: no cfs-mount ($CFS_MOUNT, beside cfs-pack, or in "
			CFS_BINDIR ")");
		return ret;
	}
	devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (devnull < 0) {
		ret = -errno;
		cfs_err("--profile-run: /dev/null: %s", strerror(errno));
		return ret;
	}
	signals_catch(&r);
	ret = make_root(&r);
	if (ret == 0)
		ret = start_mount(o, &r, bin, devnull);
	if (ret == 0)
		ret = run_cmd(o, &r, devnull, &exec_err);
	take_down(&r, devnull);
	if (ret == 0 && stop_signal)
		ret = -EINTR;
	if (ret == 0) {
		ret = cfs_profile_load(r.prof, prof);
		if (ret < 0)
			cfs_err("--profile-run: the recorded profile: %s", cfs_strerror(ret));
	}
	if (ret == 0 && records(*prof) == 0) {
		if (exec_err)
			cfs_err("--profile-run: /bin/sh in the image: %s: nothing was read, no profile",
				strerror(exec_err));
		else
			cfs_err("--profile-run: '%s' read nothing of the image: no profile", o->cmd);
		ret = -ENODATA;
	}
	if (ret == -EINTR && stop_signal)
		cfs_err("--profile-run: interrupted by signal %d", (int)stop_signal);
	if (r.root[0]) {
		int rm = cfs_rm_tree(r.root);

		if (rm < 0)
			cfs_warn("--profile-run: removing %s: %s", r.root, cfs_strerror(rm));
	}
	signals_restore(&r);
	close(devnull);
	if (ret < 0) {
		cfs_profile_free(*prof);
		*prof = NULL;
	}
	return ret;
}
