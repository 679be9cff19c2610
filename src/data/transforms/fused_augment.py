"""fastai's training augmentation in two steps per image instead of nine.

fastai v1 composes its rotation, zoom and warp into one coordinate map and samples the image once;
chaining torchvision's RandomRotation, RandomAffine and RandomPerspective resamples it three times
(and the first two with nearest-neighbour interpolation). :class:`RandomWarp` draws the same three
random changes with the same probabilities, multiplies them into one homography and lets PIL
apply it once, bilinearly. :class:`LightingToTensor` turns the PIL image into a float tensor,
changes brightness and contrast as ``ColorJitter`` does, and normalises, in a few in-place tensor
operations.

Measured per 64-pixel training image on one core of the 2-core build machine (docs/performance.md, "Why each default"):
the torchvision chain took about 2.9 ms, these two steps about half of it, which is what keeps
the data loader from competing with training for the CPU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

# ITU-R 601 luma, as torchvision's rgb_to_grayscale (used by its adjust_contrast).
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(()))


def _happens(p: float) -> bool:
    return p > 0 and float(torch.rand(())) < p


def perspective_matrix(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 3x3 homography ``H`` with ``H @ (x, y, 1) ~ (u, v, 1)`` for four point pairs (x, y) -> (u, v)."""
    rows, values = [], []
    for (x, y), (u, v) in zip(source, target):
        rows += [[x, y, 1, 0, 0, 0, -u * x, -u * y], [0, 0, 0, x, y, 1, -v * x, -v * y]]
        values += [u, v]
    h = np.linalg.solve(np.asarray(rows, dtype=np.float64), np.asarray(values, dtype=np.float64))
    return np.append(h, 1.0).reshape(3, 3)


def warp_matrix(width: int, height: int, angle: float = 0.0, scale: float = 1.0,
                corners: np.ndarray | None = None) -> np.ndarray:
    """Output pixel -> input pixel: the perspective warp (the output's ``corners`` show the input's
    corners; None: none), then a zoom by ``scale`` and a rotation by ``angle`` degrees about the centre."""
    cx, cy = width / 2, height / 2
    theta = math.radians(angle)
    cos, sin = math.cos(theta) / scale, math.sin(theta) / scale
    affine = np.array([[cos, -sin, cx - cos * cx + sin * cy],
                       [sin, cos, cy - sin * cx - cos * cy],
                       [0.0, 0.0, 1.0]])
    if corners is None:
        return affine
    image_corners = np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], dtype=np.float64)
    return affine @ perspective_matrix(corners, image_corners)


class RandomWarp:
    """With probability ``p`` each: a rotation up to ``max_rotate`` degrees, a zoom in by 1 to
    ``max_zoom``, and a perspective warp moving each corner inwards by up to ``max_warp`` of half
    the side (torchvision's RandomPerspective); applied together, once. Uncovered areas are black."""

    def __init__(self, max_rotate: float, max_zoom: float, max_warp: float, p: float) -> None:
        if max_zoom < 1.0:  # the one check of the zoom range, for the worker and the device path alike
            raise ValueError(f"data.augment.max_zoom must be >= 1.0 (1.0 = no zoom), got {max_zoom}")
        self.max_rotate, self.max_zoom, self.max_warp, self.p = max_rotate, max_zoom, max_warp, p

    def _corners(self, width: int, height: int) -> np.ndarray:
        dx, dy = int(self.max_warp * width / 2), int(self.max_warp * height / 2)

        def inward(limit: int) -> int:
            return int(torch.randint(0, limit + 1, ()))

        return np.array([
            [inward(dx), inward(dy)],
            [width - 1 - inward(dx), inward(dy)],
            [width - 1 - inward(dx), height - 1 - inward(dy)],
            [inward(dx), height - 1 - inward(dy)],
        ], dtype=np.float64)

    def params(self, width: int, height: int) -> tuple[float | None, float | None, np.ndarray | None]:
        """One call's random draws: the rotation angle, the zoom and the warped corners; None for an op
        that does not happen this time."""
        rotate = self.max_rotate > 0 and _happens(self.p)
        zoom = self.max_zoom > 1.0 and _happens(self.p)
        warp = self.max_warp > 0 and _happens(self.p)
        return (_uniform(-self.max_rotate, self.max_rotate) if rotate else None,
                _uniform(1.0, self.max_zoom) if zoom else None,
                self._corners(width, height) if warp else None)

    def __call__(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        angle, scale, corners = self.params(width, height)
        if angle is None and scale is None and corners is None:
            return image
        matrix = warp_matrix(width, height, angle=0.0 if angle is None else angle,
                             scale=1.0 if scale is None else scale, corners=corners)
        matrix = matrix / matrix[2, 2]
        return image.transform(image.size, Image.Transform.PERSPECTIVE, tuple(matrix.flatten()[:8]),
                               resample=Image.Resampling.BILINEAR, fillcolor=0)

    def __repr__(self) -> str:
        return (f"RandomWarp(max_rotate={self.max_rotate}, max_zoom={self.max_zoom}, max_warp={self.max_warp}, "
                f"p={self.p})")


class LightingToTensor:
    """PIL RGB image -> normalised float tensor (3, H, W), with ``ColorJitter``'s brightness and then
    contrast change (factors uniform in [1 - max_lighting, 1 + max_lighting]), each with probability ``p``."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], max_lighting: float = 0.0, p: float = 0.0) -> None:
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(-1, 1, 1)
        self.max_lighting, self.p = max_lighting, p

    def factors(self) -> tuple[float | None, float | None]:
        low, high = 1 - self.max_lighting, 1 + self.max_lighting
        brightness = _uniform(low, high) if self.max_lighting > 0 and _happens(self.p) else None
        contrast = _uniform(low, high) if self.max_lighting > 0 and _happens(self.p) else None
        return brightness, contrast

    def apply(self, image: Image.Image, brightness: float | None = None, contrast: float | None = None) -> torch.Tensor:
        pixels = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)
        x = pixels.to(torch.float32).div_(255)
        if brightness is not None:
            x.mul_(brightness).clamp_(0, 1)
        if contrast is not None:
            gray_mean = sum(w * x[c] for c, w in enumerate(GRAY_WEIGHTS)).mean()
            x.sub_(gray_mean).mul_(contrast).add_(gray_mean).clamp_(0, 1)
        return x.sub_(self.mean).div_(self.std)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.apply(image, *self.factors())

    def __repr__(self) -> str:
        return f"LightingToTensor(max_lighting={self.max_lighting}, p={self.p})"
