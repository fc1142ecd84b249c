/*
** kernel_abi_fields.h -- the one list of the parameter blocks that kernels
** take by value, and of the constants that host and kernels share. Everything
** else is expanded from here:
**  - the C structs: runtime/kernel_abi.h (sfa_fwd_args, sfa_bwd_args) and
**    runtime/util.h (the utility kernels' blocks), with SFA_ABI_DEFINE;
**  - the table ABI that gen/generator.c hands every template (gen/abi.c), from
**    which templates/abi.lt emits each struct into the generated CUDA with a
**    static_assert on every field's offset and on the size and alignment.
** So a field is added, removed or moved here, once, and both sides follow.
**
** A block is a macro LIST(F, X) that calls F(X, type, field, doc) once per
** field, in memory order. type is one of
**   u64  uint64_t  (device pointers)      i64  int64_t
**   i32  int32_t                          f32  float
** doc is a short comment; "" continues the comment of the field before it
** (abi.lt writes such fields on that field's line when their type is the
** same). Order the fields so that none needs padding: SFA_ABI_DEFINE asserts
** that the size is the sum of the field sizes, which makes the layout the same
** for every compiler that agrees on the sizes of the four types.
*/
#ifndef SFA_KERNEL_ABI_FIELDS_H
#define SFA_KERNEL_ABI_FIELDS_H

#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------ the attention kernels */

/* The tail of sfa_fwd_args and sfa_bwd_args that only the varlen variants
** (SFA_FEAT_VARLEN) declare (templates/abi.lt leaves it out of the others,
** which therefore stay as they were before it). The launch passes the whole C
** struct either way: the driver copies as many bytes as the kernel declares.
** With it, batch is the number of sequences B, tq and tk the totals (the
** packed tensors' time extents) and every batch stride 0; the kernel takes
** its sequence's lengths and row offsets from these arrays. */
#define SFA_ABI_VARLEN_ARGS(F, X)                                               \
  F(X, u64, cu_q, "varlen: int32 [B + 1] query and key row prefix sums")        \
  F(X, u64, cu_k, "")

/* The tail after it that only the varlen variants with a bias or a mask
** declare (so the other varlen variants stay as they were before it): the
** columns Kmax of the packed bias / mask [Hb, total_q|1, Kmax] (the smaller
** of the two when both are given). A key at or past it is masked: the host
** cannot check that every sequence's keys fit without reading cu_seqlens. */
#define SFA_ABI_VARLEN_COLS_ARGS(F, X)                                          \
  F(X, i32, kmax, "varlen bias / mask: their columns; keys >= kmax are masked") \
  F(X, i32, pad2_, "to a multiple of 8 bytes")

/* The end of the fwd and bwd blocks: the score's constants (scale, softcap),
** then the packed sequences' list and their bias / mask columns. */
#define SFA_ABI_SCORE_TAIL(F, X)                                                \
  F(X, f32, scale, "softmax scale, and scale * log2(e)")                        \
  F(X, f32, scale_log2, "")                                                     \
  F(X, f32, softcap, "score cap c (0 = off) and 1 / c")                         \
  F(X, f32, softcap_inv, "")                                                    \
  F(X, i32, pad_, "to a multiple of 8 bytes")                                   \
  SFA_ABI_VARLEN_ARGS(F, X)                                                     \
  SFA_ABI_VARLEN_COLS_ARGS(F, X)

