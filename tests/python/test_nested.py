#!/usr/bin/env python3
"""test_nested.py -- sfa.attention on torch nested tensors with
layout=torch.jagged in SDPA's convention ([B, H, j, D]), on the "cpu-ref"
backend (the library's float64 CPU reference in place of the kernels,
refbackend.py) and on "cuda" where there is a GPU:

- the output (a jagged tensor with q's offsets) and the gradients of the
  values of q, k and v against sfa.attention called on each sequence alone
  as a dense [1, H, T, D] tensor (same random dout): dense causal with
  k, v sharing q's offsets; k, v with their own lengths (bottom-right
  causal); GQA; window; an empty key sequence; return_lse;
- torch.compile(fullgraph=True) of it gives eager's output and gradients;
- sfa.scaled_dot_product_attention on jagged tensors against torch's own
  jagged SDPA (no is_causal, k with its own lengths) and against torch's
  dense SDPA per sequence (is_causal, GQA), and its errors;
- bad combinations raise ValueError naming them: nested mixed with dense,
  strided-layout nested tensors, [B, j, H, D] not transposed, batch sizes
  that differ, v with other lengths than k, sparse modes and options the
  packed path does not take, top-left alignment with other lengths,
  non-contiguous jagged tensors.
Skips (77) without torch.
"""
import sys
import warnings

from harness import main, raises, test

try:
    import torch
except ImportError:
    print("SKIP: torch is not installed")
    sys.exit(77)

import refbackend  # noqa: E402
import sfa  # noqa: E402

warnings.filterwarnings("ignore", message=".*nested tensors is in prototype.*")
CUDA = torch.cuda.is_available()
DTYPE = torch.bfloat16
TOL = 2e-2  # relative L2 error, bf16


def on(backend):
    """(context manager, device, head dim) of a backend."""
    if backend == "cpu-ref":
        return refbackend.cpu(sfa), "cpu", 32
    import contextlib
    return contextlib.nullcontext(), "cuda", 64


