/*
** test_api.c -- the public API without a GPU: status strings, the
** initialisers, context creation, and every way sfa_forward and sfa_compile
** reject bad input (status, and a message that names the argument). All of it
** must happen before the driver is loaded, which each test checks; on a machine
** without libcuda a fully valid call must fail with SFA_ERR_NO_DRIVER.
*/
#include <dlfcn.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "sfa.h"
#include "testutil.h"

/* Is libcuda.so.1 loaded into this process (by anything)? */
static int driver_loaded(void) {
  void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
  if (h) dlclose(h);
  return h != NULL;
}

/* Would dlopen find a driver here? */
static int driver_present(void) {
  void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (h) dlclose(h);
  return h != NULL;
}

/* ------------------------------------------------------------ status and init */

START_TEST(status_strings) {
  const char *seen[SFA_ERR_INTERNAL + 1];
  for (int s = SFA_OK; s <= SFA_ERR_INTERNAL; s++) {
    seen[s] = sfa_status_string((sfa_status)s);
    ck_assert_ptr_nonnull(seen[s]);
    ck_assert_msg(strlen(seen[s]) > 0, "status %d has an empty name", s);
    ck_assert_msg(strcmp(seen[s], "unknown status") != 0, "status %d is unnamed", s);
    for (int t = 0; t < s; t++)
      ck_assert_msg(strcmp(seen[s], seen[t]) != 0, "statuses %d and %d share a name", s, t);
  }
  ck_assert_str_eq(sfa_status_string(SFA_OK), "ok");
  ck_assert_str_eq(sfa_status_string(SFA_ERR_INVALID_ARGUMENT), "invalid argument");
  ck_assert_str_eq(sfa_status_string((sfa_status)999), "unknown status");
  sfa_free(NULL);
}
END_TEST

START_TEST(options_init) {
  sfa_options o;
  memset(&o, 0x5A, sizeof o);
  sfa_options_init(&o);
  ck_assert_ptr_null(o.cache_dir);
  ck_assert_int_eq(o.device, 0);
  ck_assert_int_eq(o.verbose, 0);
  ck_assert_int_eq(o.tune, SFA_TUNE_OFF);
  sfa_options_init(NULL);
}
END_TEST

START_TEST(params_init) {
  sfa_attention_params p;
  memset(&p, 0x5A, sizeof p);
  sfa_params_init(&p);
  ck_assert_int_eq(p.mode, SFA_MODE_DENSE);
  ck_assert_int_eq(p.causal, 0);
  ck_assert(p.scale == 0.0f);
  ck_assert_int_eq(p.window_left, -1);
  ck_assert_int_eq(p.window_right, -1);
  ck_assert_int_eq(p.deterministic, 0);
  sfa_params_init(NULL);
}
END_TEST

START_TEST(tensor_init) {
  sfa_tensor t;
  int64_t shape[4] = {2, 3, 5, 64};
  memset(&t, 0x5A, sizeof t);
  sfa_tensor_init(&t, (void *)0x1000, SFA_DTYPE_BF16, 4, shape);
  ck_assert_ptr_eq(t.data, (void *)0x1000);
  ck_assert_int_eq(t.dtype, SFA_DTYPE_BF16);
  ck_assert_int_eq(t.rank, 4);
  for (int i = 0; i < 4; i++) ck_assert_int_eq(t.shape[i], shape[i]);
  ck_assert_int_eq(t.strides[3], 1);
  ck_assert_int_eq(t.strides[2], 64);
  ck_assert_int_eq(t.strides[1], 5 * 64);
  ck_assert_int_eq(t.strides[0], 3 * 5 * 64);

  int64_t s3[3] = {4, 7, 9};
  sfa_tensor_init(&t, NULL, SFA_DTYPE_FP32, 3, s3);
  ck_assert_int_eq(t.rank, 3);
  ck_assert_int_eq(t.strides[2], 1);
  ck_assert_int_eq(t.strides[1], 9);
  ck_assert_int_eq(t.strides[0], 63);
  ck_assert_int_eq(t.shape[3], 0);
  ck_assert_int_eq(t.strides[3], 0);
  sfa_tensor_init(NULL, NULL, SFA_DTYPE_FP16, 4, shape);
}
END_TEST

