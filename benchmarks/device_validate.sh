#!/usr/bin/env bash
# One device-machine call that checks a kernel change and the GPU paths of the tools, on 4 GPUs:
#   GPU 0: device_llama8b.py (with --sweep when SWEEP=1: the triton launch configurations);
#   GPU 1: tests/gpu, then the pytest-benchmark suite (autosave, compare, a slowed compare) and
#          `lora-conformance bench`;
#   GPU 2: the third-party adapters (`lora-conformance check NAME --device cuda`, ADAPTERS), with
#          ADAPTER_ENV set for them (e.g. SGLANG_USE_CUSTOM_TRITON_KERNEL_CACHE=0), and the
#          csgmv kernel-cache reproduction with SGLang's cache on and off;
#   GPU 3: a short thorough campaign on the triton backend.
# Everything lands in OUT_DIR/validate.tar (the device returns at most 8 files).
# Usage (on the device, with .whl and lora_conformance.egg-info carried):
#   bash benchmarks/device_validate.sh OUT_DIR
set -u
out=${1:?output folder}
work=/tmp/validate
mkdir -p "$out" "$work"
source benchmarks/device_common.sh
device_setup "$work"
cli="python3 -m conformance.cli"

CUDA_VISIBLE_DEVICES=0 timeout "${BENCH_TIMEOUT:-480}" python3 benchmarks/device_llama8b.py \
  --out "$work/bench" $([ "${SWEEP:-0}" = 1 ] && echo --sweep) ${BENCH_ARGS:-} > "$work/bench.log" 2>&1 &

( export CUDA_VISIBLE_DEVICES=1
  timeout 240 python3 -m pytest tests/gpu -q -p no:cacheprovider > "$work/gpu_tests.log" 2>&1
  bench_gate "$work" triton,torch,sglang-triton
  timeout 150 $cli bench triton torch sglang-triton sglang-csgmv --ops qkv shrink_qkv \
    --layouts prefill decode256 --ranks 16 64 --out "$work/cli_bench" > "$work/cli_bench.log" 2>&1
  echo "rc=$?" >> "$work/cli_bench.log"
) &

( export CUDA_VISIBLE_DEVICES=2
  { timeout 60 python3 benchmarks/sglang_csgmv_cache_repro.py
    SGLANG_USE_CUSTOM_TRITON_KERNEL_CACHE=0 timeout 60 python3 benchmarks/sglang_csgmv_cache_repro.py
  } > "$work/csgmv_cache_repro.log" 2>&1
  for b in ${ADAPTERS:-sglang-triton sglang-csgmv}; do
    env ${ADAPTER_ENV:-} timeout "${ADAPTER_TIMEOUT:-200}" $cli check "$b" --device cuda --profile ci \
      --report-json "$work/compat-$b.json" --failures-dir "$work/replays" > "$work/compat-$b.log" 2>&1
    echo "rc=$?" >> "$work/compat-$b.log"
  done
) &

CUDA_VISIBLE_DEVICES=3 timeout -s INT "${CAMPAIGN_TIMEOUT:-400}" python3 -m pytest \
  --pyargs conformance.suite --lora-backend triton --lora-profile thorough -q -p no:cacheprovider \
  -k "${CAMPAIGN_K:-test_matches_reference}" --lora-failures-dir "$work/failures" \
  --lora-stats-file "$work/campaign_stats.jsonl" > "$work/campaign.log" 2>&1 &
wait
$cli stats "$work/campaign_stats.jsonl" > "$work/campaign_summary.txt" 2>&1
tar -C "$work" -cf "$out/validate.tar" .
cp "$work/bench/llama8b.md" "$out/" 2>/dev/null
cat "$work/env.txt" "$work/campaign_summary.txt"
cat "$work/csgmv_cache_repro.log"
for f in "$work/gpu_tests.log" "$work/campaign.log" "$work"/pb_*.log "$work"/compat-*.log "$work/cli_bench.log"; do
  echo "== $f"; tail -n 4 "$f"
done
tail -40 "$work/bench.log"
