/*
** test_tunedb.c -- the tuning database (cache/tunedb.h): size buckets and file
** names, round trips, lookups and replacement, tolerant reading of corrupt and
** foreign files (one warning on stderr, never a crash), v1 files (no mma
** column) read as mma sync, merging (the faster row wins), atomic saves
** without leftovers, saves that keep another writer's rows, exports, and
** unwritable directories; times that read back exactly as written (tiny,
** huge and ordinary); FIFOs, devices, oversized files and symbolic links
** where the db should be are refused without blocking or reading them; the
** tables shipped under cache/tuned/ read cleanly and hold valid winners.
*/
#include "cache/tunedb.h"
#include "gen/gen_internal.h"
#include "testutil.h"

#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#define GPU "NVIDIA H100 80GB HBM3"
#define GPU_FILE "NVIDIA_H100_80GB_HBM3_sm90.tsv"
#define HEADER "# sfa tuning db v2 gpu=" GPU " cc=90\n"
#define COLUMNS                                                                          \
  "gpu\tcc\tpass\tmode\tdtype\thead_dim\tflags\tsize_bucket\tblock_m\tblock_n\tnum_warps" \
  "\tnum_stages\tmma\ttime_us\tdefault_time_us\tdate\n"
/* format v1: no mma column */
#define HEADER_V1 "# sfa tuning db v1 gpu=" GPU " cc=90\n"
#define COLUMNS_V1                                                                       \
  "gpu\tcc\tpass\tmode\tdtype\thead_dim\tflags\tsize_bucket\tblock_m\tblock_n\tnum_warps" \
  "\tnum_stages\ttime_us\tdefault_time_us\tdate\n"

static char g_dir[512]; /* fresh per test */
static char g_path[1024];

static void setup(void) {
  snprintf(g_dir, sizeof g_dir, "%s", tu_mkdtemp());
  snprintf(g_path, sizeof g_path, "%s/tuning/%s", g_dir, GPU_FILE);
}
static void teardown(void) { tu_rm_rf(g_dir); }

/* ---------------------------------------------------------------- helpers */

static sfa_tunedb *open_db(int quiet) {
  sfa_tunedb *db = NULL;
  char err[512] = "";
  ck_assert_msg(sfa_tunedb_open(&db, g_dir, GPU, 90, quiet, err, sizeof err) == SFA_OK, "%s", err);
  ck_assert_ptr_nonnull(db);
  ck_assert_str_eq(sfa_tunedb_path(db), g_path);
  return db;
}

/* A row of GPU/90: fwd, given mode/D/flags, bucket tq=tk=T bh=64. */
static sfa_tune_row mkrow(sfa_mode mode, int d, unsigned flags, int t, int bm, int bn, int w,
                          int s, double us) {
  sfa_tune_row r;
  memset(&r, 0, sizeof r);
  snprintf(r.key.gpu, sizeof r.key.gpu, "%s", GPU);
  r.key.cc = 90;
  r.key.pass = SFA_PASS_FWD;
  r.key.mode = mode;
  r.key.dtype = SFA_DTYPE_BF16;
  r.key.head_dim = d;
  r.key.flags = flags;
  ck_assert_int_eq(sfa_tunedb_bucket(t, t, 64, r.key.bucket, sizeof r.key.bucket, NULL, 0),
                   SFA_OK);
  r.cfg = (sfa_tune_config){bm, bn, w, s, 0};
  r.time_us = us;
  r.default_time_us = us + 100;
  snprintf(r.date, sizeof r.date, "2024-06-01T12:00:00Z");
  return r;
}

static void put_ok(sfa_tunedb *db, const sfa_tune_row *r) {
  char err[512] = "";
  ck_assert_msg(sfa_tunedb_put(db, r, err, sizeof err) == SFA_OK, "put: %s", err);
}

static void expect_row(sfa_tunedb *db, const sfa_tune_row *want) {
  sfa_tune_row got;
  ck_assert_int_eq(sfa_tunedb_lookup(db, &want->key, &got), SFA_OK);
  ck_assert_int_eq(got.cfg.block_m, want->cfg.block_m);
  ck_assert_int_eq(got.cfg.block_n, want->cfg.block_n);
  ck_assert_int_eq(got.cfg.num_warps, want->cfg.num_warps);
  ck_assert_int_eq(got.cfg.num_stages, want->cfg.num_stages);
  ck_assert_int_eq(got.cfg.mma, want->cfg.mma);
  ck_assert_double_eq_tol(got.time_us, want->time_us, 1e-9);
  ck_assert_double_eq_tol(got.default_time_us, want->default_time_us, 1e-9);
  ck_assert_str_eq(got.date, want->date);
}

static void write_text(const char *path, const char *text, size_t n) {
  char dir[1024], cmd[1100];
  snprintf(dir, sizeof dir, "%s", path);
  *strrchr(dir, '/') = '\0';
  snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
  ck_assert_int_eq(system(cmd), 0);
  FILE *f = fopen(path, "wb");
  ck_assert_ptr_nonnull(f);
  ck_assert_int_eq(fwrite(text, 1, n, f), n);
  ck_assert_int_eq(fclose(f), 0);
}

static char *read_text(const char *path) {
  FILE *f = fopen(path, "rb");
  ck_assert_msg(f != NULL, "cannot open %s", path);
  fseek(f, 0, SEEK_END);
  long len = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *b = malloc((size_t)len + 1);
  ck_assert_int_eq(fread(b, 1, (size_t)len, f), (size_t)len);
  b[len] = '\0';
  fclose(f);
  return b;
}

/* Open the db with the file holding `text` (n bytes), stderr captured; returns
** the db and the captured text in *out (malloc'ed). */
static sfa_tunedb *open_captured(char **out) {
  char errpath[600];
  snprintf(errpath, sizeof errpath, "%s/stderr.txt", g_dir);
  int saved = tu_capture_stderr(errpath);
  sfa_tunedb *db = open_db(0);
  tu_restore_stderr(saved);
  *out = read_text(errpath);
  return db;
}

static sfa_tunedb *open_with(const char *text, size_t n, char **out) {
  write_text(g_path, text, n);
  return open_captured(out);
}

/* Expect exactly one warning naming the file (and `want` if not NULL). */
static void expect_one_warning(const char *text, const char *want) {
  ck_assert_msg(tu_count_substr(text, "sfa: warning") == 1, "stderr: %s", text);
  ck_assert_msg(strstr(text, g_path) != NULL, "warning names the file: %s", text);
  if (want) ck_assert_msg(strstr(text, want) != NULL, "warning lacks '%s': %s", want, text);
}

/* One good row line of GPU/90 as the file spells it (v2, and v1 without mma). */
#define GOOD_ROW(d, t, us)                                                                   \
  GPU "\t90\tfwd\tdense\tbf16\t" #d "\tcausal\ttq" #t "_tk" #t "_bh64\t128\t64\t4\t1\tsync\t" \
      #us "\t200.000\t2024-06-01T12:00:00Z\n"
#define GOOD_ROW_V1(d, t, us)                                                                \
  GPU "\t90\tfwd\tdense\tbf16\t" #d "\tcausal\ttq" #t "_tk" #t "_bh64\t128\t64\t4\t1\t" #us \
      "\t200.000\t2024-06-01T12:00:00Z\n"

static int count_dir_entries(const char *dir) {
  DIR *d = opendir(dir);
  ck_assert_ptr_nonnull(d);
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
  closedir(d);
  return n;
}

/* ---------------------------------------------------------------- buckets, names, keys */

