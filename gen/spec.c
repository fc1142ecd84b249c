/*
** spec.c -- kernel specs: validation (with messages that name the field and the
** allowed values), canonical names and their parser, and default tile
** configs. A tile's shared memory and registers are the variant descriptor's
** (gen/variant.c); validation checks them against the arch's budget and the
** defaults shrink a tile until it fits.
**
** Canonical name:
**   sfa_<pass>_<mode>[_causal][_bias][_mask][_det][_wg]_<dtype>_d<D>_m<M>n<N>_w<W>s<S>_sm<arch>
** e.g. sfa_fwd_dense_causal_bf16_d128_m128n64_w4s1_sm90; a utility pass
** (sfa.h: bwd_pre, convert, hash_sort, permute, topk, merge, kv_append) has no mode, flags or
** tiles and spells its dtype only where it takes more than one:
**   sfa_<pass token>[_<dtype>]_sm<arch>
** e.g. sfa_bwdpre_bf16_sm90, sfa_topk_fp32_sm80, sfa_hashsort_sm90. The
** utility passes live in their own functions below (util_*).
*/
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gen/arch.h"
#include "gen/gen_internal.h"
#include "gen/flag.h"
#include "gen/mode.h"
#include "gen/variant.h"

sfa_status sfa__fail(char *err, size_t errlen, sfa_status status, const char *fmt, ...) {
  if (err && errlen > 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return status;
}

/* ------------------------------------------------------------ names of values */

/* The attention passes (a mode, a dtype, a head dim and tiles), by name. */
static const struct { sfa_pass pass; const char *name; } attention_passes[] = {
  {SFA_PASS_FWD, "fwd"}, {SFA_PASS_BWD_DQ, "bwddq"}, {SFA_PASS_BWD, "bwd"},
  {SFA_PASS_DECODE, "decode"},
};
#define NATTN (sizeof attention_passes / sizeof attention_passes[0])

/* The utility passes: their own rules, names and defaults (at the end of
** this file). */
static const struct util_pass *util_of(sfa_pass p);
static const struct util_pass *util_by_token(const char *tok);
static const char *util_pass_name(sfa_pass p);
static sfa_status util_check_domain(const sfa_kernel_spec *s, char *err, size_t errlen);
static sfa_status util_name(const sfa_kernel_spec *s, char *buf, size_t n);
static sfa_status util_parse(const char *name, const char *tok, const char *rest,
                             sfa_kernel_spec *spec, char *err, size_t errlen);
static sfa_status util_default(sfa_kernel_spec *spec, char *err, size_t errlen);

const char *sfa__pass_name(sfa_pass p) {
  for (size_t i = 0; i < NATTN; i++)
    if (attention_passes[i].pass == p) return attention_passes[i].name;
  return util_pass_name(p);
}
const char *sfa__dtype_name(sfa_dtype d) {
  static const char *const names[] = {"fp16", "bf16", "fp32", "int32", "uint8"};
  return (unsigned)d < sizeof names / sizeof names[0] ? names[d] : NULL;
}

/* The dtype called tok, or -1. */
static int dtype_of_name(const char *tok) {
  for (int d = 0; sfa__dtype_name((sfa_dtype)d); d++)
    if (strcmp(tok, sfa__dtype_name((sfa_dtype)d)) == 0) return d;
  return -1;
}

/* The feature flags are gen/flag.c's table, in name order; the token of mma
** wgmma or ws follows them. */
#define WG_TOKEN "wg"
#define WS_TOKEN "ws"
#define OLD_WGMMA_BIT (1u << 4) /* the mma kind was this flag before 0.2 */

const char *sfa__mma_name(sfa_spec_mma m) {
  return m == SFA_SPEC_MMA_SYNC ? "sync" : m == SFA_SPEC_MMA_WGMMA ? "wgmma"
         : m == SFA_SPEC_MMA_WS ? "ws" : NULL;
}

const char *sfa__mma_token(sfa_spec_mma m) {
  return m == SFA_SPEC_MMA_SYNC ? "" : m == SFA_SPEC_MMA_WGMMA ? WG_TOKEN
         : m == SFA_SPEC_MMA_WS ? WS_TOKEN : NULL;
}

int sfa__spec_same_config(const sfa_kernel_spec *a, const sfa_kernel_spec *b) {
  return a->block_m == b->block_m && a->block_n == b->block_n &&
         a->num_warps == b->num_warps && a->num_stages == b->num_stages && a->mma == b->mma;
}

/* ------------------------------------------------------------ budgets */

/* The shared memory, registers and geometry of a tile are the variant
** descriptor's (gen/variant.c); here they are checked and used to shrink the
** defaults. */

int sfa__spec_is_wgmma(const sfa_kernel_spec *s) {
  return s->mma == SFA_SPEC_MMA_WGMMA || s->mma == SFA_SPEC_MMA_WS;
}
int sfa__spec_is_ws(const sfa_kernel_spec *s) { return s->mma == SFA_SPEC_MMA_WS; }

int sfa__bwd_plan(const sfa_kernel_spec *s) {
  const sfa__mode *m = s ? sfa__mode_find(s->mode) : NULL;
  return m && s->pass == SFA_PASS_BWD && m->bwd_plan;
}

/* Shared memory of a spec whose fields lie in their domains. */
static size_t smem_of(const sfa_kernel_spec *s) {
  sfa__variant v;
  sfa__variant_fill(s, &v);
  return v.smem_bytes;
}

int sfa__spec_acc_registers(const sfa_kernel_spec *s) {
  sfa__variant v;
  sfa__variant_fill(s, &v);
  return v.acc_registers;
}

size_t sfa_spec_smem_bytes(const sfa_kernel_spec *spec) {
  sfa__variant v;
  if (!spec || sfa__variant_describe(spec, &v, NULL, 0) != SFA_OK) return 0;
  return v.smem_bytes;
}

/* ------------------------------------------------------------ validation */

static int one_of(int v, const int *set, int n) {
  for (int i = 0; i < n; i++)
    if (set[i] == v) return 1;
  return 0;
}

#define ONE_OF(v, ...) one_of((v), (const int[]){__VA_ARGS__}, \
                              (int)(sizeof((const int[]){__VA_ARGS__}) / sizeof(int)))

