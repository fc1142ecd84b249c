/*
** test_manifest.c -- the AOT manifest: sfa-gen compiles three small kernels to
** real cubins plus manifest.tsv; the loader finds every entry (spec, arch, the
** runtime's cache key, cubin path) and reads verified cubins. A missing,
** corrupted, truncated or extended cubin, every kind of malformed line, an
** unknown, missing or doubled column, and empty or missing manifests are each
** rejected with a message naming the file (and line) and the problem; a FIFO
** or a device where the manifest or a cubin should be is refused without
** blocking, an over-long line is an error. Needs gen/sfa-gen built next to
** the tests; no GPU.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sfa.h"
#include "cache/store.h"
#include "gen/manifest.h"
#include "runtime/keymat.h"
#include "runtime/nvrtc.h"
#include "testutil.h"

static const char *const names[3] = {
  "sfa_fwd_dense_fp16_d32_m128n64_w4s2_sm80",
  "sfa_fwd_hash_bf16_d64_m128n64_w4s2_sm90",
  "sfa_fwd_window_causal_bias_mask_fp16_d64_m128n64_w4s2_sm80",
};
static char gen_dir[512]; /* sfa-gen's output, made once by the fixture */
static const char *tool;  /* sfa-gen */

static int run(const char *cmd) {
  int rc = system(cmd);
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static void make_kernels(void) {
  /* build/gen/sfa-gen (testutil.h: found from this test's own path) */
  tool = tu_build_path("gen/sfa-gen");
  char cmd[2048];
  if (access(tool, X_OK) != 0) {
    fprintf(stderr, "test_manifest: %s is not built (build all targets first)\n", tool);
    exit(1);
  }
  snprintf(gen_dir, sizeof gen_dir, "%s/k", tu_mkdtemp());
  snprintf(cmd, sizeof cmd, "%s --name %s --name %s --name %s --out %s 2>&1", tool, names[0],
           names[1], names[2], gen_dir);
  if (run(cmd) != 0) {
    fprintf(stderr, "test_manifest: '%s' failed\n", cmd);
    exit(1);
  }
}

static void remove_kernels(void) {
  char *slash = strrchr(gen_dir, '/');
  if (slash) *slash = '\0';
  tu_rm_rf(gen_dir);
}

/* ------------------------------------------------------------ file helpers */

static char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  ck_assert_msg(f != NULL, "cannot open %s", path);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = malloc((size_t)n + 1);
  ck_assert_ptr_nonnull(buf);
  ck_assert_uint_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
  fclose(f);
  buf[n] = '\0';
  if (len) *len = (size_t)n;
  return buf;
}

static void spit(const char *path, const void *data, size_t len) {
  FILE *f = fopen(path, "wb");
  ck_assert_msg(f != NULL, "cannot write %s", path);
  ck_assert_uint_eq(fwrite(data, 1, len, f), len);
  fclose(f);
}

/* A fresh copy of sfa-gen's directory; returns its path (static). */
static const char *copy_kernels(void) {
  static char dir[600];
  char cmd[1400];
  snprintf(dir, sizeof dir, "%s", tu_mkdtemp());
  snprintf(cmd, sizeof cmd, "cp -p '%s'/* '%s'/", gen_dir, dir);
  ck_assert_int_eq(run(cmd), 0);
  return dir;
}

/* Writes DIR/manifest.tsv = the generated manifest with line `line` (1-based)
** changed: field `col` (0-based) set to value, or, with col < 0, the whole
** line replaced by value (NULL: removed). */
static void write_changed(const char *dir, int line, int col, const char *value) {
  char path[1024], out[16384] = "";
  snprintf(path, sizeof path, "%s/manifest.tsv", gen_dir);
  char *text = slurp(path, NULL), *save = NULL;
  int ln = 0;
  for (char *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
    if (++ln != line) {
      strcat(strcat(out, l), "\n");
    } else if (col < 0) {
      if (value) strcat(strcat(out, value), "\n");
    } else {
      char *fsave = NULL;
      int c = 0;
      for (char *f = strtok_r(l, "\t", &fsave); f; f = strtok_r(NULL, "\t", &fsave), c++) {
        if (c) strcat(out, "\t");
        strcat(out, c == col ? value : f);
      }
      strcat(out, "\n");
    }
  }
  free(text);
  snprintf(path, sizeof path, "%s/manifest.tsv", dir);
  spit(path, out, strlen(out));
}

