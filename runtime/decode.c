/*
** decode.c -- sfa_decode, sfa_kv_append and sfa_check_kv_cache: one decode
** step of a few new tokens per sequence against a KV cache, contiguous or
** paged (sfa.h), the copy of their keys and values into it, and the check of
** its lengths and page table. Every
** argument is validated before the driver is touched. The kernel (pass
** decode, templates/decode.lt) takes one 16-row tile of (query head, new
** token) pairs of a kv head per CTA and one split of its keys; the split
** count is chosen here from what the host knows (batch, heads, the cache's
** capacity and the SM count: never seqused, which stays on the device), and
** with more than one split the partial outputs go to a float workspace, with
** a counter per row tile: the CTA that finishes a tile's last split merges
** the partials and sets the counter back to zero, so a step is one kernel.
** The workspace is the caller's (sfa_decode_with_workspace: zeroed once,
** then reused as it is) or else comes from the context's stream-ordered pool
** with a memset of the counters on the stream. Nothing synchronizes, so a
** decode step can be captured in a CUDA graph.
*/
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gen/mode.h"
#include "gen/variant.h"
#include "runtime/autotune.h"
#include "runtime/decode.h"
#include "runtime/internal.h"
#include "runtime/kernel_abi.h"
#include "runtime/util.h"
#include "runtime/validate.h"

#define DECODE_MAX_TN 16     /* new tokens per sequence (sfa.h) */
#define DECODE_MAX_CAPACITY ((int64_t)1 << 30)
#define GRID_YZ_MAX 65535

/* What validation learns of a call. */
typedef struct decode_shape {
  int64_t B, Hq, Hkv, Tn, D;
  int64_t capacity;  /* positions per sequence */
  int64_t page_size; /* 0: contiguous */
  int64_t num_pages;
  int64_t row_tiles; /* 16-row tiles of one kv head's (query head, token) rows */
  int64_t kv_k;      /* gather: positions per (batch, kv head); 0 without kv_indices */
} decode_shape;

static int decode_mode(const sfa__mode *m, unsigned unused) {
  (void)unused;
  return m->decode;
}

/* An int32 array of the cache (page_table, seqused): rank, shape, a
** contiguous last dimension. */
static sfa_status check_int_array(sfa_context *ctx, const char *nm, const sfa_tensor *t, int rank,
                                  const char *layout, int64_t d0) {
  if (t->dtype != SFA_DTYPE_INT32)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "%s: dtype %s, expected int32", nm,
                      sfa__dtype_str(t->dtype));
  sfa_status st = sfa__check_layout(ctx, nm, t, rank, layout, 1, 4, 0, 0);
  if (st != SFA_OK) return st;
  if (t->shape[0] != d0) {
    char a[96];
    sfa__tensor_shape_str(t, a, sizeof a);
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                      "%s: shape %s; its first dimension must be the batch B = %lld (%s)", nm, a,
                      (long long)d0, layout);
  }
  return SFA_OK;
}

