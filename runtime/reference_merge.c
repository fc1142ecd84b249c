/*
** reference_merge.c -- sfa_reference_merge: the float64 CPU reference of
** sfa_merge_attention (sfa.h, docs/semantics.md), the ground truth of its GPU
** test. Per row: NaN if any part's lse is NaN; else m = the largest lse; NaN
** if m = +inf; o = 0, lse = -inf if m = -inf (no part saw a key); else
** lse = m + log(sum_n exp(lse_n - m)) and o = sum_n exp(lse_n - lse) * o_n
** over the parts with lse_n > -inf (the others' o_n are not read).
*/
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "sfa.h"
#include "gen/gen_internal.h"

sfa_status sfa_reference_merge(int N, int64_t rows, int D, const float *o_parts,
                               const float *lse_parts, float *o, float *lse, char *err,
                               size_t errlen) {
  const sfa_status bad = SFA_ERR_INVALID_ARGUMENT;
  if (N < 1) return sfa__fail(err, errlen, bad, "N: %d; must be >= 1", N);
  if (rows < 0) return sfa__fail(err, errlen, bad, "rows: %lld; must be >= 0", (long long)rows);
  if (D < 1) return sfa__fail(err, errlen, bad, "D: %d; must be >= 1", D);
  if (!o_parts || !lse_parts || !o)
    return sfa__fail(err, errlen, bad, "%s: is NULL",
                     !o_parts ? "o_parts" : !lse_parts ? "lse_parts" : "o");
  double *acc = malloc((size_t)D * sizeof *acc);
  if (!acc) return sfa__fail(err, errlen, SFA_ERR_OUT_OF_MEMORY, "out of memory");
  for (int64_t r = 0; r < rows; r++) {
    int nan = 0;
    double m = -INFINITY;
    for (int n = 0; n < N; n++) {
      const double l = lse_parts[(int64_t)n * rows + r];
      if (isnan(l)) nan = 1;
      else if (l > m) m = l;
    }
    double out_lse;
    for (int c = 0; c < D; c++) acc[c] = 0;
    if (nan || m == INFINITY) {
      out_lse = NAN;
      for (int c = 0; c < D; c++) acc[c] = NAN;
    } else if (m == -INFINITY) {
      out_lse = -INFINITY;
    } else {
      double s = 0;
      for (int n = 0; n < N; n++) {
        const double l = lse_parts[(int64_t)n * rows + r];
        if (l != -INFINITY) s += exp(l - m);
      }
      out_lse = m + log(s);
      for (int n = 0; n < N; n++) {
        const double l = lse_parts[(int64_t)n * rows + r];
        if (l == -INFINITY) continue; /* weighs 0: not read */
        const double w = exp(l - out_lse);
        const float *row = o_parts + ((int64_t)n * rows + r) * D;
        for (int c = 0; c < D; c++) acc[c] += w * row[c];
      }
    }
    for (int c = 0; c < D; c++) o[r * D + c] = (float)acc[c];
    if (lse) lse[r] = (float)out_lse;
  }
  free(acc);
  return SFA_OK;
}
