#!/usr/bin/env bash
# The off-grid cases with every provider that runs on the GPU image, in one run (2 x H200):
#   GPU 0: `lora-conformance bench` with triton, torch, grouped_mm and the peers in PEERS
#          (default SGLang's triton and csgmv backends, vLLM and FlashInfer; FlashInfer
#          JIT-builds its kernel at its first case, ~90 s) on the bf16 off-grid cases;
#   GPU 1: the same bench on LAYOUTS_B when given (the two halves of one run; with MEMCHECK=1,
#          memcheck over hostile metadata first), else tests/gpu unless GPU_TESTS=0.
# The peers are named by their adapter classes: without an installed distribution the entry
# points that register `vllm` and `flashinfer` do not exist.
# Needs .peers/ (benchmarks/make_peers_bundle.sh, 46 MB), carried.  Importing SGLang's kernels
# imports sglang.srt, which needs transformers and torchvision (the GPU image has them) and the
# light packages of .peers/sglang/.
# Everything lands in OUT/offgrid_peers.tar.  Usage: bash benchmarks/device_offgrid_peers.sh OUT
set -u
out=${1:?output folder}
work=/tmp/offgrid_peers
source benchmarks/device_common.sh
device_begin "$work"
peers_setup
sglang_setup
SGLANG="conformance.peers.sglang_backends:SGLangTritonBackend conformance.peers.sglang_backends:SGLangCsgmvBackend"
# bench_peers DIR LAYOUTS...: every provider on those layouts; DIR/bench.log ends with the status
bench_peers() {
  local dir=$1; shift
  mkdir -p "$dir"
  timeout -s INT -k 20 "$(left 520)" python3 -m conformance.cli bench triton torch grouped_mm \
    ${PEERS:-$SGLANG conformance.peers.vllm_backend:VLLMBackend conformance.peers.flashinfer_backend:FlashInferBackend} \
    --models llama3-8b --ops qkv gate_up shrink_qkv --layouts "$@" --ranks 16 128 0 \
    --out "$dir" > "$dir/bench.log" 2>&1
  echo "rc=$?" >> "$dir/bench.log"
}
first_layouts() { bench_peers "$work/bf16" ${LAYOUTS:-prefill mixed decode128x64 decode256-rank0}; }
second() {
  if [ -n "${LAYOUTS_B:-}" ]; then
    [ "${MEMCHECK:-0}" = 0 ] || memcheck_hostile "$work" "$(left 120)"
    bench_peers "$work/bf16_b" $LAYOUTS_B
  elif [ "${GPU_TESTS:-1}" != 0 ]; then
    gpu_tests "$work" "$(left 480)"
  fi
}
on_two_gpus first_layouts second
tar -C "$work" -cf "$out/offgrid_peers.tar" .
for f in "$work"/bf16*/bench.log "$work"/gpu_tests.log "$work"/memcheck.log; do
  [ -e "$f" ] || continue; echo "== $f"; tail -n 4 "$f"; done
