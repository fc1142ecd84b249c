/*
** test_gpu_helpers.c -- the sparse helpers on a real GPU against host
** references, with exact equality:
**   sfa_hash_prepare  idx/hash against a host stable sort, gathered rows
**                     bit for bit (1, 3, 16, 1000, 4096 buckets; T = 1 .. 4097;
**                     GQA-like q and k calls; strided, padded and misaligned
**                     layouts; fp16, bf16, fp32; out-of-range bucket ids);
**   sfa_hash_unsort   unsort(prepare(x)) == x, and partial / invalid idx;
**   sfa_topk_mask     against a host sort (random, tied small integers, NaN,
**                     +-inf, +-0, constant rows; causal or not; Tq != Tk;
**                     w = 0, 1, 7, 64, > Tk; broadcast and unaligned bias;
**                     rows too long for shared memory).
** Tcase "varlen", the packed forms (sfa_hash_prepare_varlen, _unsort_varlen,
** sfa_topk_mask_varlen): against host sorts per sequence (lengths 0 and 1,
** uneven batches, one 32k sequence among 512s, query and key lengths that
** differ, mask columns past a sequence's keys 0); prefix sums that break
** their contract complete without a fault; and packed hash attention
** (prepare -> packed sfa_forward -> unsort) equals the per-sequence
** fixed-length pipeline (CK_RUN_CASE=varlen runs only these, e.g. under
** compute-sanitizer).
** Every output is poisoned before the call: each logical element must be
** written with the expected value and the bytes around it must keep the
** poison. The "perf" case prints timings of the H100 target shapes (no
** assertion; also the packed prepare of one 32k sequence among 512s).
** Without a driver or a device the suite prints "SKIP: <reason>" and exits
** 77. SFA_TEST_SEED changes the random cases.
*/
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sfa.h"
#include "runtime/driver.h"
#include "gpucase.h"

static const sfa_driver *drv;
static CUdevice device;
static CUcontext cuctx;
static sfa_context *ctx;
static uint64_t base_seed = 0x5FA0777;

#define CU(call) TG_CU(call)

#define SFA_OK_OR_ABORT(call, what)                                                    \
  do {                                                                                 \
    sfa_status s_ = (call);                                                            \
    ck_assert_msg(s_ == SFA_OK, "%s: %s: %s", what, sfa_status_string(s_),             \
                  sfa_last_error(ctx));                                                \
  } while (0)

/* ------------------------------------------------------------ half precision */

static uint16_t to_bf16(float f) { return sfa_float_to_half(SFA_DTYPE_BF16, f); }
static float from_bf16(uint16_t h) { return sfa_half_to_float(SFA_DTYPE_BF16, h); }
static uint16_t to_fp16(float f) { return sfa_float_to_half(SFA_DTYPE_FP16, f); }
static float from_fp16(uint16_t h) { return sfa_half_to_float(SFA_DTYPE_FP16, h); }

/* ------------------------------------------------------------ device tensors */

static const char *dname(sfa_dtype d) {
  switch (d) {
    case SFA_DTYPE_FP16: return "fp16";
    case SFA_DTYPE_BF16: return "bf16";
    case SFA_DTYPE_FP32: return "fp32";
    case SFA_DTYPE_INT32: return "int32";
    case SFA_DTYPE_UINT8: return "uint8";
  }
  return "?";
}

static size_t dtype_size(sfa_dtype d) {
  return d == SFA_DTYPE_UINT8 ? 1 : (d == SFA_DTYPE_FP16 || d == SFA_DTYPE_BF16) ? 2 : 4;
}

/* A tensor in device memory with a host copy of its whole storage (which
** starts `off` elements before t.data). */
typedef struct dtensor {
  sfa_tensor t;
  size_t es, off, nstore; /* element size, offset, storage elements */
  CUdeviceptr dev;
  unsigned char *host;    /* storage, host side */
  unsigned char *expect;  /* expected storage (dt_expect) */
} dtensor;

/* Layouts: 0 contiguous; 1 padded (every dim's stride grows by a few
** elements); 2 dims 1 and 2 swapped in storage, padded. strides may instead be
** given. off: elements between the allocation and t.data. */
static void dt_init(dtensor *d, sfa_dtype dtype, int rank, const int64_t *shape, int layout,
                    const int64_t *strides, size_t off, unsigned char poison) {
  memset(d, 0, sizeof *d);
  d->es = dtype_size(dtype);
  d->off = off;
  sfa_tensor_init(&d->t, NULL, dtype, rank, shape);
  if (strides) {
    for (int i = 0; i < rank; i++) d->t.strides[i] = strides[i];
  } else if (layout > 0) {
    int order[4] = {0, 1, 2, 3};
    if (layout == 2 && rank == 4) order[1] = 2, order[2] = 1; /* [B, T, H, D] storage */
    if (layout == 2 && rank == 3) order[0] = 1, order[1] = 0; /* [H, B, T] storage */
    int64_t s = 1;
    for (int k = rank - 1; k >= 0; k--) {
      int i = order[k];
      d->t.strides[i] = s;
      s = s * shape[i] + (k == rank - 1 ? 0 : (int64_t)(1 + (i * 3) % 5));
      if (k == rank - 1) s += 3; /* the row stride is not a multiple of the row */
    }
  }
  int64_t span = 0;
  for (int i = 0; i < rank; i++) span += d->t.strides[i] * (shape[i] - 1);
  d->nstore = off + (size_t)span + 1;
  d->host = malloc(d->nstore * d->es);
  d->expect = malloc(d->nstore * d->es);
  ck_assert(d->host && d->expect);
  memset(d->host, poison, d->nstore * d->es);
  CU(drv->cuMemAlloc(&d->dev, d->nstore * d->es));
  d->t.data = (void *)(uintptr_t)(d->dev + off * d->es);
}

static void dt_free(dtensor *d) {
  if (d->dev) drv->cuMemFree(d->dev);
  free(d->host);
  free(d->expect);
  memset(d, 0, sizeof *d);
}

static size_t dt_index(const dtensor *d, const int64_t *ix) {
  int64_t at = (int64_t)d->off;
  for (int i = 0; i < d->t.rank; i++) at += ix[i] * d->t.strides[i];
  return (size_t)at;
}

static void *dt_at(dtensor *d, const int64_t *ix) { return d->host + dt_index(d, ix) * d->es; }
static void *dt_expect_at(dtensor *d, const int64_t *ix) {
  return d->expect + dt_index(d, ix) * d->es;
}
static void dt_upload(dtensor *d) { CU(drv->cuMemcpyHtoD(d->dev, d->host, d->nstore * d->es)); }
static void dt_download(dtensor *d) { CU(drv->cuMemcpyDtoH(d->host, d->dev, d->nstore * d->es)); }

/* Start the expected storage from the current host storage (the poison). */
static void dt_expect_begin(dtensor *d) { memcpy(d->expect, d->host, d->nstore * d->es); }

/* Download and compare all of the storage with the expectation. */
static void dt_check(dtensor *d, const char *name, const char *desc) {
  dt_download(d);
  size_t n = d->nstore * d->es;
  for (size_t i = 0; i < n; i++)
    if (d->host[i] != d->expect[i])
      ck_abort_msg("%s: %s: storage byte %zu (element %zu) is 0x%02x, expected 0x%02x", desc,
                   name, i, i / d->es, d->host[i], d->expect[i]);
}

static void fill_random_bits(dtensor *d, uint64_t *rng) {
  int64_t ix[4] = {0, 0, 0, 0};
  const int64_t *sh = d->t.shape;
  for (ix[0] = 0; ix[0] < sh[0]; ix[0]++)
    for (ix[1] = 0; ix[1] < sh[1]; ix[1]++)
      for (ix[2] = 0; ix[2] < sh[2]; ix[2]++)
        for (ix[3] = 0; ix[3] < (d->t.rank > 3 ? sh[3] : 1); ix[3]++) {
          uint64_t v = tu_rand_u64(rng);
          memcpy(dt_at(d, ix), &v, d->es);
        }
}

/* ------------------------------------------------------------ hash prepare / unsort */

typedef struct hcase {
  int B, H, T, nb, D, D2; /* D2 = 0: no x2 */
  sfa_dtype dt, dt2;
  int in_layout, out_layout, idx_layout;
  size_t off;             /* misalignment of x and x_sorted, elements */
  int bad;                /* per mille of out-of-range bucket ids */
  uint64_t seed;
} hcase;

static void hdesc(const hcase *c, char *buf, size_t n) {
  snprintf(buf, n,
           "hash B=%d H=%d T=%d nb=%d D=%d D2=%d %s/%s layouts %d/%d/%d off %zu bad %d seed %llu",
           c->B, c->H, c->T, c->nb, c->D, c->D2, dname(c->dt),
           dname(c->dt2), c->in_layout, c->out_layout, c->idx_layout, c->off,
           c->bad, (unsigned long long)c->seed);
}

/* The expected rows of the sorted copy: xs[b, h, i] = x[b, h, idx[i]]. */
static void expect_gather(dtensor *xs, dtensor *x, const int32_t *order, int B, int H, int T) {
  dt_expect_begin(xs);
  const int64_t D = x->t.shape[3];
  for (int64_t b = 0; b < B; b++)
    for (int64_t h = 0; h < H; h++)
      for (int64_t i = 0; i < T; i++) {
        const int64_t src = order[(b * H + h) * T + i];
        for (int64_t e = 0; e < D; e++) {
          int64_t si[4] = {b, h, src, e}, di[4] = {b, h, i, e};
          memcpy(dt_expect_at(xs, di), dt_at(x, si), x->es);
        }
      }
}

