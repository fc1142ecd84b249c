/*
** test_decode.c -- pass decode without a GPU: its specs (names, rules,
** defaults), NVRTC compiles of decode variants for sm_80, sm_86 and sm_90,
** the split-KV rule, and sfa_decode / sfa_decode_with_workspace /
** sfa_decode_workspace_size / sfa_kv_append(_hash) / sfa_check_kv_cache
** rejecting bad input (mode hash's buckets included)
** with messages that name the argument (validation runs before the driver,
** so fake device pointers do).
*/
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sfa.h"
#include "gen/gen_internal.h"
#include "runtime/decode.h"
#include "testutil.h"

/* ------------------------------------------------------------ specs */

static sfa_kernel_spec dec(sfa_mode mode, unsigned flags, int D, int arch) {
  sfa_kernel_spec s = {.pass = SFA_PASS_DECODE, .mode = mode, .dtype = SFA_DTYPE_BF16,
                       .head_dim = D, .arch = arch, .flags = flags};
  char err[256];
  ck_assert_msg(sfa_spec_default(&s, err, sizeof err) == SFA_OK, "%s", err);
  return s;
}

START_TEST(default_spec_and_name_round_trip) {
  sfa_kernel_spec s = dec(SFA_MODE_DENSE, SFA_FEAT_CAUSAL, 128, 90);
  char name[SFA__NAME_MAX], err[256];
  ck_assert_int_eq(sfa_spec_name(&s, name, sizeof name), SFA_OK);
  ck_assert_str_eq(name, "sfa_decode_dense_causal_bf16_d128_m16n64_w4s2_sm90");
  sfa_kernel_spec t;
  ck_assert_int_eq(sfa_spec_parse(name, &t, err, sizeof err), SFA_OK);
  ck_assert(memcmp(&s, &t, sizeof s) == 0);
  ck_assert_int_eq(sfa_spec_validate(&s, err, sizeof err), SFA_OK);
  /* D 256 on sm_86 (99 KB): one stage */
  s = dec(SFA_MODE_WINDOW, 0, 256, 86);
  ck_assert_int_eq(sfa_spec_name(&s, name, sizeof name), SFA_OK);
  ck_assert_str_eq(name, "sfa_decode_window_bf16_d256_m16n64_w4s1_sm86");
}
END_TEST

static void expect(const sfa_kernel_spec *s, sfa_status want, const char *text) {
  char err[512] = "";
  sfa_status st = sfa_spec_validate(s, err, sizeof err);
  ck_assert_msg(st == want, "status %d, want %d: %s", (int)st, (int)want, err);
  if (text) ck_assert_msg(strstr(err, text), "'%s' not in '%s'", text, err);
}

START_TEST(spec_rules_name_the_field) {
  sfa_kernel_spec s = dec(SFA_MODE_DENSE, 0, 64, 90);
  s.block_m = 64;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "block_m: 64 is not allowed with pass decode; must be 16");
  s = dec(SFA_MODE_DENSE, 0, 64, 90);
  s.block_n = 32;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "each warp takes 16 or 32 keys of a tile, so block_n must be 64 or 128");
  s.block_n = 128;
  expect(&s, SFA_OK, NULL);
  s.mma = SFA_SPEC_MMA_WGMMA;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "mma: pass decode takes mma sync only");
  s = dec(SFA_MODE_DENSE, 0, 64, 90);
  s.mode = SFA_MODE_QK_DROP;
  expect(&s, SFA_ERR_UNSUPPORTED,
         "mode: qk_drop has no decode kernel; pass decode serves dense, hash and window");
  /* hash: strict (its causality flag) and gather; not causal, not softcap */
  s = dec(SFA_MODE_HASH, SFA_FEAT_STRICT | SFA_FEAT_GATHER, 128, 90);
  expect(&s, SFA_OK, NULL);
  s.flags = SFA_FEAT_CAUSAL;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "flags: causal is not allowed with mode hash");
  s.flags = SFA_FEAT_SOFTCAP;
  expect(&s, SFA_ERR_UNSUPPORTED, "flags: softcap not allowed with pass decode");
  s = dec(SFA_MODE_DENSE, 0, 64, 90);
  s.flags = SFA_FEAT_STRICT;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "flags: strict is not allowed with mode dense");
  s = dec(SFA_MODE_WINDOW, 0, 64, 90);
  s.flags = SFA_FEAT_BIAS;
  expect(&s, SFA_ERR_UNSUPPORTED, "flags: bias not allowed with pass decode");
  s.flags = SFA_FEAT_DETERMINISTIC;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "det applies to pass bwd only");
  /* gather: decode only, in every mode that decodes */
  s = dec(SFA_MODE_WINDOW, SFA_FEAT_CAUSAL | SFA_FEAT_GATHER, 64, 90);
  expect(&s, SFA_OK, NULL);
  s.pass = SFA_PASS_FWD, s.block_m = 64, s.block_n = 64;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "flags: gather applies to pass decode only");
  /* head dims the backward refuses are fine here */
  s = dec(SFA_MODE_DENSE, 0, 240, 90);
  expect(&s, SFA_OK, NULL);
}
END_TEST

