/*
** test_gpu_backward.c -- sfa_backward on a real GPU against the float64 CPU
** reference (sfa_reference_backward): dq, dk, dv and dbias for dense (causal
** and not, Tq != Tk both ways, ragged lengths), qk_drop and hash (padding
** suffixes, rows that see no key), window (windows, causal, a bias per query
** head / kv head / row-broadcast / batch-broadcast with its gradient, masks
** with all-zero tiles and rows), GQA and MQA, D = 32, 64 and 128, fp16 and
** bf16, with dq by atomics and deterministic; the deterministic path must
** give bitwise identical dq, dk, dv and dbias in two runs. Case "wide": head
** dims 160..256 (two CTAs per key tile). On sm_90 the default
** backward is the warp-specialized one where it serves (D 64 and 128 without
** a bias, mask or det; dense and window at D 256) and wgmma elsewhere; case
** "sync" runs the same kinds of problem through mma.sync (SFA_MMA_SYNC, D 64,
** 128 and 256) so that the kernels stay tested; case "wgmma256" the wgmma
** backward at D 256 (column halves, SFA_MMA_WGMMA) in every mode, small
** enough for the sanitizers; case "ws" the
** warp-specialized backward (every mode, D 64 and 128); case "ws256" the
** warp-specialized backward at D 256 (dense and window).
**
** Inputs come from tests/gpucase.c (the sparse forward suite's cases) plus a
** random dout. Every output is poisoned with NaN before the call: an element
** left unwritten fails, and NaN never passes. Bound: relative L2 error of
** each gradient < 2e-2 (bf16) / 1e-2 (fp16).
**
** Without a driver or a device the suite prints "SKIP: <reason>" and exits 77.
*/
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpucase.h"

/* Forward (o, lse), then backward into NaN-poisoned gradients; download. */
static void run_backward(srun *R, tg_grads *G, int det) {
  R->p.deterministic = det;
  sfa_status st = sfa_forward(tg_ctx, &R->p, &R->tq, &R->tk, &R->tv, R->has_ex ? &R->ex : NULL,
                              &R->to, &R->tl, NULL);
  ck_assert_msg(st == SFA_OK, "%s: sfa_forward: %s", R->desc, sfa_last_error(tg_ctx));
  TG_CU(tg_drv->cuMemsetD8(G->ddq, 0xFF, R->nq * 2));
  TG_CU(tg_drv->cuMemsetD8(G->ddk, 0xFF, R->nk * 2));
  TG_CU(tg_drv->cuMemsetD8(G->ddv, 0xFF, R->nk * 2));
  if (G->nb) TG_CU(tg_drv->cuMemsetD8(G->ddb, 0xFF, G->nb * 2));
  st = sfa_backward(tg_ctx, &R->p, &R->tq, &R->tk, &R->tv, R->has_ex ? &R->ex : NULL, &R->to,
                    &R->tl, &G->tdo, &G->tdq, &G->tdk, &G->tdv, G->nb ? &G->tdb : NULL, NULL);
  ck_assert_msg(st == SFA_OK, "%s det=%d: sfa_backward: %s: %s", R->desc, det,
                sfa_status_string(st), sfa_last_error(tg_ctx));
  CUresult r = tg_drv->cuCtxSynchronize();
  const char *name = "?";
  if (r != CUDA_SUCCESS) tg_drv->cuGetErrorName(r, &name);
  ck_assert_msg(r == CUDA_SUCCESS, "%s det=%d: after the backward: %s", R->desc, det, name);
  TG_CU(tg_drv->cuMemcpyDtoH(G->hdq, G->ddq, R->nq * 2));
  TG_CU(tg_drv->cuMemcpyDtoH(G->hdk, G->ddk, R->nk * 2));
  TG_CU(tg_drv->cuMemcpyDtoH(G->hdv, G->ddv, R->nk * 2));
  if (G->nb) TG_CU(tg_drv->cuMemcpyDtoH(G->hdb, G->ddb, G->nb * 2));
}

/* The float64 reference gradients of a case, computed once for both dq paths
** (dbias summed over the batches that a batch-broadcast bias expanded). */
typedef struct refgrads {
  float *dq, *dk, *dv, *db;
  double ms; /* time the reference took */
} refgrads;

