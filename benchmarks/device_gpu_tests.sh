#!/usr/bin/env bash
# tests/gpu over two GPUs under the `gpu` Hypothesis profile (no shrinking: a failure is reported
# at once, whole; tests/gpu/conftest.py): GPU 0 runs test_gpu_grid, the last GPU the rest.
# Each log names every test as it starts (-v) and ends with the exit status; the limit is what
# is left before DEADLINE.  Everything lands in OUT/gpu_tests.tar.
# Usage (on the device): bash benchmarks/device_gpu_tests.sh OUT
set -u
out=${1:?output folder}
work=/tmp/gpu_tests
source benchmarks/device_common.sh
device_begin "$work"
F=tests/gpu/test_triton_gpu.py
run_tests() {  # LOG ARGS...: pytest on ARGS, cut at what is left before DEADLINE
  local log=$1; shift
  timeout -s INT -k 20 "$(left 600)" python3 -m pytest -v --tb=short -rfE -p no:cacheprovider \
    --hypothesis-profile gpu --durations=15 -o faulthandler_timeout=150 "$@" > "$log" 2>&1
  echo "rc=$?" >> "$log"
}
grid() { run_tests "$work/grid.log" "$F::test_gpu_grid"; }
rest() { run_tests "$work/rest.log" "$F" --deselect "$F::test_gpu_grid"; }
on_two_gpus grid rest
tar -C "$work" -cf "$out/gpu_tests.tar" .
for f in "$work"/*.log; do echo "== $f"; grep -E "PASSED|FAILED|ERROR|passed|failed|rc=" "$f" | cut -c1-160; done
