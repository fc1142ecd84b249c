/*
** tune_gpu.h -- internal: the autotuner on a real GPU. Builds random inputs
** of a problem's shape in scratch device buffers (never the caller's),
** compiles and loads each candidate through the context (sfa__kernel_get:
** AOT kernel dirs, disk cache, NVRTC), times launches with CUDA events on a
** private stream, checks each candidate's output against the heuristic
** default's, and frees everything before it returns. The selection rule is
** sfa__tune_run's (autotune.h).
**
** Synthetic inputs: q, k, v (and a window bias) standard normal; hash mode:
** per (batch, head) random buckets in [0, hash_buckets), sorted by (bucket,
** position) as sfa_hash_prepare would; qk_drop: strictly increasing
** positions, a fraction qk_keep of an original length; window mask: each
** element 1 with probability 1/2.
**
** The output check: rel = max over elements of |o - o_default| / (|o_default|
** + rms(o_default)) (and the same for lse with 1 in place of the rms); NaN
** anywhere (the outputs are poisoned before each check) rejects a candidate.
** Tolerance SFA__TUNE_TOL_BF16 or SFA__TUNE_TOL_FP16.
**
** Not safe inside CUDA stream capture: it allocates memory and uses the
** legacy default stream for copies.
*/
#ifndef SFA_RUNTIME_TUNE_GPU_H
#define SFA_RUNTIME_TUNE_GPU_H

#include "runtime/autotune.h"
#include "runtime/internal.h"

#define SFA__TUNE_TOL_BF16 0.05
#define SFA__TUNE_TOL_FP16 0.01

/* Tune base's class (pass, mode, dtype, head_dim, arch, flags; tile fields
** ignored) on prob in the bound device dev (sfa__bind). Only passes for which
** sfa__tune_can_launch is 1 (SFA_ERR_UNSUPPORTED otherwise). progress may be
** NULL (it is called with user). kinds: the mma kinds whose candidates are
** timed, bit 1 << sfa_spec_mma each (0: every kind); the default config is
** timed whatever its kind (the outputs are checked against it). On SFA_OK
** *res holds the table and winner; release with sfa__tune_result_free in
** every case. */
sfa_status sfa__tune_gpu(sfa_context *ctx, const sfa__device *dev, const sfa_kernel_spec *base,
                         const sfa__problem *prob, int warmup, int reps, unsigned kinds,
                         void (*progress)(void *user, int i, int n, const sfa__tune_entry *e),
                         void *user, sfa__tune_result *res, char *err, size_t errlen);

/* Scratch bytes that sfa__tune_gpu allocates for prob and dtype (for
** messages and the sweep's memory check). */
size_t sfa__tune_gpu_scratch_bytes(const sfa__problem *prob, sfa_dtype dtype, int head_dim);

#endif
