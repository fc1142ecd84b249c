"""_ops.py -- sfa's calls as PyTorch custom operators (torch.library), so that
torch.compile(fullgraph=True) sees them as single graph nodes, and autograd.

  sfa::attention_fwd  (q, k, v, bias?, mask?, q_idx?, k_idx?, q_hash?, k_hash?, mode, causal,
                       scale?, window_left, window_right, deterministic, alibi_slopes? = None,
                       strict_causal = False, softcap = 0.0) -> (o, lse)
  sfa::attention_bwd  (dout, q, k, v, o, lse, extras..., the same options, bias_grad, dlse?,
                       alibi_slopes? = None, strict_causal = False, softcap = 0.0)
                       -> (dq, dk, dv, dbias)   dbias is an empty tensor unless bias_grad;
                       dlse: the gradient of lse (sfa_backward_dlse), None for none
  sfa::attention_varlen_fwd (q, k, v, cu_seqlens_q, cu_seqlens_k, q_idx?, k_idx?, q_hash?, k_hash?,
                       mode, causal, scale?, window_left, window_right, deterministic, bias? = None,
                       mask? = None) -> (o, lse)
                       packed sequences: q [total_q, Hq, D], lse [Hq, total_q]; window's bias
                       and mask [Hb, total_q|1, Kmax]
  sfa::attention_varlen_bwd (dout, q, k, v, o, lse, cu_seqlens_q, cu_seqlens_k, index arrays...,
                       the same options, bias? = None, mask? = None, bias_grad = False)
                       -> (dq, dk, dv, dbias)   dbias is an empty tensor unless bias_grad
  sfa::hash_prepare   (bucket, num_buckets, x?, x2?, cu_seqlens?) -> (idx, hash, x_sorted, x2_sorted)
                       x_sorted / x2_sorted are empty tensors where x / x2 are None
  sfa::hash_unsort    (o_sorted, idx, cu_seqlens?) -> o   (rows that idx does not name are 0)
  sfa::topk_mask      (bias, w, causal, cu_seqlens_q?, cu_seqlens_k?) -> mask (uint8, rows padded
                      to 16 bytes); with the prefix sums (packed sequences) the _varlen C calls
  sfa::merge_attention (o_parts [N, B, H, T, D], lse_parts [N, B, H, T], out_dtype) -> (o, lse)
  sfa::decode         (q, k_cache, v_cache, page_table?, seqused?, kv_indices?, mode, causal, scale?,
                       window_left, window_right, k_hash?, q_hash?, strict_causal) -> (o, lse)
                       no autograd (inference); k_hash, q_hash: mode hash's buckets
  sfa::kv_append      (k_cache!, v_cache!, page_table?, seqused?, k_new, v_new) -> None
                       writes the new rows into the cache (mutates k_cache, v_cache)
  sfa::kv_append_hash (k_cache!, v_cache!, k_hash!, page_table?, seqused?, k_new, v_new, k_hash_new)
                       -> None   kv_append, and k_hash_new's buckets into k_hash

Each has a fake (meta) implementation giving the output shapes and strides;
attention_fwd has its autograd formula (register_autograd): the backward is
attention_bwd, which takes the gradients of both o and lse (lse is
differentiable: dS gets P * dlse, folded into the backward's delta); index
arrays, the mask and the ALiBi slopes get no gradient; dbias only when the
bias requires grad (attention_varlen_fwd's alike, through attention_varlen_bwd). merge_attention's backward is torch ops (w_n = exp(lse_n
- lse), 0 where lse_n = -inf): do_n = w_n * do, dlse_n = w_n * (sum_d do *
(o_n - o) + dlse). The real implementations are the calls of _calls.py.

decode_step and kv_append_step are what sfa.decode and sfa.kv_append call: in
plain eager mode (no torch.compile, no tracing or dispatch mode, plain tensors
that need no gradient) they call the implementation directly, which is what
the custom op would run, without its dispatch (about a third of a decode
step's host time); anything else goes through the custom op."""
from typing import Optional, Tuple

import torch
from torch import Tensor

from . import _calls

_EMPTY = (0,)


# ------------------------------------------------------------------ attention

