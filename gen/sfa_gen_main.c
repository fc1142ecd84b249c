/*
** sfa_gen_main.c -- sfa-gen, the ahead-of-time tool: renders kernel specs (from
** flags, canonical names or a preset) to <name>.cu, compiles them with NVRTC to
** <name>.cubin (no GPU needed) and writes DIR/manifest.tsv describing them
** (format in gen/manifest.h: spec, cache key, cubin size and checksum).
*/
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sfa.h"
#include "gen/arch.h"
#include "gen/gen_internal.h"
#include "gen/flag.h"
#include "gen/manifest.h"
#include "gen/mode.h"
#include "runtime/keymat.h"
#include "runtime/nvrtc.h"

#define EXIT_USAGE 2
#define MAX_ARCHS 16 /* more than gen/arch.h has rows */

static const char usage_text[] =
  "usage: sfa-gen [spec flags | --name NAME... | --preset NAME] [options]\n"
  "\n"
  "Renders sfa kernels to CUDA C++ and compiles them with NVRTC (no GPU needed).\n"
  "\n"
  "Spec flags (tile flags default to sfa_spec_default):\n"
  "  --pass fwd|bwddq|bwd|decode  (default fwd), or a utility kernel:\n"
  "         bwd_pre|convert     sfa_backward's (dtype fp16 or bf16)\n"
  "         hash_sort|permute   sfa_hash_prepare / sfa_hash_unsort's\n"
  "         topk                sfa_topk_mask's (dtype fp16, bf16 or fp32)\n"
  "         merge               sfa_merge_attention's (its own dtype)\n"
  "         kv_append           sfa_kv_append's (its own dtype)\n"
  "                             (no mode, head dim, flags or tiles)\n"
  "  --mode %s   (default dense)\n"
  "  --dtype fp16|bf16|fp32     (default bf16; hash_sort, permute, merge, kv_append: their own)\n"
  "  --head-dim D               (required with spec flags of fwd, bwddq, bwd)\n"
  "%s"
  "  --mma auto|sync|wgmma|ws   tensor-core instructions (default auto: the\n"
  "                             default's; wgmma: sm_90 fwd and bwd, D 64/128,\n"
  "                             bwd also D 256 with --warps 8;\n"
  "                             ws: wgmma fed by a TMA producer warpgroup, sm_90\n"
  "                             fwd, D 64/128/256, no window mask; --warps 8,\n"
  "                             12 or 16: 1 to 3 consumer warpgroups of 64 rows;\n"
  "                             bwd of every mode, D 64/128 (dense and window\n"
  "                             also 256, not varlen: --warps 12 --block-n 64), no\n"
  "                             bias, mask or det: --warps 12, two consumers of 64\n"
  "                             keys)\n"
  "  --block-m M  --block-n N  --warps W  --stages S\n"
  "  --arch A[,A...]            (default 90; may be repeated; sm_A and smA too)\n"
  "                             %s\n"
  "Or:\n"
  "  --name NAME                a canonical name, e.g.\n"
  "                             sfa_fwd_dense_causal_bf16_d128_m128n64_w4s1_sm90,\n"
  "                             sfa_bwdpre_bf16_sm90, sfa_hashsort_sm80\n"
  "                             (may be repeated)\n"
  "  --preset small             what setup.sh builds: dense (causal and not) x\n"
  "                             fp16, bf16 x head_dim 64 128, fwd and bwd; qk_drop,\n"
  "                             hash, window causal x bf16 x 128, fwd and bwd\n"
  "  --preset default           fp16 and bf16, default tiles, for each --arch:\n"
  "                             dense (causal and not) x head_dim 32 64 96 128 256;\n"
  "                             qk_drop, hash x 64 128; window causal,\n"
  "                             causal+bias, causal+bias+mask, mask x 64 128;\n"
  "                             each kernel with a backward (D <= 128, and 256\n"
  "                             where the arch fits it) also as bwd, bwd --det\n"
  "                             and bwddq (default and all-modes)\n"
  "  --preset all-modes         every mode x every flag set it allows x fp16,\n"
  "                             bf16 x head_dim 64 128, default tiles; on sm_90\n"
  "                             fwd and bwd in both mma kinds (sync, wgmma),\n"
  "                             fwd without a mask and bwd without a bias, mask\n"
  "                             or det also as ws\n"
  "  --preset dense-tiles       every valid tile config of dense bf16 d64 and d128\n"
  "                             (on sm_90 also every wgmma and ws tile; ws d256 too;\n"
  "                             and the wgmma and ws bwd at d256)\n"
  "  small, default and all-modes also hold the utility kernels their kernels\n"
  "  need at run time (bwd_pre, convert per dtype; hash_sort, permute; topk in\n"
  "  fp16, bf16, fp32; merge), and where the default tiles depend on the key\n"
  "  length (sm_90, dense and qk_drop fwd at D 64: one ws consumer up to 4096\n"
  "  keys) both kernels, so that their dir serves every call without NVRTC\n"
  "Options:\n"
  "  --out DIR                  output directory (default ./sfa-kernels)\n"
  "  --no-cubin                 write only the .cu sources\n"
  "  --force                    compile every kernel, also those the output dir\n"
  "                             already holds (by default a kernel whose manifest\n"
  "                             row has this build's key and NVRTC and whose cubin\n"
  "                             verifies is kept, not compiled again)\n"
  "  --list                     print the kernel names and exit\n"
  "  -j, --jobs N               parallel compiles (default: online CPUs, at most 8)\n"
  "  -h, --help                 this text\n"
  "\n"
  "Writes DIR/<name>.cu, DIR/<name>.cubin and DIR/manifest.tsv (tab-separated,\n"
  "one header line; per kernel its spec, NVRTC version, cache key, cubin size and\n"
  "XXH3-64). Rows of an earlier manifest in DIR for kernels not asked for now are\n"
  "kept where they still hold (same key, cubin verifies), so DIR can grow over runs.\n"
  "Exit status: 0 ok, 1 a kernel or file failed, 2 bad usage.\n";

