/*
** autotune.h -- internal: the autotuner's core, independent of the GPU. It
** enumerates the candidate tile configs of a problem class and picks the
** fastest one whose output agrees with the heuristic default's; compiling,
** launching, timing and comparing are callbacks (sfa__tune_ops), so the logic
** runs with a fake timer in the CPU tests and with CUDA events in the runtime.
**
** The second part of this header is the tuning policy of a launch
** (sfa__select_spec, implemented in runtime/select.c) and its hooks; the GPU
** side of the callbacks is runtime/tune_gpu.c.
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
/* 2 mma kinds x 2 block_m x 3 block_n x 2 warps x 2 stages, + ws: 3 consumer
** counts x 2 block_n x 3 stages, + 1 */
#define SFA__TUNE_MAX_CANDIDATES 67

/* The candidate set of base's problem class: every (block_m in {64,128},
** block_n in {32,64,128}, num_warps in {4,8}, num_stages in {1,2}) that
** sfa_spec_validate accepts for base's pass, mode, dtype, head_dim, arch and
** flags (base's tile fields are ignored), the heuristic default
** (sfa_spec_default) first, no duplicates. *out is malloc'ed (release with
** free or sfa_free), *n its length (>= 1). Fails with the validator's status
** and message when the problem class itself is invalid (no default). */
sfa_status sfa__tune_candidates(const sfa_kernel_spec *base, sfa_kernel_spec **out, int *n,
                                char *err, size_t errlen);
/* Puts the default of a key length tk first in cands[0..*n) (room for
** SFA__TUNE_MAX_CANDIDATES), as sfa__tune_candidates made them: where
** sfa__spec_for_keys gives other tiles than cands[0], those lead, so that a
** winner is recorded only where it beats what an untuned call runs, and the
** length-free default takes their place among the others. */
void sfa__tune_lead_for_keys(sfa_kernel_spec *cands, int *n, int64_t tk);

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

/* ------------------------------------------------------------ the policy
** (runtime/select.c: sfa_options.tune applied to a launch; runtime/tune_gpu.c:
** the timing launches on the GPU) */

struct sfa__device; /* runtime/internal.h */

/* Defaults of a tuning run inside the runtime (policy "on") and of sfa-tune. */
#define SFA__TUNE_WARMUP 3        /* untimed runs per candidate */
#define SFA__TUNE_REPS 10         /* timed runs per candidate; the median counts */
#define SFA__TUNE_HASH_BUCKETS 16 /* synthetic hash inputs: buckets per (batch, head) */
#define SFA__TUNE_QK_KEEP 0.7     /* synthetic qk_drop inputs: fraction of positions kept */

/* What a launch solves: the size bucket of the tuning key, and everything a
** tuning launch needs to rebuild the call on random inputs of the same shape.
** The caller of sfa__select_spec fills it from its validated arguments
** (sfa_forward: sfa__fwd_problem in runtime/fwd_launch.h). A backward pass
** describes its forward problem the same way (dout, dq, dk, dv have the
** shapes of o, q, k, v) and sets params->deterministic as given. */
typedef struct sfa__problem {
  const sfa_attention_params *params; /* mode, causal, window, scale, deterministic */
  int64_t B, Hq, Hkv;
  int64_t Tq, Tk;          /* the lengths the kernel sees (compacted for qk_drop) */
  int64_t keys_max;        /* the longest sequence's keys where below Tk (packed
                              sequences: sfa_extras.max_seqlen_k); 0: Tk (sfa__problem_keys) */
  int has_lse;             /* the call writes lse (so do its tuning launches) */
  int64_t bias_shape[4];   /* window: shape of the bias [B|1, Hb, Tq|1, Tk]; all 0 without */
  int64_t mask_shape[4];   /* window: shape of the mask, the same rules; all 0 without */
  int hash_buckets;        /* synthetic hash inputs; 0: SFA__TUNE_HASH_BUCKETS */
  double qk_keep;          /* synthetic qk_drop inputs, in (0, 1]; 0: SFA__TUNE_QK_KEEP */
  int64_t alibi_batches;   /* ALiBi slopes: 0 none, 1 [Hq], B [B, Hq] (synthetic slopes) */
  int no_tma;              /* fwd: the copy engine cannot address q, k or v, so a
                              warp-specialized spec (mma ws) gives way to wgmma */
} sfa__problem;

/* The key length that the tile choice reads (sfa__spec_for_keys). */
static inline int64_t sfa__problem_keys(const sfa__problem *p) {
  return p->keys_max > 0 ? p->keys_max : p->Tk;
}

