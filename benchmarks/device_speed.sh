#!/usr/bin/env bash
# One device call for the speed grid off the first benchmark grid (issue 14) and the GPU tests
# (2 x H200; one GPU works too, one job after the other):
#   GPU 0: tests/gpu (stopped by SIGINT after GPU_TESTS_S, so pytest still prints its summary);
#   GPU 1: `lora-conformance bench triton torch grouped_mm` on rank 128, mixed ranks 8..128,
#          many-adapter and rank-0-heavy decode (bf16, Llama-3-8B), then float16 with K and N not
#          multiples of 64 (triton and torch: grouped_mm is bf16 only).
# Everything lands in OUT/speed.tar.  Usage (on the device): bash benchmarks/device_speed.sh OUT
set -u
out=${1:?output folder}
work=/tmp/speed
source benchmarks/device_common.sh
device_begin "$work"
tests() { gpu_tests "$work" "${GPU_TESTS_S:-400}"; }
bench() { bench_offgrid "$work"; }
on_two_gpus tests bench
tar -C "$work" -cf "$out/speed.tar" .
cat "$work/env.txt"
echo "== gpu_tests"; tail -n 25 "$work/gpu_tests.log"
for f in bf16 fp16; do echo "== bench $f"; cat "$work/$f/bench.md" 2>/dev/null | cut -c1-120; done
