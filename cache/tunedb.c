/*
** tunedb.c -- the tuning database (see tunedb.h): size buckets, the TSV row
** format and its tolerant reader, a sorted in-memory table, and atomic saves
** (temporary file in the same directory + rename, under a directory flock).
** Files are read with cache/fileio.h (regular files only, never blocking, at
** most SFA__FILE_MAX_TEXT bytes and SFA__FILE_MAX_LINE bytes a line).
*/
#include "cache/tunedb.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "cache/fileio.h"
#include "cache/store.h"
#include "gen/arch.h"
#include "gen/flag.h"
#include "gen/gen_internal.h"

#define PATH_BUF 1024
#define LINE_MAX_BYTES SFA__FILE_MAX_LINE
/* Times are written with "%.9g": 9 significant digits, read back by strtod to
** within 1 part in 1e9 for every value in (0, SFA_TUNEDB_TIME_MAX]. */
#define TIME_FMT "%.9g"
#define NCOLS 16    /* v2; v1 files have 15 (no mma column: mma.sync) */
#define MAX_SIDE ((int64_t)1 << 40)

static const char HEADER_PREFIX[] = "# sfa tuning db v";
static const char COLUMNS[] =
    "gpu\tcc\tpass\tmode\tdtype\thead_dim\tflags\tsize_bucket\tblock_m\tblock_n\t"
    "num_warps\tnum_stages\tmma\ttime_us\tdefault_time_us\tdate";
static const char COLUMNS_V1[] =
    "gpu\tcc\tpass\tmode\tdtype\thead_dim\tflags\tsize_bucket\tblock_m\tblock_n\t"
    "num_warps\tnum_stages\ttime_us\tdefault_time_us\tdate";


/* The arch whose domain a key's or row's spec is checked in: a db belongs to
** a cc, not to an arch, so the arch of that cc in the arch table, else any
** arch of the table (the domain checks of the other fields do not depend on
** which). */
static int domain_arch(int cc) {
  const sfa__arch *a = sfa__arch_for_cc(cc);
  return a ? a->arch : sfa__arch_table(NULL)[0].arch;
}

/* A row and its parsed bucket, the sort key. */
typedef struct trow {
  sfa_tune_row r;
  int64_t tq, tk, bh;
} trow;

typedef struct rowvec {
  trow *v;
  size_t n, cap;
} rowvec;

struct sfa_tunedb {
  char path[PATH_BUF];
  char gpu[SFA_TUNEDB_GPU_MAX];
  int cc;
  int quiet;
  int own_path; /* the cache's own db (sfa_tunedb_open): a symbolic link there is not followed */
  pthread_mutex_t lock;
  rowvec rows; /* sorted by key_cmp, unique keys; guarded by lock */
  char warning[PATH_BUF + 512];
};

/* ------------------------------------------------------------ small helpers */

/* Printable ASCII, non-empty, fits; TAB and control bytes are not allowed. */
static int valid_gpu(const char *s) {
  size_t n = s ? strlen(s) : 0;
  if (n == 0 || n >= SFA_TUNEDB_GPU_MAX) return 0;
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e) return 0;
  return 1;
}

/* A copy of s for messages: at most n - 1 bytes, non-printable ones as '?'. */
static const char *printable(const char *s, char *buf, size_t n) {
  size_t i = 0;
  for (; s[i] && i + 1 < n; i++)
    buf[i] = ((unsigned char)s[i] >= 0x20 && (unsigned char)s[i] < 0x7f) ? s[i] : '?';
  buf[i] = '\0';
  return buf;
}

static int valid_cc(int cc) { return cc >= 10 && cc <= 999; }

/* Strict decimal: digits only, no leading zeros, at most INT_MAX. */
static int parse_int(const char *s, int *out) {
  long v = 0;
  if (*s < '0' || *s > '9' || (s[0] == '0' && s[1] != '\0')) return 0;
  for (; *s; s++) {
    if (*s < '0' || *s > '9') return 0;
    v = v * 10 + (*s - '0');
    if (v > INT_MAX) return 0;
  }
  *out = (int)v;
  return 1;
}

/* A time in (0, SFA_TUNEDB_TIME_MAX], as TIME_FMT writes it; ERANGE from an
** underflow to a subnormal value is accepted (it is what was written). */
static int valid_time(double v) { return isfinite(v) && v > 0 && v <= SFA_TUNEDB_TIME_MAX; }

static int parse_time(const char *s, double *out) {
  char *end;
  if (!*s) return 0;
  errno = 0;
  double v = strtod(s, &end);
  if (*end != '\0' || (errno == ERANGE && !(v > 0 && v < 1)) || !valid_time(v)) return 0;
  *out = v;
  return 1;
}

static int valid_date(const char *s) {
  size_t n = strlen(s);
  if (n < 10 || n >= SFA_TUNEDB_DATE_MAX) return 0;
  for (size_t i = 0; i < 10; i++) {
    int dash = (i == 4 || i == 7);
    if (dash ? s[i] != '-' : (s[i] < '0' || s[i] > '9')) return 0;
  }
  for (size_t i = 10; i < n; i++)
    if (!strchr("0123456789T:Z+-.", s[i])) return 0;
  return 1;
}

