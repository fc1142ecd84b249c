#!/bin/bash
# gpu_check.sh -- on the GPU machine, with build/ carried from a Debian build:
# every GPU suite, compute-sanitizer memcheck and racecheck on small cases, and
# optionally the benchmark scripts. Logs go to $OUT (or /tmp) and a summary is
# printed last. Usage: bash bench/gpu_check.sh [suites] [sanitize] [bench] [bwdbench]
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp}
export PYTHONUNBUFFERED=1 SFA_CACHE_DIR=/tmp/sfa-cache
what=" $* "
summary=()
if [[ $what == *" suites "* ]]; then
  for t in build/tests/test_gpu_*; do
    n=$(basename $t)
    start=$(date +%s)
    $t > $OUT/$n.log 2>&1; rc=$?
    summary+=("$n rc=$rc $(( $(date +%s) - start ))s: $(grep -E '^[0-9]+%' $OUT/$n.log | tail -1)")
  done
fi
if [[ $what == *" sanitize "* ]]; then
  for tool in memcheck racecheck; do
    for t in build/tests/test_gpu_sparse build/tests/test_gpu_helpers build/tests/test_gpu_backward; do
      n=$(basename $t)
      case_env=""; [ $n = test_gpu_helpers ] && case_env="CK_RUN_CASE=helpers"
      [ $n = test_gpu_backward ] && case_env="CK_RUN_CASE=small"
      env $case_env timeout ${SAN_TIMEOUT:-90} compute-sanitizer --tool $tool --error-exitcode 9 $t > $OUT/$tool-$n.log 2>&1; rc=$?
      summary+=("$tool $n rc=$rc: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' $OUT/$tool-$n.log | tail -1)")
    done
  done
fi
if [[ $what == *" bench "* ]]; then
  python3 bench/compare_sparse.py --csv $OUT/compare_sparse.csv 2>&1 | tee $OUT/compare_sparse.log | tail -12
fi
if [[ $what == *" bwdbench "* ]]; then
  python3 bench/compare_backward.py --csv $OUT/compare_backward.csv 2>&1 | tee $OUT/compare_backward.log | tail -12
fi
printf '%s\n' "${summary[@]}"
