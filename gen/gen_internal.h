/*
** gen_internal.h -- what gen/ shares with the rest of sfa but not with users:
** the embedded files, spec helpers, the presets, the kernel ABI tables the
** templates see, and the render entry points and their limits. The arch and
** mode tables have their own headers (gen/arch.h, gen/mode.h).
*/
#ifndef SFA_GEN_INTERNAL_H
#define SFA_GEN_INTERNAL_H

#include <stddef.h>
#include "sfa.h"
#include "runtime/kernel_abi_fields.h" /* the ABI field lists, SFA__BWD_PLAN_INTS */

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
** is out of range. The mode's Lua name is "qk_drop", its name token "qkdrop"
** (both from the mode table, gen/mode.h). */
const char *sfa__pass_name(sfa_pass p);   /* "fwd", "bwddq", "bwd", "bwd_pre", "convert",
                                             "hash_sort", "permute", "topk", "merge" */
const char *sfa__mode_name(sfa_mode m);   /* "dense", "qk_drop", "hash", "window" */
const char *sfa__mode_token(sfa_mode m);  /* "dense", "qkdrop", "hash", "window" */
const char *sfa__dtype_name(sfa_dtype d); /* "fp16", "bf16", "fp32", "int32", "uint8" */

const char *sfa__mma_name(sfa_spec_mma m);  /* "sync", "wgmma", "ws" (the tuning db's mma column) */
const char *sfa__mma_token(sfa_spec_mma m); /* "", "wg", "ws" (the kernel name's flag token) */

/* 1 where a and b have the same configuration (sfa.h: block_m, block_n,
** num_warps, num_stages, mma). */
int sfa__spec_same_config(const sfa_kernel_spec *a, const sfa_kernel_spec *b);

/* 1 for the utility passes (SFA_PASS_BWD_PRE .. SFA_PASS_TOPK), whose specs
** have no mode, flags or tiles (include/sfa.h). */
int sfa__pass_is_util(sfa_pass p);
/* The dtypes a utility pass takes, one bit (1u << dtype) each; 0 for others. */
unsigned sfa__util_dtypes(sfa_pass p);

/* Checks only that every field lies in its domain (the values a canonical name
** can spell); sfa_spec_validate adds what is implemented and what fits the
** arch. SFA_ERR_INVALID_ARGUMENT with the field named. */
sfa_status sfa__spec_check_domain(const sfa_kernel_spec *spec, char *err, size_t errlen);

/* Shared memory (bytes) that the arch allows one block to opt into (its row
** of the arch table, gen/arch.h); 0 if the arch is unknown. */
size_t sfa__arch_smem_limit(int arch);

/* Accumulator registers per thread that the tile needs (the variant
** descriptor's, gen/variant.h; the spec's fields in their domains). */
int sfa__spec_acc_registers(const sfa_kernel_spec *spec);

/* 1 where the spec's kernel uses the wgmma backend (mma SFA_SPEC_MMA_WGMMA or
** SFA_SPEC_MMA_WS); sfa__spec_is_ws: the warp-specialized forward (WS). */
int sfa__spec_is_wgmma(const sfa_kernel_spec *spec);
int sfa__spec_is_ws(const sfa_kernel_spec *spec);

/* 1 where the pass (fwd, bwd), arch (one whose row has wgmma: 90) and head
** dim (64, 128; 256 in pass bwd) allow a wgmma kernel (mma SFA_SPEC_MMA_WGMMA). */
int sfa__wgmma_allowed(const sfa_kernel_spec *spec);
/* 1 where the warp-specialized forward (mma SFA_SPEC_MMA_WS) is allowed: a
** forward on an arch with wgmma, head dim 64, 128 or 256, without the mask
** flag. */
int sfa__ws_allowed(const sfa_kernel_spec *spec);

