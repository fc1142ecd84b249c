"""compare.py -- the side-by-side benchmark (issue 6): sfa against its peers on
identical random inputs, every mode x pass x sequence length x head dim.

Run on the GPU machine from the repository root, after building libsfa.so:
    python bench/compare.py [--quick] [--only dense,hash,qk_drop,window] [--pass fwd,bwd]
        [--T 4096,8192] [--D 64,128] [--d256 dense,window] [--peers flash,cudnn,flex]
        [--reps 10] [--warm 2] [--rounds 3] [--step-timeout 300] [--csv out.csv] [--plot out.png]

Modes (bf16, H=16, B*T=65536 so B = 65536 // T; T in 4096..32768, D in 64, 128, and
D 256 for the modes of --d256, dense and window by default):
  dense    causal                        peers: SDPA flash, SDPA cuDNN, FlexAttention
  hash     16 buckets, sorted layout     peer:  FlexAttention
  qk_drop  30% of q and k rows dropped   peer:  FlexAttention
  window   W=1024 causal                 peer:  FlexAttention
FlexAttention is torch.compile(flex_attention, dynamic=False) with the block
mask of the same mask (built once per problem; once per T for dense and
window, whose mask is the same for every batch and head). SDPA has no sparse
masks, so it is a peer of the dense rows only: the dense causal rows of the
same T and D give its cost of the full causal problem for reference.

Passes: fwd times the forward of a training step: q, k, v require grad and
each implementation records its autograd graph (and saves what its backward
needs), so FlexAttention compiles one graph per problem for both passes
(an inference graph as well would double its compiles, most of a cold run);
bwd times torch.autograd.grad(o, (q, k, v), dout, retain_graph=True) through
each implementation's forward graph (for sfa: sfa.attention's autograd Function,
i.e. the sfa_backward call with its workspace; for the peers: their backward
kernels). Before a peer is timed, sfa's output (fwd) or dq, dk, dv (bwd) is
compared with that peer's: relative L2 error over the rows that take part must
be < 2e-2 (fwd) / 3e-2 (bwd); a mismatch or an sfa error is printed at once as
FAIL, shown in the table, and makes the script exit 1 at the end. A peer that
cannot run a case (an exception, e.g. out of memory) is shown as n/a, as is
one whose first call (compile and check) or block mask takes longer than
--step-timeout seconds (300), so that one stuck compile does not stop the grid.

hash end to end (issue 3's shape, T = --e2e-T, default 16384; inference,
under torch.no_grad()): from unsorted q, k, v and bucket ids to the output in
the original order. sfa: sfa.hash_attention (sfa_hash_prepare, the kernel,
sfa_hash_unsort); FlexAttention: torch argsort + gather, flex_attention with
the block mask (built outside the timing), torch scatter.

Times are medians of --reps (10) runs between CUDA events after --warm (2)
warm-ups; the runs are queued back to back and read after one synchronize,
so that host time (Python, autograd, launches) overlaps the previous run's
GPU work as in a training loop (--sync-each: a synchronize after every run,
which counts each call's host time too; sessions 6-9 timed that way). sfa and
the peers of a case are timed in --rounds (3) interleaved rounds (sfa, peer,
sfa, peer, ...; cases.rounds_bench): a time is the median of its rounds and
"sfa x" the median of the rounds' ratios, so that a drift of the GPU clock
during a case lands on every implementation alike (session 20 saw one call
take 25.2 and 29.5 ms minutes apart). Effective TF/s count only the allowed (query, key) pairs:
fwd 4 * D * pairs, bwd 10 * D * pairs, over the time. "sfa x" in the table is
peer ms / sfa ms (> 1: sfa is faster). A progress line per case shows the
elapsed time and how long each implementation's first (untimed) call took
(with FlexAttention's Inductor compile, one graph per problem: most of a
cold run). Target: the full grid in < 8 minutes on an H100 (--quick: T in
4096, 16384).
"""
import argparse
import gc
import os
import signal
import sys
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import flex_attention

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cases import (dense_problem, finish, flex_block_mask, flex_hash_end_to_end,  # noqa: E402
                   hash_problem, median, qk_drop_problem, rel_err, round_ratios, rounds_bench,
                   window_problem)
