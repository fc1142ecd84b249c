/*
** test_compile_variants.c -- NVRTC compiles every shipped variant without a
** GPU: every kernel of the default and all-modes presets (gen/presets.c: all
** four modes with their flag sets, fp16/bf16, default tiles, the 28 decode
** kernels and the 11 utility kernels; 279 distinct variants for sm_80, 423
** for sm_90 with the other mma kind) for sm_80 and sm_90 each, and every tile
** config of the dense-tiles sweep (dense bf16 d64/d128, and ws d256) for
** sm_90; 27 variants of the score options (strict, softcap, alibi) in every
** pass, and 18 at D 128 and 4 wgmma backwards at D 256 on sm_90 (case
** wgmma_registers). Each cubin must be an ELF file, and no sm_90a kernel
** (wgmma, ws) may have its wgmma instructions serialized by ptxas (C7512);
** the ws kernels that compiled without spills in sessions 34 to 36 (spill_free) must
** still, and the others' spills are listed.
** Also: a syntax error gives SFA_ERR_COMPILE with the log, and the option
** string is stable. Compiles run on as many threads
** as there are CPUs (16 at most); on 2 busy shared cores the whole suite took
** about 10 minutes (1.6 to 1.8 s per variant).
*/
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sfa.h"
#include "gen/gen_internal.h"
#include "runtime/nvrtc.h"
#include "testutil.h"

#define MAX_VARIANTS 512

typedef struct variant {
  sfa_kernel_spec spec;
  char name[SFA__NAME_MAX];
  sfa_status st;
  char err[2048];
  size_t size;
  double seconds;
  int spills; /* sm_90a kernels: bytes of spill stores, summed over the cubin's functions */
} variant;

static variant variants[MAX_VARIANTS];
static int nvariants;

