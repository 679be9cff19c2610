"""Checkpoints written atomically in their own folder: a crash mid-write never leaves a truncated file.

Lightning 2.6 saves through fsspec's transaction (``lightning.fabric.utilities.cloud_io._atomic_save``),
which for local paths writes to ``tempfile.mkstemp()`` (the system temp folder) and then
``shutil.move``s it. When that folder is on another file system than the run (a tmpfs ``/tmp``, a
network or mounted data disk), the move is a copy, and a crash during the copy truncates
``last.ckpt``. Here the temporary file sits next to the checkpoint, is flushed to disk, and is
renamed over it with ``os.replace`` (atomic on POSIX and Windows).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from typing_extensions import override


class AtomicCheckpointIO(TorchCheckpointIO):
    @override
    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        if "://" in str(path):  # remote storage: fsspec's transaction is the atomic write there
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        if storage_options is not None:
            raise TypeError(f"storage_options={storage_options!r} is not supported for local checkpoints")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            with tmp.open("wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
