/*
** sfa_tune_measure.c -- sfa-tune --measure: the JIT figures (the project's
** goals: cold compile < 2 s, warm load < 5 ms, lookup < 5 us per call),
** measured here and now for each (mode, dtype, head dim) of the grid with the
** default tiles on this device:
**   cold   render + NVRTC compile of the variant (no cache involved);
**   warm   sfa_compile in a fresh context whose disk cache holds the cubin
**          (cache read + verify + module load), the median of 5 contexts;
**   call   (dense only) host time per sfa_forward of a cached kernel on a
**          tiny problem, policies off and cached, against a bare
**          cuLaunchKernel of the same kernel: batches of launches with the
**          stream drained between batches, so the queue never fills;
**          and host time per sfa_decode (one new token, B 1, Hq 8, Hkv 2,
**          a paged cache of 4096 positions: split-KV, so the call includes
**          the workspace from the pool, the merge and the free), the same way,
**          and per sfa_decode_with_workspace (a workspace of the caller's,
**          allocated once: no pool allocation, memset or free per call).
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gen/gen_internal.h"
#include "gen/mode.h"
#include "runtime/fwd_launch.h"
#include "runtime/sfa_tune.h"

#define WARM_REPS 5
#define CALL_BATCH 200
#define CALL_BATCHES 20

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static sfa_context *new_ctx(const sfa__tune_opts *o, sfa_tune_policy tune) {
  sfa_options so;
  sfa_options_init(&so);
  so.cache_dir = o->cache_dir;
  so.device = o->device;
  so.tune = tune;
  sfa_context *c = NULL;
  if (sfa_context_create(&c, &so) != SFA_OK) {
    fprintf(stderr, "sfa-tune: %s\n", c ? sfa_last_error(c) : "out of memory");
    sfa_context_destroy(c);
    return NULL;
  }
  return c;
}

/* Cold compile and warm load of spec; -1 on failure. */
static int compile_and_load(const sfa__tune_opts *o, const sfa_kernel_spec *spec, double *cold,
                            double *render, double *warm) {
  char err[2048], *src = NULL;
  void *bin = NULL;
  size_t size = 0;
  double t0 = now_ms();
  if (sfa_generate(spec, &src, err, sizeof err) != SFA_OK) {
    fprintf(stderr, "sfa-tune: %s\n", err);
    return -1;
  }
  double t1 = now_ms();
  sfa_status st = sfa_compile_cubin(spec, src, &bin, &size, NULL, err, sizeof err);
  double t2 = now_ms();
  sfa_free(src);
  sfa_free(bin);
  if (st != SFA_OK) {
    fprintf(stderr, "sfa-tune: %s\n", err);
    return -1;
  }
  *render = t1 - t0, *cold = t2 - t0;

  sfa_kernel *k;
  sfa_context *c = new_ctx(o, SFA_TUNE_OFF); /* puts the cubin in the disk cache */
  if (!c) return -1;
  if (sfa_compile(c, spec, &k) != SFA_OK) {
    fprintf(stderr, "sfa-tune: %s\n", sfa_last_error(c));
    sfa_context_destroy(c);
    return -1;
  }
  sfa_context_destroy(c);
  double t[WARM_REPS];
  for (int i = 0; i < WARM_REPS; i++) {
    if (!(c = new_ctx(o, SFA_TUNE_OFF))) return -1;
    double a = now_ms();
    st = sfa_compile(c, spec, &k);
    t[i] = now_ms() - a;
    if (st != SFA_OK) fprintf(stderr, "sfa-tune: %s\n", sfa_last_error(c));
    sfa_context_destroy(c);
    if (st != SFA_OK) return -1;
  }
  qsort(t, WARM_REPS, sizeof t[0], cmp_d);
  *warm = t[WARM_REPS / 2];
  return 0;
}

