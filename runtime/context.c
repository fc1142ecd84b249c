/*
** context.c -- sfa_context: options, the last error, the lazily opened disk
** cache, the binding to the caller's CUDA context, and the table of loaded
** kernels keyed by (CUDA context, spec). sfa_compile and sfa__kernel_get turn a
** spec -- an attention pass or a utility pass (the backward's preprocess and
** converts, the sparse helpers' kernels) -- into a launchable CUfunction:
** table -> AOT kernel dirs (SFA_KERNEL_DIR, sfa_context_add_kernel_dir;
** runtime/kernel_dir.h) -> disk cache -> NVRTC -> module. This is the one
** loader: a process whose kernels all come from kernel dirs never loads NVRTC.
** A loaded kernel carries its variant descriptor (gen/variant.h): the shared
** memory it opts into, the threads it must be able to run and its extra
** entry (the bwd plan kernel) come from there, as do its launches.
**
** Creating a context never touches the GPU; the driver is loaded by the first
** call that needs it. Destroy an sfa context before destroying the CUDA
** contexts it was used in: its modules are unloaded from them at destroy.
*/
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gen/arch.h"
#include "runtime/autotune.h"
#include "runtime/internal.h"
#include "runtime/kernel_dir.h"
#include "runtime/keymat.h"
#include "runtime/util.h"

/* ------------------------------------------------------------ errors */

sfa_status sfa__error(sfa_context *ctx, sfa_status status, const char *fmt, ...) {
  if (ctx) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->err, sizeof ctx->err, fmt, ap);
    va_end(ap);
  }
  return status;
}

const char *sfa_last_error(const sfa_context *ctx) {
  return ctx ? ctx->err : "sfa_last_error: ctx is NULL";
}

/* ------------------------------------------------------------ create / destroy */

sfa_status sfa_context_create(sfa_context **out, const sfa_options *opts) {
  if (!out) return SFA_ERR_INVALID_ARGUMENT;
  *out = NULL;
  sfa_context *ctx = calloc(1, sizeof *ctx);
  if (!ctx) return SFA_ERR_OUT_OF_MEMORY;
  if (opts)
    ctx->opts = *opts;
  else
    sfa_options_init(&ctx->opts);
  if (pthread_mutex_init(&ctx->lock, NULL) != 0) {
    free(ctx);
    return SFA_ERR_INTERNAL;
  }
  *out = ctx; /* from here on the caller can read the message and must destroy */
  if (ctx->opts.cache_dir) {
    ctx->cache_dir = strdup(ctx->opts.cache_dir);
    if (!ctx->cache_dir) return sfa__error(ctx, SFA_ERR_OUT_OF_MEMORY, "options.cache_dir: out of memory");
  }
  ctx->opts.cache_dir = ctx->cache_dir;
  if (ctx->opts.device < 0)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "options.device: %d must be >= 0",
                      ctx->opts.device);
  if ((unsigned)ctx->opts.tune > SFA_TUNE_ON)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                      "options.tune: %d is not a policy (SFA_TUNE_OFF, _CACHED or _ON)",
                      (int)ctx->opts.tune);
  if ((unsigned)ctx->opts.mma > SFA_MMA_WS)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                      "options.mma: %d is not an mma kind (SFA_MMA_AUTO, _SYNC, _WGMMA or _WS)",
                      (int)ctx->opts.mma);
  sfa_status st = sfa__select_create(&ctx->select);
  if (st != SFA_OK) return sfa__error(ctx, st, "cannot create the tuning state");
  if ((st = sfa__kdirs_create(&ctx->kdirs, 0, ctx->err, sizeof ctx->err)) != SFA_OK) return st;
  /* SFA_KERNEL_DIR is advisory: a bad entry warns and is skipped. */
  const char *env = getenv(SFA__KERNEL_DIR_ENV);
  if (env && *env) {
    int n = sfa__kdirs_add_list(ctx->kdirs, env, 0);
    if (ctx->opts.verbose)
      fprintf(stderr, "sfa: " SFA__KERNEL_DIR_ENV ": %d kernel dir%s, %zu kernels\n", n,
              n == 1 ? "" : "s", sfa__kdirs_kernels(ctx->kdirs));
  }
  return SFA_OK;
}

