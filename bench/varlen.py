"""varlen.py -- packed variable-length batches (issue 19): sfa.attention_varlen
against the fixed-length call of the same work, and against its peers on
ragged batches, in one run.

Run on the GPU machine from the repository root, after building libsfa.so:
    python bench/varlen.py [--D 64,128] [--pass fwd,bwd] [--parts equal,ragged]
        [--peers flex,njt] [--H 16] [--tokens 65536] [--seed 0] [--reps 10] [--warm 3] [--rounds 3]
        [--sync-each] [--no-max-seqlen] [--kernels] [--csv out.csv] [--smoke] [--dry-run]

Dense causal attention, bf16, H query = key heads (16), D in 64, 128.
Passes as in compare.py: fwd times the forward of a training step (q, k, v
require grad, each implementation records its autograd graph); bwd times
torch.autograd.grad(o, (q, k, v), dout, retain_graph=True) through one
recorded forward. Every input is random normal (never zeros); every
implementation of a case gets the same values of q, k, v and dout, each in
its own layout (a copy made outside the timing).

1. equal work: B sequences of equal length T, (B, T) in (16, 4096),
   (4, 16384), (2, 32768) (--equal), run as
     fixed    sfa.attention on q, k, v [B, H, T, D] (contiguous), causal=True
     fixed/p  sfa.attention on the [B, H, T, D] view of the packed
              [B*T, H, D] tensors (same call, the packed memory layout)
     varlen   sfa.attention_varlen on the packed [B*T, H, D] tensors with
              cu_seqlens = 0, T, 2T, ..., BT and max_seqlen_k = T (the
              longest sequence; --no-max-seqlen: not given, as for unknown
              lengths)
   "varlen/fixed" = varlen ms / fixed ms (issue 19's target: <= 1.05). The
   outputs (fwd) or gradients (bwd) of varlen and fixed are compared first:
   max abs difference printed. --kernels: also each GPU kernel's mean time
   per call of fixed and varlen (torch.profiler, --reps calls), to see which
   kernel a difference is in.
2. ragged batches of --tokens (65536) tokens in total:
     mix      a seeded random mix (--seed) of lengths in --mix-range
              (512..16384), the last one filling the batch to --tokens
              (a remainder below the range's low end joins the one before)
     uneven   one sequence of 32768 and 63 of 512 (--uneven)
   run by
     sfa      sfa.attention_varlen on the packed [total, H, D] tensors
              (max_seqlen_k as above)
     sfa njt  sfa.attention on the same values as torch.jagged nested
              tensors [B, H, j, D] (the SDPA-style entry, its wrapping included)
     flex     FlexAttention (torch.compile(flex_attention, dynamic=False),
              compiled once per shape) on [1, H, total, D] with a document
              mask: create_block_mask over the packed sequence with document
              ids, causal within each document, built outside the timing
     njt      torch's SDPA on the same nested jagged tensors, is_causal=True,
              under sdpa_kernel(FLASH_ATTENTION) (torch's jagged SDPA passes
              the offsets to the flash varlen kernel)
   TF/s count the real work: causal pairs summed per sequence, L(L+1)/2 * H
   for a sequence of L, times 4 * D (fwd) or 10 * D (bwd). "sfa x" = peer
   ms / sfa ms (> 1: sfa is faster; issue 19's target against flex: >= 1.2).
   Before a peer is timed, its output (fwd) or dq, dk, dv (bwd) is compared
   with sfa's: max abs error and relative L2 error printed; relative error
   above 2e-2 (fwd) / 3e-2 (bwd) is a FAIL (exit status 1) and the peer is
   not timed. A peer that cannot run a case prints why instead of a number.
   For the uneven batch also: sfa varlen against the sum of fixed-length
   sfa.attention calls of its sequences, each length as one batched call
   ([1, H, 32768, D] + [63, H, 512, D], "grouped") and each sequence alone
   ([1, H, L, D] timed once per length, times its count, "one by one"):
   does the packed call cost its real work?

Times are medians of --reps (10) runs between CUDA events after --warm (3)
warm-ups, queued back to back and read after one synchronize (cases.bench;
--sync-each: a synchronize after every run, adding each call's host time).
The implementations of a case are timed in --rounds (3) interleaved rounds
(cases.rounds_bench: fixed, fixed/p, varlen, fixed, ...): a figure is the
median of its rounds, and a ratio (varlen/fixed, peer/sfa) the median of the
rounds' ratios, so that a drift of the clock during a case (the same call
measured 25.2 and 29.5 ms minutes apart on an H100) does not land on one
implementation alone. The progress lines give each figure's range over the
rounds.
The device name is printed first, a progress line per case, the tables at
the end (also after a SIGTERM, for the cases done so far).

--smoke: tiny sizes (H 2, equal 2x64 and 1x128, ragged 384 tokens of 16..128,
uneven 128 + 15x16, 3 reps, 2 rounds) on whatever device there is: on a machine without
CUDA, sfa runs on its float64 CPU reference (tests/python/refbackend.py),
FlexAttention eagerly (forward only: it has no CPU backward) and the jagged
SDPA reports that it cannot run; the times are host wall times, only a check
that every path of the script runs.
"""
import argparse
import contextlib
import csv
import gc
import os
import random
import signal
import sys
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from cases import bench, block_mask_fn, kernel_times, finish, median, rel_err, round_ratios, rounds_bench  # noqa: E402
from compare import _raise_recompile_limit, flex as flex_compiled, ints, names, short  # noqa: E402
import sfa  # noqa: E402  (cases puts python/ on the path)

