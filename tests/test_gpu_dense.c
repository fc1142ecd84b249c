/*
** test_gpu_dense.c -- the dense forward kernel on a real GPU against the
** float64 CPU reference: random shapes (batch, GQA/MQA heads, ragged and
** unequal Tq/Tk, every head dim, fp16 and bf16, causal on and off), strided
** and padded inputs and outputs in other stride orders, user streams, a
** thread without a current context, and the public sfa_compile.
**
** Outputs (and input padding) are poisoned with NaN bit patterns before every
** run: every output element must be written, nothing outside the logical
** tensors may be, and NaN never passes. Without a driver or a device the suite
** prints "SKIP: <reason>" and exits 77 (CTest's skip code).
**
** The tests share one CUDA context and one sfa context, so Check runs them in
** this process (CK_FORK=no). SFA_TEST_SEED changes the random cases; each
** failure names its case and seed.
*/
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sfa.h"
#include "runtime/driver.h"
#include "gpucase.h"

static const sfa_driver *drv;
static CUdevice device;
static CUcontext cuctx;
static sfa_context *ctx;
static int device_arch;  /* what sfa compiles for on this device */
static int device_cc;
static uint64_t base_seed = 0x5FA0001;

#define CU(call) TG_CU(call)

/* ------------------------------------------------------------ half precision */

static uint16_t to_bf16(float f) { return sfa_float_to_half(SFA_DTYPE_BF16, f); }
static float from_bf16(uint16_t h) { return sfa_half_to_float(SFA_DTYPE_BF16, h); }
static uint16_t to_fp16(float f) { return sfa_float_to_half(SFA_DTYPE_FP16, f); }
static float from_fp16(uint16_t h) { return sfa_half_to_float(SFA_DTYPE_FP16, h); }

static uint16_t to_half(sfa_dtype t, float f) { return t == SFA_DTYPE_BF16 ? to_bf16(f) : to_fp16(f); }
static float from_half(sfa_dtype t, uint16_t h) { return t == SFA_DTYPE_BF16 ? from_bf16(h) : from_fp16(h); }

START_TEST(half_conversions) {
  const float exact[] = {0.0f, 1.0f, -2.5f, 0.15625f, 65504.0f, 6.103515625e-05f,
                         5.9604644775390625e-08f};
  for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++)
    ck_assert(from_fp16(to_fp16(exact[i])) == exact[i]);
  ck_assert_int_eq(to_fp16(1.0f), 0x3c00);
  ck_assert_int_eq(to_fp16(1.0f + 1.0f / 2048), 0x3c00);             /* tie to even */
  ck_assert_int_eq(to_fp16(1.0f + 3.0f / 2048), 0x3c02);             /* tie to even, up */
  ck_assert_int_eq(to_fp16(70000.0f), 0x7c00);
  ck_assert_int_eq(to_fp16(2.98023224e-08f), 0x0000);                /* 2^-25 ties to 0 */
  ck_assert_int_eq(to_bf16(1.0f), 0x3f80);
  ck_assert_int_eq(to_bf16(1.0f + 1.0f / 256), 0x3f80);              /* tie to even */
  ck_assert_int_eq(to_bf16(1.0f + 3.0f / 256), 0x3f82);
  ck_assert(from_bf16(to_bf16(-3.0f)) == -3.0f);
  ck_assert(isnan(from_fp16(0xFFFF)) && isnan(from_bf16(0xFFFF)));
}
END_TEST

/* ------------------------------------------------------------ layouts */

/* Storage of a logical [B, H, T, D] tensor: `order` lists the logical dims B
** (0), H (1), T (2) from outermost to innermost, D is innermost, and each row
** of D elements is followed by `pad` unused elements. */
typedef struct layout {
  int order[3];
  int pad;
} layout;

static const layout BHTD = {{0, 1, 2}, 0};
static const layout BTHD = {{0, 2, 1}, 0};
static const layout TBHD = {{2, 0, 1}, 0};
static const layout BHTD_PAD = {{0, 1, 2}, 8};
static const layout HBTD_PAD = {{1, 0, 2}, 16};

