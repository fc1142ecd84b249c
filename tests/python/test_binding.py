#!/usr/bin/env python3
"""test_binding.py -- the PyTorch binding (python/sfa): argument checking and,
on a CUDA machine, autograd gradients against a float64 PyTorch reference.

Run from anywhere: python3 tests/python/test_binding.py [test names]
- torch not importable: prints "SKIP: torch is not installed", exits 77
  (CTest's skip code).
- CPU-only torch: runs the checks that need no GPU: CPU tensors, unknown
  mode, wrong dtypes, ints out of the C int's range (window, num_buckets, w)
  and scales checked before ctypes, SDPA's argument rules, devices, the
  fake (meta) shapes and strides of the custom ops, the dout layout helper,
  and every ctypes call made for real with CPU tensors, which the library
  rejects in its validation (before it touches a driver) with its message.
- torch with CUDA: also compares sfa.attention's output and dq, dk, dv (and
  dbias) through loss.backward() against plain softmax attention in float64
  with each mode's mask built by torch ops: dense causal (Tq != Tk, GQA),
  qk_drop, hash (sfa.hash_attention end to end) and window with a bias that
  requires grad (plus a mask), bf16 and fp16; relative L2 error < 2e-2 (bf16)
  and 1e-2 (fp16); and with two GPUs, a call on cuda:1 while cuda:0 is current.
The custom-op checks (opcheck, torch.compile, SDPA parity) are in test_ops.py.
The library is $SFA_LIBRARY, else build/libsfa.so of this checkout.
Exit status 1 when a check fails; the last line is "N passed, N failed, N skipped".
"""
import sys

from harness import Skip, main, raises, test

try:
    import torch
except ImportError:
    print("SKIP: torch is not installed")
    sys.exit(77)

import sfa  # noqa: E402  (harness put python/ on sys.path)

INT_MAX = 2**31 - 1


# ------------------------------------------------------------------ no GPU needed

def cpu_qkv(dtype=torch.bfloat16, shape=(1, 2, 64, 64)):
    return tuple(torch.randn(*shape, dtype=dtype) for _ in range(3))


@test()
def cpu_tensors_rejected():
    q, k, v = cpu_qkv()
    raises(ValueError, lambda: sfa.attention(q, k, v, causal=True), "cuda")
    raises(ValueError, lambda: sfa.forward(q, k, v), "cuda")
    q.requires_grad_(True)
    raises(ValueError, lambda: sfa.attention(q, k, v, causal=True), "cuda")
    qb = torch.zeros(1, 2, 64, dtype=torch.int32)
    raises(ValueError, lambda: sfa.hash_attention(q, k, v, qb, qb, 4), "cuda")


@test()
def unknown_mode_rejected():
    q, k, v = cpu_qkv()
    raises(ValueError, lambda: sfa.attention(q, k, v, mode="sparse"), "mode", "sparse")
    raises(ValueError, lambda: sfa.forward(q, k, v, mode="Dense"), "mode")


@test()
def wrong_dtypes_rejected():
    q, k, v = cpu_qkv(torch.float32)
    raises(ValueError, lambda: sfa.attention(q, k, v), "dtype", "float32")
    q, k, v = cpu_qkv(torch.bfloat16)
    raises(ValueError, lambda: sfa.attention(q, k.half(), v), "k", "does not match")
    raises(ValueError, lambda: sfa.attention(q, k, v.double()), "v", "dtype")
    raises(ValueError, lambda: sfa.attention([1.0], k, v), "q", "tensor")


@test()
def error_classes():
    assert issubclass(sfa.SfaUnsupportedError, sfa.SfaError)
    assert issubclass(sfa.SfaUnsupportedError, NotImplementedError)
    assert issubclass(sfa.SfaError, RuntimeError)