static void now_iso(char *buf, size_t n) {
  time_t t = time(NULL);
  struct tm tm;
  if (!gmtime_r(&t, &tm) || strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
    snprintf(buf, n, "1970-01-01T00:00:00Z");
}

/* mkdir -p of path's directory part, new directories with mode `mode`; 0 or -1
** with errno set. */
static int mkdir_parent(const char *path, char *dir, size_t n, mode_t mode) {
  struct stat sb;
  snprintf(dir, n, "%s", path);
  char *slash = strrchr(dir, '/');
  if (!slash) {
    snprintf(dir, n, ".");
    return 0;
  }
  if (slash == dir) {
    dir[1] = '\0';
    return 0;
  }
  *slash = '\0';
  for (char *p = dir + 1;; p++) {
    if (*p != '/' && *p != '\0') continue;
    char c = *p;
    *p = '\0';
    if (mkdir(dir, mode) != 0) {
      int e = errno;
      if (e != EEXIST || stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        *p = c;
        errno = (e == EEXIST) ? ENOTDIR : e;
        return -1;
      }
    }
    *p = c;
    if (c == '\0') return 0;
  }
}

/* ------------------------------------------------------------ buckets and keys */

static int64_t pow2_ceil(int64_t v) {
  int64_t p = 1;
  while (p < v) p <<= 1;
  return p;
}

sfa_status sfa_tunedb_bucket(int64_t tq, int64_t tk, int64_t bh, char *buf, size_t n, char *err,
                             size_t errlen) {
  const sfa_status bad = SFA_ERR_INVALID_ARGUMENT;
  if (!buf || n == 0) return sfa__fail(err, errlen, bad, "size bucket: NULL buffer");
  buf[0] = '\0';
  if (tq < 1 || tq > MAX_SIDE || tk < 1 || tk > MAX_SIDE || bh < 1 || bh > MAX_SIDE)
    return sfa__fail(err, errlen, bad,
                "size bucket: Tq %lld, Tk %lld and batch*heads %lld must each be in 1..2^40",
                (long long)tq, (long long)tk, (long long)bh);
  int len = snprintf(buf, n, "tq%lld_tk%lld_bh%lld", (long long)pow2_ceil(tq),
                     (long long)pow2_ceil(tk), (long long)pow2_ceil(bh));
  if (len < 0 || (size_t)len >= n) {
    buf[0] = '\0';
    return sfa__fail(err, errlen, bad, "size bucket: buffer of %zu bytes is too short", n);
  }
  return SFA_OK;
}

/* "<prefix><power of two>" at *p, advancing *p. */
static int parse_side(const char **p, const char *prefix, int64_t *out) {
  const char *s = *p;
  size_t pl = strlen(prefix);
  int64_t v = 0;
  if (strncmp(s, prefix, pl) != 0) return 0;
  s += pl;
  if (*s < '1' || *s > '9') return 0;
  while (*s >= '0' && *s <= '9') {
    v = v * 10 + (*s++ - '0');
    if (v > MAX_SIDE) return 0;
  }
  if (v & (v - 1)) return 0;
  *out = v;
  *p = s;
  return 1;
}

int sfa_tunedb_bucket_parse(const char *s, int64_t *tq, int64_t *tk, int64_t *bh) {
  int64_t a, b, c;
  if (!s || !parse_side(&s, "tq", &a) || !parse_side(&s, "_tk", &b) ||
      !parse_side(&s, "_bh", &c) || *s)
    return -1;
  if (tq) *tq = a;
  if (tk) *tk = b;
  if (bh) *bh = c;
  return 0;
}

sfa_status sfa_tunedb_make_key(sfa_tune_key *key, const char *gpu, int cc,
                               const sfa_kernel_spec *spec, int64_t tq, int64_t tk, int64_t bh,
                               char *err, size_t errlen) {
  const sfa_status bad = SFA_ERR_INVALID_ARGUMENT;
  if (!key || !spec) return sfa__fail(err, errlen, bad, "tuning key: NULL argument");
  memset(key, 0, sizeof *key);
  if (!valid_gpu(gpu))
    return sfa__fail(err, errlen, bad,
                "tuning key: gpu name must be 1..%d printable ASCII characters",
                SFA_TUNEDB_GPU_MAX - 1);
  if (!valid_cc(cc)) return sfa__fail(err, errlen, bad, "tuning key: cc %d is not in 10..999", cc);
  sfa_kernel_spec s = *spec;
  /* not in the key: the configuration, and the arch */
  s.block_m = 64, s.block_n = 64, s.num_warps = 4, s.num_stages = 1, s.mma = SFA_SPEC_MMA_SYNC;
  s.arch = domain_arch(cc);
  char why[256];
  if (sfa__spec_check_domain(&s, why, sizeof why) != SFA_OK)
    return sfa__fail(err, errlen, bad, "tuning key: %s", why);
  sfa_status st = sfa_tunedb_bucket(tq, tk, bh, key->bucket, sizeof key->bucket, err, errlen);
  if (st != SFA_OK) return st;
  snprintf(key->gpu, sizeof key->gpu, "%s", gpu);
  key->cc = cc;
  key->pass = spec->pass;
  key->mode = spec->mode;
  key->dtype = spec->dtype;
  key->head_dim = spec->head_dim;
  key->flags = spec->flags;
  return SFA_OK;
}

sfa_tune_config sfa_tunedb_config_of(const sfa_kernel_spec *spec) {
  sfa_tune_config c = {spec->block_m, spec->block_n, spec->num_warps, spec->num_stages,
                       spec->mma};
  return c;
}

void sfa_tunedb_config_apply(const sfa_tune_config *cfg, sfa_kernel_spec *spec) {
  spec->block_m = cfg->block_m;
  spec->block_n = cfg->block_n;
  spec->num_warps = cfg->num_warps;
  spec->num_stages = cfg->num_stages;
  spec->mma = cfg->mma;
}

sfa_status sfa_tunedb_file_name(const char *gpu, int cc, char *out, size_t n, char *err,
                                size_t errlen) {
  const sfa_status bad = SFA_ERR_INVALID_ARGUMENT;
  if (!out || n == 0) return sfa__fail(err, errlen, bad, "tuning db file name: NULL buffer");
  out[0] = '\0';
  if (!valid_gpu(gpu))
    return sfa__fail(err, errlen, bad,
                "tuning db: gpu name must be 1..%d printable ASCII characters",
                SFA_TUNEDB_GPU_MAX - 1);
  if (!valid_cc(cc)) return sfa__fail(err, errlen, bad, "tuning db: cc %d is not in 10..999", cc);
  size_t len = strlen(gpu);
  if (len + 12 > n) return sfa__fail(err, errlen, bad, "tuning db file name: buffer too short");
  for (size_t i = 0; i < len; i++) {
    char c = gpu[i];
    int ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
             c == '_' || c == '-';
    out[i] = ok ? c : '_';
  }
  snprintf(out + len, n - len, "_sm%d.tsv", cc);
  return SFA_OK;
}

/* ------------------------------------------------------------ rows: checks, order */

static void flags_str(unsigned flags, char *buf, size_t n) {
  if (!sfa__flag_list(buf, n, flags, 0, "+")) snprintf(buf, n, "-");
}

/* Canonical flags field: "-" or tokens in name order joined by '+'. */
static int parse_flags(const char *s, unsigned *out) {
  unsigned f = 0;
  size_t next = 0;
  if (strcmp(s, "-") == 0) {
    *out = 0;
    return 1;
  }
  for (;;) {
    size_t len = strcspn(s, "+"), nf;
    const sfa__flag *ft = sfa__flag_table(&nf), *hit = sfa__flag_named(s, len);
    size_t i = hit ? (size_t)(hit - ft) : nf; /* flags in name order, once each */
    if (!hit || i < next) return 0;
    f |= hit->bit;
    next = i + 1;
    s += len;
    if (*s == '\0') break;
    s++; /* '+' */
  }
  *out = f;
  return 1;
}

static int name_index(const char *s, const char *(*name)(int), int n) {
  for (int i = 0; i < n; i++)
    if (name(i) && strcmp(s, name(i)) == 0) return i;
  return -1;
}
static const char *pass_n(int i) { return sfa__pass_name((sfa_pass)i); }
static const char *mode_n(int i) { return sfa__mode_name((sfa_mode)i); }
static const char *dtype_n(int i) { return sfa__dtype_name((sfa_dtype)i); }

#define CMP(a, b) \
  do {            \
    if ((a) != (b)) return (a) < (b) ? -1 : 1; \
  } while (0)

static int key_cmp(const trow *a, const trow *b) {
  int c = strcmp(a->r.key.gpu, b->r.key.gpu);
  if (c) return c < 0 ? -1 : 1;
  CMP(a->r.key.cc, b->r.key.cc);
  CMP((int)a->r.key.pass, (int)b->r.key.pass);
  CMP((int)a->r.key.mode, (int)b->r.key.mode);
  CMP((int)a->r.key.dtype, (int)b->r.key.dtype);
  CMP(a->r.key.head_dim, b->r.key.head_dim);
  CMP(a->r.key.flags, b->r.key.flags);
  CMP(a->tq, b->tq);
  CMP(a->tk, b->tk);
  CMP(a->bh, b->bh);
  return 0;
}

/* Checks a row against the db's gpu and cc and fills the parsed bucket; 0 or
** -1 with the reason in why. */
static int check_row(const char *gpu, int cc, const sfa_tune_row *r, trow *out, char *why,
                     size_t n) {
  char msg[256];
  if (!valid_gpu(r->key.gpu)) return sfa__fail(why, n, 1, "bad gpu name"), -1;
  if (strcmp(r->key.gpu, gpu) != 0 || r->key.cc != cc) {
    sfa__fail(why, n, 1, "row of gpu '%s' cc %d in the db of gpu '%s' cc %d", r->key.gpu, r->key.cc,
         gpu, cc);
    return -1;
  }
  sfa_kernel_spec s = {r->key.pass, r->key.mode, r->key.dtype, r->key.head_dim,
                       r->cfg.block_m, r->cfg.block_n, r->cfg.num_warps, r->cfg.num_stages,
                       domain_arch(cc), r->key.flags, r->cfg.mma};
  if (sfa__spec_check_domain(&s, msg, sizeof msg) != SFA_OK)
    return sfa__fail(why, n, 1, "%s", msg), -1;
  if (sfa_tunedb_bucket_parse(r->key.bucket, &out->tq, &out->tk, &out->bh) != 0)
    return sfa__fail(why, n, 1, "size_bucket '%s' is not tq<2^a>_tk<2^b>_bh<2^c>",
                printable(r->key.bucket, msg, 64)),
           -1;
  if (!valid_time(r->time_us) || !valid_time(r->default_time_us))
    return sfa__fail(why, n, 1, "time_us and default_time_us must be in (0, %g] microseconds "
                     "(got %g and %g)", SFA_TUNEDB_TIME_MAX, r->time_us, r->default_time_us),
           -1;
  if (r->date[0] && !valid_date(r->date))
    return sfa__fail(why, n, 1, "date '%s' is not YYYY-MM-DD[THH:MM:SSZ]", printable(r->date, msg, 32)),
           -1;
  out->r = *r;
  return 0;
}

/* ------------------------------------------------------------ the sorted table */

/* Index of the key, or -(insertion point) - 1. */
static long find(const rowvec *v, const trow *k) {
  size_t lo = 0, hi = v->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = key_cmp(&v->v[mid], k);
    if (c == 0) return (long)mid;
    if (c < 0) lo = mid + 1;
    else hi = mid;
  }
  return -(long)lo - 1;
}