static void layout_strides(const layout *l, const int64_t shape[4], int64_t strides[4],
                           size_t *elems) {
  int64_t s = shape[3] + l->pad;
  strides[3] = 1;
  for (int k = 2; k >= 0; k--) {
    strides[l->order[k]] = s;
    s *= shape[l->order[k]];
  }
  *elems = (size_t)s;
}

static size_t offset(const int64_t strides[4], int64_t b, int64_t h, int64_t t, int64_t x) {
  return (size_t)(b * strides[0] + h * strides[1] + t * strides[2] + x);
}

/* ------------------------------------------------------------ one case */

typedef struct gcase {
  int B, Hq, Hkv, Tq, Tk, D, causal;
  sfa_dtype dtype;
  float scale;
  layout lq, lkv, lo;
  int lse;        /* 0 none, 1 contiguous, 2 padded head-major rows */
  int stream;     /* launch on a user-created stream */
  uint64_t seed;
} gcase;

static gcase plain(int B, int Hq, int Hkv, int Tq, int Tk, int D, int causal, sfa_dtype dt) {
  gcase c = {B, Hq, Hkv, Tq, Tk, D, causal, dt, 0.0f, BHTD, BHTD, BHTD, 1, 0, 0};
  return c;
}

static void describe(const gcase *c, char *buf, size_t n) {
  snprintf(buf, n,
           "B=%d Hq=%d Hkv=%d Tq=%d Tk=%d D=%d %s %s scale=%g layouts q%d%d%d+%d kv%d%d%d+%d "
           "o%d%d%d+%d lse=%d stream=%d seed=%llu",
           c->B, c->Hq, c->Hkv, c->Tq, c->Tk, c->D, c->dtype == SFA_DTYPE_BF16 ? "bf16" : "fp16",
           c->causal ? "causal" : "full", (double)c->scale, c->lq.order[0], c->lq.order[1],
           c->lq.order[2], c->lq.pad, c->lkv.order[0], c->lkv.order[1], c->lkv.order[2],
           c->lkv.pad, c->lo.order[0], c->lo.order[1], c->lo.order[2], c->lo.pad, c->lse,
           c->stream, (unsigned long long)c->seed);
}

/* Host data in storage order, poisoned (0xFFFF) outside the logical tensor;
** `ref` gets the rounded values in contiguous [B, H, T, D] order. */
static uint16_t *make_input(const gcase *c, const layout *l, const int64_t shape[4],
                            int64_t strides[4], size_t *elems, float *ref, uint64_t *rng) {
  layout_strides(l, shape, strides, elems);
  uint16_t *h = malloc(*elems * 2);
  ck_assert_ptr_nonnull(h);
  memset(h, 0xFF, *elems * 2);
  size_t i = 0;
  for (int64_t b = 0; b < shape[0]; b++)
    for (int64_t hh = 0; hh < shape[1]; hh++)
      for (int64_t t = 0; t < shape[2]; t++)
        for (int64_t x = 0; x < shape[3]; x++, i++) {
          uint16_t v = to_half(c->dtype, (float)tu_rand_normal(rng));
          h[offset(strides, b, hh, t, x)] = v;
          ref[i] = from_half(c->dtype, v);
        }
  return h;
}

static CUdeviceptr upload(const void *host, size_t bytes) {
  CUdeviceptr p = 0;
  CU(drv->cuMemAlloc(&p, bytes));
  CU(drv->cuMemcpyHtoD(p, host, bytes));
  return p;
}

/* One case in flight: host data, device buffers and tensor descriptions. */
typedef struct run {
  gcase c;
  char desc[400];
  float *rq, *rk, *rv, *ro, *rl;   /* reference inputs and outputs, [B, H, T, D] */
  uint16_t *hq, *hk, *hv, *ho;     /* storage order */
  float *hl;
  int64_t so[4], sl[3];
  size_t eo, el;
  CUdeviceptr dq, dk, dv, dout, dl;
  sfa_tensor tq, tk, tv, to, tl;
  sfa_attention_params p;
} run;