/* ------------------------------------------------------------ context */

START_TEST(context_create_without_gpu) {
  sfa_context *ctx = NULL;
  ck_assert_int_eq(sfa_context_create(&ctx, NULL), SFA_OK);
  ck_assert_ptr_nonnull(ctx);
  ck_assert_str_eq(sfa_last_error(ctx), "");
  sfa_context_destroy(ctx);

  char dir[64];
  strcpy(dir, "/nonexistent/sfa-cache");
  sfa_options o;
  sfa_options_init(&o);
  o.cache_dir = dir;
  o.verbose = 1;
  ctx = NULL;
  ck_assert_int_eq(sfa_context_create(&ctx, &o), SFA_OK);
  dir[0] = 'X'; /* the context keeps its own copy */
  sfa_context_destroy(ctx);
  ck_assert_msg(!driver_loaded(), "creating a context loaded the driver");

  sfa_context_destroy(NULL);
  ck_assert_int_eq(sfa_context_create(NULL, NULL), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_ptr_nonnull(sfa_last_error(NULL));
}
END_TEST

START_TEST(context_bad_options) {
  sfa_options o;
  sfa_context *ctx = NULL;
  sfa_options_init(&o);
  o.device = -1;
  ck_assert_int_eq(sfa_context_create(&ctx, &o), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_ptr_nonnull(ctx);
  ck_assert_ptr_nonnull(strstr(sfa_last_error(ctx), "options.device"));
  sfa_context_destroy(ctx);

  sfa_options_init(&o);
  o.tune = (sfa_tune_policy)7;
  ctx = NULL;
  ck_assert_int_eq(sfa_context_create(&ctx, &o), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_ptr_nonnull(strstr(sfa_last_error(ctx), "options.tune"));
  sfa_context_destroy(ctx);
}
END_TEST

/* ------------------------------------------------------------ sfa_forward */

/* A valid problem with fake (never dereferenced) device pointers:
** q [2, 4, 64, 64] fp16, k/v [2, 2, 48, 64], o like q, lse [2, 4, 64]. */
typedef struct problem {
  sfa_context *ctx;
  sfa_attention_params p;
  sfa_tensor q, k, v, o, lse;
} problem;

static problem P;

/* Reset P's tensors and params to the valid problem (keeps the context). */
static void reset(void) {
  int64_t qs[4] = {2, 4, 64, 64}, ks[4] = {2, 2, 48, 64}, ls[3] = {2, 4, 64};
  sfa_params_init(&P.p);
  P.p.causal = 1;
  sfa_tensor_init(&P.q, (void *)0x7f0000100000, SFA_DTYPE_FP16, 4, qs);
  sfa_tensor_init(&P.k, (void *)0x7f0000200000, SFA_DTYPE_FP16, 4, ks);
  sfa_tensor_init(&P.v, (void *)0x7f0000300000, SFA_DTYPE_FP16, 4, ks);
  sfa_tensor_init(&P.o, (void *)0x7f0000400000, SFA_DTYPE_FP16, 4, qs);
  sfa_tensor_init(&P.lse, (void *)0x7f0000500000, SFA_DTYPE_FP32, 3, ls);
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

static sfa_status run_forward(void) {
  return sfa_forward(P.ctx, &P.p, &P.q, &P.k, &P.v, NULL, &P.o, &P.lse, NULL);
}

/* Runs sfa_forward on P; wants status `want` and both needles in the message,
** and the driver still not loaded. */
#define EXPECT(want, n1, n2) expect_forward((want), (n1), (n2), __LINE__)
static void expect_forward(sfa_status want, const char *n1, const char *n2, int line) {
  sfa_status st = run_forward();
  const char *msg = sfa_last_error(P.ctx);
  ck_assert_msg(st == want, "line %d: status %s, want %s (%s)", line, sfa_status_string(st),
                sfa_status_string(want), msg);
  if (n1) ck_assert_msg(strstr(msg, n1), "line %d: '%s' not in '%s'", line, n1, msg);
  if (n2) ck_assert_msg(strstr(msg, n2), "line %d: '%s' not in '%s'", line, n2, msg);
  ck_assert_msg(!driver_loaded(), "line %d: the driver was loaded before validation failed",
                line);
}

START_TEST(fwd_null_arguments) {
  ck_assert_int_eq(sfa_forward(NULL, &P.p, &P.q, &P.k, &P.v, NULL, &P.o, NULL, NULL),
                   SFA_ERR_INVALID_ARGUMENT);
  const sfa_tensor *t[5] = {&P.q, &P.k, &P.v, &P.o, &P.lse};
  ck_assert_int_eq(sfa_forward(P.ctx, NULL, t[0], t[1], t[2], NULL, t[3], t[4], NULL),
                   SFA_ERR_INVALID_ARGUMENT);
  ck_assert_ptr_nonnull(strstr(sfa_last_error(P.ctx), "params: is NULL"));
  const char *names[4] = {"q: is NULL", "k: is NULL", "v: is NULL", "o: is NULL"};
  for (int i = 0; i < 4; i++) {
    const sfa_tensor *a[4] = {t[0], t[1], t[2], t[3]};
    a[i] = NULL;
    ck_assert_int_eq(sfa_forward(P.ctx, &P.p, a[0], a[1], a[2], NULL, a[3], t[4], NULL),
                     SFA_ERR_INVALID_ARGUMENT);
    ck_assert_msg(strstr(sfa_last_error(P.ctx), names[i]), "'%s' not in '%s'", names[i],
                  sfa_last_error(P.ctx));
  }
  ck_assert(!driver_loaded());
}
END_TEST

START_TEST(fwd_mode) {
  P.p.mode = SFA_MODE_QK_DROP;
  EXPECT(SFA_ERR_UNSUPPORTED, "params.mode: qk_drop is not implemented yet", NULL);
  P.p.mode = SFA_MODE_HASH;
  EXPECT(SFA_ERR_UNSUPPORTED, "params.mode: hash", NULL);
  P.p.mode = SFA_MODE_WINDOW;
  EXPECT(SFA_ERR_UNSUPPORTED, "params.mode: window", NULL);
  P.p.mode = (sfa_mode)42;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "params.mode: 42", "dense");
}
END_TEST

START_TEST(fwd_scale) {
  P.p.scale = -0.5f;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "params.scale", ">= 0");
  P.p.scale = NAN;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "params.scale", NULL);
  P.p.scale = INFINITY;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "params.scale", NULL);
}
END_TEST

