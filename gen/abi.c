/*
** abi.c -- the kernel ABI as the templates see it: every parameter block of
** runtime/kernel_abi_fields.h described from its C struct (offsetof, sizeof,
** _Alignof), and the shared constants. gen/generator.c turns these into the
** Lua table ABI; templates/abi.lt emits the structs from it with a
** static_assert per field, so the generated CUDA checks itself against the C
** layout when it compiles. The fields of SFA_ABI_VARLEN_ARGS and
** SFA_ABI_VARLEN_COLS_ARGS are marked, so that abi.lt declares them in varlen
** variants only (the latter with a bias or a mask only).
*/
#include "gen/gen_internal.h"
#include "runtime/kernel_abi.h"
#include "runtime/util.h"

#define FIELD_ARRAY_(c_name, dev_name, LIST)                                    \
  static const sfa__abi_field c_name##_fields_[] = {SFA_ABI_FIELDS(c_name, LIST)};
SFA_ABI_STRUCTS(FIELD_ARRAY_)

#define STRUCT_(c_name, dev_name, LIST)                                         \
  {#dev_name, #c_name, sizeof(c_name), _Alignof(c_name), c_name##_fields_,       \
   sizeof c_name##_fields_ / sizeof c_name##_fields_[0]},
const sfa__abi_struct sfa__abi_structs[] = {SFA_ABI_STRUCTS(STRUCT_)};
const size_t sfa__abi_nstructs = sizeof sfa__abi_structs / sizeof sfa__abi_structs[0];

#define VARLEN_NAME_(X, type, name, doc) #name,
const char *const sfa__abi_varlen_fields[] = {SFA_ABI_VARLEN_ARGS(VARLEN_NAME_, ~)};
const size_t sfa__abi_nvarlen = sizeof sfa__abi_varlen_fields / sizeof sfa__abi_varlen_fields[0];
const char *const sfa__abi_varlen_cols_fields[] = {SFA_ABI_VARLEN_COLS_ARGS(VARLEN_NAME_, ~)};
const size_t sfa__abi_nvarlen_cols =
    sizeof sfa__abi_varlen_cols_fields / sizeof sfa__abi_varlen_cols_fields[0];

#define CONST_(name, doc) {#name, (long long)(name), doc},
const sfa__abi_const sfa__abi_consts[] = {SFA_ABI_CONSTANTS(CONST_)};
const size_t sfa__abi_nconsts = sizeof sfa__abi_consts / sizeof sfa__abi_consts[0];
