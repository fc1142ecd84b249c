"""distributed.py -- context parallelism with sfa's kernels on torch.distributed:
sequences longer than one GPU holds, sharded over the ranks of a process group.

ring_attention(q, k, v, *, group=None, mode="dense", causal=False, scale=None,
               window=(-1, -1), bias=None, mask=None, layout="balanced")
    Ring attention, dense (causal or not) or window (a sliding window, with an
    optional bias or mask), forward and backward. The sequence of length T is
    cut into equal chunks and each rank holds some of them, concatenated
    along time (shard_sequence / unshard_sequence convert):
    - layout "balanced" (the default): 2R chunks, rank r holds chunks r and
      2R-1-r, which balances causal work;
    - layout "contiguous": R chunks, rank r holds chunk r (tokens
      [r T/R, (r + 1) T/R)). A sliding window's work is balanced in either
      layout; the contiguous one needs fewer exchanges (a causal window
      shorter than a shard needs only the previous rank's K/V, one step),
      so it is the layout to use for windows.
    Each (query chunk, key chunk) pair in which the causal mask or the
    window lets anything be seen is one sfa call with its lse, on the rows
    and keys of the pair that see anything, with the window re-aligned to
    them (_ring.pair_plan; docs/semantics.md); the other pairs are skipped.
    Each query chunk's parts are merged by their lse (sfa_merge_attention).
    The K/V shards travel over isend/irecv while the current block is
    computed, along the ring (to rank r + 1) for the keys before, and for a
    window that reaches only a few ranks also the other way (to rank r - 1)
    for the keys after: only as many steps as the window needs, every shard
    visiting each rank at most once. The backward runs the same schedule
    with the merged o and lse (so every pair's probabilities are already
    normalised over all keys): dq stays, the partial dk and dv of a
    travelling shard follow it one step behind, summed along the way, and
    go back to the shard's owner at the end. Differentiable in q, k, v (and
    the bias).

ulysses_attention(q, k, v, *extras, fn=None, group=None, **kwargs)
    DeepSpeed-Ulysses head parallelism, for the modes whose rows are not
    position ranges (hash, qk_drop) or for any mode: each rank holds
    contiguous sequence shards [B, H, T/R, D] (and extras, per-token arrays
    [B, H, T/R], e.g. hash buckets); an all-to-all turns them into head
    shards of the whole sequence [B, H/R, T, D], fn (default sfa.attention;
    e.g. sfa.hash_attention with its buckets) runs on them, and an all-to-all
    turns the output back. Differentiable (torch.distributed.nn's all-to-all).

Both take group=None for the default process group. A `SimulatedGroup(R)`
stands in for a process group in one process: every argument is then a list
of the R ranks' tensors and the result a list, the same schedule stepped in
lockstep (the tests check the algorithms this way on one device, or on the
CPU with the reference backend). The single-GPU calls are unchanged; this
module only composes them.
"""
import torch
import torch.distributed as dist

from . import _api
from ._args import check_choice, check_scale, check_window
from ._ring import LAYOUTS, Ring, RingAttention, Spec, chunk_ids, chunks_per_rank

__all__ = ["ring_attention", "ulysses_attention", "shard_sequence", "unshard_sequence", "SimulatedGroup"]


class SimulatedGroup:
    """R virtual ranks in this process: the tensors of a call are lists of R."""

    def __init__(self, size):
        if int(size) < 1:
            raise ValueError(f"sfa: SimulatedGroup size {size}; must be >= 1")
        self.size = int(size)


# ------------------------------------------------------------------ layouts

def shard_sequence(x, world, dim=2, layout="balanced"):
    """x's shards along dim for world ranks, a list of world tensors: layout
    "balanced" cuts x into 2 * world chunks and gives rank r chunks r and
    2 * world - 1 - r, concatenated (the length must be divisible by
    2 * world); "contiguous" gives rank r the r-th of world equal pieces."""
    check_choice("layout", layout, LAYOUTS)
    n, nc = x.shape[dim], world * chunks_per_rank(layout)
    if n % nc:
        raise ValueError(f"sfa: sequence length {n} is not divisible by {'2 * ' if nc != world else ''}world = "
                         f"{nc} (layout {layout})")
    ch = x.chunk(nc, dim)
    return [torch.cat([ch[c] for c in chunk_ids(r, world, layout)], dim) for r in range(world)]