@test()
def dout_layout_helper():
    fix = sfa._calls.rows_aligned
    t = torch.randn(2, 3, 40, 64, dtype=torch.bfloat16)
    assert fix(t) is t, "a contiguous tensor must be passed as is"
    tt = torch.randn(2, 3, 64, 40, dtype=torch.bfloat16).transpose(-1, -2)
    c = fix(tt)
    assert c is not tt and c.is_contiguous() and torch.equal(c, tt), "transposed last dim must be copied"
    e = torch.ones((), dtype=torch.bfloat16).expand(2, 3, 40, 64)  # what o.sum() hands to backward
    c = fix(e)
    assert c.is_contiguous() and c.stride(-1) == 1 and torch.equal(c, e), "expanded dout must be materialized"
    base = torch.randn(2 * 3 * 40 * 64 + 1, dtype=torch.bfloat16)
    off = base[1:].view(2, 3, 40, 64)  # 2-byte offset: rows not 16-byte aligned
    c = fix(off)
    assert c.data_ptr() % 16 == 0 and torch.equal(c, off), "misaligned dout must be copied"
    odd = torch.randn(2, 3, 40, 72, dtype=torch.bfloat16)[..., :60]  # row stride 72 * 2 B = 144 B: fine
    assert fix(odd) is odd, "a row stride that is a multiple of 16 bytes needs no copy"
    odd = torch.randn(2, 3, 40, 68, dtype=torch.bfloat16)[..., :64]  # 136 B rows: not aligned
    assert fix(odd) is not odd, "a row stride of 136 bytes must be copied"


@test()
def ints_checked_before_ctypes():
    """Python ints out of the C int's range are errors naming the argument
    (ctypes would keep the low 32 bits: window (2**32 + 5, 0) became (5, 0),
    num_buckets 2**32 + 16 became 16); they are checked before the device."""
    q, k, v = cpu_qkv()
    raises(ValueError, lambda: sfa.attention(q, k, v, mode="window", window=(2**32 + 5, 0)), "window[0]",
           "4294967301")
    raises(ValueError, lambda: sfa.attention(q, k, v, mode="window", window=(0, -7)), "window[1]", "-7")
    raises(ValueError, lambda: sfa.forward(q, k, v, mode="window", window=(0, 2**31)), "window[1]")
    raises(ValueError, lambda: sfa.attention(q, k, v, scale=-0.5), "scale")
    raises(ValueError, lambda: sfa.attention(q, k, v, scale=1e-46), "scale")  # 0 as a float32: the default
    b = torch.zeros(1, 2, 64, dtype=torch.int32)
    raises(ValueError, lambda: sfa.hash_prepare(b, 2**32 + 16, None), "num_buckets", "4294967312")
    raises(ValueError, lambda: sfa.hash_attention(q, k, v, b, b, 2**32 + 16), "num_buckets")
    raises(ValueError, lambda: sfa.topk_mask(q, 2**32), "w", "4294967296")
    raises(ValueError, lambda: sfa.topk_mask(q, -1), "w")
    raises(ValueError, lambda: sfa.attention(q, k, v, causal=True, causal_align="top-left"), "causal_align")
    raises(ValueError, lambda: sfa.attention(q, k, v, mode="hash", causal_align="top_left"), "causal_align")


@test()
def sdpa_arguments_as_torch():
    q, k, v = cpu_qkv()
    sdpa = sfa.scaled_dot_product_attention
    raises(NotImplementedError, lambda: sdpa(q, k, v, dropout_p=0.1), "dropout")
    raises(ValueError, lambda: sdpa(q, k, v, dropout_p=-0.1), "dropout_p")
    m = torch.ones(64, 64, dtype=torch.bool)
    raises(ValueError, lambda: sdpa(q, k, v, attn_mask=m, is_causal=True), "attn_mask", "is_causal")
    k2, v2 = k[:, :1], v[:, :1]
    raises(ValueError, lambda: sdpa(q, k2, v2), "enable_gqa")
    q3 = torch.randn(1, 3, 64, 64, dtype=torch.bfloat16)
    raises(ValueError, lambda: sdpa(q3, k, v, enable_gqa=True), "multiple")
    raises(NotImplementedError, lambda: sdpa(q, k, v[..., :32]), "value", "head dim")
    raises(ValueError, lambda: sdpa(q, k, v, attn_mask=torch.ones(3, 64, 64, dtype=torch.bool)), "broadcast")
    raises(ValueError, lambda: sdpa(q, k, v, attn_mask=torch.ones(64, 64, dtype=torch.int32)), "attn_mask", "dtype")
    raises(ValueError, lambda: sdpa(q.float(), k.float(), v.float()), "dtype", "float32")
    raises(ValueError, lambda: sdpa(q[0, 0], k[0, 0], v[0, 0]), "4-D", "3-D")
    raises(ValueError, lambda: sdpa(q, k, v), "cuda")  # the arguments are fine: the device is not


