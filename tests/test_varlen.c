/*
** test_varlen.c -- packed variable-length batches without a GPU: every way
** sfa_forward, sfa_backward and sfa_check_indices reject a bad packed call
** (status, and a message that names the argument; all before the driver is
** loaded), valid packed calls of every mode passing validation (without
** libcuda: SFA_ERR_NO_DRIVER; window with a packed bias, mask and dbias
** [Hb, total_q|1, Kmax] too), the host checks of the prefix sums' values and
** of the index contract per sequence, the grid rule of packed sequences (every
** tile of every sequence gets exactly one slot, at most one idle slot per
** sequence), and NVRTC compiles of the varlen kernels of every mode, forward
** and backward, for sm_90 (wgmma) and sm_80 (mma.sync).
*/
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sfa.h"
#include "gen/gen_internal.h"
#include "gen/variant.h"
#include "runtime/varlen.h"
#include "testutil.h"

/* ------------------------------------------------------------ a packed problem */

typedef struct problem {
  sfa_context *ctx;
  sfa_attention_params p;
  sfa_tensor q, k, v, o, lse, dout, dq, dk, dv, cq, ck, qi, ki, qh, kh, bias;
  sfa_extras ex;
} problem;

static problem P;

#define TQ 300 /* total query rows of B = 4 sequences */
#define TK 260

static void reset(void) {
  const int64_t qs[3] = {TQ, 4, 64}, ks[3] = {TK, 2, 64}, ls[2] = {4, TQ}, cs[1] = {5};
  const int64_t qis[2] = {4, TQ}, kis[2] = {2, TK}, bs[4] = {1, 4, TQ, TK};
  char *base = (char *)0x7f0000000000;
  sfa_params_init(&P.p);
  sfa_tensor_init(&P.q, base + 0x100000, SFA_DTYPE_BF16, 3, qs);
  sfa_tensor_init(&P.k, base + 0x200000, SFA_DTYPE_BF16, 3, ks);
  sfa_tensor_init(&P.v, base + 0x300000, SFA_DTYPE_BF16, 3, ks);
  sfa_tensor_init(&P.o, base + 0x400000, SFA_DTYPE_BF16, 3, qs);
  sfa_tensor_init(&P.lse, base + 0x500000, SFA_DTYPE_FP32, 2, ls);
  sfa_tensor_init(&P.dout, base + 0x600000, SFA_DTYPE_BF16, 3, qs);
  sfa_tensor_init(&P.dq, base + 0x700000, SFA_DTYPE_BF16, 3, qs);
  sfa_tensor_init(&P.dk, base + 0x800000, SFA_DTYPE_BF16, 3, ks);
  sfa_tensor_init(&P.dv, base + 0x900000, SFA_DTYPE_BF16, 3, ks);
  sfa_tensor_init(&P.cq, base + 0xa00000, SFA_DTYPE_INT32, 1, cs);
  sfa_tensor_init(&P.ck, base + 0xb00000, SFA_DTYPE_INT32, 1, cs);
  sfa_tensor_init(&P.qi, base + 0xc00000, SFA_DTYPE_INT32, 2, qis);
  sfa_tensor_init(&P.ki, base + 0xd00000, SFA_DTYPE_INT32, 2, kis);
  sfa_tensor_init(&P.qh, base + 0xe00000, SFA_DTYPE_INT32, 2, qis);
  sfa_tensor_init(&P.kh, base + 0xf00000, SFA_DTYPE_INT32, 2, kis);
  sfa_tensor_init(&P.bias, base + 0x1000000, SFA_DTYPE_BF16, 4, bs);
  memset(&P.ex, 0, sizeof P.ex);
  P.ex.cu_seqlens_q = &P.cq, P.ex.cu_seqlens_k = &P.ck;
}

static void set_mode(sfa_mode m) {
  P.p.mode = m;
  P.ex.q_idx = P.ex.k_idx = P.ex.q_hash = P.ex.k_hash = NULL;
  if (m == SFA_MODE_QK_DROP || m == SFA_MODE_HASH) P.ex.q_idx = &P.qi, P.ex.k_idx = &P.ki;
  if (m == SFA_MODE_HASH) P.ex.q_hash = &P.qh, P.ex.k_hash = &P.kh;
}

