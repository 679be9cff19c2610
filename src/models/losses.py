"""The training loss: label smoothing and class weights on top of cross-entropy or BCE.

Single-label: torch's ``nn.CrossEntropyLoss(weight=, label_smoothing=)``, which takes class indices
and the soft (batch, classes) targets of MixUp/CutMix alike (fastai's
``LabelSmoothingCrossEntropy(eps=0.1)`` is ``label_smoothing=0.1``).

Multi-label: each class is its own yes/no problem, so label smoothing is torch's two-class
smoothing of each cell: a target ``y`` becomes ``y * (1 - eps) + eps / 2`` (1 -> 0.95, 0 -> 0.05 at
eps=0.1) before BCE-with-logits. torch's BCE has no smoothing argument, hence the small module
below. Class weights are refused for multi-label (inverse frequency of what: images with the
class, or cells?); write the weights out as ``model.class_weights=[...]`` only for single-label.

Validation, the test subset and ``src.evaluate`` use the plain loss, :func:`plain_loss` (no smoothing, no
weights): ``val/loss`` stays the cross-entropy of the predictions, comparable between runs and equal to
``src.evaluate``'s loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from src.core.problems import Problem, is_number, raise_problems

CLASS_WEIGHTS = ("balanced",)


def label_smoothing_problems(value: Any, key: str = "model.label_smoothing") -> list[Problem]:
    if is_number(value) and 0 <= value < 1:
        return []
    return [Problem(key, value, "a number with 0 <= x < 1 (the share of each target spread over the classes)",
                    f"{key}=0.1 is fastai's LabelSmoothingCrossEntropy, 0 turns it off")]


def class_weights_problems(value: Any, num_classes: int | None = None, multi_label: bool = False,
                           key: str = "model.class_weights") -> list[Problem]:
    """``null``, ``balanced`` or a list of positive weights, one per class (single-label only)."""
    if value is None:
        return []
    if multi_label:
        return [Problem(key, value, "null for a multi-label model (class weights are single-label only)",
                        f"remove {key}; for rare labels lower model.threshold")]
    if value in CLASS_WEIGHTS:
        return []
    is_list = isinstance(value, Sequence) and not isinstance(value, str)
    if not is_list or not all(is_number(w) and w > 0 for w in value):
        return [Problem(key, value, "null, balanced (inverse class frequency) or a list of positive numbers",
                        f"{key}=balanced weights each class by n_images / (n_classes * its image count)")]
    if num_classes is not None and len(value) != num_classes:
        return [Problem(key, list(value), f"one weight per class ({num_classes})",
                        f"{key}=balanced computes them from the training images")]
    return []


def balanced_class_weights(class_counts: Sequence[int]) -> list[float]:
    """Inverse-frequency weights ``n / (k * count_c)`` (scikit-learn's ``balanced``): a class with the
    average count weighs 1, the loss of a class with half the images counts double."""
    total, k = sum(class_counts), len(class_counts)
    empty = [i for i, count in enumerate(class_counts) if count <= 0]
    if empty:
        raise ValueError(f"model.class_weights=balanced: class(es) {empty} have no training images, so their "
                         "inverse frequency is infinite; add images or leave model.class_weights=null")
    return [total / (k * count) for count in class_counts]


def resolve_class_weights(value: Any, class_counts: Sequence[int], multi_label: bool) -> list[float] | None:
    """``model.class_weights`` as the module takes them: None, or one weight per class
    (``balanced`` from the training set's ``class_counts``, which the DataModule gives)."""
    raise_problems(class_weights_problems(value, len(class_counts), multi_label))
    if value is None:
        return None
    if value == "balanced":
        return balanced_class_weights(class_counts)
    return [float(w) for w in value]


class SmoothedBCEWithLogitsLoss(nn.Module):
    """BCE-with-logits on targets smoothed cell by cell: ``y * (1 - eps) + eps / 2``."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        targets = targets.float() * (1 - self.label_smoothing) + self.label_smoothing / 2
        return F.binary_cross_entropy_with_logits(logits, targets)


def plain_loss(*, multi_label: bool, reduction: str = "mean") -> nn.Module:
    """The loss validation reports: cross-entropy of the logits (or of log-probabilities, the same value:
    log-softmax leaves them as they are) or BCE-with-logits of each class's log-odds. ``reduction="none"``
    gives each image's (each cell's, multi-label) loss."""
    return nn.BCEWithLogitsLoss(reduction=reduction) if multi_label else nn.CrossEntropyLoss(reduction=reduction)


def training_loss(*, multi_label: bool, label_smoothing: float = 0.0,
                  class_weights: Sequence[float] | None = None) -> nn.Module:
    """The loss ``training_step`` minimises (see the module doc)."""
    if multi_label:
        if class_weights is not None:
            raise ValueError(str(class_weights_problems(list(class_weights), multi_label=True)[0]))
        return SmoothedBCEWithLogitsLoss(label_smoothing)
    if isinstance(class_weights, str):  # 'balanced' needs the data's class counts: build_run resolves it
        raise ValueError(f"class_weights={class_weights!r}: the module takes one weight per class; build the run "
                         "with src.runs.builder.build_run, which computes them from the DataModule's class_counts")
    weight = None if class_weights is None else torch.tensor([float(w) for w in class_weights])
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)
