"""The fastest correct settings for the machine a run is on: precision, memory format, workers.

``auto`` in the config means "what measured fastest on this kind of hardware" (``make bench``,
docs/performance.md):

- ``trainer.precision: auto`` is ``bf16-mixed`` where the chip multiplies bf16 natively (a CUDA GPU
  of compute capability 8.0 or newer; a CPU with AMX or AVX512-BF16) and ``32-true`` elsewhere.
  On a CPU without them bf16 is emulated: the ResNet18 training step (64 px) ran 10-25x slower in
  bf16 than in fp32 on an AVX2-only AMD EPYC; on an AMD EPYC with AVX512-BF16, bf16 with
  channels_last was about 1.6x fp32 (250 vs 154 img/s).
- ``model.channels_last: auto`` follows the precision: NHWC feeds the bf16/fp16 kernels of tensor
  cores, AMX and AVX512-BF16, but gave fp32 no gain on the AVX2 CPU (1.03x, within noise).
- ``data.num_workers: auto`` is one loader process per core, at most 8: on 2 cores, 2 workers
  trained the demo 8% faster than 1 (the workers sleep once their prefetched batches wait).

``IFC_NATIVE_BF16=0`` (or ``1``) in the environment makes the bf16 probe answer no (or yes) on any
device, so the test suite can run as it would on the other kind of CPU (``.ci/run`` does both).

A trained network is evaluated at the precision it was trained with (:func:`inference_precision`),
so ``src.evaluate`` reproduces the validation metrics training logged.
"""

from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger(__name__)

AUTO = "auto"
NATIVE_BF16_ENV = "IFC_NATIVE_BF16"
FULL_PRECISION = "32-true"
BF16_PRECISIONS = ("bf16-mixed", "bf16-true")
FP16_PRECISIONS = ("16-mixed", "16-true")
# Lightning's short and legacy spellings, as its Trainer reads them.
PRECISION_ALIASES = {"32": "32-true", "64": "64-true", "16": "16-mixed", "bf16": "bf16-mixed"}
REDUCED_PRECISIONS = ("bf16-mixed", "bf16-true", "bf16", "16-mixed", "16-true", "16")
MAX_AUTO_WORKERS = 8


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The one choice of device: ``auto`` (or None) and ``gpu`` as Lightning's Trainer picks them (a CUDA GPU,
    then Apple's MPS, then the CPU); any other name (``cpu``, ``cuda:1``, ``mps``) as it is. Training, the lr
    finder, ``Predictor``, evaluate and serve all ask this."""
    name = "auto" if device is None else str(device)
    if name in ("auto", "gpu"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)


def device_type(accelerator: str) -> str:
    """``cuda``, ``mps`` or ``cpu``: where the trainer's accelerator setting runs (:func:`resolve_device`); a CUDA
    setting without a CUDA GPU counts as the CPU here (the Trainer then refuses it with its own message)."""
    kind = resolve_device(accelerator).type
    return "cpu" if kind == "cuda" and not torch.cuda.is_available() else kind


def synchronize(device: torch.device) -> None:
    """Wait for a CUDA device's queued work (a timer reads the CPU clock); nothing elsewhere."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def native_bf16_override() -> bool | None:
    """The ``IFC_NATIVE_BF16`` environment variable: True (``1``), False (``0``), or None when unset."""
    value = os.environ.get(NATIVE_BF16_ENV, "").strip()
    if value == "":
        return None
    if value not in ("0", "1"):
        raise ValueError(f"{NATIVE_BF16_ENV}={value!r}; expected 1 (act as native bf16 hardware), "
                         f"0 (act as hardware without it) or unset (probe the hardware)")
    return value == "1"


def has_native_bf16(device: str) -> bool:
    """Whether ``device`` ('cuda', 'cpu' or 'mps') computes bf16 in hardware rather than emulating it.

    ``IFC_NATIVE_BF16=0|1`` overrides the probe (to test as on the other kind of machine).
    """
    forced = native_bf16_override()
    if forced is not None:
        return forced
    if device == "mps":  # Lightning's bf16 autocast targets CUDA and CPUs
        return False
    if device == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    # torch.cpu's public feature probe (oneDNN uses AMX and AVX512-BF16 for bf16 matmuls and convolutions)
    capabilities = torch.cpu.get_capabilities()
    return bool(capabilities.get("amx_tile") or capabilities.get("avx512_bf16"))


def as_lightning_runs_it(precision: str | int, on_cpu: bool) -> str | int:
    """``16-mixed`` on a CPU is ``bf16-mixed``, as Lightning's accelerator connector swaps it (CPU
    autocast has no fp16, and Lightning only warns); any other value as given."""
    if on_cpu and normalize_precision(precision) == "16-mixed":
        log.info("precision=%s on the CPU: bf16-mixed (CPUs have no fp16 autocast)", precision)
        return "bf16-mixed"
    return precision


