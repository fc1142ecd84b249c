/*
** sfa_tune_main.c -- sfa-tune, the ahead-of-time autotuner: sweeps a grid of
** shapes on the GPU (runtime/tune_gpu.c), records each winner in the tuning
** db of the device's GPU model in the cache dir (cache/tunedb.h), prints a
** table of winners against the heuristic default, and imports, exports and
** lists db files so that an application can ship its tuned tables. --measure
** prints the JIT figures (runtime/sfa_tune_measure.c).
*/
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sfa.h"
#include "cache/tunedb.h"
#include "gen/flag.h"
#include "gen/gen_internal.h"
#include "gen/mode.h"
#include "runtime/autotune.h"
#include "runtime/internal.h"
#include "runtime/sfa_tune.h"
#include "runtime/tune_gpu.h"

#define EXIT_USAGE 2

static const char usage_text[] =
  "usage: sfa-tune [grid options] [db options] [--measure] [options]\n"
  "\n"
  "Times every candidate tile config of the forward (or bwd) kernel on this GPU for a grid\n"
  "of shapes (random inputs, CUDA events, warm-up + median, outputs checked\n"
  "against the heuristic default) and records the winners in the tuning db of\n"
  "the GPU model: <cache dir>/tuning/<gpu>_sm<cc>.tsv, which sfa_forward reads\n"
  "under options.tune = SFA_TUNE_CACHED or SFA_TUNE_ON.\n"
  "\n"
  "Grid (each LIST is comma-separated; every combination is one shape):\n"
  "  --pass fwd|bwd      the kernel to tune (default fwd); bwd times the whole\n"
  "                      backward call with each bwd tile config (sfa_backward's\n"
  "                      head dims: up to 128, and multiples of 32 up to 256)\n"
  "  --modes LIST        dense, qk_drop, hash, window   (default dense,hash)\n"
  "  --dtypes LIST       fp16, bf16                     (default bf16)\n"
  "  --head-dims LIST    multiples of 16 in 32..256     (default 64,128)\n"
  "  --seq-lens LIST     Tq = Tk                        (default 4096,16384)\n"
  "  --batch N           (default 0: 65536 / T, at least 1)\n"
  "  --heads N           query heads (default 16)\n"
  "  --kv-heads N        key/value heads (default: --heads)\n"
  "  --causal 0|1        dense and window (default 1)\n"
  "  --window N          window mode: window_left (default 1024)\n"
  "  --bias, --mask      window mode: a bias / mask of shape [1, 1, T, T]\n"
  "  --buckets N         hash mode: random buckets per (batch, head) (default 16)\n"
  "  --keep F            qk_drop mode: fraction of positions kept (default 0.7)\n"
  "  --warmup N          untimed runs per candidate (default 3)\n"
  "  --reps N            timed runs per candidate; the median counts (default 10)\n"
  "  --kinds LIST        mma kinds whose candidates are timed: sync, wgmma, ws\n"
  "                      (default: all; the default config is timed always)\n"
  "  --force             re-tune shapes whose key is already in the db\n"
  "Db:\n"
  "  --import FILE       merge a db file (same GPU model) into the cache's db;\n"
  "                      for a key in both the faster row is kept\n"
  "  --export FILE       write the db (after the sweep) to FILE, to ship with an\n"
  "                      application (which then imports it, or copies it to\n"
  "                      <cache dir>/tuning/)\n"
  "  --list              print the db's rows\n"
  "  --gpu NAME --cc N   the GPU model of the db, for --import/--export/--list on\n"
  "                      a machine without that GPU (default: device --device)\n"
  "  --sweep             also sweep when --import, --export, --list or\n"
  "                      --measure is given (otherwise those run alone)\n"
  "Measure:\n"
  "  --measure           for each (mode, dtype, head dim) of the grid, with the\n"
  "                      default tiles: cold compile (render + NVRTC), warm load\n"
  "                      (disk cache + module load in a fresh context), and for\n"
  "                      dense the host time per sfa_forward call of a cached\n"
  "                      kernel under tune policies off and cached, and per\n"
  "                      sfa_decode call (one token, paged cache, split-KV)\n"
  "Options:\n"
  "  --device N          CUDA device ordinal (default 0)\n"
  "  --cache-dir DIR     (default: SFA_CACHE_DIR, $XDG_CACHE_HOME/sfa, ~/.cache/sfa)\n"
  "  -v, --verbose       a line per candidate and the runtime's notes\n"
  "  -h, --help          this text\n"
  "\n"
  "Progress goes to stderr (a line per shape), the table to stdout.\n"
  "Exit status: 0 ok, 1 a failure (no GPU, a shape could not be tuned, a file),\n"
  "2 bad usage.\n";

