#!/usr/bin/env python3
"""test_varlen_helpers.py -- the sparse helpers on packed sequences
(cu_seqlens arguments of sfa.hash_prepare, sfa.hash_unsort, sfa.topk_mask
and sfa.hash_attention): sorted layouts and top-k masks against plain Python
computed per sequence (sequences of length 0 and 1, uneven batches,
out-of-range buckets, query and key lengths that differ, mask columns past
a sequence's keys), unsort(prepare(x)) == x, packed hash attention (with and
without gradients) against the fixed-length call on each sequence alone,
torch.compile(fullgraph=True) and opcheck of the ops with the prefix sums,
and the argument errors. Runs on "cpu-ref" (the CPU reference standing in
for the GPU calls, refbackend.py) and on "cuda" where there is a GPU. Skips
(77) without torch.
"""
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
INT32_MAX = 2**31 - 1


def on(backend):
    """(context manager, device, head dim) of a backend."""
    if backend == "cpu-ref":
        return refbackend.cpu(sfa), "cpu", 32
    import contextlib
    return contextlib.nullcontext(), "cuda", 64


def cu_of(lens, device):
    cu = [0]
    for n in lens:
        cu.append(cu[-1] + n)
    return cu, torch.tensor(cu, dtype=torch.int32, device=device)


def expected_sort(bucket, cu, nb):
    """(idx, hash) lists [H][total] of a stable sort by (bucket, position) per
    sequence and head; out-of-range buckets last with hash INT32_MAX."""
    H, total = len(bucket), len(bucket[0])
    idx = [[0] * total for _ in range(H)]
    hsh = [[0] * total for _ in range(H)]
    for h in range(H):
        for a, b in zip(cu, cu[1:]):
            def key(t):
                v = bucket[h][a + t]
                return (v if 0 <= v < nb else nb, t)
            for i, t in enumerate(sorted(range(b - a), key=key)):
                v = bucket[h][a + t]
                idx[h][a + i] = t
                hsh[h][a + i] = v if 0 <= v < nb else INT32_MAX
    return idx, hsh


def _prepare_and_unsort(backend):
    ctx, device, D = on(backend)
    with ctx:
        torch.manual_seed(21)
        for lens, H, nb in (([0, 1, 5, 0, 40, 1, 17], 3, 4), ([1], 1, 1), ([0, 0, 3], 2, 1000),
                            ([33, 2, 64], 2, 16)):
            cu, tcu = cu_of(lens, device)
            total = cu[-1]
            bucket = torch.randint(-2, nb + 2, (H, total), dtype=torch.int32, device=device)
            x = torch.randn(total, H, D, device=device, dtype=torch.bfloat16)
            x2 = torch.randn(total, H, 8, device=device, dtype=torch.float32)
            xs, x2s, idx, hsh = sfa.hash_prepare(bucket, nb, x, x2, cu_seqlens=tcu)
            want_idx, want_hash = expected_sort(bucket.tolist(), cu, nb)
            assert idx.tolist() == want_idx, f"{backend} lens {lens}: idx {idx.tolist()} != {want_idx}"
            assert hsh.tolist() == want_hash, f"{backend} lens {lens}: hash differs"
            start = torch.tensor([a for a, b in zip(cu, cu[1:]) for _ in range(b - a)], device=device)
            rows = (idx.long() + start).t()  # [total, H]: the source row of each sorted one
            for t, ts in ((x, xs), (x2, x2s)):
                want = torch.gather(t, 0, rows.unsqueeze(-1).expand(*rows.shape, t.shape[-1]))
                assert torch.equal(ts, want), f"{backend} lens {lens}: sorted rows differ"
            assert torch.equal(sfa.hash_unsort(xs, idx, cu_seqlens=tcu), x), f"{backend}: unsort(prepare(x)) != x"
            out = torch.full_like(x2, 7.0)
            sfa.hash_unsort(x2s, idx, out=out, cu_seqlens=tcu)
            assert torch.equal(out, x2), f"{backend}: unsort into out"
            # idx only, as hash_attention's gradient path asks for it
            none_xs, _, idx2, hsh2 = sfa.hash_prepare(bucket, nb, None, cu_seqlens=tcu)
            assert none_xs is None and torch.equal(idx2, idx) and torch.equal(hsh2, hsh)


@test()
def hash_prepare_and_unsort_packed_cpu_ref():
    _prepare_and_unsort("cpu-ref")


@test(needs_cuda=True)
def hash_prepare_and_unsort_packed_cuda():
    _prepare_and_unsort("cuda")