static void run_hash_case(const hcase *c) {
  char desc[256];
  hdesc(c, desc, sizeof desc);
  uint64_t rng = c->seed;
  const int B = c->B, H = c->H, T = c->T;
  dtensor bucket, idx, hash, x, xs, x2, x2s, o, o2;
  int64_t s3[3] = {B, H, T}, sx[4] = {B, H, T, c->D}, sx2[4] = {B, H, T, c->D2};
  dt_init(&bucket, SFA_DTYPE_INT32, 3, s3, c->in_layout, NULL, 0, 0x77);
  dt_init(&idx, SFA_DTYPE_INT32, 3, s3, c->idx_layout, NULL, 0, 0xEE);
  dt_init(&hash, SFA_DTYPE_INT32, 3, s3, c->idx_layout ? 3 - c->idx_layout : 0, NULL, 0, 0xDD);
  dt_init(&x, c->dt, 4, sx, c->in_layout, NULL, c->off, 0xFF);
  dt_init(&xs, c->dt, 4, sx, c->out_layout, NULL, c->off, 0xFF);
  dt_init(&o, c->dt, 4, sx, c->out_layout ? 0 : 1, NULL, 0, 0xFF);
  if (c->D2) {
    dt_init(&x2, c->dt2, 4, sx2, c->out_layout, NULL, 0, 0xFF);
    dt_init(&x2s, c->dt2, 4, sx2, c->in_layout, NULL, 1, 0xFF);
    dt_init(&o2, c->dt2, 4, sx2, 0, NULL, 0, 0xFF);
  }

  /* Buckets, some out of range. */
  const int32_t wild[] = {-1, INT32_MIN, INT32_MAX, -7};
  int32_t *bins = malloc((size_t)B * H * T * sizeof *bins);
  ck_assert_ptr_nonnull(bins);
  for (int64_t b = 0; b < B; b++)
    for (int64_t h = 0; h < H; h++)
      for (int64_t t = 0; t < T; t++) {
        int64_t ix[3] = {b, h, t};
        int32_t v = (int32_t)(tu_rand_u64(&rng) % (uint64_t)c->nb);
        if (c->bad && (int)(tu_rand_u64(&rng) % 1000) < c->bad) {
          uint64_t k = tu_rand_u64(&rng) % 6;
          v = k < 4 ? wild[k] : k == 4 ? c->nb : c->nb + 1000;
        }
        memcpy(dt_at(&bucket, ix), &v, 4);
        bins[(b * H + h) * T + t] = (uint32_t)v < (uint32_t)c->nb ? v : c->nb;
      }
  fill_random_bits(&x, &rng);
  if (c->D2) fill_random_bits(&x2, &rng);
  dt_upload(&bucket), dt_upload(&idx), dt_upload(&hash), dt_upload(&x), dt_upload(&xs);
  dt_upload(&o);
  if (c->D2) dt_upload(&x2), dt_upload(&x2s), dt_upload(&o2);

  /* Host stable sort: counting sort by bin. */
  int32_t *order = malloc((size_t)B * H * T * sizeof *order);
  int *count = calloc((size_t)c->nb + 2, sizeof *count);
  ck_assert(order && count);
  dt_expect_begin(&idx);
  dt_expect_begin(&hash);
  for (int64_t bh = 0; bh < (int64_t)B * H; bh++) {
    const int32_t *bn = bins + bh * T;
    memset(count, 0, ((size_t)c->nb + 2) * sizeof *count);
    for (int t = 0; t < T; t++) count[bn[t] + 1]++;
    for (int k = 0; k <= c->nb; k++) count[k + 1] += count[k];
    for (int t = 0; t < T; t++) order[bh * T + count[bn[t]]++] = t;
    for (int i = 0; i < T; i++) {
      int64_t ix[3] = {bh / H, bh % H, i};
      int32_t pos = order[bh * T + i], bk = bn[pos] == c->nb ? INT32_MAX : bn[pos];
      memcpy(dt_expect_at(&idx, ix), &pos, 4);
      memcpy(dt_expect_at(&hash, ix), &bk, 4);
    }
  }
  expect_gather(&xs, &x, order, B, H, T);
  if (c->D2) expect_gather(&x2s, &x2, order, B, H, T);

  SFA_OK_OR_ABORT(sfa_hash_prepare(ctx, &bucket.t, c->nb, &x.t, &xs.t, c->D2 ? &x2.t : NULL,
                                   c->D2 ? &x2s.t : NULL, &idx.t, &hash.t, NULL),
                  desc);
  CU(drv->cuCtxSynchronize());
  dt_check(&idx, "idx", desc);
  dt_check(&hash, "hash", desc);
  dt_check(&xs, "x_sorted", desc);
  if (c->D2) dt_check(&x2s, "x2_sorted", desc);

  /* unsort(prepare(x)) == x, row for row; the padding of o keeps its poison. */
  dt_expect_begin(&o);
  for (int64_t b = 0; b < B; b++)
    for (int64_t h = 0; h < H; h++)
      for (int64_t t = 0; t < T; t++)
        for (int64_t e = 0; e < c->D; e++) {
          int64_t ix[4] = {b, h, t, e};
          memcpy(dt_expect_at(&o, ix), dt_at(&x, ix), x.es);
        }
  SFA_OK_OR_ABORT(sfa_hash_unsort(ctx, &xs.t, &idx.t, &o.t, NULL), desc);
  if (c->D2) {
    dt_expect_begin(&o2);
    for (int64_t b = 0; b < B; b++)
      for (int64_t h = 0; h < H; h++)
        for (int64_t t = 0; t < T; t++)
          for (int64_t e = 0; e < c->D2; e++) {
            int64_t ix[4] = {b, h, t, e};
            memcpy(dt_expect_at(&o2, ix), dt_at(&x2, ix), x2.es);
          }
    SFA_OK_OR_ABORT(sfa_hash_unsort(ctx, &x2s.t, &idx.t, &o2.t, NULL), desc);
  }
  CU(drv->cuCtxSynchronize());
  dt_check(&o, "o = unsort(x_sorted)", desc);
  if (c->D2) dt_check(&o2, "o2 = unsort(x2_sorted)", desc);

  free(bins);
  free(order);
  free(count);
  dt_free(&bucket), dt_free(&idx), dt_free(&hash), dt_free(&x), dt_free(&xs), dt_free(&o);
  if (c->D2) dt_free(&x2), dt_free(&x2s), dt_free(&o2);
}

/* Unsort with idx that is partial, out of range and longer or shorter than T:
** only rows named by an idx in [0, T) are written. */
static void run_unsort_partial(int B, int H, int Tsrc, int T, int D, sfa_dtype dt, uint64_t seed) {
  char desc[160];
  snprintf(desc, sizeof desc, "unsort B=%d H=%d T'=%d T=%d D=%d %s seed %llu", B, H, Tsrc, T, D,
           dname(dt), (unsigned long long)seed);
  uint64_t rng = seed;
  dtensor os, idx, o;
  int64_t ss[4] = {B, H, Tsrc, D}, si[3] = {B, H, Tsrc}, so[4] = {B, H, T, D};
  dt_init(&os, dt, 4, ss, 1, NULL, 1, 0xFF);
  dt_init(&idx, SFA_DTYPE_INT32, 3, si, 2, NULL, 0, 0xEE);
  dt_init(&o, dt, 4, so, 2, NULL, 0, 0xFF);
  fill_random_bits(&os, &rng);
  dt_expect_begin(&o);
  int *used = calloc((size_t)T, sizeof *used);
  ck_assert_ptr_nonnull(used);
  for (int64_t b = 0; b < B; b++)
    for (int64_t h = 0; h < H; h++) {
      memset(used, 0, (size_t)T * sizeof *used);
      for (int64_t i = 0; i < Tsrc; i++) {
        int64_t ix[3] = {b, h, i};
        int32_t j;
        uint64_t k = tu_rand_u64(&rng) % 8;
        if (k == 0) j = -1;
        else if (k == 1) j = T + (int32_t)(tu_rand_u64(&rng) % 3);
        else if (k == 2) j = INT32_MAX;
        else if (k == 3) j = INT32_MIN;
        else {
          j = (int32_t)(tu_rand_u64(&rng) % (uint64_t)T);
          if (used[j]) j = -5; /* each row of o at most once */
        }
        memcpy(dt_at(&idx, ix), &j, 4);
        if (j < 0 || j >= T) continue;
        used[j] = 1;
        for (int64_t e = 0; e < D; e++) {
          int64_t sx[4] = {b, h, i, e}, dx[4] = {b, h, j, e};
          memcpy(dt_expect_at(&o, dx), dt_at(&os, sx), os.es);
        }
      }
    }
  dt_upload(&os), dt_upload(&idx), dt_upload(&o);
  SFA_OK_OR_ABORT(sfa_hash_unsort(ctx, &os.t, &idx.t, &o.t, NULL), desc);
  CU(drv->cuCtxSynchronize());
  dt_check(&o, "o", desc);
  free(used);
  dt_free(&os), dt_free(&idx), dt_free(&o);
}

