/*
** reference.c -- sfa_reference_forward: the float64 CPU reference of the
** forward pass. It defines correctness: every GPU kernel is compared with it.
** Masking: each mode's rule of the mode table (gen/mode.c,
** docs/semantics.md), asked for every (query row, key) pair; the window's mask is read at
** mask[b or 0, hm, i or 0, j]. The score is x = s * scale, then c tanh(x / c)
** with a softcap c, minus slope[b or 0, h] |i + Tk - Tq - j| with ALiBi slopes,
** plus bias[b or 0, hb, i or 0, j] where a bias is given.
** Query head h reads kv head h / (Hq / Hkv); a bias or mask with `heads` heads
** is read at head h (heads = Hq), h / (Hq / Hkv) (heads = Hkv) or 0 (heads = 1),
** and with `batches` = 1 at batch 0 for every b.
** A row with no allowed key gets o = 0 and lse = -inf; so does a row whose
** allowed keys all score -inf (a bias of -inf masks a key, as on the GPU).
** The checks, the rule and one row of the pass live here as sfa__ref_* (see
** reference.h) because the backward reference (reference_bwd.c) uses them too.
*/
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sfa.h"
#include "gen/gen_internal.h"
#include "gen/mode.h"
#include "runtime/parallel.h"
#include "runtime/reference.h"
#include "runtime/validate.h"

/* bias_batches / mask_batches, _heads and _rows of the window extras. */
static sfa_status check_broadcast(const char *nm, int batches, int heads, int rows, int B,
                                  int Hq, int Hkv, int Tq, char *err, size_t errlen) {
  if (batches != 0 && batches != 1 && batches != B)
    return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT,
                "ex->%s_batches: %d; must be B (%d) or 1 (0 means B)", nm, batches, B);
  if (heads != Hq && heads != Hkv && heads != 1)
    return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT,
                "ex->%s_heads: %d; must be Hq (%d), Hkv (%d) or 1", nm, heads, Hq, Hkv);
  if (rows != Tq && rows != 1)
    return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT,
                "ex->%s_rows: %d; must be Tq (%d) or 1", nm, rows, Tq);
  return SFA_OK;
}

/* The members of ex that the mode reads (the mode table) are set where it
** needs them, the others NULL; the broadcast shapes of a bias and a mask. */
static sfa_status check_extras(const sfa_attention_params *p, int B, int Hq, int Hkv, int Tq,
                               const sfa_host_extras *ex, char *err, size_t errlen) {
  const sfa_status bad = SFA_ERR_INVALID_ARGUMENT;
  const sfa__mode *m = sfa__mode_find(p->mode);
  size_t ne = 0;
  const sfa__extra *e = sfa__extras(&ne);
  for (size_t i = 0; i < ne; i++) {
    const void *ptr = sfa__extra_host(&e[i], ex);
    if ((m->needs & e[i].bit) && !ptr)
      return sfa__fail(err, errlen, bad, "%s%s: is NULL (mode %s needs it)", ex ? "ex->" : "ex: ",
                       e[i].name, m->name);
    if (!(m->reads & e[i].bit) && ptr) {
      char who[96];
      sfa__mode_list(who, sizeof who, 0, " and ", sfa__mode_reads_all, e[i].bit);
      return sfa__fail(err, errlen, bad, "ex->%s: only mode %s reads it; must be NULL in mode %s",
                       e[i].name, who, m->name);
    }
  }
  sfa_status st;
  if (ex && ex->bias &&
      (st = check_broadcast("bias", ex->bias_batches, ex->bias_heads, ex->bias_rows, B, Hq, Hkv,
                            Tq, err, errlen)))
    return st;
  if (ex && ex->mask &&
      (st = check_broadcast("mask", ex->mask_batches, ex->mask_heads, ex->mask_rows, B, Hq, Hkv,
                            Tq, err, errlen)))
    return st;
  if (ex && ex->alibi_slopes && ex->alibi_batches != 0 && ex->alibi_batches != 1 &&
      ex->alibi_batches != B)
    return sfa__fail(err, errlen, bad, "ex->alibi_batches: %d; must be B (%d) or 1 (0 means B)",
                     ex->alibi_batches, B);
  return SFA_OK;
}