static void die_usage(const char *fmt, ...) {
  va_list ap;
  fputs("sfa-tune: ", stderr);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputs("\n(see sfa-tune --help)\n", stderr);
  exit(EXIT_USAGE);
}

/* ------------------------------------------------------------ arguments */

static long parse_num(const char *flag, const char *v, long lo, long hi) {
  char *end;
  errno = 0;
  long x = strtol(v, &end, 10);
  if (errno || end == v || *end || x < lo || x > hi)
    die_usage("%s: '%s' is not a number in %ld..%ld", flag, v, lo, hi);
  return x;
}

/* A comma list of numbers into v (at most max). */
static int parse_list(const char *flag, const char *s, long *v, int max, long lo, long hi) {
  char buf[512];
  int n = 0;
  snprintf(buf, sizeof buf, "%s", s);
  for (char *t = strtok(buf, ","); t; t = strtok(NULL, ",")) {
    if (n == max) die_usage("%s: at most %d values", flag, max);
    v[n++] = parse_num(flag, t, lo, hi);
  }
  if (!n) die_usage("%s: empty list", flag);
  return n;
}

static int parse_names(const char *flag, const char *s, const char *const *names, int nn,
                       int *v, int max) {
  char buf[512];
  int n = 0;
  snprintf(buf, sizeof buf, "%s", s);
  for (char *t = strtok(buf, ","); t; t = strtok(NULL, ",")) {
    int k = 0;
    while (k < nn && strcmp(t, names[k]) != 0) k++;
    if (k == nn) die_usage("%s: unknown value '%s'", flag, t);
    if (n == max) die_usage("%s: at most %d values", flag, max);
    v[n++] = k;
  }
  if (!n) die_usage("%s: empty list", flag);
  return n;
}

static const char *const DTYPES[2] = {"fp16", "bf16"};

/* The names of the modes (the mode table), for parse_names. */
static const char *const *mode_names(int *n) {
  static const char *names[16];
  size_t nm = 0;
  const sfa__mode *m = sfa__mode_table(&nm);
  for (size_t i = 0; i < nm && i < 16; i++) names[i] = m[i].name;
  *n = nm < 16 ? (int)nm : 16;
  return names;
}