START_TEST(bucket_rounds_up_to_powers_of_two) {
  char b[SFA_TUNEDB_BUCKET_MAX], err[256];
  ck_assert_int_eq(sfa_tunedb_bucket(10000, 10000, 48, b, sizeof b, NULL, 0), SFA_OK);
  ck_assert_str_eq(b, "tq16384_tk16384_bh64");
  ck_assert_int_eq(sfa_tunedb_bucket(16384, 16384, 64, b, sizeof b, NULL, 0), SFA_OK);
  ck_assert_str_eq(b, "tq16384_tk16384_bh64");
  ck_assert_int_eq(sfa_tunedb_bucket(16385, 1, 65, b, sizeof b, NULL, 0), SFA_OK);
  ck_assert_str_eq(b, "tq32768_tk1_bh128");
  ck_assert_int_eq(sfa_tunedb_bucket(1, 3, 1, b, sizeof b, NULL, 0), SFA_OK);
  ck_assert_str_eq(b, "tq1_tk4_bh1");
  ck_assert_int_eq(sfa_tunedb_bucket(0, 16, 1, b, sizeof b, err, sizeof err),
                   SFA_ERR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(err, "Tq") != NULL, "%s", err);
  ck_assert_int_eq(sfa_tunedb_bucket(16, 16, -4, b, sizeof b, NULL, 0), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_int_eq(sfa_tunedb_bucket(16, 16, 4, b, 8, NULL, 0), SFA_ERR_INVALID_ARGUMENT);

  int64_t tq, tk, bh;
  ck_assert_int_eq(sfa_tunedb_bucket_parse("tq16384_tk8_bh64", &tq, &tk, &bh), 0);
  ck_assert(tq == 16384 && tk == 8 && bh == 64);
  const char *bad[] = {"tq3_tk4_bh4", "tq04_tk4_bh4", "tq4_tk4_bh4x", "tq4_tk4", "", "tq0_tk1_bh1",
                       "tk4_tq4_bh4", "tq4_tk4_bh-4"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    ck_assert_msg(sfa_tunedb_bucket_parse(bad[i], NULL, NULL, NULL) != 0, "accepted %s", bad[i]);
}
END_TEST

START_TEST(file_names_are_sanitized) {
  char n[256];
  ck_assert_int_eq(sfa_tunedb_file_name(GPU, 90, n, sizeof n, NULL, 0), SFA_OK);
  ck_assert_str_eq(n, GPU_FILE);
  ck_assert_int_eq(sfa_tunedb_file_name("A/B.c (x)-y_z", 86, n, sizeof n, NULL, 0), SFA_OK);
  ck_assert_str_eq(n, "A_B_c__x_-y_z_sm86.tsv");
  ck_assert_int_eq(sfa_tunedb_file_name("", 90, n, sizeof n, NULL, 0), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_int_eq(sfa_tunedb_file_name("a\tb", 90, n, sizeof n, NULL, 0),
                   SFA_ERR_INVALID_ARGUMENT);
  ck_assert_int_eq(sfa_tunedb_file_name(GPU, 0, n, sizeof n, NULL, 0), SFA_ERR_INVALID_ARGUMENT);
}
END_TEST

START_TEST(make_key_from_spec) {
  sfa_kernel_spec s = {SFA_PASS_FWD, SFA_MODE_HASH, SFA_DTYPE_FP16, 64, 0, 0, 0, 0, 90, 0,
                       SFA_SPEC_MMA_SYNC};
  sfa_tune_key k;
  char err[256];
  ck_assert_int_eq(sfa_tunedb_make_key(&k, GPU, 90, &s, 5000, 4096, 2 * 16, err, sizeof err),
                   SFA_OK);
  ck_assert_str_eq(k.gpu, GPU);
  ck_assert_int_eq(k.cc, 90);
  ck_assert_int_eq(k.mode, SFA_MODE_HASH);
  ck_assert_int_eq(k.head_dim, 64);
  ck_assert_str_eq(k.bucket, "tq8192_tk4096_bh32");
  ck_assert_uint_eq(k.flags, 0);
  /* the configuration (tiles, mma) is not in the key but in the config */
  s.flags = SFA_FEAT_CAUSAL;
  s.mma = SFA_SPEC_MMA_WGMMA;
  s.block_m = 128, s.block_n = 64, s.num_warps = 8, s.num_stages = 2;
  ck_assert_int_eq(sfa_tunedb_make_key(&k, GPU, 90, &s, 5000, 4096, 2 * 16, err, sizeof err),
                   SFA_OK);
  ck_assert_uint_eq(k.flags, SFA_FEAT_CAUSAL);
  sfa_tune_config c = sfa_tunedb_config_of(&s);
  ck_assert(c.block_m == 128 && c.block_n == 64 && c.num_warps == 8 && c.num_stages == 2);
  ck_assert_int_eq(c.mma, SFA_SPEC_MMA_WGMMA);
  sfa_kernel_spec t = s;
  t.mma = SFA_SPEC_MMA_SYNC;
  sfa_tunedb_config_apply(&c, &t);
  ck_assert_uint_eq(t.flags, SFA_FEAT_CAUSAL);
  ck_assert_int_eq(t.mma, SFA_SPEC_MMA_WGMMA);
  c.mma = SFA_SPEC_MMA_SYNC;
  sfa_tunedb_config_apply(&c, &t);
  ck_assert_uint_eq(t.flags, SFA_FEAT_CAUSAL);
  ck_assert_int_eq(t.mma, SFA_SPEC_MMA_SYNC);
  s.head_dim = 72;
  ck_assert_int_eq(sfa_tunedb_make_key(&k, GPU, 90, &s, 1, 1, 1, err, sizeof err),
                   SFA_ERR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(err, "head_dim") != NULL, "%s", err);
}
END_TEST

/* ---------------------------------------------------------------- rows */

START_TEST(round_trip) {
  sfa_tunedb *db = open_db(0);
  ck_assert_uint_eq(sfa_tunedb_count(db), 0);
  ck_assert_str_eq(sfa_tunedb_warning(db), "");
  sfa_tune_row r[5] = {
    mkrow(SFA_MODE_WINDOW, 64, SFA_FEAT_CAUSAL | SFA_FEAT_BIAS | SFA_FEAT_MASK, 4096, 64, 32, 4,
          2, 321.5),
    mkrow(SFA_MODE_DENSE, 128, SFA_FEAT_CAUSAL, 16384, 128, 64, 4, 1, 1234.567),
    mkrow(SFA_MODE_DENSE, 128, SFA_FEAT_CAUSAL, 2048, 128, 128, 8, 2, 45.25),
    mkrow(SFA_MODE_HASH, 64, 0, 16384, 64, 64, 4, 2, 900.125),
    mkrow(SFA_MODE_DENSE, 128, SFA_FEAT_CAUSAL, 8192, 64, 128, 4, 1, 300.75),
  };
  r[4].cfg.mma = SFA_SPEC_MMA_WGMMA;
  for (int i = 0; i < 5; i++) put_ok(db, &r[i]);
  char err[512] = "";
  ck_assert_msg(sfa_tunedb_save(db, err, sizeof err) == SFA_OK, "%s", err);
  sfa_tunedb_close(db);

  char *text = read_text(g_path);
  ck_assert_msg(strncmp(text, HEADER COLUMNS, strlen(HEADER COLUMNS)) == 0, "file:\n%s", text);
  ck_assert_msg(strstr(text, "\tcausal+bias+mask\ttq4096_tk4096_bh64\t64\t32\t4\t2\tsync\t"
                            "321.5\t421.5\t") != NULL, "file:\n%s", text);
  ck_assert_msg(strstr(text, "\tcausal\ttq8192_tk8192_bh64\t64\t128\t4\t1\twgmma\t300.75\t") !=
                    NULL, "file:\n%s", text);
  ck_assert_msg(strstr(text, "\thash\tbf16\t64\t-\t") != NULL, "file:\n%s", text);
  /* sorted: dense before hash before window; within dense tq2048 before tq16384 */
  const char *d1 = strstr(text, "tq2048"), *d2 = strstr(text, "tq16384_tk16384_bh64\t128"),
             *h = strstr(text, "\thash\t"), *w = strstr(text, "\twindow\t");
  ck_assert(d1 && d2 && h && w && d1 < d2 && d2 < h && h < w);
  ck_assert_int_eq(tu_count_substr(text, "\n"), 7);

  db = open_db(0);
  ck_assert_str_eq(sfa_tunedb_warning(db), "");
  ck_assert_uint_eq(sfa_tunedb_count(db), 5);
  for (int i = 0; i < 5; i++) expect_row(db, &r[i]);
  /* saving an unchanged db reproduces the file byte for byte */
  ck_assert_int_eq(sfa_tunedb_save(db, NULL, 0), SFA_OK);
  char *again = read_text(g_path);
  ck_assert_str_eq(again, text);
  free(again);
  free(text);
  sfa_tunedb_close(db);
}
END_TEST

START_TEST(lookup_miss) {
  sfa_tunedb *db = open_db(0);
  sfa_tune_row r = mkrow(SFA_MODE_DENSE, 128, SFA_FEAT_CAUSAL, 16384, 128, 64, 4, 1, 100);
  put_ok(db, &r);
  sfa_tune_row got;
  ck_assert_int_eq(sfa_tunedb_lookup(db, &r.key, &got), SFA_OK);
  sfa_tune_key k = r.key;
  k.flags = 0;
  ck_assert_int_eq(sfa_tunedb_lookup(db, &k, &got), SFA_ERR_NOT_FOUND);
  k = r.key;
  snprintf(k.bucket, sizeof k.bucket, "tq8192_tk16384_bh64");
  ck_assert_int_eq(sfa_tunedb_lookup(db, &k, &got), SFA_ERR_NOT_FOUND);
  k = r.key;
  k.head_dim = 64;
  ck_assert_int_eq(sfa_tunedb_lookup(db, &k, &got), SFA_ERR_NOT_FOUND);
  k = r.key;
  k.dtype = SFA_DTYPE_FP16;
  ck_assert_int_eq(sfa_tunedb_lookup(db, &k, &got), SFA_ERR_NOT_FOUND);
  k = r.key;
  k.cc = 80;
  ck_assert_int_eq(sfa_tunedb_lookup(db, &k, &got), SFA_ERR_NOT_FOUND);
  k = r.key;
  snprintf(k.gpu, sizeof k.gpu, "NVIDIA H100 80GB HBM3 ");
  ck_assert_int_eq(sfa_tunedb_lookup(db, &k, &got), SFA_ERR_NOT_FOUND);
  k = r.key;
  snprintf(k.bucket, sizeof k.bucket, "garbage");
  ck_assert_int_eq(sfa_tunedb_lookup(db, &k, &got), SFA_ERR_NOT_FOUND);
  sfa_tunedb_close(db);
}
END_TEST

START_TEST(replace) {
  sfa_tunedb *db = open_db(0);
  sfa_tune_row a = mkrow(SFA_MODE_DENSE, 128, SFA_FEAT_CAUSAL, 16384, 128, 64, 4, 1, 100);
  sfa_tune_row b = mkrow(SFA_MODE_DENSE, 128, SFA_FEAT_CAUSAL, 16384, 128, 32, 8, 2, 150);
  put_ok(db, &a);
  put_ok(db, &b); /* a fresh measurement replaces, even if slower */
  ck_assert_uint_eq(sfa_tunedb_count(db), 1);
  expect_row(db, &b);
  /* an empty date is stamped */
  b.date[0] = '\0';
  put_ok(db, &b);
  sfa_tune_row got;
  ck_assert_int_eq(sfa_tunedb_row(db, 0, &got), SFA_OK);
  ck_assert_uint_ge(strlen(got.date), 20);
  ck_assert(got.date[4] == '-' && got.date[10] == 'T' && got.date[19] == 'Z');
  ck_assert_int_eq(sfa_tunedb_row(db, 1, &got), SFA_ERR_NOT_FOUND);
  sfa_tunedb_close(db);
}
END_TEST

START_TEST(put_rejects_bad_rows) {
  sfa_tunedb *db = open_db(0);
  char err[512];
  sfa_tune_row r = mkrow(SFA_MODE_DENSE, 128, 0, 1024, 128, 64, 4, 1, 10);
  sfa_tune_row x = r;
  snprintf(x.key.gpu, sizeof x.key.gpu, "NVIDIA A100");
  ck_assert_int_eq(sfa_tunedb_put(db, &x, err, sizeof err), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(err, "A100") != NULL, "%s", err);
  x = r;
  x.cfg.block_m = 96;
  ck_assert_int_eq(sfa_tunedb_put(db, &x, err, sizeof err), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(err, "block_m") != NULL, "%s", err);
  x = r;
  x.time_us = NAN;
  ck_assert_int_eq(sfa_tunedb_put(db, &x, err, sizeof err), SFA_ERR_INVALID_ARGUMENT);
  x = r;
  x.default_time_us = 0;
  ck_assert_int_eq(sfa_tunedb_put(db, &x, err, sizeof err), SFA_ERR_INVALID_ARGUMENT);
  x = r;
  snprintf(x.key.bucket, sizeof x.key.bucket, "tq1000_tk1024_bh64");
  ck_assert_int_eq(sfa_tunedb_put(db, &x, err, sizeof err), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(err, "size_bucket") != NULL, "%s", err);
  x = r;
  snprintf(x.date, sizeof x.date, "yesterday");
  ck_assert_int_eq(sfa_tunedb_put(db, &x, err, sizeof err), SFA_ERR_INVALID_ARGUMENT);
  x = r; /* the mma kind belongs in cfg.mma; its old flag bit is no flag */
  x.key.flags |= 1u << 4;
  ck_assert_int_eq(sfa_tunedb_put(db, &x, err, sizeof err), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(err, "flags: 0x10 has unknown bits") != NULL, "%s", err);
  x = r;
  x.cfg.mma = (sfa_spec_mma)3;
  ck_assert_int_eq(sfa_tunedb_put(db, &x, err, sizeof err), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(err, "mma: 3 is not allowed") != NULL, "%s", err);
  ck_assert_uint_eq(sfa_tunedb_count(db), 0);
  sfa_tunedb_close(db);
}
END_TEST

/* ---------------------------------------------------------------- corrupt files */

START_TEST(garbage_file_is_ignored) {
  unsigned char junk[3000];
  uint64_t s = 42;
  for (size_t i = 0; i < sizeof junk; i++) junk[i] = (unsigned char)tu_rand_u64(&s);
  char *text;
  sfa_tunedb *db = open_with((const char *)junk, sizeof junk, &text);
  ck_assert_uint_eq(sfa_tunedb_count(db), 0);
  expect_one_warning(text, "ignored");
  ck_assert_msg(strstr(sfa_tunedb_warning(db), g_path) != NULL, "%s", sfa_tunedb_warning(db));
  free(text);
  /* the next save replaces it with a good file */
  sfa_tune_row r = mkrow(SFA_MODE_DENSE, 64, 0, 1024, 128, 64, 4, 2, 10);
  put_ok(db, &r);
  ck_assert_int_eq(sfa_tunedb_save(db, NULL, 0), SFA_OK);
  sfa_tunedb_close(db);
  db = open_captured(&text);
  ck_assert_str_eq(text, "");
  ck_assert_uint_eq(sfa_tunedb_count(db), 1);
  free(text);
  sfa_tunedb_close(db);
}
END_TEST

/* Each header problem ignores the whole file, good rows included. */
START_TEST(bad_headers_ignore_the_file) {
  static const struct { const char *text, *want; } cases[] = {
    {"# something else\n" COLUMNS GOOD_ROW(128, 1024, 100.000), ":1:"},
    {"# sfa tuning db v3 gpu=" GPU " cc=90\n" COLUMNS GOOD_ROW(128, 1024, 100.000), "version"},
    {"# sfa tuning db v0 gpu=" GPU " cc=90\n" COLUMNS_V1 GOOD_ROW_V1(128, 1024, 100.000),
     "version"},
    {"# sfa tuning db v2 gpu=NVIDIA A100-SXM4-80GB cc=90\n" COLUMNS GOOD_ROW(128, 1024, 100.000),
     "A100"},
    {"# sfa tuning db v2 gpu=" GPU " cc=80\n" COLUMNS GOOD_ROW(128, 1024, 100.000), "cc 80"},
    {"# sfa tuning db v2 gpu=" GPU "\n" COLUMNS GOOD_ROW(128, 1024, 100.000), ":1:"},
    {HEADER GOOD_ROW(128, 1024, 100.000), ":2:"},
    /* the column header of the other version */
    {HEADER COLUMNS_V1 GOOD_ROW(128, 1024, 100.000), ":2:"},
    {HEADER_V1 COLUMNS GOOD_ROW_V1(128, 1024, 100.000), ":2:"},
    {HEADER, "no column header"},
    {"", "empty file"},
    {GOOD_ROW(128, 1024, 100.000), ":1:"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char *text;
    sfa_tunedb *db = open_with(cases[i].text, strlen(cases[i].text), &text);
    ck_assert_msg(sfa_tunedb_count(db) == 0, "case %zu kept rows", i);
    expect_one_warning(text, cases[i].want);
    expect_one_warning(text, "ignored");
    free(text);
    sfa_tunedb_close(db);
  }
}
END_TEST

/* Bad rows are skipped one by one, good rows kept, one warning for all. */
START_TEST(bad_rows_are_skipped) {
  const char *file =
      HEADER COLUMNS GOOD_ROW(128, 1024, 100.000)
      /* line 4: truncated */
      GPU "\t90\tfwd\tdense\tbf16\t128\tcausal\ttq2048_tk2048_bh64\t128\t64\n"
      /* bad numbers */
      GPU "\t90\tfwd\tdense\tbf16\t128\tcausal\ttq4096_tk4096_bh64\t128\t64\t4\t1\tsync\tfast\t2.0"
          "\t2024-06-01\n"
      GPU "\t90\tfwd\tdense\tbf16\t128\tcausal\ttq4096_tk4096_bh64\t128\t64\t4\t1\tsync\t-5\t2.0"
          "\t2024-06-01\n"
      GPU "\t90\tfwd\tdense\tbf16\t128\tcausal\ttq4096_tk4096_bh64\t128\t64\t4\t1\tsync\tnan\t2.0"
          "\t2024-06-01\n"
      GPU "\t90\tfwd\tdense\tbf16\t12x8\tcausal\ttq4096_tk4096_bh64\t128\t64\t4\t1\tsync\t1.0\t2.0"
          "\t2024-06-01\n"
      GPU "\t90\tfwd\tdense\tbf16\t128\tcausal\ttq4096_tk4096_bh64\t96\t64\t4\t1\tsync\t1.0\t2.0"
          "\t2024-06-01\n"
      /* unknown names, flags out of order, bad bucket, bad date */
      GPU "\t90\tfwd\tsparse\tbf16\t128\tcausal\ttq4096_tk4096_bh64\t128\t64\t4\t1\tsync\t1\t2"
          "\t2024-06-01\n"
      GPU "\t90\tfwd\twindow\tbf16\t128\tbias+causal\ttq4096_tk4096_bh64\t128\t64\t4\t1\tsync\t1"
          "\t2\t2024-06-01\n"
      GPU "\t90\tfwd\tdense\tbf16\t128\tcausal\ttq4000_tk4096_bh64\t128\t64\t4\t1\tsync\t1\t2"
          "\t2024-06-01\n"
      GPU "\t90\tfwd\tdense\tbf16\t128\tcausal\ttq4096_tk4096_bh64\t128\t64\t4\t1\tsync\t1\t2"
          "\tjune\n"
      /* a row of another gpu */
      "NVIDIA A100\t90\tfwd\tdense\tbf16\t128\tcausal\ttq8192_tk8192_bh64\t128\t64\t4\t1\tsync"
      "\t1\t2\t2024-06-01\n"
      /* too many fields */
      GPU "\t90\tfwd\tdense\tbf16\t64\t-\ttq1_tk1_bh1\t64\t32\t4\t2\tsync\t1\t2\t2024-06-01"
          "\textra\n"
      /* an mma that is neither sync nor wgmma, and a v1 row (no mma column) */
      GPU "\t90\tfwd\tdense\tbf16\t128\tcausal\ttq4096_tk4096_bh64\t128\t64\t4\t1\tfoo\t1\t2"
          "\t2024-06-01\n"
      GOOD_ROW_V1(128, 2048, 100.000)
      "\n# a comment line\n"
      GOOD_ROW(128, 65536, 5000.000)
      /* a duplicate key: the faster one is kept */
      GOOD_ROW(128, 1024, 90.500)
      GOOD_ROW(128, 1024, 95.000)
      /* a wgmma row */
      GPU "\t90\tfwd\tdense\tbf16\t64\t-\ttq8192_tk8192_bh64\t128\t64\t8\t2\twgmma\t3.5\t4.5"
          "\t2024-06-01\n"
      /* last line without its newline */
      GPU "\t90\tfwd\thash\tfp16\t64\t-\ttq1_tk1_bh1\t64\t32\t4\t2\tsync\t0.5\t0.75\t2024-06-01";
  char *text;
  sfa_tunedb *db = open_with(file, strlen(file), &text);
  expect_one_warning(text, ":4:");
  ck_assert_msg(strstr(text, "skipped 14 bad lines") != NULL, "stderr: %s", text);
  ck_assert_msg(strstr(text, "ignored") == NULL, "stderr: %s", text);
  free(text);
  ck_assert_uint_eq(sfa_tunedb_count(db), 4);
  sfa_tune_row r = mkrow(SFA_MODE_DENSE, 128, SFA_FEAT_CAUSAL, 1024, 128, 64, 4, 1, 90.5);
  r.default_time_us = 200;
  expect_row(db, &r);
  sfa_tune_row h = mkrow(SFA_MODE_HASH, 64, 0, 1, 64, 32, 4, 2, 0.5);
  h.key.dtype = SFA_DTYPE_FP16;
  snprintf(h.key.bucket, sizeof h.key.bucket, "tq1_tk1_bh1");
  h.default_time_us = 0.75;
  snprintf(h.date, sizeof h.date, "2024-06-01");
  expect_row(db, &h);
  sfa_tune_row w = mkrow(SFA_MODE_DENSE, 64, 0, 8192, 128, 64, 8, 2, 3.5);
  w.cfg.mma = SFA_SPEC_MMA_WGMMA;
  w.default_time_us = 4.5;
  snprintf(w.date, sizeof w.date, "2024-06-01");
  expect_row(db, &w);
  sfa_tunedb_close(db);
}
END_TEST

/* Only sync and wgmma are mma kinds; the warning names the column. */
START_TEST(bad_mma_value_makes_the_row_bad) {
  const char *file =
      HEADER COLUMNS
      GPU "\t90\tfwd\tdense\tbf16\t128\tcausal\ttq4096_tk4096_bh64\t64\t128\t4\t1\tfoo\t1\t2"
          "\t2024-06-01\n"
      GOOD_ROW(128, 1024, 100.000);
  char *text;
  sfa_tunedb *db = open_with(file, strlen(file), &text);
  expect_one_warning(text, ":3:");
  ck_assert_msg(strstr(text, "mma") && strstr(text, "foo"), "stderr: %s", text);
  ck_assert_msg(strstr(text, "ignored") == NULL, "stderr: %s", text);
  free(text);
  ck_assert_uint_eq(sfa_tunedb_count(db), 1);
  sfa_tunedb_close(db);
}
END_TEST

/* A v1 file (before the mma column) is read, its rows as mma sync; the next
** save writes v2. */
START_TEST(v1_file_is_read_as_mma_sync) {
  const char *file = HEADER_V1 COLUMNS_V1 GOOD_ROW_V1(128, 1024, 100.000)
      GOOD_ROW_V1(64, 4096, 50.250)
      /* a v2 row (one field more) in a v1 file is bad */
      GOOD_ROW(128, 2048, 70.000);
  char *text;
  sfa_tunedb *db = open_with(file, strlen(file), &text);
  expect_one_warning(text, ":5:");
  ck_assert_msg(strstr(text, "skipped 1 bad line") != NULL, "stderr: %s", text);
  free(text);
  ck_assert_uint_eq(sfa_tunedb_count(db), 2);
  sfa_tune_row a = mkrow(SFA_MODE_DENSE, 128, SFA_FEAT_CAUSAL, 1024, 128, 64, 4, 1, 100);
  sfa_tune_row b = mkrow(SFA_MODE_DENSE, 64, SFA_FEAT_CAUSAL, 4096, 128, 64, 4, 1, 50.25);
  a.default_time_us = b.default_time_us = 200;
  expect_row(db, &a); /* cfg.mma sync */
  expect_row(db, &b);
  ck_assert_int_eq(sfa_tunedb_save(db, NULL, 0), SFA_OK);
  sfa_tunedb_close(db);
  char *saved = read_text(g_path);
  ck_assert_msg(strncmp(saved, HEADER COLUMNS, strlen(HEADER COLUMNS)) == 0, "file:\n%s", saved);
  ck_assert_int_eq(tu_count_substr(saved, "\tsync\t"), 2);
  free(saved);
  db = open_captured(&text);
  ck_assert_str_eq(text, "");
  ck_assert_uint_eq(sfa_tunedb_count(db), 2);
  expect_row(db, &a);
  free(text);
  sfa_tunedb_close(db);
}
END_TEST

START_TEST(binary_line_is_skipped) {
  char file[2048];
  size_t n = 0;
  const char *a = HEADER COLUMNS GOOD_ROW(128, 1024, 100.000);
  memcpy(file + n, a, strlen(a)), n += strlen(a);
  const char bin[] = "NVIDIA\0H100\t\xff\xfe\n";
  memcpy(file + n, bin, sizeof bin - 1), n += sizeof bin - 1;
  const char *b = GOOD_ROW(64, 1024, 100.000);
  memcpy(file + n, b, strlen(b)), n += strlen(b);
  char *text;
  sfa_tunedb *db = open_with(file, n, &text);
  expect_one_warning(text, ":4: binary data");
  free(text);
  ck_assert_uint_eq(sfa_tunedb_count(db), 2);
  sfa_tunedb_close(db);
}
END_TEST

START_TEST(quiet_suppresses_the_warning) {
  write_text(g_path, "junk\n", 5);
  char errpath[600];
  snprintf(errpath, sizeof errpath, "%s/stderr.txt", g_dir);
  int saved = tu_capture_stderr(errpath);
  sfa_tunedb *db = open_db(1);
  tu_restore_stderr(saved);
  char *text = read_text(errpath);
  ck_assert_str_eq(text, "");
  ck_assert_msg(strstr(sfa_tunedb_warning(db), "ignored") != NULL, "%s", sfa_tunedb_warning(db));
  free(text);
  sfa_tunedb_close(db);
}
END_TEST

/* Random byte flips and truncations of a good file: never a crash, never more
** rows than the file had, at most one warning per open. */
START_TEST(mutated_files_never_crash) {
  sfa_tunedb *db = open_db(0);
  for (int i = 0; i < 8; i++) {
    sfa_tune_row r = mkrow(i % 2 ? SFA_MODE_HASH : SFA_MODE_DENSE, 64, 0, 256 << i, 128, 64, 4,
                           2, 10 + i);
    put_ok(db, &r);
  }
  ck_assert_int_eq(sfa_tunedb_save(db, NULL, 0), SFA_OK);
  sfa_tunedb_close(db);
  char *good = read_text(g_path);
  size_t len = strlen(good);
  char *buf = malloc(len + 1);
  uint64_t rng = 7;
  for (int iter = 0; iter < 300; iter++) {
    memcpy(buf, good, len);
    size_t n = len;
    int flips = 1 + (int)(tu_rand_u64(&rng) % 4);
    for (int k = 0; k < flips; k++) buf[tu_rand_u64(&rng) % n] = (char)tu_rand_u64(&rng);
    if (iter % 3 == 0) n = (size_t)(tu_rand_u64(&rng) % (len + 1));
    char *text;
    db = open_with(buf, n, &text);
    ck_assert_uint_le(sfa_tunedb_count(db), 8);
    ck_assert_int_le(tu_count_substr(text, "sfa: warning"), 1);
    free(text);
    sfa_tunedb_close(db);
  }
  free(buf);
  free(good);
}
END_TEST

/* ---------------------------------------------------------------- merge, save, export */

START_TEST(merge_keeps_faster) {
  char other[1024], err[512] = "";
  snprintf(other, sizeof other, "%s/other/" GPU_FILE, g_dir);
  sfa_tune_row k1 = mkrow(SFA_MODE_DENSE, 128, SFA_FEAT_CAUSAL, 1024, 128, 64, 4, 1, 100);
  sfa_tune_row k2 = mkrow(SFA_MODE_DENSE, 128, SFA_FEAT_CAUSAL, 2048, 128, 64, 4, 1, 50);
  sfa_tune_row k1b = mkrow(SFA_MODE_DENSE, 128, SFA_FEAT_CAUSAL, 1024, 128, 32, 8, 2, 80);
  sfa_tune_row k2b = mkrow(SFA_MODE_DENSE, 128, SFA_FEAT_CAUSAL, 2048, 128, 32, 8, 2, 60);
  sfa_tune_row k3 = mkrow(SFA_MODE_HASH, 128, 0, 2048, 64, 64, 4, 1, 70);
  /* the other file, written through a second db */
  sfa_tunedb *b = NULL;
  ck_assert_int_eq(sfa_tunedb_open_path(&b, other, GPU, 90, 0, err, sizeof err), SFA_OK);
  put_ok(b, &k1b);
  put_ok(b, &k2b);
  put_ok(b, &k3);
  ck_assert_msg(sfa_tunedb_save(b, err, sizeof err) == SFA_OK, "%s", err);
  sfa_tunedb_close(b);

  sfa_tunedb *db = open_db(0);
  put_ok(db, &k1);
  put_ok(db, &k2);
  int changed = -1;
  ck_assert_msg(sfa_tunedb_merge_file(db, other, &changed, err, sizeof err) == SFA_OK, "%s", err);
  ck_assert_int_eq(changed, 2);
  ck_assert_uint_eq(sfa_tunedb_count(db), 3);
  expect_row(db, &k1b);
  expect_row(db, &k2);
  expect_row(db, &k3);
  /* merging again changes nothing */
  ck_assert_int_eq(sfa_tunedb_merge_file(db, other, &changed, err, sizeof err), SFA_OK);
  ck_assert_int_eq(changed, 0);

  /* errors: missing, foreign, bad header; nothing merged */
  char path[1100];
  snprintf(path, sizeof path, "%s/nope.tsv", g_dir);
  ck_assert_int_eq(sfa_tunedb_merge_file(db, path, &changed, err, sizeof err), SFA_ERR_IO);
  ck_assert_msg(strstr(err, "nope.tsv") != NULL, "%s", err);
  snprintf(path, sizeof path, "%s/foreign.tsv", g_dir);
  const char *foreign = "# sfa tuning db v2 gpu=NVIDIA A100 cc=80\n" COLUMNS
                        "NVIDIA A100\t80\tfwd\tdense\tbf16\t64\t-\ttq1_tk1_bh1\t64\t32\t4\t2"
                        "\tsync\t1\t2\t2024-06-01\n";
  write_text(path, foreign, strlen(foreign));
  ck_assert_int_eq(sfa_tunedb_merge_file(db, path, &changed, err, sizeof err),
                   SFA_ERR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(err, "A100") != NULL, "%s", err);
  snprintf(path, sizeof path, "%s/bad.tsv", g_dir);
  write_text(path, "hello\n", 6);
  ck_assert_int_eq(sfa_tunedb_merge_file(db, path, &changed, err, sizeof err), SFA_ERR_CORRUPT);
  ck_assert_int_eq(changed, 0);
  ck_assert_uint_eq(sfa_tunedb_count(db), 3);
  sfa_tunedb_close(db);
}
END_TEST

START_TEST(save_is_atomic_and_leaves_no_temp_files) {
  char dir[1024];
  snprintf(dir, sizeof dir, "%s/tuning", g_dir);
  sfa_tunedb *db = open_db(0);
  for (int i = 0; i < 20; i++) {
    sfa_tune_row r = mkrow(SFA_MODE_DENSE, 64, 0, 1 << (i % 12), 128, 64, 4, 2, 10 + i);
    put_ok(db, &r);
    ck_assert_int_eq(sfa_tunedb_save(db, NULL, 0), SFA_OK);
    ck_assert_int_eq(count_dir_entries(dir), 1);
  }
  ck_assert_uint_eq(sfa_tunedb_count(db), 12);
  struct stat sb;
  ck_assert_int_eq(stat(g_path, &sb), 0);
  ck_assert_int_eq(sb.st_mode & 0777, 0644);
  sfa_tunedb_close(db);
}
END_TEST

/* Two handles on one file (two processes): a save keeps the other's rows. */
START_TEST(save_keeps_rows_saved_by_another_writer) {
  sfa_tunedb *a = open_db(0), *b = open_db(0);
  sfa_tune_row ra = mkrow(SFA_MODE_DENSE, 64, 0, 1024, 128, 64, 4, 2, 10);
  sfa_tune_row rb = mkrow(SFA_MODE_HASH, 64, 0, 1024, 64, 64, 4, 2, 20);
  sfa_tune_row both_a = mkrow(SFA_MODE_DENSE, 128, 0, 1024, 128, 64, 4, 1, 30);
  sfa_tune_row both_b = mkrow(SFA_MODE_DENSE, 128, 0, 1024, 64, 64, 4, 1, 40);
  put_ok(a, &ra);
  put_ok(a, &both_a);
  ck_assert_int_eq(sfa_tunedb_save(a, NULL, 0), SFA_OK);
  put_ok(b, &rb);
  put_ok(b, &both_b); /* b's own measurement of a shared key wins in b's save */
  ck_assert_int_eq(sfa_tunedb_save(b, NULL, 0), SFA_OK);
  sfa_tunedb_close(a);
  sfa_tunedb_close(b);
  sfa_tunedb *c = open_db(0);
  ck_assert_uint_eq(sfa_tunedb_count(c), 3);
  expect_row(c, &ra);
  expect_row(c, &rb);
  expect_row(c, &both_b);
  sfa_tunedb_close(c);
}
END_TEST

START_TEST(export_and_open_path) {
  char path[1100], err[512] = "";
  snprintf(path, sizeof path, "%s/ship/sub/h100.tsv", g_dir);
  sfa_tunedb *db = open_db(0);
  sfa_tune_row r = mkrow(SFA_MODE_WINDOW, 64, SFA_FEAT_CAUSAL, 4096, 128, 64, 4, 2, 77.125);
  put_ok(db, &r);
  ck_assert_msg(sfa_tunedb_export(db, path, err, sizeof err) == SFA_OK, "%s", err);
  sfa_tunedb_close(db);
  ck_assert_int_eq(access(g_path, F_OK), -1); /* export does not save */
  sfa_tunedb *s = NULL;
  ck_assert_int_eq(sfa_tunedb_open_path(&s, path, GPU, 90, 0, err, sizeof err), SFA_OK);
  ck_assert_str_eq(sfa_tunedb_warning(s), "");
  ck_assert_uint_eq(sfa_tunedb_count(s), 1);
  expect_row(s, &r);
  sfa_tunedb_close(s);
  /* the shipped file read as another gpu is ignored with a warning */
  char errpath[600];
  snprintf(errpath, sizeof errpath, "%s/stderr.txt", g_dir);
  int saved = tu_capture_stderr(errpath);
  ck_assert_int_eq(sfa_tunedb_open_path(&s, path, "NVIDIA A100", 80, 0, err, sizeof err), SFA_OK);
  tu_restore_stderr(saved);
  char *text = read_text(errpath);
  ck_assert_int_eq(tu_count_substr(text, "sfa: warning"), 1);
  ck_assert_uint_eq(sfa_tunedb_count(s), 0);
  free(text);
  sfa_tunedb_close(s);
}
END_TEST

/* Every table shipped under cache/tuned/ (exported by sfa-tune on that GPU)
** reads without a warning under the file name of its header's gpu and cc, and
** each row names a valid spec for that arch whose time beats the default's:
** a row that does not is no reason to ship it. The directory holds *.tsv
** tables and its README.md, nothing else (the install takes *.tsv only); it
** may hold no table. */
START_TEST(shipped_tables_hold_valid_winners) {
  const char *dir = tu_source_path("cache/tuned");
  DIR *d = opendir(dir);
  ck_assert_msg(d != NULL, "%s: cannot open", dir);
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.' || strcmp(e->d_name, "README.md") == 0) continue;
    const size_t len = strlen(e->d_name);
    ck_assert_msg(len > 4 && strcmp(e->d_name + len - 4, ".tsv") == 0,
                  "%s/%s: not a table (*.tsv) nor README.md", dir, e->d_name);
    char path[1024], gpu[SFA_TUNEDB_GPU_MAX] = "", want[256], err[512] = "";
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    char *text = read_text(path);
    const char *g = strstr(text, " gpu="), *c = strstr(text, " cc=");
    ck_assert_msg(g && c && c > g && strchr(text, '\n') > c, "%s: no header", path);
    snprintf(gpu, sizeof gpu, "%.*s", (int)(c - g - 5), g + 5);
    const int cc = atoi(c + 4);
    free(text);
    ck_assert_int_eq(sfa_tunedb_file_name(gpu, cc, want, sizeof want, err, sizeof err), SFA_OK);
    ck_assert_str_eq(e->d_name, want);
    sfa_tunedb *db = NULL;
    ck_assert_int_eq(sfa_tunedb_open_path(&db, path, gpu, cc, 0, err, sizeof err), SFA_OK);
    ck_assert_msg(strcmp(sfa_tunedb_warning(db), "") == 0, "%s: %s", path,
                  sfa_tunedb_warning(db));
    ck_assert_uint_gt(sfa_tunedb_count(db), 0);
    for (size_t i = 0; i < sfa_tunedb_count(db); i++) {
      sfa_tune_row r;
      ck_assert_int_eq(sfa_tunedb_row(db, i, &r), SFA_OK);
      sfa_kernel_spec spec = {r.key.pass, r.key.mode, r.key.dtype, r.key.head_dim, 0, 0, 0, 0,
                              cc, r.key.flags, SFA_SPEC_MMA_SYNC};
      sfa_tunedb_config_apply(&r.cfg, &spec);
      ck_assert_msg(sfa_spec_validate(&spec, err, sizeof err) == SFA_OK, "%s row %zu: %s", path,
                    i, err);
      ck_assert_msg(r.time_us < r.default_time_us, "%s row %zu: %g us does not beat %g", path, i,
                    r.time_us, r.default_time_us);
      /* nor names what the default already picks for its size (sfa__spec_for_keys) */
      int64_t tq, tk, bh;
      ck_assert_int_eq(sfa_tunedb_bucket_parse(r.key.bucket, &tq, &tk, &bh), 0);
      sfa_kernel_spec def = spec;
      ck_assert_int_eq(sfa_spec_default(&def, NULL, 0), SFA_OK);
      sfa__spec_for_keys(&def, tk);
      ck_assert_msg(!sfa__spec_same_config(&def, &spec), "%s row %zu: the default's own tiles",
                    path, i);
    }
    sfa_tunedb_close(db);
  }
  closedir(d);
}
END_TEST

/* The parent of the cache directory is a regular file: as root, chmod would
** not stop writes, this does. */
START_TEST(unwritable_dir_is_an_error) {
  char file[1024], dir[1100], err[1024] = "";
  snprintf(file, sizeof file, "%s/plainfile", g_dir);
  write_text(file, "x", 1);
  snprintf(dir, sizeof dir, "%s/cache", file);
  sfa_tunedb *db = NULL;
  ck_assert_int_eq(sfa_tunedb_open(&db, dir, GPU, 90, 0, err, sizeof err), SFA_OK);
  ck_assert_str_eq(sfa_tunedb_warning(db), ""); /* nothing to read is not a warning */
  sfa_tune_row r = mkrow(SFA_MODE_DENSE, 64, 0, 1024, 128, 64, 4, 2, 10);
  put_ok(db, &r);
  ck_assert_int_eq(sfa_tunedb_save(db, err, sizeof err), SFA_ERR_IO);
  ck_assert_msg(strstr(err, "plainfile") && strstr(err, "Not a directory"), "%s", err);
  ck_assert_uint_eq(sfa_tunedb_count(db), 1); /* rows stay in memory */
  snprintf(dir, sizeof dir, "%s/x.tsv", file);
  ck_assert_int_eq(sfa_tunedb_export(db, dir, err, sizeof err), SFA_ERR_IO);
  ck_assert_msg(strstr(err, "x.tsv") != NULL, "%s", err);
  sfa_tunedb_close(db);
  /* a directory where the db file should be */
  char cmd[1200];
  snprintf(cmd, sizeof cmd, "mkdir -p '%s'", g_path);
  ck_assert_int_eq(system(cmd), 0);
  char *text;
  db = open_captured(&text);
  expect_one_warning(text, "ignored");
  free(text);
  put_ok(db, &r);
  ck_assert_int_eq(sfa_tunedb_save(db, err, sizeof err), SFA_ERR_IO);
  snprintf(dir, sizeof dir, "%s/tuning", g_dir);
  ck_assert_int_eq(count_dir_entries(dir), 1); /* no temporary file left */
  sfa_tunedb_close(db);
}
END_TEST

START_TEST(bad_open_arguments) {
  sfa_tunedb *db = (sfa_tunedb *)1;
  char err[256];
  ck_assert_int_eq(sfa_tunedb_open(&db, g_dir, "", 90, 0, err, sizeof err),
                   SFA_ERR_INVALID_ARGUMENT);
  ck_assert_ptr_null(db);
  ck_assert_int_eq(sfa_tunedb_open(&db, g_dir, "bad\nname", 90, 0, err, sizeof err),
                   SFA_ERR_INVALID_ARGUMENT);
  ck_assert_int_eq(sfa_tunedb_open(&db, g_dir, GPU, -1, 0, err, sizeof err),
                   SFA_ERR_INVALID_ARGUMENT);
  ck_assert_int_eq(sfa_tunedb_open(NULL, g_dir, GPU, 90, 0, err, sizeof err),
                   SFA_ERR_INVALID_ARGUMENT);
  ck_assert_int_eq(sfa_tunedb_open_path(&db, "", GPU, 90, 0, err, sizeof err),
                   SFA_ERR_INVALID_ARGUMENT);
  sfa_tunedb_close(NULL);
}
END_TEST

/* ---------------------------------------------------------------- time formats */

/* Times of every magnitude read back as written (9 significant digits). */
START_TEST(times_round_trip_through_the_file) {
  static const double times[][2] = {
    {1e-7, 2e-7},        /* below 0.0005 us: once written as 0.000 */
    {0.0004, 0.00049},
    {4.9e-324, 1e-310},  /* subnormal */
    {123.456789, 1234.5678},
    {1e15, 9.99999999e14}, /* the largest allowed */
    {3.0, 1e-3},
  };
  const int n = (int)(sizeof times / sizeof times[0]);
  sfa_tunedb *db = open_db(0);
  sfa_tune_row r[8];
  for (int i = 0; i < n; i++) {
    r[i] = mkrow(SFA_MODE_DENSE, 64, 0, 1 << i, 128, 64, 4, 2, 1);
    r[i].time_us = times[i][0];
    r[i].default_time_us = times[i][1];
    put_ok(db, &r[i]);
  }
  char err[512] = "";
  ck_assert_msg(sfa_tunedb_save(db, err, sizeof err) == SFA_OK, "%s", err);
  sfa_tunedb_close(db);
  char *file = read_text(g_path), *text;
  db = open_captured(&text);
  ck_assert_msg(strcmp(text, "") == 0, "reading back warned: %s\nfile:\n%s", text, file);
  ck_assert_uint_eq(sfa_tunedb_count(db), (size_t)n);
  for (int i = 0; i < n; i++) {
    sfa_tune_row got;
    ck_assert_int_eq(sfa_tunedb_lookup(db, &r[i].key, &got), SFA_OK);
    ck_assert_msg(fabs(got.time_us - r[i].time_us) <= 1e-8 * r[i].time_us &&
                      fabs(got.default_time_us - r[i].default_time_us) <=
                          1e-8 * r[i].default_time_us,
                  "row %d: wrote %.17g %.17g, read %.17g %.17g\nfile:\n%s", i, r[i].time_us,
                  r[i].default_time_us, got.time_us, got.default_time_us, file);
  }
  ck_assert_msg(strstr(file, "\t1e-07\t2e-07\t") && strstr(file, "\t123.456789\t1234.5678\t") &&
                    strstr(file, "\t3\t0.001\t"), "file:\n%s", file);
  /* saving what was read reproduces the file */
  ck_assert_int_eq(sfa_tunedb_save(db, NULL, 0), SFA_OK);
  char *again = read_text(g_path);
  ck_assert_str_eq(again, file);
  free(again);
  free(file);
  free(text);
  sfa_tunedb_close(db);
}
END_TEST

/* A time that could not be written so that it reads back is refused by put,
** and such a row in a file is a bad row. */
START_TEST(times_beyond_the_limit_are_refused) {
  sfa_tunedb *db = open_db(0);
  char err[512] = "";
  sfa_tune_row r = mkrow(SFA_MODE_DENSE, 64, 0, 1024, 128, 64, 4, 2, 1);
  r.time_us = 1.7976931348623157e308;
  ck_assert_int_eq(sfa_tunedb_put(db, &r, err, sizeof err), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(err, "time_us") != NULL, "%s", err);
  r.time_us = 1;
  r.default_time_us = 1.1e15;
  ck_assert_int_eq(sfa_tunedb_put(db, &r, err, sizeof err), SFA_ERR_INVALID_ARGUMENT);
  sfa_tunedb_close(db);
  char *text;
  const char *f = HEADER COLUMNS GOOD_ROW(128, 1024, 2e15) GOOD_ROW(64, 1024, 1e15);
  db = open_with(f, strlen(f), &text);
  expect_one_warning(text, ":3:");
  ck_assert_uint_eq(sfa_tunedb_count(db), 1);
  free(text);
  sfa_tunedb_close(db);
}
END_TEST

/* ---------------------------------------------------------------- special files */

static void make_parent(const char *path) {
  char cmd[1200];
  snprintf(cmd, sizeof cmd, "mkdir -p \"$(dirname '%s')\"", path);
  ck_assert_int_eq(system(cmd), 0);
}

START_TEST(a_fifo_db_is_ignored_without_blocking) {
  make_parent(g_path);
  ck_assert_int_eq(mkfifo(g_path, 0600), 0);
  char *text, err[1024] = "";
  sfa_tunedb *db = open_captured(&text);
  ck_assert_uint_eq(sfa_tunedb_count(db), 0);
  expect_one_warning(text, "FIFO");
  free(text);
  char other[1100];
  int changed = 0;
  snprintf(other, sizeof other, "%s/other.tsv", g_dir);
  ck_assert_int_eq(mkfifo(other, 0600), 0);
  ck_assert_int_eq(sfa_tunedb_merge_file(db, other, &changed, err, sizeof err), SFA_ERR_IO);
  ck_assert_msg(strstr(err, other) && strstr(err, "FIFO"), "%s", err);
  sfa_tunedb_close(db);
}
END_TEST

START_TEST(a_character_device_is_refused_unread) {
  tu_limit_memory();
  sfa_tunedb *db = open_db(0);
  char err[1024] = "";
  int changed = 0;
  double t0 = tu_now_ms();
  ck_assert_int_eq(sfa_tunedb_merge_file(db, "/dev/zero", &changed, err, sizeof err),
                   SFA_ERR_IO);
  ck_assert_msg(strstr(err, "/dev/zero") && strstr(err, "character device"), "%s", err);
  ck_assert_double_lt(tu_now_ms() - t0, 5000);
  sfa_tunedb_close(db);
}
END_TEST

/* A 15 GB (sparse) db whose first lines are good is refused by its size. */
START_TEST(an_oversized_db_is_refused_unread) {
  const char *head = HEADER COLUMNS GOOD_ROW(128, 1024, 100.000);
  write_text(g_path, head, strlen(head));
  ck_assert_int_eq(truncate(g_path, (off_t)(15ull << 30)), 0);
  tu_limit_memory();
  double t0 = tu_now_ms();
  char *text;
  sfa_tunedb *db = open_captured(&text);
  ck_assert_uint_eq(sfa_tunedb_count(db), 0);
  expect_one_warning(text, "more than");
  ck_assert_double_lt(tu_now_ms() - t0, 5000);
  free(text);
  sfa_tunedb_close(db);
}
END_TEST

/* The db in the cache has a name the cache made: a symbolic link there is not
** followed (an explicit path, sfa_tunedb_open_path, may be one). */
START_TEST(a_symlinked_db_in_the_cache_is_not_followed) {
  char real[1100], *text;
  snprintf(real, sizeof real, "%s/shipped.tsv", g_dir);
  const char *f = HEADER COLUMNS GOOD_ROW(128, 1024, 100);
  write_text(real, f, strlen(f));
  make_parent(g_path);
  ck_assert_int_eq(symlink(real, g_path), 0);
  sfa_tunedb *db = open_captured(&text);
  ck_assert_uint_eq(sfa_tunedb_count(db), 0);
  expect_one_warning(text, "symbolic link");
  free(text);
  sfa_tunedb_close(db);
  char link[1100], err[512] = "";
  snprintf(link, sizeof link, "%s/link.tsv", g_dir);
  ck_assert_int_eq(symlink(real, link), 0);
  ck_assert_int_eq(sfa_tunedb_open_path(&db, link, GPU, 90, 0, err, sizeof err), SFA_OK);
  ck_assert_uint_eq(sfa_tunedb_count(db), 1);
  sfa_tunedb_close(db);
}
END_TEST

/* Export and save write a temporary file and rename it over the target: a
** FIFO or device there is refused, not replaced. */
START_TEST(export_refuses_to_replace_a_special_file) {
  char fifo[1100], err[1024] = "";
  snprintf(fifo, sizeof fifo, "%s/ship.tsv", g_dir);
  ck_assert_int_eq(mkfifo(fifo, 0600), 0);
  sfa_tunedb *db = open_db(0);
  sfa_tune_row r = mkrow(SFA_MODE_DENSE, 64, 0, 1024, 128, 64, 4, 2, 10);
  put_ok(db, &r);
  ck_assert_int_eq(sfa_tunedb_export(db, fifo, err, sizeof err), SFA_ERR_IO);
  ck_assert_msg(strstr(err, fifo) && strstr(err, "FIFO"), "%s", err);
  struct stat sb;
  ck_assert_int_eq(lstat(fifo, &sb), 0);
  ck_assert(S_ISFIFO(sb.st_mode));
  ck_assert_int_eq(count_dir_entries(g_dir), 1); /* no temporary file left */
  sfa_tunedb_close(db);
}
END_TEST

START_TEST(the_tuning_dir_is_created_with_mode_0700) {
  sfa_tunedb *db = open_db(0);
  sfa_tune_row r = mkrow(SFA_MODE_DENSE, 64, 0, 1024, 128, 64, 4, 2, 10);
  put_ok(db, &r);
  ck_assert_int_eq(sfa_tunedb_save(db, NULL, 0), SFA_OK);
  sfa_tunedb_close(db);
  char dir[1100];
  snprintf(dir, sizeof dir, "%s/tuning", g_dir);
  struct stat sb;
  ck_assert_int_eq(stat(dir, &sb), 0);
  ck_assert_int_eq(sb.st_mode & 07777, 0700);
}
END_TEST

static Suite *tunedb_suite(void) {
  Suite *s = suite_create("tunedb");
  TCase *tc = tcase_create("tunedb");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, bucket_rounds_up_to_powers_of_two);
  tcase_add_test(tc, file_names_are_sanitized);
  tcase_add_test(tc, make_key_from_spec);
  tcase_add_test(tc, round_trip);
  tcase_add_test(tc, lookup_miss);
  tcase_add_test(tc, replace);
  tcase_add_test(tc, put_rejects_bad_rows);
  tcase_add_test(tc, garbage_file_is_ignored);
  tcase_add_test(tc, bad_headers_ignore_the_file);
  tcase_add_test(tc, bad_rows_are_skipped);
  tcase_add_test(tc, bad_mma_value_makes_the_row_bad);
  tcase_add_test(tc, v1_file_is_read_as_mma_sync);
  tcase_add_test(tc, binary_line_is_skipped);
  tcase_add_test(tc, quiet_suppresses_the_warning);
  tcase_add_test(tc, mutated_files_never_crash);
  tcase_add_test(tc, merge_keeps_faster);
  tcase_add_test(tc, save_is_atomic_and_leaves_no_temp_files);
  tcase_add_test(tc, save_keeps_rows_saved_by_another_writer);
  tcase_add_test(tc, export_and_open_path);
  tcase_add_test(tc, unwritable_dir_is_an_error);
  tcase_add_test(tc, bad_open_arguments);
  tcase_add_test(tc, times_round_trip_through_the_file);
  tcase_add_test(tc, times_beyond_the_limit_are_refused);
  tcase_add_test(tc, the_tuning_dir_is_created_with_mode_0700);
  tcase_add_test(tc, a_symlinked_db_in_the_cache_is_not_followed);
  tcase_add_test(tc, export_refuses_to_replace_a_special_file);
  tcase_add_test(tc, shipped_tables_hold_valid_winners);
  suite_add_tcase(s, tc);
  /* readers that might block or read without bound: a short timeout */
  tc = tcase_create("special_files");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, a_fifo_db_is_ignored_without_blocking);
  tcase_add_test(tc, a_character_device_is_refused_unread);
  tcase_add_test(tc, an_oversized_db_is_refused_unread);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return tu_run_suite(tunedb_suite()); }
