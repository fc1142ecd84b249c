/*
** nvrtc_lib.c -- loads libnvrtc with dlopen and resolves the NVRTC calls sfa
** makes into the table of nvrtc_lib.h, once per process. See nvrtc_lib.h for
** the search order.
*/
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/dlsyms.h"
#include "runtime/nvrtc_lib.h"

#ifndef SFA_CUDA_MAJOR
#define SFA_CUDA_MAJOR 13
#endif
#ifndef SFA_CUDA_LIBDIR
#define SFA_CUDA_LIBDIR "/usr/local/cuda/lib64"
#endif

#define ENTRY(f) {offsetof(sfa__nvrtc_api, f), {#f}, 0}
#define OPTIONAL(f) {offsetof(sfa__nvrtc_api, f), {#f}, 1}
static const sfa__dlsym syms[] = {
  ENTRY(nvrtcVersion),           ENTRY(nvrtcGetErrorString),
  ENTRY(nvrtcCreateProgram),     ENTRY(nvrtcCompileProgram),
  ENTRY(nvrtcGetProgramLogSize), ENTRY(nvrtcGetProgramLog),
  ENTRY(nvrtcGetCUBINSize),      ENTRY(nvrtcGetCUBIN),
  ENTRY(nvrtcDestroyProgram),    OPTIONAL(nvrtcGetNumSupportedArchs),
  OPTIONAL(nvrtcGetSupportedArchs),
};

static pthread_once_t once = PTHREAD_ONCE_INIT;
static sfa__nvrtc_api table;
static sfa_status load_status = SFA_ERR_COMPILE;
static char load_error[1024];
static char loaded_path[1024];

/* dlopen name and resolve the table; 1 on success, else why says why. */
static int try_open(const char *name, char *why, size_t n) {
  if (!sfa__dlopen_table(name, syms, sizeof syms / sizeof syms[0], &table, sizeof table, why, n))
    return 0;
  snprintf(loaded_path, sizeof loaded_path, "%s", name);
  return 1;
}

static void load(void) {
  char why[512] = "";
  const char *env = getenv("SFA_NVRTC_LIBRARY");
  if (env && *env) {
    if (try_open(env, why, sizeof why))
      load_status = SFA_OK;
    else
      snprintf(load_error, sizeof load_error,
               "NVRTC is not available: SFA_NVRTC_LIBRARY=%s cannot be loaded (%s)", env, why);
    return;
  }
  /* The toolkit major sfa was built with first, then the others whose NVRTC
  ** API is the same; by soname first, then in the usual toolkit dirs. */
  const int majors[] = {SFA_CUDA_MAJOR, SFA_CUDA_MAJOR == 13 ? 12 : 13};
  const char *home = getenv("CUDA_HOME");
  char dirs[3][256]; /* + "/libnvrtc.so.NN" fits name */
  snprintf(dirs[0], sizeof dirs[0], "%s/lib64", home && *home ? home : "/usr/local/cuda");
  snprintf(dirs[1], sizeof dirs[1], "/usr/local/cuda/lib64");
  snprintf(dirs[2], sizeof dirs[2], "%s", SFA_CUDA_LIBDIR);
  for (int m = 0; m < 2; m++) {
    char name[1024], w[512];
    snprintf(name, sizeof name, "libnvrtc.so.%d", majors[m]);
    if (try_open(name, w, sizeof w)) goto found;
    if (m == 0) snprintf(why, sizeof why, "%s", w);
    for (int d = 0; d < 3; d++) {
      snprintf(name, sizeof name, "%s/libnvrtc.so.%d", dirs[d], majors[m]);
      if (try_open(name, w, sizeof w)) goto found;
    }
  }
  snprintf(load_error, sizeof load_error,
           "NVRTC is not available: libnvrtc.so.%d not found (%s); install the CUDA toolkit's "
           "NVRTC, set SFA_NVRTC_LIBRARY to its path, or use ahead-of-time kernels (sfa-gen, "
           "SFA_KERNEL_DIR)", SFA_CUDA_MAJOR, why);
  return;
found:
  load_status = SFA_OK;
}

sfa_status sfa__nvrtc_load(const sfa__nvrtc_api **api, char *err, size_t errlen) {
  pthread_once(&once, load);
  if (load_status != SFA_OK) {
    if (api) *api = NULL;
    if (err && errlen) snprintf(err, errlen, "%s", load_error);
    return load_status;
  }
  if (api) *api = &table;
  return SFA_OK;
}

const char *sfa__nvrtc_path(void) { return loaded_path; }
