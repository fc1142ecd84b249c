/*
** test_abi.c -- the kernel ABI comes from one field list
** (runtime/kernel_abi_fields.h): the generated CUDA of every pass and every
** utility kernel declares each parameter block with the fields in the list's
** order and types and asserts every field's offset, the size and the
** alignment as the C compiler laid out the C struct; a list with two 8-byte
** fields swapped moves both the C offsets and the emitted struct and asserts
** alike; NVRTC rejects a source whose struct and asserted offsets disagree;
** and templates read the shared constants from ABI.const. No GPU needed.
*/
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sfa.h"
#include "gen/gen_internal.h"
#include "runtime/kernel_abi.h"
#include "runtime/nvrtc.h"
#include "runtime/util.h"
#include "testutil.h"

/* ------------------------------------------------------------ the C side, expanded here */

typedef struct want_field {
  const char *name, *type; /* type: the generated CUDA's spelling */
  size_t offset;
} want_field;

typedef struct want_struct {
  const char *name; /* in the generated CUDA */
  size_t size, align;
  const want_field *fields;
  size_t nfields;
} want_struct;

#define WANT_FIELD_(c_name, type, name, doc) {#name, SFA_ABI_DEVTYPE_##type, offsetof(c_name, name)},
#define WANT_FIELDS_(c_name, dev_name, LIST) \
  static const want_field want_##dev_name[] = {LIST(WANT_FIELD_, c_name)};