import sfa  # noqa: E402  (cases puts python/ on the path)

MODES = ("dense", "hash", "qk_drop", "window")
PASSES = ("fwd", "bwd")
LABEL = {"dense": "dense causal", "hash": "hash 16 buckets", "qk_drop": "qk_drop 30%",
         "window": "window W=1024 causal", "hash_e2e": "hash end to end"}
ROW_MODES = MODES + ("hash_e2e",)  # table and plot order
MAKE = {
    "dense": lambda B, H, T, D, dt: dense_problem(B, H, T, D, dt, causal=True),
    "hash": lambda B, H, T, D, dt: hash_problem(B, H, T, D, 16, dt),
    "qk_drop": lambda B, H, T, D, dt: qk_drop_problem(B, H, T, D, 0.3, dt),
    "window": lambda B, H, T, D, dt: window_problem(B, H, T, D, 1024, dt),
}
PEERS = {"dense": ("flash", "cudnn", "flex"), "hash": ("flex",), "qk_drop": ("flex",), "window": ("flex",)}
IMPLS = ("sfa", "flash", "cudnn", "flex")
TOL = {"fwd": 2e-2, "bwd": 3e-2}
FLOPS_PER_PAIR = {"fwd": 4, "bwd": 10}


def _raise_recompile_limit():
    """Every (T, D, mask, grad mode) is a new FlexAttention graph: lift
    Dynamo's per-function recompile limit (8 by default) so that none falls
    back to eager (which would materialize the T x T scores)."""
    cfg = torch._dynamo.config
    for name, value in (("recompile_limit", 1024), ("cache_size_limit", 1024),
                        ("accumulated_recompile_limit", 8192), ("accumulated_cache_size_limit", 8192)):
        if hasattr(cfg, name):
            try:
                setattr(cfg, name, value)
            except Exception:  # noqa: BLE001  (a deprecated alias may refuse)
                pass


import torch._functorch.config  # noqa: E402
torch._functorch.config.donated_buffer = False  # backward is re-run on one graph when timing
flex = torch.compile(flex_attention, dynamic=False)


def sdpa(backend):
    def fn(q, k, v):
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return fn


class StepTimeout(Exception):
    """A peer's first call (compile and check) or a block mask ran past
    --step-timeout: that peer is n/a for the case, and the grid goes on."""


class step_limit:
    """with step_limit(seconds): raises StepTimeout in the block after that
    many seconds (SIGALRM; 0: no limit). Python code (Dynamo, Inductor and
    Triton compiles) sees it at once; a call blocked inside a CUDA
    synchronize sees it when that returns."""

    def __init__(self, seconds):
        self.seconds = int(seconds)

    def _fire(self, signum, frame):
        raise StepTimeout(f"ran past --step-timeout {self.seconds} s")

    def __enter__(self):
        if self.seconds > 0:
            self.old = signal.signal(signal.SIGALRM, self._fire)
            signal.alarm(self.seconds)
        return self

    def __exit__(self, *exc):
        if self.seconds > 0:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, self.old)
        return False


def _raiser(e):
    """An implementation that cannot run: raises e (the case shows it as n/a)."""
    def fn(q, k, v):
        raise e
    return fn


def short(e):
    s = f"{type(e).__name__}: {e}".replace("\n", " ")
    return s if len(s) < 160 else s[:157] + "..."


