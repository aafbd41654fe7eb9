#!/usr/bin/env bash
# The device driver: named jobs on the GPUs it finds, in one call of the device tool.
#
# Usage (on the device, from the repository root):
#   bash benchmarks/device.sh OUT JOB[:SECONDS] ...     (or JOBS="JOB ..." in the environment)
#   bash benchmarks/device.sh --list                    (the job table)
#
# A job that takes one GPU joins the queue of the next GPU in turn; the GPUs run their queues
# side by side, each in order.  A job that takes every GPU waits until the queues before it
# are done, then runs alone.  Each job is stopped after its seconds (the table's, or JOB:SECONDS)
# or at the call's deadline (DEADLINE seconds after the start, default 540, less 20 s to pack
# up), whichever comes first.  SLOTS=k gives each GPU k queues side by side (default 1): for
# jobs whose results do not depend on time (checks, tests), never for timing jobs.  Job NAME writes OUT's folder NAME/ (logs end with the exit
# status); OUT/device.tar holds them all, with env.txt and jobs.txt (each job's GPU and seconds).
# On a machine without a GPU, `bash benchmarks/dry_run.sh benchmarks/device.sh OUT JOBS="..."`
# prints what each GPU would run.
set -u

# name | GPUs | seconds | what it runs
JOB_TABLE="\
ci|one|240|lora-conformance check triton --profile ci on CUDA: every check, CUDA graphs included
gpu-tests|one|420|tests/gpu, verbose, each test named in the log as it starts
memcheck|one|150|benchmarks/hostile_metadata.py under compute-sanitizer memcheck
grid|one|540|lora-conformance bench on the grids of BENCHMARKS.md (triton, torch, grouped_mm)
peers|one|520|the grid's bf16 cases with every peer in one run (needs .peers/)
gate|one|300|the pytest-benchmark gate: save, compare (must pass), compare slowed (must fail)
ncu|one|150|Nsight Compute (speed of light, DRAM bytes) on benchmarks/ncu_cases.py
sweep|one|300|benchmarks/config_sweep.py: launch-rule candidates beside the shipped rule (SWEEPS)
invariance|one|240|batch_invariance on CUDA: triton-invariant (mode on), the default rules declared invariant (mode off)
invariance-cost|one|300|bench: triton beside triton-invariant and torch (bf16 prefill, mixed, decode; fp16 odd)
peer-sglang-triton|one|300|check of the SGLang triton adapter: ci on CUDA, isolated, verbose (needs .peers/)
peer-sglang-csgmv|one|300|the same for SGLang csgmv
peer-sglang-csgmv-nocache|one|300|the same for SGLang csgmv with its kernel cache off (SGLANG_USE_CUSTOM_TRITON_KERNEL_CACHE=0)
replays|one|240|lora-conformance replay of every file REPLAYS (a glob) names, on REPLAY_BACKEND, each in a fresh process (needs .peers/ for a peer)
peer-vllm|one|300|the same for vLLM
peer-flashinfer|one|300|the same for FlashInfer
peer-vllm-invariant|one|300|the same for vLLM under VLLM_BATCH_INVARIANT=1, with the batch_invariance check
huge|one|150|the 2^31 size classes: check triton, thorough profile, diff of shrink and qkv in bf16, one drawn example a group
thorough|all|330|a thorough campaign over every check: a shard per GPU (two on one), one example database, merged"

if [ "${1:-}" = --list ]; then
  printf '%s\n' "$JOB_TABLE" | awk -F'|' '{printf "%-10s %-4s %5s s  %s\n", $1, $2, $3, $4}'
  exit 0
fi
out=${1:?output folder (or --list)}
shift
work=/tmp/device
source benchmarks/device_common.sh

job_ci() { check_ci_cuda "$1" "$2"; }
job_gpu_tests() { gpu_tests "$1" "$2"; }
job_memcheck() { memcheck_hostile "$1" "$2"; }
job_gate() { bench_gate "$1" triton,torch; }
job_ncu() { NCU_S=$2 ncu_cases "$1" shipped "$PWD"; }

