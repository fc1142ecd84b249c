/*
** test_api.c -- the public API without a GPU: status strings, the
** initialisers, context creation, and every way sfa_forward and sfa_compile
** reject bad input (status, and a message that names the argument), also the
** extras of the sparse modes (missing, unexpected, dtypes, shapes, strides,
** broadcasts, mask alignment) and window parameters. All of it
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
  ck_assert_int_eq(p.strict_causal, 0);
  ck_assert(p.softcap == 0.0f);
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

/* A shape whose row-major strides do not fit in int64 (2^86 elements) gets
** saturated strides, never wrapped ones (signed overflow is undefined). */
START_TEST(tensor_init_saturates_strides_that_overflow) {
  sfa_tensor t;
  const int64_t G = (int64_t)1 << 40;
  int64_t huge[4] = {G, G, G, 64};
  sfa_tensor_init(&t, (void *)0x1000, SFA_DTYPE_FP16, 4, huge);
  ck_assert_int_eq(t.strides[3], 1);
  ck_assert_int_eq(t.strides[2], 64);
  ck_assert_int_eq(t.strides[1], (int64_t)1 << 46);
  ck_assert_int_eq(t.strides[0], INT64_MAX);
  int64_t max[3] = {3, INT64_MAX, INT64_MAX};
  sfa_tensor_init(&t, (void *)0x1000, SFA_DTYPE_FP16, 3, max);
  ck_assert_int_eq(t.strides[2], 1);
  ck_assert_int_eq(t.strides[1], INT64_MAX);
  ck_assert_int_eq(t.strides[0], INT64_MAX);
  for (int i = 0; i < 3; i++) ck_assert_int_eq(t.shape[i], max[i]);
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
  ck_assert_msg(!tu_driver_loaded(), "creating a context loaded the driver");

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

  sfa_options_init(&o);
  o.mma = (sfa_mma_kind)4;
  ctx = NULL;
  ck_assert_int_eq(sfa_context_create(&ctx, &o), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_ptr_nonnull(strstr(sfa_last_error(ctx), "options.mma: 4 is not an mma kind"));
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
  /* Valid extras for every mode: q_idx/q_hash [2, 4, 64], k_idx/k_hash
  ** [2, 2, 48] int32, bias [2, 4, 64, 48] fp16, mask [2, 4, 64, 48] uint8;
  ** ex (passed when use_ex) points at the ones that set_mode chose. */
  sfa_tensor qi, ki, qh, kh, bias, mask;
  sfa_extras ex;
  int use_ex;
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
  int64_t qis[3] = {2, 4, 64}, kis[3] = {2, 2, 48}, bs[4] = {2, 4, 64, 48};
  sfa_tensor_init(&P.qi, (void *)0x7f0000600000, SFA_DTYPE_INT32, 3, qis);
  sfa_tensor_init(&P.ki, (void *)0x7f0000700000, SFA_DTYPE_INT32, 3, kis);
  sfa_tensor_init(&P.qh, (void *)0x7f0000800000, SFA_DTYPE_INT32, 3, qis);
  sfa_tensor_init(&P.kh, (void *)0x7f0000900000, SFA_DTYPE_INT32, 3, kis);
  sfa_tensor_init(&P.bias, (void *)0x7f0000a00000, SFA_DTYPE_FP16, 4, bs);
  sfa_tensor_init(&P.mask, (void *)0x7f0000b00000, SFA_DTYPE_UINT8, 4, bs);
  memset(&P.ex, 0, sizeof P.ex);
  P.use_ex = 0;
}

/* Switch P to a mode with all of its extras (window: bias and mask). */
static void set_mode(sfa_mode m) {
  P.p.mode = m;
  memset(&P.ex, 0, sizeof P.ex);
  P.use_ex = 1;
  if (m == SFA_MODE_QK_DROP || m == SFA_MODE_HASH) P.ex.q_idx = &P.qi, P.ex.k_idx = &P.ki;
  if (m == SFA_MODE_HASH) P.ex.q_hash = &P.qh, P.ex.k_hash = &P.kh;
  if (m == SFA_MODE_WINDOW) P.ex.bias = &P.bias, P.ex.mask = &P.mask;
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
  return sfa_forward(P.ctx, &P.p, &P.q, &P.k, &P.v, P.use_ex ? &P.ex : NULL, &P.o, &P.lse, NULL);
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
  ck_assert_msg(!tu_driver_loaded(), "line %d: the driver was loaded before validation failed",
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
  ck_assert(!tu_driver_loaded());
}
END_TEST

START_TEST(fwd_mode) {
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

/* q, k, v and o with head dim D (and the test's other sizes). */
static void set_head_dim(int64_t D) {
  int64_t qs[4] = {2, 4, 64, D}, ks[4] = {2, 2, 48, D};
  sfa_tensor_init(&P.q, P.q.data, SFA_DTYPE_FP16, 4, qs);
  sfa_tensor_init(&P.o, P.o.data, SFA_DTYPE_FP16, 4, qs);
  sfa_tensor_init(&P.k, P.k.data, SFA_DTYPE_FP16, 4, ks);
  sfa_tensor_init(&P.v, P.v.data, SFA_DTYPE_FP16, 4, ks);
}

/* An unsupported head dim is reported as such, also where its rows are not
** 16-byte aligned (36: 72 bytes), which the stride check would catch first. */
START_TEST(fwd_head_dim) {
  const int64_t bad[] = {8, 16, 36, 40, 72, 100, 264, 512};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char want[64];
    set_head_dim(bad[i]);
    snprintf(want, sizeof want, "q: head dim (shape[3]) %lld is not supported", (long long)bad[i]);
    EXPECT(SFA_ERR_INVALID_ARGUMENT, want, "multiple of 16 in 32..256");
  }
  /* k and v with another head dim than q's: named as that, not as a stride. */
  reset();
  int64_t ks[4] = {2, 2, 48, 36};
  sfa_tensor_init(&P.k, P.k.data, SFA_DTYPE_FP16, 4, ks);
  sfa_tensor_init(&P.v, P.v.data, SFA_DTYPE_FP16, 4, ks);
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "k: shape[3] (head dim) is 36 but q's is 64", NULL);
  reset();
  int64_t os[4] = {2, 4, 64, 36};
  sfa_tensor_init(&P.o, P.o.data, SFA_DTYPE_FP16, 4, os);
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "o: shape[3] (head dim) is 36 but q's is 64", NULL);
  /* A head dim of 0 is a zero-sized dimension. */
  reset();
  P.q.shape[3] = 0;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "q: shape[3] is 0", ">= 1");
}
END_TEST

