#!/usr/bin/env bash
# Dry-run a device script on a machine without a GPU: python3, nvidia-smi (two GPUs, or
# DRY_GPUS), compute-sanitizer, ncu and redis-server are stubs that log their command line, with the GPU it
# would run on, and exit 0.  Prints that log; the script's own output goes to OUT/script.log.
# Usage: bash benchmarks/dry_run.sh benchmarks/device_X.sh OUT [VAR=VALUE ...]
# (run from the repository root; the work folders the script names under /tmp are replaced)
set -u
script=${1:?device script}
out=${2:?output folder}
shift 2
# the scripts' work folders are fixed paths under /tmp: one dry run at a time (parallel tests)
if command -v flock > /dev/null; then exec 9> /tmp/lora_conformance_dry_run.lock; flock 9; fi
stubs=$(mktemp -d)
mkdir -p "$out"
export DRY_LOG=$out/commands.log
: > "$DRY_LOG"
for cmd in python3 compute-sanitizer ncu redis-server; do
  cat > "$stubs/$cmd" <<STUB
#!/usr/bin/env bash
echo "GPU \${CUDA_VISIBLE_DEVICES:-none}: $cmd \$*" >> "\$DRY_LOG"
STUB
done
cat > "$stubs/nvidia-smi" <<'STUB'
#!/usr/bin/env bash
if [ "${1:-}" = -L ]; then
  for ((i = 0; i < ${DRY_GPUS:-2}; i++)); do echo "GPU $i: dry run"; done
else
  echo "index, name"
fi
STUB
chmod +x "$stubs"/*
env "$@" PATH="$stubs:$PATH" bash "$script" "$out" > "$out/script.log" 2>&1
rc=$?
rm -rf "$stubs"
cat "$DRY_LOG"
echo "rc=$rc"
exit $rc