static void add(const sfa_kernel_spec *s) {
  char name[SFA__NAME_MAX];
  ck_assert_int_eq(sfa_spec_name(s, name, sizeof name), SFA_OK);
  for (int i = 0; i < nvariants; i++)
    if (strcmp(variants[i].name, name) == 0) return;
  ck_assert_int_lt(nvariants, MAX_VARIANTS);
  variant *v = &variants[nvariants++];
  memset(v, 0, sizeof *v);
  v->spec = *s;
  memcpy(v->name, name, sizeof name);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* A wgmma kernel (sm_90a: the wgmma and ws mma kinds), compiled with ptxas's
** report: ptxas's C7512 says it serialized every wgmma.mma_async of the kernel
** (each waits for the one before) for want of registers, which the kernel
** survives correct but slow (session 33: the ws backward at D 128 with softcap
** or ALiBi, and a 64 x 128 dQ accumulator beside dK and dV; the wgmma backward
** at D 256 with its k steps' descriptors hoisted out of the tile loop). */
static sfa_status compile_wgmma(variant *v, void **bin) {
  char *src = NULL, *log = NULL;
  sfa_status st = sfa_generate(&v->spec, &src, v->err, sizeof v->err);
  if (st != SFA_OK) return st;
  st = sfa__nvrtc_compile_ptxas_info(v->name, src, &v->spec, bin, &v->size, &log, v->err,
                                     sizeof v->err);
  for (const char *p = log; p && (p = strstr(p, " bytes spill stores")) != NULL; p++) {
    const char *d = p;
    while (d > log && d[-1] >= '0' && d[-1] <= '9') d--;
    v->spills += atoi(d);
  }
  if (st == SFA_OK && !(log && strstr(log, " registers"))) {
    st = SFA_ERR_INTERNAL; /* no report: the C7512 and spill checks would pass unseen */
    snprintf(v->err, sizeof v->err, "NVRTC's log has no ptxas report (registers, spills)");
  } else if (st == SFA_OK && strstr(log, "C7512")) {
    st = SFA_ERR_INTERNAL;
    snprintf(v->err, sizeof v->err, "ptxas serialized its wgmma instructions (C7512): %.1500s",
             strstr(log, "C7512"));
  }
  sfa_free(src);
  free(log);
  return st;
}

/* The warp-specialized kernels that ptxas compiled without spills when this
** check came (session 34's sweep, with session 36's register splits): every
** ws forward, and every ws backward at head dims 64 and 128 (softcap, ALiBi
** and packed sequences included) but hash at 128 (with softcap it spills
** 20-32 bytes, in fp16 4, in the consumers) and qk_drop at 128 with softcap
** (4-8). Before session 36 the producer got only what it asked for and 19 of
** these spilled 4-44 bytes, most in the producer. The D 256 backwards are
** ws256's and the wgmma kernel's. A spill here is a regression of the hot
** loops. */
static int spill_free(const sfa_kernel_spec *s) {
  if (s->mma != SFA_SPEC_MMA_WS) return 0;
  if (s->pass == SFA_PASS_FWD) return 1;
  if (s->pass != SFA_PASS_BWD || s->head_dim > 128) return 0;
  if (s->head_dim < 128) return 1;
  return s->mode != SFA_MODE_HASH &&
         !(s->mode == SFA_MODE_QK_DROP && (s->flags & SFA_FEAT_SOFTCAP));
}

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int next_variant;

static void *compile_worker(void *arg) {
  (void)arg;
  for (;;) {
    pthread_mutex_lock(&lock);
    int i = next_variant < nvariants ? next_variant++ : -1;
    pthread_mutex_unlock(&lock);
    if (i < 0) return NULL;
    variant *v = &variants[i];
    void *bin = NULL;
    double t0 = now_s();
    if (sfa__spec_is_wgmma(&v->spec))
      v->st = compile_wgmma(v, &bin);
    else
      v->st = sfa_compile_cubin(&v->spec, NULL, &bin, &v->size, NULL, v->err, sizeof v->err);
    v->seconds = now_s() - t0;
    if (v->st == SFA_OK) {
      static const unsigned char elf[4] = {0x7f, 'E', 'L', 'F'};
      if (v->size < 4 || memcmp(bin, elf, 4) != 0) {
        v->st = SFA_ERR_INTERNAL;
        snprintf(v->err, sizeof v->err, "cubin does not start with the ELF magic");
      }
    }
    sfa_free(bin);
  }
}

static void compile_all(const char *what) {
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  int nth = ncpu < 1 ? 1 : ncpu > 16 ? 16 : (int)ncpu;
  pthread_t th[16];
  double t0 = now_s();
  next_variant = 0;
  for (int i = 0; i < nth; i++) ck_assert_int_eq(pthread_create(&th[i], NULL, compile_worker, NULL), 0);
  for (int i = 0; i < nth; i++) pthread_join(th[i], NULL);
  double total = 0, worst = 0;
  int failed = 0, spilled = 0;
  for (int i = 0; i < nvariants; i++) {
    variant *v = &variants[i];
    total += v->seconds;
    if (v->seconds > worst) worst = v->seconds;
    if (v->st == SFA_OK && v->spills > 0 && spill_free(&v->spec)) {
      v->st = SFA_ERR_INTERNAL;
      snprintf(v->err, sizeof v->err, "ptxas spills %d bytes (this kernel compiled without spills "
               "when spill_free's set was drawn)", v->spills);
    }
    if (v->st != SFA_OK) {
      failed++;
      fprintf(stderr, "FAILED %s: %s\n", v->name, v->err);
    } else if (v->spills > 0) {
      spilled++;
      fprintf(stderr, "spills %s: %d bytes\n", v->name, v->spills);
    }
  }
  fprintf(stderr, "%s: %d variants, %d failed, %d sm_90a kernels with spills, %.1f s wall on %d "
          "threads (%.2f s per variant on average, slowest %.2f s)\n",
          what, nvariants, failed, spilled, now_s() - t0, nth, total / nvariants, worst);
  ck_assert_msg(failed == 0, "%d of %d variants failed to compile", failed, nvariants);
}

static void add_preset(const char *preset, const int *archs, int narchs) {
  sfa_kernel_spec *specs = NULL;
  size_t n = 0;
  char err[256] = "";
  ck_assert_msg(sfa__preset(preset, archs, narchs, &specs, &n, err, sizeof err) == SFA_OK,
                "%s", err);
  for (size_t i = 0; i < n; i++) add(&specs[i]);
  free(specs);
}

static void compile_presets_for(int arch) {
  char what[64];
  nvariants = 0;
  /* default: 44 forward kernels, each with bwd, bwd + det and bwddq, 28
  ** decode kernels (dense, window x causal or not, hash x strict or not, dense
  ** causal + gather; x 2 dtypes x D 64, 128) and
  ** the 11 utility kernels (bwd_pre, convert x 2 dtypes; hash_sort, permute;
  ** topk x 3 dtypes; merge; kv_append). all-modes adds window's other 4 flag sets (x 2 dtypes x 2
  ** dims x 4 passes), and on sm_90 the other mma kind of each of its 48 fwd,
  ** 48 bwd and 48 bwd + det kernels, and the warp-specialized forward of the
  ** 32 fwd kernels without a mask (16 have one: window's 4 mask flag sets x 2
  ** dtypes x 2 dims), and the warp-specialized backward of dense and window
  ** {-, causal}, qk_drop and hash (x 2 dtypes x 2 dims: 24). On sm_90 both hold the short
  ** rows' forward of dense {-, causal} and qk_drop at D 64 in 2 dtypes
  ** (sfa__spec_for_keys): 6. */
  const int nshort = arch == 90 ? 6 : 0;
  add_preset("default", &arch, 1);
  ck_assert_int_eq(nvariants, 44 + 3 * 44 + 28 + 11 + nshort);
  add_preset("all-modes", &arch, 1);
  ck_assert_int_eq(nvariants, 44 + 3 * 44 + 28 + 11 + nshort + 4 * 16 +
                                  (arch == 90 ? 3 * 48 + 32 + 24 : 0));
  snprintf(what, sizeof what, "default + all-modes presets, sm_%d", arch);
  compile_all(what);
}

START_TEST(presets_sm80) { compile_presets_for(80); }
END_TEST

START_TEST(presets_sm90) { compile_presets_for(90); }
END_TEST

START_TEST(dense_tiles_sm90) {
  static const int arch = 90;
  nvariants = 0;
  add_preset("dense-tiles", &arch, 1);
  ck_assert_int_ge(nvariants, 30);
  compile_all("dense-tiles preset, sm_90");
}
END_TEST

/* The score options of issue 19 (strict, softcap, alibi), which no preset
** ships: each flag set in every pass (fwd, bwd, bwd + det, bwddq) on sm_90
** (wgmma where the default takes it), and fwd and bwd on sm_80 (mma.sync). */
START_TEST(score_options) {
  static const struct { sfa_mode mode; unsigned flags; } sets[] = {
    {SFA_MODE_QK_DROP, SFA_FEAT_STRICT | SFA_FEAT_SOFTCAP},
    {SFA_MODE_HASH, SFA_FEAT_STRICT},
    {SFA_MODE_DENSE, SFA_FEAT_CAUSAL | SFA_FEAT_SOFTCAP | SFA_FEAT_ALIBI},
    {SFA_MODE_WINDOW, SFA_FEAT_BIAS | SFA_FEAT_MASK | SFA_FEAT_SOFTCAP | SFA_FEAT_ALIBI},
  };
  static const struct { sfa_pass pass; unsigned extra; } passes[] = {
    {SFA_PASS_FWD, 0}, {SFA_PASS_BWD, 0}, {SFA_PASS_BWD, SFA_FEAT_DETERMINISTIC},
    {SFA_PASS_BWD_DQ, 0}};
  nvariants = 0;
  for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++)
    for (size_t p = 0; p < 4; p++)
      for (int arch = 80; arch <= 90; arch += 10) {
        if (arch == 80 && p >= 2) continue;
        sfa_kernel_spec s = {passes[p].pass, sets[i].mode, i % 2 ? SFA_DTYPE_FP16 : SFA_DTYPE_BF16,
                             64, 0, 0, 0, 0, arch, sets[i].flags | passes[p].extra,
                             SFA_SPEC_MMA_SYNC};
        char err[256] = "";
        ck_assert_msg(sfa_spec_default(&s, err, sizeof err) == SFA_OK, "%s", err);
        add(&s);
        /* the wgmma backward where the warp-specialized one is the default
        ** (qk_drop's, hash's and dense's sets: 3; window's has a bias and a
        ** mask, which ws does not serve) */
        sfa_kernel_spec w = s;
        if (arch == 90 && passes[p].pass == SFA_PASS_BWD && s.mma == SFA_SPEC_MMA_WS) {
          ck_assert_msg(sfa__spec_default_mma(&w, 1, err, sizeof err) == SFA_OK, "%s", err);
          ck_assert_int_eq(w.mma, SFA_SPEC_MMA_WGMMA);
          add(&w);
        }
      }
  ck_assert_int_eq(nvariants, 4 * (4 + 2) + 3);
  compile_all("score options (strict, softcap, alibi)");
}
END_TEST

/* The score options at head dim 128 on sm_90, where the wgmma kernels hold
** the most accumulators: softcap in every mode, ALiBi in dense and window,
** forward and backward in the default mma kind, and the backward also in the
** other one (wgmma where the default is ws). compile_wgmma fails any whose
** wgmma instructions ptxas serialized. */
START_TEST(score_options_d128_sm90) {
  static const struct { sfa_mode mode; unsigned flags; } sets[] = {
    {SFA_MODE_DENSE, SFA_FEAT_CAUSAL | SFA_FEAT_SOFTCAP}, {SFA_MODE_DENSE, SFA_FEAT_CAUSAL | SFA_FEAT_ALIBI},
    {SFA_MODE_WINDOW, SFA_FEAT_CAUSAL | SFA_FEAT_SOFTCAP}, {SFA_MODE_WINDOW, SFA_FEAT_CAUSAL | SFA_FEAT_ALIBI},
    {SFA_MODE_QK_DROP, SFA_FEAT_SOFTCAP}, {SFA_MODE_HASH, SFA_FEAT_SOFTCAP}};
  nvariants = 0;
  int wgmma = 0;
  for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++)
    for (int p = 0; p < 2; p++) {
      sfa_kernel_spec s = {p ? SFA_PASS_BWD : SFA_PASS_FWD, sets[i].mode, SFA_DTYPE_BF16, 128, 0, 0,
                           0, 0, 90, sets[i].flags, SFA_SPEC_MMA_SYNC};
      char err[256] = "";
      ck_assert_msg(sfa_spec_default(&s, err, sizeof err) == SFA_OK, "%s", err);
      add(&s);
      wgmma += sfa__spec_is_wgmma(&s);
      if (p && s.mma == SFA_SPEC_MMA_WS) {
        ck_assert_msg(sfa__spec_default_mma(&s, 1, err, sizeof err) == SFA_OK, "%s", err);
        add(&s);
        wgmma += sfa__spec_is_wgmma(&s);
      }
    }
  /* and the backward at D 256 where the wgmma kernel is the default (the ws one
  ** serves dense and window without a bias, softcap, ALiBi or packed sequences) */
  static const struct { sfa_mode mode; unsigned flags; } d256[] = {
    {SFA_MODE_HASH, 0}, {SFA_MODE_QK_DROP, SFA_FEAT_SOFTCAP}, {SFA_MODE_WINDOW, SFA_FEAT_CAUSAL | SFA_FEAT_BIAS},
    {SFA_MODE_DENSE, SFA_FEAT_CAUSAL | SFA_FEAT_VARLEN}};
  for (size_t i = 0; i < sizeof d256 / sizeof d256[0]; i++) {
    sfa_kernel_spec s = {SFA_PASS_BWD, d256[i].mode, SFA_DTYPE_BF16, 256, 0, 0, 0, 0, 90,
                         d256[i].flags, SFA_SPEC_MMA_SYNC};
    char err[256] = "";
    ck_assert_msg(sfa_spec_default(&s, err, sizeof err) == SFA_OK, "%s", err);
    ck_assert_int_eq(s.mma, SFA_SPEC_MMA_WGMMA);
    add(&s);
    wgmma++;
  }
  fprintf(stderr, "score options at D 128 and the wgmma backward at D 256: %d variants, %d of them "
          "wgmma kernels\n", nvariants, wgmma);
  ck_assert_int_ge(wgmma, 12 + 4);  /* at least every backward in both kinds, and the four */
  compile_all("score options at D 128 and the D 256 wgmma backward, sm_90");
}
END_TEST

