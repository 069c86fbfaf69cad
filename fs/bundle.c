/* SPDX-License-Identifier: MIT */
/*
 * cfs-mount --bundle DIR: an OCI runtime bundle on a cfs mount, for runc
 * and crun.  The image is mounted read-only at DIR/lower; DIR/rootfs is an
 * overlay of it with DIR/upper and DIR/work, so the container writes and
 * the image stays as it is; DIR/config.json is runc's default spec with
 * the process taken from the image config by the OCI image spec's
 * conversion rules (args = Entrypoint + Cmd, Env, WorkingDir, User
 * resolved through the image's own /etc/passwd and /etc/group).
 *
 * The image's files are read through the mount with RESOLVE_IN_ROOT, so a
 * symlinked /etc/passwd in the image cannot make us read the host's.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <jansson.h>

#include "util.h"

#include "fs.h"

#define BUNDLE_ETC_MAX (1u << 20) /* /etc/passwd or /etc/group */
#define BUNDLE_GROUPS_MAX 64
#define DEFAULT_PATH "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/* runc's default spec (`runc spec`, runc 1.1), not on a terminal, with a
 * writable root: the process is filled in from the image. */
static const char spec_template[] =
	"{\"ociVersion\":\"1.0.2-dev\","
	"\"process\":{\"terminal\":false,\"user\":{\"uid\":0,\"gid\":0},\"args\":[],\"env\":[],"
	"\"cwd\":\"/\",\"capabilities\":{"
	"\"bounding\":[\"CAP_AUDIT_WRITE\",\"CAP_KILL\",\"CAP_NET_BIND_SERVICE\"],"
	"\"effective\":[\"CAP_AUDIT_WRITE\",\"CAP_KILL\",\"CAP_NET_BIND_SERVICE\"],"
	"\"permitted\":[\"CAP_AUDIT_WRITE\",\"CAP_KILL\",\"CAP_NET_BIND_SERVICE\"],"
	"\"ambient\":[\"CAP_AUDIT_WRITE\",\"CAP_KILL\",\"CAP_NET_BIND_SERVICE\"]},"
	"\"rlimits\":[{\"type\":\"RLIMIT_NOFILE\",\"hard\":1024,\"soft\":1024}],"
	"\"noNewPrivileges\":true},"
	"\"root\":{\"path\":\"rootfs\",\"readonly\":false},"
	"\"hostname\":\"cfs\","
	"\"mounts\":["
	"{\"destination\":\"/proc\",\"type\":\"proc\",\"source\":\"proc\"},"
	"{\"destination\":\"/dev\",\"type\":\"tmpfs\",\"source\":\"tmpfs\","
	"\"options\":[\"nosuid\",\"strictatime\",\"mode=755\",\"size=65536k\"]},"
	"{\"destination\":\"/dev/pts\",\"type\":\"devpts\",\"source\":\"devpts\","
	"\"options\":[\"nosuid\",\"noexec\",\"newinstance\",\"ptmxmode=0666\",\"mode=0620\",\"gid=5\"]},"
	"{\"destination\":\"/dev/shm\",\"type\":\"tmpfs\",\"source\":\"shm\","
	"\"options\":[\"nosuid\",\"noexec\",\"nodev\",\"mode=1777\",\"size=65536k\"]},"
	"{\"destination\":\"/dev/mqueue\",\"type\":\"mqueue\",\"source\":\"mqueue\","
	"\"options\":[\"nosuid\",\"noexec\",\"nodev\"]},"
	"{\"destination\":\"/sys\",\"type\":\"sysfs\",\"source\":\"sysfs\","
	"\"options\":[\"nosuid\",\"noexec\",\"nodev\",\"ro\"]},"
	"{\"destination\":\"/sys/fs/cgroup\",\"type\":\"cgroup\",\"source\":\"cgroup\","
	"\"options\":[\"nosuid\",\"noexec\",\"nodev\",\"relatime\",\"ro\"]}],"
	"\"linux\":{\"resources\":{\"devices\":[{\"allow\":false,\"access\":\"rwm\"}]},"
	"\"namespaces\":[{\"type\":\"pid\"},{\"type\":\"network\"},{\"type\":\"ipc\"},"
	"{\"type\":\"uts\"},{\"type\":\"mount\"}],"
	"\"maskedPaths\":[\"/proc/acpi\",\"/proc/asound\",\"/proc/kcore\",\"/proc/keys\","
	"\"/proc/latency_stats\",\"/proc/timer_list\",\"/proc/timer_stats\",\"/proc/sched_debug\","
	"\"/sys/firmware\",\"/proc/scsi\"],"
	"\"readonlyPaths\":[\"/proc/bus\",\"/proc/fs\",\"/proc/irq\",\"/proc/sys\","
	"\"/proc/sysrq-trigger\"]}}";

