/*
** test_reference.c -- properties of the float64 CPU reference
** (sfa_reference_forward), which defines correctness for every kernel:
** agreement with an independently written naive softmax, uniform V rows,
** single-key and empty rows, invariance to a per-row score shift, GQA head
** mapping, bottom-right causal alignment for Tq != Tk, the qk_drop and hash
** rules on hand-built cases, window mode (the rule on hand-built cases, bias
** and mask broadcast over heads and rows, all-masked rows, agreement with the
** naive version on random windows, biases and masks), and argument errors.
*/
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sfa.h"
#include "testutil.h"

static float *randn(size_t n, uint64_t seed, double amp) {
  float *x = malloc(n * sizeof *x);
  ck_assert_ptr_nonnull(x);
  uint64_t s = seed;
  for (size_t i = 0; i < n; i++) x[i] = (float)(amp * tu_rand_normal(&s));
  return x;
}

static sfa_attention_params dense(int causal) {
  sfa_attention_params p;
  sfa_params_init(&p);
  p.causal = causal;
  return p;
}

static void ref_ex(const sfa_attention_params *p, int B, int Hq, int Hkv, int Tq, int Tk, int D,
                   const float *q, const float *k, const float *v, const sfa_host_extras *ex,
                   float *o, float *lse) {
  char err[256] = "";
  sfa_status st = sfa_reference_forward(p, B, Hq, Hkv, Tq, Tk, D, q, k, v, ex, o, lse, err,
                                        sizeof err);
  ck_assert_msg(st == SFA_OK, "reference failed: %s", err);
}

/* The reference with the index arrays of qk_drop and hash (NULL for none). */
static void ref_ok(const sfa_attention_params *p, int B, int Hq, int Hkv, int Tq, int Tk, int D,
                   const float *q, const float *k, const float *v, const int32_t *qi,
                   const int32_t *ki, const int32_t *qh, const int32_t *kh, float *o,
                   float *lse) {
  sfa_host_extras ex = {.q_idx = qi, .k_idx = ki, .q_hash = qh, .k_hash = kh};
  ref_ex(p, B, Hq, Hkv, Tq, Tk, D, q, k, v, qi || ki || qh || kh ? &ex : NULL, o, lse);
}

/* An independent naive version: weights exp(s) without max subtraction,
** normalised in a second pass, all in long double, the mask from a callback. */
typedef int (*allow_fn)(int b, int h, int i, int j, void *user);
typedef double (*bias_fn)(int b, int h, int i, int j, void *user); /* added to the score */

static void naive(int B, int Hq, int Hkv, int Tq, int Tk, int D, double scale, const float *q,
                  const float *k, const float *v, allow_fn allow, bias_fn bias, void *user,
                  double *o, double *lse) {
  for (int b = 0; b < B; b++)
    for (int h = 0; h < Hq; h++)
      for (int i = 0; i < Tq; i++) {
        const float *qr = q + (((size_t)b * Hq + h) * Tq + i) * D;
        int hk = h / (Hq / Hkv);
        long double total = 0;
        for (int j = 0; j < Tk; j++) {
          if (!allow(b, h, i, j, user)) continue;
          const float *kr = k + (((size_t)b * Hkv + hk) * Tk + j) * D;
          long double dot = 0;
          for (int x = 0; x < D; x++) dot += (long double)qr[x] * kr[x];
          total += expl(dot * scale + (bias ? bias(b, h, i, j, user) : 0));
        }
        double *orow = o + (((size_t)b * Hq + h) * Tq + i) * D;
        for (int x = 0; x < D; x++) {
          long double acc = 0;
          for (int j = 0; j < Tk; j++) {
            if (!allow(b, h, i, j, user)) continue;
            const float *kr = k + (((size_t)b * Hkv + hk) * Tk + j) * D;
            const float *vr = v + (((size_t)b * Hkv + hk) * Tk + j) * D;
            long double dot = 0;
            for (int y = 0; y < D; y++) dot += (long double)qr[y] * kr[y];
            acc += expl(dot * scale + (bias ? bias(b, h, i, j, user) : 0)) / total * vr[x];
          }
          orow[x] = total > 0 ? (double)acc : 0.0;
        }
        lse[((size_t)b * Hq + h) * Tq + i] = total > 0 ? (double)logl(total) : -INFINITY;
      }
}

typedef struct { int Tq, Tk, causal; } dense_mask;
static int dense_allow(int b, int h, int i, int j, void *user) {
  const dense_mask *m = user;
  (void)b, (void)h;
  return !m->causal || j <= i + m->Tk - m->Tq;
}

START_TEST(matches_naive_softmax) {
  /* Random shapes including GQA/MQA, Tq < Tk, Tq > Tk, causal on/off. */
  const int cases[][7] = {
    /* B Hq Hkv Tq Tk D causal */
    {1, 1, 1, 7, 7, 16, 0},  {2, 4, 2, 9, 13, 8, 1}, {1, 3, 1, 13, 5, 12, 1},
    {2, 2, 2, 1, 17, 32, 1}, {1, 4, 4, 17, 1, 8, 0}, {1, 6, 3, 11, 11, 24, 1},
  };
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    const int *a = cases[c];
    int B = a[0], Hq = a[1], Hkv = a[2], Tq = a[3], Tk = a[4], D = a[5];
    size_t nq = (size_t)B * Hq * Tq * D, nk = (size_t)B * Hkv * Tk * D;
    float *q = randn(nq, 11 + c, 0.5), *k = randn(nk, 23 + c, 0.5), *v = randn(nk, 37 + c, 1);
    float *o = malloc(nq * sizeof *o), *lse = malloc((size_t)B * Hq * Tq * sizeof *lse);
    double *no = malloc(nq * sizeof *no), *nl = malloc((size_t)B * Hq * Tq * sizeof *nl);
    sfa_attention_params p = dense(a[6]);
    if (c == 2) p.scale = 0.3f;
    ref_ok(&p, B, Hq, Hkv, Tq, Tk, D, q, k, v, NULL, NULL, NULL, NULL, o, lse);
    dense_mask m = {Tq, Tk, a[6]};
    naive(B, Hq, Hkv, Tq, Tk, D, p.scale > 0 ? p.scale : 1 / sqrt(D), q, k, v, dense_allow,
          NULL, &m, no, nl);
    for (size_t i = 0; i < nq; i++)
      ck_assert_msg(fabs(o[i] - no[i]) <= 1e-6 + 1e-6 * fabs(no[i]),
                    "case %zu: o[%zu] = %.9g, naive %.9g", c, i, o[i], no[i]);
    for (size_t i = 0; i < (size_t)B * Hq * Tq; i++) {
      if (isinf(nl[i])) {
        ck_assert_msg(isinf(lse[i]) && lse[i] < 0, "case %zu: lse[%zu] = %g", c, i, lse[i]);
        for (int x = 0; x < D; x++) ck_assert(o[i * D + x] == 0.0f);
      } else {
        ck_assert_msg(fabs(lse[i] - nl[i]) <= 1e-5, "case %zu: lse[%zu] = %.9g, naive %.9g", c,
                      i, lse[i], nl[i]);
      }
    }
    free(q), free(k), free(v), free(o), free(lse), free(no), free(nl);
  }
}
END_TEST

