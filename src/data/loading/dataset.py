"""A map-style dataset over (path, label) samples, surviving files that go bad after the scan."""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from src.data.files.listing import Sample
from src.data.files.image_reader import UNREADABLE_IMAGE_ERRORS, load_rgb
from src.core.problems import Problem, is_whole_number
from src.core.random_state import derived_seed, seeded_torch_generator

log = logging.getLogger(__name__)

# Consecutive unreadable files before giving up: past this the folder is gone, not one file.
MAX_REPLACEMENTS = 16


def batch_size_problems(batch_size: Any, key: str) -> list[Problem]:
    """A DataLoader's ``batch_size`` (training, evaluation, prediction) must be a whole number >= 1."""
    if is_whole_number(batch_size, minimum=1):
        return []
    return [Problem(key, batch_size, "a whole number >= 1", f"set {key}=64 (or smaller if memory is short)")]


def multi_hot(label: tuple[int, ...], num_labels: int) -> torch.Tensor:
    """Class indices as the float 0/1 vector BCE-with-logits takes: ``(0, 2), 4 -> [1, 0, 1, 0]``."""
    target = torch.zeros(num_labels)
    target[list(label)] = 1.0
    return target


class ImageDataset(Dataset):
    """``(image tensor, label)`` of each sample; with ``num_labels`` (multi-label) the label is the
    multi-hot float vector of the sample's tuple of class indices.

    A file that cannot be read any more (deleted, truncated or replaced since the scan) is, with
    ``skip_unreadable``, replaced by the next readable sample, with a warning; ``failures`` counts
    them across DataLoader worker processes (shared memory), so the run can report the total.

    With ``seed`` (training), the transform's random draws are a function of (seed, epoch, index):
    it runs with torch's generator (the one the transforms draw from) seeded from them, and put back after it.
    So a sample's augmentation is the same in any worker or in the main process, in any order, and
    in a resumed run. The key is an ``(epoch, index)`` pair from a sampler of
    :mod:`src.data.loading.samplers`, or a bare index (epoch 0's draw, e.g. for ``ShowBatch``). Without
    ``seed`` the transform draws from the process's generators as they are.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        transform: Callable,
        skip_unreadable: bool = True,
        num_labels: int | None = None,
        decode_size: int | None = None,
        seed: int | None = None,
        read: Callable[..., Any] = load_rgb,
    ) -> None:
        self.samples = list(samples)
        self.seed = seed
        self.num_labels = num_labels
        self.transform = transform
        self.skip_unreadable = skip_unreadable
        self.decode_size = decode_size  # JPEGs decode at reduced scale down to this (load_rgb's min_size)
        self.read = read  # path, min_size -> what transform takes (decode_on=device: JPEG bytes, src/data/placement/gpu_decode.py)
        self.failures = multiprocessing.Value("i", 0)
        self._warned: set = set()  # per process: one warning per file, every failure counted

    def __len__(self) -> int:
        return len(self.samples)

    def use_transform(self, transform: Callable, decode_size: int | None) -> None:
        """Transform and decode at another size from now on (a progressive-resizing stage)."""
        self.transform, self.decode_size = transform, decode_size

    def target(self, sample: Sample) -> int | torch.Tensor:
        return sample.label if self.num_labels is None else multi_hot(sample.label, self.num_labels)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int | torch.Tensor]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        if self.seed is None:
            return self._load(index)
        with seeded_torch_generator(derived_seed(self.seed, epoch, index)):
            return self._load(index)

    def _load(self, index: int) -> tuple[torch.Tensor, int | torch.Tensor]:
        for attempt in range(min(MAX_REPLACEMENTS, len(self.samples))):
            sample = self.samples[(index + attempt) % len(self.samples)]
            try:
                return self.transform(self.read(sample.path, min_size=self.decode_size)), self.target(sample)
            except UNREADABLE_IMAGE_ERRORS as error:
                if not self.skip_unreadable:
                    raise OSError(f"{sample.path} became unreadable after the scan ({type(error).__name__}: "
                                  f"{error}); data.on_bad_file=skip leaves such files out and goes on") from error
                with self.failures.get_lock():
                    self.failures.value += 1
                if sample.path not in self._warned:
                    self._warned.add(sample.path)
                    log.warning("skipped %s, unreadable since the scan (%s: %s); using the next image instead",
                                sample.path, type(error).__name__, error)
        raise OSError(
            f"{MAX_REPLACEMENTS} images in a row from {self.samples[index].path} on are unreadable; "
            "is the data folder still there? Check data.root and restart"
        )
