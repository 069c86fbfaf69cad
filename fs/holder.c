/* SPDX-License-Identifier: MIT */
/*
 * The holder: keeps a mount alive while the daemon that serves it dies,
 * restarts or is upgraded (docs/OPERATIONS.md).
 *
 * The kernel keeps a FUSE connection as long as any process holds its
 * /dev/fuse file.  The holder mounts, reads the kernel's INIT request,
 * keeps both, and runs the serving daemon as a child (the first one the
 * holder forked, later ones the installed binary, exec'd with the fd and
 * the INIT request).  A daemon that dies is
 * started again with backoff; once the old one is gone, the holder writes
 * FUSE_NOTIFY_RESEND, which puts the requests it had read and not answered
 * back in the queue (Linux >= 6.9).  Every cfs request is a read of an
 * immutable image, so answering one twice is harmless.  A new daemon never
 * sees INIT from the kernel: it processes the saved one, and its reply
 * (which the kernel would refuse: the connection is set up) is dropped.
 *
 * The holder has no threads, no network and no image open: nothing in it
 * can fail because of the store.  Only unmounting (or SIGTERM to the
 * holder) ends the mount.
 *
 * The end of this file is the holder's process as cfs-mount starts it:
 * mounting with a session that never serves, forking the first daemon,
 * detaching from the command, and taking over after its own upgrade.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <linux/fuse.h>

#include "digest.h"
#include "util.h"

#include "mount_i.h"

/* Linux 6.9 (protocol 7.40); not in Debian 12's headers. */
#define CFS_FUSE_NOTIFY_RESEND 7

#define INIT_READ_SIZE ((1u << 20) + 65536)
#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 5000
/* A daemon that dies this soon after it started serving, several times in
 * a row, is started again with a growing delay: it is crashing on
 * something, and a tight loop of restarts would only burn the CPU. */
#define QUICK_DEATH_MS 500
#define QUICK_DEATHS 3
#define READY_TIMEOUT_MS 60000   /* a new daemon must serve within this */
#define REF_LEN (CFS_REF_STRLEN - 1) /* "sha256:<hex>" */
#define RETIRE_TIMEOUT_MS 10000  /* then an old one is killed */

int cfs_holder_resend(int fuse_fd)
{
	struct fuse_out_header oh = { .len = sizeof(oh), .error = CFS_FUSE_NOTIFY_RESEND };

	return write(fuse_fd, &oh, sizeof(oh)) == (ssize_t)sizeof(oh) ? 0 : -errno;
}

int cfs_holder_read_init(int fuse_fd, int *init_fd)
{
	uint8_t *buf = malloc(INIT_READ_SIZE);
	struct fuse_in_header ih;
	ssize_t n;
	int fd, ret;

	if (!buf)
		return -ENOMEM;
	do {
		n = read(fuse_fd, buf, INIT_READ_SIZE);
	} while (n < 0 && errno == EINTR);
	if (n < 0) {
		ret = -errno;
		goto out;
	}
	memcpy(&ih, buf, CFS_MIN((size_t)n, sizeof(ih)));
	if ((size_t)n < sizeof(ih) || ih.opcode != FUSE_INIT || ih.len != (uint32_t)n) {
		ret = -EPROTO;
		goto out;
	}
	fd = memfd_create("cfs-fuse-init", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0) {
		ret = -errno;
		goto out;
	}
	ret = cfs_write_full(fd, buf, (size_t)n);
	if (ret == 0 && fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE |
					  F_SEAL_SEAL) < 0)
		ret = -errno;
	if (ret < 0)
		close(fd);
	else
		*init_fd = fd;
out:
	free(buf);
	return ret;
}

int cfs_holder_load_init(int init_fd, void **buf, size_t *len)
{
	struct stat sb;
	void *p;
	int ret;

	if (fstat(init_fd, &sb) < 0)
		return -errno;
	if (sb.st_size < (off_t)sizeof(struct fuse_in_header) || sb.st_size > INIT_READ_SIZE)
		return -EPROTO;
	p = malloc((size_t)sb.st_size);
	if (!p)
		return -ENOMEM;
	ret = cfs_pread_full(init_fd, p, (size_t)sb.st_size, 0);
	if (ret < 0) {
		free(p);
		return ret;
	}
	*buf = p;
	*len = (size_t)sb.st_size;
	return 0;
}

