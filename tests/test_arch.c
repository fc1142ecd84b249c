/*
** test_arch.c -- the arch table (gen/arch.h) without a GPU: its rows are
** exactly the archs from sm_80 on that this NVRTC compiles for; each row's
** shared memory, mma kinds and NVRTC targets; the compute capability -> arch
** mapping with its message for a device sfa cannot serve, and the binary
** compatibility rule; specs, names, defaults, presets and sfa-gen --arch for
** every arch; and NVRTC compiling a dense forward, a sparse forward, a
** backward and a helper kernel for each arch above sm_90 (mma.sync: no tuned
** path there yet).
*/
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nvrtc.h>

#include "sfa.h"
#include "gen/arch.h"
#include "gen/gen_internal.h"
#include "runtime/nvrtc.h"
#include "runtime/nvrtc_lib.h"
#include "runtime/util.h"
#include "testutil.h"

/* ------------------------------------------------------------ the table */

START_TEST(table_is_what_nvrtc_compiles) {
  int n = 0;
  const sfa__nvrtc_api *api = NULL;
  ck_assert_int_eq(sfa__nvrtc_load(&api, NULL, 0), SFA_OK);
  ck_assert_ptr_nonnull(api->nvrtcGetNumSupportedArchs);
  ck_assert_int_eq(api->nvrtcGetNumSupportedArchs(&n), NVRTC_SUCCESS);
  int *nv = malloc((size_t)n * sizeof *nv);
  ck_assert_int_eq(api->nvrtcGetSupportedArchs(nv), NVRTC_SUCCESS);
  size_t rows = 0;
  const sfa__arch *t = sfa__arch_table(&rows);
  size_t r = 0;
  for (int i = 0; i < n; i++) {
    if (nv[i] < 80) continue;
    ck_assert_msg(r < rows && t[r].arch == nv[i], "NVRTC compiles sm_%d; the table has %s%d",
                  nv[i], r < rows ? "sm_" : "no row at ", r < rows ? t[r].arch : (int)r);
    r++;
  }
  ck_assert_msg(r == rows, "the table has sm_%d, which this NVRTC does not compile",
                r < rows ? t[r].arch : 0);
  for (size_t i = 1; i < rows; i++) ck_assert_int_lt(t[i - 1].arch, t[i].arch);
  free(nv);
}
END_TEST

START_TEST(table_rows) {
  static const struct { int arch; size_t smem; } want[] = {
    {80, 166912}, {86, 101376}, {87, 166912}, {88, 101376}, {89, 101376}, {90, 232448},
    {100, 232448}, {103, 232448}, {110, 232448}, {120, 101376}, {121, 101376}};
  size_t rows = 0;
  const sfa__arch *t = sfa__arch_table(&rows);
  ck_assert_uint_eq(rows, sizeof want / sizeof want[0]);
  for (size_t i = 0; i < rows; i++) {
    char target[16];
    snprintf(target, sizeof target, "sm_%d", want[i].arch);
    ck_assert_int_eq(t[i].arch, want[i].arch);
    ck_assert_uint_eq(t[i].smem_optin, want[i].smem);
    ck_assert_uint_eq(sfa__arch_smem_limit(t[i].arch), want[i].smem);
    ck_assert_ptr_eq(sfa__arch_find(t[i].arch), &t[i]);
    ck_assert_str_eq(t[i].target, target);
    ck_assert(t[i].mma & SFA__MMA_SYNC);
    /* wgmma on sm_90 only, compiled as sm_90a */
    ck_assert_int_eq(!!(t[i].mma & SFA__MMA_WGMMA), t[i].arch == 90);
    if (t[i].arch == 90)
      ck_assert_str_eq(t[i].wg_target, "sm_90a");
    else
      ck_assert_ptr_null(t[i].wg_target);
  }
  const int unknown[] = {0, 70, 75, 81, 85, 91, 101, 120 + 10, 1000, -90};
  for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
    ck_assert_ptr_null(sfa__arch_find(unknown[i]));
    ck_assert_uint_eq(sfa__arch_smem_limit(unknown[i]), 0);
  }
  char list[256];
  sfa__arch_list(list, sizeof list, "", ", ", " or ");
  ck_assert_str_eq(list, "80, 86, 87, 88, 89, 90, 100, 103, 110, 120 or 121");
  sfa__arch_list(list, 12, "sm_", " ", " ");
  ck_assert_str_eq(list, "sm_80 sm_86"); /* truncated, NUL-terminated */
}
END_TEST

