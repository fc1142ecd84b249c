/*
** test_generate.c -- sfa_generate: self-contained source named after the
** spec, validation before rendering, the SFA_TEMPLATE_DIR override (good and
** broken templates, errors naming file and line), render time, and the
** sfa-gen tool (presets, mode flags, --list, --no-cubin manifest, exit codes).
** Every variant of the default and all-modes presets renders, and each mode's
** source carries its own pruning and masking (and the hash bwd its plan kernel).
** The attention kernels use only the mainloop backends' operations, and a
** backend lacking one is named at render time.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sfa.h"
#include "gen/gen_internal.h"
#include "testutil.h"

static sfa_kernel_spec spec_of(sfa_dtype t, int d, int causal, int arch) {
  sfa_kernel_spec s = {SFA_PASS_FWD, SFA_MODE_DENSE, t, d, 0, 0, 0, 0, arch,
                       causal ? SFA_FEAT_CAUSAL : 0u, SFA_SPEC_MMA_SYNC};
  ck_assert_int_eq(sfa_spec_default(&s, NULL, 0), SFA_OK);
  return s;
}

static void write_file(const char *dir, const char *name, const char *text) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "wb");
  ck_assert_ptr_nonnull(f);
  fputs(text, f);
  fclose(f);
}

/* Identifiers that only a mode's (or flag's, or pass's) template code declares. */
static void check_mode_code(const sfa_kernel_spec *s, const char *name, const char *src) {
  const int bwd = s->pass == SFA_PASS_BWD, det = (s->flags & SFA_FEAT_DETERMINISTIC) != 0;
  const int dec = s->pass == SFA_PASS_DECODE;
  const int wg = s->mma == SFA_SPEC_MMA_WGMMA || s->mma == SFA_SPEC_MMA_WS;
  const int ws = s->mma == SFA_SPEC_MMA_WS;
  char plan_entry[SFA__NAME_MAX + 32];
  snprintf(plan_entry, sizeof plan_entry, "%s%s(const sfa_bwd_args a)", name, SFA__PLAN_SUFFIX);
  struct { int want; const char *ident; } marks[] = {
    {(s->mode == SFA_MODE_QK_DROP || s->mode == SFA_MODE_HASH) && !dec, "const int *kix"},
    {s->mode == SFA_MODE_HASH && !dec, bwd ? "hash_bwd_state" : "hash_tile_state"},
    /* hash decode: each key matched against the tile's buckets before its rows load */
    {dec && s->mode == SFA_MODE_HASH, "match = match || qb[r] == kh_"},
    {dec && s->mode == SFA_MODE_HASH, "if (!((tile_seen >> buf) & 1u)) continue;"},
    {s->mode == SFA_MODE_WINDOW && !dec, bwd ? "window_bwd_state" : "window_tile_state"},
    {dec, "load_kv"},                          /* decode: the cache rows, paged or not */
    {dec && s->mode == SFA_MODE_WINDOW, "key_lo = off - wl"}, /* its window bounds */
    /* dq by atomics; the ws backward (D 64 and 128) by the copy engine's reduce-add */
    {bwd && !det && !(ws && s->head_dim <= 128), wg ? "sfa_red_add4(dst" : "sfa_red_add2(p"},
    {bwd && ws && s->head_dim <= 128, "sfa_tma_reduce_add(tm_dq"},
    {wg, "wgmma.mma_async"},
    /* ws: the copy engine's loads on mbarriers, the registers moved to the consumers */
    {ws, "cp.async.bulk.tensor.4d"},
    {ws, "mbarrier.try_wait.parity"},
    {ws, "setmaxnreg.inc.sync.aligned.u32"},
    {!ws, "sfa_cp_commit();"},              /* the others copy with cp.async */
    /* dq as transposed-operand products; the ws backward makes the whole tile's in one
    ** warpgroup, the consumers in turn */
    {wg && bwd && !det, "sfa_wg_ss64t(acc"},
    {bwd && ws && s->head_dim <= 128, "if ((warp >> 2) == (vis & 1))"},
    {bwd && ws && s->head_dim <= 128, "sfa_stsm_x4(dsbuf"}, /* dS^T stored by stmatrix */
    /* the ws backward's dP^T issued behind S^T, whose wait leaves it in flight (D 64 and
    ** 128, every mode; not at 128 with softcap or ALiBi, nor in the window mode) */
    {bwd && ws && s->head_dim <= 128 &&
         !(s->head_dim == 128 && ((s->flags & (SFA_FEAT_SOFTCAP | SFA_FEAT_ALIBI)) ||
                                  s->mode == SFA_MODE_WINDOW)),
     "sfa_wg_wait1();\n    sfa_wg_pin(s[0]);"},
    {s->pass == SFA_PASS_BWD_DQ, "dq = 0"},    /* its empty-tile path */
    {sfa__bwd_plan(s), plan_entry},              /* the plan kernel, hash bwd only */
    {sfa__bwd_plan(s), "const int4 pl0 = pl[0];"}, /* and the bwd CTA reading it */
    {s->mode == SFA_MODE_WINDOW && (s->flags & SFA_FEAT_BIAS), "biasp"},
    {s->mode == SFA_MODE_WINDOW && (s->flags & SFA_FEAT_MASK), "maskp"},
    {s->mode == SFA_MODE_WINDOW && (s->flags & SFA_FEAT_CAUSAL), "const int wr = 0;"},
  };
  for (size_t i = 0; i < sizeof marks / sizeof marks[0]; i++)
    ck_assert_msg(!strstr(src, marks[i].ident) == !marks[i].want, "%s: '%s' %s", name,
                  marks[i].ident, marks[i].want ? "missing" : "present");
}