START_TEST(hash_bucket_counts_and_lengths) {
  const int nbs[] = {1, 3, 16, 1000, 4096};
  const int Ts[] = {1, 100, 1000, 4097};
  int n = 0;
  for (size_t a = 0; a < sizeof nbs / sizeof nbs[0]; a++)
    for (size_t b = 0; b < sizeof Ts / sizeof Ts[0]; b++, n++) {
      hcase c = {2, 3, Ts[b], nbs[a], 64, 0, n % 2 ? SFA_DTYPE_BF16 : SFA_DTYPE_FP16,
                 SFA_DTYPE_FP16, n % 3, (n + 1) % 3, n % 3, 0, 0, base_seed + (uint64_t)n};
      run_hash_case(&c);
    }
}
END_TEST

START_TEST(hash_gqa_q_and_kv) {
  /* q with 8 heads, k and v with 2 (each call sorts its own heads). */
  for (int i = 0; i < 4; i++) {
    const int D = i % 2 ? 128 : 64, T = i < 2 ? 1000 : 2049, nb = i < 2 ? 16 : 37;
    hcase q = {2, 8, T, nb, D, 0, SFA_DTYPE_BF16, SFA_DTYPE_BF16, 0, 0, 0, 0, 0,
               base_seed + 100 + (uint64_t)i};
    hcase kv = {2, 2, T, nb, D, D, SFA_DTYPE_BF16, SFA_DTYPE_BF16, i % 3, 0, 0, 0, 0,
                base_seed + 200 + (uint64_t)i};
    run_hash_case(&q);
    run_hash_case(&kv);
  }
}
END_TEST

START_TEST(hash_out_of_range_buckets) {
  for (int i = 0; i < 6; i++) {
    hcase c = {2, 2, i < 3 ? 777 : 4097, i % 2 ? 16 : 5, 32, 16, SFA_DTYPE_FP16, SFA_DTYPE_FP32,
               i % 3, (i + 2) % 3, (i + 1) % 3, 0, i == 5 ? 1000 : 30 * (i + 1),
               base_seed + 300 + (uint64_t)i};
    run_hash_case(&c);
  }
}
END_TEST

START_TEST(hash_vector_widths_and_alignment) {
  /* Row bytes and offsets that allow 16, 8, 4, 2 and 1... byte copies. */
  const int Ds[] = {1, 2, 3, 4, 5, 8, 12, 64, 96, 128, 256, 1030};
  const sfa_dtype dts[] = {SFA_DTYPE_FP16, SFA_DTYPE_FP32, SFA_DTYPE_BF16};
  int n = 0;
  for (size_t a = 0; a < sizeof Ds / sizeof Ds[0]; a++)
    for (size_t b = 0; b < 3; b++, n++) {
      hcase c = {1, 2, 300, 7, Ds[a], Ds[(a + 5) % 12], dts[b], dts[(b + 1) % 3], n % 3,
                 (n + 2) % 3, 0, (size_t)(n % 4), 0, base_seed + 400 + (uint64_t)n};
      run_hash_case(&c);
    }
}
END_TEST

START_TEST(hash_unsort_partial_idx) {
  run_unsort_partial(2, 3, 100, 100, 64, SFA_DTYPE_BF16, base_seed + 500);
  run_unsort_partial(1, 2, 300, 120, 8, SFA_DTYPE_FP16, base_seed + 501);
  run_unsort_partial(2, 1, 50, 400, 5, SFA_DTYPE_FP32, base_seed + 502);
  run_unsort_partial(1, 1, 1, 1, 1, SFA_DTYPE_FP16, base_seed + 503);
}
END_TEST

START_TEST(hash_random_shapes_and_stream) {
  uint64_t rng = base_seed + 600;
  CUstream stream;
  CU(drv->cuStreamCreate(&stream, 0));
  for (int i = 0; i < 12; i++) {
    const sfa_dtype dts[] = {SFA_DTYPE_FP16, SFA_DTYPE_BF16, SFA_DTYPE_FP32};
    hcase c = {1 + (int)(tu_rand_u64(&rng) % 3), 1 + (int)(tu_rand_u64(&rng) % 5),
               1 + (int)(tu_rand_u64(&rng) % 3000), 1 + (int)(tu_rand_u64(&rng) % 300),
               8 * (1 + (int)(tu_rand_u64(&rng) % 16)), (int)(tu_rand_u64(&rng) % 2) * 64,
               dts[tu_rand_u64(&rng) % 3], dts[tu_rand_u64(&rng) % 3],
               (int)(tu_rand_u64(&rng) % 3), (int)(tu_rand_u64(&rng) % 3),
               (int)(tu_rand_u64(&rng) % 3), 0, (int)(tu_rand_u64(&rng) % 50),
               base_seed + 700 + (uint64_t)i};
    run_hash_case(&c);
  }
  /* A user stream: the calls are ordered on it. */
  dtensor bucket, idx, hash;
  int64_t s3[3] = {1, 1, 5000};
  dt_init(&bucket, SFA_DTYPE_INT32, 3, s3, 0, NULL, 0, 0);
  dt_init(&idx, SFA_DTYPE_INT32, 3, s3, 0, NULL, 0, 0xEE);
  dt_init(&hash, SFA_DTYPE_INT32, 3, s3, 0, NULL, 0, 0xEE);
  for (int t = 0; t < 5000; t++) {
    int32_t v = 4999 - t;
    memcpy(bucket.host + 4 * (size_t)t, &v, 4);
  }
  dt_upload(&bucket), dt_upload(&idx), dt_upload(&hash);
  SFA_OK_OR_ABORT(sfa_hash_prepare(ctx, &bucket.t, 4096, NULL, NULL, NULL, NULL, &idx.t, &hash.t,
                                   stream),
                  "user stream");
  CU(drv->cuStreamSynchronize(stream));
  dt_download(&idx), dt_download(&hash);
  for (int i = 0; i < 5000; i++) {
    int32_t p, k;
    memcpy(&p, idx.host + 4 * (size_t)i, 4);
    memcpy(&k, hash.host + 4 * (size_t)i, 4);
    /* buckets 0..4095 hold one token each (position 4999 - b); >= 4096 are out of range */
    const int32_t ep = i < 4096 ? 4999 - i : i - 4096, ek = i < 4096 ? i : INT32_MAX;
    ck_assert_msg(p == ep && k == ek, "user stream: [%d] = (%d, %d), expected (%d, %d)", i, p, k,
                  ep, ek);
  }
  dt_free(&bucket), dt_free(&idx), dt_free(&hash);
  CU(drv->cuStreamDestroy(stream));
}
END_TEST

/* ------------------------------------------------------------ top-k mask */

typedef struct tcase {
  int B, H, Tq, Tk, w, causal;
  sfa_dtype dt;
  int dist;      /* 0 normal, 1 small integers, 2 specials, 3 constant, 4 +-0 and NaN, 5 any bits */
  int bcast;     /* 0 none, 1 heads (stride 0), 2 rows (stride 0) */
  int unaligned; /* bias rows not 16-byte aligned */
  int mask_pad;  /* mask rows with 16 extra bytes and a 32-byte offset */
  uint64_t seed;
} tcase;

static void tdesc(const tcase *c, char *buf, size_t n) {
  snprintf(buf, n,
           "topk B=%d H=%d Tq=%d Tk=%d w=%d causal=%d %s dist %d bcast %d unaligned %d pad %d "
           "seed %llu",
           c->B, c->H, c->Tq, c->Tk, c->w, c->causal, dname(c->dt), c->dist, c->bcast,
           c->unaligned, c->mask_pad, (unsigned long long)c->seed);
}

static float bias_value(const dtensor *d, const void *p) {
  if (d->t.dtype == SFA_DTYPE_FP32) {
    float f;
    memcpy(&f, p, 4);
    return f;
  }
  uint16_t h;
  memcpy(&h, p, 2);
  return d->t.dtype == SFA_DTYPE_BF16 ? from_bf16(h) : from_fp16(h);
}

static void set_bias(dtensor *d, void *p, float f, uint64_t bits, int raw) {
  if (d->t.dtype == SFA_DTYPE_FP32) {
    uint32_t u = (uint32_t)bits;
    if (raw) memcpy(p, &u, 4);
    else memcpy(p, &f, 4);
    return;
  }
  uint16_t h = raw ? (uint16_t)bits : d->t.dtype == SFA_DTYPE_BF16 ? to_bf16(f) : to_fp16(f);
  memcpy(p, &h, 2);
}

static void draw_bias(const tcase *c, dtensor *d, void *p, uint64_t *rng) {
  const uint64_t u = tu_rand_u64(rng);
  switch (c->dist) {
    case 0: set_bias(d, p, (float)tu_rand_normal(rng), 0, 0); break;
    case 1: set_bias(d, p, (float)((int)(u % 7) - 3), 0, 0); break;
    case 2: {
      const int k = (int)(u % 100);
      float f = k < 10 ? NAN : k < 12 ? INFINITY : k < 14 ? -INFINITY : k < 17 ? 0.0f
              : k < 20 ? -0.0f : (float)tu_rand_normal(rng);
      set_bias(d, p, f, 0, 0);
      break;
    }
    case 3: set_bias(d, p, 0.5f, 0, 0); break;
    case 4: set_bias(d, p, u % 3 == 0 ? NAN : u % 3 == 1 ? 0.0f : -0.0f, 0, 0); break;
    default: set_bias(d, p, 0, u >> 7, 1); break;
  }
}

typedef struct kv {
  float v;
  int j;
} kv;