sfa_status sfa__spec_check_domain(const sfa_kernel_spec *s, char *err, size_t errlen) {
  const sfa_status bad = SFA_ERR_INVALID_ARGUMENT;
  if (!s) return sfa__fail(err, errlen, bad, "spec: NULL");
  if (!sfa__pass_name(s->pass))
    return sfa__fail(err, errlen, bad,
                     "pass: %d is not allowed; must be fwd, bwddq, bwd or decode (or a utility pass: "
                     "bwd_pre, convert, hash_sort, permute, topk, merge or kv_append)",
                     (int)s->pass);
  if (util_of(s->pass)) return util_check_domain(s, err, errlen);
  if (!sfa__mode_find(s->mode)) {
    char modes[128];
    sfa__mode_list(modes, sizeof modes, 0, " or ", NULL, 0);
    return sfa__fail(err, errlen, bad, "mode: %d is not allowed; must be %s", (int)s->mode,
                     modes);
  }
  if (s->dtype != SFA_DTYPE_FP16 && s->dtype != SFA_DTYPE_BF16) {
    if (sfa__dtype_name(s->dtype))
      return sfa__fail(err, errlen, bad, "dtype: %s is not allowed with pass %s; must be fp16 "
                       "or bf16", sfa__dtype_name(s->dtype), sfa__pass_name(s->pass));
    return sfa__fail(err, errlen, bad, "dtype: %d is not allowed; must be fp16 or bf16",
                     (int)s->dtype);
  }
  if (s->head_dim < 32 || s->head_dim > 256 || s->head_dim % 16 != 0)
    return sfa__fail(err, errlen, bad,
                     "head_dim: %d is not allowed; must be a multiple of 16 in 32..256",
                     s->head_dim);
  if (!ONE_OF(s->num_warps, 4, 8, 12, 16))
    return sfa__fail(err, errlen, bad, "num_warps: %d is not allowed; must be 4, 8, 12 or 16",
                     s->num_warps);
  if (s->pass == SFA_PASS_DECODE ? s->block_m != 16 : !ONE_OF(s->block_m, 64, 128, 192))
    return sfa__fail(err, errlen, bad, "block_m: %d is not allowed%s; must be %s", s->block_m,
                     s->pass == SFA_PASS_DECODE ? " with pass decode" : "",
                     s->pass == SFA_PASS_DECODE ? "16" : "64, 128 or 192");
  if (!ONE_OF(s->block_n, 32, 64, 128))
    return sfa__fail(err, errlen, bad, "block_n: %d is not allowed; must be 32, 64 or 128",
                     s->block_n);
  if (s->num_stages < 1 || s->num_stages > 4)
    return sfa__fail(err, errlen, bad, "num_stages: %d is not allowed; must be 1..4",
                     s->num_stages);
  if (!sfa__arch_find(s->arch)) {
    char archs[128];
    sfa__arch_list(archs, sizeof archs, "", ", ", " or ");
    return sfa__fail(err, errlen, bad, "arch: %d is not allowed; must be %s", s->arch, archs);
  }
  if (s->flags & ~sfa__flag_all()) {
    char all[160];
    sfa__flag_list(all, sizeof all, sfa__flag_all(), 1, ", ");
    return sfa__fail(err, errlen, bad, "flags: 0x%x has unknown bits; allowed are %s%s",
                     s->flags, all,
                     (s->flags & OLD_WGMMA_BIT) ? " (bit 0x10 is not a flag: the mma kind is "
                                                  "the field mma, SFA_SPEC_MMA_WGMMA)" : "");
  }
  if (!sfa__mma_name(s->mma))
    return sfa__fail(err, errlen, bad,
                     "mma: %d is not allowed; must be SFA_SPEC_MMA_SYNC (0), "
                     "SFA_SPEC_MMA_WGMMA (1) or SFA_SPEC_MMA_WS (2)", (int)s->mma);
  return SFA_OK;
}

/* The flags of the problem that the mode's row takes (gen/mode.c; det is the
** pass's rule). A flag the mode does not take is named with the modes that
** take it. */
static sfa_status check_mode_flags(const sfa_kernel_spec *s, char *err, size_t errlen) {
  const sfa__mode *m = sfa__mode_find(s->mode);
  /* det and gather are the passes' (bwd, decode: checked with them) */
  const unsigned bad = s->flags & ~m->flags & ~(unsigned)(SFA_FEAT_DETERMINISTIC | SFA_FEAT_GATHER);
  if (!bad) return SFA_OK;
  size_t nf;
  const sfa__flag *f = sfa__flag_table(&nf);
  while (!(f->bit & bad)) f++; /* the first flag the mode does not take */
  char takes[96], modes[64];
  if (!sfa__flag_list(takes, sizeof takes, m->flags, 0, ", ")) snprintf(takes, sizeof takes, "no flags");
  int n = sfa__mode_list(modes, sizeof modes, 0, " and ", sfa__mode_takes_any, f->bit);
  return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT,
                   "flags: %s is not allowed with mode %s, which allows %s%s; %s applies to %s%s",
                   f->token, m->name, takes,
                   f->bit == SFA_FEAT_CAUSAL && m->causal_by_index
                       ? " (its causality q_idx >= k_idx is intrinsic)" : "",
                   f->token, n == 1 ? "mode " : "modes ", modes);
}

/* The problems mma ws serves (sfa__ws_allowed says the same without a
** message): pass fwd on an arch with wgmma, head dim 64, 128 or 256, no mask;
** pass bwd (templates/bwd_ws.lt) for every mode at head dim 64 or 128, also
** on packed sequences, and (templates/bwd_ws256.lt) dense and window at 256,
** not packed; neither with a bias, a mask or det. s->arch must be known. */
static sfa_status check_ws_class(const sfa_kernel_spec *s, char *err, size_t errlen) {
  const sfa_status bad = SFA_ERR_INVALID_ARGUMENT;
  if ((s->pass != SFA_PASS_FWD && s->pass != SFA_PASS_BWD) ||
      !(sfa__arch_find(s->arch)->mma & SFA__MMA_WGMMA))
    return sfa__fail(err, errlen, bad,
                     "mma: ws (warp-specialized) applies to passes fwd and bwd on sm_90 only");
  if (s->pass == SFA_PASS_BWD) {
    const unsigned not_bwd = SFA_FEAT_BIAS | SFA_FEAT_MASK | SFA_FEAT_DETERMINISTIC;
    if (s->head_dim != 64 && s->head_dim != 128 && s->head_dim != 256)
      return sfa__fail(err, errlen, bad,
                       "head_dim: %d is not allowed with mma ws in pass bwd; must be 64, 128 "
                       "or 256",
                       s->head_dim);
    if (s->head_dim == 256 && s->mode != SFA_MODE_DENSE && s->mode != SFA_MODE_WINDOW)
      return sfa__fail(err, errlen, bad,
                       "mma: ws in pass bwd at head_dim 256 serves modes dense and window (not "
                       "%s); use mma wgmma",
                       sfa__mode_find(s->mode)->name);
    if (s->head_dim == 256 && (s->flags & SFA_FEAT_VARLEN))
      return sfa__fail(err, errlen, bad,
                       "flags: varlen not allowed with mma ws in pass bwd at head_dim 256; use "
                       "mma wgmma");
    if (s->flags & not_bwd) {
      char fl[96];
      sfa__flag_list(fl, sizeof fl, s->flags & not_bwd, 0, ", ");
      return sfa__fail(err, errlen, bad,
                       "flags: %s not allowed with mma ws in pass bwd (bias, mask and det "
                       "take mma wgmma)", fl);
    }
    return SFA_OK;
  }
  if (s->head_dim != 64 && s->head_dim != 128 && s->head_dim != 256)
    return sfa__fail(err, errlen, bad,
                     "head_dim: %d is not allowed with mma ws; must be 64, 128 or 256",
                     s->head_dim);
  if (s->flags & SFA_FEAT_MASK)
    return sfa__fail(err, errlen, bad,
                     "flags: mask is not allowed with mma ws (the mask's tile test is "
                     "CTA-wide); use mma wgmma");
  return SFA_OK;
}

/* The problems mma wgmma serves (sfa__wgmma_allowed says the same without a
** message): passes fwd and bwd on an arch with wgmma, head dim 64 or 128, and
** 256 in pass bwd. s->arch must be known. */
static sfa_status check_wgmma_class(const sfa_kernel_spec *s, char *err, size_t errlen) {
  if ((s->pass != SFA_PASS_FWD && s->pass != SFA_PASS_BWD) ||
      !(sfa__arch_find(s->arch)->mma & SFA__MMA_WGMMA))
    return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT,
                     "mma: wgmma (wg) applies to passes fwd and bwd on sm_90 only");
  if (s->head_dim != 64 && s->head_dim != 128 &&
      !(s->head_dim == 256 && s->pass == SFA_PASS_BWD))
    return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT,
                     "head_dim: %d is not allowed with mma wgmma; must be 64 or 128 (256 in "
                     "pass bwd)",
                     s->head_dim);
  return SFA_OK;
}

