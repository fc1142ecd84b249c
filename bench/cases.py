"""cases.py -- what the bench/ scripts share: CUDA-event timing, error
measures, and the sparse problems of issues 3 and 4 built on identical random
inputs for sfa and for FlexAttention (sorted hash layout, compacted qk_drop
layout, causal sliding window), each with its mask_mod, allowed-pair count and
the rows that see at least one key. Problems whose mask does not depend on
(batch, head) carry extra["bh_free"] = True, so that flex_block_mask builds
one block mask broadcast over batch and heads (cheaper, reusable across B)."""
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import sfa  # noqa: E402,F401

INT_MAX = 2**31 - 1


def bench(fn, warm=3, reps=20, sync_each=False):
    """Median of reps CUDA-event timings (ms) after warm untimed runs. The reps
    are queued back to back and read after one synchronize (as
    triton.testing.do_bench does), so the host's time to issue a call overlaps
    the previous call's GPU work, as in a training loop; sync_each
    synchronizes after every rep instead, which adds each call's host time
    (Python, ctypes, autograd, launches) to its figure. Without CUDA (the
    --smoke runs of varlen.py on the CPU) it is the median host wall time."""
    for _ in range(warm):
        fn()
    if not torch.cuda.is_available():
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t0) * 1e3)
        return median(ts)
    ev = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        if sync_each:
            b.synchronize()
        ev.append((a, b))
    torch.cuda.synchronize()
    return median([a.elapsed_time(b) for a, b in ev])


def rounds_bench(runs, rounds=3, warm=3, reps=20, sync_each=False):
    """Interleaved timing of several implementations of one case: each of
    rounds rounds times every (name, fn) of runs in turn with bench (warm-ups
    in the first round only), so that a drift of the GPU's clock over the
    case falls on every implementation alike instead of on whichever ran in
    the slow stretch. Returns {name: [the medians of the rounds, in order]}."""
    out = {name: [] for name, _ in runs}
    for r in range(rounds):
        for name, fn in runs:
            out[name].append(bench(fn, warm=warm if r == 0 else 1, reps=reps, sync_each=sync_each))
    return out