PASSES = ("fwd", "bwd")
PARTS = ("equal", "ragged")
PEERS = ("flex", "njt")
TOL = {"fwd": 2e-2, "bwd": 3e-2}
FLOPS_PER_PAIR = {"fwd": 4, "bwd": 10}
SMOKE = dict(H=2, equal="2x64,1x128", tokens=384, mix_range="16,128", uneven="128,15x16", reps=3, warm=1,
             rounds=2)


class Layout:
    """How an implementation holds [total, H, D] packed rows: packed itself,
    or [B, H, T, D] (B sequences of T)."""

    def __init__(self, B=None, T=None):
        self.B, self.T = B, T

    def to_packed(self, x):
        if self.B is None:
            return x
        return x.transpose(1, 2).reshape(self.B * self.T, x.shape[1], x.shape[3])

    def from_packed(self, p):
        if self.B is None:
            return p.contiguous()
        return p.view(self.B, self.T, p.shape[1], p.shape[2]).transpose(1, 2).contiguous()


PACKED = Layout()


class Impl:
    """One implementation of a case: fn(*leaves) -> o; leaves in leaf_layout,
    o in out_layout."""

    def __init__(self, name, fn, leaves, leaf_layout, out_layout):
        self.name, self.fn, self.leaves = name, fn, leaves
        self.leaf_layout, self.out_layout = leaf_layout, out_layout


def leaves_of(packed, layout):
    return [layout.from_packed(t).detach().requires_grad_(True) for t in packed]


