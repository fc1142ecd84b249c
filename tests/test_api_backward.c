/*
** test_api_backward.c -- sfa_backward without a GPU: every way it rejects bad
** input (status, and a message that names the argument) before the driver is
** loaded, the head-dim limit, and a valid call failing with SFA_ERR_NO_DRIVER
** on a machine without libcuda. Also sfa_options_init reading SFA_TUNE.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sfa.h"
#include "testutil.h"

/* A valid backward problem with fake (never dereferenced) device pointers:
** q, o, dout, dq [2, 4, 64, 64] fp16; k, v, dk, dv [2, 2, 48, 64]; lse
** [2, 4, 64] fp32; window mode's bias [2, 4, 64, 48] and its dbias. */
static struct {
  sfa_context *ctx;
  sfa_attention_params p;
  sfa_tensor q, k, v, o, lse, dout, dq, dk, dv, bias, dbias;
  sfa_extras ex;
} P;

static void *at(int i) { return (void *)(uintptr_t)(0x7f0000000000ull + (uint64_t)i * 0x100000); }

static void reset(void) {
  int64_t qs[4] = {2, 4, 64, 64}, ks[4] = {2, 2, 48, 64}, ls[3] = {2, 4, 64};
  int64_t bs[4] = {2, 4, 64, 48};
  sfa_params_init(&P.p);
  P.p.causal = 1;
  sfa_tensor_init(&P.q, at(1), SFA_DTYPE_FP16, 4, qs);
  sfa_tensor_init(&P.k, at(2), SFA_DTYPE_FP16, 4, ks);
  sfa_tensor_init(&P.v, at(3), SFA_DTYPE_FP16, 4, ks);
  sfa_tensor_init(&P.o, at(4), SFA_DTYPE_FP16, 4, qs);
  sfa_tensor_init(&P.lse, at(5), SFA_DTYPE_FP32, 3, ls);
  sfa_tensor_init(&P.dout, at(6), SFA_DTYPE_FP16, 4, qs);
  sfa_tensor_init(&P.dq, at(7), SFA_DTYPE_FP16, 4, qs);
  sfa_tensor_init(&P.dk, at(8), SFA_DTYPE_FP16, 4, ks);
  sfa_tensor_init(&P.dv, at(9), SFA_DTYPE_FP16, 4, ks);
  sfa_tensor_init(&P.bias, at(10), SFA_DTYPE_FP16, 4, bs);
  sfa_tensor_init(&P.dbias, at(11), SFA_DTYPE_FP16, 4, bs);
  memset(&P.ex, 0, sizeof P.ex);
}

static void setup(void) {
  memset(&P, 0, sizeof P);
  ck_assert_int_eq(sfa_context_create(&P.ctx, NULL), SFA_OK);
  reset();
}

static void teardown(void) {
  sfa_context_destroy(P.ctx);
  P.ctx = NULL;
}

static sfa_status run(const sfa_extras *ex, const sfa_tensor *dbias) {
  return sfa_backward(P.ctx, &P.p, &P.q, &P.k, &P.v, ex, &P.o, &P.lse, &P.dout, &P.dq, &P.dk,
                      &P.dv, dbias, NULL);
}

/* Wants status `want`, the needle in the message and the driver not loaded. */
#define EXPECT(st, want, needle) expect((st), (want), (needle), __LINE__)
static void expect(sfa_status st, sfa_status want, const char *needle, int line) {
  const char *msg = sfa_last_error(P.ctx);
  ck_assert_msg(st == want, "line %d: status %s, want %s (%s)", line, sfa_status_string(st),
                sfa_status_string(want), msg);
  if (needle) ck_assert_msg(strstr(msg, needle), "line %d: '%s' not in '%s'", line, needle, msg);
  ck_assert_msg(!tu_driver_loaded(), "line %d: the driver was loaded before validation failed",
                line);
}

START_TEST(bwd_null_arguments) {
  const sfa_status bad = SFA_ERR_INVALID_ARGUMENT;
  ck_assert_int_eq(sfa_backward(NULL, &P.p, &P.q, &P.k, &P.v, NULL, &P.o, &P.lse, &P.dout,
                                &P.dq, &P.dk, &P.dv, NULL, NULL), bad);
  EXPECT(sfa_backward(P.ctx, &P.p, &P.q, &P.k, &P.v, NULL, &P.o, NULL, &P.dout, &P.dq, &P.dk,
                      &P.dv, NULL, NULL), bad, "lse: is NULL; the backward needs the forward's lse");
  EXPECT(sfa_backward(P.ctx, NULL, &P.q, &P.k, &P.v, NULL, &P.o, &P.lse, &P.dout, &P.dq, &P.dk,
                      &P.dv, NULL, NULL), bad, "params: is NULL");
  EXPECT(sfa_backward(P.ctx, &P.p, &P.q, &P.k, &P.v, NULL, &P.o, &P.lse, NULL, &P.dq, &P.dk,
                      &P.dv, NULL, NULL), bad, "dout: is NULL");
  EXPECT(sfa_backward(P.ctx, &P.p, &P.q, &P.k, &P.v, NULL, &P.o, &P.lse, &P.dout, NULL, &P.dk,
                      &P.dv, NULL, NULL), bad, "dq: is NULL");
  EXPECT(sfa_backward(P.ctx, &P.p, &P.q, &P.k, &P.v, NULL, &P.o, &P.lse, &P.dout, &P.dq, NULL,
                      &P.dv, NULL, NULL), bad, "dk: is NULL");
  EXPECT(sfa_backward(P.ctx, &P.p, &P.q, &P.k, &P.v, NULL, &P.o, &P.lse, &P.dout, &P.dq, &P.dk,
                      NULL, NULL, NULL), bad, "dv: is NULL");
}
END_TEST

