/*
** forward.c -- sfa_forward: validates every argument (before the driver is
** touched, so bad input is reported the same way on any machine), picks the
** kernel spec for the problem, gets the kernel from the context and launches it
** on the caller's stream with one sfa_fwd_args parameter block.
*/
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "runtime/internal.h"
#include "runtime/kernel_abi.h"

#define GRID_YZ_MAX 65535 /* gridDim.y and gridDim.z limit */

/* ------------------------------------------------------------ validation */

static const char *dim_names[SFA_MAX_RANK] = {"batch", "heads", "time", "head dim"};

static void shape_str(const sfa_tensor *t, char *buf, size_t n) {
  size_t at = (size_t)snprintf(buf, n, "[");
  for (int i = 0; i < t->rank && i < SFA_MAX_RANK && at < n; i++)
    at += (size_t)snprintf(buf + at, n - at, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
  if (at < n) snprintf(buf + at, n - at, "]");
}

/* Elements of t overlap (some index pairs share an address): sort the dims
** that have extent > 1 by stride; each stride must exceed the span of the
** smaller ones. Assumes the strides are >= 0 and the span fits (checked first). */
static int self_overlapping(const sfa_tensor *t) {
  int order[SFA_MAX_RANK], n = 0;
  for (int i = 0; i < t->rank; i++)
    if (t->shape[i] > 1) order[n++] = i;
  for (int i = 1; i < n; i++)
    for (int j = i; j > 0 && t->strides[order[j]] < t->strides[order[j - 1]]; j--) {
      int x = order[j];
      order[j] = order[j - 1];
      order[j - 1] = x;
    }
  int64_t span = 0;
  for (int i = 0; i < n; i++) {
    int64_t s = t->strides[order[i]];
    if (s <= span) return 1;
    span += s * (t->shape[order[i]] - 1);
  }
  return 0;
}

/* Checks that do not depend on the other tensors: rank, dims >= 1, data,
** strides (>= 0; a multiple of `mult` elements; the last one 1 unless
** last_contiguous is 0), alignment, and that offsets fit an int64 with margin.
** Dims of extent 1 are never indexed, so their strides are not checked. */
static sfa_status check_layout(sfa_context *ctx, const char *nm, const sfa_tensor *t, int rank,
                               const char *layout, int64_t mult, size_t align, int is_output) {
  if (t->rank != rank)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "%s.rank: %d; must be %d (%s)", nm, t->rank,
                      rank, layout);
  for (int i = 0; i < rank; i++)
    if (t->shape[i] < 1)
      return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                        "%s: shape[%d] is %lld; every dimension must be >= 1 (%s)", nm, i,
                        (long long)t->shape[i], layout);
  if (!t->data) return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "%s: data is NULL", nm);
  if ((uintptr_t)t->data % align != 0)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "%s: data %p is not %zu-byte aligned", nm,
                      t->data, align);
  double span = 0;
  for (int i = 0; i < rank; i++) {
    int64_t s = t->strides[i];
    if (t->shape[i] == 1) continue;
    if (i == rank - 1 && s != 1)
      return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                        "%s: stride[%d] is %lld; the last dimension must be contiguous (stride 1)",
                        nm, i, (long long)s);
    if (s < 0)
      return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                        "%s: stride[%d] is %lld; strides must be >= 0", nm, i, (long long)s);
    if (i < rank - 1 && s % mult != 0)
      return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                        "%s: stride[%d] is %lld; it must be a multiple of %lld elements "
                        "(16 bytes)",
                        nm, i, (long long)s, (long long)mult);
    span += (double)s * (double)(t->shape[i] - 1);
  }
  if (span > 4611686018427387904.0) /* 2^62 */
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                      "%s: shape and strides address more than 2^62 elements", nm);
  if (is_output && self_overlapping(t))
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                      "%s: its strides make elements overlap; an output must not alias itself",
                      nm);
  return SFA_OK;
}

static sfa_status check_half(sfa_context *ctx, const char *nm, const sfa_tensor *t,
                             const sfa_tensor *q, int is_output) {
  if (t != q && t->dtype != q->dtype)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "%s: dtype %s does not match q (%s)", nm,
                      sfa__dtype_str(t->dtype), sfa__dtype_str(q->dtype));
  return check_layout(ctx, nm, t, 4, "[B, H, T, D]", 8, 16, is_output);
}

