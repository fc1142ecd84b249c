/*
** util.h -- internal: what the sparse helpers (runtime/hash.c, runtime/topk.c),
** sfa_merge_attention (runtime/merge.c) and the backward (runtime/backward.c) share: the utility kernels
** (templates/util_*.lt; kernel specs of the utility passes of sfa.h, loaded
** like every kernel by sfa__kernel_get), their launch argument blocks, and
** tensor checks whose messages name the argument.
*/
#ifndef SFA_RUNTIME_UTIL_H
#define SFA_RUNTIME_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/internal.h"
#include "runtime/kernel_abi_fields.h"

/* Launch argument blocks, listed with the attention kernels' in
** runtime/kernel_abi_fields.h (templates/abi.lt declares and checks the same
** structs in the kernels' source). */
SFA_ABI_DEFINE(sfa__hash_sort_args, SFA_ABI_HASH_SORT_ARGS);
SFA_ABI_DEFINE(sfa__permute_args, SFA_ABI_PERMUTE_ARGS);
SFA_ABI_DEFINE(sfa__topk_args, SFA_ABI_TOPK_ARGS);
SFA_ABI_DEFINE(sfa__bwd_pre_args, SFA_ABI_BWD_PRE_ARGS);
SFA_ABI_DEFINE(sfa__convert_args, SFA_ABI_CONVERT_ARGS);
SFA_ABI_DEFINE(sfa__kv_append_args, SFA_ABI_KV_APPEND_ARGS);
SFA_ABI_DEFINE(sfa__merge_args, SFA_ABI_MERGE_ARGS);

/* Largest sequence length (and Tk) the helpers take: keeps index arithmetic
** inside int32 with room to spare. */
#define SFA__UTIL_MAX_T (1 << 30)

/* The spec of a utility kernel (pass SFA_PASS_BWD_PRE .. SFA_PASS_MERGE) for
** dtype on arch: mode dense, no flags, no tiles, the pass's num_warps
** (sfa_spec_default). SFA_ERR_INTERNAL with the reason in err for a pass or
** dtype that has no utility kernel. */
sfa_status sfa__util_spec(sfa_pass pass, sfa_dtype dtype, int arch, sfa_kernel_spec *spec,
                          char *err, size_t errlen);

/* The utility kernel of (pass, dtype) in the bound context (dev), for dev's
** arch: sfa__kernel_get (the context's table, the AOT kernel dirs, the disk
** cache, NVRTC). Its launches take their block, grid rule and constants from
** (*kernel)->var (gen/variant.h). */
sfa_status sfa__util_kernel(sfa_context *ctx, const sfa__device *dev, sfa_pass pass,
                            sfa_dtype dtype, sfa_kernel **kernel);

/* sfa__util_kernel on the device the calling thread's context binds to
** (sfa__bind): what a call needs before it launches with sfa__util_launch. */
sfa_status sfa__util_begin(sfa_context *ctx, sfa_pass pass, sfa_dtype dtype, sfa_kernel **kernel);

/* ------------------------------------------------------------ checks */

#define SFA__DTYPES(x) (1u << (x))

/* Bytes per element of a dtype (0 for an unknown one). */
size_t sfa__dtype_size(sfa_dtype d);

/* t is not NULL; dtype in the mask `dtypes`; rank; every dim in [1, 2^40];
** data not NULL and element-aligned; strides >= 0 (dims of extent 1 are not
** checked), the last one 1; offsets within 2^62 elements; an output does not
** overlap itself. layout names the dims in messages, e.g. "[B, H, T]". */
sfa_status sfa__util_check(sfa_context *ctx, const char *nm, const sfa_tensor *t, int rank,
                           const char *layout, unsigned dtypes, int is_output);

/* The first ndims dims of t equal those of ref. */
sfa_status sfa__util_same_dims(sfa_context *ctx, const char *nm, const sfa_tensor *t,
                               const char *refnm, const sfa_tensor *ref, int ndims,
                               const char *what);

/* The byte ranges that a and b span are disjoint (a conservative check). */
sfa_status sfa__util_disjoint(sfa_context *ctx, const char *anm, const sfa_tensor *a,
                              const char *bnm, const sfa_tensor *b);

/* Byte stride of dim i, 0 where the dim has extent 1 (never indexed). */
int64_t sfa__util_byte_stride(const sfa_tensor *t, int i);

/* (The element stride of dim i, 0 where the dim has extent 1, is
** sfa__eff_stride in runtime/validate.h.) */

/* cuLaunchKernel with one argument block; a failure names the kernel. */
sfa_status sfa__util_launch(sfa_context *ctx, CUfunction fn, const char *what, unsigned grid,
                            unsigned block, unsigned smem, void *stream, void *args);

#endif
