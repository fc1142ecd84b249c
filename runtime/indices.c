/*
** indices.c -- sfa_check_indices, the validation call of the index contract
** of modes qk_drop and hash (docs/semantics.md; sfa_forward trusts it and
** does not check values). It validates the arguments like sfa_forward does,
** synchronizes the caller's stream, copies the index arrays to the host and
** runs sfa__check_index_arrays (pure host code, see indices.h) on them; with
** packed sequences (every mode) it checks the prefix sums cu_seqlens_q / _k
** and each sequence's index rows (sfa__check_index_arrays_varlen).
*/
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/indices.h"
#include "runtime/internal.h"
#include "runtime/validate.h"
#include "runtime/varlen.h"
#include "gen/gen_internal.h"
#include "gen/mode.h"

/* ------------------------------------------------------------ host checker */

/* The q or the k side of the contract. */
typedef struct side {
  const char *idx, *hash; /* array names */
  int32_t pad;            /* the padding index */
  const char *pad_str;
} side;

static const side Q_SIDE = {"q_idx", "q_hash", -1, "-1"};
static const side K_SIDE = {"k_idx", "k_hash", INT32_MAX, "INT32_MAX"};

/* One (b, h) row of T entries; hs is NULL for qk_drop. */
static sfa_status check_row(const side *s, const int32_t *idx, const int32_t *hs, long long b,
                            long long h, long long T, char *err, size_t errlen) {
  long long pad_at = -1;
  for (long long t = 0; t < T; t++) {
    const int32_t x = idx[t];
    if (x == s->pad) {
      if (hs && hs[t] != INT32_MAX)
        return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT,
                    "extras->%s[%lld, %lld, %lld] = %d at padding (%s = %s there); padding "
                    "needs %s = INT32_MAX",
                    s->hash, b, h, t, (int)hs[t], s->idx, s->pad_str, s->hash);
      if (pad_at < 0) pad_at = t;
      continue;
    }
    if (x < 0)
      return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT,
                  "extras->%s[%lld, %lld, %lld] = %d is negative; positions are >= 0 and "
                  "padding is %s",
                  s->idx, b, h, t, (int)x, s->pad_str);
    if (pad_at >= 0)
      return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT,
                  "extras->%s[%lld, %lld, %lld] = %d follows padding at %s[%lld, %lld, %lld] = "
                  "%s (padding must be a suffix)",
                  s->idx, b, h, t, (int)x, s->idx, b, h, pad_at, s->pad_str);
    if (hs && hs[t] < 0)
      return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT, "extras->%s[%lld, %lld, %lld] = %d is negative; buckets are >= 0",
                  s->hash, b, h, t, (int)hs[t]);
    if (t == 0) continue;
    const int32_t px = idx[t - 1];
    if (hs && hs[t] < hs[t - 1])
      return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT,
                  "extras->%s[%lld, %lld, %lld] = %d is less than %s[%lld, %lld, %lld] = %d "
                  "(rows must be sorted by bucket, then position)",
                  s->hash, b, h, t, (int)hs[t], s->hash, b, h, t - 1, (int)hs[t - 1]);
    if (hs && hs[t] == hs[t - 1] && x <= px)
      return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT,
                  "extras->%s[%lld, %lld, %lld] = %d is not greater than %s[%lld, %lld, %lld] = "
                  "%d in bucket %d (rows must be sorted by bucket, then position)",
                  s->idx, b, h, t, (int)x, s->idx, b, h, t - 1, (int)px, (int)hs[t]);
    if (!hs && x <= px)
      return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT,
                  "extras->%s[%lld, %lld, %lld] = %d is not greater than %s[%lld, %lld, %lld] = "
                  "%d (indices must strictly increase)",
                  s->idx, b, h, t, (int)x, s->idx, b, h, t - 1, (int)px);
  }
  return SFA_OK;
}

/* The contracts of the mode table's rows (gen/mode.h): qk_drop's strictly
** increasing positions, hash's rows sorted by (bucket, position). */
sfa_status sfa__index_row_qk_drop(int k_side, const int32_t *idx, const int32_t *hash,
                                  long long b, long long h, long long T, char *err,
                                  size_t errlen) {
  (void)hash;
  return check_row(k_side ? &K_SIDE : &Q_SIDE, idx, NULL, b, h, T, err, errlen);
}

