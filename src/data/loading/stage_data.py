"""Progressive resizing (fastai's trick: small images first, then larger): each stage's image size and batch size.

A stage of ``schedule.stages`` may set ``size`` and ``batch_size``; the DataModule builds each
epoch's training and validation loaders at that epoch's stage's values (``data.size`` and
``data.batch_size`` where the stage sets none), so validation runs at the size the stage trains at.
The stage comes from the trainer's epoch when a loader is built, so a resumed run (whose epoch
is restored before its loaders are rebuilt) gets its stage's size. Lightning rebuilds the loaders
when ``trainer.reload_dataloaders_every_n_epochs`` says so: 1 in a run whose stages resize (set
by :meth:`src.runs.builder.Run.trainer`), which also restarts the loader workers every epoch.

The last stage must train at ``data.size``: evaluate, predict, export and serve read the model's
input size from it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from src.core.problems import Problem

# (size, batch_size) of an epoch's stage; None where the stage keeps the data's.
EpochData = Callable[[int], tuple[int | None, int | None]]


def last_stage_size_problems(stages: Sequence[Any], data_size: Any) -> list[Problem]:
    """The last stage's ``size`` must be ``data.size`` (or unset): the trained model's input size."""
    if not stages or not hasattr(stages[-1], "get"):
        return []
    last = len(stages) - 1
    size = stages[-1].get("size")
    if size is None or size == data_size:
        return []
    return [Problem(f"schedule.stages[{last}].size", size, f"null or data.size ({data_size}): the last stage trains "
                    "at the size evaluate, predict, export and serve use",
                    f"set data.size={size} and leave the last stage's size out; give earlier stages smaller sizes")]


class StageSizes:
    """Each epoch's image size and batch size: those of its stage (``epoch_data``, a
    :class:`~src.optim.stages.StageSchedule`'s ``data_at_epoch``), the data's own where the stage sets none."""

    def __init__(self, epoch_data: EpochData, data_size: int, data_batch_size: int) -> None:
        self.epoch_data = epoch_data
        self.data_size, self.data_batch_size = data_size, data_batch_size

    def at_epoch(self, epoch: int) -> tuple[int, int]:
        size, batch_size = self.epoch_data(epoch)
        return size or self.data_size, batch_size or self.data_batch_size
