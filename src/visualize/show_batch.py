"""fastai's ``show_batch``: a labelled grid of (augmented) images, de-normalised to look right."""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # files only: training machines have no display
import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure


def denormalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Undo ``Normalize(mean, std)`` on (N, 3, H, W) and clamp to [0, 1] for display."""
    mean_t = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return (images * std_t + mean_t).clamp(0, 1)


def show_batch_figure(
    images: torch.Tensor,
    labels: Sequence[int],
    classes: Sequence[str],
    mean: Sequence[float],
    std: Sequence[float],
    title: str = "",
) -> Figure:
    """A square-ish grid of normalised ``images`` with their class names as titles."""
    count = len(images)
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    pictures = denormalize(images.detach().float().cpu(), mean, std).permute(0, 2, 3, 1).numpy()
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, picture, label in zip(axes.flat, pictures, labels):
        ax.imshow(picture)
        ax.set_title(classes[int(label)], fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