sfa_status sfa__index_row_hash(int k_side, const int32_t *idx, const int32_t *hash,
                               long long b, long long h, long long T, char *err,
                               size_t errlen) {
  return check_row(k_side ? &K_SIDE : &Q_SIDE, idx, hash, b, h, T, err, errlen);
}

sfa_status sfa__check_index_arrays(sfa_mode mode, int64_t B, int64_t Hq, int64_t Hkv,
                                   int64_t Tq, int64_t Tk, const int32_t *q_idx,
                                   const int32_t *k_idx, const int32_t *q_hash,
                                   const int32_t *k_hash, char *err, size_t errlen) {
  const sfa__mode *m = sfa__mode_find(mode);
  if (!m || !m->check_index_row) {
    char modes[96];
    sfa__mode_list(modes, sizeof modes, 0, " and ", sfa__mode_has_indices, 0);
    return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT,
                     "params.mode: %d; only modes %s have index arrays", (int)mode, modes);
  }
  const int hash = (m->reads & SFA__EX_Q_HASH) != 0;
  if (B < 1 || Hq < 1 || Hkv < 1 || Tq < 1 || Tk < 1)
    return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT, "sizes: B, Hq, Hkv, Tq, Tk = %lld, %lld, %lld, %lld, %lld; each "
                "must be >= 1", (long long)B, (long long)Hq, (long long)Hkv, (long long)Tq,
                (long long)Tk);
  if (!q_idx || !k_idx || (hash && (!q_hash || !k_hash)))
    return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT, "extras->%s: is NULL; mode %s needs it",
                !q_idx ? "q_idx" : !k_idx ? "k_idx" : !q_hash ? "q_hash" : "k_hash", m->name);
  sfa_status st;
  for (int64_t b = 0; b < B; b++) {
    for (int64_t h = 0; h < Hq; h++) {
      size_t at = ((size_t)b * (size_t)Hq + (size_t)h) * (size_t)Tq;
      if ((st = m->check_index_row(0, q_idx + at, hash ? q_hash + at : NULL, (long long)b,
                                   (long long)h, (long long)Tq, err, errlen)))
        return st;
    }
    for (int64_t h = 0; h < Hkv; h++) {
      size_t at = ((size_t)b * (size_t)Hkv + (size_t)h) * (size_t)Tk;
      if ((st = m->check_index_row(1, k_idx + at, hash ? k_hash + at : NULL, (long long)b,
                                   (long long)h, (long long)Tk, err, errlen)))
        return st;
    }
  }
  return SFA_OK;
}

/* ------------------------------------------------------------ device wrapper */

/* t (validated, int32 [B, H, T] contiguous along time) into host [B, H, T]:
** one copy where it is contiguous, else one per (b, h) row. */
static sfa_status fetch(sfa_context *ctx, const sfa_driver *d, const char *nm,
                        const sfa_tensor *t, int32_t *host) {
  const int64_t B = t->shape[0], H = t->shape[1], T = t->shape[2];
  const int64_t sb = sfa__eff_stride(t, 0), sh = sfa__eff_stride(t, 1);
  const size_t row = (size_t)T * sizeof(int32_t);
  char what[96];
  CUresult r = CUDA_SUCCESS;
  if ((H == 1 || sh == T) && (B == 1 || sb == H * T)) {
    r = d->cuMemcpyDtoH(host, (CUdeviceptr)(uintptr_t)t->data, (size_t)(B * H) * row);
  } else {
    for (int64_t b = 0; b < B && r == CUDA_SUCCESS; b++)
      for (int64_t h = 0; h < H && r == CUDA_SUCCESS; h++) {
        const int32_t *src = (const int32_t *)t->data + b * sb + h * sh;
        r = d->cuMemcpyDtoH(host + (size_t)(b * H + h) * (size_t)T,
                            (CUdeviceptr)(uintptr_t)src, row);
      }
  }
  if (r == CUDA_SUCCESS) return SFA_OK;
  snprintf(what, sizeof what, "copying %s to the host (cuMemcpyDtoH)", nm);
  return sfa__cuda_error(r, what, ctx->err, sizeof ctx->err);
}