START_TEST(fwd_window_in_dense) {
  P.p.window_left = 16;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "params.window_left", "mode window");
  P.p.window_left = -1;
  P.p.window_right = 0;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "params.window", NULL);
}
END_TEST

START_TEST(fwd_rank) {
  P.q.rank = 3;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "q.rank: 3", "must be 4");
  P.q.rank = 4;
  P.v.rank = 5;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "v.rank: 5", NULL);
  P.v.rank = 4;
  P.lse.rank = 4;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "lse.rank: 4", "must be 3");
}
END_TEST

START_TEST(fwd_q_dtype) {
  P.q.dtype = SFA_DTYPE_FP32;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "q: dtype fp32 is not supported", "fp16 or bf16");
  P.q.dtype = SFA_DTYPE_INT32;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "q: dtype int32", NULL);
}
END_TEST

START_TEST(fwd_dtype_mismatch) {
  P.k.dtype = SFA_DTYPE_BF16;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "k: dtype bf16 does not match q (fp16)", NULL);
  P.k.dtype = SFA_DTYPE_FP16;
  P.v.dtype = SFA_DTYPE_BF16;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "v: dtype bf16 does not match q (fp16)", NULL);
  P.v.dtype = SFA_DTYPE_FP16;
  P.o.dtype = SFA_DTYPE_FP32;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "o: dtype fp32 does not match q (fp16)", NULL);
}
END_TEST

