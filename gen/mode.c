/*
** mode.c -- the table of the attention modes and of the members of sfa_extras
** (mode.h), their queries, and the masking rule of each mode as the CPU
** reference applies it (docs/semantics.md), with off =
** Tk - Tq and diag = i + off:
**   dense    causal: query i sees key j iff j <= diag (bottom-right)
**   qk_drop  q_idx[i] >= k_idx[j] (strict: >); q_idx -1 sees nothing, k_idx INT32_MAX is
**            never seen
**   hash     q_hash[i] == k_hash[j] and the qk_drop rule
**   window   (window_left < 0 || j >= diag - window_left) and
**            (causal ? j <= diag : window_right < 0 || j <= diag + window_right)
**            and mask[.., j] != 0 where a mask is given
** The kernels' rules are the same, in templates/mode_<name>.lt (pass decode:
** dense, window and hash, with q_idx the new token's position, k_idx the
** key's). Every mode
** takes packed sequences (SFA_FEAT_VARLEN, extras cu_seqlens_q / _k): each
** sequence is then its own problem under these rules.
*/
#include <stdio.h>
#include <string.h>

#include "gen/gen_internal.h"
#include "gen/mode.h"

/* ------------------------------------------------------------ extras */

#define EX(bit, member, what, kind, k_side, same, feat)                                   \
  {bit, #member, what, offsetof(sfa_extras, member), offsetof(sfa_host_extras, member), \
   kind, k_side, same, feat}

static const sfa__extra extras[] = {
  EX(SFA__EX_Q_IDX, q_idx, "q_idx", SFA__EXTRA_INDEX, 0, 0, 0),
  EX(SFA__EX_K_IDX, k_idx, "k_idx", SFA__EXTRA_INDEX, 1, 0, 0),
  EX(SFA__EX_Q_HASH, q_hash, "q_hash", SFA__EXTRA_INDEX, 0, SFA__EX_Q_IDX, 0),
  EX(SFA__EX_K_HASH, k_hash, "k_hash", SFA__EXTRA_INDEX, 1, SFA__EX_K_IDX, 0),
  EX(SFA__EX_BIAS, bias, "a bias", SFA__EXTRA_BIAS, 0, 0, SFA_FEAT_BIAS),
  EX(SFA__EX_MASK, mask, "a mask", SFA__EXTRA_MASK, 0, 0, SFA_FEAT_MASK),
  EX(SFA__EX_ALIBI, alibi_slopes, "alibi_slopes", SFA__EXTRA_SLOPES, 0, 0, SFA_FEAT_ALIBI),
  {SFA__EX_CU_Q, "cu_seqlens_q", "cu_seqlens_q", offsetof(sfa_extras, cu_seqlens_q),
   SFA__NO_HOST, SFA__EXTRA_SEQLENS, 0, 0, SFA_FEAT_VARLEN},
  {SFA__EX_CU_K, "cu_seqlens_k", "cu_seqlens_k", offsetof(sfa_extras, cu_seqlens_k),
   SFA__NO_HOST, SFA__EXTRA_SEQLENS, 1, 0, SFA_FEAT_VARLEN},
};
#define NEXTRAS (sizeof extras / sizeof extras[0])

const sfa__extra *sfa__extras(size_t *n) {
  if (n) *n = NEXTRAS;
  return extras;
}

const sfa_tensor *sfa__extra_tensor(const sfa__extra *e, const sfa_extras *ex) {
  const sfa_tensor *t = NULL;
  if (ex) memcpy(&t, (const char *)ex + e->offset, sizeof t);
  return t;
}

const void *sfa__extra_host(const sfa__extra *e, const sfa_host_extras *hx) {
  const void *p = NULL;
  if (hx && e->host_offset != SFA__NO_HOST) memcpy(&p, (const char *)hx + e->host_offset, sizeof p);
  return p;
}

/* ------------------------------------------------------------ the rules */

int sfa__allowed_dense(const sfa__pair *p) { return !p->causal || p->j <= p->diag; }

int sfa__allowed_qk_drop(const sfa__pair *p) {
  return p->q_idx != -1 && p->k_idx != INT32_MAX &&
         (p->strict ? p->q_idx > p->k_idx : p->q_idx >= p->k_idx);
}

int sfa__allowed_hash(const sfa__pair *p) {
  return sfa__allowed_qk_drop(p) && p->q_hash == p->k_hash;
}

int sfa__allowed_window(const sfa__pair *p) {
  return (p->wl < 0 || p->j >= p->diag - p->wl) &&
         (p->causal ? p->j <= p->diag : (p->wr < 0 || p->j <= p->diag + p->wr)) && !p->masked;
}

/* ------------------------------------------------------------ the table */

#define IDX (SFA__EX_Q_IDX | SFA__EX_K_IDX)
#define VL SFA_FEAT_VARLEN
#define SEQ SFA__EX_SEQLENS
#define HASH (SFA__EX_Q_HASH | SFA__EX_K_HASH)
#define UTIL(p) (1u << (p))

