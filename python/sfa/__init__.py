"""sfa -- sparse flash attention kernels for PyTorch CUDA tensors.

A thin ctypes layer over libsfa (no compiled extension against PyTorch):
tensors are passed by data pointer and strides, launches go on the current
stream, and C errors come back as SfaError with the library's message.

    import sfa
    o = sfa.attention(q, k, v, causal=True)              # dense
    o = sfa.attention(q, k, v, mode="qk_drop", q_idx=qi, k_idx=ki)
    o = sfa.attention(q, k, v, mode="hash", q_idx=qi, k_idx=ki, q_hash=qh, k_hash=kh)
    o = sfa.attention(q, k, v, mode="window", window=(1023, 0), causal=True, bias=b)
    o.float().pow(2).mean().backward()   # attention() is differentiable (torch.autograd)

attention() trains: it is a torch.autograd.Function whose backward calls
sfa_backward (dq, dk, dv, and dbias when the bias requires grad). forward() and
backward() are the plain calls underneath (no autograd). hash_attention() is
differentiable too: when a gradient is needed it gathers with torch ops and
attends with attention() (see its docstring).

Errors: a wrong argument (shape, stride, dtype, mode...) raises ValueError with
the library's message; a valid request this build cannot serve (e.g. the
backward pass for a head dim above 128 that is not a multiple of 32) raises
SfaUnsupportedError, which is both an SfaError and a NotImplementedError; other
failures raise SfaError.
"""
import ctypes
import threading

from . import _capi

__all__ = ["attention", "forward", "backward", "hash_prepare", "hash_unsort", "hash_attention", "topk_mask",
           "SfaError", "SfaUnsupportedError"]


class SfaError(RuntimeError):
    """A call into libsfa failed; the message is the library's."""


class SfaUnsupportedError(SfaError, NotImplementedError):
    """A valid request that this build of libsfa cannot serve (SFA_ERR_UNSUPPORTED),
    e.g. sfa_backward with head dim 144."""


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
        raise ValueError(f"sfa: dtype {t.dtype} is not supported")
    return _capi.DTYPE[name]


def _check_qkv(q, k, v):
    """What the C validation cannot see (or sees only on a CUDA tensor): the
    tensor type, q/k/v dtypes and the device. Shapes and strides are left to
    the library, whose message names the argument."""
    import torch
    for t, n in ((q, "q"), (k, "k"), (v, "v")):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"sfa: {n} must be a torch.Tensor, not {type(t).__name__}")
        if t.dtype not in (torch.float16, torch.bfloat16):
            raise ValueError(f"sfa: {n}: dtype {t.dtype} is not supported; must be torch.float16 or "
                             "torch.bfloat16")
        if t.dtype != q.dtype:
            raise ValueError(f"sfa: {n}: dtype {t.dtype} does not match q ({q.dtype})")
    for t, n in ((q, "q"), (k, "k"), (v, "v")):
        if not t.is_cuda:
            raise ValueError(f"sfa: {n} must be a CUDA tensor (it is on {t.device})")


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
        err = SfaUnsupportedError if st == _capi.STATUS_UNSUPPORTED else SfaError
        raise err(f"sfa: {_capi.lib.sfa_status_string(st).decode()}: {msg}")


def _ref(d):
    return ctypes.byref(d) if d is not None else None


def _stream(t):
    import torch
    return ctypes.c_void_p(torch.cuda.current_stream(t.device).cuda_stream)


