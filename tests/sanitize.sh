#!/usr/bin/env bash
# tests/sanitize.sh -- the sanitizer build: configures a second build directory
# (default build-sanitize) with clang and -fsanitize=address,undefined
# (SFA_SANITIZE=ON; UBSan findings abort, leaks are reported), builds the
# suites, tools and fuzz targets there (libFuzzer ones under clang), and runs
# the CPU suites -- every test except test_compile_variants (NVRTC dominates
# it), the GPU suites and the Python binding -- and each fuzz target for
# $SFA_FUZZ_SECONDS seconds (default here 15). Exit status: 0 when every test
# passed and no sanitizer reported anything.
#   bash tests/sanitize.sh [BUILD_DIR]
# Environment: CC (default clang where installed, else cc: ASan and UBSan
# without libFuzzer, the fuzz targets then run fuzz_driver.c), CUDA_HOME,
# JOBS (default: the CPU count), SFA_FUZZ_SECONDS, SFA_FUZZ_TMPDIR (default
# /dev/shm where writable), ASAN_OPTIONS, UBSAN_OPTIONS.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build-sanitize}
cc=${CC:-$(command -v clang || command -v cc)}
jobs=${JOBS:-$(nproc 2>/dev/null || echo 2)}
export SFA_FUZZ_SECONDS=${SFA_FUZZ_SECONDS:-15}
# the fuzz targets' files on a tmpfs where there is one: the tuning db fsyncs
if [ -z "${SFA_FUZZ_TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then
  export SFA_FUZZ_TMPDIR=/dev/shm
fi
# Reports go to files in $dir/sanitizer-logs, so that none is lost where a test
# runs a tool and only checks that it failed; any report fails this script.
# intercept_tls_get_addr=0: clang 14's LeakSanitizer misreads the dynamic TLS
# of a dlopen'd library (NVRTC) under Debian 12's glibc and dies ("Tracer
# caught signal 11"); without the interception it does not look there.
case "$dir" in /*) logs="$dir/sanitizer-logs" ;; *) logs="$PWD/$dir/sanitizer-logs" ;; esac
rm -rf "$logs"
mkdir -p "$logs"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:intercept_tls_get_addr=0:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1:log_path=$logs/asan}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1:log_path=$logs/ubsan}

start=$(date +%s)
cmake -S . -B "$dir" -DCMAKE_C_COMPILER="$cc" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DSFA_SANITIZE=ON -DSFA_FUZZ=ON -DSFA_BUILD_SHARED=OFF \
  -DCUDAToolkit_ROOT="${CUDA_HOME:-/usr/local/cuda}" >/dev/null
cmake --build "$dir" -j"$jobs" --target sfa_sanitize_targets
built=$(date +%s)
cd "$dir"
rc=0
ctest -j"$jobs" --output-on-failure \
  -E '^(test_compile_variants|test_gpu_.*|test_python_.*)$' || rc=$?
for f in "$logs"/*; do
  [ -e "$f" ] || continue
  echo "sanitize.sh: sanitizer report $f:"
  head -40 "$f"
  [ $rc -ne 0 ] || rc=1
done
echo "sanitize.sh: built in $((built - start)) s, tests ran in $(($(date +%s) - built)) s"
exit $rc
