/*
** test_merge.c -- sfa_merge_attention without a GPU: every kind of bad
** argument is rejected with a message that names it, before the driver is
** loaded (on a machine without one, valid calls then fail with
** SFA_ERR_NO_DRIVER); and the float64 reference sfa_reference_merge, the
** ground truth of the GPU suite: merging sfa_reference_forward over a split
** of the keys gives sfa_reference_forward over all of them (dense and
** causal, with rows that see no key in a part or in all), N = 1 is the
** identity, parts with lse -inf weigh 0 and are not read, NaN propagates;
** and sfa_reference_backward_dlse's lse gradient (which merging needs).
** (The merge kernel's compile is in test_util_compile.c.)
*/
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sfa.h"
#include "testutil.h"

/* ------------------------------------------------------------ argument validation */

static sfa_context *ctx;

static void setup(void) {
  sfa_options o;
  sfa_options_init(&o);
  o.cache_dir = "/nonexistent/sfa-merge-test"; /* never used: nothing gets compiled */
  ck_assert_int_eq(sfa_context_create(&ctx, &o), SFA_OK);
}

static void teardown(void) {
  sfa_context_destroy(ctx);
  ctx = NULL;
}

/* Fake, well-aligned and far-apart device addresses. */
#define ADDR(i) ((void *)(uintptr_t)(0x10000000ull * (uint64_t)(i + 1)))

static void t3(sfa_tensor *t, int i, sfa_dtype d, int64_t B, int64_t H, int64_t T) {
  int64_t s[3] = {B, H, T};
  sfa_tensor_init(t, ADDR(i), d, 3, s);
}

static void t4(sfa_tensor *t, int i, sfa_dtype d, int64_t B, int64_t H, int64_t T, int64_t D) {
  int64_t s[4] = {B, H, T, D};
  sfa_tensor_init(t, ADDR(i), d, 4, s);
}

/* The status and that the message contains every given piece. */
static void expect_err(sfa_status got, sfa_status want, const char *a, const char *b) {
  const char *m = sfa_last_error(ctx);
  ck_assert_msg(got == want, "status %s (want %s): %s", sfa_status_string(got),
                sfa_status_string(want), m);
  ck_assert_msg(!a || strstr(m, a), "message \"%s\" lacks \"%s\"", m, a);
  ck_assert_msg(!b || strstr(m, b), "message \"%s\" lacks \"%s\"", m, b);
  ck_assert_msg(!tu_driver_loaded(), "the driver was loaded before validation finished");
}

/* 3 parts of B = 2, H = 4, T = 50, D = 64 */
typedef struct margs { sfa_tensor op, lp, o, lse; } margs;

static void margs_init(margs *m) {
  t4(&m->op, 0, SFA_DTYPE_FP32, 3 * 2, 4, 50, 64);
  t3(&m->lp, 1, SFA_DTYPE_FP32, 3 * 2, 4, 50);
  t4(&m->o, 2, SFA_DTYPE_BF16, 2, 4, 50, 64);
  t3(&m->lse, 3, SFA_DTYPE_FP32, 2, 4, 50);
}

static sfa_status call(margs *m) { return sfa_merge_attention(ctx, &m->op, &m->lp, &m->o, &m->lse, NULL); }

