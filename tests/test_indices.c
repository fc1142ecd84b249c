/*
** test_indices.c -- the index contract of modes qk_drop and hash without a
** GPU: the host checker sfa__check_index_arrays (runtime/indices.h) accepts
** valid layouts (gaps, padding suffixes, all-padding rows, random sorted
** layouts) and rejects each kind of violation with a message that names the
** array, the [b, h, t] position and the values; and sfa_check_indices rejects
** bad arguments before it loads the driver (and without a driver says so).
*/
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/indices.h"
#include "sfa.h"
#include "testutil.h"

#define PAD_K INT32_MAX

static char err[1024];

/* sfa__check_index_arrays on B = 1, Hq = Hkv = 1 rows. */
static sfa_status check1(sfa_mode m, int Tq, int Tk, const int32_t *qi, const int32_t *ki,
                         const int32_t *qh, const int32_t *kh) {
  err[0] = '\0';
  return sfa__check_index_arrays(m, 1, 1, 1, Tq, Tk, qi, ki, qh, kh, err, sizeof err);
}

#define OK(call) ck_assert_msg((call) == SFA_OK, "%s: %s", #call, err)
#define BAD(call, needle)                                                                 \
  do {                                                                                    \
    sfa_status st_ = (call);                                                              \
    ck_assert_msg(st_ == SFA_ERR_INVALID_ARGUMENT, "%s: status %d (%s)", #call, st_, err); \
    ck_assert_msg(strstr(err, needle), "'%s' not in '%s'", needle, err);                   \
  } while (0)

/* ------------------------------------------------------------ random valid layouts */

/* qk_drop: keep each of T positions with probability `keep`, compacted, then
** padded to n entries. Returns the number kept (<= n). */
static int compact_row(int32_t *idx, int n, int T, double keep, int32_t pad, uint64_t *rng) {
  int m = 0;
  for (int t = 0; t < T && m < n; t++)
    if (tu_rand_uniform(rng) < keep) idx[m++] = t;
  for (int i = m; i < n; i++) idx[i] = pad;
  return m;
}

/* hash: T tokens with random buckets in [0, nb), sorted by (bucket, position),
** the first `real` of n entries real and the rest padding. */
static void hash_row(int32_t *idx, int32_t *hs, int n, int real, int nb, int32_t pad,
                     uint64_t *rng) {
  int count[64] = {0};
  int32_t *bucket = malloc((size_t)real * sizeof *bucket);
  for (int t = 0; t < real; t++) count[bucket[t] = (int32_t)(tu_rand_u64(rng) % (uint64_t)nb)]++;
  int start[65] = {0};
  for (int b = 0; b < nb; b++) start[b + 1] = start[b] + count[b];
  for (int t = 0; t < real; t++) {
    int at = start[bucket[t]]++;
    idx[at] = t;
    hs[at] = bucket[t];
  }
  for (int i = real; i < n; i++) idx[i] = pad, hs[i] = INT32_MAX;
  free(bucket);
}

/* ------------------------------------------------------------ valid */

START_TEST(qk_drop_valid) {
  const int32_t qi[6] = {0, 3, 4, 9, 100, 101}, ki[5] = {0, 1, 2, 50, 1000};
  OK(check1(SFA_MODE_QK_DROP, 6, 5, qi, ki, NULL, NULL));
  const int32_t qp[5] = {2, 7, -1, -1, -1}, kp[4] = {5, PAD_K, PAD_K, PAD_K};
  OK(check1(SFA_MODE_QK_DROP, 5, 4, qp, kp, NULL, NULL));
  /* All padding, single entries, positions near INT32_MAX. */
  const int32_t qa[3] = {-1, -1, -1}, ka[2] = {PAD_K, PAD_K};
  OK(check1(SFA_MODE_QK_DROP, 3, 2, qa, ka, NULL, NULL));
  const int32_t q1[1] = {0}, k1[1] = {INT32_MAX - 1};
  OK(check1(SFA_MODE_QK_DROP, 1, 1, q1, k1, NULL, NULL));
  /* Random layouts on several (b, h): B = 3, Hq = 4, Hkv = 2. */
  enum { B = 3, Hq = 4, Hkv = 2, Tq = 50, Tk = 70 };
  int32_t q[B * Hq * Tq], k[B * Hkv * Tk];
  uint64_t rng = 5;
  for (int r = 0; r < B * Hq; r++) compact_row(q + r * Tq, Tq, 120, 0.3, -1, &rng);
  for (int r = 0; r < B * Hkv; r++) compact_row(k + r * Tk, Tk, 120, 0.5, PAD_K, &rng);
  ck_assert_int_eq(sfa__check_index_arrays(SFA_MODE_QK_DROP, B, Hq, Hkv, Tq, Tk, q, k, NULL,
                                           NULL, err, sizeof err),
                   SFA_OK);
}
END_TEST

START_TEST(hash_valid) {
  /* Buckets 0, 0, 2, 2, 5 then padding; a position may recur in other buckets. */
  const int32_t qh[6] = {0, 0, 2, 2, 5, INT32_MAX}, qi[6] = {1, 4, 0, 3, 2, -1};
  const int32_t kh[5] = {0, 2, 2, 2, INT32_MAX}, ki[5] = {3, 0, 1, 3, PAD_K};
  OK(check1(SFA_MODE_HASH, 6, 5, qi, ki, qh, kh));
  /* A real bucket INT32_MAX is still a bucket. */
  const int32_t qh2[2] = {7, INT32_MAX}, qi2[2] = {0, 5};
  OK(check1(SFA_MODE_HASH, 2, 5, qi2, ki, qh2, kh));
  /* All padding. */
  const int32_t qh3[2] = {INT32_MAX, INT32_MAX}, qi3[2] = {-1, -1};
  const int32_t kh3[1] = {INT32_MAX}, ki3[1] = {PAD_K};
  OK(check1(SFA_MODE_HASH, 2, 1, qi3, ki3, qh3, kh3));
  /* Random sorted layouts with 1, 4, 16 and 64 buckets. */
  enum { B = 2, Hq = 4, Hkv = 1, T = 90 };
  static int32_t q[B * Hq * T], k[B * Hkv * T], qhs[B * Hq * T], khs[B * Hkv * T];
  const int nbs[4] = {1, 4, 16, 64};
  uint64_t rng = 6;
  for (int c = 0; c < 4; c++) {
    for (int r = 0; r < B * Hq; r++)
      hash_row(q + r * T, qhs + r * T, T, T - (int)(tu_rand_u64(&rng) % 10), nbs[c], -1, &rng);
    for (int r = 0; r < B * Hkv; r++)
      hash_row(k + r * T, khs + r * T, T, T - r * 7, nbs[c], PAD_K, &rng);
    ck_assert_msg(sfa__check_index_arrays(SFA_MODE_HASH, B, Hq, Hkv, T, T, q, k, qhs, khs, err,
                                          sizeof err) == SFA_OK,
                  "%d buckets: %s", nbs[c], err);
  }
}
END_TEST

/* ------------------------------------------------------------ violations */

START_TEST(qk_drop_not_increasing) {
  /* The brief's example: k head 3 of 4, t = 17. */
  enum { Hkv = 4, Tk = 20 };
  int32_t q[4 * 2], k[Hkv * Tk];
  for (int i = 0; i < 8; i++) q[i] = i % 2 ? 100 : 5;
  for (int h = 0; h < Hkv; h++)
    for (int t = 0; t < Tk; t++) k[h * Tk + t] = 2 * t;
  k[3 * Tk + 16] = 41, k[3 * Tk + 17] = 40;
  BAD(sfa__check_index_arrays(SFA_MODE_QK_DROP, 1, 4, Hkv, 2, Tk, q, k, NULL, NULL, err,
                              sizeof err),
      "extras->k_idx[0, 3, 17] = 40 is not greater than k_idx[0, 3, 16] = 41 "
      "(indices must strictly increase)");
  /* Equal neighbours, in q, batch 1. */
  int32_t q2[2 * 1 * 4] = {0, 1, 2, 3, 0, 5, 5, 6}, k2[2 * 1 * 2] = {0, 1, 0, 1};
  BAD(sfa__check_index_arrays(SFA_MODE_QK_DROP, 2, 1, 1, 4, 2, q2, k2, NULL, NULL, err,
                              sizeof err),
      "extras->q_idx[1, 0, 2] = 5 is not greater than q_idx[1, 0, 1] = 5");
}
END_TEST

START_TEST(qk_drop_negative) {
  const int32_t ki[2] = {0, 1};
  const int32_t qn[3] = {0, -2, -1};
  BAD(check1(SFA_MODE_QK_DROP, 3, 2, qn, ki, NULL, NULL),
      "extras->q_idx[0, 0, 1] = -2 is negative; positions are >= 0 and padding is -1");
  /* k is padded with INT32_MAX, not -1. */
  const int32_t qi[1] = {4}, kn[3] = {0, -1, -1};
  BAD(check1(SFA_MODE_QK_DROP, 1, 3, qi, kn, NULL, NULL),
      "extras->k_idx[0, 0, 1] = -1 is negative; positions are >= 0 and padding is INT32_MAX");
  const int32_t kmin[1] = {INT32_MIN};
  BAD(check1(SFA_MODE_QK_DROP, 1, 1, qi, kmin, NULL, NULL),
      "extras->k_idx[0, 0, 0] = -2147483648");
}
END_TEST

START_TEST(qk_drop_padding_not_suffix) {
  const int32_t ki[2] = {0, 1};
  const int32_t qp[3] = {-1, 3, 4};
  BAD(check1(SFA_MODE_QK_DROP, 3, 2, qp, ki, NULL, NULL),
      "extras->q_idx[0, 0, 1] = 3 follows padding at q_idx[0, 0, 0] = -1 (padding must be a "
      "suffix)");
  const int32_t qi[1] = {9}, kp[4] = {0, PAD_K, PAD_K, 5};
  BAD(check1(SFA_MODE_QK_DROP, 1, 4, qi, kp, NULL, NULL),
      "extras->k_idx[0, 0, 3] = 5 follows padding at k_idx[0, 0, 1] = INT32_MAX");
  /* q padding in k and k padding in q are not padding. */
  const int32_t qm[2] = {3, INT32_MAX}, qm2[3] = {3, INT32_MAX, 4};
  OK(check1(SFA_MODE_QK_DROP, 2, 2, qm, ki, NULL, NULL)); /* a real position INT32_MAX */
  BAD(check1(SFA_MODE_QK_DROP, 3, 2, qm2, ki, NULL, NULL),
      "extras->q_idx[0, 0, 2] = 4 is not greater than q_idx[0, 0, 1] = 2147483647");
}
END_TEST

START_TEST(hash_unsorted) {
  const int32_t kh[2] = {0, 1}, ki[2] = {0, 0};
  /* Bucket decreases. */
  const int32_t qh[3] = {1, 2, 1}, qi[3] = {0, 1, 2};
  BAD(check1(SFA_MODE_HASH, 3, 2, qi, ki, qh, kh),
      "extras->q_hash[0, 0, 2] = 1 is less than q_hash[0, 0, 1] = 2 (rows must be sorted by "
      "bucket, then position)");
  /* Position not increasing inside a bucket (k side, head 1 of 2). */
  const int32_t qh1[1] = {0}, qi1[1] = {0};
  const int32_t kh2[2 * 3] = {0, 1, 1, 4, 4, 4}, ki2[2 * 3] = {5, 0, 1, 2, 9, 9};
  BAD(sfa__check_index_arrays(SFA_MODE_HASH, 1, 2, 2, 1, 3,
                              (const int32_t[]){0, 0}, ki2, (const int32_t[]){0, 0}, kh2, err,
                              sizeof err),
      "extras->k_idx[0, 1, 2] = 9 is not greater than k_idx[0, 1, 1] = 9 in bucket 4");
  /* A new bucket may restart positions. */
  const int32_t kh3[3] = {0, 1, 1}, ki3[3] = {7, 0, 1};
  OK(check1(SFA_MODE_HASH, 1, 3, qi1, ki3, qh1, kh3));
}
END_TEST

START_TEST(hash_negative) {
  const int32_t kh[1] = {0}, ki[1] = {0};
  const int32_t qh[2] = {-3, 0}, qi[2] = {0, 1};
  BAD(check1(SFA_MODE_HASH, 2, 1, qi, ki, qh, kh),
      "extras->q_hash[0, 0, 0] = -3 is negative; buckets are >= 0");
  const int32_t qh2[2] = {0, 0}, qi2[2] = {0, -7};
  BAD(check1(SFA_MODE_HASH, 2, 1, qi2, ki, qh2, kh),
      "extras->q_idx[0, 0, 1] = -7 is negative");
  const int32_t kh3[2] = {0, 0}, ki3[2] = {0, -1};
  BAD(check1(SFA_MODE_HASH, 1, 2, qi, ki3, qh + 1, kh3),
      "extras->k_idx[0, 0, 1] = -1 is negative; positions are >= 0 and padding is INT32_MAX");
}
END_TEST

START_TEST(hash_padding) {
  const int32_t kh[1] = {0}, ki[1] = {0};
  /* q padding needs q_hash = INT32_MAX. */
  const int32_t qh[2] = {0, 3}, qi[2] = {0, -1};
  BAD(check1(SFA_MODE_HASH, 2, 1, qi, ki, qh, kh),
      "extras->q_hash[0, 0, 1] = 3 at padding (q_idx = -1 there); padding needs q_hash = "
      "INT32_MAX");
  /* k padding needs k_hash = INT32_MAX. */
  const int32_t kh2[2] = {0, 0}, ki2[2] = {0, PAD_K}, qh1[1] = {0}, qi1[1] = {0};
  BAD(check1(SFA_MODE_HASH, 1, 2, qi1, ki2, qh1, kh2),
      "extras->k_hash[0, 0, 1] = 0 at padding (k_idx = INT32_MAX there); padding needs k_hash "
      "= INT32_MAX");
  /* Padding must be a suffix. */
  const int32_t qh3[3] = {INT32_MAX, 0, 0}, qi3[3] = {-1, 0, 1};
  BAD(check1(SFA_MODE_HASH, 3, 1, qi3, ki, qh3, kh),
      "extras->q_idx[0, 0, 1] = 0 follows padding at q_idx[0, 0, 0] = -1");
  const int32_t kh4[3] = {0, INT32_MAX, INT32_MAX}, ki4[3] = {0, PAD_K, 3};
  BAD(check1(SFA_MODE_HASH, 1, 3, qi1, ki4, qh1, kh4),
      "extras->k_idx[0, 0, 2] = 3 follows padding at k_idx[0, 0, 1] = INT32_MAX");
}
END_TEST

START_TEST(checker_arguments) {
  const int32_t x[1] = {0};
  BAD(check1(SFA_MODE_DENSE, 1, 1, x, x, NULL, NULL), "params.mode");
  BAD(check1(SFA_MODE_QK_DROP, 1, 1, NULL, x, NULL, NULL), "extras->q_idx: is NULL");
  BAD(check1(SFA_MODE_HASH, 1, 1, x, x, x, NULL), "extras->k_hash: is NULL; mode hash");
  BAD(check1(SFA_MODE_QK_DROP, 0, 1, x, x, NULL, NULL), "must be >= 1");
  /* The first violation in order (b, then q heads, then k heads) is reported. */
  const int32_t q[4] = {1, 0, 1, 0}, k[2] = {1, 0};
  BAD(sfa__check_index_arrays(SFA_MODE_QK_DROP, 2, 1, 1, 2, 1, q, k, NULL, NULL, err,
                              sizeof err),
      "extras->q_idx[0, 0, 1]");
}
END_TEST

/* ------------------------------------------------------------ sfa_check_indices */

typedef struct iproblem {
  sfa_context *ctx;
  sfa_attention_params p;
  sfa_tensor qi, ki, qh, kh, bias;
  sfa_extras ex;
} iproblem;

static iproblem I;

/* q_idx/q_hash [2, 4, 64], k_idx/k_hash [2, 2, 48] with fake device pointers. */
static void ireset(sfa_mode mode) {
  int64_t qs[3] = {2, 4, 64}, ks[3] = {2, 2, 48}, bs[4] = {2, 4, 64, 48};
  sfa_params_init(&I.p);
  I.p.mode = mode;
  sfa_tensor_init(&I.qi, (void *)0x7f0000100000, SFA_DTYPE_INT32, 3, qs);
  sfa_tensor_init(&I.ki, (void *)0x7f0000200000, SFA_DTYPE_INT32, 3, ks);
  sfa_tensor_init(&I.qh, (void *)0x7f0000300000, SFA_DTYPE_INT32, 3, qs);
  sfa_tensor_init(&I.kh, (void *)0x7f0000400000, SFA_DTYPE_INT32, 3, ks);
  sfa_tensor_init(&I.bias, (void *)0x7f0000500000, SFA_DTYPE_FP16, 4, bs);
  memset(&I.ex, 0, sizeof I.ex);
  I.ex.q_idx = &I.qi, I.ex.k_idx = &I.ki;
  if (mode == SFA_MODE_HASH) I.ex.q_hash = &I.qh, I.ex.k_hash = &I.kh;
}

static void isetup(void) {
  memset(&I, 0, sizeof I);
  ck_assert_int_eq(sfa_context_create(&I.ctx, NULL), SFA_OK);
  ireset(SFA_MODE_QK_DROP);
}

static void iteardown(void) {
  sfa_context_destroy(I.ctx);
  I.ctx = NULL;
}

#define ICHECK(want, tq, tk, ex, n1) icheck((want), (tq), (tk), (ex), (n1), __LINE__)
static void icheck(sfa_status want, int64_t Tq, int64_t Tk, const sfa_extras *ex,
                   const char *needle, int line) {
  sfa_status st = sfa_check_indices(I.ctx, &I.p, ex, Tq, Tk, NULL);
  const char *msg = sfa_last_error(I.ctx);
  ck_assert_msg(st == want, "line %d: status %s, want %s (%s)", line, sfa_status_string(st),
                sfa_status_string(want), msg);
  if (needle) ck_assert_msg(strstr(msg, needle), "line %d: '%s' not in '%s'", line, needle, msg);
  ck_assert_msg(!tu_driver_loaded(), "line %d: the driver was loaded before validation failed",
                line);
}

START_TEST(check_indices_arguments) {
  const sfa_status bad = SFA_ERR_INVALID_ARGUMENT;
  ck_assert_int_eq(sfa_check_indices(NULL, &I.p, &I.ex, 64, 48, NULL), bad);
  ck_assert_int_eq(sfa_check_indices(I.ctx, NULL, &I.ex, 64, 48, NULL), bad);
  ck_assert_ptr_nonnull(strstr(sfa_last_error(I.ctx), "params: is NULL"));
  I.p.mode = SFA_MODE_DENSE;
  ICHECK(bad, 64, 48, &I.ex, "params.mode: dense has no index arrays");
  I.p.mode = SFA_MODE_WINDOW;
  ICHECK(bad, 64, 48, &I.ex, "params.mode: window");
  ireset(SFA_MODE_QK_DROP);
  ICHECK(bad, 64, 48, NULL, "extras: is NULL");
  ICHECK(bad, 0, 48, &I.ex, "Tq: 0");
  ICHECK(bad, 63, 48, &I.ex, "extras->q_idx: shape [2, 4, 64] does not match [B, Hq, Tq] = "
                             "[2, 4, 63]");
  ICHECK(bad, 64, 50, &I.ex, "extras->k_idx: shape [2, 2, 48]");
  I.ex.k_idx = NULL;
  ICHECK(bad, 64, 48, &I.ex, "extras->k_idx: is NULL; mode qk_drop needs it");
  ireset(SFA_MODE_QK_DROP);
  I.qi.dtype = SFA_DTYPE_FP16;
  ICHECK(bad, 64, 48, &I.ex, "extras->q_idx: dtype fp16, expected int32");
  ireset(SFA_MODE_QK_DROP);
  I.ki.shape[1] = 3, I.ki.strides[0] = 3 * 48;
  ICHECK(bad, 64, 48, &I.ex, "extras->k_idx: its 3 heads (shape[1]) do not divide the 4");
  ireset(SFA_MODE_QK_DROP);
  I.ki.shape[0] = 1;
  ICHECK(bad, 64, 48, &I.ex, "extras->k_idx: shape [1, 2, 48]");
  ireset(SFA_MODE_QK_DROP);
  I.ex.bias = &I.bias;
  ICHECK(bad, 64, 48, &I.ex, "extras->bias: only window mode reads a bias");
  ireset(SFA_MODE_QK_DROP);
  I.ex.q_hash = &I.qh;
  ICHECK(bad, 64, 48, &I.ex, "extras->q_hash: only hash mode");
  ireset(SFA_MODE_HASH);
  I.ex.k_hash = NULL;
  ICHECK(bad, 64, 48, &I.ex, "extras->k_hash: is NULL; mode hash needs it");
  ireset(SFA_MODE_HASH);
  I.qh.strides[0] = 1024;
  ICHECK(bad, 64, 48, &I.ex, "extras->q_hash: stride[0] (batch) is 1024");
  ireset(SFA_MODE_HASH);
  I.p.window_left = 4;
  ICHECK(bad, 64, 48, &I.ex, "params.window_left/window_right");
}
END_TEST

/* Sizes are checked before anything is allocated: Tq and Tk within the
** forward's int32 limit, the host copy's size without overflow and within the
** machine's memory (ASan aborts on a request for terabytes). */
START_TEST(check_indices_refuses_absurd_sizes_before_allocating) {
  const sfa_status bad = SFA_ERR_INVALID_ARGUMENT;
  const int64_t T40 = (int64_t)1 << 40;
  int64_t qs[3] = {2, 4, T40}, ks[3] = {2, 2, T40};
  sfa_tensor_init(&I.qi, I.qi.data, SFA_DTYPE_INT32, 3, qs);
  ICHECK(bad, T40, 48, &I.ex, "Tq: 1099511627776 exceeds the kernel's int32 index");
  ireset(SFA_MODE_HASH);
  sfa_tensor_init(&I.ki, I.ki.data, SFA_DTYPE_INT32, 3, ks);
  sfa_tensor_init(&I.kh, I.kh.data, SFA_DTYPE_INT32, 3, ks);
  ICHECK(bad, 64, T40, &I.ex, "Tk: 1099511627776 exceeds the kernel's int32 index");
  /* Broadcast (stride 0) arrays of 65535 x 65535 x (2^31 - 1) entries: the
  ** bytes to copy overflow 64 bits. */
  ireset(SFA_MODE_QK_DROP);
  int64_t bq[3] = {65535, 65535, INT32_MAX}, bk[3] = {65535, 65535, 48};
  sfa_tensor_init(&I.qi, I.qi.data, SFA_DTYPE_INT32, 3, bq);
  sfa_tensor_init(&I.ki, I.ki.data, SFA_DTYPE_INT32, 3, bk);
  I.qi.strides[0] = I.qi.strides[1] = I.ki.strides[0] = I.ki.strides[1] = 0;
  ICHECK(bad, INT32_MAX, 48, &I.ex, "extras->q_idx");
  /* 2^44 entries (64 TiB): representable, but no host has that memory. */
  ireset(SFA_MODE_HASH);
  int64_t mq[3] = {4096, 4096, (int64_t)1 << 20}, mk[3] = {4096, 4096, 48};
  sfa_tensor *qside[2] = {&I.qi, &I.qh}, *kside[2] = {&I.ki, &I.kh};
  for (int i = 0; i < 2; i++) {
    sfa_tensor_init(qside[i], qside[i]->data, SFA_DTYPE_INT32, 3, mq);
    sfa_tensor_init(kside[i], kside[i]->data, SFA_DTYPE_INT32, 3, mk);
    qside[i]->strides[0] = qside[i]->strides[1] = kside[i]->strides[0] = kside[i]->strides[1] = 0;
  }
  ICHECK(SFA_ERR_OUT_OF_MEMORY, (int64_t)1 << 20, 48, &I.ex, "extras->q_idx");
  ck_assert_msg(strstr(sfa_last_error(I.ctx), "host memory"), "%s", sfa_last_error(I.ctx));
}
END_TEST

START_TEST(check_indices_no_driver) {
  if (tu_driver_present()) {
    printf("SKIP check_indices_no_driver: libcuda.so.1 is present on this machine\n");
    return;
  }
  ICHECK(SFA_ERR_NO_DRIVER, 64, 48, &I.ex, "libcuda.so.1");
  ireset(SFA_MODE_HASH);
  ICHECK(SFA_ERR_NO_DRIVER, 64, 48, &I.ex, "libcuda.so.1");
}
END_TEST

int main(void) {
  Suite *s = suite_create("indices");
  TCase *t = tcase_create("host_checker");
  tcase_add_test(t, qk_drop_valid);
  tcase_add_test(t, hash_valid);
  tcase_add_test(t, qk_drop_not_increasing);
  tcase_add_test(t, qk_drop_negative);
  tcase_add_test(t, qk_drop_padding_not_suffix);
  tcase_add_test(t, hash_unsorted);
  tcase_add_test(t, hash_negative);
  tcase_add_test(t, hash_padding);
  tcase_add_test(t, checker_arguments);
  suite_add_tcase(s, t);
  TCase *api = tcase_create("check_indices");
  tcase_add_checked_fixture(api, isetup, iteardown);
  tcase_add_test(api, check_indices_arguments);
  tcase_add_test(api, check_indices_refuses_absurd_sizes_before_allocating);
  tcase_add_test(api, check_indices_no_driver);
  suite_add_tcase(s, api);
  return tu_run_suite(s);
}
