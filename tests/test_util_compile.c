/*
** test_util_compile.c -- the sparse helpers and the backward's utility
** kernels without a GPU: every utility kernel variant (passes bwd_pre and
** convert in fp16 and bf16, hash_sort, permute, topk in fp16, bf16 and fp32,
** merge)
** is a kernel spec with a canonical name, renders through sfa_generate to
** self-contained source whose argument block has runtime/util.h's size, and
** compiles with NVRTC for sm_80 and sm_90; and sfa_hash_prepare,
** sfa_hash_unsort and sfa_topk_mask (and their packed _varlen forms) reject
** every kind of bad argument with a
** message that names it, before the driver is loaded (on a machine without
** one, a valid call then fails with SFA_ERR_NO_DRIVER).
*/
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sfa.h"
#include "gen/gen_internal.h"
#include "runtime/util.h"
#include "testutil.h"

/* ------------------------------------------------------------ rendering and NVRTC */

typedef struct variant {
  sfa_pass pass;
  sfa_dtype dtype;
  const char *name;   /* without the _sm<arch> suffix */
} variant;

static const variant variants[] = {
    {SFA_PASS_HASH_SORT, SFA_DTYPE_INT32, "sfa_hashsort"},
    {SFA_PASS_PERMUTE, SFA_DTYPE_UINT8, "sfa_permute"},
    {SFA_PASS_TOPK, SFA_DTYPE_FP16, "sfa_topk_fp16"},
    {SFA_PASS_TOPK, SFA_DTYPE_BF16, "sfa_topk_bf16"},
    {SFA_PASS_TOPK, SFA_DTYPE_FP32, "sfa_topk_fp32"},
    {SFA_PASS_BWD_PRE, SFA_DTYPE_FP16, "sfa_bwdpre_fp16"},
    {SFA_PASS_BWD_PRE, SFA_DTYPE_BF16, "sfa_bwdpre_bf16"},
    {SFA_PASS_CONVERT, SFA_DTYPE_FP16, "sfa_convert_fp16"},
    {SFA_PASS_CONVERT, SFA_DTYPE_BF16, "sfa_convert_bf16"},
    {SFA_PASS_MERGE, SFA_DTYPE_FP32, "sfa_merge"},
};
#define NVARIANTS (int)(sizeof variants / sizeof variants[0])
static const int archs[] = {80, 90};

START_TEST(every_variant_compiles) {
  const variant *v = &variants[_i / 2];
  const int arch = archs[_i % 2];
  char name[SFA__NAME_MAX], want[SFA__NAME_MAX], err[8192];
  sfa_kernel_spec s;
  ck_assert_msg(sfa__util_spec(v->pass, v->dtype, arch, &s, err, sizeof err) == SFA_OK, "%s",
                err);
  ck_assert_int_eq(sfa_spec_validate(&s, err, sizeof err), SFA_OK);
  ck_assert_int_eq(sfa_spec_name(&s, name, sizeof name), SFA_OK);
  snprintf(want, sizeof want, "%s_sm%d", v->name, arch);
  ck_assert_str_eq(name, want);

  char *src = NULL;
  sfa_status st = sfa_generate(&s, &src, err, sizeof err);
  ck_assert_msg(st == SFA_OK, "%s: %s", name, err);
  ck_assert_ptr_null(strstr(src, "#include"));
  char entry[SFA__NAME_MAX + 16];
  snprintf(entry, sizeof entry, " %s(const sfa_", name);
  ck_assert_msg(strstr(src, entry) != NULL, "%s: no entry point in the source", name);

  void *cubin = NULL;
  size_t size = 0;
  char *log = NULL;
  st = sfa_compile_cubin(&s, src, &cubin, &size, &log, err, sizeof err);
  ck_assert_msg(st == SFA_OK, "%s: %s", name, err);
  ck_assert_uint_gt(size, 64);
  ck_assert_int_eq(memcmp(cubin, "\177ELF", 4), 0);
  /* The entry symbol is in the cubin's string table. */
  int found = 0;
  for (size_t i = 0; i + strlen(name) <= size && !found; i++)
    found = memcmp((const char *)cubin + i, name, strlen(name)) == 0;
  ck_assert_msg(found, "%s: symbol missing from the cubin", name);
  sfa_free(cubin);
  sfa_free(log);
  sfa_free(src);
  ck_assert(!tu_driver_loaded());
}
END_TEST

/* kernel.lt hands each utility template the size of its argument block; the
** template's static_assert holds its struct to it, and here it is held to
** runtime/util.h's sizeof. */
/* (Each argument block's layout is checked field by field against
** runtime/util.h in tests/test_abi.c.) */

