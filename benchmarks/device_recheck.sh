#!/usr/bin/env bash
# After the closing rule fixes (2 x H200): GPU 0 re-times the decode and shrink cases whose rules
# changed (triton, torch, grouped_mm; the first grid's decode with triton and torch); GPU 1 runs
# tests/gpu.  Everything lands in OUT/recheck.tar.  Usage: bash benchmarks/device_recheck.sh OUT
set -u
out=${1:?output folder}
work=/tmp/recheck
source benchmarks/device_common.sh
device_begin "$work"
benches() {
  timeout -s INT 200 python3 -m conformance.cli bench triton torch grouped_mm --models llama3-8b \
    --ops qkv gate_up shrink_qkv --layouts decode128x64 decode256-rank0 prefill mixed \
    --ranks 16 128 0 --out "$work/bf16" > "$work/bench_bf16.log" 2>&1
  echo "rc=$?" >> "$work/bench_bf16.log"
  bench_decode "$work"
}
tests() { gpu_tests "$work" "${GPU_TESTS_S:-400}"; }
on_two_gpus benches tests
tar -C "$work" -cf "$out/recheck.tar" .
for f in "$work"/bench_*.log "$work"/gpu_tests.log; do echo "== $f"; tail -n 4 "$f"; done