/* causal and deterministic are flags: 0 or 1, in every mode (qk_drop and
** hash ignore causal, but 7 there is still a mistake). */
START_TEST(fwd_flags_must_be_0_or_1) {
  P.p.causal = 7;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "params.causal: 7", "must be 0 or 1");
  P.p.causal = -1;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "params.causal: -1", "must be 0 or 1");
  reset();
  set_mode(SFA_MODE_QK_DROP);
  P.p.causal = 2;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "params.causal: 2", "must be 0 or 1");
  reset();
  P.p.deterministic = 7;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "params.deterministic: 7", "must be 0 or 1");
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
  /* A shape whose strides sfa_tensor_init cannot represent. */
  const int64_t G = (int64_t)1 << 40;
  int64_t huge[4] = {G, G, G, 64};
  sfa_tensor_init(&P.q, P.q.data, SFA_DTYPE_FP16, 4, huge);
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "q: shape and strides", "2^62");
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

/* o and lse share no memory with an input or with each other (the rule of
** sfa_backward's outputs). */
START_TEST(fwd_outputs_must_not_overlap_inputs) {
  P.o.data = P.k.data;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "o: its memory overlaps k", "must not share memory");
  reset();
  P.o.data = P.q.data;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "o: its memory overlaps q", NULL);
  reset();
  P.o.data = (char *)P.v.data + 4096; /* inside v */
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "o: its memory overlaps v", NULL);
  reset();
  P.lse.data = (char *)P.o.data + 64; /* inside o */
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "o: its memory overlaps lse", NULL);
  reset();
  P.lse.data = P.k.data;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "lse: its memory overlaps k", NULL);
  reset();
  set_mode(SFA_MODE_WINDOW);
  P.o.data = P.bias.data;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "o: its memory overlaps extras->bias", NULL);
  reset();
  set_mode(SFA_MODE_HASH);
  P.lse.data = P.qh.data;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "lse: its memory overlaps extras->q_hash", NULL);
}
END_TEST

