/*
** test_gpu_varlen.c -- packed variable-length batches (sfa_extras.cu_seqlens_q
** / _k) on the GPU: every mode, forward and backward (atomic and
** deterministic dq), sequences of ragged lengths including 0 and 1 (query
** and key lengths may differ per sequence, and a sequence may have queries
** and no keys), GQA, fp16 and bf16, wgmma (the default on sm_90) and
** mma.sync kernels; o, lse, dq, dk and dv are compared with the float64
** reference run on each sequence alone (sfa_reference_forward / _backward on
** slices), within the bounds of the fixed-length GPU suites. Rows of a
** sequence without keys must be o = 0, lse = -inf, dq = 0; keys of a
** sequence without queries dk = dv = 0. Window mode also with a packed bias
** and / or mask [Hb, total_q|1, Kmax] (Hb = Hq, Hkv, 1; broadcast rows; Kmax
** below the longest key length, whose keys past it are masked) and dbias
** (stored, accumulated over heads, a broadcast row summed over sequences;
** columns past a sequence's keys 0). Exits 77 (skip) without a GPU.
** Tcase "small" is a short slice for compute-sanitizer
** (CK_RUN_CASE=small).
*/
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpucase.h"

#define MAXB 40

typedef struct vcase {
  sfa_mode mode;
  sfa_dtype dtype;
  int B, Hq, Hkv, D;
  int lq[MAXB], lk[MAXB];
  int causal, left, right; /* dense: causal; window: all three */
  int det;
  uint64_t seed;
  /* window: a packed bias and / or mask [Hb, total_q|1, Kmax], dbias */
  int bias, mask, dbias;
  int bh, mh;     /* their heads: Hq, Hkv or 1 */
  int brow, mrow; /* 1: one row broadcast over every query of every sequence */
  int kmax;       /* their columns; 0: the longest key length (keys past it are masked) */
  int64_t max_seqlen_k; /* sfa_extras' hint (0: none) */
} vcase;

/* ------------------------------------------------------------ host data */

static uint16_t *rand_half(sfa_dtype dt, size_t n, float *ref, uint64_t *rng) {
  uint16_t *h = malloc(n * 2 + 2);
  ck_assert_ptr_nonnull(h);
  for (size_t i = 0; i < n; i++) {
    h[i] = tg_to_half(dt, (float)tu_rand_normal(rng));
    ref[i] = tg_from_half(dt, h[i]);
  }
  return h;
}

/* qk_drop: n sorted positions of [0, 2n) (each kept with probability 0.7, the
** rest padding). hash: n tokens with buckets in [0, 4), sorted by (bucket,
** position), the last few padding. Positions are within the sequence. */
static void index_row(sfa_mode mode, int k_side, int n, int32_t *idx, int32_t *hs,
                      uint64_t *rng) {
  const int32_t pad = k_side ? INT32_MAX : -1;
  if (mode == SFA_MODE_QK_DROP) {
    int m = 0;
    for (int t = 0; t < 2 * n && m < n; t++)
      if (tu_rand_uniform(rng) < 0.7) idx[m++] = t;
    for (; m < n; m++) idx[m] = pad;
    return;
  }
  const int real = n - (int)(tu_rand_u64(rng) % 3 < 1 ? n / 4 : 0);
  int count[5] = {0}, start[5] = {0};
  int32_t *bucket = malloc((size_t)(n + 1) * sizeof *bucket);
  ck_assert_ptr_nonnull(bucket);
  for (int t = 0; t < real; t++) count[bucket[t] = (int32_t)(tu_rand_u64(rng) % 4)]++;
  for (int b = 0; b < 4; b++) start[b + 1] = start[b] + count[b];
  for (int t = 0; t < real; t++) {
    const int at = start[bucket[t]]++;
    idx[at] = t, hs[at] = bucket[t];
  }
  for (int i = real; i < n; i++) idx[i] = pad, hs[i] = INT32_MAX;
  free(bucket);
}

/* rows [r0, r0 + n) of a packed [total, H, D] float array into [1, H, n, D]. */
static void slice_rows(const float *src, int H, int D, int r0, int n, float *dst) {
  for (int h = 0; h < H; h++)
    for (int t = 0; t < n; t++)
      memcpy(dst + ((size_t)h * n + t) * D, src + ((size_t)(r0 + t) * H + h) * D,
             (size_t)D * 4);
}

static void unslice_rows(const float *src, int H, int D, int r0, int n, float *dst) {
  for (int h = 0; h < H; h++)
    for (int t = 0; t < n; t++)
      memcpy(dst + ((size_t)(r0 + t) * H + h) * D, src + ((size_t)h * n + t) * D,
             (size_t)D * 4);
}

static CUdeviceptr alloc_zero(size_t bytes) {
  CUdeviceptr p = 0;
  TG_CU(tg_drv->cuMemAlloc(&p, bytes));
  TG_CU(tg_drv->cuMemsetD8(p, 0xA5, bytes)); /* garbage: every element must be written */
  return p;
}

