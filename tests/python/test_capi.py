#!/usr/bin/env python3
"""test_capi.py -- the parts of the Python binding that need no torch and no
GPU: loading libsfa (the order $SFA_LIBRARY, the package's copy, the source
checkout's build/, and the ImportError when there is none), sfa.__version__
against include/sfa.h, the check of every ctypes struct against the
library's layout (and that a wrong struct is caught, naming the field), the
names taken from the library, and the range checks of Python ints and floats
before they reach ctypes. Runs everywhere (CTest test_python_capi); the
library is $SFA_LIBRARY, else build/libsfa.so of this checkout."""
import ctypes
import os
import shutil
import subprocess
import sys
import tempfile

from harness import SOURCE_DIR, header_version, main, raises, test

import sfa  # noqa: E402  (harness put python/ on sys.path)
from sfa import _args, _capi  # noqa: E402


# ------------------------------------------------------------------ version

@test()
def version_is_the_headers():
    want = header_version()
    assert sfa.__version__ == want, f"sfa.__version__ {sfa.__version__!r}, include/sfa.h says {want!r}"
    major, minor, patch = (int(x) for x in want.split("."))
    assert _capi.VERSION_NUMBER == major * 10000 + minor * 100 + patch, _capi.VERSION_NUMBER


@test()
def version_does_not_need_torch():
    """A fresh interpreter that cannot import torch still imports sfa and
    prints the version; the torch functions then say what is missing."""
    code = ("import sys; sys.modules['torch'] = None\n"  # makes `import torch` raise ImportError
            "import sfa; print(sfa.__version__)\n"
            "try:\n    sfa.attention(1, 2, 3)\nexcept ImportError as e:\n    print('needs:', e)\n")
    env = dict(os.environ, PYTHONPATH=os.path.join(SOURCE_DIR, "python"))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == header_version(), r.stdout
    assert "needs: sfa.attention needs PyTorch" in lines[1], r.stdout


# ------------------------------------------------------------------ ABI

@test()
def every_struct_matches_the_library():
    _capi.check_abi()
    for cls, kind, cname in _capi.STRUCTS:
        assert ctypes.sizeof(cls) == _capi.lib.sfa_abi_size(kind), cname
    assert _capi.SFA_MAX_RANK == 4


@test()
def a_field_at_another_offset_is_caught():
    class Params(ctypes.Structure):  # window_left as int64: it moves to byte 16
        _fields_ = [("mode", ctypes.c_int), ("causal", ctypes.c_int), ("scale", ctypes.c_float),
                    ("window_left", ctypes.c_int64), ("window_right", ctypes.c_int),
                    ("deterministic", ctypes.c_int)]
    e = raises(_capi.AbiMismatchError, lambda: _capi.check_struct(Params, _capi.ABI_PARAMS, "sfa_attention_params"),
               "sfa_attention_params.window_left", "byte 12", "byte 16", "rebuild", "pip install")
    assert isinstance(e, ImportError)


@test()
def a_field_the_library_lacks_is_caught():
    class Tensor(ctypes.Structure):
        _fields_ = list(_capi.Tensor._fields_) + [("device", ctypes.c_int)]
    raises(ImportError, lambda: _capi.check_struct(Tensor, _capi.ABI_TENSOR, "sfa_tensor"),
           "sfa_tensor.device", "not a member")


@test()
def a_missing_last_field_is_caught_by_the_size():
    class Params(ctypes.Structure):  # without softcap: every offset still matches
        _fields_ = list(_capi.Params._fields_)[:-1]
    raises(ImportError, lambda: _capi.check_struct(Params, _capi.ABI_PARAMS, "sfa_attention_params"),
           "sizeof(sfa_attention_params)", "28", "32", "missing")


@test()
def the_check_reads_the_library_not_a_copy():
    """A library that reports other offsets (a stand-in object here) fails the
    check of the real declarations: the check compares with what it is told."""
    class Fake:
        def sfa_abi_size(self, kind):
            return _capi.lib.sfa_abi_size(kind)

        def sfa_abi_offset(self, kind, name):
            off = _capi.lib.sfa_abi_offset(kind, name)
            return off + 8 if (kind, name) == (_capi.ABI_EXTRAS, b"mask") else off
    raises(ImportError, lambda: _capi.check_abi(Fake(), "libfake.so"), "sfa_extras.mask", "libfake.so")


@test()
def names_come_from_the_library():
    for i, name in enumerate(("dense", "qk_drop", "hash", "window")):
        assert _capi.MODE[name] == i and _capi.lib.sfa_mode_name(i).decode() == name
    assert len(_capi.MODE) == 4 and _capi.lib.sfa_mode_name(len(_capi.MODE)) is None
    assert _capi.DTYPE == {"fp16": 0, "bf16": 1, "fp32": 2, "int32": 3, "uint8": 4}, _capi.DTYPE
    assert _capi.STATUS_INVALID_ARGUMENT == 1 and _capi.STATUS_UNSUPPORTED == 2


# ------------------------------------------------------------------ loading

def _fake_tree(root, package_copy, build_copy):
    pkg = os.path.join(root, "python", "sfa")
    os.makedirs(pkg)
    os.makedirs(os.path.join(root, "build"))
    if package_copy:
        shutil.copy(_capi.LIBRARY_PATH, os.path.join(pkg, "libsfa.so"))
    if build_copy:
        shutil.copy(_capi.LIBRARY_PATH, os.path.join(root, "build", "libsfa.so"))
    return pkg


