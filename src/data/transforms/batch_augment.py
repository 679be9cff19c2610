"""fastai v2's ``batch_tfms``: the training augmentation on whole uint8 batches on the training device.

With ``data.augment.on=device`` the loader workers only decode, resize and crop to uint8 tensors;
:class:`BatchAugment` then flips, rotates, zooms, warps (one resampling per batch: a perspective
grid per image and one ``grid_sample``), changes lighting and normalises where the model trains.
The random draws are those of the worker path: :class:`~src.data.transforms.fused_augment.RandomWarp`'s
``params`` and :class:`~src.data.transforms.fused_augment.LightingToTensor`'s ``factors`` are called per image
(one owner of the distributions), the flip has torchvision's ``RandomHorizontalFlip`` probability,
and the warp matrix is :func:`~src.data.transforms.fused_augment.warp_matrix`'s in PIL's pixel-centre
convention, so both paths resample the same points (tests/test_batch_augment.py compares them).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from src.data.transforms.fused_augment import GRAY_WEIGHTS, LightingToTensor, RandomWarp, warp_matrix
from src.core.random_state import seeded_torch_generator

FLIP_P = 0.5  # torchvision's RandomHorizontalFlip default, what TrainTransform uses


@dataclass(frozen=True)
class BatchParams:
    """One batch's random draws, per image. ``matrix``: output pixel -> input pixel (continuous
    coordinates, flip included); NaN in ``angle``/``scale``/``brightness``/``contrast`` = not applied."""

    flip: torch.Tensor  # (B,) bool
    angle: torch.Tensor  # (B,) degrees
    scale: torch.Tensor  # (B,) zoom factor
    warped: torch.Tensor  # (B,) bool: the perspective warp happened
    matrix: torch.Tensor  # (B, 3, 3) float64
    brightness: torch.Tensor  # (B,)
    contrast: torch.Tensor  # (B,)


def _nan_if_none(value: float | None) -> float:
    return math.nan if value is None else value


def normalize_uint8(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float32 ``(x / 255 - mean) / std``, as ``EvalTransform``'s ToDtype + Normalize."""
    return images.to(torch.float32).div_(255).sub_(mean.to(images.device)).div_(std.to(images.device))


