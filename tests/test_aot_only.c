/*
** test_aot_only.c -- an ahead-of-time kernel dir serves every call without
** NVRTC, checked without a GPU: `sfa-gen --preset small --arch 90` writes a
** dir; a child process with SFA_NVRTC_LIBRARY pointing at a missing file and
** SFA_KERNEL_DIR at the dir resolves, through the runtime's loader up to the
** driver (sfa__kernel_cubin), every kernel that sfa_forward and sfa_backward
** of each mode of the preset get on an sm_90 device (sfa__call_kernels: the
** attention kernels and the backward's utility kernels) and the sparse
** helpers' kernels: each must come from the dir, with no compile attempted
** and nothing from the disk cache. A kernel the dir lacks must then fail to
** compile ("NVRTC is not available"), so the guard is real. Also: what
** sfa__call_kernels lists, and that a utility kernel outside any dir is
** compiled once and then comes from the disk cache, like every kernel.
** (tests/test_gpu_aot_only.c runs the calls themselves on a GPU.)
*/
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sfa.h"
#include "gen/gen_internal.h"
#include "gen/manifest.h"
#include "runtime/internal.h"
#include "runtime/util.h"
#include "testutil.h"

static const char *tool;  /* sfa-gen */
static char root[512];    /* a temporary dir for the whole suite */
static char kdir[600];    /* sfa-gen's output in it: the small preset for sm_90 */

static void make_dir(void) {
  char cmd[2400];
  tool = tu_build_path("gen/sfa-gen");
  if (access(tool, X_OK) != 0) {
    fprintf(stderr, "test_aot_only: %s is not built (build all targets first)\n", tool);
    exit(1);
  }
  snprintf(root, sizeof root, "%s", tu_mkdtemp());
  snprintf(kdir, sizeof kdir, "%s/k", root);
  snprintf(cmd, sizeof cmd, "'%s' --preset small --arch 90 --out '%s' -j 2 2>&1 | tail -1", tool,
           kdir);
  int rc = system(cmd);
  if (!WIFEXITED(rc) || WEXITSTATUS(rc) != 0) {
    fprintf(stderr, "test_aot_only: '%s' failed\n", cmd);
    exit(1);
  }
}

/* ------------------------------------------------------------ the problems */

/* The classes of the small preset (gen/presets.c): dense {-, causal} x fp16,
** bf16 x D 64, 128; qk_drop, hash, window causal x bf16 x D 128; no det. */
typedef struct problem {
  sfa_mode mode;
  int causal;
  sfa_dtype dtype;
  int head_dim;
} problem;

static const problem problems[] = {
  {SFA_MODE_DENSE, 0, SFA_DTYPE_FP16, 64},   {SFA_MODE_DENSE, 1, SFA_DTYPE_FP16, 64},
  {SFA_MODE_DENSE, 0, SFA_DTYPE_BF16, 64},   {SFA_MODE_DENSE, 1, SFA_DTYPE_BF16, 64},
  {SFA_MODE_DENSE, 0, SFA_DTYPE_FP16, 128},  {SFA_MODE_DENSE, 1, SFA_DTYPE_FP16, 128},
  {SFA_MODE_DENSE, 0, SFA_DTYPE_BF16, 128},  {SFA_MODE_DENSE, 1, SFA_DTYPE_BF16, 128},
  {SFA_MODE_QK_DROP, 0, SFA_DTYPE_BF16, 128}, {SFA_MODE_HASH, 0, SFA_DTYPE_BF16, 128},
  {SFA_MODE_WINDOW, 1, SFA_DTYPE_BF16, 128},
};
#define NPROBLEMS (int)(sizeof problems / sizeof problems[0])

static void params_of(const problem *p, sfa_attention_params *a) {
  sfa_params_init(a);
  a->mode = p->mode;
  a->causal = p->causal;
}

static sfa_context *make_ctx(const char *cache) {
  sfa_options o;
  sfa_options_init(&o);
  o.cache_dir = cache;
  o.tune = SFA_TUNE_OFF;
  o.mma = SFA_MMA_AUTO;
  sfa_context *ctx = NULL;
  ck_assert_int_eq(sfa_context_create(&ctx, &o), SFA_OK);
  return ctx;
}