def unshard_sequence(shards, dim=2, layout="balanced"):
    """The inverse of shard_sequence (with the same layout)."""
    check_choice("layout", layout, LAYOUTS)
    world, per = len(shards), chunks_per_rank(layout)
    parts = [None] * (world * per)
    for r, s in enumerate(shards):
        for c, piece in zip(chunk_ids(r, world, layout), s.chunk(per, dim)):
            parts[c] = piece
    return torch.cat(parts, dim)


def _check_shards(ring, named, layout):
    """Lists of per-rank shards of one length, as the layout splits."""
    per = chunks_per_rank(layout)
    tlen = None
    for name, xs in named:
        if len(xs) != len(ring.ranks):
            raise ValueError(f"sfa: {name}: {len(xs)} shards for {len(ring.ranks)} ranks")
        for x in xs:
            if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[2] % per or x.shape[2] == 0:
                what = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                raise ValueError(f"sfa: {name} shard has shape {what}; must be [B, H, T/R, D] with T/R "
                                 + ("even (two chunks of the balanced layout)" if per == 2 else "> 0"))
            if tlen is None:
                tlen = x.shape[2]
            elif x.shape[2] != tlen:
                raise ValueError(f"sfa: {name} shard has {x.shape[2]} positions but q's have {tlen}; every shard "
                                 "of q, k and v has the same length T/R")
    return tlen


def _check_block(name, xs, tlen, world):
    """A per-rank bias or mask: [B|1, H, T/R|1, T], rows the rank's own."""
    for x in xs:
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[2] not in (1, tlen) \
                or x.shape[3] != tlen * world:
            what = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"sfa: {name} has shape {what}; ring_attention takes each rank's rows of the "
                             f"whole sequence's {name}, [B|1, H, T/R|1, T] = [.., {tlen}|1, {tlen * world}] "
                             "(rows in the shard's order, keys in the sequence's)")


def ring_attention(q, k, v, *, group=None, mode="dense", causal=False, scale=None, window=(-1, -1), bias=None,
                   mask=None, layout="balanced"):
    """Attention of this rank's query shard over the whole sequence, the K/V
    shards passed around the ring (see the module's text): the result of
    sfa.attention on the unsharded tensors (Tq = Tk = T, so causal and the
    window are the ordinary ones), sharded alike.

    q [B, Hq, T/R, D], k, v [B, Hkv, T/R, D]: this rank's shards in the
    given layout (shard_sequence with the same layout): "balanced" (rank r
    holds chunks r and 2R-1-r of 2R; T/R even; best for dense causal) or
    "contiguous" (rank r holds the r-th of R pieces; best for a window).
    mode "dense" (causal or not) or "window": window=(left, right), -1
    unbounded, query i sees key j iff i - left <= j <= i + right (causal
    makes right 0), as sfa.attention's window mode; the shards travel only
    as far as the window reaches, and pairs outside it are not computed.
    scale: None = 1/sqrt(D), else > 0. Window mode also takes
    this rank's rows of the sequence's bias (q's dtype) or mask (bool/uint8,
    True = attend): [B|1, H, T/R|1, T], the rows in the shard's order and
    every key of the sequence in its own order; the bias gets a gradient
    when it requires grad. Other modes: ulysses_attention. Returns o like
    q, differentiable. With a SimulatedGroup(R): lists of R shards (and
    biases, masks) in, a list of R outputs out."""
    check_choice("mode", mode, ("dense", "window"))
    check_choice("layout", layout, LAYOUTS)
    left, right = check_window(window)
    scale = check_scale(scale)
    if mode == "dense" and ((left, right) != (-1, -1) or bias is not None or mask is not None):
        raise ValueError("sfa: window, bias and mask apply to mode='window' (ring_attention in mode "
                         "'dense' got one)")
    if mode == "dense":
        right = 0 if causal else -1
    elif causal:
        right = 0
    ring = Ring(group, isinstance(group, SimulatedGroup))

    def wrap(x, name):
        if not ring.sim:
            return [x]
        if not isinstance(x, (list, tuple)):
            raise ValueError(f"sfa: {name}: with a SimulatedGroup, a list of the ranks' shards (not "
                             f"{type(x).__name__})")
        return list(x)

    qs, ks, vs = wrap(q, "q"), wrap(k, "k"), wrap(v, "v")
    tlen = _check_shards(ring, (("q", qs), ("k", ks), ("v", vs)), layout)
    extra = []
    for name, x in (("bias", bias), ("mask", mask)):
        if x is not None:
            xs = wrap(x, name)
            if len(xs) != len(ring.ranks):
                raise ValueError(f"sfa: {name}: {len(xs)} shards for {len(ring.ranks)} ranks")
            _check_block(name, xs, tlen, ring.world)
            if name == "mask" and any(m.dtype not in (torch.bool, torch.uint8) for m in xs):
                raise ValueError("sfa: mask: dtype must be torch.bool or torch.uint8 (True/1 = attend)")
            extra += xs
    spec = Spec(ring.world, layout, tlen // chunks_per_rank(layout), left, right,
                bias is not None or mask is not None, scale)
    outs = RingAttention.apply(ring, spec, len(qs), bias is not None, mask is not None, *qs, *ks, *vs, *extra)
    return list(outs) if ring.sim else outs[0]