/* Pass fwd. */
#define SFA_ABI_FWD_ARGS(F, X)                                                  \
  F(X, u64, q, "device pointers; lse may be 0")                                 \
  F(X, u64, k, "")                                                              \
  F(X, u64, v, "")                                                              \
  F(X, u64, o, "")                                                              \
  F(X, u64, lse, "")                                                            \
  F(X, u64, q_idx, "int32 mode arrays, 0 if unused")                            \
  F(X, u64, k_idx, "")                                                          \
  F(X, u64, q_hash, "")                                                         \
  F(X, u64, k_hash, "")                                                         \
  F(X, u64, bias, "window mode, 0 if unused")                                   \
  F(X, u64, mask, "")                                                           \
  F(X, u64, alibi, "float32 ALiBi slopes [B|1][Hq], 0 if unused")               \
  F(X, i64, q_sb, "element strides of q: batch, head, time")                    \
  F(X, i64, q_sh, "")                                                           \
  F(X, i64, q_st, "")                                                           \
  F(X, i64, k_sb, "of k")                                                       \
  F(X, i64, k_sh, "")                                                           \
  F(X, i64, k_st, "")                                                           \
  F(X, i64, v_sb, "of v")                                                       \
  F(X, i64, v_sh, "")                                                           \
  F(X, i64, v_st, "")                                                           \
  F(X, i64, o_sb, "of o")                                                       \
  F(X, i64, o_sh, "")                                                           \
  F(X, i64, o_st, "")                                                           \
  F(X, i64, lse_sb, "lse is contiguous along time")                             \
  F(X, i64, lse_sh, "")                                                         \
  F(X, i64, qi_sb, "q_idx / q_hash, contiguous along time")                     \
  F(X, i64, qi_sh, "")                                                          \
  F(X, i64, ki_sb, "k_idx / k_hash, contiguous along time")                     \
  F(X, i64, ki_sh, "")                                                          \
  F(X, i64, bias_sb, "0 where broadcast")                                       \
  F(X, i64, bias_sh, "")                                                        \
  F(X, i64, bias_st, "")                                                        \
  F(X, i64, mask_sb, "0 where broadcast")                                       \
  F(X, i64, mask_sh, "")                                                        \
  F(X, i64, mask_st, "")                                                        \
  F(X, i64, alibi_sb, "batch stride of the slopes (0: [Hq])")                   \
  F(X, i32, batch, "sizes")                                                     \
  F(X, i32, hq, "")                                                             \
  F(X, i32, hkv, "")                                                            \
  F(X, i32, tq, "")                                                             \
  F(X, i32, tk, "")                                                             \
  F(X, i32, bias_hdiv, "query heads per bias/mask head")                        \
  F(X, i32, mask_hdiv, "")                                                      \
  F(X, i32, window_left, "-1 = unbounded")                                      \
  F(X, i32, window_right, "")                                                   \
  SFA_ABI_SCORE_TAIL(F, X)

/* The KV cache of passes decode and kv_append (sfa_kv_cache), first in both
** blocks: k and v contiguous [B, Hkv, capacity, D] (k_sb the batch stride) or
** paged [pages, page_size, Hkv, D] (k_sb the page stride, page_size > 0; the
** page table's rows pt_sb apart). runtime/decode.c fills it for both. */
#define SFA_ABI_KV_CACHE_ARGS(F, X)                                             \
  F(X, u64, k, "device pointers; page_table, seqused may be 0")                 \
  F(X, u64, v, "")                                                              \
  F(X, u64, page_table, "int32 [B][max_pages]")                                 \
  F(X, u64, seqused, "int32 [B]")                                               \
  F(X, i64, k_sb, "element strides of k: batch (page when paged), head, time")  \
  F(X, i64, k_sh, "")                                                           \
  F(X, i64, k_st, "")                                                           \
  F(X, i64, v_sb, "of v")                                                       \
  F(X, i64, v_sh, "")                                                           \
  F(X, i64, v_st, "")                                                           \
  F(X, i64, pt_sb, "the page table's row stride")                               \
  F(X, i32, capacity, "positions per sequence the cache holds")                 \
  F(X, i32, page_size, "0: contiguous")                                         \
  F(X, i32, num_pages, "")                                                      \
  F(X, i32, hkv, "kv heads")                                                   \
  F(X, u64, k_hash, "mode hash: int32 bucket per key, k's layout minus D")     \
  F(X, i64, kh_sb, "element strides of k_hash: batch (page), head, time")      \
  F(X, i64, kh_sh, "")                                                          \
  F(X, i64, kh_st, "")