static sfa_status check_args(const sfa_attention_params *p, int B, int Hq, int Hkv, int Tq,
                             int Tk, int D, const float *q, const float *k, const float *v,
                             const sfa_host_extras *ex, const sfa__ref_arg *arrays, int narrays,
                             char *err, size_t errlen) {
  const sfa_status bad = SFA_ERR_INVALID_ARGUMENT;
  if (!p) return sfa__fail(err, errlen, bad, "params: is NULL");
  if (!q) return sfa__fail(err, errlen, bad, "q: is NULL");
  if (!k) return sfa__fail(err, errlen, bad, "k: is NULL");
  if (!v) return sfa__fail(err, errlen, bad, "v: is NULL");
  for (int i = 0; i < narrays; i++)
    if (!arrays[i].ptr) return sfa__fail(err, errlen, bad, "%s: is NULL", arrays[i].name);
  const struct { const char *name; int value; } sizes[] = {
    {"B", B}, {"Hq", Hq}, {"Hkv", Hkv}, {"Tq", Tq}, {"Tk", Tk}, {"D", D}};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
    if (sizes[i].value < 1)
      return sfa__fail(err, errlen, bad, "%s: %d; must be >= 1", sizes[i].name, sizes[i].value);
  if (Hq % Hkv != 0)
    return sfa__fail(err, errlen, bad, "Hkv: %d does not divide Hq (%d)", Hkv, Hq);
  sfa_status st = sfa__check_params(p, err, errlen); /* sfa_forward's rules */
  if (st != SFA_OK) return st;
  double total = (double)B * (double)(Hq > Hkv ? Hq : Hkv) * (double)(Tq > Tk ? Tq : Tk) * D;
  if (total > (double)(SIZE_MAX / sizeof(double) / 2))
    return sfa__fail(err, errlen, bad, "B*H*T*D: %g elements do not fit in memory", total);
  return check_extras(p, B, Hq, Hkv, Tq, ex, err, errlen);
}

sfa_status sfa__ref_setup(sfa__ref *r, const sfa_attention_params *params, int B, int Hq,
                          int Hkv, int Tq, int Tk, int D, const float *q, const float *k,
                          const float *v, const sfa_host_extras *ex, const sfa__ref_arg *arrays,
                          int narrays, char *err, size_t errlen) {
  sfa_status st = check_args(params, B, Hq, Hkv, Tq, Tk, D, q, k, v, ex, arrays, narrays, err,
                             errlen);
  if (st != SFA_OK) return st;
  const sfa__mode *m = sfa__mode_find(params->mode);
  memset(r, 0, sizeof *r);
  r->mode = params->mode;
  r->m = m;
  r->B = B, r->Hq = Hq, r->Hkv = Hkv, r->Tq = Tq, r->Tk = Tk, r->D = D;
  r->group = Hq / Hkv;
  r->causal = (m->flags & SFA_FEAT_CAUSAL) && params->causal;
  r->strict = params->strict_causal; /* validated: only where the mode takes it */
  r->softcap = params->softcap;
  r->wl = params->window_left, r->wr = params->window_right, r->off = (int64_t)Tk - Tq;
  r->scale = params->scale > 0 ? (double)params->scale : 1.0 / sqrt((double)D);
  r->q = q, r->k = k, r->v = v;
  /* check_extras left NULL every member the mode does not read */
  if (ex) {
    r->q_idx = ex->q_idx, r->k_idx = ex->k_idx;
    r->q_hash = ex->q_hash, r->k_hash = ex->k_hash;
  }
  if (ex && ex->bias) {
    r->bias = ex->bias;
    r->bias_batches = ex->bias_batches ? ex->bias_batches : B;
    r->bias_heads = ex->bias_heads, r->bias_rows = ex->bias_rows;
  }
  if (ex && ex->alibi_slopes) {
    r->alibi = ex->alibi_slopes;
    r->alibi_batches = ex->alibi_batches ? ex->alibi_batches : B;
  }
  if (ex && ex->mask) {
    r->mask = ex->mask;
    r->mask_batches = ex->mask_batches ? ex->mask_batches : B;
    r->mask_heads = ex->mask_heads, r->mask_rows = ex->mask_rows;
  }
  return SFA_OK;
}

