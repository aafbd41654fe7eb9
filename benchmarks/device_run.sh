#!/usr/bin/env bash
# One device-machine call: benchmarks on GPU 0; the GPU tests and a thorough conformance campaign
# on the others (pytest-xdist, one worker per GPU; on two GPUs they share GPU 1 in turn).
# GPU_TESTS=0 gives every GPU but 0 to the campaign.
# Carry .whl and lora_conformance.egg-info (the entry points: the pytest plugin and the adapters).
# Usage (on the device): bash benchmarks/device_run.sh OUT_DIR
set -u
out=${1:?output folder}
mkdir -p "$out"
source benchmarks/device_common.sh
device_setup "$out"
n=$(nvidia-smi -L | wc -l)
CUDA_VISIBLE_DEVICES=0 timeout "${BENCH_TIMEOUT:-540}" python3 benchmarks/device_llama8b.py --out "$out" ${BENCH_ARGS:-} > "$out/bench.log" 2>&1 &
campaign() {  # $1: GPUs, $2: seconds; SIGINT lets pytest print its summary when time is up
  local workers=$(( $(echo "$1" | tr ',' '\n' | wc -l) ))
  local xdist=""; [ "$workers" -gt 1 ] && xdist="-p xdist -n $workers"
  CUDA_VISIBLE_DEVICES=$1 timeout -s INT "$2" python3 -m pytest $xdist \
    --pyargs conformance.suite --lora-backend triton --lora-profile thorough -q -p no:cacheprovider \
    -k "${CAMPAIGN_K:-test_matches_reference}" --lora-failures-dir "$out/failures" \
    --lora-stats-file "$out/campaign_stats.jsonl" ${CAMPAIGN_ARGS:-} > "$out/campaign.log" 2>&1
}
if [ "${GPU_TESTS:-1}" = 1 ]; then
  if [ "$n" -gt 2 ]; then
    CUDA_VISIBLE_DEVICES=1 timeout 540 python3 -m pytest tests/gpu -q -x -p no:cacheprovider > "$out/gpu_tests.log" 2>&1 &
    campaign "$(seq -s, 2 $((n - 1)))" "${CAMPAIGN_TIMEOUT:-540}" &
  else
    ( CUDA_VISIBLE_DEVICES=$((1 % n)) timeout 300 python3 -m pytest tests/gpu -q -x -p no:cacheprovider > "$out/gpu_tests.log" 2>&1
      campaign $((1 % n)) $(( ${CAMPAIGN_TIMEOUT:-540} - SECONDS )) ) &
  fi
else
  campaign "$(seq -s, 1 $((n - 1)))" "${CAMPAIGN_TIMEOUT:-540}" &
fi
wait
[ -d "$out/failures" ] && tar -C "$out" -cf "$out/failures.tar" failures && rm -r "$out/failures"
[ -f "$out/campaign_stats.jsonl" ] && python3 -m conformance.cli stats "$out/campaign_stats.jsonl" > "$out/campaign_summary.txt"
rm -f "$out/campaign_stats.jsonl"  # (keeps the file count under the device's 8)
cat "$out/env.txt" "$out/campaign_summary.txt" 2>/dev/null
tail -5 "$out/gpu_tests.log" "$out/campaign.log" 2>/dev/null
tail -60 "$out/bench.log"
