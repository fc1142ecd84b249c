"""decode_probe.py -- how much of sfa.decode's time is host time: per case the
eager time of back-to-back calls (CUDA events), the Python host time per call
(time.perf_counter over 200 unsynchronized calls), and the time of the same
call captured in a CUDA graph (no host work), with the K/V bytes per second;
with --kernels also the GPU time of each kernel of a call (torch.profiler:
the decode kernel and the split-KV merge apart). --workspace: sfa.decode in a
workspace of the caller's (sfa.decode_workspace, made once per case).
--peer flash|cudnn: SDPA's backend on the same q and a contiguous cache
instead of sfa (for a profiler run of the peer's kernels, e.g. under ncu).

Run on the GPU machine from the repository root:
    python bench/decode_probe.py [--cases 1:4096,1:32768,8:4096,8:32768,8:32768:16]
        [--hq 32] [--hkv 8] [--D 128] [--reps 100] [--kernels] [--workspace] [--peer flash]
"""
import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import sfa  # noqa: E402
from cases import decode_case, graph_bench, kernel_times  # noqa: E402


def bench(fn, reps, warm=10):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(reps):
        fn()
    b.record()
    torch.cuda.synchronize()
    return a.elapsed_time(b) / reps


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="1:4096,1:32768,8:4096,8:32768",
                    help="B:KV pairs, or B:KV:PAGE for a paged cache of that page size (pages shuffled)")
    ap.add_argument("--hq", type=int, default=32)
    ap.add_argument("--hkv", type=int, default=8)
    ap.add_argument("--D", type=int, default=128)
    ap.add_argument("--reps", type=int, default=100)
    ap.add_argument("--kernels", action="store_true", help="print each kernel's GPU time (torch.profiler)")
    ap.add_argument("--workspace", action="store_true", help="sfa.decode with a caller's workspace")
    ap.add_argument("--peer", choices=("flash", "cudnn"), default=None,
                    help="time SDPA with this backend instead of sfa (contiguous cases only)")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("decode_probe.py needs a CUDA GPU")
    print(f"# {torch.cuda.get_device_name()}")
    for case in a.cases.split(","):
        B, kv, page = (int(x) for x in (case + ":0").split(":")[:3])
        q, kc, vc, (k, v, table, seq) = decode_case(B, a.hq, a.hkv, kv, a.D, 1, page, torch.bfloat16)
        out = torch.empty_like(q)
        if a.peer:
            if page:
                raise SystemExit("decode_probe.py: --peer takes contiguous cases only (B:KV)")
            be = SDPBackend.FLASH_ATTENTION if a.peer == "flash" else SDPBackend.CUDNN_ATTENTION

            def call():
                with sdpa_kernel(be):
                    return F.scaled_dot_product_attention(q, kc, vc, enable_gqa=True)
        else:
            ws = sfa.decode_workspace(q, k, v, page_table=table, seqused=seq) if a.workspace else None
            call = lambda: sfa.decode(q, k, v, page_table=table, seqused=seq, workspace=ws)  # noqa: E731
        run = lambda: out.copy_(call())  # noqa: E731
        eager = bench(run, a.reps)
        t0 = time.perf_counter()
        for _ in range(200):
            call()
        host = (time.perf_counter() - t0) / 200 * 1e3
        torch.cuda.synchronize()
        graph = graph_bench(run, 10, a.reps, per=1)
        gbs = B * a.hkv * kv * a.D * 2 * 2 / (graph * 1e-3) / 1e9
        if a.kernels:
            print("  " + ", ".join(f"{n[:48]}: {us:.1f} us" for us, n in kernel_times(run, 20)), flush=True)
        who = a.peer or ("sfa, caller's workspace" if a.workspace else "sfa")
        print(f"{who} B={B} kv={kv} page={page}: eager {eager * 1e3:.1f} us/call, host {host * 1e3:.1f} us/call (Python), "
              f"graph {graph * 1e3:.1f} us ({gbs:.0f} GB/s)", flush=True)


if __name__ == "__main__":
    main()
