"""Train and eval presets in the spirit of fastai v1's ``get_transforms``, with torchvision v2.

fastai v1 applies to training images: a random crop, a horizontal flip (p=0.5), and with
probability ``p_affine`` each of a rotation (up to ``max_rotate`` degrees), a zoom (1 to
``max_zoom``) and a perspective warp (``max_warp``), then with probability ``p_lighting`` each of
a brightness and a contrast change (``max_lighting``). Validation images are only resized and
centre-cropped. Rotation, zoom and warp are applied as one resampling and lighting with the
tensor conversion (:mod:`src.data.fused_augment`), as fastai composes them. Differences:
uncovered corners are black where fastai reflects, and the brightness/contrast factors are
multiplicative in [1-m, 1+m] (torchvision's ColorJitter).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import v2

from src.data.fused_augment import LightingToTensor, RandomWarp

RESIZE_METHODS = ("crop", "squish", "pad")
INTERPOLATIONS = {
    "bilinear": v2.InterpolationMode.BILINEAR,
    "bicubic": v2.InterpolationMode.BICUBIC,
    "nearest": v2.InterpolationMode.NEAREST,
}


def _resize(size: int, method: str, interpolation: str) -> list[v2.Transform]:
    """Resize so that a ``size`` x ``size`` crop (or the whole image, for squish and pad) fits.

    Every transform but :class:`TrainTransform` resizes the decoded image as a uint8 tensor, not as a
    PIL image: torch's antialiased uint8 kernels took 0.31 ms for a 400 px image to 224 px where PIL
    took 1.25 ms (one core, measured for issue 14), and the resize is most of what the device path's
    loader workers do. The two agree to within one grey level. :class:`TrainTransform` stays on PIL
    because its warp (:class:`~src.data.fused_augment.RandomWarp`) resamples the PIL image."""
    if method not in RESIZE_METHODS:
        raise ValueError(f"data.resize_method={method!r}; choose one of {', '.join(RESIZE_METHODS)}")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"data.interpolation={interpolation!r}; choose one of {', '.join(INTERPOLATIONS)}")
    mode = INTERPOLATIONS[interpolation]
    if method == "crop":  # shorter side to size; the crop follows
        return [v2.Resize(size, interpolation=mode, antialias=True)]
    if method == "squish":  # both sides to size, aspect ratio not kept
        return [v2.Resize((size, size), interpolation=mode, antialias=True)]
    # pad: longer side to size, then CenterCrop pads the short side with zeros
    return [v2.Resize(size=None, max_size=size, interpolation=mode, antialias=True)]


def _to_normalized_tensor(mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(mean), std=list(std))]


class TrainTransform(v2.Compose):
    """Augmentation for training images (see the module docstring for the fastai mapping)."""

    def __init__(
        self,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        resize_method: str = "crop",
        interpolation: str = "bilinear",
        do_flip: bool = True,
        max_rotate: float = 10.0,
        max_zoom: float = 1.1,
        max_warp: float = 0.2,
        max_lighting: float = 0.2,
        p_affine: float = 0.75,
        p_lighting: float = 0.75,
    ) -> None:
        steps: list = [*_resize(size, resize_method, interpolation), v2.RandomCrop(size, pad_if_needed=True)]
        if do_flip:
            steps.append(v2.RandomHorizontalFlip(p=0.5))
        if max_rotate > 0 or max_zoom != 1.0 or max_warp > 0:  # RandomWarp refuses a zoom below 1
            # rotation, zoom and warp in one resampling (src/data/fused_augment.py)
            steps.append(RandomWarp(max_rotate, max_zoom, max_warp, p=p_affine))
        steps.append(LightingToTensor(mean, std, max_lighting, p=p_lighting))
        super().__init__(steps)
        self.size = size


class EvalTransform(v2.Compose):
    """Validation, test and prediction images: resize and centre-crop, then normalise."""

    def __init__(
        self,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        resize_method: str = "crop",
        interpolation: str = "bilinear",
    ) -> None:
        super().__init__([v2.ToImage(), *_resize(size, resize_method, interpolation), v2.CenterCrop(size),
                          *_to_normalized_tensor(mean, std)])
        self.size = size


class TrainCropTransform(v2.Compose):
    """``data.augment.on=device``: the workers' part of :class:`TrainTransform`, its resize and random
    crop, to a uint8 tensor (3, size, size); :class:`~src.data.batch_augment.BatchAugment` does the rest
    on the training device. Applies to PIL images and to uint8 tensors (GPU-decoded JPEGs) alike."""

    def __init__(self, size: int, resize_method: str = "crop", interpolation: str = "bilinear") -> None:
        super().__init__([v2.PILToTensor(), *_resize(size, resize_method, interpolation),
                          v2.RandomCrop(size, pad_if_needed=True)])
        self.size = size


class EvalCropTransform(v2.Compose):
    """:class:`EvalTransform` without its float conversion and normalisation: uint8 (3, size, size),
    normalised on the training device (``data.augment.on=device``)."""

    def __init__(self, size: int, resize_method: str = "crop", interpolation: str = "bilinear") -> None:
        super().__init__([v2.PILToTensor(), *_resize(size, resize_method, interpolation), v2.CenterCrop(size)])
        self.size = size


def uint8_view(transform: EvalTransform) -> v2.Compose:
    """The eval transform up to its uint8 tensor (resize, crop), without ``ToDtype`` and ``Normalize``:
    what the exported model takes (it normalises inside, src.export.ServingModel) and the picture the
    network sees, pixel for pixel."""
    *steps, to_float, normalize = transform.transforms
    if not (isinstance(to_float, v2.ToDtype) and isinstance(normalize, v2.Normalize)):
        raise TypeError(f"expected the eval transform to end with ToDtype and Normalize, got "
                        f"{type(to_float).__name__} and {type(normalize).__name__}")
    return v2.Compose(steps)