/* The cache alone, for a batch of B sequences of head dim D in q's dtype
** (dtype < 0: any fp16/bf16, as sfa_check_kv_cache has no q). */
static sfa_status check_cache(sfa_context *ctx, const sfa_kv_cache *c, int64_t B, int64_t D,
                              int dtype, const char *ref, decode_shape *sh) {
  sfa_status st;
  char a[96];
  if (!c) return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "cache: is NULL");
  if (!c->k) return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "cache->k: is NULL");
  if (!c->v) return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "cache->v: is NULL");
  const int paged = c->page_table != NULL;
  const char *layout = paged ? "[num_pages, page_size, Hkv, D]" : "[B, Hkv, capacity, D]";
  const sfa__named_tensor kv[] = {{"cache->k", c->k}, {"cache->v", c->v}};
  for (int i = 0; i < 2; i++) {
    const sfa_tensor *t = kv[i].t;
    if (t->dtype != SFA_DTYPE_FP16 && t->dtype != SFA_DTYPE_BF16)
      return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "%s: dtype %s; must be fp16 or bf16",
                        kv[i].nm, sfa__dtype_str(t->dtype));
    if (dtype >= 0 && t->dtype != (sfa_dtype)dtype)
      return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "%s: dtype %s does not match %s (%s)",
                        kv[i].nm, sfa__dtype_str(t->dtype), ref, sfa__dtype_str((sfa_dtype)dtype));
    if ((st = sfa__check_layout(ctx, kv[i].nm, t, 4, layout, 8, 16, 0, 0)) != SFA_OK) return st;
  }
  if (c->v->dtype != c->k->dtype)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "cache->v: dtype %s does not match cache->k (%s)",
                      sfa__dtype_str(c->v->dtype), sfa__dtype_str(c->k->dtype));
  if ((st = sfa__util_same_dims(ctx, "cache->v", c->v, "cache->k", c->k, 4, "every dimension")))
    return st;
  if (D > 0 && c->k->shape[3] != D)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                      "cache->k: shape[3] (head dim) is %lld but %s's is %lld",
                      (long long)c->k->shape[3], ref, (long long)D);
  memset(sh, 0, sizeof *sh);
  sh->D = c->k->shape[3];
  if (paged) {
    if ((st = check_int_array(ctx, "cache->page_table", c->page_table, 2, "[B, max_pages]", B)))
      return st;
    sh->Hkv = c->k->shape[2];
    sh->page_size = c->k->shape[1];
    sh->num_pages = c->k->shape[0];
    sh->capacity = c->page_table->shape[1] * sh->page_size;
    if (sh->num_pages > INT32_MAX || sh->page_size > INT32_MAX)
      return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                        "cache->k: %lld %s exceed the kernel's int32 index (%d)",
                        (long long)(sh->num_pages > INT32_MAX ? sh->num_pages : sh->page_size),
                        sh->num_pages > INT32_MAX ? "pages" : "rows per page", INT32_MAX);
  } else {
    if (c->k->shape[0] != B) {
      sfa__tensor_shape_str(c->k, a, sizeof a);
      return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                        "cache->k: shape %s; its batch (shape[0]) must be the batch B = %lld (a "
                        "contiguous cache is [B, Hkv, capacity, D]; give page_table for a paged one)",
                        a, (long long)B);
    }
    sh->Hkv = c->k->shape[1];
    sh->capacity = c->k->shape[2];
  }
  if (sh->capacity > DECODE_MAX_CAPACITY) /* positions plus windows stay inside int32 */
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                      "cache: capacity %lld positions per sequence; at most 2^30",
                      (long long)sh->capacity);
  if (c->seqused && (st = check_int_array(ctx, "cache->seqused", c->seqused, 1, "[B]", B)))
    return st;
  if (c->k_hash) { /* the buckets of the keys: k's layout minus D */
    const sfa_tensor *t = c->k_hash;
    const char *kh_layout = paged ? "[num_pages, page_size, Hkv]" : "[B, Hkv, capacity]";
    if (t->dtype != SFA_DTYPE_INT32)
      return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "cache->k_hash: dtype %s, expected int32",
                        sfa__dtype_str(t->dtype));
    if ((st = sfa__check_layout(ctx, "cache->k_hash", t, 3, kh_layout, 1, 4, 0, 0)) ||
        (st = sfa__util_same_dims(ctx, "cache->k_hash", t, "cache->k", c->k, 3,
                                  paged ? "num_pages, page_size and Hkv" : "B, Hkv and capacity")))
      return st;
  }
  return SFA_OK;
}

/* The tensors of a call, named: the outputs o and lse first, then the inputs. */
#define CALL_TENSORS 10
static void call_tensors(const sfa_tensor *q, const sfa_kv_cache *c, const sfa_tensor *o,
                         const sfa_tensor *lse, sfa__named_tensor all[CALL_TENSORS]) {
  const sfa__named_tensor t[CALL_TENSORS] = {{"o", o},
                                             {"lse", lse},
                                             {"q", q},
                                             {"cache->k", c->k},
                                             {"cache->v", c->v},
                                             {"cache->page_table", c->page_table},
                                             {"cache->seqused", c->seqused},
                                             {"cache->kv_indices", c->kv_indices},
                                             {"cache->k_hash", c->k_hash},
                                             {"cache->q_hash", c->q_hash}};
  memcpy(all, t, sizeof t);
}