/* n = b * h * t entries and their bytes (per bytes each); 1 on overflow. */
static int count_entries(int64_t b, int64_t h, int64_t t, uint64_t per, uint64_t *n,
                         uint64_t *bytes) {
  return __builtin_mul_overflow((uint64_t)b, (uint64_t)h, n) ||
         __builtin_mul_overflow(*n, (uint64_t)t, n) || __builtin_mul_overflow(*n, per, bytes);
}

/* The entries per array of the q side (q_idx, q_hash) and of the k side that
** the host copy holds, checked before anything is allocated: Tq and Tk within
** the forward's int32 index (this call does not pass sizes that sfa_forward
** refuses), the byte count without overflow (SFA_ERR_INVALID_ARGUMENT) and
** within the machine's physical memory (SFA_ERR_OUT_OF_MEMORY). The messages
** name the array (the larger side) and its sizes. */
static sfa_status host_copy_size(sfa_context *ctx, int hash, int64_t B, int64_t Hq,
                                 int64_t Hkv, int64_t Tq, int64_t Tk, size_t *nq, size_t *nk) {
  if (Tq > INT32_MAX || Tk > INT32_MAX)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                      "%s: %lld exceeds the kernel's int32 index (%d)",
                      Tq > INT32_MAX ? "Tq" : "Tk", (long long)(Tq > INT32_MAX ? Tq : Tk),
                      INT32_MAX);
  const uint64_t per = (hash ? 2u : 1u) * sizeof(int32_t); /* idx, and hash's buckets */
  uint64_t q = 0, k = 0, qbytes = 0, kbytes = 0, total = 0;
  const int qover = count_entries(B, Hq, Tq, per, &q, &qbytes);
  const int kover = count_entries(B, Hkv, Tk, per, &k, &kbytes);
  const int kside = !qover && (kover || kbytes > qbytes);
  const char *nm = kside ? "extras->k_idx" : "extras->q_idx";
  const long long h = kside ? Hkv : Hq, t = kside ? Tk : Tq;
  const char *also = hash ? (kside ? " (and as many in k_hash)" : " (and as many in q_hash)") : "";
  if (qover || kover || __builtin_add_overflow(qbytes, kbytes, &total) || total > SIZE_MAX)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                      "%s: [%lld, %lld, %lld] entries%s are too many for sfa_check_indices, "
                      "which copies the index arrays to the host: their bytes overflow 64 bits",
                      nm, (long long)B, h, t, also);
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  const double have = pages > 0 && page > 0 ? (double)pages * (double)page : 0;
  if (have > 0 && (double)total > have)
    return sfa__error(ctx, SFA_ERR_OUT_OF_MEMORY,
                      "%s: [%lld, %lld, %lld] entries%s: sfa_check_indices would copy %.1f GiB "
                      "of index arrays to host memory, more than this machine's %.1f GiB",
                      nm, (long long)B, h, t, also, (double)total / 1073741824.0,
                      have / 1073741824.0);
  *nq = (size_t)q;
  *nk = (size_t)k;
  return SFA_OK;
}