/* The warp-specialized forward (mma ws, templates/fwd_ws.lt): a producer
** warpgroup that issues the tensor copies and 1 to 3 consumer warpgroups of
** 64 query rows each. */
static sfa_status check_ws(const sfa_kernel_spec *s, char *err, size_t errlen) {
  const sfa_status bad = SFA_ERR_INVALID_ARGUMENT;
  sfa_status st = check_ws_class(s, err, errlen);
  if (st != SFA_OK) return st;
  if (s->pass == SFA_PASS_BWD) {
    /* a producer warpgroup and two consumers of 64 keys each, 64-query tiles;
    ** at head dim 256 the two consumers share 64 keys (a column half each) */
    if (s->head_dim == 256 && (s->num_warps != 12 || s->block_n != 64 || s->block_m != 64 ||
                               s->num_stages != 2))
      return sfa__fail(err, errlen, bad,
                       "num_warps/block_n/block_m/num_stages: %d/%d/%d/%d is not allowed with "
                       "mma ws in pass bwd at head_dim 256; must be 12/64/64/2 (two consumers "
                       "sharing 64 keys, two stages: 226 KB of shared memory)",
                       s->num_warps, s->block_n, s->block_m, s->num_stages);
    if (s->head_dim == 256) return SFA_OK;
    if (s->num_warps != 12 || s->block_n != 128 || s->block_m != 64)
      return sfa__fail(err, errlen, bad,
                       "num_warps/block_n/block_m: %d/%d/%d is not allowed with mma ws in pass "
                       "bwd; must be 12/128/64 (a producer warpgroup and two consumers of 64 "
                       "keys, 64-query tiles)",
                       s->num_warps, s->block_n, s->block_m);
    if (s->num_stages < 2)
      return sfa__fail(err, errlen, bad,
                       "num_stages: %d is not allowed with mma ws; must be 2..4", s->num_stages);
    return SFA_OK;
  }
  if (s->head_dim == 256 && s->num_warps != 12)
    return sfa__fail(err, errlen, bad,
                     "num_warps: %d is not allowed with mma ws at head_dim 256; must be 12 (two "
                     "consumers, one CTA per SM: a 64 KB Q tile leaves no room for a second)",
                     s->num_warps);
  if (s->num_warps == 4)
    return sfa__fail(err, errlen, bad,
                     "num_warps: 4 is not allowed with mma ws; must be 8, 12 or 16 (a "
                     "producer warpgroup and 1 to 3 consumer warpgroups)");
  if (s->num_warps == 16 && s->head_dim != 64)
    return sfa__fail(err, errlen, bad,
                     "num_warps: 16 is not allowed with mma ws at head_dim %d; must be 8 or 12 "
                     "(three consumers have 160 registers a thread: head_dim 64 only)",
                     s->head_dim);
  if (s->block_m != 64 * (s->num_warps / 4 - 1))
    return sfa__fail(err, errlen, bad,
                     "block_m: %d is not allowed with mma ws and num_warps %d; each consumer "
                     "warpgroup owns 64 rows, so block_m must be %d",
                     s->block_m, s->num_warps, 64 * (s->num_warps / 4 - 1));
  if (s->block_n < 64)
    return sfa__fail(err, errlen, bad,
                     "block_n: %d is not allowed with mma ws; must be 64 or 128", s->block_n);
  if (s->num_stages < 2)
    return sfa__fail(err, errlen, bad,
                     "num_stages: %d is not allowed with mma ws; must be 2..4", s->num_stages);
  return SFA_OK;
}

/* Every rule of sfa_spec_validate except the arch's budgets (check_budget). */
static sfa_status check_rules(const sfa_kernel_spec *s, char *err, size_t errlen) {
  sfa_status st = sfa__spec_check_domain(s, err, errlen);
  if (st != SFA_OK) return st;

  if (s->mma == SFA_SPEC_MMA_WS) {
    if ((st = check_ws(s, err, errlen)) != SFA_OK) return st;
  } else {
    if (s->num_warps > 8)
      return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT,
                       "num_warps: %d is allowed with mma ws only; must be 4 or 8",
                       s->num_warps);
    if (s->block_m > 128)
      return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT,
                       "block_m: %d is allowed with mma ws only; must be 64 or 128",
                       s->block_m);
    if (s->num_stages > 2 && s->pass != SFA_PASS_DECODE)
      return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT,
                       "num_stages: %d is not allowed in pass %s; must be 1 or 2 (2..4 with "
                       "mma ws; 1..4 in pass decode)",
                       s->num_stages, sfa__pass_name(s->pass));
  }

  if (s->pass == SFA_PASS_DECODE) {
    /* One m16 tile of (query head, new token) rows shared by the warps, each
    ** of which takes 16 or 32 keys of every block_n. */
    const int per_warp = s->block_n / s->num_warps;
    if (s->block_n % s->num_warps || (per_warp != 16 && per_warp != 32))
      return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT,
                       "block_n: %d is not allowed with num_warps %d in pass decode; each "
                       "warp takes 16 or 32 keys of a tile, so block_n must be %d or %d",
                       s->block_n, s->num_warps, 16 * s->num_warps, 32 * s->num_warps);
    if (s->mma != SFA_SPEC_MMA_SYNC)
      return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT,
                       "mma: pass decode takes mma sync only (its 16-row tile is below "
                       "wgmma's 64)");
  } else if (s->mma != SFA_SPEC_MMA_WS) {
    /* The rows that the warps split: queries (block_m), keys in bwd (block_n). */
    const char *f = s->pass == SFA_PASS_BWD ? "block_n" : "block_m";
    int rows = s->pass == SFA_PASS_BWD ? s->block_n : s->block_m;
    if (rows % (16 * s->num_warps) != 0 || rows / (16 * s->num_warps) > 2)
      return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT,
                       "%s: %d is not allowed with num_warps %d in pass %s; %s must be 1 or 2 "
                       "m16 tiles per warp (%d or %d)",
                       f, rows, s->num_warps, sfa__pass_name(s->pass), f, 16 * s->num_warps,
                       32 * s->num_warps);
  }
  if (s->mma == SFA_SPEC_MMA_WGMMA) {
    if ((st = check_wgmma_class(s, err, errlen)) != SFA_OK) return st;
    if (s->head_dim == 256 && s->num_warps != 8)
      /* two CTAs per key tile, each making 128 columns of dK, dV and dQ; a
      ** tile copy of 512-byte rows needs 8-row steps: 256 threads */
      return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT,
                       "num_warps: %d is not allowed with mma wgmma at head_dim 256; must be 8",
                       s->num_warps);
    if (s->pass == SFA_PASS_BWD) { /* warpgroups of 64 keys; dQ as m64 products */
      if (s->block_n != 16 * s->num_warps)
        return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT,
                         "block_n: %d is not allowed with mma wgmma and num_warps %d in pass "
                         "bwd; each warpgroup of 4 warps owns 64 keys, so block_n must be %d",
                         s->block_n, s->num_warps, 16 * s->num_warps);
      if (s->block_m != 64)
        return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT,
                         "block_m: %d is not allowed with mma wgmma in pass bwd; must be 64",
                         s->block_m);
    } else if (s->block_m != 16 * s->num_warps)
      return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT,
                       "block_m: %d is not allowed with mma wgmma and num_warps %d; each "
                       "warpgroup of 4 warps owns 64 rows, so block_m must be %d",
                       s->block_m, s->num_warps, 16 * s->num_warps);
    if (s->block_n < 64)
      return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT,
                       "block_n: %d is not allowed with mma wgmma; must be 64 or 128",
                       s->block_n);
  }
  if (s->pass != SFA_PASS_BWD && (s->flags & SFA_FEAT_DETERMINISTIC))
    return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT,
                     "flags: det applies to pass bwd only (bwddq is deterministic itself)");
  if ((s->pass == SFA_PASS_BWD || s->pass == SFA_PASS_BWD_DQ) &&
      (s->head_dim > SFA__BWD_KERNEL_MAX_HEAD_DIM || (s->head_dim > 128 && s->head_dim % 32)))
    return sfa__fail(err, errlen, SFA_ERR_UNSUPPORTED,
                     "head_dim: %d; the backward passes support head dims up to 128, and "
                     "multiples of 32 up to %d",
                     s->head_dim, SFA__BWD_KERNEL_MAX_HEAD_DIM);
  if (s->pass == SFA_PASS_BWD) { /* the dQ product splits into m16 x n16 blocks per warp */
    sfa__variant v;
    sfa__variant_fill(s, &v);
    if (v.dq_units % v.mma_warps)
      return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT,
                       "block_m/num_warps: the %d m16 x n16 blocks of the dQ tile (block_m %d, "
                       "%d columns) do not split over %d warps",
                       v.dq_units, s->block_m, v.cols, v.mma_warps);
  }

  if (s->pass == SFA_PASS_DECODE) {
    const sfa__mode *m = sfa__mode_find(s->mode);
    if (!m->decode) {
      char modes[64];
      sfa__mode_list(modes, sizeof modes, 0, " and ", sfa__mode_decodes, 0);
      return sfa__fail(err, errlen, SFA_ERR_UNSUPPORTED,
                       "mode: %s has no decode kernel; pass decode serves %s", m->name, modes);
    }
    /* every mode that decodes takes gather (an index list of the keys to read),
    ** and the causality flag of its own (dense, window: causal; hash: strict) */
    const unsigned takes = SFA_FEAT_CAUSAL | SFA_FEAT_STRICT | SFA_FEAT_GATHER;
    if (s->flags & ~takes & m->flags) {
      char fl[96];
      sfa__flag_list(fl, sizeof fl, s->flags & ~takes & m->flags, 0, ", ");
      return sfa__fail(err, errlen, SFA_ERR_UNSUPPORTED,
                       "flags: %s not allowed with pass decode, which takes causal (or strict) "
                       "and gather", fl);
    }
  } else if (s->flags & SFA_FEAT_GATHER) {
    return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT,
                     "flags: gather applies to pass decode only (the keys of an index list)");
  }
  return check_mode_flags(s, err, errlen);
}

