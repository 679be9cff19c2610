"""Bodies cut before pooling (fastai's ``cut=-2``), with explicit weight loading.

``build_backbone`` is what ``conf/model/resnet.yaml`` instantiates: a torchvision ResNet body for
``resnet18`` ... ``resnet152`` (the default), a timm CNN for ``timm/<name>`` (optional extra).

``weights`` is ``"imagenet"`` (torchvision's pretrained weights and cache), ``None`` (random
initialisation) or a path to a state_dict file. Nothing falls back silently: if ImageNet weights
cannot be fetched, the error says which overrides work offline.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torchvision
from torch import nn

from src.models.components.timm_body import PREFIX as TIMM_PREFIX
from src.models.components.timm_body import TimmBody  # imports timm only when one is built
from src.models.components.weights_file import load_state_dict_file

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
# Number of leading body children in fastai's first layer group for a ResNet:
# conv1, bn1, relu, maxpool, layer1, layer2 | layer3, layer4.
RESNET_GROUP_SPLIT = 6


def _offline_hint(name: str) -> str:
    return (
        f"Offline? Use model.backbone.weights=null to train {name} from random weights, or "
        f"model.backbone.weights=/path/to/{name}.pth with a torchvision state_dict saved on a "
        "machine that has internet (torch.save(torchvision.models."
        f"{name}(weights='DEFAULT').state_dict(), '{name}.pth'))."
    )


def build_resnet(name: str, weights: str | Path | None) -> nn.Module:
    """A full torchvision ResNet ``name`` with ``weights`` applied ('imagenet', None or a file)."""
    if name not in RESNETS:
        raise ValueError(
            f"unknown model.backbone.name={name!r}; choose one of {', '.join(RESNETS)}, "
            "or a timm CNN as timm/<name> (e.g. timm/convnext_tiny)"
        )
    if weights is None:
        return torchvision.models.get_model(name, weights=None)
    if str(weights).lower() == "imagenet":
        # DEFAULT is torchvision's best ImageNet weights for this architecture.
        try:
            return torchvision.models.get_model(name, weights="DEFAULT")
        except (OSError, RuntimeError) as error:  # URLError is an OSError; hash/partial downloads raise RuntimeError
            # an OSError, as the failed download is: every command reports it in one line, exit status 2
            raise OSError(
                f"could not fetch torchvision's ImageNet weights for {name} ({error}). " + _offline_hint(name)
            ) from error
    model = torchvision.models.get_model(name, weights=None)
    child_names = [child for child, _ in model.named_children()]
    load_state_dict_file(model, Path(weights).expanduser(), name, classifier="fc",
                         saved_from=f"torchvision.models.{name}()",
                         body_to_source=lambda state: {resnet_source_key(k, child_names): v for k, v in state.items()})
    return model


def resnet_source_key(body_key: str, child_names: Sequence[str]) -> str:
    """A :class:`ResNetBody` key as torchvision's ResNet names it: the body numbers the ResNet's children
    (``4.0.conv1.weight``), torchvision names them (``layer1.0.conv1.weight``)."""
    index, rest = body_key.split(".", 1)
    return f"{child_names[int(index)]}.{rest}"


class ResNetBody(nn.Sequential):
    """A ResNet without its average pool and fc layer: images -> (N, C, H/32, W/32) feature maps.

    ``num_features`` (the output channel count: 512 for resnet18/34, 2048 for resnet50+) is read
    from the last stage's BatchNorm, never typed.
    """

    def __init__(self, name: str = "resnet50", weights: str | Path | None = None) -> None:
        resnet = build_resnet(name, weights)
        super().__init__(*list(resnet.children())[:-2])
        self.name = name
        self.source_names = [child for child, _ in resnet.named_children()][:-2]  # conv1, bn1, ..., layer4
        last_bn = [m for m in self.modules() if isinstance(m, nn.BatchNorm2d)][-1]
        self.num_features = last_bn.num_features

    def source_state_dict(self) -> dict[str, torch.Tensor]:
        """The body's weights named as torchvision's ResNet names them, without ``fc``: they load into
        ``torchvision.models.<name>()`` with ``fc`` replaced by ``nn.Identity()``, strict."""
        return {resnet_source_key(k, self.source_names): v for k, v in self.state_dict().items()}

    def layer_groups(self) -> list[nn.Module]:
        """fastai's split of a ResNet body: the stem to layer2, then layer3 and layer4."""
        children = list(self.children())
        return [nn.Sequential(*children[:RESNET_GROUP_SPLIT]), nn.Sequential(*children[RESNET_GROUP_SPLIT:])]


def build_backbone(name: str = "resnet50", weights: str | Path | None = None) -> nn.Module:
    """The body ``model.backbone.name`` names: ``ResNetBody`` for torchvision's ResNets, ``TimmBody``
    for ``timm/<name>``. Both expose ``name``, ``num_features`` and ``layer_groups()``."""
    if name.startswith(TIMM_PREFIX):
        return TimmBody(name, weights)
    return ResNetBody(name, weights)