static sfa_status check_params(sfa_context *ctx, const sfa_attention_params *p) {
  switch (p->mode) {
    case SFA_MODE_DENSE: break;
    case SFA_MODE_QK_DROP:
    case SFA_MODE_HASH:
    case SFA_MODE_WINDOW:
      return sfa__error(ctx, SFA_ERR_UNSUPPORTED, "params.mode: %s is not implemented yet",
                        p->mode == SFA_MODE_QK_DROP ? "qk_drop"
                        : p->mode == SFA_MODE_HASH  ? "hash"
                                                    : "window");
    default:
      return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                        "params.mode: %d is not a mode (dense, qk_drop, hash or window)",
                        (int)p->mode);
  }
  if (!isfinite(p->scale) || p->scale < 0)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                      "params.scale: %g; must be finite and >= 0 (0 means 1/sqrt(head dim))",
                      (double)p->scale);
  if (p->window_left != -1 || p->window_right != -1)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                      "params.window_left/window_right: %d/%d; windows apply to mode window "
                      "only (use -1 with dense)",
                      p->window_left, p->window_right);
  return SFA_OK;
}

static sfa_status validate(sfa_context *ctx, const sfa_attention_params *params,
                           const sfa_tensor *q, const sfa_tensor *k, const sfa_tensor *v,
                           const sfa_tensor *o, const sfa_tensor *lse) {
  sfa_status st;
  char a[96], b[96];
  if (!params) return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "params: is NULL");
  if (!q) return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "q: is NULL");
  if (!k) return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "k: is NULL");
  if (!v) return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "v: is NULL");
  if (!o) return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "o: is NULL");
  if ((st = check_params(ctx, params)) != SFA_OK) return st;

  if (q->dtype != SFA_DTYPE_FP16 && q->dtype != SFA_DTYPE_BF16)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                      "q: dtype %s is not supported; must be fp16 or bf16",
                      sfa__dtype_str(q->dtype));
  if ((st = check_half(ctx, "q", q, q, 0)) != SFA_OK ||
      (st = check_half(ctx, "k", k, q, 0)) != SFA_OK ||
      (st = check_half(ctx, "v", v, q, 0)) != SFA_OK ||
      (st = check_half(ctx, "o", o, q, 1)) != SFA_OK)
    return st;

  int64_t B = q->shape[0], Hq = q->shape[1], Tq = q->shape[2], D = q->shape[3];
  if (D < 32 || D > 256 || D % 16 != 0)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                      "q: head dim (shape[3]) %lld is not supported; must be a multiple of 16 "
                      "in 32..256",
                      (long long)D);
  for (int i = 0; i < 4; i++)
    if (i != 1 && i != 2 && k->shape[i] != q->shape[i]) {
      return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                        "k: shape[%d] (%s) is %lld but q's is %lld", i, dim_names[i],
                        (long long)k->shape[i], (long long)q->shape[i]);
    }
  for (int i = 0; i < 4; i++)
    if (v->shape[i] != k->shape[i]) {
      shape_str(v, a, sizeof a);
      shape_str(k, b, sizeof b);
      return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "v: shape %s does not match k %s", a, b);
    }
  int64_t Hkv = k->shape[1], Tk = k->shape[2];
  if (Hq % Hkv != 0)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                      "k: its %lld heads (shape[1]) do not divide the %lld query heads of q",
                      (long long)Hkv, (long long)Hq);
  for (int i = 0; i < 4; i++)
    if (o->shape[i] != q->shape[i]) {
      shape_str(o, a, sizeof a);
      shape_str(q, b, sizeof b);
      return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "o: shape %s does not match q %s", a, b);
    }
  if (Tq > INT32_MAX || Tk > INT32_MAX)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                      "%s: time (shape[2]) %lld exceeds the kernel's int32 index (%d)",
                      Tq > INT32_MAX ? "q" : "k", (long long)(Tq > INT32_MAX ? Tq : Tk),
                      INT32_MAX);
  if (B > GRID_YZ_MAX || Hq > GRID_YZ_MAX)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                      "q: %s %lld exceeds the launch grid limit (%d)",
                      B > GRID_YZ_MAX ? "batch" : "heads", (long long)(B > GRID_YZ_MAX ? B : Hq),
                      GRID_YZ_MAX);

  if (lse) {
    if (lse->dtype != SFA_DTYPE_FP32)
      return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "lse: dtype %s; must be fp32",
                        sfa__dtype_str(lse->dtype));
    if ((st = check_layout(ctx, "lse", lse, 3, "[B, Hq, Tq]", 1, 4, 1)) != SFA_OK) return st;
    if (lse->shape[0] != B || lse->shape[1] != Hq || lse->shape[2] != Tq) {
      shape_str(lse, a, sizeof a);
      return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                        "lse: shape %s does not match q's [B, Hq, Tq] = [%lld, %lld, %lld]", a,
                        (long long)B, (long long)Hq, (long long)Tq);
    }
  }
  return SFA_OK;
}