/* Disjoint views of one allocation are fine, also back to back. */
START_TEST(fwd_disjoint_views_of_one_buffer) {
  if (tu_driver_present()) {
    printf("SKIP fwd_disjoint_views_of_one_buffer: libcuda.so.1 is present on this machine\n");
    return;
  }
  char *base = (char *)0x7f0001000000;
  const size_t qb = 2 * 4 * 64 * 64 * 2, kb = 2 * 2 * 48 * 64 * 2;
  P.q.data = base;
  P.k.data = base + qb;
  P.v.data = base + qb + kb;
  P.o.data = base + qb + 2 * kb;
  P.lse.data = base + 2 * qb + 2 * kb;
  EXPECT(SFA_ERR_NO_DRIVER, "libcuda.so.1", NULL);
}
END_TEST

/* ------------------------------------------------------------ extras */

START_TEST(fwd_extras_missing) {
  P.p.mode = SFA_MODE_QK_DROP; /* extras NULL */
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "extras: is NULL", "mode qk_drop needs extras->q_idx");
  P.p.mode = SFA_MODE_HASH;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "extras: is NULL", "mode hash needs");
  set_mode(SFA_MODE_QK_DROP);
  P.ex.q_idx = NULL;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "extras->q_idx: is NULL; mode qk_drop needs it", NULL);
  set_mode(SFA_MODE_QK_DROP);
  P.ex.k_idx = NULL;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "extras->k_idx: is NULL", NULL);
  set_mode(SFA_MODE_HASH);
  P.ex.q_hash = NULL;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "extras->q_hash: is NULL; mode hash needs it", NULL);
  set_mode(SFA_MODE_HASH);
  P.ex.k_hash = NULL;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "extras->k_hash: is NULL", NULL);
}
END_TEST

START_TEST(fwd_extras_unexpected) {
  /* Dense reads no extras; an empty struct is fine, anything in it is not. */
  P.use_ex = 1;
  P.ex.q_idx = &P.qi;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "extras->q_idx: only modes qk_drop and hash read q_idx",
         "must be NULL in mode dense");
  P.ex.q_idx = NULL, P.ex.bias = &P.bias;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "extras->bias: only window mode reads a bias", "mode dense");
  P.ex.bias = NULL, P.ex.max_seqlen_k = 4096; /* a packed call's hint, without cu_seqlens */
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "extras->max_seqlen_k: 4096",
         "0 without cu_seqlens_q and cu_seqlens_k");
  P.ex.max_seqlen_k = 0;
  set_mode(SFA_MODE_QK_DROP);
  P.ex.bias = &P.bias;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "extras->bias: only window mode reads a bias",
         "mode qk_drop");
  set_mode(SFA_MODE_QK_DROP);
  P.ex.q_hash = &P.qh;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "extras->q_hash: only hash mode reads q_hash", NULL);
  set_mode(SFA_MODE_HASH);
  P.ex.mask = &P.mask;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "extras->mask: only window mode reads a mask", "mode hash");
  set_mode(SFA_MODE_WINDOW);
  P.ex.k_idx = &P.ki;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "extras->k_idx: only modes qk_drop and hash", "mode window");
  set_mode(SFA_MODE_WINDOW);
  P.ex.k_hash = &P.kh;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "extras->k_hash: only hash mode", "mode window");
}
END_TEST

