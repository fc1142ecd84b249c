/*
** test_reference_bwd.c -- the float64 CPU reference of the backward pass
** (sfa_reference_backward), which defines correctness for every backward
** kernel. Its gradients are compared with central finite differences of
** L = sum(o * dout), o from the double-precision forward reference, in every
** mode: dense causal and not with Tq != Tk, qk_drop and hash with padding,
** window with left/right/causal, a bias in every broadcast shape (batches,
** heads, rows) with a mask, GQA and MQA. Then: rows with no allowed key give
** dq = 0 and contribute nothing, dbias of a broadcast bias is the reduction of
** the full one, the forward's bias_batches/mask_batches broadcast, and
** argument errors with their exact messages.
*/
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sfa.h"
#include "runtime/reference.h"
#include "testutil.h"

static float *randn(size_t n, uint64_t seed, double amp) {
  float *x = malloc((n ? n : 1) * sizeof *x);
  ck_assert_ptr_nonnull(x);
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i < n; i++) x[i] = (float)(amp * tu_rand_normal(&s));
  return x;
}

/* NaN everywhere, so that an output element the backward forgets to write
** fails every comparison. */
static float *poisoned(size_t n) {
  float *x = malloc((n ? n : 1) * sizeof *x);
  ck_assert_ptr_nonnull(x);
  for (size_t i = 0; i < n; i++) x[i] = NAN;
  return x;
}

/* One problem: the inputs of both passes and the gradients of the backward. */
typedef struct prob {
  const char *name;
  sfa_attention_params p;
  int B, Hq, Hkv, Tq, Tk, D;
  float *q, *k, *v, *dout, *bias;
  uint8_t *mask;
  int32_t *qi, *ki, *qh, *kh;
  sfa_host_extras ex;
  int has_ex;
  size_t nq, nk, nbias;
  float *dq, *dk, *dv, *dbias;
} prob;

static sfa_attention_params params(sfa_mode mode, int causal, int left, int right) {
  sfa_attention_params p;
  sfa_params_init(&p);
  p.mode = mode;
  p.causal = causal;
  p.window_left = left;
  p.window_right = right;
  return p;
}

/* Random q, k, v (scale ~0.5, v and dout ~1) for the shape of P. */
static void prob_init(prob *P, const char *name, sfa_attention_params p, int B, int Hq, int Hkv,
                      int Tq, int Tk, int D, uint64_t seed) {
  memset(P, 0, sizeof *P);
  P->name = name;
  P->p = p;
  P->B = B, P->Hq = Hq, P->Hkv = Hkv, P->Tq = Tq, P->Tk = Tk, P->D = D;
  P->nq = (size_t)B * Hq * Tq * D, P->nk = (size_t)B * Hkv * Tk * D;
  P->q = randn(P->nq, seed, 0.5);
  P->k = randn(P->nk, seed + 1, 0.5);
  P->v = randn(P->nk, seed + 2, 1.0);
  P->dout = randn(P->nq, seed + 3, 1.0);
}

static void prob_free(prob *P) {
  free(P->q), free(P->k), free(P->v), free(P->dout), free(P->bias), free(P->mask);
  free(P->qi), free(P->ki), free(P->qh), free(P->kh);
  free(P->dq), free(P->dk), free(P->dv), free(P->dbias);
}

static const sfa_host_extras *prob_ex(const prob *P) { return P->has_ex ? &P->ex : NULL; }

/* The backward into freshly poisoned outputs. */
static void backward(prob *P) {
  free(P->dq), free(P->dk), free(P->dv), free(P->dbias);
  P->dq = poisoned(P->nq), P->dk = poisoned(P->nk), P->dv = poisoned(P->nk);
  P->dbias = P->bias ? poisoned(P->nbias) : NULL;
  char err[256] = "";
  sfa_status st = sfa_reference_backward(&P->p, P->B, P->Hq, P->Hkv, P->Tq, P->Tk, P->D, P->q,
                                         P->k, P->v, prob_ex(P), P->dout, P->dq, P->dk, P->dv,
                                         P->dbias, err, sizeof err);
  ck_assert_msg(st == SFA_OK, "%s: backward failed: %s", P->name, err);
}

/* L = sum(o * dout), o in double. */
static double loss(const prob *P) {
  double *o = malloc(P->nq * sizeof *o);
  ck_assert_ptr_nonnull(o);
  char err[256] = "";
  sfa_status st = sfa__reference_forward64(&P->p, P->B, P->Hq, P->Hkv, P->Tq, P->Tk, P->D, P->q,
                                           P->k, P->v, prob_ex(P), o, NULL, err, sizeof err);
  ck_assert_msg(st == SFA_OK, "%s: forward failed: %s", P->name, err);
  double L = 0;
  for (size_t i = 0; i < P->nq; i++) L += o[i] * (double)P->dout[i];
  free(o);
  return L;
}

