/*
** mode.h -- the one table of the attention modes (gen/mode.c), like the arch
** table (gen/arch.h). One row per sfa_mode: its names, the feature flags its
** kernels take, the members of sfa_extras it reads, what the generator and
** the backward need to know of it, and the functions where its host-side
** behaviour differs (the CPU reference's rule, sfa_check_indices' contract,
** the tuner's synthetic index arrays). Spec validation and names, the
** presets, sfa_forward / sfa_backward (validation, flags, kernel arguments),
** the CPU references, sfa_check_indices, the tuner and the tools read it;
** nothing else switches on modes. A new mode is a row here (with its
** functions where they differ) plus its template, templates/mode_<name>.lt.
**
** The members of sfa_extras have their own small table (sfa__extras): their
** names, where they are in sfa_extras and sfa_host_extras, and their layout
** rules, which validation and the kernel arguments follow for every mode that
** reads them.
*/
#ifndef SFA_GEN_MODE_H
#define SFA_GEN_MODE_H

#include <stddef.h>
#include <stdint.h>

#include "sfa.h"

struct sfa__problem; /* runtime/autotune.h */

/* ------------------------------------------------------------ extras */

/* The members of sfa_extras (and of sfa_host_extras), one bit each. */
#define SFA__EX_Q_IDX (1u << 0)
#define SFA__EX_K_IDX (1u << 1)
#define SFA__EX_Q_HASH (1u << 2)
#define SFA__EX_K_HASH (1u << 3)
#define SFA__EX_BIAS (1u << 4)
#define SFA__EX_MASK (1u << 5)
#define SFA__EX_ALIBI (1u << 6)
#define SFA__EX_CU_Q (1u << 7)
#define SFA__EX_CU_K (1u << 8)
#define SFA__EX_SEQLENS (SFA__EX_CU_Q | SFA__EX_CU_K) /* read by every mode */

/* The layout of a member. */
typedef enum sfa__extra_kind {
  SFA__EXTRA_INDEX, /* int32 [B, Hq, Tq] (q side) or [B, Hkv, Tk] (k side), contiguous
                       along time, 4-byte aligned */
  SFA__EXTRA_BIAS,  /* q's dtype [B|1, Hq|Hkv|1, Tq|1, Tk] */
  SFA__EXTRA_MASK,  /* uint8, the bias's shape rules; 16-byte aligned data and batch,
                       head and row strides (the kernels read 16-byte vectors) */
  SFA__EXTRA_SLOPES, /* float32 [Hq] or [B, Hq], contiguous (one value per query head) */
  SFA__EXTRA_SEQLENS /* int32 [B + 1], contiguous: packed sequences (cu_seqlens_q on the
                        q side, cu_seqlens_k on the k side); given together */
} sfa__extra_kind;

typedef struct sfa__extra {
  unsigned bit;          /* SFA__EX_* */
  const char *name;      /* "q_idx": extras->q_idx, ex->q_idx */
  const char *what;      /* in messages: "q_idx", "a bias" */
  size_t offset;         /* of its const sfa_tensor * in sfa_extras */
  size_t host_offset;    /* of its pointer in sfa_host_extras; SFA__NO_HOST where that
                            struct has none (the references take one sequence) */
  sfa__extra_kind kind;
  int k_side;            /* SFA__EXTRA_INDEX: 1 for the keys' [B, Hkv, Tk] */
  unsigned same_strides; /* the member whose batch and head strides it must have (the
                            kernel ABI has one pair for both), or 0 */
  unsigned feat;         /* the SFA_FEAT_* bit its presence asks of the kernel, or 0 */
} sfa__extra;

#define SFA__NO_HOST ((size_t)-1)

/* Every member in sfa_extras order; *n gets their count. */
const sfa__extra *sfa__extras(size_t *n);

/* The tensor of member e in ex (NULL when ex is NULL), and the array of e in
** a host extras hx (NULL where hx has no such member). */
const sfa_tensor *sfa__extra_tensor(const sfa__extra *e, const sfa_extras *ex);
const void *sfa__extra_host(const sfa__extra *e, const sfa_host_extras *hx);

/* ------------------------------------------------------------ modes */

/* One (query row, key) pair of a problem, as the CPU reference asks a mode
** about it. The index entries are set where the mode reads those arrays. */
typedef struct sfa__pair {
  int64_t j;                 /* the key */
  int64_t diag;              /* the key aligned with the query row: i + Tk - Tq */
  int causal;                /* params.causal, where the mode takes SFA_FEAT_CAUSAL */
  int strict;                /* params.strict_causal (qk_drop, hash): q_idx > k_idx */
  int64_t wl, wr;            /* params.window_left / window_right */
  int32_t q_idx, k_idx;      /* q_idx of the row, k_idx of the key */
  int32_t q_hash, k_hash;    /* their buckets */
  int masked;                /* a mask is given and its byte for the key is 0 */
} sfa__pair;