/* The score options: strict causality in qk_drop and hash only, a finite
** softcap >= 0, ALiBi slopes float32 [Hq] or [B, Hq], contiguous, in dense
** and window only. */
START_TEST(fwd_score_options) {
  P.p.strict_causal = 1;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "params.strict_causal: 1; strict causality (q_idx > k_idx) "
         "applies to modes qk_drop and hash only", "use 0 with dense");
  set_mode(SFA_MODE_WINDOW);
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "params.strict_causal: 1", "use 0 with window");
  set_mode(SFA_MODE_HASH);
  P.p.strict_causal = 2;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "params.strict_causal: 2; must be 0 or 1", NULL);
  P.p.strict_causal = 0;
  P.p.softcap = -1.0f;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "params.softcap: -1; must be finite and >= 0", NULL);
  P.p.softcap = NAN;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "params.softcap: nan", NULL);
  P.p.softcap = INFINITY;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "params.softcap: inf", NULL);
  P.p.softcap = 0.0f;

  sfa_tensor sl;
  const int64_t hq[1] = {4}, bhq[2] = {2, 4};
  sfa_tensor_init(&sl, (void *)0x7f0000c00000, SFA_DTYPE_FP32, 1, hq);
  set_mode(SFA_MODE_QK_DROP);
  P.ex.alibi_slopes = &sl;
  EXPECT(SFA_ERR_INVALID_ARGUMENT,
         "extras->alibi_slopes: only modes dense and window read alibi_slopes",
         "must be NULL in mode qk_drop");
  reset();
  P.use_ex = 1, P.ex.alibi_slopes = &sl;
  sl.dtype = SFA_DTYPE_FP16;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "extras->alibi_slopes: dtype fp16, expected fp32", NULL);
  const int64_t r3[3] = {2, 4, 1};
  sfa_tensor_init(&sl, (void *)0x7f0000c00000, SFA_DTYPE_FP32, 3, r3);
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "extras->alibi_slopes.rank: 3; must be 1 ([Hq]) or 2", NULL);
  const int64_t three[1] = {3}, wrong_b[2] = {3, 4};
  sfa_tensor_init(&sl, (void *)0x7f0000c00000, SFA_DTYPE_FP32, 1, three);
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "extras->alibi_slopes: shape [3]; must be [Hq] = [4] or "
         "[B, Hq] = [2, 4]", NULL);
  sfa_tensor_init(&sl, (void *)0x7f0000c00000, SFA_DTYPE_FP32, 2, wrong_b);
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "extras->alibi_slopes: shape [3, 4]", NULL);
  sfa_tensor_init(&sl, (void *)0x7f0000c00002, SFA_DTYPE_FP32, 2, bhq);
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "extras->alibi_slopes: data", "not 4-byte aligned");
  sfa_tensor_init(&sl, (void *)0x7f0000c00000, SFA_DTYPE_FP32, 2, bhq);
  sl.strides[1] = 2, sl.strides[0] = 8;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "extras->alibi_slopes: stride[1] is 2", "contiguous");
  sl.strides[1] = 1, sl.strides[0] = 5;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "extras->alibi_slopes: stride[0] is 5", "contiguous");
  /* o may not overlap the slopes */
  sfa_tensor_init(&sl, P.o.data, SFA_DTYPE_FP32, 2, bhq);
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "o: its memory overlaps extras->alibi_slopes", NULL);
  /* valid: past validation (no driver on CI: another status) */
  sfa_tensor_init(&sl, (void *)0x7f0000c00000, SFA_DTYPE_FP32, 2, bhq);
  P.p.softcap = 50.0f;
  sfa_status st = run_forward();
  ck_assert_msg(st != SFA_ERR_INVALID_ARGUMENT, "%s", sfa_last_error(P.ctx));
}
END_TEST

START_TEST(fwd_index_dtype) {
  set_mode(SFA_MODE_QK_DROP);
  P.qi.dtype = SFA_DTYPE_FP16;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "extras->q_idx: dtype fp16, expected int32", NULL);
  reset();
  set_mode(SFA_MODE_HASH);
  P.kh.dtype = SFA_DTYPE_UINT8;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "extras->k_hash: dtype uint8, expected int32", NULL);
}
END_TEST