/* Pass kv_append (sfa_kv_append): new rows [B, Hkv, tn, D] into the cache. */
#define SFA_ABI_KV_APPEND_ARGS(F, X)                                            \
  SFA_ABI_KV_CACHE_ARGS(F, X)                                                   \
  F(X, u64, k_new, "the new rows")                                              \
  F(X, u64, v_new, "")                                                          \
  F(X, i64, kn_sb, "element strides of k_new: batch, head, token")             \
  F(X, i64, kn_sh, "")                                                          \
  F(X, i64, kn_st, "")                                                          \
  F(X, i64, vn_sb, "of v_new")                                                  \
  F(X, i64, vn_sh, "")                                                          \
  F(X, i64, vn_st, "")                                                          \
  F(X, i64, chunks, "B * hkv * tn * row_chunks: the work items")                \
  F(X, i32, tn, "new tokens per sequence")                                      \
  F(X, i32, row_chunks, "16-byte chunks per row")                               \
  F(X, u64, k_hash_new, "int32 [B][Hkv][tn] buckets into k_hash, or 0")        \
  F(X, i64, khn_sb, "element strides of k_hash_new: batch, head")              \
  F(X, i64, khn_sh, "")

/* Pass decode (sfa_decode). o_part / lse_part: float workspaces [splits * B]
** [Hq][tn][D] and [splits * B][Hq][tn] when splits > 1, and sem: int32
** [B][Hkv * row_tiles] counters of the splits done, zero at the launch (the
** CTA of a tile's last split merges the partials into o and lse and sets the
** counter back to zero); else all 0 and every CTA writes its o and lse. */
#define SFA_ABI_DEC_ARGS(F, X)                                                  \
  SFA_ABI_KV_CACHE_ARGS(F, X)                                                   \
  F(X, u64, q, "device pointers; lse may be 0")                                 \
  F(X, u64, o, "")                                                              \
  F(X, u64, lse, "")                                                            \
  F(X, u64, o_part, "float workspaces, splits > 1")                             \
  F(X, u64, lse_part, "")                                                       \
  F(X, u64, sem, "int32 counters, one per row tile")                            \
  F(X, u64, kv_idx, "gather: int32 [B][Hkv][kv_k] positions (strides ki_*)")    \
  F(X, i64, q_sb, "element strides of q: batch, head, time")                    \
  F(X, i64, q_sh, "")                                                           \
  F(X, i64, q_st, "")                                                           \
  F(X, i64, o_sb, "of o")                                                       \
  F(X, i64, o_sh, "")                                                           \
  F(X, i64, o_st, "")                                                           \
  F(X, i64, lse_sb, "lse is contiguous along time")                             \
  F(X, i64, lse_sh, "")                                                         \
  F(X, i64, ki_sb, "of kv_idx: batch, head")                                    \
  F(X, i64, ki_sh, "")                                                          \
  F(X, i32, batch, "sizes")                                                     \
  F(X, i32, hq, "")                                                             \
  F(X, i32, tn, "new tokens per sequence, 1..16")                               \
  F(X, i32, row_tiles, "16-row tiles per kv head: ceil(hq / hkv * tn / 16)")    \
  F(X, i32, splits, "CTAs per row tile that split the keys")                    \
  F(X, i32, kv_k, "gather: positions per (batch, kv head)")                     \
  F(X, i32, window_left, "-1 = unbounded")                                      \
  F(X, i32, window_right, "")                                                   \
  F(X, f32, scale, "softmax scale")                                             \
  F(X, f32, scale_log2, "scale * log2(e)")                                      \
  F(X, u64, q_hash, "mode hash: int32 [B][Hq][tn] buckets (strides qh_*)")     \
  F(X, i64, qh_sb, "of q_hash: batch, head")                                   \
  F(X, i64, qh_sh, "")

