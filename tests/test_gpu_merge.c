/*
** test_gpu_merge.c -- sfa_merge_attention on a real GPU:
**   - attention over a split of the keys, merged, is the attention over all
**     keys: sfa_forward on k[:, :, :s] and k[:, :, s:] (views), merged, against
**     sfa_forward over all keys and the float64 reference (o and lse); dense,
**     and causal (the first part then a window, the second causal, so that
**     early rows see no key of it or, for Tq > Tk, of any part);
**   - random partials against sfa_reference_merge: fp16, bf16, fp32 parts
**     into fp16, bf16, fp32 outputs, N = 1 .. 100, D = 1 .. 256, lse with
**     -inf parts (their o rows hold NaN, which must not be read), rows where
**     every part is -inf (o = 0, lse = -inf), NaN lse (NaN out); contiguous,
**     [N * B, T, H, D] (transposed), padded and misaligned rows (the element
**     path); outputs poisoned first: every logical element written, the
**     padding around them left as it was;
**   - sfa_backward_dlse (the gradient that flows into lse, which a merge
**     passes back) against sfa_reference_backward_dlse: dense causal with
**     rows that see no key, GQA, window with a bias (dbias), hash;
**   - "perf": the split-KV combine (64 fp32 parts into bf16) and a ring step
**     (2 bf16 parts) timed, in GB/s (printed, no assertion).
** SFA_MERGE_SMALL=1 runs a few small cases only (for compute-sanitizer).
** Without a driver or a device the suite prints "SKIP: <reason>" and exits
** 77. SFA_TEST_SEED changes the random cases.
*/
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sfa.h"
#include "runtime/driver.h"
#include "gpucase.h"

#define CU(call) TG_CU(call)
#define OK_OR_ABORT(call, what)                                                        \
  do {                                                                                 \
    sfa_status s_ = (call);                                                            \
    ck_assert_msg(s_ == SFA_OK, "%s: %s: %s", what, sfa_status_string(s_),             \
                  sfa_last_error(tg_ctx));                                             \
  } while (0)

static int small_run(void) {
  const char *e = getenv("SFA_MERGE_SMALL");
  return e && *e && *e != '0';
}

static size_t esize(sfa_dtype d) { return d == SFA_DTYPE_FP32 ? 4 : 2; }

static void put(void *buf, sfa_dtype d, size_t i, float f) {
  if (d == SFA_DTYPE_FP32) memcpy((char *)buf + 4 * i, &f, 4);
  else ((uint16_t *)buf)[i] = sfa_float_to_half(d, f);
}

static float get(const void *buf, sfa_dtype d, size_t i) {
  if (d == SFA_DTYPE_FP32) {
    float f;
    memcpy(&f, (const char *)buf + 4 * i, 4);
    return f;
  }
  return sfa_half_to_float(d, ((const uint16_t *)buf)[i]);
}

static float round_to(sfa_dtype d, float f) {
  return d == SFA_DTYPE_FP32 ? f : sfa_half_to_float(d, sfa_float_to_half(d, f));
}

/* ------------------------------------------------------------ strided device tensors */

/* A device tensor [A, H, T(, D)] of dtype dt in a buffer of `span` elements
** that starts `off` elements into its allocation, and its host image;
** every byte that no logical element covers holds 0xff (poison). Layout 0: contiguous; 1:
** memory order A, T, H, D (torch's [B, T, H, D] seen as [B, H, T, D]);
** pad: elements after each row of the last dim. */
typedef struct dten {
  CUdeviceptr base;
  size_t alloc;   /* elements */
  sfa_tensor t;
  void *host;     /* the allocation's host image: element i of the tensor at off + offset */
} dten;

static int64_t off_of(const dten *x, int64_t a, int64_t h, int64_t t, int64_t c) {
  const int64_t *s = x->t.strides;
  return a * s[0] + h * s[1] + t * s[2] + (x->t.rank == 4 ? c * s[3] : 0);
}

