"""_calls.py -- the calls into libsfa on torch tensors, no autograd: tensor
descriptions, the per-thread sfa context, error mapping, the device (each
call runs on its tensors' GPU, on that GPU's current stream), and the layout
fixes that make any strided tensor acceptable (a copy where sfa cannot read
it as it is).

The custom ops (_ops.py) call forward_into, backward_into, hash_prepare_into,
hash_unsort_into, topk_mask_into and merge_into through this module's namespace, so that
a test can put a CPU reference in their place (DEVICE_TYPE names the device
type the calls accept)."""
import ctypes
import threading

import torch

from . import _capi
from ._args import SfaError, SfaUnsupportedError, check_int

DEVICE_TYPE = "cuda"

_TORCH_DTYPE = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32",
                torch.int32: "int32", torch.uint8: "uint8", torch.bool: "uint8"}


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


def dtype_code(t, name="tensor"):
    n = _TORCH_DTYPE.get(t.dtype)
    if n is None:
        raise ValueError(f"sfa: {name}: dtype {t.dtype} is not supported")
    return _capi.DTYPE[n]


def describe(t, name):
    """The sfa_tensor of t (None for None)."""
    if t is None:
        return None
    if t.device.type != DEVICE_TYPE:
        raise ValueError(f"sfa: {name} must be a CUDA tensor (it is on {t.device})")
    shape = t.shape
    r = len(shape)
    if r > _capi.SFA_MAX_RANK:
        raise ValueError(f"sfa: {name} has rank {r}, at most {_capi.SFA_MAX_RANK}")
    d = _capi.Tensor()
    d.data = t.data_ptr()
    d.dtype = dtype_code(t, name)
    d.rank = r
    d.shape[:r] = shape  # slice assignment: one ctypes call per array, not one per element
    d.strides[:r] = t.stride()
    return d


def check_status(ctx, st):
    if st != 0:
        msg = _capi.lib.sfa_last_error(ctx).decode()
        if st == _capi.STATUS_INVALID_ARGUMENT:
            raise ValueError(f"sfa: {msg}")
        err = SfaUnsupportedError if st == _capi.STATUS_UNSUPPORTED else SfaError
        raise err(f"sfa: {_capi.lib.sfa_status_string(st).decode()}: {msg}")


def _ref(d):
    return ctypes.byref(d) if d is not None else None


try:  # the current stream's CUstream as an int, without a torch.cuda.Stream object
    _raw_stream = torch._C._cuda_getCurrentRawStream
except AttributeError:  # pragma: no cover (older torch)
    def _raw_stream(index):
        return torch.cuda.current_stream(index).cuda_stream


def launch(t, fn, *args):
    """fn(ctx, *args, stream) with t's GPU current (so that libsfa binds to its
    CUDA context) and that GPU's current stream; raises on a failed status.
    Switches the device only when t is not on the current one (a switch costs
    more than the rest of a small call)."""
    ctx = _Context.get()
    if t.device.type != "cuda":
        st = fn(ctx, *args, None)
    else:
        i = t.get_device()
        if i == torch.cuda.current_device():
            st = fn(ctx, *args, _raw_stream(i))
        else:
            with torch.cuda.device(i):
                st = fn(ctx, *args, _raw_stream(i))
    check_status(ctx, st)


# ------------------------------------------------------------------ layouts

def _broadcast_base(t):
    """(base, shape): t with its stride-0 (broadcast) dims other than the last
    cut to size 1, and the shape to expand back to. Copying the base copies
    each element once; the last dim is always materialized (sfa reads it
    contiguously)."""
    idx = tuple(slice(0, 1) if t.stride(i) == 0 and t.shape[i] > 1 and i < t.dim() - 1 else slice(None)
                for i in range(t.dim()))
    return t[idx], t.shape