START_TEST(fwd_lse_dtype) {
  P.lse.dtype = SFA_DTYPE_FP16;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "lse: dtype fp16", "fp32");
}
END_TEST

START_TEST(fwd_zero_dim) {
  P.q.shape[2] = 0;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "q: shape[2] is 0", ">= 1");
  P.q.shape[2] = 64;
  P.k.shape[0] = -1;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "k: shape[0] is -1", NULL);
}
END_TEST

START_TEST(fwd_head_dim) {
  const int64_t bad[] = {16, 36, 40, 72, 264, 512};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int64_t qs[4] = {2, 4, 64, bad[i]}, ks[4] = {2, 2, 48, bad[i]};
    sfa_tensor_init(&P.q, P.q.data, SFA_DTYPE_FP16, 4, qs);
    sfa_tensor_init(&P.o, P.o.data, SFA_DTYPE_FP16, 4, qs);
    sfa_tensor_init(&P.k, P.k.data, SFA_DTYPE_FP16, 4, ks);
    sfa_tensor_init(&P.v, P.v.data, SFA_DTYPE_FP16, 4, ks);
    if (bad[i] % 8 != 0) /* then the row stride is caught first */
      EXPECT(SFA_ERR_INVALID_ARGUMENT, "q: stride[2]", NULL);
    else
      EXPECT(SFA_ERR_INVALID_ARGUMENT, "q: head dim", "multiple of 16 in 32..256");
  }
}
END_TEST

START_TEST(fwd_kv_shape) {
  P.k.shape[0] = 3;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "k: shape[0] (batch) is 3 but q's is 2", NULL);
  reset();
  P.k.shape[3] = 32;
  P.v.shape[3] = 32;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "k: shape[3] (head dim) is 32", NULL);
  reset();
  P.v.shape[2] = 47;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "v: shape [2, 2, 47, 64] does not match k [2, 2, 48, 64]",
         NULL);
}
END_TEST

START_TEST(fwd_gqa_heads) {
  P.k.shape[1] = P.v.shape[1] = 3;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "k: its 3 heads", "do not divide the 4 query heads");
}
END_TEST

START_TEST(fwd_o_shape) {
  P.o.shape[2] = 63;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "o: shape [2, 4, 63, 64] does not match q [2, 4, 64, 64]",
         NULL);
}
END_TEST

START_TEST(fwd_lse_shape) {
  P.lse.shape[1] = 2;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "lse: shape [2, 2, 64]", "[2, 4, 64]");
}
END_TEST

START_TEST(fwd_last_stride) {
  P.q.strides[3] = 2;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "q: stride[3] is 2", "contiguous");
  reset();
  P.lse.strides[2] = 2;
  P.lse.strides[1] = 128;
  P.lse.strides[0] = 512;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "lse: stride[2] is 2", "contiguous");
}
END_TEST

START_TEST(fwd_negative_stride) {
  P.k.strides[1] = -48 * 64;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "k: stride[1] is -3072", ">= 0");
}
END_TEST

START_TEST(fwd_stride_multiple) {
  P.v.strides[2] = 68; /* 136 bytes: rows not 16-byte aligned */
  P.v.strides[1] = 68 * 48;
  P.v.strides[0] = 68 * 48 * 2;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "v: stride[2] is 68", "multiple of 8 elements");
  reset();
  P.o.strides[0] += 4;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "o: stride[0]", "multiple of 8");
}
END_TEST

START_TEST(fwd_null_data) {
  P.o.data = NULL;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "o: data is NULL", NULL);
  reset();
  P.lse.data = NULL;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "lse: data is NULL", NULL);
}
END_TEST

