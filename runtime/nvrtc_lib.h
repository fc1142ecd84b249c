/*
** nvrtc_lib.h -- NVRTC as a table of function pointers, resolved from
** libnvrtc with dlopen on first use (runtime/nvrtc_lib.c). libsfa has no
** link-time dependency on NVRTC: a process that only loads ahead-of-time
** kernels (sfa-gen's kernel dirs) or cubins from the disk cache never needs
** it, and a machine without it gets a clear error on the first compile.
**
** Where it is looked for, first hit wins:
**   $SFA_NVRTC_LIBRARY   a path or file name; when set, nothing else is tried
**                        (point it at a missing file to forbid compiling);
**   libnvrtc.so.<M>      by soname, M = the toolkit major sfa was built with,
**                        then the other supported majors;
**   $CUDA_HOME/lib64, /usr/local/cuda/lib64 and the build's toolkit library
**                        dir, each with the same file names.
** nvrtc.h is used for its types only.
*/
#ifndef SFA_RUNTIME_NVRTC_LIB_H
#define SFA_RUNTIME_NVRTC_LIB_H

#include <stddef.h>
#include <nvrtc.h>

#include "sfa.h"

typedef struct sfa__nvrtc_api {
  nvrtcResult (*nvrtcVersion)(int *major, int *minor);
  const char *(*nvrtcGetErrorString)(nvrtcResult r);
  nvrtcResult (*nvrtcCreateProgram)(nvrtcProgram *prog, const char *src, const char *name,
                                    int num_headers, const char *const *headers,
                                    const char *const *include_names);
  nvrtcResult (*nvrtcCompileProgram)(nvrtcProgram prog, int num_options,
                                     const char *const *options);
  nvrtcResult (*nvrtcGetProgramLogSize)(nvrtcProgram prog, size_t *size);
  nvrtcResult (*nvrtcGetProgramLog)(nvrtcProgram prog, char *log);
  nvrtcResult (*nvrtcGetCUBINSize)(nvrtcProgram prog, size_t *size);
  nvrtcResult (*nvrtcGetCUBIN)(nvrtcProgram prog, char *cubin);
  nvrtcResult (*nvrtcDestroyProgram)(nvrtcProgram *prog);
  /* optional (NULL where the library lacks them) */
  nvrtcResult (*nvrtcGetNumSupportedArchs)(int *count);
  nvrtcResult (*nvrtcGetSupportedArchs)(int *archs);
} sfa__nvrtc_api;

/* The table, loaded once per process. On failure SFA_ERR_COMPILE with a
** message that names what was tried and how to fix it; *api is then NULL. */
sfa_status sfa__nvrtc_load(const sfa__nvrtc_api **api, char *err, size_t errlen);

/* The file the table came from ("" before a successful load). */
const char *sfa__nvrtc_path(void);

#endif
