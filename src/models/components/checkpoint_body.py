"""The body of a ``src.train`` checkpoint, as the weights of a new model (``model.backbone.weights=RUN/x.ckpt``).

A checkpoint of this project stores the network under ``net.`` (the LightningModule's ``net``) and
the body under ``net.backbone.`` (:class:`~src.models.components.classifier.ImageClassifier`'s
``backbone``), with the run's resolved config as YAML text in ``hyper_parameters.run_config``,
which names the body's architecture (``model.backbone.name``). Only the body is taken: the head is
built new for the new data's classes, so the checkpoint may have any class count.

Plain file reading, no Lightning or Hydra: the bodies' weight loading calls it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import OmegaConf

# ImageClassifierModule.net, then ImageClassifier.backbone.
CHECKPOINT_BODY_PREFIX = "net.backbone."


def is_project_checkpoint(loaded: Any) -> bool:
    """Whether a loaded file is a checkpoint written by ``src.train`` (its config and network inside)."""
    if not isinstance(loaded, Mapping):
        return False
    hparams = loaded.get("hyper_parameters")
    return isinstance(hparams, Mapping) and bool(hparams.get("run_config")) and isinstance(loaded.get("state_dict"), Mapping)


def checkpoint_backbone_name(checkpoint: Mapping) -> str:
    """``model.backbone.name`` of the run that wrote ``checkpoint`` (e.g. ``resnet18``, ``timm/convnext_tiny``)."""
    config = OmegaConf.create(checkpoint["hyper_parameters"]["run_config"])  # resolved when saved: no interpolations
    return str(config.model.backbone.name)


def checkpoint_body_state(checkpoint: Mapping) -> dict:
    """The body's tensors of ``checkpoint``, named as in the body module (``net.backbone.`` removed)."""
    state = checkpoint["state_dict"]
    return {key[len(CHECKPOINT_BODY_PREFIX):]: value for key, value in state.items()
            if key.startswith(CHECKPOINT_BODY_PREFIX)}
