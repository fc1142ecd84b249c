/*
** bwd_launch.h -- internal: the backward's launch sequence for validated
** arguments and chosen kernels (workspace, preprocess, bwd, bwddq or the dq
** conversion, dbias, free), shared by sfa_backward and the tuner's timing
** runs (runtime/tune_gpu.c). Implemented in runtime/backward.c.
*/
#ifndef SFA_RUNTIME_BWD_LAUNCH_H
#define SFA_RUNTIME_BWD_LAUNCH_H

#include "runtime/internal.h"
#include "runtime/varlen.h"

/* The arguments of one backward call, as sfa_backward takes them. */
typedef struct sfa__bwd_call {
  const sfa_attention_params *params;
  const sfa_tensor *q, *k, *v;
  const sfa_extras *extras;
  const sfa_tensor *o, *lse, *dout;
  const sfa_tensor *dq, *dk, *dv, *dbias; /* dbias may be NULL */
  const sfa_tensor *dlse;                 /* dL/dlse, or NULL (sfa_backward_dlse) */
  const sfa__varlen *vl;                   /* packed sequences: the views' call (the
                                              tensors above are its views); NULL or
                                              vl->on 0 for a fixed-length call */
} sfa__bwd_call;

/* Runs the backward of c on stream with kb (a bwd kernel; deterministic when
** its flags say so) and, for the deterministic path, kdq (a bwddq kernel;
** NULL otherwise). c has passed sfa__validate_backward. */
sfa_status sfa__bwd_exec(sfa_context *ctx, const sfa__device *dev, const sfa_driver *d,
                        const sfa_kernel *kb, const sfa_kernel *kdq, const sfa__bwd_call *c,
                        CUstream stream);

/* 1 where the copy engine can address q, k, v and dout (runtime/tma.c's
** rule), which the warp-specialized backward reads through tensor maps. */
int sfa__bwd_tma_addressable(const sfa_tensor *q, const sfa_tensor *k, const sfa_tensor *v,
                             const sfa_tensor *dout);

#endif
