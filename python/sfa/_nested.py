"""_nested.py -- torch nested tensors with layout=torch.jagged (NJTs) for
sfa.attention, in SDPA's convention: q, k, v [B, H, j, D], the
transpose(1, 2) of a [B, j, H, D] jagged tensor. packed() checks them and
gives the packed layout of attention_varlen (values [total, H, D] and
cu_seqlens int32 from the offsets); unpacked() wraps the packed output back
into an NJT with q's offsets. Both are views, so autograd carries the
gradients to the values of q, k and v."""
import torch

# attention() options that have no meaning (or no packed implementation) with NJTs
_UNSUPPORTED = ("q_idx", "k_idx", "q_hash", "k_hash", "bias", "mask", "alibi_slopes")


def any_nested(*ts):
    return any(isinstance(t, torch.Tensor) and t.is_nested for t in ts)


def _sequences(n, t):
    """t [B, H, j, D] as [B, j, H, D], checked."""
    if not isinstance(t, torch.Tensor) or not t.is_nested:
        what = type(t).__name__ if not isinstance(t, torch.Tensor) else f"a dense tensor {tuple(t.shape)}"
        raise ValueError(f"sfa: q, k and v must be all nested (layout=torch.jagged) or all dense; {n} is {what}")
    if t.layout != torch.jagged:
        raise ValueError(f"sfa: {n} is a nested tensor of layout {t.layout}; only layout=torch.jagged is supported "
                         "(torch.nested.nested_tensor(..., layout=torch.jagged) or "
                         "torch.nested.nested_tensor_from_jagged)")
    if t.dim() != 4 or getattr(t, "_ragged_idx", None) != 2:
        raise ValueError(f"sfa: {n}: nested shape {tuple(t.shape)} with the ragged dim {getattr(t, '_ragged_idx', '?')}; "
                         "must be [B, H, j, D], ragged in dim 2 (SDPA's convention: x.transpose(1, 2) of a "
                         "[B, j, H, D] jagged tensor)")
    s = t.transpose(1, 2)
    if s.lengths() is not None:
        raise ValueError(f"sfa: {n} is a non-contiguous jagged tensor (it has lengths(): holes between its "
                         "sequences); call .contiguous() on it first")
    return s


def check_options(mode, causal, causal_align, q, k, options):
    """Options of attention() that the nested path does not take."""
    if mode not in ("dense", "window"):
        raise ValueError(f"sfa: mode {mode!r} with nested (jagged) q, k, v: modes dense and window only; use "
                         "attention_varlen with packed tensors and index arrays [H, total] for the sparse modes")
    for n in _UNSUPPORTED:
        if options.get(n) is not None:
            raise ValueError(f"sfa: {n} is not supported with nested (jagged) q, k, v")
    if options.get("softcap"):
        raise ValueError("sfa: softcap is not supported with nested (jagged) q, k, v")
    if options.get("strict_causal"):
        raise ValueError("sfa: strict_causal is not supported with nested (jagged) q, k, v (modes qk_drop and hash "
                         "only)")
    if causal_align == "top_left" and (causal or mode == "window") and q.shape[2] != k.shape[2]:
        raise ValueError("sfa: top-left alignment (causal_align='top_left', or SDPA's is_causal) of nested q and k "
                         "of different sequence lengths (another ragged structure) is not supported: each sequence "
                         "is aligned bottom-right, as attention_varlen; with k sharing q's offsets both alignments "
                         "are the same")


def check_heads(q, k, enable_gqa):
    """SDPA's rule: as many query heads as key heads unless enable_gqa."""
    hq, hk = _sequences("query", q).size(2), _sequences("key", k).size(2)
    if hq != hk and not enable_gqa:
        raise ValueError(f"sfa: query has {hq} heads and key/value {hk}; pass enable_gqa=True for grouped-query "
                         "attention (as in torch's SDPA)")


def packed(q, k, v):
    """(q, k, v values [total, H, D], cu_seqlens_q, cu_seqlens_k int32) of
    NJTs [B, H, j, D]. k and v must share their sequences; q's may differ."""
    qs, ks, vs = _sequences("q", q), _sequences("k", k), _sequences("v", v)
    if not q.size(0) == k.size(0) == v.size(0):
        raise ValueError(f"sfa: nested q, k, v hold {q.size(0)}, {k.size(0)}, {v.size(0)} sequences; the batch "
                         "sizes must agree")
    ko, vo = ks.offsets(), vs.offsets()
    if ko is not vo and k.shape[2] != v.shape[2]:
        # different offsets tensors: the same lengths? (a host sync, only here)
        if ko.device != vo.device or ko.shape != vo.shape or not torch.equal(ko, vo):
            raise ValueError("sfa: nested k and v have different sequence lengths (offsets); v must have k's")
    cu_q = qs.offsets().to(torch.int32)
    cu_k = cu_q if ks.offsets() is qs.offsets() else ko.to(torch.int32)
    return qs.values(), ks.values(), vs.values(), cu_q, cu_k


def unpacked(q, o, lse=None):
    """o [total, Hq, D] (and lse float32 [Hq, total]) as NJTs [B, Hq, j, D]
    (and [B, Hq, j]) with q's offsets."""
    qs = q.transpose(1, 2)
    off, lo, hi = qs.offsets(), getattr(qs, "_maybe_min_seqlen", None), getattr(qs, "_maybe_max_seqlen", None)

    def wrap(x):
        return torch.nested.nested_tensor_from_jagged(x, off, min_seqlen=lo, max_seqlen=hi).transpose(1, 2)
    return wrap(o) if lse is None else (wrap(o), wrap(lse.t()))
