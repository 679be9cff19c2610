"""Checkpoints written atomically in their own folder: a crash mid-write never leaves a truncated file.

Lightning 2.6 saves through fsspec's transaction (``lightning.fabric.utilities.cloud_io._atomic_save``),
which for local paths writes to ``tempfile.mkstemp()`` (the system temp folder) and then
``shutil.move``s it. When that folder is on another file system than the run (a tmpfs ``/tmp``, a
network or mounted data disk), the move is a copy, and a crash during the copy truncates
``last.ckpt``. Here the checkpoint goes through :func:`~src.core.atomic_write.atomic_open`: a
temporary file next to it, flushed to disk and renamed over it.

A full disk makes ``torch.save`` raise ``RuntimeError: [enforce fail at inline_container.cc:672]
unexpected pos ...`` with the ``OSError`` (``ENOSPC``) only in its context; it is raised again as
:class:`CheckpointDiskFullError`, one line naming the folder, its free room and the checkpoint's
size. The temporary file is removed and the previous checkpoint stays as it was.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from typing_extensions import override

from src.core.atomic_write import atomic_open


class CheckpointDiskFullError(OSError):
    """No room left on the disk while a checkpoint was written; nothing was replaced."""


def is_disk_full(error: BaseException) -> bool:
    """``error`` or an exception in its chain (cause or context) is ``ENOSPC`` (or ``EDQUOT``, a quota)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        error = error.__cause__ or error.__context__
    return False


def tensor_bytes(value: Any) -> int:
    """The bytes of the tensors in ``value`` (a checkpoint's nested dicts and lists): its size on disk, near enough."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(tensor_bytes(v) for v in value)
    return 0


def disk_full_error(path: Path, checkpoint: dict[str, Any]) -> CheckpointDiskFullError:
    """The one-line account of a checkpoint that did not fit (after its temporary file was removed)."""
    folder = path.parent
    free = shutil.disk_usage(folder).free
    needed = tensor_bytes(checkpoint)
    kept = f"the previous {path.name} is intact" if path.is_file() else f"no {path.name} was written"
    room = f"free at least {(needed - free) / 2**20:.0f} MiB there" if needed > free else "free room there"
    error = CheckpointDiskFullError(
        f"no space left on the disk of {folder} to write {path.name}: {free / 2**20:.0f} MiB free, the checkpoint "
        f"needs about {needed / 2**20:.0f} MiB beside the file it replaces; {kept}. To go on, {room} and resume "
        "in place (the same command with ckpt_path=last and this run's hydra.run.dir), or start the run from "
        "the start on another disk (hydra.run.dir=OTHER)"
    )
    error.errno = errno.ENOSPC
    return error


class AtomicCheckpointIO(TorchCheckpointIO):
    @override
    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        if "://" in str(path):  # remote storage: fsspec's transaction is the atomic write there
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        if storage_options is not None:
            raise TypeError(f"storage_options={storage_options!r} is not supported for local checkpoints")
        try:
            with atomic_open(path, "wb") as f:
                torch.save(checkpoint, f)
        except (OSError, RuntimeError) as error:
            if not is_disk_full(error):
                raise
            raise disk_full_error(Path(path), checkpoint) from error
