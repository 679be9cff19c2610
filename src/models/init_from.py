"""``model.init_from=CKPT``: start a new run from the whole network of a ``src.train`` checkpoint.

fastai's ``learn.load``: the body and the head, so the classes must be the checkpoint's (the head
has one output per class, in order). With other classes, only the body can be reused:
``model.backbone.weights=CKPT`` (a new head; :mod:`src.models.components.checkpoint_body`).
Unlike ``ckpt_path`` (resume), the run starts at epoch 0 of its own schedule, with a new optimizer.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from src.core.problems import Problem
from src.models.components.checkpoint_body import checkpoint_backbone_name, is_project_checkpoint
from src.models.safe_load import safe_torch_load

log = logging.getLogger(__name__)

KEY = "model.init_from"
NET_PREFIX = "net."  # ImageClassifierModule.net in a checkpoint's state_dict


def init_from_problems(init_from: Any, ckpt_path: Any) -> list[Problem]:
    """What cannot work in ``model.init_from`` (checked before the data is read)."""
    if init_from is None:
        return []
    problems = []
    if not isinstance(init_from, str) or not Path(init_from).expanduser().is_file():
        problems.append(Problem(KEY, init_from, "the path of a checkpoint file of a src.train run",
                                "e.g. model.init_from=outputs/train/runs/<time>/checkpoints/best.ckpt"))
    if ckpt_path is not None:
        problems.append(Problem(KEY, init_from, "no ckpt_path beside it",
                                "ckpt_path resumes a run where it stopped (weights, optimizer, epoch); init_from "
                                "starts a new run from a checkpoint's weights: leave out one of them"))
    return problems


def class_difference(theirs: Sequence[str], ours: Sequence[str]) -> str:
    """How the data's classes differ from the checkpoint's, in words."""
    added = [c for c in ours if c not in theirs]
    removed = [c for c in theirs if c not in ours]
    if not added and not removed:
        return "the same classes in another order"
    parts = [f"added {added}" if added else "", f"removed {removed}" if removed else ""]
    return ", ".join(p for p in parts if p)


def load_initial_network(net: nn.Module, init_from: str | Path, classes: Sequence[str], backbone_name: str) -> None:
    """Load the network of checkpoint ``init_from`` into ``net`` (an ``ImageClassifier`` for ``classes``)."""
    path = Path(init_from).expanduser()
    checkpoint = safe_torch_load(path, KEY)
    if not is_project_checkpoint(checkpoint):
        raise ValueError(f"{KEY}={str(path)!r} was not written by src.train (no run_config and state_dict in it). "
                         "To start from a body's plain state_dict, use model.backbone.weights=PATH instead.")
    theirs = checkpoint_backbone_name(checkpoint)
    if theirs != backbone_name:
        raise ValueError(f"{KEY}={str(path)!r} is a checkpoint of a {theirs} run, but model.backbone.name is "
                         f"{backbone_name}: set model.backbone.name={theirs}")
    their_classes = list(checkpoint["hyper_parameters"]["classes"])
    if their_classes != list(classes):
        raise ValueError(
            f"{KEY}={str(path)!r} was trained on {len(their_classes)} classes and this data has {len(classes)}: "
            f"{class_difference(their_classes, classes)}. Its head has one output per class of its own, so only "
            f"its body can start this run: use model.backbone.weights={path} (a new head for these classes) "
            "instead of model.init_from."
        )
    state = {k[len(NET_PREFIX):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(NET_PREFIX)}
    try:
        net.load_state_dict(state)
    except RuntimeError as error:  # the same body and classes, but another head (model.head.*)
        detail = " ".join(str(error).split())[:300]
        raise ValueError(f"{KEY}={str(path)!r} does not fit this network: set model.head to the checkpoint's "
                         f"settings (its config.yaml). torch: {detail}") from error
    log.info("started from the network of %s (body and head)", path)
