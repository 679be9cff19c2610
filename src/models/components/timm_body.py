"""timm CNNs as bodies: the model without its pooling and classifier, split into fastai's two body groups.

An optional extra (``pip install -e ".[timm]"``); selected with ``model.backbone.name=timm/<name>``
(e.g. ``timm/convnext_tiny``, ``timm/efficientnet_b0``). ``weights`` is ``"imagenet"`` (timm's
default pretrained weights for ``<name>``, or the tag in ``<name>.<tag>``), ``None`` (random
initialisation) or the path of a timm state_dict file, as for the torchvision ResNets.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from src.core.extras import extra_problems, require_extra
from src.core.problems import Problem
from src.models.components.weights_file import load_state_dict_file

log = logging.getLogger(__name__)

PREFIX = "timm/"
# fastai's ResNet split cuts before layer3, the first stage at 1/16 of the input's resolution.
# For any timm CNN: group 0 ends with the last stage whose output is at a reduction below this.
GROUP_SPLIT_REDUCTION = 16


def timm_problems(name: Any) -> list[Problem]:
    """A ``timm/<name>`` backbone without the timm extra installed (checked with the config, before the scan)."""
    if isinstance(name, str) and name.startswith(PREFIX):
        return extra_problems("timm", "model.backbone.name", name)
    return []


def _timm():
    require_extra("timm", f"model.backbone.name={PREFIX}...")  # a checkpoint of a timm backbone, loaded to predict
    import timm

    return timm


def _offline_hint(arch: str) -> str:
    return (
        f"Offline? Use model.backbone.weights=null to train {PREFIX}{arch} from random weights, or "
        f"model.backbone.weights=/path/to/{arch}.pth with a timm state_dict saved on a machine that has "
        f"internet (torch.save(timm.create_model('{arch}', pretrained=True).state_dict(), '{arch}.pth'))."
    )


def create_timm_model(arch: str, weights: str | Path | None) -> nn.Module:
    """timm's ``arch`` without classifier and pooling (``num_classes=0, global_pool=''``), with ``weights``."""
    timm = _timm()
    if not timm.is_model(arch):
        raise ValueError(
            f"unknown model.backbone.name={PREFIX + arch!r}: timm has no model {arch!r}; list the choices with "
            f"python -c \"import timm; print(timm.list_models('{arch.split('_')[0]}*'))\""
        )
    pretrained = weights is not None and str(weights).lower() == "imagenet"
    try:
        model = timm.create_model(arch, pretrained=pretrained, num_classes=0, global_pool="")
    except (OSError, RuntimeError) as error:  # hub/URL errors are OSErrors; partial downloads RuntimeErrors
        if not pretrained:
            raise
        # an OSError, as the failed download is: every command reports it in one line, exit status 2
        raise OSError(
            f"could not fetch timm's pretrained weights for {arch} ({error}). " + _offline_hint(arch)
        ) from error
    if pretrained:
        from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

        mean, std = model.pretrained_cfg.get("mean"), model.pretrained_cfg.get("std")
        if (tuple(mean), tuple(std)) != (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD):
            log.warning("timm's %s weights were trained on images normalised with mean=%s, std=%s: set data.mean "
                        "and data.std to those", arch, list(mean), list(std))
    if weights is not None and not pretrained:
        load_state_dict_file(model, Path(weights).expanduser(), PREFIX + arch,
                             classifier=model.pretrained_cfg.get("classifier") or "classifier",
                             saved_from=f"timm.create_model('{arch}')", body_to_source=timm_source_state)
    return model


def timm_source_state(body_state: dict) -> dict:
    """A :class:`TimmBody`'s tensors named as timm's model names them (the body holds it as ``model``)."""
    return {key.removeprefix(TimmBody.MODEL_PREFIX): value for key, value in body_state.items()}


