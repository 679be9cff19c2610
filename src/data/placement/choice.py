"""Where the data work runs: ``data.augment.on`` (workers | device | auto) and ``data.decode_on``.

``workers``: the loader processes decode, augment and normalise (PIL and NumPy, one image at a
time; :class:`~src.data.transforms.presets.TrainTransform`). ``device``: they only decode, resize and crop
to uint8 tensors (a quarter of float32's bytes through the worker pipe and the host-to-device
copy); flip, warp, lighting and normalisation run on whole batches where the model trains
(:class:`~src.data.transforms.batch_augment.BatchAugment`). ``decode_on=device`` moves the JPEG decode to the GPU
too (:mod:`src.data.placement.gpu_decode`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from src.core.problems import Problem, raise_problems

AUGMENT_ON = ("auto", "workers", "device")
DECODE_ON = ("workers", "device")
# auto without a GPU: the path whole runs measured faster (docs/performance.md, "Where the data work runs"): the
# fastai-comparison recipe on a quiet 2-core CPU, 3 seeds each, whole command 64.8 s on the device path
# against 72.9 s with the workers (0.89x), at the same error rate (3-seed means 0.158 and 0.155). The
# batch augmentation takes the training process's cores, but costs less than the per-image PIL/NumPy
# work it takes off the loader workers, which compete for the same cores.
CPU_AUGMENT_ON = "device"


@dataclass(frozen=True)
class DataPlacement:
    """The resolved placement (never ``auto``)."""

    augment_on: str
    decode_on: str

    @staticmethod
    def problems(augment_on: Any, decode_on: Any, cuda: bool | None = None) -> list[Problem]:
        """The problems of ``data.augment.on`` and ``data.decode_on`` (``cuda``: whether a GPU is
        there; None asks torch). What a data source cannot decode on the device, it says itself."""
        found = []
        if augment_on not in AUGMENT_ON:
            found.append(Problem("data.augment.on", augment_on, " | ".join(AUGMENT_ON),
                                 "auto puts the augmentation on the GPU when there is one"))
        if decode_on not in DECODE_ON:
            found.append(Problem("data.decode_on", decode_on, " | ".join(DECODE_ON),
                                 "workers decodes with PIL in the loader processes"))
        elif decode_on == "device":
            cuda = torch.cuda.is_available() if cuda is None else cuda
            if not cuda:
                found.append(Problem("data.decode_on", decode_on, "a CUDA GPU (nvJPEG decodes on it); none is available",
                                     "set data.decode_on=workers, or run on a machine with a GPU"))
            if augment_on == "workers":
                found.append(Problem("data.augment.on", augment_on, "device or auto with data.decode_on=device (the "
                                     "images are decoded on the GPU, after the workers)",
                                     "set data.augment.on=device, or data.decode_on=workers"))
        return found

    @classmethod
    def resolve(cls, augment_on: str = "auto", decode_on: str = "workers", cuda: bool | None = None) -> DataPlacement:
        """Check the settings (raising :class:`~src.core.problems.ConfigError`) and resolve ``auto``."""
        cuda = torch.cuda.is_available() if cuda is None else cuda
        raise_problems(cls.problems(augment_on, decode_on, cuda))
        if augment_on == "auto":
            augment_on = "device" if cuda else CPU_AUGMENT_ON
        return cls(augment_on, decode_on)