static const sfa__mode rows[] = {
  {.mode = SFA_MODE_DENSE, .name = "dense", .token = "dense",
   .flags = SFA_FEAT_CAUSAL | SFA_FEAT_SOFTCAP | SFA_FEAT_ALIBI | VL, .reads = SFA__EX_ALIBI | SEQ,
   .decode = 1, .allowed = sfa__allowed_dense},
  {.mode = SFA_MODE_QK_DROP, .name = "qk_drop", .token = "qkdrop",
   .flags = SFA_FEAT_STRICT | SFA_FEAT_SOFTCAP | VL, .reads = IDX | SEQ, .needs = IDX,
   .causal_by_index = 1, .qmeta_ints = 1, /* q_idx */
   .allowed = sfa__allowed_qk_drop, .check_index_row = sfa__index_row_qk_drop,
   .tune_indices = sfa__tune_indices_qk_drop},
  {.mode = SFA_MODE_HASH, .name = "hash", .token = "hash",
   .flags = SFA_FEAT_STRICT | SFA_FEAT_SOFTCAP | VL, .reads = IDX | HASH | SEQ,
   .needs = IDX | HASH, .causal_by_index = 1, .qmeta_ints = 2, /* q_hash, q_idx */
   .bwd_plan = 1, /* the key tile's query range: searches of the sorted buckets */
   .short_rows = 1, .decode = 1, .decode_key_ints = 1, /* k_hash */ .decode_hash = 1,
   .utils = UTIL(SFA_PASS_HASH_SORT) | UTIL(SFA_PASS_PERMUTE), /* sfa_hash_prepare, unsort */
   .allowed = sfa__allowed_hash, .check_index_row = sfa__index_row_hash,
   .tune_indices = sfa__tune_indices_hash},
  {.mode = SFA_MODE_WINDOW, .name = "window", .token = "window",
   .flags = SFA_FEAT_CAUSAL | SFA_FEAT_BIAS | SFA_FEAT_MASK | SFA_FEAT_SOFTCAP | SFA_FEAT_ALIBI | VL,
   .reads = SFA__EX_BIAS | SFA__EX_MASK | SFA__EX_ALIBI | SEQ, .window = 1, .decode = 1,
   .short_rows = 1,
   .utils = UTIL(SFA_PASS_TOPK), /* sfa_topk_mask makes its mask */
   .allowed = sfa__allowed_window},
};
#define NROWS (sizeof rows / sizeof rows[0])

const sfa__mode *sfa__mode_table(size_t *n) {
  if (n) *n = NROWS;
  return rows;
}

const sfa__mode *sfa__mode_find(sfa_mode m) {
  return (unsigned)m < NROWS ? &rows[m] : NULL;
}

const sfa__mode *sfa__mode_named(const char *s) {
  for (size_t i = 0; s && i < NROWS; i++)
    if (strcmp(s, rows[i].name) == 0 || strcmp(s, rows[i].token) == 0) return &rows[i];
  return NULL;
}

int sfa__mode_list(char *buf, size_t n, int tokens, const char *last_sep,
                   int (*keep)(const sfa__mode *m, unsigned arg), unsigned arg) {
  int total = 0, k = 0;
  for (size_t i = 0; i < NROWS; i++) total += !keep || keep(&rows[i], arg);
  if (!buf || n == 0) return total;
  buf[0] = '\0';
  for (size_t i = 0; i < NROWS; i++) {
    if (keep && !keep(&rows[i], arg)) continue;
    size_t at = strlen(buf);
    snprintf(buf + at, n - at, "%s%s", k == 0 ? "" : k == total - 1 ? last_sep : ", ",
             tokens ? rows[i].token : rows[i].name);
    k++;
  }
  return total;
}

int sfa__mode_reads_all(const sfa__mode *m, unsigned extras_bits) {
  return (m->reads & extras_bits) == extras_bits;
}

int sfa__mode_decodes(const sfa__mode *m, unsigned unused) {
  (void)unused;
  return m->decode;
}

int sfa__mode_takes_any(const sfa__mode *m, unsigned flags) { return (m->flags & flags) != 0; }

int sfa__mode_has_indices(const sfa__mode *m, unsigned unused) {
  (void)unused;
  return m->check_index_row != NULL;
}

unsigned sfa__mode_call_flags(const sfa__mode *m, const sfa_attention_params *p,
                              const sfa_extras *ex) {
  unsigned f = (m->flags & SFA_FEAT_CAUSAL) && p->causal ? SFA_FEAT_CAUSAL : 0u;
  if (p->strict_causal) f |= SFA_FEAT_STRICT;
  if (p->softcap > 0) f |= SFA_FEAT_SOFTCAP;
  for (size_t i = 0; i < NEXTRAS; i++)
    if ((m->reads & extras[i].bit) && sfa__extra_tensor(&extras[i], ex)) f |= extras[i].feat;
  return f & m->flags;
}

/* ------------------------------------------------------------ names */

const char *sfa__mode_name(sfa_mode m) {
  const sfa__mode *r = sfa__mode_find(m);
  return r ? r->name : NULL;
}

const char *sfa_mode_name(int mode) { return sfa__mode_name((sfa_mode)mode); }

const char *sfa__mode_token(sfa_mode m) {
  const sfa__mode *r = sfa__mode_find(m);
  return r ? r->token : NULL;
}