@torch.library.custom_op("sfa::attention_fwd", mutates_args=())
def attention_fwd(q: Tensor, k: Tensor, v: Tensor, bias: Optional[Tensor], mask: Optional[Tensor],
                  q_idx: Optional[Tensor], k_idx: Optional[Tensor], q_hash: Optional[Tensor],
                  k_hash: Optional[Tensor], mode: str, causal: bool, scale: Optional[float], window_left: int,
                  window_right: int, deterministic: bool, alibi_slopes: Optional[Tensor] = None,
                  strict_causal: bool = False, softcap: float = 0.0) -> Tuple[Tensor, Tensor]:
    o = _calls.out_like(q)
    lse = torch.empty(q.shape[:-1], device=q.device, dtype=torch.float32)
    _calls.forward_into(q, k, v, o, lse, mode, causal, scale, window_left, window_right,
                        dict(q_idx=q_idx, k_idx=k_idx, q_hash=q_hash, k_hash=k_hash, bias=bias, mask=mask,
                             alibi_slopes=alibi_slopes), strict_causal, softcap)
    return o, lse


@attention_fwd.register_fake
def _(q, k, v, bias, mask, q_idx, k_idx, q_hash, k_hash, mode, causal, scale, window_left, window_right,
      deterministic, alibi_slopes=None, strict_causal=False, softcap=0.0):
    return _calls.out_like(q), q.new_empty(q.shape[:-1], dtype=torch.float32)


@torch.library.custom_op("sfa::attention_bwd", mutates_args=())
def attention_bwd(dout: Tensor, q: Tensor, k: Tensor, v: Tensor, o: Tensor, lse: Tensor, bias: Optional[Tensor],
                  mask: Optional[Tensor], q_idx: Optional[Tensor], k_idx: Optional[Tensor],
                  q_hash: Optional[Tensor], k_hash: Optional[Tensor], mode: str, causal: bool,
                  scale: Optional[float], window_left: int, window_right: int, deterministic: bool,
                  bias_grad: bool, dlse: Optional[Tensor] = None, alibi_slopes: Optional[Tensor] = None,
                  strict_causal: bool = False, softcap: float = 0.0) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    dq, dk, dv = _calls.out_like(q), _calls.out_like(k), _calls.out_like(v)
    with_db = bias_grad and bias is not None
    db = torch.empty(bias.shape, device=bias.device, dtype=bias.dtype) if with_db else q.new_empty(_EMPTY)
    _calls.backward_into(dout, q, k, v, o, lse, dq, dk, dv, db if with_db else None, mode, causal, scale,
                         window_left, window_right, deterministic,
                         dict(q_idx=q_idx, k_idx=k_idx, q_hash=q_hash, k_hash=k_hash, bias=bias, mask=mask,
                              alibi_slopes=alibi_slopes), strict_causal, softcap, dlse)
    return dq, dk, dv, db


@attention_bwd.register_fake
def _(dout, q, k, v, o, lse, bias, mask, q_idx, k_idx, q_hash, k_hash, mode, causal, scale, window_left,
      window_right, deterministic, bias_grad, dlse=None, alibi_slopes=None, strict_causal=False, softcap=0.0):
    if bias_grad and bias is not None:
        db = bias.new_empty(bias.shape)
    else:
        db = q.new_empty(_EMPTY)
    return _calls.out_like(q), _calls.out_like(k), _calls.out_like(v), db


def _fwd_setup_context(ctx, inputs, output):
    (q, k, v, bias, mask, q_idx, k_idx, q_hash, k_hash, mode, causal, scale, window_left, window_right,
     deterministic, alibi_slopes, strict_causal, softcap) = inputs
    o, lse = output
    ctx.save_for_backward(q, k, v, o, lse, bias, mask, q_idx, k_idx, q_hash, k_hash, alibi_slopes)
    ctx.options = (mode, causal, scale, window_left, window_right, deterministic)
    ctx.score = (strict_causal, softcap)


