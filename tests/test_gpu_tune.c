/*
** test_gpu_tune.c -- the tuner and the AOT kernel dirs on a real GPU:
** - sfa_forward under SFA_TUNE_ON tunes a new key once (the db file gets its
**   row), answers later calls from the memo, and its output matches the
**   float64 CPU reference;
** - sfa__tune_gpu on small qk_drop, hash and window (bias + mask)
**   problems: the default and the winner are usable, every accepted
**   candidate agrees with the default within the tolerance;
** - a kernel dir written by sfa-gen serves sfa_forward without compiling
**   (the disk cache stays empty); a corrupted cubin there warns once and the
**   kernel is compiled instead, with the same correct output.
** Without a driver or a device the suite prints "SKIP: <reason>" and exits
** 77 (CTest's skip code). One CUDA context for all tests (CK_FORK=no).
*/
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sfa.h"
#include "gen/gen_internal.h"
#include "runtime/autotune.h"
#include "runtime/driver.h"
#include "runtime/internal.h"
#include "runtime/tune_gpu.h"
#include "gpucase.h"

static const sfa_driver *drv;
static CUdevice device;
static CUcontext cuctx;
static int device_arch;

#define CU(call) TG_CU(call)

/* ------------------------------------------------------------ one dense problem */

typedef struct prob {
  int B, Hq, Hkv, T, D;
  sfa_dtype dt;
  float *q, *k, *v, *ref;      /* host, rounded to dt */
  CUdeviceptr dq, dk, dv, dout;
  sfa_tensor tq, tk, tv, to;
  sfa_attention_params p;
} prob;

static void prob_init(prob *P, int B, int Hq, int Hkv, int T, int D, sfa_dtype dt, uint64_t seed) {
  memset(P, 0, sizeof *P);
  P->B = B, P->Hq = Hq, P->Hkv = Hkv, P->T = T, P->D = D, P->dt = dt;
  size_t nq = (size_t)B * Hq * T * D, nk = (size_t)B * Hkv * T * D;
  P->q = malloc(nq * 4), P->k = malloc(nk * 4), P->v = malloc(nk * 4), P->ref = malloc(nq * 4);
  uint16_t *h = malloc((nq > nk ? nq : nk) * 2);
  ck_assert(P->q && P->k && P->v && P->ref && h);
  float *arr[3] = {P->q, P->k, P->v};
  CUdeviceptr *dev[3] = {&P->dq, &P->dk, &P->dv};
  for (int a = 0; a < 3; a++) {
    size_t n = a == 0 ? nq : nk;
    for (size_t i = 0; i < n; i++) {
      h[i] = sfa_float_to_half(dt, (float)tu_rand_normal(&seed));
      arr[a][i] = sfa_half_to_float(dt, h[i]);
    }
    CU(drv->cuMemAlloc(dev[a], n * 2));
    CU(drv->cuMemcpyHtoD(*dev[a], h, n * 2));
  }
  free(h);
  CU(drv->cuMemAlloc(&P->dout, nq * 2));
  const int64_t qs[4] = {B, Hq, T, D}, ks[4] = {B, Hkv, T, D};
  sfa_tensor_init(&P->tq, (void *)(uintptr_t)P->dq, dt, 4, qs);
  sfa_tensor_init(&P->tk, (void *)(uintptr_t)P->dk, dt, 4, ks);
  sfa_tensor_init(&P->tv, (void *)(uintptr_t)P->dv, dt, 4, ks);
  sfa_tensor_init(&P->to, (void *)(uintptr_t)P->dout, dt, 4, qs);
  sfa_params_init(&P->p);
  P->p.causal = 1;
  char err[256];
  ck_assert_msg(sfa_reference_forward(&P->p, B, Hq, Hkv, T, T, D, P->q, P->k, P->v, NULL, P->ref,
                                      NULL, err, sizeof err) == SFA_OK, "%s", err);
}

static void prob_free(prob *P) {
  free(P->q), free(P->k), free(P->v), free(P->ref);
  drv->cuMemFree(P->dq), drv->cuMemFree(P->dk), drv->cuMemFree(P->dv), drv->cuMemFree(P->dout);
}