/* ------------------------------------------------------------ the child */

static int child_failures;

static void child_fail(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("child: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  child_failures++;
}

/* The cubin of s must come from the kernel dir. */
static void child_expect_from_dir(sfa_context *ctx, const sfa_kernel_spec *s, int *count) {
  char name[SFA__NAME_MAX] = "?";
  void *cubin = NULL;
  size_t size = 0;
  int from_dir = 0;
  sfa_spec_name(s, name, sizeof name);
  sfa_status st = sfa__kernel_cubin(ctx, s, &cubin, &size, &from_dir);
  if (st != SFA_OK)
    child_fail("%s: %s: %s", name, sfa_status_string(st), sfa_last_error(ctx));
  else if (!from_dir)
    child_fail("%s: not from the kernel dir", name);
  else if (size < 4 || memcmp(cubin, "\177ELF", 4) != 0)
    child_fail("%s: not a cubin", name);
  free(cubin);
  (*count)++;
}

/* Runs in a fresh process: NVRTC forbidden, the dir from the environment. */
static int child_main(const char *cache) {
  setenv("SFA_NVRTC_LIBRARY", "/nonexistent/libnvrtc.so", 1);
  setenv("SFA_KERNEL_DIR", kdir, 1);
  sfa_options o;
  sfa_options_init(&o);
  o.cache_dir = cache;
  if (o.tune != SFA_TUNE_OFF) child_fail("SFA_TUNE is set; this test needs the default, off");
  o.mma = SFA_MMA_AUTO;
  sfa_context *ctx = NULL;
  if (sfa_context_create(&ctx, &o) != SFA_OK) {
    child_fail("sfa_context_create: %s", ctx ? sfa_last_error(ctx) : "");
    return 1;
  }
  int count = 0;
  for (int i = 0; i < NPROBLEMS; i++)
    for (int call = 0; call < 2; call++) {
      sfa_attention_params a;
      sfa_kernel_spec specs[SFA__CALL_MAX_KERNELS];
      int n = 0;
      params_of(&problems[i], &a);
      const sfa_pass pass = call ? SFA_PASS_BWD : SFA_PASS_FWD;
      sfa_status st = sfa__call_kernels(ctx, pass, &a, NULL, problems[i].dtype,
                                        problems[i].head_dim, 90, specs,
                                        SFA__CALL_MAX_KERNELS, &n);
      if (st != SFA_OK) child_fail("problem %d: %s", i, sfa_last_error(ctx));
      /* dense fwd at D 64: the short rows' kernel and the long rows' (sfa__spec_for_keys) */
      const int two = !call && problems[i].mode == SFA_MODE_DENSE && problems[i].head_dim == 64;
      if (n != (call ? 3 : two ? 2 : 1))
        child_fail("problem %d %s: %d kernels", i, call ? "bwd" : "fwd", n);
      for (int k = 0; k < n; k++) child_expect_from_dir(ctx, &specs[k], &count);
    }
  /* the sparse helpers: hash_prepare (sort, gather), hash_unsort, topk_mask */
  const struct { sfa_pass pass; sfa_dtype dtype; } helpers[] = {
    {SFA_PASS_HASH_SORT, SFA_DTYPE_INT32}, {SFA_PASS_PERMUTE, SFA_DTYPE_UINT8},
    {SFA_PASS_TOPK, SFA_DTYPE_FP16}, {SFA_PASS_TOPK, SFA_DTYPE_BF16},
    {SFA_PASS_TOPK, SFA_DTYPE_FP32}};
  for (size_t i = 0; i < sizeof helpers / sizeof helpers[0]; i++) {
    sfa_kernel_spec s;
    char err[512];
    if (sfa__util_spec(helpers[i].pass, helpers[i].dtype, 90, &s, err, sizeof err) != SFA_OK)
      child_fail("%s", err);
    else
      child_expect_from_dir(ctx, &s, &count);
  }
  sfa__kernel_stats ks;
  sfa__kernel_get_stats(ctx, &ks);
  if (ks.compiles != 0 || ks.from_cache != 0 || ks.from_dirs != (size_t)count)
    child_fail("stats: %zu compiles, %zu from the cache, %zu from dirs of %d", ks.compiles,
               ks.from_cache, ks.from_dirs, count);
  /* A kernel the dir lacks: the compile it needs fails, NVRTC being forbidden. */
  sfa_kernel_spec miss = {SFA_PASS_FWD, SFA_MODE_DENSE, SFA_DTYPE_FP16, 96, 0, 0, 0, 0, 90, 0,
                          SFA_SPEC_MMA_SYNC};
  sfa_spec_default(&miss, NULL, 0);
  void *cubin = NULL;
  size_t size = 0;
  sfa_status st = sfa__kernel_cubin(ctx, &miss, &cubin, &size, NULL);
  if (st != SFA_ERR_COMPILE || !strstr(sfa_last_error(ctx), "NVRTC is not available"))
    child_fail("a kernel outside the dir: %s: %s", sfa_status_string(st), sfa_last_error(ctx));
  free(cubin);
  sfa__kernel_get_stats(ctx, &ks);
  if (ks.compiles != 1) child_fail("the missing kernel: %zu compiles attempted", ks.compiles);
  sfa_context_destroy(ctx);
  printf("child: %d kernels from %s, none compiled\n", count, kdir);
  fflush(stdout); /* the child leaves by _exit */
  return child_failures ? 1 : 0;
}

/* Every kernel of every call of the preset's modes, served by the dir alone. */
START_TEST(small_preset_dir_serves_every_call_without_nvrtc) {
  char cache[700];
  snprintf(cache, sizeof cache, "%s/cache", tu_mkdtemp());
  fflush(NULL);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) _exit(child_main(cache));
  int status = 0;
  ck_assert_int_eq(waitpid(pid, &status, 0), pid);
  ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                "the AOT-only child failed (its messages are above)");
  /* nothing went into the disk cache */
  char cmd[800];
  snprintf(cmd, sizeof cmd, "test -z \"$(find '%s' -name '*.cubin' 2>/dev/null)\"", cache);
  ck_assert_int_eq(system(cmd), 0);
}
END_TEST

