/*
** variant.c -- the variant descriptor (gen/variant.h): a kernel spec's block,
** tile geometry, shared-memory layout, grid rule, extra entry points and
** utility-kernel constants, computed here only. The templates read it as the
** table V (gen/generator.c), spec.c checks the budgets against it and the
** runtime launches from it.
**
** Shared memory of an attention pass, regions in this order from the base
** (a row holds head_dim 16-bit elements in the backend's layout: mma_sync
** pads it by 16 bytes, wgmma does not; stages = num_stages buffers):
**   fwd    q (block_m rows), k and v (stages x block_n rows each);
**   bwddq  q and do (block_m rows each), k and v (stages x block_n rows each);
**   bwd    k and v (block_n rows each), q and do (stages x block_m rows each),
**          ds (the dS^T tile: block_n rows of block_m elements, padded alike),
**          lse2 and delta (stages x lse_rows floats each), qmeta (stages x
**          qmeta_ints x block_m int32: the mode's query metadata) and
**          dq_stage (wgmma without det: 8 x 64 floats per warp);
**   fwd ws q, k and v as fwd, then bar: the mbarriers (8 bytes each) of the
**          stages' K and V arrivals and releases, and Q's arrival;
**   bwd ws as bwd with two ds tiles and dq_stage (dq_tma, head dims 64, 128:
**          the tile's dQ rows, block_m x head_dim floats, 1024-aligned,
**          right after do; else the consumer warps' staging), then bar: K
**          and V's arrival, then per stage the arrivals of Q (with lse2) and
**          dO (with delta) and the release, then (dq_tma) dQ's arrival and
**          release; then desc (per stage its query tile's descriptor, with
**          query metadata or a plan; else empty) and dq_desc (dq_tma: the
**          row and head of the staged dQ rows, two int32). At head dim 256
**          one ds tile and pt (P^T) after it.
** Each region starts at a multiple of its alignment (a tile: 16 bytes, wgmma
** 1024, the swizzle's 8-row atom; the float and int arrays 16). wgmma rounds
** its base up to 1024, so 1024 bytes of slack follow the regions.
*/
#include <string.h>

#include "gen/gen_internal.h"
#include "gen/mode.h"
#include "gen/variant.h"

/* ------------------------------------------------------------ backends */

/* What the host knows of a mainloop backend's layout (templates/backend.lt):
** the bytes a shared row of 16-bit elements gets beyond its data, the
** alignment of a tile and the alignment the backend rounds the base up to.
** A new backend adds a row here. */
typedef struct backend_layout {
  int row_pad;       /* mma_sync: 16 bytes, which makes every ldmatrix conflict-free */
  size_t tile_align; /* cp.async writes 16 bytes; wgmma's swizzle repeats every 1024 */
  size_t base_align;
} backend_layout;

static const backend_layout backend_sync = {16, 16, 0};
static const backend_layout backend_wgmma = {0, 1024, 1024};

/* ------------------------------------------------------------ utility passes */

/* A utility pass's constants (sfa__util_geom) and grid; the block is its
** spec's num_warps (gen/spec.c's util table). */
typedef struct util_rule {
  sfa_pass pass;
  sfa__util_geom geom; /* rows_per_block and tile_vectors follow from the block */
  int per_block;       /* items per CTA; 0: rows_per_block (bwd_pre), threads (convert) */
  int64_t max_x;
  const char *item;
} util_rule;

