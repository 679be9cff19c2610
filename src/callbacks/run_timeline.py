"""Where a whole run's wall clock goes: written by ``src.bench``'s whole-run measurement.

:class:`TrainThroughput` measures a window inside each epoch; this records the run's phases end
to end (time to the first training step, each training epoch, each validation, the checkpoint
writes after it, what follows the last epoch), the images each phase loaded, and the CPU time the loader worker processes used,
and writes them as ``timeline.json`` for the bench to read (it is not in the default callbacks).
Times are ``time.perf_counter()`` values of this process; the bench subtracts its own start.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import lightning as L
from typing_extensions import override

from src.core.hardware import synchronize


def children_cpu_seconds() -> float:
    """User + system CPU seconds of this process's living child processes (the loader workers)."""
    import psutil  # only the bench measures this

    total = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.NoSuchProcess:  # a worker that has just exited
            continue
        total += times.user + times.system
    return total


class RunTimeline(L.Callback):
    """Records the run's phases and writes them to ``path`` when the fit ends (see the module docstring)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.events: dict[str, Any] = {"train_epochs": [], "epoch_images": [], "validations": [], "checkpoints": [],
                                       "train_images": 0, "val_images": 0}
        self._epoch_start = self._val_start = self._val_end = None

    @override
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.events["fit_start"] = time.perf_counter()

    @override
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = time.perf_counter()
        self.events["epoch_images"].append(0)

    @override
    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self.events.setdefault("first_step", time.perf_counter())

    @override
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.events["train_images"] += len(batch[1])
        self.events["epoch_images"][-1] += len(batch[1])
        if batch_idx + 1 == trainer.num_training_batches:
            synchronize(pl_module.device)
            self.events["train_epochs"].append([self._epoch_start, time.perf_counter()])

    @override
    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._val_start = time.perf_counter()

    @override
    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        self.events["val_images"] += len(batch[1])

    @override
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        synchronize(pl_module.device)
        self.events["validations"].append([self._val_start, time.perf_counter(), bool(trainer.sanity_checking)])

    @override
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning runs the checkpoint callbacks' on_validation_end after every other callback's: from here to
        # the epoch's end is what writing best.ckpt and last.ckpt took.
        if not trainer.sanity_checking:
            self._val_end = time.perf_counter()

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._val_end is not None:
            self.events["checkpoints"].append([self._val_end, time.perf_counter()])
            self._val_end = None

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Here, not at on_fit_end: the fit loop's teardown in between stops the persistent workers,
        # and their CPU time goes with them.
        self.events["worker_cpu_s"] = children_cpu_seconds()
        self.events["train_end"] = time.perf_counter()

    @override
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.events["fit_end"] = time.perf_counter()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.events))
