"""Log the confusion matrix and the top losses of the validation set to TensorBoard after training."""

from __future__ import annotations

import logging

from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from typing_extensions import override

from src.callbacks.tracker_figures import datamodule_to_draw, log_figures
from src.inference.predictor import run_loader
from src.inference.probabilities import class_log_probabilities
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
        self._last_validation: dict[str, Any] | None = None
        self._collecting: dict[str, Any] | None = None

    # The final model is the one the last validation ran, when nothing trained after it: its outputs
    # are kept (a forward hook, a copy of the log-probabilities per batch) instead of running the
    # whole validation set again at the end.
    @override
    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or getattr(pl_module, "multi_label", False):
            return
        collecting: dict[str, Any] = {"log_probs": [], "targets": [], "step": trainer.global_step}

        def keep(module: torch.nn.Module, args: Any, logits: torch.Tensor) -> None:
            collecting["log_probs"].append(class_log_probabilities(logits.detach().float()).cpu())

        # On the network, not the LightningModule: under DDP Lightning calls validation_step through the
        # module's __call__ (its forward redirection), so a hook there sees validation_step's None.
        collecting["hook"] = pl_module.net.register_forward_hook(keep)
        self._collecting = collecting

    @override
    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if self._collecting is not None:
            self._collecting["targets"].append(torch.as_tensor(batch[1]).cpu())

    @override
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._collecting is not None:
            self._collecting.pop("hook").remove()
            self._last_validation, self._collecting = self._collecting, None

    def _reusable_outputs(self, trainer: L.Trainer, size: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The last validation's (log-probabilities, targets) when they are the final model's over the
        whole validation set (not after more steps, not a limited or DDP-sharded run), else None."""
        last = self._last_validation
        if last is None or last["step"] != trainer.global_step or not last["log_probs"]:
            return None
        log_probs, targets = torch.cat(last["log_probs"]), torch.cat(last["targets"])
        return (log_probs, targets) if len(log_probs) == len(targets) == size else None

    @override
    @rank_zero_only
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = datamodule_to_draw(trainer)
        if datamodule is None or not datamodule.datasets.get("valid"):
            return
        if getattr(pl_module, "multi_label", False):
            log.info("multi-label model: %s", MULTI_LABEL_SKIPPED)
            return
        reused = self._reusable_outputs(trainer, len(datamodule.datasets["valid"]))
        log.info("interpretation of the final model on the %d validation images (%d classes): %s",
                 len(datamodule.datasets["valid"]), datamodule.num_classes,
                 "the last validation's outputs" if reused is not None else "running the validation set again")
        if reused is not None:
            log_probs, targets = reused
        else:
            was_training = pl_module.training
            pl_module.eval()
            # The module and the precision plugin's context, as in validation (memory format, autocast).
            with trainer.precision_plugin.forward_context():
                batches = datamodule.model_batches(datamodule.whole_valid_loader(), pl_module.device, train=False)
                log_probs, targets = run_loader(pl_module, batches, pl_module.device)
            pl_module.train(was_training)
        interpretation = Interpretation(datamodule.classes, log_probs, targets)
        log_figures(trainer, {
            "val/confusion_matrix": confusion_matrix_figure(
                interpretation.confusion_matrix(), datamodule.classes, self.normalize
            ),
            "val/top_losses": top_losses_figure(
                interpretation, datamodule.normalized_items("valid"), self.top_losses, datamodule.mean, datamodule.std
            ),
        })