static void case_setup(run *R, const gcase *c) {
  memset(R, 0, sizeof *R);
  R->c = *c;
  describe(c, R->desc, sizeof R->desc);
  uint64_t rng = c->seed ? c->seed : 1;
  const int64_t qshape[4] = {c->B, c->Hq, c->Tq, c->D}, kshape[4] = {c->B, c->Hkv, c->Tk, c->D};
  const size_t nq = (size_t)c->B * c->Hq * c->Tq * c->D, nk = (size_t)c->B * c->Hkv * c->Tk * c->D;
  const size_t nrows = (size_t)c->B * c->Hq * c->Tq;
  R->rq = malloc(nq * 4), R->rk = malloc(nk * 4), R->rv = malloc(nk * 4);
  R->ro = malloc(nq * 4), R->rl = malloc(nrows * 4);
  ck_assert(R->rq && R->rk && R->rv && R->ro && R->rl);

  int64_t sq[4], sk[4], sv[4];
  size_t eq, ek, ev;
  R->hq = make_input(c, &c->lq, qshape, sq, &eq, R->rq, &rng);
  R->hk = make_input(c, &c->lkv, kshape, sk, &ek, R->rk, &rng);
  R->hv = make_input(c, &c->lkv, kshape, sv, &ev, R->rv, &rng);
  layout_strides(&c->lo, qshape, R->so, &R->eo);
  R->ho = malloc(R->eo * 2);
  ck_assert_ptr_nonnull(R->ho);

  /* lse: contiguous, or rows of Tq + 3 floats with the head outermost. */
  int64_t lshape[3] = {c->B, c->Hq, c->Tq};
  R->sl[0] = (int64_t)c->Hq * c->Tq, R->sl[1] = c->Tq, R->sl[2] = 1;
  R->el = nrows;
  if (c->lse == 2) {
    R->sl[0] = c->Tq + 3;
    R->sl[1] = (int64_t)c->B * (c->Tq + 3);
    R->el = (size_t)c->Hq * c->B * (c->Tq + 3);
  }
  R->hl = malloc(R->el * 4);
  ck_assert_ptr_nonnull(R->hl);

  R->dq = upload(R->hq, eq * 2), R->dk = upload(R->hk, ek * 2), R->dv = upload(R->hv, ev * 2);
  CU(drv->cuMemAlloc(&R->dout, R->eo * 2));
  CU(drv->cuMemsetD8(R->dout, 0xFF, R->eo * 2)); /* NaN: unwritten output fails */
  if (c->lse) {
    CU(drv->cuMemAlloc(&R->dl, R->el * 4));
    CU(drv->cuMemsetD8(R->dl, 0xFF, R->el * 4));
  }
  /* The memsets run on the legacy stream, which a CU_STREAM_NON_BLOCKING
  ** stream does not wait for: finish them before a launch on one, or they
  ** may overwrite the output after the kernel (seen on an H100 under load). */
  CU(drv->cuCtxSynchronize());

  sfa_tensor_init(&R->tq, (void *)(uintptr_t)R->dq, c->dtype, 4, qshape);
  sfa_tensor_init(&R->tk, (void *)(uintptr_t)R->dk, c->dtype, 4, kshape);
  sfa_tensor_init(&R->tv, (void *)(uintptr_t)R->dv, c->dtype, 4, kshape);
  sfa_tensor_init(&R->to, (void *)(uintptr_t)R->dout, c->dtype, 4, qshape);
  sfa_tensor_init(&R->tl, (void *)(uintptr_t)R->dl, SFA_DTYPE_FP32, 3, lshape);
  memcpy(R->tq.strides, sq, sizeof sq);
  memcpy(R->tk.strides, sk, sizeof sk);
  memcpy(R->tv.strides, sv, sizeof sv);
  memcpy(R->to.strides, R->so, sizeof R->so);
  memcpy(R->tl.strides, R->sl, sizeof R->sl);
  sfa_params_init(&R->p);
  R->p.causal = c->causal;
  R->p.scale = c->scale;
}

