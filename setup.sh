#!/usr/bin/env bash
# setup.sh -- the two set-up commands of the README.
#   bash setup.sh        install what is missing, build, install into build/install
#                        (or $PREFIX), generate + compile the small default kernel set
#                        (sfa-gen --preset small, sm_80 and sm_90) into build/kernels,
#                        and on a machine with a GPU run and verify them.
#   bash setup.sh test   the same set-up, then every test: the Check suites and the
#                        install/pip tests (ctest), then the CPU suites again under
#                        AddressSanitizer + UBSan and the fuzz targets (tests/sanitize.sh).
# Works on a fresh Debian/Ubuntu with the CUDA toolkit (NVRTC) installed.
set -euo pipefail
cd "$(dirname "$0")"
what=${1:-main}
case "$what" in
  main|test) ;;
  -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
  *) echo "setup.sh: unknown command '$what' (use: main, test)" >&2; exit 2 ;;
esac
t_start=$(date +%s)

# 1. Debian packages, only those missing (clang: the sanitizer and fuzz build).
pkgs=(cmake gcc make pkg-config liblua5.4-dev check libxxhash-dev)
[ "$what" = test ] && pkgs+=(clang python3-venv)
need=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "setup.sh: installing ${need[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi

# 2. The CUDA toolkit (NVRTC) cannot come from Debian at version 13: require it.
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
if [ ! -f "$CUDA_HOME/include/nvrtc.h" ]; then
  echo "setup.sh: the CUDA toolkit (with NVRTC) is not at $CUDA_HOME; install CUDA 12 or 13 and set CUDA_HOME" >&2
  exit 1
fi
export PATH="$CUDA_HOME/bin:$PATH"

# 3. Build and install.
jobs=$(nproc 2>/dev/null || echo 2)
prefix=${PREFIX:-$PWD/build/install}
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DCUDAToolkit_ROOT="$CUDA_HOME" \
      -DCMAKE_INSTALL_PREFIX="$prefix" >/dev/null
cmake --build build -j"$jobs"
cmake --install build >/dev/null
echo "setup.sh: installed into $prefix (include/sfa.h, lib/libsfa.so, lib/cmake/sfa, lib/pkgconfig/sfa.pc, bin/sfa-*)"

if [ "$what" = test ]; then
  # The pip test installs into a fresh virtual environment without a network
  # when the build backend's wheels are at hand: fetch them while one is here.
  wheels=build/wheelhouse
  if [ -z "${SFA_WHEELHOUSE:-}" ] && command -v python3 >/dev/null &&
     python3 -m pip download -q --only-binary=:all: -d "$wheels" scikit-build-core >/dev/null 2>&1; then
    export SFA_WHEELHOUSE=$PWD/$wheels
  fi
  (cd build && ctest --output-on-failure -j"$jobs")
  bash tests/sanitize.sh
  echo "setup.sh: all tests passed in $(( $(date +%s) - t_start )) s"
  exit 0
fi

# 4. Main job: the small default kernel set, sources and cubins, for sm_80 and
# sm_90; kernels already in build/kernels with a matching manifest row are kept.
"$prefix/bin/sfa-gen" --preset small --arch 80,90 --out build/kernels
echo "setup.sh: kernels and manifest in build/kernels (use them with SFA_KERNEL_DIR=$PWD/build/kernels)"
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  # served from build/kernels: no NVRTC compile for these two
  SFA_KERNEL_DIR=$PWD/build/kernels ./build/examples/dense_forward --seq 4096 --dim 128 --dtype bf16 --causal
  SFA_KERNEL_DIR=$PWD/build/kernels ./build/examples/dense_forward --seq 1000 --seq-k 1500 --dim 64 --dtype fp16 --no-causal
  ./build/examples/quickstart
  # the backward of every mode against the CPU reference, on small shapes
  CK_RUN_CASE=small ./build/tests/test_gpu_backward
else
  echo "setup.sh: no GPU here: kernels were generated and compiled, not run"
fi
echo "setup.sh: done in $(( $(date +%s) - t_start )) s"
