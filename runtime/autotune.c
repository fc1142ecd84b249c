/*
** autotune.c -- the autotuner's core (see autotune.h): candidate tile configs,
** the timing loop (warm-up, median of reps), output checks against the
** heuristic default, the 2% noise rule, and the policy "cached" lookup. The GPU
** work (compile, launch with CUDA events, compare outputs) comes in through
** sfa__tune_ops.
*/
#include "runtime/autotune.h"
#include "gen/gen_internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_REPS 100000

/* ------------------------------------------------------------ candidates */

sfa_status sfa__tune_candidates(const sfa_kernel_spec *base, sfa_kernel_spec **out, int *n,
                                char *err, size_t errlen) {
  static const int BM[] = {64, 128}, BN[] = {32, 64, 128}, W[] = {4, 8}, S[] = {1, 2};
  if (!base || !out || !n)
    return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT, "sfa__tune_candidates: NULL argument");
  *out = NULL;
  *n = 0;
  sfa_kernel_spec def = *base;
  sfa_status st = sfa_spec_default(&def, err, errlen);
  if (st != SFA_OK) return st;
  sfa_kernel_spec *v = malloc(SFA__TUNE_MAX_CANDIDATES * sizeof *v);
  if (!v) return sfa__fail(err, errlen, SFA_ERR_OUT_OF_MEMORY, "out of memory (tuning candidates)");
  int k = 0;
  v[k++] = def;
  /* Every tile with mma.sync, and on sm_90 also with wgmma and ws (validation
  ** drops what a pass, head dim or arch does not allow). */
  for (int wg = 0; wg < 2; wg++)
    for (int a = 0; a < 2; a++)
      for (int b = 0; b < 3; b++)
        for (int w = 0; w < 2; w++)
          for (int s = 0; s < 2; s++) {
            sfa_kernel_spec c = def;
            c.block_m = BM[a];
            c.block_n = BN[b];
            c.num_warps = W[w];
            c.num_stages = S[s];
            c.mma = wg ? SFA_SPEC_MMA_WGMMA : SFA_SPEC_MMA_SYNC;
            if (sfa__spec_same_config(&c, &def) || sfa_spec_validate(&c, NULL, 0) != SFA_OK)
              continue;
            v[k++] = c;
          }
  /* The warp-specialized forward (sm_90): 1, 2 or 3 consumer warpgroups (3:
  ** head_dim 64 only), 64- or 128-key tiles, 2..4 stages; the warp-
  ** specialized backward: two consumers of 64 keys (m64n128w12; at D 256 two
  ** consumers sharing 64 keys, m64n64w12), 2..4 stages where they fit. */
  for (int w = 8; w <= 16; w += 4)
    for (int b = 64; b <= 128; b += 64)
      for (int s = 2; s <= 4; s++) {
        sfa_kernel_spec c = def;
        c.block_m = def.pass == SFA_PASS_BWD ? 64 : 16 * (w - 4);
        c.block_n = b, c.num_warps = w, c.num_stages = s;
        c.mma = SFA_SPEC_MMA_WS;
        if (sfa__spec_same_config(&c, &def) || sfa_spec_validate(&c, NULL, 0) != SFA_OK) continue;
        v[k++] = c;
      }
  *out = v;
  *n = k;
  return SFA_OK;
}

