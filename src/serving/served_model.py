"""The model a server serves: what the main process reads of it, and what each inference worker builds.

LitServe starts its inference workers as new processes and hands each the API, pickled. A
:class:`ServedModel` is what the API carries there: a checkpoint of ``src.train`` (``python -m src.serve``),
whose weights each worker loads, or a network before training (``python -m src.inspect serve=true``),
handed over as it is, so the page shows that very network's numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from src.core.hardware import FULL_PRECISION
from src.models.components.classifier import ImageClassifier
from src.models.loading import (
    LoadedClassifier,
    check_checkpoint_path,
    eval_transform_for,
    load_classifier,
    read_checkpoint,
    saved_stage_index,
)
from src.models.multi_label_metrics import DEFAULT_THRESHOLD

BEFORE_TRAINING = "(before training: the first stage of schedule.stages)"
SAVED_STAGE = "(the stage the checkpoint was saved in)"


@dataclass
class ServedModel:
    """A served model: its run config (model, data, schedule, trainer precision), classes and network.

    Build one with :meth:`from_checkpoint` or :meth:`before_training`.
    """

    config: DictConfig
    classes: list[str]
    multi_label: bool = False
    threshold: float = DEFAULT_THRESHOLD
    checkpoint: Path | None = None  # a src.train checkpoint; None: ``network``, before training
    network: ImageClassifier | None = None

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> ServedModel:
        """The model of checkpoint ``path``; its weights are loaded by each worker, not here."""
        path = check_checkpoint_path(path)
        hparams = read_checkpoint(path, mmap=True)["hyper_parameters"]
        return cls(OmegaConf.create(hparams["run_config"]), list(hparams["classes"]),
                   bool(hparams.get("multi_label", False)), float(hparams.get("threshold", DEFAULT_THRESHOLD)),
                   checkpoint=path)

    @classmethod
    def before_training(cls, net: ImageClassifier, classes: list[str], config: DictConfig,
                        precision: str = FULL_PRECISION) -> ServedModel:
        """The network ``net`` of the run config ``config`` (a composed config with ``model``, ``data`` and
        ``schedule``), single-label, run at ``precision`` as if it had trained at it."""
        run = OmegaConf.create({key: OmegaConf.to_container(config[key], resolve=True)
                                for key in ("model", "data", "schedule")})
        run.model.classes = list(classes)
        run.model.multi_label = False
        run.trainer = {"precision": precision}
        return cls(run, list(classes), network=net)

    @property
    def name(self) -> str:
        return self.config.model.backbone.name

    @property
    def trained_precision(self) -> str | None:
        return self.config.get("trainer", {}).get("precision")

    def describe(self) -> str:
        """The checkpoint, or what the network is, in a few words (for the log and the page)."""
        return str(self.checkpoint) if self.checkpoint is not None else f"{self.name} before training"

    def load(self) -> LoadedClassifier:
        """The network with its weights, on the CPU, in eval mode (in a worker)."""
        if self.checkpoint is not None:
            return load_classifier(self.checkpoint)
        return LoadedClassifier(self.network.eval(), self.classes, self.config, eval_transform_for(self.config),
                                self.multi_label, self.threshold)

    def stage(self) -> tuple[int, str]:
        """The index of the stage of ``config.schedule`` whose trainable set the page shows, and when that is."""
        if self.checkpoint is not None:
            return saved_stage_index(self.checkpoint, self.config), SAVED_STAGE
        return 0, BEFORE_TRAINING
