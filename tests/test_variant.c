/*
** test_variant.c -- the variant descriptor (gen/variant.c): block, tile
** geometry, shared-memory regions and total, grid rules, the plan entry and
** the utility kernels' constants, each checked against values worked out by
** hand for a handful of specs (fwd in both mma kinds, bwd sync / wgmma / det /
** D 256, bwddq, hash bwd with its plan, every utility pass); every preset
** variant's descriptor is consistent and fits its arch; the templates see it
** as V and compute no layout of their own.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sfa.h"
#include "gen/arch.h"
#include "gen/gen_internal.h"
#include "gen/variant.h"
#include "testutil.h"

/* An attention spec from its fields (positional initialisers break when the
** spec grows: set each field by name). */
static sfa_kernel_spec attn(sfa_pass pass, sfa_mode mode, int d, int bm, int bn, int w, int st,
                            int arch, unsigned flags) {
  sfa_kernel_spec s;
  memset(&s, 0, sizeof s);
  s.pass = pass, s.mode = mode, s.dtype = SFA_DTYPE_BF16, s.head_dim = d;
  s.block_m = bm, s.block_n = bn, s.num_warps = w, s.num_stages = st;
  s.arch = arch, s.flags = flags;
  return s;
}

/* The mma kind of a spec, set in one place. */
static void use_wgmma(sfa_kernel_spec *s) { s->mma = SFA_SPEC_MMA_WGMMA; }

static sfa__variant describe(const sfa_kernel_spec *s) {
  sfa__variant v;
  char err[512] = "", name[SFA__NAME_MAX] = "?";
  sfa_spec_name(s, name, sizeof name);
  ck_assert_msg(sfa__variant_describe(s, &v, err, sizeof err) == SFA_OK, "%s: %s", name, err);
  return v;
}

/* Region name is at offset with size bytes. */
static void region_is(const sfa__variant *v, const char *name, size_t offset, size_t size) {
  const sfa__smem_region *r = sfa__variant_region(v, name);
  ck_assert_msg(r != NULL, "no region %s", name);
  ck_assert_msg(r->offset == offset && r->size == size,
                "region %s: offset %zu size %zu, want %zu %zu", name, r->offset, r->size, offset,
                size);
}

static void grid_is(const sfa__grid *g, const sfa__grid_dims *p, unsigned x, unsigned y,
                    unsigned z) {
  unsigned out[3];
  sfa__grid_size(g, p, out);
  ck_assert_msg(out[0] == x && out[1] == y && out[2] == z, "grid %ux%ux%u, want %ux%ux%u",
                out[0], out[1], out[2], x, y, z);
}

/* ------------------------------------------------------------ attention passes */

START_TEST(fwd_sync_layout_block_and_grid) {
  /* d128 m128n64 w4s1 on sm_80: rows of 2 * 128 + 16 = 272 bytes */
  sfa_kernel_spec s = attn(SFA_PASS_FWD, SFA_MODE_DENSE, 128, 128, 64, 4, 1, 80, SFA_FEAT_CAUSAL);
  sfa__variant v = describe(&s);
  ck_assert(v.attention && !v.wgmma);
  ck_assert_int_eq(v.threads, 128);
  ck_assert_int_eq(v.min_blocks, 2); /* 128 threads: two CTAs per SM */
  ck_assert_int_eq(v.row_tiles, 2);  /* 128 rows over 4 warps of m16 */
  ck_assert_int_eq(v.row_bytes, 272);
  ck_assert_int_eq(v.row_chunks, 16);
  ck_assert_int_eq(v.nregions, 3);
  region_is(&v, "q", 0, 128 * 272);
  region_is(&v, "k", 34816, 64 * 272);
  region_is(&v, "v", 52224, 64 * 272);
  ck_assert_uint_eq(v.smem_slack, 0);
  ck_assert_uint_eq(v.smem_bytes, 69632);
  ck_assert_uint_eq(v.smem_bytes, sfa_spec_smem_bytes(&s));
  ck_assert_int_eq(v.acc_registers, 2 * 16 * 4 + 2 * 8 * 4); /* O and S */
  ck_assert_int_eq(v.acc_registers, sfa__spec_acc_registers(&s));
  ck_assert_int_eq(v.has_plan, 0);
  ck_assert_int_eq(v.grid.rule, SFA__GRID_QUERY_TILES);
  sfa__grid_dims p = {.batch = 2, .hq = 8, .hkv = 2, .tq = 1000, .tk = 3000};
  grid_is(&v.grid, &p, 8, 8, 2); /* ceil(1000 / 128) query tiles x heads x batch */
  /* two stages double k and v; eight warps give one CTA per SM */
  s.num_stages = 2, s.num_warps = 8;
  v = describe(&s);
  region_is(&v, "v", 34816 + 2 * 17408, 2 * 17408);
  ck_assert_uint_eq(v.smem_bytes, 104448);
  ck_assert_int_eq(v.min_blocks, 1);
  ck_assert_int_eq(v.row_tiles, 1);
}
END_TEST

