/* SPDX-License-Identifier: MIT */
/*
 * cfs-mount --layer-store: containers/storage's additional layer store
 * (docs/LAYER-STORE.md) over FUSE, for podman and CRI-O.  The engine looks
 * up ROOT/<base64 of the image reference>/sha256:<blob hex>/, stats diff,
 * info and blob there, creates "use" and removes the layer directory (both
 * answered ENOENT, which it takes for "fine").  Nothing lists anything, so
 * every name appears on lookup only and every directory reads empty.
 *
 * A layer is cfs-pack's layer record (lib/format/layer.h), read from the
 * store at each lookup of its directory.  The reference plays no part
 * (digests are content addresses, so a layer is served under any image
 * that names it), and no negative entry is ever cached, so a layer packed
 * later is found at the next pull.  info is made from the record; blob has
 * the compressed size but no bytes (cfs keeps the tree, not the blob);
 * diff is a symlink to an ordinary cfs mount of the layer's own image,
 * DIR/<its hex> under --layer-mounts, started on the first lookup of diff
 * (this program run again, as stargz-store mounts each layer on its own)
 * and waited for, so that the kernel's overlay stacks mounts with
 * everything an image mount has: cache, fetcher, trust, prefetch, holder.
 * They are daemons of their own: they outlive this one, which uses one it
 * finds mounted again.
 *
 * Inodes: the root is 1; every other name looked up gets a node, numbered
 * by its slot and freed when the kernel forgets it.  One mutex guards the
 * nodes and the list of mounts being started; no lock is held while a
 * mount starts or the store is read.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "layer.h"
#include "store.h"
#include "util.h"

#include "mount_i.h"

#define LS_TIMEOUT 1.0   /* positive entries and attributes, seconds */
#define LS_INO_FIRST 2   /* the first node's inode number */
#define LS_REF_MAX 255   /* bytes of a decoded image reference */
#define LS_INFO_MAX 512  /* an info file's JSON */
#define LS_ERR_MAX 1024  /* what a failed layer mount printed, logged */

extern char **environ;

enum ls_kind { LS_ROOT, LS_REF, LS_LAYER, LS_INFO, LS_BLOB, LS_DIFF };

struct ls_node {
	enum ls_kind kind;
	fuse_ino_t parent;
	char *name;
	uint64_t nlookup;
	cfs_digest blob;          /* LS_LAYER and below: the layer blob's digest */
	struct cfs_layer_rec rec; /* and its record, as last looked up */
};

/* A layer mount being started: lookups of the same image wait for it. */
struct ls_start {
	cfs_digest image;
	int ret;
	bool done;
	unsigned refs;
	struct ls_start *next;
};

struct cfs_layerstore {
	struct cfs_store *store;  /* borrowed: the daemon's fs->store */
	char *mounts;             /* --layer-mounts, absolute and resolved */
	char **argv;              /* a layer mount's command line but IMAGE MOUNTPOINT */
	size_t argc;
	char **envp;              /* the environment, without the holder's */
	uid_t uid;
	gid_t gid;
	struct timespec t0;       /* every node's times */
	pthread_mutex_t lock;
	pthread_cond_t started;   /* an ls_start is done */
	struct ls_node root;
	struct ls_node **nodes;   /* by ino - LS_INO_FIRST; NULL: free */
	size_t n_nodes;
	struct ls_start *starting;
};

static struct cfs_layerstore *ls_of(fuse_req_t req)
{
	return ((struct cfs_fs *)fuse_req_userdata(req))->layers;
}

/* ---- names ---------------------------------------------------------- */

static int b64_value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	return c == '+' ? 62 : c == '/' ? 63 : -1;
}

/* Standard base64 with its padding, canonical (the unused bits zero), into
 * out[cap]: the decoded length, or -1. */
static int b64_decode(const char *s, char *out, size_t cap)
{
	size_t len = strlen(s), n = 0;

	if (len == 0 || len % 4)
		return -1;
	for (size_t i = 0; i < len; i += 4) {
		unsigned pad = 0, bytes;
		uint32_t w = 0;

		for (unsigned j = 0; j < 4; j++) {
			int v = s[i + j] == '=' ? 0 : b64_value(s[i + j]);

			if (s[i + j] == '=') {
				if (i + 4 != len || j < 2)
					return -1;
				pad++;
			} else if (pad || v < 0) {
				return -1;
			}
			w = w << 6 | (uint32_t)v;
		}
		if ((pad == 2 && (w & 0xffff)) || (pad == 1 && (w & 0xff)))
			return -1;
		bytes = 3 - pad;
		if (n + bytes > cap)
			return -1;
		out[n++] = (char)(w >> 16);
		if (bytes > 1)
			out[n++] = (char)(w >> 8);
		if (bytes > 2)
			out[n++] = (char)w;
	}
	return (int)n;
}

