"""Training stages: fastai's ``fit_one_cycle`` calls, freeze/unfreeze between them, as data.

The seed recipe ``fit_one_cycle(4); unfreeze(); fit_one_cycle(2, max_lr=slice(1e-6, 1e-4))`` is

    stages:
      - {name: head, epochs: 4, lr: [3e-3], freeze_to: -1}
      - {name: all,  epochs: 2, lr: [1e-6, 1e-4], freeze_to: 0}

A learning rate is written the way fastai accepts ``max_lr``:
- a number ``3e-3``: the same rate for every layer group;
- a pair ``[low, high]``: fastai's ``slice(low, high)``, spread geometrically over the groups;
- a single-element list ``[high]``: fastai's ``slice(high)``, ``high/10`` for every group but the
  last, which gets ``high``.
``freeze_to`` is fastai's ``learner.freeze_to(n)``: groups before ``n`` are frozen (their
BatchNorm layers still train when ``train_bn``); ``-1`` trains only the head, ``0`` everything.

A stage may also set its own one-cycle settings (``div_factor``, ``final_div_factor``,
``pct_start``, ``moms``: fastai's ``fit_one_cycle(..., div=, pct_start=, moms=)`` arguments; unset,
the schedule's apply) and its own data (``size``, ``batch_size``: progressive resizing; unset,
``data.size`` and ``data.batch_size``). ``schedule=fine_tune`` writes its stages with them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from src.core.problems import Problem, is_number, is_whole_number, raise_problems
from src.core.image_size import image_size_problems
from src.data.loading.dataset import batch_size_problems

LearningRate = float | Sequence[float]
FREEZE_TO_FIX = "use -1 (train only the head) or 0 (train everything)"
ONE_CYCLE_KEYS = ("div_factor", "final_div_factor", "pct_start", "moms")


def one_cycle_problems(prefix: str, settings: Mapping[str, Any]) -> list[Problem]:
    """The problems of the one-cycle ``settings`` given (any of :data:`ONE_CYCLE_KEYS`), keys under ``prefix``."""
    problems = []
    if "pct_start" in settings and not (is_number(settings["pct_start"]) and 0.0 < settings["pct_start"] < 1.0):
        problems.append(Problem(f"{prefix}.pct_start", settings["pct_start"], "a fraction strictly between 0 and 1",
                                "the share of each stage spent warming up: 0.3 (fastai's default)"))
    for key in ("div_factor", "final_div_factor"):
        if key in settings and not (is_number(settings[key]) and settings[key] > 0):
            problems.append(Problem(f"{prefix}.{key}", settings[key], "a positive number",
                                    "fastai's defaults: div_factor=25, final_div_factor=1e4"))
    moms = settings.get("moms", (0.0, 0.0, 0.0))
    if isinstance(moms, str) or not isinstance(moms, Sequence) or len(moms) != 3 or not all(map(is_number, moms)):
        problems.append(Problem(f"{prefix}.moms", moms, "three numbers (start, middle, end)",
                                f"fastai's default: {prefix}.moms=[0.95,0.85,0.95]"))
    return problems


def lr_problems(lr: Any, key: str = "lr") -> list[Problem]:
    """A learning rate must be a positive number, ``[high]`` or ``[low, high]`` with ``low <= high``."""
    is_list = isinstance(lr, Sequence) and not isinstance(lr, str)
    values = list(lr) if is_list else [lr]
    if not values or len(values) > 2 or not all(is_number(v) and math.isfinite(v) and v > 0 for v in values):
        return [Problem(key, values if is_list else lr, "a positive number, [high] or [low, high] of positive numbers",
                        f"e.g. {key}=[3e-3] (fastai's default head learning rate)")]
    if len(values) == 2 and values[0] > values[1]:
        return [Problem(key, values, "[low, high] with low <= high (the first layer group gets low, the head high)",
                        f"the pair is in the wrong order: write [{values[1]}, {values[0]}]")]
    return []


def layer_group_lrs(lr: LearningRate, num_groups: int) -> list[float]:
    """The max learning rate of each layer group for a stage's ``lr`` (see the module doc)."""
    raise_problems(lr_problems(lr))
    if is_number(lr):
        return [float(lr)] * num_groups
    values = [float(v) for v in lr]
    if len(values) == 1:  # fastai slice(high)
        return [values[0] / 10] * (num_groups - 1) + [values[0]]
    low, high = values
    if num_groups == 1:
        return [high]
    step = (high / low) ** (1 / (num_groups - 1))  # fastai's even_mults
    return [low * step**i for i in range(num_groups)]


