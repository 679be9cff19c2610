"""Files a run leaves in its directory, written atomically (:mod:`src.core.atomic_write`)."""

from __future__ import annotations

import shutil
from pathlib import Path
from collections.abc import Sequence
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


# The files on disk at the worst moment: best.ckpt, last.ckpt and the temporary one of them is being
# written to (src/runs/checkpoint_io.py writes beside the old file and renames it over it).
CHECKPOINT_FILES_AT_ONCE = 3


def checkpoint_bytes(net: nn.Module) -> int:
    """What one checkpoint of ``net`` takes on disk, at most: its fp32 weights, AdamW's two moments per
    weight (other optimisers keep fewer) and its buffers."""
    weights = sum(p.numel() * p.element_size() for p in net.parameters())
    return 3 * weights + sum(b.numel() * b.element_size() for b in net.buffers())


def checkpoint_files(callbacks: DictConfig | None) -> list[Path]:
    """The files the ``ModelCheckpoint`` callbacks of ``callbacks`` (``cfg.callbacks``) keep, e.g.
    ``RUN/checkpoints/best.ckpt`` and ``last.ckpt``; a file name with a metric in it (``{epoch}``)
    names a new file every time and is left out (it replaces nothing)."""
    files = []
    for callback in (callbacks or {}).values():
        if not str(callback.get("_target_", "")).endswith("ModelCheckpoint"):
            continue
        dirpath, filename = callback.get("dirpath"), callback.get("filename")
        if dirpath is not None and filename is not None and "{" not in str(filename):
            files.append(Path(dirpath) / f"{filename}.ckpt")
    return files


def room_needed_for_checkpoints(net: nn.Module, replaced: Sequence[Path] = ()) -> int:
    """The free bytes a run's checkpoints need, at their peak.

    The peak is :data:`CHECKPOINT_FILES_AT_ONCE` files: the kept ones (best and last) and the
    temporary file the next one is written to beside the one it replaces (the old file goes only
    once the new one is complete). Each file is at most :func:`checkpoint_bytes`. A kept file that
    already exists (a resumed run, ``ckpt_path=last``) already holds its room: it needs only the
    difference up to that size, and only the temporary is new room. So a new run needs three
    checkpoints of free space; a run resumed in place with best.ckpt and last.ckpt on disk needs
    one (plus whatever they are smaller than the bound).
    """
    size = checkpoint_bytes(net)
    held = sum(min(path.stat().st_size, size) for path in replaced if path.is_file())
    return CHECKPOINT_FILES_AT_ONCE * size - held


def check_room_for_checkpoints(output_dir: Path, net: nn.Module, replaced: Sequence[Path] = ()) -> None:
    """Refuse a run whose checkpoints would not fit in ``output_dir``'s free space, at start-up
    instead of after the first epoch; ``replaced``: the checkpoint files the run overwrites
    (:func:`checkpoint_files`), which count as room already held when they exist
    (:func:`room_needed_for_checkpoints`)."""
    needed = room_needed_for_checkpoints(net, replaced)
    free = shutil.disk_usage(output_dir).free
    if free < needed:
        existing = [path.name for path in replaced if path.is_file()]
        held = f", counting the {' and '.join(existing)} it replaces" if existing else ""
        raise OSError(
            f"paths.output_dir={str(output_dir)!r} has {free / 2**20:.0f} MiB free; this model's checkpoints need "
            f"{needed / 2**20:.0f} MiB ({CHECKPOINT_FILES_AT_ONCE} files of up to {checkpoint_bytes(net) / 2**20:.0f} "
            f"MiB at once{held}); free at least {(needed - free) / 2**20:.0f} MiB on that disk and run the same "
            "command again, or start the run from the start on another disk (hydra.run.dir=OTHER, without ckpt_path)"
        )


@rank_zero_only
def write_json(path: Path, data: dict[str, Any]) -> None:
    """:func:`~src.core.atomic_write.atomic_write_json` on rank 0 only (every DDP process runs the same code)."""
    atomic_write_json(path, data)


@rank_zero_only
def write_resolved_config(path: Path, cfg: DictConfig) -> None:
    """The config with every interpolation resolved: what this run really used."""
    _write_atomically(path, OmegaConf.to_yaml(cfg, resolve=True))