START_TEST(fwd_wgmma_unpadded_rows_aligned_tiles_and_slack) {
  /* d128 m64n128 w4s1 wg on sm_90: rows of 256 bytes, 1024 bytes of slack */
  sfa_kernel_spec s = attn(SFA_PASS_FWD, SFA_MODE_DENSE, 128, 64, 128, 4, 1, 90, 0);
  use_wgmma(&s);
  sfa__variant v = describe(&s);
  ck_assert(v.wgmma);
  ck_assert_int_eq(v.row_bytes, 256);
  ck_assert_int_eq(v.row_tiles, 1);
  ck_assert_int_eq(v.warpgroups, 1);
  region_is(&v, "q", 0, 64 * 256);
  region_is(&v, "k", 16384, 128 * 256);
  region_is(&v, "v", 49152, 128 * 256);
  for (int i = 0; i < v.nregions; i++) {
    ck_assert_uint_eq(v.regions[i].align, 1024);
    ck_assert_uint_eq(v.regions[i].offset % 1024, 0);
  }
  ck_assert_uint_eq(v.smem_base_align, 1024);
  ck_assert_uint_eq(v.smem_slack, 1024);
  ck_assert_uint_eq(v.smem_bytes, 1024 + 81920);
  ck_assert_uint_eq(v.smem_bytes, sfa_spec_smem_bytes(&s));
}
END_TEST

START_TEST(bwd_sync_regions_slice_and_key_tile_grid) {
  /* d128 m64n128 w8s2 on sm_80: K, V, Q, dO rows of 272 bytes; dS^T rows of
  ** (64 + 8) * 2 = 144 bytes; lse2 and delta 2 x 64 floats each; dense has no
  ** query metadata and mma.sync no dQ staging */
  sfa_kernel_spec s = attn(SFA_PASS_BWD, SFA_MODE_DENSE, 128, 64, 128, 8, 2, 80, SFA_FEAT_CAUSAL);
  sfa__variant v = describe(&s);
  ck_assert_int_eq(v.threads, 256);
  ck_assert_int_eq(v.min_blocks, 1);
  ck_assert_int_eq(v.row_tiles, 1); /* 128 keys over 8 warps */
  ck_assert_int_eq(v.ds_row_bytes, 144);
  ck_assert_int_eq(v.cols, 128);
  ck_assert_int_eq(v.nsplit, 1);
  ck_assert_int_eq(v.dq_units, 4 * 8);
  ck_assert_int_eq(v.dq_units_per_warp, 4);
  ck_assert_int_eq(v.qmeta_ints, 0);
  ck_assert_int_eq(v.dq_stage_warp, 0);
  ck_assert_int_eq(v.nregions, 9);
  region_is(&v, "k", 0, 34816);
  region_is(&v, "v", 34816, 34816);
  region_is(&v, "q", 69632, 2 * 64 * 272);
  region_is(&v, "do", 104448, 34816);
  region_is(&v, "ds", 139264, 128 * 144);
  region_is(&v, "lse2", 157696, 512);
  region_is(&v, "delta", 158208, 512);
  region_is(&v, "qmeta", 158720, 0);
  region_is(&v, "dq_stage", 158720, 0);
  ck_assert_uint_eq(v.smem_bytes, 158720);
  ck_assert_uint_eq(v.smem_bytes, sfa_spec_smem_bytes(&s));
  ck_assert_int_eq(v.acc_registers, 128 + 64); /* dK, dV (a column slice) with S^T, dP^T */
  ck_assert_int_eq(v.has_plan, 0);
  ck_assert_int_eq(v.grid.rule, SFA__GRID_KEY_TILES);
  sfa__grid_dims p = {.batch = 2, .hq = 8, .hkv = 4, .tq = 500, .tk = 1000};
  grid_is(&v.grid, &p, 8, 4, 2); /* ceil(1000 / 128) key tiles x kv heads x batch */
  p.nb = 2, p.nh = 4; /* a dbias broadcast over batch and heads: one CTA owns them all */
  grid_is(&v.grid, &p, 8, 1, 1);
}
END_TEST

