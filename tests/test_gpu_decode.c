/*
** test_gpu_decode.c -- sfa_decode on a real GPU against the float64 CPU
** reference: contiguous and paged caches (page sizes 16, 48 and 256, pages
** shuffled over a pool), uneven lengths per sequence (0, 1, fewer than the
** new tokens, the whole capacity), 1..16 new tokens, GQA groups that fill one
** or several 16-row tiles, modes dense (causal and not), window and hash
** (strict and not; one bucket, where every key matches, and many, placed in
** runs of positions so that whole key tiles match no row and are skipped),
** fp16 and bf16, head dims 64 and 128 (and 256), with one split and with
** many; sfa_check_kv_cache on good and bad caches; and sfa_kv_append (and
** sfa_kv_append_hash, with the buckets) writing the new rows where
** sfa_decode reads them and nowhere else; sfa_decode_with_workspace with one
** workspace of the caller's across shapes.
**
** The reference of sequence b is sfa_reference_forward over its used
** positions (Tq = Tn new tokens, Tk = seqused[b]: the same bottom-right
** alignment; mode hash with q_idx the tokens' positions, k_idx the keys'
** and the buckets). Cache rows that no query may read (past seqused, pages of other
** sequences, unassigned pages) hold NaN, so a read of one shows up as NaN in
** the output (in mode hash also the rows of keys whose bucket no new token
** of their kv head has: they are not read); outputs are poisoned before
** every run. Without a driver or a device the suite prints "SKIP: <reason>"
** and exits 77.
*/
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sfa.h"
#include "runtime/driver.h"
#include "gpucase.h"

#define CU(call) TG_CU(call)

typedef struct dcase {
  int B, Hq, Hkv, Tn, D;
  sfa_dtype dt;
  sfa_mode mode;
  int causal, left, right; /* window: left/right (-1 unbounded) */
  int page_size;           /* 0: contiguous */
  int capacity;            /* positions per sequence (paged: a multiple of page_size) */
  int full;                /* seqused NULL: every sequence uses the capacity */
  int gather;              /* > 0: kv_indices of this many positions per (b, kv head) */
  uint64_t seed;
  int strict;              /* hash: params.strict_causal */
  int buckets;             /* hash: distinct bucket ids (1: every key matches) */
  int run;                 /* hash: > 0: one bucket per run of this many positions */
} dcase;

static void describe(const dcase *c, char *buf, size_t n) {
  snprintf(buf, n,
           "B=%d Hq=%d Hkv=%d Tn=%d D=%d %s mode=%s causal=%d window=(%d,%d) page=%d cap=%d "
           "full=%d gather=%d strict=%d buckets=%d run=%d seed=%llx",
           c->B, c->Hq, c->Hkv, c->Tn, c->D, sfa_dtype_name(c->dt), sfa_mode_name(c->mode),
           c->causal, c->left, c->right, c->page_size, c->capacity, c->full, c->gather, c->strict,
           c->buckets, c->run, (unsigned long long)c->seed);
}

static uint16_t nan_half(void) { return 0x7fff; }

/* Bucket id i as an int32 spread over the whole range (negative ones too):
** sfa_decode compares buckets for equality only. */
static int32_t bucket_value(uint32_t i) { return (int32_t)(i * 2654435761u); }

/* The float64 attention of one row (query qr at position pos, bucket qh in
** mode hash) over the listed positions of one kv head (kr, vr: [cap, D],
** khr: [cap] buckets) that it may see; o and *lse as sfa_decode defines
** them. Used for the gather cases, whose key set the fixed-length reference
** cannot express. */
static void naive_row(const dcase *c, const float *qr, const float *kr, const float *vr,
                      const int32_t *khr, int32_t qh, const int32_t *list, int K, int used,
                      int pos, float *o, float *lse) {
  const int D = c->D, wl = c->left, wr = c->causal ? 0 : c->right;
  const double scale = 1.0 / sqrt((double)D);
  double m = -INFINITY, l = 0, *acc = calloc((size_t)D, sizeof *acc);
  for (int i = 0; i < K; i++) {
    const int j = list[i];
    if (j < 0 || j >= used) continue;
    int ok = c->mode == SFA_MODE_DENSE  ? (!c->causal || j <= pos)
             : c->mode == SFA_MODE_HASH ? khr[j] == qh && (c->strict ? j < pos : j <= pos)
                                        : ((wr < 0 || j <= pos + wr) && (wl < 0 || j >= pos - wl));
    if (!ok) continue;
    double sdot = 0;
    for (int d = 0; d < D; d++) sdot += (double)qr[d] * kr[(size_t)j * D + d];
    sdot *= scale;
    const double mn = sdot > m ? sdot : m, a = exp(m - mn), w = exp(sdot - mn);
    for (int d = 0; d < D; d++) acc[d] = acc[d] * a + w * vr[(size_t)j * D + d];
    l = l * a + w, m = mn;
  }
  for (int d = 0; d < D; d++) o[d] = l > 0 ? (float)(acc[d] / l) : 0.f;
  *lse = l > 0 ? (float)(m + log(l)) : -INFINITY;
  free(acc);
}

/* Set (caller_workspace_serves_every_shape): run_case decodes in this
** workspace of the caller's (sfa_decode_with_workspace) instead of the pool's,
** and counts the cases that needed one. */
static CUdeviceptr ws_dev;
static size_t ws_size;
static int ws_needed, ws_short; /* ws_short: first offer 16 bytes less than needed */