/* The usage text, with the modes of gen/mode.h, a line per flag of gen/flag.h
** (the modes that take it and what it asks) and the archs of gen/arch.h. */
static void usage(FILE *f) {
  char archs[128], modes[96], flags[1024] = "";
  size_t nf, at = 0;
  sfa__arch_list(archs, sizeof archs, "", ", ", " or ");
  size_t nm;
  const sfa__mode *mt = sfa__mode_table(&nm);
  modes[0] = '\0';
  for (size_t i = 0; i < nm; i++)
    snprintf(modes + strlen(modes), sizeof modes - strlen(modes), "%s%s", i ? "|" : "", mt[i].name);
  const sfa__flag *ft = sfa__flag_table(&nf);
  for (size_t i = 0; i < nf && at < sizeof flags; i++) {
    char opt[32], takers[64];
    snprintf(opt, sizeof opt, "--%s", ft[i].token);
    if (ft[i].bit == SFA_FEAT_DETERMINISTIC) snprintf(takers, sizeof takers, "every mode");
    else sfa__mode_list(takers, sizeof takers, 0, ", ", sfa__mode_takes_any, ft[i].bit);
    int w = snprintf(flags + at, sizeof flags - at, "  %-26s %s: %s\n", opt, takers, ft[i].what);
    at = w < 0 ? sizeof flags : at + (size_t)w;
  }
  fprintf(f, usage_text, modes, flags, archs);
}

static void die_usage(const char *fmt, ...) {
  va_list ap;
  fputs("sfa-gen: ", stderr);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputs("\n(see sfa-gen --help)\n", stderr);
  exit(EXIT_USAGE);
}

/* ------------------------------------------------------------ the kernel list */

typedef struct kernel {
  sfa_kernel_spec spec;
  char name[SFA__NAME_MAX];
  char key[SFA_STORE_KEY_HEX];
  size_t cubin_bytes;
  uint64_t cubin_xxh3;
  int ok;
  int kept; /* its cubin from the earlier manifest was kept, not compiled */
} kernel;

typedef struct klist {
  kernel *v;
  size_t n, cap;
} klist;

static void add_kernel(klist *l, const sfa_kernel_spec *s) {
  kernel k;
  memset(&k, 0, sizeof k);
  k.spec = *s;
  if (sfa_spec_name(s, k.name, sizeof k.name) != SFA_OK) {
    char why[256];
    sfa_spec_validate(s, why, sizeof why);
    die_usage("%s", why);
  }
  for (size_t i = 0; i < l->n; i++)
    if (strcmp(l->v[i].name, k.name) == 0) return; /* duplicate */
  if (l->n == l->cap) {
    l->cap = l->cap ? 2 * l->cap : 32;
    l->v = realloc(l->v, l->cap * sizeof *l->v);
    if (!l->v) {
      fputs("sfa-gen: out of memory\n", stderr);
      exit(1);
    }
  }
  l->v[l->n++] = k;
}