/* The kernel spec of a launch under the context's policy (sfa_options.tune).
** *spec has pass, mode, dtype, head_dim, arch and flags set; the tile fields
** are filled:
**   SFA_TUNE_OFF     sfa_spec_default.
**   SFA_TUNE_CACHED  the tuning db of the device's GPU model (opened on first
**                    use, kept in the context; device name from
**                    cuDeviceGetName), key = (gpu, cc, pass, mode, dtype,
**                    head_dim, flags, size bucket of Tq, Tk, B * Hq); a row
**                    that does not validate for spec->arch, or a miss, gives
**                    the default.
**   SFA_TUNE_ON      as cached; on a miss the tuner runs on the GPU
**                    (sfa__tune_gpu: random inputs of prob's shape in scratch
**                    buffers it allocates and frees, a private stream, CUDA
**                    events, warm-up + median, outputs checked against the
**                    default's), and the winner is recorded in the db, which
**                    is saved. Only passes that sfa__tune_can_launch says the
**                    tuner can launch are tuned (fwd and bwd); for
**                    the others "on" behaves as "cached". A failed tuning run
**                    is not an error: one warning on stderr, then the default.
** The choice is memoized per (device, arch, pass, mode, dtype, head_dim, flags,
** size bucket) in the context, so after the first call of a key a call costs
** one hash lookup under a mutex: no db or file access. Tuning runs are
** serialized per context. Errors (SFA_ERR_*, message in ctx) only when the
** class has no valid default (the message names the field). */
sfa_status sfa__select_spec(sfa_context *ctx, const struct sfa__device *dev,
                            sfa_kernel_spec *spec, const sfa__problem *prob);

/* The spec of a launch: (pass, prob->params->mode, dtype, head_dim,
** dev->arch, flags) with its tiles from sfa__select_spec. */
sfa_status sfa__select_launch_spec(sfa_context *ctx, const struct sfa__device *dev,
                                   sfa_pass pass, sfa_dtype dtype, int head_dim, unsigned flags,
                                   const sfa__problem *prob, sfa_kernel_spec *spec);

/* The loaded kernel of a launch: sfa__select_launch_spec, then
** sfa__kernel_get. Used by sfa_forward and sfa_backward. */
sfa_status sfa__select_kernel(sfa_context *ctx, const struct sfa__device *dev, sfa_pass pass,
                              sfa_dtype dtype, int head_dim, unsigned flags,
                              const sfa__problem *prob, sfa_kernel **kernel);

/* 1 for the passes whose launches the tuner can time (SFA_PASS_FWD, and
** SFA_PASS_BWD: the whole backward call with that bwd kernel). */
int sfa__tune_can_launch(sfa_pass pass);

/* The outside world of sfa__select_spec, replaceable for tests (a fake
** device name and a fake tuner). */
typedef struct sfa__select_hooks {
  /* The device's name, as cuDeviceGetName gives it. */
  sfa_status (*gpu_name)(void *user, const struct sfa__device *dev, char *buf, size_t n,
                         char *err, size_t errlen);
  /* Tune base's class on prob (sfa__tune_gpu's contract); *res is released
  ** by the caller with sfa__tune_result_free. */
  sfa_status (*tune)(void *user, sfa_context *ctx, const struct sfa__device *dev,
                     const sfa_kernel_spec *base, const sfa__problem *prob,
                     sfa__tune_result *res, char *err, size_t errlen);
  void *user;
} sfa__select_hooks;

/* Replace the hooks of ctx (NULL: back to the real ones). Call before the
** context is used from several threads. */
void sfa__select_set_hooks(sfa_context *ctx, const sfa__select_hooks *hooks);

/* Counters of a context's selections, for tests and diagnostics. */
typedef struct sfa__select_stats {
  unsigned long calls;     /* sfa__select_spec calls under cached / on */
  unsigned long memo_hits; /* answered from the memo */
  unsigned long db_opens;  /* tuning dbs opened (file reads) */
  unsigned long db_hits;   /* memo misses answered by a db row */
  unsigned long tunes;     /* tuning runs started */
  unsigned long tune_failures;
  unsigned long db_saves;  /* successful db saves */
} sfa__select_stats;

void sfa__select_get_stats(sfa_context *ctx, sfa__select_stats *out);

/* The per-context state (memo, dbs, hooks); context.c creates and frees it. */
typedef struct sfa__select sfa__select;
sfa_status sfa__select_create(sfa__select **out);
void sfa__select_free(sfa__select *s);

#endif