def rel(x, ref):
    x, ref = x.detach().double(), ref.detach().double()
    return ((x - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def jagged(lengths, H, D, device, offsets=None):
    """A leaf [B, j, H, D] jagged tensor of random values (the leaf whose
    .grad the test reads) and its [B, H, j, D] view as SDPA takes it."""
    vals = torch.randn(sum(lengths), H, D, device=device, dtype=DTYPE)
    if offsets is None:
        offsets = torch.tensor([0] + lengths, device=device).cumsum(0)
    leaf = torch.nested.nested_tensor_from_jagged(vals, offsets).detach().requires_grad_(True)
    return leaf, leaf.transpose(1, 2)


def per_sequence(leaves, lens, kw):
    """sfa.attention on each sequence alone: outputs and the gradient of the
    values of each leaf (packed like the values), for the same dout."""
    (lq, lk), outs = lens, []
    vals = [x.values().detach() for x in leaves]
    seq_leaves = []
    cq = [0] + torch.tensor(lq).cumsum(0).tolist()
    ck = [0] + torch.tensor(lk).cumsum(0).tolist()
    for b in range(len(lq)):
        q = vals[0][cq[b]:cq[b + 1]].transpose(0, 1).unsqueeze(0).clone().requires_grad_(True)
        k, v = (x[ck[b]:ck[b + 1]].transpose(0, 1).unsqueeze(0).clone().requires_grad_(True) for x in vals[1:])
        seq_leaves.append((q, k, v))
        if ck[b + 1] == ck[b]:  # no keys: o = 0
            outs.append(torch.zeros_like(q))
        else:
            outs.append(sfa.attention(q, k, v, **kw))
    return outs, seq_leaves


def _nested_matches_per_sequence(backend):
    ctx, device, D = on(backend)
    cases = [  # name, q lengths, k lengths (None: k, v share q's offsets), Hq, Hkv, kwargs
        ("dense causal, shared offsets", [37, 1, 64, 20], None, 4, 4, dict(causal=True)),
        ("dense causal, own k lengths (bottom-right)", [30, 5, 48], [50, 5, 20], 4, 4, dict(causal=True)),
        ("dense GQA 4/2, an empty key sequence", [16, 9, 33], [24, 0, 40], 4, 2, {}),
        ("window (8, 0) causal, scale 0.2", [40, 17, 3], None, 2, 2, dict(mode="window", window=(8, 0),
                                                                         causal=True, scale=0.2)),
        ("causal_align top_left with shared offsets", [25, 12], None, 2, 1, dict(causal=True,
                                                                                 causal_align="top_left")),
    ]
    with ctx:
        for name, lq, lk, Hq, Hkv, kw in cases:
            torch.manual_seed(len(name))
            qleaf, q = jagged(lq, Hq, D, device)
            if lk is None:
                lk_ = lq
                kleaf, k = jagged(lq, Hkv, D, device, offsets=qleaf.offsets())
                vleaf, v = jagged(lq, Hkv, D, device, offsets=qleaf.offsets())
            else:
                lk_ = lk
                kleaf, k = jagged(lk, Hkv, D, device)
                vleaf, v = jagged(lk, Hkv, D, device, offsets=kleaf.offsets())
            o = sfa.attention(q, k, v, **kw)
            assert o.is_nested and o.layout == torch.jagged, f"{name}: o is not a jagged tensor"
            assert o.shape == q.shape[:3] + (D,) and o.shape[2] == q.shape[2], \
                f"{name}: o has shape {o.shape}, q {q.shape}"
            ref, seq_leaves = per_sequence((qleaf, kleaf, vleaf), (lq, lk_), kw)
            ov = o.transpose(1, 2).values()
            refv = torch.cat([r[0].transpose(0, 1) for r in ref], 0)
            err = rel(ov, refv)
            assert err < TOL, f"{backend} {name}: o rel err {err:.2e}"
            dout = torch.randn_like(refv)
            ov.backward(dout)
            cq = [0] + torch.tensor(lq).cumsum(0).tolist()
            for b, r in enumerate(ref):
                if r.requires_grad:
                    r.backward(dout[cq[b]:cq[b + 1]].transpose(0, 1).unsqueeze(0))
            errs = {}
            for i, (n, leaf) in enumerate((("dq", qleaf), ("dk", kleaf), ("dv", vleaf))):
                assert leaf.grad is not None, f"{backend} {name}: no gradient reached {n[1]}"
                want = torch.cat([(s[i].grad if s[i].grad is not None else torch.zeros_like(s[i]))[0]
                                  .transpose(0, 1) for s in seq_leaves], 0)
                errs[n] = rel(leaf.grad.values(), want)
            bad = {n: e for n, e in errs.items() if not e < TOL}
            assert not bad, f"{backend} {name}: " + ", ".join(f"{n} rel err {e:.2e}" for n, e in bad.items())
            print(f"      {backend} {name}: o {err:.1e}, " + ", ".join(f"{n} {e:.1e}" for n, e in errs.items()))


@test()
def nested_matches_per_sequence_cpu_ref():
    _nested_matches_per_sequence("cpu-ref")


@test(needs_cuda=True)
def nested_matches_per_sequence_cuda():
    _nested_matches_per_sequence("cuda")


def _nested_lse(backend):
    ctx, device, D = on(backend)
    with ctx:
        torch.manual_seed(5)
        lens = [12, 30, 7]
        _, q = jagged(lens, 2, D, device)
        kleaf, k = jagged(lens, 2, D, device, offsets=q.transpose(1, 2).offsets())
        _, v = jagged(lens, 2, D, device, offsets=kleaf.offsets())
        o, lse = sfa.attention(q, k, v, causal=True, return_lse=True)
        assert lse.is_nested and lse.dim() == 3 and lse.shape[2] == q.shape[2], lse.shape
        got = lse.transpose(1, 2).values()  # [total, H]
        c = [0] + torch.tensor(lens).cumsum(0).tolist()
        qv, kv, vv = (x.transpose(1, 2).values().detach() for x in (q, k, v))
        for b in range(len(lens)):
            seq = [x[c[b]:c[b + 1]].transpose(0, 1).unsqueeze(0) for x in (qv, kv, vv)]
            _, want = sfa.attention(*seq, causal=True, return_lse=True)
            d = (got[c[b]:c[b + 1]].t() - want[0]).abs().max().item()
            assert d < 1e-3, f"{backend}: lse of sequence {b} differs by {d:.2e}"


@test()
def nested_lse_matches_per_sequence_cpu_ref():
    _nested_lse("cpu-ref")


@test(needs_cuda=True)
def nested_lse_matches_per_sequence_cuda():
    _nested_lse("cuda")


def _nested_sdpa(backend):
    """sfa.scaled_dot_product_attention on jagged tensors against torch in
    float64: without is_causal and k, v of their own lengths against torch's
    own jagged SDPA (its math backend); with is_causal (k sharing q's
    offsets) and GQA against torch's dense SDPA on each sequence."""
    import torch.nn.functional as F
    ctx, device, D = on(backend)
    with ctx:
        torch.manual_seed(9)
        lq, lk = [21, 3, 40], [30, 8, 11]
        qleaf, q = jagged(lq, 2, D, device)
        kleaf, k = jagged(lk, 2, D, device)
        vleaf, v = jagged(lk, 2, D, device, offsets=kleaf.offsets())
        o = sfa.scaled_dot_product_attention(q, k, v, scale=0.3)
        q64, k64, v64 = (torch.nested.nested_tensor_from_jagged(x.values().double(), x.offsets()).transpose(1, 2)
                         for x in (qleaf, kleaf, vleaf))
        want = F.scaled_dot_product_attention(q64, k64, v64, scale=0.3)
        err = rel(o.transpose(1, 2).values(), want.transpose(1, 2).values())
        assert err < TOL, f"{backend}: jagged SDPA without is_causal: rel err {err:.2e} against torch's"

        qleaf, q = jagged(lq, 4, D, device)
        kleaf, k = jagged(lq, 2, D, device, offsets=qleaf.offsets())
        vleaf, v = jagged(lq, 2, D, device, offsets=qleaf.offsets())
        o = sfa.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        c = [0] + torch.tensor(lq).cumsum(0).tolist()
        outs = []
        for b in range(len(lq)):
            seq = [x.values()[c[b]:c[b + 1]].detach().double().transpose(0, 1).unsqueeze(0)
                   for x in (qleaf, kleaf, vleaf)]
            outs.append(F.scaled_dot_product_attention(*seq, is_causal=True, enable_gqa=True)[0].transpose(0, 1))
        err = rel(o.transpose(1, 2).values(), torch.cat(outs, 0))
        assert err < TOL, f"{backend}: jagged SDPA is_causal GQA: rel err {err:.2e} against torch per sequence"
        raises(ValueError, lambda: sfa.scaled_dot_product_attention(q, k, v, is_causal=True), "enable_gqa=True")
        raises(ValueError, lambda: sfa.scaled_dot_product_attention(q, k, v, attn_mask=torch.ones(1, dtype=torch.bool),
                                                                    enable_gqa=True), "attn_mask", "nested")
        _, k2 = jagged(lk, 4, D, device)
        _, v2 = jagged(lk, 4, D, device, offsets=k2.transpose(1, 2).offsets())
        raises(ValueError, lambda: sfa.scaled_dot_product_attention(q, k2, v2, is_causal=True), "is_causal",
               "different sequence lengths")


@test()
def nested_sdpa_matches_torch_cpu_ref():
    _nested_sdpa("cpu-ref")


@test(needs_cuda=True)
def nested_sdpa_matches_torch_cuda():
    _nested_sdpa("cuda")


def _nested_compiled(backend):
    """torch.compile(fullgraph=True) of sfa.attention on jagged inputs gives
    eager's output and gradients (aot_eager on cpu-ref, inductor on cuda)."""
    ctx, device, D = on(backend)
    with ctx:
        torch.manual_seed(3)
        lens = [19, 4, 33]
        qleaf, q = jagged(lens, 4, D, device)
        kleaf, k = jagged(lens, 2, D, device, offsets=qleaf.offsets())
        vleaf, v = jagged(lens, 2, D, device, offsets=qleaf.offsets())
        dout = torch.randn(sum(lens), 4, D, device=device, dtype=DTYPE)

        def step(f):
            for x in (qleaf, kleaf, vleaf):
                x.grad = None
            o = f(q, k, v).transpose(1, 2).values()
            o.backward(dout)
            return [o.detach()] + [x.grad.values() for x in (qleaf, kleaf, vleaf)]

        def f(q, k, v):
            return sfa.attention(q, k, v, causal=True)
        torch._dynamo.reset()
        eager = step(f)
        compiled = step(torch.compile(f, fullgraph=True, backend="inductor" if device == "cuda" else "aot_eager"))
        for n, a, b in zip(("o", "dq", "dk", "dv"), compiled, eager):
            assert rel(a, b) < 1e-3, f"{backend}: compiled {n} differs from eager: {rel(a, b):.2e}"


@test()
def nested_compiled_matches_eager_cpu_ref():
    _nested_compiled("cpu-ref")


@test(needs_cuda=True)
def nested_compiled_matches_eager_cuda():
    _nested_compiled("cuda")


@test()
def nested_bad_combinations_raise_named_errors():
    with refbackend.cpu(sfa):
        D = 32
        torch.manual_seed(1)
        lens = [8, 5]
        qleaf, q = jagged(lens, 2, D, "cpu")
        off = qleaf.offsets()
        _, k = jagged(lens, 2, D, "cpu", offsets=off)
        _, v = jagged(lens, 2, D, "cpu", offsets=off)
        dense = torch.randn(2, 2, 8, D, dtype=DTYPE)
        raises(ValueError, lambda: sfa.attention(q, dense, v), "all nested", "k is a dense tensor")
        raises(ValueError, lambda: sfa.attention(dense, k, v), "all nested", "q is a dense tensor")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            strided = torch.nested.nested_tensor([torch.randn(2, 8, D), torch.randn(2, 5, D)], dtype=DTYPE)
        raises(ValueError, lambda: sfa.attention(strided, k, v), "q", "layout", "torch.jagged")
        raises(ValueError, lambda: sfa.attention(qleaf, k, v), "q", "[B, H, j, D]", "transpose(1, 2)")
        _, k3 = jagged([8, 5, 4], 2, D, "cpu")
        _, v3 = jagged([8, 5, 4], 2, D, "cpu", offsets=k3.transpose(1, 2).offsets())
        raises(ValueError, lambda: sfa.attention(q, k3, v3), "batch sizes", "2, 3, 3")
        _, v_other = jagged([6, 7], 2, D, "cpu")
        raises(ValueError, lambda: sfa.attention(q, k, v_other), "k and v", "lengths")
        _, v_same = jagged(lens, 2, D, "cpu")  # own offsets tensor, the same lengths: accepted
        assert sfa.attention(q, k, v_same).is_nested
        raises(ValueError, lambda: sfa.attention(q, k, v, mode="hash"), "mode 'hash'", "dense and window")
        raises(ValueError, lambda: sfa.attention(q, k, v, mode="window", bias=torch.zeros(1, 1, 1, 8)), "bias")
        raises(ValueError, lambda: sfa.attention(q, k, v, softcap=5.0), "softcap")
        raises(ValueError, lambda: sfa.attention(q, k, v, alibi_slopes=torch.ones(2)), "alibi_slopes")
        _, k_own = jagged([9, 5], 2, D, "cpu")
        _, v_own = jagged([9, 5], 2, D, "cpu", offsets=k_own.transpose(1, 2).offsets())
        raises(ValueError, lambda: sfa.attention(q, k_own, v_own, causal=True, causal_align="top_left"),
               "top_left", "bottom-right")
        holes = torch.nested.narrow(torch.randn(2, 10, 2, D, dtype=DTYPE), 1, torch.tensor([0, 2]),
                                    torch.tensor([8, 5]), layout=torch.jagged).transpose(1, 2)
        raises(ValueError, lambda: sfa.attention(holes, k, v), "q", "non-contiguous", ".contiguous()")


if __name__ == "__main__":
    sys.exit(main(CUDA, f"torch {torch.__version__}, nested (jagged) tensors in sfa.attention"))
