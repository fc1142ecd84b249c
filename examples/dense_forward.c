/*
** dense_forward.c -- example host program: JIT-compiles the dense forward
** kernel through sfa, runs it on random data, checks it against the float64 CPU
** reference and times it.
**
**   dense_forward [--batch B] [--heads H] [--kv-heads H] [--seq T] [--seq-k T]
**                 [--dim D] [--dtype bf16|fp16] [--causal|--no-causal]
**                 [--iters N] [--check|--no-check] [--verbose] [--help]
**
** It uses the public API (sfa.h) plus the CUDA driver API directly for memory,
** streams and events, loaded with dlopen (cuda_loader.h) as libsfa does: the
** program links no CUDA library, so --help and argument errors work on a
** machine without a driver. Exit status 0 only if the run (and the check)
** passed.
*/
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sfa.h"
#include "cuda_loader.h"

static cuda_api cu_api; /* filled by cuda_load before the first CUDA call */

/* ------------------------------------------------------------ options */

typedef struct opts {
  int batch, heads, kv_heads, seq, seq_k, dim, iters, causal, check, verbose;
  sfa_dtype dtype;
} opts;

static void usage(FILE *f) {
  fprintf(f,
          "usage: dense_forward [options]\n"
          "  --batch B        batch size (4)\n"
          "  --heads H        query heads (16)\n"
          "  --kv-heads H     key/value heads, divides --heads (= --heads)\n"
          "  --seq T          query length (4096)\n"
          "  --seq-k T        key length (= --seq)\n"
          "  --dim D          head dim: 32, 64, 96, 128, 256, ... (128)\n"
          "  --dtype bf16|fp16  (bf16)\n"
          "  --causal | --no-causal  bottom-right causal mask (on)\n"
          "  --iters N        timed launches (20); 0 skips timing\n"
          "  --check | --no-check  compare with the float64 CPU reference (on)\n"
          "  --verbose        sfa prints compile and cache notes\n"
          "  --help\n");
}

static int int_arg(int argc, char **argv, int *i, int lo, int *out) {
  if (*i + 1 >= argc) {
    fprintf(stderr, "dense_forward: %s needs a value\n", argv[*i]);
    return 0;
  }
  char *end;
  long v = strtol(argv[*i + 1], &end, 10);
  if (*argv[*i + 1] == '\0' || *end || v < lo || v > INT32_MAX) {
    fprintf(stderr, "dense_forward: %s: '%s' is not an integer >= %d\n", argv[*i],
            argv[*i + 1], lo);
    return 0;
  }
  *out = (int)v;
  (*i)++;
  return 1;
}

/* 0 = ok, 1 = error, 2 = --help. */
static int parse(int argc, char **argv, opts *o) {
  *o = (opts){.batch = 4, .heads = 16, .kv_heads = 0, .seq = 4096, .seq_k = 0, .dim = 128,
              .iters = 20, .causal = 1, .check = 1, .dtype = SFA_DTYPE_BF16};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    int ok = 1;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) return 2;
    else if (!strcmp(a, "--batch")) ok = int_arg(argc, argv, &i, 1, &o->batch);
    else if (!strcmp(a, "--heads")) ok = int_arg(argc, argv, &i, 1, &o->heads);
    else if (!strcmp(a, "--kv-heads")) ok = int_arg(argc, argv, &i, 1, &o->kv_heads);
    else if (!strcmp(a, "--seq")) ok = int_arg(argc, argv, &i, 1, &o->seq);
    else if (!strcmp(a, "--seq-k")) ok = int_arg(argc, argv, &i, 1, &o->seq_k);
    else if (!strcmp(a, "--dim")) ok = int_arg(argc, argv, &i, 1, &o->dim);
    else if (!strcmp(a, "--iters")) ok = int_arg(argc, argv, &i, 0, &o->iters);
    else if (!strcmp(a, "--causal")) o->causal = 1;
    else if (!strcmp(a, "--no-causal")) o->causal = 0;
    else if (!strcmp(a, "--check")) o->check = 1;
    else if (!strcmp(a, "--no-check")) o->check = 0;
    else if (!strcmp(a, "--verbose")) o->verbose = 1;
    else if (!strcmp(a, "--dtype")) {
      const char *v = i + 1 < argc ? argv[++i] : "";
      if (!strcmp(v, "bf16")) o->dtype = SFA_DTYPE_BF16;
      else if (!strcmp(v, "fp16")) o->dtype = SFA_DTYPE_FP16;
      else {
        fprintf(stderr, "dense_forward: --dtype: '%s'; must be bf16 or fp16\n", v);
        ok = 0;
      }
    } else {
      fprintf(stderr, "dense_forward: unknown option '%s'\n", a);
      ok = 0;
    }
    if (!ok) return 1;
  }
  if (!o->kv_heads) o->kv_heads = o->heads;
  if (!o->seq_k) o->seq_k = o->seq;
  if (o->heads % o->kv_heads) {
    fprintf(stderr, "dense_forward: --kv-heads %d does not divide --heads %d\n", o->kv_heads,
            o->heads);
    return 1;
  }
  return 0;
}

