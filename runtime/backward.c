/*
** backward.c -- sfa_backward: validates every argument (runtime/validate.c)
** before the driver is touched, then on the caller's stream
**   1. takes a float workspace from the context's pool (runtime/workspace.c): lse2 and
**      delta (B * Hq rows of tqp = Tq rounded up to 128; packed sequences:
**      Hq rows of the total rounded up, plus 128), the dq accumulator
**      (unless deterministic) and the dbias accumulator (when needed);
**   2. bwd_pre (templates/util_bwd.lt): delta = rowsum(dout * o) (minus dlse,
**      the gradient of lse, in sfa_backward_dlse), lse2 =
**      lse * log2(e) (+inf where nothing is seen), zeroes the dq accumulator;
**   3. the bwd kernel (templates/bwd.lt): dk, dv, dbias, and dq by atomics;
**      for a mode that searches (sfa__bwd_plan) its plan kernel runs first and
**      writes each key tile's setup into the workspace;
**   4. deterministic: the bwddq kernel (templates/bwd_dq.lt) writes dq; else
**      convert turns the dq accumulator into dq (times the scale);
**   5. convert turns the dbias accumulator into dbias;
**   6. frees the workspace on the stream.
** Tile configs follow the context's tuning policy (sfa__select_spec: the bwd
** kernel is tuned like the forward's; bwddq uses the db or its default).
** Every launch takes its grid rule, block and shared memory from its kernel's
** variant descriptor (k->var, gen/variant.h), the plan from its plan entry,
** and the preprocess and converts their rows per CTA and elements per thread
** from theirs.
** dbias: when every element has one contribution (the bias has all of q's
** batches, heads and rows) the bwd kernel stores it, after a zero fill (tiles
** that no query sees are never visited); otherwise it adds into the float
** accumulator, and the CTAs are grouped so that one CTA owns every (batch, kv
** head) that shares a bias slice (no atomics: the result is deterministic).
** The warp-specialized backward (mma ws, templates/bwd_ws.lt) reads q, k, v
** and dout through tensor maps (runtime/tma.c) that follow the parameter
** block; where the copy engine cannot address them the selection takes the
** wgmma kernel (sfa__problem.no_tma).
** Packed sequences: dbias [Hb, total_q|1, Kmax] is viewed as [1, Hb,
** total_q|1, Kmax] (runtime/varlen.c); its columns Kmax stand for Tk; a row
** broadcast over the queries is shared by every sequence, whose key tiles
** add into it with float atomics (bwd.lt).
*/
#include <math.h>
#include <stdlib.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "gen/gen_internal.h"
#include "runtime/internal.h"
#include "runtime/bwd_launch.h"
#include "runtime/fwd_launch.h"
#include "runtime/kernel_abi.h"
#include "runtime/mode_args.h"
#include "runtime/tma.h"
#include "runtime/util.h"
#include "runtime/validate.h"

#define TQ_PAD 128 /* query rows of the workspaces are padded to a multiple of this */

/* An attention kernel's launch: its grid rule for dims, its block and shared
** memory (k->var); params: the parameter block, then any tensor maps. */
static sfa_status launch(sfa_context *ctx, const sfa_driver *d, const sfa_kernel *k,
                         const sfa__grid_dims *dims, CUstream stream, void **params) {
  unsigned g[3];
  sfa__grid_size(&k->var.grid, dims, g);
  CUresult r = d->cuLaunchKernel(k->fn, g[0], g[1], g[2], (unsigned)k->var.threads, 1, 1,
                                 (unsigned)k->var.smem_bytes, stream, params, NULL);
  if (r == CUDA_SUCCESS) return SFA_OK;
  char what[SFA__KERNEL_NAME + 64];
  snprintf(what, sizeof what, "cuLaunchKernel(%s, grid %ux%ux%u)", k->name, g[0], g[1], g[2]);
  return sfa__cuda_error(r, what, ctx->err, sizeof ctx->err);
}