def grads(fn, p, dout):
    """fn(q, k, v) -> o recorded for autograd on leaves sharing p's storage;
    returns a closure that runs its backward and the gradients (dq, dk, dv)."""
    leaves = [t.detach().requires_grad_(True) for t in (p.q, p.k, p.v)]
    with torch.enable_grad():
        o = fn(*leaves)
    run = lambda: torch.autograd.grad(o, leaves, dout, retain_graph=True)  # noqa: E731
    return run, run()


class Run:
    """Results and failures of the whole run."""

    def __init__(self, args):
        self.a, self.rows, self.failures = args, [], []
        self.t0 = time.perf_counter()
        self.mask_s = 0.0  # seconds in create_block_mask
        self.first = {}  # peer -> seconds spent in first calls (compiles + the check), for the summary
        self.stage = "setup"  # what the run is doing, for the message of a run cut short

    def fail(self, what):
        self.failures.append(what)
        print(f"FAIL: {what}", flush=True)

    def case(self, mode, ps, T, D, B, p, impls):
        """Time sfa and check + time each peer on one (mode, pass, T, D)."""
        a = self.a
        res, runs = {}, []
        name = f"{LABEL[mode]} {ps} T={T} D={D}"
        t1 = time.perf_counter()
        self.case_first = {}
        self.stage = "sfa: first call"
        try:
            with torch.enable_grad():
                if ps == "fwd":
                    leaves = [t.detach().requires_grad_(True) for t in (p.q, p.k, p.v)]
                    ref = impls["sfa"](*leaves).detach()
                    run_sfa = lambda: impls["sfa"](*leaves)  # noqa: E731
                else:
                    dout = torch.randn_like(p.q)
                    run_sfa, ref = grads(impls["sfa"], p, dout)
                torch.cuda.synchronize()
                self.case_first["sfa"] = time.perf_counter() - t1
                res["sfa"] = {}
                runs.append(("sfa", run_sfa))
            del run_sfa
        except Exception as e:  # noqa: BLE001
            self.fail(f"{name}: sfa failed: {short(e)}")
            res["sfa"] = dict(status="error")
            return res
        for peer in (x for x in impls if x != "sfa"):
            fn = impls[peer]
            run = None
            t1 = time.perf_counter()
            self.stage = f"{peer}: first call (compile) and check"
            try:
                with step_limit(a.step_timeout):
                    if ps == "fwd":
                        with torch.enable_grad():
                            out = fn(*leaves).detach()
                        err = rel_err(ref, out, p.qrows)
                        del out
                        run = lambda: fn(*leaves)  # noqa: E731
                    else:
                        run, g = grads(fn, p, dout)
                        err = max(rel_err(ref[0], g[0], p.qrows), rel_err(ref[1], g[1], p.krows),
                                  rel_err(ref[2], g[2], p.krows))
                        del g
                    torch.cuda.synchronize()
                self.case_first[peer] = time.perf_counter() - t1
            except Exception as e:  # noqa: BLE001
                res[peer] = dict(status="n/a")
                print(f"  {peer} cannot run {name}: {short(e)}", flush=True)
                continue
            if not err < TOL[ps]:
                res[peer] = dict(status="MISMATCH", err=err)
                self.fail(f"{name}: sfa's {'output differs' if ps == 'fwd' else 'gradients differ'} from {peer}'s: "
                          f"rel err {err:.3e} (limit {TOL[ps]:g})")
                continue
            res[peer] = dict(err=err)
            runs.append((peer, run))
        run = None
        self.stage = "timing (" + ", ".join(n for n, _ in runs) + ")"
        with torch.enable_grad():
            self.time_rounds(runs, res)
        del runs  # the graphs
        for k, v in self.case_first.items():
            self.first[k] = self.first.get(k, 0.0) + v
        return res

    def time_rounds(self, runs, res):
        """Times runs [(impl, call)] in --rounds interleaved rounds
        (cases.rounds_bench) into res[impl]: ms the median of the rounds, x the
        median of the rounds' ratios to sfa's (a drift of the clock during the
        case falls on every implementation alike)."""
        a = self.a
        got = rounds_bench(runs, rounds=a.rounds, warm=a.warm, reps=a.reps, sync_each=a.sync_each)
        for impl, ts in got.items():
            res[impl]["ms"] = median(ts)
            if impl != "sfa" and "sfa" in got:
                res[impl]["x"] = median(round_ratios(ts, got["sfa"]))

    def case_e2e(self, T, D, p, bm):
        """hash end to end from unsorted tensors (inference), sfa against
        torch sort/gather + FlexAttention + scatter."""
        q, k, v, qb, kb, nb = p.extra["unsorted"]
        flex_e2e = flex_hash_end_to_end(flex, p, bm)
        run_sfa = lambda: sfa.hash_attention(q, k, v, qb, kb, nb)  # noqa: E731
        res, self.case_first, runs = {}, {}, []
        with torch.no_grad():
            for impl, fn in (("sfa", run_sfa), ("flex", flex_e2e)):
                if impl != "sfa" and "status" in res["sfa"]:
                    break  # nothing to check the peer against
                t1 = time.perf_counter()
                try:
                    out = fn()
                    torch.cuda.synchronize()
                except Exception as e:  # noqa: BLE001
                    res[impl] = dict(status="error" if impl == "sfa" else "n/a")
                    (self.fail if impl == "sfa" else print)(f"hash end to end T={T} D={D}: {impl}: {short(e)}")
                    continue
                self.case_first[impl] = time.perf_counter() - t1
                if impl == "sfa":
                    ref = out
                else:
                    err = rel_err(ref, out)
                    if not err < TOL["fwd"]:
                        res[impl] = dict(status="MISMATCH", err=err)
                        self.fail(f"hash end to end T={T} D={D}: sfa's output differs from flex's: rel err {err:.3e}")
                        continue
                del out
                res[impl] = {} if impl == "sfa" else dict(err=err)
                runs.append((impl, fn))
            self.stage = "timing (hash end to end)"
            self.time_rounds(runs, res)
        return res

    def record(self, mode, ps, T, D, B, pairs, res):
        flops = FLOPS_PER_PAIR[ps] * D * pairs
        sfa_ms = res.get("sfa", {}).get("ms")
        for impl, r in res.items():
            ms = r.get("ms")
            self.rows.append(dict(mode=mode, pass_=ps, T=T, D=D, B=B, H=self.a.H, impl=impl, pairs=pairs,
                                  ms=ms, tflops=flops / ms / 1e9 if ms else None,
                                  sfa_x=(r.get("x") if ms and sfa_ms and impl != "sfa" else None),
                                  err=r.get("err"), status=r.get("status", "ok")))

    def progress(self, n, total, mode, ps, T, D, B):
        cells = []
        for r in self.rows:
            if (r["mode"], r["pass_"], r["T"], r["D"]) != (mode, ps, T, D):
                continue
            if r["ms"] is None:
                cells.append(f"{r['impl']} {r['status']}")
            elif r["impl"] == "sfa":
                cells.append(f"sfa {r['ms']:.3f} ms {r['tflops']:.0f} TF/s")
            else:
                cells.append(f"{r['impl']} {r['ms']:.3f} ({r['sfa_x']:.2f}x)")
        print(f"[{n:>2}/{total} {time.perf_counter() - self.t0:6.1f} s] {LABEL[mode]} {ps} T={T} D={D} B={B}: "
              + " | ".join(cells) + " [first calls: "
              + ", ".join(f"{k} {v:.1f} s" for k, v in self.case_first.items()) + "]", flush=True)


