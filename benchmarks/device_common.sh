# Shared by the device scripts (source it from the repository root on the device machine).

# device_setup DIR: install the carried wheels (.whl/ and .peers/, if any) and unpack the carried
# site trees (.peers/*.tar.xz) into /tmp/site, set PYTHONPATH, write DIR/env.txt.
device_setup() {
  mkdir -p /tmp/site
  install_wheels .whl/*.whl .peers/*.whl
  for t in .peers/*.tar.xz; do [ -e "$t" ] && tar -C /tmp/site -xJf "$t"; done
  export PYTHONPATH=/tmp/site:$PWD
  export PYTHONUNBUFFERED=1
  { nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv
    python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
    date -u; } > "$1/env.txt" 2>&1
}

# device_begin WORK [SUBFOLDER...]: a fresh work folder (WORK, emptied, so that its tar holds
# this run's files only, also where a machine runs several scripts) with these subfolders, the
# script's output folder ($out, when set), device_setup in WORK, and n = the number of GPUs.
device_begin() {
  local work=$1 sub
  shift
  [ -z "${out:-}" ] || mkdir -p "$out"
  rm -rf "$work" && mkdir -p "$work"
  for sub in "$@"; do mkdir -p "$work/$sub"; done
  device_setup "$work"
  n=$(nvidia-smi -L | wc -l)
}

# peers_setup: after device_setup with .peers/ carried, an empty module in place of vLLM's compiled
# CUDA ops (92 MB, built against another torch, not carried; its LoRA ops are Triton and do not
# use them, but vllm.platforms.cuda imports them), and FlashInfer's JIT target (sm_90a).
peers_setup() {
  cat > /tmp/site/vllm/_C_stable_libtorch.py <<'PY'
"""Stand-in for vLLM's compiled CUDA ops, which were not carried (benchmarks/device_common.sh)."""
PY
  export FLASHINFER_CUDA_ARCH_LIST=9.0a
}

# sglang_setup: after device_setup with .peers/ carried, the light packages SGLang's LoRA
# kernels import that the GPU image lacks (.peers/sglang/*.whl: orjson, pybase64, starlette and
# their kin; the image has transformers and torchvision).  Kept apart from device_setup: they
# shadow the image's own copies of some (requests, urllib3, psutil) for the whole call.
sglang_setup() {
  install_wheels .peers/sglang/*.whl
}

# install_wheels FILE...: the carried wheels among FILE (unmatched globs are skipped) into
# /tmp/site, without their dependencies.
install_wheels() {
  local wheels=() f
  for f in "$@"; do [ -e "$f" ] && wheels+=("$f"); done
  [ ${#wheels[@]} -eq 0 ] || python3 -m pip install -q --no-index --no-deps --no-compile \
    --no-cache-dir --upgrade --target /tmp/site "${wheels[@]}"
}

# bench_gate DIR PROVIDERS: the pytest-benchmark gate on a subset of the grid.  Saves a baseline
# with PROVIDERS, compares the triton provider against it (must pass), then again with a
# device-side spin injected into each triton call (must fail).  Logs DIR/pb_{save,compare,slowed}.log,
# each ending with the exit status.
bench_gate() {
  local dir=$1 providers=$2
  local suite="python3 -m pytest --pyargs conformance.bench.gates -q -p no:cacheprovider"
  # first-grid qkv and gate_up prefill at rank 16, and the off-grid rank 128
  local subset="${GATE_SUBSET:-llama3-8b and (qkv or gate_up) and prefill and (16 or 128) and not shrink}"
  local compare=(--benchmark-storage="$dir/pb" --benchmark-compare --benchmark-compare-fail=median:10%)
  LORA_BENCH_PROVIDERS=$providers timeout 120 $suite -k "$subset" \
    --benchmark-autosave --benchmark-storage="$dir/pb" > "$dir/pb_save.log" 2>&1
  echo "rc=$?" >> "$dir/pb_save.log"
  LORA_BENCH_PROVIDERS=triton timeout 90 $suite -k "$subset" "${compare[@]}" \
    > "$dir/pb_compare.log" 2>&1
  echo "rc=$?" >> "$dir/pb_compare.log"
  LORA_BENCH_INJECT_SLEEP_MS=0.05 LORA_BENCH_PROVIDERS=triton timeout 90 $suite -k "$subset" \
    "${compare[@]}" > "$dir/pb_slowed.log" 2>&1
  echo "rc=$?" >> "$dir/pb_slowed.log"
}

# bench_offgrid DIR: `lora-conformance bench` on the cases off the first grid: rank 128 and mixed
# ranks 8..128 in prefill and mixed batches, 64-adapter and rank-0-heavy decode (bf16, triton,
# torch and grouped_mm), then float16 with K and N not multiples of 64 (triton and torch; qkv,
# gate_up and their shrink).
# Logs DIR/bench_{bf16,fp16}.log (each ending with the exit status); tables in DIR/{bf16,fp16}/.
# BENCH_PROVIDERS and BENCH_FP16_PROVIDERS replace the provider lists.
bench_offgrid() {
  local dir=$1 cli="python3 -m conformance.cli"
  timeout -s INT -k 20 "${BENCH_S:-330}" $cli bench ${BENCH_PROVIDERS:-triton torch grouped_mm} --models llama3-8b \
    --ops qkv gate_up shrink_qkv --layouts prefill mixed decode128x64 decode256-rank0 \
    --ranks 16 128 0 --out "$dir/bf16" > "$dir/bench_bf16.log" 2>&1
  echo "rc=$?" >> "$dir/bench_bf16.log"
  timeout -s INT -k 20 "${BENCH_FP16_S:-100}" $cli bench ${BENCH_FP16_PROVIDERS:-triton torch} --models odd-fp16 \
    --ops qkv gate_up shrink_qkv --layouts prefill mixed decode64 --ranks 96 --out "$dir/fp16" \
    > "$dir/bench_fp16.log" 2>&1
  echo "rc=$?" >> "$dir/bench_fp16.log"
}

# left SECONDS: SECONDS, or what is left before the call's deadline (DEADLINE seconds after the
# script started, default 540) less 20 s for packing up; at least 1 (`timeout 0` never stops).
left() {
  local rest=$(( ${DEADLINE:-540} - SECONDS - 20 ))
  [ "$rest" -gt 1 ] || rest=1
  echo $(( $1 < rest ? $1 : rest ))
}

# gpu_tests DIR SECONDS: tests/gpu, stopped by SIGINT after SECONDS (pytest still prints its
# summary); log DIR/gpu_tests.log ending with the exit status.  Verbose, so the log names the
# test in flight when a limit cuts the run, and any test running past FAULT_S (default 120) s has
# every thread's Python stack written to the log.  GPU_TESTS_ARGS adds options (-x, --deselect
# NODE; not -k: on the GPU image's pytest 9.1.1, `-k tma` selected the other 32 tests); GPU_TESTS
# names the test files (default: tests/gpu).
gpu_tests() {
  # shellcheck disable=SC2086
  timeout -s INT -k 20 "$2" python3 -m pytest ${GPU_TESTS:-tests/gpu} -v --tb=short -rfE -p no:cacheprovider \
    --durations=0 -o faulthandler_timeout="${FAULT_S:-120}" ${GPU_TESTS_ARGS:-} \
    > "$1/gpu_tests.log" 2>&1
  echo "rc=$?" >> "$1/gpu_tests.log"
}

# check_ci_cuda DIR SECONDS: `lora-conformance check triton --profile ci` on CUDA; DIR/ci.json,
# DIR/ci.log (ending with the exit status), failures in DIR/ci_failures.
check_ci_cuda() {
  timeout -s INT -k 20 "$2" python3 -m conformance.cli check triton --profile ci --device cuda \
    --report-json "$1/ci.json" --failures-dir "$1/ci_failures" > "$1/ci.log" 2>&1
  echo "rc=$?" >> "$1/ci.log"
}

# memcheck_hostile DIR SECONDS: benchmarks/hostile_metadata.py under compute-sanitizer memcheck.
memcheck_hostile() {
  timeout "$2" compute-sanitizer --tool memcheck --error-exitcode 9 \
    python3 benchmarks/hostile_metadata.py > "$1/memcheck.log" 2>&1
  echo "rc=$?" >> "$1/memcheck.log"
}

# ncu_bin: the Nsight Compute command (on PATH, else the CUDA toolkit's).
ncu_bin() { command -v ncu || echo /usr/local/cuda/bin/ncu; }

# ncu_cases DIR NAME TREE: Nsight Compute (SpeedOfLight and DRAM bytes) on benchmarks/ncu_cases.py
# with the lora_triton found first in TREE; DIR/ncu_NAME.csv, DIR/ncu_NAME.md, DIR/ncu_NAME.log.
ncu_cases() {
  local dir=$1 name=$2 tree=$3
  PYTHONPATH=$tree:$PYTHONPATH timeout "${NCU_S:-150}" "$(ncu_bin)" --profile-from-start off \
    --section SpeedOfLight --metrics "$(python3 benchmarks/ncu_cases.py --metrics)" --csv \
    python3 benchmarks/ncu_cases.py > "$dir/ncu_$name.csv" 2> "$dir/ncu_$name.log"
  echo "rc=$?" >> "$dir/ncu_$name.log"
  python3 benchmarks/ncu_cases.py --table "$dir/ncu_$name.csv" > "$dir/ncu_$name.md" 2>> "$dir/ncu_$name.log"
}

# bench_decode DIR [NAME]: the first grid's decode cases (decode64: 8 adapters, decode256: 32),
# whose launch rule depends on the number of row tiles; DIR/NAME/, DIR/bench_NAME.log (NAME
# defaults to decode).  DECODE_LAYOUTS, DECODE_RANKS and DECODE_OPS replace the cases.
bench_decode() {
  local name=${2:-decode}
  timeout -s INT -k 20 "${BENCH_DECODE_S:-120}" python3 -m conformance.cli bench \
    ${BENCH_DECODE_PROVIDERS:-triton torch} --models llama3-8b \
    --ops ${DECODE_OPS:-qkv gate_up expand shrink_qkv} --layouts ${DECODE_LAYOUTS:-decode64 decode256} \
    --ranks ${DECODE_RANKS:-16 64} --out "$1/$name" > "$1/bench_$name.log" 2>&1
  echo "rc=$?" >> "$1/bench_$name.log"
}

# bench_decode_many DIR: 64-adapter decode at the ranks the off-grid bench leaves out (8, 32,
# 64); DIR/decode_many/, DIR/bench_decode_many.log.
bench_decode_many() {
  DECODE_LAYOUTS=decode128x64 DECODE_RANKS="8 32 64" DECODE_OPS="qkv gate_up expand" \
    bench_decode "$1" decode_many
}

