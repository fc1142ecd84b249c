"""decode.py -- sfa_decode against the machine's bandwidth and its peers, one run.

Run on the GPU machine from the repository root, after building libsfa.so:
    python bench/decode.py [--B 1,8,32] [--kv 4096,16384,32768] [--hq 32] [--hkv 8]
        [--D 128] [--tn 1] [--pages 0,16,256] [--reps 50] [--warm 5] [--csv out.csv]

One decode step of Tn new tokens (bf16, Hq query heads over Hkv kv heads,
dense causal) against a cache of KV positions per sequence, every sequence
full (seqused = KV; the cache is allocated with exactly that capacity). The
cache is contiguous (--pages 0) or paged with that page size, its pages
shuffled over the pool (a random page table), as a serving engine's would be.

Columns:
  sfa ms      median of --reps CUDA-event timings of sfa.decode after --warm,
              with a workspace of the caller's (sfa.decode_workspace, made
              once per case and reused: the serving setup)
  pool        the same call without it (the library's workspace from its
              stream-ordered pool and a memset of the split counters each
              call); "x" = pool ms / sfa ms
  GB/s        bytes of K and V read (B * Hkv * KV * D * 2 * 2) / time
  of copy     that rate / the copy ceiling: torch's copy_ of a 1 GiB buffer
              measured in the same run (read + write bytes / time), i.e. the
              HBM bandwidth this machine reaches with a plain copy kernel
  peers       SDPA flash, SDPA cuDNN (enable_gqa, q of Tn rows, no mask: for
              Tn = 1 the same keys as causal) and FlexAttention
              (torch.compile, enable_gqa) on the same keys in a contiguous
              [B, Hkv, KV, D] cache; "sfa x" = peer ms / sfa ms (> 1: sfa is
              faster); n/a where a peer cannot run the case
Every sfa output is compared with SDPA's math on the contiguous cache first
(relative L2 error < 2e-2, else FAIL and exit status 1).
Times queue the runs back to back and read them after one synchronize
(cases.bench), so host time overlaps GPU work as in a serving loop;
--sync-each adds each call's host time. With --graph every implementation
(sfa and the peers alike) is timed as replays of a CUDA graph of 10 calls
(cases.graph_bench): no host time at all, as when a serving engine replays
its decode step; at short caches (4k keys) an eager call's host time is
longer than its GPU time, so only --graph shows the kernels' rate there.
Inputs are random normal.
"""
import argparse
import csv
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import flex_attention

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cases import bench, decode_case, graph_bench, rel_err  # noqa: E402
import sfa  # noqa: E402  (cases puts python/ on the path)

flex = torch.compile(flex_attention, dynamic=False)


def ints(s):
    return [int(x) for x in s.split(",") if x.strip()]


