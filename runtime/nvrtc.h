/*
** nvrtc.h -- internal: the NVRTC compile options of a spec and the NVRTC
** version, which the cache folds into its key material. runtime/nvrtc.c
** implements them together with the public sfa_compile_cubin.
*/
#ifndef SFA_RUNTIME_NVRTC_H
#define SFA_RUNTIME_NVRTC_H

#include "sfa.h"

#define SFA__NVRTC_MAX_OPTIONS 8

/* The exact option list passed to nvrtcCompileProgram for spec->arch. */
typedef struct sfa__nvrtc_options {
  int count;
  const char *argv[SFA__NVRTC_MAX_OPTIONS];
  char arch[32];     /* storage for "--gpu-architecture=sm_XX" */
  char joined[256];  /* the options separated by single spaces */
} sfa__nvrtc_options;

void sfa__nvrtc_options_init(sfa__nvrtc_options *o, const sfa_kernel_spec *spec);

/* The same options as one string, e.g.
** "--gpu-architecture=sm_90 -std=c++17 --use_fast_math". Points into a
** thread-local buffer, valid until the calling thread's next call. */
const char *sfa__nvrtc_options_string(const sfa_kernel_spec *spec);

/* Compile source to a cubin with the options above for target (its arch, and
** sm_<arch>a where its flags ask for wgmma; other fields are not read); the
** program is named "<name>.cu" in the log. *cubin and *log (if log) are
** malloc'ed. On failure SFA_ERR_COMPILE with the head of the log in err. */
sfa_status sfa__nvrtc_compile(const char *name, const char *source,
                              const sfa_kernel_spec *target, void **cubin,
                              size_t *cubin_size, char **log, char *err, size_t errlen);

/* The same compile with ptxas's report in *log (--ptxas-options=-v: registers,
** spills, and advisories such as C7512, wgmma instructions serialized for want
** of registers), for tests; the cubin is the same. */
sfa_status sfa__nvrtc_compile_ptxas_info(const char *name, const char *source,
                                         const sfa_kernel_spec *target, void **cubin,
                                         size_t *cubin_size, char **log, char *err,
                                         size_t errlen);

/* NVRTC's version (nvrtcVersion); 0.0 if it cannot tell. */
void sfa__nvrtc_version(int *major, int *minor);

#endif
