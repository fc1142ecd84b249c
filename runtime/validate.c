/*
** validate.c -- the argument checks of sfa_forward, sfa_backward and
** sfa_check_indices: params, q/k/v/o/lse and the gradients (shapes, dtypes,
** strides, 16-byte alignment, overlap of outputs) and the extras of each mode
** (see validate.h). Extras that a mode does not read must be NULL: they are
** rejected, never silently ignored.
*/
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "runtime/internal.h"
#include "gen/gen_internal.h"
#include "gen/mode.h"
#include "runtime/util.h"
#include "runtime/validate.h"

#define GRID_YZ_MAX 65535 /* gridDim.y and gridDim.z limit */

static const char *dim_names[SFA_MAX_RANK] = {"batch", "heads", "time", "head dim"};

void sfa__tensor_shape_str(const sfa_tensor *t, char *buf, size_t n) {
  size_t at = (size_t)snprintf(buf, n, "[");
  for (int i = 0; i < t->rank && i < SFA_MAX_RANK && at < n; i++)
    at += (size_t)snprintf(buf + at, n - at, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
  if (at < n) snprintf(buf + at, n - at, "]");
}

/* Elements of t overlap (some index pairs share an address): sort the dims
** that have extent > 1 by stride; each stride must exceed the span of the
** smaller ones. Assumes the strides are >= 0 and the span fits (checked first). */
int sfa__tensor_self_overlapping(const sfa_tensor *t) {
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

sfa_status sfa__check_layout(sfa_context *ctx, const char *nm, const sfa_tensor *t, int rank,
                             const char *layout, int64_t mult, size_t align, int64_t max_dim,
                             int is_output) {
  if (t->rank != rank)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "%s.rank: %d; must be %d (%s)", nm, t->rank,
                      rank, layout);
  for (int i = 0; i < rank; i++) {
    if (t->shape[i] < 1 && max_dim <= 0)
      return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                        "%s: shape[%d] is %lld; every dimension must be >= 1 (%s)", nm, i,
                        (long long)t->shape[i], layout);
    if (max_dim > 0 && (t->shape[i] < 1 || t->shape[i] > max_dim))
      return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                        "%s: shape[%d] is %lld; every dimension must be in [1, %lld] (%s)", nm, i,
                        (long long)t->shape[i], (long long)max_dim, layout);
  }
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
    span += (double)s * (double)(t->shape[i] - 1);
  }
  /* Before the multiples: sfa_tensor_init saturates a stride that int64 cannot
  ** hold at INT64_MAX, and such a shape is the problem to name. */
  if (span > 4611686018427387904.0) /* 2^62 */
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                      "%s: shape and strides address more than 2^62 elements", nm);
  for (int i = 0; i < rank - 1; i++)
    if (t->shape[i] != 1 && t->strides[i] % mult != 0)
      return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                        "%s: stride[%d] is %lld; it must be a multiple of %lld elements "
                        "(16 bytes)",
                        nm, i, (long long)t->strides[i], (long long)mult);
  if (is_output && sfa__tensor_self_overlapping(t)) {
    char shape[96];
    sfa__tensor_shape_str(t, shape, sizeof shape);
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                      "%s: its strides make elements overlap (shape %s); an output must not "
                      "alias itself",
                      nm, shape);
  }
  return SFA_OK;
}

static sfa_status check_half(sfa_context *ctx, const char *nm, const sfa_tensor *t,
                             const sfa_tensor *q, int is_output) {
  if (t != q && t->dtype != q->dtype)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "%s: dtype %s does not match q (%s)", nm,
                      sfa__dtype_str(t->dtype), sfa__dtype_str(q->dtype));
  return sfa__check_layout(ctx, nm, t, 4, "[B, H, T, D]", 8, 16, 0, is_output);
}

sfa_status sfa__check_disjoint(sfa_context *ctx, const sfa__named_tensor *out, size_t nout,
                               const sfa__named_tensor *in, size_t nin) {
  sfa_status st;
  for (size_t i = 0; i < nout; i++) {
    if (!out[i].t) continue;
    for (size_t j = 0; j < nin; j++)
      if (in[j].t && (st = sfa__util_disjoint(ctx, out[i].nm, out[i].t, in[j].nm, in[j].t)))
        return st;
    for (size_t j = i + 1; j < nout; j++)
      if (out[j].t && (st = sfa__util_disjoint(ctx, out[i].nm, out[i].t, out[j].nm, out[j].t)))
        return st;
  }
  return SFA_OK;
}

