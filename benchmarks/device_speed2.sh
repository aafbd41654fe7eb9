#!/usr/bin/env bash
# Before and after in one call (2 x H200): the kernels of .before/ (the last landed lora_triton,
# carried as an ignored folder) against the working tree's.
#   GPU 0: after: the off-grid bench with every provider in BENCH_PROVIDERS (default triton,
#          torch, grouped_mm), then the first grid's decode cases and 64-adapter decode at ranks
#          8, 32, 64 (triton, torch); tests/gpu (not with GPU_TESTS=0); memcheck over hostile
#          metadata.
#   GPU 1: before: the same cases, triton only; Nsight Compute on benchmarks/ncu_cases.py with
#          the working tree's kernels (not with NCU=0); the pytest-benchmark gate (not with
#          GATE=0); `check --profile ci` on CUDA; the thorough campaign for what time is left.
# Each step's time limit is cut to what is left before DEADLINE (default 540 s after the start),
# and a step with no time left is skipped, so the results are packed before the call's limit.
# Everything lands in OUT/speed.tar.  Usage (on the device): bash benchmarks/device_speed2.sh OUT
set -u
out=${1:?output folder}
work=/tmp/speed
source benchmarks/device_common.sh
device_begin "$work" after before
after() {
  BENCH_S=$(left 240) BENCH_FP16_S=$(left 100) bench_offgrid "$work/after"
  BENCH_DECODE_S=$(left 70) bench_decode "$work/after"
  BENCH_DECODE_S=$(left 50) bench_decode_many "$work/after"
  [ "${GPU_TESTS:-1}" = 0 ] || [ "$(left 150)" -lt 60 ] || gpu_tests "$work" "$(left 150)"
  [ "$(left 100)" -lt 60 ] || memcheck_hostile "$work" "$(left 100)"
}
before_and_checks() {
  # from /tmp: `python3 -m` puts the working folder first on sys.path, ahead of .before
  local repo=$PWD
  ( cd /tmp && export PYTHONPATH=$repo/.before:$PYTHONPATH BENCH_PROVIDERS=triton
    export BENCH_FP16_PROVIDERS=triton BENCH_DECODE_PROVIDERS=triton
    python3 -c "import lora_triton; print(lora_triton.__file__)" > "$work/before/which.txt" 2>&1
    BENCH_S=$(left 150) BENCH_FP16_S=$(left 70) bench_offgrid "$work/before"
    BENCH_DECODE_S=$(left 50) bench_decode "$work/before"
    BENCH_DECODE_S=$(left 40) bench_decode_many "$work/before" )
  [ "${NCU:-1}" = 0 ] || [ "$(left 100)" -lt 60 ] || NCU_S=$(left 100) ncu_cases "$work" after .
  [ "${GATE:-1}" = 0 ] || [ "$(left 300)" -lt 300 ] || bench_gate "$work" "triton,torch"
  [ "$(left 130)" -lt 60 ] || check_ci_cuda "$work" "$(left 130)"
  [ "$(left 600)" -lt 30 ] || thorough_cuda "$work" "$(left 600)"
}
on_two_gpus after before_and_checks
tar -C "$work" -cf "$out/speed.tar" .
for f in "$work"/*/bench_*.log "$work"/pb_*.log "$work"/ncu_after.log "$work"/gpu_tests.log \
  "$work"/memcheck.log "$work"/ci.log "$work"/thorough.log; do
  [ -e "$f" ] || { echo "== $f: not run"; continue; }
  echo "== $f"; tail -n 3 "$f"; done
[ ! -e "$work/ncu_after.md" ] || cat "$work/ncu_after.md"