# ------------------------------------------------------------------ Ulysses

def _all_to_all_sim(xs, split_dim, cat_dim):
    """The all-to-all of R virtual ranks: rank r's piece j goes to rank j."""
    world = len(xs)
    pieces = [x.chunk(world, split_dim) for x in xs]
    return [torch.cat([pieces[src][dst] for src in range(world)], cat_dim) for dst in range(world)]


def _all_to_all(x, group, split_dim, cat_dim):
    """One rank's all-to-all (differentiable): x split along split_dim into R
    pieces, piece j to rank j; the received pieces concatenated along cat_dim."""
    from torch.distributed.nn.functional import all_to_all_single
    world = dist.get_world_size(group)
    xs = x.movedim(split_dim, 0).contiguous()  # pieces along dim 0
    out = all_to_all_single(torch.empty_like(xs), xs, group=group)
    out = out.movedim(0, split_dim)
    # out holds the pieces of every source, stacked along split_dim: move them to cat_dim
    pieces = out.chunk(world, split_dim)
    return torch.cat(pieces, cat_dim)


def ulysses_attention(q, k, v, *extras, fn=None, group=None, **kwargs):
    """fn (default sfa.attention) on the whole sequence with the heads
    sharded over the ranks (see the module's text). q [B, Hq, T/R, D],
    k, v [B, Hkv, T/R, D]: contiguous sequence shards (rank r holds tokens
    [r T/R, (r + 1) T/R)); extras: per-token arrays [B, H, T/R] of q's
    heads or k's (fn's positional arguments after v, e.g. hash_attention's
    q_bucket, k_bucket), resharded alike; kwargs go to fn. Hq and Hkv must be
    multiples of R. Returns o like q, differentiable. With a
    SimulatedGroup(R): lists of R shards in, a list out."""
    fn = fn or _api.attention
    sim = isinstance(group, SimulatedGroup)
    world = group.size if sim else dist.get_world_size(group)
    for name, x in (("q", q), ("k", k), ("v", v)):
        for s in (x if sim else [x]):
            if s.shape[1] % world:
                raise ValueError(f"sfa: {name} has {s.shape[1]} heads; Ulysses needs a multiple of the "
                                 f"{world} ranks")

    def a2a(x, split_dim, cat_dim):
        return _all_to_all_sim(x, split_dim, cat_dim) if sim else _all_to_all(x, group, split_dim, cat_dim)

    # sequence shards -> head shards: split the heads, gather the time
    qf, kf, vf = (a2a(x, 1, 2) for x in (q, k, v))
    ef = [a2a(e, 1, 2) for e in extras]
    if sim:
        of = [fn(qf[r], kf[r], vf[r], *(e[r] for e in ef), **kwargs) for r in range(world)]
    else:
        of = fn(qf, kf, vf, *ef, **kwargs)
    return a2a(of, 2, 1)  # head shards -> sequence shards
