/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <malloc.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

static const char *log_prog = "cfs";
static enum cfs_log_level log_level = CFS_LOG_WARN;
static FILE *log_out;

void cfs_log_setup(const char *prog, enum cfs_log_level level, FILE *out)
{
	if (prog)
		log_prog = prog;
	log_level = level;
	log_out = out;
}

void cfs_log(enum cfs_log_level level, const char *fmt, ...)
{
	FILE *out = log_out ? log_out : stderr;
	char line[1024];
	va_list ap;
	int n;

	if (level > log_level)
		return;
	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	/* One fprintf per line so that lines from threads do not interleave. */
	fprintf(out, "%s: %s\n", log_prog, line);
	fflush(out);
}

const char *cfs_strerror(int neg_errno)
{
	switch (-neg_errno) {
	case EUCLEAN:
		return "corrupt image or object";
	case EBADMSG:
		return "digest mismatch";
	case EPROTONOSUPPORT:
		return "unsupported format version or feature";
	case EKEYREJECTED:
		return "TLS certificate verification failed";
	case EXDEV:
		return "a symlink in the store leads out of it";
	default:
		return strerror(-neg_errno);
	}
}

size_t cfs_path_next(const char **path, const char **name)
{
	const char *p = *path;

	while (*p) {
		const char *s = p;
		size_t n;

		while (*p && *p != '/')
			p++;
		n = (size_t)(p - s);
		while (*p == '/')
			p++;
		if (!n || (n == 1 && *s == '.'))
			continue;
		*path = p;
		*name = s;
		return n;
	}
	*path = p;
	return 0;
}

