"""Random-number states in checkpoints, so a resumed run draws the dropout masks (and whatever else
draws from the global generators) the uninterrupted run would have drawn (Lightning saves no RNG
state). The training order and augmentation need no state: they are functions of (seed, epoch,
index), see :mod:`src.data.loading.samplers`."""

from __future__ import annotations

from typing import Any

import lightning as L
from typing_extensions import override

from src.core.random_state import random_states, set_random_states


class RandomStateCheckpoint(L.Callback):
    """Saves Python's, NumPy's and torch's (CPU and CUDA) generator states with every checkpoint
    and restores them on resume (:mod:`src.core.random_state`)."""

    @override
    def state_dict(self) -> dict[str, Any]:
        return random_states()

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        set_random_states(state_dict)
