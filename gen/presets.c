/*
** presets.c -- the named kernel lists that sfa-gen ships and the compile tests
** check: each is a set of (mode, flags) classes times dtypes times head dims,
** with the default tiles of sfa_spec_default, for each requested arch (and
** where a short key length has other default tiles, sfa__spec_for_keys, those
** too: each call the preset covers finds its kernel whatever its length).
**
**   small       dense {-, causal} x fp16, bf16 x D {64,128}; qk_drop, hash,
**               window {causal} x bf16 x D 128; passes fwd and bwd only
**               (what setup.sh compiles: a quick, useful start)
**   default     dense {-, causal} x D {32,64,96,128,256};
**               qk_drop {-}, hash {-} x D {64,128};
**               window {causal, causal+bias, causal+bias+mask, mask} x D {64,128}
**   all-modes   every mode of the mode table x every flag set it takes
**               (window: all 8 of causal/bias/mask) x D {64,128}; on sm_90
**               every fwd and bwd kernel in both mma kinds (mma.sync and
**               wgmma), and each fwd kernel without a mask also warp-
**               specialized (mma ws), and each bwd kernel that the warp-
**               specialized backward serves (every mode, D 64 and 128,
**               no bias, mask or det; the preset has no varlen) also as ws
**   dense-tiles every valid tile config of dense bf16, causal and not, D {64,128},
**               with mma.sync and (sm_90) wgmma and ws (ws: D 256 too); and
**               (sm_90) the ws backward (2..4 stages), and at D 256 the
**               wgmma and the ws backward
** All of them for fp16 and bf16 except small and dense-tiles. default and
** all-modes hold every pass: for each forward kernel also its backward
** kernels bwd, bwd + det and bwddq (their own default tiles; D 256 included
** where a backward tile fits the arch: not in the 99 KB of sm_86, 88, 89 and
** 12x). Any arch of gen/arch.h; wgmma kernels where its row has wgmma (sm_90).
** small, default and all-modes also hold the decode kernels (pass decode,
** sfa_decode) of the modes that have one (dense, window, hash), with and
** without their causality flag (causal; hash: strict),
** and dense causal with gather: fp16 and bf16 x D {64,128}, small bf16 x D
** 128 (add_decode).
** small, default and all-modes also hold, per arch, the utility kernels that
** their attention kernels need at run time (add_utils): bwd_pre and convert
** in each dtype that has a backward kernel, and those the mode table names
** for the modes in it (sfa__mode.utils): hash_sort and permute
** (sfa_hash_prepare / sfa_hash_unsort) where mode hash is in, topk in fp16,
** bf16 and fp32 (sfa_topk_mask) where mode window is in; and merge
** (sfa_merge_attention, one kernel per arch) always, kv_append (sfa_kv_append)
** with the decode kernels; so that a kernel dir of
** such a preset serves every call without NVRTC.
*/
#include <stdlib.h>
#include <string.h>

#include "gen/arch.h"
#include "gen/gen_internal.h"
#include "gen/mode.h"

#define C SFA_FEAT_CAUSAL
#define B SFA_FEAT_BIAS
#define M SFA_FEAT_MASK

/* One group of a preset: a mode with its flag sets and head dims, in the
** dtypes and passes it names. */
typedef struct group {
  sfa_mode mode;
  unsigned flags[9]; /* ended by ~0u */
  int dims[6];       /* ended by 0 */
  int bf16_only;     /* 0: fp16 and bf16 */
  int npasses;       /* the first npasses of fwd, bwd, bwd + det, bwddq; 0: all */
} group;

