/*
** variant.h -- the variant descriptor (gen/variant.c): every fact that follows
** from a kernel spec and that the generated kernel and the host both need,
** computed once, in C. The block (threads, min blocks per SM), the tile
** geometry (m16 tiles per warp, row bytes of the backend's layout, the
** backward's column slices and dQ units), the named shared-memory regions with
** their offsets and the total, the per-mode query metadata, the grid rule, the
** extra entry point (the bwd plan kernel) and the utility kernels' launch
** constants.
**
** Who reads it: spec validation and the defaults (gen/spec.c: the shared
** memory and register budgets), the generator (gen/generator.c hands it to the
** templates as the Lua table V, see there), and the runtime, which launches
** every kernel from it (struct sfa_kernel holds one: runtime/internal.h).
** Templates do not compute any of this again.
*/
#ifndef SFA_GEN_VARIANT_H
#define SFA_GEN_VARIANT_H

#include <stddef.h>
#include <stdint.h>

#include "sfa.h"

/* ------------------------------------------------------------ shared memory */

/* One region of a kernel's dynamic shared memory. */
typedef struct sfa__smem_region {
  const char *name; /* fwd: q k v; bwddq: q do k v; bwd: k v q do ds lse2 delta qmeta
                       dq_stage (the names of V.smem) */
  size_t offset;    /* bytes from the kernel's shared-memory base (aligned by the backend) */
  size_t size;      /* bytes; 0 where the variant does not use it (the offset is still set) */
  size_t align;     /* offset is a multiple of this */
} sfa__smem_region;

#define SFA__VARIANT_MAX_REGIONS 14 /* the bwd ws kernel at D 256 has 12; a variant that reaches
                                       14 may have lost one (add_region drops any past it:
                                       test_variant) */

/* ------------------------------------------------------------ grids */

/* How a kernel's grid follows from the problem (sfa__grid_size). */
typedef enum sfa__grid_rule {
  SFA__GRID_NONE = 0,
  SFA__GRID_QUERY_TILES,    /* (ceil(tq / tile), hq, batch): fwd, bwddq; one CTA per
                               query tile of one (batch, head) */
  SFA__GRID_KEY_TILES,      /* (ceil(tk / tile), hkv / nh * split, batch / nb): bwd; one
                               CTA per key tile and column slice of nb x nh (batch, kv
                               head) pairs */
  SFA__GRID_KEY_TILE_ITEMS, /* (ceil(batch * hq * ceil(tk / tile) / per_block), 1, 1): the
                               bwd plan; one item per (batch, query head, key tile) */
  SFA__GRID_DECODE,         /* (splits, hkv * ceil(hq / hkv * tq / tile), batch): decode;
                               one CTA per split of the keys, tile of (query head, new
                               token) rows of one kv head, and batch */
  SFA__GRID_ITEMS           /* (min(ceil(items / per_block), max_x), 1, 1): the utility
                               kernels; the caller counts the items (`item` says what
                               one is), a kernel strides over those past max_x CTAs */
} sfa__grid_rule;

/* Packed sequences (grid.varlen, the variants of SFA_FEAT_VARLEN): the rules
** QUERY_TILES, KEY_TILES and KEY_TILE_ITEMS count tiles over every sequence
** at once, without knowing any one length. With tile height T, sequence b of
** rows [cu[b], cu[b + 1]) (cu: cu_seqlens_q for query tiles, _k for key
** tiles) owns the tile slots [floor(cu[b] / T) + b, floor(cu[b + 1] / T) +
** b + 1): as many as it can have tiles, disjoint for different b, and
** floor(total / T) + B slots in all (sfa__grid_slots; batch = B, tq / tk =
** the totals). A CTA finds its sequence as the largest b with
** floor(cu[b] / T) + b <= slot (a binary search of cu), its tile as slot
** minus that, and leaves at once when the tile starts past the sequence's
** end: at most one idle slot per sequence. The grid is then (slots, hq, 1)
** and (slots, hkv / nh * split, 1) (nb must be 1), and the plan has hq *
** slots items. */
typedef struct sfa__grid {
  sfa__grid_rule rule;
  int varlen;       /* the packed-sequence form of QUERY_TILES, KEY_TILES, KEY_TILE_ITEMS */
  int tile;         /* QUERY_TILES: query rows per CTA; KEY_TILES, KEY_TILE_ITEMS: keys */
  int split;        /* KEY_TILES: CTAs per key tile (head_dim above 128: 2 column halves) */
  int per_block;    /* KEY_TILE_ITEMS, ITEMS: items per CTA */
  int64_t max_x;    /* ITEMS: most CTAs; 0 for no limit */
  const char *item; /* ITEMS: one item, e.g. "query row" */
} sfa__grid;