sfa_status sfa_context_add_kernel_dir(sfa_context *ctx, const char *dir) {
  if (!ctx) return SFA_ERR_INVALID_ARGUMENT;
  if (!ctx->kdirs)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "ctx: was not created successfully");
  size_t n = 0;
  sfa_status st = sfa__kdirs_add(ctx->kdirs, dir, &n, ctx->err, sizeof ctx->err);
  if (st == SFA_OK && ctx->opts.verbose)
    fprintf(stderr, "sfa: kernel dir %s: %zu kernels\n", dir, n);
  return st;
}

/* Unload a module from its CUDA context, where that context still exists
** (cuCtxGetId tells a live context from a reused handle). */
static void unload_module(const sfa_driver *d, CUcontext cu, unsigned long long cu_id,
                          CUmodule module) {
  int alive = 1;
  if (d->cuCtxGetId) {
    unsigned long long id = 0;
    alive = d->cuCtxGetId(cu, &id) == CUDA_SUCCESS && id == cu_id;
  }
  if (alive && d->cuCtxPushCurrent(cu) == CUDA_SUCCESS) {
    CUcontext popped;
    d->cuModuleUnload(module);
    d->cuCtxPopCurrent(&popped);
  }
}

/* Unload every module from its CUDA context. */
static void unload_modules(sfa_context *ctx, const sfa_driver *d) {
  for (size_t i = 0; i < ctx->nslots; i++) {
    sfa_kernel *k = ctx->slots[i];
    if (k) unload_module(d, k->cu, k->cu_id, k->module);
  }
}

void sfa_context_destroy(sfa_context *ctx) {
  if (!ctx) return;
  const sfa_driver *d = NULL;
  /* Only kernels or a retained context mean the driver was loaded; do not load it here. */
  if ((ctx->nkernels > 0 || ctx->npools > 0 || ctx->primary_retained) &&
      sfa__driver_load(&d, NULL, 0) == SFA_OK) {
    sfa__workspace_pools_free(ctx, d);
    unload_modules(ctx, d);
    if (ctx->primary_retained) d->cuDevicePrimaryCtxRelease(ctx->primary_dev);
  }
  for (size_t i = 0; i < ctx->nslots; i++) free(ctx->slots[i]);
  free(ctx->slots);
  free(ctx->devices);
  sfa__kdirs_free(ctx->kdirs);
  sfa__select_free(ctx->select);
  if (ctx->store) sfa_store_close(ctx->store);
  free(ctx->cache_dir);
  pthread_mutex_destroy(&ctx->lock);
  free(ctx);
}

/* ------------------------------------------------------------ binding */

static int find_device(const sfa_context *ctx, CUcontext cu, unsigned long long id) {
  for (int i = 0; i < ctx->ndevices; i++)
    if (ctx->devices[i].cu == cu && ctx->devices[i].cu_id == id) return i;
  return -1;
}

/* First use of a CUDA context: ask the driver about its device. */
static sfa_status describe_device(sfa_context *ctx, const sfa_driver *d, sfa__device *dv) {
  CUresult r;
  int major = 0, minor = 0, optin = 0, sms = 0;
  if ((r = d->cuCtxGetDevice(&dv->dev)) != CUDA_SUCCESS ||
      (r = d->cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
                                   dv->dev)) != CUDA_SUCCESS ||
      (r = d->cuDeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
                                   dv->dev)) != CUDA_SUCCESS ||
      (r = d->cuDeviceGetAttribute(&optin, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
                                   dv->dev)) != CUDA_SUCCESS ||
      (r = d->cuDeviceGetAttribute(&sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dv->dev)) !=
          CUDA_SUCCESS)
    return sfa__cuda_error(r, "querying the current device", ctx->err, sizeof ctx->err);
  dv->cc = major * 10 + minor;
  dv->smem_optin = optin;
  dv->sms = sms;
  /* Native code for the device: its row of the arch table, else the nearest
  ** lower row of its major (whose cubins it runs). */
  char why[512];
  if (sfa__arch_of_device(dv->cc, &dv->arch, why, sizeof why) != SFA_OK) {
    char name[128] = "?";
    d->cuDeviceGetName(name, (int)sizeof name, dv->dev);
    return sfa__error(ctx, SFA_ERR_UNSUPPORTED, "device %d (%s): %s", (int)dv->dev, name, why);
  }
  return SFA_OK;
}