static void parse_args(sfa__tune_opts *o, int argc, char **argv) {
  memset(o, 0, sizeof *o);
  o->nmodes = 2, o->modes[0] = SFA_MODE_DENSE, o->modes[1] = SFA_MODE_HASH;
  o->ndtypes = 1, o->dtypes[0] = SFA_DTYPE_BF16;
  o->ndims = 2, o->dims[0] = 64, o->dims[1] = 128;
  o->nlens = 2, o->lens[0] = 4096, o->lens[1] = 16384;
  o->heads = 16, o->causal = 1, o->window = 1024, o->buckets = SFA__TUNE_HASH_BUCKETS;
  o->keep = SFA__TUNE_QK_KEEP, o->warmup = SFA__TUNE_WARMUP, o->reps = SFA__TUNE_REPS;
  o->cc = 0;
  int other_action = 0;
  for (int i = 1; i < argc; i++) {
    char flag[64];
    const char *a = argv[i], *val = NULL, *eq = strchr(a, '=');
    if (strncmp(a, "--", 2) == 0 && eq) {
      snprintf(flag, sizeof flag, "%.*s", (int)(eq - a), a);
      a = flag;
      val = eq + 1;
    }
#define IS(f) (strcmp(a, f) == 0)
#define VALUE() (val ? val : (i + 1 < argc ? argv[++i] : (die_usage("%s needs a value", a), "")))
#define NOVALUE() do { if (val) die_usage("%s takes no value", a); } while (0)
    long tmp[SFA__TUNE_MAX_LIST];
    if (IS("-h") || IS("--help")) {
      fputs(usage_text, stdout);
      exit(0);
    } else if (IS("--pass")) {
      const char *v = VALUE();
      if (strcmp(v, "fwd") == 0) o->pass = SFA_PASS_FWD;
      else if (strcmp(v, "bwd") == 0) o->pass = SFA_PASS_BWD;
      else die_usage("--pass: '%s' is not fwd or bwd", v);
    } else if (IS("--modes")) {
      int m[SFA__TUNE_MAX_LIST], nm = 0;
      const char *const *names = mode_names(&nm);
      o->nmodes = parse_names(a, VALUE(), names, nm, m, SFA__TUNE_MAX_LIST);
      for (int k = 0; k < o->nmodes; k++) o->modes[k] = sfa__mode_table(NULL)[m[k]].mode;
    } else if (IS("--dtypes")) {
      int d[SFA__TUNE_MAX_LIST];
      o->ndtypes = parse_names(a, VALUE(), DTYPES, 2, d, SFA__TUNE_MAX_LIST);
      for (int k = 0; k < o->ndtypes; k++) o->dtypes[k] = d[k] ? SFA_DTYPE_BF16 : SFA_DTYPE_FP16;
    } else if (IS("--head-dims")) {
      o->ndims = parse_list(a, VALUE(), tmp, SFA__TUNE_MAX_LIST, 16, 256);
      for (int k = 0; k < o->ndims; k++) o->dims[k] = (int)tmp[k];
    } else if (IS("--seq-lens")) {
      o->nlens = parse_list(a, VALUE(), tmp, SFA__TUNE_MAX_LIST, 1, 1L << 30);
      for (int k = 0; k < o->nlens; k++) o->lens[k] = tmp[k];
    } else if (IS("--batch")) {
      o->batch = parse_num(a, VALUE(), 0, 1L << 20);
    } else if (IS("--heads")) {
      o->heads = parse_num(a, VALUE(), 1, 1L << 16);
    } else if (IS("--kv-heads")) {
      o->kv_heads = parse_num(a, VALUE(), 1, 1L << 16);
    } else if (IS("--causal")) {
      o->causal = (int)parse_num(a, VALUE(), 0, 1);
    } else if (IS("--window")) {
      o->window = (int)parse_num(a, VALUE(), 0, 1L << 30);
    } else if (IS("--bias")) {
      NOVALUE();
      o->bias = 1;
    } else if (IS("--mask")) {
      NOVALUE();
      o->mask = 1;
    } else if (IS("--buckets")) {
      o->buckets = (int)parse_num(a, VALUE(), 1, SFA_HASH_MAX_BUCKETS);
    } else if (IS("--keep")) {
      const char *v = VALUE();
      char *end;
      o->keep = strtod(v, &end);
      if (end == v || *end || !(o->keep > 0 && o->keep <= 1))
        die_usage("--keep: '%s' is not a fraction in (0, 1]", v);
    } else if (IS("--warmup")) {
      o->warmup = (int)parse_num(a, VALUE(), 0, 1000);
    } else if (IS("--reps")) {
      o->reps = (int)parse_num(a, VALUE(), 1, 1000);
    } else if (IS("--kinds")) {
      const char *kinds[8]; /* the mma kinds' names (the tuning db's), in sfa_spec_mma order */
      int nkinds = 0, k[SFA__TUNE_MAX_LIST];
      while (nkinds < 8 && sfa__mma_name((sfa_spec_mma)nkinds))
        kinds[nkinds] = sfa__mma_name((sfa_spec_mma)nkinds), nkinds++;
      const int nk = parse_names(a, VALUE(), kinds, nkinds, k, SFA__TUNE_MAX_LIST);
      o->kinds = 0;
      for (int j = 0; j < nk; j++) o->kinds |= 1u << k[j];
    } else if (IS("--force")) {
      NOVALUE();
      o->force = 1;
    } else if (IS("--import")) {
      if (o->nimports == SFA__TUNE_MAX_LIST)
        die_usage("--import: at most %d files", SFA__TUNE_MAX_LIST);
      o->imports[o->nimports++] = VALUE();
      other_action = 1;
    } else if (IS("--export")) {
      o->export_path = VALUE();
      other_action = 1;
    } else if (IS("--list")) {
      NOVALUE();
      o->list = 1;
      other_action = 1;
    } else if (IS("--measure")) {
      NOVALUE();
      o->measure = 1;
      other_action = 1;
    } else if (IS("--sweep")) {
      NOVALUE();
      o->sweep = 1;
    } else if (IS("--gpu")) {
      o->gpu = VALUE();
    } else if (IS("--cc")) {
      o->cc = (int)parse_num(a, VALUE(), 10, 999);
    } else if (IS("--device")) {
      o->device = (int)parse_num(a, VALUE(), 0, 1024);
    } else if (IS("--cache-dir")) {
      o->cache_dir = VALUE();
    } else if (IS("-v") || IS("--verbose")) {
      NOVALUE();
      o->verbose = 1;
    } else {
      die_usage("unknown option '%s'", argv[i]);
    }
#undef IS
#undef VALUE
#undef NOVALUE
  }
  if (!other_action) o->sweep = 1;
  if (!o->gpu != !o->cc) die_usage("--gpu and --cc go together");
  if (o->gpu && (o->sweep || o->measure))
    die_usage("--gpu/--cc name a db for --import/--export/--list; a sweep or --measure "
              "uses the device");
  if (!o->kv_heads) o->kv_heads = o->heads;
  if (o->heads % o->kv_heads) die_usage("--heads %ld is not a multiple of --kv-heads %ld",
                                        o->heads, o->kv_heads);
  for (int k = 0; k < o->ndims; k++)
    if (o->dims[k] % 16) die_usage("--head-dims: %d is not a multiple of 16", o->dims[k]);
}

