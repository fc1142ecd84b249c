/*
** gpucase.c -- what the GPU suites (tests/test_gpu_*.c) share: opening the
** driver, device 0 and an sfa context with a private kernel cache, or
** skipping with exit 77 and the reason; half conversions; uploads; and the
** sparse-mode cases (qk_drop / hash index layouts, window bias and mask) with
** their float copies for the CPU reference. See gpucase.h.
*/
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpucase.h"
#include "runtime/internal.h"

const sfa_driver *tg_drv;
CUdevice tg_device;
CUcontext tg_cuctx;
sfa_context *tg_ctx;
uint64_t tg_seed;
int tg_cc;
char *tg_tmpdir;

const char *const tg_bias_names[] = {"none", "[B,Hq,Tq,Tk]+pad", "[B,Hkv,Tq,Tk]",
                                         "[B,1,1,Tk]", "[1,Hq,Tq,Tk]"};
const char *const tg_mask_names[] = {"none", "[B,Hq,Tq,Tk]", "[B,Hkv,Tq,Tk]", "[B,1,1,Tk]"};

double tg_tol_fwd(sfa_dtype t) { return t == SFA_DTYPE_BF16 ? 1e-2 : 5e-3; }
double tg_tol_bwd(sfa_dtype t) { return t == SFA_DTYPE_BF16 ? 2e-2 : 1e-2; }

uint16_t tg_to_half(sfa_dtype t, float f) { return sfa_float_to_half(t, f); }
float tg_from_half(sfa_dtype t, uint16_t h) { return sfa_half_to_float(t, h); }

int tg_open(const char *suite, uint64_t default_seed) {
  char why[512];
  tg_seed = default_seed;
  if (sfa__driver_load(&tg_drv, why, sizeof why) != SFA_OK) {
    printf("SKIP: %s\n", why);
    return 77;
  }
  int count = 0, major = 0, minor = 0;
  if (tg_drv->cuDeviceGetCount(&count) != CUDA_SUCCESS || count == 0) {
    printf("SKIP: no CUDA device\n");
    return 77;
  }
  if (tg_drv->cuDeviceGet(&tg_device, 0) != CUDA_SUCCESS ||
      tg_drv->cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
                                   tg_device) ||
      tg_drv->cuDeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
                                   tg_device)) {
    printf("SKIP: cannot query device 0\n");
    return 77;
  }
  if (major < 8) {
    printf("SKIP: device 0 has compute capability %d.%d; sfa needs 8.0 or newer\n", major,
           minor);
    return 77;
  }
  tg_cc = major * 10 + minor;
  const char *seed = getenv("SFA_TEST_SEED");
  if (seed && *seed) tg_seed = strtoull(seed, NULL, 0);
  char name[128] = "?";
  tg_drv->cuDeviceGetName(name, (int)sizeof name, tg_device);
  printf("%s: device 0: %s (sm_%d%d), seed %llu\n", suite, name, major, minor,
         (unsigned long long)tg_seed);
  if (tg_drv->cuDevicePrimaryCtxRetain(&tg_cuctx, tg_device) != CUDA_SUCCESS ||
      tg_drv->cuCtxSetCurrent(tg_cuctx) != CUDA_SUCCESS) {
    printf("FAIL: cannot make the primary context of device 0 current\n");
    return 1;
  }
  /* A private kernel cache unless SFA_CACHE_DIR says otherwise. */
  sfa_options opts;
  sfa_options_init(&opts);
  if (!getenv("SFA_CACHE_DIR")) {
    const char *tmp = tu_mkdtemp();
    tg_tmpdir = tmp ? strdup(tmp) : NULL;
    opts.cache_dir = tg_tmpdir;
  }
  if (sfa_context_create(&tg_ctx, &opts) != SFA_OK) {
    printf("FAIL: sfa_context_create: %s\n", tg_ctx ? sfa_last_error(tg_ctx) : "");
    return 1;
  }
  setenv("CK_FORK", "no", 1); /* one CUDA context for all tests */
  return 0;
}

void tg_close(void) {
  sfa_context_destroy(tg_ctx);
  tg_ctx = NULL;
  tg_drv->cuDevicePrimaryCtxRelease(tg_device);
  if (tg_tmpdir) tu_rm_rf(tg_tmpdir);
  free(tg_tmpdir);
  tg_tmpdir = NULL;
}

