/*
** autotune.h -- internal: the autotuner's core, independent of the GPU. It
** enumerates the candidate tile configs of a problem class and picks the
** fastest one whose output agrees with the heuristic default's; compiling,
** launching, timing and comparing are callbacks (sfa__tune_ops), so the logic
** runs with a fake timer in the CPU tests and with CUDA events in the runtime.
**
** Selection rule (sfa__tune_run):
** - cands[0] is the heuristic default and the reference: it is prepared and
**   timed first; if it cannot be prepared or timed the run fails.
** - every other candidate: prepare (nonzero: skipped), output_diff against the
**   default's output (nonzero return, NaN or rel > tolerance: rejected), then
**   `warmup` untimed runs and `reps` timed runs whose MEDIAN is its time (a
**   failing run or a median that is not finite and > 0: rejected).
** - the fastest accepted candidate wins only if its median is more than
**   SFA__TUNE_NOISE (2%) below the default's: t < (1 - 0.02) * t_default.
**   Otherwise the default is kept, so that timing noise never flips a tuned
**   config to an equivalent one. Among non-default candidates of equal time the
**   earlier one in cands wins (deterministic).
*/
#ifndef SFA_RUNTIME_AUTOTUNE_H
#define SFA_RUNTIME_AUTOTUNE_H

#include <stddef.h>

#include "sfa.h"
#include "cache/tunedb.h"

#define SFA__TUNE_NOISE 0.02
#define SFA__TUNE_MAX_CANDIDATES 25 /* 2 block_m x 3 block_n x 2 warps x 2 stages, + 1 */

/* The candidate set of base's problem class: every (block_m in {64,128},
** block_n in {32,64,128}, num_warps in {4,8}, num_stages in {1,2}) that
** sfa_spec_validate accepts for base's pass, mode, dtype, head_dim, arch and
** flags (base's tile fields are ignored), the heuristic default
** (sfa_spec_default) first, no duplicates. *out is malloc'ed (release with
** free or sfa_free), *n its length (>= 1). Fails with the validator's status
** and message when the problem class itself is invalid (no default). */
sfa_status sfa__tune_candidates(const sfa_kernel_spec *base, sfa_kernel_spec **out, int *n,
                                char *err, size_t errlen);

typedef enum sfa__tune_status {
  SFA__TUNE_OK = 0,    /* timed and accepted */
  SFA__TUNE_SKIPPED,   /* prepare failed (could not compile or load) */
  SFA__TUNE_REJECTED,  /* output differs, a run failed, or the time is not usable */
  SFA__TUNE_NOT_RUN    /* not reached (the run failed before it) */
} sfa__tune_status;

typedef struct sfa__tune_entry {
  sfa_kernel_spec spec;
  sfa__tune_status status;
  double median_ms;  /* NAN when not timed */
  double rel_diff;   /* output difference vs the default; 0 for the default, NAN if unchecked */
  char reason[192];  /* why skipped or rejected; "" when ok */
} sfa__tune_entry;

typedef struct sfa__tune_ops {
  /* Compile and load s; nonzero = unusable (an sfa_status is best: it is named
  ** in the reason). May be NULL (nothing to prepare). */
  int (*prepare)(void *user, const sfa_kernel_spec *s);
  /* One timed launch of s; *ms its time. Nonzero = failed. Required. */
  int (*run)(void *user, const sfa_kernel_spec *s, float *ms);
  /* Relative difference of s's output vs the default's, the reference. Called
  ** once per non-default candidate, after its prepare and before its timed
  ** runs; the default (never passed here) has been fully timed by then, so its
  ** runs have produced the reference output. Nonzero = failed. May be NULL:
  ** no check. */
  int (*output_diff)(void *user, const sfa_kernel_spec *s, double *rel);
  double tolerance;  /* largest accepted rel, finite and >= 0 */
  int warmup;        /* untimed runs per candidate, >= 0 */
  int reps;          /* timed runs per candidate, >= 1 */
  /* Called after each candidate (index i of n) is done; may be NULL. */
  void (*progress)(void *user, int i, int n, const sfa__tune_entry *e);
} sfa__tune_ops;

typedef struct sfa__tune_result {
  int winner;              /* index into entries (0 = the default kept) */
  sfa_kernel_spec best;    /* entries[winner].spec */
  double best_ms;          /* its median */
  double default_ms;       /* the default's median */
  int n;                   /* entries, one per candidate, in cands order */
  sfa__tune_entry *entries; /* malloc'ed; sfa__tune_result_free */
} sfa__tune_result;

/* Tune over cands (cands[0] = the default). On SFA_OK *res holds the winner and
** the table; on failure (bad arguments, the default unusable, out of memory)
** err says why and *res still holds the table when one was made (entries may
** be NULL). Always release with sfa__tune_result_free. */
sfa_status sfa__tune_run(const sfa_kernel_spec *cands, int n, const sfa__tune_ops *ops,
                         void *user, sfa__tune_result *res, char *err, size_t errlen);

void sfa__tune_result_free(sfa__tune_result *res);

/* Static name of an entry status: "ok", "skipped", "rejected", "not run". */
const char *sfa__tune_status_name(sfa__tune_status s);

/* The row to record for a successful run: key, the winner's config, its and
** the default's times in microseconds, date = now. */
void sfa__tune_make_row(const sfa_tune_key *key, const sfa__tune_result *res, sfa_tune_row *row);

/* The spec to launch under policy "cached" (and "on" after a hit): *spec has
** pass, mode, dtype, head_dim, arch and flags set; its tile fields are filled
** from db's row for key if there is one and the result passes
** sfa_spec_validate for spec->arch, else with sfa_spec_default. *from_db (may
** be NULL) says which. db may be NULL (always the default). */
sfa_status sfa__tune_pick(sfa_tunedb *db, const sfa_tune_key *key, sfa_kernel_spec *spec,
                          int *from_db, char *err, size_t errlen);

#endif