def table(rows):
    """One line per (mode, pass, T, D); a column group per implementation."""
    impls = [i for i in IMPLS if any(r["impl"] == i for r in rows)]
    peers = [i for i in impls if i != "sfa"]
    head = f"{'mode':<21}{'pass':<5}{'T':>6}{'D':>5}{'B':>4} |{'sfa ms':>9}{'TF/s':>7}"
    head += "".join(f" |{p + ' ms':>10}{'TF/s':>7}{'sfa x':>7}" for p in peers)
    lines = [head, "-" * len(head)]
    keys = []
    for r in rows:
        k = (r["mode"], r["pass_"], r["T"], r["D"], r["B"])
        if k not in keys:
            keys.append(k)
    keys.sort(key=lambda k: (ROW_MODES.index(k[0]), PASSES.index(k[1]), k[2], k[3]))
    by = {(r["mode"], r["pass_"], r["T"], r["D"], r["impl"]): r for r in rows}
    for mode, ps, T, D, B in keys:
        s = by.get((mode, ps, T, D, "sfa"))
        line = f"{LABEL[mode]:<21}{ps:<5}{T:>6}{D:>5}{B:>4} |"
        line += f"{s['ms']:>9.3f}{s['tflops']:>7.0f}" if s and s["ms"] else f"{s['status'] if s else '-':>16}"
        for p in peers:
            r = by.get((mode, ps, T, D, p))
            if r is None:
                line += f" |{'-':>24}"
            elif r["ms"] is None:
                line += f" |{r['status']:>24}"
            else:
                x = f"{r['sfa_x']:.2f}x" if r["sfa_x"] else "-"
                line += f" |{r['ms']:>10.3f}{r['tflops']:>7.0f}{x:>7}"
        lines.append(line)
    return "\n".join(lines)


