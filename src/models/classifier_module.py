"""The LightningModule: loss, metrics, optimizer groups and the staged one-cycle schedule.

It knows nothing of files, batch sizes or workers (the DataModule's) and nothing of freezing
(the :class:`~src.callbacks.staged_finetuning.StagedFineTuning` callback's).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics import MeanMetric, MinMetric
from torchmetrics.classification import MulticlassAccuracy, MultilabelAccuracy

from src.core.problems import Problem, raise_problems
from src.models.batch_mixing import BatchMixing, batch_mixing_problems
from src.core.hardware import resolve_channels_last
from src.models.components.classifier import ImageClassifier
from src.models.losses import class_weights_problems, label_smoothing_problems, plain_loss, training_loss
from src.models.multi_label_metrics import DEFAULT_THRESHOLD, check_threshold, fbeta_per_sample
from src.optim.one_cycle import StagedOneCycleLR
from src.optim.param_groups import layer_group_param_groups
from src.optim.stages import StageSchedule, layer_group_lrs


def compile_problems(compile: Any) -> list[Problem]:
    """``model.compile`` must be true, false or ``auto``."""
    if isinstance(compile, bool) or compile == "auto":
        return []
    return [Problem("model.compile", compile, "true, false or auto",
                    "auto compiles a stage where the time it saves is more than the compile costs (docs/performance.md)")]


def sanity_check_problems(images: Any) -> list[Problem]:
    """``model.sanity_check_images`` must be a whole number of at least 1, or null (every image)."""
    if images is None or (isinstance(images, int) and not isinstance(images, bool) and images >= 1):
        return []
    return [Problem("model.sanity_check_images", images, "a whole number >= 1, or null",
                    "2 (the default) runs the validation code on 2 images of each sanity-check batch; null on all")]


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite: training cannot recover, so it stops, naming where."""


