"""Turn a device run's JSON into the target table of BENCHMARKS.md and the roofline PNG.

Usage: python benchmarks/summarize.py benchmarks/results/<run>/llama8b.json
Writes ``summary.md`` and ``roofline.png`` beside the JSON.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conformance.bench.runner import Machine, Row, roofline_plot

# issue 3's targets: % of copy bandwidth on prefill/mixed, x torch.mm on decode
BW_TARGET = {
    "shrink": 75,
    "shrink_qkv": 75,
    "shrink_down": 75,
    "expand": 60,
    "qkv": 60,
    "gate_up": 60,
}
DECODE_FACTOR = 1.5


def main(path: Path) -> None:
    doc = json.loads(path.read_text())
    machine = Machine(**doc["machine"])
    rows = [Row(**r) for r in doc["rows"]]
    by = defaultdict(dict)
    for r in rows:
        by[r.workload][r.provider] = r
    lines = [
        f"Card: {machine.gpu}, driver {machine.driver}, "
        f"torch {machine.torch}, triton {machine.triton}; "
        f"copy bandwidth measured in the same run: {machine.copy_bw_gbs:.0f} GB/s; {machine.date}.",
        "",
        "| workload | triton us | % copy BW | torch us | SGLang triton us | SGLang csgmv us "
        "| target | met? | vs best SGLang |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: |",
    ]
    met = total = faster = 0
    for workload, p in by.items():
        t, mm = p.get("triton"), p.get("torch")
        st, sc = p.get("sglang-triton"), p.get("sglang-csgmv")
        if t is None or t.us is None:
            continue
        if t.layout.startswith("decode"):
            goal = f"<= {DECODE_FACTOR}x torch ({DECODE_FACTOR * mm.us:.1f} us)"
            ok = t.us <= DECODE_FACTOR * mm.us
        else:
            goal = f">= {BW_TARGET[t.op]}% BW"
            ok = t.pct_of_copy_bw >= BW_TARGET[t.op]
        peers = [x.us for x in (st, sc) if x is not None and x.us is not None]
        best = min(peers) if peers else None
        total += 1
        met += ok
        faster += best is not None and t.us < best
        vs = f"{best / t.us:.2f}x" if best else "-"

        def us(x):
            return f"{x.us:.1f}" if x is not None and x.us is not None else "-"

        lines.append(
            f"| {workload} | {t.us:.1f} | {t.pct_of_copy_bw:.0f}% | {us(mm)} | {us(st)} "
            f"| {us(sc)} | {goal} | "
            f"{'yes' if ok else 'no'} | {vs} |"
        )
    lines += [
        "",
        f"Targets met: {met} of {total}. Faster than both SGLang kernels: {faster} of {total}.",
        "",
    ]
    out = path.with_name("summary.md")
    out.write_text("\n".join(lines))
    roofline_plot(
        path.with_name("roofline.png"), [r for r in rows if r.provider != "triton-sweep"], machine
    )
    print(out.read_text())


if __name__ == "__main__":
    main(Path(sys.argv[1]))
