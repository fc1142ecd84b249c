/*
** test_spec.c -- kernel specs: every validation rule and its message, the
** canonical name and its parser (round trip and errors), shared-memory sizes,
** the flags each forward mode allows, the wgmma (wg) rules, and the default
** tile configs (valid for every mode, head_dim, dtype and arch; the measured
** H100 choices, wgmma on sm_90 fwd at D 64 and 128); the utility passes'
** rules, names (round trip, errors) and defaults.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sfa.h"
#include "gen/gen_internal.h"
#include "testutil.h"

/* Every row of the arch table (gen/arch.h; tests/test_arch.c checks it). */
static const int archs[] = {80, 86, 87, 88, 89, 90, 100, 103, 110, 120, 121};
#define NARCHS (int)(sizeof archs / sizeof archs[0])

static sfa_kernel_spec good(void) {
  sfa_kernel_spec s = {SFA_PASS_FWD, SFA_MODE_DENSE, SFA_DTYPE_BF16, 128,
                       128, 64, 4, 1, 90, SFA_FEAT_CAUSAL, SFA_SPEC_MMA_SYNC};
  return s;
}

/* Validates s and checks status and that each needle is in the message. */
static void expect(const sfa_kernel_spec *s, sfa_status want, const char *n1, const char *n2) {
  char err[512] = "";
  sfa_status st = sfa_spec_validate(s, err, sizeof err);
  ck_assert_msg(st == want, "status %d, want %d (%s)", st, want, err);
  if (n1) ck_assert_msg(strstr(err, n1), "'%s' not in '%s'", n1, err);
  if (n2) ck_assert_msg(strstr(err, n2), "'%s' not in '%s'", n2, err);
}

START_TEST(valid_spec) {
  sfa_kernel_spec s = good();
  char err[256] = "x";
  ck_assert_int_eq(sfa_spec_validate(&s, err, sizeof err), SFA_OK);
  ck_assert_int_eq(sfa_spec_validate(&s, NULL, 0), SFA_OK);
  ck_assert_int_eq(sfa_spec_validate(NULL, err, sizeof err), SFA_ERR_INVALID_ARGUMENT);
}
END_TEST

START_TEST(pass_rule) {
  sfa_kernel_spec s = good();
  /* The backward passes: their own tile rules (the warps split block_n keys
  ** in bwd), and head dims up to 128. */
  s.pass = SFA_PASS_BWD;
  s.block_m = 64, s.block_n = 128, s.num_warps = 8, s.num_stages = 2;
  expect(&s, SFA_OK, NULL, NULL);
  s.block_n = 32;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "block_n: 32 is not allowed with num_warps 8 in pass bwd",
         "1 or 2 m16 tiles per warp");
  s.block_n = 128, s.block_m = 128, s.num_stages = 1;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "tile needs 256 accumulator registers", NULL);
  s.block_m = 64, s.block_n = 64, s.num_warps = 4, s.num_stages = 1;
  s.head_dim = 256; /* above 128: two CTAs per key tile, half the columns each */
  expect(&s, SFA_OK, NULL, NULL);
  s.head_dim = 144;
  expect(&s, SFA_ERR_UNSUPPORTED,
         "head_dim: 144; the backward passes support head dims up to 128, and multiples of 32",
         NULL);
  s.head_dim = 128, s.block_m = 64, s.block_n = 128, s.num_warps = 8;
  s.head_dim = 48; /* 4 x 3 blocks of the dQ tile do not split over 8 warps */
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "do not split over 8 warps", NULL);
  s = good();
  s.pass = SFA_PASS_BWD_DQ;
  s.num_warps = 8;
  expect(&s, SFA_OK, NULL, NULL);
  s.head_dim = 176;
  expect(&s, SFA_ERR_UNSUPPORTED, "head_dim: 176", NULL);
  s.pass = (sfa_pass)(SFA_PASS_KV_APPEND + 1); /* after the last pass */
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "pass: 11", "fwd, bwddq, bwd or decode");
}
END_TEST

START_TEST(mode_rule) {
  sfa_kernel_spec s = good();
  s.flags = 0;
  for (int m = 0; m < 4; m++) {
    s.mode = (sfa_mode)m;
    expect(&s, SFA_OK, NULL, NULL);
  }
  s.mode = (sfa_mode)9;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "mode: 9", "dense, qk_drop, hash or window");
}
END_TEST

START_TEST(dtype_rule) {
  sfa_kernel_spec s = good();
  s.dtype = SFA_DTYPE_FP16;
  expect(&s, SFA_OK, NULL, NULL);
  s.dtype = SFA_DTYPE_FP32;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "dtype:", "fp16 or bf16");
  s.dtype = SFA_DTYPE_UINT8;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "dtype:", "fp16 or bf16");
}
END_TEST

START_TEST(head_dim_rule) {
  sfa_kernel_spec s = good();
  s.block_m = 64; /* so that d256 fits the register budget */
  for (int d = 0; d <= 300; d++) {
    s.head_dim = d;
    int ok = d >= 32 && d <= 256 && d % 16 == 0;
    char msg[128];
    snprintf(msg, sizeof msg, "head_dim: %d is not allowed", d);
    if (ok) expect(&s, SFA_OK, NULL, NULL);
    else expect(&s, SFA_ERR_INVALID_ARGUMENT, msg, "multiple of 16 in 32..256");
  }
  s.head_dim = -16;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "head_dim: -16", NULL);
}
END_TEST

START_TEST(warps_rule) {
  sfa_kernel_spec s = good();
  int bad[] = {0, 1, 2, 3, 5, 20, -4};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    s.num_warps = bad[i];
    expect(&s, SFA_ERR_INVALID_ARGUMENT, "num_warps:", "must be 4, 8, 12 or 16");
  }
  s.num_warps = 12; /* a producer and two consumer warpgroups: mma ws only */
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "num_warps: 12 is allowed with mma ws only", NULL);
  s.num_warps = 16; /* and three */
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "num_warps: 16 is allowed with mma ws only", NULL);
  s.num_warps = 8;
  expect(&s, SFA_OK, NULL, NULL);
}
END_TEST

START_TEST(block_m_rule) {
  sfa_kernel_spec s = good();
  int bad[] = {0, 16, 32, 48, 96, 256};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    s.block_m = bad[i];
    expect(&s, SFA_ERR_INVALID_ARGUMENT, "block_m:", "64, 128 or 192");
  }
  s.block_m = 192; /* three consumer warpgroups of mma ws */
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "block_m: 192 is allowed with mma ws only", NULL);
  /* 64 rows over 8 warps is half an m16 tile per warp. */
  s.block_m = 64;
  s.num_warps = 8;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "block_m: 64 is not allowed with num_warps 8",
         "m16 tiles per warp");
  s.block_m = 128;
  expect(&s, SFA_OK, NULL, NULL);
  s.num_warps = 4;
  s.block_m = 64;
  expect(&s, SFA_OK, NULL, NULL);
}
END_TEST

START_TEST(block_n_rule) {
  sfa_kernel_spec s = good();
  int bad[] = {0, 16, 48, 96, 256};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    s.block_n = bad[i];
    expect(&s, SFA_ERR_INVALID_ARGUMENT, "block_n:", "32, 64 or 128");
  }
  s.block_n = 32;
  expect(&s, SFA_OK, NULL, NULL);
}
END_TEST

START_TEST(stages_rule) {
  sfa_kernel_spec s = good();
  int bad[] = {0, 5, -1};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    s.num_stages = bad[i];
    expect(&s, SFA_ERR_INVALID_ARGUMENT, "num_stages:", "must be 1..4");
  }
  /* 3 and 4: pass decode and mma ws only */
  for (int n = 3; n <= 4; n++) {
    s.num_stages = n;
    expect(&s, SFA_ERR_INVALID_ARGUMENT, "is not allowed in pass fwd; must be 1 or 2",
           "2..4 with mma ws; 1..4 in pass decode");
  }
  s.num_stages = 2;
  expect(&s, SFA_OK, NULL, NULL);
}
END_TEST

START_TEST(arch_rule) {
  sfa_kernel_spec s = good();
  int bad[] = {0, 70, 75, 81, 91, 101, 130, 900};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    s.arch = bad[i];
    expect(&s, SFA_ERR_INVALID_ARGUMENT, "arch:",
           "must be 80, 86, 87, 88, 89, 90, 100, 103, 110, 120 or 121");
  }
  for (int i = 0; i < NARCHS; i++) {
    s.arch = archs[i];
    expect(&s, SFA_OK, NULL, NULL);
  }
}
END_TEST

START_TEST(flags_rule) {
  sfa_kernel_spec s = good();
  s.flags = 0;
  expect(&s, SFA_OK, NULL, NULL);
  s.flags = SFA_FEAT_BIAS;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "flags: bias is not allowed with mode dense",
         "dense, which allows causal, softcap, alibi, varlen; bias applies to mode window");
  s.flags = SFA_FEAT_MASK | SFA_FEAT_CAUSAL;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "flags: mask is not allowed with mode dense",
         "mask applies to mode window");
  s.flags = SFA_FEAT_DETERMINISTIC;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "flags: det applies to pass bwd only", NULL);
  s.flags = 1u << 20;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "flags: 0x100000",
         "allowed are SFA_FEAT_CAUSAL, SFA_FEAT_BIAS, SFA_FEAT_MASK, SFA_FEAT_DETERMINISTIC");
  /* the mma kind was the flag 1u << 4 before 0.2: now it is the field mma */
  s.flags = 1u << 4;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "flags: 0x10 has unknown bits",
         "the mma kind is the field mma, SFA_SPEC_MMA_WGMMA");
  s.flags = 0;
  s.mma = (sfa_spec_mma)3;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "mma: 3 is not allowed",
         "SFA_SPEC_MMA_SYNC (0), SFA_SPEC_MMA_WGMMA (1) or SFA_SPEC_MMA_WS (2)");
}
END_TEST