def _fwd_backward(ctx, dout, dlse):
    q, k, v, o, lse, bias, mask, q_idx, k_idx, q_hash, k_hash, alibi_slopes = ctx.saved_tensors
    bias_grad = bias is not None and ctx.needs_input_grad[3]
    if dout is None:  # only lse was used
        dout = torch.zeros_like(o)
    dq, dk, dv, db = attention_bwd(dout, q, k, v, o, lse, bias, mask, q_idx, k_idx, q_hash, k_hash,
                                   *ctx.options, bias_grad, dlse, alibi_slopes, *ctx.score)
    return (dq, dk, dv, db if bias_grad else None) + (None,) * 14


attention_fwd.register_autograd(_fwd_backward, setup_context=_fwd_setup_context)


# ------------------------------------------------------------------ packed sequences

def _varlen_extras(cu_seqlens_q, cu_seqlens_k, q_idx, k_idx, q_hash, k_hash, bias=None, mask=None,
                   max_seqlen_k=0):
    return dict(q_idx=q_idx, k_idx=k_idx, q_hash=q_hash, k_hash=k_hash, cu_seqlens_q=cu_seqlens_q,
                cu_seqlens_k=cu_seqlens_k, bias=bias, mask=mask, max_seqlen_k=max_seqlen_k)


@torch.library.custom_op("sfa::attention_varlen_fwd", mutates_args=())
def attention_varlen_fwd(q: Tensor, k: Tensor, v: Tensor, cu_seqlens_q: Tensor, cu_seqlens_k: Tensor,
                         q_idx: Optional[Tensor], k_idx: Optional[Tensor], q_hash: Optional[Tensor],
                         k_hash: Optional[Tensor], mode: str, causal: bool, scale: Optional[float],
                         window_left: int, window_right: int, deterministic: bool, bias: Optional[Tensor] = None,
                         mask: Optional[Tensor] = None, max_seqlen_k: int = 0) -> Tuple[Tensor, Tensor]:
    o = _calls.out_like(q)
    lse = torch.empty((q.shape[1], q.shape[0]), device=q.device, dtype=torch.float32)
    _calls.forward_into(q, k, v, o, lse, mode, causal, scale, window_left, window_right,
                        _varlen_extras(cu_seqlens_q, cu_seqlens_k, q_idx, k_idx, q_hash, k_hash, bias, mask,
                                       max_seqlen_k))
    return o, lse


@attention_varlen_fwd.register_fake
def _(q, k, v, cu_seqlens_q, cu_seqlens_k, q_idx, k_idx, q_hash, k_hash, mode, causal, scale, window_left,
      window_right, deterministic, bias=None, mask=None, max_seqlen_k=0):
    return _calls.out_like(q), q.new_empty((q.shape[1], q.shape[0]), dtype=torch.float32)


@torch.library.custom_op("sfa::attention_varlen_bwd", mutates_args=())
def attention_varlen_bwd(dout: Tensor, q: Tensor, k: Tensor, v: Tensor, o: Tensor, lse: Tensor,
                         cu_seqlens_q: Tensor, cu_seqlens_k: Tensor, q_idx: Optional[Tensor],
                         k_idx: Optional[Tensor], q_hash: Optional[Tensor], k_hash: Optional[Tensor], mode: str,
                         causal: bool, scale: Optional[float], window_left: int, window_right: int,
                         deterministic: bool, bias: Optional[Tensor] = None, mask: Optional[Tensor] = None,
                         bias_grad: bool = False) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    dq, dk, dv = _calls.out_like(q), _calls.out_like(k), _calls.out_like(v)
    with_db = bias_grad and bias is not None
    db = torch.empty(bias.shape, device=bias.device, dtype=bias.dtype) if with_db else q.new_empty(_EMPTY)
    _calls.backward_into(dout, q, k, v, o, lse, dq, dk, dv, db if with_db else None, mode, causal, scale,
                         window_left, window_right, deterministic,
                         _varlen_extras(cu_seqlens_q, cu_seqlens_k, q_idx, k_idx, q_hash, k_hash, bias, mask))
    return dq, dk, dv, db


