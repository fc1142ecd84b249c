"""_api.py -- the PyTorch functions of sfa: attention() (differentiable, every
mode, bottom-right or top-left causal alignment), attention_varlen() (packed
sequences of different lengths), scaled_dot_product_attention()
(torch's SDPA signature and semantics), hash_attention(), hash_prepare(),
hash_unsort(), topk_mask(), merge_attention() (differentiable), the plain
no-autograd forward() / backward(), and decode() / kv_append() /
check_kv_cache() for a KV cache.

Arguments are checked here, in Python, before anything reaches ctypes: types,
dtypes, devices (every tensor of a call on the same GPU; the call runs on that
GPU and its current stream), int ranges. Shapes and strides are checked by the
library, whose message names the argument. Everything here is made of torch
ops and the custom ops of _ops.py, so torch.compile(fullgraph=True) traces it
without graph breaks."""
import math

import torch
import torch.nn.functional as F

from . import _calls, _capi, _nested, _ops
from ._args import FLT_MAX, check_choice, check_int, check_scale, check_window, f32_is_zero

ALIGNS = ("bottom_right", "top_left")
_HALF = (torch.float16, torch.bfloat16)


def _check_tensors(named):
    """named: (name, tensor or None) pairs. Every tensor is a torch.Tensor on a
    CUDA device, all on the same one."""
    first = None
    for n, t in named:
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"sfa: {n} must be a torch.Tensor, not {type(t).__name__}")
        if t.device.type != _calls.DEVICE_TYPE:
            raise ValueError(f"sfa: {n} must be a CUDA tensor (it is on {t.device})")
        if first is None:
            first = (n, t.device)
        elif t.device != first[1]:
            raise ValueError(f"sfa: {n} is on {t.device} but {first[0]} is on {first[1]}; every tensor of "
                             f"one call must be on the same device")


def _check_rows(named, rank=4, layout="[B, H, T, D]"):
    """named: (name, tensor) pairs that must be fp16/bf16 tensors of the first
    one's dtype and of the given rank."""
    n0, first = named[0]
    for n, t in named:
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"sfa: {n} must be a torch.Tensor, not {type(t).__name__}")
        if t.dtype not in _HALF:
            raise ValueError(f"sfa: {n}: dtype {t.dtype} is not supported; must be torch.float16 or "
                             "torch.bfloat16")
        if t.dtype != first.dtype:
            raise ValueError(f"sfa: {n}: dtype {t.dtype} does not match {n0} ({first.dtype})")
        if t.dim() != rank:
            raise ValueError(f"sfa: {n} has shape {tuple(t.shape)}; must be {rank}-D ({layout})")


def _check_qkv(q, k, v, rank=4, layout="[B, H, T, D]"):
    _check_rows((("q", q), ("k", k), ("v", v)), rank, layout)


def _slice_rows(t, tq, tq2):
    """bias/mask [.., Tq|1, Tk]: rows cut to tq2 where it has tq of them."""
    if t is None or t.shape[2] != tq or tq2 == tq:
        return t
    return t[:, :, :tq2]


def _slice_keys(t, tk2):
    if t is None or t.shape[3] == tk2:
        return t
    return t[..., :tk2]


def _top_left(q, k, v, bias, mask, mode, causal, wl, wr):
    """Top-left alignment (query i's diagonal is key i, as torch's SDPA
    is_causal) in terms of sfa's bottom-right one (diagonal i + Tk - Tq),
    without a mask: keys that no query can see are cut off (k, v, bias, mask
    sliced to Tk2), queries that see no key are cut off (and given o = 0,
    lse = -inf afterwards), and the window is shifted by the new
    off = Tk2 - Tq2. Returns (q, k, v, bias, mask, mode, causal, wl, wr,
    rows_cut). Slices are views: autograd gives the cut rows zero gradient."""
    tq, tk = q.shape[2], k.shape[2]
    if mode == "dense":
        if not causal:
            return q, k, v, bias, mask, mode, causal, wl, wr, 0
        left, right = -1, 0
    else:
        left, right = wl, (0 if causal else wr)
    tk2 = min(tk, tq + right) if right >= 0 else tk  # query tq - 1 sees up to key tq - 1 + right
    tq2 = min(tq, tk2 + left) if left >= 0 else tq   # query i sees a key iff i - left <= tk2 - 1
    off = tk2 - tq2
    left2 = left + off if left >= 0 else -1           # >= 0: tq2 <= tk2 + left
    right2 = right - off if right >= 0 else -1        # >= 0: tk2 <= tq + right, or tq2 = tk2 + left
    k, v = k[:, :, :tk2], v[:, :, :tk2]
    bias, mask = _slice_keys(_slice_rows(bias, tq, tq2), tk2), _slice_keys(_slice_rows(mask, tq, tq2), tk2)
    q = q[:, :, :tq2]
    if mode == "dense" and left2 == -1 and right2 == 0:
        return q, k, v, bias, mask, "dense", True, -1, -1, tq - tq2
    if right2 == 0:
        return q, k, v, bias, mask, "window", True, left2, -1, tq - tq2
    return q, k, v, bias, mask, "window", False, left2, right2, tq - tq2


