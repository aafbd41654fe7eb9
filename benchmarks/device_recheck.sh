#!/usr/bin/env bash
# After the closing rule fixes (2 x H200): GPU 0 re-times the decode and shrink cases whose rules
# changed (triton, torch, grouped_mm; the first grid's decode with triton and torch); GPU 1 runs
# tests/gpu.  Everything lands in OUT/recheck.tar.  Usage: bash benchmarks/device_recheck.sh OUT
set -u
out=${1:?output folder}
work=/tmp/recheck
mkdir -p "$out" "$work"
source benchmarks/device_common.sh
device_setup "$work"
n=$(nvidia-smi -L | wc -l)
( export CUDA_VISIBLE_DEVICES=0
  timeout -s INT 200 python3 -m conformance.cli bench triton torch grouped_mm --models llama3-8b \
    --ops qkv gate_up shrink_qkv --layouts decode128x64 decode256-rank0 prefill mixed \
    --ranks 16 128 0 --out "$work/bf16" > "$work/bench_bf16.log" 2>&1
  echo "rc=$?" >> "$work/bench_bf16.log"
  bench_decode "$work"
) &
first=$!
[ "$n" -gt 1 ] || wait $first
CUDA_VISIBLE_DEVICES=$((n - 1)) gpu_tests "$work" "${GPU_TESTS_S:-400}"
wait
tar -C "$work" -cf "$out/recheck.tar" .
for f in "$work"/bench_*.log "$work"/gpu_tests.log; do echo "== $f"; tail -n 4 "$f"; done