/* mma ws (the warp-specialized forward): pass fwd on sm_90 only, head_dim 64,
** 128 or 256 (two consumers), a producer warpgroup and 1 to 3 consumers of 64 rows (block_m == 64
** * (num_warps / 4 - 1)), block_n 64 or 128, 2..4 stages, no varlen or mask.
** Each error names its field. */
START_TEST(ws_rule) {
  sfa_kernel_spec s = good();
  s.mma = SFA_SPEC_MMA_WS;
  s.block_m = 128, s.block_n = 128, s.num_warps = 12, s.num_stages = 2;
  expect(&s, SFA_OK, NULL, NULL);
  s.num_stages = 3; /* 32 KB of Q, 3 x 64 KB of K and V: just fits sm_90's 227 KB */
  expect(&s, SFA_OK, NULL, NULL);
  s.num_stages = 4;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "needs", "sm_90 allows");
  s.head_dim = 64; /* half the bytes: 4 stages fit */
  expect(&s, SFA_OK, NULL, NULL);
  s.head_dim = 128, s.num_stages = 2;
  s.block_m = 64, s.num_warps = 8, s.block_n = 64; /* one consumer */
  expect(&s, SFA_OK, NULL, NULL);
  s.mode = SFA_MODE_WINDOW, s.flags = SFA_FEAT_CAUSAL | SFA_FEAT_BIAS;
  expect(&s, SFA_OK, NULL, NULL);
  s.flags |= SFA_FEAT_MASK;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "flags: mask is not allowed with mma ws", "use mma wgmma");
  s.mode = SFA_MODE_DENSE, s.flags = SFA_FEAT_CAUSAL | SFA_FEAT_VARLEN;
  expect(&s, SFA_OK, NULL, NULL); /* packed sequences too */
  s.flags = SFA_FEAT_CAUSAL;
  s.block_m = 128; /* 8 warps: one consumer of 64 rows */
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "block_m: 128 is not allowed with mma ws and num_warps 8",
         "must be 64");
  s.block_m = 64, s.num_warps = 4;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "num_warps: 4 is not allowed with mma ws", "8, 12 or 16");
  s.block_m = 192, s.num_warps = 16; /* three consumers: head_dim 64 only */
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "num_warps: 16 is not allowed with mma ws at head_dim 128",
         "head_dim 64 only");
  s.head_dim = 64;
  expect(&s, SFA_OK, NULL, NULL);
  s.head_dim = 128, s.block_m = 64, s.num_warps = 4;
  s.num_warps = 8, s.block_n = 32;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "block_n: 32 is not allowed with mma ws", NULL);
  s.block_n = 64, s.num_stages = 1;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "num_stages: 1 is not allowed with mma ws", "2..4");
  s.num_stages = 2, s.head_dim = 96;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "head_dim: 96 is not allowed with mma ws", "64, 128 or 256");
  /* head_dim 256: two consumers, 64-key tiles, two stages (64 KB of Q, 2 x 64 KB of K and V) */
  s.head_dim = 256, s.block_m = 128, s.num_warps = 12, s.block_n = 64;
  expect(&s, SFA_OK, NULL, NULL);
  s.num_stages = 3;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "needs", "sm_90 allows");
  s.num_stages = 2, s.block_n = 128;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "needs", "sm_90 allows");
  s.block_n = 64, s.block_m = 64, s.num_warps = 8;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "num_warps: 8 is not allowed with mma ws at head_dim 256",
         "must be 12");
  s.block_m = 128, s.num_warps = 8, s.mma = SFA_SPEC_MMA_WGMMA; /* no wgmma kernel at 256 */
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "head_dim", NULL);
  s.mma = SFA_SPEC_MMA_WS, s.block_m = 64, s.num_warps = 8;
  s.head_dim = 128, s.arch = 80;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "mma: ws", "passes fwd and bwd on sm_90 only");
  s.arch = 90, s.pass = SFA_PASS_BWD_DQ;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "mma: ws", "passes fwd and bwd on sm_90 only");
}
END_TEST

/* mma ws in pass bwd (templates/bwd_ws.lt): a producer warpgroup and two
** consumers of 64 keys (num_warps 12, block_n 128), 64-query tiles, 2..4
** stages where they fit; every mode at head_dim 64 or 128 (also packed),
** dense and window at 256 (not packed), without bias, mask or det. Each error
** names its field. */
START_TEST(ws_backward_rule) {
  sfa_kernel_spec s = good();
  s.pass = SFA_PASS_BWD, s.mma = SFA_SPEC_MMA_WS;
  s.block_m = 64, s.block_n = 128, s.num_warps = 12, s.num_stages = 2;
  expect(&s, SFA_OK, NULL, NULL);
  s.num_stages = 3; /* K, V, 3 x (Q, dO), the dQ tile, two dS^T tiles: 226 KB */
  expect(&s, SFA_OK, NULL, NULL);
  s.num_stages = 4;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "needs", "sm_90 allows");
  s.head_dim = 64; /* half the row bytes: 4 stages fit */
  expect(&s, SFA_OK, NULL, NULL);
  s.num_stages = 1;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "num_stages: 1 is not allowed with mma ws", "2..4");
  s.num_stages = 2, s.num_warps = 8;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "num_warps/block_n/block_m: 8/128/64", "12/128/64");
  s.num_warps = 12, s.block_m = 128;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "num_warps/block_n/block_m: 12/128/128", NULL);
  s.block_m = 64, s.head_dim = 256; /* bwd_ws256.lt: two consumers sharing 64 keys */
  expect(&s, SFA_ERR_INVALID_ARGUMENT,
         "num_warps/block_n/block_m/num_stages: 12/128/64/2 is not allowed with mma ws in pass "
         "bwd at head_dim 256",
         "12/64/64/2");
  s.block_n = 64;
  expect(&s, SFA_OK, NULL, NULL);
  {  /* the default at D 256 (session 24: 1.6x the wgmma backward), not with softcap */
    sfa_kernel_spec d256 = s;
    char e256[256] = "";
    d256.block_m = d256.block_n = d256.num_warps = d256.num_stages = 0;
    ck_assert_msg(sfa_spec_default(&d256, e256, sizeof e256) == SFA_OK, "%s", e256);
    ck_assert_int_eq(d256.mma, SFA_SPEC_MMA_WS);
    ck_assert(d256.block_m == 64 && d256.block_n == 64 && d256.num_warps == 12 &&
              d256.num_stages == 2);
    d256.block_m = d256.block_n = d256.num_warps = d256.num_stages = 0;
    d256.flags |= SFA_FEAT_SOFTCAP | SFA_FEAT_ALIBI; /* session 25: 1.9x wgmma with them */
    ck_assert_msg(sfa_spec_default(&d256, e256, sizeof e256) == SFA_OK, "%s", e256);
    ck_assert_int_eq(d256.mma, SFA_SPEC_MMA_WS);
    /* packed sequences at D 256 take the wgmma backward */
    d256.block_m = d256.block_n = d256.num_warps = d256.num_stages = 0;
    d256.flags = SFA_FEAT_CAUSAL | SFA_FEAT_VARLEN;
    ck_assert_msg(sfa_spec_default(&d256, e256, sizeof e256) == SFA_OK, "%s", e256);
    ck_assert_int_eq(d256.mma, SFA_SPEC_MMA_WGMMA);
  }
  s.flags |= SFA_FEAT_VARLEN;
  expect(&s, SFA_ERR_INVALID_ARGUMENT,
         "flags: varlen not allowed with mma ws in pass bwd at head_dim 256", "mma wgmma");
  s.flags &= ~SFA_FEAT_VARLEN;
  s.mode = SFA_MODE_HASH;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "mma: ws in pass bwd at head_dim 256 serves modes dense and window",
         "not hash");
  s.mode = SFA_MODE_DENSE, s.head_dim = 192;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "head_dim: 192 is not allowed with mma ws in pass bwd",
         "64, 128 or 256");
  s.block_n = 128;
  s.head_dim = 128, s.mode = SFA_MODE_HASH, s.flags = 0; /* the producer stages q_hash, q_idx */
  expect(&s, SFA_OK, NULL, NULL);
  s.mode = SFA_MODE_QK_DROP, s.flags = SFA_FEAT_STRICT;
  expect(&s, SFA_OK, NULL, NULL);
  s.mode = SFA_MODE_WINDOW, s.flags = SFA_FEAT_CAUSAL | SFA_FEAT_SOFTCAP | SFA_FEAT_ALIBI;
  expect(&s, SFA_OK, NULL, NULL);
  s.flags = SFA_FEAT_CAUSAL | SFA_FEAT_BIAS;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "flags: bias not allowed with mma ws in pass bwd", NULL);
  s.mode = SFA_MODE_DENSE, s.flags = SFA_FEAT_DETERMINISTIC;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "flags: det not allowed with mma ws in pass bwd", NULL);
  s.flags = SFA_FEAT_VARLEN; /* packed sequences: at D 64 and 128 */
  expect(&s, SFA_OK, NULL, NULL);
  /* its name round-trips, and the default of mma ws in pass bwd is this tile */
  s.flags = SFA_FEAT_CAUSAL;
  char name[SFA__NAME_MAX], err[256] = "";
  ck_assert_int_eq(sfa_spec_name(&s, name, sizeof name), SFA_OK);
  ck_assert_str_eq(name, "sfa_bwd_dense_causal_ws_bf16_d128_m64n128_w12s2_sm90");
  sfa_kernel_spec back, d = s;
  ck_assert_int_eq(sfa_spec_parse(name, &back, err, sizeof err), SFA_OK);
  ck_assert(sfa__spec_same_config(&back, &s));
  d.block_m = d.block_n = d.num_warps = d.num_stages = 0, d.mma = SFA_SPEC_MMA_SYNC;
  ck_assert_int_eq(sfa__spec_default_mma(&d, 2, err, sizeof err), SFA_OK);
  ck_assert(sfa__spec_same_config(&d, &s));
  /* the default too (measured faster), also with softcap and ALiBi (session 25) */
  d.block_m = d.block_n = d.num_warps = d.num_stages = 0;
  ck_assert_int_eq(sfa_spec_default(&d, err, sizeof err), SFA_OK);
  ck_assert(sfa__spec_same_config(&d, &s));
  d.flags |= SFA_FEAT_SOFTCAP | SFA_FEAT_ALIBI;
  d.block_m = d.block_n = d.num_warps = d.num_stages = 0;
  ck_assert_int_eq(sfa_spec_default(&d, err, sizeof err), SFA_OK);
  ck_assert(sfa__spec_same_config(&d, &s));
  d.flags = SFA_FEAT_CAUSAL | SFA_FEAT_VARLEN; /* packed sequences too */
  d.block_m = d.block_n = d.num_warps = d.num_stages = 0;
  ck_assert_int_eq(sfa_spec_default(&d, err, sizeof err), SFA_OK);
  ck_assert(sfa__spec_same_config(&d, &s));
  d.mode = SFA_MODE_HASH, d.flags = 0; /* hash and qk_drop too (session 23) */
  d.block_m = d.block_n = d.num_warps = d.num_stages = 0;
  ck_assert_int_eq(sfa_spec_default(&d, err, sizeof err), SFA_OK);
  ck_assert_int_eq(d.mma, SFA_SPEC_MMA_WS);
  d.mode = SFA_MODE_QK_DROP, d.flags = SFA_FEAT_STRICT;
  d.block_m = d.block_n = d.num_warps = d.num_stages = 0;
  ck_assert_int_eq(sfa_spec_default(&d, err, sizeof err), SFA_OK);
  ck_assert_int_eq(d.mma, SFA_SPEC_MMA_WS);
  d.flags |= SFA_FEAT_SOFTCAP;
  d.block_m = d.block_n = d.num_warps = d.num_stages = 0;
  ck_assert_int_eq(sfa_spec_default(&d, err, sizeof err), SFA_OK);
  ck_assert_int_eq(d.mma, SFA_SPEC_MMA_WS);
  d.mode = SFA_MODE_WINDOW, d.flags = SFA_FEAT_CAUSAL | SFA_FEAT_BIAS; /* not with a bias */
  d.block_m = d.block_n = d.num_warps = d.num_stages = 0;
  ck_assert_int_eq(sfa_spec_default(&d, err, sizeof err), SFA_OK);
  ck_assert_int_eq(d.mma, SFA_SPEC_MMA_WGMMA);
}
END_TEST

