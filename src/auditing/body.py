"""The network an audit embeds with: a body of ``model.backbone`` (ImageNet weights by default) or of a run.

The embedding of an image is its body's feature map averaged over space (what the head's average pool
sees), L2-normalised so that a dot product is a cosine similarity.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn

from src.data.transforms.presets import EvalTransform
from src.models.components.backbones import build_backbone
from src.models.loading import load_classifier


@dataclass
class Body:
    """``net`` maps normalised images to feature maps; ``identity`` keys the embedding cache."""

    net: nn.Module
    transform: EvalTransform
    identity: str
    description: str


def _file_identity(path: Path) -> str:
    """A weights file by its resolved path, size and modification time (its contents are not hashed: 100 MB)."""
    stat = path.stat()
    return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def transform_identity(transform: EvalTransform) -> str:
    return repr(transform)  # torchvision's repr lists every step with its size, mean and std


def load_body(cfg: DictConfig) -> Body:
    """The body of ``cfg.ckpt_path`` (with that run's eval transform) or of ``cfg.model.backbone``
    (with ``cfg.data``'s eval transform), in eval mode on the CPU."""
    if cfg.get("ckpt_path"):
        path = Path(cfg.ckpt_path).expanduser()
        try:
            loaded = load_classifier(path)
        except RuntimeError as error:  # load_state_dict: the weights are not of the network its config describes
            raise ValueError(f"ckpt_path={str(path)!r}: its weights do not fit the network its config describes "
                             f"({str(error).splitlines()[0]}); use a checkpoint written by src.train of this "
                             "project, unchanged") from error
        return Body(loaded.net.backbone.eval(), loaded.transform,
                    f"ckpt:{_file_identity(path)}|{transform_identity(loaded.transform)}",
                    f"the body of {path} ({loaded.config.model.backbone.name})")
    backbone = cfg.model.backbone
    weights = backbone.get("weights")
    data = cfg.data
    transform = EvalTransform(data.size, list(data.mean), list(data.std), data.resize_method, data.interpolation)
    net = build_backbone(backbone.name, weights)
    weights_key = str(weights) if weights is None or str(weights).lower() == "imagenet" else _file_identity(
        Path(weights).expanduser())
    return Body(net.eval(), transform, f"backbone:{backbone.name}|{weights_key}|{transform_identity(transform)}",
                f"{backbone.name} with weights={weights}")


def body_key(body: Body) -> str:
    return hashlib.sha256(body.identity.encode()).hexdigest()[:16]


@torch.no_grad()
def embed_batch(net: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(N, C) L2-normalised average-pooled features of a batch, float32."""
    features = net(images).float().mean(dim=(2, 3))
    return nn.functional.normalize(features, dim=1)
