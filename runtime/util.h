/*
** util.h -- internal: what the sparse helpers (runtime/hash.c, runtime/topk.c)
** and the backward (runtime/backward.c)
** share: the utility kernels (templates/util_*.lt), their launch argument
** blocks, rendering, NVRTC compilation and loading, and tensor checks whose
** messages name the argument.
*/
#ifndef SFA_RUNTIME_UTIL_H
#define SFA_RUNTIME_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/internal.h"
#include "runtime/kernel_abi_fields.h"

/* The utility kernels. Each is one source with one entry point. */
typedef enum sfa__util_kind {
  SFA__UTIL_HASH_SORT = 0, /* stable counting sort of bucket ids (dtype ignored) */
  SFA__UTIL_PERMUTE,       /* row gather / scatter by an index array (dtype ignored) */
  SFA__UTIL_TOPK,          /* top-w mask of a bias row (fp16, bf16 or fp32) */
  SFA__UTIL_BWD_PRE,       /* backward preprocess: delta, lse2, dq zeroing (fp16, bf16) */
  SFA__UTIL_CONVERT        /* float -> fp16 / bf16 strided copy with a scale */
} sfa__util_kind;

/* Launch argument blocks, listed with the attention kernels' in
** runtime/kernel_abi_fields.h (templates/abi.lt declares and checks the same
** structs in the kernels' source). */
SFA_ABI_DEFINE(sfa__hash_sort_args, SFA_ABI_HASH_SORT_ARGS);
SFA_ABI_DEFINE(sfa__permute_args, SFA_ABI_PERMUTE_ARGS);
SFA_ABI_DEFINE(sfa__topk_args, SFA_ABI_TOPK_ARGS);
SFA_ABI_DEFINE(sfa__bwd_pre_args, SFA_ABI_BWD_PRE_ARGS);
SFA_ABI_DEFINE(sfa__convert_args, SFA_ABI_CONVERT_ARGS);

/* Largest sequence length (and Tk) the helpers take: keeps index arithmetic
** inside int32 with room to spare. */
#define SFA__UTIL_MAX_T (1 << 30)

/* The entry symbol of a variant, e.g. "sfa_util_topk_bf16"; dtype matters for
** SFA__UTIL_TOPK, _BWD_PRE and _CONVERT only. SFA_ERR_INVALID_ARGUMENT for an
** unknown kind or dtype. */
sfa_status sfa__util_name(sfa__util_kind kind, sfa_dtype dtype, char *buf, size_t n);

/* Render the self-contained CUDA source of a variant for arch (*source:
** malloc'ed, release with sfa_free). */
sfa_status sfa__util_source(sfa__util_kind kind, sfa_dtype dtype, int arch, char **source,
                            char *err, size_t errlen);


/* The CUfunction of a variant in the bound context (dev): the context's table,
** else render, disk cache or NVRTC, and load (sfa__kernel_get_source). */
sfa_status sfa__util_kernel(sfa_context *ctx, const sfa__device *dev, sfa__util_kind kind,
                            sfa_dtype dtype, CUfunction *fn);

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
