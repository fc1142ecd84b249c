#!/bin/bash
# gpu_check.sh -- on the GPU machine, with build/ carried from a Debian build:
# every GPU suite, compute-sanitizer memcheck and racecheck on small cases, and
# optionally the benchmark scripts. Logs go to $OUT (or /tmp); each step's summary line is
# printed when it ends and all of them again last. Usage:
#   bash bench/gpu_check.sh [suites] [sync] [sanitize] [wssan] [bench] [bwdtune] [bwdbench]
#                           [fwdtune] [decode] [bwd256] [ws256] [short] [wsbwd] [wsbwd256]
#                           [compare] [bwdprof] [bwdsass] [fwdsass] [packedprof] [decodeprof]
#                           [cacheout]
# Session 9 took: suites 3.5 min (2.25 of it test_gpu_backward), sanitize 1.4
# min, compare (the full grid) 5.5 min; session 8: bwdtune ~1 min, bwdbench
# over 3 min (FlexAttention compiles). Split the steps across calls of 10 min.
# suites runs the suites side by side (test_gpu_tune, which times kernels, alone after them):
# on a fresh machine most of their time is NVRTC filling the shared kernel cache on the CPUs
# (session 37: seven suites side by side in 213 s on a cold cache; SUITE_TIMEOUT caps each,
# default 600 s). cacheout: the kernel cache (/tmp/sfa-cache) into $OUT/sfa-cache.tgz.* (15 MB
# parts); copy them into build/ and a later call's first step unpacks them (no cold compiles).
# sync: the forward suites again with SFA_MMA=sync (mma.sync where sm_90 would
# use wgmma). sanitize covers test_gpu_backward's small (wgmma on sm_90), sync, wide, wgmma256
# (the wgmma backward at D 256) and ws (the warp-specialized backward) cases, and
# test_gpu_decode's workspace case (a caller's split-KV workspace across shapes).
# wssan: memcheck and racecheck of test_gpu_ws (the warp-specialized forward: its shapes at D 64,
# 128 and 256, and every ws tile config). fwdtune: the forward tile sweep of every mode at D 64,
# 128 and 256 (T 4096 and 16384; wgmma and ws candidates) into /tmp/sfa-f, exported to $OUT/tuned_fwd.tsv (a table to
# ship under cache/tuned/ where its winners beat the defaults). decode: bench/decode.py at B 8 and 32, 4k and 32k
# keys, contiguous and 16-token pages, eager and as CUDA graph replays (--graph). bwd256: the wgmma
# backward at D 256 (the default on sm_90): test_gpu_backward's wgmma256 case, memcheck
# and racecheck of it, then compare.py's D 256 backward rows (dense causal and window, T 8k and
# 16k, against cuDNN and Flex) under the default and under SFA_MMA=sync (mma.sync), A B A B.
# ws256: the D 256 forwards of qk_drop (ws by default since session 21) and hash (mma.sync by
# default; T 16384) under SFA_MMA=ws and SFA_MMA=sync, A B A B (bench/prof_case.py), for the
# choice of their default. short: the size rule of the D 64 forward (sfa__spec_for_keys: one ws
# consumer up to 4096 keys, three above) for dense and qk_drop: the default against SFA_MMA=ws
# (three consumers at every length) at T 1024, 2048 and 4096, A B A B, and the ws tile sweep at
# T 8192 (is 4096 the right threshold?) into /tmp/sfa-s. wsbwd: the warp-specialized backward
# (the default at D 64 and 128 without softcap or ALiBi: dense and window since session 22,
# hash and qk_drop since 23): test_gpu_backward's ws case, memcheck and racecheck of it, then
# prof_case.py's bwd at T 16384 for dense causal, window (W 1024), hash (16 buckets) and
# qk_drop (30%) at D 64 and 128 under SFA_MMA=ws against SFA_MMA=wgmma, A B A B. wsbwd256: the
# warp-specialized backward at D 256 (templates/bwd_ws256.lt, dense and window; the default since
# session 24): test_gpu_backward's ws256 case, memcheck and racecheck of it, then prof_case.py's
# bwd at T 16384 under SFA_MMA=ws against SFA_MMA=wgmma, A B A B. bwdprof: where the dense
# backward's per-CTA fixed cost goes (bench/NOTES.md, session 24): prof_case.py --kernels of dense
# causal D 128 bwd at T 4096 and 16384 (the main kernel apart from bwd_pre and convert), then ncu
# (--clock-control none) of one main-kernel launch at each length: speed of light, warp states
# and launch statistics into $OUT/ncu-T*.txt. bwdsass: which instructions sfa's dense causal D 128
# backward executes beyond cuDNN's (bench/NOTES.md, session 30: 20% more warp instructions at
# T 4096): ncu's SourceCounters of one launch of each (bench/prof_case.py, bench/peer_once.py),
# their SASS pages as CSV into $OUT/sass-bwd-{sfa,cudnn}.csv, and bench/sass_hist.py's opcode
# counts (SASS_D=64 for head dim 64). fwdsass: the same for the forward.
case "$1" in -h|--help) sed -n '2,/^[^#]/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; exit 0 ;; esac
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp}
export PYTHONUNBUFFERED=1 SFA_CACHE_DIR=/tmp/sfa-cache
what=" $* "
summary=()
# a kernel cache an earlier call brought back (cacheout), unpacked once per machine
if [ ! -d /tmp/sfa-cache ] && ls build/sfa-cache.tgz.* >/dev/null 2>&1; then
  cat build/sfa-cache.tgz.* | tar -xz -C /tmp