START_TEST(render_and_compile_errors) {
  char err[4096];
  sfa_kernel_spec s;
  ck_assert_int_eq(sfa__util_spec(SFA_PASS_TOPK, SFA_DTYPE_INT32, 90, &s, err, sizeof err),
                   SFA_ERR_INTERNAL);
  ck_assert_msg(strstr(err, "dtype: int32 is not allowed with pass topk; must be fp16, bf16 or "
                            "fp32"), "%s", err);
  ck_assert_int_eq(sfa__util_spec(SFA_PASS_BWD_PRE, SFA_DTYPE_FP32, 90, &s, err, sizeof err),
                   SFA_ERR_INTERNAL);
  ck_assert_msg(strstr(err, "must be fp16 or bf16"), "%s", err);
  ck_assert_int_eq(sfa__util_spec(SFA_PASS_FWD, SFA_DTYPE_FP16, 90, &s, err, sizeof err),
                   SFA_ERR_INTERNAL);
  ck_assert_msg(strstr(err, "not a utility pass"), "%s", err);
  ck_assert_int_eq(sfa__util_spec(SFA_PASS_PERMUTE, SFA_DTYPE_UINT8, 75, &s, err, sizeof err),
                   SFA_ERR_INTERNAL);
  ck_assert_ptr_nonnull(strstr(err, "arch: 75"));
  char *src = (char *)1;
  s.pass = SFA_PASS_HASH_SORT, s.dtype = SFA_DTYPE_INT32, s.arch = 90, s.num_warps = 4;
  ck_assert_int_eq(sfa_generate(&s, &src, err, sizeof err), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_ptr_null(src);
  ck_assert_msg(strstr(err, "num_warps: 4 is not allowed with pass hash_sort; must be 32"), "%s",
                err);

  void *cubin = NULL;
  size_t size = 0;
  char *log = NULL;
  sfa_kernel_spec target = {0};
  target.arch = 90;
  sfa_status st = sfa__nvrtc_compile("broken", "extern \"C\" __global__ void broken() { x; }", &target,
                                    &cubin, &size, &log, err, sizeof err);
  ck_assert_int_eq(st, SFA_ERR_COMPILE);
  ck_assert_ptr_null(cubin);
  ck_assert_ptr_nonnull(strstr(err, "broken.cu"));
  ck_assert_ptr_nonnull(log);
  ck_assert_ptr_nonnull(strstr(log, "identifier \"x\" is undefined"));
  sfa_free(log);
  ck_assert_int_eq(sfa__nvrtc_compile("x", NULL, &target, &cubin, &size, NULL, err, sizeof err),
                   SFA_ERR_INVALID_ARGUMENT);
}
END_TEST

/* ------------------------------------------------------------ argument validation */

static sfa_context *ctx;

static void setup(void) {
  sfa_options o;
  sfa_options_init(&o);
  o.cache_dir = "/nonexistent/sfa-util-test"; /* never used: nothing gets compiled */
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

static void t1(sfa_tensor *t, int i, int64_t n) { sfa_tensor_init(t, ADDR(i), SFA_DTYPE_INT32, 1, &n); }

static void t2(sfa_tensor *t, int i, sfa_dtype d, int64_t H, int64_t T) {
  int64_t s[2] = {H, T};
  sfa_tensor_init(t, ADDR(i), d, 2, s);
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

typedef struct prep {
  sfa_tensor bucket, x, xs, x2, x2s, idx, hash;
  int nb;
} prep;

static void prep_init(prep *p) {
  t3(&p->bucket, 0, SFA_DTYPE_INT32, 2, 4, 100);
  t4(&p->x, 1, SFA_DTYPE_BF16, 2, 4, 100, 64);
  t4(&p->xs, 2, SFA_DTYPE_BF16, 2, 4, 100, 64);
  t4(&p->x2, 3, SFA_DTYPE_BF16, 2, 4, 100, 32);
  t4(&p->x2s, 4, SFA_DTYPE_BF16, 2, 4, 100, 32);
  t3(&p->idx, 5, SFA_DTYPE_INT32, 2, 4, 100);
  t3(&p->hash, 6, SFA_DTYPE_INT32, 2, 4, 100);
  p->nb = 16;
}

static sfa_status prep_call(prep *p) {
  return sfa_hash_prepare(ctx, &p->bucket, p->nb, &p->x, &p->xs, &p->x2, &p->x2s, &p->idx,
                          &p->hash, NULL);
}

START_TEST(hash_prepare_rejects) {
  prep p;
  const sfa_status BAD = SFA_ERR_INVALID_ARGUMENT;
  ck_assert_int_eq(sfa_hash_prepare(NULL, NULL, 1, NULL, NULL, NULL, NULL, NULL, NULL, NULL), BAD);

  prep_init(&p);
  expect_err(sfa_hash_prepare(ctx, NULL, 16, &p.x, &p.xs, NULL, NULL, &p.idx, &p.hash, NULL), BAD,
             "bucket: is NULL", NULL);
  prep_init(&p), p.bucket.dtype = SFA_DTYPE_FP32;
  expect_err(prep_call(&p), BAD, "bucket: dtype fp32", "int32");
  prep_init(&p), p.bucket.rank = 4;
  expect_err(prep_call(&p), BAD, "bucket.rank: 4", "[B, H, T]");
  prep_init(&p), p.bucket.shape[2] = 0;
  expect_err(prep_call(&p), BAD, "bucket: shape[2] is 0", NULL);
  prep_init(&p), p.bucket.data = NULL;
  expect_err(prep_call(&p), BAD, "bucket: data is NULL", NULL);
  prep_init(&p), p.bucket.data = (char *)p.bucket.data + 2;
  expect_err(prep_call(&p), BAD, "bucket: data", "4-byte aligned");
  prep_init(&p), p.bucket.strides[2] = 2;
  expect_err(prep_call(&p), BAD, "bucket: stride[2] is 2", "contiguous");
  prep_init(&p), p.bucket.strides[1] = -100;
  expect_err(prep_call(&p), BAD, "bucket: stride[1] is -100", ">= 0");
  prep_init(&p), p.bucket.shape[2] = ((int64_t)1 << 30) + 1;
  expect_err(prep_call(&p), BAD, "bucket: T = 1073741825", "2^30");
  prep_init(&p), p.nb = 0;
  expect_err(prep_call(&p), BAD, "num_buckets: 0", "4096");
  prep_init(&p), p.nb = SFA_HASH_MAX_BUCKETS + 1;
  expect_err(prep_call(&p), BAD, "num_buckets: 4097", NULL);

  prep_init(&p);
  expect_err(sfa_hash_prepare(ctx, &p.bucket, 16, &p.x, &p.xs, NULL, NULL, NULL, &p.hash, NULL),
             BAD, "idx: is NULL", NULL);
  prep_init(&p);
  expect_err(sfa_hash_prepare(ctx, &p.bucket, 16, &p.x, &p.xs, NULL, NULL, &p.idx, NULL, NULL),
             BAD, "hash: is NULL", NULL);
  prep_init(&p), p.idx.dtype = SFA_DTYPE_FP16;
  expect_err(prep_call(&p), BAD, "idx: dtype fp16", NULL);
  prep_init(&p), p.idx.shape[1] = 3;
  expect_err(prep_call(&p), BAD, "idx: shape [2, 3, 100] does not match bucket [2, 4, 100]",
             NULL);
  prep_init(&p), p.hash.shape[2] = 99;
  expect_err(prep_call(&p), BAD, "hash: shape", "bucket");
  prep_init(&p), p.idx.strides[0] = 0;
  expect_err(prep_call(&p), BAD, "idx: its strides make elements", "overlap");

  prep_init(&p);
  expect_err(sfa_hash_prepare(ctx, &p.bucket, 16, &p.x, NULL, NULL, NULL, &p.idx, &p.hash, NULL),
             BAD, "x_sorted: is NULL but x is not", NULL);
  prep_init(&p);
  expect_err(sfa_hash_prepare(ctx, &p.bucket, 16, &p.x, &p.xs, NULL, &p.x2s, &p.idx, &p.hash,
                              NULL),
             BAD, "x2: is NULL but x2_sorted is not", NULL);
  prep_init(&p), p.x.dtype = SFA_DTYPE_INT32;
  expect_err(prep_call(&p), BAD, "x: dtype int32", "fp16, bf16 or fp32");
  prep_init(&p), p.x.shape[2] = 101;
  expect_err(prep_call(&p), BAD, "x: shape [2, 4, 101, 64] does not match bucket", NULL);
  prep_init(&p), p.x.strides[3] = 2;
  expect_err(prep_call(&p), BAD, "x: stride[3] is 2", NULL);
  prep_init(&p), p.xs.dtype = SFA_DTYPE_FP16;
  expect_err(prep_call(&p), BAD, "x_sorted: dtype fp16 does not match x (bf16)", NULL);
  prep_init(&p), p.xs.shape[3] = 32;
  expect_err(prep_call(&p), BAD, "x_sorted: shape", "does not match x");
  prep_init(&p), p.x2s.shape[3] = 16;
  expect_err(prep_call(&p), BAD, "x2_sorted: shape", "does not match x2");
  prep_init(&p), p.x2.data = (char *)p.x2.data + 1;
  expect_err(prep_call(&p), BAD, "x2: data", "2-byte aligned");
  prep_init(&p), p.xs.strides[2] = 32;
  expect_err(prep_call(&p), BAD, "x_sorted: its strides make elements", NULL);

  /* Outputs that share memory with inputs or with each other. */
  prep_init(&p), p.idx.data = p.bucket.data;
  expect_err(prep_call(&p), BAD, "idx: its memory overlaps bucket", NULL);
  prep_init(&p), p.hash.data = (char *)p.idx.data + 400;
  expect_err(prep_call(&p), BAD, "idx: its memory overlaps hash", NULL);
  prep_init(&p), p.xs.data = (char *)p.x.data + 128;
  expect_err(prep_call(&p), BAD, "x_sorted: its memory overlaps x", NULL);
  prep_init(&p), p.x2s.data = p.idx.data;
  expect_err(prep_call(&p), BAD, "idx: its memory overlaps x2_sorted", NULL);
  /* x_sorted and x2_sorted may interleave (halves of one packed buffer). */
  prep_init(&p);
  for (int i = 0; i < 3; i++) p.xs.strides[i] *= 2, p.x2s.strides[i] = p.xs.strides[i];
  p.x2s.shape[3] = 64, p.x2.shape[3] = 64, p.x2s.data = (char *)p.xs.data + 128;
  sfa_status st = prep_call(&p);
  ck_assert_msg(st == SFA_ERR_NO_DRIVER || (st != SFA_ERR_INVALID_ARGUMENT && tu_driver_present()),
                "packed sorted outputs: %s", sfa_last_error(ctx));
}
END_TEST

START_TEST(hash_unsort_rejects) {
  sfa_tensor os, idx, o;
  const sfa_status BAD = SFA_ERR_INVALID_ARGUMENT;
#define RESET()                                        \
  t4(&os, 0, SFA_DTYPE_FP16, 2, 3, 50, 64);            \
  t3(&idx, 1, SFA_DTYPE_INT32, 2, 3, 50);              \
  t4(&o, 2, SFA_DTYPE_FP16, 2, 3, 60, 64)
  RESET();
  ck_assert_int_eq(sfa_hash_unsort(NULL, &os, &idx, &o, NULL), BAD);
  expect_err(sfa_hash_unsort(ctx, NULL, &idx, &o, NULL), BAD, "o_sorted: is NULL", NULL);
  expect_err(sfa_hash_unsort(ctx, &os, NULL, &o, NULL), BAD, "idx: is NULL", NULL);
  expect_err(sfa_hash_unsort(ctx, &os, &idx, NULL, NULL), BAD, "o: is NULL", NULL);
  RESET(), os.dtype = SFA_DTYPE_UINT8;
  expect_err(sfa_hash_unsort(ctx, &os, &idx, &o, NULL), BAD, "o_sorted: dtype uint8", NULL);
  RESET(), idx.shape[2] = 60;
  expect_err(sfa_hash_unsort(ctx, &os, &idx, &o, NULL), BAD, "idx: shape [2, 3, 60]",
             "o_sorted");
  RESET(), idx.dtype = SFA_DTYPE_FP32;
  expect_err(sfa_hash_unsort(ctx, &os, &idx, &o, NULL), BAD, "idx: dtype fp32", "int32");
  RESET(), o.dtype = SFA_DTYPE_BF16;
  expect_err(sfa_hash_unsort(ctx, &os, &idx, &o, NULL), BAD, "o: dtype bf16 does not match",
             NULL);
  RESET(), o.shape[3] = 32;
  expect_err(sfa_hash_unsort(ctx, &os, &idx, &o, NULL), BAD, "o: shape", "B, H and D");
  RESET(), o.shape[1] = 1;
  expect_err(sfa_hash_unsort(ctx, &os, &idx, &o, NULL), BAD, "o: shape", NULL);
  RESET(), o.strides[1] = 0;
  expect_err(sfa_hash_unsort(ctx, &os, &idx, &o, NULL), BAD, "o: its strides", "overlap");
  RESET(), o.data = (char *)os.data + 64;
  expect_err(sfa_hash_unsort(ctx, &os, &idx, &o, NULL), BAD, "o: its memory overlaps o_sorted",
             NULL);
  RESET(), o.data = idx.data;
  expect_err(sfa_hash_unsort(ctx, &os, &idx, &o, NULL), BAD, "o: its memory overlaps idx", NULL);
  RESET(), o.strides[3] = 3;
  expect_err(sfa_hash_unsort(ctx, &os, &idx, &o, NULL), BAD, "o: stride[3] is 3", NULL);
#undef RESET
}
END_TEST

START_TEST(topk_mask_rejects) {
  sfa_tensor bias, mask;
  const sfa_status BAD = SFA_ERR_INVALID_ARGUMENT;
#define RESET()                                                                  \
  t4(&bias, 0, SFA_DTYPE_BF16, 2, 4, 100, 200);                                  \
  t4(&mask, 1, SFA_DTYPE_UINT8, 2, 4, 100, 200);                                 \
  mask.strides[2] = 208, mask.strides[1] = 100 * 208, mask.strides[0] = 4 * 100 * 208
  RESET();
  ck_assert_int_eq(sfa_topk_mask(NULL, &bias, 8, 0, &mask, NULL), BAD);
  expect_err(sfa_topk_mask(ctx, NULL, 8, 0, &mask, NULL), BAD, "bias: is NULL", NULL);
  expect_err(sfa_topk_mask(ctx, &bias, 8, 0, NULL, NULL), BAD, "mask: is NULL", NULL);
  RESET(), bias.dtype = SFA_DTYPE_INT32;
  expect_err(sfa_topk_mask(ctx, &bias, 8, 0, &mask, NULL), BAD, "bias: dtype int32",
             "fp16, bf16 or fp32");
  RESET(), bias.rank = 3;
  expect_err(sfa_topk_mask(ctx, &bias, 8, 0, &mask, NULL), BAD, "bias.rank: 3",
             "[B, Hb, Tq, Tk]");
  RESET(), bias.strides[3] = 2;
  expect_err(sfa_topk_mask(ctx, &bias, 8, 0, &mask, NULL), BAD, "bias: stride[3] is 2", NULL);
  RESET(), bias.shape[3] = ((int64_t)1 << 30) + 1;
  expect_err(sfa_topk_mask(ctx, &bias, 8, 0, &mask, NULL), BAD, "bias: Tk = 1073741825", NULL);
  RESET();
  expect_err(sfa_topk_mask(ctx, &bias, -1, 0, &mask, NULL), BAD, "w: -1", ">= 0");
  expect_err(sfa_topk_mask(ctx, &bias, 8, 2, &mask, NULL), BAD, "causal: 2", "0 or 1");
  RESET(), mask.dtype = SFA_DTYPE_INT32;
  expect_err(sfa_topk_mask(ctx, &bias, 8, 0, &mask, NULL), BAD, "mask: dtype int32", "uint8");
  RESET(), mask.shape[2] = 99;
  expect_err(sfa_topk_mask(ctx, &bias, 8, 0, &mask, NULL), BAD, "mask: shape [2, 4, 99, 200]",
             "bias");
  RESET(), mask.data = (char *)mask.data + 8;
  expect_err(sfa_topk_mask(ctx, &bias, 8, 0, &mask, NULL), BAD, "mask: data",
             "16-byte aligned");
  RESET(), mask.strides[2] = 200;
  expect_err(sfa_topk_mask(ctx, &bias, 8, 0, &mask, NULL), BAD, "mask: stride[2] is 200",
             "multiple of 16");
  RESET(), mask.strides[1] = 100 * 208 + 8, mask.strides[0] = 4 * mask.strides[1];
  expect_err(sfa_topk_mask(ctx, &bias, 8, 0, &mask, NULL), BAD, "mask: stride[1]", NULL);
  RESET(), mask.strides[2] = 0;
  expect_err(sfa_topk_mask(ctx, &bias, 8, 0, &mask, NULL), BAD, "mask: its strides", "overlap");
  RESET(), mask.data = (char *)bias.data + 4096;
  expect_err(sfa_topk_mask(ctx, &bias, 8, 0, &mask, NULL), BAD,
             "mask: its memory overlaps bias", NULL);
#undef RESET
}
END_TEST

/* ------------------------------------------------------------ packed sequences */

typedef struct vprep {
  sfa_tensor cu, bucket, x, xs, x2, x2s, idx, hash;
  int nb;
} vprep;

/* 3 sequences, 4 heads, 100 rows in all. */
static void vprep_init(vprep *p) {
  t1(&p->cu, 7, 4);
  t2(&p->bucket, 0, SFA_DTYPE_INT32, 4, 100);
  t3(&p->x, 1, SFA_DTYPE_BF16, 100, 4, 64);
  t3(&p->xs, 2, SFA_DTYPE_BF16, 100, 4, 64);
  t3(&p->x2, 3, SFA_DTYPE_BF16, 100, 4, 32);
  t3(&p->x2s, 4, SFA_DTYPE_BF16, 100, 4, 32);
  t2(&p->idx, 5, SFA_DTYPE_INT32, 4, 100);
  t2(&p->hash, 6, SFA_DTYPE_INT32, 4, 100);
  p->nb = 16;
}

static sfa_status vprep_call(vprep *p) {
  return sfa_hash_prepare_varlen(ctx, &p->cu, &p->bucket, p->nb, &p->x, &p->xs, &p->x2, &p->x2s,
                                 &p->idx, &p->hash, NULL);
}

START_TEST(hash_prepare_varlen_rejects) {
  vprep p;
  const sfa_status BAD = SFA_ERR_INVALID_ARGUMENT;
  ck_assert_int_eq(
      sfa_hash_prepare_varlen(NULL, NULL, NULL, 1, NULL, NULL, NULL, NULL, NULL, NULL, NULL), BAD);
  vprep_init(&p);
  expect_err(sfa_hash_prepare_varlen(ctx, NULL, &p.bucket, 16, &p.x, &p.xs, NULL, NULL, &p.idx,
                                     &p.hash, NULL),
             BAD, "cu_seqlens: is NULL", NULL);
  vprep_init(&p), p.cu.dtype = SFA_DTYPE_FP32;
  expect_err(vprep_call(&p), BAD, "cu_seqlens: dtype fp32", "int32");
  vprep_init(&p), p.cu.rank = 2;
  expect_err(vprep_call(&p), BAD, "cu_seqlens.rank: 2", "[B + 1]");
  vprep_init(&p), p.cu.shape[0] = 1;
  expect_err(vprep_call(&p), BAD, "cu_seqlens: shape [1]", "1 <= B");
  vprep_init(&p), p.cu.strides[0] = 2;
  expect_err(vprep_call(&p), BAD, "cu_seqlens: stride[0] is 2", "contiguous");
  vprep_init(&p), p.cu.data = (char *)p.cu.data + 2;
  expect_err(vprep_call(&p), BAD, "cu_seqlens: data", "4-byte aligned");
  vprep_init(&p), p.cu.shape[0] = ((int64_t)1 << 29) + 1;
  expect_err(vprep_call(&p), BAD, "cu_seqlens: B * H = 536870912 * 4", "2^31");
  vprep_init(&p), p.cu.data = p.idx.data;
  expect_err(vprep_call(&p), BAD, "idx: its memory overlaps cu_seqlens", NULL);

  vprep_init(&p), p.bucket.rank = 3;
  expect_err(vprep_call(&p), BAD, "bucket.rank: 3", "[H, total]");
  vprep_init(&p), p.bucket.dtype = SFA_DTYPE_FP16;
  expect_err(vprep_call(&p), BAD, "bucket: dtype fp16", "int32");
  const int64_t big = ((int64_t)1 << 30) + 1;
  vprep_init(&p);
  t2(&p.bucket, 0, SFA_DTYPE_INT32, 4, big), t2(&p.idx, 5, SFA_DTYPE_INT32, 4, big);
  t2(&p.hash, 6, SFA_DTYPE_INT32, 4, big), t1(&p.cu, 500, 4); /* cu past their 16 GiB */
  expect_err(sfa_hash_prepare_varlen(ctx, &p.cu, &p.bucket, 16, NULL, NULL, NULL, NULL, &p.idx,
                                     &p.hash, NULL),
             BAD, "bucket: T = 1073741825", "2^30");
  vprep_init(&p), p.nb = 0;
  expect_err(vprep_call(&p), BAD, "num_buckets: 0", NULL);
  vprep_init(&p), p.idx.shape[1] = 99;
  expect_err(vprep_call(&p), BAD, "idx: shape [4, 99] does not match bucket [4, 100]", NULL);
  vprep_init(&p), p.hash.rank = 3;
  expect_err(vprep_call(&p), BAD, "hash.rank: 3", "[H, total]");
  vprep_init(&p);
  expect_err(sfa_hash_prepare_varlen(ctx, &p.cu, &p.bucket, 16, &p.x, &p.xs, NULL, NULL, NULL,
                                     &p.hash, NULL),
             BAD, "idx: is NULL", NULL);

  vprep_init(&p), p.x.rank = 4;
  expect_err(vprep_call(&p), BAD, "x.rank: 4", "[total, H, D]");
  vprep_init(&p), p.x.shape[0] = 99;
  expect_err(vprep_call(&p), BAD, "x: shape [99, 4, 64] does not match bucket [H, total] = [4, 100]",
             "total and H must agree");
  vprep_init(&p), p.x2s.shape[1] = 3;
  expect_err(vprep_call(&p), BAD, "x2_sorted: shape [100, 3, 32] does not match bucket", NULL);
  vprep_init(&p), p.xs.shape[2] = 32;
  expect_err(vprep_call(&p), BAD, "x_sorted: shape", "does not match x");
  vprep_init(&p), p.xs.dtype = SFA_DTYPE_FP16;
  expect_err(vprep_call(&p), BAD, "x_sorted: dtype fp16 does not match x (bf16)", NULL);
  vprep_init(&p);
  expect_err(sfa_hash_prepare_varlen(ctx, &p.cu, &p.bucket, 16, &p.x, NULL, NULL, NULL, &p.idx,
                                     &p.hash, NULL),
             BAD, "x_sorted: is NULL but x is not", NULL);
  vprep_init(&p), p.xs.data = (char *)p.x.data + 128;
  expect_err(vprep_call(&p), BAD, "x_sorted: its memory overlaps x", NULL);
}
END_TEST

START_TEST(hash_unsort_varlen_rejects) {
  sfa_tensor cu, os, idx, o;
  const sfa_status BAD = SFA_ERR_INVALID_ARGUMENT;
#define RESET()                                  \
  t1(&cu, 3, 5);                                 \
  t3(&os, 0, SFA_DTYPE_FP16, 50, 3, 64);         \
  t2(&idx, 1, SFA_DTYPE_INT32, 3, 50);           \
  t3(&o, 2, SFA_DTYPE_FP16, 50, 3, 64)
  RESET();
  ck_assert_int_eq(sfa_hash_unsort_varlen(NULL, &cu, &os, &idx, &o, NULL), BAD);
  expect_err(sfa_hash_unsort_varlen(ctx, NULL, &os, &idx, &o, NULL), BAD, "cu_seqlens: is NULL",
             NULL);
  expect_err(sfa_hash_unsort_varlen(ctx, &cu, NULL, &idx, &o, NULL), BAD, "o_sorted: is NULL",
             NULL);
  expect_err(sfa_hash_unsort_varlen(ctx, &cu, &os, NULL, &o, NULL), BAD, "idx: is NULL", NULL);
  expect_err(sfa_hash_unsort_varlen(ctx, &cu, &os, &idx, NULL, NULL), BAD, "o: is NULL", NULL);
  RESET(), cu.dtype = SFA_DTYPE_UINT8;
  expect_err(sfa_hash_unsort_varlen(ctx, &cu, &os, &idx, &o, NULL), BAD,
             "cu_seqlens: dtype uint8", NULL);
  RESET(), idx.shape[1] = 60;
  expect_err(sfa_hash_unsort_varlen(ctx, &cu, &os, &idx, &o, NULL), BAD,
             "o_sorted: shape [50, 3, 64] does not match idx [H, total] = [3, 60]", NULL);
  RESET(), o.shape[0] = 60;
  expect_err(sfa_hash_unsort_varlen(ctx, &cu, &os, &idx, &o, NULL), BAD,
             "o: shape [60, 3, 64] does not match idx", NULL);
  RESET(), o.shape[2] = 32;
  expect_err(sfa_hash_unsort_varlen(ctx, &cu, &os, &idx, &o, NULL), BAD, "o: shape", "B, H and D");
  RESET(), o.dtype = SFA_DTYPE_BF16;
  expect_err(sfa_hash_unsort_varlen(ctx, &cu, &os, &idx, &o, NULL), BAD,
             "o: dtype bf16 does not match", NULL);
  RESET(), o.data = (char *)os.data + 64;
  expect_err(sfa_hash_unsort_varlen(ctx, &cu, &os, &idx, &o, NULL), BAD,
             "o: its memory overlaps o_sorted", NULL);
  RESET(), cu.data = (char *)o.data + 64;
  expect_err(sfa_hash_unsort_varlen(ctx, &cu, &os, &idx, &o, NULL), BAD,
             "o: its memory overlaps cu_seqlens", NULL);
#undef RESET
}
END_TEST

START_TEST(topk_mask_varlen_rejects) {
  sfa_tensor cq, ck, bias, mask;
  const sfa_status BAD = SFA_ERR_INVALID_ARGUMENT;
#define RESET()                                                                  \
  t1(&cq, 2, 4);                                                                 \
  t1(&ck, 3, 4);                                                                 \
  t3(&bias, 0, SFA_DTYPE_BF16, 4, 100, 200);                                     \
  t3(&mask, 1, SFA_DTYPE_UINT8, 4, 100, 200);                                    \
  mask.strides[1] = 208, mask.strides[0] = 100 * 208
#define CALL(w, c) sfa_topk_mask_varlen(ctx, &cq, &ck, &bias, w, c, &mask, NULL)
  RESET();
  ck_assert_int_eq(sfa_topk_mask_varlen(NULL, &cq, &ck, &bias, 8, 0, &mask, NULL), BAD);
  expect_err(sfa_topk_mask_varlen(ctx, NULL, &ck, &bias, 8, 0, &mask, NULL), BAD,
             "cu_seqlens_q: is NULL", NULL);
  expect_err(sfa_topk_mask_varlen(ctx, &cq, NULL, &bias, 8, 0, &mask, NULL), BAD,
             "cu_seqlens_k: is NULL", NULL);
  expect_err(sfa_topk_mask_varlen(ctx, &cq, &ck, NULL, 8, 0, &mask, NULL), BAD, "bias: is NULL",
             NULL);
  expect_err(sfa_topk_mask_varlen(ctx, &cq, &ck, &bias, 8, 0, NULL, NULL), BAD, "mask: is NULL",
             NULL);
  RESET(), ck.shape[0] = 5;
  expect_err(CALL(8, 0), BAD, "cu_seqlens_k: shape [5] but cu_seqlens_q's is [4]", NULL);
  RESET(), cq.dtype = SFA_DTYPE_FP16;
  expect_err(CALL(8, 0), BAD, "cu_seqlens_q: dtype fp16", "int32");
  RESET(), ck.strides[0] = 0;
  expect_err(CALL(8, 0), BAD, "cu_seqlens_k: stride[0] is 0", "contiguous");
  RESET(), bias.rank = 4;
  expect_err(CALL(8, 0), BAD, "bias.rank: 4", "[Hb, total_q, Kmax]");
  RESET(), bias.dtype = SFA_DTYPE_INT32;
  expect_err(CALL(8, 0), BAD, "bias: dtype int32", NULL);
  RESET(), bias.shape[2] = ((int64_t)1 << 30) + 1;
  expect_err(CALL(8, 0), BAD, "bias: Kmax = 1073741825", "2^30");
  RESET(), bias.shape[1] = ((int64_t)1 << 30) + 1;
  expect_err(CALL(8, 0), BAD, "bias: total_q = 1073741825", "2^30");
  RESET(), bias.strides[0] = 0; /* broadcast over heads is fine; the next error is w's */
  expect_err(CALL(-1, 0), BAD, "w: -1", ">= 0");
  RESET();
  expect_err(CALL(8, 2), BAD, "causal: 2", "0 or 1");
  RESET(), mask.shape[2] = 199;
  expect_err(CALL(8, 0), BAD, "mask: shape [4, 100, 199]", "bias");
  RESET(), mask.strides[1] = 200;
  expect_err(CALL(8, 0), BAD, "mask: stride[1] is 200", "multiple of 16");
  RESET(), mask.strides[0] = 100 * 208 + 8;
  expect_err(CALL(8, 0), BAD, "mask: stride[0] is 20808", "multiple of 16");
  RESET(), mask.data = (char *)mask.data + 8;
  expect_err(CALL(8, 0), BAD, "mask: data", "16-byte aligned");
  RESET(), mask.data = (char *)bias.data + 64;
  expect_err(CALL(8, 0), BAD, "mask: its memory overlaps bias", NULL);
  RESET(), cq.data = (char *)mask.data + 64;
  expect_err(CALL(8, 0), BAD, "mask: its memory overlaps cu_seqlens_q", NULL);
#undef CALL
#undef RESET
}
END_TEST

START_TEST(valid_calls_reach_the_driver) {
  /* On a machine without a driver, fully valid calls fail with NO_DRIVER (on
  ** one with a driver they would launch on fake pointers: not done there). */
  if (tu_driver_present()) return;
  prep p;
  prep_init(&p);
  expect_err(prep_call(&p), SFA_ERR_NO_DRIVER, "libcuda", NULL);
  prep_init(&p);
  expect_err(sfa_hash_prepare(ctx, &p.bucket, SFA_HASH_MAX_BUCKETS, NULL, NULL, NULL, NULL,
                              &p.idx, &p.hash, NULL),
             SFA_ERR_NO_DRIVER, NULL, NULL);
  sfa_tensor os, idx, o, bias, mask;
  t4(&os, 0, SFA_DTYPE_FP32, 1, 1, 7, 3);
  t3(&idx, 1, SFA_DTYPE_INT32, 1, 1, 7);
  t4(&o, 2, SFA_DTYPE_FP32, 1, 1, 9, 3);
  expect_err(sfa_hash_unsort(ctx, &os, &idx, &o, NULL), SFA_ERR_NO_DRIVER, NULL, NULL);
  /* Broadcast bias (stride 0 over rows), w = 0 and w > Tk are valid. */
  t4(&bias, 3, SFA_DTYPE_FP16, 1, 2, 5, 17);
  bias.strides[2] = 0;
  t4(&mask, 4, SFA_DTYPE_UINT8, 1, 2, 5, 17);
  mask.strides[2] = 32, mask.strides[1] = 160, mask.strides[0] = 320;
  expect_err(sfa_topk_mask(ctx, &bias, 0, 1, &mask, NULL), SFA_ERR_NO_DRIVER, NULL, NULL);
  expect_err(sfa_topk_mask(ctx, &bias, 100, 0, &mask, NULL), SFA_ERR_NO_DRIVER, NULL, NULL);
  /* The packed calls: one sequence, Kmax 17 (mask rows padded to 32). */
  vprep vp;
  vprep_init(&vp);
  expect_err(vprep_call(&vp), SFA_ERR_NO_DRIVER, NULL, NULL);
  sfa_tensor cu, cu2, vos, vidx, vo;
  t1(&cu, 5, 2);
  t1(&cu2, 6, 2);
  t3(&vos, 0, SFA_DTYPE_FP32, 7, 1, 3);
  t2(&vidx, 1, SFA_DTYPE_INT32, 1, 7);
  t3(&vo, 2, SFA_DTYPE_FP32, 7, 1, 3);
  expect_err(sfa_hash_unsort_varlen(ctx, &cu, &vos, &vidx, &vo, NULL), SFA_ERR_NO_DRIVER, NULL,
             NULL);
  t3(&bias, 3, SFA_DTYPE_FP16, 2, 5, 17);
  t3(&mask, 4, SFA_DTYPE_UINT8, 2, 5, 17);
  mask.strides[1] = 32, mask.strides[0] = 160;
  expect_err(sfa_topk_mask_varlen(ctx, &cu, &cu2, &bias, 4, 1, &mask, NULL), SFA_ERR_NO_DRIVER,
             NULL, NULL);
}
END_TEST

int main(void) {
  Suite *s = suite_create("util_compile");
  TCase *c = tcase_create("compile");
  tcase_set_timeout(c, 300);
  tcase_add_loop_test(c, every_variant_compiles, 0, 2 * NVARIANTS);
  tcase_add_test(c, render_and_compile_errors);
  suite_add_tcase(s, c);
  TCase *v = tcase_create("validation");
  tcase_add_checked_fixture(v, setup, teardown);
  tcase_add_test(v, hash_prepare_rejects);
  tcase_add_test(v, hash_unsort_rejects);
  tcase_add_test(v, topk_mask_rejects);
  tcase_add_test(v, hash_prepare_varlen_rejects);
  tcase_add_test(v, hash_unsort_varlen_rejects);
  tcase_add_test(v, topk_mask_varlen_rejects);
  tcase_add_test(v, valid_calls_reach_the_driver);
  suite_add_tcase(s, v);
  return tu_run_suite(s);
}
