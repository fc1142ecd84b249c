#!/bin/bash
# ab.sh -- A/B timing of two builds of sfa on the GPU machine: each case of
# bench/prof_case.py runs through build A's libsfa.so and build B's in turn,
# twice (A B A B), so drift shows as disagreement between the two A rows.
# Usage: bash bench/ab.sh [-h] BUILD_A BUILD_B PASS CASE...
#   BUILD_A/B  build folders (each holds libsfa.so), e.g. build-main build
#   PASS       fwd, bwd or fwd,bwd (prof_case.py --pass)
#   CASE       MODE:D, e.g. hash:128 window:64 (T=16384, bf16, H=16, B*T=65536)
# Output: one line per run, "<build> <prof_case line>"; SFA_CACHE_DIR defaults
# to /tmp/sfa-cache (the cubin cache is content-addressed, so builds share it).
usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; }
case "$1" in -h|--help) usage; exit 0 ;; esac
[ $# -ge 4 ] || { usage >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
a=$1 b=$2 pass=$3; shift 3
for x in "$a" "$b"; do
  [ -f "$root/$x/libsfa.so" ] || { echo "ab.sh: no $x/libsfa.so under $root" >&2; exit 2; }
done
export SFA_CACHE_DIR=${SFA_CACHE_DIR:-/tmp/sfa-cache} PYTHONUNBUFFERED=1
for c in "$@"; do
  mode=${c%%:*} d=${c#*:}
  for x in "$a" "$b" "$a" "$b"; do
    printf '%-12s ' "$x"
    SFA_LIBRARY="$root/$x/libsfa.so" timeout "${AB_TIMEOUT:-120}" \
      python3 "$root/bench/prof_case.py" --mode "$mode" --D "$d" --pass "$pass" || echo "(rc=$?)"
  done
done