/* Launch and wait; no Check assertions here (it also runs on other threads).
** Returns the sfa status, or SFA_ERR_CUDA with the driver error in *cu. */
static sfa_status case_launch(run *R, sfa_context *sctx, CUresult *cu) {
  CUstream stream = NULL;
  *cu = CUDA_SUCCESS;
  if (R->c.stream && (*cu = drv->cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING)) != CUDA_SUCCESS)
    return SFA_ERR_CUDA;
  sfa_status st = sfa_forward(sctx, &R->p, &R->tq, &R->tk, &R->tv, NULL, &R->to,
                              R->c.lse ? &R->tl : NULL, stream);
  if (stream) {
    CUresult r = drv->cuStreamSynchronize(stream);
    if (*cu == CUDA_SUCCESS) *cu = r;
    drv->cuStreamDestroy(stream);
  }
  CUresult r = drv->cuCtxSynchronize();
  if (*cu == CUDA_SUCCESS) *cu = r;
  if (st == SFA_OK && *cu != CUDA_SUCCESS) st = SFA_ERR_CUDA;
  return st;
}

static void case_check_launch(run *R, sfa_status st, CUresult cu, sfa_context *sctx) {
  const char *name = "?";
  if (cu != CUDA_SUCCESS) drv->cuGetErrorName(cu, &name);
  ck_assert_msg(st == SFA_OK, "%s: sfa_forward: %s: %s%s%s", R->desc, sfa_status_string(st),
                sfa_last_error(sctx), cu != CUDA_SUCCESS ? " / after the launch: " : "",
                cu != CUDA_SUCCESS ? name : "");
}

