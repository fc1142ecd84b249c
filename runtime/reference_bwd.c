/*
** reference_bwd.c -- sfa_reference_backward: the float64 CPU reference of the
** backward pass, against which the GPU backward kernels (dq, dk, dv, dbias of
** every mode) are checked. It recomputes each query row of the forward pass
** through sfa__ref_forward_row (reference.c), so the masking, GQA head mapping
** and bias broadcast are those of the forward reference by construction, then
** applies the softmax-attention gradient row by row:
**   P = softmax of the allowed scores, o = P V, delta = dout . o - dlse
**   (dlse, the gradient of lse, only in sfa_reference_backward_dlse),
**   dP_j = dout . v_j, dZ_j = P_j (dP_j - delta),
**   dX_j = dZ_j (1 - tanh^2) with a softcap (else dZ_j),
**   dq += scale dX_j k_j, dk_j += scale dX_j q, dv_j += P_j dout, dbias_j += dZ_j
** (the bias and ALiBi are added after the softcap; the slopes get no gradient).
** dk and dv sum over the query heads of a kv group and dbias over the dims
** the bias broadcasts simply by accumulating into the shared element, in
** double, so the order of the sums does not matter at float32 output
** precision. A row with no allowed key (lse = -inf) contributes nothing.
** (b, kv head) groups run on parallel threads (runtime/parallel.c) in an order
** that keeps every sum as the serial loop makes it.
*/
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sfa.h"
#include "gen/gen_internal.h"
#include "runtime/parallel.h"
#include "runtime/reference.h"

/* The query heads of one kv group of one batch: a unit of sfa__parallel_for. */
typedef struct bwd_job {
  const sfa__ref *r;
  const float *dout, *dlse; /* dlse may be NULL */
  float *dq;
  double *dk64, *dv64, *db64;
} bwd_job;

static int bwd_unit(void *user, void *scratch, int unit) {
  const bwd_job *j = user;
  const sfa__ref *r = j->r;
  const int b = unit / r->Hkv, kvh = unit % r->Hkv, D = r->D, Tk = r->Tk;
  double *s, *dcap, *o, *dqrow;
  unsigned char *allowed;
  sfa__ref_scratch_split(r, scratch, &s, &dcap, &allowed, &o, &dqrow);
  const size_t krow0 = ((size_t)b * r->Hkv + kvh) * Tk;
  for (int h = kvh * r->group; h < (kvh + 1) * r->group; h++)
    for (int i = 0; i < r->Tq; i++) {
      const size_t row = ((size_t)b * r->Hq + h) * r->Tq + i;
      const float *qi = r->q + row * D, *gi = j->dout + row * D;
      float *dqi = j->dq + row * D;
      const double lse = sfa__ref_forward_row(r, b, h, i, s, dcap, allowed, o);
      if (lse == -INFINITY) { /* no key: no gradient anywhere */
        memset(dqi, 0, (size_t)D * sizeof *dqi);
        continue;
      }
      double *dbrow = j->db64 ? j->db64 + sfa__ref_bcast_row(r, r->bias_batches, r->bias_heads,
                                                             r->bias_rows, b, h, i)
                              : NULL;
      double delta = 0;
      for (int x = 0; x < D; x++) delta += (double)gi[x] * o[x];
      if (j->dlse) delta -= j->dlse[row]; /* dZ_j gets P_j * dlse */
      memset(dqrow, 0, (size_t)D * sizeof *dqrow);
      for (int jj = 0; jj < Tk; jj++) {
        if (!allowed[jj]) continue;
        const double p = exp(s[jj] - lse);
        const float *kj = r->k + (krow0 + jj) * D, *vj = r->v + (krow0 + jj) * D;
        double *dkj = j->dk64 + (krow0 + jj) * D, *dvj = j->dv64 + (krow0 + jj) * D;
        double dp = 0;
        for (int x = 0; x < D; x++) dp += (double)gi[x] * (double)vj[x];
        const double dz = p * (dp - delta), dx = dz * dcap[jj]; /* through the softcap */
        for (int x = 0; x < D; x++) {
          dqrow[x] += dx * (double)kj[x];
          dkj[x] += r->scale * dx * (double)qi[x];
          dvj[x] += p * (double)gi[x];
        }
        if (dbrow) dbrow[jj] += dz;
      }
      for (int x = 0; x < D; x++) dqi[x] = (float)(r->scale * dqrow[x]);
    }
  return 0;
}

