"""The data paths through the real entry points: src.train, then src.evaluate on its checkpoint (the worker
path), the device path's uint8 loaders, and the two paths' error rates side by side."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf, open_dict

from src.data.transforms.presets import TrainCropTransform
from src.evaluate import evaluate
from src.runs.builder import build_datamodule
from tests.conftest import IMAGENET_STATS, compose_config, copy_sample, train_tiny_run

# The loss compared below depends on what `auto` picks (bf16 or fp32): run both ways by make test-other-cpu.
pytestmark = pytest.mark.precision


@pytest.fixture(scope="module")
def workers_run(module_tmp_path) -> Path:
    # The device path is what every other tiny run takes (data.augment.on=auto without a GPU), and their
    # evaluate tests reproduce its losses (tests/test_precision.py, tests/test_inference.py): this run is the
    # worker path's.
    return train_tiny_run(module_tmp_path / "workers", ["data.augment.on=workers"])


def test_the_worker_path_trains_and_evaluate_reproduces_its_logged_loss(workers_run, tmp_path):
    logged = json.loads((workers_run / "metrics.json").read_text())
    assert logged["epochs"] == 2 and 0.0 <= logged["final"]["val/error_rate"] <= 1.0
    # recorded as run (the key quoted: YAML 1.1 reads a bare `on` as true)
    assert OmegaConf.load(workers_run / "config.yaml").data.augment["on"] == "workers"
    # evaluate's loader workers off as in the other evaluate tests (TINY_OVERRIDES' reason); the loss compared
    # does not depend on them
    cfg = compose_config([f"ckpt_path={workers_run / 'checkpoints' / 'last.ckpt'}", "data.num_workers=0"],
                         config_name="evaluate")
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
    metrics = evaluate(cfg)  # normalises in its own transform, whatever augment.on the run used
    assert metrics["loss"] == pytest.approx(logged["final"]["val/loss"], abs=1e-4)
    assert metrics["error_rate"] == pytest.approx(logged["final"]["val/error_rate"], abs=1e-4)


def test_the_device_paths_loaders_carry_uint8(image_root, tmp_path):
    cfg = compose_config([f"data.root={image_root}", "data.size=32", "data.batch_size=8", "data.augment.on=device"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
    datamodule = build_datamodule(cfg.data)
    datamodule.setup("fit")
    assert isinstance(datamodule.train_transform, TrainCropTransform)
    images, labels = next(iter(datamodule.train_dataloader()))  # the default loader workers
    assert images.dtype == torch.uint8 and images.shape == (datamodule.batch_size, 3, 32, 32)
    augmented = datamodule.model_input(images, train=True)
    assert augmented.dtype == torch.float32 and augmented.shape == images.shape
    assert not torch.allclose(augmented, datamodule.model_input(images, train=False))  # random, and only in training
    valid_images, _ = next(iter(datamodule.val_dataloader()))
    assert valid_images.dtype == torch.uint8
    item, _ = datamodule.normalized_items("valid")[0]
    assert torch.allclose(item, datamodule.model_input(valid_images[:1], train=False)[0], atol=1e-6)
    assert item.mean().abs() < 3 and torch.isfinite(item).all() and IMAGENET_STATS["mean"] == list(datamodule.mean)


PARITY_SEEDS = (0, 1, 2, 3)
PARITY_PER_CLASS = 160  # 10 classes: 800 training and 800 validation images (data.valid_pct=0.5)
# One run's validation error rate varies from seed to seed by its binomial noise (sqrt(p(1-p)/n): 0.032 on the
# 200 validation images this test had before, 0.016 on 800) plus the training's own (~0.02). Measured on a
# 2-core Intel Xeon with AMX/AVX512-BF16 (2026-12-01), 8 seeds per path, this test's settings: per-run standard
# deviations 0.029 (workers) / 0.016 (device) in bf16-mixed and 0.026 / 0.021 in fp32, means 0.322 / 0.308 and
# 0.326 / 0.312: the standard error of the difference of two 4-seed means is 0.016, and the tolerance is 3.7 of
# them (if the noise is normal, a chance failure about once in 5,000 runs). It catches a broken device path:
# without the training batches' normalisation the device mean is 0.862 against 0.322 (checked once by hand).
# The test's own run there: 0.322 (workers) vs 0.328. The earlier design (3 seeds, 200 validation images) had a
# standard error of 0.031 for the same tolerance, 2 of them: it failed by chance on a CPU without native bf16
# (0.067), although over 10 seeds the paths differed by 0.003 (fp32) and 0.0015 (bf16). The augmented images
# have the same statistics on both paths (mean 0.2825 / 0.2836, std 0.3350 / 0.3363, black fraction 0.304 /
# 0.297 over 800 draws of the sample at 32 px).
PARITY_TOLERANCE = 0.06


@pytest.mark.slow
def test_the_device_path_learns_as_well_as_the_worker_path(tmp_path):
    """Both paths on 10 classes x 160 real images, half for validation, ResNet18 from random weights at 32 px,
    3 epochs one-cycle at 2e-3, seeds 0-3: the mean validation error rates agree within the measured noise."""
    from src.runs.training import train

    root = copy_sample(tmp_path / "images", classes=10, per_class=PARITY_PER_CLASS)
    errors: dict[str, list[float]] = {"workers": [], "device": []}
    for seed in PARITY_SEEDS:
        for path in errors:
            cfg = compose_config(["model.backbone.name=resnet18", "model.backbone.weights=null", "data.size=32",
                                  f"data.root={root}", "data.valid_pct=0.5", f"seed={seed}", f"data.augment.on={path}",
                                  "schedule.stages=[{name:all,epochs:3,lr:2e-3,freeze_to:0}]"])
            with open_dict(cfg):
                cfg.paths.output_dir = str(tmp_path / f"{path}-{seed}")
            errors[path].append(train(cfg)["val/error_rate"])
    mean = {path: sum(values) / len(values) for path, values in errors.items()}
    print("parity:", errors, mean)  # `pytest -s` shows the figures PARITY_TOLERANCE is set from
    assert abs(mean["device"] - mean["workers"]) <= PARITY_TOLERANCE, errors