static void dten_make(dten *x, sfa_dtype dt, int rank, int64_t A, int64_t H, int64_t T, int64_t D,
                      int layout, int pad, int off) {
  memset(x, 0, sizeof *x);
  const int64_t last = rank == 4 ? D : T, lp = last + pad;
  const int64_t shape[4] = {A, H, T, D};
  sfa_tensor_init(&x->t, NULL, dt, rank, shape);
  int64_t *st = x->t.strides;
  if (rank == 4) {
    st[3] = 1;
    if (layout == 1) st[1] = lp, st[2] = H * lp, st[0] = T * H * lp;
    else st[2] = lp, st[1] = T * lp, st[0] = H * T * lp;
  } else {
    st[2] = 1, st[1] = lp, st[0] = H * lp;
  }
  x->alloc = (size_t)(off + A * st[0]);
  x->host = malloc(x->alloc * esize(dt));
  ck_assert_ptr_nonnull(x->host);
  memset(x->host, 0xff, x->alloc * esize(dt));
  CU(tg_drv->cuMemAlloc(&x->base, x->alloc * esize(dt)));
  x->t.data = (void *)(uintptr_t)(x->base + (CUdeviceptr)off * esize(dt));
}

/* The element offset of the tensor's data in its allocation. */
static int dten_off(const dten *x) {
  return (int)(((CUdeviceptr)(uintptr_t)x->t.data - x->base) / esize(x->t.dtype));
}

static void dten_upload(dten *x) {
  CU(tg_drv->cuMemcpyHtoD(x->base, x->host, x->alloc * esize(x->t.dtype)));
}

static void dten_download(dten *x) {
  CU(tg_drv->cuMemcpyDtoH(x->host, x->base, x->alloc * esize(x->t.dtype)));
}

static void dten_free(dten *x) {
  tg_drv->cuMemFree(x->base);
  free(x->host);
}

/* ------------------------------------------------------------ random partials */

typedef struct mcase {
  int N, B, H, T, D;
  sfa_dtype in, out;
  int layout, pad, off;   /* of o_parts and o (off: elements, misaligns the base) */
  double p_ninf;          /* probability that a part's lse is -inf */
  int with_lse, special;  /* special: rows with every part -inf and a NaN lse */
  uint64_t seed;
} mcase;

static void describe(const mcase *c, char *buf, size_t n) {
  snprintf(buf, n, "merge N=%d B=%d H=%d T=%d D=%d %s->%s layout %d pad %d off %d p_ninf %.2f "
                   "lse %d special %d seed %llu",
           c->N, c->B, c->H, c->T, c->D, sfa_dtype_name(c->in), sfa_dtype_name(c->out),
           c->layout, c->pad, c->off, c->p_ninf, c->with_lse, c->special,
           (unsigned long long)c->seed);
}

