"""Check a composed config before any heavy work: every problem at once, one line each.

``check_train_config(cfg)`` runs at the top of ``src.train.train``; ``check_inference_config``
at the top of ``src.evaluate`` and ``src.predict``. The rules are not written here: each
component lists its own problems (:meth:`ImageFolderDataModule.problems` with its label
source's, :meth:`StageSchedule.problems`, :func:`batch_size_problems`, :func:`data_root_problems`)
and its constructor raises the same ones. This module only collects them, passing each component
the config keys its ``problems`` names (:func:`~src.core.problems.problems_by_name`), so a run with
three typos fails once, listing three. Its own: the precisions the Trainer accepts, ``optimizer.lr``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from src.data.datamodule import ImageFolderDataModule
from src.data.loading.dataset import batch_size_problems
from src.data.files.listing import data_root_problems
from src.models.classifier_module import ImageClassifierModule
from src.models.components.timm_body import timm_problems
from src.data.loading.stage_data import last_stage_size_problems
from src.models.init_from import init_from_problems
from src.data.placement.choice import DataPlacement
from src.data.files.scan_cache import ScanCache
from src.data.sources import DATA_SOURCES
from src.runs.experiment_trackers import tracker_problems
from src.optim.stages import StageSchedule
from src.core.problems import ConfigError, Problem, is_number, problems_by_name, raise_problems

__all__ = ["PRECISIONS", "ConfigError", "Problem", "check_inference_config", "check_train_config", "data_config_problems",
           "model_layer_groups"]

# What Lightning's Trainer(precision=...) accepts (tests/test_config_checks.py checks that they
# agree), and "auto", which src.core.hardware resolves before the Trainer is built.
PRECISIONS = ("auto", "transformer-engine", "transformer-engine-float16", "16-true", "16-mixed", "bf16-true",
              "bf16-mixed", "32-true", "64-true", "64", "32", "16", "bf16")


def check_inference_config(cfg: DictConfig) -> None:
    """The checks of ``src.evaluate`` / ``src.predict``: batch size and (when given) the data folder."""
    batch_key = "data.batch_size" if "data" in cfg else "batch_size"
    problems = batch_size_problems(OmegaConf.select(cfg, batch_key), batch_key)
    if "data" in cfg:
        problems += data_root_problems(cfg.data.get("root"), required=False)
    raise_problems(problems)


def model_layer_groups(model_cfg: DictConfig) -> int:
    """The number of layer groups of the configured network (body groups + head), built on the meta
    device with random weights: no memory, no download."""
    with torch.device("meta"):
        backbone = instantiate(model_cfg.backbone, weights=None)
    return len(backbone.layer_groups()) + 1


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


class _Settings(Mapping):
    """A config node read key by key as plain values (a mandatory ``???`` reads None), for
    :func:`~src.core.problems.problems_by_name`: only the keys a component names are resolved."""

    def __init__(self, node: DictConfig) -> None:
        self.node = node

    def __getitem__(self, key: str) -> Any:
        if key not in self.node.keys():  # so that Mapping.get gives its default for an absent key
            raise KeyError(key)
        return _plain(OmegaConf.select(self.node, key, throw_on_missing=False))

    def __iter__(self) -> Iterator[str]:
        return iter(self.node.keys())

    def __len__(self) -> int:
        return len(self.node)

    def __contains__(self, key: object) -> bool:
        return key in self.node.keys()


def _label_source(data: DictConfig) -> tuple[Any, list[Problem]]:
    """The configured label source, built (its construction only stores settings), or why it cannot be."""
    if not OmegaConf.is_dict(data.get("labels")):
        return data.get("labels"), []  # a name, not a source config: the DataModule's problems name it
    try:
        return instantiate(data.labels), []
    except InstantiationException as error:
        return None, [Problem("data.labels", OmegaConf.to_container(data.labels), "a label source config of "
                              "conf/data/labels/ (folder, csv or regex)", f"fix it: {error.__cause__ or error}")]


def _data_problems(data: DictConfig) -> list[Problem]:
    labels, problems = _label_source(data)
    settings = _Settings(data)
    problems += problems_by_name(ImageFolderDataModule.problems, settings, labels=labels)
    problems += problems_by_name(ScanCache.problems, settings)
    return problems + DataPlacement.problems(augment_on=(data.get("augment") or {}).get("on", "auto"),
                                             decode_on=settings.get("decode_on", "workers"))


def data_config_problems(data: DictConfig) -> list[Problem]:
    """The ``data`` group's problems: its root and the DataModule's settings (also for src.prepare)."""
    source = DATA_SOURCES.get(data.get("format", "folder"))  # an unknown format is one of _data_problems
    problems = source.root_problems(data.get("root")) if source is not None else []
    return problems + _data_problems(data)


def check_train_config(cfg: DictConfig, num_layer_groups: int | None = None) -> None:
    """Raise :class:`ConfigError` listing every problem of a training config; return if there is none.

    ``num_layer_groups`` defaults to the configured backbone's (built on the meta device).
    """
    problems = data_config_problems(cfg.data)
    problems += init_from_problems(cfg.model.get("init_from"), cfg.get("ckpt_path"))
    problems += tracker_problems(cfg.get("logger"))
    precision = cfg.trainer.get("precision")
    if str(precision) not in PRECISIONS:
        problems.append(Problem("trainer.precision", precision, "one of " + ", ".join(PRECISIONS),
                                "auto picks bf16-mixed where the hardware has native bf16, else 32-true"))
    lr = cfg.get("optimizer", {}).get("lr")
    if lr is not None and (not is_number(lr) or not math.isfinite(lr) or lr <= 0):
        problems.append(Problem("optimizer.lr", lr, "a positive number", "remove it (the stages set the rates)"))
    schedule = cfg.schedule
    backbone_extra = timm_problems(OmegaConf.select(cfg, "model.backbone.name"))
    problems += backbone_extra
    if schedule.get("stages") and num_layer_groups is None and not backbone_extra:
        try:
            num_layer_groups = model_layer_groups(cfg.model)
        except (InstantiationException, ValueError) as error:  # named here; the stages are checked too
            problems.append(Problem("model.backbone", OmegaConf.to_container(cfg.model.backbone),
                                    "a backbone that can be built", f"fix it: {error}"))
    # The classes are not known before the data are read: their count is checked when the module is built.
    problems += problems_by_name(ImageClassifierModule.problems, _Settings(cfg.model), num_classes=None,
                                 multi_label=False)
    problems += problems_by_name(StageSchedule.problems, _Settings(schedule), num_layer_groups=num_layer_groups)
    problems += last_stage_size_problems(schedule.get("stages"), cfg.data.size)
    raise_problems(problems)
