"""From the last feature map to class scores: concat pooling, then the head's layers."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from src.models.components.classifier import ImageClassifier
from src.models.components.head import AdaptiveConcatPool2d


def pooling_figure(net: ImageClassifier, image: torch.Tensor, classes: Sequence[str], top: int = 5) -> Figure:
    """The final feature map (channel mean), the pooled vector's max and average halves, the top scores."""
    with torch.no_grad():
        features = net.eval().forward_features(image.unsqueeze(0))
        pooled = net.head[0](features).flatten(1)[0]
        probabilities = net.forward_head(features)[0].softmax(0)
    c, h, w = features.shape[1:]
    concat = isinstance(net.head[0], AdaptiveConcatPool2d)
    halves = {"max pool": pooled[:c], "average pool": pooled[c:]} if concat else {"average pool": pooled}
    fig, axes = plt.subplots(1, 2 + len(halves), figsize=(4.2 * (2 + len(halves)), 3.8),
                             gridspec_kw={"width_ratios": [1] + [1.4] * len(halves) + [1.2]})
    axes[0].imshow(features[0].mean(0).numpy(), cmap="magma")
    axes[0].set_title(f"final feature map\n{c} x {h} x {w} (mean of {c} channels)", fontsize=9)
    axes[0].axis("off")
    if h * w == 1:  # one colour whatever its value: say so
        axes[0].text(0, 0, f"1 x 1: pooling only\ncollects it ({features[0].mean():.2f})", ha="center",
                     va="center", color="white", fontsize=9)
    for ax, (name, values) in zip(axes[1:], halves.items()):
        ax.bar(range(c), values.numpy(), width=1.0)
        ax.set_title(f"{name}: {c} numbers, one per channel\n({'first' if name == 'max pool' else 'second'} "
                     f"half of the {pooled.numel()}-vector)" if concat else f"{name}: {c} numbers", fontsize=9)
        ax.set_xlabel("channel", fontsize=8)
    top = min(top, len(classes))
    values, indices = probabilities.topk(top)
    names = [classes[i] for i in indices.tolist()][::-1]
    axes[-1].barh(names, values.numpy()[::-1])
    axes[-1].set_xlim(0, 1)
    axes[-1].set_title(f"top {top} of {len(classes)} class probabilities\n(head: {pooled.numel()} -> "
                       f"{len(classes)} scores, softmax)", fontsize=9)
    axes[-1].tick_params(labelsize=8)
    for value, y in zip(values.numpy()[::-1], range(top)):
        axes[-1].text(min(value + 0.02, 0.8), y, f"{value:.2f}", va="center", fontsize=8)
    fig.tight_layout()
    return fig
