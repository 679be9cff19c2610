"""The plain network of a run's model config, built without Hydra: what a checkpoint's weights load into.

Training builds its LightningModule with Hydra's ``instantiate`` (``src/runs/builder.py``). Loading a trained
model for prediction needs only the network, and ``from src import Predictor`` must not pay for Hydra and
Lightning (several seconds of imports), so the one object a model config names, its backbone, is built here
by calling its ``_target_`` directly.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

from src.models.components.classifier import ImageClassifier


def call_target(config: Mapping[str, Any], **overrides: Any) -> Any:
    """``config["_target_"]`` (a dotted path) called with the config's other keys and ``overrides``: the part
    of Hydra's ``instantiate`` a backbone config uses (no nested targets, no partials)."""
    arguments = {key: value for key, value in config.items() if not key.startswith("_")}
    target = str(config.get("_target_", ""))
    module_name, _, name = target.rpartition(".")
    nested = [key for key, value in arguments.items() if isinstance(value, Mapping) and "_target_" in value]
    if not module_name or nested:
        raise ValueError(f"model.backbone={dict(config)!r}; expected a _target_ (a dotted path to a function or class) "
                         "with plain arguments, as conf/model/resnet.yaml's backbone has")
    return getattr(importlib.import_module(module_name), name)(**{**arguments, **overrides})


def build_network(model_cfg: DictConfig, *, num_classes: int) -> ImageClassifier:
    """The plain network of ``model_cfg`` (a run's ``cfg.model``) with a random body: what a checkpoint's
    weights load into. Only the model config is read, so a checkpoint whose optimizer or schedule settings
    no longer validate still evaluates."""
    backbone: nn.Module = call_target(OmegaConf.to_container(model_cfg.backbone, resolve=True), weights=None)
    return ImageClassifier(backbone, num_classes=num_classes, **OmegaConf.to_container(model_cfg.head, resolve=True))