/* q, k, v and dout as the copy engine sees them. */
static void bwd_tma_tensors(const sfa_tensor *const x[4], sfa__tma_tensor t[4]) {
  for (int i = 0; i < 4; i++)
    t[i] = (sfa__tma_tensor){.data = (uint64_t)(uintptr_t)x[i]->data, .dtype = x[i]->dtype,
                             .B = x[i]->shape[0], .H = x[i]->shape[1], .T = x[i]->shape[2],
                             .D = x[i]->shape[3], .sb = x[i]->strides[0],
                             .sh = x[i]->strides[1], .st = x[i]->strides[2]};
}

int sfa__bwd_tma_addressable(const sfa_tensor *q, const sfa_tensor *k, const sfa_tensor *v,
                             const sfa_tensor *dout) {
  const sfa_tensor *const x[4] = {q, k, v, dout};
  sfa__tma_tensor t[4];
  bwd_tma_tensors(x, t);
  return sfa__tma_all_addressable(t, 4);
}

/* The bwd kernel's launch; the ws kernel takes the tensor maps of c's q, k,
** v and dout (boxes of block_m, block_n, block_n and block_m rows) after the
** parameter block, and with dq_tma the map of the float dQ workspace a->dq
** ([B, Hq, a->tqp, D], boxes of 32 columns x block_m rows) after them. */
static sfa_status launch_bwd(sfa_context *ctx, const sfa_driver *d, const sfa_kernel *k,
                             const sfa__grid_dims *dims, CUstream stream, sfa_bwd_args *a,
                             const sfa__bwd_call *c) {
  const sfa__variant *v = &k->var;
  void *kp[6] = {a};
  CUtensorMap maps[5];
  if (v->ws) {
    const sfa_tensor *const x[4] = {c->q, c->k, c->v, c->dout};
    sfa__tma_tensor t[4];
    bwd_tma_tensors(x, t);
    const int rows[4] = {v->spec.block_m, v->spec.block_n, v->spec.block_n, v->spec.block_m};
    sfa_status st = sfa__tma_params(d, t, rows, 4, v->box_cols, maps, kp + 1, ctx->err,
                                    sizeof ctx->err);
    if (st != SFA_OK) return st;
    if (v->dq_tma) {
      const int64_t B = c->q->shape[0], Hq = c->q->shape[1], D = c->q->shape[3], tqp = a->tqp;
      const sfa__tma_tensor w = {.data = a->dq, .dtype = SFA_DTYPE_FP32, .B = B,
                                 .H = Hq, .T = tqp, .D = D, .sb = Hq * tqp * D,
                                 .sh = tqp * D, .st = D};
      st = sfa__tma_map(d, &w, 32, v->spec.block_m, &maps[4], ctx->err, sizeof ctx->err);
      if (st != SFA_OK) return st;
      kp[5] = &maps[4];
    }
  }
  return launch(ctx, d, k, dims, stream, kp);
}

/* A utility kernel's launch over items (its grid rule), its block. */
static sfa_status launch_items(sfa_context *ctx, const sfa_kernel *k, const char *what,
                               int64_t items, void *stream, void *args) {
  const sfa__grid_dims dims = {.items = items};
  unsigned g[3];
  sfa__grid_size(&k->var.grid, &dims, g);
  return sfa__util_launch(ctx, k->fn, what, g[0], (unsigned)k->var.threads, 0, stream, args);
}

/* dst (q's dtype, 4-d) = scale * src (float, element strides s_*), or zeros. */
static sfa_status convert(sfa_context *ctx, const sfa_kernel *k, CUdeviceptr src, int64_t s_sb,
                          int64_t s_sh, int64_t s_st, const sfa_tensor *dst, float scale,
                          void *stream) {
  sfa__convert_args c;
  memset(&c, 0, sizeof c);
  c.src = (uint64_t)src;
  c.s_sb = s_sb, c.s_sh = s_sh, c.s_st = s_st;
  c.dst = (uint64_t)(uintptr_t)dst->data;
  c.d_sb = sfa__eff_stride(dst, 0), c.d_sh = sfa__eff_stride(dst, 1);
  c.d_st = sfa__eff_stride(dst, 2);
  c.heads = (int32_t)dst->shape[1], c.t = (int32_t)dst->shape[2], c.c = (int32_t)dst->shape[3];
  c.n = dst->shape[0] * dst->shape[1] * dst->shape[2] * dst->shape[3];
  c.scale = scale;
  if (c.n == 0) return SFA_OK;
  const int e = k->var.util.chunk_elems; /* elements per thread; grid-stride past max_x CTAs */
  return launch_items(ctx, k, "convert", c.n / c.c * ((c.c + e - 1) / e), stream, &c);
}