/* Retain the primary context of opts.device (once per sfa context). */
static sfa_status retain_primary(sfa_context *ctx, const sfa_driver *d, CUcontext *cu) {
  sfa_status st = SFA_OK;
  CUresult r;
  pthread_mutex_lock(&ctx->lock);
  if (!ctx->primary_retained) {
    int count = 0;
    if ((r = d->cuDeviceGetCount(&count)) != CUDA_SUCCESS) {
      st = sfa__cuda_error(r, "cuDeviceGetCount", ctx->err, sizeof ctx->err);
    } else if (ctx->opts.device >= count) {
      st = sfa__error(ctx, count ? SFA_ERR_INVALID_ARGUMENT : SFA_ERR_NO_DRIVER,
                      "options.device: %d, but this machine has %d CUDA device%s",
                      ctx->opts.device, count, count == 1 ? "" : "s");
    } else if ((r = d->cuDeviceGet(&ctx->primary_dev, ctx->opts.device)) != CUDA_SUCCESS) {
      st = sfa__cuda_error(r, "cuDeviceGet", ctx->err, sizeof ctx->err);
    } else if ((r = d->cuDevicePrimaryCtxRetain(&ctx->primary, ctx->primary_dev)) !=
               CUDA_SUCCESS) {
      st = sfa__cuda_error(r, "cuDevicePrimaryCtxRetain", ctx->err, sizeof ctx->err);
    } else {
      ctx->primary_retained = 1;
    }
  }
  *cu = ctx->primary;
  pthread_mutex_unlock(&ctx->lock);
  if (st == SFA_OK && (r = d->cuCtxSetCurrent(*cu)) != CUDA_SUCCESS)
    st = sfa__cuda_error(r, "cuCtxSetCurrent", ctx->err, sizeof ctx->err);
  return st;
}

sfa_status sfa__bind(sfa_context *ctx, sfa__device *out) {
  const sfa_driver *d;
  char why[512];
  sfa_status st = sfa__driver_load(&d, why, sizeof why);
  if (st != SFA_OK) return sfa__error(ctx, st, "%s", why);

  CUcontext cu = NULL;
  CUresult r = d->cuCtxGetCurrent(&cu);
  if (r != CUDA_SUCCESS) return sfa__cuda_error(r, "cuCtxGetCurrent", ctx->err, sizeof ctx->err);
  if (!cu && (st = retain_primary(ctx, d, &cu)) != SFA_OK) return st;
  unsigned long long id = 0;
  if (d->cuCtxGetId && (r = d->cuCtxGetId(cu, &id)) != CUDA_SUCCESS)
    return sfa__cuda_error(r, "cuCtxGetId (the current CUDA context)", ctx->err, sizeof ctx->err);

  pthread_mutex_lock(&ctx->lock);
  int i = find_device(ctx, cu, id);
  if (i >= 0) *out = ctx->devices[i];
  pthread_mutex_unlock(&ctx->lock);
  if (i >= 0) return SFA_OK;

  sfa__device dv = {.cu = cu, .cu_id = id};
  if ((st = describe_device(ctx, d, &dv)) != SFA_OK) return st;
  pthread_mutex_lock(&ctx->lock);
  if (find_device(ctx, cu, id) < 0) {
    if (ctx->ndevices == ctx->cap_devices) {
      int cap = ctx->cap_devices ? 2 * ctx->cap_devices : 4;
      sfa__device *p = realloc(ctx->devices, (size_t)cap * sizeof *p);
      if (!p) {
        pthread_mutex_unlock(&ctx->lock);
        return sfa__error(ctx, SFA_ERR_OUT_OF_MEMORY, "out of memory");
      }
      ctx->devices = p;
      ctx->cap_devices = cap;
    }
    ctx->devices[ctx->ndevices++] = dv;
  }
  pthread_mutex_unlock(&ctx->lock);
  *out = dv;
  return SFA_OK;
}

/* ------------------------------------------------------------ kernel table */