/* mma wgmma: fwd and bwd on sm_90 only, head_dim 64 or 128, block_m == 16 *
** num_warps (64 rows per warpgroup), block_n 64 or 128. Each error names its
** field. */
START_TEST(wgmma_rule) {
  sfa_kernel_spec s = good();
  s.mma = SFA_SPEC_MMA_WGMMA;
  s.block_m = 64, s.block_n = 128, s.num_warps = 4, s.num_stages = 1;
  expect(&s, SFA_OK, NULL, NULL);
  s.head_dim = 64, s.block_m = 128, s.block_n = 64, s.num_warps = 8, s.num_stages = 2;
  expect(&s, SFA_OK, NULL, NULL);
  s.mode = SFA_MODE_WINDOW;
  s.flags = SFA_FEAT_CAUSAL | SFA_FEAT_BIAS | SFA_FEAT_MASK;
  expect(&s, SFA_OK, NULL, NULL);
  /* bwd: warpgroups of 64 keys (block_n 16 x num_warps) and 64-query tiles */
  s = good();
  s.mma = SFA_SPEC_MMA_WGMMA;
  s.pass = SFA_PASS_BWD;
  s.block_m = 64, s.block_n = 128, s.num_warps = 8, s.num_stages = 2;
  expect(&s, SFA_OK, NULL, NULL);
  s.flags |= SFA_FEAT_DETERMINISTIC;
  expect(&s, SFA_OK, NULL, NULL);
  s.block_n = 64, s.num_warps = 4, s.num_stages = 1;
  expect(&s, SFA_OK, NULL, NULL);
  s.num_warps = 8, s.block_n = 128, s.block_m = 128;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "block_m: 128 is not allowed with mma wgmma in pass bwd",
         "64");
  s.block_m = 64, s.num_warps = 4; /* 32 keys per warp: valid for mma.sync */
  expect(&s, SFA_ERR_INVALID_ARGUMENT,
         "block_n: 128 is not allowed with mma wgmma and num_warps 4", "must be 64");
  /* bwddq never (a tile that bwddq allows otherwise) */
  s = good();
  s.mma = SFA_SPEC_MMA_WGMMA;
  s.pass = SFA_PASS_BWD_DQ;
  s.num_warps = 8;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "mma: wgmma", "passes fwd and bwd on sm_90 only");
  /* the archs: sm_90 only */
  s = good();
  s.mma = SFA_SPEC_MMA_WGMMA;
  s.block_m = 64, s.block_n = 128;
  for (int i = 0; i < NARCHS; i++) {
    if (archs[i] == 90) continue;
    s.arch = archs[i];
    expect(&s, SFA_ERR_INVALID_ARGUMENT, "mma: wgmma", "sm_90 only");
  }
  s.arch = 90;
  expect(&s, SFA_OK, NULL, NULL);
  /* head dims 64 and 128; 256 in pass bwd only, with 8 warps (two CTAs per
  ** key tile, a column half each) */
  for (int d = 32; d <= 256; d += 16) {
    s.head_dim = d;
    if (d == 64 || d == 128) continue;
    char msg[64];
    snprintf(msg, sizeof msg, "head_dim: %d is not allowed with mma wgmma", d);
    expect(&s, SFA_ERR_INVALID_ARGUMENT, msg, "64 or 128 (256 in pass bwd)");
  }
  {
    sfa_kernel_spec b = good();
    b.mma = SFA_SPEC_MMA_WGMMA, b.pass = SFA_PASS_BWD, b.head_dim = 256;
    b.block_m = 64, b.block_n = 128, b.num_warps = 8, b.num_stages = 1;
    expect(&b, SFA_OK, NULL, NULL);
    b.flags |= SFA_FEAT_DETERMINISTIC;
    expect(&b, SFA_OK, NULL, NULL);
    b.block_n = 64, b.num_warps = 4;
    expect(&b, SFA_ERR_INVALID_ARGUMENT,
           "num_warps: 4 is not allowed with mma wgmma at head_dim 256", "must be 8");
    b.block_n = 128, b.num_warps = 8, b.num_stages = 2; /* Q and dO twice: 256 KB */
    expect(&b, SFA_ERR_INVALID_ARGUMENT, "shared memory", NULL);
  }
  s.head_dim = 96;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "head_dim: 96 is not allowed with mma wgmma", NULL);
  /* block_m is 64 rows per warpgroup: m64 w4, m128 w8 */
  s.head_dim = 128;
  s.block_m = 128, s.block_n = 64; /* valid for mma.sync */
  s.mma = SFA_SPEC_MMA_SYNC;
  expect(&s, SFA_OK, NULL, NULL);
  s.mma = SFA_SPEC_MMA_WGMMA;
  expect(&s, SFA_ERR_INVALID_ARGUMENT,
         "block_m: 128 is not allowed with mma wgmma and num_warps 4", "block_m must be 64");
  /* block_n at least 64 */
  s.block_m = 64, s.block_n = 32;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "block_n: 32 is not allowed with mma wgmma",
         "64 or 128");
  s.block_n = 64;
  expect(&s, SFA_OK, NULL, NULL);
}
END_TEST

/* Forward flags per mode: dense {causal}, qk_drop and hash none, window any mix
** of causal, bias and mask; deterministic never. All 16 sets for each mode. */
START_TEST(flags_per_mode) {
  static const unsigned allowed[4] = {
    SFA_FEAT_CAUSAL, 0, 0, SFA_FEAT_CAUSAL | SFA_FEAT_BIAS | SFA_FEAT_MASK};
  sfa_kernel_spec s = good();
  for (int m = 0; m < 4; m++)
    for (unsigned f = 0; f < 16; f++) {
      s.mode = (sfa_mode)m;
      s.flags = f;
      char err[512] = "";
      sfa_status st = sfa_spec_validate(&s, err, sizeof err);
      int ok = (f & ~allowed[m]) == 0;
      ck_assert_msg((st == SFA_OK) == ok, "mode %d flags 0x%x: status %d (%s)", m, f, st, err);
      if (!ok) {
        ck_assert_int_eq(st, SFA_ERR_INVALID_ARGUMENT);
        ck_assert_msg(strncmp(err, "flags: ", 7) == 0, "'%s' does not name the field", err);
      }
    }
  /* The messages say what is allowed. */
  s.mode = SFA_MODE_QK_DROP;
  s.flags = SFA_FEAT_CAUSAL;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "flags: causal is not allowed with mode qk_drop",
         "q_idx >= k_idx is intrinsic");
  s.mode = SFA_MODE_HASH;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "mode hash, which allows strict, softcap, varlen", NULL);
  s.flags = SFA_FEAT_MASK;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "mask is not allowed with mode hash",
         "hash, which allows strict, softcap, varlen; mask applies to mode window");
  s.flags = SFA_FEAT_ALIBI;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "alibi is not allowed with mode hash",
         "alibi applies to modes dense and window");
  s.mode = SFA_MODE_WINDOW;
  s.flags = SFA_FEAT_STRICT;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "strict is not allowed with mode window",
         "strict applies to modes qk_drop and hash");
  s.mode = SFA_MODE_HASH;
  s.mode = SFA_MODE_WINDOW;
  s.flags = SFA_FEAT_CAUSAL | SFA_FEAT_BIAS | SFA_FEAT_MASK | SFA_FEAT_DETERMINISTIC;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "flags: det applies to pass bwd only", NULL);
  s.pass = SFA_PASS_BWD_DQ;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "flags: det applies to pass bwd only", NULL);
  /* bwd takes det with every mode's flags. */
  s.pass = SFA_PASS_BWD;
  s.block_m = 64, s.block_n = 128, s.num_warps = 8;
  expect(&s, SFA_OK, NULL, NULL);
}
END_TEST

START_TEST(smem_rule) {
  /* d256 m128 n128 s2 over 8 warps: 2*264*(128+512) = 337920 bytes. */
  sfa_kernel_spec s = {SFA_PASS_FWD, SFA_MODE_DENSE, SFA_DTYPE_FP16, 256, 128, 128, 8, 2, 90, 0,
                       SFA_SPEC_MMA_SYNC};
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "block_m/block_n/num_stages: needs 337920 bytes",
         "sm_90 allows 232448");
  /* d128 m128 n64 s2: 104448 bytes fits 80 and 90 but not 86/89. */
  s = good();
  s.num_stages = 2;
  ck_assert_uint_eq(sfa_spec_smem_bytes(&s), 104448);
  s.arch = 80;
  expect(&s, SFA_OK, NULL, NULL);
  s.arch = 86;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "needs 104448 bytes of shared memory",
         "sm_86 allows 101376");
  s.arch = 89;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "sm_89 allows 101376", NULL);
  /* d256 m64 n64 s1 is exactly 99 KB: allowed everywhere. */
  sfa_kernel_spec t = {SFA_PASS_FWD, SFA_MODE_DENSE, SFA_DTYPE_BF16, 256, 64, 64, 4, 1, 86, 0,
                       SFA_SPEC_MMA_SYNC};
  expect(&t, SFA_OK, NULL, NULL);
  ck_assert_uint_eq(sfa_spec_smem_bytes(&t), 101376);
  /* sm_80 and sm_87 allow 163 KB: d256 m64 n64 s2 needs 168960. */
  t.num_stages = 2;
  t.arch = 87;
  expect(&t, SFA_ERR_INVALID_ARGUMENT, "needs 168960 bytes", "sm_87 allows 166912");
  t.arch = 90;
  expect(&t, SFA_OK, NULL, NULL);
}
END_TEST

START_TEST(register_rule) {
  /* m128 over 4 warps = 2 m16 tiles: d256 needs 2*32*4 + 2*8*4 = 320. */
  sfa_kernel_spec s = {SFA_PASS_FWD, SFA_MODE_DENSE, SFA_DTYPE_BF16, 256, 128, 64, 4, 1, 90, 0,
                       SFA_SPEC_MMA_SYNC};
  expect(&s, SFA_ERR_INVALID_ARGUMENT,
         "block_m/num_warps/block_n: tile needs 320 accumulator registers per thread",
         "(limit 192)");
  /* d128 m128 n128 w4: 128 + 128 = 256. */
  s.head_dim = 128;
  s.block_n = 128;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "needs 256 accumulator registers", NULL);
  /* d128 m128 n64 w4: 128 + 64 = 192, right at the limit. */
  s.block_n = 64;
  expect(&s, SFA_OK, NULL, NULL);
  ck_assert_int_eq(sfa__spec_acc_registers(&s), 192);
  /* Eight warps halve it. */
  s.num_warps = 8;
  s.block_n = 128;
  expect(&s, SFA_OK, NULL, NULL);
}
END_TEST