/* ------------------------------------------------------------ host data */

static uint64_t rng = 0x5FA5FA5FA5FA5FA5ull;

static double rand_uniform(void) {
  rng ^= rng >> 12;
  rng ^= rng << 25;
  rng ^= rng >> 27;
  return (double)((rng * 0x2545F4914F6CDD1Dull) >> 11) * (1.0 / 9007199254740992.0);
}

static double rand_normal(void) {
  double u1 = rand_uniform(), u2 = rand_uniform();
  if (u1 < 1e-300) u1 = 1e-300;
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* float <-> bf16 / fp16 bit patterns, rounding to nearest even. */
static uint16_t to_bf16(float f) { return sfa_float_to_half(SFA_DTYPE_BF16, f); }
static float from_bf16(uint16_t h) { return sfa_half_to_float(SFA_DTYPE_BF16, h); }
static uint16_t to_fp16(float f) { return sfa_float_to_half(SFA_DTYPE_FP16, f); }
static float from_fp16(uint16_t h) { return sfa_half_to_float(SFA_DTYPE_FP16, h); }

static uint16_t to_half(sfa_dtype t, float f) { return t == SFA_DTYPE_BF16 ? to_bf16(f) : to_fp16(f); }
static float from_half(sfa_dtype t, uint16_t h) { return t == SFA_DTYPE_BF16 ? from_bf16(h) : from_fp16(h); }

/* ------------------------------------------------------------ CUDA helpers */

static int cu_ok(CUresult r, const char *what) {
  if (r == CUDA_SUCCESS) return 1;
  const char *name = "?", *desc = "?";
  cu_api.GetErrorName(r, &name);
  cu_api.GetErrorString(r, &desc);
  fprintf(stderr, "dense_forward: %s: %s (%s)\n", what, name, desc);
  return 0;
}

#define CU(call) do { if (!cu_ok((call), #call)) goto out; } while (0)

/* ------------------------------------------------------------ check */

typedef struct errs {
  double diff2, ref2, max_abs, lse_max;
  long nan, bad_empty;
  long rows;
} errs;

/* Compare rows [r0, r1) of slice (b, h) with the reference. With a causal mask
** the reference sees rows [r0, r1) and keys [0, r1 + Tk - Tq): the same
** bottom-right alignment as the full problem. */
static int check_rows(const opts *o, const sfa_attention_params *p, const uint16_t *hq,
                      const uint16_t *hk, const uint16_t *hv, const uint16_t *ho,
                      const float *hlse, int b, int h, int r0, int r1, errs *e) {
  const int D = o->dim, Tq = o->seq, Tk = o->seq_k, hk_i = h / (o->heads / o->kv_heads);
  int nq = r1 - r0, nk = o->causal ? r1 + Tk - Tq : Tk;
  if (nk > Tk) nk = Tk;
  size_t qoff = (((size_t)b * o->heads + h) * Tq + r0) * D;
  size_t koff = ((size_t)b * o->kv_heads + hk_i) * Tk * D;
  size_t loff = ((size_t)b * o->heads + h) * Tq + r0;
  float *q = malloc((size_t)nq * D * sizeof *q), *out = malloc((size_t)nq * D * sizeof *out);
  float *lse = malloc((size_t)nq * sizeof *lse);
  float *k = NULL, *v = NULL;
  int ok = 0;
  if (!q || !out || !lse) goto done;
  if (nk < 1) { /* every row sees no key */
    memset(out, 0, (size_t)nq * D * sizeof *out);
    for (int i = 0; i < nq; i++) lse[i] = -INFINITY;
  } else {
    k = malloc((size_t)nk * D * sizeof *k);
    v = malloc((size_t)nk * D * sizeof *v);
    if (!k || !v) goto done;
    for (size_t i = 0; i < (size_t)nq * D; i++) q[i] = from_half(o->dtype, hq[qoff + i]);
    for (size_t i = 0; i < (size_t)nk * D; i++) {
      k[i] = from_half(o->dtype, hk[koff + i]);
      v[i] = from_half(o->dtype, hv[koff + i]);
    }
    char why[512];
    if (sfa_reference_forward(p, 1, 1, 1, nq, nk, D, q, k, v, NULL, out, lse, why,
                              sizeof why) != SFA_OK) {
      fprintf(stderr, "dense_forward: reference: %s\n", why);
      goto done;
    }
  }
  for (int i = 0; i < nq; i++) {
    int empty = isinf(lse[i]) && lse[i] < 0;
    float gl = hlse[loff + i];
    if (empty) {
      if (!(isinf(gl) && gl < 0)) e->bad_empty++;
    } else if (isnan(gl)) {
      e->nan++;
    } else {
      double d = fabs((double)gl - lse[i]);
      if (!(d <= e->lse_max)) e->lse_max = d; /* inf too */
    }
    for (int x = 0; x < D; x++) {
      double g = from_half(o->dtype, ho[qoff + (size_t)i * D + x]), r = out[(size_t)i * D + x];
      if (isnan(g)) {
        e->nan++;
        continue;
      }
      if (empty && g != 0) e->bad_empty++;
      double d = fabs(g - r);
      e->diff2 += d * d;
      e->ref2 += r * r;
      if (d > e->max_abs) e->max_abs = d;
    }
  }
  e->rows += nq;
  ok = 1;
done:
  free(q);
  free(out);
  free(lse);
  free(k);
  free(v);
  if (!ok) fprintf(stderr, "dense_forward: check of slice (%d, %d) failed to run\n", b, h);
  return ok;
}

/* Check everything when it is cheap, else a few (b, h) slices, and of those
** all rows or (for long sequences) the first and last row blocks. */
static int check(const opts *o, const sfa_attention_params *p, const uint16_t *hq,
                 const uint16_t *hk, const uint16_t *hv, const uint16_t *ho, const float *hlse) {
  const double budget = 1.5e9; /* multiply-adds the reference may spend */
  const int Tq = o->seq, Tk = o->seq_k, D = o->dim;
  double slice_cost = 2.0 * Tq * (double)Tk * D;
  int nslices = o->batch * o->heads;
  int pick[3][2] = {{0, 0}, {o->batch / 2, o->heads / 2}, {o->batch - 1, o->heads - 1}};
  int npick = 3;
  if (slice_cost * nslices <= budget) npick = 0; /* all slices */
  int block = Tq;
  if (npick && slice_cost * 3 > budget) {
    block = (int)(budget / 6 / (2.0 * Tk * D)); /* two blocks in three slices */
    if (block < 16) block = 16;
    if (2 * block >= Tq) block = Tq;
  }
  errs e = {0};
  int checked = 0;
  for (int s = 0; s < (npick ? npick : nslices); s++) {
    int b = npick ? pick[s][0] : s / o->heads, h = npick ? pick[s][1] : s % o->heads;
    int dup = 0;
    for (int t = 0; t < s && npick; t++) dup |= pick[t][0] == b && pick[t][1] == h;
    if (dup) continue;
    checked++;
    if (block == Tq) {
      if (!check_rows(o, p, hq, hk, hv, ho, hlse, b, h, 0, Tq, &e)) return 0;
    } else if (!check_rows(o, p, hq, hk, hv, ho, hlse, b, h, 0, block, &e) ||
               !check_rows(o, p, hq, hk, hv, ho, hlse, b, h, Tq - block, Tq, &e)) {
      return 0;
    }
  }
  double rel = e.ref2 > 0 ? sqrt(e.diff2 / e.ref2) : sqrt(e.diff2);
  double tol = o->dtype == SFA_DTYPE_BF16 ? 1e-2 : 5e-3;
  int pass = e.nan == 0 && e.bad_empty == 0 && rel < tol && e.lse_max < 1e-2;
  if (block == Tq)
    printf("check: %d of %d (b, h) slices, all rows\n", checked, nslices);
  else
    printf("check: %d of %d (b, h) slices, rows 0..%d and %d..%d of each\n", checked, nslices,
           block - 1, Tq - block, Tq - 1);
  printf("check: rel_err=%.3e max_abs=%.3e lse_max_err=%.3e nan=%ld bad_empty_rows=%ld %s\n",
         rel, e.max_abs, e.lse_max, e.nan, e.bad_empty, pass ? "PASS" : "FAIL");
  return pass;
}

/* ------------------------------------------------------------ main */

static int cmp_float(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  opts o;
  int rc = parse(argc, argv, &o);
  if (rc) {
    usage(rc == 2 ? stdout : stderr);
    return rc == 2 ? 0 : 2;
  }
  const int B = o.batch, Hq = o.heads, Hkv = o.kv_heads, Tq = o.seq, Tk = o.seq_k, D = o.dim;
  const size_t nq = (size_t)B * Hq * Tq * D, nk = (size_t)B * Hkv * Tk * D;
  const size_t nlse = (size_t)B * Hq * Tq;
  int status = 1;
  uint16_t *hq = NULL, *hk = NULL, *hv = NULL, *ho = NULL;
  float *hlse = NULL, *times = NULL;
  CUdeviceptr dq = 0, dk = 0, dv = 0, dout = 0, dlse = 0;
  CUcontext cu = NULL;
  CUdevice dev = 0;
  CUstream stream = NULL;
  CUevent *ev = NULL;
  sfa_context *ctx = NULL;
  int nev = 0;

  /* Inputs: normal random numbers rounded to the kernel's dtype. */
  hq = malloc(nq * 2), hk = malloc(nk * 2), hv = malloc(nk * 2), ho = malloc(nq * 2);
  hlse = malloc(nlse * sizeof *hlse);
  if (!hq || !hk || !hv || !ho || !hlse) {
    fprintf(stderr, "dense_forward: out of host memory\n");
    goto out;
  }
  for (size_t i = 0; i < nq; i++) hq[i] = to_half(o.dtype, (float)rand_normal());
  for (size_t i = 0; i < nk; i++) hk[i] = to_half(o.dtype, (float)rand_normal());
  for (size_t i = 0; i < nk; i++) hv[i] = to_half(o.dtype, (float)rand_normal());

  if (!cuda_load(&cu_api, "dense_forward")) goto out;
  CU(cu_api.Init(0));
  CU(cu_api.DeviceGet(&dev, 0));
  CU(cu_api.DevicePrimaryCtxRetain(&cu, dev));
  CU(cu_api.CtxSetCurrent(cu));
  char devname[128] = "?";
  int major = 0, minor = 0;
  CU(cu_api.DeviceGetName(devname, (int)sizeof devname, dev));
  CU(cu_api.DeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev));
  CU(cu_api.DeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev));
  CU(cu_api.StreamCreate(&stream, CU_STREAM_NON_BLOCKING));
  CU(cu_api.MemAlloc(&dq, nq * 2));
  CU(cu_api.MemAlloc(&dk, nk * 2));
  CU(cu_api.MemAlloc(&dv, nk * 2));
  CU(cu_api.MemAlloc(&dout, nq * 2));
  CU(cu_api.MemAlloc(&dlse, nlse * sizeof(float)));
  CU(cu_api.MemcpyHtoD(dq, hq, nq * 2));
  CU(cu_api.MemcpyHtoD(dk, hk, nk * 2));
  CU(cu_api.MemcpyHtoD(dv, hv, nk * 2));
  CU(cu_api.MemsetD8(dout, 0xFF, nq * 2)); /* NaN everywhere: unwritten output fails the check */
  CU(cu_api.MemsetD8(dlse, 0xFF, nlse * sizeof(float)));

  sfa_options so;
  sfa_options_init(&so);
  so.verbose = o.verbose;
  if (sfa_context_create(&ctx, &so) != SFA_OK) {
    fprintf(stderr, "dense_forward: sfa_context_create: %s\n", ctx ? sfa_last_error(ctx) : "");
    goto out;
  }
  int64_t qshape[4] = {B, Hq, Tq, D}, kshape[4] = {B, Hkv, Tk, D}, lshape[3] = {B, Hq, Tq};
  sfa_tensor tq, tk, tv, to, tl;
  sfa_tensor_init(&tq, (void *)(uintptr_t)dq, o.dtype, 4, qshape);
  sfa_tensor_init(&tk, (void *)(uintptr_t)dk, o.dtype, 4, kshape);
  sfa_tensor_init(&tv, (void *)(uintptr_t)dv, o.dtype, 4, kshape);
  sfa_tensor_init(&to, (void *)(uintptr_t)dout, o.dtype, 4, qshape);
  sfa_tensor_init(&tl, (void *)(uintptr_t)dlse, SFA_DTYPE_FP32, 3, lshape);
  sfa_attention_params p;
  sfa_params_init(&p);
  p.causal = o.causal;

  /* The variant sfa_forward picks, for the record. */
  sfa_kernel_spec spec = {.pass = SFA_PASS_FWD, .mode = SFA_MODE_DENSE, .dtype = o.dtype,
                          .head_dim = D, .arch = major * 10 + minor > 90 ? 90 : major * 10 + minor,
                          .flags = o.causal ? SFA_FEAT_CAUSAL : 0};
  char kname[128] = "?";
  if (sfa_spec_default(&spec, NULL, 0) == SFA_OK) sfa_spec_name(&spec, kname, sizeof kname);
  printf("dense_forward: B=%d Hq=%d Hkv=%d Tq=%d Tk=%d D=%d %s %s on %s (sm_%d%d)\n", B, Hq,
         Hkv, Tq, Tk, D, o.dtype == SFA_DTYPE_BF16 ? "bf16" : "fp16",
         o.causal ? "causal" : "non-causal", devname, major, minor);
  printf("kernel: %s\n", kname);

  sfa_status st = sfa_forward(ctx, &p, &tq, &tk, &tv, NULL, &to, &tl, stream);
  if (st != SFA_OK) {
    fprintf(stderr, "dense_forward: sfa_forward: %s: %s\n", sfa_status_string(st),
            sfa_last_error(ctx));
    goto out;
  }
  CU(cu_api.StreamSynchronize(stream));

  int pass = 1;
  if (o.check) {
    CU(cu_api.MemcpyDtoH(ho, dout, nq * 2));
    CU(cu_api.MemcpyDtoH(hlse, dlse, nlse * sizeof(float)));
    pass = check(&o, &p, hq, hk, hv, ho, hlse);
  }

  if (o.iters > 0) {
    const int warmup = 3;
    nev = 2 * o.iters;
    ev = calloc((size_t)nev, sizeof *ev);
    times = malloc((size_t)o.iters * sizeof *times);
    if (!ev || !times) goto out;
    for (int i = 0; i < nev; i++) CU(cu_api.EventCreate(&ev[i], CU_EVENT_DEFAULT));
    for (int i = 0; i < warmup; i++)
      if (sfa_forward(ctx, &p, &tq, &tk, &tv, NULL, &to, &tl, stream) != SFA_OK) goto fwd_fail;
    for (int i = 0; i < o.iters; i++) {
      CU(cu_api.EventRecord(ev[2 * i], stream));
      if (sfa_forward(ctx, &p, &tq, &tk, &tv, NULL, &to, &tl, stream) != SFA_OK) goto fwd_fail;
      CU(cu_api.EventRecord(ev[2 * i + 1], stream));
    }
    CU(cu_api.StreamSynchronize(stream));
    for (int i = 0; i < o.iters; i++) CU(cu_api.EventElapsedTime(&times[i], ev[2 * i], ev[2 * i + 1]));
    qsort(times, (size_t)o.iters, sizeof *times, cmp_float);
    double ms = o.iters % 2 ? times[o.iters / 2]
                            : 0.5 * (times[o.iters / 2 - 1] + times[o.iters / 2]);
    double pairs = 0; /* allowed (query, key) pairs of one head */
    if (o.causal) {
      for (int i = 0; i < Tq; i++) {
        long n = (long)i + Tk - Tq + 1;
        pairs += n < 0 ? 0 : n > Tk ? Tk : n;
      }
    } else {
      pairs = (double)Tq * Tk;
    }
    double flops = 4.0 * B * Hq * D * pairs;
    printf("time: %.4f ms  TF/s: %.1f  (median of %d, min %.4f ms)\n", ms,
           ms > 0 ? flops / (ms * 1e-3) / 1e12 : 0.0, o.iters, times[0]);
  }
  status = pass ? 0 : 1;
  goto out;

fwd_fail:
  fprintf(stderr, "dense_forward: sfa_forward: %s\n", sfa_last_error(ctx));
out:
  for (int i = 0; ev && i < nev; i++)
    if (ev[i]) cu_api.EventDestroy(ev[i]);
  sfa_context_destroy(ctx);
  if (dq) cu_api.MemFree(dq);
  if (dk) cu_api.MemFree(dk);
  if (dv) cu_api.MemFree(dv);
  if (dout) cu_api.MemFree(dout);
  if (dlse) cu_api.MemFree(dlse);
  if (stream) cu_api.StreamDestroy(stream);
  if (cu) cu_api.DevicePrimaryCtxRelease(dev);
  free(ev);
  free(times);
  free(hq);
  free(hk);
  free(hv);
  free(ho);
  free(hlse);
  return status;
}