static void setup(void) {
  memset(&P, 0, sizeof P);
  ck_assert_int_eq(sfa_context_create(&P.ctx, NULL), SFA_OK);
  reset();
}

static void teardown(void) {
  sfa_context_destroy(P.ctx);
  P.ctx = NULL;
}

/* Runs sfa_forward (bwd 0) or sfa_backward (bwd 1) on P; wants status `want`
** and both needles in the message, and the driver still not loaded. */
#define EXPECT(bwd, want, n1, n2) expect((bwd), (want), (n1), (n2), __LINE__)
static void expect(int bwd, sfa_status want, const char *n1, const char *n2, int line) {
  sfa_status st =
      bwd ? sfa_backward(P.ctx, &P.p, &P.q, &P.k, &P.v, &P.ex, &P.o, &P.lse, &P.dout, &P.dq,
                         &P.dk, &P.dv, NULL, NULL)
          : sfa_forward(P.ctx, &P.p, &P.q, &P.k, &P.v, &P.ex, &P.o, &P.lse, NULL);
  const char *msg = sfa_last_error(P.ctx);
  ck_assert_msg(st == want, "line %d: status %s, want %s (%s)", line, sfa_status_string(st),
                sfa_status_string(want), msg);
  if (n1) ck_assert_msg(strstr(msg, n1), "line %d: '%s' not in '%s'", line, n1, msg);
  if (n2) ck_assert_msg(strstr(msg, n2), "line %d: '%s' not in '%s'", line, n2, msg);
  ck_assert_msg(!tu_driver_loaded(), "line %d: the driver was loaded before validation failed",
                line);
}

/* ------------------------------------------------------------ validation */

START_TEST(the_pair_of_prefix_sums) {
  for (int bwd = 0; bwd < 2; bwd++) {
    reset();
    P.ex.cu_seqlens_k = NULL;
    EXPECT(bwd, SFA_ERR_INVALID_ARGUMENT, "extras->cu_seqlens_k: is NULL",
           "packed sequences need both");
    reset();
    P.ex.cu_seqlens_q = NULL;
    EXPECT(bwd, SFA_ERR_INVALID_ARGUMENT, "extras->cu_seqlens_q: is NULL", NULL);
    reset();
    P.cq.dtype = SFA_DTYPE_FP32;
    EXPECT(bwd, SFA_ERR_INVALID_ARGUMENT, "extras->cu_seqlens_q: dtype fp32", "int32");
    reset();
    const int64_t s2[2] = {5, 1};
    sfa_tensor_init(&P.ck, P.ck.data, SFA_DTYPE_INT32, 2, s2);
    EXPECT(bwd, SFA_ERR_INVALID_ARGUMENT, "extras->cu_seqlens_k.rank: 2", "must be 1");
    reset();
    P.cq.shape[0] = 1;
    EXPECT(bwd, SFA_ERR_INVALID_ARGUMENT, "extras->cu_seqlens_q: shape [1]", "[B + 1]");
    reset();
    P.ck.shape[0] = 6;
    EXPECT(bwd, SFA_ERR_INVALID_ARGUMENT, "extras->cu_seqlens_k: shape [6]",
           "cu_seqlens_q's is [5]");
    reset();
    P.cq.strides[0] = 2;
    EXPECT(bwd, SFA_ERR_INVALID_ARGUMENT, "extras->cu_seqlens_q: stride[0] is 2", "contiguous");
    reset();
    P.ck.data = (char *)P.ck.data + 2;
    EXPECT(bwd, SFA_ERR_INVALID_ARGUMENT, "extras->cu_seqlens_k: data", "4-byte aligned");
    reset();
    P.ex.max_seqlen_k = -1;
    EXPECT(bwd, SFA_ERR_INVALID_ARGUMENT, "extras->max_seqlen_k: -1", "must be >= 0");
  }
}
END_TEST