static const util_rule util_rules[] = {
  {SFA_PASS_BWD_PRE, {.row_threads = 8}, 0, 0, "query row (of B * Hq * tqp)"},
  {SFA_PASS_CONVERT, {.chunk_elems = 8}, 0, (int64_t)1 << 20,
   "chunk of chunk_elems elements of a row"},
  {SFA_PASS_HASH_SORT, {.smem_max = 48 * 1024, .min_warp_items = 64}, 1, 0,
   "(batch, head) row"},
  {SFA_PASS_PERMUTE, {.unroll = 4}, 1, (int64_t)1 << 24, "tile of rows"},
  {SFA_PASS_TOPK,
   {.hist_bins = 256, .hist_copies = 32, .small_threads = 256, .small_below = 4096}, 1,
   0x7fffffff, "query row (of B * Hb * Tq)"},
  /* a thread per 16 bytes of a row, a group of up to 32 per row (the host
  ** picks the group size); grid-stride past max_x CTAs */
  {SFA_PASS_MERGE, {0}, 0, (int64_t)1 << 20, "thread (a group of 1 to 32 per row)"},
  {SFA_PASS_KV_APPEND, {0}, 0, (int64_t)1 << 20, "16-byte chunk of a new row"},
};

static void fill_util(const sfa_kernel_spec *s, sfa__variant *v) {
  for (size_t i = 0; i < sizeof util_rules / sizeof util_rules[0]; i++) {
    const util_rule *u = &util_rules[i];
    if (u->pass != s->pass) continue;
    v->util = u->geom;
    if (u->geom.row_threads) v->util.rows_per_block = v->threads / u->geom.row_threads;
    if (u->geom.unroll) v->util.tile_vectors = u->geom.unroll * v->threads;
    v->util.hist_bytes = (size_t)u->geom.hist_bins * (size_t)u->geom.hist_copies * 4;
    v->grid.rule = SFA__GRID_ITEMS;
    v->grid.per_block = u->per_block ? u->per_block
                        : v->util.rows_per_block ? v->util.rows_per_block
                                                 : v->threads;
    v->grid.max_x = u->max_x;
    v->grid.item = u->item;
    return;
  }
}

/* ------------------------------------------------------------ attention passes */

static size_t round_up(size_t x, size_t a) { return a > 1 ? (x + a - 1) / a * a : x; }

/* Appends region name of size bytes at the next multiple of align. */
static void add_region(sfa__variant *v, const char *name, size_t size, size_t align) {
  if (v->nregions >= SFA__VARIANT_MAX_REGIONS) return; /* never: test_variant checks the room */
  const sfa__smem_region *last = v->nregions ? &v->regions[v->nregions - 1] : NULL;
  size_t at = last ? last->offset + last->size : 0;
  sfa__smem_region *r = &v->regions[v->nregions++];
  r->name = name;
  r->offset = round_up(at, align);
  r->size = size;
  r->align = align;
}

/* A warp-specialized kernel (v->ws, min_blocks set): one m16 tile per
** consumer warp, the warpgroups after the producer's the consumers, and
** setmaxnreg's split: the producer asks for producer_regs, the consumers
** share what the cap at entry (65536 registers over the CTAs' threads, in
** steps of 8) leaves, at most 256 each, in steps of 8, and the producer gets
** what their steps leave over (before, up to 8 registers a producer thread
** went to no one, and 19 of the 33 ws backwards at D 64 and 128 spilled,
** most in the producer; session 36); tensor copies of 64-column boxes. */
static void fill_ws(sfa__variant *v, int producer_regs) {
  v->row_tiles = 1;
  v->consumers = v->warpgroups - 1;
  const int cap = 65536 / (v->threads * v->min_blocks) / 8 * 8;
  v->consumer_regs = (cap * v->threads - 128 * producer_regs) / (128 * v->consumers) / 8 * 8;
  if (v->consumer_regs > 256) v->consumer_regs = 256;
  /* cap * warpgroups is a multiple of 8, and so is what the consumers leave;
  ** never above 256: unclamped, the consumers leave the ask plus less than 8
  ** per consumer; clamped (one consumer, cap * 2 <= 512), at most 512 - 256 */
  v->producer_regs = cap * v->warpgroups - v->consumers * v->consumer_regs;
  v->box_cols = 64;
}