/* The call's arguments; with outputs 0 (sfa_decode_workspace_size) the
** inputs only, o and lse unread. */
static sfa_status validate(sfa_context *ctx, const sfa_attention_params *p, const sfa_tensor *q,
                           const sfa_kv_cache *c, const sfa_tensor *o, const sfa_tensor *lse,
                           int outputs, decode_shape *sh) {
  sfa_status st;
  if (!p) return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "params: is NULL");
  if (!q) return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "q: is NULL");
  if (outputs && !o) return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "o: is NULL");
  if ((st = sfa__validate_params(ctx, p)) != SFA_OK) return st;
  const sfa__mode *m = sfa__mode_find(p->mode);
  if (!m->decode) {
    char modes[64];
    sfa__mode_list(modes, sizeof modes, 0, " and ", decode_mode, 0);
    return sfa__error(ctx, SFA_ERR_UNSUPPORTED, "params.mode: %s has no decode kernel; sfa_decode serves %s",
                      m->name, modes);
  }
  if (p->softcap > 0) /* the decode kernels compute no softcap */
    return sfa__error(ctx, SFA_ERR_UNSUPPORTED,
                      "params.softcap: %g; sfa_decode takes no softcapping (0)", (double)p->softcap);
  if (q->dtype != SFA_DTYPE_FP16 && q->dtype != SFA_DTYPE_BF16)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "q: dtype %s is not supported; must be fp16 or bf16",
                      sfa__dtype_str(q->dtype));
  if (q->rank == 4 && (q->shape[3] < 32 || q->shape[3] > 256 || q->shape[3] % 16 != 0))
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                      "q: head dim (shape[3]) %lld is not supported; must be a multiple of 16 in "
                      "32..256",
                      (long long)q->shape[3]);
  if ((st = sfa__check_layout(ctx, "q", q, 4, "[B, Hq, Tn, D]", 8, 16, 0, 0)) != SFA_OK) return st;
  const int64_t B = q->shape[0], Hq = q->shape[1], Tn = q->shape[2], D = q->shape[3];
  if (Tn > DECODE_MAX_TN)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                      "q: %lld new tokens (shape[2]); sfa_decode takes 1..%d (use sfa_forward for "
                      "a prefill)",
                      (long long)Tn, DECODE_MAX_TN);
  if ((st = check_cache(ctx, c, B, D, (int)q->dtype, "q", sh)) != SFA_OK) return st;
  sh->B = B, sh->Hq = Hq, sh->Tn = Tn;
  if (Hq % sh->Hkv != 0)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                      "cache->k: its %lld kv heads do not divide the %lld query heads of q",
                      (long long)sh->Hkv, (long long)Hq);
  sh->row_tiles = (Hq / sh->Hkv * Tn + 15) / 16;
  if (c->kv_indices) { /* int32 [B, Hkv, K], contiguous along K */
    const sfa_tensor *t = c->kv_indices;
    if ((st = check_int_array(ctx, "cache->kv_indices", t, 3, "[B, Hkv, K]", B)) != SFA_OK) return st;
    if (t->shape[1] != sh->Hkv)
      return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                        "cache->kv_indices: %lld heads (shape[1]) but the cache has %lld kv heads",
                        (long long)t->shape[1], (long long)sh->Hkv);
    if (t->shape[2] > DECODE_MAX_CAPACITY)
      return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                        "cache->kv_indices: %lld positions per head; at most 2^30",
                        (long long)t->shape[2]);
    sh->kv_k = t->shape[2];
  }
  if (m->decode_hash) { /* the buckets: both required */
    if (!c->k_hash)
      return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                        "cache->k_hash: is NULL; mode hash needs the buckets of the cached keys "
                        "(int32 %s)", c->page_table ? "[num_pages, page_size, Hkv]" : "[B, Hkv, capacity]");
    if (!c->q_hash)
      return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                        "cache->q_hash: is NULL; mode hash needs the buckets of the new tokens "
                        "(int32 [B, Hq, Tn])");
    const sfa_tensor *t = c->q_hash;
    if ((st = check_int_array(ctx, "cache->q_hash", t, 3, "[B, Hq, Tn]", B)) != SFA_OK) return st;
    if ((st = sfa__util_same_dims(ctx, "cache->q_hash", t, "q", q, 3, "B, Hq and Tn"))) return st;
  } else {
    const char *given = c->k_hash ? "cache->k_hash" : c->q_hash ? "cache->q_hash" : NULL;
    if (given)
      return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                        "%s: given, but mode %s reads no buckets (only mode hash does); pass NULL",
                        given, m->name);
  }
  if (B > GRID_YZ_MAX || sh->Hkv * sh->row_tiles > GRID_YZ_MAX)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                      "q: %s %lld exceeds the launch grid limit (%d)",
                      B > GRID_YZ_MAX ? "batch" : "kv heads x row tiles",
                      (long long)(B > GRID_YZ_MAX ? B : sh->Hkv * sh->row_tiles), GRID_YZ_MAX);
  if (!outputs) return SFA_OK;

  if (o->dtype != q->dtype)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "o: dtype %s does not match q (%s)",
                      sfa__dtype_str(o->dtype), sfa__dtype_str(q->dtype));
  if ((st = sfa__check_layout(ctx, "o", o, 4, "[B, Hq, Tn, D]", 8, 16, 0, 1)) != SFA_OK) return st;
  if ((st = sfa__util_same_dims(ctx, "o", o, "q", q, 4, "every dimension"))) return st;
  if (lse) {
    if (lse->dtype != SFA_DTYPE_FP32)
      return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "lse: dtype %s, expected fp32",
                        sfa__dtype_str(lse->dtype));
    if ((st = sfa__check_layout(ctx, "lse", lse, 3, "[B, Hq, Tn]", 1, 4, 0, 1)) != SFA_OK)
      return st;
    if ((st = sfa__util_same_dims(ctx, "lse", lse, "q", q, 3, "B, Hq and Tn"))) return st;
  }
  sfa__named_tensor all[CALL_TENSORS];
  call_tensors(q, c, o, lse, all);
  return sfa__check_disjoint(ctx, all, 2, all + 2, CALL_TENSORS - 2);
}

