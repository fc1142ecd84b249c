/*
** test_sfa_tune.c -- the sfa-tune tool without a GPU: --help, usage errors
** (exit 2), a sweep that fails cleanly with a message when there is no
** driver (exit 1, no crash; only checked where libcuda.so.1 is absent), and
** the db round trip --import / --list / --export with --gpu and --cc (a
** wgmma row included), a db of another GPU refused, and a v1 db (no mma
** column) imported as mma sync; times below a nanosecond survive the round
** trip; --import of a device or a FIFO and --export onto a FIFO are refused
** without blocking or reading without bound. Needs build/sfa-tune.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

/* build/sfa-tune (testutil.h: found from this test's own path). */
#define TOOL tu_build_path("sfa-tune")

/* A shell prefix that bounds the tool's time and memory, so that a reader
** that blocks or reads without bound fails instead of hanging or eating the
** machine (no memory bound under ASan, which reserves terabytes). */
#if TU_ASAN
#define BOUNDED "timeout 30 "
#else
#define BOUNDED "ulimit -v 3000000; timeout 30 "
#endif
static char dir[512];

static void setup(void) { snprintf(dir, sizeof dir, "%s", tu_mkdtemp()); }
static void teardown(void) { tu_rm_rf(dir); }

/* Runs "TOOL args > dir/out 2>&1"; returns the exit status and the output. */
static int run_tool(const char *args, char *out, size_t n) {
  char cmd[4096], path[700];
  snprintf(path, sizeof path, "%s/out.txt", dir);
  snprintf(cmd, sizeof cmd, BOUNDED "'%s' %s > '%s' 2>&1", TOOL, args, path);
  int rc = system(cmd);
  FILE *f = fopen(path, "r");
  ck_assert_ptr_nonnull(f);
  size_t k = fread(out, 1, n - 1, f);
  out[k] = '\0';
  fclose(f);
  ck_assert_msg(WIFEXITED(rc), "%s did not exit normally: %s", cmd, out);
  return WEXITSTATUS(rc);
}

static void spit(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  ck_assert_ptr_nonnull(f);
  fputs(text, f);
  fclose(f);
}

static const char SHIP[] =
  "# sfa tuning db v2 gpu=Fake GPU cc=90\n"
  "gpu\tcc\tpass\tmode\tdtype\thead_dim\tflags\tsize_bucket\tblock_m\tblock_n\tnum_warps\t"
  "num_stages\tmma\ttime_us\tdefault_time_us\tdate\n"
  "Fake GPU\t90\tfwd\tdense\tbf16\t128\tcausal\ttq4096_tk4096_bh256\t64\t128\t4\t1\twgmma\t"
  "900\t1000\t2025-01-01T00:00:00Z\n"
  "Fake GPU\t90\tfwd\thash\tbf16\t64\t-\ttq16384_tk16384_bh64\t64\t64\t4\t2\tsync\t500.125\t"
  "600.5\t2025-01-01T00:00:00Z\n"
  "Fake GPU\t90\tfwd\thash\tbf16\t64\t-\ttq16384_tk16384_bh128\t64\t64\t4\t2\tsync\t"
  "0.000123\t0.0004\t2025-01-01T00:00:00Z\n";

/* A db of format v1 (no mma column) and what it is exported as: mma sync. */
static const char SHIP_V1[] =
  "# sfa tuning db v1 gpu=Fake GPU cc=90\n"
  "gpu\tcc\tpass\tmode\tdtype\thead_dim\tflags\tsize_bucket\tblock_m\tblock_n\tnum_warps\t"
  "num_stages\ttime_us\tdefault_time_us\tdate\n"
  "Fake GPU\t90\tfwd\tdense\tbf16\t128\tcausal\ttq4096_tk4096_bh256\t128\t64\t4\t1\t900.000\t"
  "1000.000\t2025-01-01T00:00:00Z\n";
static const char SHIP_V1_AS_V2[] =
  "# sfa tuning db v2 gpu=Fake GPU cc=90\n"
  "gpu\tcc\tpass\tmode\tdtype\thead_dim\tflags\tsize_bucket\tblock_m\tblock_n\tnum_warps\t"
  "num_stages\tmma\ttime_us\tdefault_time_us\tdate\n"
  "Fake GPU\t90\tfwd\tdense\tbf16\t128\tcausal\ttq4096_tk4096_bh256\t128\t64\t4\t1\tsync\t"
  "900\t1000\t2025-01-01T00:00:00Z\n";

static void slurp(const char *path, char *text, size_t cap) {
  FILE *f = fopen(path, "r");
  ck_assert_ptr_nonnull(f);
  size_t n = fread(text, 1, cap - 1, f);
  text[n] = '\0';
  fclose(f);
}

