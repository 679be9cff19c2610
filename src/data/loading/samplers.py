"""Training samplers whose order is a function of (seed, epoch): what makes a resumed run exact.

torch's ``RandomSampler`` draws each epoch's permutation from the main process's global generator
when its iterator is created, and loader workers draw the augmentation from generators seeded at
their start (and kept across epochs by persistent workers): so the images and augmentations of the
epochs after a resume depend on everything that drew random numbers before, and on which worker
loads which image. Here the order comes from the sampler's own generator and each sample carries its
epoch, so the dataset can seed the sample's augmentation itself (:class:`~src.data.loading.dataset.ImageDataset`
with ``seed``).

The contract of every training sampler in this module (the DataModule takes any of them):

- ``__init__(..., seed: int)``: the run's seed (``data.seed``, i.e. ``seed``).
- ``set_epoch(epoch: int)``: the epoch the next ``__iter__`` serves. Lightning calls it before each
  training epoch (also through its ``DistributedSamplerWrapper`` under DDP); never called, the
  sampler serves epoch 0 every time, as torch's ``DistributedSampler`` does.
- ``__iter__`` yields ``(epoch, index)`` pairs; their order is a function of (seed, epoch) and the
  sampler's constructor arguments only: drawn from a ``torch.Generator`` of its own seeded with
  :func:`~src.core.random_state.derived_seed` ``(seed, epoch)``, never from the global generators.
- ``__len__``: the number of pairs one epoch yields.

:class:`EpochDataLoader` is the DataLoader that serves them: its iterator starts at the first batch
asked for, after Lightning's ``set_epoch``, not when Lightning creates it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler

from src.core.random_state import derived_seed


class EpochShuffleSampler(Sampler[tuple[int, int]]):
    """Every index of ``range(num_samples)`` once per epoch, in a random order that is a function of
    (``seed``, epoch) alone: ``RandomSampler``'s order, made independent of the global generator."""

    def __init__(self, num_samples: int, *, seed: int) -> None:
        if not isinstance(num_samples, int) or num_samples < 0:
            raise ValueError(f"num_samples={num_samples!r}: expected a whole number >= 0 (the dataset's length)")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError(f"seed={seed!r}: expected a whole number (the run's seed)")
        self.num_samples = num_samples
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(derived_seed(self.seed, self.epoch))
        epoch = self.epoch  # fixed for this iterator, whatever set_epoch does meanwhile
        return ((epoch, index) for index in torch.randperm(self.num_samples, generator=generator).tolist())

    def __len__(self) -> int:
        return self.num_samples


class EpochDataLoader(DataLoader):
    """A DataLoader whose iterator starts at the first batch asked for, not when it is created.

    Lightning creates the training iterator while it sets up (``setup_data``; here already in
    ``configure_optimizers``, through ``estimated_stepping_batches``), before it restores the loops
    from a checkpoint and calls ``set_epoch`` with the resumed epoch, and it creates no other for
    that epoch. Started then, the iterator would draw the sampler's epoch 0 (its workers prefetch at
    once), so a resumed run's first epoch would repeat epoch 0's order and augmentation. Started at
    the first batch, it serves the epoch ``set_epoch`` gave, as in the uninterrupted run.
    """

    def __iter__(self) -> Iterator[Any]:
        return _StartsAtFirstBatch(super().__iter__, len(self))


class _StartsAtFirstBatch(Iterator[Any]):
    def __init__(self, start: Callable[[], Iterator[Any]], length: int) -> None:
        self._start, self._length, self._iterator = start, length, None

    def __next__(self) -> Any:
        if self._iterator is None:
            self._iterator = self._start()
        return next(self._iterator)

    def __len__(self) -> int:
        return self._length