/* Packed sequences: the prefix sums (every mode) and, in modes with index
** arrays, each sequence's rows of them (runtime/varlen.h). Arguments as
** sfa_check_indices' (validated params, Tq and Tk >= 1). */
static sfa_status check_packed(sfa_context *ctx, const sfa_attention_params *params,
                               const sfa__mode *m, const sfa_extras *extras, int64_t Tq,
                               int64_t Tk, void *stream) {
  sfa_status st = sfa__varlen_check_pair(ctx, params, extras);
  if (st != SFA_OK) return st;
  int64_t Hq = 1, Hkv = 1;
  if (extras->q_idx && extras->q_idx->rank == 2) Hq = extras->q_idx->shape[0];
  if (extras->k_idx && extras->k_idx->rank == 2) Hkv = extras->k_idx->shape[0];
  sfa__varlen vl;
  memset(&vl, 0, sizeof vl);
  /* A window bias or mask has no values to check here, and its heads are
  ** q's, which this call does not see: sfa_forward checks its layout. */
  sfa_extras ex = *extras;
  ex.bias = ex.mask = NULL;
  if ((st = sfa__varlen_index_views(ctx, &ex, Hq, Tq, Hkv, Tk, &vl)) != SFA_OK ||
      (st = sfa__validate_extras(ctx, params, &vl.ex, SFA_DTYPE_FP16, 1, Hq, Hkv, Tq, Tk)))
    return st;
  if (Hq % Hkv != 0)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                      "extras->k_idx: its %lld heads (shape[0]) do not divide the %lld heads of "
                      "q_idx",
                      (long long)Hkv, (long long)Hq);
  const int64_t n = extras->cu_seqlens_q->shape[0];
  const int idx = m->check_index_row != NULL, hash = (m->reads & SFA__EX_Q_HASH) != 0;
  size_t nq = 0, nk = 0;
  if (idx && (st = host_copy_size(ctx, hash, 1, Hq, Hkv, Tq, Tk, &nq, &nk)) != SFA_OK) return st;
  int32_t *cq = malloc((size_t)n * 4), *ck = malloc((size_t)n * 4);
  int32_t *qi = idx ? malloc(nq * 4) : NULL, *ki = idx ? malloc(nk * 4) : NULL;
  int32_t *qh = hash ? malloc(nq * 4) : NULL, *kh = hash ? malloc(nk * 4) : NULL;
  sfa__device dev;
  const sfa_driver *d;
  CUresult r;
  if (!cq || !ck || (idx && (!qi || !ki)) || (hash && (!qh || !kh))) {
    st = sfa__error(ctx, SFA_ERR_OUT_OF_MEMORY,
                    "sfa_check_indices: out of host memory for %zu + %zu indices", nq, nk);
    goto done;
  }
  if ((st = sfa__bind(ctx, &dev)) != SFA_OK) goto done;
  if ((st = sfa__driver_load(&d, ctx->err, sizeof ctx->err)) != SFA_OK) goto done;
  if ((r = d->cuStreamSynchronize((CUstream)stream)) != CUDA_SUCCESS ||
      (r = d->cuMemcpyDtoH(cq, (CUdeviceptr)(uintptr_t)extras->cu_seqlens_q->data,
                           (size_t)n * 4)) != CUDA_SUCCESS ||
      (r = d->cuMemcpyDtoH(ck, (CUdeviceptr)(uintptr_t)extras->cu_seqlens_k->data,
                           (size_t)n * 4)) != CUDA_SUCCESS) {
    st = sfa__cuda_error(r, "copying extras->cu_seqlens_q/_k to the host", ctx->err,
                         sizeof ctx->err);
    goto done;
  }
  if (!idx) {
    if ((st = sfa__check_seqlens("extras->cu_seqlens_q", cq, n, Tq, ctx->err, sizeof ctx->err)) ==
        SFA_OK)
      st = sfa__check_seqlens("extras->cu_seqlens_k", ck, n, Tk, ctx->err, sizeof ctx->err);
    goto done;
  }
  if ((st = fetch(ctx, d, "extras->q_idx", vl.ex.q_idx, qi)) ||
      (st = fetch(ctx, d, "extras->k_idx", vl.ex.k_idx, ki)) ||
      (hash && (st = fetch(ctx, d, "extras->q_hash", vl.ex.q_hash, qh))) ||
      (hash && (st = fetch(ctx, d, "extras->k_hash", vl.ex.k_hash, kh))))
    goto done;
  st = sfa__check_index_arrays_varlen(m->mode, n - 1, Hq, Hkv, Tq, Tk, cq, ck, qi, ki, qh, kh,
                                      ctx->err, sizeof ctx->err);
done:
  free(cq), free(ck), free(qi), free(ki), free(qh), free(kh);
  return st;
}

