#!/usr/bin/env python3
"""test_ops.py -- sfa's custom operators and what is built on them:
torch.library.opcheck of sfa::attention_fwd / attention_bwd (dense causal,
window + bias + mask, hash, GQA) and of the sparse helpers; a small attention
model whose training step is compiled with torch.compile(fullgraph=True) and
gives eager's gradients; sfa.scaled_dot_product_attention against
torch.nn.functional.scaled_dot_product_attention in float64 (is_causal with
Tq < Tk, Tq > Tk, Tq == Tk; bool and float masks; GQA; scale, also 0 and
negative) for the output and every gradient; causal_align="top_left" in
window mode; return_lse; the score options (softcap, ALiBi slopes, strict
causality) against a float64 torch version, output and gradients, and their
errors; sfa.attention_varlen (packed sequences, every mode; window with a
packed bias and mask [Hb, total_q|1, Kmax], dbias) against torch in float64
per sequence, with opcheck of its ops.

Every case runs twice where a GPU exists: on "cpu-ref", where the binding's
GPU calls are replaced by the library's float64 CPU reference (refbackend.py:
everything but the kernels is exercised, on any machine with torch), and on
"cuda" with sfa's kernels. Skips (77) without torch.
"""
import math
import sys

from harness import main, test

try:
    import torch
except ImportError:
    print("SKIP: torch is not installed")
    sys.exit(77)
import torch.nn.functional as F  # noqa: E402

import refbackend  # noqa: E402
import sfa  # noqa: E402

CUDA = torch.cuda.is_available()
BACKENDS = ["cpu-ref"] + (["cuda"] if CUDA else [])
TOL = {torch.bfloat16: 2e-2, torch.float16: 1e-2}
DTYPE = torch.bfloat16


def on(backend):
    """(context manager, device, head dim) of a backend."""
    if backend == "cpu-ref":
        return refbackend.cpu(sfa), "cpu", 32
    import contextlib
    return contextlib.nullcontext(), "cuda", 64