enum { ADD_REPLACE, ADD_KEEP_FASTER, ADD_KEEP_EXISTING };

/* 1 if the table changed, 0 if not, -1 out of memory. */
static int add_row(rowvec *v, const trow *t, int how) {
  long i = find(v, t);
  if (i >= 0) {
    trow *old = &v->v[i];
    if (how == ADD_KEEP_EXISTING) return 0;
    if (how == ADD_KEEP_FASTER && !(t->r.time_us < old->r.time_us)) return 0;
    *old = *t;
    return 1;
  }
  size_t at = (size_t)(-i - 1);
  if (v->n == v->cap) {
    size_t cap = v->cap ? 2 * v->cap : 16;
    trow *nv = realloc(v->v, cap * sizeof *nv);
    if (!nv) return -1;
    v->v = nv;
    v->cap = cap;
  }
  memmove(v->v + at + 1, v->v + at, (v->n - at) * sizeof *v->v);
  v->v[at] = *t;
  v->n++;
  return 1;
}

/* ------------------------------------------------------------ reading a file */

enum { RD_OK, RD_MISSING, RD_UNREADABLE, RD_BAD_HEADER, RD_FOREIGN, RD_OOM };

typedef struct report {
  int status;
  int line;      /* the header problem's line, or the first bad row's */
  int nbad;      /* bad rows skipped */
  int version;   /* of the header: 1 or SFA_TUNEDB_VERSION */
  char why[320];
} report;