START_TEST(uniform_v_rows) {
  const int B = 2, H = 2, T = 19, D = 16;
  size_t n = (size_t)B * H * T * D;
  float *q = randn(n, 1, 2), *k = randn(n, 2, 2), *v = malloc(n * sizeof *v), *o = malloc(n * 4);
  for (size_t r = 0; r < n / D; r++)
    for (int x = 0; x < D; x++) v[r * D + x] = 0.25f * (float)x - 1.0f;
  for (int causal = 0; causal <= 1; causal++) {
    sfa_attention_params p = dense(causal);
    ref_ok(&p, B, H, H, T, T, D, q, k, v, NULL, NULL, NULL, NULL, o, NULL);
    for (size_t r = 0; r < n / D; r++)
      for (int x = 0; x < D; x++)
        ck_assert_msg(fabs(o[r * D + x] - v[x]) < 1e-6, "row %zu col %d: %g", r, x,
                      o[r * D + x]);
  }
  free(q), free(k), free(v), free(o);
}
END_TEST

START_TEST(causal_first_row_single_key) {
  const int T = 8, D = 8;
  float *q = randn(T * D, 3, 1), *k = randn(T * D, 4, 1), *v = randn(T * D, 5, 1);
  float o[T * D], lse[T], o2[T * D], lse2[T];
  sfa_attention_params p = dense(1);
  ref_ok(&p, 1, 1, 1, T, T, D, q, k, v, NULL, NULL, NULL, NULL, o, lse);
  double dot = 0;
  for (int x = 0; x < D; x++) {
    ck_assert(fabs(o[x] - v[x]) < 1e-6); /* row 0 = v row 0 exactly */
    dot += (double)q[x] * k[x];
  }
  ck_assert(fabs(lse[0] - dot / sqrt(D)) < 1e-5);
  /* Keys after 0 do not matter to row 0; key 1 does matter to row 1. */
  for (int x = D; x < T * D; x++) k[x] += 3.0f, v[x] -= 1.0f;
  ref_ok(&p, 1, 1, 1, T, T, D, q, k, v, NULL, NULL, NULL, NULL, o2, lse2);
  ck_assert(memcmp(o, o2, D * sizeof *o) == 0 && lse[0] == lse2[0]);
  ck_assert(fabs(o[D] - o2[D]) > 1e-4);
  free(q), free(k), free(v);
}
END_TEST

START_TEST(empty_rows_zero_and_neg_inf) {
  /* Causal with Tq > Tk: rows i < Tq - Tk see no key. */
  const int Tq = 10, Tk = 4, D = 8;
  float *q = randn(Tq * D, 6, 1), *k = randn(Tk * D, 7, 1), *v = randn(Tk * D, 8, 1);
  float o[Tq * D], lse[Tq];
  memset(o, 0xFF, sizeof o);
  sfa_attention_params p = dense(1);
  ref_ok(&p, 1, 1, 1, Tq, Tk, D, q, k, v, NULL, NULL, NULL, NULL, o, lse);
  for (int i = 0; i < Tq; i++) {
    int empty = i < Tq - Tk;
    ck_assert_msg(empty == (isinf(lse[i]) && lse[i] < 0), "row %d lse %g", i, lse[i]);
    for (int x = 0; x < D; x++)
      if (empty) ck_assert(o[i * D + x] == 0.0f && !signbit(o[i * D + x]));
      else ck_assert(isfinite(o[i * D + x]));
  }
  /* Row Tq - Tk sees exactly key 0. */
  for (int x = 0; x < D; x++) ck_assert(fabs(o[(Tq - Tk) * D + x] - v[x]) < 1e-6);
  free(q), free(k), free(v);
}
END_TEST

START_TEST(score_shift_invariance) {
  /* k_j + u for every j adds scale * q_i . u to every score of row i: o is
  ** unchanged and lse moves by exactly that. */
  const int Tq = 12, Tk = 15, D = 16;
  float *q = randn(Tq * D, 9, 1), *k = randn(Tk * D, 10, 1), *v = randn(Tk * D, 11, 1);
  float *u = randn(D, 12, 3), o1[Tq * D], o2[Tq * D], l1[Tq], l2[Tq];
  for (int causal = 0; causal <= 1; causal++) {
    sfa_attention_params p = dense(causal);
    ref_ok(&p, 1, 1, 1, Tq, Tk, D, q, k, v, NULL, NULL, NULL, NULL, o1, l1);
    float *k2 = malloc(Tk * D * sizeof *k2);
    for (int j = 0; j < Tk; j++)
      for (int x = 0; x < D; x++) k2[j * D + x] = k[j * D + x] + u[x];
    ref_ok(&p, 1, 1, 1, Tq, Tk, D, q, k2, v, NULL, NULL, NULL, NULL, o2, l2);
    for (int i = 0; i < Tq; i++) {
      double shift = 0;
      for (int x = 0; x < D; x++) shift += (double)q[i * D + x] * u[x];
      shift /= sqrt(D);
      for (int x = 0; x < D; x++) ck_assert(fabs(o1[i * D + x] - o2[i * D + x]) < 1e-5);
      ck_assert_msg(fabs((l2[i] - l1[i]) - shift) < 1e-4, "row %d: %g vs %g", i, l2[i] - l1[i],
                    shift);
    }
    free(k2);
  }
  free(q), free(k), free(v), free(u);
}
END_TEST

