"""Figures of an :class:`~src.inference.interpretation.Interpretation`: confusion matrix and top losses."""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from torch.utils.data import Dataset

from src.inference.interpretation import Interpretation
from src.visualize.show_batch import denormalize


def confusion_matrix_figure(matrix: torch.Tensor, classes: Sequence[str], normalize: bool = False) -> Figure:
    """fastai's ``plot_confusion_matrix``: counts (or row fractions if ``normalize``) in each cell."""
    values = matrix.double()
    if normalize:
        values = values / values.sum(dim=1, keepdim=True).clamp_min(1)
    side = max(4.0, 0.6 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(side, side))
    ax.imshow(values.numpy(), cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=90)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title("confusion matrix" + (" (fraction of each actual class)" if normalize else ""))
    threshold = float(values.max()) / 2
    for a in range(len(classes)):
        for p in range(len(classes)):
            v = float(values[a, p])
            ax.text(p, a, f"{v:.2f}" if normalize else f"{int(v)}", ha="center", va="center",
                    fontsize=8, color="white" if v > threshold else "black")
    fig.tight_layout()
    return fig


def top_losses_figure(
    interpretation: Interpretation,
    dataset: Dataset,
    k: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> Figure:
    """fastai's ``plot_top_losses``: the images (as the model saw them) with the highest loss.

    Titles read ``prediction/actual/loss/probability of the actual class``. ``dataset[i]`` must
    return the normalised image of the ``i``-th evaluated sample first.
    """
    indices = interpretation.top_losses(k)
    cols = math.ceil(math.sqrt(len(indices)))
    rows = math.ceil(len(indices) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.8 * cols, 3.0 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    classes, losses, probs = interpretation.classes, interpretation.losses, interpretation.probabilities
    predictions, targets = interpretation.predictions, interpretation.targets
    for ax, i in zip(axes.flat, indices):
        image = denormalize(dataset[i][0].unsqueeze(0).float(), mean, std)[0]
        ax.imshow(image.permute(1, 2, 0).numpy())
        actual = int(targets[i])
        ax.set_title(f"{classes[int(predictions[i])]}/{classes[actual]}\n"
                     f"{float(losses[i]):.2f}/{float(probs[i, actual]):.2f}", fontsize=8)
    fig.suptitle("prediction/actual/loss/probability")
    fig.tight_layout()
    return fig
