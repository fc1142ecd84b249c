/*
** test_version.c -- what a binding checks at load time: the library's version
** matches the header, the struct sizes and member offsets it reports are the
** compiler's, and the mode and dtype names end with NULL.
*/
#include <stddef.h>
#include <string.h>

#include "sfa.h"
#include "testutil.h"

START_TEST(version_matches_the_header) {
  ck_assert_str_eq(sfa_version(), SFA_VERSION_STRING);
  ck_assert_int_eq(sfa_version_number(), SFA_VERSION_NUMBER);
  ck_assert_int_eq(SFA_VERSION_NUMBER,
                   SFA_VERSION_MAJOR * 10000 + SFA_VERSION_MINOR * 100 + SFA_VERSION_PATCH);
}
END_TEST

START_TEST(abi_sizes_are_the_compilers) {
  ck_assert_uint_eq(sfa_abi_size(SFA_ABI_TENSOR), sizeof(sfa_tensor));
  ck_assert_uint_eq(sfa_abi_size(SFA_ABI_PARAMS), sizeof(sfa_attention_params));
  ck_assert_uint_eq(sfa_abi_size(SFA_ABI_EXTRAS), sizeof(sfa_extras));
  ck_assert_uint_eq(sfa_abi_size(SFA_ABI_OPTIONS), sizeof(sfa_options));
  ck_assert_uint_eq(sfa_abi_size(SFA_ABI_KERNEL_SPEC), sizeof(sfa_kernel_spec));
  ck_assert_uint_eq(sfa_abi_size(SFA_ABI_HOST_EXTRAS), sizeof(sfa_host_extras));
  ck_assert_uint_eq(sfa_abi_size(SFA_ABI_KV_CACHE), sizeof(sfa_kv_cache));
  ck_assert_uint_eq(sfa_abi_size((sfa_abi_struct)99), 0);
  ck_assert_uint_eq(sfa_abi_size((sfa_abi_struct)-1), 0);
}
END_TEST

START_TEST(abi_offsets_are_the_compilers) {
  ck_assert_int_eq(sfa_abi_offset(SFA_ABI_TENSOR, "strides"), (long)offsetof(sfa_tensor, strides));
  ck_assert_int_eq(sfa_abi_offset(SFA_ABI_PARAMS, "window_right"),
                   (long)offsetof(sfa_attention_params, window_right));
  ck_assert_int_eq(sfa_abi_offset(SFA_ABI_EXTRAS, "mask"), (long)offsetof(sfa_extras, mask));
  ck_assert_int_eq(sfa_abi_offset(SFA_ABI_OPTIONS, "mma"), (long)offsetof(sfa_options, mma));
  ck_assert_int_eq(sfa_abi_offset(SFA_ABI_KERNEL_SPEC, "flags"),
                   (long)offsetof(sfa_kernel_spec, flags));
  ck_assert_int_eq(sfa_abi_offset(SFA_ABI_KERNEL_SPEC, "mma"),
                   (long)offsetof(sfa_kernel_spec, mma));
  ck_assert_int_eq(sfa_abi_offset(SFA_ABI_HOST_EXTRAS, "mask_batches"),
                   (long)offsetof(sfa_host_extras, mask_batches));
  ck_assert_int_eq(sfa_abi_offset(SFA_ABI_KV_CACHE, "seqused"),
                   (long)offsetof(sfa_kv_cache, seqused));
  ck_assert_int_eq(sfa_abi_offset(SFA_ABI_TENSOR, "no_such_member"), -1);
  ck_assert_int_eq(sfa_abi_offset(SFA_ABI_TENSOR, NULL), -1);
  ck_assert_int_eq(sfa_abi_offset((sfa_abi_struct)99, "data"), -1);
}
END_TEST

START_TEST(mode_and_dtype_names_end_with_null) {
  static const char *const modes[] = {"dense", "qk_drop", "hash", "window"};
  int n = 0;
  while (sfa_mode_name(n)) {
    ck_assert_int_lt(n, 4);
    ck_assert_str_eq(sfa_mode_name(n), modes[n]);
    n++;
  }
  ck_assert_int_eq(n, 4);
  ck_assert_ptr_null(sfa_mode_name(-1));
  ck_assert_str_eq(sfa_dtype_name(SFA_DTYPE_BF16), "bf16");
  ck_assert_str_eq(sfa_dtype_name(SFA_DTYPE_UINT8), "uint8");
  ck_assert_ptr_null(sfa_dtype_name(SFA_DTYPE_UINT8 + 1));
  ck_assert_ptr_null(sfa_dtype_name(-1));
}
END_TEST

int main(void) {
  Suite *s = suite_create("version");
  TCase *t = tcase_create("version");
  tcase_add_test(t, version_matches_the_header);
  tcase_add_test(t, abi_sizes_are_the_compilers);
  tcase_add_test(t, abi_offsets_are_the_compilers);
  tcase_add_test(t, mode_and_dtype_names_end_with_null);
  suite_add_tcase(s, t);
  return tu_run_suite(s);
}
