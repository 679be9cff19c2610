"""Checkpoints written atomically in their own folder: a crash mid-write never leaves a truncated file.

Lightning 2.6 saves through fsspec's transaction (``lightning.fabric.utilities.cloud_io._atomic_save``),
which for local paths writes to ``tempfile.mkstemp()`` (the system temp folder) and then
``shutil.move``s it. When that folder is on another file system than the run (a tmpfs ``/tmp``, a
network or mounted data disk), the move is a copy, and a crash during the copy truncates
``last.ckpt``. Here the checkpoint goes through :func:`~src.core.atomic_write.atomic_open`: a
temporary file next to it, flushed to disk and renamed over it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from typing_extensions import override

from src.core.atomic_write import atomic_open


class AtomicCheckpointIO(TorchCheckpointIO):
    @override
    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        if "://" in str(path):  # remote storage: fsspec's transaction is the atomic write there
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        if storage_options is not None:
            raise TypeError(f"storage_options={storage_options!r} is not supported for local checkpoints")
        with atomic_open(path, "wb") as f:
            torch.save(checkpoint, f)