@dataclass(frozen=True)
class Stage:
    """One ``fit_one_cycle`` call: ``epochs`` epochs, peak ``lr``, groups before ``freeze_to`` frozen.

    Construction only stores; :meth:`problems` says what cannot work (the schedule raises them).
    """

    epochs: int
    lr: LearningRate
    freeze_to: int = 0
    name: str = ""
    # The schedule's one-cycle settings, for this stage only (None: the schedule's).
    div_factor: float | None = None
    final_div_factor: float | None = None
    pct_start: float | None = None
    moms: Sequence[float] | None = None
    # Progressive resizing: this stage's image side and batch size (None: data.size, data.batch_size).
    size: int | None = None
    batch_size: int | None = None

    def one_cycle_overrides(self) -> dict[str, Any]:
        """The one-cycle settings this stage sets itself."""
        return {key: getattr(self, key) for key in ONE_CYCLE_KEYS if getattr(self, key) is not None}

    def problems(self, key: str, num_layer_groups: int | None = None) -> list[Problem]:
        """The stage's problems under config key ``key``; ``freeze_to``'s range too with ``num_layer_groups``."""
        problems = lr_problems(self.lr, f"{key}.lr")
        problems += one_cycle_problems(key, self.one_cycle_overrides())
        problems += image_size_problems(f"{key}.size", self.size, f"e.g. {key}.size=64", allowed_null="data.size")
        if self.batch_size is not None:
            problems += batch_size_problems(self.batch_size, f"{key}.batch_size")
        if not is_whole_number(self.epochs, minimum=1):
            problems.append(Problem(f"{key}.epochs", self.epochs, "a whole number >= 1", f"set {key}.epochs=1 or more"))
        if not is_whole_number(self.freeze_to):
            problems.append(Problem(f"{key}.freeze_to", self.freeze_to, "a whole number", FREEZE_TO_FIX))
        elif num_layer_groups is not None:
            problems += self.freeze_to_problems(key, num_layer_groups)
        return problems

    def freeze_to_problems(self, key: str, num_layer_groups: int) -> list[Problem]:
        """Whether ``freeze_to`` (a whole number) names one of the model's ``num_layer_groups`` groups."""
        if -num_layer_groups < self.freeze_to < num_layer_groups:
            return []
        last = num_layer_groups - 1
        return [Problem(f"{key}.freeze_to", self.freeze_to,
                        f"a layer group of the model, which has {num_layer_groups}: -{last} to {last}", FREEZE_TO_FIX)]


class StageSchedule:
    """The ordered stages of a run, the one-cycle settings every stage uses and ``train_bn``.

    The settings' values (fastai's defaults) are written once, in ``conf/schedule/fastai.yaml``.
    The constructor raises :class:`~src.core.problems.ConfigError` with every problem of
    :meth:`problems`; the config check lists the same ones before anything is built.
    """

    def __init__(
        self,
        stages: Sequence[Stage | Mapping],
        *,
        div_factor: float,
        final_div_factor: float,
        pct_start: float,
        moms: Sequence[float],
        train_bn: bool,
    ) -> None:
        raise_problems(self.problems(stages, div_factor, final_div_factor, pct_start, moms))
        self.stages = [as_stage(s) for s in stages]
        self.div_factor = div_factor
        self.final_div_factor = final_div_factor
        self.pct_start = pct_start
        self.moms = tuple(moms)
        self.train_bn = train_bn

    @staticmethod
    def problems(
        stages: Any,
        div_factor: Any,
        final_div_factor: Any,
        pct_start: Any,
        moms: Any,
        num_layer_groups: int | None = None,
    ) -> list[Problem]:
        """The problems of these settings (the ``schedule.*`` keys); ``freeze_to``'s range with ``num_layer_groups``."""
        problems = []
        if not stages:
            problems.append(Problem("schedule.stages", stages, "at least one stage", "schedule.stages is empty: add one, "
                                    "e.g. schedule.stages=[{epochs:4,lr:[3e-3],freeze_to:-1}]"))
        for index, stage in enumerate(stages or []):
            try:
                problems += as_stage(stage).problems(f"schedule.stages[{index}]", num_layer_groups)
            except TypeError as error:  # an unknown or missing key
                problems.append(Problem(f"schedule.stages[{index}]", stage, "a stage {epochs, lr, freeze_to, name}, "
                                        "optionally with its own " + ", ".join(ONE_CYCLE_KEYS) + ", size, batch_size",
                                        f"fix its keys ({error})"))
        problems += one_cycle_problems("schedule", {"pct_start": pct_start, "div_factor": div_factor,
                                                    "final_div_factor": final_div_factor, "moms": moms})
        return problems

    def one_cycle(self, index: int) -> dict[str, Any]:
        """Stage ``index``'s one-cycle settings: its own where it sets them, else the schedule's."""
        settings = {"div_factor": self.div_factor, "final_div_factor": self.final_div_factor,
                    "pct_start": self.pct_start, "moms": self.moms}
        return {**settings, **self.stages[index].one_cycle_overrides()}

    def data_at_epoch(self, epoch: int) -> tuple[int | None, int | None]:
        """The image size and batch size of epoch ``epoch``'s stage (None: the data's)."""
        stage = self.stages[self.stage_index_at_epoch(epoch)]
        return stage.size, stage.batch_size

    @property
    def resizes(self) -> bool:
        """Whether a stage sets its own image size or batch size (progressive resizing)."""
        return any(s.size is not None or s.batch_size is not None for s in self.stages)

    @property
    def total_epochs(self) -> int:
        return sum(s.epochs for s in self.stages)

    def stage_index_at_epoch(self, epoch: int) -> int:
        """Index of the stage that trains epoch ``epoch`` (0-based); the last stage past the end."""
        end = 0
        for index, stage in enumerate(self.stages):
            end += stage.epochs
            if epoch < end:
                return index
        return len(self.stages) - 1

    def first_epoch_of(self, index: int) -> int:
        return sum(s.epochs for s in self.stages[:index])

    def check_freeze_targets(self, num_groups: int) -> None:
        """Fail before training when a stage's ``freeze_to`` names a group the model does not have (the
        stages' other settings were checked when the schedule was built)."""
        raise_problems(problem for index, stage in enumerate(self.stages)
                       for problem in stage.freeze_to_problems(f"schedule.stages[{index}]", num_groups))


def as_stage(stage: Stage | Mapping) -> Stage:
    """A :class:`Stage` from a stage or its config mapping (``{epochs, lr, freeze_to, name, ...}``)."""
    if isinstance(stage, Stage):
        return stage
    values = dict(stage)
    if isinstance(values.get("moms"), Sequence) and not isinstance(values["moms"], str):
        values["moms"] = tuple(values["moms"])  # hashable, as the frozen dataclass's other fields
    return Stage(**values)