static void run_case(const mcase *c) {
  char desc[256];
  describe(c, desc, sizeof desc);
  uint64_t rng = c->seed;
  const int N = c->N, B = c->B, H = c->H, T = c->T, D = c->D;
  const size_t rows = (size_t)B * H * T;
  float *rop = malloc((size_t)N * rows * D * sizeof *rop), *rlp = malloc((size_t)N * rows * 4);
  float *ro = malloc(rows * D * sizeof *ro), *rl = malloc(rows * sizeof *rl);
  ck_assert(rop && rlp && ro && rl);
  dten op, lp, o, l;
  dten_make(&op, c->in, 4, (int64_t)N * B, H, T, D, c->layout, c->pad, c->off);
  dten_make(&lp, SFA_DTYPE_FP32, 3, (int64_t)N * B, H, T, 0, 0, c->pad ? 3 : 0, 0);
  dten_make(&o, c->out, 4, B, H, T, D, c->layout, c->pad, c->off);
  dten_make(&l, SFA_DTYPE_FP32, 3, B, H, T, 0, 0, c->pad ? 1 : 0, 0);
  const int opo = dten_off(&op), oo = dten_off(&o);
  for (int n = 0; n < N; n++)
    for (int b = 0; b < B; b++)
      for (int h = 0; h < H; h++)
        for (int t = 0; t < T; t++) {
          const size_t r = ((size_t)b * H + h) * T + t, ri = (size_t)n * rows + r;
          float lv = (float)(3.0 * tu_rand_normal(&rng));
          if (tu_rand_uniform(&rng) < c->p_ninf) lv = -INFINITY;
          if (c->special && r % 17 == 3) lv = -INFINITY;                 /* all parts -inf */
          if (c->special && r % 29 == 5 && n == N / 2) lv = NAN;         /* NaN out */
          rlp[ri] = lv;
          ((float *)lp.host)[off_of(&lp, (int64_t)n * B + b, h, t, 0)] = lv;
          for (int d = 0; d < D; d++) {
            float v = round_to(c->in, (float)tu_rand_normal(&rng));
            if (lv == -INFINITY) v = NAN; /* never read */
            rop[ri * D + d] = v;
            put(op.host, c->in, (size_t)(opo + off_of(&op, (int64_t)n * B + b, h, t, d)), v);
          }
        }
  dten_upload(&op), dten_upload(&lp), dten_upload(&o), dten_upload(&l);
  char err[256] = "";
  ck_assert_msg(sfa_reference_merge(N, (int64_t)rows, D, rop, rlp, ro, rl, err, sizeof err) ==
                SFA_OK, "%s: %s", desc, err);
  OK_OR_ABORT(sfa_merge_attention(tg_ctx, &op.t, &lp.t, &o.t, c->with_lse ? &l.t : NULL, NULL),
              desc);
  CU(tg_drv->cuCtxSynchronize());
  dten_download(&o), dten_download(&l);
  const double eps = c->out == SFA_DTYPE_FP32 ? 2e-6 : c->out == SFA_DTYPE_FP16 ? 1.0 / 1024 : 1.0 / 128;
  /* poison kept outside the logical elements: count the touched bytes */
  unsigned char *touched = calloc(o.alloc * esize(c->out), 1);
  ck_assert_ptr_nonnull(touched);
  long bad = 0;
  for (int b = 0; b < B; b++)
    for (int h = 0; h < H; h++)
      for (int t = 0; t < T; t++) {
        const size_t r = ((size_t)b * H + h) * T + t;
        for (int d = 0; d < D; d++) {
          const size_t i = (size_t)(oo + off_of(&o, b, h, t, d));
          memset(touched + i * esize(c->out), 1, esize(c->out));
          const float g = get(o.host, c->out, i), w = ro[r * D + d];
          const int ok = isnan(w) ? isnan(g)
                                  : fabs((double)g - w) <= eps * fabs(w) + 4e-6 * (1 + fabs(w));
          if (!ok && bad++ < 5)
            fprintf(stderr, "%s: o[%d, %d, %d, %d] = %.8g, want %.8g\n", desc, b, h, t, d, g, w);
        }
        if (c->with_lse) {
          const float g = ((float *)l.host)[off_of(&l, b, h, t, 0)], w = rl[r];
          const int ok = isnan(w) ? isnan(g) : isinf(w) ? g == w : fabs(g - w) <= 2e-6 * (1 + fabs(w));
          if (!ok && bad++ < 5)
            fprintf(stderr, "%s: lse[%d, %d, %d] = %.8g, want %.8g\n", desc, b, h, t, g, w);
        } else {
          ck_assert_msg(((uint32_t *)l.host)[off_of(&l, b, h, t, 0)] == 0xffffffffu,
                        "%s: lse written though NULL was passed", desc);
        }
      }
  for (size_t i = 0; i < o.alloc * esize(c->out); i++)
    if (!touched[i] && ((unsigned char *)o.host)[i] != 0xff && bad++ < 5)
      fprintf(stderr, "%s: byte %zu of o's buffer outside every element was written\n", desc, i);
  ck_assert_msg(bad == 0, "%s: %ld mismatches (first ones above)", desc, bad);
  free(touched);
  dten_free(&op), dten_free(&lp), dten_free(&o), dten_free(&l);
  free(rop), free(rlp), free(ro), free(rl);
}

START_TEST(random_partials_every_dtype_pair) {
  const sfa_dtype dts[3] = {SFA_DTYPE_FP16, SFA_DTYPE_BF16, SFA_DTYPE_FP32};
  const int small = small_run();
  for (int i = 0; i < 3; i++)
    for (int j = 0; j < 3; j++) {
      mcase c = {3, 2, 3, 17, 64, dts[i], dts[j], 0, 0, 0, 0.25, 1, 1, tg_seed + 10 * i + j};
      run_case(&c);
      if (small) continue;
      c.D = 128, c.N = 2, c.layout = 1, c.seed += 100;
      run_case(&c);
    }
  printf("ok random partials, 9 dtype pairs\n");
}
END_TEST