int cfs_parse_uint(const char *s, unsigned long min, unsigned long max, unsigned long *out)
{
	unsigned long v;
	char *end;

	/* strtoul would take "-1" (and " -1") for ULONG_MAX. */
	if (!s || strchr(s, '-'))
		return -EINVAL;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

int cfs_parse_u64(const char *s, uint64_t *out)
{
	uint64_t v = 0;

	if (!*s || (s[0] == '0' && s[1]))
		return -EINVAL;
	for (; *s; s++) {
		if (*s < '0' || *s > '9' || v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
			return -EINVAL;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	*out = v;
	return 0;
}

int cfs_parse_lines(const void *buf, size_t len, size_t max, const char *header,
		    int (*line)(char *line, void *ctx), void *ctx)
{
	size_t hlen = strlen(header);
	char *copy, *l, *next;
	int ret = 0;

	if (!buf || len > max || memchr(buf, '\0', len))
		return -EINVAL;
	copy = malloc(len + 1);
	if (!copy)
		return -ENOMEM;
	memcpy(copy, buf, len);
	copy[len] = '\0';
	next = strchr(copy, '\n');
	if (!next || (size_t)(next - copy) != hlen || memcmp(copy, header, hlen)) {
		free(copy);
		return -EINVAL;
	}
	for (l = next + 1; ret == 0 && *l; l = next) {
		next = strchr(l, '\n');
		if (!next) {
			ret = -EINVAL; /* cut short: written whole or not at all */
			break;
		}
		*next++ = '\0';
		ret = line(l, ctx);
	}
	free(copy);
	return ret;
}

int cfs_parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	unsigned shift = 0;
	bool over;

	/* A digit first: strtoull() would take " -1" for 2^64 - 1. */
	if (!s || *s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	over = errno == ERANGE;
	switch (*end) {
	case '\0': break;
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	case 't': case 'T': shift = 40; end++; break;
	default: return -EINVAL;
	}
	if (*end == 'i' && shift)
		end++;
	if ((*end == 'b' || *end == 'B') && shift)
		end++;
	if (*end)
		return -EINVAL;
	if (over || v > (UINT64_MAX >> shift))
		return -ERANGE;
	*out = (uint64_t)v << shift;
	return 0;
}

int cfs_pread_full(int fd, void *buf, size_t len, off_t off)
{
	char *p = buf;

	while (len) {
		ssize_t n = pread(fd, p, len, off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -ENODATA;
		p += n;
		len -= (size_t)n;
		off += n;
	}
	return 0;
}

int cfs_write_full(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int cfs_write_file_at(int dirfd, const char *path, const void *buf, size_t len, mode_t mode,
		      bool sync)
{
	char *tmp;
	int fd, ret;

	if (asprintf(&tmp, "%s.tmp.%ld.%ld", path, (long)getpid(), (long)gettid()) < 0)
		return -ENOMEM;
	fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
	if (fd < 0) {
		ret = -errno;
		goto out;
	}
	ret = cfs_write_full(fd, buf, len);
	if (ret == 0 && sync && fsync(fd) < 0)
		ret = -errno;
	if (close(fd) < 0 && ret == 0)
		ret = -errno;
	if (ret == 0 && renameat(dirfd, tmp, dirfd, path) < 0)
		ret = -errno;
	if (ret < 0)
		(void)unlinkat(dirfd, tmp, 0);
out:
	free(tmp);
	return ret;
}

/* The writer's pid in a temporary name of cfs_write_file_at(), or 0. */
static long tmp_name_pid(const char *name)
{
	const char *t = NULL, *p;
	char *end;
	long pid;

	for (p = strstr(name, ".tmp."); p; p = strstr(p + 1, ".tmp."))
		t = p;
	if (!t || t == name)
		return 0;
	t += strlen(".tmp.");
	pid = strtol(t, &end, 10);
	if (end == t || *end != '.' || pid <= 0)
		return 0;
	t = end + 1;
	(void)strtol(t, &end, 10);
	return end == t || *end ? 0 : pid;
}

DIR *cfs_opendir_at(int dirfd, const char *name)
{
	int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	DIR *d;

	if (fd < 0)
		return NULL;
	d = fdopendir(fd);
	if (!d) {
		int err = errno;

		close(fd);
		errno = err;
	}
	return d;
}

int cfs_write_file_sweep(int at, const char *dir)
{
	struct dirent *de;
	DIR *d = cfs_opendir_at(at, dir);
	int n = 0;

	if (!d)
		return -errno;
	while ((de = readdir(d))) {
		long pid = tmp_name_pid(de->d_name);

		if (pid && kill((pid_t)pid, 0) < 0 && errno == ESRCH &&
		    unlinkat(dirfd(d), de->d_name, 0) == 0)
			n++;
	}
	closedir(d);
	return n;
}

static int rm_one(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	(void)sb;
	(void)ftw;
	if ((type == FTW_DP ? rmdir(path) : unlink(path)) < 0 && errno != ENOENT)
		return -1;
	return 0;
}

int cfs_rm_tree(const char *path)
{
	if (access(path, F_OK) < 0)
		return 0;
	return nftw(path, rm_one, 64, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) < 0 ? -errno : 0;
}

int cfs_read_file_at(int dirfd, const char *path, size_t max, void **buf, size_t *len)
{
	struct stat st;
	void *p = NULL;
	int fd, ret;

	fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		ret = -errno;
		goto out_close;
	}
	if (!S_ISREG(st.st_mode)) {
		ret = -EINVAL;
		goto out_close;
	}
	if ((uint64_t)st.st_size > max) {
		ret = -EFBIG;
		goto out_close;
	}
	p = malloc(st.st_size ? (size_t)st.st_size : 1);
	if (!p) {
		ret = -ENOMEM;
		goto out_close;
	}
	ret = cfs_pread_full(fd, p, (size_t)st.st_size, 0);
	if (ret < 0) {
		/* A file that shrank under us is as bad as a torn one. */
		if (ret == -ENODATA)
			ret = -EIO;
		goto out_free;
	}
	*buf = p;
	*len = (size_t)st.st_size;
	close(fd);
	return 0;

out_free:
	free(p);
out_close:
	close(fd);
	return ret;
}

void cfs_json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

uint64_t cfs_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void cfs_malloc_tune(void)
{
	/* 32 MiB is glibc's ceiling for the mmap threshold on 64-bit; the trim
	 * threshold keeps up to 1 GiB of freed heap (a few hundred chunks in
	 * flight at most, so in practice far less is held). */
	mallopt(M_MMAP_THRESHOLD, 32 << 20);
	mallopt(M_TRIM_THRESHOLD, 1 << 30);
}