START_TEST(fwd_alignment) {
  P.q.data = (char *)P.q.data + 8;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "q: data", "not 16-byte aligned");
  reset();
  P.k.data = (char *)P.k.data + 2;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "k: data", "16-byte");
  reset();
  P.lse.data = (char *)P.lse.data + 2;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "lse: data", "4-byte aligned");
}
END_TEST

START_TEST(fwd_int32_time) {
  int64_t T = (int64_t)INT32_MAX + 1;
  int64_t qs[4] = {1, 1, T, 64}, ks[4] = {1, 1, 16, 64}, ls[3] = {1, 1, T};
  sfa_tensor_init(&P.q, P.q.data, SFA_DTYPE_FP16, 4, qs);
  sfa_tensor_init(&P.o, P.o.data, SFA_DTYPE_FP16, 4, qs);
  sfa_tensor_init(&P.k, P.k.data, SFA_DTYPE_FP16, 4, ks);
  sfa_tensor_init(&P.v, P.v.data, SFA_DTYPE_FP16, 4, ks);
  sfa_tensor_init(&P.lse, P.lse.data, SFA_DTYPE_FP32, 3, ls);
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "q: time (shape[2]) 2147483648", "int32");
}
END_TEST

START_TEST(fwd_grid_limit) {
  int64_t qs[4] = {70000, 1, 16, 64}, ks[4] = {70000, 1, 16, 64}, ls[3] = {70000, 1, 16};
  sfa_tensor_init(&P.q, P.q.data, SFA_DTYPE_FP16, 4, qs);
  sfa_tensor_init(&P.o, P.o.data, SFA_DTYPE_FP16, 4, qs);
  sfa_tensor_init(&P.k, P.k.data, SFA_DTYPE_FP16, 4, ks);
  sfa_tensor_init(&P.v, P.v.data, SFA_DTYPE_FP16, 4, ks);
  sfa_tensor_init(&P.lse, P.lse.data, SFA_DTYPE_FP32, 3, ls);
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "q: batch 70000", "grid limit");
}
END_TEST

START_TEST(fwd_huge_span) {
  P.k.strides[0] = (int64_t)1 << 62;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "k: shape and strides", "2^62");
}
END_TEST

START_TEST(fwd_output_overlap) {
  P.o.strides[2] = 0; /* every time step writes the same row */
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "o: its strides make elements overlap", NULL);
  reset();
  P.o.strides[1] = 32; /* heads interleave with the head dim */
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "o: its strides make elements overlap", NULL);
  reset();
  P.lse.strides[1] = 1;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "lse: its strides make elements overlap", NULL);
}
END_TEST

/* A fully valid call needs the driver. Without one it must say so clearly;
** with one this test is skipped (the pointers here are fake). */
START_TEST(fwd_no_driver) {
  if (driver_present()) {
    printf("SKIP fwd_no_driver: libcuda.so.1 is present on this machine\n");
    return;
  }
  ck_assert_int_eq(run_forward(), SFA_ERR_NO_DRIVER);
  const char *msg = sfa_last_error(P.ctx);
  ck_assert_msg(strstr(msg, "libcuda.so.1 not found") && strstr(msg, "no NVIDIA driver"),
                "unclear message: %s", msg);
  /* Also valid: no lse; q stored as [B, T, H, D]; k shared by the batch
  ** (batch stride 0); a dim of extent 1 with an odd stride (never used). */
  int64_t ks[4] = {2, 1, 48, 64};
  sfa_tensor_init(&P.k, P.k.data, SFA_DTYPE_FP16, 4, ks);
  sfa_tensor_init(&P.v, P.v.data, SFA_DTYPE_FP16, 4, ks);
  P.q.strides[0] = 64 * 4 * 64, P.q.strides[1] = 64, P.q.strides[2] = 4 * 64;
  P.k.strides[0] = 0;
  P.k.strides[1] = 3;
  ck_assert_int_eq(sfa_forward(P.ctx, &P.p, &P.q, &P.k, &P.v, NULL, &P.o, NULL, NULL),
                   SFA_ERR_NO_DRIVER);
  /* sfa_compile of a valid spec too. */
  sfa_kernel_spec spec = {SFA_PASS_FWD, SFA_MODE_DENSE, SFA_DTYPE_BF16, 128, 0, 0, 0, 0, 90, 0};
  ck_assert_int_eq(sfa_spec_default(&spec, NULL, 0), SFA_OK);
  sfa_kernel *kern = (sfa_kernel *)(uintptr_t)0x1; /* must be reset to NULL */
  ck_assert_int_eq(sfa_compile(P.ctx, &spec, &kern), SFA_ERR_NO_DRIVER);
  ck_assert_ptr_null(kern);
  ck_assert_ptr_nonnull(strstr(sfa_last_error(P.ctx), "libcuda.so.1"));
}
END_TEST