static void case_verify(run *R) {
  const gcase *c = &R->c;
  const char *desc = R->desc;
  CU(drv->cuMemcpyDtoH(R->ho, R->dout, R->eo * 2));
  if (c->lse) CU(drv->cuMemcpyDtoH(R->hl, R->dl, R->el * 4));

  char why[256];
  ck_assert_msg(sfa_reference_forward(&R->p, c->B, c->Hq, c->Hkv, c->Tq, c->Tk, c->D, R->rq,
                                      R->rk, R->rv, NULL, R->ro, R->rl, why, sizeof why) == SFA_OK,
                "%s: reference: %s", desc, why);

  const float *ro = R->ro, *rl = R->rl, *hl = R->hl;
  const uint16_t *ho = R->ho;
  const int64_t *so = R->so, *sl = R->sl;
  double diff2 = 0, ref2 = 0, max_abs = 0, lse_err = 0;
  long nan = 0, bad_empty = 0, outside = 0;
  size_t first_bad = (size_t)-1, i = 0;
#define BAD(counter) (counter++, first_bad = first_bad < row ? first_bad : row)
  for (int64_t b = 0; b < c->B; b++)
    for (int64_t h = 0; h < c->Hq; h++)
      for (int64_t t = 0; t < c->Tq; t++) {
        size_t row = ((size_t)b * c->Hq + h) * c->Tq + t;
        int empty = isinf(rl[row]) && rl[row] < 0;
        if (c->lse) {
          float g = hl[b * sl[0] + h * sl[1] + t];
          if (empty) {
            if (!(isinf(g) && g < 0)) BAD(bad_empty);
          } else if (!isfinite(g)) {
            BAD(nan);
          } else if (fabs((double)g - rl[row]) > lse_err) {
            lse_err = fabs((double)g - rl[row]);
          }
        }
        for (int64_t x = 0; x < c->D; x++, i++) {
          float g = from_half(c->dtype, ho[offset(so, b, h, t, x)]);
          if (isnan(g)) {
            BAD(nan);
            continue;
          }
          if (empty && g != 0.0f) BAD(bad_empty);
          double d = fabs((double)g - ro[i]);
          diff2 += d * d;
          ref2 += (double)ro[i] * ro[i];
          if (d > max_abs) max_abs = d;
        }
      }
#undef BAD
  /* Nothing outside the logical output may be written: padding keeps its poison. */
  if (c->lo.pad)
    for (size_t r = 0; r < R->eo / (size_t)(c->D + c->lo.pad); r++)
      for (int x = c->D; x < c->D + c->lo.pad; x++)
        outside += ho[r * (size_t)(c->D + c->lo.pad) + (size_t)x] != 0xFFFF;
  if (c->lse == 2)
    for (size_t r = 0; r < (size_t)c->Hq * c->B; r++)
      for (int x = c->Tq; x < c->Tq + 3; x++) {
        uint32_t bits;
        memcpy(&bits, &hl[r * (size_t)(c->Tq + 3) + (size_t)x], 4);
        outside += bits != 0xFFFFFFFFu;
      }

  double rel = ref2 > 0 ? sqrt(diff2 / ref2) : sqrt(diff2);
  double tol = c->dtype == SFA_DTYPE_BF16 ? 1e-2 : 5e-3;
  char where[96] = "";
  if (first_bad != (size_t)-1)
    snprintf(where, sizeof where, " first bad row (b,h,t)=(%zu,%zu,%zu)",
             first_bad / ((size_t)c->Hq * c->Tq), first_bad / c->Tq % c->Hq,
             first_bad % c->Tq);
  ck_assert_msg(nan == 0 && bad_empty == 0 && outside == 0 && rel < tol && lse_err < 1e-2,
                "%s: rel_err=%.3e (tol %.0e) max_abs=%.3e lse_err=%.3e nan/unwritten=%ld "
                "bad_empty=%ld written_outside=%ld%s",
                desc, rel, tol, max_abs, lse_err, nan, bad_empty, outside, where);
}

static void case_free(run *R) {
  if (R->dq) drv->cuMemFree(R->dq);
  if (R->dk) drv->cuMemFree(R->dk);
  if (R->dv) drv->cuMemFree(R->dv);
  if (R->dout) drv->cuMemFree(R->dout);
  if (R->dl) drv->cuMemFree(R->dl);
  free(R->rq), free(R->rk), free(R->rv), free(R->ro), free(R->rl);
  free(R->hq), free(R->hk), free(R->hv), free(R->ho), free(R->hl);
  memset(R, 0, sizeof *R);
}

/* Setup, launch on ctx, verify, free. (A failed assertion leaks the case's
** buffers; the suite stops caring at that point.) */
static void run_case(const gcase *c) {
  run R;
  CUresult cu;
  case_setup(&R, c);
  sfa_status st = case_launch(&R, ctx, &cu);
  case_check_launch(&R, st, cu, ctx);
  case_verify(&R);
  case_free(&R);
}

/* ------------------------------------------------------------ tests */

START_TEST(every_head_dim_and_dtype) {
  const int dims[] = {32, 64, 96, 128, 256};
  for (int di = 0; di < 5; di++)
    for (int t = 0; t < 2; t++)
      for (int causal = 0; causal <= 1; causal++) {
        gcase c = plain(2, 4, 2, 100, 100, dims[di], causal, t ? SFA_DTYPE_BF16 : SFA_DTYPE_FP16);
        c.seed = base_seed + (uint64_t)(di * 4 + t * 2 + causal);
        run_case(&c);
      }
}
END_TEST