/* The head dim comes first: an unsupported one would otherwise show up as a
** stride error (rows of 36 elements are not 16-byte aligned). q's head dim
** must be supported and each of others[] (4-d, fp16/bf16) must have it. A
** tensor of another rank or a dim < 1 is left to the layout checks. */
static sfa_status check_head_dims(sfa_context *ctx, const sfa_tensor *q,
                                  const sfa__named_tensor *others, size_t n) {
  if (q->rank != 4 || q->shape[3] < 1) return SFA_OK;
  const int64_t D = q->shape[3];
  if (D < 32 || D > 256 || D % 16 != 0)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                      "q: head dim (shape[3]) %lld is not supported; must be a multiple of 16 "
                      "in 32..256",
                      (long long)D);
  for (size_t i = 0; i < n; i++) {
    const sfa_tensor *t = others[i].t;
    if (t && t->rank == 4 && t->shape[3] >= 1 && t->shape[3] != D)
      return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                        "%s: shape[3] (head dim) is %lld but q's is %lld", others[i].nm,
                        (long long)t->shape[3], (long long)D);
  }
  return SFA_OK;
}

static int window_mode(const sfa__mode *m, unsigned unused) {
  (void)unused;
  return m->window;
}

sfa_status sfa__check_params(const sfa_attention_params *p, char *err, size_t errlen) {
  const sfa_status bad = SFA_ERR_INVALID_ARGUMENT;
  if (!p) return sfa__fail(err, errlen, bad, "params: is NULL");
  const sfa__mode *m = sfa__mode_find(p->mode);
  if (!m) {
    char modes[128];
    sfa__mode_list(modes, sizeof modes, 0, " or ", NULL, 0);
    return sfa__fail(err, errlen, bad, "params.mode: %d is not a mode (%s)", (int)p->mode,
                     modes);
  }
  if (p->causal != 0 && p->causal != 1)
    return sfa__fail(err, errlen, bad, "params.causal: %d; must be 0 or 1", p->causal);
  if (p->deterministic != 0 && p->deterministic != 1)
    return sfa__fail(err, errlen, bad, "params.deterministic: %d; must be 0 or 1",
                     p->deterministic);
  if (!isfinite(p->scale) || p->scale < 0)
    return sfa__fail(err, errlen, bad,
                     "params.scale: %g; must be finite and >= 0 (0 means 1/sqrt(head dim))",
                     (double)p->scale);
  if (p->strict_causal != 0 && p->strict_causal != 1)
    return sfa__fail(err, errlen, bad, "params.strict_causal: %d; must be 0 or 1",
                     p->strict_causal);
  if (p->strict_causal && !(m->flags & SFA_FEAT_STRICT)) {
    char modes[64];
    int n = sfa__mode_list(modes, sizeof modes, 0, " and ", sfa__mode_takes_any, SFA_FEAT_STRICT);
    return sfa__fail(err, errlen, bad,
                     "params.strict_causal: 1; strict causality (q_idx > k_idx) applies to "
                     "mode%s %s only (use 0 with %s)",
                     n == 1 ? "" : "s", modes, m->name);
  }
  if (!isfinite(p->softcap) || p->softcap < 0)
    return sfa__fail(err, errlen, bad,
                     "params.softcap: %g; must be finite and >= 0 (0 = no softcapping)",
                     (double)p->softcap);
  if (p->softcap > 0 && !(m->flags & SFA_FEAT_SOFTCAP))
    return sfa__fail(err, errlen, bad, "params.softcap: %g; mode %s takes no softcapping",
                     (double)p->softcap, m->name);
  if (m->window) {
    if (p->window_left < -1)
      return sfa__fail(err, errlen, bad,
                       "params.window_left: %d; must be >= 0, or -1 (unbounded)",
                       p->window_left);
    if (p->window_right < -1)
      return sfa__fail(err, errlen, bad,
                       "params.window_right: %d; must be >= 0, or -1 (unbounded)",
                       p->window_right);
  } else if (p->window_left != -1 || p->window_right != -1) {
    char modes[64];
    int n = sfa__mode_list(modes, sizeof modes, 0, " and ", window_mode, 0);
    return sfa__fail(err, errlen, bad,
                     "params.window_left/window_right: %d/%d; windows apply to mode%s %s "
                     "only (use -1 with %s)",
                     p->window_left, p->window_right, n == 1 ? "" : "s", modes, m->name);
  }
  return SFA_OK;
}