START_TEST(bwd_wgmma_stages_dq_per_warp_unless_det) {
  /* d128 m64n128 w8s2 wg on sm_90: rows of 256 bytes, dS^T rows of 128, and
  ** 8 x 64 floats of dQ staging per warp, then 1024 bytes of slack */
  sfa_kernel_spec s = attn(SFA_PASS_BWD, SFA_MODE_DENSE, 128, 64, 128, 8, 2, 90, 0);
  use_wgmma(&s);
  sfa__variant v = describe(&s);
  ck_assert_int_eq(v.ds_row_bytes, 128);
  ck_assert_int_eq(v.warpgroups, 2);
  ck_assert_int_eq(v.dq_stage_warp, 2048);
  region_is(&v, "k", 0, 32768);
  region_is(&v, "v", 32768, 32768);
  region_is(&v, "q", 65536, 32768);
  region_is(&v, "do", 98304, 32768);
  region_is(&v, "ds", 131072, 16384);
  region_is(&v, "lse2", 147456, 512);
  region_is(&v, "delta", 147968, 512);
  region_is(&v, "qmeta", 148480, 0);
  region_is(&v, "dq_stage", 148480, 8 * 2048);
  ck_assert_uint_eq(v.smem_bytes, 148480 + 16384 + 1024);
  ck_assert_uint_eq(v.smem_bytes, sfa_spec_smem_bytes(&s));
  /* det: dQ is the bwddq kernel's, nothing is staged */
  s.flags |= SFA_FEAT_DETERMINISTIC;
  v = describe(&s);
  ck_assert_int_eq(v.dq_stage_warp, 0);
  region_is(&v, "dq_stage", 148480, 0);
  ck_assert_uint_eq(v.smem_bytes, 148480 + 1024);
  ck_assert_uint_eq(v.smem_bytes, sfa_spec_smem_bytes(&s));
}
END_TEST

START_TEST(bwd_d256_splits_columns_over_two_ctas) {
  /* d256 m64n64 w4s1 on sm_90: each CTA makes 128 of the 256 columns */
  sfa_kernel_spec s = attn(SFA_PASS_BWD, SFA_MODE_DENSE, 256, 64, 64, 4, 1, 90, 0);
  sfa__variant v = describe(&s);
  ck_assert_int_eq(v.cols, 128);
  ck_assert_int_eq(v.nsplit, 2);
  ck_assert_int_eq(v.row_bytes, 528);
  ck_assert_int_eq(v.dq_units, 4 * 8);
  ck_assert_int_eq(v.dq_units_per_warp, 8);
  ck_assert_int_eq(v.acc_registers, 128 + 64);
  region_is(&v, "ds", 4 * 33792, 64 * 144);
  ck_assert_uint_eq(v.smem_bytes, 144896);
  ck_assert_uint_eq(v.smem_bytes, sfa_spec_smem_bytes(&s));
  ck_assert_int_eq(v.grid.split, 2);
  sfa__grid_dims p = {.batch = 4, .hq = 8, .hkv = 4, .tq = 64, .tk = 200};
  grid_is(&v.grid, &p, 4, 8, 4); /* kv heads x 2 column halves */
  p.nb = 2, p.nh = 2;
  grid_is(&v.grid, &p, 4, 4, 2);
}
END_TEST

START_TEST(bwddq_layout_and_query_tile_grid) {
  /* d128 m128n64 w8s2 on sm_80: Q and dO tiles, two buffers each of K and V */
  sfa_kernel_spec s = attn(SFA_PASS_BWD_DQ, SFA_MODE_WINDOW, 128, 128, 64, 8, 2, 80,
                           SFA_FEAT_CAUSAL | SFA_FEAT_BIAS);
  sfa__variant v = describe(&s);
  ck_assert_int_eq(v.row_tiles, 1);
  ck_assert_int_eq(v.min_blocks, 1);
  ck_assert_int_eq(v.nregions, 4);
  region_is(&v, "q", 0, 34816);
  region_is(&v, "do", 34816, 34816);
  region_is(&v, "k", 69632, 34816);
  region_is(&v, "v", 104448, 34816);
  ck_assert_uint_eq(v.smem_bytes, 139264);
  ck_assert_uint_eq(v.smem_bytes, sfa_spec_smem_bytes(&s));
  ck_assert_int_eq(v.acc_registers, 64 + 64); /* dQ, S and dP */
  ck_assert_int_eq(v.grid.rule, SFA__GRID_QUERY_TILES);
  sfa__grid_dims p = {.batch = 3, .hq = 6, .hkv = 2, .tq = 129, .tk = 64};
  grid_is(&v.grid, &p, 2, 6, 3);
}
END_TEST

