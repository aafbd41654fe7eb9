#!/usr/bin/env bash
# The input-space campaign on one GPU: `check triton --profile ci` on CUDA (every check, CUDA
# graphs included), then a `thorough` campaign over every check at full model shapes, its
# examples per group capped (THOROUGH_EXAMPLES, default 30) so that every group runs, stopped by
# SIGINT after CAMPAIGN_S seconds (default 330; the partial report counts what ran).  Reports,
# logs and failures land in OUT/space.tar; the summary prints examples per second.
# Usage (on the device): bash benchmarks/device_space.sh OUT
set -u
out=${1:?output folder}
work=/tmp/space
source benchmarks/device_common.sh
device_begin "$work"
export CUDA_VISIBLE_DEVICES=0  # one GPU (the first)
check_ci_cuda "$work" 240
start=$(date +%s)
timeout -s INT -k 20 "${CAMPAIGN_S:-330}" python3 -m conformance.cli check triton \
  --profile thorough --device cuda --max-examples "${THOROUGH_EXAMPLES:-30}" \
  --report-json "$work/thorough.json" --failures-dir "$work/thorough_failures" \
  > "$work/thorough.log" 2>&1
echo "rc=$? wall_s=$(( $(date +%s) - start ))" >> "$work/thorough.log"
tar -C "$work" -cf "$out/space.tar" .
cat "$work/env.txt"
for f in ci thorough; do echo "== $f"; tail -n 4 "$work/$f.log"; done
python3 benchmarks/summarize_space.py "$work/ci.json" "$work/thorough.json"