#define END ~0u
static const group small_groups[] = {
  {SFA_MODE_DENSE, {0, C, END}, {64, 128, 0}, 0, 2},
  {SFA_MODE_QK_DROP, {0, END}, {128, 0}, 1, 2},
  {SFA_MODE_HASH, {0, END}, {128, 0}, 1, 2},
  {SFA_MODE_WINDOW, {C, END}, {128, 0}, 1, 2},
};
static const group default_groups[] = {
  {SFA_MODE_DENSE, {0, C, END}, {32, 64, 96, 128, 256, 0}, 0, 0},
  {SFA_MODE_QK_DROP, {0, END}, {64, 128, 0}, 0, 0},
  {SFA_MODE_HASH, {0, END}, {64, 128, 0}, 0, 0},
  {SFA_MODE_WINDOW, {C, C | B, C | B | M, M, END}, {64, 128, 0}, 0, 0},
};
#define NGROUPS(g) (sizeof(g) / sizeof((g)[0]))

/* all-modes: every row of the mode table (gen/mode.c) with every set of the
** flags it takes, in increasing order (dense: -, causal; window: all 8). */
static size_t all_modes_groups(group *g, size_t cap) {
  size_t nm = 0, n = 0;
  const sfa__mode *m = sfa__mode_table(&nm);
  for (size_t i = 0; i < nm && n < cap; i++, n++) {
    group x = {m[i].mode, {0}, {64, 128, 0}, 0, 0};
    int k = 0;
    for (unsigned f = 0; f <= (C | B | M) && k < 8; f++)
      if (!(f & ~m[i].flags)) x.flags[k++] = f;
    x.flags[k] = END;
    g[n] = x;
  }
  return n;
}

typedef struct list {
  sfa_kernel_spec *v;
  size_t n, cap;
} list;

static int push(list *l, const sfa_kernel_spec *s) {
  if (l->n == l->cap) {
    size_t cap = l->cap ? 2 * l->cap : 64;
    sfa_kernel_spec *v = realloc(l->v, cap * sizeof *v);
    if (!v) return -1;
    l->v = v;
    l->cap = cap;
  }
  l->v[l->n++] = *s;
  return 0;
}

/* both_kinds: where wgmma is allowed (sm_90, fwd and bwd, D 64 and 128), the
** kernel of the other mma kind too, with its default tiles, and where the
** warp-specialized kernel is allowed (sfa__ws_allowed: fwd at D 256 too;
** bwd without a bias, mask or det, and at D 256 not varlen), its kernel. */
static sfa_status add_groups(list *l, const group *g, size_t ng, int arch, int both_kinds,
                             char *err, size_t errlen) {
  for (size_t i = 0; i < ng; i++)
    for (int f = 0; g[i].flags[f] != END; f++)
      for (int t = g[i].bf16_only; t < 2; t++)
        for (int d = 0; g[i].dims[d]; d++) {
          /* fwd, then (where the backward has kernels) bwd, bwd + det and bwddq */
          static const struct { sfa_pass pass; unsigned extra; } passes[] = {
            {SFA_PASS_FWD, 0}, {SFA_PASS_BWD, 0},
            {SFA_PASS_BWD, SFA_FEAT_DETERMINISTIC}, {SFA_PASS_BWD_DQ, 0}};
          const int dim = g[i].dims[d];
          int np = dim <= 128 || (dim <= SFA__BWD_KERNEL_MAX_HEAD_DIM && dim % 32 == 0) ? 4 : 1;
          if (g[i].npasses && np > g[i].npasses) np = g[i].npasses;
          for (int p = 0; p < np; p++) {
            sfa_kernel_spec s = {passes[p].pass, g[i].mode,
                                 t ? SFA_DTYPE_BF16 : SFA_DTYPE_FP16, g[i].dims[d], 0, 0, 0,
                                 0, arch, g[i].flags[f] | passes[p].extra, SFA_SPEC_MMA_SYNC};
            sfa_kernel_spec other = s;
            sfa_status st = sfa_spec_default(&s, err, errlen);
            /* a backward that no tile of the arch fits (D 256 in 99 KB) has no
            ** kernels: neither its bwd passes nor the bwddq that goes with them */
            if (st == SFA_ERR_UNSUPPORTED && p > 0) break;
            if (st != SFA_OK) return st;
            if (push(l, &s) != 0)
              return sfa__fail(err, errlen, SFA_ERR_OUT_OF_MEMORY, "preset: out of memory");
            /* the short rows' default too, where it has other tiles */
            sfa_kernel_spec sk = s;
            if (sfa__spec_for_keys(&sk, 1) && push(l, &sk) != 0)
              return sfa__fail(err, errlen, SFA_ERR_OUT_OF_MEMORY, "preset: out of memory");
            if (!both_kinds || !(sfa__wgmma_allowed(&s) || sfa__ws_allowed(&s))) continue;
            /* each other kind the class allows: mma.sync, wgmma, ws */
            for (int kind = 0; kind < 3; kind++) {
              sfa_kernel_spec t = other;
              if (kind == 2 && !sfa__ws_allowed(&t)) continue;
              if ((st = sfa__spec_default_mma(&t, kind, err, errlen)) != SFA_OK) return st;
              if (t.mma == s.mma) continue;
              if (push(l, &t) != 0)
                return sfa__fail(err, errlen, SFA_ERR_OUT_OF_MEMORY, "preset: out of memory");
            }
          }
        }
  return SFA_OK;
}