/* The ws backward (d128 m64n128 w12s2 on sm_90): dense and window keep
** FlashAttention 3's register split (producer 24, consumers 240) plus the
** dQ writer's 8 (consumers 232, the producer what is left: 40) and no
** descriptors; qk_drop and hash, whose producer alone walks the tiles, a
** descriptor slot per stage (two int32) after the barriers, their query
** metadata per stage, and 56/224 (the producer's walk spills at 24). dQ goes through the copy engine: its tile
** of 64 x 128 floats right after do, dq_full and dq_empty after the
** stages' barriers, and its row and head (two int32) after desc. */
START_TEST(ws_bwd_descriptors_only_for_query_metadata_modes) {
  static const struct { sfa_mode mode; unsigned flags; int meta, desc, preg, creg; } rows[] = {
    {SFA_MODE_DENSE, SFA_FEAT_CAUSAL, 0, 0, 40, 232},
    {SFA_MODE_WINDOW, SFA_FEAT_CAUSAL, 0, 0, 40, 232},
    {SFA_MODE_QK_DROP, 0, 1, 16, 56, 224},
    {SFA_MODE_HASH, 0, 2, 16, 56, 224},
  };
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
    sfa_kernel_spec s = attn(SFA_PASS_BWD, rows[i].mode, 128, 64, 128, 12, 2, 90, rows[i].flags);
    s.mma = SFA_SPEC_MMA_WS;
    sfa__variant v = describe(&s);
    ck_assert(v.ws);
    ck_assert_int_eq(v.producer_regs, rows[i].preg);
    ck_assert_int_eq(v.consumer_regs, rows[i].creg);
    /* the cap at entry (168 registers a thread over 384 threads), all of it */
    ck_assert_int_eq(128 * v.producer_regs + 256 * v.consumer_regs, 168 * 384);
    const sfa__smem_region *q = sfa__variant_region(&v, "qmeta");
    const sfa__smem_region *b = sfa__variant_region(&v, "bar");
    ck_assert(q && b);
    ck_assert_uint_eq(q->size, (size_t)rows[i].meta * 2 * 64 * 4);
    ck_assert_uint_eq(b->size, (3 * 2 + 1 + 2) * 8);
    region_is(&v, "desc", b->offset + b->size, (size_t)rows[i].desc);
    region_is(&v, "dq_desc", b->offset + b->size + (size_t)rows[i].desc, 8);
    const sfa__smem_region *dq = sfa__variant_region(&v, "dq_stage");
    const sfa__smem_region *dO = sfa__variant_region(&v, "do");
    ck_assert(dq && dO && v.dq_tma);
    ck_assert_uint_eq(dq->offset, dO->offset + dO->size);
    ck_assert_uint_eq(dq->size, 64 * 128 * 4);
    ck_assert_uint_eq(dq->offset % 1024, 0);
    ck_assert_int_eq(v.has_plan, rows[i].mode == SFA_MODE_HASH);
    ck_assert_uint_eq(v.smem_bytes, sfa_spec_smem_bytes(&s));
  }
}
END_TEST

/* The ws forward with one consumer: two CTAs per SM (entry cap 128, the consumer 232
** registers), three at head dim 64 with 64-key tiles (cap 80: the consumer's setmaxnreg
** 136), whose shared memory fits three times with up to four stages; 128-key tiles and
** head dim 128 stay at two. Hash's producer, which searches the bucket ranges
** (mode_setup), keeps 32 (at 24 ptxas spilled 12-24 bytes at D 128), so its consumer
** gets 224 or 128. Producer and consumer share the whole cap at entry. */
START_TEST(ws_fwd_one_consumer_three_ctas_only_at_d64_n64) {
  static const struct { sfa_mode mode; unsigned flags; int d, bn, st, blocks, preg, creg; } rows[] = {
    {SFA_MODE_WINDOW, SFA_FEAT_CAUSAL, 64, 64, 2, 3, 24, 136},
    {SFA_MODE_WINDOW, SFA_FEAT_CAUSAL, 64, 64, 4, 3, 24, 136},
    {SFA_MODE_WINDOW, SFA_FEAT_CAUSAL, 64, 128, 2, 2, 24, 232},
    {SFA_MODE_WINDOW, SFA_FEAT_CAUSAL, 128, 64, 2, 2, 24, 232},
    {SFA_MODE_HASH, 0, 128, 64, 2, 2, 32, 224},
    {SFA_MODE_HASH, 0, 64, 64, 2, 3, 32, 128},
  };
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
    sfa_kernel_spec s = attn(SFA_PASS_FWD, rows[i].mode, rows[i].d, 64, rows[i].bn, 8,
                             rows[i].st, 90, rows[i].flags);
    s.mma = SFA_SPEC_MMA_WS;
    sfa__variant v = describe(&s);
    ck_assert(v.ws && v.consumers == 1);
    ck_assert_int_eq(v.min_blocks, rows[i].blocks);
    ck_assert_int_eq(v.producer_regs, rows[i].preg);
    ck_assert_int_eq(v.consumer_regs, rows[i].creg);
    ck_assert_int_eq(128 * (v.producer_regs + v.consumer_regs),
                     65536 / (256 * v.min_blocks) / 8 * 8 * 256);
    ck_assert_uint_le((size_t)v.min_blocks * (v.smem_bytes + 1024), 228 * 1024);
  }
}
END_TEST

