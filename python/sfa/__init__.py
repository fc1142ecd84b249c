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

__all__ = ["attention", "forward", "SfaError"]


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
    if st != 0:
        msg = _capi.lib.sfa_last_error(ctx).decode()
        if st == _capi.STATUS_INVALID_ARGUMENT:
            raise ValueError(f"sfa: {msg}")
        raise SfaError(f"sfa: {_capi.lib.sfa_status_string(st).decode()}: {msg}")
    return (o, lse) if return_lse else o


def attention(q, k, v, **kw):
    """sfa attention output (forward only until the backward pass lands)."""
    return forward(q, k, v, **kw)