/* ------------------------------------------------------------ compiles */

START_TEST(decode_variants_compile) {
  const sfa_kernel_spec specs[] = {
    dec(SFA_MODE_DENSE, SFA_FEAT_CAUSAL, 128, 90),
    dec(SFA_MODE_DENSE, 0, 64, 80),
    dec(SFA_MODE_WINDOW, SFA_FEAT_CAUSAL, 128, 80),
    dec(SFA_MODE_WINDOW, 0, 256, 86),
    dec(SFA_MODE_HASH, SFA_FEAT_STRICT, 128, 90),
    dec(SFA_MODE_HASH, SFA_FEAT_GATHER, 64, 80),
  };
  for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
    sfa_kernel_spec s = specs[i];
    if (i == 1) s.dtype = SFA_DTYPE_FP16;
    void *cubin = NULL;
    size_t n = 0;
    char *log = NULL, err[1024] = "", name[SFA__NAME_MAX];
    sfa_spec_name(&s, name, sizeof name);
    sfa_status st = sfa_compile_cubin(&s, NULL, &cubin, &n, &log, err, sizeof err);
    ck_assert_msg(st == SFA_OK, "%s: %s\n%s", name, err, log ? log : "");
    ck_assert(n > 4 && memcmp(cubin, "\x7f" "ELF", 4) == 0);
    sfa_free(cubin);
    sfa_free(log);
  }
}
END_TEST

/* ------------------------------------------------------------ the split rule */

START_TEST(splits_fill_the_gpu_from_host_facts) {
  /* one sequence of 8 kv heads on 132 SMs: 264 CTAs' worth of splits */
  ck_assert_int_eq(sfa__decode_splits(8, 32768, 132, 64), 33);
  /* 8 sequences of 8 kv heads: 4 splits, 256 CTAs in one wave of 264
     (rounded down: 5 would leave a second wave of 56, measured 23% slower
     at B 8 / 32k, bench/NOTES.md session 18) */
  ck_assert_int_eq(sfa__decode_splits(64, 32768, 132, 64), 4);
  ck_assert_int_eq(sfa__decode_splits(256, 32768, 132, 64), 1);
  /* a wide batch fills the GPU by itself */
  ck_assert_int_eq(sfa__decode_splits(512, 32768, 132, 64), 1);
  /* never more splits than key tiles, never more than the cap */
  ck_assert_int_eq(sfa__decode_splits(1, 100, 132, 64), 2);
  ck_assert_int_eq(sfa__decode_splits(1, 1 << 20, 132, 64), SFA__DECODE_MAX_SPLITS);
  ck_assert_int_eq(sfa__decode_splits(1, 0, 132, 64), 1);
  ck_assert_int_eq(sfa__decode_splits(3, 4096, 0, 64), 1);
  /* a grid of more row tiles than a workspace counts is not split, however
     many SMs would take more */
  ck_assert_int_eq(sfa__decode_splits(SFA__DECODE_COUNTERS, 32768, 4096, 64), 8);
  ck_assert_int_eq(sfa__decode_splits(SFA__DECODE_COUNTERS + 1, 32768, 4096, 64), 1);
}
END_TEST

/* ------------------------------------------------------------ validation */

#define FAKE(n) ((void *)(uintptr_t)(0x7f0000000000ull + (uint64_t)(n) * 0x100000000ull))