/* ------------------------------------------------------------ the device and db */

/* Binds device o->device; fills dev and its name. 0, or 1 with a message. */
static int bind_device(sfa_context *ctx, sfa__device *dev, char *gpu, size_t n) {
  sfa_status st = sfa__bind(ctx, dev);
  if (st != SFA_OK) {
    fprintf(stderr, "sfa-tune: this needs a CUDA GPU: %s: %s\n", sfa_status_string(st),
            sfa_last_error(ctx));
    return 1;
  }
  const sfa_driver *d;
  if (sfa__driver_load(&d, NULL, 0) != SFA_OK || d->cuDeviceGetName(gpu, (int)n, dev->dev)) {
    fprintf(stderr, "sfa-tune: cannot read the name of device %d\n", (int)dev->dev);
    return 1;
  }
  return 0;
}

static void print_rows(sfa_tunedb *db) {
  size_t n = sfa_tunedb_count(db);
  printf("# %s: %zu row%s\n", sfa_tunedb_path(db), n, n == 1 ? "" : "s");
  printf("%-6s %-7s %-5s %-4s %-12s %-24s %-18s %10s %10s %8s\n", "pass", "mode", "dtype", "D",
         "flags", "size bucket", "tiles", "time_us", "default_us", "speedup");
  for (size_t i = 0; i < n; i++) {
    sfa_tune_row r;
    if (sfa_tunedb_row(db, i, &r) != SFA_OK) break;
    char fl[96];
    if (!sfa__flag_list(fl, sizeof fl, r.key.flags, 0, "+")) strcpy(fl, "-");
    char tiles[48];
    sfa__tune_tiles_str(r.cfg.block_m, r.cfg.block_n, r.cfg.num_warps, r.cfg.num_stages,
                        r.cfg.mma, tiles, sizeof tiles);
    const char *pass = sfa__pass_name(r.key.pass), *mode = sfa__mode_name(r.key.mode);
    printf("%-6s %-7s %-5s %-4d %-12s %-24s %-18s %10.3f %10.3f %7.3fx\n", pass ? pass : "?",
           mode ? mode : "?", sfa__dtype_str(r.key.dtype), r.key.head_dim, fl, r.key.bucket,
           tiles, r.time_us, r.default_time_us, r.default_time_us / r.time_us);
  }
}

