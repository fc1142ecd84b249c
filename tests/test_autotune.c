/*
** test_autotune.c -- the autotuner's core (runtime/autotune.h) with a fake
** timer: candidate sets (valid, default first, no duplicates, complete, wgmma
** ones for sm_90 fwd only), the fastest config wins, outputs beyond the
** tolerance and failed prepares or runs are rejected, the 2% noise rule keeps
** the default, the median over reps (not the mean, not the warm-up) is used,
** progress, argument checks, and the policy "cached" pick from a tuning db.
*/
#include "runtime/autotune.h"
#include "gen/gen_internal.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const int BM[] = {64, 128}, BN[] = {32, 64, 128}, W[] = {4, 8}, S[] = {1, 2};

static sfa_kernel_spec cls(sfa_mode mode, sfa_dtype dt, int d, int arch, unsigned flags) {
  sfa_kernel_spec s = {SFA_PASS_FWD, mode, dt, d, 999, 7, 3, 9, arch, flags, SFA_SPEC_MMA_SYNC};
  return s;
}

#define NTILES 66 /* 2 mma kinds x 24 tiles, 18 ws tiles */

/* 0..59 for a tile in the enumeration grid: 0..23 with mma.sync, 24..47 with
** wgmma, 48..59 with ws (consumers x block_n x stages). */
static int tile_index(const sfa_kernel_spec *s) {
  if (s->mma == SFA_SPEC_MMA_WS)
    return 48 + ((s->num_warps / 4 - 2) * 2 + (s->block_n == 128)) * 3 + (s->num_stages - 2);
  int b = s->block_n == 32 ? 0 : s->block_n == 64 ? 1 : 2;
  return (((s->mma == SFA_SPEC_MMA_WGMMA) * 2 + (s->block_m == 128)) * 3 + b) * 2 * 2 +
         (s->num_warps == 8) * 2 + (s->num_stages - 1);
}

/* ---------------------------------------------------------------- candidates */

static int last_nws; /* ws candidates of the last check_candidates */

/* Checks base's candidates; returns how many of them use wgmma (last_nws: ws). */
static int check_candidates(sfa_kernel_spec base) {
  sfa_kernel_spec *c = NULL, def = base;
  int n = -1, nwg = 0, nws = 0;
  char err[512] = "", name[128];
  ck_assert_msg(sfa__tune_candidates(&base, &c, &n, err, sizeof err) == SFA_OK, "%s", err);
  ck_assert_int_eq(sfa_spec_default(&def, NULL, 0), SFA_OK);
  ck_assert_int_ge(n, 1);
  ck_assert_int_le(n, SFA__TUNE_MAX_CANDIDATES);
  ck_assert(memcmp(&c[0], &def, sizeof def) == 0);
  int seen[NTILES] = {0}, valid = 0;
  for (int i = 0; i < n; i++) {
    ck_assert_msg(sfa_spec_validate(&c[i], err, sizeof err) == SFA_OK, "%s", err);
    /* the problem is base's; only the configuration (tiles, mma) differs */
    ck_assert(c[i].pass == base.pass && c[i].mode == base.mode && c[i].dtype == base.dtype &&
              c[i].head_dim == base.head_dim && c[i].arch == base.arch &&
              c[i].flags == base.flags);
    ck_assert_int_eq(sfa_spec_name(&c[i], name, sizeof name), SFA_OK);
    ck_assert_msg(seen[tile_index(&c[i])]++ == 0, "duplicate %s", name);
    nwg += c[i].mma == SFA_SPEC_MMA_WGMMA;
    nws += c[i].mma == SFA_SPEC_MMA_WS;
  }
  /* complete: every valid tile of the grid, with either mma kind, is there */
  for (int wg = 0; wg < 2; wg++)
    for (int a = 0; a < 2; a++)
      for (int b = 0; b < 3; b++)
        for (int w = 0; w < 2; w++)
          for (int s = 0; s < 2; s++) {
            sfa_kernel_spec t = def;
            t.block_m = BM[a], t.block_n = BN[b], t.num_warps = W[w], t.num_stages = S[s];
            t.mma = wg ? SFA_SPEC_MMA_WGMMA : SFA_SPEC_MMA_SYNC;
            if (sfa_spec_validate(&t, NULL, 0) == SFA_OK) {
              valid++;
              ck_assert_msg(seen[tile_index(&t)], "missing a valid tile");
            }
          }
  for (int w = 8; w <= 16; w += 4)
    for (int b = 64; b <= 128; b += 64)
      for (int s = 2; s <= 4; s++) {
        sfa_kernel_spec t = def; /* the backward's ws tiles: m64n128w12, m64n64w12 at D 256 */
        t.block_m = def.pass == SFA_PASS_BWD ? 64 : 16 * (w - 4);
        t.block_n = b, t.num_warps = w, t.num_stages = s;
        t.mma = SFA_SPEC_MMA_WS;
        if (sfa_spec_validate(&t, NULL, 0) == SFA_OK) {
          valid++;
          ck_assert_msg(seen[tile_index(&t)], "missing a valid ws tile");
        }
      }
  ck_assert_int_eq(n, valid);
  last_nws = nws;
  free(c);
  return nwg;
}