START_TEST(source_for_every_preset_variant) {
  static const int arch[] = {80, 90};
  static const char *const presets[] = {"default", "all-modes"};
  for (int p = 0; p < 2; p++) {
    sfa_kernel_spec *specs = NULL;
    size_t n = 0;
    ck_assert_int_eq(sfa__preset(presets[p], arch, 2, &specs, &n, NULL, 0), SFA_OK);
    /* per arch: fwd, and for D <= 128 bwd, bwd + det, bwddq; all-modes on
    ** sm_90 also fwd, bwd and bwd + det in the other mma kind and the 32 fwd
    ** kernels without a mask warp-specialized, 24 ws backwards; 28 decode kernels and the 11
    ** utility kernels per arch; on sm_90 the short rows' forwards (dense and
    ** qk_drop at D 64 in fp16 and bf16: 6) */
    ck_assert_uint_eq(n, p == 0 ? 2 * (44 + 3 * 44 + 28 + 11) + 6
                                : 2 * 4 * 48 + 3 * 48 + 32 + 24 + 2 * (28 + 11) + 6);
    for (size_t i = 0; i < n; i++) {
      sfa_kernel_spec s = specs[i];
      char name[SFA__NAME_MAX], err[1024] = "", *src = NULL, pat[SFA__NAME_MAX + 4];
      ck_assert_int_eq(sfa_spec_name(&s, name, sizeof name), SFA_OK);
      ck_assert_msg(sfa_generate(&s, &src, err, sizeof err) == SFA_OK, "%s: %s", name, err);
      ck_assert_ptr_nonnull(src);
      ck_assert_uint_gt(strlen(src), 100);
      ck_assert_msg(strstr(src, name), "%s: name missing from source", name);
      snprintf(pat, sizeof pat, "%s(", name);
      ck_assert_msg(strstr(src, pat), "%s: no entry point", name);
      ck_assert_msg(!strstr(src, "#include"), "%s: source has #include", name);
      ck_assert_msg(strstr(src, "__global__"), "%s: no __global__", name);
      ck_assert_msg(strstr(src, "extern \"C\""), "%s: entry is not extern \"C\"", name);
      if (!sfa__pass_is_util(s.pass)) check_mode_code(&s, name, src);
      sfa_free(src);
    }
    free(specs);
  }
}
END_TEST

/* The utility kernels of a preset's list for one arch: none, or the 11 that
** its attention kernels need (bwd_pre and convert in fp16 and bf16,
** hash_sort, permute, topk in fp16, bf16 and fp32, merge, kv_append), each
** once, after them. */
static void expect_utils(const sfa_kernel_spec *v, size_t n, int want) {
  static const char *const names[] = {"sfa_bwdpre_fp16_sm90", "sfa_bwdpre_bf16_sm90",
                                      "sfa_convert_fp16_sm90", "sfa_convert_bf16_sm90",
                                      "sfa_hashsort_sm90", "sfa_permute_sm90",
                                      "sfa_topk_fp16_sm90", "sfa_topk_bf16_sm90",
                                      "sfa_topk_fp32_sm90", "sfa_merge_sm90", "sfa_kvappend_sm90"};
  int got = 0;
  for (size_t i = 0; i < n; i++) {
    char name[SFA__NAME_MAX];
    if (!sfa__pass_is_util(v[i].pass)) {
      ck_assert_msg(got == 0, "an attention kernel after the utility kernels");
      continue;
    }
    ck_assert_int_lt(got, 11);
    ck_assert_int_eq(sfa_spec_name(&v[i], name, sizeof name), SFA_OK);
    ck_assert_str_eq(name, names[got]);
    ck_assert_int_eq(sfa_spec_validate(&v[i], NULL, 0), SFA_OK);
    got++;
  }
  ck_assert_int_eq(got, want);
}