START_TEST(merge_rejects_bad_arguments) {
  margs m;
  const sfa_status BAD = SFA_ERR_INVALID_ARGUMENT;
  margs_init(&m);
  ck_assert_int_eq(sfa_merge_attention(NULL, &m.op, &m.lp, &m.o, &m.lse, NULL), BAD);
  expect_err(sfa_merge_attention(ctx, NULL, &m.lp, &m.o, &m.lse, NULL), BAD, "o_parts: is NULL", NULL);
  expect_err(sfa_merge_attention(ctx, &m.op, NULL, &m.o, &m.lse, NULL), BAD, "lse_parts: is NULL", NULL);
  expect_err(sfa_merge_attention(ctx, &m.op, &m.lp, NULL, &m.lse, NULL), BAD, "o: is NULL", NULL);
#define RESET() margs_init(&m)
  RESET(), m.op.dtype = SFA_DTYPE_INT32;
  expect_err(call(&m), BAD, "o_parts: dtype int32", "fp16, bf16 or fp32");
  RESET(), m.o.dtype = SFA_DTYPE_UINT8;
  expect_err(call(&m), BAD, "o: dtype uint8", "fp16, bf16 or fp32");
  RESET(), m.lp.dtype = SFA_DTYPE_BF16;
  expect_err(call(&m), BAD, "lse_parts: dtype bf16", "fp32");
  RESET(), m.lse.dtype = SFA_DTYPE_FP16;
  expect_err(call(&m), BAD, "lse: dtype fp16", "fp32");
  RESET(), m.op.rank = 3;
  expect_err(call(&m), BAD, "o_parts.rank: 3", "[N * B, H, T, D]");
  RESET(), m.lp.rank = 4;
  expect_err(call(&m), BAD, "lse_parts.rank: 4", "[N * B, H, T]");
  RESET(), m.op.shape[0] = 0;
  expect_err(call(&m), BAD, "o_parts: shape[0] is 0", NULL);
  RESET(), m.op.shape[0] = 5, m.lp.shape[0] = 5;
  expect_err(call(&m), BAD, "o_parts: shape [5, 4, 50, 64]", "multiple of o's batch B = 2");
  RESET(), m.op.shape[2] = 49;
  expect_err(call(&m), BAD, "o_parts: shape [6, 4, 49, 64] does not match o [2, 4, 50, 64]", NULL);
  RESET(), m.op.shape[3] = 32;
  expect_err(call(&m), BAD, "o_parts: shape [6, 4, 50, 32] does not match o", NULL);
  RESET(), m.lp.shape[1] = 3;
  expect_err(call(&m), BAD, "lse_parts: shape [6, 3, 50]", "o_parts");
  RESET(), t3(&m.lse, 3, SFA_DTYPE_FP32, 2, 4, 51);
  expect_err(call(&m), BAD, "lse: shape [2, 4, 51]", "B, H and T");
  RESET(), m.op.strides[3] = 2;
  expect_err(call(&m), BAD, "o_parts: stride[3] is 2", "contiguous");
  RESET(), m.lp.strides[1] = -50;
  expect_err(call(&m), BAD, "lse_parts: stride[1] is -50", ">= 0");
  RESET(), m.o.strides[1] = 0;
  expect_err(call(&m), BAD, "o: its strides", "overlap");
  RESET(), m.o.data = (char *)m.o.data + 1;
  expect_err(call(&m), BAD, "o: data", "aligned");
  RESET(), t4(&m.op, 0, SFA_DTYPE_FP32, 6, 4, 50, 264), t4(&m.o, 2, SFA_DTYPE_BF16, 2, 4, 50, 264);
  expect_err(call(&m), BAD, "o: D = 264", "at most 256");
  RESET(), m.op.shape[2] = m.lp.shape[2] = m.o.shape[2] = m.lse.shape[2] = ((int64_t)1 << 30) + 1;
  m.op.strides[1] = m.op.shape[2] * 64, m.op.strides[0] = 4 * m.op.strides[1];
  m.o.strides[1] = m.o.shape[2] * 64, m.o.strides[0] = 4 * m.o.strides[1];
  m.lp.strides[1] = m.lp.shape[2], m.lp.strides[0] = 4 * m.lp.strides[1];
  m.lse.strides[1] = m.lse.shape[2], m.lse.strides[0] = 4 * m.lse.strides[1];
  expect_err(call(&m), BAD, "o: T = 1073741825", "2^30");
  /* outputs overlapping inputs or each other */
  RESET(), m.o.data = (char *)m.op.data + 4096;
  expect_err(call(&m), BAD, "o: its memory overlaps o_parts", NULL);
  RESET(), m.o.data = m.lp.data;
  expect_err(call(&m), BAD, "o: its memory overlaps lse_parts", NULL);
  RESET(), m.lse.data = (char *)m.op.data + 64;
  expect_err(call(&m), BAD, "lse: its memory overlaps o_parts", NULL);
  RESET(), m.lse.data = m.lp.data;
  expect_err(call(&m), BAD, "lse: its memory overlaps lse_parts", NULL);
  RESET(), m.lse.data = (char *)m.o.data + 256;
  expect_err(call(&m), BAD, "lse: its memory overlaps o", NULL);
#undef RESET
}
END_TEST