static void download(void *host, CUdeviceptr d, size_t bytes) {
  TG_CU(tg_drv->cuMemcpyDtoH(host, d, bytes));
}

/* ------------------------------------------------------------ one case */

static void describe(const vcase *c, char *buf, size_t n) {
  int at = snprintf(buf, n, "%s %s Hq %d Hkv %d D %d causal %d window %d/%d det %d",
                    sfa_mode_name(c->mode), sfa_dtype_name(c->dtype), c->Hq, c->Hkv, c->D,
                    c->causal, c->left, c->right, c->det);
  if (at > 0 && (size_t)at < n && (c->bias || c->mask))
    at += snprintf(buf + at, n - (size_t)at,
                   " bias %d [%d,%s] mask %d [%d,%s] kmax %d dbias %d", c->bias, c->bh,
                   c->brow ? "1" : "total_q", c->mask, c->mh, c->mrow ? "1" : "total_q",
                   c->kmax, c->dbias);
  if (at > 0 && (size_t)at < n) at += snprintf(buf + at, n - (size_t)at, " lens");
  for (int b = 0; b < c->B && at > 0 && (size_t)at < n; b++)
    at += snprintf(buf + at, n - (size_t)at, " %d/%d", c->lq[b], c->lk[b]);
}

static void run_case(const vcase *c) {
  char desc[600];
  describe(c, desc, sizeof desc);
  const int B = c->B, Hq = c->Hq, Hkv = c->Hkv, D = c->D;
  const sfa_dtype dt = c->dtype;
  int32_t cq[MAXB + 1] = {0}, ck[MAXB + 1] = {0};
  for (int b = 0; b < B; b++) cq[b + 1] = cq[b] + c->lq[b], ck[b + 1] = ck[b] + c->lk[b];
  const int TQ = cq[B], TK = ck[B];
  const size_t nq = (size_t)TQ * Hq * D, nk = (size_t)TK * Hkv * D, nl = (size_t)Hq * TQ;
  uint64_t rng = c->seed;

  float *rq = malloc(nq * 4 + 4), *rk = malloc(nk * 4 + 4), *rv = malloc(nk * 4 + 4);
  float *rdo = malloc(nq * 4 + 4);
  ck_assert(rq && rk && rv && rdo);
  uint16_t *hq = rand_half(dt, nq, rq, &rng), *hk = rand_half(dt, nk, rk, &rng);
  uint16_t *hv = rand_half(dt, nk, rv, &rng), *hdo = rand_half(dt, nq, rdo, &rng);

  /* index arrays [H, total], per sequence and head */
  const int sparse = c->mode == SFA_MODE_QK_DROP || c->mode == SFA_MODE_HASH;
  const int hash = c->mode == SFA_MODE_HASH;
  int32_t *qi = NULL, *ki = NULL, *qh = NULL, *kh = NULL;
  if (sparse) {
    qi = calloc(nl + 1, 4), ki = calloc((size_t)Hkv * TK + 1, 4);
    qh = calloc(nl + 1, 4), kh = calloc((size_t)Hkv * TK + 1, 4);
    ck_assert(qi && ki && qh && kh);
    for (int b = 0; b < B; b++) {
      for (int h = 0; h < Hq; h++)
        index_row(c->mode, 0, c->lq[b], qi + (size_t)h * TQ + cq[b], qh + (size_t)h * TQ + cq[b],
                  &rng);
      for (int h = 0; h < Hkv; h++)
        index_row(c->mode, 1, c->lk[b], ki + (size_t)h * TK + ck[b], kh + (size_t)h * TK + ck[b],
                  &rng);
    }
  }

  /* window: bias [bh, BR, KM] (q's dtype) and mask [mh, MR, KM] (uint8, rows
  ** of KS bytes, a multiple of 16), dbias like the bias */
  int KM = c->kmax;
  if (!KM) /* the longest sequence's keys */
    for (int b = 0; b < B; b++) KM = c->lk[b] > KM ? c->lk[b] : KM;
  if (KM < 1) KM = 1;
  const int BR = c->brow ? 1 : TQ, MR = c->mrow ? 1 : TQ, KS = (KM + 15) / 16 * 16;
  const size_t nb = c->bias ? (size_t)c->bh * BR * KM : 0;
  const size_t nm = c->mask ? (size_t)c->mh * MR * KS : 0;
  float *rb = malloc(nb * 4 + 4);
  uint16_t *hb = rand_half(dt, nb, rb, &rng);
  uint8_t *hm = malloc(nm + 1);
  ck_assert(rb && hm);
  for (size_t i = 0; i < nm; i++) hm[i] = tu_rand_uniform(&rng) < 0.75;

  /* device tensors */
  const int64_t qs[3] = {TQ, Hq, D}, ks[3] = {TK, Hkv, D}, ls[2] = {Hq, TQ};
  const int64_t qis[2] = {Hq, TQ}, kis[2] = {Hkv, TK}, cs[1] = {B + 1};
  CUdeviceptr dq = tg_upload(hq, nq * 2 + 2), dk = tg_upload(hk, nk * 2 + 2);
  CUdeviceptr dv = tg_upload(hv, nk * 2 + 2), ddo = tg_upload(hdo, nq * 2 + 2);
  CUdeviceptr dcq = tg_upload(cq, (size_t)(B + 1) * 4), dck = tg_upload(ck, (size_t)(B + 1) * 4);
  CUdeviceptr d_o = alloc_zero(nq * 2 + 2), d_l = alloc_zero(nl * 4 + 4);
  CUdeviceptr d_dq = alloc_zero(nq * 2 + 2), d_dk = alloc_zero(nk * 2 + 2);
  CUdeviceptr d_dv = alloc_zero(nk * 2 + 2);
  CUdeviceptr dqi = 0, dki = 0, dqh = 0, dkh = 0;
  sfa_tensor tq, tk, tv, to, tl, tdo, tdq, tdk, tdv, tcq, tck, tqi, tki, tqh, tkh;
  sfa_tensor_init(&tq, (void *)(uintptr_t)dq, dt, 3, qs);
  sfa_tensor_init(&tk, (void *)(uintptr_t)dk, dt, 3, ks);
  sfa_tensor_init(&tv, (void *)(uintptr_t)dv, dt, 3, ks);
  sfa_tensor_init(&to, (void *)(uintptr_t)d_o, dt, 3, qs);
  sfa_tensor_init(&tdo, (void *)(uintptr_t)ddo, dt, 3, qs);
  sfa_tensor_init(&tdq, (void *)(uintptr_t)d_dq, dt, 3, qs);
  sfa_tensor_init(&tdk, (void *)(uintptr_t)d_dk, dt, 3, ks);
  sfa_tensor_init(&tdv, (void *)(uintptr_t)d_dv, dt, 3, ks);
  sfa_tensor_init(&tl, (void *)(uintptr_t)d_l, SFA_DTYPE_FP32, 2, ls);
  sfa_tensor_init(&tcq, (void *)(uintptr_t)dcq, SFA_DTYPE_INT32, 1, cs);
  sfa_tensor_init(&tck, (void *)(uintptr_t)dck, SFA_DTYPE_INT32, 1, cs);
  sfa_extras ex = {0};
  ex.cu_seqlens_q = &tcq, ex.cu_seqlens_k = &tck;
  ex.max_seqlen_k = c->max_seqlen_k;
  if (sparse) {
    dqi = tg_upload(qi, nl * 4 + 4), dki = tg_upload(ki, (size_t)Hkv * TK * 4 + 4);
    sfa_tensor_init(&tqi, (void *)(uintptr_t)dqi, SFA_DTYPE_INT32, 2, qis);
    sfa_tensor_init(&tki, (void *)(uintptr_t)dki, SFA_DTYPE_INT32, 2, kis);
    ex.q_idx = &tqi, ex.k_idx = &tki;
    if (hash) {
      dqh = tg_upload(qh, nl * 4 + 4), dkh = tg_upload(kh, (size_t)Hkv * TK * 4 + 4);
      sfa_tensor_init(&tqh, (void *)(uintptr_t)dqh, SFA_DTYPE_INT32, 2, qis);
      sfa_tensor_init(&tkh, (void *)(uintptr_t)dkh, SFA_DTYPE_INT32, 2, kis);
      ex.q_hash = &tqh, ex.k_hash = &tkh;
    }
  }
  CUdeviceptr dbs = 0, dms = 0, d_db = 0;
  sfa_tensor tb, tm, tdb;
  if (c->bias) {
    const int64_t bs[3] = {c->bh, BR, KM};
    dbs = tg_upload(hb, nb * 2 + 2);
    sfa_tensor_init(&tb, (void *)(uintptr_t)dbs, dt, 3, bs);
    ex.bias = &tb;
    if (c->dbias) {
      /* NaN (0xffff in fp16 and bf16): an element left unwritten, such as a
      ** column past a sequence's keys that must become 0, counts as a NaN */
      TG_CU(tg_drv->cuMemAlloc(&d_db, nb * 2 + 2));
      TG_CU(tg_drv->cuMemsetD8(d_db, 0xff, nb * 2 + 2));
      sfa_tensor_init(&tdb, (void *)(uintptr_t)d_db, dt, 3, bs);
    }
  }
  if (c->mask) {
    const int64_t ms[3] = {c->mh, MR, KM};
    dms = tg_upload(hm, nm + 1);
    sfa_tensor_init(&tm, (void *)(uintptr_t)dms, SFA_DTYPE_UINT8, 3, ms);
    tm.strides[1] = KS, tm.strides[0] = (int64_t)MR * KS;
    ex.mask = &tm;
  }
  sfa_attention_params p;
  sfa_params_init(&p);
  p.mode = c->mode;
  p.causal = c->causal;
  if (c->mode == SFA_MODE_WINDOW) p.window_left = c->left, p.window_right = c->right;
  p.deterministic = c->det;

  /* the contract holds (sfa_check_indices reads cu_seqlens too) */
  sfa_status st = sfa_check_indices(tg_ctx, &p, &ex, TQ, TK, NULL);
  ck_assert_msg(st == SFA_OK, "%s: sfa_check_indices: %s", desc, sfa_last_error(tg_ctx));
  st = sfa_forward(tg_ctx, &p, &tq, &tk, &tv, &ex, &to, &tl, NULL);
  ck_assert_msg(st == SFA_OK, "%s: sfa_forward: %s", desc, sfa_last_error(tg_ctx));
  st = sfa_backward(tg_ctx, &p, &tq, &tk, &tv, &ex, &to, &tl, &tdo, &tdq, &tdk, &tdv,
                    c->dbias ? &tdb : NULL, NULL);
  ck_assert_msg(st == SFA_OK, "%s: sfa_backward: %s", desc, sfa_last_error(tg_ctx));
  TG_CU(tg_drv->cuCtxSynchronize());
  uint16_t *go = malloc(nq * 2 + 2), *gdq = malloc(nq * 2 + 2), *gdk = malloc(nk * 2 + 2);
  uint16_t *gdv = malloc(nk * 2 + 2);
  float *gl = malloc(nl * 4 + 4);
  ck_assert(go && gdq && gdk && gdv && gl);
  download(go, d_o, nq * 2), download(gl, d_l, nl * 4);
  download(gdq, d_dq, nq * 2), download(gdk, d_dk, nk * 2), download(gdv, d_dv, nk * 2);
  uint16_t *gdb = malloc(nb * 2 + 2);
  float *wdb = calloc(nb + 1, 4);
  ck_assert(gdb && wdb);
  if (c->dbias) download(gdb, d_db, nb * 2);

  /* the reference, one sequence at a time */
  float *wo = calloc(nq + 1, 4), *wl = malloc(nl * 4 + 4), *wdq = calloc(nq + 1, 4);
  float *wdk = calloc(nk + 1, 4), *wdv = calloc(nk + 1, 4);
  ck_assert(wo && wl && wdq && wdk && wdv);
  for (size_t i = 0; i < nl; i++) wl[i] = -INFINITY;
  char err[512];
  for (int b = 0; b < B; b++) {
    const int tqb = c->lq[b], tkb = c->lk[b];
    if (tqb == 0 || tkb == 0) continue; /* nothing seen: o, dq = 0, lse = -inf; dk, dv = 0 */
    const size_t sq = (size_t)Hq * tqb * D, sk = (size_t)Hkv * tkb * D;
    float *sq_ = malloc(sq * 4), *sk_ = malloc(sk * 4), *sv_ = malloc(sk * 4);
    float *sdo = malloc(sq * 4), *so = malloc(sq * 4), *sl = malloc((size_t)Hq * tqb * 4);
    float *sdq = malloc(sq * 4), *sdk = malloc(sk * 4), *sdv = malloc(sk * 4);
    int32_t *sqi = NULL, *ski = NULL, *sqh = NULL, *skh = NULL;
    ck_assert(sq_ && sk_ && sv_ && sdo && so && sl && sdq && sdk && sdv);
    slice_rows(rq, Hq, D, cq[b], tqb, sq_);
    slice_rows(rk, Hkv, D, ck[b], tkb, sk_);
    slice_rows(rv, Hkv, D, ck[b], tkb, sv_);
    slice_rows(rdo, Hq, D, cq[b], tqb, sdo);
    sfa_host_extras hx = {0};
    if (sparse) { /* [1, H, n] slices of [H, total] */
      sqi = malloc((size_t)Hq * tqb * 4), sqh = malloc((size_t)Hq * tqb * 4);
      ski = malloc((size_t)Hkv * tkb * 4), skh = malloc((size_t)Hkv * tkb * 4);
      for (int h = 0; h < Hq; h++) {
        memcpy(sqi + (size_t)h * tqb, qi + (size_t)h * TQ + cq[b], (size_t)tqb * 4);
        memcpy(sqh + (size_t)h * tqb, qh + (size_t)h * TQ + cq[b], (size_t)tqb * 4);
      }
      for (int h = 0; h < Hkv; h++) {
        memcpy(ski + (size_t)h * tkb, ki + (size_t)h * TK + ck[b], (size_t)tkb * 4);
        memcpy(skh + (size_t)h * tkb, kh + (size_t)h * TK + ck[b], (size_t)tkb * 4);
      }
      hx.q_idx = sqi, hx.k_idx = ski;
      if (hash) hx.q_hash = sqh, hx.k_hash = skh;
    }
    /* window: the sequence's rows of the bias and mask as [1, H, rows, tkb],
    ** column j its key j; keys at or past KM masked (a mask of ones below KM
    ** where the call has none) */
    const int sbr = c->brow ? 1 : tqb, smr = c->mask && c->mrow ? 1 : tqb;
    const int smh = c->mask ? c->mh : 1;
    float *sb = NULL, *sdb = NULL;
    uint8_t *sm = NULL;
    if (c->bias) {
      sb = calloc((size_t)c->bh * sbr * tkb, 4), sdb = calloc((size_t)c->bh * sbr * tkb, 4);
      ck_assert(sb && sdb);
      for (int h = 0; h < c->bh; h++)
        for (int t = 0; t < sbr; t++)
          for (int j = 0; j < tkb && j < KM; j++)
            sb[((size_t)h * sbr + t) * tkb + j] =
                rb[((size_t)h * BR + (c->brow ? 0 : cq[b] + t)) * KM + j];
      hx.bias = sb, hx.bias_heads = c->bh, hx.bias_rows = sbr;
    }
    if (c->mask || (c->bias && tkb > KM)) { /* only window takes a bias or a mask */
      sm = calloc((size_t)smh * smr * tkb, 1);
      ck_assert_ptr_nonnull(sm);
      for (int h = 0; h < smh; h++)
        for (int t = 0; t < smr; t++)
          for (int j = 0; j < tkb && j < KM; j++)
            sm[((size_t)h * smr + t) * tkb + j] =
                c->mask ? hm[((size_t)h * MR + (c->mrow ? 0 : cq[b] + t)) * KS + j] : 1;
      hx.mask = sm, hx.mask_heads = smh, hx.mask_rows = smr;
    }
    st = sfa_reference_forward(&p, 1, Hq, Hkv, tqb, tkb, D, sq_, sk_, sv_, &hx, so, sl, err,
                               sizeof err);
    ck_assert_msg(st == SFA_OK, "%s: reference: %s", desc, err);
    st = sfa_reference_backward(&p, 1, Hq, Hkv, tqb, tkb, D, sq_, sk_, sv_, &hx, sdo, sdq, sdk,
                                sdv, c->dbias ? sdb : NULL, err, sizeof err);
    ck_assert_msg(st == SFA_OK, "%s: reference bwd: %s", desc, err);
    if (c->dbias) /* its rows of dbias; a broadcast row sums every sequence's */
      for (int h = 0; h < c->bh; h++)
        for (int t = 0; t < sbr; t++)
          for (int j = 0; j < tkb && j < KM; j++)
            wdb[((size_t)h * BR + (c->brow ? 0 : cq[b] + t)) * KM + j] +=
                sdb[((size_t)h * sbr + t) * tkb + j];
    free(sb), free(sdb), free(sm);
    unslice_rows(so, Hq, D, cq[b], tqb, wo);
    unslice_rows(sdq, Hq, D, cq[b], tqb, wdq);
    unslice_rows(sdk, Hkv, D, ck[b], tkb, wdk);
    unslice_rows(sdv, Hkv, D, ck[b], tkb, wdv);
    for (int h = 0; h < Hq; h++)
      memcpy(wl + (size_t)h * TQ + cq[b], sl + (size_t)h * tqb, (size_t)tqb * 4);
    free(sq_), free(sk_), free(sv_), free(sdo), free(so), free(sl);
    free(sdq), free(sdk), free(sdv), free(sqi), free(ski), free(sqh), free(skh);
  }

  long nan = 0;
  const double eo = tg_rel_err(dt, go, wo, nq, &nan);
  const double edq = tg_rel_err(dt, gdq, wdq, nq, &nan);
  const double edk = tg_rel_err(dt, gdk, wdk, nk, &nan);
  const double edv = tg_rel_err(dt, gdv, wdv, nk, &nan);
  const double edb = c->dbias ? tg_rel_err(dt, gdb, wdb, nb, &nan) : 0;
  double el = 0;
  long lse_bad = 0;
  for (size_t i = 0; i < nl; i++) {
    if (isinf(wl[i]) || isinf(gl[i])) {
      lse_bad += !(isinf(wl[i]) && isinf(gl[i]) && wl[i] < 0 && gl[i] < 0);
      continue;
    }
    const double d = fabs((double)gl[i] - wl[i]);
    if (!(d <= el)) el = d; /* NaN sticks */
  }
  printf("%s: o %.2e lse %.2e dq %.2e dk %.2e dv %.2e dbias %.2e\n", desc, eo, el, edq, edk,
         edv, edb);
  ck_assert_msg(nan == 0, "%s: %ld NaN", desc, nan);
  ck_assert_msg(lse_bad == 0, "%s: %ld lse entries where one side is -inf and the other not",
                desc, lse_bad);
  ck_assert_msg(eo <= tg_tol_fwd(dt), "%s: o rel err %g", desc, eo);
  ck_assert_msg(el <= TG_LSE_TOL, "%s: lse abs err %g", desc, el);
  ck_assert_msg(edq <= tg_tol_bwd(dt), "%s: dq rel err %g", desc, edq);
  ck_assert_msg(edk <= tg_tol_bwd(dt), "%s: dk rel err %g", desc, edk);
  ck_assert_msg(edv <= tg_tol_bwd(dt), "%s: dv rel err %g", desc, edv);
  ck_assert_msg(edb <= tg_tol_bwd(dt), "%s: dbias rel err %g", desc, edb);

  CUdeviceptr all[] = {dq,  dk,  dv,  ddo, dcq, dck, d_o, d_l, d_dq, d_dk,
                       d_dv, dqi, dki, dqh, dkh, dbs, dms, d_db};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
    if (all[i]) tg_drv->cuMemFree(all[i]);
  free(rq), free(rk), free(rv), free(rdo), free(hq), free(hk), free(hv), free(hdo);
  free(qi), free(ki), free(qh), free(kh), free(go), free(gdq), free(gdk), free(gdv), free(gl);
  free(wo), free(wl), free(wdq), free(wdk), free(wdv);
  free(rb), free(hb), free(hm), free(gdb), free(wdb);
}

