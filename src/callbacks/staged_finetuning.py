"""Freeze and unfreeze layer groups as the run moves through its stages (fastai's freeze_to)."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BaseFinetuning
from torch.optim import Optimizer
from typing_extensions import override

from src.optim.freezing import freeze_layer_groups

log = logging.getLogger(__name__)


def count_parameters(module: L.LightningModule | Any, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


class StagedFineTuning(BaseFinetuning):
    """Applies each stage's ``freeze_to`` (:func:`~src.optim.freezing.freeze_layer_groups`) at the start of its epochs.

    Reads the stages from ``pl_module.schedule`` and the layer groups from
    ``pl_module.net.layer_groups()``. A frozen group keeps its BatchNorm layers training when the
    schedule's ``train_bn`` is true, as fastai does. The frozen set is derived from the epoch, so a
    run resumed from a checkpoint is frozen exactly as the uninterrupted run was.

    When a new stage starts, the optimizer's moments are cleared: fastai builds a fresh optimizer
    on every ``freeze``/``unfreeze``, and the second stage's tiny learning rates should not be
    applied with moments gathered at the first stage's large ones.
    """

    def __init__(self) -> None:
        super().__init__()
        self.stage_index: int | None = None

    @override
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "stage_index": self.stage_index}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.stage_index = state_dict.get("stage_index")
        super().load_state_dict(state_dict)

    @staticmethod
    def _apply_stage(pl_module: L.LightningModule, index: int) -> None:
        schedule = pl_module.schedule
        freeze_layer_groups(pl_module.net.layer_groups(), schedule.stages[index].freeze_to, schedule.train_bn)

    @override
    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        self._apply_stage(pl_module, self.stage_index or 0)

    @override
    def finetune_function(self, pl_module: L.LightningModule, epoch: int, optimizer: Optimizer) -> None:
        schedule = pl_module.schedule
        index = schedule.stage_index_at_epoch(epoch)
        self._apply_stage(pl_module, index)
        if index == self.stage_index:
            return
        if self.stage_index is not None:
            optimizer.state.clear()
        self.stage_index = index
        stage = schedule.stages[index]
        log.info(
            "stage %d/%d %s: epochs %d-%d, freeze_to=%d, lr=%s, %s of %s parameters trainable",
            index + 1, len(schedule.stages), stage.name, epoch + 1, epoch + stage.epochs, stage.freeze_to,
            stage.lr, f"{count_parameters(pl_module, trainable_only=True):,}", f"{count_parameters(pl_module):,}",
        )