START_TEST(bwd_gradient_shapes_and_dtypes) {
  const sfa_status bad = SFA_ERR_INVALID_ARGUMENT;
  P.dout.shape[2] = 63;
  EXPECT(run(NULL, NULL), bad, "dout: shape [2, 4, 63, 64] does not match o [2, 4, 64, 64]");
  reset();
  int64_t ks[4] = {2, 2, 48, 64};
  sfa_tensor_init(&P.dq, P.dq.data, SFA_DTYPE_FP16, 4, ks);
  EXPECT(run(NULL, NULL), bad, "dq: shape [2, 2, 48, 64] does not match q [2, 4, 64, 64]");
  reset();
  P.dv.dtype = SFA_DTYPE_BF16;
  EXPECT(run(NULL, NULL), bad, "dv: dtype bf16 does not match q (fp16)");
  reset();
  P.dk.strides[3] = 2;
  EXPECT(run(NULL, NULL), bad, "dk:");
  reset();
  P.p.deterministic = 2;
  EXPECT(run(NULL, NULL), bad, "params.deterministic: 2; must be 0 or 1");
}
END_TEST

START_TEST(bwd_dbias) {
  const sfa_status bad = SFA_ERR_INVALID_ARGUMENT;
  EXPECT(run(NULL, &P.dbias), bad, "dbias: is given but there is no bias");
  P.p.mode = SFA_MODE_WINDOW;
  P.ex.bias = &P.bias;
  P.dbias.dtype = SFA_DTYPE_BF16;
  EXPECT(run(&P.ex, &P.dbias), bad, "dbias: dtype bf16 does not match bias (fp16)");
  P.dbias.dtype = SFA_DTYPE_FP16;
  P.dbias.shape[1] = 1;
  EXPECT(run(&P.ex, &P.dbias), bad, "dbias: shape [2, 1, 64, 48] does not match bias [2, 4, 64, 48]");
}
END_TEST

START_TEST(bwd_outputs_must_not_overlap) {
  const sfa_status bad = SFA_ERR_INVALID_ARGUMENT;
  P.dq.data = P.q.data;
  EXPECT(run(NULL, NULL), bad, "dq: its memory overlaps q");
  reset();
  P.dv.data = (char *)P.dk.data + 64; /* inside dk's span */
  EXPECT(run(NULL, NULL), bad, "dk: its memory overlaps dv");
  reset();
  P.dk.data = P.dout.data;
  EXPECT(run(NULL, NULL), bad, "dk: its memory overlaps dout");
}
END_TEST

