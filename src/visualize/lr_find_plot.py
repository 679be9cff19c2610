"""fastai's ``plot_lr_find``: the learning-rate finder's curve with its suggestions marked."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from src.optim.lr_finder import LRFinderResult


def plot_lr_find(result: LRFinderResult, suggestions: dict[str, float]) -> plt.Figure:
    """fastai's ``plot_lr_find``: smoothed loss against the learning rate (log x), suggestions marked."""
    keep = max(len(result.lrs) - 5, 2)  # fastai's skip_end=5: the last points shoot up
    lrs, losses = result.lrs[:keep], result.losses[:keep]
    figure, ax = plt.subplots(figsize=(6, 4))
    ax.plot(lrs, losses)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss (smoothed)")
    for (name, lr), color in zip(suggestions.items(), ["tab:red", "tab:green", "tab:orange"]):
        loss = float(np.interp(np.log(lr), np.log(lrs), losses))
        ax.plot([lr], [loss], "o", color=color, label=f"{name}: {lr:.2e}")
    ax.legend()
    figure.tight_layout()
    return figure
