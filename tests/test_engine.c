/*
** test_engine.c -- the Lua template engine (gen/template.lua, the embedded
** copy) driven through sfa__render with in-memory templates: expression
** holes, statement and comment lines that vanish, functions with template
** bodies, include/import/capture, and errors that name file and line.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sfa.h"
#include "gen/gen_internal.h"
#include "testutil.h"

static char err[2048];

/* Renders main.lt = text (plus optional lib.lt) with the spec of a d128 kernel. */
static sfa_status render2(const char *text, const char *lib, char **out) {
  sfa_kernel_spec s = {SFA_PASS_FWD, SFA_MODE_DENSE, SFA_DTYPE_BF16, 128,
                       128, 64, 4, 2, 90, SFA_FEAT_CAUSAL, SFA_SPEC_MMA_SYNC};
  sfa__template t[] = {{"main.lt", text}, {"lib.lt", lib}, {NULL, NULL}};
  if (!lib) t[1].name = NULL;
  err[0] = '\0';
  return sfa__render(t, "main.lt", &s, out, err, sizeof err);
}

/* Renders and compares with want. */
static void renders(const char *text, const char *lib, const char *want) {
  char *out = NULL;
  sfa_status st = render2(text, lib, &out);
  ck_assert_msg(st == SFA_OK, "render failed: %s", err);
  ck_assert_msg(strcmp(out, want) == 0, "got\n[%s]\nwant\n[%s]", out, want);
  free(out);
}

/* Rendering fails with SFA_ERR_GENERATOR and a message containing needle. */
static void fails(const char *text, const char *lib, const char *needle) {
  char *out = (char *)1;
  sfa_status st = render2(text, lib, &out);
  ck_assert_msg(st == SFA_ERR_GENERATOR, "status %d (%s)", st, err);
  ck_assert_ptr_null(out);
  ck_assert_msg(strncmp(err, "template error: ", 16) == 0, "prefix: %s", err);
  ck_assert_msg(strstr(err, needle), "'%s' not in '%s'", needle, err);
}

START_TEST(plain_text) {
  renders("", NULL, "");
  renders("no holes here\n  at all\n", NULL, "no holes here\n  at all\n");
  renders("quotes \" and \\ backslashes \\n and %d\n", NULL,
          "quotes \" and \\ backslashes \\n and %d\n");
  renders("a { b } c }} %} #}\n", NULL, "a { b } c }} %} #}\n");
}
END_TEST

START_TEST(expressions) {
  renders("D={{ spec.head_dim }} M={{\tspec.block_m\n}}\n", NULL, "D=128 M=128\n");
  /* A tag opens only when a blank follows it: CUDA braces stay literal. */
  renders("int a[] = {{0}}; asm(\"{%0, %1}\"); {#x}\n", NULL,
          "int a[] = {{0}}; asm(\"{%0, %1}\"); {#x}\n");
  renders("{{ spec.name }}", NULL, "sfa_fwd_dense_causal_bf16_d128_m128n64_w4s2_sm90");
  renders("{{ spec.dtype }} {{ spec.pass }} {{ spec.mode }} sm{{ spec.arch }}", NULL,
          "bf16 fwd dense sm90");
  renders("{{ spec.causal }} {{ spec.bias }} {{ spec.mask }} {{ spec.deterministic }}", NULL,
          "true false false false");
  renders("{{ spec.threads }} {{ spec.num_warps }} {{ spec.num_stages }} {{ spec.smem_bytes }}",
          NULL, "128 4 2 104448");
  renders("{{ spec.head_dim * 2 + 8 }} {{ spec.head_dim / 2 }} {{ 0.5 }}", NULL,
          "264 64.0 0.5");
  renders("{{ ('x'):rep(3) }}{{ string.format('%05d', 42) }}", NULL, "xxx00042");
}
END_TEST

START_TEST(statement_lines_vanish) {
  renders("a\n{% local x = 3 %}\nb{{ x }}\n", NULL, "a\nb3\n");
  renders("  {% for i = 1, 3 do %}  \nrow {{ i }}\n  {% end %}\nend\n", NULL,
          "row 1\nrow 2\nrow 3\nend\n");
  renders("{# a comment line #}\nx\n", NULL, "x\n");
  renders("x {# inline #} y\n", NULL, "x  y\n");
  renders("x {% local y = 1 %}y\n", NULL, "x y\n");
  renders("{% if spec.causal then %}\ncausal\n{% else %}\nfull\n{% end %}\n", NULL,
          "causal\n");
  /* A statement on the last line, without a newline. */
  renders("a\n{% local z = 1 %}", NULL, "a\n");
  /* Multi-line statement and comment blocks. */
  renders("{%\nlocal a = 1\nlocal b = 2\n%}\n{{ a + b }}\n", NULL, "3\n");
  renders("{#\n two\n lines\n#}\nok\n", NULL, "ok\n");
}
END_TEST

START_TEST(functions_with_bodies) {
  renders("{% local function row(i) %}\n  r{{ i }};\n{% end %}\n"
          "{% for i = 1, 2 do row(i) end %}\n",
          NULL, "  r1;\n  r2;\n");
  /* Global functions defined in one template are callable from another. */
  renders("{% import('lib.lt') %}\nbegin\n{% greet('you') %}\nend\n",
          "LIB TEXT IS DROPPED\n{% function greet(n) %}\nhello {{ n }}\n{% end %}\n",
          "begin\nhello you\nend\n");
}
END_TEST