int sfa__decode_splits(int64_t ctas, int64_t capacity, int sms, int block_n) {
  const int64_t tiles = (capacity + block_n - 1) / block_n;
  if (ctas < 1) ctas = 1;
  /* rounded down: a last partial wave would cost as much as a full one */
  if (ctas > SFA__DECODE_COUNTERS) return 1; /* the workspace counts that many tiles */
  int64_t s = (int64_t)SFA__DECODE_WAVES * (sms > 0 ? sms : 1) / ctas;
  if (s > tiles) s = tiles;
  if (s > SFA__DECODE_MAX_SPLITS) s = SFA__DECODE_MAX_SPLITS;
  return s < 1 ? 1 : (int)s;
}

/* The cache's part of a parameter block (SFA_ABI_KV_CACHE_ARGS: sfa_dec_args
** and sfa__kv_append_args name it alike). A: the block; C: the validated
** cache; SH: its decode_shape. */
#define FILL_CACHE_ARGS(A, C, SH)                                                           \
  do {                                                                                      \
    const sfa_kv_cache *c_ = (C);                                                           \
    (A)->k = (uint64_t)(uintptr_t)c_->k->data, (A)->v = (uint64_t)(uintptr_t)c_->v->data;   \
    if (c_->page_table) { /* [pages, page_size, Hkv, D] */                                  \
      (A)->page_table = (uint64_t)(uintptr_t)c_->page_table->data;                          \
      (A)->pt_sb = c_->page_table->strides[0];                                              \
      (A)->k_sb = c_->k->strides[0], (A)->k_st = c_->k->strides[1];                         \
      (A)->k_sh = c_->k->strides[2];                                                        \
      (A)->v_sb = c_->v->strides[0], (A)->v_st = c_->v->strides[1];                         \
      (A)->v_sh = c_->v->strides[2];                                                        \
    } else { /* [B, Hkv, capacity, D] */                                                    \
      (A)->k_sb = c_->k->strides[0], (A)->k_sh = c_->k->strides[1];                         \
      (A)->k_st = c_->k->strides[2];                                                        \
      (A)->v_sb = c_->v->strides[0], (A)->v_sh = c_->v->strides[1];                         \
      (A)->v_st = c_->v->strides[2];                                                        \
    }                                                                                       \
    if (c_->seqused) (A)->seqused = (uint64_t)(uintptr_t)c_->seqused->data;                 \
    (A)->capacity = (int32_t)(SH)->capacity, (A)->page_size = (int32_t)(SH)->page_size;     \
    (A)->num_pages = (int32_t)(SH)->num_pages, (A)->hkv = (int32_t)(SH)->Hkv;               \
    if (c_->k_hash) { /* k's layout minus D: the strides of k's first three dims */       \
      (A)->k_hash = (uint64_t)(uintptr_t)c_->k_hash->data;                                  \
      (A)->kh_sb = sfa__eff_stride(c_->k_hash, 0);                                          \
      (A)->kh_sh = sfa__eff_stride(c_->k_hash, c_->page_table ? 2 : 1);                     \
      (A)->kh_st = sfa__eff_stride(c_->k_hash, c_->page_table ? 1 : 2);                     \
    }                                                                                       \
  } while (0)

static void fill_args(sfa_dec_args *a, const sfa_attention_params *p, const sfa_tensor *q,
                      const sfa_kv_cache *c, const sfa_tensor *o, const sfa_tensor *lse,
                      const decode_shape *sh, int splits) {
  memset(a, 0, sizeof *a);
  const float scale = p->scale > 0 ? p->scale : (float)(1.0 / sqrt((double)sh->D));
  FILL_CACHE_ARGS(a, c, sh);
  a->q = (uint64_t)(uintptr_t)q->data;
  a->o = (uint64_t)(uintptr_t)o->data;
  a->q_sb = q->strides[0], a->q_sh = q->strides[1], a->q_st = q->strides[2];
  a->o_sb = o->strides[0], a->o_sh = o->strides[1], a->o_st = o->strides[2];
  if (lse) {
    a->lse = (uint64_t)(uintptr_t)lse->data;
    a->lse_sb = lse->strides[0], a->lse_sh = lse->strides[1];
  }
  if (c->kv_indices) {
    a->kv_idx = (uint64_t)(uintptr_t)c->kv_indices->data;
    a->ki_sb = sfa__eff_stride(c->kv_indices, 0), a->ki_sh = sfa__eff_stride(c->kv_indices, 1);
    a->kv_k = (int32_t)sh->kv_k;
  }
  if (c->q_hash) {
    a->q_hash = (uint64_t)(uintptr_t)c->q_hash->data;
    a->qh_sb = sfa__eff_stride(c->q_hash, 0), a->qh_sh = sfa__eff_stride(c->q_hash, 1);
  }
  a->batch = (int32_t)sh->B;
  a->hq = (int32_t)sh->Hq;
  a->tn = (int32_t)sh->Tn;
  a->row_tiles = (int32_t)sh->row_tiles;
  a->splits = splits;
  /* A window wider than the cache is unbounded (keeps the int32 arithmetic
  ** of the kernel clear of overflow, as sfa_forward does). */
  a->window_left = a->window_right = -1;
  if (sfa__mode_find(p->mode)->window) {
    a->window_left = p->window_left >= sh->capacity ? -1 : p->window_left;
    a->window_right = p->causal ? 0 : p->window_right >= sh->capacity ? -1 : p->window_right;
  }
  a->scale = scale;
  a->scale_log2 = (float)((double)scale * 1.4426950408889634);
}

