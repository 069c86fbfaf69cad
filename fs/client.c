/* SPDX-License-Identifier: MIT */
/*
 * The clients of a running mount: --stats asks its daemon for the counters
 * (getxattr on the mount's root, so it waits for the daemon like any
 * reader); --status and --upgrade talk to its holder only, through the
 * state file the holder keeps (holder.c) and signals.  --status never
 * enters the mount, not even to resolve its path: it is what to run when
 * a mount hangs, and it answers while the daemon is stopped or wedged.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "mount_i.h"

/* --stats MOUNTPOINT: the running daemon's counters, one JSON line. */
int cfs_client_stats(const char *mountpoint)
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

/* The holder's state file of a mount point, parsed.  The mount point is
 * resolved without entering the mount (its daemon may be down). */
static json_t *holder_state(const char *mp)
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
	if (!dir)
		fprintf(stderr, PROG ": %s: %s\n", mp, strerror(errno));
	else if (asprintf(&full, "%s%s%s", dir, strcmp(dir, "/") ? "/" : "", base) < 0)
		full = NULL;
	if (full && cfs_holder_state_path(full, &path) == 0) {
		st = json_load_file(path, 0, &je);
		if (!st)
			fprintf(stderr, PROG ": %s: no holder state for this mount point (%s): "
				"not a background cfs mount, or not mounted\n", full, path);
	}
	free(path);
	free(full);
	free(dir);
	free(copy);
	return st;
}

/* FUSE requests the kernel has queued or sent to the daemon and not seen
 * answered (/sys/fs/fuse/connections/<dev>/waiting), or -1 where that is
 * not known (no fusectl there); *mounted: whether mp is mounted at all. */
static long long fuse_waiting(const char *mp, bool *mounted)
{
	char path[128];
	unsigned maj, min;
	long long v = -1;
	FILE *f;

	*mounted = cfs_mountinfo_dev(mp, &maj, &min) == 0;
	if (!*mounted)
		return -1;
	/* A FUSE mount's device is anonymous (major 0): its connection is
	 * named by the minor. */
	snprintf(path, sizeof(path), "/sys/fs/fuse/connections/%u/waiting", min);
	f = fopen(path, "re");
	if (f) {
		if (fscanf(f, "%lld", &v) != 1)
			v = -1;
		fclose(f);
	}
	return v;
}

/* The state letter of a process (R, S, D, T for stopped, Z...) from
 * /proc/PID/stat, '\0' when there is none: a daemon in T or D does not
 * serve. */
static char proc_state(pid_t pid)
{
	char path[64], buf[512], *p;
	size_t n;
	FILE *f;

	if (pid <= 0)
		return '\0';
	snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
	f = fopen(path, "re");
	if (!f)
		return '\0';
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* pid (comm) S ...: comm may hold anything, ')' included */
	p = strrchr(buf, ')');
	return p && p[1] == ' ' && p[2] ? p[2] : '\0';
}

/* The holder's state, and what the kernel and /proc say about the mount
 * and its processes; nothing here sends the daemon a request. */
int cfs_client_status(const char *mp)
{
	json_t *st = holder_state(mp);
	const char *mpr;
	char *out, state[2] = "";
	long long started, waiting = -1;
	bool mounted = false;
	pid_t holder, daemon;

	if (!st)
		return 1;
	mpr = json_string_value(json_object_get(st, "mountpoint"));
	holder = (pid_t)json_integer_value(json_object_get(st, "holder_pid"));
	daemon = (pid_t)json_integer_value(json_object_get(st, "daemon_pid"));
	started = json_integer_value(json_object_get(st, "started_unix"));
	json_object_set_new(st, "holder_alive", json_boolean(holder > 0 && kill(holder, 0) == 0));
	state[0] = proc_state(daemon);
	json_object_set_new(st, "daemon_state", state[0] ? json_string(state) : json_null());
	json_object_set_new(st, "uptime_s", json_integer(time(NULL) - started));
	if (mpr)
		waiting = fuse_waiting(mpr, &mounted);
	json_object_set_new(st, "mounted", json_boolean(mounted));
	/* null without fusectl mounted at /sys/fs/fuse/connections */
	json_object_set_new(st, "fuse_requests_waiting",
			    waiting >= 0 ? json_integer(waiting) : json_null());
	out = json_dumps(st, JSON_COMPACT);
	json_decref(st);
	if (!out) {
		fprintf(stderr, PROG ": %s: %s\n", mp, strerror(ENOMEM));
		return 1;
	}
	if (printf("%s\n", out) < 0 || fflush(stdout) != 0) {
		fprintf(stderr, PROG ": stdout: %s\n", strerror(errno));
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
		st = holder_state(mp);
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
int cfs_client_upgrade(const char *mp)
{
	json_t *st = holder_state(mp);
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
		fprintf(stderr, PROG ": %s: holder %ld: %s\n", mp, (long)holder,
			strerror(holder <= 0 ? ESRCH : errno));
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

