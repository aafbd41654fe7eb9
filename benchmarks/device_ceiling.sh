#!/usr/bin/env bash
# One call (2 x H200, or 1 with the halves in turn):
#   GPU 0: benchmarks/gemm_ceiling.py: the shipped shrink beside cuBLAS and probe kernels
#          (pointer loads against TMA descriptors, several tiles) on the rank-128 and rank-64
#          prefill shrink;
#   GPU 1: the unmerged kept-split-partials kernels (carried as .ksp/) against the working
#          tree's on the decode cases whose shrink splits K (triton only), each tree in turn.
# Everything lands in OUT/ceiling.tar.  Usage (on the device): bash benchmarks/device_ceiling.sh OUT
set -u
out=${1:?output folder}
work=/tmp/ceiling
source benchmarks/device_common.sh
device_begin "$work" main ksp main2
probe() {
  timeout -s INT -k 20 "$(left 240)" python3 benchmarks/gemm_ceiling.py "$work/probe" \
    > "$work/probe.log" 2>&1
  echo "rc=$?" >> "$work/probe.log"
}
# decode_bench DIR TREE: fused decode cases with the lora_triton found first in TREE
decode_bench() {
  ( cd /tmp && PYTHONPATH=$2:$PYTHONPATH timeout -s INT -k 20 "$(left 130)" python3 -m conformance.cli \
      bench triton --models llama3-8b --ops qkv gate_up --layouts decode64 decode256 decode128x64 \
      decode256-rank0 --ranks 16 64 128 --out "$1/decode" > "$1/bench.log" 2>&1
    echo "rc=$?" >> "$1/bench.log" )
}
branch_and_main() {
  local repo=$PWD
  decode_bench "$work/main" "$repo"
  decode_bench "$work/ksp" "$repo/.ksp"
  decode_bench "$work/main2" "$repo"
}
on_two_gpus probe branch_and_main
tar -C "$work" -cf "$out/ceiling.tar" .
for f in "$work"/probe.log "$work"/*/bench.log; do echo "== $f"; tail -n 40 "$f"; done
