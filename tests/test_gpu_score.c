/*
** test_gpu_score.c -- the score semantics of issue 19 on a real GPU against
** the float64 CPU references: strict causality (params.strict_causal, qk_drop
** and hash: q_idx > k_idx), softcapping (params.softcap: c tanh(s / c), every
** mode) and ALiBi slopes (extras->alibi_slopes [Hq] or [B, Hq], dense and
** window), alone and together with causal, a window bias and mask, GQA/MQA,
** Tq != Tk both ways, index padding and rows that see no key. Per case:
** sfa_forward (o, lse) and sfa_backward with dq by atomics and deterministic
** (dq, dk, dv, and dbias with a bias), each output NaN-poisoned before the
** call, within the bounds of the other GPU suites (tg_tol_fwd / tg_tol_bwd,
** TG_LSE_TOL). Each case also checks that its option matters: the reference
** without the option must differ from the one with it by more than 10x the
** bound, so that a kernel that ignored the option would fail.
** On sm_90 D 64 and 128 run the wgmma kernels (and ws forwards where the
** default takes them), D 256 the ws forwards and the wgmma backward; D 32 and
** 96 (and the "sync" case, SFA_MMA_SYNC) mma.sync. Case "d256": the options at
** D 256 and on an unbiased window at D 64. Case "small" (CK_RUN_CASE=small) is a few
** short problems for compute-sanitizer (D 64, and D 128 with softcap and with ALiBi).
**
** Without a driver or a device the suite prints "SKIP: <reason>" and exits 77.
*/
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpucase.h"

enum { ALIBI_NONE, ALIBI_HEADS, ALIBI_BATCH }; /* slopes [Hq] or [B, Hq] */

/* A case: the sparse-suite case plus the three options. */
typedef struct score_case {
  scase c;
  int strict;
  float softcap;
  int alibi;
  float scale; /* 0: 1/sqrt(D) */
} score_case;

/* A run: the case's inputs (gpucase.c), its slopes, the gradients. */
typedef struct run {
  srun R;
  score_case sc;
  char desc[400];
  float *slopes;             /* host [B or 1, Hq] */
  CUdeviceptr dslopes;
  sfa_tensor tslopes;
  tg_grads G;                /* dout and the gradients */
} run;

static void setup(run *X, const score_case *sc) {
  memset(X, 0, sizeof *X);
  X->sc = *sc;
  tg_case_setup(&X->R, &sc->c);
  srun *R = &X->R;
  const scase *c = &sc->c;
  R->p.strict_causal = sc->strict;
  R->p.softcap = sc->softcap;
  R->p.scale = sc->scale;
  uint64_t rng = c->seed * 13 + 5;
  if (sc->alibi != ALIBI_NONE) {
    const int Bs = sc->alibi == ALIBI_BATCH ? c->B : 1;
    X->slopes = malloc((size_t)Bs * c->Hq * sizeof *X->slopes);
    ck_assert_ptr_nonnull(X->slopes);
    for (int b = 0; b < Bs; b++)
      for (int h = 0; h < c->Hq; h++) /* ALiBi's geometric slopes, or random ones */
        X->slopes[b * c->Hq + h] = sc->alibi == ALIBI_HEADS
                                       ? (float)pow(2.0, -8.0 * (h + 1) / c->Hq)
                                       : (float)(0.3 * tu_rand_uniform(&rng));
    X->dslopes = tg_upload(X->slopes, (size_t)Bs * c->Hq * sizeof *X->slopes);
    const int64_t shape[2] = {Bs, c->Hq};
    if (sc->alibi == ALIBI_BATCH)
      sfa_tensor_init(&X->tslopes, (void *)(uintptr_t)X->dslopes, SFA_DTYPE_FP32, 2, shape);
    else
      sfa_tensor_init(&X->tslopes, (void *)(uintptr_t)X->dslopes, SFA_DTYPE_FP32, 1, shape + 1);
    R->ex.alibi_slopes = &X->tslopes;
    R->hx.alibi_slopes = X->slopes, R->hx.alibi_batches = Bs;
    R->has_ex = 1;
  }
  snprintf(X->desc, sizeof X->desc, "%s strict=%d softcap=%g alibi=%s scale=%g", R->desc,
           sc->strict, (double)sc->softcap,
           sc->alibi == ALIBI_NONE ? "-" : sc->alibi == ALIBI_HEADS ? "[Hq]" : "[B,Hq]",
           (double)sc->scale);
  /* dout and the gradient buffers */
  tg_grads_setup(&X->G, R, &rng);
}