# sweep: the sweeps of config_sweep.py named in SWEEPS (default: the expand's base prefetch)
job_sweep() {
  # shellcheck disable=SC2086
  timeout -s INT -k 20 "$2" python3 benchmarks/config_sweep.py "$1" \
    ${SWEEPS:-prefetch_prefill prefetch_decode} > "$1/sweep.log" 2>&1
  echo "rc=$?" >> "$1/sweep.log"
}

# grid: the off-grid bf16 and float16 cases, the first grid's decode, and 64-adapter decode at
# ranks 8, 32 and 64, with 50%, 15%, 20% and 15% of the job's seconds
job_grid() {
  local s=$2
  BENCH_S=$(( s / 2 )) BENCH_FP16_S=$(( s * 15 / 100 )) bench_offgrid "$1"
  BENCH_DECODE_S=$(( s / 5 )) bench_decode "$1" decode
  BENCH_DECODE_S=$(( s * 15 / 100 )) bench_decode_many "$1"
}

# peers: the grid's bf16 cases (PEER_LAYOUTS: fewer layouts) with every provider in one run (rows
# are written as they come, so a run cut short keeps them); the adapters are named by class
# path, so that the bundle's packages (.peers/, from benchmarks/make_peers_bundle.sh) need no
# entry points
job_peers() {
  peers_setup
  sglang_setup
  local peers="conformance.peers.sglang_backends:SGLangTritonBackend
    conformance.peers.sglang_backends:SGLangCsgmvBackend conformance.peers.vllm_backend:VLLMBackend
    conformance.peers.flashinfer_backend:FlashInferBackend"
  # shellcheck disable=SC2086
  timeout -s INT -k 20 "$2" python3 -m conformance.cli bench triton torch grouped_mm \
    ${PEERS:-$peers} --models llama3-8b --ops qkv gate_up shrink_qkv \
    --layouts ${PEER_LAYOUTS:-prefill mixed decode128x64 decode256-rank0} --ranks 16 128 0 \
    --out "$1" > "$1/bench.log" 2>&1
  echo "rc=$?" >> "$1/bench.log"
}

# invariance: the batch_invariance check (ci, CUDA) on triton-invariant and on the default rules
# declared invariant (benchmarks/probes/invariance_probe.py), half the seconds each
# (INVARIANCE_ARGS adds options: --ops, --dtypes); DIR/{on,off}.{json,log}, each log ending with
# the exit status
job_huge() {
  timeout -s INT -k 20 "$2" python3 -m conformance.cli check triton --profile thorough \
    --device cuda --checks diff --ops shrink qkv --dtypes bfloat16 --max-examples 1 \
    --report-json "$1/check.json" --failures-dir "$1/failures" > "$1/check.log" 2>&1
  echo "rc=$?" >> "$1/check.log"
}

job_invariance() {
  local dir=$1 secs=$(( $2 / 2 )) name target
  for name in on off; do
    case $name in
      on) target="triton-invariant --checks batch_invariance" ;;
      off) target="invariance_probe:TritonDeclaredInvariant --checks batch_invariance" ;;
    esac
    # shellcheck disable=SC2086
    PYTHONPATH=$PWD/benchmarks/probes:$PYTHONPATH timeout -s INT -k 20 "$secs" python3 -m \
      conformance.cli check $target --profile ci --device cuda ${INVARIANCE_ARGS:-} \
      --report-json "$dir/$name.json" --failures-dir "$dir/failures_$name" > "$dir/$name.log" 2>&1
    echo "rc=$?" >> "$dir/$name.log"
  done
}