/* Host microseconds per launch, over CALL_BATCHES batches of CALL_BATCH; how:
** 0 sfa_forward, 1 bare cuLaunchKernel, 2 sfa_forward on q, k, v, out + i of
** SETS sets (each call's tensors at other addresses than the last's: the
** Hopper kernel's tensor maps are re-addressed, runtime/tma.c). -1 on failure. */
enum { SETS = 4 };
static double per_call(sfa_context *c, const sfa_driver *d, const sfa__device *dev,
                       const sfa_attention_params *p, const sfa_tensor *q, const sfa_tensor *k,
                       const sfa_tensor *v, const sfa_tensor *out, CUstream stream, int how) {
  sfa_kernel *kern = NULL;
  sfa_fwd_args a;
  if (sfa_forward(c, p, q, k, v, NULL, out, NULL, stream) != SFA_OK) { /* compile + warm */
    fprintf(stderr, "sfa-tune: %s\n", sfa_last_error(c));
    return -1;
  }
  if (how == 1) {
    sfa_kernel_spec s;
    memset(&s, 0, sizeof s);
    s.pass = SFA_PASS_FWD, s.mode = SFA_MODE_DENSE, s.dtype = q->dtype;
    s.head_dim = (int)q->shape[3], s.arch = dev->arch, s.flags = sfa__fwd_flags(p, NULL);
    if (sfa_spec_default(&s, NULL, 0) != SFA_OK || sfa__kernel_get(c, dev, &s, &kern) != SFA_OK)
      return -1;
    sfa__fwd_args_fill(&a, p, q, k, v, NULL, out, NULL);
  }
  double total = 0;
  for (int b = 0; b < CALL_BATCHES; b++) {
    if (d->cuStreamSynchronize(stream) != CUDA_SUCCESS) return -1;
    double t0 = now_ms();
    for (int i = 0; i < CALL_BATCH; i++) {
      sfa_status st = how == 0 ? sfa_forward(c, p, q, k, v, NULL, out, NULL, stream)
                               : sfa__fwd_launch(c, d, kern, &a, stream);
      if (st != SFA_OK) return -1;
    }
    total += now_ms() - t0;
  }
  if (d->cuStreamSynchronize(stream) != CUDA_SUCCESS) return -1;
  return total * 1e3 / (CALL_BATCHES * CALL_BATCH);
}