static void reference(const srun *R, const tg_grads *G, refgrads *out) {
  const scase *c = &R->c;
  const size_t nbr = G->nb ? (size_t)c->B * R->hx.bias_heads * R->hx.bias_rows * c->Tk : 0;
  float *rb = malloc(nbr ? nbr * 4 : 4);
  out->dq = malloc(R->nq * 4), out->dk = malloc(R->nk * 4), out->dv = malloc(R->nk * 4);
  out->db = malloc(G->nb ? G->nb * 4 : 4);
  ck_assert(rb && out->dq && out->dk && out->dv && out->db);
  char why[512];
  const double t0 = tu_now_ms();
  sfa_status st = sfa_reference_backward(&R->p, c->B, c->Hq, c->Hkv, c->Tq, c->Tk, c->D, R->rq,
                                         R->rk, R->rv, R->has_ex ? &R->hx : NULL, G->rdo,
                                         out->dq, out->dk, out->dv, G->nb ? rb : NULL, why,
                                         sizeof why);
  out->ms = tu_now_ms() - t0;
  ck_assert_msg(st == SFA_OK, "%s: reference: %s", R->desc, why);
  if (G->nb) { /* sum the expanded batches when the bias broadcasts over them */
    const size_t per_b = nbr / (size_t)c->B;
    const int expanded = G->nb == per_b && c->B > 1;
    for (size_t i = 0; i < G->nb; i++) out->db[i] = rb[i];
    for (int b = 1; expanded && b < c->B; b++)
      for (size_t i = 0; i < per_b; i++) out->db[i] += rb[b * per_b + i];
  }
  free(rb);
}

static void reference_free(refgrads *r) {
  free(r->dq), free(r->dk), free(r->dv), free(r->db);
  memset(r, 0, sizeof *r);
}

static void verify(srun *R, tg_grads *G, int det, const refgrads *ref) {
  const scase *c = &R->c;
  long nan = 0;
  const double eq = tg_rel_err(c->dtype, G->hdq, ref->dq, R->nq, &nan);
  const double ek = tg_rel_err(c->dtype, G->hdk, ref->dk, R->nk, &nan);
  const double ev = tg_rel_err(c->dtype, G->hdv, ref->dv, R->nk, &nan);
  const double eb = G->nb ? tg_rel_err(c->dtype, G->hdb, ref->db, G->nb, &nan) : 0.0;
  const double tol = c->dtype == SFA_DTYPE_BF16 ? 2e-2 : 1e-2;
  ck_assert_msg(nan == 0 && eq < tol && ek < tol && ev < tol && eb < tol,
                "%s det=%d: rel_err dq=%.3e dk=%.3e dv=%.3e dbias=%.3e (tol %.0e) nan/unwritten=%ld",
                R->desc, det, eq, ek, ev, eb, tol, nan);
  printf("ok %s det=%d: dq=%.2e dk=%.2e dv=%.2e dbias=%.2e\n", R->desc, det, eq, ek, ev, eb);
}

static void run_case(const scase *c) {
  srun R;
  tg_grads G;
  refgrads ref;
  const double t0 = tu_now_ms();
  tg_case_setup(&R, c);
  uint64_t rng = c->seed * 7 + 3;
  tg_grads_setup(&G, &R, &rng);
  reference(&R, &G, &ref);
  run_backward(&R, &G, 0);
  verify(&R, &G, 0, &ref);
  run_backward(&R, &G, 1);
  verify(&R, &G, 1, &ref);
  uint16_t *first[4] = {G.hdq, G.hdk, G.hdv, G.hdb};
  const size_t n[4] = {R.nq * 2, R.nk * 2, R.nk * 2, G.nb * 2};
  uint16_t *copy[4];
  for (int i = 0; i < 4; i++) {
    copy[i] = malloc(n[i] ? n[i] : 1);
    ck_assert_ptr_nonnull(copy[i]);
    memcpy(copy[i], first[i], n[i]);
  }
  run_backward(&R, &G, 1);
  const char *names[4] = {"dq", "dk", "dv", "dbias"};
  uint16_t *again[4] = {G.hdq, G.hdk, G.hdv, G.hdb};
  for (int i = 0; i < 4; i++) {
    ck_assert_msg(memcmp(copy[i], again[i], n[i]) == 0,
                  "%s: deterministic %s differs between two runs", R.desc, names[i]);
    free(copy[i]);
  }
  printf("   (%.0f ms, of which the CPU reference %.0f ms)\n", tu_now_ms() - t0, ref.ms);
  reference_free(&ref);
  tg_grads_free(&G);
  tg_case_free(&R);
}

/* ------------------------------------------------------------ tests */

/* A dense case in one line of a table: kv heads, sizes, causal, dtype. */
typedef struct dense_row { int Hkv, Tq, Tk, D, causal, bf16; } dense_row;

