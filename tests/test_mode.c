/*
** test_mode.c -- the mode table (gen/mode.h): one row per sfa_mode in enum
** order, with the names sfa_mode_name gives; rows that agree with
** themselves (what a mode needs it reads, the flags it takes are problem
** flags, an index contract where it reads index arrays); a template per row,
** whose backward agrees with the row's query metadata and plan kernel; the
** lists that messages are made of; the flags of a call; and the members of
** sfa_extras at their places in sfa_extras and sfa_host_extras.
*/
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "sfa.h"
#include "gen/gen_internal.h"
#include "gen/mode.h"
#include "testutil.h"

START_TEST(rows_are_the_modes_in_enum_order) {
  size_t n = 0;
  const sfa__mode *t = sfa__mode_table(&n);
  ck_assert_uint_eq(n, 4);
  for (size_t i = 0; i < n; i++) {
    ck_assert_int_eq(t[i].mode, (int)i);
    ck_assert_ptr_eq(sfa__mode_find((sfa_mode)i), &t[i]);
    ck_assert_str_eq(sfa_mode_name((int)i), t[i].name);
    ck_assert_str_eq(sfa__mode_token((sfa_mode)i), t[i].token);
    ck_assert_ptr_eq(sfa__mode_named(t[i].name), &t[i]);
    ck_assert_ptr_eq(sfa__mode_named(t[i].token), &t[i]);
    for (size_t j = 0; j < i; j++) {
      ck_assert_str_ne(t[i].name, t[j].name);
      ck_assert_str_ne(t[i].token, t[j].token);
    }
  }
  ck_assert_ptr_null(sfa__mode_find((sfa_mode)n));
  ck_assert_ptr_null(sfa__mode_find((sfa_mode)-1));
  ck_assert_ptr_null(sfa_mode_name((int)n));
  ck_assert_ptr_null(sfa__mode_named("qk-drop"));
  ck_assert_ptr_null(sfa__mode_named(NULL));
  ck_assert_str_eq(sfa_mode_name(SFA_MODE_QK_DROP), "qk_drop");
  ck_assert_str_eq(sfa__mode_token(SFA_MODE_QK_DROP), "qkdrop");
}
END_TEST

START_TEST(rows_agree_with_themselves) {
  const unsigned problem_flags = SFA_FEAT_CAUSAL | SFA_FEAT_BIAS | SFA_FEAT_MASK |
                                 SFA_FEAT_STRICT | SFA_FEAT_SOFTCAP | SFA_FEAT_ALIBI |
                                 SFA_FEAT_VARLEN;
  const unsigned index = SFA__EX_Q_IDX | SFA__EX_K_IDX;
  size_t n = 0, ne = 0;
  const sfa__mode *t = sfa__mode_table(&n);
  const sfa__extra *e = sfa__extras(&ne);
  for (size_t i = 0; i < n; i++) {
    const sfa__mode *m = &t[i];
    ck_assert_msg((m->needs & ~m->reads) == 0, "%s needs what it does not read", m->name);
    ck_assert_msg((m->flags & ~problem_flags) == 0, "%s takes a flag that is no problem flag",
                  m->name);
    ck_assert_msg(m->allowed != NULL, "%s has no reference rule", m->name);
    /* index arrays come with their contract and the tuner's synthetic ones */
    const int idx = (m->reads & index) != 0;
    ck_assert_int_eq(idx, m->check_index_row != NULL);
    ck_assert_int_eq(idx, m->tune_indices != NULL);
    ck_assert_msg(!m->causal_by_index || (idx && !(m->flags & SFA_FEAT_CAUSAL)),
                  "%s: causality by index means index arrays and no causal flag", m->name);
    ck_assert_msg(!(m->flags & SFA_FEAT_STRICT) || m->causal_by_index,
                  "%s: strict causality is q_idx > k_idx: only with causality by index", m->name);
    ck_assert_msg((m->flags & SFA_FEAT_SOFTCAP) != 0, "%s: softcapping is mode-independent",
                  m->name);
    ck_assert(m->qmeta_ints >= 0 && m->qmeta_ints <= 2);
    /* a member's flag is the mode's where it reads the member */
    for (size_t k = 0; k < ne; k++)
      if (m->reads & e[k].bit) ck_assert((e[k].feat & ~m->flags) == 0);
    /* the utility kernels it names are utility passes */
    for (int p = 0; p < 32; p++)
      if ((m->utils >> p) & 1u) ck_assert(sfa__pass_is_util((sfa_pass)p));
  }
}
END_TEST