/* A file of the image, read with every path resolved inside root: NULL
 * with *err -ENOENT when it is not there. */
static char *etc_read(int rootfd, const char *path, int *err)
{
	struct open_how how = { .flags = O_RDONLY | O_CLOEXEC | O_NOCTTY,
				.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS };
	struct stat sb;
	char *buf = NULL;
	int fd, ret;

	fd = (int)syscall(SYS_openat2, rootfd, path, &how, sizeof(how));
	if (fd < 0) {
		*err = -errno;
		return NULL;
	}
	if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode) || sb.st_size > BUNDLE_ETC_MAX) {
		*err = -EINVAL;
		goto out;
	}
	buf = malloc((size_t)sb.st_size + 1);
	if (!buf) {
		*err = -ENOMEM;
		goto out;
	}
	ret = cfs_pread_full(fd, buf, (size_t)sb.st_size, 0);
	if (ret < 0) {
		*err = ret;
		free(buf);
		buf = NULL;
		goto out;
	}
	buf[sb.st_size] = '\0';
out:
	close(fd);
	return buf;
}

/* Field i (from 0) of a colon-separated line into out; false if missing. */
static bool field(const char *line, size_t len, int i, char *out, size_t cap)
{
	const char *s = line, *end = line + len;

	for (; i > 0; i--) {
		s = memchr(s, ':', (size_t)(end - s));
		if (!s)
			return false;
		s++;
	}
	{
		const char *e = memchr(s, ':', (size_t)(end - s));
		size_t n = (size_t)((e ? e : end) - s);

		if (n >= cap)
			return false;
		memcpy(out, s, n);
		out[n] = '\0';
	}
	return true;
}

static bool numeric(const char *s, uint32_t *out)
{
	unsigned long v;

	return cfs_parse_uint(s, 0, UINT32_MAX, &v) == 0 && (*out = (uint32_t)v, true);
}

/* Finds in a passwd or group file the line whose name (field 0) or id
 * (field 2) is key; fills name and id. */
static bool etc_find(const char *file, const char *key, bool by_id, char *name, size_t cap,
		     uint32_t *id, uint32_t *gid)
{
	const char *line = file;

	while (line && *line) {
		const char *nl = strchr(line, '\n');
		size_t len = nl ? (size_t)(nl - line) : strlen(line);
		char f0[256], f2[32], f3[32];

		if (len && line[0] != '#' && field(line, len, 0, f0, sizeof(f0)) &&
		    field(line, len, 2, f2, sizeof(f2)) &&
		    !strcmp(by_id ? f2 : f0, key) && numeric(f2, id)) {
			snprintf(name, cap, "%s", f0);
			if (gid && !(field(line, len, 3, f3, sizeof(f3)) && numeric(f3, gid)))
				*gid = 0;
			return true;
		}
		line = nl ? nl + 1 : NULL;
	}
	return false;
}

/* The supplementary groups that list user as a member. */
static int etc_groups(const char *file, const char *user, uint32_t primary, json_t *out)
{
	const char *line = file;

	while (line && *line) {
		const char *nl = strchr(line, '\n');
		size_t len = nl ? (size_t)(nl - line) : strlen(line);
		char f2[32], members[4096];
		uint32_t gid;

		if (len && line[0] != '#' && field(line, len, 2, f2, sizeof(f2)) && numeric(f2, &gid) &&
		    gid != primary && field(line, len, 3, members, sizeof(members))) {
			for (char *save = NULL, *m = strtok_r(members, ",", &save); m;
			     m = strtok_r(NULL, ",", &save)) {
				if (!strcmp(m, user)) {
					if (json_array_size(out) >= BUNDLE_GROUPS_MAX)
						return 0;
					json_array_append_new(out, json_integer(gid));
					break;
				}
			}
		}
		line = nl ? nl + 1 : NULL;
	}
	return 0;
}

