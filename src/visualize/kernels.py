"""The convolution demo: classic 3x3 kernels over the image, and the model's own first-layer filters."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

# fastai lesson 6 ("pets more"): k = tensor([[0.,-5/3,1],[-5/3,-5/3,1],[1.,1,1]]).expand(1,3,3,3)/6,
# one output channel summed over the three colour channels: bright where the bottom-right is
# brighter than the top-left.
SEED_EDGE = torch.tensor([[0.0, -5 / 3, 1], [-5 / 3, -5 / 3, 1], [1.0, 1, 1]]) / 6
KERNELS: dict[str, torch.Tensor] = {
    "seed edge (fastai)": SEED_EDGE,
    "Sobel vertical edges": torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]]),
    "sharpen": torch.tensor([[0.0, -1, 0], [-1, 5, -1], [0, -1, 0]]),
    "blur (box)": torch.full((3, 3), 1 / 9),
}


def convolve(picture: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """``F.conv2d`` of a (3, H, W) picture with a 3x3 kernel on every channel, summed (the seed's way).

    The kernel is expanded to (1, 3, 3, 3) as in the seed, so the result is one (H, W) channel.
    """
    weight = kernel.expand(1, 3, 3, 3)
    return F.conv2d(picture.unsqueeze(0), weight, padding=1)[0, 0]


def filter_grid(weight: torch.Tensor) -> torch.Tensor:
    """(N, 3, k, k) first-layer filters scaled one by one to [0, 1] for display as colour images."""
    low = weight.amin(dim=(1, 2, 3), keepdim=True)
    high = weight.amax(dim=(1, 2, 3), keepdim=True)
    return (weight - low) / (high - low).clamp_min(1e-12)


def mosaic(pictures: torch.Tensor, gap: int = 1) -> torch.Tensor:
    """(N, 3, h, w) pictures in one square-ish (3, H, W) image, ``gap`` white pixels between them.

    One image instead of N small axes: drawing 64 axes costs seconds, one costs milliseconds.
    """
    n, channels, h, w = pictures.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    sheet = torch.ones(channels, rows * (h + gap) + gap, cols * (w + gap) + gap)
    for i, picture in enumerate(pictures):
        row, col = divmod(i, cols)
        top, left = gap + row * (h + gap), gap + col * (w + gap)
        sheet[:, top:top + h, left:left + w] = picture
    return sheet


def kernels_figure(picture: torch.Tensor, first_conv_weight: torch.Tensor, label: str = "") -> Figure:
    """Top: the picture and its convolutions, each kernel's numbers below it. Bottom: conv1's filters.

    ``picture`` is the de-normalised (3, H, W) image in [0, 1]; ``first_conv_weight`` is (N, 3, k, k).
    """
    fig = plt.figure(figsize=(12, 11.5), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1, 1.25])
    axes = top.subplots(2, len(KERNELS) + 1)
    for ax in axes.flat:
        ax.axis("off")
    axes[0, 0].imshow(picture.permute(1, 2, 0).numpy())
    axes[0, 0].set_title(f"image {label}\n{' x '.join(map(str, picture.shape))}".strip(), fontsize=9)
    for col, (name, kernel) in enumerate(KERNELS.items(), start=1):
        out = convolve(picture, kernel)
        axes[0, col].imshow(out.numpy(), cmap="gray")
        axes[0, col].set_title(f"{name}\n1 x {out.shape[0]} x {out.shape[1]}", fontsize=9)
        axes[1, col].imshow(kernel.numpy(), cmap="coolwarm", vmin=-kernel.abs().max(), vmax=kernel.abs().max())
        for (i, j), value in zip(((i, j) for i in range(3) for j in range(3)), kernel.flatten().tolist()):
            axes[1, col].text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8)
    axes[1, 0].text(0.5, 0.5, "3 x 3 kernel\n(x 3 channels)\nF.conv2d(image, k,\npadding=1)", ha="center",
                    va="center", fontsize=9, transform=axes[1, 0].transAxes)
    top.suptitle("Classic 3x3 kernels convolved over the image", fontsize=11)

    filters = filter_grid(first_conv_weight.detach().float().cpu())
    n, _, kh, kw = filters.shape
    ax = bottom.subplots()
    ax.imshow(mosaic(filters).permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.axis("off")
    bottom.suptitle(f"The model's first-layer filters: {n} x 3 x {kh} x {kw} (each scaled to its own range)",
                    fontsize=11)
    return fig