static sfa_kernel_spec with_pass(sfa_kernel_spec s, sfa_pass pass) {
  s.pass = pass;
  return s;
}

START_TEST(candidates_valid_default_first_unique) {
  check_candidates(cls(SFA_MODE_DENSE, SFA_DTYPE_BF16, 128, 90, SFA_FEAT_CAUSAL));
  check_candidates(cls(SFA_MODE_DENSE, SFA_DTYPE_FP16, 64, 80, 0));
  check_candidates(cls(SFA_MODE_DENSE, SFA_DTYPE_BF16, 256, 86, SFA_FEAT_CAUSAL));
  check_candidates(cls(SFA_MODE_HASH, SFA_DTYPE_FP16, 64, 89, 0));
  check_candidates(cls(SFA_MODE_QK_DROP, SFA_DTYPE_BF16, 32, 80, 0));
  check_candidates(
      cls(SFA_MODE_WINDOW, SFA_DTYPE_BF16, 128, 90, SFA_FEAT_CAUSAL | SFA_FEAT_BIAS | SFA_FEAT_MASK));
  check_candidates(cls(SFA_MODE_WINDOW, SFA_DTYPE_FP16, 192, 86, 0));
  /* the common class has many candidates */
  sfa_kernel_spec b = cls(SFA_MODE_DENSE, SFA_DTYPE_BF16, 64, 90, 0), *c;
  int n;
  ck_assert_int_eq(sfa__tune_candidates(&b, &c, &n, NULL, 0), SFA_OK);
  ck_assert_int_ge(n, 10);
  free(c);
}
END_TEST

/* The tuner's first candidate is the default of the problem's key length
** (sfa__spec_for_keys): up to 4096 keys the one-consumer tile of dense D 64 on
** sm_90 leads and the three-consumer default takes its place, same set; above,
** and for a class without a length rule, the order stays. */
START_TEST(the_key_lengths_default_leads_the_candidates) {
  sfa_kernel_spec b = cls(SFA_MODE_DENSE, SFA_DTYPE_BF16, 64, 90, SFA_FEAT_CAUSAL), *c, *o;
  int n, no;
  ck_assert_int_eq(sfa__tune_candidates(&b, &o, &no, NULL, 0), SFA_OK);
  ck_assert_int_eq(o[0].num_warps, 16);
  for (int t = 0; t < 2; t++) {
    ck_assert_int_eq(sfa__tune_candidates(&b, &c, &n, NULL, 0), SFA_OK);
    sfa__tune_lead_for_keys(c, &n, t ? 4097 : 4096);
    ck_assert_int_eq(n, no);
    if (t) {
      ck_assert(memcmp(c, o, (size_t)n * sizeof *c) == 0);
    } else {
      ck_assert(c[0].block_m == 64 && c[0].num_warps == 8 && c[0].num_stages == 2 &&
                c[0].mma == SFA_SPEC_MMA_WS);
      int swapped = 0;
      for (int i = 1; i < n; i++) {
        if (memcmp(&c[i], &o[i], sizeof *c) == 0) continue;
        ck_assert(memcmp(&c[i], &o[0], sizeof *c) == 0 && memcmp(&o[i], &c[0], sizeof *c) == 0);
        swapped++;
      }
      ck_assert_int_eq(swapped, 1);
    }
    free(c);
  }
  free(o);
  b.head_dim = 128;
  ck_assert_int_eq(sfa__tune_candidates(&b, &o, &no, NULL, 0), SFA_OK);
  ck_assert_int_eq(sfa__tune_candidates(&b, &c, &n, NULL, 0), SFA_OK);
  sfa__tune_lead_for_keys(c, &n, 1024);
  ck_assert(n == no && memcmp(c, o, (size_t)n * sizeof *c) == 0);
  free(c);
  free(o);
}
END_TEST

