/*
** test_kernel_dir.c -- directories of ahead-of-time kernels
** (runtime/kernel_dir.h, sfa_context_add_kernel_dir, SFA_KERNEL_DIR), on
** manifests written with gen/manifest.c's writer over stand-in cubin bytes
** (the loader checks sizes and checksums, not ELF contents): a missing
** directory, a file instead of one, a missing or malformed manifest, rows
** whose arch disagrees with their name; the lookup finds exactly the row of
** a name (arch included) in the first directory that lists it; a corrupted,
** truncated, longer or missing cubin is rejected with a message naming the
** file, warned about once, and then passed over (the next directory listing
** the kernel is used); so is a row whose key is not the key this runtime
** computes for its kernel, and a FIFO in place of a cubin or of the manifest
** never blocks; rows without a cubin are passed over. No GPU.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sfa.h"
#include "gen/manifest.h"
#include "runtime/internal.h"
#include "runtime/kernel_dir.h"
#include "runtime/keymat.h"
#include "testutil.h"

static const char *const NAMES[4] = {
  "sfa_fwd_dense_causal_bf16_d128_m128n64_w4s1_sm90",
  "sfa_fwd_dense_causal_bf16_d128_m128n64_w4s1_sm80",
  "sfa_fwd_hash_fp16_d64_m128n64_w4s2_sm90",
  "sfa_fwd_window_causal_bias_mask_bf16_d64_m128n64_w4s2_sm80",
};
#define NK 4

static char root[512];
static unsigned g_wrong_key; /* rows (bit i = NAMES[i]) that make_dir writes with a wrong key */

static void setup(void) {
  snprintf(root, sizeof root, "%s", tu_mkdtemp());
  g_wrong_key = 0;
}
static void teardown(void) { tu_rm_rf(root); }

/* ------------------------------------------------------------ helpers */

static void spit(const char *path, const void *data, size_t len) {
  FILE *f = fopen(path, "wb");
  ck_assert_msg(f != NULL, "cannot write %s", path);
  ck_assert_uint_eq(fwrite(data, 1, len, f), len);
  fclose(f);
}

/* The stand-in cubin of a kernel in a directory: bytes that depend on both. */
static size_t cubin_bytes(const char *dir_tag, int i, unsigned char *buf, size_t cap) {
  size_t n = 700 + 97 * (size_t)i;
  ck_assert_uint_le(n, cap);
  uint64_t s = 0x5FA + (uint64_t)i * 1315423911u + (uint64_t)strlen(dir_tag) * 2654435761u;
  for (const char *p = dir_tag; *p; p++) s = s * 31 + (unsigned char)*p;
  for (size_t j = 0; j < n; j++) buf[j] = (unsigned char)(tu_rand_u64(&s) >> 56);
  memcpy(buf, "\x7f" "ELF", 4);
  return n;
}

/* DIR = root/tag with the kernels of mask (bit i = NAMES[i]); rows of bit i
** in nocubin get cubin "-". Returns the path (static per call site copy). */
static const char *make_dir(const char *tag, unsigned mask, unsigned nocubin, char *dir,
                            size_t n) {
  char path[1024], line[1024];
  unsigned char bin[2048];
  snprintf(dir, n, "%s/%s", root, tag);
  ck_assert_int_eq(mkdir(dir, 0755), 0);
  char *text = malloc(16384);
  ck_assert_ptr_nonnull(text);
  snprintf(text, 16384, "%s", sfa__manifest_header());
  for (int i = 0; i < NK; i++) {
    if (!(mask & (1u << i))) continue;
    sfa_kernel_spec s;
    ck_assert_int_eq(sfa_spec_parse(NAMES[i], &s, NULL, 0), SFA_OK);
    /* the key sfa-gen writes: that of the generated source, here with an NVRTC
    ** version this process does not have (12.3): the runtime checks a row's
    ** key with the version the row names, so an AOT dir serves a process with
    ** another NVRTC, or none */
    char key[SFA_STORE_KEY_HEX], *src = NULL;
    ck_assert_int_eq(sfa_generate(&s, &src, NULL, 0), SFA_OK);
    ck_assert_int_eq(sfa__kernel_key_nv(&s, src, 12, 3, key), SFA_OK);
    sfa_free(src);
    if ((g_wrong_key >> i) & 1) key[5] = key[5] == '0' ? '1' : '0';
    char file[200];
    snprintf(file, sizeof file, "%s.cubin", NAMES[i]);
    size_t len = cubin_bytes(tag, i, bin, sizeof bin);
    int none = (nocubin >> i) & 1;
    if (!none) {
      snprintf(path, sizeof path, "%s/%s", dir, file);
      spit(path, bin, len);
    }
    ck_assert_int_gt(sfa__manifest_line(line, sizeof line, &s, 12, 3, key, none ? NULL : file,
                                        len, sfa__cubin_xxh3(bin, len)), 0);
    strcat(text, line);
  }
  snprintf(path, sizeof path, "%s/manifest.tsv", dir);
  spit(path, text, strlen(text));
  free(text);
  return dir;
}