def pairs_of(lengths, H):
    return H * sum(L * (L + 1) // 2 for L in lengths)


def cu_of(lengths, device):
    return torch.tensor([0] + lengths, device=device).cumsum(0)


def jagged(x, off, lengths):
    """Packed rows [total, H, D] as a jagged [B, H, j, D] (a view)."""
    return torch.nested.nested_tensor_from_jagged(x, off, min_seqlen=min(lengths),
                                                  max_seqlen=max(lengths)).transpose(1, 2)


def parse_shapes(s):
    """'16x4096,4x16384' -> [(16, 4096), (4, 16384)]."""
    out = []
    for part in s.split(","):
        if part.strip():
            b, t = part.lower().split("x")
            out.append((int(b), int(t)))
    return out


def parse_uneven(s):
    """'32768,63x512' -> [32768] + [512] * 63."""
    out = []
    for part in s.split(","):
        part = part.strip().lower()
        if "x" in part:
            n, L = part.split("x")
            out += [int(L)] * int(n)
        elif part:
            out.append(int(part))
    return out


def mix_lengths(tokens, lo, hi, seed):
    """A seeded random mix of lengths in [lo, hi] summing to tokens."""
    rng = random.Random(seed)
    out = []
    while sum(out) < tokens:
        out.append(min(rng.randint(lo, hi), tokens - sum(out)))
    if len(out) > 1 and out[-1] < lo:
        last = out.pop()
        out[-1] += last
    return out


class Run:
    def __init__(self, a, device, flex):
        self.a, self.device, self.flex = a, device, flex
        self.t0 = time.perf_counter()
        self.equal_rows, self.ragged_rows = [], []
        self.failures = []
        self.n = 0

    def fail(self, what):
        self.failures.append(what)
        print(f"FAIL: {what}", flush=True)

    def sync(self):
        if self.device == "cuda":
            torch.cuda.synchronize()

    def rand(self, *shape):
        return torch.randn(*shape, device=self.device, dtype=torch.bfloat16)

    def hint(self, lengths):
        """attention_varlen's max_seqlen_k: the longest sequence, as a caller that
        knows its batch passes it (flash-attn's varlen calls require it), unless
        --no-max-seqlen."""
        return {} if self.a.no_max_seqlen else dict(max_seqlen_k=max(lengths))

    def measure(self, impl, ps, dout):
        """(the packed output (fwd) or packed (dq, dk, dv) (bwd) of a first
        untimed call, the call to time, seconds of that first call)."""
        t1 = time.perf_counter()
        with torch.enable_grad():
            if ps == "fwd":
                res = impl.out_layout.to_packed(impl.fn(*impl.leaves).detach())
                run = lambda: impl.fn(*impl.leaves)  # noqa: E731
            else:
                o = impl.fn(*impl.leaves)
                d = impl.out_layout.from_packed(dout)
                run = lambda: torch.autograd.grad(o, impl.leaves, d, retain_graph=True)  # noqa: E731
                res = tuple(impl.leaf_layout.to_packed(g) for g in run())
            self.sync()
            first = time.perf_counter() - t1
        return res, run, first

    def time_rounds(self, runs, row, base):
        """Times runs [(name, call)] in interleaved rounds into row: the
        median ms of each name, its rounds (name_rounds), and for every other
        name the median of its per-round ratio to base (name_x). Returns
        progress cells."""
        a = self.a
        with torch.enable_grad():
            got = rounds_bench(runs, rounds=a.rounds, warm=a.warm, reps=a.reps, sync_each=a.sync_each)
        for name, ts in got.items():
            row[name], row[f"{name}_rounds"] = median(ts), ts
        if base in got:
            for name, ts in got.items():
                if name != base:
                    row[f"{name}_x"] = median(round_ratios(ts, got[base]))

        def cell(name):
            ts = got[name]
            spread = f" ({min(ts):.3f}-{max(ts):.3f})" if len(ts) > 1 else ""
            return f"{row[name]:.3f} ms{spread}"
        return {name: cell(name) for name in got}

    def progress(self, total, what, cells, firsts):
        self.n += 1
        print(f"[{self.n:>2}/{total} {time.perf_counter() - self.t0:6.1f} s] {what}: " + " | ".join(cells)
              + " [first calls: " + ", ".join(f"{k} {v:.1f} s" for k, v in firsts.items()) + "]", flush=True)

    # -------------------------------------------------------------- 1. equal work

    def equal_case(self, B, T, D, ps, total):
        a, H = self.a, self.a.H
        torch.manual_seed(a.seed)
        packed = [self.rand(B * T, H, D) for _ in range(3)]
        dout = self.rand(B * T, H, D)
        cu = torch.arange(0, (B + 1) * T, T, device=self.device, dtype=torch.int32)
        bhtd = Layout(B, T)

        def fixed_view(q, k, v):  # [B, H, T, D] views of the packed rows
            return sfa.attention(*(x.view(B, T, H, D).transpose(1, 2) for x in (q, k, v)), causal=True)
        impls = [
            Impl("fixed", lambda q, k, v: sfa.attention(q, k, v, causal=True), leaves_of(packed, bhtd), bhtd, bhtd),
            Impl("fixed/p", fixed_view, leaves_of(packed, PACKED), PACKED, bhtd),
            Impl("varlen", lambda q, k, v: sfa.attention_varlen(q, k, v, cu, cu, causal=True, **self.hint([T] * B)),
                 leaves_of(packed, PACKED), PACKED, PACKED),
        ]
        row = dict(B=B, T=T, D=D, ps=ps, pairs=pairs_of([T] * B, H))
        res, firsts, runs = {}, {}, []
        for impl in impls:
            try:
                res[impl.name], run, firsts[impl.name] = self.measure(impl, ps, dout)
                runs.append((impl.name, run))
            except Exception as e:  # noqa: BLE001
                self.fail(f"equal B={B} T={T} D={D} {ps}: sfa {impl.name} failed: {short(e)}")
                row[impl.name] = None
        if "fixed" in res and "varlen" in res:
            row["maxabs"] = max((x.float() - y.float()).abs().max().item()
                                for x, y in zip(_tuple(res["varlen"]), _tuple(res["fixed"])))
        del res
        got = self.time_rounds(runs, row, "fixed")
        if a.kernels and self.device == "cuda":
            with torch.enable_grad():
                for name, run in runs:
                    if name != "fixed/p":
                        for us, key in kernel_times(run, a.reps):
                            print(f"  {name:6s} {us / 1000.0:8.3f} ms  {key[:100]}", flush=True)
        del runs
        self.equal_rows.append(row)
        cells = [f"{n} {got[n]}" if row.get(n) else f"{n} error" for n in ("fixed", "fixed/p", "varlen")]
        if row.get("varlen_x"):
            rs = round_ratios(row["varlen_rounds"], row["fixed_rounds"])
            spread = f" ({min(rs):.3f}-{max(rs):.3f})" if len(rs) > 1 else ""
            cells.append(f"varlen/fixed {row['varlen_x']:.3f}{spread}, max abs diff {row['maxabs']:.2e}")
        self.progress(total, f"equal B={B} T={T} D={D} {ps}", cells, firsts)

    # -------------------------------------------------------------- 2. ragged batches

    def ragged_case(self, batch, lengths, D, ps, peers, total):
        a, H, dev = self.a, self.a.H, self.device
        torch.manual_seed(a.seed)
        tot = sum(lengths)
        packed = [self.rand(tot, H, D) for _ in range(3)]
        dout = self.rand(tot, H, D)
        cu = cu_of(lengths, dev).to(torch.int32)
        off = cu.long()
        flat = Layout(1, tot)
        impls = [
            Impl("sfa", lambda q, k, v: sfa.attention_varlen(q, k, v, cu, cu, causal=True, **self.hint(lengths)),
                 leaves_of(packed, PACKED), PACKED, PACKED),
            Impl("sfa njt", lambda q, k, v: sfa.attention(*(jagged(x, off, lengths) for x in (q, k, v)),
                                                          causal=True).transpose(1, 2).values(),
                 leaves_of(packed, PACKED), PACKED, PACKED),
        ]
        why = {}
        if "flex" in peers:
            t1 = time.perf_counter()
            try:
                doc = torch.repeat_interleave(torch.arange(len(lengths), device=dev, dtype=torch.int32),
                                              torch.tensor(lengths, device=dev))

                def document_causal(b, h, i, j):
                    return (doc[i] == doc[j]) & (i >= j)
                make_bm = block_mask_fn() if dev == "cuda" else create_block_mask
                bm = make_bm(document_causal, None, None, tot, tot, device=dev)
                if dev == "cuda":
                    fn = lambda q, k, v: self.flex(q, k, v, block_mask=bm)  # noqa: E731
                elif ps == "fwd":  # eager FlexAttention on the CPU has no backward: no graph is recorded
                    fn = lambda q, k, v: self.flex(q.detach(), k.detach(), v.detach(), block_mask=bm)  # noqa: E731
                else:
                    raise RuntimeError("FlexAttention has no backward on the CPU")
                impls.append(Impl("flex", fn, leaves_of(packed, flat), flat, flat))
            except Exception as e:  # noqa: BLE001
                why["flex"] = short(e)
                print(f"  flex cannot run {batch} D={D} {ps}: {why['flex']}", flush=True)
            self.mask_s = getattr(self, "mask_s", 0.0) + time.perf_counter() - t1
        if "njt" in peers:
            def njt_sdpa(q, k, v):
                with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                    o = F.scaled_dot_product_attention(*(jagged(x, off, lengths) for x in (q, k, v)), is_causal=True)
                return o.transpose(1, 2).values()
            impls.append(Impl("njt", njt_sdpa, leaves_of(packed, PACKED), PACKED, PACKED))
        row = dict(batch=batch, D=D, ps=ps, seqs=len(lengths), tokens=tot, pairs=pairs_of(lengths, H), why=why)
        firsts, ref, runs = {}, None, []
        name = f"{batch} D={D} {ps}"
        for impl in impls:
            try:
                got, run, firsts[impl.name] = self.measure(impl, ps, dout) if impl.name == "sfa" else \
                    self.check_then_prepare(impl, ps, dout, ref, row, name)
            except _Mismatch:
                continue
            except Exception as e:  # noqa: BLE001
                if impl.name.startswith("sfa"):
                    self.fail(f"{name}: {impl.name} failed: {short(e)}")
                    if impl.name == "sfa":
                        break
                else:
                    why[impl.name] = short(e)
                    print(f"  {impl.name} cannot run {name}: {short(e)}", flush=True)
                continue
            runs.append((impl.name, run))
            if impl.name == "sfa":
                ref = got
            del got
            gc.collect()
        del ref
        got = self.time_rounds(runs, row, "sfa") if runs else {}
        del runs
        if batch == "uneven" and row.get("sfa"):
            try:
                self.fixed_sums(lengths, D, ps, row)
            except Exception as e:  # noqa: BLE001
                self.fail(f"{name}: the fixed-length calls of its sequences failed: {short(e)}")
        self.ragged_rows.append(row)
        cells = []
        for impl in ("sfa", "sfa njt", "flex", "njt"):
            if row.get(impl):
                x = f" ({row[f'{impl}_x']:.2f}x)" if row.get(f"{impl}_x") else ""
                cells.append(f"{impl} {got[impl]}{x}")
            elif impl in why or f"{impl}_err" in row:
                cells.append(f"{impl} {'MISMATCH' if f'{impl}_err' in row else 'n/a'}")
        if row.get("grouped"):
            cells.append(f"fixed grouped {row['grouped']:.3f} ms, one by one {row['one_by_one']:.3f} ms")
        self.progress(total, name, cells, firsts)

    def check_then_prepare(self, impl, ps, dout, ref, row, name):
        """A peer's first call checked against sfa's (max abs and relative
        error printed); (None, the call to time, seconds of the first call),
        _Mismatch when it differs."""
        t1 = time.perf_counter()
        with torch.enable_grad():
            if ps == "fwd":
                got = impl.out_layout.to_packed(impl.fn(*impl.leaves).detach())
            else:
                o = impl.fn(*impl.leaves)
                got = tuple(impl.leaf_layout.to_packed(g) for g in
                            torch.autograd.grad(o, impl.leaves, impl.out_layout.from_packed(dout)))
                del o
        self.sync()
        first = time.perf_counter() - t1
        pairs = list(zip(_tuple(ref), _tuple(got)))
        err = max(rel_err(y, x) for x, y in pairs)
        mx = max((x.float() - y.float()).abs().max().item() for x, y in pairs)
        row[f"{impl.name}_maxabs"], row[f"{impl.name}_rel"] = mx, err
        print(f"  check {name}: {impl.name} against sfa: max abs err {mx:.3e}, rel L2 err {err:.2e}", flush=True)
        if not err < TOL[ps]:
            row[f"{impl.name}_err"] = err
            self.fail(f"{name}: {impl.name} differs from sfa: rel err {err:.3e} (limit {TOL[ps]:g})")
            raise _Mismatch
        del got
        _, run, _ = self.measure(impl, ps, dout)
        return None, run, first

    def fixed_sums(self, lengths, D, ps, row):
        """sfa.attention on fixed-length batches of the same sequences: each
        length as one [count, H, L, D] call (grouped) and one [1, H, L, D]
        call times its count (one by one)."""
        H = self.a.H
        counts = {}
        for L in lengths:
            counts[L] = counts.get(L, 0) + 1

        def fixed_ms(B, L):
            lay = Layout(B, L)
            impl = Impl("fixed", lambda q, k, v: sfa.attention(q, k, v, causal=True),
                        leaves_of([self.rand(B * L, H, D) for _ in range(3)], lay), lay, lay)
            run = self.measure(impl, ps, self.rand(B * L, H, D))[1]
            with torch.enable_grad():
                return bench(run, warm=self.a.warm, reps=self.a.reps, sync_each=self.a.sync_each)
        grouped = one = 0.0
        for L, c in sorted(counts.items()):
            ms = fixed_ms(c, L)
            grouped += ms
            one += ms if c == 1 else c * fixed_ms(1, L)
        row["grouped"], row["one_by_one"] = grouped, one
        row["fixed_parts"] = " + ".join(f"{c}x{L}" for L, c in sorted(counts.items(), reverse=True))


class _Mismatch(Exception):
    pass


def _tuple(x):
    return x if isinstance(x, tuple) else (x,)


def equal_table(rows):
    head = (f"{'B':>3}{'T':>7}{'D':>5} {'pass':<5}|{'fixed ms':>10}{'TF/s':>6} |{'fixed/p ms':>11} |"
            f"{'varlen ms':>10}{'TF/s':>6} |{'varlen/fixed':>13} |{'max abs diff':>13}")
    lines = [head, "-" * len(head)]
    for r in rows:
        def c(n, w):
            return f"{r[n]:>{w}.3f}" if r.get(n) else f"{'error':>{w}}"
        D = r["D"]
        line = f"{r['B']:>3}{r['T']:>7}{D:>5} {r['ps']:<5}|{c('fixed', 10)}"
        line += f"{FLOPS_PER_PAIR[r['ps']] * D * r['pairs'] / r['fixed'] / 1e9:>6.0f}" if r.get("fixed") else " " * 6
        line += f" |{c('fixed/p', 11)} |{c('varlen', 10)}"
        line += f"{FLOPS_PER_PAIR[r['ps']] * D * r['pairs'] / r['varlen'] / 1e9:>6.0f}" if r.get("varlen") else " " * 6
        ok = r.get("fixed") and r.get("varlen")
        line += f" |{r['varlen_x']:>13.3f}" if ok else f" |{'-':>13}"
        line += f" |{r['maxabs']:>13.2e}" if "maxabs" in r else f" |{'-':>13}"
        lines.append(line)
    return "\n".join(lines)


def ragged_table(rows):
    head = (f"{'batch':<7}{'D':>4} {'pass':<5}{'seqs':>5}{'tokens':>7} |{'sfa ms':>9}{'TF/s':>6} |"
            f"{'sfa njt ms':>11} |{'flex ms':>9}{'TF/s':>6}{'sfa x':>7} |{'njt ms':>9}{'TF/s':>6}{'sfa x':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        f = FLOPS_PER_PAIR[r["ps"]] * r["D"] * r["pairs"]
        line = f"{r['batch']:<7}{r['D']:>4} {r['ps']:<5}{r['seqs']:>5}{r['tokens']:>7} |"
        line += f"{r['sfa']:>9.3f}{f / r['sfa'] / 1e9:>6.0f} |" if r.get("sfa") else f"{'error':>15} |"
        line += f"{r['sfa njt']:>11.3f} |" if r.get("sfa njt") else f"{'error':>11} |"
        for p, end in (("flex", " |"), ("njt", "")):
            if r.get(p):
                x = f"{r[f'{p}_x']:.2f}x" if r.get(f"{p}_x") else "-"
                line += f"{r[p]:>9.3f}{f / r[p] / 1e9:>6.0f}{x:>7}{end}"
            else:
                line += f"{'MISMATCH' if f'{p}_err' in r else ('n/a' if p in r['why'] else '-'):>22}{end}"
        lines.append(line)
    notes = []
    for r in rows:
        for p in ("flex", "njt"):
            if p in r["why"]:
                notes.append(f"  {p} cannot run {r['batch']} D={r['D']} {r['ps']}: {r['why'][p]}")
            if f"{p}_maxabs" in r:
                notes.append(f"  check {r['batch']} D={r['D']} {r['ps']}: {p} vs sfa max abs err "
                             f"{r[f'{p}_maxabs']:.3e}, rel L2 {r[f'{p}_rel']:.2e}")
        if r.get("grouped"):
            notes.append(f"  uneven D={r['D']} {r['ps']}: sfa varlen {r['sfa']:.3f} ms; fixed-length calls of its "
                         f"sequences ({r['fixed_parts']}): grouped {r['grouped']:.3f} ms (varlen / grouped "
                         f"{r['sfa'] / r['grouped']:.3f}), one by one {r['one_by_one']:.3f} ms (varlen / one by one "
                         f"{r['sfa'] / r['one_by_one']:.3f})")
    return "\n".join(lines + notes)


def write_csv(path, dev_name, run):
    """One line per case of either section; ms columns per implementation."""
    rows = [dict(section="equal", device=dev_name, **r) for r in run.equal_rows]
    rows += [dict(section="ragged", device=dev_name, **{k: v for k, v in r.items() if k != "why"},
                  why="; ".join(f"{p}: {w}" for p, w in r["why"].items())) for r in run.ragged_rows]
    keys = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--D", default="64,128", help="head dims (comma list)")
    ap.add_argument("--pass", dest="passes", default="fwd,bwd", help="passes: fwd, bwd")
    ap.add_argument("--parts", default="equal,ragged", help="sections: equal, ragged")
    ap.add_argument("--peers", default="flex,njt", help="peers of the ragged batches: flex, njt")
    ap.add_argument("--H", type=int, default=16, help="heads (q, k and v alike)")
    ap.add_argument("--equal", default="16x4096,4x16384,2x32768", help="BxT shapes of the equal-work section")
    ap.add_argument("--tokens", type=int, default=65536, help="tokens of the random mix")
    ap.add_argument("--mix-range", default="512,16384", help="lo,hi: lengths of the random mix")
    ap.add_argument("--uneven", default="32768,63x512", help="lengths of the uneven batch (L or NxL, comma list)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the lengths and the inputs")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--warm", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds per case (median of them)")
    ap.add_argument("--sync-each", action="store_true", help="synchronize after every timed run")
    ap.add_argument("--kernels", action="store_true",
                    help="equal work: each GPU kernel's mean time per call (torch.profiler)")
    ap.add_argument("--no-max-seqlen", action="store_true",
                    help="call attention_varlen without max_seqlen_k (the tile for unknown lengths)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on whatever device there is (see above)")
    ap.add_argument("--dry-run", action="store_true", help="print the case list and exit")
    ap.add_argument("--csv", default="", help="write every row (both sections) as CSV")
    a = ap.parse_args()
    if a.smoke:
        for k, v in SMOKE.items():
            if getattr(a, k) == ap.get_default(k):
                setattr(a, k, v)
    passes, parts = names(a.passes, PASSES, "pass"), names(a.parts, PARTS, "parts")
    peers = names(a.peers, PEERS, "peers")
    Ds = ints(a.D)
    shapes = parse_shapes(a.equal)
    lo, hi = (int(x) for x in a.mix_range.split(","))
    batches = [("mix", mix_lengths(a.tokens, lo, hi, a.seed)), ("uneven", parse_uneven(a.uneven))]
    total = (len(shapes) if "equal" in parts else 0) * len(Ds) * len(passes) \
        + (len(batches) if "ragged" in parts else 0) * len(Ds) * len(passes)
    ctx = contextlib.nullcontext()
    if torch.cuda.is_available():
        device, dev_name, flex = "cuda", torch.cuda.get_device_name(), flex_compiled
    elif a.smoke or a.dry_run:
        sys.path.insert(0, os.path.join(HERE, "..", "tests", "python"))
        import refbackend
        device, flex = "cpu", flex_attention
        dev_name = "CPU (no CUDA): sfa on its float64 reference backend, FlexAttention eager; host wall times"
        ctx = refbackend.cpu(sfa)
    else:
        raise SystemExit("varlen.py needs a CUDA GPU (--smoke runs tiny sizes on the CPU reference backend)")
    print(f"{dev_name}, torch {torch.__version__}, sfa {sfa.__version__}; dense causal bf16, H={a.H}, D {Ds}, "
          f"{'/'.join(passes)}; {total} cases; median of {a.reps} after {a.warm} warm-ups, "
          f"{a.rounds} interleaved rounds", flush=True)
    for name, ls in batches:
        print(f"  {name} batch: {len(ls)} sequences, {sum(ls)} tokens: {ls if len(ls) <= 16 else ls[:8] + ['...']}")
    if a.dry_run:
        for B, T in (shapes if "equal" in parts else []):
            for D in Ds:
                print(f"  equal B={B} T={T} D={D}: {', '.join(passes)}")
        for name, _ in (batches if "ragged" in parts else []):
            for D in Ds:
                print(f"  {name} D={D}: {', '.join(passes)}: sfa, sfa njt, {', '.join(peers)}")
        return
    _raise_recompile_limit()
    run = Run(a, device, flex)

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    cut = False
    try:
        with ctx:
            if "equal" in parts:
                for B, T in shapes:
                    for D in Ds:
                        for ps in passes:
                            run.equal_case(B, T, D, ps, total)
                            gc.collect()
                            if device == "cuda":
                                torch.cuda.empty_cache()
            if "ragged" in parts:
                for name, ls in batches:
                    for D in Ds:
                        for ps in passes:
                            run.ragged_case(name, ls, D, ps, peers, total)
                            gc.collect()
                            if device == "cuda":
                                torch.cuda.empty_cache()
    except KeyboardInterrupt:
        cut = True
        print(f"\nstopped by a signal after {run.n} of {total} cases", flush=True)
    how = "a synchronize after each" if a.sync_each else "queued back to back"
    print(f"\n{dev_name}: dense causal, bf16, H={a.H}; ms = median of {a.rounds} rounds of medians of {a.reps} ({how}); ratios the medians of the rounds' ratios; TF/s on the causal pairs "
          "of each sequence (fwd 4*D*pairs, bwd 10*D*pairs)")
    if run.equal_rows:
        print("\n1. equal work: B sequences of T as one fixed-length call ([B, H, T, D]; fixed/p: the same call on "
              "the packed layout) and as sfa.attention_varlen; target varlen/fixed <= 1.05")
        print(equal_table(run.equal_rows))
    if run.ragged_rows:
        print(f"\n2. ragged batches (mix: {len(batches[0][1])} sequences of {lo}..{hi}, seed {a.seed}; uneven: "
              f"{len(batches[1][1])} sequences, the longest {max(batches[1][1])}): sfa = attention_varlen, sfa njt = "
              "sfa.attention on jagged tensors, flex = FlexAttention with a document mask, njt = torch SDPA on jagged "
              "tensors (flash); sfa x = peer ms / sfa ms, target against flex >= 1.2")
        print(ragged_table(run.ragged_rows))
    print(f"{'cut short: ' if cut else ''}total {time.perf_counter() - run.t0:.0f} s"
          + (f", block masks {run.mask_s:.1f} s" if hasattr(run, "mask_s") else ""))
    if a.csv:
        write_csv(a.csv, dev_name, run)
        print(f"wrote {a.csv}")
    finish(cut, run.failures)


if __name__ == "__main__":
    main()