static void fill_attention(const sfa_kernel_spec *s, sfa__variant *v) {
  const backend_layout *be = v->wgmma ? &backend_wgmma : &backend_sync;
  const size_t m = (size_t)s->block_m, n = (size_t)s->block_n;
  const size_t st = (size_t)s->num_stages, ta = be->tile_align;
  const int bwd = s->pass == SFA_PASS_BWD;
  const int det = (s->flags & SFA_FEAT_DETERMINISTIC) != 0;
  v->grid.varlen = (s->flags & SFA_FEAT_VARLEN) != 0;

  /* The rows the warps split: queries, keys in bwd. */
  v->row_tiles = (bwd ? s->block_n : s->block_m) / (16 * s->num_warps);
  v->warpgroups = s->num_warps / 4;
  v->mma_warps = v->ws ? s->num_warps - 4 : s->num_warps; /* ws: not the producer's */
  v->row_bytes = 2 * s->head_dim + be->row_pad;
  v->row_chunks = s->head_dim / 8;
  v->min_blocks = (s->pass == SFA_PASS_FWD || s->pass == SFA_PASS_DECODE) && v->threads <= 128 ? 2 : 1;
  const size_t rs = (size_t)v->row_bytes;

  switch (s->pass) {
  case SFA_PASS_FWD:
    add_region(v, "q", m * rs, ta);
    add_region(v, "k", st * n * rs, ta);
    add_region(v, "v", st * n * rs, ta);
    if (v->ws) {
      /* full_k, full_v, empty per stage, then q_full */
      add_region(v, "bar", (3 * st + 1) * 8, 8);
      /* One consumer: two CTAs per SM by registers (the cap at entry is 128),
      ** three at head dim 64 with 64-key tiles (cap 80: ptxas holds the whole
      ** kernel to the cap, setmaxnreg or not, and S and O of 64 x 64 fit it
      ** without spills, where 128-key tiles need 90 for the S product);
      ** two: one CTA, cap 168; three: one CTA, cap 128. The producer keeps
      ** 24, 40 or 32 registers (what the consumers' steps of 8 leave: 232
      ** registers each with two consumers, 160 with three); hash's producer,
      ** whose mode_setup searches the bucket ranges, keeps 32 with one
      ** consumer (at 24 it spilled 12-24 bytes at D 128; the consumer's 224
      ** are still above the 128 that ptxas holds the kernel to; session 36) */
      const int consumers = v->warpgroups - 1;
      v->min_blocks = consumers == 1 ? (s->head_dim <= 64 && s->block_n <= 64 ? 3 : 2) : 1;
      fill_ws(v, consumers == 1 ? (s->mode == SFA_MODE_HASH ? 32 : 24)
                 : consumers == 2 ? 40 : 32);
    }
    /* O and S of the MT row tiles */
    v->acc_registers = v->row_tiles * (s->head_dim / 8) * 4 + v->row_tiles * (s->block_n / 8) * 4;
    v->grid.rule = SFA__GRID_QUERY_TILES;
    v->grid.tile = s->block_m;
    break;
  case SFA_PASS_DECODE:
    /* The warps share the 16 query rows and split every key tile. After the
    ** last tile the K and V buffers hold the warps' partial results, which
    ** the CTA combines: comb (the warps' O, then their row maxima and sums,
    ** in floats) aliases the k and v regions. */
    v->row_tiles = 1;
    v->keys_per_warp = s->block_n / s->num_warps;
    add_region(v, "q", m * rs, ta);
    add_region(v, "k", st * n * rs, ta);
    add_region(v, "v", st * n * rs, ta);
    add_region(v, "kpos", st * n * 4, 16); /* per key row: its position, -1 if not loaded */
    /* per key row: the mode's metadata (hash: its bucket), int32 each */
    if (sfa__mode_find(s->mode)->decode_key_ints)
      add_region(v, "kmeta", st * n * 4 * (size_t)sfa__mode_find(s->mode)->decode_key_ints, 16);
    v->comb_offset = v->regions[1].offset;
    v->comb_bytes = (size_t)s->num_warps * m * ((size_t)s->head_dim + 2) * 4;
    v->comb_room = v->regions[2].offset + v->regions[2].size - v->regions[1].offset;
    /* O and S of the one row tile */
    v->acc_registers = (s->head_dim / 8) * 4 + (v->keys_per_warp / 8) * 4;
    v->grid.rule = SFA__GRID_DECODE;
    v->grid.tile = s->block_m;
    break;
  case SFA_PASS_BWD_DQ:
    add_region(v, "q", m * rs, ta);
    add_region(v, "do", m * rs, ta);
    add_region(v, "k", st * n * rs, ta);
    add_region(v, "v", st * n * rs, ta);
    /* dQ, S and dP */
    v->acc_registers = v->row_tiles * (s->head_dim / 2 + s->block_n);
    v->grid.rule = SFA__GRID_QUERY_TILES;
    v->grid.tile = s->block_m;
    break;
  default: /* SFA_PASS_BWD */
    /* above 128 columns two CTAs share a key tile, a column half each,
    ** except in the ws kernel, whose consumers split the columns (one CTA) */
    v->cols = s->head_dim > 128 && !v->ws ? s->head_dim / 2 : s->head_dim;
    v->nsplit = s->head_dim / v->cols;
    v->dq_units = (s->block_m / 16) * (v->cols / 16);
    v->dq_units_per_warp = v->dq_units / v->mma_warps;
    v->ds_row_bytes = 2 * s->block_m + be->row_pad;
    /* int32 of query metadata per query row that the kernel stages with each
    ** query tile for the mode's mask (the mode table; bwd_query_meta of
    ** mode_<mode>.lt) */
    v->qmeta_ints = sfa__mode_find(s->mode)->qmeta_ints;
    /* wgmma's dQ product leaves the accumulators in its own fragments: each
    ** warp stages 8 x 64 floats of a chunk at a time and adds them with
    ** float atomics; the ws kernel at head dim 128 stages the whole tile
    ** for the copy engine's reduce-add instead (dq_tma: measured 5-7%
    ** faster in dense, window and hash, bench/NOTES.md session 28); at 64
    ** too. One consumer warpgroup per tile makes the whole dQ tile, the two
    ** in turn (at 64 5% faster in dense, 2% in qk_drop, session 32; at 128
    ** 9% in dense T 16k, 4-5% in hash and qk_drop, session 34), 64 columns
    ** at a time (at 128 one 64 x 128 product made ptxas serialize every
    ** wgmma, 10-18% slower, session 33) */
    v->dq_tma = v->ws && !det && s->head_dim <= 128;
    v->dq_stage_warp = v->wgmma && !det && !v->dq_tma ? 8 * 64 * 4 : 0;
    add_region(v, "k", n * rs, ta);
    add_region(v, "v", n * rs, ta);
    add_region(v, "q", st * m * rs, ta);
    add_region(v, "do", st * m * rs, ta);
    /* dq_tma: the tile's dQ rows, 1024-aligned for the swizzle; here, after
    ** the 1024-aligned tiles, they need no padding (D 128: three stages fit
    ** in 227 KB only so) */
    if (v->dq_tma) add_region(v, "dq_stage", m * (size_t)s->head_dim * 4, 1024);
    /* ws: two dS^T tiles, so that one consumer barrier per tile suffices;
    ** ws at D 256 (templates/bwd_ws256.lt): one, and one of P^T, which the
    ** consumers share */
    const int ws256 = v->ws && s->head_dim == 256;
    add_region(v, "ds", (v->ws && !ws256 ? 2 : 1) * n * (size_t)v->ds_row_bytes, ta);
    if (ws256) add_region(v, "pt", n * (size_t)v->ds_row_bytes, ta);
    /* ws on packed sequences: a sequence's rows start at any row, and the
    ** 1-d bulk copies need 16-byte aligned sources */
    v->lse_rows = m + (v->ws && v->grid.varlen ? 4 : 0);
    add_region(v, "lse2", st * (size_t)v->lse_rows * 4, 16);
    add_region(v, "delta", st * (size_t)v->lse_rows * 4, 16);
    add_region(v, "qmeta", st * (size_t)v->qmeta_ints * m * 4, 16);
    if (!v->dq_tma)
      add_region(v, "dq_stage", (size_t)v->mma_warps * (size_t)v->dq_stage_warp, 16);
    if (v->ws) {
      /* kv_full, then q_full, do_full and empty per stage, then dq_full
      ** and dq_empty (dq_tma) */
      add_region(v, "bar", (3 * st + 1 + (v->dq_tma ? 2 : 0)) * 8, 8);
      /* modes with query metadata or a plan: the producer alone walks the
      ** tiles and names each stage's in a descriptor (templates/bwd_ws.lt;
      ** two int32: index, head * 4 + state) */
      const int desc = v->qmeta_ints > 0 || sfa__bwd_plan(s);
      add_region(v, "desc", desc ? st * 8 : 0, 8);
      /* dP^T issued right behind S^T, so that it runs while the consumers
      ** make P^T (bwd_ws.lt): measured 1-5% faster at head dim 128 in every
      ** mode and at 64 in qk_drop and hash (session 30); at 64 in dense and
      ** window 2-3% slower then, 1-3% faster since one consumer per tile
      ** makes the whole dQ (dq_tma; bench/NOTES.md, session 33). Not at
      ** 128 with softcap or ALiBi: their per-score registers beside dP^T's
      ** made ptxas serialize every wgmma of the kernel (C7512, which
      ** tests/test_compile_variants.c now fails). Nor in the window mode at
      ** 128, where dP^T early spilled 44-56 bytes and late measured 1.5-2%
      ** faster (session 35, H100, T 4096 and 16384) */
      v->dp_early = !ws256 &&
                    !(s->head_dim == 128 && ((s->flags & (SFA_FEAT_SOFTCAP | SFA_FEAT_ALIBI)) ||
                                             s->mode == SFA_MODE_WINDOW));
      add_region(v, "dq_desc", v->dq_tma ? 8 : 0, 8);
      /* one CTA per SM: the cap at entry is 168 registers; the producer
      ** asks for 24 and the two consumers get 240 each (FlashAttention 3's
      ** split), or with descriptors 40 and 232 (with 24 the producer's walk
      ** spills); the dQ writer's branch (dq_tma) asks 8 more (ptxas: 16-36
      ** bytes of spills without them); the consumers' steps of 8 then leave
      ** the producer 40 (dense, window) or 56 (descriptors) */
      v->min_blocks = 1;
      fill_ws(v, (desc ? 40 : 24) + (v->dq_tma ? 8 : 0));
    }
    /* dK and dV of the column slice, S^T and dP^T (ws at D 256: a consumer's
    ** half of the columns and of the queries) */
    v->acc_registers = ws256 ? v->row_tiles * (v->cols + s->block_m) / v->consumers
                             : v->row_tiles * (v->cols + s->block_m);
    v->grid.rule = SFA__GRID_KEY_TILES;
    v->grid.tile = s->block_n;
    v->grid.split = v->nsplit;
    if (sfa__bwd_plan(s)) {
      /* one warp per (batch, query head, key tile), 8 warps per CTA */
      v->has_plan = 1;
      v->plan_ints = SFA__BWD_PLAN_INTS;
      v->plan.suffix = SFA__PLAN_SUFFIX;
      v->plan.warps = 8;
      v->plan.threads = 32 * v->plan.warps;
      v->plan.grid.rule = SFA__GRID_KEY_TILE_ITEMS;
      v->plan.grid.varlen = v->grid.varlen;
      v->plan.grid.tile = s->block_n;
      v->plan.grid.per_block = v->plan.warps;
    }
    break;
  }
  const sfa__smem_region *last = &v->regions[v->nregions - 1];
  v->smem_base_align = be->base_align;
  v->smem_slack = be->base_align;
  v->smem_bytes = last->offset + last->size + v->smem_slack;
}

