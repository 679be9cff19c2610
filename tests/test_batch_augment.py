"""data.augment.on=device: the batch augmentation's draws, its resampling and its normalisation
against the worker path's (src/data/transforms/fused_augment.py, src/data/transforms/presets.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from src.core.problems import ConfigError
from src.data.transforms.batch_augment import BatchAugment, BatchParams, perspective_grid
from src.data.transforms.fused_augment import LightingToTensor, RandomWarp, warp_matrix
from src.data.files.image_reader import load_rgb
from src.data.placement.choice import DataPlacement
from src.data.transforms.presets import EvalCropTransform, EvalTransform, TrainCropTransform
from tests.conftest import SAMPLE

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
NO_NORMALISATION = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}


def _params(matrices: list[np.ndarray], brightness=None, contrast=None) -> BatchParams:
    n = len(matrices)
    nan = torch.full((n,), math.nan, dtype=torch.float64)
    return BatchParams(
        flip=torch.zeros(n, dtype=torch.bool), angle=nan, scale=nan, warped=torch.zeros(n, dtype=torch.bool),
        matrix=torch.from_numpy(np.stack(matrices)),
        brightness=nan if brightness is None else torch.tensor(brightness, dtype=torch.float64),
        contrast=nan if contrast is None else torch.tensor(contrast, dtype=torch.float64),
    )


def _random_uint8(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_a_flip_gives_the_mirrored_pixels_exactly():
    image = _random_uint8((1, 3, 5, 7))  # odd, non-square: a wrong centre or axis shows
    flip = np.array([[-1.0, 0, 7], [0, 1, 0], [0, 0, 1]])
    out = BatchAugment(**NO_NORMALISATION).apply(image, _params([flip]))
    assert torch.allclose(out, image.flip(-1).float() / 255, atol=1e-6)


def test_a_quarter_turn_gives_the_rotated_pixels_exactly():
    image = _random_uint8((1, 3, 8, 8))
    out = BatchAugment(**NO_NORMALISATION).apply(image, _params([warp_matrix(8, 8, angle=90.0)]))
    # warp_matrix maps output -> input: the input's right column becomes the output's top row (counter-clockwise)
    assert torch.allclose(out, torch.rot90(image, 1, dims=(-2, -1)).float() / 255, atol=1e-5)


def test_the_identity_leaves_the_batch_as_the_eval_normalisation():
    image = _random_uint8((2, 3, 6, 6))
    augment = BatchAugment(MEAN, STD)
    out = augment.apply(image, _params([np.eye(3), np.eye(3)]))
    assert torch.allclose(out, augment.normalize(image), atol=1e-5)


def test_a_random_warp_resamples_the_points_pil_resamples():
    """The worker path applies the same homography with PIL: the two agree inside the image."""
    pixels = load_rgb(next((SAMPLE / "bag").iterdir())).resize((48, 48))
    torch.manual_seed(5)
    warp = RandomWarp(10.0, 1.1, 0.2, p=1.0)
    angle, scale, corners = warp.params(48, 48)
    matrix = warp_matrix(48, 48, angle=angle, scale=scale, corners=corners)
    matrix = matrix / matrix[2, 2]
    by_pil = np.array(pixels.transform((48, 48), Image.Transform.PERSPECTIVE, tuple(matrix.flatten()[:8]),
                                       resample=Image.Resampling.BILINEAR, fillcolor=0), dtype=np.float32) / 255
    image = torch.from_numpy(np.array(pixels)).permute(2, 0, 1).unsqueeze(0)
    on_device = BatchAugment(**NO_NORMALISATION).apply(image, _params([matrix]))[0].permute(1, 2, 0).numpy()
    inside = np.zeros((48, 48), dtype=bool)
    inside[8:40, 8:40] = True  # away from the black corners, where PIL's edge handling differs
    difference = np.abs(by_pil - on_device)[inside]
    assert difference.max() <= 2 / 255 + 1e-6  # PIL rounds to uint8 and uses fixed-point weights
    assert difference.mean() < 0.5 / 255


def test_lighting_matches_the_worker_path_with_the_same_factors():
    pil = load_rgb(next((SAMPLE / "coat").iterdir())).resize((32, 32))
    image = torch.from_numpy(np.array(pil)).permute(2, 0, 1).unsqueeze(0).repeat(3, 1, 1, 1)
    factors = [(1.15, 0.85), (None, 1.2), (0.9, None)]
    out = BatchAugment(MEAN, STD).apply(image, _params(
        [np.eye(3)] * 3, brightness=[math.nan if b is None else b for b, _ in factors],
        contrast=[math.nan if c is None else c for _, c in factors]))
    worker = LightingToTensor(MEAN, STD)
    for i, (b, c) in enumerate(factors):
        assert torch.allclose(out[i], worker.apply(pil, b, c), atol=1e-5)


def test_validation_batches_are_normalised_as_the_eval_transform_does():
    pil = load_rgb(next((SAMPLE / "dress").iterdir()))
    uint8 = EvalCropTransform(32)(pil)
    assert uint8.dtype == torch.uint8 and uint8.shape == (3, 32, 32)
    normalized = BatchAugment(MEAN, STD).normalize(uint8.unsqueeze(0))[0]
    assert torch.allclose(normalized, EvalTransform(32, MEAN, STD)(pil), atol=1e-6)
    assert TrainCropTransform(32)(pil).dtype == torch.uint8


@pytest.mark.parametrize("resize_method", ["crop", "squish", "pad"])
def test_the_uint8_tensor_resize_gives_the_pixels_pil_gives(tmp_path, resize_method):
    """The crop transforms resize the decoded uint8 tensor (4x faster than PIL for a 400 px JPEG):
    the pixels are PIL's to within one grey level, for each resize method, on a photo-sized JPEG."""
    from torchvision.transforms import v2

    from src.data.transforms.presets import _resize

    smooth = np.linspace(0, 255, 400 * 300 * 3).reshape(300, 400, 3)
    noisy = np.clip(smooth + np.random.default_rng(0).normal(0, 40, smooth.shape), 0, 255).astype(np.uint8)
    Image.fromarray(noisy).save(tmp_path / "photo.jpg", quality=90)
    photo = load_rgb(tmp_path / "photo.jpg", min_size=224)
    on_pil = v2.Compose([*_resize(224, resize_method, "bilinear"), v2.CenterCrop(224), v2.PILToTensor()])(photo)
    on_tensor = EvalCropTransform(224, resize_method)(photo)
    assert on_tensor.shape == on_pil.shape == (3, 224, 224) and on_tensor.dtype == torch.uint8
    assert (on_tensor.int() - on_pil.int()).abs().max() <= 1
    assert TrainCropTransform(224, resize_method)(photo).shape == (3, 224, 224)