/* Each dense case of d through run, seeds from seed0. */
static void run_dense(const dense_row *d, size_t n, uint64_t seed0, void (*run)(const scase *)) {
  for (size_t i = 0; i < n; i++) {
    scase c = tg_case(SFA_MODE_DENSE, d[i].Hkv, d[i].Tq, d[i].Tk, d[i].D,
                      d[i].bf16 ? SFA_DTYPE_BF16 : SFA_DTYPE_FP16);
    c.causal = d[i].causal;
    c.seed = tg_seed + seed0 + i;
    run(&c);
  }
}

START_TEST(dense_causal_and_not) {
  const dense_row d[] = {
    {4, 256, 256, 64, 1, 1},  {2, 300, 500, 128, 1, 1}, {1, 500, 300, 64, 1, 0},
    {2, 257, 257, 128, 0, 0}, {4, 129, 77, 32, 0, 1},   {1, 1000, 1000, 128, 1, 0},
  };
  run_dense(d, sizeof d / sizeof d[0], 10, run_case);
}
END_TEST

/* qk_drop: 30% of 900 positions dropped, index padding, D 64 and 128, GQA
** and MQA, fp16 and bf16; through run, seeds from seed0. */
static void run_qk_drop(uint64_t seed0, void (*run)(const scase *)) {
  for (int n = 0; n < 4; n++) {
    const int T0 = 900, Tq = 650, Tk = 600;
    scase c = tg_case(SFA_MODE_QK_DROP, n % 2 ? 1 : 2, Tq, Tk, n < 2 ? 64 : 128,
                      n % 2 ? SFA_DTYPE_BF16 : SFA_DTYPE_FP16);
    c.T0 = T0, c.keep = 0.7;
    c.idx_pad = n == 1 ? 5 : 0;
    c.seed = tg_seed + seed0 + (uint64_t)n;
    run(&c);
  }
}

/* hash: 1, 4, 16 and 64 buckets (64: a tile of rows spans several), index
** padding, Tq != Tk, D 64 and 128; through run, seeds from seed0. */
static void run_hash(uint64_t seed0, void (*run)(const scase *)) {
  const int nbs[4] = {1, 4, 16, 64};
  for (int n = 0; n < 4; n++) {
    scase c = tg_case(SFA_MODE_HASH, n % 2 ? 1 : 2, n ? 700 : 900, n ? 1000 : 611,
                      n % 2 ? 64 : 128, n % 2 ? SFA_DTYPE_BF16 : SFA_DTYPE_FP16);
    c.buckets = nbs[n];
    c.idx_pad = n >= 2 ? 3 : 0;
    c.seed = tg_seed + seed0 + (uint64_t)n;
    run(&c);
  }
}

START_TEST(qk_drop_with_padding) { run_qk_drop(100, run_case); }
END_TEST

START_TEST(hash_buckets) { run_hash(200, run_case); }
END_TEST

/* Each window case of w through run (run_case, or a check before it), seeds from seed0. */
static void run_windows(const tg_wspec *w, size_t n, uint64_t seed0, void (*run)(const scase *)) {
  for (size_t i = 0; i < n; i++) {
    scase c = tg_window_case(&w[i], tg_seed + seed0 + i);
    run(&c);
  }
}

START_TEST(window_plain_and_mask) {
  const tg_wspec w[] = {
    {0, 0, 0, 300, 500, 64, 0, 2, BIAS_NONE, MASK_NONE, 0},
    {15, -1, 0, 700, 400, 128, 1, 1, BIAS_NONE, MASK_NONE, 0},
    {100, 0, 1, 800, 1000, 64, 0, 2, BIAS_NONE, MASK_NONE, 0},
    {63, 63, 0, 1000, 900, 128, 1, 1, BIAS_NONE, MASK_NONE, 0},
    {63, 63, 0, 1000, 900, 64, 0, 2, BIAS_NONE, MASK_HEAD, 0.1},
    {100, 0, 1, 600, 1000, 128, 1, 1, BIAS_NONE, MASK_ROW, 0.9},
  };
  run_windows(w, sizeof w / sizeof w[0], 300, run_case);
}
END_TEST

