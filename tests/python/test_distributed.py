#!/usr/bin/env python3
"""test_distributed.py -- sfa.distributed: ring attention and Ulysses head
parallelism against the unsharded call, output and gradients of q, k, v.

- A simulated ring / all-to-all (SimulatedGroup: R virtual ranks stepped in
  one process) for R = 1..4: dense causal and not, GQA; Ulysses over hash
  attention (unsorted tokens with buckets) and qk_drop.
- The real thing on torch.distributed: R = 2 and 3 processes on the gloo
  backend (CPU), each with the reference backend, so the isend/irecv ring
  and the differentiable all-to-all run as they will over NCCL.
Everything runs on "cpu-ref" (the library's float64 CPU reference in place
of the kernels: refbackend.py) and, where there is a GPU, the simulated cases
again on "cuda". Skips (77) without torch.
"""
import os
import sys
import tempfile

from harness import main, test

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
        for R, causal, (Hq, Hkv) in ((1, True, (4, 2)), (2, True, (4, 2)), (3, False, (2, 2)), (4, True, (4, 1))):
            B, T = 2, 8 * R * 2
            q, k, v, dout = _inputs(B, Hq, Hkv, T, D, device, 100 + R)
            leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
            o_ref = sfa.attention(*leaves, causal=causal)
            want = (o_ref, *_grads(o_ref, leaves, dout))
            qs, ks, vs = (sd.shard_sequence(t, R) for t in (q, k, v))
            ls = [[t.clone().requires_grad_(True) for t in xs] for xs in (qs, ks, vs)]
            outs = sd.ring_attention(*ls, group=sd.SimulatedGroup(R), causal=causal)
            o = sd.unshard_sequence(outs)
            g = torch.autograd.grad(outs, [t for xs in ls for t in xs], sd.shard_sequence(dout, R))
            dq, dk, dv = (sd.unshard_sequence(list(g[i * R:(i + 1) * R])) for i in range(3))
            _check(f"{backend} ring R={R} causal={causal}", (o, dq, dk, dv), want)
            print(f"      {backend} ring R={R} causal={causal} Hq/Hkv {Hq}/{Hkv}: o error {rel(o, o_ref):.1e}")


@test()
def ring_simulated_cpu_ref():
    _ring_sim("cpu-ref")


@test(needs_cuda=True)
def ring_simulated_cuda():
    _ring_sim("cuda")


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
            results[rank] = [t.detach() for t in (o, *g, ou, *gu)]
    finally:
        dist.destroy_process_group()


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
        got = [sd.unshard_sequence([results[r][i] for r in range(world)]) for i in range(4)]
        _check(f"gloo ring R={world}", got, want)
        got_u = [torch.cat([results[r][4 + i] for r in range(world)], 2) for i in range(4)]
        _check(f"gloo ulysses R={world}", got_u, want_u)
        print(f"      gloo R={world}: ring o error {rel(got[0], want[0]):.1e}, "
              f"ulysses o error {rel(got_u[0], want_u[0]):.1e}")


@test()
def gloo_ring_and_ulysses_two_and_three_ranks():
    if not dist.is_available() or not dist.is_gloo_available():
        print("      (torch.distributed with gloo is not available here: not run)")
        return
    for world in (2, 3):
        _real(world)


if __name__ == "__main__":
    sys.exit(main(CUDA, f"torch {torch.__version__}, cuda {CUDA}"))