START_TEST(ragged_and_unequal_lengths) {
  /* Tq != Tk both ways: with causal, Tq > Tk leaves the first Tq - Tk rows
  ** empty (o = 0, lse = -inf). */
  const int lens[][2] = {{1, 1}, {1, 257}, {257, 1}, {17, 1000}, {1000, 17},
                         {100, 257}, {257, 100}, {64, 128}, {129, 65}};
  for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++)
    for (int causal = 0; causal <= 1; causal++) {
      gcase c = plain(1, 2, 1, lens[i][0], lens[i][1], 64, causal,
                      i % 2 ? SFA_DTYPE_FP16 : SFA_DTYPE_BF16);
      c.seed = base_seed + 100 + 2 * i + (uint64_t)causal;
      run_case(&c);
    }
}
END_TEST

START_TEST(gqa_and_mqa) {
  const int heads[][2] = {{8, 1}, {8, 2}, {8, 4}, {4, 4}, {2, 1}};
  for (size_t i = 0; i < 5; i++) {
    gcase c = plain(2, heads[i][0], heads[i][1], 77, 130, 128, (int)(i % 2), SFA_DTYPE_BF16);
    c.seed = base_seed + 200 + i;
    run_case(&c);
  }
}
END_TEST

START_TEST(strided_inputs_and_outputs) {
  /* q as a slice of a [B, T, H, D] buffer, k/v with padded rows, o in other
  ** stride orders, lse padded and head-major. */
  const layout *lq[] = {&BTHD, &BHTD_PAD, &TBHD, &BTHD};
  const layout *lkv[] = {&BHTD_PAD, &BTHD, &HBTD_PAD, &TBHD};
  const layout *lo[] = {&TBHD, &HBTD_PAD, &BTHD, &BHTD_PAD};
  for (int i = 0; i < 4; i++) {
    gcase c = plain(2, 4, 2, 130, 97, i == 2 ? 256 : 64, i % 2, i < 2 ? SFA_DTYPE_BF16 : SFA_DTYPE_FP16);
    c.lq = *lq[i], c.lkv = *lkv[i], c.lo = *lo[i];
    c.lse = i % 2 ? 2 : 1;
    c.seed = base_seed + 300 + (uint64_t)i;
    run_case(&c);
  }
}
END_TEST

START_TEST(user_stream_scale_and_no_lse) {
  gcase c = plain(3, 2, 2, 257, 257, 128, 1, SFA_DTYPE_BF16);
  c.stream = 1;
  c.seed = base_seed + 400;
  run_case(&c);
  c.scale = 0.3f;
  c.lse = 0;
  c.seed++;
  run_case(&c);
  c.stream = 0;
  c.scale = 0.02f;
  c.lse = 1;
  c.dtype = SFA_DTYPE_FP16;
  c.seed++;
  run_case(&c);
}
END_TEST

START_TEST(random_shapes) {
  const int hq_set[] = {1, 2, 4, 8}, len_set[] = {1, 17, 64, 100, 257, 1000};
  const int d_set[] = {32, 64, 96, 128, 256};
  const layout *lay[] = {&BHTD, &BTHD, &TBHD, &BHTD_PAD, &HBTD_PAD};
  for (int n = 0; n < 40; n++) {
    uint64_t seed = base_seed + 1000 + (uint64_t)n, r = seed;
    gcase c;
    do {
      c = plain(1 + (int)(tu_rand_u64(&r) % 3), hq_set[tu_rand_u64(&r) % 4], 1,
                len_set[tu_rand_u64(&r) % 6], len_set[tu_rand_u64(&r) % 6],
                d_set[tu_rand_u64(&r) % 5], (int)(tu_rand_u64(&r) % 2),
                tu_rand_u64(&r) % 2 ? SFA_DTYPE_BF16 : SFA_DTYPE_FP16);
      do c.Hkv = hq_set[tu_rand_u64(&r) % 4];
      while (c.Hq % c.Hkv);
    } while ((double)c.B * c.Hq * c.Tq * (double)c.Tk * c.D > 3e8); /* reference cost */
    if (n % 3 == 0) {
      c.lq = *lay[tu_rand_u64(&r) % 5];
      c.lkv = *lay[tu_rand_u64(&r) % 5];
      c.lo = *lay[tu_rand_u64(&r) % 5];
      c.lse = 1 + (int)(tu_rand_u64(&r) % 2);
    }
    c.stream = n % 4 == 1;
    c.seed = seed;
    run_case(&c);
  }
}
END_TEST

