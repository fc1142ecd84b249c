/*
** test_gpu_sparse.c -- the sparse forward kernels on a real GPU against the
** float64 CPU reference: qk_drop (30% and 80% of positions dropped, compact
** random keep masks, Tq' != Tk', -1 / INT32_MAX padding, rows that see no
** key), hash (1, 4, 16 and 64 buckets, layouts sorted by (bucket, position),
** separate buckets for q and k, padding suffixes) and window (the windows
** (0,0), (15,-1), (100,0) causal, (-1,37), (63,63) with Tq != Tk; a bias per
** query head, per kv head, broadcast over rows and over the batch; a uint8
** mask of 10% and 90% density with all-zero tiles and all-zero rows,
** broadcast over heads and rows; bias and mask together). GQA (Hq = 4 over
** Hkv = 2 or 1), D = 64 and 128, fp16 and bf16. Also sfa_check_indices on the
** device: it accepts every layout used here and rejects unsorted ones.
**
** Outputs are poisoned with NaN bit patterns before each run (so is the
** padding of bias rows and index rows, which the kernels must never read):
** every element must be written and NaN never passes. Bounds: relative L2 of
** o < 1e-2 (bf16) / 5e-3 (fp16), lse within 1e-2 where finite, and exactly
** -inf with o == 0 for rows with no allowed key.
**
** Without a driver or a device the suite prints "SKIP: <reason>" and exits 77
** (CTest's skip code). The tests share one CUDA context and one sfa context
** (CK_FORK=no). SFA_TEST_SEED changes the random data; each failure prints its
** case and seed.
*/
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpucase.h"

/* ------------------------------------------------------------ tests */

START_TEST(qk_drop_random) {
  /* 30% and 80% of 1000 positions dropped; capacities a bit above the
  ** expected kept count, so most rows are padded and a few truncated. */
  const double keeps[2] = {0.7, 0.2};
  int n = 0;
  for (int kd = 0; kd < 2; kd++)
    for (int dt = 0; dt < 2; dt++)
      for (int di = 0; di < 2; di++, n++) {
        const int T0 = 1000, Tq = (int)(T0 * keeps[kd] * 1.05), Tk = (int)(T0 * keeps[kd]) - 9;
        scase c = tg_case(SFA_MODE_QK_DROP, n % 2 ? 1 : 2, Tq, Tk, di ? 128 : 64,
                       dt ? SFA_DTYPE_BF16 : SFA_DTYPE_FP16);
        c.T0 = T0, c.keep = keeps[kd];
        c.idx_pad = n % 3 == 1 ? 5 : 0;
        c.seed = tg_seed + 100 + (uint64_t)n;
        tg_case_run(&c);
      }
}
END_TEST

START_TEST(hash_buckets) {
  const int nbs[4] = {1, 4, 16, 64};
  int n = 0;
  for (int bi = 0; bi < 4; bi++)
    for (int v = 0; v < 2; v++, n++) {
      scase c = tg_case(SFA_MODE_HASH, v ? 1 : 2, v ? 700 : 900, v ? 1000 : 611, v ? 128 : 64,
                     v ? SFA_DTYPE_BF16 : SFA_DTYPE_FP16);
      c.buckets = nbs[bi];
      c.idx_pad = n % 3 == 2 ? 3 : 0;
      c.seed = tg_seed + 200 + (uint64_t)n;
      tg_case_run(&c);
    }
}
END_TEST

static void run_windows(const tg_wspec *w, size_t n, uint64_t seed0) {
  for (size_t i = 0; i < n; i++) {
    scase c = tg_window_case(&w[i], tg_seed + seed0 + i);
    tg_case_run(&c);
  }
}