def hash_prepare(bucket, num_buckets, x, x2=None):
    """Sort x [B,H,T,D] (and x2 alike) by (bucket, position) per (b, h).
    Returns (x_sorted, x2_sorted or None, idx, hash) as mode "hash" expects.
    x may be None: then only idx and hash are made (x_sorted is None)."""
    import torch
    xs = torch.empty_like(x) if x is not None else None
    x2s = torch.empty_like(x2) if x2 is not None else None
    idx = torch.empty(bucket.shape, device=bucket.device, dtype=torch.int32)
    hsh = torch.empty_like(idx)
    d = [_tensor(t, n) for t, n in ((bucket, "bucket"), (x, "x"), (xs, "x_sorted"), (x2, "x2"),
                                    (x2s, "x2_sorted"), (idx, "idx"), (hsh, "hash"))]
    ctx = _Context.get()
    st = _capi.lib.sfa_hash_prepare(ctx, _ref(d[0]), int(num_buckets), _ref(d[1]), _ref(d[2]), _ref(d[3]),
                                    _ref(d[4]), _ref(d[5]), _ref(d[6]), _stream(bucket))
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
    """Hash-sparse attention from unsorted tensors: sort by (bucket, position),
    attend (mode "hash"), scatter the output back to the original order.
    q [B,Hq,T,D] with q_bucket int32 [B,Hq,T]; k, v [B,Hkv,T,D] with k_bucket
    int32 [B,Hkv,T]; kw: scale, deterministic.

    Differentiable: when a gradient is needed (grad mode on and q, k or v
    requires grad), sfa_hash_prepare makes only the permutation (idx, hash),
    the rows are gathered and the output scattered back with torch ops
    (torch.gather / Tensor.scatter, whose gradients are the inverse
    permutation), and the sorted call goes through attention(), so q, k and v
    get exact gradients. Without a gradient the sort, gather and scatter are
    sfa's kernels (sfa_hash_prepare / sfa_hash_unsort), which are faster; both
    paths give the same output. The bucket ids get no gradient."""
    import torch
    _check_qkv(q, k, v)
    hkw = dict(mode="hash", **kw)
    if not (torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))):
        qs, _, qi, qh = hash_prepare(q_bucket, num_buckets, q)
        ks, vs, ki, kh = hash_prepare(k_bucket, num_buckets, k, v)
        os_ = attention(qs, ks, vs, q_idx=qi, k_idx=ki, q_hash=qh, k_hash=kh, **hkw)
        return hash_unsort(os_, qi)
    _, _, qi, qh = hash_prepare(q_bucket, num_buckets, None)
    _, _, ki, kh = hash_prepare(k_bucket, num_buckets, None)
    qsel, ksel = qi.long().unsqueeze(-1), ki.long().unsqueeze(-1)
    qs = torch.gather(q, 2, qsel.expand(-1, -1, -1, q.shape[-1]))
    ks = torch.gather(k, 2, ksel.expand(-1, -1, -1, k.shape[-1]))
    vs = torch.gather(v, 2, ksel.expand(-1, -1, -1, v.shape[-1]))
    os_ = attention(qs, ks, vs, q_idx=qi, k_idx=ki, q_hash=qh, k_hash=kh, **hkw)
    # idx is a permutation of 0..T-1 per (b, h), so every row is written
    return torch.zeros_like(os_).scatter(2, qsel.expand(-1, -1, -1, os_.shape[-1]), os_)


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


def _check_mode(mode):
    if mode not in _capi.MODE:
        raise ValueError(f"sfa: mode must be one of {', '.join(_capi.MODE)}, not {mode!r}")


def _params_extras(mode, causal, scale, window, deterministic, extras):
    """Params and Extras structs (and the Tensor structs they point at, which
    the caller keeps alive until the call returns)."""
    _check_mode(mode)
    p = _capi.Params()
    _capi.lib.sfa_params_init(ctypes.byref(p))
    p.mode = _capi.MODE[mode]
    p.causal = int(bool(causal))
    p.scale = 0.0 if scale is None else float(scale)
    p.window_left, p.window_right = int(window[0]), int(window[1])
    p.deterministic = int(bool(deterministic))
    keep = []
    ex = _capi.Extras()
    for name in ("q_idx", "k_idx", "q_hash", "k_hash", "bias", "mask"):
        d = _tensor(extras.get(name), name)
        if d is not None:
            keep.append(d)
            setattr(ex, name, ctypes.pointer(d))
    return p, ex, keep


