"""Python's, NumPy's and torch's (CPU and CUDA) generator states as plain lists and tensors.

Checkpoints keep them (:class:`~src.callbacks.rng_state.RandomStateCheckpoint`), so a resumed run
draws what the uninterrupted run would have drawn; the lr finder restores them, so a run with
``lr_find=true`` draws what the run with the suggested lr typed in would draw. Plain lists and
tensors only, so checkpoints still load with ``weights_only=True``. :func:`seeded_torch_generator` and
:func:`derived_seed` give one piece of work (a training sample's augmentation) its own seeded draws.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch


def random_states() -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": _lists(random.getstate()),
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_random_states(states: dict[str, Any]) -> None:
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _lists(value: Any) -> Any:
    return [_lists(v) for v in value] if isinstance(value, tuple) else value


def derived_seed(*values: int) -> int:
    """A 64-bit seed mixed from ``values`` (e.g. a run's seed, an epoch, a sample index) by NumPy's
    ``SeedSequence``, so nearby tuples give unrelated streams (``seed + epoch`` would not:
    (42, 1) and (43, 0) would draw the same numbers)."""
    entropy = [int(v) % 2**64 for v in values]  # SeedSequence takes non-negative integers
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0])


@contextmanager
def seeded_torch_generator(seed: int) -> Iterator[None]:
    """torch's CPU generator seeded with ``seed`` inside the block, and put back as it was after it:
    what runs inside draws a function of ``seed`` alone, and what runs after draws as if the block had
    not run. torch's is the only global generator the data transforms draw from (torchvision v2's random
    transforms, :mod:`src.data.transforms.fused_augment`, :mod:`src.data.transforms.batch_augment`; tests/test_samplers.py
    checks that Python's and NumPy's states change nothing), so it is the only one seeded: saving and
    restoring NumPy's legacy state as well cost 65 us an image, a fifth of a loader worker's CPU per
    image on the recipe's images (measured). CUDA's generators are left alone
    (``torch.manual_seed`` would reseed them too, changing the dropout masks of a model training on the GPU)."""
    state = torch.get_rng_state()
    torch.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_rng_state(state)
