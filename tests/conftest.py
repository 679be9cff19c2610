"""Shared fixtures: small real image folders on disk and the real Hydra config, shrunk."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = PROJECT_ROOT / "conf"
SAMPLE = PROJECT_ROOT / "data" / "fashion-mnist-sample"


def copy_sample(dest: Path, classes: int = 3, per_class: int = 12) -> Path:
    """Copy ``per_class`` real Fashion-MNIST PNGs of the first ``classes`` classes into ``dest``."""
    for folder in sorted(p for p in SAMPLE.iterdir() if p.is_dir())[:classes]:
        (dest / folder.name).mkdir(parents=True)
        for image in sorted(folder.iterdir())[:per_class]:
            shutil.copy(image, dest / folder.name / image.name)
    return dest


@pytest.fixture
def image_root(tmp_path: Path) -> Path:
    """Three classes of twelve real 28x28 product photos."""
    return copy_sample(tmp_path / "images")


def compose_config(
    overrides: list[str] | None = None, config_name: str = "train", return_hydra_config: bool = False
) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides or [], return_hydra_config=return_hydra_config)


# The smallest run that still exercises every part: ResNet18 at 32 px, random weights,
# two stages (frozen body, then everything), a few batches each.
TINY_OVERRIDES = [
    "model.backbone.name=resnet18",
    "model.backbone.weights=null",
    "data.size=32",
    "data.batch_size=8",
    "data.num_workers=0",
    "schedule.stages=[{name:head,epochs:1,lr:[3e-3],freeze_to:-1},{name:all,epochs:1,lr:[1e-6,1e-4],freeze_to:0}]",
    "trainer.accelerator=cpu",
    "trainer.limit_train_batches=3",
    "trainer.log_every_n_steps=1",
    "~callbacks.progress_bar",
    "~callbacks.model_summary",
]


@pytest.fixture
def tiny_cfg(tmp_path: Path, image_root: Path) -> DictConfig:
    cfg = compose_config([*TINY_OVERRIDES, f"data.root={image_root}"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
    return cfg