static void add_preset(klist *l, const char *preset, const int *archs, int na) {
  sfa_kernel_spec *specs = NULL;
  size_t n = 0;
  char err[256];
  if (sfa__preset(preset, archs, na, &specs, &n, err, sizeof err) != SFA_OK)
    die_usage("--%s", err);
  for (size_t i = 0; i < n; i++) add_kernel(l, &specs[i]);
  free(specs);
}

/* ------------------------------------------------------------ argument parsing */

typedef struct opts {
  const char *pass, *mode, *dtype, *mma, *preset, *out;
  int head_dim, block_m, block_n, warps, stages;
  unsigned flags; /* SFA_FEAT_*: a --TOKEN option per row of gen/flag.h */
  int archs[MAX_ARCHS], narchs;
  const char *names[256];
  int nnames;
  int no_cubin, list, jobs, force;
} opts;

static int parse_int(const char *flag, const char *v) {
  char *end;
  errno = 0;
  long x = strtol(v, &end, 10);
  if (errno || end == v || *end || x < 0 || x > 100000)
    die_usage("%s: '%s' is not a number", flag, v);
  return (int)x;
}

static void add_archs(opts *o, const char *v) {
  char buf[128];
  snprintf(buf, sizeof buf, "%s", v);
  for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
    if (strncmp(tok, "sm_", 3) == 0) tok += 3;
    else if (strncmp(tok, "sm", 2) == 0) tok += 2;
    int a = parse_int("--arch", tok);
    if (!sfa__arch_find(a)) {
      char archs[128];
      sfa__arch_list(archs, sizeof archs, "", ", ", " or ");
      die_usage("--arch: %d is not an arch sfa knows; must be %s", a, archs);
    }
    int seen = 0;
    for (int i = 0; i < o->narchs; i++) seen |= o->archs[i] == a;
    if (seen) continue;
    if (o->narchs == MAX_ARCHS) die_usage("--arch: at most %d arches", MAX_ARCHS);
    o->archs[o->narchs++] = a;
  }
}

static void parse_args(opts *o, int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    char flag[64];
    const char *a = argv[i], *val = NULL, *eq = strchr(a, '=');
    if (strncmp(a, "--", 2) == 0 && eq) { /* --flag=value */
      snprintf(flag, sizeof flag, "%.*s", (int)(eq - a), a);
      val = eq + 1;
      a = flag;
    }
#define IS(f) (strcmp(a, f) == 0)
#define VALUE() (val ? val : (i + 1 < argc ? argv[++i] : (die_usage("%s needs a value", a), "")))
#define NOVALUE() do { if (val) die_usage("%s takes no value", a); } while (0)
    if (IS("-h") || IS("--help")) {
      usage(stdout);
      exit(0);
    } else if (IS("--pass")) o->pass = VALUE();
    else if (IS("--mode")) o->mode = VALUE();
    else if (IS("--dtype")) o->dtype = VALUE();
    else if (IS("--head-dim")) o->head_dim = parse_int(a, VALUE());
    else if (IS("--block-m")) o->block_m = parse_int(a, VALUE());
    else if (IS("--block-n")) o->block_n = parse_int(a, VALUE());
    else if (IS("--warps")) o->warps = parse_int(a, VALUE());
    else if (IS("--stages")) o->stages = parse_int(a, VALUE());
    else if (IS("--arch")) add_archs(o, VALUE());
    else if (strncmp(a, "--", 2) == 0 && sfa__flag_named(a + 2, strlen(a + 2))) {
      NOVALUE();
      o->flags |= sfa__flag_named(a + 2, strlen(a + 2))->bit;
    }
    else if (IS("--mma")) o->mma = VALUE();
    else if (IS("--name")) {
      if (o->nnames == (int)(sizeof o->names / sizeof o->names[0])) die_usage("too many --name");
      o->names[o->nnames++] = VALUE();
    } else if (IS("--preset")) o->preset = VALUE();
    else if (IS("--out")) o->out = VALUE();
    else if (IS("--no-cubin")) { NOVALUE(); o->no_cubin = 1; }
    else if (IS("--list")) { NOVALUE(); o->list = 1; }
    else if (IS("--force")) { NOVALUE(); o->force = 1; }
    else if (IS("-j") || IS("--jobs")) {
      o->jobs = parse_int(a, VALUE());
      if (o->jobs < 1) die_usage("%s: must be at least 1", a);
    } else die_usage("unknown argument '%s'", argv[i]);
#undef IS
#undef VALUE
#undef NOVALUE
  }
}