size_t sfa__ref_bcast_row(const sfa__ref *r, int batches, int heads, int rows, int b, int h,
                          int i) {
  int bb = batches == 1 ? 0 : b;
  int hb = heads == r->Hq ? h : heads == 1 ? 0 : h / r->group;
  int row = rows == 1 ? 0 : i;
  return (((size_t)bb * heads + hb) * rows + row) * r->Tk;
}

double sfa__ref_forward_row(const sfa__ref *r, int b, int h, int i, double *s,
                            double *dcap, unsigned char *allowed, double *o) {
  const int D = r->D, Tk = r->Tk, hk = h / r->group;
  const size_t qrow = ((size_t)b * r->Hq + h) * r->Tq + i; /* row index of (b, h, i) */
  const size_t krow0 = ((size_t)b * r->Hkv + hk) * Tk;
  const float *qi = r->q + qrow * D;
  const float *brow =
      r->bias ? r->bias + sfa__ref_bcast_row(r, r->bias_batches, r->bias_heads, r->bias_rows, b,
                                             h, i)
              : NULL;
  const uint8_t *mrow =
      r->mask ? r->mask + sfa__ref_bcast_row(r, r->mask_batches, r->mask_heads, r->mask_rows, b,
                                             h, i)
              : NULL;
  /* The pair the mode's rule sees: the row's part now, the key's in the loop. */
  sfa__pair pr;
  memset(&pr, 0, sizeof pr);
  pr.diag = (int64_t)i + r->off; /* the key aligned with query i */
  pr.causal = r->causal, pr.strict = r->strict, pr.wl = r->wl, pr.wr = r->wr;
  const double slope = r->alibi ? (double)r->alibi[(r->alibi_batches == 1 ? 0 : b) * r->Hq + h]
                                : 0.0;
  if (r->q_idx) pr.q_idx = r->q_idx[qrow];
  if (r->q_hash) pr.q_hash = r->q_hash[qrow];
  int (*const rule)(const sfa__pair *) = r->m->allowed;
  double m = -INFINITY;
  int any = 0;
  for (int j = 0; j < Tk; j++) {
    pr.j = j;
    if (r->k_idx) pr.k_idx = r->k_idx[krow0 + j];
    if (r->k_hash) pr.k_hash = r->k_hash[krow0 + j];
    pr.masked = mrow && mrow[j] == 0;
    const int ok = rule(&pr);
    allowed[j] = (unsigned char)ok;
    if (!ok) continue;
    any = 1;
    const float *kj = r->k + (krow0 + j) * D;
    double dot = 0;
    for (int x = 0; x < D; x++) dot += (double)qi[x] * (double)kj[x];
    double x = dot * r->scale, d = 1.0;
    if (r->softcap > 0) {
      const double t = tanh(x / r->softcap);
      x = r->softcap * t;
      d = 1.0 - t * t;
    }
    if (r->alibi) x -= slope * (double)llabs(pr.diag - j);
    s[j] = x + (brow ? (double)brow[j] : 0.0);
    if (dcap) dcap[j] = d;
    if (s[j] > m || isnan(s[j])) m = s[j]; /* NaN input gives NaN output */
  }
  memset(o, 0, (size_t)D * sizeof *o);
  if (!any || m == -INFINITY) return -INFINITY; /* no key, or a -inf bias on every one */
  double sum = 0;
  for (int j = 0; j < Tk; j++) {
    if (!allowed[j]) continue;
    const double p = exp(s[j] - m);
    const float *vj = r->v + (krow0 + j) * D;
    sum += p;
    for (int x = 0; x < D; x++) o[x] += p * (double)vj[x];
  }
  for (int x = 0; x < D; x++) o[x] /= sum;
  return m + log(sum);
}

size_t sfa__ref_scratch_bytes(const sfa__ref *r) {
  return (size_t)r->Tk * (2 * sizeof(double) + 1) + 2 * (size_t)r->D * sizeof(double) + 16;
}

