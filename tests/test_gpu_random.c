/*
** test_gpu_random.c -- a seeded randomized differential test of sfa_forward
** and sfa_backward on a real GPU against the float64 CPU references.
**
** Each case draws: a kernel class (mode and flags -- dense causal or not,
** qk_drop, hash, window with every combination of causal, bias and mask --
** with a dtype and a head dim) from a table of 24 made from the seed, so that
** a run compiles a bounded set of variants (24 forward, 5 backward classes of
** 3 kernels each); B, Hq and Hkv (GQA ratios 1, 2, 4 and MQA); Tq and Tk
** (1, odd, around tile multiples, Tq != Tk both ways); the mode's details
** (qk_drop keep rates, hash buckets, window sizes including 0 and windows
** where Tq > Tk, bias and mask broadcasts and densities, padded index rows;
** rows that see no key come from each mode); the storage of every tensor (q,
** k, v, o, lse and the gradients as views of larger buffers: permuted like
** PyTorch's [B, T, H, D] transpose, padded rows, gaps in the batch or head
** strides, an offset into the buffer); and, in the backward classes, whether
** sfa_backward also runs (70% of their cases, plus a tenth of all cases drawn
** from them; about a quarter in all), with dq by atomics and deterministic
** (twice: the results must be bitwise equal), dbias when there is a bias.
**
** Checks: the relative L2 error of every output within the bound of the other
** GPU suites (tg_tol_fwd / tg_tol_bwd); every element within ELEM_FACTOR times
** that bound, relative to the largest of the element, its row and the tensor
** (see compare); lse within TG_LSE_TOL; rows that see no key exactly o = 0
** and lse = -inf; NaN never; every element of the buffers outside the output
** views still holding its poison (all outputs are poisoned before each call);
** the inputs unchanged. The first 24 cases take each class once (backward on
** where the class has one), so a short run (SFA_RANDOM_CASES=40, e.g. under
** compute-sanitizer) still runs every kernel variant of the run.
**
** A case prints as "case N [class: mode flags dtype D] ... | sizes, mode
** details, data seed | storage", a storage as contig, or e.g.
** "BTHD+0,16,8@24": the dims outermost first, the elements added to the
** strides of B, H and T, and the offset of the view in its buffer.
**
** Environment: SFA_TEST_SEED (the run), SFA_RANDOM_CASES (how many; default
** DEFAULT_CASES), SFA_RANDOM_CASE=i[,j...] (only those cases: a failure prints
** the line that replays it), SFA_RANDOM_MAX_T (longest Tq/Tk, default 600
** forward, 2/3 of it with the backward), SFA_RANDOM_LIST=1 (print the classes,
** the cases and their distribution without a GPU, then exit).
**
** Without a driver or a device the suite prints "SKIP: <reason>" and exits 77.
*/
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpucase.h"

#define DEFAULT_SEED 0x5FA0D1Full
#define DEFAULT_CASES 300
#define DEFAULT_MAX_T 600
#define FWD_WORK_CAP 1.5e8 /* B * Hq * Tq * Tk * D of a forward case (CPU reference time) */
#define BWD_WORK_CAP 5e7 /* ... of a case with the backward */
#define ELEM_FACTOR 10.0  /* element bound: ELEM_FACTOR * tol * the scale of compare() */
#define ABS_FLOOR 1e-2    /* ... at least (inputs are N(0, 1)) */
#define GUARD 40          /* poisoned elements after every buffer */
#define MAX_FAILS_LISTED 12

/* ------------------------------------------------------------ kernel classes */

/* A mode and its flags ("combo"), a dtype and a head dim: one forward
** variant, and for a backward class its three backward kernels (bwd by
** atomics, bwd deterministic, bwddq). */
typedef struct kclass {
  sfa_mode mode;
  int causal, bias, mask;
  sfa_dtype dtype;
  int D;
  int bwd;
} kclass;

/* Combos: 0 dense, 1 dense causal, 2 qk_drop, 3 hash, 4 + (causal | bias << 1 |
** mask << 2) window. Each has two classes: [2 c] with D 64 or 128 (wgmma on
** sm_90), [2 c + 1] with D 32, 96 or one wide D (mma.sync), the other dtype. */
enum { NCOMBO = 12, NCLASS = 2 * NCOMBO };

static kclass classes[NCLASS];
static int bwd_classes[5]; /* the indexes of those with the backward */
static int wide_D;