/* Lengths from a list ending in -1: q and k alike unless lk is given. */
static vcase mk(sfa_mode mode, sfa_dtype dt, int Hq, int Hkv, int D, const int *lq,
                const int *lk, uint64_t seed) {
  vcase c;
  memset(&c, 0, sizeof c);
  c.mode = mode, c.dtype = dt, c.Hq = Hq, c.Hkv = Hkv, c.D = D;
  c.left = c.right = -1;
  for (c.B = 0; lq[c.B] >= 0; c.B++) {
    ck_assert_int_lt(c.B, MAXB);
    c.lq[c.B] = lq[c.B];
    c.lk[c.B] = lk ? lk[c.B] : lq[c.B];
  }
  c.seed = tg_seed + seed;
  return c;
}

/* ------------------------------------------------------------ the tests */

static const int L1[] = {0, 1, 37, 200, 1, 130, 64, -1};
static const int L2q[] = {5, 0, 300, 17, 9, 1, -1};
static const int L2k[] = {40, 3, 250, 0, 1, 70, -1};

START_TEST(dense_ragged) {
  vcase c = mk(SFA_MODE_DENSE, SFA_DTYPE_BF16, 4, 2, 128, L1, NULL, 1);
  c.causal = 1;
  run_case(&c);
  c = mk(SFA_MODE_DENSE, SFA_DTYPE_FP16, 4, 4, 64, L2q, L2k, 2);
  run_case(&c);
  c = mk(SFA_MODE_DENSE, SFA_DTYPE_FP16, 4, 1, 64, L2q, L2k, 3);
  c.causal = 1, c.det = 1;
  run_case(&c);
  c = mk(SFA_MODE_DENSE, SFA_DTYPE_BF16, 2, 2, 96, L1, NULL, 4); /* mma.sync: D 96 */
  c.causal = 1;
  run_case(&c);
}
END_TEST