static int kv_cmp(const void *a, const void *b) {
  const kv *x = a, *y = b;
  if (x->v > y->v) return -1;
  if (x->v < y->v) return 1;
  return x->j - y->j;
}

/* The expected mask row of query i (of tq) at ix (its last index, `last`,
** set here): columns [0, ncols) 0, then 1 for the w largest non-NaN biases
** among the allowed keys of [0, tk) (causal: j <= i + tk - tq). row: ncols
** entries of scratch. */
static void expect_topk_row(dtensor *bias, dtensor *mask, int64_t *ix, int last, int64_t ncols,
                            int64_t i, int64_t tq, int64_t tk, int causal, int w, kv *row) {
  int64_t n = tk;
  if (causal) {
    n = i + tk - tq + 1;
    n = n < 0 ? 0 : n > tk ? tk : n;
  }
  int m = 0;
  for (int64_t j = 0; j < ncols; j++) {
    ix[last] = j;
    *(uint8_t *)dt_expect_at(mask, ix) = 0;
    float v = bias_value(bias, dt_at(bias, ix));
    if (j < n && !isnan(v)) row[m].v = v, row[m].j = (int)j, m++;
  }
  qsort(row, (size_t)m, sizeof *row, kv_cmp);
  for (int q = 0; q < m && q < w; q++) {
    ix[last] = row[q].j;
    *(uint8_t *)dt_expect_at(mask, ix) = 1;
  }
}

static void run_topk_case(const tcase *c) {
  char desc[256];
  tdesc(c, desc, sizeof desc);
  uint64_t rng = c->seed;
  const int B = c->B, H = c->H, Tq = c->Tq, Tk = c->Tk;
  const int64_t es = (int64_t)dtype_size(c->dt), per16 = 16 / es;
  const int64_t rs = c->unaligned ? Tk + 1 : (Tk + per16 - 1) / per16 * per16;
  int64_t shape[4] = {B, H, Tq, Tk};
  int64_t bst[4] = {(int64_t)H * Tq * rs, (int64_t)Tq * rs, rs, 1};
  if (c->bcast == 1) bst[1] = 0, bst[0] = (int64_t)Tq * rs;
  if (c->bcast == 2) bst[2] = 0, bst[1] = rs, bst[0] = (int64_t)H * rs;
  const int64_t ms = (Tk + 15) / 16 * 16 + (c->mask_pad ? 16 : 0);
  int64_t mst[4] = {(int64_t)H * Tq * ms, (int64_t)Tq * ms, ms, 1};
  dtensor bias, mask;
  dt_init(&bias, c->dt, 4, shape, 0, bst, c->unaligned ? 1 : 0, 0xFF);
  dt_init(&mask, SFA_DTYPE_UINT8, 4, shape, 0, mst, c->mask_pad ? 32 : 0, 0xEE);
  for (size_t i = 0; i < bias.nstore; i++) draw_bias(c, &bias, bias.host + i * bias.es, &rng);
  dt_upload(&bias), dt_upload(&mask);

  dt_expect_begin(&mask);
  kv *row = malloc((size_t)Tk * sizeof *row);
  ck_assert_ptr_nonnull(row);
  for (int64_t b = 0; b < B; b++)
    for (int64_t h = 0; h < H; h++)
      for (int64_t i = 0; i < Tq; i++) {
        int64_t ix[4] = {b, h, i, 0};
        expect_topk_row(&bias, &mask, ix, 3, Tk, i, Tq, Tk, c->causal, c->w, row);
      }
  free(row);
  SFA_OK_OR_ABORT(sfa_topk_mask(ctx, &bias.t, c->w, c->causal, &mask.t, NULL), desc);
  CU(drv->cuCtxSynchronize());
  dt_check(&mask, "mask", desc);
  dt_free(&bias), dt_free(&mask);
}

START_TEST(topk_distributions_and_w) {
  const int ws[] = {0, 1, 7, 64, 5000};
  const sfa_dtype dts[] = {SFA_DTYPE_BF16, SFA_DTYPE_FP16, SFA_DTYPE_FP32};
  int n = 0;
  for (int dist = 0; dist < 6; dist++)
    for (size_t wi = 0; wi < sizeof ws / sizeof ws[0]; wi++, n++) {
      tcase c = {1, 2, 40, 300, ws[wi], n % 2, dts[n % 3], dist, 0, n % 4 == 3, n % 2,
                 base_seed + 1000 + (uint64_t)n};
      run_topk_case(&c);
    }
}
END_TEST

START_TEST(topk_shapes_causal_and_tq_ne_tk) {
  /* (Tq, Tk) pairs: square, Tq < Tk, Tq > Tk (causal rows with nothing), tails
  ** of every length mod 16, and Tk >= 4096 (512 threads). */
  const int shapes[][2] = {{1, 1}, {1, 17}, {17, 1}, {33, 100}, {100, 33}, {64, 64},
                           {5, 4097}, {3, 8192}, {200, 129}, {2, 4111}};
  const int ws[] = {1, 7, 64, 1000};
  int n = 0;
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
    for (int causal = 0; causal < 2; causal++, n++) {
      tcase c = {2, 1, shapes[s][0], shapes[s][1], ws[n % 4], causal,
                 n % 3 == 0 ? SFA_DTYPE_FP32 : n % 3 == 1 ? SFA_DTYPE_BF16 : SFA_DTYPE_FP16,
                 n % 3 == 2 ? 1 : 0, n % 3, n % 5 == 4, (n / 2) % 2, base_seed + 2000 + (uint64_t)n};
      run_topk_case(&c);
    }
}
END_TEST

START_TEST(topk_ties_at_the_threshold) {
  /* Many equal keys around the threshold: the lower indices must win. */
  for (int i = 0; i < 12; i++) {
    tcase c = {1, 3, 20, 1000 + 37 * i, 1 + 41 * i, i % 2,
               i % 3 == 0 ? SFA_DTYPE_BF16 : i % 3 == 1 ? SFA_DTYPE_FP16 : SFA_DTYPE_FP32,
               i % 4 == 0 ? 3 : i % 4 == 1 ? 4 : 1, i % 3, 0, 0, base_seed + 3000 + (uint64_t)i};
    run_topk_case(&c);
  }
}
END_TEST

START_TEST(topk_rows_beyond_shared_memory) {
  /* Longer rows than shared memory holds on sm_80 and sm_90: keys re-read per pass. */
  tcase a = {1, 1, 3, 100003, 4099, 0, SFA_DTYPE_BF16, 0, 0, 0, 1, base_seed + 4000};
  tcase b = {1, 1, 4, 60001, 30000, 1, SFA_DTYPE_FP32, 1, 0, 1, 0, base_seed + 4001};
  tcase c = {1, 2, 2, 120000, 77, 0, SFA_DTYPE_FP16, 2, 1, 0, 0, base_seed + 4002};
  run_topk_case(&a);
  run_topk_case(&b);
  run_topk_case(&c);
}
END_TEST

START_TEST(topk_random_cases) {
  uint64_t rng = base_seed + 5000;
  for (int i = 0; i < 25; i++) {
    const int Tq = 1 + (int)(tu_rand_u64(&rng) % 300), Tk = 1 + (int)(tu_rand_u64(&rng) % 6000);
    const sfa_dtype dts[] = {SFA_DTYPE_FP16, SFA_DTYPE_BF16, SFA_DTYPE_FP32};
    tcase c = {1 + (int)(tu_rand_u64(&rng) % 2), 1 + (int)(tu_rand_u64(&rng) % 3), Tq, Tk,
               (int)(tu_rand_u64(&rng) % (uint64_t)(Tk + 2)), (int)(tu_rand_u64(&rng) % 2),
               dts[tu_rand_u64(&rng) % 3], (int)(tu_rand_u64(&rng) % 6),
               (int)(tu_rand_u64(&rng) % 3), (int)(tu_rand_u64(&rng) % 2),
               (int)(tu_rand_u64(&rng) % 2), base_seed + 6000 + (uint64_t)i};
    run_topk_case(&c);
  }
}
END_TEST

/* ------------------------------------------------------------ packed sequences */

/* cu_seqlens [B + 1] of lengths len on the device (contiguous), returned with
** its host copy in *cu (B + 1 entries, malloc'd). */
static void upload_cu(dtensor *d, const int *len, int B, int32_t **cu) {
  int64_t s1[1] = {B + 1};
  *cu = malloc((size_t)(B + 1) * sizeof **cu);
  ck_assert_ptr_nonnull(*cu);
  (*cu)[0] = 0;
  for (int b = 0; b < B; b++) (*cu)[b + 1] = (*cu)[b] + len[b];
  dt_init(d, SFA_DTYPE_INT32, 1, s1, 0, NULL, 0, 0);
  memcpy(d->host, *cu, (size_t)(B + 1) * 4);
  dt_upload(d);
}

static void lens_desc(const int *len, int B, char *buf, size_t n) {
  size_t at = 0;
  buf[0] = 0;
  for (int b = 0; b < B && at + 16 < n; b++)
    at += (size_t)snprintf(buf + at, n - at, b ? ",%d" : "%d", len[b]);
}