START_TEST(gqa_head_mapping) {
  /* Hq = 6, Hkv = 2: query heads 0-2 read kv head 0, 3-5 read kv head 1. */
  const int B = 2, Hq = 6, Hkv = 2, T = 9, D = 8;
  size_t nq = (size_t)B * Hq * T * D, nk = (size_t)B * Hkv * T * D, hs = (size_t)T * D;
  float *q = randn(nq, 13, 1), *k = randn(nk, 14, 1), *v = randn(nk, 15, 1);
  float *o = malloc(nq * sizeof *o), one[9 * 8];
  sfa_attention_params p = dense(1);
  ref_ok(&p, B, Hq, Hkv, T, T, D, q, k, v, NULL, NULL, NULL, NULL, o, NULL);
  for (int b = 0; b < B; b++)
    for (int h = 0; h < Hq; h++) {
      size_t kv = (size_t)b * Hkv + h / 3;
      ref_ok(&p, 1, 1, 1, T, T, D, q + ((size_t)b * Hq + h) * hs, k + kv * hs, v + kv * hs, NULL,
             NULL, NULL, NULL, one, NULL);
      ck_assert_msg(memcmp(one, o + ((size_t)b * Hq + h) * hs, sizeof one) == 0,
                    "b %d head %d does not use kv head %d", b, h, h / 3);
    }
  free(q), free(k), free(v), free(o);
}
END_TEST

START_TEST(bottom_right_alignment) {
  /* Causal row i sees keys 0 .. i + Tk - Tq: the same as a non-causal call
  ** on that prefix of the keys, for Tq < Tk and Tq > Tk. */
  const int shapes[][2] = {{3, 8}, {8, 3}, {5, 5}, {1, 9}};
  const int D = 8;
  for (size_t c = 0; c < 4; c++) {
    int Tq = shapes[c][0], Tk = shapes[c][1];
    float *q = randn((size_t)Tq * D, 16, 1), *k = randn((size_t)Tk * D, 17, 1);
    float *v = randn((size_t)Tk * D, 18, 1), *o = malloc((size_t)Tq * D * sizeof *o);
    float row[8], lse[16], lrow;
    sfa_attention_params causal = dense(1), full = dense(0);
    ref_ok(&causal, 1, 1, 1, Tq, Tk, D, q, k, v, NULL, NULL, NULL, NULL, o, lse);
    for (int i = 0; i < Tq; i++) {
      int n = i + Tk - Tq + 1;
      if (n <= 0) {
        ck_assert(isinf(lse[i]) && lse[i] < 0);
        continue;
      }
      ref_ok(&full, 1, 1, 1, 1, n, D, q + i * D, k, v, NULL, NULL, NULL, NULL, row, &lrow);
      ck_assert_msg(memcmp(row, o + i * D, sizeof row) == 0 && lrow == lse[i],
                    "Tq %d Tk %d row %d differs from a %d-key prefix", Tq, Tk, i, n);
    }
    free(q), free(k), free(v), free(o);
  }
}
END_TEST

/* With q = 0 every allowed key gets the same weight, and with one-hot v rows
** (v_j = e_j) row i of o is 1/count on exactly its allowed keys. */
static void expect_allowed(const float *o, float lse, int D, int Tk, const int *allowed) {
  int count = 0;
  for (int j = 0; j < Tk; j++) count += allowed[j];
  for (int j = 0; j < D; j++) {
    float want = j < Tk && allowed[j] ? 1.0f / (float)count : 0.0f;
    ck_assert_msg(fabs(o[j] - want) < 1e-6, "col %d: %g, want %g", j, o[j], want);
  }
  if (count) ck_assert(fabs(lse - log(count)) < 1e-6);
  else ck_assert(isinf(lse) && lse < 0);
}

START_TEST(qk_drop_rule) {
  enum { Tq = 5, Tk = 6, D = 8 };
  int32_t qi[Tq] = {0, 2, 5, -1, 7};
  int32_t ki[Tk] = {0, 1, 3, 5, 7, INT32_MAX};
  float q[Tq * D] = {0}, k[Tk * D], v[Tk * D] = {0}, o[Tq * D], lse[Tq];
  uint64_t s = 19;
  for (int i = 0; i < Tk * D; i++) k[i] = (float)tu_rand_normal(&s);
  for (int j = 0; j < Tk; j++) v[j * D + j] = 1.0f;
  sfa_attention_params p;
  sfa_params_init(&p);
  p.mode = SFA_MODE_QK_DROP;
  p.causal = 1; /* ignored outside dense and window */
  ref_ok(&p, 1, 1, 1, Tq, Tk, D, q, k, v, qi, ki, NULL, NULL, o, lse);
  const int want[Tq][Tk] = {
    {1, 0, 0, 0, 0, 0}, {1, 1, 0, 0, 0, 0}, {1, 1, 1, 1, 0, 0},
    {0, 0, 0, 0, 0, 0}, /* q_idx -1: padding */
    {1, 1, 1, 1, 1, 0}, /* k_idx INT32_MAX: padding */
  };
  for (int i = 0; i < Tq; i++) expect_allowed(o + i * D, lse[i], D, Tk, want[i]);
}
END_TEST

START_TEST(hash_rule) {
  enum { Tq = 5, Tk = 6, D = 8 };
  /* Sorted by (bucket, position). */
  int32_t qh[Tq] = {0, 0, 1, 1, 2}, qi[Tq] = {1, 4, 0, 6, 3};
  int32_t kh[Tk] = {0, 0, 1, 1, 1, 3}, ki[Tk] = {2, 4, 0, 5, 6, 1};
  float q[Tq * D] = {0}, k[Tk * D], v[Tk * D] = {0}, o[Tq * D], lse[Tq];
  uint64_t s = 20;
  for (int i = 0; i < Tk * D; i++) k[i] = (float)tu_rand_normal(&s);
  for (int j = 0; j < Tk; j++) v[j * D + j] = 1.0f;
  sfa_attention_params p;
  sfa_params_init(&p);
  p.mode = SFA_MODE_HASH;
  ref_ok(&p, 1, 1, 1, Tq, Tk, D, q, k, v, qi, ki, qh, kh, o, lse);
  const int want[Tq][Tk] = {
    {0, 0, 0, 0, 0, 0}, /* bucket 0 at 1: keys at 2 and 4 are later */
    {1, 1, 0, 0, 0, 0}, /* bucket 0 at 4 */
    {0, 0, 1, 0, 0, 0}, /* bucket 1 at 0 */
    {0, 0, 1, 1, 1, 0}, /* bucket 1 at 6 */
    {0, 0, 0, 0, 0, 0}, /* bucket 2: no keys */
  };
  for (int i = 0; i < Tq; i++) expect_allowed(o + i * D, lse[i], D, Tk, want[i]);
}
END_TEST