def forward(q, k, v, *, mode="dense", causal=False, scale=None, window=(-1, -1), q_idx=None,
            k_idx=None, q_hash=None, k_hash=None, bias=None, mask=None, out=None, return_lse=False):
    """Forward pass, no autograd. q [B, Hq, Tq, D], k/v [B, Hkv, Tk, D]; returns o (and lse)."""
    import torch
    _check_mode(mode)
    _check_qkv(q, k, v)
    p, ex, keep = _params_extras(mode, causal, scale, window, False,
                                 dict(q_idx=q_idx, k_idx=k_idx, q_hash=q_hash, k_hash=k_hash,
                                      bias=bias, mask=mask))
    o = out if out is not None else torch.empty_like(q)
    lse = torch.empty(q.shape[:-1], device=q.device, dtype=torch.float32) if q.dim() == 4 else None
    tq, tk, tv, to = (_tensor(t, n) for t, n in ((q, "q"), (k, "k"), (v, "v"), (o, "o")))
    tl = _tensor(lse, "lse")
    ctx = _Context.get()
    stream = torch.cuda.current_stream(q.device).cuda_stream
    st = _capi.lib.sfa_forward(ctx, ctypes.byref(p), ctypes.byref(tq), ctypes.byref(tk), ctypes.byref(tv),
                               ctypes.byref(ex), ctypes.byref(to), ctypes.byref(tl) if tl else None,
                               ctypes.c_void_p(stream))
    _check(ctx, st)
    return (o, lse) if return_lse else o


def backward(q, k, v, o, lse, dout, *, mode="dense", causal=False, scale=None, window=(-1, -1),
             q_idx=None, k_idx=None, q_hash=None, k_hash=None, bias=None, mask=None,
             deterministic=False, bias_grad=False):
    """Gradients of forward, no autograd: returns (dq, dk, dv, dbias or None).
    o and lse are forward's outputs (forward(..., return_lse=True)); dout has
    o's shape with the last dim contiguous and 16-byte aligned rows. dbias is
    made when bias_grad is true and there is a bias. Head dims: multiples of
    16 up to 128, and 160, 192, 224, 256 (SfaUnsupportedError otherwise)."""
    import torch
    _check_mode(mode)
    _check_qkv(q, k, v)
    p, ex, keep = _params_extras(mode, causal, scale, window, deterministic,
                                 dict(q_idx=q_idx, k_idx=k_idx, q_hash=q_hash, k_hash=k_hash,
                                      bias=bias, mask=mask))
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    db = torch.empty(bias.shape, device=bias.device, dtype=bias.dtype) if bias_grad and bias is not None else None
    ts = [_tensor(t, n) for t, n in ((q, "q"), (k, "k"), (v, "v"), (o, "o"), (lse, "lse"), (dout, "dout"),
                                     (dq, "dq"), (dk, "dk"), (dv, "dv"), (db, "dbias"))]
    ctx = _Context.get()
    stream = torch.cuda.current_stream(q.device).cuda_stream
    st = _capi.lib.sfa_backward(ctx, ctypes.byref(p), _ref(ts[0]), _ref(ts[1]), _ref(ts[2]), ctypes.byref(ex),
                                _ref(ts[3]), _ref(ts[4]), _ref(ts[5]), _ref(ts[6]), _ref(ts[7]), _ref(ts[8]),
                                _ref(ts[9]), ctypes.c_void_p(stream))
    _check(ctx, st)
    return dq, dk, dv, db


def _rows_aligned(t):
    """t itself when sfa can read it (last dim contiguous, data and the other
    strides multiples of 16 bytes), else a contiguous copy. Gradients that
    autograd hands over are often views: o.sum() gives an expanded tensor with
    stride 0 everywhere, a transpose gives a non-contiguous last dim."""
    import torch
    esz = t.element_size()
    ok = t.data_ptr() % 16 == 0
    for i in range(t.dim()):
        if t.shape[i] > 1:
            s = t.stride(i)
            ok = ok and (s == 1 if i == t.dim() - 1 else s >= 0 and s * esz % 16 == 0)
    return t if ok else t.clone(memory_format=torch.contiguous_format)