/* Poison o, run sfa_forward, compare with the reference (relative L2). */
static void forward_and_check(sfa_context *ctx, prob *P, const char *what) {
  size_t n = (size_t)P->B * P->Hq * P->T * P->D;
  CU(drv->cuMemsetD8(P->dout, 0xFF, n * 2));
  sfa_status st = sfa_forward(ctx, &P->p, &P->tq, &P->tk, &P->tv, NULL, &P->to, NULL, NULL);
  ck_assert_msg(st == SFA_OK, "%s: sfa_forward: %s", what, sfa_last_error(ctx));
  CU(drv->cuCtxSynchronize());
  uint16_t *h = malloc(n * 2);
  ck_assert_ptr_nonnull(h);
  CU(drv->cuMemcpyDtoH(h, P->dout, n * 2));
  double d2 = 0, r2 = 0;
  long nan = 0;
  for (size_t i = 0; i < n; i++) {
    float g = sfa_half_to_float(P->dt, h[i]);
    if (isnan(g)) {
      nan++;
      continue;
    }
    d2 += ((double)g - P->ref[i]) * ((double)g - P->ref[i]);
    r2 += (double)P->ref[i] * P->ref[i];
  }
  free(h);
  double rel = sqrt(d2 / (r2 > 0 ? r2 : 1)), tol = P->dt == SFA_DTYPE_BF16 ? 1e-2 : 5e-3;
  ck_assert_msg(nan == 0 && rel < tol, "%s: rel_err %.3e (tol %.0e), %ld NaN", what, rel, tol,
                nan);
}

static sfa_context *make_ctx(const char *cache, sfa_tune_policy tune) {
  sfa_options o;
  sfa_options_init(&o);
  o.cache_dir = cache;
  o.tune = tune;
  sfa_context *ctx = NULL;
  ck_assert_int_eq(sfa_context_create(&ctx, &o), SFA_OK);
  return ctx;
}

/* Number of *.cubin files under dir/kernels (two levels). */
static int count_cached(const char *dir) {
  char cmd[1200], out[64] = "";
  snprintf(cmd, sizeof cmd, "find '%s/kernels' -name '*.cubin' 2>/dev/null | wc -l", dir);
  FILE *f = popen(cmd, "r");
  ck_assert_ptr_nonnull(f);
  ck_assert_ptr_nonnull(fgets(out, sizeof out, f));
  pclose(f);
  return atoi(out);
}

/* ------------------------------------------------------------ tests */

START_TEST(forward_under_policy_on) {
  char cache[512];
  snprintf(cache, sizeof cache, "%s", tu_mkdtemp());
  sfa_context *ctx = make_ctx(cache, SFA_TUNE_ON);
  prob P;
  prob_init(&P, 1, 4, 2, 333, 64, SFA_DTYPE_BF16, 11);
  forward_and_check(ctx, &P, "first call (tunes)");
  sfa__select_stats st;
  sfa__select_get_stats(ctx, &st);
  ck_assert_uint_eq(st.tunes, 1);
  ck_assert_uint_eq(st.tune_failures, 0);
  ck_assert_uint_eq(st.db_saves, 1);
  forward_and_check(ctx, &P, "second call (memo)");
  sfa__select_get_stats(ctx, &st);
  ck_assert_uint_eq(st.tunes, 1);
  ck_assert_uint_ge(st.memo_hits, 1);
  sfa_context_destroy(ctx);
  /* a new context reads the row back under "cached" and does not tune */
  ctx = make_ctx(cache, SFA_TUNE_CACHED);
  forward_and_check(ctx, &P, "cached");
  sfa__select_get_stats(ctx, &st);
  ck_assert_uint_eq(st.tunes, 0);
  ck_assert_uint_eq(st.db_hits, 1);
  sfa_context_destroy(ctx);
  prob_free(&P);
  tu_rm_rf(cache);
}
END_TEST