START_TEST(packed_layouts) {
  for (int bwd = 0; bwd < 2; bwd++) {
    reset();
    const int64_t q4[4] = {1, TQ, 4, 64};
    sfa_tensor_init(&P.q, P.q.data, SFA_DTYPE_BF16, 4, q4);
    EXPECT(bwd, SFA_ERR_INVALID_ARGUMENT, "q.rank: 4; must be 3", "[total_q, Hq, D]");
    reset();
    P.k.shape[2] = 128, P.k.strides[1] = 128, P.k.strides[0] = 256;
    EXPECT(bwd, SFA_ERR_INVALID_ARGUMENT, "v: shape [260, 2, 64] does not match k", NULL);
    reset();
    P.o.shape[0] = TQ - 1;
    EXPECT(bwd, SFA_ERR_INVALID_ARGUMENT, "o: shape [299, 4, 64] does not match q", NULL);
    reset();
    P.q.shape[2] = P.o.shape[2] = 40; /* strides still those of 64 */
    EXPECT(bwd, SFA_ERR_INVALID_ARGUMENT, "q: head dim (shape[2]) 40 is not supported", NULL);
    reset();
    P.q.strides[0] = 4 * 64 + 4; /* a row of 8 bytes more: not 16-byte aligned */
    EXPECT(bwd, SFA_ERR_INVALID_ARGUMENT, "q: stride[0] is 260", "multiple of 8");
    reset();
    const int64_t l2[2] = {4, TQ + 1};
    sfa_tensor_init(&P.lse, P.lse.data, SFA_DTYPE_FP32, 2, l2);
    EXPECT(bwd, SFA_ERR_INVALID_ARGUMENT, "lse: shape [4, 301] does not match [Hq, total_q]",
           NULL);
    reset();
    const int64_t l3[3] = {1, 4, TQ};
    sfa_tensor_init(&P.lse, P.lse.data, SFA_DTYPE_FP32, 3, l3);
    EXPECT(bwd, SFA_ERR_INVALID_ARGUMENT, "lse.rank: 3; must be 2", "[Hq, total_q]");
    reset();
    P.k.shape[1] = P.v.shape[1] = 3;
    if (!bwd) /* (the backward names dk first: its shape is no longer k's) */
      EXPECT(bwd, SFA_ERR_INVALID_ARGUMENT, "k: its 3 heads", "do not divide the 4 query heads");
  }
  /* the backward's tensors */
  reset();
  const int64_t d4[4] = {1, TQ, 4, 64};
  sfa_tensor_init(&P.dq, P.dq.data, SFA_DTYPE_BF16, 4, d4);
  EXPECT(1, SFA_ERR_INVALID_ARGUMENT, "dq.rank: 4; must be 3", NULL);
  reset();
  P.dk.shape[0] = TK + 1;
  EXPECT(1, SFA_ERR_INVALID_ARGUMENT, "dk: shape [261, 2, 64] does not match k", NULL);
  reset();
  P.dout.shape[1] = 2;
  EXPECT(1, SFA_ERR_INVALID_ARGUMENT, "dout: shape [300, 2, 64] does not match o", NULL);
  reset();
  P.dv.data = P.v.data;
  EXPECT(1, SFA_ERR_INVALID_ARGUMENT, "dv: its memory overlaps v", NULL);
}
END_TEST

START_TEST(sparse_index_arrays_packed) {
  for (int bwd = 0; bwd < 2; bwd++) {
    reset();
    set_mode(SFA_MODE_QK_DROP);
    const int64_t q3[3] = {1, 4, TQ};
    sfa_tensor_init(&P.qi, P.qi.data, SFA_DTYPE_INT32, 3, q3);
    EXPECT(bwd, SFA_ERR_INVALID_ARGUMENT, "extras->q_idx.rank: 3; must be 2", "[Hq, total_q]");
    reset();
    set_mode(SFA_MODE_HASH);
    P.kh.shape[1] = TK - 1;
    EXPECT(bwd, SFA_ERR_INVALID_ARGUMENT, "extras->k_hash: shape [2, 259] does not match",
           "[Hkv, total_k] = [2, 260]");
    reset();
    set_mode(SFA_MODE_HASH);
    P.qh.strides[0] = TQ + 4; /* q_hash must have q_idx's head stride */
    EXPECT(bwd, SFA_ERR_INVALID_ARGUMENT, "extras->q_hash: stride[1]", "lay them out alike");
    reset();
    set_mode(SFA_MODE_QK_DROP);
    P.ex.q_idx = NULL;
    EXPECT(bwd, SFA_ERR_INVALID_ARGUMENT, "extras->q_idx: is NULL", NULL);
  }
}
END_TEST

