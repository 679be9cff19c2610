"""Figures of an :class:`~src.inference.interpretation.Interpretation`: confusion matrix and top losses."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from torch.utils.data import Dataset

from src.inference.interpretation import Interpretation
from src.visualize.show_batch import denormalize

log = logging.getLogger(__name__)


# Classes drawn in a confusion matrix at most: 0.6 inch a class, 20 inches (2000 pixels at 100 dpi) and
# 900 annotated cells at 30, where the labels and counts are still readable. 300 classes drawn whole
# would be 18200 pixels square (331 MP) and take minutes; above this, the classes in the most
# confusions are drawn and the whole matrix is kept as numbers (evaluate's confusion_matrix.csv).
MAX_DRAWN_CLASSES = 30


def most_confused_classes(matrix: torch.Tensor, limit: int) -> list[int]:
    """The indices of the ``limit`` classes involved in the most confusions (off-diagonal counts of their
    row and column: as the actual class and as the prediction), in class order; ties go to the first class."""
    off_diagonal = matrix.double().clone()
    off_diagonal.fill_diagonal_(0)
    involved = off_diagonal.sum(dim=0) + off_diagonal.sum(dim=1)
    ranked = sorted(range(len(involved)), key=lambda c: (-float(involved[c]), c))
    return sorted(ranked[:limit])


def confusion_matrix_figure(matrix: torch.Tensor, classes: Sequence[str], normalize: bool = False,
                            max_classes: int = MAX_DRAWN_CLASSES) -> Figure:
    """fastai's ``plot_confusion_matrix``: counts (or row fractions if ``normalize``) in each cell.

    With more than ``max_classes`` classes only the part of the matrix between the ``max_classes``
    classes in the most confusions (:func:`most_confused_classes`) is drawn, and the title says so.
    """
    values = matrix.double()
    if normalize:  # fractions of each actual class's images, the whole row counted
        values = values / values.sum(dim=1, keepdim=True).clamp_min(1)
    title = "confusion matrix" + (" (fraction of each actual class)" if normalize else "")
    if len(classes) > max_classes:
        shown = most_confused_classes(matrix, max_classes)
        values = values[shown][:, shown]
        title += f"\npart: the {len(shown)} of {len(classes)} classes in the most confusions"
        log.info("drawing the confusion matrix's part between the %d of %d classes in the most confusions",
                 len(shown), len(classes))
        classes = [classes[c] for c in shown]
    else:
        log.info("drawing the confusion matrix of %d classes", len(classes))
    side = max(4.0, 0.6 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(side, side))
    ax.imshow(values.numpy(), cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=90)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(title)
    threshold = float(values.max()) / 2
    for a in range(len(classes)):
        for p in range(len(classes)):
            v = float(values[a, p])
            ax.text(p, a, f"{v:.2f}" if normalize else f"{int(v)}", ha="center", va="center",
                    fontsize=8, color="white" if v > threshold else "black")
    fig.tight_layout()
    return fig


TOP_LOSS_TITLE_KEY = "predicted / actual class, loss, probability the model gave the actual class"


def top_loss_title(predicted: str, actual: str, loss: float, probability_of_actual: float) -> str:
    """One top-loss picture's title; the top losses of ``src.evaluate`` and ``src.inspect`` share it."""
    return f"pred {predicted} / actual {actual}\nloss {loss:.2f}, p(actual) {probability_of_actual:.2f}"


def top_losses_figure(
    interpretation: Interpretation,
    dataset: Dataset,
    k: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> Figure:
    """fastai's ``plot_top_losses``: the images (as the model saw them) with the highest loss.

    Titles read as :data:`TOP_LOSS_TITLE_KEY` says. ``dataset[i]`` must
    return the normalised image of the ``i``-th evaluated sample first.
    """
    indices = interpretation.top_losses(k)
    log.info("drawing the %d image(s) with the highest loss", len(indices))
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
        ax.set_title(top_loss_title(classes[int(predictions[i])], classes[actual], float(losses[i]),
                                    float(probs[i, actual])), fontsize=8)
    fig.suptitle(TOP_LOSS_TITLE_KEY, fontsize=9)
    fig.tight_layout()
    return fig