/* A device gets the exact row, else the nearest lower one of its major. */
START_TEST(device_cc_maps_to_the_best_row) {
  static const int map[][2] = {
    {80, 80}, {86, 86}, {87, 87}, {88, 88}, {89, 89}, {90, 90}, {91, 90}, {100, 100},
    {101, 100}, {102, 100}, {103, 103}, {107, 103}, {110, 110}, {115, 110}, {120, 120},
    {121, 121}, {129, 121}, {85, 80}};
  for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
    int arch = -1;
    char err[256] = "";
    ck_assert_msg(sfa__arch_of_device(map[i][0], &arch, err, sizeof err) == SFA_OK, "cc %d: %s",
                  map[i][0], err);
    ck_assert_msg(arch == map[i][1], "cc %d: arch %d, want %d", map[i][0], arch, map[i][1]);
    ck_assert_int_eq(sfa__arch_for_cc(map[i][0])->arch, map[i][1]);
    ck_assert(sfa__arch_runs_on(arch, 0, map[i][0]));
  }
  static const int none[] = {0, 61, 75, 79, 130, 140, 200};
  for (size_t i = 0; i < sizeof none / sizeof none[0]; i++) {
    int arch = -1;
    char err[256] = "";
    ck_assert_int_eq(sfa__arch_of_device(none[i], &arch, err, sizeof err), SFA_ERR_UNSUPPORTED);
    ck_assert_int_eq(arch, -1);
    ck_assert_ptr_null(sfa__arch_for_cc(none[i]));
    char cc[96];
    snprintf(cc, sizeof cc, "compute capability %d.%d (sm_%d) is not supported by this sfa",
             none[i] / 10, none[i] % 10, none[i]);
    ck_assert_msg(strstr(err, cc), "'%s' not in '%s'", cc, err);
    ck_assert_msg(strstr(err, "supported: sm_80, sm_86, ") && strstr(err, ", sm_121"), "%s", err);
  }
}
END_TEST

/* sm_XY cubins run on X.Z with Z >= Y; an "a" cubin (wgmma's sm_90a) on
** exactly that compute capability. */
START_TEST(binary_compatibility) {
  static const struct { int arch, wg, cc, runs; } c[] = {
    {80, 0, 80, 1}, {80, 0, 86, 1}, {80, 0, 89, 1}, {86, 0, 80, 0}, {86, 0, 87, 1},
    {89, 0, 86, 0}, {80, 0, 90, 0}, {90, 0, 100, 0}, {100, 0, 103, 1}, {103, 0, 100, 0},
    {100, 0, 110, 0}, {120, 0, 121, 1}, {121, 0, 120, 0}, {90, 1, 90, 1}, {90, 1, 91, 0},
    {90, 1, 100, 0}, {100, 1, 100, 0}, {75, 0, 75, 0}, {75, 0, 80, 0}};
  for (size_t i = 0; i < sizeof c / sizeof c[0]; i++)
    ck_assert_msg(sfa__arch_runs_on(c[i].arch, c[i].wg, c[i].cc) == c[i].runs,
                  "sm_%d%s on %d.%d: want %d", c[i].arch, c[i].wg ? "a" : "", c[i].cc / 10,
                  c[i].cc % 10, c[i].runs);
}
END_TEST