/* sfa_spec_default with the mma kind chosen: wg 2 ws, 1 wgmma, 0 mma.sync, -1
** the default's choice (wgmma for the forward and the backward where
** allowed). A kind the spec does not allow falls back to the next one (ws to
** wgmma, wgmma to mma.sync). */
sfa_status sfa__spec_default_mma(sfa_kernel_spec *spec, int wg, char *err, size_t errlen);
/* The default of a problem whose query rows see at most tk keys (the key
** length), from the spec's sfa_spec_default tiles: where short rows were
** measured faster on other tiles (tk <= SFA__SHORT_KEYS: the D 64 ws forward
** of dense and qk_drop on one consumer instead of three), those; returns 1
** where it changed the spec. A spec with other tiles is left alone. */
#define SFA__SHORT_KEYS 4096
int sfa__spec_for_keys(sfa_kernel_spec *spec, int64_t tk);
#define SFA__MAX_ACC_REGISTERS 192
#define SFA__BWD_MAX_HEAD_DIM 128 /* sfa_backward: every multiple of 16 up to here */
/* Above 128 the backward takes multiples of 32 up to 256: the columns of dK,
** dV and dQ split over two CTAs per key tile. */
#define SFA__BWD_KERNEL_MAX_HEAD_DIM 256
/* (The columns of dK, dV and dQ one bwd CTA makes, all of head_dim up to 128,
** else half, are the variant descriptor's cols and nsplit: gen/variant.h.) */
/* 1 where the bwd variant comes with a plan kernel, entry "<name>_plan"
** (templates/bwd.lt): it runs the mode's key-tile setup (searches of the
** query metadata) for every (batch, query head, key tile) ahead of the bwd
** kernel and writes SFA__BWD_PLAN_INTS int32 per tile to sfa_bwd_args.plan,
** so that a bwd CTA starts with one load instead of a chain of dependent
** ones. The modes whose row says so (gen/mode.h, bwd_plan): hash. */
int sfa__bwd_plan(const sfa_kernel_spec *spec);
/* SFA__BWD_PLAN_INTS: runtime/kernel_abi_fields.h. */
#define SFA__PLAN_SUFFIX "_plan"

/* The kernel list of a preset (gen/presets.c) for each of narchs arches, with
** default tiles: *specs is malloc'ed (free), *n its length. Unknown names and
** arches are SFA_ERR_INVALID_ARGUMENT with the allowed values in err. */
sfa_status sfa__preset(const char *name, const int *archs, int narchs, sfa_kernel_spec **specs,
                       size_t *n, char *err, size_t errlen);
#define SFA__PRESET_NAMES "small, default, all-modes and dense-tiles"

/* Longest canonical name plus NUL. */
#define SFA__NAME_MAX 96

/* ------------------------------------------------------------ the kernel ABI */

/* What gen/abi.c tells the templates (as the table ABI) about each parameter
** block of runtime/kernel_abi_fields.h: the C layout, from offsetof and sizeof
** of the C structs. */
typedef struct sfa__abi_field {
  const char *name;
  const char *ctype;  /* "uint64_t", "int64_t", "int32_t", "float" */
  const char *type;   /* the generated CUDA's spelling: "u64", "i64", "int", "float" */
  const char *doc;    /* "" continues the comment of the field before */
  size_t offset, size;
} sfa__abi_field;

typedef struct sfa__abi_struct {
  const char *name;    /* in the generated CUDA, e.g. "sfa_hash_sort_args" */
  const char *c_name;  /* in C, e.g. "sfa__hash_sort_args" */
  size_t size, align;
  const sfa__abi_field *fields; /* in memory order */
  size_t nfields;
} sfa__abi_struct;

typedef struct sfa__abi_const {
  const char *name;  /* the C macro, e.g. "SFA__BWD_PLAN_INTS" */
  long long value;
  const char *doc;
} sfa__abi_const;

/* Every block of SFA_ABI_STRUCTS and every constant of SFA_ABI_CONSTANTS. */
extern const sfa__abi_struct sfa__abi_structs[];
extern const size_t sfa__abi_nstructs;
extern const sfa__abi_const sfa__abi_consts[];
extern const size_t sfa__abi_nconsts;
/* The names of the fields of SFA_ABI_VARLEN_ARGS (the varlen variants' tail). */
extern const char *const sfa__abi_varlen_fields[];
extern const size_t sfa__abi_nvarlen;
/* The names of the fields of SFA_ABI_VARLEN_COLS_ARGS (the tail after it that
** varlen variants with a bias or a mask declare). */
extern const char *const sfa__abi_varlen_cols_fields[];
extern const size_t sfa__abi_nvarlen_cols;

/* ------------------------------------------------------------ rendering */

/* An in-memory template: name (e.g. "main.lt") and its text. */
typedef struct sfa__template {
  const char *name;
  const char *text;
} sfa__template;