START_TEST(parts_sizes_and_layouts) {
  const int small = small_run();
  static const struct { int N, D, layout, pad, off; double p; } v[] = {
    {1, 64, 0, 0, 0, 0.3},     /* N = 1: the identity, -inf rows 0 */
    {2, 128, 1, 0, 0, 0.1},    /* a ring step, transposed layout */
    {64, 128, 0, 0, 0, 0.3},   /* split-KV: 64 parts */
    {100, 32, 0, 0, 0, 0.5},   /* more parts than a group */
    {5, 7, 0, 0, 0, 0.2},      /* odd D: the element path */
    {4, 256, 0, 0, 0, 0.2},    /* the largest D */
    {3, 40, 0, 3, 0, 0.2},     /* padded rows: not 16-byte aligned */
    {3, 64, 1, 8, 4, 0.2},     /* misaligned base (4 elements) */
    {2, 1, 0, 0, 0, 0.0},      /* D = 1 */
    {33, 24, 1, 1, 1, 0.4},    /* everything at once */
  };
  const int n = small ? 5 : (int)(sizeof v / sizeof v[0]);
  for (int i = 0; i < n; i++)
    for (int dt = 0; dt < 2; dt++) {
      const sfa_dtype in = dt ? SFA_DTYPE_FP32 : SFA_DTYPE_BF16;
      const sfa_dtype out = dt ? SFA_DTYPE_BF16 : SFA_DTYPE_FP16;
      mcase c = {v[i].N, 2, 3, small ? 5 : 33, v[i].D, in, out, v[i].layout, v[i].pad, v[i].off,
                 v[i].p, (i + dt) % 3 != 2, 1, tg_seed + 1000 + 2 * i + dt};
      run_case(&c);
    }
  printf("ok parts, sizes and layouts\n");
}
END_TEST

/* ------------------------------------------------------------ merge of a key split */

