/*
** test_sandbox.c -- templates run in a sandbox (gen/sandbox.c): with
** SFA_TEMPLATE_DIR pointing at a copy of the real templates in which
** kernel.lt starts with one hostile line, sfa_generate must end in a template
** error naming kernel.lt:2 -- no os/io/package/require/dofile/load, include
** confined to plain names in the directory, bounded instructions, heap and
** output, no NUL byte in the source -- and must never hang or end the process.
** Every hostile render runs in a child process with a wall-clock alarm and an
** address-space limit, so that a sandbox that fails cannot take the test
** runner (or the machine) with it.
*/
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sfa.h"
#include "gen/gen_internal.h"
#include "testutil.h"

#define CHILD_SECONDS 20            /* a render that takes longer has hung */
#define CHILD_ADDRESS_SPACE (3ull << 30)

static char tdir[512], odir[512]; /* the template dir, and a sibling outside it */

static void write_bytes(const char *dir, const char *name, const void *data, size_t n) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "wb");
  ck_assert_msg(f != NULL, "cannot write %s", path);
  ck_assert_uint_eq(fwrite(data, 1, n, f), n);
  fclose(f);
}

/* tdir: a copy of every embedded template (not the engine); odir: another dir. */
static void setup(void) {
  snprintf(tdir, sizeof tdir, "%s", tu_mkdtemp());
  snprintf(odir, sizeof odir, "%s", tu_mkdtemp());
  for (const struct sfa_embedded_file *f = sfa__embedded_files; f->name; f++)
    if (strcmp(f->name, "template.lua") != 0) write_bytes(tdir, f->name, f->data, f->size);
  write_bytes(odir, "secret.lt", "SECRET TEXT\n", 12);
}

static void teardown(void) {
  tu_rm_rf(tdir);
  tu_rm_rf(odir);
}

/* kernel.lt := "// hostile\n" + line (n bytes) + "\n" + the real kernel.lt. */
static void set_hostile(const char *line, size_t n) {
  const struct sfa_embedded_file *k = sfa__embedded_find("kernel.lt");
  ck_assert_ptr_nonnull(k);
  size_t len = 11 + n + 1 + k->size;
  char *text = malloc(len);
  memcpy(text, "// hostile\n", 11);
  memcpy(text + 11, line, n);
  text[11 + n] = '\n';
  memcpy(text + 12 + n, k->data, k->size);
  write_bytes(tdir, "kernel.lt", text, len);
  free(text);
}

/* What a render in a child process came to. */
typedef struct outcome {
  int exited, code, signal; /* how the child ended */
  int status;               /* sfa_generate's status (when the child reported) */
  int reported;
  size_t len;               /* strlen of the source on success */
  char err[2048];
  double ms;
} outcome;

static sfa_kernel_spec the_spec(void) {
  sfa_kernel_spec s = {SFA_PASS_FWD, SFA_MODE_DENSE, SFA_DTYPE_BF16, 64, 0, 0, 0, 0, 80, 0,
                       SFA_SPEC_MMA_SYNC};
  ck_assert_int_eq(sfa_spec_default(&s, NULL, 0), SFA_OK);
  return s;
}