START_TEST(packed_calls_check_the_modes_params) {
  /* a mode's params are still checked */
  reset();
  P.p.window_left = 3;
  EXPECT(0, SFA_ERR_INVALID_ARGUMENT, "params.window_left/window_right", NULL);
  ck_assert(!tu_driver_loaded());
}
END_TEST

/* Window mode with a packed bias / mask [Hb, total_q|1, Kmax] and dbias like
** the bias: each rule's message names the tensor. */
#define KMAX 72 /* any column count: the kernels mask keys at or past it */
static sfa_tensor pb, pm, pdb;

static void reset_window(void) {
  reset();
  set_mode(SFA_MODE_WINDOW);
  const int64_t bs[3] = {4, TQ, KMAX}, ms[3] = {1, 1, KMAX};
  sfa_tensor_init(&pb, (char *)P.bias.data, SFA_DTYPE_BF16, 3, bs);
  sfa_tensor_init(&pm, (char *)P.bias.data + 0x200000, SFA_DTYPE_UINT8, 3, ms);
  sfa_tensor_init(&pdb, (char *)P.bias.data + 0x400000, SFA_DTYPE_BF16, 3, bs);
  pm.strides[1] = pm.strides[0] = 80; /* rows padded to 16 bytes */
  P.ex.bias = &pb, P.ex.mask = &pm;
}

/* sfa_backward on P with dbias `db`: status and message as EXPECT's. */
static void expect_dbias(const sfa_tensor *db, sfa_status want, const char *n1,
                         const char *n2) {
  sfa_status st = sfa_backward(P.ctx, &P.p, &P.q, &P.k, &P.v, &P.ex, &P.o, &P.lse, &P.dout,
                               &P.dq, &P.dk, &P.dv, db, NULL);
  const char *msg = sfa_last_error(P.ctx);
  ck_assert_msg(st == want, "status %s, want %s (%s)", sfa_status_string(st),
                sfa_status_string(want), msg);
  if (n1) ck_assert_msg(strstr(msg, n1), "'%s' not in '%s'", n1, msg);
  if (n2) ck_assert_msg(strstr(msg, n2), "'%s' not in '%s'", n2, msg);
  ck_assert(!tu_driver_loaded());
}

START_TEST(packed_window_bias_and_mask_layouts) {
  for (int bwd = 0; bwd < 2; bwd++) {
    reset_window();
    const int64_t b4[4] = {1, 4, TQ, KMAX};
    sfa_tensor_init(&pb, pb.data, SFA_DTYPE_BF16, 4, b4);
    EXPECT(bwd, SFA_ERR_INVALID_ARGUMENT, "extras->bias.rank: 4; must be 3",
           "[Hb, total_q or 1, Kmax]");
    reset_window();
    pb.shape[0] = 3;
    EXPECT(bwd, SFA_ERR_INVALID_ARGUMENT, "extras->bias: shape[0] (heads) is 3",
           "must be Hq (4), Hkv (2) or 1");
    reset_window();
    pm.shape[1] = TQ - 1;
    EXPECT(bwd, SFA_ERR_INVALID_ARGUMENT, "extras->mask: shape[1] (query rows) is 299",
           "must be total_q (300) or 1");
    reset_window();
    pb.strides[1] = KMAX + 1; /* stride[2] stays 1: the rows need not be aligned */
    pb.strides[0] = (KMAX + 1) * TQ;
    pb.strides[2] = 2;
    EXPECT(bwd, SFA_ERR_INVALID_ARGUMENT, "extras->bias: stride[2] is 2",
           "last dimension must be contiguous");
    reset_window();
    pb.dtype = SFA_DTYPE_FP16;
    EXPECT(bwd, SFA_ERR_INVALID_ARGUMENT, "extras->bias: dtype fp16", "expected bf16");
    reset_window();
    pm.shape[1] = TQ, pm.strides[1] = KMAX + 4, pm.strides[0] = (KMAX + 4) * TQ;
    EXPECT(bwd, SFA_ERR_INVALID_ARGUMENT, "extras->mask: row stride 76", "multiple of 16");
    reset_window();
    pm.data = (char *)pm.data + 8;
    EXPECT(bwd, SFA_ERR_INVALID_ARGUMENT, "extras->mask: data", "16-byte aligned");
    reset_window();
    set_mode(SFA_MODE_DENSE); /* the mode table still decides who reads them */
    EXPECT(bwd, SFA_ERR_INVALID_ARGUMENT, "extras->bias: only window mode reads a bias", NULL);
  }
  /* dbias */
  reset_window();
  const int64_t d4[4] = {1, 4, TQ, KMAX};
  sfa_tensor db4;
  sfa_tensor_init(&db4, pdb.data, SFA_DTYPE_BF16, 4, d4);
  expect_dbias(&db4, SFA_ERR_INVALID_ARGUMENT, "dbias.rank: 4; must be 3", "Kmax");
  reset_window();
  pdb.shape[0] = 1;
  expect_dbias(&pdb, SFA_ERR_INVALID_ARGUMENT, "dbias: shape [1, 300, 72]",
               "does not match extras->bias [4, 300, 72]");
  reset_window();
  P.ex.bias = NULL;
  expect_dbias(&pdb, SFA_ERR_INVALID_ARGUMENT, "dbias: is given but there is no bias", NULL);
  reset_window();
  pdb.data = pb.data;
  expect_dbias(&pdb, SFA_ERR_INVALID_ARGUMENT, "dbias: its memory overlaps extras->bias", NULL);
  reset_window();
  pb.shape[1] = pdb.shape[1] = 1;
  P.p.deterministic = 1;
  expect_dbias(&pdb, SFA_ERR_UNSUPPORTED, "dbias: its one row (shape[1] = 1)",
               "deterministic");
}
END_TEST