/* The utility kernels that the attention kernels l->v[from..] of one arch
** need at run time (see the top of this file): the backward's, and those
** that the mode table names for the modes in the list. */
static sfa_status add_utils(list *l, size_t from, int arch, char *err, size_t errlen) {
  int bwd[2] = {0, 0}, dec = 0;
  unsigned utils = 0;
  for (size_t i = from; i < l->n; i++) {
    const sfa_kernel_spec *s = &l->v[i];
    if (s->pass == SFA_PASS_BWD) bwd[s->dtype == SFA_DTYPE_BF16] = 1;
    dec |= s->pass == SFA_PASS_DECODE;
    utils |= sfa__mode_find(s->mode)->utils;
  }
#define WANT(p) ((utils >> (p)) & 1u)
  struct { sfa_pass pass; sfa_dtype dtype; int want; } u[] = {
    {SFA_PASS_BWD_PRE, SFA_DTYPE_FP16, bwd[0]}, {SFA_PASS_BWD_PRE, SFA_DTYPE_BF16, bwd[1]},
    {SFA_PASS_CONVERT, SFA_DTYPE_FP16, bwd[0]}, {SFA_PASS_CONVERT, SFA_DTYPE_BF16, bwd[1]},
    {SFA_PASS_HASH_SORT, SFA_DTYPE_INT32, WANT(SFA_PASS_HASH_SORT)},
    {SFA_PASS_PERMUTE, SFA_DTYPE_UINT8, WANT(SFA_PASS_PERMUTE)},
    {SFA_PASS_TOPK, SFA_DTYPE_FP16, WANT(SFA_PASS_TOPK)},
    {SFA_PASS_TOPK, SFA_DTYPE_BF16, WANT(SFA_PASS_TOPK)},
    {SFA_PASS_TOPK, SFA_DTYPE_FP32, WANT(SFA_PASS_TOPK)},
    {SFA_PASS_MERGE, SFA_DTYPE_FP32, 1}, /* sfa_merge_attention serves every mode */
    {SFA_PASS_KV_APPEND, SFA_DTYPE_UINT8, dec}, /* sfa_kv_append, with the decode kernels */
  };
#undef WANT
  for (size_t i = 0; i < sizeof u / sizeof u[0]; i++) {
    if (!u[i].want) continue;
    sfa_kernel_spec s = {u[i].pass, SFA_MODE_DENSE, u[i].dtype, 0, 0, 0, 0, 0, arch, 0,
                         SFA_SPEC_MMA_SYNC};
    sfa_status st = sfa_spec_default(&s, err, errlen);
    if (st != SFA_OK) return st;
    if (push(l, &s) != 0)
      return sfa__fail(err, errlen, SFA_ERR_OUT_OF_MEMORY, "preset: out of memory");
  }
  return SFA_OK;
}