START_TEST(help_and_usage_errors) {
  char out[16384];
  ck_assert_int_eq(run_tool("--help", out, sizeof out), 0);
  ck_assert_msg(strstr(out, "--modes") && strstr(out, "--export") && strstr(out, "--import") &&
                strstr(out, "--measure"), "%s", out);
  ck_assert_int_eq(run_tool("--bogus", out, sizeof out), 2);
  ck_assert_msg(strstr(out, "--bogus") != NULL, "%s", out);
  ck_assert_int_eq(run_tool("--modes dense,sparse", out, sizeof out), 2);
  ck_assert_msg(strstr(out, "sparse") != NULL, "%s", out);
  ck_assert_int_eq(run_tool("--head-dims 72", out, sizeof out), 2);
  ck_assert_int_eq(run_tool("--heads 16 --kv-heads 5", out, sizeof out), 2);
  ck_assert_int_eq(run_tool("--gpu X --list", out, sizeof out), 2);
  ck_assert_msg(strstr(out, "--cc") != NULL, "%s", out);
  ck_assert_int_eq(run_tool("--gpu X --cc 90 --sweep", out, sizeof out), 2);
  ck_assert_int_eq(run_tool("--keep 1.5", out, sizeof out), 2);
  ck_assert_int_eq(run_tool("--pass bwddq", out, sizeof out), 2);
  ck_assert_msg(strstr(out, "--pass: 'bwddq' is not fwd or bwd") != NULL, "%s", out);
  ck_assert_int_eq(run_tool("--help", out, sizeof out), 0);
  ck_assert_msg(strstr(out, "--pass fwd|bwd") != NULL && strstr(out, "--kinds LIST") != NULL,
                "%s", out);
  ck_assert_int_eq(run_tool("--kinds ws,mma", out, sizeof out), 2);
  ck_assert_msg(strstr(out, "--kinds: unknown value 'mma'") != NULL, "%s", out);
  ck_assert_int_eq(run_tool("--kinds", out, sizeof out), 2);
}
END_TEST

START_TEST(no_gpu_fails_cleanly) {
  if (tu_driver_present()) {
    printf("no_gpu_fails_cleanly: libcuda.so.1 is present; not run (it would sweep)\n");
    return;
  }
  char out[16384], args[2048];
  snprintf(args, sizeof args, "--cache-dir '%s/c'", dir);
  ck_assert_int_eq(run_tool(args, out, sizeof out), 1);
  ck_assert_msg(strstr(out, "needs a CUDA GPU") != NULL, "%s", out);
  snprintf(args, sizeof args, "--cache-dir '%s/c' --export '%s/x.tsv'", dir, dir);
  ck_assert_int_eq(run_tool(args, out, sizeof out), 1);
  ck_assert_msg(strstr(out, "--gpu NAME --cc N") != NULL, "%s", out);
  snprintf(args, sizeof args, "--cache-dir '%s/c' --measure", dir);
  ck_assert_int_eq(run_tool(args, out, sizeof out), 1);
}
END_TEST

START_TEST(import_list_export_round_trip) {
  char out[16384], args[2048], ship[600], exp[600];
  snprintf(ship, sizeof ship, "%s/ship.tsv", dir);
  snprintf(exp, sizeof exp, "%s/exported.tsv", dir);
  spit(ship, SHIP);
  snprintf(args, sizeof args, "--cache-dir '%s/c' --gpu 'Fake GPU' --cc 90 --import '%s' --list "
           "--export '%s'", dir, ship, exp);
  ck_assert_msg(run_tool(args, out, sizeof out) == 0, "%s", out);
  ck_assert_msg(strstr(out, "3 rows added or replaced") && strstr(out, "tq4096_tk4096_bh256") &&
                strstr(out, "m64n128_w4s1_wg") && strstr(out, "m64n64_w4s2 ") &&
                strstr(out, "1.111x"), "%s", out);
  /* the cache's db now holds the rows; the exported file equals them */
  char path[700];
  snprintf(path, sizeof path, "%s/c/tuning/Fake_GPU_sm90.tsv", dir);
  ck_assert_int_eq(access(path, R_OK), 0);
  char text[4096];
  slurp(exp, text, sizeof text);
  ck_assert_str_eq(text, SHIP);
  /* --list alone reads the cache's db */
  snprintf(args, sizeof args, "--cache-dir '%s/c' --gpu 'Fake GPU' --cc 90 --list", dir);
  ck_assert_int_eq(run_tool(args, out, sizeof out), 0);
  ck_assert_msg(strstr(out, ": 3 rows") != NULL, "%s", out);
  /* another GPU's db is refused */
  snprintf(args, sizeof args, "--cache-dir '%s/c' --gpu 'Other GPU' --cc 90 --import '%s'", dir,
           ship);
  ck_assert_int_eq(run_tool(args, out, sizeof out), 1);
  ck_assert_msg(strstr(out, "expected gpu 'Other GPU'") != NULL, "%s", out);
  /* a missing file */
  snprintf(args, sizeof args, "--cache-dir '%s/c' --gpu 'Fake GPU' --cc 90 --import '%s/none'",
           dir, dir);
  ck_assert_int_eq(run_tool(args, out, sizeof out), 1);
}
END_TEST

