/*
** varlen.c -- packed variable-length batches in sfa_forward and sfa_backward
** (varlen.h): the checks where a packed call differs from a fixed-length one,
** and its views as the fixed-length call of one batch of the total lengths.
** The values of cu_seqlens_q / _k live on the device and are not read here
** (no synchronisation in a launch): sfa_check_indices checks them. A window
** bias, mask and dbias are [Hb, total_q|1, Kmax], viewed as [1, Hb,
** total_q|1, Kmax]; their column count Kmax goes to the kernels (kmax),
** which mask the keys at or past it.
*/
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "gen/gen_internal.h"
#include "gen/mode.h"
#include "runtime/internal.h"
#include "runtime/validate.h"
#include "runtime/varlen.h"

sfa_status sfa__varlen_check_cu(sfa_context *ctx, const char *nm, const sfa_tensor *t) {
  const sfa_status bad = SFA_ERR_INVALID_ARGUMENT;
  if (!t) return sfa__error(ctx, bad, "%s: is NULL", nm);
  if (t->dtype != SFA_DTYPE_INT32)
    return sfa__error(ctx, bad, "%s: dtype %s, expected int32 (prefix sums of the lengths)", nm,
                      sfa__dtype_str(t->dtype));
  if (t->rank != 1)
    return sfa__error(ctx, bad, "%s.rank: %d; must be 1 ([B + 1], prefix sums of the lengths)",
                      nm, t->rank);
  if (t->shape[0] < 2 || t->shape[0] - 1 > INT32_MAX)
    return sfa__error(ctx, bad, "%s: shape [%lld]; must be [B + 1] with 1 <= B <= %d", nm,
                      (long long)t->shape[0], INT32_MAX);
  if (t->strides[0] != 1)
    return sfa__error(ctx, bad, "%s: stride[0] is %lld; must be contiguous (stride 1)", nm,
                      (long long)t->strides[0]);
  if (!t->data) return sfa__error(ctx, bad, "%s: data is NULL", nm);
  if ((uintptr_t)t->data % 4 != 0)
    return sfa__error(ctx, bad, "%s: data %p is not 4-byte aligned", nm, t->data);
  return SFA_OK;
}

/* A packed q, k, v, o or gradient [total, H, D]: its head dim (first, as the
** fixed-length checks name it) and its layout. */
static sfa_status check_rows(sfa_context *ctx, const char *nm, const sfa_tensor *t,
                             const char *layout, int is_output) {
  if (!t) return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "%s: is NULL", nm);
  if (t->rank != 3)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                      "%s.rank: %d; must be 3 (%s: packed sequences, extras->cu_seqlens_q/_k)",
                      nm, t->rank, layout);
  const int64_t D = t->shape[2];
  if (D >= 1 && (D < 32 || D > 256 || D % 16 != 0))
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                      "%s: head dim (shape[2]) %lld is not supported; must be a multiple of 16 "
                      "in 32..256",
                      nm, (long long)D);
  return sfa__check_layout(ctx, nm, t, 3, layout, 8, 16, 0, is_output);
}

/* t has the shape of ref (both 3-d). */
static sfa_status check_same_shape(sfa_context *ctx, const char *nm, const sfa_tensor *t,
                                   const char *refnm, const sfa_tensor *ref) {
  for (int i = 0; i < 3; i++)
    if (t->shape[i] != ref->shape[i]) {
      char a[96], b[96];
      sfa__tensor_shape_str(t, a, sizeof a);
      sfa__tensor_shape_str(ref, b, sizeof b);
      return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "%s: shape %s does not match %s %s", nm,
                        a, refnm, b);
    }
  return SFA_OK;
}

