/* SPDX-License-Identifier: MIT */
/*
 * The fetcher (fetch.h): one thread per fetcher drives one libcurl multi
 * handle.  Other threads only touch the incoming queue, under f->lock, and
 * wake the loop with curl_multi_wakeup(); everything else (the multi, the
 * easy handles, the pending queue, the deadline and retry heaps) belongs to
 * the loop thread alone.  What one request does on the wire (its handle's
 * options, callbacks and body, and what a reply means) is fetch_req.c's;
 * this file schedules requests: admission, the foreground and background
 * queues, deadlines, retries with backoff, and completion.
 */
#include <curl/curl.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fetch_i.h"
#include "util.h"

#define NS_PER_MS 1000000ull
#define BACKOFF_MAX_MS 2000u
#define SAFETY_SLACK_NS (1000 * NS_PER_MS) /* sync callers give up this long after the deadline */

/* ---- heaps of requests, by deadline or by retry time ---- */

static uint64_t heap_key(const struct heap *h, const struct req *r)
{
	return h->which == HEAP_DEADLINE ? r->deadline_ns : r->retry_ns;
}

static void heap_set(struct heap *h, size_t i, struct req *r)
{
	h->v[i] = r;
	r->hidx[h->which] = i;
}

static void heap_up(struct heap *h, size_t i)
{
	struct req *r = h->v[i];

	while (i > 0) {
		size_t p = (i - 1) / 2;
		if (heap_key(h, h->v[p]) <= heap_key(h, r))
			break;
		heap_set(h, i, h->v[p]);
		i = p;
	}
	heap_set(h, i, r);
}

static void heap_down(struct heap *h, size_t i)
{
	struct req *r = h->v[i];

	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= h->n)
			break;
		if (c + 1 < h->n && heap_key(h, h->v[c + 1]) < heap_key(h, h->v[c]))
			c++;
		if (heap_key(h, r) <= heap_key(h, h->v[c]))
			break;
		heap_set(h, i, h->v[c]);
		i = c;
	}
	heap_set(h, i, r);
}