/* Central differences of L in every element of x (an input of P) against
** grad. The step is the one the float32 inputs actually take, so only the
** O(h^2) truncation error of the difference remains (at most 4e-7 here,
** 1/30 of the tolerance): the tolerance is far below what a wrong term, scale
** or reduction produces (those are O(0.01 .. 1)); even P off by 1e-4 fails.
** Returns the largest |dL/dx|, so that callers can
** insist the gradient is not trivially zero. */
static double fd_check(prob *P, float *x, size_t n, const float *grad, const char *what) {
  const double h = 1e-3;
  double biggest = 0;
  for (size_t e = 0; e < n; e++) {
    const float save = x[e];
    if (!isfinite(save)) { /* a -inf bias: masked, no gradient */
      ck_assert_msg(grad[e] == 0.0f, "%s: d%s[%zu] = %g at a -inf input", P->name, what, e,
                    grad[e]);
      continue;
    }
    const float xp = (float)(save + h), xm = (float)(save - h);
    x[e] = xp;
    const double Lp = loss(P);
    x[e] = xm;
    const double Lm = loss(P);
    x[e] = save;
    const double fd = (Lp - Lm) / ((double)xp - (double)xm);
    ck_assert_msg(fabs(fd - grad[e]) <= 1e-6 + 1e-5 * fabs(fd),
                  "%s: d%s[%zu] = %.9g, finite difference %.9g", P->name, what, e, grad[e], fd);
    if (fabs(fd) > biggest) biggest = fabs(fd);
  }
  return biggest;
}

/* The backward, then every gradient against finite differences. */
static void check_all(prob *P) {
  backward(P);
  ck_assert_msg(fd_check(P, P->q, P->nq, P->dq, "q") > 1e-2, "%s: dq is ~0", P->name);
  ck_assert_msg(fd_check(P, P->k, P->nk, P->dk, "k") > 1e-2, "%s: dk is ~0", P->name);
  ck_assert_msg(fd_check(P, P->v, P->nk, P->dv, "v") > 1e-2, "%s: dv is ~0", P->name);
  if (P->bias)
    ck_assert_msg(fd_check(P, P->bias, P->nbias, P->dbias, "bias") > 1e-2, "%s: dbias is ~0",
                  P->name);
}

/* ------------------------------------------------------------ index arrays */

/* One (b, h) row of T sorted tokens: T - npad real ones at increasing
** positions (hash: sorted by (bucket, position), buckets in [0, nb)), then
** npad padding tokens (idx = idx_pad, hash = INT32_MAX). hash may be NULL. */
static void index_row(int32_t *idx, int32_t *hash, int T, int npad, int32_t idx_pad, int nb,
                      uint64_t *rng) {
  const int n = T - npad;
  int c = 0;
  for (int32_t pos = 0; c < n; pos++)
    if (tu_rand_uniform(rng) < 0.6) idx[c++] = pos;
  if (hash) {
    for (int i = 0; i < n; i++) hash[i] = (int32_t)(tu_rand_u64(rng) % (uint64_t)nb);
    for (int i = 1; i < n; i++) /* insertion sort by (hash, idx) */
      for (int j = i; j > 0 && (hash[j - 1] > hash[j] ||
                                (hash[j - 1] == hash[j] && idx[j - 1] > idx[j]));
           j--) {
        int32_t t = hash[j]; hash[j] = hash[j - 1]; hash[j - 1] = t;
        t = idx[j]; idx[j] = idx[j - 1]; idx[j - 1] = t;
      }
  }
  for (int i = n; i < T; i++) {
    idx[i] = idx_pad;
    if (hash) hash[i] = INT32_MAX;
  }
}

/* Index arrays for qk_drop (nb = 0) or hash (nb buckets): query rows with 0,
** 1 or 2 padding entries, the last query row all padding; key rows with 0 or
** 2 padding entries. */
static void make_indices(prob *P, int nb, uint64_t seed) {
  uint64_t rng = seed;
  const size_t nqr = (size_t)P->B * P->Hq, nkr = (size_t)P->B * P->Hkv;
  P->qi = malloc(nqr * P->Tq * sizeof *P->qi), P->ki = malloc(nkr * P->Tk * sizeof *P->ki);
  if (nb) {
    P->qh = malloc(nqr * P->Tq * sizeof *P->qh), P->kh = malloc(nkr * P->Tk * sizeof *P->kh);
  }
  for (size_t r = 0; r < nqr; r++)
    index_row(P->qi + r * P->Tq, nb ? P->qh + r * P->Tq : NULL, P->Tq,
              r == nqr - 1 ? P->Tq : (int)(r % 3), -1, nb, &rng);
  for (size_t r = 0; r < nkr; r++)
    index_row(P->ki + r * P->Tk, nb ? P->kh + r * P->Tk : NULL, P->Tk, r % 2 ? 2 : 0,
              INT32_MAX, nb, &rng);
  P->ex.q_idx = P->qi, P->ex.k_idx = P->ki, P->ex.q_hash = P->qh, P->ex.k_hash = P->kh;
  P->has_ex = 1;
}