/* Passes bwd and bwddq. lse2 and delta are float workspaces of B * Hq rows of
** tqp floats (tqp = Tq rounded up to 128): lse * log2(e) (+inf for rows that
** see no key and for the padding) and rowsum(dout * o) (0 in the padding). */
#define SFA_ABI_BWD_ARGS(F, X)                                                  \
  F(X, u64, q, "device pointers")                                               \
  F(X, u64, k, "")                                                              \
  F(X, u64, v, "")                                                              \
  F(X, u64, dout, "")                                                           \
  F(X, u64, lse2, "float workspaces [B * Hq][tqp]")                             \
  F(X, u64, delta, "")                                                          \
  F(X, u64, dq, "bwd: float [B * Hq][tqp][D] accumulated by atomic adds (0 "    \
                "with det); bwddq: the dq output (q's dtype, strides dq_*)")    \
  F(X, u64, dk, "bwd only")                                                     \
  F(X, u64, dv, "")                                                             \
  F(X, u64, q_idx, "int32 mode arrays, 0 if unused")                            \
  F(X, u64, k_idx, "")                                                          \
  F(X, u64, q_hash, "")                                                         \
  F(X, u64, k_hash, "")                                                         \
  F(X, u64, bias, "window mode, 0 if unused")                                   \
  F(X, u64, mask, "")                                                           \
  F(X, u64, dbias, "bwd, dbias_mode 1: the output (bias dtype); 2: float "      \
                   "workspace")                                                 \
  F(X, u64, plan, "bwd with a plan kernel (sfa__bwd_plan): int32 [B][Hq][key "  \
                  "tiles][SFA__BWD_PLAN_INTS], written by <name>_plan; else 0") \
  F(X, u64, alibi, "float32 ALiBi slopes [B|1][Hq], 0 if unused")               \
  F(X, i64, q_sb, "element strides of q: batch, head, time")                    \
  F(X, i64, q_sh, "")                                                           \
  F(X, i64, q_st, "")                                                           \
  F(X, i64, k_sb, "of k")                                                       \
  F(X, i64, k_sh, "")                                                           \
  F(X, i64, k_st, "")                                                           \
  F(X, i64, v_sb, "of v")                                                       \
  F(X, i64, v_sh, "")                                                           \
  F(X, i64, v_st, "")                                                           \
  F(X, i64, do_sb, "of dout")                                                   \
  F(X, i64, do_sh, "")                                                          \
  F(X, i64, do_st, "")                                                          \
  F(X, i64, dq_sb, "of dq (bwddq)")                                             \
  F(X, i64, dq_sh, "")                                                          \
  F(X, i64, dq_st, "")                                                          \
  F(X, i64, dk_sb, "of dk (bwd)")                                               \
  F(X, i64, dk_sh, "")                                                          \
  F(X, i64, dk_st, "")                                                          \
  F(X, i64, dv_sb, "of dv (bwd)")                                               \
  F(X, i64, dv_sh, "")                                                          \
  F(X, i64, dv_st, "")                                                          \
  F(X, i64, qi_sb, "q_idx / q_hash, contiguous along time")                     \
  F(X, i64, qi_sh, "")                                                          \
  F(X, i64, ki_sb, "k_idx / k_hash, contiguous along time")                     \
  F(X, i64, ki_sh, "")                                                          \
  F(X, i64, bias_sb, "0 where broadcast")                                       \
  F(X, i64, bias_sh, "")                                                        \
  F(X, i64, bias_st, "")                                                        \
  F(X, i64, mask_sb, "0 where broadcast")                                       \
  F(X, i64, mask_sh, "")                                                        \
  F(X, i64, mask_st, "")                                                        \
  F(X, i64, dbias_sb, "0 where broadcast")                                      \
  F(X, i64, dbias_sh, "")                                                       \
  F(X, i64, dbias_st, "")                                                       \
  F(X, i64, alibi_sb, "batch stride of the slopes (0: [Hq])")                   \
  F(X, i32, batch, "sizes")                                                     \
  F(X, i32, hq, "")                                                             \
  F(X, i32, hkv, "")                                                            \
  F(X, i32, tq, "")                                                             \
  F(X, i32, tk, "")                                                             \
  F(X, i32, tqp, "")                                                            \
  F(X, i32, bias_hdiv, "query heads per bias/mask head")                        \
  F(X, i32, mask_hdiv, "")                                                      \
  F(X, i32, window_left, "-1 = unbounded")                                      \
  F(X, i32, window_right, "")                                                   \
  F(X, i32, dbias_mode, "0 none, 1 store, 2 add into the workspace")            \
  F(X, i32, nb, "bwd: batches and kv heads per CTA")                            \
  F(X, i32, nh, "")                                                             \
  SFA_ABI_SCORE_TAIL(F, X)

/* ------------------------------------------------------------ the utility kernels */

