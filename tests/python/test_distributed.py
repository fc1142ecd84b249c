#!/usr/bin/env python3
"""test_distributed.py -- sfa.distributed: ring attention and Ulysses head
parallelism against the unsharded call, output and gradients of q, k, v.

- A simulated ring / all-to-all (SimulatedGroup: R virtual ranks stepped in
  one process) for R = 1..4: dense causal and not, GQA, both shard layouts;
  window mode with windows shorter than a chunk, longer than several,
  asymmetric, one side unbounded, causal and not, with a bias (per-rank
  rows, or broadcast) and a mask, dbias included; the window's schedule
  (how many shards travel each way) and the sfa calls it makes; the pair
  plans against the window rule in 1080 (R, layout, chunk, window) cases,
  without attention; Ulysses over hash attention (unsorted tokens with
  buckets).
- The real thing on torch.distributed: R = 2 and 3 processes on the gloo
  backend (CPU), each with the reference backend, so the isend/irecv ring
  (dense causal, and a window with a bias whose shards travel both ways)
  and the differentiable all-to-all run as they will over NCCL.
Everything runs on "cpu-ref" (the library's float64 CPU reference in place
of the kernels: refbackend.py) and, where there is a GPU, the simulated cases
again on "cuda". Skips (77) without torch.
"""
import os
import sys
import tempfile

from harness import main, raises, test

try:
    import torch
except ImportError:
    print("SKIP: torch is not installed")
    sys.exit(77)
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

import refbackend  # noqa: E402
import sfa  # noqa: E402
import sfa.distributed as sd  # noqa: E402

CUDA = torch.cuda.is_available()
DTYPE = torch.bfloat16
TOL = 2e-2