/* The preset lists: sizes, the flag sets of each mode, default tiles, errors. */
START_TEST(preset_contents) {
  static const int arch[] = {90};
  sfa_kernel_spec *v = NULL;
  size_t n = 0;
  char err[256] = "";
  int count[4][16] = {{0}};
  int passes[3] = {0}, nwg = 0;
  ck_assert_int_eq(sfa__preset("default", arch, 1, &v, &n, err, sizeof err), SFA_OK);
  ck_assert_uint_eq(n, 44 + 3 * 44 + 28 + 11 + 6);
  expect_utils(v, n, 11);
  int ndecode = 0, nshort = 0;
  for (size_t i = 0; i < n; i++) {
    sfa_kernel_spec d = v[i];
    if (sfa__pass_is_util(v[i].pass)) continue;
    if (v[i].pass == SFA_PASS_DECODE) { /* dense and window, causal and not, hash, strict and
                                           not, 2 dtypes x 2 dims; dense causal + gather */
      ck_assert(v[i].mode != SFA_MODE_QK_DROP);
      const unsigned cf = v[i].mode == SFA_MODE_HASH ? SFA_FEAT_STRICT : SFA_FEAT_CAUSAL;
      ck_assert(v[i].flags == 0 || v[i].flags == cf ||
                (v[i].mode == SFA_MODE_DENSE && v[i].flags == (SFA_FEAT_CAUSAL | SFA_FEAT_GATHER)));
      ck_assert_int_eq(sfa_spec_default(&d, NULL, 0), SFA_OK);
      ck_assert(memcmp(&d, &v[i], sizeof d) == 0);
      ndecode++;
      continue;
    }
    const int wg = v[i].mma == SFA_SPEC_MMA_WGMMA || v[i].mma == SFA_SPEC_MMA_WS;
    ck_assert_int_eq(sfa_spec_default(&d, NULL, 0), SFA_OK);
    if (memcmp(&d, &v[i], sizeof d) != 0) { /* not the default: the short rows' default */
      ck_assert(sfa__spec_for_keys(&d, 1) && memcmp(&d, &v[i], sizeof d) == 0);
      ck_assert(v[i].head_dim == 64 && v[i].num_warps == 8 && v[i].block_m == 64);
      nshort++;
      continue;
    }
    /* sm_90 fwd and bwd at D 64 and 128 default to wgmma (the fwd of dense,
    ** qk_drop, an unbiased window and hash at D 128: ws; the bwd of every mode without a
    ** bias or a mask: ws, not with det), the bwd at D 256 to wgmma, and the
    ** fwd and bwd of dense and the fwd of an unbiased window at D 256 to ws
    ** (qk_drop's fwd and the window's bwd too, not in this preset at D 256);
    ** nothing else does */
    const int ws256 = v[i].head_dim == 256 && v[i].pass == SFA_PASS_FWD &&
                      (v[i].mode == SFA_MODE_DENSE ||
                       (v[i].mode == SFA_MODE_WINDOW &&
                        !(v[i].flags & (SFA_FEAT_BIAS | SFA_FEAT_MASK))));
    const int wg256 = v[i].head_dim == 256 && v[i].pass == SFA_PASS_BWD;
    ck_assert_int_eq(wg, ws256 || wg256 ||
                             (v[i].pass != SFA_PASS_BWD_DQ &&
                              (v[i].head_dim == 64 || v[i].head_dim == 128)));
    const int ws_mode = v[i].mode == SFA_MODE_DENSE || v[i].mode == SFA_MODE_QK_DROP ||
                        (v[i].mode == SFA_MODE_WINDOW &&
                         !(v[i].flags & (SFA_FEAT_BIAS | SFA_FEAT_MASK))) ||
                        (v[i].mode == SFA_MODE_HASH && v[i].head_dim == 128) || ws256;
    const int ws_bwd = v[i].pass == SFA_PASS_BWD &&
                       (v[i].head_dim <= 128 ||
                        v[i].mode == SFA_MODE_DENSE || v[i].mode == SFA_MODE_WINDOW) &&
                       !(v[i].flags & (SFA_FEAT_BIAS | SFA_FEAT_MASK | SFA_FEAT_DETERMINISTIC));
    ck_assert_int_eq(v[i].mma == SFA_SPEC_MMA_WS,
                     wg && ((v[i].pass == SFA_PASS_FWD && ws_mode) || ws_bwd));
    nwg += wg;
    passes[v[i].pass] += 1 + ((v[i].flags & SFA_FEAT_DETERMINISTIC) ? 100 : 0);
    if (v[i].pass == SFA_PASS_FWD) count[v[i].mode][v[i].flags]++;
  }
  /* dtypes x D {64,128} x flag sets, for fwd, bwd and bwd + det; and dense
  ** (causal and not) at D 256 in both dtypes: the ws forward and bwd, the
  ** wgmma bwd + det */
  ck_assert_int_eq(nwg, 3 * 2 * 2 * (2 + 1 + 1 + 4) + 3 * 2 * 2);
  ck_assert_int_eq(ndecode, 28);
  /* the short rows' one-consumer forward of dense {-, causal} and qk_drop at D 64, fp16 and
  ** bf16 (sfa__spec_for_keys) */
  ck_assert_int_eq(nshort, 6);
  ck_assert_int_eq(passes[SFA_PASS_FWD], 44);
  ck_assert_int_eq(passes[SFA_PASS_BWD], 44 + 44 * 101); /* 44 plain, 44 det */
  ck_assert_int_eq(passes[SFA_PASS_BWD_DQ], 44);
  ck_assert_int_eq(count[SFA_MODE_DENSE][0], 10);
  ck_assert_int_eq(count[SFA_MODE_DENSE][SFA_FEAT_CAUSAL], 10);
  ck_assert_int_eq(count[SFA_MODE_QK_DROP][0], 4);
  ck_assert_int_eq(count[SFA_MODE_HASH][0], 4);
  ck_assert_int_eq(count[SFA_MODE_WINDOW][SFA_FEAT_CAUSAL], 4);
  ck_assert_int_eq(count[SFA_MODE_WINDOW][SFA_FEAT_CAUSAL | SFA_FEAT_BIAS], 4);
  ck_assert_int_eq(count[SFA_MODE_WINDOW][SFA_FEAT_CAUSAL | SFA_FEAT_BIAS | SFA_FEAT_MASK], 4);
  ck_assert_int_eq(count[SFA_MODE_WINDOW][SFA_FEAT_MASK], 4);
  free(v);

  memset(count, 0, sizeof count);
  ck_assert_int_eq(sfa__preset("all-modes", arch, 1, &v, &n, err, sizeof err), SFA_OK);
  /* 48 classes x (fwd, bwd, bwd + det, bwddq), and on sm_90 fwd, bwd and
  ** bwd + det also in the other mma kind, fwd warp-specialized where no mask
  ** (32 classes) and bwd warp-specialized without a bias, mask, det or
  ** varlen (dense and window {-, causal}, qk_drop, hash: 24); 6: the short
  ** rows' forwards */
  ck_assert_uint_eq(n, 4 * 48 + 3 * 48 + 32 + 24 + 28 + 11 + 6);
  expect_utils(v, n, 11);
  int kinds[3][3] = {{0}};
  for (size_t i = 0; i < n; i++) {
    const int wg = v[i].mma == SFA_SPEC_MMA_WGMMA ? 1 : v[i].mma == SFA_SPEC_MMA_WS ? 2 : 0;
    if (sfa__pass_is_util(v[i].pass) || v[i].pass == SFA_PASS_DECODE) continue;
    ck_assert(v[i].head_dim == 64 || v[i].head_dim == 128);
    ck_assert(!wg || v[i].pass != SFA_PASS_BWD_DQ);
    ck_assert(wg != 2 || (v[i].pass == SFA_PASS_FWD && !(v[i].flags & SFA_FEAT_MASK)) ||
              (v[i].pass == SFA_PASS_BWD &&
               !(v[i].flags & (SFA_FEAT_BIAS | SFA_FEAT_MASK | SFA_FEAT_DETERMINISTIC | SFA_FEAT_VARLEN))));
    kinds[v[i].pass][wg]++;
    if (v[i].pass == SFA_PASS_FWD && wg == 1) count[v[i].mode][v[i].flags]++;
  }
  ck_assert_int_eq(kinds[SFA_PASS_FWD][0], 48);
  ck_assert_int_eq(kinds[SFA_PASS_FWD][1], 48);
  ck_assert_int_eq(kinds[SFA_PASS_FWD][2], 32 + 6); /* and the short rows' */
  ck_assert_int_eq(kinds[SFA_PASS_BWD][0], 96);
  ck_assert_int_eq(kinds[SFA_PASS_BWD][1], 96);
  ck_assert_int_eq(kinds[SFA_PASS_BWD][2], 24);
  ck_assert_int_eq(kinds[SFA_PASS_BWD_DQ][0], 48);
  for (unsigned f = 0; f < 8; f++) ck_assert_int_eq(count[SFA_MODE_WINDOW][f], 4);
  ck_assert_int_eq(count[SFA_MODE_DENSE][0] + count[SFA_MODE_DENSE][SFA_FEAT_CAUSAL], 8);
  ck_assert_int_eq(count[SFA_MODE_QK_DROP][0] + count[SFA_MODE_HASH][0], 8);
  free(v);

  ck_assert_int_eq(sfa__preset("dense-tiles", arch, 1, &v, &n, err, sizeof err), SFA_OK);
  ck_assert_uint_ge(n, 30);
  expect_utils(v, n, 0); /* a forward tile sweep: no utility kernels */
  nwg = 0;
  int nbwd256 = 0, nbwdws = 0, nbwdws256 = 0;
  for (size_t i = 0; i < n; i++) {
    nwg += v[i].mma == SFA_SPEC_MMA_WGMMA && v[i].pass == SFA_PASS_FWD;
    if (v[i].pass == SFA_PASS_BWD && v[i].mma == SFA_SPEC_MMA_WS && v[i].head_dim == 256) {
      /* the ws backward at D 256: consumers sharing 64 keys, two stages */
      ck_assert(v[i].block_m == 64 && v[i].block_n == 64 && v[i].num_warps == 12 &&
                v[i].num_stages == 2);
      nbwdws256++;
    } else if (v[i].pass == SFA_PASS_BWD && v[i].mma == SFA_SPEC_MMA_WS) {
      /* the ws backward: m64n128w12, D 64 (2..4 stages) and 128 (2, 3), causal or not */
      ck_assert(v[i].block_m == 64 && v[i].block_n == 128 && v[i].num_warps == 12 &&
                v[i].num_stages >= 2 && v[i].num_stages <= (v[i].head_dim == 64 ? 4 : 3));
      nbwdws++;
    } else if (v[i].pass == SFA_PASS_BWD) { /* the wgmma backward at D 256, causal or not */
      ck_assert(v[i].mma == SFA_SPEC_MMA_WGMMA && v[i].head_dim == 256 && v[i].block_m == 64 &&
                v[i].block_n == 128 && v[i].num_warps == 8 && v[i].num_stages == 1);
      nbwd256++;
    }
  }
  /* D {64,128} x causal or not x (m64 w4, m128 w8) x n {64,128} x s {1,2} */
  ck_assert_int_eq(nwg, 32);
  ck_assert_int_eq(nbwd256, 2);
  ck_assert_int_eq(nbwdws, 2 * (3 + 2));
  ck_assert_int_eq(nbwdws256, 2);
  /* ws at D 256: its one tile (m128n64w12s2), causal or not */
  int nws256 = 0;
  for (size_t i = 0; i < n; i++)
    if (v[i].mma == SFA_SPEC_MMA_WS && v[i].head_dim == 256 && v[i].pass == SFA_PASS_FWD) {
      ck_assert(v[i].block_m == 128 && v[i].block_n == 64 && v[i].num_warps == 12 &&
                v[i].num_stages == 2);
      nws256++;
    }
  ck_assert_int_eq(nws256, 2);
  free(v);

  /* small (setup.sh's): dense {-, causal} x fp16, bf16 x D 64, 128 and qk_drop,
  ** hash, window causal x bf16 x D 128, each fwd and bwd (no det, no bwddq), and
  ** dense's short rows' forward at D 64 (4) */
  ck_assert_int_eq(sfa__preset("small", arch, 1, &v, &n, err, sizeof err), SFA_OK);
  ck_assert_uint_eq(n, 22 + 4 + 7 + 11); /* and dense, window {-, causal}, hash {-, strict} +
                                          ** dense causal gather decode */
  expect_utils(v, n, 11);
  int nbwd = 0, nsparse = 0, ndec = 0;
  for (size_t i = 0; i < n; i++) {
    if (sfa__pass_is_util(v[i].pass)) continue;
    if (v[i].pass == SFA_PASS_DECODE) {
      ck_assert(v[i].dtype == SFA_DTYPE_BF16 && v[i].head_dim == 128);
      ndec++;
      continue;
    }
    ck_assert(v[i].pass == SFA_PASS_FWD || v[i].pass == SFA_PASS_BWD);
    ck_assert(!(v[i].flags & SFA_FEAT_DETERMINISTIC));
    nbwd += v[i].pass == SFA_PASS_BWD;
    if (v[i].mode != SFA_MODE_DENSE) {
      nsparse++;
      ck_assert(v[i].dtype == SFA_DTYPE_BF16 && v[i].head_dim == 128);
    }
  }
  ck_assert_int_eq(nbwd, 11);
  ck_assert_int_eq(nsparse, 6);
  ck_assert_int_eq(ndec, 7);
  free(v);

  ck_assert_int_eq(sfa__preset("nope", arch, 1, &v, &n, err, sizeof err),
                   SFA_ERR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(err, "preset: 'nope' is not a preset; presets are small, default, "
                            "all-modes"), "%s", err);
  ck_assert_ptr_null(v);
  static const int bad_arch[] = {90, 75};
  ck_assert_int_eq(sfa__preset("default", bad_arch, 2, &v, &n, err, sizeof err),
                   SFA_ERR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(err, "arch: 75 is not allowed"), "%s", err);
  ck_assert_ptr_null(v);
  ck_assert_uint_eq(n, 0);
}
END_TEST