def rows_aligned(t):
    """t itself when sfa can read it as an fp16/bf16 [.., D] operand (last dim
    contiguous, data and the other strides multiples of 16 bytes), else a
    contiguous copy. Gradients that autograd hands over are often such views:
    o.sum() gives an expanded tensor with stride 0 everywhere."""
    if t is None:
        return None
    esz = t.element_size()
    ok = t.data_ptr() % 16 == 0
    for i in range(t.dim()):
        if t.shape[i] > 1:
            s = t.stride(i)
            ok = ok and (s == 1 if i == t.dim() - 1 else s * esz % 16 == 0)
    return t if ok else t.clone(memory_format=torch.contiguous_format)


def bias_ready(t):
    """A bias sfa can read: last dim contiguous (any other strides)."""
    if t is None or t.shape[-1] == 1 or t.stride(-1) == 1:
        return t
    base, shape = _broadcast_base(t)
    return base.clone(memory_format=torch.contiguous_format).expand(shape)


def mask_ready(t):
    """A uint8 view of a bool/uint8 mask that sfa can read: 16-byte aligned
    data, batch/head/row strides multiples of 16 bytes (rows padded to a
    multiple of 16), last dim contiguous; broadcast dims stay broadcast."""
    if t is None:
        return None
    if t.dtype == torch.bool:
        t = t.view(torch.uint8)
    ok = t.data_ptr() % 16 == 0 and (t.shape[-1] == 1 or t.stride(-1) == 1)
    for i in range(t.dim() - 1):
        ok = ok and (t.shape[i] == 1 or t.stride(i) % 16 == 0)
    if ok:
        return t
    base, shape = _broadcast_base(t)
    tk = base.shape[-1]
    buf = torch.zeros(*base.shape[:-1], (tk + 15) // 16 * 16, device=t.device, dtype=torch.uint8)
    out = buf[..., :tk]
    out.copy_(base)
    return out.expand(shape)


def slopes_ready(t):
    """ALiBi slopes as sfa reads them: float32, contiguous ([Hq] or [B, Hq])."""
    if t is None:
        return None
    if not t.is_floating_point():
        raise ValueError(f"sfa: alibi_slopes: dtype {t.dtype}; must be a floating-point tensor "
                         "(it is read as float32)")
    return t.detach().to(torch.float32).contiguous()


def index_ready(idx, hsh):
    """Index arrays contiguous along time, and q_hash with q_idx's strides
    (the kernel reads both with one set)."""
    if idx is not None and idx.shape[-1] > 1 and idx.stride(-1) != 1:
        idx = idx.contiguous()
    if hsh is not None and idx is not None and (hsh.stride() != idx.stride()):
        idx, hsh = idx.contiguous(), hsh.contiguous()
    return idx, hsh


def out_like(t):
    """An output of t's shape and dtype that sfa can write: t's layout when
    its last dim is contiguous (e.g. a [B, T, H, D] buffer seen as
    [B, H, T, D]), else contiguous. Uses only shapes and strides, so the fake
    (meta) implementations make the same."""
    if t.stride(-1) == 1 or t.shape[-1] == 1:
        return torch.empty_like(t)
    return torch.empty(t.shape, device=t.device, dtype=t.dtype)


# ------------------------------------------------------------------ calls

_PARAMS = {}  # argument tuple -> sfa_attention_params, shared and never written after it is made
_PLAIN = (str, bool, int, float, type(None))  # the argument types _PARAMS keys on


def _params(mode, causal, scale, window_left, window_right, deterministic, strict_causal=False, softcap=0.0):
    """The sfa_attention_params of these arguments: read-only (one struct is
    shared by every call with the same arguments, which saves a decode step the
    cost of building it)."""
    key = (mode, causal, scale, window_left, window_right, deterministic, strict_causal, softcap)
    if all(type(x) in _PLAIN for x in key):
        p = _PARAMS.get(key)
        if p is not None:
            return p
    else:  # e.g. a tensor, whose value may change while its hash does not: built each time
        key = None
    if mode not in _capi.MODE:
        raise ValueError(f"sfa: mode must be one of {', '.join(_capi.MODE)}, not {mode!r}")
    p = _capi.Params()
    _capi.lib.sfa_params_init(ctypes.byref(p))
    p.mode = _capi.MODE[mode]
    p.causal = int(bool(causal))
    p.scale = 0.0 if scale is None else float(scale)
    p.window_left = check_int("window[0] (left)", window_left, -1)
    p.window_right = check_int("window[1] (right)", window_right, -1)
    p.deterministic = int(bool(deterministic))
    p.strict_causal = int(bool(strict_causal))
    p.softcap = 0.0 if softcap is None else float(softcap)  # the library checks the value
    if key is not None:
        if len(_PARAMS) >= 256:
            _PARAMS.clear()
        _PARAMS[key] = p
    return p


def _extras(ex):
    """sfa_extras and the sfa_tensor structs it points at (kept alive by the caller)."""
    e = _capi.Extras()
    keep = []
    for name in ("q_idx", "k_idx", "q_hash", "k_hash", "bias", "mask", "alibi_slopes", "cu_seqlens_q",
                 "cu_seqlens_k"):
        d = describe(ex.get(name), name)
        if d is not None:
            keep.append(d)
            setattr(e, name, ctypes.pointer(d))
    e.max_seqlen_k = int(ex.get("max_seqlen_k") or 0)
    return e, keep


def _ready_extras(ex):
    ex = dict(ex)
    ex["q_idx"], ex["q_hash"] = index_ready(ex.get("q_idx"), ex.get("q_hash"))
    ex["k_idx"], ex["k_hash"] = index_ready(ex.get("k_idx"), ex.get("k_hash"))
    ex["bias"] = bias_ready(ex.get("bias"))
    ex["mask"] = mask_ready(ex.get("mask"))
    ex["alibi_slopes"] = slopes_ready(ex.get("alibi_slopes"))
    for n in ("cu_seqlens_q", "cu_seqlens_k"):  # packed sequences: contiguous [B + 1]
        if ex.get(n) is not None:
            ex[n] = ex[n].contiguous()
    return ex


def forward_into(q, k, v, o, lse, mode, causal, scale, window_left, window_right, extras, strict_causal=False,
                 softcap=0.0):
    """sfa_forward into o (and lse, may be None). extras: dict of q_idx, k_idx,
    q_hash, k_hash, bias, mask, alibi_slopes, cu_seqlens_q, cu_seqlens_k (None =
    absent). Inputs are copied where their layout needs it; o and lse must be
    writable by sfa as they are."""
    p = _params(mode, causal, scale, window_left, window_right, False, strict_causal, softcap)
    q, k, v = rows_aligned(q), rows_aligned(k), rows_aligned(v)
    ex = _ready_extras(extras)
    e, keep = _extras(ex)
    tq, tk, tv, to = (describe(t, n) for t, n in ((q, "q"), (k, "k"), (v, "v"), (o, "o")))
    tl = describe(lse, "lse")
    launch(q, _capi.lib.sfa_forward, ctypes.byref(p), tq, tk, tv, ctypes.byref(e), to, _ref(tl))


def backward_into(dout, q, k, v, o, lse, dq, dk, dv, dbias, mode, causal, scale, window_left, window_right,
                  deterministic, extras, strict_causal=False, softcap=0.0, dlse=None):
    """sfa_backward into dq, dk, dv (and dbias, may be None); with dlse (the
    gradient of lse, float32 [B, Hq, Tq]) sfa_backward_dlse."""
    p = _params(mode, causal, scale, window_left, window_right, deterministic, strict_causal, softcap)
    q, k, v, o, dout = (rows_aligned(t) for t in (q, k, v, o, dout))
    if dlse is not None and dlse.shape[-1] > 1 and dlse.stride(-1) != 1:  # e.g. an expanded gradient
        dlse = dlse.contiguous()
    ex = _ready_extras(extras)
    e, keep = _extras(ex)
    ts = [describe(t, n) for t, n in ((q, "q"), (k, "k"), (v, "v"), (o, "o"), (lse, "lse"), (dout, "dout"),
                                      (dq, "dq"), (dk, "dk"), (dv, "dv"), (dbias, "dbias"), (dlse, "dlse"))]
    launch(q, _capi.lib.sfa_backward_dlse, ctypes.byref(p), ts[0], ts[1], ts[2], ctypes.byref(e), ts[3], ts[4],
           ts[5], _ref(ts[10]), ts[6], ts[7], ts[8], _ref(ts[9]))


def merge_into(o_parts, lse_parts, o, lse):
    """sfa_merge_attention: o_parts [N, B, H, T, D] and lse_parts [N, B, H, T]
    (seen as [N * B, ...], copied where the parts dim does not fold into the
    batch dim or a row is not contiguous) into o [B, H, T, D] and lse
    [B, H, T] (may be None)."""
    op, lp = o_parts.flatten(0, 1), lse_parts.flatten(0, 1)  # a view where the strides allow
    if op.shape[-1] > 1 and op.stride(-1) != 1:
        op = op.contiguous()
    if lp.shape[-1] > 1 and lp.stride(-1) != 1:
        lp = lp.contiguous()
    d = [describe(t, n) for t, n in ((op, "o_parts"), (lp, "lse_parts"), (o, "o"), (lse, "lse"))]
    launch(o, _capi.lib.sfa_merge_attention, d[0], d[1], d[2], _ref(d[3]))


def hash_prepare_into(bucket, num_buckets, x, xs, x2, x2s, idx, hsh, cu_seqlens=None):
    """sfa_hash_prepare, or with cu_seqlens (packed sequences) sfa_hash_prepare_varlen."""
    num_buckets = check_int("num_buckets", num_buckets, 1)
    d = [describe(t, n) for t, n in ((bucket, "bucket"), (x, "x"), (xs, "x_sorted"), (x2, "x2"),
                                     (x2s, "x2_sorted"), (idx, "idx"), (hsh, "hash"))]
    if cu_seqlens is None:
        launch(bucket, _capi.lib.sfa_hash_prepare, d[0], num_buckets, _ref(d[1]), _ref(d[2]), _ref(d[3]),
               _ref(d[4]), d[5], d[6])
    else:
        launch(bucket, _capi.lib.sfa_hash_prepare_varlen, describe(cu_seqlens, "cu_seqlens"), d[0], num_buckets,
               _ref(d[1]), _ref(d[2]), _ref(d[3]), _ref(d[4]), d[5], d[6])


def hash_unsort_into(o_sorted, idx, o, cu_seqlens=None):
    """sfa_hash_unsort, or with cu_seqlens sfa_hash_unsort_varlen."""
    d = [describe(t, n) for t, n in ((o_sorted, "o_sorted"), (idx, "idx"), (o, "o"))]
    if cu_seqlens is None:
        launch(o_sorted, _capi.lib.sfa_hash_unsort, d[0], d[1], d[2])
    else:
        launch(o_sorted, _capi.lib.sfa_hash_unsort_varlen, describe(cu_seqlens, "cu_seqlens"), d[0], d[1], d[2])


def topk_mask_into(bias, w, causal, mask, cu_seqlens_q=None, cu_seqlens_k=None):
    """sfa_topk_mask, or with cu_seqlens_q / _k sfa_topk_mask_varlen."""
    w = check_int("w", w, 0)
    d = [describe(bias, "bias"), describe(mask, "mask")]
    if cu_seqlens_q is None and cu_seqlens_k is None:
        launch(bias, _capi.lib.sfa_topk_mask, d[0], w, int(bool(causal)), d[1])
    else:
        launch(bias, _capi.lib.sfa_topk_mask_varlen, _ref(describe(cu_seqlens_q, "cu_seqlens_q")),
               _ref(describe(cu_seqlens_k, "cu_seqlens_k")), d[0], w, int(bool(causal)), d[1])


# ------------------------------------------------------------------ decoding

def _cache(k_cache, v_cache, page_table, seqused, kv_indices=None, k_hash=None, q_hash=None):
    """(sfa_kv_cache, the sfa_tensors it points at, to keep alive). The cache is
    passed as it is (never copied: sfa_kv_append writes into it)."""
    d = [describe(t, n) for t, n in ((k_cache, "k_cache"), (v_cache, "v_cache"),
                                     (page_table, "page_table"), (seqused, "seqused"),
                                     (kv_indices, "kv_indices"), (k_hash, "k_hash"), (q_hash, "q_hash"))]
    c = _capi.KvCache(*(ctypes.pointer(x) if x is not None else None for x in d))
    return c, d


def decode_into(q, k_cache, v_cache, page_table, seqused, kv_indices, o, lse, mode, causal, scale,
                window_left, window_right, k_hash=None, q_hash=None, strict_causal=False, workspace=None):
    """sfa_decode into o (and lse, may be None); mode hash with the buckets
    k_hash, q_hash; with workspace (a tensor of decode_workspace_bytes bytes
    or more) sfa_decode_with_workspace."""
    p = _params(mode, causal, scale, window_left, window_right, False, strict_causal)
    q = rows_aligned(q)
    c, keep = _cache(k_cache, v_cache, page_table, seqused, kv_indices, k_hash, q_hash)
    tq, to, tl = describe(q, "q"), describe(o, "o"), describe(lse, "lse")
    if workspace is None:
        launch(q, _capi.lib.sfa_decode, ctypes.byref(p), tq, ctypes.byref(c), to, _ref(tl))
    else:
        launch(q, _capi.lib.sfa_decode_with_workspace, ctypes.byref(p), tq, ctypes.byref(c), to, _ref(tl),
               ctypes.c_void_p(workspace.data_ptr()), workspace.numel() * workspace.element_size())


def decode_workspace_bytes(q, k_cache, v_cache, page_table, seqused, kv_indices, mode, causal, scale,
                           window_left, window_right, k_hash=None, q_hash=None, strict_causal=False):
    """sfa_decode_workspace_size: the bytes of workspace a decode call with
    these arguments needs on q's GPU (0: it does not split its keys)."""
    p = _params(mode, causal, scale, window_left, window_right, False, strict_causal)
    q = rows_aligned(q)
    c, keep = _cache(k_cache, v_cache, page_table, seqused, kv_indices, k_hash, q_hash)
    n = ctypes.c_size_t(0)
    launch(q, lambda ctx, *a: _capi.lib.sfa_decode_workspace_size(ctx, *a[:-1]), ctypes.byref(p),
           describe(q, "q"), ctypes.byref(c), ctypes.byref(n))
    return n.value


def kv_append_into(k_cache, v_cache, page_table, seqused, k_new, v_new, k_hash=None, k_hash_new=None):
    """sfa_kv_append: k_new, v_new into the cache (in place); with k_hash_new
    sfa_kv_append_hash, which also writes the buckets into k_hash."""
    k_new, v_new = rows_aligned(k_new), rows_aligned(v_new)
    c, keep = _cache(k_cache, v_cache, page_table, seqused, k_hash=k_hash)
    tk, tv = describe(k_new, "k_new"), describe(v_new, "v_new")
    if k_hash_new is None:
        launch(k_new, _capi.lib.sfa_kv_append, ctypes.byref(c), tk, tv)
    else:
        launch(k_new, _capi.lib.sfa_kv_append_hash, ctypes.byref(c), tk, tv, describe(k_hash_new, "k_hash_new"))


def check_kv_cache(k_cache, v_cache, page_table, seqused, tn):
    """sfa_check_kv_cache (synchronizes the current stream)."""
    c, keep = _cache(k_cache, v_cache, page_table, seqused)
    launch(k_cache, _capi.lib.sfa_check_kv_cache, ctypes.byref(c), tn)
