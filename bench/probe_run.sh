#!/bin/bash
# probe_run.sh -- on the GPU machine: build kernel_probe.cu for every rendered
# kernel in build/probe/*.cu, check each on ragged shapes and time it at
# B*T=65536, H=16, T=16384. Development aid for bench/NOTES.md.
cd "$(dirname "$0")/.."
mkdir -p /tmp/probe
for f in build/probe/k_*.cu; do
  b=$(basename $f .cu)
  # k_<dtype>_d<D>_m<BM>n<BN>w<NW>s<ST>_c<causal>
  dt=$(echo $b | cut -d_ -f2); D=$(echo $b | sed 's/.*_d\([0-9]*\)_.*/\1/')
  BM=$(echo $b | sed 's/.*_m\([0-9]*\)n.*/\1/'); BN=$(echo $b | sed 's/.*n\([0-9]*\)w.*/\1/')
  NW=$(echo $b | sed 's/.*w\([0-9]*\)s.*/\1/'); ST=$(echo $b | sed 's/.*s\([0-9]*\)_c.*/\1/'); C=${b##*_c}
  name=$(grep -o 'sfa_fwd_[a-z0-9_]*' $f | head -1)
  smem=$(( 2 * (D + 8) * (BM + 2 * ST * BN) ))
  bf=0; [ $dt = bf16 ] && bf=1
  nvcc -O2 -std=c++17 -arch=sm_90 -DKSRC="\"$PWD/$f\"" -DKNAME=$name -DBM=$BM -DNW=$NW -DSMEM=$smem -DBF16=$bf -DCAUSAL=$C bench/kernel_probe.cu -o /tmp/probe/$b || { echo "BUILD FAIL $b"; continue; }
  echo "== $b"
  /tmp/probe/$b 1 2 1000 $D 1000 1 1 | grep -E "check|FAIL|CUDA"
  /tmp/probe/$b 2 4 257 $D 700 2 1 | grep -E "check|FAIL|CUDA"
  /tmp/probe/$b 1 2 700 $D 257 2 1 | grep -E "check|FAIL|CUDA"
  /tmp/probe/$b 4 16 16384 $D 16384 16 0
done
