#!/usr/bin/env bash
# The input-space campaign on the device: `check triton --profile ci` on CUDA (every check, CUDA
# graphs included), then a `thorough` campaign over every check at full model shapes as two
# shards of one campaign (one seed, CAMPAIGN_SEED, default the clock), run at once on GPU 0 and
# the last GPU (side by side on GPU 0 with one), sharing one example database: a Redis server (redis-server on PATH,
# else one carried in .whl/redis/ with the libraries it needs beside Debian's), else a folder.  Examples
# per group are capped (THOROUGH_EXAMPLES, default 10) so that every group runs; each shard is
# stopped by SIGINT after CAMPAIGN_S seconds (default 330; its partial report counts what ran).
# The shards' reports are merged into one.  Reports, logs and failures land in OUT/space.tar;
# the summary prints examples per second.
# Usage (on the device): bash benchmarks/device_space.sh OUT
set -u
out=${1:?output folder}
work=/tmp/space
source benchmarks/device_common.sh
device_begin "$work"
export CUDA_VISIBLE_DEVICES=0
check_ci_cuda "$work" "$(left 240)"
unset CUDA_VISIBLE_DEVICES
seed=${CAMPAIGN_SEED:-$(date +%s)}
db="$work/example_db"
redis_bin=$(command -v redis-server || echo .whl/redis/redis-server)
if [ -x "$redis_bin" ] && LD_LIBRARY_PATH=$PWD/.whl/redis "$redis_bin" --port 6390 --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
    --logfile "$work/redis.log" > /dev/null 2>&1; then
  sleep 1
  db=redis://127.0.0.1:6390/0
fi
echo "campaign seed $seed, example database $db" | tee "$work/campaign.txt"
campaign_s=$(left "${CAMPAIGN_S:-330}")
shard() {
  local i=$1 start=$SECONDS
  timeout -s INT -k 20 "$campaign_s" python3 -m conformance.cli check triton \
    --profile thorough --device cuda --max-examples "${THOROUGH_EXAMPLES:-10}" --seed "$seed" \
    --shard "$i/2" --example-db "$db" --report-json "$work/thorough$i.json" \
    --failures-dir "$work/thorough_failures" > "$work/thorough$i.log" 2>&1
  echo "rc=$? wall_s=$(( SECONDS - start ))" >> "$work/thorough$i.log"
}
# both shards at once: on GPU 0 and the last GPU, or side by side on a lone GPU
( export CUDA_VISIBLE_DEVICES=0; shard 1 ) &
( export CUDA_VISIBLE_DEVICES=$((n - 1)); shard 2 ) &
wait
python3 -m conformance.cli merge "$work/thorough1.json" "$work/thorough2.json" \
  --report-json "$work/thorough.json" --markdown "$work/thorough.md" > "$work/merge.log" 2>&1
echo "rc=$?" >> "$work/merge.log"
tar -C "$work" -cf "$out/space.tar" .
cat "$work/env.txt" "$work/campaign.txt"
for f in ci thorough1 thorough2 merge; do echo "== $f"; tail -n 4 "$work/$f.log"; done
python3 benchmarks/summarize_space.py "$work/ci.json" "$work/thorough1.json" \
  "$work/thorough2.json" "$work/thorough.json"
