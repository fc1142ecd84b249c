"""harness.py -- the small test runner of the Python tests (no pytest on the
GPU machine): @test registers a function, raises() checks an exception and
its message, main() runs them and prints "N passed, N failed, N skipped"
(exit 1 when one failed). It also puts this checkout's python/ first on
sys.path, so the tests import the package of the source tree (with
$SFA_LIBRARY, else build/libsfa.so)."""
import os
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(SOURCE_DIR, "python"))

TESTS = []


class Skip(Exception):
    """Raised by a test that cannot run here; the message says why."""


def test(needs_cuda=False):
    def reg(fn):
        TESTS.append((fn.__name__, fn, needs_cuda))
        return fn
    return reg


def raises(exc, fn, *words):
    """fn() raises exc whose message contains every word (case-insensitive)."""
    try:
        fn()
    except exc as e:
        msg = str(e).lower()
        for w in words:
            assert w.lower() in msg, f"{exc.__name__} message {str(e)!r} does not mention {w!r}"
        return e
    except Exception as e:  # noqa: BLE001
        raise AssertionError(f"expected {exc.__name__}, got {type(e).__name__}: {e}") from e
    raise AssertionError(f"expected {exc.__name__}, nothing was raised")


def header_version():
    """SFA_VERSION_STRING of include/sfa.h."""
    with open(os.path.join(SOURCE_DIR, "include", "sfa.h")) as f:
        for line in f:
            if line.startswith("#define SFA_VERSION_STRING"):
                return line.split('"')[1]
    raise AssertionError("include/sfa.h has no SFA_VERSION_STRING")


def main(cuda=False, header=""):
    if header:
        print(header)
    passed = failed = skipped = 0
    only = set(sys.argv[1:])
    for name, fn, needs_cuda in TESTS:
        if only and name not in only:
            continue
        if needs_cuda and not cuda:
            print(f"skip {name} (no CUDA device)")
            skipped += 1
            continue
        t0 = time.time()
        try:
            fn()
        except Skip as e:
            skipped += 1
            print(f"skip {name} ({e})")
        except Exception as e:  # noqa: BLE001
            failed += 1
            print(f"FAIL {name}: {type(e).__name__}: {e}")
            if not isinstance(e, AssertionError):
                traceback.print_exc()
        else:
            passed += 1
            print(f"ok   {name} ({time.time() - t0:.1f} s)")
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0