static void teardown(run *X) {
  if (X->dslopes) tg_drv->cuMemFree(X->dslopes);
  free(X->slopes);
  tg_grads_free(&X->G);
  tg_case_free(&X->R);
  memset(X, 0, sizeof *X);
}

static const sfa_host_extras *hx_of(const srun *R) { return R->has_ex ? &R->hx : NULL; }

/* The forward reference of params p into o / lse. */
static void ref_forward(const run *X, const sfa_attention_params *p, float *o, float *lse) {
  const srun *R = &X->R;
  const scase *c = &R->c;
  char why[512];
  sfa_status st = sfa_reference_forward(p, c->B, c->Hq, c->Hkv, c->Tq, c->Tk, c->D, R->rq, R->rk,
                                        R->rv, hx_of(R), o, lse, why, sizeof why);
  ck_assert_msg(st == SFA_OK, "%s: reference: %s", X->desc, why);
}

/* The option of the case matters: without it (strict 0, softcap 0, or no
** slopes) the reference's o moves by more than 10x the forward bound, or the
** lse of some row by more than 10x TG_LSE_TOL (or between finite and -inf),
** so that a kernel that ignored the option would fail the checks below (they
** bound o's relative error and every row's lse). */
static void option_matters(const run *X, const float *o_ref, const float *lse_ref) {
  const srun *R = &X->R;
  sfa_attention_params p = R->p;
  sfa_host_extras hx = R->hx;
  run Y = *X; /* a shallow copy whose extras may lack the slopes */
  if (X->sc.strict) p.strict_causal = 0;
  else if (X->sc.softcap > 0) p.softcap = 0;
  else hx.alibi_slopes = NULL, hx.alibi_batches = 0;
  Y.R.hx = hx;
  Y.R.has_ex = hx.q_idx || hx.bias || hx.mask || hx.alibi_slopes;
  float *o = malloc(R->nq * 4), *lse = malloc(R->nrows * 4);
  ck_assert(o && lse);
  ref_forward(&Y, &p, o, lse);
  double d2 = 0, w2 = 0;
  for (size_t i = 0; i < R->nq; i++) {
    d2 += ((double)o[i] - o_ref[i]) * ((double)o[i] - o_ref[i]);
    w2 += (double)o_ref[i] * o_ref[i];
  }
  const double moved = sqrt(d2 / (w2 > 0 ? w2 : 1));
  long rows_moved = 0;
  for (size_t r = 0; r < R->nrows; r++)
    if (isinf(lse[r]) != isinf(lse_ref[r]) ||
        (!isinf(lse[r]) && fabs((double)lse[r] - lse_ref[r]) > 10 * TG_LSE_TOL))
      rows_moved++;
  ck_assert_msg(moved > 10 * tg_tol_fwd(R->c.dtype) || rows_moved > 0,
                "%s: the option moves the reference's o only by %.2e and no row's lse: the "
                "case tests nothing",
                X->desc, moved);
  printf("   (the option moves o by %.2e and the lse of %ld rows)\n", moved, rows_moved);
  free(o), free(lse);
}

