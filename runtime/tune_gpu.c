/*
** tune_gpu.c -- the autotuner on a real GPU (see tune_gpu.h): scratch
** buffers with synthetic inputs of the problem's shape, CUDA-event timing on
** a private stream, and the output check against the heuristic default, as
** the callbacks (sfa__tune_ops) of sfa__tune_run. Pass fwd times the forward
** kernel; pass bwd times the whole backward sequence (runtime/bwd_launch.h)
** with the candidate bwd kernel, on o and lse from one default forward, and
** checks dq, dk and dv.
*/
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/bwd_launch.h"
#include "runtime/fwd_launch.h"
#include "runtime/tune_gpu.h"
#include "runtime/validate.h"
#include "gen/gen_internal.h"
#include "gen/mode.h"

#define MAX_ALLOCS 32 /* bwd with hash: 18 tensors */
#define CHUNK ((size_t)1 << 20) /* elements per host staging chunk */

typedef struct gt {
  sfa_context *ctx;
  const sfa__device *dev;
  const sfa_driver *d;
  const sfa__problem *prob;
  sfa_kernel_spec def;      /* the heuristic default: its runs write o_ref */
  CUstream stream;
  CUevent e0, e1;
  CUdeviceptr allocs[MAX_ALLOCS];
  int nalloc;
  sfa_tensor q, k, v, o_ref, o, l_ref, l, qi, ki, qh, kh, bias, mask, slopes;
  int bwd;                  /* pass bwd: o_ref and l_ref hold the forward's o and lse */
  sfa_tensor dout, dq, dk, dv, dq_ref, dk_ref, dv_ref;
  sfa_kernel *kdq;          /* bwd with det: the default bwddq kernel */
  sfa_extras ex;
  const sfa_extras *exp;    /* &ex, or NULL for dense */
  double rms;               /* of o_ref, once it is known */
  int ref_ready;
  double tol;
  char why[512];            /* the last CUDA failure, for the caller's message */
  void (*progress)(void *user, int i, int n, const sfa__tune_entry *e);
  void *progress_user;
} gt;

/* ------------------------------------------------------------ small helpers */

static uint64_t rng_next(uint64_t *s) {
  uint64_t x = *s ? *s : 0x9E3779B97F4A7C15ull;
  x ^= x >> 12, x ^= x << 25, x ^= x >> 27;
  *s = x;
  return x * 0x2545F4914F6CDD1Dull;
}

static double rng_uniform(uint64_t *s) { return (double)(rng_next(s) >> 11) * 0x1.0p-53; }

