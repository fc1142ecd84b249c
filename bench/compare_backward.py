"""compare_backward.py -- issue 4's table: sfa's backward against its peers on
identical random inputs (H=16, B*T=65536, bf16, T=16384): dense causal D=128
against PyTorch SDPA's flash backend (and cuDNN for reference), and each
sparse mode (hash 16 buckets D=128, qk_drop 30% D=128, window W=1024 D=64)
against FlexAttention's backward with the equivalent block mask.

Run on the GPU machine from the repository root, after building:
    python bench/compare_backward.py [--T 16384] [--B 4] [--H 16] [--only dense,hash,...]
        [--det] [--csv out.csv]
Before timing, each case checks sfa's dq, dk and dv against the peer's
gradients (relative L2 error < 3e-2 over the rows that take part). Times are
medians of 20 runs between CUDA events after 3 warm-ups: sfa's is the whole
sfa_backward call (workspace, preprocess, kernels, conversions); the peer's is
torch.autograd.grad through its forward graph (the backward kernels only).
Effective TF/s count only allowed (query, key) pairs: 10 * D * pairs / time
(five matrix products of 2 * D flops per pair).
"""
import argparse
import os
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import flex_attention

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cases import (bench, dense_problem, flex_block_mask, hash_problem, qk_drop_problem,  # noqa: E402
                   rel_err, window_problem)
import sfa  # noqa: E402

import torch._functorch.config  # noqa: E402
torch._functorch.config.donated_buffer = False  # the timing loop re-runs backward on one graph
flex = torch.compile(flex_attention, dynamic=False)


def peer_grads(fn, q, k, v, dout):
    """fn(q, k, v) -> o with autograd; returns a closure timing its backward
    and the gradients."""
    qq, kk, vv = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    o = fn(qq, kk, vv)
    run = lambda: torch.autograd.grad(o, (qq, kk, vv), dout, retain_graph=True)
    return run, run()


def compare(p, B, H, det, peers):
    dout = torch.randn_like(p.q)
    o, lse = sfa.forward(p.q, p.k, p.v, return_lse=True, **p.kw)
    run_sfa = lambda: sfa.backward(p.q, p.k, p.v, o, lse, dout, deterministic=det, **p.kw)
    dq, dk, dv, _ = run_sfa()
    row = dict(name=p.name + (" det" if det else ""), D=p.D, pairs=p.pairs, sfa=bench(run_sfa))
    for pname, fn in peers:
        run_peer, (gq, gk, gv) = peer_grads(fn, p.q, p.k, p.v, dout)
        err = max(rel_err(dq, gq, p.qrows), rel_err(dk, gk, p.krows), rel_err(dv, gv, p.krows))
        if not err < 3e-2:
            raise SystemExit(f"{p.name}: sfa's gradients differ from {pname}'s: rel err {err:.3e}")
        row[pname] = bench(run_peer)
        row[pname + "_err"] = err
    print("  " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()),
          flush=True)
    return row


def flex_peer(p, B, H):
    bm = flex_block_mask(p, B, H)
    return ("flex", lambda q, k, v: flex(q, k, v, block_mask=bm))


def sdpa_peer(backend, causal):
    def fn(q, k, v):
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return fn


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--T", type=int, default=16384)
    ap.add_argument("--B", type=int, default=0, help="batch (default 65536 // T)")
    ap.add_argument("--H", type=int, default=16)
    ap.add_argument("--det", action="store_true", help="time the deterministic backward")
    ap.add_argument("--csv", default="")
    ap.add_argument("--only", default="", help="comma list of: dense, hash, qk_drop, window")
    a = ap.parse_args()
    B, H, T = a.B or max(1, 65536 // a.T), a.H, a.T
    torch.manual_seed(0)
    dt = torch.bfloat16
    only = set(a.only.split(",")) if a.only else {"dense", "hash", "qk_drop", "window"}
    rows = []
    if "dense" in only:
        print("running dense...", flush=True)
        p = dense_problem(B, H, T, 128, dt)
        rows.append(compare(p, B, H, a.det, [("flash", sdpa_peer(SDPBackend.FLASH_ATTENTION, True)),
                                              ("cudnn", sdpa_peer(SDPBackend.CUDNN_ATTENTION, True))]))
    for name, make in (("hash", lambda: hash_problem(B, H, T, 128, 16, dt)),
                       ("qk_drop", lambda: qk_drop_problem(B, H, T, 128, 0.3, dt)),
                       ("window", lambda: window_problem(B, H, T, 64, 1024, dt))):
        if name in only:
            print(f"running {name}...", flush=True)
            p = make()
            rows.append(compare(p, B, H, a.det, [flex_peer(p, B, H)]))
    print(f"B={B} H={H} T={T} bf16 backward (ratio = peer ms / sfa ms; > 1 means sfa is faster)")
    print(f"{'case':<20}{'D':>4}{'sfa ms':>9}{'sfa TF/s':>9}   peers (ms, ratio, TF/s, max rel err)")
    lines = []
    for r in rows:
        f = 10 * r["D"] * r["pairs"]
        peers = [k for k in r if k in ("flash", "cudnn", "flex")]
        desc = "  ".join(f"{k} {r[k]:.3f} {r[k] / r['sfa']:.2f}x {f / r[k] / 1e9:.0f} {r[k + '_err']:.1e}"
                         for k in peers)
        print(f"{r['name']:<20}{r['D']:>4}{r['sfa']:>9.3f}{f / r['sfa'] / 1e9:>9.1f}   {desc}")
        for k in peers:
            lines.append(f"{r['name']},{r['D']},{r['sfa']:.4f},{k},{r[k]:.4f},{r[k + '_err']:.3e}")
    if a.csv:
        with open(a.csv, "w") as fh:
            fh.write("case,D,sfa_ms,peer,peer_ms,max_rel_err\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