def copy_ceiling(warm, reps):
    """GB/s of torch's copy_ between two 1 GiB buffers (bytes read + written)."""
    n = 1 << 29  # bf16 elements: 1 GiB
    src = torch.randn(n, device="cuda", dtype=torch.bfloat16)
    dst = torch.empty_like(src)
    ms = bench(lambda: dst.copy_(src), warm, reps)
    del src, dst
    return 2 * 2 * n / (ms * 1e-3) / 1e9


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--B", default="1,8,32")
    ap.add_argument("--kv", default="4096,16384,32768")
    ap.add_argument("--hq", type=int, default=32)
    ap.add_argument("--hkv", type=int, default=8)
    ap.add_argument("--D", type=int, default=128)
    ap.add_argument("--tn", type=int, default=1)
    ap.add_argument("--pages", default="0,16,256", help="page sizes; 0 = contiguous cache")
    ap.add_argument("--peers", default="flash,cudnn,flex")
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--warm", type=int, default=5)
    ap.add_argument("--sync-each", action="store_true")
    ap.add_argument("--graph", action="store_true", help="time CUDA graph replays (no host time)")
    ap.add_argument("--csv", default=None)
    a = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("decode.py needs a CUDA GPU")
    dt = torch.bfloat16
    peers = [p for p in a.peers.split(",") if p]
    gpu = torch.cuda.get_device_name()
    t0 = time.perf_counter()
    if a.graph and a.sync_each:
        raise SystemExit("decode.py: --graph and --sync-each exclude each other")
    timed = (lambda fn: graph_bench(fn, a.warm, a.reps)) if a.graph else \
        (lambda fn: bench(fn, a.warm, a.reps, a.sync_each))
    ceil = copy_ceiling(a.warm, a.reps)
    print(f"# {gpu}; copy ceiling {ceil:.0f} GB/s (torch copy_, 1 GiB); "
          f"{'CUDA graph replays' if a.graph else 'eager calls'}", flush=True)
    rows, fails = [], 0
    for B in ints(a.B):
        for kv in ints(a.kv):
            for page in ints(a.pages):
                q, k, v, cache = decode_case(B, a.hq, a.hkv, kv, a.D, a.tn, page, dt)
                kc, vc, table, seq = cache
                ws = sfa.decode_workspace(q, kc, vc, page_table=table, seqused=seq, causal=True)
                run = lambda: sfa.decode(q, kc, vc, page_table=table, seqused=seq, causal=True,  # noqa: E731
                                         workspace=ws)
                pool = lambda: sfa.decode(q, kc, vc, page_table=table, seqused=seq, causal=True)  # noqa: E731
                o = run()
                pos = torch.arange(kv, device="cuda")
                allowed = pos[None, :] <= (kv - a.tn + torch.arange(a.tn, device="cuda"))[:, None]
                ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), enable_gqa=True,
                                                     attn_mask=allowed)
                err = max(rel_err(o, ref), rel_err(pool(), ref))
                row = dict(gpu=gpu, B=B, kv=kv, page=page, hq=a.hq, hkv=a.hkv, D=a.D, tn=a.tn,
                           err=err, ceiling_gbs=ceil, timing="graph" if a.graph else "eager")
                if not err < 2e-2:
                    print(f"FAIL B={B} kv={kv} page={page}: relative error {err:.3g}", flush=True)
                    fails += 1
                ms = timed(run)
                pms = timed(pool)
                gbs = B * a.hkv * kv * a.D * 2 * 2 / (ms * 1e-3) / 1e9
                row.update(sfa_ms=ms, sfa_gbs=gbs, of_copy=gbs / ceil, pool_ms=pms, workspace_bytes=ws.numel())
                line = (f"B={B:3d} kv={kv:6d} page={page:3d}  sfa {ms:8.4f} ms {gbs:7.0f} GB/s "
                        f"{100 * gbs / ceil:5.1f}% of copy | pool {pms:.4f} ({pms / ms:.2f}x)")
                for p in peers:
                    try:
                        if p == "flex":
                            fn = lambda: flex(q, k, v, enable_gqa=True)  # noqa: E731
                        else:
                            be = SDPBackend.FLASH_ATTENTION if p == "flash" else SDPBackend.CUDNN_ATTENTION
                            def fn(be=be):
                                with sdpa_kernel(be):
                                    return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
                        fn()
                        pm = timed(fn)
                        row[p + "_ms"] = pm
                        line += f" | {p} {pm:.4f} ({pm / ms:.2f}x)"
                    except Exception as e:  # noqa: BLE001  (a peer that cannot run the case)
                        row[p + "_ms"] = float("nan")
                        line += f" | {p} n/a ({type(e).__name__})"
                print(line, flush=True)
                rows.append(row)
                del q, k, v, kc, vc, table, seq, cache, ws
                torch.cuda.empty_cache()
    print(f"# {len(rows)} cases in {time.perf_counter() - t0:.0f} s; {fails} failed", flush=True)
    if a.csv:
        keys = sorted({k for r in rows for k in r})
        with open(a.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
