/*
** test_gpu_aot_only.c -- an ahead-of-time run on a real GPU: sfa-gen (run by
** the test, before anything else) writes a kernel dir with every kernel the
** cases below need on this device's arch (sfa__call_kernels lists them); then,
** with SFA_NVRTC_LIBRARY pointing at a missing file and SFA_KERNEL_DIR at that
** dir, sfa_forward and sfa_backward (atomic and deterministic dq) of every
** mode on small shapes match the float64 CPU reference, and sfa_hash_prepare,
** sfa_hash_unsort and sfa_topk_mask match a CPU model, with no kernel
** compiled and none read from the disk cache. A call whose kernel the dir
** lacks fails with "NVRTC is not available", so the guard is real.
**
** NVRTC is loaded (or not) once per process, so this is its own executable
** and sets SFA_NVRTC_LIBRARY before the first compile could happen. Without a
** driver or a device it prints "SKIP: <reason>" and exits 77.
*/
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gpucase.h"
#include "gen/arch.h"
#include "gen/gen_internal.h"
#include "runtime/internal.h"
#include "runtime/util.h"

static sfa_context *ctx;  /* AOT-only: SFA_KERNEL_DIR, NVRTC forbidden */
static char root[512];    /* the suite's temporary dir: k/ (kernels), cache/ */
static char kdir[600], cache[600];
static int arch;          /* the arch sfa uses on device 0 */

/* ------------------------------------------------------------ the cases */

/* Every mode on small shapes: dense causal and not, qk_drop, hash, window
** with a bias (its gradient) and a mask, and a plain window. */
static scase make_case(int i) {
  scase c;
  switch (i) {
  case 0:
    c = tg_case(SFA_MODE_DENSE, 2, 200, 200, 64, SFA_DTYPE_FP16);
    c.causal = 1;
    break;
  case 1:
    c = tg_case(SFA_MODE_DENSE, 4, 150, 230, 128, SFA_DTYPE_BF16);
    break;
  case 2:
    c = tg_case(SFA_MODE_QK_DROP, 2, 250, 220, 128, SFA_DTYPE_BF16);
    c.T0 = 400, c.keep = 0.7;
    break;
  case 3:
    c = tg_case(SFA_MODE_HASH, 1, 260, 240, 64, SFA_DTYPE_FP16);
    c.buckets = 4;
    break;
  case 4: {
    const tg_wspec w = {63, -1, 1, 200, 200, 64, 1, 2, BIAS_HEAD, MASK_KV, 0.8};
    c = tg_window_case(&w, 0);
    break;
  }
  default: {
    const tg_wspec w = {32, 32, 0, 180, 180, 128, 0, 4, BIAS_NONE, MASK_NONE, 0.0};
    c = tg_window_case(&w, 0);
    break;
  }
  }
  c.seed = tg_seed + 100 * (uint64_t)i + 1;
  return c;
}
#define NCASES 6

/* The params and the extras' presence (what picks the kernels) of a case. */
static void case_params(const scase *c, sfa_attention_params *p, sfa_extras *ex,
                        sfa_tensor *dummy) {
  sfa_params_init(p);
  p->mode = c->mode;
  memset(ex, 0, sizeof *ex);
  if (c->mode == SFA_MODE_DENSE || c->mode == SFA_MODE_WINDOW) p->causal = c->causal;
  if (c->mode == SFA_MODE_WINDOW) {
    p->window_left = c->left, p->window_right = c->right;
    if (c->bias != BIAS_NONE) ex->bias = dummy;
    if (c->mask != MASK_NONE) ex->mask = dummy;
  }
}

/* The sparse helpers' kernels the helper test uses. */
static const struct { sfa_pass pass; sfa_dtype dtype; } helpers[] = {
  {SFA_PASS_HASH_SORT, SFA_DTYPE_INT32}, {SFA_PASS_PERMUTE, SFA_DTYPE_UINT8},
  {SFA_PASS_TOPK, SFA_DTYPE_FP32}, {SFA_PASS_TOPK, SFA_DTYPE_BF16}};