/* The problem sizes the rules read (a rule reads only its own). */
typedef struct sfa__grid_dims {
  int64_t batch, hq, hkv, tq, tk;
  int64_t nb, nh;   /* KEY_TILES: (batch, kv head) pairs per CTA; 0 counts as 1 */
  int64_t items;    /* ITEMS */
  int64_t splits;   /* DECODE: CTAs that split the keys of one row tile; 0 counts as 1 */
} sfa__grid_dims;

/* The tile slots of packed sequences (see sfa__grid): floor(total / tile) +
** batch. */
int64_t sfa__grid_slots(int64_t total, int tile, int64_t batch);

/* The grid of rule g for problem p into grid[0..2] (x, y, z). */
void sfa__grid_size(const sfa__grid *g, const sfa__grid_dims *p, unsigned grid[3]);

/* The work items of rule g for p: KEY_TILE_ITEMS batch * hq * ceil(tk / tile)
** (the plan's records; varlen: hq * the key tile slots), ITEMS p->items; 0
** for the other rules. */
int64_t sfa__grid_items(const sfa__grid *g, const sfa__grid_dims *p);

/* The name of a rule as V.grid.rule spells it ("query_tiles", ...), NULL for NONE. */
const char *sfa__grid_rule_name(sfa__grid_rule r);

/* ------------------------------------------------------------ entry points */

/* An extra entry point of a variant's module. */
typedef struct sfa__entry {
  const char *suffix;  /* its symbol is the variant's name followed by this */
  int warps, threads;  /* the block: threads = 32 * warps = its __launch_bounds__ */
  int min_blocks;      /* the __launch_bounds__ minimum blocks per SM, 0 for none */
  size_t smem_bytes;   /* dynamic shared memory per launch */
  sfa__grid grid;
} sfa__entry;

/* ------------------------------------------------------------ utility kernels */

/* The launch constants of the utility passes that kernel and host share; 0
** where the pass has none of them. */
typedef struct sfa__util_geom {
  int row_threads;     /* bwd_pre: threads per query row (a shuffle tree of 8) */
  int rows_per_block;  /* bwd_pre: query rows per CTA, threads / row_threads */
  int chunk_elems;     /* convert: elements per thread (one 16-byte store of 16-bit ones) */
  int unroll;          /* permute: row vectors in flight per thread */
  int tile_vectors;    /* permute: row vectors per tile, unroll * threads */
  int hist_bins;       /* topk: radix bins of one 8-bit pass */
  int hist_copies;     /* topk: copies of the histogram, one per lane */
  size_t hist_bytes;   /* topk: the histogram, bins * copies u32 at the start of the
                          dynamic shared memory (the row's keys follow when cached) */
  int small_threads;   /* topk: the block for rows of fewer than small_below keys */
  int small_below;
  size_t smem_max;     /* hash_sort: most dynamic shared memory of the per-warp histograms */
  int min_warp_items;  /* hash_sort: no more warps than one per this many tokens */
} sfa__util_geom;

/* ------------------------------------------------------------ the descriptor */