def write_csv(path, rows):
    cols = ("mode", "pass", "T", "D", "B", "H", "impl", "pairs", "ms", "tflops", "sfa_x", "rel_err", "status")
    fmt = lambda v, f: "" if v is None else (f % v if f else str(v))  # noqa: E731
    with open(path, "w") as fh:
        fh.write(",".join(cols) + "\n")
        for r in rows:
            fh.write(",".join((r["mode"], r["pass_"], str(r["T"]), str(r["D"]), str(r["B"]), str(r["H"]), r["impl"],
                               str(r["pairs"]), fmt(r["ms"], "%.4f"), fmt(r["tflops"], "%.1f"),
                               fmt(r["sfa_x"], "%.3f"), fmt(r["err"], "%.3e"), r["status"])) + "\n")


def plot(path, rows, title):
    """TF/s against T: one panel per mode x pass, a line per implementation x D."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401
    modes = [m for m in ROW_MODES if any(r["mode"] == m for r in rows)]
    passes = [p for p in PASSES if any(r["pass_"] == p for r in rows)]
    fig, axes = plt.subplots(len(modes), len(passes), figsize=(6.4 * len(passes), 3.6 * len(modes)),
                             squeeze=False)
    color = {"sfa": "C0", "flash": "C1", "cudnn": "C2", "flex": "C3"}
    style = {64: "--", 128: "-"}
    ts = sorted({r["T"] for r in rows})
    for i, m in enumerate(modes):
        for j, ps in enumerate(passes):
            ax = axes[i][j]
            sel = [r for r in rows if r["mode"] == m and r["pass_"] == ps and r["tflops"]]
            for impl in IMPLS:
                for D in sorted({r["D"] for r in sel}):
                    pts = sorted((r["T"], r["tflops"]) for r in sel if r["impl"] == impl and r["D"] == D)
                    if pts:
                        ax.plot([t for t, _ in pts], [y for _, y in pts], marker="o", color=color[impl],
                                linestyle=style.get(D, ":"), label=f"{impl} D={D}")
            ax.set_xscale("log", base=2)
            ax.set_xticks(ts)
            ax.set_xticklabels([f"{t // 1024}k" if t % 1024 == 0 else str(t) for t in ts])
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            ax.set_xlim(ts[0] / 1.25, ts[-1] * 1.25)
            ax.set_title(f"{LABEL[m]} {ps}")
            ax.set_xlabel("sequence length T (B*T fixed)")
            ax.set_ylabel("effective TF/s")
            ax.set_ylim(bottom=0)
            ax.grid(True, alpha=0.3)
            if sel:
                ax.legend(fontsize=7, ncol=2)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def ints(s):
    return [int(x) for x in s.split(",") if x.strip()]


def names(s, allowed, what):
    out = [x.strip() for x in s.split(",") if x.strip()]
    bad = [x for x in out if x not in allowed]
    if bad:
        raise SystemExit(f"--{what}: unknown {', '.join(bad)} (choose from {', '.join(allowed)})")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=",".join(MODES), help="modes, comma list of: " + ", ".join(MODES))
    ap.add_argument("--pass", dest="passes", default="fwd,bwd", help="passes: fwd, bwd")
    ap.add_argument("--T", default="4096,8192,16384,32768", help="sequence lengths (comma list)")
    ap.add_argument("--D", default="64,128", help="head dims (comma list)")
    ap.add_argument("--d256", default="dense,window",
                    help="modes that also get D=256 rows (comma list; '' for none)")
    ap.add_argument("--quick", action="store_true", help="T in 4096, 16384 (unless --T is given)")
    ap.add_argument("--peers", default="flash,cudnn,flex", help="peers to run: flash, cudnn, flex")
    ap.add_argument("--tokens", type=int, default=65536, help="B * T (B = tokens // T)")
    ap.add_argument("--H", type=int, default=16)
    ap.add_argument("--e2e-T", default="16384", help="T of the hash end-to-end rows (comma list; '' for none)")
    ap.add_argument("--step-timeout", type=int, default=300,
                    help="seconds a peer's first call (compile + check) or a block mask may take "
                         "before that peer is n/a for the case (0: no limit)")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--warm", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds per case (median of them)")
    ap.add_argument("--sync-each", action="store_true",
                    help="synchronize after every timed run (counts host time; the old method)")
    ap.add_argument("--csv", default="", help="write the results as CSV")
    ap.add_argument("--plot", default="", help="write a PNG of TF/s against T (matplotlib)")
    a = ap.parse_args()
    modes = names(a.only, MODES, "only")
    passes = names(a.passes, PASSES, "pass")
    peers = names(a.peers, IMPLS[1:], "peers")
    Ts = ints(a.T) if (a.T != ap.get_default("T") or not a.quick) else [4096, 16384]
    Ds = ints(a.D)
    d256 = names(a.d256, MODES, "d256") if a.d256 else []
    Ds_of = lambda mode: Ds + ([256] if mode in d256 and 256 not in Ds else [])  # noqa: E731
    if not torch.cuda.is_available():
        raise SystemExit("compare.py needs a CUDA GPU")
    _raise_recompile_limit()
    dt = torch.bfloat16
    e2e_Ts = [T for T in ints(a.e2e_T) if T in Ts] if ("hash" in modes and "fwd" in passes and "flex" in peers) else []
    total = sum(len(Ds_of(m)) for m in modes) * len(passes) * len(Ts) + len(e2e_Ts) * len(Ds)
    dev = torch.cuda.get_device_name()
    print(f"{dev}, torch {torch.__version__}; bf16, H={a.H}, B*T={a.tokens}; {total} cases "
          f"({len(modes)} modes x {len(passes)} passes x T {Ts} x D {Ds}"
          f"{' + 256 for ' + ','.join(m for m in modes if m in d256) if any(m in d256 for m in modes) and 256 not in Ds else ''}); "
          f"median of {a.reps} after {a.warm} warm-ups, {a.rounds} interleaved rounds",
          flush=True)
    run = Run(a)
    # a SIGTERM (e.g. from timeout) ends the run early but still prints the
    # table of the cases done so far and writes the CSV and plot
    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    cut = False
    try:
        n = 0
        masks = {}  # mode -> block mask of this T for problems whose mask is the same for every batch and head
        # T outermost, shortest first: the heaviest problems come last, and a run
        # cut short has whole sequence lengths
        for T in Ts:
            masks.clear()
            for mode in modes:
                for D in Ds_of(mode):
                    B = max(1, a.tokens // T)
                    torch.manual_seed(0)
                    p = MAKE[mode](B, a.H, T, D, dt)
                    impls = {"sfa": (lambda p: lambda q, k, v: sfa.attention(q, k, v, **p.kw))(p)}
                    bm = None
                    for peer in (x for x in PEERS[mode] if x in peers):
                        if peer == "flash":
                            impls[peer] = sdpa(SDPBackend.FLASH_ATTENTION)
                        elif peer == "cudnn":
                            impls[peer] = sdpa(SDPBackend.CUDNN_ATTENTION)
                        else:
                            key = mode if p.extra.get("bh_free") else None
                            bm = masks.get(key) if key else None
                            if bm is None:
                                t1 = time.perf_counter()
                                run.stage = f"{mode} T={T} D={D}: block mask"
                                try:
                                    with step_limit(a.step_timeout):
                                        bm = flex_block_mask(p, B, a.H)
                                    run.mask_s += time.perf_counter() - t1
                                except Exception as e:  # noqa: BLE001  (shown as n/a)
                                    impls[peer] = _raiser(RuntimeError(f"block mask: {short(e)}"))
                                    continue
                                if key:
                                    masks[key] = bm
                            impls[peer] = (lambda bm: lambda q, k, v: flex(q, k, v, block_mask=bm))(bm)
                    for ps in passes:
                        n += 1
                        res = run.case(mode, ps, T, D, B, p, impls)
                        run.record(mode, ps, T, D, B, p.pairs, res)
                        run.progress(n, total, mode, ps, T, D, B)
                        gc.collect()
                        torch.cuda.empty_cache()
                    if mode == "hash" and T in e2e_Ts and bm is not None:
                        n += 1
                        res = run.case_e2e(T, D, p, bm)
                        run.record("hash_e2e", "fwd", T, D, B, p.pairs, res)
                        run.progress(n, total, "hash_e2e", "fwd", T, D, B)
                    del p, impls, bm
                    gc.collect()
                    torch.cuda.empty_cache()
    except KeyboardInterrupt:
        cut = True
        print(f"\nstopped by a signal during case {n} of {total} ({run.stage})", flush=True)
    elapsed = time.perf_counter() - run.t0
    print()
    how = "a synchronize after each" if a.sync_each else "queued back to back"
    print(f"{dev}: bf16, H={a.H}, B*T={a.tokens}; ms = median of {a.rounds} interleaved rounds of medians of {a.reps} ({how}); "
          f"TF/s on allowed pairs only (fwd 4*D*pairs, bwd 10*D*pairs); sfa x = peer ms / sfa ms, the median "
          f"of the rounds' ratios (> 1: sfa faster).")
    print("SDPA (flash, cudnn) has no sparse masks: it is a peer of the dense causal rows only; hash runs "
          "on the sorted layout (kernel only); hash end to end adds the sort, gather and scatter (inference).")
    print(table(run.rows))
    firsts = ", ".join(f"{k} {v:.0f} s" for k, v in run.first.items()) or "none finished"
    print(f"{'cut short: ' if cut else ''}total {elapsed:.0f} s, of which first calls (JIT compiles and the checks) "
          f"{firsts}, block masks {run.mask_s:.0f} s")
    if a.csv:
        write_csv(a.csv, run.rows)
        print(f"wrote {a.csv}")
    if a.plot:
        plot(a.plot, run.rows, f"sfa vs peers, {dev}, bf16, H={a.H}, B*T={a.tokens}")
        print(f"wrote {a.plot}")
    finish(cut, run.failures)


if __name__ == "__main__":
    main()