/* Splits line (modified) at TABs into at most max fields; returns the count. */
static int split_tabs(char *line, char **f, int max) {
  int n = 0;
  for (char *p = line;;) {
    if (n == max) return max + 1;
    f[n++] = p;
    char *t = strchr(p, '\t');
    if (!t) return n;
    *t = '\0';
    p = t + 1;
  }
}

static int parse_row(char *line, int version, const char *gpu, int cc, trow *out, char *why,
                     size_t n) {
  char *f[NCOLS];
  sfa_tune_row r;
  const int ncols = version == 1 ? NCOLS - 1 : NCOLS, v1 = version == 1;
  int nf = split_tabs(line, f, ncols), i;
  memset(&r, 0, sizeof r);
  if (nf != ncols) return sfa__fail(why, n, 1, "%s %d fields, expected %d", nf > ncols ? "more than" :
                                          "only", nf > ncols ? ncols : nf, ncols), -1;
  char shown[41];
#define BADF(col, what)                                                          \
  return sfa__fail(why, n, 1, "column %s: '%s' is not %s", col,                       \
              printable(f[i], shown, sizeof shown), what),                      \
         -1
  if (strlen(f[i = 0]) >= sizeof r.key.gpu) BADF("gpu", "a gpu name");
  strcpy(r.key.gpu, f[0]);
  if (!parse_int(f[i = 1], &r.key.cc)) BADF("cc", "a compute capability");
  int idx;
  if ((idx = name_index(f[i = 2], pass_n, 3)) < 0) BADF("pass", "fwd, bwddq or bwd");
  r.key.pass = (sfa_pass)idx;
  if ((idx = name_index(f[i = 3], mode_n, 4)) < 0) BADF("mode", "dense, qk_drop, hash or window");
  r.key.mode = (sfa_mode)idx;
  if ((idx = name_index(f[i = 4], dtype_n, 2)) < 0) BADF("dtype", "fp16 or bf16");
  r.key.dtype = (sfa_dtype)idx;
  if (!parse_int(f[i = 5], &r.key.head_dim)) BADF("head_dim", "a number");
  if (!parse_flags(f[i = 6], &r.key.flags)) BADF("flags", "'-' or causal+bias+mask+det");
  if (strlen(f[i = 7]) >= sizeof r.key.bucket) BADF("size_bucket", "a size bucket");
  strcpy(r.key.bucket, f[7]);
  if (!parse_int(f[i = 8], &r.cfg.block_m)) BADF("block_m", "a number");
  if (!parse_int(f[i = 9], &r.cfg.block_n)) BADF("block_n", "a number");
  if (!parse_int(f[i = 10], &r.cfg.num_warps)) BADF("num_warps", "a number");
  if (!parse_int(f[i = 11], &r.cfg.num_stages)) BADF("num_stages", "a number");
  if (!v1) {
    int m = SFA_SPEC_MMA_SYNC; /* the kinds in order, until one's name matches */
    i = 12;
    while (sfa__mma_name((sfa_spec_mma)m) && strcmp(f[12], sfa__mma_name((sfa_spec_mma)m)) != 0)
      m++;
    if (!sfa__mma_name((sfa_spec_mma)m)) BADF("mma", "sync, wgmma or ws");
    r.cfg.mma = (sfa_spec_mma)m;
  }
  if (!parse_time(f[i = 13 - v1], &r.time_us)) BADF("time_us", "a positive number");
  if (!parse_time(f[i = 14 - v1], &r.default_time_us)) BADF("default_time_us", "a positive number");
  if (!valid_date(f[i = 15 - v1])) BADF("date", "YYYY-MM-DD[THH:MM:SSZ]");
  strcpy(r.date, f[15 - v1]);
#undef BADF
  return check_row(gpu, cc, &r, out, why, n);
}