/* sfa_backward_dlse: dlse is fp32 [B, Hq, Tq] (strides >= 0, last contiguous,
** broadcast allowed), no output may overlap it; NULL is sfa_backward; a valid
** one goes on to the driver. */
START_TEST(bwd_dlse) {
  const sfa_status bad = SFA_ERR_INVALID_ARGUMENT;
  int64_t ls[3] = {2, 4, 64};
  sfa_tensor dl;
#define RUN_DLSE(t) \
  sfa_backward_dlse(P.ctx, &P.p, &P.q, &P.k, &P.v, NULL, &P.o, &P.lse, &P.dout, (t), &P.dq, \
                    &P.dk, &P.dv, NULL, NULL)
  ck_assert_int_eq(sfa_backward_dlse(NULL, &P.p, &P.q, &P.k, &P.v, NULL, &P.o, &P.lse, &P.dout,
                                     NULL, &P.dq, &P.dk, &P.dv, NULL, NULL), bad);
  sfa_tensor_init(&dl, at(12), SFA_DTYPE_BF16, 3, ls);
  EXPECT(RUN_DLSE(&dl), bad, "dlse: dtype bf16; must be fp32");
  sfa_tensor_init(&dl, at(12), SFA_DTYPE_FP32, 4, P.q.shape);
  EXPECT(RUN_DLSE(&dl), bad, "dlse.rank: 4; must be 3 ([B, Hq, Tq])");
  ls[2] = 63;
  sfa_tensor_init(&dl, at(12), SFA_DTYPE_FP32, 3, ls);
  EXPECT(RUN_DLSE(&dl), bad, "dlse: shape [2, 4, 63] does not match q's [B, Hq, Tq] = [2, 4, 64]");
  ls[2] = 64;
  sfa_tensor_init(&dl, at(12), SFA_DTYPE_FP32, 3, ls);
  dl.strides[2] = 2;
  EXPECT(RUN_DLSE(&dl), bad, "dlse: stride[2] is 2; the last dimension must be contiguous");
  sfa_tensor_init(&dl, (char *)P.dq.data + 128, SFA_DTYPE_FP32, 3, ls);
  EXPECT(RUN_DLSE(&dl), bad, "dq: its memory overlaps dlse");
  /* the forward's checks come first, as in sfa_backward */
  P.dout.shape[2] = 63;
  EXPECT(RUN_DLSE(&dl), bad, "dout: shape [2, 4, 63, 64] does not match o");
  reset();
  if (tu_driver_present()) return;
  sfa_tensor_init(&dl, at(12), SFA_DTYPE_FP32, 3, ls);
  dl.strides[0] = dl.strides[1] = 0; /* one row broadcast over batch and heads */
  ck_assert_int_eq(RUN_DLSE(&dl), SFA_ERR_NO_DRIVER);
  ck_assert_int_eq(RUN_DLSE(NULL), SFA_ERR_NO_DRIVER);
#undef RUN_DLSE
}
END_TEST

/* Valid input past validation: head dims above 128 that are not multiples of
** 32 are refused as unsupported before the driver; 256 goes on to it, so a
** machine without libcuda says so. */
START_TEST(bwd_head_dim_and_no_driver) {
  int64_t qs[4] = {2, 4, 64, 256}, ks[4] = {2, 2, 48, 256};
  sfa_tensor *qlike[4] = {&P.q, &P.o, &P.dout, &P.dq}, *klike[4] = {&P.k, &P.v, &P.dk, &P.dv};
  for (int i = 0; i < 4; i++) {
    sfa_tensor_init(qlike[i], qlike[i]->data, SFA_DTYPE_FP16, 4, qs);
    sfa_tensor_init(klike[i], klike[i]->data, SFA_DTYPE_FP16, 4, ks);
  }
  if (!tu_driver_present()) ck_assert_int_eq(run(NULL, NULL), SFA_ERR_NO_DRIVER);
  int64_t q144[4] = {2, 4, 64, 144}, k144[4] = {2, 2, 48, 144};
  for (int i = 0; i < 4; i++) {
    sfa_tensor_init(qlike[i], qlike[i]->data, SFA_DTYPE_FP16, 4, q144);
    sfa_tensor_init(klike[i], klike[i]->data, SFA_DTYPE_FP16, 4, k144);
  }
  EXPECT(run(NULL, NULL), SFA_ERR_UNSUPPORTED,
         "q: head dim 144; above 128 the backward supports multiples of 32");
  reset();
  if (tu_driver_present()) {
    printf("SKIP no-driver half of bwd_head_dim_and_no_driver: libcuda.so.1 is present\n");
    return;
  }
  ck_assert_int_eq(run(NULL, NULL), SFA_ERR_NO_DRIVER);
  ck_assert_ptr_nonnull(strstr(sfa_last_error(P.ctx), "libcuda.so.1"));
}
END_TEST

/* An unsupported head dim is named as such, not as the stride error that its
** unaligned rows (36 elements: 72 bytes) would give; so is a gradient whose
** head dim differs from its reference's. causal is a flag (0 or 1). */
START_TEST(bwd_head_dim_errors_name_the_head_dim) {
  const sfa_status bad = SFA_ERR_INVALID_ARGUMENT;
  int64_t q36[4] = {2, 4, 64, 36}, k36[4] = {2, 2, 48, 36};
  sfa_tensor *qlike[4] = {&P.q, &P.o, &P.dout, &P.dq}, *klike[4] = {&P.k, &P.v, &P.dk, &P.dv};
  for (int i = 0; i < 4; i++) {
    sfa_tensor_init(qlike[i], qlike[i]->data, SFA_DTYPE_FP16, 4, q36);
    sfa_tensor_init(klike[i], klike[i]->data, SFA_DTYPE_FP16, 4, k36);
  }
  EXPECT(run(NULL, NULL), bad, "q: head dim (shape[3]) 36 is not supported");
  reset();
  sfa_tensor_init(&P.dq, P.dq.data, SFA_DTYPE_FP16, 4, q36);
  EXPECT(run(NULL, NULL), bad, "dq: shape [2, 4, 64, 36] does not match q [2, 4, 64, 64]");
  reset();
  sfa_tensor_init(&P.dv, P.dv.data, SFA_DTYPE_FP16, 4, k36);
  EXPECT(run(NULL, NULL), bad, "dv: shape [2, 2, 48, 36] does not match v [2, 2, 48, 64]");
  reset();
  P.p.causal = 7;
  EXPECT(run(NULL, NULL), bad, "params.causal: 7; must be 0 or 1");
}
END_TEST

