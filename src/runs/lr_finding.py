"""fastai's learning-rate finder on a built run (``python -m src.lr_find``, and ``src.train lr_find=true``).

Builds the data and model as ``src.train`` does (:mod:`src.runs.builder`), freezes them as in the
chosen stage, runs the range test, writes ``lr_find.png`` (also to TensorBoard) and prints the
suggestions. ``src.train`` with ``lr_find=true`` calls :func:`suggest_lr` on its own built run.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig
from torch.utils.tensorboard import SummaryWriter

from src.data.datamodule import ImageFolderDataModule
from src.models.classifier_module import ImageClassifierModule
from src.optim.lr_finder import lr_find_on_batches
from src.optim.stages import LearningRate
from src.runs.builder import build_datamodule, build_module
from src.core.hardware import device_type
from src.visualize.figure_files import save_figure
from src.visualize.lr_find_plot import plot_lr_find

log = logging.getLogger(__name__)


def lr_find(cfg: DictConfig, stage_index: int = 0) -> dict[str, float]:
    """Build the run of ``cfg`` and run the finder for its stage ``stage_index``; return the suggestions."""
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg.data)
    module = build_module(cfg, **datamodule.model_fields())
    return suggest_lr(module, datamodule, cfg, stage_index)


def suggest_lr(
    module: ImageClassifierModule, datamodule: ImageFolderDataModule, cfg: DictConfig, stage_index: int = 0
) -> dict[str, float]:
    """The range test on a built run (``cfg.lr_finder`` settings) frozen as in stage ``stage_index``;
    return the suggestions (valley, minimum, steep).

    Writes ``lr_find.png`` and a TensorBoard figure under ``cfg.paths.output_dir``.
    """
    output_dir = Path(cfg.paths.output_dir)
    datamodule.setup("fit")
    settings = cfg.lr_finder
    device = device_type(cfg.trainer.accelerator)
    result = lr_find_on_batches(
        module, datamodule.model_batches(datamodule.train_dataloader(), torch.device(device), train=True),
        stage_index=stage_index, device=device,
        start_lr=settings.start_lr, end_lr=settings.end_lr, num_steps=settings.num_steps,
        beta=settings.beta, stop_factor=settings.stop_factor,
    )
    suggestions = result.suggestions()
    figure = plot_lr_find(result, suggestions)
    with SummaryWriter(str(output_dir / "tensorboard")) as writer:
        writer.add_figure("lr_find", figure, close=False)
    save_figure(figure, output_dir / "lr_find.png")
    log.info("lr_find suggestions for stage %d: %s", stage_index,
             ", ".join(f"{k}={v:.2e}" for k, v in suggestions.items()))
    return suggestions


def with_max_lr(lr: LearningRate, new_max: float) -> LearningRate:
    """A stage's ``lr`` with its largest rate set to ``new_max``, keeping the form (and a pair's ratio)."""
    if isinstance(lr, (int, float)):
        return new_max
    values = [float(v) for v in lr]
    if len(values) == 1:
        return [new_max]
    low, high = values
    return [low * new_max / high, new_max]
