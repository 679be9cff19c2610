"""Building a run from its composed config: the one construction path of every entry point.

``src.train``, ``src.lr_find``, ``src.bench``, ``src.inspect`` and checkpoint loading
(:mod:`src.models.loading`, the network alone) build the DataModule, the LightningModule (network,
optimizer, stage schedule) and the Trainer (callbacks, loggers, atomic checkpoints) here, so the same config gives
the same objects whichever command reads it (as timm's ``create_model`` for every model).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from src.data.datamodule import ImageFolderDataModule
from src.models.classifier_module import ImageClassifierModule
from src.models.losses import resolve_class_weights
from src.models.init_from import load_initial_network
from src.runs.checkpoint_io import AtomicCheckpointIO
from src.runs.experiment_trackers import build_loggers
from src.core.hardware import resolve_precision, resolve_sync_batchnorm


def build_datamodule(data_config: DictConfig, **overrides) -> ImageFolderDataModule:
    """The DataModule of ``data_config`` (a run's ``cfg.data``); ``overrides`` replace its arguments
    (e.g. ``num_workers=0``)."""
    return instantiate(data_config, **overrides)


def build_module(
    cfg: DictConfig,
    *,
    classes: Sequence[str],
    multi_label: bool,
    run_config: str | None = None,
    pretrained: bool = True,
) -> ImageClassifierModule:
    """The LightningModule of ``cfg.model`` with ``cfg.optimizer`` and ``cfg.schedule``.

    ``classes`` and ``multi_label`` come from the data (``**datamodule.model_fields()``) or from a
    checkpoint. ``pretrained=False`` builds the body with random weights (a checkpoint brings its
    own: nothing is downloaded). ``run_config`` is the YAML stored in checkpoints.
    """
    model_cfg = copy.deepcopy(cfg.model)
    with open_dict(model_cfg):
        model_cfg.merge_with({"classes": list(classes), "multi_label": bool(multi_label)})
        # model.init_from: the whole network from a checkpoint (src/models/init_from.py), loaded below
        init_from = model_cfg.pop("init_from", None)
        if not pretrained:
            init_from = None
        if init_from or not pretrained:  # a checkpoint brings the body's weights
            model_cfg.backbone.weights = None
    module = instantiate(model_cfg, optimizer=instantiate(cfg.optimizer), schedule=instantiate(cfg.schedule),
                         run_config=run_config)
    if init_from:
        load_initial_network(module.net, init_from, classes, cfg.model.backbone.name)
    return module


def build_trainer(cfg: DictConfig, max_epochs: int, **overrides) -> L.Trainer:
    """The Trainer of ``cfg.trainer`` with the callbacks and loggers of ``cfg`` and atomic checkpoint writes;
    ``overrides`` replace its arguments."""
    callbacks = [instantiate(c) for c in cfg.get("callbacks", {}).values()]
    loggers = build_loggers(cfg)
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, max_epochs=max_epochs,
                       plugins=[AtomicCheckpointIO()], **overrides)


@dataclass
class Run:
    """A training run's config (completed from the data), its DataModule and its LightningModule."""

    cfg: DictConfig
    datamodule: ImageFolderDataModule
    module: ImageClassifierModule

    def use_schedule_of_config(self) -> None:
        """Rebuild the module's schedule from ``cfg.schedule`` after it changed (``lr_find=true``)."""
        self.module.schedule = instantiate(self.cfg.schedule)
        self.module.hparams.run_config = run_config_yaml(self.cfg)
        self.datamodule.follow_stages(self.module.schedule.data_at_epoch)

    def trainer(self) -> L.Trainer:
        schedule = self.module.schedule
        # Stages with their own size or batch size: the loaders are rebuilt every epoch (src/data/loading/stage_data.py).
        reload = {"reload_dataloaders_every_n_epochs": 1} if schedule.resizes else {}
        return build_trainer(self.cfg, max_epochs=schedule.total_epochs, **reload)


def run_config_yaml(cfg: DictConfig) -> str:
    """The resolved config as YAML text, as checkpoints store it (a mapping would make
    ``instantiate`` build every ``_target_`` inside it)."""
    return OmegaConf.to_yaml(cfg, resolve=True)


def build_run(cfg: DictConfig) -> Run:
    """The DataModule and LightningModule of a training config.

    ``cfg`` is completed in place with what the run really uses, as ``config.yaml`` and the
    checkpoints record it: the data's classes (the one source of the class list and count) and
    the precision, ``sync_batchnorm`` and ``data.augment.on`` ``auto`` resolved to.
    """
    datamodule = build_datamodule(cfg.data)
    with open_dict(cfg):
        cfg.model.merge_with(datamodule.model_fields())
        if cfg.model.get("class_weights") is not None:  # balanced: from the training images' class counts
            cfg.model.class_weights = resolve_class_weights(cfg.model.class_weights, datamodule.class_counts,
                                                            datamodule.multi_label)
        cfg.trainer.precision = resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator)
        if cfg.data.get("augment") is not None:  # auto as resolved: where the augmentation ran
            cfg.data.augment["on"] = datamodule.placement.augment_on
        if "sync_batchnorm" in cfg.trainer:
            cfg.trainer.sync_batchnorm = resolve_sync_batchnorm(cfg.trainer.sync_batchnorm, cfg.trainer.accelerator)
        # Stages written by a resolver (schedule=fine_tune) become plain values, which lr_find=true may change.
        cfg.schedule.stages = OmegaConf.to_container(cfg.schedule.stages, resolve=True)
    module = build_module(cfg, **datamodule.model_fields(), run_config=run_config_yaml(cfg))
    # One image at the data's size: Lightning's model summary runs it (in eval mode) to count the
    # FLOPs and layer sizes it prints ("Total FLOPs" is per image; without it the summary says 0).
    module.example_input_array = torch.zeros(1, 3, cfg.data.size, cfg.data.size)
    datamodule.follow_stages(module.schedule.data_at_epoch)  # progressive resizing: each stage's size
    return Run(cfg, datamodule, module)
