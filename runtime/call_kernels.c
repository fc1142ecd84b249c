/*
** call_kernels.c -- the kernels a call loads, without the driver: the specs
** that sfa_forward and sfa_backward get for their arguments on a device of a
** given arch (the attention kernels through the tuning policy's
** sfa__select_spec, as sfa__select_kernel does, then the backward's utility
** kernels). The tiles may depend on the key length (sfa__spec_for_keys): a
** call's list holds the kernel of short rows and the one of long rows where
** they differ. With sfa__kernel_cubin this says, on any machine, whether a set
** of ahead-of-time kernel dirs serves a call without NVRTC.
*/
#include <string.h>

#include "gen/arch.h"
#include "gen/gen_internal.h"
#include "runtime/autotune.h"
#include "runtime/fwd_launch.h"
#include "runtime/internal.h"
#include "runtime/util.h"

/* Appends the spec of (pass, dtype, head_dim, flags) with the tiles the
** policy picks: sfa__select_launch_spec, which sfa__select_kernel uses too,
** for a key length of 1 and for one above SFA__SHORT_KEYS (the second only
** where it differs). */
static sfa_status attention(sfa_context *ctx, const sfa__device *dev, const sfa__problem *prob,
                            sfa_pass pass, sfa_dtype dtype, int head_dim, unsigned flags,
                            sfa_kernel_spec *specs, int max, int *n) {
  sfa__problem p = *prob;
  const int64_t tks[2] = {1, SFA__SHORT_KEYS + 1};
  for (int i = 0; i < 2; i++) {
    sfa_kernel_spec s;
    p.Tq = p.Tk = tks[i];
    sfa_status st = sfa__select_launch_spec(ctx, dev, pass, dtype, head_dim, flags, &p, &s);
    if (st != SFA_OK) return st;
    if (i == 1 && sfa__spec_same_config(&s, &specs[*n - 1])) break;
    if (*n >= max) return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "specs: room for %d", max);
    specs[(*n)++] = s;
  }
  return SFA_OK;
}

/* Appends the utility kernel of (pass, dtype), as sfa__util_kernel gets it. */
static sfa_status utility(sfa_context *ctx, const sfa__device *dev, sfa_pass pass,
                          sfa_dtype dtype, sfa_kernel_spec *specs, int max, int *n) {
  if (*n >= max) return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "specs: room for %d", max);
  sfa_status st = sfa__util_spec(pass, dtype, dev->arch, &specs[*n], ctx->err, sizeof ctx->err);
  if (st == SFA_OK) (*n)++;
  return st;
}

sfa_status sfa__call_kernels(sfa_context *ctx, sfa_pass call,
                             const sfa_attention_params *params, const sfa_extras *extras,
                             sfa_dtype dtype, int head_dim, int arch, sfa_kernel_spec *specs,
                             int max, int *n) {
  if (!ctx) return SFA_ERR_INVALID_ARGUMENT;
  if (!params || !specs || !n)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "sfa__call_kernels: NULL argument");
  *n = 0;
  if (call != SFA_PASS_FWD && call != SFA_PASS_BWD)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                      "call: %d; must be SFA_PASS_FWD (sfa_forward) or SFA_PASS_BWD "
                      "(sfa_backward)", (int)call);
  if (!sfa__arch_find(arch))
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "arch: %d is not in the arch table", arch);
  if (ctx->opts.mma == SFA_MMA_AUTO && ctx->opts.tune != SFA_TUNE_OFF)
    return sfa__error(ctx, SFA_ERR_UNSUPPORTED,
                      "options.tune: under policy %s the kernels depend on the device's tuning "
                      "db; only policy off or a forced mma kind picks them from the arguments",
                      ctx->opts.tune == SFA_TUNE_CACHED ? "cached" : "on");
  /* A device of that arch; with tuning off (or a forced mma kind)
  ** sfa__select_spec reads nothing else of it. */
  sfa__device dev;
  memset(&dev, 0, sizeof dev);
  dev.cc = arch;
  dev.arch = arch;
  dev.smem_optin = (int)sfa__arch_smem_limit(arch);
  sfa__problem prob;
  memset(&prob, 0, sizeof prob);
  prob.params = params;
  prob.B = prob.Hq = prob.Hkv = prob.Tq = prob.Tk = 1;
  const unsigned flags = sfa__fwd_flags(params, extras);
  sfa_status st;
  if (call == SFA_PASS_FWD)
    return attention(ctx, &dev, &prob, SFA_PASS_FWD, dtype, head_dim, flags, specs, max, n);
  /* sfa_backward: the bwd kernel (det when deterministic) and its bwddq pass,
  ** then sfa__bwd_exec's preprocess and converts */
  const int det = params->deterministic != 0;
  if ((st = attention(ctx, &dev, &prob, SFA_PASS_BWD, dtype, head_dim,
                      flags | (det ? SFA_FEAT_DETERMINISTIC : 0u), specs, max, n)) != SFA_OK ||
      (det && (st = attention(ctx, &dev, &prob, SFA_PASS_BWD_DQ, dtype, head_dim, flags, specs,
                              max, n)) != SFA_OK) ||
      (st = utility(ctx, &dev, SFA_PASS_BWD_PRE, dtype, specs, max, n)) != SFA_OK ||
      (st = utility(ctx, &dev, SFA_PASS_CONVERT, dtype, specs, max, n)) != SFA_OK)
    return st;
  return SFA_OK;
}