/* A name of the root: the base64 of something that could be an image
 * reference (registry/name:tag, name@sha256:...).  Nothing is fetched:
 * whatever it names, the layers are the store's. */
static bool ref_name_ok(const char *name)
{
	char ref[LS_REF_MAX];
	int n = b64_decode(name, ref, sizeof(ref));

	if (n <= 0 || !((ref[0] >= 'a' && ref[0] <= 'z') || (ref[0] >= 'A' && ref[0] <= 'Z') ||
			(ref[0] >= '0' && ref[0] <= '9')))
		return false;
	for (int i = 0; i < n; i++) {
		char c = ref[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      strchr("._-/:@", c)))
			return false;
	}
	return true;
}

/* A name of a reference's directory: "sha256:<64 lower-case hex>". */
static bool layer_name(const char *name, cfs_digest *out)
{
	char ref[CFS_REF_STRLEN];

	if (cfs_digest_parse(name, false, out) < 0)
		return false;
	cfs_digest_ref(out, ref);
	return !strcmp(ref, name);
}

/* ---- what a layer is -------------------------------------------------- */

/* The layer's record in the store: 0, -ENOENT when it has none, -EIO
 * (logged) when the store fails or the record is corrupt. */
static int layer_record(struct cfs_layerstore *ls, const char *name, const cfs_digest *blob,
			struct cfs_layer_rec *rec)
{
	void *buf;
	size_t len;
	int ret;

	ret = cfs_store_image_file_get(ls->store, CFS_LAYER_RECORD, blob, CFS_LAYER_REC_MAX, &buf,
				       &len);
	if (ret == -ENOENT)
		return ret;
	if (ret < 0) {
		cfs_err("layer %s: reading its record: %s", name, cfs_strerror(ret));
		return -EIO;
	}
	ret = cfs_layer_rec_parse(buf, len, rec);
	free(buf);
	if (ret < 0) {
		cfs_err("layer %s: its record (layers/%s) is corrupt: %s", name, name + 7,
			cfs_strerror(ret));
		return -EIO;
	}
	return 0;
}

/* containers/storage's archive.Compression: Uncompressed 0, Gzip 2, Zstd 4. */
static int storage_compression(enum cfs_layer_comp c)
{
	return c == CFS_LAYER_GZIP ? 2 : c == CFS_LAYER_ZSTD ? 4 : 0;
}

/* info: the storage.Layer JSON that podman decodes.  Its length. */
static size_t info_json(const struct ls_node *n, char *buf, size_t cap)
{
	char blob[CFS_REF_STRLEN], diff_id[CFS_REF_STRLEN];
	int len;

	cfs_digest_ref(&n->blob, blob);
	cfs_digest_ref(&n->rec.diff_id, diff_id);
	len = snprintf(buf, cap,
		       "{\"compressed-diff-digest\":\"%s\",\"compressed-size\":%" PRIu64
		       ",\"diff-digest\":\"%s\",\"diff-size\":%" PRIu64 ",\"compression\":%d}\n",
		       blob, n->rec.size, diff_id, n->rec.diff_size,
		       storage_compression(n->rec.comp));
	return len < 0 ? 0 : CFS_MIN((size_t)len, cap - 1);
}

/* The layer mount of an image: MOUNTS/<hex>, into out[PATH_MAX]. */
static void mount_path(const struct cfs_layerstore *ls, const cfs_digest *image, char *out)
{
	char hex[CFS_DIGEST_HEX_LEN + 1];

	cfs_digest_hex(image, hex);
	snprintf(out, PATH_MAX, "%s/%s", ls->mounts, hex);
}

/* ---- layer mounts ----------------------------------------------------- */

/* 1 when a live cfs mount is at mp, 0 when none is (one whose daemons are
 * gone was taken away), or -errno (logged). */
