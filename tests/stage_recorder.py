"""A callback for tests of the stages: what every training step and validation batch saw, one JSON line each.

Added to a run through its config (``+callbacks.recorder._target_=tests.stage_recorder.StageRecorder``),
as users add callbacks, so the run under test is built by the real entry point.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from src.optim.param_groups import BATCH_NORMS


def read_records(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


class StageRecorder(Callback):
    """Per training step: epoch, image batch shape, each param group's lr and beta1, and per layer group
    whether its weights (BatchNorm left out) train. Per validation batch: epoch and shape.
    ``stop_after_epoch``: stop the run (as a kill between epochs would) after that epoch."""

    def __init__(self, path: str, stop_after_epoch: int | None = None) -> None:
        self.path = Path(path)
        self.stop_after_epoch = stop_after_epoch

    def _write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        groups = trainer.optimizers[0].param_groups
        trains = []
        for layer_group in pl_module.net.layer_groups():
            weights = [p for m in layer_group.modules() if not isinstance(m, BATCH_NORMS)
                       for p in m.parameters(recurse=False)]
            trains.append(all(p.requires_grad for p in weights))
        self._write({"kind": "train", "epoch": trainer.current_epoch, "step": trainer.global_step,
                     "shape": list(batch[0].shape), "lrs": [g["lr"] for g in groups],
                     "layer_groups": [g["layer_group"] for g in groups], "beta1": groups[0]["betas"][0],
                     "trains": trains})

    def on_validation_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                                  batch_idx: int, dataloader_idx: int = 0) -> None:
        if not trainer.sanity_checking:
            self._write({"kind": "valid", "epoch": trainer.current_epoch, "shape": list(batch[0].shape)})

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.stop_after_epoch is not None and trainer.current_epoch >= self.stop_after_epoch:
            trainer.should_stop = True
