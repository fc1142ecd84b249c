/*
** sfa_tune.h -- what the files of the sfa-tune tool share: its options, the
** sweep (runtime/sfa_tune_sweep.c) and the JIT measurements
** (runtime/sfa_tune_measure.c). Not part of the library.
*/
#ifndef SFA_RUNTIME_SFA_TUNE_H
#define SFA_RUNTIME_SFA_TUNE_H

#include "sfa.h"
#include "cache/tunedb.h"
#include "runtime/internal.h"

#define SFA__TUNE_MAX_LIST 16

typedef struct sfa__tune_opts {
  sfa_pass pass;               /* fwd (default) or bwd */
  sfa_mode modes[SFA__TUNE_MAX_LIST];
  int nmodes;
  sfa_dtype dtypes[SFA__TUNE_MAX_LIST];
  int ndtypes;
  int dims[SFA__TUNE_MAX_LIST];
  int ndims;
  long lens[SFA__TUNE_MAX_LIST];
  int nlens;
  long batch, heads, kv_heads; /* batch 0: 65536 / T */
  int causal, window, bias, mask, buckets;
  double keep;
  int warmup, reps, force;
  unsigned kinds;              /* mma kinds to time, 1 << sfa_spec_mma each; 0: all */
  const char *imports[SFA__TUNE_MAX_LIST];
  int nimports;
  const char *export_path;
  int list, measure, sweep;
  const char *gpu; /* with cc: the db's GPU without a device */
  int cc;
  int device, verbose;
  const char *cache_dir;
} sfa__tune_opts;

/* The batch of a shape: o->batch, or 65536 / T (at least 1). */
long sfa__tune_batch(const sfa__tune_opts *o, long T);

/* A tile config as sfa-tune's tables print it, "m128n64_w8s2" and the mma
** kind's name token after "_" ("_wg", "_ws"; none for mma.sync), into buf. */
void sfa__tune_tiles_str(int block_m, int block_n, int num_warps, int num_stages,
                         sfa_spec_mma mma, char *buf, size_t n);

/* Tune every shape of the grid on dev (bound in ctx), record each winner in
** db and save it after each shape; progress on stderr, the table on stdout.
** 0, or 1 when a shape failed (the others are still done). */
int sfa__tune_sweep(sfa_context *ctx, const sfa__device *dev, sfa_tunedb *db,
                    const sfa__tune_opts *o);

/* --measure: prints the figures on stdout; 0, or 1 on a failure. */
int sfa__tune_measure(sfa_context *ctx, const sfa__device *dev, const sfa__tune_opts *o);

#endif
