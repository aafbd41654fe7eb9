#!/usr/bin/env bash
# FlashInfer and vLLM on the GPU, in one device call on 4 GPUs:
#   GPU 0: benchmarks/flashinfer_probe.py (FlashInfer's JIT build, then unpadded sizes), then
#          `lora-conformance check flashinfer` at the ci profile, then at dev;
#   GPU 1: whether vLLM's compiled extension could load on this torch (its torch symbols), then
#          `lora-conformance check vllm` at ci, then at dev;
#   GPU 2: benchmarks/vllm_lut_repro.py, the adapters' own tests (tests/peers), then
#          `lora-conformance bench` with vllm and flashinfer beside triton and torch;
#   GPU 3: thorough-profile diff checks of both (larger shapes); tests/gpu when GPU3=tests; a
#          second, seeded dev run of vllm when GPU3=vllm-seeded.
# FLASHINFER_CHECKS=0 leaves GPU 0 idle (FlashInfer then runs only in the tests and the bench).
# Everything lands in OUT_DIR/peers.tar.
#
# What is carried (.peers/, git-ignored; benchmarks/make_peers_bundle.sh builds it):
#   flashinfer_site.tar.xz  flashinfer-python 0.7.2.post1, without csrc/ subfolders it doesn't
#                           compile for segment GEMM;
#   vllm_site.tar.xz        vLLM 0.33.0's Python package, without its compiled extensions;
#   *.whl                   the Python packages both import that the image lacks;
#   vllm_C_undefined.txt    the torch symbols vLLM's _C_stable_libtorch.abi3.so needs.
# vLLM's compiled ops (92 MB, built against torch 2.14) do not fit a call and are not used by its
# LoRA ops, which are Triton; vllm.platforms.cuda imports them unconditionally, so an empty module
# stands in, and this script records whether the real one could have loaded here.
# Usage (on the device, with .peers carried):  bash benchmarks/device_peers.sh OUT_DIR
set -u
out=${1:?output folder}
work=/tmp/peers
mkdir -p "$out" "$work"
source benchmarks/device_common.sh
device_setup "$work"
peers_setup
cli="python3 -m conformance.cli"

check() {  # check NAME PROFILE[-LABEL] SECONDS [more args]
  local name=$1 run=$2 seconds=$3; shift 3
  timeout -s INT "$seconds" $cli check "$name" --device cuda --profile "${run%%-*}" "$@" \
    --report-json "$work/compat-$name-$run.json" --failures-dir "$work/replays-$name-$run" \
    > "$work/compat-$name-$run.log" 2>&1
  echo "rc=$?" >> "$work/compat-$name-$run.log"
}

( export CUDA_VISIBLE_DEVICES=0
  [ "${FLASHINFER_CHECKS:-1}" = 1 ] || exit 0
  timeout 300 python3 benchmarks/flashinfer_probe.py > "$work/flashinfer_probe.jsonl" 2> "$work/flashinfer_probe.err"
  check flashinfer ci 150
  check flashinfer dev 150 --checks diff metamorphic
) &

( export CUDA_VISIBLE_DEVICES=1
  python3 - > "$work/vllm_C_symbols.txt" 2>&1 <<'PY'
import ctypes, os, torch
lib = os.path.join(os.path.dirname(torch.__file__), "lib")
libs = [ctypes.CDLL(os.path.join(lib, n)) for n in ("libtorch_cpu.so", "libtorch_cuda.so")]
need = open(".peers/vllm_C_undefined.txt").read().split()
missing = [s for s in need if not any(hasattr(l, s) for l in libs)]
print(f"torch {torch.__version__}: {len(need) - len(missing)} of {len(need)} torch symbols that "
      f"vllm/_C_stable_libtorch.abi3.so needs are defined; missing: {' '.join(missing) or 'none'}")
PY
  check vllm ci 200
  check vllm dev 220 --checks diff metamorphic
) &

( export CUDA_VISIBLE_DEVICES=2
  timeout 90 python3 benchmarks/vllm_lut_repro.py > "$work/vllm_lut_repro.log" 2>&1
  timeout 150 python3 -m pytest tests/peers -q -p no:cacheprovider -rs > "$work/peer_tests.log" 2>&1
  echo "rc=$?" >> "$work/peer_tests.log"
  timeout 300 $cli bench triton torch vllm flashinfer --ops qkv gate_up shrink_qkv expand \
    --layouts prefill mixed decode256 --ranks 16 64 --out "$work/cli_bench" > "$work/cli_bench.log" 2>&1
  echo "rc=$?" >> "$work/cli_bench.log"
) &

( export CUDA_VISIBLE_DEVICES=3
  if [ "${GPU3:-thorough}" = tests ]; then
    timeout 300 python3 -m pytest tests/gpu -q -p no:cacheprovider > "$work/gpu_tests.log" 2>&1
    echo "rc=$?" >> "$work/gpu_tests.log"
  elif [ "${GPU3:-thorough}" = vllm-seeded ]; then
    check vllm dev-seeded 300 --checks diff metamorphic --seed 11
  else
    check flashinfer thorough 230 --checks diff --max-examples 150
    check vllm thorough 230 --checks diff --max-examples 150
  fi
) &
wait
tar -C "$work" -cf "$out/peers.tar" .
cat "$work/env.txt" "$work/vllm_C_symbols.txt" "$work/flashinfer_probe.jsonl" "$work/vllm_lut_repro.log"
tail -n 3 "$work/flashinfer_probe.err"
for f in "$work"/compat-*.log "$work/peer_tests.log" "$work"/gpu_tests.log "$work/cli_bench.log"; do
  echo "== $f"; tail -n 12 "$f"
done