/* ------------------------------------------------------------ finite differences */

START_TEST(fd_dense) {
  /* B Hq Hkv Tq Tk D causal: GQA and MQA, Tq < Tk and Tq > Tk (causal rows
  ** i < Tq - Tk empty), one explicit scale. */
  const int cases[][7] = {
    {2, 4, 2, 5, 7, 8, 0}, {2, 4, 2, 5, 7, 8, 1}, {1, 3, 1, 7, 4, 8, 1},
    {1, 3, 1, 6, 9, 4, 0}, {2, 2, 2, 6, 6, 8, 1},
  };
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    const int *a = cases[c];
    char name[64];
    snprintf(name, sizeof name, "dense case %zu", c);
    prob P;
    prob_init(&P, name, params(SFA_MODE_DENSE, a[6], -1, -1), a[0], a[1], a[2], a[3], a[4], a[5],
              100 + 10 * c);
    if (c == 3) P.p.scale = 0.7f;
    check_all(&P);
    prob_free(&P);
  }
}
END_TEST

START_TEST(fd_qk_drop) {
  const int cases[][6] = {{2, 4, 2, 6, 7, 8}, {1, 3, 1, 7, 5, 8}};
  for (size_t c = 0; c < 2; c++) {
    const int *a = cases[c];
    prob P;
    prob_init(&P, c ? "qk_drop MQA" : "qk_drop GQA", params(SFA_MODE_QK_DROP, 0, -1, -1), a[0],
              a[1], a[2], a[3], a[4], a[5], 200 + 10 * c);
    make_indices(&P, 0, 300 + c);
    check_all(&P);
    prob_free(&P);
  }
}
END_TEST

START_TEST(fd_hash) {
  const int cases[][6] = {{2, 4, 2, 7, 8, 8}, {1, 3, 1, 8, 6, 8}};
  for (size_t c = 0; c < 2; c++) {
    const int *a = cases[c];
    prob P;
    prob_init(&P, c ? "hash MQA" : "hash GQA", params(SFA_MODE_HASH, 0, -1, -1), a[0], a[1],
              a[2], a[3], a[4], a[5], 400 + 10 * c);
    make_indices(&P, 2, 500 + c);
    check_all(&P);
    prob_free(&P);
  }
}
END_TEST

/* The score options of issue 19: softcap (the gradient through c tanh(s / c),
** with scores large enough that tanh bends), ALiBi slopes per head and per
** (batch, head) with a bias on top (the slopes get no gradient), and strict
** causality in qk_drop and hash. */
START_TEST(fd_score_options) {
  for (int c = 0; c < 6; c++) {
    static const char *const names[6] = {"dense causal softcap", "window softcap bias",
                                         "dense alibi [Hq]", "window causal alibi [B, Hq] "
                                         "softcap", "qk_drop strict softcap", "hash strict"};
    prob P;
    const sfa_mode mode = c == 4 ? SFA_MODE_QK_DROP : c == 5 ? SFA_MODE_HASH
                          : c % 2 ? SFA_MODE_WINDOW : SFA_MODE_DENSE;
    prob_init(&P, names[c], params(mode, c == 0 || c == 3, c == 1 ? 3 : -1, -1), 2, 4, 2, 6, 7,
              8, 700 + 10 * c);
    float slopes[8] = {0.5f, 0.25f, 0.125f, 0.0625f, 0.3f, 0.05f, 0.2f, 0.7f};
    if (c == 0 || c == 1 || c == 3 || c == 4) P.p.softcap = c == 3 ? 0.5f : 0.6f, P.p.scale = 1.0f;
    if (c == 2 || c == 3) {
      P.ex.alibi_slopes = slopes, P.ex.alibi_batches = c == 2 ? 1 : 2;
      P.has_ex = 1;
    }
    if (c == 1) {
      P.nbias = (size_t)2 * 4 * 6 * 7;
      P.bias = randn(P.nbias, 790, 1.0);
      P.ex.bias = P.bias, P.ex.bias_heads = 4, P.ex.bias_rows = 6;
      P.has_ex = 1;
    }
    if (c >= 4) {
      P.p.strict_causal = 1;
      make_indices(&P, c == 5 ? 2 : 0, 800 + c);
    }
    check_all(&P);
    prob_free(&P);
  }
}
END_TEST

