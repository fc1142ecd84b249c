/*
** kernel_abi.h -- the parameter blocks that the attention kernels receive by
** value: sfa_fwd_args (pass fwd) and sfa_bwd_args (passes bwd and bwddq).
** templates/abi.lt declares the same structs for the device side and checks
** their sizes; the two must match field for field.
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

/* Backward. lse2 and delta are float workspaces of B * Hq rows of tqp floats
** (tqp = Tq rounded up to 128): lse * log2(e) (+inf for rows that see no key
** and for the padding) and rowsum(dout * o) (0 in the padding). */
typedef struct sfa_bwd_args {
  uint64_t q, k, v, dout;
  uint64_t lse2, delta;
  uint64_t dq;      /* bwd: float [B * Hq][tqp][D] accumulated by atomics (0 with
                       det); bwddq: the dq output (q's dtype, strides dq_*) */
  uint64_t dk, dv;  /* bwd only */
  uint64_t q_idx, k_idx, q_hash, k_hash;
  uint64_t bias, mask;
  uint64_t dbias;   /* bwd, dbias_mode 1: the output (bias dtype); 2: float workspace */
  uint64_t plan;    /* bwd with a plan kernel (sfa__bwd_plan): int32 [B][Hq][key tiles]
                       [SFA__BWD_PLAN_INTS], written by <name>_plan; else 0 */
  int64_t q_sb, q_sh, q_st;
  int64_t k_sb, k_sh, k_st;
  int64_t v_sb, v_sh, v_st;
  int64_t do_sb, do_sh, do_st;
  int64_t dq_sb, dq_sh, dq_st;            /* bwddq */
  int64_t dk_sb, dk_sh, dk_st;
  int64_t dv_sb, dv_sh, dv_st;
  int64_t qi_sb, qi_sh;
  int64_t ki_sb, ki_sh;
  int64_t bias_sb, bias_sh, bias_st;
  int64_t mask_sb, mask_sh, mask_st;
  int64_t dbias_sb, dbias_sh, dbias_st;   /* element strides, 0 where broadcast */
  int32_t batch, hq, hkv, tq, tk, tqp;
  int32_t bias_hdiv, mask_hdiv;
  int32_t window_left, window_right;
  int32_t dbias_mode;                     /* 0 none, 1 store, 2 add into the workspace */
  int32_t nb, nh;                         /* bwd: batches and kv heads per CTA */
  float scale, scale_log2;
  int32_t pad_;
} sfa_bwd_args;

/* templates/abi.lt asserts the same sizes on the device side. */
_Static_assert(sizeof(sfa_fwd_args) == 328, "sfa_fwd_args changed: update templates/abi.lt");
_Static_assert(sizeof(sfa_bwd_args) == 472, "sfa_bwd_args changed: update templates/abi.lt");

#endif