def perspective_grid(matrix: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``grid_sample``'s grid (B, H, W, 2) for output-pixel -> input-pixel homographies ``matrix`` (B, 3, 3).

    PIL's convention (what the worker path's ``Image.transform`` uses): output pixel (i, j) is the
    point (i + 0.5, j + 0.5), the result is a continuous input position where pixel k spans [k, k + 1);
    with ``align_corners=False`` that position p is ``2 p / side - 1`` in ``grid_sample``'s units.
    """
    device = matrix.device
    ys = torch.arange(height, device=device, dtype=matrix.dtype) + 0.5
    xs = torch.arange(width, device=device, dtype=matrix.dtype) + 0.5
    m = matrix.reshape(-1, 9, 1)

    def plane(row: int) -> torch.Tensor:  # m[row] x + m[row + 1] y + m[row + 2] over (B, H, W)
        # a column of x terms plus a row of y terms: one full-size addition. Broadcasting each entry over
        # (B, H, W) took 2.3 ms for the whole grid of a batch of 64 at 64 px on 2 CPU cores, this 0.37 ms
        # (32 at 224 px: 25.8 vs 2.7 ms). Elementwise on purpose: a matmul would be computed in TF32 or
        # bf16 where a user allows that for float32 matmuls, a tenth of a pixel off at 224 px.
        return (m[:, row] * xs).unsqueeze(1) + (m[:, row + 1] * ys + m[:, row + 2]).unsqueeze(2)

    w = plane(6)
    u = plane(0).div_(w).mul_(2 / width).sub_(1)
    v = plane(3).div_(w).mul_(2 / height).sub_(1)
    return torch.stack([u, v], dim=-1)  # (B, H, W, 2)


class BatchAugment:
    """The :class:`~src.data.transforms.presets.TrainTransform` augmentation after its crop, for whole batches.

    Args: as ``TrainTransform``'s (``data.augment.*``), and the normalisation ``mean``/``std``.
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        do_flip: bool = True,
        max_rotate: float = 10.0,
        max_zoom: float = 1.1,
        max_warp: float = 0.2,
        max_lighting: float = 0.2,
        p_affine: float = 0.75,
        p_lighting: float = 0.75,
    ) -> None:
        self.do_flip = do_flip
        self.warp = RandomWarp(max_rotate, max_zoom, max_warp, p=p_affine)
        self.lighting = LightingToTensor(mean, std, max_lighting, p=p_lighting)
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1)

    def sample(self, batch_size: int, width: int, height: int) -> BatchParams:
        """Draw every image's flip, warp and lighting, in the worker path's order, from torch's generator."""
        flips, angles, scales, warped, matrices, brightness, contrast = [], [], [], [], [], [], []
        flip_matrix = np.array([[-1.0, 0.0, width], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        for _ in range(batch_size):
            flip = self.do_flip and float(torch.rand(())) < FLIP_P
            angle, scale, corners = self.warp.params(width, height)
            matrix = warp_matrix(width, height, angle=0.0 if angle is None else angle,
                                 scale=1.0 if scale is None else scale, corners=corners)
            # The flip comes first in TrainTransform: a point of the flipped image at x is the input's W - x.
            matrices.append(flip_matrix @ matrix if flip else matrix)
            b, c = self.lighting.factors()
            flips.append(flip)
            angles.append(_nan_if_none(angle))
            scales.append(_nan_if_none(scale))
            warped.append(corners is not None)
            brightness.append(_nan_if_none(b))
            contrast.append(_nan_if_none(c))
        return BatchParams(
            flip=torch.tensor(flips, dtype=torch.bool), angle=torch.tensor(angles, dtype=torch.float64),
            scale=torch.tensor(scales, dtype=torch.float64), warped=torch.tensor(warped, dtype=torch.bool),
            matrix=torch.from_numpy(np.stack(matrices)) if matrices else torch.zeros(0, 3, 3, dtype=torch.float64),
            brightness=torch.tensor(brightness, dtype=torch.float64),
            contrast=torch.tensor(contrast, dtype=torch.float64),
        )

    def apply(self, images: torch.Tensor, params: BatchParams) -> torch.Tensor:
        """uint8 (B, 3, H, W) -> the augmented, normalised float32 batch, on ``images``' device.

        In float32 whatever the training precision: ``grid_sample`` coordinates in bf16 (8 mantissa
        bits) would be off by up to half a pixel at 224 px; the network's autocast casts the result.
        """
        device = images.device
        _, _, height, width = images.shape
        x = images.to(torch.float32).div_(255)
        grid = perspective_grid(params.matrix.to(device, torch.float32), height, width)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        brightness = torch.nan_to_num(params.brightness, nan=1.0).to(device, torch.float32).view(-1, 1, 1, 1)
        x = x.mul_(brightness).clamp_(0, 1)  # x is in [0, 1]: a factor of 1 with the clamp changes nothing
        # the images whose contrast changes, found on the CPU where the draws are (no wait for a GPU); only
        # they are copied and changed: a whole-batch torch.where took 2.5 ms a batch of 64 at 64 px, this 0.8
        chosen = (~torch.isnan(params.contrast)).nonzero().squeeze(1)
        if len(chosen):
            factor = params.contrast[chosen].to(device, torch.float32).view(-1, 1, 1, 1)
            chosen = chosen.to(device)
            selected = x[chosen]
            # the gray image's mean is the weighted sum of the channel means
            weights = torch.tensor(GRAY_WEIGHTS, device=device, dtype=torch.float32)
            gray_mean = (selected.mean((2, 3)) * weights).sum(1).view(-1, 1, 1, 1)
            x[chosen] = selected.sub_(gray_mean).mul_(factor).add_(gray_mean).clamp_(0, 1)
        return x.sub_(self.mean.to(device)).div_(self.std.to(device))

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Validation, test and prediction batches: uint8 -> normalised float32, nothing random."""
        return normalize_uint8(images, self.mean, self.std)

    def __call__(self, images: torch.Tensor, seed: int | None = None) -> torch.Tensor:
        """``images`` augmented; with ``seed`` the draws are a function of it alone (torch's
        generator, which they come from, is seeded for them and put back after), without it they come
        from the generator as it is."""
        _, _, height, width = images.shape
        if seed is None:
            return self.apply(images, self.sample(len(images), width, height))
        with seeded_torch_generator(seed):
            params = self.sample(len(images), width, height)
        return self.apply(images, params)

    def __repr__(self) -> str:
        return f"BatchAugment(do_flip={self.do_flip}, {self.warp!r}, {self.lighting!r})"


class ModelBatches:
    """A loader's ``(images, labels)`` batches as the network takes them, on its device (``prepare``:
    loader images -> model input, the DataModule's), for loops outside the Trainer (the lr finder,
    the end-of-run interpretation), which Lightning's batch-transfer hooks do not reach."""

    def __init__(self, loader: Iterable, prepare: Callable[[Any], torch.Tensor]) -> None:
        self.loader, self.prepare = loader, prepare

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, labels in self.loader:
            yield self.prepare(images), labels


class NormalizedItems(Dataset):
    """A dataset of uint8 images seen as normalised float ones, item by item (figures drawing single
    validation images with ``augment.on=device``)."""

    def __init__(self, dataset: Dataset, augment: BatchAugment) -> None:
        self.dataset, self.augment = dataset, augment

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, object]:
        image, label = self.dataset[index]
        return self.augment.normalize(image.unsqueeze(0))[0], label
