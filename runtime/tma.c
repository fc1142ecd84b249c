/*
** tma.c -- tensor maps for the warp-specialized kernels (runtime/tma.h):
** the addressability rule, the encoding through the driver's
** cuTensorMapEncodeTiled, and a per-thread cache of recent maps by shape
** (cuTensorMapReplaceAddress gives a cached shape another tensor's address).
*/
#include <stdio.h>
#include <string.h>

#include "runtime/tma.h"
#include "runtime/util.h"

/* Bytes of an element of a dtype the maps take (fp16, bf16, fp32), else 0. */
static int64_t elem_bytes(sfa_dtype dt) {
  const int mapped = dt == SFA_DTYPE_FP16 || dt == SFA_DTYPE_BF16 || dt == SFA_DTYPE_FP32;
  return mapped ? (int64_t)sfa__dtype_size(dt) : 0;
}

/* A rank-4 tensor [B, H, T, D] in the copy engine's order: D, T, H, B. */
int sfa__tma_addressable(const sfa__tma_tensor *t) {
  if (!t || !t->data || (t->data & 15u)) return 0;
  const int64_t es = elem_bytes(t->dtype);
  if (!es) return 0;
  const int64_t dims[3] = {t->T, t->H, t->B}, strides[3] = {t->st, t->sh, t->sb};
  for (int i = 0; i < 3; i++) {
    if (dims[i] < 1 || dims[i] > ((int64_t)1 << 32)) return 0;
    if (dims[i] == 1) continue; /* never stepped over: its stride is replaced */
    const int64_t bytes = strides[i] * es;
    if (bytes <= 0 || bytes % 16 || bytes >= ((int64_t)1 << 40)) return 0;
  }
  return t->D >= 1 && t->D * es % 16 == 0;
}

/* The cache: the last few maps this thread made, replaced round robin. */
#define CACHE_SLOTS 8
typedef struct tma_slot {
  sfa__tma_tensor t;
  int box_cols, box_rows, used;
  CUtensorMap map;
} tma_slot;
static _Thread_local tma_slot cache[CACHE_SLOTS];
static _Thread_local unsigned cache_next;

/* Everything of the map but the address. */
static int same_shape(const tma_slot *s, const sfa__tma_tensor *t, int box_cols, int box_rows) {
  return s->used && s->box_cols == box_cols && s->box_rows == box_rows &&
         s->t.dtype == t->dtype && s->t.B == t->B && s->t.H == t->H && s->t.T == t->T &&
         s->t.D == t->D && s->t.sb == t->sb && s->t.sh == t->sh && s->t.st == t->st;
}

static void remember(const sfa__tma_tensor *t, int box_cols, int box_rows, const CUtensorMap *m) {
  tma_slot *s = &cache[cache_next++ % CACHE_SLOTS];
  s->t = *t;
  s->box_cols = box_cols, s->box_rows = box_rows, s->used = 1;
  s->map = *m;
}

sfa_status sfa__tma_map(const sfa_driver *d, const sfa__tma_tensor *t, int box_cols,
                        int box_rows, CUtensorMap *map, char *err, size_t errlen) {
  int like = -1; /* a slot of the same shape at another address */
  for (int i = 0; i < CACHE_SLOTS; i++)
    if (same_shape(&cache[i], t, box_cols, box_rows)) {
      if (cache[i].t.data == t->data) {
        *map = cache[i].map;
        return SFA_OK;
      }
      if (like < 0) like = i;
    }
  const int addressable = sfa__tma_addressable(t);
  if (like >= 0 && d->cuTensorMapReplaceAddress && addressable) {
    CUtensorMap m = cache[like].map;
    if (d->cuTensorMapReplaceAddress(&m, (void *)(uintptr_t)t->data) == CUDA_SUCCESS) {
      remember(t, box_cols, box_rows, &m);
      *map = m;
      return SFA_OK;
    } /* else encode it afresh, which reports the error if there is one */
  }
  if (!d->cuTensorMapEncodeTiled) {
    if (err && errlen)
      snprintf(err, errlen, "the warp-specialized kernels need cuTensorMapEncodeTiled, which "
                            "this driver lacks (CUDA 12.0 or newer)");
    return SFA_ERR_UNSUPPORTED;
  }
  if (!addressable) {
    if (err && errlen)
      snprintf(err, errlen, "a tensor of a warp-specialized kernel is not addressable by "
                            "the copy engine (16-byte aligned base and strides)");
    return SFA_ERR_INTERNAL; /* the selection checks this first */
  }
  /* A dimension of length 1 is never stepped over; give it the stride of a
  ** dense layout so the map is valid whatever its stride says. */
  const int64_t es = elem_bytes(t->dtype);
  const int64_t dims[4] = {t->D, t->T, t->H, t->B};
  int64_t strides[3] = {t->st * es, t->sh * es, t->sb * es};
  for (int i = 0; i < 3; i++)
    if (dims[i + 1] == 1) strides[i] = (i ? strides[i - 1] * dims[i] : dims[0] * es + 15) / 16 * 16;
  cuuint64_t gdim[4], gstride[3];
  cuuint32_t box[4] = {(cuuint32_t)box_cols, (cuuint32_t)box_rows, 1, 1}, estride[4] = {1, 1, 1, 1};
  for (int i = 0; i < 4; i++) gdim[i] = (cuuint64_t)dims[i];
  for (int i = 0; i < 3; i++) gstride[i] = (cuuint64_t)strides[i];
  CUtensorMap m;
  CUresult r = d->cuTensorMapEncodeTiled(
      &m, t->dtype == SFA_DTYPE_BF16   ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16
          : t->dtype == SFA_DTYPE_FP32 ? CU_TENSOR_MAP_DATA_TYPE_FLOAT32
                                       : CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
      4, (void *)(uintptr_t)t->data, gdim, gstride, box, estride, CU_TENSOR_MAP_INTERLEAVE_NONE,
      CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
      CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) return sfa__cuda_error(r, "cuTensorMapEncodeTiled", err, errlen);
  remember(t, box_cols, box_rows, &m);
  *map = m;
  return SFA_OK;
}

int sfa__tma_all_addressable(const sfa__tma_tensor *t, int n) {
  for (int i = 0; i < n; i++)
    if (!sfa__tma_addressable(&t[i])) return 0;
  return 1;
}

sfa_status sfa__tma_params(const sfa_driver *d, const sfa__tma_tensor *t, const int *rows, int n,
                           int box_cols, CUtensorMap *maps, void **params, char *err,
                           size_t errlen) {
  for (int i = 0; i < n; i++) {
    sfa_status st = sfa__tma_map(d, &t[i], box_cols, rows[i], &maps[i], err, errlen);
    if (st != SFA_OK) return st;
    params[i] = &maps[i];
  }
  return SFA_OK;
}