/* What a decode call launches: its shape, kernel and split count. */
typedef struct decode_plan {
  decode_shape sh;
  sfa__device dev;
  const sfa_driver *d;
  sfa_kernel *kern;
  int splits;
} decode_plan;

/* Validates the call (o and lse too where outputs), binds the device and
** selects the kernel (compiling it on first use). */
static sfa_status make_plan(sfa_context *ctx, const sfa_attention_params *params,
                            const sfa_tensor *q, const sfa_kv_cache *cache, const sfa_tensor *o,
                            const sfa_tensor *lse, int outputs, decode_plan *pl) {
  sfa_status st = validate(ctx, params, q, cache, o, lse, outputs, &pl->sh);
  if (st != SFA_OK) return st;
  const decode_shape *sh = &pl->sh;
  if ((st = sfa__bind(ctx, &pl->dev)) != SFA_OK) return st;
  if ((st = sfa__driver_load(&pl->d, ctx->err, sizeof ctx->err)) != SFA_OK) return st;

  sfa__problem prob;
  memset(&prob, 0, sizeof prob);
  prob.params = params;
  prob.B = sh->B, prob.Hq = sh->Hq, prob.Hkv = sh->Hkv, prob.Tq = sh->Tn, prob.Tk = sh->capacity;
  prob.has_lse = lse != NULL;
  /* causal where the mode takes it (dense, window), strict in mode hash */
  const unsigned flags = (sfa__mode_call_flags(sfa__mode_find(params->mode), params, NULL) &
                          (SFA_FEAT_CAUSAL | SFA_FEAT_STRICT)) |
                         (cache->kv_indices ? SFA_FEAT_GATHER : 0u);
  if ((st = sfa__select_kernel(ctx, &pl->dev, SFA_PASS_DECODE, q->dtype, (int)sh->D, flags, &prob,
                               &pl->kern)) != SFA_OK)
    return st;
  /* the keys a row tile walks: the capacity, or the index list */
  pl->splits = sfa__decode_splits(sh->B * sh->Hkv * sh->row_tiles,
                                  cache->kv_indices ? sh->kv_k : sh->capacity, pl->dev.sms,
                                  pl->kern->spec.block_n);
  return SFA_OK;
}

/* The split-KV workspace: the counters first, SFA__DECODE_COUNTERS of them
** at the same place for every call (the kernel leaves each one it used at
** zero, so a caller's workspace stays ready across shapes), then the
** partial outputs and their lse. 0 bytes with one split. */
#define COUNTER_BYTES ((size_t)SFA__DECODE_COUNTERS * 4)
static size_t workspace_bytes(const decode_plan *pl) {
  if (pl->splits <= 1) return 0;
  const size_t rows = (size_t)pl->splits * (size_t)(pl->sh.B * pl->sh.Hq * pl->sh.Tn);
  return COUNTER_BYTES + rows * (size_t)(pl->sh.D + 1) * 4;
}

sfa_status sfa_decode_workspace_size(sfa_context *ctx, const sfa_attention_params *params,
                                     const sfa_tensor *q, const sfa_kv_cache *cache,
                                     size_t *bytes) {
  if (!ctx) return SFA_ERR_INVALID_ARGUMENT;
  if (!bytes) return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "bytes: is NULL");
  *bytes = 0;
  decode_plan pl;
  sfa_status st = make_plan(ctx, params, q, cache, NULL, NULL, 0, &pl);
  if (st == SFA_OK) *bytes = workspace_bytes(&pl);
  return st;
}