/* A per-row array [H, total] (lse: float32, index arrays: int32),
** contiguous along time. */
static sfa_status check_rowwise(sfa_context *ctx, const char *nm, const sfa_tensor *t,
                                sfa_dtype want, int64_t H, int64_t T, const char *layout,
                                int is_output) {
  const sfa_status bad = SFA_ERR_INVALID_ARGUMENT;
  if (t->dtype != want)
    return sfa__error(ctx, bad, "%s: dtype %s; must be %s", nm, sfa__dtype_str(t->dtype),
                      sfa__dtype_str(want));
  if (t->rank != 2)
    return sfa__error(ctx, bad, "%s.rank: %d; must be 2 (%s: packed sequences)", nm, t->rank,
                      layout);
  sfa_status st = sfa__check_layout(ctx, nm, t, 2, layout, 1, 4, 0, is_output);
  if (st != SFA_OK) return st;
  if (t->shape[0] != H || t->shape[1] != T) {
    char a[96];
    sfa__tensor_shape_str(t, a, sizeof a);
    return sfa__error(ctx, bad, "%s: shape %s does not match %s = [%lld, %lld]", nm, a, layout,
                      (long long)H, (long long)T);
  }
  return SFA_OK;
}

/* A packed window bias, mask or dbias [Hb, total_q|1, Kmax]: Hb is Hq, Hkv or
** 1, the rows total_q or 1 (broadcast), Kmax any column count (the kernel
** masks keys at or past it). The dtype and the mask's 16-byte rules are
** checked on the view by the fixed-length checks (runtime/validate.c). */
static sfa_status check_cols(sfa_context *ctx, const char *nm, const sfa_tensor *t,
                             size_t elem, int64_t Hq, int64_t Hkv, int64_t Tq, int is_output) {
  const sfa_status bad = SFA_ERR_INVALID_ARGUMENT;
  const char *L = "[Hb, total_q or 1, Kmax]: packed sequences, extras->cu_seqlens_q/_k";
  sfa_status st = sfa__check_layout(ctx, nm, t, 3, L, 1, elem, 0, is_output);
  if (st != SFA_OK) return st;
  const int64_t *s = t->shape;
  if (s[0] != Hq && s[0] != Hkv && s[0] != 1)
    return sfa__error(ctx, bad,
                      "%s: shape[0] (heads) is %lld; must be Hq (%lld), Hkv (%lld) or 1 (%s)",
                      nm, (long long)s[0], (long long)Hq, (long long)Hkv, L);
  if (s[1] != Tq && s[1] != 1)
    return sfa__error(ctx, bad,
                      "%s: shape[1] (query rows) is %lld; must be total_q (%lld) or 1 (%s)", nm,
                      (long long)s[1], (long long)Tq, L);
  if (s[2] > INT32_MAX)
    return sfa__error(ctx, bad, "%s: shape[2] (Kmax, the key columns) is %lld; at most %d", nm,
                      (long long)s[2], INT32_MAX);
  return SFA_OK;
}

/* [total, H, D] as [1, H, total, D]; [H, total] as [1, H, total]. */
const sfa_tensor *sfa__varlen_view_rows(const sfa_tensor *t, sfa_tensor *out) {
  if (!t) return NULL;
  *out = *t;
  out->rank = 4;
  out->shape[0] = 1, out->shape[1] = t->shape[1], out->shape[2] = t->shape[0];
  out->shape[3] = t->shape[2];
  out->strides[0] = 0, out->strides[1] = t->strides[1], out->strides[2] = t->strides[0];
  out->strides[3] = t->strides[2];
  return out;
}

/* [Hb, R, Kmax] as [1, Hb, R, Kmax]. */
static const sfa_tensor *view_cols(const sfa_tensor *t, sfa_tensor *out) {
  if (!t) return NULL;
  *out = *t;
  out->rank = 4;
  for (int i = 3; i > 0; i--) out->shape[i] = t->shape[i - 1], out->strides[i] = t->strides[i - 1];
  out->shape[0] = 1, out->strides[0] = 0;
  return out;
}

const sfa_tensor *sfa__varlen_view_rowwise(const sfa_tensor *t, sfa_tensor *out) {
  if (!t) return NULL;
  *out = *t;
  out->rank = 3;
  out->shape[0] = 1, out->shape[1] = t->shape[0], out->shape[2] = t->shape[1];
  out->strides[0] = 0, out->strides[1] = t->strides[0], out->strides[2] = t->strides[1];
  return out;
}