static int pick(const char *flag, const char *v, const char *const *names, int n) {
  for (int i = 0; i < n; i++)
    if (strcmp(v, names[i]) == 0) return i;
  die_usage("%s: '%s' is not allowed", flag, v);
  return -1;
}

/* --pass of a utility kernel: its dtype (--dtype, else bf16, else the one it
** takes) for each arch; the attention flags do not apply. */
static void build_util(const opts *o, sfa_pass pass, const int *archs, int na, klist *l) {
  static const char *const dtypes[] = {"fp16", "bf16", "fp32", "int32", "uint8"};
  const unsigned allowed = sfa__util_dtypes(pass);
  if (o->mode || o->head_dim || o->flags || o->mma ||
      o->block_m || o->block_n || o->warps || o->stages)
    die_usage("--pass %s: a utility kernel takes only --dtype and --arch", o->pass);
  sfa_dtype dt = SFA_DTYPE_BF16;
  if (o->dtype) dt = (sfa_dtype)pick("--dtype", o->dtype, dtypes, 5);
  else if (!(allowed & (1u << SFA_DTYPE_BF16)))
    for (int d = 0; d < 32; d++)
      if (allowed & (1u << d)) dt = (sfa_dtype)d;
  for (int a = 0; a < na; a++) {
    sfa_kernel_spec s = {pass, SFA_MODE_DENSE, dt, 0, 0, 0, 0, 0, archs[a], 0, SFA_SPEC_MMA_SYNC};
    char err[256];
    if (sfa_spec_default(&s, err, sizeof err) != SFA_OK) die_usage("%s", err);
    add_kernel(l, &s);
  }
}

static void build_list(const opts *o, klist *l) {
  int spec_flags = o->pass || o->mode || o->dtype || o->head_dim || o->flags || o->mma;
  int tile_flags = o->block_m || o->block_n || o->warps || o->stages;
  int archs[MAX_ARCHS] = {90}, na = o->narchs ? o->narchs : 1;
  if (o->narchs) memcpy(archs, o->archs, sizeof archs);

  if ((o->nnames > 0) + (o->preset != NULL) + (spec_flags || tile_flags) > 1)
    die_usage("give spec flags, --name or --preset, not several");
  if (o->nnames > 0) {
    if (o->narchs) die_usage("--arch cannot be combined with --name (the name spells it)");
    for (int i = 0; i < o->nnames; i++) {
      sfa_kernel_spec s;
      char err[256];
      if (sfa_spec_parse(o->names[i], &s, err, sizeof err) != SFA_OK) die_usage("%s", err);
      add_kernel(l, &s);
    }
  } else if (o->preset) {
    add_preset(l, o->preset, archs, na);
  } else if (spec_flags || tile_flags) {
    static const char *const dtypes[] = {"fp16", "bf16", "fp32", "int32", "uint8"};
    sfa_pass pass = SFA_PASS_FWD;
    if (o->pass) { /* every sfa_pass by its name (gen/spec.c) */
      int p = 0;
      while (sfa__pass_name((sfa_pass)p) && strcmp(sfa__pass_name((sfa_pass)p), o->pass) != 0) p++;
      if (!sfa__pass_name((sfa_pass)p)) die_usage("--pass: '%s' is not allowed", o->pass);
      pass = (sfa_pass)p;
    }
    if (sfa__pass_is_util(pass)) {
      build_util(o, pass, archs, na, l);
      return;
    }
    if (!o->head_dim) die_usage("--head-dim is required with spec flags");
    for (int a = 0; a < na; a++) {
      sfa_kernel_spec s = {0};
      char err[256];
      s.pass = pass;
      const sfa__mode *m = o->mode ? sfa__mode_named(o->mode) : sfa__mode_find(SFA_MODE_DENSE);
      if (!m) die_usage("--mode: '%s' is not allowed", o->mode);
      s.mode = m->mode;
      s.dtype = o->dtype ? (sfa_dtype)pick("--dtype", o->dtype, dtypes, 5) : SFA_DTYPE_BF16;
      s.head_dim = o->head_dim;
      s.arch = archs[a];
      s.flags = o->flags;
      /* Defaults first (errors in the non-tile fields are reported there). */
      static const char *const kinds[] = {"sync", "wgmma", "ws", "auto"};
      int wg = o->mma ? pick("--mma", o->mma, kinds, 4) : 3;
      if (wg == 1 && !sfa__wgmma_allowed(&s))
        die_usage("--mma wgmma: sm_%d %s at head dim %d has no wgmma kernel (sm_90, fwd or "
                  "bwd, D 64 or 128)", s.arch, sfa__pass_name(s.pass), s.head_dim);
      if (wg == 2 && !sfa__ws_allowed(&s))
        die_usage("--mma ws: sm_%d %s at head dim %d has no warp-specialized kernel (sm_90, "
                  "fwd, D 64, 128 or 256, no window mask)", s.arch, sfa__pass_name(s.pass),
                  s.head_dim);
      sfa_status st = sfa__spec_default_mma(&s, wg == 3 ? -1 : wg, err, sizeof err);
      if (st != SFA_OK && !tile_flags) die_usage("%s", err);
      if (o->block_m) s.block_m = o->block_m;
      if (o->block_n) s.block_n = o->block_n;
      if (o->warps) s.num_warps = o->warps;
      if (o->stages) s.num_stages = o->stages;
      if (sfa_spec_validate(&s, err, sizeof err) != SFA_OK) die_usage("%s", err);
      add_kernel(l, &s);
    }
  } else {
    die_usage("nothing to do: give spec flags, --name or --preset");
  }
}