static uint64_t now_ms(void)
{
	return cfs_now_ns() / 1000000u;
}

/* /run/cfs/mounts/<first 32 hex of SHA-256 of the mountpoint>.json */
int cfs_holder_state_path(const char *mountpoint, char **out)
{
	char hex[CFS_DIGEST_HEX_LEN + 1];
	cfs_digest d;

	cfs_sha256(mountpoint, strlen(mountpoint), &d);
	cfs_digest_hex(&d, hex);
	return asprintf(out, "%s/%.32s.json", CFS_HOLDER_STATE_DIR, hex) < 0 ? -ENOMEM : 0;
}

static void state_write(struct cfs_holder *h)
{
	char *tmp = NULL;
	FILE *f;
	int fd;

	if (!h->state_path)
		return;
	if (mkdir("/run/cfs", 0755) < 0 && errno != EEXIST)
		return;
	if (mkdir(CFS_HOLDER_STATE_DIR, 0755) < 0 && errno != EEXIST)
		return;
	if (asprintf(&tmp, "%s.tmp.%ld", h->state_path, (long)getpid()) < 0)
		return;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	f = fd >= 0 ? fdopen(fd, "w") : NULL;
	if (!f) {
		if (fd >= 0)
			close(fd);
		free(tmp);
		return;
	}
	fprintf(f, "{\"mountpoint\":");
	cfs_json_str(f, h->mountpoint);
	fprintf(f, ",\"image\":");
	cfs_json_str(f, h->image);
	fprintf(f, ",\"ref\":");
	cfs_json_str(f, h->ref);
	fprintf(f, ",\"store\":");
	cfs_json_str(f, h->store);
	fprintf(f, ",\"binary\":");
	cfs_json_str(f, h->exe);
	fprintf(f, ",\"holder_pid\":%ld,\"daemon_pid\":%ld,\"started_unix\":%lld,"
		"\"daemon_started_unix\":%lld,\"restarts\":%u,\"upgrades\":%u,"
		"\"holder_execs\":%u,\"resend\":%s,\"last_restart_reason\":",
		(long)getpid(), (long)h->daemon, (long long)h->started_unix,
		(long long)h->daemon_started_unix, h->restarts, h->upgrades, h->holder_execs,
		h->resend_ok ? "true" : "false");
	cfs_json_str(f, h->last_reason);
	fprintf(f, ",\"last_restart_unix\":%lld}\n", (long long)h->last_restart_unix);
	if (fflush(f) != 0 || fsync(fileno(f)) < 0) {
		fclose(f);
		unlink(tmp);
		free(tmp);
		return;
	}
	fclose(f);
	if (rename(tmp, h->state_path) < 0)
		unlink(tmp);
	free(tmp);
}

/* Starts a daemon: the binary h->exe with h's arguments, the FUSE fd and
 * the INIT request on fds it inherits, and a pipe to say it serves.
 * reply_init: the first daemon answers INIT for real.  With fork_first the
 * first daemon is this program forked, not exec'd (the holder is single-
 * threaded and holds nothing a daemon must not have): 0 in that child. */
static pid_t spawn(struct cfs_holder *h, bool reply_init, int *ready_rd)
{
	char env_fd[32], env_init[32], env_ready[32];
	int p[2];
	pid_t pid;

	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	pid = fork();
	if (pid < 0) {
		int e = errno;

		close(p[0]);
		close(p[1]);
		return -e;
	}
	if (pid == 0) {
		sigset_t none;

		/* Only stderr is shared (until the daemon serves: its errors
		 * are the user's); stdin and stdout never are. */
		{
			int nullfd = open("/dev/null", O_RDWR | O_CLOEXEC);

			if (nullfd >= 0) {
				dup2(nullfd, STDIN_FILENO);
				dup2(nullfd, STDOUT_FILENO);
			}
		}
		/* The three fds cross exec; nothing else of the holder's does. */
		if (fcntl(h->fuse_fd, F_SETFD, 0) < 0 || fcntl(h->init_fd, F_SETFD, 0) < 0 ||
		    fcntl(p[1], F_SETFD, 0) < 0)
			_exit(127);
		snprintf(env_fd, sizeof(env_fd), "%d", h->fuse_fd);
		snprintf(env_init, sizeof(env_init), "%d", h->init_fd);
		snprintf(env_ready, sizeof(env_ready), "%d", p[1]);
		setenv(CFS_SERVE_FD_ENV, env_fd, 1);
		setenv(CFS_SERVE_INIT_ENV, env_init, 1);
		setenv(CFS_SERVE_READY_ENV, env_ready, 1);
		setenv(CFS_SERVE_REPLY_ENV, reply_init ? "1" : "0", 1);
		if (h->ref[0])
			setenv(CFS_SERVE_REF_ENV, h->ref, 1);
		else
			unsetenv(CFS_SERVE_REF_ENV);
		if (reply_init && h->fork_first) {
			close(p[0]);
			return 0;
		}
		/* A program exec'd sets up its own signals. */
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		if (h->cwd && chdir(h->cwd) < 0)
			_exit(127);
		execv(h->exe, h->argv);
		_exit(127);
	}
	close(p[1]);
	*ready_rd = p[0];
	return pid;
}