START_TEST(valid_merges_reach_the_driver) {
  /* On a machine without a driver, valid calls fail with NO_DRIVER (on one
  ** with a driver they would launch on fake pointers: not done there). */
  if (tu_driver_present()) return;
  margs m;
  margs_init(&m);
  expect_err(call(&m), SFA_ERR_NO_DRIVER, "libcuda", NULL);
  /* lse NULL; N = 1; fp16 parts into fp32; a [B, T, H, D] layout; odd D */
  margs_init(&m);
  expect_err(sfa_merge_attention(ctx, &m.op, &m.lp, &m.o, NULL, NULL), SFA_ERR_NO_DRIVER, NULL,
             NULL);
  t4(&m.op, 0, SFA_DTYPE_FP16, 2, 4, 50, 7);
  m.op.strides[1] = 7, m.op.strides[2] = 4 * 7;
  t3(&m.lp, 1, SFA_DTYPE_FP32, 2, 4, 50);
  t4(&m.o, 2, SFA_DTYPE_FP32, 2, 4, 50, 7);
  expect_err(call(&m), SFA_ERR_NO_DRIVER, NULL, NULL);
}
END_TEST

/* ------------------------------------------------------------ the reference */

static float *randv(size_t n, uint64_t *rng) {
  float *x = malloc(n * sizeof *x);
  ck_assert_ptr_nonnull(x);
  for (size_t i = 0; i < n; i++) x[i] = (float)tu_rand_normal(rng);
  return x;
}

/* x [B, H, T, D] -> keys [t0, t0 + n) as a contiguous [B, H, n, D] copy. */
static float *keys(const float *x, int BH, int T, int D, int t0, int n) {
  float *y = malloc((size_t)BH * n * D * sizeof *y);
  ck_assert_ptr_nonnull(y);
  for (int bh = 0; bh < BH; bh++)
    memcpy(y + (size_t)bh * n * D, x + ((size_t)bh * T + t0) * D, (size_t)n * D * sizeof *y);
  return y;
}

/* Attention over all Tk keys == merge of attention over [0, s) and [s, Tk),
** dense (bottom-right causal when causal: the first part then holds the
** keys every query sees, the second part none for the early queries). */
static void split_case(int causal, int Tq, int Tk, int s) {
  enum { B = 2, H = 3, D = 16 };
  uint64_t rng = 1234 + (uint64_t)Tk * 7 + (uint64_t)causal;
  const size_t nq = (size_t)B * H * Tq * D, nk = (size_t)B * H * Tk * D, rows = (size_t)B * H * Tq;
  float *q = randv(nq, &rng), *k = randv(nk, &rng), *v = randv(nk, &rng);
  float *o = malloc(nq * sizeof *o), *lse = malloc(rows * sizeof *lse);
  float *op = malloc(2 * nq * sizeof *op), *lp = malloc(2 * rows * sizeof *lp);
  float *om = malloc(nq * sizeof *om), *lm = malloc(rows * sizeof *lm);
  char err[256] = "";
  sfa_attention_params p;
  sfa_params_init(&p);
  p.causal = causal;
  ck_assert_msg(sfa_reference_forward(&p, B, H, H, Tq, Tk, D, q, k, v, NULL, o, lse, err,
                                      sizeof err) == SFA_OK, "%s", err);
  /* part 0: keys [0, s); part 1: keys [s, Tk). Causal over a part of the keys
  ** is a window: query i sees key j iff j <= i + Tk - Tq, i.e. in part 1's
  ** own index j' = j - s: j' <= i + (Tk - s) - Tq, bottom-right again; in
  ** part 0 every key j < s is seen iff j <= i + Tk - Tq, a window whose
  ** right edge is i + Tk - Tq, i.e. window_right = Tk - s relative to part
  ** 0's bottom-right diagonal i + s - Tq. */
  for (int part = 0; part < 2; part++) {
    const int t0 = part ? s : 0, n = part ? Tk - s : s;
    float *kp = keys(k, B * H, Tk, D, t0, n), *vp = keys(v, B * H, Tk, D, t0, n);
    sfa_attention_params pp;
    sfa_params_init(&pp);
    if (causal && part == 1) pp.causal = 1;
    if (causal && part == 0) {
      pp.mode = SFA_MODE_WINDOW;
      pp.window_right = Tk - s;
    }
    ck_assert_msg(sfa_reference_forward(&pp, B, H, H, Tq, n, D, q, kp, vp, NULL,
                                        op + part * nq, lp + part * rows, err,
                                        sizeof err) == SFA_OK, "%s", err);
    free(kp);
    free(vp);
  }
  ck_assert_msg(sfa_reference_merge(2, (int64_t)rows, D, op, lp, om, lm, err, sizeof err) ==
                SFA_OK, "%s", err);
  int empty = 0;
  for (size_t r = 0; r < rows; r++) {
    if (lse[r] == -INFINITY) {
      empty++;
      ck_assert_msg(lm[r] == -INFINITY, "row %zu: lse %g, want -inf", r, lm[r]);
    } else {
      ck_assert_msg(fabs(lm[r] - lse[r]) < 1e-5 * (1 + fabs(lse[r])), "row %zu: lse %.7g, want %.7g",
                    r, lm[r], lse[r]);
    }
    for (int c = 0; c < D; c++)
      ck_assert_msg(fabsf(om[r * D + c] - o[r * D + c]) < 1e-5f, "row %zu col %d: %g, want %g", r,
                    c, om[r * D + c], o[r * D + c]);
  }
  if (causal && Tq > Tk) ck_assert_int_eq(empty, B * H * (Tq - Tk));
  free(q), free(k), free(v), free(o), free(lse), free(op), free(lp), free(om), free(lm);
}