@test()
def devices_checked():
    q, k, v = cpu_qkv()
    raises(ValueError, lambda: sfa.attention(q, k, v), "q must be a CUDA tensor", "cpu")
    raises(ValueError, lambda: sfa.scaled_dot_product_attention(q, k, v), "CUDA tensor")
    if not torch.cuda.is_available():
        return
    qc = q.cuda()
    raises(ValueError, lambda: sfa.attention(qc, k.cuda(), v), "v must be a CUDA tensor")
    bias = torch.zeros(1, 1, 64, 64, dtype=torch.bfloat16)
    raises(ValueError, lambda: sfa.attention(qc, k.cuda(), v.cuda(), mode="window", bias=bias), "bias", "cpu")


@test(needs_cuda=True)
def two_gpus():
    """Tensors on two GPUs are an error naming both; a call whose tensors are
    all on cuda:1 runs there while cuda:0 is current, and matches cuda:0's."""
    if torch.cuda.device_count() < 2:
        raise Skip(f"{torch.cuda.device_count()} CUDA device(s); needs 2")
    torch.manual_seed(8)
    q, k, v = (torch.randn(1, 2, 128, 64, dtype=torch.bfloat16, device="cuda:0") for _ in range(3))
    raises(ValueError, lambda: sfa.attention(q, k.to("cuda:1"), v), "k is on cuda:1", "q is on cuda:0")
    torch.cuda.set_device(0)
    ls0 = [leaf(t) for t in (q, k, v)]
    ls1 = [leaf(t.to("cuda:1")) for t in (q, k, v)]
    o0 = sfa.attention(*ls0, causal=True)
    o1 = sfa.attention(*ls1, causal=True)
    assert o1.device == torch.device("cuda:1")
    o0.sum().backward()
    o1.sum().backward()
    torch.cuda.synchronize("cuda:1")
    assert torch.equal(o0, o1.to("cuda:0")), "cuda:1 gives another o than cuda:0"
    for a, b, n in zip(ls0, ls1, "qkv"):
        assert rel(a.grad, b.grad.to("cuda:0")) < 1e-2, f"d{n} on cuda:1 differs"