static void check_forward(run *X) {
  srun *R = &X->R;
  const scase *c = &R->c;
  ref_forward(X, &R->p, R->ro, R->rl);
  option_matters(X, R->ro, R->rl);
  TG_CU(tg_drv->cuMemsetD8(R->dout, 0xFF, R->nq * 2));
  TG_CU(tg_drv->cuMemsetD8(R->dl, 0xFF, R->nrows * 4));
  sfa_status st = sfa_forward(tg_ctx, &R->p, &R->tq, &R->tk, &R->tv, R->has_ex ? &R->ex : NULL,
                              &R->to, &R->tl, NULL);
  ck_assert_msg(st == SFA_OK, "%s: sfa_forward: %s", X->desc, sfa_last_error(tg_ctx));
  TG_CU(tg_drv->cuCtxSynchronize());
  TG_CU(tg_drv->cuMemcpyDtoH(R->ho, R->dout, R->nq * 2));
  TG_CU(tg_drv->cuMemcpyDtoH(R->hl, R->dl, R->nrows * 4));
  long nan = 0, bad_lse = 0, empty = 0;
  const double eo = tg_rel_err(c->dtype, R->ho, R->ro, R->nq, &nan);
  for (size_t r = 0; r < R->nrows; r++) {
    if (isinf(R->rl[r])) {
      empty++;
      if (!(isinf(R->hl[r]) && R->hl[r] < 0)) bad_lse++;
    } else if (!(fabs((double)R->hl[r] - R->rl[r]) <= TG_LSE_TOL)) {
      bad_lse++;
    }
  }
  ck_assert_msg(nan == 0 && eo < tg_tol_fwd(c->dtype) && bad_lse == 0,
                "%s: forward rel_err o=%.3e (tol %.0e), nan/unwritten %ld, lse off in %ld rows",
                X->desc, eo, tg_tol_fwd(c->dtype), nan, bad_lse);
  printf("ok %s: o=%.2e (%ld of %zu rows see no key)\n", X->desc, eo, empty, R->nrows);
}

static void run_backward(run *X, int det) {
  srun *R = &X->R;
  R->p.deterministic = det;
  TG_CU(tg_drv->cuMemsetD8(X->G.ddq, 0xFF, R->nq * 2));
  TG_CU(tg_drv->cuMemsetD8(X->G.ddk, 0xFF, R->nk * 2));
  TG_CU(tg_drv->cuMemsetD8(X->G.ddv, 0xFF, R->nk * 2));
  if (X->G.nb) TG_CU(tg_drv->cuMemsetD8(X->G.ddb, 0xFF, X->G.nb * 2));
  sfa_status st = sfa_backward(tg_ctx, &R->p, &R->tq, &R->tk, &R->tv, R->has_ex ? &R->ex : NULL,
                               &R->to, &R->tl, &X->G.tdo, &X->G.tdq, &X->G.tdk, &X->G.tdv,
                               X->G.nb ? &X->G.tdb : NULL, NULL);
  ck_assert_msg(st == SFA_OK, "%s det=%d: sfa_backward: %s", X->desc, det,
                sfa_last_error(tg_ctx));
  TG_CU(tg_drv->cuCtxSynchronize());
  TG_CU(tg_drv->cuMemcpyDtoH(X->G.hdq, X->G.ddq, R->nq * 2));
  TG_CU(tg_drv->cuMemcpyDtoH(X->G.hdk, X->G.ddk, R->nk * 2));
  TG_CU(tg_drv->cuMemcpyDtoH(X->G.hdv, X->G.ddv, R->nk * 2));
  if (X->G.nb) TG_CU(tg_drv->cuMemcpyDtoH(X->G.hdb, X->G.ddb, X->G.nb * 2));
}

static void check_backward(run *X) {
  srun *R = &X->R;
  const scase *c = &R->c;
  float *dq = malloc(R->nq * 4), *dk = malloc(R->nk * 4), *dv = malloc(R->nk * 4);
  float *db = malloc(X->G.nb ? X->G.nb * 4 : 4);
  ck_assert(dq && dk && dv && db);
  char why[512];
  sfa_status st = sfa_reference_backward(&R->p, c->B, c->Hq, c->Hkv, c->Tq, c->Tk, c->D, R->rq,
                                         R->rk, R->rv, hx_of(R), X->G.rdo, dq, dk, dv,
                                         X->G.nb ? db : NULL, why, sizeof why);
  ck_assert_msg(st == SFA_OK, "%s: reference backward: %s", X->desc, why);
  const double tol = tg_tol_bwd(c->dtype);
  for (int det = 0; det < 2; det++) {
    run_backward(X, det);
    long nan = 0;
    const double eq = tg_rel_err(c->dtype, X->G.hdq, dq, R->nq, &nan);
    const double ek = tg_rel_err(c->dtype, X->G.hdk, dk, R->nk, &nan);
    const double ev = tg_rel_err(c->dtype, X->G.hdv, dv, R->nk, &nan);
    const double eb = X->G.nb ? tg_rel_err(c->dtype, X->G.hdb, db, X->G.nb, &nan) : 0.0;
    ck_assert_msg(nan == 0 && eq < tol && ek < tol && ev < tol && eb < tol,
                  "%s det=%d: rel_err dq=%.3e dk=%.3e dv=%.3e dbias=%.3e (tol %.0e) "
                  "nan/unwritten=%ld",
                  X->desc, det, eq, ek, ev, eb, tol, nan);
    printf("ok %s det=%d: dq=%.2e dk=%.2e dv=%.2e dbias=%.2e\n", X->desc, det, eq, ek, ev, eb);
  }
  free(dq), free(dk), free(dv), free(db);
}

