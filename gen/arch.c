/*
** arch.c -- the table of the GPU architectures sfa knows and its queries
** (arch.h). The rows are exactly the archs from sm_80 on that CUDA 13's NVRTC
** compiles for (nvrtcGetSupportedArchs; tests/test_arch.c checks it). The
** shared memory a block can opt into is the SM's capacity less the 1 KB the
** driver reserves per block, from the CUDA C++ Programming Guide's technical
** specifications per compute capability: 164 KB SMs (8.0, 8.7) give 163 KB,
** 100 KB SMs (8.6, 8.8, 8.9, 12.x) 99 KB, 228 KB SMs (9.0, 10.x, 11.0) 227 KB.
*/
#include <stdio.h>
#include <string.h>

#include "gen/arch.h"
#include "gen/gen_internal.h"

#define KB 1024u
#define SYNC SFA__MMA_SYNC

static const sfa__arch rows[] = {
  {80, 163 * KB, SYNC, "sm_80", NULL},   /* A100 */
  {86, 99 * KB, SYNC, "sm_86", NULL},    /* GA10x */
  {87, 163 * KB, SYNC, "sm_87", NULL},   /* Orin */
  {88, 99 * KB, SYNC, "sm_88", NULL},
  {89, 99 * KB, SYNC, "sm_89", NULL},    /* Ada */
  {90, 227 * KB, SYNC | SFA__MMA_WGMMA, "sm_90", "sm_90a"}, /* Hopper */
  {100, 227 * KB, SYNC, "sm_100", NULL}, /* B200 */
  {103, 227 * KB, SYNC, "sm_103", NULL}, /* B300 */
  {110, 227 * KB, SYNC, "sm_110", NULL}, /* Thor */
  {120, 99 * KB, SYNC, "sm_120", NULL},  /* RTX Blackwell */
  {121, 99 * KB, SYNC, "sm_121", NULL},  /* GB10 */
};
#define NROWS (sizeof rows / sizeof rows[0])

const sfa__arch *sfa__arch_table(size_t *n) {
  if (n) *n = NROWS;
  return rows;
}

const sfa__arch *sfa__arch_find(int arch) {
  for (size_t i = 0; i < NROWS; i++)
    if (rows[i].arch == arch) return &rows[i];
  return NULL;
}

const sfa__arch *sfa__arch_for_cc(int cc) {
  const sfa__arch *best = NULL;
  for (size_t i = 0; i < NROWS; i++)
    if (rows[i].arch / 10 == cc / 10 && rows[i].arch <= cc) best = &rows[i];
  return best;
}

size_t sfa__arch_smem_limit(int arch) {
  const sfa__arch *a = sfa__arch_find(arch);
  return a ? a->smem_optin : 0;
}

int sfa__arch_runs_on(int arch, int wgmma, int cc) {
  const sfa__arch *a = sfa__arch_find(arch);
  if (!a || (wgmma && !a->wg_target)) return 0;
  if (wgmma) return cc == arch; /* an "a" target: that compute capability only */
  return cc / 10 == arch / 10 && cc % 10 >= arch % 10;
}

void sfa__arch_list(char *buf, size_t n, const char *prefix, const char *sep,
                    const char *last_sep) {
  size_t at = 0;
  if (!buf || n == 0) return;
  buf[0] = '\0';
  for (size_t i = 0; i < NROWS && at < n; i++) {
    const char *s = i == 0 ? "" : i + 1 == NROWS ? last_sep : sep;
    int len = snprintf(buf + at, n - at, "%s%s%d", s, prefix, rows[i].arch);
    if (len < 0) break;
    at += (size_t)len;
  }
}

sfa_status sfa__arch_of_device(int cc, int *arch, char *err, size_t errlen) {
  const sfa__arch *a = sfa__arch_for_cc(cc);
  if (a) {
    if (arch) *arch = a->arch;
    return SFA_OK;
  }
  char list[160];
  sfa__arch_list(list, sizeof list, "sm_", ", ", ", ");
  return sfa__fail(err, errlen, SFA_ERR_UNSUPPORTED,
                   "compute capability %d.%d (sm_%d) is not supported by this sfa; "
                   "supported: %s",
                   cc / 10, cc % 10, cc, list);
}

void sfa__arch_gpu_option(char *buf, size_t n, int arch, int wgmma) {
  const sfa__arch *a = sfa__arch_find(arch);
  const char *target = a ? (wgmma && a->wg_target ? a->wg_target : a->target) : NULL;
  if (target)
    snprintf(buf, n, "--gpu-architecture=%s", target);
  else
    snprintf(buf, n, "--gpu-architecture=sm_%d", arch);
}