def rel(x, ref):
    x, ref = x.detach().double(), ref.detach().double()
    return ((x - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def on(backend):
    if backend == "cpu-ref":
        return refbackend.cpu(sfa), "cpu", 32
    import contextlib
    return contextlib.nullcontext(), "cuda", 64


def _inputs(B, Hq, Hkv, T, D, device, seed):
    g = torch.Generator().manual_seed(seed)
    mk = lambda h: torch.randn(B, h, T, D, generator=g).to(device=device, dtype=DTYPE)  # noqa: E731
    return mk(Hq), mk(Hkv), mk(Hkv), torch.randn(B, Hq, T, D, generator=g).to(device=device, dtype=DTYPE)


def _grads(o, leaves, dout):
    return torch.autograd.grad(o, leaves, dout)


def _check(name, got, want, tol=TOL):
    for n, a, b in zip(("o", "dq", "dk", "dv"), got, want):
        e = rel(a, b)
        assert e < tol, f"{name}: {n} relative error {e:.3g} (bound {tol})"


def _ring_sim(backend):
    ctx, device, D = on(backend)
    with ctx:
        for R, causal, (Hq, Hkv), layout in ((1, True, (4, 2), "balanced"), (2, True, (4, 2), "balanced"),
                                             (3, False, (2, 2), "balanced"), (4, True, (4, 1), "balanced"),
                                             (3, True, (2, 1), "contiguous")):
            B, T = 2, 8 * R * 2
            q, k, v, dout = _inputs(B, Hq, Hkv, T, D, device, 100 + R)
            leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
            o_ref = sfa.attention(*leaves, causal=causal)
            want = (o_ref, *_grads(o_ref, leaves, dout))
            qs, ks, vs = (sd.shard_sequence(t, R, layout=layout) for t in (q, k, v))
            ls = [[t.clone().requires_grad_(True) for t in xs] for xs in (qs, ks, vs)]
            outs = sd.ring_attention(*ls, group=sd.SimulatedGroup(R), causal=causal, layout=layout)
            o = sd.unshard_sequence(outs, layout=layout)
            g = torch.autograd.grad(outs, [t for xs in ls for t in xs], sd.shard_sequence(dout, R, layout=layout))
            dq, dk, dv = (sd.unshard_sequence(list(g[i * R:(i + 1) * R]), layout=layout) for i in range(3))
            _check(f"{backend} ring R={R} causal={causal} {layout}", (o, dq, dk, dv), want)
            print(f"      {backend} ring R={R} causal={causal} Hq/Hkv {Hq}/{Hkv} {layout}: o error "
                  f"{rel(o, o_ref):.1e}")


@test()
def ring_simulated_cpu_ref():
    _ring_sim("cpu-ref")


@test(needs_cuda=True)
def ring_simulated_cuda():
    _ring_sim("cuda")


def _window_case(R, layout, window, causal, D, device, seed, bias_rows=None, with_mask=False, Hq=2, Hkv=1):
    """ring_attention in window mode (simulated, R ranks) against sfa.attention
    on the whole sequence: o, dq, dk, dv (and dbias). bias_rows: None (no
    bias), "full" ([B, Hq, T, T]) or "broadcast" ([1, Hq, 1, T]); with_mask:
    a random bool mask [B, 1, T, T]. Returns the o error."""
    B, T = 1, 16 * R
    q, k, v, dout = _inputs(B, Hq, Hkv, T, D, device, seed)
    g = torch.Generator().manual_seed(seed + 1)
    kw = dict(mode="window", window=window, causal=causal)
    bias = mask = None
    if bias_rows is not None:
        bias = torch.randn(B if bias_rows == "full" else 1, Hq, T if bias_rows == "full" else 1, T,
                           generator=g).to(device=device, dtype=DTYPE)
    if with_mask:
        mask = (torch.rand(B, 1, T, T, generator=g) > 0.2).to(device)
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v)] + ([bias.clone().requires_grad_(True)]
                                                                    if bias is not None else [])
    o_ref = sfa.attention(*leaves[:3], bias=leaves[3] if bias is not None else None, mask=mask, **kw)
    want = (o_ref, *_grads(o_ref, leaves, dout))
    shard = lambda t: sd.shard_sequence(t, R, layout=layout)  # noqa: E731
    ls = [[t.clone().requires_grad_(True) for t in shard(x)] for x in (q, k, v)]
    # each rank holds the bias/mask rows of its queries, every key in sequence order
    lb = [t.clone().requires_grad_(True) for t in shard(bias)] if bias_rows == "full" else \
        [bias.clone().requires_grad_(True) for _ in range(R)] if bias is not None else None
    lm = shard(mask) if mask is not None else None
    outs = sd.ring_attention(*ls, group=sd.SimulatedGroup(R), layout=layout, bias=lb, mask=lm, **kw)
    flat = [t for xs in ls for t in xs] + (lb or [])
    gr = torch.autograd.grad(outs, flat, shard(dout))
    got = [sd.unshard_sequence(outs, layout=layout)]
    got += [sd.unshard_sequence(list(gr[i * R:(i + 1) * R]), layout=layout) for i in range(3)]
    if bias_rows == "full":
        got.append(sd.unshard_sequence(list(gr[3 * R:]), layout=layout))
    elif bias is not None:
        got.append(sum(gr[3 * R:]))  # a broadcast bias: every rank's share of the gradient
    name = f"ring R={R} {layout} window={window} causal={causal} bias={bias_rows} mask={with_mask}"
    for n, a, b in zip(("o", "dq", "dk", "dv", "dbias"), got, want):
        e = rel(a, b)
        assert e < TOL, f"{name}: {n} relative error {e:.3g} (bound {TOL})"
    return rel(got[0], o_ref)


# windows against a chunk of 8 (balanced) or 16 (contiguous) positions:
# shorter than a chunk, asymmetric, reaching past one chunk, over several
# chunks, one side unbounded
WINDOWS = (((3, 0), True), ((3, 5), False), ((2, 11), False), ((37, 0), True), ((20, 41), False),
           ((-1, 2), False), ((5, -1), False), ((0, 0), False))


LAYOUTS_OF = ("contiguous", "balanced")