def median(xs):
    """The median of a non-empty list (the upper middle of an even count, as
    bench has always taken it)."""
    ys = sorted(xs)
    return ys[len(ys) // 2]


def round_ratios(ts, base):
    """Per-round ratios of one implementation's rounds_bench times to
    another's (base); a case's ratio is their median."""
    return [t / b for t, b in zip(ts, base)]


def graph_bench(fn, warm=3, reps=20, per=10):
    """Median ms per call of fn captured in a CUDA graph: per calls of fn in
    one graph (captured on a side stream after one eager call there), each
    replay timed between CUDA events after warm replays, divided by per. No
    host time counts, as when a serving engine replays its decode step from a
    graph; fn must be capturable (no synchronize, no host reads)."""
    g, s = torch.cuda.CUDAGraph(), torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fn()
        with torch.cuda.graph(g, stream=s):
            for _ in range(per):
                fn()
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    return bench(g.replay, warm, reps) / per


def kernel_times(run, reps):
    """[(mean us per call, name)] of each kernel (and memset, copy) that run
    launches, slowest first, from torch.profiler (CUPTI) over reps calls."""
    from torch.profiler import ProfilerActivity, profile
    run()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            run()
        torch.cuda.synchronize()
    rows = []
    for e in prof.key_averages():
        t = getattr(e, "self_device_time_total", None)
        if t is None:
            t = getattr(e, "self_cuda_time_total", 0)
        if t > 0:
            rows.append((t / reps, e.key))
    return sorted(rows, reverse=True)


def decode_case(B, hq, hkv, kv, D, tn, page, dt):
    """A decode step (decode.py, decode_probe.py): q [B, Hq, Tn, D], the
    contiguous cache k, v [B, Hkv, KV, D], and what sfa.decode takes: (k, v,
    None, seqused) or, with a page size, the same keys in shuffled pages
    [B * KV / page, page, Hkv, D] with their table (every sequence full)."""
    q = torch.randn(B, hq, tn, D, device="cuda", dtype=dt)
    k = torch.randn(B, hkv, kv, D, device="cuda", dtype=dt)
    v = torch.randn(B, hkv, kv, D, device="cuda", dtype=dt)
    seq = torch.full((B,), kv, device="cuda", dtype=torch.int32)
    if not page:
        return q, k, v, (k, v, None, seq)
    per = kv // page
    perm = torch.randperm(B * per, device="cuda")
    table = perm.view(B, per).int()
    # [B, Hkv, per, page, D] -> pages [B * per, page, Hkv, D] placed at perm
    def paged(x):
        blocks = x.view(B, hkv, per, page, D).permute(0, 2, 3, 1, 4).reshape(B * per, page, hkv, D)
        out = torch.empty_like(blocks)
        out[perm] = blocks
        return out
    return q, k, v, (paged(k), paged(v), table, seq)


def finish(cut, failures):
    """The end of a benchmark run: exit 3 when a signal cut it short, else 1
    (listing them) when a check failed."""
    if cut:
        sys.exit(3)
    if failures:
        print(f"{len(failures)} FAILED:")
        for f in failures:
            print(f"  {f}")
        sys.exit(1)


def rel_err(x, ref, rows=slice(None)):
    """Relative L2 error of x against ref over the selected rows."""
    x, ref = x.float()[rows], ref.float()[rows]
    return ((x - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def sort_by_bucket(x, bucket, T):
    """Sort the tokens of x [B,H,T,D] by (bucket, position); returns sorted x, idx, hash, order."""
    pos = torch.arange(T, device=x.device).expand_as(bucket)
    key = bucket.long() * T + pos
    order = key.argsort(dim=-1)
    xs = torch.gather(x, 2, order.unsqueeze(-1).expand_as(x))
    return xs, order.int(), torch.gather(bucket, 2, order).int(), order


def flex_hash_end_to_end(flex, p, bm):
    """FlexAttention's hash attention from unsorted tensors (the peer of
    sfa.hash_attention): torch argsort + gather into the sorted layout of the
    hash problem p, flex (a flex_attention callable) with its block mask bm,
    torch scatter back to the original order. Returns a no-argument callable."""
    q, k, v, qb, kb, _ = p.extra["unsorted"]
    T = q.shape[2]

    def run():
        qs, _, _, qo = sort_by_bucket(q, qb, T)
        ks, _, _, ko = sort_by_bucket(k, kb, T)
        vs = torch.gather(v, 2, ko.unsqueeze(-1).expand_as(v))
        o = flex(qs, ks, vs, block_mask=bm)
        return torch.empty_like(o).scatter_(2, qo.unsqueeze(-1).expand_as(o), o)
    return run


class Problem:
    """One sparse problem: q, k, v (already in sfa's layout), sfa's keyword
    arguments, FlexAttention's mask_mod and sizes, allowed pairs, the query
    rows and key rows that take part (for error checks)."""

    def __init__(self, name, D, q, k, v, kw, mask_mod, pairs, qrows, krows, **extra):
        self.name, self.D, self.q, self.k, self.v, self.kw = name, D, q, k, v, kw
        self.mask_mod, self.pairs, self.qrows, self.krows = mask_mod, pairs, qrows, krows
        self.extra = extra


def hash_problem(B, H, T, D, nb, dt, device="cuda"):
    q, k, v = (torch.randn(B, H, T, D, device=device, dtype=dt) for _ in range(3))
    qb = torch.randint(0, nb, (B, H, T), device=device, dtype=torch.int32)
    kb = torch.randint(0, nb, (B, H, T), device=device, dtype=torch.int32)
    qs, qi, qh, qord = sort_by_bucket(q, qb, T)
    ks, ki, kh, kord = sort_by_bucket(k, kb, T)
    vs = torch.gather(v, 2, kord.unsqueeze(-1).expand_as(v))
    # allowed pairs: for each query, keys of its bucket at positions <= its own
    kkey = (kh.long() * T + ki.long()).contiguous()
    hi = torch.searchsorted(kkey, (qh.long() * T + qi.long()).contiguous(), right=True)
    lo = torch.searchsorted(kkey, (qh.long() * T).contiguous(), right=False)
    pairs = (hi - lo).sum().item()

    def mask_mod(b, h, i, j):
        return (qh[b, h, i] == kh[b, h, j]) & (qi[b, h, i] >= ki[b, h, j])
    kw = dict(mode="hash", q_idx=qi, k_idx=ki, q_hash=qh, k_hash=kh)
    return Problem(f"hash {nb} buckets", D, qs, ks, vs, kw, mask_mod, pairs, (hi - lo) > 0,
                   slice(None), unsorted=(q, k, v, qb, kb, nb), ranges=(lo, hi))


def qk_drop_problem(B, H, T, D, drop, dt, device="cuda"):
    keepq = torch.rand(B, H, T, device=device) >= drop
    keepk = torch.rand(B, H, T, device=device) >= drop

    def compact(keep, pad):
        n = keep.sum(-1)
        L = int(n.max().item())
        pos = torch.arange(T, device=device).expand(B, H, T)
        key = torch.where(keep, pos, pos + T)  # kept first, in order
        order = key.argsort(-1)[..., :L]
        idx = torch.gather(pos, 2, order)
        valid = torch.arange(L, device=device).expand(B, H, L) < n.unsqueeze(-1)
        idx = torch.where(valid, idx, torch.full_like(idx, pad)).int().contiguous()
        return L, idx, valid
    Lq, qi, _ = compact(keepq, -1)
    Lk, ki, kvalid = compact(keepk, INT_MAX)
    q = torch.randn(B, H, Lq, D, device=device, dtype=dt)
    k, v = (torch.randn(B, H, Lk, D, device=device, dtype=dt) for _ in range(2))
    cnt = torch.searchsorted(ki, qi.clamp_min(-1), right=True)  # keys with k_idx <= q_idx
    cnt = torch.where(qi >= 0, cnt, torch.zeros_like(cnt))

    def mask_mod(b, h, i, j):
        return qi[b, h, i] >= ki[b, h, j]
    kw = dict(mode="qk_drop", q_idx=qi, k_idx=ki)
    return Problem(f"qk_drop {int(drop * 100)}%", D, q, k, v, kw, mask_mod, cnt.sum().item(), cnt > 0,
                   kvalid, ranges=(torch.zeros_like(cnt), cnt))


def window_problem(B, H, T, D, W, dt, device="cuda"):
    q, k, v = (torch.randn(B, H, T, D, device=device, dtype=dt) for _ in range(3))
    pairs = B * H * sum(min(i + 1, W) for i in range(T))

    def mask_mod(b, h, i, j):
        return (i >= j) & (i - j < W)
    kw = dict(mode="window", causal=True, window=(W - 1, 0))
    i = torch.arange(T, device=q.device).view(1, 1, T)
    return Problem(f"window W={W}", D, q, k, v, kw, mask_mod, pairs, slice(None), slice(None), bh_free=True,
                   ranges=((i - W + 1).clamp_min(0), i + 1))


def dense_problem(B, H, T, D, dt, causal=True, device="cuda"):
    q, k, v = (torch.randn(B, H, T, D, device=device, dtype=dt) for _ in range(3))
    pairs = B * H * (T * (T + 1) // 2 if causal else T * T)

    def mask_mod(b, h, i, j):
        return i >= j if causal else i >= 0
    kw = dict(mode="dense", causal=causal)
    i = torch.arange(T, device=q.device).view(1, 1, T)
    return Problem("dense causal" if causal else "dense", D, q, k, v, kw, mask_mod, pairs,
                   slice(None), slice(None), bh_free=True,
                   ranges=(torch.zeros_like(i), i + 1 if causal else torch.full_like(i, T)))


_block_mask_fn = None


def block_mask_fn():
    """torch.compile(create_block_mask), made once. Its _compile=True flag is
    deprecated in torch 2.11 and did not compile: session 18's runs of
    compare.py sat in the first sparse case (hash, B 4, H 16, T 16384, whose
    mask_mod differs per batch and head) for over 220 s."""
    global _block_mask_fn
    if _block_mask_fn is None:
        from torch.nn.attention.flex_attention import create_block_mask
        _block_mask_fn = torch.compile(create_block_mask)
    return _block_mask_fn


def block_mask_from_ranges(lo, hi, Tk, mask_mod, block=128):
    """FlexAttention's BlockMask of a mask under which query row i of each
    (batch, head) sees one contiguous range of keys [lo[b, h, i], hi[b, h, i])
    (an empty one where hi <= lo): what create_block_mask(mask_mod, ...) makes
    of that mask (same partial and full blocks, same order), from the ranges
    with a few tensor ops instead of mask_mod over every (query, key) pair.
    Every problem here has such ranges: hash in the sorted layout (a query's
    bucket, up to its position), qk_drop (the kept keys up to its position),
    the causal window and dense. lo, hi: integer tensors [B, H, Tq] (B = H = 1:
    one mask for every batch and head). As in create_block_mask, rows and
    columns past Tq and Tk pad the last blocks and see nothing, so those
    blocks are never full.

    A row touches key blocks lo // block .. (hi - 1) // block and covers
    ceil(lo / block) .. hi // block - 1 whole; per (query block, key block)
    the rows that touch it and those that cover it are counted with a
    difference array along the key blocks (one scatter_add, one cumsum).
    Blocks that every row of the query block covers are full (FlexAttention
    skips mask_mod there), the other touched ones partial."""
    from torch.nn.attention.flex_attention import BlockMask
    Bm, Hm, Tq = lo.shape
    nq, nk = -(-Tq // block), -(-Tk // block)
    lo, hi = lo.long(), hi.clamp_max(Tk).long()
    qblk = (torch.arange(Tq, device=lo.device) // block).view(1, 1, Tq).expand(Bm, Hm, Tq)

    def count(first, last, valid):
        """Rows per (query block, key block) whose block range first..last
        (inclusive; only where valid) holds the key block."""
        d = torch.zeros(Bm, Hm, nq * (nk + 1), dtype=torch.int32, device=lo.device)
        one = valid.to(torch.int32)
        d.scatter_add_(2, (qblk * (nk + 1) + first.clamp(0, nk)).reshape(Bm, Hm, Tq), one)
        d.scatter_add_(2, (qblk * (nk + 1) + (last + 1).clamp(0, nk)).reshape(Bm, Hm, Tq), -one)
        return d.view(Bm, Hm, nq, nk + 1).cumsum(-1)[..., :nk]

    touched = count(lo // block, (hi - 1) // block, hi > lo) > 0
    f0, f1 = (lo + block - 1) // block, hi // block - 1
    full = count(f0, f1, f1 >= f0) == block
    partial = touched & ~full

    def ordered(m):
        m = m.to(torch.int32)
        idx = torch.argsort(m, dim=-1, descending=True, stable=True)
        return m.sum(-1).to(torch.int32).contiguous(), idx.to(torch.int32).contiguous()
    pn, pi = ordered(partial)
    fn, fi = ordered(full)
    return BlockMask.from_kv_blocks(pn, pi, fn, fi, BLOCK_SIZE=(block, block), mask_mod=mask_mod,
                                    seq_lengths=(Tq, Tk))


def flex_block_mask(p, B, H):
    """FlexAttention's block mask of problem p: from its key ranges
    (block_mask_from_ranges) where it has them, else create_block_mask
    (block_mask_fn); broadcast over batch and heads (B = H = None) when
    p.extra["bh_free"]."""
    if "ranges" in p.extra:
        lo, hi = p.extra["ranges"]
        return block_mask_from_ranges(lo, hi, p.k.shape[2], p.mask_mod)
    if p.extra.get("bh_free"):
        B = H = None
    return block_mask_fn()(p.mask_mod, B, H, p.q.shape[2], p.k.shape[2], device="cuda")