/* Packed sequences (varlen), which no preset ships, in the backward on sm_90:
** the warp-specialized kernel (the default at D 64 and 128) of every mode,
** and the wgmma kernel of dense. */
START_TEST(varlen_backward_sm90) {
  static const struct { sfa_mode mode; unsigned flags; } sets[] = {
    {SFA_MODE_DENSE, SFA_FEAT_CAUSAL}, {SFA_MODE_WINDOW, 0}, {SFA_MODE_QK_DROP, SFA_FEAT_STRICT},
    {SFA_MODE_HASH, SFA_FEAT_SOFTCAP}};
  nvariants = 0;
  for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++)
    for (int d = 64; d <= 128; d += 64) {
      sfa_kernel_spec s = {SFA_PASS_BWD, sets[i].mode, d == 64 ? SFA_DTYPE_FP16 : SFA_DTYPE_BF16,
                           d, 0, 0, 0, 0, 90, sets[i].flags | SFA_FEAT_VARLEN,
                           SFA_SPEC_MMA_SYNC};
      char err[256] = "";
      ck_assert_msg(sfa_spec_default(&s, err, sizeof err) == SFA_OK, "%s", err);
      ck_assert_int_eq(s.mma, SFA_SPEC_MMA_WS);
      add(&s);
      if (i == 0) {
        ck_assert_msg(sfa__spec_default_mma(&s, 1, err, sizeof err) == SFA_OK, "%s", err);
        ck_assert_int_eq(s.mma, SFA_SPEC_MMA_WGMMA);
        add(&s);
      }
    }
  ck_assert_int_eq(nvariants, 4 * 2 + 2);
  compile_all("varlen backward, sm_90");
}
END_TEST