/* The wgmma backward at D 256 makes a column half per CTA (col0): its dV and dK
** products read the half's atom columns of dO and Q (64 rows: 8192 bytes per
** atom column), dQ's the half of K (128 rows: 16384) and adds at column
** col0 of the 256-float dq rows; at D 128 (one CTA per key tile) no slice. */
START_TEST(wgmma_backward_slices_columns_at_d256) {
  sfa_kernel_spec s = {SFA_PASS_BWD, SFA_MODE_DENSE, SFA_DTYPE_BF16, 256, 64, 128, 8, 1, 90,
                       SFA_FEAT_CAUSAL, SFA_SPEC_MMA_WGMMA};
  char *src = NULL, err[512] = "";
  ck_assert_msg(sfa_generate(&s, &src, err, sizeof err) == SFA_OK, "%s", err);
  static const char *const want[] = {
    "sfa_wg_desc_at(sfa_wg_desc(dobuf + ((col0) >> 6) * 8192, 8192, 1024), ks * 2048)",
    "sfa_wg_desc_at(sfa_wg_desc(qbuf + ((col0) >> 6) * 8192, 8192, 1024), ks * 2048)",
    "sfa_wg_desc_at(sfa_wg_desc(sK + ((col0) >> 6) * 16384 + ch * 16384, 16384, 1024), ks * 2048)",
    "* 256 + col0 + ch * 64 + c4 * 4",
    "const int split = blockIdx.y % 2, col0 = split * 128;"};
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
    ck_assert_msg(strstr(src, want[i]), "D 256 source lacks: %s", want[i]);
  sfa_free(src);
  s.head_dim = 128, s.num_stages = 2;
  ck_assert_msg(sfa_generate(&s, &src, err, sizeof err) == SFA_OK, "%s", err);
  ck_assert_ptr_null(strstr(src, "col0) >> 6"));
  ck_assert_ptr_nonnull(strstr(src, "* 128 + ch * 64 + c4 * 4"));
  sfa_free(src);
}
END_TEST