/* sfa_hash_prepare_varlen against a host stable sort of each (sequence,
** head), positions within the sequence; then sfa_hash_unsort_varlen gives x
** back. layout: 0 contiguous, 1 padded strides (x, the sorted copies, idx). */
static void run_hash_varlen_case(const int *len, int B, int H, int nb, int D, int D2,
                                 sfa_dtype dt, int layout, int bad, uint64_t seed) {
  char desc[512], ls[256];
  lens_desc(len, B, ls, sizeof ls);
  snprintf(desc, sizeof desc, "hash varlen lens [%s] H=%d nb=%d D=%d D2=%d %s layout %d bad %d "
           "seed %llu", ls, H, nb, D, D2, dname(dt), layout, bad, (unsigned long long)seed);
  uint64_t rng = seed;
  int32_t *cu;
  dtensor dcu, bucket, idx, hash, x, xs, x2, x2s, o;
  upload_cu(&dcu, len, B, &cu);
  const int T = cu[B];
  int64_t s2[2] = {H, T}, sx[3] = {T, H, D}, sx2[3] = {T, H, D2};
  dt_init(&bucket, SFA_DTYPE_INT32, 2, s2, layout, NULL, 0, 0x77);
  dt_init(&idx, SFA_DTYPE_INT32, 2, s2, layout, NULL, 0, 0xEE);
  dt_init(&hash, SFA_DTYPE_INT32, 2, s2, 0, NULL, 0, 0xDD);
  dt_init(&x, dt, 3, sx, layout, NULL, 0, 0xFF);
  dt_init(&xs, dt, 3, sx, layout ? 0 : 1, NULL, 0, 0xFF);
  dt_init(&o, dt, 3, sx, layout, NULL, 0, 0xFF);
  if (D2) {
    dt_init(&x2, dt, 3, sx2, 0, NULL, 0, 0xFF);
    dt_init(&x2s, dt, 3, sx2, layout, NULL, 0, 0xFF);
  }
  const int32_t wild[] = {-1, INT32_MIN, INT32_MAX, -7};
  int32_t *bins = malloc((size_t)H * T * sizeof *bins);
  int32_t *order = malloc((size_t)H * T * sizeof *order); /* [H, total]: local positions */
  int *count = calloc((size_t)nb + 2, sizeof *count);
  ck_assert(bins && order && count);
  for (int64_t h = 0; h < H; h++)
    for (int64_t t = 0; t < T; t++) {
      int64_t ix[2] = {h, t};
      int32_t v = (int32_t)(tu_rand_u64(&rng) % (uint64_t)nb);
      if (bad && (int)(tu_rand_u64(&rng) % 1000) < bad) {
        uint64_t k = tu_rand_u64(&rng) % 6;
        v = k < 4 ? wild[k] : k == 4 ? nb : nb + 1000;
      }
      memcpy(dt_at(&bucket, ix), &v, 4);
      bins[h * T + t] = (uint32_t)v < (uint32_t)nb ? v : nb;
    }
  fill_random_bits(&x, &rng);
  if (D2) fill_random_bits(&x2, &rng);
  dt_upload(&bucket), dt_upload(&idx), dt_upload(&hash), dt_upload(&x), dt_upload(&xs);
  dt_upload(&o);
  if (D2) dt_upload(&x2), dt_upload(&x2s);

  dt_expect_begin(&idx), dt_expect_begin(&hash), dt_expect_begin(&xs);
  if (D2) dt_expect_begin(&x2s);
  for (int b = 0; b < B; b++)
    for (int64_t h = 0; h < H; h++) {
      const int s = cu[b], n = len[b];
      const int32_t *bn = bins + h * T + s;
      int32_t *ord = order + h * T + s;
      memset(count, 0, ((size_t)nb + 2) * sizeof *count);
      for (int t = 0; t < n; t++) count[bn[t] + 1]++;
      for (int k = 0; k <= nb; k++) count[k + 1] += count[k];
      for (int t = 0; t < n; t++) ord[count[bn[t]]++] = t;
      for (int i = 0; i < n; i++) {
        int64_t ix[2] = {h, s + i};
        int32_t pos = ord[i], bk = bn[pos] == nb ? INT32_MAX : bn[pos];
        memcpy(dt_expect_at(&idx, ix), &pos, 4);
        memcpy(dt_expect_at(&hash, ix), &bk, 4);
        for (int e = 0; e < D; e++) {
          int64_t si[3] = {s + pos, h, e}, di[3] = {s + i, h, e};
          memcpy(dt_expect_at(&xs, di), dt_at(&x, si), x.es);
        }
        for (int e = 0; e < D2; e++) {
          int64_t si[3] = {s + pos, h, e}, di[3] = {s + i, h, e};
          memcpy(dt_expect_at(&x2s, di), dt_at(&x2, si), x2.es);
        }
      }
    }
  SFA_OK_OR_ABORT(sfa_hash_prepare_varlen(ctx, &dcu.t, &bucket.t, nb, &x.t, &xs.t,
                                          D2 ? &x2.t : NULL, D2 ? &x2s.t : NULL, &idx.t, &hash.t,
                                          NULL),
                  desc);
  CU(drv->cuCtxSynchronize());
  dt_check(&idx, "idx", desc);
  dt_check(&hash, "hash", desc);
  dt_check(&xs, "x_sorted", desc);
  if (D2) dt_check(&x2s, "x2_sorted", desc);

  /* unsort(prepare(x)) == x: every row is named once. */
  dt_expect_begin(&o);
  for (int64_t t = 0; t < T; t++)
    for (int64_t h = 0; h < H; h++)
      for (int64_t e = 0; e < D; e++) {
        int64_t ix[3] = {t, h, e};
        memcpy(dt_expect_at(&o, ix), dt_at(&x, ix), x.es);
      }
  SFA_OK_OR_ABORT(sfa_hash_unsort_varlen(ctx, &dcu.t, &xs.t, &idx.t, &o.t, NULL), desc);
  CU(drv->cuCtxSynchronize());
  dt_check(&o, "o = unsort(x_sorted)", desc);

  free(cu), free(bins), free(order), free(count);
  dt_free(&dcu), dt_free(&bucket), dt_free(&idx), dt_free(&hash), dt_free(&x), dt_free(&xs);
  dt_free(&o);
  if (D2) dt_free(&x2), dt_free(&x2s);
}

START_TEST(hash_varlen_lengths_0_and_1_and_uneven) {
  const int l1[] = {0, 1, 5, 0, 1000, 1, 64, 4097, 0};
  const int l2[] = {1};
  const int l3[] = {0, 0, 3, 0};
  const int l4[] = {63, 64, 65, 127, 128, 129, 2, 300};
  run_hash_varlen_case(l1, 9, 3, 16, 64, 32, SFA_DTYPE_BF16, 0, 0, base_seed + 7000);
  run_hash_varlen_case(l1, 9, 2, 1000, 48, 0, SFA_DTYPE_FP16, 1, 50, base_seed + 7001);
  run_hash_varlen_case(l2, 1, 1, 1, 8, 0, SFA_DTYPE_FP32, 0, 0, base_seed + 7002);
  run_hash_varlen_case(l3, 4, 4, 3, 128, 128, SFA_DTYPE_BF16, 1, 300, base_seed + 7003);
  run_hash_varlen_case(l4, 8, 2, 4096, 3, 5, SFA_DTYPE_FP16, 1, 10, base_seed + 7004);
}
END_TEST

START_TEST(hash_varlen_one_long_many_short) {
  /* One 32k sequence among fifteen of 512 (each a CTA per head). */
  int l[16];
  for (int b = 0; b < 16; b++) l[b] = b == 5 ? 32768 : 512;
  run_hash_varlen_case(l, 16, 2, 64, 64, 64, SFA_DTYPE_BF16, 0, 5, base_seed + 7100);
}
END_TEST

/* sfa_topk_mask_varlen against a host sort per row of each sequence: bias
** [H, total_q, Kmax] (kextra columns past the longest key length), mask
** columns [len_k, Kmax) must be 0, the padding past Kmax keeps its poison. */
static void run_topk_varlen_case(const int *lq, const int *lk, int B, int H, int kextra, int w,
                                 int causal, sfa_dtype dt, int dist, int bcast, int unaligned,
                                 int mask_pad, uint64_t seed) {
  char desc[600], a[256], b2[256];
  lens_desc(lq, B, a, sizeof a), lens_desc(lk, B, b2, sizeof b2);
  snprintf(desc, sizeof desc, "topk varlen lq [%s] lk [%s] H=%d Kmax+%d w=%d causal=%d %s dist %d "
           "bcast %d unaligned %d pad %d seed %llu", a, b2, H, kextra, w, causal, dname(dt), dist,
           bcast, unaligned, mask_pad, (unsigned long long)seed);
  uint64_t rng = seed;
  int32_t *cq, *ck;
  dtensor dcq, dck, bias, mask;
  upload_cu(&dcq, lq, B, &cq);
  upload_cu(&dck, lk, B, &ck);
  int K = kextra;
  for (int b = 0; b < B; b++) K = lk[b] + kextra > K ? lk[b] + kextra : K;
  if (K < 1) K = 1;
  const int TQ = cq[B];
  const int64_t es = (int64_t)dtype_size(dt), per16 = 16 / es;
  const int64_t rs = unaligned ? K + 1 : (K + per16 - 1) / per16 * per16;
  int64_t shape[3] = {H, TQ, K}, bst[3] = {(int64_t)TQ * rs, rs, 1};
  if (bcast) bst[0] = 0;
  const int64_t ms = (K + 15) / 16 * 16 + (mask_pad ? 16 : 0);
  int64_t mst[3] = {(int64_t)TQ * ms, ms, 1};
  dt_init(&bias, dt, 3, shape, 0, bst, unaligned ? 1 : 0, 0xFF);
  dt_init(&mask, SFA_DTYPE_UINT8, 3, shape, 0, mst, mask_pad ? 32 : 0, 0xEE);
  tcase dc = {0};
  dc.dist = dist;
  for (size_t i = 0; i < bias.nstore; i++) draw_bias(&dc, &bias, bias.host + i * bias.es, &rng);
  dt_upload(&bias), dt_upload(&mask);

  dt_expect_begin(&mask);
  kv *row = malloc((size_t)K * sizeof *row);
  ck_assert_ptr_nonnull(row);
  for (int64_t h = 0; h < H; h++)
    for (int b = 0; b < B; b++)
      for (int64_t i = 0; i < lq[b]; i++) {
        int64_t ix[3] = {h, cq[b] + i, 0};
        expect_topk_row(&bias, &mask, ix, 2, K, i, lq[b], lk[b], causal, w, row);
      }
  free(row);
  SFA_OK_OR_ABORT(sfa_topk_mask_varlen(ctx, &dcq.t, &dck.t, &bias.t, w, causal, &mask.t, NULL),
                  desc);
  CU(drv->cuCtxSynchronize());
  dt_check(&mask, "mask", desc);
  free(cq), free(ck);
  dt_free(&dcq), dt_free(&dck), dt_free(&bias), dt_free(&mask);
}

