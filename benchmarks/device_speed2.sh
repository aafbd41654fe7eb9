#!/usr/bin/env bash
# Before and after in one call (2 x H200): the kernels of .before/ (the last landed lora_triton,
# carried as an ignored folder) against the working tree's.
#   GPU 0: after: the off-grid bench with every provider (triton, torch, grouped_mm), then the
#          first grid's decode cases (triton, torch); tests/gpu; memcheck over hostile metadata.
#   GPU 1: before: the same cases, triton only; Nsight Compute on benchmarks/ncu_cases.py with
#          the working tree's kernels; the pytest-benchmark gate; `check --profile ci` on CUDA;
#          the thorough campaign for what time is left (THOROUGH_S).
# Everything lands in OUT/speed.tar.  Usage (on the device): bash benchmarks/device_speed2.sh OUT
set -u
out=${1:?output folder}
work=/tmp/speed
mkdir -p "$out" "$work/after" "$work/before"
source benchmarks/device_common.sh
device_setup "$work"
n=$(nvidia-smi -L | wc -l)
( export CUDA_VISIBLE_DEVICES=0
  bench_offgrid "$work/after"
  BENCH_DECODE_S=90 bench_decode "$work/after"
  gpu_tests "$work" "${GPU_TESTS_S:-200}"
  memcheck_hostile "$work" "${MEMCHECK_S:-120}"
) &
first=$!
[ "$n" -gt 1 ] || wait $first
( export CUDA_VISIBLE_DEVICES=$((n - 1))
  # from /tmp: `python3 -m` puts the working folder first on sys.path, ahead of .before
  repo=$PWD
  ( cd /tmp && export PYTHONPATH=$repo/.before:$PYTHONPATH BENCH_PROVIDERS=triton
    export BENCH_FP16_PROVIDERS=triton
    export BENCH_DECODE_PROVIDERS=triton BENCH_S=200 BENCH_FP16_S=60 BENCH_DECODE_S=60
    python3 -c "import lora_triton; print(lora_triton.__file__)" > "$work/before/which.txt" 2>&1
    bench_offgrid "$work/before"
    bench_decode "$work/before" )
  ncu_cases "$work" after .
  bench_gate "$work" "triton,torch"
  check_ci_cuda "$work" "${CI_S:-150}"
  thorough_cuda "$work" "${THOROUGH_S:-120}"
)
wait
tar -C "$work" -cf "$out/speed.tar" .
for f in "$work"/*/bench_*.log "$work"/pb_*.log "$work"/ncu_after.log "$work"/gpu_tests.log \
  "$work"/memcheck.log "$work"/ci.log "$work"/thorough.log; do
  echo "== $f"; tail -n 3 "$f"; done
cat "$work/ncu_after.md"