/* Runs one case; returns the number of failures (messages printed). */
static int run_case(const dcase *c) {
  char desc[256];
  describe(c, desc, sizeof desc);
  uint64_t rng = c->seed;
  const int B = c->B, Hq = c->Hq, Hkv = c->Hkv, Tn = c->Tn, D = c->D, cap = c->capacity;
  const int ps = c->page_size, max_pages = ps ? cap / ps : 0;
  const int num_pages = ps ? B * max_pages + 3 : 0; /* a few pages nobody owns */

  /* Lengths: the edges first, then random. */
  int *used = malloc((size_t)B * sizeof *used);
  for (int b = 0; b < B; b++) {
    const int edge[] = {0, 1, Tn > 1 ? Tn - 1 : 1, cap, Tn};
    if (c->full) used[b] = cap;
    else if (b < 5) used[b] = edge[b] > cap ? cap : edge[b];
    else used[b] = (int)(tu_rand_uniform(&rng) * (cap + 1));
  }

  /* q and the logical keys/values of each sequence, [cap] rows per head. */
  const size_t nq = (size_t)B * Hq * Tn * D, nkv = (size_t)B * Hkv * cap * D;
  float *q = malloc(nq * sizeof *q), *k = malloc(nkv * sizeof *k), *v = malloc(nkv * sizeof *v);
  for (size_t i = 0; i < nq; i++) q[i] = (float)tu_rand_normal(&rng);
  for (size_t i = 0; i < nkv; i++) k[i] = (float)tu_rand_normal(&rng), v[i] = (float)tu_rand_normal(&rng);
  uint16_t *hq = malloc(nq * 2);
  for (size_t i = 0; i < nq; i++) hq[i] = tg_to_half(c->dt, q[i]), q[i] = tg_from_half(c->dt, hq[i]);
  for (size_t i = 0; i < nkv; i++)
    k[i] = tg_from_half(c->dt, tg_to_half(c->dt, k[i])), v[i] = tg_from_half(c->dt, tg_to_half(c->dt, v[i]));

  /* hash: the buckets of the keys (logical [B, Hkv, cap]: one per key, or
     per run of positions) and of the new tokens (mostly a bucket of a key
     of the sequence, so that rows see something). */
  const int hash = c->mode == SFA_MODE_HASH, nb = c->buckets > 0 ? c->buckets : 1;
  int32_t *kh = hash ? malloc((size_t)B * Hkv * cap * sizeof *kh) : NULL;
  int32_t *qh = hash ? malloc((size_t)B * Hq * Tn * sizeof *qh) : NULL;
  for (size_t i = 0; hash && i < (size_t)B * Hkv * cap; i++) {
    const size_t j = i % (size_t)cap;
    kh[i] = c->run > 0 && j % (size_t)c->run ? kh[i - 1]
                                              : bucket_value((uint32_t)(tu_rand_u64(&rng) % (uint64_t)nb));
  }
  for (int b = 0; hash && b < B; b++)
    for (int h = 0; h < Hq; h++)
      for (int t = 0; t < Tn; t++) {
        const int j = used[b] ? (int)(tu_rand_u64(&rng) % (uint64_t)used[b]) : 0;
        qh[((size_t)b * Hq + h) * Tn + t] =
            used[b] && tu_rand_u64(&rng) % 4 ? kh[((size_t)b * Hkv + h / (Hq / Hkv)) * cap + j]
                                             : bucket_value((uint32_t)(tu_rand_u64(&rng) % (uint64_t)nb));
      }

  /* The cache's storage: rows no query may read hold NaN (and, in mode
     hash, the bucket of token 0 of head 0, which some row has). */
  size_t nstore = ps ? (size_t)num_pages * ps * Hkv * D : nkv;
  uint16_t *hk = malloc(nstore * 2), *hv = malloc(nstore * 2);
  for (size_t i = 0; i < nstore; i++) hk[i] = hv[i] = nan_half();
  const size_t nkh = nstore / (size_t)D; /* k_hash: the storage minus D */
  int32_t *hkh = hash ? malloc(nkh * sizeof *hkh) : NULL;
  for (size_t i = 0; hash && i < nkh; i++) hkh[i] = qh[0];
  int32_t *pt = ps ? malloc((size_t)B * max_pages * sizeof *pt) : NULL;
  if (ps) {
    /* pages 0 .. B * max_pages - 1 shuffled over the sequences */
    int *perm = malloc((size_t)num_pages * sizeof *perm);
    for (int i = 0; i < num_pages; i++) perm[i] = i;
    for (int i = num_pages - 1; i > 0; i--) {
      int j = (int)(tu_rand_u64(&rng) % (uint64_t)(i + 1)), t = perm[i];
      perm[i] = perm[j], perm[j] = t;
    }
    for (int b = 0; b < B; b++)
      for (int i = 0; i < max_pages; i++) {
        const int page = perm[b * max_pages + i];
        /* pages past the length: an out-of-range index, never to be read */
        pt[b * max_pages + i] = i * ps < used[b] ? page : (i % 2 ? -7 : num_pages + 100);
        if (i * ps >= used[b]) continue;
        for (int r = 0; r < ps && i * ps + r < used[b]; r++)
          for (int h = 0; h < Hkv; h++)
            for (int d = 0; d < D; d++) {
              const size_t src = (((size_t)b * Hkv + h) * cap + i * ps + r) * D + d;
              const size_t dst = (((size_t)page * ps + r) * Hkv + h) * D + d;
              hk[dst] = tg_to_half(c->dt, k[src]);
              hv[dst] = tg_to_half(c->dt, v[src]);
              if (hash && d == 0) hkh[dst / (size_t)D] = kh[src / (size_t)D];
            }
      }
    free(perm);
  } else {
    for (int b = 0; b < B; b++)
      for (int h = 0; h < Hkv; h++)
        for (int j = 0; j < used[b]; j++)
          for (int d = 0; d < D; d++) {
            const size_t i = (((size_t)b * Hkv + h) * cap + j) * D + d;
            hk[i] = tg_to_half(c->dt, k[i]);
            hv[i] = tg_to_half(c->dt, v[i]);
            if (hash && d == 0) hkh[i / (size_t)D] = kh[i / (size_t)D];
          }
  }

  /* hash: the K and V rows of a key whose bucket no new token of its kv head
     has are never read (the kernel matches the buckets first): NaN there
     shows up in the output if one is. */
  for (int b = 0; hash && b < B; b++)
    for (int h = 0; h < Hkv; h++)
      for (int j = 0; j < used[b]; j++) {
        const int32_t kb_ = kh[((size_t)b * Hkv + h) * cap + j];
        int seen = 0;
        for (int r = 0; r < Hq / Hkv * Tn && !seen; r++)
          seen = qh[((size_t)b * Hq + h * (Hq / Hkv)) * Tn + r] == kb_;
        if (seen) continue;
        const size_t at = ps ? (((size_t)pt[b * max_pages + j / ps] * ps + j % ps) * Hkv + h) * D
                             : (((size_t)b * Hkv + h) * cap + j) * D;
        for (int d = 0; d < D; d++) hk[at + d] = hv[at + d] = nan_half();
      }

  /* gather: each (b, kv head) lists G positions, distinct, in random order,
     some of them past the length and some -1 (both skipped) */
  const int G = c->gather;
  int32_t *hidx = G ? malloc((size_t)B * Hkv * G * sizeof *hidx) : NULL;
  int *perm = G ? malloc((size_t)cap * sizeof *perm) : NULL;
  for (int bh = 0; G && bh < B * Hkv; bh++) {
    for (int i = 0; i < cap; i++) perm[i] = i;
    for (int i = cap - 1; i > 0; i--) { /* Fisher-Yates */
      const int j = (int)(tu_rand_u64(&rng) % (uint64_t)(i + 1)), t = perm[i];
      perm[i] = perm[j], perm[j] = t;
    }
    int32_t *row = hidx + (size_t)bh * G;
    for (int i = 0; i < G; i++) row[i] = i < cap ? perm[i] : -1;
    if (G > 3) row[G / 2] = -1;
  }
  free(perm);

  CUdeviceptr dq = tg_upload(hq, nq * 2), dk = tg_upload(hk, nstore * 2), dv = tg_upload(hv, nstore * 2);
  CUdeviceptr didx = G ? tg_upload(hidx, (size_t)B * Hkv * G * 4) : 0;
  CUdeviceptr dkh = hash ? tg_upload(hkh, nkh * 4) : 0;
  CUdeviceptr dqh = hash ? tg_upload(qh, (size_t)B * Hq * Tn * 4) : 0;
  CUdeviceptr dpt = ps ? tg_upload(pt, (size_t)B * max_pages * 4) : 0;
  CUdeviceptr dused = tg_upload(used, (size_t)B * 4);
  CUdeviceptr dout, dlse;
  CU(tg_drv->cuMemAlloc(&dout, nq * 2));
  CU(tg_drv->cuMemAlloc(&dlse, (size_t)B * Hq * Tn * 4));
  CU(tg_drv->cuMemsetD8(dout, 0xff, nq * 2)); /* NaN */
  CU(tg_drv->cuMemsetD8(dlse, 0xff, (size_t)B * Hq * Tn * 4));

  sfa_tensor tq, tk, tv, tpt, tused, to, tl;
  const int64_t sq[4] = {B, Hq, Tn, D}, sl[3] = {B, Hq, Tn};
  sfa_tensor_init(&tq, (void *)(uintptr_t)dq, c->dt, 4, sq);
  sfa_tensor_init(&to, (void *)(uintptr_t)dout, c->dt, 4, sq);
  sfa_tensor_init(&tl, (void *)(uintptr_t)dlse, SFA_DTYPE_FP32, 3, sl);
  if (ps) {
    const int64_t sk[4] = {num_pages, ps, Hkv, D}, spt[2] = {B, max_pages};
    sfa_tensor_init(&tk, (void *)(uintptr_t)dk, c->dt, 4, sk);
    sfa_tensor_init(&tv, (void *)(uintptr_t)dv, c->dt, 4, sk);
    sfa_tensor_init(&tpt, (void *)(uintptr_t)dpt, SFA_DTYPE_INT32, 2, spt);
  } else {
    const int64_t sk[4] = {B, Hkv, cap, D};
    sfa_tensor_init(&tk, (void *)(uintptr_t)dk, c->dt, 4, sk);
    sfa_tensor_init(&tv, (void *)(uintptr_t)dv, c->dt, 4, sk);
  }
  const int64_t su[1] = {B};
  sfa_tensor_init(&tused, (void *)(uintptr_t)dused, SFA_DTYPE_INT32, 1, su);
  sfa_tensor tidx;
  const int64_t si[3] = {B, Hkv, G};
  if (G) sfa_tensor_init(&tidx, (void *)(uintptr_t)didx, SFA_DTYPE_INT32, 3, si);
  sfa_tensor tkh, tqh;
  if (hash) {
    const int64_t skhp[3] = {num_pages, ps, Hkv}, skhc[3] = {B, Hkv, cap}, sqh[3] = {B, Hq, Tn};
    sfa_tensor_init(&tkh, (void *)(uintptr_t)dkh, SFA_DTYPE_INT32, 3, ps ? skhp : skhc);
    sfa_tensor_init(&tqh, (void *)(uintptr_t)dqh, SFA_DTYPE_INT32, 3, sqh);
  }
  sfa_kv_cache cache = {.k = &tk, .v = &tv, .page_table = ps ? &tpt : NULL,
                        .seqused = c->full ? NULL : &tused, .kv_indices = G ? &tidx : NULL,
                        .k_hash = hash ? &tkh : NULL, .q_hash = hash ? &tqh : NULL};
  sfa_attention_params p;
  sfa_params_init(&p);
  p.mode = c->mode;
  p.causal = c->causal;
  p.strict_causal = c->strict;
  if (c->mode == SFA_MODE_WINDOW) p.window_left = c->left, p.window_right = c->right;

  int fails = 0;
  sfa_status st;
  if (ws_dev) {
    size_t need = 0;
    st = sfa_decode_workspace_size(tg_ctx, &p, &tq, &cache, &need);
    if (st == SFA_OK && need > ws_size) {
      printf("FAIL %s: needs %zu bytes of workspace, the test has %zu\n", desc, need, ws_size);
      fails++;
    }
    ws_needed += need > 0;
    if (st == SFA_OK && ws_short && need > 0) {
      const sfa_status sst = sfa_decode_with_workspace(tg_ctx, &p, &tq, &cache, &to, &tl,
                                                       (void *)(uintptr_t)ws_dev, need - 16, NULL);
      if (sst != SFA_ERR_INVALID_ARGUMENT || !strstr(sfa_last_error(tg_ctx), "this call needs")) {
        printf("FAIL %s: %zu bytes of workspace gave %d (%s)\n", desc, need - 16, (int)sst,
               sfa_last_error(tg_ctx));
        fails++;
      }
      /* a workspace over the output */
      const sfa_status ost = sfa_decode_with_workspace(tg_ctx, &p, &tq, &cache, &to, &tl,
                                                       (void *)(uintptr_t)dout, need, NULL);
      if (ost != SFA_ERR_INVALID_ARGUMENT || !strstr(sfa_last_error(tg_ctx), "workspace: its memory overlaps")) {
        printf("FAIL %s: a workspace over o gave %d (%s)\n", desc, (int)ost, sfa_last_error(tg_ctx));
        fails++;
      }
    }
    if (st == SFA_OK)
      st = sfa_decode_with_workspace(tg_ctx, &p, &tq, &cache, &to, &tl, (void *)(uintptr_t)ws_dev,
                                     ws_size, NULL);
  } else {
    st = sfa_decode(tg_ctx, &p, &tq, &cache, &to, &tl, NULL);
  }
  if (st != SFA_OK) {
    printf("FAIL %s: sfa_decode: %s\n", desc, sfa_last_error(tg_ctx));
    fails++;
  }
  if (!fails) {
    CU(tg_drv->cuCtxSynchronize());
    sfa_status chk = sfa_check_kv_cache(tg_ctx, &cache, Tn, NULL);
    int bad_used = 0;
    for (int b = 0; b < B; b++) bad_used |= !c->full && used[b] < Tn;
    if ((chk == SFA_OK) == bad_used) {
      printf("FAIL %s: sfa_check_kv_cache gave %d (%s), lengths below Tn: %d\n", desc, (int)chk,
             sfa_last_error(tg_ctx), bad_used);
      fails++;
    }
  }
  uint16_t *ho = malloc(nq * 2);
  float *hl = malloc((size_t)B * Hq * Tn * 4);
  CU(tg_drv->cuMemcpyDtoH(ho, dout, nq * 2));
  CU(tg_drv->cuMemcpyDtoH(hl, dlse, (size_t)B * Hq * Tn * 4));

  /* The reference, one sequence at a time. */
  const size_t qb = (size_t)Hq * Tn * D;
  float *ro = malloc(qb * sizeof *ro), *rl = malloc((size_t)Hq * Tn * sizeof *rl);
  float *kb = malloc((size_t)Hkv * cap * D * sizeof *kb), *vb = malloc((size_t)Hkv * cap * D * sizeof *vb);
  double worst = 0;
  for (int b = 0; b < B && !fails; b++) {
    const int T = used[b];
    if (G) {
      const int grp = Hq / Hkv;
      for (int h = 0; h < Hq; h++)
        for (int t = 0; t < Tn; t++) {
          const size_t kvoff = ((size_t)b * Hkv + h / grp) * cap * D;
          naive_row(c, q + (((size_t)b * Hq + h) * Tn + t) * D, k + kvoff, v + kvoff,
                    hash ? kh + kvoff / (size_t)D : NULL,
                    hash ? qh[((size_t)b * Hq + h) * Tn + t] : 0,
                    hidx + ((size_t)b * Hkv + h / grp) * G, G, T, T - Tn + t,
                    ro + ((size_t)h * Tn + t) * D, rl + (size_t)h * Tn + t);
        }
    } else if (T == 0) {
      for (size_t i = 0; i < qb; i++) ro[i] = 0.f;
      for (int i = 0; i < Hq * Tn; i++) rl[i] = -INFINITY;
    } else {
      for (int h = 0; h < Hkv; h++)
        for (int j = 0; j < T; j++)
          for (int d = 0; d < D; d++) {
            kb[((size_t)h * T + j) * D + d] = k[(((size_t)b * Hkv + h) * cap + j) * D + d];
            vb[((size_t)h * T + j) * D + d] = v[(((size_t)b * Hkv + h) * cap + j) * D + d];
          }
      /* hash: positions as qk_drop's indices (the tokens' may be negative
         where T < Tn: they see nothing), the buckets of this sequence */
      sfa_host_extras ex;
      memset(&ex, 0, sizeof ex);
      int32_t *qi = hash ? malloc((size_t)Hq * Tn * 4) : NULL, *ki = hash ? malloc((size_t)Hkv * T * 4) : NULL;
      int32_t *khs = hash ? malloc((size_t)Hkv * T * 4) : NULL;
      for (int i = 0; hash && i < Hq * Tn; i++) qi[i] = T - Tn + i % Tn;
      for (int h = 0; hash && h < Hkv; h++)
        for (int j = 0; j < T; j++) {
          ki[(size_t)h * T + j] = j;
          khs[(size_t)h * T + j] = kh[((size_t)b * Hkv + h) * cap + j];
        }
      ex.q_idx = qi, ex.k_idx = ki, ex.k_hash = khs;
      ex.q_hash = hash ? qh + (size_t)b * Hq * Tn : NULL;
      char err[256];
      const sfa_status rs = sfa_reference_forward(&p, 1, Hq, Hkv, Tn, T, D, q + (size_t)b * qb, kb, vb,
                                                  hash ? &ex : NULL, ro, rl, err, sizeof err);
      free(qi), free(ki), free(khs);
      if (rs != SFA_OK) {
        printf("FAIL %s: reference: %s\n", desc, err);
        fails++;
        break;
      }
    }
    long nan = 0;
    const double e = tg_rel_err(c->dt, ho + (size_t)b * qb, ro, qb, &nan);
    if (e > worst) worst = e;
    if (nan || !(e <= tg_tol_fwd(c->dt))) {
      printf("FAIL %s: sequence %d (used %d): o relative error %.3g (bound %.3g), %ld NaN\n",
             desc, b, T, e, tg_tol_fwd(c->dt), nan);
      fails++;
    }
    for (int i = 0; i < Hq * Tn; i++) {
      const float g = hl[(size_t)b * Hq * Tn + i], w = rl[i];
      const int ok = isinf(w) ? (isinf(g) && g < 0) : fabsf(g - w) <= TG_LSE_TOL;
      if (!ok) {
        printf("FAIL %s: sequence %d (used %d): lse[%d] = %g, reference %g\n", desc, b, T, i,
               (double)g, (double)w);
        fails++;
        break;
      }
    }
  }
  if (!fails) printf("ok   %s: worst o error %.3g\n", desc, worst);

  free(used), free(q), free(k), free(v), free(hq), free(hk), free(hv), free(pt), free(hidx);
  free(kh), free(qh), free(hkh);
  if (didx) tg_drv->cuMemFree(didx);
  if (dkh) tg_drv->cuMemFree(dkh), tg_drv->cuMemFree(dqh);
  free(ho), free(hl), free(ro), free(rl), free(kb), free(vb);
  tg_drv->cuMemFree(dq), tg_drv->cuMemFree(dk), tg_drv->cuMemFree(dv);
  if (dpt) tg_drv->cuMemFree(dpt);
  tg_drv->cuMemFree(dused), tg_drv->cuMemFree(dout), tg_drv->cuMemFree(dlse);
  return fails;
}