/* The dir's manifest lists the utility kernels like any kernel: their spec
** columns, a key and a verified cubin each. */
START_TEST(manifest_rows_of_utility_kernels) {
  sfa__manifest *m = NULL;
  char err[1024] = "";
  ck_assert_msg(sfa__manifest_load(kdir, &m, err, sizeof err) == SFA_OK, "%s", err);
  ck_assert_uint_eq(m->count, 44); /* 26 attention, 7 decode, 11 utility kernels */
  static const char *const names[] = {"sfa_bwdpre_fp16_sm90", "sfa_bwdpre_bf16_sm90",
                                      "sfa_convert_fp16_sm90", "sfa_convert_bf16_sm90",
                                      "sfa_hashsort_sm90", "sfa_permute_sm90",
                                      "sfa_topk_fp16_sm90", "sfa_topk_bf16_sm90",
                                      "sfa_topk_fp32_sm90", "sfa_merge_sm90"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    const sfa__manifest_entry *e = sfa__manifest_find(m, names[i]);
    ck_assert_msg(e != NULL, "%s not in the manifest", names[i]);
    ck_assert(sfa__pass_is_util(e->spec.pass));
    ck_assert_int_eq(e->spec.arch, 90);
    ck_assert_ptr_nonnull(e->path);
    void *cubin = NULL;
    size_t size = 0;
    ck_assert_msg(sfa__manifest_read_cubin(e, &cubin, &size, err, sizeof err) == SFA_OK, "%s",
                  err);
    free(cubin);
  }
  sfa__manifest_free(m);
  /* the columns as written: pass and dtype by name, no tiles, the warps */
  char path[700], line[1024];
  int seen = 0;
  snprintf(path, sizeof path, "%s/manifest.tsv", kdir);
  FILE *f = fopen(path, "r");
  ck_assert_ptr_nonnull(f);
  while (fgets(line, sizeof line, f))
    if (strncmp(line, "sfa_topk_fp32_sm90\t", 19) == 0) {
      const char *want = "sfa_topk_fp32_sm90\t90\ttopk\tdense\tfp32\t0\t0\t0\t16\t0\t-\t0\t";
      ck_assert_msg(strncmp(line, want, strlen(want)) == 0, "%s", line);
      seen++;
    }
  fclose(f);
  ck_assert_int_eq(seen, 1);
}
END_TEST

