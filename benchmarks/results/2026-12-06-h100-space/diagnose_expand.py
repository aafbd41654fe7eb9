"""Narrow down the qkv expand failure of this folder on a GPU: the slots and slices that go wrong, the shrink and the expand each alone, and the same case under other launch configurations, PDL off, other layouts and ranks.  Usage (repository root, on the device): python3 benchmarks/results/2026-12-06-h100-space/diagnose_expand.py FILE.json cuda"""
import dataclasses, json, os, sys, time
import torch
from conformance.failures import load_failure
from conformance.inputs import build_inputs, call, physical_row_slots
from conformance.oracle import expect_for, compare
from lora_triton.backend import TritonLoRABackend
from lora_triton import config as C
from lora_triton.kernels.expand import expand, ExpandPlan
from pathlib import Path
# the kernel as it was when the case failed (EXPAND_VARIANT picks another, see variants.py)
sys.path.insert(0, str(Path(__file__).parents[1] / "2026-12-07-h100-expand"))
from variants import use
expand = use(os.environ.get("EXPAND_VARIANT", "before")).expand

path = sys.argv[1]
dev = torch.device(sys.argv[2] if len(sys.argv) > 2 else "cuda")
doc = load_failure(path)
case0 = doc["case"]
print("case", case0.describe() if hasattr(case0, "describe") else case0)

def slot_report(case, inputs, out, exp):
    bad = (out.double() - exp.ref).abs() > exp.tol
    slots = torch.tensor(physical_row_slots(case, None), device=out.device)
    res = {}
    for w in sorted(set(slots.tolist())):
        rows = slots == w
        b = bad[rows]
        if b.any():
            per = [int(b[:, lo:hi].sum()) for lo, hi in case.slices]
            res[w] = dict(rank=case.lora_ranks[w], rows=int(rows.sum()), bad=per)
    return res

def one(case, label, cfg=None, env=None):
    env = env or {}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        inputs = build_inputs(case, dev)
        exp = expect_for(case, inputs, TritonLoRABackend.capabilities)
        b = TritonLoRABackend(); b.set_batch_info(inputs.batch_info)
        base = inputs.base.clone() if inputs.base is not None else None
        if cfg is not None:
            with C.override(expand=cfg):
                out = call(b, case, inputs, base)
        else:
            out = call(b, case, inputs, base)
        if dev.type == "cuda": torch.cuda.synchronize()
        v = compare(case, out, exp)
        print(f"[{label}] ok={v.ok} worst={v.worst_ratio:.3g} {v.message[:150]}")
        if not v.ok:
            print("   bad by slot:", slot_report(case, inputs, out, exp))
        return v.ok
    except Exception as e:
        print(f"[{label}] raised {type(e).__name__}: {str(e)[:300]}")
    finally:
        for k, v in saved.items():
            if v is None: os.environ.pop(k, None)
            else: os.environ[k] = v

one(case0, 'first look')
# shrink alone against float64, per slot: max |err| / max |value|
inputs = build_inputs(case0, dev)
b = TritonLoRABackend(); b.set_batch_info(inputs.batch_info)
a = inputs.args[0]
inter = b.run_lora_a_sgemm(inputs.x, a, 3).double()
x64 = inputs.x.double(); a64 = a.double()
slots = physical_row_slots(case0, None)
worst = {}
for t, w in enumerate(slots):
    r = case0.lora_ranks[w]
    if r == 0: continue
    for j in range(3):
        want = x64[t] @ a64[w, j * r: j * r + r].T
        got = inter[t, j * r: j * r + r]
        e = float((got - want).abs().max() / want.abs().max().clamp_min(1e-30))
        worst[(w, j)] = max(worst.get((w, j), 0.0), e)
print("shrink rel err by (slot, slice), worst 8:", sorted(worst.items(), key=lambda kv: -kv[1])[:8])
# expand alone on the exact intermediate (rounded to fp16): max rel err per slot
inter16 = torch.zeros_like(inter)
for t, w in enumerate(slots):
    r = case0.lora_ranks[w]
    for j in range(3):
        inter16[t, j * r: j * r + r] = x64[t] @ a64[w, j * r: j * r + r].T