/* ------------------------------------------------------------ cases */

static dcase base(int page_size, int capacity) {
  dcase c = {.B = 6, .Hq = 8, .Hkv = 2, .Tn = 1, .D = 128, .dt = SFA_DTYPE_BF16,
             .mode = SFA_MODE_DENSE, .causal = 1, .left = -1, .right = -1,
             .page_size = page_size, .capacity = capacity, .seed = tg_seed};
  return c;
}

START_TEST(dense_contiguous_and_paged_lengths) {
  int fails = 0;
  const int pages[] = {0, 16, 48, 256};
  for (int i = 0; i < 4; i++) {
    dcase c = base(pages[i], pages[i] == 256 ? 1024 : 768);
    c.seed += (uint64_t)i;
    fails += run_case(&c);
    c.causal = 0, c.dt = SFA_DTYPE_FP16, c.D = 64, c.seed += 100;
    fails += run_case(&c);
  }
  ck_assert_int_eq(fails, 0);
}
END_TEST

START_TEST(new_tokens_and_gqa_groups) {
  /* Tn x group from one row to several 16-row tiles (with a partial last one) */
  const int shapes[][3] = {{1, 1, 1}, {4, 8, 2}, {16, 4, 4}, {3, 12, 2}, {16, 16, 2}, {2, 32, 1}};
  int fails = 0;
  for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
    dcase c = base(i % 2 ? 16 : 0, 512);
    c.Tn = shapes[i][0], c.Hq = shapes[i][1], c.Hkv = shapes[i][2];
    c.seed += 10 + i;
    fails += run_case(&c);
  }
  ck_assert_int_eq(fails, 0);
}
END_TEST