/* Waits for a new daemon's ready byte (or its death, or the timeout).  The
 * byte comes in one write with the reference the daemon serves
 * ("sha256:<hex>"), which the first daemon's tells the holder. */
static int wait_ready(struct cfs_holder *h, int rd, uint64_t timeout_ms)
{
	struct pollfd pfd = { .fd = rd, .events = POLLIN };
	char msg[1 + REF_LEN + 1];
	ssize_t n;
	int r;

	do {
		r = poll(&pfd, 1, (int)timeout_ms);
	} while (r < 0 && errno == EINTR);
	if (r <= 0)
		return -ETIMEDOUT;
	n = read(rd, msg, sizeof(msg) - 1);
	/* 0: serving; anything else, or nothing (it died): failed. */
	if (n < 1 || msg[0] != 0)
		return -ECHILD;
	msg[n] = '\0';
	if (!h->ref[0] && n == 1 + REF_LEN && !strncmp(msg + 1, "sha256:", 7))
		snprintf(h->ref, sizeof(h->ref), "%s", msg + 1);
	return 0;
}

/* The mount is gone (unmounted, or the connection aborted) when the
 * kernel reports an error on the fd. */
static bool mount_gone(int fuse_fd)
{
	struct pollfd pfd = { .fd = fuse_fd, .events = 0 };

	return poll(&pfd, 1, 0) > 0 && (pfd.revents & (POLLERR | POLLHUP | POLLNVAL));
}

static void describe(int status, char *out, size_t cap)
{
	if (WIFSIGNALED(status))
		snprintf(out, cap, "killed by signal %d (%s)", WTERMSIG(status),
			 strsignal(WTERMSIG(status)));
	else
		snprintf(out, cap, "exited with status %d", WEXITSTATUS(status));
}

/* Starts a daemon and waits until it serves.  0, or -errno with the
 * daemon reaped. */
static int start_daemon(struct cfs_holder *h, bool reply_init, pid_t *out)
{
	int rd = -1, ret, status;
	pid_t pid;

	pid = spawn(h, reply_init, &rd);
	if (pid < 0)
		return (int)pid;
	if (pid == 0)
		return CFS_HOLDER_CHILD;
	ret = wait_ready(h, rd, READY_TIMEOUT_MS);
	close(rd);
	if (ret < 0) {
		if (ret == -ETIMEDOUT)
			kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
		return ret;
	}
	*out = pid;
	return 0;
}

/* Why start_daemon() failed, for the log and the state file: its own
 * failures by what they mean, fork's and pipe's by their errno. */
static const char *start_error(int ret)
{
	if (ret == -ETIMEDOUT)
		return "the new daemon did not serve in time";
	if (ret == -ECHILD)
		return "the new daemon exited before it served";
	return cfs_strerror(ret);
}

/* Reaps pid if it ends within ms: true once it is reaped. */
static bool reap_within(pid_t pid, uint64_t ms)
{
	uint64_t t0 = now_ms();
	int status;

	while (waitpid(pid, &status, WNOHANG) == 0) {
		if (now_ms() - t0 > ms)
			return false;
		usleep(10000);
	}
	return true;
}

