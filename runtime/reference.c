/*
** reference.c -- sfa_reference_forward: the float64 CPU reference of the
** forward pass. It defines correctness: every GPU kernel is compared with it.
** Masking rules (DESIGN.md section 2), with off = Tk - Tq:
**   dense    causal: query i sees key j iff j <= i + off (bottom-right)
**   qk_drop  q_idx[i] >= k_idx[j]; q_idx -1 sees nothing, k_idx INT32_MAX is never seen
**   hash     q_hash[i] == k_hash[j] and the qk_drop rule
**   window   (window_left < 0 || j >= i + off - window_left) and
**            (causal ? j <= i + off : window_right < 0 || j <= i + off + window_right)
**            and mask[b, hm, i or 0, j] != 0 (with a mask); the score is
**            s * scale + bias[b, hb, i or 0, j] (with a bias)
** Query head h reads kv head h / (Hq / Hkv); a bias or mask with `heads` heads
** is read at head h (heads = Hq), h / (Hq / Hkv) (heads = Hkv) or 0 (heads = 1).
** A row with no allowed key gets o = 0 and lse = -inf; so does a row whose
** allowed keys all score -inf (a bias of -inf masks a key, as on the GPU).
*/
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sfa.h"
#include "gen/gen_internal.h"

/* Does the index rule of qk_drop and hash let query position qi see key kj? */
static int idx_allows(int32_t qi, int32_t kj) {
  return qi != -1 && kj != INT32_MAX && qi >= kj;
}

/* bias_heads / mask_heads and _rows of the window extras. */
static sfa_status check_broadcast(const char *nm, int heads, int rows, int Hq, int Hkv, int Tq,
                                  char *err, size_t errlen) {
  if (heads != Hq && heads != Hkv && heads != 1)
    return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT,
                "ex->%s_heads: %d; must be Hq (%d), Hkv (%d) or 1", nm, heads, Hq, Hkv);
  if (rows != Tq && rows != 1)
    return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT,
                "ex->%s_rows: %d; must be Tq (%d) or 1", nm, rows, Tq);
  return SFA_OK;
}

/* The members of ex that the mode reads are set, the others NULL. */
static sfa_status check_extras(const sfa_attention_params *p, int Hq, int Hkv, int Tq,
                               const sfa_host_extras *ex, char *err, size_t errlen) {
  const sfa_status bad = SFA_ERR_INVALID_ARGUMENT;
  const sfa_mode m = p->mode;
  const int idx = m == SFA_MODE_QK_DROP || m == SFA_MODE_HASH, hash = m == SFA_MODE_HASH;
  const int win = m == SFA_MODE_WINDOW;
  const struct { const char *name; const void *ptr; int needed, allowed; const char *who; } f[] = {
    {"q_idx", ex ? ex->q_idx : NULL, idx, idx, "qk_drop and hash"},
    {"k_idx", ex ? ex->k_idx : NULL, idx, idx, "qk_drop and hash"},
    {"q_hash", ex ? ex->q_hash : NULL, hash, hash, "hash"},
    {"k_hash", ex ? ex->k_hash : NULL, hash, hash, "hash"},
    {"bias", ex ? ex->bias : NULL, 0, win, "window"},
    {"mask", ex ? ex->mask : NULL, 0, win, "window"},
  };
  for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
    if (f[i].needed && !f[i].ptr)
      return sfa__fail(err, errlen, bad, "%s%s: is NULL (mode %s needs it)", ex ? "ex->" : "ex: ",
                  f[i].name, sfa__mode_name(m));
    if (!f[i].allowed && f[i].ptr)
      return sfa__fail(err, errlen, bad, "ex->%s: only mode %s reads it; must be NULL in mode %s",
                  f[i].name, f[i].who, sfa__mode_name(m));
  }
  sfa_status st;
  if (win && ex && ex->bias &&
      (st = check_broadcast("bias", ex->bias_heads, ex->bias_rows, Hq, Hkv, Tq, err, errlen)))
    return st;
  if (win && ex && ex->mask &&
      (st = check_broadcast("mask", ex->mask_heads, ex->mask_rows, Hq, Hkv, Tq, err, errlen)))
    return st;
  return SFA_OK;
}

