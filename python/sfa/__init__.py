"""sfa -- sparse flash attention kernels for PyTorch CUDA tensors.

A thin ctypes layer over libsfa (no compiled extension against PyTorch):
tensors are passed by data pointer and strides, launches go on the current
stream, and C errors come back as SfaError with the library's message.

    import sfa
    o = sfa.attention(q, k, v, causal=True)              # dense
    o = sfa.attention(q, k, v, mode="qk_drop", q_idx=qi, k_idx=ki)
    o = sfa.attention(q, k, v, mode="hash", q_idx=qi, k_idx=ki, q_hash=qh, k_hash=kh)
    o = sfa.attention(q, k, v, mode="window", window=(1023, 0), causal=True, bias=b)
"""
import ctypes
import threading

from . import _capi

__all__ = ["attention", "forward", "hash_prepare", "hash_unsort", "hash_attention", "topk_mask", "SfaError"]


class SfaError(RuntimeError):
    """A call into libsfa failed; the message is the library's."""


class _Context:
    _local = threading.local()

    @classmethod
    def get(cls):
        ctx = getattr(cls._local, "ctx", None)
        if ctx is None:
            opts = _capi.Options()
            _capi.lib.sfa_options_init(ctypes.byref(opts))
            handle = ctypes.c_void_p()
            st = _capi.lib.sfa_context_create(ctypes.byref(handle), ctypes.byref(opts))
            if st != 0:
                msg = _capi.lib.sfa_last_error(handle).decode() if handle else "context creation failed"
                if handle:
                    _capi.lib.sfa_context_destroy(handle)
                raise SfaError(msg)
            ctx = cls._local.ctx = handle
        return ctx


_TORCH_DTYPE = {}


def _dtype_code(t):
    import torch
    if not _TORCH_DTYPE:
        _TORCH_DTYPE.update({torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32",
                             torch.int32: "int32", torch.uint8: "uint8", torch.bool: "uint8"})
    name = _TORCH_DTYPE.get(t.dtype)
    if name is None:
        raise TypeError(f"sfa: dtype {t.dtype} is not supported")
    return _capi.DTYPE[name]


def _tensor(t, name):
    if t is None:
        return None
    if not t.is_cuda:
        raise ValueError(f"sfa: {name} must be a CUDA tensor")
    if t.dim() > _capi.SFA_MAX_RANK:
        raise ValueError(f"sfa: {name} has rank {t.dim()}, at most {_capi.SFA_MAX_RANK}")
    d = _capi.Tensor()
    d.data = t.data_ptr()
    d.dtype = _dtype_code(t)
    d.rank = t.dim()
    for i in range(t.dim()):
        d.shape[i] = t.shape[i]
        d.strides[i] = t.stride(i)
    return d


def _check(ctx, st):
    if st != 0:
        msg = _capi.lib.sfa_last_error(ctx).decode()
        if st == _capi.STATUS_INVALID_ARGUMENT:
            raise ValueError(f"sfa: {msg}")
        raise SfaError(f"sfa: {_capi.lib.sfa_status_string(st).decode()}: {msg}")


def _ref(d):
    return ctypes.byref(d) if d is not None else None


def _stream(t):
    import torch
    return ctypes.c_void_p(torch.cuda.current_stream(t.device).cuda_stream)


def hash_prepare(bucket, num_buckets, x, x2=None):
    """Sort x [B,H,T,D] (and x2 alike) by (bucket, position) per (b, h).
    Returns (x_sorted, x2_sorted or None, idx, hash) as mode "hash" expects."""
    import torch
    xs = torch.empty_like(x)
    x2s = torch.empty_like(x2) if x2 is not None else None
    idx = torch.empty(bucket.shape, device=bucket.device, dtype=torch.int32)
    hsh = torch.empty_like(idx)
    d = [_tensor(t, n) for t, n in ((bucket, "bucket"), (x, "x"), (xs, "x_sorted"), (x2, "x2"),
                                    (x2s, "x2_sorted"), (idx, "idx"), (hsh, "hash"))]
    ctx = _Context.get()
    st = _capi.lib.sfa_hash_prepare(ctx, _ref(d[0]), int(num_buckets), _ref(d[1]), _ref(d[2]), _ref(d[3]),
                                    _ref(d[4]), _ref(d[5]), _ref(d[6]), _stream(x))
    _check(ctx, st)
    return xs, x2s, idx, hsh