/* The decode kernels (pass decode, sfa_decode) of every mode that has one,
** with and without its causality flag (dense, window: causal; hash: strict),
** and dense causal with gather, default tiles: fp16 and bf16 at head dims 64
** and 128, or (small) bf16 at 128. */
static sfa_status add_decode(list *l, int arch, int small, char *err, size_t errlen) {
  size_t nm;
  const sfa__mode *m = sfa__mode_table(&nm);
  static const int dims[] = {64, 128};
  for (size_t i = 0; i < nm; i++) {
    if (!m[i].decode) continue;
    const unsigned cf = m[i].flags & (C | SFA_FEAT_STRICT); /* the mode's causality flag */
    for (int c = 0; c < 2; c++)
      for (int t = small; t < 2; t++)
        for (int d = small; d < 2; d++) {
          sfa_kernel_spec s = {SFA_PASS_DECODE, m[i].mode, t ? SFA_DTYPE_BF16 : SFA_DTYPE_FP16,
                               dims[d], 0, 0, 0, 0, arch, c ? cf : 0u, SFA_SPEC_MMA_SYNC};
          sfa_status st = sfa_spec_default(&s, err, errlen);
          if (st != SFA_OK) return st;
          if (push(l, &s) != 0)
            return sfa__fail(err, errlen, SFA_ERR_OUT_OF_MEMORY, "preset: out of memory");
          /* the index-list variant (kv_indices) of dense causal decoding */
          if (m[i].mode != SFA_MODE_DENSE || !c) continue;
          s.flags |= SFA_FEAT_GATHER;
          if ((st = sfa_spec_default(&s, err, errlen)) != SFA_OK) return st;
          if (push(l, &s) != 0)
            return sfa__fail(err, errlen, SFA_ERR_OUT_OF_MEMORY, "preset: out of memory");
        }
  }
  return SFA_OK;
}

static sfa_status add_dense_tiles(list *l, int arch, char *err, size_t errlen) {
  static const int dims[] = {64, 128}, ms[] = {64, 128}, ns[] = {32, 64, 128};
  static const int ws[] = {4, 8}, ss[] = {1, 2};
  for (int wg = 0; wg < 2; wg++) /* mma.sync, and wgmma where valid (sm_90) */
    for (int d = 0; d < 2; d++)
      for (int c = 0; c < 2; c++)
        for (int m = 0; m < 2; m++)
          for (int n = 0; n < 3; n++)
            for (int w = 0; w < 2; w++)
              for (int st = 0; st < 2; st++) {
                sfa_kernel_spec s = {SFA_PASS_FWD, SFA_MODE_DENSE, SFA_DTYPE_BF16, dims[d],
                                     ms[m], ns[n], ws[w], ss[st], arch, c ? C : 0u,
                                     wg ? SFA_SPEC_MMA_WGMMA : SFA_SPEC_MMA_SYNC};
                if (sfa_spec_validate(&s, NULL, 0) == SFA_OK && push(l, &s) != 0)
                  return sfa__fail(err, errlen, SFA_ERR_OUT_OF_MEMORY, "preset: out of memory");
              }
  /* the warp-specialized forward (sm_90): 1 to 3 consumers (3: D 64), 64-
  ** or 128-key tiles, 2..4 stages where they fit; D 256 too (its one tile) */
  static const int ws_dims[] = {64, 128, 256};
  for (int d = 0; d < 3; d++)
    for (int c = 0; c < 2; c++)
      for (int w = 8; w <= 16; w += 4)
        for (int n = 64; n <= 128; n += 64)
          for (int st = 2; st <= 4; st++) {
            sfa_kernel_spec s = {SFA_PASS_FWD, SFA_MODE_DENSE, SFA_DTYPE_BF16, ws_dims[d],
                                 16 * (w - 4), n, w, st, arch, c ? C : 0u, SFA_SPEC_MMA_WS};
            if (sfa_spec_validate(&s, NULL, 0) == SFA_OK && push(l, &s) != 0)
              return sfa__fail(err, errlen, SFA_ERR_OUT_OF_MEMORY, "preset: out of memory");
          }
  /* the warp-specialized backward (sm_90): D 64 and 128, 2..4 stages where they fit
  ** (D 128: two or three) */
  for (int d = 0; d < 2; d++)
    for (int c = 0; c < 2; c++)
      for (int st = 2; st <= 4; st++) {
        sfa_kernel_spec s = {SFA_PASS_BWD, SFA_MODE_DENSE, SFA_DTYPE_BF16, dims[d], 64, 128, 12,
                             st, arch, c ? C : 0u, SFA_SPEC_MMA_WS};
        if (sfa_spec_validate(&s, NULL, 0) == SFA_OK && push(l, &s) != 0)
          return sfa__fail(err, errlen, SFA_ERR_OUT_OF_MEMORY, "preset: out of memory");
      }
  /* the wgmma backward at D 256 (sm_90; column halves, one stage), and the
  ** ws backward at D 256 (consumers sharing 64 keys, two stages), causal and not */
  for (int k = 0; k < 2; k++)
    for (int c = 0; c < 2; c++) {
      sfa_kernel_spec s = {SFA_PASS_BWD, SFA_MODE_DENSE, SFA_DTYPE_BF16, 256, 64, k ? 64 : 128,
                           k ? 12 : 8, k ? 2 : 1, arch, c ? C : 0u,
                           k ? SFA_SPEC_MMA_WS : SFA_SPEC_MMA_WGMMA};
      if (sfa_spec_validate(&s, NULL, 0) == SFA_OK && push(l, &s) != 0)
        return sfa__fail(err, errlen, SFA_ERR_OUT_OF_MEMORY, "preset: out of memory");
    }
  return SFA_OK;
}