/* Host microseconds per sfa_decode, or with own per sfa_decode_with_workspace
** (see the top of the file); -1 on failure. */
static double per_decode(sfa_context *c, const sfa_driver *d, sfa_dtype dt, int D, CUstream stream,
                         int own) {
  enum { HQ = 8, HKV = 2, PAGE = 16, PAGES = 256 };
  const size_t row = (size_t)D * 2, cache = (size_t)PAGES * PAGE * HKV * row;
  CUdeviceptr buf = 0;
  if (d->cuMemAlloc(&buf, 2 * cache + 2 * HQ * row + 4096) != CUDA_SUCCESS) return -1;
  d->cuMemsetD8(buf, 0, 2 * cache + 2 * HQ * row + 4096);
  const CUdeviceptr kc = buf, vc = buf + cache, qd = buf + 2 * cache, od = qd + HQ * row;
  const CUdeviceptr pt = od + HQ * row, used = pt + PAGES * 4;
  int32_t table[PAGES], n = PAGES * PAGE;
  for (int i = 0; i < PAGES; i++) table[i] = i;
  double us = -1;
  CUdeviceptr ws = 0; /* own: the caller's workspace */
  if (d->cuMemcpyHtoD(pt, table, sizeof table) == CUDA_SUCCESS &&
      d->cuMemcpyHtoD(used, &n, sizeof n) == CUDA_SUCCESS) {
    const int64_t sq[4] = {1, HQ, 1, D}, sk[4] = {PAGES, PAGE, HKV, D}, st[2] = {1, PAGES},
                  su[1] = {1};
    sfa_tensor q, o, k, v, tpt, tu;
    sfa_tensor_init(&q, (void *)(uintptr_t)qd, dt, 4, sq);
    sfa_tensor_init(&o, (void *)(uintptr_t)od, dt, 4, sq);
    sfa_tensor_init(&k, (void *)(uintptr_t)kc, dt, 4, sk);
    sfa_tensor_init(&v, (void *)(uintptr_t)vc, dt, 4, sk);
    sfa_tensor_init(&tpt, (void *)(uintptr_t)pt, SFA_DTYPE_INT32, 2, st);
    sfa_tensor_init(&tu, (void *)(uintptr_t)used, SFA_DTYPE_INT32, 1, su);
    sfa_kv_cache kv = {.k = &k, .v = &v, .page_table = &tpt, .seqused = &tu};
    sfa_attention_params p;
    sfa_params_init(&p);
    p.causal = 1;
    size_t wsn = 0;
    int ready = 1;
    if (own) {
      ready = sfa_decode_workspace_size(c, &p, &q, &kv, &wsn) == SFA_OK &&
              (!wsn || (d->cuMemAlloc(&ws, wsn) == CUDA_SUCCESS &&
                        d->cuMemsetD8(ws, 0, wsn) == CUDA_SUCCESS));
    }
#define DECODE_CALL()                                                                       \
  (own ? sfa_decode_with_workspace(c, &p, &q, &kv, &o, NULL, (void *)(uintptr_t)ws, wsn, stream) \
       : sfa_decode(c, &p, &q, &kv, &o, NULL, stream))
    if (ready && DECODE_CALL() == SFA_OK) { /* compile + warm */
      double total = 0;
      int ok = 1;
      for (int b = 0; ok && b < CALL_BATCHES; b++) {
        ok = d->cuStreamSynchronize(stream) == CUDA_SUCCESS;
        double t0 = now_ms();
        for (int i = 0; ok && i < CALL_BATCH; i++) ok = DECODE_CALL() == SFA_OK;
        total += now_ms() - t0;
      }
      if (ok && d->cuStreamSynchronize(stream) == CUDA_SUCCESS)
        us = total * 1e3 / (CALL_BATCHES * CALL_BATCH);
    }
#undef DECODE_CALL
    if (us < 0) fprintf(stderr, "sfa-tune: %s\n", sfa_last_error(c));
  }
  d->cuStreamSynchronize(stream);
  if (ws) d->cuMemFree(ws);
  d->cuMemFree(buf);
  return us;
}