/* One long sequence among many short ones (4162 keys in all: the D 64
** forward's tile for long keys on sm_90), then with max_seqlen_k: the true
** longest (2048) and one below it (a wrong hint picks the tile of short keys
** but changes no output: every tile serves every length). */
START_TEST(dense_uneven) {
  int l[34];
  for (int i = 0; i < 33; i++) l[i] = i == 7 ? 2048 : 64 + (i % 3);
  l[33] = -1;
  const int64_t hint[] = {0, 2048, 100};
  for (int h = 0; h < 3; h++) {
    vcase c = mk(SFA_MODE_DENSE, SFA_DTYPE_BF16, 2, 1, 64, l, NULL, 10 + h);
    c.causal = 1, c.max_seqlen_k = hint[h];
    run_case(&c);
  }
}
END_TEST

START_TEST(window_ragged) {
  vcase c = mk(SFA_MODE_WINDOW, SFA_DTYPE_BF16, 4, 1, 128, L1, NULL, 20);
  c.left = 16, c.causal = 1;
  run_case(&c);
  c = mk(SFA_MODE_WINDOW, SFA_DTYPE_FP16, 4, 2, 64, L2q, L2k, 21);
  c.left = 8, c.right = 8, c.det = 1;
  run_case(&c);
}
END_TEST