sfa_status sfa__preset(const char *name, const int *archs, int narchs, sfa_kernel_spec **specs,
                       size_t *n, char *err, size_t errlen) {
  if (!specs || !n) return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT, "specs: NULL");
  *specs = NULL;
  *n = 0;
  if (!name) return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT, "preset: NULL");
  int which = strcmp(name, "default") == 0       ? 0
              : strcmp(name, "all-modes") == 0   ? 1
              : strcmp(name, "dense-tiles") == 0 ? 2
              : strcmp(name, "small") == 0       ? 3
                                                 : -1;
  if (which < 0)
    return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT,
                     "preset: '%s' is not a preset; presets are %s", name, SFA__PRESET_NAMES);
  if (!archs || narchs < 1)
    return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT, "archs: at least one is needed");
  list l = {0};
  sfa_status st = SFA_OK;
  for (int a = 0; a < narchs && st == SFA_OK; a++) {
    int arch = archs[a];
    size_t from = l.n;
    if (!sfa__arch_find(arch)) {
      char list[128];
      sfa__arch_list(list, sizeof list, "", ", ", " or ");
      st = sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT, "arch: %d is not allowed; must be %s",
                     arch, list);
    } else if (which == 0)
      st = add_groups(&l, default_groups, NGROUPS(default_groups), arch, 0, err, errlen);
    else if (which == 1) {
      group g[16];
      st = add_groups(&l, g, all_modes_groups(g, 16), arch, 1, err, errlen);
    }
    else if (which == 3)
      st = add_groups(&l, small_groups, NGROUPS(small_groups), arch, 0, err, errlen);
    else
      st = add_dense_tiles(&l, arch, err, errlen);
    if (st == SFA_OK && which != 2) st = add_decode(&l, arch, which == 3, err, errlen);
    if (st == SFA_OK && which != 2) st = add_utils(&l, from, arch, err, errlen);
  }
  if (st != SFA_OK) {
    free(l.v);
    return st;
  }
  *specs = l.v;
  *n = l.n;
  return SFA_OK;
}
