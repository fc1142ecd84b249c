/*
** manifest.c -- DIR/manifest.tsv of ahead-of-time kernels (format in
** manifest.h): the line sfa-gen writes for a kernel, and the loader that checks
** every line (reporting FILE:LINE) and later reads each cubin, verifying its
** size and XXH3-64 checksum before anything loads it. Both files are read with
** cache/fileio.h: regular files only, never a blocking open, bounded sizes
** (manifest SFA__FILE_MAX_TEXT, lines SFA__FILE_MAX_LINE, cubins
** SFA__FILE_MAX_BINARY).
*/
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "cache/fileio.h"
#include "gen/flag.h"
#include "gen/manifest.h"

enum {
  COL_NAME, COL_ARCH, COL_PASS, COL_MODE, COL_DTYPE, COL_HEAD_DIM, COL_BLOCK_M, COL_BLOCK_N,
  COL_NUM_WARPS, COL_NUM_STAGES, COL_FLAGS, COL_SMEM, COL_NVRTC, COL_KEY, COL_CUBIN,
  COL_CUBIN_BYTES, COL_CUBIN_XXH3, NCOLS
};
static const char *const col_names[NCOLS] = {
  "name", "arch", "pass", "mode", "dtype", "head_dim", "block_m", "block_n", "num_warps",
  "num_stages", "flags", "smem_bytes", "nvrtc", "key", "cubin", "cubin_bytes", "cubin_xxh3"};
#define COL_LIST "name, arch, pass, mode, dtype, head_dim, block_m, block_n, num_warps, " \
                 "num_stages, flags, smem_bytes, nvrtc, key, cubin, cubin_bytes, cubin_xxh3"

uint64_t sfa__cubin_xxh3(const void *data, size_t len) { return XXH3_64bits(data, len); }

/* ------------------------------------------------------------ writing */

const char *sfa__manifest_header(void) {
  return "name\tarch\tpass\tmode\tdtype\thead_dim\tblock_m\tblock_n\tnum_warps\tnum_stages\t"
         "flags\tsmem_bytes\tnvrtc\tkey\tcubin\tcubin_bytes\tcubin_xxh3\n";
}

/* The text of a spec column (COL_ARCH .. COL_SMEM) for a valid spec. */
static void spec_text(int col, const sfa_kernel_spec *s, char *buf, size_t n) {
  switch (col) {
  case COL_ARCH: snprintf(buf, n, "%d", s->arch); break;
  case COL_PASS: snprintf(buf, n, "%s", sfa__pass_name(s->pass)); break;
  case COL_MODE: snprintf(buf, n, "%s", sfa__mode_name(s->mode)); break;
  case COL_DTYPE: snprintf(buf, n, "%s", sfa__dtype_name(s->dtype)); break;
  case COL_HEAD_DIM: snprintf(buf, n, "%d", s->head_dim); break;
  case COL_BLOCK_M: snprintf(buf, n, "%d", s->block_m); break;
  case COL_BLOCK_N: snprintf(buf, n, "%d", s->block_n); break;
  case COL_NUM_WARPS: snprintf(buf, n, "%d", s->num_warps); break;
  case COL_NUM_STAGES: snprintf(buf, n, "%d", s->num_stages); break;
  case COL_SMEM: snprintf(buf, n, "%zu", sfa_spec_smem_bytes(s)); break;
  case COL_FLAGS: /* the flags and the mma kind's token, as the name spells them */
    sfa__flag_list(buf, n, s->flags, 0, ",");
    if (*sfa__mma_token(s->mma)) {
      if (buf[0]) strncat(buf, ",", n - strlen(buf) - 1);
      strncat(buf, sfa__mma_token(s->mma), n - strlen(buf) - 1);
    }
    if (!buf[0]) snprintf(buf, n, "-");
    break;
  default: buf[0] = '\0';
  }
}