@test()
def fake_shapes_and_strides():
    """The meta implementations give what the real ones give: o in q's layout
    (here a [B, T, H, D] buffer seen as [B, H, T, D]), lse float32 [B, H, T],
    dbias only when asked, topk_mask's rows padded to 16 bytes."""
    B, T, H, D = 2, 50, 4, 64
    q = torch.empty(B, T, H, D, device="meta", dtype=torch.bfloat16).transpose(1, 2)
    k = torch.empty(B, 2, 70, D, device="meta", dtype=torch.bfloat16)
    o, lse = torch.ops.sfa.attention_fwd(q, k, k, None, None, None, None, None, None, "dense", True, None, -1, -1,
                                         False)
    assert o.shape == q.shape and o.stride() == q.stride(), (o.shape, o.stride())
    assert lse.shape == (B, H, T) and lse.dtype == torch.float32 and lse.is_contiguous()
    qt = torch.empty(B, H, D, T, device="meta", dtype=torch.bfloat16).transpose(-1, -2)  # last dim strided
    o, _ = torch.ops.sfa.attention_fwd(qt, k, k, None, None, None, None, None, None, "dense", True, None, -1, -1,
                                       False)
    assert o.is_contiguous(), o.stride()
    bias = torch.empty(1, H, 1, 70, device="meta", dtype=torch.bfloat16)
    for bias_grad in (True, False):
        dq, dk, dv, db = torch.ops.sfa.attention_bwd(q, q, k, k, o, lse, bias, None, None, None, None, None,
                                                     "window", False, None, -1, -1, False, bias_grad)
        assert dq.shape == q.shape and dk.shape == k.shape and dv.shape == k.shape
        assert db.shape == (bias.shape if bias_grad else (0,)), db.shape
    bucket = torch.empty(B, H, T, device="meta", dtype=torch.int32)
    idx, hsh, xs, x2s = torch.ops.sfa.hash_prepare(bucket, 8, q, None)
    assert idx.shape == hsh.shape == bucket.shape and idx.dtype == torch.int32
    assert xs.shape == q.shape and x2s.numel() == 0
    assert torch.ops.sfa.hash_unsort(xs, idx).shape == q.shape
    m = torch.ops.sfa.topk_mask(torch.empty(B, H, T, 70, device="meta", dtype=torch.bfloat16), 8, True)
    assert m.shape == (B, H, T, 70) and m.dtype == torch.uint8 and m.stride() == (H * T * 80, T * 80, 80, 1)


def _no_driver():
    import ctypes
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return True
    return False


@test()
def real_calls_reach_the_library():
    """Every ctypes call of the binding, made for real with CPU tensors (the
    library validates before it touches the driver): a bad argument comes
    back as ValueError with the library's message naming it, so the structs
    and pointers arrive as the library reads them. Where no CUDA driver
    exists, a valid call then fails with SfaError for want of one."""
    calls = sfa._calls
    saved = calls.DEVICE_TYPE
    calls.DEVICE_TYPE = "cpu"
    try:
        q = torch.zeros(1, 2, 64, 64, dtype=torch.bfloat16)
        k32 = torch.zeros(1, 2, 64, 32, dtype=torch.bfloat16)
        lse = torch.zeros(1, 2, 64)
        raises(ValueError, lambda: torch.ops.sfa.attention_fwd(q, k32, k32, None, None, None, None, None, None,
                                                               "dense", True, None, -1, -1, False),
               "k: shape[3] (head dim) is 32 but q's is 64")
        bias = torch.zeros(1, 3, 64, 64, dtype=torch.bfloat16)
        raises(ValueError, lambda: sfa.forward(q, q, q, mode="window", window=(5, 0), bias=bias),
               "extras->bias: shape[1] (heads) is 3")
        mask = torch.ones(1, 2, 64, 64, dtype=torch.bool)
        raises(ValueError, lambda: sfa.forward(q, q, q, mode="window", window=(5, 1), mask=mask, scale=0.5,
                                               bias=bias[:, :2].float()),
               "extras->bias: dtype fp32, expected bf16")
        raises(ValueError, lambda: sfa.forward(q, q, q, mode="dense", window=(5, 1)),
               "window_left/window_right: 5/1")
        raises(ValueError, lambda: sfa.backward(q, q, q, q, lse[:, :1], q), "lse: shape [1, 1, 64]")
        idx = torch.zeros(1, 2, 64, dtype=torch.int32)
        raises(ValueError, lambda: sfa.backward(q, q, q, q, lse, q, mode="hash", q_idx=idx, k_idx=idx,
                                                q_hash=idx, deterministic=True), "extras->k_hash: is NULL")
        raises(ValueError, lambda: sfa.attention(q, q, q, mode="qk_drop", q_idx=idx, k_idx=idx[:, :1]),
               "extras->k_idx: shape [1, 1, 64]")
        raises(ValueError, lambda: sfa.hash_prepare(idx, 5000, q), "num_buckets")
        raises(ValueError, lambda: sfa.hash_prepare(idx, 8, q, k32[:, :1]), "x2")
        raises(ValueError, lambda: sfa.hash_unsort(q, idx[:, :1]), "idx")
        raises(ValueError, lambda: sfa.topk_mask(q, 3, out=torch.zeros(1, 2, 64, 64, dtype=torch.int32)), "mask")
        if _no_driver():
            raises(sfa.SfaError, lambda: sfa.attention(q, q, q, causal=True), "driver")
            print("      (no libcuda.so.1 here: a valid call fails with SfaError)")
    finally:
        calls.DEVICE_TYPE = saved


