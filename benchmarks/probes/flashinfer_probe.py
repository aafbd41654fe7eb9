"""What FlashInfer's segment GEMM does with the sizes LoRA pools come in (GPU only).

``SegmentGEMMWrapper.run`` is called directly, without this project's adapter, on a few
``(d_in, d_out)`` pairs: multiples of 8 (the adapter pads to these) and not (ranks like 12 and
dims like 9).  Each case runs in its own process, so a fault in one is reported, not fatal to the
rest.  One JSON line per case: the largest error against a float32 ``torch`` product of the same
rounded inputs, relative to the largest output, or the exception, or the exit status of a
process that died.  The first case also reports how long FlashInfer's JIT build took.

Usage (on the GPU machine, FlashInfer importable):  python3 benchmarks/probes/flashinfer_probe.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

# (label, d_in, d_out, dtype)
CASES = [
    ("aligned fp16", 64, 32, "float16"),
    ("aligned bf16", 64, 32, "bfloat16"),
    ("d_in=12", 12, 32, "float16"),
    ("d_out=12", 64, 12, "float16"),
    ("d_in=9, d_out=5", 9, 5, "float16"),
    ("d_in=8, d_out=8 (rank 8)", 8, 8, "float16"),
]
SEG_LENS = [5, 0, 17, 1]  # an empty segment included
WEIGHT_INDICES = [2, 0, 1, 2]


def run_case(d_in: int, d_out: int, dtype_name: str) -> dict:
    import torch
    from flashinfer import SegmentGEMMWrapper

    dtype = getattr(torch, dtype_name)
    gen = torch.Generator(device="cuda").manual_seed(0)
    T = sum(SEG_LENS)
    x = torch.randn(T, d_in, generator=gen, device="cuda").to(dtype)
    W = torch.randn(3, d_out, d_in, generator=gen, device="cuda").to(dtype)
    indptr = torch.tensor([0, *SEG_LENS], device="cuda").cumsum(0)
    slots = torch.tensor(WEIGHT_INDICES, device="cuda")
    gemm = SegmentGEMMWrapper(torch.empty(128 << 20, dtype=torch.int8, device="cuda"))
    start = time.perf_counter()
    y = gemm.run(x, W, len(SEG_LENS), True, seg_indptr=indptr, weight_indices=slots)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    expected = torch.zeros(T, d_out, device="cuda")
    bounds = indptr.tolist()
    for i, w in enumerate(WEIGHT_INDICES):
        expected[bounds[i] : bounds[i + 1]] = x[bounds[i] : bounds[i + 1]].float() @ W[w].float().T
    err = (y.float() - expected).abs().max().item() / max(expected.abs().max().item(), 1e-30)
    return {"rel_err": err, "nan": bool(y.isnan().any()), "first_call_s": round(seconds, 2)}


def main() -> None:
    if len(sys.argv) == 4:  # child: one case
        print(json.dumps(run_case(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])))
        return
    for label, d_in, d_out, dtype in CASES:
        cmd = [sys.executable, __file__, str(d_in), str(d_out), dtype]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        row = {"case": label, "d_in": d_in, "d_out": d_out, "dtype": dtype, "rc": proc.returncode}
        if proc.returncode == 0:
            row.update(json.loads(proc.stdout.strip().splitlines()[-1]))
        else:
            row["error"] = (proc.stderr.strip().splitlines() or ["(no output)"])[-1][:400]
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