START_TEST(syntax_error_gives_log) {
  sfa_kernel_spec s = {SFA_PASS_FWD, SFA_MODE_DENSE, SFA_DTYPE_BF16, 64, 128, 64, 4, 2, 80, 0,
                       SFA_SPEC_MMA_SYNC};
  const char *src = "extern \"C\" __global__ void k() {\n  int x = ;\n}\n";
  void *bin = (void *)1;
  size_t size = 7;
  char *log = NULL, err[8192] = "";
  sfa_status st = sfa_compile_cubin(&s, src, &bin, &size, &log, err, sizeof err);
  ck_assert_int_eq(st, SFA_ERR_COMPILE);
  ck_assert_ptr_null(bin);
  ck_assert_uint_eq(size, 0);
  ck_assert_ptr_nonnull(log);
  ck_assert_msg(strstr(log, "error"), "log: %s", log);
  /* The program is named after the kernel, the log says where. */
  ck_assert_msg(strstr(log, "sfa_fwd_dense_bf16_d64_m128n64_w4s2_sm80.cu(2)"), "log: %s", log);
  ck_assert_msg(strstr(err, "sfa_fwd_dense_bf16_d64_m128n64_w4s2_sm80.cu"), "err: %s", err);
  ck_assert_msg(strstr(err, "expected an expression"), "err: %s", err);
  sfa_free(log);

  /* err is truncated to its buffer, the full log still comes back. */
  char small[64];
  log = NULL;
  st = sfa_compile_cubin(&s, src, &bin, &size, &log, small, sizeof small);
  ck_assert_int_eq(st, SFA_ERR_COMPILE);
  ck_assert_uint_lt(strlen(small), sizeof small);
  ck_assert_ptr_nonnull(log);
  sfa_free(log);
}
END_TEST

