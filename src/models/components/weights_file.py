"""Load a body's weights from a state_dict file or a ``src.train`` checkpoint, refusing another architecture's."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from torch import nn

from src.models.components.checkpoint_body import checkpoint_backbone_name, checkpoint_body_state, is_project_checkpoint
from src.models.safe_load import safe_torch_load

log = logging.getLogger(__name__)


def read_state_dict(path: Path, name: str, body_to_source: Callable[[dict], dict] | None = None) -> dict:
    """The state_dict in ``path`` (torch.save, or a ``.safetensors`` file), loaded without running code.

    A checkpoint of a ``src.train`` run gives its body, renamed by ``body_to_source`` from the body
    module's names to those of the library's model (what a plain state_dict file holds); the run's
    body must be ``name``, else a ValueError names both.
    """
    if not path.is_file():
        raise FileNotFoundError(
            f"model.backbone.weights={str(path)!r} is not a file. Expected 'imagenet', null, or the path "
            f"of a {name} state_dict saved with torch.save(model.state_dict(), path), or a checkpoint of a "
            "src.train run (RUN/checkpoints/best.ckpt: its body is taken)."
        )
    if path.suffix == ".safetensors":  # timm's own weight files on the Hugging Face hub
        from safetensors.torch import load_file

        return load_file(path)
    state = safe_torch_load(path, "model.backbone.weights")
    if is_project_checkpoint(state) and body_to_source is not None:
        theirs = checkpoint_backbone_name(state)
        if theirs != name:
            raise ValueError(
                f"model.backbone.weights={str(path)!r} is a checkpoint of a {theirs} run, but model.backbone.name is "
                f"{name}: its body does not fit. Set model.backbone.name={theirs} to start from that body, or use a "
                f"checkpoint of a {name} run."
            )
        return body_to_source(checkpoint_body_state(state))
    if isinstance(state, dict) and "state_dict" in state:  # a Lightning/trainer checkpoint
        state = state["state_dict"]
    return state


def load_state_dict_file(model: nn.Module, path: Path, name: str, classifier: str, saved_from: str,
                         body_to_source: Callable[[dict], dict] | None = None) -> None:
    """Load ``path`` into ``model``, ignoring the ``classifier`` layer's keys (the body drops it, so the
    file may have it for any class count, or not at all). Every other key must match by name and shape.

    ``saved_from`` names the constructor the file should come from, for the error message;
    ``body_to_source`` renames a ``src.train`` checkpoint's body keys to ``model``'s (see :func:`read_state_dict`).
    """
    prefix = classifier + "."
    state = {k: v for k, v in read_state_dict(path, name, body_to_source).items() if not k.startswith(prefix)}
    expected = {k: v.shape for k, v in model.state_dict().items() if not k.startswith(prefix)}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k])
    if missing or unexpected or mismatched:
        raise ValueError(
            f"{path} does not hold {name} weights: {len(missing)} missing keys {missing[:3]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:3]}, {len(mismatched)} of another shape "
            f"{mismatched[:3]}. Save it from {saved_from}, or set model.backbone.name "
            "to the architecture it was saved from."
        )
    model.load_state_dict(state, strict=False)
    log.info("loaded %s weights from %s", name, path)