/* sfa_generate with SFA_TEMPLATE_DIR=tdir in a child with an alarm and a
** limit on its address space. */
static outcome generate_in_child(void) {
  outcome o;
  memset(&o, 0, sizeof o);
  sfa_kernel_spec s = the_spec();
  int fds[2];
  ck_assert_int_eq(pipe(fds), 0);
  double t0 = tu_now_ms();
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    close(fds[0]);
#if !TU_ASAN /* ASan maps terabytes of shadow memory */
    struct rlimit rl = {CHILD_ADDRESS_SPACE, CHILD_ADDRESS_SPACE};
    setrlimit(RLIMIT_AS, &rl);
#endif
    signal(SIGALRM, SIG_DFL); /* not Check's handler, which kills the test's process group */
    alarm(CHILD_SECONDS);
    setenv("SFA_TEMPLATE_DIR", tdir, 1);
    outcome r;
    memset(&r, 0, sizeof r);
    char *src = NULL;
    r.status = sfa_generate(&s, &src, r.err, sizeof r.err);
    r.reported = 1;
    if (src) r.len = strlen(src);
    sfa_free(src);
    ssize_t w = write(fds[1], &r, sizeof r);
    _exit(w == (ssize_t)sizeof r ? 0 : 3);
  }
  close(fds[1]);
  outcome r;
  size_t got = 0;
  while (got < sizeof r) {
    ssize_t n = read(fds[0], (char *)&r + got, sizeof r - got);
    if (n <= 0) break;
    got += (size_t)n;
  }
  close(fds[0]);
  int ws = 0;
  ck_assert_int_eq(waitpid(pid, &ws, 0), pid);
  if (got == sizeof r) o = r;
  o.ms = tu_now_ms() - t0;
  o.exited = WIFEXITED(ws);
  o.code = o.exited ? WEXITSTATUS(ws) : -1;
  o.signal = WIFSIGNALED(ws) ? WTERMSIG(ws) : 0;
  return o;
}

static outcome hostile(const char *line) {
  set_hostile(line, strlen(line));
  return generate_in_child();
}

/* The render ended, in the child, with SFA_ERR_GENERATOR and "template error:
** <where>" followed (somewhere) by what. */
static void expect_error(const char *line, outcome o, const char *where, const char *what) {
  ck_assert_msg(o.signal == 0, "[%s]: the child died of signal %d%s", line, o.signal,
                o.signal == SIGALRM ? " (the render hung)" : "");
  ck_assert_msg(o.exited && o.code == 0 && o.reported,
                "[%s]: the child exited with %d before sfa_generate returned", line, o.code);
  ck_assert_msg(o.status == SFA_ERR_GENERATOR, "[%s]: status %d, err '%s', %zu bytes of source",
                line, o.status, o.err, o.len);
  char want[256];
  snprintf(want, sizeof want, "template error: %s", where);
  ck_assert_msg(strncmp(o.err, want, strlen(want)) == 0, "[%s]: '%s' does not start with '%s'",
                line, o.err, want);
  ck_assert_msg(strstr(o.err, what), "[%s]: '%s' not in '%s'", line, what, o.err);
}

static void expect_hostile_error(const char *line, const char *what) {
  expect_error(line, hostile(line), "kernel.lt:2: ", what);
}

/* The copy of the templates renders as the embedded ones do. */
START_TEST(copied_templates_render) {
  outcome o = hostile("{# nothing hostile #}");
  ck_assert_msg(o.reported && o.status == SFA_OK, "status %d: %s", o.status, o.err);
  ck_assert_uint_gt(o.len, 1000);
}
END_TEST

START_TEST(os_execute_is_absent) {
  char line[1200], path[1100];
  snprintf(path, sizeof path, "%s/pwned", odir);
  snprintf(line, sizeof line, "{%% os.execute('touch %s') %%}", path);
  expect_hostile_error(line, "global 'os'");
  ck_assert_msg(access(path, F_OK) != 0, "os.execute ran");
}
END_TEST

START_TEST(os_exit_is_absent_and_the_process_lives) {
  expect_hostile_error("{% os.exit(42) %}", "global 'os'");
  expect_hostile_error("{% local exit = os.exit; exit(true, true) %}", "global 'os'");
}
END_TEST

START_TEST(io_open_and_io_popen_are_absent) {
  char line[1200];
  snprintf(line, sizeof line, "{{ io.open('%s/secret.lt'):read('a') }}", odir);
  expect_hostile_error(line, "global 'io'");
  expect_hostile_error("{{ io.popen('echo hi'):read('a') }}", "global 'io'");
  expect_hostile_error("{% io.write('x') %}", "global 'io'");
}
END_TEST