static int heap_push(struct heap *h, struct req *r)
{
	if (h->n == h->cap) {
		size_t cap = h->cap ? h->cap * 2 : 64;
		struct req **v = realloc(h->v, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		h->v = v;
		h->cap = cap;
	}
	h->v[h->n] = r;
	r->hidx[h->which] = h->n;
	heap_up(h, h->n++);
	return 0;
}

static void heap_remove(struct heap *h, struct req *r)
{
	size_t i = r->hidx[h->which];
	struct req *last = h->v[--h->n];

	if (i == h->n)
		return;
	heap_set(h, i, last);
	heap_down(h, i);
	heap_up(h, last->hidx[h->which]);
}

static struct req *heap_top(const struct heap *h)
{
	return h->n ? h->v[0] : NULL;
}

/* ---- the pending queue (loop thread) ---- */

static void queue_unlink(struct cfs_fetcher *f, struct req *r)
{
	__typeof__(f->q[0]) *q = &f->q[r->background];

	if (r->prev)
		r->prev->next = r->next;
	else
		q->head = r->next;
	if (r->next)
		r->next->prev = r->prev;
	else
		q->tail = r->prev;
	r->next = r->prev = NULL;
}

static void queue_push_tail(struct cfs_fetcher *f, struct req *r)
{
	__typeof__(f->q[0]) *q = &f->q[r->background];

	r->next = NULL;
	r->prev = q->tail;
	if (q->tail)
		q->tail->next = r;
	else
		q->head = r;
	q->tail = r;
	r->state = RS_QUEUED;
}

static void queue_push_head(struct cfs_fetcher *f, struct req *r)
{
	__typeof__(f->q[0]) *q = &f->q[r->background];

	r->prev = NULL;
	r->next = q->head;
	if (q->head)
		q->head->prev = r;
	else
		q->tail = r;
	q->head = r;
	r->state = RS_QUEUED;
}

static uint64_t rng_next(struct cfs_fetcher *f)
{
	uint64_t x = f->rng;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	f->rng = x;
	return x;
}

/* ---- curl handles (loop thread) ---- */

/* libcurl before 8.1.0 keeps, across the transfers of a handle, a pointer
 * to the last header of the previous one, freed since (curl issue 11101):
 * a reply whose first header line is a folded continuation then writes
 * through it, so any server could corrupt the heap of a process that
 * reuses handles.  There a handle serves one attempt and is freed; the
 * connections, in the multi's cache, are reused all the same. */
static bool easy_reusable(void)
{
	return curl_version_info(CURLVERSION_NOW)->version_num >= 0x080100;
}

static CURL *easy_get(struct cfs_fetcher *f)
{
	if (f->pool_n)
		return f->pool[--f->pool_n];
	return curl_easy_init();
}

static void easy_put(struct cfs_fetcher *f, CURL *e)
{
	if (f->handle_per_attempt || f->pool_n == f->max_inflight) {
		curl_easy_cleanup(e); /* or a retry was holding one more */
		return;
	}
	curl_easy_reset(e);
	f->pool[f->pool_n++] = e;
}

/* ---- completion (loop thread) ---- */

static void req_detach(struct cfs_fetcher *f, struct req *r)
{
	heap_remove(&f->deadlines, r);
	switch (r->state) {
	case RS_QUEUED:
		queue_unlink(f, r);
		stat_sub(&f->st.queued, 1);
		break;
	case RS_ACTIVE:
		curl_multi_remove_handle(f->multi, r->easy);
		f->active--;
		f->active_bg -= r->background;
		stat_sub(&f->st.inflight, 1);
		break;
	case RS_RETRY:
		heap_remove(&f->retry_at, r);
		break;
	default:
		break;
	}
	if (r->easy) { /* a retry keeps its handle between attempts */
		easy_put(f, r->easy);
		r->easy = NULL;
	}
	r->state = RS_NONE;
}

/* Removes r from wherever it is, reports err (or success) and frees it. */
static void req_complete(struct cfs_fetcher *f, struct req *r, int err, uint64_t object_size)
{
	struct cfs_fetch_result res = {
		.err = err,
		.status = r->status,
		.attempts = r->attempts,
	};
	struct sync_wait *w;

	if (r->state != RS_INCOMING)
		req_detach(f, r);
	/* An empty body is still a body. */
	if (!err && r->method == CFS_FETCH_GET && !r->buf && !(r->buf = malloc(1)))
		res.err = err = -ENOMEM;
	if (!err) {
		res.object_size = object_size;
		if (r->method == CFS_FETCH_GET) {
			res.body = r->buf;
			res.len = r->len;
			r->buf = NULL;
		}
	} else {
		/* Looking for what may not be there (a learned profile, a
		 * tag, an object before a put) is no failure of the store. */
		if (err == -ENOENT)
			stat_add(&f->st.not_found, 1);
		else
			stat_add(&f->st.errors, 1);
		if (err == -ETIMEDOUT)
			stat_add(&f->st.timeouts, 1);
		cfs_fetch_log_failure(r, err);
	}
	stat_add(&f->st.requests, 1);

	if (r->done) {
		r->done(r->ctx, &res);
		cfs_fetch_req_free(r);
		return;
	}
	pthread_mutex_lock(&f->lock);
	w = r->sync;
	if (w)
		w->claimed = true;
	r->sync = NULL;
	pthread_mutex_unlock(&f->lock);
	if (w) {
		pthread_mutex_lock(&w->m);
		w->res = res;
		w->done = true;
		pthread_cond_signal(&w->c);
		pthread_mutex_unlock(&w->m);
	} else {
		free(res.body); /* the caller gave up */
	}
	cfs_fetch_req_free(r);
}

static void req_start(struct cfs_fetcher *f, struct req *r)
{
	CURLMcode mc;
	CURL *e;
	int err;

	queue_unlink(f, r);
	stat_sub(&f->st.queued, 1);
	r->state = RS_NONE;
	cfs_fetch_attempt_reset(r);
	if (r->easy && f->handle_per_attempt) { /* a retry, on a fresh handle */
		easy_put(f, r->easy);
		r->easy = NULL;
	}
	e = r->easy ? r->easy : easy_get(f);
	if (!e) {
		req_complete(f, r, -ENOMEM, 0);
		return;
	}
	r->easy = e;
	/* A retry keeps its options; only the body state starts over. */
	if (!r->attempts || f->handle_per_attempt) {
		err = cfs_fetch_easy_setup(f, r, e);
		if (err) {
			r->easy = NULL;
			easy_put(f, e);
			r->state = RS_NONE;
			req_complete(f, r, err, 0);
			return;
		}
	}
	mc = curl_multi_add_handle(f->multi, e);
	if (mc != CURLM_OK) {
		r->easy = NULL;
		easy_put(f, e);
		req_complete(f, r, mc == CURLM_OUT_OF_MEMORY ? -ENOMEM : -EIO, 0);
		return;
	}
	r->attempts++;
	r->state = RS_ACTIVE;
	f->active++;
	f->active_bg += r->background;
	stat_add(&f->st.inflight, 1);
	stat_add(&f->st.attempts, 1);
}

static void req_finished(struct cfs_fetcher *f, struct req *r, CURLcode cc)
{
	uint64_t size = 0, now, backoff_ns, cap_ms;
	bool retry;
	int err;

	err = cfs_fetch_attempt_outcome(r, cc, &size, &retry);
	if (!err) {
		req_complete(f, r, 0, size);
		return;
	}

	if (!retry || r->attempts > f->retries) {
		req_complete(f, r, err, 0);
		return;
	}
	/* Full jitter: uniform in [0, min(max, base << n)]. */
	cap_ms = f->backoff_ms;
	for (unsigned i = 1; i < r->attempts && cap_ms < BACKOFF_MAX_MS; i++)
		cap_ms *= 2;
	cap_ms = CFS_MIN(cap_ms, BACKOFF_MAX_MS);
	backoff_ns = (rng_next(f) >> 11) % (cap_ms * NS_PER_MS + 1);
	now = cfs_now_ns();
	if (now + backoff_ns >= r->deadline_ns) {
		req_complete(f, r, -ETIMEDOUT, 0);
		return;
	}
	curl_multi_remove_handle(f->multi, r->easy);
	f->active--;
	f->active_bg -= r->background;
	stat_sub(&f->st.inflight, 1);
	stat_add(&f->st.retries, 1);
	r->retry_ns = now + backoff_ns;
	if (heap_push(&f->retry_at, r)) {
		r->state = RS_NONE;
		easy_put(f, r->easy);
		r->easy = NULL;
		req_complete(f, r, -ENOMEM, 0);
		return;
	}
	r->state = RS_RETRY;
}

/* ---- the loop ---- */

static void take_incoming(struct cfs_fetcher *f, bool *stopping)
{
	struct req *r, *next;

	pthread_mutex_lock(&f->lock);
	r = f->in_head;
	f->in_head = f->in_tail = NULL;
	f->wake_pending = false;
	*stopping = f->stopping;
	pthread_mutex_unlock(&f->lock);

	for (; r; r = next) {
		next = r->next;
		r->next = NULL;
		if (*stopping) {
			stat_sub(&f->st.queued, 1);
			req_complete(f, r, -ECANCELED, 0);
			continue;
		}
		if (heap_push(&f->deadlines, r)) {
			stat_sub(&f->st.queued, 1);
			req_complete(f, r, -ENOMEM, 0);
			continue;
		}
		queue_push_tail(f, r);
	}
}

static void handle_timers(struct cfs_fetcher *f)
{
	uint64_t now = cfs_now_ns();
	struct req *r;

	while ((r = heap_top(&f->deadlines)) && r->deadline_ns <= now)
		req_complete(f, r, -ETIMEDOUT, 0);
	/* Retries go to the head of the queue: they were admitted before. */
	while ((r = heap_top(&f->retry_at)) && r->retry_ns <= now) {
		heap_remove(&f->retry_at, r);
		queue_push_head(f, r);
		stat_add(&f->st.queued, 1);
	}
}

/* Foreground first; background only up to its own limit, so that some
 * connections are always left for a reader that waits. */
static void start_pending(struct cfs_fetcher *f)
{
	while (f->q[0].head && f->active < f->max_inflight)
		req_start(f, f->q[0].head);
	while (f->q[1].head && f->active < f->max_inflight && f->active_bg < f->max_background)
		req_start(f, f->q[1].head);
}

static int next_timeout_ms(struct cfs_fetcher *f)
{
	uint64_t next = UINT64_MAX, now;
	long curl_ms = -1;
	struct req *r;
	int ms = 1000;

	curl_multi_timeout(f->multi, &curl_ms);
	if (curl_ms >= 0 && curl_ms < ms)
		ms = (int)curl_ms;
	if ((r = heap_top(&f->deadlines)))
		next = r->deadline_ns;
	if ((r = heap_top(&f->retry_at)) && r->retry_ns < next)
		next = r->retry_ns;
	if (next != UINT64_MAX) {
		now = cfs_now_ns();
		if (next <= now)
			return 0;
		/* Round up so the deadline has passed when the poll returns. */
		next = (next - now + NS_PER_MS - 1) / NS_PER_MS;
		if (next < (uint64_t)ms)
			ms = (int)next;
	}
	return ms;
}

static void *loop_main(void *arg)
{
	struct cfs_fetcher *f = arg;
	bool stopping = false;
	int running;
	CURLMsg *msg;
	struct req *r;

	for (;;) {
		take_incoming(f, &stopping);
		if (stopping)
			break;
		handle_timers(f);
		start_pending(f);
		curl_multi_perform(f->multi, &running);
		while ((msg = curl_multi_info_read(f->multi, &running))) {
			if (msg->msg != CURLMSG_DONE)
				continue;
			r = NULL;
			curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
			if (r)
				req_finished(f, r, msg->data.result);
		}
		start_pending(f);
		curl_multi_poll(f->multi, NULL, 0, next_timeout_ms(f), NULL);
	}

	/* Every admitted request is in the deadline heap. */
	while ((r = heap_top(&f->deadlines)))
		req_complete(f, r, -ECANCELED, 0);
	return NULL;
}

/* ---- public ---- */

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc;

static void global_init(void)
{
	global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

int cfs_fetch_ca_resolve(const char *ca_file, char **out)
{
	const char *path = ca_file;
	char cwd[PATH_MAX];
	size_t n;

	*out = NULL;
	if (!path) {
		path = getenv("CURL_CA_BUNDLE");
		if (!path || !*path)
			path = getenv("SSL_CERT_FILE");
		if (!path || !*path)
			return 0;
	} else if (access(path, R_OK) < 0) {
		return -errno;
	}
	if (path[0] == '/')
		return (*out = strdup(path)) ? 0 : -ENOMEM;
	if (!getcwd(cwd, sizeof(cwd)))
		return -errno;
	n = strlen(cwd) + 1 + strlen(path) + 1;
	if (!(*out = malloc(n)))
		return -ENOMEM;
	snprintf(*out, n, "%s/%s", cwd, path);
	return 0;
}

int cfs_fetcher_new(const struct cfs_fetch_opts *opts, struct cfs_fetcher **out)
{
	static const struct cfs_fetch_opts defaults;
	struct cfs_fetcher *f;
	sigset_t all, old;
	int err = -ENOMEM;
	unsigned stall_ms;

	if (!opts)
		opts = &defaults;
	pthread_once(&global_once, global_init);
	if (global_rc != CURLE_OK)
		return -ENOMEM;
	f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	f->max_inflight = opts->max_inflight ? opts->max_inflight : 64;
	/* A quarter of the connections stay for foreground requests. */
	f->max_background = f->max_inflight > 1 ? f->max_inflight - f->max_inflight / 4 : 1;
	f->connect_timeout_ms = opts->connect_timeout_ms ? (long)opts->connect_timeout_ms : 3000;
	stall_ms = opts->stall_timeout_ms ? opts->stall_timeout_ms : 10000;
	f->stall_s = (long)((stall_ms + 999) / 1000);
	f->deadline_ms = opts->deadline_ms ? opts->deadline_ms : 30000;
	f->retries = opts->retries ? opts->retries : 6;
	f->backoff_ms = opts->backoff_ms ? opts->backoff_ms : 50;
	f->insecure = opts->insecure;
	f->handle_per_attempt = !easy_reusable();
	f->deadlines.which = HEAP_DEADLINE;
	f->retry_at.which = HEAP_RETRY;
	f->rng = (cfs_now_ns() ^ (uint64_t)(uintptr_t)f) | 1;
	if (opts->ca_file && !(f->ca_file = strdup(opts->ca_file)))
		goto fail;
	f->pool = calloc(f->max_inflight, sizeof(*f->pool));
	if (!f->pool)
		goto fail;
	err = -pthread_mutex_init(&f->lock, NULL);
	if (err)
		goto fail;

	err = -ENOMEM;
	f->share = curl_share_init();
	if (!f->share)
		goto fail_lock;
	/* Only the loop thread uses the share: no lock functions needed. */
	curl_share_setopt(f->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
	curl_share_setopt(f->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
	f->multi = curl_multi_init();
	if (!f->multi)
		goto fail_share;
	curl_multi_setopt(f->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
	/* HTTP/1.1 stores (S3 among them) need a connection per request in
	 * flight: at 20 ms RTT, 16 connections gave a third of the request
	 * rate of 64.  Over h2, PIPEWAIT keeps it to one multiplexed one. */
	curl_multi_setopt(f->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)f->max_inflight);
	curl_multi_setopt(f->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)f->max_inflight);
	curl_multi_setopt(f->multi, CURLMOPT_MAXCONNECTS, (long)f->max_inflight);

	/* The loop takes no signals: they belong to the application. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	err = -pthread_create(&f->thread, NULL, loop_main, f);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err)
		goto fail_multi;
	*out = f;
	return 0;

fail_multi:
	curl_multi_cleanup(f->multi);
fail_share:
	curl_share_cleanup(f->share);
fail_lock:
	pthread_mutex_destroy(&f->lock);
fail:
	free(f->pool);
	free(f->ca_file);
	free(f);
	return err;
}

void cfs_fetcher_free(struct cfs_fetcher *f)
{
	if (!f)
		return;
	pthread_mutex_lock(&f->lock);
	f->stopping = true;
	curl_multi_wakeup(f->multi);
	pthread_mutex_unlock(&f->lock);
	pthread_join(f->thread, NULL);

	while (f->pool_n)
		curl_easy_cleanup(f->pool[--f->pool_n]);
	curl_multi_cleanup(f->multi);
	curl_share_cleanup(f->share);
	pthread_mutex_destroy(&f->lock);
	free(f->deadlines.v);
	free(f->retry_at.v);
	free(f->pool);
	free(f->ca_file);
	free(f);
}

/* Hands r to the loop, which owns it from then on. */
static int submit(struct cfs_fetcher *f, struct req *r, unsigned deadline_ms)
{
	unsigned ms = deadline_ms ? deadline_ms : f->deadline_ms;

	r->deadline_ns = cfs_now_ns() + (uint64_t)ms * NS_PER_MS;
	r->state = RS_INCOMING;
	if (r->sync)
		r->sync->give_up_ns = r->deadline_ns + SAFETY_SLACK_NS;
	pthread_mutex_lock(&f->lock);
	if (f->stopping) {
		pthread_mutex_unlock(&f->lock);
		return -ECANCELED;
	}
	if (f->in_tail)
		f->in_tail->next = r;
	else
		f->in_head = r;
	f->in_tail = r;
	stat_add(&f->st.queued, 1);
	/* One wakeup per batch: the loop clears the flag when it drains. */
	if (!f->wake_pending) {
		f->wake_pending = true;
		curl_multi_wakeup(f->multi);
	}
	pthread_mutex_unlock(&f->lock);
	return 0;
}

int cfs_fetch_submit(struct cfs_fetcher *f, const struct cfs_fetch_req *req, cfs_fetch_done_fn done,
		     void *ctx)
{
	struct req *r;
	int err;

	if (!f || !req || !done)
		return -EINVAL;
	err = cfs_fetch_req_new(f, req, &r);
	if (err)
		return err;
	r->done = done;
	r->ctx = ctx;
	err = submit(f, r, req->deadline_ms);
	if (err)
		cfs_fetch_req_free(r);
	return err;
}

int cfs_fetch(struct cfs_fetcher *f, const struct cfs_fetch_req *req, struct cfs_fetch_result *res)
{
	struct sync_wait w = { .done = false };
	pthread_condattr_t ca;
	struct timespec ts;
	uint64_t give_up;
	struct req *r;
	bool detached = false;
	int err;

	if (!res)
		return -EINVAL;
	memset(res, 0, sizeof(*res));
	if (!f || !req)
		return res->err = -EINVAL;
	if (pthread_equal(pthread_self(), f->thread))
		return res->err = -EDEADLK; /* from a done() callback */
	err = cfs_fetch_req_new(f, req, &r);
	if (err)
		return res->err = err;
	pthread_mutex_init(&w.m, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&w.c, &ca);
	pthread_condattr_destroy(&ca);
	r->sync = &w;
	err = submit(f, r, req->deadline_ms);
	if (err) {
		cfs_fetch_req_free(r);
		res->err = err;
		goto out;
	}
	/* The loop enforces the deadline; this wait only guards against a
	 * loop that is stuck. */
	give_up = w.give_up_ns;
	ts.tv_sec = (time_t)(give_up / 1000000000ull);
	ts.tv_nsec = (long)(give_up % 1000000000ull);
	pthread_mutex_lock(&w.m);
	while (!w.done) {
		if (pthread_cond_timedwait(&w.c, &w.m, &ts) == ETIMEDOUT && !w.done) {
			pthread_mutex_unlock(&w.m);
			pthread_mutex_lock(&f->lock);
			if (!w.claimed) {
				r->sync = NULL; /* the loop frees it whenever it gets to it */
				detached = true;
			}
			pthread_mutex_unlock(&f->lock);
			pthread_mutex_lock(&w.m);
			if (detached)
				break;
			while (!w.done) /* being completed right now */
				pthread_cond_wait(&w.c, &w.m);
		}
	}
	pthread_mutex_unlock(&w.m);
	if (detached) {
		cfs_warn("%s: no answer from the fetcher's loop %u ms after the deadline",
			 cfs_fetch_method_name(req->method), (unsigned)(SAFETY_SLACK_NS / NS_PER_MS));
		res->err = -ETIMEDOUT;
	} else {
		*res = w.res;
	}
out:
	pthread_cond_destroy(&w.c);
	pthread_mutex_destroy(&w.m);
	return res->err;
}

void cfs_fetcher_stats_get(struct cfs_fetcher *f, struct cfs_fetch_stats *out)
{
	memset(out, 0, sizeof(*out));
	if (!f)
		return;
#define GET(x) out->x = atomic_load_explicit(&f->st.x, memory_order_relaxed)
	GET(requests);
	GET(attempts);
	GET(retries);
	GET(errors);
	GET(not_found);
	GET(timeouts);
	GET(bytes);
	GET(bytes_sent);
	GET(inflight);
	GET(queued);
#undef GET
}