/* --import, --export, --list on db. 0 or 1. */
static int db_actions(const sfa__tune_opts *o, sfa_tunedb *db) {
  char err[2048];
  for (int i = 0; i < o->nimports; i++) {
    int changed = 0;
    if (sfa_tunedb_merge_file(db, o->imports[i], &changed, err, sizeof err) != SFA_OK) {
      fprintf(stderr, "sfa-tune: --import: %s\n", err);
      return 1;
    }
    if (sfa_tunedb_save(db, err, sizeof err) != SFA_OK) {
      fprintf(stderr, "sfa-tune: %s\n", err);
      return 1;
    }
    fprintf(stderr, "sfa-tune: imported %s: %d row%s added or replaced in %s\n", o->imports[i],
            changed, changed == 1 ? "" : "s", sfa_tunedb_path(db));
  }
  if (o->list) print_rows(db);
  if (o->export_path) {
    if (sfa_tunedb_export(db, o->export_path, err, sizeof err) != SFA_OK) {
      fprintf(stderr, "sfa-tune: --export: %s\n", err);
      return 1;
    }
    fprintf(stderr, "sfa-tune: exported %zu rows to %s\n", sfa_tunedb_count(db), o->export_path);
  }
  return 0;
}

/* ------------------------------------------------------------ main */

int main(int argc, char **argv) {
  sfa__tune_opts o;
  parse_args(&o, argc, argv);

  sfa_options so;
  sfa_options_init(&so);
  so.cache_dir = o.cache_dir;
  so.device = o.device;
  so.verbose = o.verbose;
  so.tune = SFA_TUNE_OFF;
  sfa_context *ctx = NULL;
  if (sfa_context_create(&ctx, &so) != SFA_OK) {
    fprintf(stderr, "sfa-tune: %s\n", ctx ? sfa_last_error(ctx) : "out of memory");
    sfa_context_destroy(ctx);
    return 1;
  }

  int rc = 0;
  sfa__device dev;
  memset(&dev, 0, sizeof dev);
  char gpu[SFA_TUNEDB_GPU_MAX] = "";
  int cc = o.cc;
  if (o.gpu) {
    snprintf(gpu, sizeof gpu, "%s", o.gpu);
  } else if (bind_device(ctx, &dev, gpu, sizeof gpu) != 0) {
    if (!o.sweep && !o.measure)
      fprintf(stderr, "sfa-tune: (--gpu NAME --cc N name the db without a GPU)\n");
    sfa_context_destroy(ctx);
    return 1;
  } else {
    cc = dev.cc;
  }

  sfa_tunedb *db = NULL;
  char err[2048];
  if (sfa_tunedb_open(&db, o.cache_dir, gpu, cc, 0, err, sizeof err) != SFA_OK) {
    fprintf(stderr, "sfa-tune: %s\n", err);
    sfa_context_destroy(ctx);
    return 1;
  }
  if (o.nimports) {
    sfa__tune_opts imp = o;
    imp.list = 0, imp.export_path = NULL;
    rc = db_actions(&imp, db);
  }
  if (!rc && o.sweep) {
    fprintf(stderr, "sfa-tune: %s (sm_%d), db %s\n", gpu, cc, sfa_tunedb_path(db));
    rc = sfa__tune_sweep(ctx, &dev, db, &o);
  }
  if (!rc && o.measure) rc = sfa__tune_measure(ctx, &dev, &o);
  if (!rc && (o.list || o.export_path)) {
    sfa__tune_opts out = o;
    out.nimports = 0;
    rc = db_actions(&out, db);
  }
  sfa_tunedb_close(db);
  sfa_context_destroy(ctx);
  return rc;
}
