/*
** version.c -- what a program or binding asks of the library it loaded: its
** version and the layout of the public structs it copies (sfa_abi_size,
** sfa_abi_offset), so that a mismatch is found at load time, not as a wrong
** answer.
*/
#include <stddef.h>
#include <string.h>

#include "sfa.h"

const char *sfa_version(void) { return SFA_VERSION_STRING; }

int sfa_version_number(void) { return SFA_VERSION_NUMBER; }

typedef struct field {
  const char *name;
  size_t offset;
} field;

#define F(type, member) {#member, offsetof(type, member)}
static const field tensor_fields[] = {
  F(sfa_tensor, data), F(sfa_tensor, dtype), F(sfa_tensor, rank), F(sfa_tensor, shape),
  F(sfa_tensor, strides), {NULL, 0}};
static const field params_fields[] = {
  F(sfa_attention_params, mode), F(sfa_attention_params, causal), F(sfa_attention_params, scale),
  F(sfa_attention_params, window_left), F(sfa_attention_params, window_right),
  F(sfa_attention_params, deterministic), F(sfa_attention_params, strict_causal),
  F(sfa_attention_params, softcap), {NULL, 0}};
static const field extras_fields[] = {
  F(sfa_extras, q_idx), F(sfa_extras, k_idx), F(sfa_extras, q_hash), F(sfa_extras, k_hash),
  F(sfa_extras, bias), F(sfa_extras, mask), F(sfa_extras, alibi_slopes),
  F(sfa_extras, cu_seqlens_q), F(sfa_extras, cu_seqlens_k),
  F(sfa_extras, max_seqlen_k), {NULL, 0}};
static const field options_fields[] = {
  F(sfa_options, cache_dir), F(sfa_options, device), F(sfa_options, verbose),
  F(sfa_options, tune), F(sfa_options, mma), {NULL, 0}};
static const field spec_fields[] = {
  F(sfa_kernel_spec, pass), F(sfa_kernel_spec, mode), F(sfa_kernel_spec, dtype),
  F(sfa_kernel_spec, head_dim), F(sfa_kernel_spec, block_m), F(sfa_kernel_spec, block_n),
  F(sfa_kernel_spec, num_warps), F(sfa_kernel_spec, num_stages), F(sfa_kernel_spec, arch),
  F(sfa_kernel_spec, flags), F(sfa_kernel_spec, mma), {NULL, 0}};
static const field host_extras_fields[] = {
  F(sfa_host_extras, q_idx), F(sfa_host_extras, k_idx), F(sfa_host_extras, q_hash),
  F(sfa_host_extras, k_hash), F(sfa_host_extras, bias), F(sfa_host_extras, bias_heads),
  F(sfa_host_extras, bias_rows), F(sfa_host_extras, mask), F(sfa_host_extras, mask_heads),
  F(sfa_host_extras, mask_rows), F(sfa_host_extras, bias_batches),
  F(sfa_host_extras, mask_batches), F(sfa_host_extras, alibi_slopes),
  F(sfa_host_extras, alibi_batches), {NULL, 0}};
static const field kv_cache_fields[] = {
  F(sfa_kv_cache, k), F(sfa_kv_cache, v), F(sfa_kv_cache, page_table),
  F(sfa_kv_cache, seqused), F(sfa_kv_cache, kv_indices), F(sfa_kv_cache, k_hash),
  F(sfa_kv_cache, q_hash), {NULL, 0}};
#undef F

static const struct {
  size_t size;
  const field *fields;
} structs[] = {
  [SFA_ABI_TENSOR] = {sizeof(sfa_tensor), tensor_fields},
  [SFA_ABI_PARAMS] = {sizeof(sfa_attention_params), params_fields},
  [SFA_ABI_EXTRAS] = {sizeof(sfa_extras), extras_fields},
  [SFA_ABI_OPTIONS] = {sizeof(sfa_options), options_fields},
  [SFA_ABI_KERNEL_SPEC] = {sizeof(sfa_kernel_spec), spec_fields},
  [SFA_ABI_HOST_EXTRAS] = {sizeof(sfa_host_extras), host_extras_fields},
  [SFA_ABI_KV_CACHE] = {sizeof(sfa_kv_cache), kv_cache_fields},
};
#define NSTRUCTS (sizeof structs / sizeof structs[0])

size_t sfa_abi_size(sfa_abi_struct kind) {
  return (unsigned)kind < NSTRUCTS ? structs[kind].size : 0;
}

long sfa_abi_offset(sfa_abi_struct kind, const char *name) {
  if ((unsigned)kind >= NSTRUCTS || !name) return -1;
  for (const field *f = structs[kind].fields; f->name; f++)
    if (strcmp(f->name, name) == 0) return (long)f->offset;
  return -1;
}