START_TEST(package_loadlib_and_require_are_absent) {
  expect_hostile_error("{% package.loadlib('libc.so.6', '*') %}", "global 'package'");
  expect_hostile_error("{% local os = require('os') %}", "global 'require'");
  expect_hostile_error("{% debug.sethook() %}", "global 'debug'");
}
END_TEST

START_TEST(dofile_loadfile_and_load_are_absent) {
  char line[1200];
  write_bytes(odir, "x.lua", "return 1\n", 9);
  snprintf(line, sizeof line, "{%% dofile('%s/x.lua') %%}", odir);
  expect_hostile_error(line, "global 'dofile'");
  snprintf(line, sizeof line, "{%% assert(loadfile('%s/x.lua')) %%}", odir);
  expect_hostile_error(line, "global 'loadfile'");
  expect_hostile_error("{% load('return 1')() %}", "global 'load'");
  expect_hostile_error("{% collectgarbage('stop') %}", "global 'collectgarbage'");
  expect_hostile_error("{% local d = string.dump(function() end) %}", "field 'dump'");
}
END_TEST

START_TEST(include_outside_the_template_dir_is_refused) {
  char line[1200];
  const char *base = strrchr(odir, '/') + 1;
  snprintf(line, sizeof line, "{%% include('../%s/secret.lt') %%}", base);
  expect_hostile_error(line, "is not allowed");
  snprintf(line, sizeof line, "{%% include('%s/secret.lt') %%}", odir);
  expect_hostile_error(line, "is not allowed");
  expect_hostile_error("{% include('/etc/passwd') %}", "is not allowed");
  expect_hostile_error("{% import('..') %}", "is not allowed");
  expect_hostile_error("{% include('.hidden.lt') %}", "is not allowed");
}
END_TEST

START_TEST(include_does_not_follow_a_symlink_out_of_the_dir) {
  char target[1100], link[1100];
  snprintf(target, sizeof target, "%s/secret.lt", odir);
  snprintf(link, sizeof link, "%s/link.lt", tdir);
  ck_assert_int_eq(symlink(target, link), 0);
  expect_hostile_error("{% include('link.lt') %}", "symbolic link");
}
END_TEST

START_TEST(infinite_loop_hits_the_instruction_budget) {
  expect_hostile_error("{% while true do end %}", "instruction budget of");
  /* pcall cannot catch the budget's error and carry on */
  expect_hostile_error("{% while true do pcall(function() while true do end end) end %}",
                       "instruction budget of");
  /* nor can a function called from another template escape it */
  expect_hostile_error("{% local function f() return f() end f() %}", "instruction budget of");
}
END_TEST

START_TEST(huge_output_hits_the_output_cap) {
  expect_hostile_error("{% for i = 1, 1e9 do emit(('x'):rep(1 << 20)) end %}",
                       "output larger than");
  expect_hostile_error("{% for i = 1, 1e9 do %}xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx{% end %}",
                       "output larger than");
}
END_TEST

START_TEST(huge_string_hits_the_heap_cap) {
  expect_hostile_error("{{ ('x'):rep(1 << 30) }}", "Lua heap");
  expect_hostile_error("{% local s = string.rep('xy', 1 << 28, ',') %}", "Lua heap");
  /* a memory error that pcall caught goes on, and names its line */
  expect_hostile_error("{% pcall(function() local t = {} for i = 1, 1e12 do t[i] = i end end) %}",
                       "Lua heap would grow past");
  /* heap growth one table slot at a time: the cap, wherever it is hit */
  outcome o = hostile("{% local t = {} for i = 1, 1e12 do t[i] = i end %}");
  ck_assert_msg(o.reported && o.status == SFA_ERR_GENERATOR, "status %d: %s", o.status, o.err);
  ck_assert_msg(strstr(o.err, "Lua heap") || strstr(o.err, "instruction budget"), "%s", o.err);
}
END_TEST