/* Valid packed calls of every mode pass validation. */
START_TEST(valid_packed_calls) {
  if (tu_driver_present()) {
    printf("SKIP valid_packed_calls: libcuda.so.1 is present on this machine\n");
    return;
  }
  static const sfa_mode modes[] = {SFA_MODE_DENSE, SFA_MODE_QK_DROP, SFA_MODE_HASH,
                                   SFA_MODE_WINDOW};
  for (int i = 0; i < 4; i++)
    for (int bwd = 0; bwd < 2; bwd++) {
      reset();
      set_mode(modes[i]);
      P.p.causal = modes[i] == SFA_MODE_DENSE || modes[i] == SFA_MODE_WINDOW;
      if (modes[i] == SFA_MODE_WINDOW) P.p.window_left = 32;
      EXPECT(bwd, SFA_ERR_NO_DRIVER, "libcuda.so.1", NULL);
    }
  /* any strides with the last dim contiguous: q as a slice of a wider buffer */
  reset();
  P.q.strides[0] = 4 * 64 * 3;
  EXPECT(0, SFA_ERR_NO_DRIVER, NULL, NULL);
  /* window with a packed bias [Hq, total_q, Kmax] and mask [1, 1, Kmax], and
  ** their dbias; a bias of one row of Hkv heads; sfa_check_indices (the
  ** prefix sums only) takes them too */
  for (int bwd = 0; bwd < 2; bwd++) {
    reset_window();
    EXPECT(bwd, SFA_ERR_NO_DRIVER, "libcuda.so.1", NULL);
    reset_window();
    pb.shape[0] = pdb.shape[0] = 2, pb.shape[1] = pdb.shape[1] = 1;
    P.ex.mask = NULL;
    EXPECT(bwd, SFA_ERR_NO_DRIVER, "libcuda.so.1", NULL);
  }
  reset_window();
  expect_dbias(&pdb, SFA_ERR_NO_DRIVER, "libcuda.so.1", NULL);
  reset_window();
  pb.shape[1] = pdb.shape[1] = 1; /* a broadcast row: float atomics, without deterministic */
  expect_dbias(&pdb, SFA_ERR_NO_DRIVER, "libcuda.so.1", NULL);
  reset_window();
  ck_assert_int_eq(sfa_check_indices(P.ctx, &P.p, &P.ex, TQ, TK, NULL), SFA_ERR_NO_DRIVER);
}
END_TEST

