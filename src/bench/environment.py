"""What a benchmark ran on: the machine and the library versions, recorded with its numbers."""

from __future__ import annotations

import importlib.metadata
import platform
from pathlib import Path

import torch

from src.core.hardware import available_cores, has_native_bf16

LIBRARIES = ("torch", "torchvision", "lightning", "pillow", "hydra-core", "torchmetrics")


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine() -> dict:
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {
        "cpu": cpu_name(),
        "cores": available_cores(),
        "torch_threads": torch.get_num_threads(),
        "cpu_native_bf16": has_native_bf16("cpu"),
        "gpu": gpu,
        "gpu_native_bf16": has_native_bf16("cuda") if gpu else None,
        "platform": platform.platform(),
    }


def versions() -> dict:
    found = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:  # recorded as absent, not guessed
            found[name] = None
    return found