static int mount_live(const char *mp)
{
	char type[64];
	struct stat st;
	int ret;

	ret = cfs_mountinfo_find(mp, NULL, NULL, type, sizeof(type));
	if (ret == -ENOENT)
		return 0;
	if (ret < 0) {
		cfs_err("layer mount %s: /proc/self/mountinfo: %s", mp, cfs_strerror(ret));
		return ret;
	}
	if (strcmp(type, "fuse.cfs")) {
		cfs_err("layer mount %s: a %s mount is there, not cfs's", mp, type);
		return -EEXIST;
	}
	if (stat(mp, &st) == 0)
		return 1;
	ret = -errno;
	cfs_warn("layer mount %s: %s: unmounting it to mount it again", mp, strerror(-ret));
	if (umount2(mp, MNT_DETACH) < 0) {
		ret = -errno;
		cfs_err("layer mount %s: unmounting: %s", mp, strerror(-ret));
		return ret;
	}
	return 0;
}

/* cfs-mount [options] STORE IMAGE MP, in the background as any mount:
 * the command returns once the mount serves.  0, or -EIO with what it
 * printed logged. */
static int mount_spawn(struct cfs_layerstore *ls, char *image, char *mp)
{
	posix_spawn_file_actions_t fa;
	char *exe;
	posix_spawnattr_t at;
	sigset_t none, def;
	char err[LS_ERR_MAX], **argv;
	int p[2], status = 0, ret;
	ssize_t n;
	pid_t pid;

	argv = calloc(ls->argc + 3, sizeof(*argv));
	if (!argv)
		return -ENOMEM;
	memcpy(argv, ls->argv, ls->argc * sizeof(*argv));
	argv[ls->argc] = image;
	argv[ls->argc + 1] = mp;
	if (pipe2(p, O_CLOEXEC) < 0) {
		ret = -errno;
		free(argv);
		return ret;
	}
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDWR, 0);
	posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_RDWR, 0);
	posix_spawn_file_actions_adddup2(&fa, p[1], STDERR_FILENO);
	posix_spawnattr_init(&at);
	sigemptyset(&none);
	sigemptyset(&def);
	for (int sig = 1; sig < NSIG; sig++)
		if (sig != SIGKILL && sig != SIGSTOP)
			sigaddset(&def, sig);
	posix_spawnattr_setsigmask(&at, &none);
	posix_spawnattr_setsigdefault(&at, &def);
	posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
	/* By its path, not /proc/self/exe: the name ps and pgrep show, and
	 * the binary an upgrade installed. */
	exe = cfs_mount_self_exe();
	ret = -posix_spawn(&pid, exe ? exe : "/proc/self/exe", &fa, &at, argv, ls->envp);
	free(exe);
	posix_spawnattr_destroy(&at);
	posix_spawn_file_actions_destroy(&fa);
	free(argv);
	close(p[1]);
	if (ret == 0) {
		while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
			;
		/* It is done: what it wrote is in the pipe, and nothing of it
		 * that lives on holds the pipe (its daemons let go of stderr
		 * before they said they serve). */
		fcntl(p[0], F_SETFL, O_NONBLOCK);
		n = read(p[0], err, sizeof(err) - 1);
		err[n > 0 ? n : 0] = '\0';
		while (n > 0 && err[n - 1] == '\n')
			err[--n] = '\0';
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			cfs_err("layer mount %s of %s failed (%s %d): %s", mp, image,
				WIFEXITED(status) ? "status" : "signal",
				WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status),
				err[0] ? err : "no message");
			ret = -EIO;
		}
	} else {
		cfs_err("layer mount %s of %s: cannot run cfs-mount: %s", mp, image, strerror(-ret));
	}
	close(p[0]);
	return ret < 0 ? -EIO : 0;
}

/* Makes sure the layer mount of image serves: the one there, or a new one. */
static int mount_start(struct cfs_layerstore *ls, const cfs_digest *image)
{
	char mp[PATH_MAX], ref[CFS_REF_STRLEN];
	int ret;

	mount_path(ls, image, mp);
	cfs_digest_ref(image, ref);
	if (mkdir(mp, 0755) < 0 && errno != EEXIST) {
		ret = -errno;
		cfs_err("layer mount %s: %s", mp, strerror(-ret));
		return -EIO;
	}
	ret = mount_live(mp);
	if (ret != 0)
		return ret < 0 ? -EIO : 0;
	cfs_info("mounting layer image %s at %s", ref, mp);
	ret = mount_spawn(ls, ref, mp);
	if (ret == 0 && mount_live(mp) != 1) {
		cfs_err("layer mount %s of %s: cfs-mount returned, but nothing serves there", mp, ref);
		ret = -EIO;
	}
	return ret;
}

