"""Grad-CAM (Selvaraju et al. 2017, arXiv:1610.02391): where in the image the class score comes from.

A short hook-based implementation: the chosen stage's activations A (C, h, w) and the gradient of
the class score with respect to them; each channel is weighted by its average gradient, the sum
goes through a ReLU and is upsampled to the image's size.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn

from src.models.components.timm_body import TimmBody
from src.visualize.features import RESNET_BODY_NAMES

log = logging.getLogger(__name__)

# A Grad-CAM map is upsampled from the stage's cells: below 4 x 4 (a 1 x 1 layer4 at 32 px) it is a
# flat colour, or a few blocks, rather than a place in the image.
MIN_CAM_CELLS = 4


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
    return cam_map(activations, activations.grad, image.shape[-2:]), logits.detach().float()


def cam_map(activations: torch.Tensor, gradients: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Grad-CAM's (H, W) map in [0, 1] from a stage's (1, C, h, w) activations and the class score's gradient
    with respect to them, upsampled to ``size``."""
    gradients = gradients.float()  # bf16 under autocast: the map is computed in fp32
    activations = activations.detach().float()
    weights = gradients.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * activations).sum(dim=1, keepdim=True)).detach()
    cam = F.interpolate(cam, size=tuple(size), mode="bilinear", align_corners=False)[0, 0]
    cam = cam - cam.min()
    return cam / cam.max().clamp_min(1e-12)


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


def cam_map_sizes(backbone: nn.Module, size: int) -> dict[str, tuple[int, int]]:
    """The (height, width) of each :func:`cam_layers` stage's map for a ``size`` x ``size`` image."""
    layers = cam_layers(backbone)
    sizes: dict[str, tuple[int, int]] = {}
    hooks = [layer.register_forward_hook(lambda _m, _i, output, name=name: sizes.__setitem__(name, tuple(output.shape[-2:])))
             for name, layer in layers.items()]
    parameter = next(backbone.parameters())
    training = backbone.training
    try:
        with torch.no_grad():
            backbone.eval()(torch.zeros(1, 3, size, size, device=parameter.device, dtype=parameter.dtype))
    finally:
        backbone.train(training)
        for hook in hooks:
            hook.remove()
    return sizes


def default_cam_layer(backbone: nn.Module, size: int) -> str:
    """The deepest stage whose map is at least ``MIN_CAM_CELLS`` cells each way at ``size`` px (the last
    stage at ImageNet sizes; ``layer2`` for a ResNet at 32 px); with none that wide, the widest, and a warning."""
    sizes = cam_map_sizes(backbone, size)
    wide = [name for name, (height, width) in sizes.items() if min(height, width) >= MIN_CAM_CELLS]
    if wide:
        return wide[-1]
    name = next(iter(sizes))
    log.warning("at %d px no stage's map is %d x %d cells or more (%s): Grad-CAM uses %s, whose map is coarse; "
                "train at a larger data.size for a finer one", size, MIN_CAM_CELLS, MIN_CAM_CELLS,
                ", ".join(f"{n} {h}x{w}" for n, (h, w) in sizes.items()), name)
    return name