static void cubin_path(const char *dir, int i, char *buf, size_t n) {
  snprintf(buf, n, "%s/%s.cubin", dir, NAMES[i]);
}

static sfa__kernel_dirs *new_kd(void) {
  sfa__kernel_dirs *kd = NULL;
  ck_assert_int_eq(sfa__kdirs_create(&kd, 0, NULL, 0), SFA_OK);
  return kd;
}

static void add_ok(sfa__kernel_dirs *kd, const char *dir, size_t want) {
  char err[2048] = "";
  size_t n = 99;
  ck_assert_msg(sfa__kdirs_add(kd, dir, &n, err, sizeof err) == SFA_OK, "%s", err);
  ck_assert_uint_eq(n, want);
}

static char *read_text(const char *path) {
  FILE *f = fopen(path, "r");
  ck_assert_ptr_nonnull(f);
  char *t = calloc(1, 65536);
  ck_assert_ptr_nonnull(t);
  size_t n = fread(t, 1, 65535, f);
  t[n] = '\0';
  fclose(f);
  return t;
}

/* Runs the lookup of name with stderr captured; returns the status, the
** captured text in *log (free) and the message in err. */
static sfa_status lookup(sfa__kernel_dirs *kd, const char *name, void **bin, size_t *len,
                         const sfa__manifest_entry **hit, char *err, size_t errlen, char **log) {
  char path[600];
  snprintf(path, sizeof path, "%s/stderr.txt", root);
  int saved = tu_capture_stderr(path);
  sfa_status st = sfa__kdirs_cubin(kd, name, bin, len, hit, err, errlen);
  tu_restore_stderr(saved);
  *log = read_text(path);
  return st;
}

/* ------------------------------------------------------------ adding */

