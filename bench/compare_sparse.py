"""compare_sparse.py -- issue 3's table: sfa's sparse forward modes against
FlexAttention on identical random inputs (H=16, B*T=65536, bf16, T=16384).

Run on the GPU machine from the repository root, after building:
    python bench/compare_sparse.py [--T 16384] [--B 4] [--H 16] [--csv out.csv]
Each case checks that sfa's output matches FlexAttention's (relative L2 error
< 2e-2 over rows that see at least one key) before timing; times are medians
of 20 launches between CUDA events after 3 warm-ups. Effective TF/s count only
the allowed (query, key) pairs: 4 * D * pairs / time.
"""
import argparse
import os
import sys

import torch
from torch.nn.attention.flex_attention import flex_attention

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cases import (bench, flex_block_mask, flex_hash_end_to_end, hash_problem, qk_drop_problem,  # noqa: E402
                   rel_err, window_problem)
import sfa  # noqa: E402  (cases puts python/ on the path)

flex = torch.compile(flex_attention, dynamic=False)


def flex_case(p, B, H):
    """sfa's forward against FlexAttention's on the problem p."""
    bm = flex_block_mask(p, B, H)
    run_sfa = lambda: sfa.forward(p.q, p.k, p.v, **p.kw)
    run_flex = lambda: flex(p.q, p.k, p.v, block_mask=bm)
    err = rel_err(run_sfa(), run_flex(), p.qrows)
    return dict(name=p.name, D=p.D, pairs=p.pairs, err=err, sfa=bench(run_sfa), flex=bench(run_flex)), bm


def case_hash(B, H, T, D, nb, dt):
    p = hash_problem(B, H, T, D, nb, dt)
    c, bm = flex_case(p, B, H)
    q, k, v, qb, kb, nb = p.extra["unsorted"]
    # end to end from unsorted tensors: sort + gather, attention, scatter back
    e2e_flex = flex_hash_end_to_end(flex, p, bm)
    e2e_sfa = lambda: sfa.hash_attention(q, k, v, qb, kb, nb)
    c.update(err_e2e=rel_err(e2e_sfa(), e2e_flex()), flex_e2e=bench(e2e_flex), sfa_e2e=bench(e2e_sfa))
    return c


def case_qk_drop(B, H, T, D, drop, dt):
    return flex_case(qk_drop_problem(B, H, T, D, drop, dt), B, H)[0]


def case_window(B, H, T, D, W, dt):
    return flex_case(window_problem(B, H, T, D, W, dt), B, H)[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--T", type=int, default=16384)
    ap.add_argument("--B", type=int, default=0, help="batch (default 65536 // T)")
    ap.add_argument("--H", type=int, default=16)
    ap.add_argument("--csv", default="")
    ap.add_argument("--only", default="", help="comma list of: hash, qk_drop, window")
    a = ap.parse_args()
    B = a.B or max(1, 65536 // a.T)
    torch.manual_seed(0)
    dt = torch.bfloat16
    cases = []
    only = set(a.only.split(",")) if a.only else {"hash", "qk_drop", "window"}
    if "hash" in only:
        print("running hash...", flush=True)
        cases.append(case_hash(B, a.H, a.T, 128, 16, dt))
    if "qk_drop" in only:
        print("running qk_drop...", flush=True)
        cases.append(case_qk_drop(B, a.H, a.T, 128, 0.3, dt))
    if "window" in only:
        print("running window...", flush=True)
        cases.append(case_window(B, a.H, a.T, 64, 1024, dt))
    hdr = f"{'case':<18}{'D':>4}{'rel err':>10}{'sfa ms':>9}{'flex ms':>9}{'sfa/flex':>9}{'sfa TF/s':>9}{'flex TF/s':>10}"
    print(f"B={B} H={a.H} T={a.T} bf16 (speedup = flex ms / sfa ms)")
    print(hdr)
    lines = []
    for c in cases:
        f = 4 * c["D"] * c["pairs"]
        print(f"{c['name']:<18}{c['D']:>4}{c['err']:>10.2e}{c['sfa']:>9.3f}{c['flex']:>9.3f}"
              f"{c['flex'] / c['sfa']:>8.2f}x{f / c['sfa'] / 1e9:>9.1f}{f / c['flex'] / 1e9:>10.1f}")
        if "flex_e2e" in c:
            print(f"{'  end to end':<18}{'':>4}{c['err_e2e']:>10.2e}{c['sfa_e2e']:>9.3f}{c['flex_e2e']:>9.3f}"
                  f"{c['flex_e2e'] / c['sfa_e2e']:>8.2f}x   (sfa: hash_prepare + kernel + unsort;"
                  f" flex: torch sort/gather + flex + scatter)")
        lines.append(f"{c['name']},{c['D']},{c['err']:.3e},{c['sfa']:.4f},{c['flex']:.4f},"
                     f"{c.get('sfa_e2e', '')},{c.get('flex_e2e', '')}")
    if a.csv:
        with open(a.csv, "w") as fh:
            fh.write("case,D,rel_err,sfa_ms,flex_ms,sfa_e2e_ms,flex_e2e_ms\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