START_TEST(fd_window) {
  /* B Hq Hkv Tq Tk D left right causal */
  const int cases[][9] = {
    {2, 4, 2, 5, 7, 8, 2, 1, 0},  {2, 4, 2, 7, 5, 8, 1, -1, 1}, {1, 3, 1, 6, 6, 8, -1, 0, 0},
    {1, 4, 2, 6, 8, 8, 0, 2, 0},  {1, 3, 1, 5, 8, 8, 3, 7, 1},
  };
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    const int *a = cases[c];
    char name[64];
    snprintf(name, sizeof name, "window case %zu", c);
    prob P;
    prob_init(&P, name, params(SFA_MODE_WINDOW, a[8], a[6], a[7]), a[0], a[1], a[2], a[3], a[4],
              a[5], 600 + 10 * c);
    check_all(&P);
    prob_free(&P);
  }
}
END_TEST

/* Window mode, Hq = 4, Hkv = 2, Tq = 4, Tk = 6, with a bias of batches x heads
** x rows and, when mask_heads is not 0, a mask of [1, mask_heads, Tq, Tk]. */
static void bias_problem(prob *P, const char *name, int B, int batches, int heads, int rows,
                         int mask_heads, sfa_attention_params p, uint64_t seed) {
  enum { Hq = 4, Hkv = 2, Tq = 4, Tk = 6, D = 8 };
  prob_init(P, name, p, B, Hq, Hkv, Tq, Tk, D, seed);
  P->nbias = (size_t)batches * heads * rows * Tk;
  P->bias = randn(P->nbias, seed + 7, 1.0);
  P->ex.bias = P->bias;
  P->ex.bias_batches = batches, P->ex.bias_heads = heads, P->ex.bias_rows = rows;
  if (mask_heads) {
    size_t nm = (size_t)mask_heads * Tq * Tk;
    uint64_t rng = seed + 8;
    P->mask = malloc(nm);
    for (size_t i = 0; i < nm; i++) P->mask[i] = tu_rand_uniform(&rng) < 0.7 ? 1 : 0;
    P->ex.mask = P->mask;
    P->ex.mask_batches = 1, P->ex.mask_heads = mask_heads, P->ex.mask_rows = Tq;
  }
  P->has_ex = 1;
}

START_TEST(fd_bias_broadcast) {
  /* Every broadcast shape: batches B/1, heads Hq/Hkv/1, rows Tq/1; a mask on
  ** every other shape; windows and causal vary. */
  const int B = 2, Hq = 4, Hkv = 2, Tq = 4;
  const int batches[2] = {B, 1}, heads[3] = {Hq, Hkv, 1}, rows[2] = {Tq, 1};
  int n = 0;
  for (int bi = 0; bi < 2; bi++)
    for (int hi = 0; hi < 3; hi++)
      for (int ri = 0; ri < 2; ri++, n++) {
        char name[96];
        snprintf(name, sizeof name, "bias batches %d heads %d rows %d%s", batches[bi], heads[hi],
                 rows[ri], n % 2 ? " + mask" : "");
        sfa_attention_params p = n % 3 == 0   ? params(SFA_MODE_WINDOW, 0, -1, -1)
                                 : n % 3 == 1 ? params(SFA_MODE_WINDOW, 1, 3, -1)
                                              : params(SFA_MODE_WINDOW, 0, 2, 1);
        prob P;
        bias_problem(&P, name, B, batches[bi], heads[hi], rows[ri], n % 2 ? Hkv : 0, p,
                     700 + 10 * (uint64_t)n);
        if (n == 4) P.bias[3] = -INFINITY; /* masks one key; the rest of its row is finite */
        check_all(&P);
        prob_free(&P);
      }
}
END_TEST

/* ------------------------------------------------------------ empty rows */

/* The rows of P (query rows (b, h, i), index b*Hq*Tq + h*Tq + i) listed in
** empty[] see no key: their dq is +0, and their dout can be anything without
** changing dk, dv or dbias by a single bit. */
static void expect_empty_rows(prob *P, const int *empty, int nempty) {
  backward(P);
  const int D = P->D;
  for (int e = 0; e < nempty; e++)
    for (int x = 0; x < D; x++) {
      float g = P->dq[(size_t)empty[e] * D + x];
      ck_assert_msg(g == 0.0f && !signbit(g), "%s: dq row %d col %d = %g", P->name, empty[e], x,
                    g);
    }
  const size_t nb = P->nbias;
  float *dk = malloc(P->nk * sizeof *dk), *dv = malloc(P->nk * sizeof *dv);
  float *db = malloc((nb ? nb : 1) * sizeof *db);
  memcpy(dk, P->dk, P->nk * sizeof *dk);
  memcpy(dv, P->dv, P->nk * sizeof *dv);
  if (nb) memcpy(db, P->dbias, nb * sizeof *db);
  uint64_t rng = 5;
  for (int e = 0; e < nempty; e++)
    for (int x = 0; x < D; x++)
      P->dout[(size_t)empty[e] * D + x] = (float)(1e3 * tu_rand_normal(&rng));
  backward(P);
  ck_assert_msg(memcmp(dk, P->dk, P->nk * sizeof *dk) == 0, "%s: empty rows changed dk", P->name);
  ck_assert_msg(memcmp(dv, P->dv, P->nk * sizeof *dv) == 0, "%s: empty rows changed dv", P->name);
  if (nb)
    ck_assert_msg(memcmp(db, P->dbias, nb * sizeof *db) == 0, "%s: empty rows changed dbias",
                  P->name);
  /* ... while the same change on a row that sees keys does change dk. */
  for (int x = 0; x < D; x++) P->dout[(size_t)(P->B * P->Hq * P->Tq - 1) * D + x] += 1.0f;
  backward(P);
  ck_assert_msg(memcmp(dk, P->dk, P->nk * sizeof *dk) != 0, "%s: the last row is not live",
                P->name);
  free(dk), free(dv), free(db);
}