sfa_status sfa__varlen_check_pair(sfa_context *ctx, const sfa_attention_params *params,
                                  const sfa_extras *ex) {
  const sfa_status bad = SFA_ERR_INVALID_ARGUMENT;
  if (!ex->cu_seqlens_q || !ex->cu_seqlens_k)
    return sfa__error(ctx, bad,
                      "extras->%s: is NULL but %s is given; packed sequences need both "
                      "cu_seqlens_q and cu_seqlens_k",
                      ex->cu_seqlens_q ? "cu_seqlens_k" : "cu_seqlens_q",
                      ex->cu_seqlens_q ? "cu_seqlens_q" : "cu_seqlens_k");
  sfa_status st;
  if ((st = sfa__varlen_check_cu(ctx, "extras->cu_seqlens_q", ex->cu_seqlens_q)) != SFA_OK ||
      (st = sfa__varlen_check_cu(ctx, "extras->cu_seqlens_k", ex->cu_seqlens_k)) != SFA_OK)
    return st;
  if (ex->cu_seqlens_k->shape[0] != ex->cu_seqlens_q->shape[0])
    return sfa__error(ctx, bad,
                      "extras->cu_seqlens_k: shape [%lld] but cu_seqlens_q's is [%lld]; both "
                      "are [B + 1] for the same B sequences",
                      (long long)ex->cu_seqlens_k->shape[0],
                      (long long)ex->cu_seqlens_q->shape[0]);
  return sfa__validate_params(ctx, params);
}

sfa_status sfa__varlen_index_views(sfa_context *ctx, const sfa_extras *ex, int64_t Hq,
                                   int64_t Tq, int64_t Hkv, int64_t Tk, sfa__varlen *vl) {
  sfa_status st;
  struct {
    const char *nm;
    const sfa_tensor *t;
    int k_side;
  } idx[4] = {{"extras->q_idx", ex->q_idx, 0}, {"extras->k_idx", ex->k_idx, 1},
              {"extras->q_hash", ex->q_hash, 0}, {"extras->k_hash", ex->k_hash, 1}};
  for (int i = 0; i < 4; i++)
    if (idx[i].t && (st = check_rowwise(ctx, idx[i].nm, idx[i].t, SFA_DTYPE_INT32,
                                        idx[i].k_side ? Hkv : Hq, idx[i].k_side ? Tk : Tq,
                                        idx[i].k_side ? "[Hkv, total_k]" : "[Hq, total_q]",
                                        0)) != SFA_OK)
      return st;
  vl->ex = *ex;
  vl->ex.q_idx = sfa__varlen_view_rowwise(ex->q_idx, &vl->q_idx);
  vl->ex.k_idx = sfa__varlen_view_rowwise(ex->k_idx, &vl->k_idx);
  vl->ex.q_hash = sfa__varlen_view_rowwise(ex->q_hash, &vl->q_hash);
  vl->ex.k_hash = sfa__varlen_view_rowwise(ex->k_hash, &vl->k_hash);
  return SFA_OK;
}