/* ------------------------------------------------------------ the kernel dir */

static int add_name(char (*names)[SFA__NAME_MAX], int n, const sfa_kernel_spec *s) {
  char name[SFA__NAME_MAX];
  if (sfa_spec_name(s, name, sizeof name) != SFA_OK) return n;
  for (int i = 0; i < n; i++)
    if (strcmp(names[i], name) == 0) return n;
  memcpy(names[n], name, sizeof name);
  return n + 1;
}

/* Writes kdir with sfa-gen: every kernel of every case's forward and
** backward (atomic and deterministic dq) and the helpers'. 0 on success. */
static int make_kernel_dir(void) {
  static char names[64][SFA__NAME_MAX];
  int n = 0;
  sfa_options o;
  sfa_options_init(&o);
  o.tune = SFA_TUNE_OFF, o.mma = SFA_MMA_AUTO, o.cache_dir = cache;
  sfa_context *lc = NULL;
  if (sfa_context_create(&lc, &o) != SFA_OK) return 1;
  for (int i = 0; i < NCASES; i++) {
    const scase c = make_case(i);
    sfa_attention_params p;
    sfa_extras ex;
    sfa_tensor dummy;
    memset(&dummy, 0, sizeof dummy);
    case_params(&c, &p, &ex, &dummy);
    for (int call = 0; call < 3; call++) { /* fwd, bwd, bwd deterministic */
      sfa_kernel_spec specs[SFA__CALL_MAX_KERNELS];
      int k = 0;
      p.deterministic = call == 2;
      if (sfa__call_kernels(lc, call ? SFA_PASS_BWD : SFA_PASS_FWD, &p, &ex, c.dtype, c.D, arch,
                            specs, SFA__CALL_MAX_KERNELS, &k) != SFA_OK) {
        printf("FAIL: sfa__call_kernels (case %d): %s\n", i, sfa_last_error(lc));
        sfa_context_destroy(lc);
        return 1;
      }
      for (int j = 0; j < k; j++) n = add_name(names, n, &specs[j]);
    }
  }
  for (size_t i = 0; i < sizeof helpers / sizeof helpers[0]; i++) {
    sfa_kernel_spec s;
    char err[256];
    if (sfa__util_spec(helpers[i].pass, helpers[i].dtype, arch, &s, err, sizeof err) != SFA_OK) {
      printf("FAIL: %s\n", err);
      sfa_context_destroy(lc);
      return 1;
    }
    n = add_name(names, n, &s);
  }
  sfa_context_destroy(lc);

  const char *tool = tu_build_path("gen/sfa-gen"); /* testutil.h */
  static char cmd[16384];
  int at = snprintf(cmd, sizeof cmd, "'%s' --out '%s'", tool, kdir);
  for (int i = 0; i < n && at < (int)sizeof cmd; i++)
    at += snprintf(cmd + at, sizeof cmd - (size_t)at, " --name %s", names[i]);
  snprintf(cmd + at, sizeof cmd - (size_t)at, " 2>&1 | tail -1");
  printf("gpu_aot_only: sfa-gen writes %d kernels for sm_%d\n", n, arch);
  fflush(stdout);
  int rc = system(cmd);
  if (!WIFEXITED(rc) || WEXITSTATUS(rc) != 0) {
    printf("FAIL: %s\n", cmd);
    return 1;
  }
  return 0;
}

/* No compile and no cache read so far, and nothing in the disk cache. */
static void expect_aot_only(const char *where) {
  sfa__kernel_stats ks;
  sfa__kernel_get_stats(ctx, &ks);
  ck_assert_msg(ks.compiles == 0 && ks.from_cache == 0,
                "%s: %zu compiles attempted, %zu kernels from the cache (%zu from the dir)",
                where, ks.compiles, ks.from_cache, ks.from_dirs);
  char cmd[800];
  snprintf(cmd, sizeof cmd, "test -z \"$(find '%s' -name '*.cubin' 2>/dev/null)\"", cache);
  ck_assert_msg(system(cmd) == 0, "%s: cubins in the disk cache %s", where, cache);
}

