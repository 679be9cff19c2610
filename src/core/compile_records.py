"""When ``torch.compile`` pays, and what compiling cost on this machine before.

``model.compile: auto`` times a stage's first eager steps, then compiles the training network when
the time the rest of the stage would save is more than the compile warm-up costs
(:func:`compile_pays`). The warm-up is what decides: on a 2-core AVX2 CPU, ResNet18 at 64 px
took 65 s to compile with torch's caches empty and 4-5 s with them filled by an earlier run
(ResNet50 at 300 px: about 100 s empty); the compiled step was 1.05-1.1x (ResNet18, 64 px) and
1.2x (ResNet50, 300 px) the eager step there. So the first compiled run of a network shape on a
machine pays the warm-up and every later one gets it almost free, from two on-disk caches:

- torch's own (Inductor's FX graph cache and AOTAutograd's cache, on by default): the compiled
  kernels, under ``TORCHINDUCTOR_CACHE_DIR``. Torch's default is ``/tmp/torchinductor_<user>``,
  which a reboot empties; :func:`compile_cache_dir` sets it to ``~/.cache/torchinductor``
  (``$XDG_CACHE_HOME/torchinductor``) unless it is set already.
- this module's record, ``compile-records.json`` in the same folder: for each network shape (the
  network's parameter shapes, which of them train, the batch's shape and type, the device, torch's
  version) the warm-up and step times its last compiled stage measured, and how many compiled.
  With a record the rule uses measured numbers (after the first compile, which was cold, a tenth
  of its warm-up: :data:`WARM_CACHE_FRACTION`); without one, :data:`UNRECORDED_WARMUP_S` and
  :data:`UNRECORDED_SPEEDUP`, so a network is compiled cold only where even a long compile and a
  small gain pay. Deleting the folder deletes both.

The module imports nothing of the project (torch only for the shape key).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"
RECORDS_FILE = "compile-records.json"
# Without a record: a cold compile is assumed to take 120 s (65 s and about 100 s were measured on
# 2 cores; a GPU machine compiles faster) and to make the step 1.1x faster (the smaller gain measured).
UNRECORDED_WARMUP_S = 120.0
UNRECORDED_SPEEDUP = 1.1
# A record written by a network's first compile measured the cold warm-up; the next one finds torch's caches
# filled. Measured on 2 cores: 65 s -> 4.3 s (ResNet18's training step), 16.8 s -> 1.2 s (its eval step): 0.07.
WARM_CACHE_FRACTION = 0.1


@dataclass(frozen=True)
class CompileRecord:
    """What one compiled stage measured: the warm-up (its first compiled step less an eager step) and the steps."""

    warmup_s: float
    eager_step_s: float
    compiled_step_s: float
    compiles: int = 1  # how many compiled stages of this shape measured it; the numbers are the latest's

    @property
    def speedup(self) -> float:
        return self.eager_step_s / self.compiled_step_s

    @property
    def expected_warmup_s(self) -> float:
        """The next compile's warm-up: the first compile's was cold, the ones after it found the caches filled."""
        return self.warmup_s * (WARM_CACHE_FRACTION if self.compiles == 1 else 1.0)


def compile_pays(remaining_steps: int, eager_step_s: float, warmup_s: float, speedup: float) -> bool:
    """True when compiling now saves more than it costs: the ``remaining_steps`` at ``eager_step_s``
    each would take ``1 - 1/speedup`` less time compiled, and the compile costs ``warmup_s`` once."""
    if speedup <= 1.0 or remaining_steps <= 0:
        return False
    return remaining_steps * eager_step_s * (1.0 - 1.0 / speedup) > warmup_s


def compile_cache_dir() -> Path:
    """The folder of torch's compile caches and of the records: ``TORCHINDUCTOR_CACHE_DIR`` when set,
    else ``~/.cache/torchinductor`` (honouring ``XDG_CACHE_HOME``), which this sets for torch too."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    folder = base / "torchinductor"
    os.environ[CACHE_ENV] = str(folder)  # torch reads it when it first compiles
    return folder


def network_shape_key(net: torch.nn.Module, images: torch.Tensor, device: torch.device, settings: str) -> str:
    """One network shape, as torch compiles it: what a compiled graph of ``net`` on batches like
    ``images`` depends on (``settings``: the precision and memory format the caller runs it in)."""
    parts = [torch.__version__, str(device), device_name(device), type(net).__name__, tuple(images.shape),
             str(images.dtype), settings]
    parts += [(name, tuple(p.shape), str(p.dtype), p.requires_grad) for name, p in net.named_parameters()]
    return hashlib.sha1(repr(parts).encode()).hexdigest()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} x{os.cpu_count()}"
    return f"{device.type} x{os.cpu_count()}"


def read_records(folder: Path) -> dict[str, Any]:
    path = folder / RECORDS_FILE
    if not path.is_file():
        return {}
    try:
        records = json.loads(path.read_text())
    except (OSError, ValueError):  # a damaged record is only a lost measurement: decide as without one
        return {}
    return records if isinstance(records, dict) else {}


def find_record(folder: Path, key: str) -> CompileRecord | None:
    entry = read_records(folder).get(key)
    try:
        times = {name: float(entry[name]) for name in ("warmup_s", "eager_step_s", "compiled_step_s")}
        return CompileRecord(**times, compiles=int(entry.get("compiles", 1)))
    except (TypeError, KeyError, ValueError, AttributeError):
        return None


def write_record(folder: Path, key: str, record: CompileRecord, description: str) -> None:
    """Writes ``key``'s latest measurement, counting the compiles before it; to a temporary file renamed over the old."""
    folder.mkdir(parents=True, exist_ok=True)
    records = read_records(folder)
    earlier = records.get(key)
    compiles = int(earlier.get("compiles", 1)) + 1 if isinstance(earlier, dict) else 1
    records[key] = {**asdict(record), "compiles": compiles, "network": description}
    temporary = folder / f".{RECORDS_FILE}.{os.getpid()}"
    temporary.write_text(json.dumps(records, indent=1, sort_keys=True))
    os.replace(temporary, folder / RECORDS_FILE)