START_TEST(window_modes) {
  const int w[][3] = {{128, -1, 1}, {64, 32, 0}, {-1, 0, 0}, {300, 5, 0}, {0, -1, 1}};
  int fails = 0;
  for (size_t i = 0; i < sizeof w / sizeof w[0]; i++) {
    dcase c = base(i % 2 ? 48 : 0, 960);
    c.mode = SFA_MODE_WINDOW, c.left = w[i][0], c.right = w[i][1], c.causal = w[i][2];
    c.Tn = 1 + (int)(i * 3 % 8);
    c.dt = i % 2 ? SFA_DTYPE_FP16 : SFA_DTYPE_BF16;
    c.seed += 20 + i;
    fails += run_case(&c);
  }
  ck_assert_int_eq(fails, 0);
}
END_TEST

START_TEST(splits_one_and_many) {
  int fails = 0;
  /* one sequence, one kv head: as many splits as the GPU asks for */
  dcase c = base(256, 8192);
  c.B = 1, c.Hq = 4, c.Hkv = 1, c.full = 1, c.seed += 30;
  fails += run_case(&c);
  c.full = 0, c.B = 5, c.page_size = 0, c.seed += 1;
  fails += run_case(&c);
  /* many CTAs: one split each */
  dcase m = base(16, 256);
  m.B = 48, m.Hq = 32, m.Hkv = 8, m.Tn = 2, m.seed += 40;
  fails += run_case(&m);
  /* head dims at the ends */
  dcase d = base(16, 320);
  d.D = 256, d.seed += 50;
  fails += run_case(&d);
  d.D = 32, d.dt = SFA_DTYPE_FP16, d.seed += 1;
  fails += run_case(&d);
  ck_assert_int_eq(fails, 0);
}
END_TEST