/* ------------------------------------------------------------ checks */

static void sync_or_fail(const char *what) {
  CUresult r = tg_drv->cuCtxSynchronize();
  const char *name = "?";
  if (r != CUDA_SUCCESS) tg_drv->cuGetErrorName(r, &name);
  ck_assert_msg(r == CUDA_SUCCESS, "%s: %s", what, name);
}

/* Forward against the reference; the device o and lse stay for the backward. */
static void forward_case(srun *R) {
  const scase *c = &R->c;
  sfa_status st = sfa_forward(ctx, &R->p, &R->tq, &R->tk, &R->tv, R->has_ex ? &R->ex : NULL,
                              &R->to, &R->tl, NULL);
  ck_assert_msg(st == SFA_OK, "%s: sfa_forward: %s: %s", R->desc, sfa_status_string(st),
                sfa_last_error(ctx));
  sync_or_fail(R->desc);
  TG_CU(tg_drv->cuMemcpyDtoH(R->ho, R->dout, R->nq * 2));
  char why[512];
  st = sfa_reference_forward(&R->p, c->B, c->Hq, c->Hkv, c->Tq, c->Tk, c->D, R->rq, R->rk,
                             R->rv, R->has_ex ? &R->hx : NULL, R->ro, R->rl, why, sizeof why);
  ck_assert_msg(st == SFA_OK, "%s: reference: %s", R->desc, why);
  long nan = 0;
  const double e = tg_rel_err(c->dtype, R->ho, R->ro, R->nq, &nan);
  ck_assert_msg(nan == 0 && e < tg_tol_fwd(c->dtype), "%s: forward rel_err %.3e (tol %.0e), %ld NaN",
                R->desc, e, tg_tol_fwd(c->dtype), nan);
  printf("ok %s: forward rel_err %.2e\n", R->desc, e);
}

