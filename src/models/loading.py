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

from src.data.labels.sources import upgrade_label_config
from src.data.transforms.presets import EvalTransform
from src.core.hardware import inference_precision, resolve_channels_last
from src.models.components.classifier import ImageClassifier
from src.models.multi_label_metrics import DEFAULT_THRESHOLD
from src.models.safe_load import file_damage, safe_torch_load
from src.models.network import build_network

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
        return self.config.data.labels.get("label_delim") if self.multi_label else None

    @property
    def trained_precision(self) -> str | None:
        """The precision the run trained and validated with (``trainer.precision`` of its config)."""
        return self.config.get("trainer", {}).get("precision")

    def precision_on(self, device: torch.device, override: str | None = None) -> str:
        """The precision to run at on ``device``: ``override``, else the trained one where the device has it."""
        return inference_precision(self.trained_precision, override, device)

    def channels_last_at(self, precision: str) -> bool:
        """The run's ``model.channels_last`` (``auto`` resolved for ``precision``, as training did)."""
        return resolve_channels_last(self.config.model.get("channels_last", False), precision)


def intact_neighbours(path: Path) -> list[Path]:
    """The other ``.ckpt`` files of ``path``'s folder whose container is whole, newest first."""
    others = [p for p in path.parent.glob("*.ckpt") if p.is_file() and p.resolve() != path.resolve()]
    return [p for p in sorted(others, key=lambda p: p.stat().st_mtime, reverse=True) if file_damage(p) is None]


def instead_of(path: Path) -> str:
    """What to use instead of the unusable checkpoint ``path``: an intact one beside it, if any."""
    neighbours = intact_neighbours(path)
    if neighbours:
        return (f"Use another checkpoint of the same run instead: {neighbours[0]}"
                + (f" (or {', '.join(p.name for p in neighbours[1:])} beside it)" if len(neighbours) > 1 else "") + ".")
    return ("No intact checkpoint is beside it: use a checkpoint of another run (RUN/checkpoints/best.ckpt or "
            "last.ckpt), or train again with `python -m src.train`.")


def check_checkpoint_path(path: str | Path) -> Path:
    """``path`` as a Path, if it names a file; else a FileNotFoundError saying what to pass."""
    path = Path(path).expanduser()
    if not path.is_file():
        what = "a folder" if path.is_dir() else "missing"
        raise FileNotFoundError(f"ckpt_path={str(path)!r} is {what}; expected a checkpoint file such as "
                                "RUN/checkpoints/best.ckpt or RUN/checkpoints/last.ckpt")
    return path


def read_checkpoint(path: str | Path, mmap: bool = False) -> dict:
    """Load a checkpoint of ``src.train`` safely (tensors and plain Python values only, no pickled code).

    A damaged file (empty, truncated, not a PyTorch file) or a checkpoint of something else is refused
    with one message naming the file, what is wrong and what to use instead. ``mmap`` leaves the
    tensors on disk (a quick check of a large checkpoint).
    """
    path = check_checkpoint_path(path)
    checkpoint = safe_torch_load(path, "ckpt_path", instead_of(path), mmap=mmap)
    hparams = checkpoint.get("hyper_parameters", {}) if isinstance(checkpoint, dict) else {}
    if "classes" not in hparams or not hparams.get("run_config"):
        if not isinstance(checkpoint, dict):
            kind = f"a {type(checkpoint).__name__}"
        elif checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
            kind = "a plain state_dict (tensors by name)"
        else:
            kind = "a checkpoint of another program"
        raise ValueError(
            f"ckpt_path={str(path)!r} was not written by src.train: it is {kind} (no classes/run_config in its "
            "hyper_parameters), so the model cannot be rebuilt from it. Use a checkpoint of a src.train run "
            "(RUN/checkpoints/best.ckpt); to start from other weights, pass them as model.backbone.weights=PATH."
        )
    return checkpoint


def check_resumable(path: str | Path) -> Path:
    """A checkpoint ``src.train`` can resume from (``ckpt_path``), checked before any data is read."""
    path = check_checkpoint_path(path)
    checkpoint = read_checkpoint(path, mmap=True)
    missing = [key for key in ("state_dict", "optimizer_states", "loops") if key not in checkpoint]
    if missing:
        raise ValueError(f"ckpt_path={str(path)!r} holds no training state to resume ({', '.join(missing)} missing). "
                         + instead_of(path))
    return path


def epochs_finished(path: str | Path) -> int:
    """How many epochs the run of checkpoint ``path`` had finished when it was saved (Lightning's fit
    loop counts an epoch once it is processed; a mid-epoch ``last.ckpt`` does not count its epoch)."""
    return int(read_checkpoint(path, mmap=True)["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])


def saved_stage_index(path: str | Path, config: DictConfig) -> int:
    """The index of the stage of ``config.schedule`` that checkpoint ``path`` was saved in.

    The stage-freezing callback stores it (``StagedFineTuning``, the callbacks' state key); a checkpoint
    without it is placed by its epochs: Lightning counts the epoch a checkpoint is saved at the end of as
    finished, so the last finished epoch's stage.
    """
    checkpoint = read_checkpoint(path, mmap=True)
    for key, state in (checkpoint.get("callbacks") or {}).items():
        if key.startswith("StagedFineTuning") and isinstance(state, dict) and state.get("stage_index") is not None:
            return int(state["stage_index"])
    from hydra.utils import instantiate  # the schedule's own classes; here so that predicting does not import Hydra

    return instantiate(config.schedule).stage_index_at_epoch(max(epochs_finished(path) - 1, 0))


def checkpoint_classes(path: str | Path) -> list[str]:
    """The class names of checkpoint ``path``, in label order."""
    return list(read_checkpoint(path, mmap=True)["hyper_parameters"]["classes"])


def eval_transform_for(config: DictConfig) -> EvalTransform:
    data = config.data
    return EvalTransform(data.size, list(data.mean), list(data.std), data.resize_method, data.interpolation)


def load_classifier(path: str | Path) -> LoadedClassifier:
    """The network of checkpoint ``path`` with its trained weights, on the CPU, in eval mode."""
    checkpoint = read_checkpoint(path)
    hparams = checkpoint["hyper_parameters"]
    config = OmegaConf.create(hparams["run_config"])
    upgrade_label_config(config.data)  # runs from before the data/labels config group
    classes = list(hparams["classes"])
    # Checkpoints from before multi-label support are single-label.
    multi_label = bool(hparams.get("multi_label", False))
    # Built as src.train built it, with random weights: the checkpoint brings the trained ones.
    net = build_network(config.model, num_classes=len(classes))
    state = {k[len(NET_PREFIX):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(NET_PREFIX)}
    net.load_state_dict(state)
    return LoadedClassifier(net.eval(), classes, config, eval_transform_for(config),
                            multi_label, float(hparams.get("threshold", DEFAULT_THRESHOLD)))