/* Each row has its template, and the backward of each mode (both mma kinds)
** renders: bwd.lt asserts that its shared memory (with its own count of the
** query metadata) is the spec's, and that its plan kernel is the row's. */
START_TEST(every_mode_has_its_template_and_they_agree) {
  size_t n = 0;
  const sfa__mode *t = sfa__mode_table(&n);
  for (size_t i = 0; i < n; i++) {
    char name[64], err[1024] = "";
    snprintf(name, sizeof name, "mode_%s.lt", t[i].name);
    ck_assert_msg(sfa__embedded_find(name) != NULL, "%s is missing", name);
    for (int wg = 0; wg < 4; wg++) { /* 2, 3: packed sequences (every mode takes them) */
      sfa_kernel_spec s = {SFA_PASS_BWD, t[i].mode, SFA_DTYPE_BF16, 64, 0, 0, 0, 0, 90,
                           wg >= 2 ? SFA_FEAT_VARLEN : 0u, SFA_SPEC_MMA_SYNC};
      ck_assert(t[i].flags & SFA_FEAT_VARLEN);
      ck_assert_int_eq(sfa__spec_default_mma(&s, wg & 1, err, sizeof err), SFA_OK);
      ck_assert_int_eq(s.mma, wg & 1 ? SFA_SPEC_MMA_WGMMA : SFA_SPEC_MMA_SYNC);
      ck_assert_int_eq(sfa__bwd_plan(&s), t[i].bwd_plan);
      char *src = NULL;
      ck_assert_msg(sfa_generate(&s, &src, err, sizeof err) == SFA_OK, "%s: %s", t[i].name, err);
      sfa_free(src);
    }
    /* a mode that serves pass decode renders its decode kernel (its
    ** template's decode hooks); the others are refused by name */
    sfa_kernel_spec d = {SFA_PASS_DECODE, t[i].mode, SFA_DTYPE_BF16, 64, 0, 0, 0, 0, 90, 0,
                         SFA_SPEC_MMA_SYNC};
    sfa_status st = sfa_spec_default(&d, err, sizeof err);
    if (!t[i].decode) {
      ck_assert_int_eq(st, SFA_ERR_UNSUPPORTED);
      ck_assert_msg(strstr(err, "has no decode kernel"), "%s", err);
      continue;
    }
    ck_assert_msg(st == SFA_OK, "%s: %s", t[i].name, err);
    char *src = NULL;
    ck_assert_msg(sfa_generate(&d, &src, err, sizeof err) == SFA_OK, "%s decode: %s", t[i].name,
                  err);
    sfa_free(src);
  }
}
END_TEST

START_TEST(lists_for_messages) {
  char buf[128];
  ck_assert_int_eq(sfa__mode_list(buf, sizeof buf, 0, " or ", NULL, 0), 4);
  ck_assert_str_eq(buf, "dense, qk_drop, hash or window");
  sfa__mode_list(buf, sizeof buf, 1, " or ", NULL, 0);
  ck_assert_str_eq(buf, "dense, qkdrop, hash or window");
  ck_assert_int_eq(sfa__mode_list(buf, sizeof buf, 0, " and ", sfa__mode_reads_all,
                                  SFA__EX_Q_IDX), 2);
  ck_assert_str_eq(buf, "qk_drop and hash");
  ck_assert_int_eq(sfa__mode_list(buf, sizeof buf, 0, " and ", sfa__mode_has_indices, 0), 2);
  ck_assert_str_eq(buf, "qk_drop and hash");
  ck_assert_int_eq(sfa__mode_list(buf, sizeof buf, 0, " and ", sfa__mode_takes_any,
                                  SFA_FEAT_MASK), 1);
  ck_assert_str_eq(buf, "window");
  ck_assert_int_eq(sfa__mode_list(NULL, 0, 0, "", sfa__mode_takes_any, SFA_FEAT_CAUSAL), 2);
  sfa__mode_list(buf, 12, 0, " or ", NULL, 0); /* cut, still a string */
  ck_assert_uint_eq(strlen(buf), 11);
}
END_TEST