/* Backward (dq by atomics, then deterministic) against the reference. */
static void backward_case(srun *R) {
  const scase *c = &R->c;
  uint64_t rng = c->seed * 7 + 3;
  uint16_t *h = malloc(R->nq * 2);
  float *rdo = malloc(R->nq * 4), *rdq = malloc(R->nq * 4), *rdk = malloc(R->nk * 4),
        *rdv = malloc(R->nk * 4);
  ck_assert(h && rdo && rdq && rdk && rdv);
  for (size_t i = 0; i < R->nq; i++) {
    h[i] = tg_to_half(c->dtype, (float)tu_rand_normal(&rng));
    rdo[i] = tg_from_half(c->dtype, h[i]);
  }
  const CUdeviceptr ddo = tg_upload(h, R->nq * 2);
  free(h);
  CUdeviceptr ddq, ddk, ddv, ddb = 0;
  TG_CU(tg_drv->cuMemAlloc(&ddq, R->nq * 2));
  TG_CU(tg_drv->cuMemAlloc(&ddk, R->nk * 2));
  TG_CU(tg_drv->cuMemAlloc(&ddv, R->nk * 2));
  const int64_t qs[4] = {c->B, c->Hq, c->Tq, c->D}, ks[4] = {c->B, c->Hkv, c->Tk, c->D};
  sfa_tensor tdo, tdq, tdk, tdv, tdb;
  sfa_tensor_init(&tdo, (void *)(uintptr_t)ddo, c->dtype, 4, qs);
  sfa_tensor_init(&tdq, (void *)(uintptr_t)ddq, c->dtype, 4, qs);
  sfa_tensor_init(&tdk, (void *)(uintptr_t)ddk, c->dtype, 4, ks);
  sfa_tensor_init(&tdv, (void *)(uintptr_t)ddv, c->dtype, 4, ks);
  size_t nb = 0;
  float *rdb = NULL;
  if (R->ex.bias) { /* BIAS_HEAD: one gradient per bias element, the bias's shape */
    const sfa_tensor *b = R->ex.bias;
    nb = (size_t)(b->shape[0] * b->shape[1] * b->shape[2] * b->shape[3]);
    TG_CU(tg_drv->cuMemAlloc(&ddb, nb * 2));
    sfa_tensor_init(&tdb, (void *)(uintptr_t)ddb, c->dtype, 4, b->shape);
    rdb = malloc(nb * 4);
    ck_assert_ptr_nonnull(rdb);
  }
  char why[512];
  sfa_status st = sfa_reference_backward(&R->p, c->B, c->Hq, c->Hkv, c->Tq, c->Tk, c->D, R->rq,
                                         R->rk, R->rv, R->has_ex ? &R->hx : NULL, rdo, rdq, rdk,
                                         rdv, rdb, why, sizeof why);
  ck_assert_msg(st == SFA_OK, "%s: reference backward: %s", R->desc, why);
  uint16_t *gq = malloc(R->nq * 2), *gk = malloc(R->nk * 2), *gv = malloc(R->nk * 2),
           *gb = malloc(nb ? nb * 2 : 2);
  ck_assert(gq && gk && gv && gb);
  for (int det = 0; det < 2; det++) {
    R->p.deterministic = det;
    TG_CU(tg_drv->cuMemsetD8(ddq, 0xFF, R->nq * 2)); /* NaN: an unwritten element fails */
    TG_CU(tg_drv->cuMemsetD8(ddk, 0xFF, R->nk * 2));
    TG_CU(tg_drv->cuMemsetD8(ddv, 0xFF, R->nk * 2));
    if (nb) TG_CU(tg_drv->cuMemsetD8(ddb, 0xFF, nb * 2));
    st = sfa_backward(ctx, &R->p, &R->tq, &R->tk, &R->tv, R->has_ex ? &R->ex : NULL, &R->to,
                      &R->tl, &tdo, &tdq, &tdk, &tdv, nb ? &tdb : NULL, NULL);
    ck_assert_msg(st == SFA_OK, "%s det=%d: sfa_backward: %s: %s", R->desc, det,
                  sfa_status_string(st), sfa_last_error(ctx));
    sync_or_fail(R->desc);
    TG_CU(tg_drv->cuMemcpyDtoH(gq, ddq, R->nq * 2));
    TG_CU(tg_drv->cuMemcpyDtoH(gk, ddk, R->nk * 2));
    TG_CU(tg_drv->cuMemcpyDtoH(gv, ddv, R->nk * 2));
    if (nb) TG_CU(tg_drv->cuMemcpyDtoH(gb, ddb, nb * 2));
    long nan = 0;
    const double eq = tg_rel_err(c->dtype, gq, rdq, R->nq, &nan);
    const double ek = tg_rel_err(c->dtype, gk, rdk, R->nk, &nan);
    const double ev = tg_rel_err(c->dtype, gv, rdv, R->nk, &nan);
    const double eb = nb ? tg_rel_err(c->dtype, gb, rdb, nb, &nan) : 0.0;
    const double tol = tg_tol_bwd(c->dtype);
    ck_assert_msg(nan == 0 && eq < tol && ek < tol && ev < tol && eb < tol,
                  "%s det=%d: rel_err dq=%.3e dk=%.3e dv=%.3e dbias=%.3e (tol %.0e), %ld NaN",
                  R->desc, det, eq, ek, ev, eb, tol, nan);
    printf("ok %s det=%d: dq=%.2e dk=%.2e dv=%.2e dbias=%.2e\n", R->desc, det, eq, ek, ev, eb);
  }
  tg_drv->cuMemFree(ddo), tg_drv->cuMemFree(ddq), tg_drv->cuMemFree(ddk);
  tg_drv->cuMemFree(ddv);
  if (ddb) tg_drv->cuMemFree(ddb);
  free(rdo), free(rdq), free(rdk), free(rdv), free(rdb);
  free(gq), free(gk), free(gv), free(gb);
}