/* templates/util_hash.lt, KERNEL hash_sort. */
#define SFA_ABI_HASH_SORT_ARGS(F, X)                                            \
  F(X, u64, bucket, "int32 [B, H, T]: each token's bucket")                     \
  F(X, i64, bk_sb, "element strides")                                           \
  F(X, i64, bk_sh, "")                                                          \
  F(X, i64, bk_st, "")                                                          \
  F(X, u64, idx, "int32 [B, H, T] out: original positions, sorted")             \
  F(X, i64, ix_sb, "element strides")                                           \
  F(X, i64, ix_sh, "")                                                          \
  F(X, i64, ix_st, "")                                                          \
  F(X, u64, hash, "int32 [B, H, T] out: sorted buckets")                        \
  F(X, i64, hs_sb, "element strides")                                           \
  F(X, i64, hs_sh, "")                                                          \
  F(X, i64, hs_st, "")                                                          \
  F(X, i32, heads, "H, T and the number of buckets")                            \
  F(X, i32, t, "")                                                              \
  F(X, i32, nb, "")                                                             \
  F(X, i32, pad, "")                                                            \
  F(X, u64, cu, "packed: int32 [batch + 1] prefix sums (0: fixed length)")      \
  F(X, i32, batch, "packed: the sequences (one CTA per (sequence, head))")      \
  F(X, i32, pad2, "")

/* templates/util_hash.lt, KERNEL permute. */
#define SFA_ABI_PERMUTE_ARGS(F, X)                                              \
  F(X, u64, src, "rows to copy")                                                \
  F(X, i64, s_sb, "byte strides")                                               \
  F(X, i64, s_sh, "")                                                           \
  F(X, i64, s_st, "")                                                           \
  F(X, u64, dst, "where they go")                                               \
  F(X, i64, d_sb, "byte strides")                                               \
  F(X, i64, d_sh, "")                                                           \
  F(X, i64, d_st, "")                                                           \
  F(X, u64, idx, "int32 row index per row")                                     \
  F(X, i64, i_sb, "element strides")                                            \
  F(X, i64, i_sh, "")                                                           \
  F(X, i64, i_st, "")                                                           \
  F(X, i64, tiles, "(batch, head) pairs * tiles_per_bh")                        \
  F(X, i32, heads, "a row whose idx is outside [0, limit) is skipped")          \
  F(X, i32, rows, "")                                                           \
  F(X, i32, limit, "")                                                          \
  F(X, i32, tiles_per_bh, "")                                                   \
  F(X, i32, rows_per_tile, "nvec vectors of vbytes a row; scatter 0 gathers")   \
  F(X, i32, nvec, "")                                                           \
  F(X, i32, vbytes, "")                                                         \
  F(X, i32, scatter, "")                                                        \
  F(X, u64, cu, "packed: int32 [batch + 1] row prefix sums (0: none)")          \
  F(X, i32, batch, "packed: idx is within each row's sequence")                 \
  F(X, i32, pad, "")

/* templates/util_topk.lt. */
#define SFA_ABI_TOPK_ARGS(F, X)                                                 \
  F(X, u64, bias, "the rows to rank")                                           \
  F(X, i64, b_sb, "element strides")                                            \
  F(X, i64, b_sh, "")                                                           \
  F(X, i64, b_sq, "")                                                           \
  F(X, u64, mask, "uint8 out; rows 16-byte aligned")                            \
  F(X, i64, m_sb, "byte strides")                                               \
  F(X, i64, m_sh, "")                                                           \
  F(X, i64, m_sq, "")                                                           \
  F(X, i64, rows, "B * H * Tq")                                                 \
  F(X, i32, heads, "keys kept per row: w")                                      \
  F(X, i32, tq, "")                                                             \
  F(X, i32, tk, "")                                                             \
  F(X, i32, w, "")                                                              \
  F(X, i32, causal, "cached: keys in shared memory; vec: 16-byte rows")         \
  F(X, i32, cached, "")                                                         \
  F(X, i32, vec, "")                                                            \
  F(X, i32, pad, "")                                                            \
  F(X, u64, cu_rows, "packed: int32 [batch + 1] query and key prefix sums")     \
  F(X, u64, cu_keys, "(0: fixed length); tk is then Kmax")                      \
  F(X, i32, batch, "")                                                          \
  F(X, i32, pad2, "")