static void tune_direct(sfa_mode mode, sfa_dtype dt, int D, int T, int bias_mask) {
  char cache[512];
  snprintf(cache, sizeof cache, "%s", tu_mkdtemp());
  sfa_context *ctx = make_ctx(cache, SFA_TUNE_OFF);
  sfa__device dev;
  ck_assert_msg(sfa__bind(ctx, &dev) == SFA_OK, "%s", sfa_last_error(ctx));
  sfa_attention_params p;
  sfa_params_init(&p);
  p.mode = mode;
  sfa_kernel_spec s;
  memset(&s, 0, sizeof s);
  s.pass = SFA_PASS_FWD, s.mode = mode, s.dtype = dt, s.head_dim = D, s.arch = dev.arch;
  sfa__problem pr;
  memset(&pr, 0, sizeof pr);
  pr.params = &p;
  pr.B = 1, pr.Hq = 2, pr.Hkv = 1, pr.Tq = pr.Tk = T, pr.has_lse = 1;
  if (mode == SFA_MODE_WINDOW) {
    p.causal = 1, p.window_left = T / 4;
    s.flags = SFA_FEAT_CAUSAL;
    if (bias_mask) {
      const int64_t sh[4] = {1, 1, T, T};
      memcpy(pr.bias_shape, sh, sizeof sh);
      memcpy(pr.mask_shape, sh, sizeof sh);
      s.flags |= SFA_FEAT_BIAS | SFA_FEAT_MASK;
    }
  }
  sfa__tune_result res;
  char err[2048] = "";
  sfa_status st = sfa__tune_gpu(ctx, &dev, &s, &pr, 1, 3, 0, NULL, NULL, &res, err, sizeof err);
  ck_assert_msg(st == SFA_OK, "mode %d: %s", (int)mode, err);
  ck_assert_int_ge(res.n, 1);
  ck_assert_int_eq(res.entries[0].status, SFA__TUNE_OK);
  ck_assert_int_eq(res.entries[res.winner].status, SFA__TUNE_OK);
  ck_assert(res.best_ms > 0 && res.default_ms > 0);
  double tol = dt == SFA_DTYPE_BF16 ? SFA__TUNE_TOL_BF16 : SFA__TUNE_TOL_FP16;
  int ok = 0;
  for (int i = 0; i < res.n; i++) {
    if (res.entries[i].status != SFA__TUNE_OK) {
      printf("  mode %d candidate %d: %s: %s\n", (int)mode, i,
             sfa__tune_status_name(res.entries[i].status), res.entries[i].reason);
      continue;
    }
    ok++;
    ck_assert_msg(res.entries[i].rel_diff <= tol, "candidate %d rel %g", i,
                  res.entries[i].rel_diff);
  }
  printf("tune_direct mode %d: %d of %d candidates accepted, winner %d (%.4f ms, default "
         "%.4f ms)\n", (int)mode, ok, res.n, res.winner, res.best_ms, res.default_ms);
  ck_assert_int_ge(ok, 2); /* the default and at least one other */
  const int all = res.n;
  sfa__tune_result_free(&res);
  /* kinds: mma.sync candidates only (and the default, whatever its kind) */
  st = sfa__tune_gpu(ctx, &dev, &s, &pr, 1, 3, 1u << SFA_SPEC_MMA_SYNC, NULL, NULL, &res, err,
                     sizeof err);
  ck_assert_msg(st == SFA_OK, "mode %d, kinds sync: %s", (int)mode, err);
  ck_assert_int_ge(res.n, 2);
  ck_assert_int_le(res.n, all);
  for (int i = 1; i < res.n; i++) ck_assert_int_eq(res.entries[i].spec.mma, SFA_SPEC_MMA_SYNC);
  sfa__tune_result_free(&res);
  sfa_context_destroy(ctx);
  tu_rm_rf(cache);
}

START_TEST(tune_gpu_every_mode) {
  tune_direct(SFA_MODE_QK_DROP, SFA_DTYPE_BF16, 64, 256, 0);
  tune_direct(SFA_MODE_HASH, SFA_DTYPE_BF16, 128, 512, 0);
  tune_direct(SFA_MODE_WINDOW, SFA_DTYPE_BF16, 64, 384, 1);
}
END_TEST