/* Ends a daemon (SIGTERM, then SIGKILL after a while) and reaps it. */
static void retire(pid_t pid)
{
	int status;

	kill(pid, SIGTERM);
	if (!reap_within(pid, RETIRE_TIMEOUT_MS)) {
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
	}
}

int cfs_holder_start(struct cfs_holder *h)
{
	int ret;

	h->started_unix = time(NULL);
	h->daemon_started_ms = now_ms();
	ret = start_daemon(h, true, &h->daemon);
	if (ret != 0)
		return ret;
	h->daemon_started_unix = time(NULL);
	/* Whether the kernel takes FUSE_NOTIFY_RESEND decides whether a
	 * daemon's death loses the requests it held.  Asked now, with a
	 * daemon serving: at worst it answers a request twice. */
	h->resend_ok = cfs_holder_resend(h->fuse_fd) == 0;
	if (!h->resend_ok)
		cfs_warn("this kernel has no FUSE_NOTIFY_RESEND (Linux >= 6.9): reads in "
			 "flight when a daemon dies will fail");
	state_write(h);
	return 0;
}

/* An upgrade: a new daemon from the binary now installed, then the old
 * one retired; the old keeps serving if the new one cannot start. */
static void upgrade(struct cfs_holder *h)
{
	pid_t old = h->daemon, pid;
	int ret;

	cfs_info("upgrade: starting %s", h->exe);
	ret = start_daemon(h, false, &pid);
	if (ret < 0) {
		snprintf(h->last_reason, sizeof(h->last_reason), "upgrade failed: %s",
			 start_error(ret));
		cfs_err("%s", h->last_reason);
		state_write(h);
		return;
	}
	h->daemon = pid;
	h->retiring = old;
	retire(old);
	h->retiring = 0;
	if (h->resend_ok)
		cfs_holder_resend(h->fuse_fd);
	h->upgrades++;
	h->daemon_started_unix = time(NULL);
	h->daemon_started_ms = now_ms();
	snprintf(h->last_reason, sizeof(h->last_reason), "upgrade");
	h->last_restart_unix = time(NULL);
	state_write(h);
}

/* The holder's own upgrade: exec the installed binary in this process,
 * with the fd, the INIT request and the state in the environment; the
 * daemon stays our child (a pid's children outlive its exec).  Returns
 * only if the exec failed. */
static void reexec(struct cfs_holder *h, int sfd)
{
	char *env = NULL;

	/* The mount point last: it may hold commas.  The reference ("-" when
	 * unknown) before it: a resumed holder's daemons open it too. */
	if (asprintf(&env, "%d,%d,%ld,%u,%u,%u,%lld,%lld,%d,%s,%s", h->fuse_fd, h->init_fd,
		     (long)h->daemon, h->restarts, h->upgrades, h->holder_execs + 1,
		     h->started_unix, h->daemon_started_unix, h->resend_ok,
		     h->ref[0] ? h->ref : "-", h->mountpoint) < 0)
		goto failed;
	if (fcntl(h->fuse_fd, F_SETFD, 0) < 0 || fcntl(h->init_fd, F_SETFD, 0) < 0)
		goto failed;
	setenv(CFS_HOLDER_RESUME_ENV, env, 1);
	/* Relative paths in the arguments are the user's working directory's. */
	if (h->cwd && chdir(h->cwd) < 0)
		goto failed;
	close(sfd);
	execv(h->exe, h->holder_argv);
	unsetenv(CFS_HOLDER_RESUME_ENV);
	if (chdir("/") < 0) {
		/* nothing depends on it */
	}
failed:
	free(env);
	fcntl(h->fuse_fd, F_SETFD, FD_CLOEXEC);
	fcntl(h->init_fd, F_SETFD, FD_CLOEXEC);
	snprintf(h->last_reason, sizeof(h->last_reason), "holder upgrade failed: %s",
		 strerror(errno));
	cfs_err("%s", h->last_reason);
	state_write(h);
}

