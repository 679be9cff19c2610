"""Check a composed config before any heavy work: every problem at once, one line each.

``check_train_config(cfg)`` runs at the top of ``src.train.train``; the smaller checks
(``check_batch_size``, ``check_data_root``) are shared with ``src.evaluate`` and ``src.predict``.
Each problem names the key, the value, what was expected and how to fix it, so a run with three
typos fails once, listing three problems, instead of three times an hour apart.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.fabric.connector import _PRECISION_INPUT_INT, _PRECISION_INPUT_STR
from omegaconf import DictConfig, ListConfig, OmegaConf

from src.data.labels import LabelSource

# What Lightning's Trainer(precision=...) accepts (its own Literal types, so they stay in step).
PRECISIONS = ("auto", *typing.get_args(_PRECISION_INPUT_STR), *map(str, typing.get_args(_PRECISION_INPUT_INT)), "bf16")
MIN_IMAGE_SIZE = 32  # a ResNet downsamples by 32: below that its last feature map is empty
ON_BAD_FILE = ("skip", "error")


@dataclass(frozen=True)
class Problem:
    key: str
    value: Any
    expected: str
    fix: str

    def __str__(self) -> str:
        return f"{self.key}={self.value!r}: expected {self.expected}; {self.fix}"


class ConfigError(ValueError):
    """A config with one or more problems; ``problems`` holds each, ``str`` lists them one per line."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) in the config, nothing was run:\n{lines}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_batch_size(key: str, value: Any) -> list[Problem]:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        return [Problem(key, value, "a whole number >= 1", f"set {key}=64 (or smaller if memory is short)")]
    return []


def check_data_root(key: str, value: Any, required: bool = True) -> list[Problem]:
    if value is None:
        return [Problem(key, value, "a folder of class folders", f"set {key}=/path/to/images")] if required else []
    path = Path(str(value)).expanduser()
    if path.is_file():
        return [Problem(key, str(value), "a folder with one subfolder per class, not a file",
                        f"point {key} at the folder that holds {path.name}'s class folders")]
    if not path.exists():
        return [Problem(key, str(value), "an existing folder", f"check the path, or create {path}/<class>/<images>")]
    return []


def check_labels(data: DictConfig) -> list[Problem]:
    """The label source's settings (``data.labels`` and the keys it reads), and that a CSV of labels exists."""
    keys = ("labels", "csv_path", "path_column", "label_column", "valid_column", "csv_delimiter", "label_delim", "pattern")
    source = LabelSource(**{key: data.get(key, getattr(LabelSource, key)) for key in keys})
    problems = [Problem(*problem) for problem in source.problems()]
    if not problems and source.labels == "csv" and data.get("root") is not None:
        table = source.table_path(Path(str(data.root)))
        if not table.is_file():
            problems.append(Problem("data.csv_path", source.csv_path, f"a table of labels ({table} is not a file)",
                                    "the path is relative to data.root: fix it or give an absolute path"))
    return problems


def _lr_values(lr: Any) -> list[Any]:
    return list(lr) if isinstance(lr, (list, tuple, ListConfig)) else [lr]


def _check_stage(index: int, stage: Any, num_layer_groups: int | None) -> list[Problem]:
    prefix = f"schedule.stages[{index}]"
    problems = []
    lrs = _lr_values(stage.get("lr"))
    if not lrs or len(lrs) > 2 or not all(_is_number(v) and math.isfinite(v) and v > 0 for v in lrs):
        problems.append(Problem(f"{prefix}.lr", OmegaConf.to_container(stage.lr) if isinstance(stage.lr, ListConfig)
                                else stage.get("lr"), "a positive number, [high] or [low, high] of positive numbers",
                                f"e.g. {prefix}.lr=[3e-3] (fastai's default head learning rate)"))
    elif len(lrs) == 2 and lrs[0] > lrs[1]:
        problems.append(Problem(f"{prefix}.lr", list(lrs), "[low, high] with low <= high",
                                f"the pair is in the wrong order: write [{lrs[1]}, {lrs[0]}]"))
    epochs = stage.get("epochs")
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        problems.append(Problem(f"{prefix}.epochs", epochs, "a whole number >= 1", f"set {prefix}.epochs=1 or more"))
    freeze_to = stage.get("freeze_to", 0)
    if not isinstance(freeze_to, int) or isinstance(freeze_to, bool):
        problems.append(Problem(f"{prefix}.freeze_to", freeze_to, "a whole number",
                                "use -1 (train only the head) or 0 (train everything)"))
    elif num_layer_groups is not None and not -num_layer_groups < freeze_to < num_layer_groups:
        problems.append(Problem(
            f"{prefix}.freeze_to", freeze_to,
            f"a layer group of the model, which has {num_layer_groups}: -{num_layer_groups - 1} to {num_layer_groups - 1}",
            "use -1 (train only the head) or 0 (train everything)"))
    return problems


