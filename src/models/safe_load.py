"""Loading checkpoints and weight files that may come from someone else."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch


def safe_torch_load(path: Path, key: str) -> object:
    """``torch.load`` that unpickles tensors and plain values only; anything else is refused, unrun.

    A pickle can name any callable to run while loading (``__reduce__``), so a checkpoint from
    someone else is only as safe as this allow-list (torch's ``weights_only`` unpickler).
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{key}={str(path)!r} was refused: it holds pickled objects other than tensors and plain values, "
            "which could run code when loaded. Use a checkpoint written by src.train or a state_dict saved "
            "with torch.save(model.state_dict(), path); load it with weights_only=False only if you trust "
            f"whoever made it. (torch: {str(error).splitlines()[0]})"
        ) from error
