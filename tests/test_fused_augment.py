"""The fused training augmentation: one resampling for rotate/zoom/warp, lighting with the tensor."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from src.data.transforms.fused_augment import LightingToTensor, RandomWarp, perspective_matrix, warp_matrix
from src.data.files.image_reader import load_rgb
from tests.conftest import SAMPLE

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _apply(matrix: np.ndarray, point: tuple[float, float]) -> tuple[float, float]:
    x, y, w = matrix @ np.array([point[0], point[1], 1.0])
    return x / w, y / w


def test_zoom_and_rotation_are_about_the_centre():
    assert np.allclose(warp_matrix(64, 48), np.eye(3))
    zoom = warp_matrix(64, 48, scale=2.0)  # output pixel -> input pixel: the middle half is shown
    assert _apply(zoom, (0, 0)) == pytest.approx((16, 12))
    assert _apply(zoom, (32, 24)) == pytest.approx((32, 24))
    quarter_turn = warp_matrix(64, 64, angle=90.0)
    assert _apply(quarter_turn, (32, 0)) == pytest.approx((64, 32))


def test_perspective_matrix_maps_the_four_points():
    source = np.array([[3, 2], [60, 5], [58, 61], [1, 59]], dtype=float)
    target = np.array([[0, 0], [63, 0], [63, 63], [0, 63]], dtype=float)
    matrix = perspective_matrix(source, target)
    for s, t in zip(source, target):
        assert _apply(matrix, tuple(s)) == pytest.approx(tuple(t), abs=1e-9)


def test_a_quarter_turn_moves_pixels_as_the_matrix_says():
    pixels = np.zeros((32, 32, 3), dtype=np.uint8)
    pixels[4:8, 20:28] = 255  # a bar near the top right
    image = Image.fromarray(pixels)
    matrix = warp_matrix(32, 32, angle=90.0)
    turned = np.array(image.transform((32, 32), Image.Transform.PERSPECTIVE, tuple(matrix.flatten()[:8]),
                                      resample=Image.Resampling.NEAREST))
    ys, xs = np.nonzero(turned[..., 0])
    for x, y in zip(xs, ys):  # every lit output pixel samples a lit input pixel (PIL maps pixel centres)
        source_x, source_y = _apply(matrix, (x + 0.5, y + 0.5))
        assert pixels[int(source_y), int(source_x), 0] == 255
    assert len(xs) == pytest.approx(4 * 8, abs=8)


def test_random_warp_is_seeded_and_skippable():
    image = load_rgb(next((SAMPLE / "bag").iterdir())).resize((64, 64))
    assert RandomWarp(10, 1.1, 0.2, p=0.0)(image) is image
    torch.manual_seed(3)
    first = np.array(RandomWarp(30, 1.5, 0.3, p=1.0)(image))
    torch.manual_seed(3)
    again = np.array(RandomWarp(30, 1.5, 0.3, p=1.0)(image))
    assert np.array_equal(first, again) and not np.array_equal(first, np.array(image))


def test_tensor_conversion_equals_torchvisions():
    image = load_rgb(next((SAMPLE / "coat").iterdir()))
    expected = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])(image)
    to_tensor = LightingToTensor(MEAN, STD, max_lighting=0.2, p=0.0)
    assert torch.allclose(to_tensor(image), expected, atol=1e-6)
    lit = to_tensor.apply(image, brightness=1.15, contrast=0.85)
    changed = F.adjust_contrast(F.adjust_brightness(F.to_dtype(F.to_image(image), torch.float32, scale=True), 1.15), 0.85)
    assert torch.allclose(lit, F.normalize(changed, MEAN, STD), atol=1e-5)


def _within_binomial(count: int, draws: int, p: float) -> bool:
    """``count`` successes of ``draws`` is within 4 standard deviations of probability ``p``."""
    return abs(count - draws * p) <= 4 * math.sqrt(draws * p * (1 - p))


def test_random_warp_draws_each_op_independently_with_probability_p_and_within_its_range():
    warp, draws, p = RandomWarp(max_rotate=10.0, max_zoom=1.2, max_warp=0.2, p=0.3), 4000, 0.3
    torch.manual_seed(0)
    samples = [warp.params(64, 48) for _ in range(draws)]
    angles = [a for a, _, _ in samples if a is not None]
    scales = [s for _, s, _ in samples if s is not None]
    corners = [c for _, _, c in samples if c is not None]
    for count in (len(angles), len(scales), len(corners)):
        assert _within_binomial(count, draws, p)
    # each op has its own draw (fastai's p per transform): two happen together p * p of the time
    assert _within_binomial(sum(a is not None and s is not None for a, s, _ in samples), draws, p * p)
    assert _within_binomial(sum(all(v is None for v in sample) for sample in samples), draws, (1 - p) ** 3)
    # rotation uniform in [-10, 10] degrees, zoom in [1, 1.2] (in, never out)
    assert -10 <= min(angles) < -9.5 and 9.5 < max(angles) <= 10
    assert abs(np.mean(angles)) <= 4 * (20 / math.sqrt(12)) / math.sqrt(len(angles))
    assert 1.0 <= min(scales) < 1.01 and 1.19 < max(scales) <= 1.2
    # each corner moves inwards by 0 to 0.2 of half the side: whole pixels 0..6 across, 0..4 down
    inward = np.array([[c[0][0], c[0][1], 63 - c[1][0], c[1][1], 63 - c[2][0], 47 - c[2][1], c[3][0], 47 - c[3][1]]
                       for c in corners])
    assert set(inward[:, 0::2].flatten()) == set(range(7)) and set(inward[:, 1::2].flatten()) == set(range(5))


def test_random_warp_probability_bounds_and_switched_off_ops():
    torch.manual_seed(0)
    assert all(v is not None for _ in range(50) for v in RandomWarp(10, 1.2, 0.2, p=1.0).params(32, 32))
    assert all(v is None for _ in range(50) for v in RandomWarp(10, 1.2, 0.2, p=0.0).params(32, 32))
    # a zero limit switches its op off whatever p is
    assert all(RandomWarp(0, 1.0, 0.0, p=1.0).params(32, 32) == (None, None, None) for _ in range(50))