/* templates/util_bwd.lt, KERNEL bwd_pre. */
#define SFA_ABI_BWD_PRE_ARGS(F, X)                                              \
  F(X, u64, o, "the forward output")                                            \
  F(X, i64, o_sb, "element strides")                                            \
  F(X, i64, o_sh, "")                                                           \
  F(X, i64, o_st, "")                                                           \
  F(X, u64, dout, "its gradient")                                               \
  F(X, i64, do_sb, "element strides")                                           \
  F(X, i64, do_sh, "")                                                          \
  F(X, i64, do_st, "")                                                          \
  F(X, u64, lse, "float, the forward's log-sum-exp")                            \
  F(X, i64, l_sb, "element strides")                                            \
  F(X, i64, l_sh, "")                                                           \
  F(X, u64, lse2, "float [B * H][tqp]; dq [B * H][tqp][d] or 0")                \
  F(X, u64, delta, "")                                                          \
  F(X, u64, dq, "")                                                             \
  F(X, i64, rows, "B * H * tqp")                                                \
  F(X, i32, heads, "")                                                          \
  F(X, i32, tq, "")                                                             \
  F(X, i32, tqp, "")                                                            \
  F(X, i32, d, "")                                                              \
  F(X, u64, dlse, "float [B, H, Tq], dL/dlse, or 0: delta -= dlse")             \
  F(X, i64, dl_sb, "element strides")                                           \
  F(X, i64, dl_sh, "")

/* templates/util_bwd.lt, KERNEL convert. */
#define SFA_ABI_CONVERT_ARGS(F, X)                                              \
  F(X, u64, src, "float; 0: write zeros")                                       \
  F(X, i64, s_sb, "element strides")                                            \
  F(X, i64, s_sh, "")                                                           \
  F(X, i64, s_st, "")                                                           \
  F(X, u64, dst, "DTYPE")                                                       \
  F(X, i64, d_sb, "element strides")                                            \
  F(X, i64, d_sh, "")                                                           \
  F(X, i64, d_st, "")                                                           \
  F(X, i64, n, "B * H * T * C")                                                 \
  F(X, i32, heads, "")                                                          \
  F(X, i32, t, "")                                                              \
  F(X, i32, c, "")                                                              \
  F(X, i32, pad, "")                                                            \
  F(X, f32, scale, "dst = scale * src")                                         \
  F(X, f32, pad2, "")

/* templates/util_merge.lt. */
#define SFA_ABI_MERGE_ARGS(F, X)                                                \
  F(X, u64, op, "o_parts [N * B, H, T, D]")                                     \
  F(X, i64, op_sb, "element strides")                                           \
  F(X, i64, op_sh, "")                                                          \
  F(X, i64, op_st, "")                                                          \
  F(X, u64, lp, "lse_parts [N * B, H, T] float")                                \
  F(X, i64, lp_sb, "element strides")                                           \
  F(X, i64, lp_sh, "")                                                          \
  F(X, u64, o, "o [B, H, T, D] out")                                            \
  F(X, i64, o_sb, "element strides")                                            \
  F(X, i64, o_sh, "")                                                           \
  F(X, i64, o_st, "")                                                           \
  F(X, u64, lse, "lse [B, H, T] float out, or 0")                               \
  F(X, i64, l_sb, "element strides")                                            \
  F(X, i64, l_sh, "")                                                           \
  F(X, i64, rows, "B * H * T")                                                  \
  F(X, i64, batch, "B: part n's batch b is index n * B + b")                    \
  F(X, i32, parts, "N")                                                         \
  F(X, i32, heads, "")                                                          \
  F(X, i32, t, "")                                                              \
  F(X, i32, d, "")                                                              \
  F(X, i32, in_dt, "sfa_dtype of o_parts and of o")                             \
  F(X, i32, out_dt, "")                                                         \
  F(X, i32, group, "threads per row: a power of 2, at most 32")                 \
  F(X, i32, vec, "bit 0: o_parts rows 16-byte aligned; bit 1: o rows")

/* ------------------------------------------------------------ every block */