START_TEST(window_plain) {
  /* The five windows, Tq != Tk both ways, without extras. */
  const tg_wspec w[] = {
    {0, 0, 0, 300, 500, 64, 0, 2, BIAS_NONE, MASK_NONE, 0},
    {0, 0, 0, 500, 300, 128, 1, 1, BIAS_NONE, MASK_NONE, 0},
    {15, -1, 0, 700, 400, 128, 1, 1, BIAS_NONE, MASK_NONE, 0},
    {100, 0, 1, 800, 1000, 64, 0, 2, BIAS_NONE, MASK_NONE, 0},
    {-1, 37, 0, 513, 1000, 64, 1, 2, BIAS_NONE, MASK_NONE, 0},
    {63, 63, 0, 1000, 900, 128, 0, 1, BIAS_NONE, MASK_NONE, 0},
    {-1, -1, 1, 600, 450, 64, 0, 2, BIAS_NONE, MASK_NONE, 0}, /* causal only */
  };
  run_windows(w, sizeof w / sizeof w[0], 300);
}
END_TEST

START_TEST(window_bias) {
  const tg_wspec w[] = {
    {15, -1, 0, 700, 400, 128, 1, 1, BIAS_HEAD, MASK_NONE, 0},
    {100, 0, 1, 800, 1000, 128, 0, 2, BIAS_KV, MASK_NONE, 0},
    {-1, 37, 0, 513, 1000, 64, 1, 2, BIAS_ROW, MASK_NONE, 0},
    {63, 63, 0, 1000, 900, 64, 0, 1, BIAS_BATCH, MASK_NONE, 0},
    {0, 0, 0, 500, 300, 64, 1, 2, BIAS_HEAD, MASK_NONE, 0},
  };
  run_windows(w, sizeof w / sizeof w[0], 400);
}
END_TEST

START_TEST(window_mask) {
  const tg_wspec w[] = {
    {63, 63, 0, 1000, 900, 64, 0, 2, BIAS_NONE, MASK_HEAD, 0.1},
    {-1, -1, 0, 400, 1000, 128, 1, 2, BIAS_NONE, MASK_KV, 0.9},
    {100, 0, 1, 600, 1000, 64, 1, 1, BIAS_NONE, MASK_ROW, 0.9},
    {-1, 37, 0, 513, 777, 128, 0, 2, BIAS_NONE, MASK_HEAD, 0.9},
    {15, -1, 1, 700, 400, 64, 0, 1, BIAS_NONE, MASK_KV, 0.1},
    {-1, -1, 0, 300, 333, 64, 1, 2, BIAS_NONE, MASK_HEAD, 0.0}, /* all zero: every row empty */
  };
  run_windows(w, sizeof w / sizeof w[0], 500);
}
END_TEST

START_TEST(window_bias_and_mask) {
  const tg_wspec w[] = {
    {100, 0, 1, 600, 1000, 64, 1, 2, BIAS_HEAD, MASK_HEAD, 0.9},
    {63, 63, 0, 1000, 900, 128, 0, 1, BIAS_ROW, MASK_ROW, 0.1},
    {-1, 37, 0, 513, 1000, 64, 0, 1, BIAS_BATCH, MASK_KV, 0.9},
    {0, 0, 0, 700, 500, 128, 1, 2, BIAS_KV, MASK_HEAD, 0.9},
    {15, -1, 0, 400, 700, 64, 0, 2, BIAS_HEAD, MASK_KV, 0.1},
  };
  run_windows(w, sizeof w / sizeof w[0], 600);
}
END_TEST