/* Strict causality: the tables of qk_drop_rule and hash_rule without the
** diagonal (a query does not see the key at its own position). */
START_TEST(strict_rules) {
  enum { Tq = 5, Tk = 6, D = 8 };
  float q[Tq * D] = {0}, k[Tk * D], v[Tk * D] = {0}, o[Tq * D], lse[Tq];
  uint64_t s = 24;
  for (int i = 0; i < Tk * D; i++) k[i] = (float)tu_rand_normal(&s);
  for (int j = 0; j < Tk; j++) v[j * D + j] = 1.0f;
  sfa_attention_params p;
  sfa_params_init(&p);
  p.mode = SFA_MODE_QK_DROP;
  p.strict_causal = 1;
  int32_t qi[Tq] = {0, 2, 5, -1, 7}, ki[Tk] = {0, 1, 3, 5, 7, INT32_MAX};
  ref_ok(&p, 1, 1, 1, Tq, Tk, D, q, k, v, qi, ki, NULL, NULL, o, lse);
  const int want[Tq][Tk] = {
    {0, 0, 0, 0, 0, 0}, /* q_idx 0 = the first key's: nothing */
    {1, 1, 0, 0, 0, 0}, {1, 1, 1, 0, 0, 0}, /* 5 does not see 5 */
    {0, 0, 0, 0, 0, 0}, {1, 1, 1, 1, 0, 0}, /* 7 does not see 7 */
  };
  for (int i = 0; i < Tq; i++) expect_allowed(o + i * D, lse[i], D, Tk, want[i]);
  p.mode = SFA_MODE_HASH;
  int32_t qh[Tq] = {0, 0, 1, 1, 2}, hqi[Tq] = {1, 4, 0, 6, 3};
  int32_t kh[Tk] = {0, 0, 1, 1, 1, 3}, hki[Tk] = {2, 4, 0, 5, 6, 1};
  ref_ok(&p, 1, 1, 1, Tq, Tk, D, q, k, v, hqi, hki, qh, kh, o, lse);
  const int hwant[Tq][Tk] = {
    {0, 0, 0, 0, 0, 0}, {1, 0, 0, 0, 0, 0}, /* bucket 0 at 4: not the key at 4 */
    {0, 0, 0, 0, 0, 0}, /* bucket 1 at 0: the key at 0 is its own position */
    {0, 0, 1, 1, 0, 0}, {0, 0, 0, 0, 0, 0},
  };
  for (int i = 0; i < Tq; i++) expect_allowed(o + i * D, lse[i], D, Tk, hwant[i]);
}
END_TEST

/* Softcap by hand: one query, keys with scores 3 and 0 (scale 1), cap 2:
** p0 = 1 / (1 + exp(-2 tanh(3 / 2))), lse = log(exp(2 tanh(1.5)) + 1). */
START_TEST(softcap_by_hand) {
  const float q[2] = {3, 0}, k[4] = {1, 0, 0, 0}, v[4] = {1, 0, 0, 1};
  float o[2], lse;
  sfa_attention_params p = dense(0);
  p.scale = 1.0f, p.softcap = 2.0f;
  ref_ex(&p, 1, 1, 1, 1, 2, 2, q, k, v, NULL, o, &lse);
  const double s0 = 2.0 * tanh(1.5), p0 = 1.0 / (1.0 + exp(-s0));
  ck_assert_msg(fabs(o[0] - p0) < 1e-6 && fabs(o[1] - (1 - p0)) < 1e-6, "o = %g %g, want %g",
                o[0], o[1], p0);
  ck_assert(fabs(lse - log(exp(s0) + 1.0)) < 1e-6);
  p.softcap = 1000.0f; /* a cap far above the scores changes almost nothing */
  ref_ex(&p, 1, 1, 1, 1, 2, 2, q, k, v, NULL, o, &lse);
  ck_assert(fabs(o[0] - 1.0 / (1.0 + exp(-3.0))) < 1e-5);
}
END_TEST

/* ALiBi by hand: zero scores, so the weights are exp(-slope |i + Tk - Tq - j|)
** (bottom-right aligned); per head ([Hq]) and per (batch, head) ([B, Hq]);
** with causal the keys right of the diagonal drop out. */
START_TEST(alibi_by_hand) {
  enum { B = 2, H = 2, Tq = 2, Tk = 3, D = 3 };
  float q[B * H * Tq * D] = {0}, k[B * H * Tk * D] = {0}, v[B * H * Tk * D] = {0};
  float o[B * H * Tq * D], lse[B * H * Tq];
  for (int bh = 0; bh < B * H; bh++)
    for (int j = 0; j < Tk; j++) v[(bh * Tk + j) * D + j] = 1.0f;
  const float slopes[B * H] = {0.5f, 1.0f, 0.25f, 2.0f};
  for (int per_batch = 0; per_batch < 2; per_batch++)
    for (int causal = 0; causal < 2; causal++) {
      sfa_attention_params p = dense(causal);
      sfa_host_extras ex = {.alibi_slopes = slopes, .alibi_batches = per_batch ? B : 1};
      ref_ex(&p, B, H, H, Tq, Tk, D, q, k, v, &ex, o, lse);
      for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
          for (int i = 0; i < Tq; i++) {
            const double m = slopes[(per_batch ? b : 0) * H + h];
            double w[Tk], sum = 0;
            for (int j = 0; j < Tk; j++) {
              w[j] = causal && j > i + Tk - Tq ? 0.0 : exp(-m * abs(i + Tk - Tq - j));
              sum += w[j];
            }
            const size_t row = ((size_t)b * H + h) * Tq + i;
            for (int j = 0; j < Tk; j++)
              ck_assert_msg(fabs(o[row * D + j] - w[j] / sum) < 1e-6,
                            "b %d h %d i %d j %d causal %d: %g, want %g", b, h, i, j, causal,
                            o[row * D + j], w[j] / sum);
            ck_assert(fabs(lse[row] - log(sum)) < 1e-6);
          }
    }
}
END_TEST