START_TEST(fwd_index_shape) {
  set_mode(SFA_MODE_QK_DROP);
  P.qi.shape[2] = 63;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "extras->q_idx: shape [2, 4, 63]",
         "[B, Hq, Tq] = [2, 4, 64]");
  reset();
  set_mode(SFA_MODE_QK_DROP);
  P.ki.shape[1] = 4;
  P.ki.strides[0] = 4 * 48;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "extras->k_idx: shape [2, 4, 48]",
         "[B, Hkv, Tk] = [2, 2, 48]");
  reset();
  set_mode(SFA_MODE_HASH);
  P.qh.rank = 4;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "extras->q_hash.rank: 4", "must be 3");
  reset();
  set_mode(SFA_MODE_HASH);
  P.kh.shape[0] = 0;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "extras->k_hash: shape[0] is 0", NULL);
}
END_TEST

START_TEST(fwd_index_stride) {
  set_mode(SFA_MODE_QK_DROP);
  P.qi.strides[2] = 2, P.qi.strides[1] = 128, P.qi.strides[0] = 512;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "extras->q_idx: stride[2] is 2", "contiguous");
  reset();
  set_mode(SFA_MODE_QK_DROP);
  P.ki.strides[1] = -48;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "extras->k_idx: stride[1] is -48", ">= 0");
  reset();
  set_mode(SFA_MODE_QK_DROP);
  P.ki.data = (char *)P.ki.data + 2;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "extras->k_idx: data", "4-byte aligned");
  reset();
  set_mode(SFA_MODE_QK_DROP);
  P.qi.data = NULL;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "extras->q_idx: data is NULL", NULL);
  /* q_hash/k_hash are read with q_idx's/k_idx's batch and head strides. */
  reset();
  set_mode(SFA_MODE_HASH);
  P.qh.strides[1] = 80; /* padded rows: valid alone */
  EXPECT(SFA_ERR_INVALID_ARGUMENT,
         "extras->q_hash: stride[1] (heads) is 80 but extras->q_idx's is 64",
         "one set of strides");
  reset();
  set_mode(SFA_MODE_HASH);
  P.kh.strides[0] = 0; /* shared by the batch: valid alone */
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "extras->k_hash: stride[0] (batch) is 0",
         "extras->k_idx's is 96");
}
END_TEST

START_TEST(fwd_window_params) {
  set_mode(SFA_MODE_WINDOW);
  P.p.window_left = -2;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "params.window_left: -2", "-1 (unbounded)");
  P.p.window_left = 5;
  P.p.window_right = -7;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "params.window_right: -7", ">= 0");
  /* Windows belong to window mode. */
  reset();
  set_mode(SFA_MODE_QK_DROP);
  P.p.window_right = 3;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "params.window_left/window_right: -1/3", "mode window");
}
END_TEST

START_TEST(fwd_bias_dtype) {
  set_mode(SFA_MODE_WINDOW);
  P.bias.dtype = SFA_DTYPE_BF16;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "extras->bias: dtype bf16, expected fp16 (q's dtype)", NULL);
  P.bias.dtype = SFA_DTYPE_FP32;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "extras->bias: dtype fp32", NULL);
}
END_TEST

START_TEST(fwd_bias_shape) {
  set_mode(SFA_MODE_WINDOW);
  P.bias.shape[1] = 3;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "extras->bias: shape[1] (heads) is 3",
         "must be Hq (4), Hkv (2) or 1");
  P.bias.shape[1] = 4, P.bias.shape[0] = 3;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "extras->bias: shape[0] (batch) is 3", "B (2) or 1");
  P.bias.shape[0] = 2, P.bias.shape[2] = 5;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "extras->bias: shape[2] (query rows) is 5", "Tq (64) or 1");
  P.bias.shape[2] = 64, P.bias.shape[3] = 47;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "extras->bias: shape[3] (keys) is 47", "Tk (48)");
  reset();
  set_mode(SFA_MODE_WINDOW);
  P.bias.rank = 3;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "extras->bias.rank: 3", "must be 4");
  reset();
  set_mode(SFA_MODE_WINDOW);
  P.bias.strides[3] = 2;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "extras->bias: stride[3] is 2", "contiguous");
  reset();
  set_mode(SFA_MODE_WINDOW);
  P.bias.data = (char *)P.bias.data + 1;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "extras->bias: data", "2-byte aligned");
  /* The mask follows the same broadcast rules. */
  reset();
  set_mode(SFA_MODE_WINDOW);
  P.mask.shape[1] = 8;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "extras->mask: shape[1] (heads) is 8", NULL);
  reset();
  set_mode(SFA_MODE_WINDOW);
  P.mask.dtype = SFA_DTYPE_INT32;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "extras->mask: dtype int32, expected uint8", NULL);
}
END_TEST