static int spec_equal(const sfa_kernel_spec *a, const sfa_kernel_spec *b) {
  return a->pass == b->pass && a->mode == b->mode && a->dtype == b->dtype &&
         a->head_dim == b->head_dim && a->block_m == b->block_m && a->block_n == b->block_n &&
         a->num_warps == b->num_warps && a->num_stages == b->num_stages &&
         a->arch == b->arch && a->flags == b->flags && a->mma == b->mma;
}

static uint64_t mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
  return h * 0xFF51AFD7ED558CCDull;
}

static uint64_t key_hash(CUcontext cu, unsigned long long id, const sfa_kernel_spec *s) {
  uint64_t h = mix(0, (uint64_t)(uintptr_t)cu);
  h = mix(h, id);
  h = mix(h, (uint64_t)s->pass | (uint64_t)s->mode << 8 | (uint64_t)s->dtype << 16 |
                 (uint64_t)s->flags << 32);
  h = mix(h, (uint64_t)(uint32_t)s->head_dim | (uint64_t)(uint32_t)s->arch << 32);
  h = mix(h, (uint64_t)(uint16_t)s->block_m | (uint64_t)(uint16_t)s->block_n << 16 |
                 (uint64_t)(uint16_t)s->num_warps << 32 |
                 (uint64_t)(uint16_t)s->num_stages << 48);
  h = mix(h, (uint64_t)s->mma);
  return h ^ (h >> 29);
}

/* Call with the lock held. */
static sfa_kernel *table_find(const sfa_context *ctx, uint64_t h, CUcontext cu,
                              unsigned long long id, const sfa_kernel_spec *spec) {
  if (!ctx->nslots) return NULL;
  size_t mask = ctx->nslots - 1;
  for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
    sfa_kernel *k = ctx->slots[i];
    if (!k) return NULL;
    if (k->cu == cu && k->cu_id == id && spec_equal(&k->spec, spec)) return k;
  }
}

/* Call with the lock held. Keeps the load factor at most 1/2. */
static sfa_status table_insert(sfa_context *ctx, sfa_kernel *k) {
  if (2 * (ctx->nkernels + 1) > ctx->nslots) {
    size_t n = ctx->nslots ? 2 * ctx->nslots : 64;
    sfa_kernel **slots = calloc(n, sizeof *slots);
    if (!slots) return SFA_ERR_OUT_OF_MEMORY;
    for (size_t i = 0; i < ctx->nslots; i++) {
      sfa_kernel *o = ctx->slots[i];
      if (!o) continue;
      size_t j = (size_t)key_hash(o->cu, o->cu_id, &o->spec) & (n - 1);
      while (slots[j]) j = (j + 1) & (n - 1);
      slots[j] = o;
    }
    free(ctx->slots);
    ctx->slots = slots;
    ctx->nslots = n;
  }
  size_t j = (size_t)key_hash(k->cu, k->cu_id, &k->spec) & (ctx->nslots - 1);
  while (ctx->slots[j]) j = (j + 1) & (ctx->nslots - 1);
  ctx->slots[j] = k;
  ctx->nkernels++;
  return SFA_OK;
}

/* ------------------------------------------------------------ compile and load */

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* The disk cache, opened on first need. NULL if it cannot be opened at all
** (then every miss compiles). */
static sfa_store *get_store(sfa_context *ctx) {
  pthread_mutex_lock(&ctx->lock);
  if (!ctx->store_tried) {
    char why[512] = "";
    ctx->store_tried = 1;
    if (sfa_store_open(&ctx->store, ctx->opts.cache_dir, 0, why, sizeof why) != SFA_OK) {
      ctx->store = NULL;
      fprintf(stderr, "sfa: warning: no kernel cache (%s); kernels are compiled every run\n",
              why);
    }
  }
  sfa_store *st = ctx->store;
  pthread_mutex_unlock(&ctx->lock);
  return st;
}

static void count(sfa_context *ctx, size_t *counter) {
  pthread_mutex_lock(&ctx->lock);
  (*counter)++;
  pthread_mutex_unlock(&ctx->lock);
}

void sfa__kernel_get_stats(sfa_context *ctx, sfa__kernel_stats *out) {
  pthread_mutex_lock(&ctx->lock);
  *out = ctx->stats;
  pthread_mutex_unlock(&ctx->lock);
}