typedef struct call {
  sfa_attention_params p;
  sfa_tensor q, k, v, pt, used, o, lse;
  sfa_kv_cache cache;
} call;

/* A valid paged call: B 2, Hq 8, Hkv 2, Tn 3, D 64, 10 pages of 16, 4 per sequence. */
static void good(call *c) {
  memset(c, 0, sizeof *c);
  sfa_params_init(&c->p);
  c->p.causal = 1;
  const int64_t sq[4] = {2, 8, 3, 64}, sk[4] = {10, 16, 2, 64}, spt[2] = {2, 4}, su[1] = {2};
  sfa_tensor_init(&c->q, FAKE(1), SFA_DTYPE_BF16, 4, sq);
  sfa_tensor_init(&c->k, FAKE(2), SFA_DTYPE_BF16, 4, sk);
  sfa_tensor_init(&c->v, FAKE(3), SFA_DTYPE_BF16, 4, sk);
  sfa_tensor_init(&c->pt, FAKE(4), SFA_DTYPE_INT32, 2, spt);
  sfa_tensor_init(&c->used, FAKE(5), SFA_DTYPE_INT32, 1, su);
  sfa_tensor_init(&c->o, FAKE(6), SFA_DTYPE_BF16, 4, sq);
  sfa_tensor_init(&c->lse, FAKE(7), SFA_DTYPE_FP32, 3, sq);
  c->cache = (sfa_kv_cache){.k = &c->k, .v = &c->v, .page_table = &c->pt, .seqused = &c->used};
}

static sfa_context *ctx;

static void reject(call *c, sfa_status want, const char *text) {
  sfa_status st = sfa_decode(ctx, &c->p, &c->q, &c->cache, &c->o, &c->lse, NULL);
  ck_assert_msg(st == want, "status %d (want %d): %s", (int)st, (int)want, sfa_last_error(ctx));
  ck_assert_msg(strstr(sfa_last_error(ctx), text), "'%s' not in '%s'", text, sfa_last_error(ctx));
}