/* sfa_decode_with_workspace: one workspace of the caller's, zeroed once,
** serves cases of every shape in turn (many splits and one, contiguous and
** paged, GQA tiles, hash, gather; a shape with fewer row tiles after one
** with more), each against the reference, and its counters are zero after
** them all; a workspace below the size query's answer, or over the output, is
** refused. */
START_TEST(caller_workspace_serves_every_shape) {
  ws_size = (size_t)64 << 20;
  CU(tg_drv->cuMemAlloc(&ws_dev, ws_size));
  CU(tg_drv->cuMemsetD8(ws_dev, 0, ws_size));
  int fails = 0;
  dcase one = base(256, 8192); /* B 1, one kv head: the most splits */
  one.B = 1, one.Hq = 4, one.Hkv = 1, one.full = 1, one.seed += 130;
  dcase many = base(0, 4096); /* 8 x 8 kv heads: a few splits */
  many.B = 8, many.Hq = 32, many.Hkv = 8, many.full = 1, many.seed += 131;
  dcase wide = base(16, 256); /* one split each */
  wide.B = 48, wide.Hq = 32, wide.Hkv = 8, wide.Tn = 2, wide.seed += 132;
  dcase gqa = base(48, 960); /* uneven lengths, two row tiles per kv head */
  gqa.Hq = 16, gqa.Hkv = 1, gqa.Tn = 3, gqa.seed += 133;
  dcase hash = base(16, 1024);
  hash.mode = SFA_MODE_HASH, hash.causal = 0, hash.buckets = 4, hash.run = 64, hash.seed += 134;
  dcase gather = base(256, 8192); /* many splits of a long list */
  gather.B = 1, gather.Hq = 4, gather.Hkv = 1, gather.gather = 3000, gather.full = 1;
  gather.seed += 135;
  const dcase *order[] = {&many, &one, &gqa, &wide, &hash, &one, &gather, &many, &gqa};
  for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
    ws_short = i == 1;
    fails += run_case(order[i]);
  }
  ws_short = 0;
  ck_assert_int_eq(fails, 0);
  ck_assert_msg(ws_needed >= 6, "only %d cases split their keys", ws_needed);
  uint32_t counters[1024];
  CU(tg_drv->cuCtxSynchronize());
  CU(tg_drv->cuMemcpyDtoH(counters, ws_dev, sizeof counters));
  for (int i = 0; i < 1024; i++) ck_assert_msg(counters[i] == 0, "counter %d is %u", i, counters[i]);
  CU(tg_drv->cuMemFree(ws_dev));
  ws_dev = 0, ws_size = 0;
}
END_TEST