/* The generated manifest's line n (1-based), without '\n', in buf. */
static void line_of(int n, char *buf, size_t size) {
  char path[1024];
  snprintf(path, sizeof path, "%s/manifest.tsv", gen_dir);
  char *text = slurp(path, NULL), *p = text;
  for (int i = 1; i < n && p; i++) p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL;
  ck_assert_ptr_nonnull(p);
  snprintf(buf, size, "%.*s", (int)strcspn(p, "\n"), p);
  free(text);
}

static void load_fails(const char *dir, sfa_status want, const char *n1, const char *n2) {
  sfa__manifest *m = (sfa__manifest *)1;
  char err[1024] = "";
  sfa_status st = sfa__manifest_load(dir, &m, err, sizeof err);
  ck_assert_msg(st == want, "status %d, want %d (%s)", st, want, err);
  ck_assert_ptr_null(m);
  ck_assert_msg(strstr(err, n1), "'%s' not in '%s'", n1, err);
  if (n2) ck_assert_msg(strstr(err, n2), "'%s' not in '%s'", n2, err);
}

static sfa__manifest *load_ok(const char *dir) {
  sfa__manifest *m = NULL;
  char err[1024] = "";
  ck_assert_msg(sfa__manifest_load(dir, &m, err, sizeof err) == SFA_OK, "%s", err);
  ck_assert_ptr_nonnull(m);
  return m;
}

/* ------------------------------------------------------------ good manifests */

START_TEST(load_find_read) {
  sfa__manifest *m = load_ok(gen_dir);
  ck_assert_uint_eq(m->count, 3);
  for (size_t i = 1; i < m->count; i++)
    ck_assert_int_lt(strcmp(m->entries[i - 1].name, m->entries[i].name), 0);
  for (int i = 0; i < 3; i++) {
    const sfa__manifest_entry *e = sfa__manifest_find(m, names[i]);
    ck_assert_msg(e != NULL, "%s not found", names[i]);
    ck_assert_str_eq(e->name, names[i]);
    sfa_kernel_spec s;
    ck_assert_int_eq(sfa_spec_parse(names[i], &s, NULL, 0), SFA_OK);
    ck_assert(memcmp(&s, &e->spec, sizeof s) == 0);
    ck_assert_int_eq(e->arch, s.arch);

    /* The key is the runtime cache's key of this kernel. */
    char *src = NULL, key[SFA_STORE_KEY_HEX];
    ck_assert_int_eq(sfa_generate(&s, &src, NULL, 0), SFA_OK);
    ck_assert_int_eq(sfa__kernel_key(&s, src, key), SFA_OK);
    ck_assert_str_eq(e->key, key);
    sfa_free(src);

    char path[1024];
    snprintf(path, sizeof path, "%s/%s.cubin", gen_dir, names[i]);
    ck_assert_str_eq(e->path, path);
    void *bin = NULL;
    size_t len = 0, flen = 0;
    char err[512] = "";
    ck_assert_msg(sfa__manifest_read_cubin(e, &bin, &len, err, sizeof err) == SFA_OK, "%s", err);
    ck_assert_uint_eq(len, e->cubin_bytes);
    ck_assert(memcmp(bin, "\x7f" "ELF", 4) == 0);
    char *file = slurp(path, &flen);
    ck_assert_uint_eq(flen, len);
    ck_assert(memcmp(file, bin, len) == 0);
    ck_assert(sfa__cubin_xxh3(bin, len) == e->cubin_xxh3);
    free(file);
    sfa_free(bin);
  }
  ck_assert_ptr_null(sfa__manifest_find(m, "sfa_fwd_dense_fp16_d32_m128n64_w4s2_sm90"));
  ck_assert_ptr_null(sfa__manifest_find(m, ""));
  ck_assert_ptr_null(sfa__manifest_find(m, NULL));
  ck_assert_ptr_null(sfa__manifest_find(NULL, names[0]));
  sfa__manifest_free(m);
  sfa__manifest_free(NULL);
}
END_TEST