START_TEST(nvrtc_options_come_from_the_table) {
  size_t rows = 0;
  const sfa__arch *t = sfa__arch_table(&rows);
  for (size_t i = 0; i < rows; i++) {
    sfa_kernel_spec s = {SFA_PASS_FWD, SFA_MODE_DENSE, SFA_DTYPE_BF16, 64, 0, 0, 0, 0,
                         t[i].arch, 0, SFA_SPEC_MMA_SYNC};
    char want[96];
    snprintf(want, sizeof want, "--gpu-architecture=%s -std=c++17 --use_fast_math", t[i].target);
    ck_assert_str_eq(sfa__nvrtc_options_string(&s), want);
    if (!t[i].wg_target) continue;
    s.mma = SFA_SPEC_MMA_WGMMA;
    snprintf(want, sizeof want, "--gpu-architecture=%s -std=c++17 --use_fast_math",
             t[i].wg_target);
    ck_assert_str_eq(sfa__nvrtc_options_string(&s), want);
  }
  char opt[64];
  sfa__arch_gpu_option(opt, sizeof opt, 90, 1);
  ck_assert_str_eq(opt, "--gpu-architecture=sm_90a");
  sfa__arch_gpu_option(opt, sizeof opt, 75, 0);
  ck_assert_str_eq(opt, "--gpu-architecture=sm_75");
}
END_TEST

/* ------------------------------------------------------------ specs on every arch */

static sfa_kernel_spec cls(sfa_pass pass, sfa_mode mode, int d, int arch, unsigned flags) {
  sfa_kernel_spec s = {pass, mode, SFA_DTYPE_BF16, d, 0, 0, 0, 0, arch, flags, SFA_SPEC_MMA_SYNC};
  return s;
}

/* Specs, names and their parser take every arch of the table and no other. */
START_TEST(specs_and_names_take_every_arch) {
  size_t rows = 0;
  const sfa__arch *t = sfa__arch_table(&rows);
  for (size_t i = 0; i < rows; i++) {
    sfa_kernel_spec s = cls(SFA_PASS_FWD, SFA_MODE_DENSE, 128, t[i].arch, SFA_FEAT_CAUSAL), p;
    char err[256] = "", name[SFA__NAME_MAX], want[SFA__NAME_MAX];
    ck_assert_msg(sfa_spec_default(&s, err, sizeof err) == SFA_OK, "sm_%d: %s", t[i].arch, err);
    ck_assert_int_eq(sfa_spec_name(&s, name, sizeof name), SFA_OK);
    snprintf(want, sizeof want, "_sm%d", t[i].arch);
    ck_assert_str_eq(name + strlen(name) - strlen(want), want);
    ck_assert_msg(sfa_spec_parse(name, &p, err, sizeof err) == SFA_OK, "%s: %s", name, err);
    ck_assert(memcmp(&p, &s, sizeof s) == 0);
  }
  sfa_kernel_spec p;
  char err[256] = "";
  ck_assert_int_eq(sfa_spec_parse("sfa_fwd_dense_bf16_d64_m128n64_w4s2_sm130", &p, err, sizeof err),
                   SFA_ERR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(err, "arch: 130 is not allowed") &&
                    strstr(err, "80, 86, 87, 88, 89, 90, 100, 103, 110, 120 or 121"),
                "%s", err);
  /* wgmma is sm_90's only */
  sfa_kernel_spec s = {SFA_PASS_FWD, SFA_MODE_DENSE, SFA_DTYPE_BF16, 128, 64, 128, 4, 1, 100,
                       0, SFA_SPEC_MMA_WGMMA};
  ck_assert_int_eq(sfa_spec_validate(&s, err, sizeof err), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(err, "mma: wgmma (wg)"), "%s", err);
  s.arch = 90;
  ck_assert_int_eq(sfa_spec_validate(&s, err, sizeof err), SFA_OK);
  ck_assert(sfa__wgmma_allowed(&s));
  s.arch = 100;
  ck_assert(!sfa__wgmma_allowed(&s));
}
END_TEST