START_TEST(merge_of_a_key_split_is_the_whole_attention) {
  split_case(0, 37, 64, 32);
  split_case(0, 37, 64, 5);
  split_case(1, 64, 64, 32);  /* early queries see nothing of part 1 */
  split_case(1, 80, 48, 20);  /* the first 32 queries see no key at all */
}
END_TEST

START_TEST(reference_merge_rules) {
  enum { D = 3 };
  const float ninf = -INFINITY;
  char err[256] = "";
  /* rows: 0 finite; 1 one part -inf (its o holds NaN: not read); 2 all -inf;
  ** 3 a NaN lse; 4 a +inf lse */
  const float lp[2][5] = {{0.5f, ninf, ninf, NAN, INFINITY}, {-1.f, 2.f, ninf, 0.f, 0.f}};
  float op[2][5][D];
  for (int n = 0; n < 2; n++)
    for (int r = 0; r < 5; r++)
      for (int c = 0; c < D; c++) op[n][r][c] = (float)(n * 10 + r + c);
  for (int c = 0; c < D; c++) op[0][1][c] = NAN, op[0][2][c] = NAN, op[1][2][c] = NAN;
  float o[5][D], lse[5];
  ck_assert_int_eq(sfa_reference_merge(2, 5, D, &op[0][0][0], &lp[0][0], &o[0][0], lse, err,
                                       sizeof err), SFA_OK);
  const double l0 = log(exp(0.5) + exp(-1.0));
  ck_assert(fabs(lse[0] - l0) < 1e-6);
  for (int c = 0; c < D; c++) {
    const double w0 = exp(0.5 - l0), w1 = exp(-1.0 - l0);
    ck_assert(fabs(o[0][c] - (w0 * op[0][0][c] + w1 * op[1][0][c])) < 1e-5);
    ck_assert(o[1][c] == op[1][1][c]);    /* the -inf part weighs 0, its NaN unread */
    ck_assert(o[2][c] == 0.f && !signbit(o[2][c]));
    ck_assert(isnan(o[3][c]) && isnan(o[4][c]));
  }
  ck_assert(lse[1] == 2.f && lse[2] == ninf && isnan(lse[3]) && isnan(lse[4]));
  /* N = 1 is the identity (lse NULL allowed) */
  float o1[5][D];
  ck_assert_int_eq(sfa_reference_merge(1, 2, D, &op[1][0][0], &lp[1][0], &o1[0][0], NULL, err,
                                       sizeof err), SFA_OK);
  for (int r = 0; r < 2; r++)
    for (int c = 0; c < D; c++) ck_assert(o1[r][c] == op[1][r][c]);
  /* bad arguments name themselves */
  ck_assert_int_eq(sfa_reference_merge(0, 5, D, &op[0][0][0], &lp[0][0], &o[0][0], lse, err,
                                       sizeof err), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(err, "N: 0"), "%s", err);
  ck_assert_int_eq(sfa_reference_merge(2, 5, 0, &op[0][0][0], &lp[0][0], &o[0][0], lse, err,
                                       sizeof err), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(err, "D: 0"), "%s", err);
  ck_assert_int_eq(sfa_reference_merge(2, 5, D, &op[0][0][0], NULL, &o[0][0], lse, err,
                                       sizeof err), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(err, "lse_parts: is NULL"), "%s", err);
}
END_TEST

