"""_args.py -- the binding's errors and the checks of plain Python arguments
(ints, floats, mode names) before they reach ctypes, where a too large int
would be silently truncated (window=(2**32 + 5, 0) would become (5, 0)).
Needs no torch."""
import math
import numbers

INT32_MAX = 2**31 - 1
FLT_MAX = 3.4028234663852886e38
F32_ROUNDS_TO_ZERO = 2.0**-150  # half the smallest float32 denormal: ties round to even, 0


class SfaError(RuntimeError):
    """A call into libsfa failed; the message is the library's."""


class SfaUnsupportedError(SfaError, NotImplementedError):
    """A valid request that this build of libsfa cannot serve (SFA_ERR_UNSUPPORTED),
    e.g. sfa_backward with head dim 144."""


def check_int(name, value, lo, hi=INT32_MAX, what=""):
    """value as a Python int in [lo, hi]; ValueError naming the argument
    otherwise (also for bools, floats and strings). `what` says what the
    bounds mean."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"sfa: {name} must be an int, not {type(value).__name__} ({value!r})")
    v = int(value)
    if not lo <= v <= hi:
        raise ValueError(f"sfa: {name} is {v}; must be in [{lo}, {hi}]{what}")
    return v


def check_window(window):
    """(left, right), each -1 (unbounded) or in [0, INT32_MAX]."""
    try:
        left, right = window
    except (TypeError, ValueError):
        raise ValueError(f"sfa: window must be a pair (left, right), not {window!r}") from None
    return (check_int("window[0] (left)", left, -1, what=" (-1 = unbounded)"),
            check_int("window[1] (right)", right, -1, what=" (-1 = unbounded)"))


def check_scale(scale):
    """None (1/sqrt(head dim)) or a finite float > 0."""
    if scale is None:
        return None
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise ValueError(f"sfa: scale must be a float or None, not {type(scale).__name__}")
    s = float(scale)
    if not math.isfinite(s) or s <= 0 or s > FLT_MAX or f32_is_zero(s):
        raise ValueError(f"sfa: scale is {s}; must be finite and > 0 in float32 (None = 1/sqrt(head dim))")
    return s


def f32_is_zero(x):
    """x rounds to 0 as a float32 (what the library's float gets; a scale of 0
    there means the default). Pure Python, so torch.compile traces it."""
    return abs(x) <= F32_ROUNDS_TO_ZERO


def check_choice(name, value, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"sfa: {name} must be one of {', '.join(choices)}, not {value!r}")
    return value