/* A thread with no current CUDA context: a fresh sfa context retains the
** primary context of device 0 (the one main made current) and works there.
** The thread only launches; Check assertions stay on the main thread. */
typedef struct thread_job {
  run *R;
  sfa_status st;
  CUresult cu;
  CUcontext before, after;
  char err[512];
} thread_job;

static void *thread_body(void *arg) {
  thread_job *j = arg;
  sfa_context *mine = NULL;
  j->before = j->after = (CUcontext)1;
  drv->cuCtxGetCurrent(&j->before);
  j->st = sfa_context_create(&mine, NULL);
  if (j->st == SFA_OK) j->st = case_launch(j->R, mine, &j->cu);
  snprintf(j->err, sizeof j->err, "%s", mine ? sfa_last_error(mine) : "");
  drv->cuCtxGetCurrent(&j->after);
  sfa_context_destroy(mine);
  return NULL;
}

START_TEST(thread_without_context) {
  run R;
  gcase c = plain(1, 2, 2, 65, 65, 64, 1, SFA_DTYPE_FP16);
  c.seed = base_seed + 500;
  case_setup(&R, &c);
  thread_job j = {.R = &R};
  pthread_t th;
  ck_assert_int_eq(pthread_create(&th, NULL, thread_body, &j), 0);
  ck_assert_int_eq(pthread_join(th, NULL), 0);
  ck_assert_msg(j.before == NULL, "a new thread already had a current context");
  const char *name = "";
  if (j.cu != CUDA_SUCCESS) drv->cuGetErrorName(j.cu, &name);
  ck_assert_msg(j.st == SFA_OK, "%s: in a thread: %s: %s %s", R.desc, sfa_status_string(j.st),
                j.err, name);
  ck_assert_msg(j.after == cuctx, "sfa did not make device 0's primary context current");
  case_verify(&R);
  case_free(&R);
}
END_TEST

START_TEST(compile_public_api) {
  sfa_kernel_spec spec = {SFA_PASS_FWD, SFA_MODE_DENSE, SFA_DTYPE_BF16, 128, 0, 0, 0, 0,
                          device_arch, SFA_FEAT_CAUSAL, SFA_SPEC_MMA_SYNC};
  ck_assert_int_eq(sfa_spec_default(&spec, NULL, 0), SFA_OK);
  sfa_kernel *k1 = NULL, *k2 = NULL;
  sfa_status st = sfa_compile(ctx, &spec, &k1);
  ck_assert_msg(st == SFA_OK, "sfa_compile: %s", sfa_last_error(ctx));
  ck_assert_int_eq(sfa_compile(ctx, &spec, &k2), SFA_OK);
  ck_assert_ptr_nonnull(k1);
  ck_assert_ptr_eq(k1, k2);
  if (device_arch == 90) { /* sm_80 code cannot run on sm_90 */
    spec.arch = 80;
    ck_assert_int_eq(sfa_spec_default(&spec, NULL, 0), SFA_OK);
    ck_assert_int_eq(sfa_compile(ctx, &spec, &k2), SFA_ERR_INVALID_ARGUMENT);
    ck_assert_msg(strstr(sfa_last_error(ctx), "spec.arch"), "%s", sfa_last_error(ctx));
  }
}
END_TEST