/* The lse gradient of the reference backward: with dout = 0,
** dL/ds_ij = P_ij dlse_i, so dq_i = scale dlse_i sum_j P_ij k_j (the forward
** with v = k), dk_j = scale sum_i P_ij dlse_i q_i (dv of a backward with dout
** = scale dlse q) and dv = 0; rows with no key (causal Tq > Tk) give 0. */
START_TEST(reference_backward_dlse_is_the_lse_gradient) {
  enum { B = 2, H = 2, Tq = 24, Tk = 16, D = 16 };
  uint64_t rng = 99;
  const size_t nq = (size_t)B * H * Tq * D, nk = (size_t)B * H * Tk * D, rows = (size_t)B * H * Tq;
  float *q = randv(nq, &rng), *k = randv(nk, &rng), *v = randv(nk, &rng), *dl = randv(rows, &rng);
  float *zero = calloc(nq, sizeof *zero), *dq = malloc(nq * 4), *dk = malloc(nk * 4), *dv = malloc(nk * 4);
  float *pk = malloc(nq * 4), *sq = malloc(nq * 4), *dk2 = malloc(nk * 4), *dv2 = malloc(nk * 4);
  float *dq2 = malloc(nq * 4);
  char err[256] = "";
  sfa_attention_params p;
  sfa_params_init(&p);
  p.causal = 1;
  const double scale = 1.0 / sqrt((double)D);
  ck_assert_msg(sfa_reference_backward_dlse(&p, B, H, H, Tq, Tk, D, q, k, v, NULL, zero, dl, dq,
                                            dk, dv, NULL, err, sizeof err) == SFA_OK, "%s", err);
  ck_assert_msg(sfa_reference_forward(&p, B, H, H, Tq, Tk, D, q, k, k, NULL, pk, NULL, err,
                                      sizeof err) == SFA_OK, "%s", err);
  for (size_t r = 0; r < rows; r++)
    for (int c = 0; c < D; c++) sq[r * D + c] = (float)(scale * dl[r] * q[r * D + c]);
  ck_assert_msg(sfa_reference_backward(&p, B, H, H, Tq, Tk, D, q, k, v, NULL, sq, dq2, dk2, dv2,
                                       NULL, err, sizeof err) == SFA_OK, "%s", err);
  for (size_t r = 0; r < rows; r++)
    for (int c = 0; c < D; c++) {
      const double want = scale * dl[r] * pk[r * D + c];
      ck_assert_msg(fabs(dq[r * D + c] - want) < 1e-5 * (1 + fabs(want)), "dq[%zu, %d] %g, want %g",
                    r, c, dq[r * D + c], want);
      if ((int)(r % Tq) < Tq - Tk) ck_assert(dq[r * D + c] == 0.f); /* sees no key */
    }
  for (size_t x = 0; x < nk; x++) {
    ck_assert_msg(fabsf(dk[x] - dv2[x]) < 1e-5f * (1 + fabsf(dv2[x])), "dk[%zu] %g, want %g", x,
                  dk[x], dv2[x]);
    ck_assert(dv[x] == 0.f);
  }
  /* NULL dlse is sfa_reference_backward */
  ck_assert_int_eq(sfa_reference_backward_dlse(&p, B, H, H, Tq, Tk, D, q, k, v, NULL, sq, NULL,
                                               dq, dk, dv, NULL, err, sizeof err), SFA_OK);
  ck_assert(memcmp(dq, dq2, nq * 4) == 0 && memcmp(dk, dk2, nk * 4) == 0 &&
            memcmp(dv, dv2, nk * 4) == 0);
  free(q), free(k), free(v), free(dl), free(zero), free(dq), free(dk), free(dv);
  free(pk), free(sq), free(dk2), free(dv2), free(dq2);
}
END_TEST

int main(void) {
  Suite *s = suite_create("merge");
  TCase *v = tcase_create("validation");
  tcase_add_checked_fixture(v, setup, teardown);
  tcase_add_test(v, merge_rejects_bad_arguments);
  tcase_add_test(v, valid_merges_reach_the_driver);
  suite_add_tcase(s, v);
  TCase *r = tcase_create("reference");
  tcase_add_test(r, merge_of_a_key_split_is_the_whole_attention);
  tcase_add_test(r, reference_merge_rules);
  tcase_add_test(r, reference_backward_dlse_is_the_lse_gradient);
  suite_add_tcase(s, r);
  return tu_run_suite(s);
}
