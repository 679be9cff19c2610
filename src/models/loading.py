"""Rebuild a trained classifier from a checkpoint alone: no data folder, no training overrides.

A checkpoint written by ``src.train`` holds the class names and the run's resolved config as
YAML (``hyper_parameters.classes`` / ``run_config``); the weights are rebuilt on a randomly
initialised body, so nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from src.data.transforms import EvalTransform
from src.models.components.classifier import ImageClassifier
from src.models.multi_label_metrics import DEFAULT_THRESHOLD
from src.models.safe_load import safe_torch_load
from src.runs.builder import build_module

NET_PREFIX = "net."


@dataclass
class LoadedClassifier:
    """A trained network in eval mode, its class names, the run's config and its eval transform.

    ``multi_label`` networks give independent (sigmoid) class probabilities; every class above
    ``threshold`` is predicted, and ``label_delim`` joins several class names in one cell.
    """

    net: ImageClassifier
    classes: list[str]
    config: DictConfig
    transform: EvalTransform
    multi_label: bool = False
    threshold: float = DEFAULT_THRESHOLD

    @property
    def label_delim(self) -> str | None:
        return self.config.data.get("label_delim") if self.multi_label else None


def read_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint file safely (tensors and plain Python values only, no pickled code)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path={str(path)!r} is not a file; expected RUN/checkpoints/best.ckpt or last.ckpt")
    checkpoint = safe_torch_load(path, "ckpt_path")
    hparams = checkpoint.get("hyper_parameters", {})
    if "classes" not in hparams or not hparams.get("run_config"):
        raise ValueError(
            f"{path} was not written by src.train (no classes/run_config in its hyper_parameters); "
            "train with `python -m src.train` to get a checkpoint that can be rebuilt"
        )
    return checkpoint


def eval_transform_for(config: DictConfig) -> EvalTransform:
    data = config.data
    return EvalTransform(data.size, list(data.mean), list(data.std), data.resize_method, data.interpolation)


def load_classifier(path: str | Path) -> LoadedClassifier:
    """The network of checkpoint ``path`` with its trained weights, on the CPU, in eval mode."""
    checkpoint = read_checkpoint(path)
    hparams = checkpoint["hyper_parameters"]
    config = OmegaConf.create(hparams["run_config"])
    classes = list(hparams["classes"])
    # Checkpoints from before multi-label support are single-label.
    multi_label = bool(hparams.get("multi_label", False))
    # Built as src.train built it, with random weights: the checkpoint brings the trained ones.
    net = build_module(config, classes=classes, multi_label=multi_label, pretrained=False).net
    state = {k[len(NET_PREFIX):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(NET_PREFIX)}
    net.load_state_dict(state)
    return LoadedClassifier(net.eval(), classes, config, eval_transform_for(config),
                            multi_label, float(hparams.get("threshold", DEFAULT_THRESHOLD)))
