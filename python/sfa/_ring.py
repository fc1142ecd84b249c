"""_ring.py -- the ring of sfa.distributed.ring_attention: which chunk pairs
see each other and through which sfa call (pair_plan), how far the K/V shards
travel each way (schedule), the exchanges (Ring: isend/irecv over a process
group, or R virtual ranks stepped in lockstep), and the forward and backward
passes as one autograd function (RingAttention). distributed.py checks the
arguments and documents the whole; docs/semantics.md states the rules."""
import functools

import torch
import torch.distributed as dist
import torch.nn.functional as F

from . import _api

LAYOUTS = ("balanced", "contiguous")


def chunks_per_rank(layout):
    """How many chunks of the sequence each rank holds in layout."""
    return 2 if layout == "balanced" else 1


def chunk_ids(rank, world, layout):
    """The chunks rank holds, in the order of its shard."""
    return (rank, 2 * world - 1 - rank) if layout == "balanced" else (rank,)


# ------------------------------------------------------------------ communication

class Ring:
    """The ring's exchanges: every rank sends a block to rank + shift and
    receives the one of rank - shift. `ranks` lists the ranks this process
    plays (one for a process group, all for a SimulatedGroup); blocks are
    per-rank tuples of tensors."""

    def __init__(self, group, simulated):
        self.sim = simulated
        if self.sim:
            self.world, self.ranks = group.size, list(range(group.size))
        else:
            if not dist.is_available() or not dist.is_initialized():
                raise RuntimeError("sfa: ring_attention needs an initialized torch.distributed process group "
                                   "(or a SimulatedGroup)")
            self.group = group
            self.world = dist.get_world_size(group)
            self.ranks = [dist.get_rank(group)]

    def _global(self, rank):
        rank %= self.world
        return dist.get_global_rank(self.group, rank) if self.group is not None else rank

    def start(self, sends):
        """Starts the exchanges sends, [(blocks, shift)] (blocks: one tuple
        per played rank), as one batch; returns the handle for finish, None
        when there is nothing to send."""
        if not sends:
            return None
        if self.sim:
            return [[blocks[(i - shift) % self.world] for i in range(self.world)] for blocks, shift in sends]
        rank, ops, recvs = self.ranks[0], [], []
        for (blk,), shift in sends:
            recv = tuple(torch.empty_like(t) for t in blk)
            ops += [dist.P2POp(dist.isend, t.contiguous(), self._global(rank + shift), self.group) for t in blk]
            ops += [dist.P2POp(dist.irecv, t, self._global(rank - shift), self.group) for t in recv]
            recvs.append([recv])
        return dist.batch_isend_irecv(ops), recvs

    def finish(self, handle):
        """The blocks of the exchanges started by start, received: one list
        (one tuple per played rank) per exchange."""
        if handle is None or self.sim:
            return handle or []
        reqs, recvs = handle
        for r in reqs:
            r.wait()
        return recvs


# ------------------------------------------------------------------ the plan

class Spec:
    """What every rank knows alike: world, layout, chunk length, the window
    over the whole sequence (left, right; -1 unbounded; dense causal is
    (-1, 0)), and whether a bias or mask forces window mode."""

    def __init__(self, world, layout, chunk, left, right, masked, scale):
        self.world, self.layout, self.chunk = world, layout, chunk
        self.left, self.right, self.masked, self.scale = left, right, masked, scale