/* The tile's shared memory within the arch's and its accumulators within
** the register budget. */
static sfa_status check_budget(const sfa_kernel_spec *s, char *err, size_t errlen) {
  sfa__variant v;
  sfa__variant_fill(s, &v);
  size_t smem = v.smem_bytes, limit = sfa__arch_smem_limit(s->arch);
  if (smem > limit)
    return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT,
                     "block_m/block_n/num_stages: needs %zu bytes of shared memory, "
                     "sm_%d allows %zu",
                     smem, s->arch, limit);
  if (v.comb_bytes > v.comb_room) /* decode: the warps' results over the K and V tiles */
    return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT,
                     "block_n/num_stages: the warps' partial results (%zu bytes) do not fit "
                     "the K and V tiles (%zu bytes) in pass decode",
                     v.comb_bytes, v.comb_room);
  int regs = v.acc_registers;
  if (regs > SFA__MAX_ACC_REGISTERS)
    return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT,
                     "block_m/num_warps/block_n: tile needs %d accumulator registers per "
                     "thread (limit %d)",
                     regs, SFA__MAX_ACC_REGISTERS);
  return SFA_OK;
}

sfa_status sfa_spec_validate(const sfa_kernel_spec *s, char *err, size_t errlen) {
  if (s && util_of(s->pass)) return util_check_domain(s, err, errlen);
  sfa_status st = check_rules(s, err, errlen);
  return st != SFA_OK ? st : check_budget(s, err, errlen);
}

/* ------------------------------------------------------------ canonical names */

sfa_status sfa_spec_name(const sfa_kernel_spec *s, char *buf, size_t n) {
  char flags[96] = "";
  if (!buf || n == 0) return SFA_ERR_INVALID_ARGUMENT;
  buf[0] = '\0';
  if (sfa__spec_check_domain(s, NULL, 0) != SFA_OK) return SFA_ERR_INVALID_ARGUMENT;
  if (util_of(s->pass)) return util_name(s, buf, n);
  size_t nf;
  const sfa__flag *ft = sfa__flag_table(&nf);
  for (size_t i = 0; i < nf; i++)
    if (s->flags & ft[i].bit) {
      strcat(flags, "_");
      strcat(flags, ft[i].token);
    }
  if (*sfa__mma_token(s->mma)) {
    strcat(flags, "_");
    strcat(flags, sfa__mma_token(s->mma));
  }
  int len = snprintf(buf, n, "sfa_%s_%s%s_%s_d%d_m%dn%d_w%ds%d_sm%d",
                     sfa__pass_name(s->pass), sfa__mode_token(s->mode), flags,
                     sfa__dtype_name(s->dtype), s->head_dim, s->block_m, s->block_n,
                     s->num_warps, s->num_stages, s->arch);
  if (len < 0 || (size_t)len >= n) {
    buf[0] = '\0';
    return SFA_ERR_INVALID_ARGUMENT;
  }
  return SFA_OK;
}

/* A decimal number without sign or leading zeros at *p; advances *p. */
static int parse_uint(const char **p, int *out) {
  const char *s = *p;
  long v = 0;
  if (*s < '0' || *s > '9' || (s[0] == '0' && s[1] >= '0' && s[1] <= '9')) return 0;
  while (*s >= '0' && *s <= '9') {
    v = v * 10 + (*s++ - '0');
    if (v > INT_MAX) return 0;
  }
  *out = (int)v;
  *p = s;
  return 1;
}

/* Fills tok (NUL-terminated) with the next '_'-separated token at *p. */
static int next_token(const char **p, char *tok, size_t n) {
  const char *s = *p;
  size_t len = strcspn(s, "_");
  if (len == 0 || len >= n) return 0;
  memcpy(tok, s, len);
  tok[len] = '\0';
  s += len;
  if (*s == '_') s++;
  *p = s;
  return 1;
}

/* Parses "<c1><int>[<c2><int>]" exactly, e.g. "d128", "m128n64". */
static int parse_pair(const char *tok, char c1, int *a, char c2, int *b) {
  const char *p = tok;
  if (*p++ != c1 || !parse_uint(&p, a)) return 0;
  if (c2) {
    if (*p++ != c2 || !parse_uint(&p, b)) return 0;
  }
  return *p == '\0';
}