/* The defaults of an arch without a tuned path are the mma.sync defaults of
** an existing arch with its shared memory (sm_90's at 227 KB, sm_86's at 99
** KB): the same tiles and the same status for every class. */
START_TEST(new_archs_get_the_mma_sync_defaults) {
  static const int pairs[][2] = {{100, 90}, {103, 90}, {110, 90}, {120, 86}, {121, 86},
                                 {88, 86}};
  for (size_t a = 0; a < sizeof pairs / sizeof pairs[0]; a++)
    for (int pass = 0; pass < 3; pass++)
      for (int mode = 0; mode < 4; mode++)
        for (int d = 32; d <= 256; d += 16)
          for (int det = 0; det < 2; det++) {
            if (det && pass != SFA_PASS_BWD) continue;
            const int causal = mode == SFA_MODE_DENSE || mode == SFA_MODE_WINDOW;
            unsigned fl = (causal ? SFA_FEAT_CAUSAL : 0) | (det ? SFA_FEAT_DETERMINISTIC : 0);
            sfa_kernel_spec n = cls(pass, mode, d, pairs[a][0], fl);
            sfa_kernel_spec o = cls(pass, mode, d, pairs[a][1], fl);
            sfa_status sn = sfa_spec_default(&n, NULL, 0);
            sfa_status so = sfa__spec_default_mma(&o, 0, NULL, 0);
            ck_assert_msg(sn == so, "sm_%d pass %d mode %d d%d: status %d, sm_%d's %d",
                          pairs[a][0], pass, mode, d, sn, pairs[a][1], so);
            o.arch = n.arch;
            ck_assert_msg(memcmp(&n, &o, sizeof n) == 0, "sm_%d pass %d mode %d d%d: tiles differ",
                          pairs[a][0], pass, mode, d);
            ck_assert(n.mma == SFA_SPEC_MMA_SYNC);
          }
}
END_TEST

/* Where no tile of the backward fits the arch's shared memory (D 256 in 99
** KB), the default says so as SFA_ERR_UNSUPPORTED, naming the memory. */
START_TEST(backward_that_fits_no_tile_is_unsupported) {
  static const int small[] = {86, 88, 89, 120, 121};
  for (size_t a = 0; a < sizeof small / sizeof small[0]; a++) {
    sfa_kernel_spec s = cls(SFA_PASS_BWD, SFA_MODE_DENSE, 256, small[a], SFA_FEAT_CAUSAL);
    char err[256] = "", want[64];
    ck_assert_int_eq(sfa_spec_default(&s, err, sizeof err), SFA_ERR_UNSUPPORTED);
    snprintf(want, sizeof want, "sm_%d", small[a]);
    ck_assert_msg(strstr(err, "shared memory") && strstr(err, want) && strstr(err, "head dim 256"),
                  "%s", err);
    sfa_kernel_spec f = cls(SFA_PASS_FWD, SFA_MODE_DENSE, 256, small[a], SFA_FEAT_CAUSAL);
    ck_assert_int_eq(sfa_spec_default(&f, err, sizeof err), SFA_OK);
  }
  sfa_kernel_spec s = cls(SFA_PASS_BWD, SFA_MODE_DENSE, 256, 100, 0);
  ck_assert_int_eq(sfa_spec_default(&s, NULL, 0), SFA_OK);
}
END_TEST

/* Every preset builds for every arch: valid specs of that arch, wgmma on sm_90
** only, and the backward only where a tile fits. */
START_TEST(presets_for_every_arch) {
  static const char *const presets[] = {"default", "all-modes", "dense-tiles"};
  size_t rows = 0;
  const sfa__arch *t = sfa__arch_table(&rows);
  for (size_t p = 0; p < 3; p++)
    for (size_t i = 0; i < rows; i++) {
      sfa_kernel_spec *v = NULL;
      size_t n = 0;
      char err[256] = "";
      const int arch = t[i].arch;
      ck_assert_msg(sfa__preset(presets[p], &arch, 1, &v, &n, err, sizeof err) == SFA_OK,
                    "%s sm_%d: %s", presets[p], arch, err);
      ck_assert_uint_gt(n, 0);
      int fwd256 = 0, bwd256 = 0;
      for (size_t k = 0; k < n; k++) {
        ck_assert_int_eq(v[k].arch, arch);
        ck_assert_msg(sfa_spec_validate(&v[k], err, sizeof err) == SFA_OK, "%s", err);
        ck_assert(v[k].mma == SFA_SPEC_MMA_SYNC || arch == 90);
        if (v[k].head_dim == 256) *(v[k].pass == SFA_PASS_FWD ? &fwd256 : &bwd256) += 1;
      }
      if (p == 0) {
        ck_assert_int_eq(fwd256, 4);
        ck_assert_int_eq(bwd256, (t[i].smem_optin >= 166912 ? 12 : 0));
      }
      free(v);
    }
  sfa_kernel_spec *v = NULL;
  size_t n = 0;
  char err[256] = "";
  const int bad = 75;
  ck_assert_int_eq(sfa__preset("default", &bad, 1, &v, &n, err, sizeof err),
                   SFA_ERR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(err, "arch: 75") && strstr(err, "or 121"), "%s", err);
}
END_TEST