def pair_plan(spec, qc, kc):
    """How query chunk qc sees key chunk kc, or None when it sees nothing:
    (q0, q1, k0, k1, mode, causal, window), the rows [q0, q1) and keys
    [k0, k1) within the chunks that see anything and the sfa call on them.

    Over the whole sequence query i sees key j iff i - left <= j <= i + right.
    sfa aligns a window bottom-right (off = Tk - Tq): on the rows [q0, q1) and
    keys [k0, k1) (here in sequence positions) the same rule is the window
    left' = left - d, right' = right + d with d = q1 - k1, the distance
    between their last row and last key. Both are >= 0 once the
    ranges are cut to what sees anything (the last row sees a key <= the
    last key, and the last key is seen by a row <= the last row). A window
    that covers every key of the block becomes dense (full, or causal for
    right' = 0) unless a bias or mask needs window mode."""
    c, left, right = spec.chunk, spec.left, spec.right
    qs, ks = qc * c, kc * c
    k0 = max(ks, qs - left) if left >= 0 else ks      # keys some row of the chunk sees
    k1 = min(ks + c, qs + c + right) if right >= 0 else ks + c
    if k0 >= k1:
        return None
    q0 = max(qs, k0 - right) if right >= 0 else qs    # rows that see one of those keys
    q1 = min(qs + c, k1 + left) if left >= 0 else qs + c
    d = q1 - k1
    wl = left - d if left >= 0 else -1
    wr = right + d if right >= 0 else -1
    tq, tk = q1 - q0, k1 - k0
    wl = -1 if wl >= tk - 1 else wl                   # the last row sees the first key: unbounded
    wr = -1 if wr >= tq - 1 else wr                   # the first row sees the last key: unbounded
    local = (q0 - qs, q1 - qs, k0 - ks, k1 - ks)
    if spec.masked or wl >= 0 or wr > 0:
        return local + ("window", False, (wl, wr))
    return local + ("dense", wr == 0, (-1, -1))


@functools.lru_cache(maxsize=256)
def schedule(world, layout, chunk, left, right):
    """(nf, nb): the K/V shards travel nf steps forward (rank r computes with
    the shards of ranks r - 1 .. r - nf) and nb steps backward (r + 1 ..
    r + nb), nf + nb <= R - 1 so that no shard is visited twice, covering
    every rank offset some pair needs, with the least traffic (nf + nb), and
    of those the most forward steps. Dense or a window that reaches every
    rank: (R - 1, 0), the plain ring."""
    w, spec = world, Spec(world, layout, chunk, left, right, False, None)
    # the rank offsets d at which some rank's query chunks see a key chunk of rank r - d
    need = [d for d in range(1, w)
            if any(pair_plan(spec, qc, kc) is not None for r in range(w) for qc in chunk_ids(r, w, layout)
                   for kc in chunk_ids((r - d) % w, w, layout))]
    best = None
    for nf in range(w - 1, -1, -1):  # on a tie the most forward steps: the plain ring
        nb = max([w - d for d in need if d > nf], default=0)
        if nf + nb <= w - 1 and (best is None or nf + nb < sum(best)):
            best = (nf, nb)
    return best


def _chunk_rows(x, a, c, lo, hi):
    """Rows [lo, hi) of the a-th chunk (length c) of a shard along dim 2."""
    return x.narrow(2, a * c + lo, hi - lo)


def _bias_block(t, spec, a, qc_rows, kc, kcols):
    """The block of a per-rank bias/mask [.., shard rows | 1, T] for rows
    qc_rows = (lo, hi) of the rank's a-th chunk and keys kcols of chunk kc."""
    if t is None:
        return None
    if t.shape[2] != 1:
        t = _chunk_rows(t, a, spec.chunk, *qc_rows)
    return t[..., kc * spec.chunk + kcols[0]:kc * spec.chunk + kcols[1]]


def _pairs(spec, rank, src):
    """(a, b, kc, plan): rank's a-th query chunk sees src's b-th key chunk,
    chunk kc, as pair_plan says."""
    w, lay = spec.world, spec.layout
    for a, qc in enumerate(chunk_ids(rank, w, lay)):
        for b, kc in enumerate(chunk_ids(src, w, lay)):
            plan = pair_plan(spec, qc, kc)
            if plan is not None:
                yield a, b, kc, plan


# ------------------------------------------------------------------ ring attention