/* wgmma candidates come next to the mma.sync ones for fwd and bwd on sm_90
** (D 64, 128), and nowhere else. */
START_TEST(wgmma_candidates_for_sm90_fwd_and_bwd) {
  sfa_kernel_spec b = cls(SFA_MODE_DENSE, SFA_DTYPE_BF16, 128, 90, SFA_FEAT_CAUSAL), *c;
  int n, nwg = check_candidates(b);
  ck_assert_int_eq(sfa__tune_candidates(&b, &c, &n, NULL, 0), SFA_OK);
  ck_assert_int_gt(nwg, 0);
  ck_assert_int_lt(nwg, n); /* both kinds */
  ck_assert_int_eq(last_nws, 10); /* 12 ws tiles; at D 128 four stages of 128 keys do not fit */
  for (int i = 0; i < n; i++) ck_assert_int_le(c[i].num_warps, 12); /* 3 consumers: D 64 only */
  free(c);
  /* at D 64 the three-consumer tiles (num_warps 16, block_m 192) are candidates too */
  b.head_dim = 64;
  check_candidates(b);
  ck_assert_int_eq(sfa__tune_candidates(&b, &c, &n, NULL, 0), SFA_OK);
  int n16 = 0;
  for (int i = 0; i < n; i++)
    if (c[i].num_warps == 16) {
      ck_assert_int_eq(c[i].mma, SFA_SPEC_MMA_WS);
      ck_assert_int_eq(c[i].block_m, 192);
      n16++;
    }
  ck_assert_int_gt(n16, 0);
  free(c);
  b.head_dim = 128;
  ck_assert_int_gt(check_candidates(cls(SFA_MODE_HASH, SFA_DTYPE_FP16, 64, 90, 0)), 0);
  ck_assert_int_eq(check_candidates(cls(SFA_MODE_DENSE, SFA_DTYPE_BF16, 128, 80, SFA_FEAT_CAUSAL)),
                   0);
  ck_assert_int_eq(check_candidates(cls(SFA_MODE_DENSE, SFA_DTYPE_BF16, 96, 90, SFA_FEAT_CAUSAL)),
                   0);
  ck_assert_int_eq(last_nws, 0);
  /* bwd: m64 with n64 w4 or n128 w8, s1 or s2; ws m64n128w12 with 2 or 3
  ** stages (D 128: four do not fit), 2..4 at D 64 */
  ck_assert_int_eq(check_candidates(with_pass(b, SFA_PASS_BWD)), 4);
  ck_assert_int_eq(last_nws, 2);
  b.head_dim = 64;
  check_candidates(with_pass(b, SFA_PASS_BWD));
  ck_assert_int_eq(last_nws, 3);
  b.head_dim = 128;
  /* hash at D 128: its query metadata per stage leaves no room for a third
  ** beside the dQ tile (dq_tma) */
  check_candidates(with_pass(cls(SFA_MODE_HASH, SFA_DTYPE_FP16, 128, 90, 0), SFA_PASS_BWD));
  ck_assert_int_eq(last_nws, 1);
  /* D 256: the ws backward (bwd_ws256.lt, the default) in its one tile, m64n64w12s2
     (a third stage does not fit), beside the wgmma and mma.sync tiles */
  ck_assert_int_gt(check_candidates(with_pass(cls(SFA_MODE_DENSE, SFA_DTYPE_BF16, 256, 90,
                                                  SFA_FEAT_CAUSAL), SFA_PASS_BWD)), 0);
  ck_assert_int_eq(last_nws, 1);
  ck_assert_int_eq(check_candidates(with_pass(b, SFA_PASS_BWD_DQ)), 0);
}
END_TEST

START_TEST(candidates_of_an_invalid_class_fail) {
  sfa_kernel_spec b = cls(SFA_MODE_DENSE, SFA_DTYPE_BF16, 128, 90, 0), *c = (sfa_kernel_spec *)1;
  int n = 5;
  char err[512];
  b.arch = 70; /* below sm_80 */
  ck_assert_int_eq(sfa__tune_candidates(&b, &c, &n, err, sizeof err), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(err, "arch") != NULL, "%s", err);
  ck_assert_ptr_null(c);
  ck_assert_int_eq(n, 0);
  b = cls(SFA_MODE_DENSE, SFA_DTYPE_BF16, 72, 90, 0);
  ck_assert_int_eq(sfa__tune_candidates(&b, &c, &n, err, sizeof err), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(err, "head_dim") != NULL, "%s", err);
  b = cls(SFA_MODE_HASH, SFA_DTYPE_BF16, 128, 90, SFA_FEAT_CAUSAL);
  ck_assert_int_eq(sfa__tune_candidates(&b, &c, &n, err, sizeof err), SFA_ERR_INVALID_ARGUMENT);
}
END_TEST

/* ---------------------------------------------------------------- the fake GPU */

