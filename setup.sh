#!/usr/bin/env bash
# setup.sh -- the two set-up commands of the README.
#   bash setup.sh        install what is missing, build, run the main job:
#                        generate + compile the default kernel set (sfa-gen), and
#                        on a machine with a GPU run and verify the example.
#   bash setup.sh test   the same set-up, then every test (ctest).
# Works on a fresh Debian/Ubuntu with the CUDA toolkit (NVRTC) installed.
set -euo pipefail
cd "$(dirname "$0")"
what=${1:-main}
case "$what" in
  main|test) ;;
  -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
  *) echo "setup.sh: unknown command '$what' (use: main, test)" >&2; exit 2 ;;
esac

# 1. Debian packages, only those missing.
need=()
for p in cmake gcc make pkg-config liblua5.4-dev check libxxhash-dev; do
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

# 3. Build.
jobs=$(nproc 2>/dev/null || echo 2)
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DCUDAToolkit_ROOT="$CUDA_HOME" >/dev/null
cmake --build build -j"$jobs"

if [ "$what" = test ]; then
  cd build
  ctest --output-on-failure -j"$jobs"
  exit $?
fi

# 4. Main job: the default kernel set, sources and cubins, for sm_80 and sm_90.
./build/gen/sfa-gen --preset default --arch 80,90 --out build/kernels
echo "setup.sh: kernels and manifest in build/kernels"
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  ./build/examples/dense_forward --seq 4096 --dim 128 --dtype bf16 --causal
  ./build/examples/dense_forward --seq 1000 --seq-k 1500 --dim 64 --dtype fp16 --no-causal
  # the backward of every mode against the CPU reference, on small shapes
  CK_RUN_CASE=small ./build/tests/test_gpu_backward
else
  echo "setup.sh: no GPU here: kernels were generated and compiled, not run"
fi
