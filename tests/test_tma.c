/*
** test_tma.c -- the tensor maps of the warp-specialized forward
** (runtime/tma.c) without a GPU: which tensors the copy engine can address,
** the arguments handed to cuTensorMapEncodeTiled (a fake in the driver
** table records them: dims innermost first, strides in bytes, the box, the
** 128-byte swizzle, zero fill), the stride a length-1 dimension gets, the
** per-thread cache (a repeated call does not encode again, any changed field
** does; another address of a cached shape is replaced, not encoded), a
** driver without the entry point, and the three maps of a forward's
** parameter block (sfa__fwd_tma_tensors; packed sequences as one batch).
*/
#include <string.h>

#include "runtime/fwd_launch.h"
#include "runtime/tma.h"
#include "testutil.h"

/* ------------------------------------------------------------ the fake */

static struct {
  int calls;
  CUtensorMapDataType type;
  cuuint32_t rank;
  void *addr;
  cuuint64_t dim[4], stride[3];
  cuuint32_t box[4], estride[4];
  CUtensorMapInterleave interleave;
  CUtensorMapSwizzle swizzle;
  CUtensorMapFloatOOBfill oob;
  CUresult result;
} F;

static CUresult fake_encode(CUtensorMap *map, CUtensorMapDataType type, cuuint32_t rank,
                            void *addr, const cuuint64_t *dim, const cuuint64_t *strides,
                            const cuuint32_t *box, const cuuint32_t *elem_strides,
                            CUtensorMapInterleave interleave, CUtensorMapSwizzle swizzle,
                            CUtensorMapL2promotion l2, CUtensorMapFloatOOBfill oob) {
  (void)l2;
  F.calls++;
  F.type = type, F.rank = rank, F.addr = addr;
  for (cuuint32_t i = 0; i < rank && i < 4; i++) {
    F.dim[i] = dim[i], F.box[i] = box[i], F.estride[i] = elem_strides[i];
    if (i + 1 < rank) F.stride[i] = strides[i];
  }
  F.interleave = interleave, F.swizzle = swizzle, F.oob = oob;
  memset(map, 0, sizeof *map);
  memcpy(map, &F.calls, sizeof F.calls); /* which call made it */
  return F.result;
}


/* cuTensorMapReplaceAddress: counts, and marks the map with the address */
static struct {
  int calls;
  CUresult result;
} R;
static CUresult fake_replace(CUtensorMap *map, void *addr) {
  R.calls++;
  if (R.result != CUDA_SUCCESS) return R.result;
  memcpy((char *)map + 8, &addr, sizeof addr);
  return CUDA_SUCCESS;
}

static sfa_driver fake_driver(int with_encode) {
  sfa_driver d;
  memset(&d, 0, sizeof d);
  if (with_encode) d.cuTensorMapEncodeTiled = fake_encode;
  return d;
}

/* A contiguous bf16 [B, H, T, D] tensor at data. */
static sfa__tma_tensor dense(uint64_t data, int64_t B, int64_t H, int64_t T, int64_t D) {
  sfa__tma_tensor t = {data, SFA_DTYPE_BF16, B, H, T, D, H * T * D, T * D, D};
  return t;
}

/* ------------------------------------------------------------ tests */