int cfs_holder_resume(struct cfs_holder *h, const char *env)
{
	long daemon;
	int resend, end = 0;

	if (sscanf(env, "%d,%d,%ld,%u,%u,%u,%lld,%lld,%d,%n", &h->fuse_fd, &h->init_fd, &daemon,
		   &h->restarts, &h->upgrades, &h->holder_execs, &h->started_unix,
		   &h->daemon_started_unix, &resend, &end) != 9 || !end || !env[end] ||
	    h->fuse_fd < 0 || h->init_fd < 0)
		return -EINVAL;
	/* A holder of an older version passes no reference: the mount point
	 * (absolute) follows at once. */
	if (env[end] != '/') {
		const char *comma = strchr(env + end, ',');
		size_t n = comma ? (size_t)(comma - (env + end)) : 0;

		if (!comma || !comma[1])
			return -EINVAL;
		if (n == REF_LEN && !strncmp(env + end, "sha256:", 7))
			snprintf(h->ref, sizeof(h->ref), "%.*s", (int)n, env + end);
		else if (n != 1 || env[end] != '-')
			return -EINVAL;
		end = (int)(comma + 1 - env);
	}
	h->mountpoint = env + end;
	fcntl(h->fuse_fd, F_SETFD, FD_CLOEXEC);
	fcntl(h->init_fd, F_SETFD, FD_CLOEXEC);
	h->daemon = (pid_t)daemon;
	h->resend_ok = resend;
	h->daemon_started_ms = now_ms() - QUICK_DEATH_MS;
	snprintf(h->last_reason, sizeof(h->last_reason), "holder upgrade");
	h->last_restart_unix = time(NULL);
	return 0;
}

int cfs_holder_run(struct cfs_holder *h)
{
	uint64_t restart_at = 0;
	unsigned backoff = 0, quick = 0;
	sigset_t set;
	int sfd, ret = 0;

	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGUSR2);
	sigprocmask(SIG_BLOCK, &set, NULL);
	sfd = signalfd(-1, &set, SFD_CLOEXEC);
	if (sfd < 0)
		return -errno;
	state_write(h);

	for (;;) {
		struct pollfd pfd[2] = { { .fd = sfd, .events = POLLIN }, { .fd = h->fuse_fd } };
		struct signalfd_siginfo si;
		int status, timeout = -1, err;
		uint64_t now = now_ms();
		pid_t pid;

		if (!h->daemon)
			timeout = restart_at > now ? (int)(restart_at - now) : 0;
		if (poll(pfd, 2, timeout) < 0 && errno != EINTR) {
			ret = -errno;
			break;
		}
		if (mount_gone(h->fuse_fd)) {
			/* Unmounted: the daemon ends on its own (its reads fail)
			 * and writes its stats; give it the time to. */
			if (h->daemon && !reap_within(h->daemon, RETIRE_TIMEOUT_MS))
				retire(h->daemon);
			h->daemon = 0;
			break;
		}
		if (pfd[0].revents & POLLIN) {
			if (read(sfd, &si, sizeof(si)) != sizeof(si))
				continue;
			if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
				cfs_info("holder: signal %u: unmounting", si.ssi_signo);
				ret = 1; /* the caller unmounts */
				if (h->daemon)
					retire(h->daemon);
				h->daemon = 0;
				break;
			}
			if (si.ssi_signo == SIGHUP && h->daemon)
				upgrade(h);
			if (si.ssi_signo == SIGUSR2) {
				reexec(h, sfd);
				sfd = signalfd(-1, &set, SFD_CLOEXEC);
				if (sfd < 0) {
					ret = -errno;
					break;
				}
			}
		}
		/* Reap whatever died: the serving daemon is started again. */
		while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
			uint64_t lived;

			if (pid != h->daemon)
				continue;
			h->daemon = 0;
			if (mount_gone(h->fuse_fd))
				break;
			describe(status, h->last_reason, sizeof(h->last_reason));
			h->last_restart_unix = time(NULL);
			h->restarts++;
			/* Its unanswered requests go back in the queue for the next. */
			if (h->resend_ok)
				cfs_holder_resend(h->fuse_fd);
			/* At once, unless it keeps dying as it starts. */
			lived = now_ms() - h->daemon_started_ms;
			quick = lived < QUICK_DEATH_MS ? quick + 1 : 0;
			backoff = quick < QUICK_DEATHS ? 0 :
				  backoff ? CFS_MIN(backoff * 2, (unsigned)BACKOFF_MAX_MS) :
					    BACKOFF_MIN_MS;
			restart_at = now_ms() + backoff;
			cfs_warn("daemon %ld %s after %" PRIu64 " ms: restarting in %u ms", (long)pid,
				 h->last_reason, lived, backoff);
			state_write(h);
		}
		if (!h->daemon && now_ms() >= restart_at) {
			if (mount_gone(h->fuse_fd))
				break;
			h->daemon_started_ms = now_ms();
			err = start_daemon(h, false, &h->daemon);
			if (err < 0) {
				h->daemon = 0;
				backoff = backoff ? CFS_MIN(backoff * 2, (unsigned)BACKOFF_MAX_MS)
						  : BACKOFF_MIN_MS;
				restart_at = now_ms() + backoff;
				snprintf(h->last_reason, sizeof(h->last_reason),
					 "a new daemon failed to start: %s", start_error(err));
				cfs_err("%s; again in %u ms", h->last_reason, backoff);
				state_write(h);
				continue;
			}
			h->daemon_started_unix = time(NULL);
			state_write(h);
		}
	}
	if (sfd >= 0)
		close(sfd);
	if (h->state_path)
		unlink(h->state_path);
	return ret;
}