/* ------------------------------------------------------------ entry points */

void sfa__variant_fill(const sfa_kernel_spec *spec, sfa__variant *v) {
  memset(v, 0, sizeof *v);
  v->spec = *spec;
  v->attention = !sfa__pass_is_util(spec->pass);
  v->wgmma = sfa__spec_is_wgmma(spec);
  v->ws = sfa__spec_is_ws(spec);
  v->warps = spec->num_warps;
  v->threads = 32 * spec->num_warps;
  if (v->attention)
    fill_attention(spec, v);
  else
    fill_util(spec, v);
}

sfa_status sfa__variant_describe(const sfa_kernel_spec *spec, sfa__variant *v, char *err,
                                 size_t errlen) {
  if (!v) return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT, "variant: NULL");
  memset(v, 0, sizeof *v);
  sfa_status st = sfa_spec_validate(spec, err, errlen);
  if (st != SFA_OK) return st;
  sfa__variant_fill(spec, v);
  return SFA_OK;
}

const sfa__smem_region *sfa__variant_region(const sfa__variant *v, const char *name) {
  for (int i = 0; v && name && i < v->nregions; i++)
    if (strcmp(v->regions[i].name, name) == 0) return &v->regions[i];
  return NULL;
}

/* ------------------------------------------------------------ grids */