/* sfa_check_indices on the device: the layouts above pass (also strided and
** on a user stream); an unsorted or wrongly padded array fails and names it. */
START_TEST(check_indices_device) {
  const sfa_mode modes[2] = {SFA_MODE_QK_DROP, SFA_MODE_HASH};
  for (int m = 0; m < 2; m++)
    for (int pad = 0; pad <= 4; pad += 4) {
      scase c = tg_case(modes[m], 2, 200, 150, 64, SFA_DTYPE_FP16);
      c.T0 = 400, c.keep = 0.45, c.buckets = 8, c.idx_pad = pad;
      c.seed = tg_seed + 700 + (uint64_t)(m * 2 + pad);
      srun R;
      tg_case_setup(&R, &c);
      CUstream stream = NULL;
      TG_CU(tg_drv->cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING));
      sfa_status st = sfa_check_indices(tg_ctx, &R.p, &R.ex, c.Tq, c.Tk, stream);
      ck_assert_msg(st == SFA_OK, "%s: valid layout rejected: %s", R.desc, sfa_last_error(tg_ctx));

      /* k row (b 1, h 0): entry 1 repeats entry 0 (position and bucket). */
      int32_t *row = R.ki + (size_t)c.Hkv * c.Tk;
      ck_assert(row[0] != INT32_MAX && row[1] != INT32_MAX);
      row[1] = row[0];
      if (R.kh) R.kh[(size_t)c.Hkv * c.Tk + 1] = R.kh[(size_t)c.Hkv * c.Tk];
      CUdeviceptr old_ki = R.dki, old_kh = R.dkh;
      R.dki = tg_upload_index(R.ki, c.B, c.Hkv, c.Tk, pad, &R.tki);
      if (R.kh) R.dkh = tg_upload_index(R.kh, c.B, c.Hkv, c.Tk, pad, &R.tkh);
      tg_drv->cuMemFree(old_ki);
      if (R.kh) tg_drv->cuMemFree(old_kh);
      st = sfa_check_indices(tg_ctx, &R.p, &R.ex, c.Tq, c.Tk, stream);
      const char *msg = sfa_last_error(tg_ctx);
      ck_assert_msg(st == SFA_ERR_INVALID_ARGUMENT &&
                        strstr(msg, "extras->k_idx[1, 0, 1]") && strstr(msg, "is not greater"),
                    "%s: unsorted k_idx: status %s: %s", R.desc, sfa_status_string(st), msg);

      /* A real entry after padding in the last q row (all padding); batch 1's q
      ** rows are checked before its k rows. */
      const size_t last = (size_t)(c.B * c.Hq - 1) * c.Tq;
      R.qi[last + 3] = 7;
      if (R.qh) R.qh[last + 3] = 0;
      CUdeviceptr old_qi = R.dqi, old_qh = R.dqh;
      R.dqi = tg_upload_index(R.qi, c.B, c.Hq, c.Tq, pad, &R.tqi);
      if (R.qh) R.dqh = tg_upload_index(R.qh, c.B, c.Hq, c.Tq, pad, &R.tqh);
      tg_drv->cuMemFree(old_qi);
      if (R.qh) tg_drv->cuMemFree(old_qh);
      st = sfa_check_indices(tg_ctx, &R.p, &R.ex, c.Tq, c.Tk, NULL);
      msg = sfa_last_error(tg_ctx);
      ck_assert_msg(st == SFA_ERR_INVALID_ARGUMENT &&
                        strstr(msg, "extras->q_idx[1, 3, 3] = 7 follows padding"),
                    "%s: real q entry after padding: status %s: %s", R.desc,
                    sfa_status_string(st), msg);
      TG_CU(tg_drv->cuStreamDestroy(stream));
      tg_case_free(&R);
    }
}
END_TEST

/* ------------------------------------------------------------ main */

int main(void) {
  int rc = tg_open("gpu_sparse", 0x5FA5001);
  if (rc != 0) return rc;
  Suite *s = suite_create("gpu_sparse");
  TCase *t = tu_untimed_case(s, "gpu_sparse", qk_drop_random);
  tcase_add_test(t, hash_buckets);
  tcase_add_test(t, window_plain);
  tcase_add_test(t, window_bias);
  tcase_add_test(t, window_mask);
  tcase_add_test(t, window_bias_and_mask);
  tcase_add_test(t, check_indices_device);
  rc = tu_run_suite(s);
  tg_close();
  return rc;
}