/* The key material format that runtime/context.c's cache uses. */
START_TEST(key_material_format) {
  sfa_kernel_spec s;
  ck_assert_int_eq(sfa_spec_parse(names[1], &s, NULL, 0), SFA_OK);
  char *src = NULL, *mat = NULL, key[SFA_STORE_KEY_HEX], want[SFA_STORE_KEY_HEX];
  size_t len = 0;
  ck_assert_int_eq(sfa_generate(&s, &src, NULL, 0), SFA_OK);
  ck_assert_int_eq(sfa__kernel_key_material(&s, src, &mat, &len), SFA_OK);
  ck_assert_uint_eq(strlen(mat), len);
  int maj = 0, min = 0;
  sfa__nvrtc_version(&maj, &min);
  char head[512];
  snprintf(head, sizeof head, "sfa=%s\nname=%s\narch=90\nnvrtc=%d.%d\noptions="
           "--gpu-architecture=sm_90 -std=c++17 --use_fast_math\n--\n", SFA_VERSION_STRING,
           names[1], maj, min);
  ck_assert_uint_eq(len, strlen(head) + strlen(src));
  ck_assert(strncmp(mat, head, strlen(head)) == 0);
  ck_assert_str_eq(mat + strlen(head), src);
  sfa_store_key(mat, len, want);
  ck_assert_int_eq(sfa__kernel_key(&s, src, key), SFA_OK);
  ck_assert_str_eq(key, want);
  free(mat);

  ck_assert_int_eq(sfa__kernel_key_material(NULL, src, &mat, &len), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_int_eq(sfa__kernel_key_material(&s, NULL, &mat, &len), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_ptr_null(mat);
  s.head_dim = 40;
  ck_assert_int_eq(sfa__kernel_key(&s, src, key), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_str_eq(key, "");
  sfa_free(src);
}
END_TEST

/* Comments, blank lines, another column order, a header alone. */
START_TEST(tolerated_forms) {
  const char *dir = copy_kernels();
  char path[1024], line[2048], out[16384] = "# made by hand\n\n";
  /* Swap the first two columns on every line. */
  for (int n = 1; n <= 4; n++) {
    line_of(n, line, sizeof line);
    char *tab = strchr(line, '\t'), *tab2 = strchr(tab + 1, '\t');
    *tab = *tab2 = '\0';
    snprintf(out + strlen(out), sizeof out - strlen(out), "%s\t%s\t%s\n%s", tab + 1, line,
             tab2 + 1, n == 2 ? "# a comment between entries\n" : "");
  }
  snprintf(path, sizeof path, "%s/manifest.tsv", dir);
  spit(path, out, strlen(out));
  sfa__manifest *m = load_ok(dir);
  ck_assert_uint_eq(m->count, 3);
  const sfa__manifest_entry *e = sfa__manifest_find(m, names[2]);
  ck_assert_ptr_nonnull(e);
  ck_assert_int_eq(e->line, 7);
  ck_assert_int_eq(e->arch, 80);
  sfa__manifest_free(m);

  /* Line numbers count comments and blank lines. */
  char *p = strstr(out, "\n80\tsfa_fwd_dense");
  ck_assert_ptr_nonnull(p);
  p[2] = '1';
  spit(path, out, strlen(out));
  load_fails(dir, SFA_ERR_CORRUPT, "manifest.tsv:4: column arch: '81' disagrees", NULL);

  spit(path, sfa__manifest_header(), strlen(sfa__manifest_header()));
  m = load_ok(dir);
  ck_assert_uint_eq(m->count, 0);
  ck_assert_ptr_null(sfa__manifest_find(m, names[0]));
  sfa__manifest_free(m);
  tu_rm_rf(dir);
}
END_TEST

START_TEST(no_cubin_manifest) {
  const char *dir = tu_mkdtemp();
  char cmd[2048], err[512] = "";
  snprintf(cmd, sizeof cmd, "'%s' --name %s --no-cubin --out %s 2>/dev/null", tool, names[1],
           dir);
  ck_assert_int_eq(run(cmd), 0);
  sfa__manifest *m = load_ok(dir);
  ck_assert_uint_eq(m->count, 1);
  const sfa__manifest_entry *e = sfa__manifest_find(m, names[1]);
  ck_assert_ptr_nonnull(e);
  ck_assert_ptr_null(e->path);
  ck_assert_uint_eq(e->cubin_bytes, 0);
  const sfa__manifest_entry *g = NULL;
  sfa__manifest *full = load_ok(gen_dir);
  g = sfa__manifest_find(full, names[1]);
  ck_assert_str_eq(e->key, g->key); /* the key does not depend on the cubin */
  sfa__manifest_free(full);
  void *bin = (void *)1;
  size_t len = 9;
  ck_assert_int_eq(sfa__manifest_read_cubin(e, &bin, &len, err, sizeof err), SFA_ERR_NOT_FOUND);
  ck_assert_msg(strstr(err, "the manifest lists no cubin"), "%s", err);
  ck_assert_ptr_null(bin);
  ck_assert_uint_eq(len, 0);
  sfa__manifest_free(m);
  tu_rm_rf(dir);
}
END_TEST

/* ------------------------------------------------------------ bad cubins */

/* Loads dir, reads names[1]'s cubin and expects failure with the needles. */
static void read_fails(const char *dir, sfa_status want, const char *n1, const char *n2) {
  sfa__manifest *m = load_ok(dir);
  const sfa__manifest_entry *e = sfa__manifest_find(m, names[1]);
  ck_assert_ptr_nonnull(e);
  void *bin = (void *)1;
  size_t len = 5;
  char err[1024] = "";
  sfa_status st = sfa__manifest_read_cubin(e, &bin, &len, err, sizeof err);
  ck_assert_msg(st == want, "status %d, want %d (%s)", st, want, err);
  ck_assert_ptr_null(bin);
  ck_assert_uint_eq(len, 0);
  ck_assert_msg(strstr(err, e->path), "'%s' does not name the file", err);
  ck_assert_msg(strstr(err, n1), "'%s' not in '%s'", n1, err);
  if (n2) ck_assert_msg(strstr(err, n2), "'%s' not in '%s'", n2, err);
  sfa__manifest_free(m);
}

static void cubin_path(const char *dir, char *path, size_t n) {
  snprintf(path, n, "%s/%s.cubin", dir, names[1]);
}

START_TEST(missing_cubin) {
  const char *dir = copy_kernels();
  char path[1024];
  cubin_path(dir, path, sizeof path);
  ck_assert_int_eq(unlink(path), 0);
  read_fails(dir, SFA_ERR_NOT_FOUND, "cannot open the cubin of", "No such file");
  tu_rm_rf(dir);
}
END_TEST

START_TEST(corrupted_cubin) {
  const char *dir = copy_kernels();
  char path[1024];
  size_t len;
  cubin_path(dir, path, sizeof path);
  char *bin = slurp(path, &len);
  bin[len / 2] ^= 0x10; /* one flipped bit, same size */
  spit(path, bin, len);
  read_fails(dir, SFA_ERR_CORRUPT, "checksum mismatch", "altered");
  free(bin);
  tu_rm_rf(dir);
}
END_TEST

START_TEST(truncated_or_longer_cubin) {
  const char *dir = copy_kernels();
  char path[1024], want[128];
  size_t len;
  cubin_path(dir, path, sizeof path);
  char *bin = slurp(path, &len);
  spit(path, bin, len - 100);
  snprintf(want, sizeof want, "%zu bytes, the manifest says %zu (truncated)", len - 100, len);
  read_fails(dir, SFA_ERR_CORRUPT, want, NULL);
  spit(path, bin, 0);
  read_fails(dir, SFA_ERR_CORRUPT, "0 bytes", "truncated");
  char *more = malloc(len + 1);
  memcpy(more, bin, len);
  more[len] = 0;
  spit(path, more, len + 1);
  read_fails(dir, SFA_ERR_CORRUPT, "longer than written", NULL);
  free(more);
  free(bin);
  tu_rm_rf(dir);
}
END_TEST

/* ------------------------------------------------------------ bad manifests */

/* Changes one line of a copy and expects "manifest.tsv:LINE: <needle>". */
static void line_fails(int line, int col, const char *value, const char *needle) {
  const char *dir = tu_mkdtemp();
  char where[1200];
  write_changed(dir, line, col, value);
  snprintf(where, sizeof where, "%s/manifest.tsv:%d: ", dir, line);
  load_fails(dir, SFA_ERR_CORRUPT, where, needle);
  tu_rm_rf(dir);
}

START_TEST(malformed_lines) {
  char line[2048], shorter[2048];
  line_of(3, line, sizeof line);
  snprintf(shorter, sizeof shorter, "%.*s", (int)(strrchr(line, '\t') - line), line);
  line_fails(3, -1, shorter, "16 tab-separated fields, the header has 17");
  snprintf(shorter, sizeof shorter, "%.2000s\textra", line);
  line_fails(3, -1, shorter, "18 tab-separated fields");
  line_fails(4, -1, "garbage", "1 tab-separated fields");
}
END_TEST

START_TEST(malformed_fields) {
  line_fails(2, 0, "sfa_fwd_nope_fp16_d32_m128n64_w4s2_sm80", "column name: name 'sfa_fwd_nope");
  line_fails(3, 5, "128", "column head_dim: '128' disagrees with the name");
  line_fails(3, 1, "80", "column arch: '80' disagrees");
  line_fails(4, 10, "causal,bias", "column flags: 'causal,bias' disagrees");
  line_fails(4, 11, "1", "column smem_bytes: '1' disagrees");
  line_fails(2, 3, "hash", "column mode: 'hash' disagrees");
  line_fails(2, 12, "13", "column nvrtc: '13' is not a version M.m");
  line_fails(2, 12, "13.x", "column nvrtc: '13.x' is not a version M.m");
  line_fails(2, 12, "-1.0", "column nvrtc:");
  line_fails(2, 13, "xyz", "column key: 'xyz' is not 32 lowercase hex digits");
  line_fails(2, 13, "0123456789ABCDEF0123456789abcdef", "column key:");
  line_fails(2, 14, "../evil.cubin", "column cubin: '../evil.cubin' must be '-' or a file name");
  line_fails(2, 15, "12x", "column cubin_bytes: '12x' is not a size");
  line_fails(2, 15, "-5", "column cubin_bytes: '-5' is not a size");
  line_fails(2, 15, "0", "column cubin_bytes: 0 for cubin");
  line_fails(2, 16, "0123", "column cubin_xxh3: '0123' is not 16 lowercase hex digits");
  line_fails(2, 16, "-", "column cubin_xxh3");
  line_fails(2, 14, "-", "must be 0 and '-' when cubin is '-'");
}
END_TEST

/* A name this version cannot build, and a kernel listed twice. */
START_TEST(invalid_or_duplicate_kernels) {
  char line[2048], bwd[2048];
  line_of(2, line, sizeof line);
  /* The same kernel as pass bwd with head dim 144 (name and columns): well
  ** formed, but the backward takes only multiples of 32 above 128. */
  char *f[20], tmp[2048];
  int nf = 0;
  snprintf(tmp, sizeof tmp, "%s", line);
  for (char *save = NULL, *t = strtok_r(tmp, "\t", &save); t && nf < 20;
       t = strtok_r(NULL, "\t", &save))
    f[nf++] = t;
  ck_assert_int_ge(nf, 10);
  sfa_kernel_spec sp;
  ck_assert_int_eq(sfa_spec_parse(f[0], &sp, NULL, 0), SFA_OK);
  sp.pass = SFA_PASS_BWD, sp.head_dim = 144;
  char nm[SFA__NAME_MAX];
  ck_assert_int_eq(sfa_spec_name(&sp, nm, sizeof nm), SFA_OK);
  f[0] = nm, f[2] = "bwd", f[5] = "144";
  bwd[0] = '\0';
  for (int i = 0; i < nf; i++) {
    if (i) strcat(bwd, "\t");
    strcat(bwd, f[i]);
  }
  line_fails(2, -1, bwd, "is not valid in sfa " SFA_VERSION_STRING ": head_dim: 144");

  const char *dir = tu_mkdtemp();
  char path[1024], where[1200];
  snprintf(path, sizeof path, "%s/manifest.tsv", gen_dir);
  size_t len;
  char *text = slurp(path, &len);
  text = realloc(text, len + strlen(line) + 2);
  strcat(strcat(text, line), "\n");
  snprintf(path, sizeof path, "%s/manifest.tsv", dir);
  spit(path, text, strlen(text));
  snprintf(where, sizeof where, "%s/manifest.tsv:5: kernel %s is listed twice (also at line 2)",
           dir, names[0]);
  load_fails(dir, SFA_ERR_CORRUPT, where, NULL);
  free(text);
  tu_rm_rf(dir);
}
END_TEST

START_TEST(header_errors) {
  char header[1024], bad[1024];
  snprintf(header, sizeof header, "%s", sfa__manifest_header());
  header[strlen(header) - 1] = '\0';
  /* Unknown column. */
  snprintf(bad, sizeof bad, "%.*ssha", (int)(strrchr(header, '\t') + 1 - header), header);
  line_fails(1, -1, bad, "unknown column 'sha' in the header; the columns are name, arch");
  /* Doubled column. */
  line_fails(1, -1, "name\tarch\tpass\tmode\tdtype\thead_dim\tblock_m\tblock_n\tnum_warps\t"
             "num_stages\tflags\tsmem_bytes\tarch\tcubin\tcubin_bytes\tcubin_xxh3",
             "column 'arch' appears twice in the header");
  /* Missing column (header without smem_bytes). */
  line_fails(1, -1, "name\tarch\tpass\tmode\tdtype\thead_dim\tblock_m\tblock_n\tnum_warps\t"
             "num_stages\tflags\tkey\tcubin\tcubin_bytes\tcubin_xxh3",
             "column 'smem_bytes' is missing from the header");
  /* An old header (before nvrtc, key and cubin_xxh3): the first missing one is named. */
  line_fails(1, -1, "name\tarch\tpass\tmode\tdtype\thead_dim\tblock_m\tblock_n\tnum_warps\t"
             "num_stages\tflags\tsmem_bytes\tcubin\tcubin_bytes",
             "column 'nvrtc' is missing from the header");
  /* The header of sfa 0.1 (no nvrtc column). */
  line_fails(1, -1, "name\tarch\tpass\tmode\tdtype\thead_dim\tblock_m\tblock_n\tnum_warps\t"
             "num_stages\tflags\tsmem_bytes\tkey\tcubin\tcubin_bytes\tcubin_xxh3",
             "column 'nvrtc' is missing from the header");
}
END_TEST

START_TEST(missing_empty_or_binary_manifest) {
  const char *dir = tu_mkdtemp();
  char path[1024], want[1200];
  snprintf(path, sizeof path, "%s/manifest.tsv", dir);
  snprintf(want, sizeof want, "%s: cannot open: No such file", path);
  load_fails(dir, SFA_ERR_NOT_FOUND, want, NULL);
  spit(path, "", 0);
  load_fails(dir, SFA_ERR_CORRUPT, "manifest.tsv: empty; the header line is missing", NULL);
  spit(path, "# only a comment\n\n", 18);
  load_fails(dir, SFA_ERR_CORRUPT, "the header line is missing", NULL);
  spit(path, "name\0arch\n", 10);
  load_fails(dir, SFA_ERR_CORRUPT, "contains a NUL byte", NULL);
  tu_rm_rf(dir);

  sfa__manifest *m = (sfa__manifest *)1;
  ck_assert_int_eq(sfa__manifest_load(NULL, &m, NULL, 0), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_ptr_null(m);
  ck_assert_int_eq(sfa__manifest_load(gen_dir, NULL, NULL, 0), SFA_ERR_INVALID_ARGUMENT);
  void *bin;
  size_t len;
  ck_assert_int_eq(sfa__manifest_read_cubin(NULL, &bin, &len, NULL, 0),
                   SFA_ERR_INVALID_ARGUMENT);
}
END_TEST

/* A FIFO as manifest.tsv or as a cubin: refused at once (SFA_ERR_IO, the
** message names the file and says FIFO), never a blocked open. */
START_TEST(a_fifo_manifest_or_cubin_never_blocks) {
  const char *dir = copy_kernels();
  char path[1024];
  cubin_path(dir, path, sizeof path);
  ck_assert_int_eq(unlink(path), 0);
  ck_assert_int_eq(mkfifo(path, 0600), 0);
  read_fails(dir, SFA_ERR_IO, "FIFO", NULL);
  snprintf(path, sizeof path, "%s/manifest.tsv", dir);
  ck_assert_int_eq(unlink(path), 0);
  ck_assert_int_eq(mkfifo(path, 0600), 0);
  load_fails(dir, SFA_ERR_IO, path, "FIFO");
  /* a character device (through a link) as manifest.tsv */
  ck_assert_int_eq(unlink(path), 0);
  ck_assert_int_eq(symlink("/dev/zero", path), 0);
  load_fails(dir, SFA_ERR_IO, path, "character device");
  tu_rm_rf(dir);
}
END_TEST

/* Every line is bounded (4096 bytes), comments included. */
START_TEST(an_overlong_line_is_an_error) {
  char *comment = malloc(5001);
  comment[0] = '#';
  memset(comment + 1, 'x', 4999);
  comment[5000] = '\0';
  line_fails(2, -1, comment, "longer than");
  free(comment);
}
END_TEST

/* sfa-gen's summary line of a run of the three kernels into dir. */
static void gen_into(const char *dir, const char *extra, char *out, size_t n) {
  char cmd[3000];
  snprintf(cmd, sizeof cmd, "%s --name %s --name %s --name %s %s --out %s 2>&1 | tail -n 1",
           tool, names[0], names[1], names[2], extra, dir);
  FILE *p = popen(cmd, "r");
  ck_assert_ptr_nonnull(p);
  out[0] = '\0';
  ck_assert_ptr_nonnull(fgets(out, (int)n, p));
  ck_assert_int_eq(pclose(p), 0);
}

/* A second run into a dir keeps what it holds: kernels whose row has this
** build's key and NVRTC and whose cubin verifies are not compiled again; an
** altered cubin is; rows of kernels not asked for stay in the manifest. */
START_TEST(a_second_run_keeps_the_kernels_the_dir_holds) {
  const char *dir = copy_kernels();
  char line[1024], path[1100];
  gen_into(dir, "", line, sizeof line);
  ck_assert_msg(strstr(line, "(3 kept from the earlier run), 0 failed"), "%s", line);

  snprintf(path, sizeof path, "%s/%s.cubin", dir, names[1]);
  size_t len = 0;
  char *bin = slurp(path, &len);
  bin[len / 2] ^= 0x40;
  spit(path, bin, len);
  free(bin);
  gen_into(dir, "", line, sizeof line);
  ck_assert_msg(strstr(line, "(2 kept from the earlier run), 0 failed"), "%s", line);
  sfa__manifest *m = NULL;
  ck_assert_int_eq(sfa__manifest_load(dir, &m, NULL, 0), SFA_OK);
  void *cubin = NULL;
  size_t size = 0;
  ck_assert_int_eq(sfa__manifest_read_cubin(sfa__manifest_find(m, names[1]), &cubin, &size,
                                            NULL, 0), SFA_OK);
  free(cubin);
  sfa__manifest_free(m);

  gen_into(dir, "--force", line, sizeof line);
  ck_assert_msg(strstr(line, "(0 kept from the earlier run), 0 failed"), "%s", line);

  char cmd[3000];
  snprintf(cmd, sizeof cmd, "%s --name %s --out %s >/dev/null 2>&1", tool, names[0], dir);
  ck_assert_int_eq(run(cmd), 0);
  ck_assert_int_eq(sfa__manifest_load(dir, &m, NULL, 0), SFA_OK);
  ck_assert_uint_eq(m->count, 3);
  sfa__manifest_free(m);
  tu_rm_rf(dir);
}
END_TEST

/* What sfa-gen writes is what sfa__manifest_line formats. */
START_TEST(writer_line) {
  sfa_kernel_spec s;
  char buf[1024], small[40], key[SFA_STORE_KEY_HEX] = "0123456789abcdef0123456789abcdef";
  ck_assert_int_eq(sfa_spec_parse(names[2], &s, NULL, 0), SFA_OK);
  int n = sfa__manifest_line(buf, sizeof buf, &s, 13, 0, key, "x.cubin", 1234, 0xabcull);
  ck_assert_int_gt(n, 0);
  ck_assert_str_eq(buf, "sfa_fwd_window_causal_bias_mask_fp16_d64_m128n64_w4s2_sm80\t80\tfwd\t"
                        "window\tfp16\t64\t128\t64\t4\t2\tcausal,bias,mask\t55296\t13.0\t"
                        "0123456789abcdef0123456789abcdef\tx.cubin\t1234\t0000000000000abc\n");
  ck_assert_int_eq(n, (int)strlen(buf));
  n = sfa__manifest_line(buf, sizeof buf, &s, 13, 0, key, NULL, 1234, 0xabcull);
  ck_assert_msg(strstr(buf, "\t-\t0\t-\n"), "%s", buf);
  ck_assert_int_eq(sfa__manifest_line(small, sizeof small, &s, 13, 0, key, NULL, 0, 0), -1);
  s.pass = SFA_PASS_BWD; /* valid in name only: above 128 bwd needs multiples of 32 */
  s.head_dim = 144;
  ck_assert_int_eq(sfa__manifest_line(buf, sizeof buf, &s, 13, 0, key, NULL, 0, 0), -1);
}
END_TEST

int main(void) {
  Suite *s = suite_create("manifest");
  TCase *tc = tcase_create("manifest");
  tcase_add_unchecked_fixture(tc, make_kernels, remove_kernels);
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, load_find_read);
  tcase_add_test(tc, key_material_format);
  tcase_add_test(tc, tolerated_forms);
  tcase_add_test(tc, no_cubin_manifest);
  tcase_add_test(tc, missing_cubin);
  tcase_add_test(tc, corrupted_cubin);
  tcase_add_test(tc, truncated_or_longer_cubin);
  tcase_add_test(tc, malformed_lines);
  tcase_add_test(tc, malformed_fields);
  tcase_add_test(tc, invalid_or_duplicate_kernels);
  tcase_add_test(tc, header_errors);
  tcase_add_test(tc, missing_empty_or_binary_manifest);
  tcase_add_test(tc, writer_line);
  tcase_add_test(tc, a_second_run_keeps_the_kernels_the_dir_holds);
  tcase_add_test(tc, a_fifo_manifest_or_cubin_never_blocks);
  tcase_add_test(tc, an_overlong_line_is_an_error);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