@attention_varlen_bwd.register_fake
def _(dout, q, k, v, o, lse, cu_seqlens_q, cu_seqlens_k, q_idx, k_idx, q_hash, k_hash, mode, causal, scale,
      window_left, window_right, deterministic, bias=None, mask=None, bias_grad=False):
    db = bias.new_empty(bias.shape) if bias_grad and bias is not None else q.new_empty(_EMPTY)
    return _calls.out_like(q), _calls.out_like(k), _calls.out_like(v), db


def _varlen_setup_context(ctx, inputs, output):
    (q, k, v, cu_q, cu_k, q_idx, k_idx, q_hash, k_hash, mode, causal, scale, window_left, window_right,
     deterministic, bias, mask, _max_seqlen_k) = inputs
    o, lse = output
    ctx.save_for_backward(q, k, v, o, lse, cu_q, cu_k, q_idx, k_idx, q_hash, k_hash, bias, mask)
    ctx.options = (mode, causal, scale, window_left, window_right, deterministic)
    ctx.mark_non_differentiable(lse)


def _varlen_backward(ctx, dout, dlse):
    q, k, v, o, lse, cu_q, cu_k, q_idx, k_idx, q_hash, k_hash, bias, mask = ctx.saved_tensors
    bias_grad = bias is not None and ctx.needs_input_grad[15]
    dq, dk, dv, db = attention_varlen_bwd(dout, q, k, v, o, lse, cu_q, cu_k, q_idx, k_idx, q_hash, k_hash,
                                          *ctx.options, bias, mask, bias_grad)
    return (dq, dk, dv) + (None,) * 12 + (db if bias_grad else None, None, None)


attention_varlen_fwd.register_autograd(_varlen_backward, setup_context=_varlen_setup_context)


# ------------------------------------------------------------------ sparse helpers