START_TEST(long_running_library_calls_are_bounded) {
  /* rep of an empty string loops its count without allocating */
  outcome o = hostile("{% local s = (''):rep(1 << 62) %}");
  ck_assert_msg(o.reported && o.status == SFA_OK, "status %d signal %d: %s", o.status, o.signal,
                o.err);
  /* table.move and table.insert loop over a range of nils */
  expect_hostile_error("{% table.move({}, 1, 1 << 60, 2) %}", "instruction budget");
  expect_hostile_error("{% local t = setmetatable({}, {__len = function() return 1 << 60 end})"
                       " table.insert(t, 1, 0) %}",
                       "instruction budget");
  expect_hostile_error("{% local t = setmetatable({}, {__len = function() return 1 << 60 end})"
                       " table.remove(t, 1) %}",
                       "instruction budget");
  /* pattern matching backtracks without running VM instructions */
  expect_hostile_error("{% local s = ('a'):rep(5000) s:find(('a-'):rep(12) .. 'b') %}",
                       "instruction budget");
  expect_hostile_error("{% local s = ('a'):rep(5000) string.gsub(s, '.-.-.-.-b', '') %}",
                       "instruction budget");
}
END_TEST

START_TEST(finalizers_cannot_outlive_the_render) {
  expect_hostile_error("{% setmetatable({}, {__gc = function() while true do end end}) %}",
                       "__gc");
}
END_TEST

START_TEST(nul_byte_is_an_error_not_a_truncated_source) {
  expect_hostile_error("{{ 'a\\0b' }}", "NUL byte");
  expect_hostile_error("{% emit(string.char(0)) %}", "NUL byte");
  /* a NUL in the template's own text */
  set_hostile("text\0text", 9);
  expect_error("raw NUL", generate_in_child(), "kernel.lt:2: ", "NUL byte");
}
END_TEST

/* Templates see the allowed names only (no SFA_TEMPLATE_DIR needed). */
START_TEST(template_environment_holds_only_the_allowed_names) {
  sfa__template t[] = {
      {"env.lt",
       "{% for _, n in ipairs({'os', 'io', 'package', 'debug', 'coroutine', 'utf8', 'require',"
       " 'dofile', 'loadfile', 'load', 'loadstring', 'collectgarbage', 'print', 'warn', '_G'})"
       " do assert(_ENV[n] == nil, n .. ' is visible') end %}\n"
       "{% assert(string.dump == nil, 'string.dump is visible') %}\n"
       "{% assert(getmetatable('') == false, 'the string metatable is visible') %}\n"
       "{% assert(getmetatable(_ENV) == false, 'the environment metatable is visible') %}\n"
       "{% for _, f in ipairs({assert, error, ipairs, next, pairs, pcall, rawequal, rawget,"
       " rawlen, rawset, select, setmetatable, getmetatable, tonumber, tostring, type, xpcall,"
       " string.format, string.rep, string.find, table.concat, table.insert, table.sort,"
       " math.floor, math.max, include, import, emit, capture}) do"
       " assert(type(f) == 'function') end %}\n"
       "ok {{ ('x'):rep(3) }} {{ select('#', pcall(error, 'e')) }} {{ _VERSION }}\n"},
      {NULL, NULL}};
  char *out = NULL, err[1024] = "";
  sfa_status st = sfa__render(t, "env.lt", NULL, &out, err, sizeof err);
  ck_assert_msg(st == SFA_OK, "%s", err);
  ck_assert_str_eq(out, "ok xxx 2 Lua 5.4\n");
  free(out);
}
END_TEST