/* The ws backward at D 64 leaves its dQ tile for the copy engine as at D 128, and one
** consumer warpgroup per tile makes it, in turn: a 64 x 64 float tile after dO,
** dq_full and dq_empty, dq_desc, no per-warp staging, and the producer asks 8 more registers
** (it gets what the consumers' 232 or 224 leave: 40 or 56). */
START_TEST(ws_bwd_at_d64_leaves_a_dq_tile) {
  static const struct { sfa_mode mode; unsigned flags; int preg, creg; } rows[] = {
    {SFA_MODE_DENSE, SFA_FEAT_CAUSAL, 40, 232},
    {SFA_MODE_QK_DROP, 0, 56, 224},
  };
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
    sfa_kernel_spec s = attn(SFA_PASS_BWD, rows[i].mode, 64, 64, 128, 12, 2, 90, rows[i].flags);
    s.mma = SFA_SPEC_MMA_WS;
    sfa__variant v = describe(&s);
    ck_assert(v.ws && v.dq_tma);
    ck_assert_int_eq(v.producer_regs, rows[i].preg);
    ck_assert_int_eq(v.consumer_regs, rows[i].creg);
    ck_assert_int_eq(v.dq_stage_warp, 0);
    const sfa__smem_region *dq = sfa__variant_region(&v, "dq_stage");
    const sfa__smem_region *dO = sfa__variant_region(&v, "do");
    const sfa__smem_region *b = sfa__variant_region(&v, "bar");
    const sfa__smem_region *desc = sfa__variant_region(&v, "desc");
    ck_assert(dq && dO && b && desc);
    ck_assert_uint_eq(dq->offset, dO->offset + dO->size);
    ck_assert_uint_eq(dq->size, 64 * 64 * 4);
    ck_assert_uint_eq(dq->offset % 1024, 0);
    ck_assert_uint_eq(b->size, (3 * 2 + 1 + 2) * 8);
    region_is(&v, "dq_desc", desc->offset + desc->size, 8);
    ck_assert_uint_eq(v.smem_bytes, sfa_spec_smem_bytes(&s));
  }
}
END_TEST

START_TEST(hash_bwd_stages_query_metadata_and_has_a_plan_entry) {
  /* hash: q_hash and q_idx per query row, 2 stages x 2 x 64 int32 */
  sfa_kernel_spec s = attn(SFA_PASS_BWD, SFA_MODE_HASH, 128, 64, 128, 8, 2, 80, 0);
  sfa__variant v = describe(&s);
  ck_assert_int_eq(v.qmeta_ints, 2);
  region_is(&v, "qmeta", 158720, 2 * 2 * 64 * 4);
  region_is(&v, "dq_stage", 159744, 0);
  ck_assert_uint_eq(v.smem_bytes, 159744);
  ck_assert_uint_eq(v.smem_bytes, sfa_spec_smem_bytes(&s));
  ck_assert_int_eq(v.has_plan, 1);
  ck_assert_str_eq(v.plan.suffix, SFA__PLAN_SUFFIX);
  ck_assert_int_eq(v.plan.warps, 8);
  ck_assert_int_eq(v.plan.threads, 256);
  ck_assert_int_eq(v.plan.min_blocks, 0);
  ck_assert_uint_eq(v.plan.smem_bytes, 0);
  ck_assert_int_eq(v.plan_ints, SFA__BWD_PLAN_INTS);
  ck_assert_int_eq(v.plan.grid.rule, SFA__GRID_KEY_TILE_ITEMS);
  /* one warp per (batch, query head, key tile): 2 * 8 * ceil(1000 / 128) = 128 */
  sfa__grid_dims p = {.batch = 2, .hq = 8, .hkv = 4, .tq = 500, .tk = 1000};
  ck_assert_int_eq(sfa__grid_items(&v.plan.grid, &p), 128);
  grid_is(&v.plan.grid, &p, 16, 1, 1);
  /* qk_drop stages q_idx and has no plan; dense neither */
  s.mode = SFA_MODE_QK_DROP;
  v = describe(&s);
  ck_assert_int_eq(v.qmeta_ints, 1);
  ck_assert_int_eq(v.has_plan, 0);
  ck_assert_uint_eq(v.smem_bytes, 158720 + 512);
  s.mode = SFA_MODE_DENSE;
  v = describe(&s);
  ck_assert_int_eq(v.qmeta_ints, 0);
  ck_assert_int_eq(v.has_plan, 0);
  /* the forward of hash has no query staging and no plan */
  s = attn(SFA_PASS_FWD, SFA_MODE_HASH, 128, 128, 64, 4, 1, 80, 0);
  v = describe(&s);
  ck_assert_int_eq(v.qmeta_ints, 0);
  ck_assert_int_eq(v.has_plan, 0);
}
END_TEST

/* ------------------------------------------------------------ utility passes */