def _ring_steps(ring, spec, blocks, work, relay=None):
    """Runs the schedule: work(i, src, block) for every played rank i and
    every shard src it needs (block: that shard's tuple), the next shards
    travelling meanwhile. relay(step, nf, nb): the backward's hook, called
    after each step's work."""
    nf, nb = schedule(spec.world, spec.layout, spec.chunk, spec.left, spec.right)
    w = ring.world
    fwd = bwd = blocks
    for s in range(max(nf, nb) + 1):
        sends = [(fwd, 1)] if s < nf else []
        sends += [(bwd, -1)] if s < nb else []
        handle = ring.start(sends)  # the next shards travel while these are computed
        for i, rank in enumerate(ring.ranks):
            if s == 0:
                work(i, rank, blocks[i])
            if 0 < s <= nf:
                work(i, (rank - s) % w, fwd[i])
            if 0 < s <= nb:
                work(i, (rank + s) % w, bwd[i])
        if relay is not None:
            relay(s, nf, nb)
        got = ring.finish(handle)
        if s < nf:
            fwd = got.pop(0)
        if s < nb:
            bwd = got.pop(0)


def _ring_forward(ring, spec, qs, ks, vs, biases, masks):
    """Per played rank: (o, lse) of its query shard over the whole sequence."""
    per, c = chunks_per_rank(spec.layout), spec.chunk
    parts = [[[] for _ in range(per)] for _ in ring.ranks]  # [rank][query chunk] -> [(o, lse)]

    def work(i, src, blk):
        k, v = blk
        for a, b, kc, (q0, q1, k0, k1, mode, causal, window) in _pairs(spec, ring.ranks[i], src):
            o, lse = _api.forward(_chunk_rows(qs[i], a, c, q0, q1), _chunk_rows(k, b, c, k0, k1),
                                  _chunk_rows(v, b, c, k0, k1), mode=mode, causal=causal, window=window,
                                  scale=spec.scale, return_lse=True,
                                  bias=_bias_block(biases[i], spec, a, (q0, q1), kc, (k0, k1)),
                                  mask=_bias_block(masks[i], spec, a, (q0, q1), kc, (k0, k1)))
            if q1 - q0 < c:  # rows that see nothing of this chunk: o = 0, lse = -inf
                o = F.pad(o, (0, 0, q0, c - q1))
                lse = F.pad(lse, (q0, c - q1), value=float("-inf"))
            parts[i][a].append((o, lse))

    _ring_steps(ring, spec, [(k, v) for k, v in zip(ks, vs)], work)
    outs, lses = [], []
    for i in range(len(ring.ranks)):
        o2, l2 = [], []
        for a in range(per):
            os_, ls_ = zip(*parts[i][a])  # every row sees its own position: the own chunk is there
            o, lse = (os_[0], ls_[0]) if len(os_) == 1 else _api.merge_attention(list(os_), list(ls_))
            o2.append(o)
            l2.append(lse)
        outs.append(torch.cat(o2, 2))
        lses.append(torch.cat(l2, 2))
    return outs, lses