START_TEST(window_bias_gradients) {
  /* dbias stored per element (head), and accumulated over a kv group, over
  ** rows and over the batch. */
  const tg_wspec w[] = {
    {15, -1, 0, 700, 400, 128, 1, 1, BIAS_HEAD, MASK_NONE, 0},
    {100, 0, 1, 800, 1000, 128, 0, 2, BIAS_KV, MASK_NONE, 0},
    {-1, 37, 0, 513, 1000, 64, 1, 2, BIAS_ROW, MASK_NONE, 0},
    {63, 63, 0, 1000, 900, 64, 0, 1, BIAS_BATCH, MASK_NONE, 0},
    {100, 0, 1, 600, 1000, 64, 1, 2, BIAS_HEAD, MASK_HEAD, 0.9},
    {-1, 37, 0, 513, 1000, 64, 0, 1, BIAS_BATCH, MASK_KV, 0.9},
  };
  run_windows(w, sizeof w / sizeof w[0], 400, run_case);
}
END_TEST

/* Small cases for compute-sanitizer (CK_RUN_CASE=small): every kernel kind
** (bwd with and without det and dbias accumulation, bwddq, bwd_pre, convert)
** on sizes that memcheck and racecheck get through quickly. */
START_TEST(small_for_sanitizers) {
  scase c = tg_case(SFA_MODE_DENSE, 2, 150, 200, 64, SFA_DTYPE_BF16);
  c.causal = 1, c.seed = tg_seed + 800;
  run_case(&c);
  const tg_wspec w[] = {
    {40, 0, 1, 200, 170, 128, 0, 1, BIAS_KV, MASK_HEAD, 0.5},
    {-1, -1, 0, 130, 200, 64, 1, 2, BIAS_ROW, MASK_NONE, 0},
  };
  run_windows(w, sizeof w / sizeof w[0], 810, run_case);
  scase h = tg_case(SFA_MODE_HASH, 1, 200, 260, 64, SFA_DTYPE_FP16);
  h.buckets = 4, h.seed = tg_seed + 820;
  run_case(&h);
}
END_TEST

/* Head dims above 128 (two CTAs per key tile, half the columns each), every
** mode (CK_RUN_CASE=wide). */
START_TEST(wide_head_dims) {
  scase c = tg_case(SFA_MODE_DENSE, 2, 300, 500, 256, SFA_DTYPE_BF16);
  c.causal = 1, c.seed = tg_seed + 1000;
  run_case(&c);
  c = tg_case(SFA_MODE_DENSE, 4, 257, 190, 160, SFA_DTYPE_FP16);
  c.seed = tg_seed + 1001;
  run_case(&c);
  const tg_wspec w[] = {
    {100, 0, 1, 400, 600, 192, 1, 2, BIAS_KV, MASK_NONE, 0},
    {-1, 37, 0, 300, 333, 224, 0, 1, BIAS_HEAD, MASK_HEAD, 0.5},
  };
  run_windows(w, sizeof w / sizeof w[0], 1010, run_case);
  scase h = tg_case(SFA_MODE_HASH, 1, 500, 400, 256, SFA_DTYPE_BF16);
  h.buckets = 4, h.seed = tg_seed + 1020;
  run_case(&h);
  scase q = tg_case(SFA_MODE_QK_DROP, 2, 400, 350, 192, SFA_DTYPE_FP16);
  q.T0 = 600, q.keep = 0.7, q.seed = tg_seed + 1030;
  run_case(&q);
}
END_TEST

/* Bad arguments are refused with a message that names them. */
START_TEST(bad_arguments) {
  scase c = tg_case(SFA_MODE_DENSE, 2, 64, 64, 64, SFA_DTYPE_BF16);
  c.seed = tg_seed + 900;
  srun R;
  tg_grads G;
  tg_case_setup(&R, &c);
  uint64_t rng = 5;
  tg_grads_setup(&G, &R, &rng);
  sfa_status st = sfa_backward(tg_ctx, &R.p, &R.tq, &R.tk, &R.tv, NULL, &R.to, NULL, &G.tdo,
                               &G.tdq, &G.tdk, &G.tdv, NULL, NULL);
  ck_assert_int_eq(st, SFA_ERR_INVALID_ARGUMENT);
  ck_assert_ptr_nonnull(strstr(sfa_last_error(tg_ctx), "lse: is NULL"));
  st = sfa_backward(tg_ctx, &R.p, &R.tq, &R.tk, &R.tv, NULL, &R.to, &R.tl, &G.tdo, &G.tdq,
                    &G.tdv, &G.tdk, &G.tdq, NULL);
  ck_assert_int_eq(st, SFA_ERR_INVALID_ARGUMENT);
  ck_assert_ptr_nonnull(strstr(sfa_last_error(tg_ctx), "dbias: is given but there is no bias"));
  st = sfa_backward(tg_ctx, &R.p, &R.tq, &R.tk, &R.tv, NULL, &R.to, &R.tl, &G.tdo, &R.tq,
                    &G.tdk, &G.tdv, NULL, NULL);
  ck_assert_int_eq(st, SFA_ERR_INVALID_ARGUMENT);
  ck_assert_ptr_nonnull(strstr(sfa_last_error(tg_ctx), "dq: its memory overlaps q"));
  tg_grads_free(&G);
  tg_case_free(&R);
}
END_TEST

