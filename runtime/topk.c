/*
** topk.c -- sfa_topk_mask: the dynamic mask of mode window, the w largest-bias
** allowed keys of every query row (templates/util_topk.lt, one CTA per row).
** Validates every argument before the driver is touched, then decides whether
** a row's keys fit in shared memory and launches; the histogram's size, the
** block and the grid rule are the kernel's variant descriptor's
** (gen/variant.c). sfa_topk_mask_varlen runs the same kernel on packed
** rows [Hb, total_q, Kmax], each row's sequence found on the device.
*/
#include <stdio.h>
#include <string.h>

#include "runtime/util.h"
#include "runtime/validate.h"
#include "runtime/varlen.h"

static sfa_status validate(sfa_context *ctx, const sfa_tensor *bias, int w, int causal,
                           const sfa_tensor *mask) {
  const unsigned dts =
      SFA__DTYPES(SFA_DTYPE_FP16) | SFA__DTYPES(SFA_DTYPE_BF16) | SFA__DTYPES(SFA_DTYPE_FP32);
  sfa_status st;
  if ((st = sfa__util_check(ctx, "bias", bias, 4, "[B, Hb, Tq, Tk]", dts, 0))) return st;
  if (bias->shape[2] > SFA__UTIL_MAX_T || bias->shape[3] > SFA__UTIL_MAX_T)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "bias: %s = %lld; must be at most 2^30",
                      bias->shape[2] > SFA__UTIL_MAX_T ? "Tq" : "Tk",
                      (long long)(bias->shape[2] > SFA__UTIL_MAX_T ? bias->shape[2]
                                                                   : bias->shape[3]));
  if (w < 0)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "w: %d; must be >= 0 (keys per row)", w);
  if (causal != 0 && causal != 1)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "causal: %d; must be 0 or 1", causal);
  if ((st = sfa__util_check(ctx, "mask", mask, 4, "[B, Hb, Tq, Tk]",
                            SFA__DTYPES(SFA_DTYPE_UINT8), 1)) ||
      (st = sfa__util_same_dims(ctx, "mask", mask, "bias", bias, 4, "all dimensions")))
    return st;
  if ((uintptr_t)mask->data % 16 != 0)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "mask: data %p is not 16-byte aligned",
                      mask->data);
  for (int i = 0; i < 3; i++)
    if (sfa__eff_stride(mask, i) % 16 != 0)
      return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                        "mask: stride[%d] is %lld; it must be a multiple of 16 (bytes) so that "
                        "every row is 16-byte aligned",
                        i, (long long)mask->strides[i]);
  return sfa__util_disjoint(ctx, "mask", mask, "bias", bias);
}

/* The launch of a validated call; cu_q and cu_k NULL for a fixed-length
** batch, else bias and mask are the packed ones' views [1, Hb, total_q, Kmax]. */
static sfa_status launch(sfa_context *ctx, const sfa_tensor *bias, int w, int causal,
                         const sfa_tensor *mask, const sfa_tensor *cu_q, const sfa_tensor *cu_k,
                         void *stream) {
  sfa_status st;
  sfa__device dev;
  sfa_kernel *k;
  const sfa_driver *d;
  if ((st = sfa__bind(ctx, &dev)) != SFA_OK ||
      (st = sfa__driver_load(&d, ctx->err, sizeof ctx->err)) != SFA_OK ||
      (st = sfa__util_kernel(ctx, &dev, SFA_PASS_TOPK, bias->dtype, &k)) != SFA_OK)
    return st;
  const sfa__variant *v = &k->var;
  CUfunction fn = k->fn;

  const int64_t es = (int64_t)sfa__dtype_size(bias->dtype);
  sfa__topk_args a;
  memset(&a, 0, sizeof a);
  a.bias = (uint64_t)(uintptr_t)bias->data;
  a.b_sb = sfa__eff_stride(bias, 0), a.b_sh = sfa__eff_stride(bias, 1);
  a.b_sq = sfa__eff_stride(bias, 2);
  a.mask = (uint64_t)(uintptr_t)mask->data;
  a.m_sb = sfa__eff_stride(mask, 0), a.m_sh = sfa__eff_stride(mask, 1);
  a.m_sq = sfa__eff_stride(mask, 2);
  a.rows = bias->shape[0] * bias->shape[1] * bias->shape[2];
  a.heads = (int32_t)bias->shape[1];
  a.tq = (int32_t)bias->shape[2];
  a.tk = (int32_t)bias->shape[3];
  a.w = w;
  a.causal = causal;
  if (cu_q) {
    a.cu_rows = (uint64_t)(uintptr_t)cu_q->data, a.cu_keys = (uint64_t)(uintptr_t)cu_k->data;
    a.batch = (int32_t)(cu_q->shape[0] - 1);
  }
  a.vec = a.bias % 16 == 0 && (a.b_sb * es) % 16 == 0 && (a.b_sh * es) % 16 == 0 &&
          (a.b_sq * es) % 16 == 0;

  /* Cache the row's keys (16 bytes per 16 / es of them) when they fit next to
  ** the histogram and the static shared memory. */
  int static_smem = 0;
  CUresult r = d->cuFuncGetAttribute(&static_smem, CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES, fn);
  if (r != CUDA_SUCCESS)
    return sfa__cuda_error(r, "cuFuncGetAttribute(topk, shared size)", ctx->err,
                           sizeof ctx->err);
  const int64_t key_bytes = (a.tk + 16 / es - 1) / (16 / es) * 16;
  const int64_t room = (int64_t)dev.smem_optin - static_smem;
  const int64_t hist = (int64_t)v->util.hist_bytes; /* the kernel's replicated histogram */
  a.cached = hist + key_bytes <= room;
  const int64_t smem = hist + (a.cached ? key_bytes : 0);
  if (smem > room)
    return sfa__error(ctx, SFA_ERR_UNSUPPORTED,
                      "sfa_topk_mask: needs %lld bytes of shared memory; the device allows %lld",
                      (long long)smem, (long long)room);
  if (smem + static_smem > 48 * 1024 &&  /* the opt-in covers static + dynamic */
      (r = d->cuFuncSetAttribute(fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                 (int)room)) != CUDA_SUCCESS)
    return sfa__cuda_error(r, "cuFuncSetAttribute(topk, max dynamic shared memory)",
                           ctx->err, sizeof ctx->err);
  /* the kernel's whole block for long rows; rows past max_x CTAs in a grid-stride loop */
  const unsigned block =
      (unsigned)(a.tk >= v->util.small_below ? v->threads : v->util.small_threads);
  const sfa__grid_dims dims = {.items = a.rows};
  unsigned g[3];
  sfa__grid_size(&v->grid, &dims, g);
  return sfa__util_launch(ctx, fn, "topk", g[0], block, (unsigned)smem, stream, &a);
}

