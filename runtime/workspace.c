/*
** workspace.c -- the backward's float workspace: a memory pool per device,
** owned by the context. The device's default pool gives its memory back to
** the system at every synchronization (release threshold 0), so a training
** loop that synchronizes each step would map and unmap hundreds of MB per
** sfa_backward call (about 0.5 ms at B*H*T = 1M rows, D = 128, measured on an
** H100: bench/NOTES.md, session 10). This pool keeps what it has; the memory
** goes back when the context is destroyed. Setting the attribute on the
** default pool instead would change the caller's other allocations.
*/
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/internal.h"

struct sfa__pool {
  CUdevice dev;
  CUmemoryPool pool;
};

/* The pool of dev's device, created on first use (under ctx->lock). */
static sfa_status get_pool(sfa_context *ctx, const sfa_driver *d, CUdevice dev,
                           CUmemoryPool *out) {
  for (int i = 0; i < ctx->npools; i++)
    if (ctx->pools[i].dev == dev) {
      *out = ctx->pools[i].pool;
      return SFA_OK;
    }
  if (ctx->npools == ctx->cap_pools) {
    int cap = ctx->cap_pools ? 2 * ctx->cap_pools : 2;
    struct sfa__pool *p = realloc(ctx->pools, (size_t)cap * sizeof *p);
    if (!p) return sfa__error(ctx, SFA_ERR_OUT_OF_MEMORY, "out of memory (workspace pools)");
    ctx->pools = p;
    ctx->cap_pools = cap;
  }
  CUmemPoolProps props;
  memset(&props, 0, sizeof props);
  props.allocType = CU_MEM_ALLOCATION_TYPE_PINNED;
  props.handleTypes = CU_MEM_HANDLE_TYPE_NONE;
  props.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  props.location.id = (int)dev;
  CUmemoryPool pool;
  CUresult r = d->cuMemPoolCreate(&pool, &props);
  if (r != CUDA_SUCCESS)
    return sfa__cuda_error(r, "cuMemPoolCreate(workspace)", ctx->err, sizeof ctx->err);
  cuuint64_t keep = UINT64_MAX;
  if ((r = d->cuMemPoolSetAttribute(pool, CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, &keep)) !=
      CUDA_SUCCESS) {
    d->cuMemPoolDestroy(pool);
    return sfa__cuda_error(r, "cuMemPoolSetAttribute(release threshold)", ctx->err,
                           sizeof ctx->err);
  }
  ctx->pools[ctx->npools].dev = dev;
  ctx->pools[ctx->npools++].pool = pool;
  *out = pool;
  return SFA_OK;
}

sfa_status sfa__workspace_alloc(sfa_context *ctx, const sfa_driver *d, const sfa__device *dev,
                                size_t bytes, CUstream stream, CUdeviceptr *ptr) {
  CUmemoryPool pool = NULL;
  pthread_mutex_lock(&ctx->lock);
  sfa_status st = get_pool(ctx, d, dev->dev, &pool);
  pthread_mutex_unlock(&ctx->lock);
  if (st != SFA_OK) return st;
  CUresult r = d->cuMemAllocFromPoolAsync(ptr, bytes, pool, stream);
  if (r != CUDA_SUCCESS) {
    char what[96];
    snprintf(what, sizeof what, "cuMemAllocFromPoolAsync(%zu bytes of workspace)", bytes);
    return sfa__cuda_error(r, what, ctx->err, sizeof ctx->err);
  }
  return SFA_OK;
}

void sfa__workspace_pools_free(sfa_context *ctx, const sfa_driver *d) {
  /* Allocations still in flight on a stream: the driver releases the pool
  ** once they are freed. */
  for (int i = 0; i < ctx->npools; i++) d->cuMemPoolDestroy(ctx->pools[i].pool);
  free(ctx->pools);
  ctx->pools = NULL;
  ctx->npools = ctx->cap_pools = 0;
}