inter16 = inter16.to(inputs.x.dtype)
lora_b = inputs.args[1]
base = inputs.base.clone()
want = inputs.base.double().clone()
B64 = lora_b.double()
for t, w in enumerate(slots):
    r = case0.lora_ranks[w]
    s = case0.scalings[w]
    for j, (lo, hi) in enumerate(case0.slices):
        want[t, lo:hi] += s * (B64[w, lo:hi, :r] @ inter16[t, j * r: j * r + r].double())
b.run_qkv_lora  # the plan below mirrors backend._fused
layout = b._positions(case0.T)
plan = b._plan(case0.T, case0.R, 3, max(case0.N, case0.n_kv), inputs.args[2], True,
               __import__('lora_triton.backend', fromlist=['x'])._qkv_column_align(case0.out_dim, max(case0.N, case0.n_kv)), layout)
print("expand plan config:", plan.config, "P", layout.pos_slot.numel())
expand(inter16, lora_b, base, plan)
err = (base.double() - want).abs()
for w in sorted(set(slots)):
    rows = torch.tensor([s == w for s in slots], device=dev)
    for j, (lo, hi) in enumerate(case0.slices):
        e = float(err[rows, lo:hi].max()); m = float(want[rows, lo:hi].abs().max())
        if e > 2e-3 * m: print(f"  expand slot {w} r={case0.lora_ranks[w]} slice {j}: max err {e:.4g} of max {m:.4g}")
print("expand alone done")

T = case0.T
P_guess = None
rule = C.expand_config(T, case0.R, max(case0.N, case0.n_kv) if case0.op == "qkv" else case0.N)
print("rule config (P=T):", rule)
one(case0, "as saved")
one(case0.replace(layouts={**case0.layouts, "b": "contiguous"}), "b contiguous")
one(case0, "PDL off", env={"LORA_TRITON_PDL": "0"})
one(case0, "as saved, again")
one(case0, "pinned rule", env={"LORA_TRITON_PIN": "1"})
for name, cfg in [
    ("stages1", dataclasses.replace(rule, num_stages=1)),
    ("stages2", dataclasses.replace(rule, num_stages=2)),
    ("npp1", dataclasses.replace(rule, n_per_prog=1)),
    ("npp2", dataclasses.replace(rule, n_per_prog=2)),
    ("bn128", dataclasses.replace(rule, block_n=128)),
    ("bn32", dataclasses.replace(rule, block_n=32)),
    ("buckets1", dataclasses.replace(rule, rank_buckets=1)),
    ("buckets2", dataclasses.replace(rule, rank_buckets=2)),
    ("prefetch0", dataclasses.replace(rule, prefetch=0)),
    ("warps8", dataclasses.replace(rule, num_warps=8)),
    ("bm16", dataclasses.replace(rule, block_m=16)),
]:
    one(case0, name, cfg)
lay = dict(case0.layouts)
for arg, kinds in [("b", ["contiguous"]), ("x", ["contiguous"]), ("a", ["contiguous"])]:
    for k in kinds:
        l2 = dict(lay); l2[arg] = k
        one(case0.replace(layouts=l2), f"{arg}={k}")
# rank-58 only / single adapter variants
one(case0.replace(lora_ranks=tuple(min(r, 64) for r in case0.lora_ranks)), "ranks<=64, R=65")
one(case0.replace(lora_ranks=tuple(r if r % 8 else max(r - 1, 1) for r in case0.lora_ranks)), "no multiple-of-8 ranks")
one(case0.replace(lora_ranks=tuple((r + 7) // 8 * 8 if r else 0 for r in case0.lora_ranks), R=72), "ranks rounded up to 8, R=72")
one(case0.replace(scalings=tuple(1.0 for _ in case0.scalings)), "scalings 1")
one(case0.replace(has_base=False), "no base")

