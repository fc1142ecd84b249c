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
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import sfa  # noqa: E402

INT_MAX = 2**31 - 1
flex = torch.compile(flex_attention, dynamic=False)


def bench(fn, warm=3, reps=20):
    for _ in range(warm):
        fn()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b))
    ts.sort()
    return ts[len(ts) // 2]


def rel_err(x, ref, rows):
    x, ref = x.float()[rows], ref.float()[rows]
    return ((x - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def sort_by_bucket(x, bucket, T):
    """Sort the tokens of x [B,H,T,D] by (bucket, position); returns sorted x, idx, hash."""
    pos = torch.arange(T, device=x.device).expand_as(bucket)
    key = bucket.long() * T + pos
    order = key.argsort(dim=-1)
    xs = torch.gather(x, 2, order.unsqueeze(-1).expand_as(x))
    return xs, order.int(), torch.gather(bucket, 2, order).int(), order


def case_hash(B, H, T, D, nb, dt):
    q, k, v = (torch.randn(B, H, T, D, device="cuda", dtype=dt) for _ in range(3))
    qb = torch.randint(0, nb, (B, H, T), device="cuda", dtype=torch.int32)
    kb = torch.randint(0, nb, (B, H, T), device="cuda", dtype=torch.int32)
    qs, qi, qh, qord = sort_by_bucket(q, qb, T)
    ks, ki, kh, kord = sort_by_bucket(k, kb, T)
    vs = torch.gather(v, 2, kord.unsqueeze(-1).expand_as(v))
    # allowed pairs: for each query, keys of its bucket at positions <= its own
    kkey = (kh.long() * T + ki.long()).contiguous()
    hi = torch.searchsorted(kkey, (qh.long() * T + qi.long()).contiguous(), right=True)
    lo = torch.searchsorted(kkey, (qh.long() * T).contiguous(), right=False)
    pairs = (hi - lo).sum().item()
    rows = (hi - lo) > 0

    def mask_mod(b, h, i, j):
        return (qh[b, h, i] == kh[b, h, j]) & (qi[b, h, i] >= ki[b, h, j])
    bm = create_block_mask(mask_mod, B, H, T, T, device="cuda", _compile=True)
    run_sfa = lambda: sfa.forward(qs, ks, vs, mode="hash", q_idx=qi, k_idx=ki, q_hash=qh, k_hash=kh)
    run_flex = lambda: flex(qs, ks, vs, block_mask=bm)
    err = rel_err(run_sfa(), run_flex(), rows)

    # end to end from unsorted tensors: sort + gather, attention, scatter back
    def e2e_flex():
        qs_, qi_, qh_, qo_ = sort_by_bucket(q, qb, T)
        ks_, ki_, kh_, ko_ = sort_by_bucket(k, kb, T)
        vs_ = torch.gather(v, 2, ko_.unsqueeze(-1).expand_as(v))
        o = flex(qs_, ks_, vs_, block_mask=bm)
        return torch.empty_like(o).scatter_(2, qo_.unsqueeze(-1).expand_as(o), o)
    e2e_sfa = lambda: sfa.hash_attention(q, k, v, qb, kb, nb)
    err_e2e = rel_err(e2e_sfa(), e2e_flex(), torch.ones(B, H, T, dtype=torch.bool, device="cuda"))
    return dict(name=f"hash {nb} buckets", D=D, pairs=pairs, err=err, sfa=bench(run_sfa),
                flex=bench(run_flex), flex_e2e=bench(e2e_flex), sfa_e2e=bench(e2e_sfa), err_e2e=err_e2e)


def case_qk_drop(B, H, T, D, drop, dt):
    keepq = torch.rand(B, H, T, device="cuda") >= drop
    keepk = torch.rand(B, H, T, device="cuda") >= drop
    def compact(keep, pad):
        n = keep.sum(-1)
        L = int(n.max().item())
        pos = torch.arange(T, device="cuda").expand(B, H, T)
        key = torch.where(keep, pos, pos + T)  # kept first, in order
        order = key.argsort(-1)[..., :L]
        idx = torch.gather(pos, 2, order)
        valid = torch.arange(L, device="cuda").expand(B, H, L) < n.unsqueeze(-1)
        idx = torch.where(valid, idx, torch.full_like(idx, pad)).int().contiguous()
        return L, idx, valid
    Lq, qi, qvalid = compact(keepq, -1)
    Lk, ki, kvalid = compact(keepk, INT_MAX)
    q = torch.randn(B, H, Lq, D, device="cuda", dtype=dt)
    k, v = (torch.randn(B, H, Lk, D, device="cuda", dtype=dt) for _ in range(2))
    cnt = torch.searchsorted(ki, qi.clamp_min(-1), right=True)  # keys with k_idx <= q_idx
    cnt = torch.where(qi >= 0, cnt, torch.zeros_like(cnt))
    pairs = cnt.sum().item()
    rows = cnt > 0

    def mask_mod(b, h, i, j):
        return qi[b, h, i] >= ki[b, h, j]
    bm = create_block_mask(mask_mod, B, H, Lq, Lk, device="cuda", _compile=True)
    run_sfa = lambda: sfa.forward(q, k, v, mode="qk_drop", q_idx=qi, k_idx=ki)
    run_flex = lambda: flex(q, k, v, block_mask=bm)
    err = rel_err(run_sfa(), run_flex(), rows)
    return dict(name=f"qk_drop {int(drop * 100)}%", D=D, pairs=pairs, err=err, sfa=bench(run_sfa),
                flex=bench(run_flex))


def case_window(B, H, T, D, W, dt):
    q, k, v = (torch.randn(B, H, T, D, device="cuda", dtype=dt) for _ in range(3))
    pairs = B * H * sum(min(i + 1, W) for i in range(T))

    def mask_mod(b, h, i, j):
        return (i >= j) & (i - j < W)
    bm = create_block_mask(mask_mod, B, H, T, T, device="cuda", _compile=True)
    run_sfa = lambda: sfa.forward(q, k, v, mode="window", causal=True, window=(W - 1, 0))
    run_flex = lambda: flex(q, k, v, block_mask=bm)
    err = rel_err(run_sfa(), run_flex(), slice(None))
    return dict(name=f"window W={W}", D=D, pairs=pairs, err=err, sfa=bench(run_sfa), flex=bench(run_flex))


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
