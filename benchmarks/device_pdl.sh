#!/usr/bin/env bash
# Programmatic dependent launch (LORA_TRITON_PDL, lora_triton/config.py): the same kernels with
# it in each of PDL_VARIANTS (default below), one after the other on the same GPU, so that no
# comparison crosses GPUs.
#   GPU 0: the decode cases (off-grid 64-adapter and rank-0-heavy decode, the first grid's decode
#          and 64-adapter decode at ranks 8, 32, 64), triton only, once per variant.
#   GPU 1: the dependent-launch GPU test; the same test on a mutant whose kernels skip the wait
#          (it must fail); prefill and mixed once per variant; with PDL_CHECKS=1, `check
#          --profile ci` on CUDA and tests/gpu for what time is left.
# With PDL_FINAL=1, the closing call on the shipped rule instead:
#   GPU 0: the off-grid bench with triton, torch and grouped_mm, the first grid's decode and
#          64-adapter decode at ranks 8, 32, 64 (triton, torch), then memcheck over hostile
#          metadata;
#   GPU 1: tests/gpu, the off-grid float16 cases with LORA_TRITON_PDL=0 (triton), then `check
#          --profile ci` on CUDA.
# Everything lands in OUT/pdl.tar.  Usage (on the device): bash benchmarks/device_pdl.sh OUT
set -u
out=${1:?output folder}
work=/tmp/pdl
source benchmarks/device_common.sh
device_begin "$work" decode prefill
export BENCH_DECODE_PROVIDERS=triton
all_wait=layout:wait,shrink:wait,sum:wait,expand:wait
read -r -a variants <<< "${PDL_VARIANTS:-0 1 $all_wait layout,shrink,sum layout,shrink,sum,expand:wait}"
F=tests/gpu/test_triton_gpu.py::test_gpu_dependent_launch_waits_for_the_previous_kernel
P="python3 -m pytest -v --tb=short -rfE -p no:cacheprovider --hypothesis-profile gpu"
decode() {
  python3 -c "
import torch, triton
from lora_triton import config
print('triton', triton.__version__, 'shrink mode', config.dependent_launch(torch.device('cuda'), 'shrink'))
" > "$work/decode/probe.txt" 2>&1
  local i
  for i in "${!variants[@]}"; do
    echo "v$i: LORA_TRITON_PDL=${variants[$i]}" >> "$work/decode/variants.txt"
    export LORA_TRITON_PDL=${variants[$i]}
    DECODE_LAYOUTS="decode128x64 decode256-rank0" DECODE_RANKS="16 128 0" \
      DECODE_OPS="qkv gate_up shrink_qkv" BENCH_DECODE_S=$(left 50) \
      bench_decode "$work/decode" "v${i}_offgrid"
    BENCH_DECODE_S=$(left 40) bench_decode "$work/decode" "v${i}_grid"
    DECODE_LAYOUTS=decode128x64 DECODE_RANKS="8 32 64" DECODE_OPS="qkv gate_up expand" \
      BENCH_DECODE_S=$(left 30) bench_decode "$work/decode" "v${i}_many"
  done
}
checks() {
  timeout -s INT -k 10 "$(left 120)" $P "$F" > "$work/prefill/pdl_test.log" 2>&1
  echo "rc=$?" >> "$work/prefill/pdl_test.log"
  # the mutant: a copy of the tree whose kernels skip the wait (their dependents still launch
  # early), run from its own folder so that nothing imports the real one
  local repo=$PWD i
  rm -rf /tmp/mutant && mkdir -p /tmp/mutant
  cp -r lora_ref lora_triton conformance tests pyproject.toml /tmp/mutant/
  sed -i 's/tl.extra.cuda.gdc_wait()/pass/' /tmp/mutant/lora_triton/kernels/layout.py
  ( cd /tmp/mutant && export PYTHONPATH=/tmp/site:/tmp/mutant
    grep -c gdc_wait lora_triton/kernels/layout.py
    python3 -c "import lora_triton; print(lora_triton.__file__)"
    timeout -s INT -k 10 "$(left 120)" $P "$F" ) > "$work/prefill/pdl_mutant.log" 2>&1
  echo "rc=$?" >> "$work/prefill/pdl_mutant.log"
  for i in "${!variants[@]}"; do
    LORA_TRITON_PDL=${variants[$i]} DECODE_LAYOUTS="prefill mixed" DECODE_RANKS="16 128 0" \
      DECODE_OPS="qkv gate_up shrink_qkv" BENCH_DECODE_S=$(left 60) \
      bench_decode "$work/prefill" "v$i"
  done
  [ "${PDL_CHECKS:-0}" = 1 ] || return 0
  [ "$(left 130)" -lt 60 ] || check_ci_cuda "$work" "$(left 130)"
  [ "$(left 200)" -lt 60 ] || GPU_TESTS_ARGS="--hypothesis-profile gpu" gpu_tests "$work" "$(left 200)"
}
final_bench() {
  BENCH_S=$(left 240) BENCH_FP16_S=$(left 100) bench_offgrid "$work/decode"
  BENCH_DECODE_PROVIDERS="triton torch" BENCH_DECODE_S=$(left 70) bench_decode "$work/decode"
  BENCH_DECODE_PROVIDERS="triton torch" BENCH_DECODE_S=$(left 50) bench_decode_many "$work/decode"
  [ "$(left 100)" -lt 40 ] || memcheck_hostile "$work" "$(left 100)"
}
final_checks() {
  GPU_TESTS_ARGS="--hypothesis-profile gpu" gpu_tests "$work" "$(left 470)"
  LORA_TRITON_PDL=0 timeout -s INT -k 20 "$(left 60)" python3 -m conformance.cli bench triton \
    --models odd-fp16 --ops qkv gate_up shrink_qkv --layouts prefill mixed decode64 --ranks 96 \
    --out "$work/prefill/fp16_pdl0" > "$work/prefill/bench_fp16_pdl0.log" 2>&1
  echo "rc=$?" >> "$work/prefill/bench_fp16_pdl0.log"
  [ "$(left 130)" -lt 60 ] || check_ci_cuda "$work" "$(left 130)"
}
if [ "${PDL_FINAL:-0}" = 1 ]; then on_two_gpus final_bench final_checks; else on_two_gpus decode checks; fi
tar -C "$work" -cf "$out/pdl.tar" .
cat "$work/decode/probe.txt" "$work/decode/variants.txt" 2> /dev/null
for f in "$work"/*/*.log "$work"/*.log; do
  [ -e "$f" ] || continue
  echo "== $f"; grep -E "PASSED|FAILED|ERROR|rc=|passed|failed|PASS|FAIL|mutant" "$f" | cut -c1-160 | tail -6
done
