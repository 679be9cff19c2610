"""Files a run leaves in its directory, written atomically (:mod:`src.runs.atomic_write`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from src.runs.atomic_write import atomic_open


def _write_atomically(path: Path, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)


# A checkpoint of a ResNet50 with its AdamW state is ~300 MB: less free space than this fails the
# first checkpoint, so it is refused at start-up instead of after the first epoch.
MIN_FREE_BYTES = 512 * 2**20


def check_writable(output_dir: Path, min_free_bytes: int = MIN_FREE_BYTES) -> None:
    """Create ``output_dir`` and prove it takes a file and has room for checkpoints, or raise ``OSError``."""
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
    free = shutil.disk_usage(output_dir).free
    if free < min_free_bytes:
        raise OSError(
            f"paths.output_dir={str(output_dir)!r} has {free / 2**20:.0f} MiB free; checkpoints need at least "
            f"{min_free_bytes / 2**20:.0f} MiB; free disk space or write the run elsewhere (paths.output_dir=...)"
        )


@rank_zero_only
def write_json(path: Path, data: dict[str, Any]) -> None:
    _write_atomically(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


@rank_zero_only
def write_resolved_config(path: Path, cfg: DictConfig) -> None:
    """The config with every interpolation resolved: what this run really used."""
    _write_atomically(path, OmegaConf.to_yaml(cfg, resolve=True))