int sfa__manifest_line(char *buf, size_t n, const sfa_kernel_spec *spec, int nvrtc_major,
                       int nvrtc_minor, const char key[SFA_STORE_KEY_HEX], const char *cubin,
                       size_t cubin_bytes, uint64_t cubin_xxh3) {
  char name[SFA__NAME_MAX], t[NCOLS][48];
  if (!buf || !spec || !key || sfa_spec_validate(spec, NULL, 0) != SFA_OK ||
      sfa_spec_name(spec, name, sizeof name) != SFA_OK)
    return -1;
  for (int c = COL_ARCH; c <= COL_SMEM; c++) spec_text(c, spec, t[c], sizeof t[c]);
  char sum[24] = "-";
  if (cubin) snprintf(sum, sizeof sum, "%016" PRIx64, cubin_xxh3);
  if (nvrtc_major < 0 || nvrtc_minor < 0) return -1;
  int len = snprintf(buf, n,
                     "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d.%d\t%s\t%s\t%zu\t%s\n",
                     name, t[COL_ARCH], t[COL_PASS], t[COL_MODE], t[COL_DTYPE],
                     t[COL_HEAD_DIM], t[COL_BLOCK_M], t[COL_BLOCK_N], t[COL_NUM_WARPS],
                     t[COL_NUM_STAGES], t[COL_FLAGS], t[COL_SMEM], nvrtc_major, nvrtc_minor,
                     key, cubin ? cubin : "-",
                     cubin ? cubin_bytes : (size_t)0, sum);
  return len < 0 || (size_t)len >= n ? -1 : len;
}

/* ------------------------------------------------------------ loading */

void sfa__manifest_free(sfa__manifest *m) {
  if (!m) return;
  for (size_t i = 0; i < m->count; i++) free(m->entries[i].path);
  free(m->entries);
  free(m->dir);
  free(m->file);
  free(m);
}

/* "FILE:LINE: ..." into err; SFA_ERR_CORRUPT. */
static sfa_status bad_line(char *err, size_t errlen, const char *file, int line,
                           const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 5, 6)))
#endif
    ;
static sfa_status bad_line(char *err, size_t errlen, const char *file, int line,
                           const char *fmt, ...) {
  if (err && errlen) {
    int k = snprintf(err, errlen, "%s:%d: ", file, line);
    if (k >= 0 && (size_t)k < errlen) {
      va_list ap;
      va_start(ap, fmt);
      vsnprintf(err + k, errlen - (size_t)k, fmt, ap);
      va_end(ap);
    }
  }
  return SFA_ERR_CORRUPT;
}

/* Splits s at tabs into at most max fields; returns the field count (which
** may exceed max: the rest are counted, not stored). */
static int split_tabs(char *s, char **f, int max) {
  int n = 0;
  for (;;) {
    char *tab = strchr(s, '\t');
    if (n < max) f[n] = s;
    n++;
    if (!tab) return n;
    *tab = '\0';
    s = tab + 1;
  }
}