class TimmBody(nn.Module):
    """A timm CNN without its pooling and classifier: images -> (N, C, H/32, W/32) feature maps.

    ``num_features`` is timm's width of what the body outputs (``head_hidden_size``: the same as
    ``num_features`` except for models such as MobileNetV3 whose 1x1 ``conv_head`` widens the
    features before the classifier), never typed. The final norm of models that keep it in their
    head (ConvNeXt's LayerNorm) stays in the body.

    Layer groups, as fastai's ResNet split (stem to ``layer2`` | ``layer3`` to ``layer4``): the
    first group ends with the last stage in timm's ``feature_info`` whose output is at a
    reduction below 16 (ConvNeXt ``stages.1``, EfficientNet ``blocks.2``, ResNet ``layer2``); the
    second holds the later stages and the final convolution or norm.
    """

    MODEL_PREFIX = "model."  # the timm model's attribute name, in the body's state_dict keys

    def __init__(self, name: str = "timm/convnext_tiny", weights: str | Path | None = None) -> None:
        super().__init__()
        if not name.startswith(PREFIX):
            raise ValueError(f"model.backbone.name={name!r}: a timm backbone is written {PREFIX}<name>, e.g. timm/convnext_tiny")
        arch = name[len(PREFIX):]
        self.name = name
        self.model = create_timm_model(arch, weights)
        if getattr(self.model, "output_fmt", "NCHW") != "NCHW":
            raise ValueError(
                f"model.backbone.name={name!r} outputs {self.model.output_fmt} feature maps; the concat-pool head "
                "needs channels first (N, C, H, W): use a CNN such as timm/convnext_tiny or timm/efficientnet_b0"
            )
        self.num_features = getattr(self.model, "head_hidden_size", None) or self.model.num_features
        self._groups = self._split(self.model, name)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def source_state_dict(self) -> dict[str, torch.Tensor]:
        """The body's weights named as timm names them: they load into
        ``timm.create_model(<name>, num_classes=0)``, strict."""
        return self.model.state_dict()

    def stages(self) -> dict[str, nn.Module]:
        """The modules whose outputs timm lists in ``feature_info``, by name, first to last."""
        modules = dict(self.model.named_modules())
        return {info["module"]: modules[info["module"]] for info in self.model.feature_info}

    def layer_groups(self) -> list[nn.Module]:
        """Two groups: the stem and the stages below 1/16 resolution, then the rest (see the class doc)."""
        return [nn.ModuleList(group) for group in self._groups]

    @staticmethod
    def _split(model: nn.Module, name: str) -> tuple[list[nn.Module], list[nn.Module]]:
        infos = list(getattr(model, "feature_info", None) or [])
        early = [info["module"] for info in infos if info["reduction"] < GROUP_SPLIT_REDUCTION]
        if not early or len(early) == len(infos):
            raise ValueError(
                f"model.backbone.name={name!r} has no stages on both sides of 1/{GROUP_SPLIT_REDUCTION} resolution "
                f"(timm feature_info reductions {[info['reduction'] for info in infos]}), so it cannot be split "
                "into fastai's layer groups; vision transformers are not supported: use a CNN such as "
                "timm/convnext_tiny, timm/efficientnet_b0 or timm/resnet50"
            )
        cut = early[-1]
        # The model's children in registration order (timm registers them in forward order), with
        # the containers on the way to the cut opened up: stem, stages.0, stages.1 | stages.2, ...
        pieces: list[tuple[str, nn.Module]] = []

        def open_up(module: nn.Module, prefix: str) -> None:
            for child_name, child in module.named_children():
                qualified = prefix + child_name
                if cut.startswith(qualified + "."):
                    open_up(child, qualified + ".")
                else:
                    pieces.append((qualified, child))

        open_up(model, "")
        index = [qualified for qualified, _ in pieces].index(cut) + 1
        groups = ([m for _, m in pieces[:index]], [m for _, m in pieces[index:]])
        # Fail rather than put a stage in the wrong group or leave parameters out of both (they
        # would never train).
        modules = dict(model.named_modules())
        first = {id(p) for m in groups[0] for p in m.parameters()}
        misplaced = [info["module"] for info in infos
                     if any((id(p) in first) != (info["module"] in early) for p in modules[info["module"]].parameters())]
        if misplaced:
            raise ValueError(f"model.backbone.name={name!r}: stages {misplaced} are on the wrong side of the split "
                             f"after {cut}; its modules are not registered in forward order")
        covered = {id(p) for group in groups for m in group for p in m.parameters()}
        left_out = [n for n, p in model.named_parameters() if id(p) not in covered]
        if left_out or not any(True for m in groups[1] for _ in m.parameters()):
            raise ValueError(
                f"model.backbone.name={name!r} cannot be split into layer groups at {cut}: parameters "
                f"{left_out[:3]} are outside its stages"
            )
        return groups