typedef struct fake {
  double ms[NTILES];    /* median time per tile */
  double rel[NTILES];   /* output difference per tile */
  int prepare_rc[NTILES], diff_rc[NTILES], run_rc[NTILES];
  int nan_rep[NTILES];  /* 1-based timed rep that returns NaN; 0: none */
  double outlier;       /* > 0: the first timed rep of each tile returns this */
  int warmup;           /* as in ops, to tell warm-up calls from timed ones */
  int calls[NTILES];    /* run calls per tile */
  int prepared[NTILES], diffed[NTILES];
  int progress_calls, progress_last;
} fake;

static double base_ms(const sfa_kernel_spec *s) {
  return 1.0 + 0.5 * (s->block_m == 64) + 0.05 * (s->block_n / 32) + 0.02 * s->num_warps +
         0.01 * s->num_stages;
}

static void fake_init(fake *f, const sfa_kernel_spec *cands, int n, int warmup) {
  memset(f, 0, sizeof *f);
  for (int i = 0; i < n; i++) f->ms[tile_index(&cands[i])] = base_ms(&cands[i]);
  f->warmup = warmup;
  f->progress_last = -1;
}

static int fk_prepare(void *u, const sfa_kernel_spec *s) {
  fake *f = u;
  f->prepared[tile_index(s)]++;
  return f->prepare_rc[tile_index(s)];
}

static int fk_run(void *u, const sfa_kernel_spec *s, float *ms) {
  fake *f = u;
  int t = tile_index(s), call = f->calls[t]++;
  if (f->run_rc[t] && call >= f->warmup) return f->run_rc[t];
  if (call < f->warmup) {
    *ms = 1e9f; /* warm-up times must be ignored */
    return 0;
  }
  int rep = call - f->warmup + 1;
  if (f->nan_rep[t] == rep) *ms = NAN;
  else if (f->outlier > 0 && rep == 1) *ms = (float)f->outlier;
  else *ms = (float)f->ms[t];
  return 0;
}

static int fk_diff(void *u, const sfa_kernel_spec *s, double *rel) {
  fake *f = u;
  f->diffed[tile_index(s)]++;
  *rel = f->rel[tile_index(s)];
  return f->diff_rc[tile_index(s)];
}

static void fk_progress(void *u, int i, int n, const sfa__tune_entry *e) {
  fake *f = u;
  ck_assert_int_eq(i, f->progress_last + 1);
  ck_assert_int_gt(n, i);
  ck_assert_ptr_nonnull(e);
  f->progress_last = i;
  f->progress_calls++;
}

static sfa__tune_ops ops_of(int warmup, int reps) {
  sfa__tune_ops o = {fk_prepare, fk_run, fk_diff, 1e-2, warmup, reps, fk_progress};
  return o;
}

static sfa_kernel_spec *cands_of(sfa_kernel_spec base, int *n) {
  sfa_kernel_spec *c = NULL;
  ck_assert_int_eq(sfa__tune_candidates(&base, &c, n, NULL, 0), SFA_OK);
  ck_assert_int_ge(*n, 4);
  return c;
}

/* Index of the fastest accepted candidate (by the fake's times), skipping
** those marked in skip. */
static int fastest(const fake *f, const sfa_kernel_spec *c, int n, const int *skip) {
  int best = -1;
  for (int i = 0; i < n; i++) {
    int t = tile_index(&c[i]);
    if (skip && skip[t]) continue;
    if (best < 0 || f->ms[t] < f->ms[tile_index(&c[best])]) best = i;
  }
  return best;
}

static sfa__tune_result run_ok(const sfa_kernel_spec *c, int n, const sfa__tune_ops *o, fake *f) {
  sfa__tune_result r;
  char err[512] = "";
  ck_assert_msg(sfa__tune_run(c, n, o, f, &r, err, sizeof err) == SFA_OK, "%s", err);
  ck_assert_int_eq(r.n, n);
  ck_assert_ptr_nonnull(r.entries);
  ck_assert(memcmp(&r.best, &c[r.winner], sizeof r.best) == 0);
  return r;
}

/* ---------------------------------------------------------------- selection */

