/*
** test_gpu_sparse.c -- the sparse forward kernels on a real GPU against the
** float64 CPU reference: qk_drop (30% and 80% of positions dropped, compact
** random keep masks, Tq' != Tk', -1 / INT32_MAX padding, rows that see no
** key), hash (1, 4, 16 and 64 buckets, layouts sorted by (bucket, position),
** separate buckets for q and k, padding suffixes) and window (the windows
** (0,0), (15,-1), (100,0) causal, (-1,37), (63,63) with Tq != Tk; a bias per
** query head, per kv head, broadcast over rows and over the batch; a uint8
** mask of 10% and 90% density with all-zero tiles and all-zero rows,
** broadcast over heads and rows; bias and mask together). GQA (Hq = 4 over
** Hkv = 2 or 1), D = 64 and 128, fp16 and bf16. Also sfa_check_indices on the
** device: it accepts every layout used here and rejects unsorted ones.
**
** Outputs are poisoned with NaN bit patterns before each run (so is the
** padding of bias rows and index rows, which the kernels must never read):
** every element must be written and NaN never passes. Bounds: relative L2 of
** o < 1e-2 (bf16) / 5e-3 (fp16), lse within 1e-2 where finite, and exactly
** -inf with o == 0 for rows with no allowed key.
**
** Without a driver or a device the suite prints "SKIP: <reason>" and exits 77
** (CTest's skip code). The tests share one CUDA context and one sfa context
** (CK_FORK=no). SFA_TEST_SEED changes the random data; each failure prints its
** case and seed.
*/
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sfa.h"
#include "runtime/driver.h"
#include "testutil.h"

static const sfa_driver *drv;
static CUdevice device;
static CUcontext cuctx;
static sfa_context *ctx;
static uint64_t base_seed = 0x5FA5001;

