/*
** status.c -- the small context-free helpers of the public API: status names,
** sfa_free, and the initialisers of sfa_tensor, sfa_options and
** sfa_attention_params.
*/
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sfa.h"
#include "runtime/internal.h"

const char *sfa_status_string(sfa_status s) {
  switch (s) {
    case SFA_OK: return "ok";
    case SFA_ERR_INVALID_ARGUMENT: return "invalid argument";
    case SFA_ERR_UNSUPPORTED: return "unsupported";
    case SFA_ERR_NO_DRIVER: return "no CUDA driver";
    case SFA_ERR_CUDA: return "CUDA driver error";
    case SFA_ERR_COMPILE: return "compile error";
    case SFA_ERR_GENERATOR: return "generator error";
    case SFA_ERR_IO: return "I/O error";
    case SFA_ERR_CORRUPT: return "corrupt file";
    case SFA_ERR_NOT_FOUND: return "not found";
    case SFA_ERR_OUT_OF_MEMORY: return "out of memory";
    case SFA_ERR_INTERNAL: return "internal error";
  }
  return "unknown status";
}

void sfa_free(void *p) { free(p); }

const char *sfa_dtype_name(int dtype) {
  static const char *const names[] = {"fp16", "bf16", "fp32", "int32", "uint8"};
  return (unsigned)dtype < sizeof names / sizeof names[0] ? names[dtype] : NULL;
}

const char *sfa__dtype_str(sfa_dtype d) {
  const char *name = sfa_dtype_name((int)d);
  return name ? name : "an unknown dtype";
}

void sfa_tensor_init(sfa_tensor *t, void *data, sfa_dtype dtype, int rank,
                     const int64_t *shape) {
  if (!t) return;
  memset(t, 0, sizeof *t);
  t->data = data;
  t->dtype = dtype;
  t->rank = rank;
  if (rank < 0 || rank > SFA_MAX_RANK || !shape) return; /* rejected later by validation */
  /* A stride that does not fit in int64 saturates at INT64_MAX (never wraps):
  ** such a tensor spans more than 2^62 elements, which validation rejects. */
  int64_t stride = 1;
  for (int i = rank - 1; i >= 0; i--) {
    t->shape[i] = shape[i];
    t->strides[i] = stride;
    if (__builtin_mul_overflow(stride, shape[i] > 0 ? shape[i] : 1, &stride)) stride = INT64_MAX;
  }
}

void sfa_options_init(sfa_options *opts) {
  if (!opts) return;
  memset(opts, 0, sizeof *opts);
  opts->cache_dir = NULL;
  opts->device = 0;
  opts->verbose = 0;
  opts->tune = SFA_TUNE_OFF;
  const char *e = getenv("SFA_TUNE");
  if (e && *e) {
    if (strcmp(e, "off") == 0) opts->tune = SFA_TUNE_OFF;
    else if (strcmp(e, "cached") == 0) opts->tune = SFA_TUNE_CACHED;
    else if (strcmp(e, "on") == 0) opts->tune = SFA_TUNE_ON;
    else fprintf(stderr, "sfa: warning: SFA_TUNE='%s' is not off, cached or on; using off\n", e);
  }
  opts->mma = SFA_MMA_AUTO;
  e = getenv("SFA_MMA");
  if (e && *e) {
    if (strcmp(e, "auto") == 0) opts->mma = SFA_MMA_AUTO;
    else if (strcmp(e, "sync") == 0) opts->mma = SFA_MMA_SYNC;
    else if (strcmp(e, "wgmma") == 0) opts->mma = SFA_MMA_WGMMA;
    else if (strcmp(e, "ws") == 0) opts->mma = SFA_MMA_WS;
    else fprintf(stderr, "sfa: warning: SFA_MMA='%s' is not auto, sync, wgmma or ws; using auto\n", e);
  }
}

void sfa_params_init(sfa_attention_params *p) {
  if (!p) return;
  memset(p, 0, sizeof *p);
  p->mode = SFA_MODE_DENSE;
  p->causal = 0;
  p->scale = 0.0f;
  p->window_left = -1;
  p->window_right = -1;
  p->deterministic = 0;
  p->strict_causal = 0;
  p->softcap = 0.0f;
}