/* mount_start(), once at a time for an image: lookups of the same layer
 * meanwhile wait for the one that starts it. */
static int mount_layer(struct cfs_layerstore *ls, const cfs_digest *image)
{
	struct ls_start *s, **pp;
	int ret;

	pthread_mutex_lock(&ls->lock);
	for (s = ls->starting; s && !cfs_digest_eq(&s->image, image); s = s->next)
		;
	if (s) {
		s->refs++;
		while (!s->done)
			pthread_cond_wait(&ls->started, &ls->lock);
		ret = s->ret;
		if (--s->refs == 0)
			free(s);
		pthread_mutex_unlock(&ls->lock);
		return ret;
	}
	s = calloc(1, sizeof(*s));
	if (!s) {
		pthread_mutex_unlock(&ls->lock);
		return -ENOMEM;
	}
	s->image = *image;
	s->refs = 1;
	s->next = ls->starting;
	ls->starting = s;
	pthread_mutex_unlock(&ls->lock);

	ret = mount_start(ls, image);

	pthread_mutex_lock(&ls->lock);
	for (pp = &ls->starting; *pp != s; pp = &(*pp)->next)
		;
	*pp = s->next;
	s->ret = ret;
	s->done = true;
	pthread_cond_broadcast(&ls->started);
	if (--s->refs == 0)
		free(s);
	pthread_mutex_unlock(&ls->lock);
	return ret;
}

/* ---- nodes ---------------------------------------------------------- */

/* Under the lock. */
static struct ls_node *node_get(struct cfs_layerstore *ls, fuse_ino_t ino)
{
	if (ino == FUSE_ROOT_ID)
		return &ls->root;
	if (ino < LS_INO_FIRST || ino - LS_INO_FIRST >= ls->n_nodes)
		return NULL;
	return ls->nodes[ino - LS_INO_FIRST];
}

/* The node of parent/name, now as want says, with one more lookup: an
 * existing one, or a new one.  Under the lock.  Its inode number, or 0
 * (ENOMEM). */
static fuse_ino_t node_ref(struct cfs_layerstore *ls, fuse_ino_t parent, const char *name,
			   const struct ls_node *want)
{
	struct ls_node *n;
	size_t i, slot = ls->n_nodes;

	for (i = 0; i < ls->n_nodes; i++) {
		n = ls->nodes[i];
		if (!n) {
			slot = CFS_MIN(slot, i);
		} else if (n->parent == parent && !strcmp(n->name, name)) {
			n->kind = want->kind;
			n->blob = want->blob;
			n->rec = want->rec;
			n->nlookup++;
			return i + LS_INO_FIRST;
		}
	}
	if (slot == ls->n_nodes) {
		size_t cap = ls->n_nodes ? ls->n_nodes * 2 : 64;
		struct ls_node **p = realloc(ls->nodes, cap * sizeof(*p));

		if (!p)
			return 0;
		memset(p + ls->n_nodes, 0, (cap - ls->n_nodes) * sizeof(*p));
		ls->nodes = p;
		ls->n_nodes = cap;
	}
	n = malloc(sizeof(*n));
	if (!n || !(n->name = strdup(name))) {
		free(n);
		return 0;
	}
	*n = (struct ls_node){ .kind = want->kind, .parent = parent, .name = n->name,
			       .nlookup = 1, .blob = want->blob, .rec = want->rec };
	ls->nodes[slot] = n;
	return slot + LS_INO_FIRST;
}

static void node_forget(struct cfs_layerstore *ls, fuse_ino_t ino, uint64_t nlookup)
{
	struct ls_node *n;

	pthread_mutex_lock(&ls->lock);
	n = ino == FUSE_ROOT_ID ? NULL : node_get(ls, ino);
	if (n) {
		n->nlookup -= CFS_MIN(nlookup, n->nlookup);
		if (n->nlookup == 0) {
			ls->nodes[ino - LS_INO_FIRST] = NULL;
			free(n->name);
			free(n);
		}
	}
	pthread_mutex_unlock(&ls->lock);
}