static void run_case(const score_case *sc, int bwd) {
  run X;
  setup(&X, sc);
  check_forward(&X);
  if (bwd) check_backward(&X);
  teardown(&X);
}

static score_case qk_drop(int Hkv, int Tq, int Tk, int D, int bf16, int pad, uint64_t seed) {
  score_case s;
  memset(&s, 0, sizeof s);
  s.c = tg_case(SFA_MODE_QK_DROP, Hkv, Tq, Tk, D, bf16 ? SFA_DTYPE_BF16 : SFA_DTYPE_FP16);
  s.c.T0 = (Tq > Tk ? Tq : Tk) * 3 / 2, s.c.keep = 0.7, s.c.idx_pad = pad;
  s.c.seed = tg_seed + seed;
  return s;
}

static score_case hash(int Hkv, int Tq, int Tk, int D, int bf16, int buckets, uint64_t seed) {
  score_case s;
  memset(&s, 0, sizeof s);
  s.c = tg_case(SFA_MODE_HASH, Hkv, Tq, Tk, D, bf16 ? SFA_DTYPE_BF16 : SFA_DTYPE_FP16);
  s.c.buckets = buckets, s.c.idx_pad = buckets % 3;
  s.c.seed = tg_seed + seed;
  return s;
}

static score_case dense(int Hkv, int Tq, int Tk, int D, int bf16, int causal, uint64_t seed) {
  score_case s;
  memset(&s, 0, sizeof s);
  s.c = tg_case(SFA_MODE_DENSE, Hkv, Tq, Tk, D, bf16 ? SFA_DTYPE_BF16 : SFA_DTYPE_FP16);
  s.c.causal = causal, s.c.seed = tg_seed + seed;
  return s;
}

static score_case window(const tg_wspec *w, uint64_t seed) {
  score_case s;
  memset(&s, 0, sizeof s);
  s.c = tg_window_case(w, tg_seed + seed);
  return s;
}

/* ------------------------------------------------------------ tests */

/* Strict causality: qk_drop and hash, with padding, GQA/MQA, Tq != Tk; the
** pruning of both passes (forward n_end and full tiles, backward m_begin and
** tile states, hash's plan kernel) must follow q_idx > k_idx. */
START_TEST(strict_causal) {
  score_case s[] = {
    qk_drop(2, 650, 600, 64, 0, 0, 10),  qk_drop(1, 300, 500, 128, 1, 5, 11),
    qk_drop(4, 257, 129, 32, 1, 0, 12),  qk_drop(2, 500, 500, 96, 0, 3, 13),
    hash(2, 600, 600, 64, 1, 1, 20),     hash(1, 500, 400, 128, 0, 4, 21),
    hash(4, 300, 333, 64, 0, 16, 22),    hash(2, 257, 257, 32, 1, 2, 23),
  };
  for (size_t i = 0; i < sizeof s / sizeof s[0]; i++) {
    s[i].strict = 1;
    run_case(&s[i], 1);
  }
}
END_TEST

/* Softcapping in every mode, forward and backward (dS times 1 - tanh^2);
** scales and caps where tanh saturates. */
START_TEST(softcap) {
  const tg_wspec w[] = {
    {100, 0, 1, 400, 600, 128, 1, 2, BIAS_HEAD, MASK_HEAD, 0.5},
    {-1, 37, 0, 300, 333, 64, 0, 1, BIAS_KV, MASK_NONE, 0},
    {64, 64, 0, 333, 300, 96, 1, 2, BIAS_NONE, MASK_NONE, 0},
  };
  score_case s[] = {
    dense(2, 300, 500, 64, 1, 1, 30), dense(1, 257, 190, 128, 0, 0, 31),
    dense(4, 129, 77, 32, 1, 0, 32),  window(&w[0], 33), window(&w[1], 34), window(&w[2], 35),
    qk_drop(2, 400, 350, 64, 0, 2, 36), hash(1, 400, 400, 128, 1, 4, 37),
  };
  for (size_t i = 0; i < sizeof s / sizeof s[0]; i++) {
    s[i].softcap = i % 2 ? 1.5f : 4.0f;
    s[i].scale = (float)((i % 3 ? 3.0 : 1.5) / sqrt((double)s[i].c.D));
    run_case(&s[i], 1);
  }
}
END_TEST