fi
# a step's summary line: printed now (a call cut short by its time limit still shows the steps
# that finished) and again at the end
say() { summary+=("$1"); echo "== $1"; }
# test_gpu_backward's case $1, then memcheck and racecheck of it; logs $OUT/[tool-]$2.log
backward_case_sanitized() {
  CK_RUN_CASE=$1 build/tests/test_gpu_backward > $OUT/$2.log 2>&1
  say "test_gpu_backward $1 rc=$?: $(grep -E '^[0-9]+%' $OUT/$2.log | tail -1)"
  for tool in memcheck racecheck; do
    CK_RUN_CASE=$1 timeout ${SAN_TIMEOUT:-300} compute-sanitizer --tool $tool --error-exitcode 9 \
      build/tests/test_gpu_backward > $OUT/$tool-$2.log 2>&1
    say "$tool $1 rc=$?: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' $OUT/$tool-$2.log | tail -1)"
  done
}
# prof_case.py's time of pass $1 at D $2, T 16384, for each mode of $3 under each SFA_MMA of
# $4 in turn (A B A B): a line each.
ab_prof() {
  for mode in $3; do
    for m in $4; do
      echo "$mode D $2 $1 SFA_MMA=$m: $(SFA_MMA=$m python3 bench/prof_case.py --mode $mode --D $2 \
        --pass $1 --T 16384 2>&1 | tail -1)"
    done
  done
}
# ncu_one KERNEL-REGEX SKIP "SECTIONS" FILE COMMAND...: ncu of one launch of the kernel after
# SKIP launches of it, those sections, into FILE; returns ncu's status (NCU_TIMEOUT caps it)
ncu_one() {
  local kn=$1 skip=$2 sections=() out=$4
  for s in $3; do sections+=(--section "$s"); done
  shift 4
  timeout ${NCU_TIMEOUT:-240} ncu --clock-control none --kernel-name "regex:$kn" \
    --launch-skip "$skip" --launch-count 1 "${sections[@]}" "$@" > "$out" 2>&1
}
# suite $1 under SUITE_TIMEOUT, its line into $OUT/$n.sum
run_suite() {
  local n=$(basename $1) start=$(date +%s)
  timeout ${SUITE_TIMEOUT:-600} $1 > $OUT/$n.log 2>&1; local rc=$?
  echo "$n rc=$rc $(( $(date +%s) - start ))s: $(grep -E '^[0-9]+%' $OUT/$n.log | tail -1)" > $OUT/$n.sum
}
if [[ $what == *" suites "* ]]; then
  pids=()  # waited for by pid: a bare wait would also wait for a caller's process substitution
  for t in build/tests/test_gpu_*; do
    [ "$(basename $t)" = test_gpu_tune ] && continue
    run_suite $t & pids+=($!)
  done
  wait "${pids[@]}"
  [ -x build/tests/test_gpu_tune ] && run_suite build/tests/test_gpu_tune
  for t in build/tests/test_gpu_*; do say "$(cat $OUT/$(basename $t).sum)"; done