/* The wrapped library functions keep their meaning for ordinary use. */
START_TEST(wrapped_library_functions_keep_their_meaning) {
  sfa__template t[] = {
      {"lib.lt",
       "{{ (('a_b_c'):gsub('_', '')) }} {{ ('x = 12'):match('^(%w+)%s*=%s*(%d+)$') }}"
       " {{ select(2, ('x = 12'):match('^(%w+)%s*=%s*(%d+)$')) }}"
       " {{ ('hello'):find('l') }} {{ ('a.b'):find('.', 1, true) }} {{ ('abc'):find('c', -1) }}"
       " {{ tostring(('abc'):find('x')) }} {{ ('ab'):rep(3, ',') }} [{{ (''):rep(5) }}]\n"
       "{% local w = {} for x in ('a1 b2 c3'):gmatch('%a(%d)') do w[#w + 1] = x end %}"
       "{{ table.concat(w) }}\n"
       "{% local t = {1, 2, 3} table.insert(t, 1, 0) table.insert(t, 9) %}"
       "{% local r = table.remove(t, 2) local l = table.remove(t) %}"
       "{{ table.concat(t, ',') }} {{ r }} {{ l }} {{ tostring(table.remove({})) }}"
       " {{ table.concat(table.move({1, 2, 3}, 1, 3, 2), ',') }}\n"
       "{{ select(2, pcall(table.insert, {}, 5, 1)) }}\n"
       "{{ select(2, pcall(table.insert, {}, 1, 2, 3)) }}\n"
       "{{ select('#', xpcall(function(a, b) return a + b end, error, 1, 2)) }}"
       " {{ select(2, xpcall(error, function(m) return 'h:' .. m end, 'e', 0)) }}\n"
       "{{ tostring(setmetatable({}, {__tostring = function() return 'mt' end})) }}\n"},
      {NULL, NULL}};
  char *out = NULL, err[1024] = "";
  sfa_status st = sfa__render(t, "lib.lt", NULL, &out, err, sizeof err);
  ck_assert_msg(st == SFA_OK, "%s", err);
  ck_assert_str_eq(out, "abc x 12 3 2 3 nil ab,ab,ab []\n"
                        "123\n"
                        "0,2,3 1 9 nil 1,1,2,3\n"
                        "bad argument #2 to 'table.insert' (position out of bounds)\n"
                        "wrong number of arguments to 'insert'\n"
                        "2 h:e\n"
                        "mt\n");
  free(out);
}
END_TEST

/* A template.lua in SFA_TEMPLATE_DIR replaces the engine, in the same sandbox. */
START_TEST(engine_from_the_template_dir_is_sandboxed_too) {
  write_bytes(tdir, "template.lua", "os.exit(7)\n", 11);
  expect_error("template.lua: os.exit(7)", generate_in_child(),
               "SFA_TEMPLATE_DIR/template.lua:1: ", "global 'os'");
  /* its load compiles text, never a binary chunk */
  const char *eng =
      "local load = load\n"
      "return { new = function() return { render = function()\n"
      "  local f, e = load('\\27Lua binary')\n"
      "  return 'load: ' .. tostring(f) .. ' ' .. tostring(e) end } end }\n";
  write_bytes(tdir, "template.lua", eng, strlen(eng));
  setenv("SFA_TEMPLATE_DIR", tdir, 1);
  sfa_kernel_spec sp = the_spec();
  char *src = NULL, err[1024] = "";
  sfa_status st = sfa_generate(&sp, &src, err, sizeof err);
  unsetenv("SFA_TEMPLATE_DIR");
  ck_assert_msg(st == SFA_OK, "%s", err);
  ck_assert_msg(strstr(src, "load: nil") && strstr(src, "binary chunk"), "%s", src);
  sfa_free(src);
  /* what such an engine returns is checked again in C: NUL bytes, size */
  static const struct { const char *engine, *want; } out_cases[] = {
      {"return { new = function() return { render = function() return 'a\\0b' end } end }\n",
       "template error: the output holds a NUL byte at offset 1"},
      {"return { new = function() return { render = function() return ('x'):rep(9 << 20) end }"
       " end }\n", "template error: output larger than 8388608 bytes"}};
  for (size_t i = 0; i < 2; i++) {
    write_bytes(tdir, "template.lua", out_cases[i].engine, strlen(out_cases[i].engine));
    expect_error(out_cases[i].engine, generate_in_child(), "", out_cases[i].want);
  }
}
END_TEST

