"""Class-balanced sampling with replacement (``data.sampler=balanced``) for imbalanced folders.

torch's ``WeightedRandomSampler`` draws from the global generator (or one passed in, whose state
then depends on every earlier epoch), so a resumed run would draw other images than the
uninterrupted one. This sampler has the contract of the training samplers of
:mod:`src.data.loading.samplers` instead: it yields ``(epoch, index)`` pairs, and the indices of an epoch
are a pure function of ``(seed, epoch)``, drawn with its own ``torch.Generator``; Lightning calls
``set_epoch`` before every epoch (also after a resume).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

from src.core.random_state import derived_seed

SAMPLERS = ("random", "balanced")


class BalancedSampler(Sampler[tuple[int, int]]):
    """Draws ``num_samples`` indices (the dataset's size by default) with replacement, each class
    equally likely: an image's weight is 1 / (its class's image count).

    Args:
        labels: the class index of every sample, in dataset order.
        seed: with the epoch, fixes the draw.
        num_samples: indices per epoch; the number of labels when None (one epoch sees as many
            images as the training set has, as with the random sampler).
    """

    def __init__(self, labels: Sequence[int], *, seed: int, num_samples: int | None = None) -> None:
        if not labels:
            raise ValueError("BalancedSampler needs at least one label; the training set is empty")
        counts = Counter(int(label) for label in labels)
        self.weights = torch.tensor([1.0 / counts[int(label)] for label in labels], dtype=torch.double)
        self.seed = seed
        self.num_samples = len(labels) if num_samples is None else num_samples
        if self.num_samples < 1:
            raise ValueError(f"BalancedSampler(num_samples={num_samples}): expected a whole number >= 1")
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def indices(self, epoch: int) -> list[int]:
        """The sample indices of ``epoch``: a function of (seed, epoch) and the labels alone."""
        generator = torch.Generator().manual_seed(derived_seed(self.seed, epoch))
        return torch.multinomial(self.weights, self.num_samples, replacement=True, generator=generator).tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch  # fixed for this iterator, whatever set_epoch does meanwhile
        return ((epoch, index) for index in self.indices(epoch))
