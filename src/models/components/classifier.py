"""The image classifier: a backbone and a head, with fastai's layer groups.

Kept as ``backbone`` and ``head`` submodules so that Lightning's finetuning callbacks and any
tool that expects that split can work on it, and staged like timm (``forward_features`` /
``forward_head``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from src.models.components.head import create_head


class ImageClassifier(nn.Module):
    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        hidden: Sequence[int] = (512,),
        dropout: float = 0.5,
        concat_pool: bool = True,
    ) -> None:
        super().__init__()
        if not hasattr(backbone, "num_features") or not hasattr(backbone, "layer_groups"):
            raise TypeError(
                f"backbone {type(backbone).__name__} must expose num_features and layer_groups(); "
                "use src.models.components.backbones.build_backbone (a ResNetBody or TimmBody)"
            )
        self.backbone = backbone
        self.num_classes = num_classes
        self.head = create_head(backbone.num_features, num_classes, hidden, dropout, concat_pool)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(images))

    def layer_groups(self) -> list[nn.Module]:
        """The groups that freezing and discriminative learning rates act on, first to last."""
        return [*self.backbone.layer_groups(), self.head]