/* ------------------------------------------------------------ sfa-gen --arch */

/* sfa-gen of this build (testutil.h), or NULL. */
static const char *sfa_gen_path(void) {
  const char *path = tu_build_path("gen/sfa-gen");
  return access(path, X_OK) == 0 ? path : NULL;
}

/* Runs cmd with stdout and stderr into out (NUL-terminated); the exit status. */
static int run_tool(const char *cmd, char *out, size_t n) {
  FILE *f = popen(cmd, "r");
  ck_assert_ptr_nonnull(f);
  size_t got = fread(out, 1, n - 1, f);
  out[got] = '\0';
  int rc = pclose(f);
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

START_TEST(sfa_gen_takes_every_arch) {
  const char *tool = sfa_gen_path();
  if (!tool) {
    printf("SKIP sfa_gen_takes_every_arch: sfa-gen is not built next to the tests\n");
    return;
  }
  static char out[1 << 20];
  char cmd[PATH_MAX + 256];
  snprintf(cmd, sizeof cmd, "%s --help 2>&1", tool);
  ck_assert_int_eq(run_tool(cmd, out, sizeof out), 0);
  ck_assert_msg(strstr(out, "80, 86, 87, 88, 89, 90, 100, 103, 110, 120 or 121"), "%s", out);
  snprintf(cmd, sizeof cmd, "%s --preset default --arch 100,sm_120,sm121 --list 2>&1", tool);
  ck_assert_int_eq(run_tool(cmd, out, sizeof out), 0);
  ck_assert(strstr(out, "sfa_fwd_dense_causal_bf16_d128_m128n64_w4s1_sm100\n"));
  ck_assert(strstr(out, "sfa_bwd_dense_causal_bf16_d256_m64n64_w4s1_sm100\n"));
  ck_assert(strstr(out, "sfa_fwd_dense_causal_bf16_d256_m64n64_w4s1_sm120\n"));
  ck_assert(strstr(out, "sfa_fwd_hash_fp16_d64_m128n64_w4s2_sm121\n"));
  ck_assert(!strstr(out, "_wg_"));
  for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) /* no D 256 bwd in 99 KB */
    ck_assert_msg(strncmp(line, "sfa_fwd_", 8) == 0 || !strstr(line, "_d256_") ||
                      strstr(line, "_sm100"),
                  "%s", line);
  snprintf(cmd, sizeof cmd,
           "%s --preset all-modes --arch 80,86,87,88,89,90,100,103,110,120,121 --list 2>&1",
           tool);
  ck_assert_int_eq(run_tool(cmd, out, sizeof out), 0);
  ck_assert(strstr(out, "_sm88\n") && strstr(out, "_sm110\n"));
  snprintf(cmd, sizeof cmd, "%s --head-dim 64 --arch 103 --list 2>&1", tool);
  ck_assert_int_eq(run_tool(cmd, out, sizeof out), 0);
  ck_assert_str_eq(out, "sfa_fwd_dense_bf16_d64_m128n64_w4s2_sm103\n");
  snprintf(cmd, sizeof cmd, "%s --head-dim 64 --arch 130 --list 2>&1", tool);
  ck_assert_int_eq(run_tool(cmd, out, sizeof out), 2);
  ck_assert_msg(strstr(out, "--arch: 130") && strstr(out, "or 121"), "%s", out);
  snprintf(cmd, sizeof cmd, "%s --head-dim 64 --arch 100 --mma wgmma --list 2>&1", tool);
  ck_assert_int_eq(run_tool(cmd, out, sizeof out), 2);
}
END_TEST

/* ------------------------------------------------------------ NVRTC for the new archs */

/* The archs above sm_90: mma.sync code, compiled natively. */
static int new_arch(int i) {
  size_t rows = 0;
  const sfa__arch *t = sfa__arch_table(&rows);
  int k = 0;
  for (size_t r = 0; r < rows; r++)
    if (t[r].arch > 90 && k++ == i) return t[r].arch;
  return 0;
}