/* A call's flags: causal where the mode takes it, a member's flag where the
** member is given. */
START_TEST(call_flags) {
  sfa_attention_params p;
  sfa_params_init(&p);
  sfa_tensor t;
  memset(&t, 0, sizeof t);
  sfa_extras ex = {0};
  p.causal = 1;
  ck_assert_uint_eq(sfa__mode_call_flags(sfa__mode_find(SFA_MODE_DENSE), &p, NULL),
                    SFA_FEAT_CAUSAL);
  ck_assert_uint_eq(sfa__mode_call_flags(sfa__mode_find(SFA_MODE_HASH), &p, NULL), 0);
  /* packed sequences: every mode's kernel takes them */
  sfa_extras vx = {0};
  vx.cu_seqlens_q = vx.cu_seqlens_k = &t;
  ck_assert_uint_eq(sfa__mode_call_flags(sfa__mode_find(SFA_MODE_HASH), &p, &vx),
                    SFA_FEAT_VARLEN);
  ck_assert_uint_eq(sfa__mode_call_flags(sfa__mode_find(SFA_MODE_DENSE), &p, &vx),
                    SFA_FEAT_CAUSAL | SFA_FEAT_VARLEN);
  ex.mask = &t;
  ck_assert_uint_eq(sfa__mode_call_flags(sfa__mode_find(SFA_MODE_WINDOW), &p, &ex),
                    SFA_FEAT_CAUSAL | SFA_FEAT_MASK);
  p.causal = 0, ex.bias = &t, ex.mask = NULL;
  ck_assert_uint_eq(sfa__mode_call_flags(sfa__mode_find(SFA_MODE_WINDOW), &p, &ex),
                    SFA_FEAT_BIAS);
  /* the score options: softcap where params.softcap > 0, alibi where the slopes are given,
     strict where params.strict_causal is set */
  p.softcap = 30.f, ex.bias = NULL, ex.alibi_slopes = &t;
  ck_assert_uint_eq(sfa__mode_call_flags(sfa__mode_find(SFA_MODE_WINDOW), &p, &ex),
                    SFA_FEAT_SOFTCAP | SFA_FEAT_ALIBI);
  ck_assert_uint_eq(sfa__mode_call_flags(sfa__mode_find(SFA_MODE_DENSE), &p, &ex),
                    SFA_FEAT_SOFTCAP | SFA_FEAT_ALIBI);
  p.softcap = 0.f, p.strict_causal = 1;
  ck_assert_uint_eq(sfa__mode_call_flags(sfa__mode_find(SFA_MODE_HASH), &p, NULL),
                    SFA_FEAT_STRICT);
  ck_assert_uint_eq(sfa__mode_call_flags(sfa__mode_find(SFA_MODE_QK_DROP), &p, NULL),
                    SFA_FEAT_STRICT);
}
END_TEST

START_TEST(extras_members_in_struct_order) {
  size_t ne = 0;
  const sfa__extra *e = sfa__extras(&ne);
  ck_assert_uint_eq(ne, 9);
  static const char *const names[] = {"q_idx", "k_idx", "q_hash", "k_hash", "bias", "mask",
                                       "alibi_slopes", "cu_seqlens_q", "cu_seqlens_k"};
  sfa_tensor t[9];
  sfa_extras ex = {&t[0], &t[1], &t[2], &t[3], &t[4], &t[5], &t[6], &t[7], &t[8], 0};
  const int32_t a[4] = {0};
  const float f[2] = {0};
  const uint8_t u[1] = {0};
  sfa_host_extras hx = {.q_idx = &a[0], .k_idx = &a[1], .q_hash = &a[2], .k_hash = &a[3],
                        .bias = f, .mask = u, .alibi_slopes = &f[1]};
  /* the packed sequences' arrays have no host member: the references take
  ** one sequence at a time */
  const void *host[9] = {&a[0], &a[1], &a[2], &a[3], f, u, &f[1], NULL, NULL};
  for (size_t i = 0; i < ne; i++) {
    ck_assert_str_eq(e[i].name, names[i]);
    ck_assert_uint_eq(e[i].bit, 1u << i);
    ck_assert_ptr_eq(sfa__extra_tensor(&e[i], &ex), &t[i]);
    ck_assert_ptr_eq(sfa__extra_host(&e[i], &hx), host[i]);
    ck_assert_ptr_null(sfa__extra_tensor(&e[i], NULL));
    ck_assert_ptr_null(sfa__extra_host(&e[i], NULL));
  }
}
END_TEST

int main(void) {
  Suite *s = suite_create("mode");
  TCase *tc = tcase_create("mode");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, rows_are_the_modes_in_enum_order);
  tcase_add_test(tc, rows_agree_with_themselves);
  tcase_add_test(tc, every_mode_has_its_template_and_they_agree);
  tcase_add_test(tc, lists_for_messages);
  tcase_add_test(tc, call_flags);
  tcase_add_test(tc, extras_members_in_struct_order);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