/* Checks the first line; RD_OK, RD_BAD_HEADER or RD_FOREIGN with rep->why. */
static int parse_header(const char *line, const char *gpu, int cc, report *rep) {
  size_t pl = sizeof HEADER_PREFIX - 1;
  if (strncmp(line, HEADER_PREFIX, pl) != 0) {
    char shown[61];
    sfa__fail(rep->why, sizeof rep->why, 1, "not an sfa tuning db (first line '%s')",
         printable(line, shown, sizeof shown));
    return RD_BAD_HEADER;
  }
  const char *p = line + pl;
  int ver = 0;
  size_t vl = strspn(p, "0123456789");
  char vbuf[12] = "";
  if (vl > 0 && vl < sizeof vbuf) memcpy(vbuf, p, vl), vbuf[vl] = '\0';
  if (!parse_int(vbuf, &ver) || (ver != 1 && ver != SFA_TUNEDB_VERSION)) {
    sfa__fail(rep->why, sizeof rep->why, 1, "format version '%s', this build reads v1 and v%d",
              vbuf, SFA_TUNEDB_VERSION);
    return RD_BAD_HEADER;
  }
  rep->version = ver;
  p += vl;
  const char *cce = NULL;
  for (const char *q = strstr(p, " cc="); q; q = strstr(q + 1, " cc=")) cce = q;
  if (strncmp(p, " gpu=", 5) != 0 || !cce || cce < p + 5) {
    sfa__fail(rep->why, sizeof rep->why, 1, "header lacks gpu= and cc=");
    return RD_BAD_HEADER;
  }
  int fcc = 0;
  size_t glen = (size_t)(cce - (p + 5));
  if (!parse_int(cce + 4, &fcc) || glen == 0 || glen >= SFA_TUNEDB_GPU_MAX) {
    sfa__fail(rep->why, sizeof rep->why, 1, "header has a bad gpu= or cc= value");
    return RD_BAD_HEADER;
  }
  if (strlen(gpu) != glen || strncmp(p + 5, gpu, glen) != 0 || fcc != cc) {
    char fg[SFA_TUNEDB_GPU_MAX], shown[SFA_TUNEDB_GPU_MAX];
    memcpy(fg, p + 5, glen);
    fg[glen] = '\0';
    sfa__fail(rep->why, sizeof rep->why, 1, "file of gpu '%s' cc %d, expected gpu '%s' cc %d",
         printable(fg, shown, sizeof shown), fcc, gpu, cc);
    return RD_FOREIGN;
  }
  return RD_OK;
}

/* Read path into out (rows of gpu/cc; duplicate keys keep the faster).
** nofollow: path is the cache's own db name, a symbolic link is not followed.
** A file that cannot be read (missing, not a regular file, larger than
** SFA__FILE_MAX_TEXT) leaves rep->why naming it and the reason. */
static void read_db(const char *path, int nofollow, const char *gpu, int cc, rowvec *out,
                    report *rep) {
  memset(rep, 0, sizeof *rep);
  char *text = NULL, why[256];
  size_t tlen = 0;
  sfa_status st = sfa__file_read(AT_FDCWD, path, NULL, nofollow ? SFA__READ_NOFOLLOW : 0,
                                 SFA__FILE_MAX_TEXT, &text, &tlen, rep->why, sizeof rep->why);
  if (st != SFA_OK) {
    rep->status = st == SFA_ERR_NOT_FOUND ? RD_MISSING
                  : st == SFA_ERR_OUT_OF_MEMORY ? RD_OOM : RD_UNREADABLE;
    return;
  }
  char *pos = text, *line;
  size_t len;
  int lineno = 0;
  while (sfa__file_next_line(&pos, text + tlen, &line, &len)) {
    lineno++;
    while (len > 0 && line[len - 1] == '\r') line[--len] = '\0';
    int binary = strlen(line) != len;
    if (lineno <= 2) {
      int rs = RD_OK;
      if (binary) {
        sfa__fail(rep->why, sizeof rep->why, 1, "binary data in the header");
        rs = RD_BAD_HEADER;
      } else if (len > LINE_MAX_BYTES) {
        sfa__fail(rep->why, sizeof rep->why, 1, "a header line of %zu bytes, more than %d",
                  len, LINE_MAX_BYTES);
        rs = RD_BAD_HEADER;
      } else if (lineno == 1) {
        rs = parse_header(line, gpu, cc, rep);
      } else if (strcmp(line, rep->version == 1 ? COLUMNS_V1 : COLUMNS) != 0) {
        sfa__fail(rep->why, sizeof rep->why, 1, "second line is not the column header");
        rs = RD_BAD_HEADER;
      }
      if (rs != RD_OK) {
        rep->status = rs;
        rep->line = lineno;
        break;
      }
      continue;
    }
    if (!binary && (len == 0 || line[0] == '#')) continue;
    trow t;
    int bad = 0;
    if (binary) bad = 1, sfa__fail(why, sizeof why, 1, "binary data");
    else if (len > LINE_MAX_BYTES)
      bad = 1, sfa__fail(why, sizeof why, 1, "line too long (%zu bytes, at most %d)", len,
                         LINE_MAX_BYTES);
    else bad = parse_row(line, rep->version, gpu, cc, &t, why, sizeof why) != 0;
    if (bad) {
      if (rep->nbad++ == 0) {
        rep->line = lineno;
        snprintf(rep->why, sizeof rep->why, "%s", why);
      }
      continue;
    }
    if (add_row(out, &t, ADD_KEEP_FASTER) < 0) {
      rep->status = RD_OOM;
      break;
    }
  }
  if (rep->status == RD_OK && lineno < 2) {
    rep->status = RD_BAD_HEADER;
    rep->line = lineno + 1;
    sfa__fail(rep->why, sizeof rep->why, 1, lineno == 0 ? "empty file" : "no column header");
  }
  free(text);
}