# 4000 draws: the standard error of a rate near 0.5-0.75 is at most 0.008, so 0.03 is > 3.5 sigma.
DRAWS, RATE_TOLERANCE = 4000, 0.03


def test_sampled_parameters_have_the_worker_paths_ranges_and_probabilities():
    torch.manual_seed(0)
    params = BatchAugment(MEAN, STD).sample(DRAWS, 64, 64)  # data.augment's defaults: fastai's get_transforms
    rates = {
        "flip": params.flip.double().mean(),
        "rotate": (~params.angle.isnan()).double().mean(),
        "zoom": (~params.scale.isnan()).double().mean(),
        "warp": params.warped.double().mean(),
        "brightness": (~params.brightness.isnan()).double().mean(),
        "contrast": (~params.contrast.isnan()).double().mean(),
    }
    expected = {"flip": 0.5, "rotate": 0.75, "zoom": 0.75, "warp": 0.75, "brightness": 0.75, "contrast": 0.75}
    for name, rate in rates.items():
        assert float(rate) == pytest.approx(expected[name], abs=RATE_TOLERANCE), name
    angles = params.angle[~params.angle.isnan()]
    assert angles.min() >= -10 and angles.max() <= 10
    # uniform on [-10, 10]: mean 0 (standard error 0.11), standard deviation 10 / sqrt(3) = 5.77
    assert float(angles.mean()) == pytest.approx(0.0, abs=0.5)
    assert float(angles.std()) == pytest.approx(10 / math.sqrt(3), abs=0.3)
    scales = params.scale[~params.scale.isnan()]
    assert scales.min() >= 1.0 and scales.max() <= 1.1 and float(scales.mean()) == pytest.approx(1.05, abs=0.005)
    for name in ("brightness", "contrast"):
        values = getattr(params, name)
        values = values[~values.isnan()]
        assert values.min() >= 0.8 and values.max() <= 1.2 and float(values.mean()) == pytest.approx(1.0, abs=0.01)
    # An image with no flip and no warp keeps the identity; a flipped one without a warp is the mirror.
    plain = params.angle.isnan() & params.scale.isnan() & ~params.warped
    assert torch.allclose(params.matrix[plain & ~params.flip], torch.eye(3, dtype=torch.float64))
    assert torch.allclose(params.matrix[plain & params.flip][:, 0, 0], torch.tensor(-1.0, dtype=torch.float64))


