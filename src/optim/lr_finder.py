"""fastai's learning-rate finder (Leslie Smith's LR range test) on a model in one of its stages.

A small loop of its own rather than Lightning's ``Tuner.lr_find`` (which swaps the module's
schedulers for its ramp): that one keeps going through a NaN loss (NaN > 4 x best is false),
searches only in the frozen set training starts in (not a later stage's) and suggests only the
steepest point, not fastai's ``valley``. Here every layer-group parameter group gets the same
learning rate, as in fastai's ``learn.lr_find()`` with its default scalar ``start_lr``/``end_lr``;
the semantics are fastai's: ``lr_i = start_lr * (end_lr / start_lr) ** (i / num_steps)``, loss
smoothed by an exponential moving average (``beta``) with bias correction, stop when the smoothed
loss passes ``stop_factor`` times its minimum, weights (and BatchNorm statistics), the frozen set
and the random generators restored afterwards.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from src.optim.freezing import freeze_layer_groups
from src.core.random_state import random_states, set_random_states

log = logging.getLogger(__name__)


def valley(lrs: Sequence[float], losses: Sequence[float]) -> float:
    """fastai v2's default: the learning rate a little past the middle of the longest valley.

    The longest valley is the longest strictly decreasing subsequence of the loss (dynamic
    programming over all earlier points); the suggestion sits at ``start + int(s) + int(s / 2)``
    with ``s = (end - start) / 3``, as in fastai's ``valley``.
    """
    n = len(losses)
    max_start, max_end = 0, 0
    lds = [1] * n
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    # max_start is one before the valley's first point (fastai's arithmetic); a two-point valley
    # would give -1, which fastai reads as the last learning rate: clamp to the first instead.
    return float(lrs[max(0, max_start + int(sections) + int(sections / 2))])


def minimum(lrs: Sequence[float], losses: Sequence[float]) -> float:
    """fastai's ``minimum``: a tenth of the learning rate with the lowest loss."""
    return float(lrs[int(np.argmin(losses))]) / 10


def steep(lrs: Sequence[float], losses: Sequence[float]) -> float:
    """fastai's ``steep``: where the loss falls fastest against log(learning rate)."""
    lrs_, losses_ = np.asarray(lrs, dtype=float), np.asarray(losses, dtype=float)
    grads = np.diff(losses_) / np.diff(np.log(lrs_))
    return float(lrs_[int(np.argmin(grads))])


SUGGESTIONS = {"valley": valley, "minimum": minimum, "steep": steep}


@dataclass
class LRFinderResult:
    lrs: list[float]
    losses: list[float]  # smoothed and debiased
    num_steps: int

    def trimmed(self) -> tuple[list[float], list[float]]:
        """The points fastai suggests from: without the first tenth and the last five, up to a NaN."""
        lrs, losses = self.lrs[self.num_steps // 10 : -5], self.losses[self.num_steps // 10 : -5]
        if any(math.isnan(v) for v in losses):
            end = next(i for i, v in enumerate(losses) if math.isnan(v))
            lrs, losses = lrs[:end], losses[:end]
        return lrs, losses

    def suggestions(self) -> dict[str, float]:
        lrs, losses = self.trimmed()
        if len(lrs) < 2:
            raise ValueError(
                f"the finder stopped after {len(self.lrs)} of {self.num_steps} steps, too few to suggest a "
                "learning rate (the loss diverged at once); lower lr_finder.start_lr or check the data"
            )
        return {name: func(lrs, losses) for name, func in SUGGESTIONS.items()}


def _forever(batches: Iterable) -> Iterator:
    while True:
        empty = True
        for batch in batches:
            empty = False
            yield batch
        if empty:
            raise ValueError("the learning-rate finder got no training batches: check data.root and data.batch_size")


def lr_find_on_batches(
    model: torch.nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    stage_index: int = 0,
    start_lr: float,
    end_lr: float,
    num_steps: int,
    beta: float,
    stop_factor: float,
    device: str | torch.device = "cpu",
) -> LRFinderResult:
    """Run the range test on ``model`` (an ``ImageClassifierModule``) frozen as in its stage ``stage_index``.

    ``batches`` is re-iterated (a DataLoader) until ``num_steps`` steps are done or the loss diverges.
    The settings (fastai's defaults) are ``lr_finder`` in ``conf/train.yaml``.
    """
    if not 0 < start_lr < end_lr:
        raise ValueError(f"lr_finder needs 0 < start_lr < end_lr, got start_lr={start_lr}, end_lr={end_lr}")
    stages = model.schedule.stages
    if not -len(stages) <= stage_index < len(stages):
        raise ValueError(f"stage={stage_index} but the schedule has {len(stages)} stage(s): use 0 to {len(stages) - 1}")
    saved = copy.deepcopy(model.state_dict())
    frozen = {name: p.requires_grad for name, p in model.named_parameters()}
    generators = random_states()
    model.to(device)
    freeze_layer_groups(model.net.layer_groups(), stages[stage_index].freeze_to, model.schedule.train_bn)
    optimizer = model.layer_group_optimizer()
    model.train()
    lrs: list[float] = []
    losses: list[float] = []
    average, best = 0.0, math.inf
    try:
        for step, (images, labels) in zip(range(num_steps), _forever(batches)):
            lr = start_lr * (end_lr / start_lr) ** (step / num_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = model.criterion(model(images.to(device)), labels.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            average = beta * average + (1 - beta) * loss.item()
            smoothed = average / (1 - beta ** (step + 1))
            lrs.append(lr)
            losses.append(smoothed)
            if smoothed > stop_factor * best or math.isnan(smoothed):
                break
            best = min(best, smoothed)
    finally:
        model.load_state_dict(saved)
        for name, p in model.named_parameters():
            p.requires_grad_(frozen[name])
        set_random_states(generators)
    log.info("lr finder: %d steps, learning rates %.2e to %.2e", len(lrs), lrs[0], lrs[-1])
    return LRFinderResult(lrs, losses, num_steps)