/* sfa_decode (caller 0: the pool's workspace) and sfa_decode_with_workspace
** (caller 1). */
static sfa_status decode(sfa_context *ctx, const sfa_attention_params *params, const sfa_tensor *q,
                         const sfa_kv_cache *cache, const sfa_tensor *o, const sfa_tensor *lse,
                         int caller, void *workspace, size_t workspace_size, void *stream) {
  if (!ctx) return SFA_ERR_INVALID_ARGUMENT;
  if (workspace && (uintptr_t)workspace % 16 != 0)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                      "workspace: address %p is not 16-byte aligned", workspace);
  decode_plan pl;
  sfa_status st = make_plan(ctx, params, q, cache, o, lse, 1, &pl);
  if (st != SFA_OK) return st;
  const decode_shape *sh = &pl.sh;
  const sfa_driver *d = pl.d;
  const size_t need = workspace_bytes(&pl);
  if (caller && need && !workspace)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                      "workspace: is NULL; this call needs %zu bytes (sfa_decode_workspace_size)",
                      need);
  if (caller && workspace_size < need)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                      "workspace: %zu bytes; this call needs %zu (sfa_decode_workspace_size)",
                      workspace_size, need);
  if (caller && need) { /* the bytes the kernel writes share no tensor's */
    sfa_tensor wt;
    const int64_t words = (int64_t)(need / 4);
    sfa_tensor_init(&wt, workspace, SFA_DTYPE_FP32, 1, &words);
    const sfa__named_tensor ws_out[] = {{"workspace", &wt}};
    sfa__named_tensor all[CALL_TENSORS];
    call_tensors(q, cache, o, lse, all);
    if ((st = sfa__check_disjoint(ctx, ws_out, 1, all, CALL_TENSORS)) != SFA_OK) return st;
  }

  sfa_dec_args a;
  fill_args(&a, params, q, cache, o, lse, sh, pl.splits);
  const CUstream s = (CUstream)stream;
  CUdeviceptr ws = 0; /* the pool's, freed after the launch */
  CUresult r = CUDA_SUCCESS;
  if (need) {
    CUdeviceptr base = (CUdeviceptr)(uintptr_t)workspace;
    if (!caller) {
      if ((st = sfa__workspace_alloc(ctx, d, &pl.dev, need, s, &ws)) != SFA_OK) return st;
      base = ws;
      if ((r = d->cuMemsetD32Async(base, 0, SFA__DECODE_COUNTERS, s)) != CUDA_SUCCESS)
        st = sfa__cuda_error(r, "cuMemsetD32Async(decode split counters)", ctx->err,
                             sizeof ctx->err);
    }
    const size_t rows = (size_t)pl.splits * (size_t)(sh->B * sh->Hq * sh->Tn);
    a.sem = base;
    a.o_part = base + COUNTER_BYTES;
    a.lse_part = a.o_part + rows * (size_t)sh->D * 4;
  }
  const sfa_kernel *kern = pl.kern;
  const sfa__variant *v = &kern->var;
  const sfa__grid_dims dims = {.batch = sh->B, .hq = sh->Hq, .hkv = sh->Hkv, .tq = sh->Tn,
                               .tk = sh->capacity, .splits = pl.splits};
  unsigned g[3];
  sfa__grid_size(&v->grid, &dims, g);
  void *kp[1] = {&a};
  if (st == SFA_OK &&
      (r = d->cuLaunchKernel(kern->fn, g[0], g[1], g[2], (unsigned)v->threads, 1, 1,
                             (unsigned)v->smem_bytes, s, kp, NULL)) != CUDA_SUCCESS) {
    char what[SFA__KERNEL_NAME + 64];
    snprintf(what, sizeof what, "cuLaunchKernel(%s, grid %ux%ux%u)", kern->name, g[0], g[1], g[2]);
    st = sfa__cuda_error(r, what, ctx->err, sizeof ctx->err);
  }
  if (ws) {
    r = d->cuMemFreeAsync(ws, s);
    if (st == SFA_OK && r != CUDA_SUCCESS)
      st = sfa__cuda_error(r, "cuMemFreeAsync(decode workspace)", ctx->err, sizeof ctx->err);
  }
  return st;
}

sfa_status sfa_decode(sfa_context *ctx, const sfa_attention_params *params, const sfa_tensor *q,
                      const sfa_kv_cache *cache, const sfa_tensor *o, const sfa_tensor *lse,
                      void *stream) {
  return decode(ctx, params, q, cache, o, lse, 0, NULL, 0, stream);
}

sfa_status sfa_decode_with_workspace(sfa_context *ctx, const sfa_attention_params *params,
                                     const sfa_tensor *q, const sfa_kv_cache *cache,
                                     const sfa_tensor *o, const sfa_tensor *lse, void *workspace,
                                     size_t workspace_size, void *stream) {
  return decode(ctx, params, q, cache, o, lse, 1, workspace, workspace_size, stream);
}

/* ------------------------------------------------------------ sfa_kv_append */