def test_switched_off_augmentations_are_never_drawn():
    torch.manual_seed(1)
    params = BatchAugment(MEAN, STD, do_flip=False, max_rotate=0, max_zoom=1.0, max_warp=0,
                          max_lighting=0).sample(200, 32, 32)
    assert not params.flip.any() and not params.warped.any()
    assert params.angle.isnan().all() and params.scale.isnan().all() and params.brightness.isnan().all()
    assert torch.allclose(params.matrix, torch.eye(3, dtype=torch.float64).expand(200, 3, 3))


def test_perspective_grid_of_the_identity_samples_pixel_centres():
    grid = perspective_grid(torch.eye(3).unsqueeze(0), 2, 4)
    assert torch.allclose(grid[0, 0, :, 0], torch.tensor([-0.75, -0.25, 0.25, 0.75]))
    assert torch.allclose(grid[0, :, 0, 1], torch.tensor([-0.5, 0.5]))


def test_placement_resolves_auto_and_refuses_gpu_decode_without_cuda():
    assert DataPlacement.resolve("auto", cuda=True).augment_on == "device"
    # without a GPU, auto is the device path: the measured faster one on a CPU (docs/performance.md)
    assert DataPlacement.resolve("auto", cuda=False) == DataPlacement("device", "workers")
    assert DataPlacement.resolve("auto") == DataPlacement("device", "workers")  # torch's answer on this machine
    assert DataPlacement.resolve("device", cuda=False) == DataPlacement("device", "workers")
    with pytest.raises(ConfigError, match=r"data.decode_on='device'.*CUDA.*set data.decode_on=workers"):
        DataPlacement.resolve("device", "device", cuda=False)
    with pytest.raises(ConfigError, match=r"data.augment.on='gpu'.*auto \| workers \| device"):
        DataPlacement.resolve("gpu", cuda=False)
    problems = DataPlacement.problems("workers", "device", cuda=True)
    assert [p.key for p in problems] == ["data.augment.on"]


def test_a_seeded_draw_is_a_function_of_the_seed_and_leaves_the_generators_alone():
    augment = BatchAugment([0.5] * 3, [0.25] * 3)
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    first = augment(images, seed=7)
    assert torch.equal(torch.get_rng_state(), before)  # dropout's draws are not moved by the augmentation
    torch.manual_seed(123)  # another global state: the same draws
    assert torch.equal(augment(images, seed=7), first)
    assert not torch.equal(augment(images, seed=8), first)


def test_the_device_draw_seeds_follow_the_epoch_and_survive_a_checkpoint():
    from src.core.random_state import derived_seed
    from src.data.placement.device_batches import DeviceBatches

    run = DeviceBatches("device", loader_seed=42)
    seeds = [run.next_draw_seed(0, rank=0) for _ in range(3)] + [run.next_draw_seed(1, rank=0) for _ in range(2)]
    assert seeds == [derived_seed(42, 0, 0, b) for b in range(3)] + [derived_seed(42, 0, 1, b) for b in range(2)]
    assert run.next_draw_seed(1, rank=1) == derived_seed(42, 1, 1, 2)  # another rank: other draws
    # a checkpoint from the middle of epoch 1 (after 3 batches): the resumed run goes on with batch 3
    resumed = DeviceBatches("device", loader_seed=42)
    resumed.load_state_dict(run.state_dict())
    assert resumed.next_draw_seed(1, rank=0) == run.next_draw_seed(1, rank=0) == derived_seed(42, 0, 1, 3)
    # a checkpoint from the end of epoch 1: the next epoch starts at its batch 0
    assert resumed.next_draw_seed(2, rank=0) == derived_seed(42, 0, 2, 0)