sfa_context *tg_push_mma(sfa_mma_kind kind) {
  sfa_context *saved = tg_ctx, *sctx = NULL;
  sfa_options o;
  sfa_options_init(&o);
  o.cache_dir = tg_tmpdir;
  o.mma = kind;
  ck_assert_msg(sfa_context_create(&sctx, &o) == SFA_OK, "%s", sctx ? sfa_last_error(sctx) : "");
  tg_ctx = sctx;
  return saved;
}

void tg_pop_context(sfa_context *saved) {
  sfa_context_destroy(tg_ctx);
  tg_ctx = saved;
}

/* ------------------------------------------------------------ cases */

scase tg_case(sfa_mode mode, int Hkv, int Tq, int Tk, int D, sfa_dtype dt) {
  scase c;
  memset(&c, 0, sizeof c);
  c.mode = mode;
  c.B = 2, c.Hq = 4, c.Hkv = Hkv, c.Tq = Tq, c.Tk = Tk, c.D = D, c.dtype = dt;
  c.left = c.right = -1;
  return c;
}

void tg_case_describe(const scase *c, char *buf, size_t n) {
  int at = snprintf(buf, n, "B=%d Hq=%d Hkv=%d Tq=%d Tk=%d D=%d %s ", c->B, c->Hq, c->Hkv,
                    c->Tq, c->Tk, c->D, c->dtype == SFA_DTYPE_BF16 ? "bf16" : "fp16");
  if (at < 0 || (size_t)at >= n) return;
  if (c->mode == SFA_MODE_QK_DROP)
    snprintf(buf + at, n - (size_t)at, "qk_drop T0=%d drop=%.0f%% idx_pad=%d seed=%llu", c->T0,
             100 * (1 - c->keep), c->idx_pad, (unsigned long long)c->seed);
  else if (c->mode == SFA_MODE_HASH)
    snprintf(buf + at, n - (size_t)at, "hash buckets=%d idx_pad=%d seed=%llu", c->buckets,
             c->idx_pad, (unsigned long long)c->seed);
  else if (c->mode == SFA_MODE_DENSE)
    snprintf(buf + at, n - (size_t)at, "dense%s seed=%llu", c->causal ? " causal" : "",
             (unsigned long long)c->seed);
  else
    snprintf(buf + at, n - (size_t)at,
             "window (%d,%d)%s bias=%s mask=%s density=%.0f%% seed=%llu", c->left, c->right,
             c->causal ? " causal" : "", tg_bias_names[c->bias], tg_mask_names[c->mask],
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


double tg_rel_err(sfa_dtype dt, const uint16_t *got, const float *want, size_t n, long *nan) {
  double d2 = 0, w2 = 0;
  for (size_t i = 0; i < n; i++) {
    const float g = tg_from_half(dt, got[i]);
    if (isnan(g) || isnan(want[i])) {
      (*nan)++;
      continue;
    }
    const double d = (double)g - want[i];
    d2 += d * d;
    w2 += (double)want[i] * want[i];
  }
  return w2 > 0 ? sqrt(d2 / w2) : sqrt(d2);
}

CUdeviceptr tg_upload(const void *host, size_t bytes) {
  CUdeviceptr p = 0;
  TG_CU(tg_drv->cuMemAlloc(&p, bytes));
  TG_CU(tg_drv->cuMemcpyHtoD(p, host, bytes));
  return p;
}

/* An int32 [B, H, T] array on the device with `pad` poisoned elements after
** each row; *t describes it. */
CUdeviceptr tg_upload_index(const int32_t *host, int B, int H, int T, int pad,
                                sfa_tensor *t) {
  const size_t rs = (size_t)T + (size_t)pad, rows = (size_t)B * H;
  int32_t *buf = malloc(rows * rs * sizeof *buf);
  ck_assert_ptr_nonnull(buf);
  for (size_t r = 0; r < rows; r++) {
    memcpy(buf + r * rs, host + r * (size_t)T, (size_t)T * sizeof *buf);
    for (size_t x = (size_t)T; x < rs; x++) buf[r * rs + x] = 0x5A5A5A5A;
  }
  CUdeviceptr d = tg_upload(buf, rows * rs * sizeof *buf);
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
    if (real < 0) real = 0; /* rows shorter than 16 */
    hash_row(R->qi + (size_t)r * c->Tq, R->qh + (size_t)r * c->Tq, c->Tq, real, c->buckets, -1,
             rng);
  }
  for (int r = 0; r < c->B * c->Hkv; r++) {
    int real = c->Tk - (int)(tu_rand_u64(rng) % 16);
    if (real < 0) real = 0;
    hash_row(R->ki + (size_t)r * c->Tk, R->kh + (size_t)r * c->Tk, c->Tk, real, c->buckets,
             INT32_MAX, rng);
  }
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
        uint16_t h = tg_to_half(c->dtype, (float)(1.5 * tu_rand_normal(rng)));
        buf[r * rs + j] = h;
        R->rbias[r * Tk + j] = tg_from_half(c->dtype, h);
      }
    for (int b = 1; b < B && Bb == 1; b++) /* the reference has no batch broadcast */
      memcpy(R->rbias + b * per_b, R->rbias, per_b * sizeof *R->rbias);
    R->dbias = tg_upload(buf, (size_t)Bb * heads * rows * rs * 2);
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
    R->dmask = tg_upload(buf, nrow * rs);
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
    h[i] = tg_to_half(c->dtype, (float)tu_rand_normal(rng));
    ref[i] = tg_from_half(c->dtype, h[i]);
  }
  return h;
}

