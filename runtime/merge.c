/*
** merge.c -- sfa_merge_attention: the attention over a union of key sets from
** the partial attentions over its parts (each part's o and lse). Validates
** every argument before the driver is touched, then launches the merge
** kernel (templates/util_merge.lt, one per arch: the dtypes are launch
** arguments) with a group of threads per row sized to the row; its block,
** grid rule and CTA limit are the kernel's variant descriptor's
** (gen/variant.c).
*/
#include <stdio.h>
#include <string.h>

#include "runtime/util.h"
#include "runtime/validate.h"

#define MERGE_MAX_D 256   /* sfa.h: a thread holds at most 2 chunks of 16 bytes, 32 per row */
#define MERGE_CHUNKS 2    /* util_merge.lt's K */

static const unsigned merge_dtypes =
    SFA__DTYPES(SFA_DTYPE_FP16) | SFA__DTYPES(SFA_DTYPE_BF16) | SFA__DTYPES(SFA_DTYPE_FP32);

static sfa_status validate(sfa_context *ctx, const sfa_tensor *op, const sfa_tensor *lp,
                           const sfa_tensor *o, const sfa_tensor *lse) {
  const unsigned f32 = SFA__DTYPES(SFA_DTYPE_FP32);
  sfa_status st;
  if ((st = sfa__util_check(ctx, "o_parts", op, 4, "[N * B, H, T, D]", merge_dtypes, 0)) ||
      (st = sfa__util_check(ctx, "lse_parts", lp, 3, "[N * B, H, T]", f32, 0)) ||
      (st = sfa__util_check(ctx, "o", o, 4, "[B, H, T, D]", merge_dtypes, 1)) ||
      (lse && (st = sfa__util_check(ctx, "lse", lse, 3, "[B, H, T]", f32, 1))))
    return st;
  const int64_t B = o->shape[0];
  if (op->shape[0] % B != 0) {
    char a[96], b[96];
    sfa__tensor_shape_str(op, a, sizeof a);
    sfa__tensor_shape_str(o, b, sizeof b);
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                      "o_parts: shape %s; its first dimension must be N * B, a multiple of o's "
                      "batch B = %lld (o %s; the N parts are stacked along the batch)",
                      a, (long long)B, b);
  }
  for (int i = 1; i < 4; i++)
    if (op->shape[i] != o->shape[i]) {
      char a[96], b[96];
      sfa__tensor_shape_str(op, a, sizeof a);
      sfa__tensor_shape_str(o, b, sizeof b);
      return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                        "o_parts: shape %s does not match o %s (H, T and D must agree)", a, b);
    }
  if ((st = sfa__util_same_dims(ctx, "lse_parts", lp, "o_parts", op, 3, "N * B, H and T")) ||
      (lse && (st = sfa__util_same_dims(ctx, "lse", lse, "o", o, 3, "B, H and T"))))
    return st;
  if (o->shape[3] > MERGE_MAX_D)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "o: D = %lld; must be at most %d",
                      (long long)o->shape[3], MERGE_MAX_D);
  if (o->shape[1] > SFA__UTIL_MAX_T || o->shape[2] > SFA__UTIL_MAX_T)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "o: %s = %lld; must be at most 2^30",
                      o->shape[1] > SFA__UTIL_MAX_T ? "H" : "T",
                      (long long)(o->shape[1] > SFA__UTIL_MAX_T ? o->shape[1] : o->shape[2]));
  if (op->shape[0] / B > 0x7fffffff)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "o_parts: N = %lld parts; at most 2^31 - 1",
                      (long long)(op->shape[0] / B));
  if ((st = sfa__util_disjoint(ctx, "o", o, "o_parts", op)) ||
      (st = sfa__util_disjoint(ctx, "o", o, "lse_parts", lp)))
    return st;
  if (lse && ((st = sfa__util_disjoint(ctx, "lse", lse, "o_parts", op)) ||
              (st = sfa__util_disjoint(ctx, "lse", lse, "lse_parts", lp)) ||
              (st = sfa__util_disjoint(ctx, "lse", lse, "o", o))))
    return st;
  return SFA_OK;
}