/* ------------------------------------------------------------ launch */

sfa_status sfa_forward(sfa_context *ctx, const sfa_attention_params *params,
                       const sfa_tensor *q, const sfa_tensor *k, const sfa_tensor *v,
                       const sfa_extras *extras, const sfa_tensor *o,
                       const sfa_tensor *lse, void *stream) {
  (void)extras; /* dense reads none */
  if (!ctx) return SFA_ERR_INVALID_ARGUMENT;
  sfa_status st = validate(ctx, params, q, k, v, o, lse);
  if (st != SFA_OK) return st;

  sfa__device dev;
  if ((st = sfa__bind(ctx, &dev)) != SFA_OK) return st;
  const sfa_driver *d;
  if ((st = sfa__driver_load(&d, ctx->err, sizeof ctx->err)) != SFA_OK) return st;

  int D = (int)q->shape[3];
  sfa_kernel_spec spec;
  memset(&spec, 0, sizeof spec);
  spec.pass = SFA_PASS_FWD;
  spec.mode = SFA_MODE_DENSE;
  spec.dtype = q->dtype;
  spec.head_dim = D;
  spec.arch = dev.arch;
  spec.flags = params->causal ? SFA_FEAT_CAUSAL : 0;
  char why[512];
  if ((st = sfa_spec_default(&spec, why, sizeof why)) != SFA_OK)
    return sfa__error(ctx, st, "no kernel for %s head dim %d on sm_%d: %s",
                      sfa__dtype_str(q->dtype), D, dev.arch, why);
  sfa_kernel *kern;
  if ((st = sfa__kernel_get(ctx, &dev, &spec, &kern)) != SFA_OK) return st;

  float scale = params->scale > 0 ? params->scale : (float)(1.0 / sqrt((double)D));
  sfa_fwd_args a;
  memset(&a, 0, sizeof a);
  a.q = (uint64_t)(uintptr_t)q->data;
  a.k = (uint64_t)(uintptr_t)k->data;
  a.v = (uint64_t)(uintptr_t)v->data;
  a.o = (uint64_t)(uintptr_t)o->data;
  a.q_sb = q->strides[0], a.q_sh = q->strides[1], a.q_st = q->strides[2];
  a.k_sb = k->strides[0], a.k_sh = k->strides[1], a.k_st = k->strides[2];
  a.v_sb = v->strides[0], a.v_sh = v->strides[1], a.v_st = v->strides[2];
  a.o_sb = o->strides[0], a.o_sh = o->strides[1], a.o_st = o->strides[2];
  if (lse) {
    a.lse = (uint64_t)(uintptr_t)lse->data;
    a.lse_sb = lse->strides[0], a.lse_sh = lse->strides[1];
  }
  a.batch = (int32_t)q->shape[0];
  a.hq = (int32_t)q->shape[1];
  a.hkv = (int32_t)k->shape[1];
  a.tq = (int32_t)q->shape[2];
  a.tk = (int32_t)k->shape[2];
  a.bias_hdiv = a.mask_hdiv = 1;
  a.window_left = a.window_right = -1;
  a.scale = scale;
  a.scale_log2 = (float)((double)scale * 1.4426950408889634);

  unsigned gx = (unsigned)((q->shape[2] + spec.block_m - 1) / spec.block_m);
  void *kp[1] = {&a};
  CUresult r = d->cuLaunchKernel(kern->fn, gx, (unsigned)a.hq, (unsigned)a.batch,
                                 (unsigned)kern->threads, 1, 1, (unsigned)kern->smem,
                                 (CUstream)stream, kp, NULL);
  if (r != CUDA_SUCCESS) {
    char what[SFA__KERNEL_NAME + 64];
    snprintf(what, sizeof what, "cuLaunchKernel(%s, grid %ux%dx%d)", kern->name, gx, a.hq,
             a.batch);
    return sfa__cuda_error(r, what, ctx->err, sizeof ctx->err);
  }
  return SFA_OK;
}