# ------------------------------------------------------------------ reference

def ref_attention(q, k, v, allowed, scale, bias=None):
    """Float64 softmax attention. q [B,Hq,Tq,D], k, v [B,Hkv,Tk,D], allowed
    bool broadcastable to [B,Hq,Tq,Tk]; rows with no allowed key give 0."""
    g = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
    s = (q @ k.transpose(-1, -2)) * scale
    if bias is not None:
        s = s + bias
    allowed = allowed.expand(s.shape)
    p = torch.softmax(s.masked_fill(~allowed, -1e300), -1)
    p = p * allowed.any(-1, keepdim=True)  # fully masked rows: uniform -> 0
    return p @ v


def rel(x, ref):
    x, ref = x.detach().double(), ref.detach().double()
    return ((x - ref).norm() / ref.norm().clamp_min(1e-30)).item()


TOL = {torch.bfloat16: 2e-2, torch.float16: 1e-2}


def leaf(t, grad=True):
    return t.detach().clone().requires_grad_(grad)


def check_grads(name, dtype, inputs, run_sfa, run_ref, dout):
    """inputs: name -> tensor (sfa's leaves, requiring grad). run_sfa(**leaves)
    -> o; run_ref(**float64 leaves) -> o. Compares o and every input's grad."""
    ls = {n: leaf(t) for n, t in inputs.items()}
    o = run_sfa(**ls)
    o.backward(dout)
    lr = {n: leaf(t.double()) for n, t in inputs.items()}
    o_ref = run_ref(**lr)
    o_ref.backward(dout.double())
    tol = TOL[dtype]
    errs = {"o": rel(o, o_ref)}
    for n in inputs:
        assert ls[n].grad is not None, f"{name}: no gradient for {n}"
        assert ls[n].grad.shape == inputs[n].shape, f"{name}: d{n} has shape {tuple(ls[n].grad.shape)}"
        errs["d" + n] = rel(ls[n].grad, lr[n].grad)
    bad = {n: e for n, e in errs.items() if not e < tol}
    assert not bad, f"{name}: rel err above {tol:g}: " + ", ".join(f"{n} {e:.3e}" for n, e in bad.items())
    print("      " + name + ": " + ", ".join(f"{n} {e:.1e}" for n, e in errs.items()))


def randn(*shape, dtype):
    return torch.randn(*shape, device="cuda", dtype=dtype)


def cases_dtypes():
    """(dtype, D) pairs every mode runs: both dtypes at D=64, bf16 at D=128."""
    return ((torch.bfloat16, 64), (torch.float16, 64), (torch.bfloat16, 128))


# ------------------------------------------------------------------ CUDA: gradients

@test(needs_cuda=True)
def grad_dense_causal():
    torch.manual_seed(1)
    B, Hq, Hkv = 2, 4, 2
    for dtype, D in cases_dtypes():
        for Tq, Tk in ((300, 300), (200, 333), (333, 200)):  # bottom-right aligned; 333x200 has empty rows
            q, k, v = randn(B, Hq, Tq, D, dtype=dtype), randn(B, Hkv, Tk, D, dtype=dtype), randn(B, Hkv, Tk, D, dtype=dtype)
            i = torch.arange(Tq, device="cuda")[:, None]
            j = torch.arange(Tk, device="cuda")[None, :]
            allowed = j <= i + Tk - Tq
            # dout as a transposed view: the binding must copy it (last dim not contiguous)
            dout = randn(B, Hq, D, Tq, dtype=dtype).transpose(-1, -2)
            check_grads(f"dense causal {dtype} D={D} Tq={Tq} Tk={Tk}", dtype, dict(q=q, k=k, v=v),
                        lambda q, k, v: sfa.attention(q, k, v, causal=True),
                        lambda q, k, v: ref_attention(q, k, v, allowed, D ** -0.5), dout)


