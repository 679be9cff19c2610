"""The test images of a split-folders layout (``root/test/<class>/``), evaluated at the end of training."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L

from src.data.datamodule import ImageFolderDataModule

log = logging.getLogger(__name__)


def evaluate_test_subset(trainer: L.Trainer, module: L.LightningModule, datamodule: ImageFolderDataModule,
                         best_checkpoint: str | None) -> dict[str, Any] | None:
    """Lightning's ``trainer.test`` on the test images with the weights of ``best_checkpoint`` (the
    lowest ``val/error_rate``, as fastai's test set is scored with the model kept); its ``test/*``
    metrics, the checkpoint and the image count. None when there are no test images."""
    images = len(datamodule.datasets.get("test") or [])
    if not images:
        return None
    if not best_checkpoint:
        log.warning("no best checkpoint (callbacks.model_checkpoint is off or never saved): the %d test images "
                    "are evaluated with the final weights", images)
    [results] = trainer.test(module, datamodule=datamodule, ckpt_path=best_checkpoint or None, verbose=False)
    metrics = {key: float(value) for key, value in results.items() if key.startswith("test/")}
    log.info("test images (%d): %s with %s", images, ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items())),
             best_checkpoint or "the final weights")
    return {**metrics, "images": images, "checkpoint": best_checkpoint or "final weights"}