static int is_hex(const char *s, size_t n) {
  if (strlen(s) != n) return 0;
  for (size_t i = 0; i < n; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
  return 1;
}

/* A decimal size without sign or leading zeros. */
static int parse_size(const char *s, size_t *out) {
  size_t v = 0;
  if (!*s || (s[0] == '0' && s[1])) return 0;
  for (; *s; s++) {
    if (*s < '0' || *s > '9' || v > (SIZE_MAX - 9) / 10) return 0;
    v = v * 10 + (size_t)(*s - '0');
  }
  *out = v;
  return 1;
}

/* Maps header fields to columns: idx[col] = field index. */
static sfa_status parse_header(char *line, int idx[NCOLS], const char *file, int ln,
                               char *err, size_t errlen) {
  char *f[NCOLS + 1];
  int n = split_tabs(line, f, NCOLS + 1);
  for (int c = 0; c < NCOLS; c++) idx[c] = -1;
  for (int i = 0; i < n && i <= NCOLS; i++) {
    int c = 0;
    while (c < NCOLS && strcmp(f[i], col_names[c]) != 0) c++;
    if (c == NCOLS)
      return bad_line(err, errlen, file, ln, "unknown column '%.60s' in the header; the "
                      "columns are " COL_LIST, f[i]);
    if (idx[c] >= 0)
      return bad_line(err, errlen, file, ln, "column '%s' appears twice in the header",
                      col_names[c]);
    idx[c] = i;
  }
  for (int c = 0; c < NCOLS; c++)
    if (idx[c] < 0)
      return bad_line(err, errlen, file, ln, "column '%s' is missing from the header",
                      col_names[c]);
  return SFA_OK;
}

/* Parses one kernel line into e (e->path is malloc'ed). */
static sfa_status parse_entry(char *line, const int idx[NCOLS], const char *dir,
                              const char *file, int ln, sfa__manifest_entry *e, char *err,
                              size_t errlen) {
  char *f[NCOLS + 1], *v[NCOLS], why[512], want[64];
  memset(e, 0, sizeof *e);
  e->line = ln;
  int n = split_tabs(line, f, NCOLS + 1);
  if (n != NCOLS)
    return bad_line(err, errlen, file, ln, "%d tab-separated fields, the header has %d", n,
                    NCOLS);
  for (int c = 0; c < NCOLS; c++) v[c] = f[idx[c]];
  if (sfa_spec_parse(v[COL_NAME], &e->spec, why, sizeof why) != SFA_OK)
    return bad_line(err, errlen, file, ln, "column name: %s", why);
  snprintf(e->name, sizeof e->name, "%s", v[COL_NAME]);
  if (sfa_spec_validate(&e->spec, why, sizeof why) != SFA_OK)
    return bad_line(err, errlen, file, ln, "kernel %s is not valid in sfa %s: %s", e->name,
                    SFA_VERSION_STRING, why);
  e->arch = e->spec.arch;
  for (int c = COL_ARCH; c <= COL_SMEM; c++) {
    spec_text(c, &e->spec, want, sizeof want);
    if (strcmp(v[c], want) != 0)
      return bad_line(err, errlen, file, ln, "column %s: '%.60s' disagrees with the name "
                      "%s, which says '%s'", col_names[c], v[c], e->name, want);
  }
  {
    const char *p = v[COL_NVRTC];
    size_t a = 0, b = 0;
    char major[12] = "", *dot = strchr(p, '.');
    if (dot && (size_t)(dot - p) < sizeof major) memcpy(major, p, (size_t)(dot - p));
    if (!dot || !parse_size(major, &a) || !parse_size(dot + 1, &b) || a > 999 || b > 999)
      return bad_line(err, errlen, file, ln, "column nvrtc: '%.60s' is not a version M.m",
                      p);
    e->nvrtc_major = (int)a;
    e->nvrtc_minor = (int)b;
  }
  if (!is_hex(v[COL_KEY], SFA_STORE_KEY_HEX - 1))
    return bad_line(err, errlen, file, ln, "column key: '%.60s' is not %d lowercase hex digits",
                    v[COL_KEY], SFA_STORE_KEY_HEX - 1);
  memcpy(e->key, v[COL_KEY], SFA_STORE_KEY_HEX);

  const char *cubin = v[COL_CUBIN];
  int none = strcmp(cubin, "-") == 0;
  if (!none && (!*cubin || strchr(cubin, '/') || strcmp(cubin, ".") == 0 ||
                strcmp(cubin, "..") == 0))
    return bad_line(err, errlen, file, ln, "column cubin: '%.60s' must be '-' or a file name "
                    "in the manifest's directory", cubin);
  if (!parse_size(v[COL_CUBIN_BYTES], &e->cubin_bytes))
    return bad_line(err, errlen, file, ln, "column cubin_bytes: '%.60s' is not a size",
                    v[COL_CUBIN_BYTES]);
  if (none) {
    if (e->cubin_bytes != 0 || strcmp(v[COL_CUBIN_XXH3], "-") != 0)
      return bad_line(err, errlen, file, ln, "columns cubin_bytes and cubin_xxh3 must be 0 "
                      "and '-' when cubin is '-'");
    return SFA_OK;
  }
  if (e->cubin_bytes == 0)
    return bad_line(err, errlen, file, ln, "column cubin_bytes: 0 for cubin %.60s", cubin);
  if (!is_hex(v[COL_CUBIN_XXH3], 16))
    return bad_line(err, errlen, file, ln, "column cubin_xxh3: '%.60s' is not 16 lowercase "
                    "hex digits", v[COL_CUBIN_XXH3]);
  e->cubin_xxh3 = (uint64_t)strtoull(v[COL_CUBIN_XXH3], NULL, 16);
  size_t plen = strlen(dir) + strlen(cubin) + 2;
  if (!(e->path = malloc(plen)))
    return sfa__fail(err, errlen, SFA_ERR_OUT_OF_MEMORY, "%s: out of memory", file);
  snprintf(e->path, plen, "%s/%s", dir, cubin);
  return SFA_OK;
}

/* The whole file, NUL-terminated, malloc'ed (a regular file of at most
** SFA__FILE_MAX_TEXT bytes, without NUL bytes). */
static sfa_status read_text(const char *file, char **text, char *err, size_t errlen) {
  char *buf = NULL;
  size_t len = 0;
  sfa_status st = sfa__file_read(AT_FDCWD, file, NULL, 0, SFA__FILE_MAX_TEXT, &buf, &len, err,
                                 errlen);
  if (st != SFA_OK) return st;
  if (memchr(buf, '\0', len)) {
    free(buf);
    return sfa__fail(err, errlen, SFA_ERR_CORRUPT, "%s: contains a NUL byte; not a text manifest",
                     file);
  }
  *text = buf;
  return SFA_OK;
}

static int by_name(const void *a, const void *b) {
  return strcmp(((const sfa__manifest_entry *)a)->name, ((const sfa__manifest_entry *)b)->name);
}

/* Parses every line of text into m. */
static sfa_status parse_all(sfa__manifest *m, char *text, char *err, size_t errlen) {
  int idx[NCOLS], ln = 0, have_header = 0;
  size_t cap = 0;
  for (char *line = text; *line;) {
    char *nl = strchr(line, '\n'), *next = nl ? nl + 1 : line + strlen(line);
    if (nl) *nl = '\0';
    ln++;
    sfa_status st = SFA_OK;
    size_t len = strlen(line);
    if (len > SFA__FILE_MAX_LINE) {
      st = bad_line(err, errlen, m->file, ln, "a line of %zu bytes, longer than the %d allowed",
                    len, SFA__FILE_MAX_LINE);
    } else if (line[0] == '\0' || line[0] == '#') {
      /* skipped */
    } else if (!have_header) {
      st = parse_header(line, idx, m->file, ln, err, errlen);
      have_header = 1;
    } else {
      if (m->count == cap) {
        cap = cap ? 2 * cap : 64;
        sfa__manifest_entry *p = realloc(m->entries, cap * sizeof *p);
        if (!p) return sfa__fail(err, errlen, SFA_ERR_OUT_OF_MEMORY, "%s: out of memory", m->file);
        m->entries = p;
      }
      st = parse_entry(line, idx, m->dir, m->file, ln, &m->entries[m->count], err, errlen);
      if (st == SFA_OK) m->count++;
      else free(m->entries[m->count].path);
    }
    if (st != SFA_OK) return st;
    line = next;
  }
  if (!have_header)
    return sfa__fail(err, errlen, SFA_ERR_CORRUPT, "%s: empty; the header line is missing",
                     m->file);
  if (m->count) qsort(m->entries, m->count, sizeof *m->entries, by_name);
  for (size_t i = 1; i < m->count; i++)
    if (strcmp(m->entries[i - 1].name, m->entries[i].name) == 0) {
      const sfa__manifest_entry *a = &m->entries[i - 1], *b = &m->entries[i];
      return bad_line(err, errlen, m->file, a->line > b->line ? a->line : b->line,
                      "kernel %s is listed twice (also at line %d)", a->name,
                      a->line > b->line ? b->line : a->line);
    }
  return SFA_OK;
}

sfa_status sfa__manifest_load(const char *dir, sfa__manifest **out, char *err, size_t errlen) {
  if (out) *out = NULL;
  if (!dir || !out) return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT, "dir: NULL");
  sfa__manifest *m = calloc(1, sizeof *m);
  size_t flen = strlen(dir) + sizeof SFA__MANIFEST_FILE + 1;
  if (!m || !(m->dir = strdup(dir)) || !(m->file = malloc(flen))) {
    sfa__manifest_free(m);
    return sfa__fail(err, errlen, SFA_ERR_OUT_OF_MEMORY, "manifest: out of memory");
  }
  snprintf(m->file, flen, "%s/%s", dir, SFA__MANIFEST_FILE);
  char *text = NULL;
  sfa_status st = read_text(m->file, &text, err, errlen);
  if (st == SFA_OK) st = parse_all(m, text, err, errlen);
  free(text);
  if (st != SFA_OK) {
    sfa__manifest_free(m);
    return st;
  }
  *out = m;
  return SFA_OK;
}

