#!/bin/sh
# run_libfuzzer.sh -- CTest's command for a libFuzzer target (tests/fuzz/CMakeLists.txt):
#   run_libfuzzer.sh TARGET WORKDIR [-dict=FILE] SEED_DIR...
# Runs TARGET for $SFA_FUZZ_SECONDS seconds (default 3; tests/sanitize.sh sets
# 25) over the seeds and WORKDIR/corpus, where it keeps the inputs it finds
# (never in the source tree); a crash, sanitizer report, leak or an input
# slower than $SFA_FUZZ_TIMEOUT seconds (default 20) leaves its reproducer in
# WORKDIR/artifacts/ and fails the test. Rerun one input with: TARGET FILE.
set -eu
target=$1
work=$2
shift 2
mkdir -p "$work/corpus" "$work/artifacts"
exec "$target" -max_total_time="${SFA_FUZZ_SECONDS:-3}" -timeout="${SFA_FUZZ_TIMEOUT:-20}" \
  -error_exitcode=1 -timeout_exitcode=1 -print_final_stats=1 \
  -artifact_prefix="$work/artifacts/" "$work/corpus" "$@"
