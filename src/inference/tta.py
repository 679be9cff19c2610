"""Test-time augmentation as fastai v1's ``Learner.TTA(beta=0.4, scale=1.35)``.

fastai v1 predicts each image plainly and on eight augmented views: zoomed in by ``scale``
towards each of the four corners, with and without a horizontal flip. The result is
``beta * plain + (1 - beta) * mean(views)`` on probabilities. Differences: the views are made on
the already resized, normalised batch (bilinear zoom of the tensor), and fastai's other random
training transforms (rotation, lighting) are not applied, so TTA is deterministic here.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from src.inference.probabilities import class_probabilities

TTA_BETA = 0.4
TTA_SCALE = 1.35


def tta_views(images: torch.Tensor, scale: float = TTA_SCALE) -> list[torch.Tensor]:
    """The eight views of a (N, C, H, W) batch: 4 corner zooms x (as is, flipped left-right)."""
    if scale < 1.0:
        raise ValueError(f"TTA scale must be >= 1.0 (1.0 = no zoom), got {scale}")
    height, width = images.shape[-2:]
    big_h, big_w = math.ceil(height * scale), math.ceil(width * scale)
    zoomed = F.interpolate(images, size=(big_h, big_w), mode="bilinear", align_corners=False)
    views = []
    for flip in (False, True):
        for row in (0, big_h - height):
            for col in (0, big_w - width):
                view = zoomed[..., row : row + height, col : col + width]
                views.append(view.flip(-1) if flip else view)
    return views


def _check_beta(beta: float) -> None:
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"TTA beta must be between 0 and 1 (the weight of the plain prediction), got {beta}")


def _blend(plain: torch.Tensor, views: list[torch.Tensor], beta: float) -> torch.Tensor:
    return beta * plain + (1.0 - beta) * torch.stack(views).mean(0)


def tta_log_probabilities(
    net: nn.Module, images: torch.Tensor, beta: float = TTA_BETA, scale: float = TTA_SCALE, multi_label: bool = False
) -> torch.Tensor:
    """Log of fastai's blend ``beta * p(plain) + (1 - beta) * mean(p(view))``, shape (N, classes).

    ``p`` is the softmax, or the per-class sigmoid of a ``multi_label`` network.
    """
    _check_beta(beta)
    plain = class_probabilities(net(images), multi_label)
    blended = _blend(plain, [class_probabilities(net(view), multi_label) for view in tta_views(images, scale)], beta)
    return blended.clamp_min(torch.finfo(plain.dtype).tiny).log()


def tta_log_odds(net: nn.Module, images: torch.Tensor, beta: float = TTA_BETA, scale: float = TTA_SCALE) -> torch.Tensor:
    """A multi-label network's ``log(p / (1 - p))`` of each class's blended probability ``p``, shape (N, classes).

    ``1 - p`` is blended from the sigmoids of the negated logits rather than subtracted from ``p``: a cell
    whose ``p`` rounds to 1.0 in float32 keeps its digits, as BCE-with-logits keeps them for plain logits.
    """
    _check_beta(beta)
    plain, views = net(images), [net(view) for view in tta_views(images, scale)]
    tiny = torch.finfo(plain.dtype).tiny
    yes = _blend(plain.sigmoid(), [view.sigmoid() for view in views], beta)
    no = _blend((-plain).sigmoid(), [(-view).sigmoid() for view in views], beta)
    return yes.clamp_min(tiny).log() - no.clamp_min(tiny).log()
