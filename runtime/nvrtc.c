/*
** nvrtc.c -- compiles generated CUDA C++ to a cubin with NVRTC (no GPU
** needed). The option list lives in sfa__nvrtc_options_init only, so the cache
** key and the compile can never disagree. NVRTC itself is reached through
** the dlopen'd table of runtime/nvrtc_lib.h.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gen/arch.h"
#include "gen/gen_internal.h"
#include "runtime/nvrtc.h"
#include "runtime/nvrtc_lib.h"

/* How much of a failing log goes into err (the whole log goes to *log). */
#define LOG_IN_ERR 4000

void sfa__nvrtc_options_init(sfa__nvrtc_options *o, const sfa_kernel_spec *spec) {
  memset(o, 0, sizeof *o);
  /* The arch table's target (wgmma: sm_90a, which runs on compute capability 9.0 only). */
  sfa__arch_gpu_option(o->arch, sizeof o->arch, spec ? spec->arch : 0,
                       spec && sfa__spec_is_wgmma(spec));
  o->argv[o->count++] = o->arch;
  o->argv[o->count++] = "-std=c++17";
  o->argv[o->count++] = "--use_fast_math";
  for (int i = 0; i < o->count; i++) {
    if (i) strncat(o->joined, " ", sizeof o->joined - strlen(o->joined) - 1);
    strncat(o->joined, o->argv[i], sizeof o->joined - strlen(o->joined) - 1);
  }
}

const char *sfa__nvrtc_options_string(const sfa_kernel_spec *spec) {
  static _Thread_local sfa__nvrtc_options o;
  sfa__nvrtc_options_init(&o, spec);
  return o.joined;
}

void sfa__nvrtc_version(int *major, int *minor) {
  int a = 0, b = 0;
  const sfa__nvrtc_api *nv = NULL;
  if (sfa__nvrtc_load(&nv, NULL, 0) != SFA_OK || nv->nvrtcVersion(&a, &b) != NVRTC_SUCCESS)
    a = b = 0;
  if (major) *major = a;
  if (minor) *minor = b;
}

/* The program's log, malloc'ed ("" when empty), or NULL without memory. */
static char *program_log(const sfa__nvrtc_api *nv, nvrtcProgram prog) {
  size_t n = 0;
  if (nv->nvrtcGetProgramLogSize(prog, &n) != NVRTC_SUCCESS) n = 0;
  char *log = malloc(n + 1);
  if (!log) return NULL;
  log[0] = '\0';
  if (n > 0 && nv->nvrtcGetProgramLog(prog, log) != NVRTC_SUCCESS) log[0] = '\0';
  log[n] = '\0';
  return log;
}

/* sfa__nvrtc_compile, with one more option after the list (NULL: none). */
static sfa_status compile_with(const char *name, const char *source, const sfa_kernel_spec *target,
                               const char *extra, void **cubin, size_t *cubin_size, char **log,
                               char *err, size_t errlen) {
  if (log) *log = NULL;
  if (!cubin || !cubin_size)
    return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT, "cubin: NULL");
  *cubin = NULL;
  *cubin_size = 0;
  if (!name || !source || !target)
    return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT, "%s: NULL",
                     !name ? "name" : !source ? "source" : "target");
  const sfa__nvrtc_api *nv = NULL;
  sfa_status ls = sfa__nvrtc_load(&nv, err, errlen);
  if (ls != SFA_OK) return ls;
  sfa__nvrtc_options opts;
  sfa__nvrtc_options_init(&opts, target);
  if (extra) {
    if (opts.count >= SFA__NVRTC_MAX_OPTIONS)
      return sfa__fail(err, errlen, SFA_ERR_INTERNAL, "NVRTC options: no room for %s", extra);
    opts.argv[opts.count++] = extra;
  }
  char file[SFA__NAME_MAX + 8];
  snprintf(file, sizeof file, "%s.cu", name);

  nvrtcProgram prog = NULL;
  char *text = NULL;
  sfa_status st = SFA_OK;
  nvrtcResult r = nv->nvrtcCreateProgram(&prog, source, file, 0, NULL, NULL);
  if (r != NVRTC_SUCCESS) {
    st = sfa__fail(err, errlen,
                   r == NVRTC_ERROR_OUT_OF_MEMORY ? SFA_ERR_OUT_OF_MEMORY : SFA_ERR_COMPILE,
                   "nvrtc: cannot create program %s: %s", file, nv->nvrtcGetErrorString(r));
    goto done;
  }
  r = nv->nvrtcCompileProgram(prog, opts.count, opts.argv);
  text = program_log(nv, prog);
  if (r != NVRTC_SUCCESS) {
    st = sfa__fail(err, errlen, SFA_ERR_COMPILE, "nvrtc: compiling %s (%s) failed: %s\n%.4000s",
                   file, opts.joined, nv->nvrtcGetErrorString(r), text ? text : "");
    goto done;
  }
  size_t n = 0;
  if ((r = nv->nvrtcGetCUBINSize(prog, &n)) != NVRTC_SUCCESS || n == 0) {
    st = sfa__fail(err, errlen, SFA_ERR_COMPILE, "nvrtc: no cubin for %s: %s", file,
                   r != NVRTC_SUCCESS ? nv->nvrtcGetErrorString(r) : "empty");
    goto done;
  }
  void *bin = malloc(n);
  if (!bin) {
    st = sfa__fail(err, errlen, SFA_ERR_OUT_OF_MEMORY, "no memory for a %zu-byte cubin", n);
    goto done;
  }
  if ((r = nv->nvrtcGetCUBIN(prog, bin)) != NVRTC_SUCCESS) {
    free(bin);
    st = sfa__fail(err, errlen, SFA_ERR_COMPILE, "nvrtc: cannot fetch the cubin of %s: %s", file,
                   nv->nvrtcGetErrorString(r));
    goto done;
  }
  *cubin = bin;
  *cubin_size = n;
done:
  if (prog) nv->nvrtcDestroyProgram(&prog);
  if (log)
    *log = text;
  else
    free(text);
  return st;
}

sfa_status sfa__nvrtc_compile(const char *name, const char *source,
                              const sfa_kernel_spec *target, void **cubin,
                              size_t *cubin_size, char **log, char *err, size_t errlen) {
  return compile_with(name, source, target, NULL, cubin, cubin_size, log, err, errlen);
}

sfa_status sfa__nvrtc_compile_ptxas_info(const char *name, const char *source,
                                         const sfa_kernel_spec *target, void **cubin,
                                         size_t *cubin_size, char **log, char *err,
                                         size_t errlen) {
  return compile_with(name, source, target, "--ptxas-options=-v", cubin, cubin_size, log, err,
                      errlen);
}


sfa_status sfa_compile_cubin(const sfa_kernel_spec *spec, const char *source,
                             void **cubin, size_t *cubin_size, char **log,
                             char *err, size_t errlen) {
  char name[SFA__NAME_MAX], *generated = NULL;
  sfa_status st;
  if (log) *log = NULL;
  if (!cubin || !cubin_size)
    return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT, "cubin: NULL");
  *cubin = NULL;
  *cubin_size = 0;
  if ((st = sfa_spec_validate(spec, err, errlen)) != SFA_OK) return st;
  if (!source) {
    if ((st = sfa_generate(spec, &generated, err, errlen)) != SFA_OK) return st;
    source = generated;
  }
  sfa_spec_name(spec, name, sizeof name);
  st = sfa__nvrtc_compile(name, source, spec, cubin, cubin_size, log, err, errlen);
  free(generated);
  return st;
}