sfa_status sfa__validate_params(sfa_context *ctx, const sfa_attention_params *p) {
  return sfa__check_params(p, ctx ? ctx->err : NULL, ctx ? sizeof ctx->err : 0);
}

/* ------------------------------------------------------------ extras */

/* An int32 index array [B, H, T] (q_idx, k_idx, q_hash, k_hash). */
static sfa_status check_index(sfa_context *ctx, const char *nm, const sfa_tensor *t, int64_t B,
                              int64_t H, int64_t T, const char *layout) {
  char a[96];
  if (t->dtype != SFA_DTYPE_INT32)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "%s: dtype %s, expected int32", nm,
                      sfa__dtype_str(t->dtype));
  sfa_status st = sfa__check_layout(ctx, nm, t, 3, layout, 1, 4, 0, 0);
  if (st != SFA_OK) return st;
  if (t->shape[0] != B || t->shape[1] != H || t->shape[2] != T) {
    sfa__tensor_shape_str(t, a, sizeof a);
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                      "%s: shape %s does not match %s = [%lld, %lld, %lld]", nm, a, layout,
                      (long long)B, (long long)H, (long long)T);
  }
  return SFA_OK;
}

/* q_hash is addressed with q_idx's batch and head strides (and k_hash with
** k_idx's): the kernel ABI has one pair for both. */
static sfa_status check_same_strides(sfa_context *ctx, const char *nm, const sfa_tensor *t,
                                     const char *ref_nm, const sfa_tensor *ref) {
  for (int i = 0; i < 2; i++)
    if (sfa__eff_stride(t, i) != sfa__eff_stride(ref, i))
      return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                        "%s: stride[%d] (%s) is %lld but %s's is %lld; the kernel reads both "
                        "arrays with one set of strides, so lay them out alike",
                        nm, i, dim_names[i], (long long)t->strides[i], ref_nm,
                        (long long)ref->strides[i]);
  return SFA_OK;
}

/* A window bias or mask [B|1, Hq|Hkv|1, Tq|1, Tk]. */
static sfa_status check_bcast(sfa_context *ctx, const char *nm, const sfa_tensor *t,
                              sfa_dtype want, const char *want_why, int64_t B, int64_t Hq,
                              int64_t Hkv, int64_t Tq, int64_t Tk) {
  const sfa_status bad = SFA_ERR_INVALID_ARGUMENT;
  const int is_mask = want == SFA_DTYPE_UINT8;
  if (t->dtype != want)
    return sfa__error(ctx, bad, "%s: dtype %s, expected %s%s", nm, sfa__dtype_str(t->dtype),
                      sfa__dtype_str(want), want_why);
  sfa_status st = sfa__check_layout(ctx, nm, t, 4, "[B or 1, Hq|Hkv|1, Tq or 1, Tk]", 1,
                                    is_mask ? 1 : 2, 0, 0);
  if (st != SFA_OK) return st;
  const int64_t *s = t->shape;
  if (s[0] != B && s[0] != 1)
    return sfa__error(ctx, bad, "%s: shape[0] (batch) is %lld; must be B (%lld) or 1", nm,
                      (long long)s[0], (long long)B);
  if (s[1] != Hq && s[1] != Hkv && s[1] != 1)
    return sfa__error(ctx, bad,
                      "%s: shape[1] (heads) is %lld; must be Hq (%lld), Hkv (%lld) or 1", nm,
                      (long long)s[1], (long long)Hq, (long long)Hkv);
  if (s[2] != Tq && s[2] != 1)
    return sfa__error(ctx, bad, "%s: shape[2] (query rows) is %lld; must be Tq (%lld) or 1", nm,
                      (long long)s[2], (long long)Tq);
  if (s[3] != Tk)
    return sfa__error(ctx, bad, "%s: shape[3] (keys) is %lld; must be Tk (%lld)", nm,
                      (long long)s[3], (long long)Tk);
  if (!is_mask) return SFA_OK;
  /* The kernel ORs 16-byte vectors of the mask to skip empty tiles. */
  if ((uintptr_t)t->data % 16 != 0)
    return sfa__error(ctx, bad,
                      "%s: data %p is not 16-byte aligned (the kernel reads the mask in 16-byte "
                      "vectors)",
                      nm, t->data);
  static const char *const what[3] = {"batch", "head", "row"};
  for (int i = 2; i >= 0; i--)
    if (sfa__eff_stride(t, i) % 16 != 0)
      return sfa__error(ctx, bad,
                        "%s: %s stride %lld is not a multiple of 16 bytes%s (the kernel reads "
                        "the mask in 16-byte vectors)",
                        nm, what[i], (long long)t->strides[i],
                        i == 2 ? "; pad Tk to a multiple of 16" : "");
  return SFA_OK;
}