/* ------------------------------------------------------------ tests */

START_TEST(every_mode_forward_and_backward_from_the_dir) {
  for (int i = 0; i < NCASES; i++) {
    const scase c = make_case(i);
    srun R;
    tg_case_setup(&R, &c);
    forward_case(&R);
    backward_case(&R);
    tg_case_free(&R);
  }
  expect_aot_only("after every mode's forward and backward");
}
END_TEST

/* The stable (bucket, position) sort of a row on the CPU: idx and hash. */
static void cpu_hash_sort(const int32_t *bk, int T, int nb, int32_t *idx, int32_t *hash) {
  int at = 0;
  for (int b = 0; b <= nb; b++) /* bin nb: buckets out of range, after all others */
    for (int t = 0; t < T; t++) {
      const int bin = bk[t] >= 0 && bk[t] < nb ? bk[t] : nb;
      if (bin != b) continue;
      idx[at] = t;
      hash[at] = b < nb ? b : INT32_MAX;
      at++;
    }
}

START_TEST(sparse_helpers_from_the_dir) {
  enum { B = 2, H = 3, T = 300, D = 64, NB = 8 };
  const size_t rows = (size_t)B * H * T, n = rows * D;
  uint64_t rng = tg_seed + 7;
  int32_t *bk = malloc(rows * 4), *idx = malloc(rows * 4), *hash = malloc(rows * 4);
  int32_t *want_idx = malloc(rows * 4), *want_hash = malloc(rows * 4);
  uint16_t *x = malloc(n * 2), *xs = malloc(n * 2), *back = malloc(n * 2);
  ck_assert(bk && idx && hash && want_idx && want_hash && x && xs && back);
  for (size_t i = 0; i < rows; i++) /* a few out of range: -1 and NB */
    bk[i] = (int32_t)(tu_rand_u64(&rng) % (NB + 2)) - 1;
  for (size_t i = 0; i < n; i++) x[i] = tg_to_half(SFA_DTYPE_BF16, (float)tu_rand_normal(&rng));
  for (int r = 0; r < B * H; r++)
    cpu_hash_sort(bk + (size_t)r * T, T, NB, want_idx + (size_t)r * T, want_hash + (size_t)r * T);

  const int64_t s3[3] = {B, H, T}, s4[4] = {B, H, T, D};
  CUdeviceptr dbk = tg_upload(bk, rows * 4), dx = tg_upload(x, n * 2), didx, dhash, dxs, dback;
  TG_CU(tg_drv->cuMemAlloc(&didx, rows * 4));
  TG_CU(tg_drv->cuMemAlloc(&dhash, rows * 4));
  TG_CU(tg_drv->cuMemAlloc(&dxs, n * 2));
  TG_CU(tg_drv->cuMemAlloc(&dback, n * 2));
  sfa_tensor tbk, tidx, thash, tx, txs, tback;
  sfa_tensor_init(&tbk, (void *)(uintptr_t)dbk, SFA_DTYPE_INT32, 3, s3);
  sfa_tensor_init(&tidx, (void *)(uintptr_t)didx, SFA_DTYPE_INT32, 3, s3);
  sfa_tensor_init(&thash, (void *)(uintptr_t)dhash, SFA_DTYPE_INT32, 3, s3);
  sfa_tensor_init(&tx, (void *)(uintptr_t)dx, SFA_DTYPE_BF16, 4, s4);
  sfa_tensor_init(&txs, (void *)(uintptr_t)dxs, SFA_DTYPE_BF16, 4, s4);
  sfa_tensor_init(&tback, (void *)(uintptr_t)dback, SFA_DTYPE_BF16, 4, s4);
  sfa_status st = sfa_hash_prepare(ctx, &tbk, NB, &tx, &txs, NULL, NULL, &tidx, &thash, NULL);
  ck_assert_msg(st == SFA_OK, "sfa_hash_prepare: %s", sfa_last_error(ctx));
  st = sfa_hash_unsort(ctx, &txs, &tidx, &tback, NULL);
  ck_assert_msg(st == SFA_OK, "sfa_hash_unsort: %s", sfa_last_error(ctx));
  sync_or_fail("hash_prepare / hash_unsort");
  TG_CU(tg_drv->cuMemcpyDtoH(idx, didx, rows * 4));
  TG_CU(tg_drv->cuMemcpyDtoH(hash, dhash, rows * 4));
  TG_CU(tg_drv->cuMemcpyDtoH(xs, dxs, n * 2));
  TG_CU(tg_drv->cuMemcpyDtoH(back, dback, n * 2));
  ck_assert(memcmp(idx, want_idx, rows * 4) == 0);
  ck_assert(memcmp(hash, want_hash, rows * 4) == 0);
  for (size_t r = 0; r < rows; r++) { /* x_sorted[r] = x[idx[r]] in its (b, h) */
    const size_t bh = r / T;
    ck_assert(memcmp(xs + r * D, x + (bh * T + (size_t)idx[r]) * D, D * 2) == 0);
  }
  ck_assert(memcmp(back, x, n * 2) == 0); /* unsort(prepare(x)) == x */
  printf("ok hash_prepare and hash_unsort\n");

  /* topk_mask, fp32 and bf16 bias [1, 2, TQ, TK], causal */
  enum { TQ = 50, TK = 300, RS = 304, W = 17 };
  const size_t nbias = 2 * TQ * TK;
  float *bias = malloc(nbias * 4);
  uint16_t *bias16 = malloc(nbias * 2);
  uint8_t *mask = malloc(2 * TQ * RS);
  ck_assert(bias && bias16 && mask);
  for (int dt = 0; dt < 2; dt++) {
    const sfa_dtype t = dt ? SFA_DTYPE_BF16 : SFA_DTYPE_FP32;
    for (size_t i = 0; i < nbias; i++) {
      bias16[i] = tg_to_half(SFA_DTYPE_BF16, (float)tu_rand_normal(&rng));
      bias[i] = dt ? tg_from_half(SFA_DTYPE_BF16, bias16[i]) : (float)tu_rand_normal(&rng);
    }
    const int64_t bs[4] = {1, 2, TQ, TK};
    CUdeviceptr db = dt ? tg_upload(bias16, nbias * 2) : tg_upload(bias, nbias * 4), dm;
    TG_CU(tg_drv->cuMemAlloc(&dm, 2 * TQ * RS));
    sfa_tensor tb, tm;
    sfa_tensor_init(&tb, (void *)(uintptr_t)db, t, 4, bs);
    sfa_tensor_init(&tm, (void *)(uintptr_t)dm, SFA_DTYPE_UINT8, 4, bs);
    tm.strides[2] = RS, tm.strides[1] = (int64_t)TQ * RS, tm.strides[0] = 2 * (int64_t)TQ * RS;
    st = sfa_topk_mask(ctx, &tb, W, 1, &tm, NULL);
    ck_assert_msg(st == SFA_OK, "sfa_topk_mask %s: %s", sfa_dtype_name(t), sfa_last_error(ctx));
    sync_or_fail("topk_mask");
    TG_CU(tg_drv->cuMemcpyDtoH(mask, dm, 2 * TQ * RS));
    for (int r = 0; r < 2 * TQ; r++) {
      const int i = r % TQ, allowed = i + TK - TQ + 1; /* keys j < allowed */
      const float *row = bias + (size_t)r * TK;
      for (int j = 0; j < TK; j++) {
        /* selected iff fewer than W allowed keys beat it (larger, or equal and lower j) */
        int above = 0;
        for (int k = 0; k < allowed && k < TK; k++)
          above += row[k] > row[j] || (row[k] == row[j] && k < j);
        const int want = j < allowed && above < W;
        ck_assert_msg((mask[(size_t)r * RS + j] != 0) == want,
                      "topk %s: row %d key %d: mask %d, want %d", sfa_dtype_name(t), r, j,
                      mask[(size_t)r * RS + j], want);
      }
    }
    tg_drv->cuMemFree(db), tg_drv->cuMemFree(dm);
    printf("ok topk_mask %s\n", sfa_dtype_name(t));
  }
  free(bias), free(bias16), free(mask);
  tg_drv->cuMemFree(dbk), tg_drv->cuMemFree(dx), tg_drv->cuMemFree(didx);
  tg_drv->cuMemFree(dhash), tg_drv->cuMemFree(dxs), tg_drv->cuMemFree(dback);
  free(bk), free(idx), free(hash), free(want_idx), free(want_hash), free(x), free(xs), free(back);
  expect_aot_only("after the sparse helpers");
}
END_TEST

