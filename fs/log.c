/* SPDX-License-Identifier: MIT */
/*
 * Logging once detached: a background holder and its daemons have
 * /dev/null for stderr, so without --log their lines go to syslog, through
 * a FILE that cfs_log_setup() writes to like any other.  Both the holder
 * (holder.c) and the daemon's start-up (daemon.c) need it.
 */
#include <limits.h>
#include <stdio.h>
#include <syslog.h>

#include "mount_i.h"

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
FILE *cfs_mount_syslog(void)
{
	static const cookie_io_functions_t io = { .write = syslog_write };
	FILE *f;

	openlog(PROG, LOG_PID, LOG_DAEMON);
	f = fopencookie(NULL, "w", io);
	if (f)
		setvbuf(f, NULL, _IOLBF, 0);
	return f;
}