fi
if [[ $what == *" sync "* ]]; then
  for t in build/tests/test_gpu_dense build/tests/test_gpu_sparse; do
    n=$(basename $t)
    SFA_MMA=sync $t > $OUT/sync-$n.log 2>&1; rc=$?
    say "SFA_MMA=sync $n rc=$rc: $(grep -E '^[0-9]+%' $OUT/sync-$n.log | tail -1)"
  done
fi
if [[ $what == *" sanitize "* ]]; then
  for tool in memcheck racecheck; do
    for run in test_gpu_sparse: test_gpu_helpers:helpers test_gpu_backward:small \
               test_gpu_backward:sync test_gpu_backward:wide test_gpu_backward:wgmma256 \
               test_gpu_backward:ws test_gpu_decode:workspace; do
      n=${run%%:*}; c=${run#*:}
      case_env=""; [ -n "$c" ] && case_env="CK_RUN_CASE=$c"
      env $case_env timeout ${SAN_TIMEOUT:-90} compute-sanitizer --tool $tool \
        --error-exitcode 9 build/tests/$n > $OUT/$tool-$n-$c.log 2>&1; rc=$?
      say "$tool $n ${c:-all} rc=$rc: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' $OUT/$tool-$n-$c.log | tail -1)"
    done
  done
fi
if [[ $what == *" wssan "* ]]; then
  for tool in memcheck racecheck; do
    for c in shapes tiles; do
      CK_RUN_CASE=$c timeout ${SAN_TIMEOUT:-300} compute-sanitizer --tool $tool --error-exitcode 9 \
        build/tests/test_gpu_ws > $OUT/$tool-ws-$c.log 2>&1; rc=$?
      say "$tool test_gpu_ws $c rc=$rc: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' $OUT/$tool-ws-$c.log | tail -1)"
    done
  done
fi
if [[ $what == *" fwdtune "* ]]; then
  build/sfa-tune --cache-dir /tmp/sfa-f --kinds wgmma,ws --modes dense,qk_drop,window,hash --head-dims 64,128,256 \
    --seq-lens 4096,16384 > $OUT/tune_fwd.log 2> $OUT/tune_fwd.err
  say "fwdtune rc=$?: $(grep -c 'candidates' $OUT/tune_fwd.err) shapes tuned"
  build/sfa-tune --cache-dir /tmp/sfa-f --list --export $OUT/tuned_fwd.tsv >> $OUT/tune_fwd.log 2>&1
fi
if [[ $what == *" decode "* ]]; then
  for t in "" --graph; do
    python3 bench/decode.py --B 8,32 --kv 4096,32768 --pages 0,16 $t > $OUT/decode$t.log 2>&1
    say "decode ${t:-eager} rc=$?: $OUT/decode$t.log"
    tail -9 $OUT/decode$t.log
  done
fi
if [[ $what == *" bwd256 "* ]]; then
  backward_case_sanitized wgmma256 bwd256
  for m in auto sync auto sync; do
    SFA_MMA=$m python3 bench/compare.py --only dense,window --pass bwd --T 8192,16384 --D 256 \
      --d256 "" --e2e-T "" --peers cudnn,flex > $OUT/bwd256-$m.log 2>&1
    echo "SFA_MMA=$m"; grep -E "^ *(dense|window)|FAIL" $OUT/bwd256-$m.log
  done | tee $OUT/bwd256-ab.log
  say "bwd256 A/B: $OUT/bwd256-ab.log"
fi
if [[ $what == *" wsbwd256 "* ]]; then
  backward_case_sanitized ws256 wsbwd256
  ab_prof bwd 256 "dense window" "ws wgmma ws wgmma" | tee $OUT/wsbwd256.log
  say "wsbwd256: $OUT/wsbwd256.log"
fi
if [[ $what == *" ws256 "* ]]; then
  ab_prof fwd 256 "qk_drop hash" "ws sync ws sync" | tee $OUT/ws256.log
  say "ws256: $OUT/ws256.log"
fi
if [[ $what == *" short "* ]]; then
  for T in 1024 2048 4096; do
    for mode in dense qk_drop; do
      for m in auto ws auto ws; do
        echo "$mode D 64 fwd T $T SFA_MMA=$m: $(SFA_MMA=$m python3 bench/prof_case.py --mode $mode \
          --D 64 --pass fwd --T $T 2>&1 | tail -1)"
      done
    done
  done | tee $OUT/short.log
  build/sfa-tune --cache-dir /tmp/sfa-s --modes dense,qk_drop --head-dims 64 --seq-lens 8192 \
    --kinds ws --sweep > $OUT/short_sweep.log 2>&1
  say "short: $OUT/short.log; sweep at T 8192: $(grep -c candidates $OUT/short_sweep.log) shapes"
fi
if [[ $what == *" wsbwd "* ]]; then
  backward_case_sanitized ws wsbwd
  for D in 128 64; do
    ab_prof bwd $D "dense window hash qk_drop" "ws wgmma ws wgmma"
  done | tee $OUT/wsbwd.log
  say "wsbwd: $OUT/wsbwd.log"
fi
if [[ $what == *" bench "* ]]; then
  python3 bench/compare_sparse.py --csv $OUT/compare_sparse.csv 2>&1 | tee $OUT/compare_sparse.log | tail -12
fi
if [[ $what == *" bwdtune "* ]]; then
  # issue 4's shapes: the bwd tile sweep into /tmp/sfa-t (bwdbench then uses it)
  for m in "dense,hash,qk_drop --head-dims 128" "window --window 1023 --head-dims 64"; do
    build/sfa-tune --cache-dir /tmp/sfa-t --pass bwd --modes $m --seq-lens 16384 --sweep \
      >> $OUT/tune_bwd.log 2>&1
  done
  build/sfa-tune --cache-dir /tmp/sfa-t --list --export $OUT/tuned.tsv >> $OUT/tune_bwd.log 2>&1
  say "bwdtune: $(grep -c 'candidates' $OUT/tune_bwd.log) shapes tuned, $(grep -c 'failed' $OUT/tune_bwd.log) failed"
fi
if [[ $what == *" bwdbench "* ]]; then
  # with the db of bwdtune when there is one (SFA_TUNE=cached reads it)
  [ -d /tmp/sfa-t/tuning ] && export SFA_CACHE_DIR=/tmp/sfa-t SFA_TUNE=cached
  python3 bench/compare_backward.py --csv $OUT/compare_backward.csv 2>&1 | tee $OUT/compare_backward.log | tail -12
fi
if [[ $what == *" bwdprof "* ]]; then
  for T in 4096 16384; do
    echo "dense causal D 128 bwd T $T:"
    python3 bench/prof_case.py --mode dense --D 128 --pass bwd --T $T --kernels 2>&1 | tail -6
    ncu_one sfa_bwd_dense_causal 2 "SpeedOfLight WarpStateStats LaunchStats Occupancy" \
      $OUT/ncu-T$T.txt python3 bench/prof_case.py --mode dense --D 128 --pass bwd --T $T --reps 2 --warm 1
    echo "ncu T $T rc=$?: $(grep -cE '^ +[A-Z]' $OUT/ncu-T$T.txt) metric lines"
    grep -E "Duration|Compute \(SM\) Throughput|Memory Throughput|Stall|Achieved Occupancy" \
      $OUT/ncu-T$T.txt | head -14
  done | tee $OUT/bwdprof.log
  say "bwdprof: $OUT/bwdprof.log"
fi
# packedprof: issue 19's packed D 64 forward (1.06-1.09x the fixed-length time on equal work;
# session 37: not DRAM locality across heads): the dense causal forward at D 64, T 32768, fixed
# and packed (prof_case.py --packed), per-kernel times, then ncu of one launch of each: speed of
# light, memory workload, warp states, launch statistics into $OUT/ncu-{fixed,packed}.txt.
if [[ $what == *" packedprof "* ]]; then
  for how in fixed packed; do
    pk=""; [ $how = packed ] && pk=--packed
    echo "dense causal D 64 fwd T 32768 $how:"
    python3 bench/prof_case.py --mode dense --D 64 --pass fwd --T 32768 $pk --kernels 2>&1 | tail -4
    ncu_one sfa_fwd_dense_causal 2 "SpeedOfLight MemoryWorkloadAnalysis WarpStateStats LaunchStats Occupancy" \
      $OUT/ncu-$how.txt python3 bench/prof_case.py --mode dense --D 64 --pass fwd --T 32768 $pk --reps 2 --warm 1
    echo "ncu $how rc=$?: $(grep -cE '^ +[A-Z]' $OUT/ncu-$how.txt) metric lines"
    grep -E "Duration|Throughput|Hit Rate|Stall|Achieved Occupancy|Grid Size|Registers" \
      $OUT/ncu-$how.txt | head -20
  done | tee $OUT/packedprof.log
  say "packedprof: $OUT/packedprof.log"
fi
# decodeprof: issue 19's decode at B 8 (76-80% of copy at 4k keys against flash's 85%, and flash
# faster at 32k too): decode_probe.py's graph times and per-kernel times of sfa (pool and caller
# workspace) and of SDPA flash, then ncu of one sfa decode kernel and of flash's split-KV kernel
# at 4k and 32k keys: speed of light, memory workload, warp states, occupancy into
# $OUT/ncu-decode-{sfa,flash}-{4096,32768}.txt.
if [[ $what == *" decodeprof "* ]]; then
  for how in "" --workspace "--peer flash"; do
    python3 bench/decode_probe.py --cases 8:4096,8:32768,8:4096:16 --kernels $how 2>&1 | grep -v "^#"
  done | tee $OUT/decodeprof.log
  for kv in 4096 32768; do
    for who in sfa flash; do
      if [ $who = sfa ]; then kn=sfa_decode how=--workspace; else kn=flash_fwd_splitkv_kernel how="--peer flash"; fi
      ncu_one $kn 20 "SpeedOfLight MemoryWorkloadAnalysis WarpStateStats Occupancy LaunchStats SchedulerStats" \
        $OUT/ncu-decode-$who-$kv.txt python3 bench/decode_probe.py --cases 8:$kv --reps 5 $how
      say "ncu decode $who $kv rc=$?: $(grep -E 'Duration|DRAM Throughput|Achieved Occupancy' \
        $OUT/ncu-decode-$who-$kv.txt | tr -s ' ' | tr '\n' ';')"
    done
  done
fi
# sass_page PASS: ncu's SourceCounters of one launch of sfa's dense causal PASS kernel and of
# cuDNN's (SDPA), their SASS pages as CSV and the opcode counts; D SASS_D (default 128), T 4096
sass_page() {
  local pass=$1 sd=${SASS_D:-128}
  for who in sfa cudnn; do
    if [ $who = sfa ]; then
      kn=regex:sfa_${pass}_dense_causal cmd="python3 bench/prof_case.py --mode dense --D $sd --pass $pass --T 4096 --reps 2 --warm 1"
    elif [ $pass = bwd ]; then
      kn=regex:flash_bprop cmd="python3 bench/peer_once.py 16 16 4096 $sd cudnn bwd"
    else
      kn="regex:fprop|sdpa" cmd="python3 bench/peer_once.py 16 16 4096 $sd cudnn fwd"
    fi
    rm -f $OUT/sass-$pass-$who.ncu-rep
    timeout ${NCU_TIMEOUT:-240} ncu --clock-control none --kernel-name $kn --launch-skip 1 --launch-count 1 \
      --section SourceCounters --section WarpStateStats -o $OUT/sass-$pass-$who $cmd > $OUT/sass-$pass-$who.log 2>&1
    echo "ncu $pass $who rc=$?"
    ncu --import $OUT/sass-$pass-$who.ncu-rep --page source --csv --print-source sass > $OUT/sass-$pass-$who.csv 2>&1
    python3 bench/sass_hist.py $OUT/sass-$pass-$who.csv --top 25 2>&1
  done | tee $OUT/${pass}sass.log
  say "${pass}sass: $OUT/${pass}sass.log, $OUT/sass-$pass-*.csv"
}
if [[ $what == *" bwdsass "* ]]; then
  sass_page bwd
fi
if [[ $what == *" fwdsass "* ]]; then
  sass_page fwd
fi
if [[ $what == *" compare "* ]]; then
  python3 bench/compare.py --csv $OUT/compare.csv --plot $OUT/compare.png 2>&1 | tee $OUT/compare.log | tail -75
fi
if [[ $what == *" cacheout "* ]]; then
  tar -cz -C /tmp sfa-cache | split -b 15M - $OUT/sfa-cache.tgz.
  say "cacheout: $(ls $OUT/sfa-cache.tgz.* | wc -l) parts in $OUT (copy them into build/)"
fi
printf '%s\n' "${summary[@]}"