/* The cubin of a spec's source: the disk cache, else NVRTC (and into the
** cache). The key material is sfa-gen's (runtime/keymat.h); target carries
** what the NVRTC options depend on: the arch and the mma kind. */
static sfa_status get_cubin_source(sfa_context *ctx, const char *name, const char *source,
                                   const sfa_kernel_spec *target, void **cubin, size_t *size) {
  const sfa_kernel_spec spec = *target;
  const int arch = spec.arch;
  size_t mlen = 0;
  char why[SFA__ERRBUF];
  double t0 = now_ms();
  char *material = NULL;
  sfa__key_material_named(&spec, name, source, &material, &mlen);
  if (!material)
    return sfa__error(ctx, SFA_ERR_OUT_OF_MEMORY, "out of memory building the cache key of %s",
                      name);
  sfa_status st;
  sfa_store *store = get_store(ctx);
  if (store) {
    why[0] = '\0';
    st = sfa_store_get(store, material, mlen, cubin, size, why, sizeof why);
    if (st == SFA_OK) {
      count(ctx, &ctx->stats.from_cache);
      if (ctx->opts.verbose)
        fprintf(stderr, "sfa: %s (sm_%d): loaded from the cache (%.1f ms)\n", name, arch,
                now_ms() - t0);
      goto done;
    }
    if (ctx->opts.verbose && why[0])
      fprintf(stderr, "sfa: %s (sm_%d): cache miss: %s\n", name, arch, why);
  }
  count(ctx, &ctx->stats.compiles);
  st = sfa__nvrtc_compile(name, source, &spec, cubin, size, NULL, why, sizeof why);
  if (st != SFA_OK) {
    sfa__error(ctx, st, "%s", why);
    goto done;
  }
  if (ctx->opts.verbose)
    fprintf(stderr, "sfa: %s (sm_%d): compiled (%.0f ms)\n", name, arch, now_ms() - t0);
  if (store && sfa_store_put(store, material, mlen, *cubin, *size, why, sizeof why) != SFA_OK &&
      ctx->opts.verbose)
    fprintf(stderr, "sfa: %s: not cached: %s\n", name, why);
done:
  free(material);
  return st;
}

/* The cubin of spec: its generated source through get_cubin_source (whose key
** material equals sfa-gen's for the spec). */
static sfa_status get_cubin(sfa_context *ctx, const sfa_kernel_spec *spec, const char *name,
                            void **cubin, size_t *size) {
  char *source = NULL, why[SFA__ERRBUF];
  sfa_status st = sfa_generate(spec, &source, why, sizeof why);
  if (st != SFA_OK) return sfa__error(ctx, st, "generating %s: %s", name, why);
  st = get_cubin_source(ctx, name, source, spec, cubin, size);
  free(source);
  return st;
}