sfa_status sfa_spec_parse(const char *name, sfa_kernel_spec *spec, char *err, size_t errlen) {
  const sfa_status bad = SFA_ERR_INVALID_ARGUMENT;
  sfa_kernel_spec s;
  char tok[64], why[256];
  const char *p = name;
  int i, a = 0, b = 0;

  if (!name || !spec) return sfa__fail(err, errlen, bad, "name: NULL");
  memset(&s, 0, sizeof s);
  if (strlen(name) >= SFA__NAME_MAX)
    return sfa__fail(err, errlen, bad, "name '%.40s...': too long for a kernel name", name);

#define NEXT(what)                                                                   \
  do {                                                                               \
    if (!*p) return sfa__fail(err, errlen, bad, "name '%s': ends where %s is expected", \
                              name, what);                                           \
    if (!next_token(&p, tok, sizeof tok))                                            \
      return sfa__fail(err, errlen, bad, "name '%s': empty token where %s is expected", \
                       name, what);                                                  \
  } while (0)
#define BAD(what) \
  return sfa__fail(err, errlen, bad, "name '%s': bad token '%s'; expected %s", name, tok, what)

  NEXT("'sfa'");
  if (strcmp(tok, "sfa") != 0) BAD("'sfa'");
  NEXT("the pass");
  if (util_by_token(tok)) return util_parse(name, tok, p, spec, err, errlen);
  for (i = 0; i < (int)NATTN && strcmp(tok, attention_passes[i].name) != 0; i++) {
  }
  if (i == (int)NATTN)
    BAD("the pass (fwd, bwddq, bwd, decode, bwdpre, convert, hashsort, permute, topk, merge or kvappend)");
  s.pass = attention_passes[i].pass;
  NEXT("the mode");
  {
    const sfa__mode *m = NULL;
    size_t nm = 0;
    for (const sfa__mode *t = sfa__mode_table(&nm); !m && nm; t++, nm--)
      if (strcmp(tok, t->token) == 0) m = t;
    if (!m) {
      char what[128], modes[96];
      sfa__mode_list(modes, sizeof modes, 1, " or ", NULL, 0);
      snprintf(what, sizeof what, "the mode (%s)", modes);
      BAD(what);
    }
    s.mode = m->mode;
  }

  /* Optional flags in canonical order, then the dtype. */
  size_t next_flag = 0;
  for (;;) {
    NEXT("a flag or the dtype");
    size_t nf;
    const sfa__flag *ft = sfa__flag_table(&nf);
    const sfa__flag *hit = sfa__flag_named(tok, strlen(tok));
    /* the flag's place in name order; nf: the mma token (wg or ws) */
    size_t f = hit ? (size_t)(hit - ft) : nf;
    if (!hit && strcmp(tok, WG_TOKEN) != 0 && strcmp(tok, WS_TOKEN) != 0) break;
    if (f < next_flag) {
      char what[240], all[160];
      sfa__flag_list(all, sizeof all, sfa__flag_all(), 0, ", ");
      snprintf(what, sizeof what, "flags once each in the order %s, then " WG_TOKEN " or " WS_TOKEN, all);
      BAD(what);
    }
    if (hit) s.flags |= hit->bit;
    else s.mma = strcmp(tok, WG_TOKEN) == 0 ? SFA_SPEC_MMA_WGMMA : SFA_SPEC_MMA_WS;
    next_flag = f + 1;
  }
  if (strcmp(tok, "fp16") == 0) s.dtype = SFA_DTYPE_FP16;
  else if (strcmp(tok, "bf16") == 0) s.dtype = SFA_DTYPE_BF16;
  else {
    char what[240], all[160];
    sfa__flag_list(all, sizeof all, sfa__flag_all(), 0, ", ");
    snprintf(what, sizeof what, "a flag (%s, " WG_TOKEN ", " WS_TOKEN ") or the dtype (fp16 or bf16)", all);
    BAD(what);
  }

  NEXT("d<head_dim>");
  if (!parse_pair(tok, 'd', &a, 0, NULL)) BAD("d<head_dim>");
  s.head_dim = a;
  NEXT("m<block_m>n<block_n>");
  if (!parse_pair(tok, 'm', &a, 'n', &b)) BAD("m<block_m>n<block_n>");
  s.block_m = a;
  s.block_n = b;
  NEXT("w<num_warps>s<num_stages>");
  if (!parse_pair(tok, 'w', &a, 's', &b)) BAD("w<num_warps>s<num_stages>");
  s.num_warps = a;
  s.num_stages = b;
  NEXT("sm<arch>");
  if (tok[0] != 's' || !parse_pair(tok + 1, 'm', &a, 0, NULL)) BAD("sm<arch>");
  s.arch = a;
  if (*p || p[-1] == '_')
    return sfa__fail(err, errlen, bad, "name '%s': unexpected text after '%s'", name, tok);
#undef NEXT
#undef BAD

  if (sfa__spec_check_domain(&s, why, sizeof why) != SFA_OK)
    return sfa__fail(err, errlen, bad, "name '%s': %s", name, why);
  *spec = s;
  return SFA_OK;
}

/* ------------------------------------------------------------ defaults */

int sfa__wgmma_allowed(const sfa_kernel_spec *s) {
  return s && sfa__arch_find(s->arch) && check_wgmma_class(s, NULL, 0) == SFA_OK;
}

int sfa__ws_allowed(const sfa_kernel_spec *s) {
  return s && sfa__arch_find(s->arch) && check_ws_class(s, NULL, 0) == SFA_OK;
}

/* Where the default forward (and backward: below) is the warp-specialized
** one: what was measured faster than the wgmma kernel (bench/NOTES.md,
** session 18, H100, T 16384):
** dense, fixed-length and packed (packed batches at D 128: 5.56 ms against
** 6.46, varlen/fixed 0.95-1.10); qk_drop (D 64: 2.93 ms against 5.01; D 128:
** 3.72 against 5.11); window at D 128 (1.10 ms against 1.40) and at D 64 with
** one consumer (session 20's sweep, W = 1024: 0.82 ms against 0.89 for the
** wgmma default at T 16384, 0.76 against 0.84 at T 4096); hash at D 128 with
** one consumer (session 35, H100, 16 buckets: 0.956-0.989x the wgmma
** default's time at T 4096..32768; session 37, its producer at 32 registers:
** 0.964x at T 16384). Not hash at D 64 (1.12 ms against 0.78:
** a bucket's rows see few keys) nor a window bias (not measured; its ws
** kernel spills a few bytes at D 128). */
static int ws_by_default(const sfa_kernel_spec *s) {
  if (!sfa__ws_allowed(s)) return 0;
  if (s->pass == SFA_PASS_BWD)
    /* session 22 (H100, T 16384, prof_case bwd against the wgmma kernel):
    ** dense causal D 128 23.5 ms against 25.2, D 64 13.2 against 14.5;
    ** window W = 1024 D 128 3.98 against 4.30-4.36, D 64 2.28-2.31 against
    ** 2.51-2.53; session 23: hash (16 buckets) D 128 3.02-3.04 against
    ** 3.27, D 64 1.80 against 1.89; qk_drop (30% dropped) D 128 12.41-12.46
    ** against 13.33, D 64 7.19-7.25 against 8.11; session 24, D 256
    ** (bwd_ws256.lt, dense and window): dense causal 61.7 ms against 99.5,
    ** window 9.33-9.39 against 16.95; session 25 (H200, T 16384), softcap
    ** 30 and ALiBi: dense causal D 128 softcap 28.6-28.7 against 35.2-35.5,
    ** ALiBi 24.4 against 29.0, D 64 softcap 18.7-18.8 against 20.5-20.6,
    ** window D 128 softcap 5.07-5.11 against 5.62-5.63, D 64 ALiBi 3.32
    ** against 3.44, hash D 128 softcap 3.90 against 4.11-4.13, qk_drop D 64
    ** softcap 10.18 against 11.38-11.40, D 256 dense causal softcap 66.1
    ** against 124.2-124.8, window ALiBi 9.97-10.05 against 19.07; packed
    ** sequences (varlen.py, mix of 8 sequences): D 128 16.94 against 17.76,
    ** D 64 9.74 against 10.66. Everything it serves. */
    return 1;
  if (s->head_dim == 256)
    /* session 19 (H100, T 16384, causal): dense 16.1 ms against 29.3 for the
    ** mma.sync default, window W = 1024 2.36 against 4.01; session 21:
    ** qk_drop 13.68 against 15.10 (hash lost, 2.99 against 2.76); a window
    ** bias and packed sequences at D 256 were not timed */
    return (s->mode == SFA_MODE_DENSE || s->mode == SFA_MODE_QK_DROP ||
            (s->mode == SFA_MODE_WINDOW && !(s->flags & SFA_FEAT_BIAS))) &&
           !(s->flags & SFA_FEAT_VARLEN);
  switch (s->mode) {
  case SFA_MODE_DENSE:
  case SFA_MODE_QK_DROP: return 1;
  case SFA_MODE_HASH: return s->head_dim == 128;
  case SFA_MODE_WINDOW: /* at D 64 not with softcap or ALiBi: session 21 (H100, T 16384,
                           W = 1024) ws 1.95 ms against wgmma's 1.37 with softcap, 1.84
                           against 1.54 with ALiBi; one consumer pays for their state */
    return !(s->flags & SFA_FEAT_BIAS) &&
           (s->head_dim == 128 || !(s->flags & (SFA_FEAT_SOFTCAP | SFA_FEAT_ALIBI)));
  default: return 0;
  }
}