/* Render template `entry` with the template engine. Templates are looked up
** first in `extra` (an array ended by {NULL, NULL}, may be NULL), then in
** $SFA_TEMPLATE_DIR when set, else among the embedded files; a name must be a
** plain file name (letters, digits, '_', '-', '.', not first; no path). If spec
** is not NULL the template sees the Lua table `spec` (as sfa_generate passes
** it; the spec is not validated here), else an empty `spec` table, and the
** table V, the spec's variant descriptor (gen/variant.h; empty where the spec
** does not validate). Every render sees the table ABI (gen/abi.c):
**   ABI.structs[name] = {name =, c_name =, size =, align =,
**                        fields = {{name =, type =, ctype =, offset =, size =,
**                                   doc =, varlen =, varlen_cols =}, ... in memory
**                                   order}}
**   (varlen: true for a field of SFA_ABI_VARLEN_ARGS, which only varlen
**   variants declare; varlen_cols: of SFA_ABI_VARLEN_COLS_ARGS, which only
**   varlen variants with a bias or a mask declare)
**   ABI.const[NAME] = value    (e.g. ABI.const.SFA__BWD_PLAN_INTS)
** templates/abi.lt emits a struct from it (abi_struct(name)). *out is
** malloc'ed. Lua errors become SFA_ERR_GENERATOR "template error: file.lt:LINE:
** ...". Templates run in a sandbox (gen/sandbox.c) under the default limits. */
sfa_status sfa__render(const sfa__template *extra, const char *entry,
                       const sfa_kernel_spec *spec, char **out, char *err, size_t errlen);

/* sfa__render with abi[0..nabi) added to ABI.structs, replacing a struct of
** the same name (abi may be NULL when nabi is 0): for tests of
** templates/abi.lt with field lists other than the real ones. */
sfa_status sfa__render_with_abi(const sfa__abi_struct *abi, size_t nabi,
                                const sfa__template *extra, const char *entry,
                                const sfa_kernel_spec *spec, char **out, char *err,
                                size_t errlen);

/* The limits of one render; each one reached is SFA_ERR_GENERATOR "template
** error: file.lt:LINE: ..." (the line where Lua knows it). A field of 0 takes
** the default below. */
typedef struct sfa__render_limits {
  long long instructions; /* Lua VM instructions, plus the steps charged for
                          ** library calls that work outside the VM (pattern
                          ** matching, table.move/insert/remove, load) */
  size_t heap;            /* bytes of Lua heap in use at once */
  size_t allocated;       /* bytes the Lua heap hands out over the render */
  size_t output;          /* bytes of rendered text */
  double seconds;         /* wall-clock time, looked at every 1000 instructions */
} sfa__render_limits;

/* The defaults, at least 20x what the largest render needs. Measured over every
** variant of the default, all-modes and dense-tiles presets at sm_80, 86, 87, 89
** and 90 and every utility kernel (2045 sources, embedded templates and the same
** from SFA_TEMPLATE_DIR); the largest is sfa_bwd_hash_wg_fp16_d128_m64n128_w8s2_sm90.
** The offset asserts of the ABI table (issue 17) grew that one to the figures in
** brackets (by bisecting each limit to within 1000).
** tests/test_sandbox.c renders every preset variant under a twentieth of each. */
#define SFA__TEMPLATE_MAX_INSTRUCTIONS 50000000LL      /* measured max 890,362 [986,112] */
#define SFA__TEMPLATE_MAX_HEAP ((size_t)64 << 20)       /* measured max 494,545 [745,472] */
#define SFA__TEMPLATE_MAX_ALLOCATED ((size_t)256 << 20) /* measured max 1,392,259 [1,616,896] */
#define SFA__TEMPLATE_MAX_OUTPUT ((size_t)8 << 20)      /* measured max 37,932 [54,905] */
/* A catch-all for work that neither counts as instructions nor allocates
** (comparing two long strings): looked at every 1000 instructions. */
#define SFA__TEMPLATE_MAX_SECONDS 10.0
/* The largest template file read from SFA_TEMPLATE_DIR (the largest in
** templates/, bwd.lt, has 32,781 bytes). */
#define SFA__TEMPLATE_MAX_FILE ((size_t)4 << 20)

/* Renders the template text[0..len) (it may hold any bytes) as the template
** called name, with the same engine, sandbox and lookup of included templates
** as sfa__render (extra = NULL), under limits (NULL: the defaults). name must
** be a plain file name as above; it hides an embedded or SFA_TEMPLATE_DIR
** template of that name. text may be NULL when len is 0. For fuzzing the
** engine (unset SFA_TEMPLATE_DIR so that includes resolve to the embedded
** templates): every outcome should be a status -- no crash, no hang past the
** limits, no memory past them. *out is malloc'ed (free) and NUL-terminated; it
** never holds a NUL byte. SFA_ERR_INVALID_ARGUMENT for a bad name, out or text. */
sfa_status sfa__render_string(const char *name, const char *text, size_t len,
                              const sfa_kernel_spec *spec, const sfa__render_limits *limits,
                              char **out, char *err, size_t errlen);

/* snprintf into err if err is not NULL; returns status. */
sfa_status sfa__fail(char *err, size_t errlen, sfa_status status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

#endif