START_TEST(log_on_success_and_bad_args) {
  sfa_kernel_spec s = {SFA_PASS_FWD, SFA_MODE_DENSE, SFA_DTYPE_FP16, 64, 128, 64, 4, 2, 90, 0,
                       SFA_SPEC_MMA_SYNC};
  void *bin = NULL;
  size_t size = 0;
  char *log = NULL, err[1024] = "";
  ck_assert_int_eq(sfa_compile_cubin(&s, "extern \"C\" __global__ void k() {}\n", &bin, &size,
                                     &log, err, sizeof err), SFA_OK);
  ck_assert_ptr_nonnull(bin);
  ck_assert_ptr_nonnull(log); /* possibly empty */
  ck_assert(memcmp(bin, "\x7f" "ELF", 4) == 0);
  sfa_free(bin);
  sfa_free(log);
  ck_assert_int_eq(sfa_compile_cubin(&s, NULL, NULL, &size, NULL, err, sizeof err),
                   SFA_ERR_INVALID_ARGUMENT);
  s.head_dim = 40;
  ck_assert_int_eq(sfa_compile_cubin(&s, NULL, &bin, &size, NULL, err, sizeof err),
                   SFA_ERR_INVALID_ARGUMENT);
  ck_assert_ptr_nonnull(strstr(err, "head_dim: 40"));
}
END_TEST