START_TEST(addressable_needs_aligned_base_and_16_byte_strides) {
  sfa__tma_tensor t = dense(0x10000, 2, 4, 1000, 128);
  ck_assert(sfa__tma_addressable(&t));
  t.data = 0x10008; /* 8-byte aligned only */
  ck_assert(!sfa__tma_addressable(&t));
  t.data = 0;
  ck_assert(!sfa__tma_addressable(&t));
  t = dense(0x10000, 2, 4, 1000, 128);
  t.st = 132; /* 264-byte rows */
  ck_assert(!sfa__tma_addressable(&t));
  t.st = 136; /* padded rows of 272 bytes */
  ck_assert(sfa__tma_addressable(&t));
  t.sb = 0; /* one K for every batch: the engine has no zero stride */
  ck_assert(!sfa__tma_addressable(&t));
  t.B = 1; /* ... unless the dimension is never stepped over */
  ck_assert(sfa__tma_addressable(&t));
  t.sh = (int64_t)1 << 39; /* 2^40 bytes */
  ck_assert(!sfa__tma_addressable(&t));
  t = dense(0x10000, 2, 4, 1000, 128);
  t.dtype = SFA_DTYPE_INT32; /* the maps take fp16, bf16 and fp32 */
  ck_assert(!sfa__tma_addressable(&t));
  t.dtype = SFA_DTYPE_FP16;
  ck_assert(sfa__tma_addressable(&t));
  t.dtype = SFA_DTYPE_FP32; /* the backward's dQ workspace: 512-byte rows */
  ck_assert(sfa__tma_addressable(&t));
  t.D = 2; /* 8-byte rows: not a multiple of 16 */
  t.st = 2, t.sh = 2000, t.sb = 8000;
  ck_assert(!sfa__tma_addressable(&t));
  ck_assert(!sfa__tma_addressable(NULL));
}
END_TEST

START_TEST(map_arguments_are_innermost_first_in_bytes) {
  sfa_driver d = fake_driver(1);
  char err[256] = "";
  CUtensorMap m;
  memset(&F, 0, sizeof F);
  /* [B, T, H, D] storage seen as [B, H, T, D]: rows H * D apart */
  sfa__tma_tensor t = {0x20000, SFA_DTYPE_FP16, 3, 8, 700, 64, 700 * 8 * 64, 64, 8 * 64};
  ck_assert_int_eq(sfa__tma_map(&d, &t, 64, 128, &m, err, sizeof err), SFA_OK);
  ck_assert_int_eq(F.calls, 1);
  ck_assert_int_eq(F.type, CU_TENSOR_MAP_DATA_TYPE_FLOAT16);
  ck_assert_uint_eq(F.rank, 4);
  ck_assert_ptr_eq(F.addr, (void *)0x20000);
  ck_assert(F.dim[0] == 64 && F.dim[1] == 700 && F.dim[2] == 8 && F.dim[3] == 3);
  ck_assert(F.stride[0] == 8 * 64 * 2 && F.stride[1] == 64 * 2 && F.stride[2] == 700 * 8 * 64 * 2);
  ck_assert(F.box[0] == 64 && F.box[1] == 128 && F.box[2] == 1 && F.box[3] == 1);
  ck_assert(F.estride[0] == 1 && F.estride[1] == 1 && F.estride[2] == 1 && F.estride[3] == 1);
  ck_assert_int_eq(F.interleave, CU_TENSOR_MAP_INTERLEAVE_NONE);
  ck_assert_int_eq(F.swizzle, CU_TENSOR_MAP_SWIZZLE_128B);
  ck_assert_int_eq(F.oob, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE); /* zeros past T */
  t.dtype = SFA_DTYPE_BF16;
  ck_assert_int_eq(sfa__tma_map(&d, &t, 64, 128, &m, err, sizeof err), SFA_OK);
  ck_assert_int_eq(F.type, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16);
}
END_TEST

START_TEST(a_length_one_dimension_gets_a_dense_stride) {
  sfa_driver d = fake_driver(1);
  char err[256] = "";
  CUtensorMap m;
  memset(&F, 0, sizeof F);
  /* one batch and one head, whose strides say nothing useful */
  sfa__tma_tensor t = {0x30000, SFA_DTYPE_BF16, 1, 1, 512, 128, 0, 3, 128};
  ck_assert(sfa__tma_addressable(&t));
  ck_assert_int_eq(sfa__tma_map(&d, &t, 64, 64, &m, err, sizeof err), SFA_OK);
  ck_assert(F.stride[0] == 256 && F.stride[1] == 256 * 512 && F.stride[2] == 256 * 512);
  /* a single row too */
  t.T = 1, t.st = 0;
  ck_assert_int_eq(sfa__tma_map(&d, &t, 64, 64, &m, err, sizeof err), SFA_OK);
  ck_assert(F.stride[0] == 256 && F.stride[1] == 256 && F.stride[2] == 256);
}
END_TEST

