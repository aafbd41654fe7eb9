#!/usr/bin/env bash
# The off-grid cases with every provider that runs on the GPU image, in one run (2 x H200):
#   GPU 0: `lora-conformance bench` with triton, torch, grouped_mm and the peers in PEERS
#          (default vLLM and FlashInfer; FlashInfer JIT-builds its kernel at its first case,
#          ~90 s) on the bf16 off-grid cases;
#   GPU 1: tests/gpu, unless GPU_TESTS=0.
# The peers are named by their adapter classes: without an installed distribution the entry
# points that register `vllm` and `flashinfer` do not exist.
# Needs .peers/ (benchmarks/make_peers_bundle.sh), carried.  SGLang is not here: importing its
# kernels imports sglang.srt, which pulls in transformers and torchvision; with their wheels it
# does not fit beside .peers/ in one call's carry.
# Everything lands in OUT/offgrid_peers.tar.  Usage: bash benchmarks/device_offgrid_peers.sh OUT
set -u
out=${1:?output folder}
work=/tmp/offgrid_peers
mkdir -p "$out" "$work"
source benchmarks/device_common.sh
device_setup "$work"
peers_setup
n=$(nvidia-smi -L | wc -l)
( export CUDA_VISIBLE_DEVICES=0
  timeout -s INT "$(left 480)" python3 -m conformance.cli bench triton torch grouped_mm \
    ${PEERS:-conformance.peers.vllm_backend:VLLMBackend conformance.peers.flashinfer_backend:FlashInferBackend} \
    --models llama3-8b --ops qkv gate_up shrink_qkv \
    --layouts ${LAYOUTS:-prefill mixed decode128x64 decode256-rank0} --ranks 16 128 0 --out "$work/bf16" \
    > "$work/bench_bf16.log" 2>&1
  echo "rc=$?" >> "$work/bench_bf16.log"
) &
first=$!
[ "$n" -gt 1 ] || wait $first
[ "${GPU_TESTS:-1}" = 0 ] || CUDA_VISIBLE_DEVICES=$((n - 1)) gpu_tests "$work" "$(left 480)"
wait
tar -C "$work" -cf "$out/offgrid_peers.tar" .
for f in "$work"/bench_bf16.log "$work"/gpu_tests.log; do echo "== $f"; tail -n 4 "$f"; done