START_TEST(kernel_dir_serves_forward_without_compiling) {
  char root[512], kdir[600], cache[600], cmd[2048], name[128];
  snprintf(root, sizeof root, "%s", tu_mkdtemp());
  snprintf(kdir, sizeof kdir, "%s/k", root);
  snprintf(cache, sizeof cache, "%s/cache", root);
  sfa_kernel_spec s;
  memset(&s, 0, sizeof s);
  s.pass = SFA_PASS_FWD, s.mode = SFA_MODE_DENSE, s.dtype = SFA_DTYPE_FP16, s.head_dim = 64;
  s.arch = device_arch, s.flags = SFA_FEAT_CAUSAL;
  ck_assert_int_eq(sfa_spec_default(&s, NULL, 0), SFA_OK);
  sfa__spec_for_keys(&s, 190); /* the kernel the call below takes: its rows see 190 keys */
  ck_assert_int_eq(sfa_spec_name(&s, name, sizeof name), SFA_OK);
  snprintf(cmd, sizeof cmd, "'%s' --name %s --out '%s' > /dev/null 2>&1",
           tu_build_path("gen/sfa-gen"), name, kdir);
  ck_assert_msg(system(cmd) == 0, "%s failed", cmd);

  prob P;
  prob_init(&P, 2, 2, 2, 190, 64, SFA_DTYPE_FP16, 5);
  sfa_context *ctx = make_ctx(cache, SFA_TUNE_OFF);
  ck_assert_msg(sfa_context_add_kernel_dir(ctx, kdir) == SFA_OK, "%s", sfa_last_error(ctx));
  forward_and_check(ctx, &P, "from the kernel dir");
  ck_assert_int_eq(count_cached(cache), 0); /* NVRTC was not needed */
  sfa_context_destroy(ctx);

  /* a corrupted cubin: one warning, then the cache/NVRTC path */
  char cubin[800], log[600];
  snprintf(cubin, sizeof cubin, "%s/%s.cubin", kdir, name);
  FILE *f = fopen(cubin, "r+b");
  ck_assert_ptr_nonnull(f);
  fseek(f, 200, SEEK_SET);
  fputc(0x5A, f);
  fclose(f);
  snprintf(log, sizeof log, "%s/stderr.txt", root);
  ctx = make_ctx(cache, SFA_TUNE_OFF);
  ck_assert_int_eq(sfa_context_add_kernel_dir(ctx, kdir), SFA_OK);
  int saved = tu_capture_stderr(log);
  forward_and_check(ctx, &P, "after the corrupted cubin");
  tu_restore_stderr(saved);
  sfa_context_destroy(ctx);
  f = fopen(log, "r");
  ck_assert_ptr_nonnull(f);
  char text[8192];
  size_t n = fread(text, 1, sizeof text - 1, f);
  text[n] = '\0';
  fclose(f);
  ck_assert_int_eq(tu_count_substr(text, "warning"), 1);
  ck_assert_msg(strstr(text, cubin) != NULL, "%s", text);
  ck_assert_int_eq(count_cached(cache), 1);
  prob_free(&P);
  tu_rm_rf(root);
}
END_TEST

/* ------------------------------------------------------------ main */

int main(void) {
  unsetenv("SFA_KERNEL_DIR");
  int rc = tg_open("gpu_tune", 0);
  if (rc != 0) return rc;
  /* this file's names for the shared device, context and seed */
  drv = tg_drv, device = tg_device, cuctx = tg_cuctx;
  device_arch = tg_cc > 90 ? 90 : tg_cc;
  Suite *s = suite_create("gpu_tune");
  TCase *t = tu_untimed_case(s, "gpu_tune", forward_under_policy_on);
  tcase_add_test(t, tune_gpu_every_mode);
  tcase_add_test(t, kernel_dir_serves_forward_without_compiling);
  rc = tu_run_suite(s);
  tg_close();
  return rc;
}
