/*
** driver.h -- the CUDA driver API as a table of function pointers, resolved
** from libcuda.so.1 with dlopen on first use. sfa never links against libcuda,
** so a machine without a driver still runs everything that does not launch a
** kernel (validation, generation, NVRTC, the cache) and gets a clear
** SFA_ERR_NO_DRIVER from the rest.
**
** cuda.h is used for its types only. Note that cuda.h #defines several API names
** to versioned symbols (cuMemAlloc -> cuMemAlloc_v2, ...); the members below
** carry the plain API names, and the same macros rename a member consistently
** wherever it is written, so `drv->cuMemAlloc(...)` always calls the symbol that
** driver.c resolved for it (the _v2 one).
*/
#ifndef SFA_RUNTIME_DRIVER_H
#define SFA_RUNTIME_DRIVER_H

#include <stddef.h>
#include <cuda.h>

#include "sfa.h"

typedef struct sfa_driver {
  CUresult (*cuInit)(unsigned int flags);
  CUresult (*cuDriverGetVersion)(int *version);
  CUresult (*cuDeviceGet)(CUdevice *dev, int ordinal);
  CUresult (*cuDeviceGetCount)(int *count);
  CUresult (*cuDeviceGetAttribute)(int *pi, CUdevice_attribute attrib, CUdevice dev);
  CUresult (*cuDeviceGetName)(char *name, int len, CUdevice dev);
  CUresult (*cuDevicePrimaryCtxRetain)(CUcontext *pctx, CUdevice dev);
  CUresult (*cuDevicePrimaryCtxRelease)(CUdevice dev);
  CUresult (*cuCtxGetCurrent)(CUcontext *pctx);
  CUresult (*cuCtxSetCurrent)(CUcontext ctx);
  CUresult (*cuCtxPushCurrent)(CUcontext ctx);
  CUresult (*cuCtxPopCurrent)(CUcontext *pctx);
  CUresult (*cuCtxGetDevice)(CUdevice *device);
  CUresult (*cuCtxSynchronize)(void);
  CUresult (*cuCtxGetId)(CUcontext ctx, unsigned long long *id); /* NULL before CUDA 12.0 */
  CUresult (*cuModuleLoadData)(CUmodule *module, const void *image);
  CUresult (*cuModuleUnload)(CUmodule hmod);
  CUresult (*cuModuleGetFunction)(CUfunction *hfunc, CUmodule hmod, const char *name);
  CUresult (*cuFuncSetAttribute)(CUfunction hfunc, CUfunction_attribute attrib, int value);
  CUresult (*cuFuncGetAttribute)(int *pi, CUfunction_attribute attrib, CUfunction hfunc);
  CUresult (*cuLaunchKernel)(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz,
                             unsigned int bx, unsigned int by, unsigned int bz,
                             unsigned int smem, CUstream stream, void **params, void **extra);
  CUresult (*cuGetErrorName)(CUresult error, const char **pstr);
  CUresult (*cuGetErrorString)(CUresult error, const char **pstr);
  CUresult (*cuMemAlloc)(CUdeviceptr *dptr, size_t bytesize);
  CUresult (*cuMemFree)(CUdeviceptr dptr);
  CUresult (*cuMemcpyHtoD)(CUdeviceptr dst, const void *src, size_t bytes);
  CUresult (*cuMemcpyDtoH)(void *dst, CUdeviceptr src, size_t bytes);
  CUresult (*cuMemsetD8)(CUdeviceptr dst, unsigned char uc, size_t n);
  CUresult (*cuMemsetD32Async)(CUdeviceptr dst, unsigned int ui, size_t n, CUstream stream);
  CUresult (*cuMemFreeAsync)(CUdeviceptr dptr, CUstream stream);
  CUresult (*cuMemPoolCreate)(CUmemoryPool *pool, const CUmemPoolProps *props);
  CUresult (*cuMemPoolDestroy)(CUmemoryPool pool);
  CUresult (*cuMemPoolSetAttribute)(CUmemoryPool pool, CUmemPool_attribute attr, void *value);
  CUresult (*cuMemAllocFromPoolAsync)(CUdeviceptr *dptr, size_t bytesize, CUmemoryPool pool,
                                      CUstream stream);
  CUresult (*cuStreamCreate)(CUstream *phStream, unsigned int flags);
  CUresult (*cuStreamDestroy)(CUstream hStream);
  CUresult (*cuStreamSynchronize)(CUstream hStream);
  CUresult (*cuEventCreate)(CUevent *phEvent, unsigned int flags);
  CUresult (*cuEventRecord)(CUevent hEvent, CUstream hStream);
  CUresult (*cuEventSynchronize)(CUevent hEvent);
  CUresult (*cuEventElapsedTime)(float *ms, CUevent hStart, CUevent hEnd);
  CUresult (*cuEventDestroy)(CUevent hEvent);
  CUresult (*cuPointerGetAttribute)(void *data, CUpointer_attribute attribute, CUdeviceptr ptr);
  /* NULL before CUDA 12.0: the warp-specialized kernels' tensor maps (runtime/tma.c) */
  CUresult (*cuTensorMapEncodeTiled)(CUtensorMap *map, CUtensorMapDataType type, cuuint32_t rank,
                                     void *addr, const cuuint64_t *dim, const cuuint64_t *strides,
                                     const cuuint32_t *box, const cuuint32_t *elem_strides,
                                     CUtensorMapInterleave interleave, CUtensorMapSwizzle swizzle,
                                     CUtensorMapL2promotion l2, CUtensorMapFloatOOBfill oob);
  /* NULL before CUDA 12.0: a map of another tensor of the same shape, strides and box */
  CUresult (*cuTensorMapReplaceAddress)(CUtensorMap *map, void *addr);
} sfa_driver;

/* Load libcuda.so.1 and call cuInit(0), once per process (thread-safe). On
** success *drv points at the process-wide table. Without a driver, or when
** cuInit fails (no device, driver too old), returns SFA_ERR_NO_DRIVER with the
** reason in err; the result is remembered, so later calls fail the same way
** cheaply. */
sfa_status sfa__driver_load(const sfa_driver **drv, char *err, size_t errlen);

/* Writes "<what>: CUDA_ERROR_NAME (description)" into err and returns
** SFA_ERR_CUDA (or SFA_ERR_OUT_OF_MEMORY for CUDA_ERROR_OUT_OF_MEMORY). */
sfa_status sfa__cuda_error(CUresult r, const char *what, char *err, size_t errlen);

#endif