/* sfa_forward over keys [0, s) and [s, Tk) (views of k and v), merged,
** against sfa_forward over all keys and the float64 reference. */
static void split_case(sfa_dtype dt, sfa_dtype out, int causal, int Tq, int Tk, int s, int D) {
  const int B = 2, H = 4;
  char desc[160];
  snprintf(desc, sizeof desc, "split %s->%s causal %d Tq %d Tk %d at %d D %d", sfa_dtype_name(dt),
           sfa_dtype_name(out), causal, Tq, Tk, s, D);
  uint64_t rng = tg_seed + (uint64_t)Tk * 31 + (uint64_t)D + (uint64_t)causal;
  const size_t nq = (size_t)B * H * Tq * D, nk = (size_t)B * H * Tk * D, rows = (size_t)B * H * Tq;
  float *x = malloc((nq + 2 * nk) * sizeof *x);
  uint16_t *h = malloc((nq + 2 * nk) * sizeof *h);
  ck_assert(x && h);
  for (size_t i = 0; i < nq + 2 * nk; i++) {
    h[i] = sfa_float_to_half(dt, (float)tu_rand_normal(&rng));
    x[i] = sfa_half_to_float(dt, h[i]);
  }
  CUdeviceptr dqkv = tg_upload(h, (nq + 2 * nk) * 2), dof, dlf, dop, dlp, dom, dlm;
  CU(tg_drv->cuMemAlloc(&dof, nq * 2));
  CU(tg_drv->cuMemAlloc(&dlf, rows * 4));
  CU(tg_drv->cuMemAlloc(&dop, 2 * nq * 2));
  CU(tg_drv->cuMemAlloc(&dlp, 2 * rows * 4));
  CU(tg_drv->cuMemAlloc(&dom, nq * esize(out)));
  CU(tg_drv->cuMemAlloc(&dlm, rows * 4));
  int64_t sq[4] = {B, H, Tq, D}, sk[4] = {B, H, Tk, D}, sl[3] = {B, H, Tq};
  int64_t spo[4] = {2 * B, H, Tq, D}, spl[3] = {2 * B, H, Tq};
  sfa_tensor q, k, v, of, lf, op, lp, om, lm;
  sfa_tensor_init(&q, (void *)(uintptr_t)dqkv, dt, 4, sq);
  sfa_tensor_init(&k, (void *)(uintptr_t)(dqkv + nq * 2), dt, 4, sk);
  sfa_tensor_init(&v, (void *)(uintptr_t)(dqkv + (nq + nk) * 2), dt, 4, sk);
  sfa_tensor_init(&of, (void *)(uintptr_t)dof, dt, 4, sq);
  sfa_tensor_init(&lf, (void *)(uintptr_t)dlf, SFA_DTYPE_FP32, 3, sl);
  sfa_tensor_init(&op, (void *)(uintptr_t)dop, dt, 4, spo);
  sfa_tensor_init(&lp, (void *)(uintptr_t)dlp, SFA_DTYPE_FP32, 3, spl);
  sfa_tensor_init(&om, (void *)(uintptr_t)dom, out, 4, sq);
  sfa_tensor_init(&lm, (void *)(uintptr_t)dlm, SFA_DTYPE_FP32, 3, sl);
  sfa_attention_params p;
  sfa_params_init(&p);
  p.causal = causal;
  OK_OR_ABORT(sfa_forward(tg_ctx, &p, &q, &k, &v, NULL, &of, &lf, NULL), desc);
  for (int part = 0; part < 2; part++) {
    /* keys [t0, t0 + n): a view of k and v; the part's o and lse: its slice of op, lp */
    const int t0 = part ? s : 0, n = part ? Tk - s : s;
    sfa_tensor kp = k, vp = v, opn = q, lpn = lf;
    kp.shape[2] = vp.shape[2] = n;
    kp.data = (char *)k.data + (size_t)t0 * D * 2;
    vp.data = (char *)v.data + (size_t)t0 * D * 2;
    opn.data = (char *)op.data + (size_t)part * nq * 2;
    lpn.data = (char *)lp.data + (size_t)part * rows * 4;
    sfa_attention_params pp;
    sfa_params_init(&pp);
    if (causal && part == 1) pp.causal = 1;  /* j' <= i + (Tk - s) - Tq: bottom-right */
    if (causal && part == 0) {               /* j <= i + Tk - Tq: window_right Tk - s */
      pp.mode = SFA_MODE_WINDOW;
      pp.window_right = Tk - s;
    }
    OK_OR_ABORT(sfa_forward(tg_ctx, &pp, &q, &kp, &vp, NULL, &opn, &lpn, NULL), desc);
  }
  OK_OR_ABORT(sfa_merge_attention(tg_ctx, &op, &lp, &om, &lm, NULL), desc);
  CU(tg_drv->cuCtxSynchronize());

  float *ro = malloc(nq * 4), *rl = malloc(rows * 4), *gl = malloc(rows * 4), *fl = malloc(rows * 4);
  void *go = malloc(nq * esize(out));
  uint16_t *fo = malloc(nq * 2);
  ck_assert(ro && rl && gl && fl && go && fo);
  char err[256] = "";
  ck_assert_msg(sfa_reference_forward(&p, B, H, H, Tq, Tk, D, x, x + nq, x + nq + nk, NULL, ro, rl,
                                      err, sizeof err) == SFA_OK, "%s", err);
  CU(tg_drv->cuMemcpyDtoH(go, dom, nq * esize(out)));
  CU(tg_drv->cuMemcpyDtoH(gl, dlm, rows * 4));
  CU(tg_drv->cuMemcpyDtoH(fo, dof, nq * 2));
  CU(tg_drv->cuMemcpyDtoH(fl, dlf, rows * 4));
  double dm = 0, dr = 0, nr = 0, lerr = 0;
  long nan = 0, empty = 0;
  for (size_t i = 0; i < nq; i++) {
    const double g = get(go, out, i), f = sfa_half_to_float(dt, fo[i]);
    if (isnan(g)) nan++;
    dm += (g - f) * (g - f);
    dr += (g - ro[i]) * (g - ro[i]);
    nr += (double)ro[i] * ro[i];
  }
  for (size_t r = 0; r < rows; r++) {
    if (rl[r] == -INFINITY) {
      empty++;
      ck_assert_msg(gl[r] == -INFINITY && fl[r] == -INFINITY, "%s: row %zu: lse %g (full %g), "
                    "want -inf", desc, r, gl[r], fl[r]);
      for (int d = 0; d < D; d++)
        ck_assert_msg(get(go, out, r * D + d) == 0.f, "%s: row %zu sees no key: o must be 0",
                      desc, r);
      continue;
    }
    lerr = fmax(lerr, fabs(gl[r] - rl[r]));
    ck_assert_msg(fabs(gl[r] - fl[r]) < TG_LSE_TOL, "%s: row %zu: merged lse %.6g, full %.6g",
                  desc, r, gl[r], fl[r]);
  }
  const double tol = tg_tol_fwd(dt);
  printf("%s: o vs reference %.2e, vs full forward %.2e; lse max err %.2e; %ld empty rows\n",
         desc, sqrt(dr / nr), sqrt(dm / nr), lerr, empty);
  ck_assert_int_eq(nan, 0);
  ck_assert_msg(sqrt(dr / nr) < tol, "%s: o relative error %.3e vs reference", desc, sqrt(dr / nr));
  ck_assert_msg(sqrt(dm / nr) < tol, "%s: o differs from the full forward by %.3e", desc,
                sqrt(dm / nr));
  ck_assert_msg(lerr < TG_LSE_TOL, "%s: lse error %.3e", desc, lerr);
  if (causal && Tq > Tk) ck_assert_int_eq(empty, (long)B * H * (Tq - Tk));
  free(x), free(h), free(ro), free(rl), free(gl), free(fl), free(go), free(fo);
  CUdeviceptr ps[7] = {dqkv, dof, dlf, dop, dlp, dom, dlm};
  for (int i = 0; i < 7; i++) tg_drv->cuMemFree(ps[i]);
}