/* A kernel the dir lacks needs NVRTC, which this process cannot load. */
START_TEST(a_kernel_outside_the_dir_cannot_compile) {
  scase c = tg_case(SFA_MODE_DENSE, 4, 64, 64, 96, SFA_DTYPE_FP16);
  c.seed = tg_seed + 900;
  srun R;
  tg_case_setup(&R, &c);
  sfa_status st = sfa_forward(ctx, &R.p, &R.tq, &R.tk, &R.tv, NULL, &R.to, &R.tl, NULL);
  ck_assert_msg(st == SFA_ERR_COMPILE && strstr(sfa_last_error(ctx), "NVRTC is not available"),
                "D 96: %s: %s", sfa_status_string(st), sfa_last_error(ctx));
  tg_case_free(&R);
  sfa__kernel_stats ks;
  sfa__kernel_get_stats(ctx, &ks);
  ck_assert_uint_eq(ks.compiles, 1);
}
END_TEST

/* ------------------------------------------------------------ main */

int main(void) {
  unsetenv("SFA_KERNEL_DIR");
  unsetenv("SFA_NVRTC_LIBRARY");
  unsetenv("SFA_TUNE");
  unsetenv("SFA_MMA");
  int rc = tg_open("gpu_aot_only", 0xA07);
  if (rc != 0) return rc;
  char why[512];
  if (sfa__arch_of_device(tg_cc, &arch, why, sizeof why) != SFA_OK) {
    printf("SKIP: %s\n", why);
    tg_close();
    return 77;
  }
  snprintf(root, sizeof root, "%s", tu_mkdtemp());
  snprintf(kdir, sizeof kdir, "%s/k", root);
  snprintf(cache, sizeof cache, "%s/cache", root);
  if (make_kernel_dir() != 0) {
    tg_close();
    return 1;
  }
  /* From here on: NVRTC forbidden (nothing has loaded it yet), the dir only. */
  setenv("SFA_NVRTC_LIBRARY", "/nonexistent/libnvrtc.so", 1);
  setenv("SFA_KERNEL_DIR", kdir, 1);
  sfa_options o;
  sfa_options_init(&o);
  o.cache_dir = cache;
  o.tune = SFA_TUNE_OFF; /* the default */
  o.mma = SFA_MMA_AUTO;
  if (sfa_context_create(&ctx, &o) != SFA_OK) {
    printf("FAIL: sfa_context_create: %s\n", ctx ? sfa_last_error(ctx) : "");
    tg_close();
    return 1;
  }
  Suite *s = suite_create("gpu_aot_only");
  TCase *t = tu_untimed_case(s, "aot_only", every_mode_forward_and_backward_from_the_dir);
  tcase_add_test(t, sparse_helpers_from_the_dir);
  tcase_add_test(t, a_kernel_outside_the_dir_cannot_compile);
  rc = tu_run_suite(s);
  sfa_context_destroy(ctx);
  tg_close();
  tu_rm_rf(root);
  return rc;
}
