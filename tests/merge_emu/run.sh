#!/usr/bin/env bash
# tests/merge_emu/run.sh -- runs the merge kernel's generated CUDA source
# (sfa-gen --pass merge) on the host, without a GPU: emu.h emulates the few
# builtins it uses (each group of lanes as std::threads, shuffles and
# __any_sync through a barrier, the fp16/bf16 conversions by sfa.h's host
# ones), main.cpp runs random partials (every dtype pair, N 1..100, D 1..256,
# strided, padded and misaligned layouts, -inf / NaN / +inf lse, poisoned
# outputs, one-CTA grids for the grid-stride loop) against
# sfa_reference_merge. A check of the kernel's logic for machines without a
# GPU, run by hand (not part of CTest: it needs a C++20 compiler); the GPU
# suite is tests/test_gpu_merge.c.
#   bash tests/merge_emu/run.sh [BUILD_DIR]     (default build)
set -euo pipefail
cd "$(dirname "$0")/../.."
build=$(cd "${1:-build}" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$build/gen/sfa-gen" --pass merge --arch 90 --no-cubin --out "$tmp/k" >/dev/null
sed -e 's|asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x));|f = emu_h2f(x);|' \
    -e 's|asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r) : "f"(f));|r = emu_f2h(f);|' \
    -e 's|asm("cvt.rn.bf16x2.f32 %0, 0f00000000, %1;" : "=r"(r) : "f"(f));|r = emu_f2bf(f);|' \
    -e 's|#pragma unroll||' "$tmp/k/sfa_merge_sm90.cu" > "$tmp/kernel.inc"
if grep -q 'asm(' "$tmp/kernel.inc"; then
  echo "merge_emu: the kernel has inline PTX that emu.h does not emulate" >&2
  exit 1
fi
${CXX:-g++} -std=c++20 -O1 -Wno-unknown-pragmas -I tests/merge_emu -I "$tmp" tests/merge_emu/main.cpp \
  -o "$tmp/emu" -L"$build" -lsfa -Wl,-rpath,"$build" -lpthread
"$tmp/emu"