START_TEST(include_import_capture) {
  renders("<{% include('lib.lt') %}>\n", "lib {{ spec.block_n }}", "<lib 64>\n");
  renders("{% include('lib.lt') %}\n", "L\n", "L\n");
  renders("{% import('lib.lt') %}\n[{{ V }}]\n", "text\n{% V = 7 %}\n", "[7]\n");
  renders("{% local function f(a) %}\n<{{ a }}>\n{% end %}\n"
          "{% local s = capture(f, 'x') %}\n"
          "len={{ #s }} up={{ s:upper() }}",
          NULL, "len=4 up=<X>\n");
  renders("{% emit('raw'); emit(5) %}\n", NULL, "raw5");
  /* The embedded templates are reachable too. */
  char *out = NULL;
  ck_assert_int_eq(render2("{% include('abi.lt') %}\n", NULL, &out), SFA_OK);
  ck_assert_ptr_nonnull(strstr(out, "struct sfa_fwd_args"));
  free(out);
}
END_TEST

START_TEST(nil_expression_error) {
  fails("line 1\nline 2\n{{ spec.nope }}\n", NULL, "main.lt:3:");
  fails("line 1\nline 2\n{{ spec.nope }}\n", NULL, "is nil");
  fails("x\n{% include('lib.lt') %}\n", "a\nb\nc\n{{ missing_var }}\n", "lib.lt:4:");
}
END_TEST

START_TEST(unclosed_tag_error) {
  fails("a\nb\n{{ spec.head_dim\n", NULL, "main.lt:3: unclosed '{{'");
  fails("{% for i = 1, 2 do\nx\n", NULL, "main.lt:1: unclosed '{%'");
  fails("ok\n{# never closed", NULL, "main.lt:2: unclosed '{#'");
}
END_TEST

START_TEST(lua_errors) {
  /* Syntax error in a statement block. */
  fails("a\n\n{% if then %}\n", NULL, "main.lt:3:");
  /* Runtime error raised by the template. */
  fails("a\n{% error('boom') %}\n", NULL, "main.lt:2: boom");
  fails("{{ spec.head_dim .. {} }}", NULL, "main.lt:1:");
  /* A function defined in lib.lt fails where it is defined. */
  fails("{% import('lib.lt') %}\n{% f() %}\n", "\n\n{% function f() local x = nil + 1 end %}\n",
        "lib.lt:3:");
  /* A missing template, named at the line that includes it. */
  fails("{% include('nowhere.lt') %}\n", NULL, "nowhere.lt");
  fails("x\n{% include('nowhere.lt') %}\n", NULL, "main.lt:2: template 'nowhere.lt' not found");
  fails("{% import('lib.lt') %}\n{% f() %}\n", "\n{% function f() include('gone.lt') end %}\n",
        "lib.lt:2: template 'gone.lt' not found");
}
END_TEST

START_TEST(spec_table_without_spec) {
  sfa__template t[] = {{"e.lt", "[{{ type(spec) }}][{{ tostring(spec.name) }}]"}, {NULL, NULL}};
  char *out = NULL;
  ck_assert_int_eq(sfa__render(t, "e.lt", NULL, &out, err, sizeof err), SFA_OK);
  ck_assert_str_eq(out, "[table][nil]");
  free(out);
  ck_assert_int_eq(sfa__render(t, "e.lt", NULL, NULL, err, sizeof err),
                   SFA_ERR_INVALID_ARGUMENT);
  ck_assert_int_eq(sfa__render(t, NULL, NULL, &out, err, sizeof err),
                   SFA_ERR_INVALID_ARGUMENT);
}
END_TEST

START_TEST(embedded_files) {
  const struct sfa_embedded_file *f = sfa__embedded_find("template.lua");
  ck_assert_ptr_nonnull(f);
  ck_assert_uint_eq(strlen((const char *)f->data), f->size);
  ck_assert_ptr_nonnull(strstr((const char *)f->data, "function M.new"));
  ck_assert_ptr_nonnull(sfa__embedded_find("kernel.lt"));
  ck_assert_ptr_nonnull(sfa__embedded_find("abi.lt"));
  ck_assert_ptr_null(sfa__embedded_find("nope.lt"));
  /* The embedded copy matches the file in the source tree. */
  FILE *fp = fopen(tu_source_path("gen/template.lua"), "rb");
  ck_assert_ptr_nonnull(fp);
  char *buf = malloc(f->size + 16);
  size_t n = fread(buf, 1, f->size + 16, fp);
  fclose(fp);
  ck_assert_uint_eq(n, f->size);
  ck_assert(memcmp(buf, f->data, n) == 0);
  free(buf);
}
END_TEST

int main(void) {
  /* The engine under test is the embedded one. */
  unsetenv("SFA_TEMPLATE_DIR");
  Suite *s = suite_create("engine");
  TCase *tc = tcase_create("engine");
  tcase_add_test(tc, plain_text);
  tcase_add_test(tc, expressions);
  tcase_add_test(tc, statement_lines_vanish);
  tcase_add_test(tc, functions_with_bodies);
  tcase_add_test(tc, include_import_capture);
  tcase_add_test(tc, nil_expression_error);
  tcase_add_test(tc, unclosed_tag_error);
  tcase_add_test(tc, lua_errors);
  tcase_add_test(tc, spec_table_without_spec);
  tcase_add_test(tc, embedded_files);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
