"""Log the confusion matrix and the top losses of the validation set to TensorBoard after training."""

from __future__ import annotations

import logging

import lightning as L
from lightning.pytorch.utilities import rank_zero_only
from typing_extensions import override

from src.callbacks.tensorboard_figures import datamodule_to_draw, log_figures
from src.inference.predictor import run_loader
from src.inference.interpretation import MULTI_LABEL_SKIPPED, Interpretation
from src.visualize.interpretation_figures import confusion_matrix_figure, top_losses_figure

log = logging.getLogger(__name__)


class InterpretationFigures(L.Callback):
    """fastai's ``ClassificationInterpretation`` of the final model, as ``src.evaluate`` draws it
    (single-label models only: a multi-label model gets a note in the log instead).

    Args:
        top_losses: images in the top-losses grid.
        normalize: confusion matrix as fractions of each actual class instead of counts.
    """

    def __init__(self, top_losses: int = 9, normalize: bool = False) -> None:
        self.top_losses = top_losses
        self.normalize = normalize

    @override
    @rank_zero_only
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = datamodule_to_draw(trainer)
        if datamodule is None or not datamodule.datasets.get("valid"):
            return
        if getattr(pl_module, "multi_label", False):
            log.info("multi-label model: %s", MULTI_LABEL_SKIPPED)
            return
        was_training = pl_module.training
        pl_module.eval()
        # The module and the precision plugin's context, as in validation (memory format, autocast).
        with trainer.precision_plugin.forward_context():
            log_probs, targets = run_loader(pl_module, datamodule.val_dataloader(), pl_module.device)
        pl_module.train(was_training)
        interpretation = Interpretation(datamodule.classes, log_probs, targets)
        log_figures(trainer, {
            "val/confusion_matrix": confusion_matrix_figure(
                interpretation.confusion_matrix(), datamodule.classes, self.normalize
            ),
            "val/top_losses": top_losses_figure(
                interpretation, datamodule.datasets["valid"], self.top_losses, datamodule.mean, datamodule.std
            ),
        })
