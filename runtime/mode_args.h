/*
** mode_args.h -- internal: the mode members of a kernel parameter block (the
** index arrays of qk_drop and hash, the bias, mask and window of window
** mode, the ALiBi slopes and the softcap), filled from validated params and
** extras. sfa_fwd_args and
** sfa_bwd_args name these members alike, so one macro serves both
** (runtime/forward.c, runtime/backward.c). Nothing here names a mode:
** validation (gen/mode.h's table) leaves NULL every member of sfa_extras that
** the mode does not read, so each member given is passed, and the window
** where the mode's row takes one.
*/
#ifndef SFA_RUNTIME_MODE_ARGS_H
#define SFA_RUNTIME_MODE_ARGS_H

#include <stdint.h>

#include "gen/mode.h"
#include "runtime/validate.h"

/* A: pointer to the parameter block, whose tq, tk and hq are set; P: params;
** EX: extras (may be NULL where the mode reads none). A window wider than the
** problem is unbounded: j >= i + off - left holds for every key once left >=
** Tk - 1, j <= i + off + right once right >= Tq - 1; saying -1 then keeps the
** kernels' int32 arithmetic clear of overflow. hash's q_hash / k_hash have
** the strides of q_idx / k_idx (validated). */
#define SFA__FILL_MODE_ARGS(A, P, EX)                                                        \
  do {                                                                                       \
    const sfa_extras *ex_ = (EX);                                                            \
    const sfa__mode *m_ = sfa__mode_find((P)->mode);                                         \
    (A)->bias_hdiv = (A)->mask_hdiv = 1;                                                     \
    (A)->window_left = (A)->window_right = -1;                                               \
    if (ex_ && ex_->q_idx) {                                                                 \
      (A)->q_idx = (uint64_t)(uintptr_t)ex_->q_idx->data;                                    \
      (A)->qi_sb = sfa__eff_stride(ex_->q_idx, 0), (A)->qi_sh = sfa__eff_stride(ex_->q_idx, 1); \
    }                                                                                        \
    if (ex_ && ex_->k_idx) {                                                                 \
      (A)->k_idx = (uint64_t)(uintptr_t)ex_->k_idx->data;                                    \
      (A)->ki_sb = sfa__eff_stride(ex_->k_idx, 0), (A)->ki_sh = sfa__eff_stride(ex_->k_idx, 1); \
    }                                                                                        \
    if (ex_ && ex_->q_hash) (A)->q_hash = (uint64_t)(uintptr_t)ex_->q_hash->data;            \
    if (ex_ && ex_->k_hash) (A)->k_hash = (uint64_t)(uintptr_t)ex_->k_hash->data;            \
    if (m_ && m_->window) {                                                                  \
      (A)->window_left = (P)->window_left >= (A)->tk ? -1 : (P)->window_left;                \
      (A)->window_right = (P)->causal ? 0 : (P)->window_right >= (A)->tq ? -1                \
                                                                          : (P)->window_right; \
    }                                                                                        \
    if (ex_ && ex_->bias) {                                                                  \
      const sfa_tensor *t_ = ex_->bias;                                                      \
      (A)->bias = (uint64_t)(uintptr_t)t_->data;                                             \
      (A)->bias_sb = sfa__eff_stride(t_, 0), (A)->bias_sh = sfa__eff_stride(t_, 1);          \
      (A)->bias_st = sfa__eff_stride(t_, 2);                                                 \
      (A)->bias_hdiv = (int32_t)((A)->hq / t_->shape[1]);                                    \
    }                                                                                        \
    if (ex_ && ex_->mask) {                                                                  \
      const sfa_tensor *t_ = ex_->mask;                                                      \
      (A)->mask = (uint64_t)(uintptr_t)t_->data;                                             \
      (A)->mask_sb = sfa__eff_stride(t_, 0), (A)->mask_sh = sfa__eff_stride(t_, 1);          \
      (A)->mask_st = sfa__eff_stride(t_, 2);                                                 \
      (A)->mask_hdiv = (int32_t)((A)->hq / t_->shape[1]);                                    \
    }                                                                                        \
    if (ex_ && ex_->alibi_slopes) {                                                          \
      const sfa_tensor *t_ = ex_->alibi_slopes;                                              \
      (A)->alibi = (uint64_t)(uintptr_t)t_->data;                                            \
      (A)->alibi_sb = t_->rank == 2 ? (A)->hq : 0;                                           \
    }                                                                                        \
    if ((P)->softcap > 0) {                                                                  \
      (A)->softcap = (P)->softcap;                                                           \
      (A)->softcap_inv = (float)(1.0 / (double)(P)->softcap);                                \
    }                                                                                        \
  } while (0)

#endif