@torch.library.custom_op("sfa::hash_prepare", mutates_args=())
def hash_prepare(bucket: Tensor, num_buckets: int, x: Optional[Tensor], x2: Optional[Tensor],
                 cu_seqlens: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    idx = torch.empty(bucket.shape, device=bucket.device, dtype=torch.int32)
    hsh = torch.empty(bucket.shape, device=bucket.device, dtype=torch.int32)
    xs = torch.empty_like(x) if x is not None else bucket.new_empty(_EMPTY)
    x2s = torch.empty_like(x2) if x2 is not None else bucket.new_empty(_EMPTY)
    _calls.hash_prepare_into(bucket, num_buckets, x, xs if x is not None else None, x2,
                             x2s if x2 is not None else None, idx, hsh, cu_seqlens)
    return idx, hsh, xs, x2s


@hash_prepare.register_fake
def _(bucket, num_buckets, x, x2, cu_seqlens=None):
    idx = bucket.new_empty(bucket.shape, dtype=torch.int32)
    hsh = bucket.new_empty(bucket.shape, dtype=torch.int32)
    xs = torch.empty_like(x) if x is not None else bucket.new_empty(_EMPTY)
    x2s = torch.empty_like(x2) if x2 is not None else bucket.new_empty(_EMPTY)
    return idx, hsh, xs, x2s


@torch.library.custom_op("sfa::hash_unsort", mutates_args=())
def hash_unsort(o_sorted: Tensor, idx: Tensor, cu_seqlens: Optional[Tensor] = None) -> Tensor:
    o = torch.zeros_like(o_sorted)
    _calls.hash_unsort_into(o_sorted, idx, o, cu_seqlens)
    return o


@hash_unsort.register_fake
def _(o_sorted, idx, cu_seqlens=None):
    return torch.empty_like(o_sorted)


def _topk_out(bias):
    tk = bias.shape[-1]
    pad = (tk + 15) // 16 * 16
    return bias.new_zeros((*bias.shape[:-1], pad), dtype=torch.uint8)[..., :tk]


@torch.library.custom_op("sfa::topk_mask", mutates_args=())
def topk_mask(bias: Tensor, w: int, causal: bool, cu_seqlens_q: Optional[Tensor] = None,
              cu_seqlens_k: Optional[Tensor] = None) -> Tensor:
    out = _topk_out(bias)
    _calls.topk_mask_into(bias, w, causal, out, cu_seqlens_q, cu_seqlens_k)
    return out


@topk_mask.register_fake
def _(bias, w, causal, cu_seqlens_q=None, cu_seqlens_k=None):
    return _topk_out(bias)


# ------------------------------------------------------------------ merging partial attentions

_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


@torch.library.custom_op("sfa::merge_attention", mutates_args=())
def merge_attention(o_parts: Tensor, lse_parts: Tensor, out_dtype: str) -> Tuple[Tensor, Tensor]:
    o = o_parts.new_empty(o_parts.shape[1:], dtype=_DTYPES[out_dtype])
    lse = lse_parts.new_empty(lse_parts.shape[1:])
    _calls.merge_into(o_parts, lse_parts, o, lse)
    return o, lse


@merge_attention.register_fake
def _(o_parts, lse_parts, out_dtype):
    return (o_parts.new_empty(o_parts.shape[1:], dtype=_DTYPES[out_dtype]),
            lse_parts.new_empty(lse_parts.shape[1:]))


def _merge_setup_context(ctx, inputs, output):
    o_parts, lse_parts, _ = inputs
    o, lse = output
    ctx.save_for_backward(o_parts, lse_parts, o, lse)


def _merge_backward(ctx, do, dlse):
    o_parts, lse_parts, o, lse = ctx.saved_tensors
    empty = lse_parts == float("-inf")  # parts that saw no key: weight 0, their o never read
    w = torch.where(empty, 0.0, torch.exp(lse_parts - lse.unsqueeze(0)))
    dlse_parts = torch.zeros_like(lse_parts)
    do_parts = None
    if do is not None:
        do32 = do.float().unsqueeze(0)
        dot = ((o_parts.float() - o.float().unsqueeze(0)) * do32).sum(-1)
        dlse_parts = dlse_parts + torch.where(empty, 0.0, w * dot)
        do_parts = (w.unsqueeze(-1) * do32).to(o_parts.dtype)
    if dlse is not None:
        dlse_parts = dlse_parts + w * dlse.unsqueeze(0)
    return do_parts, dlse_parts, None


merge_attention.register_autograd(_merge_backward, setup_context=_merge_setup_context)


# ------------------------------------------------------------------ decoding

def _decode(q, k_cache, v_cache, page_table, seqused, kv_indices, mode, causal, scale, window_left,
            window_right, k_hash, q_hash, strict_causal, with_lse, workspace=None):
    """sfa::decode's implementation: (o, lse), lse None unless with_lse."""
    o = _calls.out_like(q)
    lse = q.new_empty(q.shape[:-1], dtype=torch.float32) if with_lse else None
    _calls.decode_into(q, k_cache, v_cache, page_table, seqused, kv_indices, o, lse, mode, causal, scale,
                       window_left, window_right, k_hash, q_hash, strict_causal, workspace=workspace)
    return o, lse


@torch.library.custom_op("sfa::decode", mutates_args=())
def decode(q: Tensor, k_cache: Tensor, v_cache: Tensor, page_table: Optional[Tensor],
           seqused: Optional[Tensor], kv_indices: Optional[Tensor], mode: str, causal: bool,
           scale: Optional[float], window_left: int, window_right: int, k_hash: Optional[Tensor] = None,
           q_hash: Optional[Tensor] = None, strict_causal: bool = False) -> Tuple[Tensor, Tensor]:
    return _decode(q, k_cache, v_cache, page_table, seqused, kv_indices, mode, causal, scale, window_left,
                   window_right, k_hash, q_hash, strict_causal, True)


@decode.register_fake
def _(q, k_cache, v_cache, page_table, seqused, kv_indices, mode, causal, scale, window_left, window_right,
      k_hash=None, q_hash=None, strict_causal=False):
    return _calls.out_like(q), q.new_empty(q.shape[:-1], dtype=torch.float32)


# sfa::decode in a workspace of the caller's (sfa_decode_with_workspace), which
# the call mutates: an op of its own, with the workspace required (a mutable
# argument that defaults to None is not one torch's ADInplaceOrView handles
# when it is left out), and attn_mode for sfa::decode's mode (torch.compile's
# auto_functionalized_v2, which wraps ops that mutate, has a `mode` of its own).
@torch.library.custom_op("sfa::decode_ws", mutates_args=("workspace",))
def decode_ws(q: Tensor, k_cache: Tensor, v_cache: Tensor, page_table: Optional[Tensor],
              seqused: Optional[Tensor], kv_indices: Optional[Tensor], attn_mode: str, causal: bool,
              scale: Optional[float], window_left: int, window_right: int, k_hash: Optional[Tensor],
              q_hash: Optional[Tensor], strict_causal: bool, workspace: Tensor) -> Tuple[Tensor, Tensor]:
    return _decode(q, k_cache, v_cache, page_table, seqused, kv_indices, attn_mode, causal, scale, window_left,
                   window_right, k_hash, q_hash, strict_causal, True, workspace)


@decode_ws.register_fake
def _(q, k_cache, v_cache, page_table, seqused, kv_indices, attn_mode, causal, scale, window_left, window_right,
      k_hash, q_hash, strict_causal, workspace):
    return _calls.out_like(q), q.new_empty(q.shape[:-1], dtype=torch.float32)


@torch.library.custom_op("sfa::kv_append", mutates_args=("k_cache", "v_cache"))
def kv_append(k_cache: Tensor, v_cache: Tensor, page_table: Optional[Tensor], seqused: Optional[Tensor],
              k_new: Tensor, v_new: Tensor) -> None:
    _calls.kv_append_into(k_cache, v_cache, page_table, seqused, k_new, v_new)


@kv_append.register_fake
def _(k_cache, v_cache, page_table, seqused, k_new, v_new):
    return None


@torch.library.custom_op("sfa::kv_append_hash", mutates_args=("k_cache", "v_cache", "k_hash"))
def kv_append_hash(k_cache: Tensor, v_cache: Tensor, k_hash: Tensor, page_table: Optional[Tensor],
                   seqused: Optional[Tensor], k_new: Tensor, v_new: Tensor, k_hash_new: Tensor) -> None:
    _calls.kv_append_into(k_cache, v_cache, page_table, seqused, k_new, v_new, k_hash, k_hash_new)


@kv_append_hash.register_fake
def _(k_cache, v_cache, k_hash, page_table, seqused, k_new, v_new, k_hash_new):
    return None


def _plain_eager(*tensors):
    """True when calling an op's implementation directly does what the custom
    op would: nothing traces or transforms the call and no tensor needs a
    gradient (decode and kv_append have no autograd formula)."""
    if torch.compiler.is_compiling() or torch._C._len_torch_dispatch_stack() != 0:
        return False
    for t in tensors:
        if t is not None and (type(t) is not torch.Tensor or t.requires_grad):
            return False
    return True


def decode_step(q, k_cache, v_cache, page_table, seqused, kv_indices, mode, causal, scale, window_left,
                window_right, k_hash, q_hash, strict_causal, return_lse, workspace=None):
    """sfa::decode, or its implementation directly in plain eager mode (which
    then makes no lse unless asked for): (o, lse or None)."""
    args = (q, k_cache, v_cache, page_table, seqused, kv_indices, mode, causal, scale, window_left, window_right,
            k_hash, q_hash, strict_causal)
    if not _plain_eager(q, k_cache, v_cache, page_table, seqused, kv_indices, k_hash, q_hash, workspace):
        return decode(*args) if workspace is None else decode_ws(*args, workspace)
    return _decode(*args, return_lse, workspace)


def kv_append_step(k_cache, v_cache, page_table, seqused, k_new, v_new, k_hash=None, k_hash_new=None):
    """sfa::kv_append (sfa::kv_append_hash with k_hash), or their
    implementation directly in plain eager mode."""
    if _plain_eager(k_cache, v_cache, page_table, seqused, k_new, v_new, k_hash, k_hash_new):
        _calls.kv_append_into(k_cache, v_cache, page_table, seqused, k_new, v_new, k_hash, k_hash_new)
    elif k_hash is None:
        kv_append(k_cache, v_cache, page_table, seqused, k_new, v_new)
    else:
        kv_append_hash(k_cache, v_cache, k_hash, page_table, seqused, k_new, v_new, k_hash_new)