START_TEST(fwd_mask_alignment) {
  set_mode(SFA_MODE_WINDOW);
  P.mask.data = (char *)P.mask.data + 8;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "extras->mask: data", "not 16-byte aligned");
  /* Rows of 56 bytes: each stride fine for a bias, not for the mask. */
  reset();
  set_mode(SFA_MODE_WINDOW);
  P.mask.strides[2] = 56, P.mask.strides[1] = 56 * 64, P.mask.strides[0] = 56 * 64 * 4;
  EXPECT(SFA_ERR_INVALID_ARGUMENT,
         "extras->mask: row stride 56 is not a multiple of 16 bytes; pad Tk to a multiple of 16",
         NULL);
  reset();
  set_mode(SFA_MODE_WINDOW);
  P.mask.strides[1] += 8, P.mask.strides[0] = 4 * P.mask.strides[1];
  EXPECT(SFA_ERR_INVALID_ARGUMENT,
         "extras->mask: head stride 3080 is not a multiple of 16 bytes",
         NULL);
  reset();
  set_mode(SFA_MODE_WINDOW);
  P.mask.strides[0] += 4;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "extras->mask: batch stride", "16 bytes");
  /* A contiguous mask with Tk = 40. */
  reset();
  int64_t ks[4] = {2, 2, 40, 64}, ms[4] = {2, 1, 1, 40};
  sfa_tensor_init(&P.k, P.k.data, SFA_DTYPE_FP16, 4, ks);
  sfa_tensor_init(&P.v, P.v.data, SFA_DTYPE_FP16, 4, ks);
  sfa_tensor_init(&P.mask, P.mask.data, SFA_DTYPE_UINT8, 4, ms);
  set_mode(SFA_MODE_WINDOW);
  P.ex.bias = NULL;
  EXPECT(SFA_ERR_INVALID_ARGUMENT, "extras->mask: batch stride 40", "16 bytes");
}
END_TEST

/* Valid sparse calls pass validation: without a driver they fail with
** SFA_ERR_NO_DRIVER and nothing else. */
START_TEST(fwd_sparse_valid) {
  if (tu_driver_present()) {
    printf("SKIP fwd_sparse_valid: libcuda.so.1 is present on this machine\n");
    return;
  }
  const sfa_mode modes[3] = {SFA_MODE_QK_DROP, SFA_MODE_HASH, SFA_MODE_WINDOW};
  for (int i = 0; i < 3; i++) {
    reset();
    set_mode(modes[i]);
    P.p.causal = i % 2; /* either value for qk_drop and hash */
    EXPECT(SFA_ERR_NO_DRIVER, "libcuda.so.1", NULL);
  }
  /* Window: causal with any window_right, broadcast bias [1, 1, 1, Tk] (odd
  ** strides on its size-1 dims), per-kv-head mask with rows broadcast, padded
  ** mask rows, a window wider than the problem. */
  reset();
  set_mode(SFA_MODE_WINDOW);
  P.p.window_left = 1000000, P.p.window_right = 7;
  int64_t bs[4] = {1, 1, 1, 48}, ms[4] = {2, 2, 1, 48};
  sfa_tensor_init(&P.bias, P.bias.data, SFA_DTYPE_FP16, 4, bs);
  P.bias.strides[0] = 3, P.bias.strides[1] = -5, P.bias.strides[2] = 7;
  sfa_tensor_init(&P.mask, P.mask.data, SFA_DTYPE_UINT8, 4, ms);
  P.mask.strides[2] = 0;
  EXPECT(SFA_ERR_NO_DRIVER, NULL, NULL);
  P.ex.bias = NULL;
  int64_t m2[4] = {2, 4, 64, 48};
  sfa_tensor_init(&P.mask, P.mask.data, SFA_DTYPE_UINT8, 4, m2);
  P.mask.strides[2] = 64, P.mask.strides[1] = 64 * 64, P.mask.strides[0] = 4 * 64 * 64;
  EXPECT(SFA_ERR_NO_DRIVER, NULL, NULL);
  P.use_ex = 0; /* window without extras */
  EXPECT(SFA_ERR_NO_DRIVER, NULL, NULL);
  /* Hash with strided (but alike) index arrays. */
  reset();
  set_mode(SFA_MODE_HASH);
  P.qi.strides[0] = P.qh.strides[0] = 1000, P.qi.strides[1] = P.qh.strides[1] = 200;
  EXPECT(SFA_ERR_NO_DRIVER, NULL, NULL);
}
END_TEST

