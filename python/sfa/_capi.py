"""_capi.py -- loads libsfa.so and declares the part of include/sfa.h that the
binding calls, with ctypes.

Which library: $SFA_LIBRARY when set, else the copy inside this package (what
`pip install .` puts there), else build/libsfa.so of the source checkout this
package sits in (development), else ImportError saying how to get one.

Nothing here is a copy that can drift silently: the mode, dtype and status
names come from the library (sfa_mode_name, sfa_dtype_name,
sfa_status_string), and every ctypes struct below is compared field by field
with the library's own layout (sfa_abi_size, sfa_abi_offset) at import. A
difference raises AbiMismatchError (an ImportError) naming the struct and the
field. Needs no torch."""
import ctypes
import os

HERE = os.path.dirname(os.path.abspath(__file__))
LIBNAME = "libsfa.so"

# sfa_abi_struct (include/sfa.h): the kinds sfa_abi_size / sfa_abi_offset take.
ABI_TENSOR, ABI_PARAMS, ABI_EXTRAS, ABI_OPTIONS, ABI_KERNEL_SPEC, ABI_HOST_EXTRAS, ABI_KV_CACHE = range(7)

_REMEDY = ("The library and this Python package come from different versions of sfa: "
           "rebuild the library (cmake --build build) or reinstall the package (pip install .), "
           "or unset SFA_LIBRARY if it names another build.")


class AbiMismatchError(ImportError):
    """The loaded libsfa.so does not match the structs this package declares."""


class LibraryNotFoundError(ImportError):
    """No libsfa.so could be loaded."""


def library_candidates(environ=None, here=HERE):
    """(where, path) pairs in the order they are tried. $SFA_LIBRARY, when set,
    is the only one: a wrong value is an error, not a reason to load another
    library."""
    environ = os.environ if environ is None else environ
    env = environ.get("SFA_LIBRARY")
    if env:
        return [("$SFA_LIBRARY", env)]
    return [("the package", os.path.join(here, LIBNAME)),
            ("the source checkout", os.path.normpath(os.path.join(here, "..", "..", "build", LIBNAME)))]


def load_library(environ=None, here=HERE):
    """(ctypes.CDLL, path) of the first candidate that exists; ImportError
    (LibraryNotFoundError) with what to do when none does or it cannot be
    loaded."""
    for where, path in library_candidates(environ, here):
        if where != "$SFA_LIBRARY" and not os.path.exists(path):
            continue
        if not os.path.exists(path):
            raise LibraryNotFoundError(f"sfa: SFA_LIBRARY is {path!r}, which does not exist; point it at a "
                                       f"built libsfa.so or unset it")
        try:
            return ctypes.CDLL(os.path.abspath(path)), os.path.abspath(path)
        except OSError as e:
            raise LibraryNotFoundError(
                f"sfa: cannot load {path} (from {where}): {e}. A library it needs is missing: "
                f"reinstall the package (pip install .) or rebuild (cmake --build build)") from e
    raise LibraryNotFoundError(
        "sfa: libsfa.so is not built. Install the package with `pip install .` from the sfa source "
        "tree (it builds libsfa.so and puts it inside the package), or build the checkout with "
        "`cmake -S . -B build && cmake --build build` (its build/libsfa.so is then used), "
        "or set SFA_LIBRARY=/path/to/libsfa.so")


def _need(lib, path, name):
    try:
        return getattr(lib, name)
    except AttributeError:
        raise AbiMismatchError(f"sfa: {path} has no function {name}: it is older than this Python package. "
                               + _REMEDY) from None


lib, LIBRARY_PATH = load_library()

for _name in ("sfa_version", "sfa_version_number", "sfa_abi_size", "sfa_abi_offset", "sfa_mode_name",
              "sfa_dtype_name", "sfa_status_string"):
    _need(lib, LIBRARY_PATH, _name)
lib.sfa_version.argtypes = []
lib.sfa_version.restype = ctypes.c_char_p
lib.sfa_version_number.argtypes = []
lib.sfa_version_number.restype = ctypes.c_int
lib.sfa_abi_size.argtypes = [ctypes.c_int]
lib.sfa_abi_size.restype = ctypes.c_size_t
lib.sfa_abi_offset.argtypes = [ctypes.c_int, ctypes.c_char_p]
lib.sfa_abi_offset.restype = ctypes.c_long
for _f in (lib.sfa_mode_name, lib.sfa_dtype_name, lib.sfa_status_string):
    _f.argtypes = [ctypes.c_int]
    _f.restype = ctypes.c_char_p

VERSION = lib.sfa_version().decode()
VERSION_NUMBER = lib.sfa_version_number()


def _names(fn, limit=256):
    out = {}
    for i in range(limit):
        s = fn(i)
        if s is None:
            break
        out[s.decode()] = i
    return out


MODE = _names(lib.sfa_mode_name)    # {"dense": 0, "qk_drop": 1, ...}
DTYPE = _names(lib.sfa_dtype_name)  # {"fp16": 0, "bf16": 1, ...}
STATUS = {}                         # {"ok": 0, "invalid argument": 1, ...}
for _i in range(256):
    _s = lib.sfa_status_string(_i).decode()
    if _s == "unknown status":
        break
    STATUS[_s] = _i