static int measure_calls(const sfa__tune_opts *o, const sfa__device *dev, sfa_dtype dt, int D) {
  const sfa_driver *d;
  if (sfa__driver_load(&d, NULL, 0) != SFA_OK) return 1;
  const int64_t shape[4] = {1, 1, 128, D};
  size_t bytes = (size_t)128 * (size_t)D * 2;
  CUdeviceptr buf = 0;
  CUstream stream = NULL;
  if (d->cuMemAlloc(&buf, 4 * bytes) != CUDA_SUCCESS) return 1;
  d->cuMemsetD8(buf, 0, 4 * bytes);
  sfa_tensor q, k, v, out;
  sfa_tensor_init(&q, (void *)(uintptr_t)buf, dt, 4, shape);
  sfa_tensor_init(&k, (void *)(uintptr_t)(buf + bytes), dt, 4, shape);
  sfa_tensor_init(&v, (void *)(uintptr_t)(buf + 2 * bytes), dt, 4, shape);
  sfa_tensor_init(&out, (void *)(uintptr_t)(buf + 3 * bytes), dt, 4, shape);
  sfa_attention_params p;
  sfa_params_init(&p);
  p.causal = 1;
  int rc = 1;
  if (d->cuStreamCreate(&stream, 0) == CUDA_SUCCESS) {
    double us[5] = {-1, -1, -1, -1, -1};
    const sfa_tune_policy pol[2] = {SFA_TUNE_OFF, SFA_TUNE_CACHED};
    for (int i = 0; i < 2; i++) {
      sfa_context *c = new_ctx(o, pol[i]);
      if (!c) break;
      us[i] = per_call(c, d, dev, &p, &q, &k, &v, &out, stream, 0);
      if (i == 0) {
        us[2] = per_call(c, d, dev, &p, &q, &k, &v, &out, stream, 1);
        us[3] = per_decode(c, d, dt, D, stream, 0);
        us[4] = per_decode(c, d, dt, D, stream, 1);
      }
      sfa_context_destroy(c);
    }
    if (us[0] >= 0 && us[1] >= 0 && us[2] >= 0 && us[3] >= 0 && us[4] >= 0) {
      printf("call   dense causal %s d%d, B=1 H=1 T=128: sfa_forward %.2f us (tune off), "
             "%.2f us (tune cached); bare cuLaunchKernel %.2f us; host time per call, "
             "%d batches of %d\n", sfa__dtype_str(dt), D, us[0], us[1], us[2], CALL_BATCHES,
             CALL_BATCH);
      printf("call   decode dense causal %s d%d, B=1 Hq=8 Hkv=2, paged 4096: sfa_decode %.2f us "
             "host time per call (split-KV: workspace, counters' memset, decode with its merge, free); "
             "sfa_decode_with_workspace %.2f us (the caller's workspace)\n",
             sfa__dtype_str(dt), D, us[3], us[4]);
      rc = 0;
    } else {
      fprintf(stderr, "sfa-tune: the per-call measurement failed\n");
    }
    d->cuStreamDestroy(stream);
  }
  d->cuMemFree(buf);
  return rc;
}

int sfa__tune_measure(sfa_context *ctx, const sfa__device *dev, const sfa__tune_opts *o) {
  int rc = 0;
  char name[SFA__NAME_MAX];
  printf("# sfa-tune --measure, sm_%d, NVRTC cold compiles, warm loads from %s\n", dev->arch,
         o->cache_dir ? o->cache_dir : "the default cache dir");
  for (int mi = 0; mi < o->nmodes; mi++)
    for (int ti = 0; ti < o->ndtypes; ti++)
      for (int di = 0; di < o->ndims; di++) {
        sfa_kernel_spec s;
        memset(&s, 0, sizeof s);
        s.pass = SFA_PASS_FWD, s.mode = o->modes[mi], s.dtype = o->dtypes[ti];
        s.head_dim = o->dims[di], s.arch = dev->arch;
        /* the grid's flags that the mode takes */
        s.flags = (o->causal ? SFA_FEAT_CAUSAL : 0u) | (o->bias ? SFA_FEAT_BIAS : 0u) |
                  (o->mask ? SFA_FEAT_MASK : 0u);
        s.flags &= sfa__mode_find(s.mode)->flags;
        char err[512];
        if (sfa_spec_default(&s, err, sizeof err) != SFA_OK) {
          fprintf(stderr, "sfa-tune: %s\n", err);
          rc = 1;
          continue;
        }
        sfa_spec_name(&s, name, sizeof name);
        double cold = 0, render = 0, warm = 0;
        if (compile_and_load(o, &s, &cold, &render, &warm) != 0) {
          rc = 1;
          continue;
        }
        printf("cold   %-56s %9.1f ms (render %.1f ms)\n", name, cold, render);
        printf("warm   %-56s %9.3f ms (median of %d fresh contexts)\n", name, warm, WARM_REPS);
        fflush(stdout);
      }
  for (int ti = 0; ti < o->ndtypes; ti++)
    for (int di = 0; di < o->ndims; di++)
      for (int mi = 0; mi < o->nmodes; mi++)
        if (o->modes[mi] == SFA_MODE_DENSE && measure_calls(o, dev, o->dtypes[ti], o->dims[di]))
          rc = 1;
  (void)ctx;
  return rc;
}