/* Load the cubin into the current context (dev->cu) and describe the kernel. */
static sfa_status load_kernel(sfa_context *ctx, const sfa_driver *d, const sfa__device *dev,
                              const sfa_kernel_spec *spec, sfa_kernel *k, const void *cubin) {
  CUresult r = d->cuModuleLoadData(&k->module, cubin);
  if (r == CUDA_ERROR_NO_BINARY_FOR_GPU || r == CUDA_ERROR_INVALID_IMAGE)
    return sfa__error(ctx, SFA_ERR_UNSUPPORTED,
                      "%s: the sm_%d cubin cannot run on this device (compute capability "
                      "%d.%d): cuModuleLoadData returned %d",
                      k->name, spec->arch, dev->cc / 10, dev->cc % 10, (int)r);
  char what[SFA__KERNEL_NAME + 64];
  if (r != CUDA_SUCCESS) {
    snprintf(what, sizeof what, "cuModuleLoadData(%s)", k->name);
    return sfa__cuda_error(r, what, ctx->err, sizeof ctx->err);
  }
  sfa_status st = SFA_OK;
  int max_threads = 0;
  const sfa__variant *v = &k->var;
  char plan[SFA__KERNEL_NAME + 16] = "";
  if (v->has_plan) snprintf(plan, sizeof plan, "%s%s", k->name, v->plan.suffix);
  k->plan_fn = NULL;
  if ((r = d->cuModuleGetFunction(&k->fn, k->module, k->name)) != CUDA_SUCCESS) {
    snprintf(what, sizeof what, "cuModuleGetFunction(%s)", k->name);
    st = sfa__cuda_error(r, what, ctx->err, sizeof ctx->err);
  } else if (v->has_plan &&
             (r = d->cuModuleGetFunction(&k->plan_fn, k->module, plan)) != CUDA_SUCCESS) {
    snprintf(what, sizeof what, "cuModuleGetFunction(%s)", plan);
    st = sfa__cuda_error(r, what, ctx->err, sizeof ctx->err);
  } else if (v->smem_bytes > 48 * 1024 &&
             (r = d->cuFuncSetAttribute(k->fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                        (int)v->smem_bytes)) != CUDA_SUCCESS) {
    snprintf(what, sizeof what, "cuFuncSetAttribute(%s, max dynamic shared memory %zu)",
             k->name, v->smem_bytes);
    st = sfa__cuda_error(r, what, ctx->err, sizeof ctx->err);
  } else if ((r = d->cuFuncGetAttribute(&max_threads, CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK,
                                        k->fn)) != CUDA_SUCCESS) {
    snprintf(what, sizeof what, "cuFuncGetAttribute(%s)", k->name);
    st = sfa__cuda_error(r, what, ctx->err, sizeof ctx->err);
  } else if (max_threads < v->threads) {
    st = sfa__error(ctx, SFA_ERR_UNSUPPORTED,
                    "%s: needs %d threads per block but its register use allows %d",
                    k->name, v->threads, max_threads);
  }
  if (st != SFA_OK) {
    d->cuModuleUnload(k->module);
    k->module = NULL;
  }
  return st;
}

/* The cubin of spec (named name): the AOT kernel dirs first when use_dirs
** (*hit: the row it came from, else NULL), then the disk cache and NVRTC. A
** row that fails verification has been warned about once by kernel_dir.c and
** is passed over. */
static sfa_status find_cubin(sfa_context *ctx, const sfa_kernel_spec *spec, const char *name,
                             int use_dirs, void **cubin, size_t *size,
                             const sfa__manifest_entry **hit) {
  *cubin = NULL;
  *size = 0;
  if (hit) *hit = NULL;
  if (use_dirs && ctx->kdirs) {
    const sfa__manifest_entry *e = NULL;
    if (sfa__kdirs_cubin(ctx->kdirs, name, cubin, size, &e, NULL, 0) == SFA_OK) {
      count(ctx, &ctx->stats.from_dirs);
      if (hit) *hit = e;
      return SFA_OK;
    }
  }
  return get_cubin(ctx, spec, name, cubin, size);
}

sfa_status sfa__kernel_cubin(sfa_context *ctx, const sfa_kernel_spec *spec, void **cubin,
                             size_t *size, int *from_dir) {
  char name[SFA__KERNEL_NAME], why[512];
  const sfa__manifest_entry *hit = NULL;
  if (from_dir) *from_dir = 0;
  if (!ctx || !spec || !cubin || !size) return SFA_ERR_INVALID_ARGUMENT;
  *cubin = NULL;
  *size = 0;
  sfa_status st = sfa_spec_validate(spec, why, sizeof why);
  if (st != SFA_OK) return sfa__error(ctx, st, "spec: %s", why);
  if (sfa_spec_name(spec, name, sizeof name) != SFA_OK)
    return sfa__error(ctx, SFA_ERR_INTERNAL, "sfa__kernel_cubin: spec has no name");
  st = find_cubin(ctx, spec, name, 1, cubin, size, &hit);
  if (st == SFA_OK && from_dir) *from_dir = hit != NULL;
  return st;
}