/* ------------------------------------------------------------ the lists */

static int list(sfa_context *ctx, sfa_pass call, const sfa_attention_params *a,
                const sfa_extras *ex, sfa_dtype dt, int d, int arch, char names[][SFA__NAME_MAX]) {
  sfa_kernel_spec specs[SFA__CALL_MAX_KERNELS];
  int n = 0;
  sfa_status st = sfa__call_kernels(ctx, call, a, ex, dt, d, arch, specs, SFA__CALL_MAX_KERNELS,
                                    &n);
  ck_assert_msg(st == SFA_OK, "%s", sfa_last_error(ctx));
  for (int i = 0; i < n; i++) ck_assert_int_eq(sfa_spec_name(&specs[i], names[i], SFA__NAME_MAX),
                                               SFA_OK);
  return n;
}

START_TEST(call_kernels_lists_what_a_call_loads) {
  sfa_context *ctx = make_ctx("/nonexistent/sfa-aot-test");
  char names[SFA__CALL_MAX_KERNELS][SFA__NAME_MAX];
  sfa_attention_params a;
  sfa_params_init(&a);
  a.causal = 1;
  ck_assert_int_eq(list(ctx, SFA_PASS_FWD, &a, NULL, SFA_DTYPE_BF16, 128, 90, names), 1);
  ck_assert_str_eq(names[0], "sfa_fwd_dense_causal_ws_bf16_d128_m128n128_w12s3_sm90");
  ck_assert_int_eq(list(ctx, SFA_PASS_BWD, &a, NULL, SFA_DTYPE_BF16, 128, 90, names), 3);
  ck_assert_str_eq(names[0], "sfa_bwd_dense_causal_ws_bf16_d128_m64n128_w12s2_sm90");
  ck_assert_str_eq(names[1], "sfa_bwdpre_bf16_sm90");
  ck_assert_str_eq(names[2], "sfa_convert_bf16_sm90");
  a.deterministic = 1;
  ck_assert_int_eq(list(ctx, SFA_PASS_BWD, &a, NULL, SFA_DTYPE_FP16, 64, 80, names), 4);
  ck_assert_str_eq(names[0], "sfa_bwd_dense_causal_det_fp16_d64_m128n128_w8s1_sm80");
  ck_assert_str_eq(names[1], "sfa_bwddq_dense_causal_fp16_d64_m128n64_w4s2_sm80");
  ck_assert_str_eq(names[2], "sfa_bwdpre_fp16_sm80");
  ck_assert_str_eq(names[3], "sfa_convert_fp16_sm80");
  /* window: the flags follow the extras given */
  sfa_tensor bias, mask;
  memset(&bias, 0, sizeof bias), memset(&mask, 0, sizeof mask);
  sfa_extras ex = {.bias = &bias, .mask = &mask};
  sfa_params_init(&a);
  a.mode = SFA_MODE_WINDOW;
  ck_assert_int_eq(list(ctx, SFA_PASS_FWD, &a, &ex, SFA_DTYPE_FP16, 64, 86, names), 1);
  ck_assert_str_eq(names[0], "sfa_fwd_window_bias_mask_fp16_d64_m128n64_w4s2_sm86");
  sfa_context_destroy(ctx);

  /* a forced mma kind picks the kernels too; a tuning policy does not */
  sfa_options o;
  sfa_options_init(&o);
  o.cache_dir = "/nonexistent/sfa-aot-test";
  o.mma = SFA_MMA_SYNC;
  o.tune = SFA_TUNE_ON;
  ck_assert_int_eq(sfa_context_create(&ctx, &o), SFA_OK);
  sfa_params_init(&a);
  ck_assert_int_eq(list(ctx, SFA_PASS_FWD, &a, NULL, SFA_DTYPE_BF16, 128, 90, names), 1);
  ck_assert_str_eq(names[0], "sfa_fwd_dense_bf16_d128_m128n64_w4s1_sm90");
  sfa_context_destroy(ctx);
  o.mma = SFA_MMA_AUTO;
  o.tune = SFA_TUNE_CACHED;
  ck_assert_int_eq(sfa_context_create(&ctx, &o), SFA_OK);
  sfa_kernel_spec specs[SFA__CALL_MAX_KERNELS];
  int n = 7;
  ck_assert_int_eq(sfa__call_kernels(ctx, SFA_PASS_FWD, &a, NULL, SFA_DTYPE_BF16, 128, 90, specs,
                                     SFA__CALL_MAX_KERNELS, &n), SFA_ERR_UNSUPPORTED);
  ck_assert_msg(strstr(sfa_last_error(ctx), "policy cached"), "%s", sfa_last_error(ctx));
  ck_assert_int_eq(n, 0);
  sfa_context_destroy(ctx);

  ctx = make_ctx("/nonexistent/sfa-aot-test");
  ck_assert_int_eq(sfa__call_kernels(ctx, SFA_PASS_BWD_DQ, &a, NULL, SFA_DTYPE_BF16, 128, 90,
                                     specs, SFA__CALL_MAX_KERNELS, &n), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(sfa_last_error(ctx), "call: 1"), "%s", sfa_last_error(ctx));
  ck_assert_int_eq(sfa__call_kernels(ctx, SFA_PASS_FWD, &a, NULL, SFA_DTYPE_BF16, 128, 75, specs,
                                     SFA__CALL_MAX_KERNELS, &n), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(sfa_last_error(ctx), "arch: 75"), "%s", sfa_last_error(ctx));
  /* an unservable class is the call's error: the backward at D 144 */
  ck_assert_int_eq(sfa__call_kernels(ctx, SFA_PASS_BWD, &a, NULL, SFA_DTYPE_BF16, 144, 90, specs,
                                     SFA__CALL_MAX_KERNELS, &n), SFA_ERR_UNSUPPORTED);
  ck_assert_int_eq(sfa__call_kernels(ctx, SFA_PASS_BWD, &a, NULL, SFA_DTYPE_BF16, 128, 90, specs,
                                     2, &n), SFA_ERR_INVALID_ARGUMENT);
  sfa_context_destroy(ctx);
  ck_assert(!tu_driver_loaded());
}
END_TEST

