"""sfa -- sparse flash attention kernels for PyTorch CUDA tensors.

A ctypes layer over libsfa (no compiled extension against PyTorch): tensors
are passed by data pointer and strides, launches go on the tensors' GPU and
its current stream, and C errors come back as Python exceptions with the
library's message. The calls are PyTorch custom operators (sfa::attention_fwd,
sfa::attention_bwd, ...), so torch.compile(fullgraph=True) compiles models
that use them without graph breaks, and autograd trains through them.

    import sfa
    o = sfa.attention(q, k, v, causal=True)              # dense, bottom-right causal
    o = sfa.attention(q, k, v, causal=True, causal_align="top_left")
    o = sfa.scaled_dot_product_attention(q, k, v, is_causal=True)   # torch's SDPA semantics
    o = sfa.attention(q, k, v, mode="qk_drop", q_idx=qi, k_idx=ki)
    o = sfa.hash_attention(q, k, v, q_bucket, k_bucket, num_buckets)
    o = sfa.attention(q, k, v, mode="window", window=(1023, 0), causal=True, bias=b)
    o, lse = sfa.attention(q, k, v, causal=True, return_lse=True)
    o = sfa.attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, causal=True)  # packed [total, H, D]
    o = sfa.hash_attention(q, k, v, q_bucket, k_bucket, nb, cu_seqlens_q=cu, cu_seqlens_k=cu)  # packed
    m = sfa.topk_mask(bias, w, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k)  # bias [Hb, total_q, Kmax]

Importing sfa needs no torch (sfa.__version__, the library checks); the
attention functions need it and raise ImportError without it.

Errors: a wrong argument (shape, stride, dtype, mode, device, an int out of
range...) raises ValueError; a valid request this build cannot serve (e.g. the
backward pass for a head dim above 128 that is not a multiple of 32) raises
SfaUnsupportedError, which is both an SfaError and a NotImplementedError; other
failures raise SfaError.
"""
from . import _capi
from ._args import SfaError, SfaUnsupportedError

__version__ = _capi.VERSION
library_path = _capi.LIBRARY_PATH

__all__ = ["attention", "scaled_dot_product_attention", "forward", "backward", "hash_prepare", "hash_unsort",
           "hash_attention", "topk_mask", "merge_attention", "attention_varlen", "decode", "kv_append",
           "check_kv_cache", "decode_workspace", "SfaError", "SfaUnsupportedError", "__version__", "library_path"]

try:
    import torch  # noqa: F401
except ImportError as _e:
    _TORCH_ERROR = _e

    def _needs_torch(name):
        def f(*args, **kwargs):
            raise ImportError(f"sfa.{name} needs PyTorch, which is not importable here ({_TORCH_ERROR}); "
                              "pip install torch") from _TORCH_ERROR
        f.__name__ = name
        return f

    for _n in __all__[:14]:
        globals()[_n] = _needs_torch(_n)
else:
    from ._api import (attention, attention_varlen, backward, check_kv_cache, decode,  # noqa: F401
                       decode_workspace, forward, hash_attention, hash_prepare, hash_unsort, kv_append, merge_attention,
                       scaled_dot_product_attention, topk_mask)
