/*
** test_reference.c -- properties of the float64 CPU reference
** (sfa_reference_forward), which defines correctness for every kernel:
** agreement with an independently written naive softmax, uniform V rows,
** single-key and empty rows, invariance to a per-row score shift, GQA head
** mapping, bottom-right causal alignment for Tq != Tk, the qk_drop and hash
** rules on hand-built cases, and argument errors.
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

static void ref_ok(const sfa_attention_params *p, int B, int Hq, int Hkv, int Tq, int Tk, int D,
                   const float *q, const float *k, const float *v, const int32_t *qi,
                   const int32_t *ki, const int32_t *qh, const int32_t *kh, float *o,
                   float *lse) {
  char err[256] = "";
  sfa_status st = sfa_reference_forward(p, B, Hq, Hkv, Tq, Tk, D, q, k, v, qi, ki, qh, kh, o,
                                        lse, err, sizeof err);
  ck_assert_msg(st == SFA_OK, "reference failed: %s", err);
}

/* An independent naive version: weights exp(s) without max subtraction,
** normalised in a second pass, all in long double, the mask from a callback. */
typedef int (*allow_fn)(int b, int h, int i, int j, void *user);

static void naive(int B, int Hq, int Hkv, int Tq, int Tk, int D, double scale, const float *q,
                  const float *k, const float *v, allow_fn allow, void *user, double *o,
                  double *lse) {
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
          total += expl(dot * scale);
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
            acc += expl(dot * scale) / total * vr[x];
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
    naive(B, Hq, Hkv, Tq, Tk, D, p.scale > 0 ? p.scale : 1 / sqrt(D), q, k, v, dense_allow, &m,
          no, nl);
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

static void expect_error(sfa_status want, const char *needle, const sfa_attention_params *p,
                         int B, int Hq, int Hkv, int Tq, int Tk, int D, const float *q,
                         const int32_t *qi, const int32_t *ki, const int32_t *qh,
                         const int32_t *kh, float *o) {
  char err[256] = "";
  sfa_status st = sfa_reference_forward(p, B, Hq, Hkv, Tq, Tk, D, q, q, q, qi, ki, qh, kh, o,
                                        NULL, err, sizeof err);
  ck_assert_msg(st == want, "status %d, want %d (%s)", st, want, err);
  ck_assert_msg(strstr(err, needle), "'%s' not in '%s'", needle, err);
}

START_TEST(argument_errors) {
  float x[64] = {0}, o[64];
  int32_t idx[4] = {0, 1, 2, 3};
  sfa_attention_params p = dense(0);
  expect_error(SFA_ERR_INVALID_ARGUMENT, "params", NULL, 1, 1, 1, 2, 2, 16, x, 0, 0, 0, 0, o);
  expect_error(SFA_ERR_INVALID_ARGUMENT, "q: is NULL", &p, 1, 1, 1, 2, 2, 16, NULL, 0, 0, 0, 0,
               o);
  expect_error(SFA_ERR_INVALID_ARGUMENT, "o: is NULL", &p, 1, 1, 1, 2, 2, 16, x, 0, 0, 0, 0,
               NULL);
  expect_error(SFA_ERR_INVALID_ARGUMENT, "B: 0", &p, 0, 1, 1, 2, 2, 16, x, 0, 0, 0, 0, o);
  expect_error(SFA_ERR_INVALID_ARGUMENT, "Tk: -1", &p, 1, 1, 1, 2, -1, 16, x, 0, 0, 0, 0, o);
  expect_error(SFA_ERR_INVALID_ARGUMENT, "Hkv: 3 does not divide Hq (4)", &p, 1, 4, 3, 1, 1, 8,
               x, 0, 0, 0, 0, o);
  p.scale = -1;
  expect_error(SFA_ERR_INVALID_ARGUMENT, "params.scale", &p, 1, 1, 1, 2, 2, 16, x, 0, 0, 0, 0,
               o);
  p = dense(0);
  p.mode = SFA_MODE_QK_DROP;
  expect_error(SFA_ERR_INVALID_ARGUMENT, "q_idx: is NULL", &p, 1, 1, 1, 2, 2, 16, x, NULL, idx,
               0, 0, o);
  expect_error(SFA_ERR_INVALID_ARGUMENT, "k_idx: is NULL", &p, 1, 1, 1, 2, 2, 16, x, idx, NULL,
               0, 0, o);
  p.mode = SFA_MODE_HASH;
  expect_error(SFA_ERR_INVALID_ARGUMENT, "q_hash: is NULL", &p, 1, 1, 1, 2, 2, 16, x, idx, idx,
               NULL, idx, o);
  expect_error(SFA_ERR_INVALID_ARGUMENT, "k_hash: is NULL", &p, 1, 1, 1, 2, 2, 16, x, idx, idx,
               idx, NULL, o);
  p.mode = SFA_MODE_WINDOW;
  expect_error(SFA_ERR_UNSUPPORTED, "window", &p, 1, 1, 1, 2, 2, 16, x, 0, 0, 0, 0, o);
  p.mode = (sfa_mode)9;
  expect_error(SFA_ERR_INVALID_ARGUMENT, "params.mode: 9", &p, 1, 1, 1, 2, 2, 16, x, 0, 0, 0, 0,
               o);
  /* err may be NULL. */
  ck_assert_int_eq(sfa_reference_forward(&p, 1, 1, 1, 2, 2, 16, x, x, x, 0, 0, 0, 0, o, NULL,
                                         NULL, 0),
                   SFA_ERR_INVALID_ARGUMENT);
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
  tcase_add_test(t, explicit_scale_and_nan);
  tcase_add_test(t, argument_errors);
  suite_add_tcase(s, t);
  return tu_run_suite(s);
}