/* ALiBi slopes: float32 [Hq] or [B, Hq], contiguous, 4-byte aligned. */
static sfa_status check_slopes(sfa_context *ctx, const char *nm, const sfa_tensor *t, int64_t B,
                               int64_t Hq) {
  const sfa_status bad = SFA_ERR_INVALID_ARGUMENT;
  char a[96];
  if (t->dtype != SFA_DTYPE_FP32)
    return sfa__error(ctx, bad, "%s: dtype %s, expected fp32", nm, sfa__dtype_str(t->dtype));
  if (t->rank != 1 && t->rank != 2)
    return sfa__error(ctx, bad, "%s.rank: %d; must be 1 ([Hq]) or 2 ([B, Hq])", nm, t->rank);
  if (t->shape[t->rank - 1] != Hq || (t->rank == 2 && t->shape[0] != B)) {
    sfa__tensor_shape_str(t, a, sizeof a);
    return sfa__error(ctx, bad, "%s: shape %s; must be [Hq] = [%lld] or [B, Hq] = [%lld, %lld]",
                      nm, a, (long long)Hq, (long long)B, (long long)Hq);
  }
  if (!t->data) return sfa__error(ctx, bad, "%s: data is NULL", nm);
  if ((uintptr_t)t->data % 4 != 0)
    return sfa__error(ctx, bad, "%s: data %p is not 4-byte aligned", nm, t->data);
  if (Hq > 1 && t->strides[t->rank - 1] != 1)
    return sfa__error(ctx, bad, "%s: stride[%d] is %lld; the slopes must be contiguous (stride 1)",
                      nm, t->rank - 1, (long long)t->strides[t->rank - 1]);
  if (t->rank == 2 && B > 1 && t->strides[0] != Hq)
    return sfa__error(ctx, bad, "%s: stride[0] is %lld; the slopes must be contiguous (Hq = %lld)",
                      nm, (long long)t->strides[0], (long long)Hq);
  return SFA_OK;
}

/* "modes qk_drop and hash read q_idx", "window mode reads a bias": who reads
** member e (the mode table). */
static void readers(const sfa__extra *e, char *buf, size_t n) {
  char modes[96];
  int k = sfa__mode_list(modes, sizeof modes, 0, " and ", sfa__mode_reads_all, e->bit);
  if (k == 1) snprintf(buf, n, "%s mode reads %s", modes, e->what);
  else snprintf(buf, n, "modes %s read %s", modes, e->what);
}