def hash_unsort(o_sorted, idx, out=None):
    """o[b, h, idx[b, h, i]] = o_sorted[b, h, i]."""
    import torch
    o = out if out is not None else torch.empty_like(o_sorted)
    d = [_tensor(t, n) for t, n in ((o_sorted, "o_sorted"), (idx, "idx"), (o, "o"))]
    ctx = _Context.get()
    _check(ctx, _capi.lib.sfa_hash_unsort(ctx, _ref(d[0]), _ref(d[1]), _ref(d[2]), _stream(o_sorted)))
    return o


def hash_attention(q, k, v, q_bucket, k_bucket, num_buckets, **kw):
    """Hash-sparse attention from unsorted tensors: sort, attend, scatter back."""
    qs, _, qi, qh = hash_prepare(q_bucket, num_buckets, q)
    ks, vs, ki, kh = hash_prepare(k_bucket, num_buckets, k, v)
    os_ = forward(qs, ks, vs, mode="hash", q_idx=qi, k_idx=ki, q_hash=qh, k_hash=kh, **kw)
    return hash_unsort(os_, qi)


def topk_mask(bias, w, causal=True, out=None):
    """uint8 mask of the w largest-bias allowed keys per query (flash-sparse-attn).
    The mask's rows are padded to a multiple of 16 bytes, as sfa_forward requires."""
    import torch
    if out is None:
        tk = bias.shape[-1]
        pad = (tk + 15) // 16 * 16
        out = torch.zeros(*bias.shape[:-1], pad, device=bias.device, dtype=torch.uint8)[..., :tk]
    d = [_tensor(bias, "bias"), _tensor(out, "mask")]
    ctx = _Context.get()
    _check(ctx, _capi.lib.sfa_topk_mask(ctx, _ref(d[0]), int(w), int(bool(causal)), _ref(d[1]), _stream(bias)))
    return out


def forward(q, k, v, *, mode="dense", causal=False, scale=None, window=(-1, -1), q_idx=None,
            k_idx=None, q_hash=None, k_hash=None, bias=None, mask=None, out=None, return_lse=False):
    """Forward pass. q [B, Hq, Tq, D], k/v [B, Hkv, Tk, D]; returns o (and lse)."""
    import torch
    if mode not in _capi.MODE:
        raise ValueError(f"sfa: mode must be one of {', '.join(_capi.MODE)}, not {mode!r}")
    o = out if out is not None else torch.empty_like(q)
    lse = torch.empty(q.shape[:-1], device=q.device, dtype=torch.float32) if q.dim() == 4 else None
    p = _capi.Params()
    _capi.lib.sfa_params_init(ctypes.byref(p))
    p.mode = _capi.MODE[mode]
    p.causal = int(bool(causal))
    p.scale = 0.0 if scale is None else float(scale)
    p.window_left, p.window_right = int(window[0]), int(window[1])
    keep = []
    ex = _capi.Extras()
    for name, t in (("q_idx", q_idx), ("k_idx", k_idx), ("q_hash", q_hash), ("k_hash", k_hash),
                    ("bias", bias), ("mask", mask)):
        d = _tensor(t, name)
        if d is not None:
            keep.append(d)
            setattr(ex, name, ctypes.pointer(d))
    tq, tk, tv, to = (_tensor(t, n) for t, n in ((q, "q"), (k, "k"), (v, "v"), (o, "o")))
    tl = _tensor(lse, "lse")
    ctx = _Context.get()
    stream = torch.cuda.current_stream(q.device).cuda_stream
    st = _capi.lib.sfa_forward(ctx, ctypes.byref(p), ctypes.byref(tq), ctypes.byref(tk), ctypes.byref(tv),
                               ctypes.byref(ex), ctypes.byref(to), ctypes.byref(tl) if tl else None,
                               ctypes.c_void_p(stream))
    _check(ctx, st)
    return (o, lse) if return_lse else o


def attention(q, k, v, **kw):
    """sfa attention output (forward only until the backward pass lands)."""
    return forward(q, k, v, **kw)
