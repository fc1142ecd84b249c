"""_capi.py -- ctypes declarations of include/sfa.h (the subset the binding uses).

Loads libsfa.so from $SFA_LIBRARY, else from the build tree next to this
package (build/libsfa.so), else from the system library path."""
import ctypes
import os

SFA_MAX_RANK = 4
DTYPE = {"fp16": 0, "bf16": 1, "fp32": 2, "int32": 3, "uint8": 4}
MODE = {"dense": 0, "qk_drop": 1, "hash": 2, "window": 3}
STATUS_INVALID_ARGUMENT = 1
STATUS_UNSUPPORTED = 2


class Tensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("dtype", ctypes.c_int), ("rank", ctypes.c_int),
                ("shape", ctypes.c_int64 * SFA_MAX_RANK), ("strides", ctypes.c_int64 * SFA_MAX_RANK)]


class Params(ctypes.Structure):
    _fields_ = [("mode", ctypes.c_int), ("causal", ctypes.c_int), ("scale", ctypes.c_float),
                ("window_left", ctypes.c_int), ("window_right", ctypes.c_int),
                ("deterministic", ctypes.c_int)]


class Extras(ctypes.Structure):
    _fields_ = [(n, ctypes.POINTER(Tensor)) for n in
                ("q_idx", "k_idx", "q_hash", "k_hash", "bias", "mask")]


class Options(ctypes.Structure):
    _fields_ = [("cache_dir", ctypes.c_char_p), ("device", ctypes.c_int), ("verbose", ctypes.c_int),
                ("tune", ctypes.c_int), ("mma", ctypes.c_int)]


def _find_library():
    env = os.environ.get("SFA_LIBRARY")
    if env:
        return env
    here = os.path.dirname(os.path.abspath(__file__))
    cand = os.path.join(here, "..", "..", "build", "libsfa.so")
    if os.path.exists(cand):
        return cand
    return "libsfa.so"


lib = ctypes.CDLL(_find_library())
lib.sfa_context_create.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(Options)]
lib.sfa_context_create.restype = ctypes.c_int
lib.sfa_context_destroy.argtypes = [ctypes.c_void_p]
lib.sfa_context_destroy.restype = None
lib.sfa_last_error.argtypes = [ctypes.c_void_p]
lib.sfa_last_error.restype = ctypes.c_char_p
lib.sfa_status_string.argtypes = [ctypes.c_int]
lib.sfa_status_string.restype = ctypes.c_char_p
lib.sfa_options_init.argtypes = [ctypes.POINTER(Options)]
lib.sfa_options_init.restype = None
lib.sfa_params_init.argtypes = [ctypes.POINTER(Params)]
lib.sfa_params_init.restype = None
lib.sfa_forward.argtypes = [ctypes.c_void_p, ctypes.POINTER(Params)] + [ctypes.POINTER(Tensor)] * 3 + [
    ctypes.POINTER(Extras), ctypes.POINTER(Tensor), ctypes.POINTER(Tensor), ctypes.c_void_p]
lib.sfa_forward.restype = ctypes.c_int
lib.sfa_hash_prepare.argtypes = [ctypes.c_void_p, ctypes.POINTER(Tensor), ctypes.c_int] + [
    ctypes.POINTER(Tensor)] * 6 + [ctypes.c_void_p]
lib.sfa_hash_prepare.restype = ctypes.c_int
lib.sfa_hash_unsort.argtypes = [ctypes.c_void_p] + [ctypes.POINTER(Tensor)] * 3 + [ctypes.c_void_p]
lib.sfa_hash_unsort.restype = ctypes.c_int
lib.sfa_topk_mask.argtypes = [ctypes.c_void_p, ctypes.POINTER(Tensor), ctypes.c_int, ctypes.c_int,
                              ctypes.POINTER(Tensor), ctypes.c_void_p]
lib.sfa_topk_mask.restype = ctypes.c_int
lib.sfa_backward.argtypes = [ctypes.c_void_p, ctypes.POINTER(Params)] + [ctypes.POINTER(Tensor)] * 3 + [
    ctypes.POINTER(Extras)] + [ctypes.POINTER(Tensor)] * 7 + [ctypes.c_void_p]
lib.sfa_backward.restype = ctypes.c_int
