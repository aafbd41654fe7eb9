#!/usr/bin/env bash
# One device-machine call: benchmarks on GPU 0, GPU tests on GPU 1, a thorough conformance
# campaign spread over the remaining GPUs with pytest-xdist (one worker per GPU).
# Usage (on the device): bash benchmarks/device_run.sh OUT_DIR
set -u
out=${1:?output folder}
mkdir -p "$out"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
n=$(nvidia-smi -L | wc -l)
{ nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
  date -u; } > "$out/env.txt" 2>&1
CUDA_VISIBLE_DEVICES=0 timeout "${BENCH_TIMEOUT:-540}" python3 benchmarks/device_llama8b.py --out "$out" ${BENCH_ARGS:-} > "$out/bench.log" 2>&1 &
CUDA_VISIBLE_DEVICES=$((1 % n)) timeout 540 python3 -m pytest -p conformance.plugin tests/gpu -q -x -p no:cacheprovider > "$out/gpu_tests.log" 2>&1 &
if [ "$n" -gt 2 ]; then
  gpus=$(seq -s, 2 $((n - 1)))
  CUDA_VISIBLE_DEVICES=$gpus timeout "${CAMPAIGN_TIMEOUT:-540}" python3 -m pytest -p conformance.plugin -p xdist -n $((n - 2)) \
    --pyargs conformance.suite --lora-backend triton --lora-profile thorough -q -p no:cacheprovider \
    -k "${CAMPAIGN_K:-test_matches_reference}" --lora-failures-dir "$out/failures" ${CAMPAIGN_ARGS:-} > "$out/campaign.log" 2>&1 &
fi
wait
[ -d "$out/failures" ] && tar -C "$out" -cf "$out/failures.tar" failures && rm -r "$out/failures"
cat "$out/env.txt"
tail -5 "$out/gpu_tests.log" "$out/campaign.log" 2>/dev/null
tail -60 "$out/bench.log"
