"""fastai's ``ClassificationInterpretation``: metrics, confusion matrix, most confused, top losses.

Built from the log-probabilities and labels of every evaluated image, so the same object serves
``src.evaluate`` and the end-of-training TensorBoard figures.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)

TOP_K = 5


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

    @property
    def losses(self) -> torch.Tensor:
        """Cross-entropy of each image, as the training loss."""
        return F.nll_loss(self.log_probabilities, self.targets, reduction="none")

    def metrics(self) -> dict[str, float | dict[str, dict[str, float]]]:
        """error_rate (fastai's: 1 - micro accuracy), accuracy, loss, top-5 accuracy, per-class P/R/F1."""
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
        metrics["per_class"] = {
            c: {**{name: float(values[i]) for name, values in per_class.items()}, "support": int(support[i])}
            for i, c in enumerate(self.classes)
        }
        return metrics

    def confusion_matrix(self) -> torch.Tensor:
        """Counts (classes, classes): rows are the actual classes, columns the predicted ones."""
        return multiclass_confusion_matrix(self.log_probabilities, self.targets, num_classes=self.num_classes)

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
