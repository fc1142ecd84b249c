/*
** cuda_loader.h -- the few CUDA driver calls the examples make (memory,
** streams, events), resolved from libcuda.so.1 with dlopen when a run starts.
** The examples link no CUDA library, like libsfa itself: `--help`, argument
** errors and validation work on a machine without a driver, and a run there
** fails with a message instead of the loader's "libcuda.so.1 not found".
**
** cuda.h is used for its types only. Its macros rename some API names to
** versioned symbols (cuMemAlloc -> cuMemAlloc_v2); the members here have
** names of their own and are looked up by their exported symbol names.
*/
#ifndef SFA_EXAMPLES_CUDA_LOADER_H
#define SFA_EXAMPLES_CUDA_LOADER_H

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include <cuda.h>

typedef struct cuda_api {
  CUresult (*Init)(unsigned int);
  CUresult (*DeviceGet)(CUdevice *, int);
  CUresult (*DeviceGetName)(char *, int, CUdevice);
  CUresult (*DeviceGetAttribute)(int *, CUdevice_attribute, CUdevice);
  CUresult (*DevicePrimaryCtxRetain)(CUcontext *, CUdevice);
  CUresult (*DevicePrimaryCtxRelease)(CUdevice);
  CUresult (*CtxSetCurrent)(CUcontext);
  CUresult (*StreamCreate)(CUstream *, unsigned int);
  CUresult (*StreamSynchronize)(CUstream);
  CUresult (*StreamDestroy)(CUstream);
  CUresult (*MemAlloc)(CUdeviceptr *, size_t);
  CUresult (*MemFree)(CUdeviceptr);
  CUresult (*MemcpyHtoD)(CUdeviceptr, const void *, size_t);
  CUresult (*MemcpyDtoH)(void *, CUdeviceptr, size_t);
  CUresult (*MemsetD8)(CUdeviceptr, unsigned char, size_t);
  CUresult (*EventCreate)(CUevent *, unsigned int);
  CUresult (*EventRecord)(CUevent, CUstream);
  CUresult (*EventElapsedTime)(float *, CUevent, CUevent);
  CUresult (*EventDestroy)(CUevent);
  CUresult (*GetErrorName)(CUresult, const char **);
  CUresult (*GetErrorString)(CUresult, const char **);
} cuda_api;

/* Fills *cu; 0 with a message on stderr (prefixed by prog) when the driver
** or one of its symbols is missing. */
static int cuda_load(cuda_api *cu, const char *prog) {
  static const struct { size_t off; const char *sym; } syms[] = {
#define S(m, s) {offsetof(cuda_api, m), s}
    S(Init, "cuInit"), S(DeviceGet, "cuDeviceGet"), S(DeviceGetName, "cuDeviceGetName"),
    S(DeviceGetAttribute, "cuDeviceGetAttribute"),
    S(DevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain"),
    S(DevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2"),
    S(CtxSetCurrent, "cuCtxSetCurrent"), S(StreamCreate, "cuStreamCreate"),
    S(StreamSynchronize, "cuStreamSynchronize"), S(StreamDestroy, "cuStreamDestroy_v2"),
    S(MemAlloc, "cuMemAlloc_v2"), S(MemFree, "cuMemFree_v2"), S(MemcpyHtoD, "cuMemcpyHtoD_v2"),
    S(MemcpyDtoH, "cuMemcpyDtoH_v2"), S(MemsetD8, "cuMemsetD8_v2"),
    S(EventCreate, "cuEventCreate"),
    S(EventRecord, "cuEventRecord"),
    /* the unversioned symbol: drivers before CUDA 12.8 lack the _v2 one, and
    ** both mean the same for events recorded on one device */
    S(EventElapsedTime, "cuEventElapsedTime"), S(EventDestroy, "cuEventDestroy_v2"),
    S(GetErrorName, "cuGetErrorName"), S(GetErrorString, "cuGetErrorString"),
#undef S
  };
  memset(cu, 0, sizeof *cu);
  void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    const char *why = dlerror();
    fprintf(stderr, "%s: no NVIDIA driver on this machine (%s)\n", prog, why ? why : "dlopen failed");
    return 0;
  }
  for (size_t i = 0; i < sizeof syms / sizeof syms[0]; i++) {
    void *fn = dlsym(lib, syms[i].sym);
    if (!fn) {
      fprintf(stderr, "%s: libcuda.so.1 has no %s: the driver is too old\n", prog, syms[i].sym);
      return 0;
    }
    memcpy((char *)cu + syms[i].off, &fn, sizeof fn);
  }
  return 1;
}

#endif
