/* SPDX-License-Identifier: MIT */
/*
 * Finding a mount without entering it.  A stat() or getxattr() on a FUSE
 * mount point waits for its daemon, which may not serve yet (the daemon's
 * start-up) or not any more (a stopped or wedged daemon under --status);
 * /proc/self/mountinfo names the mount, and its device number leads to
 * the kernel's view of it under /sys, without a FUSE request.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "mount_i.h"

/* mountinfo writes space, tab, newline and backslash as \ooo. */
static void unescape(char *s)
{
	char *out = s;

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
		    s[3] >= '0' && s[3] <= '7') {
			*out++ = (char)((s[1] - '0') << 6 | (s[2] - '0') << 3 | (s[3] - '0'));
			s += 3;
		} else {
			*out++ = *s;
		}
	}
	*out = '\0';
}

int cfs_mountinfo_find(const char *mp, unsigned *major, unsigned *minor, char *fstype,
		       size_t cap)
{
	char line[PATH_MAX + 1024], path[PATH_MAX], type[64];
	unsigned maj, min;
	int ret = -ENOENT;
	const char *sep;
	FILE *f;

	f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		/* id parent major:minor root mountpoint [optional...] - fstype
		 * ...; the last match is the one on top */
		if (sscanf(line, "%*s %*s %u:%u %*s %4095s", &maj, &min, path) != 3)
			continue;
		unescape(path);
		if (strcmp(path, mp))
			continue;
		sep = strstr(line, " - ");
		if (!sep || sscanf(sep + 3, "%63s", type) != 1)
			type[0] = '\0';
		if (major)
			*major = maj;
		if (minor)
			*minor = min;
		if (fstype && cap)
			snprintf(fstype, cap, "%s", type);
		ret = 0;
	}
	fclose(f);
	return ret;
}

int cfs_mountinfo_dev(const char *mp, unsigned *major, unsigned *minor)
{
	return cfs_mountinfo_find(mp, major, minor, NULL, 0);
}
