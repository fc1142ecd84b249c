/*
** keymat.h -- internal: the key material of a kernel in the disk cache, the one
** definition shared by the runtime (runtime/context.c) and sfa-gen's manifest,
** so that a manifest's `key` column is the key the runtime's cache uses:
**
**   "sfa=<version>\nname=<canonical name>\narch=<arch>\nnvrtc=<M>.<m>\n"
**   "options=<NVRTC options>\n--\n<generated source>"
**
** The NVRTC version is that of the libnvrtc this process loaded (0.0 where
** none loads), except in the _nv variants, which take it: an AOT manifest
** records the version its keys were made with, so the runtime can check a
** row's key (source, options, sfa version) without NVRTC of its own.
*/
#ifndef SFA_RUNTIME_KEYMAT_H
#define SFA_RUNTIME_KEYMAT_H

#include <stddef.h>

#include "sfa.h"
#include "cache/store.h"

/* The key material of a valid spec and its generated source: *material is
** malloc'ed and NUL-terminated, *len excludes the NUL. SFA_ERR_INVALID_ARGUMENT
** for a NULL argument or a spec without a canonical name, SFA_ERR_OUT_OF_MEMORY. */
sfa_status sfa__kernel_key_material(const sfa_kernel_spec *spec, const char *source,
                                    char **material, size_t *len);

/* The same with the kernel name given: utility kernels (hash sort, top-k),
** whose spec carries only the arch that selects the NVRTC options. */
sfa_status sfa__key_material_named(const sfa_kernel_spec *spec, const char *name,
                                   const char *source, char **material, size_t *len);

/* The same with the NVRTC version given. */
sfa_status sfa__key_material_nv(const sfa_kernel_spec *spec, const char *name,
                                const char *source, int nvrtc_major, int nvrtc_minor,
                                char **material, size_t *len);

/* sfa_store_key of that material: 32 hex digits and a NUL. */
sfa_status sfa__kernel_key(const sfa_kernel_spec *spec, const char *source,
                           char key[SFA_STORE_KEY_HEX]);
sfa_status sfa__kernel_key_nv(const sfa_kernel_spec *spec, const char *source, int nvrtc_major,
                              int nvrtc_minor, char key[SFA_STORE_KEY_HEX]);

#endif