START_TEST(missing_dir_file_and_empty_names) {
  sfa__kernel_dirs *kd = new_kd();
  char err[2048], path[600];
  snprintf(path, sizeof path, "%s/nope", root);
  ck_assert_int_eq(sfa__kdirs_add(kd, path, NULL, err, sizeof err), SFA_ERR_NOT_FOUND);
  ck_assert_msg(strstr(err, path) != NULL, "%s", err);
  snprintf(path, sizeof path, "%s/plain", root);
  spit(path, "x", 1);
  ck_assert_int_eq(sfa__kdirs_add(kd, path, NULL, err, sizeof err), SFA_ERR_NOT_FOUND);
  ck_assert_msg(strstr(err, "not a directory") && strstr(err, path), "%s", err);
  ck_assert_int_eq(sfa__kdirs_add(kd, "", NULL, err, sizeof err), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(err, "dir") != NULL, "%s", err);
  ck_assert_int_eq(sfa__kdirs_add(kd, NULL, NULL, err, sizeof err), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_uint_eq(sfa__kdirs_count(kd), 0);
  sfa__kdirs_free(kd);
  sfa__kdirs_free(NULL);
}
END_TEST

START_TEST(missing_manifest) {
  sfa__kernel_dirs *kd = new_kd();
  char err[2048], dir[600];
  snprintf(dir, sizeof dir, "%s/empty", root);
  ck_assert_int_eq(mkdir(dir, 0755), 0);
  ck_assert_int_eq(sfa__kdirs_add(kd, dir, NULL, err, sizeof err), SFA_ERR_NOT_FOUND);
  ck_assert_msg(strstr(err, "manifest.tsv") && strstr(err, dir), "%s", err);
  ck_assert_uint_eq(sfa__kdirs_count(kd), 0);
  sfa__kdirs_free(kd);
}
END_TEST

START_TEST(malformed_manifest_adds_nothing) {
  sfa__kernel_dirs *kd = new_kd();
  char err[2048], dir[600], path[700];
  make_dir("bad", 0x3, 0, dir, sizeof dir);
  snprintf(path, sizeof path, "%s/manifest.tsv", dir);
  char *text = read_text(path);
  strcat(text, "garbage\tline\n");
  spit(path, text, strlen(text));
  free(text);
  ck_assert_int_eq(sfa__kdirs_add(kd, dir, NULL, err, sizeof err), SFA_ERR_CORRUPT);
  ck_assert_msg(strstr(err, "manifest.tsv:4") != NULL, "%s", err);
  ck_assert_uint_eq(sfa__kdirs_count(kd), 0);
  ck_assert_ptr_null(sfa__kdirs_find(kd, NAMES[0]));
  sfa__kdirs_free(kd);
}
END_TEST

/* A row whose arch column disagrees with its name makes the manifest corrupt;
** an sm_80 row never serves an sm_90 or sm_86 name. */
START_TEST(wrong_arch_rows) {
  sfa__kernel_dirs *kd = new_kd();
  char err[2048], dir[600], path[700];
  make_dir("a80", 0x2, 0, dir, sizeof dir); /* NAMES[1]: sm80 */
  add_ok(kd, dir, 1);
  ck_assert_ptr_nonnull(sfa__kdirs_find(kd, NAMES[1]));
  ck_assert_ptr_null(sfa__kdirs_find(kd, NAMES[0])); /* the same kernel for sm90 */
  ck_assert_ptr_null(sfa__kdirs_find(kd, "sfa_fwd_dense_causal_bf16_d128_m128n64_w4s1_sm86"));
  void *bin = (void *)1;
  size_t len = 1;
  char *log = NULL;
  ck_assert_int_eq(lookup(kd, NAMES[0], &bin, &len, NULL, err, sizeof err, &log),
                   SFA_ERR_NOT_FOUND);
  ck_assert_ptr_null(bin);
  ck_assert_str_eq(err, "");
  ck_assert_str_eq(log, "");
  free(log);

  /* the arch column says 90, the name sm80 */
  char dir2[600];
  make_dir("lie", 0x2, 0, dir2, sizeof dir2);
  snprintf(path, sizeof path, "%s/manifest.tsv", dir2);
  char *text = read_text(path), *row = strchr(text, '\n') + 1;
  char *tab = strchr(row, '\t');
  ck_assert(tab[1] == '8' && tab[2] == '0');
  tab[1] = '9';
  spit(path, text, strlen(text));
  free(text);
  ck_assert_int_eq(sfa__kdirs_add(kd, dir2, NULL, err, sizeof err), SFA_ERR_CORRUPT);
  ck_assert_msg(strstr(err, "arch") && strstr(err, "manifest.tsv:2"), "%s", err);
  ck_assert_uint_eq(sfa__kdirs_count(kd), 1);
  sfa__kdirs_free(kd);
}
END_TEST

/* ------------------------------------------------------------ lookup */

START_TEST(lookup_finds_the_right_row) {
  sfa__kernel_dirs *kd = new_kd();
  char dir[600], err[2048];
  make_dir("all", 0xF, 0, dir, sizeof dir);
  add_ok(kd, dir, NK);
  add_ok(kd, dir, 0); /* the same directory again: nothing added */
  char slashed[700];
  snprintf(slashed, sizeof slashed, "%s//", dir);
  add_ok(kd, slashed, 0);
  ck_assert_uint_eq(sfa__kdirs_count(kd), 1);
  ck_assert_uint_eq(sfa__kdirs_kernels(kd), NK);
  for (int i = 0; i < NK; i++) {
    unsigned char want[2048];
    size_t wlen = cubin_bytes("all", i, want, sizeof want), len = 0;
    void *bin = NULL;
    const sfa__manifest_entry *hit = NULL;
    char *log = NULL;
    ck_assert_msg(lookup(kd, NAMES[i], &bin, &len, &hit, err, sizeof err, &log) == SFA_OK, "%s",
                  err);
    ck_assert_uint_eq(len, wlen);
    ck_assert(memcmp(bin, want, len) == 0);
    ck_assert_str_eq(hit->name, NAMES[i]);
    sfa_kernel_spec s;
    ck_assert_int_eq(sfa_spec_parse(NAMES[i], &s, NULL, 0), SFA_OK);
    ck_assert(memcmp(&hit->spec, &s, sizeof s) == 0);
    ck_assert_int_eq(hit->arch, s.arch);
    char path[800];
    cubin_path(dir, i, path, sizeof path);
    ck_assert_str_eq(hit->path, path);
    ck_assert_str_eq(log, "");
    free(log);
    free(bin);
  }
  ck_assert_ptr_null(sfa__kdirs_find(kd, "sfa_fwd_dense_bf16_d128_m128n64_w4s1_sm90"));
  ck_assert_ptr_null(sfa__kdirs_find(kd, ""));
  ck_assert_ptr_null(sfa__kdirs_find(kd, NULL));
  sfa__kdirs_free(kd);
}
END_TEST

/* Directories are searched in the order added. */
START_TEST(first_directory_wins) {
  sfa__kernel_dirs *kd = new_kd();
  char d1[600], d2[600], err[2048];
  make_dir("one", 0x5, 0, d1, sizeof d1); /* NAMES[0], NAMES[2] */
  make_dir("two", 0xF, 0, d2, sizeof d2);
  add_ok(kd, d1, 2);
  add_ok(kd, d2, NK);
  const sfa__manifest_entry *hit;
  void *bin;
  size_t len;
  char *log;
  ck_assert_int_eq(lookup(kd, NAMES[0], &bin, &len, &hit, err, sizeof err, &log), SFA_OK);
  ck_assert_msg(strncmp(hit->path, d1, strlen(d1)) == 0, "%s", hit->path);
  free(bin), free(log);
  ck_assert_int_eq(lookup(kd, NAMES[1], &bin, &len, &hit, err, sizeof err, &log), SFA_OK);
  ck_assert_msg(strncmp(hit->path, d2, strlen(d2)) == 0, "%s", hit->path);
  free(bin), free(log);
  sfa__kdirs_free(kd);
}
END_TEST

/* One damaged cubin: its message names the file; one warning; passed over. */
static void damaged(int how, const char *what) {
  sfa__kernel_dirs *kd = new_kd();
  char dir[600], path[800], err[2048];
  make_dir("dmg", 0xF, 0, dir, sizeof dir);
  add_ok(kd, dir, NK);
  cubin_path(dir, 2, path, sizeof path);
  unsigned char bin[2048];
  size_t n = cubin_bytes("dmg", 2, bin, sizeof bin);
  if (how == 0) bin[n / 2] ^= 0x40, spit(path, bin, n);   /* corrupted */
  else if (how == 1) spit(path, bin, n - 100);            /* truncated */
  else if (how == 2) bin[n] = 0, spit(path, bin, n + 1);  /* longer */
  else if (how == 3) ck_assert_int_eq(unlink(path), 0);   /* missing */
  else ck_assert(unlink(path) == 0 && mkfifo(path, 0600) == 0); /* a FIFO */
  void *out = (void *)1;
  size_t len = 7;
  const sfa__manifest_entry *hit = (void *)1;
  char *log = NULL;
  ck_assert_int_eq(lookup(kd, NAMES[2], &out, &len, &hit, err, sizeof err, &log),
                   SFA_ERR_NOT_FOUND);
  ck_assert_ptr_null(out);
  ck_assert_ptr_null(hit);
  ck_assert_uint_eq(len, 0);
  ck_assert_msg(strstr(err, path) && strstr(err, what), "'%s' lacks '%s'", err, what);
  ck_assert_int_eq(tu_count_substr(log, "warning"), 1);
  ck_assert_msg(strstr(log, path) && strstr(log, NAMES[2]) && strstr(log, "NVRTC"), "%s", log);
  free(log);
  /* passed over from now on, without a second warning */
  ck_assert_ptr_null(sfa__kdirs_find(kd, NAMES[2]));
  ck_assert_int_eq(lookup(kd, NAMES[2], &out, &len, &hit, err, sizeof err, &log),
                   SFA_ERR_NOT_FOUND);
  ck_assert_str_eq(log, "");
  ck_assert_str_eq(err, "");
  free(log);
  /* the other kernels are unaffected */
  ck_assert_int_eq(lookup(kd, NAMES[3], &out, &len, &hit, err, sizeof err, &log), SFA_OK);
  free(out), free(log);
  sfa__kdirs_free(kd);
}

START_TEST(corrupted_cubin) { damaged(0, "checksum"); }
END_TEST
START_TEST(truncated_cubin) { damaged(1, "truncated"); }
END_TEST
START_TEST(longer_cubin) { damaged(2, "longer"); }
END_TEST
START_TEST(missing_cubin) { damaged(3, "cannot open"); }
END_TEST
START_TEST(a_fifo_cubin_never_blocks) { damaged(4, "FIFO"); }
END_TEST

/* A row whose key column is not the key this runtime computes for its kernel
** (written by another sfa version, templates or NVRTC, or edited): its cubin
** is not used; one warning, like a corrupt cubin, and the row is passed over. */
START_TEST(a_row_whose_key_differs_is_rejected_once) {
  sfa__kernel_dirs *kd = new_kd();
  char dir[600], path[800], err[2048];
  g_wrong_key = 1u << 2;
  make_dir("key", 0xF, 0, dir, sizeof dir);
  add_ok(kd, dir, NK);
  cubin_path(dir, 2, path, sizeof path);
  void *out = (void *)1;
  size_t len = 7;
  const sfa__manifest_entry *hit = (void *)1;
  char *log = NULL;
  ck_assert_int_eq(lookup(kd, NAMES[2], &out, &len, &hit, err, sizeof err, &log),
                   SFA_ERR_NOT_FOUND);
  ck_assert_ptr_null(out);
  ck_assert_ptr_null(hit);
  ck_assert_msg(strstr(err, "key") && strstr(err, NAMES[2]), "%s", err);
  ck_assert_int_eq(tu_count_substr(log, "warning"), 1);
  ck_assert_msg(strstr(log, NAMES[2]) && strstr(log, "key"), "%s", log);
  free(log);
  ck_assert_ptr_null(sfa__kdirs_find(kd, NAMES[2]));
  ck_assert_int_eq(lookup(kd, NAMES[2], &out, &len, &hit, err, sizeof err, &log),
                   SFA_ERR_NOT_FOUND);
  ck_assert_str_eq(log, "");
  free(log);
  /* the rows with the right key are served */
  ck_assert_int_eq(lookup(kd, NAMES[3], &out, &len, &hit, err, sizeof err, &log), SFA_OK);
  free(out), free(log);
  sfa__kdirs_free(kd);
}
END_TEST

/* A FIFO as manifest.tsv: adding the directory fails at once (SFA_ERR_IO). */
START_TEST(a_fifo_manifest_never_blocks) {
  sfa__kernel_dirs *kd = new_kd();
  char dir[600], path[800], err[2048] = "";
  make_dir("fifo", 0xF, 0, dir, sizeof dir);
  snprintf(path, sizeof path, "%s/manifest.tsv", dir);
  ck_assert_int_eq(unlink(path), 0);
  ck_assert_int_eq(mkfifo(path, 0600), 0);
  ck_assert_int_eq(sfa__kdirs_add(kd, dir, NULL, err, sizeof err), SFA_ERR_IO);
  ck_assert_msg(strstr(err, path) && strstr(err, "FIFO"), "%s", err);
  ck_assert_uint_eq(sfa__kdirs_count(kd), 0);
  sfa__kdirs_free(kd);
}
END_TEST

/* A damaged cubin in the first directory: the second one's copy is used. */
START_TEST(damaged_row_falls_through_to_the_next_directory) {
  sfa__kernel_dirs *kd = new_kd();
  char d1[600], d2[600], path[800], err[2048];
  make_dir("first", 0xF, 0, d1, sizeof d1);
  make_dir("second", 0xF, 0, d2, sizeof d2);
  add_ok(kd, d1, NK);
  add_ok(kd, d2, NK);
  cubin_path(d1, 0, path, sizeof path);
  spit(path, "\x7f" "ELF", 4);
  void *bin;
  size_t len;
  const sfa__manifest_entry *hit;
  char *log;
  ck_assert_int_eq(lookup(kd, NAMES[0], &bin, &len, &hit, err, sizeof err, &log), SFA_OK);
  ck_assert_msg(strncmp(hit->path, d2, strlen(d2)) == 0, "%s", hit->path);
  unsigned char want[2048];
  ck_assert_uint_eq(len, cubin_bytes("second", 0, want, sizeof want));
  ck_assert(memcmp(bin, want, len) == 0);
  ck_assert_int_eq(tu_count_substr(log, "warning"), 1);
  ck_assert_msg(strstr(log, path) != NULL, "%s", log);
  free(bin), free(log);
  /* the caller rejects the second copy (e.g. the driver refused it) */
  char log_path[600];
  snprintf(log_path, sizeof log_path, "%s/stderr.txt", root);
  int saved = tu_capture_stderr(log_path);
  sfa__kdirs_reject(kd, hit, "CUDA_ERROR_INVALID_IMAGE");
  sfa__kdirs_reject(kd, hit, "CUDA_ERROR_INVALID_IMAGE");
  tu_restore_stderr(saved);
  log = read_text(log_path);
  ck_assert_int_eq(tu_count_substr(log, "CUDA_ERROR_INVALID_IMAGE"), 1);
  free(log);
  ck_assert_ptr_null(sfa__kdirs_find(kd, NAMES[0]));
  sfa__kdirs_free(kd);
}
END_TEST

/* Rows written with --no-cubin are metadata only: never served. */
START_TEST(rows_without_cubin_are_passed_over) {
  sfa__kernel_dirs *kd = new_kd();
  char d1[600], d2[600], err[2048];
  make_dir("meta", 0xF, 0xF, d1, sizeof d1);
  add_ok(kd, d1, NK);
  ck_assert_ptr_null(sfa__kdirs_find(kd, NAMES[1]));
  void *bin;
  size_t len;
  const sfa__manifest_entry *hit;
  char *log;
  ck_assert_int_eq(lookup(kd, NAMES[1], &bin, &len, &hit, err, sizeof err, &log),
                   SFA_ERR_NOT_FOUND);
  ck_assert_str_eq(log, "");
  free(log);
  make_dir("real", 0x2, 0, d2, sizeof d2);
  add_ok(kd, d2, 1);
  ck_assert_int_eq(lookup(kd, NAMES[1], &bin, &len, &hit, err, sizeof err, &log), SFA_OK);
  ck_assert_msg(strncmp(hit->path, d2, strlen(d2)) == 0, "%s", hit->path);
  free(bin), free(log);
  sfa__kdirs_free(kd);
}
END_TEST

/* ------------------------------------------------------------ the context */

START_TEST(public_api_and_environment) {
  char dir[600], bad[600], missing[600], list[2048], path[700], log_path[600];
  make_dir("api", 0xF, 0, dir, sizeof dir);
  make_dir("broken", 0x1, 0, bad, sizeof bad);
  snprintf(path, sizeof path, "%s/manifest.tsv", bad);
  spit(path, "name\tarch\n", 10);
  snprintf(missing, sizeof missing, "%s/missing", root);

  sfa_options o;
  sfa_options_init(&o);
  o.cache_dir = root;
  sfa_context *ctx = NULL;
  unsetenv(SFA__KERNEL_DIR_ENV);
  ck_assert_int_eq(sfa_context_create(&ctx, &o), SFA_OK);
  ck_assert_uint_eq(sfa__kdirs_count(ctx->kdirs), 0);
  ck_assert_int_eq(sfa_context_add_kernel_dir(ctx, missing), SFA_ERR_NOT_FOUND);
  ck_assert_msg(strstr(sfa_last_error(ctx), missing) != NULL, "%s", sfa_last_error(ctx));
  ck_assert_int_eq(sfa_context_add_kernel_dir(ctx, bad), SFA_ERR_CORRUPT);
  ck_assert_msg(strstr(sfa_last_error(ctx), "manifest.tsv:1"), "%s", sfa_last_error(ctx));
  ck_assert_int_eq(sfa_context_add_kernel_dir(ctx, NULL), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(sfa_last_error(ctx), "dir") != NULL, "%s", sfa_last_error(ctx));
  ck_assert_int_eq(sfa_context_add_kernel_dir(NULL, dir), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_int_eq(sfa_context_add_kernel_dir(ctx, dir), SFA_OK);
  ck_assert_uint_eq(sfa__kdirs_count(ctx->kdirs), 1);
  ck_assert_ptr_nonnull(sfa__kdirs_find(ctx->kdirs, NAMES[3]));
  sfa_context_destroy(ctx);

  /* SFA_KERNEL_DIR: the good directory is added, the bad ones warn */
  snprintf(list, sizeof list, "%s::%s:%s", missing, dir, bad);
  setenv(SFA__KERNEL_DIR_ENV, list, 1);
  snprintf(log_path, sizeof log_path, "%s/stderr.txt", root);
  int saved = tu_capture_stderr(log_path);
  sfa_status st = sfa_context_create(&ctx, &o);
  tu_restore_stderr(saved);
  unsetenv(SFA__KERNEL_DIR_ENV);
  ck_assert_int_eq(st, SFA_OK);
  char *log = read_text(log_path);
  ck_assert_int_eq(tu_count_substr(log, "warning"), 2);
  ck_assert_msg(strstr(log, missing) && strstr(log, bad) && strstr(log, SFA__KERNEL_DIR_ENV),
                "%s", log);
  free(log);
  ck_assert_uint_eq(sfa__kdirs_count(ctx->kdirs), 1);
  ck_assert_uint_eq(sfa__kdirs_kernels(ctx->kdirs), NK);
  sfa_context_destroy(ctx);
}
END_TEST

static Suite *kernel_dir_suite(void) {
  Suite *s = suite_create("kernel_dir");
  TCase *tc = tcase_create("kernel_dir");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 60); /* a reader that blocks fails the test, never hangs it */
  tcase_add_test(tc, missing_dir_file_and_empty_names);
  tcase_add_test(tc, missing_manifest);
  tcase_add_test(tc, malformed_manifest_adds_nothing);
  tcase_add_test(tc, wrong_arch_rows);
  tcase_add_test(tc, lookup_finds_the_right_row);
  tcase_add_test(tc, first_directory_wins);
  tcase_add_test(tc, corrupted_cubin);
  tcase_add_test(tc, truncated_cubin);
  tcase_add_test(tc, longer_cubin);
  tcase_add_test(tc, missing_cubin);
  tcase_add_test(tc, a_fifo_cubin_never_blocks);
  tcase_add_test(tc, a_row_whose_key_differs_is_rejected_once);
  tcase_add_test(tc, a_fifo_manifest_never_blocks);
  tcase_add_test(tc, damaged_row_falls_through_to_the_next_directory);
  tcase_add_test(tc, rows_without_cubin_are_passed_over);
  tcase_add_test(tc, public_api_and_environment);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return tu_run_suite(kernel_dir_suite()); }