sfa_status sfa__bwd_exec(sfa_context *ctx, const sfa__device *dev, const sfa_driver *d,
                        const sfa_kernel *kb, const sfa_kernel *kdq, const sfa__bwd_call *c,
                        CUstream stream) {
  const sfa_attention_params *params = c->params;
  const sfa_tensor *q = c->q, *k = c->k, *v = c->v, *o = c->o, *lse = c->lse;
  const sfa_tensor *dout = c->dout, *dq = c->dq, *dk = c->dk, *dv = c->dv, *dbias = c->dbias;
  const sfa_extras *extras = c->extras;
  const int D = (int)q->shape[3], det = (kb->spec.flags & SFA_FEAT_DETERMINISTIC) != 0;
  sfa_kernel *pre, *conv;
  sfa_status st;
  if (det != (kdq != NULL))
    return sfa__error(ctx, SFA_ERR_INTERNAL, "sfa__bwd_exec: %s needs %s bwddq kernel", kb->name,
                      det ? "a" : "no");
  if ((st = sfa__util_kernel(ctx, dev, SFA_PASS_BWD_PRE, q->dtype, &pre)) != SFA_OK ||
      (st = sfa__util_kernel(ctx, dev, SFA_PASS_CONVERT, q->dtype, &conv)) != SFA_OK)
    return st;

  const int64_t B = q->shape[0], Hq = q->shape[1], Tq = q->shape[2];
  const int64_t Hkv = k->shape[1], Tk = k->shape[2];
  /* Packed sequences (B = 1 here, Tq the total): the last sequence's last
  ** query tile may reach TQ_PAD rows past the total (block_m <= TQ_PAD). */
  const int varlen = c->vl && c->vl->on;
  const int64_t tqp = (Tq + TQ_PAD - 1) / TQ_PAD * TQ_PAD + (varlen ? TQ_PAD : 0);
  const int64_t rows = B * Hq * tqp;
  /* dbias: stored (mode 1) when each element has one contribution, else
  ** accumulated in float (mode 2) by CTAs that own every (batch, kv head)
  ** sharing a bias slice. */
  int dbias_mode = 0, nb = 1, nh = 1;
  int64_t dbias_n = 0;
  /* its columns: Tk, or Kmax with packed sequences */
  const int64_t Kc = dbias ? dbias->shape[3] : 0;
  if (dbias) {
    const int64_t Bb = dbias->shape[0], Hb = dbias->shape[1], Rb = dbias->shape[2];
    const int single = (Bb == B || B == 1) && (Hb == Hq || Hq == 1) && Rb == Tq && Rb > 1;
    dbias_mode = single ? 1 : 2;
    if (!single) {
      dbias_n = Bb * Hb * Rb * Kc;
      if (Bb == 1 && B > 1) nb = (int)B;
      if (Hb == 1 && Hkv > 1) nh = (int)Hkv;
    }
  }

  const float scale = params->scale > 0 ? params->scale : (float)(1.0 / sqrt((double)D));
  size_t off_dq = (size_t)rows * 8, off_db = off_dq + (det ? 0 : (size_t)rows * D * 4);
  /* The problem as the kernels' grid rules read it. */
  const sfa__grid_dims dims = {.batch = varlen ? c->vl->batch : B, .hq = Hq, .hkv = Hkv,
                               .tq = Tq, .tk = Tk, .nb = nb, .nh = nh};
  const sfa__variant *vb = &kb->var;
  const size_t off_plan = (off_db + (size_t)dbias_n * 4 + 255) / 256 * 256;
  /* one record of plan_ints int32 per (batch, query head, key tile) */
  const size_t plan_n = vb->has_plan ? (size_t)sfa__grid_items(&vb->plan.grid, &dims) : 0;
  size_t bytes = off_plan + plan_n * (size_t)vb->plan_ints * 4;
  CUdeviceptr ws = 0;
  if ((st = sfa__workspace_alloc(ctx, d, dev, bytes, stream, &ws)) != SFA_OK) return st;
  CUresult r;
  const CUdeviceptr lse2 = ws, delta = ws + (size_t)rows * 4;
  const CUdeviceptr dqacc = det ? 0 : ws + off_dq, dbw = dbias_mode == 2 ? ws + off_db : 0;

  /* 2. preprocess */
  sfa__bwd_pre_args pa;
  memset(&pa, 0, sizeof pa);
  pa.o = (uint64_t)(uintptr_t)o->data;
  pa.o_sb = o->strides[0], pa.o_sh = o->strides[1], pa.o_st = o->strides[2];
  pa.dout = (uint64_t)(uintptr_t)dout->data;
  pa.do_sb = dout->strides[0], pa.do_sh = dout->strides[1], pa.do_st = dout->strides[2];
  pa.lse = (uint64_t)(uintptr_t)lse->data;
  pa.l_sb = lse->strides[0], pa.l_sh = lse->strides[1];
  pa.lse2 = (uint64_t)lse2, pa.delta = (uint64_t)delta, pa.dq = (uint64_t)dqacc;
  pa.rows = rows;
  pa.heads = (int32_t)Hq, pa.tq = (int32_t)Tq, pa.tqp = (int32_t)tqp, pa.d = D;
  if (c->dlse) {
    pa.dlse = (uint64_t)(uintptr_t)c->dlse->data;
    pa.dl_sb = sfa__eff_stride(c->dlse, 0), pa.dl_sh = sfa__eff_stride(c->dlse, 1);
  }
  st = launch_items(ctx, pre, "bwd_pre", rows, stream, &pa);
  if (st == SFA_OK && dbias_mode == 2 &&
      (r = d->cuMemsetD32Async(dbw, 0, (size_t)dbias_n, stream)) != CUDA_SUCCESS)
    st = sfa__cuda_error(r, "cuMemsetD32Async(dbias workspace)", ctx->err, sizeof ctx->err);
  if (st == SFA_OK && dbias_mode == 1) st = convert(ctx, conv, 0, 0, 0, 0, dbias, 0.f, stream);

  /* 3. dk, dv, dbias (and dq atomics) */
  sfa_bwd_args a;
  memset(&a, 0, sizeof a);
  a.q = (uint64_t)(uintptr_t)q->data;
  a.k = (uint64_t)(uintptr_t)k->data;
  a.v = (uint64_t)(uintptr_t)v->data;
  a.dout = (uint64_t)(uintptr_t)dout->data;
  a.lse2 = (uint64_t)lse2, a.delta = (uint64_t)delta;
  a.dq = (uint64_t)dqacc;
  a.dk = (uint64_t)(uintptr_t)dk->data;
  a.dv = (uint64_t)(uintptr_t)dv->data;
  a.q_sb = q->strides[0], a.q_sh = q->strides[1], a.q_st = q->strides[2];
  a.k_sb = k->strides[0], a.k_sh = k->strides[1], a.k_st = k->strides[2];
  a.v_sb = v->strides[0], a.v_sh = v->strides[1], a.v_st = v->strides[2];
  a.do_sb = dout->strides[0], a.do_sh = dout->strides[1], a.do_st = dout->strides[2];
  a.dk_sb = dk->strides[0], a.dk_sh = dk->strides[1], a.dk_st = dk->strides[2];
  a.dv_sb = dv->strides[0], a.dv_sh = dv->strides[1], a.dv_st = dv->strides[2];
  a.batch = (int32_t)B, a.hq = (int32_t)Hq, a.hkv = (int32_t)Hkv;
  a.tq = (int32_t)Tq, a.tk = (int32_t)Tk, a.tqp = (int32_t)tqp;
  a.scale = scale;
  a.scale_log2 = (float)((double)scale * 1.4426950408889634);
  SFA__FILL_MODE_ARGS(&a, params, extras);
  a.nb = nb, a.nh = nh;
  if (varlen) SFA__VARLEN_ARGS(&a, c->vl);
  a.dbias_mode = dbias_mode;
  if (dbias_mode == 1) {
    a.dbias = (uint64_t)(uintptr_t)dbias->data;
    a.dbias_sb = sfa__eff_stride(dbias, 0), a.dbias_sh = sfa__eff_stride(dbias, 1);
    a.dbias_st = sfa__eff_stride(dbias, 2);
  } else if (dbias_mode == 2) { /* contiguous [Bb, Hb, Rb, Kc] floats */
    const int64_t Hb = dbias->shape[1], Rb = dbias->shape[2];
    a.dbias = (uint64_t)dbw;
    a.dbias_st = Rb > 1 ? Kc : 0;
    a.dbias_sh = Hb > 1 ? Rb * Kc : 0;
    a.dbias_sb = dbias->shape[0] > 1 ? Hb * Rb * Kc : 0;
  }
  if (st == SFA_OK && plan_n) { /* the plan entry: its own block and grid rule */
    char what[SFA__KERNEL_NAME + 16];
    snprintf(what, sizeof what, "%s%s", kb->name, vb->plan.suffix);
    a.plan = (uint64_t)(ws + off_plan);
    unsigned g[3];
    sfa__grid_size(&vb->plan.grid, &dims, g);
    st = sfa__util_launch(ctx, kb->plan_fn, what, g[0], (unsigned)vb->plan.threads,
                          (unsigned)vb->plan.smem_bytes, stream, &a);
  }
  if (st == SFA_OK) st = launch_bwd(ctx, d, kb, &dims, stream, &a, c);

  /* 4. dq */
  if (st == SFA_OK && det) {
    a.dq = (uint64_t)(uintptr_t)dq->data;
    a.dq_sb = dq->strides[0], a.dq_sh = dq->strides[1], a.dq_st = dq->strides[2];
    st = launch(ctx, d, kdq, &dims, stream, (void *[]){&a});
  } else if (st == SFA_OK) {
    st = convert(ctx, conv, dqacc, Hq * tqp * D, tqp * D, D, dq, scale, stream);
  }
  /* 5. dbias from its accumulator */
  if (st == SFA_OK && dbias_mode == 2) {
    const int64_t Hb = dbias->shape[1], Rb = dbias->shape[2];
    st = convert(ctx, conv, dbw, Hb * Rb * Kc, Rb * Kc, Kc, dbias, 1.f, stream);
  }
  /* 6. the workspace goes back once the kernels before it on the stream are done */
  r = d->cuMemFreeAsync(ws, stream);
  if (st == SFA_OK && r != CUDA_SUCCESS)
    st = sfa__cuda_error(r, "cuMemFreeAsync(backward workspace)", ctx->err, sizeof ctx->err);
  return st;
}