START_TEST(explicit_scale_and_nan) {
  const int T = 6, D = 16;
  float *q = randn(T * D, 21, 1), *k = randn(T * D, 22, 1), *v = randn(T * D, 23, 1);
  float o1[6 * 16], o2[6 * 16], l1[6], l2[6];
  sfa_attention_params p = dense(0);
  ref_ok(&p, 1, 1, 1, T, T, D, q, k, v, NULL, NULL, NULL, NULL, o1, l1);
  p.scale = 0.25f; /* = 1/sqrt(16) */
  ref_ok(&p, 1, 1, 1, T, T, D, q, k, v, NULL, NULL, NULL, NULL, o2, l2);
  ck_assert(memcmp(o1, o2, sizeof o1) == 0 && memcmp(l1, l2, sizeof l1) == 0);
  p.scale = 1.0f;
  ref_ok(&p, 1, 1, 1, T, T, D, q, k, v, NULL, NULL, NULL, NULL, o2, l2);
  ck_assert(memcmp(o1, o2, sizeof o1) != 0);
  /* A NaN input is not masked away: it shows in the output. */
  k[2 * D + 3] = NAN;
  ref_ok(&p, 1, 1, 1, T, T, D, q, k, v, NULL, NULL, NULL, NULL, o2, l2);
  ck_assert(isnan(o2[0]) && isnan(l2[0]));
  free(q), free(k), free(v);
}
END_TEST

/* ------------------------------------------------------------ window mode */

static sfa_attention_params window(int left, int right, int causal) {
  sfa_attention_params p;
  sfa_params_init(&p);
  p.mode = SFA_MODE_WINDOW;
  p.window_left = left;
  p.window_right = right;
  p.causal = causal;
  return p;
}

/* The window problem restated for the naive version: the rule of
** docs/semantics.md written out again, bias and mask as [B, heads, rows, Tk]. */
typedef struct wproblem {
  int Hq, Hkv, Tq, Tk, left, right, causal;
  const float *bias;
  int bias_heads, bias_rows;
  const uint8_t *mask;
  int mask_heads, mask_rows;
} wproblem;

static size_t wp_at(const wproblem *w, int heads, int rows, int b, int h, int i, int j) {
  int hh = heads == w->Hq ? h : heads == 1 ? 0 : h / (w->Hq / w->Hkv);
  return (((size_t)b * heads + hh) * rows + (rows == 1 ? 0 : i)) * w->Tk + j;
}

static int window_allow(int b, int h, int i, int j, void *user) {
  const wproblem *w = user;
  long diag = (long)i + w->Tk - w->Tq;
  if (w->left >= 0 && j < diag - w->left) return 0;
  if (w->causal && j > diag) return 0;
  if (!w->causal && w->right >= 0 && j > diag + w->right) return 0;
  return !w->mask || w->mask[wp_at(w, w->mask_heads, w->mask_rows, b, h, i, j)] != 0;
}

static double window_bias(int b, int h, int i, int j, void *user) {
  const wproblem *w = user;
  return w->bias ? w->bias[wp_at(w, w->bias_heads, w->bias_rows, b, h, i, j)] : 0.0;
}

START_TEST(window_matches_naive) {
  /* Random shapes, Tq < Tk and Tq > Tk, windows with and without causal, bias
  ** and mask per query head, per kv head and broadcast over heads and rows. */
  const int shapes[][6] = {
    /* B Hq Hkv Tq Tk D */
    {1, 1, 1, 9, 9, 8}, {2, 4, 2, 7, 13, 8}, {1, 4, 1, 13, 6, 16}, {2, 2, 2, 1, 17, 8},
  };
  const int windows[][3] = {{0, 0, 0}, {2, -1, 0}, {-1, 3, 0}, {3, 1, 0},
                            {4, -1, 1}, {-1, 7, 1}, {1, 1, 1}, {-1, -1, 0}};
  int n = 0;
  for (size_t c = 0; c < 4; c++)
    for (size_t wi = 0; wi < 8; wi++, n++) {
      const int *a = shapes[c];
      int B = a[0], Hq = a[1], Hkv = a[2], Tq = a[3], Tk = a[4], D = a[5];
      uint64_t rng = 100 + (uint64_t)n;
      int heads_set[3] = {Hq, Hkv, 1};
      wproblem w = {Hq, Hkv, Tq, Tk, windows[wi][0], windows[wi][1], windows[wi][2], NULL,
                    heads_set[n % 3], n % 2 ? 1 : Tq, NULL, heads_set[(n / 3) % 3],
                    n % 4 < 2 ? Tq : 1};
      size_t nq = (size_t)B * Hq * Tq * D, nk = (size_t)B * Hkv * Tk * D;
      size_t nb = (size_t)B * w.bias_heads * w.bias_rows * Tk;
      size_t nm = (size_t)B * w.mask_heads * w.mask_rows * Tk;
      float *q = randn(nq, 1000 + n, 0.5), *k = randn(nk, 2000 + n, 0.5);
      float *v = randn(nk, 3000 + n, 1), *bias = randn(nb, 4000 + n, 1);
      uint8_t *mask = malloc(nm);
      for (size_t i = 0; i < nm; i++)
        mask[i] = tu_rand_uniform(&rng) < 0.6 ? (uint8_t)(1 + i % 7) : 0;
      float *o = malloc(nq * sizeof *o), *lse = malloc((size_t)B * Hq * Tq * sizeof *lse);
      double *no = malloc(nq * sizeof *no), *nl = malloc((size_t)B * Hq * Tq * sizeof *nl);
      /* Every combination: none, bias, mask, both. */
      for (int use = 0; use < 4; use++) {
        w.bias = use & 1 ? bias : NULL;
        w.mask = use & 2 ? mask : NULL;
        sfa_host_extras ex = {.bias = w.bias, .bias_heads = w.bias_heads,
                              .bias_rows = w.bias_rows, .mask = w.mask,
                              .mask_heads = w.mask_heads, .mask_rows = w.mask_rows};
        sfa_attention_params p = window(w.left, w.right, w.causal);
        ref_ex(&p, B, Hq, Hkv, Tq, Tk, D, q, k, v, use ? &ex : NULL, o, lse);
        naive(B, Hq, Hkv, Tq, Tk, D, 1 / sqrt(D), q, k, v, window_allow, window_bias, &w, no,
              nl);
        for (size_t i = 0; i < nq; i++)
          ck_assert_msg(fabs(o[i] - no[i]) <= 1e-6 + 1e-6 * fabs(no[i]),
                        "case %zu window %zu use %d: o[%zu] = %.9g, naive %.9g", c, wi, use, i,
                        o[i], no[i]);
        for (size_t i = 0; i < (size_t)B * Hq * Tq; i++) {
          if (isinf(nl[i])) {
            ck_assert_msg(isinf(lse[i]) && lse[i] < 0, "case %zu/%zu: lse[%zu] = %g", c, wi, i,
                          lse[i]);
            for (int x = 0; x < D; x++) ck_assert(o[i * D + x] == 0.0f);
          } else {
            ck_assert_msg(fabs(lse[i] - nl[i]) <= 1e-5, "case %zu/%zu use %d: lse[%zu] = %.9g, "
                          "naive %.9g", c, wi, use, i, lse[i], nl[i]);
          }
        }
      }
      free(q), free(k), free(v), free(bias), free(mask), free(o), free(lse), free(no), free(nl);
    }
}
END_TEST