/* Every row of t ([.., D], 4-d) starts on a 16-byte boundary. */
static int rows_aligned(const sfa_tensor *t) {
  if ((uintptr_t)t->data % 16 != 0) return 0;
  for (int i = 0; i < 3; i++)
    if (sfa__util_byte_stride(t, i) % 16 != 0) return 0;
  return 1;
}

/* The launch, once validate has passed. */
static sfa_status launch(sfa_context *ctx, const sfa_tensor *o_parts, const sfa_tensor *lse_parts,
                         const sfa_tensor *o, const sfa_tensor *lse, void *stream) {
  sfa_kernel *k;
  sfa_status st = sfa__util_begin(ctx, SFA_PASS_MERGE, SFA_DTYPE_FP32, &k);
  if (st != SFA_OK) return st;

  sfa__merge_args a;
  memset(&a, 0, sizeof a);
  a.op = (uint64_t)(uintptr_t)o_parts->data;
  a.op_sb = sfa__eff_stride(o_parts, 0), a.op_sh = sfa__eff_stride(o_parts, 1);
  a.op_st = sfa__eff_stride(o_parts, 2);
  a.lp = (uint64_t)(uintptr_t)lse_parts->data;
  a.lp_sb = sfa__eff_stride(lse_parts, 0), a.lp_sh = sfa__eff_stride(lse_parts, 1);
  a.o = (uint64_t)(uintptr_t)o->data;
  a.o_sb = sfa__eff_stride(o, 0), a.o_sh = sfa__eff_stride(o, 1), a.o_st = sfa__eff_stride(o, 2);
  if (lse) {
    a.lse = (uint64_t)(uintptr_t)lse->data;
    a.l_sb = sfa__eff_stride(lse, 0), a.l_sh = sfa__eff_stride(lse, 1);
  }
  a.batch = o->shape[0];
  a.rows = o->shape[0] * o->shape[1] * o->shape[2];
  a.parts = (int32_t)(o_parts->shape[0] / o->shape[0]);
  a.heads = (int32_t)o->shape[1], a.t = (int32_t)o->shape[2], a.d = (int32_t)o->shape[3];
  a.in_dt = (int32_t)o_parts->dtype, a.out_dt = (int32_t)o->dtype;
  /* a thread per 16-byte chunk of an o_parts row, at most MERGE_CHUNKS each:
  ** the group is the power of 2 >= chunks, up to a warp */
  const int64_t chunks = (a.d * (int64_t)sfa__dtype_size(o_parts->dtype) + 15) / 16;
  int g = 1;
  while (g < 32 && g < chunks) g *= 2;
  if (chunks > (int64_t)g * MERGE_CHUNKS)
    return sfa__error(ctx, SFA_ERR_INTERNAL, "sfa_merge_attention: %lld chunks for a group of %d",
                      (long long)chunks, g);
  a.group = g;
  a.vec = rows_aligned(o_parts) | rows_aligned(o) << 1;
  const sfa__grid_dims dims = {.items = a.rows * g};
  unsigned grid[3];
  sfa__grid_size(&k->var.grid, &dims, grid);
  return sfa__util_launch(ctx, k->fn, "merge", grid[0], (unsigned)k->var.threads, 0, stream, &a);
}

sfa_status sfa_merge_attention(sfa_context *ctx, const sfa_tensor *o_parts,
                               const sfa_tensor *lse_parts, const sfa_tensor *o,
                               const sfa_tensor *lse, void *stream) {
  if (!ctx) return SFA_ERR_INVALID_ARGUMENT;
  sfa_status st = validate(ctx, o_parts, lse_parts, o, lse);
  return st != SFA_OK ? st : launch(ctx, o_parts, lse_parts, o, lse, stream);
}