START_TEST(topk_varlen_ragged_causal_and_kmax) {
  /* Query and key lengths differ per sequence (0 and 1 included; a
  ** sequence with queries and no keys; lq > lk leaves causal rows empty). */
  const int lq[] = {0, 1, 37, 200, 1, 5, 64, 3};
  const int lk[] = {3, 1, 300, 129, 0, 17, 64, 4111};
  const int ws[] = {0, 1, 7, 64, 5000};
  const sfa_dtype dts[] = {SFA_DTYPE_BF16, SFA_DTYPE_FP16, SFA_DTYPE_FP32};
  int n = 0;
  for (int dist = 0; dist < 6; dist++)
    for (int causal = 0; causal < 2; causal++, n++)
      run_topk_varlen_case(lq, lk, 8, 1 + n % 3, n % 3 == 0 ? 0 : 5 + n, ws[n % 5], causal,
                           dts[n % 3], dist, n % 4 == 1, n % 5 == 2, n % 2,
                           base_seed + 8000 + (uint64_t)n);
  /* One long key row among short ones (row cached or re-read, Kmax 120000). */
  const int lq2[] = {2, 1, 3}, lk2[] = {120000, 1, 9};
  run_topk_varlen_case(lq2, lk2, 3, 1, 0, 4099, 1, SFA_DTYPE_FP32, 0, 0, 0, 0, base_seed + 8100);
}
END_TEST

/* Prefix sums that break their contract (negative, decreasing, past the
** totals) give wrong output but no fault: every call still completes. */
START_TEST(varlen_helpers_survive_wrong_cu_seqlens) {
  const int32_t wrong[] = {-5, 40, 7, 1000000, INT32_MIN, 3};
  const int B = 5, H = 2, T = 50, D = 64, K = 33;
  int64_t s1[1] = {B + 1}, s2[2] = {H, T}, sx[3] = {T, H, D}, sb[3] = {H, T, K};
  int64_t mst[3] = {(int64_t)T * 48, 48, 1};
  dtensor cu, bucket, idx, hash, x, xs, o, bias, mask;
  dt_init(&cu, SFA_DTYPE_INT32, 1, s1, 0, NULL, 0, 0);
  memcpy(cu.host, wrong, sizeof wrong);
  dt_init(&bucket, SFA_DTYPE_INT32, 2, s2, 0, NULL, 0, 0x01);
  dt_init(&idx, SFA_DTYPE_INT32, 2, s2, 0, NULL, 0, 0x11);
  dt_init(&hash, SFA_DTYPE_INT32, 2, s2, 0, NULL, 0, 0);
  dt_init(&x, SFA_DTYPE_BF16, 3, sx, 0, NULL, 0, 0x3F);
  dt_init(&xs, SFA_DTYPE_BF16, 3, sx, 0, NULL, 0, 0);
  dt_init(&o, SFA_DTYPE_BF16, 3, sx, 0, NULL, 0, 0);
  dt_init(&bias, SFA_DTYPE_BF16, 3, sb, 0, NULL, 0, 0x3F);
  dt_init(&mask, SFA_DTYPE_UINT8, 3, sb, 0, mst, 0, 0xEE);
  dt_upload(&cu), dt_upload(&bucket), dt_upload(&idx), dt_upload(&hash), dt_upload(&x);
  dt_upload(&xs), dt_upload(&o), dt_upload(&bias), dt_upload(&mask);
  SFA_OK_OR_ABORT(sfa_hash_prepare_varlen(ctx, &cu.t, &bucket.t, 4, &x.t, &xs.t, NULL, NULL,
                                          &idx.t, &hash.t, NULL),
                  "prepare");
  SFA_OK_OR_ABORT(sfa_hash_unsort_varlen(ctx, &cu.t, &xs.t, &idx.t, &o.t, NULL), "unsort");
  SFA_OK_OR_ABORT(sfa_topk_mask_varlen(ctx, &cu.t, &cu.t, &bias.t, 3, 1, &mask.t, NULL), "topk");
  CU(drv->cuCtxSynchronize());
  /* the mask's padding columns [K, 48) keep their poison (the storage ends
  ** with the last row's column K - 1: that row has no padding) */
  dt_expect_begin(&mask);
  dt_download(&mask);
  for (int64_t h = 0; h < H; h++)
    for (int64_t r = 0; r < T; r++)
      for (int64_t j = K; j < 48; j++) {
        int64_t ix[3] = {h, r, j};
        if (dt_index(&mask, ix) >= mask.nstore) break;
        ck_assert_int_eq(*(uint8_t *)dt_at(&mask, ix), 0xEE);
      }
  dt_free(&cu), dt_free(&bucket), dt_free(&idx), dt_free(&hash), dt_free(&x), dt_free(&xs);
  dt_free(&o), dt_free(&bias), dt_free(&mask);
}
END_TEST

/* A view of sequence b of a packed tensor: [total, H, D] rows [s, s + n) as
** the fixed-length [1, H, n, D]; [H, total] columns [s, s + n) as [1, H, n]. */
static sfa_tensor seq_rows(const sfa_tensor *t, int s, int n) {
  sfa_tensor v = *t;
  v.data = (char *)t->data + (size_t)s * (size_t)t->strides[0] * dtype_size(t->dtype);
  v.rank = 4;
  v.shape[0] = 1, v.shape[1] = t->shape[1], v.shape[2] = n, v.shape[3] = t->shape[2];
  v.strides[0] = 0, v.strides[1] = t->strides[1], v.strides[2] = t->strides[0], v.strides[3] = 1;
  return v;
}
static sfa_tensor seq_cols(const sfa_tensor *t, int s, int n) {
  sfa_tensor v = *t;
  v.data = (char *)t->data + (size_t)s * 4;
  v.rank = 3;
  v.shape[0] = 1, v.shape[1] = t->shape[0], v.shape[2] = n;
  v.strides[0] = 0, v.strides[1] = t->strides[0], v.strides[2] = 1;
  return v;
}

