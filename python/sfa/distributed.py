"""distributed.py -- context parallelism with sfa's kernels on torch.distributed:
sequences longer than one GPU holds, sharded over the ranks of a process group.

ring_attention(q, k, v, *, group=None, causal=False, scale=None)
    Ring attention (dense, causal or not). Each rank holds a shard of the
    sequence in the load-balanced layout: the sequence is cut into 2R chunks
    and rank r holds chunks r and 2R-1-r, concatenated along time
    (shard_sequence / unshard_sequence convert). The K/V shards travel around
    the ring (R - 1 exchanges, isend/irecv to the next rank while the current
    block is computed); each (query chunk, key chunk) pair is one sfa call
    with its lse (under causality a chunk pair is full, causal on the
    diagonal, or skipped), and each query chunk's parts are merged by their
    lse (sfa_merge_attention). The backward runs the ring again with the
    merged o and lse (so every pair's probabilities are already normalised
    over all keys): dq stays, dk and dv travel with their K/V block and are
    back at their owner after the R-th exchange. Differentiable in q, k, v.

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

__all__ = ["ring_attention", "ulysses_attention", "shard_sequence", "unshard_sequence", "SimulatedGroup"]


class SimulatedGroup:
    """R virtual ranks in this process: the tensors of a call are lists of R."""

    def __init__(self, size):
        if int(size) < 1:
            raise ValueError(f"sfa: SimulatedGroup size {size}; must be >= 1")
        self.size = int(size)


# ------------------------------------------------------------------ layouts

def shard_sequence(x, world, dim=2):
    """The load-balanced shards of x along dim (length divisible by 2 * world):
    rank r gets chunks r and 2 * world - 1 - r, concatenated. A list of world
    tensors."""
    n = x.shape[dim]
    if n % (2 * world):
        raise ValueError(f"sfa: sequence length {n} is not divisible by 2 * world = {2 * world}")
    ch = x.chunk(2 * world, dim)
    return [torch.cat([ch[r], ch[2 * world - 1 - r]], dim) for r in range(world)]


def unshard_sequence(shards, dim=2):
    """The inverse of shard_sequence."""
    world = len(shards)
    parts = [None] * (2 * world)
    for r, s in enumerate(shards):
        a, b = s.chunk(2, dim)
        parts[r], parts[2 * world - 1 - r] = a, b
    return torch.cat(parts, dim)


# ------------------------------------------------------------------ communication

class _Ring:
    """The ring's exchange: every rank sends its block to the next rank and
    receives the previous rank's. `ranks` lists the ranks this process plays
    (one for a process group, all for a SimulatedGroup); blocks are per-rank
    tuples of tensors."""

    def __init__(self, group):
        self.sim = isinstance(group, SimulatedGroup)
        if self.sim:
            self.world, self.ranks = group.size, list(range(group.size))
        else:
            if not dist.is_available() or not dist.is_initialized():
                raise RuntimeError("sfa: ring_attention needs an initialized torch.distributed process group "
                                   "(or a SimulatedGroup)")
            self.group = group
            self.world = dist.get_world_size(group)
            self.ranks = [dist.get_rank(group)]
        self.pending = None

    def start(self, blocks):
        """Starts sending blocks (one tuple per played rank) along the ring."""
        if self.sim:
            self.pending = [blocks[(i - 1) % self.world] for i in range(self.world)]
            return
        (blk,) = blocks
        rank = self.ranks[0]
        nxt, prv = (rank + 1) % self.world, (rank - 1) % self.world
        g = self.group
        nxt_g = dist.get_global_rank(g, nxt) if g is not None else nxt
        prv_g = dist.get_global_rank(g, prv) if g is not None else prv
        recv = tuple(torch.empty_like(t) for t in blk)
        ops = [dist.P2POp(dist.isend, t.contiguous(), nxt_g, g) for t in blk]
        ops += [dist.P2POp(dist.irecv, t, prv_g, g) for t in recv]
        self.pending = (dist.batch_isend_irecv(ops), recv)

    def finish(self):
        """The blocks started by start, received (one tuple per played rank)."""
        if self.sim:
            out, self.pending = self.pending, None
            return out
        reqs, recv = self.pending
        for r in reqs:
            r.wait()
        self.pending = None
        return [recv]


def _chunk_ids(rank, world):
    return (rank, 2 * world - 1 - rank)


def _pair(qc, kc, causal):
    """How query chunk qc sees key chunk kc: None (not at all), False (every
    key) or True (causally: the diagonal chunk)."""
    if not causal or kc < qc:
        return False
    return True if kc == qc else None


# ------------------------------------------------------------------ ring attention

def _ring_forward(ring, qs, ks, vs, causal, scale):
    """Per played rank: (o, lse) of its query shard over the whole sequence."""
    world = ring.world
    parts = [[[], []] for _ in ring.ranks]  # [rank][query chunk] -> [(o, lse)]
    blocks = [(k, v) for k, v in zip(ks, vs)]
    for step in range(world):
        if step + 1 < world:
            ring.start(blocks)  # the next block travels while this one is computed
        for i, rank in enumerate(ring.ranks):
            src = (rank - step) % world
            qch = qs[i].chunk(2, 2)
            kch, vch = blocks[i][0].chunk(2, 2), blocks[i][1].chunk(2, 2)
            for a, qc in enumerate(_chunk_ids(rank, world)):
                for b, kc in enumerate(_chunk_ids(src, world)):
                    how = _pair(qc, kc, causal)
                    if how is None:
                        continue
                    o, lse = _api.forward(qch[a], kch[b], vch[b], causal=how, scale=scale, return_lse=True)
                    parts[i][a].append((o, lse))
        if step + 1 < world:
            blocks = ring.finish()
    outs, lses = [], []
    for i in range(len(ring.ranks)):
        o2, l2 = [], []
        for a in range(2):
            os_, ls_ = zip(*parts[i][a])  # every query chunk sees at least its own chunk
            o, lse = _api.merge_attention(list(os_), list(ls_))
            o2.append(o)
            l2.append(lse)
        outs.append(torch.cat(o2, 2))
        lses.append(torch.cat(l2, 2))
    return outs, lses


def _ring_backward(ring, qs, ks, vs, os_, lses, douts, causal, scale):
    """Per played rank: (dq, dk, dv) of its shards."""
    world = ring.world
    dqs = [torch.zeros(q.shape, dtype=torch.float32, device=q.device) for q in qs]
    blocks = [(k, v, torch.zeros(k.shape, dtype=torch.float32, device=k.device),
               torch.zeros(v.shape, dtype=torch.float32, device=v.device)) for k, v in zip(ks, vs)]
    for step in range(world):
        for i, rank in enumerate(ring.ranks):
            src = (rank - step) % world
            k, v, dk, dv = blocks[i]
            qch, och, lch, dch = (t.chunk(2, 2) for t in (qs[i], os_[i], lses[i], douts[i]))
            kch, vch = k.chunk(2, 2), v.chunk(2, 2)
            dqch, dkch, dvch = dqs[i].chunk(2, 2), dk.chunk(2, 2), dv.chunk(2, 2)
            for a, qc in enumerate(_chunk_ids(rank, world)):
                for b, kc in enumerate(_chunk_ids(src, world)):
                    how = _pair(qc, kc, causal)
                    if how is None:
                        continue
                    # with the merged o and lse, P is normalised over all keys
                    dq, dkp, dvp, _ = _api.backward(qch[a], kch[b], vch[b], och[a], lch[a], dch[a],
                                                    causal=how, scale=scale)
                    dqch[a].add_(dq.float())
                    dkch[b].add_(dkp.float())
                    dvch[b].add_(dvp.float())
        # every block moves on, the last time back to its owner with its dk, dv
        ring.start(blocks)
        blocks = ring.finish()
    return ([dq.to(q.dtype) for dq, q in zip(dqs, qs)],
            [b[2].to(k.dtype) for b, k in zip(blocks, ks)],
            [b[3].to(v.dtype) for b, v in zip(blocks, vs)])


class _RingAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, ring, causal, scale, n, *tensors):
        qs, ks, vs = tensors[:n], tensors[n:2 * n], tensors[2 * n:]
        outs, lses = _ring_forward(ring, qs, ks, vs, causal, scale)
        ctx.save_for_backward(*qs, *ks, *vs, *outs, *lses)
        ctx.ring, ctx.causal, ctx.scale, ctx.n = ring, causal, scale, n
        return tuple(outs)

    @staticmethod
    def backward(ctx, *douts):
        n = ctx.n
        t = ctx.saved_tensors
        qs, ks, vs, outs, lses = t[:n], t[n:2 * n], t[2 * n:3 * n], t[3 * n:4 * n], t[4 * n:]
        douts = [d if d is not None else torch.zeros_like(o) for d, o in zip(douts, outs)]
        dqs, dks, dvs = _ring_backward(ctx.ring, qs, ks, vs, outs, lses, douts, ctx.causal, ctx.scale)
        return (None, None, None, None, *dqs, *dks, *dvs)


def ring_attention(q, k, v, *, group=None, causal=False, scale=None):
    """Attention of this rank's query shard over the whole sequence, the K/V
    shards passed around the ring (see the module's text). q [B, Hq, T/R, D],
    k, v [B, Hkv, T/R, D]: the load-balanced shards (shard_sequence), T/R even;
    returns o like q, differentiable. With a SimulatedGroup(R): lists of R
    shards in, a list of R outputs out."""
    ring = _Ring(group)
    qs, ks, vs = (list(x) if ring.sim else [x] for x in (q, k, v))
    for name, xs in (("q", qs), ("k", ks), ("v", vs)):
        if len(xs) != len(ring.ranks):
            raise ValueError(f"sfa: {name}: {len(xs)} shards for {len(ring.ranks)} ranks")
        for x in xs:
            if x.dim() != 4 or x.shape[2] % 2:
                raise ValueError(f"sfa: {name} shard has shape {tuple(x.shape)}; must be [B, H, T/R, D] with T/R "
                                 "even (two chunks of the load-balanced layout)")
    outs = _RingAttention.apply(ring, bool(causal), scale, len(qs), *qs, *ks, *vs)
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
