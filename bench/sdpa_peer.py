"""sdpa_peer.py -- times PyTorch SDPA (flash and cuDNN backends) forward on
random bf16 inputs, CUDA events, warm-up, median. Usage:
python bench/sdpa_peer.py B H T D [causal]"""
import sys
import torch
from torch.nn.attention import sdpa_kernel, SDPBackend

def main():
    B, H, T, D = (int(x) for x in sys.argv[1:5])
    causal = len(sys.argv) < 6 or sys.argv[5] != "0"
    q, k, v = (torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    pairs = T * (T + 1) / 2 if causal else T * T
    flops = 4 * B * H * D * pairs
    for name, be in (("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)):
        try:
            with sdpa_kernel(be):
                f = lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
                for _ in range(3): f()
                ts = []
                for _ in range(20):
                    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    a.record(); f(); b.record(); b.synchronize(); ts.append(a.elapsed_time(b))
            ts.sort()
            print(f"peer sdpa-{name} B={B} H={H} T={T} D={D} causal={int(causal)}: median {ts[10]:.3f} ms  {flops / ts[10] / 1e9:.1f} TF/s")
        except Exception as e:  # backend unavailable for this shape
            print(f"peer sdpa-{name}: unavailable ({e})")

main()