def attention(q, k, v, *, mode="dense", causal=False, causal_align="bottom_right", scale=None, window=(-1, -1),
              q_idx=None, k_idx=None, q_hash=None, k_hash=None, bias=None, mask=None, deterministic=False,
              return_lse=False, strict_causal=False, softcap=0.0, alibi_slopes=None):
    """Differentiable sfa attention: o [B, Hq, Tq, D] from q [B, Hq, Tq, D] and
    k, v [B, Hkv, Tk, D] (fp16 or bf16 CUDA tensors on one GPU; Hq a multiple
    of Hkv: GQA/MQA). With return_lse=True: (o, lse), lse float32 [B, Hq, Tq]
    (the natural-log sum of exp of the scaled scores; -inf for a row with no
    allowed key). lse is differentiable: a gradient flowing into it (e.g.
    through merge_attention) is part of the backward (sfa_backward_dlse), at
    no extra cost.

    mode "dense" (optional causal), "qk_drop" (q_idx, k_idx), "hash" (q_idx,
    k_idx, q_hash, k_hash: the sorted layout; hash_attention() starts from
    unsorted tensors), "window" (window=(left, right), -1 unbounded; causal
    replaces right by 0; optional bias [B|1, Hq|Hkv|1, Tq|1, Tk] in q's dtype
    and a bool/uint8 mask, True/1 = attend, of the same shape rules).
    scale: None = 1/sqrt(D), else > 0.

    Score options (docs/semantics.md, "Scores"): softcap=c > 0 caps every
    score s = scale * q.k as c * tanh(s / c) (Gemma 2; every mode; 0 = off);
    alibi_slopes, a float tensor [Hq] or [B, Hq] on q's device (dense and
    window), adds -slope[b, h] * |i + Tk - Tq - j| to the score of query i and
    key j (ALiBi, bottom-right aligned as causal; no [Tq, Tk] tensor is made;
    the slopes get no gradient; not with causal_align="top_left"), before the
    bias; strict_causal=True (qk_drop and hash) makes their causality strict,
    q_idx > k_idx: a query does not see its own position.

    causal_align: where the diagonal of `causal` (and of the window) lies
    when Tq != Tk. "bottom_right" (default, sfa's own and FlashAttention's):
    query i sees key j iff j <= i + Tk - Tq, so the last query sees every
    key, and for Tq > Tk the first Tq - Tk queries see none (o = 0). "top_left"
    (torch's SDPA is_causal): query i sees j iff j <= i. Dense and window
    modes only.

    Rows with no allowed key give o = 0 and lse = -inf. Training: with grad
    mode on, autograd calls sfa_backward and gives dq, dk, dv, and dbias
    (summed over the dims the bias broadcasts) when the bias requires grad;
    index arrays and the mask get none. deterministic=True makes the backward
    bitwise reproducible. The backward supports head dims up to 128 and 160,
    192, 224, 256 (SfaUnsupportedError, a NotImplementedError, otherwise).
    Inputs whose layout sfa cannot read (last dim not contiguous, rows not
    16-byte aligned, mask rows not padded to 16 bytes) are copied first.

    Nested tensors: q, k, v may be torch nested tensors with
    layout=torch.jagged in SDPA's convention, [B, H, j, D] (x.transpose(1, 2)
    of a [B, j, H, D] jagged tensor, e.g. from torch.nested.nested_tensor(
    [...], layout=torch.jagged) or nested_tensor_from_jagged(values,
    offsets)). They run as attention_varlen on their values, cu_seqlens from
    the offsets, and give o as a jagged [B, Hq, j, D] with q's offsets (and
    lse a jagged [B, Hq, j], not differentiable); gradients flow to the
    values of q, k and v. k and v must share their sequence lengths; q's may
    differ (k and v from their own offsets, the same B): each sequence is
    aligned bottom-right, as attention_varlen, and causal_align="top_left"
    (with causal or a window) is taken only where k shares q's ragged dim.
    Modes dense and window; q_idx,
    k_idx, q_hash, k_hash, bias, mask, softcap, alibi_slopes, strict_causal,
    strided-layout nested tensors, non-contiguous jagged ones (with
    lengths()) and nested mixed with dense tensors raise ValueError."""
    if _nested.any_nested(q, k, v):
        _nested.check_options(mode, causal, causal_align, q, k, dict(
            q_idx=q_idx, k_idx=k_idx, q_hash=q_hash, k_hash=k_hash, bias=bias, mask=mask, softcap=softcap,
            alibi_slopes=alibi_slopes, strict_causal=strict_causal))
        qv, kv, vv, cu_q, cu_k = _nested.packed(q, k, v)
        o, lse = attention_varlen(qv, kv, vv, cu_q, cu_k, mode=mode, causal=causal, scale=scale, window=window,
                                  deterministic=deterministic, return_lse=True)
        return _nested.unpacked(q, o, lse if return_lse else None)
    check_choice("mode", mode, list(_capi.MODE))
    check_choice("causal_align", causal_align, ALIGNS)
    if causal_align == "top_left" and mode not in ("dense", "window"):
        raise ValueError(f"sfa: causal_align='top_left' applies to modes dense and window; mode {mode} "
                         "has its own causality (q_idx >= k_idx)")
    if causal_align == "top_left" and alibi_slopes is not None:
        raise ValueError("sfa: alibi_slopes with causal_align='top_left' is not supported: the ALiBi "
                         "distance |i + Tk - Tq - j| is measured from the bottom-right diagonal")
    wl, wr = check_window(window)
    scale = check_scale(scale)
    _check_qkv(q, k, v)
    _check_tensors((("q", q), ("k", k), ("v", v), ("bias", bias), ("mask", mask), ("q_idx", q_idx),
                    ("k_idx", k_idx), ("q_hash", q_hash), ("k_hash", k_hash), ("alibi_slopes", alibi_slopes)))
    softcap = 0.0 if softcap is None else float(softcap)
    if mask is not None and mask.dtype not in (torch.bool, torch.uint8):
        raise ValueError(f"sfa: mask: dtype {mask.dtype}; must be torch.bool or torch.uint8 (True/1 = attend)")
    rows_cut = 0
    if causal_align == "top_left":
        q, k, v, bias, mask, mode, causal, wl, wr, rows_cut = _top_left(q, k, v, bias, mask, mode,
                                                                        bool(causal), wl, wr)
    o, lse = _ops.attention_fwd(q, k, v, bias, mask, q_idx, k_idx, q_hash, k_hash, mode, bool(causal), scale,
                                wl, wr, bool(deterministic), alibi_slopes, bool(strict_causal), softcap)
    if rows_cut:
        o = F.pad(o, (0, 0, 0, rows_cut))
        lse = F.pad(lse, (0, rows_cut), value=-math.inf)
    return (o, lse) if return_lse else o


def attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, *, mode="dense", causal=False, scale=None,
                     window=(-1, -1), q_idx=None, k_idx=None, q_hash=None, k_hash=None, bias=None, mask=None,
                     deterministic=False, return_lse=False, max_seqlen_k=None):
    """Differentiable sfa attention over packed sequences of different lengths
    (the layout of FlashAttention's varlen calls): B sequences stored one
    after another along time, q [total_q, Hq, D], k and v [total_k, Hkv, D]
    (fp16 or bf16 CUDA tensors on one GPU; Hq a multiple of Hkv), and
    cu_seqlens_q, cu_seqlens_k int32 [B + 1] on the same GPU: the prefix sums
    of the lengths (0 first, never decreasing, the totals last; a sequence may
    be empty). Sequence b is rows cu_seqlens_q[b]:cu_seqlens_q[b + 1] of q and
    cu_seqlens_k[b]:cu_seqlens_k[b + 1] of k and v. Returns o like q; with
    return_lse=True (o, lse), lse float32 [Hq, total_q] (not
    differentiable; -inf for a row that sees no key).

    Each sequence is its own problem, exactly as sfa.attention on it alone
    with causal_align="bottom_right": causal and the window are aligned to the
    sequence's own lengths, and nothing is seen across a boundary. mode
    "dense", "qk_drop" (q_idx [Hq, total_q], k_idx [Hkv, total_k]), "hash"
    (also q_hash, k_hash, alike) with the positions within each sequence, or
    "window" (window=(left, right)), optionally with a bias [Hb, total_q or 1,
    Kmax] in q's dtype and a bool/uint8 mask (True/1 = attend) of the same
    shape rules: Hb is Hq, Hkv or 1, a row count of 1 broadcasts one row to
    every query of every sequence, and column j of row i is key j of row i's
    own sequence. Kmax is at least the longest key length as a rule; keys at
    or past Kmax are masked (their position has no column), which the call
    cannot check without reading cu_seqlens.
    No maximum length is needed and nothing is read back from the GPU (the
    values of cu_seqlens are not checked; sfa_check_indices does that in C).
    max_seqlen_k (an int >= 0, or None), where the caller knows the longest
    key length, lets the forward pick smaller tiles for batches of short
    sequences (at most 4096 keys each: measured faster at head dim 64); it is
    a hint for the tile choice only, the output is the same for any value.
    With grad mode on, autograd gives dq, dk, dv through sfa_backward, and
    dbias (the bias's shape, summed over the heads and rows it broadcasts;
    0 in the columns past a sequence's keys) when the bias requires grad;
    deterministic=True makes them bitwise reproducible (not with a bias of
    one broadcast row and a gradient for it, whose sum over the sequences
    uses float atomics: SfaUnsupportedError)."""
    check_choice("mode", mode, list(_capi.MODE))
    wl, wr = check_window(window)
    scale = check_scale(scale)
    _check_qkv(q, k, v, 3, "[total, H, D]: packed sequences")
    _check_tensors((("q", q), ("k", k), ("v", v), ("cu_seqlens_q", cu_seqlens_q), ("cu_seqlens_k", cu_seqlens_k),
                    ("q_idx", q_idx), ("k_idx", k_idx), ("q_hash", q_hash), ("k_hash", k_hash), ("bias", bias),
                    ("mask", mask)))
    if mask is not None and mask.dtype not in (torch.bool, torch.uint8):
        raise ValueError(f"sfa: mask: dtype {mask.dtype}; must be torch.bool or torch.uint8 (True/1 = attend)")
    _check_cu((("cu_seqlens_q", cu_seqlens_q), ("cu_seqlens_k", cu_seqlens_k)))
    max_seqlen_k = 0 if max_seqlen_k is None else check_int(
        "max_seqlen_k", max_seqlen_k, 0, 2**63 - 1, " (the longest sequence's key length; or None)")
    o, lse = _ops.attention_varlen_fwd(q, k, v, cu_seqlens_q, cu_seqlens_k, q_idx, k_idx, q_hash, k_hash, mode,
                                       bool(causal), scale, wl, wr, bool(deterministic), bias, mask,
                                       max_seqlen_k)
    return (o, lse) if return_lse else o


def _check_cu(named, pair=False):
    """named: (name, prefix sums or None) pairs, each None or an int32 [B + 1]
    tensor; pair: the two of a query / key pair, both or neither."""
    if pair and (named[0][1] is None) != (named[1][1] is None):
        given, missing = (named[0][0], named[1][0]) if named[1][1] is None else (named[1][0], named[0][0])
        raise ValueError(f"sfa: {missing}: is None but {given} is given; packed sequences need both")
    for n, t in named:
        if t is not None and (not isinstance(t, torch.Tensor) or t.dtype != torch.int32 or t.dim() != 1):
            what = f"dtype {t.dtype}, shape {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"sfa: {n}: {what}; must be torch.int32 [B + 1] (prefix sums of the lengths)")