def _ring_backward(ring, spec, qs, ks, vs, biases, masks, os_, lses, douts, bias_grad):
    """Per played rank: (dq, dk, dv, dbias or None) of its shards."""
    c, w = spec.chunk, ring.world
    f32 = lambda t: torch.zeros(t.shape, dtype=torch.float32, device=t.device)  # noqa: E731
    dqs = [f32(q) for q in qs]
    dbs = [f32(b) if bias_grad and b is not None else None for b in biases]
    acc = {}  # (played rank i, src) -> (dk, dv) float32 computed here for src's shard

    def work(i, src, blk):
        k, v = blk[:2]
        dk, dv = acc.setdefault((i, src), (f32(k), f32(v)))
        for a, b, kc, (q0, q1, k0, k1, mode, causal, window) in _pairs(spec, ring.ranks[i], src):
            rows = lambda t: _chunk_rows(t, a, c, q0, q1)  # noqa: E731
            bias = _bias_block(biases[i], spec, a, (q0, q1), kc, (k0, k1))
            # with the merged o and lse, P is normalised over all keys
            dq, dkp, dvp, db = _api.backward(rows(qs[i]), _chunk_rows(k, b, c, k0, k1), _chunk_rows(v, b, c, k0, k1),
                                             rows(os_[i]), rows(lses[i]), rows(douts[i]), mode=mode, causal=causal,
                                             window=window, scale=spec.scale, bias=bias,
                                             mask=_bias_block(masks[i], spec, a, (q0, q1), kc, (k0, k1)),
                                             bias_grad=dbs[i] is not None)
            rows(dqs[i]).add_(dq.float())
            _chunk_rows(dk, b, c, k0, k1).add_(dkp.float())
            _chunk_rows(dv, b, c, k0, k1).add_(dvp.float())
            if db is not None:
                _bias_block(dbs[i], spec, a, (q0, q1), kc, (k0, k1)).add_(db.float())

    # the partial dk, dv of a travelling shard follow it one step behind: after
    # step s, rank r adds what rank r -/+ 1 summed for that shard at step s - 1
    # and passes the sum on; after its last step the sum goes back to the owner
    state = {"h": None, "kinds": []}  # the exchange in flight; per send: +1/-1 a relay, 0 a return
    returned = [[] for _ in ring.ranks]

    def absorb():
        incoming = {}
        for kind, blocks in zip(state["kinds"], ring.finish(state["h"])):
            if kind == 0:
                for i, blk in enumerate(blocks):
                    returned[i].append(blk)
            else:
                incoming[kind] = blocks
        state["h"], state["kinds"] = None, []
        return incoming

    def relay(s, nf, nb):
        incoming = absorb()
        sends, kinds = [], []
        for sign, n in ((1, nf), (-1, nb)):
            if not 0 < s <= n:
                continue
            mine = [acc.pop((i, (rank - sign * s) % w)) for i, rank in enumerate(ring.ranks)]
            if sign in incoming:
                mine = [(dk + idk, dv + idv) for (dk, dv), (idk, idv) in zip(mine, incoming[sign])]
            sends.append((mine, sign if s < n else -sign * n))
            kinds.append(sign if s < n else 0)
        state["h"], state["kinds"] = ring.start(sends), kinds

    _ring_steps(ring, spec, [(k, v) for k, v in zip(ks, vs)], work, relay)
    absorb()
    owned = []
    for i, rank in enumerate(ring.ranks):
        dk, dv = acc.pop((i, rank))
        for idk, idv in returned[i]:
            dk, dv = dk + idk, dv + idv
        owned.append((dk, dv))
    return ([dq.to(q.dtype) for dq, q in zip(dqs, qs)],
            [dk.to(k.dtype) for (dk, _), k in zip(owned, ks)],
            [dv.to(v.dtype) for (_, dv), v in zip(owned, vs)],
            [db.to(b.dtype) if db is not None else None for db, b in zip(dbs, biases)])


class RingAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, ring, spec, n, has_bias, has_mask, *tensors):
        qs, ks, vs, rest = tensors[:n], tensors[n:2 * n], tensors[2 * n:3 * n], list(tensors[3 * n:])
        biases = rest[:n] if has_bias else [None] * n
        masks = rest[n * has_bias:] if has_mask else [None] * n
        outs, lses = _ring_forward(ring, spec, qs, ks, vs, biases, masks)
        ctx.save_for_backward(*qs, *ks, *vs, *outs, *lses, *tensors[3 * n:])
        ctx.ring, ctx.spec, ctx.n, ctx.has_bias, ctx.has_mask = ring, spec, n, has_bias, has_mask
        return tuple(outs)

    @staticmethod
    def backward(ctx, *douts):
        n = ctx.n
        t = ctx.saved_tensors
        qs, ks, vs, outs, lses, rest = t[:n], t[n:2 * n], t[2 * n:3 * n], t[3 * n:4 * n], t[4 * n:5 * n], t[5 * n:]
        biases = rest[:n] if ctx.has_bias else [None] * n
        masks = rest[n * ctx.has_bias:] if ctx.has_mask else [None] * n
        bias_grad = ctx.has_bias and any(ctx.needs_input_grad[5 + 3 * n:5 + 4 * n])
        douts = [d if d is not None else torch.zeros_like(o) for d, o in zip(douts, outs)]
        dqs, dks, dvs, dbs = _ring_backward(ctx.ring, ctx.spec, qs, ks, vs, biases, masks, outs, lses, douts,
                                            bias_grad)
        grads = [*dqs, *dks, *dvs]
        if ctx.has_bias:
            grads += dbs if bias_grad else [None] * n
        if ctx.has_mask:
            grads += [None] * n
        return (None, None, None, None, None, *grads)