sfa_status sfa__validate_extras(sfa_context *ctx, const sfa_attention_params *p,
                                const sfa_extras *ex, sfa_dtype q_dtype, int64_t B, int64_t Hq,
                                int64_t Hkv, int64_t Tq, int64_t Tk) {
  const sfa_status bad = SFA_ERR_INVALID_ARGUMENT;
  const sfa__mode *m = sfa__mode_find(p->mode);
  size_t ne = 0;
  const sfa__extra *e = sfa__extras(&ne);
  char list[128], why[128];
  if (!ex) {
    if (!m->needs) return SFA_OK;
    /* "extras->q_idx, k_idx, q_hash and k_hash" */
    int total = 0, k = 0;
    for (size_t i = 0; i < ne; i++) total += (m->needs & e[i].bit) != 0;
    list[0] = '\0';
    for (size_t i = 0; i < ne; i++) {
      if (!(m->needs & e[i].bit)) continue;
      size_t at = strlen(list);
      snprintf(list + at, sizeof list - at, "%s%s", k == 0 ? "extras->" : k == total - 1 ?
               " and " : ", ", e[i].name);
      k++;
    }
    return sfa__error(ctx, bad, "extras: is NULL; mode %s needs %s", m->name, list);
  }
  for (size_t i = 0; i < ne; i++) {
    const sfa_tensor *t = sfa__extra_tensor(&e[i], ex);
    if ((m->needs & e[i].bit) && !t)
      return sfa__error(ctx, bad, "extras->%s: is NULL; mode %s needs it", e[i].name, m->name);
    if (!(m->reads & e[i].bit) && t) {
      readers(&e[i], why, sizeof why);
      return sfa__error(ctx, bad, "extras->%s: only %s; must be NULL in mode %s", e[i].name,
                        why, m->name);
    }
  }
  if (ex->max_seqlen_k < 0 || (ex->max_seqlen_k != 0 && !ex->cu_seqlens_q))
    return sfa__error(ctx, bad,
                      "extras->max_seqlen_k: %lld; must be >= 0, and 0 without cu_seqlens_q "
                      "and cu_seqlens_k (it is the longest packed sequence's key length)",
                      (long long)ex->max_seqlen_k);
  /* Each member's layout (mode.h), then the strides a member shares. */
  sfa_status st;
  for (size_t i = 0; i < ne; i++) {
    const sfa_tensor *t = sfa__extra_tensor(&e[i], ex);
    char nm[32];
    if (!t) continue;
    snprintf(nm, sizeof nm, "extras->%s", e[i].name);
    /* A bias's or mask's columns: Tk; packed, Kmax, their own (the view
    ** [1, Hb, total_q|1, Kmax] of runtime/varlen.c, which checked it) */
    const int64_t cols = ex->cu_seqlens_q && t->rank == 4 ? t->shape[3] : Tk;
    switch (e[i].kind) {
    case SFA__EXTRA_INDEX:
      st = e[i].k_side ? check_index(ctx, nm, t, B, Hkv, Tk, "[B, Hkv, Tk]")
                       : check_index(ctx, nm, t, B, Hq, Tq, "[B, Hq, Tq]");
      break;
    case SFA__EXTRA_BIAS:
      st = check_bcast(ctx, nm, t, q_dtype, " (q's dtype)", B, Hq, Hkv, Tq, cols);
      break;
    case SFA__EXTRA_MASK:
      st = check_bcast(ctx, nm, t, SFA_DTYPE_UINT8, "", B, Hq, Hkv, Tq, cols);
      break;
    case SFA__EXTRA_SLOPES:
      st = check_slopes(ctx, nm, t, B, Hq);
      break;
    case SFA__EXTRA_SEQLENS: /* the rest: runtime/varlen.c, which made B, Tq, Tk the views' */
      st = t->dtype == SFA_DTYPE_INT32 && t->rank == 1 && t->shape[0] >= 2 &&
                   (ex->cu_seqlens_q && ex->cu_seqlens_k)
               ? SFA_OK
               : sfa__error(ctx, bad, "%s: must be int32 [B + 1], given with %s", nm,
                            e[i].k_side ? "cu_seqlens_q" : "cu_seqlens_k");
      break;
    default:
      st = sfa__error(ctx, SFA_ERR_INTERNAL, "extras->%s: no layout rule", e[i].name);
    }
    if (st != SFA_OK) return st;
  }
  for (size_t i = 0; i < ne; i++) {
    const sfa_tensor *t = sfa__extra_tensor(&e[i], ex);
    if (!t || !e[i].same_strides) continue;
    for (size_t j = 0; j < ne; j++) {
      const sfa_tensor *r = sfa__extra_tensor(&e[j], ex);
      char nm[32], rn[32];
      if (e[j].bit != e[i].same_strides || !r) continue;
      snprintf(nm, sizeof nm, "extras->%s", e[i].name);
      snprintf(rn, sizeof rn, "extras->%s", e[j].name);
      if ((st = check_same_strides(ctx, nm, t, rn, r)) != SFA_OK) return st;
    }
  }
  return SFA_OK;
}

/* ------------------------------------------------------------ sfa_forward */