/* Mode hash: one bucket (every key matches: causal dense decoding), many
** buckets per key, and buckets in runs of positions (whole key tiles that no
** row of a tile matches are skipped); contiguous and paged (16, 256),
** strict and not, lengths 0, 1, Tn - 1, the capacity and random, GQA groups
** of one or several row tiles, splits one and many, and with kv_indices. */
START_TEST(hash_buckets) {
  int fails = 0;
  const struct { int page, cap, Tn, Hq, Hkv, buckets, run, strict, gather; } h[] = {
    {0, 768, 1, 8, 2, 1, 0, 0, 0},      /* every key matches */
    {16, 768, 2, 8, 2, 1, 0, 1, 0},     /* every key matches, strict */
    {256, 1024, 1, 8, 2, 500, 100, 0, 0}, /* runs: most tiles match no row */
    {0, 640, 4, 8, 2, 64, 0, 1, 0},     /* a bucket per key; 16 rows per tile */
    {16, 512, 3, 12, 2, 8, 40, 0, 0},   /* two row tiles per kv head */
    {16, 640, 2, 4, 1, 4, 0, 1, 200},   /* kv_indices */
    {0, 480, 16, 2, 2, 3, 16, 0, 0},    /* 16 new tokens of one head per tile */
  };
  for (size_t i = 0; i < sizeof h / sizeof h[0]; i++) {
    dcase c = base(h[i].page, h[i].cap);
    c.mode = SFA_MODE_HASH, c.causal = 0;
    c.Tn = h[i].Tn, c.Hq = h[i].Hq, c.Hkv = h[i].Hkv;
    c.buckets = h[i].buckets, c.run = h[i].run, c.strict = h[i].strict, c.gather = h[i].gather;
    c.seed += 80 + i;
    if (i % 3 == 1) c.dt = SFA_DTYPE_FP16, c.D = 64;
    fails += run_case(&c);
  }
  /* one sequence: many splits, most of whose tiles are skipped */
  dcase c = base(256, 8192);
  c.mode = SFA_MODE_HASH, c.B = 1, c.Hq = 4, c.Hkv = 1, c.full = 1;
  c.buckets = 1000, c.run = 64, c.seed += 90;
  fails += run_case(&c);
  c.strict = 1, c.page_size = 0, c.full = 0, c.B = 5, c.Tn = 3, c.seed += 1;
  fails += run_case(&c);
  /* and a long index list */
  c.gather = 3000, c.B = 1, c.full = 1, c.page_size = 256, c.Tn = 1, c.seed += 1;
  fails += run_case(&c);
  ck_assert_int_eq(fails, 0);
}
END_TEST

START_TEST(check_kv_cache_reports_bad_pages) {
  /* a page index out of range inside the used positions is named */
  const int B = 2, ps = 16, P = 4, Hkv = 1, D = 64, pages = 8;
  int32_t pt[8] = {0, 1, 2, 3, 4, 5, 9, 7}, used[2] = {64, 40};
  CUdeviceptr dk, dv, dpt = tg_upload(pt, sizeof pt), dused = tg_upload(used, sizeof used);
  CU(tg_drv->cuMemAlloc(&dk, (size_t)pages * ps * Hkv * D * 2));
  CU(tg_drv->cuMemAlloc(&dv, (size_t)pages * ps * Hkv * D * 2));
  const int64_t sk[4] = {pages, ps, Hkv, D}, spt[2] = {B, P}, su[1] = {B};
  sfa_tensor tk, tv, tpt, tused;
  sfa_tensor_init(&tk, (void *)(uintptr_t)dk, SFA_DTYPE_BF16, 4, sk);
  sfa_tensor_init(&tv, (void *)(uintptr_t)dv, SFA_DTYPE_BF16, 4, sk);
  sfa_tensor_init(&tpt, (void *)(uintptr_t)dpt, SFA_DTYPE_INT32, 2, spt);
  sfa_tensor_init(&tused, (void *)(uintptr_t)dused, SFA_DTYPE_INT32, 1, su);
  sfa_kv_cache cache = {.k = &tk, .v = &tv, .page_table = &tpt, .seqused = &tused};
  ck_assert_int_eq(sfa_check_kv_cache(tg_ctx, &cache, 1, NULL), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(sfa_last_error(tg_ctx), "cache->page_table[1, 2] = 9"), "%s",
                sfa_last_error(tg_ctx));
  /* the bad page past the length is not looked at */
  used[1] = 32;
  tg_drv->cuMemFree(dused);
  dused = tg_upload(used, sizeof used);
  tused.data = (void *)(uintptr_t)dused;
  ck_assert_int_eq(sfa_check_kv_cache(tg_ctx, &cache, 1, NULL), SFA_OK);
  used[0] = 65;
  tg_drv->cuMemFree(dused);
  dused = tg_upload(used, sizeof used);
  tused.data = (void *)(uintptr_t)dused;
  ck_assert_int_eq(sfa_check_kv_cache(tg_ctx, &cache, 1, NULL), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(sfa_last_error(tg_ctx), "cache->seqused[0] = 65"), "%s",
                sfa_last_error(tg_ctx));
  tg_drv->cuMemFree(dk), tg_drv->cuMemFree(dv), tg_drv->cuMemFree(dpt), tg_drv->cuMemFree(dused);
}
END_TEST