sfa_status sfa_topk_mask(sfa_context *ctx, const sfa_tensor *bias, int w, int causal,
                         const sfa_tensor *mask, void *stream) {
  if (!ctx) return SFA_ERR_INVALID_ARGUMENT;
  sfa_status st = validate(ctx, bias, w, causal, mask);
  if (st != SFA_OK) return st;
  return launch(ctx, bias, w, causal, mask, NULL, NULL, stream);
}

/* [Hb, total_q, Kmax] as [1, Hb, total_q, Kmax] (the same memory). */
static const sfa_tensor *view_batch1(const sfa_tensor *t, sfa_tensor *out) {
  *out = *t;
  out->rank = 4;
  for (int i = 3; i > 0; i--) out->shape[i] = t->shape[i - 1], out->strides[i] = t->strides[i - 1];
  out->shape[0] = 1, out->strides[0] = 0;
  return out;
}

sfa_status sfa_topk_mask_varlen(sfa_context *ctx, const sfa_tensor *cu_seqlens_q,
                                const sfa_tensor *cu_seqlens_k, const sfa_tensor *bias, int w,
                                int causal, const sfa_tensor *mask, void *stream) {
  if (!ctx) return SFA_ERR_INVALID_ARGUMENT;
  const sfa_status bad = SFA_ERR_INVALID_ARGUMENT;
  const unsigned dts =
      SFA__DTYPES(SFA_DTYPE_FP16) | SFA__DTYPES(SFA_DTYPE_BF16) | SFA__DTYPES(SFA_DTYPE_FP32);
  sfa_status st;
  if ((st = sfa__varlen_check_cu(ctx, "cu_seqlens_q", cu_seqlens_q)) ||
      (st = sfa__varlen_check_cu(ctx, "cu_seqlens_k", cu_seqlens_k)))
    return st;
  if (cu_seqlens_k->shape[0] != cu_seqlens_q->shape[0])
    return sfa__error(ctx, bad,
                      "cu_seqlens_k: shape [%lld] but cu_seqlens_q's is [%lld]; both are [B + 1] "
                      "for the same B sequences",
                      (long long)cu_seqlens_k->shape[0], (long long)cu_seqlens_q->shape[0]);
  if ((st = sfa__util_check(ctx, "bias", bias, 3, "[Hb, total_q, Kmax]", dts, 0))) return st;
  if (bias->shape[1] > SFA__UTIL_MAX_T)
    return sfa__error(ctx, bad, "bias: total_q = %lld (shape[1]); must be at most 2^30",
                      (long long)bias->shape[1]);
  if (bias->shape[2] > SFA__UTIL_MAX_T)
    return sfa__error(ctx, bad, "bias: Kmax = %lld (shape[2]); must be at most 2^30",
                      (long long)bias->shape[2]);
  if ((st = sfa__util_check(ctx, "mask", mask, 3, "[Hb, total_q, Kmax]",
                            SFA__DTYPES(SFA_DTYPE_UINT8), 1)) ||
      (st = sfa__util_same_dims(ctx, "mask", mask, "bias", bias, 3, "all dimensions")) ||
      (st = sfa__util_disjoint(ctx, "mask", mask, "cu_seqlens_q", cu_seqlens_q)) ||
      (st = sfa__util_disjoint(ctx, "mask", mask, "cu_seqlens_k", cu_seqlens_k)))
    return st;
  for (int i = 0; i < 2; i++) /* named in the caller's dims (the view's shift by one) */
    if (sfa__eff_stride(mask, i) % 16 != 0)
      return sfa__error(ctx, bad,
                        "mask: stride[%d] is %lld; it must be a multiple of 16 (bytes) so that "
                        "every row is 16-byte aligned",
                        i, (long long)mask->strides[i]);
  sfa_tensor vb, vm;
  const sfa_tensor *b1 = view_batch1(bias, &vb), *m1 = view_batch1(mask, &vm);
  if ((st = validate(ctx, b1, w, causal, m1))) return st;
  return launch(ctx, b1, w, causal, m1, cu_seqlens_q, cu_seqlens_k, stream);
}
