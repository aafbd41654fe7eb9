"""Where a run happens: the device it picks and the facts about the machine a report records.

Shared by the pytest plugin, the benchmark harness and the command line (none imports another
for these).
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import sys
from typing import Any

import torch

from conformance.versions import package_version
from lora_ref import BaseLoRABackend
from lora_ref.runtime import interpreting


def pick_device(backend_cls: type[BaseLoRABackend], requested: str | None) -> torch.device:
    """The requested device, else CUDA when present and supported, else the CPU.

    Under pytest-xdist each worker takes its own GPU (``gw3`` takes ``cuda:3 % count``), so a
    campaign with ``-n <number of GPUs>`` runs one worker per visible GPU.
    """
    wants_cuda = requested == "cuda" or (
        requested is None
        and torch.cuda.is_available()
        and "cuda" in backend_cls.capabilities.devices
    )
    if not wants_cuda:
        return torch.device(requested or "cpu")
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker.startswith("gw") and torch.cuda.device_count() > 1:
        index = int(worker[2:]) % torch.cuda.device_count()
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cuda")


def describe_backend(cls: type[BaseLoRABackend], name: str, version: str) -> dict[str, Any]:
    """A backend as reports and ``lora-conformance list`` show it: name, ``module:Class``,
    version and declared capabilities."""
    caps = cls.capabilities
    return {
        "name": name,
        "target": f"{cls.__module__}:{cls.__qualname__}",
        "version": version,
        "capabilities": {
            "dtypes": sorted(str(d).removeprefix("torch.") for d in caps.dtypes),
            "devices": sorted(caps.devices),
            "permutation": caps.permutation,
            "split_layouts": caps.split_layouts,
            "cuda_graph": caps.cuda_graph,
            "float32_matmul": caps.float32_matmul,
            "token_map": caps.token_map,
            "batch_invariant": caps.batch_invariant,
            "n_slices": caps.n_slices,
            "embedding": caps.embedding,
            "domain": caps.shapes.describe() or "the whole space",
        },
    }


@functools.cache
def driver_version() -> str:
    """The NVIDIA driver's version, or "" without one."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=False,
            timeout=20,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.split("\n")[0].strip()


def environment(device: torch.device | None = None) -> dict[str, Any]:
    """Versions and hardware a report records: Python, platform, torch, Triton, Hypothesis,
    the device, and for CUDA the GPU, its SM count, CUDA and the driver."""
    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "triton": package_version("triton"),
        "hypothesis": package_version("hypothesis"),
        "device": str(device) if device is not None else None,
        "gpu": None,
        "gpu_sms": None,
        "cuda": torch.version.cuda,
        "driver": None,
        "triton_interpret": interpreting(),
    }
    if device is not None and device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, gpu_sms=props.multi_processor_count, driver=driver_version())
    return env