for _what, _table, _keys in (("mode", MODE, ("dense", "qk_drop", "hash", "window")),
                             ("dtype", DTYPE, ("fp16", "bf16", "fp32", "int32", "uint8")),
                             ("status", STATUS, ("ok", "invalid argument", "unsupported"))):
    for _k in _keys:
        if _k not in _table:
            raise AbiMismatchError(f"sfa: {LIBRARY_PATH} does not name the {_what} {_k!r} that this package "
                                   f"uses (it has {', '.join(_table)}). " + _REMEDY)
STATUS_INVALID_ARGUMENT = STATUS["invalid argument"]
STATUS_UNSUPPORTED = STATUS["unsupported"]

# SFA_MAX_RANK: the length of sfa_tensor.shape, from its layout.
_shape_at = lib.sfa_abi_offset(ABI_TENSOR, b"shape")
_strides_at = lib.sfa_abi_offset(ABI_TENSOR, b"strides")
if _shape_at < 0 or _strides_at <= _shape_at or (_strides_at - _shape_at) % 8:
    raise AbiMismatchError(f"sfa: {LIBRARY_PATH}: sfa_tensor has shape at byte {_shape_at} and strides at "
                           f"byte {_strides_at}; this package expects two int64 arrays. " + _REMEDY)
SFA_MAX_RANK = (_strides_at - _shape_at) // 8


class Tensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("dtype", ctypes.c_int), ("rank", ctypes.c_int),
                ("shape", ctypes.c_int64 * SFA_MAX_RANK), ("strides", ctypes.c_int64 * SFA_MAX_RANK)]


class Params(ctypes.Structure):
    _fields_ = [("mode", ctypes.c_int), ("causal", ctypes.c_int), ("scale", ctypes.c_float),
                ("window_left", ctypes.c_int), ("window_right", ctypes.c_int),
                ("deterministic", ctypes.c_int), ("strict_causal", ctypes.c_int),
                ("softcap", ctypes.c_float)]


class Extras(ctypes.Structure):
    _fields_ = [(n, ctypes.POINTER(Tensor)) for n in
                ("q_idx", "k_idx", "q_hash", "k_hash", "bias", "mask", "alibi_slopes",
                 "cu_seqlens_q", "cu_seqlens_k")] + [("max_seqlen_k", ctypes.c_int64)]


class Options(ctypes.Structure):
    _fields_ = [("cache_dir", ctypes.c_char_p), ("device", ctypes.c_int), ("verbose", ctypes.c_int),
                ("tune", ctypes.c_int), ("mma", ctypes.c_int)]


class KernelSpec(ctypes.Structure):
    _fields_ = [("pass_", ctypes.c_int), ("mode", ctypes.c_int), ("dtype", ctypes.c_int),
                ("head_dim", ctypes.c_int), ("block_m", ctypes.c_int), ("block_n", ctypes.c_int),
                ("num_warps", ctypes.c_int), ("num_stages", ctypes.c_int), ("arch", ctypes.c_int),
                ("flags", ctypes.c_uint), ("mma", ctypes.c_int)]


class HostExtras(ctypes.Structure):
    _fields_ = [("q_idx", ctypes.POINTER(ctypes.c_int32)), ("k_idx", ctypes.POINTER(ctypes.c_int32)),
                ("q_hash", ctypes.POINTER(ctypes.c_int32)), ("k_hash", ctypes.POINTER(ctypes.c_int32)),
                ("bias", ctypes.POINTER(ctypes.c_float)), ("bias_heads", ctypes.c_int),
                ("bias_rows", ctypes.c_int), ("mask", ctypes.POINTER(ctypes.c_uint8)),
                ("mask_heads", ctypes.c_int), ("mask_rows", ctypes.c_int), ("bias_batches", ctypes.c_int),
                ("mask_batches", ctypes.c_int), ("alibi_slopes", ctypes.POINTER(ctypes.c_float)),
                ("alibi_batches", ctypes.c_int)]


class KvCache(ctypes.Structure):
    _fields_ = [(n, ctypes.POINTER(Tensor))
                for n in ("k", "v", "page_table", "seqused", "kv_indices", "k_hash", "q_hash")]


# (ctypes struct, sfa_abi_struct kind, C name); a ctypes field named "x_" is C's "x"
# (pass is a Python keyword).
STRUCTS = [(Tensor, ABI_TENSOR, "sfa_tensor"), (Params, ABI_PARAMS, "sfa_attention_params"),
           (Extras, ABI_EXTRAS, "sfa_extras"), (Options, ABI_OPTIONS, "sfa_options"),
           (KernelSpec, ABI_KERNEL_SPEC, "sfa_kernel_spec"), (HostExtras, ABI_HOST_EXTRAS, "sfa_host_extras"),
           (KvCache, ABI_KV_CACHE, "sfa_kv_cache")]