@test()
def library_order_env_then_package_then_checkout():
    with tempfile.TemporaryDirectory() as root:
        pkg = _fake_tree(root, True, True)
        _, path = _capi.load_library({}, pkg)
        assert path == os.path.join(pkg, "libsfa.so"), path
        os.remove(os.path.join(pkg, "libsfa.so"))
        _, path = _capi.load_library({}, pkg)
        assert path == os.path.join(root, "build", "libsfa.so"), path
        _, path = _capi.load_library({"SFA_LIBRARY": _capi.LIBRARY_PATH}, pkg)
        assert path == _capi.LIBRARY_PATH, path


@test()
def no_library_is_an_import_error_that_says_what_to_do():
    with tempfile.TemporaryDirectory() as root:
        pkg = _fake_tree(root, False, False)
        e = raises(ImportError, lambda: _capi.load_library({}, pkg), "pip install .", "cmake", "SFA_LIBRARY")
        assert not isinstance(e, OSError)
        raises(ImportError, lambda: _capi.load_library({"SFA_LIBRARY": os.path.join(root, "nope.so")}, pkg),
               "SFA_LIBRARY", "nope.so", "does not exist")
        junk = os.path.join(root, "junk.so")
        with open(junk, "w") as f:
            f.write("not a library")
        raises(ImportError, lambda: _capi.load_library({"SFA_LIBRARY": junk}, pkg), "cannot load", "junk.so")


@test()
def import_without_a_build_fails_with_the_message():
    """`import sfa` from a copy of the package with no library anywhere: an
    ImportError with instructions, not a bare OSError."""
    with tempfile.TemporaryDirectory() as root:
        shutil.copytree(os.path.join(SOURCE_DIR, "python", "sfa"), os.path.join(root, "python", "sfa"),
                        ignore=shutil.ignore_patterns("*.so*", "__pycache__"))
        env = {k: v for k, v in os.environ.items() if k != "SFA_LIBRARY"}
        env["PYTHONPATH"] = os.path.join(root, "python")
        r = subprocess.run([sys.executable, "-c", "import sfa"], env=env, capture_output=True, text=True,
                           cwd=root, timeout=120)
        assert r.returncode != 0, "import sfa succeeded without a library"
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith("sfa._capi.LibraryNotFoundError: sfa: libsfa.so is not built"), r.stderr
        assert "pip install ." in last and "OSError" not in r.stderr, r.stderr


# ------------------------------------------------------------------ ranges

@test()
def ints_are_range_checked_before_ctypes():
    # ctypes would keep the low 32 bits: (2**32 + 5, 0) -> (5, 0)
    raises(ValueError, lambda: _args.check_window((2**32 + 5, 0)), "window[0]", "4294967301")
    raises(ValueError, lambda: _args.check_window((0, -2)), "window[1]", "-2")
    raises(ValueError, lambda: _args.check_window((1.5, 0)), "window[0]", "int")
    raises(ValueError, lambda: _args.check_window((True, 0)), "window[0]", "int")
    raises(ValueError, lambda: _args.check_window(7), "pair")
    assert _args.check_window((2**31 - 1, -1)) == (2**31 - 1, -1)
    raises(ValueError, lambda: _args.check_int("num_buckets", 2**32 + 16, 1), "num_buckets", "4294967312")
    raises(ValueError, lambda: _args.check_int("num_buckets", 0, 1), "num_buckets", "[1,")
    raises(ValueError, lambda: _args.check_int("w", -1, 0), "w")


@test()
def scale_is_checked_as_the_library_will_see_it():
    assert _args.check_scale(None) is None and _args.check_scale(0.125) == 0.125
    for bad in (0.0, -1.0, float("nan"), float("inf"), 1e39, 1e-46):  # 1e-46 is 0 as a float32: the default
        raises(ValueError, lambda: _args.check_scale(bad), "scale")
    raises(ValueError, lambda: _args.check_scale("0.1"), "scale", "str")
    assert _args.check_scale(2e-45) == 2e-45  # a float32 denormal, not 0


@test()
def params_struct_gets_checked_values():
    """The ctypes Params of a call: no silent wrap of window values; one
    struct shared per tuple of plain argument values, never for others."""
    try:
        from sfa import _calls
    except ImportError:  # _calls needs torch; the checks it uses are tested above
        print("      (torch not importable: _calls skipped)")
        return
    raises(ValueError, lambda: _calls._params("window", True, None, 2**32 + 5, 0, False), "window[0]")
    p = _calls._params("window", False, 0.5, 2**31 - 1, 3, True)
    assert (p.mode, p.window_left, p.window_right, p.deterministic) == (_capi.MODE["window"], 2**31 - 1, 3, 1)
    # shared per argument tuple of plain values; built afresh for any other value type,
    # whose value could change under an unchanged hash
    assert _calls._params("window", False, 0.5, 2**31 - 1, 3, True) is p
    import fractions
    half = fractions.Fraction(1, 2)
    a, b = _calls._params("dense", True, None, -1, -1, False, softcap=half), \
        _calls._params("dense", True, None, -1, -1, False, softcap=half)
    assert a is not b and a.softcap == b.softcap == 0.5


if __name__ == "__main__":
    sys.exit(main(header=f"sfa {sfa.__version__} from {_capi.LIBRARY_PATH}"))
