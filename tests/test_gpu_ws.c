/*
** test_gpu_ws.c -- the warp-specialized Hopper forward (mma ws,
** templates/fwd_ws.lt) on a real GPU against the float64 CPU reference,
** through sfa_forward on a context that forces the kind (SFA_MMA_WS): dense
** with and without causal (Tq != Tk both ways, tails that are not a multiple
** of a tile, rows that see nothing), GQA, fp16 and bf16, D 64, 128 and 256, every
** tile config of the kind (1 to 3 consumer warpgroups, 64- or 128-key tiles,
** 2..4 stages, through the tuning db's cached rows), the sparse modes
** (qk_drop, hash, window with a bias), and a k broadcast over the batch,
** which the copy engine cannot address, so the wgmma kernel serves it.
**
** Needs compute capability 9.0 (sm_90a); elsewhere it prints "SKIP: <reason>"
** and exits 77 (CTest's skip code), as without a driver or a device. One
** process (CK_FORK=no); SFA_TEST_SEED changes the random data.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpucase.h"
#include "runtime/fwd_launch.h"
#include "runtime/internal.h"

static sfa_context *saved;

static void ws_on(void) { saved = tg_push_mma(SFA_MMA_WS); }
static void ws_off(void) { tg_pop_context(saved); }

static scase dense_case(int Hkv, int Tq, int Tk, int D, int bf16, int causal, uint64_t seed) {
  scase c = tg_case(SFA_MODE_DENSE, Hkv, Tq, Tk, D, bf16 ? SFA_DTYPE_BF16 : SFA_DTYPE_FP16);
  c.causal = causal;
  c.seed = seed;
  return c;
}

/* Which kernel sfa picks for the case under the current context (as for
** tensors the copy engine can address). */
static sfa_spec_mma picked_mma(const scase *c) { return tg_case_kernel(SFA_PASS_FWD, c).mma; }

START_TEST(dense_shapes) {
  static const struct { int Hkv, Tq, Tk, D, bf16, causal; } t[] = {
    {4, 1024, 1024, 128, 1, 1}, {4, 1024, 1024, 128, 0, 0}, {2, 1000, 1000, 128, 1, 1},
    {1, 333, 777, 128, 1, 1},   /* bottom-right causal, Tk > Tq */
    {2, 777, 333, 64, 0, 1},    /* Tq > Tk: the first rows see nothing */
    {4, 129, 65, 64, 1, 0},     {2, 1, 300, 128, 0, 1},  {4, 2048, 2048, 64, 1, 1},
    {2, 1000, 1000, 256, 1, 1}, {1, 333, 777, 256, 0, 1}, /* D 256: two consumers, n64 */
    {2, 129, 65, 256, 1, 0},
  };
  ws_on();
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
    scase c = dense_case(t[i].Hkv, t[i].Tq, t[i].Tk, t[i].D, t[i].bf16, t[i].causal,
                         tg_seed + i);
    ck_assert_int_eq(picked_mma(&c), SFA_SPEC_MMA_WS);
    tg_case_run(&c);
  }
  ws_off();
}
END_TEST

START_TEST(sparse_modes) {
  ws_on();
  scase c = tg_case(SFA_MODE_QK_DROP, 2, 735, 691, 128, SFA_DTYPE_BF16);
  c.T0 = 1000, c.keep = 0.7, c.seed = tg_seed + 100;
  ck_assert_int_eq(picked_mma(&c), SFA_SPEC_MMA_WS);
  tg_case_run(&c);
  c = tg_case(SFA_MODE_QK_DROP, 1, 600, 600, 256, SFA_DTYPE_FP16);
  c.T0 = 900, c.keep = 0.6, c.seed = tg_seed + 102;
  ck_assert_int_eq(picked_mma(&c), SFA_SPEC_MMA_WS);
  tg_case_run(&c);
  c = tg_case(SFA_MODE_HASH, 1, 700, 1000, 64, SFA_DTYPE_FP16);
  c.buckets = 16, c.seed = tg_seed + 101;
  tg_case_run(&c);
  c = tg_case(SFA_MODE_HASH, 1, 500, 500, 256, SFA_DTYPE_BF16);
  c.buckets = 8, c.seed = tg_seed + 103;
  tg_case_run(&c);
  const tg_wspec w[] = {
    {256, 0, 1, 900, 900, 128, 1, 2, BIAS_NONE, MASK_NONE, 0},
    {200, 0, 1, 700, 700, 256, 1, 2, BIAS_NONE, MASK_NONE, 0},
    {150, 30, 0, 500, 600, 256, 0, 1, BIAS_ROW, MASK_NONE, 0},
    {100, 50, 0, 500, 700, 64, 0, 4, BIAS_HEAD, MASK_NONE, 0},
    {300, 0, 1, 600, 600, 128, 1, 1, BIAS_ROW, MASK_NONE, 0},
  };
  for (size_t i = 0; i < sizeof w / sizeof w[0]; i++) {
    c = tg_window_case(&w[i], tg_seed + 200 + i);
    ck_assert_int_eq(picked_mma(&c), SFA_SPEC_MMA_WS);
    tg_case_run(&c);
  }
  /* a mask: the kind does not serve it, wgmma does */
  const tg_wspec m = {128, 0, 1, 400, 400, 64, 1, 2, BIAS_NONE, MASK_HEAD, 0.5};
  c = tg_window_case(&m, tg_seed + 300);
  ck_assert_int_eq(picked_mma(&c), SFA_SPEC_MMA_WGMMA);
  tg_case_run(&c);
  ws_off();
}
END_TEST