sfa_status sfa_spec_default(sfa_kernel_spec *spec, char *err, size_t errlen) {
  return sfa__spec_default_mma(spec, -1, err, errlen);
}

sfa_status sfa__spec_default_mma(sfa_kernel_spec *spec, int wg, char *err, size_t errlen) {
  if (!spec) return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT, "spec: NULL");
  if (util_of(spec->pass)) return util_default(spec, err, errlen);
  sfa_kernel_spec s = *spec;
  /* Any valid tile, so that the other fields can be checked first. */
  s.block_m = s.pass == SFA_PASS_DECODE ? 16 : 64;
  s.block_n = 64;
  s.num_warps = 4;
  s.num_stages = 1;
  s.mma = SFA_SPEC_MMA_SYNC;
  sfa_status st = sfa__spec_check_domain(&s, err, errlen);
  if (st != SFA_OK) return st;

  /* auto: wgmma wherever it is allowed (sm_90: fwd and bwd at D 64 and 128,
  ** bwd at D 256), and the warp-specialized kernels where they were measured
  ** faster */
  if (wg < 0) wg = ws_by_default(&s) ? 2 : 1;
  if (wg == 2 && !sfa__ws_allowed(&s)) wg = 1;
  if (wg == 1 && !sfa__wgmma_allowed(&s)) wg = 0;
  if (wg == 2 && s.pass == SFA_PASS_BWD) {
    /* The warp-specialized backward: a producer warpgroup of tensor copies
    ** and two consumers of 64 keys (templates/bwd_ws.lt), double buffered
    ** (the measured tile; three stages fit at D 128 and four at D 64) */
    s.mma = SFA_SPEC_MMA_WS;
    s.block_m = 64, s.block_n = s.head_dim == 256 ? 64 : 128, s.num_warps = 12, s.num_stages = 2;
  } else if (wg == 2) {
    /* The warp-specialized forward: two consumer warpgroups of 64 rows and
    ** 128-key tiles (bench/NOTES.md, session 17, H100, dense causal bf16:
    ** D = 128 583 TF/s against wgmma's 442-463, and three stages the sweep's
    ** winner at T = 16384, 7.25 ms against 7.51 with two; D = 64 408-431
    ** TF/s against 389-391, two stages). */
    s.mma = SFA_SPEC_MMA_WS;
    s.block_m = 128, s.block_n = 128, s.num_warps = 12, s.num_stages = s.head_dim == 128 ? 3 : 2;
    if (s.head_dim == 256)
      /* 64-key tiles: Q's 64 KB and two stages of K and V (2 x 64 KB) fit */
      s.block_n = 64;
    if (s.head_dim == 64 && (s.mode == SFA_MODE_DENSE || s.mode == SFA_MODE_QK_DROP) &&
        !(s.flags & (SFA_FEAT_SOFTCAP | SFA_FEAT_ALIBI)))
      /* three consumer warpgroups (192 rows), four stages: the sweep's winner
      ** at T = 16384 (bench/NOTES.md, session 19, H100: dense causal 4.33 ms
      ** against 5.24 for the tile above, 1.05x cuDNN; qk_drop 4.85 against
      ** 5.65); softcap and ALiBi spill on its 160 registers */
      s.block_m = 192, s.num_warps = 16, s.num_stages = 4;
    if (s.head_dim == 64 && s.mode == SFA_MODE_WINDOW)
      /* one consumer warpgroup of 64 rows: a window's query tile sees about
      ** W + block_m keys, so smaller tiles waste less on the diagonals (the
      ** session 20 sweep's winner at T 4096 and 16384, W = 1024); 64-key
      ** tiles, which fit three CTAs per SM (gen/variant.c): session 35, H100,
      ** W = 1024, 0.88x the time of 128-key tiles at T 4096 and 16384 */
      s.block_m = 64, s.block_n = 64, s.num_warps = 8;
    if (s.mode == SFA_MODE_HASH && s.head_dim <= 128)
      /* one consumer of 64 rows, 64-key tiles, two stages: a bucket's rows
      ** see few keys (the sweep's winner at T 4096, session 26, and 16384,
      ** session 35, H100, D 128: 1.036x the wgmma default's speed there) */
      s.block_m = 64, s.block_n = 64, s.num_warps = 8, s.num_stages = 2;
  } else if (wg && s.pass == SFA_PASS_BWD) {
    /* two warpgroups of 64 keys, 64-query tiles, double buffered: the sweep's
    ** winner for dense causal D = 128 T = 16384 on an H100 (bench/NOTES.md,
    ** session 10: 28.4 ms against 45.8 ms for the mma.sync default) */
    s.mma = SFA_SPEC_MMA_WGMMA;
    s.block_m = 64, s.block_n = 128, s.num_warps = 8, s.num_stages = 2;
    if (s.head_dim == 256)
      /* K and V (2 x 64 KB), one stage of Q and dO (2 x 32 KB), dS^T and the
      ** dQ staging fit 227 KB once; two CTAs per key tile, a column half each
      ** (session 21, H100, T 16384: dense causal 99.5 ms against 169.9 for
      ** mma.sync's m64n64w4s1, window W = 1024 17.0 against 24.9) */
      s.num_stages = 1;
  } else if (wg) {
    /* Hopper: warpgroup MMA (bench/NOTES.md, session 9: the sweep's winners
    ** for dense causal T = 16384 on an H100, 467 and 390 TF/s). D = 128: one
    ** warpgroup of 64 rows and 128-key tiles, two CTAs per SM; D = 64: two
    ** warpgroups, 64-key tiles, double buffered. */
    s.mma = SFA_SPEC_MMA_WGMMA;
    if (s.head_dim == 128)
      s.block_m = 64, s.block_n = 128, s.num_warps = 4, s.num_stages = 1;
    else if (sfa__mode_find(s.mode)->short_rows)
      /* short rows (a bucket, a window): one warpgroup per CTA, several CTAs
      ** per SM (session 10, T = 16384: hash 1.00 ms against 1.70, window
      ** W = 1024 0.92 ms against 1.35 with the dense tiles below) */
      s.block_m = 64, s.block_n = 64, s.num_warps = 4, s.num_stages = 2;
    else
      s.block_m = 128, s.block_n = 64, s.num_warps = 8, s.num_stages = 2;
  } else if (s.pass == SFA_PASS_DECODE) {
    /* Memory-bound: 16 rows, 16 keys per warp and step, double buffered (two
    ** tiles of K and V in flight per CTA, several CTAs per SM). */
    s.block_m = 16, s.block_n = 64, s.num_warps = 4, s.num_stages = 2;
  } else if (s.pass == SFA_PASS_FWD) {
    /* Measured on H100 (bench/NOTES.md), the same for every mode and arch:
    ** double buffering pays at D <= 64 only (s1 beats s2 at D = 128: 345 vs 334
    ** TF/s); D = 256 needs m64 for the register budget and s1 to fit sm_86/89. */
    if (s.head_dim <= 64) {
      s.block_m = 128, s.block_n = 64, s.num_warps = 4, s.num_stages = 2;
    } else if (s.head_dim <= 128) {
      s.block_m = 128, s.block_n = 64, s.num_warps = 4, s.num_stages = 1;
    } else {
      s.block_m = 64, s.block_n = 64, s.num_warps = 4, s.num_stages = 1;
    }
  } else if (s.pass == SFA_PASS_BWD_DQ) {
    /* One m16 tile per warp keeps dQ, S and dP in registers at D = 128. */
    if (s.head_dim <= 64) {
      s.block_m = 128, s.block_n = 64, s.num_warps = 4, s.num_stages = 2;
    } else {
      s.block_m = 128, s.block_n = 64, s.num_warps = 8, s.num_stages = 2;
    }
  } else {
    /* 128 keys per CTA on 8 warps (FlashAttention 2's shape); the query tile
    ** shrinks with D to keep dK, dV, S^T and dP^T in registers. Above 128
    ** the rows of K, V, Q and dO take twice the shared memory: 64 keys. */
    if (s.head_dim <= 64) {
      s.block_m = 128, s.block_n = 128, s.num_warps = 8, s.num_stages = 1;
    } else if (s.head_dim <= 128) {
      s.block_m = 64, s.block_n = 128, s.num_warps = 8, s.num_stages = 2;
    } else {
      s.block_m = 64, s.block_n = 64, s.num_warps = 4, s.num_stages = 1;
    }
  }
  /* Shrink until it fits the arch: fewer stages, then narrower tiles. Archs
  ** without a tuned path (sm_100 and later) take these mma.sync tiles too. */
  const size_t limit = sfa__arch_smem_limit(s.arch);
  while (smem_of(&s) > limit) {
    if (s.num_stages > 1) {
      s.num_stages--;
    } else if (s.pass == SFA_PASS_BWD && s.block_n > 64) {
      s.block_n = 64, s.num_warps = 4;
    } else if (s.pass != SFA_PASS_BWD && s.pass != SFA_PASS_DECODE && s.block_n > 32) {
      s.block_n /= 2;
    } else if (s.block_m > 64) {
      s.block_m = 64;
      if (s.pass != SFA_PASS_BWD) s.num_warps = 4;
    } else {
      break;
    }
  }
  spec->block_m = s.block_m;
  spec->block_n = s.block_n;
  spec->num_warps = s.num_warps;
  spec->num_stages = s.num_stages;
  spec->mma = s.mma;
  if ((st = check_rules(spec, err, errlen)) != SFA_OK) return st;
  /* The smallest tile still too large (the backward at D 256 in 99 KB) is a
  ** class the arch cannot serve, not a wrong argument. */
  if (smem_of(spec) > limit)
    return sfa__fail(err, errlen, SFA_ERR_UNSUPPORTED,
                     "pass %s at head dim %d: its smallest tile needs %zu bytes of shared "
                     "memory, sm_%d allows %zu",
                     sfa__pass_name(spec->pass), spec->head_dim, smem_of(spec),
                     spec->arch, limit);
  return check_budget(spec, err, errlen);
}

