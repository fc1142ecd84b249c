/*
** arch.h -- the one table of the GPU architectures sfa knows (gen/arch.c).
** One row per arch that CUDA 13's NVRTC compiles for from sm_80 on: its
** opt-in shared memory per block, the mma kinds sfa has for it, its NVRTC
** targets, and the binary-compatibility rule of its cubins. Spec validation,
** the defaults, the presets, sfa-gen, the NVRTC options and the device's arch
** in the runtime all read it; nothing else switches on arch numbers.
*/
#ifndef SFA_GEN_ARCH_H
#define SFA_GEN_ARCH_H

#include <stddef.h>

#include "sfa.h"

/* The tensor-core instructions of a row (sfa__arch.mma). */
#define SFA__MMA_SYNC 1u  /* mma.sync: every arch */
#define SFA__MMA_WGMMA 2u /* warpgroup MMA (spec mma SFA_SPEC_MMA_WGMMA): sm_90, as sm_90a */

typedef struct sfa__arch {
  int arch;             /* compute capability * 10 + minor: 80, 86, ..., 121 */
  size_t smem_optin;    /* bytes of shared memory one block can opt into */
  unsigned mma;         /* SFA__MMA_* */
  const char *target;   /* NVRTC target of mma.sync code, e.g. "sm_100": the cubin
                           runs on compute capability X.Z for X.Y = arch and Z >= Y */
  const char *wg_target; /* NVRTC target of wgmma code ("sm_90a"), NULL without
                           wgmma: an "a" cubin runs on exactly that compute capability */
} sfa__arch;

/* Every row, ascending by arch; *n gets their count. */
const sfa__arch *sfa__arch_table(size_t *n);

/* The row of arch, or NULL when sfa does not know it. */
const sfa__arch *sfa__arch_find(int arch);

/* The row a device of compute capability cc (major * 10 + minor) runs best:
** the exact row, else the nearest lower row of the same major (its cubins run
** there); NULL where there is none (cc before 8.0, or a major sfa does not
** know, e.g. 13.0). */
const sfa__arch *sfa__arch_for_cc(int cc);

/* sfa__arch_for_cc's arch in *arch, or SFA_ERR_UNSUPPORTED with a message
** that names the cc and the supported archs, e.g. "compute capability 13.0
** (sm_130) is not supported by this sfa; supported: sm_80, sm_86, ... sm_121". */
sfa_status sfa__arch_of_device(int cc, int *arch, char *err, size_t errlen);

/* 1 where a cubin of arch (wgmma: its wg_target) runs on a device of
** compute capability cc: the same major and a minor at least arch's, or for
** an "a" target exactly that cc. 0 for an arch the table does not have. */
int sfa__arch_runs_on(int arch, int wgmma, int cc);

/* The archs as "80, 86, ... or 121" (prefix before each, e.g. "sm_", and
** last_sep before the last, e.g. " or "; sep between the others). */
void sfa__arch_list(char *buf, size_t n, const char *prefix, const char *sep,
                    const char *last_sep);

/* The NVRTC option "--gpu-architecture=<target>" for arch (wgmma: its
** wg_target) into buf; an arch the table does not have gives "sm_<arch>",
** which NVRTC then refuses with its own message. */
void sfa__arch_gpu_option(char *buf, size_t n, int arch, int wgmma);

#endif
