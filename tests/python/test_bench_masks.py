#!/usr/bin/env python3
"""test_bench_masks.py -- the benchmarks' FlexAttention block masks
(bench/cases.py): block_mask_from_ranges, which builds a problem's BlockMask
from each query row's key range, gives the same partial and full blocks, in
the same order, as create_block_mask evaluating the problem's mask_mod over
every (query, key) pair, for every problem of bench/ (hash in the sorted
layout, qk_drop, the causal window, dense causal and not) at sizes that are
and are not multiples of the 128-row block, on the CPU. Each problem's range
also holds exactly the keys its mask_mod allows (the dense mask, rebuilt from
the ranges), and the allowed-pair count the benchmarks divide by matches.
Skips (77) without torch or without FlexAttention.
"""
import os
import sys

from harness import SOURCE_DIR, main, test

try:
    import torch
    from torch.nn.attention.flex_attention import create_block_mask
except ImportError as e:
    print(f"SKIP: torch with FlexAttention is not installed ({e})")
    sys.exit(77)

sys.path.insert(0, os.path.join(SOURCE_DIR, "bench"))
import cases  # noqa: E402


def dense_of(bm_num, bm_idx, nk):
    """The [B, H, nq, nk] 0/1 matrix of an ordered block list."""
    B, H, nq = bm_num.shape
    out = torch.zeros(B, H, nq, nk, dtype=torch.int32)
    for b in range(B):
        for h in range(H):
            for r in range(nq):
                n = int(bm_num[b, h, r])
                out[b, h, r, bm_idx[b, h, r, :n].long()] = 1
    return out


def same_block_mask(got, want):
    nk = want.kv_indices.shape[-1]
    for part in (("kv_num_blocks", "kv_indices"), ("full_kv_num_blocks", "full_kv_indices")):
        gn, gi = (getattr(got, a) for a in part)
        wn, wi = (getattr(want, a) for a in part)
        assert torch.equal(gn.cpu(), wn.cpu()), f"{part[0]} differs"
        g, w = dense_of(gn.cpu(), gi.cpu(), nk), dense_of(wn.cpu(), wi.cpu(), nk)
        assert torch.equal(g, w), f"{part[1]}: different blocks"
        # the same order too (ascending key blocks, as create_block_mask's stable sort)
        for b in range(gn.shape[0]):
            for h in range(gn.shape[1]):
                for r in range(gn.shape[2]):
                    n = int(gn[b, h, r])
                    assert torch.equal(gi[b, h, r, :n].cpu(), wi[b, h, r, :n].cpu()), f"{part[1]} order"
    assert got.seq_lengths == want.seq_lengths, f"seq_lengths {got.seq_lengths} != {want.seq_lengths}"


def check(p, B, H):
    lo, hi = p.extra["ranges"]
    Tq, Tk = p.q.shape[2], p.k.shape[2]
    bh = p.extra.get("bh_free")
    want = create_block_mask(p.mask_mod, None if bh else B, None if bh else H, Tq, Tk, device="cpu")
    got = cases.block_mask_from_ranges(lo, hi, Tk, p.mask_mod)
    same_block_mask(got, want)
    # the ranges hold exactly the allowed keys
    Bm, Hm = lo.shape[:2]
    b = torch.arange(Bm).view(-1, 1, 1, 1)
    h = torch.arange(Hm).view(1, -1, 1, 1)
    i = torch.arange(Tq).view(1, 1, -1, 1)
    j = torch.arange(Tk).view(1, 1, 1, -1)
    allowed = p.mask_mod(b, h, i, j)
    from_ranges = (j >= lo.unsqueeze(-1)) & (j < hi.unsqueeze(-1))
    if p.name.startswith("qk_drop"):  # padded query rows (q_idx -1) see nothing
        allowed = allowed & (p.kw["q_idx"] >= 0).unsqueeze(-1)
    assert torch.equal(allowed.expand_as(from_ranges), from_ranges), f"{p.name}: ranges != mask_mod"
    pairs = int(from_ranges.sum()) * (B * H if bh else 1)
    assert pairs == p.pairs, f"{p.name}: pairs {pairs} != {p.pairs}"


@test()
def hash_sorted_layout_matches_create_block_mask():
    torch.manual_seed(1)
    for B, H, T, nb in ((2, 3, 1000, 4), (1, 2, 512, 16), (1, 1, 300, 1)):
        check(cases.hash_problem(B, H, T, 16, nb, torch.float32, device="cpu"), B, H)


@test()
def qk_drop_matches_create_block_mask():
    torch.manual_seed(2)
    for B, H, T, drop in ((2, 2, 900, 0.3), (1, 3, 640, 0.5), (1, 1, 129, 0.0)):
        check(cases.qk_drop_problem(B, H, T, 16, drop, torch.float32, device="cpu"), B, H)


@test()
def window_matches_create_block_mask():
    torch.manual_seed(3)
    for T, W in ((1000, 200), (1024, 128), (700, 1024), (257, 1)):
        check(cases.window_problem(1, 1, T, 16, W, torch.float32, device="cpu"), 1, 1)


@test()
def dense_matches_create_block_mask():
    torch.manual_seed(4)
    for T, causal in ((1000, True), (1024, True), (333, False), (512, False)):
        check(cases.dense_problem(1, 1, T, 16, torch.float32, causal=causal, device="cpu"), 1, 1)


if __name__ == "__main__":
    sys.exit(main(header="bench/cases.py block masks against create_block_mask (CPU)"))
