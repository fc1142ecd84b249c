"""peer_once.py -- one backward (or forward) of PyTorch SDPA (cuDNN or flash
backend) on random bf16 inputs, dense causal, for a profiler to catch its
kernels (gpu_check.sh bwdsass and fwdsass: ncu --kernel-name regex:flash_bprop
or "regex:fprop|sdpa"). Runs a warm-up call first, so a profiler that skips one launch
sees a steady one.

    python3 bench/peer_once.py B H T D [cudnn|flash] [bwd|fwd]"""
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def main():
    if len(sys.argv) not in (5, 6, 7) or sys.argv[1] in ("-h", "--help"):
        raise SystemExit(__doc__)
    B, H, T, D = (int(x) for x in sys.argv[1:5])
    name = sys.argv[5] if len(sys.argv) >= 6 else "cudnn"
    which = sys.argv[6] if len(sys.argv) == 7 else "bwd"
    if name not in ("cudnn", "flash") or which not in ("bwd", "fwd"):
        raise SystemExit(__doc__)
    backend = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION}[name]
    q, k, v = (torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
               for _ in range(3))
    if which == "fwd":
        with torch.no_grad(), sdpa_kernel(backend):
            for _ in range(2):
                F.scaled_dot_product_attention(q, k, v, is_causal=True)
    else:
        with sdpa_kernel(backend):
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        dout = torch.randn_like(o)
        for _ in range(2):
            torch.autograd.grad(o, (q, k, v), dout, retain_graph=True)
    torch.cuda.synchronize()
    print(f"peer_once: SDPA {name} {which} B={B} H={H} T={T} D={D}, 2 calls", flush=True)


if __name__ == "__main__":
    main()