typedef struct sfa__variant {
  sfa_kernel_spec spec;
  int attention;        /* 1 for fwd, bwddq, bwd; 0 for a utility pass */
  int wgmma;            /* the wgmma backend (templates/wgmma.lt), else mma_sync */
  int ws;               /* the warp-specialized forward (templates/fwd_ws.lt, mma ws):
                           warpgroup 0 issues the tensor copies, the others compute */

  /* The block: threads = 32 * warps = the kernel's __launch_bounds__. */
  int warps, threads;
  int min_blocks;       /* __launch_bounds__ minimum blocks per SM, 0 for none */

  /* Tile geometry of an attention pass (0 for a utility pass). */
  int row_tiles;        /* m16 tiles per warp: of block_m (fwd, bwddq), of block_n (bwd) */
  int warpgroups;       /* warps / 4 */
  int mma_warps;        /* the warps that run the products: all, ws the consumers' */
  int row_bytes;        /* a shared row of head_dim elements in the backend's layout */
  int row_chunks;       /* 16-byte chunks per row of head_dim elements */
  int ds_row_bytes;     /* bwd: a row of the dS^T tile (block_m elements) */
  int cols;             /* bwd: columns of dK, dV and dQ one CTA makes: head_dim up to
                           128, else half */
  int nsplit;           /* bwd: CTAs per key tile, head_dim / cols */
  int dq_units;         /* bwd: m16 x n16 blocks of the CTA's dQ tile (block_m x cols) */
  int dq_units_per_warp;
  int dq_stage_warp;    /* bwd, wgmma, not det: bytes per warp that stage a dQ chunk */
  int dq_tma;           /* bwd ws at head dim 64 and 128: one consumer warpgroup per tile,
                           the two in turn, leaves the tile's dQ rows (block_m x head_dim
                           floats, made 64 columns at a time) in dq_stage as boxes of 32
                           columns, 128-byte swizzled, and a writer warp of the producer
                           adds them to the float workspace with the copy engine (the
                           tensor map tm_dq after the other four, boxes of 32 x block_m) */
  int dp_early;         /* bwd ws at head dim 64, and at 128 without softcap, ALiBi or the
                           window mode: dP^T = V dO^T is issued right behind S^T, before
                           P^T is made (else behind dV += P^T dO) */
  int lse_rows;         /* bwd: the floats of lse2 (and of delta) per stage: block_m, and 4
                           more in the ws kernel on packed sequences, whose 1-d bulk copies
                           start at the 16-byte aligned row at or below the tile's first */
  int qmeta_ints;       /* bwd: int32 of the mode's query metadata per query row, staged
                           with each query tile (hash: q_hash, q_idx; qk_drop: q_idx) */
  int acc_registers;    /* float accumulators per thread */
  int consumers;        /* ws: consumer warpgroups (64 query rows each) */
  int producer_regs;    /* ws: registers per thread after setmaxnreg, the producer */
  int consumer_regs;    /*     warpgroup's and each consumer's (their sum over the block
                           fits the cap that __launch_bounds__ sets at entry) */
  int box_cols;         /* ws: columns (elements) of a tensor copy's box, one 128-byte
                           swizzle atom; its rows are block_m (q) or block_n (k, v) */
  int keys_per_warp;    /* decode: keys of each block_n tile that one warp takes */
  size_t comb_offset;   /* decode: the warps' partial results after the last tile (comb:
                           O [warps][16][head_dim], then maxima and sums [warps][16]
                           floats), over the k and v regions */
  size_t comb_bytes;
  size_t comb_room;     /* decode: bytes of the k and v regions, >= comb_bytes */

  /* Dynamic shared memory per launch: the regions in order, then the slack that
  ** lets the backend round its base up to smem_base_align. A utility pass has
  ** none here (its launch sizes it from util). */
  size_t smem_bytes;
  size_t smem_slack;
  size_t smem_base_align; /* 0: the base is used as the driver gives it */
  sfa__smem_region regions[SFA__VARIANT_MAX_REGIONS];
  int nregions;

  sfa__grid grid;

  /* The bwd plan kernel (sfa__bwd_plan): has_plan 1, its entry, and the int32
  ** it writes per key tile (SFA__BWD_PLAN_INTS). */
  int has_plan;
  sfa__entry plan;
  int plan_ints;

  sfa__util_geom util;
} sfa__variant;

/* Fills *v for spec after checking it as sfa_spec_validate does (a spec that
** does not validate is that error, with its message, and *v is zeroed). */
sfa_status sfa__variant_describe(const sfa_kernel_spec *spec, sfa__variant *v, char *err,
                                 size_t errlen);

/* Fills *v for a spec whose fields lie in their domains
** (sfa__spec_check_domain) without the other rules and the budgets: for
** spec.c, which checks those budgets against it and shrinks default tiles
** until they fit. */
void sfa__variant_fill(const sfa_kernel_spec *spec, sfa__variant *v);

/* The region called name, or NULL. */
const sfa__smem_region *sfa__variant_region(const sfa__variant *v, const char *name);

#endif
