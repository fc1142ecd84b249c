/*
** kernel_abi.h -- the parameter block that every forward kernel receives by
** value. templates/common.lt declares the same struct for the device side; the
** two must match field for field (tests/test_abi checks the generated text).
*/
#ifndef SFA_KERNEL_ABI_H
#define SFA_KERNEL_ABI_H

#include <stdint.h>

typedef struct sfa_fwd_args {
  uint64_t q, k, v, o, lse;               /* device pointers; lse may be 0 */
  uint64_t q_idx, k_idx, q_hash, k_hash;  /* int32 mode arrays, 0 if unused */
  uint64_t bias, mask;                    /* window mode, 0 if unused */
  int64_t q_sb, q_sh, q_st;               /* element strides: batch, head, time */
  int64_t k_sb, k_sh, k_st;
  int64_t v_sb, v_sh, v_st;
  int64_t o_sb, o_sh, o_st;
  int64_t lse_sb, lse_sh;                 /* lse is contiguous along time */
  int64_t qi_sb, qi_sh;                   /* q_idx / q_hash, contiguous along time */
  int64_t ki_sb, ki_sh;                   /* k_idx / k_hash, contiguous along time */
  int64_t bias_sb, bias_sh, bias_st;      /* 0 where broadcast */
  int64_t mask_sb, mask_sh, mask_st;
  int32_t batch, hq, hkv, tq, tk;
  int32_t bias_hdiv, mask_hdiv;           /* query heads per bias/mask head */
  int32_t window_left, window_right;      /* -1 = unbounded */
  float scale;                            /* softmax scale */
  float scale_log2;                       /* scale * log2(e) */
  int32_t pad_;
} sfa_fwd_args;

#endif
