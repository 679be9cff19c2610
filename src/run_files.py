"""Files a run leaves in its directory, written atomically (temporary file, then rename)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@rank_zero_only
def write_json(path: Path, data: dict[str, Any]) -> None:
    _write_atomically(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


@rank_zero_only
def write_resolved_config(path: Path, cfg: DictConfig) -> None:
    """The config with every interpolation resolved: what this run really used."""
    _write_atomically(path, OmegaConf.to_yaml(cfg, resolve=True))