START_TEST(fastest_is_picked) {
  int n;
  sfa_kernel_spec *c = cands_of(cls(SFA_MODE_DENSE, SFA_DTYPE_BF16, 64, 90, 0), &n);
  fake f;
  fake_init(&f, c, n, 2);
  sfa__tune_ops o = ops_of(2, 5);
  int want = fastest(&f, c, n, NULL);
  ck_assert_int_gt(want, 0);
  ck_assert(f.ms[tile_index(&c[want])] < 0.98 * f.ms[tile_index(&c[0])]);
  sfa__tune_result r = run_ok(c, n, &o, &f);
  ck_assert_int_eq(r.winner, want);
  ck_assert_double_eq_tol(r.best_ms, f.ms[tile_index(&c[want])], 1e-6);
  ck_assert_double_eq_tol(r.default_ms, f.ms[tile_index(&c[0])], 1e-6);
  for (int i = 0; i < n; i++) {
    int t = tile_index(&c[i]);
    ck_assert_int_eq(r.entries[i].status, SFA__TUNE_OK);
    ck_assert_str_eq(r.entries[i].reason, "");
    ck_assert_double_eq_tol(r.entries[i].median_ms, f.ms[t], 1e-6);
    ck_assert_int_eq(f.calls[t], 2 + 5);
    ck_assert_int_eq(f.prepared[t], 1);
    ck_assert_int_eq(f.diffed[t], i == 0 ? 0 : 1); /* the default is the reference */
  }
  ck_assert_int_eq(f.progress_calls, n);
  ck_assert_int_eq(f.progress_last, n - 1);
  sfa__tune_result_free(&r);
  ck_assert_ptr_null(r.entries);
  free(c);
}
END_TEST

START_TEST(output_beyond_tolerance_is_rejected) {
  int n;
  sfa_kernel_spec *c = cands_of(cls(SFA_MODE_HASH, SFA_DTYPE_FP16, 128, 90, 0), &n);
  fake f;
  fake_init(&f, c, n, 1);
  sfa__tune_ops o = ops_of(1, 3);
  f.ms[tile_index(&c[0])] = 10.0; /* every other candidate is faster */
  int skip[NTILES] = {0};
  int first = fastest(&f, c, n, NULL);
  f.rel[tile_index(&c[first])] = 0.05; /* > 1e-2 */
  skip[tile_index(&c[first])] = 1;
  int second = fastest(&f, c, n, skip);
  f.rel[tile_index(&c[second])] = NAN;
  skip[tile_index(&c[second])] = 1;
  int third = fastest(&f, c, n, skip);
  f.diff_rc[tile_index(&c[third])] = 3;
  skip[tile_index(&c[third])] = 1;
  int fourth = fastest(&f, c, n, skip);
  f.rel[tile_index(&c[fourth])] = 0.01; /* exactly the tolerance: accepted */
  ck_assert(first > 0 && second > 0 && third > 0 && fourth > 0);
  sfa__tune_result r = run_ok(c, n, &o, &f);
  ck_assert_int_eq(r.winner, fourth);
  ck_assert_int_eq(r.entries[first].status, SFA__TUNE_REJECTED);
  ck_assert_msg(strstr(r.entries[first].reason, "differs") != NULL, "%s", r.entries[first].reason);
  ck_assert_double_eq_tol(r.entries[first].rel_diff, 0.05, 1e-12);
  ck_assert_int_eq(f.calls[tile_index(&c[first])], 0); /* not timed */
  ck_assert_int_eq(r.entries[second].status, SFA__TUNE_REJECTED);
  ck_assert_int_eq(r.entries[third].status, SFA__TUNE_REJECTED);
  ck_assert_msg(strstr(r.entries[third].reason, "output check failed") != NULL, "%s",
                r.entries[third].reason);
  ck_assert_int_eq(r.entries[fourth].status, SFA__TUNE_OK);
  ck_assert(isnan(r.entries[first].median_ms));
  sfa__tune_result_free(&r);
  free(c);
}
END_TEST

START_TEST(prepare_failure_is_skipped) {
  int n;
  sfa_kernel_spec *c = cands_of(cls(SFA_MODE_DENSE, SFA_DTYPE_BF16, 128, 90, SFA_FEAT_CAUSAL), &n);
  fake f;
  fake_init(&f, c, n, 1);
  sfa__tune_ops o = ops_of(1, 3);
  f.ms[tile_index(&c[0])] = 10.0; /* every other candidate is faster */
  int skip[NTILES] = {0};
  int first = fastest(&f, c, n, NULL);
  f.prepare_rc[tile_index(&c[first])] = SFA_ERR_COMPILE;
  skip[tile_index(&c[first])] = 1;
  int second = fastest(&f, c, n, skip);
  sfa__tune_result r = run_ok(c, n, &o, &f);
  ck_assert_int_eq(r.winner, second);
  ck_assert_int_eq(r.entries[first].status, SFA__TUNE_SKIPPED);
  ck_assert_msg(strstr(r.entries[first].reason, "compile error") != NULL, "%s",
                r.entries[first].reason);
  ck_assert_str_eq(sfa__tune_status_name(r.entries[first].status), "skipped");
  ck_assert_int_eq(f.calls[tile_index(&c[first])], 0);
  ck_assert_int_eq(f.diffed[tile_index(&c[first])], 0);
  sfa__tune_result_free(&r);
  free(c);
}
END_TEST