static uint64_t mix64(uint64_t x) { /* splitmix64's finalizer */
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

static uint64_t rng_of(uint64_t seed, uint64_t salt) {
  uint64_t r = mix64(seed ^ mix64(salt));
  return r ? r : 1;
}

static int rnd(uint64_t *r, int n) { return (int)(tu_rand_u64(r) % (uint64_t)n); }

static void combo_flags(int combo, kclass *k) {
  static const sfa_mode m[4] = {SFA_MODE_DENSE, SFA_MODE_DENSE, SFA_MODE_QK_DROP,
                                SFA_MODE_HASH};
  k->mode = combo < 4 ? m[combo] : SFA_MODE_WINDOW;
  k->causal = combo == 1 || (combo >= 4 && ((combo - 4) & 1));
  k->bias = combo >= 4 && ((combo - 4) & 2);
  k->mask = combo >= 4 && ((combo - 4) & 4);
}

/* The table of a seed: dtypes and head dims rotate over the combos so that
** every dtype meets every head dim; five classes get the backward: one dense,
** qk_drop, hash, one window with a bias and one without (alternately from the
** wgmma and the mma.sync half). */
static void classes_draw(uint64_t seed) {
  uint64_t r = rng_of(seed, 0xC1A55);
  static const int wides[4] = {160, 192, 224, 256};
  wide_D = wides[rnd(&r, 4)];
  const int rot = rnd(&r, 6), other[3] = {32, 96, wide_D};
  for (int c = 0; c < NCOMBO; c++) {
    kclass *a = &classes[2 * c], *b = &classes[2 * c + 1];
    combo_flags(c, a);
    combo_flags(c, b);
    a->D = (c + rot) % 2 ? 128 : 64;
    b->D = other[(c + rot) % 3];
    a->dtype = (c / 2 + rot) % 2 ? SFA_DTYPE_BF16 : SFA_DTYPE_FP16;
    b->dtype = a->dtype == SFA_DTYPE_BF16 ? SFA_DTYPE_FP16 : SFA_DTYPE_BF16;
    a->bwd = b->bwd = 0;
  }
  static const int with_bias[4] = {2, 3, 6, 7}, without_bias[4] = {0, 1, 4, 5};
  const int bc[5] = {rnd(&r, 2), 2, 3, 4 + with_bias[rnd(&r, 4)], 4 + without_bias[rnd(&r, 4)]};
  const int half = rnd(&r, 2);
  for (int i = 0; i < 5; i++) {
    bwd_classes[i] = 2 * bc[i] + (i + half) % 2;
    classes[bwd_classes[i]].bwd = 1;
  }
}

static void class_name(const kclass *k, char *buf, size_t n) {
  snprintf(buf, n, "%s%s%s%s %s D%d%s", sfa_mode_name(k->mode), k->causal ? " causal" : "",
           k->bias ? " bias" : "", k->mask ? " mask" : "", sfa_dtype_name(k->dtype), k->D,
           k->bwd ? " +bwd" : "");
}

/* ------------------------------------------------------------ storage layouts */

/* The storage of a tensor [d0, d1, (d2,) C] whose last dim is contiguous:
** order lists the other dims outermost first; extra[d] elements are added to
** the stride of dim d (on the innermost of them: padded rows; outer: gaps);
** the view starts `lead` elements into its buffer. */
typedef struct lay {
  int order[3];
  int extra[3];
  int lead;
} lay;

static const lay CONTIG4 = {{0, 1, 2}, {0, 0, 0}, 0};
static const lay CONTIG3 = {{0, 1, -1}, {0, 0, 0}, 0};

/* Strides of the view; returns the elements from its start to the end of its
** outermost dim. */
static size_t lay_strides(const lay *l, int rank, const int64_t *shape, int64_t *strides) {
  int64_t s = shape[rank - 1];
  strides[rank - 1] = 1;
  for (int k = rank - 2; k >= 0; k--) {
    const int d = l->order[k];
    strides[d] = s + l->extra[d];
    s = strides[d] * shape[d];
  }
  return (size_t)s;
}

/* Contiguous, maybe after a lead. */
static int lay_is_dense(const lay *l) {
  return l->order[0] == 0 && l->order[1] == 1 && (l->order[2] == 2 || l->order[2] < 0) &&
         !l->extra[0] && !l->extra[1] && !l->extra[2];
}

/* "BTHD+0,16,0@8": dims outermost first, extras of B, H, T, the lead. */
static int lay_print(const lay *l, int rank, char *buf, size_t n) {
  static const char name4[] = "BHT", name3[] = "BH";
  char o[4] = {0};
  for (int k = 0; k < rank - 1; k++) o[k] = (rank == 4 ? name4 : name3)[l->order[k]];
  if (lay_is_dense(l)) return l->lead ? snprintf(buf, n, "contig@%d", l->lead)
                                      : snprintf(buf, n, "contig");
  if (rank == 4)
    return snprintf(buf, n, "%s%c+%d,%d,%d@%d", o, 'D', l->extra[0], l->extra[1], l->extra[2],
                    l->lead);
  return snprintf(buf, n, "%sT+%d,%d@%d", o, l->extra[0], l->extra[1], l->lead);
}

/* A layout for a 4-d half tensor: extras and lead in 16-byte units (8
** elements), as sfa requires; outputs always get a lead guard. */
static lay draw_half_layout(uint64_t *r, int output) {
  static const int orders[4][3] = {{0, 1, 2}, {0, 2, 1}, {2, 0, 1}, {1, 0, 2}};
  lay l = CONTIG4;
  if (tu_rand_uniform(r) < 0.4) {
    if (output) l.lead = 8;
    return l;
  }
  memcpy(l.order, orders[rnd(r, 4)], sizeof l.order);
  for (int d = 0; d < 3; d++) {
    const int u = rnd(r, 10);
    l.extra[d] = u < 6 ? 0 : u < 8 ? 8 : u < 9 ? 16 : 8 * (1 + rnd(r, 16));
  }
  l.lead = 8 * (output + rnd(r, 8));
  return l;
}

/* lse [B, Hq, Tq] (fp32) or dbias (any element alignment): small extras. */
static lay draw_small_layout(uint64_t *r, int rank) {
  lay l = rank == 4 ? CONTIG4 : CONTIG3;
  l.lead = 1 + rnd(r, 16);
  if (tu_rand_uniform(r) < 0.4) return l;
  if (rank == 3 && rnd(r, 2)) l.order[0] = 1, l.order[1] = 0;
  if (rank == 4) {
    static const int orders[3][3] = {{0, 1, 2}, {1, 0, 2}, {0, 2, 1}};
    memcpy(l.order, orders[rnd(r, 3)], sizeof l.order);
  }
  for (int d = 0; d < rank - 1; d++) l.extra[d] = rnd(r, 3) ? 0 : 1 + rnd(r, 7);
  return l;
}

/* ------------------------------------------------------------ views in poisoned buffers */

/* A tensor view inside a device buffer whose other bytes stay 0xFF (NaN for
** fp16, bf16 and fp32) unless something writes outside the view. */
typedef struct vbuf {
  CUdeviceptr base;
  size_t esize, total, lead;  /* bytes per element, elements in all, before the view */
  int64_t shape[4], strides[4]; /* rank 3 padded with a last dim of 1 */
  sfa_tensor t;
  unsigned char *host;        /* the whole buffer, after vb_download */
} vbuf;

static void vb_alloc(vbuf *v, sfa_dtype dt, int rank, const int64_t *shape, const lay *l) {
  memset(v, 0, sizeof *v);
  v->esize = dt == SFA_DTYPE_FP32 ? 4 : 2;
  int64_t st[4];
  const size_t span = lay_strides(l, rank, shape, st);
  for (int i = 0; i < 4; i++) {
    v->shape[i] = i < rank ? shape[i] : 1;
    v->strides[i] = i < rank ? st[i] : 0;
  }
  v->lead = (size_t)l->lead;
  v->total = v->lead + span + GUARD;
  TG_CU(tg_drv->cuMemAlloc(&v->base, v->total * v->esize));
  TG_CU(tg_drv->cuMemsetD8(v->base, 0xFF, v->total * v->esize));
  sfa_tensor_init(&v->t, (void *)(uintptr_t)(v->base + v->lead * v->esize), dt, rank, shape);
  memcpy(v->t.strides, st, sizeof st[0] * (size_t)rank);
  v->host = malloc(v->total * v->esize);
  ck_assert_ptr_nonnull(v->host);
}

static void vb_free(vbuf *v) {
  if (v->base) tg_drv->cuMemFree(v->base);
  free(v->host);
  memset(v, 0, sizeof *v);
}

static size_t vb_at(const vbuf *v, int64_t a, int64_t b, int64_t c, int64_t x) {
  return v->lead + (size_t)(a * v->strides[0] + b * v->strides[1] + c * v->strides[2] +
                            x * v->strides[3]);
}

/* Upload a contiguous half tensor into the view (the rest stays poisoned). */
static void vb_upload_half(vbuf *v, const uint16_t *src) {
  memset(v->host, 0xFF, v->total * v->esize);
  uint16_t *h = (uint16_t *)v->host;
  size_t i = 0;
  for (int64_t a = 0; a < v->shape[0]; a++)
    for (int64_t b = 0; b < v->shape[1]; b++)
      for (int64_t c = 0; c < v->shape[2]; c++)
        for (int64_t x = 0; x < v->shape[3]; x++) h[vb_at(v, a, b, c, x)] = src[i++];
  TG_CU(tg_drv->cuMemcpyHtoD(v->base, v->host, v->total * v->esize));
}

static void vb_poison(vbuf *v) { TG_CU(tg_drv->cuMemsetD8(v->base, 0xFF, v->total * v->esize)); }

static void vb_download(vbuf *v) {
  TG_CU(tg_drv->cuMemcpyDtoH(v->host, v->base, v->total * v->esize));
}

/* Does the device buffer still hold what v->host holds (an input after its
** upload, an output after its download)? */
static int vb_unchanged(const vbuf *v) {
  unsigned char *now = malloc(v->total * v->esize);
  ck_assert_ptr_nonnull(now);
  TG_CU(tg_drv->cuMemcpyDtoH(now, v->base, v->total * v->esize));
  const int same = memcmp(now, v->host, v->total * v->esize) == 0;
  free(now);
  return same;
}

/* Elements of the buffer outside the view that lost their poison. */
static long vb_written_outside(const vbuf *v) {
  unsigned char *in = calloc(v->total, 1);
  ck_assert_ptr_nonnull(in);
  for (int64_t a = 0; a < v->shape[0]; a++)
    for (int64_t b = 0; b < v->shape[1]; b++)
      for (int64_t c = 0; c < v->shape[2]; c++)
        for (int64_t x = 0; x < v->shape[3]; x++) in[vb_at(v, a, b, c, x)] = 1;
  long n = 0;
  for (size_t e = 0; e < v->total; e++) {
    if (in[e]) continue;
    for (size_t y = 0; y < v->esize; y++)
      if (v->host[e * v->esize + y] != 0xFF) {
        n++;
        break;
      }
  }
  free(in);
  return n;
}

/* Element (a, b, c, x) of a downloaded view as float. */
static float vb_get(const vbuf *v, sfa_dtype dt, int64_t a, int64_t b, int64_t c, int64_t x) {
  const size_t e = vb_at(v, a, b, c, x);
  if (v->esize == 4) {
    float f;
    memcpy(&f, v->host + e * 4, 4);
    return f;
  }
  uint16_t h;
  memcpy(&h, v->host + e * 2, 2);
  return tg_from_half(dt, h);
}

/* ------------------------------------------------------------ a case */

typedef struct rcase {
  int index;
  int cls;       /* into classes[] */
  int bwd;       /* sfa_backward too: dq by atomics, then deterministic twice */
  int lse;       /* the forward writes lse (always with bwd) */
  float scale;   /* 0: 1/sqrt(D) */
  scase s;       /* mode, sizes, dtype, mode details and data seed (gpucase.h) */
  lay lq, lk, lv, lo, ll;       /* q, k, v, o, lse */
  lay ldo, ldq, ldk, ldv, ldb;  /* dout, dq, dk, dv, dbias */
} rcase;

static int max_T = DEFAULT_MAX_T;    /* SFA_RANDOM_MAX_T */
static int ncases = DEFAULT_CASES;  /* SFA_RANDOM_CASES */
static int only[64], nonly;         /* SFA_RANDOM_CASE */

static int draw_len(uint64_t *r, int tmax) {
  static const int special[] = {1,   2,   3,   7,   15,  16,  17,  31,  33,  63,  64,  65,
                                127, 128, 129, 191, 255, 256, 257, 383, 384, 511, 513};
  const int n = (int)(sizeof special / sizeof special[0]);
  if (tu_rand_uniform(r) < 0.35)
    for (int tries = 0; tries < 50; tries++) {
      const int v = special[rnd(r, n)];
      if (v <= tmax) return v;
    }
  return 1 + rnd(r, tmax);
}

static int draw_window_side(uint64_t *r) {
  const int u = rnd(r, 20);
  return u < 5 ? -1 : u < 8 ? 0 : u < 12 ? 1 + rnd(r, 8) : u < 17 ? 9 + rnd(r, 120)
                                                                   : 129 + rnd(r, 600);
}

/* Case `index` of the run of `seed`: a function of the two only. */
static rcase draw_case(uint64_t seed, int index) {
  uint64_t r = rng_of(seed, 0x1000 + (uint64_t)index);
  rcase c;
  memset(&c, 0, sizeof c);
  c.index = index;
  int force_bwd = 0;
  if (index < NCLASS) {
    c.cls = index; /* every class once first */
  } else if (tu_rand_uniform(&r) < 0.1) { /* more backward cases, dbias among them */
    c.cls = bwd_classes[rnd(&r, 5)];
    force_bwd = 1;
  } else {
    const int u = rnd(&r, 100); /* dense 25%, qk_drop 15%, hash 15%, window 45% */
    const int combo = u < 25 ? rnd(&r, 2) : u < 40 ? 2 : u < 55 ? 3 : 4 + rnd(&r, 8);
    c.cls = 2 * combo + rnd(&r, 2);
  }
  const kclass *k = &classes[c.cls];
  c.bwd = k->bwd && (index < NCLASS || force_bwd || tu_rand_uniform(&r) < 0.7);
  c.lse = c.bwd || tu_rand_uniform(&r) < 0.9;
  /* scale: mostly the default 1/sqrt(D); sometimes flatter, or (forward only)
  ** peakier: with a peaked softmax the backward's dq/dk lose the relative
  ** precision that the bounds assume (dS = P (dP - delta) cancels) */
  if (tu_rand_uniform(&r) < 0.15) {
    const double f = c.bwd ? 0.5 : rnd(&r, 2) ? 3.0 : 0.25;
    c.scale = (float)(f / sqrt((double)k->D));
  }

  /* heads: GQA ratio 1, 2, 4 or MQA */
  int Hq, Hkv;
  const int g = rnd(&r, 20);
  if (g < 6) Hkv = 1 + rnd(&r, 3), Hq = Hkv;
  else if (g < 11) Hkv = 1 + rnd(&r, 2), Hq = 2 * Hkv;
  else if (g < 15) Hkv = 1 + rnd(&r, 2), Hq = 4 * Hkv;
  else Hkv = 1, Hq = (int[]){3, 5, 8}[rnd(&r, 3)];
  int B = (int[]){1, 1, 1, 1, 2, 2, 2, 3}[rnd(&r, 8)];

  /* lengths, redrawn (then halved) while the CPU reference would be slow */
  const int tmax = c.bwd ? max_T * 2 / 3 : max_T;
  const double cap = c.bwd ? BWD_WORK_CAP : FWD_WORK_CAP;
  int Tq = 1, Tk = 1;
  for (int tries = 0; tries < 30; tries++) {
    Tq = draw_len(&r, tmax);
    Tk = tu_rand_uniform(&r) < 0.2 ? Tq : draw_len(&r, tmax);
    if ((double)B * Hq * Tq * Tk * k->D <= cap) break;
  }
  while ((double)B * Hq * Tq * Tk * k->D > cap) {
    if (Tq >= Tk) Tq = (Tq + 1) / 2;
    else Tk = (Tk + 1) / 2;
  }

  c.s = tg_case(k->mode, Hkv, Tq, Tk, k->D, k->dtype);
  c.s.B = B, c.s.Hq = Hq;
  c.s.causal = k->causal;
  if (k->mode == SFA_MODE_QK_DROP) {
    c.s.keep = 0.15 + 0.8 * tu_rand_uniform(&r);
    const int longest = Tq > Tk ? Tq : Tk;
    c.s.T0 = 1 + (int)(longest / c.s.keep * (0.6 + 0.8 * tu_rand_uniform(&r)));
  } else if (k->mode == SFA_MODE_HASH) {
    c.s.buckets = (int[]){1, 2, 4, 16, 64}[rnd(&r, 5)];
  } else if (k->mode == SFA_MODE_WINDOW) {
    c.s.left = draw_window_side(&r);
    c.s.right = draw_window_side(&r); /* with causal: ignored */
    if (k->bias) c.s.bias = (int[]){BIAS_HEAD, BIAS_KV, BIAS_ROW, BIAS_BATCH}[rnd(&r, 4)];
    if (k->mask) {
      c.s.mask = (int[]){MASK_HEAD, MASK_KV, MASK_ROW}[rnd(&r, 3)];
      c.s.density = (double[]){0.0, 0.1, 0.3, 0.5, 0.5, 0.7, 0.9, 0.9, 1.0, 1.0}[rnd(&r, 10)];
    }
  }
  if (k->mode == SFA_MODE_QK_DROP || k->mode == SFA_MODE_HASH)
    c.s.idx_pad = (int[]){0, 0, 1, 3, 8}[rnd(&r, 5)];
  c.s.seed = rng_of(seed, 0x2000 + (uint64_t)index);

  /* storage: all plain in a third of the cases */
  const int plain = tu_rand_uniform(&r) < 0.33;
  lay *half[8] = {&c.lq, &c.lk, &c.lv, &c.lo, &c.ldo, &c.ldq, &c.ldk, &c.ldv};
  for (int i = 0; i < 8; i++) {
    const int output = i == 3 || i >= 5;
    *half[i] = draw_half_layout(&r, output);
    if (plain) *half[i] = CONTIG4, half[i]->lead = output ? 8 : 0;
  }
  c.ll = draw_small_layout(&r, 3);
  c.ldb = draw_small_layout(&r, 4);
  if (plain) c.ll = CONTIG3, c.ldb = CONTIG4, c.ll.lead = c.ldb.lead = 1;
  return c;
}

static void case_describe(const rcase *c, char *buf, size_t n) {
  char cn[80], s[320], l[8][48];
  class_name(&classes[c->cls], cn, sizeof cn);
  tg_case_describe(&c->s, s, sizeof s);
  const lay *ls[8] = {&c->lq, &c->lk, &c->lv, &c->lo, &c->ldo, &c->ldq, &c->ldk, &c->ldv};
  for (int i = 0; i < 8; i++) lay_print(ls[i], 4, l[i], sizeof l[i]);
  char lse[48], db[48];
  lay_print(&c->ll, 3, lse, sizeof lse);
  lay_print(&c->ldb, 4, db, sizeof db);
  int at = snprintf(buf, n, "case %d [class %d: %s] %s%s scale=%g | %s | q=%s k=%s v=%s o=%s",
                    c->index, c->cls, cn, c->bwd ? "fwd+bwd" : "fwd",
                    c->lse ? "" : " (no lse)", (double)c->scale, s, l[0], l[1], l[2], l[3]);
  if (at > 0 && (size_t)at < n && c->lse) at += snprintf(buf + at, n - (size_t)at, " lse=%s", lse);
  if (at > 0 && (size_t)at < n && c->bwd)
    snprintf(buf + at, n - (size_t)at, " dout=%s dq=%s dk=%s dv=%s%s%s", l[4], l[5], l[6], l[7],
             c->s.bias ? " dbias=" : "", c->s.bias ? db : "");
}

/* ------------------------------------------------------------ comparison */

/* The run's statistics (the summary line). */
typedef struct stats {
  int run, passed, bwd_run, bwd_passed;
  int mode_run[4], mode_passed[4];
  double max_rel[2][2];   /* [dtype fp16/bf16][fwd/bwd], relative to the bound */
  double max_elem[2][2];  /* worst element error / element bound */
  double max_lse;
  long rows, empty_rows;       /* query rows checked; those with no allowed key */
  double ms_ref, ms_gpu;
} stats;

/* The errors of one output against its reference. */
typedef struct cmp {
  double rel;       /* relative L2 */
  double worst;     /* largest |got - ref| / element bound */
  int64_t at[4];    /* where */
  float got, want;
  long nan;         /* NaN (unwritten) elements */
  long bad_empty;   /* elements of rows with no key that are not exactly 0 */
  long outside;     /* elements outside the view that lost their poison */
} cmp;

/* got (a downloaded view) against the contiguous reference; empty[row] marks
** rows (of the first three dims) with no allowed key, or is NULL. The
** element bound scales with the largest of the element, the rms of its row
** (the last dim), the rms of the tensor's rows that are not all zero (so that
** rows with no key do not shrink it) and ABS_FLOOR. */
static cmp compare(const vbuf *got, sfa_dtype dt, const float *ref, double tol,
                   const unsigned char *empty) {
  cmp e;
  memset(&e, 0, sizeof e);
  const int64_t C = got->shape[3];
  const size_t rows = (size_t)(got->shape[0] * got->shape[1] * got->shape[2]);
  double ref2 = 0, nz2 = 0, diff2 = 0;
  size_t nz_rows = 0;
  for (size_t r = 0; r < rows; r++) {
    double s = 0;
    for (int64_t x = 0; x < C; x++) s += (double)ref[r * C + x] * ref[r * C + x];
    ref2 += s, nz2 += s, nz_rows += s > 0;
  }
  const double rms = nz_rows ? sqrt(nz2 / ((double)nz_rows * (double)C)) : 0.0;
  const double least = rms > ABS_FLOOR ? rms : ABS_FLOOR;
  size_t row = 0;
  for (int64_t a = 0; a < got->shape[0]; a++)
    for (int64_t b = 0; b < got->shape[1]; b++)
      for (int64_t c = 0; c < got->shape[2]; c++, row++) {
        const float *w = ref + row * C;
        double rr = 0;
        for (int64_t x = 0; x < C; x++) rr += (double)w[x] * w[x];
        rr = sqrt(rr / (double)C);
        const double base = rr > least ? rr : least;
        for (int64_t x = 0; x < C; x++) {
          const float g = vb_get(got, dt, a, b, c, x);
          if (isnan(g) || isnan(w[x])) {
            e.nan++;
            continue;
          }
          if (empty && empty[row] && g != 0.0f) e.bad_empty++;
          const double d = fabs((double)g - w[x]);
          diff2 += d * d;
          const double bound = ELEM_FACTOR * tol * (fabs(w[x]) > base ? fabs(w[x]) : base);
          if (d / bound > e.worst) {
            e.worst = d / bound;
            e.at[0] = a, e.at[1] = b, e.at[2] = c, e.at[3] = x;
            e.got = g, e.want = w[x];
          }
        }
      }
  e.rel = ref2 > 0 ? sqrt(diff2 / ref2) : sqrt(diff2);
  e.outside = vb_written_outside(got);
  return e;
}

/* Appends to msg (of n bytes) what failed; returns 1 when something did. */
static int judge(const char *name, const cmp *e, double tol, char *msg, size_t n) {
  if (e->nan == 0 && e->bad_empty == 0 && e->outside == 0 && e->rel < tol && e->worst <= 1.0)
    return 0;
  const size_t at = strlen(msg);
  snprintf(msg + at, n - at,
           "\n    %s: rel_err %.3e (tol %.0e), worst element %.2fx its bound at [%lld,%lld,%lld,"
           "%lld] got %.6g want %.6g, nan/unwritten %ld, nonzero in empty rows %ld, written "
           "outside the view %ld",
           name, e->rel, tol, e->worst, (long long)e->at[0], (long long)e->at[1],
           (long long)e->at[2], (long long)e->at[3], (double)e->got, (double)e->want, e->nan,
           e->bad_empty, e->outside);
  return 1;
}

/* lse: finite rows within TG_LSE_TOL, empty rows exactly -inf. */
static int judge_lse(const vbuf *got, const float *ref, double *max_err, char *msg, size_t n) {
  long nan = 0, bad_empty = 0;
  double err = 0;
  int64_t worst[3] = {0, 0, 0};
  size_t row = 0;
  for (int64_t a = 0; a < got->shape[0]; a++)
    for (int64_t b = 0; b < got->shape[1]; b++)
      for (int64_t c = 0; c < got->shape[2]; c++, row++) {
        const float g = vb_get(got, SFA_DTYPE_FP32, a, b, c, 0), w = ref[row];
        if (isinf(w) && w < 0) {
          bad_empty += !(isinf(g) && g < 0);
        } else if (!isfinite(g)) {
          nan++;
        } else if (fabs((double)g - w) > err) {
          err = fabs((double)g - w);
          worst[0] = a, worst[1] = b, worst[2] = c;
        }
      }
  const long outside = vb_written_outside(got);
  if (err > *max_err) *max_err = err;
  if (nan == 0 && bad_empty == 0 && outside == 0 && err < TG_LSE_TOL) return 0;
  const size_t at = strlen(msg);
  snprintf(msg + at, n - at,
           "\n    lse: max error %.3e (tol %.0e) at [%lld,%lld,%lld], nan/unwritten/-inf %ld, "
           "not -inf in empty rows %ld, written outside the view %ld",
           err, TG_LSE_TOL, (long long)worst[0], (long long)worst[1], (long long)worst[2], nan,
           bad_empty, outside);
  return 1;
}

/* ------------------------------------------------------------ running a case */

static const char *cu_name(CUresult r) {
  const char *n = "?";
  tg_drv->cuGetErrorName(r, &n);
  return n;
}

/* Synchronize; a CUDA error here poisons the context for every later case,
** so it ends the test. */
static void sync_or_abort(const char *desc, const char *after) {
  CUresult r = tg_drv->cuCtxSynchronize();
  ck_assert_msg(r == CUDA_SUCCESS, "%s: after %s: %s (the CUDA context is lost; no later case "
                "can run)", desc, after, cu_name(r));
}

static float *ref_alloc(size_t n) {
  float *p = malloc((n ? n : 1) * sizeof *p);
  ck_assert_ptr_nonnull(p);
  return p;
}

/* The backward of case c after its forward: dout, the reference gradients,
** then atomics, deterministic and deterministic again. */
static int run_backward(const rcase *c, const char *desc, srun *R, vbuf *vq, vbuf *vk,
                        vbuf *vv, vbuf *vo, vbuf *vl, stats *S, char *msg, size_t n) {
  const scase *s = &c->s;
  const sfa_dtype dt = s->dtype;
  const int di = dt == SFA_DTYPE_BF16;
  const double tol = tg_tol_bwd(dt);
  int fail = 0;
  uint64_t rng = rng_of(s->seed, 0xD0);
  uint16_t *hdo = malloc(R->nq * 2);
  float *rdo = ref_alloc(R->nq);
  ck_assert_ptr_nonnull(hdo);
  for (size_t i = 0; i < R->nq; i++) {
    hdo[i] = tg_to_half(dt, (float)tu_rand_normal(&rng));
    rdo[i] = tg_from_half(dt, hdo[i]);
  }
  const int64_t qs[4] = {s->B, s->Hq, s->Tq, s->D}, ks[4] = {s->B, s->Hkv, s->Tk, s->D};
  vbuf vdo, vdq, vdk, vdv, vdb;
  memset(&vdb, 0, sizeof vdb);
  vb_alloc(&vdo, dt, 4, qs, &c->ldo);
  vb_upload_half(&vdo, hdo);
  free(hdo);
  vb_alloc(&vdq, dt, 4, qs, &c->ldq);
  vb_alloc(&vdk, dt, 4, ks, &c->ldk);
  vb_alloc(&vdv, dt, 4, ks, &c->ldv);
  const sfa_tensor *bias = R->ex.bias;
  if (bias) vb_alloc(&vdb, dt, 4, bias->shape, &c->ldb);
  const size_t nb = bias ? (size_t)(bias->shape[0] * bias->shape[1] * bias->shape[2] *
                                    bias->shape[3])
                         : 0;

  /* the reference; a bias broadcast over the batch gets its gradient summed
  ** over the batch when the reference reads it that way too */
  float *rdq = ref_alloc(R->nq), *rdk = ref_alloc(R->nk), *rdv = ref_alloc(R->nk);
  float *rdb = ref_alloc(nb);
  sfa_host_extras hx = R->hx;
  if (bias && bias->shape[0] == 1) hx.bias_batches = 1;
  char why[512];
  double t0 = tu_now_ms();
  sfa_status st = sfa_reference_backward(&R->p, s->B, s->Hq, s->Hkv, s->Tq, s->Tk, s->D, R->rq,
                                         R->rk, R->rv, R->has_ex ? &hx : NULL, rdo, rdq, rdk,
                                         rdv, bias ? rdb : NULL, why, sizeof why);
  S->ms_ref += tu_now_ms() - t0;
  ck_assert_msg(st == SFA_OK, "%s: reference backward: %s", desc, why);

  unsigned char *first[4] = {NULL, NULL, NULL, NULL};
  vbuf *outs[4] = {&vdq, &vdk, &vdv, &vdb};
  static const char *const names[4] = {"dq", "dk", "dv", "dbias"};
  const float *refs[4] = {rdq, rdk, rdv, rdb};
  for (int run = 0; run < 3; run++) { /* atomics, deterministic, deterministic again */
    const int det = run > 0;
    R->p.deterministic = det;
    for (int i = 0; i < 4; i++)
      if (outs[i]->base) vb_poison(outs[i]);
    t0 = tu_now_ms();
    st = sfa_backward(tg_ctx, &R->p, &vq->t, &vk->t, &vv->t, R->has_ex ? &R->ex : NULL, &vo->t,
                      &vl->t, &vdo.t, &vdq.t, &vdk.t, &vdv.t, bias ? &vdb.t : NULL, NULL);
    if (st == SFA_OK) sync_or_abort(desc, "sfa_backward");
    S->ms_gpu += tu_now_ms() - t0;
    if (st != SFA_OK) {
      const size_t at = strlen(msg);
      snprintf(msg + at, n - at, "\n    sfa_backward (deterministic=%d): %s: %s", det,
               sfa_status_string(st), sfa_last_error(tg_ctx));
      fail = 1;
      break;
    }
    for (int i = 0; i < 4; i++) {
      if (!outs[i]->base) continue;
      vb_download(outs[i]);
      if (run == 2) { /* bitwise equal to the first deterministic run */
        if (memcmp(first[i], outs[i]->host, outs[i]->total * outs[i]->esize) != 0) {
          const size_t at = strlen(msg);
          snprintf(msg + at, n - at, "\n    deterministic %s differs between two calls",
                   names[i]);
          fail = 1;
        }
        continue;
      }
      char nm[48];
      snprintf(nm, sizeof nm, "%s (%s)", names[i], det ? "deterministic" : "atomics");
      const cmp e = compare(outs[i], dt, refs[i], tol, NULL);
      fail |= judge(nm, &e, tol, msg, n);
      if (e.rel / tol > S->max_rel[di][1]) S->max_rel[di][1] = e.rel / tol;
      if (e.worst > S->max_elem[di][1]) S->max_elem[di][1] = e.worst;
      if (det) {
        first[i] = malloc(outs[i]->total * outs[i]->esize);
        ck_assert_ptr_nonnull(first[i]);
        memcpy(first[i], outs[i]->host, outs[i]->total * outs[i]->esize);
      }
    }
  }
  R->p.deterministic = 0;
  /* the backward reads q, k, v, o, lse and dout and writes none of them */
  const vbuf *ins[6] = {vq, vk, vv, vo, vl, &vdo};
  static const char *const in_names[6] = {"q", "k", "v", "o", "lse", "dout"};
  for (int i = 0; i < 6; i++)
    if (!vb_unchanged(ins[i])) {
      const size_t at = strlen(msg);
      snprintf(msg + at, n - at, "\n    sfa_backward changed its input %s", in_names[i]);
      fail = 1;
    }
  for (int i = 0; i < 4; i++) free(first[i]);
  free(rdo), free(rdq), free(rdk), free(rdv), free(rdb);
  vb_free(&vdo), vb_free(&vdq), vb_free(&vdk), vb_free(&vdv), vb_free(&vdb);
  return fail;
}

/* Runs case c; returns 0 when every check passes, else prints why and
** returns 1. */
static int run_case(const rcase *c, stats *S) {
  const scase *s = &c->s;
  const sfa_dtype dt = s->dtype;
  const int di = dt == SFA_DTYPE_BF16;
  char desc[1024], msg[4096] = "";
  case_describe(c, desc, sizeof desc);
  int fail = 0;

  srun R;
  tg_case_setup(&R, s); /* data, index arrays, bias, mask and params (contiguous q/k/v) */
  R.p.scale = c->scale;
  const int64_t qs[4] = {s->B, s->Hq, s->Tq, s->D}, ks[4] = {s->B, s->Hkv, s->Tk, s->D};
  const int64_t ls[3] = {s->B, s->Hq, s->Tq};
  vbuf vq, vk, vv, vo, vl;
  vb_alloc(&vq, dt, 4, qs, &c->lq);
  vb_alloc(&vk, dt, 4, ks, &c->lk);
  vb_alloc(&vv, dt, 4, ks, &c->lv);
  vb_upload_half(&vq, R.hq);
  vb_upload_half(&vk, R.hk);
  vb_upload_half(&vv, R.hv);
  vb_alloc(&vo, dt, 4, qs, &c->lo);
  vb_alloc(&vl, SFA_DTYPE_FP32, 3, ls, &c->ll);

  /* the float64 reference forward */
  char why[512];
  double t0 = tu_now_ms();
  sfa_status st = sfa_reference_forward(&R.p, s->B, s->Hq, s->Hkv, s->Tq, s->Tk, s->D, R.rq,
                                        R.rk, R.rv, R.has_ex ? &R.hx : NULL, R.ro, R.rl, why,
                                        sizeof why);
  S->ms_ref += tu_now_ms() - t0;
  ck_assert_msg(st == SFA_OK, "%s: reference forward: %s", desc, why);
  unsigned char *empty = malloc(R.nrows);
  ck_assert_ptr_nonnull(empty);
  for (size_t i = 0; i < R.nrows; i++) {
    empty[i] = isinf(R.rl[i]) && R.rl[i] < 0;
    S->empty_rows += empty[i];
  }
  S->rows += (long)R.nrows;

  /* the index arrays must follow the contract, or the case is wrong, not sfa */
  if (s->mode == SFA_MODE_QK_DROP || s->mode == SFA_MODE_HASH) {
    st = sfa_check_indices(tg_ctx, &R.p, &R.ex, s->Tq, s->Tk, NULL);
    if (st != SFA_OK) {
      snprintf(msg, sizeof msg, "\n    the case's index arrays are rejected: %s: %s",
               sfa_status_string(st), sfa_last_error(tg_ctx));
      fail = 1;
    }
  }

  /* the forward into poisoned o and lse */
  t0 = tu_now_ms();
  st = fail ? SFA_OK
            : sfa_forward(tg_ctx, &R.p, &vq.t, &vk.t, &vv.t, R.has_ex ? &R.ex : NULL, &vo.t,
                          c->lse ? &vl.t : NULL, NULL);
  if (!fail && st == SFA_OK) sync_or_abort(desc, "sfa_forward");
  S->ms_gpu += tu_now_ms() - t0;
  if (!fail && st != SFA_OK) {
    snprintf(msg, sizeof msg, "\n    sfa_forward: %s: %s", sfa_status_string(st),
             sfa_last_error(tg_ctx));
    fail = 1;
  }
  if (!fail) {
    const double tol = tg_tol_fwd(dt);
    vb_download(&vo);
    const cmp e = compare(&vo, dt, R.ro, tol, empty);
    fail |= judge("o", &e, tol, msg, sizeof msg);
    if (e.rel / tol > S->max_rel[di][0]) S->max_rel[di][0] = e.rel / tol;
    if (e.worst > S->max_elem[di][0]) S->max_elem[di][0] = e.worst;
    vb_download(&vl);
    if (c->lse) {
      fail |= judge_lse(&vl, R.rl, &S->max_lse, msg, sizeof msg);
    } else { /* lse NULL: the buffer nobody passed stays poisoned */
      long touched = 0;
      for (size_t b = 0; b < vl.total * vl.esize; b++) touched += vl.host[b] != 0xFF;
      if (touched) {
        const size_t at = strlen(msg);
        snprintf(msg + at, sizeof msg - at,
                 "\n    lse is NULL but %ld bytes of an lse buffer nobody passed changed",
                 touched);
        fail = 1;
      }
    }
  }
  if (!fail) { /* the forward writes none of its inputs */
    const vbuf *ins[3] = {&vq, &vk, &vv};
    static const char *const in_names[3] = {"q", "k", "v"};
    for (int i = 0; i < 3; i++)
      if (!vb_unchanged(ins[i])) {
        const size_t at = strlen(msg);
        snprintf(msg + at, sizeof msg - at, "\n    sfa_forward changed its input %s",
                 in_names[i]);
        fail = 1;
      }
  }
  if (!fail && c->bwd) {
    S->bwd_run++;
    const int bfail = run_backward(c, desc, &R, &vq, &vk, &vv, &vo, &vl, S, msg, sizeof msg);
    S->bwd_passed += !bfail;
    fail |= bfail;
  }

  S->run++, S->passed += !fail;
  S->mode_run[s->mode]++, S->mode_passed[s->mode] += !fail;
  if (!fail && nonly) printf("ok %s\n", desc);
  if (fail) {
    char maxt[40] = "";
    if (max_T != DEFAULT_MAX_T) snprintf(maxt, sizeof maxt, " SFA_RANDOM_MAX_T=%d", max_T);
    printf("FAIL %s%s\n  replay: SFA_TEST_SEED=0x%llx SFA_RANDOM_CASE=%d%s\n", desc, msg,
           (unsigned long long)tg_seed, c->index, maxt);
  }
  free(empty);
  vb_free(&vq), vb_free(&vk), vb_free(&vv), vb_free(&vo), vb_free(&vl);
  tg_case_free(&R);
  return fail;
}

/* ------------------------------------------------------------ the run */


static int env_int(const char *name, int def, int lo, int hi) {
  const char *e = getenv(name);
  if (!e || !*e) return def;
  char *end;
  long v = strtol(e, &end, 0);
  if (*end || v < lo || v > hi) {
    printf("%s=%s: not an integer in [%d, %d]; using %d\n", name, e, lo, hi, def);
    return def;
  }
  return (int)v;
}

static void read_env(void) {
  ncases = env_int("SFA_RANDOM_CASES", DEFAULT_CASES, 1, 1000000);
  max_T = env_int("SFA_RANDOM_MAX_T", DEFAULT_MAX_T, 16, 100000);
  const char *e = getenv("SFA_RANDOM_CASE");
  for (const char *p = e; p && *p && nonly < 64;) {
    char *end;
    long v = strtol(p, &end, 10);
    if (end == p || v < 0) break;
    only[nonly++] = (int)v;
    p = *end == ',' ? end + 1 : end;
    if (*end && *end != ',') break;
  }
}

static void print_classes(void) {
  for (int i = 0; i < NCLASS; i++) {
    char cn[80];
    class_name(&classes[i], cn, sizeof cn);
    printf("  class %2d: %s\n", i, cn);
  }
}

/* SFA_RANDOM_LIST: the classes, every case and their distribution; no GPU. */
static int list_cases(void) {
  printf("gpu_random: seed 0x%llx, %d cases, SFA_RANDOM_MAX_T %d\n", (unsigned long long)tg_seed,
         ncases, max_T);
  print_classes();
  int mode_n[4] = {0}, bwd = 0, strided = 0, ratio[5] = {0}, tq_gt = 0, tq_lt = 0, t1 = 0;
  int used[NCLASS][2];
  memset(used, 0, sizeof used);
  double fwd_work = 0, bwd_work = 0;
  for (int i = 0; i < ncases; i++) {
    const rcase c = draw_case(tg_seed, i);
    char d[1024];
    case_describe(&c, d, sizeof d);
    printf("%s\n", d);
    const scase *s = &c.s;
    mode_n[s->mode]++, bwd += c.bwd;
    strided += !lay_is_dense(&c.lq) || !lay_is_dense(&c.lk) || !lay_is_dense(&c.lv);
    const int g = s->Hq / s->Hkv;
    ratio[s->Hkv == 1 && s->Hq > 1 && g != 2 && g != 4 ? 3 : g == 1 ? 0 : g == 2 ? 1 : 2]++;
    tq_gt += s->Tq > s->Tk, tq_lt += s->Tq < s->Tk, t1 += s->Tq == 1 || s->Tk == 1;
    const double w = (double)s->B * s->Hq * s->Tq * s->Tk * s->D;
    fwd_work += w, bwd_work += c.bwd ? w : 0;
    used[c.cls][0] = 1, used[c.cls][1] |= c.bwd;
  }
  int nf = 0, nbw = 0;
  for (int i = 0; i < NCLASS; i++) nf += used[i][0], nbw += used[i][1];
  printf("gpu_random: %d cases: dense %d, qk_drop %d, hash %d, window %d; %d with the backward; "
         "%d with strided q/k/v; Hq/Hkv 1: %d, 2: %d, 4: %d, MQA: %d; Tq > Tk %d, Tq < Tk %d, "
         "a length of 1: %d\n",
         ncases, mode_n[0], mode_n[1], mode_n[2], mode_n[3], bwd, strided, ratio[0], ratio[1],
         ratio[2], ratio[3], tq_gt, tq_lt, t1);
  printf("gpu_random: kernel variants: %d forward, %d backward classes (x3 kernels); reference "
         "work: forward %.2e, backward %.2e (B*Hq*Tq*Tk*D summed)\n",
         nf, nbw, fwd_work, bwd_work);
  return 0;
}

START_TEST(random_cases_match_the_float64_reference) {
  stats S;
  memset(&S, 0, sizeof S);
  const double t0 = tu_now_ms();
  char fails[MAX_FAILS_LISTED * 12 + 16] = "";
  int nfail = 0;
  const int n = nonly ? nonly : ncases;
  for (int i = 0; i < n; i++) {
    const rcase c = draw_case(tg_seed, nonly ? only[i] : i);
    if (run_case(&c, &S)) {
      if (nfail++ < MAX_FAILS_LISTED) {
        const size_t at = strlen(fails);
        snprintf(fails + at, sizeof fails - at, "%s%d", at ? "," : "", c.index);
      }
    }
    if (!nonly && (i + 1) % 50 == 0)
      printf("gpu_random: %d/%d cases, %d failed, %.1f s\n", i + 1, n, nfail,
             (tu_now_ms() - t0) / 1e3);
    fflush(stdout);
  }
  const double secs = (tu_now_ms() - t0) / 1e3;
  printf("gpu_random: seed 0x%llx: %d/%d cases pass (dense %d/%d, qk_drop %d/%d, hash %d/%d, "
         "window %d/%d; backward %d/%d); max rel_err/tol fwd fp16 %.2f bf16 %.2f, bwd fp16 %.2f "
         "bf16 %.2f; max element err/bound fwd fp16 %.2f bf16 %.2f, bwd fp16 %.2f bf16 %.2f; "
         "max lse err %.2e; %ld of %ld query rows see no key; %.1f s (CPU reference %.1f s, sfa calls with "
         "compiles %.1f s)\n",
         (unsigned long long)tg_seed, S.passed, S.run, S.mode_passed[0], S.mode_run[0],
         S.mode_passed[1], S.mode_run[1], S.mode_passed[2], S.mode_run[2], S.mode_passed[3],
         S.mode_run[3], S.bwd_passed, S.bwd_run, S.max_rel[0][0], S.max_rel[1][0],
         S.max_rel[0][1], S.max_rel[1][1], S.max_elem[0][0], S.max_elem[1][0], S.max_elem[0][1],
         S.max_elem[1][1], S.max_lse, S.empty_rows, S.rows, secs, S.ms_ref / 1e3, S.ms_gpu / 1e3);
  ck_assert_msg(nfail == 0, "%d of %d random cases failed (cases %s%s; each printed with its "
                "replay line)", nfail, S.run, fails, nfail > MAX_FAILS_LISTED ? ",..." : "");
}
END_TEST

/* ------------------------------------------------------------ main */

int main(void) {
  read_env();
  const char *seed = getenv("SFA_TEST_SEED");
  tg_seed = seed && *seed ? strtoull(seed, NULL, 0) : DEFAULT_SEED;
  classes_draw(tg_seed);
  const char *list = getenv("SFA_RANDOM_LIST");
  if (list && *list && strcmp(list, "0") != 0) return list_cases();

  int rc = tg_open("gpu_random", DEFAULT_SEED);
  if (rc != 0) return rc;
  printf("gpu_random: seed 0x%llx, %d cases%s, SFA_RANDOM_MAX_T %d; kernel classes:\n",
         (unsigned long long)tg_seed, nonly ? nonly : ncases, nonly ? " (SFA_RANDOM_CASE)" : "",
         max_T);
  print_classes();
  Suite *s = suite_create("gpu_random");
  tu_untimed_case(s, "gpu_random", random_cases_match_the_float64_reference);
  rc = tu_run_suite(s);
  tg_close();
  return rc;
}