def check_struct(cls, kind, cname, lib=lib, path=None):
    """Compare the ctypes struct cls with the library's struct `kind`: each
    field's offset, then the size. AbiMismatchError names the struct and the
    field that differ."""
    path = path or LIBRARY_PATH
    size = lib.sfa_abi_size(kind)
    if size == 0:
        raise AbiMismatchError(f"sfa: {path} does not describe {cname} (sfa_abi_size({kind}) is 0). " + _REMEDY)
    for field in cls._fields_:
        pyname = field[0]
        name = pyname[:-1] if pyname.endswith("_") else pyname
        want = lib.sfa_abi_offset(kind, name.encode())
        have = getattr(cls, pyname).offset
        if want < 0:
            raise AbiMismatchError(f"sfa: {cname}.{name}, which this package declares, is not a member of "
                                   f"{cname} in {path}. " + _REMEDY)
        if want != have:
            raise AbiMismatchError(f"sfa: {cname}.{name} is at byte {want} in {path} but at byte {have} in "
                                   f"this package's declaration (sfa/_capi.py). " + _REMEDY)
    if ctypes.sizeof(cls) != size:
        raise AbiMismatchError(f"sfa: sizeof({cname}) is {size} in {path} but {ctypes.sizeof(cls)} in this "
                               f"package's declaration (sfa/_capi.py): a member is missing or has another "
                               f"type. " + _REMEDY)


def check_abi(lib=lib, path=None):
    for cls, kind, cname in STRUCTS:
        check_struct(cls, kind, cname, lib, path)


check_abi()

_P = ctypes.POINTER
_T = _P(Tensor)
_vp, _int, _st = ctypes.c_void_p, ctypes.c_int, ctypes.c_int
_SIGNATURES = {
    "sfa_context_create": ([_P(ctypes.c_void_p), _P(Options)], _st),
    "sfa_context_destroy": ([_vp], None),
    "sfa_last_error": ([_vp], ctypes.c_char_p),
    "sfa_options_init": ([_P(Options)], None),
    "sfa_params_init": ([_P(Params)], None),
    "sfa_forward": ([_vp, _P(Params), _T, _T, _T, _P(Extras), _T, _T, _vp], _st),
    "sfa_backward": ([_vp, _P(Params), _T, _T, _T, _P(Extras)] + [_T] * 7 + [_vp], _st),
    "sfa_hash_prepare": ([_vp, _T, _int] + [_T] * 6 + [_vp], _st),
    "sfa_hash_unsort": ([_vp, _T, _T, _T, _vp], _st),
    "sfa_topk_mask": ([_vp, _T, _int, _int, _T, _vp], _st),
    "sfa_hash_prepare_varlen": ([_vp, _T, _T, _int] + [_T] * 6 + [_vp], _st),
    "sfa_hash_unsort_varlen": ([_vp, _T, _T, _T, _T, _vp], _st),
    "sfa_topk_mask_varlen": ([_vp, _T, _T, _T, _int, _int, _T, _vp], _st),
    "sfa_backward_dlse": ([_vp, _P(Params), _T, _T, _T, _P(Extras)] + [_T] * 8 + [_vp], _st),
    "sfa_merge_attention": ([_vp, _T, _T, _T, _T, _vp], _st),
    "sfa_decode": ([_vp, _P(Params), _T, _P(KvCache), _T, _T, _vp], _st),
    "sfa_decode_workspace_size": ([_vp, _P(Params), _T, _P(KvCache), _P(ctypes.c_size_t)], _st),
    "sfa_decode_with_workspace": ([_vp, _P(Params), _T, _P(KvCache), _T, _T, _vp, ctypes.c_size_t, _vp], _st),
    "sfa_kv_append": ([_vp, _P(KvCache), _T, _T, _vp], _st),
    "sfa_kv_append_hash": ([_vp, _P(KvCache), _T, _T, _T, _vp], _st),
    "sfa_check_kv_cache": ([_vp, _P(KvCache), _int, _vp], _st),
    "sfa_reference_forward": ([_P(Params)] + [_int] * 6 + [_P(ctypes.c_float)] * 3 + [_P(HostExtras)]
                              + [_P(ctypes.c_float)] * 2 + [ctypes.c_char_p, ctypes.c_size_t], _st),
    "sfa_reference_backward": ([_P(Params)] + [_int] * 6 + [_P(ctypes.c_float)] * 3 + [_P(HostExtras)]
                               + [_P(ctypes.c_float)] * 5 + [ctypes.c_char_p, ctypes.c_size_t], _st),
    "sfa_reference_backward_dlse": ([_P(Params)] + [_int] * 6 + [_P(ctypes.c_float)] * 3 + [_P(HostExtras)]
                                    + [_P(ctypes.c_float)] * 6 + [ctypes.c_char_p, ctypes.c_size_t], _st),
    "sfa_reference_merge": ([_int, ctypes.c_int64, _int] + [_P(ctypes.c_float)] * 4
                            + [ctypes.c_char_p, ctypes.c_size_t], _st),
}
for _name, (_args, _res) in _SIGNATURES.items():
    _f = _need(lib, LIBRARY_PATH, _name)
    _f.argtypes, _f.restype = _args, _res