def resolve_precision(precision: str | int, accelerator: str) -> str | int:
    """``auto`` -> ``bf16-mixed`` on native-bf16 hardware, else ``32-true``; ``16-mixed`` on a CPU ->
    ``bf16-mixed`` (what Lightning runs there, so config.yaml records it); other values as given."""
    if precision != AUTO:
        return as_lightning_runs_it(precision, on_cpu=_runs_on_cpu(accelerator))
    device = device_type(accelerator)
    chosen = "bf16-mixed" if has_native_bf16(device) else "32-true"
    log.info("trainer.precision=auto: %s (%s %s native bf16)", chosen, device,
             "has" if chosen == "bf16-mixed" else "has no")
    return chosen


def resolve_sync_batchnorm(sync_batchnorm: bool | str, accelerator: str) -> bool:
    """``auto`` -> SyncBatchNorm where it runs (CUDA GPUs), else plain BatchNorm; true or false as given.

    PyTorch's SyncBatchNorm only works with GPU modules (on a CPU the first forward fails with
    "SyncBatchNorm layers only work with GPU modules"); across gloo processes on CPUs each process
    normalises with its own batch statistics, as a single process does.
    """
    if sync_batchnorm == AUTO:
        chosen = device_type(accelerator) == "cuda"
        log.info("trainer.sync_batchnorm=auto: %s (%s)", chosen,
                 "BatchNorm statistics over every GPU's batch" if chosen else "SyncBatchNorm needs CUDA GPUs")
        return chosen
    if not isinstance(sync_batchnorm, bool):
        raise ValueError(f"trainer.sync_batchnorm={sync_batchnorm!r}; expected auto, true or false")
    if sync_batchnorm and device_type(accelerator) != "cuda":
        raise ValueError(f"trainer.sync_batchnorm=true with trainer.accelerator={accelerator}, which runs on the "
                         "CPU: PyTorch's SyncBatchNorm only works with CUDA GPUs. Set trainer.sync_batchnorm=auto "
                         "(on where it works) or false")
    return sync_batchnorm


def _runs_on_cpu(accelerator: str) -> bool:
    """Whether Lightning's ``accelerator`` setting picks the CPU (``auto`` picks a CUDA GPU or MPS first)."""
    return device_type(accelerator) == "cpu"


def normalize_precision(precision: str | int) -> str:
    """Lightning's long name of a precision setting (``32`` -> ``32-true``, ``bf16`` -> ``bf16-mixed``)."""
    return PRECISION_ALIASES.get(str(precision), str(precision))


def inference_precision(recorded: str | int | None, override: str | int | None, device: torch.device) -> str:
    """The precision a trained network runs at on ``device``: ``override`` when given, else ``recorded``
    (the one it trained with, so evaluation reproduces the logged validation metrics).

    A recorded reduced precision the device cannot run natively (bf16 on a CPU without AVX512-BF16
    or AMX; fp16 on a CPU) falls back to ``32-true`` with a warning naming both; an explicit
    ``override`` runs as asked.
    """
    if override is not None and str(override) != AUTO:
        return normalize_precision(override)
    if recorded is None or str(recorded) == AUTO:  # a checkpoint from before the precision was recorded
        return FULL_PRECISION
    precision = normalize_precision(recorded)
    unavailable = (
        (precision in BF16_PRECISIONS and not has_native_bf16(device.type))
        or (precision in FP16_PRECISIONS and device.type == "cpu")
    )
    if unavailable:
        log.warning("the run trained at %s, which this %s cannot run natively: running at %s instead "
                    "(precision=%s forces the training precision)", precision, device.type, FULL_PRECISION, precision)
        return FULL_PRECISION
    return precision


def resolve_channels_last(channels_last: bool | str, precision: str | int) -> bool:
    """``auto`` -> channels_last with reduced precision (where NHWC kernels win), else as given."""
    if channels_last == AUTO:
        return str(precision) in REDUCED_PRECISIONS
    if not isinstance(channels_last, bool):
        raise ValueError(f"model.channels_last={channels_last!r}; expected true, false or auto")
    return channels_last


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, which containers and SLURM set)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def resolve_num_workers(num_workers: int | str) -> int:
    """``auto`` -> one loader process per core, at most 8; a number as given."""
    if num_workers == AUTO:
        return max(1, min(MAX_AUTO_WORKERS, available_cores()))
    if not isinstance(num_workers, int) or isinstance(num_workers, bool) or num_workers < 0:
        raise ValueError(f"data.num_workers={num_workers!r}; expected a whole number >= 0 or auto")
    return num_workers