static sfa__variant util_variant(sfa_pass pass, sfa_dtype dtype) {
  sfa_kernel_spec s;
  memset(&s, 0, sizeof s);
  s.pass = pass, s.mode = SFA_MODE_DENSE, s.dtype = dtype, s.arch = 90;
  char err[256] = "";
  ck_assert_msg(sfa_spec_default(&s, err, sizeof err) == SFA_OK, "%s", err);
  sfa__variant v = describe(&s);
  ck_assert(!v.attention);
  ck_assert_int_eq(v.threads, 32 * s.num_warps);
  ck_assert_int_eq(v.min_blocks, 0);
  ck_assert_uint_eq(v.smem_bytes, 0); /* sized by each launch */
  ck_assert_int_eq(v.nregions, 0);
  ck_assert_int_eq(v.has_plan, 0);
  ck_assert_int_eq(v.grid.rule, SFA__GRID_ITEMS);
  ck_assert_ptr_nonnull(v.grid.item);
  return v;
}

static unsigned items_grid(const sfa__variant *v, int64_t items) {
  sfa__grid_dims p = {.items = items};
  unsigned g[3];
  sfa__grid_size(&v->grid, &p, g);
  ck_assert(g[1] == 1 && g[2] == 1);
  return g[0];
}

START_TEST(bwd_pre_32_rows_of_8_threads_per_block) {
  sfa__variant v = util_variant(SFA_PASS_BWD_PRE, SFA_DTYPE_FP16);
  ck_assert_int_eq(v.threads, 256);
  ck_assert_int_eq(v.util.row_threads, 8);
  ck_assert_int_eq(v.util.rows_per_block, 32);
  ck_assert_int_eq(v.grid.per_block, 32);
  ck_assert_uint_eq(items_grid(&v, 2 * 8 * 1024), 512);
  ck_assert_uint_eq(items_grid(&v, 33), 2);
}
END_TEST

START_TEST(convert_8_elements_per_thread_capped_grid) {
  sfa__variant v = util_variant(SFA_PASS_CONVERT, SFA_DTYPE_BF16);
  ck_assert_int_eq(v.threads, 256);
  ck_assert_int_eq(v.util.chunk_elems, 8);
  ck_assert_int_eq(v.grid.per_block, 256);
  ck_assert_uint_eq(items_grid(&v, 257), 2);
  /* past 2^20 CTAs the kernel strides */
  ck_assert_uint_eq(items_grid(&v, (int64_t)1 << 40), 1u << 20);
}
END_TEST

START_TEST(hash_sort_block_and_histogram_budget) {
  sfa__variant v = util_variant(SFA_PASS_HASH_SORT, SFA_DTYPE_INT32);
  ck_assert_int_eq(v.threads, 1024);
  ck_assert_int_eq(v.warps, 32);
  ck_assert_uint_eq(v.util.smem_max, 48 * 1024);
  ck_assert_int_eq(v.util.min_warp_items, 64);
  ck_assert_uint_eq(items_grid(&v, 6 * 16), 96); /* a CTA per (batch, head) */
}
END_TEST

START_TEST(permute_tiles_of_4_vectors_per_thread) {
  sfa__variant v = util_variant(SFA_PASS_PERMUTE, SFA_DTYPE_UINT8);
  ck_assert_int_eq(v.threads, 256);
  ck_assert_int_eq(v.util.unroll, 4);
  ck_assert_int_eq(v.util.tile_vectors, 1024);
  ck_assert_uint_eq(items_grid(&v, 1000), 1000);
  ck_assert_uint_eq(items_grid(&v, (int64_t)1 << 30), 1u << 24);
}
END_TEST

START_TEST(topk_histogram_and_blocks) {
  static const sfa_dtype dts[] = {SFA_DTYPE_FP16, SFA_DTYPE_BF16, SFA_DTYPE_FP32};
  for (int i = 0; i < 3; i++) {
    sfa__variant v = util_variant(SFA_PASS_TOPK, dts[i]);
    ck_assert_int_eq(v.threads, 512);
    ck_assert_int_eq(v.util.hist_bins, 256);
    ck_assert_int_eq(v.util.hist_copies, 32);
    ck_assert_uint_eq(v.util.hist_bytes, 256 * 32 * 4);
    ck_assert_int_eq(v.util.small_threads, 256);
    ck_assert_int_eq(v.util.small_below, 4096);
    ck_assert_uint_eq(items_grid(&v, 12345), 12345);
    ck_assert_uint_eq(items_grid(&v, (int64_t)1 << 40), 0x7fffffffu);
  }
}
END_TEST

/* ------------------------------------------------------------ every variant */

/* The regions of v lie end to end from 0, each aligned, inside the total. */
static void check_layout(const sfa__variant *v, const char *name) {
  size_t end = 0;
  for (int i = 0; i < v->nregions; i++) {
    const sfa__smem_region *r = &v->regions[i];
    ck_assert_msg(r->offset >= end && r->offset % r->align == 0, "%s: region %s at %zu", name,
                  r->name, r->offset);
    end = r->offset + r->size;
  }
  ck_assert_msg(end + v->smem_slack == v->smem_bytes,
                "%s: regions end at %zu, slack %zu, total %zu", name, end, v->smem_slack,
                v->smem_bytes);
}