static void node_stat(struct cfs_layerstore *ls, const struct ls_node *n, fuse_ino_t ino,
		      struct stat *st)
{
	char buf[LS_INFO_MAX], mp[PATH_MAX];

	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	st->st_uid = ls->uid;
	st->st_gid = ls->gid;
	st->st_atim = st->st_mtim = st->st_ctim = ls->t0;
	st->st_blksize = 4096;
	switch (n->kind) {
	case LS_INFO:
		st->st_mode = S_IFREG | 0444;
		st->st_size = (off_t)info_json(n, buf, sizeof(buf));
		break;
	case LS_BLOB:
		st->st_mode = S_IFREG | 0444;
		st->st_size = (off_t)n->rec.size;
		break;
	case LS_DIFF:
		mount_path(ls, &n->rec.image, mp);
		st->st_mode = S_IFLNK | 0777;
		st->st_size = (off_t)strlen(mp);
		break;
	default:
		st->st_mode = S_IFDIR | 0555;
		break;
	}
	st->st_nlink = S_ISDIR(st->st_mode) ? 2 : 1;
	st->st_blocks = (st->st_size + 511) / 512;
}

/* A copy of the node of ino, for use without the lock: 0 or -ESTALE. */
static int node_copy(struct cfs_layerstore *ls, fuse_ino_t ino, struct ls_node *out)
{
	struct ls_node *n;

	pthread_mutex_lock(&ls->lock);
	n = node_get(ls, ino);
	if (n) {
		*out = *n;
		out->name = NULL;
	}
	pthread_mutex_unlock(&ls->lock);
	return n ? 0 : -ESTALE;
}

/* ---- the operations ----------------------------------------------------- */

/* What name is in the directory p: want filled, or -errno. */
static int lookup_child(struct cfs_layerstore *ls, const struct ls_node *p, const char *name,
			struct ls_node *want)
{
	int ret;

	memset(want, 0, sizeof(*want));
	switch (p->kind) {
	case LS_ROOT:
		want->kind = LS_REF;
		return ref_name_ok(name) ? 0 : -ENOENT;
	case LS_REF:
		want->kind = LS_LAYER;
		if (!layer_name(name, &want->blob))
			return -ENOENT;
		return layer_record(ls, name, &want->blob, &want->rec);
	case LS_LAYER:
		want->blob = p->blob;
		want->rec = p->rec;
		if (!strcmp(name, "info")) {
			want->kind = LS_INFO;
		} else if (!strcmp(name, "blob")) {
			want->kind = LS_BLOB;
		} else if (!strcmp(name, "diff")) {
			/* The kernel follows the link at once (podman's stat, the
			 * overlay's lowerdir): its target must serve first. */
			want->kind = LS_DIFF;
			ret = mount_layer(ls, &p->rec.image);
			if (ret < 0)
				return -EIO;
		} else {
			return -ENOENT; /* "use" included: see op_create() */
		}
		return 0;
	default:
		return -ENOTDIR;
	}
}

static int do_lookup(struct cfs_layerstore *ls, fuse_ino_t parent, const char *name,
		     struct fuse_entry_param *e)
{
	struct ls_node p, want;
	fuse_ino_t ino;
	int ret;

	ret = node_copy(ls, parent, &p);
	if (ret < 0)
		return ret;
	ret = lookup_child(ls, &p, name, &want);
	if (ret < 0)
		return ret;
	memset(e, 0, sizeof(*e));
	pthread_mutex_lock(&ls->lock);
	ino = node_ref(ls, parent, name, &want);
	if (ino)
		node_stat(ls, &want, ino, &e->attr);
	pthread_mutex_unlock(&ls->lock);
	if (!ino)
		return -ENOMEM;
	e->ino = ino;
	e->generation = 1;
	e->attr_timeout = LS_TIMEOUT;
	e->entry_timeout = LS_TIMEOUT;
	return 0;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param e;
	int ret = do_lookup(ls_of(req), parent, name, &e);

	/* An error, ENOENT included, leaves no negative entry in the kernel. */
	if (ret < 0)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_entry(req, &e);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	node_forget(ls_of(req), ino, nlookup);
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	for (size_t i = 0; i < count; i++)
		node_forget(ls_of(req), forgets[i].ino, forgets[i].nlookup);
	fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct cfs_layerstore *ls = ls_of(req);
	struct ls_node n;
	struct stat st;

