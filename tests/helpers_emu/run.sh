#!/usr/bin/env bash
# tests/helpers_emu/run.sh -- runs the generated hash_sort, permute and topk
# (fp32) kernels on the host, without a GPU (builtins emulated by
# tests/merge_emu/emu.h, a block's threads as std::threads), on packed
# batches against host computations (main.cpp), built with ASan and UBSan so
# that an access out of bounds fails. A check of the kernels' logic for
# machines without a GPU, run by hand (not part of CTest: it needs a C++20
# compiler); the GPU suite is tests/test_gpu_helpers.c (tcase varlen).
#   bash tests/helpers_emu/run.sh [BUILD_DIR]     (default build)
set -euo pipefail
cd "$(dirname "$0")/../.."
build=$(cd "${1:-build}" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for k in "hash_sort hashsort sort" "permute permute permute" "topk topk_fp32 topk --dtype fp32"; do
  set -- $k
  "$build/gen/sfa-gen" --pass "$1" "${@:4}" --arch 90 --no-cubin --out "$tmp/$3" >/dev/null
  # extern shared memory: one host buffer; no unroll pragmas
  sed -e 's|extern __shared__ __align__(16) \([a-z0-9]*\) \([a-z_]*\)\[\];|\1 *\2 = (\1 *)emu_dyn_smem;|' \
      -e 's|#pragma unroll.*||' "$tmp/$3/sfa_$2_sm90.cu" > "$tmp/$3.inc"
  if grep -q 'asm(' "$tmp/$3.inc"; then
    echo "helpers_emu: the $1 kernel has inline PTX that emu.h does not emulate" >&2
    exit 1
  fi
done
${CXX:-g++} -std=c++20 -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined \
  -Wno-unknown-pragmas -I tests/merge_emu -I "$tmp" tests/helpers_emu/main.cpp -o "$tmp/emu" \
  -L"$build" -lsfa -Wl,-rpath,"$build" -lpthread
"$tmp/emu"