# invariance-cost: what the batch-invariant mode costs, timed beside the default rules and torch
job_invariance_cost() {
  BENCH_PROVIDERS="triton triton-invariant torch" BENCH_FP16_PROVIDERS="triton triton-invariant torch" \
    BENCH_S=$(( $2 * 7 / 10 )) BENCH_FP16_S=$(( $2 * 3 / 10 )) bench_offgrid "$1"
}

# peer-NAME: one peer adapter through `check --profile ci --device cuda`, in a worker process
# (--isolate: a crash is reported with its case), verbose (tracebacks kept), PEER_EXAMPLES
# drawn examples per group (default 8) and a deadline of PEER_DEADLINE seconds per example
# (default 60; FlashInfer's first call compiles its kernels)
peers_ready() {
  # the bundle is unpacked once, under a lock: peer jobs on other GPUs run at the same time
  export FLASHINFER_CUDA_ARCH_LIST=9.0a
  ( flock 9
    [ -e /tmp/site/.peers_ready ] || { peers_setup; sglang_setup; touch /tmp/site/.peers_ready; }
  ) 9> /tmp/site.lock
}
peer_check() {
  local dir=$1 secs=$2 class=$3
  peers_ready
  timeout -s INT -k 20 "$secs" python3 -m conformance.cli check "$class" --profile ci \
    --device cuda --max-examples "${PEER_EXAMPLES:-8}" --deadline "${PEER_DEADLINE:-60}" --isolate -v \
    --report-json "$dir/check.json" --failures-dir "$dir/failures" > "$dir/check.log" 2>&1
  echo "rc=$?" >> "$dir/check.log"
}
job_peer_sglang_triton() { peer_check "$1" "$2" conformance.peers.sglang_backends:SGLangTritonBackend; }
job_peer_sglang_csgmv() { peer_check "$1" "$2" conformance.peers.sglang_backends:SGLangCsgmvBackend; }
job_peer_sglang_csgmv_nocache() {
  SGLANG_USE_CUSTOM_TRITON_KERNEL_CACHE=0 job_peer_sglang_csgmv "$@"
}
# replays: each saved case REPLAYS names (a glob) replayed alone (a fresh worker each), on
# REPLAY_BACKEND (a class path); DIR/replays.log, each replay's exit status after its output
job_replays() {
  local f start=$SECONDS
  if [ -z "${REPLAYS:-}" ] || [ -z "${REPLAY_BACKEND:-}" ]; then
    echo "replays: set REPLAYS (a glob of replay files) and REPLAY_BACKEND" > "$1/replays.log"
    return
  fi
  peers_ready
  # shellcheck disable=SC2086
  for f in $REPLAYS; do
    echo "== $f" >> "$1/replays.log"
    local rest=$(( $2 - SECONDS + start ))
    [ "$rest" -gt 1 ] || { echo "not run: the job's time is up" >> "$1/replays.log"; continue; }
    timeout -s INT -k 10 "$(left "$rest")" python3 -m conformance.cli replay \
      "$f" --backend "$REPLAY_BACKEND" >> "$1/replays.log" 2>&1
    echo "rc=$?" >> "$1/replays.log"
  done
}
job_peer_vllm() { peer_check "$1" "$2" conformance.peers.vllm_backend:VLLMBackend; }
job_peer_vllm_invariant() {
  peer_check "$1" "$2" conformance.peers.vllm_invariant_backend:VLLMBatchInvariantBackend
}
job_peer_flashinfer() { peer_check "$1" "$2" conformance.peers.flashinfer_backend:FlashInferBackend; }