sfa_status sfa__validate_forward(sfa_context *ctx, const sfa_attention_params *params,
                                 const sfa_tensor *q, const sfa_tensor *k, const sfa_tensor *v,
                                 const sfa_extras *extras, const sfa_tensor *o,
                                 const sfa_tensor *lse) {
  sfa_status st;
  char a[96], b[96];
  if (!params) return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "params: is NULL");
  if (!q) return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "q: is NULL");
  if (!k) return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "k: is NULL");
  if (!v) return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "v: is NULL");
  if (!o) return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "o: is NULL");
  if ((st = sfa__validate_params(ctx, params)) != SFA_OK) return st;

  if (q->dtype != SFA_DTYPE_FP16 && q->dtype != SFA_DTYPE_BF16)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                      "q: dtype %s is not supported; must be fp16 or bf16",
                      sfa__dtype_str(q->dtype));
  const sfa__named_tensor same_d[] = {{"k", k}, {"v", v}, {"o", o}};
  if ((st = check_head_dims(ctx, q, same_d, 3)) != SFA_OK ||
      (st = check_half(ctx, "q", q, q, 0)) != SFA_OK ||
      (st = check_half(ctx, "k", k, q, 0)) != SFA_OK ||
      (st = check_half(ctx, "v", v, q, 0)) != SFA_OK ||
      (st = check_half(ctx, "o", o, q, 1)) != SFA_OK)
    return st;

  int64_t B = q->shape[0], Hq = q->shape[1], Tq = q->shape[2];
  for (int i = 0; i < 4; i++)
    if (i != 1 && i != 2 && k->shape[i] != q->shape[i]) {
      return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                        "k: shape[%d] (%s) is %lld but q's is %lld", i, dim_names[i],
                        (long long)k->shape[i], (long long)q->shape[i]);
    }
  for (int i = 0; i < 4; i++)
    if (v->shape[i] != k->shape[i]) {
      sfa__tensor_shape_str(v, a, sizeof a);
      sfa__tensor_shape_str(k, b, sizeof b);
      return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "v: shape %s does not match k %s", a, b);
    }
  int64_t Hkv = k->shape[1], Tk = k->shape[2];
  if (Hq % Hkv != 0)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                      "k: its %lld heads (shape[1]) do not divide the %lld query heads of q",
                      (long long)Hkv, (long long)Hq);
  for (int i = 0; i < 4; i++)
    if (o->shape[i] != q->shape[i]) {
      sfa__tensor_shape_str(o, a, sizeof a);
      sfa__tensor_shape_str(q, b, sizeof b);
      return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "o: shape %s does not match q %s", a, b);
    }
  if (Tq > INT32_MAX || Tk > INT32_MAX)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                      "%s: time (shape[2]) %lld exceeds the kernel's int32 index (%d)",
                      Tq > INT32_MAX ? "q" : "k", (long long)(Tq > INT32_MAX ? Tq : Tk),
                      INT32_MAX);
  if (sfa__mode_find(params->mode)->window && Tq + Tk > INT32_MAX)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                      "k: Tq + Tk = %lld exceeds the window kernel's int32 arithmetic (%d)",
                      (long long)(Tq + Tk), INT32_MAX);
  if (B > GRID_YZ_MAX || Hq > GRID_YZ_MAX)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                      "q: %s %lld exceeds the launch grid limit (%d)",
                      B > GRID_YZ_MAX ? "batch" : "heads", (long long)(B > GRID_YZ_MAX ? B : Hq),
                      GRID_YZ_MAX);

  if (lse) {
    if (lse->dtype != SFA_DTYPE_FP32)
      return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "lse: dtype %s; must be fp32",
                        sfa__dtype_str(lse->dtype));
    if ((st = sfa__check_layout(ctx, "lse", lse, 3, "[B, Hq, Tq]", 1, 4, 0, 1)) != SFA_OK) return st;
    if (lse->shape[0] != B || lse->shape[1] != Hq || lse->shape[2] != Tq) {
      sfa__tensor_shape_str(lse, a, sizeof a);
      return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                        "lse: shape %s does not match q's [B, Hq, Tq] = [%lld, %lld, %lld]", a,
                        (long long)B, (long long)Hq, (long long)Tq);
    }
  }
  if ((st = sfa__validate_extras(ctx, params, extras, q->dtype, B, Hq, Hkv, Tq, Tk)) != SFA_OK)
    return st;
  /* Outputs share no memory with the inputs or with each other. */
  const sfa_extras none = {0}, *ex = extras ? extras : &none;
  const sfa__named_tensor in[] = {
    {"q", q}, {"k", k}, {"v", v},
    {"extras->q_idx", ex->q_idx}, {"extras->k_idx", ex->k_idx},
    {"extras->q_hash", ex->q_hash}, {"extras->k_hash", ex->k_hash},
    {"extras->bias", ex->bias}, {"extras->mask", ex->mask},
    {"extras->alibi_slopes", ex->alibi_slopes},
  };
  const sfa__named_tensor out[] = {{"o", o}, {"lse", lse}};
  return sfa__check_disjoint(ctx, out, 2, in, sizeof in / sizeof in[0]);
}