/* One-hot V and q = 0: row i of o is uniform over exactly its allowed keys. */
static void window_case(int Tq, int Tk, int left, int right, int causal, const uint8_t *mask,
                        int mask_rows, const int *want /* [Tq][Tk] */) {
  enum { D = 8 };
  float q[8 * D] = {0}, k[8 * D], v[8 * D] = {0}, o[8 * D], lse[8];
  ck_assert(Tq <= 8 && Tk <= D);
  uint64_t s = 77;
  for (int i = 0; i < Tk * D; i++) k[i] = (float)tu_rand_normal(&s);
  for (int j = 0; j < Tk; j++) v[j * D + j] = 1.0f;
  sfa_attention_params p = window(left, right, causal);
  sfa_host_extras ex = {.mask = mask, .mask_heads = 1, .mask_rows = mask_rows};
  ref_ex(&p, 1, 1, 1, Tq, Tk, D, q, k, v, mask ? &ex : NULL, o, lse);
  for (int i = 0; i < Tq; i++) expect_allowed(o + i * D, lse[i], D, Tk, want + i * Tk);
}

START_TEST(window_rule) {
  /* Tq = 4, Tk = 6: off = 2, query i is aligned with key i + 2. */
  const int w10[4 * 6] = {0, 1, 1, 0, 0, 0, /* left 1, right 0: keys i+1 .. i+2 */
                          0, 0, 1, 1, 0, 0,
                          0, 0, 0, 1, 1, 0,
                          0, 0, 0, 0, 1, 1};
  window_case(4, 6, 1, 0, 0, NULL, 0, w10);
  const int causal[4 * 6] = {1, 1, 1, 0, 0, 0, /* causal ignores right = 5 */
                             1, 1, 1, 1, 0, 0,
                             1, 1, 1, 1, 1, 0,
                             1, 1, 1, 1, 1, 1};
  window_case(4, 6, -1, 5, 1, NULL, 0, causal);
  const int w0n[4 * 6] = {0, 0, 1, 1, 1, 1, /* left 0, right unbounded */
                          0, 0, 0, 1, 1, 1,
                          0, 0, 0, 0, 1, 1,
                          0, 0, 0, 0, 0, 1};
  window_case(4, 6, 0, -1, 0, NULL, 0, w0n);
  const int c1[4 * 6] = {0, 1, 1, 0, 0, 0, /* causal, left 1 */
                         0, 0, 1, 1, 0, 0,
                         0, 0, 0, 1, 1, 0,
                         0, 0, 0, 0, 1, 1};
  window_case(4, 6, 1, -1, 1, NULL, 0, c1);
  /* Tq = 6, Tk = 4: off = -2; left 0 right 0 sees key i - 2 only; rows 0 and 1 are empty. */
  const int diag[6 * 4] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0,
                           0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1};
  window_case(6, 4, 0, 0, 0, NULL, 0, diag);
  /* Left 1 right 2 with a mask per row; row 2's mask is all zero. */
  const uint8_t mask[4 * 6] = {1, 1, 0, 1, 1, 1,
                               9, 1, 1, 0, 1, 0,
                               0, 0, 0, 0, 0, 0,
                               1, 0, 1, 1, 0, 255};
  const int masked[4 * 6] = {0, 1, 0, 1, 1, 0, /* window i+1 .. i+4 */
                             0, 0, 1, 0, 1, 0,
                             0, 0, 0, 0, 0, 0,
                             0, 0, 0, 0, 0, 1};
  window_case(4, 6, 1, 2, 0, mask, 4, masked);
  /* The mask broadcast over rows: row 3 of it for every query. */
  const int bmask[4 * 6] = {1, 0, 1, 0, 0, 0, /* unbounded window, causal */
                            1, 0, 1, 1, 0, 0,
                            1, 0, 1, 1, 0, 0,
                            1, 0, 1, 1, 0, 1};
  window_case(4, 6, -1, -1, 1, mask + 18, 1, bmask);
}
END_TEST