START_TEST(smem_bytes) {
  sfa_kernel_spec s = good();
  ck_assert_uint_eq(sfa_spec_smem_bytes(&s), 2u * 136 * (128 + 2 * 64));
  s.head_dim = 64;
  s.num_stages = 2;
  s.block_n = 32;
  ck_assert_uint_eq(sfa_spec_smem_bytes(&s), 2u * 72 * (128 + 4 * 32));
  /* mma wgmma: unpadded rows, a 1024-byte aligned base */
  s.mma = SFA_SPEC_MMA_WGMMA;
  s.block_m = 64, s.block_n = 128, s.num_stages = 1, s.head_dim = 128;
  ck_assert_uint_eq(sfa_spec_smem_bytes(&s), 1024u + 2u * 128 * (64 + 2 * 128));
  s.head_dim = 40;
  ck_assert_uint_eq(sfa_spec_smem_bytes(&s), 0);
  ck_assert_uint_eq(sfa_spec_smem_bytes(NULL), 0);
}
END_TEST

/* ------------------------------------------------------------ names */

START_TEST(name_example) {
  sfa_kernel_spec s = good();
  char buf[SFA__NAME_MAX];
  ck_assert_int_eq(sfa_spec_name(&s, buf, sizeof buf), SFA_OK);
  ck_assert_str_eq(buf, "sfa_fwd_dense_causal_bf16_d128_m128n64_w4s1_sm90");
  s.flags = 0;
  s.dtype = SFA_DTYPE_FP16;
  s.num_stages = 2;
  s.arch = 80;
  ck_assert_int_eq(sfa_spec_name(&s, buf, sizeof buf), SFA_OK);
  ck_assert_str_eq(buf, "sfa_fwd_dense_fp16_d128_m128n64_w4s2_sm80");
  /* Unsupported but well-formed specs have names too. */
  s.pass = SFA_PASS_BWD_DQ;
  s.mode = SFA_MODE_QK_DROP;
  s.flags = SFA_FEAT_CAUSAL | SFA_FEAT_BIAS | SFA_FEAT_MASK | SFA_FEAT_DETERMINISTIC;
  ck_assert_int_eq(sfa_spec_name(&s, buf, sizeof buf), SFA_OK);
  ck_assert_str_eq(buf, "sfa_bwddq_qkdrop_causal_bias_mask_det_fp16_d128_m128n64_w4s2_sm80");
  s.mma = SFA_SPEC_MMA_WGMMA; /* spelled after the last flag */
  ck_assert_int_eq(sfa_spec_name(&s, buf, sizeof buf), SFA_OK);
  ck_assert_str_eq(buf, "sfa_bwddq_qkdrop_causal_bias_mask_det_wg_fp16_d128_m128n64_w4s2_sm80");
}
END_TEST

/* A wgmma spec's name: "_wg" after the flags, before the dtype; it parses
** back to the same spec, and only in that place. */
START_TEST(name_of_a_wg_spec) {
  sfa_kernel_spec s = {SFA_PASS_FWD, SFA_MODE_DENSE, SFA_DTYPE_BF16, 128, 64, 128, 4, 1, 90,
                       SFA_FEAT_CAUSAL, SFA_SPEC_MMA_WGMMA}, back;
  char buf[SFA__NAME_MAX], err[256] = "";
  ck_assert_int_eq(sfa_spec_name(&s, buf, sizeof buf), SFA_OK);
  ck_assert_str_eq(buf, "sfa_fwd_dense_causal_wg_bf16_d128_m64n128_w4s1_sm90");
  ck_assert_msg(sfa_spec_parse(buf, &back, err, sizeof err) == SFA_OK, "%s", err);
  ck_assert(memcmp(&s, &back, sizeof s) == 0);
  ck_assert_int_eq(sfa_spec_validate(&back, err, sizeof err), SFA_OK);
  ck_assert_int_eq(sfa_spec_parse("sfa_fwd_dense_wg_fp16_d64_m128n64_w8s2_sm90", &back, err,
                                  sizeof err), SFA_OK);
  ck_assert_uint_eq(back.flags, 0);
  ck_assert_int_eq(back.mma, SFA_SPEC_MMA_WGMMA);
  ck_assert(back.head_dim == 64 && back.block_m == 128 && back.num_warps == 8);
  /* after det, the flag before it */
  const char *all = "sfa_bwd_window_causal_bias_mask_det_wg_bf16_d64_m64n128_w8s2_sm90";
  ck_assert_msg(sfa_spec_parse(all, &back, err, sizeof err) == SFA_OK, "%s", err);
  ck_assert_uint_eq(back.flags, SFA_FEAT_CAUSAL | SFA_FEAT_BIAS | SFA_FEAT_MASK |
                                    SFA_FEAT_DETERMINISTIC);
  ck_assert_int_eq(back.mma, SFA_SPEC_MMA_WGMMA);
  ck_assert_int_eq(sfa_spec_name(&back, buf, sizeof buf), SFA_OK);
  ck_assert_str_eq(buf, all);
  /* the warp-specialized forward spells "ws" in the same place */
  const char *ws = "sfa_fwd_window_causal_bias_ws_bf16_d64_m128n128_w12s3_sm90";
  ck_assert_msg(sfa_spec_parse(ws, &back, err, sizeof err) == SFA_OK, "%s", err);
  ck_assert_int_eq(back.mma, SFA_SPEC_MMA_WS);
  ck_assert(back.num_warps == 12 && back.num_stages == 3);
  ck_assert_int_eq(sfa_spec_validate(&back, err, sizeof err), SFA_OK);
  ck_assert_int_eq(sfa_spec_name(&back, buf, sizeof buf), SFA_OK);
  ck_assert_str_eq(buf, ws);
}
END_TEST