const sfa__manifest_entry *sfa__manifest_find(const sfa__manifest *m, const char *name) {
  if (!m || !name || !m->count) return NULL;
  sfa__manifest_entry key;
  if (strlen(name) >= sizeof key.name) return NULL;
  memcpy(key.name, name, strlen(name) + 1);
  return bsearch(&key, m->entries, m->count, sizeof key, by_name);
}

/* ------------------------------------------------------------ cubins */

sfa_status sfa__manifest_read_cubin(const sfa__manifest_entry *e, void **buf, size_t *len,
                                    char *err, size_t errlen) {
  if (buf) *buf = NULL;
  if (len) *len = 0;
  if (!e || !buf || !len) return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT, "entry: NULL");
  if (!e->path)
    return sfa__fail(err, errlen, SFA_ERR_NOT_FOUND, "%s: the manifest lists no cubin "
                     "(written with --no-cubin?)", e->name);
  char *data = NULL;
  size_t got = 0;
  char why[1400];
  sfa_status st = sfa__file_read(AT_FDCWD, e->path, NULL, 0, SFA__FILE_MAX_BINARY, &data, &got,
                                 why, sizeof why);
  const char *open_err = strstr(why, ": cannot open: ");
  if (open_err && (st == SFA_ERR_NOT_FOUND || st == SFA_ERR_IO))
    return sfa__fail(err, errlen, st, "%s: cannot open the cubin of %s: %s", e->path, e->name,
                     open_err + strlen(": cannot open: "));
  if (st == SFA_ERR_CORRUPT)
    return sfa__fail(err, errlen, st, "%s (the manifest says %zu bytes)", why, e->cubin_bytes);
  if (st != SFA_OK) return sfa__fail(err, errlen, st, "%s", why);
  if (got != e->cubin_bytes) {
    st = sfa__fail(err, errlen, SFA_ERR_CORRUPT, "%s: %zu bytes, the manifest says %zu (%s)",
                   e->path, got, e->cubin_bytes,
                   got < e->cubin_bytes ? "truncated" : "longer than written");
  } else {
    uint64_t h = sfa__cubin_xxh3(data, e->cubin_bytes);
    if (h != e->cubin_xxh3)
      st = sfa__fail(err, errlen, SFA_ERR_CORRUPT,
                     "%s: checksum mismatch: XXH3-64 is %016" PRIx64 ", the manifest says "
                     "%016" PRIx64 " (the file was altered)",
                     e->path, h, e->cubin_xxh3);
  }
  if (st != SFA_OK) {
    free(data);
    return st;
  }
  *buf = data;
  *len = e->cubin_bytes;
  return SFA_OK;
}