int sfa__spec_for_keys(sfa_kernel_spec *s, int64_t tk) {
  /* The three-consumer forward (dense and qk_drop at D 64 on sm_90) against
  ** one consumer of 64 rows, two stages (bench/NOTES.md, session 20's sweep,
  ** H100, T 4096, B * H 256: dense causal 1.255 ms against 1.340, qk_drop
  ** 1.418 against 1.663; at T 16384 the three consumers won). A query tile
  ** that sees few key tiles leaves the big tile's prologue and epilogue
  ** exposed; small tiles overlap them across CTAs. Packed sequences: tk is
  ** the longest sequence's (sfa_extras.max_seqlen_k), where the caller gives it. */
  if (!s || tk > SFA__SHORT_KEYS || s->pass != SFA_PASS_FWD || s->mma != SFA_SPEC_MMA_WS ||
      s->head_dim != 64 || s->num_warps != 16)
    return 0;
  s->block_m = 64, s->num_warps = 8, s->num_stages = 2;
  return 1;
}

/* ------------------------------------------------------------ utility passes */

#define DT(d) (1u << (d))

/* A utility pass (sfa.h): its name (the Lua spec table's pass, the manifest's
** column), its token in canonical names, the dtypes it takes and its block
** of num_warps * 32 threads (the template's __launch_bounds__). */
typedef struct util_pass {
  sfa_pass pass;
  const char *name, *token;
  unsigned dtypes; /* DT(sfa_dtype) bits */
  int num_warps;
} util_pass;

static const util_pass util_passes[] = {
  {SFA_PASS_BWD_PRE, "bwd_pre", "bwdpre", DT(SFA_DTYPE_FP16) | DT(SFA_DTYPE_BF16), 8},
  {SFA_PASS_CONVERT, "convert", "convert", DT(SFA_DTYPE_FP16) | DT(SFA_DTYPE_BF16), 8},
  {SFA_PASS_HASH_SORT, "hash_sort", "hashsort", DT(SFA_DTYPE_INT32), 32},
  {SFA_PASS_PERMUTE, "permute", "permute", DT(SFA_DTYPE_UINT8), 8},
  {SFA_PASS_TOPK, "topk", "topk", DT(SFA_DTYPE_FP16) | DT(SFA_DTYPE_BF16) | DT(SFA_DTYPE_FP32),
   16},
  /* the tensors' dtypes are launch arguments: one kernel per arch */
  {SFA_PASS_MERGE, "merge", "merge", DT(SFA_DTYPE_FP32), 8},
  {SFA_PASS_KV_APPEND, "kv_append", "kvappend", DT(SFA_DTYPE_UINT8), 8},
};
#define NUTIL (sizeof util_passes / sizeof util_passes[0])

static const util_pass *util_of(sfa_pass p) {
  for (size_t i = 0; i < NUTIL; i++)
    if (util_passes[i].pass == p) return &util_passes[i];
  return NULL;
}

static const util_pass *util_by_token(const char *tok) {
  for (size_t i = 0; i < NUTIL; i++)
    if (strcmp(tok, util_passes[i].token) == 0) return &util_passes[i];
  return NULL;
}

static const char *util_pass_name(sfa_pass p) {
  const util_pass *u = util_of(p);
  return u ? u->name : NULL;
}

int sfa__pass_is_util(sfa_pass p) { return util_of(p) != NULL; }

