#!/usr/bin/env bash
# Launch-rule sweeps and Nsight Compute profiles (2 x H200; one GPU works too, serially):
#   GPU 0: with GPU_TESTS_ARGS set, tests/gpu with those arguments (device_common.sh's
#          gpu_tests); then benchmarks/config_sweep.py $SWEEP_A (default: expand)
#   GPU 1: with NCU=1, ncu on benchmarks/ncu_cases.py with the kernels of .before/ (the last
#          landed lora_triton, carried) and with the working tree's; with NCU_STALLS=1, ncu's
#          warp-state (stall reasons), occupancy and memory sections on the expand kernels of
#          NCU_CASES (text, ncu_stalls.txt); then config_sweep.py $SWEEP_B (default: decode
#          shrink).
# Everything lands in OUT/sweep.tar.  Usage (on the device): bash benchmarks/device_sweep.sh OUT
set -u
out=${1:?output folder}
work=/tmp/sweep
source benchmarks/device_common.sh
device_begin "$work"
sweep_a() {
  [ -z "${GPU_TESTS_ARGS:-}" ] || gpu_tests "$work" "$(left ${GPU_TESTS_S:-150})"
  timeout -s INT -k 20 "$(left ${SWEEP_S:-500})" python3 benchmarks/config_sweep.py "$work/a" ${SWEEP_A:-expand} \
    > "$work/sweep_a.log" 2>&1
  echo "rc=$?" >> "$work/sweep_a.log"
}
ncu_and_sweep_b() {
  if [ "${NCU:-0}" = 1 ]; then
    ncu_cases "$work" before .before
    ncu_cases "$work" after .
  fi
  [ "${NCU_STALLS:-0}" = 0 ] || ncu_stalls "$work" "$(left ${NCU_S:-150})"
  timeout -s INT -k 20 "$(left ${SWEEP_B_S:-400})" python3 benchmarks/config_sweep.py "$work/b" ${SWEEP_B:-decode shrink} \
    > "$work/sweep_b.log" 2>&1
  echo "rc=$?" >> "$work/sweep_b.log"
}
on_two_gpus sweep_a ncu_and_sweep_b
tar -C "$work" -cf "$out/sweep.tar" .
[ ! -e "$work/gpu_tests.log" ] || tail -n 40 "$work/gpu_tests.log"
for f in "$work"/sweep_*.log; do echo "== $f"; grep -v "^ *$" "$f" | cut -c1-150 | tail -n 80; done
for f in "$work"/ncu_*.md; do [ -e "$f" ] || continue; echo "== $f"; cat "$f"; done
[ ! -e "$work/ncu_stalls.txt" ] || grep -E "^  [A-Za-z]|Stall|stall|Warp Cycles|Occupancy|Throughput|Registers|Duration" "$work/ncu_stalls.txt" | cut -c1-120 | head -n 80