/* dlse: float32 [B, Hq, Tq] like lse (any strides >= 0, the last dim
** contiguous); an input, so no output may overlap it. */
static sfa_status validate_dlse(sfa_context *ctx, const sfa_tensor *q, const sfa_tensor *dlse,
                                const sfa_tensor *dq, const sfa_tensor *dk, const sfa_tensor *dv,
                                const sfa_tensor *dbias) {
  if (dlse->dtype != SFA_DTYPE_FP32)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "dlse: dtype %s; must be fp32",
                      sfa__dtype_str(dlse->dtype));
  sfa_status st = sfa__check_layout(ctx, "dlse", dlse, 3, "[B, Hq, Tq]", 1, 4, 0, 0);
  if (st != SFA_OK) return st;
  if (dlse->shape[0] != q->shape[0] || dlse->shape[1] != q->shape[1] ||
      dlse->shape[2] != q->shape[2]) {
    char a[96];
    sfa__tensor_shape_str(dlse, a, sizeof a);
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                      "dlse: shape %s does not match q's [B, Hq, Tq] = [%lld, %lld, %lld]", a,
                      (long long)q->shape[0], (long long)q->shape[1], (long long)q->shape[2]);
  }
  const sfa__named_tensor in[] = {{"dlse", dlse}};
  const sfa__named_tensor out[] = {{"dq", dq}, {"dk", dk}, {"dv", dv}, {"dbias", dbias}};
  return sfa__check_disjoint(ctx, out, 4, in, 1);
}