START_TEST(every_preset_variant_fits_its_arch) {
  size_t narch;
  const sfa__arch *table = sfa__arch_table(&narch);
  int archs[32];
  for (size_t a = 0; a < narch; a++) archs[a] = table[a].arch;
  static const char *const presets[] = {"small", "default", "all-modes", "dense-tiles"};
  size_t total = 0, plans = 0;
  for (size_t p = 0; p < sizeof presets / sizeof presets[0]; p++) {
    sfa_kernel_spec *specs = NULL;
    size_t n = 0;
    char err[512] = "";
    ck_assert_msg(sfa__preset(presets[p], archs, (int)narch, &specs, &n, err, sizeof err) ==
                      SFA_OK, "%s: %s", presets[p], err);
    for (size_t i = 0; i < n; i++) {
      char name[SFA__NAME_MAX];
      ck_assert_int_eq(sfa_spec_name(&specs[i], name, sizeof name), SFA_OK);
      sfa__variant v = describe(&specs[i]);
      ck_assert_msg(v.smem_bytes <= sfa__arch_smem_limit(specs[i].arch),
                    "%s: %zu bytes of shared memory, sm_%d allows %zu", name, v.smem_bytes,
                    specs[i].arch, sfa__arch_smem_limit(specs[i].arch));
      ck_assert_uint_eq(v.smem_bytes, sfa_spec_smem_bytes(&specs[i]));
      ck_assert_int_le(v.acc_registers, SFA__MAX_ACC_REGISTERS);
      ck_assert_int_eq(v.threads, 32 * specs[i].num_warps);
      ck_assert_msg(sfa__grid_rule_name(v.grid.rule) != NULL, "%s: no grid rule", name);
      ck_assert_int_eq(v.has_plan, sfa__bwd_plan(&specs[i]));
      ck_assert_msg(v.nregions < SFA__VARIANT_MAX_REGIONS, "%s: %d regions leave no room", name,
                    v.nregions);
      check_layout(&v, name);
      if (v.attention) {
        ck_assert_msg(v.row_tiles >= 1 && v.row_tiles <= 2, "%s: %d m16 tiles per warp", name,
                      v.row_tiles);
        if (specs[i].pass == SFA_PASS_BWD) /* over the warps of the products (ws: consumers) */
          ck_assert_int_eq(v.dq_units_per_warp * v.mma_warps, v.dq_units);
        ck_assert_int_eq(v.mma_warps, v.ws ? v.warps - 4 : v.warps);
      }
      plans += (size_t)v.has_plan;
      total++;
    }
    free(specs);
  }
  ck_assert_uint_gt(total, 1000);
  ck_assert_uint_gt(plans, 0);
}
END_TEST

START_TEST(describe_refuses_what_validation_refuses) {
  sfa_kernel_spec s = attn(SFA_PASS_FWD, SFA_MODE_DENSE, 40, 128, 64, 4, 1, 80, 0);
  sfa__variant v;
  memset(&v, 0x5a, sizeof v);
  char err[256] = "";
  ck_assert_int_eq(sfa__variant_describe(&s, &v, err, sizeof err), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(err, "head_dim: 40"), "%s", err);
  ck_assert_int_eq(v.threads, 0);
  ck_assert_uint_eq(v.smem_bytes, 0);
  /* over the arch's budget: validation's message, naming the bytes */
  s = attn(SFA_PASS_FWD, SFA_MODE_DENSE, 128, 128, 64, 4, 2, 86, 0);
  ck_assert_int_eq(sfa__variant_describe(&s, &v, err, sizeof err), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(err, "needs 104448 bytes of shared memory"), "%s", err);
  ck_assert_int_eq(sfa__variant_describe(NULL, &v, err, sizeof err), SFA_ERR_INVALID_ARGUMENT);
  ck_assert_int_eq(sfa__variant_describe(&s, NULL, err, sizeof err), SFA_ERR_INVALID_ARGUMENT);
}
END_TEST

/* ------------------------------------------------------------ templates */

