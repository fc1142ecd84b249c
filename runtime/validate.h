/*
** validate.h -- the argument checks of sfa_forward, sfa_backward and
** sfa_check_indices (runtime/validate.c). They never touch the driver, so bad
** input is reported the same way on any machine; every message names the
** argument.
*/
#ifndef SFA_RUNTIME_VALIDATE_H
#define SFA_RUNTIME_VALIDATE_H

#include <stddef.h>
#include <stdint.h>

#include "sfa.h"

/* Everything sfa_forward reads and writes: params, tensors (an unsupported
** head dim is named before any stride), the extras of the mode, and no output
** (o, lse) sharing memory with an input or the other output. */
sfa_status sfa__validate_forward(sfa_context *ctx, const sfa_attention_params *params,
                                 const sfa_tensor *q, const sfa_tensor *k, const sfa_tensor *v,
                                 const sfa_extras *extras, const sfa_tensor *o,
                                 const sfa_tensor *lse);

/* Everything sfa_backward reads and writes: the forward's checks (lse
** required), dout like o, dq like q, dk and dv like k and v, dbias (optional)
** like extras->bias, and no output sharing memory with an input or another
** output. */
sfa_status sfa__validate_backward(sfa_context *ctx, const sfa_attention_params *params,
                                  const sfa_tensor *q, const sfa_tensor *k, const sfa_tensor *v,
                                  const sfa_extras *extras, const sfa_tensor *o,
                                  const sfa_tensor *lse, const sfa_tensor *dout,
                                  const sfa_tensor *dq, const sfa_tensor *dk,
                                  const sfa_tensor *dv, const sfa_tensor *dbias);

/* params alone: a known mode, causal and deterministic 0 or 1, the scale,
** the window (only window mode may set one). The one set of rules of the
** params, for the GPU calls (the message into ctx) and the CPU references
** (sfa__check_params: into err, which may be NULL). */
sfa_status sfa__validate_params(sfa_context *ctx, const sfa_attention_params *params);
sfa_status sfa__check_params(const sfa_attention_params *params, char *err, size_t errlen);

/* The extras of params->mode for a problem of these sizes: each tensor the
** mode reads is present with the right dtype (a bias has q_dtype), shape,
** strides and alignment; every other member is NULL. extras may be NULL where
** the mode needs none. params must have passed sfa__validate_params. */
sfa_status sfa__validate_extras(sfa_context *ctx, const sfa_attention_params *params,
                                const sfa_extras *extras, sfa_dtype q_dtype, int64_t B,
                                int64_t Hq, int64_t Hkv, int64_t Tq, int64_t Tk);

/* The stride the kernel uses for dim i of t: 0 where the extent is 1 (a
** broadcast or a single element), the tensor's stride otherwise. */
static inline int64_t sfa__eff_stride(const sfa_tensor *t, int i) {
  return t->shape[i] == 1 ? 0 : t->strides[i];
}

/* Checks of one tensor that do not depend on the others: rank, dims >= 1
** (and <= max_dim when max_dim > 0), data, alignment to `align` bytes,
** strides (>= 0; a multiple of `mult` elements, 16 bytes where mult > 1; the
** last one 1), offsets within 2^62 elements, and, for an output, no element
** aliasing another. Dims of extent 1 are never indexed, so their strides are
** not checked. The message names the tensor `nm` and its `layout`. */
sfa_status sfa__check_layout(sfa_context *ctx, const char *nm, const sfa_tensor *t, int rank,
                             const char *layout, int64_t mult, size_t align, int64_t max_dim,
                             int is_output);

/* A tensor and the name that messages give it ("o", "extras->bias"). */
typedef struct sfa__named_tensor {
  const char *nm;
  const sfa_tensor *t;
} sfa__named_tensor;

/* The one overlap rule of every call's outputs: no output shares a byte with
** an input or with another output (byte ranges, conservative). NULL tensors
** are skipped. The message names both, e.g. "o: its memory overlaps k; ...".
** The tensors must have passed their layout checks. */
sfa_status sfa__check_disjoint(sfa_context *ctx, const sfa__named_tensor *out, size_t nout,
                               const sfa__named_tensor *in, size_t nin);

/* "[2, 16, 4096, 128]" into buf. */
void sfa__tensor_shape_str(const sfa_tensor *t, char *buf, size_t n);

/* Nonzero if two index tuples of t share an address (strides >= 0, span checked). */
int sfa__tensor_self_overlapping(const sfa_tensor *t);

#endif
