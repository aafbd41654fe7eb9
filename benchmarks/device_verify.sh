#!/usr/bin/env bash
# One device call after a kernel change (2 x H200; one GPU works too):
#   GPU 0: tests/gpu, then the hostile-metadata script under compute-sanitizer memcheck;
#   GPU 1: the expand sweep (benchmarks/config_sweep.py expand), then `lora-conformance bench` on the
#          qkv cases whose alignment hint the hardening had lost.
# Everything lands in OUT/verify.tar.  Usage (on the device): bash benchmarks/device_verify.sh OUT
set -u
out=${1:?output folder}
work=/tmp/verify
source benchmarks/device_common.sh
device_begin "$work"
tests_memcheck() {
  gpu_tests "$work" "${GPU_TESTS_S:-330}"
  memcheck_hostile "$work" 150
}
sweep_and_bench() {
  timeout -s INT "${SWEEP_S:-300}" python3 benchmarks/config_sweep.py "$work/sweep" expand \
    > "$work/sweep.log" 2>&1
  echo "rc=$?" >> "$work/sweep.log"
  timeout -s INT 120 python3 -m conformance.cli bench triton --ops qkv --layouts prefill mixed \
    --ranks 16 64 --out "$work/qkv" > "$work/qkv.log" 2>&1
  echo "rc=$?" >> "$work/qkv.log"
}
on_two_gpus tests_memcheck sweep_and_bench
tar -C "$work" -cf "$out/verify.tar" .
echo "== gpu_tests"; tail -n 15 "$work/gpu_tests.log"
echo "== memcheck"; tail -n 3 "$work/memcheck.log"
echo "== sweep"; cat "$work/sweep.log" | cut -c1-150
echo "== qkv"; cat "$work/qkv/bench.md" 2>/dev/null | cut -c1-120