START_TEST(qk_drop_ragged) {
  vcase c = mk(SFA_MODE_QK_DROP, SFA_DTYPE_BF16, 4, 2, 128, L1, NULL, 30);
  run_case(&c);
  c = mk(SFA_MODE_QK_DROP, SFA_DTYPE_FP16, 2, 2, 64, L2q, L2k, 31);
  c.det = 1;
  run_case(&c);
}
END_TEST

START_TEST(hash_ragged) {
  vcase c = mk(SFA_MODE_HASH, SFA_DTYPE_BF16, 4, 2, 64, L1, NULL, 40);
  run_case(&c);
  c = mk(SFA_MODE_HASH, SFA_DTYPE_FP16, 2, 1, 128, L2q, L2k, 41);
  c.det = 1;
  run_case(&c);
}
END_TEST

/* Window with a packed bias and / or mask [Hb, total_q|1, Kmax], and dbias:
** Hb = Hq, Hkv and 1, broadcast rows, Kmax the longest key length or less
** (keys past it masked), ragged lengths with 0 and 1. */
static vcase window_bm(sfa_dtype dt, int Hq, int Hkv, int D, const int *lq, const int *lk,
                       uint64_t seed) {
  vcase c = mk(SFA_MODE_WINDOW, dt, Hq, Hkv, D, lq, lk, seed);
  c.bh = c.mh = Hq;
  return c;
}

