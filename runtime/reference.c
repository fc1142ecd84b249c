/*
** reference.c -- sfa_reference_forward: the float64 CPU reference of the
** forward pass. It defines correctness: every GPU kernel is compared with it.
** Masking rules (DESIGN.md section 2):
**   dense    causal: query i sees key j iff j <= i + Tk - Tq (bottom-right)
**   qk_drop  q_idx[i] >= k_idx[j]; q_idx -1 sees nothing, k_idx INT32_MAX is never seen
**   hash     q_hash[i] == k_hash[j] and the qk_drop rule
** Query head h reads kv head h / (Hq / Hkv). A row with no allowed key gets
** o = 0 and lse = -inf.
*/
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sfa.h"

static sfa_status fail(char *err, size_t errlen, sfa_status st, const char *fmt, ...) {
  if (err && errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return st;
}

/* Does the index rule of qk_drop and hash let query position qi see key kj? */
static int idx_allows(int32_t qi, int32_t kj) {
  return qi != -1 && kj != INT32_MAX && qi >= kj;
}

static sfa_status check_args(const sfa_attention_params *p, int B, int Hq, int Hkv, int Tq,
                             int Tk, int D, const float *q, const float *k, const float *v,
                             const int32_t *q_idx, const int32_t *k_idx, const int32_t *q_hash,
                             const int32_t *k_hash, const float *o, char *err, size_t errlen) {
  const sfa_status bad = SFA_ERR_INVALID_ARGUMENT;
  if (!p) return fail(err, errlen, bad, "params: is NULL");
  if (!q) return fail(err, errlen, bad, "q: is NULL");
  if (!k) return fail(err, errlen, bad, "k: is NULL");
  if (!v) return fail(err, errlen, bad, "v: is NULL");
  if (!o) return fail(err, errlen, bad, "o: is NULL");
  const struct { const char *name; int value; } sizes[] = {
    {"B", B}, {"Hq", Hq}, {"Hkv", Hkv}, {"Tq", Tq}, {"Tk", Tk}, {"D", D}};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
    if (sizes[i].value < 1)
      return fail(err, errlen, bad, "%s: %d; must be >= 1", sizes[i].name, sizes[i].value);
  if (Hq % Hkv != 0)
    return fail(err, errlen, bad, "Hkv: %d does not divide Hq (%d)", Hkv, Hq);
  if (!isfinite(p->scale) || p->scale < 0)
    return fail(err, errlen, bad,
                "params.scale: %g; must be finite and >= 0 (0 means 1/sqrt(D))",
                (double)p->scale);
  double total = (double)B * (double)(Hq > Hkv ? Hq : Hkv) * (double)(Tq > Tk ? Tq : Tk) * D;
  if (total > (double)(SIZE_MAX / sizeof(float) / 2))
    return fail(err, errlen, bad, "B*H*T*D: %g elements do not fit in memory", total);
  switch (p->mode) {
    case SFA_MODE_DENSE: return SFA_OK;
    case SFA_MODE_HASH:
    case SFA_MODE_QK_DROP:
      if (p->mode == SFA_MODE_HASH && !q_hash)
        return fail(err, errlen, bad, "q_hash: is NULL (mode hash needs it)");
      if (p->mode == SFA_MODE_HASH && !k_hash)
        return fail(err, errlen, bad, "k_hash: is NULL (mode hash needs it)");
      if (!q_idx) return fail(err, errlen, bad, "q_idx: is NULL (mode %s needs it)",
                              p->mode == SFA_MODE_HASH ? "hash" : "qk_drop");
      if (!k_idx) return fail(err, errlen, bad, "k_idx: is NULL (mode %s needs it)",
                              p->mode == SFA_MODE_HASH ? "hash" : "qk_drop");
      return SFA_OK;
    case SFA_MODE_WINDOW:
      return fail(err, errlen, SFA_ERR_UNSUPPORTED,
                  "params.mode: window is not implemented in the reference yet");
  }
  return fail(err, errlen, bad, "params.mode: %d is not a mode (dense, qk_drop, hash or window)",
              (int)p->mode);
}

sfa_status sfa_reference_forward(const sfa_attention_params *params, int B, int Hq,
                                 int Hkv, int Tq, int Tk, int D, const float *q,
                                 const float *k, const float *v, const int32_t *q_idx,
                                 const int32_t *k_idx, const int32_t *q_hash,
                                 const int32_t *k_hash, float *o, float *lse,
                                 char *err, size_t errlen) {
  sfa_status st = check_args(params, B, Hq, Hkv, Tq, Tk, D, q, k, v, q_idx, k_idx, q_hash,
                             k_hash, o, err, errlen);
  if (st != SFA_OK) return st;
  const sfa_mode mode = params->mode;
  const int causal = mode == SFA_MODE_DENSE && params->causal;
  const double scale = params->scale > 0 ? (double)params->scale : 1.0 / sqrt((double)D);
  const int group = Hq / Hkv;

  double *s = malloc((size_t)Tk * sizeof *s);  /* scores of one row */
  unsigned char *allowed = malloc((size_t)Tk);
  double *acc = malloc((size_t)D * sizeof *acc);
  if (!s || !allowed || !acc) {
    free(s);
    free(allowed);
    free(acc);
    return fail(err, errlen, SFA_ERR_OUT_OF_MEMORY, "out of memory (Tk = %d, D = %d)", Tk, D);
  }

  for (int b = 0; b < B; b++)
    for (int h = 0; h < Hq; h++) {
      const int hk = h / group;
      const size_t qrow0 = ((size_t)b * Hq + h) * Tq;   /* row index of (b, h, 0) */
      const size_t krow0 = ((size_t)b * Hkv + hk) * Tk;
      for (int i = 0; i < Tq; i++) {
        const float *qi = q + (qrow0 + i) * D;
        float *oi = o + (qrow0 + i) * D;
        double m = -INFINITY;
        int any = 0;
        for (int j = 0; j < Tk; j++) {
          int ok;
          if (mode == SFA_MODE_DENSE)
            ok = !causal || (int64_t)j <= (int64_t)i + Tk - Tq;
          else {
            ok = idx_allows(q_idx[qrow0 + i], k_idx[krow0 + j]);
            if (mode == SFA_MODE_HASH)
              ok = ok && q_hash[qrow0 + i] == k_hash[krow0 + j];
          }
          allowed[j] = (unsigned char)ok;
          if (!ok) continue;
          any = 1;
          const float *kj = k + (krow0 + j) * D;
          double dot = 0;
          for (int x = 0; x < D; x++) dot += (double)qi[x] * (double)kj[x];
          s[j] = dot * scale;
          if (s[j] > m || isnan(s[j])) m = s[j]; /* NaN input gives NaN output */
        }
        if (!any) {
          memset(oi, 0, (size_t)D * sizeof *oi);
          if (lse) lse[qrow0 + i] = -INFINITY;
          continue;
        }
        double sum = 0;
        memset(acc, 0, (size_t)D * sizeof *acc);
        for (int j = 0; j < Tk; j++) {
          if (!allowed[j]) continue;
          const double p = exp(s[j] - m);
          const float *vj = v + (krow0 + j) * D;
          sum += p;
          for (int x = 0; x < D; x++) acc[x] += p * (double)vj[x];
        }
        for (int x = 0; x < D; x++) oi[x] = (float)(acc[x] / sum);
        if (lse) lse[qrow0 + i] = (float)(m + log(sum));
      }
    }
  free(s);
  free(allowed);
  free(acc);
  return SFA_OK;
}
