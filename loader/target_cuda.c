/* SPDX-License-Identifier: MIT */
/*
 * CUDA runtime target: the only file that includes CUDA headers.
 *
 * One cudaMalloc per model; staging is pinned (cudaHostAlloc) once per
 * load and reused slot after slot.  Copies are cudaMemcpyAsync on two
 * non-blocking streams taken by slot parity, so that the copies of
 * consecutive slots queue behind each other on the copy engine while the
 * pipeline thread goes on reading.  Each slot has a pair of events: start
 * (recorded before its first copy) and done (slot_done); slot_wait
 * synchronises on done and keeps the elapsed time for slot_time.
 *
 * Linked with cudart_static, so the binary needs only the NVIDIA driver;
 * without one, open() says so (-ENODEV) instead of failing later.  Built
 * without CUDA (meson found no toolkit, or -Dcuda=disabled), the table has
 * only an open() that says so (-ENOTSUP).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loader_i.h"
#include "util.h"

#ifdef CFS_HAVE_CUDA

#include <cuda_runtime_api.h>

#define NSTREAMS 2

struct cuda_slot {
	cudaEvent_t start, done;
	bool started;   /* start recorded since the last slot_done */
	bool pending;   /* done recorded, not yet waited for */
	double last_s;  /* elapsed time of the last round, until slot_time */
};

struct cuda_target {
	struct cfs_target t;
	cudaStream_t stream[NSTREAMS];
	unsigned nstreams;
	struct cuda_slot *slot;
	unsigned nslots_ev;  /* slots whose events exist */
	char last_err[160];
};

static struct cuda_target *cuda_of(struct cfs_target *t)
{
	return (struct cuda_target *)t;
}

/* Remembers e for cfs_target_cuda_error() and maps it to an errno. */
static int cuda_fail(struct cuda_target *c, const char *what, cudaError_t e)
{
	if (c)
		snprintf(c->last_err, sizeof(c->last_err), "%s: %s", what, cudaGetErrorString(e));
	switch (e) {
	case cudaErrorMemoryAllocation:
		return -ENOMEM;
	case cudaErrorInvalidValue:
		return -EINVAL;
	case cudaErrorNoDevice:
	case cudaErrorInsufficientDriver:
	case cudaErrorInitializationError:
	case cudaErrorInvalidDevice:
		return -ENODEV;
	case cudaErrorDevicesUnavailable: /* exclusive mode, another process has it */
		return -EBUSY;
	case cudaErrorNotPermitted:
		return -EPERM;
	case cudaErrorNotSupported:
		return -ENOTSUP;
	case cudaErrorLaunchTimeout:
		return -ETIMEDOUT;
	case cudaErrorIllegalAddress:
		return -EFAULT;
	default:
		return -EIO;
	}
}

static void cuda_close(struct cfs_target *t)
{
	struct cuda_target *c;
	unsigned i;

	if (!t)
		return;
	c = cuda_of(t);
	cudaSetDevice(t->device);
	for (i = 0; i < c->nstreams; i++) {
		cudaStreamSynchronize(c->stream[i]);
		cudaStreamDestroy(c->stream[i]);
	}
	for (i = 0; i < c->nslots_ev; i++) {
		cudaEventDestroy(c->slot[i].start);
		cudaEventDestroy(c->slot[i].done);
	}
	free(c->slot);
	free(c);
}

static int cuda_open(const struct cfs_load_opts *o, struct cfs_target **out, char *err,
		     size_t errlen)
{
	struct cuda_target *c;
	unsigned slots = o->slots ? o->slots : 1, i;
	cudaError_t e;
	int n = 0, ret;

	e = cudaGetDeviceCount(&n);
	if (e != cudaSuccess)
		return cfs_load_err(err, errlen, -ENODEV, "no CUDA device (%s)", cudaGetErrorString(e));
	if (n <= 0)
		return cfs_load_err(err, errlen, -ENODEV, "no CUDA device (none found)");
	if (o->device < 0 || o->device >= n)
		return cfs_load_err(err, errlen, -ENODEV, "no CUDA device %d (%d device%s present)",
				    o->device, n, n == 1 ? "" : "s");
	e = cudaSetDevice(o->device);
	if (e != cudaSuccess)
		return cfs_load_err(err, errlen, cuda_fail(NULL, "cudaSetDevice", e),
				    "CUDA device %d: %s", o->device, cudaGetErrorString(e));

	c = calloc(1, sizeof(*c));
	if (!c)
		return cfs_load_err(err, errlen, -ENOMEM, "%s", strerror(ENOMEM));
	c->t.ops = &cfs_target_cuda;
	c->t.slots = slots;
	c->t.device = o->device;
	c->slot = calloc(slots, sizeof(*c->slot));
	if (!c->slot) {
		ret = cfs_load_err(err, errlen, -ENOMEM, "%s", strerror(ENOMEM));
		goto fail;
	}
	for (i = 0; i < NSTREAMS; i++) {
		e = cudaStreamCreateWithFlags(&c->stream[i], cudaStreamNonBlocking);
		if (e != cudaSuccess) {
			ret = cfs_load_err(err, errlen, cuda_fail(c, "stream", e), "CUDA device %d: %s",
					   o->device, c->last_err);
			goto fail;
		}
		c->nstreams++;
	}
	for (i = 0; i < slots; i++) {
		e = cudaEventCreate(&c->slot[i].start);
		if (e == cudaSuccess) {
			e = cudaEventCreate(&c->slot[i].done);
			if (e != cudaSuccess)
				cudaEventDestroy(c->slot[i].start);
		}
		if (e != cudaSuccess) {
			ret = cfs_load_err(err, errlen, cuda_fail(c, "event", e), "CUDA device %d: %s",
					   o->device, c->last_err);
			goto fail;
		}
		c->nslots_ev++;
	}
	*out = &c->t;
	return 0;

fail:
	cuda_close(&c->t);
	return ret;
}