START_TEST(maps_are_cached_per_tensor_and_box) {
  sfa_driver d = fake_driver(1);
  char err[256] = "";
  CUtensorMap m1, m2;
  memset(&F, 0, sizeof F);
  sfa__tma_tensor t = dense(0x40000, 2, 4, 300, 64);
  ck_assert_int_eq(sfa__tma_map(&d, &t, 64, 128, &m1, err, sizeof err), SFA_OK);
  ck_assert_int_eq(sfa__tma_map(&d, &t, 64, 128, &m2, err, sizeof err), SFA_OK);
  ck_assert_int_eq(F.calls, 1);
  ck_assert(memcmp(&m1, &m2, sizeof m1) == 0);
  int calls = F.calls;
  sfa__tma_tensor u = t;
  u.data += 256; /* another tensor */
  ck_assert_int_eq(sfa__tma_map(&d, &u, 64, 128, &m2, err, sizeof err), SFA_OK);
  ck_assert_int_eq(F.calls, ++calls);
  ck_assert_int_eq(sfa__tma_map(&d, &t, 64, 64, &m2, err, sizeof err), SFA_OK); /* box */
  ck_assert_int_eq(F.calls, ++calls);
  u = t, u.T = 301;
  ck_assert_int_eq(sfa__tma_map(&d, &u, 64, 128, &m2, err, sizeof err), SFA_OK);
  ck_assert_int_eq(F.calls, ++calls);
  u = t, u.st = 72;
  ck_assert_int_eq(sfa__tma_map(&d, &u, 64, 128, &m2, err, sizeof err), SFA_OK);
  ck_assert_int_eq(F.calls, ++calls);
  ck_assert_int_eq(sfa__tma_map(&d, &t, 64, 128, &m2, err, sizeof err), SFA_OK); /* still held */
  ck_assert_int_eq(F.calls, calls);
  ck_assert(memcmp(&m1, &m2, sizeof m1) == 0);
  /* a failed encode is reported and not cached */
  u = t, u.data += 512;
  F.result = CUDA_ERROR_INVALID_VALUE;
  ck_assert_int_eq(sfa__tma_map(&d, &u, 64, 128, &m2, err, sizeof err), SFA_ERR_CUDA);
  ck_assert_msg(strstr(err, "cuTensorMapEncodeTiled"), "%s", err);
  F.result = CUDA_SUCCESS;
  ck_assert_int_eq(sfa__tma_map(&d, &u, 64, 128, &m2, err, sizeof err), SFA_OK);
  ck_assert_int_eq(F.calls, calls + 2);
}
END_TEST

/* Another tensor of a cached shape: the cached map with its address
** replaced, not a new encode; the tensor before it is still held; a failing
** replace falls back to the encode. */
START_TEST(a_cached_shape_at_another_address_is_replaced) {
  sfa_driver d = fake_driver(1);
  d.cuTensorMapReplaceAddress = fake_replace;
  char err[256] = "";
  CUtensorMap m, m2;
  memset(&F, 0, sizeof F), memset(&R, 0, sizeof R);
  sfa__tma_tensor t = dense(0xA0000, 4, 16, 4096, 128), u = t;
  ck_assert_int_eq(sfa__tma_map(&d, &t, 64, 128, &m, err, sizeof err), SFA_OK);
  ck_assert(F.calls == 1 && R.calls == 0);
  u.data = 0xB0000;
  ck_assert_int_eq(sfa__tma_map(&d, &u, 64, 128, &m2, err, sizeof err), SFA_OK);
  ck_assert(F.calls == 1 && R.calls == 1);
  void *addr;
  memcpy(&addr, (char *)&m2 + 8, sizeof addr);
  ck_assert_ptr_eq(addr, (void *)0xB0000);
  /* both are held now: no call for either */
  ck_assert_int_eq(sfa__tma_map(&d, &t, 64, 128, &m2, err, sizeof err), SFA_OK);
  ck_assert(memcmp(&m, &m2, sizeof m) == 0);
  ck_assert_int_eq(sfa__tma_map(&d, &u, 64, 128, &m2, err, sizeof err), SFA_OK);
  ck_assert(F.calls == 1 && R.calls == 1);
  /* another shape: encoded */
  u.T = 2048, u.sb = 16 * 2048 * 128;
  ck_assert_int_eq(sfa__tma_map(&d, &u, 64, 128, &m2, err, sizeof err), SFA_OK);
  ck_assert(F.calls == 2 && R.calls == 1);
  /* a replace the driver refuses: encoded instead */
  R.result = CUDA_ERROR_INVALID_VALUE;
  u = t, u.data = 0xC0000;
  ck_assert_int_eq(sfa__tma_map(&d, &u, 64, 128, &m2, err, sizeof err), SFA_OK);
  ck_assert(F.calls == 3 && R.calls == 2);
  ck_assert_ptr_eq(F.addr, (void *)0xC0000);
}
END_TEST

