"""Loading checkpoints and weight files that may come from someone else, or may be damaged."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive (since torch 1.6)
PICKLE_MAGIC = b"\x80"  # ... or, with _use_new_zipfile_serialization=False, a bare pickle


class DamagedFileError(ValueError):
    """A checkpoint or weights file that cannot be read at all: empty, truncated, or not a PyTorch file."""


def file_damage(path: Path) -> str | None:
    """What is wrong with ``path`` as a PyTorch file, in words, or None when its container is whole.

    Cheap: reads the first bytes and the zip directory at the end, not the tensors.
    """
    size = path.stat().st_size
    if size == 0:
        return "it is empty (0 bytes): a save or a copy that never wrote"
    with path.open("rb") as f:
        head = f.read(4)
    if head.startswith(ZIP_MAGIC):
        if not zipfile.is_zipfile(path):  # the directory at the end of the archive is missing
            return (f"it is truncated or damaged: it starts as a PyTorch file (a zip archive) but its end is "
                    f"missing ({size:,} bytes), as an interrupted save or copy leaves it")
        return None
    if head.startswith(PICKLE_MAGIC):
        return None
    return f"it is not a PyTorch file (torch.save writes a zip archive; this one starts with {head!r})"


def safe_torch_load(path: Path, key: str, remedy: str = "", mmap: bool = False) -> object:
    """``torch.load`` that unpickles tensors and plain values only; anything else is refused, unrun.

    A pickle can name any callable to run while loading (``__reduce__``), so a checkpoint from
    someone else is only as safe as this allow-list (torch's ``weights_only`` unpickler). A file
    that is empty, truncated or not a PyTorch file raises :class:`DamagedFileError` naming the file,
    what is wrong, and ``remedy`` (what to use instead). ``mmap`` leaves a zip archive's tensors on disk
    until they are used (a quick look at a large checkpoint).
    """
    damage = file_damage(path)
    if damage is not None:
        raise DamagedFileError(f"{key}={str(path)!r} cannot be loaded: {damage}. {remedy}".rstrip())
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and zipfile.is_zipfile(path))
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{key}={str(path)!r} was refused: it holds pickled objects other than tensors and plain values, "
            "which could run code when loaded. Use a checkpoint written by src.train or a state_dict saved "
            "with torch.save(model.state_dict(), path); load it with weights_only=False only if you trust "
            f"whoever made it. (torch: {str(error).splitlines()[0]})"
        ) from error
    except (RuntimeError, EOFError, zipfile.BadZipFile) as error:  # damaged inside a whole-looking container
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DamagedFileError(
            f"{key}={str(path)!r} cannot be loaded: it is damaged (torch: {first_line}). {remedy}".rstrip()
        ) from error