/* sfa__render_string: for the fuzzer -- any bytes, any limits, a status. */
START_TEST(render_string_takes_any_bytes_under_given_limits) {
  char *out = NULL, err[1024] = "";
  ck_assert_int_eq(sfa__render_string("main.lt", NULL, 0, NULL, NULL, &out, err, sizeof err),
                   SFA_OK);
  ck_assert_str_eq(out, "");
  free(out);
  const char *t = "{% include('abi.lt') %}\n";
  ck_assert_int_eq(sfa__render_string("m.lt", t, strlen(t), NULL, NULL, &out, err, sizeof err),
                   SFA_OK);
  ck_assert_ptr_nonnull(strstr(out, "struct sfa_fwd_args"));
  free(out);
  /* the text may hold any bytes; a NUL is an error at its line */
  ck_assert_int_eq(sfa__render_string("m.lt", "a\n\0b", 4, NULL, NULL, &out, err, sizeof err),
                   SFA_ERR_GENERATOR);
  ck_assert_ptr_null(out);
  ck_assert_msg(strstr(err, "template error: m.lt:2: the template holds a NUL byte"), "%s", err);
  /* names are template names */
  static const char *const bad[] = {"", "a/b.lt", "../x.lt", ".x", "template.lua", "a b"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    ck_assert_int_eq(sfa__render_string(bad[i], "x", 1, NULL, NULL, &out, err, sizeof err),
                     SFA_ERR_INVALID_ARGUMENT);
    ck_assert_msg(strstr(err, "name: "), "%s", err);
  }
  ck_assert_int_eq(sfa__render_string("m.lt", NULL, 1, NULL, NULL, &out, err, sizeof err),
                   SFA_ERR_INVALID_ARGUMENT);
  ck_assert_int_eq(sfa__render_string("m.lt", "x", 1, NULL, NULL, NULL, err, sizeof err),
                   SFA_ERR_INVALID_ARGUMENT);
  /* each limit, set low */
  struct {
    sfa__render_limits lim;
    const char *text, *want;
  } cases[] = {
      {{10000, 0, 0, 0, 0}, "\n{% for i = 1, 1e6 do end %}", "m.lt:2: instruction budget of 10000"},
      {{0, 0, 0, 10, 0}, "0123456789\n", "m.lt:1: output larger than 10 bytes"},
      {{0, 1 << 20, 0, 0, 0}, "{{ ('x'):rep(1 << 21) }}", "m.lt:1: string.rep: a string of 2097152"},
      {{0, 0, 1 << 20, 0, 0}, "{% local s = '' for i = 1, 1e6 do s = s .. 'x' end %}",
       "m.lt:1: allocated more than 1048576 bytes"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    ck_assert_int_eq(sfa__render_string("m.lt", cases[i].text, strlen(cases[i].text), NULL,
                                        &cases[i].lim, &out, err, sizeof err),
                     SFA_ERR_GENERATOR);
    ck_assert_msg(strstr(err, cases[i].want), "'%s' not in '%s'", cases[i].want, err);
  }
}
END_TEST

/* Comparing two long strings runs one instruction and allocates nothing: the
** wall-clock limit ends it. */
START_TEST(time_limit_ends_work_the_budget_does_not_see) {
  const sfa__render_limits lim = {0, 0, 0, 0, 0.3};
  const char *t = "{% local a, b = ('x'):rep(1 << 24), ('x'):rep(1 << 24)\n"
                  "   while a == b do end %}";
  char *out = NULL, err[1024] = "";
  double t0 = tu_now_ms();
  ck_assert_int_eq(sfa__render_string("m.lt", t, strlen(t), NULL, &lim, &out, err, sizeof err),
                   SFA_ERR_GENERATOR);
  ck_assert_msg(strstr(err, "m.lt:2: time limit of 0.3 seconds exceeded"), "%s", err);
  ck_assert_msg(tu_now_ms() - t0 < 20000, "took %.0f ms", tu_now_ms() - t0);
}
END_TEST

/* The limits are at least 20x what real renders need: every preset variant
** renders under a twentieth of each, to the source sfa_generate gives. */
START_TEST(every_preset_variant_renders_within_a_twentieth_of_the_limits) {
  static const int archs[] = {80, 86, 87, 89, 90};
  static const char *const presets[] = {"default", "all-modes", "dense-tiles"};
  const sfa__render_limits lim = {SFA__TEMPLATE_MAX_INSTRUCTIONS / 20, SFA__TEMPLATE_MAX_HEAP / 20,
                                  SFA__TEMPLATE_MAX_ALLOCATED / 20, SFA__TEMPLATE_MAX_OUTPUT / 20,
                                  0};
  const char *text = "{% include('kernel.lt') %}\n";
  size_t total = 0;
  for (size_t p = 0; p < 3; p++)
    for (size_t a = 0; a < sizeof archs / sizeof archs[0]; a++) {
      sfa_kernel_spec *v = NULL;
      size_t n = 0;
      if (sfa__preset(presets[p], &archs[a], 1, &v, &n, NULL, 0) != SFA_OK) continue;
      for (size_t i = 0; i < n; i++) {
        char name[SFA__NAME_MAX], err[1024] = "", *a_src = NULL, *b_src = NULL;
        ck_assert_int_eq(sfa_spec_name(&v[i], name, sizeof name), SFA_OK);
        ck_assert_msg(sfa__render_string("main.lt", text, strlen(text), &v[i], &lim, &a_src, err,
                                         sizeof err) == SFA_OK,
                      "%s: %s", name, err);
        ck_assert_msg(sfa_generate(&v[i], &b_src, err, sizeof err) == SFA_OK, "%s: %s", name,
                      err);
        ck_assert_msg(strcmp(a_src, b_src) == 0, "%s: the sources differ", name);
        free(a_src);
        free(b_src);
        total++;
      }
      free(v);
    }
  ck_assert_uint_ge(total, 1800);
}
END_TEST

int main(void) {
  unsetenv("SFA_TEMPLATE_DIR");
  Suite *s = suite_create("sandbox");
  TCase *tc = tcase_create("sandbox");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 600);
  tcase_add_test(tc, copied_templates_render);
  tcase_add_test(tc, os_execute_is_absent);
  tcase_add_test(tc, os_exit_is_absent_and_the_process_lives);
  tcase_add_test(tc, io_open_and_io_popen_are_absent);
  tcase_add_test(tc, package_loadlib_and_require_are_absent);
  tcase_add_test(tc, dofile_loadfile_and_load_are_absent);
  tcase_add_test(tc, include_outside_the_template_dir_is_refused);
  tcase_add_test(tc, include_does_not_follow_a_symlink_out_of_the_dir);
  tcase_add_test(tc, infinite_loop_hits_the_instruction_budget);
  tcase_add_test(tc, huge_output_hits_the_output_cap);
  tcase_add_test(tc, huge_string_hits_the_heap_cap);
  tcase_add_test(tc, long_running_library_calls_are_bounded);
  tcase_add_test(tc, finalizers_cannot_outlive_the_render);
  tcase_add_test(tc, nul_byte_is_an_error_not_a_truncated_source);
  tcase_add_test(tc, template_environment_holds_only_the_allowed_names);
  tcase_add_test(tc, wrapped_library_functions_keep_their_meaning);
  tcase_add_test(tc, engine_from_the_template_dir_is_sandboxed_too);
  tcase_add_test(tc, render_string_takes_any_bytes_under_given_limits);
  tcase_add_test(tc, time_limit_ends_work_the_budget_does_not_see);
  tcase_add_test(tc, every_preset_variant_renders_within_a_twentieth_of_the_limits);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