START_TEST(window_bias_ragged) {
  /* Hb = Hq, every row: dbias stored per element */
  vcase c = window_bm(SFA_DTYPE_BF16, 4, 2, 128, L1, NULL, 70);
  c.bias = c.dbias = 1, c.left = 16, c.causal = 1;
  run_case(&c);
  /* Hb = 1 of every row (accumulated over the kv heads), Kmax short of the
  ** longest sequence, deterministic */
  c = window_bm(SFA_DTYPE_FP16, 4, 2, 64, L2q, L2k, 71);
  c.bias = c.dbias = 1, c.bh = 1, c.kmax = 61, c.det = 1;
  run_case(&c);
  /* one broadcast row of Hkv heads: summed over every sequence */
  c = window_bm(SFA_DTYPE_BF16, 4, 2, 64, L1, NULL, 72);
  c.bias = c.dbias = 1, c.bh = 2, c.brow = 1, c.left = 40, c.right = 8;
  run_case(&c);
}
END_TEST

START_TEST(window_mask_ragged) {
  /* Hb = Hq, every row */
  vcase c = window_bm(SFA_DTYPE_BF16, 4, 2, 128, L2q, L2k, 80);
  c.mask = 1, c.causal = 1;
  run_case(&c);
  /* Hb = 1, one broadcast row, Kmax short of the longest sequence */
  c = window_bm(SFA_DTYPE_FP16, 2, 1, 64, L1, NULL, 81);
  c.mask = 1, c.mh = 1, c.mrow = 1, c.kmax = 100, c.left = 24, c.det = 1;
  run_case(&c);
}
END_TEST