/* ------------------------------------------------------------ files */

static int mkdir_p(const char *dir) {
  char buf[1024];
  if (snprintf(buf, sizeof buf, "%s", dir) >= (int)sizeof buf) {
    errno = ENAMETOOLONG;
    return -1;
  }
  for (char *p = buf + 1; *p; p++) {
    if (*p != '/') continue;
    *p = '\0';
    if (mkdir(buf, 0777) != 0 && errno != EEXIST) return -1;
    *p = '/';
  }
  if (mkdir(buf, 0777) != 0 && errno != EEXIST) return -1;
  return 0;
}

/* Writes dir/file through a temporary file in dir and a rename. */
static int write_atomic(const char *dir, const char *file, const void *data, size_t len,
                        char *err, size_t errlen) {
  char tmp[1200], path[1200];
  snprintf(path, sizeof path, "%s/%s", dir, file);
  snprintf(tmp, sizeof tmp, "%s/.%s.XXXXXX", dir, file);
  int fd = mkstemp(tmp);
  if (fd < 0) {
    snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
    return -1;
  }
  const char *p = data;
  size_t left = len;
  while (left > 0) {
    ssize_t w = write(fd, p, left);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      snprintf(err, errlen, "%s: %s", tmp, w < 0 ? strerror(errno) : "short write");
      close(fd);
      unlink(tmp);
      return -1;
    }
    p += w;
    left -= (size_t)w;
  }
  if (fchmod(fd, 0644) != 0 || close(fd) != 0) {
    snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
    unlink(tmp);
    return -1;
  }
  if (rename(tmp, path) != 0) {
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
    unlink(tmp);
    return -1;
  }
  return 0;
}