def _window_sim(backend):
    ctx, device, D = on(backend)
    with ctx:
        worst = 0.0
        for R in (1, 2, 3, 4):
            for i, (window, causal) in enumerate(WINDOWS):
                layout = LAYOUTS_OF[(R + i) % 2]
                worst = max(worst, _window_case(R, layout, window, causal, D, device, 500 + 10 * R + i))
        print(f"      {backend} ring window, R = 1..4, {len(WINDOWS)} windows: worst o error {worst:.1e}")
        for R, layout, window, causal, bias_rows, with_mask in (
                (3, "contiguous", (5, 3), False, "full", True), (4, "balanced", (6, 0), True, "full", False),
                (2, "contiguous", (19, 2), False, "broadcast", False), (4, "contiguous", (4, 4), False, None, True)):
            e = _window_case(R, layout, window, causal, D, device, 700 + R, bias_rows, with_mask)
            print(f"      {backend} ring R={R} {layout} window={window} bias={bias_rows} mask={with_mask}: "
                  f"o error {e:.1e}")


@test()
def ring_window_simulated_cpu_ref():
    _window_sim("cpu-ref")


@test(needs_cuda=True)
def ring_window_simulated_cuda():
    _window_sim("cuda")


def _sfa_window_rule(tq, tk, mode, causal, window):
    """[tq, tk] bool: what one sfa call sees, by docs/semantics.md (bottom-right)."""
    i, j = torch.arange(tq).unsqueeze(1), torch.arange(tk).unsqueeze(0)
    off = tk - tq
    if mode == "dense":
        return j <= i + off if causal else torch.ones(tq, tk, dtype=torch.bool)
    left, right = window[0], 0 if causal else window[1]
    seen = torch.ones(tq, tk, dtype=torch.bool)
    if left >= 0:
        seen &= j >= i + off - left
    if right >= 0:
        seen &= j <= i + off + right
    return seen


@test()
def ring_pair_plans_tile_the_window_exactly():
    """Put together from every chunk pair's sfa call (its rows, keys and
    window, read by sfa's own bottom-right rule), the ring sees exactly what
    the window over the whole sequence sees; and every pair that sees
    anything is reached by the schedule. Many windows, chunk lengths, ranks
    and both layouts, without running attention."""
    ring = sfa._ring
    g = torch.Generator().manual_seed(11)
    cases = 0
    for R in (1, 2, 3, 5):
        for layout in ring.LAYOUTS:
            for c in (1, 3, 8):
                T = R * ring.chunks_per_rank(layout) * c
                lefts = [-1, 0, 1, c - 1, c, c + 1, T] + torch.randint(0, T + 1, (2,), generator=g).tolist()
                for left in lefts:
                    for right in (-1, 0, 2, c, 2 * c + 1):
                        spec = ring.Spec(R, layout, c, left, right, False, None)
                        i, j = torch.arange(T).unsqueeze(1), torch.arange(T).unsqueeze(0)
                        want = ((j >= i - left) | (left < 0)) & ((j <= i + right) | (right < 0))
                        got = torch.zeros(T, T, dtype=torch.bool)
                        nf, nb = ring.schedule(R, layout, c, left, right)
                        assert nf + nb <= R - 1, f"R={R}: schedule {(nf, nb)} visits a shard twice"
                        for r in range(R):
                            reach = {r} | {(r - d) % R for d in range(1, nf + 1)} | {(r + d) % R
                                                                                     for d in range(1, nb + 1)}
                            for src in range(R):
                                for qc in ring.chunk_ids(r, R, layout):
                                    for kc in ring.chunk_ids(src, R, layout):
                                        plan = ring.pair_plan(spec, qc, kc)
                                        if plan is None:
                                            continue
                                        assert src in reach, f"R={R} {layout} c={c} window ({left}, {right}): " \
                                            f"rank {r} needs rank {src}'s shard, schedule {(nf, nb)}"
                                        q0, q1, k0, k1, mode, causal, window = plan
                                        assert min(window) >= -1 and 0 <= q0 < q1 <= c and 0 <= k0 < k1 <= c, plan
                                        blk = _sfa_window_rule(q1 - q0, k1 - k0, mode, causal, window)
                                        got[qc * c + q0:qc * c + q1, kc * c + k0:kc * c + k1] |= blk
                        assert torch.equal(got, want), f"R={R} {layout} c={c} window ({left}, {right}): the pairs " \
                            f"see {int(got.sum())} (query, key) pairs, the window {int(want.sum())}, " \
                            f"{int((got != want).sum())} differ"
                        cases += 1
    print(f"      {cases} (R, layout, chunk, window) cases")