	(void)fi;
	if (node_copy(ls, ino, &n) < 0) {
		fuse_reply_err(req, ESTALE);
		return;
	}
	node_stat(ls, &n, ino, &st);
	fuse_reply_attr(req, &st, LS_TIMEOUT);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct cfs_layerstore *ls = ls_of(req);
	char mp[PATH_MAX];
	struct ls_node n;

	if (node_copy(ls, ino, &n) < 0) {
		fuse_reply_err(req, ESTALE);
	} else if (n.kind != LS_DIFF) {
		fuse_reply_err(req, EINVAL);
	} else {
		mount_path(ls, &n.rec.image, mp);
		fuse_reply_readlink(req, mp);
	}
}

static int do_opendir(struct cfs_layerstore *ls, fuse_ino_t ino)
{
	struct ls_node n;
	int ret = node_copy(ls, ino, &n);

	if (ret < 0)
		return ret;
	return n.kind == LS_ROOT || n.kind == LS_REF || n.kind == LS_LAYER ? 0 : -ENOTDIR;
}

static void reply_open(fuse_req_t req, int ret, struct fuse_file_info *fi)
{
	if (ret < 0)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_open(req, fi);
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	reply_open(req, do_opendir(ls_of(req), ino), fi);
}

/* Every directory lists "." and ".." only: names appear on lookup. */
static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	char buf[256];
	struct stat st = { .st_ino = ino, .st_mode = S_IFDIR };
	size_t cap = CFS_MIN(size, sizeof(buf)), n = 0, m;

	(void)fi;
	if (off == 0) {
		n = fuse_add_direntry(req, buf, cap, ".", &st, 1);
		st.st_ino = FUSE_ROOT_ID; /* "..": the kernel knows better anyway */
		m = n <= cap ? fuse_add_direntry(req, buf + n, cap - n, "..", &st, 2) : 0;
		n = n > cap ? 0 : n + m > cap ? n : n + m;
	}
	fuse_reply_buf(req, buf, n);
}

static int do_open(struct cfs_layerstore *ls, fuse_ino_t ino, struct fuse_file_info *fi)
{
	char blob[CFS_REF_STRLEN];
	struct ls_node n;
	int ret = node_copy(ls, ino, &n);

	if (ret < 0)
		return ret;
	if (n.kind != LS_INFO && n.kind != LS_BLOB)
		return n.kind == LS_DIFF ? -ELOOP : -EISDIR;
	if ((fi->flags & O_ACCMODE) != O_RDONLY)
		return -EROFS;
	/* Read through here, not the page cache: a record may change under
	 * the same node, and blob has nothing to cache. */
	fi->direct_io = 1;
	if (n.kind == LS_BLOB) {
		cfs_digest_ref(&n.blob, blob);
		cfs_warn("layer %s: blob read, but cfs keeps the layer's tree, not its compressed "
			 "bytes: podman save and push need the original blob (pull the image "
			 "without the layer store for them)", blob);
	}
	return 0;
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	reply_open(req, do_open(ls_of(req), ino, fi), fi);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct cfs_layerstore *ls = ls_of(req);
	char buf[LS_INFO_MAX];
	struct ls_node n;
	size_t len;

	(void)fi;
	if (node_copy(ls, ino, &n) < 0) {
		fuse_reply_err(req, ESTALE);
		return;
	}
	if (n.kind != LS_INFO) {
		fuse_reply_err(req, n.kind == LS_BLOB ? EIO : EISDIR);
		return;
	}
	len = info_json(&n, buf, sizeof(buf));
	if (off < 0 || (uint64_t)off >= len)
		fuse_reply_buf(req, NULL, 0);
	else
		fuse_reply_buf(req, buf + off, CFS_MIN(size, len - (size_t)off));
}

/* containers/storage creates <layer>/use to say it uses the layer and
 * takes ENOENT for "noted"; anything else is logged as a warning.  Without
 * a create op the kernel would try mknod and open instead, every time. */
static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      struct fuse_file_info *fi)
{
	struct ls_node p;

	(void)mode;
	(void)fi;
	if (node_copy(ls_of(req), parent, &p) == 0 && p.kind == LS_LAYER && !strcmp(name, "use"))
		fuse_reply_err(req, ENOENT);
	else
		fuse_reply_err(req, EROFS);
}

