"""Training speed of every epoch: steady-state images/second, and the epoch's wall time split
into training and validation, logged as ``perf/*`` (TensorBoard, metrics.json, ``make bench``).

Lightning's ``ThroughputMonitor`` logs a moving window of every batch and synchronises the GPU at
each; this measures one window per epoch instead, after ``warmup_steps`` batches (loader workers
starting, cuDNN autotuning, compilation), synchronising only at its two ends.
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L

from src.core.hardware import synchronize


class TrainThroughput(L.Callback):
    """Logs per epoch: ``perf/train_images_per_s`` (all processes together, batches after the
    first ``warmup_steps``), ``perf/train_epoch_s`` (the training batches, warm-up included,
    validation excluded) and ``perf/val_s`` (the validation run at the epoch's end)."""

    def __init__(self, warmup_steps: int = 3) -> None:
        if warmup_steps < 0:
            raise ValueError(f"callbacks.throughput.warmup_steps must be >= 0, got {warmup_steps}")
        self.warmup_steps = warmup_steps
        self._reset()

    def _reset(self) -> None:
        self.epoch_start = self.window_start = self.last_batch_end = None
        self.window_images = 0
        self.val_start = None
        self.val_seconds = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reset()
        self.epoch_start = time.perf_counter()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if batch_idx == self.warmup_steps:
            synchronize(pl_module.device)
            self.window_start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if batch_idx + 1 == trainer.num_training_batches:  # the window's end: wait for the GPU once
            synchronize(pl_module.device)
        self.last_batch_end = time.perf_counter()
        if self.window_start is not None:
            self.window_images += len(batch[0])

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.val_start = time.perf_counter()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and self.val_start is not None:
            synchronize(pl_module.device)
            self.val_seconds = time.perf_counter() - self.val_start

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.last_batch_end is None:
            return
        metrics = {"perf/train_epoch_s": self.last_batch_end - self.epoch_start}
        if self.window_images and self.last_batch_end > self.window_start:
            # Every process trains on its own batches: the mean over the processes (sync_dist below) of
            # world_size times each one's rate is the sum of their rates, the run's.
            metrics["perf/train_images_per_s"] = (
                self.window_images * trainer.world_size / (self.last_batch_end - self.window_start)
            )
        if self.val_seconds is not None:
            metrics["perf/val_s"] = self.val_seconds
        # The processes step together (DDP waits for every gradient), so their times differ little: the mean.
        pl_module.log_dict(metrics, on_epoch=True, sync_dist=True)
