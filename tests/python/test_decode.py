#!/usr/bin/env python3
"""test_decode.py -- sfa.decode, sfa.kv_append and sfa.check_kv_cache, the
binding of sfa_decode / sfa_kv_append / sfa_check_kv_cache: argument errors
(on any machine with torch), and on a GPU: a decode loop that appends each
step's keys and values and attends, against torch's SDPA in float64 on the
same keys (contiguous and paged caches, GQA, several new tokens, window);
an index list of positions per kv head (kv_indices);
mode hash (buckets q_hash / k_hash, kept by kv_append's k_hash_new) against
a float64 torch reference, on the CPU reference backend (refbackend.py) and
on a GPU;
the same step captured in a CUDA graph and replayed with new lengths;
a workspace of the caller's (decode_workspace) reused across steps, graphs
and a compiled step;
torch.compile(fullgraph=True) of a step; torch.library.opcheck of the ops
(the hash ones on the CPU reference backend too); the plain eager path that
skips the custom op's dispatch, and where it does not;
and check_kv_cache naming a bad page. Skips (77) without torch.
"""
import contextlib
import sys

from harness import main, raises, test

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
DT = torch.bfloat16
TOL = 2e-2


def rel(x, ref):
    x, ref = x.double(), ref.double()
    return ((x - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def reference(q, k, v, used, causal=True, window=(-1, -1)):
    """float64 attention of q [B, Hq, Tn, D] over the first used[b] keys of
    k, v [B, Hkv, cap, D], new token t at position used[b] - Tn + t."""
    B, Hq, Tn, D = q.shape
    out = torch.zeros(q.shape, dtype=torch.float64, device=q.device)
    for b in range(B):
        n = int(used[b])
        if n == 0:
            continue
        kb, vb = k[b:b + 1, :, :n].double(), v[b:b + 1, :, :n].double()
        pos = torch.arange(n, device=q.device)
        p = n - Tn + torch.arange(Tn, device=q.device)
        ok = torch.ones(Tn, n, dtype=torch.bool, device=q.device)
        if causal:
            ok &= pos[None, :] <= p[:, None]
        wl, wr = window
        if wl >= 0:
            ok &= pos[None, :] >= p[:, None] - wl
        if wr >= 0 and not causal:
            ok &= pos[None, :] <= p[:, None] + wr
        rows = ok.any(dim=1)
        o = F.scaled_dot_product_attention(q[b:b + 1].double(), kb, vb, attn_mask=ok, enable_gqa=True)
        out[b] = torch.where(rows[None, :, None], o[0], torch.zeros_like(o[0]))
    return out


def paged_of(k, page, perm=None):
    """[B, Hkv, cap, D] -> ([B * cap / page, page, Hkv, D] pages in shuffled
    order, table [B, pages], the shuffle); pass perm to page v alike."""
    B, H, cap, D = k.shape
    per = cap // page
    if perm is None:
        perm = torch.randperm(B * per, device=k.device)
    blocks = k.view(B, H, per, page, D).permute(0, 2, 3, 1, 4).reshape(B * per, page, H, D)
    out = torch.empty_like(blocks)
    out[perm] = blocks
    return out, perm.view(B, per).int(), perm


@test()
def argument_errors_name_the_argument():
    q = torch.zeros(1, 4, 1, 64, dtype=DT)
    raises(ValueError, lambda: sfa.decode(q, q, q, mode="qk_drop"), "mode")
    raises(ValueError, lambda: sfa.decode(q, q, q, mode="hash"), "q_hash", "k_hash")
    h = torch.zeros(1, 4, 1, dtype=torch.int32)
    raises(ValueError, lambda: sfa.decode(q, q, q, q_hash=h, k_hash=h), "mode 'dense' takes neither")
    raises(ValueError, lambda: sfa.decode(q, q, q, mode="hash", q_hash=h.float(), k_hash=h), "q_hash", "int32")
    raises(ValueError, lambda: sfa.kv_append(q, q, q, q, k_hash=h), "k_hash and k_hash_new together")
    raises(ValueError, lambda: sfa.decode(q, q.float(), q), "k_cache", "dtype")
    raises(ValueError, lambda: sfa.decode(q, q, q, seqused=torch.zeros(1)), "seqused", "int32")
    raises(ValueError, lambda: sfa.decode(q, q, q), "cuda")
    raises(ValueError, lambda: sfa.kv_append(q, q, q.float(), q.float()), "k_new", "dtype")
    raises(ValueError, lambda: sfa.kv_append(q.half(), q.half(), q, q), "k_cache", "dtype")
    raises(ValueError, lambda: sfa.check_kv_cache(q, q, 0), "tn")
    raises(ValueError, lambda: sfa.decode(q, q, q, workspace=torch.zeros(64)), "workspace", "uint8")
    raises(ValueError, lambda: sfa.decode(q, q, q, workspace=torch.zeros(4, 16, dtype=torch.uint8)), "1-D")


@test()
def plain_eager_steps_skip_the_op_dispatch_and_traced_steps_keep_it():
    """sfa.decode / kv_append call the implementation directly in plain eager
    mode (no lse unless asked for) and go through the custom ops whenever
    something traces or a tensor needs a gradient."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from sfa import _calls, _ops

    seen, ops = [], []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            ops.append(str(func))
            return func(*args, **(kwargs or {}))

    def fake_decode(q, kc, vc, pt, su, ki, o, lse, *rest, workspace=None):
        seen.append(("decode", lse is None) if workspace is None else ("decode_ws", lse is None))
        o.fill_(1.0)

    saved = (_calls.DEVICE_TYPE, _calls.decode_into, _calls.kv_append_into)
    _calls.DEVICE_TYPE = "cpu"
    _calls.decode_into = fake_decode
    _calls.kv_append_into = lambda *a: seen.append(("append", None))
    try:
        q = torch.randn(1, 4, 1, 64, dtype=DT)
        k = torch.randn(1, 2, 32, 64, dtype=DT)
        assert sfa.decode(q, k, k).eq(1).all()
        o, lse = sfa.decode(q, k, k, return_lse=True)
        sfa.kv_append(k.clone(), k.clone(), q[:, :2], q[:, :2])
        # lse None: the implementation was called directly (the op always makes lse)
        assert seen == [("decode", True), ("decode", False), ("append", None)], seen
        with Record():
            sfa.decode(q, k, k)
            sfa.kv_append(k.clone(), k.clone(), q[:, :2], q[:, :2])
        assert "sfa.decode.default" in ops and "sfa.kv_append.default" in ops, ops
        ws = torch.zeros(64, dtype=torch.uint8)
        seen.clear()
        assert sfa.decode(q, k, k, workspace=ws).eq(1).all()
        with Record():
            sfa.decode(q, k, k, workspace=ws)
        assert "sfa.decode_ws.default" in ops, ops
        assert seen == [("decode_ws", True), ("decode_ws", False)], seen
        seen.clear()
        assert _ops._plain_eager(q, None, k) and not _ops._plain_eager(q.requires_grad_(), k)
        sfa.decode(q, k, k)  # q needs a gradient: the op (which has no autograd formula) decides
        assert seen == [("decode", False)], seen
    finally:
        _calls.DEVICE_TYPE, _calls.decode_into, _calls.kv_append_into = saved


@test(needs_cuda=True)
def decode_loop_matches_sdpa():
    torch.manual_seed(1)
    for page, Tn, (Hq, Hkv), mode in ((0, 1, (8, 2), "dense"), (16, 1, (32, 8), "dense"),
                                     (256, 4, (16, 4), "dense"), (48, 3, (6, 3), "window")):
        B, D, cap = 3, 128, 768
        kv = dict(causal=True, mode=mode, window=(100, 0) if mode == "window" else (-1, -1))
        k_all = torch.randn(B, Hkv, cap, D, device="cuda", dtype=DT)
        v_all = torch.randn(B, Hkv, cap, D, device="cuda", dtype=DT)
        if page:
            k_cache, table, _ = paged_of(torch.zeros_like(k_all), page)
            v_cache = torch.zeros_like(k_cache)
        else:
            k_cache, v_cache, table = torch.zeros_like(k_all), torch.zeros_like(v_all), None
        used = torch.tensor([5, 100, 300], device="cuda", dtype=torch.int32)
        # prefill: write the first used - Tn rows by appending in steps of Tn
        step = 0
        while True:
            lens = torch.clamp(torch.minimum(used, torch.full_like(used, (step + 1) * Tn)), min=0)
            ks = torch.stack([k_all[b, :, max(int(lens[b]) - Tn, 0):int(lens[b])] for b in range(B)])
            vs = torch.stack([v_all[b, :, max(int(lens[b]) - Tn, 0):int(lens[b])] for b in range(B)])
            if ks.shape[2] == Tn:
                sfa.kv_append(k_cache, v_cache, ks, vs, page_table=table, seqused=lens)
            q = torch.randn(B, Hq, Tn, D, device="cuda", dtype=DT)
            o = sfa.decode(q, k_cache, v_cache, page_table=table, seqused=lens, **kv)
            if step % 7 == 0 or bool((lens == used).all()):
                ref = reference(q, k_all, v_all, lens.tolist(), True, kv["window"])
                e = rel(o, ref)
                assert e < TOL, f"page {page} Tn {Tn} {mode} step {step}: relative error {e:.3g}"
            if bool((lens == used).all()):
                break
            step += 1
        print(f"      page {page} Tn {Tn} Hq/Hkv {Hq}/{Hkv} {mode}: {step + 1} steps ok")


def hash_reference(q, k, v, used, q_hash, k_hash, strict=False):
    """float64 hash decode: token t of query head h (position p = used[b] -
    Tn + t) sees the keys j <= p (j < p strict) of k, v [B, Hkv, cap, D] with
    k_hash[b, h // G, j] == q_hash[b, h, t]; (o, lse), o = 0 and lse = -inf
    for a row that sees nothing."""
    B, Hq, Tn, D = q.shape
    G = Hq // k.shape[1]
    o = torch.zeros(q.shape, dtype=torch.float64)
    lse = torch.full(q.shape[:-1], float("-inf"), dtype=torch.float64)
    for b in range(B):
        n = int(used[b])
        for h in range(Hq):
            kb, vb, kh = k[b, h // G, :n].double(), v[b, h // G, :n].double(), k_hash[b, h // G, :n]
            for t in range(Tn):
                p = n - Tn + t
                pos = torch.arange(n)
                ok = (kh == q_hash[b, h, t]) & ((pos < p) if strict else (pos <= p))
                if not bool(ok.any()):
                    continue
                s = (kb[ok] @ q[b, h, t].double()) / D ** 0.5
                lse[b, h, t] = torch.logsumexp(s, 0)
                o[b, h, t] = torch.softmax(s, 0) @ vb[ok]
    return o, lse


@test()
def hash_decode_matches_the_bucket_rule():
    """Steps of kv_append(k_hash_new) + decode(mode="hash"), contiguous and
    paged, GQA, several new tokens, strict and not, few and many buckets."""
    for backend in BACKENDS:
        dev = "cpu" if backend == "cpu-ref" else "cuda"
        torch.manual_seed(7)
        for page, Tn, (Hq, Hkv), nb, strict in ((0, 1, (4, 2), 3, False), (16, 3, (4, 1), 1, True),
                                                (16, 2, (6, 2), 50, False), (0, 4, (8, 2), 7, True)):
            B, D, cap = 3, 32 if backend == "cpu-ref" else 64, 96
            k_all = torch.randn(B, Hkv, cap, D, dtype=DT)
            v_all = torch.randn(B, Hkv, cap, D, dtype=DT)
            kh_all = torch.randint(-nb // 2, nb - nb // 2, (B, Hkv, cap), dtype=torch.int32)
            if page:
                k_cache, table, perm = paged_of(torch.zeros_like(k_all), page)
                v_cache = torch.zeros_like(k_cache)
                k_hash = torch.full(k_cache.shape[:3], 2**31 - 1, dtype=torch.int32)
            else:
                k_cache, v_cache, table = torch.zeros_like(k_all), torch.zeros_like(v_all), None
                k_hash = torch.full((B, Hkv, cap), 2**31 - 1, dtype=torch.int32)
            to = dict(device=dev)
            k_cache, v_cache, k_hash = k_cache.to(**to), v_cache.to(**to), k_hash.to(**to)
            table = table.to(**to) if table is not None else None
            final = [Tn, 40, cap]
            with refbackend.cpu(sfa) if backend == "cpu-ref" else contextlib.nullcontext():
                for step in range(cap // Tn):
                    lens = torch.tensor([min(f, (step + 1) * Tn) for f in final], dtype=torch.int32)
                    sl = [slice(max(int(n) - Tn, 0), int(n)) for n in lens]
                    grow = [int(n) > step * Tn for n in lens]
                    if not any(grow):
                        break
                    # every sequence appends Tn rows while it grows (the ones done stay put:
                    # they write the same rows again)
                    kn = torch.stack([k_all[b, :, sl[b]] for b in range(B)]).to(**to)
                    vn = torch.stack([v_all[b, :, sl[b]] for b in range(B)]).to(**to)
                    khn = torch.stack([kh_all[b, :, sl[b]] for b in range(B)]).to(**to)
                    sfa.kv_append(k_cache, v_cache, kn, vn, page_table=table, seqused=lens.to(**to),
                                  k_hash=k_hash, k_hash_new=khn)
                    q = torch.randn(B, Hq, Tn, D, dtype=DT)
                    q_hash = torch.randint(-nb // 2, nb - nb // 2, (B, Hq, Tn), dtype=torch.int32)
                    if step % 5 and not all(int(n) == f for n, f in zip(lens, final)):
                        continue
                    o, lse = sfa.decode(q.to(**to), k_cache, v_cache, page_table=table, seqused=lens.to(**to),
                                        mode="hash", q_hash=q_hash.to(**to), k_hash=k_hash, strict_causal=strict,
                                        return_lse=True)
                    ro, rl = hash_reference(q, k_all, v_all, lens.tolist(), q_hash, kh_all, strict)
                    e = rel(o.cpu(), ro)
                    assert e < TOL, f"{backend} page {page} Tn {Tn} nb {nb} step {step}: relative error {e:.3g}"
                    fin = torch.isfinite(rl)
                    assert bool((torch.isfinite(lse.cpu()) == fin).all()), "rows that see nothing differ"
                    if bool(fin.any()):
                        assert float((lse.cpu().double()[fin] - rl[fin]).abs().max()) < 1e-2
            print(f"      {backend} page {page} Tn {Tn} Hq/Hkv {Hq}/{Hkv} buckets {nb} strict {strict}: ok")


@test()
def hash_ops_pass_opcheck():
    """sfa::decode with the buckets, sfa::decode_ws (which mutates its
    workspace) and sfa::kv_append_hash (which mutates k_hash too) pass
    torch.library.opcheck (schema, fake tensors, aliasing); a step with a
    workspace compiles with fullgraph."""
    for backend in BACKENDS:
        dev = "cpu" if backend == "cpu-ref" else "cuda"
        with refbackend.cpu(sfa) if backend == "cpu-ref" else contextlib.nullcontext():
            torch.manual_seed(9)
            B, Hq, Hkv, Tn, D, cap = 2, 4, 2, 2, 32 if dev == "cpu" else 64, 48
            k_cache = torch.randn(B, Hkv, cap, D, device=dev, dtype=DT)
            v_cache = torch.randn(B, Hkv, cap, D, device=dev, dtype=DT)
            k_hash = torch.randint(0, 3, (B, Hkv, cap), device=dev, dtype=torch.int32)
            q = torch.randn(B, Hq, Tn, D, device=dev, dtype=DT)
            q_hash = torch.randint(0, 3, (B, Hq, Tn), device=dev, dtype=torch.int32)
            lens = torch.tensor([Tn, 30], device=dev, dtype=torch.int32)
            torch.library.opcheck(torch.ops.sfa.decode.default,
                                  (q, k_cache, v_cache, None, lens, None, "hash", False, None, -1, -1, k_hash,
                                   q_hash, True))
            ws = sfa.decode_workspace(q, k_cache, v_cache, seqused=lens, mode="hash", causal=False,
                                      q_hash=q_hash, k_hash=k_hash) if dev == "cuda" else \
                torch.zeros(4096, dtype=torch.uint8)
            torch.library.opcheck(torch.ops.sfa.decode_ws.default,
                                  (q, k_cache, v_cache, None, lens, None, "hash", False, None, -1, -1, k_hash,
                                   q_hash, True, ws))
            torch._dynamo.reset()
            step = torch.compile(lambda q, ws: sfa.decode(q, k_cache, v_cache, seqused=lens, mode="hash", q_hash=q_hash,
                                                          k_hash=k_hash, workspace=ws) + 1, fullgraph=True)
            want = sfa.decode(q, k_cache, v_cache, seqused=lens, mode="hash", q_hash=q_hash, k_hash=k_hash) + 1
            assert rel(step(q, ws), want) < 1e-3
            kn, vn = torch.randn(B, Hkv, Tn, D, device=dev, dtype=DT), torch.randn(B, Hkv, Tn, D, device=dev, dtype=DT)
            khn = torch.randint(0, 3, (B, Hkv, Tn), device=dev, dtype=torch.int32)
            torch.library.opcheck(torch.ops.sfa.kv_append_hash.default,
                                  (k_cache.clone(), v_cache.clone(), k_hash.clone(), None, lens, kn, vn, khn))


@test(needs_cuda=True)
def kv_indices_select_positions():
    torch.manual_seed(4)
    B, Hq, Hkv, D, cap, K = 2, 8, 2, 64, 400, 64
    k = torch.randn(B, Hkv, cap, D, device="cuda", dtype=DT)
    v = torch.randn(B, Hkv, cap, D, device="cuda", dtype=DT)
    lens = torch.tensor([300, 37], device="cuda", dtype=torch.int32)
    idx = torch.stack([torch.stack([torch.randperm(cap, device="cuda")[:K] for _ in range(Hkv)])
                       for _ in range(B)]).int()
    idx[:, :, 5] = -1
    q = torch.randn(B, Hq, 1, D, device="cuda", dtype=DT)
    o = sfa.decode(q, k, v, seqused=lens, kv_indices=idx)
    # the reference: a mask of the listed positions below the length (causal: all of them)
    ref = torch.zeros(q.shape, dtype=torch.float64, device="cuda")
    for b in range(B):
        n = int(lens[b])
        for h in range(Hkv):
            sel = idx[b, h]
            sel = sel[(sel >= 0) & (sel < n)].long()
            g = Hq // Hkv
            qs = q[b, h * g:(h + 1) * g].double()
            ks, vs = k[b, h, sel].double(), v[b, h, sel].double()
            if len(sel):
                ref[b, h * g:(h + 1) * g] = F.scaled_dot_product_attention(
                    qs, ks.expand(g, -1, -1), vs.expand(g, -1, -1))
    e = rel(o, ref)
    assert e < TOL, f"kv_indices: relative error {e:.3g}"


def graph_of(step, out):
    """A CUDA graph of out.copy_(step()), captured on a side stream."""
    g, s = torch.cuda.CUDAGraph(), torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        with torch.cuda.graph(g, stream=s):
            out.copy_(step())
    torch.cuda.current_stream().wait_stream(s)
    return g


def replay_with_lengths(g, out, q, lens, k_all, v_all, lengths, what):
    """Replays g once for each list of lengths (written into lens, with a
    fresh q), each output against the float64 reference on k_all, v_all."""
    for new in lengths:
        lens.copy_(torch.tensor(new, device="cuda", dtype=torch.int32))
        q.copy_(torch.randn_like(q))
        g.replay()
        torch.cuda.synchronize()
        e = rel(out, reference(q, k_all, v_all, new))
        assert e < TOL, f"{what} with lengths {new}: relative error {e:.3g}"


@test(needs_cuda=True)
def cuda_graph_replays_with_new_lengths():
    torch.manual_seed(2)
    B, Hq, Hkv, D, cap, page = 4, 16, 4, 64, 512, 16
    k_all = torch.randn(B, Hkv, cap, D, device="cuda", dtype=DT)
    v_all = torch.randn(B, Hkv, cap, D, device="cuda", dtype=DT)
    k_cache, table, perm = paged_of(k_all, page)
    v_cache, _, _ = paged_of(v_all, page, perm)
    lens = torch.tensor([1, 64, 200, 512], device="cuda", dtype=torch.int32)
    q = torch.randn(B, Hq, 1, D, device="cuda", dtype=DT)
    out = torch.empty_like(q)
    sfa.decode(q, k_cache, v_cache, page_table=table, seqused=lens)  # warm: kernels loaded
    torch.cuda.synchronize()
    g = graph_of(lambda: sfa.decode(q, k_cache, v_cache, page_table=table, seqused=lens), out)
    replay_with_lengths(g, out, q, lens, k_all, v_all, ([1, 64, 200, 512], [7, 300, 9, 33]), "graph replay")


@test(needs_cuda=True)
def compiled_step_and_opcheck():
    torch.manual_seed(3)
    B, Hq, Hkv, D, cap = 2, 8, 2, 64, 256
    k_cache = torch.randn(B, Hkv, cap, D, device="cuda", dtype=DT)
    v_cache = torch.randn(B, Hkv, cap, D, device="cuda", dtype=DT)
    lens = torch.tensor([100, 256], device="cuda", dtype=torch.int32)
    q = torch.randn(B, Hq, 2, D, device="cuda", dtype=DT)
    kn, vn = torch.randn(B, Hkv, 2, D, device="cuda", dtype=DT), torch.randn(B, Hkv, 2, D, device="cuda", dtype=DT)

    def step(q, kn, vn, k_cache, v_cache, lens):
        sfa.kv_append(k_cache, v_cache, kn, vn, seqused=lens)
        return sfa.decode(q, k_cache, v_cache, seqused=lens) * 2

    ke, ve = k_cache.clone(), v_cache.clone()
    eager = step(q, kn, vn, ke, ve, lens)
    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True)
    kc, vc = k_cache.clone(), v_cache.clone()
    got = compiled(q, kn, vn, kc, vc, lens)
    assert torch.equal(kc, ke) and torch.equal(vc, ve), "the compiled step wrote another cache"
    assert rel(got, eager) < 1e-3, rel(got, eager)
    torch.library.opcheck(torch.ops.sfa.decode.default,
                          (q, k_cache, v_cache, None, lens, None, "dense", True, None, -1, -1))
    torch.library.opcheck(torch.ops.sfa.kv_append.default, (k_cache.clone(), v_cache.clone(), None, lens, kn, vn))


@test(needs_cuda=True)
def a_workspace_serves_steps_graphs_and_compiled_steps():
    """decode(workspace=decode_workspace(...)): the same output as the
    library's own workspace, eager, in a CUDA graph replayed with new lengths
    (one kernel node: no memset) and compiled; the workspace's counters (its
    first 4096 bytes) are zero after each; a workspace of another shape's
    size that is too small is refused by name."""
    torch.manual_seed(4)
    B, Hq, Hkv, D, cap = 8, 32, 8, 128, 4096
    k_all = torch.randn(B, Hkv, cap, D, device="cuda", dtype=DT)
    v_all = torch.randn(B, Hkv, cap, D, device="cuda", dtype=DT)
    lens = torch.randint(1, cap + 1, (B,), device="cuda", dtype=torch.int32)
    q = torch.randn(B, Hq, 1, D, device="cuda", dtype=DT)
    ws = sfa.decode_workspace(q, k_all, v_all, seqused=lens)
    assert ws.numel() > 4096 and ws.dtype == torch.uint8, ws.shape
    own = sfa.decode(q, k_all, v_all, seqused=lens)
    got = sfa.decode(q, k_all, v_all, seqused=lens, workspace=ws)
    assert torch.equal(got, own), rel(got, own)
    assert rel(got, reference(q, k_all, v_all, lens.tolist())) < TOL
    assert int(ws[:4096].count_nonzero()) == 0, "counters left set"
    # a CUDA graph of the step: kernels only, no memset node
    out = torch.empty_like(q)
    g = graph_of(lambda: sfa.decode(q, k_all, v_all, seqused=lens, workspace=ws), out)
    replay_with_lengths(g, out, q, lens, k_all, v_all, [torch.randint(1, cap + 1, (B,)).tolist() for _ in range(2)],
                        "graph replay with a workspace")
    assert int(ws[:4096].count_nonzero()) == 0, "counters left set after the replays"
    # compiled, and the op's schema with the workspace
    torch._dynamo.reset()
    step = torch.compile(lambda q, ws: sfa.decode(q, k_all, v_all, seqused=lens, workspace=ws) * 2,
                         fullgraph=True)
    got = step(q, ws)
    assert rel(got, 2 * sfa.decode(q, k_all, v_all, seqused=lens)) < 1e-3
    torch.library.opcheck(torch.ops.sfa.decode_ws.default,
                          (q, k_all, v_all, None, lens, None, "dense", True, None, -1, -1, None, None, False, ws))
    # the size depends on the shape: one sequence needs more splits than B 8
    q1 = q[:1]
    ws1 = sfa.decode_workspace(q1, k_all[:1], v_all[:1], seqused=lens[:1])
    if ws1.numel() > ws.numel():
        raises(ValueError, lambda: sfa.decode(q1, k_all[:1], v_all[:1], seqused=lens[:1], workspace=ws),
               "workspace", "this call needs")
    o1 = sfa.decode(q1, k_all[:1], v_all[:1], seqused=lens[:1], workspace=ws1)
    assert rel(o1, reference(q1, k_all[:1], v_all[:1], lens[:1].tolist())) < TOL
    assert int(ws1[:4096].count_nonzero()) == 0


@test(needs_cuda=True)
def check_kv_cache_names_a_bad_page():
    k_cache = torch.zeros(6, 16, 2, 64, device="cuda", dtype=DT)
    table = torch.tensor([[0, 1, 2], [3, 9, 5]], device="cuda", dtype=torch.int32)
    sfa.check_kv_cache(k_cache, k_cache, 1, page_table=table,
                       seqused=torch.tensor([40, 16], device="cuda", dtype=torch.int32))
    raises(ValueError, lambda: sfa.check_kv_cache(k_cache, k_cache, 1, page_table=table,
                                                  seqused=torch.tensor([40, 17], device="cuda",
                                                                       dtype=torch.int32)),
           "page_table[1, 1] = 9")


if __name__ == "__main__":
    sys.exit(main(CUDA, f"torch {torch.__version__}, cuda {CUDA}"))