START_TEST(deterministic_output) {
  sfa_kernel_spec s = spec_of(SFA_DTYPE_FP16, 64, 1, 90);
  char *a = NULL, *b = NULL;
  ck_assert_int_eq(sfa_generate(&s, &a, NULL, 0), SFA_OK);
  ck_assert_int_eq(sfa_generate(&s, &b, NULL, 0), SFA_OK);
  ck_assert_str_eq(a, b);
  sfa_free(a);
  sfa_free(b);
}
END_TEST

/* The header comment of every attention kernel names the sfa that made it. */
START_TEST(header_names_the_sfa_version) {
  sfa_kernel_spec s = spec_of(SFA_DTYPE_BF16, 128, 1, 80);
  char *src = NULL, want[128], err[512];
  ck_assert_msg(sfa_generate(&s, &src, err, sizeof err) == SFA_OK, "%s", err);
  snprintf(want, sizeof want, " -- generated by sfa %s; do not edit.\n", SFA_VERSION_STRING);
  const char *nl = strchr(src, '\n');
  ck_assert_ptr_nonnull(nl);
  ck_assert_msg(strstr(src, want) != NULL && strstr(src, want) < nl,
                "the first line does not end with '%s': %.*s", want, (int)(nl - src + 1), src);
  sfa_free(src);
}
END_TEST