/* process.user from the image's User ("user", "uid", "user:group", ...). */
static int set_user(json_t *proc, const char *spec, int rootfd, char *err, size_t errlen)
{
	char user[256], group[256], name[256] = "";
	char *passwd = NULL, *groupf = NULL;
	uint32_t uid = 0, gid = 0, id;
	const char *colon = strchr(spec, ':');
	json_t *u, *extra;
	bool found = false;
	int e = 0, ret = -EINVAL;

	if (!*spec)
		return 0;
	snprintf(user, sizeof(user), "%.*s", colon ? (int)(colon - spec) : (int)strlen(spec), spec);
	snprintf(group, sizeof(group), "%s", colon ? colon + 1 : "");
	passwd = etc_read(rootfd, "/etc/passwd", &e);
	groupf = etc_read(rootfd, "/etc/group", &e);

	if (numeric(user, &uid)) {
		found = passwd && etc_find(passwd, user, true, name, sizeof(name), &id, &gid);
	} else {
		found = passwd && etc_find(passwd, user, false, name, sizeof(name), &uid, &gid);
		if (!found) {
			snprintf(err, errlen, "user '%s' is not in the image's /etc/passwd", user);
			goto out;
		}
	}
	if (!found)
		gid = 0;
	if (*group && !numeric(group, &gid)) {
		char gname[256];

		if (!groupf || !etc_find(groupf, group, false, gname, sizeof(gname), &gid, NULL)) {
			snprintf(err, errlen, "group '%s' is not in the image's /etc/group", group);
			goto out;
		}
	}
	u = json_pack("{s:I,s:I}", "uid", (json_int_t)uid, "gid", (json_int_t)gid);
	extra = json_array();
	if (!u || !extra) {
		json_decref(u);
		json_decref(extra);
		ret = -ENOMEM;
		goto out;
	}
	if (found && !*group && groupf)
		etc_groups(groupf, name, gid, extra);
	if (json_array_size(extra))
		json_object_set(u, "additionalGids", extra);
	json_decref(extra);
	json_object_set_new(proc, "user", u);
	ret = 0;
out:
	free(passwd);
	free(groupf);
	return ret;
}

/* Appends the strings of array src (if one) to dst. */
static void strings_append(json_t *dst, json_t *src)
{
	size_t i;
	json_t *v;

	json_array_foreach(src, i, v)
		if (json_is_string(v))
			json_array_append(dst, v);
}

int cfs_bundle_spec(const char *image_config, size_t len, int rootfd, char **out, char *err,
		    size_t errlen)
{
	json_t *spec = NULL, *img = NULL, *cfg = NULL, *proc, *args, *env, *ann, *v;
	json_error_t je;
	const char *key;
	bool has_path = false;
	size_t i;
	int ret = -EINVAL;

	*out = NULL;
	spec = json_loads(spec_template, 0, &je);
	if (!spec)
		return -ENOMEM;
	proc = json_object_get(spec, "process");
	args = json_object_get(proc, "args");
	env = json_object_get(proc, "env");
	if (image_config) {
		img = json_loadb(image_config, len, 0, &je);
		if (!img) {
			snprintf(err, errlen, "image config: bad JSON: %s", je.text);
			goto out;
		}
		cfg = json_object_get(img, "config");
	}
	strings_append(args, json_object_get(cfg, "Entrypoint"));
	strings_append(args, json_object_get(cfg, "Cmd"));
	if (!json_array_size(args)) {
		if (image_config) {
			snprintf(err, errlen, "the image config has neither Entrypoint nor Cmd");
			goto out;
		}
		json_array_append_new(args, json_string("sh")); /* no config: a shell */
	}
	json_array_foreach(json_object_get(cfg, "Env"), i, v) {
		if (json_is_string(v)) {
			json_array_append(env, v);
			has_path |= !strncmp(json_string_value(v), "PATH=", 5);
		}
	}
	if (!has_path)
		json_array_insert_new(env, 0, json_string(DEFAULT_PATH));
	v = json_object_get(cfg, "WorkingDir");
	if (json_is_string(v) && json_string_value(v)[0] == '/')
		json_object_set(proc, "cwd", v);
	v = json_object_get(cfg, "User");
	if (json_is_string(v)) {
		ret = set_user(proc, json_string_value(v), rootfd, err, errlen);
		if (ret < 0)
			goto out;
	}
	/* Labels and the rest the runtime has no field for, as annotations
	 * (the conversion rules' names). */
	ann = json_object();
	json_object_foreach(json_object_get(cfg, "Labels"), key, v)
		if (json_is_string(v))
			json_object_set(ann, key, v);
	v = json_object_get(cfg, "StopSignal");
	if (json_is_string(v))
		json_object_set(ann, "org.opencontainers.image.stopSignal", v);
	if (json_object_size(ann))
		json_object_set(spec, "annotations", ann);
	json_decref(ann);

	*out = json_dumps(spec, JSON_INDENT(2));
	ret = *out ? 0 : -ENOMEM;
out:
	json_decref(img);
	json_decref(spec);
	return ret;
}

int cfs_bundle_path(const char *dir, const char *name, char **out)
{
	return asprintf(out, "%s/%s", dir, name) < 0 ? -ENOMEM : 0;
}