/* S(c_name, device_name, LIST): the C type, the struct name in the generated
** CUDA (the utility kernels' predate the sfa__ prefix) and the field list.
** gen/abi.c describes each to the templates as ABI.structs[device_name]. */
#define SFA_ABI_STRUCTS(S)                                                      \
  S(sfa_fwd_args, sfa_fwd_args, SFA_ABI_FWD_ARGS)                               \
  S(sfa_bwd_args, sfa_bwd_args, SFA_ABI_BWD_ARGS)                               \
  S(sfa_dec_args, sfa_dec_args, SFA_ABI_DEC_ARGS)                               \
  S(sfa__hash_sort_args, sfa_hash_sort_args, SFA_ABI_HASH_SORT_ARGS)            \
  S(sfa__permute_args, sfa_permute_args, SFA_ABI_PERMUTE_ARGS)                  \
  S(sfa__topk_args, sfa_topk_args, SFA_ABI_TOPK_ARGS)                           \
  S(sfa__bwd_pre_args, sfa_bwd_pre_args, SFA_ABI_BWD_PRE_ARGS)                  \
  S(sfa__convert_args, sfa_convert_args, SFA_ABI_CONVERT_ARGS)                  \
  S(sfa__merge_args, sfa_merge_args, SFA_ABI_MERGE_ARGS)                        \
  S(sfa__kv_append_args, sfa_kv_append_args, SFA_ABI_KV_APPEND_ARGS)

/* ------------------------------------------------------------ constants */

/* int32 per key tile that a bwd plan kernel writes to sfa_bwd_args.plan
** (gen/gen_internal.h, sfa__bwd_plan). */
#define SFA__BWD_PLAN_INTS 16

/* Splits of a decode row tile's keys at most (runtime/decode.c's rule); the
** kernel's merge holds a row's split lse values in a register per 32 splits. */
#define SFA__DECODE_MAX_SPLITS 64

/* C(NAME, doc): integer constants that templates read as ABI.const.NAME
** instead of writing the number again. */
#define SFA_ABI_CONSTANTS(C)                                                    \
  C(SFA__BWD_PLAN_INTS, "int32 per key tile in sfa_bwd_args.plan")             \
  C(SFA__DECODE_MAX_SPLITS, "splits of a decode row tile at most")             \
  C(SFA_DTYPE_FP16, "sfa.h's dtype codes, as sfa_merge_args.in_dt / out_dt")   \
  C(SFA_DTYPE_BF16, "")                                                         \
  C(SFA_DTYPE_FP32, "")

/* ------------------------------------------------------------ expansions */

/* The C spelling of each field type, and the generated CUDA's (templates/abi.lt
** and util_common.lt declare u64 and i64). */
#define SFA_ABI_CTYPE_u64 uint64_t
#define SFA_ABI_CTYPE_i64 int64_t
#define SFA_ABI_CTYPE_i32 int32_t
#define SFA_ABI_CTYPE_f32 float
#define SFA_ABI_DEVTYPE_u64 "u64"
#define SFA_ABI_DEVTYPE_i64 "i64"
#define SFA_ABI_DEVTYPE_i32 "int"
#define SFA_ABI_DEVTYPE_f32 "float"

#define SFA_ABI_C_FIELD_(X, type, name, doc) SFA_ABI_CTYPE_##type name;
#define SFA_ABI_SIZE_TERM_(X, type, name, doc) +sizeof(SFA_ABI_CTYPE_##type)

/* typedef struct c_name { the fields of LIST } c_name; and an assertion that
** no field is preceded by padding. */
#define SFA_ABI_DEFINE(c_name, LIST)                                            \
  typedef struct c_name {                                                       \
    LIST(SFA_ABI_C_FIELD_, ~)                                                   \
  } c_name;                                                                     \
  _Static_assert(sizeof(c_name) == 0 LIST(SFA_ABI_SIZE_TERM_, ~),               \
                 #c_name ": its field list (runtime/kernel_abi_fields.h) leaves " \
                 "padding; order the fields by size")

#define SFA_ABI_STR_(x) #x
#define SFA_ABI_XSTR_(x) SFA_ABI_STR_(x)

/* One sfa__abi_field initialiser (gen/gen_internal.h) per field of the C
** struct c_name: SFA_ABI_FIELDS(c_name, LIST) inside braces. */
#define SFA_ABI_FIELD_(c_name, type, name, doc)                                 \
  {#name, SFA_ABI_XSTR_(SFA_ABI_CTYPE_##type), SFA_ABI_DEVTYPE_##type, doc,     \
   offsetof(c_name, name), sizeof(((c_name *)0)->name)},
#define SFA_ABI_FIELDS(c_name, LIST) LIST(SFA_ABI_FIELD_, c_name)

#endif