def _sdpa_mask(attn_mask, B, Hq, Tq, Tk, dtype):
    """SDPA's attn_mask (broadcastable to [B, Hq, Tq, Tk]) as sfa's mask (bool)
    or bias (q's dtype), 4-D, with its size-1 dims left size 1 (sfa
    broadcasts them); only a size-1 key dim is expanded."""
    m = attn_mask
    if not isinstance(m, torch.Tensor):
        raise ValueError(f"sfa: attn_mask must be a torch.Tensor, not {type(m).__name__}")
    if m.dim() > 4:
        raise ValueError(f"sfa: attn_mask has shape {tuple(m.shape)}; at most 4-D (broadcastable to "
                         f"[B, Hq, Tq, Tk] = {[B, Hq, Tq, Tk]})")
    while m.dim() < 4:
        m = m.unsqueeze(0)
    want = (B, Hq, Tq, Tk)
    for i in range(4):
        if m.shape[i] != want[i] and m.shape[i] != 1:
            raise ValueError(f"sfa: attn_mask has shape {tuple(attn_mask.shape)}, which does not broadcast to "
                             f"[B, Hq, Tq, Tk] = {list(want)}")
    if m.shape[3] != Tk:
        m = m.expand(m.shape[0], m.shape[1], m.shape[2], Tk)
    if m.dtype == torch.bool:
        return None, m
    if not m.is_floating_point():
        raise ValueError(f"sfa: attn_mask: dtype {m.dtype}; must be torch.bool or a floating type "
                         "(added to the scores)")
    return m.to(dtype), None


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                 enable_gqa=False):
    """torch.nn.functional.scaled_dot_product_attention computed by sfa: the
    same signature and semantics, for fp16/bf16 CUDA tensors
    [B, H, T, D] (or [H, T, D]) whose key and value head dims are equal.

    - is_causal: torch's top-left alignment (query i sees keys j <= i), also
      for Tq != Tk (sfa.attention's causal=True is bottom-right unless
      causal_align="top_left").
    - attn_mask: bool (True = attend) or float (added to the scores),
      broadcastable to [B, Hq, Tq, Tk]; a float mask gets a gradient when it
      requires grad. Not together with is_causal (ValueError, as torch).
    - enable_gqa: Hq a multiple of Hkv; without it Hq must equal Hkv.
    - scale: None = 1/sqrt(D); 0 and negative values work as in torch.
    - dropout_p > 0: NotImplementedError (sfa has no dropout).
    - A row whose keys are all masked out gives 0 (as torch's math backend
      since 2.5, where it uses a safe softmax; other SDPA backends may give
      NaN).
    - Nested tensors (layout=torch.jagged, [B, H, j, D], as torch's jagged
      SDPA takes them) run as sfa.attention on them: no attn_mask (as
      torch), scale > 0, is_causal only where key shares query's sequence
      lengths (ragged dim); o is a jagged tensor with query's offsets."""
    if dropout_p != 0.0:
        if dropout_p > 0:
            raise NotImplementedError(f"sfa: dropout_p={dropout_p}: sfa has no attention dropout; use "
                                      "dropout_p=0.0 (or torch's SDPA for training with dropout)")
        raise ValueError(f"sfa: dropout_p is {dropout_p}; must be in [0, 1]")
    if _nested.any_nested(query, key, value):
        if attn_mask is not None:
            raise ValueError("sfa: attn_mask with nested (jagged) query, key, value is not supported (nor by "
                             "torch's jagged SDPA)")
        _nested.check_heads(query, key, enable_gqa)
        return attention(query, key, value, causal=bool(is_causal), causal_align="top_left", scale=scale)
    if is_causal and attn_mask is not None:
        raise ValueError("sfa: attn_mask and is_causal=True together are not allowed (as in torch's SDPA): "
                         "fold the causal mask into attn_mask")
    for t, n in ((query, "query"), (key, "key"), (value, "value")):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"sfa: {n} must be a torch.Tensor, not {type(t).__name__}")
    if not (query.dim() == key.dim() == value.dim()) or query.dim() not in (3, 4):
        raise ValueError(f"sfa: query, key, value have shapes {tuple(query.shape)}, {tuple(key.shape)}, "
                         f"{tuple(value.shape)}; sfa takes all 4-D [B, H, T, D] or all 3-D [H, T, D]")
    squeeze = query.dim() == 3
    q, k, v = (t.unsqueeze(0) for t in (query, key, value)) if squeeze else (query, key, value)
    B, Hq, Tq, E = q.shape
    Hkv, Tk = k.shape[1], k.shape[2]
    if k.shape[-1] != E:
        raise ValueError(f"sfa: key's head dim {k.shape[-1]} differs from query's {E}")
    if v.shape[-1] != E:
        raise NotImplementedError(f"sfa: value's head dim {v.shape[-1]} differs from query's {E}; sfa needs "
                                  "them equal")
    if v.shape[:-1] != k.shape[:-1]:
        raise ValueError(f"sfa: value has shape {tuple(value.shape)} but key {tuple(key.shape)}")
    if Hq != Hkv:
        if not enable_gqa:
            raise ValueError(f"sfa: query has {Hq} heads and key/value {Hkv}; pass enable_gqa=True for "
                             "grouped-query attention (as in torch's SDPA)")
        if Hq % Hkv != 0:
            raise ValueError(f"sfa: enable_gqa: query heads ({Hq}) must be a multiple of key/value heads ({Hkv})")
    if k.shape[0] != B:
        if k.shape[0] != 1:
            raise ValueError(f"sfa: key's batch {k.shape[0]} does not broadcast to query's {B}")
        k, v = k.expand(B, -1, -1, -1), v.expand(B, -1, -1, -1)
    s = 1.0 / math.sqrt(E) if scale is None else float(scale)
    if not math.isfinite(s) or abs(s) > FLT_MAX:
        raise ValueError(f"sfa: scale is {s}; must be finite in float32")
    if s < 0:  # (-q) . k * |s| = q . k * s, and autograd sees the negation
        q, s = -q, -s
    if f32_is_zero(s):  # every score 0 (also for a scale below float32's range)
        q, s = q * 0, 1.0
    bias = mask = None
    if attn_mask is not None:
        bias, mask = _sdpa_mask(attn_mask, B, Hq, Tq, Tk, q.dtype)
    o = attention(q, k, v, mode="dense" if attn_mask is None else "window", causal=bool(is_causal),
                  causal_align="top_left", scale=s, bias=bias, mask=mask)
    return o.squeeze(0) if squeeze else o


# ------------------------------------------------------------------ sparse helpers