START_TEST(failed_or_non_finite_runs_are_rejected) {
  int n;
  sfa_kernel_spec *c = cands_of(cls(SFA_MODE_WINDOW, SFA_DTYPE_BF16, 64, 90, SFA_FEAT_CAUSAL), &n);
  fake f;
  fake_init(&f, c, n, 2);
  sfa__tune_ops o = ops_of(2, 4);
  f.ms[tile_index(&c[0])] = 10.0; /* every other candidate is faster */
  int skip[NTILES] = {0};
  int first = fastest(&f, c, n, NULL);
  f.nan_rep[tile_index(&c[first])] = 3;
  skip[tile_index(&c[first])] = 1;
  int second = fastest(&f, c, n, skip);
  f.run_rc[tile_index(&c[second])] = SFA_ERR_CUDA;
  skip[tile_index(&c[second])] = 1;
  int third = fastest(&f, c, n, skip);
  sfa__tune_result r = run_ok(c, n, &o, &f);
  ck_assert_int_eq(r.winner, third);
  ck_assert_int_eq(r.entries[first].status, SFA__TUNE_REJECTED);
  ck_assert_msg(strstr(r.entries[first].reason, "time") != NULL, "%s", r.entries[first].reason);
  ck_assert_int_eq(r.entries[second].status, SFA__TUNE_REJECTED);
  ck_assert_msg(strstr(r.entries[second].reason, "CUDA") != NULL, "%s", r.entries[second].reason);
  sfa__tune_result_free(&r);
  free(c);
}
END_TEST

/* Within 2% the default is kept; beyond, the candidate wins. */
START_TEST(noise_rule_keeps_the_default) {
  int n;
  sfa_kernel_spec *c = cands_of(cls(SFA_MODE_DENSE, SFA_DTYPE_BF16, 64, 90, 0), &n);
  fake f;
  sfa__tune_ops o = ops_of(0, 3);
  const double factors[] = {0.985, 0.9801, 1.0, 0.975, 0.95};
  const int default_wins[] = {1, 1, 1, 0, 0};
  for (int k = 0; k < 5; k++) {
    fake_init(&f, c, n, 0);
    for (int i = 1; i < n; i++) f.ms[tile_index(&c[i])] = 3.0; /* all slower */
    f.ms[tile_index(&c[0])] = 2.0;
    f.ms[tile_index(&c[n - 1])] = 2.0 * factors[k];
    sfa__tune_result r = run_ok(c, n, &o, &f);
    ck_assert_msg(r.winner == (default_wins[k] ? 0 : n - 1), "factor %g: winner %d", factors[k],
                  r.winner);
    ck_assert_double_eq_tol(r.default_ms, 2.0, 1e-6);
    sfa__tune_result_free(&r);
  }
  /* equal non-default times: the earlier candidate wins */
  fake_init(&f, c, n, 0);
  for (int i = 1; i < n; i++) f.ms[tile_index(&c[i])] = 1.0;
  sfa__tune_result r = run_ok(c, n, &o, &f);
  ck_assert_int_eq(r.winner, 1);
  sfa__tune_result_free(&r);
  free(c);
}
END_TEST

/* One huge outlier per candidate (the first timed rep) and absurd warm-up
** times: the median of the reps decides, not the mean. */
START_TEST(median_over_reps_is_used) {
  int n;
  sfa_kernel_spec *c = cands_of(cls(SFA_MODE_DENSE, SFA_DTYPE_FP16, 128, 80, 0), &n);
  fake f;
  fake_init(&f, c, n, 3);
  f.outlier = 5000.0;
  sfa__tune_ops o = ops_of(3, 5);
  int want = fastest(&f, c, n, NULL);
  sfa__tune_result r = run_ok(c, n, &o, &f);
  ck_assert_int_eq(r.winner, want);
  for (int i = 0; i < n; i++)
    ck_assert_double_eq_tol(r.entries[i].median_ms, f.ms[tile_index(&c[i])], 1e-6);
  sfa__tune_result_free(&r);
  /* even reps: the mean of the two middle values */
  fake_init(&f, c, n, 0);
  f.outlier = 5000.0;
  o = ops_of(0, 2);
  r = run_ok(c, n, &o, &f);
  ck_assert_double_eq_tol(r.entries[0].median_ms, (5000.0 + f.ms[tile_index(&c[0])]) / 2, 1e-3);
  sfa__tune_result_free(&r);
  free(c);
}
END_TEST

