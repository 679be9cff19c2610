"""fastai v2's ``learn.fine_tune`` as a schedule preset: ``schedule=fine_tune`` (conf/schedule/fine_tune.yaml).

fastai v2 (``fastai/callback/schedule.py``)::

    def fine_tune(self, epochs, base_lr=2e-3, freeze_epochs=1, lr_mult=100, pct_start=0.3, div=5.0, **kwargs):
        self.freeze()
        self.fit_one_cycle(freeze_epochs, slice(base_lr), pct_start=0.99, **kwargs)
        base_lr /= 2
        self.unfreeze()
        self.fit_one_cycle(epochs, slice(base_lr/lr_mult, base_lr), pct_start=pct_start, div=div, **kwargs)

with ``fit_one_cycle``'s ``div=25`` and ``div_final=1e5`` (each cycle ends at ``lr_max / div_final``).
Here a cycle ends at ``start / final_div_factor`` (fastai v1's form, ``start = lr_max / div``), so a
stage's ``final_div_factor`` is ``div_final / div``.

The two stages are written into the config by the ``fine_tune_stages`` resolver from the
schedule's values, so ``config.yaml`` shows them as plain stages and everything that reads
``schedule.stages`` (the config check, ``lr_find``, sweeps, trackers) sees them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import ListConfig, OmegaConf

from src.core.problems import Problem, is_number, is_whole_number, raise_problems
from src.optim.stages import Stage, StageSchedule

FROZEN_PCT_START = 0.99  # fastai's fine_tune: the frozen cycle warms up for nearly all of it
RESOLVER = "fine_tune_stages"


def fine_tune_problems(epochs: Any, base_lr: Any, freeze_epochs: Any, lr_mult: Any, div: Any, div_final: Any) -> list[Problem]:
    """The problems of the preset's own keys (``schedule.epochs`` ...)."""
    problems = [Problem(f"schedule.{key}", value, "a whole number >= 1", f"e.g. schedule.{key}=1")
                for key, value in (("epochs", epochs), ("freeze_epochs", freeze_epochs))
                if not is_whole_number(value, minimum=1)]
    problems += [Problem(f"schedule.{key}", value, "a positive number", f"fastai's default: schedule.{key}={default}")
                 for key, value, default in (("base_lr", base_lr, 2e-3), ("lr_mult", lr_mult, 100),
                                             ("div", div, 5.0), ("div_final", div_final, 1e5))
                 if not (is_number(value) and value > 0)]
    return problems


def fine_tune_stages(*, epochs: int, base_lr: float, freeze_epochs: int, lr_mult: float, pct_start: float,
                     div: float, div_factor: float, div_final: float) -> list[dict[str, Any]]:
    """fastai's two ``fit_one_cycle`` calls of ``fine_tune`` as stages (see the module doc).

    ``pct_start`` and ``div`` are the unfrozen cycle's (fine_tune's arguments); the frozen one has
    ``pct_start`` 0.99 and ``fit_one_cycle``'s ``div`` (the schedule's ``div_factor``).
    """
    raise_problems(fine_tune_problems(epochs, base_lr, freeze_epochs, lr_mult, div, div_final))
    half = base_lr / 2
    return [
        {"name": "frozen", "epochs": freeze_epochs, "lr": [base_lr], "freeze_to": -1,
         "pct_start": FROZEN_PCT_START, "div_factor": div_factor, "final_div_factor": div_final / div_factor},
        {"name": "unfrozen", "epochs": epochs, "lr": [half / lr_mult, half], "freeze_to": 0,
         "pct_start": pct_start, "div_factor": div, "final_div_factor": div_final / div},
    ]


def _resolve_stages(_parent_: Mapping) -> ListConfig:
    keys = ("epochs", "base_lr", "freeze_epochs", "lr_mult", "pct_start", "div", "div_factor", "div_final")
    return OmegaConf.create(fine_tune_stages(**{key: _parent_[key] for key in keys}))  # stages as config nodes


def register_resolvers() -> None:
    """Make ``${fine_tune_stages:}`` known to OmegaConf: every entry point calls this before Hydra composes its
    config, and so must code that composes the configs itself (tests/conftest.py does)."""
    OmegaConf.register_new_resolver(RESOLVER, _resolve_stages, replace=True)


class FineTuneSchedule(StageSchedule):
    """The stage schedule of ``schedule=fine_tune``: its stages (written by ``${fine_tune_stages:}``)
    and the fastai values they were written from (``epochs``, ``base_lr``, ...), kept for the record."""

    def __init__(self, stages: Sequence[Stage | Mapping], *, epochs: int, base_lr: float, freeze_epochs: int,
                 lr_mult: float, div: float, div_final: float, **settings: Any) -> None:
        super().__init__(stages, **settings)
        self.preset = {"epochs": epochs, "base_lr": base_lr, "freeze_epochs": freeze_epochs, "lr_mult": lr_mult,
                       "div": div, "div_final": div_final}