/* The rows of the earlier manifest `old` for kernels not in l that still
** hold: their key is what this build makes of their spec with the NVRTC they
** name, and their cubin verifies. Returns how many were written (-1: error). */
static long keep_old_rows(const sfa__manifest *old, const klist *l, char *buf, size_t cap,
                          size_t *len) {
  long kept = 0;
  for (size_t i = 0; old && i < old->count; i++) {
    const sfa__manifest_entry *e = &old->entries[i];
    int listed = 0;
    for (size_t j = 0; j < l->n && !listed; j++) listed = strcmp(l->v[j].name, e->name) == 0;
    if (listed || !e->path) continue;
    char *src = NULL, key[SFA_STORE_KEY_HEX], why[512];
    void *bin = NULL;
    size_t size = 0;
    int holds = sfa_generate(&e->spec, &src, why, sizeof why) == SFA_OK &&
                sfa__kernel_key_nv(&e->spec, src, e->nvrtc_major, e->nvrtc_minor, key) ==
                    SFA_OK &&
                strcmp(key, e->key) == 0 &&
                sfa__manifest_read_cubin(e, &bin, &size, why, sizeof why) == SFA_OK;
    free(src);
    free(bin);
    if (!holds) continue;
    const char *base = strrchr(e->path, '/');
    int n = sfa__manifest_line(buf + *len, cap - *len, &e->spec, e->nvrtc_major,
                               e->nvrtc_minor, e->key, base ? base + 1 : e->path,
                               e->cubin_bytes, e->cubin_xxh3);
    if (n < 0) return -1;
    *len += (size_t)n;
    kept++;
  }
  return kept;
}

static int write_manifest(const char *dir, const klist *l, const sfa__manifest *old,
                          int no_cubin, int nv_major, int nv_minor) {
  const char *header = sfa__manifest_header();
  size_t cap = strlen(header) + (l->n + (old ? old->count : 0)) * 512 + 1, len = 0;
  char *buf = malloc(cap), err[1400];
  if (!buf) return -1;
  memcpy(buf, header, strlen(header) + 1);
  len = strlen(header);
  for (size_t i = 0; i < l->n; i++) {
    const kernel *k = &l->v[i];
    char cubin[SFA__NAME_MAX + 8];
    if (!k->ok) continue;
    snprintf(cubin, sizeof cubin, "%s.cubin", k->name);
    int n = sfa__manifest_line(buf + len, cap - len, &k->spec, nv_major, nv_minor, k->key,
                               no_cubin ? NULL : cubin, k->cubin_bytes, k->cubin_xxh3);
    if (n < 0) {
      fprintf(stderr, "sfa-gen: cannot write the manifest line of %s\n", k->name);
      free(buf);
      return -1;
    }
    len += (size_t)n;
  }
  long kept = no_cubin ? 0 : keep_old_rows(old, l, buf, cap, &len);
  if (kept < 0) {
    fprintf(stderr, "sfa-gen: cannot write the manifest line of an earlier kernel\n");
    free(buf);
    return -1;
  }
  if (kept > 0)
    fprintf(stderr, "sfa-gen: %ld kernel(s) of the earlier manifest kept in it\n", kept);
  int rc = write_atomic(dir, SFA__MANIFEST_FILE, buf, len, err, sizeof err);
  if (rc != 0) fprintf(stderr, "sfa-gen: %s\n", err);
  free(buf);
  return rc;
}

/* ------------------------------------------------------------ the work */

typedef struct work {
  klist *list;
  const char *out;
  int no_cubin;
  const sfa__manifest *old; /* the manifest DIR held before, or NULL */
  int nv_major, nv_minor;   /* this process's NVRTC */
  pthread_mutex_t lock;
  size_t next, done;
  int failures;
} work;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Renders (and compiles) one kernel and writes its files; 0 on success. */
static int build_one(work *w, kernel *k, char *err, size_t errlen) {
  char *src = NULL, file[SFA__NAME_MAX + 8];
  void *bin = NULL;
  size_t size = 0;
  int rc = -1;
  if (sfa_generate(&k->spec, &src, err, errlen) != SFA_OK) goto out;
  if (sfa__kernel_key(&k->spec, src, k->key) != SFA_OK) {
    snprintf(err, errlen, "%s: cannot compute the cache key (out of memory?)", k->name);
    goto out;
  }
  snprintf(file, sizeof file, "%s.cu", k->name);
  if (write_atomic(w->out, file, src, strlen(src), err, errlen) != 0) goto out;
  if (!w->no_cubin && w->old) { /* the same kernel, key and NVRTC, and a cubin that verifies */
    const sfa__manifest_entry *e = sfa__manifest_find(w->old, k->name);
    char why[512];
    if (e && e->path && strcmp(e->key, k->key) == 0 && e->nvrtc_major == w->nv_major &&
        e->nvrtc_minor == w->nv_minor &&
        sfa__manifest_read_cubin(e, &bin, &size, why, sizeof why) == SFA_OK) {
      k->cubin_bytes = e->cubin_bytes;
      k->cubin_xxh3 = e->cubin_xxh3;
      k->kept = 1;
      rc = 0;
      goto out;
    }
  }
  if (!w->no_cubin) {
    if (sfa_compile_cubin(&k->spec, src, &bin, &size, NULL, err, errlen) != SFA_OK) goto out;
    snprintf(file, sizeof file, "%s.cubin", k->name);
    if (write_atomic(w->out, file, bin, size, err, errlen) != 0) goto out;
    k->cubin_bytes = size;
    k->cubin_xxh3 = sfa__cubin_xxh3(bin, size);
  }
  rc = 0;
out:
  free(src);
  free(bin);
  return rc;
}