START_TEST(merge_of_a_key_split_is_the_whole_attention) {
  if (small_run()) {
    split_case(SFA_DTYPE_BF16, SFA_DTYPE_BF16, 0, 64, 128, 64, 64);
    return;
  }
  split_case(SFA_DTYPE_BF16, SFA_DTYPE_BF16, 0, 256, 512, 256, 128);
  split_case(SFA_DTYPE_FP16, SFA_DTYPE_FP16, 0, 200, 300, 150, 64);
  split_case(SFA_DTYPE_BF16, SFA_DTYPE_FP32, 0, 100, 333, 37, 64);
  split_case(SFA_DTYPE_BF16, SFA_DTYPE_BF16, 1, 256, 256, 128, 128); /* early rows: part 1 empty */
  split_case(SFA_DTYPE_FP16, SFA_DTYPE_FP16, 1, 300, 200, 120, 64);  /* 100 rows see no key */
}
END_TEST

/* ------------------------------------------------------------ the lse gradient */

/* sfa_backward_dlse (random dout and dlse; deterministic and not) against
** sfa_reference_backward_dlse: dq, dk, dv and, with a bias, dbias. */
static void dlse_case(const scase *c) {
  srun R;
  tg_case_setup(&R, c);
  uint64_t rng = c->seed * 5 + 1;
  const size_t nq = R.nq, nk = R.nk, rows = R.nrows;
  const size_t nb = R.ex.bias ? (size_t)c->B * c->Hq * c->Tq * c->Tk : 0; /* BIAS_HEAD only */
  uint16_t *h = malloc(nq * 2);
  float *rdo = malloc(nq * 4), *rdl = malloc(rows * 4);
  ck_assert(h && rdo && rdl);
  for (size_t i = 0; i < nq; i++) {
    h[i] = tg_to_half(c->dtype, (float)tu_rand_normal(&rng));
    rdo[i] = tg_from_half(c->dtype, h[i]);
  }
  for (size_t i = 0; i < rows; i++) rdl[i] = (float)(2 * tu_rand_normal(&rng));
  CUdeviceptr ddo = tg_upload(h, nq * 2), ddl = tg_upload(rdl, rows * 4), g[4] = {0, 0, 0, 0};
  const size_t n[4] = {nq, nk, nk, nb};
  for (int i = 0; i < 4; i++)
    if (n[i]) CU(tg_drv->cuMemAlloc(&g[i], n[i] * 2));
  const int64_t qs[4] = {c->B, c->Hq, c->Tq, c->D}, ks[4] = {c->B, c->Hkv, c->Tk, c->D};
  const int64_t ls[3] = {c->B, c->Hq, c->Tq}, bs[4] = {c->B, c->Hq, c->Tq, c->Tk};
  sfa_tensor tdo, tdl, tg[4];
  sfa_tensor_init(&tdo, (void *)(uintptr_t)ddo, c->dtype, 4, qs);
  sfa_tensor_init(&tdl, (void *)(uintptr_t)ddl, SFA_DTYPE_FP32, 3, ls);
  sfa_tensor_init(&tg[0], (void *)(uintptr_t)g[0], c->dtype, 4, qs);
  sfa_tensor_init(&tg[1], (void *)(uintptr_t)g[1], c->dtype, 4, ks);
  sfa_tensor_init(&tg[2], (void *)(uintptr_t)g[2], c->dtype, 4, ks);
  sfa_tensor_init(&tg[3], (void *)(uintptr_t)g[3], c->dtype, 4, bs);
  float *ref[4];
  for (int i = 0; i < 4; i++) ck_assert_ptr_nonnull(ref[i] = malloc(n[i] ? n[i] * 4 : 4));
  char why[512];
  ck_assert_msg(sfa_reference_backward_dlse(&R.p, c->B, c->Hq, c->Hkv, c->Tq, c->Tk, c->D, R.rq,
                                            R.rk, R.rv, R.has_ex ? &R.hx : NULL, rdo, rdl,
                                            ref[0], ref[1], ref[2], nb ? ref[3] : NULL, why,
                                            sizeof why) == SFA_OK, "%s: %s", R.desc, why);
  OK_OR_ABORT(sfa_forward(tg_ctx, &R.p, &R.tq, &R.tk, &R.tv, R.has_ex ? &R.ex : NULL, &R.to,
                          &R.tl, NULL), R.desc);
  for (int det = 0; det < 2; det++) {
    R.p.deterministic = det;
    for (int i = 0; i < 4; i++)
      if (n[i]) CU(tg_drv->cuMemsetD8(g[i], 0xFF, n[i] * 2));
    OK_OR_ABORT(sfa_backward_dlse(tg_ctx, &R.p, &R.tq, &R.tk, &R.tv, R.has_ex ? &R.ex : NULL,
                                  &R.to, &R.tl, &tdo, &tdl, &tg[0], &tg[1], &tg[2],
                                  nb ? &tg[3] : NULL, NULL), R.desc);
    CU(tg_drv->cuCtxSynchronize());
    double e[4] = {0, 0, 0, 0};
    long nan = 0;
    for (int i = 0; i < 4; i++) {
      if (!n[i]) continue;
      uint16_t *got = malloc(n[i] * 2);
      ck_assert_ptr_nonnull(got);
      CU(tg_drv->cuMemcpyDtoH(got, g[i], n[i] * 2));
      e[i] = tg_rel_err(c->dtype, got, ref[i], n[i], &nan);
      free(got);
    }
    const double tol = tg_tol_bwd(c->dtype);
    printf("dlse %s det=%d: dq %.2e dk %.2e dv %.2e dbias %.2e\n", R.desc, det, e[0], e[1], e[2],
           e[3]);
    ck_assert_msg(nan == 0 && e[0] < tol && e[1] < tol && e[2] < tol && e[3] < tol,
                  "%s det=%d: rel err dq %.3e dk %.3e dv %.3e dbias %.3e (tol %.0e), %ld NaN",
                  R.desc, det, e[0], e[1], e[2], e[3], tol, nan);
  }
  for (int i = 0; i < 4; i++) {
    free(ref[i]);
    if (g[i]) tg_drv->cuMemFree(g[i]);
  }
  tg_drv->cuMemFree(ddo), tg_drv->cuMemFree(ddl);
  free(h), free(rdo), free(rdl);
  tg_case_free(&R);
}

