/*
** kernel_abi.h -- the parameter blocks that the attention kernels receive by
** value: sfa_fwd_args (pass fwd), sfa_bwd_args (passes bwd and bwddq) and
** sfa_dec_args (pass decode).
** Their fields, in order, with a comment each, are listed once in
** runtime/kernel_abi_fields.h; this header expands the list into the C
** structs, and templates/abi.lt the same list (handed over by gen/abi.c with
** the C offsets) into the generated CUDA, where a static_assert checks every
** field's offset, the size and the alignment.
*/
#ifndef SFA_KERNEL_ABI_H
#define SFA_KERNEL_ABI_H

#include "runtime/kernel_abi_fields.h"

SFA_ABI_DEFINE(sfa_fwd_args, SFA_ABI_FWD_ARGS);
SFA_ABI_DEFINE(sfa_bwd_args, SFA_ABI_BWD_ARGS);
SFA_ABI_DEFINE(sfa_dec_args, SFA_ABI_DEC_ARGS);

#endif