/* Packed hash attention, hash_prepare_varlen -> sfa_forward (packed, mode
** hash) -> hash_unsort_varlen, against the same pipeline of fixed-length
** calls on each sequence alone (views of the packed buffers): the index
** arrays and sorted rows bit for bit, o within the forward's bound. */
START_TEST(hash_attention_varlen_matches_per_sequence) {
  const int len[] = {0, 1, 200, 1, 77, 333, 0, 128};
  const int B = 8, Hq = 4, Hkv = 2, D = 64, nb = 4;
  const sfa_dtype dt = SFA_DTYPE_BF16;
  uint64_t rng = base_seed + 9000;
  int32_t *cu;
  dtensor dcu;
  upload_cu(&dcu, len, B, &cu);
  const int T = cu[B];
  enum { Q, K, V, QS, KS, VS, OS, O, QSf, KSf, VSf, OSf, Of, NROW };
  enum { BQ, BK, QI, QH, KI, KH, QIf, QHf, KIf, KHf, NIDX };
  dtensor r[NROW], ix[NIDX];
  for (int i = 0; i < NROW; i++) {
    const int kv = i == K || i == V || i == KS || i == VS || i == KSf || i == VSf;
    int64_t s3[3] = {T, kv ? Hkv : Hq, D};
    dt_init(&r[i], dt, 3, s3, 0, NULL, 0, 0);
  }
  for (int i = 0; i < NIDX; i++) {
    const int kv = i == BK || i == KI || i == KH || i == KIf || i == KHf;
    int64_t s2[2] = {kv ? Hkv : Hq, T};
    dt_init(&ix[i], SFA_DTYPE_INT32, 2, s2, 0, NULL, 0, 0);
  }
  for (int i = Q; i <= V; i++)
    for (size_t e = 0; e < r[i].nstore; e++) {
      uint16_t h = to_bf16((float)tu_rand_normal(&rng));
      memcpy(r[i].host + 2 * e, &h, 2);
    }
  for (int i = BQ; i <= BK; i++)
    for (size_t e = 0; e < ix[i].nstore; e++) {
      int32_t v = (int32_t)(tu_rand_u64(&rng) % (nb + 1)); /* nb: out of range */
      memcpy(ix[i].host + 4 * e, &v, 4);
    }
  for (int i = 0; i < NROW; i++) dt_upload(&r[i]);
  for (int i = 0; i < NIDX; i++) dt_upload(&ix[i]);

  sfa_attention_params p;
  sfa_params_init(&p);
  p.mode = SFA_MODE_HASH;
  /* packed */
  SFA_OK_OR_ABORT(sfa_hash_prepare_varlen(ctx, &dcu.t, &ix[BQ].t, nb, &r[Q].t, &r[QS].t, NULL,
                                          NULL, &ix[QI].t, &ix[QH].t, NULL),
                  "prepare q");
  SFA_OK_OR_ABORT(sfa_hash_prepare_varlen(ctx, &dcu.t, &ix[BK].t, nb, &r[K].t, &r[KS].t, &r[V].t,
                                          &r[VS].t, &ix[KI].t, &ix[KH].t, NULL),
                  "prepare k, v");
  sfa_extras ex = {0};
  ex.q_idx = &ix[QI].t, ex.q_hash = &ix[QH].t, ex.k_idx = &ix[KI].t, ex.k_hash = &ix[KH].t;
  ex.cu_seqlens_q = &dcu.t, ex.cu_seqlens_k = &dcu.t;
  sfa_status st = sfa_check_indices(ctx, &p, &ex, T, T, NULL);
  ck_assert_msg(st == SFA_OK, "the packed arrays break the hash contract: %s",
                sfa_last_error(ctx));
  SFA_OK_OR_ABORT(sfa_forward(ctx, &p, &r[QS].t, &r[KS].t, &r[VS].t, &ex, &r[OS].t, NULL, NULL),
                  "packed forward");
  SFA_OK_OR_ABORT(sfa_hash_unsort_varlen(ctx, &dcu.t, &r[OS].t, &ix[QI].t, &r[O].t, NULL),
                  "unsort");
  /* per sequence, fixed length */
  for (int b = 0; b < B; b++) {
    const int s = cu[b], n = len[b];
    if (!n) continue;
    sfa_tensor v[NROW], w[NIDX];
    for (int i = 0; i < NROW; i++) v[i] = seq_rows(&r[i].t, s, n);
    for (int i = 0; i < NIDX; i++) w[i] = seq_cols(&ix[i].t, s, n);
    SFA_OK_OR_ABORT(sfa_hash_prepare(ctx, &w[BQ], nb, &v[Q], &v[QSf], NULL, NULL, &w[QIf],
                                     &w[QHf], NULL),
                    "fixed prepare q");
    SFA_OK_OR_ABORT(sfa_hash_prepare(ctx, &w[BK], nb, &v[K], &v[KSf], &v[V], &v[VSf], &w[KIf],
                                     &w[KHf], NULL),
                    "fixed prepare k, v");
    sfa_extras fx = {0};
    fx.q_idx = &w[QIf], fx.q_hash = &w[QHf], fx.k_idx = &w[KIf], fx.k_hash = &w[KHf];
    SFA_OK_OR_ABORT(sfa_forward(ctx, &p, &v[QSf], &v[KSf], &v[VSf], &fx, &v[OSf], NULL, NULL),
                    "fixed forward");
    SFA_OK_OR_ABORT(sfa_hash_unsort(ctx, &v[OSf], &w[QIf], &v[Of], NULL), "fixed unsort");
  }
  CU(drv->cuCtxSynchronize());
  const int same[][2] = {{QI, QIf}, {QH, QHf}, {KI, KIf}, {KH, KHf}};
  for (int i = 0; i < 4; i++) {
    dt_download(&ix[same[i][0]]), dt_download(&ix[same[i][1]]);
    ck_assert_msg(!memcmp(ix[same[i][0]].host, ix[same[i][1]].host, ix[same[i][0]].nstore * 4),
                  "index array %d: packed and per-sequence differ", i);
  }
  const int rows[][2] = {{QS, QSf}, {KS, KSf}, {VS, VSf}};
  for (int i = 0; i < 3; i++) {
    dt_download(&r[rows[i][0]]), dt_download(&r[rows[i][1]]);
    ck_assert_msg(!memcmp(r[rows[i][0]].host, r[rows[i][1]].host, r[rows[i][0]].nstore * 2),
                  "sorted rows %d: packed and per-sequence differ", i);
  }
  dt_download(&r[O]), dt_download(&r[Of]);
  const size_t n = r[O].nstore;
  float *want = malloc(n * sizeof *want);
  ck_assert_ptr_nonnull(want);
  for (size_t e = 0; e < n; e++) {
    uint16_t h;
    memcpy(&h, r[Of].host + 2 * e, 2);
    want[e] = from_bf16(h);
  }
  long nan = 0;
  const double err = tg_rel_err(dt, (const uint16_t *)r[O].host, want, n, &nan);
  ck_assert_msg(nan == 0 && err <= tg_tol_fwd(dt),
                "packed hash attention vs per sequence: rel err %g, %ld NaN", err, nan);
  free(want), free(cu);
  dt_free(&dcu);
  for (int i = 0; i < NROW; i++) dt_free(&r[i]);
  for (int i = 0; i < NIDX; i++) dt_free(&ix[i]);
}
END_TEST

/* ------------------------------------------------------------ timings (no assertion) */

static double time_ms(CUevent e0, CUevent e1) {
  float ms = 0;
  CU(drv->cuEventSynchronize(e1));
  CU(drv->cuEventElapsedTime(&ms, e0, e1));
  return ms;
}

