/*
** varlen.h -- internal: packed variable-length batches (sfa_extras.cu_seqlens_q
** / cu_seqlens_k, SFA_FEAT_VARLEN) in sfa_forward and sfa_backward
** (runtime/varlen.c). A packed call is checked here where it differs from a
** fixed-length one (ranks, the pair of prefix-sum arrays, the window bias,
** mask and dbias [Hb, total_q|1, Kmax]), then described as the fixed-length call of one
** batch whose time extents are the totals: q [total_q, Hq, D] becomes the view
** [1, Hq, total_q, D] (the same memory), lse [Hq, total_q] becomes [1, Hq,
** total_q], an index array [H, total] becomes [1, H, total]. The rest of the
** validation and the parameter blocks then follow the fixed-length code; the
** block gets batch = B and the arrays' pointers (sfa__varlen_args), and the
** kernels (templates/varlen.lt) take each sequence's rows from them.
*/
#ifndef SFA_RUNTIME_VARLEN_H
#define SFA_RUNTIME_VARLEN_H

#include <stdint.h>

#include "sfa.h"

/* The views of one packed call; on = 0 for a fixed-length call (nothing is
** changed then). */
typedef struct sfa__varlen {
  int on;
  int64_t batch; /* B, the sequences: cu_seqlens_q.shape[0] - 1 */
  const sfa_tensor *cu_q, *cu_k;
  sfa_tensor q, k, v, o, lse, dout, dq, dk, dv;
  sfa_tensor q_idx, k_idx, q_hash, k_hash;
  sfa_tensor bias, mask, dbias; /* window: [1, Hb, total_q|1, Kmax] */
  int64_t kmax;                 /* the smaller Kmax of bias and mask (INT32_MAX: neither) */
  sfa_extras ex;
} sfa__varlen;

/* The tensors of a call, each replaced by its view when the call is packed.
** Members that the call does not have are NULL (dout, dq, dk, dv in the
** forward; lse may be NULL in the forward). */
typedef struct sfa__varlen_call {
  const sfa_tensor **q, **k, **v, **o, **lse;
  const sfa_tensor **dout, **dq, **dk, **dv;
  const sfa_extras **extras;
  const sfa_tensor **dbias; /* the backward's (*dbias may be NULL); NULL in the forward */
} sfa__varlen_call;

/* When *c->extras has cu_seqlens_q or cu_seqlens_k: checks what packed
** sequences change (messages name the argument), fills *vl and points every
** member of c at its view in vl. Otherwise vl->on = 0 and c is left alone.
** The views then pass through sfa__validate_forward / _backward. */
sfa_status sfa__varlen_prepare(sfa_context *ctx, const sfa_attention_params *params,
                               const sfa__varlen_call *c, sfa__varlen *vl);

/* One prefix-sum array nm: not NULL, int32 [B + 1] with 1 <= B <= INT32_MAX,
** contiguous, 4-byte aligned data (its values are not read). Also the
** packed helpers' (runtime/hash.c, runtime/topk.c). */
sfa_status sfa__varlen_check_cu(sfa_context *ctx, const char *nm, const sfa_tensor *t);

/* The views of a packed tensor as one batch of the total length (the same
** memory, batch stride 0): [total, H, D] as [1, H, total, D] (rows) and
** [H, total] as [1, H, total] (rowwise), in *out; NULL for t NULL. */
const sfa_tensor *sfa__varlen_view_rows(const sfa_tensor *t, sfa_tensor *out);
const sfa_tensor *sfa__varlen_view_rowwise(const sfa_tensor *t, sfa_tensor *out);

/* The pair's layout (both given, int32 [B + 1] each, contiguous, the same B)
** and params. ex has cu_seqlens_q or cu_seqlens_k. */
sfa_status sfa__varlen_check_pair(sfa_context *ctx, const sfa_attention_params *params,
                                  const sfa_extras *ex);

/* The index arrays of ex ([Hq, Tq] on the q side, [Hkv, Tk] on the k side,
** int32, contiguous along time; Tq and Tk the totals), and vl->ex = ex with
** each of them replaced by its view [1, H, T] in vl. */
sfa_status sfa__varlen_index_views(sfa_context *ctx, const sfa_extras *ex, int64_t Hq,
                                   int64_t Tq, int64_t Hkv, int64_t Tk, sfa__varlen *vl);

/* The values of one prefix-sum array of n = B + 1 entries (host copy): cu[0]
** = 0, never decreasing, cu[B] = total. The message names the array nm, the
** entry and the values. Pure host code (sfa_check_indices runs it). */
sfa_status sfa__check_seqlens(const char *nm, const int32_t *cu, int64_t n, int64_t total,
                              char *err, size_t errlen);

/* The index contract of mode (qk_drop, hash) per sequence: the arrays are
** host copies [Hq, Tq] and [Hkv, Tk] (q_hash, k_hash NULL without hash), cq
** and ck the B + 1 prefix sums (checked); the rows of sequence b are the
** columns [cq[b], cq[b + 1]), and messages name extras->ARRAY[b, h, t] with
** t within the sequence. Pure host code. */
sfa_status sfa__check_index_arrays_varlen(sfa_mode mode, int64_t B, int64_t Hq, int64_t Hkv,
                                          int64_t Tq, int64_t Tk, const int32_t *cq,
                                          const int32_t *ck, const int32_t *q_idx,
                                          const int32_t *k_idx, const int32_t *q_hash,
                                          const int32_t *k_hash, char *err, size_t errlen);

/* The packed call's members of a parameter block (sfa_fwd_args or
** sfa_bwd_args) filled from the views: the sequence count, the arrays and the
** bias / mask columns. */
#define SFA__VARLEN_ARGS(A, VL)                                                      \
  do {                                                                               \
    if ((VL)->on) {                                                                  \
      (A)->batch = (int32_t)(VL)->batch;                                             \
      (A)->cu_q = (uint64_t)(uintptr_t)(VL)->cu_q->data;                             \
      (A)->cu_k = (uint64_t)(uintptr_t)(VL)->cu_k->data;                             \
      (A)->kmax = (int32_t)(VL)->kmax;                                               \
    }                                                                                \
  } while (0)

#endif