/* ------------------------------------------------------------ backward */

/* t has the dtype, shape and layout rules of ref (a 4-d fp16/bf16 tensor). */
static sfa_status check_like(sfa_context *ctx, const char *nm, const sfa_tensor *t,
                             const char *refnm, const sfa_tensor *ref, const sfa_tensor *q,
                             int is_output) {
  char a[96], b[96];
  if (!t) return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "%s: is NULL", nm);
  /* The shape before the layout: a head dim unlike ref's is named as that,
  ** not as the stride error its rows may give. */
  for (int i = 0; i < 4 && t->rank == 4; i++)
    if (t->shape[i] != ref->shape[i]) {
      sfa__tensor_shape_str(t, a, sizeof a);
      sfa__tensor_shape_str(ref, b, sizeof b);
      return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "%s: shape %s does not match %s %s", nm,
                        a, refnm, b);
    }
  return check_half(ctx, nm, t, q, is_output);
}

sfa_status sfa__validate_backward(sfa_context *ctx, const sfa_attention_params *params,
                                  const sfa_tensor *q, const sfa_tensor *k, const sfa_tensor *v,
                                  const sfa_extras *extras, const sfa_tensor *o,
                                  const sfa_tensor *lse, const sfa_tensor *dout,
                                  const sfa_tensor *dq, const sfa_tensor *dk,
                                  const sfa_tensor *dv, const sfa_tensor *dbias) {
  sfa_status st;
  if (!lse && params && q && k && v && o)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                      "lse: is NULL; the backward needs the forward's lse");
  if ((st = sfa__validate_forward(ctx, params, q, k, v, extras, o, lse)) != SFA_OK) return st;
  if ((st = check_like(ctx, "dout", dout, "o", o, q, 0)) != SFA_OK ||
      (st = check_like(ctx, "dq", dq, "q", q, q, 1)) != SFA_OK ||
      (st = check_like(ctx, "dk", dk, "k", k, q, 1)) != SFA_OK ||
      (st = check_like(ctx, "dv", dv, "v", v, q, 1)) != SFA_OK)
    return st;
  const sfa_tensor *bias = extras ? extras->bias : NULL;
  if (dbias) {
    if (!bias)
      return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                        "dbias: is given but there is no bias (extras->bias is NULL)");
    if (dbias->dtype != bias->dtype)
      return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "dbias: dtype %s does not match bias (%s)",
                        sfa__dtype_str(dbias->dtype), sfa__dtype_str(bias->dtype));
    if ((st = sfa__check_layout(ctx, "dbias", dbias, 4, "[B|1, Hb, Tq|1, Tk]", 1, 2, 0, 1)) !=
        SFA_OK)
      return st;
    for (int i = 0; i < 4; i++)
      if (dbias->shape[i] != bias->shape[i]) {
        char a[96], b[96];
        sfa__tensor_shape_str(dbias, a, sizeof a);
        sfa__tensor_shape_str(bias, b, sizeof b);
        return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "dbias: shape %s does not match bias %s",
                          a, b);
      }
  }
  /* Outputs share no memory with the inputs or with each other. */
  const sfa_extras none = {0}, *ex = extras ? extras : &none;
  const sfa__named_tensor in[] = {
    {"q", q}, {"k", k}, {"v", v}, {"o", o}, {"dout", dout}, {"lse", lse},
    {"extras->bias", ex->bias}, {"extras->mask", ex->mask},
    {"extras->q_idx", ex->q_idx}, {"extras->k_idx", ex->k_idx},
    {"extras->q_hash", ex->q_hash}, {"extras->k_hash", ex->k_hash},
    {"extras->alibi_slopes", ex->alibi_slopes},
  };
  const sfa__named_tensor out[] = {{"dq", dq}, {"dk", dk}, {"dv", dv}, {"dbias", dbias}};
  return sfa__check_disjoint(ctx, out, 4, in, sizeof in / sizeof in[0]);
}