START_TEST(empty_rows_contribute_nothing) {
  /* Dense causal, Tq = 7 > Tk = 4: rows 0-2 of every head see nothing. */
  prob P;
  prob_init(&P, "dense causal Tq > Tk", params(SFA_MODE_DENSE, 1, -1, -1), 1, 2, 1, 7, 4, 8, 900);
  const int dense_empty[] = {0, 1, 2, 7, 8, 9};
  expect_empty_rows(&P, dense_empty, 6);
  prob_free(&P);

  /* qk_drop: q_idx -1 rows (padding) and a row that precedes every key. */
  prob_init(&P, "qk_drop padding", params(SFA_MODE_QK_DROP, 0, -1, -1), 1, 2, 2, 4, 3, 8, 910);
  static const int32_t qi[2 * 4] = {0, 3, -1, -1, 2, 5, 6, 9};
  static const int32_t ki[2 * 3] = {1, 2, INT32_MAX, 0, 4, INT32_MAX};
  P.ex.q_idx = qi, P.ex.k_idx = ki, P.has_ex = 1;
  const int qk_empty[] = {0, 2, 3};
  expect_empty_rows(&P, qk_empty, 3);
  prob_free(&P);

  /* Window with a per-row bias and mask: row 1 is all masked, row 2 has a
  ** bias of -inf on every key; the other rows see keys. */
  bias_problem(&P, "window masked rows", 1, 1, 4, 4, 0, params(SFA_MODE_WINDOW, 0, -1, -1),
               920);
  static uint8_t mask[4 * 6];
  for (int j = 0; j < 24; j++) mask[j] = j / 6 != 1;
  P.ex.mask = mask, P.ex.mask_batches = 0, P.ex.mask_heads = 1, P.ex.mask_rows = 4;
  for (int h = 0; h < 4; h++)
    for (int j = 0; j < 6; j++) P.bias[(h * 4 + 2) * 6 + j] = -INFINITY;
  const int win_empty[] = {1, 2, 5, 6, 9, 10, 13, 14};
  expect_empty_rows(&P, win_empty, 8);
  /* dbias of an empty row is 0 (per-row bias: nothing else lands there). */
  for (int h = 0; h < 4; h++)
    for (int i = 1; i <= 2; i++)
      for (int j = 0; j < 6; j++)
        ck_assert(P.dbias[(h * 4 + i) * 6 + j] == 0.0f);
  prob_free(&P);
}
END_TEST

/* ------------------------------------------------------------ broadcast */

/* A [batches, heads, rows, Tk] array expanded to [B, Hq, Tq, Tk]. */
static float *expand(const float *x, int batches, int heads, int rows, int B, int Hq, int Hkv,
                     int Tq, int Tk) {
  float *y = malloc((size_t)B * Hq * Tq * Tk * sizeof *y);
  for (int b = 0; b < B; b++)
    for (int h = 0; h < Hq; h++)
      for (int i = 0; i < Tq; i++) {
        int hb = heads == Hq ? h : heads == 1 ? 0 : h / (Hq / Hkv);
        const float *src =
            x + (((size_t)(batches == 1 ? 0 : b) * heads + hb) * rows + (rows == 1 ? 0 : i)) * Tk;
        memcpy(y + (((size_t)b * Hq + h) * Tq + i) * Tk, src, (size_t)Tk * sizeof *y);
      }
  return y;
}