START_TEST(invalid_spec_rejected) {
  sfa_kernel_spec s = spec_of(SFA_DTYPE_BF16, 128, 1, 90);
  char err[256] = "", *src = (char *)1;
  s.head_dim = 40;
  ck_assert_int_eq(sfa_generate(&s, &src, err, sizeof err), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_ptr_null(src);
  ck_assert_ptr_nonnull(strstr(err, "head_dim: 40"));
  s.head_dim = 128;
  s.mode = SFA_MODE_HASH; /* causal is intrinsic to hash: the flag is an error */
  ck_assert_int_eq(sfa_generate(&s, &src, err, sizeof err), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_ptr_nonnull(strstr(err, "flags: causal is not allowed with mode hash"));
  s.flags = 0, s.mma = SFA_SPEC_MMA_SYNC;
  s.pass = SFA_PASS_BWD;
  s.head_dim = 144; /* above 128 the backward takes multiples of 32 */
  s.block_m = 64, s.block_n = 64, s.num_warps = 4, s.num_stages = 1;
  ck_assert_int_eq(sfa_generate(&s, &src, err, sizeof err), SFA_ERR_UNSUPPORTED);
  ck_assert_ptr_nonnull(strstr(err, "multiples of 32 up to 256"));
  ck_assert_ptr_null(src);
  s.pass = SFA_PASS_FWD;
  s.head_dim = 128;
  ck_assert_int_eq(sfa_generate(NULL, &src, err, sizeof err), SFA_ERR_INVALID_ARGUMENT);
  s.mode = SFA_MODE_DENSE;
  ck_assert_int_eq(sfa_generate(&s, NULL, err, sizeof err), SFA_ERR_INVALID_ARGUMENT);
}
END_TEST

START_TEST(template_dir_override) {
  const char *dir = tu_mkdtemp();
  sfa_kernel_spec s = spec_of(SFA_DTYPE_BF16, 64, 0, 80);
  char err[1024] = "", *src = NULL;
  write_file(dir, "kernel.lt", "// from {{ 'the override' }}\n{% include('part.lt') %}\n");
  write_file(dir, "part.lt", "void {{ spec.name }}() {}\n");
  setenv("SFA_TEMPLATE_DIR", dir, 1);
  ck_assert_msg(sfa_generate(&s, &src, err, sizeof err) == SFA_OK, "%s", err);
  ck_assert_str_eq(src, "// from the override\nvoid sfa_fwd_dense_bf16_d64_m128n64_w4s2_sm80() {}\n");
  sfa_free(src);

  /* A template.lua in the directory replaces the embedded engine. */
  write_file(dir, "template.lua",
             "return { new = function(loader) return { render = function(self, name, vars)\n"
             "  return 'custom engine: ' .. name .. ' ' .. vars.spec.name end } end }\n");
  ck_assert_msg(sfa_generate(&s, &src, err, sizeof err) == SFA_OK, "%s", err);
  ck_assert_str_eq(src, "custom engine: kernel.lt sfa_fwd_dense_bf16_d64_m128n64_w4s2_sm80");
  sfa_free(src);
  char path[1024];
  snprintf(path, sizeof path, "%s/template.lua", dir);
  unlink(path);
  unsetenv("SFA_TEMPLATE_DIR");
  tu_rm_rf(dir);
}
END_TEST

START_TEST(broken_template_names_file_and_line) {
  const char *dir = tu_mkdtemp();
  sfa_kernel_spec s = spec_of(SFA_DTYPE_FP16, 128, 1, 90);
  char err[1024] = "", *src = (char *)1;
  setenv("SFA_TEMPLATE_DIR", dir, 1);

  write_file(dir, "kernel.lt", "// line 1\n{% include('body.lt') %}\n");
  write_file(dir, "body.lt", "one\ntwo\n{{ spec.no_such_field }}\n");
  ck_assert_int_eq(sfa_generate(&s, &src, err, sizeof err), SFA_ERR_GENERATOR);
  ck_assert_ptr_null(src);
  ck_assert_msg(strstr(err, "template error: body.lt:3:"), "%s", err);
  ck_assert_msg(strstr(err, "is nil"), "%s", err);

  write_file(dir, "body.lt", "a\n{% for i = 1, 2 do %}\nb\n");
  ck_assert_int_eq(sfa_generate(&s, &src, err, sizeof err), SFA_ERR_GENERATOR);
  ck_assert_msg(strstr(err, "template error: body.lt:"), "%s", err);

  write_file(dir, "body.lt", "x\ny\n{{ unclosed\n");
  ck_assert_int_eq(sfa_generate(&s, &src, err, sizeof err), SFA_ERR_GENERATOR);
  ck_assert_msg(strstr(err, "body.lt:3: unclosed '{{'"), "%s", err);

  /* A missing template names the path that was tried. */
  write_file(dir, "kernel.lt", "{% include('gone.lt') %}\n");
  ck_assert_int_eq(sfa_generate(&s, &src, err, sizeof err), SFA_ERR_GENERATOR);
  ck_assert_msg(strstr(err, "gone.lt"), "%s", err);

  /* A broken engine is reported as such. */
  write_file(dir, "template.lua", "local x = \n");
  ck_assert_int_eq(sfa_generate(&s, &src, err, sizeof err), SFA_ERR_GENERATOR);
  ck_assert_msg(strstr(err, "template.lua:"), "%s", err);

  unsetenv("SFA_TEMPLATE_DIR");
  tu_rm_rf(dir);
}
END_TEST

/* The embedded templates, written to dir; the one called `name` with the first
** `from` in it replaced by `to`. */
static void write_templates(const char *dir, const char *name, const char *from, const char *to) {
  for (const struct sfa_embedded_file *f = sfa__embedded_files; f->name; f++) {
    const char *text = (const char *)f->data;
    if (strcmp(f->name, name) != 0) {
      write_file(dir, f->name, text);
      continue;
    }
    const char *at = strstr(text, from);
    ck_assert_msg(at, "%s holds no '%s'", name, from);
    size_t n = strlen(text) - strlen(from) + strlen(to) + 1;
    char *edited = malloc(n);
    ck_assert_ptr_nonnull(edited);
    snprintf(edited, n, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
    write_file(dir, f->name, edited);
    free(edited);
  }
}

/* backend.lt checks a backend's side of the contract: a missing operation is
** named at render time, for either backend, not met as a nil call later. */
START_TEST(backend_missing_an_operation_is_named) {
  static const struct { const char *file, *from, *to; int wgmma; } cases[] = {
      {"mma_sync.lt", "function mma_wait(", "function mma_wait_gone(", 0},
      {"wgmma.lt", "function mma_wait(", "function mma_wait_gone(", 1},
      {"mma_sync.lt", "function frag_offset(", "function frag_offset_gone(", 0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const char *dir = tu_mkdtemp();
    sfa_kernel_spec s = spec_of(SFA_DTYPE_BF16, 128, 1, cases[i].wgmma ? 90 : 80);
    if (cases[i].wgmma) ck_assert_int_eq(sfa__spec_default_mma(&s, 1, NULL, 0), SFA_OK);
    char err[1024] = "", *src = NULL, want[128];
    write_templates(dir, cases[i].file, cases[i].from, cases[i].to);
    setenv("SFA_TEMPLATE_DIR", dir, 1);
    ck_assert_int_eq(sfa_generate(&s, &src, err, sizeof err), SFA_ERR_GENERATOR);
    unsetenv("SFA_TEMPLATE_DIR");
    snprintf(want, sizeof want, "%s does not define %.*s", cases[i].file,
             (int)(strchr(cases[i].from, '(') - cases[i].from - 9), cases[i].from + 9);
    ck_assert_msg(strstr(err, "backend.lt:") && strstr(err, want), "%s: %s", want, err);
    tu_rm_rf(dir);
  }
}
END_TEST

/* The attention kernels are written once, against backend.lt's operations:
** no instruction of an mma kind and no arm on it appears in them. */
START_TEST(kernels_name_no_mma_instruction) {
  static const char *const kernels[] = {"fwd.lt", "bwd.lt", "bwd_dq.lt"};
  static const char *const banned[] = {"sfa_mma(", "sfa_ldsm", "sfa_wg_", "sfa_fence_async",
                                       "wgmma.mma_async", "if WG", "WG and", "load_tile_sw"};
  for (size_t k = 0; k < sizeof kernels / sizeof kernels[0]; k++) {
    const struct sfa_embedded_file *f = sfa__embedded_find(kernels[k]);
    ck_assert_ptr_nonnull(f);
    /* after the Lua block on top (the names it takes from the descriptor V) */
    const char *layout = strstr((const char *)f->data, "\n{%\nBM, BN, D, NW");
    ck_assert_ptr_nonnull(layout);
    const char *body = strstr(layout, "\n%}");
    ck_assert_ptr_nonnull(body);
    for (size_t b = 0; b < sizeof banned / sizeof banned[0]; b++)
      ck_assert_msg(!strstr(body, banned[b]), "%s names '%s'", kernels[k], banned[b]);
  }
}
END_TEST

/* Generating from the source tree's templates equals the embedded render. */
START_TEST(source_tree_matches_embedded) {
  sfa_kernel_spec s = spec_of(SFA_DTYPE_BF16, 128, 1, 90);
  char *a = NULL, *b = NULL, err[1024];
  ck_assert_int_eq(sfa_generate(&s, &a, err, sizeof err), SFA_OK);
  setenv("SFA_TEMPLATE_DIR", tu_source_path("templates"), 1);
  ck_assert_msg(sfa_generate(&s, &b, err, sizeof err) == SFA_OK, "%s", err);
  unsetenv("SFA_TEMPLATE_DIR");
  ck_assert_msg(strcmp(a, b) == 0, "embedded templates are stale: rebuild");
  sfa_free(a);
  sfa_free(b);
}
END_TEST

START_TEST(render_time) {
  sfa_kernel_spec s = spec_of(SFA_DTYPE_BF16, 128, 1, 90);
  struct timespec t0, t1;
  const int n = 20;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (int i = 0; i < n; i++) {
    char *src = NULL;
    ck_assert_int_eq(sfa_generate(&s, &src, NULL, 0), SFA_OK);
    sfa_free(src);
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double ms = ((double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-6) / n;
  fprintf(stderr, "render: %.2f ms per sfa_generate\n", ms);
  ck_assert_msg(ms < 50.0, "sfa_generate takes %.1f ms", ms);
}
END_TEST


/* The sfa-gen tool, when it has been built next to the tests. */
static int run(const char *cmd) {
  int rc = system(cmd);
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/* Runs "<tool> <args> --list", which must succeed and print want first. */
static void expect_first_listed(const char *tool, const char *dir, const char *args,
                                const char *want) {
  char cmd[2048], line[512] = "";
  snprintf(cmd, sizeof cmd, "%s %s --list > %s/first.txt", tool, args, dir);
  ck_assert_int_eq(run(cmd), 0);
  snprintf(cmd, sizeof cmd, "%s/first.txt", dir);
  FILE *f = fopen(cmd, "r");
  ck_assert(f && fgets(line, sizeof line, f));
  fclose(f);
  ck_assert_str_eq(line, want);
}

START_TEST(sfa_gen_tool) {
  const char *tool = tu_build_path("gen/sfa-gen");
  char cmd[2048], line[512];
  ck_assert_msg(access(tool, X_OK) == 0, "%s is not built (build all targets first)", tool);
  const char *dir = tu_mkdtemp();
  snprintf(cmd, sizeof cmd, "%s --preset default --arch 80,90 --list > %s/list.txt", tool, dir);
  ck_assert_int_eq(run(cmd), 0);
  snprintf(cmd, sizeof cmd, "%s/list.txt", dir);
  FILE *f = fopen(cmd, "r");
  int n = 0;
  while (f && fgets(line, sizeof line, f)) n++;
  if (f) fclose(f);
  ck_assert_int_eq(n, 2 * (44 + 3 * 44 + 28 + 11) + 6);
  snprintf(cmd, sizeof cmd, "%s --preset all-modes --arch sm_80,sm90 --list | wc -l > %s/n.txt",
           tool, dir);
  ck_assert_int_eq(run(cmd), 0);
  snprintf(cmd, sizeof cmd, "%s/n.txt", dir);
  f = fopen(cmd, "r");
  ck_assert(f && fscanf(f, "%d", &n) == 1);
  fclose(f);
  ck_assert_int_eq(n, 2 * 4 * 48 + 3 * 48 + 32 + 24 + 2 * (28 + 11) + 6);

  /* Utility kernels: by --pass (its dtype, or the one it takes) and by name. */
  expect_first_listed(tool, dir, "--pass topk --dtype fp32 --arch 80,90", "sfa_topk_fp32_sm80\n");
  expect_first_listed(tool, dir, "--pass hash_sort", "sfa_hashsort_sm90\n");
  expect_first_listed(tool, dir, "--pass convert --dtype fp16", "sfa_convert_fp16_sm90\n");
  expect_first_listed(tool, dir, "--name sfa_bwdpre_bf16_sm86", "sfa_bwdpre_bf16_sm86\n");
  snprintf(cmd, sizeof cmd, "%s --pass bwd_pre --head-dim 64 --list 2>/dev/null", tool);
  ck_assert_int_eq(run(cmd), 2);
  snprintf(cmd, sizeof cmd, "%s --pass permute --dtype fp16 --list 2>/dev/null", tool);
  ck_assert_int_eq(run(cmd), 2);
  snprintf(cmd, sizeof cmd, "%s --name sfa_topk_int32_sm90 --list 2>/dev/null", tool);
  ck_assert_int_eq(run(cmd), 2);

  /* Mode flags on the command line. */
  expect_first_listed(tool, dir, "--mode window --causal --mask --head-dim 64 --arch 86",
                      "sfa_fwd_window_causal_mask_bf16_d64_m128n64_w4s2_sm86\n");
  snprintf(cmd, sizeof cmd, "%s --mode qkdrop --bias --head-dim 64 --list 2>/dev/null", tool);
  ck_assert_int_eq(run(cmd), 2);

  /* --mma picks the kind (with its default tiles); a shape without wgmma is a usage error. */
  expect_first_listed(tool, dir, "--pass bwd --causal --head-dim 128 --mma wgmma",
                      "sfa_bwd_dense_causal_wg_bf16_d128_m64n128_w8s2_sm90\n");
  expect_first_listed(tool, dir, "--head-dim 64 --mma sync",
                      "sfa_fwd_dense_bf16_d64_m128n64_w4s2_sm90\n");
  snprintf(cmd, sizeof cmd, "%s --head-dim 96 --mma wgmma --list 2>/dev/null", tool);
  ck_assert_int_eq(run(cmd), 2);
  snprintf(cmd, sizeof cmd, "%s --head-dim 64 --mma fast --list 2>/dev/null", tool);
  ck_assert_int_eq(run(cmd), 2);

  snprintf(cmd, sizeof cmd, "%s --preset default --arch 80 --no-cubin --out %s/k 2>/dev/null",
           tool, dir);
  ck_assert_int_eq(run(cmd), 0);
  snprintf(cmd, sizeof cmd, "%s/k/manifest.tsv", dir);
  f = fopen(cmd, "r");
  ck_assert_ptr_nonnull(f);
  ck_assert_ptr_nonnull(fgets(line, sizeof line, f));
  ck_assert_str_eq(line, "name\tarch\tpass\tmode\tdtype\thead_dim\tblock_m\tblock_n\t"
                         "num_warps\tnum_stages\tflags\tsmem_bytes\tnvrtc\tkey\tcubin\t"
                         "cubin_bytes\tcubin_xxh3\n");
  n = 0;
  while (fgets(line, sizeof line, f)) {
    char name[128], path[1024];
    ck_assert_int_eq(sscanf(line, "%127[^\t]", name), 1);
    snprintf(path, sizeof path, "%s/k/%s.cu", dir, name);
    ck_assert_msg(access(path, R_OK) == 0, "%s missing", path);
    n++;
  }
  fclose(f);
  ck_assert_int_eq(n, 44 + 3 * 44 + 28 + 11);

  /* Usage errors exit 2, failures 1. */
  snprintf(cmd, sizeof cmd, "%s --preset nope 2>/dev/null", tool);
  ck_assert_int_eq(run(cmd), 2);
  snprintf(cmd, sizeof cmd, "%s --head-dim 40 2>/dev/null", tool);
  ck_assert_int_eq(run(cmd), 2);
  write_file(dir, "kernel.lt", "{{ nope }}\n");
  snprintf(cmd, sizeof cmd,
           "SFA_TEMPLATE_DIR=%s %s --head-dim 64 --no-cubin --out %s/bad 2>/dev/null", dir,
           tool, dir);
  ck_assert_int_eq(run(cmd), 1);
  tu_rm_rf(dir);
}
END_TEST

int main(void) {
  unsetenv("SFA_TEMPLATE_DIR");
  Suite *s = suite_create("generate");
  TCase *tc = tcase_create("generate");
  tcase_add_test(tc, source_for_every_preset_variant);
  tcase_add_test(tc, preset_contents);
  tcase_add_test(tc, wgmma_backward_slices_columns_at_d256);
  tcase_add_test(tc, deterministic_output);
  tcase_add_test(tc, header_names_the_sfa_version);
  tcase_add_test(tc, invalid_spec_rejected);
  tcase_add_test(tc, template_dir_override);
  tcase_add_test(tc, broken_template_names_file_and_line);
  tcase_add_test(tc, source_tree_matches_embedded);
  tcase_add_test(tc, backend_missing_an_operation_is_named);
  tcase_add_test(tc, kernels_name_no_mma_instruction);
  tcase_add_test(tc, render_time);
  tcase_add_test(tc, sfa_gen_tool);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