scase tg_window_case(const tg_wspec *w, uint64_t seed) {
  scase c = tg_case(SFA_MODE_WINDOW, w->Hkv, w->Tq, w->Tk, w->D,
                    w->bf16 ? SFA_DTYPE_BF16 : SFA_DTYPE_FP16);
  c.left = w->left, c.right = w->right, c.causal = w->causal;
  c.bias = w->bias, c.mask = w->mask, c.density = w->density;
  c.seed = seed;
  return c;
}

void tg_case_setup(srun *R, const scase *c) {
  memset(R, 0, sizeof *R);
  R->c = *c;
  tg_case_describe(c, R->desc, sizeof R->desc);
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
  R->dq = tg_upload(R->hq, R->nq * 2), R->dk = tg_upload(R->hk, R->nk * 2);
  R->dv = tg_upload(R->hv, R->nk * 2);
  TG_CU(tg_drv->cuMemAlloc(&R->dout, R->nq * 2));
  TG_CU(tg_drv->cuMemAlloc(&R->dl, R->nrows * 4));
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
    R->dqi = tg_upload_index(R->qi, c->B, c->Hq, c->Tq, c->idx_pad, &R->tqi);
    R->dki = tg_upload_index(R->ki, c->B, c->Hkv, c->Tk, c->idx_pad, &R->tki);
    R->ex.q_idx = &R->tqi, R->ex.k_idx = &R->tki;
    R->hx.q_idx = R->qi, R->hx.k_idx = R->ki;
    if (c->mode == SFA_MODE_HASH) {
      R->dqh = tg_upload_index(R->qh, c->B, c->Hq, c->Tq, c->idx_pad, &R->tqh);
      R->dkh = tg_upload_index(R->kh, c->B, c->Hkv, c->Tk, c->idx_pad, &R->tkh);
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

void tg_case_free(srun *R) {
  CUdeviceptr *d[] = {&R->dq, &R->dk, &R->dv, &R->dout, &R->dl, &R->dqi,
                      &R->dki, &R->dqh, &R->dkh, &R->dbias, &R->dmask};
  for (size_t i = 0; i < sizeof d / sizeof d[0]; i++)
    if (*d[i]) tg_drv->cuMemFree(*d[i]);
  free(R->rq), free(R->rk), free(R->rv), free(R->ro), free(R->rl);
  free(R->hq), free(R->hk), free(R->hv), free(R->ho), free(R->hl);
  free(R->qi), free(R->ki), free(R->qh), free(R->kh), free(R->rbias), free(R->rmask);
  memset(R, 0, sizeof *R);
}

/* ------------------------------------------------------------ one forward case */

/* Poison the outputs, launch, wait. */
void tg_case_launch(srun *R) {
  const scase *c = &R->c;
  TG_CU(tg_drv->cuMemsetD8(R->dout, 0xFF, R->nq * 2)); /* NaN: an unwritten element fails */
  TG_CU(tg_drv->cuMemsetD8(R->dl, 0xFF, R->nrows * 4));
  if (c->mode == SFA_MODE_QK_DROP || c->mode == SFA_MODE_HASH) {
    sfa_status st = sfa_check_indices(tg_ctx, &R->p, &R->ex, c->Tq, c->Tk, NULL);
    ck_assert_msg(st == SFA_OK, "%s: sfa_check_indices: %s: %s", R->desc,
                  sfa_status_string(st), sfa_last_error(tg_ctx));
  }
  sfa_status st = sfa_forward(tg_ctx, &R->p, &R->tq, &R->tk, &R->tv, R->has_ex ? &R->ex : NULL,
                              &R->to, &R->tl, NULL);
  ck_assert_msg(st == SFA_OK, "%s: sfa_forward: %s: %s", R->desc, sfa_status_string(st),
                sfa_last_error(tg_ctx));
  CUresult r = tg_drv->cuCtxSynchronize();
  const char *name = "?";
  if (r != CUDA_SUCCESS) tg_drv->cuGetErrorName(r, &name);
  ck_assert_msg(r == CUDA_SUCCESS, "%s: after the launch: %s", R->desc, name);
}

void tg_case_verify(srun *R) {
  const scase *c = &R->c;
  TG_CU(tg_drv->cuMemcpyDtoH(R->ho, R->dout, R->nq * 2));
  TG_CU(tg_drv->cuMemcpyDtoH(R->hl, R->dl, R->nrows * 4));
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
      const float o = tg_from_half(c->dtype, R->ho[x]);
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

sfa_kernel_spec tg_case_kernel(sfa_pass pass, const scase *c) {
  srun R;
  tg_case_setup(&R, c);
  sfa_kernel_spec specs[SFA__CALL_MAX_KERNELS];
  int n = 0;
  sfa_status st = sfa__call_kernels(tg_ctx, pass, &R.p, R.has_ex ? &R.ex : NULL, c->dtype, c->D,
                                    90, specs, SFA__CALL_MAX_KERNELS, &n);
  tg_case_free(&R);
  ck_assert_msg(st == SFA_OK && n >= 1, "sfa__call_kernels: %s", sfa_last_error(tg_ctx));
  return specs[0];
}

void tg_case_run(const scase *c) {
  srun R;
  tg_case_setup(&R, c);
  tg_case_launch(&R);
  tg_case_verify(&R);
  tg_case_free(&R);
}

/* ------------------------------------------------------------ gradients */

void tg_grads_setup(tg_grads *G, const srun *R, uint64_t *rng) {
  const scase *c = &R->c;
  memset(G, 0, sizeof *G);
  uint16_t *h = malloc(R->nq * 2);
  G->rdo = malloc(R->nq * 4);
  ck_assert(h && G->rdo);
  for (size_t i = 0; i < R->nq; i++) {
    h[i] = tg_to_half(c->dtype, (float)tu_rand_normal(rng));
    G->rdo[i] = tg_from_half(c->dtype, h[i]);
  }
  G->ddo = tg_upload(h, R->nq * 2);
  free(h);
  const int64_t qs[4] = {c->B, c->Hq, c->Tq, c->D}, ks[4] = {c->B, c->Hkv, c->Tk, c->D};
  TG_CU(tg_drv->cuMemAlloc(&G->ddq, R->nq * 2));
  TG_CU(tg_drv->cuMemAlloc(&G->ddk, R->nk * 2));
  TG_CU(tg_drv->cuMemAlloc(&G->ddv, R->nk * 2));
  sfa_tensor_init(&G->tdo, (void *)(uintptr_t)G->ddo, c->dtype, 4, qs);
  sfa_tensor_init(&G->tdq, (void *)(uintptr_t)G->ddq, c->dtype, 4, qs);
  sfa_tensor_init(&G->tdk, (void *)(uintptr_t)G->ddk, c->dtype, 4, ks);
  sfa_tensor_init(&G->tdv, (void *)(uintptr_t)G->ddv, c->dtype, 4, ks);
  if (R->ex.bias) { /* dbias: contiguous, the bias's shape */
    const sfa_tensor *b = R->ex.bias;
    G->nb = (size_t)(b->shape[0] * b->shape[1] * b->shape[2] * b->shape[3]);
    TG_CU(tg_drv->cuMemAlloc(&G->ddb, G->nb * 2));
    sfa_tensor_init(&G->tdb, (void *)(uintptr_t)G->ddb, c->dtype, 4, b->shape);
  }
  G->hdq = malloc(R->nq * 2), G->hdk = malloc(R->nk * 2), G->hdv = malloc(R->nk * 2);
  G->hdb = malloc(G->nb ? G->nb * 2 : 1);
  ck_assert(G->hdq && G->hdk && G->hdv && G->hdb);
}

void tg_grads_free(tg_grads *G) {
  CUdeviceptr *d[] = {&G->ddo, &G->ddq, &G->ddk, &G->ddv, &G->ddb};
  for (size_t i = 0; i < sizeof d / sizeof d[0]; i++)
    if (*d[i]) tg_drv->cuMemFree(*d[i]);
  free(G->rdo), free(G->hdq), free(G->hdk), free(G->hdv), free(G->hdb);
  memset(G, 0, sizeof *G);
}