/* sfa_kv_append writes new token t of sequence b at position seqused[b] - Tn
** + t, contiguous or paged, and nothing else: every other byte of the cache
** keeps its poison, and a row whose page index is out of range is skipped.
** sfa_kv_append_hash does the same and writes the new keys' buckets into
** k_hash at the same positions, and nowhere else. */
START_TEST(kv_append_writes_the_new_rows_only) {
  const int B = 3, Hkv = 2, Tn = 4, D = 64;
  const int pss[] = {0, 16};
  for (int v = 0; v < 4; v++) {
    const int ps = pss[v % 2], hash = v >= 2, P = 4, cap = ps ? P * ps : 40, pages = ps ? B * P : 0;
    int32_t used[3] = {Tn, 37, 2}; /* the last: two of its rows fall before position 0 */
    int32_t pt[12];
    for (int i = 0; i < B * P; i++) pt[i] = (i * 5) % (B * P);
    pt[1 * P + 2] = 99; /* sequence 1, positions 32..47: out of range, skipped */
    const size_t nstore = ps ? (size_t)pages * ps * Hkv * D : (size_t)B * Hkv * cap * D;
    const size_t nnew = (size_t)B * Hkv * Tn * D;
    uint16_t *hk = malloc(nstore * 2), *kn = malloc(nnew * 2), *vn = malloc(nnew * 2);
    for (size_t i = 0; i < nstore; i++) hk[i] = 0x7fff;
    for (size_t i = 0; i < nnew; i++) kn[i] = (uint16_t)(i * 7 + 1), vn[i] = (uint16_t)(i * 3 + 2);
    CUdeviceptr dk = tg_upload(hk, nstore * 2), dv = tg_upload(hk, nstore * 2);
    CUdeviceptr dkn = tg_upload(kn, nnew * 2), dvn = tg_upload(vn, nnew * 2);
    CUdeviceptr dpt = tg_upload(pt, sizeof pt), dused = tg_upload(used, sizeof used);
    sfa_tensor tk, tv, tkn, tvn, tpt, tused;
    const int64_t skp[4] = {pages, ps, Hkv, D}, skc[4] = {B, Hkv, cap, D};
    const int64_t sn[4] = {B, Hkv, Tn, D}, spt[2] = {B, P}, su[1] = {B};
    sfa_tensor_init(&tk, (void *)(uintptr_t)dk, SFA_DTYPE_BF16, 4, ps ? skp : skc);
    sfa_tensor_init(&tv, (void *)(uintptr_t)dv, SFA_DTYPE_BF16, 4, ps ? skp : skc);
    sfa_tensor_init(&tkn, (void *)(uintptr_t)dkn, SFA_DTYPE_BF16, 4, sn);
    sfa_tensor_init(&tvn, (void *)(uintptr_t)dvn, SFA_DTYPE_BF16, 4, sn);
    sfa_tensor_init(&tpt, (void *)(uintptr_t)dpt, SFA_DTYPE_INT32, 2, spt);
    sfa_tensor_init(&tused, (void *)(uintptr_t)dused, SFA_DTYPE_INT32, 1, su);
    /* the buckets: k_hash is the storage minus D, poisoned with -7 */
    const size_t nkh = nstore / (size_t)D, nkhn = nnew / (size_t)D;
    int32_t *hkh = malloc(nkh * 4), *khn = malloc(nkhn * 4), *gkh = malloc(nkh * 4);
    for (size_t i = 0; i < nkh; i++) hkh[i] = -7;
    for (size_t i = 0; i < nkhn; i++) khn[i] = 1000 + (int32_t)i;
    CUdeviceptr dkh = tg_upload(hkh, nkh * 4), dkhn = tg_upload(khn, nkhn * 4);
    sfa_tensor tkh, tkhn;
    const int64_t skhp[3] = {pages, ps, Hkv}, skhc[3] = {B, Hkv, cap}, skhn[3] = {B, Hkv, Tn};
    sfa_tensor_init(&tkh, (void *)(uintptr_t)dkh, SFA_DTYPE_INT32, 3, ps ? skhp : skhc);
    sfa_tensor_init(&tkhn, (void *)(uintptr_t)dkhn, SFA_DTYPE_INT32, 3, skhn);
    sfa_kv_cache cache = {.k = &tk, .v = &tv, .page_table = ps ? &tpt : NULL, .seqused = &tused,
                          .k_hash = &tkh};
    /* sfa_kv_append leaves k_hash alone even where the cache names it */
    const sfa_status st = hash ? sfa_kv_append_hash(tg_ctx, &cache, &tkn, &tvn, &tkhn, NULL)
                               : sfa_kv_append(tg_ctx, &cache, &tkn, &tvn, NULL);
    ck_assert_msg(st == SFA_OK, "%s", sfa_last_error(tg_ctx));
    uint16_t *gk = malloc(nstore * 2), *gv = malloc(nstore * 2);
    CU(tg_drv->cuMemcpyDtoH(gk, dk, nstore * 2));
    CU(tg_drv->cuMemcpyDtoH(gv, dv, nstore * 2));
    CU(tg_drv->cuMemcpyDtoH(gkh, dkh, nkh * 4));
    /* what should be there */
    for (size_t i = 0; i < nstore; i++) hk[i] = 0x7fff;
    uint16_t *hv = malloc(nstore * 2);
    memcpy(hv, hk, nstore * 2);
    for (int b = 0; b < B; b++)
      for (int h = 0; h < Hkv; h++)
        for (int t = 0; t < Tn; t++) {
          const int p = used[b] - Tn + t;
          if (p < 0) continue;
          size_t at;
          if (ps) {
            const int page = pt[b * P + p / ps];
            if (page < 0 || page >= pages) continue;
            at = (((size_t)page * ps + p % ps) * Hkv + h) * D;
          } else {
            at = (((size_t)b * Hkv + h) * cap + p) * D;
          }
          const size_t src = (((size_t)b * Hkv + h) * Tn + t) * D;
          memcpy(hk + at, kn + src, (size_t)D * 2);
          memcpy(hv + at, vn + src, (size_t)D * 2);
          if (hash) hkh[at / (size_t)D] = khn[src / (size_t)D];
        }
    ck_assert_msg(memcmp(gk, hk, nstore * 2) == 0, "page size %d: k differs", ps);
    ck_assert_msg(memcmp(gv, hv, nstore * 2) == 0, "page size %d: v differs", ps);
    ck_assert_msg(memcmp(gkh, hkh, nkh * 4) == 0, "page size %d, hash %d: k_hash differs", ps, hash);
    free(hk), free(hv), free(kn), free(vn), free(gk), free(gv), free(hkh), free(khn), free(gkh);
    tg_drv->cuMemFree(dkh), tg_drv->cuMemFree(dkhn);
    tg_drv->cuMemFree(dk), tg_drv->cuMemFree(dv), tg_drv->cuMemFree(dkn);
    tg_drv->cuMemFree(dvn), tg_drv->cuMemFree(dpt), tg_drv->cuMemFree(dused);
  }
}
END_TEST