static void *worker(void *arg) {
  work *w = arg;
  for (;;) {
    pthread_mutex_lock(&w->lock);
    size_t i = w->next < w->list->n ? w->next++ : w->list->n;
    pthread_mutex_unlock(&w->lock);
    if (i >= w->list->n) return NULL;
    kernel *k = &w->list->v[i];
    char myerr[8192];
    double t0 = now_s();
    int rc = build_one(w, k, myerr, sizeof myerr);
    double dt = now_s() - t0;
    pthread_mutex_lock(&w->lock);
    w->done++;
    if (rc == 0) {
      k->ok = 1;
      if (k->kept)
        fprintf(stderr, "[%zu/%zu] %s kept\n", w->done, w->list->n, k->name);
      else
        fprintf(stderr, "[%zu/%zu] %s %.2f s\n", w->done, w->list->n, k->name, dt);
    } else {
      w->failures++;
      fprintf(stderr, "[%zu/%zu] %s FAILED\nsfa-gen: %s\n", w->done, w->list->n, k->name,
              myerr);
    }
    pthread_mutex_unlock(&w->lock);
  }
}

int main(int argc, char **argv) {
  opts o;
  klist list = {0};
  memset(&o, 0, sizeof o);
  parse_args(&o, argc, argv);
  if (argc == 1) {
    usage(stderr);
    return EXIT_USAGE;
  }
  build_list(&o, &list);

  if (o.list) {
    for (size_t i = 0; i < list.n; i++) printf("%s\n", list.v[i].name);
    free(list.v);
    return 0;
  }

  const char *out = o.out ? o.out : "sfa-kernels";
  if (mkdir_p(out) != 0) {
    fprintf(stderr, "sfa-gen: cannot create %s: %s\n", out, strerror(errno));
    free(list.v);
    return 1;
  }
  int jobs = o.jobs;
  if (!jobs) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    jobs = n < 1 ? 1 : n > 8 ? 8 : (int)n;
  }
  if ((size_t)jobs > list.n) jobs = (int)list.n;

  /* An earlier manifest in DIR: its kernels are kept where they still hold. */
  sfa__manifest *old = NULL;
  char why[1024];
  sfa_status ms = o.force ? SFA_ERR_NOT_FOUND : sfa__manifest_load(out, &old, why, sizeof why);
  if (ms != SFA_OK && ms != SFA_ERR_NOT_FOUND)
    fprintf(stderr, "sfa-gen: note: the manifest already in %s is not used (%s); every kernel "
            "is compiled\n", out, why);
  work w = {&list, out, o.no_cubin, old, 0, 0, PTHREAD_MUTEX_INITIALIZER, 0, 0, 0};
  sfa__nvrtc_version(&w.nv_major, &w.nv_minor);
  double t0 = now_s();
  pthread_t th[64];
  int nth = 0;
  if (jobs > 64) jobs = 64;
  for (int i = 1; i < jobs; i++)
    if (pthread_create(&th[nth], NULL, worker, &w) == 0) nth++;
  worker(&w);
  for (int i = 0; i < nth; i++) pthread_join(th[i], NULL);

  int rc = write_manifest(out, &list, old, o.no_cubin, w.nv_major, w.nv_minor) != 0 ||
                   w.failures ? 1 : 0;
  size_t kept = 0;
  for (size_t i = 0; i < list.n; i++) kept += (size_t)list.v[i].kept;
  fprintf(stderr, "sfa-gen: %zu kernel(s) in %s (%zu kept from the earlier run), %d failed, "
          "%.2f s\n", list.n, out, kept, w.failures, now_s() - t0);
  sfa__manifest_free(old);
  free(list.v);
  return rc;
}