void sfa__ref_scratch_split(const sfa__ref *r, void *scratch, double **s, double **dcap,
                            unsigned char **allowed, double **d1, double **d2) {
  double *p = scratch;
  *s = p, p += r->Tk;
  *dcap = p, p += r->Tk;
  *d1 = p, p += r->D;
  *d2 = p, p += r->D;
  *allowed = (unsigned char *)p;
}

/* The rows of one (b, h) of the forward, a unit of sfa__parallel_for. */
typedef struct fwd_job {
  const sfa__ref *r;
  float *o, *lse;
  double *o64, *lse64;
} fwd_job;

static int fwd_unit(void *user, void *scratch, int unit) {
  const fwd_job *j = user;
  const sfa__ref *r = j->r;
  const int b = unit / r->Hq, h = unit % r->Hq, D = r->D;
  double *s, *dcap, *orow, *unused;
  unsigned char *allowed;
  sfa__ref_scratch_split(r, scratch, &s, &dcap, &allowed, &orow, &unused);
  for (int i = 0; i < r->Tq; i++) {
    const size_t row = ((size_t)b * r->Hq + h) * r->Tq + i;
    const double l = sfa__ref_forward_row(r, b, h, i, s, NULL, allowed, orow);
    for (int x = 0; x < D; x++) {
      if (j->o) j->o[row * D + x] = (float)orow[x];
      else j->o64[row * D + x] = orow[x];
    }
    if (j->lse) j->lse[row] = (float)l;
    if (j->lse64) j->lse64[row] = l;
  }
  return 0;
}

/* Both forwards: exactly one of o (float) and o64 (double) is set; lse and
** lse64 may be NULL. Rows of different (b, h) run on parallel threads; each
** row's arithmetic is the same on any number of threads. */
static sfa_status forward(const sfa_attention_params *params, int B, int Hq, int Hkv, int Tq,
                          int Tk, int D, const float *q, const float *k, const float *v,
                          const sfa_host_extras *ex, float *o, float *lse, double *o64,
                          double *lse64, char *err, size_t errlen) {
  sfa__ref r;
  const sfa__ref_arg out = {"o", o ? (const void *)o : (const void *)o64};
  sfa_status st = sfa__ref_setup(&r, params, B, Hq, Hkv, Tq, Tk, D, q, k, v, ex, &out, 1, err,
                                 errlen);
  if (st != SFA_OK) return st;
  fwd_job job = {&r, o, lse, o64, lse64};
  const int nt = sfa__parallel_threads(B * Hq, (double)B * Hq * Tq * Tk * D);
  void *scratch[32];
  const size_t per = sfa__ref_scratch_bytes(&r);
  int ok = 1;
  for (int t = 0; t < nt; t++) ok = (scratch[t] = malloc(per)) != NULL && ok;
  if (ok && sfa__parallel_for(B * Hq, nt, fwd_unit, &job, scratch) != 0) ok = 0;
  for (int t = 0; t < nt; t++) free(scratch[t]);
  if (!ok)
    return sfa__fail(err, errlen, SFA_ERR_OUT_OF_MEMORY, "out of memory (Tk = %d, D = %d)", Tk, D);
  return SFA_OK;
}

sfa_status sfa_reference_forward(const sfa_attention_params *params, int B, int Hq,
                                 int Hkv, int Tq, int Tk, int D, const float *q,
                                 const float *k, const float *v, const sfa_host_extras *ex,
                                 float *o, float *lse, char *err, size_t errlen) {
  return forward(params, B, Hq, Hkv, Tq, Tk, D, q, k, v, ex, o, lse, NULL, NULL, err, errlen);
}

sfa_status sfa__reference_forward64(const sfa_attention_params *params, int B, int Hq, int Hkv,
                                    int Tq, int Tk, int D, const float *q, const float *k,
                                    const float *v, const sfa_host_extras *ex, double *o,
                                    double *lse, char *err, size_t errlen) {
  return forward(params, B, Hq, Hkv, Tq, Tk, D, q, k, v, ex, NULL, NULL, o, lse, err, errlen);
}