sfa_status sfa__kernel_get(sfa_context *ctx, const sfa__device *dev,
                           const sfa_kernel_spec *spec, sfa_kernel **kernel) {
  uint64_t h = key_hash(dev->cu, dev->cu_id, spec);
  pthread_mutex_lock(&ctx->lock);
  sfa_kernel *k = table_find(ctx, h, dev->cu, dev->cu_id, spec);
  pthread_mutex_unlock(&ctx->lock);
  if (k) {
    *kernel = k;
    return SFA_OK;
  }

  /* Miss: build without the lock (compiling takes a while), insert after. */
  const sfa_driver *d;
  sfa_status st = sfa__driver_load(&d, ctx->err, sizeof ctx->err);
  if (st != SFA_OK) return st;
  k = calloc(1, sizeof *k);
  if (!k) return sfa__error(ctx, SFA_ERR_OUT_OF_MEMORY, "out of memory");
  k->cu = dev->cu;
  k->cu_id = dev->cu_id;
  k->spec = *spec;
  /* the block and shared memory of every launch (a utility pass's launch
  ** sizes its own shared memory from var.util) */
  if (sfa__variant_describe(spec, &k->var, NULL, 0) != SFA_OK ||
      sfa_spec_name(spec, k->name, sizeof k->name) != SFA_OK) {
    free(k);
    return sfa__error(ctx, SFA_ERR_INTERNAL, "sfa__kernel_get: spec is not valid");
  }
  if (k->var.smem_bytes > (size_t)dev->smem_optin) {
    st = sfa__error(ctx, SFA_ERR_UNSUPPORTED,
                    "%s: needs %zu bytes of shared memory per block; the device allows %d",
                    k->name, k->var.smem_bytes, dev->smem_optin);
    free(k);
    return st;
  }
  void *cubin = NULL;
  size_t size = 0;
  const sfa__manifest_entry *hit = NULL;
  double t0 = now_ms();
  st = find_cubin(ctx, spec, k->name, 1, &cubin, &size, &hit);
  if (st == SFA_OK) st = load_kernel(ctx, d, dev, spec, k, cubin);
  free(cubin);
  if (st == SFA_OK && hit && ctx->opts.verbose)
    fprintf(stderr, "sfa: %s (sm_%d): loaded from %s (%.1f ms)\n", k->name, spec->arch,
            hit->path, now_ms() - t0);
  if (st != SFA_OK && hit) {
    /* the driver refused a kernel dir's cubin: warn once, then the cache / NVRTC */
    sfa__kdirs_reject(ctx->kdirs, hit, ctx->err);
    st = find_cubin(ctx, spec, k->name, 0, &cubin, &size, NULL);
    if (st == SFA_OK) st = load_kernel(ctx, d, dev, spec, k, cubin);
    free(cubin);
  }
  if (st != SFA_OK) {
    free(k);
    return st;
  }

  pthread_mutex_lock(&ctx->lock);
  sfa_kernel *other = table_find(ctx, h, dev->cu, dev->cu_id, spec);
  if (!other) st = table_insert(ctx, k);
  pthread_mutex_unlock(&ctx->lock);
  if (other || st != SFA_OK) { /* another thread won the race, or no memory */
    d->cuModuleUnload(k->module);
    free(k);
    if (st != SFA_OK) return sfa__error(ctx, st, "out of memory");
    k = other;
  }
  *kernel = k;
  return SFA_OK;
}

/* ------------------------------------------------------------ sfa_compile */

sfa_status sfa_compile(sfa_context *ctx, const sfa_kernel_spec *spec, sfa_kernel **kernel) {
  if (!ctx) return SFA_ERR_INVALID_ARGUMENT;
  if (!kernel) return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "kernel: is NULL");
  *kernel = NULL;
  if (!spec) return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "spec: is NULL");
  char why[512];
  sfa_status st = sfa_spec_validate(spec, why, sizeof why);
  if (st != SFA_OK) return sfa__error(ctx, st, "spec: %s", why);
  sfa__device dev;
  if ((st = sfa__bind(ctx, &dev)) != SFA_OK) return st;
  /* A cubin runs on its own arch and on later minor revisions of the same
  ** major; an sm_90a (wgmma) cubin on compute capability 9.0 only. */
  const int wg = sfa__spec_is_wgmma(spec);
  if (!sfa__arch_runs_on(spec->arch, wg, dev.cc))
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                      "spec.arch: sm_%d%s code cannot run on the current device (compute "
                      "capability %d.%d); use arch %d",
                      spec->arch, wg ? "a" : "", dev.cc / 10, dev.cc % 10, dev.arch);
  return sfa__kernel_get(ctx, &dev, spec, kernel);
}