static double rng_normal(uint64_t *s) {
  double u1 = rng_uniform(s), u2 = rng_uniform(s);
  if (u1 < 1e-300) u1 = 1e-300;
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

static int cu_fail(gt *g, CUresult r, const char *what) {
  sfa__cuda_error(r, what, g->why, sizeof g->why);
  return r == CUDA_ERROR_OUT_OF_MEMORY ? (int)SFA_ERR_OUT_OF_MEMORY : (int)SFA_ERR_CUDA;
}

static int dalloc(gt *g, size_t bytes, CUdeviceptr *p) {
  if (g->nalloc == MAX_ALLOCS) {
    snprintf(g->why, sizeof g->why, "more than %d scratch tensors (MAX_ALLOCS)", MAX_ALLOCS);
    return (int)SFA_ERR_INTERNAL;
  }
  CUresult r = g->d->cuMemAlloc(p, bytes ? bytes : 16);
  if (r != CUDA_SUCCESS) return cu_fail(g, r, "cuMemAlloc (tuning scratch)");
  g->allocs[g->nalloc++] = *p;
  return 0;
}

static size_t numel(const sfa_tensor *t) {
  size_t n = 1;
  for (int i = 0; i < t->rank; i++) n *= (size_t)t->shape[i];
  return n;
}

/* A contiguous scratch tensor of the given shape. */
static int make_tensor(gt *g, sfa_tensor *t, sfa_dtype dt, int rank, const int64_t *shape,
                       size_t elem) {
  CUdeviceptr p = 0;
  sfa_tensor_init(t, NULL, dt, rank, shape);
  int rc = dalloc(g, numel(t) * elem, &p);
  t->data = (void *)(uintptr_t)p;
  return rc;
}

/* n half-precision standard normal values into p, through a host chunk. */
static int fill_normal(gt *g, const sfa_tensor *t, uint64_t seed) {
  size_t n = numel(t), c = n < CHUNK ? n : CHUNK;
  uint16_t *h = malloc(c * sizeof *h);
  if (!h) return (int)SFA_ERR_OUT_OF_MEMORY;
  for (size_t i = 0; i < c; i++) h[i] = sfa_float_to_half(t->dtype, (float)rng_normal(&seed));
  int rc = 0;
  CUdeviceptr p = (CUdeviceptr)(uintptr_t)t->data;
  for (size_t off = 0; off < n && !rc; off += c) {
    size_t m = n - off < c ? n - off : c;
    CUresult r = g->d->cuMemcpyHtoD(p + off * 2, h, m * 2);
    if (r != CUDA_SUCCESS) rc = cu_fail(g, r, "cuMemcpyHtoD (tuning inputs)");
  }
  free(h);
  return rc;
}

static int upload(gt *g, const sfa_tensor *t, const void *host, size_t bytes) {
  CUresult r = g->d->cuMemcpyHtoD((CUdeviceptr)(uintptr_t)t->data, host, bytes);
  return r == CUDA_SUCCESS ? 0 : cu_fail(g, r, "cuMemcpyHtoD (tuning indices)");
}

/* ------------------------------------------------------------ synthetic extras */

/* hash: per row, buckets in [0, nb) sorted by (bucket, position). */
static void make_hash(int32_t *idx, int32_t *hash, int64_t rows, int64_t T, int nb,
                      uint64_t *rng, int32_t *bucket, int32_t *count) {
  for (int64_t r = 0; r < rows; r++) {
    int32_t *ix = idx + r * T, *hs = hash + r * T;
    memset(count, 0, (size_t)(nb + 1) * sizeof *count);
    for (int64_t t = 0; t < T; t++) {
      bucket[t] = (int32_t)(rng_next(rng) % (uint64_t)nb);
      count[bucket[t] + 1]++;
    }
    for (int b = 0; b < nb; b++) count[b + 1] += count[b];
    for (int64_t t = 0; t < T; t++) { /* stable: positions stay in order */
      int32_t at = count[bucket[t]]++;
      ix[at] = (int32_t)t;
      hs[at] = bucket[t];
    }
  }
}

/* qk_drop: T strictly increasing positions spread over [0, L). */
static void make_positions(int32_t *idx, int64_t rows, int64_t T, int64_t L, uint64_t *rng) {
  for (int64_t r = 0; r < rows; r++)
    for (int64_t t = 0; t < T; t++) {
      int64_t lo = t * L / T, hi = (t + 1) * L / T; /* hi > lo since L >= T */
      idx[r * T + t] = (int32_t)(lo + (int64_t)(rng_next(rng) % (uint64_t)(hi - lo)));
    }
}

/* The mode table's synthetic index arrays (gen/mode.h): hash, buckets in
** [0, hash_buckets) sorted by (bucket, position); qk_drop, the kept fraction
** qk_keep of the positions of the longer side. */
int sfa__tune_indices_hash(const sfa__problem *p, int k_side, int32_t *idx, int32_t *hash,
                           uint64_t *rng) {
  const int64_t T = k_side ? p->Tk : p->Tq, rows = p->B * (k_side ? p->Hkv : p->Hq);
  int nb = p->hash_buckets > 0 ? p->hash_buckets : SFA__TUNE_HASH_BUCKETS;
  if (nb > SFA_HASH_MAX_BUCKETS) nb = SFA_HASH_MAX_BUCKETS;
  int32_t *bucket = malloc((size_t)T * 4), *count = malloc((size_t)(nb + 1) * 4);
  int rc = (bucket && count) ? 0 : (int)SFA_ERR_OUT_OF_MEMORY;
  if (!rc) make_hash(idx, hash, rows, T, nb, rng, bucket, count);
  free(bucket), free(count);
  return rc;
}

int sfa__tune_indices_qk_drop(const sfa__problem *p, int k_side, int32_t *idx, int32_t *hash,
                              uint64_t *rng) {
  (void)hash;
  const int64_t T = p->Tq > p->Tk ? p->Tq : p->Tk;
  double keep = p->qk_keep > 0 && p->qk_keep <= 1 ? p->qk_keep : SFA__TUNE_QK_KEEP;
  int64_t L = (int64_t)ceil((double)T / keep);
  if (L > INT32_MAX - 1) L = INT32_MAX - 1;
  make_positions(idx, p->B * (k_side ? p->Hkv : p->Hq), k_side ? p->Tk : p->Tq, L, rng);
  return 0;
}

/* The index arrays of the mode (q side, then k side): its tune_indices. */
static int make_index_extras(gt *g, const sfa__mode *m, uint64_t *rng) {
  const sfa__problem *p = g->prob;
  const int64_t qs[3] = {p->B, p->Hq, p->Tq}, ks[3] = {p->B, p->Hkv, p->Tk};
  const int hash = (m->reads & SFA__EX_Q_HASH) != 0;
  int rc;
  if ((rc = make_tensor(g, &g->qi, SFA_DTYPE_INT32, 3, qs, 4)) ||
      (rc = make_tensor(g, &g->ki, SFA_DTYPE_INT32, 3, ks, 4)))
    return rc;
  if (hash && ((rc = make_tensor(g, &g->qh, SFA_DTYPE_INT32, 3, qs, 4)) ||
               (rc = make_tensor(g, &g->kh, SFA_DTYPE_INT32, 3, ks, 4))))
    return rc;
  size_t nq = numel(&g->qi), nk = numel(&g->ki), n = nq > nk ? nq : nk;
  int32_t *a = malloc(n * 4), *b = hash ? malloc(n * 4) : NULL;
  rc = (a && (b || !hash)) ? 0 : (int)SFA_ERR_OUT_OF_MEMORY;
  for (int side = 0; side < 2 && !rc; side++) {
    const sfa_tensor *ti = side ? &g->ki : &g->qi, *th = side ? &g->kh : &g->qh;
    const size_t ne = side ? nk : nq;
    if (!(rc = m->tune_indices(p, side, a, b, rng)) && !(rc = upload(g, ti, a, ne * 4)) && hash)
      rc = upload(g, th, b, ne * 4);
  }
  free(a), free(b);
  g->ex.q_idx = &g->qi;
  g->ex.k_idx = &g->ki;
  if (hash) g->ex.q_hash = &g->qh, g->ex.k_hash = &g->kh;
  return rc;
}

static int make_window_extras(gt *g, uint64_t *rng, sfa_dtype dt) {
  const sfa__problem *p = g->prob;
  int rc;
  if (p->bias_shape[3] > 0) {
    if ((rc = make_tensor(g, &g->bias, dt, 4, p->bias_shape, 2)) ||
        (rc = fill_normal(g, &g->bias, rng_next(rng))))
      return rc;
    g->ex.bias = &g->bias;
  }
  if (p->mask_shape[3] > 0) {
    /* rows padded to 16 bytes, as the kernel's vector reads require */
    int64_t row = (p->mask_shape[3] + 15) / 16 * 16;
    size_t rows = (size_t)(p->mask_shape[0] * p->mask_shape[1] * p->mask_shape[2]);
    CUdeviceptr m = 0;
    if ((rc = dalloc(g, rows * (size_t)row, &m))) return rc;
    sfa_tensor_init(&g->mask, (void *)(uintptr_t)m, SFA_DTYPE_UINT8, 4, p->mask_shape);
    g->mask.strides[2] = row;
    g->mask.strides[1] = row * p->mask_shape[2];
    g->mask.strides[0] = g->mask.strides[1] * p->mask_shape[1];
    size_t c = rows * (size_t)row < CHUNK ? rows * (size_t)row : CHUNK;
    uint8_t *h = malloc(c);
    if (!h) return (int)SFA_ERR_OUT_OF_MEMORY;
    for (size_t i = 0; i < c; i++) h[i] = (uint8_t)(rng_next(rng) >> 63);
    for (size_t off = 0; off < rows * (size_t)row && !rc; off += c) {
      size_t n = rows * (size_t)row - off < c ? rows * (size_t)row - off : c;
      CUresult r = g->d->cuMemcpyHtoD(m + off, h, n);
      if (r != CUDA_SUCCESS) rc = cu_fail(g, r, "cuMemcpyHtoD (tuning mask)");
    }
    free(h);
    if (rc) return rc;
    g->ex.mask = &g->mask;
  }
  return 0;
}

/* ALiBi slopes [alibi_batches, Hq] (rank 1 for one batch): ALiBi's
** geometric slopes 2^(-8 (h + 1) / Hq), the same for every batch. */
static int make_slopes(gt *g) {
  const sfa__problem *p = g->prob;
  const int64_t shape[2] = {p->alibi_batches, p->Hq};
  const int rank = p->alibi_batches > 1 ? 2 : 1;
  int rc = make_tensor(g, &g->slopes, SFA_DTYPE_FP32, rank, rank == 2 ? shape : shape + 1, 4);
  size_t n = numel(&g->slopes);
  float *h = rc ? NULL : malloc(n * sizeof *h);
  if (!rc && !h) rc = (int)SFA_ERR_OUT_OF_MEMORY;
  for (size_t i = 0; !rc && i < n; i++)
    h[i] = (float)pow(2.0, -8.0 * (double)(i % (size_t)p->Hq + 1) / (double)p->Hq);
  if (!rc) {
    CUresult r = g->d->cuMemcpyHtoD((CUdeviceptr)(uintptr_t)g->slopes.data, h, n * sizeof *h);
    if (r != CUDA_SUCCESS) rc = cu_fail(g, r, "cuMemcpyHtoD (tuning slopes)");
  }
  free(h);
  if (!rc) g->ex.alibi_slopes = &g->slopes;
  return rc;
}

/* ------------------------------------------------------------ set-up */

size_t sfa__tune_gpu_scratch_bytes(const sfa__problem *p, sfa_dtype dtype, int D) {
  size_t qn = (size_t)(p->B * p->Hq * p->Tq), kn = (size_t)(p->B * p->Hkv * p->Tk);
  size_t bytes = 3 * qn * (size_t)D * 2 + 2 * kn * (size_t)D * 2; /* q, o_ref, o, k, v */
  if (p->has_lse) bytes += 2 * qn * 4;
  const sfa__mode *mode = p->params ? sfa__mode_find(p->params->mode) : NULL;
  size_t ne = 0;
  const sfa__extra *ex = sfa__extras(&ne);
  for (size_t i = 0; mode && i < ne; i++) /* the mode's index arrays */
    if ((mode->reads & ex[i].bit) && ex[i].kind == SFA__EXTRA_INDEX)
      bytes += (ex[i].k_side ? kn : qn) * 4;
  const int64_t *b = p->bias_shape, *m = p->mask_shape;
  bytes += (size_t)(b[0] * b[1] * b[2] * b[3]) * 2;
  bytes += (size_t)(m[0] * m[1] * m[2] * ((m[3] + 15) / 16 * 16));
  bytes += (size_t)(p->alibi_batches * p->Hq) * 4;
  (void)dtype;
  return bytes;
}

/* Pass bwd: dout, the gradients and their references, and o / lse from one
** forward with the default tiles (in o_ref / l_ref). */
static int setup_bwd(gt *g, const sfa_kernel_spec *base, uint64_t *rng) {
  const sfa__problem *p = g->prob;
  const sfa_dtype dt = base->dtype;
  const int64_t D = base->head_dim;
  const int64_t qs[4] = {p->B, p->Hq, p->Tq, D}, ks[4] = {p->B, p->Hkv, p->Tk, D};
  int rc;
  if ((rc = make_tensor(g, &g->dout, dt, 4, qs, 2)) || (rc = make_tensor(g, &g->dq, dt, 4, qs, 2)) ||
      (rc = make_tensor(g, &g->dq_ref, dt, 4, qs, 2)) ||
      (rc = make_tensor(g, &g->dk, dt, 4, ks, 2)) || (rc = make_tensor(g, &g->dv, dt, 4, ks, 2)) ||
      (rc = make_tensor(g, &g->dk_ref, dt, 4, ks, 2)) ||
      (rc = make_tensor(g, &g->dv_ref, dt, 4, ks, 2)) ||
      (rc = fill_normal(g, &g->dout, rng_next(rng))))
    return rc;
  sfa_kernel_spec fs = *base;
  fs.pass = SFA_PASS_FWD;
  fs.flags &= ~SFA_FEAT_DETERMINISTIC;
  sfa_kernel *kf;
  sfa_fwd_args a;
  sfa_status st = sfa_spec_default(&fs, g->why, sizeof g->why);
  if (st == SFA_OK && (st = sfa__kernel_get(g->ctx, g->dev, &fs, &kf)) == SFA_OK) {
    sfa__fwd_args_fill(&a, p->params, &g->q, &g->k, &g->v, g->exp, &g->o_ref, &g->l_ref);
    st = sfa__fwd_launch(g->ctx, g->d, kf, &a, g->stream);
  }
  if (st == SFA_OK && (base->flags & SFA_FEAT_DETERMINISTIC)) {
    sfa_kernel_spec ds = fs;
    ds.pass = SFA_PASS_BWD_DQ;
    if ((st = sfa_spec_default(&ds, g->why, sizeof g->why)) == SFA_OK)
      st = sfa__kernel_get(g->ctx, g->dev, &ds, &g->kdq);
  }
  if (st == SFA_OK)
    st = sfa__validate_backward(g->ctx, p->params, &g->q, &g->k, &g->v, g->exp, &g->o_ref,
                                &g->l_ref, &g->dout, &g->dq, &g->dk, &g->dv, NULL);
  if (st != SFA_OK && !g->why[0])
    snprintf(g->why, sizeof g->why, "the backward's synthetic call: %.400s", g->ctx->err);
  return (int)st;
}

static int setup(gt *g, const sfa_kernel_spec *base) {
  const sfa__problem *p = g->prob;
  const sfa_dtype dt = base->dtype;
  const int64_t D = base->head_dim;
  const int64_t qs[4] = {p->B, p->Hq, p->Tq, D}, ks[4] = {p->B, p->Hkv, p->Tk, D};
  const int64_t ls[3] = {p->B, p->Hq, p->Tq};
  uint64_t rng = 0x5FA7E57ull ^ (uint64_t)(p->Tq * 31 + p->Tk);
  CUresult r;
  int rc;
  /* A blocking stream: ordered with the synchronous copies and memsets, which
  ** run on the legacy default stream. */
  if ((r = g->d->cuStreamCreate(&g->stream, 0)) != CUDA_SUCCESS)
    return g->stream = NULL, cu_fail(g, r, "cuStreamCreate");
  if ((r = g->d->cuEventCreate(&g->e0, 0)) != CUDA_SUCCESS)
    return g->e0 = NULL, cu_fail(g, r, "cuEventCreate");
  if ((r = g->d->cuEventCreate(&g->e1, 0)) != CUDA_SUCCESS)
    return g->e1 = NULL, cu_fail(g, r, "cuEventCreate");
  if ((rc = make_tensor(g, &g->q, dt, 4, qs, 2)) || (rc = make_tensor(g, &g->k, dt, 4, ks, 2)) ||
      (rc = make_tensor(g, &g->v, dt, 4, ks, 2)) ||
      (rc = make_tensor(g, &g->o_ref, dt, 4, qs, 2)) ||
      (rc = make_tensor(g, &g->o, dt, 4, qs, 2)))
    return rc;
  if (p->has_lse && ((rc = make_tensor(g, &g->l_ref, SFA_DTYPE_FP32, 3, ls, 4)) ||
                     (rc = make_tensor(g, &g->l, SFA_DTYPE_FP32, 3, ls, 4))))
    return rc;
  if ((rc = fill_normal(g, &g->q, rng_next(&rng))) ||
      (rc = fill_normal(g, &g->k, rng_next(&rng))) ||
      (rc = fill_normal(g, &g->v, rng_next(&rng))))
    return rc;
  const sfa__mode *m = sfa__mode_find(p->params->mode);
  if (m->tune_indices) rc = make_index_extras(g, m, &rng);
  if (!rc && (m->reads & (SFA__EX_BIAS | SFA__EX_MASK))) rc = make_window_extras(g, &rng, dt);
  if (!rc && p->alibi_batches > 0 && (m->reads & SFA__EX_ALIBI)) rc = make_slopes(g);
  if (rc) return rc;
  g->exp = m->reads & ~SFA__EX_SEQLENS ? &g->ex : NULL; /* synthetic calls are fixed-length */
  /* The synthetic call must be one sfa_forward would accept. */
  sfa_status st = sfa__validate_forward(g->ctx, p->params, &g->q, &g->k, &g->v, g->exp, &g->o,
                                        p->has_lse ? &g->l : NULL);
  if (st != SFA_OK) {
    snprintf(g->why, sizeof g->why, "the synthetic inputs are not valid: %.400s", g->ctx->err);
    return (int)st;
  }
  return g->bwd ? setup_bwd(g, base, &rng) : 0;
}

static void teardown(gt *g) {
  if (g->stream) g->d->cuStreamSynchronize(g->stream);
  for (int i = 0; i < g->nalloc; i++) g->d->cuMemFree(g->allocs[i]);
  if (g->e0) g->d->cuEventDestroy(g->e0);
  if (g->e1) g->d->cuEventDestroy(g->e1);
  if (g->stream) g->d->cuStreamDestroy(g->stream);
}

/* ------------------------------------------------------------ the callbacks */

static int op_prepare(void *u, const sfa_kernel_spec *s) {
  gt *g = u;
  sfa_kernel *k;
  sfa_status st = sfa__kernel_get(g->ctx, g->dev, s, &k);
  if (st != SFA_OK && g->ctx->opts.verbose) {
    char name[SFA__NAME_MAX] = "?";
    sfa_spec_name(s, name, sizeof name);
    fprintf(stderr, "sfa: tune: %s cannot be used: %s\n", name, g->ctx->err);
  }
  return (int)st;
}

/* One launch of s into out (o_ref for the default) on the private stream. */
static int launch(gt *g, const sfa_kernel_spec *s, int to_ref) {
  sfa_kernel *k;
  sfa_status st = sfa__kernel_get(g->ctx, g->dev, s, &k);
  if (st != SFA_OK) return (int)st;
  const sfa__problem *p = g->prob;
  if (g->bwd) {
    const sfa__bwd_call c = {p->params, &g->q, &g->k, &g->v, g->exp, &g->o_ref, &g->l_ref,
                             &g->dout, to_ref ? &g->dq_ref : &g->dq, to_ref ? &g->dk_ref : &g->dk,
                             to_ref ? &g->dv_ref : &g->dv, NULL, NULL, NULL}; /* no dbias, dlse, varlen */
    st = sfa__bwd_exec(g->ctx, g->dev, g->d, k, g->kdq, &c, g->stream);
    if (st != SFA_OK) snprintf(g->why, sizeof g->why, "%.500s", g->ctx->err);
    return (int)st;
  }
  sfa_fwd_args a;
  sfa__fwd_args_fill(&a, p->params, &g->q, &g->k, &g->v, g->exp, to_ref ? &g->o_ref : &g->o,
                     p->has_lse ? (to_ref ? &g->l_ref : &g->l) : NULL);
  st = sfa__fwd_launch(g->ctx, g->d, k, &a, g->stream);
  if (st != SFA_OK) snprintf(g->why, sizeof g->why, "%.500s", g->ctx->err);
  return (int)st;
}

static int op_run(void *u, const sfa_kernel_spec *s, float *ms) {
  gt *g = u;
  CUresult r;
  int rc;
  if ((r = g->d->cuEventRecord(g->e0, g->stream)) != CUDA_SUCCESS)
    return cu_fail(g, r, "cuEventRecord");
  /* the default's own runs write the reference; another mma kind with the
  ** default's tiles is a candidate like any other */
  if ((rc = launch(g, s, sfa__spec_same_config(s, &g->def)))) return rc;
  if ((r = g->d->cuEventRecord(g->e1, g->stream)) != CUDA_SUCCESS ||
      (r = g->d->cuEventSynchronize(g->e1)) != CUDA_SUCCESS)
    return cu_fail(g, r, "timing a tuning launch (cuEventRecord/Synchronize)");
  if ((r = g->d->cuEventElapsedTime(ms, g->e0, g->e1)) != CUDA_SUCCESS)
    return cu_fail(g, r, "cuEventElapsedTime");
  return 0;
}

/* max |x - r| / (|r| + floor) over n elements of two device buffers (half or
** float), in host chunks; NaN in x where r is not NaN gives NaN. When floor < 0
** it is the rms of r (computed here first). */
static int max_rel(gt *g, CUdeviceptr dx, CUdeviceptr dr, size_t n, int is_half, sfa_dtype dt,
                   double *floor, double *out) {
  size_t es = is_half ? 2 : 4, c = n < CHUNK ? n : CHUNK;
  unsigned char *hx = malloc(c * es), *hr = malloc(c * es);
  int rc = (hx && hr) ? 0 : (int)SFA_ERR_OUT_OF_MEMORY;
  double worst = 0, ss = 0;
  for (int pass = (*floor < 0 ? 0 : 1); pass < 2 && !rc; pass++)
    for (size_t off = 0; off < n && !rc; off += c) {
      size_t m = n - off < c ? n - off : c;
      CUresult r = g->d->cuMemcpyDtoH(hr, dr + off * es, m * es);
      if (r == CUDA_SUCCESS && pass == 1) r = g->d->cuMemcpyDtoH(hx, dx + off * es, m * es);
      if (r != CUDA_SUCCESS) {
        rc = cu_fail(g, r, "cuMemcpyDtoH (tuning output check)");
        break;
      }
      for (size_t i = 0; i < m; i++) {
        double rv = is_half ? sfa_half_to_float(dt, ((uint16_t *)hr)[i]) : ((float *)hr)[i];
        if (pass == 0) {
          if (isfinite(rv)) ss += rv * rv;
          continue;
        }
        double xv = is_half ? sfa_half_to_float(dt, ((uint16_t *)hx)[i]) : ((float *)hx)[i];
        if (xv == rv || (isnan(rv) && isnan(xv))) continue; /* equal, also -inf == -inf */
        double d = fabs(xv - rv) / (fabs(rv) + *floor);
        if (!(d <= worst)) worst = d; /* NaN sticks */
      }
      if (pass == 0 && off + m >= n) *floor = n ? sqrt(ss / (double)n) : 0;
    }
  free(hx), free(hr);
  if (!rc && *floor == 0) *floor = 1e-30;
  *out = worst;
  return rc;
}

/* Pass bwd: dq, dk and dv of s against the default's. */
static int op_diff_bwd(gt *g, const sfa_kernel_spec *s, double *rel) {
  const sfa_tensor *out[3] = {&g->dq, &g->dk, &g->dv}, *ref[3] = {&g->dq_ref, &g->dk_ref, &g->dv_ref};
  CUresult r;
  int rc;
  for (int i = 0; i < 3; i++)
    if ((r = g->d->cuMemsetD8((CUdeviceptr)(uintptr_t)out[i]->data, 0xFF, numel(out[i]) * 2)) !=
        CUDA_SUCCESS)
      return cu_fail(g, r, "cuMemsetD8 (tuning output poison)");
  if ((rc = launch(g, s, 0))) return rc;
  if ((r = g->d->cuStreamSynchronize(g->stream)) != CUDA_SUCCESS)
    return cu_fail(g, r, "cuStreamSynchronize (tuning output check)");
  double worst = 0;
  for (int i = 0; i < 3; i++) {
    double floor = -1, x = 0; /* the rms of each reference (never cached: three of them) */
    if ((rc = max_rel(g, (CUdeviceptr)(uintptr_t)out[i]->data,
                      (CUdeviceptr)(uintptr_t)ref[i]->data, numel(out[i]), 1, out[i]->dtype,
                      &floor, &x)))
      return rc;
    if (isnan(x) || x > worst) worst = x;
  }
  *rel = worst;
  return 0;
}

static int op_diff(void *u, const sfa_kernel_spec *s, double *rel) {
  gt *g = u;
  if (g->bwd) return op_diff_bwd(g, s, rel);
  const sfa__problem *p = g->prob;
  CUresult r;
  int rc;
  size_t no = numel(&g->o), nl = p->has_lse ? numel(&g->l) : 0;
  /* poison: 0xFF bytes are NaN in fp16, bf16 and fp32 */
  if ((r = g->d->cuMemsetD8((CUdeviceptr)(uintptr_t)g->o.data, 0xFF, no * 2)) != CUDA_SUCCESS ||
      (nl && (r = g->d->cuMemsetD8((CUdeviceptr)(uintptr_t)g->l.data, 0xFF, nl * 4)) !=
                 CUDA_SUCCESS))
    return cu_fail(g, r, "cuMemsetD8 (tuning output poison)");
  if ((rc = launch(g, s, 0))) return rc;
  if ((r = g->d->cuStreamSynchronize(g->stream)) != CUDA_SUCCESS)
    return cu_fail(g, r, "cuStreamSynchronize (tuning output check)");
  double fo = g->ref_ready ? g->rms : -1, ro = 0, rl = 0, fl = 1;
  if ((rc = max_rel(g, (CUdeviceptr)(uintptr_t)g->o.data, (CUdeviceptr)(uintptr_t)g->o_ref.data,
                    no, 1, g->o.dtype, &fo, &ro)))
    return rc;
  g->rms = fo, g->ref_ready = 1;
  if (nl && (rc = max_rel(g, (CUdeviceptr)(uintptr_t)g->l.data,
                          (CUdeviceptr)(uintptr_t)g->l_ref.data, nl, 0, SFA_DTYPE_FP32, &fl, &rl)))
    return rc;
  *rel = (isnan(ro) || isnan(rl)) ? NAN : (ro > rl ? ro : rl);
  return 0;
}

static void op_progress(void *u, int i, int n, const sfa__tune_entry *e) {
  gt *g = u;
  g->progress(g->progress_user, i, n, e);
}

/* ------------------------------------------------------------ entry */

sfa_status sfa__tune_gpu(sfa_context *ctx, const sfa__device *dev, const sfa_kernel_spec *base,
                         const sfa__problem *prob, int warmup, int reps, unsigned kinds,
                         void (*progress)(void *user, int i, int n, const sfa__tune_entry *e),
                         void *user, sfa__tune_result *res, char *err, size_t errlen) {
  if (res) memset(res, 0, sizeof *res);
  if (!ctx || !dev || !base || !prob || !prob->params || !res)
    return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT, "sfa__tune_gpu: NULL argument");
  if (!sfa__tune_can_launch(base->pass))
    return sfa__fail(err, errlen, SFA_ERR_UNSUPPORTED,
                     "the tuner cannot launch the %s pass (only fwd and bwd)",
                     sfa__pass_name(base->pass) ? sfa__pass_name(base->pass) : "?");
  if (prob->B < 1 || prob->Hq < 1 || prob->Hkv < 1 || prob->Tq < 1 || prob->Tk < 1)
    return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT, "sfa__tune_gpu: empty problem");
  sfa_kernel_spec *cands = NULL;
  int n = 0;
  sfa_status st = sfa__tune_candidates(base, &cands, &n, err, errlen);
  if (st != SFA_OK) return st;
  sfa__tune_lead_for_keys(cands, &n, sfa__problem_keys(prob));
  if (kinds) { /* the default (first) stays */
    int k = 1;
    for (int i = 1; i < n; i++)
      if (kinds & (1u << cands[i].mma)) cands[k++] = cands[i];
    n = k;
  }

  gt g;
  memset(&g, 0, sizeof g);
  g.ctx = ctx, g.dev = dev, g.prob = prob, g.def = cands[0];
  g.bwd = base->pass == SFA_PASS_BWD;
  if (g.bwd && (!prob->has_lse || base->head_dim > SFA__BWD_KERNEL_MAX_HEAD_DIM)) {
    free(cands);
    return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT,
                     "sfa__tune_gpu: a bwd problem needs lse and head_dim <= %d",
                     SFA__BWD_KERNEL_MAX_HEAD_DIM);
  }
  g.tol = base->dtype == SFA_DTYPE_BF16 ? SFA__TUNE_TOL_BF16 : SFA__TUNE_TOL_FP16;
  if ((st = sfa__driver_load(&g.d, err, errlen)) != SFA_OK) {
    free(cands);
    return st;
  }
  int rc = setup(&g, base);
  if (rc) {
    double mib = (double)sfa__tune_gpu_scratch_bytes(prob, base->dtype, base->head_dim) / 1048576.0;
    st = sfa__fail(err, errlen, rc > 0 && rc <= (int)SFA_ERR_INTERNAL ? (sfa_status)rc
                   : SFA_ERR_INTERNAL, "preparing %.0f MiB of tuning inputs: %s", mib,
                   g.why[0] ? g.why : sfa_status_string((sfa_status)rc));
  } else {
    sfa__tune_ops ops = {op_prepare, op_run, op_diff, g.tol, warmup, reps,
                         progress ? op_progress : NULL};
    g.progress = progress;
    g.progress_user = user;
    st = sfa__tune_run(cands, n, &ops, &g, res, err, errlen);
  }
  teardown(&g);
  free(cands);
  return st;
}