/* ------------------------------------------------------------ timing */

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *t, int n) {
  qsort(t, (size_t)n, sizeof *t, cmp_double);
  return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

/* "invalid argument (1)" for an sfa_status, else "code N". */
static void code_str(int rc, char *buf, size_t n) {
  if (rc > 0 && rc <= (int)SFA_ERR_INTERNAL)
    snprintf(buf, n, "%s (%d)", sfa_status_string((sfa_status)rc), rc);
  else
    snprintf(buf, n, "code %d", rc);
}

/* Warm-up and timed runs of one candidate: 0 and e->median_ms, or the code of
** the failing run (or -1 for a bad time) with e->reason. */
static int time_one(const sfa__tune_ops *ops, void *user, sfa__tune_entry *e, double *t) {
  char code[64];
  float ms = 0;
  for (int i = 0; i < ops->warmup; i++) {
    int rc = ops->run(user, &e->spec, &ms);
    if (rc) {
      code_str(rc, code, sizeof code);
      snprintf(e->reason, sizeof e->reason, "warm-up run %d failed: %s", i + 1, code);
      return rc;
    }
  }
  for (int i = 0; i < ops->reps; i++) {
    ms = NAN;
    int rc = ops->run(user, &e->spec, &ms);
    if (rc) {
      code_str(rc, code, sizeof code);
      snprintf(e->reason, sizeof e->reason, "timed run %d failed: %s", i + 1, code);
      return rc;
    }
    if (!isfinite(ms) || ms < 0) {
      snprintf(e->reason, sizeof e->reason, "timed run %d gave a time of %g ms", i + 1, ms);
      return -1;
    }
    t[i] = ms;
  }
  e->median_ms = median(t, ops->reps);
  if (!(e->median_ms > 0)) {
    snprintf(e->reason, sizeof e->reason, "median time %g ms is not positive", e->median_ms);
    return -1;
  }
  return 0;
}

/* Prepare, check and time candidate i; fills e. Returns 0 when accepted, else
** the failing callback's code (-1 for a bad value). */
static int try_candidate(const sfa__tune_ops *ops, void *user, int i, sfa__tune_entry *e,
                         double *t) {
  char code[64];
  int rc;
  if (ops->prepare && (rc = ops->prepare(user, &e->spec)) != 0) {
    code_str(rc, code, sizeof code);
    e->status = SFA__TUNE_SKIPPED;
    snprintf(e->reason, sizeof e->reason, "prepare (compile/load) failed: %s", code);
    return rc;
  }
  if (i > 0 && ops->output_diff) {
    double rel = NAN;
    if ((rc = ops->output_diff(user, &e->spec, &rel)) != 0) {
      code_str(rc, code, sizeof code);
      e->status = SFA__TUNE_REJECTED;
      snprintf(e->reason, sizeof e->reason, "output check failed: %s", code);
      return rc;
    }
    e->rel_diff = rel;
    if (!(rel <= ops->tolerance)) { /* NaN fails too */
      e->status = SFA__TUNE_REJECTED;
      snprintf(e->reason, sizeof e->reason,
               "output differs from the default's: relative difference %.3g > tolerance %.3g",
               rel, ops->tolerance);
      return -1;
    }
  }
  if ((rc = time_one(ops, user, e, t)) != 0) {
    e->status = SFA__TUNE_REJECTED;
    return rc;
  }
  e->status = SFA__TUNE_OK;
  return 0;
}

sfa_status sfa__tune_run(const sfa_kernel_spec *cands, int n, const sfa__tune_ops *ops,
                         void *user, sfa__tune_result *res, char *err, size_t errlen) {
  const sfa_status bad = SFA_ERR_INVALID_ARGUMENT;
  char name[SFA__NAME_MAX];
  if (!res) return sfa__fail(err, errlen, bad, "sfa__tune_run: res is NULL");
  memset(res, 0, sizeof *res);
  res->best_ms = res->default_ms = NAN;
  if (!cands || n < 1) return sfa__fail(err, errlen, bad, "sfa__tune_run: no candidates");
  if (!ops || !ops->run) return sfa__fail(err, errlen, bad, "sfa__tune_run: ops->run is NULL");
  if (ops->reps < 1 || ops->reps > MAX_REPS || ops->warmup < 0 || ops->warmup > MAX_REPS)
    return sfa__fail(err, errlen, bad,
                "sfa__tune_run: reps %d must be in 1..%d and warmup %d in 0..%d", ops->reps,
                MAX_REPS, ops->warmup, MAX_REPS);
  if (!isfinite(ops->tolerance) || ops->tolerance < 0)
    return sfa__fail(err, errlen, bad, "sfa__tune_run: tolerance %g must be finite and >= 0",
                ops->tolerance);
  sfa__tune_entry *ent = calloc((size_t)n, sizeof *ent);
  double *t = malloc((size_t)ops->reps * sizeof *t);
  if (!ent || !t) {
    free(ent);
    free(t);
    return sfa__fail(err, errlen, SFA_ERR_OUT_OF_MEMORY, "out of memory (tuning table)");
  }
  for (int i = 0; i < n; i++) {
    ent[i].spec = cands[i];
    ent[i].status = SFA__TUNE_NOT_RUN;
    ent[i].median_ms = NAN;
    ent[i].rel_diff = i == 0 ? 0.0 : NAN;
  }
  res->entries = ent;
  res->n = n;

  for (int i = 0; i < n; i++) {
    int rc = try_candidate(ops, user, i, &ent[i], t);
    if (ops->progress) ops->progress(user, i, n, &ent[i]);
    if (i == 0 && rc != 0) {
      free(t);
      if (sfa_spec_name(&cands[0], name, sizeof name) != SFA_OK) snprintf(name, sizeof name, "?");
      sfa_status st = (rc > 0 && rc <= (int)SFA_ERR_INTERNAL) ? (sfa_status)rc : SFA_ERR_INTERNAL;
      return sfa__fail(err, errlen, st, "autotune: the heuristic default %s is unusable: %s", name,
                  ent[0].reason);
    }
  }
  free(t);

  /* The fastest accepted non-default (the earlier one on ties) against the
  ** default with the noise margin. */
  int f = 0;
  for (int i = 1; i < n; i++)
    if (ent[i].status == SFA__TUNE_OK && (f == 0 || ent[i].median_ms < ent[f].median_ms)) f = i;
  res->default_ms = ent[0].median_ms;
  res->winner = (f > 0 && ent[f].median_ms < (1.0 - SFA__TUNE_NOISE) * res->default_ms) ? f : 0;
  res->best = ent[res->winner].spec;
  res->best_ms = ent[res->winner].median_ms;
  return SFA_OK;
}

void sfa__tune_result_free(sfa__tune_result *res) {
  if (!res) return;
  free(res->entries);
  res->entries = NULL;
  res->n = 0;
}

const char *sfa__tune_status_name(sfa__tune_status s) {
  switch (s) {
  case SFA__TUNE_OK: return "ok";
  case SFA__TUNE_SKIPPED: return "skipped";
  case SFA__TUNE_REJECTED: return "rejected";
  case SFA__TUNE_NOT_RUN: return "not run";
  }
  return "unknown";
}

/* ------------------------------------------------------------ db glue */

void sfa__tune_make_row(const sfa_tune_key *key, const sfa__tune_result *res, sfa_tune_row *row) {
  memset(row, 0, sizeof *row);
  row->key = *key;
  row->cfg = sfa_tunedb_config_of(&res->best);
  row->time_us = res->best_ms * 1000.0;
  row->default_time_us = res->default_ms * 1000.0;
  /* date stays "": sfa_tunedb_put stamps the current UTC time */
}

void sfa__tune_lead_for_keys(sfa_kernel_spec *cands, int *n, int64_t tk) {
  if (!cands || !n || *n < 1) return;
  const sfa_kernel_spec d0 = cands[0];
  if (!sfa__spec_for_keys(&cands[0], tk)) return;
  int i = 1;
  while (i < *n && !sfa__spec_same_config(&cands[i], &cands[0])) i++;
  if (i < *n) cands[i] = d0;
  else if (*n < SFA__TUNE_MAX_CANDIDATES) cands[(*n)++] = d0;
}

sfa_status sfa__tune_pick(sfa_tunedb *db, const sfa_tune_key *key, sfa_kernel_spec *spec,
                          int *from_db, char *err, size_t errlen) {
  sfa_tune_row row;
  if (from_db) *from_db = 0;
  if (!spec) return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT, "sfa__tune_pick: spec is NULL");
  sfa_status st = sfa_spec_default(spec, err, errlen);
  if (st != SFA_OK) return st;
  if (!db || !key || sfa_tunedb_lookup(db, key, &row) != SFA_OK) return SFA_OK;
  sfa_kernel_spec s = *spec;
  sfa_tunedb_config_apply(&row.cfg, &s);
  if (sfa_spec_validate(&s, NULL, 0) != SFA_OK) return SFA_OK; /* e.g. a row for another arch */
  *spec = s;
  if (from_db) *from_db = 1;
  return SFA_OK;
}
