"""Feature maps after the stem and after each stage: how stride halves the map as channels grow."""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from torch import nn

from src.models.components.timm_body import TimmBody

# The children of a ResNetBody (torchvision's resnet children before avgpool and fc).
RESNET_BODY_NAMES = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
# The maps worth looking at: the first convolution (after its BN and ReLU), the stem and the stages.
SHOWN = ("relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
SHOWN_TITLES = {"relu": "conv1 (stride 2)", "maxpool": "stem: maxpool (stride 2)"}


def stage_outputs(backbone: nn.Module, image: torch.Tensor) -> dict[str, torch.Tensor]:
    """Run one normalised (3, H, W) image through ``backbone`` and keep the outputs in ``SHOWN``
    (a ResNetBody), or those of the stages timm lists in ``feature_info`` (a TimmBody)."""
    if isinstance(backbone, TimmBody):
        return _hooked_outputs(backbone, backbone.stages(), image)
    if not isinstance(backbone, nn.Sequential) or len(backbone) != len(RESNET_BODY_NAMES):
        raise ValueError(
            f"expected a ResNetBody with {len(RESNET_BODY_NAMES)} children ({', '.join(RESNET_BODY_NAMES)}) "
            f"or a TimmBody, got {type(backbone).__name__}"
        )
    outputs: dict[str, torch.Tensor] = {}
    x = image.unsqueeze(0)
    with torch.no_grad():
        for name, layer in zip(RESNET_BODY_NAMES, backbone):
            x = layer(x)
            if name in SHOWN:
                outputs[name] = x[0].clone()  # ReLUs are in place: keep a copy
    return outputs


def _hooked_outputs(backbone: nn.Module, stages: dict[str, nn.Module], image: torch.Tensor) -> dict[str, torch.Tensor]:
    outputs: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            outputs[name] = output[0].detach().clone()  # later in-place activations must not change it
        return hook

    handles = [module.register_forward_hook(keep(name)) for name, module in stages.items()]
    try:
        with torch.no_grad():
            backbone(image.unsqueeze(0))
    finally:
        for handle in handles:
            handle.remove()
    return {name: outputs[name] for name in stages}


def _label_single_pixel(ax: plt.Axes, fmap: torch.Tensor) -> None:
    """A 1 x 1 map is one colour whatever its value: write the value on it."""
    if fmap.numel() == 1:
        ax.text(0, 0, f"{fmap.item():.2f}", ha="center", va="center", color="white", fontsize=9)


def features_figure(picture: torch.Tensor, outputs: dict[str, torch.Tensor], channels: int = 6) -> Figure:
    """One row per stage: the channel mean and the ``channels`` most active channels, shapes in titles.

    ``picture`` is the de-normalised (3, H, W) input in [0, 1].
    """
    rows = len(outputs) + 1
    cols = channels + 1
    fig, axes = plt.subplots(rows, cols, figsize=(1.7 * cols, 1.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    axes[0, 0].imshow(picture.permute(1, 2, 0).numpy())
    axes[0, 0].set_title(f"input\n{' x '.join(map(str, picture.shape))}", fontsize=9)
    for row, (name, fmap) in enumerate(outputs.items(), start=1):
        c, h, w = fmap.shape
        axes[row, 0].imshow(fmap.mean(0).numpy(), cmap="magma")
        _label_single_pixel(axes[row, 0], fmap.mean(0))
        axes[row, 0].set_title(f"{SHOWN_TITLES.get(name, name)}\n{c} x {h} x {w} (mean)", fontsize=9)
        strongest = fmap.mean((1, 2)).argsort(descending=True)[:channels]
        for col, channel in enumerate(strongest.tolist(), start=1):
            axes[row, col].imshow(fmap[channel].numpy(), cmap="viridis")
            _label_single_pixel(axes[row, col], fmap[channel])
            axes[row, col].set_title(f"channel {channel}", fontsize=8)
    fig.suptitle("Feature maps: each stride-2 step halves H x W while the channels grow", fontsize=11)
    fig.tight_layout()
    return fig