START_TEST(window_bias_broadcast) {
  /* q = 0, so the scores are the bias alone: o = softmax(bias) over one-hot V. */
  enum { B = 2, Hq = 4, Hkv = 2, T = 5, D = 8 };
  float q[B * Hq * T * D] = {0}, k[B * Hkv * T * D], v[B * Hkv * T * D] = {0};
  float o[B * Hq * T * D], lse[B * Hq * T];
  uint64_t s = 91;
  for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) k[i] = (float)tu_rand_normal(&s);
  for (int r = 0; r < B * Hkv * T; r++) v[r * D + r % T] = 1.0f;
  const int heads_set[3] = {Hq, Hkv, 1};
  for (int hs = 0; hs < 3; hs++)
    for (int rows = 1; rows <= T; rows += T - 1) {
      int heads = heads_set[hs];
      size_t nb = (size_t)B * heads * rows * T;
      float *bias = randn(nb, 92 + (uint64_t)(hs * 10 + rows), 2);
      sfa_host_extras ex = {.bias = bias, .bias_heads = heads, .bias_rows = rows};
      sfa_attention_params p = window(-1, -1, 0);
      ref_ex(&p, B, Hq, Hkv, T, T, D, q, k, v, &ex, o, lse);
      for (int b = 0; b < B; b++)
        for (int h = 0; h < Hq; h++)
          for (int i = 0; i < T; i++) {
            int hb = heads == Hq ? h : heads == 1 ? 0 : h / 2;
            const float *br = bias + (((size_t)b * heads + hb) * rows + (rows == 1 ? 0 : i)) * T;
            double z = 0;
            for (int j = 0; j < T; j++) z += exp(br[j]);
            size_t row = ((size_t)b * Hq + h) * T + i;
            for (int j = 0; j < T; j++)
              ck_assert_msg(fabs(o[row * D + j] - exp(br[j]) / z) < 1e-6,
                            "heads %d rows %d (b,h,i)=(%d,%d,%d) key %d: %g vs %g", heads, rows,
                            b, h, i, j, o[row * D + j], exp(br[j]) / z);
            ck_assert(fabs(lse[row] - log(z)) < 1e-5);
          }
      /* A bias of -inf on every allowed key empties the row, as on the GPU. */
      for (size_t i = 0; i < nb; i++) bias[i] = -INFINITY;
      ref_ex(&p, B, Hq, Hkv, T, T, D, q, k, v, &ex, o, lse);
      for (int r = 0; r < B * Hq * T; r++) {
        ck_assert(isinf(lse[r]) && lse[r] < 0);
        for (int x = 0; x < D; x++) ck_assert(o[r * D + x] == 0.0f);
      }
      free(bias);
    }
}
END_TEST

START_TEST(window_mask_heads) {
  /* Hq = 4, Hkv = 2, a mask per kv head: query heads 0-1 use mask head 0
  ** (keys 0 and 2), heads 2-3 mask head 1 (all zero: empty rows). */
  enum { Hq = 4, Hkv = 2, T = 3, D = 8 };
  float q[Hq * T * D] = {0}, k[Hkv * T * D], v[Hkv * T * D] = {0}, o[Hq * T * D], lse[Hq * T];
  uint64_t s = 93;
  for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) k[i] = (float)tu_rand_normal(&s);
  for (int r = 0; r < Hkv * T; r++) v[r * D + r % T] = 1.0f;
  const uint8_t mask[2 * 3] = {1, 0, 1, 0, 0, 0};
  sfa_host_extras ex = {.mask = mask, .mask_heads = Hkv, .mask_rows = 1};
  sfa_attention_params p = window(-1, -1, 0);
  ref_ex(&p, 1, Hq, Hkv, T, T, D, q, k, v, &ex, o, lse);
  const int seen[3] = {1, 0, 1}, none[3] = {0, 0, 0};
  for (int h = 0; h < Hq; h++)
    for (int i = 0; i < T; i++)
      expect_allowed(o + (h * T + i) * D, lse[h * T + i], D, T, h < 2 ? seen : none);
}
END_TEST

/* ------------------------------------------------------------ errors */

static void expect_error(sfa_status want, const char *needle, const sfa_attention_params *p,
                         int B, int Hq, int Hkv, int Tq, int Tk, int D, const float *q,
                         const sfa_host_extras *ex, float *o) {
  char err[256] = "";
  sfa_status st = sfa_reference_forward(p, B, Hq, Hkv, Tq, Tk, D, q, q, q, ex, o, NULL, err,
                                        sizeof err);
  ck_assert_msg(st == want, "status %d, want %d (%s)", st, want, err);
  ck_assert_msg(strstr(err, needle), "'%s' not in '%s'", needle, err);
}