/* ALiBi slopes per head or per (batch, head): dense causal and not, Tq != Tk
** both ways (the bottom-right alignment of the distance), window with a bias
** and a mask; the slopes get no gradient. */
START_TEST(alibi) {
  const tg_wspec w[] = {
    {200, 0, 1, 500, 600, 64, 1, 2, BIAS_ROW, MASK_NONE, 0},
    {-1, -1, 0, 300, 200, 128, 0, 1, BIAS_HEAD, MASK_KV, 0.7},
    {30, 30, 0, 257, 257, 32, 0, 2, BIAS_NONE, MASK_NONE, 0},
  };
  score_case s[] = {
    dense(2, 300, 500, 64, 1, 1, 40), dense(1, 500, 300, 128, 0, 1, 41),
    dense(4, 257, 257, 64, 0, 0, 42), dense(2, 129, 400, 96, 1, 0, 43),
    window(&w[0], 44), window(&w[1], 45), window(&w[2], 46),
  };
  for (size_t i = 0; i < sizeof s / sizeof s[0]; i++) {
    s[i].alibi = i % 2 ? ALIBI_BATCH : ALIBI_HEADS;
    run_case(&s[i], 1);
  }
}
END_TEST

/* The options together: strict + softcap; ALiBi + softcap (+ bias, mask). */
START_TEST(together) {
  const tg_wspec w = {150, 0, 1, 400, 500, 64, 0, 2, BIAS_KV, MASK_HEAD, 0.6};
  score_case s[] = {qk_drop(2, 500, 450, 128, 1, 1, 50), hash(2, 500, 500, 64, 0, 8, 51),
                    dense(2, 333, 444, 128, 0, 1, 52), window(&w, 53)};
  for (size_t i = 0; i < sizeof s / sizeof s[0]; i++) {
    if (i < 2) s[i].strict = 1;
    else s[i].alibi = ALIBI_HEADS;
    s[i].softcap = 2.0f;
    s[i].scale = (float)(2.0 / sqrt((double)s[i].c.D));
    run_case(&s[i], 1);
  }
}
END_TEST

/* The options on the kernels the default picks at D 256 (sm_90: the ws
** forward of dense, qk_drop and an unbiased window, mma.sync's of hash and a
** biased window; the ws backward of dense and an unbiased window, the wgmma
** backward of the others, two CTAs per key tile), and an unbiased window at
** D 64 with softcap and ALiBi (the wgmma forward; ws under SFA_MMA=ws). */
START_TEST(options_at_head_dim_256_and_window_64) {
  const tg_wspec w[] = {
    {100, 0, 1, 300, 400, 256, 0, 2, BIAS_NONE, MASK_NONE, 0},
    {-1, 30, 0, 257, 300, 256, 1, 1, BIAS_KV, MASK_NONE, 0},
    {64, 0, 1, 400, 500, 64, 1, 2, BIAS_NONE, MASK_NONE, 0},
  };
  score_case s[] = {qk_drop(2, 400, 350, 256, 1, 1, 80), hash(1, 300, 300, 256, 0, 4, 81),
                    dense(2, 300, 400, 256, 1, 1, 82),   window(&w[0], 83),
                    window(&w[1], 84),                   window(&w[2], 85)};
  s[0].strict = 1, s[0].softcap = 2.0f, s[0].scale = 0.15f;
  s[1].strict = 1;
  s[2].alibi = ALIBI_BATCH, s[2].softcap = 3.0f;
  s[3].alibi = ALIBI_HEADS, s[3].softcap = 2.0f, s[3].scale = 0.15f;
  s[4].softcap = 1.5f;
  s[5].alibi = ALIBI_BATCH, s[5].softcap = 2.0f, s[5].scale = 0.3f;
  for (size_t i = 0; i < sizeof s / sizeof s[0]; i++) run_case(&s[i], 1);
}
END_TEST