/* Formats the warning of a read (or "" for a clean one) into db->warning and
** prints it unless quiet. */
static void warn_read(sfa_tunedb *db, const char *path, const report *rep) {
  char *w = db->warning;
  size_t n = sizeof db->warning;
  w[0] = '\0';
  switch (rep->status) {
  case RD_OK:
    if (rep->nbad)
      snprintf(w, n, "tuning db %s:%d: %s; skipped %d bad line%s", path, rep->line, rep->why,
               rep->nbad, rep->nbad == 1 ? "" : "s");
    break;
  case RD_MISSING: break;
  case RD_UNREADABLE: snprintf(w, n, "tuning db %s; the file is ignored", rep->why); break;
  case RD_OOM: snprintf(w, n, "tuning db %s: out of memory; the file is ignored", path); break;
  default:
    snprintf(w, n, "tuning db %s:%d: %s; the file is ignored", path, rep->line, rep->why);
  }
  if (w[0] && !db->quiet) fprintf(stderr, "sfa: warning: %s\n", w);
}

/* ------------------------------------------------------------ open / close */

/* Opens the db at path; own: the cache's own db name (no link followed). */
static sfa_status open_db(sfa_tunedb **out, const char *path, int own, const char *gpu, int cc,
                          int quiet, char *err, size_t errlen) {
  const sfa_status bad = SFA_ERR_INVALID_ARGUMENT;
  if (!out) return sfa__fail(err, errlen, bad, "sfa_tunedb_open: db is NULL");
  *out = NULL;
  if (!path || !*path) return sfa__fail(err, errlen, bad, "tuning db: empty path");
  if (strlen(path) >= PATH_BUF - 32)
    return sfa__fail(err, errlen, bad, "tuning db: path too long (%zu bytes)", strlen(path));
  if (!valid_gpu(gpu))
    return sfa__fail(err, errlen, bad, "tuning db: gpu name must be 1..%d printable ASCII characters",
                SFA_TUNEDB_GPU_MAX - 1);
  if (!valid_cc(cc)) return sfa__fail(err, errlen, bad, "tuning db: cc %d is not in 10..999", cc);
  sfa_tunedb *db = calloc(1, sizeof *db);
  if (!db) return sfa__fail(err, errlen, SFA_ERR_OUT_OF_MEMORY, "out of memory (tuning db)");
  if (pthread_mutex_init(&db->lock, NULL) != 0) {
    free(db);
    return sfa__fail(err, errlen, SFA_ERR_INTERNAL, "cannot initialise the tuning db mutex");
  }
  snprintf(db->path, sizeof db->path, "%s", path);
  snprintf(db->gpu, sizeof db->gpu, "%s", gpu);
  db->cc = cc;
  db->quiet = quiet;
  db->own_path = own;
  report rep;
  read_db(path, own, gpu, cc, &db->rows, &rep);
  if (rep.status != RD_OK) db->rows.n = 0; /* a file is used entirely or not at all */
  warn_read(db, path, &rep);
  *out = db;
  return SFA_OK;
}

sfa_status sfa_tunedb_open(sfa_tunedb **out, const char *cache_dir, const char *gpu, int cc,
                           int quiet, char *err, size_t errlen) {
  char dir[PATH_BUF], name[SFA_TUNEDB_GPU_MAX + 16], path[PATH_BUF + 200];
  if (out) *out = NULL;
  sfa_status st = sfa_tunedb_file_name(gpu, cc, name, sizeof name, err, errlen);
  if (st != SFA_OK) return st;
  st = sfa_store_resolve_dir(cache_dir, dir, sizeof dir - 200, err, errlen);
  if (st != SFA_OK) return st;
  snprintf(path, sizeof path, "%s/tuning/%s", dir, name);
  return open_db(out, path, 1, gpu, cc, quiet, err, errlen);
}

