/*
** forward.c -- sfa_forward: validates every argument (runtime/validate.c,
** before the driver is touched, so bad input is reported the same way on any
** machine), picks the kernel spec for the mode and its features under the
** context's tuning policy (sfa__select_spec), gets the kernel from the context
** and launches it on the caller's stream with one sfa_fwd_args parameter
** block, its threads, shared memory and grid taken from the kernel's variant
** descriptor (gen/variant.h: one CTA per query tile of a (batch, head)). The
** parameter block and the launch are shared with the tuner
** (runtime/fwd_launch.h).
*/
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "gen/mode.h"
#include "runtime/fwd_launch.h"
#include "runtime/mode_args.h"
#include "runtime/tma.h"
#include "runtime/validate.h"
#include "runtime/varlen.h"

/* ------------------------------------------------------------ launch */

/* Feature flags of the kernel for this call (the mode table's rule): causal
** where the mode takes it (qk_drop and hash do not: their causality q_idx >=
** k_idx is intrinsic, so params->causal does not matter there), bias and mask
** where given. */
unsigned sfa__fwd_flags(const sfa_attention_params *p, const sfa_extras *ex) {
  const sfa__mode *m = sfa__mode_find(p->mode);
  return m ? sfa__mode_call_flags(m, p, ex) : 0u;
}

void sfa__fwd_args_fill(sfa_fwd_args *a, const sfa_attention_params *params,
                        const sfa_tensor *q, const sfa_tensor *k, const sfa_tensor *v,
                        const sfa_extras *extras, const sfa_tensor *o, const sfa_tensor *lse) {
  int D = (int)q->shape[3];
  float scale = params->scale > 0 ? params->scale : (float)(1.0 / sqrt((double)D));
  memset(a, 0, sizeof *a);
  a->q = (uint64_t)(uintptr_t)q->data;
  a->k = (uint64_t)(uintptr_t)k->data;
  a->v = (uint64_t)(uintptr_t)v->data;
  a->o = (uint64_t)(uintptr_t)o->data;
  a->q_sb = q->strides[0], a->q_sh = q->strides[1], a->q_st = q->strides[2];
  a->k_sb = k->strides[0], a->k_sh = k->strides[1], a->k_st = k->strides[2];
  a->v_sb = v->strides[0], a->v_sh = v->strides[1], a->v_st = v->strides[2];
  a->o_sb = o->strides[0], a->o_sh = o->strides[1], a->o_st = o->strides[2];
  if (lse) {
    a->lse = (uint64_t)(uintptr_t)lse->data;
    a->lse_sb = lse->strides[0], a->lse_sh = lse->strides[1];
  }
  a->batch = (int32_t)q->shape[0];
  a->hq = (int32_t)q->shape[1];
  a->hkv = (int32_t)k->shape[1];
  a->tq = (int32_t)q->shape[2];
  a->tk = (int32_t)k->shape[2];
  a->scale = scale;
  a->scale_log2 = (float)((double)scale * 1.4426950408889634);
  SFA__FILL_MODE_ARGS(a, params, extras);
}

void sfa__fwd_tma_tensors(const sfa_fwd_args *a, sfa_dtype dtype, int head_dim,
                          sfa__tma_tensor t[3]) {
  const uint64_t data[3] = {a->q, a->k, a->v};
  const int64_t heads[3] = {a->hq, a->hkv, a->hkv}, lens[3] = {a->tq, a->tk, a->tk};
  const int64_t sb[3] = {a->q_sb, a->k_sb, a->v_sb}, sh[3] = {a->q_sh, a->k_sh, a->v_sh};
  const int64_t st[3] = {a->q_st, a->k_st, a->v_st};
  /* packed sequences: one batch of the total rows (tq, tk are the totals;
  ** batch counts the sequences, whose batch strides are 0) */
  const int64_t B = a->cu_q ? 1 : a->batch;
  for (int i = 0; i < 3; i++)
    t[i] = (sfa__tma_tensor){.data = data[i], .dtype = dtype, .B = B, .H = heads[i],
                             .T = lens[i], .D = head_dim, .sb = sb[i], .sh = sh[i], .st = st[i]};
}

int sfa__fwd_tma_addressable(const sfa_fwd_args *a, sfa_dtype dtype, int head_dim) {
  sfa__tma_tensor t[3];
  sfa__fwd_tma_tensors(a, dtype, head_dim, t);
  return sfa__tma_all_addressable(t, 3);
}