/* The mma.sync kernels where sm_90 would use wgmma (D 64 and 128). */
START_TEST(mma_sync_kernels) {
  sfa_context *saved = tg_push_mma(SFA_MMA_SYNC);
  score_case s[] = {qk_drop(2, 400, 350, 128, 0, 0, 60), hash(1, 500, 400, 64, 1, 4, 61),
                    dense(2, 300, 500, 128, 1, 1, 62)};
  s[0].strict = 1, s[1].strict = 1, s[1].softcap = 2.0f;
  s[2].alibi = ALIBI_BATCH, s[2].softcap = 3.0f, s[2].scale = 0.3f;
  for (size_t i = 0; i < sizeof s / sizeof s[0]; i++) run_case(&s[i], 1);
  tg_pop_context(saved);
}
END_TEST

/* The wgmma kernels (forward and backward), which the default no longer
** takes with these options at D 64 and 128 on sm_90 (the ws backward since
** session 25), and at D 256 the wgmma backward of dense. */
START_TEST(wgmma_kernels) {
  sfa_context *saved = tg_push_mma(SFA_MMA_WGMMA);
  const tg_wspec w = {64, 0, 1, 400, 500, 128, 1, 2, BIAS_NONE, MASK_NONE, 0};
  score_case s[] = {qk_drop(2, 400, 350, 64, 0, 1, 90), hash(1, 500, 400, 128, 1, 4, 91),
                    dense(2, 300, 500, 128, 1, 1, 92), window(&w, 93),
                    dense(1, 300, 300, 256, 0, 1, 94)};
  s[0].strict = 1, s[0].softcap = 2.0f, s[1].softcap = 2.0f, s[1].scale = 0.3f;
  s[2].alibi = ALIBI_BATCH, s[2].softcap = 3.0f, s[2].scale = 0.3f;
  s[3].alibi = ALIBI_HEADS, s[3].softcap = 2.0f;
  s[4].alibi = ALIBI_HEADS, s[4].softcap = 2.0f, s[4].scale = 0.15f;
  for (size_t i = 0; i < sizeof s / sizeof s[0]; i++) run_case(&s[i], 1);
  tg_pop_context(saved);
}
END_TEST

/* A few short problems of every option, for compute-sanitizer. */
START_TEST(small_for_sanitizers) {
  const tg_wspec w = {20, 0, 1, 70, 90, 64, 1, 2, BIAS_HEAD, MASK_HEAD, 0.6};
  score_case s[] = {qk_drop(2, 70, 90, 64, 0, 3, 70), hash(1, 90, 70, 64, 1, 2, 71),
                    dense(2, 70, 90, 64, 0, 1, 72), window(&w, 73),
                    dense(1, 70, 90, 128, 1, 1, 74), hash(1, 90, 70, 128, 0, 2, 75)};
  s[0].strict = 1, s[1].strict = 1, s[1].softcap = 2.0f, s[1].scale = 0.4f;
  s[2].alibi = ALIBI_BATCH, s[3].alibi = ALIBI_HEADS, s[3].softcap = 2.0f, s[3].scale = 0.4f;
  /* D 128: the ws backward that issues dP^T behind P^T (softcap, ALiBi) */
  s[4].alibi = ALIBI_HEADS, s[5].softcap = 2.0f, s[5].scale = 0.4f;
  for (size_t i = 0; i < sizeof s / sizeof s[0]; i++) run_case(&s[i], 1);
}
END_TEST

/* ------------------------------------------------------------ main */

int main(void) {
  int rc = tg_open("gpu_score", 0x5FA05C0);
  if (rc != 0) return rc;
  Suite *s = suite_create("gpu_score");
  TCase *t = tu_untimed_case(s, "full", strict_causal);
  tcase_add_test(t, softcap);
  tcase_add_test(t, alibi);
  tcase_add_test(t, together);
  tu_untimed_case(s, "d256", options_at_head_dim_256_and_window_64);
  tu_untimed_case(s, "sync", mma_sync_kernels);
  tu_untimed_case(s, "wgmma", wgmma_kernels);
  tu_untimed_case(s, "small", small_for_sanitizers);
  rc = tu_run_suite(s);
  tg_close();
  return rc;
}
