#!/usr/bin/env bash
# One device-machine call for the closing evidence (4 GPUs):
#   GPU 0: tests/gpu; the pytest-benchmark gate on the GPU (autosave, compare, a slowed compare
#          with a device-side spin that must fail); the property checks beyond the diff
#          (metamorphic, CUDA-graph refill, bad input) under the thorough profile;
#   GPUs 1..n-1: the thorough differential campaign on the triton backend (pytest-xdist, one
#          worker per GPU), summarised by `lora-conformance stats`.
# Everything lands in OUT_DIR/final.tar.  Carry .whl and lora_conformance.egg-info.
# Usage (on the device): bash benchmarks/device_final.sh OUT_DIR
set -u
out=${1:?output folder}
work=/tmp/final
mkdir -p "$out" "$work"
source benchmarks/device_common.sh
device_setup "$work"
n=$(nvidia-smi -L | wc -l)
suite="python3 -m pytest --pyargs conformance.suite --lora-backend triton --lora-profile thorough -q -p no:cacheprovider"

( export CUDA_VISIBLE_DEVICES=0
  timeout 200 python3 -m pytest tests/gpu -q -p no:cacheprovider > "$work/gpu_tests.log" 2>&1
  bench_gate "$work" triton
  timeout -s INT "${PROPS_TIMEOUT:-200}" $suite -k "not test_matches_reference" \
    --lora-max-examples "${PROPS_EXAMPLES:-60}" --lora-failures-dir "$work/failures_props" \
    --lora-stats-file "$work/props_stats.jsonl" > "$work/props.log" 2>&1
) &

CUDA_VISIBLE_DEVICES=$(seq -s, 1 $((n - 1))) timeout -s INT "${CAMPAIGN_TIMEOUT:-420}" $suite \
  -p xdist -n $((n - 1)) -k test_matches_reference ${CAMPAIGN_ARGS:-} \
  --lora-failures-dir "$work/failures" --lora-stats-file "$work/campaign_stats.jsonl" \
  > "$work/campaign.log" 2>&1 &
wait
python3 -m conformance.cli stats "$work/campaign_stats.jsonl" > "$work/campaign_summary.txt" 2>&1
python3 -m conformance.cli stats "$work/props_stats.jsonl" > "$work/props_summary.txt" 2>&1
tar -C "$work" -cf "$out/final.tar" .
cat "$work/env.txt" "$work/campaign_summary.txt" "$work/props_summary.txt"
for f in "$work/gpu_tests.log" "$work/campaign.log" "$work/props.log" "$work"/pb_*.log; do
  echo "== $f"; tail -n 4 "$f"
done
grep -A8 "Name (time" "$work/pb_slowed.log" | cut -c1-150