def hash_prepare(bucket, num_buckets, x, x2=None, *, cu_seqlens=None):
    """Sort x [B,H,T,D] (and x2 alike) by (bucket, position) per (b, h).
    Returns (x_sorted, x2_sorted or None, idx, hash) as mode "hash" expects.
    x may be None: then only idx and hash are made (x_sorted is None).

    Packed sequences (cu_seqlens int32 [B + 1], the prefix sums of the
    lengths, as attention_varlen takes them): bucket int32 [H, total], x
    [total, H, D] and x2 [total, H, D2]; each sequence is sorted alone and idx
    holds positions within it, so (idx, hash) are attention_varlen's
    (q_idx, q_hash) or (k_idx, k_hash) in mode "hash"
    (sfa_hash_prepare_varlen). The values of cu_seqlens are not checked."""
    num_buckets = check_int("num_buckets", num_buckets, 1)
    _check_tensors((("bucket", bucket), ("x", x), ("x2", x2), ("cu_seqlens", cu_seqlens)))
    _check_cu((("cu_seqlens", cu_seqlens),))
    idx, hsh, xs, x2s = _ops.hash_prepare(bucket, num_buckets, x, x2, cu_seqlens)
    return (xs if x is not None else None), (x2s if x2 is not None else None), idx, hsh


def hash_unsort(o_sorted, idx, out=None, *, cu_seqlens=None):
    """o[b, h, idx[b, h, i]] = o_sorted[b, h, i] (a new tensor, rows that idx
    does not name are 0; or written into out, where they are left as they
    are). Packed sequences (cu_seqlens as hash_prepare's): o_sorted and o
    [total, H, D], idx [H, total] with positions within each sequence
    (sfa_hash_unsort_varlen)."""
    _check_tensors((("o_sorted", o_sorted), ("idx", idx), ("out", out), ("cu_seqlens", cu_seqlens)))
    _check_cu((("cu_seqlens", cu_seqlens),))
    if out is None:
        return _ops.hash_unsort(o_sorted, idx, cu_seqlens)
    _calls.hash_unsort_into(o_sorted, idx, out, cu_seqlens)
    return out


def _gather_rows(x, idx, dim, start=None):
    """Rows of x along dim (2: [B,H,T,D]; 0: packed [total,H,D]) picked by
    idx ([B,H,T] or [H,total], positions within each sequence; start: each
    packed row's sequence start, added to them) with torch.gather."""
    sel = idx.long() if start is None else (idx.long() + start).transpose(0, 1)
    return torch.gather(x, dim, sel.unsqueeze(-1).expand(*sel.shape, x.shape[-1]))


def _scatter_rows(os_, idx, dim, start=None):
    """The inverse of _gather_rows for a permutation idx: every row is written."""
    sel = idx.long() if start is None else (idx.long() + start).transpose(0, 1)
    return torch.zeros_like(os_).scatter(dim, sel.unsqueeze(-1).expand(*sel.shape, os_.shape[-1]), os_)


def hash_attention(q, k, v, q_bucket, k_bucket, num_buckets, *, cu_seqlens_q=None, cu_seqlens_k=None, **kw):
    """Hash-sparse attention from unsorted tensors: sort by (bucket, position),
    attend (mode "hash"), scatter the output back to the original order.
    q [B,Hq,T,D] with q_bucket int32 [B,Hq,T]; k, v [B,Hkv,T,D] with k_bucket
    int32 [B,Hkv,T]; kw: scale, deterministic, strict_causal, softcap.
    Packed sequences (cu_seqlens_q and cu_seqlens_k, both or neither, int32
    [B + 1]): q [total_q,Hq,D] with q_bucket [Hq,total_q], k, v
    [total_k,Hkv,D] with k_bucket [Hkv,total_k]; each sequence is sorted and
    attends alone (through attention_varlen; kw: scale, deterministic).

    Differentiable: when a gradient is needed (grad mode on and q, k or v
    requires grad), sfa_hash_prepare makes only the permutation (idx, hash),
    the rows are gathered and the output scattered back with torch ops
    (torch.gather / Tensor.scatter, whose gradients are the inverse
    permutation), and the sorted call goes through attention(), so q, k and v
    get exact gradients. Without a gradient the sort, gather and scatter are
    sfa's kernels (sfa_hash_prepare / sfa_hash_unsort), which are faster; both
    paths give the same output. The bucket ids get no gradient."""
    num_buckets = check_int("num_buckets", num_buckets, 1)
    _check_cu((("cu_seqlens_q", cu_seqlens_q), ("cu_seqlens_k", cu_seqlens_k)), pair=True)
    packed = cu_seqlens_q is not None
    _check_qkv(q, k, v, *((3, "[total, H, D]: packed sequences") if packed else ()))
    _check_tensors((("q", q), ("k", k), ("v", v), ("q_bucket", q_bucket), ("k_bucket", k_bucket),
                    ("cu_seqlens_q", cu_seqlens_q), ("cu_seqlens_k", cu_seqlens_k)))
    if packed:
        def attend(qs, ks, vs, qi, ki, qh, kh):
            return attention_varlen(qs, ks, vs, cu_seqlens_q, cu_seqlens_k, mode="hash", q_idx=qi, k_idx=ki,
                                    q_hash=qh, k_hash=kh, **kw)
    else:
        def attend(qs, ks, vs, qi, ki, qh, kh):
            return attention(qs, ks, vs, q_idx=qi, k_idx=ki, q_hash=qh, k_hash=kh, mode="hash", **kw)
    if not (torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))):
        qs, _, qi, qh = hash_prepare(q_bucket, num_buckets, q, cu_seqlens=cu_seqlens_q)
        ks, vs, ki, kh = hash_prepare(k_bucket, num_buckets, k, v, cu_seqlens=cu_seqlens_k)
        return hash_unsort(attend(qs, ks, vs, qi, ki, qh, kh), qi, cu_seqlens=cu_seqlens_q)
    _, _, qi, qh = hash_prepare(q_bucket, num_buckets, None, cu_seqlens=cu_seqlens_q)
    _, _, ki, kh = hash_prepare(k_bucket, num_buckets, None, cu_seqlens=cu_seqlens_k)
    dim, qst, kst = 2, None, None
    if packed:  # each packed row's sequence start, for positions within the sequence
        dim = 0
        qst, kst = (cu[torch.searchsorted(cu, torch.arange(t.shape[0], device=t.device, dtype=cu.dtype),
                                          right=True) - 1].long()
                    for cu, t in ((cu_seqlens_q, q), (cu_seqlens_k, k)))
    qs, ks, vs = _gather_rows(q, qi, dim, qst), _gather_rows(k, ki, dim, kst), _gather_rows(v, ki, dim, kst)
    # idx is a permutation of each sequence's positions per head, so every row is written
    return _scatter_rows(attend(qs, ks, vs, qi, ki, qh, kh), qi, dim, qst)