def check_inference_config(cfg: DictConfig) -> None:
    """The checks of ``src.evaluate`` / ``src.predict``: batch size and (when given) the data folder."""
    batch_key = "data.batch_size" if "data" in cfg else "batch_size"
    problems = check_batch_size(batch_key, OmegaConf.select(cfg, batch_key))
    if "data" in cfg:
        problems += check_data_root("data.root", cfg.data.get("root"), required=False)
    if problems:
        raise ConfigError(problems)


def model_layer_groups(model_cfg: DictConfig) -> int:
    """The number of layer groups of the configured network (body groups + head), built on the meta
    device with random weights: no memory, no download."""
    with torch.device("meta"):
        backbone = instantiate(model_cfg.backbone, weights=None)
    return len(backbone.layer_groups()) + 1


def check_train_config(cfg: DictConfig, num_layer_groups: int | None = None) -> None:
    """Raise :class:`ConfigError` listing every problem of a training config; return if there is none.

    ``num_layer_groups`` defaults to the configured backbone's (built on the meta device).
    """
    problems: list[Problem] = []
    data = cfg.data
    problems += check_data_root("data.root", data.get("root"))
    problems += check_labels(data)
    valid_pct = data.get("valid_pct")
    if not _is_number(valid_pct) or not 0.0 < valid_pct < 1.0:
        problems.append(Problem("data.valid_pct", valid_pct, "a fraction strictly between 0 and 1",
                                "e.g. data.valid_pct=0.2 (fastai's default)"))
    problems += check_batch_size("data.batch_size", data.get("batch_size"))
    size = data.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < MIN_IMAGE_SIZE:
        problems.append(Problem("data.size", size, f"a whole number >= {MIN_IMAGE_SIZE} (a ResNet downsamples by 32)",
                                "e.g. data.size=224"))
    on_bad_file = data.get("on_bad_file", "skip")
    if on_bad_file not in ON_BAD_FILE:
        problems.append(Problem("data.on_bad_file", on_bad_file, " or ".join(ON_BAD_FILE),
                                "skip leaves unreadable files out (listed in bad_files.csv); error stops the run"))
    precision = cfg.trainer.get("precision")
    if str(precision) not in PRECISIONS:
        problems.append(Problem("trainer.precision", precision, "one of " + ", ".join(PRECISIONS),
                                "auto picks bf16-mixed where the hardware has native bf16, else 32-true"))
    lr = cfg.get("optimizer", {}).get("lr")
    if lr is not None and (not _is_number(lr) or not math.isfinite(lr) or lr <= 0):
        problems.append(Problem("optimizer.lr", lr, "a positive number", "remove it (the stages set the rates)"))
    stages = cfg.schedule.get("stages")
    if not stages:
        problems.append(Problem("schedule.stages", stages, "at least one stage",
                                "schedule.stages is empty: add one, e.g. schedule.stages=[{epochs:4,lr:[3e-3],freeze_to:-1}]"))
    else:
        if num_layer_groups is None:
            try:
                num_layer_groups = model_layer_groups(cfg.model)
            except (InstantiationException, ValueError) as error:  # named below; the stages are checked too
                problems.append(Problem("model.backbone", OmegaConf.to_container(cfg.model.backbone),
                                        "a backbone that can be built", f"fix it: {error}"))
        for index, stage in enumerate(stages):
            problems += _check_stage(index, stage, num_layer_groups)
    if problems:
        raise ConfigError(problems)