/* sfa_kv_append, and with k_hash_new sfa_kv_append_hash. */
static sfa_status kv_append(sfa_context *ctx, const sfa_kv_cache *cache, const sfa_tensor *k_new,
                            const sfa_tensor *v_new, const sfa_tensor *k_hash_new, void *stream) {
  if (!k_new) return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "k_new: is NULL");
  if (!v_new) return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "v_new: is NULL");
  sfa_status st;
  const sfa__named_tensor nw[] = {{"k_new", k_new}, {"v_new", v_new}};
  for (int i = 0; i < 2; i++) {
    if (nw[i].t->dtype != SFA_DTYPE_FP16 && nw[i].t->dtype != SFA_DTYPE_BF16)
      return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "%s: dtype %s; must be fp16 or bf16",
                        nw[i].nm, sfa__dtype_str(nw[i].t->dtype));
    if ((st = sfa__check_layout(ctx, nw[i].nm, nw[i].t, 4, "[B, Hkv, Tn, D]", 8, 16, 0, 0)))
      return st;
  }
  if ((st = sfa__util_same_dims(ctx, "v_new", v_new, "k_new", k_new, 4, "every dimension")))
    return st;
  const int64_t B = k_new->shape[0], Tn = k_new->shape[2], D = k_new->shape[3];
  if (Tn > DECODE_MAX_TN)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                      "k_new: %lld new tokens (shape[2]); sfa_kv_append takes 1..%d",
                      (long long)Tn, DECODE_MAX_TN);
  decode_shape sh;
  if ((st = check_cache(ctx, cache, B, D, (int)k_new->dtype, "k_new", &sh)) != SFA_OK) return st;
  if (v_new->dtype != k_new->dtype)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "v_new: dtype %s does not match k_new (%s)",
                      sfa__dtype_str(v_new->dtype), sfa__dtype_str(k_new->dtype));
  if (k_new->shape[1] != sh.Hkv)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                      "k_new: %lld heads (shape[1]) but the cache has %lld kv heads",
                      (long long)k_new->shape[1], (long long)sh.Hkv);
  if (k_hash_new) { /* int32 [B, Hkv, Tn] into cache->k_hash */
    if (!cache->k_hash)
      return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                        "cache->k_hash: is NULL; sfa_kv_append_hash writes k_hash_new there");
    if ((st = check_int_array(ctx, "k_hash_new", k_hash_new, 3, "[B, Hkv, Tn]", B)) ||
        (st = sfa__util_same_dims(ctx, "k_hash_new", k_hash_new, "k_new", k_new, 3,
                                  "B, Hkv and Tn")))
      return st;
  }
  /* the cache is the output here: it must not overlap the new rows */
  const sfa__named_tensor out[] = {{"cache->k", cache->k},
                                   {"cache->v", cache->v},
                                   {"cache->k_hash", k_hash_new ? cache->k_hash : NULL}};
  const sfa__named_tensor in[] = {{"k_new", k_new},
                                  {"v_new", v_new},
                                  {"cache->page_table", cache->page_table},
                                  {"cache->seqused", cache->seqused},
                                  {"k_hash_new", k_hash_new}};
  if ((st = sfa__check_disjoint(ctx, out, 3, in, 5)) != SFA_OK) return st;

  sfa_kernel *k;
  if ((st = sfa__util_begin(ctx, SFA_PASS_KV_APPEND, SFA_DTYPE_UINT8, &k)) != SFA_OK) return st;
  sfa__kv_append_args a;
  memset(&a, 0, sizeof a);
  FILL_CACHE_ARGS(&a, cache, &sh);
  a.k_new = (uint64_t)(uintptr_t)k_new->data, a.v_new = (uint64_t)(uintptr_t)v_new->data;
  a.kn_sb = k_new->strides[0], a.kn_sh = k_new->strides[1], a.kn_st = k_new->strides[2];
  a.vn_sb = v_new->strides[0], a.vn_sh = v_new->strides[1], a.vn_st = v_new->strides[2];
  if (k_hash_new) {
    a.k_hash_new = (uint64_t)(uintptr_t)k_hash_new->data;
    a.khn_sb = sfa__eff_stride(k_hash_new, 0), a.khn_sh = sfa__eff_stride(k_hash_new, 1);
  }
  a.tn = (int32_t)Tn, a.row_chunks = (int32_t)(D / 8);
  a.chunks = B * sh.Hkv * Tn * (D / 8);
  const sfa__grid_dims dims = {.items = a.chunks};
  unsigned grid[3];
  sfa__grid_size(&k->var.grid, &dims, grid);
  return sfa__util_launch(ctx, k->fn, "kv_append", grid[0], (unsigned)k->var.threads, 0, stream,
                          &a);
}

sfa_status sfa_kv_append(sfa_context *ctx, const sfa_kv_cache *cache, const sfa_tensor *k_new,
                         const sfa_tensor *v_new, void *stream) {
  if (!ctx) return SFA_ERR_INVALID_ARGUMENT;
  return kv_append(ctx, cache, k_new, v_new, NULL, stream);
}

