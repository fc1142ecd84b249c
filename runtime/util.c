/*
** util.c -- the sparse helpers' shared pieces (util.h): the specs of the
** utility kernels (templates/util_*.lt, rendered through kernel.lt like
** every kernel) and getting them through the context's loader, the launch
** wrapper, and tensor checks whose messages name the argument.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gen/gen_internal.h"
#include "runtime/util.h"
#include "runtime/validate.h"

/* ------------------------------------------------------------ kernels */

sfa_status sfa__util_spec(sfa_pass pass, sfa_dtype dtype, int arch, sfa_kernel_spec *spec,
                          char *err, size_t errlen) {
  if (!spec) return sfa__fail(err, errlen, SFA_ERR_INTERNAL, "sfa__util_spec: spec is NULL");
  memset(spec, 0, sizeof *spec);
  if (!sfa__pass_is_util(pass))
    return sfa__fail(err, errlen, SFA_ERR_INTERNAL, "pass %d is not a utility pass",
                     (int)pass);
  spec->pass = pass;
  spec->mode = SFA_MODE_DENSE;
  spec->dtype = dtype;
  spec->arch = arch;
  char why[512];
  sfa_status st = sfa_spec_default(spec, why, sizeof why);
  if (st != SFA_OK)
    return sfa__fail(err, errlen, SFA_ERR_INTERNAL, "no utility kernel: %s", why);
  return SFA_OK;
}

sfa_status sfa__util_kernel(sfa_context *ctx, const sfa__device *dev, sfa_pass pass,
                            sfa_dtype dtype, sfa_kernel **kernel) {
  sfa_kernel_spec spec;
  sfa_status st = sfa__util_spec(pass, dtype, dev->arch, &spec, ctx->err, sizeof ctx->err);
  if (st != SFA_OK) return st;
  return sfa__kernel_get(ctx, dev, &spec, kernel);
}

sfa_status sfa__util_begin(sfa_context *ctx, sfa_pass pass, sfa_dtype dtype, sfa_kernel **kernel) {
  sfa__device dev;
  sfa_status st = sfa__bind(ctx, &dev);
  return st != SFA_OK ? st : sfa__util_kernel(ctx, &dev, pass, dtype, kernel);
}

/* ------------------------------------------------------------ launching */

sfa_status sfa__util_launch(sfa_context *ctx, CUfunction fn, const char *what, unsigned grid,
                            unsigned block, unsigned smem, void *stream, void *args) {
  const sfa_driver *d;
  sfa_status st = sfa__driver_load(&d, ctx->err, sizeof ctx->err);
  if (st != SFA_OK) return st;
  void *kp[1] = {args};
  CUresult r = d->cuLaunchKernel(fn, grid, 1, 1, block, 1, 1, smem, (CUstream)stream, kp, NULL);
  if (r != CUDA_SUCCESS) {
    char msg[160];
    snprintf(msg, sizeof msg, "cuLaunchKernel(%s, grid %u, block %u, %u bytes shared)", what,
             grid, block, smem);
    return sfa__cuda_error(r, msg, ctx->err, sizeof ctx->err);
  }
  return SFA_OK;
}

/* ------------------------------------------------------------ checks */

size_t sfa__dtype_size(sfa_dtype d) {
  switch (d) {
    case SFA_DTYPE_FP16:
    case SFA_DTYPE_BF16: return 2;
    case SFA_DTYPE_FP32:
    case SFA_DTYPE_INT32: return 4;
    case SFA_DTYPE_UINT8: return 1;
  }
  return 0;
}

static void dtype_list(unsigned dtypes, char *buf, size_t n) {
  const sfa_dtype all[] = {SFA_DTYPE_FP16, SFA_DTYPE_BF16, SFA_DTYPE_FP32, SFA_DTYPE_INT32,
                           SFA_DTYPE_UINT8};
  int count = 0, total = 0;
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) total += (dtypes >> all[i]) & 1u;
  buf[0] = '\0';
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
    if (!((dtypes >> all[i]) & 1u)) continue;
    const char *sep = count == 0 ? "" : count == total - 1 ? " or " : ", ";
    size_t at = strlen(buf);
    snprintf(buf + at, n - at, "%s%s", sep, sfa__dtype_str(all[i]));
    count++;
  }
}



sfa_status sfa__util_check(sfa_context *ctx, const char *nm, const sfa_tensor *t, int rank,
                           const char *layout, unsigned dtypes, int is_output) {
  char buf[64];
  if (!t) return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "%s: is NULL", nm);
  if ((unsigned)t->dtype > SFA_DTYPE_UINT8 || !((dtypes >> t->dtype) & 1u)) {
    dtype_list(dtypes, buf, sizeof buf);
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT, "%s: dtype %s; must be %s", nm,
                      sfa__dtype_str(t->dtype), buf);
  }
  return sfa__check_layout(ctx, nm, t, rank, layout, 1, sfa__dtype_size(t->dtype),
                           (int64_t)1 << 40, is_output);
}

sfa_status sfa__util_same_dims(sfa_context *ctx, const char *nm, const sfa_tensor *t,
                               const char *refnm, const sfa_tensor *ref, int ndims,
                               const char *what) {
  for (int i = 0; i < ndims; i++)
    if (t->shape[i] != ref->shape[i]) {
      char a[96], b[96];
      sfa__tensor_shape_str(t, a, sizeof a);
      sfa__tensor_shape_str(ref, b, sizeof b);
      return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                        "%s: shape %s does not match %s %s (%s must agree)", nm, a, refnm, b,
                        what);
    }
  return SFA_OK;
}

static void byte_range(const sfa_tensor *t, uintptr_t *lo, uintptr_t *hi) {
  size_t es = sfa__dtype_size(t->dtype);
  uintptr_t span = 0;
  for (int i = 0; i < t->rank; i++)
    if (t->shape[i] > 1) span += (uintptr_t)t->strides[i] * (uintptr_t)(t->shape[i] - 1);
  *lo = (uintptr_t)t->data;
  *hi = *lo + (span + 1) * es; /* exclusive */
}

sfa_status sfa__util_disjoint(sfa_context *ctx, const char *anm, const sfa_tensor *a,
                              const char *bnm, const sfa_tensor *b) {
  uintptr_t alo, ahi, blo, bhi;
  byte_range(a, &alo, &ahi);
  byte_range(b, &blo, &bhi);
  if (alo < bhi && blo < ahi)
    return sfa__error(ctx, SFA_ERR_INVALID_ARGUMENT,
                      "%s: its memory overlaps %s; outputs must not share memory with inputs or other outputs", anm, bnm);
  return SFA_OK;
}

int64_t sfa__util_byte_stride(const sfa_tensor *t, int i) {
  return sfa__eff_stride(t, i) * (int64_t)sfa__dtype_size(t->dtype);
}
