#!/usr/bin/env bash
# Trust on the shrink's TMA weight path (2 x H200, or 1 with the halves in turn):
#   GPU 0: tests/gpu's TMA test (the oracle on the shipped and the forced path), then the
#          thorough campaign on qkv, bfloat16;
#   GPU 1: the thorough campaign on gate_up, bfloat16.
# Everything lands in OUT/tma_trust.tar.  Usage: bash benchmarks/device_tma_trust.sh OUT
set -u
out=${1:?output folder}
work=/tmp/tma_trust
source benchmarks/device_common.sh
device_begin "$work" qkv gate_up
tma_test_and_qkv() {
  # by node id: on the GPU image's pytest 9.1.1, `-k tma` selected the other tests instead
  timeout -s INT -k 20 "$(left 90)" python3 -m pytest -q -rfE --tb=short -p no:cacheprovider \
    tests/gpu/test_triton_gpu.py::test_gpu_shrink_weight_tiles_through_tma \
    > "$work/gpu_tma.log" 2>&1
  echo "rc=$?" >> "$work/gpu_tma.log"
  THOROUGH_ARGS="--ops qkv --dtypes bfloat16" thorough_cuda "$work/qkv" "$(left 400)"
}
gate_up() { THOROUGH_ARGS="--ops gate_up --dtypes bfloat16" thorough_cuda "$work/gate_up" "$(left 400)"; }
on_two_gpus tma_test_and_qkv gate_up
tar -C "$work" -cf "$out/tma_trust.tar" .
for f in "$work"/gpu_tma.log "$work"/*/thorough.log; do echo "== $f"; tail -n 6 "$f"; done