START_TEST(backward_with_an_lse_gradient) {
  scase c = tg_case(SFA_MODE_DENSE, 2, 200, 150, 64, SFA_DTYPE_BF16);  /* 50 rows see nothing */
  c.causal = 1, c.seed = tg_seed + 5000;
  dlse_case(&c);
  if (small_run()) return;
  c = tg_case(SFA_MODE_DENSE, 4, 257, 300, 128, SFA_DTYPE_FP16);
  c.seed = tg_seed + 5001;
  dlse_case(&c);
  const tg_wspec w = {64, 0, 1, 200, 200, 64, 1, 2, BIAS_HEAD, MASK_NONE, 1.0};
  c = tg_window_case(&w, tg_seed + 5002);  /* dbias gets P * dlse too */
  dlse_case(&c);
  c = tg_case(SFA_MODE_HASH, 2, 300, 300, 64, SFA_DTYPE_BF16);
  c.buckets = 4, c.seed = tg_seed + 5003;
  dlse_case(&c);
}
END_TEST

/* ------------------------------------------------------------ perf */

static double time_merge(const sfa_tensor *op, const sfa_tensor *lp, const sfa_tensor *o,
                         const sfa_tensor *l) {
  CUevent e0, e1;
  CU(tg_drv->cuEventCreate(&e0, 0));
  CU(tg_drv->cuEventCreate(&e1, 0));
  OK_OR_ABORT(sfa_merge_attention(tg_ctx, op, lp, o, l, NULL), "warm-up");
  CU(tg_drv->cuEventRecord(e0, NULL));
  for (int i = 0; i < 20; i++) OK_OR_ABORT(sfa_merge_attention(tg_ctx, op, lp, o, l, NULL), "perf");
  CU(tg_drv->cuEventRecord(e1, NULL));
  CU(tg_drv->cuEventSynchronize(e1));
  float ms = 0;
  CU(tg_drv->cuEventElapsedTime(&ms, e0, e1));
  tg_drv->cuEventDestroy(e0);
  tg_drv->cuEventDestroy(e1);
  return ms / 20;
}