START_TEST(window_bias_and_mask_ragged) {
  vcase c = window_bm(SFA_DTYPE_BF16, 4, 2, 64, L1, NULL, 90);
  c.bias = c.mask = c.dbias = 1, c.causal = 1;
  run_case(&c);
  c = window_bm(SFA_DTYPE_FP16, 4, 1, 128, L2q, L2k, 91);
  c.bias = c.mask = c.dbias = 1, c.bh = 1, c.mh = 4, c.mrow = 1, c.kmax = 200, c.left = 32,
  c.right = 32, c.det = 1;
  run_case(&c);
  c = window_bm(SFA_DTYPE_BF16, 2, 2, 64, L2q, L2k, 92);
  c.bias = c.mask = c.dbias = 1, c.bh = 1, c.brow = 1, c.mh = 1, c.causal = 1;
  run_case(&c);
}
END_TEST

/* A case of the lengths L1 (ragged 0) or L2q / L2k (ragged 1), without a
** bias or mask; left / right: the window's, -1 none. */
typedef struct mcase {
  sfa_mode mode;
  sfa_dtype dtype;
  int Hq, Hkv, D, ragged, causal, left, right;
} mcase;

/* Each case of m in turn, the n-th with seed + n. */
static void run_each(const mcase *m, size_t n, uint64_t seed) {
  for (size_t i = 0; i < n; i++) {
    vcase c = mk(m[i].mode, m[i].dtype, m[i].Hq, m[i].Hkv, m[i].D, m[i].ragged ? L2q : L1,
                 m[i].ragged ? L2k : NULL, seed + i);
    c.causal = m[i].causal, c.left = m[i].left, c.right = m[i].right;
    run_case(&c);
  }
}

/* The mma.sync kernels on sm_90 too (a context that asks for them). */
START_TEST(mma_sync_kernels) {
  sfa_context *saved = tg_push_mma(SFA_MMA_SYNC);
  vcase c = mk(SFA_MODE_DENSE, SFA_DTYPE_BF16, 4, 2, 128, L1, NULL, 50);
  c.causal = 1;
  run_case(&c);
  c = mk(SFA_MODE_HASH, SFA_DTYPE_BF16, 2, 2, 64, L2q, L2k, 51);
  run_case(&c);
  c = window_bm(SFA_DTYPE_BF16, 4, 2, 128, L1, NULL, 52);
  c.bias = c.mask = c.dbias = 1, c.mh = 2, c.kmax = 150, c.left = 20, c.causal = 1;
  run_case(&c);
  tg_pop_context(saved);
}
END_TEST