START_TEST(a_driver_without_the_entry_point_is_unsupported) {
  sfa_driver d = fake_driver(0);
  char err[256] = "";
  CUtensorMap m;
  sfa__tma_tensor t = dense(0x50000, 1, 2, 64, 64);
  ck_assert_int_eq(sfa__tma_map(&d, &t, 64, 64, &m, err, sizeof err), SFA_ERR_UNSUPPORTED);
  ck_assert_msg(strstr(err, "cuTensorMapEncodeTiled"), "%s", err);
}
END_TEST

START_TEST(forward_tensors_come_from_the_parameter_block) {
  sfa_fwd_args a;
  memset(&a, 0, sizeof a);
  a.q = 0x60000, a.k = 0x70000, a.v = 0x80000;
  a.batch = 2, a.hq = 8, a.hkv = 2, a.tq = 100, a.tk = 300;
  a.q_sb = 8 * 100 * 128, a.q_sh = 100 * 128, a.q_st = 128;
  a.k_sb = 2 * 300 * 128, a.k_sh = 300 * 128, a.k_st = 128;
  a.v_sb = 2 * 300 * 128, a.v_sh = 128, a.v_st = 2 * 128;
  sfa__tma_tensor t[3];
  sfa__fwd_tma_tensors(&a, SFA_DTYPE_BF16, 128, t);
  ck_assert(t[0].data == a.q && t[0].H == 8 && t[0].T == 100 && t[0].D == 128 && t[0].B == 2);
  ck_assert(t[1].data == a.k && t[1].H == 2 && t[1].T == 300 && t[1].st == 128);
  ck_assert(t[2].data == a.v && t[2].sh == 128 && t[2].st == 256 && t[2].sb == a.v_sb);
  ck_assert(sfa__fwd_tma_addressable(&a, SFA_DTYPE_BF16, 128));
  a.k_sb = 0; /* k broadcast over the batch */
  ck_assert(!sfa__fwd_tma_addressable(&a, SFA_DTYPE_BF16, 128));
  /* packed sequences: one batch of the total rows, whatever batch counts */
  a.cu_q = 0x90000, a.cu_k = 0x90100, a.batch = 5, a.q_sb = a.k_sb = a.v_sb = 0;
  sfa__fwd_tma_tensors(&a, SFA_DTYPE_BF16, 128, t);
  ck_assert(t[0].B == 1 && t[1].B == 1 && t[2].B == 1 && t[0].T == 100 && t[1].T == 300);
  ck_assert(sfa__fwd_tma_addressable(&a, SFA_DTYPE_BF16, 128));
}
END_TEST

int main(void) {
  Suite *s = suite_create("tma");
  TCase *t = tcase_create("tma");
  tcase_add_test(t, addressable_needs_aligned_base_and_16_byte_strides);
  tcase_add_test(t, map_arguments_are_innermost_first_in_bytes);
  tcase_add_test(t, a_length_one_dimension_gets_a_dense_stride);
  tcase_add_test(t, maps_are_cached_per_tensor_and_box);
  tcase_add_test(t, a_cached_shape_at_another_address_is_replaced);
  tcase_add_test(t, a_driver_without_the_entry_point_is_unsupported);
  tcase_add_test(t, forward_tensors_come_from_the_parameter_block);
  suite_add_tcase(s, t);
  return tu_run_suite(s);
}
