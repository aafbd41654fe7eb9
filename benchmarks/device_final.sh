#!/usr/bin/env bash
# The closing device call (2 x H200; one GPU works too):
#   GPU 0: tests/gpu; `lora-conformance check triton --profile ci` on CUDA;
#   GPU 1: `lora-conformance bench triton torch grouped_mm` on the off-grid cases (rank 128,
#          mixed ranks, many-adapter and rank-0-heavy decode) and the first grid's prefill and
#          mixed qkv/gate_up cases, then float16 with K and N not multiples of 64.
# Everything lands in OUT/final.tar.  Usage (on the device): bash benchmarks/device_final.sh OUT
set -u
out=${1:?output folder}
work=/tmp/final
source benchmarks/device_common.sh
device_begin "$work"
tests_and_ci() {
  gpu_tests "$work" "${GPU_TESTS_S:-280}"
  check_ci_cuda "$work" "${CI_S:-150}"
}
bench() { bench_offgrid "$work"; }
on_two_gpus tests_and_ci bench
tar -C "$work" -cf "$out/final.tar" .
echo "== gpu_tests"; tail -n 12 "$work/gpu_tests.log"
echo "== ci"; tail -n 4 "$work/ci.log"
for f in bf16 fp16; do echo "== bench $f"; grep triton "$work/$f/bench.md" 2>/dev/null | cut -c1-100; done