/* The warp-specialized kernels on packed sequences, forced for every mode
** (by default the forward only for dense, qk_drop and an unbiased window at
** D 64 and 128; the backward for every mode at D 64 and 128 without a bias
** or det, which the full case's other tests take): a key tile that runs
** past its sequence copies the next one's rows, which the mask drops, and a
** backward's query tile the next one's rows, whose lse2 reads as +inf;
** window with a bias and Kmax (no mask: the kind does not serve it; its
** backward is the wgmma kernel's, as at D 256). */
START_TEST(ws_kernels) {
  sfa_context *saved = tg_push_mma(SFA_MMA_WS);
  static const mcase m[] = {{SFA_MODE_DENSE, SFA_DTYPE_BF16, 4, 2, 128, 0, 1, -1, -1},
                            {SFA_MODE_DENSE, SFA_DTYPE_FP16, 2, 1, 64, 1, 0, -1, -1},
                            {SFA_MODE_HASH, SFA_DTYPE_BF16, 2, 2, 64, 1, 0, -1, -1},
                            {SFA_MODE_QK_DROP, SFA_DTYPE_BF16, 4, 2, 128, 0, 0, -1, -1}};
  run_each(m, sizeof m / sizeof m[0], 60);
  vcase c = window_bm(SFA_DTYPE_BF16, 4, 2, 128, L1, NULL, 64);
  c.bias = c.dbias = 1, c.kmax = 150, c.left = 20, c.causal = 1;
  run_case(&c);
  /* head dim 256 (two consumers, 64-key tiles) */
  c = mk(SFA_MODE_DENSE, SFA_DTYPE_BF16, 2, 1, 256, L1, NULL, 65);
  c.causal = 1;
  run_case(&c);
  c = mk(SFA_MODE_WINDOW, SFA_DTYPE_FP16, 2, 2, 256, L2q, L2k, 66);
  c.left = 40, c.causal = 1;
  run_case(&c);
  tg_pop_context(saved);
}
END_TEST

/* The wgmma backward on packed sequences where the default is now the
** warp-specialized one (every mode at D 64 and 128 without a bias or det). */
START_TEST(wgmma_backward) {
  sfa_context *saved = tg_push_mma(SFA_MMA_WGMMA);
  static const mcase m[] = {{SFA_MODE_DENSE, SFA_DTYPE_BF16, 4, 2, 128, 0, 1, -1, -1},
                            {SFA_MODE_HASH, SFA_DTYPE_FP16, 2, 2, 64, 1, 0, -1, -1},
                            {SFA_MODE_QK_DROP, SFA_DTYPE_BF16, 4, 1, 64, 0, 0, -1, -1},
                            {SFA_MODE_WINDOW, SFA_DTYPE_BF16, 2, 1, 128, 1, 0, 24, 4}};
  run_each(m, sizeof m / sizeof m[0], 100);
  tg_pop_context(saved);
}
END_TEST

/* A short slice for compute-sanitizer: every mode once, small. */
START_TEST(small_for_sanitizers) {
  static const int lq[] = {0, 1, 70, 3, -1}, lk[] = {2, 1, 65, 0, -1};
  static const sfa_mode modes[] = {SFA_MODE_DENSE, SFA_MODE_WINDOW, SFA_MODE_QK_DROP,
                                   SFA_MODE_HASH};
  for (int i = 0; i < 4; i++) {
    vcase c = mk(modes[i], SFA_DTYPE_BF16, 2, 1, 64, lq, lk, 60 + (uint64_t)i);
    c.causal = modes[i] == SFA_MODE_DENSE;
    if (modes[i] == SFA_MODE_WINDOW) c.left = 4, c.right = 2;
    run_case(&c);
  }
  vcase c = window_bm(SFA_DTYPE_BF16, 2, 1, 64, lq, lk, 64);
  c.bias = c.mask = c.dbias = 1, c.mrow = 1, c.kmax = 40, c.causal = 1;
  run_case(&c);
}
END_TEST

int main(void) {
  int rc = tg_open("gpu_varlen", 0x5FA7A81);
  if (rc != 0) return rc;
  Suite *s = suite_create("gpu_varlen");
  TCase *t = tu_untimed_case(s, "full", dense_ragged);
  tcase_add_test(t, dense_uneven);
  tcase_add_test(t, window_ragged);
  tcase_add_test(t, qk_drop_ragged);
  tcase_add_test(t, hash_ragged);
  tcase_add_test(t, window_bias_ragged);
  tcase_add_test(t, window_mask_ragged);
  tcase_add_test(t, window_bias_and_mask_ragged);
  tcase_add_test(t, mma_sync_kernels);
  tcase_add_test(t, ws_kernels);
  tcase_add_test(t, wgmma_backward);
  tu_untimed_case(s, "small", small_for_sanitizers);
  rc = tu_run_suite(s);
  tg_close();
  return rc;
}