#define CU(call)                                                              \
  do {                                                                        \
    CUresult r_ = (call);                                                     \
    if (r_ != CUDA_SUCCESS) {                                                 \
      const char *n_ = "?";                                                   \
      drv->cuGetErrorName(r_, &n_);                                           \
      ck_abort_msg("%s:%d: %s failed: %s", __FILE__, __LINE__, #call, n_);     \
    }                                                                         \
  } while (0)

/* ------------------------------------------------------------ half precision */

static uint16_t to_bf16(float f) { return sfa_float_to_half(SFA_DTYPE_BF16, f); }
static float from_bf16(uint16_t h) { return sfa_half_to_float(SFA_DTYPE_BF16, h); }
static uint16_t to_fp16(float f) { return sfa_float_to_half(SFA_DTYPE_FP16, f); }
static float from_fp16(uint16_t h) { return sfa_half_to_float(SFA_DTYPE_FP16, h); }

static uint16_t to_half(sfa_dtype t, float f) {
  return t == SFA_DTYPE_BF16 ? to_bf16(f) : to_fp16(f);
}
static float from_half(sfa_dtype t, uint16_t h) {
  return t == SFA_DTYPE_BF16 ? from_bf16(h) : from_fp16(h);
}

/* ------------------------------------------------------------ cases */

enum { BIAS_NONE, BIAS_HEAD, BIAS_KV, BIAS_ROW, BIAS_BATCH };
enum { MASK_NONE, MASK_HEAD, MASK_KV, MASK_ROW };
static const char *const bias_names[] = {"none", "[B,Hq,Tq,Tk]+pad", "[B,Hkv,Tq,Tk]",
                                         "[B,1,1,Tk]", "[1,Hq,Tq,Tk]"};
static const char *const mask_names[] = {"none", "[B,Hq,Tq,Tk]", "[B,Hkv,Tq,Tk]", "[B,1,1,Tk]"};

typedef struct scase {
  sfa_mode mode;
  int B, Hq, Hkv, Tq, Tk, D;
  sfa_dtype dtype;
  int T0;                   /* qk_drop: positions before compaction */
  double keep;              /* qk_drop: probability that a position is kept */
  int buckets;              /* hash: 1..64 */
  int left, right, causal;  /* window */
  int bias, mask;           /* window: BIAS_*, MASK_* */
  double density;           /* window mask: probability of a nonzero byte */
  int idx_pad;              /* index arrays: unused elements after each (b, h) row */
  uint64_t seed;
} scase;

static scase make(sfa_mode mode, int Hkv, int Tq, int Tk, int D, sfa_dtype dt) {
  scase c;
  memset(&c, 0, sizeof c);
  c.mode = mode;
  c.B = 2, c.Hq = 4, c.Hkv = Hkv, c.Tq = Tq, c.Tk = Tk, c.D = D, c.dtype = dt;
  c.left = c.right = -1;
  return c;
}

static void describe(const scase *c, char *buf, size_t n) {
  int at = snprintf(buf, n, "B=%d Hq=%d Hkv=%d Tq=%d Tk=%d D=%d %s ", c->B, c->Hq, c->Hkv,
                    c->Tq, c->Tk, c->D, c->dtype == SFA_DTYPE_BF16 ? "bf16" : "fp16");
  if (at < 0 || (size_t)at >= n) return;
  if (c->mode == SFA_MODE_QK_DROP)
    snprintf(buf + at, n - (size_t)at, "qk_drop T0=%d drop=%.0f%% idx_pad=%d seed=%llu", c->T0,
             100 * (1 - c->keep), c->idx_pad, (unsigned long long)c->seed);
  else if (c->mode == SFA_MODE_HASH)
    snprintf(buf + at, n - (size_t)at, "hash buckets=%d idx_pad=%d seed=%llu", c->buckets,
             c->idx_pad, (unsigned long long)c->seed);
  else
    snprintf(buf + at, n - (size_t)at,
             "window (%d,%d)%s bias=%s mask=%s density=%.0f%% seed=%llu", c->left, c->right,
             c->causal ? " causal" : "", bias_names[c->bias], mask_names[c->mask],
             100 * c->density, (unsigned long long)c->seed);
}

/* ------------------------------------------------------------ index layouts */

/* qk_drop: positions of [start, T0) kept with probability keep, in order, at
** most n of them; the rest of the n entries is padding. */
static void compact_row(int32_t *idx, int n, int start, int T0, double keep, int32_t pad,
                        uint64_t *rng) {
  int m = 0;
  for (int t = start; t < T0 && m < n; t++)
    if (tu_rand_uniform(rng) < keep) idx[m++] = t;
  for (int i = m; i < n; i++) idx[i] = pad;
}

/* hash: `real` tokens at positions 0..real-1 with random buckets in [0, nb),
** sorted by (bucket, position); entries real..n-1 are padding (idx = pad,
** hash = INT32_MAX). */
static void hash_row(int32_t *idx, int32_t *hs, int n, int real, int nb, int32_t pad,
                     uint64_t *rng) {
  int count[65] = {0}, start[65] = {0};
  int32_t *bucket = malloc((size_t)(real > 0 ? real : 1) * sizeof *bucket);
  ck_assert(nb >= 1 && nb <= 64 && bucket);
  for (int t = 0; t < real; t++) count[bucket[t] = (int32_t)(tu_rand_u64(rng) % (uint64_t)nb)]++;
  for (int b = 0; b < nb; b++) start[b + 1] = start[b] + count[b];
  for (int t = 0; t < real; t++) { /* a stable counting sort keeps positions increasing */
    int at = start[bucket[t]]++;
    idx[at] = t;
    hs[at] = bucket[t];
  }
  for (int i = real; i < n; i++) idx[i] = pad, hs[i] = INT32_MAX;
  free(bucket);
}

/* ------------------------------------------------------------ one run */

typedef struct srun {
  scase c;
  char desc[320];
  size_t nq, nk, nrows;
  float *rq, *rk, *rv, *ro, *rl;       /* reference inputs and outputs, [B, H, T, D] */
  uint16_t *hq, *hk, *hv, *ho;
  float *hl;
  int32_t *qi, *ki, *qh, *kh;          /* host index arrays, contiguous [B, H, T] */
  float *rbias;                        /* reference bias [B, heads, rows, Tk] */
  uint8_t *rmask;                      /* reference mask [B, heads, rows, Tk] */
  CUdeviceptr dq, dk, dv, dout, dl, dqi, dki, dqh, dkh, dbias, dmask;
  sfa_tensor tq, tk, tv, to, tl, tqi, tki, tqh, tkh, tbias, tmask;
  sfa_extras ex;
  int has_ex;
  sfa_host_extras hx;
  sfa_attention_params p;
} srun;

static CUdeviceptr upload(const void *host, size_t bytes) {
  CUdeviceptr p = 0;
  CU(drv->cuMemAlloc(&p, bytes));
  CU(drv->cuMemcpyHtoD(p, host, bytes));
  return p;
}

/* An int32 [B, H, T] array on the device with `pad` poisoned elements after
** each row; *t describes it. */
static CUdeviceptr upload_index(const int32_t *host, int B, int H, int T, int pad,
                                sfa_tensor *t) {
  const size_t rs = (size_t)T + (size_t)pad, rows = (size_t)B * H;
  int32_t *buf = malloc(rows * rs * sizeof *buf);
  ck_assert_ptr_nonnull(buf);
  for (size_t r = 0; r < rows; r++) {
    memcpy(buf + r * rs, host + r * (size_t)T, (size_t)T * sizeof *buf);
    for (size_t x = (size_t)T; x < rs; x++) buf[r * rs + x] = 0x5A5A5A5A;
  }
  CUdeviceptr d = upload(buf, rows * rs * sizeof *buf);
  free(buf);
  int64_t shape[3] = {B, H, T};
  sfa_tensor_init(t, (void *)(uintptr_t)d, SFA_DTYPE_INT32, 3, shape);
  t->strides[1] = (int64_t)rs, t->strides[0] = (int64_t)rs * H;
  return d;
}

static void gen_qk_drop(srun *R, uint64_t *rng) {
  const scase *c = &R->c;
  for (int r = 0; r < c->B * c->Hq; r++)
    compact_row(R->qi + (size_t)r * c->Tq, c->Tq, 0, c->T0, c->keep, -1, rng);
  for (int i = 0; i < c->Tq; i++) R->qi[(size_t)(c->B * c->Hq - 1) * c->Tq + i] = -1;
  /* k row 0 starts at T0/3, so its early queries see nothing; with more than
  ** one k row, the last is all padding. */
  for (int r = 0; r < c->B * c->Hkv; r++)
    compact_row(R->ki + (size_t)r * c->Tk, c->Tk, r == 0 ? c->T0 / 3 : 0, c->T0, c->keep,
                INT32_MAX, rng);
  if (c->B * c->Hkv > 1)
    for (int i = 0; i < c->Tk; i++) R->ki[(size_t)(c->B * c->Hkv - 1) * c->Tk + i] = INT32_MAX;
}

static void gen_hash(srun *R, uint64_t *rng) {
  const scase *c = &R->c;
  for (int r = 0; r < c->B * c->Hq; r++) {
    int real = r == c->B * c->Hq - 1 ? 0 : c->Tq - (int)(tu_rand_u64(rng) % 16);
    hash_row(R->qi + (size_t)r * c->Tq, R->qh + (size_t)r * c->Tq, c->Tq, real, c->buckets, -1,
             rng);
  }
  for (int r = 0; r < c->B * c->Hkv; r++)
    hash_row(R->ki + (size_t)r * c->Tk, R->kh + (size_t)r * c->Tk, c->Tk,
             c->Tk - (int)(tu_rand_u64(rng) % 16), c->buckets, INT32_MAX, rng);
}

/* The window bias and mask: host reference copies and device tensors. */
static void gen_window(srun *R, uint64_t *rng) {
  const scase *c = &R->c;
  const int B = c->B, Tq = c->Tq, Tk = c->Tk;
  if (c->bias != BIAS_NONE) {
    const int heads = c->bias == BIAS_KV ? c->Hkv : c->bias == BIAS_ROW ? 1 : c->Hq;
    const int rows = c->bias == BIAS_ROW ? 1 : Tq, Bb = c->bias == BIAS_BATCH ? 1 : B;
    const int pad = c->bias == BIAS_HEAD ? 8 : 0, rs = Tk + pad;
    const size_t per_b = (size_t)heads * rows * Tk;
    uint16_t *buf = malloc((size_t)Bb * heads * rows * rs * 2);
    R->rbias = malloc((size_t)B * per_b * sizeof *R->rbias);
    ck_assert(buf && R->rbias);
    memset(buf, 0xFF, (size_t)Bb * heads * rows * rs * 2); /* padding: NaN */
    for (size_t r = 0; r < (size_t)Bb * heads * rows; r++)
      for (int j = 0; j < Tk; j++) {
        uint16_t h = to_half(c->dtype, (float)(1.5 * tu_rand_normal(rng)));
        buf[r * rs + j] = h;
        R->rbias[r * Tk + j] = from_half(c->dtype, h);
      }
    for (int b = 1; b < B && Bb == 1; b++) /* the reference has no batch broadcast */
      memcpy(R->rbias + b * per_b, R->rbias, per_b * sizeof *R->rbias);
    R->dbias = upload(buf, (size_t)Bb * heads * rows * rs * 2);
    free(buf);
    int64_t shape[4] = {Bb, heads, rows, Tk};
    sfa_tensor_init(&R->tbias, (void *)(uintptr_t)R->dbias, c->dtype, 4, shape);
    R->tbias.strides[2] = rs, R->tbias.strides[1] = (int64_t)rows * rs;
    R->tbias.strides[0] = (int64_t)heads * rows * rs;
    R->ex.bias = &R->tbias;
    R->hx.bias = R->rbias, R->hx.bias_heads = heads, R->hx.bias_rows = rows;
  }
  if (c->mask != MASK_NONE) {
    const int heads = c->mask == MASK_HEAD ? c->Hq : c->mask == MASK_KV ? c->Hkv : 1;
    const int rows = c->mask == MASK_ROW ? 1 : Tq, rs = (Tk + 15) / 16 * 16;
    const size_t nrow = (size_t)B * heads * rows;
    uint8_t *buf = malloc(nrow * rs);
    R->rmask = malloc(nrow * Tk);
    ck_assert(buf && R->rmask);
    memset(buf, 0xFF, nrow * rs); /* row padding: never read */
    for (size_t r = 0; r < nrow; r++) {
      const int i = (int)(r % (size_t)rows); /* the query row, or 0 when broadcast */
      for (int j = 0; j < Tk; j++) {
        uint8_t m = tu_rand_uniform(rng) < c->density ? (uint8_t)(1 + tu_rand_u64(rng) % 255) : 0;
        if (i < 128 && j >= 64 && j < 192) m = 0; /* all-zero tiles for BM <= 128, BN <= 64 */
        if (rows > 5 && i == 5) m = 0;           /* an all-zero row: query 5 sees nothing */
        buf[r * rs + j] = m;
        R->rmask[r * Tk + j] = m;
      }
    }
    R->dmask = upload(buf, nrow * rs);
    free(buf);
    int64_t shape[4] = {B, heads, rows, Tk};
    sfa_tensor_init(&R->tmask, (void *)(uintptr_t)R->dmask, SFA_DTYPE_UINT8, 4, shape);
    R->tmask.strides[2] = rs, R->tmask.strides[1] = (int64_t)rows * rs;
    R->tmask.strides[0] = (int64_t)heads * rows * rs;
    R->ex.mask = &R->tmask;
    R->hx.mask = R->rmask, R->hx.mask_heads = heads, R->hx.mask_rows = rows;
  }
  R->has_ex = c->bias != BIAS_NONE || c->mask != MASK_NONE;
}

static uint16_t *gen_half(const scase *c, size_t n, float *ref, uint64_t *rng) {
  uint16_t *h = malloc(n * 2);
  ck_assert_ptr_nonnull(h);
  for (size_t i = 0; i < n; i++) {
    h[i] = to_half(c->dtype, (float)tu_rand_normal(rng));
    ref[i] = from_half(c->dtype, h[i]);
  }
  return h;
}

static void case_setup(srun *R, const scase *c) {
  memset(R, 0, sizeof *R);
  R->c = *c;
  describe(c, R->desc, sizeof R->desc);
  uint64_t rng = c->seed ? c->seed : 1;
  const int64_t qs[4] = {c->B, c->Hq, c->Tq, c->D}, ks[4] = {c->B, c->Hkv, c->Tk, c->D};
  const int64_t ls[3] = {c->B, c->Hq, c->Tq};
  R->nq = (size_t)c->B * c->Hq * c->Tq * c->D, R->nk = (size_t)c->B * c->Hkv * c->Tk * c->D;
  R->nrows = (size_t)c->B * c->Hq * c->Tq;
  R->rq = malloc(R->nq * 4), R->rk = malloc(R->nk * 4), R->rv = malloc(R->nk * 4);
  R->ro = malloc(R->nq * 4), R->rl = malloc(R->nrows * 4);
  R->ho = malloc(R->nq * 2), R->hl = malloc(R->nrows * 4);
  ck_assert(R->rq && R->rk && R->rv && R->ro && R->rl && R->ho && R->hl);
  R->hq = gen_half(c, R->nq, R->rq, &rng);
  R->hk = gen_half(c, R->nk, R->rk, &rng);
  R->hv = gen_half(c, R->nk, R->rv, &rng);
  R->dq = upload(R->hq, R->nq * 2), R->dk = upload(R->hk, R->nk * 2);
  R->dv = upload(R->hv, R->nk * 2);
  CU(drv->cuMemAlloc(&R->dout, R->nq * 2));
  CU(drv->cuMemAlloc(&R->dl, R->nrows * 4));
  sfa_tensor_init(&R->tq, (void *)(uintptr_t)R->dq, c->dtype, 4, qs);
  sfa_tensor_init(&R->tk, (void *)(uintptr_t)R->dk, c->dtype, 4, ks);
  sfa_tensor_init(&R->tv, (void *)(uintptr_t)R->dv, c->dtype, 4, ks);
  sfa_tensor_init(&R->to, (void *)(uintptr_t)R->dout, c->dtype, 4, qs);
  sfa_tensor_init(&R->tl, (void *)(uintptr_t)R->dl, SFA_DTYPE_FP32, 3, ls);
  sfa_params_init(&R->p);
  R->p.mode = c->mode;

  if (c->mode == SFA_MODE_QK_DROP || c->mode == SFA_MODE_HASH) {
    const size_t nqi = (size_t)c->B * c->Hq * c->Tq, nki = (size_t)c->B * c->Hkv * c->Tk;
    R->qi = malloc(nqi * 4), R->ki = malloc(nki * 4);
    ck_assert(R->qi && R->ki);
    if (c->mode == SFA_MODE_HASH) {
      R->qh = malloc(nqi * 4), R->kh = malloc(nki * 4);
      ck_assert(R->qh && R->kh);
      gen_hash(R, &rng);
    } else {
      gen_qk_drop(R, &rng);
    }
    R->dqi = upload_index(R->qi, c->B, c->Hq, c->Tq, c->idx_pad, &R->tqi);
    R->dki = upload_index(R->ki, c->B, c->Hkv, c->Tk, c->idx_pad, &R->tki);
    R->ex.q_idx = &R->tqi, R->ex.k_idx = &R->tki;
    R->hx.q_idx = R->qi, R->hx.k_idx = R->ki;
    if (c->mode == SFA_MODE_HASH) {
      R->dqh = upload_index(R->qh, c->B, c->Hq, c->Tq, c->idx_pad, &R->tqh);
      R->dkh = upload_index(R->kh, c->B, c->Hkv, c->Tk, c->idx_pad, &R->tkh);
      R->ex.q_hash = &R->tqh, R->ex.k_hash = &R->tkh;
      R->hx.q_hash = R->qh, R->hx.k_hash = R->kh;
    }
    R->has_ex = 1;
  } else {
    R->p.causal = c->causal;
    R->p.window_left = c->left;
    R->p.window_right = c->right;
    gen_window(R, &rng);
  }
}

static void case_free(srun *R) {
  CUdeviceptr *d[] = {&R->dq, &R->dk, &R->dv, &R->dout, &R->dl, &R->dqi,
                      &R->dki, &R->dqh, &R->dkh, &R->dbias, &R->dmask};
  for (size_t i = 0; i < sizeof d / sizeof d[0]; i++)
    if (*d[i]) drv->cuMemFree(*d[i]);
  free(R->rq), free(R->rk), free(R->rv), free(R->ro), free(R->rl);
  free(R->hq), free(R->hk), free(R->hv), free(R->ho), free(R->hl);
  free(R->qi), free(R->ki), free(R->qh), free(R->kh), free(R->rbias), free(R->rmask);
  memset(R, 0, sizeof *R);
}

/* Poison the outputs, launch, wait. */
static void case_launch(srun *R) {
  const scase *c = &R->c;
  CU(drv->cuMemsetD8(R->dout, 0xFF, R->nq * 2)); /* NaN: an unwritten element fails */
  CU(drv->cuMemsetD8(R->dl, 0xFF, R->nrows * 4));
  if (c->mode == SFA_MODE_QK_DROP || c->mode == SFA_MODE_HASH) {
    sfa_status st = sfa_check_indices(ctx, &R->p, &R->ex, c->Tq, c->Tk, NULL);
    ck_assert_msg(st == SFA_OK, "%s: sfa_check_indices: %s: %s", R->desc,
                  sfa_status_string(st), sfa_last_error(ctx));
  }
  sfa_status st = sfa_forward(ctx, &R->p, &R->tq, &R->tk, &R->tv, R->has_ex ? &R->ex : NULL,
                              &R->to, &R->tl, NULL);
  ck_assert_msg(st == SFA_OK, "%s: sfa_forward: %s: %s", R->desc, sfa_status_string(st),
                sfa_last_error(ctx));
  CUresult r = drv->cuCtxSynchronize();
  const char *name = "?";
  if (r != CUDA_SUCCESS) drv->cuGetErrorName(r, &name);
  ck_assert_msg(r == CUDA_SUCCESS, "%s: after the launch: %s", R->desc, name);
}

static void case_verify(srun *R) {
  const scase *c = &R->c;
  CU(drv->cuMemcpyDtoH(R->ho, R->dout, R->nq * 2));
  CU(drv->cuMemcpyDtoH(R->hl, R->dl, R->nrows * 4));
  char why[512];
  sfa_status st = sfa_reference_forward(&R->p, c->B, c->Hq, c->Hkv, c->Tq, c->Tk, c->D, R->rq,
                                        R->rk, R->rv, R->has_ex ? &R->hx : NULL, R->ro, R->rl,
                                        why, sizeof why);
  ck_assert_msg(st == SFA_OK, "%s: reference: %s", R->desc, why);

  double diff2 = 0, ref2 = 0, max_abs = 0, lse_err = 0;
  long nan = 0, bad_empty = 0, empty_rows = 0;
  size_t first_bad = (size_t)-1;
  for (size_t row = 0; row < R->nrows; row++) {
    const int empty = isinf(R->rl[row]) && R->rl[row] < 0;
    const float g = R->hl[row];
    int bad = 0;
    empty_rows += empty;
    if (empty) {
      if (!(isinf(g) && g < 0)) bad_empty++, bad = 1;
    } else if (!isfinite(g)) {
      nan++, bad = 1;
    } else if (fabs((double)g - R->rl[row]) > lse_err) {
      lse_err = fabs((double)g - R->rl[row]);
    }
    for (size_t x = row * c->D; x < (row + 1) * c->D; x++) {
      const float o = from_half(c->dtype, R->ho[x]);
      if (isnan(o)) {
        nan++, bad = 1;
        continue;
      }
      if (empty && o != 0.0f) bad_empty++, bad = 1;
      const double d = fabs((double)o - R->ro[x]);
      diff2 += d * d;
      ref2 += (double)R->ro[x] * R->ro[x];
      if (d > max_abs) max_abs = d;
    }
    if (bad && first_bad == (size_t)-1) first_bad = row;
  }
  const double rel = ref2 > 0 ? sqrt(diff2 / ref2) : sqrt(diff2);
  const double tol = c->dtype == SFA_DTYPE_BF16 ? 1e-2 : 5e-3;
  char where[96] = "";
  if (first_bad != (size_t)-1)
    snprintf(where, sizeof where, " first bad row (b,h,t)=(%zu,%zu,%zu)",
             first_bad / ((size_t)c->Hq * c->Tq), first_bad / c->Tq % c->Hq, first_bad % c->Tq);
  ck_assert_msg(nan == 0 && bad_empty == 0 && rel < tol && lse_err < 1e-2,
                "%s: rel_err=%.3e (tol %.0e) max_abs=%.3e lse_err=%.3e nan/unwritten=%ld "
                "bad_empty=%ld%s",
                R->desc, rel, tol, max_abs, lse_err, nan, bad_empty, where);
  printf("ok %s: rel_err=%.2e lse_err=%.2e empty_rows=%ld/%zu\n", R->desc, rel, lse_err,
         empty_rows, R->nrows);
}

static void run_case(const scase *c) {
  srun R;
  case_setup(&R, c);
  case_launch(&R);
  case_verify(&R);
  case_free(&R);
}

/* ------------------------------------------------------------ tests */

START_TEST(qk_drop_random) {
  /* 30% and 80% of 1000 positions dropped; capacities a bit above the
  ** expected kept count, so most rows are padded and a few truncated. */
  const double keeps[2] = {0.7, 0.2};
  int n = 0;
  for (int kd = 0; kd < 2; kd++)
    for (int dt = 0; dt < 2; dt++)
      for (int di = 0; di < 2; di++, n++) {
        const int T0 = 1000, Tq = (int)(T0 * keeps[kd] * 1.05), Tk = (int)(T0 * keeps[kd]) - 9;
        scase c = make(SFA_MODE_QK_DROP, n % 2 ? 1 : 2, Tq, Tk, di ? 128 : 64,
                       dt ? SFA_DTYPE_BF16 : SFA_DTYPE_FP16);
        c.T0 = T0, c.keep = keeps[kd];
        c.idx_pad = n % 3 == 1 ? 5 : 0;
        c.seed = base_seed + 100 + (uint64_t)n;
        run_case(&c);
      }
}
END_TEST

START_TEST(hash_buckets) {
  const int nbs[4] = {1, 4, 16, 64};
  int n = 0;
  for (int bi = 0; bi < 4; bi++)
    for (int v = 0; v < 2; v++, n++) {
      scase c = make(SFA_MODE_HASH, v ? 1 : 2, v ? 700 : 900, v ? 1000 : 611, v ? 128 : 64,
                     v ? SFA_DTYPE_BF16 : SFA_DTYPE_FP16);
      c.buckets = nbs[bi];
      c.idx_pad = n % 3 == 2 ? 3 : 0;
      c.seed = base_seed + 200 + (uint64_t)n;
      run_case(&c);
    }
}
END_TEST

typedef struct wspec {
  int left, right, causal, Tq, Tk, D, bf16, Hkv, bias, mask;
  double density;
} wspec;

static void run_windows(const wspec *w, size_t n, uint64_t seed0) {
  for (size_t i = 0; i < n; i++) {
    scase c = make(SFA_MODE_WINDOW, w[i].Hkv, w[i].Tq, w[i].Tk, w[i].D,
                   w[i].bf16 ? SFA_DTYPE_BF16 : SFA_DTYPE_FP16);
    c.left = w[i].left, c.right = w[i].right, c.causal = w[i].causal;
    c.bias = w[i].bias, c.mask = w[i].mask, c.density = w[i].density;
    c.seed = base_seed + seed0 + i;
    run_case(&c);
  }
}

START_TEST(window_plain) {
  /* The five windows, Tq != Tk both ways, without extras. */
  const wspec w[] = {
    {0, 0, 0, 300, 500, 64, 0, 2, BIAS_NONE, MASK_NONE, 0},
    {0, 0, 0, 500, 300, 128, 1, 1, BIAS_NONE, MASK_NONE, 0},
    {15, -1, 0, 700, 400, 128, 1, 1, BIAS_NONE, MASK_NONE, 0},
    {100, 0, 1, 800, 1000, 64, 0, 2, BIAS_NONE, MASK_NONE, 0},
    {-1, 37, 0, 513, 1000, 64, 1, 2, BIAS_NONE, MASK_NONE, 0},
    {63, 63, 0, 1000, 900, 128, 0, 1, BIAS_NONE, MASK_NONE, 0},
    {-1, -1, 1, 600, 450, 64, 0, 2, BIAS_NONE, MASK_NONE, 0}, /* causal only */
  };
  run_windows(w, sizeof w / sizeof w[0], 300);
}
END_TEST

START_TEST(window_bias) {
  const wspec w[] = {
    {15, -1, 0, 700, 400, 128, 1, 1, BIAS_HEAD, MASK_NONE, 0},
    {100, 0, 1, 800, 1000, 128, 0, 2, BIAS_KV, MASK_NONE, 0},
    {-1, 37, 0, 513, 1000, 64, 1, 2, BIAS_ROW, MASK_NONE, 0},
    {63, 63, 0, 1000, 900, 64, 0, 1, BIAS_BATCH, MASK_NONE, 0},
    {0, 0, 0, 500, 300, 64, 1, 2, BIAS_HEAD, MASK_NONE, 0},
  };
  run_windows(w, sizeof w / sizeof w[0], 400);
}
END_TEST

START_TEST(window_mask) {
  const wspec w[] = {
    {63, 63, 0, 1000, 900, 64, 0, 2, BIAS_NONE, MASK_HEAD, 0.1},
    {-1, -1, 0, 400, 1000, 128, 1, 2, BIAS_NONE, MASK_KV, 0.9},
    {100, 0, 1, 600, 1000, 64, 1, 1, BIAS_NONE, MASK_ROW, 0.9},
    {-1, 37, 0, 513, 777, 128, 0, 2, BIAS_NONE, MASK_HEAD, 0.9},
    {15, -1, 1, 700, 400, 64, 0, 1, BIAS_NONE, MASK_KV, 0.1},
    {-1, -1, 0, 300, 333, 64, 1, 2, BIAS_NONE, MASK_HEAD, 0.0}, /* all zero: every row empty */
  };
  run_windows(w, sizeof w / sizeof w[0], 500);
}
END_TEST

START_TEST(window_bias_and_mask) {
  const wspec w[] = {
    {100, 0, 1, 600, 1000, 64, 1, 2, BIAS_HEAD, MASK_HEAD, 0.9},
    {63, 63, 0, 1000, 900, 128, 0, 1, BIAS_ROW, MASK_ROW, 0.1},
    {-1, 37, 0, 513, 1000, 64, 0, 1, BIAS_BATCH, MASK_KV, 0.9},
    {0, 0, 0, 700, 500, 128, 1, 2, BIAS_KV, MASK_HEAD, 0.9},
    {15, -1, 0, 400, 700, 64, 0, 2, BIAS_HEAD, MASK_KV, 0.1},
  };
  run_windows(w, sizeof w / sizeof w[0], 600);
}
END_TEST

/* sfa_check_indices on the device: the layouts above pass (also strided and
** on a user stream); an unsorted or wrongly padded array fails and names it. */
START_TEST(check_indices_device) {
  const sfa_mode modes[2] = {SFA_MODE_QK_DROP, SFA_MODE_HASH};
  for (int m = 0; m < 2; m++)
    for (int pad = 0; pad <= 4; pad += 4) {
      scase c = make(modes[m], 2, 200, 150, 64, SFA_DTYPE_FP16);
      c.T0 = 400, c.keep = 0.45, c.buckets = 8, c.idx_pad = pad;
      c.seed = base_seed + 700 + (uint64_t)(m * 2 + pad);
      srun R;
      case_setup(&R, &c);
      CUstream stream = NULL;
      CU(drv->cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING));
      sfa_status st = sfa_check_indices(ctx, &R.p, &R.ex, c.Tq, c.Tk, stream);
      ck_assert_msg(st == SFA_OK, "%s: valid layout rejected: %s", R.desc, sfa_last_error(ctx));

      /* k row (b 1, h 0): entry 1 repeats entry 0 (position and bucket). */
      int32_t *row = R.ki + (size_t)c.Hkv * c.Tk;
      ck_assert(row[0] != INT32_MAX && row[1] != INT32_MAX);
      row[1] = row[0];
      if (R.kh) R.kh[(size_t)c.Hkv * c.Tk + 1] = R.kh[(size_t)c.Hkv * c.Tk];
      CUdeviceptr old_ki = R.dki, old_kh = R.dkh;
      R.dki = upload_index(R.ki, c.B, c.Hkv, c.Tk, pad, &R.tki);
      if (R.kh) R.dkh = upload_index(R.kh, c.B, c.Hkv, c.Tk, pad, &R.tkh);
      drv->cuMemFree(old_ki);
      if (R.kh) drv->cuMemFree(old_kh);
      st = sfa_check_indices(ctx, &R.p, &R.ex, c.Tq, c.Tk, stream);
      const char *msg = sfa_last_error(ctx);
      ck_assert_msg(st == SFA_ERR_INVALID_ARGUMENT &&
                        strstr(msg, "extras->k_idx[1, 0, 1]") && strstr(msg, "is not greater"),
                    "%s: unsorted k_idx: status %s: %s", R.desc, sfa_status_string(st), msg);

      /* A real entry after padding in the last q row (all padding); batch 1's q
      ** rows are checked before its k rows. */
      const size_t last = (size_t)(c.B * c.Hq - 1) * c.Tq;
      R.qi[last + 3] = 7;
      if (R.qh) R.qh[last + 3] = 0;
      CUdeviceptr old_qi = R.dqi, old_qh = R.dqh;
      R.dqi = upload_index(R.qi, c.B, c.Hq, c.Tq, pad, &R.tqi);
      if (R.qh) R.dqh = upload_index(R.qh, c.B, c.Hq, c.Tq, pad, &R.tqh);
      drv->cuMemFree(old_qi);
      if (R.qh) drv->cuMemFree(old_qh);
      st = sfa_check_indices(ctx, &R.p, &R.ex, c.Tq, c.Tk, NULL);
      msg = sfa_last_error(ctx);
      ck_assert_msg(st == SFA_ERR_INVALID_ARGUMENT &&
                        strstr(msg, "extras->q_idx[1, 3, 3] = 7 follows padding"),
                    "%s: real q entry after padding: status %s: %s", R.desc,
                    sfa_status_string(st), msg);
      CU(drv->cuStreamDestroy(stream));
      case_free(&R);
    }
}
END_TEST