unsigned sfa__util_dtypes(sfa_pass p) {
  const util_pass *u = util_of(p);
  return u ? u->dtypes : 0u;
}

/* "fp16, bf16 or fp32" for a dtype mask. */
static void dtype_list(unsigned dtypes, char *buf, size_t n) {
  int total = 0, k = 0;
  for (int d = 0; sfa__dtype_name((sfa_dtype)d); d++) total += (dtypes >> d) & 1u;
  buf[0] = '\0';
  for (int d = 0; sfa__dtype_name((sfa_dtype)d); d++) {
    if (!((dtypes >> d) & 1u)) continue;
    size_t at = strlen(buf);
    snprintf(buf + at, n - at, "%s%s", k == 0 ? "" : k == total - 1 ? " or " : ", ",
             sfa__dtype_name((sfa_dtype)d));
    k++;
  }
}

/* A utility spec has mode dense, no flags, no tiles, the pass's num_warps,
** one of its dtypes and an arch of the table; each rule names its field. */
static sfa_status util_check_domain(const sfa_kernel_spec *s, char *err, size_t errlen) {
  const sfa_status bad = SFA_ERR_INVALID_ARGUMENT;
  const util_pass *u = util_of(s->pass);
  char list[64];
  if (!u) return sfa__fail(err, errlen, bad, "pass: %d is not a utility pass", (int)s->pass);
  if (s->mode != SFA_MODE_DENSE)
    return sfa__fail(err, errlen, bad,
                     "mode: %d is not allowed with pass %s; a utility kernel has mode dense (0)",
                     (int)s->mode, u->name);
  if ((unsigned)s->dtype >= 32 || !((u->dtypes >> s->dtype) & 1u)) {
    const char *dn = sfa__dtype_name(s->dtype);
    dtype_list(u->dtypes, list, sizeof list);
    if (dn)
      return sfa__fail(err, errlen, bad, "dtype: %s is not allowed with pass %s; must be %s",
                       dn, u->name, list);
    return sfa__fail(err, errlen, bad, "dtype: %d is not allowed with pass %s; must be %s",
                     (int)s->dtype, u->name, list);
  }
  const struct { const char *field; int v; } tiles[] = {
    {"head_dim", s->head_dim}, {"block_m", s->block_m}, {"block_n", s->block_n},
    {"num_stages", s->num_stages}};
  for (size_t i = 0; i < sizeof tiles / sizeof tiles[0]; i++)
    if (tiles[i].v != 0)
      return sfa__fail(err, errlen, bad,
                       "%s: %d is not allowed with pass %s; a utility kernel has none: must "
                       "be 0", tiles[i].field, tiles[i].v, u->name);
  if (s->num_warps != u->num_warps)
    return sfa__fail(err, errlen, bad,
                     "num_warps: %d is not allowed with pass %s; must be %d (its block of %d "
                     "threads; sfa_spec_default fills it)",
                     s->num_warps, u->name, u->num_warps, 32 * u->num_warps);
  if (!sfa__arch_find(s->arch)) {
    char archs[128];
    sfa__arch_list(archs, sizeof archs, "", ", ", " or ");
    return sfa__fail(err, errlen, bad, "arch: %d is not allowed; must be %s", s->arch, archs);
  }
  if (s->flags)
    return sfa__fail(err, errlen, bad,
                     "flags: 0x%x is not allowed with pass %s; a utility kernel takes none",
                     s->flags, u->name);
  if (s->mma != SFA_SPEC_MMA_SYNC)
    return sfa__fail(err, errlen, bad,
                     "mma: %d is not allowed with pass %s; a utility kernel has none: must be "
                     "SFA_SPEC_MMA_SYNC (0)", (int)s->mma, u->name);
  return SFA_OK;
}

/* sfa_<token>[_<dtype>]_sm<arch>: the dtype where the pass takes several. */
static sfa_status util_name(const sfa_kernel_spec *s, char *buf, size_t n) {
  const util_pass *u = util_of(s->pass);
  if (util_check_domain(s, NULL, 0) != SFA_OK) return SFA_ERR_INVALID_ARGUMENT;
  const int one_dtype = (u->dtypes & (u->dtypes - 1)) == 0;
  int len = one_dtype ? snprintf(buf, n, "sfa_%s_sm%d", u->token, s->arch)
                      : snprintf(buf, n, "sfa_%s_%s_sm%d", u->token,
                                 sfa__dtype_name(s->dtype), s->arch);
  if (len < 0 || (size_t)len >= n) {
    buf[0] = '\0';
    return SFA_ERR_INVALID_ARGUMENT;
  }
  return SFA_OK;
}

/* The name of a utility kernel: rest is what follows "sfa_<tok>_", where tok
** is the pass's token. */
static sfa_status util_parse(const char *name, const char *tok, const char *rest,
                             sfa_kernel_spec *spec, char *err, size_t errlen) {
  const sfa_status bad = SFA_ERR_INVALID_ARGUMENT;
  const util_pass *u = util_by_token(tok);
  char t[64], why[256], list[64];
  int arch = 0;
  if (!u) return sfa__fail(err, errlen, bad, "name '%s': '%s' is not a utility pass", name, tok);
  sfa_kernel_spec s;
  memset(&s, 0, sizeof s);
  s.pass = u->pass;
  s.mode = SFA_MODE_DENSE;
  s.num_warps = u->num_warps;
  const int one_dtype = (u->dtypes & (u->dtypes - 1)) == 0;
  for (int d = 0; one_dtype && d < 32; d++)
    if ((u->dtypes >> d) & 1u) s.dtype = (sfa_dtype)d;
  const char *p = rest;
  if (!one_dtype) {
    dtype_list(u->dtypes, list, sizeof list);
    if (!*p || !next_token(&p, t, sizeof t))
      return sfa__fail(err, errlen, bad, "name '%s': ends where the dtype (%s) is expected",
                       name, list);
    int d = dtype_of_name(t);
    if (d < 0)
      return sfa__fail(err, errlen, bad, "name '%s': bad token '%s'; expected the dtype (%s)",
                       name, t, list);
    s.dtype = (sfa_dtype)d;
  }
  if (!*p || !next_token(&p, t, sizeof t))
    return sfa__fail(err, errlen, bad, "name '%s': ends where sm<arch> is expected", name);
  if (t[0] != 's' || !parse_pair(t + 1, 'm', &arch, 0, NULL))
    return sfa__fail(err, errlen, bad, "name '%s': bad token '%s'; expected sm<arch>", name, t);
  s.arch = arch;
  if (*p || p[-1] == '_')
    return sfa__fail(err, errlen, bad, "name '%s': unexpected text after '%s'", name, t);
  if (util_check_domain(&s, why, sizeof why) != SFA_OK)
    return sfa__fail(err, errlen, bad, "name '%s': %s", name, why);
  *spec = s;
  return SFA_OK;
}

/* No tiles, the pass's warps; the other fields are checked as they are. */
static sfa_status util_default(sfa_kernel_spec *spec, char *err, size_t errlen) {
  sfa_kernel_spec s = *spec;
  const util_pass *u = util_of(s.pass);
  if (!u) return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT, "pass: not a utility pass");
  s.block_m = s.block_n = s.num_stages = 0;
  s.num_warps = u->num_warps;
  s.mma = SFA_SPEC_MMA_SYNC;
  sfa_status st = util_check_domain(&s, err, errlen);
  if (st != SFA_OK) return st;
  *spec = s;
  return SFA_OK;
}