/* A v1 file (before the mma column) imports; its rows are mma sync, exported as v2. */
START_TEST(a_v1_db_imports_as_mma_sync) {
  char out[16384], args[2048], ship[600], exp[600], text[4096];
  snprintf(ship, sizeof ship, "%s/ship_v1.tsv", dir);
  snprintf(exp, sizeof exp, "%s/exported.tsv", dir);
  spit(ship, SHIP_V1);
  snprintf(args, sizeof args, "--cache-dir '%s/c' --gpu 'Fake GPU' --cc 90 --import '%s' --list "
           "--export '%s'", dir, ship, exp);
  ck_assert_msg(run_tool(args, out, sizeof out) == 0, "%s", out);
  ck_assert_msg(strstr(out, "1 row added or replaced") && strstr(out, "m128n64_w4s1 ") &&
                !strstr(out, "_wg"), "%s", out);
  slurp(exp, text, sizeof text);
  ck_assert_str_eq(text, SHIP_V1_AS_V2);
}
END_TEST

/* --import of a character device or a FIFO: refused at once, nothing read. */
START_TEST(import_refuses_a_device_or_a_fifo) {
  char out[16384], args[2048], fifo[600];
  snprintf(args, sizeof args, "--cache-dir '%s/c' --gpu 'Fake GPU' --cc 90 --import /dev/zero",
           dir);
  int rc = run_tool(args, out, sizeof out);
  ck_assert_msg(rc == 1 && strstr(out, "/dev/zero") && strstr(out, "character device"),
                "exit %d: %s", rc, out);
  snprintf(fifo, sizeof fifo, "%s/fifo.tsv", dir);
  ck_assert_int_eq(mkfifo(fifo, 0600), 0);
  snprintf(args, sizeof args, "--cache-dir '%s/c' --gpu 'Fake GPU' --cc 90 --import '%s'", dir,
           fifo);
  rc = run_tool(args, out, sizeof out);
  ck_assert_msg(rc == 1 && strstr(out, fifo) && strstr(out, "FIFO"), "exit %d: %s", rc, out);
}
END_TEST

/* --export onto a FIFO: refused; the FIFO is not replaced by a file. */
START_TEST(export_refuses_a_fifo) {
  char out[16384], args[2048], ship[600], fifo[600];
  snprintf(ship, sizeof ship, "%s/ship.tsv", dir);
  spit(ship, SHIP);
  snprintf(fifo, sizeof fifo, "%s/fifo.tsv", dir);
  ck_assert_int_eq(mkfifo(fifo, 0600), 0);
  snprintf(args, sizeof args, "--cache-dir '%s/c' --gpu 'Fake GPU' --cc 90 --import '%s' "
           "--export '%s'", dir, ship, fifo);
  int rc = run_tool(args, out, sizeof out);
  ck_assert_msg(rc == 1 && strstr(out, fifo) && strstr(out, "FIFO"), "exit %d: %s", rc, out);
  struct stat sb;
  ck_assert_int_eq(lstat(fifo, &sb), 0);
  ck_assert(S_ISFIFO(sb.st_mode));
}
END_TEST

static Suite *tool_suite(void) {
  Suite *s = suite_create("sfa_tune");
  TCase *tc = tcase_create("sfa_tune");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, help_and_usage_errors);
  tcase_add_test(tc, no_gpu_fails_cleanly);
  tcase_add_test(tc, import_list_export_round_trip);
  tcase_add_test(tc, a_v1_db_imports_as_mma_sync);
  tcase_add_test(tc, import_refuses_a_device_or_a_fifo);
  tcase_add_test(tc, export_refuses_a_fifo);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  if (access(TOOL, X_OK) != 0) {
    fprintf(stderr, "test_sfa_tune: %s is not built (build all targets first)\n", TOOL);
    return 1;
  }
  return tu_run_suite(tool_suite());
}
