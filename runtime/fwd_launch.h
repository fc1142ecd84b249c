/*
** fwd_launch.h -- internal: the forward kernel's parameter block built from
** validated tensors, its launch, and the problem description the tuning
** policy needs; shared by sfa_forward and the tuner's timing launches
** (runtime/tune_gpu.c). Implemented in runtime/forward.c.
*/
#ifndef SFA_RUNTIME_FWD_LAUNCH_H
#define SFA_RUNTIME_FWD_LAUNCH_H

#include "runtime/autotune.h"
#include "runtime/internal.h"
#include "runtime/kernel_abi.h"
#include "runtime/tma.h"

/* The parameter block of a forward launch; the arguments have passed
** sfa__validate_forward (lse may be NULL, extras may be NULL where the mode
** reads none). */
void sfa__fwd_args_fill(sfa_fwd_args *a, const sfa_attention_params *params,
                        const sfa_tensor *q, const sfa_tensor *k, const sfa_tensor *v,
                        const sfa_extras *extras, const sfa_tensor *o, const sfa_tensor *lse);

/* One launch of kern with a on stream: grid, block and shared memory from
** kern->var (the grid (ceil(Tq / block_m), Hq, B)); a warp-specialized kernel
** (var.ws) also gets the tensor maps of q, k and v (runtime/tma.h). A failure
** names the kernel and the grid (message in ctx). */
sfa_status sfa__fwd_launch(sfa_context *ctx, const sfa_driver *d, const sfa_kernel *kern,
                           const sfa_fwd_args *a, CUstream stream);

/* q, k and v of a as the copy engine sees them (dtype and head_dim: the
** call's), and whether it can address all three (else the ws kernel is not
** used: sfa__problem.no_tma). */
void sfa__fwd_tma_tensors(const sfa_fwd_args *a, sfa_dtype dtype, int head_dim,
                          sfa__tma_tensor t[3]);
int sfa__fwd_tma_addressable(const sfa_fwd_args *a, sfa_dtype dtype, int head_dim);

/* The problem of a validated forward call (prob->params points at params). */
void sfa__fwd_problem(sfa__problem *prob, const sfa_attention_params *params,
                      const sfa_tensor *q, const sfa_tensor *k, const sfa_extras *extras,
                      const sfa_tensor *lse);

/* Feature flags of the forward kernel for params and extras. */
unsigned sfa__fwd_flags(const sfa_attention_params *params, const sfa_extras *extras);

#endif