static int cuda_alloc(struct cfs_target *t, size_t size, void **dev)
{
	struct cuda_target *c = cuda_of(t);
	cudaError_t e;

	cudaSetDevice(t->device);
	e = cudaMalloc(dev, size ? size : 1);
	return e == cudaSuccess ? 0 : cuda_fail(c, "cudaMalloc", e);
}

static void cuda_free(struct cfs_target *t, void *dev)
{
	if (!dev)
		return;
	cudaSetDevice(t->device);
	cudaFree(dev);
}

static int cuda_alloc_staging(struct cfs_target *t, size_t size, void **host)
{
	struct cuda_target *c = cuda_of(t);
	cudaError_t e;

	cudaSetDevice(t->device);
	/* Page-aligned, so O_DIRECT reads may land in it. */
	e = cudaHostAlloc(host, size ? size : 1, cudaHostAllocPortable);
	return e == cudaSuccess ? 0 : cuda_fail(c, "cudaHostAlloc", e);
}

static void cuda_free_staging(struct cfs_target *t, void *host, size_t size)
{
	struct cuda_target *c = cuda_of(t);
	unsigned i;

	if (!host)
		return;
	/* No copy may still be reading from it. */
	for (i = 0; i < c->nstreams; i++)
		cudaStreamSynchronize(c->stream[i]);
	cudaFreeHost(host);
}

static int cuda_copy(struct cfs_target *t, unsigned slot, void *dev, const void *host, size_t len)
{
	struct cuda_target *c = cuda_of(t);
	cudaStream_t s;
	cudaError_t e;

	if (slot >= t->slots)
		return -EINVAL;
	s = c->stream[slot % c->nstreams];
	if (!c->slot[slot].started) {
		e = cudaEventRecord(c->slot[slot].start, s);
		if (e != cudaSuccess)
			return cuda_fail(c, "cudaEventRecord", e);
		c->slot[slot].started = true;
	}
	e = cudaMemcpyAsync(dev, host, len, cudaMemcpyHostToDevice, s);
	return e == cudaSuccess ? 0 : cuda_fail(c, "cudaMemcpyAsync", e);
}

static int cuda_slot_done(struct cfs_target *t, unsigned slot)
{
	struct cuda_target *c = cuda_of(t);
	cudaError_t e;

	if (slot >= t->slots)
		return -EINVAL;
	if (!c->slot[slot].started)
		return 0; /* no copies: nothing to wait for */
	e = cudaEventRecord(c->slot[slot].done, c->stream[slot % c->nstreams]);
	if (e != cudaSuccess)
		return cuda_fail(c, "cudaEventRecord", e);
	c->slot[slot].started = false;
	c->slot[slot].pending = true;
	return 0;
}

static int cuda_slot_wait(struct cfs_target *t, unsigned slot)
{
	struct cuda_target *c = cuda_of(t);
	struct cuda_slot *sl;
	cudaError_t e;
	float ms = 0;

	if (slot >= t->slots)
		return -EINVAL;
	sl = &c->slot[slot];
	if (!sl->pending)
		return 0;
	sl->pending = false;
	e = cudaEventSynchronize(sl->done);
	if (e != cudaSuccess)
		return cuda_fail(c, "copy to the device", e);
	if (cudaEventElapsedTime(&ms, sl->start, sl->done) == cudaSuccess)
		sl->last_s += ms * 1e-3;
	return 0;
}