START_TEST(compile_bad_arguments) {
  sfa_kernel_spec spec = {SFA_PASS_FWD, SFA_MODE_DENSE, SFA_DTYPE_BF16, 128, 0, 0, 0, 0, 90, 0};
  sfa_kernel *kern = NULL;
  ck_assert_int_eq(sfa_compile(NULL, &spec, &kern), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_int_eq(sfa_compile(P.ctx, NULL, &kern), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_ptr_nonnull(strstr(sfa_last_error(P.ctx), "spec: is NULL"));
  ck_assert_int_eq(sfa_compile(P.ctx, &spec, NULL), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_ptr_nonnull(strstr(sfa_last_error(P.ctx), "kernel: is NULL"));
  ck_assert_int_eq(sfa_spec_default(&spec, NULL, 0), SFA_OK);
  spec.head_dim = 40;
  ck_assert_int_eq(sfa_compile(P.ctx, &spec, &kern), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(sfa_last_error(P.ctx), "spec: head_dim"), "%s", sfa_last_error(P.ctx));
  ck_assert(!driver_loaded());
}
END_TEST

int main(void) {
  Suite *s = suite_create("api");
  TCase *basics = tcase_create("basics");
  tcase_add_test(basics, status_strings);
  tcase_add_test(basics, options_init);
  tcase_add_test(basics, params_init);
  tcase_add_test(basics, tensor_init);
  tcase_add_test(basics, context_create_without_gpu);
  tcase_add_test(basics, context_bad_options);
  suite_add_tcase(s, basics);

  TCase *fwd = tcase_create("forward_validation");
  tcase_add_checked_fixture(fwd, setup, teardown);
  tcase_add_test(fwd, fwd_null_arguments);
  tcase_add_test(fwd, fwd_mode);
  tcase_add_test(fwd, fwd_scale);
  tcase_add_test(fwd, fwd_window_in_dense);
  tcase_add_test(fwd, fwd_rank);
  tcase_add_test(fwd, fwd_q_dtype);
  tcase_add_test(fwd, fwd_dtype_mismatch);
  tcase_add_test(fwd, fwd_lse_dtype);
  tcase_add_test(fwd, fwd_zero_dim);
  tcase_add_test(fwd, fwd_head_dim);
  tcase_add_test(fwd, fwd_kv_shape);
  tcase_add_test(fwd, fwd_gqa_heads);
  tcase_add_test(fwd, fwd_o_shape);
  tcase_add_test(fwd, fwd_lse_shape);
  tcase_add_test(fwd, fwd_last_stride);
  tcase_add_test(fwd, fwd_negative_stride);
  tcase_add_test(fwd, fwd_stride_multiple);
  tcase_add_test(fwd, fwd_null_data);
  tcase_add_test(fwd, fwd_alignment);
  tcase_add_test(fwd, fwd_int32_time);
  tcase_add_test(fwd, fwd_grid_limit);
  tcase_add_test(fwd, fwd_huge_span);
  tcase_add_test(fwd, fwd_output_overlap);
  tcase_add_test(fwd, fwd_no_driver);
  tcase_add_test(fwd, compile_bad_arguments);
  suite_add_tcase(s, fwd);
  return tu_run_suite(s);
}