/* The templates see the descriptor as V. */
START_TEST(templates_see_the_descriptor_as_V) {
  sfa_kernel_spec s = attn(SFA_PASS_BWD, SFA_MODE_HASH, 128, 64, 128, 8, 2, 80, 0);
  const sfa__template t[] = {
      {"v.lt", "{{ V.threads }} {{ V.min_blocks }} {{ V.smem.bytes }} {{ V.smem.qmeta.offset }} "
               "{{ V.smem.regions[9].name }} {{ V.grid.rule }} {{ V.grid.tile }} "
               "{{ V.plan.suffix }} {{ V.plan.threads }} {{ V.plan.grid.rule }} "
               "{{ V.plan_ints }} {{ V.qmeta_ints }}"},
      {NULL, NULL}};
  char *out = NULL, err[512] = "";
  ck_assert_msg(sfa__render(t, "v.lt", &s, &out, err, sizeof err) == SFA_OK, "%s", err);
  ck_assert_str_eq(out, "256 1 159744 158720 dq_stage key_tiles 128 _plan 256 key_tile_items "
                        "16 2");
  free(out);
  /* a utility pass: its constants; no plan */
  sfa_kernel_spec u;
  memset(&u, 0, sizeof u);
  u.pass = SFA_PASS_TOPK, u.dtype = SFA_DTYPE_FP32, u.arch = 90;
  ck_assert_int_eq(sfa_spec_default(&u, NULL, 0), SFA_OK);
  const sfa__template tu[] = {
      {"u.lt", "{{ V.threads }} {{ V.util.hist_bins }} {{ V.grid.rule }} {{ V.plan == nil }}"},
      {NULL, NULL}};
  ck_assert_msg(sfa__render(tu, "u.lt", &u, &out, err, sizeof err) == SFA_OK, "%s", err);
  ck_assert_str_eq(out, "512 256 items true");
  free(out);
  /* a spec that does not validate: V is empty */
  s.head_dim = 40;
  const sfa__template te[] = {{"e.lt", "{{ next(V) == nil }}"}, {NULL, NULL}};
  ck_assert_msg(sfa__render(te, "e.lt", &s, &out, err, sizeof err) == SFA_OK, "%s", err);
  ck_assert_str_eq(out, "true");
  free(out);
}
END_TEST

/* The Lua block on top of each attention kernel takes the block, geometry
** and layout from V: it computes no row stride, offset, total or thread
** count of its own, and asserts nothing against spec.smem_bytes. */
START_TEST(attention_templates_compute_no_layout) {
  static const char *const kernels[] = {"fwd.lt", "bwd.lt", "bwd_dq.lt"};
  static const char *const computed[] = {
      "spec.smem_bytes", "SMEM =", "(D + 8)", "D * 2", "1024 or 0", "32 * NW", "// (16 * NW)",
      "* RS", "* 4 *", "spec.plan", "D > 128", "MIN_BLOCKS"};
  for (size_t k = 0; k < sizeof kernels / sizeof kernels[0]; k++) {
    const struct sfa_embedded_file *f = sfa__embedded_find(kernels[k]);
    ck_assert_ptr_nonnull(f);
    const char *top = strstr((const char *)f->data, "\n{%\nBM, BN, D, NW");
    ck_assert_msg(top != NULL, "%s: no layout block", kernels[k]);
    const char *end = strstr(top + 4, "\n%}");
    ck_assert_ptr_nonnull(end);
    for (size_t c = 0; c < sizeof computed / sizeof computed[0]; c++) {
      const char *at = strstr(top, computed[c]);
      ck_assert_msg(!at || at > end, "%s: its layout block computes '%s'", kernels[k],
                    computed[c]);
    }
    ck_assert_msg(strstr(top, "V.smem") && strstr(top, "V.threads") && strstr(top, "V.row_bytes"),
                  "%s: its layout block does not read V", kernels[k]);
  }
}
END_TEST

int main(void) {
  Suite *su = suite_create("variant");
  TCase *a = tcase_create("attention");
  tcase_add_test(a, fwd_sync_layout_block_and_grid);
  tcase_add_test(a, fwd_wgmma_unpadded_rows_aligned_tiles_and_slack);
  tcase_add_test(a, bwd_sync_regions_slice_and_key_tile_grid);
  tcase_add_test(a, bwd_wgmma_stages_dq_per_warp_unless_det);
  tcase_add_test(a, bwd_d256_splits_columns_over_two_ctas);
  tcase_add_test(a, ws_fwd_one_consumer_three_ctas_only_at_d64_n64);
  tcase_add_test(a, bwddq_layout_and_query_tile_grid);
  tcase_add_test(a, hash_bwd_stages_query_metadata_and_has_a_plan_entry);
  tcase_add_test(a, ws_bwd_descriptors_only_for_query_metadata_modes);
  tcase_add_test(a, ws_bwd_at_d64_leaves_a_dq_tile);
  tcase_add_test(a, describe_refuses_what_validation_refuses);
  suite_add_tcase(su, a);
  TCase *u = tcase_create("utility");
  tcase_add_test(u, bwd_pre_32_rows_of_8_threads_per_block);
  tcase_add_test(u, convert_8_elements_per_thread_capped_grid);
  tcase_add_test(u, hash_sort_block_and_histogram_budget);
  tcase_add_test(u, permute_tiles_of_4_vectors_per_thread);
  tcase_add_test(u, topk_histogram_and_blocks);
  suite_add_tcase(su, u);
  TCase *e = tcase_create("every");
  tcase_set_timeout(e, 120);
  tcase_add_test(e, every_preset_variant_fits_its_arch);
  tcase_add_test(e, templates_see_the_descriptor_as_V);
  tcase_add_test(e, attention_templates_compute_no_layout);
  suite_add_tcase(su, e);
  return tu_run_suite(su);
}