sfa_status sfa_tunedb_open_path(sfa_tunedb **out, const char *path, const char *gpu, int cc,
                                int quiet, char *err, size_t errlen) {
  return open_db(out, path, 0, gpu, cc, quiet, err, errlen);
}

void sfa_tunedb_close(sfa_tunedb *db) {
  if (!db) return;
  pthread_mutex_destroy(&db->lock);
  free(db->rows.v);
  free(db);
}

const char *sfa_tunedb_path(const sfa_tunedb *db) { return db ? db->path : ""; }
const char *sfa_tunedb_gpu(const sfa_tunedb *db) { return db ? db->gpu : ""; }
int sfa_tunedb_cc(const sfa_tunedb *db) { return db ? db->cc : 0; }
const char *sfa_tunedb_warning(const sfa_tunedb *db) { return db ? db->warning : ""; }

/* ------------------------------------------------------------ rows */

sfa_status sfa_tunedb_lookup(sfa_tunedb *db, const sfa_tune_key *key, sfa_tune_row *row) {
  trow k;
  if (!db || !key) return SFA_ERR_INVALID_ARGUMENT;
  if (strcmp(key->gpu, db->gpu) != 0 || key->cc != db->cc) return SFA_ERR_NOT_FOUND;
  if (sfa_tunedb_bucket_parse(key->bucket, &k.tq, &k.tk, &k.bh) != 0) return SFA_ERR_NOT_FOUND;
  k.r.key = *key;
  pthread_mutex_lock(&db->lock);
  long i = find(&db->rows, &k);
  if (i >= 0 && row) *row = db->rows.v[i].r;
  pthread_mutex_unlock(&db->lock);
  return i >= 0 ? SFA_OK : SFA_ERR_NOT_FOUND;
}

sfa_status sfa_tunedb_put(sfa_tunedb *db, const sfa_tune_row *row, char *err, size_t errlen) {
  trow t;
  char why[320];
  if (!db || !row) return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT, "sfa_tunedb_put: NULL");
  if (check_row(db->gpu, db->cc, row, &t, why, sizeof why) != 0)
    return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT, "tuning db row: %s", why);
  if (!t.r.date[0]) now_iso(t.r.date, sizeof t.r.date);
  pthread_mutex_lock(&db->lock);
  int rc = add_row(&db->rows, &t, ADD_REPLACE);
  pthread_mutex_unlock(&db->lock);
  if (rc < 0) return sfa__fail(err, errlen, SFA_ERR_OUT_OF_MEMORY, "out of memory (tuning db row)");
  return SFA_OK;
}

size_t sfa_tunedb_count(sfa_tunedb *db) {
  if (!db) return 0;
  pthread_mutex_lock(&db->lock);
  size_t n = db->rows.n;
  pthread_mutex_unlock(&db->lock);
  return n;
}

sfa_status sfa_tunedb_row(sfa_tunedb *db, size_t i, sfa_tune_row *row) {
  if (!db || !row) return SFA_ERR_INVALID_ARGUMENT;
  pthread_mutex_lock(&db->lock);
  int hit = i < db->rows.n;
  if (hit) *row = db->rows.v[i].r;
  pthread_mutex_unlock(&db->lock);
  return hit ? SFA_OK : SFA_ERR_NOT_FOUND;
}

/* ------------------------------------------------------------ writing */

/* Writes rows to path through a temporary file + rename; the parent directory
** is created first. 0, or -1 with the reason in why (no temporary file left). */
static int write_db(const char *path, mode_t dir_mode, const char *gpu, int cc, const rowvec *v,
                    char *why, size_t n) {
  char dir[PATH_BUF], tmp[PATH_BUF + 16], fl[40];
  struct stat sb;
  if (mkdir_parent(path, dir, sizeof dir, dir_mode) != 0)
    return sfa__fail(why, n, 1, "cannot create directory %s: %s", dir, strerror(errno)), -1;
  /* The rename below would replace whatever is there: only a regular file may be. */
  if (lstat(path, &sb) == 0 && !S_ISREG(sb.st_mode))
    return sfa__fail(why, n, 1, "%s is %s, not a regular file; not replaced", path,
                     sfa__file_kind((unsigned)sb.st_mode)),
           -1;
  snprintf(tmp, sizeof tmp, "%s.tmp.XXXXXX", path);
  int fd = mkstemp(tmp);
  if (fd < 0)
    return sfa__fail(why, n, 1, "cannot create a temporary file in %s: %s", dir, strerror(errno)), -1;
  (void)fchmod(fd, 0644); /* mkstemp makes 0600; the db is meant to be shared */
  FILE *f = fdopen(fd, "w");
  if (!f) {
    sfa__fail(why, n, 1, "cannot write %s: %s", tmp, strerror(errno));
    close(fd);
    unlink(tmp);
    return -1;
  }
  fprintf(f, "%s%d gpu=%s cc=%d\n%s\n", HEADER_PREFIX, SFA_TUNEDB_VERSION, gpu, cc, COLUMNS);
  for (size_t i = 0; i < v->n; i++) {
    const sfa_tune_row *r = &v->v[i].r;
    flags_str(r->key.flags, fl, sizeof fl);
    fprintf(f, "%s\t%d\t%s\t%s\t%s\t%d\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t" TIME_FMT "\t" TIME_FMT
            "\t%s\n",
            r->key.gpu, r->key.cc, sfa__pass_name(r->key.pass), sfa__mode_name(r->key.mode),
            sfa__dtype_name(r->key.dtype), r->key.head_dim, fl, r->key.bucket, r->cfg.block_m,
            r->cfg.block_n, r->cfg.num_warps, r->cfg.num_stages, sfa__mma_name(r->cfg.mma),
            r->time_us, r->default_time_us, r->date);
  }
  int bad = fflush(f) != 0 || ferror(f);
  int e = errno;
  if (!bad && fsync(fileno(f)) != 0 && errno != EINVAL && errno != EROFS) bad = 1, e = errno;
  if (fclose(f) != 0 && !bad) bad = 1, e = errno;
  if (bad) {
    sfa__fail(why, n, 1, "writing %s: %s", tmp, strerror(e ? e : EIO));
    unlink(tmp);
    return -1;
  }
  if (rename(tmp, path) != 0) {
    sfa__fail(why, n, 1, "renaming %s into place: %s", tmp, strerror(errno));
    unlink(tmp);
    return -1;
  }
  return 0;
}

