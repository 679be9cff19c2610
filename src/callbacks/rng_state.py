"""Random-number states in checkpoints, so a resumed run draws the shuffles, augmentations and
dropout masks the uninterrupted run would have drawn (Lightning saves no RNG state)."""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch
from typing_extensions import override


class RandomStateCheckpoint(L.Callback):
    """Saves Python's, NumPy's and torch's (CPU and CUDA) generator states with every checkpoint
    and restores them on resume. Plain lists and tensors only, so checkpoints still load with
    ``weights_only=True``."""

    @override
    def state_dict(self) -> dict[str, Any]:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        return {
            "python": _lists(random.getstate()),
            "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        version, internal, gauss = state_dict["python"]
        random.setstate((version, tuple(internal), gauss))
        kind, keys, pos, has_gauss, gauss = state_dict["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
        torch.set_rng_state(state_dict["torch"])
        if state_dict["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


def _lists(value: Any) -> Any:
    return [_lists(v) for v in value] if isinstance(value, tuple) else value