START_TEST(unusable_default_fails) {
  int n;
  sfa_kernel_spec *c = cands_of(cls(SFA_MODE_DENSE, SFA_DTYPE_BF16, 128, 90, 0), &n);
  fake f;
  fake_init(&f, c, n, 0);
  sfa__tune_ops o = ops_of(0, 3);
  f.prepare_rc[tile_index(&c[0])] = SFA_ERR_COMPILE;
  sfa__tune_result r;
  char err[512] = "";
  ck_assert_int_eq(sfa__tune_run(c, n, &o, &f, &r, err, sizeof err), SFA_ERR_COMPILE);
  ck_assert_msg(strstr(err, "heuristic default") && strstr(err, "sfa_fwd_dense_ws_bf16_d128"), "%s",
                err);
  ck_assert_int_eq(r.entries[0].status, SFA__TUNE_SKIPPED);
  ck_assert_int_eq(r.entries[1].status, SFA__TUNE_NOT_RUN);
  ck_assert_int_eq(f.prepared[tile_index(&c[1])], 0);
  sfa__tune_result_free(&r);

  fake_init(&f, c, n, 0);
  f.nan_rep[tile_index(&c[0])] = 1;
  ck_assert_int_eq(sfa__tune_run(c, n, &o, &f, &r, err, sizeof err), SFA_ERR_INTERNAL);
  ck_assert_msg(strstr(err, "time") != NULL, "%s", err);
  sfa__tune_result_free(&r);
  free(c);
}
END_TEST

START_TEST(a_single_candidate_and_no_optional_ops) {
  sfa_kernel_spec c = cls(SFA_MODE_DENSE, SFA_DTYPE_BF16, 128, 90, 0);
  ck_assert_int_eq(sfa_spec_default(&c, NULL, 0), SFA_OK);
  fake f;
  fake_init(&f, &c, 1, 0);
  sfa__tune_ops o = {NULL, fk_run, NULL, 0.0, 0, 1, NULL};
  sfa__tune_result r = run_ok(&c, 1, &o, &f);
  ck_assert_int_eq(r.winner, 0);
  ck_assert_double_eq_tol(r.best_ms, base_ms(&c), 1e-6);
  sfa__tune_result_free(&r);
}
END_TEST

