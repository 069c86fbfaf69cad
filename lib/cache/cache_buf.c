/* SPDX-License-Identifier: MIT */
/*
 * The bottom of the chunk cache (cache_i.h): its handles and the tables
 * that hold them.  A handle (cfs_buf) is a reference-counted chunk, in
 * memory or as an open cache file that was verified; the cache's table
 * holds one reference, each caller of a get another, and the last one to
 * go frees it.  The tables are chained hash tables by digest that double
 * as they fill; the same kind holds the view of the disk directory and
 * the chunk locks a process holds.  Nothing here takes c->lock: callers
 * of the _locked calls hold it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cache_i.h"
#include "util.h"

#define TABLE_MIN_BUCKETS 1024u

/* ---- tables ---- */

int cache_table_init(struct table *t)
{
	t->b = calloc(TABLE_MIN_BUCKETS, sizeof(*t->b));
	t->mask = TABLE_MIN_BUCKETS - 1;
	t->count = 0;
	return t->b ? 0 : -ENOMEM;
}

static void table_grow(struct table *t)
{
	size_t nb = (t->mask + 1) * 2;
	struct node **b = calloc(nb, sizeof(*b));
	struct table nt = { b, nb - 1, t->count };

	if (!b)
		return; /* longer chains, still correct */
	for (size_t i = 0; i <= t->mask; i++) {
		struct node *n = t->b[i], *next;

		for (; n; n = next) {
			size_t s = cache_table_slot(&nt, &n->d);

			next = n->hnext;
			n->hnext = b[s];
			b[s] = n;
		}
	}
	free(t->b);
	*t = nt;
}

void cache_table_insert(struct table *t, struct node *n)
{
	size_t s;

	if (t->count >= t->mask + 1)
		table_grow(t);
	s = cache_table_slot(t, &n->d);
	n->hnext = t->b[s];
	t->b[s] = n;
	t->count++;
}

void cache_table_remove(struct table *t, struct node *n)
{
	struct node **p = &t->b[cache_table_slot(t, &n->d)];

	for (; *p; p = &(*p)->hnext) {
		if (*p == n) {
			*p = n->hnext;
			n->hnext = NULL;
			t->count--;
			return;
		}
	}
}

/* ---- buffers ---- */

/* A placeholder: the caller that inserts it fills it as a file or a
 * memory handle. */
struct cfs_buf *cache_buf_new(const cfs_digest *d, uint32_t len)
{
	struct cfs_buf *b = malloc(sizeof(*b));

	if (!b)
		return NULL;
	memset(b, 0, sizeof(*b));
	b->fd = -1;
	b->n.d = *d;
	cache_list_init(&b->n);
	/* One reference for the cache's table, one for the loader. */
	atomic_init(&b->refs, 2);
	b->len = len;
	b->loading = true;
	if (pthread_cond_init(&b->done, NULL)) {
		free(b);
		return NULL;
	}
	return b;
}

void cache_buf_free(struct cfs_buf *b)
{
	if (b->fd >= 0)
		close(b->fd);
	free(b->data);
	pthread_cond_destroy(&b->done);
	free(b);
}

void cfs_buf_unref(struct cfs_buf *b)
{
	if (b && atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) == 1)
		cache_buf_free(b);
}

const uint8_t *cfs_buf_data(const struct cfs_buf *b)
{
	return b->data;
}

int cfs_buf_fd(const struct cfs_buf *b)
{
	return b->fd;
}

int cfs_buf_read(const struct cfs_buf *b, void *dst, size_t n, uint64_t off)
{
	int ret;

	if (off > b->len || n > b->len - off)
		return -EINVAL;
	if (b->fd < 0) {
		memcpy(dst, b->data + off, n);
		return 0;
	}
	ret = cfs_pread_full(b->fd, dst, n, (off_t)off);
	/* Short: truncated since it was verified.  An I/O error says the
	 * same to the caller: this file cannot serve, the store can. */
	return ret < 0 ? -ESTALE : 0;
}

void cfs_buf_willneed(const struct cfs_buf *b)
{
	if (b->fd >= 0)
		(void)posix_fadvise(b->fd, 0, b->len, POSIX_FADV_WILLNEED);
}

size_t cfs_buf_len(const struct cfs_buf *b)
{
	return b->len;
}

/* Takes a loaded handle out of the table and its LRU; the table's
 * reference goes on *victims (through hnext), to be released after
 * unlocking, since the last reference may free megabytes or close. */
void cache_handle_remove_locked(struct cfs_cache *c, struct cfs_buf *b, struct node **victims)
{
	cache_list_del(&b->n);
	cache_table_remove(&c->mem, &b->n);
	if (b->fd >= 0)
		c->files--;
	else
		c->mem_bytes -= b->len;
	b->n.hnext = *victims;
	*victims = &b->n;
}

/* The handle of d, if the table holds a loaded one. */
struct cfs_buf *cache_handle_find_locked(struct cfs_cache *c, const cfs_digest *d)
{
	struct node *n = cache_table_find(&c->mem, d);

	return n && !cache_buf_of(n)->loading ? cache_buf_of(n) : NULL;
}

void cache_release_victims(struct node *victims)
{
	while (victims) {
		struct node *next = victims->hnext;

		cfs_buf_unref(cache_buf_of(victims));
		victims = next;
	}
}
