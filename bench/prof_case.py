"""prof_case.py -- one sparse problem of issues 3/4 through sfa only, for A/B
timing of two builds (run it once per build with SFA_LIBRARY=...) and for
profilers (ncu --kernel-name ...): no peers, so no FlexAttention compile.

    python3 bench/prof_case.py [--mode hash] [--pass bwd] [--T 16384] [--D 128]
        [--det] [--softcap C] [--alibi] [--packed] [--reps 20] [--warm 3] [--kernels]

Prints the median ms of --reps queued calls (bench/cases.py's bench) for each
pass asked for (fwd, bwd: the sfa.backward call with its workspace); --softcap
and --alibi add those options to the calls (ALiBi: dense and window).
--packed (dense causal forward only) runs the same work as 65536 / T sequences
of T packed one after another, [B * T, H, D], through sfa.attention_varlen
(issue 19's packed layout; the fixed-length call reads [B, H, T, D]). With
--kernels, also each GPU kernel's mean time per call, from torch.profiler
(CUPTI) over --reps more calls."""
import argparse

import torch

from cases import bench, kernel_times, hash_problem, qk_drop_problem, window_problem, dense_problem
import sfa


def with_score_options(p, softcap, alibi):
    """p with the calls' softcap (C, 0: off) and ALiBi slopes 2^(-8 h / H) (dense, window)."""
    if softcap:
        p.kw["softcap"] = softcap
    if alibi:
        if p.kw["mode"] not in ("dense", "window"):
            raise SystemExit(f"--alibi applies to modes dense and window, not {p.kw['mode']}")
        H = p.q.shape[1]
        h = torch.arange(1, H + 1, device="cuda", dtype=torch.float32)
        p.kw["alibi_slopes"] = torch.pow(2.0, -8.0 * h / H)
    return p


def problem(mode, B, H, T, D):
    dt = torch.bfloat16
    if mode == "hash":
        return hash_problem(B, H, T, D, 16, dt)
    if mode == "qk_drop":
        return qk_drop_problem(B, H, T, D, 0.3, dt)
    if mode == "window":
        return window_problem(B, H, T, D, 1024, dt)
    return dense_problem(B, H, T, D, dt)


def pass_runs(p, det=False):
    """{"fwd": fn, "bwd": fn}: one call of each pass on problem p, the backward
    from a forward's o and lse and a random dout (det: the deterministic one)."""
    o, lse = sfa.forward(p.q, p.k, p.v, return_lse=True, **p.kw)
    dout = torch.randn_like(p.q)
    return {"fwd": lambda: sfa.forward(p.q, p.k, p.v, **p.kw),
            "bwd": lambda: sfa.backward(p.q, p.k, p.v, o, lse, dout, deterministic=det, **p.kw)}


def packed_runs(H, T, D):
    """{"fwd": fn}: sfa.attention_varlen, dense causal, on 65536 / T packed
    sequences of T (random bf16 q, k, v [B * T, H, D], max_seqlen_k = T)."""
    B = max(65536 // T, 1)
    q, k, v = (torch.randn(B * T, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    cu = torch.arange(0, (B + 1) * T, T, device="cuda", dtype=torch.int32)
    return {"fwd": lambda: sfa.attention_varlen(q, k, v, cu, cu, causal=True, max_seqlen_k=T)}


def runs_of(a):
    """(name, runs) of the problem that a (prof_case's or ab.py's arguments)
    names: runs as pass_runs' (packed_runs' with a.packed)."""
    if a.packed:
        if a.mode != "dense" or a.softcap or a.alibi or getattr(a, "det", False):
            raise SystemExit("--packed: dense causal without --softcap, --alibi or --det only")
        return "dense causal packed", packed_runs(a.H, a.T, a.D)
    p = with_score_options(problem(a.mode, 65536 // a.T, a.H, a.T, a.D), a.softcap, a.alibi)
    return p.name, pass_runs(p, getattr(a, "det", False))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", default="hash", choices=["dense", "hash", "qk_drop", "window"])
    ap.add_argument("--pass", dest="passes", default="fwd,bwd", help="comma list of fwd, bwd")
    ap.add_argument("--T", type=int, default=16384)
    ap.add_argument("--D", type=int, default=128)
    ap.add_argument("--H", type=int, default=16)
    ap.add_argument("--det", action="store_true", help="the deterministic backward")
    ap.add_argument("--softcap", type=float, default=0.0, help="softcap the scores at C (0: off)")
    ap.add_argument("--alibi", action="store_true", help="ALiBi slopes 2^(-8 h / H) (dense, window)")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--warm", type=int, default=3)
    ap.add_argument("--packed", action="store_true",
                    help="dense causal fwd on packed sequences (sfa.attention_varlen)")
    ap.add_argument("--kernels", action="store_true", help="per-kernel times (torch.profiler)")
    a = ap.parse_args()
    if a.packed and a.passes != "fwd":
        raise SystemExit("--packed times the forward only: give --pass fwd")
    torch.manual_seed(0)
    title, fns = runs_of(a)
    out, runs = [], []
    if "fwd" in a.passes:
        out.append("fwd %.3f" % bench(fns["fwd"], a.warm, a.reps))
        runs.append(("fwd", fns["fwd"]))
    if "bwd" in a.passes:
        out.append("bwd%s %.3f" % (" det" if a.det else "", bench(fns["bwd"], a.warm, a.reps)))
        runs.append(("bwd", fns["bwd"]))
    opts = (f" softcap {a.softcap:g}" if a.softcap else "") + (" alibi" if a.alibi else "")
    print(f"{title}{opts} T={a.T} D={a.D}: " + ", ".join(out) + " ms", flush=True)
    if a.kernels:
        for name, run in runs:
            print_kernel_times(name, run, a.reps)


def print_kernel_times(name, run, reps):
    for us, key in kernel_times(run, reps):
        print(f"  {name} {us / 1000.0:8.3f} ms  {key[:90]}", flush=True)


if __name__ == "__main__":
    main()
