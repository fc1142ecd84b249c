/*
** reference.h -- what the float64 CPU references of the forward pass
** (runtime/reference.c) and the backward pass (runtime/reference_bwd.c) share:
** the argument checks, the resolved problem, the broadcast index of a window
** bias or mask, and one query row of the forward pass (scores, the masking
** rule of docs/semantics.md, softmax, o). Both passes go through
** sfa__ref_forward_row so that their masking can never disagree.
*/
#ifndef SFA_RUNTIME_REFERENCE_H
#define SFA_RUNTIME_REFERENCE_H

#include <stddef.h>
#include <stdint.h>

#include "sfa.h"

/* A problem after sfa__ref_setup: sizes, the mode's rule and the arrays. */
struct sfa__mode;

typedef struct sfa__ref {
  sfa_mode mode;
  const struct sfa__mode *m; /* its row of the mode table (gen/mode.h) */
  int B, Hq, Hkv, Tq, Tk, D;
  int group;                /* Hq / Hkv: query head h reads kv head h / group */
  int causal;               /* params->causal where the mode takes the flag */
  int strict;               /* params->strict_causal (qk_drop, hash) */
  double softcap;           /* params->softcap: 0 = off */
  int64_t wl, wr, off;      /* window_left, window_right, Tk - Tq */
  double scale;             /* params->scale, or 1/sqrt(D) for 0 */
  const float *q, *k, *v;
  const int32_t *q_idx, *k_idx, *q_hash, *k_hash; /* NULL unless the mode reads them */
  const float *bias;        /* where given (window), else NULL */
  int bias_batches, bias_heads, bias_rows; /* batches resolved: 0 became B */
  const uint8_t *mask;      /* where given (window), else NULL */
  int mask_batches, mask_heads, mask_rows;
  const float *alibi;       /* ALiBi slopes [alibi_batches, Hq] (dense, window), else NULL */
  int alibi_batches;        /* resolved: 0 became B */
} sfa__ref;

/* A caller's array that must not be NULL; the name goes into the message. */
typedef struct sfa__ref_arg {
  const char *name;
  const void *ptr;
} sfa__ref_arg;

/* Checks the arguments common to both passes -- params, q, k, v, then the
** `narrays` arrays of the pass (outputs, dout), then the sizes, params and
** extras -- and fills *r. SFA_ERR_INVALID_ARGUMENT with a message that names
** the argument. */
sfa_status sfa__ref_setup(sfa__ref *r, const sfa_attention_params *params, int B, int Hq,
                          int Hkv, int Tq, int Tk, int D, const float *q, const float *k,
                          const float *v, const sfa_host_extras *ex, const sfa__ref_arg *arrays,
                          int narrays, char *err, size_t errlen);

/* Offset of row (b, h, i) -- batch, query head, query row -- of a window bias
** or mask of [batches, heads, rows, Tk], broadcast over the dims of size 1 and
** over the query heads of a kv group when heads = Hkv. */
size_t sfa__ref_bcast_row(const sfa__ref *r, int batches, int heads, int rows, int b, int h,
                          int i);

/* One query row (b, h, i) of the forward pass in double: fills s[j] (the
** score: scaled, softcapped, with ALiBi and the bias) and allowed[j] for every
** key j < Tk (s[j] is set only where allowed[j]), where dcap is not NULL
** dcap[j] = d s[j] / d (scale q.k) (1 - tanh^2 with a softcap, else 1), o[0 ..
** D) and returns lse. A row with no allowed key,
** or whose allowed keys all score -inf, gets o = 0 and lse = -inf; then the
** softmax weight of key j is 0, else exp(s[j] - lse). */
double sfa__ref_forward_row(const sfa__ref *r, int b, int h, int i, double *s,
                            double *dcap, unsigned char *allowed, double *o);

/* Per-thread scratch of the row routines: scores, softcap derivatives,
** allowed flags and two rows of D doubles; sfa__ref_scratch_split carves a block of
** sfa__ref_scratch_bytes into them. */
size_t sfa__ref_scratch_bytes(const sfa__ref *r);
void sfa__ref_scratch_split(const sfa__ref *r, void *scratch, double **s, double **dcap,
                            unsigned char **allowed, double **d1, double **d2);

/* sfa_reference_forward with double outputs o [B, Hq, Tq, D] and lse (may be
** NULL): for finite differences, where the float32 outputs of the public call
** would round away the O(h^2) accuracy of a central difference. */
sfa_status sfa__reference_forward64(const sfa_attention_params *params, int B, int Hq, int Hkv,
                                    int Tq, int Tk, int D, const float *q, const float *k,
                                    const float *v, const sfa_host_extras *ex, double *o,
                                    double *lse, char *err, size_t errlen);

#endif