START_TEST(dbias_is_reduction_of_full) {
  /* A broadcast bias and its expansion to [B, Hq, Tq, Tk] give the same
  ** forward, so the same dq, dk, dv; the broadcast dbias is the full one summed
  ** over the broadcast dims. */
  enum { B = 2, Hq = 4, Hkv = 2, Tq = 4, Tk = 6 };
  const int batches[2] = {B, 1}, heads[3] = {Hq, Hkv, 1}, rows[2] = {Tq, 1};
  for (int bi = 0; bi < 2; bi++)
    for (int hi = 0; hi < 3; hi++)
      for (int ri = 0; ri < 2; ri++) {
        prob P, F;
        sfa_attention_params p = params(SFA_MODE_WINDOW, 1, 2, -1);
        bias_problem(&P, "broadcast", B, batches[bi], heads[hi], rows[ri], Hkv, p, 1000);
        bias_problem(&F, "full", B, B, Hq, Tq, Hkv, p, 1000);
        free(F.bias);
        F.bias = expand(P.bias, batches[bi], heads[hi], rows[ri], B, Hq, Hkv, Tq, Tk);
        F.ex.bias = F.bias;
        backward(&P);
        backward(&F);
        ck_assert(memcmp(P.dq, F.dq, P.nq * sizeof(float)) == 0);
        ck_assert(memcmp(P.dk, F.dk, P.nk * sizeof(float)) == 0);
        ck_assert(memcmp(P.dv, F.dv, P.nk * sizeof(float)) == 0);
        double *sum = calloc(P.nbias, sizeof *sum);
        for (int b = 0; b < B; b++)
          for (int h = 0; h < Hq; h++)
            for (int i = 0; i < Tq; i++) {
              int hb = heads[hi] == Hq ? h : heads[hi] == 1 ? 0 : h / (Hq / Hkv);
              size_t at = (((size_t)(batches[bi] == 1 ? 0 : b) * heads[hi] + hb) * rows[ri] +
                           (rows[ri] == 1 ? 0 : i)) * Tk;
              for (int j = 0; j < Tk; j++)
                sum[at + j] += F.dbias[(((size_t)b * Hq + h) * Tq + i) * Tk + j];
            }
        for (size_t e = 0; e < P.nbias; e++)
          ck_assert_msg(fabs(P.dbias[e] - sum[e]) <= 1e-6 + 1e-6 * fabs(sum[e]),
                        "batches %d heads %d rows %d: dbias[%zu] = %.9g, sum %.9g", batches[bi],
                        heads[hi], rows[ri], e, P.dbias[e], sum[e]);
        free(sum);
        prob_free(&P);
        prob_free(&F);
      }
}
END_TEST

START_TEST(forward_batch_broadcast) {
  /* bias_batches = 1 and mask_batches = 1 read batch 0 for every b: the same
  ** output, bit for bit, as the arrays copied B times with batches 0 (= B). */
  enum { B = 3, Hq = 2, Tq = 5, Tk = 6, D = 8 };
  float *q = randn((size_t)B * Hq * Tq * D, 1100, 0.5), *k = randn((size_t)B * Hq * Tk * D, 1101, 0.5);
  float *v = randn((size_t)B * Hq * Tk * D, 1102, 1), *bias = randn((size_t)Hq * Tk, 1103, 1);
  uint8_t mask[Tq * Tk];
  uint64_t rng = 1104;
  for (int i = 0; i < Tq * Tk; i++) mask[i] = tu_rand_uniform(&rng) < 0.7;
  float bias3[B * Hq * Tk];
  uint8_t mask3[B * Tq * Tk];
  for (int b = 0; b < B; b++) {
    memcpy(bias3 + b * Hq * Tk, bias, sizeof(float) * Hq * Tk);
    memcpy(mask3 + b * Tq * Tk, mask, sizeof mask);
  }
  float o1[B * Hq * Tq * D], o2[B * Hq * Tq * D], l1[B * Hq * Tq], l2[B * Hq * Tq];
  sfa_attention_params p = params(SFA_MODE_WINDOW, 0, 2, 2);
  sfa_host_extras one = {.bias = bias, .bias_batches = 1, .bias_heads = Hq, .bias_rows = 1,
                         .mask = mask, .mask_batches = 1, .mask_heads = 1, .mask_rows = Tq};
  sfa_host_extras all = {.bias = bias3, .bias_batches = 0, .bias_heads = Hq, .bias_rows = 1,
                         .mask = mask3, .mask_batches = B, .mask_heads = 1, .mask_rows = Tq};
  char err[256] = "";
  ck_assert_msg(sfa_reference_forward(&p, B, Hq, Hq, Tq, Tk, D, q, k, v, &one, o1, l1, err,
                                      sizeof err) == SFA_OK, "%s", err);
  ck_assert_msg(sfa_reference_forward(&p, B, Hq, Hq, Tq, Tk, D, q, k, v, &all, o2, l2, err,
                                      sizeof err) == SFA_OK, "%s", err);
  ck_assert(memcmp(o1, o2, sizeof o1) == 0 && memcmp(l1, l2, sizeof l1) == 0);
  /* ... and batch 1 differs from batch 0 when batch 1 of the copies does. */
  for (int j = 0; j < Hq * Tk; j++) bias3[Hq * Tk + j] += 1.0f + (float)j;
  ck_assert(sfa_reference_forward(&p, B, Hq, Hq, Tq, Tk, D, q, k, v, &all, o2, l2, err,
                                  sizeof err) == SFA_OK);
  ck_assert(memcmp(o1, o2, (size_t)Hq * Tq * D * sizeof(float)) == 0); /* batch 0 */
  ck_assert(memcmp(o1 + Hq * Tq * D, o2 + Hq * Tq * D, (size_t)Hq * Tq * D * sizeof(float)) != 0);
  /* The forward64 agrees with the float forward to float rounding. */
  double o64[B * Hq * Tq * D], l64[B * Hq * Tq];
  ck_assert(sfa__reference_forward64(&p, B, Hq, Hq, Tq, Tk, D, q, k, v, &one, o64, l64, err,
                                     sizeof err) == SFA_OK);
  for (int i = 0; i < B * Hq * Tq * D; i++) ck_assert(o1[i] == (float)o64[i]);
  for (int i = 0; i < B * Hq * Tq; i++) ck_assert(l1[i] == (float)l64[i]);
  free(q), free(k), free(v), free(bias);
}
END_TEST