sfa_status sfa__varlen_prepare(sfa_context *ctx, const sfa_attention_params *params,
                               const sfa__varlen_call *c, sfa__varlen *vl) {
  const sfa_status bad = SFA_ERR_INVALID_ARGUMENT;
  memset(vl, 0, sizeof *vl);
  const sfa_extras *ex = *c->extras;
  if (!ex || (!ex->cu_seqlens_q && !ex->cu_seqlens_k)) return SFA_OK;
  sfa_status st = sfa__varlen_check_pair(ctx, params, ex);
  if (st != SFA_OK) return st;

  const char *QL = "[total_q, Hq, D]", *KL = "[total_k, Hkv, D]";
  const sfa_tensor *q = *c->q, *k = *c->k, *v = *c->v, *o = *c->o;
  if ((st = check_rows(ctx, "q", q, QL, 0)) != SFA_OK ||
      (st = check_rows(ctx, "k", k, KL, 0)) != SFA_OK ||
      (st = check_rows(ctx, "v", v, KL, 0)) != SFA_OK ||
      (st = check_rows(ctx, "o", o, QL, 1)) != SFA_OK ||
      (st = check_same_shape(ctx, "v", v, "k", k)) != SFA_OK ||
      (st = check_same_shape(ctx, "o", o, "q", q)) != SFA_OK)
    return st;
  if (k->shape[2] != q->shape[2])
    return sfa__error(ctx, bad, "k: shape[2] (head dim) is %lld but q's is %lld",
                      (long long)k->shape[2], (long long)q->shape[2]);
  const sfa_tensor *lse = c->lse ? *c->lse : NULL;
  if (lse && (st = check_rowwise(ctx, "lse", lse, SFA_DTYPE_FP32, q->shape[1], q->shape[0],
                                 "[Hq, total_q]", 1)) != SFA_OK)
    return st;
  if ((st = sfa__varlen_index_views(ctx, ex, q->shape[1], q->shape[0], k->shape[1],
                                    k->shape[0], vl)) != SFA_OK)
    return st;
  /* window: the bias, mask and dbias [Hb, total_q|1, Kmax] */
  const sfa_tensor *dbias = c->dbias ? *c->dbias : NULL;
  if ((ex->bias && (st = check_cols(ctx, "extras->bias", ex->bias, 2, q->shape[1], k->shape[1],
                                    q->shape[0], 0)) != SFA_OK) ||
      (ex->mask && (st = check_cols(ctx, "extras->mask", ex->mask, 1, q->shape[1], k->shape[1],
                                    q->shape[0], 0)) != SFA_OK))
    return st;
  if (dbias && ex->bias) {
    if ((st = check_cols(ctx, "dbias", dbias, 2, q->shape[1], k->shape[1], q->shape[0], 1)) !=
        SFA_OK)
      return st;
    if (dbias->shape[0] != ex->bias->shape[0] || dbias->shape[1] != ex->bias->shape[1] ||
        dbias->shape[2] != ex->bias->shape[2]) {
      char a[96], b[96];
      sfa__tensor_shape_str(dbias, a, sizeof a);
      sfa__tensor_shape_str(ex->bias, b, sizeof b);
      return sfa__error(ctx, bad, "dbias: shape %s does not match extras->bias %s", a, b);
    }
    if (dbias->shape[1] == 1 && q->shape[0] > 1 && ex->cu_seqlens_q->shape[0] > 2 &&
        params->deterministic)
      return sfa__error(ctx, SFA_ERR_UNSUPPORTED,
                        "dbias: its one row (shape[1] = 1) is the sum over every sequence's "
                        "queries, which the backward adds with float atomics across "
                        "sequences; params.deterministic = 1 excludes them (give the bias "
                        "total_q rows, or deterministic = 0)");
  }
  vl->ex.bias = view_cols(ex->bias, &vl->bias);
  vl->ex.mask = view_cols(ex->mask, &vl->mask);
  vl->kmax = INT32_MAX;
  if (ex->bias) vl->kmax = ex->bias->shape[2];
  if (ex->mask && ex->mask->shape[2] < vl->kmax) vl->kmax = ex->mask->shape[2];
  /* the backward's tensors */
  struct {
    const char *nm;
    const sfa_tensor **t;
    const char *refnm;
    const sfa_tensor *ref;
    int out;
  } grads[4] = {{"dout", c->dout, "o", o, 0}, {"dq", c->dq, "q", q, 1},
                {"dk", c->dk, "k", k, 1}, {"dv", c->dv, "v", v, 1}};
  for (int i = 0; i < 4; i++) {
    if (!grads[i].t) continue;
    const sfa_tensor *t = *grads[i].t;
    if ((st = check_rows(ctx, grads[i].nm, t, i < 2 ? QL : KL, grads[i].out)) != SFA_OK ||
        (st = check_same_shape(ctx, grads[i].nm, t, grads[i].refnm, grads[i].ref)) != SFA_OK)
      return st;
  }

  vl->on = 1;
  vl->batch = ex->cu_seqlens_q->shape[0] - 1;
  vl->cu_q = ex->cu_seqlens_q, vl->cu_k = ex->cu_seqlens_k;
  *c->extras = &vl->ex;
  *c->q = sfa__varlen_view_rows(q, &vl->q);
  *c->k = sfa__varlen_view_rows(k, &vl->k);
  *c->v = sfa__varlen_view_rows(v, &vl->v);
  *c->o = sfa__varlen_view_rows(o, &vl->o);
  if (c->lse) *c->lse = sfa__varlen_view_rowwise(lse, &vl->lse);
  if (c->dout) *c->dout = sfa__varlen_view_rows(*c->dout, &vl->dout);
  if (c->dq) *c->dq = sfa__varlen_view_rows(*c->dq, &vl->dq);
  if (c->dk) *c->dk = sfa__varlen_view_rows(*c->dk, &vl->dk);
  if (c->dv) *c->dv = sfa__varlen_view_rows(*c->dv, &vl->dv);
  if (dbias && ex->bias) *c->dbias = view_cols(dbias, &vl->dbias);
  return SFA_OK;
}