# thorough: one campaign (seed CAMPAIGN_SEED, default the clock) in SHARDS shards (default one
# per GPU, two on one GPU), each capped at THOROUGH_EXAMPLES examples per group (default 10, so
# that every group runs), sharing a Redis server (redis-server on PATH, else the one carried in
# .whl/redis/ with the libraries Debian's needs), else a folder; the reports merged into one
job_thorough() {
  local dir=$1 secs=$2 seed=${CAMPAIGN_SEED:-$(date +%s)} db="$1/example_db" i
  local shards=${SHARDS:-$(( gpus > 1 ? gpus : 2 ))}
  local redis_bin
  redis_bin=$(command -v redis-server || echo .whl/redis/redis-server)
  if [ -x "$redis_bin" ] && LD_LIBRARY_PATH=$PWD/.whl/redis "$redis_bin" --port 6390 \
      --bind 127.0.0.1 --save "" --appendonly no --daemonize yes --logfile "$dir/redis.log" \
      > /dev/null 2>&1; then
    sleep 1
    db=redis://127.0.0.1:6390/0
  fi
  echo "campaign seed $seed, $shards shards, example database $db" | tee "$dir/campaign.txt"
  for ((i = 1; i <= shards; i++)); do
    ( export CUDA_VISIBLE_DEVICES=$(( (i - 1) % gpus ))
      local start=$SECONDS
      timeout -s INT -k 20 "$secs" python3 -m conformance.cli check triton --profile thorough \
        --device cuda --max-examples "${THOROUGH_EXAMPLES:-10}" --seed "$seed" \
        --shard "$i/$shards" --example-db "$db" --report-json "$dir/thorough$i.json" \
        --failures-dir "$dir/failures" > "$dir/thorough$i.log" 2>&1
      echo "rc=$? wall_s=$(( SECONDS - start ))" >> "$dir/thorough$i.log" ) &
  done
  wait
  python3 -m conformance.cli merge "$dir"/thorough[0-9]*.json --report-json "$dir/thorough.json" \
    --markdown "$dir/thorough.md" > "$dir/merge.log" 2>&1
  echo "rc=$?" >> "$dir/merge.log"
  python3 benchmarks/tables.py space "$dir"/thorough*.json > "$dir/summary.txt" 2>&1
}

# job_field NAME FIELD: a column of NAME's row in the table (2: GPUs, 3: seconds); empty if none
job_field() { printf '%s\n' "$JOB_TABLE" | awk -F'|' -v j="$1" -v f="$2" '$1 == j {print $f}'; }

# run_job NAME SECONDS: the job in its folder, its GPU and wall time added to jobs.txt
run_job() {
  local name=$1 start=$SECONDS
  mkdir -p "$work/$name"
  "job_${name//-/_}" "$work/$name" "$(left "$2")"
  echo "$name GPU ${CUDA_VISIBLE_DEVICES:-all} $(( SECONDS - start )) s" >> "$work/jobs.txt"
}

# the queues of one-GPU jobs ("NAME:SECONDS ..." per GPU), run side by side, then emptied
queues=()
next=0
run_queues() {
  local g job
  for g in "${!queues[@]}"; do
    ( export CUDA_VISIBLE_DEVICES=$(( g % gpus ))
      for job in ${queues[$g]}; do run_job "${job%%:*}" "${job##*:}"; done ) &
  done
  wait
  queues=()
  next=0
}

read -r -a wanted <<< "${*:-${JOBS:-ci gpu-tests}}"
for job in "${wanted[@]}"; do
  name=${job%%:*}
  [ -n "$(job_field "$name" 2)" ] || { echo "unknown job '$name'; the jobs:"; bash "$0" --list; exit 2; }
done
device_begin "$work"
gpus=$n
n=$(( n * ${SLOTS:-1} ))  # the queues
for job in "${wanted[@]}"; do
  name=${job%%:*}
  secs=${job#*:}
  [ "$secs" != "$job" ] || secs=$(job_field "$name" 3)
  if [ "$(job_field "$name" 2)" = all ]; then
    run_queues
    run_job "$name" "$secs"
  else
    queues[next]="${queues[next]:-} $name:$secs"
    next=$(( (next + 1) % n ))
  fi
done
run_queues
tar -C "$work" -cf "$out/device.tar" .
cat "$work/env.txt" "$work/jobs.txt"
for log in "$work"/*/*.log; do echo "== ${log#"$work"/}"; tail -n 3 "$log"; done