START_TEST(gather_index_lists) {
  int fails = 0;
  const int Gs[] = {1, 40, 200, 700};
  for (int i = 0; i < 4; i++) {
    dcase c = base(i % 2 ? 16 : 0, 640);
    c.gather = Gs[i], c.seed += 60 + (uint64_t)i;
    c.causal = i != 1;
    if (i == 3) c.mode = SFA_MODE_WINDOW, c.left = 150, c.right = -1, c.Tn = 3;
    fails += run_case(&c);
  }
  /* one sequence: many splits of a long list */
  dcase c = base(256, 8192);
  c.B = 1, c.Hq = 4, c.Hkv = 1, c.gather = 3000, c.full = 1, c.seed += 70;
  fails += run_case(&c);
  ck_assert_int_eq(fails, 0);
}
END_TEST

START_TEST(random_cases) {
  int n = 24, fails = 0;
  const char *e = getenv("SFA_RANDOM_CASES");
  if (e && atoi(e) > 0) n = atoi(e);
  uint64_t rng = tg_seed ^ 0xdec0de;
  for (int i = 0; i < n; i++) {
    const int pss[] = {0, 16, 32, 64, 256};
    const int ps = pss[tu_rand_u64(&rng) % 5];
    const int Hkv = 1 + (int)(tu_rand_u64(&rng) % 4), grp = 1 << (tu_rand_u64(&rng) % 4);
    const int dims[] = {64, 128, 96};
    dcase c = {.B = 1 + (int)(tu_rand_u64(&rng) % 9), .Hq = Hkv * grp, .Hkv = Hkv,
               .Tn = 1 + (int)(tu_rand_u64(&rng) % 16), .D = dims[tu_rand_u64(&rng) % 3],
               .dt = tu_rand_u64(&rng) % 2 ? SFA_DTYPE_BF16 : SFA_DTYPE_FP16,
               .mode = tu_rand_u64(&rng) % 3 ? SFA_MODE_DENSE : SFA_MODE_WINDOW,
               .causal = (int)(tu_rand_u64(&rng) % 2), .left = -1, .right = -1,
               .page_size = ps, .seed = tu_rand_u64(&rng)};
    const int units = 1 + (int)(tu_rand_u64(&rng) % 40);
    c.capacity = ps ? units * ps : units * 37;
    if (c.mode == SFA_MODE_WINDOW) {
      c.left = (int)(tu_rand_u64(&rng) % 300) - 1;
      c.right = (int)(tu_rand_u64(&rng) % 40) - 1;
    }
    fails += run_case(&c);
  }
  ck_assert_int_eq(fails, 0);
}
END_TEST

int main(void) {
  int rc = tg_open("gpu_decode", 0x5FADEC0);
  if (rc != 0) return rc;
  Suite *s = suite_create("gpu_decode");
  TCase *t = tu_untimed_case(s, "decode", dense_contiguous_and_paged_lengths);
  tcase_add_test(t, new_tokens_and_gqa_groups);
  tcase_add_test(t, window_modes);
  tcase_add_test(t, splits_one_and_many);
  tcase_add_test(t, gather_index_lists);
  tcase_add_test(t, hash_buckets);
  tcase_add_test(t, check_kv_cache_reports_bad_pages);
  tcase_add_test(t, kv_append_writes_the_new_rows_only);
  tcase_add_test(t, random_cases);
  /* its own case, for the sanitizers (CK_RUN_CASE=workspace) */
  tu_untimed_case(s, "workspace", caller_workspace_serves_every_shape);
  rc = tu_run_suite(s);
  tg_close();
  return rc;
}