def rel(x, ref):
    x, ref = x.detach().double(), ref.detach().double()
    return ((x - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def leaves(ts, dtype=None):
    """Fresh leaves of ts (floating ones cast to dtype), requiring grad as ts do."""
    return [t.detach().to(dtype if dtype is not None and t.is_floating_point() else t.dtype)
            .requires_grad_(t.requires_grad) for t in ts]


def compare(name, run_sfa, run_ref, inputs, tol):
    """run_sfa(*inputs) vs run_ref(*float64 inputs): the output and the
    gradient of every input that requires grad (same random dout)."""
    a = leaves(inputs)
    b = leaves(inputs, torch.float64)
    o, r = run_sfa(*a), run_ref(*b)
    assert o.shape == r.shape, f"{name}: shape {tuple(o.shape)}, torch {tuple(r.shape)}"
    assert not o.isnan().any(), f"{name}: NaN in o"
    dout = torch.randn_like(r)
    o.backward(dout.to(o.dtype))
    r.backward(dout)
    errs = {"o": rel(o, r)}
    for i, (x, y) in enumerate(zip(a, b)):
        if x.requires_grad:
            assert x.grad is not None, f"{name}: input {i} has no gradient"
            errs[f"d{i}"] = rel(x.grad, y.grad)
    bad = {n: e for n, e in errs.items() if not e < tol}
    assert not bad, f"{name}: rel err above {tol:g}: " + ", ".join(f"{n} {e:.2e}" for n, e in bad.items())
    return errs


def rand(*shape, device, grad=True, dtype=DTYPE):
    return torch.randn(*shape, device=device, dtype=dtype).requires_grad_(grad)


def mask_ref(allowed):
    """A float64 additive mask of a bool one, for torch's SDPA as reference."""
    return torch.zeros(allowed.shape, dtype=torch.float64, device=allowed.device).masked_fill(~allowed, -math.inf)


def manual_ref(q, k, v, scale, allowed):
    """softmax(q k^T * scale) v in float64 over the allowed keys (GQA by
    repeat); rows with no allowed key give 0."""
    g = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
    s = (q @ k.transpose(-1, -2)) * scale
    s = s.masked_fill(~allowed, -math.inf)
    p = torch.softmax(s, -1).nan_to_num(0.0)
    return p @ v


# ------------------------------------------------------------------ SDPA parity

def sdpa_cases(device, D):
    """(name, sfa kwargs, torch kwargs, Hq, Hkv, Tq, Tk, mask maker)."""
    return [
        ("causal Tq == Tk", dict(is_causal=True), 4, 4, 48, 48),
        ("causal Tq < Tk", dict(is_causal=True), 4, 4, 37, 80),
        ("causal Tq > Tk", dict(is_causal=True), 4, 4, 80, 37),
        ("causal GQA 4/2 Tq > Tk scale 0.3", dict(is_causal=True, enable_gqa=True, scale=0.3), 4, 2, 61, 40),
        ("no mask GQA 4/1", dict(enable_gqa=True), 4, 1, 33, 70),
        ("bool mask [Tq, Tk]", dict(mask=("bool", lambda B, H, Tq, Tk: (Tq, Tk))), 4, 4, 40, 57),
        ("bool mask [B, 1, Tq, Tk] with empty rows", dict(mask=("bool0", lambda B, H, Tq, Tk: (B, 1, Tq, Tk))),
         4, 4, 40, 57),
        ("bool mask [Tq, 1] GQA", dict(mask=("bool", lambda B, H, Tq, Tk: (Tq, 1)), enable_gqa=True), 4, 2, 40, 33),
        ("float mask [H, 1, Tk] with grad", dict(mask=("float", lambda B, H, Tq, Tk: (H, 1, Tk))), 4, 4, 45, 64),
        ("float mask [B, H, Tq, Tk] with -inf, GQA", dict(mask=("float-inf", lambda B, H, Tq, Tk: (B, H, Tq, Tk)),
                                                         enable_gqa=True), 4, 2, 30, 47),
    ]


def _sdpa_parity(backend):
    ctx, device, D = on(backend)
    B = 2
    out = []
    with ctx:
        for name, kw, Hq, Hkv, Tq, Tk in sdpa_cases(device, D):
            torch.manual_seed(hash(name) % 1000)
            q, k, v = rand(B, Hq, Tq, D, device=device), rand(B, Hkv, Tk, D, device=device), \
                rand(B, Hkv, Tk, D, device=device)
            kw = dict(kw)
            inputs = [q, k, v]
            mk = kw.pop("mask", None)
            if mk is not None:
                kind, shape = mk
                shp = shape(B, Hq, Tq, Tk)
                if kind.startswith("bool"):
                    m = torch.rand(shp, device=device) < 0.6
                    if kind == "bool0":
                        m[..., 3, :] = False  # a row that sees nothing: 0, as torch's math backend
                    inputs.append(m)
                else:
                    m = torch.randn(shp, device=device, dtype=DTYPE)
                    if kind == "float-inf":
                        m = m.masked_fill(torch.rand(shp, device=device) < 0.3, -math.inf)
                        m[..., 2, :] = -math.inf
                    else:
                        m.requires_grad_(True)
                    inputs.append(m)

            def run_sfa(*a, kw=kw):
                return sfa.scaled_dot_product_attention(*a[:3], attn_mask=a[3] if len(a) > 3 else None, **kw)

            def run_ref(*a, kw=kw):
                m = a[3] if len(a) > 3 else None
                return F.scaled_dot_product_attention(*a[:3], attn_mask=m, **kw)
            errs = compare(f"{backend} {name}", run_sfa, run_ref, inputs, TOL[DTYPE])
            out.append(f"{name}: " + ", ".join(f"{n} {e:.1e}" for n, e in errs.items()))
    print("      " + "\n      ".join(out))


@test()
def sdpa_matches_torch_cpu_ref():
    _sdpa_parity("cpu-ref")


@test(needs_cuda=True)
def sdpa_matches_torch_cuda():
    _sdpa_parity("cuda")


def _sdpa_scales(backend):
    """scale 0 (every score 0) and negative scales work as in torch (whose
    math backend itself gives NaN there: the reference is written out)."""
    ctx, device, D = on(backend)
    with ctx:
        for s, causal in ((0.0, True), (-0.2, True), (-0.1, False), (1e-50, False)):
            torch.manual_seed(11)
            q, k, v = rand(1, 2, 30, D, device=device), rand(1, 2, 45, D, device=device), rand(1, 2, 45, D, device=device)
            i = torch.arange(30, device=device)[:, None]
            j = torch.arange(45, device=device)[None, :]
            allowed = (j <= i) if causal else torch.ones(30, 45, dtype=torch.bool, device=device)
            compare(f"{backend} scale {s}", lambda q, k, v: sfa.scaled_dot_product_attention(
                q, k, v, is_causal=causal, scale=s), lambda q, k, v: manual_ref(q, k, v, s, allowed), [q, k, v],
                TOL[DTYPE])


@test()
def sdpa_scale_zero_and_negative_cpu_ref():
    _sdpa_scales("cpu-ref")


@test(needs_cuda=True)
def sdpa_scale_zero_and_negative_cuda():
    _sdpa_scales("cuda")


# ------------------------------------------------------------------ alignment and lse

def _window_top_left(backend):
    """causal_align="top_left" in window mode (the window around query i's
    key i, not i + Tk - Tq), every way the mapping cuts keys or rows, and lse
    (-inf exactly where a row sees nothing)."""
    ctx, device, D = on(backend)
    with ctx:
        for W in ((5, 3), (3, 0), (-1, 4), (7, -1), (2, 2)):
            for causal in (False, True):
                for Tq, Tk in ((33, 50), (50, 33), (40, 40), (60, 20)):
                    torch.manual_seed(Tq * 100 + Tk)
                    q = rand(1, 2, Tq, D, device=device)
                    k, v = rand(1, 2, Tk, D, device=device), rand(1, 2, Tk, D, device=device)
                    i = torch.arange(Tq, device=device)[:, None]
                    j = torch.arange(Tk, device=device)[None, :]
                    L, R = W[0], (0 if causal else W[1])
                    allowed = torch.ones(Tq, Tk, dtype=torch.bool, device=device)
                    if L >= 0:
                        allowed &= j >= i - L
                    if R >= 0:
                        allowed &= j <= i + R
                    name = f"{backend} window {W} causal={causal} Tq={Tq} Tk={Tk}"
                    compare(name, lambda q, k, v: sfa.attention(q, k, v, mode="window", window=W, causal=causal,
                                                                causal_align="top_left"),
                            lambda q, k, v: manual_ref(q, k, v, D ** -0.5, allowed), [q, k, v], TOL[DTYPE])
                    with torch.no_grad():
                        _, lse = sfa.attention(q, k, v, mode="window", window=W, causal=causal,
                                               causal_align="top_left", return_lse=True)
                        s = (q.double() @ k.double().transpose(-1, -2)) * D ** -0.5
                        want = torch.logsumexp(s.masked_fill(~allowed, -math.inf), -1)
                    assert torch.equal(torch.isinf(lse), torch.isinf(want)), f"{name}: lse -inf rows differ"
                    fin = torch.isfinite(want)
                    err = (lse.double() - want)[fin].abs().max().item() if fin.any() else 0.0
                    assert err < 2e-2, f"{name}: lse off by {err:.2e}"


@test()
def window_top_left_cpu_ref():
    _window_top_left("cpu-ref")


@test(needs_cuda=True)
def window_top_left_cuda():
    _window_top_left("cuda")


def _return_lse(backend):
    ctx, device, D = on(backend)
    with ctx:
        torch.manual_seed(12)
        q, k, v = rand(2, 4, 50, D, device=device), rand(2, 2, 30, D, device=device), rand(2, 2, 30, D, device=device)
        o, lse = sfa.attention(q, k, v, causal=True, return_lse=True)  # bottom-right: rows < 20 see nothing
        assert lse.dtype == torch.float32 and lse.shape == (2, 4, 50) and lse.requires_grad  # test_merge.py: its grad
        kk = k.detach().double().repeat_interleave(2, 1)
        s = (q.detach().double() @ kk.transpose(-1, -2)) * D ** -0.5
        i = torch.arange(50, device=device)[:, None]
        j = torch.arange(30, device=device)[None, :]
        want = torch.logsumexp(s.masked_fill(~(j <= i - 20), -math.inf), -1)
        assert torch.isinf(lse[..., :20]).all() and (lse[..., :20] < 0).all(), "rows without keys: lse -inf"
        assert (o[:, :, :20] == 0).all(), "rows without keys: o 0"
        assert (lse[..., 20:].double() - want[..., 20:]).abs().max() < 2e-2
        o.float().sum().backward()  # o stays differentiable next to lse
        assert q.grad is not None and (q.grad[:, :, :20] == 0).all()


@test()
def return_lse_cpu_ref():
    _return_lse("cpu-ref")


@test(needs_cuda=True)
def return_lse_cuda():
    _return_lse("cuda")


# ------------------------------------------------------------------ opcheck

def _opcheck(backend):
    ctx, device, D = on(backend)
    op_f, op_b = torch.ops.sfa.attention_fwd.default, torch.ops.sfa.attention_bwd.default
    with ctx:
        torch.manual_seed(13)
        B, Hq, Hkv, T = 2, 4, 2, 64
        q, k, v = rand(B, Hq, T, D, device=device), rand(B, Hkv, T, D, device=device), rand(B, Hkv, T, D, device=device)
        bias = rand(1, Hq, T, T, device=device)
        buf = torch.zeros(B, 1, T, T, device=device, dtype=torch.bool)
        mask = buf.copy_(torch.rand(B, 1, T, T, device=device) < 0.8)
        nb = 4
        qb = torch.randint(0, nb, (B, Hq, T), device=device, dtype=torch.int32)
        kb = torch.randint(0, nb, (B, Hkv, T), device=device, dtype=torch.int32)
        _, _, qi, qh = sfa.hash_prepare(qb, nb, None)
        _, _, ki, kh = sfa.hash_prepare(kb, nb, None)
        slopes = torch.rand(B, Hq, device=device) * 0.2
        pos = torch.arange(T, device=device, dtype=torch.int32)
        qd_q, qd_k = pos.expand(B, Hq, T).contiguous(), (pos * 2).expand(B, Hkv, T).contiguous()
        cases = [
            ("dense causal GQA", (q, k, v, None, None, None, None, None, None, "dense", True, None, -1, -1, False), ()),
            ("window + bias + mask", (q, k, v, bias, mask, None, None, None, None, "window", False, 0.2, 9, 3, False),
             ()),
            ("hash deterministic", (q, k, v, None, None, qi, ki, qh, kh, "hash", False, None, -1, -1, True), ()),
            ("dense causal softcap + alibi", (q, k, v, None, None, None, None, None, None, "dense", True, None, -1,
                                              -1, False), (slopes, False, 2.0)),
            ("window + bias, alibi [Hq]", (q, k, v, bias, None, None, None, None, None, "window", False, None, 20, 5,
                                           False), (slopes[0], False, 0.0)),
            ("qk_drop strict softcap", (q, k, v, None, None, qd_q, qd_k, None, None, "qk_drop", False, None, -1, -1,
                                        False), (None, True, 3.0)),
            ("hash strict", (q, k, v, None, None, qi, ki, qh, kh, "hash", False, None, -1, -1, False),
             (None, True, 0.0)),
        ]
        for name, args, score in cases:
            args = args + score
            torch.library.opcheck(op_f, args)
            with torch.no_grad():
                o, lse = op_f(*args)
            dout = torch.randn_like(o)
            bias_grad = args[3] is not None
            # attention_bwd: ..., bias_grad, dlse, then the score options
            bargs = (dout, *(a.detach() for a in args[:3]), o, lse, *args[3:9]) + args[9:15] + (bias_grad,
                                                                                               None) + score
            bargs = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in bargs)
            torch.library.opcheck(op_b, bargs)
        x = torch.randn(B, Hq, T, D, device=device, dtype=DTYPE)
        torch.library.opcheck(torch.ops.sfa.hash_prepare.default, (qb, nb, x, x.clone()))
        torch.library.opcheck(torch.ops.sfa.hash_prepare.default, (qb, nb, None, None))
        torch.library.opcheck(torch.ops.sfa.hash_unsort.default, (x, qi))
        if device == "cuda":
            torch.library.opcheck(torch.ops.sfa.topk_mask.default, (bias.detach(), 7, True))


@test()
def opcheck_cpu_ref():
    _opcheck("cpu-ref")


@test(needs_cuda=True)
def opcheck_cuda():
    _opcheck("cuda")


# ------------------------------------------------------------------ score options

def score_ref(q, k, v, scale, allowed, softcap=0.0, slopes=None):
    """manual_ref with the score options of docs/semantics.md: s = scale q.k,
    then softcap * tanh(s / softcap), then - slope[b, h] |i + Tk - Tq - j|."""
    g = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
    s = (q @ k.transpose(-1, -2)) * scale
    if softcap:
        s = softcap * torch.tanh(s / softcap)
    if slopes is not None:
        tq, tk = q.shape[2], k.shape[2]
        i = torch.arange(tq, device=q.device)[:, None]
        j = torch.arange(tk, device=q.device)[None, :]
        dist = (i + tk - tq - j).abs().to(torch.float64)
        sl = slopes.to(torch.float64).reshape(-1, q.shape[1], 1, 1)
        s = s - sl * dist
    s = s.masked_fill(~allowed, -math.inf)
    p = torch.softmax(s, -1).nan_to_num(0.0)
    return p @ v


def _score_options(backend):
    ctx, device, D = on(backend)
    with ctx:
        torch.manual_seed(29)
        B, Hq, Hkv = 2, 4, 2
        # dense causal, Tq < Tk and Tq > Tk, softcap and ALiBi [Hq] / [B, Hq]
        for tq, tk, per_batch in ((37, 70, False), (70, 37, True)):
            inputs = [rand(B, Hq, tq, D, device=device), rand(B, Hkv, tk, D, device=device),
                      rand(B, Hkv, tk, D, device=device)]
            slopes = torch.rand((B, Hq) if per_batch else (Hq,), device=device) * 0.3
            scale = 2.0 / math.sqrt(D)
            allowed = (torch.arange(tk, device=device)[None, :] <=
                       torch.arange(tq, device=device)[:, None] + tk - tq).expand(B, Hq, tq, tk)

            def run_sfa(q, k, v, slopes=slopes, scale=scale):
                return sfa.attention(q, k, v, causal=True, scale=scale, softcap=1.5, alibi_slopes=slopes)

            def run_ref(q, k, v, slopes=slopes, scale=scale, allowed=allowed):
                return score_ref(q, k, v, scale, allowed, 1.5, slopes)
            compare(f"dense causal softcap alibi Tq {tq} Tk {tk} [{'B, ' if per_batch else ''}Hq]", run_sfa,
                    run_ref, inputs, TOL[DTYPE])
        # qk_drop and hash, strict (a query does not see its own position), with softcap
        T = 64
        q, k, v = rand(B, Hq, T, D, device=device), rand(B, Hkv, T, D, device=device), rand(B, Hkv, T, D, device=device)
        pos = torch.arange(T, device=device, dtype=torch.int32)
        qi, ki = pos.expand(B, Hq, T).contiguous(), pos.expand(B, Hkv, T).contiguous()
        g = Hq // Hkv
        strict = qi[..., :, None] > ki.repeat_interleave(g, 1)[..., None, :]

        def run_qk(q, k, v):
            return sfa.attention(q, k, v, mode="qk_drop", q_idx=qi, k_idx=ki, strict_causal=True, softcap=2.0)

        def ref_qk(q, k, v):
            return score_ref(q, k, v, 1 / math.sqrt(D), strict, 2.0)
        compare("qk_drop strict softcap", run_qk, ref_qk, [q, k, v], TOL[DTYPE])
        with torch.no_grad():  # row 0 (position 0) sees nothing under strict causality
            o, lse = sfa.attention(q, k, v, mode="qk_drop", q_idx=qi, k_idx=ki, strict_causal=True, return_lse=True)
            assert (o[:, :, 0] == 0).all() and torch.isinf(lse[:, :, 0]).all()
            o2, lse2 = sfa.attention(q, k, v, mode="qk_drop", q_idx=qi, k_idx=ki, return_lse=True)
            assert torch.isfinite(lse2[:, :, 0]).all(), "without strict_causal row 0 sees its own key"
        nb = 3
        qb = torch.randint(0, nb, (B, Hq, T), device=device, dtype=torch.int32)
        kb = qb[:, ::g].contiguous()  # the same buckets for the keys of each group's first head

        def run_hash(q, k, v):
            return sfa.hash_attention(q, k, v, qb, kb, nb, strict_causal=True)

        def ref_hash(q, k, v):
            same = qb[..., :, None] == kb.repeat_interleave(g, 1)[..., None, :]
            return score_ref(q, k, v, 1 / math.sqrt(D), same & (pos[:, None] > pos[None, :]))
        compare("hash_attention strict", run_hash, ref_hash, [q, k, v], TOL[DTYPE])


@test()
def score_options_cpu_ref():
    _score_options("cpu-ref")


@test(needs_cuda=True)
def score_options_cuda():
    _score_options("cuda")


def _score_errors(backend):
    """Messages that name the option (the library's, or the binding's). The
    slopes' shape is checked by sfa_forward (the CPU reference has no shapes)."""
    ctx, device, D = on(backend)
    with ctx:
        q = torch.randn(1, 2, 8, D, dtype=DTYPE, device=device)
        cases = [(dict(strict_causal=True), "params.strict_causal: 1"),
                 (dict(softcap=-1.0), "params.softcap: -1"),
                 (dict(softcap=float("nan")), "params.softcap: nan"),
                 (dict(alibi_slopes=torch.ones(2, dtype=torch.int32, device=device)), "alibi_slopes: dtype"),
                 (dict(alibi_slopes=torch.ones(2, device=device), causal=True, causal_align="top_left"),
                  "alibi_slopes with causal_align='top_left'")]
        if device == "cuda":
            cases.append((dict(alibi_slopes=torch.ones(3, device=device)), "alibi_slopes: shape [3]"))
        for kw, needle in cases:
            try:
                sfa.attention(q, q, q, **kw)
            except ValueError as e:
                assert needle in str(e), f"{kw}: {e}"
            else:
                raise AssertionError(f"{kw}: no error")


@test()
def score_option_errors_cpu_ref():
    _score_errors("cpu-ref")


@test(needs_cuda=True)
def score_option_errors_cuda():
    _score_errors("cuda")
# ------------------------------------------------------------------ packed sequences

def _packed_indices(mode, lens, H, device):
    """Per-sequence index arrays [H, total] (positions within each sequence):
    qk_drop sorted positions of [0, 2n) with a padding tail; hash rows sorted
    by (bucket, position) over 3 buckets. The k side (pad INT32_MAX) when
    k_side, else the q side (pad -1)."""
    def side(k_side):
        pad = 2**31 - 1 if k_side else -1
        idx, hsh = [], []
        for n in lens[k_side]:
            for_h_i, for_h_h = [], []
            for _ in range(H[k_side]):
                if mode == "qk_drop":
                    real = n - n // 5
                    i = torch.randperm(2 * n)[:real].sort().values if n else torch.zeros(0, dtype=torch.long)
                    h = torch.zeros(n, dtype=torch.long)
                else:
                    real = n - n // 6
                    b = torch.randint(0, 3, (real,))
                    order = (b * (real + 1) + torch.arange(real)).argsort()
                    i, h = order, b[order]
                i = torch.cat([i, torch.full((n - real,), pad)])
                h = torch.cat([h, torch.full((n - real,), 2**31 - 1)])
                for_h_i.append(i)
                for_h_h.append(h)
            idx.append(torch.stack(for_h_i))
            hsh.append(torch.stack(for_h_h))
        return (torch.cat(idx, 1).to(torch.int32).to(device), torch.cat(hsh, 1).to(torch.int32).to(device))
    return side(0), side(1)


def _packed_allowed(mode, tq, tk, kw, qi, ki, qh, kh, group):
    """The bool [1, Hq or 1, tq, tk] of who sees what in one sequence (docs/semantics.md)."""
    i = torch.arange(tq).unsqueeze(1)
    j = torch.arange(tk).unsqueeze(0)
    off = tk - tq
    if mode == "dense":
        a = (j <= i + off) if kw.get("causal") else torch.ones(tq, tk, dtype=torch.bool)
        return a.view(1, 1, tq, tk)
    if mode == "window":
        left, right = kw["window"]
        a = torch.ones(tq, tk, dtype=torch.bool)
        if left >= 0:
            a &= j >= i + off - left
        if right >= 0:
            a &= j <= i + off + right
        return a.view(1, 1, tq, tk)
    qi, ki = qi.long().cpu(), ki.long().cpu().repeat_interleave(group, 0)
    a = (qi[:, :, None] != -1) & (ki[:, None, :] != 2**31 - 1) & (qi[:, :, None] >= ki[:, None, :])
    if mode == "hash":
        qh, kh = qh.long().cpu(), kh.long().cpu().repeat_interleave(group, 0)
        a &= qh[:, :, None] == kh[:, None, :]
    return a.unsqueeze(0)


def _packed_qkv(seed, Hq, Hkv, D, device):
    """The packed problem of the varlen tests, lengths 0 and 1 among them and
    queries without keys: (lq, lk, [cu_seqlens_q, cu_seqlens_k] int32 on
    device, q [total_q, Hq, D], k, v [total_k, Hkv, D] random leaves)."""
    import itertools
    torch.manual_seed(seed)
    lq, lk = [0, 1, 37, 70, 1, 5, 20], [3, 1, 40, 70, 0, 9, 20]
    cu = [torch.tensor([0] + list(itertools.accumulate(ls)), dtype=torch.int32, device=device)
          for ls in (lq, lk)]
    TQ, TK = sum(lq), sum(lk)
    return (lq, lk, cu, rand(TQ, Hq, D, device=device), rand(TK, Hkv, D, device=device),
            rand(TK, Hkv, D, device=device))


def _varlen(backend):
    """sfa.attention_varlen against torch in float64, one sequence at a time
    (lengths 0 and 1 among them, queries without keys, GQA): o and every
    gradient; lse; and opcheck of the two custom ops."""
    ctx, device, D = on(backend)
    with ctx:
        Hq, Hkv = 4, 2
        lq, lk, cu, q, k, v = _packed_qkv(23, Hq, Hkv, D, device)
        (qi, qh), (ki, kh) = _packed_indices("qk_drop", (lq, lk), (Hq, Hkv), device)
        (hqi, hqh), (hki, hkh) = _packed_indices("hash", (lq, lk), (Hq, Hkv), device)
        cases = [
            ("dense causal", "dense", dict(causal=True), {}),
            ("dense causal, max_seqlen_k given", "dense", dict(causal=True, max_seqlen_k=max(lk)), {}),
            ("dense", "dense", {}, {}),
            ("window 8/2", "window", dict(window=(8, 2)), {}),
            ("qk_drop deterministic", "qk_drop", dict(deterministic=True), dict(q_idx=qi, k_idx=ki)),
            ("hash", "hash", {}, dict(q_idx=hqi, k_idx=hki, q_hash=hqh, k_hash=hkh)),
        ]
        scale = 1 / math.sqrt(D)
        bq, bk = cu[0].tolist(), cu[1].tolist()

        for name, mode, kw, ix in cases:
            def run_sfa(q, k, v):
                return sfa.attention_varlen(q, k, v, cu[0], cu[1], mode=mode, **kw, **ix)

            def run_ref(q, k, v):
                outs = []
                for b in range(len(lq)):
                    qa, qb, ka, kb = bq[b], bq[b + 1], bk[b], bk[b + 1]
                    if qb == qa:
                        continue
                    if kb == ka:
                        outs.append(q.new_zeros(qb - qa, Hq, D))
                        continue
                    seq = [t[a:c].transpose(0, 1).unsqueeze(0) for t, a, c in ((q, qa, qb), (k, ka, kb), (v, ka, kb))]
                    cut = [x[:, a:c] if x is not None else None for x, a, c in
                           ((ix.get("q_idx"), qa, qb), (ix.get("k_idx"), ka, kb), (ix.get("q_hash"), qa, qb),
                            (ix.get("k_hash"), ka, kb))]
                    allowed = _packed_allowed(mode, qb - qa, kb - ka, kw, *cut, Hq // Hkv).to(q.device)
                    outs.append(manual_ref(*seq, scale, allowed)[0].transpose(0, 1))
                return torch.cat(outs, 0)

            errs = compare(f"{backend} varlen {name}", run_sfa, run_ref, [q, k, v], TOL[DTYPE])
            print(f"      {backend} varlen {name}: " + ", ".join(f"{n} {e:.1e}" for n, e in errs.items()))
            with torch.no_grad():
                o, lse = sfa.attention_varlen(q, k, v, cu[0], cu[1], mode=mode, return_lse=True, **kw, **ix)
            assert lse.shape == (Hq, q.shape[0]) and lse.dtype == torch.float32, lse.shape
            for b in range(len(lq)):  # rows of a sequence without keys: o = 0, lse = -inf
                if bk[b + 1] == bk[b]:
                    assert (o[bq[b]:bq[b + 1]] == 0).all() and (lse[:, bq[b]:bq[b + 1]] == -math.inf).all()
            args = (q.detach(), k.detach(), v.detach(), cu[0], cu[1], ix.get("q_idx"), ix.get("k_idx"),
                    ix.get("q_hash"), ix.get("k_hash"), mode, bool(kw.get("causal", False)), None,
                    *kw.get("window", (-1, -1)), bool(kw.get("deterministic", False)))
            torch.library.opcheck(torch.ops.sfa.attention_varlen_fwd.default, args)
            dout = torch.randn_like(o)
            torch.library.opcheck(torch.ops.sfa.attention_varlen_bwd.default,
                                  (dout, *args[:3], o, lse) + args[3:])
        for bad in (-1, True, 2.5):  # the hint: an int >= 0 or None
            try:
                sfa.attention_varlen(q, k, v, cu[0], cu[1], causal=True, max_seqlen_k=bad)
            except ValueError as e:
                assert "max_seqlen_k" in str(e), e
            else:
                raise AssertionError(f"max_seqlen_k={bad!r} was accepted")


@test()
def varlen_cpu_ref():
    _varlen("cpu-ref")


@test(needs_cuda=True)
def varlen_cuda():
    _varlen("cuda")


def _heads(t, Hq, Hkv):
    """A packed bias / mask [Hb, R, K] with Hb in (Hq, Hkv, 1) as Hq heads."""
    return t.repeat_interleave(Hq // Hkv, 0) if t.shape[0] == Hkv and Hkv != Hq else t.expand(Hq, *t.shape[1:])


def _varlen_window_bias_mask(backend):
    """sfa.attention_varlen in window mode with a packed bias / mask
    [Hb, total_q|1, Kmax] (Hb = Hq, Hkv, 1; a broadcast row; Kmax below the
    longest key length, so keys past it are masked) against torch in float64
    per sequence: o and the gradients of q, k, v and the bias (0 in the
    columns past a sequence's keys); opcheck of both ops with them."""
    ctx, device, D = on(backend)
    with ctx:
        Hq, Hkv = 4, 2
        lq, lk, cu, q, k, v = _packed_qkv(29, Hq, Hkv, D, device)
        TQ = q.shape[0]
        bq, bk = cu[0].tolist(), cu[1].tolist()
        scale = 1 / math.sqrt(D)
        # (name, kwargs, bias shape or None, mask shape or None)
        cases = [
            ("bias [Hq, total_q, Kmax] + mask [1, total_q, Kmax], window 8/2", dict(window=(8, 2)),
             (Hq, TQ, 70), (1, TQ, 70)),
            ("bias [1, 1, 30] (a row, Kmax 30 < 70), causal", dict(causal=True), (1, 1, 30), None),
            ("mask [Hkv, 1, 45] uint8, deterministic", dict(window=(-1, 4), deterministic=True), None,
             (Hkv, 1, 45)),
            ("bias [Hkv, total_q, 80] + mask [Hq, 1, 80]", dict(window=(16, 16)), (Hkv, TQ, 80), (Hq, 1, 80)),
        ]
        for name, kw, bshape, mshape in cases:
            bias = rand(*bshape, device=device) if bshape else None
            mask = None
            if mshape:
                mask = torch.rand(mshape, device=device) < 0.7
                if "uint8" in name:
                    mask = mask.to(torch.uint8)
            inputs = [q, k, v] + ([bias] if bias is not None else [])

            def run_sfa(q, k, v, b=None):
                return sfa.attention_varlen(q, k, v, cu[0], cu[1], mode="window", bias=b, mask=mask, **kw)

            def run_ref(q, k, v, b=None):
                kmax = min(t.shape[-1] for t in (b, mask) if t is not None)
                outs = []
                for s_ in range(len(lq)):
                    qa, qb, ka, kb = bq[s_], bq[s_ + 1], bk[s_], bk[s_ + 1]
                    tq, tk = qb - qa, kb - ka
                    if tq == 0:
                        continue
                    if tk == 0:
                        outs.append(q.new_zeros(tq, Hq, D))
                        continue
                    w = min(tk, kmax)
                    qs, ks, vs = (t[a:c].transpose(0, 1).unsqueeze(0) for t, a, c in
                                  ((q, qa, qb), (k, ka, kb), (v, ka, kb)))
                    g = Hq // Hkv
                    ks, vs = ks.repeat_interleave(g, 1), vs.repeat_interleave(g, 1)
                    sc = (qs @ ks.transpose(-1, -2)) * scale
                    wk = dict(kw)
                    wk["window"] = (-1, 0) if kw.get("causal") else kw.get("window", (-1, -1))
                    allowed = _packed_allowed("window", tq, tk, wk, None, None, None, None, g).to(q.device)
                    allowed = allowed & (torch.arange(tk, device=q.device) < kmax)
                    if b is not None:
                        rows = b if b.shape[1] == 1 else b[:, qa:qb]
                        sc = sc + F.pad(_heads(rows, Hq, Hkv)[..., :w], (0, tk - w)).unsqueeze(0)
                    if mask is not None:
                        rows = mask if mask.shape[1] == 1 else mask[:, qa:qb]
                        m = F.pad(_heads(rows.to(torch.bool), Hq, Hkv)[..., :w], (0, tk - w), value=False)
                        allowed = allowed & m.unsqueeze(0)
                    sc = sc.masked_fill(~allowed, -math.inf)
                    p_ = torch.softmax(sc, -1).nan_to_num(0.0)
                    outs.append((p_ @ vs)[0].transpose(0, 1))
                return torch.cat(outs, 0)

            errs = compare(f"{backend} varlen window {name}", run_sfa, run_ref, inputs, TOL[DTYPE])
            print(f"      {backend} varlen window {name}: " + ", ".join(f"{n} {e:.1e}" for n, e in errs.items()))
            with torch.no_grad():
                o, lse = sfa.attention_varlen(q, k, v, cu[0], cu[1], mode="window", bias=bias, mask=mask,
                                              return_lse=True, **kw)
            win = kw.get("window", (-1, -1))
            args = (q.detach(), k.detach(), v.detach(), cu[0], cu[1], None, None, None, None, "window",
                    bool(kw.get("causal", False)), None, *win, bool(kw.get("deterministic", False)),
                    bias.detach() if bias is not None else None,
                    mask.view(torch.uint8) if mask is not None and mask.dtype == torch.bool else mask)
            torch.library.opcheck(torch.ops.sfa.attention_varlen_fwd.default, args)
            torch.library.opcheck(torch.ops.sfa.attention_varlen_bwd.default,
                                  (torch.randn_like(o), *args[:3], o, lse) + args[3:] + (bias is not None,))
        # a bias of one row with its gradient cannot be deterministic (float atomics across sequences)
        b1 = rand(1, 1, 70, device=device)
        if backend == "cuda":
            from harness import raises
            o = sfa.attention_varlen(q, k, v, cu[0], cu[1], mode="window", bias=b1, deterministic=True)
            raises(NotImplementedError, lambda: o.sum().backward(), "dbias", "deterministic")


@test()
def varlen_window_bias_mask_cpu_ref():
    _varlen_window_bias_mask("cpu-ref")


@test(needs_cuda=True)
def varlen_window_bias_mask_cuda():
    _varlen_window_bias_mask("cuda")


# ------------------------------------------------------------------ torch.compile

class Block(torch.nn.Module):
    """One pre-norm attention block: qkv projection, sfa attention (SDPA
    drop-in, window mode with a learned bias, hash attention), output
    projection."""

    def __init__(self, dim, heads, T):
        super().__init__()
        self.heads = heads
        self.norm = torch.nn.LayerNorm(dim)
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        self.out = torch.nn.Linear(dim, dim)
        self.rel_bias = torch.nn.Parameter(0.1 * torch.randn(1, heads, 1, T))

    def forward(self, x, buckets):
        B, T, C = x.shape
        q, k, v = self.qkv(self.norm(x)).view(B, T, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        a = sfa.scaled_dot_product_attention(q, k, v, is_causal=True)
        b = sfa.attention(q, k, v, mode="window", window=(15, 0), causal=True, bias=self.rel_bias.to(q.dtype))
        c = sfa.hash_attention(q, k, v, buckets, buckets, 4)
        return x + self.out((a + b + c).transpose(1, 2).reshape(B, T, C))


def _compiled_step(backend):
    ctx, device, D = on(backend)
    heads, T = 2, 64
    with ctx:
        torch.manual_seed(14)
        model = Block(heads * D, heads, T).to(device=device, dtype=DTYPE)
        x = torch.randn(2, T, heads * D, device=device, dtype=DTYPE)
        buckets = torch.randint(0, 4, (2, heads, T), device=device, dtype=torch.int32)

        def loss_fn(x, buckets):
            return model(x, buckets).float().pow(2).mean()

        def grads(f):
            model.zero_grad()
            loss = f(x, buckets)
            loss.backward()
            return loss.detach(), [p.grad.clone() for p in model.parameters()]

        torch._dynamo.reset()
        compiled = torch.compile(loss_fn, fullgraph=True, backend="inductor" if device == "cuda" else "aot_eager")
        l_eager, g_eager = grads(loss_fn)
        l_comp, g_comp = grads(compiled)
        l_again, g_again = grads(compiled)  # the compiled graph is reused
        assert abs(l_eager.item() - l_comp.item()) <= 1e-2 * abs(l_eager.item()), (l_eager, l_comp)
        for (n, _), a, b in zip(model.named_parameters(), g_comp, g_eager):
            assert rel(a, b) < TOL[DTYPE], f"{backend}: compiled d{n} differs from eager: {rel(a, b):.2e}"
        # one SGD step with the compiled gradients lowers the loss
        with torch.no_grad():
            for p, g in zip(model.parameters(), g_comp):
                p -= 0.5 * g
        assert loss_fn(x, buckets).item() < l_eager.item(), "the training step did not lower the loss"
        print(f"      {backend}: loss {l_eager.item():.4f}, compiled {l_comp.item():.4f}")


@test()
def compiled_training_step_cpu_ref():
    _compiled_step("cpu-ref")


@test(needs_cuda=True)
def compiled_training_step_cuda():
    _compiled_step("cuda")


if __name__ == "__main__":
    sys.exit(main(CUDA, f"torch {torch.__version__}, backends {', '.join(BACKENDS)}"))