/* sfa_check_indices: the pair is validated before anything is read. */
START_TEST(check_indices_validates_packed_arrays) {
  reset();
  set_mode(SFA_MODE_DENSE);
  P.ex.cu_seqlens_k = NULL;
  ck_assert_int_eq(sfa_check_indices(P.ctx, &P.p, &P.ex, TQ, TK, NULL), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_ptr_nonnull(strstr(sfa_last_error(P.ctx), "extras->cu_seqlens_k: is NULL"));
  reset();
  set_mode(SFA_MODE_QK_DROP);
  P.ki.shape[1] = TK + 3;
  ck_assert_int_eq(sfa_check_indices(P.ctx, &P.p, &P.ex, TQ, TK, NULL), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_ptr_nonnull(strstr(sfa_last_error(P.ctx), "extras->k_idx: shape [2, 263]"));
  ck_assert(!tu_driver_loaded());
}
END_TEST

/* ------------------------------------------------------------ host checks of values */

START_TEST(prefix_sum_values) {
  char err[256];
  const int32_t good[] = {0, 0, 5, 5, 9};
  ck_assert_int_eq(sfa__check_seqlens("cu", good, 5, 9, err, sizeof err), SFA_OK);
  const int32_t start[] = {1, 2, 9};
  ck_assert_int_eq(sfa__check_seqlens("cu", start, 3, 9, err, sizeof err),
                   SFA_ERR_INVALID_ARGUMENT);
  ck_assert_ptr_nonnull(strstr(err, "cu[0] is 1; the prefix sums start at 0"));
  const int32_t down[] = {0, 6, 4, 9};
  ck_assert_int_eq(sfa__check_seqlens("cu", down, 4, 9, err, sizeof err),
                   SFA_ERR_INVALID_ARGUMENT);
  ck_assert_ptr_nonnull(strstr(err, "cu[2] is 4, less than cu[1] = 6"));
  ck_assert_int_eq(sfa__check_seqlens("cu", good, 5, 10, err, sizeof err),
                   SFA_ERR_INVALID_ARGUMENT);
  ck_assert_ptr_nonnull(strstr(err, "cu[4] (the last) is 9 but the packed tensors have 10 rows"));
}
END_TEST

START_TEST(index_contract_per_sequence) {
  char err[256];
  /* qk_drop, Hq = Hkv = 1, sequences of 3, 0 and 2 rows: positions restart */
  const int32_t cq[] = {0, 3, 3, 5}, ck[] = {0, 2, 2, 4};
  const int32_t qi[] = {0, 2, -1, 0, 1}, ki[] = {0, 1, 1, INT32_MAX};
  ck_assert_int_eq(sfa__check_index_arrays_varlen(SFA_MODE_QK_DROP, 3, 1, 1, 5, 4, cq, ck, qi,
                                                  ki, NULL, NULL, err, sizeof err),
                   SFA_OK);
  const int32_t bad[] = {0, 2, -1, 1, 1}; /* sequence 2: not increasing */
  ck_assert_int_eq(sfa__check_index_arrays_varlen(SFA_MODE_QK_DROP, 3, 1, 1, 5, 4, cq, ck, bad,
                                                  ki, NULL, NULL, err, sizeof err),
                   SFA_ERR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(err, "extras->q_idx[2, 0, 1] = 1 is not greater than"), "%s", err);
  const int32_t ck_bad[] = {0, 2, 1, 4};
  ck_assert_int_eq(sfa__check_index_arrays_varlen(SFA_MODE_QK_DROP, 3, 1, 1, 5, 4, cq, ck_bad,
                                                  qi, ki, NULL, NULL, err, sizeof err),
                   SFA_ERR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(err, "extras->cu_seqlens_k[2] is 1, less than"), "%s", err);
}
END_TEST

/* ------------------------------------------------------------ the grid rule */

/* The kernels' slot search (templates/varlen.lt), here on the host. */
static int slot_seq(const int32_t *cu, int B, int tile, int slot, int *seq) {
  int lo = 0, hi = B;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (cu[mid] / tile + mid <= slot) lo = mid;
    else hi = mid - 1;
  }
  *seq = lo;
  return slot - (cu[lo] / tile + lo);
}

START_TEST(every_tile_gets_one_slot) {
  uint64_t rng = 17;
  static const int tiles[] = {16, 64, 128};
  for (int trial = 0; trial < 200; trial++) {
    int32_t cu[41];
    const int B = 1 + (int)(tu_rand_u64(&rng) % 40), tile = tiles[trial % 3];
    cu[0] = 0;
    for (int b = 0; b < B; b++) {
      const uint64_t r = tu_rand_u64(&rng) % 8;
      const int len = r < 2 ? (int)r : r < 6 ? (int)(tu_rand_u64(&rng) % 300)
                                             : (int)(tu_rand_u64(&rng) % 3000);
      cu[b + 1] = cu[b] + len;
    }
    sfa__grid g = {.rule = SFA__GRID_QUERY_TILES, .varlen = 1, .tile = tile};
    sfa__grid_dims d = {.batch = B, .hq = 3, .tq = cu[B]};
    unsigned grid[3];
    sfa__grid_size(&g, &d, grid);
    ck_assert_uint_eq(grid[0], (unsigned)(cu[B] / tile + B));
    ck_assert_uint_eq(grid[1], 3);
    ck_assert_uint_eq(grid[2], 1);
    int seen[41][200];
    memset(seen, 0, sizeof seen);
    int idle = 0;
    for (unsigned s = 0; s < grid[0]; s++) {
      int seq;
      const int m = slot_seq(cu, B, tile, (int)s, &seq);
      ck_assert(seq >= 0 && seq < B && m >= 0);
      if (m * tile >= cu[seq + 1] - cu[seq]) {
        idle++;
        continue;
      }
      ck_assert_int_lt(m, 200);
      seen[seq][m]++;
    }
    for (int b = 0; b < B; b++)
      for (int m = 0; m * tile < cu[b + 1] - cu[b]; m++)
        ck_assert_msg(seen[b][m] == 1, "sequence %d tile %d: %d slots", b, m, seen[b][m]);
    ck_assert_int_le(idle, B);
  }
  /* the backward's key tiles and its plan */
  sfa__grid g = {.rule = SFA__GRID_KEY_TILES, .varlen = 1, .tile = 128, .split = 2};
  sfa__grid_dims d = {.batch = 5, .hq = 8, .hkv = 4, .tk = 1000};
  unsigned grid[3];
  sfa__grid_size(&g, &d, grid);
  ck_assert_uint_eq(grid[0], 1000 / 128 + 5);
  ck_assert_uint_eq(grid[1], 8);
  ck_assert_uint_eq(grid[2], 1);
  sfa__grid p = {.rule = SFA__GRID_KEY_TILE_ITEMS, .varlen = 1, .tile = 128, .per_block = 8};
  ck_assert_int_eq(sfa__grid_items(&p, &d), 8 * (1000 / 128 + 5));
}
END_TEST

/* The descriptor carries the rule: varlen specs of every attention pass. */
START_TEST(variants_carry_the_packed_grid) {
  sfa_kernel_spec s = {SFA_PASS_BWD, SFA_MODE_HASH, SFA_DTYPE_BF16, 64, 0, 0, 0, 0, 90,
                       SFA_FEAT_VARLEN, SFA_SPEC_MMA_SYNC};
  char err[256];
  sfa__variant v;
  ck_assert_int_eq(sfa_spec_default(&s, err, sizeof err), SFA_OK);
  ck_assert_int_eq(sfa__variant_describe(&s, &v, err, sizeof err), SFA_OK);
  ck_assert_int_eq(v.grid.varlen, 1);
  ck_assert_int_eq(v.has_plan, 1);
  ck_assert_int_eq(v.plan.grid.varlen, 1);
  s.flags = 0;
  ck_assert_int_eq(sfa__variant_describe(&s, &v, err, sizeof err), SFA_OK);
  ck_assert_int_eq(v.grid.varlen, 0);
  char name[SFA__NAME_MAX];
  s.pass = SFA_PASS_FWD, s.mode = SFA_MODE_DENSE, s.flags = SFA_FEAT_CAUSAL | SFA_FEAT_VARLEN;
  ck_assert_int_eq(sfa_spec_default(&s, err, sizeof err), SFA_OK);
  ck_assert_int_eq(sfa_spec_name(&s, name, sizeof name), SFA_OK);
  ck_assert_ptr_nonnull(strstr(name, "_causal_varlen_"));
  sfa_kernel_spec back;
  ck_assert_int_eq(sfa_spec_parse(name, &back, err, sizeof err), SFA_OK);
  ck_assert_uint_eq(back.flags, s.flags);
}
END_TEST

/* ------------------------------------------------------------ compiles */

/* NVRTC builds the varlen kernels of every mode, fwd and bwd (hash's with its
** plan entry), for sm_90 with wgmma (fwd also warp-specialized) and for sm_80
** with mma.sync; the last loop index is window with a bias and a mask (the
** kmax tail), also bwddq. */
START_TEST(varlen_kernels_compile) {
  static const sfa_mode modes[] = {SFA_MODE_DENSE, SFA_MODE_QK_DROP, SFA_MODE_HASH,
                                   SFA_MODE_WINDOW, SFA_MODE_WINDOW};
  static const sfa_pass passes[] = {SFA_PASS_FWD, SFA_PASS_BWD, SFA_PASS_BWD_DQ};
  const int npass = _i == 4 ? 3 : 2;
  for (int a = 0; a < 2; a++)
    for (int p = 0; p < npass; p++) {
      const sfa_mode m = modes[_i];
      const unsigned causal = m == SFA_MODE_DENSE || m == SFA_MODE_WINDOW ? SFA_FEAT_CAUSAL : 0;
      const unsigned extra = _i == 4 ? SFA_FEAT_BIAS | SFA_FEAT_MASK : 0u;
      sfa_kernel_spec s = {passes[p], m, a ? SFA_DTYPE_FP16 : SFA_DTYPE_BF16, 128, 0, 0, 0, 0,
                           a ? 80 : 90, causal | extra | SFA_FEAT_VARLEN, SFA_SPEC_MMA_SYNC};
      char err[4096], name[SFA__NAME_MAX];
      ck_assert_int_eq(sfa__spec_default_mma(&s, a == 0 && passes[p] != SFA_PASS_BWD_DQ, err, sizeof err), SFA_OK);
      ck_assert_int_eq(sfa_spec_name(&s, name, sizeof name), SFA_OK);
      void *bin = NULL;
      size_t size = 0;
      sfa_status st = sfa_compile_cubin(&s, NULL, &bin, &size, NULL, err, sizeof err);
      ck_assert_msg(st == SFA_OK, "%s: %s", name, err);
      ck_assert_msg(size > 4 && memcmp(bin, "\177ELF", 4) == 0, "%s: not an ELF file", name);
      sfa_free(bin);
      /* sm_90 fwd without a mask: the warp-specialized kernel too */
      if (a == 0 && passes[p] == SFA_PASS_FWD && _i != 4) {
        ck_assert_int_eq(sfa__spec_default_mma(&s, 2, err, sizeof err), SFA_OK);
        ck_assert_int_eq(s.mma, SFA_SPEC_MMA_WS);
        ck_assert_int_eq(sfa_spec_name(&s, name, sizeof name), SFA_OK);
        bin = NULL;
        st = sfa_compile_cubin(&s, NULL, &bin, &size, NULL, err, sizeof err);
        ck_assert_msg(st == SFA_OK, "%s: %s", name, err);
        ck_assert_msg(size > 4 && memcmp(bin, "\177ELF", 4) == 0, "%s: not an ELF file", name);
        sfa_free(bin);
      }
    }
}
END_TEST

int main(void) {
  Suite *s = suite_create("varlen");
  TCase *v = tcase_create("validate");
  tcase_add_checked_fixture(v, setup, teardown);
  tcase_add_test(v, the_pair_of_prefix_sums);
  tcase_add_test(v, packed_layouts);
  tcase_add_test(v, sparse_index_arrays_packed);
  tcase_add_test(v, packed_calls_check_the_modes_params);
  tcase_add_test(v, packed_window_bias_and_mask_layouts);
  tcase_add_test(v, valid_packed_calls);
  tcase_add_test(v, check_indices_validates_packed_arrays);
  suite_add_tcase(s, v);
  TCase *h = tcase_create("host");
  tcase_add_test(h, prefix_sum_values);
  tcase_add_test(h, index_contract_per_sequence);
  tcase_add_test(h, every_tile_gets_one_slot);
  tcase_add_test(h, variants_carry_the_packed_grid);
  suite_add_tcase(s, h);
  TCase *c = tcase_create("compile");
  tcase_set_timeout(c, 600);
  tcase_add_loop_test(c, varlen_kernels_compile, 0, 5);
  suite_add_tcase(s, c);
  return tu_run_suite(s);
}
