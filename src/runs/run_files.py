"""Files a run leaves in its directory, written atomically (:mod:`src.core.atomic_write`)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from torch import nn

from src.core.atomic_write import atomic_open, atomic_write_json


def _write_atomically(path: Path, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)


def check_writable(output_dir: Path) -> None:
    """Create ``output_dir`` and prove it takes a file, or raise ``OSError`` (at start-up, before the scan)."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / ".write_probe"
        probe.write_bytes(b"0" * 4096)
        probe.unlink()
    except OSError as error:
        raise OSError(
            f"paths.output_dir={str(output_dir)!r} is not writable ({type(error).__name__}: {error}); "
            "choose a folder you can write to, e.g. paths.output_dir=/tmp/run, or free disk space"
        ) from error


# best.ckpt, the best.ckpt it replaces (the new one is written before the old one is removed) and last.ckpt.
CHECKPOINT_FILES_AT_ONCE = 3


def checkpoint_bytes(net: nn.Module) -> int:
    """What one checkpoint of ``net`` takes on disk, at most: its fp32 weights, AdamW's two moments per
    weight (other optimisers keep fewer) and its buffers."""
    weights = sum(p.numel() * p.element_size() for p in net.parameters())
    return 3 * weights + sum(b.numel() * b.element_size() for b in net.buffers())


def check_room_for_checkpoints(output_dir: Path, net: nn.Module) -> None:
    """Refuse a run whose checkpoints would not fit in ``output_dir``'s free space, at start-up
    instead of after the first epoch."""
    needed = CHECKPOINT_FILES_AT_ONCE * checkpoint_bytes(net)
    free = shutil.disk_usage(output_dir).free
    if free < needed:
        raise OSError(
            f"paths.output_dir={str(output_dir)!r} has {free / 2**20:.0f} MiB free; this model's checkpoints need "
            f"{needed / 2**20:.0f} MiB ({CHECKPOINT_FILES_AT_ONCE} files of up to {checkpoint_bytes(net) / 2**20:.0f} "
            "MiB at once); free disk space or write the run elsewhere (paths.output_dir=...)"
        )


@rank_zero_only
def write_json(path: Path, data: dict[str, Any]) -> None:
    """:func:`~src.core.atomic_write.atomic_write_json` on rank 0 only (every DDP process runs the same code)."""
    atomic_write_json(path, data)


@rank_zero_only
def write_resolved_config(path: Path, cfg: DictConfig) -> None:
    """The config with every interpolation resolved: what this run really used."""
    _write_atomically(path, OmegaConf.to_yaml(cfg, resolve=True))