static int cmp_double(const void *a, const void *b) {
  const double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

START_TEST(perf) {
  CUevent e0, e1;
  CU(drv->cuEventCreate(&e0, 0));
  CU(drv->cuEventCreate(&e1, 0));
  double t[5];

  /* top-k: 4 of the 64 (batch, head) row blocks of T = 16384, bf16, w = 2048. */
  const int64_t T = 16384, R = 4;
  int64_t shape[4] = {1, R, T, T};
  CUdeviceptr bias, mask;
  CU(drv->cuMemAlloc(&bias, (size_t)(R * T * T * 2)));
  CU(drv->cuMemAlloc(&mask, (size_t)(R * T * T)));
  CU(drv->cuMemsetD8(bias, 0x3F, (size_t)(R * T * T * 2))); /* constant: worst-case ties */
  sfa_tensor tb, tm;
  sfa_tensor_init(&tb, (void *)(uintptr_t)bias, SFA_DTYPE_BF16, 4, shape);
  sfa_tensor_init(&tm, (void *)(uintptr_t)mask, SFA_DTYPE_UINT8, 4, shape);
  for (int causal = 0; causal < 2; causal++) {
    for (int k = 0; k < 5; k++) {
      CU(drv->cuEventRecord(e0, NULL));
      SFA_OK_OR_ABORT(sfa_topk_mask(ctx, &tb, 2048, causal, &tm, NULL), "perf topk");
      CU(drv->cuEventRecord(e1, NULL));
      t[k] = time_ms(e0, e1);
    }
    qsort(t, 5, sizeof t[0], cmp_double);
    printf("perf: sfa_topk_mask bf16 %lld x %lld x %lld rows, w 2048, causal %d, constant bias: "
           "%.3f ms (x16 = %.1f ms for 64 row blocks)\n",
           (long long)R, (long long)T, (long long)T, causal, t[2], 16 * t[2]);
  }
  /* Normal random bias: 1024 random rows, repeated. */
  {
    const int64_t n = 1024 * T;
    uint16_t *h = malloc((size_t)(n * 2));
    uint64_t rng = 1;
    ck_assert_ptr_nonnull(h);
    for (int64_t i = 0; i < n; i++) h[i] = to_bf16((float)tu_rand_normal(&rng));
    for (int64_t at = 0; at < R * T * T; at += n)
      CU(drv->cuMemcpyHtoD(bias + (CUdeviceptr)(at * 2), h, (size_t)(n * 2)));
    free(h);
  }
  for (int causal = 0; causal < 2; causal++) {
    for (int k = 0; k < 5; k++) {
      CU(drv->cuEventRecord(e0, NULL));
      SFA_OK_OR_ABORT(sfa_topk_mask(ctx, &tb, 2048, causal, &tm, NULL), "perf topk");
      CU(drv->cuEventRecord(e1, NULL));
      t[k] = time_ms(e0, e1);
    }
    qsort(t, 5, sizeof t[0], cmp_double);
    printf("perf: sfa_topk_mask bf16 %lld x %lld x %lld rows, w 2048, causal %d, normal bias: "
           "%.3f ms (x16 = %.1f ms for 64 row blocks)\n",
           (long long)R, (long long)T, (long long)T, causal, t[2], 16 * t[2]);
  }
  CU(drv->cuMemFree(bias));
  CU(drv->cuMemFree(mask));

  /* hash: B = 4, H = 16, T = 16384, D = 128, bf16, 16 buckets: q, k + v, o. */
  const int64_t B = 4, H = 16, D = 128;
  int64_t s3[3] = {B, H, T}, s4[4] = {B, H, T, D};
  const size_t nx = (size_t)(B * H * T * D) * 2, ni = (size_t)(B * H * T) * 4;
  CUdeviceptr p[12];
  for (int i = 0; i < 12; i++) CU(drv->cuMemAlloc(&p[i], i < 7 ? nx : ni));
  for (int i = 0; i < 7; i++) CU(drv->cuMemsetD8(p[i], 0x11, nx));
  int32_t *hb = malloc(ni);
  uint64_t rng = 7;
  ck_assert_ptr_nonnull(hb);
  for (size_t i = 0; i < ni / 4; i++) hb[i] = (int32_t)(tu_rand_u64(&rng) % 16);
  CU(drv->cuMemcpyHtoD(p[7], hb, ni));
  CU(drv->cuMemcpyHtoD(p[8], hb, ni));
  free(hb);
  sfa_tensor q, k, v, qs, ks, vs, o, bq, bk, qi, qh, ki, kh;
  sfa_tensor_init(&q, (void *)(uintptr_t)p[0], SFA_DTYPE_BF16, 4, s4);
  sfa_tensor_init(&k, (void *)(uintptr_t)p[1], SFA_DTYPE_BF16, 4, s4);
  sfa_tensor_init(&v, (void *)(uintptr_t)p[2], SFA_DTYPE_BF16, 4, s4);
  sfa_tensor_init(&qs, (void *)(uintptr_t)p[3], SFA_DTYPE_BF16, 4, s4);
  sfa_tensor_init(&ks, (void *)(uintptr_t)p[4], SFA_DTYPE_BF16, 4, s4);
  sfa_tensor_init(&vs, (void *)(uintptr_t)p[5], SFA_DTYPE_BF16, 4, s4);
  sfa_tensor_init(&o, (void *)(uintptr_t)p[6], SFA_DTYPE_BF16, 4, s4);
  sfa_tensor_init(&bq, (void *)(uintptr_t)p[7], SFA_DTYPE_INT32, 3, s3);
  sfa_tensor_init(&bk, (void *)(uintptr_t)p[8], SFA_DTYPE_INT32, 3, s3);
  sfa_tensor_init(&qi, (void *)(uintptr_t)p[9], SFA_DTYPE_INT32, 3, s3);
  sfa_tensor_init(&qh, (void *)(uintptr_t)p[10], SFA_DTYPE_INT32, 3, s3);
  sfa_tensor_init(&ki, (void *)(uintptr_t)p[11], SFA_DTYPE_INT32, 3, s3);
  CUdeviceptr khp;
  CU(drv->cuMemAlloc(&khp, ni));
  sfa_tensor_init(&kh, (void *)(uintptr_t)khp, SFA_DTYPE_INT32, 3, s3);
  const char *what[4] = {"prepare q", "prepare k+v", "unsort o", "all three"};
  double tt[4][5];
  for (int r = 0; r < 5; r++) {
    CUevent ev[5];
    for (int i = 0; i < 5; i++) CU(drv->cuEventCreate(&ev[i], 0));
    CU(drv->cuEventRecord(ev[0], NULL));
    SFA_OK_OR_ABORT(sfa_hash_prepare(ctx, &bq, 16, &q, &qs, NULL, NULL, &qi, &qh, NULL), "q");
    CU(drv->cuEventRecord(ev[1], NULL));
    SFA_OK_OR_ABORT(sfa_hash_prepare(ctx, &bk, 16, &k, &ks, &v, &vs, &ki, &kh, NULL), "k");
    CU(drv->cuEventRecord(ev[2], NULL));
    SFA_OK_OR_ABORT(sfa_hash_unsort(ctx, &qs, &qi, &o, NULL), "o");
    CU(drv->cuEventRecord(ev[3], NULL));
    for (int i = 0; i < 3; i++) tt[i][r] = time_ms(ev[i], ev[i + 1]);
    tt[3][r] = time_ms(ev[0], ev[3]);
    for (int i = 0; i < 5; i++) drv->cuEventDestroy(ev[i]);
  }
  for (int i = 0; i < 4; i++) {
    qsort(tt[i], 5, sizeof tt[i][0], cmp_double);
    printf("perf: hash helpers B=4 H=16 T=16384 D=128 bf16, 16 buckets: %s %.3f ms\n", what[i],
           tt[i][2]);
  }
  for (int i = 0; i < 12; i++) drv->cuMemFree(p[i]);
  drv->cuMemFree(khp);

  /* packed: one 32k sequence and fifteen of 512 (H = 16, D = 128, bf16, 16
  ** buckets), prepare of q, against the fixed-length call on a batch of the
  ** same total as one sequence: the sort's one CTA per (sequence, head). */
  {
    int lens[16];
    for (int b = 0; b < 16; b++) lens[b] = b == 0 ? 32768 : 512;
    dtensor cu;
    int32_t *hcu;
    upload_cu(&cu, lens, 16, &hcu);
    const int64_t tot = hcu[16];
    int64_t sb[2] = {H, tot}, sx[3] = {tot, H, D};
    CUdeviceptr q[5];
    const size_t bx = (size_t)(tot * H * D) * 2, bi = (size_t)(tot * H) * 4;
    for (int i = 0; i < 5; i++) CU(drv->cuMemAlloc(&q[i], i < 2 ? bx : bi));
    CU(drv->cuMemsetD8(q[0], 0x11, bx));
    int32_t *hb2 = malloc(bi);
    ck_assert_ptr_nonnull(hb2);
    for (size_t i = 0; i < bi / 4; i++) hb2[i] = (int32_t)(tu_rand_u64(&rng) % 16);
    CU(drv->cuMemcpyHtoD(q[2], hb2, bi));
    free(hb2);
    sfa_tensor px, pxs, pb, pi, ph, fx, fxs, fb, fi, fh;
    sfa_tensor_init(&px, (void *)(uintptr_t)q[0], SFA_DTYPE_BF16, 3, sx);
    sfa_tensor_init(&pxs, (void *)(uintptr_t)q[1], SFA_DTYPE_BF16, 3, sx);
    sfa_tensor_init(&pb, (void *)(uintptr_t)q[2], SFA_DTYPE_INT32, 2, sb);
    sfa_tensor_init(&pi, (void *)(uintptr_t)q[3], SFA_DTYPE_INT32, 2, sb);
    sfa_tensor_init(&ph, (void *)(uintptr_t)q[4], SFA_DTYPE_INT32, 2, sb);
    fx = seq_rows(&px, 0, (int)tot), fxs = seq_rows(&pxs, 0, (int)tot);
    fb = seq_cols(&pb, 0, (int)tot), fi = seq_cols(&pi, 0, (int)tot), fh = seq_cols(&ph, 0, (int)tot);
    double tv[2][5];
    for (int r = 0; r < 5; r++) {
      CU(drv->cuEventRecord(e0, NULL));
      SFA_OK_OR_ABORT(sfa_hash_prepare_varlen(ctx, &cu.t, &pb, 16, &px, &pxs, NULL, NULL, &pi, &ph,
                                              NULL),
                      "packed");
      CU(drv->cuEventRecord(e1, NULL));
      tv[0][r] = time_ms(e0, e1);
      CU(drv->cuEventRecord(e0, NULL));
      SFA_OK_OR_ABORT(sfa_hash_prepare(ctx, &fb, 16, &fx, &fxs, NULL, NULL, &fi, &fh, NULL),
                      "fixed");
      CU(drv->cuEventRecord(e1, NULL));
      tv[1][r] = time_ms(e0, e1);
    }
    qsort(tv[0], 5, sizeof tv[0][0], cmp_double);
    qsort(tv[1], 5, sizeof tv[1][0], cmp_double);
    printf("perf: hash_prepare_varlen 32768 + 15 x 512, H=16 D=128 bf16, 16 buckets: %.3f ms; "
           "fixed length, one sequence of %lld: %.3f ms\n",
           tv[0][2], (long long)tot, tv[1][2]);
    for (int i = 0; i < 5; i++) drv->cuMemFree(q[i]);
    dt_free(&cu);
    free(hcu);
  }
  drv->cuEventDestroy(e0);
  drv->cuEventDestroy(e1);
}
END_TEST

/* ------------------------------------------------------------ main */

int main(void) {
  int rc = tg_open("gpu_helpers", 0x5FA0777);
  if (rc != 0) return rc;
  /* this file's names for the shared device, context and seed */
  drv = tg_drv, device = tg_device, cuctx = tg_cuctx;
  ctx = tg_ctx, base_seed = tg_seed;
  Suite *s = suite_create("gpu_helpers");
  TCase *t = tu_untimed_case(s, "helpers", hash_bucket_counts_and_lengths);
  tcase_add_test(t, hash_gqa_q_and_kv);
  tcase_add_test(t, hash_out_of_range_buckets);
  tcase_add_test(t, hash_vector_widths_and_alignment);
  tcase_add_test(t, hash_unsort_partial_idx);
  tcase_add_test(t, hash_random_shapes_and_stream);
  tcase_add_test(t, topk_distributions_and_w);
  tcase_add_test(t, topk_shapes_causal_and_tq_ne_tk);
  tcase_add_test(t, topk_ties_at_the_threshold);
  tcase_add_test(t, topk_rows_beyond_shared_memory);
  tcase_add_test(t, topk_random_cases);
  TCase *v = tu_untimed_case(s, "varlen", hash_varlen_lengths_0_and_1_and_uneven);
  tcase_add_test(v, hash_varlen_one_long_many_short);
  tcase_add_test(v, topk_varlen_ragged_causal_and_kmax);
  tcase_add_test(v, varlen_helpers_survive_wrong_cu_seqlens);
  tcase_add_test(v, hash_attention_varlen_matches_per_sequence);
  tu_untimed_case(s, "perf", perf);
  rc = tu_run_suite(s);
  tg_close();
  return rc;
}
