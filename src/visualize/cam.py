"""Grad-CAM (Selvaraju et al. 2017, arXiv:1610.02391): where in the image the class score comes from.

A short hook-based implementation: the chosen stage's activations A (C, h, w) and the gradient of
the class score with respect to them; each channel is weighted by its average gradient, the sum
goes through a ReLU and is upsampled to the image's size.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn

from src.models.components.timm_body import TimmBody
from src.visualize.features import RESNET_BODY_NAMES


def grad_cam(net: nn.Module, layer: nn.Module, image: torch.Tensor, target: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The (H, W) Grad-CAM of class ``target`` (the predicted one if None), scaled to [0, 1], and the logits.

    ``image`` is one normalised (3, H, W) tensor; ``layer`` a module of ``net`` (e.g. its last stage).
    """
    stored: dict[str, torch.Tensor] = {}

    def keep(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        output.retain_grad()
        stored["activations"] = output

    handle = layer.register_forward_hook(keep)
    was_training = net.training
    try:
        net.eval()
        with torch.enable_grad():
            logits = net(image.unsqueeze(0).requires_grad_(True))[0]
            index = int(logits.argmax()) if target is None else target
            logits[index].backward()
    finally:
        handle.remove()
        net.train(was_training)
        net.zero_grad(set_to_none=True)
    activations = stored["activations"]
    gradients = activations.grad.float()  # bf16 under autocast: the map is computed in fp32
    activations = activations.detach().float()
    weights = gradients.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * activations).sum(dim=1, keepdim=True)).detach()
    cam = F.interpolate(cam, size=image.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    cam = cam - cam.min()
    return cam / cam.max().clamp_min(1e-12), logits.detach().float()


def cam_figure(
    pictures: Sequence[torch.Tensor], cams: Sequence[torch.Tensor], titles: Sequence[str], suptitle: str, cols: int = 4
) -> Figure:
    """Each de-normalised (3, H, W) picture beside its Grad-CAM overlay, with ``titles``."""
    count = len(pictures)
    cols = min(cols, count)
    rows = -(-count // cols)
    # constrained layout leaves each row room for its (up to three-line) titles
    fig, axes = plt.subplots(rows, 2 * cols, figsize=(2.3 * 2 * cols, 3.0 * rows), squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for i, (picture, cam, title) in enumerate(zip(pictures, cams, titles)):
        row, col = divmod(i, cols)
        image = picture.permute(1, 2, 0).numpy()
        axes[row, 2 * col].imshow(image)
        axes[row, 2 * col].set_title(title, fontsize=8)
        axes[row, 2 * col + 1].imshow(image)
        axes[row, 2 * col + 1].imshow(cam.numpy(), cmap="jet", alpha=0.5)
        axes[row, 2 * col + 1].set_title("Grad-CAM", fontsize=8)
    fig.suptitle(suptitle, fontsize=11)
    return fig


def cam_layers(backbone: nn.Module) -> dict[str, nn.Module]:
    """The stages Grad-CAM can look at, first to last: layer1-layer4 of a ResNet, timm's feature_info stages."""
    if isinstance(backbone, TimmBody):
        return backbone.stages()
    return {name: backbone[RESNET_BODY_NAMES.index(name)] for name in RESNET_BODY_NAMES[4:]}