typedef struct sfa__mode {
  sfa_mode mode;
  const char *name;       /* sfa_mode_name, the Lua spec's mode, templates/mode_<name>.lt */
  const char *token;      /* in canonical names: "qkdrop" */
  unsigned flags;         /* the SFA_FEAT_* of the problem its kernels take (det aside) */
  unsigned reads;         /* SFA__EX_* members of sfa_extras it reads; the others must be
                             NULL */
  unsigned needs;         /* of those, the ones that must be given */
  int causal_by_index;    /* its causality is q_idx >= k_idx: params.causal is ignored */
  int window;             /* params.window_left / window_right apply (else they are -1) */
  int qmeta_ints;         /* int32 of query metadata per query row that its bwd kernel
                             stages in shared memory with the tile (bwd.lt's NMETA) */
  int bwd_plan;           /* its bwd comes with a plan kernel (sfa__bwd_plan) */
  int decode;             /* pass decode serves it (sfa_decode: no extras; the kernel's
                             rule is the template's decode_allowed; hash reads the
                             buckets of sfa_kv_cache instead) */
  int decode_key_ints;    /* int32 of key metadata per key row that its decode kernel
                             stages in shared memory with each key tile (decode.lt's
                             kmeta: hash's k_hash); 0: none */
  int decode_hash;        /* its decode reads the buckets sfa_kv_cache.k_hash and q_hash
                             (required; NULL in the other modes) */
  int short_rows;         /* a row sees few keys (a bucket, a window): the sm_90 forward
                             at D 64 takes one warpgroup per CTA (sfa_spec_default) */
  unsigned utils;         /* 1u << pass of the utility kernels its callers need besides
                             the backward's (the presets ship them) */
  /* The reference's rule: may the row see the key? */
  int (*allowed)(const sfa__pair *p);
  /* sfa_check_indices' contract of one (batch, head) row of T entries of the
  ** q side (k_side 0) or k side (hash NULL where the mode has none); NULL for
  ** a mode without index arrays. Messages name extras->ARRAY[b, h, t]. */
  sfa_status (*check_index_row)(int k_side, const int32_t *idx, const int32_t *hash,
                                long long b, long long h, long long T, char *err,
                                size_t errlen);
  /* The tuner's synthetic index arrays of one side of problem p (rows = B *
  ** heads of that side, T its length): idx and (where the mode reads them)
  ** hash, [rows, T]. NULL for a mode without index arrays. 0 or an
  ** sfa_status. */
  int (*tune_indices)(const struct sfa__problem *p, int k_side, int32_t *idx, int32_t *hash,
                      uint64_t *rng);
} sfa__mode;

/* Every row in sfa_mode order; *n gets their count. */
const sfa__mode *sfa__mode_table(size_t *n);

/* The row of mode m, or NULL for a value outside sfa_mode. */
const sfa__mode *sfa__mode_find(sfa_mode m);

/* The row whose name or name token is s, or NULL. */
const sfa__mode *sfa__mode_named(const char *s);

/* The names (tokens with tokens = 1) of the modes that keep(m, arg) accepts
** (every mode with keep NULL) into buf, as "a, b or c" with last_sep before
** the last; returns their count. */
int sfa__mode_list(char *buf, size_t n, int tokens, const char *last_sep,
                   int (*keep)(const sfa__mode *m, unsigned arg), unsigned arg);

/* keep functions for sfa__mode_list: the mode reads every member of arg; takes
** a flag of arg; has an index contract. */
int sfa__mode_reads_all(const sfa__mode *m, unsigned extras);
int sfa__mode_takes_any(const sfa__mode *m, unsigned flags);
int sfa__mode_has_indices(const sfa__mode *m, unsigned unused);
int sfa__mode_decodes(const sfa__mode *m, unsigned unused);

/* The feature flags of a call of mode m with these params and extras
** (validated): causal where the mode takes it and params.causal is 1, strict
** where params.strict_causal is 1, softcap where params.softcap > 0, and the
** flag of each member that is given. */
unsigned sfa__mode_call_flags(const sfa__mode *m, const sfa_attention_params *p,
                              const sfa_extras *ex);

/* ------------------------------------------------------------ per-mode functions */

/* The rules of sfa__mode.allowed (gen/mode.c). */
int sfa__allowed_dense(const sfa__pair *p);
int sfa__allowed_qk_drop(const sfa__pair *p);
int sfa__allowed_hash(const sfa__pair *p);
int sfa__allowed_window(const sfa__pair *p);

/* sfa__mode.check_index_row (runtime/indices.c). */
sfa_status sfa__index_row_qk_drop(int k_side, const int32_t *idx, const int32_t *hash,
                                  long long b, long long h, long long T, char *err,
                                  size_t errlen);
sfa_status sfa__index_row_hash(int k_side, const int32_t *idx, const int32_t *hash,
                               long long b, long long h, long long T, char *err,
                               size_t errlen);

/* sfa__mode.tune_indices (runtime/tune_gpu.c). */
int sfa__tune_indices_qk_drop(const struct sfa__problem *p, int k_side, int32_t *idx,
                              int32_t *hash, uint64_t *rng);
int sfa__tune_indices_hash(const struct sfa__problem *p, int k_side, int32_t *idx,
                           int32_t *hash, uint64_t *rng);

#endif
