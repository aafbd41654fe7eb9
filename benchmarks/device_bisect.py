"""Replay a saved failing case on the GPU under several launch configurations (bisecting a
config-dependent failure).  Usage: python benchmarks/device_bisect.py CASE.json"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conformance.replay import load_failure, replay
from lora_ref import get_backend_from_name
from lora_triton import config

doc = load_failure(sys.argv[1])
backend = get_backend_from_name("triton")
for bm, bn, warps, groups in [
    (32, 64, 4, 8),
    (16, 64, 4, 8),
    (32, 64, 4, 1),
    (32, 128, 4, 8),
    (32, 64, 8, 8),
    (64, 64, 4, 8),
]:
    config.OVERRIDES["expand"] = config.ExpandConfig(bm, bn, warps, 2, groups=groups)
    for _ in range(2):
        r = replay(doc, backend, torch.device("cuda"))
        print(
            f"BM={bm} BN={bn} warps={warps} groups={groups}: "
            f"{'ok' if r.ok else r.failures[0][:90]}",
            flush=True,
        )
