/*
** test_half.c -- host float <-> fp16/bf16 conversions (sfa_float_to_half,
** sfa_half_to_float): exact values, round to nearest even, specials.
*/
#include <math.h>

#include "sfa.h"
#include "testutil.h"

START_TEST(exact_values_round_trip) {
  const float v[] = {0.f, 1.f, -2.f, 0.5f, 1024.f, -0.375f, 61440.f}; /* exact in both */
  for (unsigned i = 0; i < sizeof v / sizeof v[0]; ++i) {
    ck_assert_float_eq(sfa_half_to_float(SFA_DTYPE_FP16, sfa_float_to_half(SFA_DTYPE_FP16, v[i])), v[i]);
    ck_assert_float_eq(sfa_half_to_float(SFA_DTYPE_BF16, sfa_float_to_half(SFA_DTYPE_BF16, v[i])), v[i]);
  }
  ck_assert_uint_eq(sfa_float_to_half(SFA_DTYPE_FP16, 65504.f), 0x7bff); /* fp16 max */
  ck_assert_uint_eq(sfa_float_to_half(SFA_DTYPE_FP16, 1.f), 0x3c00);
  ck_assert_uint_eq(sfa_float_to_half(SFA_DTYPE_BF16, 1.f), 0x3f80);
}
END_TEST

START_TEST(rounds_to_nearest_even) {
  /* 1 + 2^-11 lies halfway between fp16 1 and 1 + 2^-10: ties go to even (1). */
  ck_assert_uint_eq(sfa_float_to_half(SFA_DTYPE_FP16, 1.f + ldexpf(1.f, -11)), 0x3c00);
  ck_assert_uint_eq(sfa_float_to_half(SFA_DTYPE_FP16, 1.f + 3 * ldexpf(1.f, -11)), 0x3c02);
  ck_assert_uint_eq(sfa_float_to_half(SFA_DTYPE_BF16, 1.f + ldexpf(1.f, -8)), 0x3f80);
  ck_assert_uint_eq(sfa_float_to_half(SFA_DTYPE_BF16, 1.f + 3 * ldexpf(1.f, -8)), 0x3f82);
  /* fp16 subnormal */
  ck_assert_float_eq(sfa_half_to_float(SFA_DTYPE_FP16, sfa_float_to_half(SFA_DTYPE_FP16, ldexpf(1.f, -24))),
                     ldexpf(1.f, -24));
}
END_TEST

START_TEST(specials_keep_their_class) {
  ck_assert(isnan(sfa_half_to_float(SFA_DTYPE_FP16, sfa_float_to_half(SFA_DTYPE_FP16, NAN))));
  ck_assert(isnan(sfa_half_to_float(SFA_DTYPE_BF16, sfa_float_to_half(SFA_DTYPE_BF16, NAN))));
  ck_assert(isinf(sfa_half_to_float(SFA_DTYPE_FP16, sfa_float_to_half(SFA_DTYPE_FP16, 1e6f))));
  ck_assert(isinf(sfa_half_to_float(SFA_DTYPE_BF16, sfa_float_to_half(SFA_DTYPE_BF16, -INFINITY))));
  ck_assert(signbit(sfa_half_to_float(SFA_DTYPE_FP16, sfa_float_to_half(SFA_DTYPE_FP16, -0.f))));
}
END_TEST

int main(void) {
  Suite *s = suite_create("half");
  TCase *t = tcase_create("half");
  tcase_add_test(t, exact_values_round_trip);
  tcase_add_test(t, rounds_to_nearest_even);
  tcase_add_test(t, specials_keep_their_class);
  suite_add_tcase(s, t);
  return tu_run_suite(s);
}