/* ...and removes the layer's directory when done with it: ENOENT again. */
static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct ls_node p;

	(void)name;
	if (node_copy(ls_of(req), parent, &p) == 0 && p.kind == LS_REF)
		fuse_reply_err(req, ENOENT);
	else
		fuse_reply_err(req, EROFS);
}

/* No xattrs at all: the layers' own are in their mounts. */
static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	(void)ino;
	(void)name;
	(void)size;
	fuse_reply_err(req, ENODATA);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	(void)ino;
	if (size == 0)
		fuse_reply_xattr(req, 0);
	else
		fuse_reply_buf(req, NULL, 0);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs sv = { .f_bsize = 4096, .f_frsize = 4096, .f_namemax = 255,
			      .f_flag = ST_RDONLY };

	(void)ino;
	fuse_reply_statfs(req, &sv);
}

const struct fuse_lowlevel_ops cfs_layerstore_ops = {
	.lookup = op_lookup,
	.forget = op_forget,
	.forget_multi = op_forget_multi,
	.getattr = op_getattr,
	.readlink = op_readlink,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.open = op_open,
	.read = op_read,
	.create = op_create,
	.rmdir = op_rmdir,
	.statfs = op_statfs,
	.getxattr = op_getxattr,
	.listxattr = op_listxattr,
	.setattr = cfs_ro_setattr,
	.mknod = cfs_ro_mknod,
	.mkdir = cfs_ro_mkdir,
	.unlink = cfs_ro_unlink,
	.symlink = cfs_ro_symlink,
	.rename = cfs_ro_rename,
	.link = cfs_ro_link,
	.write = cfs_ro_write,
	.setxattr = cfs_ro_setxattr,
	.removexattr = cfs_ro_removexattr,
	.fallocate = cfs_ro_fallocate,
};

/* ---- start-up ------------------------------------------------------------ */

/* mkdir -p path (absolute), 0755. */
static int mkdir_p(const char *path)
{
	char buf[PATH_MAX];
	size_t len = strlen(path);

	if (len >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, path, len + 1);
	for (char *p = buf + 1;; p++) {
		if (*p == '/' || !*p) {
			char c = *p;

			*p = '\0';
			if (mkdir(buf, 0755) < 0 && errno != EEXIST)
				return -errno;
			if (!c)
				return 0;
			*p = c;
		}
	}
}

/* --layer-mounts, or the default; made, resolved. */
static int mounts_dir(const struct cfs_mount_args *a, char **out)
{
	const char *run = getenv("XDG_RUNTIME_DIR");
	char *dir = NULL;
	int ret;

	if (a->layer_mounts) {
		dir = cfs_mount_abs_path(a->layer_mounts);
	} else if (geteuid() == 0) {
		dir = strdup(CFS_LAYER_MOUNTS_ROOT);
	} else if (run && run[0] == '/') {
		if (asprintf(&dir, "%s/cfs/layer-mounts", run) < 0)
			dir = NULL;
	} else {
		fprintf(stderr, PROG ": --layer-store: no $XDG_RUNTIME_DIR: give --layer-mounts "
			"DIR\n");
		return -EINVAL;
	}
	if (!dir) {
		fprintf(stderr, PROG ": %s\n", strerror(ENOMEM));
		return -ENOMEM;
	}
	ret = mkdir_p(dir);
	*out = ret == 0 ? realpath(dir, NULL) : NULL;
	if (ret == 0 && !*out)
		ret = -errno;
	if (ret < 0)
		fprintf(stderr, PROG ": --layer-mounts %s: %s\n", dir, strerror(-ret));
	free(dir);
	return ret;
}

/* A path-valued option, as the layer mounts (started from /) need it. */
static bool path_option(const char *name)
{
	static const char *const paths[] = { "cache", "ca-file", "trust", "log", "learn-to" };

	for (size_t i = 0; i < CFS_ARRAY_SIZE(paths); i++)
		if (!strcmp(name, paths[i]))
			return true;
	return false;
}

/* A layer mount's command line: cfs-mount, the options this daemon was
 * given for them, -o allow_other,dev,suid (as root), STORE; IMAGE and the
 * mount point follow. */