/* ------------------------------------------------------------ errors */

static void expect_bwd_error(const char *want, const sfa_attention_params *p, int B, int Hq,
                             int Hkv, const float *q, const sfa_host_extras *ex,
                             const float *dout, float *dq, float *dk, float *dv, float *dbias) {
  char err[256] = "";
  sfa_status st = sfa_reference_backward(p, B, Hq, Hkv, 3, 3, 4, q, q, q, ex, dout, dq, dk, dv,
                                         dbias, err, sizeof err);
  ck_assert_msg(st == SFA_ERR_INVALID_ARGUMENT, "status %d (%s), want invalid argument", st, err);
  ck_assert_msg(strcmp(err, want) == 0, "message '%s', want '%s'", err, want);
}

START_TEST(argument_errors) {
  float x[256] = {0}, g[256];
  uint8_t m[64] = {0};
  sfa_attention_params p = params(SFA_MODE_DENSE, 0, -1, -1);
  expect_bwd_error("params: is NULL", NULL, 1, 1, 1, x, NULL, x, g, g, g, NULL);
  expect_bwd_error("q: is NULL", &p, 1, 1, 1, NULL, NULL, x, g, g, g, NULL);
  expect_bwd_error("dout: is NULL", &p, 1, 1, 1, x, NULL, NULL, g, g, g, NULL);
  expect_bwd_error("dq: is NULL", &p, 1, 1, 1, x, NULL, x, NULL, g, g, NULL);
  expect_bwd_error("dk: is NULL", &p, 1, 1, 1, x, NULL, x, g, NULL, g, NULL);
  expect_bwd_error("dv: is NULL", &p, 1, 1, 1, x, NULL, x, g, g, NULL, NULL);
  expect_bwd_error("Hq: 0; must be >= 1", &p, 1, 0, 1, x, NULL, x, g, g, g, NULL);
  expect_bwd_error("Hkv: 2 does not divide Hq (3)", &p, 1, 3, 2, x, NULL, x, g, g, g, NULL);
  const char *nobias = "dbias: is not NULL but ex->bias is NULL (dbias is the gradient of a "
                       "window-mode bias)";
  expect_bwd_error(nobias, &p, 1, 1, 1, x, NULL, x, g, g, g, g);
  p = params(SFA_MODE_WINDOW, 0, -1, -1);
  sfa_host_extras ex = {.mask = m, .mask_heads = 1, .mask_rows = 1};
  expect_bwd_error(nobias, &p, 1, 1, 1, x, &ex, x, g, g, g, g);
  /* bias_batches and mask_batches: 0, 1 or B; in both passes. */
  sfa_host_extras bex = {.bias = x, .bias_batches = 3, .bias_heads = 1, .bias_rows = 1};
  const char *badb = "ex->bias_batches: 3; must be B (2) or 1 (0 means B)";
  expect_bwd_error(badb, &p, 2, 1, 1, x, &bex, x, g, g, g, g);
  bex.bias_batches = -1;
  expect_bwd_error("ex->bias_batches: -1; must be B (2) or 1 (0 means B)", &p, 2, 1, 1, x, &bex,
                   x, g, g, g, NULL);
  bex.bias_batches = 3;
  char err[256] = "";
  ck_assert_int_eq(sfa_reference_forward(&p, 2, 1, 1, 3, 3, 4, x, x, x, &bex, g, NULL, err,
                                         sizeof err), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_str_eq(err, badb);
  sfa_host_extras mex = {.mask = m, .mask_batches = 2, .mask_heads = 1, .mask_rows = 1};
  ck_assert_int_eq(sfa_reference_forward(&p, 3, 1, 1, 3, 3, 4, x, x, x, &mex, g, NULL, err,
                                         sizeof err), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_str_eq(err, "ex->mask_batches: 2; must be B (3) or 1 (0 means B)");
  /* The forward's output is still named o. */
  ck_assert_int_eq(sfa_reference_forward(&p, 1, 1, 1, 3, 3, 4, x, x, x, NULL, NULL, NULL, err,
                                         sizeof err), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_str_eq(err, "o: is NULL");
  /* Valid batches pass; err may be NULL on failure. */
  bex.bias_batches = 1;
  ck_assert_int_eq(sfa_reference_backward(&p, 2, 1, 1, 3, 3, 4, x, x, x, &bex, x, g, g, g, g,
                                          NULL, 0), SFA_OK);
  ck_assert_int_eq(sfa_reference_backward(&p, 2, 1, 1, 3, 3, 4, x, x, x, &bex, NULL, g, g, g, g,
                                          NULL, 0), SFA_ERR_INVALID_ARGUMENT);
}
END_TEST

/* Thread count never changes a result: forward and backward on 1 and on 5
** threads are bitwise equal, for bias broadcasts that split by (batch, kv
** head) and ones that keep the backward to one thread. */
START_TEST(threads_give_identical_results) {
  const int shapes[][3] = {{3, 4, 4}, {3, 2, 1}, {1, 4, 4}, {3, 1, 4}, {3, 2, 4}};
  for (size_t c = 0; c < sizeof shapes / sizeof shapes[0]; c++) {
    /* Big enough (B*Hq*Tq*Tk*D = 3*4*200*200*64) for the reference to use threads. */
    enum { B = 3, Hq = 4, Hkv = 2, T = 200, D = 64 };
    prob P;
    const int batches = shapes[c][0], heads = shapes[c][1], rows = shapes[c][2] == 4 ? T : 1;
    prob_init(&P, "threads", params(SFA_MODE_WINDOW, 1, 50, -1), B, Hq, Hkv, T, T, D, 900 + c);
    P.nbias = (size_t)batches * heads * rows * T;
    P.bias = randn(P.nbias, 950 + c, 1.0);
    P.ex.bias = P.bias;
    P.ex.bias_batches = batches, P.ex.bias_heads = heads, P.ex.bias_rows = rows;
    P.has_ex = 1;
    float *got[2][4], *fo[2], *fl[2];
    for (int run = 0; run < 2; run++) {
      setenv("SFA_REF_THREADS", run ? "5" : "1", 1);
      backward(&P);
      got[run][0] = P.dq, got[run][1] = P.dk, got[run][2] = P.dv, got[run][3] = P.dbias;
      P.dq = P.dk = P.dv = P.dbias = NULL;
      fo[run] = malloc(P.nq * sizeof(float));
      fl[run] = malloc((size_t)P.B * P.Hq * P.Tq * sizeof(float));
      char err[256];
      ck_assert_int_eq(sfa_reference_forward(&P.p, P.B, P.Hq, P.Hkv, P.Tq, P.Tk, P.D, P.q, P.k,
                                             P.v, prob_ex(&P), fo[run], fl[run], err, sizeof err),
                       SFA_OK);
    }
    unsetenv("SFA_REF_THREADS");
    const size_t n[4] = {P.nq, P.nk, P.nk, P.nbias};
    for (int i = 0; i < 4; i++) {
      ck_assert_msg(memcmp(got[0][i], got[1][i], n[i] * sizeof(float)) == 0,
                    "bias %dx%dx%d: gradient %d differs between 1 and 5 threads", shapes[c][0],
                    shapes[c][1], shapes[c][2], i);
      free(got[0][i]), free(got[1][i]);
    }
    ck_assert(memcmp(fo[0], fo[1], P.nq * sizeof(float)) == 0);
    ck_assert(memcmp(fl[0], fl[1], (size_t)P.B * P.Hq * P.Tq * sizeof(float)) == 0);
    free(fo[0]), free(fo[1]), free(fl[0]), free(fl[1]);
    prob_free(&P);
  }
}
END_TEST

int main(void) {
  Suite *s = suite_create("reference_bwd");
  TCase *t = tcase_create("reference_bwd");
  tcase_add_test(t, fd_dense);
  tcase_add_test(t, fd_qk_drop);
  tcase_add_test(t, fd_hash);
  tcase_add_test(t, fd_window);
  tcase_add_test(t, fd_score_options);
  tcase_add_test(t, fd_bias_broadcast);
  tcase_add_test(t, empty_rows_contribute_nothing);
  tcase_add_test(t, dbias_is_reduction_of_full);
  tcase_add_test(t, forward_batch_broadcast);
  tcase_add_test(t, argument_errors);
  tcase_add_test(t, threads_give_identical_results);
  suite_add_tcase(s, t);
  return tu_run_suite(s);
}