_FUNCTION = []


def _function():
    """The torch.autograd.Function of attention(), made on first use so that
    importing sfa does not import torch."""
    if _FUNCTION:
        return _FUNCTION[0]
    import torch
    from torch.autograd.function import once_differentiable

    class SfaAttention(torch.autograd.Function):
        @staticmethod
        def forward(ctx, q, k, v, bias, mask, q_idx, k_idx, q_hash, k_hash, opts, deterministic):
            o, lse = forward(q, k, v, q_idx=q_idx, k_idx=k_idx, q_hash=q_hash, k_hash=k_hash, bias=bias,
                             mask=mask, return_lse=True, **opts)
            ctx.save_for_backward(q, k, v, o, lse, bias, mask, q_idx, k_idx, q_hash, k_hash)
            ctx.opts, ctx.deterministic = opts, deterministic
            return o

        @staticmethod
        @once_differentiable
        def backward(ctx, dout):
            q, k, v, o, lse, bias, mask, q_idx, k_idx, q_hash, k_hash = ctx.saved_tensors
            dq, dk, dv, db = backward(q, k, v, o, lse, _rows_aligned(dout), q_idx=q_idx, k_idx=k_idx,
                                      q_hash=q_hash, k_hash=k_hash, bias=bias, mask=mask,
                                      deterministic=ctx.deterministic, bias_grad=ctx.needs_input_grad[3],
                                      **ctx.opts)
            return dq, dk, dv, db, None, None, None, None, None, None, None

    _FUNCTION.append(SfaAttention)
    return SfaAttention


def attention(q, k, v, *, mode="dense", causal=False, scale=None, window=(-1, -1), q_idx=None, k_idx=None,
              q_hash=None, k_hash=None, bias=None, mask=None, deterministic=False):
    """Differentiable sfa attention: o [B, Hq, Tq, D] from q [B, Hq, Tq, D] and
    k, v [B, Hkv, Tk, D] (fp16 or bf16 CUDA tensors, last dim contiguous).

    mode "dense" (causal: bottom-right aligned), "qk_drop" (q_idx, k_idx),
    "hash" (q_idx, k_idx, q_hash, k_hash: the sorted layout; hash_attention()
    starts from unsorted tensors), "window" (window=(left, right), -1
    unbounded; causal; optional bias [B|1, Hb, Tq|1, Tk] in q's dtype and
    uint8/bool mask). scale None = 1/sqrt(D). Semantics: DESIGN.md section 2.

    With grad mode on and q, k, v or bias requiring grad, the call is recorded
    for autograd: the forward keeps q, k, v, o, lse and the extras; the
    backward (sfa_backward) gives dq, dk, dv, and dbias (summed over the dims
    the bias broadcasts) when the bias requires grad; index arrays and the
    mask get none. deterministic=True makes the backward bitwise reproducible
    (no float atomics). The backward supports head dims up to 128 and 160, 192, 224,
    256, and raises SfaUnsupportedError (a NotImplementedError) for others. Launches go on the
    current stream (the backward on the stream autograd runs it on)."""
    import torch
    _check_mode(mode)
    _check_qkv(q, k, v)
    opts = dict(mode=mode, causal=causal, scale=scale, window=window)
    wants_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (q, k, v, bias))
    if not wants_grad:
        return forward(q, k, v, q_idx=q_idx, k_idx=k_idx, q_hash=q_hash, k_hash=k_hash, bias=bias,
                       mask=mask, **opts)
    return _function().apply(q, k, v, bias, mask, q_idx, k_idx, q_hash, k_hash, opts, bool(deterministic))
