/*
** hash.c -- sfa_hash_prepare and sfa_hash_unsort: from unsorted tensors and
** bucket ids to mode hash's sorted layout and back (templates/util_hash.lt).
** Every argument is validated before the driver is touched. prepare launches
** the stable counting sort (one CTA per (batch, head)) and one row gather per
** tensor; unsort launches one row scatter. Blocks, grid rules and the launch
** constants (histogram budget, vectors per tile) are the kernels' variant
** descriptors' (gen/variant.c). The packed calls (sfa_hash_prepare_varlen,
** sfa_hash_unsort_varlen) check what their layouts change, then run the
** same checks and kernels on the views [1, H, total(, D)], with cu_seqlens
** in the argument blocks: one sort CTA per (sequence, head).
*/
#include <stdio.h>
#include <string.h>

#include "runtime/util.h"
#include "runtime/validate.h"
#include "runtime/varlen.h"

static const unsigned ROW_DTYPES =
    SFA__DTYPES(SFA_DTYPE_FP16) | SFA__DTYPES(SFA_DTYPE_BF16) | SFA__DTYPES(SFA_DTYPE_FP32);

/* ------------------------------------------------------------ validation */

/* A row tensor [B, H, T, D] and its sorted twin; ref is the [B, H, T] tensor
** that fixes B, H and T. */
static sfa_status check_pair(sfa_context *ctx, const char *xn, const sfa_tensor *x,
                             const char *sn, const sfa_tensor *xs, const char *refn,
                             const sfa_tensor *ref) {
  if (!x != !xs)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "%s: is NULL but %s is not; give both or "
                      "neither", x ? sn : xn, x ? xn : sn);
  if (!x) return SFA_OK;
  sfa_status st;
  if ((st = sfa__util_check(ctx, xn, x, 4, "[B, H, T, D]", ROW_DTYPES, 0)) ||
      (st = sfa__util_same_dims(ctx, xn, x, refn, ref, 3, "B, H and T")) ||
      (st = sfa__util_check(ctx, sn, xs, 4, "[B, H, T, D]", ROW_DTYPES, 1)))
    return st;
  if (xs->dtype != x->dtype)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "%s: dtype %s does not match %s (%s)", sn,
                      sfa__dtype_str(xs->dtype), xn, sfa__dtype_str(x->dtype));
  if ((st = sfa__util_same_dims(ctx, sn, xs, xn, x, 4, "all dimensions"))) return st;
  if ((double)x->shape[3] * (double)sfa__dtype_size(x->dtype) > 1073741824.0)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                      "%s: rows of %lld elements are over 1 GiB; not supported", xn,
                      (long long)x->shape[3]);
  return SFA_OK;
}

/* Sizes shared by both calls: (batch, head) pairs fit a grid, T fits int32. */
static sfa_status check_sizes(sfa_context *ctx, const char *nm, const sfa_tensor *t) {
  if (t->shape[2] > SFA__UTIL_MAX_T)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "%s: T = %lld; must be at most 2^30", nm,
                      (long long)t->shape[2]);
  if ((double)t->shape[0] * (double)t->shape[1] > 2147483647.0)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                      "%s: B * H = %lld * %lld; must be below 2^31", nm,
                      (long long)t->shape[0], (long long)t->shape[1]);
  return SFA_OK;
}

static sfa_status validate_prepare(sfa_context *ctx, const sfa_tensor *bucket, int nb,
                                   const sfa_tensor *x, const sfa_tensor *xs,
                                   const sfa_tensor *x2, const sfa_tensor *x2s,
                                   const sfa_tensor *idx, const sfa_tensor *hash) {
  const unsigned I32 = SFA__DTYPES(SFA_DTYPE_INT32);
  sfa_status st;
  if ((st = sfa__util_check(ctx, "bucket", bucket, 3, "[B, H, T]", I32, 0)) ||
      (st = check_sizes(ctx, "bucket", bucket)))
    return st;
  if (nb < 1 || nb > SFA_HASH_MAX_BUCKETS)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                      "num_buckets: %d; must be in [1, %d] (SFA_HASH_MAX_BUCKETS)", nb,
                      SFA_HASH_MAX_BUCKETS);
  if ((st = sfa__util_check(ctx, "idx", idx, 3, "[B, H, T]", I32, 1)) ||
      (st = sfa__util_same_dims(ctx, "idx", idx, "bucket", bucket, 3, "all dimensions")) ||
      (st = sfa__util_check(ctx, "hash", hash, 3, "[B, H, T]", I32, 1)) ||
      (st = sfa__util_same_dims(ctx, "hash", hash, "bucket", bucket, 3, "all dimensions")) ||
      (st = check_pair(ctx, "x", x, "x_sorted", xs, "bucket", bucket)) ||
      (st = check_pair(ctx, "x2", x2, "x2_sorted", x2s, "bucket", bucket)))
    return st;
  /* Every output against every input and the other outputs (x_sorted and
  ** x2_sorted may interleave). */
  const char *outn[4] = {"idx", "hash", "x_sorted", "x2_sorted"};
  const sfa_tensor *out[4] = {idx, hash, xs, x2s};
  const char *inn[3] = {"bucket", "x", "x2"};
  const sfa_tensor *in[3] = {bucket, x, x2};
  for (int o = 0; o < 4; o++) {
    if (!out[o]) continue;
    for (int i = 0; i < 3; i++)
      if (in[i] && (st = sfa__util_disjoint(ctx, outn[o], out[o], inn[i], in[i]))) return st;
    for (int p = o + 1; p < 4; p++)
      if (out[p] && !(o == 2 && p == 3) &&
          (st = sfa__util_disjoint(ctx, outn[o], out[o], outn[p], out[p])))
        return st;
  }
  return SFA_OK;
}