/* ------------------------------------------------------------ main */

int main(void) {
  char why[512];
  if (sfa__driver_load(&drv, why, sizeof why) != SFA_OK) {
    printf("SKIP: %s\n", why);
    return 77;
  }
  int count = 0, major = 0, minor = 0;
  if (drv->cuDeviceGetCount(&count) != CUDA_SUCCESS || count == 0) {
    printf("SKIP: no CUDA device\n");
    return 77;
  }
  if (drv->cuDeviceGet(&device, 0) != CUDA_SUCCESS ||
      drv->cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device) ||
      drv->cuDeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, device)) {
    printf("SKIP: cannot query device 0\n");
    return 77;
  }
  if (major < 8) {
    printf("SKIP: device 0 has compute capability %d.%d; sfa needs 8.0 or newer\n", major, minor);
    return 77;
  }
  const char *seed = getenv("SFA_TEST_SEED");
  if (seed && *seed) base_seed = strtoull(seed, NULL, 0);
  char name[128] = "?";
  drv->cuDeviceGetName(name, (int)sizeof name, device);
  printf("device 0: %s (sm_%d%d), seed %llu\n", name, major, minor,
         (unsigned long long)base_seed);

  if (drv->cuDevicePrimaryCtxRetain(&cuctx, device) != CUDA_SUCCESS ||
      drv->cuCtxSetCurrent(cuctx) != CUDA_SUCCESS) {
    printf("FAIL: cannot make the primary context of device 0 current\n");
    return 1;
  }
  /* A private kernel cache unless SFA_CACHE_DIR says otherwise. */
  const char *tmp = NULL;
  sfa_options opts;
  sfa_options_init(&opts);
  if (!getenv("SFA_CACHE_DIR")) opts.cache_dir = tmp = tu_mkdtemp();
  if (sfa_context_create(&ctx, &opts) != SFA_OK) {
    printf("FAIL: sfa_context_create: %s\n", ctx ? sfa_last_error(ctx) : "");
    return 1;
  }
  char *tmpdir = tmp ? strdup(tmp) : NULL;

  setenv("CK_FORK", "no", 1); /* one CUDA context for all tests */
  Suite *s = suite_create("gpu_sparse");
  TCase *t = tcase_create("gpu_sparse");
  tcase_set_timeout(t, 0);
  tcase_add_test(t, qk_drop_random);
  tcase_add_test(t, hash_buckets);
  tcase_add_test(t, window_plain);
  tcase_add_test(t, window_bias);
  tcase_add_test(t, window_mask);
  tcase_add_test(t, window_bias_and_mask);
  tcase_add_test(t, check_indices_device);
  suite_add_tcase(s, t);
  int rc = tu_run_suite(s);

  sfa_context_destroy(ctx);
  drv->cuDevicePrimaryCtxRelease(device);
  if (tmpdir) tu_rm_rf(tmpdir);
  free(tmpdir);
  return rc;
}
