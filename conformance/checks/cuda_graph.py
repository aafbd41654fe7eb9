"""CUDA graphs: capture one call, refill the batch info in place, replay, diff (GPU only).

The capture's batch info is a graph buffer with room for ``capacity`` segments; refills reuse
the same ``T`` rows with more, then fewer segments (SGLang #28371 silently skipped the extra
segments of a refill); the buffers hold 12 segments, or 32 as SGLang's prefill buffers do.
For a backend that declares token maps too, half of the examples are
token maps (``case.token_map``): the same three layouts as a slot per row, -1 for about half
of the rows of rank-0 slots, refilled in place (``refill_batch_info`` takes both forms).
"""

from __future__ import annotations

import random

import torch
from hypothesis import strategies as st

from conformance.case import Case
from conformance.checks.base import Check, Example, drawn
from conformance.checks.guards import CaseResult, backend_call, record_problem
from conformance.inputs import Inputs, build_inputs, call
from conformance.names import OPS
from conformance.oracle import compare, expect_for
from lora_ref import (
    BaseLoRABackend,
    Capabilities,
    TokenMapBatchInfo,
    make_batch_info,
    refill_batch_info,
)

# segment slots of the graph's batch buffers: a decode-sized buffer, and the 32 prefill segment
# slots SGLang pins
CAPACITIES = (12, 32)


def graph_layouts(case: Case, capacity: int) -> list[Case]:
    """The capture layout and two refills over the same ``T`` rows: more, then fewer segments."""
    T = case.T
    rng = random.Random(case.seed)
    out = []
    for bs in (max(1, capacity // 3), capacity, 1):
        bs = min(bs, max(T, 1))
        cuts = sorted(rng.sample(range(1, T), bs - 1)) if T > 1 and bs > 1 else []
        lens = [b - a for a, b in zip([0, *cuts], [*cuts, T], strict=True)] if T else [0]
        slots = [rng.randrange(case.L) for _ in lens]
        out.append(
            case.replace(
                seg_lens=tuple(lens),
                weight_indices=tuple(slots),
                permute=False,
                layouts={},
                # refills draw slots anew: every slot must hold a real adapter
                poison_unused=False,
            )
        )
    return out


def check_cuda_graph(
    backend_cls: type[BaseLoRABackend], case: Case, capacity: int = 12
) -> CaseResult:
    """Capture ``case.op`` once, refill the batch info in place with other layouts, replay, diff."""
    result = CaseResult(case, check="cuda_graph", params={"capacity": capacity})
    device = torch.device("cuda")
    case = case.replace(poison_unused=False)
    layouts = graph_layouts(case, capacity)
    first = build_inputs(layouts[0], device)
    c0 = layouts[0]
    if case.token_map:
        tm = first.batch_info
        graph_info = TokenMapBatchInfo(tm.token_slots.clone(), tm.lora_ranks.clone(),
                                       tm.scalings.clone(), use_cuda_graph=True)  # fmt: skip
    else:
        graph_info = make_batch_info(
            c0.seg_lens, c0.weight_indices, c0.lora_ranks, c0.scalings, device=device,
            capacity=capacity,
        )  # fmt: skip
    static_base = first.base.clone() if first.base is not None else None
    static = Inputs(graph_info, first.x.clone(), first.args, static_base)

    def capture():
        backend = backend_cls()
        backend.set_batch_info(graph_info)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):  # warm-up: compile kernels, fill caches
                warm = static_base.clone() if static_base is not None else None
                call(backend, c0, static, warm)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = call(backend, c0, static, static_base)
        return graph, out

    made, problem = backend_call(capture)
    if problem is not None:
        record_problem(result, problem, "capture")
        return result
    graph, out = made
    for layout in layouts:
        fresh = build_inputs(layout, device)
        refill_batch_info(graph_info, fresh.batch_info)  # type: ignore[arg-type]
        static.x.copy_(fresh.x)
        if static_base is not None and fresh.base is not None:
            static_base.copy_(fresh.base)
        _, problem = backend_call(graph.replay)
        if problem is not None:
            record_problem(result, problem, "replay")
            return result
        torch.cuda.synchronize()
        exp = expect_for(
            layout,
            Inputs(fresh.batch_info, fresh.x, first.args, fresh.base),
            backend_cls.capabilities,
        )
        verdict = compare(layout, out.clone(), exp)
        result.note_ratio(verdict.worst_ratio)
        if not verdict.ok:
            result.fail(
                f"replay after refill to seg_lens={list(layout.seg_lens)} (captured with "
                f"{list(c0.seg_lens)}): {verdict.message}"
            )
    return result


def _drawn(ctx) -> st.SearchStrategy[Case]:
    """Drawn cases with rows; half of them token maps where the backend declares the form."""
    cases = drawn(ctx, permute=False).filter(lambda c: c.T > 0)
    if not ctx.caps.token_map:
        return cases
    return st.tuples(cases, st.booleans()).map(lambda ct: ct[0].replace(token_map=ct[1]))


def _needs(caps: Capabilities, device: str) -> str | None:
    if not caps.cuda_graph:
        return "CUDA graphs not declared by backend (cuda_graph=False)"
    return None if device == "cuda" else "CUDA graphs need a CUDA device"


CHECK = Check(
    name="cuda_graph",
    doc="capture, refill the batch info in place with more and fewer segments, replay (GPU)",
    rules=("8-cuda-graphs", "4-results"),
    ops=OPS,
    dtypes="primary",
    scale=0.25,
    shrink=True,
    needs=_needs,
    strategy=lambda ctx: st.tuples(_drawn(ctx), st.sampled_from(CAPACITIES)).map(
        lambda cc: Example(cc[0], {"capacity": cc[1]})
    ),
    explicit=lambda ctx: [],
    run=lambda b, e, d: check_cuda_graph(b, e.case, e.params.get("capacity", 12)),
)
