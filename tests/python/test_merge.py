#!/usr/bin/env python3
"""test_merge.py -- lse as a differentiable output of sfa.attention and
sfa.merge_attention (sfa_merge_attention), on the "cpu-ref" backend (the
library's float64 CPU reference in place of the kernels, refbackend.py) and
on "cuda" where there is a GPU:

- return_lse: lse against a float64 logsumexp, and the gradient of a loss of
  o and lse against torch autograd of a float64 attention;
- merge_attention of random partials (N = 1, 3, 9; -inf parts whose o is
  NaN; rows where every part is -inf; fp32 parts into bf16) against a
  float64 formula, output and gradients of outs and lses;
- the ring-style check: attention over all keys == merge of the attention
  over two chunks of the keys (dense, and causal with a window for the first
  chunk), for o, lse and the gradients of q, k, v; also through
  torch.compile(fullgraph=True) (aot_eager on cpu-ref, inductor on cuda);
- torch.library.opcheck of sfa::merge_attention and of sfa::attention_bwd
  with a dlse;
- bad arguments raise ValueError naming them.
Skips (77) without torch.
"""
import math
import sys

from harness import main, raises, test

try:
    import torch
except ImportError:
    print("SKIP: torch is not installed")
    sys.exit(77)

import refbackend  # noqa: E402
import sfa  # noqa: E402

CUDA = torch.cuda.is_available()
DTYPE = torch.bfloat16
TOL = 2e-2  # bf16 inputs, relative L2 error


def on(backend):
    """(context manager, device, head dim) of a backend."""
    if backend == "cpu-ref":
        return refbackend.cpu(sfa), "cpu", 32
    import contextlib
    return contextlib.nullcontext(), "cuda", 64