static void perf_case(const char *what, int N, int B, int H, int T, int D, sfa_dtype in,
                      sfa_dtype out) {
  const size_t rows = (size_t)B * H * T;
  const size_t bop = (size_t)N * rows * D * esize(in), bo = rows * D * esize(out);
  CUdeviceptr p[4];
  CU(tg_drv->cuMemAlloc(&p[0], bop));
  CU(tg_drv->cuMemAlloc(&p[1], (size_t)N * rows * 4));
  CU(tg_drv->cuMemAlloc(&p[2], bo));
  CU(tg_drv->cuMemAlloc(&p[3], rows * 4));
  CU(tg_drv->cuMemsetD8(p[0], 0x3c, bop));  /* finite values */
  CU(tg_drv->cuMemsetD8(p[1], 0x3f, (size_t)N * rows * 4));
  int64_t s0[4] = {(int64_t)N * B, H, T, D}, s1[3] = {(int64_t)N * B, H, T}, s2[4] = {B, H, T, D},
          s3[3] = {B, H, T};
  sfa_tensor op, lp, o, l;
  sfa_tensor_init(&op, (void *)(uintptr_t)p[0], in, 4, s0);
  sfa_tensor_init(&lp, (void *)(uintptr_t)p[1], SFA_DTYPE_FP32, 3, s1);
  sfa_tensor_init(&o, (void *)(uintptr_t)p[2], out, 4, s2);
  sfa_tensor_init(&l, (void *)(uintptr_t)p[3], SFA_DTYPE_FP32, 3, s3);
  const double ms = time_merge(&op, &lp, &o, &l);
  const double bytes = (double)bop + (double)N * rows * 4 + (double)bo + rows * 4;
  printf("perf: %s: N=%d [%d, %d, %d, %d] %s -> %s: %.3f ms, %.0f GB/s\n", what, N, B, H, T, D,
         sfa_dtype_name(in), sfa_dtype_name(out), ms, bytes / ms / 1e6);
  for (int i = 0; i < 4; i++) tg_drv->cuMemFree(p[i]);
}

START_TEST(perf) {
  if (small_run()) return;
  perf_case("split-KV combine", 64, 16, 32, 1, 128, SFA_DTYPE_FP32, SFA_DTYPE_BF16);
  perf_case("split-KV combine", 16, 64, 32, 4, 128, SFA_DTYPE_FP32, SFA_DTYPE_BF16);
  perf_case("ring step", 2, 2, 16, 8192, 128, SFA_DTYPE_BF16, SFA_DTYPE_BF16);
  perf_case("ring step", 2, 2, 16, 8192, 64, SFA_DTYPE_FP16, SFA_DTYPE_FP16);
}
END_TEST

int main(void) {
  int rc = tg_open("gpu_merge", 0x3E76E);
  if (rc != 0) return rc;
  Suite *s = suite_create("gpu_merge");
  TCase *t = tu_untimed_case(s, "merge", merge_of_a_key_split_is_the_whole_attention);
  tcase_add_test(t, random_partials_every_dtype_pair);
  tcase_add_test(t, parts_sizes_and_layouts);
  tcase_add_test(t, backward_with_an_lse_gradient);
  tcase_add_test(t, perf);
  rc = tu_run_suite(s);
  tg_close();
  return rc;
}