sfa_status sfa_check_indices(sfa_context *ctx, const sfa_attention_params *params,
                             const sfa_extras *extras, int64_t Tq, int64_t Tk, void *stream) {
  if (!ctx) return SFA_ERR_INVALID_ARGUMENT;
  sfa_status st = sfa__validate_params(ctx, params);
  if (st != SFA_OK) return st;
  const sfa_mode mode = params->mode;
  const sfa__mode *m = sfa__mode_find(mode);
  const int packed = extras && (extras->cu_seqlens_q || extras->cu_seqlens_k);
  if (!m->check_index_row && !packed) {
    char modes[96];
    sfa__mode_list(modes, sizeof modes, 0, " and ", sfa__mode_has_indices, 0);
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                      "params.mode: %s has no index arrays; sfa_check_indices checks those of "
                      "modes %s",
                      m->name, modes);
  }
  if (Tq < 1 || Tk < 1)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "%s: %lld; must be >= 1 (the length of %s)",
                      Tq < 1 ? "Tq" : "Tk", (long long)(Tq < 1 ? Tq : Tk), Tq < 1 ? "q" : "k");
  if (packed) return check_packed(ctx, params, m, extras, Tq, Tk, stream);
  /* The sizes come from q_idx and k_idx; missing arrays and wrong ranks are
  ** reported by the validation, whatever sizes it is given. */
  int64_t B = 1, Hq = 1, Hkv = 1;
  if (extras && extras->q_idx && extras->q_idx->rank == 3)
    B = extras->q_idx->shape[0], Hq = extras->q_idx->shape[1];
  if (extras && extras->k_idx && extras->k_idx->rank == 3) Hkv = extras->k_idx->shape[1];
  if ((st = sfa__validate_extras(ctx, params, extras, SFA_DTYPE_FP16, B, Hq, Hkv, Tq, Tk)))
    return st;
  if (Hq % Hkv != 0)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                      "extras->k_idx: its %lld heads (shape[1]) do not divide the %lld heads of "
                      "q_idx",
                      (long long)Hkv, (long long)Hq);

  const int hash = (m->reads & SFA__EX_Q_HASH) != 0; /* bucket arrays next to the indices */
  size_t nq = 0, nk = 0;
  if ((st = host_copy_size(ctx, hash, B, Hq, Hkv, Tq, Tk, &nq, &nk)) != SFA_OK) return st;
  int32_t *qi = malloc(nq * sizeof *qi), *ki = malloc(nk * sizeof *ki);
  int32_t *qh = hash ? malloc(nq * sizeof *qh) : NULL, *kh = hash ? malloc(nk * sizeof *kh) : NULL;
  if (!qi || !ki || (hash && (!qh || !kh))) {
    st = sfa__error(ctx, SFA_ERR_OUT_OF_MEMORY,
                    "sfa_check_indices: out of host memory for %zu + %zu indices", nq, nk);
    goto done;
  }
  sfa__device dev;
  const sfa_driver *d;
  if ((st = sfa__bind(ctx, &dev)) != SFA_OK) goto done;
  if ((st = sfa__driver_load(&d, ctx->err, sizeof ctx->err)) != SFA_OK) goto done;
  CUresult r = d->cuStreamSynchronize((CUstream)stream); /* the arrays may be in flight */
  if (r != CUDA_SUCCESS) {
    st = sfa__cuda_error(r, "cuStreamSynchronize(stream)", ctx->err, sizeof ctx->err);
    goto done;
  }
  if ((st = fetch(ctx, d, "extras->q_idx", extras->q_idx, qi)) ||
      (st = fetch(ctx, d, "extras->k_idx", extras->k_idx, ki)) ||
      (hash && (st = fetch(ctx, d, "extras->q_hash", extras->q_hash, qh))) ||
      (hash && (st = fetch(ctx, d, "extras->k_hash", extras->k_hash, kh))))
    goto done;
  st = sfa__check_index_arrays(mode, B, Hq, Hkv, Tq, Tk, qi, ki, qh, kh, ctx->err,
                               sizeof ctx->err);
done:
  free(qi);
  free(ki);
  free(qh);
  free(kh);
  return st;
}
