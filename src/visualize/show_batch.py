"""fastai's ``show_batch``: a labelled grid of (augmented) images, de-normalised to look right."""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure, SubFigure


def denormalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Undo ``Normalize(mean, std)`` on (N, 3, H, W) and clamp to [0, 1] for display."""
    mean_t = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return (images * std_t + mean_t).clamp(0, 1)


def label_title(label: int | torch.Tensor, classes: Sequence[str]) -> str:
    """A class index's name, or the names of a multi-hot vector's classes (multi-label), for a title."""
    label = torch.as_tensor(label)
    if label.ndim == 0:
        return classes[int(label)]
    return " ".join(classes[i] for i in label.nonzero().flatten().tolist()) or "(no label)"


def _draw_grid(
    figure: Figure | SubFigure, pictures: np.ndarray, labels: Sequence[int | torch.Tensor], classes: Sequence[str]
) -> None:
    count = len(pictures)
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    axes = figure.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, picture, label in zip(axes.flat, pictures, labels):
        ax.imshow(picture)
        ax.set_title(label_title(label, classes), fontsize=9)


def show_batch_figure(
    images: torch.Tensor,
    labels: Sequence[int],
    classes: Sequence[str],
    mean: Sequence[float],
    std: Sequence[float],
    title: str = "",
) -> Figure:
    """A square-ish grid of normalised ``images`` with their class names as titles."""
    cols = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    pictures = denormalize(images.detach().float().cpu(), mean, std).permute(0, 2, 3, 1).numpy()
    fig = plt.figure(figsize=(2.2 * cols, 2.4 * rows))
    _draw_grid(fig, pictures, labels, classes)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def normalized_and_denormalized_figure(
    images: torch.Tensor, labels: Sequence[int], classes: Sequence[str], mean: Sequence[float], std: Sequence[float]
) -> Figure:
    """The same batch twice: as the model gets it (normalised, clipped to [0, 1]) and de-normalised."""
    cols = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    images = images.detach().float().cpu()
    fig = plt.figure(figsize=(2 * 2.2 * cols, 2.4 * rows + 0.6), layout="constrained")
    left, right = fig.subfigures(1, 2, wspace=0.04)
    _draw_grid(left, images.clamp(0, 1).permute(0, 2, 3, 1).numpy(), labels, classes)
    left.suptitle(f"as the model gets it: normalised batch {' x '.join(map(str, images.shape))}\n"
                  "(values shown clipped to [0, 1])")
    _draw_grid(right, denormalize(images, mean, std).permute(0, 2, 3, 1).numpy(), labels, classes)
    right.suptitle("the same batch de-normalised\n(x * std + mean): what the photos look like")
    return fig
