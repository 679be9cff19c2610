"""fastai's ``ClassificationInterpretation``: metrics, confusion matrix, most confused, top losses.

Built from the log-probabilities and labels of every evaluated image, so the same object serves
``src.evaluate`` and the end-of-training TensorBoard figures. :class:`MultiLabelInterpretation`
gives a multi-label model's metrics; the confusion matrix, most confused pairs and top losses
are single-label pictures (one actual and one predicted class per image) and have no counterpart.

The macro averages are over the classes the evaluated images have (support > 0), scikit-learn's
``recall_score(..., labels=present, average="macro")``: a class with no image has no recall to average
(nothing to find), and counting it as 0 would lower balanced accuracy for a folder that lacks it.
torchmetrics' ``average="macro"`` leaves out only the classes absent from both labels and predictions,
so one prediction of a class without images would count it as 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
    multilabel_accuracy,
    multilabel_f1_score,
    multilabel_precision,
    multilabel_recall,
)

from src.models.losses import plain_loss
from src.models.multi_label_metrics import FBETA_BETA, fbeta_per_sample

TOP_K = 5


def per_class_metrics(classes: list[str], per_class: dict[str, torch.Tensor], support: torch.Tensor,
                      macro: tuple[str, ...]) -> dict:
    """``per_class`` (each class's figures and support), the ``macro_<name>`` average of each name in
    ``macro`` over the classes with support, and ``classes_without_images`` (those without)."""
    present = support > 0
    metrics: dict = {f"macro_{name}": float(per_class[name][present].mean()) for name in macro}
    metrics["classes_without_images"] = [c for c, has_images in zip(classes, present.tolist()) if not has_images]
    metrics["per_class"] = {
        c: {**{name: float(values[i]) for name, values in per_class.items()}, "support": int(support[i])}
        for i, c in enumerate(classes)
    }
    return metrics


@dataclass
class Interpretation:
    """Per-image results: ``log_probabilities`` (N, classes) and ``targets`` (N,) label indices."""

    classes: list[str]
    log_probabilities: torch.Tensor
    targets: torch.Tensor

    def __post_init__(self) -> None:
        if len(self.log_probabilities) != len(self.targets):
            raise ValueError(f"{len(self.log_probabilities)} predictions for {len(self.targets)} labels")
        if len(self.targets) == 0:
            raise ValueError("nothing to interpret: no images were evaluated")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def probabilities(self) -> torch.Tensor:
        return self.log_probabilities.exp()

    @property
    def predictions(self) -> torch.Tensor:
        return self.log_probabilities.argmax(dim=1)

    def predicted_indices(self) -> list[int]:
        """Each image's predicted class index."""
        return self.predictions.tolist()

    @property
    def losses(self) -> torch.Tensor:
        """Cross-entropy of each image, validation's loss."""
        return plain_loss(multi_label=False, reduction="none")(self.log_probabilities, self.targets)

    def metrics(self) -> dict[str, float | dict[str, dict[str, float]]]:
        """error_rate (fastai's: 1 - micro accuracy), accuracy, loss, top-5 accuracy, per-class P/R/F1,
        and their macro averages ``macro_f1`` and ``macro_recall`` (balanced accuracy) over the classes
        with images (see the module doc): on imbalanced data the micro error rate hides the small
        classes, the macro figures weigh every class alike."""
        preds, targets, n = self.log_probabilities, self.targets, self.num_classes
        accuracy = float(multiclass_accuracy(preds, targets, num_classes=n, average="micro"))
        metrics: dict = {"error_rate": 1.0 - accuracy, "accuracy": accuracy, "loss": float(self.losses.mean())}
        if n > TOP_K:
            metrics[f"top{TOP_K}_accuracy"] = float(
                multiclass_accuracy(preds, targets, num_classes=n, average="micro", top_k=TOP_K)
            )
        per_class = {
            name: fn(preds, targets, num_classes=n, average=None, zero_division=0.0)
            for name, fn in [("precision", multiclass_precision), ("recall", multiclass_recall), ("f1", multiclass_f1_score)]
        }
        support = torch.bincount(targets, minlength=n)
        return {**metrics, **per_class_metrics(self.classes, per_class, support, macro=("f1", "recall"))}

    def confusion_matrix(self) -> torch.Tensor:
        """Counts (classes, classes): rows are the actual classes, columns the predicted ones."""
        return multiclass_confusion_matrix(self.log_probabilities, self.targets, num_classes=self.num_classes)

    def confusion_matrix_rows(self) -> list[list[object]]:
        """The whole confusion matrix as CSV rows (evaluate's ``confusion_matrix.csv``): the header
        ``actual/predicted, class, ...`` and one row of counts per actual class."""
        return [["actual/predicted", *self.classes],
                *([name, *row] for name, row in zip(self.classes, self.confusion_matrix().tolist()))]

    def most_confused(self, min_count: int = 1) -> list[tuple[str, str, int]]:
        """(actual, predicted, count) of the off-diagonal cells, most frequent first."""
        matrix = self.confusion_matrix()
        cells = [
            (self.classes[a], self.classes[p], int(matrix[a, p]))
            for a in range(self.num_classes)
            for p in range(self.num_classes)
            if a != p and matrix[a, p] >= min_count
        ]
        return sorted(cells, key=lambda cell: (-cell[2], cell[0], cell[1]))

    def top_losses(self, k: int) -> list[int]:
        """Indices of the ``k`` images with the highest loss, highest first."""
        return self.losses.topk(min(k, len(self.targets))).indices.tolist()


# Written to metrics.json and the log instead of the single-label pictures.
MULTI_LABEL_SKIPPED = ("confusion matrix, most confused and top losses skipped: they need one actual and one "
                       "predicted class per image, and a multi-label image has sets of them")


@dataclass
class MultiLabelInterpretation:
    """Per-image results of a multi-label model: ``logits`` (N, classes), each class's log-odds (the
    network's logits, or with TTA those of the blended probabilities), and multi-hot ``targets``
    (N, classes); a class is predicted above ``threshold``. Log-odds, not probabilities: a sigmoid that
    rounds to 1.0 in float32 would lose the cell's loss, which BCE-with-logits keeps, as training does."""

    classes: list[str]
    logits: torch.Tensor
    targets: torch.Tensor
    threshold: float

    def __post_init__(self) -> None:
        if self.logits.shape != self.targets.shape:
            raise ValueError(f"predictions {tuple(self.logits.shape)} and multi-hot labels "
                             f"{tuple(self.targets.shape)} differ in shape")
        if len(self.targets) == 0:
            raise ValueError("nothing to interpret: no images were evaluated")

    @property
    def probabilities(self) -> torch.Tensor:
        return self.logits.sigmoid()

    @property
    def predicted(self) -> torch.Tensor:
        """(N, classes) booleans: the classes above the threshold."""
        return self.probabilities > self.threshold

    def predicted_indices(self) -> list[tuple[int, ...]]:
        """Each image's predicted class indices (those above the threshold), in index order."""
        return [tuple(row.nonzero().flatten().tolist()) for row in self.predicted]

    @property
    def losses(self) -> torch.Tensor:
        """Binary cross-entropy of each image (mean over its classes), validation's loss: the mean over
        images is the mean over every image x class cell, as ``val/loss``."""
        return plain_loss(multi_label=True, reduction="none")(self.logits, self.targets.float()).mean(dim=1)

    def metrics(self) -> dict[str, float | dict[str, dict[str, float]]]:
        """fastai's accuracy_thresh (``accuracy``; ``error_rate`` is 1 minus it), F-beta (``fbeta``, samples
        average), loss, per-class precision/recall/F1/support at the threshold, and ``macro_f1`` over the
        classes some image carries (see the module doc)."""
        probs, targets, n = self.probabilities, self.targets.long(), len(self.classes)
        accuracy = float(multilabel_accuracy(probs, targets, num_labels=n, threshold=self.threshold, average="micro"))
        metrics: dict = {
            "error_rate": 1.0 - accuracy,
            "accuracy": accuracy,
            "fbeta": float(fbeta_per_sample(probs, targets, self.threshold).mean()),
            "fbeta_beta": FBETA_BETA,
            "loss": float(self.losses.mean()),
            "threshold": self.threshold,
        }
        per_class = {
            name: fn(probs, targets, num_labels=n, threshold=self.threshold, average=None, zero_division=0.0)
            for name, fn in [("precision", multilabel_precision), ("recall", multilabel_recall),
                             ("f1", multilabel_f1_score)]
        }
        return {**metrics, **per_class_metrics(self.classes, per_class, targets.sum(dim=0), macro=("f1",))}
