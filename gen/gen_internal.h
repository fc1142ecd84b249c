/*
** gen_internal.h -- what gen/ shares with the rest of sfa but not with users:
** the embedded files, spec helpers, and a lower-level render entry point.
*/
#ifndef SFA_GEN_INTERNAL_H
#define SFA_GEN_INTERNAL_H

#include <stddef.h>
#include "sfa.h"

/* ------------------------------------------------------------ embedded files */

/* Written at build time by gen/embed.cmake: gen/template.lua and the templates/ files
** by base name. data is NUL-terminated; size excludes that NUL. The array ends
** with {NULL, NULL, 0}. */
struct sfa_embedded_file {
  const char *name;
  const unsigned char *data;
  size_t size;
};
extern const struct sfa_embedded_file sfa__embedded_files[];

/* The embedded file called name, or NULL. */
const struct sfa_embedded_file *sfa__embedded_find(const char *name);

/* ------------------------------------------------------------ spec helpers */

/* Names used in canonical names and in the Lua spec table; NULL when the value
** is out of range. The mode's Lua name is "qk_drop", its name token "qkdrop". */
const char *sfa__pass_name(sfa_pass p);   /* "fwd", "bwddq", "bwd" */
const char *sfa__mode_name(sfa_mode m);   /* "dense", "qk_drop", "hash", "window" */
const char *sfa__mode_token(sfa_mode m);  /* "dense", "qkdrop", "hash", "window" */
const char *sfa__dtype_name(sfa_dtype d); /* "fp16", "bf16" (others NULL) */

/* Checks only that every field lies in its domain (the values a canonical name
** can spell); sfa_spec_validate adds what is implemented and what fits the
** arch. SFA_ERR_INVALID_ARGUMENT with the field named. */
sfa_status sfa__spec_check_domain(const sfa_kernel_spec *spec, char *err, size_t errlen);

/* Shared memory (bytes) that the arch allows one block to opt into; 0 if the
** arch is unknown. */
size_t sfa__arch_smem_limit(int arch);

/* Accumulator registers per thread that the tile needs. */
int sfa__spec_acc_registers(const sfa_kernel_spec *spec);

/* 1 where the pass (fwd, bwd), arch (90) and head dim (64, 128) allow a
** wgmma kernel (SFA_FEAT_WGMMA). */
int sfa__wgmma_allowed(const sfa_kernel_spec *spec);

/* sfa_spec_default with the mma kind chosen: wg 1 wgmma, 0 mma.sync, -1 the
** default's choice (wgmma for the forward where allowed). A kind the spec
** does not allow falls back to mma.sync. */
sfa_status sfa__spec_default_mma(sfa_kernel_spec *spec, int wg, char *err, size_t errlen);
#define SFA__MAX_ACC_REGISTERS 192
#define SFA__BWD_MAX_HEAD_DIM 128 /* sfa_backward: every multiple of 16 up to here */
/* Above 128 the backward takes multiples of 32 up to 256: the columns of dK,
** dV and dQ split over two CTAs per key tile. */
#define SFA__BWD_KERNEL_MAX_HEAD_DIM 256
/* Columns of dK, dV and dQ one bwd CTA makes: all of head_dim up to 128, else half. */
int sfa__bwd_slice(int head_dim);
/* 1 where the bwd variant comes with a plan kernel, entry "<name>_plan"
** (templates/bwd.lt): it runs the mode's key-tile setup (searches of the
** query metadata) for every (batch, query head, key tile) ahead of the bwd
** kernel and writes SFA__BWD_PLAN_INTS int32 per tile to sfa_bwd_args.plan,
** so that a bwd CTA starts with one load instead of a chain of dependent
** ones. The modes that search: hash. */
int sfa__bwd_plan(const sfa_kernel_spec *spec);
#define SFA__BWD_PLAN_INTS 16
#define SFA__PLAN_SUFFIX "_plan"

/* The kernel list of a preset (gen/presets.c) for each of narchs arches, with
** default tiles: *specs is malloc'ed (free), *n its length. Unknown names and
** arches are SFA_ERR_INVALID_ARGUMENT with the allowed values in err. */
sfa_status sfa__preset(const char *name, const int *archs, int narchs, sfa_kernel_spec **specs,
                       size_t *n, char *err, size_t errlen);
#define SFA__PRESET_NAMES "small, default, all-modes and dense-tiles"

/* Longest canonical name plus NUL. */
#define SFA__NAME_MAX 96

/* ------------------------------------------------------------ rendering */

/* An in-memory template: name (e.g. "main.lt") and its text. */
typedef struct sfa__template {
  const char *name;
  const char *text;
} sfa__template;

/* Render template `entry` with the template engine. Templates are looked up
** first in `extra` (an array ended by {NULL, NULL}, may be NULL), then in
** $SFA_TEMPLATE_DIR when set, else among the embedded files. If spec is not
** NULL the template sees the Lua table `spec` (as sfa_generate passes it; the
** spec is not validated here), else an empty `spec` table. *out is malloc'ed.
** Lua errors become SFA_ERR_GENERATOR "template error: file.lt:LINE: ...". */
sfa_status sfa__render(const sfa__template *extra, const char *entry,
                       const sfa_kernel_spec *spec, char **out, char *err, size_t errlen);

/* snprintf into err if err is not NULL; returns status. */
sfa_status sfa__fail(char *err, size_t errlen, sfa_status status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

#endif