static int mkdir_p(const char *path)
{
	return mkdir(path, 0700) < 0 && errno != EEXIST ? -errno : 0;
}

int cfs_bundle_prepare(const char *dir)
{
	static const char *const sub[] = { "lower", "upper", "work", "rootfs" };
	char *p;
	int ret;

	ret = mkdir_p(dir);
	if (ret < 0)
		return ret;
	for (size_t i = 0; i < sizeof(sub) / sizeof(sub[0]); i++) {
		ret = cfs_bundle_path(dir, sub[i], &p);
		if (ret == 0) {
			ret = mkdir_p(p);
			free(p);
		}
		if (ret < 0)
			return ret;
	}
	return 0;
}

int cfs_bundle_up(const char *dir, const char *spec, char *err, size_t errlen)
{
	char *lower = NULL, *upper = NULL, *work = NULL, *rootfs = NULL, *cfg = NULL, *tmp = NULL;
	char *opts = NULL;
	int fd, ret = -ENOMEM;

	if (cfs_bundle_path(dir, "lower", &lower) || cfs_bundle_path(dir, "upper", &upper) ||
	    cfs_bundle_path(dir, "work", &work) || cfs_bundle_path(dir, "rootfs", &rootfs) ||
	    cfs_bundle_path(dir, "config.json", &cfg) ||
	    cfs_bundle_path(dir, "config.json.tmp", &tmp) ||
	    asprintf(&opts, "lowerdir=%s,upperdir=%s,workdir=%s", lower, upper, work) < 0)
		goto out;
	/* overlayfs splits its options at commas and colons. */
	if (strpbrk(dir, ",:")) {
		snprintf(err, errlen, "%s: a bundle path cannot hold ',' or ':' (overlayfs)", dir);
		ret = -EINVAL;
		goto out;
	}
	/* The overlay's root takes the upper directory's owner and mode: give
	 * it the image's, or a container user could not even reach "/". */
	{
		struct stat sb;

		if (stat(lower, &sb) < 0 || chown(upper, sb.st_uid, sb.st_gid) < 0 ||
		    chmod(upper, sb.st_mode & 07777) < 0) {
			ret = -errno;
			snprintf(err, errlen, "%s: %s", upper, strerror(errno));
			goto out;
		}
	}
	if (mount("overlay", rootfs, "overlay", 0, opts) < 0) {
		ret = -errno;
		snprintf(err, errlen, "overlay mount on %s: %s", rootfs, strerror(errno));
		goto out;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	ret = fd < 0 ? -errno : cfs_write_full(fd, spec, strlen(spec));
	if (fd >= 0 && close(fd) < 0 && ret == 0)
		ret = -errno;
	if (ret == 0 && rename(tmp, cfg) < 0)
		ret = -errno;
	if (ret < 0) {
		snprintf(err, errlen, "%s: %s", cfg, cfs_strerror(ret));
		unlink(tmp);
		umount2(rootfs, MNT_DETACH);
	}
out:
	free(lower);
	free(upper);
	free(work);
	free(rootfs);
	free(cfg);
	free(tmp);
	free(opts);
	return ret;
}

int cfs_bundle_down(const char *dir, char *err, size_t errlen)
{
	static const char *const trees[] = { "upper", "work" };
	char *p = NULL;
	int ret;

	/* The overlay first: it holds the cfs mount. */
	if (cfs_bundle_path(dir, "rootfs", &p) < 0)
		return -ENOMEM;
	if (umount2(p, 0) < 0 && errno != EINVAL && errno != ENOENT) {
		ret = -errno;
		snprintf(err, errlen, "%s: %s (is a container still running on it?)", p,
			 strerror(errno));
		free(p);
		return ret;
	}
	rmdir(p);
	free(p);
	if (cfs_bundle_path(dir, "lower", &p) < 0)
		return -ENOMEM;
	if (umount2(p, 0) < 0 && errno != EINVAL && errno != ENOENT) {
		ret = -errno;
		snprintf(err, errlen, "%s: %s", p, strerror(errno));
		free(p);
		return ret;
	}
	rmdir(p);
	free(p);
	for (size_t i = 0; i < sizeof(trees) / sizeof(trees[0]); i++) {
		if (cfs_bundle_path(dir, trees[i], &p) < 0)
			return -ENOMEM;
		ret = cfs_rm_tree(p);
		if (ret < 0) {
			snprintf(err, errlen, "%s: %s", p, cfs_strerror(ret));
			free(p);
			return ret;
		}
		free(p);
	}
	if (cfs_bundle_path(dir, "config.json", &p) < 0)
		return -ENOMEM;
	unlink(p);
	free(p);
	rmdir(dir); /* only if nothing else is left in it */
	return 0;
}