START_TEST(name_errors) {
  sfa_kernel_spec s = good();
  char buf[SFA__NAME_MAX];
  /* Too small a buffer: error and an empty string. */
  ck_assert_int_eq(sfa_spec_name(&s, buf, 10), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_str_eq(buf, "");
  ck_assert_int_eq(sfa_spec_name(&s, NULL, 10), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_int_eq(sfa_spec_name(NULL, buf, sizeof buf), SFA_ERR_INVALID_ARGUMENT);
  s.head_dim = 40;
  ck_assert_int_eq(sfa_spec_name(&s, buf, sizeof buf), SFA_ERR_INVALID_ARGUMENT);
}
END_TEST

/* Every well-formed spec over a grid: name, parse back, same spec, same name. */
START_TEST(name_round_trip) {
  static const int dims[] = {32, 48, 64, 96, 128, 160, 256}, ms[] = {64, 128};
  static const int ns[] = {32, 64, 128}, ws[] = {4, 8}, ss[] = {1, 2};
  int count = 0;
  for (int p = 0; p < 3; p++)
    for (int mo = 0; mo < 4; mo++)
      for (int t = 0; t < 2; t++)
        for (unsigned f = 0; f < 32; f++) /* causal, bias, mask, det, wg */
          for (int d = 0; d < 7; d++)
            for (int m = 0; m < 2; m++)
              for (int n = 0; n < 3; n++)
                for (int w = 0; w < 2; w++)
                  for (int st = 0; st < 2; st++)
                    for (int a = 0; a < NARCHS; a++) {
                      if (ms[m] % (16 * ws[w])) continue;
                      sfa_kernel_spec s = {(sfa_pass)p, (sfa_mode)mo,
                                           t ? SFA_DTYPE_BF16 : SFA_DTYPE_FP16, dims[d],
                                           ms[m], ns[n], ws[w], ss[st], archs[a], f & 15u,
                                           f & 16u ? SFA_SPEC_MMA_WGMMA : SFA_SPEC_MMA_SYNC};
                      sfa_kernel_spec back;
                      char name[SFA__NAME_MAX], again[SFA__NAME_MAX], err[256];
                      ck_assert_int_eq(sfa_spec_name(&s, name, sizeof name), SFA_OK);
                      ck_assert_msg(sfa_spec_parse(name, &back, err, sizeof err) == SFA_OK,
                                    "%s: %s", name, err);
                      ck_assert_msg(memcmp(&s, &back, sizeof s) == 0, "%s differs", name);
                      ck_assert_int_eq(sfa_spec_name(&back, again, sizeof again), SFA_OK);
                      ck_assert_str_eq(name, again);
                      count++;
                    }
  ck_assert_int_gt(count, 10000);
  /* every combination of every flag (strict, softcap, alibi too), with both mma kinds */
  count = 0;
  for (int mo = 0; mo < 4; mo++)
    for (unsigned f = 0; f < 256; f++) {
      sfa_kernel_spec s = {SFA_PASS_BWD, (sfa_mode)mo, SFA_DTYPE_BF16, 64, 64, 128, 4, 2, 90,
                           f & ~16u, f & 16u ? SFA_SPEC_MMA_WGMMA : SFA_SPEC_MMA_SYNC};
      sfa_kernel_spec back;
      char name[SFA__NAME_MAX], err[256];
      ck_assert_int_eq(sfa_spec_name(&s, name, sizeof name), SFA_OK);
      ck_assert_msg(sfa_spec_parse(name, &back, err, sizeof err) == SFA_OK, "%s: %s", name, err);
      ck_assert_msg(memcmp(&s, &back, sizeof s) == 0, "%s differs", name);
      count++;
    }
  ck_assert_int_eq(count, 4 * 256);
}
END_TEST

static void parse_fails(const char *name, const char *needle) {
  sfa_kernel_spec s;
  char err[512] = "";
  sfa_status st = sfa_spec_parse(name, &s, err, sizeof err);
  ck_assert_msg(st == SFA_ERR_INVALID_ARGUMENT, "'%s' parsed", name);
  ck_assert_msg(strstr(err, needle), "'%s': '%s' not in '%s'", name, needle, err);
}

START_TEST(parse_errors) {
  parse_fails("", "ends where 'sfa' is expected");
  parse_fails("xfa_fwd_dense_bf16_d128_m128n64_w4s1_sm90", "bad token 'xfa'");
  parse_fails("sfa_fwx_dense_bf16_d128_m128n64_w4s1_sm90", "bad token 'fwx'");
  parse_fails("sfa_fwd_qk_drop_bf16_d128_m128n64_w4s1_sm90", "bad token 'qk'");
  parse_fails("sfa_fwd_dense_f16_d128_m128n64_w4s1_sm90", "bad token 'f16'");
  parse_fails("sfa_fwd_dense_causal_causal_bf16_d128_m128n64_w4s1_sm90", "bad token 'causal'");
  parse_fails("sfa_fwd_dense_bias_causal_bf16_d128_m128n64_w4s1_sm90", "order causal, bias");
  parse_fails("sfa_fwd_dense_wg_causal_bf16_d128_m64n128_w4s1_sm90",
              "order causal, bias, mask, det, strict, softcap, alibi, varlen, gather, then wg or ws");
  parse_fails("sfa_bwd_dense_wg_det_bf16_d128_m64n128_w8s2_sm90",
              "order causal, bias, mask, det, strict, softcap, alibi, varlen, gather, then wg or ws");
  parse_fails("sfa_fwd_dense_wg_wg_bf16_d128_m64n128_w4s1_sm90", "bad token 'wg'");
  parse_fails("sfa_fwd_dense_wg_ws_bf16_d128_m128n128_w12s2_sm90", "bad token 'ws'");
  parse_fails("sfa_fwd_dense_wgmma_bf16_d128_m64n128_w4s1_sm90",
              "a flag (causal, bias, mask, det, strict, softcap, alibi, varlen, gather, wg, ws) or the dtype");
  parse_fails("sfa_fwd_dense_bf16_128_m128n64_w4s1_sm90", "bad token '128'");
  parse_fails("sfa_fwd_dense_bf16_d0128_m128n64_w4s1_sm90", "bad token 'd0128'");
  parse_fails("sfa_fwd_dense_bf16_d128x_m128n64_w4s1_sm90", "bad token 'd128x'");
  parse_fails("sfa_fwd_dense_bf16_d40_m128n64_w4s1_sm90", "head_dim: 40 is not allowed");
  parse_fails("sfa_fwd_dense_bf16_d128_m128_w4s1_sm90", "bad token 'm128'");
  parse_fails("sfa_fwd_dense_bf16_d128_m128n48_w4s1_sm90", "block_n: 48");
  parse_fails("sfa_fwd_dense_bf16_d128_m128n64_w4_sm90", "bad token 'w4'");
  parse_fails("sfa_fwd_dense_bf16_d128_m128n64_w3s1_sm90", "num_warps: 3");
  parse_fails("sfa_fwd_dense_bf16_d128_m128n64_w4s1_sm75", "arch: 75");
  parse_fails("sfa_fwd_dense_bf16_d128_m128n64_w4s1_s90", "bad token 's90'");
  parse_fails("sfa_fwd_dense_bf16_d128_m128n64_w4s1", "ends where sm<arch> is expected");
  parse_fails("sfa_fwd_dense_bf16_d128_m128n64_w4s1_sm90_", "unexpected text after 'sm90'");
  parse_fails("sfa_fwd_dense_bf16_d128_m128n64_w4s1_sm90_x", "unexpected text after 'sm90'");
  parse_fails("sfa_fwd__dense_bf16_d128_m128n64_w4s1_sm90", "empty token");
  parse_fails("sfa_fwd_dense_bf16_d99999999999_m128n64_w4s1_sm90", "bad token");
  parse_fails("sfa_fwd_dense_bf16_d128_m128n64_w4s1_sm90aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
              "too long");
  /* A NULL name or output. */
  sfa_kernel_spec s;
  char err[128];
  ck_assert_int_eq(sfa_spec_parse(NULL, &s, err, sizeof err), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_int_eq(sfa_spec_parse("sfa_fwd_dense_bf16_d128_m128n64_w4s1_sm90", NULL, err,
                                  sizeof err), SFA_ERR_INVALID_ARGUMENT);
  /* A failed parse leaves *spec alone. */
  sfa_kernel_spec keep = good(), copy = keep;
  sfa_spec_parse("sfa_fwd_dense_bf16_d40_m128n64_w4s1_sm90", &copy, NULL, 0);
  ck_assert(memcmp(&keep, &copy, sizeof keep) == 0);
}
END_TEST

/* ------------------------------------------------------------ defaults */

/* One allowed flag set of each kind per mode. */
static const struct { sfa_mode mode; unsigned flags; } mode_flags[] = {
  {SFA_MODE_DENSE, 0}, {SFA_MODE_DENSE, SFA_FEAT_CAUSAL}, {SFA_MODE_QK_DROP, 0},
  {SFA_MODE_HASH, 0}, {SFA_MODE_WINDOW, 0}, {SFA_MODE_WINDOW, SFA_FEAT_CAUSAL},
  {SFA_MODE_WINDOW, SFA_FEAT_CAUSAL | SFA_FEAT_BIAS | SFA_FEAT_MASK},
  {SFA_MODE_WINDOW, SFA_FEAT_MASK}};
#define NMODE_FLAGS (sizeof mode_flags / sizeof mode_flags[0])

START_TEST(defaults_valid_everywhere) {
  for (size_t mf = 0; mf < NMODE_FLAGS; mf++)
    for (int a = 0; a < NARCHS; a++)
      for (int t = 0; t < 2; t++)
        for (int d = 32; d <= 256; d += 16) {
          sfa_kernel_spec s = {SFA_PASS_FWD, mode_flags[mf].mode,
                               t ? SFA_DTYPE_BF16 : SFA_DTYPE_FP16, d, 0, 0, 0, 0,
                               archs[a], mode_flags[mf].flags, SFA_SPEC_MMA_SYNC};
          char err[256] = "";
          ck_assert_msg(sfa_spec_default(&s, err, sizeof err) == SFA_OK,
                        "mode %d d%d sm%d: %s", (int)s.mode, d, archs[a], err);
          ck_assert_msg(sfa_spec_validate(&s, err, sizeof err) == SFA_OK,
                        "mode %d d%d sm%d: %s", (int)s.mode, d, archs[a], err);
          ck_assert_uint_le(sfa_spec_smem_bytes(&s), sfa__arch_smem_limit(archs[a]));
        }
}
END_TEST

static sfa_kernel_spec defaults_for(sfa_mode mode, unsigned flags, int d, int arch) {
  sfa_kernel_spec s = {SFA_PASS_FWD, mode, SFA_DTYPE_BF16, d, 0, 0, 0, 0, arch, flags,
                       SFA_SPEC_MMA_SYNC};
  ck_assert_int_eq(sfa_spec_default(&s, NULL, 0), SFA_OK);
  return s;
}

/* bench/NOTES.md (H100): D<=64 m128n64w4s2; D<=128 m128n64w4s1 (s1 beat s2 at
** D=128 on sm_90); D<=256 m64n64w4s1. Every mode and arch alike, except sm_90
** at D 64 and 128: wgmma, D64 m128n64w8s2 (hash and window: m64n64w4s2) and
** D128 m64n128w4s1; and where ws was measured faster (dense, qk_drop, window
** without a bias; hash at D 128): ws m128n128w12, 2 stages at D 64, 3 at D 128, except at
** D 64 dense and qk_drop: three consumers, m192n128w16s4, and window: one, m64n64w8s2
** (three CTAs per SM), and hash: one, m64n64w8s2. */
START_TEST(defaults_heuristic) {
  for (size_t mf = 0; mf < NMODE_FLAGS; mf++)
    for (int a = 0; a < NARCHS; a++)
      for (int d = 32; d <= 256; d += 16) {
        sfa_kernel_spec s = defaults_for(mode_flags[mf].mode, mode_flags[mf].flags, d, archs[a]);
        int wg = archs[a] == 90 && (d == 64 || d == 128);
        int m = d <= 128 ? 128 : 64, n = 64, w = 4, st = d <= 64 ? 2 : 1;
        const int short_rows = mode_flags[mf].mode == SFA_MODE_HASH ||
                               mode_flags[mf].mode == SFA_MODE_WINDOW;
        if (wg && d == 64) m = short_rows ? 64 : 128, n = 64, w = short_rows ? 4 : 8, st = 2;
        if (wg && d == 128) m = 64, n = 128, w = 4, st = 1;
        const unsigned fl = mode_flags[mf].flags;
        const sfa_mode md = mode_flags[mf].mode;
        const int ws = wg && !(fl & SFA_FEAT_MASK) &&
                       (md == SFA_MODE_DENSE || md == SFA_MODE_QK_DROP ||
                        (md == SFA_MODE_WINDOW && !(fl & SFA_FEAT_BIAS)) ||
                        (md == SFA_MODE_HASH && d == 128));
        if (ws) m = 128, n = 128, w = 12, st = d == 128 ? 3 : 2;
        if (ws && d == 64 && md != SFA_MODE_WINDOW) m = 192, w = 16, st = 4; /* 3 consumers */
        if (ws && d == 64 && md == SFA_MODE_WINDOW) m = 64, n = 64, w = 8; /* 1 consumer */
        if (ws && md == SFA_MODE_HASH) m = 64, n = 64, w = 8, st = 2;       /* 1 consumer */
        /* D 256: ws (two consumers, 64-key tiles) for dense, qk_drop and an unbiased
        ** window */
        const int ws256 = archs[a] == 90 && d == 256 && !(fl & (SFA_FEAT_MASK | SFA_FEAT_BIAS)) &&
                          md != SFA_MODE_HASH;
        if (ws256) m = 128, n = 64, w = 12, st = 2;
        ck_assert_msg(s.block_m == m && s.block_n == n && s.num_warps == w &&
                          s.num_stages == st && s.flags == mode_flags[mf].flags &&
                          s.mma == (ws || ws256 ? SFA_SPEC_MMA_WS
                                    : wg        ? SFA_SPEC_MMA_WGMMA
                                                : SFA_SPEC_MMA_SYNC),
                      "mode %d d%d sm%d: m%dn%dw%ds%d flags 0x%x mma %d, want m%dn%dw%ds%d%s",
                      (int)s.mode, d, archs[a], s.block_m, s.block_n, s.num_warps, s.num_stages,
                      s.flags, (int)s.mma, m, n, w, st, wg ? " wgmma" : "");
      }
  sfa_kernel_spec s = defaults_for(SFA_MODE_WINDOW, SFA_FEAT_CAUSAL | SFA_FEAT_BIAS, 128, 90);
  ck_assert(s.block_m == 64 && s.block_n == 128 && s.num_warps == 4 && s.num_stages == 1);
  ck_assert_uint_eq(s.flags, SFA_FEAT_CAUSAL | SFA_FEAT_BIAS);
  ck_assert_int_eq(s.mma, SFA_SPEC_MMA_WGMMA);
  s = defaults_for(SFA_MODE_WINDOW, SFA_FEAT_CAUSAL, 128, 90);
  ck_assert(s.block_m == 128 && s.block_n == 128 && s.num_warps == 12 && s.num_stages == 3);
  ck_assert_int_eq(s.mma, SFA_SPEC_MMA_WS);
  s = defaults_for(SFA_MODE_DENSE, SFA_FEAT_CAUSAL, 128, 80);
  ck_assert(s.block_m == 128 && s.block_n == 64 && s.num_warps == 4 && s.num_stages == 1);
  ck_assert_uint_eq(s.flags, SFA_FEAT_CAUSAL);
  ck_assert_int_eq(s.mma, SFA_SPEC_MMA_SYNC);
  s = defaults_for(SFA_MODE_HASH, 0, 64, 86);
  ck_assert(s.block_m == 128 && s.block_n == 64 && s.num_warps == 4 && s.num_stages == 2);
  s = defaults_for(SFA_MODE_WINDOW, SFA_FEAT_BIAS, 256, 89);
  ck_assert(s.block_m == 64 && s.block_n == 64 && s.num_warps == 4 && s.num_stages == 1);
}
END_TEST

/* Window at D 64 takes the one-consumer ws tile with 64-key tiles by default,
** without a bias, softcap or ALiBi (those keep the wgmma kernel: measured
** faster with softcap and ALiBi); at D 128 softcap and ALiBi are on ws. */
START_TEST(defaults_window_d64_one_consumer) {
  const unsigned fl[] = {0,
                         SFA_FEAT_CAUSAL,
                         SFA_FEAT_VARLEN | SFA_FEAT_CAUSAL,
                         SFA_FEAT_SOFTCAP,
                         SFA_FEAT_ALIBI | SFA_FEAT_CAUSAL,
                         SFA_FEAT_BIAS,
                         SFA_FEAT_BIAS | SFA_FEAT_SOFTCAP};
  for (size_t i = 0; i < sizeof fl / sizeof fl[0]; i++) {
    sfa_kernel_spec s = defaults_for(SFA_MODE_WINDOW, fl[i], 64, 90);
    const int ws = !(fl[i] & (SFA_FEAT_SOFTCAP | SFA_FEAT_ALIBI | SFA_FEAT_BIAS));
    ck_assert_msg(s.mma == (ws ? SFA_SPEC_MMA_WS : SFA_SPEC_MMA_WGMMA), "flags 0x%x", fl[i]);
    if (ws) ck_assert(s.block_m == 64 && s.block_n == 64 && s.num_warps == 8 && s.num_stages == 2);
    ck_assert_int_eq(sfa_spec_validate(&s, NULL, 0), SFA_OK);
  }
  ck_assert_int_eq(defaults_for(SFA_MODE_WINDOW, SFA_FEAT_SOFTCAP, 128, 90).mma, SFA_SPEC_MMA_WS);
}
END_TEST

/* The three-consumer tile is dense and qk_drop D 64's default on sm_90 where its 160
** registers per thread hold the epilogue: softcap and ALiBi keep two consumers. */
START_TEST(defaults_three_consumers_dense_d64_without_softcap_alibi) {
  const unsigned fl[] = {0, SFA_FEAT_CAUSAL, SFA_FEAT_VARLEN | SFA_FEAT_CAUSAL,
                         SFA_FEAT_SOFTCAP, SFA_FEAT_ALIBI | SFA_FEAT_CAUSAL};
  for (size_t i = 0; i < sizeof fl / sizeof fl[0]; i++) {
    sfa_kernel_spec s = defaults_for(SFA_MODE_DENSE, fl[i], 64, 90);
    const int three = !(fl[i] & (SFA_FEAT_SOFTCAP | SFA_FEAT_ALIBI));
    ck_assert_int_eq(s.mma, SFA_SPEC_MMA_WS);
    ck_assert_int_eq(s.num_warps, three ? 16 : 12);
    ck_assert_int_eq(s.block_m, three ? 192 : 128);
    ck_assert_int_eq(s.num_stages, three ? 4 : 2);
    ck_assert_int_eq(sfa_spec_validate(&s, NULL, 0), SFA_OK);
  }
  /* qk_drop too; at D 128 two consumers */
  ck_assert_int_eq(defaults_for(SFA_MODE_QK_DROP, 0, 64, 90).num_warps, 16);
  ck_assert_int_eq(defaults_for(SFA_MODE_QK_DROP, SFA_FEAT_SOFTCAP, 64, 90).num_warps, 12);
  ck_assert_int_eq(defaults_for(SFA_MODE_DENSE, SFA_FEAT_CAUSAL, 128, 90).num_warps, 12);
}
END_TEST

/* The default decides mma: wgmma for sm_90 fwd and bwd at D 64/128 and bwd
** at D 256 whatever the caller passed, ws for the sm_90 backward at D 64/128
** without a bias, mask or det and the forward of dense, qk_drop and an unbiased
** window at D 256, mma.sync everywhere else (the dq pass, other archs and
** dims); the flags stay as they are. */
START_TEST(defaults_set_or_clear_wg) {
  sfa_kernel_spec s = {SFA_PASS_FWD, SFA_MODE_HASH, SFA_DTYPE_FP16, 64, 0, 0, 0, 0, 90, 0,
                       SFA_SPEC_MMA_SYNC};
  ck_assert_int_eq(sfa_spec_default(&s, NULL, 0), SFA_OK);
  ck_assert_uint_eq(s.flags, 0);
  ck_assert_int_eq(s.mma, SFA_SPEC_MMA_WGMMA);
  ck_assert(s.block_m == 64 && s.block_n == 64 && s.num_warps == 4 && s.num_stages == 2);
  s.pass = SFA_PASS_BWD; /* the warp-specialized backward */
  ck_assert_int_eq(sfa_spec_default(&s, NULL, 0), SFA_OK);
  ck_assert_int_eq(s.mma, SFA_SPEC_MMA_WS);
  ck_assert(s.block_m == 64 && s.block_n == 128 && s.num_warps == 12 && s.num_stages == 2);
  s.flags = SFA_FEAT_DETERMINISTIC; /* not served there: wgmma */
  ck_assert_int_eq(sfa_spec_default(&s, NULL, 0), SFA_OK);
  ck_assert_int_eq(s.mma, SFA_SPEC_MMA_WGMMA);
  ck_assert(s.block_m == 64 && s.block_n == 128 && s.num_warps == 8 && s.num_stages == 2);
  s.flags = 0;
  static const struct { sfa_pass pass; int d, arch; } off[] = {
    {SFA_PASS_FWD, 128, 80}, {SFA_PASS_FWD, 64, 89}, {SFA_PASS_FWD, 96, 90},
    {SFA_PASS_BWD, 128, 80}, {SFA_PASS_BWD, 192, 90}, {SFA_PASS_BWD_DQ, 64, 90}};
  for (size_t i = 0; i < sizeof off / sizeof off[0]; i++) {
    sfa_kernel_spec t = {off[i].pass, SFA_MODE_DENSE, SFA_DTYPE_BF16, off[i].d, 0, 0, 0, 0,
                         off[i].arch, SFA_FEAT_CAUSAL, SFA_SPEC_MMA_WGMMA};
    char err[256] = "";
    ck_assert_msg(sfa_spec_default(&t, err, sizeof err) == SFA_OK, "case %zu: %s", i, err);
    ck_assert_msg(t.flags == SFA_FEAT_CAUSAL, "case %zu: flags 0x%x", i, t.flags);
    ck_assert_msg(t.mma == SFA_SPEC_MMA_SYNC, "case %zu: mma %d", i, (int)t.mma);
  }
  /* the forward at D 256 on sm_90: ws for dense, qk_drop and an unbiased
  ** window, not for packed sequences (not timed there) or hash */
  static const struct { sfa_mode mode; unsigned flags; int ws; } d256[] = {
    {SFA_MODE_DENSE, SFA_FEAT_CAUSAL, 1}, {SFA_MODE_DENSE, 0, 1},
    {SFA_MODE_WINDOW, SFA_FEAT_CAUSAL, 1}, {SFA_MODE_WINDOW, SFA_FEAT_CAUSAL | SFA_FEAT_BIAS, 0},
    {SFA_MODE_DENSE, SFA_FEAT_CAUSAL | SFA_FEAT_VARLEN, 0}, {SFA_MODE_QK_DROP, 0, 1},
    {SFA_MODE_HASH, 0, 0}};
  for (size_t i = 0; i < sizeof d256 / sizeof d256[0]; i++) {
    sfa_kernel_spec t = {SFA_PASS_FWD, d256[i].mode, SFA_DTYPE_BF16, 256, 0, 0, 0, 0, 90,
                         d256[i].flags, SFA_SPEC_MMA_SYNC};
    ck_assert_int_eq(sfa_spec_default(&t, NULL, 0), SFA_OK);
    ck_assert_msg(t.mma == (d256[i].ws ? SFA_SPEC_MMA_WS : SFA_SPEC_MMA_SYNC), "d256 case %zu", i);
    ck_assert_int_eq(sfa_spec_validate(&t, NULL, 0), SFA_OK);
  }
  /* the backward at D 256 on sm_90: dense and window the ws kernel, m64n64w12s2
  ** (bwd_ws256.lt); qk_drop and hash wgmma, m64n128w8s1 (two CTAs per key tile) */
  for (int m = 0; m < 4; m++) {
    static const sfa_mode modes[] = {SFA_MODE_DENSE, SFA_MODE_QK_DROP, SFA_MODE_HASH,
                                     SFA_MODE_WINDOW};
    sfa_kernel_spec t = {SFA_PASS_BWD, modes[m], SFA_DTYPE_FP16, 256, 0, 0, 0, 0, 90, 0,
                         SFA_SPEC_MMA_SYNC};
    ck_assert_int_eq(sfa_spec_default(&t, NULL, 0), SFA_OK);
    const int ws = modes[m] == SFA_MODE_DENSE || modes[m] == SFA_MODE_WINDOW;
    ck_assert_msg(t.mma == (ws ? SFA_SPEC_MMA_WS : SFA_SPEC_MMA_WGMMA), "bwd d256 mode %d: mma %d",
                  (int)modes[m], (int)t.mma);
    if (ws)
      ck_assert(t.block_m == 64 && t.block_n == 64 && t.num_warps == 12 && t.num_stages == 2);
    else
      ck_assert(t.block_m == 64 && t.block_n == 128 && t.num_warps == 8 && t.num_stages == 1);
    ck_assert_int_eq(sfa_spec_validate(&t, NULL, 0), SFA_OK);
  }
}
END_TEST

/* The default of a chosen mma kind: wgmma where allowed (fwd and bwd on sm_90
** at D 64 and 128), otherwise mma.sync; the auto choice is sfa_spec_default. */
START_TEST(defaults_of_an_mma_kind) {
  sfa_kernel_spec s = {SFA_PASS_BWD, SFA_MODE_DENSE, SFA_DTYPE_BF16, 128, 0, 0, 0, 0, 90,
                       SFA_FEAT_CAUSAL, SFA_SPEC_MMA_SYNC};
  ck_assert_int_eq(sfa__spec_default_mma(&s, 1, NULL, 0), SFA_OK);
  ck_assert_uint_eq(s.flags, SFA_FEAT_CAUSAL);
  ck_assert_int_eq(s.mma, SFA_SPEC_MMA_WGMMA);
  ck_assert(s.block_m == 64 && s.block_n == 128 && s.num_warps == 8 && s.num_stages == 2);
  sfa_kernel_spec d = s;
  ck_assert_int_eq(sfa_spec_default(&d, NULL, 0), SFA_OK); /* auto: ws (measured faster) */
  ck_assert_int_eq(d.mma, SFA_SPEC_MMA_WS);
  d.flags |= SFA_FEAT_DETERMINISTIC; /* det: wgmma, the same tiles */
  ck_assert_int_eq(sfa_spec_default(&d, NULL, 0), SFA_OK);
  d.flags &= ~SFA_FEAT_DETERMINISTIC;
  ck_assert(memcmp(&d, &s, sizeof d) == 0);
  ck_assert_int_eq(sfa__spec_default_mma(&d, 0, NULL, 0), SFA_OK); /* mma.sync on request */
  ck_assert_uint_eq(d.flags, SFA_FEAT_CAUSAL);
  ck_assert_int_eq(d.mma, SFA_SPEC_MMA_SYNC);
  sfa_kernel_spec f = {SFA_PASS_FWD, SFA_MODE_QK_DROP, SFA_DTYPE_FP16, 64, 0, 0, 0, 0, 90, 0,
                       SFA_SPEC_MMA_SYNC};
  ck_assert_int_eq(sfa__spec_default_mma(&f, 0, NULL, 0), SFA_OK);
  ck_assert_int_eq(f.mma, SFA_SPEC_MMA_SYNC); /* on request: the pre-wgmma default tiles */
  ck_assert(f.block_m == 128 && f.block_n == 64 && f.num_warps == 4 && f.num_stages == 2);
  ck_assert_int_eq(sfa__spec_default_mma(&f, 1, NULL, 0), SFA_OK);
  ck_assert_uint_eq(f.flags, 0);
  ck_assert_int_eq(f.mma, SFA_SPEC_MMA_WGMMA);
  sfa_kernel_spec h = f;
  h.mode = SFA_MODE_HASH;
  ck_assert_int_eq(sfa__spec_default_mma(&h, -1, NULL, 0), SFA_OK);
  ck_assert_int_eq(h.mma, SFA_SPEC_MMA_WGMMA); /* auto, hash at D 64: wgmma (measured faster) */
  /* ws on request: hash's one consumer of 64 rows and 64-key tiles, two stages
  ** (qk_drop at D 64: three consumers, four stages); where it is not allowed (a
  ** backward that bwd_ws.lt does not serve, a mask, sm_80) wgmma, then mma.sync */
  ck_assert_int_eq(sfa__spec_default_mma(&h, 2, NULL, 0), SFA_OK);
  ck_assert_int_eq(h.mma, SFA_SPEC_MMA_WS);
  ck_assert(h.block_m == 64 && h.block_n == 64 && h.num_warps == 8 && h.num_stages == 2);
  ck_assert_int_eq(sfa_spec_validate(&h, NULL, 0), SFA_OK);
  sfa_kernel_spec h128 = h;
  h128.head_dim = 128; /* at D 128 hash's ws is the default (session 35) */
  ck_assert_int_eq(sfa__spec_default_mma(&h128, -1, NULL, 0), SFA_OK);
  ck_assert_int_eq(h128.mma, SFA_SPEC_MMA_WS);
  ck_assert(h128.block_m == 64 && h128.block_n == 64 && h128.num_warps == 8 &&
            h128.num_stages == 2);
  /* at D 256 ws on request keeps two consumers (one would not fit its rule) */
  sfa_kernel_spec h256 = h;
  h256.head_dim = 256;
  ck_assert_int_eq(sfa__spec_default_mma(&h256, 2, NULL, 0), SFA_OK);
  ck_assert_int_eq(h256.mma, SFA_SPEC_MMA_WS);
  ck_assert(h256.block_m == 128 && h256.block_n == 64 && h256.num_warps == 12);
  ck_assert_int_eq(sfa_spec_validate(&h256, NULL, 0), SFA_OK);
  ck_assert_int_eq(sfa__spec_default_mma(&f, 2, NULL, 0), SFA_OK);
  ck_assert_int_eq(f.mma, SFA_SPEC_MMA_WS);
  ck_assert(f.block_m == 192 && f.block_n == 128 && f.num_warps == 16 && f.num_stages == 4);
  ck_assert_int_eq(sfa_spec_validate(&f, NULL, 0), SFA_OK);
  sfa_kernel_spec w = s; /* the bwd above: ws serves it, not with det */
  ck_assert_int_eq(sfa__spec_default_mma(&w, 2, NULL, 0), SFA_OK);
  ck_assert_int_eq(w.mma, SFA_SPEC_MMA_WS);
  w = s, w.flags |= SFA_FEAT_DETERMINISTIC;
  ck_assert_int_eq(sfa__spec_default_mma(&w, 2, NULL, 0), SFA_OK);
  ck_assert_int_eq(w.mma, SFA_SPEC_MMA_WGMMA);
  w.pass = SFA_PASS_FWD, w.mode = SFA_MODE_WINDOW, w.flags = SFA_FEAT_CAUSAL | SFA_FEAT_MASK;
  ck_assert_int_eq(sfa__spec_default_mma(&w, 2, NULL, 0), SFA_OK);
  ck_assert_int_eq(w.mma, SFA_SPEC_MMA_WGMMA);
  w.arch = 80;
  ck_assert_int_eq(sfa__spec_default_mma(&w, 2, NULL, 0), SFA_OK);
  ck_assert_int_eq(w.mma, SFA_SPEC_MMA_SYNC);
  /* the backward at D 256: wgmma (one stage) on request, ws (bwd_ws256.lt)
  ** by default, mma.sync's m64n64w4s1 when mma.sync is asked for */
  sfa_kernel_spec b = {SFA_PASS_BWD, SFA_MODE_DENSE, SFA_DTYPE_BF16, 256, 0, 0, 0, 0, 90,
                       SFA_FEAT_CAUSAL, SFA_SPEC_MMA_SYNC};
  ck_assert_int_eq(sfa__spec_default_mma(&b, 1, NULL, 0), SFA_OK);
  ck_assert_int_eq(b.mma, SFA_SPEC_MMA_WGMMA);
  ck_assert(b.block_m == 64 && b.block_n == 128 && b.num_warps == 8 && b.num_stages == 1);
  ck_assert_int_eq(sfa_spec_validate(&b, NULL, 0), SFA_OK);
  sfa_kernel_spec bd = b;
  bd.block_m = bd.block_n = bd.num_warps = bd.num_stages = 0;
  ck_assert_int_eq(sfa_spec_default(&bd, NULL, 0), SFA_OK);
  ck_assert_int_eq(bd.mma, SFA_SPEC_MMA_WS);
  ck_assert(bd.block_m == 64 && bd.block_n == 64 && bd.num_warps == 12 && bd.num_stages == 2);
  ck_assert_int_eq(sfa__spec_default_mma(&b, 0, NULL, 0), SFA_OK);
  ck_assert_int_eq(b.mma, SFA_SPEC_MMA_SYNC);
  ck_assert(b.block_m == 64 && b.block_n == 64 && b.num_warps == 4 && b.num_stages == 1);
  static const struct { sfa_pass pass; int d, arch; } never[] = {
    {SFA_PASS_BWD, 128, 80}, {SFA_PASS_BWD, 96, 90}, {SFA_PASS_BWD_DQ, 128, 90},
    {SFA_PASS_FWD, 256, 90}, {SFA_PASS_BWD, 256, 80}};
  for (size_t i = 0; i < sizeof never / sizeof never[0]; i++) {
    sfa_kernel_spec t = {never[i].pass, SFA_MODE_DENSE, SFA_DTYPE_BF16, never[i].d, 0, 0, 0, 0,
                         never[i].arch, 0, SFA_SPEC_MMA_SYNC};
    ck_assert_int_eq(sfa__spec_default_mma(&t, 1, NULL, 0), SFA_OK);
    ck_assert_msg(t.mma == SFA_SPEC_MMA_SYNC, "case %zu", i);
    ck_assert_int_eq(sfa__wgmma_allowed(&t), 0);
  }
}
END_TEST

START_TEST(defaults_errors) {
  sfa_kernel_spec s = {SFA_PASS_FWD, SFA_MODE_DENSE, SFA_DTYPE_BF16, 40, 0, 0, 0, 0, 90, 0,
                       SFA_SPEC_MMA_SYNC};
  char err[256] = "";
  ck_assert_int_eq(sfa_spec_default(&s, err, sizeof err), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_ptr_nonnull(strstr(err, "head_dim: 40"));
  s.head_dim = 64;
  s.arch = 75;
  ck_assert_int_eq(sfa_spec_default(&s, err, sizeof err), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_ptr_nonnull(strstr(err, "arch: 75"));
  /* An unsupported head dim still gets its tiles, and says it is unsupported. */
  s.arch = 90;
  s.pass = SFA_PASS_BWD;
  s.head_dim = 144;
  ck_assert_int_eq(sfa_spec_default(&s, err, sizeof err), SFA_ERR_UNSUPPORTED);
  ck_assert_ptr_nonnull(strstr(err, "multiples of 32 up to 256"));
  ck_assert_int_eq(s.block_n, 64);
  s.head_dim = 64;
  /* Flags a mode does not allow are named after the tiles are filled in. */
  s.pass = SFA_PASS_FWD;
  s.mode = SFA_MODE_QK_DROP;
  s.flags = SFA_FEAT_CAUSAL;
  ck_assert_int_eq(sfa_spec_default(&s, err, sizeof err), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_ptr_nonnull(strstr(err, "flags: causal is not allowed with mode qk_drop"));
  ck_assert_int_eq(sfa_spec_default(NULL, err, sizeof err), SFA_ERR_INVALID_ARGUMENT);
}
END_TEST

/* Where no backward tile fits the arch (D 256: 144896 bytes at the smallest,
** sm_86 and 89 allow 101376; tests/test_arch.c has the newer 99 KB archs),
** the default is SFA_ERR_UNSUPPORTED naming the memory, and the presets leave
** that class's backward out instead of failing. */
START_TEST(defaults_of_a_backward_no_tile_fits_are_unsupported) {
  static const int small[] = {86, 89};
  for (size_t a = 0; a < 2; a++) {
    sfa_kernel_spec s = {SFA_PASS_BWD, SFA_MODE_DENSE, SFA_DTYPE_BF16, 256, 0, 0, 0, 0,
                         small[a], SFA_FEAT_CAUSAL, SFA_SPEC_MMA_SYNC};
    char err[256] = "", want[160];
    ck_assert_int_eq(sfa_spec_default(&s, err, sizeof err), SFA_ERR_UNSUPPORTED);
    snprintf(want, sizeof want, "pass bwd at head dim 256: its smallest tile needs 144896 "
             "bytes of shared memory, sm_%d allows 101376", small[a]);
    ck_assert_msg(strstr(err, want), "'%s' not in '%s'", want, err);
    /* a rule the class breaks is still named first */
    s.mode = SFA_MODE_QK_DROP;
    ck_assert_int_eq(sfa_spec_default(&s, err, sizeof err), SFA_ERR_INVALID_ARGUMENT);
    ck_assert_msg(strstr(err, "flags: causal is not allowed with mode qk_drop"), "%s", err);
    sfa_kernel_spec *v = NULL;
    size_t n = 0;
    ck_assert_msg(sfa__preset("default", &small[a], 1, &v, &n, err, sizeof err) == SFA_OK,
                  "sm_%d: %s", small[a], err);
    int fwd256 = 0;
    for (size_t i = 0; i < n; i++) {
      ck_assert(v[i].head_dim != 256 || v[i].pass == SFA_PASS_FWD || v[i].pass == SFA_PASS_DECODE);
      fwd256 += v[i].head_dim == 256;
      ck_assert_int_eq(sfa_spec_validate(&v[i], err, sizeof err), SFA_OK);
    }
    ck_assert_int_eq(fwd256, 4);
    ck_assert_uint_eq(n, 44 + 3 * 40 + 28 + 11); /* and 28 decode, 11 utility kernels */
    free(v);
  }
}
END_TEST

/* ------------------------------------------------------------ utility passes */

/* Every utility pass in every dtype it takes on every arch: sfa_spec_default
** gives a valid spec (no tiles, the pass's warps), its name spells the pass,
** the dtype where the pass takes several, and the arch, and parses back. */
START_TEST(utility_names_round_trip) {
  static const struct { sfa_pass pass; sfa_dtype dtype; const char *name; int warps; } u[] = {
    {SFA_PASS_BWD_PRE, SFA_DTYPE_FP16, "sfa_bwdpre_fp16", 8},
    {SFA_PASS_BWD_PRE, SFA_DTYPE_BF16, "sfa_bwdpre_bf16", 8},
    {SFA_PASS_CONVERT, SFA_DTYPE_FP16, "sfa_convert_fp16", 8},
    {SFA_PASS_CONVERT, SFA_DTYPE_BF16, "sfa_convert_bf16", 8},
    {SFA_PASS_HASH_SORT, SFA_DTYPE_INT32, "sfa_hashsort", 32},
    {SFA_PASS_PERMUTE, SFA_DTYPE_UINT8, "sfa_permute", 8},
    {SFA_PASS_TOPK, SFA_DTYPE_FP16, "sfa_topk_fp16", 16},
    {SFA_PASS_TOPK, SFA_DTYPE_BF16, "sfa_topk_bf16", 16},
    {SFA_PASS_TOPK, SFA_DTYPE_FP32, "sfa_topk_fp32", 16},
    {SFA_PASS_MERGE, SFA_DTYPE_FP32, "sfa_merge", 8},
    {SFA_PASS_KV_APPEND, SFA_DTYPE_UINT8, "sfa_kvappend", 8},
  };
  for (size_t i = 0; i < sizeof u / sizeof u[0]; i++)
    for (int a = 0; a < NARCHS; a++) {
      sfa_kernel_spec s = {u[i].pass, SFA_MODE_DENSE, u[i].dtype, 0, 0, 0, 0, 0, archs[a], 0,
                           SFA_SPEC_MMA_SYNC};
      sfa_kernel_spec back;
      char name[SFA__NAME_MAX], want[SFA__NAME_MAX], err[256] = "";
      ck_assert_msg(sfa_spec_default(&s, err, sizeof err) == SFA_OK, "%s", err);
      ck_assert_int_eq(s.num_warps, u[i].warps);
      ck_assert(s.head_dim == 0 && s.block_m == 0 && s.block_n == 0 && s.num_stages == 0);
      ck_assert_int_eq(sfa_spec_validate(&s, err, sizeof err), SFA_OK);
      ck_assert_uint_eq(sfa_spec_smem_bytes(&s), 0);
      ck_assert_int_eq(sfa_spec_name(&s, name, sizeof name), SFA_OK);
      snprintf(want, sizeof want, "%s_sm%d", u[i].name, archs[a]);
      ck_assert_str_eq(name, want);
      ck_assert_msg(sfa_spec_parse(name, &back, err, sizeof err) == SFA_OK, "%s: %s", name, err);
      ck_assert_msg(memcmp(&s, &back, sizeof s) == 0, "%s differs", name);
      ck_assert(sfa__pass_is_util(s.pass));
    }
  ck_assert(!sfa__pass_is_util(SFA_PASS_FWD) && !sfa__pass_is_util(SFA_PASS_BWD_DQ) &&
            !sfa__pass_is_util(SFA_PASS_BWD) && !sfa__pass_is_util((sfa_pass)9));
  ck_assert_uint_eq(sfa__util_dtypes(SFA_PASS_TOPK), (1u << SFA_DTYPE_FP16) |
                                                       (1u << SFA_DTYPE_BF16) |
                                                       (1u << SFA_DTYPE_FP32));
  ck_assert_uint_eq(sfa__util_dtypes(SFA_PASS_FWD), 0);
  ck_assert_str_eq(sfa__pass_name(SFA_PASS_BWD_PRE), "bwd_pre");
  ck_assert_str_eq(sfa__pass_name(SFA_PASS_HASH_SORT), "hash_sort");
  ck_assert_str_eq(sfa__pass_name(SFA_PASS_MERGE), "merge");
  ck_assert_str_eq(sfa__pass_name(SFA_PASS_DECODE), "decode");
  ck_assert_str_eq(sfa__pass_name(SFA_PASS_KV_APPEND), "kv_append");
  ck_assert_ptr_null(sfa__pass_name((sfa_pass)(SFA_PASS_KV_APPEND + 1)));
}
END_TEST

/* A utility spec has mode dense, no flags, no tiles, the pass's warps and one
** of its dtypes; each broken rule names its field. */
START_TEST(utility_rules) {
  const sfa_kernel_spec good_u = {SFA_PASS_TOPK, SFA_MODE_DENSE, SFA_DTYPE_FP32, 0, 0, 0, 16, 0,
                                  90, 0, SFA_SPEC_MMA_SYNC};
  sfa_kernel_spec s = good_u;
  expect(&s, SFA_OK, NULL, NULL);
  s.mode = SFA_MODE_WINDOW;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "mode: 3 is not allowed with pass topk", "mode dense");
  s = good_u, s.dtype = SFA_DTYPE_INT32;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "dtype: int32 is not allowed with pass topk",
         "must be fp16, bf16 or fp32");
  s = good_u, s.pass = SFA_PASS_HASH_SORT, s.num_warps = 32;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "dtype: fp32 is not allowed with pass hash_sort",
         "must be int32");
  s = good_u, s.dtype = (sfa_dtype)9;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "dtype: 9 is not allowed with pass topk", NULL);
  s = good_u, s.head_dim = 64;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "head_dim: 64 is not allowed with pass topk", "be 0");
  s = good_u, s.block_m = 64;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "block_m: 64", NULL);
  s = good_u, s.block_n = 64;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "block_n: 64", NULL);
  s = good_u, s.num_stages = 1;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "num_stages: 1", NULL);
  s = good_u, s.num_warps = 8;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "num_warps: 8 is not allowed with pass topk; must be 16",
         "512 threads");
  s = good_u, s.arch = 75;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "arch: 75", NULL);
  s = good_u, s.flags = SFA_FEAT_CAUSAL;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "flags: 0x1 is not allowed with pass topk", NULL);
  s = good_u, s.flags = 1u << 4;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "flags: 0x10", NULL);
  s = good_u, s.mma = SFA_SPEC_MMA_WGMMA;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "mma: 1 is not allowed with pass topk",
         "a utility kernel has none");
  /* a name needs a valid spec; the default fills only the tiles */
  char buf[SFA__NAME_MAX], err[256] = "";
  s = good_u, s.num_warps = 4;
  ck_assert_int_eq(sfa_spec_name(&s, buf, sizeof buf), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_int_eq(sfa_spec_name(&good_u, buf, 10), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_str_eq(buf, "");
  s = good_u, s.head_dim = 128;
  ck_assert_int_eq(sfa_spec_default(&s, err, sizeof err), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(err, "head_dim: 128 is not allowed with pass topk"), "%s", err);
  s = good_u, s.block_m = 128, s.num_warps = 4, s.num_stages = 2, s.mma = SFA_SPEC_MMA_WGMMA;
  ck_assert_int_eq(sfa_spec_default(&s, err, sizeof err), SFA_OK);
  ck_assert(memcmp(&s, &good_u, sizeof s) == 0);
  /* an attention pass still takes only fp16 and bf16 */
  s = good();
  s.dtype = SFA_DTYPE_FP32;
  expect(&s, SFA_ERR_INVALID_ARGUMENT, "dtype: fp32 is not allowed with pass fwd",
         "must be fp16 or bf16");
}
END_TEST

START_TEST(utility_parse_errors) {
  parse_fails("sfa_topk_sm90", "bad token 'sm90'; expected the dtype (fp16, bf16 or fp32)");
  parse_fails("sfa_topk", "ends where the dtype (fp16, bf16 or fp32) is expected");
  parse_fails("sfa_topk_int32_sm90", "dtype: int32 is not allowed with pass topk");
  parse_fails("sfa_topk_fp16", "ends where sm<arch> is expected");
  parse_fails("sfa_hashsort_int32_sm90", "bad token 'int32'; expected sm<arch>");
  parse_fails("sfa_bwdpre_bf16_sm75", "arch: 75");
  parse_fails("sfa_bwdpre_bf16_sm090", "bad token 'sm090'");
  parse_fails("sfa_permute_sm90_", "unexpected text after 'sm90'");
  parse_fails("sfa_convert_fp16_sm90_d64", "unexpected text after 'sm90'");
  parse_fails("sfa_bwd_pre_fp16_sm90", "bad token 'pre'");
  parse_fails("sfa_util_topk_bf16", "bad token 'util'");
}
END_TEST

int main(void) {
  Suite *s = suite_create("spec");
  TCase *v = tcase_create("validate");
  tcase_add_test(v, valid_spec);
  tcase_add_test(v, pass_rule);
  tcase_add_test(v, mode_rule);
  tcase_add_test(v, dtype_rule);
  tcase_add_test(v, head_dim_rule);
  tcase_add_test(v, warps_rule);
  tcase_add_test(v, block_m_rule);
  tcase_add_test(v, block_n_rule);
  tcase_add_test(v, stages_rule);
  tcase_add_test(v, arch_rule);
  tcase_add_test(v, flags_rule);
  tcase_add_test(v, flags_per_mode);
  tcase_add_test(v, wgmma_rule);
  tcase_add_test(v, ws_rule);
  tcase_add_test(v, ws_backward_rule);
  tcase_add_test(v, smem_rule);
  tcase_add_test(v, register_rule);
  tcase_add_test(v, smem_bytes);
  suite_add_tcase(s, v);
  TCase *n = tcase_create("names");
  tcase_add_test(n, name_example);
  tcase_add_test(n, name_errors);
  tcase_add_test(n, name_of_a_wg_spec);
  tcase_add_test(n, name_round_trip);
  tcase_add_test(n, parse_errors);
  tcase_add_test(n, utility_names_round_trip);
  tcase_add_test(n, utility_rules);
  tcase_add_test(n, utility_parse_errors);
  suite_add_tcase(s, n);
  TCase *d = tcase_create("defaults");
  tcase_add_test(d, defaults_valid_everywhere);
  tcase_add_test(d, defaults_heuristic);
  tcase_add_test(d, defaults_three_consumers_dense_d64_without_softcap_alibi);
  tcase_add_test(d, defaults_window_d64_one_consumer);
  tcase_add_test(d, defaults_set_or_clear_wg);
  tcase_add_test(d, defaults_of_an_mma_kind);
  tcase_add_test(d, defaults_errors);
  tcase_add_test(d, defaults_of_a_backward_no_tile_fits_are_unsupported);
  suite_add_tcase(s, d);
  return tu_run_suite(s);
}