/* One problem of every mode (dense causal bf16 with GQA, dense fp16 with
** Tk < Tq, two windows with a bias and its gradient, hash with index padding,
** qk_drop fp16), at head dims d[0..5] in that order, each through run; seeds
** from seed0. */
static void every_mode(const int d[6], uint64_t seed0, void (*run)(const scase *)) {
  scase c = tg_case(SFA_MODE_DENSE, 2, 300, 500, d[0], SFA_DTYPE_BF16);
  c.causal = 1, c.seed = tg_seed + seed0;
  run(&c);
  c = tg_case(SFA_MODE_DENSE, 1, 257, 190, d[1], SFA_DTYPE_FP16);
  c.seed = tg_seed + seed0 + 1;
  run(&c);
  const tg_wspec w[] = {
    {100, 0, 1, 400, 600, d[2], 1, 2, BIAS_KV, MASK_HEAD, 0.3},
    {-1, 37, 0, 300, 333, d[3], 0, 1, BIAS_ROW, MASK_NONE, 0},
  };
  run_windows(w, sizeof w / sizeof w[0], seed0 + 10, run);
  scase h = tg_case(SFA_MODE_HASH, 1, 500, 400, d[4], SFA_DTYPE_BF16);
  h.buckets = 4, h.idx_pad = 3, h.seed = tg_seed + seed0 + 20;
  run(&h);
  scase q = tg_case(SFA_MODE_QK_DROP, 2, 400, 350, d[5], SFA_DTYPE_FP16);
  q.T0 = 600, q.keep = 0.7, q.seed = tg_seed + seed0 + 30;
  run(&q);
}

/* The mma.sync backward where sm_90 would use wgmma (SFA_MMA_SYNC; D 64, 128
** and 256): every mode, GQA and MQA, padding, dbias, both dq paths, through a
** context that forces the mma kind (CK_RUN_CASE=sync; also small enough for
** the sanitizers). Before sm_90 this is a second pass over the default. */
START_TEST(mma_sync_kernels) {
  sfa_context *saved = tg_push_mma(SFA_MMA_SYNC);
  every_mode((const int[6]){128, 64, 256, 64, 64, 128}, 1100, run_case);
  tg_pop_context(saved);
}
END_TEST

/* The wgmma backward at head dim 256 (sm_90's default: two CTAs per key tile,
** each making 128 columns of dK, dV and dQ from the swizzled tiles' atom
** columns; CK_RUN_CASE=wgmma256, small enough for the sanitizers): every mode
** as above, each case first checking that the call takes the wgmma kernel. */
static void run_wgmma_case(const scase *c) {
  const sfa_kernel_spec k = tg_case_kernel(SFA_PASS_BWD, c);
  ck_assert_int_eq(k.mma, SFA_SPEC_MMA_WGMMA);
  ck_assert_int_eq(k.head_dim, 256);
  run_case(c);
}

/* 1 on sm_90; else 0 after saying that case `name` (kernel `what`) is skipped. */
static int on_sm90(const char *name, const char *what) {
  if (tg_cc == 90) return 1;
  printf("%s: skipped, the %s needs sm_90 (this GPU: %d.%d)\n", name, what, tg_cc / 10,
         tg_cc % 10);
  return 0;
}

START_TEST(wgmma_head_dim_256) {
  if (!on_sm90("wgmma256", "wgmma backward")) return;
  sfa_context *saved = tg_push_mma(SFA_MMA_WGMMA); /* dense and window default to ws256 */
  every_mode((const int[6]){256, 256, 256, 256, 256, 256}, 1200, run_wgmma_case);
  tg_pop_context(saved);
}
END_TEST