sfa_status sfa_reference_backward(const sfa_attention_params *params, int B, int Hq,
                                  int Hkv, int Tq, int Tk, int D, const float *q,
                                  const float *k, const float *v, const sfa_host_extras *ex,
                                  const float *dout, float *dq, float *dk, float *dv,
                                  float *dbias, char *err, size_t errlen) {
  return sfa_reference_backward_dlse(params, B, Hq, Hkv, Tq, Tk, D, q, k, v, ex, dout, NULL, dq,
                                     dk, dv, dbias, err, errlen);
}

sfa_status sfa_reference_backward_dlse(const sfa_attention_params *params, int B, int Hq,
                                       int Hkv, int Tq, int Tk, int D, const float *q,
                                       const float *k, const float *v,
                                       const sfa_host_extras *ex, const float *dout,
                                       const float *dlse, float *dq, float *dk, float *dv,
                                       float *dbias, char *err, size_t errlen) {
  const sfa__ref_arg arrays[] = {{"dout", dout}, {"dq", dq}, {"dk", dk}, {"dv", dv}};
  sfa__ref r;
  sfa_status st = sfa__ref_setup(&r, params, B, Hq, Hkv, Tq, Tk, D, q, k, v, ex, arrays,
                                 (int)(sizeof arrays / sizeof arrays[0]), err, errlen);
  if (st != SFA_OK) return st;
  if (dbias && !r.bias)
    return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT,
                     "dbias: is not NULL but ex->bias is NULL (dbias is the gradient of a "
                     "window-mode bias)");

  const size_t nkv = (size_t)B * Hkv * Tk * D;
  const size_t nbias = dbias ? (size_t)r.bias_batches * r.bias_heads * r.bias_rows * Tk : 0;
  /* dk, dv and dbias gather from many query rows: accumulate in double. */
  double *dk64 = calloc(nkv, sizeof *dk64), *dv64 = calloc(nkv, sizeof *dv64);
  double *db64 = dbias ? calloc(nbias, sizeof *db64) : NULL;
  /* Units are (b, kv head): each owns its dk / dv rows. A dbias that one
  ** unit's rows do not own (broadcast over the batch or over kv heads) keeps
  ** to one thread. Either way every sum runs in the serial order. */
  const int units = B * Hkv;
  const int shared_db = db64 && ((r.bias_batches == 1 && B > 1) || (r.bias_heads == 1 && Hkv > 1));
  const int nt = shared_db ? 1 : sfa__parallel_threads(units, 3.0 * B * Hq * Tq * Tk * D);
  void *scratch[32];
  const size_t per = sfa__ref_scratch_bytes(&r);
  int ok = dk64 && dv64 && (!dbias || db64);
  for (int t = 0; t < nt; t++) ok = (scratch[t] = malloc(per)) != NULL && ok;
  bwd_job job = {&r, dout, dlse, dq, dk64, dv64, db64};
  if (ok && sfa__parallel_for(units, nt, bwd_unit, &job, scratch) != 0) ok = 0;
  for (int t = 0; t < nt; t++) free(scratch[t]);
  if (!ok) {
    free(dk64), free(dv64), free(db64);
    return sfa__fail(err, errlen, SFA_ERR_OUT_OF_MEMORY,
                     "out of memory (B*Hkv*Tk*D = %zu doubles for dk and dv)", nkv);
  }
  for (size_t x = 0; x < nkv; x++) dk[x] = (float)dk64[x], dv[x] = (float)dv64[x];
  for (size_t x = 0; x < nbias; x++) dbias[x] = (float)db64[x];
  free(dk64), free(dv64), free(db64);
  return SFA_OK;
}
