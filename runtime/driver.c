/*
** driver.c -- loads libcuda.so.1 with dlopen and resolves the driver API into
** the table of driver.h, once per process. Nothing in sfa links against
** libcuda; a machine without the driver gets SFA_ERR_NO_DRIVER and a message
** that says so.
*/
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "runtime/dlsyms.h"
#include "runtime/driver.h"

/* One entry per member of sfa_driver: where it lives in the table and the
** symbol names to try, newest first (cuda.h's versioned names, then the
** original one). Optional entries may stay NULL. */
#define ENTRY(member, ...) { offsetof(sfa_driver, member), { __VA_ARGS__ }, 0 }
#define OPTIONAL(member, ...) { offsetof(sfa_driver, member), { __VA_ARGS__ }, 1 }

static const sfa__dlsym syms[] = {
  ENTRY(cuInit, "cuInit"),
  ENTRY(cuDriverGetVersion, "cuDriverGetVersion"),
  ENTRY(cuDeviceGet, "cuDeviceGet"),
  ENTRY(cuDeviceGetCount, "cuDeviceGetCount"),
  ENTRY(cuDeviceGetAttribute, "cuDeviceGetAttribute"),
  ENTRY(cuDeviceGetName, "cuDeviceGetName"),
  ENTRY(cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain"),
  ENTRY(cuDevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2", "cuDevicePrimaryCtxRelease"),
  ENTRY(cuCtxGetCurrent, "cuCtxGetCurrent"),
  ENTRY(cuCtxSetCurrent, "cuCtxSetCurrent"),
  ENTRY(cuCtxPushCurrent, "cuCtxPushCurrent_v2", "cuCtxPushCurrent"),
  ENTRY(cuCtxPopCurrent, "cuCtxPopCurrent_v2", "cuCtxPopCurrent"),
  ENTRY(cuCtxGetDevice, "cuCtxGetDevice"),
  ENTRY(cuCtxSynchronize, "cuCtxSynchronize"),
  OPTIONAL(cuCtxGetId, "cuCtxGetId"),
  ENTRY(cuModuleLoadData, "cuModuleLoadData"),
  ENTRY(cuModuleUnload, "cuModuleUnload"),
  ENTRY(cuModuleGetFunction, "cuModuleGetFunction"),
  ENTRY(cuFuncSetAttribute, "cuFuncSetAttribute"),
  ENTRY(cuFuncGetAttribute, "cuFuncGetAttribute"),
  ENTRY(cuLaunchKernel, "cuLaunchKernel"),
  ENTRY(cuGetErrorName, "cuGetErrorName"),
  ENTRY(cuGetErrorString, "cuGetErrorString"),
  ENTRY(cuMemAlloc, "cuMemAlloc_v2"),
  ENTRY(cuMemFree, "cuMemFree_v2"),
  ENTRY(cuMemcpyHtoD, "cuMemcpyHtoD_v2"),
  ENTRY(cuMemcpyDtoH, "cuMemcpyDtoH_v2"),
  ENTRY(cuMemsetD8, "cuMemsetD8_v2"),
  ENTRY(cuMemsetD32Async, "cuMemsetD32Async"),
  ENTRY(cuMemFreeAsync, "cuMemFreeAsync"),
  ENTRY(cuMemPoolCreate, "cuMemPoolCreate"),
  ENTRY(cuMemPoolDestroy, "cuMemPoolDestroy"),
  ENTRY(cuMemPoolSetAttribute, "cuMemPoolSetAttribute"),
  ENTRY(cuMemAllocFromPoolAsync, "cuMemAllocFromPoolAsync"),
  ENTRY(cuStreamCreate, "cuStreamCreate"),
  ENTRY(cuStreamDestroy, "cuStreamDestroy_v2", "cuStreamDestroy"),
  ENTRY(cuStreamSynchronize, "cuStreamSynchronize"),
  ENTRY(cuEventCreate, "cuEventCreate"),
  ENTRY(cuEventRecord, "cuEventRecord"),
  ENTRY(cuEventSynchronize, "cuEventSynchronize"),
  ENTRY(cuEventElapsedTime, "cuEventElapsedTime_v2", "cuEventElapsedTime"),
  ENTRY(cuEventDestroy, "cuEventDestroy_v2", "cuEventDestroy"),
  ENTRY(cuPointerGetAttribute, "cuPointerGetAttribute"),
  OPTIONAL(cuTensorMapEncodeTiled, "cuTensorMapEncodeTiled"),
  OPTIONAL(cuTensorMapReplaceAddress, "cuTensorMapReplaceAddress"),
};

static pthread_once_t once = PTHREAD_ONCE_INIT;
static sfa_driver table;
static sfa_status load_status = SFA_ERR_NO_DRIVER;
static char load_error[1024];

static void load(void) {
  char why[400];
  if (!sfa__dlopen_table("libcuda.so.1", syms, sizeof syms / sizeof syms[0], &table,
                         sizeof table, why, sizeof why)) {
    if (strstr(why, "has no symbol"))
      snprintf(load_error, sizeof load_error, "%s: the NVIDIA driver is too old", why);
    else
      snprintf(load_error, sizeof load_error,
               "libcuda.so.1 not found (%s): no NVIDIA driver on this machine", why);
    return;
  }
  CUresult r = table.cuInit(0);
  if (r != CUDA_SUCCESS) {
    sfa__cuda_error(r, "cuInit", why, sizeof why);
    int version = 0;
    table.cuDriverGetVersion(&version);
    snprintf(load_error, sizeof load_error, "%s (driver supports CUDA %d.%d)", why,
             version / 1000, version % 1000 / 10);
    return; /* keep the library loaded: its table may still be used for error names */
  }
  load_status = SFA_OK;
}

sfa_status sfa__driver_load(const sfa_driver **drv, char *err, size_t errlen) {
  pthread_once(&once, load);
  if (load_status != SFA_OK) {
    if (drv) *drv = NULL;
    if (err && errlen) snprintf(err, errlen, "%s", load_error);
    return load_status;
  }
  if (drv) *drv = &table;
  return SFA_OK;
}

sfa_status sfa__cuda_error(CUresult r, const char *what, char *err, size_t errlen) {
  const char *name = NULL, *desc = NULL;
  if (table.cuGetErrorName && table.cuGetErrorName(r, &name) != CUDA_SUCCESS) name = NULL;
  if (table.cuGetErrorString && table.cuGetErrorString(r, &desc) != CUDA_SUCCESS) desc = NULL;
  if (err && errlen) {
    if (name)
      snprintf(err, errlen, "%s: %s (%s)", what, name, desc ? desc : "no description");
    else
      snprintf(err, errlen, "%s: CUDA error %d", what, (int)r);
  }
  return r == CUDA_ERROR_OUT_OF_MEMORY ? SFA_ERR_OUT_OF_MEMORY : SFA_ERR_CUDA;
}