SFA_ABI_STRUCTS(WANT_FIELDS_)
#define WANT_STRUCT_(c_name, dev_name, LIST)                              \
  {#dev_name, sizeof(c_name), _Alignof(c_name), want_##dev_name,          \
   sizeof want_##dev_name / sizeof want_##dev_name[0]},
static const want_struct wants[] = {SFA_ABI_STRUCTS(WANT_STRUCT_)};
#define NWANTS (int)(sizeof wants / sizeof wants[0])

static const want_struct *want_of(const char *name) {
  for (int i = 0; i < NWANTS; i++)
    if (strcmp(wants[i].name, name) == 0) return &wants[i];
  ck_abort_msg("no struct %s in SFA_ABI_STRUCTS", name);
  return NULL;
}

/* ------------------------------------------------------------ reading the rendered source */

/* The fields of `struct name { ... };` in src, in order: "TYPE a, b;  / * doc * /" lines. */
static size_t parse_struct(const char *src, const char *name, want_field *out, size_t max,
                           char types[][16]) {
  char head[128];
  snprintf(head, sizeof head, "struct %s {\n", name);
  const char *p = strstr(src, head);
  ck_assert_msg(p != NULL, "no '%s' in the source", head);
  ck_assert_msg(strstr(p + 1, head) == NULL, "struct %s is declared twice", name);
  p += strlen(head);
  const char *end = strstr(p, "\n};\n");
  ck_assert_ptr_nonnull(end);
  size_t n = 0;
  while (p < end) {
    const char *eol = strchr(p, '\n');
    if (!eol || eol > end) eol = end;
    char line[512];
    size_t len = (size_t)(eol - p);
    ck_assert_uint_lt(len, sizeof line);
    memcpy(line, p, len);
    line[len] = '\0';
    char *c = strstr(line, "/*");
    if (c) *c = '\0';
    char *semi = strchr(line, ';');
    ck_assert_msg(semi != NULL, "struct %s: line '%s' is no declaration", name, line);
    *semi = '\0';
    char type[16];
    int used = 0;
    ck_assert_int_eq(sscanf(line, " %15s %n", type, &used), 1);
    for (char *tok = strtok(line + used, ", "); tok; tok = strtok(NULL, ", ")) {
      ck_assert_uint_lt(n, max);
      snprintf(types[n], 16, "%s", type);
      out[n].type = types[n];
      out[n].name = strdup(tok);
      out[n].offset = 0;
      n++;
    }
    p = eol + 1;
  }
  return n;
}

/* The number after "static_assert(SFA_OFFSETOF(S, F) == ", or -1 if absent. */
static long asserted_offset(const char *src, const char *s, const char *f) {
  char key[160];
  snprintf(key, sizeof key, "static_assert(SFA_OFFSETOF(%s, %s) == ", s, f);
  const char *p = strstr(src, key);
  if (!p) return -1;
  ck_assert_msg(strstr(p + 1, key) == NULL, "%s.%s: asserted twice", s, f);
  return strtol(p + strlen(key), NULL, 10);
}

/* The emitted struct w.name of src has w's fields, types and order, and
** asserts w's offsets, size and alignment (and no other offsets). */
static void check_emitted(const char *src, const want_struct *w, const char *what) {
  want_field got[256];
  char types[256][16];
  size_t n = parse_struct(src, w->name, got, 256, types);
  ck_assert_msg(n == w->nfields, "%s: struct %s has %zu fields; the list %zu", what, w->name, n,
                w->nfields);
  for (size_t i = 0; i < n; i++) {
    ck_assert_msg(strcmp(got[i].name, w->fields[i].name) == 0,
                  "%s: %s field %zu is %s; the list says %s", what, w->name, i, got[i].name,
                  w->fields[i].name);
    ck_assert_msg(strcmp(got[i].type, w->fields[i].type) == 0, "%s: %s.%s is %s, not %s", what,
                  w->name, got[i].name, got[i].type, w->fields[i].type);
    long off = asserted_offset(src, w->name, w->fields[i].name);
    ck_assert_msg(off == (long)w->fields[i].offset,
                  "%s: %s.%s: asserted offset %ld, C offsetof %zu", what, w->name,
                  w->fields[i].name, off, w->fields[i].offset);
    free((void *)got[i].name);
  }
  char key[160];
  snprintf(key, sizeof key, "static_assert(SFA_OFFSETOF(%s, ", w->name);
  ck_assert_int_eq(tu_count_substr(src, key), (int)w->nfields);
  snprintf(key, sizeof key, "static_assert(sizeof(%s) == %zu && alignof(%s) == %zu,", w->name,
           w->size, w->name, w->align);
  ck_assert_msg(strstr(src, key) != NULL, "%s: no '%s'", what, key);
}

/* ------------------------------------------------------------ the real blocks */

static const sfa_pass passes[] = {SFA_PASS_FWD, SFA_PASS_BWD, SFA_PASS_BWD_DQ};

/* w up to (not including) its field `upto`, with the size up to it: what a
** variant that leaves out the tail from there declares (fixed-length: from
** cu_q, SFA_ABI_VARLEN_ARGS; varlen without a bias or mask: from kmax,
** SFA_ABI_VARLEN_COLS_ARGS). */
static want_struct declared_before(const want_struct *w, const char *upto, size_t tail_offset) {
  want_struct f = *w;
  for (size_t i = 0; i < w->nfields; i++)
    if (strcmp(w->fields[i].name, upto) == 0) f.nfields = i;
  ck_assert_uint_lt(f.nfields, w->nfields);
  f.size = tail_offset;
  return f;
}

START_TEST(every_pass_emits_both_attention_blocks_with_the_c_offsets) {
  /* wg 0, 1: fixed-length (no tail); 2, 3: varlen, which declares cu_q, cu_k;
  ** 4, 5: varlen window with a bias and a mask, which also declares kmax */
  for (int wg = 0; wg < 6; wg++) {
    const int tier = wg / 2;
    const unsigned flags = (tier >= 1 ? SFA_FEAT_VARLEN : 0u) |
                           (tier == 2 ? SFA_FEAT_BIAS | SFA_FEAT_MASK : 0u);
    sfa_kernel_spec s = {passes[_i], tier == 2 ? SFA_MODE_WINDOW : SFA_MODE_HASH,
                         SFA_DTYPE_BF16, 128, 0, 0, 0, 0, 90, flags, SFA_SPEC_MMA_SYNC};
    if ((wg & 1) && passes[_i] == SFA_PASS_BWD_DQ) continue;
    char err[4096], name[SFA__NAME_MAX];
    ck_assert_int_eq(sfa__spec_default_mma(&s, wg & 1, err, sizeof err), SFA_OK);
    ck_assert_int_eq(sfa_spec_name(&s, name, sizeof name), SFA_OK);
    char *src = NULL;
    ck_assert_msg(sfa_generate(&s, &src, err, sizeof err) == SFA_OK, "%s: %s", name, err);
    if (tier == 2) {
      check_emitted(src, want_of("sfa_fwd_args"), name);
      check_emitted(src, want_of("sfa_bwd_args"), name);
    } else {
      const char *upto = tier == 1 ? "kmax" : "cu_q";
      const want_struct f = declared_before(
          want_of("sfa_fwd_args"), upto,
          tier == 1 ? offsetof(sfa_fwd_args, kmax) : offsetof(sfa_fwd_args, cu_q));
      const want_struct b = declared_before(
          want_of("sfa_bwd_args"), upto,
          tier == 1 ? offsetof(sfa_bwd_args, kmax) : offsetof(sfa_bwd_args, cu_q));
      ck_assert_uint_eq(f.nfields + (tier == 1 ? 2 : 4), want_of("sfa_fwd_args")->nfields);
      ck_assert_uint_eq(b.nfields + (tier == 1 ? 2 : 4), want_of("sfa_bwd_args")->nfields);
      check_emitted(src, &f, name);
      check_emitted(src, &b, name);
      ck_assert_ptr_null(strstr(src, "a.kmax"));
      ck_assert_ptr_null(strstr(src, "int kmax;"));
      if (tier == 0) ck_assert_ptr_null(strstr(src, "cu_q"));
    }
    sfa_free(src);
  }
}
END_TEST

typedef struct util_variant {
  sfa_pass pass;
  sfa_dtype dtype;
  const char *block;
} util_variant;

static const util_variant utils[] = {
    {SFA_PASS_HASH_SORT, SFA_DTYPE_INT32, "sfa_hash_sort_args"},
    {SFA_PASS_PERMUTE, SFA_DTYPE_UINT8, "sfa_permute_args"},
    {SFA_PASS_TOPK, SFA_DTYPE_FP32, "sfa_topk_args"},
    {SFA_PASS_BWD_PRE, SFA_DTYPE_BF16, "sfa_bwd_pre_args"},
    {SFA_PASS_CONVERT, SFA_DTYPE_FP16, "sfa_convert_args"},
    {SFA_PASS_MERGE, SFA_DTYPE_FP32, "sfa_merge_args"},
};

START_TEST(every_utility_kernel_emits_its_block_with_the_c_offsets) {
  const util_variant *u = &utils[_i];
  char err[4096];
  char *src = NULL;
  sfa_kernel_spec spec;
  ck_assert_msg(sfa__util_spec(u->pass, u->dtype, 80, &spec, err, sizeof err) == SFA_OK, "%s",
                err);
  ck_assert_msg(sfa_generate(&spec, &src, err, sizeof err) == SFA_OK, "%s", err);
  check_emitted(src, want_of(u->block), u->block);
  /* Only its own block: the attention kernels' are not in a utility source. */
  ck_assert_ptr_null(strstr(src, "struct sfa_fwd_args"));
  sfa_free(src);
}
END_TEST

START_TEST(the_abi_table_describes_the_c_structs) {
  ck_assert_uint_eq(sfa__abi_nstructs, (size_t)NWANTS);
  for (int i = 0; i < NWANTS; i++) {
    const sfa__abi_struct *st = &sfa__abi_structs[i];
    const want_struct *w = &wants[i];
    ck_assert_str_eq(st->name, w->name);
    ck_assert_uint_eq(st->size, w->size);
    ck_assert_uint_eq(st->align, w->align);
    ck_assert_uint_eq(st->nfields, w->nfields);
    size_t at = 0;
    for (size_t j = 0; j < st->nfields; j++) {
      ck_assert_str_eq(st->fields[j].name, w->fields[j].name);
      ck_assert_uint_eq(st->fields[j].offset, w->fields[j].offset);
      ck_assert_msg(st->fields[j].offset == at, "%s.%s: padding before it", st->name,
                    st->fields[j].name);
      at += st->fields[j].size;
    }
    ck_assert_uint_eq(at, st->size);
  }
  ck_assert_str_eq(sfa__abi_structs[0].c_name, "sfa_fwd_args");
  ck_assert_str_eq(sfa__abi_structs[2].c_name, "sfa_dec_args");
  ck_assert_str_eq(sfa__abi_structs[3].c_name, "sfa__hash_sort_args");
  ck_assert_str_eq(sfa__abi_structs[0].fields[0].ctype, "uint64_t");
}
END_TEST

/* ------------------------------------------------------------ a list with two fields swapped */

#define T_LIST(F, X)          \
  F(X, u64, a, "first")       \
  F(X, u64, b, "second")      \
  F(X, i32, n, "counts")      \
  F(X, i32, m, "")
#define T_SWAPPED(F, X)       \
  F(X, u64, b, "second")      \
  F(X, u64, a, "first")       \
  F(X, i32, n, "counts")      \
  F(X, i32, m, "")
SFA_ABI_DEFINE(t_args, T_LIST);
SFA_ABI_DEFINE(t_swapped, T_SWAPPED);
static const sfa__abi_field t_fields[] = {SFA_ABI_FIELDS(t_args, T_LIST)};
static const sfa__abi_field t_swapped_fields[] = {SFA_ABI_FIELDS(t_swapped, T_SWAPPED)};

/* Renders a translation unit with struct t_args from the table entry st. */
static sfa_status render_t(const sfa__abi_struct *st, char **src, char *err, size_t errlen) {
  static const sfa__template extra[] = {
      {"t.lt",
       "typedef unsigned long long u64;\ntypedef long long i64;\n"
       "{% import(\"abi.lt\") %}\n{% abi_struct(\"t_args\") %}\n"
       "extern \"C\" __global__ void t_kernel(const t_args p, int *out) {\n"
       "  out[0] = (int)(p.a - p.b) + p.n + p.m;\n}\n"},
      {NULL, NULL}};
  return sfa__render_with_abi(st, 1, extra, "t.lt", NULL, src, err, errlen);
}

static sfa__abi_struct t_struct(const sfa__abi_field *fields, size_t size, size_t align) {
  sfa__abi_struct st = {"t_args", "t_args", size, align, fields, 4};
  return st;
}

START_TEST(swapping_two_fields_in_the_list_moves_both_sides) {
  /* C: the list's order is the struct's. */
  ck_assert_uint_eq(offsetof(t_args, a), 0);
  ck_assert_uint_eq(offsetof(t_args, b), 8);
  ck_assert_uint_eq(offsetof(t_swapped, b), 0);
  ck_assert_uint_eq(offsetof(t_swapped, a), 8);
  ck_assert_uint_eq(sizeof(t_args), sizeof(t_swapped));

  /* CUDA: the emitted struct and its asserts follow the same list. */
  const sfa__abi_struct lists[2] = {t_struct(t_fields, sizeof(t_args), _Alignof(t_args)),
                                    t_struct(t_swapped_fields, sizeof(t_swapped),
                                             _Alignof(t_swapped))};
  const want_field plain[] = {{"a", "u64", 0}, {"b", "u64", 8}, {"n", "int", 16}, {"m", "int", 20}};
  const want_field swapped[] = {{"b", "u64", 0}, {"a", "u64", 8}, {"n", "int", 16}, {"m", "int", 20}};
  const want_struct w[2] = {{"t_args", 24, 8, plain, 4}, {"t_args", 24, 8, swapped, 4}};
  for (int i = 0; i < 2; i++) {
    char err[4096];
    char *src = NULL;
    ck_assert_msg(render_t(&lists[i], &src, err, sizeof err) == SFA_OK, "%s", err);
    check_emitted(src, &w[i], i ? "swapped" : "list");
    /* A field of the same type without a doc of its own shares the line. */
    ck_assert_ptr_nonnull(strstr(src, "  int n, m;  /* counts */\n"));
    ck_assert_ptr_nonnull(strstr(src, i ? "  u64 b;  /* second */\n  u64 a;  /* first */\n"
                                        : "  u64 a;  /* first */\n  u64 b;  /* second */\n"));
    sfa_free(src);
  }
}
END_TEST

/* NVRTC compiles t.lt as rendered from st; returns its status, the log in log. */
static sfa_status compile_t(const sfa__abi_struct *st, char *log, size_t loglen) {
  char *src = NULL;
  ck_assert_msg(render_t(st, &src, log, loglen) == SFA_OK, "%s", log);
  sfa_kernel_spec target = {0};
  target.arch = 80;
  void *cubin = NULL;
  size_t size = 0;
  char *full = NULL;
  sfa_status rc = sfa__nvrtc_compile("t_kernel", src, &target, &cubin, &size, &full, log, loglen);
  if (full) snprintf(log, loglen, "%s", full);
  sfa_free(full);
  sfa_free(cubin);
  sfa_free(src);
  return rc;
}

START_TEST(nvrtc_rejects_a_struct_whose_offsets_disagree_with_the_table) {
  char log[8192];
  const sfa__abi_struct good = t_struct(t_fields, sizeof(t_args), _Alignof(t_args));
  ck_assert_msg(compile_t(&good, log, sizeof log) == SFA_OK, "%s", log);
  const sfa__abi_struct swapped = t_struct(t_swapped_fields, sizeof(t_args), _Alignof(t_args));
  ck_assert_msg(compile_t(&swapped, log, sizeof log) == SFA_OK, "%s", log);

  /* The fields in the list's order, the offsets of the swapped C struct: what
  ** a device struct written by hand in the old order would meet. */
  sfa__abi_field lying[4];
  memcpy(lying, t_fields, sizeof lying);
  lying[0].offset = 8;
  lying[1].offset = 0;
  const sfa__abi_struct bad = t_struct(lying, sizeof(t_args), _Alignof(t_args));
  ck_assert_int_eq(compile_t(&bad, log, sizeof log), SFA_ERR_COMPILE);
  ck_assert_msg(strstr(log, "t_args.a") != NULL, "the log does not name t_args.a:\n%s", log);

  /* A size that disagrees fails too. */
  const sfa__abi_struct big = t_struct(t_fields, sizeof(t_args) + 8, _Alignof(t_args));
  ck_assert_int_eq(compile_t(&big, log, sizeof log), SFA_ERR_COMPILE);
  ck_assert_msg(strstr(log, "t_args: size") != NULL, "%s", log);
}
END_TEST

START_TEST(an_unknown_block_is_a_template_error) {
  static const sfa__template extra[] = {
      {"t.lt", "{% import(\"abi.lt\") %}\n{% abi_struct(\"sfa_no_such_args\") %}\n"},
      {NULL, NULL}};
  char err[4096];
  char *src = NULL;
  ck_assert_int_eq(sfa__render(extra, "t.lt", NULL, &src, err, sizeof err), SFA_ERR_GENERATOR);
  ck_assert_ptr_null(src);
  ck_assert_msg(strstr(err, "t.lt:2:") && strstr(err, "sfa_no_such_args"), "%s", err);
}
END_TEST

/* ------------------------------------------------------------ constants */

START_TEST(templates_read_the_shared_constants_from_abi_const) {
  static const sfa__template extra[] = {
      {"t.lt", "{{ ABI.const.SFA__BWD_PLAN_INTS }}"}, {NULL, NULL}};
  char err[4096], want[32];
  char *src = NULL;
  ck_assert_msg(sfa__render(extra, "t.lt", NULL, &src, err, sizeof err) == SFA_OK, "%s", err);
  snprintf(want, sizeof want, "%d", SFA__BWD_PLAN_INTS);
  ck_assert_str_eq(src, want);
  sfa_free(src);
  ck_assert_uint_eq(sfa__abi_nconsts, 5);
  ck_assert_str_eq(sfa__abi_consts[0].name, "SFA__BWD_PLAN_INTS");
  /* the decode kernel's bound on the splits it merges (registers per lane) */
  ck_assert_str_eq(sfa__abi_consts[1].name, "SFA__DECODE_MAX_SPLITS");
  ck_assert_int_eq(sfa__abi_consts[1].value, SFA__DECODE_MAX_SPLITS);
  /* sfa.h's dtype codes, which the merge kernel takes as launch arguments */
  ck_assert_str_eq(sfa__abi_consts[4].name, "SFA_DTYPE_FP32");
  ck_assert_int_eq(sfa__abi_consts[4].value, SFA_DTYPE_FP32);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("abi");
  TCase *tc = tcase_create("abi");
  tcase_set_timeout(tc, 300);
  tcase_add_loop_test(tc, every_pass_emits_both_attention_blocks_with_the_c_offsets, 0,
                      (int)(sizeof passes / sizeof passes[0]));
  tcase_add_loop_test(tc, every_utility_kernel_emits_its_block_with_the_c_offsets, 0,
                      (int)(sizeof utils / sizeof utils[0]));
  tcase_add_test(tc, the_abi_table_describes_the_c_structs);
  tcase_add_test(tc, swapping_two_fields_in_the_list_moves_both_sides);
  tcase_add_test(tc, nvrtc_rejects_a_struct_whose_offsets_disagree_with_the_table);
  tcase_add_test(tc, an_unknown_block_is_a_template_error);
  tcase_add_test(tc, templates_read_the_shared_constants_from_abi_const);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return tu_run_suite(suite()); }