def expected_topk(bias, lq, lk, w, causal):
    """Mask lists [Hb][total_q][Kmax]: per row of each sequence the w largest
    non-NaN biases among its first len_k (causal: j <= i + len_k - len_q)
    columns, ties to the lower j; every other column 0."""
    Hb, total, K = len(bias), len(bias[0]), len(bias[0][0])
    out = [[[0] * K for _ in range(total)] for _ in range(Hb)]
    r = 0
    for nq, nk in zip(lq, lk):
        for i in range(nq):
            n = max(0, min(nk, i + nk - nq + 1)) if causal else nk
            for h in range(Hb):
                row = bias[h][r + i]
                keys = sorted((j for j in range(n) if row[j] == row[j]), key=lambda j: (-row[j], j))
                for j in keys[:w]:
                    out[h][r + i][j] = 1
        r += nq
    return out


def _topk(backend):
    ctx, device, _ = on(backend)
    with ctx:
        torch.manual_seed(22)
        lq, lk = [0, 1, 7, 20, 1, 3], [3, 1, 30, 9, 0, 3]
        _, cq = cu_of(lq, device)
        _, ck = cu_of(lk, device)
        K = max(lk) + 5
        for dtype, w, causal, ints in ((torch.bfloat16, 4, True, False), (torch.float32, 1, False, True),
                                       (torch.float16, 0, True, False), (torch.float32, 100, False, False),
                                       (torch.bfloat16, 3, False, True)):
            bias = torch.randn(2, sum(lq), K, dtype=torch.float32)
            if ints:  # ties everywhere
                bias = torch.randint(-2, 3, bias.shape).float()
            bias[0, 3, 2] = float("nan")
            bias = bias.to(dtype).to(device)
            m = sfa.topk_mask(bias, w, causal, cu_seqlens_q=cq, cu_seqlens_k=ck)
            assert m.dtype == torch.uint8 and m.shape == bias.shape and m.stride(1) % 16 == 0
            want = expected_topk(bias.float().tolist(), lq, lk, w, causal)
            assert m.tolist() == want, f"{backend} {dtype} w {w} causal {causal}: mask differs"
            out = torch.full((2, sum(lq), (K + 15) // 16 * 16), 9, dtype=torch.uint8, device=device)[..., :K]
            sfa.topk_mask(bias, w, causal, out=out, cu_seqlens_q=cq, cu_seqlens_k=ck)
            assert out.tolist() == want, f"{backend}: topk_mask into out differs"


@test()
def topk_mask_packed_cpu_ref():
    _topk("cpu-ref")


@test(needs_cuda=True)
def topk_mask_packed_cuda():
    _topk("cuda")


def _hash_attention(backend):
    """Packed hash_attention equals hash_attention on each sequence alone
    (fixed length), output and gradients, with and without grad mode."""
    ctx, device, D = on(backend)
    with ctx:
        torch.manual_seed(23)
        lens, Hq, Hkv, nb = [0, 1, 37, 1, 64, 20], 4, 2, 4
        cu, tcu = cu_of(lens, device)
        T = cu[-1]
        q = torch.randn(T, Hq, D, device=device, dtype=torch.bfloat16, requires_grad=True)
        k = torch.randn(T, Hkv, D, device=device, dtype=torch.bfloat16, requires_grad=True)
        v = torch.randn(T, Hkv, D, device=device, dtype=torch.bfloat16, requires_grad=True)
        qb = torch.randint(0, nb + 1, (Hq, T), dtype=torch.int32, device=device)  # nb: out of range
        kb = torch.randint(0, nb + 1, (Hkv, T), dtype=torch.int32, device=device)
        o = sfa.hash_attention(q, k, v, qb, kb, nb, cu_seqlens_q=tcu, cu_seqlens_k=tcu)
        with torch.no_grad():
            o_ng = sfa.hash_attention(q, k, v, qb, kb, nb, cu_seqlens_q=tcu, cu_seqlens_k=tcu)
        assert torch.equal(o.detach(), o_ng), f"{backend}: the grad and no-grad paths differ"
        dout = torch.randn_like(o)
        o.backward(dout)
        for a, b in zip(cu, cu[1:]):
            if a == b:
                continue
            s = [t.detach()[a:b].transpose(0, 1).unsqueeze(0).requires_grad_() for t in (q, k, v)]
            r = sfa.hash_attention(*s, qb[:, a:b].unsqueeze(0).contiguous(),
                                   kb[:, a:b].unsqueeze(0).contiguous(), nb)
            r.backward(dout[a:b].transpose(0, 1).unsqueeze(0))
            got = o.detach()[a:b].transpose(0, 1).unsqueeze(0)
            assert torch.allclose(got.float(), r.detach().float(), atol=2e-2, rtol=2e-2), \
                f"{backend}: sequence [{a}, {b}): o differs from the fixed-length call"
            for n, t, st in zip("qkv", (q, k, v), s):
                g = t.grad[a:b].transpose(0, 1).unsqueeze(0)
                assert torch.allclose(g.float(), st.grad.float(), atol=3e-2, rtol=3e-2), \
                    f"{backend}: sequence [{a}, {b}): d{n} differs from the fixed-length call"


@test()
def hash_attention_packed_matches_per_sequence_cpu_ref():
    _hash_attention("cpu-ref")


@test(needs_cuda=True)
def hash_attention_packed_matches_per_sequence_cuda():
    _hash_attention("cuda")


def _compile_and_opcheck(backend):
    ctx, device, D = on(backend)
    with ctx:
        torch.manual_seed(24)
        lens, H, nb = [3, 0, 20, 1], 2, 4
        _, tcu = cu_of(lens, device)
        T = sum(lens)
        x = torch.randn(T, H, D, device=device, dtype=torch.bfloat16)
        b = torch.randint(0, nb, (H, T), dtype=torch.int32, device=device)
        bias = torch.randn(H, T, 24, device=device, dtype=torch.bfloat16)
        _, ck = cu_of([5, 24, 0, 1], device)
        torch.library.opcheck(torch.ops.sfa.hash_prepare.default, (b, nb, x, x.clone(), tcu))
        torch.library.opcheck(torch.ops.sfa.hash_prepare.default, (b, nb, None, None, tcu))
        _, _, idx, _ = sfa.hash_prepare(b, nb, None, cu_seqlens=tcu)
        torch.library.opcheck(torch.ops.sfa.hash_unsort.default, (x, idx, tcu))
        torch.library.opcheck(torch.ops.sfa.topk_mask.default, (bias, 5, True, tcu, ck))

        def f(x, b, bias):
            xs, _, i, h = sfa.hash_prepare(b, nb, x, cu_seqlens=tcu)
            m = sfa.topk_mask(bias, 5, True, cu_seqlens_q=tcu, cu_seqlens_k=ck)
            return sfa.hash_unsort(xs * 2, i, cu_seqlens=tcu), h, m

        torch._dynamo.reset()
        compiled = torch.compile(f, fullgraph=True, backend="inductor" if device == "cuda" else "aot_eager")
        for a, e in zip(compiled(x, b, bias), f(x, b, bias)):
            assert torch.equal(a, e), f"{backend}: compiled packed helpers differ from eager"


@test()
def compile_and_opcheck_packed_cpu_ref():
    _compile_and_opcheck("cpu-ref")


@test(needs_cuda=True)
def compile_and_opcheck_packed_cuda():
    _compile_and_opcheck("cuda")


@test()
def packed_argument_errors():
    with refbackend.cpu(sfa):
        _, cu = cu_of([2, 3], "cpu")
        b = torch.zeros(2, 5, dtype=torch.int32)
        x = torch.zeros(5, 2, 32, dtype=torch.bfloat16)
        bias = torch.zeros(1, 5, 8)
        raises(ValueError, lambda: sfa.hash_prepare(b, 4, x, cu_seqlens=cu.long()), "cu_seqlens", "int32")
        raises(ValueError, lambda: sfa.hash_prepare(b, 4, x, cu_seqlens=[0, 2, 5]), "cu_seqlens", "list")
        raises(ValueError, lambda: sfa.hash_unsort(x, b, cu_seqlens=cu.view(1, 3)), "cu_seqlens", "[B + 1]")
        raises(ValueError, lambda: sfa.topk_mask(bias, 2, cu_seqlens_q=cu), "cu_seqlens_k: is None",
               "cu_seqlens_q is given")
        raises(ValueError, lambda: sfa.topk_mask(bias, 2, cu_seqlens_k=cu), "cu_seqlens_q: is None")
        raises(ValueError, lambda: sfa.hash_attention(x, x, x, b, b, 4, cu_seqlens_q=cu), "cu_seqlens_k")
        x4 = torch.zeros(1, 2, 5, 32, dtype=torch.bfloat16)
        raises(ValueError, lambda: sfa.hash_attention(x4, x4, x4, b, b, 4, cu_seqlens_q=cu, cu_seqlens_k=cu),
               "3-D", "packed")


if __name__ == "__main__":
    sys.exit(main(CUDA, f"torch {torch.__version__}"))