sfa_status sfa__fwd_launch(sfa_context *ctx, const sfa_driver *d, const sfa_kernel *kern,
                           const sfa_fwd_args *a, CUstream stream) {
  const sfa__variant *v = &kern->var;
  const sfa__grid_dims dims = {.batch = a->batch, .hq = a->hq, .hkv = a->hkv, .tq = a->tq,
                               .tk = a->tk};
  unsigned g[3];
  sfa__grid_size(&v->grid, &dims, g);
  sfa_fwd_args copy = *a; /* cuLaunchKernel takes non-const pointers */
  void *kp[4] = {&copy};
  CUtensorMap maps[3]; /* ws: the tensor maps of q, k and v, after the block */
  if (v->ws) {
    sfa__tma_tensor t[3];
    sfa__fwd_tma_tensors(a, v->spec.dtype, v->spec.head_dim, t);
    const int rows[3] = {v->spec.block_m, v->spec.block_n, v->spec.block_n};
    sfa_status st = sfa__tma_params(d, t, rows, 3, v->box_cols, maps, kp + 1, ctx->err,
                                    sizeof ctx->err);
    if (st != SFA_OK) return st;
  }
  CUresult r = d->cuLaunchKernel(kern->fn, g[0], g[1], g[2], (unsigned)v->threads, 1, 1,
                                 (unsigned)v->smem_bytes, stream, kp, NULL);
  if (r != CUDA_SUCCESS) {
    char what[SFA__KERNEL_NAME + 64];
    snprintf(what, sizeof what, "cuLaunchKernel(%s, grid %ux%ux%u)", kern->name, g[0], g[1],
             g[2]);
    return sfa__cuda_error(r, what, ctx->err, sizeof ctx->err);
  }
  return SFA_OK;
}

void sfa__fwd_problem(sfa__problem *prob, const sfa_attention_params *params,
                      const sfa_tensor *q, const sfa_tensor *k, const sfa_extras *extras,
                      const sfa_tensor *lse) {
  memset(prob, 0, sizeof *prob);
  prob->params = params;
  prob->B = q->shape[0];
  prob->Hq = q->shape[1];
  prob->Hkv = k->shape[1];
  prob->Tq = q->shape[2];
  prob->Tk = k->shape[2];
  prob->has_lse = lse != NULL;
  if (extras) { /* validated: only a mode that reads them has them */
    for (int i = 0; i < 4; i++) {
      if (extras->bias) prob->bias_shape[i] = extras->bias->shape[i];
      if (extras->mask) prob->mask_shape[i] = extras->mask->shape[i];
    }
    if (extras->alibi_slopes) prob->alibi_batches = extras->alibi_slopes->rank == 2 ? prob->B : 1;
    if (extras->max_seqlen_k > 0 && extras->max_seqlen_k < prob->Tk) prob->keys_max = extras->max_seqlen_k;
  }
}

sfa_status sfa_forward(sfa_context *ctx, const sfa_attention_params *params,
                       const sfa_tensor *q, const sfa_tensor *k, const sfa_tensor *v,
                       const sfa_extras *extras, const sfa_tensor *o,
                       const sfa_tensor *lse, void *stream) {
  if (!ctx) return SFA_ERR_INVALID_ARGUMENT;
  /* Packed sequences: their checks, then the views of one batch of the
  ** totals (runtime/varlen.h) for the fixed-length checks and blocks. */
  sfa__varlen vl;
  const sfa__varlen_call vc = {&q, &k, &v, &o, &lse, NULL, NULL, NULL, NULL, &extras, NULL};
  sfa_status st = q && k && v && o ? sfa__varlen_prepare(ctx, params, &vc, &vl) : SFA_OK;
  if (st == SFA_OK) st = sfa__validate_forward(ctx, params, q, k, v, extras, o, lse);
  if (st != SFA_OK) return st;

  sfa__device dev;
  if ((st = sfa__bind(ctx, &dev)) != SFA_OK) return st;
  const sfa_driver *d;
  if ((st = sfa__driver_load(&d, ctx->err, sizeof ctx->err)) != SFA_OK) return st;

  sfa_fwd_args a;
  sfa__fwd_args_fill(&a, params, q, k, v, extras, o, lse);
  SFA__VARLEN_ARGS(&a, &vl);

  sfa__problem prob;
  sfa__fwd_problem(&prob, params, q, k, extras, lse);
  prob.no_tma = !sfa__fwd_tma_addressable(&a, q->dtype, (int)q->shape[3]);
  sfa_kernel *kern;
  if ((st = sfa__select_kernel(ctx, &dev, SFA_PASS_FWD, q->dtype, (int)q->shape[3],
                               sfa__fwd_flags(params, extras), &prob, &kern)) != SFA_OK)
    return st;
  return sfa__fwd_launch(ctx, d, kern, &a, (CUstream)stream);
}