/* ------------------------------------------------------------ values (host) */

sfa_status sfa__check_seqlens(const char *nm, const int32_t *cu, int64_t n, int64_t total,
                              char *err, size_t errlen) {
  const sfa_status bad = SFA_ERR_INVALID_ARGUMENT;
  if (n < 2) return sfa__fail(err, errlen, bad, "%s: %lld entries; must be B + 1 >= 2", nm,
                              (long long)n);
  if (cu[0] != 0)
    return sfa__fail(err, errlen, bad, "%s[0] is %d; the prefix sums start at 0", nm, cu[0]);
  for (int64_t b = 1; b < n; b++)
    if (cu[b] < cu[b - 1])
      return sfa__fail(err, errlen, bad,
                       "%s[%lld] is %d, less than %s[%lld] = %d; the prefix sums of the "
                       "lengths never decrease",
                       nm, (long long)b, cu[b], nm, (long long)(b - 1), cu[b - 1]);
  if (cu[n - 1] != total)
    return sfa__fail(err, errlen, bad,
                     "%s[%lld] (the last) is %d but the packed tensors have %lld rows "
                     "(shape[0])",
                     nm, (long long)(n - 1), cu[n - 1], (long long)total);
  return SFA_OK;
}

sfa_status sfa__check_index_arrays_varlen(sfa_mode mode, int64_t B, int64_t Hq, int64_t Hkv,
                                          int64_t Tq, int64_t Tk, const int32_t *cq,
                                          const int32_t *ck, const int32_t *q_idx,
                                          const int32_t *k_idx, const int32_t *q_hash,
                                          const int32_t *k_hash, char *err, size_t errlen) {
  const sfa__mode *m = sfa__mode_find(mode);
  if (!m || !m->check_index_row)
    return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT, "params.mode: %d has no index arrays",
                     (int)mode);
  sfa_status st;
  if ((st = sfa__check_seqlens("extras->cu_seqlens_q", cq, B + 1, Tq, err, errlen)) ||
      (st = sfa__check_seqlens("extras->cu_seqlens_k", ck, B + 1, Tk, err, errlen)))
    return st;
  for (int64_t b = 0; b < B; b++) {
    for (int64_t h = 0; h < Hq; h++) {
      const size_t at = (size_t)h * (size_t)Tq + (size_t)cq[b];
      if ((st = m->check_index_row(0, q_idx + at, q_hash ? q_hash + at : NULL, (long long)b,
                                   (long long)h, (long long)(cq[b + 1] - cq[b]), err, errlen)))
        return st;
    }
    for (int64_t h = 0; h < Hkv; h++) {
      const size_t at = (size_t)h * (size_t)Tk + (size_t)ck[b];
      if ((st = m->check_index_row(1, k_idx + at, k_hash ? k_hash + at : NULL, (long long)b,
                                   (long long)h, (long long)(ck[b + 1] - ck[b]), err, errlen)))
        return st;
    }
  }
  return SFA_OK;
}