/* A fully valid call needs the driver. Without one it must say so clearly;
** with one this test is skipped (the pointers here are fake). */
START_TEST(fwd_no_driver) {
  if (tu_driver_present()) {
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
  sfa_kernel_spec spec = {SFA_PASS_FWD, SFA_MODE_DENSE, SFA_DTYPE_BF16, 128, 0, 0, 0, 0, 90, 0,
                          SFA_SPEC_MMA_SYNC};
  ck_assert_int_eq(sfa_spec_default(&spec, NULL, 0), SFA_OK);
  sfa_kernel *kern = (sfa_kernel *)(uintptr_t)0x1; /* must be reset to NULL */
  ck_assert_int_eq(sfa_compile(P.ctx, &spec, &kern), SFA_ERR_NO_DRIVER);
  ck_assert_ptr_null(kern);
  ck_assert_ptr_nonnull(strstr(sfa_last_error(P.ctx), "libcuda.so.1"));
}
END_TEST

START_TEST(compile_bad_arguments) {
  sfa_kernel_spec spec = {SFA_PASS_FWD, SFA_MODE_DENSE, SFA_DTYPE_BF16, 128, 0, 0, 0, 0, 90, 0,
                          SFA_SPEC_MMA_SYNC};
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
  ck_assert(!tu_driver_loaded());
}
END_TEST

int main(void) {
  Suite *s = suite_create("api");
  TCase *basics = tcase_create("basics");
  tcase_add_test(basics, status_strings);
  tcase_add_test(basics, options_init);
  tcase_add_test(basics, params_init);
  tcase_add_test(basics, tensor_init);
  tcase_add_test(basics, tensor_init_saturates_strides_that_overflow);
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
  tcase_add_test(fwd, fwd_flags_must_be_0_or_1);
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
  tcase_add_test(fwd, fwd_outputs_must_not_overlap_inputs);
  tcase_add_test(fwd, fwd_disjoint_views_of_one_buffer);
  tcase_add_test(fwd, fwd_extras_missing);
  tcase_add_test(fwd, fwd_extras_unexpected);
  tcase_add_test(fwd, fwd_score_options);
  tcase_add_test(fwd, fwd_index_dtype);
  tcase_add_test(fwd, fwd_index_shape);
  tcase_add_test(fwd, fwd_index_stride);
  tcase_add_test(fwd, fwd_window_params);
  tcase_add_test(fwd, fwd_bias_dtype);
  tcase_add_test(fwd, fwd_bias_shape);
  tcase_add_test(fwd, fwd_mask_alignment);
  tcase_add_test(fwd, fwd_sparse_valid);
  tcase_add_test(fwd, fwd_no_driver);
  tcase_add_test(fwd, compile_bad_arguments);
  suite_add_tcase(s, fwd);
  return tu_run_suite(s);
}
