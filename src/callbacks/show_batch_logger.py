"""Log a labelled grid of augmented training images to TensorBoard when training starts."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from typing_extensions import override

from src.callbacks.tracker_figures import datamodule_to_draw, log_figures
from src.core.random_state import derived_seed
from src.visualize.show_batch import show_batch_figure


class ShowBatch(L.Callback):
    """fastai's ``data.show_batch()``: what the model really sees, augmentation included.

    Draws ``count`` random training images (seeded, so runs are comparable) through the training
    transform: each picture is the augmentation that image gets in epoch 0 (``ImageDataset`` seeds
    it), and drawing it takes nothing from the global generators, so the run trains the same with
    or without this callback.
    """

    def __init__(self, count: int = 16, seed: int = 0) -> None:
        self.count = count
        self.seed = seed

    @override
    @rank_zero_only
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = datamodule_to_draw(trainer)
        if datamodule is None:
            return
        dataset = datamodule.datasets["train"]
        generator = torch.Generator().manual_seed(self.seed)
        picks = torch.randperm(len(dataset), generator=generator)[: self.count].tolist()
        images, labels = zip(*(dataset[i] for i in picks))
        figure = show_batch_figure(
            # augment.on=device: drawn from this callback's seed, as the worker path draws epoch 0's
            datamodule.model_input(torch.stack(images), train=True, draw_seed=derived_seed(self.seed)), labels,
            datamodule.classes, datamodule.mean, datamodule.std,
            title="augmented training images",
        )
        log_figures(trainer, {"train/augmented_batch": figure})
