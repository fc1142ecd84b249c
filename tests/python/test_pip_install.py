#!/usr/bin/env python3
"""test_pip_install.py -- `pip install .` of this checkout into a fresh virtual
environment, then `python -c "import sfa; print(sfa.__version__)"` from
another directory, with no SFA_LIBRARY and no PYTHONPATH, prints
include/sfa.h's version, and the library it loaded is the package's own copy
(site-packages/sfa/libsfa.so, with liblua5.4.so.0 beside it). Needs no torch
and no GPU.

The build backend (scikit-build-core) must come from somewhere without a
network, else the test is skipped (exit 77) and says why. In this order:
  - SFA_PIP_ONLINE=1: pip may use its package index (plain `pip install .`);
  - SFA_WHEELHOUSE=DIR: a folder with the backend's wheels
    (`pip download scikit-build-core -d DIR`), used with --no-index;
  - scikit-build-core importable by this python3: this python's pip builds
    the wheel (--no-build-isolation --no-index) and the fresh venv installs
    that wheel (--no-index).
`python3 -m venv` must work (Debian: the python3-venv package), else 77.
"""
import os
import subprocess
import sys
import tempfile

from harness import SOURCE_DIR, header_version

SKIP = 77


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def main():
    env = {k: v for k, v in os.environ.items() if k not in ("SFA_LIBRARY", "PYTHONPATH", "PIP_REQUIRE_VIRTUALENV")}
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", "2")
    online = os.environ.get("SFA_PIP_ONLINE") == "1"
    wheelhouse = os.environ.get("SFA_WHEELHOUSE")
    try:
        import scikit_build_core  # noqa: F401
        have_backend = True
    except ImportError:
        have_backend = False
    if online:
        how, venv_args, pip_args = "with the package index (SFA_PIP_ONLINE=1)", [], []
    elif wheelhouse:
        if not os.path.isdir(wheelhouse):
            print(f"FAIL: SFA_WHEELHOUSE={wheelhouse} is not a directory")
            return 1
        how, venv_args, pip_args = (f"offline from SFA_WHEELHOUSE={wheelhouse}", [],
                                    ["--no-index", "--find-links", wheelhouse])
    elif have_backend:
        how, venv_args, pip_args = "offline, as a wheel built with this python's scikit-build-core", [], None
    else:
        print("SKIP: the build backend scikit-build-core is not available offline: it is not importable by "
              f"{sys.executable}, SFA_WHEELHOUSE is not set (pip download scikit-build-core -d DIR) and "
              "SFA_PIP_ONLINE=1 is not set")
        return SKIP
    with tempfile.TemporaryDirectory(prefix="sfa-pip-") as tmp:
        venv = os.path.join(tmp, "venv")
        r = run([sys.executable, "-m", "venv", *venv_args, venv], env=env, timeout=300)
        if r.returncode != 0:
            print(f"SKIP: `{sys.executable} -m venv` does not work here (Debian: install python3-venv):\n"
                  f"{r.stderr.strip()}")
            return SKIP
        py = os.path.join(venv, "bin", "python")
        print(f"pip install {SOURCE_DIR} into a fresh venv, {how}")
        target = SOURCE_DIR
        if pip_args is None:  # the wheel from this python, then installed alone
            wheels = os.path.join(tmp, "wheels")
            r = run([sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check", "--no-index",
                     "--no-build-isolation", "--no-deps", "-w", wheels, SOURCE_DIR], env=env, cwd=tmp, timeout=1200)
            if r.returncode != 0:
                print(f"FAIL: pip wheel exited {r.returncode}\n{r.stdout[-6000:]}\n{r.stderr[-6000:]}")
                return 1
            target = os.path.join(wheels, [f for f in os.listdir(wheels) if f.endswith(".whl")][0])
            print(f"built {os.path.basename(target)}")
            pip_args = ["--no-index"]
        r = run([py, "-m", "pip", "install", "--disable-pip-version-check", *pip_args, target], env=env,
                cwd=tmp, timeout=1200)
        if r.returncode != 0:
            print(f"FAIL: pip install exited {r.returncode}\n{r.stdout[-6000:]}\n{r.stderr[-6000:]}")
            return 1
        print("\n".join(line for line in r.stdout.splitlines() if "Successfully" in line))
        code = "import sfa; print(sfa.__version__)"
        r = run([py, "-c", code], env=env, cwd=tmp, timeout=300)
        print(f'$ python -c "{code}"\n{r.stdout.strip()}')
        if r.returncode != 0 or r.stdout.strip() != header_version():
            print(f"FAIL: expected {header_version()!r} (include/sfa.h), exit {r.returncode}\n{r.stderr}")
            return 1
        r = run([py, "-c", "import os, sfa; print(os.path.dirname(sfa.__file__)); print(sfa.library_path)"],
                env=env, cwd=tmp, timeout=300)
        pkg, lib = r.stdout.split()
        ok = (pkg.startswith(venv) and lib == os.path.join(pkg, "libsfa.so")
              and os.path.exists(os.path.join(pkg, "liblua5.4.so.0")))
        print(f"package {pkg}\nlibrary {lib}")
        if not ok:
            print("FAIL: sfa is not the installed package, or it did not load its own libsfa.so / liblua5.4.so.0")
            return 1
    print("1 passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
