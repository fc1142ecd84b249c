#!/usr/bin/env python3
"""test_bench_ab.py -- bench/ab.py, the interleaved A/B timing of several
builds of libsfa.so: its NAME=LIB parsing and refusals, the rotating order of
the rounds, the table's medians and ratios, and the parent's protocol with
child processes (stand-ins that answer as the real children do, so no torch
and no GPU: a child that stops early is reported with its stderr, one that
stops answering is killed when the parent closes it).
"""
import os
import subprocess
import sys
import tempfile
import time

from harness import SOURCE_DIR, main, raises, test

sys.path.insert(0, os.path.join(SOURCE_DIR, "bench"))
import ab  # noqa: E402


def lib_file():
    f = tempfile.NamedTemporaryFile(suffix=".so", delete=False)
    f.close()
    return f.name


@test()
def names_and_libraries_are_parsed_and_checked():
    a, b = lib_file(), lib_file()
    try:
        got = ab.parse_libs([f"main={a}", f"x.1={b}"])
        assert [n for n, _ in got] == ["main", "x.1"], got
        assert got[0][1] == os.path.abspath(a)
        raises(SystemExit, lambda: ab.parse_libs([f"main={a}"]), "at least two")
        raises(SystemExit, lambda: ab.parse_libs([a, f"x={b}"]), "NAME=LIB")
        raises(SystemExit, lambda: ab.parse_libs([f"m={a}", f"m={b}"]), "given twice")
        raises(SystemExit, lambda: ab.parse_libs([f"a b={a}", f"x={b}"]), "letters, digits")
        raises(SystemExit, lambda: ab.parse_libs([f"m={a}", "x=/no/such/libsfa.so"]), "not a file")
    finally:
        os.unlink(a)
        os.unlink(b)


@test()
def each_round_starts_with_the_next_build():
    names = ["a", "b", "c"]
    assert [ab.order(names, r) for r in range(4)] == [
        ["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]


@test()
def the_table_gives_medians_and_the_rounds_ratios():
    rounds = [{"main": 10.0, "x": 9.0}, {"main": 12.0, "x": 11.4}, {"main": 11.0, "x": 10.0}]
    lines = ab.summarize(["main", "x"], rounds)
    assert lines[1].split() == ["main", "11.000", "1"], lines[1]
    # ratios 0.9, 0.95, 0.90909: median 0.9091, min 0.9, max 0.95; median ms 10.0
    assert lines[2].split() == ["x", "10.000", "0.9091", "(0.9000-0.9500)"], lines[2]


def fake(script):
    return [sys.executable, "-c", script]


ANSWERS = ("import sys\n"
           "print('a line the parent passes on')\n"
           "print('ready', flush=True)\n"
           "ms = float(sys.argv[1])\n"
           "while sys.stdin.readline().strip() == 'run':\n"
           "    print('ms %f' % ms, flush=True)\n"
           "    ms += 1\n")


@test()
def the_parent_asks_every_child_once_per_round():
    kids = [ab.Child("a", fake(ANSWERS) + ["1"], dict(os.environ)),
            ab.Child("b", fake(ANSWERS) + ["10"], dict(os.environ))]
    try:
        for k in kids:
            k.expect("ready")
        rounds = ab.run_rounds(kids, 3)
    finally:
        for k in kids:
            k.close()
    assert rounds == [{"a": 1.0, "b": 10.0}, {"b": 11.0, "a": 2.0}, {"a": 3.0, "b": 12.0}], rounds
    assert all(k.p.returncode == 0 for k in kids), [k.p.returncode for k in kids]


@test()
def a_child_that_stops_is_reported_with_its_stderr():
    kid = ab.Child("x", fake("import sys; sys.stderr.write('CUDA error: out of memory'); sys.exit(3)"),
                   dict(os.environ))
    try:
        raises(SystemExit, lambda: kid.expect("ready"), "x stopped", "exit 3", "out of memory")
    finally:
        kid.close()


@test()
def a_child_that_does_not_answer_is_killed_on_close():
    kid = ab.Child("hung", fake("import time; print('ready', flush=True); time.sleep(600)"), dict(os.environ))
    kid.expect("ready")
    t0 = time.time()
    kid.close(timeout=1)
    assert kid.p.returncode is not None and kid.p.returncode < 0, kid.p.returncode
    assert time.time() - t0 < 30, time.time() - t0


@test()
def packed_takes_the_dense_forward_only():
    a, b = lib_file(), lib_file()
    try:
        for extra in (["--pass", "bwd"], ["--pass", "fwd", "--mode", "hash"], ["--pass", "fwd", "--alibi"]):
            r = subprocess.run([sys.executable, os.path.join(SOURCE_DIR, "bench", "ab.py"), f"m={a}", f"x={b}",
                                "--packed"] + extra, capture_output=True, text=True, timeout=60)
            assert r.returncode != 0 and "--packed: dense causal --pass fwd" in r.stderr, (extra, r.stderr)
    finally:
        os.unlink(a)
        os.unlink(b)


if __name__ == "__main__":
    main()