START_TEST(launch_overhead) {
  /* The warm path (validate, find the kernel, launch) stays cheap. */
  gcase c = plain(1, 1, 1, 64, 64, 64, 1, SFA_DTYPE_BF16);
  c.seed = base_seed + 600;
  run_case(&c); /* compiles and checks */
  int64_t shape[4] = {1, 1, 64, 64};
  CUdeviceptr buf = 0;
  CU(drv->cuMemAlloc(&buf, 4 * 64 * 64 * 2));
  CU(drv->cuMemsetD8(buf, 0, 4 * 64 * 64 * 2));
  sfa_tensor tq, tk, tv, to;
  sfa_tensor_init(&tq, (void *)(uintptr_t)buf, SFA_DTYPE_BF16, 4, shape);
  sfa_tensor_init(&tk, (void *)(uintptr_t)(buf + 8192), SFA_DTYPE_BF16, 4, shape);
  sfa_tensor_init(&tv, (void *)(uintptr_t)(buf + 16384), SFA_DTYPE_BF16, 4, shape);
  sfa_tensor_init(&to, (void *)(uintptr_t)(buf + 24576), SFA_DTYPE_BF16, 4, shape);
  sfa_attention_params p;
  sfa_params_init(&p);
  p.causal = 1;
  /* Fewer launches than the launch queue holds, so the host is not waiting
  ** for the GPU. */
  const int n = 500;
  struct timespec t0, t1;
  CU(drv->cuCtxSynchronize());
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (int i = 0; i < n; i++)
    ck_assert_int_eq(sfa_forward(ctx, &p, &tq, &tk, &tv, NULL, &to, NULL, NULL), SFA_OK);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  CU(drv->cuCtxSynchronize());
  double us = ((t1.tv_sec - t0.tv_sec) * 1e6 + (t1.tv_nsec - t0.tv_nsec) / 1e3) / n;
  printf("launch_overhead: %.2f us per sfa_forward (host side, launch included)\n", us);
  ck_assert_msg(us < 100, "sfa_forward takes %.1f us per call on the host", us);

  /* The cached lookup alone (sfa_compile of a loaded spec: validate, bind,
  ** table lookup); the goal is < 5 us. */
  sfa_kernel_spec spec = {SFA_PASS_FWD, SFA_MODE_DENSE, SFA_DTYPE_BF16, 64, 0, 0, 0, 0,
                          device_arch, SFA_FEAT_CAUSAL, SFA_SPEC_MMA_SYNC};
  ck_assert_int_eq(sfa_spec_default(&spec, NULL, 0), SFA_OK);
  sfa_kernel *kern = NULL;
  ck_assert_int_eq(sfa_compile(ctx, &spec, &kern), SFA_OK);
  const int m = 20000;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (int i = 0; i < m; i++) ck_assert_int_eq(sfa_compile(ctx, &spec, &kern), SFA_OK);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  us = ((t1.tv_sec - t0.tv_sec) * 1e6 + (t1.tv_nsec - t0.tv_nsec) / 1e3) / m;
  printf("launch_overhead: %.3f us per cached kernel lookup\n", us);
  ck_assert_msg(us < 20, "a cached lookup takes %.2f us", us);
  drv->cuMemFree(buf);
}
END_TEST

/* ------------------------------------------------------------ main */

int main(void) {
  int rc = tg_open("gpu_dense", 0x5FA0001);
  if (rc != 0) return rc;
  /* this file's names for the shared device, context and seed */
  drv = tg_drv, device = tg_device, cuctx = tg_cuctx;
  ctx = tg_ctx, base_seed = tg_seed;
  device_cc = tg_cc, device_arch = tg_cc > 90 ? 90 : tg_cc;
  Suite *s = suite_create("gpu_dense");
  TCase *t = tu_untimed_case(s, "gpu_dense", half_conversions);
  tcase_add_test(t, every_head_dim_and_dtype);
  tcase_add_test(t, ragged_and_unequal_lengths);
  tcase_add_test(t, gqa_and_mqa);
  tcase_add_test(t, strided_inputs_and_outputs);
  tcase_add_test(t, user_stream_scale_and_no_lse);
  tcase_add_test(t, random_shapes);
  tcase_add_test(t, thread_without_context);
  tcase_add_test(t, compile_public_api);
  tcase_add_test(t, launch_overhead);
  rc = tu_run_suite(s);
  tg_close();
  return rc;
}