START_TEST(bad_arguments) {
  sfa_kernel_spec c = cls(SFA_MODE_DENSE, SFA_DTYPE_BF16, 128, 90, 0);
  ck_assert_int_eq(sfa_spec_default(&c, NULL, 0), SFA_OK);
  fake f;
  fake_init(&f, &c, 1, 0);
  sfa__tune_result r;
  char err[256];
  sfa__tune_ops o = ops_of(0, 0);
  ck_assert_int_eq(sfa__tune_run(&c, 1, &o, &f, &r, err, sizeof err), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(err, "reps") != NULL, "%s", err);
  o = ops_of(-1, 3);
  ck_assert_int_eq(sfa__tune_run(&c, 1, &o, &f, &r, err, sizeof err), SFA_ERR_INVALID_ARGUMENT);
  o = ops_of(0, 3);
  o.tolerance = NAN;
  ck_assert_int_eq(sfa__tune_run(&c, 1, &o, &f, &r, err, sizeof err), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(err, "tolerance") != NULL, "%s", err);
  o = ops_of(0, 3);
  o.run = NULL;
  ck_assert_int_eq(sfa__tune_run(&c, 1, &o, &f, &r, err, sizeof err), SFA_ERR_INVALID_ARGUMENT);
  o = ops_of(0, 3);
  ck_assert_int_eq(sfa__tune_run(&c, 0, &o, &f, &r, err, sizeof err), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_int_eq(sfa__tune_run(NULL, 1, &o, &f, &r, err, sizeof err), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_int_eq(sfa__tune_run(&c, 1, &o, &f, NULL, err, sizeof err), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_ptr_null(r.entries);
  sfa__tune_result_free(&r);
  sfa__tune_result_free(NULL);
}
END_TEST

/* ---------------------------------------------------------------- db glue */

START_TEST(pick_and_row_from_the_db) {
  const char *dir = tu_mkdtemp();
  char dirc[512], err[512] = "";
  snprintf(dirc, sizeof dirc, "%s", dir);
  sfa_tunedb *db = NULL;
  ck_assert_int_eq(sfa_tunedb_open(&db, dirc, "Fake GPU", 90, 1, err, sizeof err), SFA_OK);

  /* tune with the fake, record the winner */
  int n;
  sfa_kernel_spec base = cls(SFA_MODE_DENSE, SFA_DTYPE_BF16, 64, 90, SFA_FEAT_CAUSAL);
  sfa_kernel_spec *c = cands_of(base, &n);
  fake f;
  fake_init(&f, c, n, 0);
  sfa__tune_ops o = ops_of(0, 3);
  sfa__tune_result r = run_ok(c, n, &o, &f);
  ck_assert_int_gt(r.winner, 0);
  sfa_tune_key key;
  ck_assert_int_eq(sfa_tunedb_make_key(&key, "Fake GPU", 90, &base, 4096, 4096, 32, err, sizeof err),
                   SFA_OK);
  sfa_tune_row row;
  sfa__tune_make_row(&key, &r, &row);
  ck_assert_double_eq_tol(row.time_us, r.best_ms * 1000, 1e-6);
  ck_assert_double_eq_tol(row.default_time_us, r.default_ms * 1000, 1e-6);
  ck_assert_msg(sfa_tunedb_put(db, &row, err, sizeof err) == SFA_OK, "%s", err);

  /* policy cached: a hit uses the db's config, a miss the default */
  sfa_kernel_spec s = base;
  int from_db = -1;
  ck_assert_int_eq(sfa__tune_pick(db, &key, &s, &from_db, err, sizeof err), SFA_OK);
  ck_assert_int_eq(from_db, 1);
  ck_assert(memcmp(&s, &r.best, sizeof s) == 0);
  sfa_tune_key other = key;
  snprintf(other.bucket, sizeof other.bucket, "tq8192_tk8192_bh32");
  s = base;
  ck_assert_int_eq(sfa__tune_pick(db, &other, &s, &from_db, err, sizeof err), SFA_OK);
  ck_assert_int_eq(from_db, 0);
  ck_assert(memcmp(&s, &c[0], sizeof s) == 0);
  s = base;
  ck_assert_int_eq(sfa__tune_pick(NULL, &key, &s, &from_db, err, sizeof err), SFA_OK);
  ck_assert_int_eq(from_db, 0);

  /* a row that does not fit this arch (sm_86 shared memory) falls back */
  sfa_kernel_spec b86 = cls(SFA_MODE_DENSE, SFA_DTYPE_BF16, 256, 86, 0);
  sfa_tunedb *db86 = NULL;
  ck_assert_int_eq(sfa_tunedb_open(&db86, dirc, "Fake GPU", 86, 1, err, sizeof err), SFA_OK);
  ck_assert_int_eq(sfa_tunedb_make_key(&key, "Fake GPU", 86, &b86, 1024, 1024, 8, err, sizeof err),
                   SFA_OK);
  memset(&row, 0, sizeof row);
  row.key = key;
  row.cfg = (sfa_tune_config){64, 128, 4, 2, 0};
  row.time_us = row.default_time_us = 10;
  ck_assert_msg(sfa_tunedb_put(db86, &row, err, sizeof err) == SFA_OK, "%s", err);
  s = b86;
  ck_assert_int_eq(sfa__tune_pick(db86, &key, &s, &from_db, err, sizeof err), SFA_OK);
  ck_assert_int_eq(from_db, 0);
  ck_assert_int_eq(sfa_spec_validate(&s, NULL, 0), SFA_OK);
  /* an invalid class is an error */
  s = base;
  s.head_dim = 40;
  ck_assert_int_eq(sfa__tune_pick(db, &key, &s, &from_db, err, sizeof err),
                   SFA_ERR_INVALID_ARGUMENT);

  sfa__tune_result_free(&r);
  free(c);
  sfa_tunedb_close(db);
  sfa_tunedb_close(db86);
  tu_rm_rf(dirc);
}
END_TEST

static Suite *autotune_suite(void) {
  Suite *s = suite_create("autotune");
  TCase *tc = tcase_create("autotune");
  tcase_add_test(tc, candidates_valid_default_first_unique);
  tcase_add_test(tc, wgmma_candidates_for_sm90_fwd_and_bwd);
  tcase_add_test(tc, the_key_lengths_default_leads_the_candidates);
  tcase_add_test(tc, candidates_of_an_invalid_class_fail);
  tcase_add_test(tc, fastest_is_picked);
  tcase_add_test(tc, output_beyond_tolerance_is_rejected);
  tcase_add_test(tc, prepare_failure_is_skipped);
  tcase_add_test(tc, failed_or_non_finite_runs_are_rejected);
  tcase_add_test(tc, noise_rule_keeps_the_default);
  tcase_add_test(tc, median_over_reps_is_used);
  tcase_add_test(tc, unusable_default_fails);
  tcase_add_test(tc, a_single_candidate_and_no_optional_ops);
  tcase_add_test(tc, bad_arguments);
  tcase_add_test(tc, pick_and_row_from_the_db);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return tu_run_suite(autotune_suite()); }