def compact_indices(B, H, T, drop, pad):
    """Strictly increasing kept positions per (b, h), padded with pad."""
    keep = torch.rand(B, H, T, device="cuda") >= drop
    n = keep.sum(-1)
    L = int(n.max().item())
    pos = torch.arange(T, device="cuda").expand(B, H, T)
    order = torch.where(keep, pos, pos + T).argsort(-1)[..., :L]
    idx = torch.gather(pos, 2, order)
    valid = torch.arange(L, device="cuda").expand(B, H, L) < n.unsqueeze(-1)
    return torch.where(valid, idx, torch.full_like(idx, pad)).int().contiguous()


@test(needs_cuda=True)
def grad_qk_drop():
    torch.manual_seed(2)
    B, Hq, Hkv, T = 2, 4, 2, 400
    for dtype, D in cases_dtypes():
        qi = compact_indices(B, Hq, T, 0.3, -1)
        ki = compact_indices(B, Hkv, T, 0.3, INT_MAX)
        Lq, Lk = qi.shape[-1], ki.shape[-1]
        q, k, v = randn(B, Hq, Lq, D, dtype=dtype), randn(B, Hkv, Lk, D, dtype=dtype), randn(B, Hkv, Lk, D, dtype=dtype)
        allowed = qi[..., :, None].long() >= ki.repeat_interleave(Hq // Hkv, 1)[..., None, :].long()
        check_grads(f"qk_drop 30% {dtype} D={D} Lq={Lq} Lk={Lk}", dtype, dict(q=q, k=k, v=v),
                    lambda q, k, v: sfa.attention(q, k, v, mode="qk_drop", q_idx=qi, k_idx=ki),
                    lambda q, k, v: ref_attention(q, k, v, allowed, D ** -0.5), randn(B, Hq, Lq, D, dtype=dtype))


@test(needs_cuda=True)
def grad_hash_end_to_end():
    torch.manual_seed(3)
    B, Hq, Hkv, T, nb = 2, 4, 2, 320, 4
    for dtype, D in cases_dtypes():
        q, k, v = randn(B, Hq, T, D, dtype=dtype), randn(B, Hkv, T, D, dtype=dtype), randn(B, Hkv, T, D, dtype=dtype)
        qb = torch.randint(0, nb, (B, Hq, T), device="cuda", dtype=torch.int32)
        kb = torch.randint(0, nb, (B, Hkv, T), device="cuda", dtype=torch.int32)
        i = torch.arange(T, device="cuda")
        allowed = ((qb[..., :, None] == kb.repeat_interleave(Hq // Hkv, 1)[..., None, :])
                   & (i[:, None] >= i[None, :]))
        check_grads(f"hash {nb} buckets {dtype} D={D} T={T}", dtype, dict(q=q, k=k, v=v),
                    lambda q, k, v: sfa.hash_attention(q, k, v, qb, kb, nb),
                    lambda q, k, v: ref_attention(q, k, v, allowed, D ** -0.5), randn(B, Hq, T, D, dtype=dtype))
        # the no-grad path (sfa's sort/gather/unsort kernels) gives the same output
        with torch.no_grad():
            o_fast = sfa.hash_attention(q, k, v, qb, kb, nb)
        o_grad = sfa.hash_attention(leaf(q), k, v, qb, kb, nb)
        assert torch.equal(o_fast, o_grad.detach()), "hash_attention: the grad and no-grad paths differ"


def padded_mask(shape, p_keep):
    """bool mask [.., Tk] whose rows are padded to 16 bytes, as sfa needs."""
    tk = shape[-1]
    buf = torch.zeros(*shape[:-1], (tk + 15) // 16 * 16, device="cuda", dtype=torch.bool)
    m = buf[..., :tk]
    m.copy_(torch.rand(*shape, device="cuda") < p_keep)
    return m


@test(needs_cuda=True)
def grad_window_bias():
    torch.manual_seed(4)
    B, Hq, Hkv, T = 2, 4, 2, 300
    i = torch.arange(T, device="cuda")[:, None]
    j = torch.arange(T, device="cuda")[None, :]
    for dtype, D in cases_dtypes():
        # causal window W=64, bias [1, Hq, T, T] (broadcast over batch), requires grad
        W = 64
        q, k, v = randn(B, Hq, T, D, dtype=dtype), randn(B, Hkv, T, D, dtype=dtype), randn(B, Hkv, T, D, dtype=dtype)
        bias = randn(1, Hq, T, T, dtype=dtype)
        allowed = (j <= i) & (j >= i - (W - 1))
        check_grads(f"window W={W} causal bias[1,Hq,T,T] {dtype} D={D}", dtype,
                    dict(q=q, k=k, v=v, bias=bias),
                    lambda q, k, v, bias: sfa.attention(q, k, v, mode="window", causal=True, window=(W - 1, 0),
                                                        bias=bias),
                    lambda q, k, v, bias: ref_attention(q, k, v, allowed, D ** -0.5, bias),
                    randn(B, Hq, T, D, dtype=dtype))
        # two-sided window (40 left, 24 right), bias [B, 1, 1, T], a bool mask [B, Hq, T, T]
        bias = randn(B, 1, 1, T, dtype=dtype)
        mask = padded_mask((B, Hq, T, T), 0.7)
        allowed = (j >= i - 40) & (j <= i + 24) & mask
        check_grads(f"window (40,24) bias[B,1,1,T] + mask {dtype} D={D}", dtype,
                    dict(q=q, k=k, v=v, bias=bias),
                    lambda q, k, v, bias: sfa.attention(q, k, v, mode="window", window=(40, 24), bias=bias,
                                                        mask=mask),
                    lambda q, k, v, bias: ref_attention(q, k, v, allowed, D ** -0.5, bias),
                    randn(B, Hq, T, D, dtype=dtype))


# ------------------------------------------------------------------ CUDA: behaviour

@test(needs_cuda=True)
def bias_without_grad_and_scale():
    """A bias that does not require grad gets none; scale is honoured."""
    torch.manual_seed(5)
    B, H, T, D = 1, 2, 200, 64
    dtype = torch.bfloat16
    q, k, v = (randn(B, H, T, D, dtype=dtype) for _ in range(3))
    bias = randn(B, H, T, T, dtype=dtype)
    i = torch.arange(T, device="cuda")[:, None]
    j = torch.arange(T, device="cuda")[None, :]
    allowed = (j <= i) & (j >= i - 31)
    check_grads("window W=32 scale=0.3 bias without grad", dtype, dict(q=q, k=k, v=v),
                lambda q, k, v: sfa.attention(q, k, v, mode="window", causal=True, window=(31, 0), bias=bias,
                                              scale=0.3),
                lambda q, k, v: ref_attention(q, k, v, allowed, 0.3, bias.double()), randn(B, H, T, D, dtype=dtype))
    assert bias.grad is None


@test(needs_cuda=True)
def sum_loss_and_deterministic():
    """o.sum().backward() (dout expanded with stride 0) matches an explicit
    dout of ones; deterministic=True is bitwise reproducible."""
    torch.manual_seed(6)
    B, H, T, D = 2, 4, 256, 64
    dtype = torch.bfloat16
    q, k, v = (randn(B, H, T, D, dtype=dtype) for _ in range(3))
    a = [leaf(t) for t in (q, k, v)]
    sfa.attention(*a, causal=True).sum().backward()
    b = [leaf(t) for t in (q, k, v)]
    sfa.attention(*b, causal=True).backward(torch.ones(B, H, T, D, device="cuda", dtype=dtype))
    for x, y, n in zip(a, b, "qkv"):
        assert rel(x.grad, y.grad) < 1e-2, f"d{n} of o.sum() differs from dout=ones: {rel(x.grad, y.grad):.2e}"
    dout = randn(B, H, T, D, dtype=dtype)
    runs = []
    for _ in range(2):
        ls = [leaf(t) for t in (q, k, v)]
        sfa.attention(*ls, causal=True, deterministic=True).backward(dout)
        runs.append([t.grad for t in ls])
    for x, y, n in zip(runs[0], runs[1], "qkv"):
        assert torch.equal(x, y), f"deterministic=True: d{n} differs between two runs"


@test(needs_cuda=True)
def side_stream():
    """Forward and backward launched on a side stream give the default stream's result."""
    torch.manual_seed(7)
    dtype = torch.bfloat16
    q, k, v = (randn(2, 2, 256, 64, dtype=dtype) for _ in range(3))
    dout = randn(2, 2, 256, 64, dtype=dtype)
    a = [leaf(t) for t in (q, k, v)]
    oa = sfa.attention(*a, causal=True, deterministic=True)
    oa.backward(dout)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    b = [leaf(t) for t in (q, k, v)]
    with torch.cuda.stream(s):
        ob = sfa.attention(*b, causal=True, deterministic=True)
        ob.backward(dout)
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    assert torch.equal(oa, ob), "side stream: o differs"
    for x, y, n in zip(a, b, "qkv"):
        assert torch.equal(x.grad, y.grad), f"side stream: d{n} differs"


@test(needs_cuda=True)
def library_errors_on_cuda():
    """Shape and extras errors come back as ValueError with the C message."""
    dtype = torch.bfloat16
    q = randn(1, 2, 64, 64, dtype=dtype)
    k = randn(1, 2, 64, 32, dtype=dtype)
    raises(ValueError, lambda: sfa.attention(q, k, k), "k")
    raises(ValueError, lambda: sfa.attention(q, q, q, window=(3, 0)), "window")
    raises(ValueError, lambda: sfa.attention(q, q, q, mode="qk_drop"), "q_idx")
    raises(ValueError, lambda: sfa.attention(q, q, q[:, :1]), "v", "shape")


@test(needs_cuda=True)
def backward_head_dims_above_128():
    """D=256 (a multiple of 32) has a backward: its gradients match float32
    SDPA's; D=144 has none: SfaUnsupportedError (a NotImplementedError) with
    the library's message."""
    dtype = torch.bfloat16
    q, k, v = (randn(1, 2, 128, 256, dtype=dtype) for _ in range(3))
    leaves = [leaf(t) for t in (q, k, v)]
    o = sfa.attention(*leaves, causal=True)
    dout = randn(*o.shape, dtype=dtype)
    got = torch.autograd.grad(o, leaves, dout)
    ref_leaves = [leaf(t.float()) for t in (q, k, v)]
    ref = torch.nn.functional.scaled_dot_product_attention(*ref_leaves, is_causal=True)
    want = torch.autograd.grad(ref, ref_leaves, dout.float())
    for name, g, w in zip(("dq", "dk", "dv"), got, want):
        err = ((g.float() - w).norm() / w.norm()).item()
        assert err < 2e-2, f"D=256 {name}: relative error {err:.3e}"
    q, k, v = (randn(1, 2, 128, 144, dtype=dtype) for _ in range(3))
    o = sfa.attention(*(leaf(t) for t in (q, k, v)), causal=True)
    try:
        o.float().sum().backward()
        raise AssertionError("D=144 backward did not raise")
    except NotImplementedError as e:
        assert isinstance(e, sfa.SfaUnsupportedError), f"{type(e).__name__}: {e}"
        assert "head dim 144" in str(e), str(e)


# ------------------------------------------------------------------ driver

if __name__ == "__main__":
    cuda = torch.cuda.is_available()
    sys.exit(main(cuda, f"torch {torch.__version__}, CUDA "
                        f"{'available: ' + torch.cuda.get_device_name() if cuda else 'not available'}"))
