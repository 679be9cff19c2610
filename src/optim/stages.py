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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

LearningRate = float | Sequence[float]


def layer_group_lrs(lr: LearningRate, num_groups: int) -> list[float]:
    """The max learning rate of each layer group for a stage's ``lr`` (see the module doc)."""
    if isinstance(lr, (int, float)):
        values = [float(lr)]
        if values[0] <= 0 or not math.isfinite(values[0]):
            raise ValueError(f"learning rate must be a positive number, got {lr}")
        return values * num_groups
    values = [float(v) for v in lr]
    if any(v <= 0 or not math.isfinite(v) for v in values):
        raise ValueError(f"learning rates must be positive numbers, got {list(lr)}")
    if len(values) == 1:  # fastai slice(high)
        return [values[0] / 10] * (num_groups - 1) + [values[0]]
    if len(values) != 2:
        raise ValueError(
            f"a learning rate is a number, [high] or [low, high]; got {list(lr)} with {len(values)} values"
        )
    low, high = values
    if low > high:
        raise ValueError(
            f"learning-rate pair [low, high] is in the wrong order: {list(lr)}; write [{high}, {low}] "
            "(the first layer group gets low, the head gets high)"
        )
    if num_groups == 1:
        return [high]
    step = (high / low) ** (1 / (num_groups - 1))  # fastai's even_mults
    return [low * step**i for i in range(num_groups)]


@dataclass(frozen=True)
class Stage:
    """One ``fit_one_cycle`` call: ``epochs`` epochs, peak ``lr``, groups before ``freeze_to`` frozen."""

    epochs: int
    lr: LearningRate
    freeze_to: int = 0
    name: str = ""

    def __post_init__(self) -> None:
        if int(self.epochs) != self.epochs or self.epochs < 1:
            raise ValueError(f"stage {self.name!r}: epochs must be a whole number >= 1, got {self.epochs}")
        layer_group_lrs(self.lr, 3)  # validates the form of lr early, before any data is read


class StageSchedule:
    """The ordered stages of a run, the one-cycle settings every stage uses and ``train_bn``.

    The settings' values (fastai's defaults) are written once, in ``conf/schedule/fastai.yaml``.
    """

    def __init__(
        self,
        stages: Sequence[Stage | dict],
        *,
        div_factor: float,
        final_div_factor: float,
        pct_start: float,
        moms: Sequence[float],
        train_bn: bool,
    ) -> None:
        self.stages = [s if isinstance(s, Stage) else Stage(**s) for s in stages]
        if not self.stages:
            raise ValueError(
                "schedule.stages is empty: give at least one stage, e.g. "
                "schedule.stages=[{epochs:4,lr:3e-3,freeze_to:-1}]"
            )
        if not 0.0 < pct_start < 1.0:
            raise ValueError(f"schedule.pct_start must be in (0, 1), got {pct_start}")
        if div_factor <= 0 or final_div_factor <= 0:
            raise ValueError(f"div factors must be positive, got {div_factor} and {final_div_factor}")
        if len(moms) != 3:
            raise ValueError(f"schedule.moms is (start, middle, end), got {list(moms)}")
        self.div_factor = div_factor
        self.final_div_factor = final_div_factor
        self.pct_start = pct_start
        self.moms = tuple(moms)
        self.train_bn = train_bn

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
        """Fail before training when a stage's ``freeze_to`` names a group the model does not have."""
        for stage in self.stages:
            if not -num_groups < stage.freeze_to < num_groups:
                raise ValueError(
                    f"stage {stage.name!r}: freeze_to={stage.freeze_to} but the model has {num_groups} "
                    f"layer groups; use 0 (train all) to {num_groups - 1}, or -1 (train only the head)"
                )