def topk_mask(bias, w, causal=True, out=None, *, cu_seqlens_q=None, cu_seqlens_k=None):
    """uint8 mask of the w largest-bias allowed keys per query (flash-sparse-attn),
    causal bottom-right aligned. The mask's rows are padded to a multiple of
    16 bytes, as sfa_forward requires (a new tensor, or written into out).

    Packed sequences (cu_seqlens_q and cu_seqlens_k, both or neither, int32
    [B + 1]): bias [Hb, total_q, Kmax], row i of sequence b with key position
    j of that sequence in column j (Kmax >= the longest key length), mask
    likewise; causal alignment per sequence, and the columns past a
    sequence's key length are 0 (sfa_topk_mask_varlen)."""
    w = check_int("w", w, 0)
    _check_tensors((("bias", bias), ("out", out), ("cu_seqlens_q", cu_seqlens_q), ("cu_seqlens_k", cu_seqlens_k)))
    _check_cu((("cu_seqlens_q", cu_seqlens_q), ("cu_seqlens_k", cu_seqlens_k)), pair=True)
    if out is None:
        return _ops.topk_mask(bias, w, bool(causal), cu_seqlens_q, cu_seqlens_k)
    _calls.topk_mask_into(bias, w, causal, out, cu_seqlens_q, cu_seqlens_k)
    return out


# ------------------------------------------------------------------ merging partial attentions

_OUT_DTYPES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}


def _stacked(xs, name, rank):
    """xs as one tensor of rank `rank` + 1: a tensor as it is, a sequence
    stacked along a new first dim."""
    if isinstance(xs, torch.Tensor):
        t = xs
    else:
        if not isinstance(xs, (list, tuple)) or not xs:
            raise ValueError(f"sfa: {name} must be a non-empty list or tuple of tensors, or one stacked tensor")
        _check_tensors(tuple((f"{name}[{i}]", x) for i, x in enumerate(xs)))
        for i, x in enumerate(xs):
            if x.shape != xs[0].shape or x.dtype != xs[0].dtype:
                raise ValueError(f"sfa: {name}[{i}] is {x.dtype} {tuple(x.shape)} but {name}[0] is {xs[0].dtype} "
                                 f"{tuple(xs[0].shape)}; the parts must agree")
        t = torch.stack(tuple(xs))
    if t.dim() != rank + 1:
        raise ValueError(f"sfa: {name} has shape {tuple(t.shape)}; must be {rank + 1}-D (N stacked parts of "
                         f"{rank}-D tensors)")
    return t


def merge_attention(outs, lses, *, out_dtype=None):
    """Merges N partial attentions of the same queries over disjoint key sets
    (ring / context parallelism, split-KV) into the attention over their
    union: outs, N tensors o_n [B, H, T, D] (or one [N, B, H, T, D] tensor;
    fp16, bf16 or fp32) and lses, their lse_n [B, H, T] (float32, as
    attention(..., return_lse=True) gives). Returns (o, lse):
        lse = log(sum_n exp(lse_n)),  o = sum_n exp(lse_n - lse) * o_n,
    accumulated in float32 by sfa_merge_attention. o has out_dtype (default:
    the parts' dtype), lse is float32 [B, H, T]. A part with lse_n = -inf
    weighs 0 (its o_n is not read); a row where every part is -inf gives
    o = 0, lse = -inf, as attention() does for a row with no key; a NaN lse
    gives NaN. D <= 256.

    Differentiable in outs and lses (a torch.library custom op with a torch
    backward), so that attention over all keys and the merge of attention
    over each part of the keys give the same gradients:
        do_n = w_n * do,  dlse_n = w_n * (sum_d do * (o_n - o) + dlse),
    w_n = exp(lse_n - lse)."""
    op = _stacked(outs, "outs", 4)
    lp = _stacked(lses, "lses", 3)
    _check_tensors((("outs", op), ("lses", lp)))
    if op.dtype not in _OUT_DTYPES:
        raise ValueError(f"sfa: outs: dtype {op.dtype}; must be torch.float16, torch.bfloat16 or torch.float32")
    if lp.dtype != torch.float32:
        raise ValueError(f"sfa: lses: dtype {lp.dtype}; must be torch.float32")
    if op.shape[:-1] != lp.shape:
        raise ValueError(f"sfa: outs have shape {tuple(op.shape)} but lses {tuple(lp.shape)}; lses must be the "
                         "outs' shape without the last (head) dim")
    odt = op.dtype if out_dtype is None else out_dtype
    if odt not in _OUT_DTYPES:
        raise ValueError(f"sfa: out_dtype {odt}; must be torch.float16, torch.bfloat16 or torch.float32")
    return _ops.merge_attention(op, lp, _OUT_DTYPES[odt])


# ------------------------------------------------------------------ plain calls