@test()
def ring_window_steps_only_the_shards_the_window_reaches():
    """The schedule (nf shards from the ranks before, nb from those after)
    and the sfa calls the ring makes: a window shorter than a shard needs one
    neighbour per side, a long one the whole ring; pairs outside the window
    are not computed."""
    def _sched(spec, want):
        got = sfa._ring.schedule(spec.world, spec.layout, spec.chunk, spec.left, spec.right)
        assert got == want, f"R={spec.world} {spec.layout} window ({spec.left}, {spec.right}): schedule {got}, " \
            f"expected {want}"

    def spec(R, layout, left, right, tlen=16):
        return sfa._ring.Spec(R, layout, tlen // (2 if layout == "balanced" else 1), left, right, False, None)
    _sched(spec(4, "contiguous", 3, 0), (1, 0))
    _sched(spec(4, "contiguous", 3, 2), (1, 1))
    _sched(spec(4, "contiguous", 0, 5), (0, 1))
    _sched(spec(6, "contiguous", 17, 0), (2, 0))   # reaches into the shard two back
    _sched(spec(4, "contiguous", 40, 0), (3, 0))   # the whole ring
    _sched(spec(4, "balanced", 3, 0), (1, 1))      # chunk 2R-1-r's neighbour is on rank r+1
    _sched(spec(4, "balanced", -1, 0), (3, 0))     # dense causal: the ring
    _sched(spec(1, "contiguous", 3, 0), (0, 0))
    calls = []
    real = sfa._api.forward
    def counting(*a, **kw):  # noqa: E306
        calls.append(kw["window"])
        return real(*a, **kw)
    with refbackend.cpu(sfa):
        q = torch.randn(1, 1, 64, 32).to(DTYPE)
        shards = sd.shard_sequence(q, 4, layout="contiguous")
        sfa._api.forward = counting
        try:
            sd.ring_attention(shards, shards, shards, group=sd.SimulatedGroup(4), mode="window", window=(3, 0),
                              layout="contiguous")
        finally:
            sfa._api.forward = real
    # per rank: its own shard (window (3, 0)), and the previous one's last 3 keys
    # for the first 3 rows (rank 0: the previous shard is the sequence's end: skipped)
    assert sorted(calls) == sorted([(3, 0)] * 4 + [(0, -1)] * 3), f"the ring's sfa calls: {calls}"


def _ulysses_sim(backend):
    ctx, device, D = on(backend)
    with ctx:
        R, B, H, T, nb = 2, 2, 4, 32, 4
        q, k, v, dout = _inputs(B, H, H, T, D, device, 7)
        g = torch.Generator().manual_seed(8)
        qb = torch.randint(0, nb, (B, H, T), generator=g, dtype=torch.int32).to(device)
        kb = torch.randint(0, nb, (B, H, T), generator=g, dtype=torch.int32).to(device)
        leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
        o_ref = sfa.hash_attention(*leaves, qb, kb, nb)
        want = (o_ref, *_grads(o_ref, leaves, dout))
        split = lambda t: list(t.chunk(R, 2))  # noqa: E731  (contiguous sequence shards)
        ls = [[t.clone().requires_grad_(True) for t in split(x)] for x in (q, k, v)]
        outs = sd.ulysses_attention(*ls, split(qb), split(kb), fn=sfa.hash_attention, group=sd.SimulatedGroup(R),
                                    num_buckets=nb)
        o = torch.cat(outs, 2)
        gr = torch.autograd.grad(outs, [t for xs in ls for t in xs], split(dout))
        dq, dk, dv = (torch.cat(gr[i * R:(i + 1) * R], 2) for i in range(3))
        _check(f"{backend} ulysses hash R={R}", (o, dq, dk, dv), want)
        print(f"      {backend} ulysses hash R={R}: o error {rel(o, o_ref):.1e}")


@test()
def ulysses_simulated_cpu_ref():
    _ulysses_sim("cpu-ref")


@test(needs_cuda=True)
def ulysses_simulated_cuda():
    _ulysses_sim("cuda")


@test()
def argument_errors():
    q = torch.zeros(1, 2, 6, 32, dtype=DTYPE)
    try:
        sd.shard_sequence(q, 4)
    except ValueError as e:
        assert "not divisible by 2 * world = 8" in str(e), e
    else:
        raise AssertionError("no error for a length the ring cannot split")
    try:
        sd.ring_attention([q], [q, q], [q], group=sd.SimulatedGroup(1))
    except ValueError as e:
        assert "k: 2 shards for 1 ranks" in str(e), e
    else:
        raise AssertionError("no error for a shard count that is not the group's")
    g1, g2 = sd.SimulatedGroup(1), sd.SimulatedGroup(2)
    bias1 = torch.zeros(1, 2, 6, 6, dtype=DTYPE)
    raises(ValueError, lambda: sd.shard_sequence(q, 4, layout="contiguous"), "not divisible by world = 4",
           "contiguous")
    raises(ValueError, lambda: sd.shard_sequence(q, 2, layout="zigzag"), "layout", "balanced, contiguous")
    raises(ValueError, lambda: sd.ring_attention([q], [q], [q], group=g1, mode="hash"), "mode", "dense, window")
    raises(ValueError, lambda: sd.ring_attention([q], [q], [q], group=g1, layout="zigzag"), "layout")
    raises(ValueError, lambda: sd.ring_attention([q], [q], [q], group=g1, scale=-1.0), "scale is -1.0")
    raises(ValueError, lambda: sd.ring_attention([q], [q], [q], group=g1, window=(2, 0)),
           "window, bias and mask apply to mode='window'")
    raises(ValueError, lambda: sd.ring_attention([q], [q], [q], group=g1, mode="window", window=(-2, 0)),
           "window[0] (left)")
    raises(ValueError, lambda: sd.ring_attention([q], [q], [q], group=g1, mode="window", bias=bias1),
           "bias: with a SimulatedGroup, a list")
    q8 = torch.zeros(1, 2, 8, 32, dtype=DTYPE)
    raises(ValueError, lambda: sd.ring_attention([q, q], [q8, q8], [q, q], group=g2), "k shard", "8 positions",
           "q's have 6")
    raises(ValueError, lambda: sd.ring_attention([q[:, :, :5]], [q[:, :, :5]], [q[:, :, :5]], group=g1),
           "q shard", "even (two chunks of the balanced layout)")
    bias = torch.zeros(1, 2, 6, 6, dtype=DTYPE)
    raises(ValueError, lambda: sd.ring_attention([q, q], [q, q], [q, q], group=g2, mode="window", bias=[bias, bias]),
           "bias has shape (1, 2, 6, 6)", "[.., 6|1, 12]")
    raises(ValueError, lambda: sd.ring_attention([q], [q], [q], group=g1, mode="window", mask=[bias, bias]),
           "mask: 2 shards for 1 ranks")
    raises(ValueError, lambda: sd.ring_attention([q], [q], [q], group=g1, mode="window",
                                                 mask=[torch.zeros(1, 2, 6, 6, dtype=torch.float32)]),
           "mask: dtype must be torch.bool or torch.uint8")
    try:
        sd.ring_attention(q, q, q)
    except RuntimeError as e:
        assert "initialized torch.distributed process group" in str(e), e
    else:
        raise AssertionError("no error without a process group")


# ------------------------------------------------------------------ real processes (gloo, CPU)

def _worker(rank, world, init, results):
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        with refbackend.cpu(sfa):
            D, B, Hq, Hkv, T = 32, 1, 2 * world, world, 8 * world * 2  # heads: multiples of R (Ulysses)
            q, k, v, dout = _inputs(B, Hq, Hkv, T, D, "cpu", 300 + world)  # the same on every rank
            # ring, causal, load-balanced shards
            leaves = [sd.shard_sequence(t, world)[rank].clone().requires_grad_(True) for t in (q, k, v)]
            o = sd.ring_attention(*leaves, causal=True)
            g = torch.autograd.grad(o, leaves, sd.shard_sequence(dout, world)[rank])
            # Ulysses, dense non-causal, contiguous shards
            ul = [t.chunk(world, 2)[rank].clone().requires_grad_(True) for t in (q, k, v)]
            ou = sd.ulysses_attention(*ul)
            gu = torch.autograd.grad(ou, ul, dout.chunk(world, 2)[rank])
            # ring, window (asymmetric, with a bias that requires grad), contiguous shards:
            # the K/V shards travel both ways (R = 3: one step each) and back
            wb = _window_bias(T, Hq)
            lw = [sd.shard_sequence(t, world, layout="contiguous")[rank].clone().requires_grad_(True)
                  for t in (q, k, v, wb)]
            ow = sd.ring_attention(*lw[:3], bias=lw[3], mode="window", window=GLOO_WINDOW, layout="contiguous")
            gw = torch.autograd.grad(ow, lw, sd.shard_sequence(dout, world, layout="contiguous")[rank])
            results[rank] = [t.detach() for t in (o, *g, ou, *gu, ow, *gw)]
    finally:
        dist.destroy_process_group()


GLOO_WINDOW = (6, 3)


def _window_bias(T, H):
    return torch.randn(1, H, T, T, generator=torch.Generator().manual_seed(9)).to(DTYPE)


def _real(world):
    with tempfile.TemporaryDirectory() as d:
        init = "file://" + os.path.join(d, "rendezvous")
        results = mp.Manager().dict()
        mp.spawn(_worker, args=(world, init, results), nprocs=world, join=True)
        with refbackend.cpu(sfa):
            D, B, Hq, Hkv, T = 32, 1, 2 * world, world, 8 * world * 2  # heads: multiples of R (Ulysses)
            q, k, v, dout = _inputs(B, Hq, Hkv, T, D, "cpu", 300 + world)
            leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
            o_ref = sfa.attention(*leaves, causal=True)
            want = (o_ref, *_grads(o_ref, leaves, dout))
            lu = [t.clone().requires_grad_(True) for t in (q, k, v)]
            ou_ref = sfa.attention(*lu)
            want_u = (ou_ref, *_grads(ou_ref, lu, dout))
            lw = [t.clone().requires_grad_(True) for t in (q, k, v, _window_bias(T, Hq))]
            ow_ref = sfa.attention(*lw[:3], bias=lw[3], mode="window", window=GLOO_WINDOW)
            want_w = (ow_ref, *_grads(ow_ref, lw, dout))
        got_w = [sd.unshard_sequence([results[r][8 + i] for r in range(world)], layout="contiguous")
                 for i in range(5)]
        for n, a, b in zip(("o", "dq", "dk", "dv", "dbias"), got_w, want_w):
            e = rel(a, b)
            assert e < TOL, f"gloo ring window R={world}: {n} relative error {e:.3g} (bound {TOL})"
        got = [sd.unshard_sequence([results[r][i] for r in range(world)]) for i in range(4)]
        _check(f"gloo ring R={world}", got, want)
        got_u = [torch.cat([results[r][4 + i] for r in range(world)], 2) for i in range(4)]
        _check(f"gloo ulysses R={world}", got_u, want_u)
        print(f"      gloo R={world}: ring o error {rel(got[0], want[0]):.1e}, window ring "
              f"{rel(got_w[0], want_w[0]):.1e}, ulysses o error {rel(got_u[0], want_u[0]):.1e}")


@test()
def gloo_ring_window_ring_and_ulysses_two_and_three_ranks():
    if not dist.is_available() or not dist.is_gloo_available():
        print("      (torch.distributed with gloo is not available here: not run)")
        return
    for world in (2, 3):
        _real(world)


if __name__ == "__main__":
    sys.exit(main(CUDA, f"torch {torch.__version__}, cuda {CUDA}"))
