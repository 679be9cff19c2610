"""Load a body's weights from a state_dict file, refusing a file saved from another architecture."""

from __future__ import annotations

import logging
from pathlib import Path

from torch import nn

from src.models.safe_load import safe_torch_load

log = logging.getLogger(__name__)


def read_state_dict(path: Path, name: str) -> dict:
    """The state_dict in ``path`` (torch.save, or a ``.safetensors`` file), loaded without running code."""
    if not path.is_file():
        raise FileNotFoundError(
            f"model.backbone.weights={str(path)!r} is not a file. Expected 'imagenet', null, or the path "
            f"of a {name} state_dict saved with torch.save(model.state_dict(), path)."
        )
    if path.suffix == ".safetensors":  # timm's own weight files on the Hugging Face hub
        from safetensors.torch import load_file

        return load_file(path)
    state = safe_torch_load(path, "model.backbone.weights")
    if isinstance(state, dict) and "state_dict" in state:  # a Lightning/trainer checkpoint
        state = state["state_dict"]
    return state


def load_state_dict_file(model: nn.Module, path: Path, name: str, classifier: str, saved_from: str) -> None:
    """Load ``path`` into ``model``, ignoring the ``classifier`` layer's keys (the body drops it, so the
    file may have it for any class count, or not at all). Every other key must match by name and shape.

    ``saved_from`` names the constructor the file should come from, for the error message.
    """
    prefix = classifier + "."
    state = {k: v for k, v in read_state_dict(path, name).items() if not k.startswith(prefix)}
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