START_TEST(decode_rejects_bad_arguments_by_name) {
  ck_assert_int_eq(sfa_context_create(&ctx, NULL), SFA_OK);
  call c;
  good(&c);
  c.q.shape[2] = 17;
  c.o.shape[2] = 17, c.lse.shape[2] = 17;
  reject(&c, SFA_ERR_INVALID_ARGUMENT, "q: 17 new tokens (shape[2]); sfa_decode takes 1..16");
  good(&c);
  c.p.mode = SFA_MODE_QK_DROP;
  reject(&c, SFA_ERR_UNSUPPORTED, "params.mode: qk_drop has no decode kernel");
  good(&c);
  c.p.softcap = 30.f;
  reject(&c, SFA_ERR_UNSUPPORTED, "params.softcap: 30; sfa_decode takes no softcapping");
  good(&c);
  c.k.dtype = c.v.dtype = SFA_DTYPE_FP16;
  reject(&c, SFA_ERR_INVALID_ARGUMENT, "cache->k: dtype fp16 does not match q (bf16)");
  good(&c);
  c.pt.dtype = SFA_DTYPE_FP32;
  reject(&c, SFA_ERR_INVALID_ARGUMENT, "cache->page_table: dtype fp32, expected int32");
  good(&c);
  c.pt.shape[0] = 3;
  reject(&c, SFA_ERR_INVALID_ARGUMENT, "cache->page_table: shape [3, 4]; its first dimension must be the batch B = 2");
  good(&c);
  c.used.shape[0] = 1;
  reject(&c, SFA_ERR_INVALID_ARGUMENT, "cache->seqused: shape [1]");
  good(&c);
  c.q.shape[1] = c.o.shape[1] = c.lse.shape[1] = 5;
  reject(&c, SFA_ERR_INVALID_ARGUMENT, "cache->k: its 2 kv heads do not divide the 5 query heads");
  good(&c);
  c.v.shape[0] = 9;
  reject(&c, SFA_ERR_INVALID_ARGUMENT, "cache->v: shape [9, 16, 2, 64] does not match cache->k [10, 16, 2, 64]");
  good(&c);
  c.k.shape[3] = c.v.shape[3] = 128;
  reject(&c, SFA_ERR_INVALID_ARGUMENT, "cache->k: shape[3] (head dim) is 128 but q's is 64");
  good(&c);
  const int64_t sl[3] = {2, 8, 4};
  sfa_tensor_init(&c.lse, FAKE(7), SFA_DTYPE_FP32, 3, sl);
  reject(&c, SFA_ERR_INVALID_ARGUMENT, "lse: shape [2, 8, 4] does not match q");
  good(&c);
  c.o.data = c.q.data;
  reject(&c, SFA_ERR_INVALID_ARGUMENT, "o: its memory overlaps q");
  good(&c);
  c.cache.k = NULL;
  reject(&c, SFA_ERR_INVALID_ARGUMENT, "cache->k: is NULL");
  good(&c);
  c.k.strides[1] = c.v.strides[1] = 130; /* rows not 16-byte aligned */
  reject(&c, SFA_ERR_INVALID_ARGUMENT, "cache->k: stride[1] is 130");
  /* a contiguous cache must have q's batch */
  good(&c);
  const int64_t sk[4] = {3, 2, 64, 64};
  sfa_tensor_init(&c.k, FAKE(2), SFA_DTYPE_BF16, 4, sk);
  sfa_tensor_init(&c.v, FAKE(3), SFA_DTYPE_BF16, 4, sk);
  c.cache.page_table = NULL;
  reject(&c, SFA_ERR_INVALID_ARGUMENT, "give page_table for a paged one");
  good(&c);
  sfa_tensor idx;
  const int64_t si[3] = {2, 3, 40};
  sfa_tensor_init(&idx, FAKE(10), SFA_DTYPE_INT32, 3, si);
  c.cache.kv_indices = &idx;
  reject(&c, SFA_ERR_INVALID_ARGUMENT, "cache->kv_indices: 3 heads (shape[1]) but the cache has 2 kv heads");
  idx.dtype = SFA_DTYPE_INT32, idx.shape[1] = 2, idx.strides[0] = 2 * 40;
  idx.strides[2] = 2;
  reject(&c, SFA_ERR_INVALID_ARGUMENT, "cache->kv_indices: stride[2] is 2");
  good(&c);
  c.p.window_left = 8;
  reject(&c, SFA_ERR_INVALID_ARGUMENT, "params.window_left/window_right: 8/-1; windows apply to mode window only");
  /* sfa_kv_append: the new rows against the cache */
  good(&c);
  sfa_tensor kn, vn;
  const int64_t sn[4] = {2, 2, 3, 64};
  sfa_tensor_init(&kn, FAKE(8), SFA_DTYPE_BF16, 4, sn);
  sfa_tensor_init(&vn, FAKE(9), SFA_DTYPE_BF16, 4, sn);
  ck_assert_int_eq(sfa_kv_append(ctx, &c.cache, &kn, NULL, NULL), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(sfa_last_error(ctx), "v_new: is NULL"), "%s", sfa_last_error(ctx));
  kn.shape[1] = vn.shape[1] = 4;
  kn.strides[0] = vn.strides[0] = 4 * 3 * 64;
  ck_assert_int_eq(sfa_kv_append(ctx, &c.cache, &kn, &vn, NULL), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(sfa_last_error(ctx), "k_new: 4 heads (shape[1]) but the cache has 2"),
                "%s", sfa_last_error(ctx));
  sfa_tensor_init(&kn, FAKE(2), SFA_DTYPE_BF16, 4, sn); /* the cache's own k */
  sfa_tensor_init(&vn, FAKE(9), SFA_DTYPE_BF16, 4, sn);
  ck_assert_int_eq(sfa_kv_append(ctx, &c.cache, &kn, &vn, NULL), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(sfa_last_error(ctx), "cache->k: its memory overlaps k_new"), "%s",
                sfa_last_error(ctx));
  sfa_tensor_init(&kn, FAKE(8), SFA_DTYPE_FP16, 4, sn);
  ck_assert_int_eq(sfa_kv_append(ctx, &c.cache, &kn, &vn, NULL), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(sfa_last_error(ctx), "cache->k: dtype bf16 does not match k_new (fp16)"),
                "%s", sfa_last_error(ctx));
  ck_assert_int_eq(sfa_check_kv_cache(ctx, &c.cache, 0, NULL), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(sfa_last_error(ctx), "Tn: 0; must be in 1..16"), "%s", sfa_last_error(ctx));
  ck_assert_int_eq(sfa_check_kv_cache(ctx, NULL, 1, NULL), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_int_eq(sfa_decode(NULL, &c.p, &c.q, &c.cache, &c.o, &c.lse, NULL), SFA_ERR_INVALID_ARGUMENT);
  sfa_context_destroy(ctx);
}
END_TEST

/* sfa_decode_with_workspace and sfa_decode_workspace_size check what
** sfa_decode checks, and their own arguments, before the driver. */
START_TEST(caller_workspace_arguments_are_checked_first) {
  ck_assert_int_eq(sfa_context_create(&ctx, NULL), SFA_OK);
  call c;
  good(&c);
  /* misaligned: refused before anything else */
  ck_assert_int_eq(sfa_decode_with_workspace(ctx, &c.p, &c.q, &c.cache, &c.o, &c.lse,
                                             (char *)FAKE(11) + 8, 1 << 20, NULL),
                   SFA_ERR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(sfa_last_error(ctx), "workspace: address") &&
                    strstr(sfa_last_error(ctx), "is not 16-byte aligned"),
                "%s", sfa_last_error(ctx));
  /* the call's own arguments, by the same messages as sfa_decode */
  c.q.shape[2] = c.o.shape[2] = c.lse.shape[2] = 17;
  ck_assert_int_eq(sfa_decode_with_workspace(ctx, &c.p, &c.q, &c.cache, &c.o, &c.lse, FAKE(11),
                                             1 << 20, NULL),
                   SFA_ERR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(sfa_last_error(ctx), "q: 17 new tokens (shape[2])"), "%s",
                sfa_last_error(ctx));
  size_t n = 99;
  ck_assert_int_eq(sfa_decode_workspace_size(ctx, &c.p, &c.q, &c.cache, &n),
                   SFA_ERR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(sfa_last_error(ctx), "q: 17 new tokens (shape[2])"), "%s",
                sfa_last_error(ctx));
  ck_assert_uint_eq(n, 0); /* cleared on failure */
  good(&c);
  ck_assert_int_eq(sfa_decode_workspace_size(ctx, &c.p, &c.q, &c.cache, NULL),
                   SFA_ERR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(sfa_last_error(ctx), "bytes: is NULL"), "%s", sfa_last_error(ctx));
  /* the size query reads neither o nor lse */
  c.cache.k = NULL;
  ck_assert_int_eq(sfa_decode_workspace_size(ctx, &c.p, &c.q, &c.cache, &n),
                   SFA_ERR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(sfa_last_error(ctx), "cache->k: is NULL"), "%s", sfa_last_error(ctx));
  ck_assert_int_eq(sfa_decode_workspace_size(NULL, &c.p, &c.q, &c.cache, &n),
                   SFA_ERR_INVALID_ARGUMENT);
  ck_assert_int_eq(sfa_decode_with_workspace(NULL, &c.p, &c.q, &c.cache, &c.o, &c.lse, FAKE(11),
                                             1 << 20, NULL),
                   SFA_ERR_INVALID_ARGUMENT);
  sfa_context_destroy(ctx);
}
END_TEST

/* Mode hash: the buckets k_hash (the cache's layout minus D) and q_hash
** [B, Hq, Tn] are required there, rejected elsewhere, and checked by name. */
START_TEST(decode_hash_buckets_are_checked_by_name) {
  ck_assert_int_eq(sfa_context_create(&ctx, NULL), SFA_OK);
  call c;
  sfa_tensor kh, qh;
  const int64_t skh[3] = {10, 16, 2}, sqh[3] = {2, 8, 3}; /* paged: [pages, page_size, Hkv] */
  /* the buckets where no mode reads them */
  good(&c);
  sfa_tensor_init(&kh, FAKE(11), SFA_DTYPE_INT32, 3, skh);
  sfa_tensor_init(&qh, FAKE(12), SFA_DTYPE_INT32, 3, sqh);
  c.cache.k_hash = &kh;
  reject(&c, SFA_ERR_INVALID_ARGUMENT,
         "cache->k_hash: given, but mode dense reads no buckets (only mode hash does)");
  c.cache.k_hash = NULL, c.cache.q_hash = &qh;
  reject(&c, SFA_ERR_INVALID_ARGUMENT, "cache->q_hash: given, but mode dense reads no buckets");
  /* mode hash needs both */
  good(&c);
  c.p.mode = SFA_MODE_HASH, c.p.causal = 0;
  reject(&c, SFA_ERR_INVALID_ARGUMENT,
         "cache->k_hash: is NULL; mode hash needs the buckets of the cached keys (int32 "
         "[num_pages, page_size, Hkv])");
  c.cache.k_hash = &kh;
  reject(&c, SFA_ERR_INVALID_ARGUMENT, "cache->q_hash: is NULL; mode hash needs the buckets of "
                                       "the new tokens (int32 [B, Hq, Tn])");
  c.cache.q_hash = &qh;
  /* k_hash: dtype, layout, shape (paged and contiguous) */
  kh.dtype = SFA_DTYPE_FP32;
  reject(&c, SFA_ERR_INVALID_ARGUMENT, "cache->k_hash: dtype fp32, expected int32");
  sfa_tensor_init(&kh, FAKE(11), SFA_DTYPE_INT32, 3, skh);
  kh.strides[2] = 2;
  reject(&c, SFA_ERR_INVALID_ARGUMENT, "cache->k_hash: stride[2] is 2");
  kh.rank = 2;
  reject(&c, SFA_ERR_INVALID_ARGUMENT, "cache->k_hash");
  sfa_tensor_init(&kh, FAKE(11), SFA_DTYPE_INT32, 3, skh);
  kh.shape[1] = 8;
  reject(&c, SFA_ERR_INVALID_ARGUMENT,
         "cache->k_hash: shape [10, 8, 2] does not match cache->k [10, 16, 2, 64] (num_pages, "
         "page_size and Hkv must agree)");
  sfa_tensor_init(&kh, FAKE(11), SFA_DTYPE_INT32, 3, skh);
  /* q_hash: dtype, batch, heads and tokens */
  qh.dtype = SFA_DTYPE_INT32 + 1;
  reject(&c, SFA_ERR_INVALID_ARGUMENT, "cache->q_hash: dtype uint8, expected int32");
  qh.dtype = SFA_DTYPE_INT32, qh.shape[0] = 1;
  reject(&c, SFA_ERR_INVALID_ARGUMENT, "cache->q_hash: shape [1, 8, 3]; its first dimension must be the batch B = 2");
  sfa_tensor_init(&qh, FAKE(12), SFA_DTYPE_INT32, 3, sqh);
  qh.shape[2] = 4;
  qh.strides[1] = 4, qh.strides[0] = 32;
  reject(&c, SFA_ERR_INVALID_ARGUMENT,
         "cache->q_hash: shape [2, 8, 4] does not match q [2, 8, 3, 64] (B, Hq and Tn must agree)");
  sfa_tensor_init(&qh, FAKE(12), SFA_DTYPE_INT32, 3, sqh);
  qh.data = c.o.data; /* an output over an input */
  reject(&c, SFA_ERR_INVALID_ARGUMENT, "o: its memory overlaps cache->q_hash");
  qh.data = FAKE(12);
  /* a contiguous cache: k_hash [B, Hkv, capacity] */
  const int64_t sk[4] = {2, 2, 64, 64}, skc[3] = {2, 2, 48};
  sfa_tensor_init(&c.k, FAKE(2), SFA_DTYPE_BF16, 4, sk);
  sfa_tensor_init(&c.v, FAKE(3), SFA_DTYPE_BF16, 4, sk);
  c.cache.page_table = NULL;
  sfa_tensor_init(&kh, FAKE(11), SFA_DTYPE_INT32, 3, skc);
  reject(&c, SFA_ERR_INVALID_ARGUMENT,
         "cache->k_hash: shape [2, 2, 48] does not match cache->k [2, 2, 64, 64] (B, Hkv and "
         "capacity must agree)");
  /* strict applies (hash's causality), causal does not matter */
  c.p.strict_causal = 1, c.p.causal = 1;
  reject(&c, SFA_ERR_INVALID_ARGUMENT, "cache->k_hash: shape [2, 2, 48]");

  /* sfa_kv_append_hash: k_hash_new [B, Hkv, Tn] into cache->k_hash */
  good(&c);
  sfa_tensor kn, vn, khn;
  const int64_t sn[4] = {2, 2, 3, 64}, skhn[3] = {2, 2, 3};
  sfa_tensor_init(&kn, FAKE(8), SFA_DTYPE_BF16, 4, sn);
  sfa_tensor_init(&vn, FAKE(9), SFA_DTYPE_BF16, 4, sn);
  sfa_tensor_init(&khn, FAKE(13), SFA_DTYPE_INT32, 3, skhn);
  sfa_tensor_init(&kh, FAKE(11), SFA_DTYPE_INT32, 3, skh);
  const struct {
    const sfa_tensor *khn;
    int with_k_hash;
    const char *text;
  } bad[] = {
    {NULL, 1, "k_hash_new: is NULL"},
    {&khn, 0, "cache->k_hash: is NULL; sfa_kv_append_hash writes k_hash_new there"},
  };
  for (int i = 0; i < 2; i++) {
    c.cache.k_hash = bad[i].with_k_hash ? &kh : NULL;
    ck_assert_int_eq(sfa_kv_append_hash(ctx, &c.cache, &kn, &vn, bad[i].khn, NULL),
                     SFA_ERR_INVALID_ARGUMENT);
    ck_assert_msg(strstr(sfa_last_error(ctx), bad[i].text), "'%s' not in '%s'", bad[i].text,
                  sfa_last_error(ctx));
  }
  c.cache.k_hash = &kh;
  khn.dtype = SFA_DTYPE_FP32;
  ck_assert_int_eq(sfa_kv_append_hash(ctx, &c.cache, &kn, &vn, &khn, NULL), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(sfa_last_error(ctx), "k_hash_new: dtype fp32, expected int32"), "%s",
                sfa_last_error(ctx));
  sfa_tensor_init(&khn, FAKE(13), SFA_DTYPE_INT32, 3, skhn);
  khn.shape[1] = 1;
  ck_assert_int_eq(sfa_kv_append_hash(ctx, &c.cache, &kn, &vn, &khn, NULL), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(sfa_last_error(ctx), "k_hash_new: shape [2, 1, 3] does not match k_new"),
                "%s", sfa_last_error(ctx));
  sfa_tensor_init(&khn, FAKE(11), SFA_DTYPE_INT32, 3, skhn); /* inside cache->k_hash */
  ck_assert_int_eq(sfa_kv_append_hash(ctx, &c.cache, &kn, &vn, &khn, NULL), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(sfa_last_error(ctx), "cache->k_hash: its memory overlaps k_hash_new"), "%s",
                sfa_last_error(ctx));
  /* a bad k_hash is named by sfa_kv_append and sfa_check_kv_cache too */
  kh.dtype = SFA_DTYPE_FP16;
  ck_assert_int_eq(sfa_kv_append(ctx, &c.cache, &kn, &vn, NULL), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(sfa_last_error(ctx), "cache->k_hash: dtype fp16, expected int32"), "%s",
                sfa_last_error(ctx));
  ck_assert_int_eq(sfa_check_kv_cache(ctx, &c.cache, 1, NULL), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(sfa_last_error(ctx), "cache->k_hash: dtype fp16, expected int32"), "%s",
                sfa_last_error(ctx));
  ck_assert_int_eq(sfa_kv_append_hash(NULL, &c.cache, &kn, &vn, &khn, NULL), SFA_ERR_INVALID_ARGUMENT);
  sfa_context_destroy(ctx);
}
END_TEST

int main(void) {
  Suite *s = suite_create("decode");
  TCase *t = tcase_create("decode");
  tcase_set_timeout(t, 120);
  tcase_add_test(t, default_spec_and_name_round_trip);
  tcase_add_test(t, spec_rules_name_the_field);
  tcase_add_test(t, decode_variants_compile);
  tcase_add_test(t, splits_fill_the_gpu_from_host_facts);
  tcase_add_test(t, decode_rejects_bad_arguments_by_name);
  tcase_add_test(t, decode_hash_buckets_are_checked_by_name);
  tcase_add_test(t, caller_workspace_arguments_are_checked_first);
  suite_add_tcase(s, t);
  return tu_run_suite(s);
}