sfa_status sfa_tunedb_save(sfa_tunedb *db, char *err, size_t errlen) {
  char dir[PATH_BUF], why[PATH_BUF + 128];
  if (!db) return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT, "sfa_tunedb_save: db is NULL");
  pthread_mutex_lock(&db->lock);
  /* Lock the directory against other savers, then take in their rows. */
  int dfd = -1;
  if (mkdir_parent(db->path, dir, sizeof dir, db->own_path ? 0700 : 0755) == 0) {
    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) (void)flock(dfd, LOCK_EX);
  }
  rowvec disk = {NULL, 0, 0};
  report rep;
  read_db(db->path, db->own_path, db->gpu, db->cc, &disk, &rep);
  int oom = 0;
  if (rep.status == RD_OK)
    for (size_t i = 0; i < disk.n && !oom; i++)
      oom = add_row(&db->rows, &disk.v[i], ADD_KEEP_EXISTING) < 0;
  free(disk.v);
  int rc = oom ? -1
               : write_db(db->path, db->own_path ? 0700 : 0755, db->gpu, db->cc, &db->rows, why,
                          sizeof why);
  if (dfd >= 0) close(dfd); /* releases the flock */
  pthread_mutex_unlock(&db->lock);
  if (oom) return sfa__fail(err, errlen, SFA_ERR_OUT_OF_MEMORY, "out of memory (tuning db save)");
  if (rc != 0) return sfa__fail(err, errlen, SFA_ERR_IO, "tuning db %s not saved: %s", db->path, why);
  return SFA_OK;
}

sfa_status sfa_tunedb_export(sfa_tunedb *db, const char *path, char *err, size_t errlen) {
  char why[PATH_BUF + 128];
  if (!db || !path || !*path)
    return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT, "sfa_tunedb_export: NULL or empty path");
  if (strlen(path) >= PATH_BUF - 32)
    return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT, "tuning db export: path too long");
  pthread_mutex_lock(&db->lock);
  int rc = write_db(path, 0755, db->gpu, db->cc, &db->rows, why, sizeof why);
  pthread_mutex_unlock(&db->lock);
  if (rc != 0) return sfa__fail(err, errlen, SFA_ERR_IO, "tuning db export to %s failed: %s", path, why);
  return SFA_OK;
}

sfa_status sfa_tunedb_merge_file(sfa_tunedb *db, const char *path, int *changed, char *err,
                                 size_t errlen) {
  if (changed) *changed = 0;
  if (!db || !path || !*path)
    return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT, "sfa_tunedb_merge_file: NULL argument");
  rowvec other = {NULL, 0, 0};
  report rep;
  read_db(path, 0, db->gpu, db->cc, &other, &rep);
  sfa_status st = SFA_OK;
  switch (rep.status) {
  case RD_OK: break;
  case RD_MISSING:
  case RD_UNREADABLE: st = sfa__fail(err, errlen, SFA_ERR_IO, "tuning db %s", rep.why); break;
  case RD_FOREIGN:
    st = sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT, "tuning db %s: %s", path, rep.why);
    break;
  case RD_OOM: st = sfa__fail(err, errlen, SFA_ERR_OUT_OF_MEMORY, "out of memory reading %s", path); break;
  default:
    st = sfa__fail(err, errlen, SFA_ERR_CORRUPT, "tuning db %s:%d: %s", path, rep.line, rep.why);
  }
  if (st != SFA_OK) {
    free(other.v);
    return st;
  }
  pthread_mutex_lock(&db->lock);
  int n = 0, oom = 0;
  for (size_t i = 0; i < other.n && !oom; i++) {
    int r = add_row(&db->rows, &other.v[i], ADD_KEEP_FASTER);
    if (r < 0) oom = 1;
    else n += r;
  }
  warn_read(db, path, &rep);
  pthread_mutex_unlock(&db->lock);
  free(other.v);
  if (changed) *changed = n;
  if (oom) return sfa__fail(err, errlen, SFA_ERR_OUT_OF_MEMORY, "out of memory merging %s", path);
  return SFA_OK;
}