/* The forward's outputs, given back as inputs, keep the forward's rule. */
START_TEST(bwd_forward_outputs_must_not_overlap_inputs) {
  const sfa_status bad = SFA_ERR_INVALID_ARGUMENT;
  P.o.data = P.k.data;
  EXPECT(run(NULL, NULL), bad, "o: its memory overlaps k");
  reset();
  P.lse.data = (char *)P.o.data + 128;
  EXPECT(run(NULL, NULL), bad, "o: its memory overlaps lse");
}
END_TEST

/* sfa_options_init with var=value in the environment (unset after); what it
** printed on stderr into text. */
static sfa_options options_with_env(const char *var, const char *value, char *text, size_t n) {
  char path[1024];
  snprintf(path, sizeof path, "%s/err.txt", tu_mkdtemp());
  setenv(var, value, 1);
  sfa_options o;
  int saved = tu_capture_stderr(path);
  sfa_options_init(&o);
  tu_restore_stderr(saved);
  unsetenv(var);
  FILE *f = fopen(path, "r");
  ck_assert_ptr_nonnull(f);
  size_t got = fread(text, 1, n - 1, f);
  text[got] = '\0';
  fclose(f);
  return o;
}

/* SFA_TUNE sets the policy that sfa_options_init gives; a bad value warns. */
START_TEST(options_init_reads_sfa_tune) {
  char text[512];
  ck_assert_int_eq(options_with_env("SFA_TUNE", "cached", text, sizeof text).tune, SFA_TUNE_CACHED);
  ck_assert_int_eq(options_with_env("SFA_TUNE", "on", text, sizeof text).tune, SFA_TUNE_ON);
  ck_assert_int_eq(options_with_env("SFA_TUNE", "off", text, sizeof text).tune, SFA_TUNE_OFF);
  ck_assert_str_eq(text, "");
  ck_assert_int_eq(options_with_env("SFA_TUNE", "fast", text, sizeof text).tune, SFA_TUNE_OFF);
  ck_assert_msg(strstr(text, "SFA_TUNE='fast' is not off, cached or on; using off"), "%s", text);
}
END_TEST

/* SFA_MMA sets the mma kind that sfa_options_init gives; a bad value warns. */
START_TEST(options_init_reads_sfa_mma) {
  char text[512];
  sfa_options o;
  unsetenv("SFA_MMA");
  sfa_options_init(&o);
  ck_assert_int_eq(o.mma, SFA_MMA_AUTO);
  ck_assert_int_eq(options_with_env("SFA_MMA", "sync", text, sizeof text).mma, SFA_MMA_SYNC);
  ck_assert_int_eq(options_with_env("SFA_MMA", "wgmma", text, sizeof text).mma, SFA_MMA_WGMMA);
  ck_assert_int_eq(options_with_env("SFA_MMA", "ws", text, sizeof text).mma, SFA_MMA_WS);
  ck_assert_int_eq(options_with_env("SFA_MMA", "auto", text, sizeof text).mma, SFA_MMA_AUTO);
  ck_assert_str_eq(text, "");
  ck_assert_int_eq(options_with_env("SFA_MMA", "tensor", text, sizeof text).mma, SFA_MMA_AUTO);
  ck_assert_msg(strstr(text, "SFA_MMA='tensor' is not auto, sync, wgmma or ws; using auto"), "%s", text);
}
END_TEST

int main(void) {
  unsetenv("SFA_TUNE"); /* the fixtures' contexts use the plain defaults */
  Suite *s = suite_create("api_backward");
  TCase *t = tcase_create("backward_validation");
  tcase_add_checked_fixture(t, setup, teardown);
  tcase_add_test(t, bwd_null_arguments);
  tcase_add_test(t, bwd_gradient_shapes_and_dtypes);
  tcase_add_test(t, bwd_dbias);
  tcase_add_test(t, bwd_outputs_must_not_overlap);
  tcase_add_test(t, bwd_dlse);
  tcase_add_test(t, bwd_head_dim_and_no_driver);
  tcase_add_test(t, bwd_head_dim_errors_name_the_head_dim);
  tcase_add_test(t, bwd_forward_outputs_must_not_overlap_inputs);
  tcase_add_test(t, options_init_reads_sfa_tune);
  tcase_add_test(t, options_init_reads_sfa_mma);
  suite_add_tcase(s, t);
  return tu_run_suite(s);
}