static int mount_argv(struct cfs_layerstore *ls, const struct cfs_mount_args *a,
		      const char *store_abs)
{
	size_t max = 1 + a->n_fwd + (size_t)a->verbose + 3;
	char *v;

	ls->argv = calloc(max, sizeof(*ls->argv));
	if (!ls->argv)
		return -ENOMEM;
	ls->argv[ls->argc++] = strdup(PROG);
	for (unsigned i = 0; i < a->n_fwd; i++) {
		const struct cfs_mount_fwd *f = &a->fwd[i];
		char *val = f->value && path_option(f->name) ? cfs_mount_abs_path(f->value) :
			    f->value ? strdup(f->value) : NULL;

		if (f->value && !val)
			return -ENOMEM;
		if (asprintf(&v, "--%s%s%s", f->name, val ? "=" : "", val ? val : "") < 0)
			v = NULL;
		free(val);
		ls->argv[ls->argc++] = v;
	}
	for (int i = 0; i < a->verbose; i++)
		ls->argv[ls->argc++] = strdup("-v");
	/* The overlay's lower layers: devices and set-uid files as they are,
	 * for every user of the container. */
	ls->argv[ls->argc++] = strdup("-o");
	ls->argv[ls->argc++] = strdup(geteuid() == 0 ? "allow_other,dev,suid" :
				      a->allow_other ? "allow_other" : "default_permissions");
	ls->argv[ls->argc++] = strdup(store_abs);
	for (size_t i = 0; i < ls->argc; i++)
		if (!ls->argv[i])
			return -ENOMEM;
	return 0;
}

/* The environment without what a holder gave this daemon: a layer mount
 * is a mount of its own. */
static int mount_env(struct cfs_layerstore *ls)
{
	size_t n = 0, k = 0;

	while (environ[n])
		n++;
	ls->envp = calloc(n + 1, sizeof(*ls->envp));
	if (!ls->envp)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		if (!strncmp(environ[i], "CFS_SERVE_", 10) ||
		    !strncmp(environ[i], CFS_HOLDER_RESUME_ENV "=", strlen(CFS_HOLDER_RESUME_ENV) + 1))
			continue;
		ls->envp[k] = strdup(environ[i]);
		if (!ls->envp[k++])
			return -ENOMEM;
	}
	return 0;
}

int cfs_layerstore_open(const struct cfs_mount_args *a, const char *store_abs, struct cfs_fs *fs)
{
	struct cfs_layerstore *ls;
	char msg[1024];
	int ret;

	ls = calloc(1, sizeof(*ls));
	if (!ls) {
		fprintf(stderr, PROG ": %s\n", strerror(ENOMEM));
		return -ENOMEM;
	}
	pthread_mutex_init(&ls->lock, NULL);
	pthread_cond_init(&ls->started, NULL);
	ls->root.kind = LS_ROOT;
	ls->uid = geteuid();
	ls->gid = getegid();
	clock_gettime(CLOCK_REALTIME, &ls->t0);
	fs->layers = ls;
	ret = mounts_dir(a, &ls->mounts);
	if (ret < 0)
		return ret;
	ret = mount_argv(ls, a, store_abs);
	if (ret == 0)
		ret = mount_env(ls);
	if (ret < 0) {
		fprintf(stderr, PROG ": %s\n", strerror(-ret));
		return ret;
	}
	ret = cfs_open_store(&a->open, store_abs, 0, &fs->store, msg, sizeof(msg));
	if (ret < 0) {
		fprintf(stderr, PROG ": %s\n", msg);
		return ret;
	}
	ls->store = fs->store;
	cfs_info("layer store %s: layer mounts in %s", store_abs, ls->mounts);
	return 0;
}

void cfs_layerstore_free(struct cfs_layerstore *ls)
{
	struct ls_start *s, *next;

	if (!ls)
		return;
	for (size_t i = 0; i < ls->n_nodes; i++) {
		if (ls->nodes[i])
			free(ls->nodes[i]->name);
		free(ls->nodes[i]);
	}
	free(ls->nodes);
	for (s = ls->starting; s; s = next) {
		next = s->next;
		free(s);
	}
	for (size_t i = 0; ls->argv && i < ls->argc; i++)
		free(ls->argv[i]);
	free(ls->argv);
	for (size_t i = 0; ls->envp && ls->envp[i]; i++)
		free(ls->envp[i]);
	free(ls->envp);
	free(ls->mounts);
	pthread_cond_destroy(&ls->started);
	pthread_mutex_destroy(&ls->lock);
	free(ls);
}