/* Every valid ws tile config: compiled (sfa_compile) and launched on its
** own case through the forward's launch path. */
START_TEST(every_tile_config) {
  /* SFA_TEST_WS_WARPS=N keeps the configs of num_warps N only (a sanitizer
  ** run of one consumer count); the count check then does not apply */
  const char *only = getenv("SFA_TEST_WS_WARPS");
  const int only_w = only ? atoi(only) : 0;
  int n = 0;
  for (int d = 64; d <= 256; d *= 2)
    for (int w = 8; w <= 16; w += 4) /* 16: three consumers, D 64 only; D 256: 12 only */
      for (int bn = 64; bn <= 128; bn += 64)
        for (int st = 2; st <= 4; st++) {
          sfa_kernel_spec s = {SFA_PASS_FWD, SFA_MODE_DENSE, SFA_DTYPE_BF16, d, 16 * (w - 4), bn,
                               w, st, 90, SFA_FEAT_CAUSAL, SFA_SPEC_MMA_WS};
          if (sfa_spec_validate(&s, NULL, 0) != SFA_OK || (only_w && w != only_w)) continue;
          sfa_kernel *k = NULL;
          sfa_status rc = sfa_compile(tg_ctx, &s, &k);
          ck_assert_msg(rc == SFA_OK, "sfa_compile: %s", sfa_last_error(tg_ctx));
          scase c = dense_case(2, 600 + 37 * n, 600 + 37 * n, d, 1, 1, tg_seed + 400 + n);
          srun R;
          tg_case_setup(&R, &c);
          snprintf(R.desc + strlen(R.desc), sizeof R.desc - strlen(R.desc), " m%dn%dw%ds%d",
                   s.block_m, s.block_n, s.num_warps, s.num_stages);
          TG_CU(tg_drv->cuMemsetD8(R.dout, 0xFF, R.nq * 2));
          TG_CU(tg_drv->cuMemsetD8(R.dl, 0xFF, R.nrows * 4));
          sfa_fwd_args a;
          sfa__fwd_args_fill(&a, &R.p, &R.tq, &R.tk, &R.tv, NULL, &R.to, &R.tl);
          rc = sfa__fwd_launch(tg_ctx, tg_drv, k, &a, NULL);
          ck_assert_msg(rc == SFA_OK, "%s: launch: %s", R.desc, sfa_last_error(tg_ctx));
          TG_CU(tg_drv->cuCtxSynchronize());
          tg_case_verify(&R);
          tg_case_free(&R);
          n++;
        }
  ck_assert_int_ge(n, only_w ? 1 : 20);
}
END_TEST

/* k and v broadcast over the batch (batch stride 0): valid for sfa, not for
** the copy engine, so the wgmma kernel serves the call; the result is right. */
START_TEST(broadcast_kv_is_served_by_wgmma) {
  ws_on();
  scase c = dense_case(2, 500, 400, 128, 1, 1, tg_seed + 500);
  srun R;
  tg_case_setup(&R, &c);
  const size_t per_batch = (size_t)c.Hkv * c.Tk * c.D; /* batch 1 reads batch 0's rows */
  memcpy(R.rk + per_batch, R.rk, per_batch * sizeof *R.rk);
  memcpy(R.rv + per_batch, R.rv, per_batch * sizeof *R.rv);
  R.tk.strides[0] = 0, R.tv.strides[0] = 0;
  snprintf(R.desc + strlen(R.desc), sizeof R.desc - strlen(R.desc), " k,v batch stride 0");
  tg_case_launch(&R);
  tg_case_verify(&R);
  tg_case_free(&R);
  ws_off();
}
END_TEST

int main(void) {
  int rc = tg_open("gpu_ws", 0x5FA7001);
  if (rc) return rc;
  if (tg_cc != 90) {
    printf("SKIP: the warp-specialized forward needs compute capability 9.0 (this GPU: %d.%d)\n",
           tg_cc / 10, tg_cc % 10);
    tg_close();
    return 77;
  }
  /* two cases, so that a sanitizer run can take the shapes alone
  ** (CK_RUN_CASE=shapes) */
  Suite *s = suite_create("gpu_ws");
  TCase *t = tu_untimed_case(s, "shapes", dense_shapes);
  tcase_add_test(t, sparse_modes);
  tcase_add_test(t, broadcast_kv_is_served_by_wgmma);
  tu_untimed_case(s, "tiles", every_tile_config);
  rc = tu_run_suite(s);
  tg_close();
  return rc;
}