def forward(q, k, v, *, mode="dense", causal=False, scale=None, window=(-1, -1), q_idx=None,
            k_idx=None, q_hash=None, k_hash=None, bias=None, mask=None, out=None, return_lse=False,
            strict_causal=False, softcap=0.0, alibi_slopes=None):
    """Forward pass, no autograd, bottom-right causal. q [B, Hq, Tq, D],
    k/v [B, Hkv, Tk, D]; returns o (and lse); o is written into out when
    given. strict_causal, softcap, alibi_slopes: as in attention()."""
    check_choice("mode", mode, list(_capi.MODE))
    wl, wr = check_window(window)
    scale = check_scale(scale)
    _check_qkv(q, k, v)
    _check_tensors((("q", q), ("k", k), ("v", v), ("bias", bias), ("mask", mask), ("q_idx", q_idx),
                    ("k_idx", k_idx), ("q_hash", q_hash), ("k_hash", k_hash), ("out", out),
                    ("alibi_slopes", alibi_slopes)))
    o = out if out is not None else _calls.out_like(q)
    lse = torch.empty(q.shape[:-1], device=q.device, dtype=torch.float32)
    with torch.no_grad():
        _calls.forward_into(q, k, v, o, lse, mode, causal, scale, wl, wr,
                            dict(q_idx=q_idx, k_idx=k_idx, q_hash=q_hash, k_hash=k_hash, bias=bias, mask=mask,
                                 alibi_slopes=alibi_slopes), bool(strict_causal), float(softcap))
    return (o, lse) if return_lse else o


def backward(q, k, v, o, lse, dout, *, mode="dense", causal=False, scale=None, window=(-1, -1),
             q_idx=None, k_idx=None, q_hash=None, k_hash=None, bias=None, mask=None,
             deterministic=False, bias_grad=False, dlse=None, strict_causal=False, softcap=0.0,
             alibi_slopes=None):
    """Gradients of forward, no autograd: returns (dq, dk, dv, dbias or None).
    o and lse are forward's outputs (forward(..., return_lse=True)); dout has
    o's shape; dlse (float32, lse's shape) is the gradient of lse, if any.
    dbias is made when bias_grad is true and there is a bias.
    strict_causal, softcap, alibi_slopes: as given to forward."""
    check_choice("mode", mode, list(_capi.MODE))
    wl, wr = check_window(window)
    scale = check_scale(scale)
    _check_qkv(q, k, v)
    _check_tensors((("q", q), ("k", k), ("v", v), ("o", o), ("lse", lse), ("dout", dout), ("bias", bias),
                    ("mask", mask), ("q_idx", q_idx), ("k_idx", k_idx), ("q_hash", q_hash), ("k_hash", k_hash),
                    ("dlse", dlse), ("alibi_slopes", alibi_slopes)))
    dq, dk, dv = _calls.out_like(q), _calls.out_like(k), _calls.out_like(v)
    db = torch.empty(bias.shape, device=bias.device, dtype=bias.dtype) if bias_grad and bias is not None else None
    with torch.no_grad():
        _calls.backward_into(dout, q, k, v, o, lse, dq, dk, dv, db, mode, causal, scale, wl, wr, deterministic,
                             dict(q_idx=q_idx, k_idx=k_idx, q_hash=q_hash, k_hash=k_hash, bias=bias, mask=mask,
                                  alibi_slopes=alibi_slopes), bool(strict_causal), float(softcap), dlse)
    return dq, dk, dv, db


# ------------------------------------------------------------------ decoding with a KV cache

def _check_int32(pairs):
    for n, t in pairs:
        if t is not None and (not isinstance(t, torch.Tensor) or t.dtype != torch.int32):
            raise ValueError(f"sfa: {n} must be an int32 torch.Tensor")


def _check_cache(k_cache, v_cache, page_table, seqused, dtype):
    for t, n in ((k_cache, "k_cache"), (v_cache, "v_cache")):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"sfa: {n} must be a torch.Tensor, not {type(t).__name__}")
        if t.dtype != dtype:
            raise ValueError(f"sfa: {n}: dtype {t.dtype} does not match the new rows ({dtype})")
        if t.dim() != 4:
            raise ValueError(f"sfa: {n} has shape {tuple(t.shape)}; must be 4-D ([B, Hkv, capacity, D], or "
                             "[num_pages, page_size, Hkv, D] with page_table)")
    _check_int32((("page_table", page_table), ("seqused", seqused)))


def _decode_checks(q, k_cache, v_cache, page_table, seqused, kv_indices, mode, window, scale, q_hash, k_hash):
    """decode's and decode_workspace's argument checks: (window left, right, scale)."""
    check_choice("mode", mode, ("dense", "window", "hash"))
    wl, wr = check_window(window)
    scale = check_scale(scale)
    _check_rows((("q", q),), 4, "[B, Hq, Tn, D]")
    _check_cache(k_cache, v_cache, page_table, seqused, q.dtype)
    _check_int32((("kv_indices", kv_indices), ("q_hash", q_hash), ("k_hash", k_hash)))
    if mode == "hash" and (q_hash is None or k_hash is None):
        raise ValueError("sfa: mode 'hash' needs q_hash and k_hash (the buckets of the new tokens and of the "
                         "cached keys)")
    if mode != "hash" and (q_hash is not None or k_hash is not None):
        raise ValueError(f"sfa: q_hash and k_hash are mode 'hash''s; mode {mode!r} takes neither")
    _check_tensors((("q", q), ("k_cache", k_cache), ("v_cache", v_cache), ("page_table", page_table),
                    ("seqused", seqused), ("kv_indices", kv_indices), ("q_hash", q_hash), ("k_hash", k_hash)))
    return wl, wr, scale