START_TEST(argument_errors) {
  float x[64] = {0}, o[64];
  int32_t idx[4] = {0, 1, 2, 3};
  uint8_t m[64] = {0};
  const sfa_status bad = SFA_ERR_INVALID_ARGUMENT;
  sfa_attention_params p = dense(0);
  expect_error(bad, "params", NULL, 1, 1, 1, 2, 2, 16, x, NULL, o);
  expect_error(bad, "q: is NULL", &p, 1, 1, 1, 2, 2, 16, NULL, NULL, o);
  expect_error(bad, "o: is NULL", &p, 1, 1, 1, 2, 2, 16, x, NULL, NULL);
  expect_error(bad, "B: 0", &p, 0, 1, 1, 2, 2, 16, x, NULL, o);
  expect_error(bad, "Tk: -1", &p, 1, 1, 1, 2, -1, 16, x, NULL, o);
  expect_error(bad, "Hkv: 3 does not divide Hq (4)", &p, 1, 4, 3, 1, 1, 8, x, NULL, o);
  p.scale = -1;
  expect_error(bad, "params.scale", &p, 1, 1, 1, 2, 2, 16, x, NULL, o);
  p = dense(0);
  p.window_left = 3;
  expect_error(bad, "params.window_left/window_right: 3/-1", &p, 1, 1, 1, 2, 2, 16, x, NULL, o);
  p = dense(0);
  p.strict_causal = 1;
  expect_error(bad, "params.strict_causal: 1; strict causality (q_idx > k_idx) applies to modes "
               "qk_drop and hash only (use 0 with dense)", &p, 1, 1, 1, 2, 2, 16, x, NULL, o);
  p.strict_causal = 2;
  expect_error(bad, "params.strict_causal: 2; must be 0 or 1", &p, 1, 1, 1, 2, 2, 16, x, NULL, o);
  p = dense(0);
  p.softcap = -1.0f;
  expect_error(bad, "params.softcap: -1; must be finite and >= 0", &p, 1, 1, 1, 2, 2, 16, x, NULL,
               o);
  p.softcap = NAN;
  expect_error(bad, "params.softcap: nan", &p, 1, 1, 1, 2, 2, 16, x, NULL, o);
  p.softcap = INFINITY;
  expect_error(bad, "params.softcap: inf", &p, 1, 1, 1, 2, 2, 16, x, NULL, o);
  p = dense(0);
  sfa_host_extras aex = {.alibi_slopes = x, .alibi_batches = 3};
  expect_error(bad, "ex->alibi_batches: 3; must be B (2) or 1", &p, 2, 1, 1, 2, 2, 16, x, &aex, o);
  p.mode = SFA_MODE_QK_DROP;
  aex.q_idx = aex.k_idx = idx, aex.alibi_batches = 0;
  expect_error(bad, "ex->alibi_slopes: only mode dense and window reads it; must be NULL in mode "
               "qk_drop", &p, 1, 1, 1, 2, 2, 16, x, &aex, o);

  /* Missing and unexpected extras. */
  sfa_host_extras ex = {0};
  p = dense(0);
  p.mode = SFA_MODE_QK_DROP;
  expect_error(bad, "ex: q_idx: is NULL (mode qk_drop needs it)", &p, 1, 1, 1, 2, 2, 16, x,
               NULL, o);
  ex.k_idx = idx;
  expect_error(bad, "ex->q_idx: is NULL (mode qk_drop", &p, 1, 1, 1, 2, 2, 16, x, &ex, o);
  ex.q_idx = idx, ex.k_idx = NULL;
  expect_error(bad, "ex->k_idx: is NULL", &p, 1, 1, 1, 2, 2, 16, x, &ex, o);
  ex.k_idx = idx, ex.q_hash = idx;
  expect_error(bad, "ex->q_hash: only mode hash reads it", &p, 1, 1, 1, 2, 2, 16, x, &ex, o);
  p.mode = SFA_MODE_HASH;
  ex.q_hash = NULL, ex.k_hash = idx;
  expect_error(bad, "ex->q_hash: is NULL (mode hash", &p, 1, 1, 1, 2, 2, 16, x, &ex, o);
  ex.q_hash = idx, ex.k_hash = NULL;
  expect_error(bad, "ex->k_hash: is NULL", &p, 1, 1, 1, 2, 2, 16, x, &ex, o);
  ex.k_hash = idx, ex.bias = x, ex.bias_heads = ex.bias_rows = 1;
  expect_error(bad, "ex->bias: only mode window reads it; must be NULL in mode hash", &p, 1, 1, 1,
               2, 2, 16, x, &ex, o);
  p = dense(0);
  sfa_host_extras wex = {.mask = m, .mask_heads = 1, .mask_rows = 1};
  expect_error(bad, "ex->mask: only mode window", &p, 1, 1, 1, 2, 2, 16, x, &wex, o);
  p = window(-1, -1, 0);
  wex.q_idx = idx;
  expect_error(bad, "ex->q_idx: only mode qk_drop and hash reads it", &p, 1, 1, 1, 2, 2, 16, x,
               &wex, o);

  /* Window parameters and broadcast shapes (Hq = 4, Hkv = 2, Tq = 3). */
  p = window(-2, 0, 0);
  expect_error(bad, "params.window_left: -2", &p, 1, 1, 1, 2, 2, 16, x, NULL, o);
  p = window(0, -5, 1);
  expect_error(bad, "params.window_right: -5", &p, 1, 1, 1, 2, 2, 16, x, NULL, o);
  p = window(-1, -1, 0);
  sfa_host_extras bex = {.bias = x, .bias_heads = 3, .bias_rows = 1};
  expect_error(bad, "ex->bias_heads: 3; must be Hq (4), Hkv (2) or 1", &p, 1, 4, 2, 3, 2, 2, x,
               &bex, o);
  bex.bias_heads = 2, bex.bias_rows = 2;
  expect_error(bad, "ex->bias_rows: 2; must be Tq (3) or 1", &p, 1, 4, 2, 3, 2, 2, x, &bex, o);
  sfa_host_extras mex = {.mask = m, .mask_heads = 0, .mask_rows = 3};
  expect_error(bad, "ex->mask_heads: 0", &p, 1, 4, 2, 3, 2, 2, x, &mex, o);

  p.mode = (sfa_mode)9;
  expect_error(bad, "params.mode: 9", &p, 1, 1, 1, 2, 2, 16, x, NULL, o);
  /* err may be NULL. */
  ck_assert_int_eq(sfa_reference_forward(&p, 1, 1, 1, 2, 2, 16, x, x, x, NULL, o, NULL, NULL, 0),
                   SFA_ERR_INVALID_ARGUMENT);
}
END_TEST

/* The references take the params sfa_forward takes and refuse what it
** refuses, with its messages: causal and deterministic are 0 or 1, in every
** mode and in both passes. */
START_TEST(params_rules_are_sfa_forwards) {
  float x[64] = {0}, o[64], g[64];
  const sfa_status bad = SFA_ERR_INVALID_ARGUMENT;
  sfa_attention_params p = dense(7);
  expect_error(bad, "params.causal: 7; must be 0 or 1", &p, 1, 1, 1, 2, 2, 16, x, NULL, o);
  p = window(-1, -1, -1);
  expect_error(bad, "params.causal: -1; must be 0 or 1", &p, 1, 1, 1, 2, 2, 16, x, NULL, o);
  p = dense(0);
  p.deterministic = 2;
  expect_error(bad, "params.deterministic: 2; must be 0 or 1", &p, 1, 1, 1, 2, 2, 16, x, NULL, o);
  char err[256] = "";
  p = dense(3);
  ck_assert_int_eq(sfa_reference_backward(&p, 1, 1, 1, 2, 2, 16, x, x, x, NULL, x, g, g, g, NULL,
                                          err, sizeof err),
                   bad);
  ck_assert_msg(strstr(err, "params.causal: 3; must be 0 or 1"), "%s", err);
}
END_TEST

int main(void) {
  Suite *s = suite_create("reference");
  TCase *t = tcase_create("reference");
  tcase_add_test(t, matches_naive_softmax);
  tcase_add_test(t, uniform_v_rows);
  tcase_add_test(t, causal_first_row_single_key);
  tcase_add_test(t, empty_rows_zero_and_neg_inf);
  tcase_add_test(t, score_shift_invariance);
  tcase_add_test(t, gqa_head_mapping);
  tcase_add_test(t, bottom_right_alignment);
  tcase_add_test(t, qk_drop_rule);
  tcase_add_test(t, hash_rule);
  tcase_add_test(t, strict_rules);
  tcase_add_test(t, softcap_by_hand);
  tcase_add_test(t, alibi_by_hand);
  tcase_add_test(t, explicit_scale_and_nan);
  tcase_add_test(t, window_matches_naive);
  tcase_add_test(t, window_rule);
  tcase_add_test(t, window_bias_broadcast);
  tcase_add_test(t, window_mask_heads);
  tcase_add_test(t, argument_errors);
  tcase_add_test(t, params_rules_are_sfa_forwards);
  suite_add_tcase(s, t);
  return tu_run_suite(s);
}
