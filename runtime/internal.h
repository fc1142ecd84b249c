/*
** internal.h -- what the runtime's files share and users do not see: the
** context and kernel structs (a kernel carries its variant descriptor, from
** which it is launched), error helpers, and the per-call binding to the
** calling thread's CUDA context.
*/
#ifndef SFA_RUNTIME_INTERNAL_H
#define SFA_RUNTIME_INTERNAL_H

#include <pthread.h>
#include <stddef.h>

#include "sfa.h"
#include "cache/store.h"
#include "gen/variant.h"
#include "runtime/driver.h"
#include "runtime/nvrtc.h"

#define SFA__ERRBUF 4096
#define SFA__KERNEL_NAME 128

/* A loaded variant: owned by the context's kernel table, freed at destroy.
** Every launch takes its block, dynamic shared memory and grid rule from var
** (gen/variant.h), the descriptor the kernel's source was rendered from. */
struct sfa_kernel {
  CUcontext cu;            /* the CUDA context the module was loaded into */
  unsigned long long cu_id; /* cuCtxGetId of cu (0 if the driver cannot tell) */
  sfa_kernel_spec spec;
  sfa__variant var;        /* threads, smem_bytes, grid, plan, util constants */
  char name[SFA__KERNEL_NAME]; /* canonical name = entry symbol */
  CUmodule module;
  CUfunction fn;
  CUfunction plan_fn;       /* var.has_plan: the entry "<name><var.plan.suffix>", else NULL */
};

/* What sfa needs to know about a CUDA context; cached per context. */
typedef struct sfa__device {
  CUcontext cu;
  unsigned long long cu_id;
  CUdevice dev;
  int cc;        /* compute capability * 10 + minor, as reported */
  int arch;      /* the arch sfa compiles for: the arch table's row for cc, the
                    exact one or else the nearest lower of its major
                    (sfa__arch_of_device, gen/arch.h) */
  int smem_optin; /* max dynamic shared memory per block after opt-in */
  int sms;        /* streaming multiprocessors (sfa_decode's split count) */
} sfa__device;

/* Where the kernels that a context loaded came from (sfa__kernel_get's
** misses, counted under the context's lock); for tests and verbose runs. */
typedef struct sfa__kernel_stats {
  size_t from_dirs;     /* cubins from the AOT kernel dirs */
  size_t from_cache;    /* cubins from the disk cache */
  size_t compiles;      /* NVRTC compiles attempted, successful or not */
} sfa__kernel_stats;

struct sfa_context {
  sfa_options opts;
  char *cache_dir;          /* owned copy of opts.cache_dir (opts points at it) */
  pthread_mutex_t lock;     /* guards everything below except err */

  sfa_store *store;         /* opened on the first compile that needs it */
  int store_tried;

  int primary_retained;     /* we retained the primary context of primary_dev */
  CUdevice primary_dev;
  CUcontext primary;

  sfa__device *devices;     /* per-context info, a short array */
  int ndevices, cap_devices;

  sfa_kernel **slots;       /* open-addressing hash table keyed by (context, spec) */
  size_t nslots, nkernels;

  sfa__kernel_stats stats;  /* where the kernels came from */

  struct sfa__pool *pools;  /* the backward's workspace pools, one per device
                            ** (runtime/workspace.c), destroyed with the context */
  int npools, cap_pools;

  struct sfa__kernel_dirs *kdirs; /* AOT kernel directories searched before the cache
                                  ** (runtime/kernel_dir.h; has its own mutex) */
  struct sfa__select *select;     /* the tuning policy's memo, tuning dbs and hooks
                                  ** (runtime/select.c; has its own mutexes) */

  char err[SFA__ERRBUF];    /* sfa_last_error; written without the lock, so failing calls
                            ** on several threads at once may mix their messages */
};

/* The backward's float workspace (runtime/workspace.c): bytes from the
** context's memory pool of dev's device, stream-ordered on stream (give it
** back with cuMemFreeAsync). The pool keeps freed memory for the next call
** (release threshold: never), so that a training step does not map and unmap
** it each time; sfa_context_destroy gives it back. */
sfa_status sfa__workspace_alloc(sfa_context *ctx, const sfa_driver *d, const sfa__device *dev,
                                size_t bytes, CUstream stream, CUdeviceptr *ptr);
/* Destroys the pools (sfa_context_destroy; d is the loaded driver). */
void sfa__workspace_pools_free(sfa_context *ctx, const sfa_driver *d);

/* printf into ctx->err; returns status. */
sfa_status sfa__error(sfa_context *ctx, sfa_status status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Loads the driver and finds (or establishes: the primary context of
** opts.device) the calling thread's current CUDA context and its device. */
sfa_status sfa__bind(sfa_context *ctx, sfa__device *out);

/* The kernel for a complete, valid spec (attention or utility pass) in the
** bound context: the in-memory table first, then the AOT kernel dirs, then
** the disk cache, then NVRTC. spec->arch must be loadable on the device. The
** one loader of every kernel sfa launches. */
sfa_status sfa__kernel_get(sfa_context *ctx, const sfa__device *dev,
                           const sfa_kernel_spec *spec, sfa_kernel **kernel);

/* What sfa__kernel_get does before the driver: the cubin of a valid spec from
** the AOT kernel dirs (verified: size, checksum, key), else the disk cache,
** else NVRTC (and into the cache). *cubin is malloc'ed (free); *from_dir (may
** be NULL) is set to 1 when it came from a kernel dir, else 0. Counts into
** ctx->stats. Needs no GPU: tests use it to see where a kernel would come from. */
sfa_status sfa__kernel_cubin(sfa_context *ctx, const sfa_kernel_spec *spec, void **cubin,
                             size_t *size, int *from_dir);

/* A copy of ctx->stats. */
void sfa__kernel_get_stats(sfa_context *ctx, sfa__kernel_stats *out);

/* The kernels a call gets (runtime/call_kernels.c), without the driver: into
** specs[0..*n) (room for max) the specs that sfa_forward (call
** SFA_PASS_FWD) or sfa_backward (SFA_PASS_BWD) loads for params, extras (as
** the call gets them: the flags follow extras->bias and ->mask), q's dtype
** and head_dim on a device of arch, in the order the call gets them:
** forward its fwd kernel (where the tiles depend on the key length,
** sfa__spec_for_keys, the short rows' kernel, then the long rows'); backward
** its bwd kernel, its bwddq kernel when deterministic, then the utility
** kernels bwd_pre and convert. Only where
** the choice does not depend on the device: ctx's tuning policy off, or a
** forced mma kind (else SFA_ERR_UNSUPPORTED). An unservable class is the
** call's own error (e.g. SFA_ERR_UNSUPPORTED for a head dim). The arguments
** are not validated beyond that. */
sfa_status sfa__call_kernels(sfa_context *ctx, sfa_pass call,
                             const sfa_attention_params *params, const sfa_extras *extras,
                             sfa_dtype dtype, int head_dim, int arch, sfa_kernel_spec *specs,
                             int max, int *n);
#define SFA__CALL_MAX_KERNELS 8 /* more than a call gets */

/* Short dtype names for messages: "fp16", "bf16", "fp32", "int32", "uint8". */
const char *sfa__dtype_str(sfa_dtype d);

#endif