static sfa_status validate_unsort(sfa_context *ctx, const sfa_tensor *os, const sfa_tensor *idx,
                                  const sfa_tensor *o) {
  sfa_status st;
  if ((st = sfa__util_check(ctx, "o_sorted", os, 4, "[B, H, T', D]", ROW_DTYPES, 0)) ||
      (st = check_sizes(ctx, "o_sorted", os)) ||
      (st = sfa__util_check(ctx, "idx", idx, 3, "[B, H, T']", SFA__DTYPES(SFA_DTYPE_INT32), 0)) ||
      (st = sfa__util_same_dims(ctx, "idx", idx, "o_sorted", os, 3, "B, H and T'")) ||
      (st = sfa__util_check(ctx, "o", o, 4, "[B, H, T, D]", ROW_DTYPES, 1)) ||
      (st = check_sizes(ctx, "o", o)))
    return st;
  if (o->dtype != os->dtype)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "o: dtype %s does not match o_sorted (%s)",
                      sfa__dtype_str(o->dtype), sfa__dtype_str(os->dtype));
  if (o->shape[0] != os->shape[0] || o->shape[1] != os->shape[1] || o->shape[3] != os->shape[3]) {
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                      "o: shape [%lld, %lld, %lld, %lld] does not match o_sorted [%lld, %lld, "
                      "%lld, %lld] (B, H and D must agree)",
                      (long long)o->shape[0], (long long)o->shape[1], (long long)o->shape[2],
                      (long long)o->shape[3], (long long)os->shape[0], (long long)os->shape[1],
                      (long long)os->shape[2], (long long)os->shape[3]);
  }
  if ((double)o->shape[3] * (double)sfa__dtype_size(o->dtype) > 1073741824.0)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                      "o: rows of %lld elements are over 1 GiB; not supported",
                      (long long)o->shape[3]);
  if ((st = sfa__util_disjoint(ctx, "o", o, "o_sorted", os)) ||
      (st = sfa__util_disjoint(ctx, "o", o, "idx", idx)))
    return st;
  return SFA_OK;
}

/* ------------------------------------------------------------ launches */