def decode_workspace(q, k_cache, v_cache, *, page_table=None, seqused=None, kv_indices=None, mode="dense",
                     causal=True, scale=None, window=(-1, -1), q_hash=None, k_hash=None, strict_causal=False):
    """A workspace for decode(..., workspace=) calls like this one: a zeroed
    uint8 tensor on q's GPU of the bytes sfa_decode_workspace_size gives for
    these arguments (their shapes and options; the values do not matter),
    empty where the call does not split its keys. Keep it and pass it to every
    decode step whose shape it covers: each call leaves it ready for the next
    (no memset, no allocation: the step is one kernel in a CUDA graph). Steps
    that may run at the same time (other streams) need a workspace each."""
    wl, wr, scale = _decode_checks(q, k_cache, v_cache, page_table, seqused, kv_indices, mode, window, scale,
                                   q_hash, k_hash)
    n = _calls.decode_workspace_bytes(q, k_cache, v_cache, page_table, seqused, kv_indices, mode, bool(causal),
                                      scale, wl, wr, k_hash, q_hash, bool(strict_causal))
    return torch.zeros(n, dtype=torch.uint8, device=q.device)


def decode(q, k_cache, v_cache, *, page_table=None, seqused=None, kv_indices=None, mode="dense", causal=True,
           scale=None, window=(-1, -1), return_lse=False, q_hash=None, k_hash=None, strict_causal=False,
           workspace=None):
    """One decode step: attention of q [B, Hq, Tn, D] (Tn new tokens per
    sequence, 1..16) against a KV cache, no autograd (sfa_decode).

    k_cache, v_cache: [B, Hkv, capacity, D], or paged [num_pages, page_size,
    Hkv, D] with page_table (int32 [B, max_pages]: sequence b's position j is
    row j % page_size of page page_table[b, j // page_size]). seqused (int32
    [B]): positions in use per sequence, the new tokens included (their keys
    and values already written, e.g. by kv_append); None: the whole capacity.
    New token t sits at position p = seqused[b] - Tn + t; mode "dense"
    (causal: keys up to that position), "window" (window=(left, right)
    around it) or "hash" (SCFA's hash-sparse attention: token t of query head
    h sees the cached keys j <= p, j < p with strict_causal, of its own
    bucket, k_hash[.., j] == q_hash[b, h, t]; causal is ignored). Hash needs
    q_hash (int32 [B, Hq, Tn]) and k_hash (int32, the cache's layout minus D:
    [B, Hkv, capacity], or [num_pages, page_size, Hkv] when paged; kv_append
    with k_hash and k_hash_new fills it); the other modes take neither.
    Buckets are any int32 values, compared for equality only.
    kv_indices (int32 [B, Hkv, K]): each kv head reads only the listed
    positions (DSA/NSA-style selection; entries outside [0, seqused) are
    skipped, -1 pads).
    workspace: None (the split keys' partial results go to a buffer of the
    library's, zeroed by a memset each call), or decode_workspace(...)'s
    tensor, reused from step to step (no allocation or memset: one kernel
    per step).
    Returns o like q (and lse float32 [B, Hq, Tn] with return_lse). Nothing
    synchronizes: a step can be captured in a CUDA graph."""
    if workspace is not None and (not isinstance(workspace, torch.Tensor) or workspace.dtype != torch.uint8
                                  or workspace.dim() != 1 or not workspace.is_contiguous()):
        raise ValueError("sfa: workspace must be a contiguous 1-D uint8 torch.Tensor (sfa.decode_workspace)")
    wl, wr, scale = _decode_checks(q, k_cache, v_cache, page_table, seqused, kv_indices, mode, window, scale,
                                   q_hash, k_hash)
    if workspace is not None:  # on q's device
        _check_tensors((("q", q), ("workspace", workspace)))
    o, lse = _ops.decode_step(q, k_cache, v_cache, page_table, seqused, kv_indices, mode, bool(causal), scale, wl,
                              wr, k_hash, q_hash, bool(strict_causal), return_lse, workspace)
    return (o, lse) if return_lse else o


def kv_append(k_cache, v_cache, k_new, v_new, *, page_table=None, seqused=None, k_hash=None, k_hash_new=None):
    """Writes k_new, v_new [B, Hkv, Tn, D] into the cache in place, at the
    positions decode gives the new tokens: seqused[b] - Tn + t (seqused
    already counts them; None: the last Tn positions of the capacity). A row
    whose position is negative or whose page index is out of range is not
    written (sfa_kv_append). For mode hash give k_hash (decode's) and
    k_hash_new (int32 [B, Hkv, Tn], the new keys' buckets): they are written
    to k_hash at the same positions, in the same kernel (sfa_kv_append_hash)."""
    _check_rows((("k_new", k_new), ("v_new", v_new)), 4, "[B, Hkv, Tn, D]")
    _check_cache(k_cache, v_cache, page_table, seqused, k_new.dtype)
    _check_int32((("k_hash", k_hash), ("k_hash_new", k_hash_new)))
    if (k_hash is None) != (k_hash_new is None):
        raise ValueError("sfa: kv_append takes k_hash and k_hash_new together (the cache's buckets and the new "
                         "keys'), or neither")
    _check_tensors((("k_cache", k_cache), ("v_cache", v_cache), ("k_new", k_new), ("v_new", v_new),
                    ("page_table", page_table), ("seqused", seqused), ("k_hash", k_hash),
                    ("k_hash_new", k_hash_new)))
    _ops.kv_append_step(k_cache, v_cache, page_table, seqused, k_new, v_new, k_hash, k_hash_new)


def check_kv_cache(k_cache, v_cache, tn, *, page_table=None, seqused=None):
    """Checks seqused (in [tn, capacity]) and the page table (indices in range
    for the used positions) on the host; ValueError names the first bad entry.
    Synchronizes the current stream: a debugging aid."""
    tn = check_int("tn", tn, 1, 16)
    _check_cache(k_cache, v_cache, page_table, seqused, k_cache.dtype)
    _check_tensors((("k_cache", k_cache), ("v_cache", v_cache), ("page_table", page_table),
                    ("seqused", seqused)))
    _calls.check_kv_cache(k_cache, v_cache, page_table, seqused, tn)
