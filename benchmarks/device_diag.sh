#!/usr/bin/env bash
# The tests/gpu runs that a time limit had cut (2026-11-29, call 2 of
# results/2026-11-29-h200-decode/), rerun with room and under the `gpu` Hypothesis profile:
#   GPU 0: tests/gpu in order, stopping at the first failure (-x), for 250 s;
#   GPU 1: test_gpu_grid[qkv-bfloat16] and [expand-float32] alone (the two that printed F when
#          a limit's SIGINT landed), then the shrink's TMA test (by node id: on the GPU image's
#          pytest 9.1.1, `-k tma` selected the 32 other tests and deselected these 4).
# Everything lands in OUT/diag.tar.  Usage (on the device): bash benchmarks/device_diag.sh OUT
set -u
out=${1:?output folder}
work=/tmp/diag
source benchmarks/device_common.sh
device_begin "$work"
mkdir -p "$work/a" "$work/b"
P="python3 -m pytest -v --tb=long -rfE -p no:cacheprovider --hypothesis-profile gpu -o faulthandler_timeout=100"
F=tests/gpu/test_triton_gpu.py
in_order() {
  timeout -s INT -k 10 250 $P -x tests/gpu > "$work/a/seq.log" 2>&1
  echo "rc=$?" >> "$work/a/seq.log"
}
alone() {
  timeout -s INT -k 10 120 $P "$F::test_gpu_grid[qkv-bfloat16]" "$F::test_gpu_grid[expand-float32]" \
    > "$work/b/alone.log" 2>&1
  echo "rc=$?" >> "$work/b/alone.log"
  timeout -s INT -k 10 120 $P "$F::test_gpu_shrink_weight_tiles_through_tma" > "$work/b/tma.log" 2>&1
  echo "rc=$?" >> "$work/b/tma.log"
}
on_two_gpus in_order alone
tar -C "$work" -cf "$out/diag.tar" .
for f in "$work"/*/*.log; do echo "== $f"; grep -E "PASSED|FAILED|ERROR|rc=|passed|failed" "$f" | cut -c1-200 | tail -20; done