/* ---- the holder's process: mounting, detaching, taking over ------------- */

/* What a holder runs its daemons with: the binary installed at the path
 * this process came from, its arguments plus -f, the working directory
 * (for relative paths in them), its own arguments for its upgrade.  The
 * caller frees h->exe and h->argv.  0 or -errno. */
static int holder_args(struct cfs_holder *h, int argc, char **argv, char *cwd, size_t cwd_len)
{
	char *exe = cfs_mount_self_exe(), **dargv = calloc((size_t)argc + 2, sizeof(*dargv));

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

/* The child, once mounted: leaves the terminal and the working directory,
 * then lets the parent go. */
static int daemon_detach(int *ready_fd)
{
	unsigned char ok = CFS_READY_OK;
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

/* In the holder's first daemon (forked): the holder's session, left as it
 * is: freeing it would close the connection's fd the daemon's own session
 * serves (and closes), and only unmounting frees the mount point it holds,
 * which is the holder's business.  Not state: a root that keeps it
 * reachable for the leak checker; volatile, so that the store is not
 * optimised away. */
static struct fuse_session *volatile first_daemon_holder_session;

int cfs_holder_mount(const struct cfs_mount_args *a, struct cfs_daemon *d,
		     struct fuse_args *args, const char *mountpoint, int argc, char **argv,
		     int *ready_fd, enum cfs_log_level level)
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
		first_daemon_holder_session = se;
		close(*ready_fd); /* the command's pipe is the holder's to answer */
		*ready_fd = -1;
		free(h.state_path);
		free(h.argv);
		free(h.exe);
		return CFS_HOLDER_MOUNT_CHILD;
	}
	if (ret < 0) {
		/* A daemon that exited printed why on the stderr we share. */
		if (ret == -ETIMEDOUT)
			fprintf(stderr, PROG ": the daemon did not serve within a minute\n");
		else if (ret != -ECHILD)
			fprintf(stderr, PROG ": starting the daemon: %s\n", cfs_strerror(ret));
		goto out_unmount;
	}
	if (daemon_detach(ready_fd) < 0)
		goto out_stop;
	if (!d->log) {
		d->log = cfs_mount_syslog();
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

int cfs_holder_takeover(const struct cfs_mount_args *a, int argc, char **argv,
			struct cfs_daemon *d, enum cfs_log_level level)
{
	struct cfs_holder h = { .fuse_fd = -1, .init_fd = -1, .image = a->image,
				.store = a->store };
	char *env = strdup(getenv(CFS_HOLDER_RESUME_ENV));
	char cwd[PATH_MAX];
	int ret, status = 1;

	/* Its daemons must not take themselves for holders. */
	unsetenv(CFS_HOLDER_RESUME_ENV);
	if (!d->log) {
		d->log = cfs_mount_syslog();
		cfs_log_setup(PROG, level, d->log);
	}
	ret = env ? holder_args(&h, argc, argv, cwd, sizeof(cwd)) : -ENOMEM;
	if (ret == 0)
		ret = cfs_holder_resume(&h, env);
	if (ret < 0) {
		cfs_err("holder upgrade: cannot take over (%s: %s): the mount lives as long as "
			"its daemon", env ? env : "no state", cfs_strerror(ret));
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