sfa_status sfa_kv_append_hash(sfa_context *ctx, const sfa_kv_cache *cache,
                              const sfa_tensor *k_new, const sfa_tensor *v_new,
                              const sfa_tensor *k_hash_new, void *stream) {
  if (!ctx) return SFA_ERR_INVALID_ARGUMENT;
  if (!k_hash_new) return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "k_hash_new: is NULL");
  return kv_append(ctx, cache, k_new, v_new, k_hash_new, stream);
}

/* ------------------------------------------------------------ sfa_check_kv_cache */

sfa_status sfa_check_kv_cache(sfa_context *ctx, const sfa_kv_cache *cache, int Tn, void *stream) {
  if (!ctx) return SFA_ERR_INVALID_ARGUMENT;
  if (!cache) return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "cache: is NULL");
  if (Tn < 1 || Tn > DECODE_MAX_TN)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "Tn: %d; must be in 1..%d", Tn, DECODE_MAX_TN);
  /* The batch: the page table's rows, else the contiguous cache's. */
  int64_t B = cache->page_table ? cache->page_table->shape[0] : cache->k ? cache->k->shape[0] : 0;
  decode_shape sh;
  sfa_status st = check_cache(ctx, cache, B, 0, -1, "", &sh);
  if (st != SFA_OK) return st;
  if (!cache->seqused && !cache->page_table) return SFA_OK; /* nothing on the device to check */

  const int64_t P = cache->page_table ? cache->page_table->shape[1] : 0;
  if ((double)B * (double)(P + 1) * 4 > (double)SIZE_MAX / 2)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "cache: too large to copy to the host");
  int32_t *used = malloc((size_t)B * sizeof *used);
  int32_t *pt = P ? malloc((size_t)(B * P) * sizeof *pt) : NULL;
  if (!used || (P && !pt)) {
    free(used);
    free(pt);
    return sfa__error(ctx, SFA_ERR_OUT_OF_MEMORY, "sfa_check_kv_cache: out of host memory");
  }
  sfa__device dev;
  const sfa_driver *d;
  CUresult r = CUDA_SUCCESS;
  if ((st = sfa__bind(ctx, &dev)) != SFA_OK) goto done;
  if ((st = sfa__driver_load(&d, ctx->err, sizeof ctx->err)) != SFA_OK) goto done;
  if ((r = d->cuStreamSynchronize((CUstream)stream)) != CUDA_SUCCESS) {
    st = sfa__cuda_error(r, "cuStreamSynchronize(stream)", ctx->err, sizeof ctx->err);
    goto done;
  }
  for (int64_t b = 0; b < B; b++) used[b] = (int32_t)sh.capacity;
  if (cache->seqused &&
      (r = d->cuMemcpyDtoH(used, (CUdeviceptr)(uintptr_t)cache->seqused->data, (size_t)B * 4)) !=
          CUDA_SUCCESS) {
    st = sfa__cuda_error(r, "copying cache->seqused to the host (cuMemcpyDtoH)", ctx->err,
                         sizeof ctx->err);
    goto done;
  }
  for (int64_t b = 0; P && b < B; b++) {
    const char *row = (const char *)cache->page_table->data +
                      (size_t)(b * cache->page_table->strides[0]) * 4;
    if ((r = d->cuMemcpyDtoH(pt + b * P, (CUdeviceptr)(uintptr_t)row, (size_t)P * 4)) !=
        CUDA_SUCCESS) {
      st = sfa__cuda_error(r, "copying cache->page_table to the host (cuMemcpyDtoH)", ctx->err,
                           sizeof ctx->err);
      goto done;
    }
  }
  for (int64_t b = 0; b < B; b++) {
    if (used[b] < Tn || used[b] > sh.capacity) {
      st = sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                      "cache->seqused[%lld] = %d; must be in [%d, %lld] (the new tokens .. the "
                      "capacity)",
                      (long long)b, used[b], Tn, (long long)sh.capacity);
      goto done;
    }
    for (int64_t i = 0; P && i * sh.page_size < used[b]; i++) {
      const int32_t pg = pt[b * P + i];
      if (pg < 0 || pg >= sh.num_pages) {
        st = sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                        "cache->page_table[%lld, %lld] = %d; must be in [0, %lld) (the pages of "
                        "cache->k); it holds positions %lld..%lld of sequence %lld, which uses %d",
                        (long long)b, (long long)i, pg, (long long)sh.num_pages,
                        (long long)(i * sh.page_size), (long long)((i + 1) * sh.page_size - 1),
                        (long long)b, used[b]);
        goto done;
      }
    }
  }
done:
  free(used);
  free(pt);
  return st;
}