static void expect_cubin(const char *name, const void *cubin, size_t size) {
  ck_assert_uint_gt(size, 64);
  ck_assert_int_eq(memcmp(cubin, "\177ELF", 4), 0);
  int found = 0;
  for (size_t i = 0; i + strlen(name) <= size && !found; i++)
    found = memcmp((const char *)cubin + i, name, strlen(name)) == 0;
  ck_assert_msg(found, "%s: symbol missing from the cubin", name);
}

/* A dense forward, a sparse (hash) forward, a deterministic backward with its
** dq pass, and a helper kernel compile for arch new_arch(_i). */
START_TEST(new_arch_compiles) {
  const int arch = new_arch(_i);
  ck_assert_int_gt(arch, 90);
  const sfa_kernel_spec classes[] = {
    cls(SFA_PASS_FWD, SFA_MODE_DENSE, 128, arch, SFA_FEAT_CAUSAL),
    cls(SFA_PASS_FWD, SFA_MODE_HASH, 64, arch, 0),
    cls(SFA_PASS_BWD, SFA_MODE_WINDOW, 64, arch, SFA_FEAT_CAUSAL | SFA_FEAT_BIAS |
                                                 SFA_FEAT_DETERMINISTIC),
  };
  for (size_t i = 0; i < sizeof classes / sizeof classes[0]; i++) {
    sfa_kernel_spec s = classes[i];
    char name[SFA__NAME_MAX], err[4096] = "";
    ck_assert_msg(sfa_spec_default(&s, err, sizeof err) == SFA_OK, "%s", err);
    ck_assert_int_eq(sfa_spec_name(&s, name, sizeof name), SFA_OK);
    void *cubin = NULL;
    size_t size = 0;
    sfa_status st = sfa_compile_cubin(&s, NULL, &cubin, &size, NULL, err, sizeof err);
    ck_assert_msg(st == SFA_OK, "%s: %s", name, err);
    expect_cubin(name, cubin, size);
    sfa_free(cubin);
  }
  sfa_kernel_spec u;
  char name[SFA__NAME_MAX], err[4096] = "";
  ck_assert_msg(sfa__util_spec(SFA_PASS_TOPK, SFA_DTYPE_BF16, arch, &u, err, sizeof err) ==
                    SFA_OK, "%s", err);
  ck_assert_int_eq(sfa_spec_name(&u, name, sizeof name), SFA_OK);
  void *cubin = NULL;
  size_t size = 0;
  sfa_status st = sfa_compile_cubin(&u, NULL, &cubin, &size, NULL, err, sizeof err);
  ck_assert_msg(st == SFA_OK, "%s sm_%d: %s", name, arch, err);
  expect_cubin(name, cubin, size);
  sfa_free(cubin);
  ck_assert(!tu_driver_loaded());
}
END_TEST

int main(void) {
  Suite *s = suite_create("arch");
  TCase *t = tcase_create("table");
  tcase_add_test(t, table_is_what_nvrtc_compiles);
  tcase_add_test(t, table_rows);
  tcase_add_test(t, device_cc_maps_to_the_best_row);
  tcase_add_test(t, binary_compatibility);
  tcase_add_test(t, nvrtc_options_come_from_the_table);
  suite_add_tcase(s, t);
  TCase *sp = tcase_create("specs");
  tcase_set_timeout(sp, 120);
  tcase_add_test(sp, specs_and_names_take_every_arch);
  tcase_add_test(sp, new_archs_get_the_mma_sync_defaults);
  tcase_add_test(sp, backward_that_fits_no_tile_is_unsupported);
  tcase_add_test(sp, presets_for_every_arch);
  tcase_add_test(sp, sfa_gen_takes_every_arch);
  suite_add_tcase(s, sp);
  TCase *c = tcase_create("compile");
  tcase_set_timeout(c, 600);
  int n = 0;
  while (new_arch(n)) n++;
  tcase_add_loop_test(c, new_arch_compiles, 0, n);
  suite_add_tcase(s, c);
  return tu_run_suite(s);
}