/* A utility kernel that no dir lists goes through the disk cache like any
** kernel: compiled once, then read from the cache by another context. */
START_TEST(utility_kernels_go_through_the_disk_cache) {
  char cache[700];
  snprintf(cache, sizeof cache, "%s/cache", tu_mkdtemp());
  unsetenv("SFA_KERNEL_DIR");
  sfa_kernel_spec s;
  char err[512];
  ck_assert_int_eq(sfa__util_spec(SFA_PASS_CONVERT, SFA_DTYPE_FP16, 86, &s, err, sizeof err),
                   SFA_OK);
  for (int round = 0; round < 2; round++) {
    sfa_context *ctx = make_ctx(cache);
    void *cubin = NULL;
    size_t size = 0;
    int from_dir = 1;
    ck_assert_msg(sfa__kernel_cubin(ctx, &s, &cubin, &size, &from_dir) == SFA_OK, "%s",
                  sfa_last_error(ctx));
    ck_assert_int_eq(from_dir, 0);
    free(cubin);
    sfa__kernel_stats ks;
    sfa__kernel_get_stats(ctx, &ks);
    ck_assert_uint_eq(ks.compiles, round == 0);
    ck_assert_uint_eq(ks.from_cache, round == 1);
    ck_assert_uint_eq(ks.from_dirs, 0);
    sfa_context_destroy(ctx);
  }
  ck_assert(!tu_driver_loaded());
}
END_TEST

int main(void) {
  unsetenv("SFA_KERNEL_DIR");
  unsetenv("SFA_TUNE");
  unsetenv("SFA_MMA");
  unsetenv("SFA_NVRTC_LIBRARY");
  make_dir();
  Suite *s = suite_create("aot_only");
  TCase *t = tcase_create("aot_only");
  tcase_set_timeout(t, 600);
  tcase_add_test(t, small_preset_dir_serves_every_call_without_nvrtc);
  tcase_add_test(t, manifest_rows_of_utility_kernels);
  tcase_add_test(t, call_kernels_lists_what_a_call_loads);
  tcase_add_test(t, utility_kernels_go_through_the_disk_cache);
  suite_add_tcase(s, t);
  int rc = tu_run_suite(s);
  tu_rm_rf(root);
  return rc;
}
