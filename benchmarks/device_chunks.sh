#!/usr/bin/env bash
# The chunked fused ops on the GPU (2 x H200, or 1 with the halves in turn):
#   GPU 0: config_sweep.py chunks_a (1, 2, 3 and 4 chunks, same run);
#   GPU 1: tests/gpu's two-stream test (eager and CUDA graph, against the unchunked result),
#          then config_sweep.py chunks_b.
# Everything lands in OUT/chunks.tar.  Usage (on the device): bash benchmarks/device_chunks.sh OUT
set -u
out=${1:?output folder}
work=/tmp/chunks
mkdir -p "$out" "$work"
source benchmarks/device_common.sh
device_setup "$work"
n=$(nvidia-smi -L | wc -l)
sweep() {
  timeout -s INT -k 20 "$(left "$2")" python3 benchmarks/config_sweep.py "$work/$1" "chunks_$1" \
    > "$work/sweep_$1.log" 2>&1
  echo "rc=$?" >> "$work/sweep_$1.log"
}
( export CUDA_VISIBLE_DEVICES=0; sweep a 200 ) &
first=$!
[ "$n" -gt 1 ] || wait $first
( export CUDA_VISIBLE_DEVICES=$((n - 1))
  timeout -s INT -k 20 "$(left 90)" python3 -m pytest tests/gpu -q -rfE --tb=short \
    -p no:cacheprovider -k chunks > "$work/gpu_chunks.log" 2>&1
  echo "rc=$?" >> "$work/gpu_chunks.log"
  sweep b 200 )
wait
tar -C "$work" -cf "$out/chunks.tar" .
for f in "$work"/gpu_chunks.log "$work"/sweep_*.log; do echo "== $f"; cut -c1-110 "$f" | tail -n 40; done