/* Row gather (scatter 0: dst[i] = src[idx[i]] for the rows < rows of dst) or
** scatter (1: dst[idx[i]] = src[i] for the rows < rows of src); idx values
** outside [0, limit) are skipped. */
static sfa_status launch_permute(sfa_context *ctx, const sfa_kernel *k, const sfa_tensor *src,
                                 const sfa_tensor *dst, const sfa_tensor *idx, int scatter,
                                 const sfa_tensor *cu, void *stream) {
  const int64_t es = (int64_t)sfa__dtype_size(src->dtype);
  const int64_t rowbytes = src->shape[3] * es;
  const sfa_tensor *rows_of = scatter ? src : dst, *limit_of = scatter ? dst : src;
  sfa__permute_args a;
  memset(&a, 0, sizeof a);
  a.src = (uint64_t)(uintptr_t)src->data;
  a.s_sb = sfa__util_byte_stride(src, 0), a.s_sh = sfa__util_byte_stride(src, 1);
  a.s_st = sfa__util_byte_stride(src, 2);
  a.dst = (uint64_t)(uintptr_t)dst->data;
  a.d_sb = sfa__util_byte_stride(dst, 0), a.d_sh = sfa__util_byte_stride(dst, 1);
  a.d_st = sfa__util_byte_stride(dst, 2);
  a.idx = (uint64_t)(uintptr_t)idx->data;
  a.i_sb = sfa__eff_stride(idx, 0), a.i_sh = sfa__eff_stride(idx, 1);
  a.i_st = sfa__eff_stride(idx, 2);

  /* The widest copy unit that every row start and the row length allow. */
  int vb = 16;
  for (; vb > 1; vb >>= 1) {
    if (rowbytes % vb || a.src % (uint64_t)vb || a.dst % (uint64_t)vb) continue;
    if (a.s_sb % vb || a.s_sh % vb || a.s_st % vb || a.d_sb % vb || a.d_sh % vb || a.d_st % vb)
      continue;
    break;
  }
  a.vbytes = vb;
  a.nvec = (int32_t)(rowbytes / vb);
  /* a tile: var.util.unroll vectors in flight per thread of the block */
  const int tv = k->var.util.tile_vectors;
  a.rows_per_tile = a.nvec >= tv ? 1 : tv / a.nvec;
  a.heads = (int32_t)src->shape[1];
  a.rows = (int32_t)rows_of->shape[2];
  a.limit = (int32_t)limit_of->shape[2];
  a.tiles_per_bh = (a.rows + a.rows_per_tile - 1) / a.rows_per_tile;
  a.tiles = src->shape[0] * src->shape[1] * a.tiles_per_bh;
  a.scatter = scatter;
  if (cu) a.cu = (uint64_t)(uintptr_t)cu->data, a.batch = (int32_t)(cu->shape[0] - 1);
  const sfa__grid_dims dims = {.items = a.tiles}; /* grid-stride past max_x CTAs */
  unsigned g[3];
  sfa__grid_size(&k->var.grid, &dims, g);
  return sfa__util_launch(ctx, k->fn, "permute", g[0], (unsigned)k->var.threads, 0, stream, &a);
}

/* The launches of a validated prepare; cu NULL for a fixed-length batch, else
** the tensors are the packed ones' views [1, H, total(, D)] and the sort runs
** one CTA per (sequence, head). */
static sfa_status prepare(sfa_context *ctx, const sfa_tensor *bucket, int num_buckets,
                          const sfa_tensor *x, const sfa_tensor *x_sorted, const sfa_tensor *x2,
                          const sfa_tensor *x2_sorted, const sfa_tensor *idx,
                          const sfa_tensor *hash, const sfa_tensor *cu, void *stream) {
  sfa_status st;
  sfa__device dev;
  sfa_kernel *sort, *perm = NULL;
  if ((st = sfa__bind(ctx, &dev)) != SFA_OK ||
      (st = sfa__util_kernel(ctx, &dev, SFA_PASS_HASH_SORT, SFA_DTYPE_INT32, &sort)) != SFA_OK)
    return st;
  if ((x || x2) &&
      (st = sfa__util_kernel(ctx, &dev, SFA_PASS_PERMUTE, SFA_DTYPE_UINT8, &perm)) != SFA_OK)
    return st;

  sfa__hash_sort_args a;
  memset(&a, 0, sizeof a);
  a.bucket = (uint64_t)(uintptr_t)bucket->data;
  a.bk_sb = sfa__eff_stride(bucket, 0), a.bk_sh = sfa__eff_stride(bucket, 1);
  a.bk_st = sfa__eff_stride(bucket, 2);
  a.idx = (uint64_t)(uintptr_t)idx->data;
  a.ix_sb = sfa__eff_stride(idx, 0), a.ix_sh = sfa__eff_stride(idx, 1);
  a.ix_st = sfa__eff_stride(idx, 2);
  a.hash = (uint64_t)(uintptr_t)hash->data;
  a.hs_sb = sfa__eff_stride(hash, 0), a.hs_sh = sfa__eff_stride(hash, 1);
  a.hs_st = sfa__eff_stride(hash, 2);
  a.heads = (int32_t)bucket->shape[1];
  a.t = (int32_t)bucket->shape[2];
  a.nb = num_buckets;
  const int64_t groups = cu ? cu->shape[0] - 1 : bucket->shape[0]; /* sequences or batches */
  if (cu) a.cu = (uint64_t)(uintptr_t)cu->data, a.batch = (int32_t)groups;
  /* As many warps (segments) as the histograms' shared memory allows, up to
  ** the kernel's block, and no more than one per min_warp_items tokens (of
  ** the total when packed: the kernel idles those a short sequence does not
  ** need). */
  const sfa__variant *v = &sort->var;
  const int64_t table = ((int64_t)num_buckets + 1) * 4, per = v->util.min_warp_items;
  int64_t warps = (int64_t)v->util.smem_max / table;
  if (warps > v->warps) warps = v->warps;
  if (warps > (a.t + per - 1) / per) warps = (a.t + per - 1) / per;
  if (warps < 1) warps = 1;
  const sfa__grid_dims dims = {.items = groups * bucket->shape[1]};
  unsigned g[3];
  sfa__grid_size(&v->grid, &dims, g);
  if ((st = sfa__util_launch(ctx, sort->fn, "hash_sort", g[0], (unsigned)(32 * warps),
                             (unsigned)(warps * table), stream, &a)) != SFA_OK)
    return st;
  if (x && (st = launch_permute(ctx, perm, x, x_sorted, idx, 0, cu, stream)) != SFA_OK) return st;
  if (x2 && (st = launch_permute(ctx, perm, x2, x2_sorted, idx, 0, cu, stream)) != SFA_OK)
    return st;
  return SFA_OK;
}

