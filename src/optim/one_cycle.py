"""fastai's one-cycle policy, restarted for every training stage, as a PyTorch LR scheduler.

torch's ``OneCycleLR`` implements one cycle per scheduler; chaining several on one optimizer
(``SequentialLR``) fights over each group's ``initial_lr``. This scheduler computes every step
from the global step alone, so its state is one integer and resuming mid-stage is exact.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


def _cos_anneal(start: float, end: float, fraction: float) -> float:
    return end + (start - end) / 2 * (1 + math.cos(math.pi * fraction))


def one_cycle_value(step: int, total_steps: int, start: float, peak: float, end: float, pct_start: float) -> float:
    """Cosine warm-up from ``start`` to ``peak`` over ``pct_start``, then cosine down to ``end``."""
    warmup = max(1, round(total_steps * pct_start))
    if step < warmup:
        return _cos_anneal(start, peak, step / warmup)
    return _cos_anneal(peak, end, min(1.0, (step - warmup) / max(1, total_steps - warmup)))


class StagedOneCycleLR(LRScheduler):
    """One cosine one-cycle per stage; each param group follows its layer group's peak rate.

    Args:
        optimizer: an optimizer whose param groups carry a ``"layer_group"`` index.
        stage_steps: optimizer steps in each stage.
        stage_lrs: for each stage, the peak learning rate of each layer group.
        div_factor: the cycle starts at ``peak / div_factor``.
        final_div_factor: and ends at ``start / final_div_factor``.
        pct_start: fraction of the stage spent warming up.
        moms: Adam's beta1 (or SGD momentum) at start, peak and end.
        stage_settings: for each stage, the settings above that it sets itself (fastai's
            ``fit_one_cycle(div=, pct_start=, ...)`` of one call); the others apply where it sets none.

    A stage's length may be set again when it starts (:meth:`set_stage_steps`), once its loader
    is known (a stage with its own batch size has its own number of steps per epoch).

    The values (fastai's ``fit_one_cycle`` defaults) are written once, in ``conf/schedule/fastai.yaml``.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        stage_steps: Sequence[int],
        stage_lrs: Sequence[Sequence[float]],
        *,
        div_factor: float,
        final_div_factor: float,
        pct_start: float,
        moms: Sequence[float],
        stage_settings: Sequence[Mapping[str, Any]] | None = None,
        last_epoch: int = -1,
    ) -> None:
        if len(stage_steps) != len(stage_lrs):
            raise ValueError(f"{len(stage_steps)} stage lengths but {len(stage_lrs)} stage learning rates")
        if stage_settings is not None and len(stage_settings) != len(stage_steps):
            raise ValueError(f"{len(stage_steps)} stage lengths but {len(stage_settings)} stage settings")
        self.stage_steps = [int(s) for s in stage_steps]
        self.stage_lrs = [list(lrs) for lrs in stage_lrs]
        self.div_factor = div_factor
        self.final_div_factor = final_div_factor
        self.pct_start = pct_start
        self.moms = tuple(moms)
        self.stage_settings = [dict(s) for s in stage_settings] if stage_settings is not None else [{} for _ in stage_steps]
        for group in optimizer.param_groups:
            if "layer_group" not in group:
                raise ValueError("StagedOneCycleLR needs param groups with a 'layer_group' index")
        super().__init__(optimizer, last_epoch)

    def _stage_and_step(self, step: int) -> tuple[int, int]:
        for index, length in enumerate(self.stage_steps):
            if step < length:
                return index, step
            step -= length
        return len(self.stage_steps) - 1, self.stage_steps[-1]  # past the end: hold the final value

    def set_stage_steps(self, stage: int, steps: int) -> None:
        """The length of ``stage`` in optimizer steps, known once its loader is built (before its first step)."""
        self.stage_steps[stage] = int(steps)

    def get_lr(self) -> list[float]:
        stage, step = self._stage_and_step(self.last_epoch)
        total = self.stage_steps[stage]
        settings = self.stage_settings[stage] if stage < len(self.stage_settings) else {}
        div_factor = settings.get("div_factor", self.div_factor)
        final_div_factor = settings.get("final_div_factor", self.final_div_factor)
        pct_start = settings.get("pct_start", self.pct_start)
        moms = tuple(settings.get("moms", self.moms))
        lrs = []
        for group in self.optimizer.param_groups:
            peak = self.stage_lrs[stage][group["layer_group"]]
            start = peak / div_factor
            lrs.append(one_cycle_value(step, total, start, peak, start / final_div_factor, pct_start))
        momentum = one_cycle_value(step, total, moms[0], moms[1], moms[2], pct_start)
        for group in self.optimizer.param_groups:
            if "betas" in group:
                group["betas"] = (momentum, *group["betas"][1:])
            elif "momentum" in group:
                group["momentum"] = momentum
        return lrs