static int64_t ceil_div(int64_t a, int64_t b) { return b > 0 ? (a + b - 1) / b : 0; }

const char *sfa__grid_rule_name(sfa__grid_rule r) {
  switch (r) {
  case SFA__GRID_QUERY_TILES: return "query_tiles";
  case SFA__GRID_KEY_TILES: return "key_tiles";
  case SFA__GRID_KEY_TILE_ITEMS: return "key_tile_items";
  case SFA__GRID_ITEMS: return "items";
  case SFA__GRID_DECODE: return "decode";
  default: return NULL;
  }
}

int64_t sfa__grid_slots(int64_t total, int tile, int64_t batch) {
  return tile > 0 ? total / tile + batch : 0;
}

int64_t sfa__grid_items(const sfa__grid *g, const sfa__grid_dims *p) {
  switch (g->rule) {
  case SFA__GRID_KEY_TILE_ITEMS:
    if (g->varlen) return p->hq * sfa__grid_slots(p->tk, g->tile, p->batch);
    return p->batch * p->hq * ceil_div(p->tk, g->tile);
  case SFA__GRID_ITEMS: return p->items;
  default: return 0;
  }
}

void sfa__grid_size(const sfa__grid *g, const sfa__grid_dims *p, unsigned grid[3]) {
  int64_t x = 0, y = 1, z = 1;
  const int64_t nb = p->nb > 0 ? p->nb : 1, nh = p->nh > 0 ? p->nh : 1;
  switch (g->rule) {
  case SFA__GRID_QUERY_TILES:
    x = g->varlen ? sfa__grid_slots(p->tq, g->tile, p->batch) : ceil_div(p->tq, g->tile);
    y = p->hq, z = g->varlen ? 1 : p->batch;
    break;
  case SFA__GRID_KEY_TILES:
    x = g->varlen ? sfa__grid_slots(p->tk, g->tile, p->batch) : ceil_div(p->tk, g->tile);
    y = p->hkv / nh * g->split, z = g->varlen ? 1 : p->batch / nb;
    break;
  case SFA__GRID_DECODE:
    x = p->splits > 0 ? p->splits : 1, y = p->hkv * ceil_div(p->hq / (p->hkv ? p->hkv : 1) * p->tq, g->tile), z = p->batch;
    break;
  case SFA__GRID_KEY_TILE_ITEMS:
  case SFA__GRID_ITEMS:
    x = ceil_div(sfa__grid_items(g, p), g->per_block);
    if (g->max_x > 0 && x > g->max_x) x = g->max_x;
    break;
  default:
    y = z = 0;
    break;
  }
  grid[0] = (unsigned)x, grid[1] = (unsigned)y, grid[2] = (unsigned)z;
}