sfa_status sfa_hash_prepare(sfa_context *ctx, const sfa_tensor *bucket, int num_buckets,
                            const sfa_tensor *x, const sfa_tensor *x_sorted,
                            const sfa_tensor *x2, const sfa_tensor *x2_sorted,
                            const sfa_tensor *idx, const sfa_tensor *hash, void *stream) {
  if (!ctx) return SFA_ERR_INVALID_ARGUMENT;
  sfa_status st = validate_prepare(ctx, bucket, num_buckets, x, x_sorted, x2, x2_sorted, idx,
                                   hash);
  if (st != SFA_OK) return st;
  return prepare(ctx, bucket, num_buckets, x, x_sorted, x2, x2_sorted, idx, hash, NULL, stream);
}

sfa_status sfa_hash_unsort(sfa_context *ctx, const sfa_tensor *o_sorted, const sfa_tensor *idx,
                           const sfa_tensor *o, void *stream) {
  if (!ctx) return SFA_ERR_INVALID_ARGUMENT;
  sfa_status st = validate_unsort(ctx, o_sorted, idx, o);
  if (st != SFA_OK) return st;
  sfa_kernel *perm;
  if ((st = sfa__util_begin(ctx, SFA_PASS_PERMUTE, SFA_DTYPE_UINT8, &perm)) != SFA_OK) return st;
  return launch_permute(ctx, perm, o_sorted, o, idx, 1, NULL, stream);
}

/* ------------------------------------------------------------ packed sequences */

/* A packed row tensor [total, H, D] (q's layout) whose total and H are those
** of ref, an [H, total] array: what the fixed-length checks of its view
** cannot name. NULL passes (check_pair pairs it). */
static sfa_status check_packed_rows(sfa_context *ctx, const char *nm, const sfa_tensor *t,
                                    const char *refnm, const sfa_tensor *ref, int is_output) {
  if (!t) return SFA_OK;
  sfa_status st = sfa__util_check(ctx, nm, t, 3, "[total, H, D]", ROW_DTYPES, is_output);
  if (st != SFA_OK) return st;
  if (t->shape[0] != ref->shape[1] || t->shape[1] != ref->shape[0])
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                      "%s: shape [%lld, %lld, %lld] does not match %s [H, total] = [%lld, %lld] "
                      "(%s is [total, H, D]: total and H must agree)",
                      nm, (long long)t->shape[0], (long long)t->shape[1], (long long)t->shape[2],
                      refnm, (long long)ref->shape[0], (long long)ref->shape[1], nm);
  return SFA_OK;
}

/* cu_seqlens [B + 1] of a packed call over ref [H, total] (its layout; B * H
** CTAs fit a grid), and disjoint from the outputs. */
static sfa_status check_packed_cu(sfa_context *ctx, const sfa_tensor *cu, const char *refnm,
                                  const sfa_tensor *ref, const char *const *outn,
                                  const sfa_tensor *const *out, int nout) {
  sfa_status st = sfa__varlen_check_cu(ctx, "cu_seqlens", cu);
  if (st != SFA_OK) return st;
  if ((double)(cu->shape[0] - 1) * (double)ref->shape[0] > 2147483647.0)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                      "cu_seqlens: B * H = %lld * %lld (H from %s); must be below 2^31",
                      (long long)(cu->shape[0] - 1), (long long)ref->shape[0], refnm);
  for (int i = 0; i < nout; i++)
    if (out[i] && (st = sfa__util_disjoint(ctx, outn[i], out[i], "cu_seqlens", cu))) return st;
  return SFA_OK;
}