/* The warp-specialized backward (SFA_MMA_WS; sm_90, every mode at D 64 and
** 128 without a bias or a mask; CK_RUN_CASE=ws, small enough for the
** sanitizers): dense causal and not, Tq != Tk both ways and ragged lengths
** (the tensor copies' rows past T read as zeros), GQA and MQA, windows
** causal, one-sided and two-sided, qk_drop and hash (query metadata staged
** by the producer; hash's plan) with index padding, fp16 and bf16. Each case first checks that
** its call takes the ws kernel; the det pass of run_case takes wgmma. */
static void run_ws_case(const scase *c) {
  const sfa_kernel_spec k = tg_case_kernel(SFA_PASS_BWD, c);
  ck_assert_msg(k.mma == SFA_SPEC_MMA_WS, "mode %d D %d: the call takes mma %d, not ws",
                (int)c->mode, c->D, (int)k.mma);
  run_case(c);
}

START_TEST(ws_kernels) {
  if (!on_sm90("ws", "warp-specialized backward")) return;
  sfa_context *saved = tg_push_mma(SFA_MMA_WS);
  const dense_row d[] = {
    {4, 256, 256, 64, 1, 1},  {2, 300, 500, 128, 1, 1}, {1, 500, 300, 64, 1, 0},
    {2, 257, 257, 128, 0, 0}, {4, 129, 77, 64, 0, 1},   {1, 700, 700, 128, 1, 0},
  };
  run_dense(d, sizeof d / sizeof d[0], 1300, run_ws_case);
  const tg_wspec w[] = {
    {0, 0, 0, 300, 500, 64, 0, 2, BIAS_NONE, MASK_NONE, 0},
    {15, -1, 0, 700, 400, 128, 1, 1, BIAS_NONE, MASK_NONE, 0},
    {100, 0, 1, 800, 1000, 64, 0, 2, BIAS_NONE, MASK_NONE, 0},
    {63, 63, 0, 1000, 900, 128, 1, 1, BIAS_NONE, MASK_NONE, 0},
  };
  run_windows(w, sizeof w / sizeof w[0], 1310, run_ws_case);
  run_qk_drop(1320, run_ws_case);
  run_hash(1330, run_ws_case);
  tg_pop_context(saved);
}
END_TEST

/* The warp-specialized backward at D 256 (SFA_MMA_WS; templates/bwd_ws256.lt:
** two consumers sharing 64 keys, a column half of dK and dV and a query half
** of S^T and dP^T each; dense and window without a bias or a mask;
** CK_RUN_CASE=ws256, small enough for the sanitizers): dense causal and not,
** Tq != Tk both ways, GQA and MQA, windows causal, one-sided and two-sided,
** fp16 and bf16. Each case first checks that its call takes the ws kernel. */
START_TEST(ws_head_dim_256) {
  if (!on_sm90("ws256", "warp-specialized backward")) return;
  sfa_context *saved = tg_push_mma(SFA_MMA_WS);
  const dense_row d[] = {
    {2, 300, 500, 256, 1, 1}, {1, 500, 300, 256, 1, 0}, {4, 257, 257, 256, 0, 1},
    {2, 129, 77, 256, 0, 0},
  };
  run_dense(d, sizeof d / sizeof d[0], 1400, run_ws_case);
  const tg_wspec w[] = {
    {0, 0, 0, 300, 500, 256, 0, 2, BIAS_NONE, MASK_NONE, 0},
    {15, -1, 0, 400, 300, 256, 1, 1, BIAS_NONE, MASK_NONE, 0},
    {63, 63, 0, 500, 450, 256, 1, 1, BIAS_NONE, MASK_NONE, 0},
  };
  run_windows(w, sizeof w / sizeof w[0], 1410, run_ws_case);
  tg_pop_context(saved);
}
END_TEST

/* ------------------------------------------------------------ main */

int main(void) {
  int rc = tg_open("gpu_backward", 0x5FA0B00);
  if (rc != 0) return rc;
  Suite *s = suite_create("gpu_backward");
  TCase *t = tu_untimed_case(s, "full", dense_causal_and_not);
  tcase_add_test(t, qk_drop_with_padding);
  tcase_add_test(t, hash_buckets);
  tcase_add_test(t, window_plain_and_mask);
  tcase_add_test(t, window_bias_gradients);
  tcase_add_test(t, bad_arguments);
  tu_untimed_case(s, "wide", wide_head_dims);
  tu_untimed_case(s, "sync", mma_sync_kernels);
  tu_untimed_case(s, "wgmma256", wgmma_head_dim_256);
  tu_untimed_case(s, "ws", ws_kernels);
  tu_untimed_case(s, "ws256", ws_head_dim_256);
  tu_untimed_case(s, "small", small_for_sanitizers);
  rc = tu_run_suite(s);
  tg_close();
  return rc;
}