def rel(x, ref):
    x, ref = x.detach().double(), ref.detach().double()
    return ((x - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def rand(*shape, device, dtype=DTYPE, grad=True):
    return torch.randn(*shape, device=device, dtype=dtype).requires_grad_(grad)


def attention_ref(q, k, v, allowed):
    """(o, lse) in float64 over the allowed keys; rows with none: 0, -inf."""
    s = (q.double() @ k.double().transpose(-1, -2)) / math.sqrt(q.shape[-1])
    s = s.masked_fill(~allowed, -math.inf)
    lse = torch.logsumexp(s, -1)
    p = torch.exp(s - lse.unsqueeze(-1)).nan_to_num(0.0)
    return p @ v.double(), lse


def merge_ref(outs, lses):
    """The merge in float64 with torch ops (parts with lse -inf weigh 0)."""
    lse = torch.logsumexp(lses, 0)
    empty = lses == -math.inf
    w = torch.where(empty, 0.0, torch.exp(lses - torch.where(lse == -math.inf, 0.0, lse)))
    o = (w.unsqueeze(-1) * torch.where(empty.unsqueeze(-1), 0.0, outs)).sum(0)
    return o, lse


# ------------------------------------------------------------------ return_lse

def _lse_gradient(backend):
    ctx, device, D = on(backend)
    with ctx:
        torch.manual_seed(21)
        q, k, v = rand(2, 4, 50, D, device=device), rand(2, 4, 30, D, device=device), \
            rand(2, 4, 30, D, device=device)
        o, lse = sfa.attention(q, k, v, causal=True, return_lse=True)  # rows < 20 see no key
        assert lse.dtype == torch.float32 and lse.shape == (2, 4, 50) and lse.requires_grad
        i = torch.arange(50, device=device)[:, None]
        j = torch.arange(30, device=device)[None, :]
        allowed = j <= i - 20
        qd, kd, vd = (t.detach().double().requires_grad_() for t in (q, k, v))
        ro, rl = attention_ref(qd, kd, vd, allowed)
        assert torch.isinf(lse[..., :20]).all() and (lse[..., 20:].double() - rl[..., 20:]).abs().max() < 2e-2
        go, gl = torch.randn_like(ro), torch.randn_like(rl)
        (o.double() * go).sum().add((lse.double()[..., 20:] * gl[..., 20:]).sum()).backward()
        ((ro * go).sum() + (rl[..., 20:] * gl[..., 20:]).sum()).backward()
        errs = {n: rel(a.grad, b.grad) for n, a, b in (("dq", q, qd), ("dk", k, kd), ("dv", v, vd))}
        assert all(e < TOL for e in errs.values()), f"{backend}: {errs}"
        # the lse part alone: a loss of lse only gives the gradient of logsumexp
        q.grad = k.grad = v.grad = None
        _, lse = sfa.attention(q, k, v, return_lse=True)
        lse.sum().backward()
        qd.grad = kd.grad = None
        _, rl2 = attention_ref(qd, kd, vd, torch.ones(50, 30, dtype=torch.bool, device=device))
        rl2.sum().backward()
        assert rel(q.grad, qd.grad) < TOL and rel(k.grad, kd.grad) < TOL, (rel(q.grad, qd.grad), rel(k.grad, kd.grad))
        assert v.grad is None or v.grad.abs().max() == 0
        print(f"      {backend}: " + ", ".join(f"{n} {e:.1e}" for n, e in errs.items()))


@test()
def lse_gradient_cpu_ref():
    _lse_gradient("cpu-ref")


@test(needs_cuda=True)
def lse_gradient_cuda():
    _lse_gradient("cuda")


# ------------------------------------------------------------------ random partials

def _random_partials(backend):
    ctx, device, D = on(backend)
    with ctx:
        torch.manual_seed(22)
        for N, dt, odt in ((1, torch.float32, None), (3, torch.bfloat16, None), (9, torch.float32, torch.bfloat16)):
            B, H, T = 2, 3, 40
            outs = torch.randn(N, B, H, T, D, device=device, dtype=dt)
            lses = 3 * torch.randn(N, B, H, T, device=device)
            lses[torch.rand(N, B, H, T, device=device) < 0.3] = -math.inf
            lses[:, :, :, 7] = -math.inf  # every part empty: o 0, lse -inf
            outs[(lses == -math.inf).unsqueeze(-1).expand_as(outs)] = math.nan  # never read
            outs.requires_grad_(True)
            lses.requires_grad_(True)
            o, lse = sfa.merge_attention(list(outs.unbind(0)), list(lses.unbind(0)), out_dtype=odt)
            assert o.dtype == (odt or dt) and lse.dtype == torch.float32 and o.shape == (B, H, T, D)
            od, ld = outs.detach().double().requires_grad_(), lses.detach().double().requires_grad_()
            ro, rl = merge_ref(od, ld)
            assert not o.isnan().any() and (o[:, :, 7] == 0).all() and (lse[:, :, 7] == -math.inf).all()
            tol = 1e-5 if (odt or dt) == torch.float32 else 1e-2
            assert rel(o, ro) < tol, f"N={N}: o {rel(o, ro):.2e}"
            fin = rl > -math.inf
            assert (lse[fin].double() - rl[fin]).abs().max() < 1e-4
            go, gl = torch.randn_like(ro), torch.randn_like(rl)
            (o.double() * go).sum().add((lse.double()[fin] * gl[fin]).sum()).backward()
            ((ro * go).sum() + (rl[fin] * gl[fin]).sum()).backward()
            fo = ~(ld == -math.inf).unsqueeze(-1).expand_as(od)
            go_err = rel(outs.grad[fo], od.grad[fo])
            gl_err = rel(lses.grad[ld > -math.inf], ld.grad[ld > -math.inf])
            assert (outs.grad[~fo] == 0).all() and (lses.grad[ld == -math.inf] == 0).all(), "empty parts: 0"
            gtol = 1e-4 if dt == torch.float32 and odt is None else 2e-2
            assert go_err < gtol and gl_err < gtol, f"N={N}: d outs {go_err:.2e}, d lses {gl_err:.2e}"
        # one stacked tensor works as well as a list
        o2, _ = sfa.merge_attention(outs.detach(), lses.detach(), out_dtype=odt)
        o1, _ = sfa.merge_attention(list(outs.detach()), list(lses.detach()), out_dtype=odt)
        assert torch.equal(o1, o2)


@test()
def random_partials_cpu_ref():
    _random_partials("cpu-ref")


@test(needs_cuda=True)
def random_partials_cuda():
    _random_partials("cuda")


# ------------------------------------------------------------------ ring-style

def ring(q, k, v, s, causal):
    """Attention of q over k, v as the merge of two key chunks [0, s), [s, Tk)."""
    Tk = k.shape[2]
    if causal:  # chunk 0: keys j <= i + Tk - Tq, a window; chunk 1: causal again
        o0, l0 = sfa.attention(q, k[:, :, :s], v[:, :, :s], mode="window", window=(-1, Tk - s), return_lse=True)
        o1, l1 = sfa.attention(q, k[:, :, s:], v[:, :, s:], causal=True, return_lse=True)
    else:
        o0, l0 = sfa.attention(q, k[:, :, :s], v[:, :, :s], return_lse=True)
        o1, l1 = sfa.attention(q, k[:, :, s:], v[:, :, s:], return_lse=True)
    return sfa.merge_attention([o0, o1], [l0, l1])


def _ring(backend, compiled=False):
    ctx, device, D = on(backend)
    with ctx:
        for causal, Tq, Tk, s in ((False, 64, 96, 40), (True, 80, 80, 48), (True, 90, 60, 25)):
            torch.manual_seed(23 + Tk)
            q, k, v = rand(2, 4, Tq, D, device=device), rand(2, 2, Tk, D, device=device), \
                rand(2, 2, Tk, D, device=device)
            a = [t.detach().clone().requires_grad_() for t in (q, k, v)]
            b = [t.detach().clone().requires_grad_() for t in (q, k, v)]
            o_all, l_all = sfa.attention(*a, causal=causal, return_lse=True)
            f = ring
            if compiled:
                f = torch.compile(ring, fullgraph=True, backend="inductor" if device == "cuda" else "aot_eager")
            o_m, l_m = f(*b, s, causal)
            name = f"{backend} causal={causal} Tq={Tq} Tk={Tk} split {s}"
            assert rel(o_m, o_all) < TOL, f"{name}: o {rel(o_m, o_all):.2e}"
            fin = l_all > -math.inf
            assert torch.equal(fin, l_m > -math.inf), f"{name}: rows without keys differ"
            assert (l_m[fin] - l_all[fin]).abs().max() < 1e-2, name
            go = torch.randn_like(o_all)
            gl = torch.randn_like(l_all)  # rows without keys (lse -inf) are left out of the loss
            ((o_all.float() * go.float()).sum() + (l_all[fin] * gl[fin]).sum()).backward()
            ((o_m.float() * go.float()).sum() + (l_m[fin] * gl[fin]).sum()).backward()
            errs = {n: rel(y.grad, x.grad) for n, x, y in zip(("dq", "dk", "dv"), a, b)}
            assert all(e < TOL for e in errs.values()), f"{name}: {errs}"
            print(f"      {name}{' compiled' if compiled else ''}: o {rel(o_m, o_all):.1e}, "
                  + ", ".join(f"{n} {e:.1e}" for n, e in errs.items()))


@test()
def ring_merge_equals_full_attention_cpu_ref():
    _ring("cpu-ref")


@test(needs_cuda=True)
def ring_merge_equals_full_attention_cuda():
    _ring("cuda")


@test()
def ring_merge_compiled_cpu_ref():
    torch._dynamo.reset()
    _ring("cpu-ref", compiled=True)


@test(needs_cuda=True)
def ring_merge_compiled_cuda():
    torch._dynamo.reset()
    _ring("cuda", compiled=True)


# ------------------------------------------------------------------ opcheck and errors

def _opcheck(backend):
    ctx, device, D = on(backend)
    with ctx:
        torch.manual_seed(24)
        outs = torch.randn(3, 2, 4, 16, D, device=device, dtype=DTYPE, requires_grad=True)
        lses = torch.randn(3, 2, 4, 16, device=device, requires_grad=True)
        torch.library.opcheck(torch.ops.sfa.merge_attention.default, (outs, lses, "bf16"))
        torch.library.opcheck(torch.ops.sfa.merge_attention.default, (outs.float(), lses, "fp32"))
        q, k = rand(2, 4, 32, D, device=device), rand(2, 2, 32, D, device=device)
        with torch.no_grad():
            o, lse = torch.ops.sfa.attention_fwd(q, k, k, None, None, None, None, None, None, "dense", True, None,
                                                 -1, -1, False)
        bargs = (torch.randn_like(o), q.detach(), k.detach(), k.detach(), o, lse, None, None, None, None, None,
                 None, "dense", True, None, -1, -1, False, False, torch.randn_like(lse))
        torch.library.opcheck(torch.ops.sfa.attention_bwd.default, bargs)


@test()
def opcheck_cpu_ref():
    _opcheck("cpu-ref")


@test(needs_cuda=True)
def opcheck_cuda():
    _opcheck("cuda")


def _bad_arguments(backend):
    ctx, device, D = on(backend)
    with ctx:
        _bad_arguments_on(device)


def _bad_arguments_on(device):
    o = torch.zeros(2, 4, 16, 64, device=device, dtype=DTYPE)
    l = torch.zeros(2, 4, 16, device=device)
    other = "cpu" if device == "cuda" else "meta"
    raises(ValueError, lambda: sfa.merge_attention([], []), "outs", "non-empty")
    raises(ValueError, lambda: sfa.merge_attention([o, o[:, :2]], [l, l]), "outs[1]", "agree")
    raises(ValueError, lambda: sfa.merge_attention([o, o], [l, l.half()]), "lses[1]", "agree")
    raises(ValueError, lambda: sfa.merge_attention([o, o], [l[..., :8], l[..., :8]]), "lses", "shape")
    raises(ValueError, lambda: sfa.merge_attention(o, l), "outs", "5-D")
    raises(ValueError, lambda: sfa.merge_attention([o.int(), o.int()], [l, l]), "dtype")
    raises(ValueError, lambda: sfa.merge_attention([o, o], [l, l], out_dtype=torch.int8), "out_dtype")
    raises(ValueError, lambda: sfa.merge_attention([o, o.to(other)], [l, l]), "outs[1]")
    raises(ValueError, lambda: sfa.merge_attention([o, o], (l, 3)), "lses[1]", "torch.Tensor")
    if device == "cuda":  # the library's own check
        big = torch.zeros(2, 2, 4, 16, 264, device=device)
        raises(ValueError, lambda: sfa.merge_attention(big, torch.zeros(2, 2, 4, 16, device=device)), "D = 264")


@test()
def bad_arguments_cpu_ref():
    _bad_arguments("cpu-ref")


@test(needs_cuda=True)
def bad_arguments_cuda():
    _bad_arguments("cuda")


if __name__ == "__main__":
    sys.exit(main(CUDA, f"torch {torch.__version__}, cuda {'yes' if CUDA else 'no'}"))