static double cuda_slot_time(struct cfs_target *t, unsigned slot)
{
	struct cuda_target *c = cuda_of(t);
	double s;

	if (slot >= t->slots)
		return 0;
	s = c->slot[slot].last_s;
	c->slot[slot].last_s = 0;
	return s;
}

static int cuda_download(struct cfs_target *t, void *host, const void *dev, size_t len)
{
	struct cuda_target *c = cuda_of(t);
	cudaError_t e;

	cudaSetDevice(t->device);
	e = cudaMemcpy(host, dev, len, cudaMemcpyDeviceToHost);
	return e == cudaSuccess ? 0 : cuda_fail(c, "cudaMemcpy to the host", e);
}

static int cuda_probe(struct cfs_target *t, size_t size, unsigned reps, double *bytes_per_s,
		      char *err, size_t errlen)
{
	struct cuda_target *c = cuda_of(t);
	cudaEvent_t ev[2] = { 0 };
	void *host = NULL, *dev = NULL;
	cudaStream_t s = c->stream[0];
	unsigned i, nev = 0;
	cudaError_t e;
	float ms = 0;
	int ret;

	if (!size || !reps)
		return cfs_load_err(err, errlen, -EINVAL, "probe: size and repetitions must be > 0");
	cudaSetDevice(t->device);
	e = cudaHostAlloc(&host, size, cudaHostAllocPortable);
	if (e != cudaSuccess) {
		ret = cuda_fail(c, "cudaHostAlloc", e);
		goto fail;
	}
	memset(host, 0x5a, size);
	e = cudaMalloc(&dev, size);
	if (e != cudaSuccess) {
		ret = cuda_fail(c, "cudaMalloc", e);
		goto fail;
	}
	for (; nev < 2; nev++) {
		e = cudaEventCreate(&ev[nev]);
		if (e != cudaSuccess) {
			ret = cuda_fail(c, "cudaEventCreate", e);
			goto fail;
		}
	}
	/* Warm-up: the first copy maps the pinned pages for the device. */
	e = cudaMemcpyAsync(dev, host, size, cudaMemcpyHostToDevice, s);
	if (e == cudaSuccess)
		e = cudaEventRecord(ev[0], s);
	for (i = 0; i < reps && e == cudaSuccess; i++)
		e = cudaMemcpyAsync(dev, host, size, cudaMemcpyHostToDevice, s);
	if (e == cudaSuccess)
		e = cudaEventRecord(ev[1], s);
	if (e == cudaSuccess)
		e = cudaEventSynchronize(ev[1]);
	if (e == cudaSuccess)
		e = cudaEventElapsedTime(&ms, ev[0], ev[1]);
	if (e != cudaSuccess) {
		ret = cuda_fail(c, "host-to-device copy", e);
		goto fail;
	}
	*bytes_per_s = ms > 0 ? (double)size * reps / (ms * 1e-3) : 0;
	ret = 0;
	goto out;

fail:
	cfs_load_err(err, errlen, ret, "probe on CUDA device %d: %s", t->device, c->last_err);
out:
	for (i = 0; i < nev; i++)
		cudaEventDestroy(ev[i]);
	if (dev)
		cudaFree(dev);
	if (host)
		cudaFreeHost(host);
	return ret;
}

const struct cfs_target_ops cfs_target_cuda = {
	.name = "cuda",
	.open = cuda_open,
	.close = cuda_close,
	.alloc = cuda_alloc,
	.free = cuda_free,
	.alloc_staging = cuda_alloc_staging,
	.free_staging = cuda_free_staging,
	.copy = cuda_copy,
	.slot_done = cuda_slot_done,
	.slot_wait = cuda_slot_wait,
	.slot_time = cuda_slot_time,
	.download = cuda_download,
	.probe = cuda_probe,
	.host_visible = false,
};

const char *cfs_target_cuda_error(const struct cfs_target *t)
{
	const struct cuda_target *c = (const struct cuda_target *)t;

	if (!t || t->ops != &cfs_target_cuda || !c->last_err[0])
		return NULL;
	return c->last_err;
}

#else /* !CFS_HAVE_CUDA */

/* open() always fails, so nothing calls the other ops. */
static int cuda_open(const struct cfs_load_opts *o, struct cfs_target **out, char *err,
		     size_t errlen)
{
	return cfs_load_err(err, errlen, -ENOTSUP, "cfs-load was built without CUDA");
}

const struct cfs_target_ops cfs_target_cuda = {
	.name = "cuda",
	.open = cuda_open,
	.host_visible = false,
};

const char *cfs_target_cuda_error(const struct cfs_target *t)
{
	return NULL;
}

#endif /* CFS_HAVE_CUDA */