START_TEST(options_and_version) {
  sfa_kernel_spec s = {SFA_PASS_FWD, SFA_MODE_DENSE, SFA_DTYPE_FP16, 64, 128, 64, 4, 2, 90, 0,
                       SFA_SPEC_MMA_SYNC};
  ck_assert_str_eq(sfa__nvrtc_options_string(&s),
                   "--gpu-architecture=sm_90 -std=c++17 --use_fast_math");
  s.arch = 86;
  ck_assert_str_eq(sfa__nvrtc_options_string(&s),
                   "--gpu-architecture=sm_86 -std=c++17 --use_fast_math");
  sfa__nvrtc_options o;
  sfa__nvrtc_options_init(&o, &s);
  ck_assert_int_eq(o.count, 3);
  ck_assert_str_eq(o.argv[0], "--gpu-architecture=sm_86");
  int major = 0, minor = -1;
  sfa__nvrtc_version(&major, &minor);
  ck_assert_int_ge(major, 11);
  ck_assert_int_ge(minor, 0);
}
END_TEST

int main(void) {
  Suite *s = suite_create("compile_variants");
  TCase *tc = tcase_create("compile");
  tcase_set_timeout(tc, 1200);
  tcase_add_test(tc, options_and_version);
  tcase_add_test(tc, syntax_error_gives_log);
  tcase_add_test(tc, log_on_success_and_bad_args);
  tcase_add_test(tc, score_options);
  tcase_add_test(tc, varlen_backward_sm90);
  tcase_add_test(tc, presets_sm80);
  tcase_add_test(tc, presets_sm90);
  tcase_add_test(tc, dense_tiles_sm90);
  suite_add_tcase(s, tc);
  /* its own case, so that CK_RUN_CASE=wgmma_registers runs it alone (a minute) */
  TCase *tw = tcase_create("wgmma_registers");
  tcase_set_timeout(tw, 1200);
  tcase_add_test(tw, score_options_d128_sm90);
  suite_add_tcase(s, tw);
  return tu_run_suite(s);
}