sfa_status sfa_backward(sfa_context *ctx, const sfa_attention_params *params,
                        const sfa_tensor *q, const sfa_tensor *k, const sfa_tensor *v,
                        const sfa_extras *extras, const sfa_tensor *o, const sfa_tensor *lse,
                        const sfa_tensor *dout, const sfa_tensor *dq, const sfa_tensor *dk,
                        const sfa_tensor *dv, const sfa_tensor *dbias, void *stream) {
  return sfa_backward_dlse(ctx, params, q, k, v, extras, o, lse, dout, NULL, dq, dk, dv, dbias,
                           stream);
}

sfa_status sfa_backward_dlse(sfa_context *ctx, const sfa_attention_params *params,
                             const sfa_tensor *q, const sfa_tensor *k, const sfa_tensor *v,
                             const sfa_extras *extras, const sfa_tensor *o,
                             const sfa_tensor *lse, const sfa_tensor *dout,
                             const sfa_tensor *dlse, const sfa_tensor *dq, const sfa_tensor *dk,
                             const sfa_tensor *dv, const sfa_tensor *dbias, void *stream) {
  if (!ctx) return SFA_ERR_INVALID_ARGUMENT;
  /* Packed sequences: their checks, then the views of one batch of the
  ** totals (runtime/varlen.h) for the fixed-length checks and launches. */
  sfa__varlen vl;
  const sfa__varlen_call vc = {&q, &k, &v, &o, &lse, &dout, &dq, &dk, &dv, &extras, &dbias};
  sfa_status st = q && k && v && o && lse && dout && dq && dk && dv
                      ? sfa__varlen_prepare(ctx, params, &vc, &vl)
                      : SFA_OK;
  if (st == SFA_OK)
    st = sfa__validate_backward(ctx, params, q, k, v, extras, o, lse, dout, dq, dk, dv, dbias);
  if (st != SFA_OK) return st;
  if (dlse && (st = validate_dlse(ctx, q, dlse, dq, dk, dv, dbias)) != SFA_OK) return st;
  const int D = (int)q->shape[3];
  if (D > SFA__BWD_MAX_HEAD_DIM && D % 32 != 0)
    return sfa__error(ctx, SFA_ERR_UNSUPPORTED,
                      "q: head dim %d; above %d the backward supports multiples of 32 (160, "
                      "192, 224, 256)", D, SFA__BWD_MAX_HEAD_DIM);

  sfa__device dev;
  if ((st = sfa__bind(ctx, &dev)) != SFA_OK) return st;
  const sfa_driver *d;
  if ((st = sfa__driver_load(&d, ctx->err, sizeof ctx->err)) != SFA_OK) return st;
  const int det = params->deterministic;
  const unsigned flags = sfa__fwd_flags(params, extras);
  sfa_kernel *kb, *kdq = NULL;
  sfa__problem prob;
  sfa__fwd_problem(&prob, params, q, k, extras, lse);
  prob.no_tma = !sfa__bwd_tma_addressable(q, k, v, dout);
  if ((st = sfa__select_kernel(ctx, &dev, SFA_PASS_BWD, q->dtype, D,
                               flags | (det ? SFA_FEAT_DETERMINISTIC : 0u), &prob, &kb)) !=
          SFA_OK ||
      (det && (st = sfa__select_kernel(ctx, &dev, SFA_PASS_BWD_DQ, q->dtype, D, flags, &prob,
                                       &kdq)) != SFA_OK))
    return st;
  const sfa__bwd_call c = {params, q, k, v, extras, o, lse, dout, dq, dk, dv, dbias, dlse, &vl};
  return sfa__bwd_exec(ctx, &dev, d, kb, kdq, &c, (CUstream)stream);
}