class ImageClassifierModule(L.LightningModule):
    """Single- or multi-label image classification with fastai's training recipe.

    Single-label: cross-entropy, ``val/accuracy`` and ``val/error_rate`` (fastai's ``error_rate``).
    Multi-label (fastai's planet): BCE-with-logits, ``val/accuracy`` is fastai's ``accuracy_thresh``
    (the fraction of image x class cells right at ``threshold``), ``val/error_rate`` its complement
    (so checkpoints keep monitoring it), and ``val/fbeta`` the per-image F2 averaged over images.

    Args:
        backbone: the body (``num_features`` and ``layer_groups()``), a ``ResNetBody`` or ``TimmBody``.
        head: keyword arguments of :func:`~src.models.components.head.create_head` (hidden
            widths, dropout, concat_pool); the class count comes from ``classes``.
        optimizer: a partial optimizer taking ``params`` (AdamW with fastai's betas by default).
        schedule: the training stages and one-cycle settings.
        classes: class names in label order, stored in checkpoints.
        bn_weight_decay: apply weight decay to BatchNorm and bias parameters too (fastai's ``bn_wd``).
        run_config: the resolved run configuration as YAML text, stored in checkpoints so the
            model can be rebuilt without the data folder or the original overrides.
        multi_label: several labels per image (set from the data, like ``classes``).
        threshold: multi-label only: a class is predicted when its probability is above it.
        channels_last: run the network in NHWC memory format (``auto``: with bf16/fp16 precision,
            see :mod:`src.core.hardware`).
        compile: ``auto``: ``torch.compile`` the training forward of each stage where it pays;
            ``true``: in every stage; ``false``: never. The
            :class:`~src.callbacks.compile_when_it_pays.CompileWhenItPays` callback decides, after a
            stage's first eager steps, and calls :meth:`use_compiled_network`. The weights and
            checkpoint keys stay those of the plain network.
        label_smoothing: of the training loss (fastai's ``LabelSmoothingCrossEntropy`` is 0.1), see
            :mod:`src.models.losses`; validation reports the plain loss.
        mixup: MixUp/CutMix of training batches (:class:`~src.models.batch_mixing.BatchMixing`'s
            keyword arguments; None or zero alphas: off).
        class_weights: one training-loss weight per class, or None (``balanced`` is resolved from
            the DataModule's class counts by :func:`src.runs.builder.build_run`).
        sanity_check_images: the images of each sanity-check batch that go through the network (None:
            all). Lightning's sanity check runs validation on two batches before training, to find a
            bug in it before the first epoch; a few images per batch run the same code.
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: dict[str, Any],
        optimizer: Callable[..., torch.optim.Optimizer],
        schedule: StageSchedule,
        classes: Sequence[str],
        bn_weight_decay: bool = True,
        run_config: str | None = None,
        multi_label: bool = False,
        threshold: float = DEFAULT_THRESHOLD,
        channels_last: bool | str = False,
        compile: bool | str = False,
        label_smoothing: float = 0.0,
        mixup: dict[str, float] | None = None,
        class_weights: Sequence[float] | None = None,
        sanity_check_images: int | None = 2,
    ) -> None:
        super().__init__()
        check_threshold("model.threshold", threshold)
        raise_problems(compile_problems(compile) + sanity_check_problems(sanity_check_images))
        raise_problems(self.problems(label_smoothing, mixup, class_weights, len(classes), multi_label))
        self.save_hyperparameters(ignore=["backbone", "optimizer", "schedule"], logger=False)
        self.net = ImageClassifier(backbone, num_classes=len(classes), **head)
        self.optimizer_factory = optimizer
        schedule.check_freeze_targets(len(self.net.layer_groups()))  # fails at build, before any data is read
        self.schedule = schedule
        num_classes = len(classes)
        self.train_loss = MeanMetric()
        self.val_loss = MeanMetric()
        self.criterion = plain_loss(multi_label=multi_label)
        if multi_label:
            # fastai's accuracy_thresh: (sigmoid > thresh) == target over every image x class cell (micro).
            self.val_accuracy = MultilabelAccuracy(num_labels=num_classes, threshold=threshold, average="micro")
            self.val_fbeta = MeanMetric()
        else:
            # fastai's error_rate is 1 - accuracy over all images (micro average).
            self.val_accuracy = MulticlassAccuracy(num_classes=num_classes, average="micro")
        # Smoothing and class weights apply to training only; self.criterion (validation, test) stays plain.
        self.train_criterion = training_loss(multi_label=multi_label, label_smoothing=label_smoothing,
                                             class_weights=class_weights)
        self.batch_mixing = BatchMixing(num_classes, **(mixup or {}))
        self.val_error_rate_best = MinMetric()
        self.val_error_rate_best.persistent(True)  # kept in checkpoints, so a resumed run knows its best
        self.memory_format = torch.contiguous_format  # set from channels_last once the precision is known
        # `auto`'s compiled training forward: kept in a tuple, not as an attribute, so that it is not registered
        # as a submodule (its parameters are self.net's; the state dict keeps the plain keys)
        self._compiled_training_net: tuple[nn.Module, ...] = ()
        self._training_compiled = False

    @staticmethod
    def problems(label_smoothing: Any, mixup: Any, class_weights: Any, num_classes: int | None = None,
                 multi_label: bool = False) -> list[Problem]:
        """The problems of the regularisation settings (``model.label_smoothing``, ``model.mixup``,
        ``model.class_weights``); the constructor raises them, the config check collects them."""
        return (label_smoothing_problems(label_smoothing) + batch_mixing_problems(mixup)
                + class_weights_problems(class_weights, num_classes, multi_label))

    def configure_model(self) -> None:
        # Here, not in __init__: `auto` depends on the trainer's precision, known only now.
        if resolve_channels_last(self.hparams.channels_last, self.trainer.precision):
            self.memory_format = torch.channels_last
            self.net.to(memory_format=self.memory_format)

    @property
    def classes(self) -> list[str]:
        return list(self.hparams.classes)

    @property
    def multi_label(self) -> bool:
        return bool(self.hparams.multi_label)

    def use_compiled_network(self, compiled: bool) -> None:
        """Train with the compiled network (``torch.compile(self.net)``, made the first time) or the plain one;
        validation, the lr finder and inference always run the plain one."""
        if compiled and not self._compiled_training_net:
            self._compiled_training_net = (torch.compile(self.net),)
        self._training_compiled = compiled

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        net = self._compiled_training_net[0] if self._training_compiled and self.training else self.net
        return net(images.contiguous(memory_format=self.memory_format))

    def _accuracy_inputs(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Probabilities, not logits: torchmetrics only applies the sigmoid when a value is outside [0, 1].
        return (logits.sigmoid(), labels.long()) if self.multi_label else (logits, labels)

    def on_train_start(self) -> None:
        # The sanity check's validation batches must not count towards the first epoch's metrics. The best
        # error rate is not reset: the sanity check never updates it, and a resumed run restored it from
        # the checkpoint (resetting it here made TensorBoard's val/error_rate_best restart after a resume).
        self.val_loss.reset()
        self.val_accuracy.reset()
        if self.multi_label:
            self.val_fbeta.reset()

    def on_train_epoch_start(self) -> None:
        # A stage with its own batch size (progressive resizing) has its own number of steps per
        # epoch, counted on its loader once it is built: before the stage's first step.
        index = self.schedule.stage_index_at_epoch(self.current_epoch)
        if self.schedule.resizes and self.current_epoch == self.schedule.first_epoch_of(index):
            steps = self.schedule.stages[index].epochs * self.steps_per_epoch()
            self.lr_schedulers().set_stage_steps(index, steps)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        if self.batch_mixing.enabled:  # soft targets: train/loss is the loss against the mixed labels
            images, labels = self.batch_mixing(images, labels)
        loss = self.train_criterion(self(images), labels)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(self._non_finite_message(loss, batch_idx))
        self.train_loss(loss)
        self.log("train/loss", self.train_loss, on_step=True, on_epoch=True, prog_bar=True)
        return loss

    def _non_finite_message(self, loss: torch.Tensor, batch_idx: int) -> str:
        index = self.schedule.stage_index_at_epoch(self.current_epoch)
        stage = self.schedule.stages[index]
        lrs = ", ".join(f"{g['lr']:.3g}" for g in self.optimizers().optimizer.param_groups) if self._trainer else "?"
        return (
            f"the training loss is {loss.item()} at step {self.global_step} (epoch {self.current_epoch}, batch "
            f"{batch_idx}) of stage {index} {stage.name!r}, learning rates [{lrs}]; stopped before this step "
            "changed the weights. The checkpoints of earlier epochs are kept (RUN/checkpoints/last.ckpt). "
            f"Lower schedule.stages[{index}].lr, or look for images or labels with bad values, then resume "
            "with ckpt_path=RUN/checkpoints/last.ckpt"
        )

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, labels = batch
        if self.trainer.sanity_checking and self.hparams.sanity_check_images is not None:
            images, labels = images[:self.hparams.sanity_check_images], labels[:self.hparams.sanity_check_images]
        logits = self(images)
        self.val_loss(self.criterion(logits, labels), weight=len(labels))
        self.val_accuracy(*self._accuracy_inputs(logits, labels))
        self.log("val/loss", self.val_loss, on_epoch=True, prog_bar=True)
        self.log("val/accuracy", self.val_accuracy, on_epoch=True)
        if self.multi_label:
            self.val_fbeta(fbeta_per_sample(logits.sigmoid(), labels, self.hparams.threshold))
            self.log("val/fbeta", self.val_fbeta, on_epoch=True)

    def on_validation_epoch_end(self) -> None:
        # torchmetrics' compute() already gathers every DDP process's counts: the value is the same on every
        # process, so sync_dist's mean leaves it as it is (and every process's ModelCheckpoint monitors it).
        error_rate = 1.0 - self.val_accuracy.compute()
        self.log("val/error_rate", error_rate, prog_bar=True, sync_dist=True)
        if not self.trainer.sanity_checking:
            self.val_error_rate_best(error_rate)
            self.log("val/error_rate_best", self.val_error_rate_best.compute(), sync_dist=True)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, labels = batch
        logits = self(images)
        self.log("test/loss", self.criterion(logits, labels), on_epoch=True)
        if self.multi_label:
            wrong = (logits.sigmoid() > self.hparams.threshold) != labels.bool()
        else:
            wrong = logits.argmax(1) != labels
        self.log("test/error_rate", wrong.float().mean(), on_epoch=True)

    def steps_per_epoch(self) -> int:
        trainer = self.trainer
        trainer.estimated_stepping_batches  # makes Lightning set up the training loader first
        return max(1, math.ceil(trainer.num_training_batches / trainer.accumulate_grad_batches))

    def layer_group_optimizer(self) -> torch.optim.Optimizer:
        """The run's optimizer over every layer group's parameters, frozen ones included (see
        :func:`~src.optim.param_groups.layer_group_param_groups`): training, the lr finder and the bench use it."""
        groups = layer_group_param_groups(self.net.layer_groups(), self.hparams.bn_weight_decay)
        return self.optimizer_factory(params=groups)

    def configure_optimizers(self) -> dict[str, Any]:
        layer_groups = self.net.layer_groups()
        optimizer = self.layer_group_optimizer()
        steps = self.steps_per_epoch()
        scheduler = StagedOneCycleLR(
            optimizer,
            stage_steps=[stage.epochs * steps for stage in self.schedule.stages],
            stage_lrs=[layer_group_lrs(stage.lr, len(layer_groups)) for stage in self.schedule.stages],
            div_factor=self.schedule.div_factor,
            final_div_factor=self.schedule.final_div_factor,
            pct_start=self.schedule.pct_start,
            moms=self.schedule.moms,
            stage_settings=[stage.one_cycle_overrides() for stage in self.schedule.stages],
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