sfa_status sfa_hash_prepare_varlen(sfa_context *ctx, const sfa_tensor *cu_seqlens,
                                   const sfa_tensor *bucket, int num_buckets,
                                   const sfa_tensor *x, const sfa_tensor *x_sorted,
                                   const sfa_tensor *x2, const sfa_tensor *x2_sorted,
                                   const sfa_tensor *idx, const sfa_tensor *hash, void *stream) {
  if (!ctx) return SFA_ERR_INVALID_ARGUMENT;
  const unsigned I32 = SFA__DTYPES(SFA_DTYPE_INT32);
  sfa_status st;
  if ((st = sfa__util_check(ctx, "bucket", bucket, 2, "[H, total]", I32, 0)) ||
      (st = sfa__util_check(ctx, "idx", idx, 2, "[H, total]", I32, 1)) ||
      (st = sfa__util_same_dims(ctx, "idx", idx, "bucket", bucket, 2, "all dimensions")) ||
      (st = sfa__util_check(ctx, "hash", hash, 2, "[H, total]", I32, 1)) ||
      (st = sfa__util_same_dims(ctx, "hash", hash, "bucket", bucket, 2, "all dimensions")) ||
      (st = check_packed_rows(ctx, "x", x, "bucket", bucket, 0)) ||
      (st = check_packed_rows(ctx, "x_sorted", x_sorted, "bucket", bucket, 1)) ||
      (st = check_packed_rows(ctx, "x2", x2, "bucket", bucket, 0)) ||
      (st = check_packed_rows(ctx, "x2_sorted", x2_sorted, "bucket", bucket, 1)))
    return st;
  const char *outn[4] = {"idx", "hash", "x_sorted", "x2_sorted"};
  const sfa_tensor *out[4] = {idx, hash, x_sorted, x2_sorted};
  if ((st = check_packed_cu(ctx, cu_seqlens, "bucket", bucket, outn, out, 4))) return st;
  /* The rest (dtypes, pairs, sizes, overlaps) as the fixed-length call of
  ** one batch of the total length checks it. */
  sfa_tensor vb, vx, vxs, vx2, vx2s, vi, vh;
  const sfa_tensor *b1 = sfa__varlen_view_rowwise(bucket, &vb),
                   *x1 = sfa__varlen_view_rows(x, &vx), *xs1 = sfa__varlen_view_rows(x_sorted, &vxs),
                   *y1 = sfa__varlen_view_rows(x2, &vx2),
                   *ys1 = sfa__varlen_view_rows(x2_sorted, &vx2s),
                   *i1 = sfa__varlen_view_rowwise(idx, &vi), *h1 = sfa__varlen_view_rowwise(hash, &vh);
  if ((st = validate_prepare(ctx, b1, num_buckets, x1, xs1, y1, ys1, i1, h1))) return st;
  return prepare(ctx, b1, num_buckets, x1, xs1, y1, ys1, i1, h1, cu_seqlens, stream);
}

sfa_status sfa_hash_unsort_varlen(sfa_context *ctx, const sfa_tensor *cu_seqlens,
                                  const sfa_tensor *o_sorted, const sfa_tensor *idx,
                                  const sfa_tensor *o, void *stream) {
  if (!ctx) return SFA_ERR_INVALID_ARGUMENT;
  sfa_status st;
  if ((st = sfa__util_check(ctx, "idx", idx, 2, "[H, total]", SFA__DTYPES(SFA_DTYPE_INT32), 0)) ||
      (st = sfa__util_check(ctx, "o_sorted", o_sorted, 3, "[total, H, D]", ROW_DTYPES, 0)) ||
      (st = check_packed_rows(ctx, "o_sorted", o_sorted, "idx", idx, 0)))
    return st;
  if (!o) return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "o: is NULL");
  if ((st = check_packed_rows(ctx, "o", o, "idx", idx, 1))) return st;
  const char *outn[1] = {"o"};
  const sfa_tensor *out[1] = {o};
  if ((st = check_packed_cu(ctx, cu_seqlens, "idx", idx, outn, out, 1))) return st;
  sfa_tensor vos, vi, vo;
  const sfa_tensor *os1 = sfa__varlen_view_rows(o_sorted, &vos),
                   *i1 = sfa__varlen_view_rowwise(idx, &vi), *o1 = sfa__varlen_view_rows(o, &vo);
  if ((st = validate_unsort(ctx, os1, i1, o1))) return st;
  sfa_kernel *perm;
  if ((st = sfa__util_begin(ctx, SFA_PASS_PERMUTE, SFA_DTYPE_UINT8, &perm)) != SFA_OK) return st;
  return launch_permute(ctx, perm, os1, o1, i1, 1, cu_seqlens, stream);
}