static sfa_status check_args(const sfa_attention_params *p, int B, int Hq, int Hkv, int Tq,
                             int Tk, int D, const float *q, const float *k, const float *v,
                             const sfa_host_extras *ex, const float *o, char *err,
                             size_t errlen) {
  const sfa_status bad = SFA_ERR_INVALID_ARGUMENT;
  if (!p) return sfa__fail(err, errlen, bad, "params: is NULL");
  if (!q) return sfa__fail(err, errlen, bad, "q: is NULL");
  if (!k) return sfa__fail(err, errlen, bad, "k: is NULL");
  if (!v) return sfa__fail(err, errlen, bad, "v: is NULL");
  if (!o) return sfa__fail(err, errlen, bad, "o: is NULL");
  const struct { const char *name; int value; } sizes[] = {
    {"B", B}, {"Hq", Hq}, {"Hkv", Hkv}, {"Tq", Tq}, {"Tk", Tk}, {"D", D}};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
    if (sizes[i].value < 1)
      return sfa__fail(err, errlen, bad, "%s: %d; must be >= 1", sizes[i].name, sizes[i].value);
  if (Hq % Hkv != 0)
    return sfa__fail(err, errlen, bad, "Hkv: %d does not divide Hq (%d)", Hkv, Hq);
  if ((unsigned)p->mode > SFA_MODE_WINDOW)
    return sfa__fail(err, errlen, bad,
                "params.mode: %d is not a mode (dense, qk_drop, hash or window)", (int)p->mode);
  if (!isfinite(p->scale) || p->scale < 0)
    return sfa__fail(err, errlen, bad,
                "params.scale: %g; must be finite and >= 0 (0 means 1/sqrt(D))",
                (double)p->scale);
  if (p->mode == SFA_MODE_WINDOW) {
    if (p->window_left < -1)
      return sfa__fail(err, errlen, bad, "params.window_left: %d; must be >= 0, or -1 (unbounded)",
                  p->window_left);
    if (p->window_right < -1)
      return sfa__fail(err, errlen, bad, "params.window_right: %d; must be >= 0, or -1 (unbounded)",
                  p->window_right);
  } else if (p->window_left != -1 || p->window_right != -1) {
    return sfa__fail(err, errlen, bad,
                "params.window_left/window_right: %d/%d; windows apply to mode window only "
                "(use -1 with %s)",
                p->window_left, p->window_right, sfa__mode_name(p->mode));
  }
  double total = (double)B * (double)(Hq > Hkv ? Hq : Hkv) * (double)(Tq > Tk ? Tq : Tk) * D;
  if (total > (double)(SIZE_MAX / sizeof(float) / 2))
    return sfa__fail(err, errlen, bad, "B*H*T*D: %g elements do not fit in memory", total);
  return check_extras(p, Hq, Hkv, Tq, ex, err, errlen);
}

/* Offset of row (b, h, i) of a window bias/mask of `heads` heads and `rows` rows. */
static size_t bcast_row(int b, int h, int i, int Hq, int Hkv, int Tk, int heads, int rows) {
  int hb = heads == Hq ? h : heads == 1 ? 0 : h / (Hq / Hkv);
  int r = rows == 1 ? 0 : i;
  return (((size_t)b * heads + hb) * rows + r) * Tk;
}

sfa_status sfa_reference_forward(const sfa_attention_params *params, int B, int Hq,
                                 int Hkv, int Tq, int Tk, int D, const float *q,
                                 const float *k, const float *v, const sfa_host_extras *ex,
                                 float *o, float *lse, char *err, size_t errlen) {
  sfa_status st = check_args(params, B, Hq, Hkv, Tq, Tk, D, q, k, v, ex, o, err, errlen);
  if (st != SFA_OK) return st;
  const sfa_mode mode = params->mode;
  const int causal = (mode == SFA_MODE_DENSE || mode == SFA_MODE_WINDOW) && params->causal;
  const int64_t wl = params->window_left, wr = params->window_right, off = (int64_t)Tk - Tq;
  const double scale = params->scale > 0 ? (double)params->scale : 1.0 / sqrt((double)D);
  const int group = Hq / Hkv;
  const float *bias = mode == SFA_MODE_WINDOW && ex ? ex->bias : NULL;
  const uint8_t *mask = mode == SFA_MODE_WINDOW && ex ? ex->mask : NULL;

  double *s = malloc((size_t)Tk * sizeof *s);  /* scores of one row */
  unsigned char *allowed = malloc((size_t)Tk);
  double *acc = malloc((size_t)D * sizeof *acc);
  if (!s || !allowed || !acc) {
    free(s);
    free(allowed);
    free(acc);
    return sfa__fail(err, errlen, SFA_ERR_OUT_OF_MEMORY, "out of memory (Tk = %d, D = %d)", Tk, D);
  }

  for (int b = 0; b < B; b++)
    for (int h = 0; h < Hq; h++) {
      const int hk = h / group;
      const size_t qrow0 = ((size_t)b * Hq + h) * Tq;   /* row index of (b, h, 0) */
      const size_t krow0 = ((size_t)b * Hkv + hk) * Tk;
      for (int i = 0; i < Tq; i++) {
        const float *qi = q + (qrow0 + i) * D;
        float *oi = o + (qrow0 + i) * D;
        const float *brow = bias ? bias + bcast_row(b, h, i, Hq, Hkv, Tk, ex->bias_heads,
                                                    ex->bias_rows)
                                 : NULL;
        const uint8_t *mrow = mask ? mask + bcast_row(b, h, i, Hq, Hkv, Tk, ex->mask_heads,
                                                      ex->mask_rows)
                                   : NULL;
        const int64_t diag = (int64_t)i + off; /* the key aligned with query i */
        double m = -INFINITY;
        int any = 0;
        for (int j = 0; j < Tk; j++) {
          int ok;
          if (mode == SFA_MODE_DENSE) {
            ok = !causal || j <= diag;
          } else if (mode == SFA_MODE_WINDOW) {
            ok = (wl < 0 || j >= diag - wl) &&
                 (causal ? j <= diag : (wr < 0 || j <= diag + wr)) && (!mrow || mrow[j] != 0);
          } else {
            ok = idx_allows(ex->q_idx[qrow0 + i], ex->k_idx[krow0 + j]);
            if (mode == SFA_MODE_HASH)
              ok = ok && ex->q_hash[qrow0 + i] == ex->k_hash[krow0 + j];
          }
          allowed[j] = (unsigned char)ok;
          if (!ok) continue;
          any = 1;
          const float *kj = k + (krow0 + j) * D;
          double dot = 0;
          for (int x = 0; x < D; x++) dot += (double)qi[x] * (double)kj[x];
          s[j] = dot * scale + (brow ? (double)brow[j] : 0.0);
          if (s[j] > m || isnan(s[j])) m = s[j]; /* NaN input gives NaN output */
        }
        if (!any || m == -INFINITY) { /* no key, or a -inf bias on every one */
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
