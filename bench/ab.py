"""ab.py -- A/B timing of several builds of libsfa.so on one problem of
prof_case.py, interleaved in one run. One child process per library (its own
SFA_LIBRARY) builds the same seeded problem, compiles and warms up once, then
waits; the parent asks the children in turn, round after round (the order
rotating by one each round), for the median of --reps queued calls. Two
prof_case.py runs per build, A B A B, read 2-5% apart on the H100 for the same
library (bench/NOTES.md, session 31); here each round's builds run seconds
apart, and the ratio of each round is read before the rounds are combined.

    python3 bench/ab.py NAME=LIB [NAME=LIB ...] [--pass bwd] [--mode dense]
        [--T 16384] [--D 128] [--H 16] [--softcap C] [--alibi] [--packed] [--rounds 8] [--reps 10]
        [--warm 3]

Prints, per build, the median over the rounds of its ms, and against the first
build the median of the rounds' ratios (its ms over the first's: below 1 is
faster) with their min and max. --packed: prof_case.py's packed problem (dense
causal forward of 65536 / T sequences of T through sfa.attention_varlen).
NAME: letters, digits, _ . -; LIB: a built libsfa.so (bench/variant_lib.sh
makes them)."""
import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
from statistics import median


def parse_libs(specs):
    """[(name, path)] from NAME=LIB arguments; SystemExit saying what is wrong."""
    out, seen = [], set()
    for s in specs:
        name, sep, path = s.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"ab.py: '{s}': expected NAME=LIB (a name, '=', a libsfa.so)")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise SystemExit(f"ab.py: name '{name}': letters, digits, _ . - only")
        if name in seen:
            raise SystemExit(f"ab.py: name '{name}' given twice")
        if not os.path.isfile(path):
            raise SystemExit(f"ab.py: {name}: {path} is not a file (build it with bench/variant_lib.sh)")
        seen.add(name)
        out.append((name, os.path.abspath(path)))
    if len(out) < 2:
        raise SystemExit("ab.py: give at least two builds to compare (NAME=LIB NAME=LIB)")
    return out


def order(names, r):
    """The order of round r: names rotated by r, so no build always runs first."""
    k = r % len(names)
    return names[k:] + names[:k]


def summarize(names, rounds):
    """Lines of the table from rounds (one {name: ms} per round): each build's
    median ms, and against names[0] the median, min and max of the rounds'
    ratios."""
    base = names[0]
    lines = [f"{'build':12s} {'ms (median)':>12s} {'x ' + base + ' (median, min-max of rounds)':>40s}"]
    for n in names:
        ms = median(r[n] for r in rounds)
        if n == base:
            lines.append(f"{n:12s} {ms:12.3f} {'1':>40s}")
            continue
        ratios = [r[n] / r[base] for r in rounds]
        lines.append(f"{n:12s} {ms:12.3f} {median(ratios):26.4f} ({min(ratios):.4f}-{max(ratios):.4f})")
    return lines


class Child:
    """A process that says 'ready', then answers each 'run' with 'ms <float>'.
    Other lines it prints are passed on to stderr; its stderr goes to a file,
    whose tail is shown if it stops answering."""

    def __init__(self, name, argv, env):
        self.name = name
        self.err = tempfile.TemporaryFile("w+")
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err,
                                  text=True, env=env)

    def expect(self, word):
        while True:
            line = self.p.stdout.readline()
            if not line:
                self.p.kill()
                self.p.wait()
                self.err.seek(0)
                raise SystemExit(f"ab.py: {self.name} stopped before '{word.strip()}' "
                                 f"(exit {self.p.returncode}); its stderr ends:\n{self.err.read()[-3000:]}")
            if line.startswith(word):
                return line[len(word):].strip()
            sys.stderr.write(f"[{self.name}] {line}")

    def ask(self, cmd):
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()

    def close(self, timeout=10):
        """Asks it to quit; kills it if it has not within timeout seconds (a
        child stuck in a kernel does not read its stdin)."""
        if self.p.poll() is None:
            try:
                self.ask("quit")
                self.p.wait(timeout=timeout)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.p.kill()
                self.p.wait()
        self.err.close()


def run_rounds(children, rounds, progress=None):
    """[{name: ms}] of rounds rounds, asking the children (all ready) in turn."""
    names = [c.name for c in children]
    by = {c.name: c for c in children}
    out = []
    for r in range(rounds):
        got = {}
        for n in order(names, r):
            by[n].ask("run")
            got[n] = float(by[n].expect("ms "))
        out.append(got)
        if progress:
            progress(r, got)
    return out


def child_main(a):
    """The child: the problem through the library of SFA_LIBRARY, then the protocol."""
    import torch
    from cases import bench
    from prof_case import runs_of
    torch.manual_seed(0)
    run = runs_of(a)[1][a.pass_]
    bench(run, a.warm, 1)
    print("ready", flush=True)
    while sys.stdin.readline().strip() == "run":
        print("ms %.6f" % bench(run, 1, a.reps), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("libs", nargs="*", metavar="NAME=LIB")
    ap.add_argument("--pass", dest="pass_", default="bwd", choices=["fwd", "bwd"])
    ap.add_argument("--mode", default="dense", choices=["dense", "hash", "qk_drop", "window"])
    ap.add_argument("--T", type=int, default=16384)
    ap.add_argument("--D", type=int, default=128)
    ap.add_argument("--H", type=int, default=16)
    ap.add_argument("--softcap", type=float, default=0.0, help="softcap the scores at C (0: off)")
    ap.add_argument("--alibi", action="store_true", help="ALiBi slopes 2^(-8 h / H) (dense, window)")
    ap.add_argument("--packed", action="store_true",
                    help="dense causal fwd on packed sequences (sfa.attention_varlen)")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--warm", type=int, default=3)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        return child_main(a)
    if a.rounds < 1 or a.reps < 1:
        raise SystemExit("ab.py: --rounds and --reps must be at least 1")
    if a.packed and (a.pass_ != "fwd" or a.mode != "dense" or a.softcap or a.alibi):
        raise SystemExit("ab.py: --packed: dense causal --pass fwd without --softcap or --alibi only")
    libs = parse_libs(a.libs)
    # a SIGTERM (timeout(1) around this script) unwinds through the finally below, so that
    # no child is left holding the GPU
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    argv = [sys.executable, os.path.abspath(__file__), "--child", "--pass", a.pass_, "--mode", a.mode,
            "--T", str(a.T), "--D", str(a.D), "--H", str(a.H), "--reps", str(a.reps), "--warm", str(a.warm),
            "--softcap", str(a.softcap)] + (["--alibi"] if a.alibi else []) + (["--packed"] if a.packed else [])
    children = []
    try:
        for name, path in libs:
            children.append(Child(name, argv, dict(os.environ, SFA_LIBRARY=path)))
        for c in children:
            c.expect("ready")  # in turn: their compiles overlap
        opts = (f" softcap {a.softcap:g}" if a.softcap else "") + (" alibi" if a.alibi else "")
        opts += " packed" if a.packed else ""
        print(f"ab.py: {a.mode}{opts} {a.pass_} T={a.T} D={a.D} H={a.H}: {a.rounds} rounds of {a.reps} calls, "
              f"builds {', '.join(n for n, _ in libs)}", flush=True)
        rounds = run_rounds(children, a.rounds, lambda r, got: print(
            f"  round {r + 1}: " + ", ".join(f"{n} {ms:.3f}" for n, ms in got.items()), flush=True))
    finally:
        for c in children:
            c.close()
    print("\n".join(summarize([n for n, _ in libs], rounds)))


if __name__ == "__main__":
    main()
