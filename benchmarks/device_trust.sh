#!/usr/bin/env bash
# One device call for the trust evidence (2 x H200; one GPU works too, run one after the other):
#   GPU 0: tests/gpu; the hostile-metadata script under compute-sanitizer memcheck;
#          `lora-conformance check triton --profile ci` on CUDA (CUDA-graph groups included);
#   GPU 1: the thorough campaign, diff and cuda_graph checks, stopped by SIGINT after
#          CAMPAIGN_S seconds (the CLI keeps its partial report; exit 4).
# Everything lands in OUT/trust.tar.  Usage (on the device): bash benchmarks/device_trust.sh OUT
set -u
out=${1:?output folder}
work=/tmp/trust
source benchmarks/device_common.sh
device_begin "$work"
tests_memcheck_ci() {
  gpu_tests "$work" 240
  memcheck_hostile "$work" 240
  check_ci_cuda "$work" 200
}
campaign() { thorough_cuda "$work" "${CAMPAIGN_S:-420}"; }
on_two_gpus tests_memcheck_ci campaign
tar -C "$work" -cf "$out/trust.tar" .
cat "$work/env.txt"
for f in gpu_tests memcheck ci thorough; do echo "== $f"; tail -n 6 "$work/$f.log"; done
python3 - "$work" <<'PY'
import json, sys
for name in ("ci", "thorough"):
    try:
        d = json.load(open(f"{sys.argv[1]}/{name}.json"))
    except OSError:
        print(name, "no report"); continue
    print(name, d["status"], d["verdict"], d["totals"], "worst", d["worst_ratio"])
    for g in d["groups"]:
        if g["outcome"] not in ("pass", "skip"):
            print("  ", g["id"], g["outcome"], (g.get("failure") or {}).get("messages", [""])[:1])
PY
