"""``schedule=fine_tune``: fastai v2's ``learn.fine_tune``, checked step by step against fastai's formulas."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import open_dict

from src.runs.config_checks import check_train_config
from src.core.problems import ConfigError
from src.optim.stages import layer_group_lrs
from src.runs.builder import build_module
from src.runs.training import train
from tests.conftest import TINY_OVERRIDES, compose_config, copy_sample
from tests.stage_recorder import read_records


def sched_cos(start: float, end: float, pos: float) -> float:
    """fastai v2's SchedCos."""
    return start + (1 + math.cos(math.pi * (1 - pos))) * (end - start) / 2


def combined_cos(pct: float, start: float, middle: float, end: float, pos: float) -> float:
    """fastai v2's combined_cos(pct, start, middle, end) at position ``pos`` of the cycle (combine_scheds)."""
    if pos < pct:
        return sched_cos(start, middle, pos / pct)
    return sched_cos(middle, end, (pos - pct) / (1 - pct))


def fastai_fine_tune(freeze_epochs: int, epochs: int, steps_per_epoch: int, base_lr: float = 2e-3,
                     lr_mult: float = 100, pct_start: float = 0.3, div: float = 5.0):
    """(lrs of the three layer groups, beta1, trainable groups) at every step of fastai's fine_tune."""
    steps = []
    cycles = [(freeze_epochs, [base_lr / 10, base_lr / 10, base_lr], 0.99, 25.0, [False, False, True]),
              (epochs, [base_lr / 2 / lr_mult, base_lr / 2 / math.sqrt(lr_mult), base_lr / 2], pct_start, div,
               [True, True, True])]
    for cycle_epochs, lr_max, pct, div_, trains in cycles:
        total = cycle_epochs * steps_per_epoch
        for i in range(total):
            pos = i / total  # fastai's pct_train
            lrs = [combined_cos(pct, lr / div_, lr, lr / 1e5, pos) for lr in lr_max]
            steps.append((lrs, combined_cos(pct, 0.95, 0.85, 0.95, pos), trains))
    return steps


def test_the_preset_writes_fastais_two_cycles_as_stages():
    cfg = compose_config(["schedule=fine_tune", "schedule.epochs=4", "schedule.base_lr=1e-2", "schedule.lr_mult=10"])
    schedule = instantiate(cfg.schedule)
    frozen, unfrozen = schedule.stages
    assert (frozen.epochs, frozen.freeze_to, unfrozen.epochs, unfrozen.freeze_to) == (1, -1, 4, 0)
    assert layer_group_lrs(frozen.lr, 3) == pytest.approx([1e-3, 1e-3, 1e-2])  # slice(base_lr)
    assert layer_group_lrs(unfrozen.lr, 3) == pytest.approx([5e-4, 5e-4 * 10**0.5, 5e-3])  # slice(lr/2/mult, lr/2)
    assert schedule.one_cycle(0) == {"div_factor": 25.0, "final_div_factor": 4000.0, "pct_start": 0.99,
                                     "moms": (0.95, 0.85, 0.95)}
    assert schedule.one_cycle(1) == {"div_factor": 5.0, "final_div_factor": 2e4, "pct_start": 0.3,
                                     "moms": (0.95, 0.85, 0.95)}


def test_bad_preset_values_name_the_preset_key():
    cfg = compose_config(["schedule=fine_tune", "schedule.freeze_epochs=0", "schedule.lr_mult=-1"])
    with pytest.raises(Exception) as raised:
        instantiate(cfg.schedule)
    assert "schedule.freeze_epochs=0: expected a whole number >= 1" in str(raised.value)
    assert "schedule.lr_mult=-1: expected a positive number" in str(raised.value)


def test_a_stages_one_cycle_settings_are_checked_with_their_keys(tmp_path: Path):
    cfg = compose_config([*TINY_OVERRIDES, f"data.root={copy_sample(tmp_path / 'images')}",
                          "schedule.stages=[{epochs:1,lr:1e-3,pct_start:1.2,div_factor:0,moms:[0.9]}]"])
    with pytest.raises(ConfigError) as raised:
        check_train_config(cfg)
    assert [p.key for p in raised.value.problems] == ["schedule.stages[0].pct_start", "schedule.stages[0].div_factor",
                                                      "schedule.stages[0].moms"]


# The tiny run without its own stages: schedule=fine_tune writes them.
TINY_WITHOUT_STAGES = [o for o in TINY_OVERRIDES if not o.startswith("schedule.stages=")]


def test_fine_tune_learning_rates_and_momentum_of_every_step_are_fastais(tmp_path: Path):
    """The run's module, from the real config, with 20 steps an epoch: its scheduler, stepped as Lightning does."""
    cfg = compose_config([*TINY_WITHOUT_STAGES, "schedule=fine_tune", "schedule.freeze_epochs=5", "schedule.epochs=1"])
    module = build_module(cfg, classes=["a", "b"], multi_label=False)
    module.steps_per_epoch = lambda: 20  # what the trainer counts for 40 images in batches of 2
    optimizers = module.configure_optimizers()
    optimizer, scheduler = optimizers["optimizer"], optimizers["lr_scheduler"]["scheduler"]
    expected = fastai_fine_tune(freeze_epochs=5, epochs=1, steps_per_epoch=20)
    for step, (lrs, beta1, _) in enumerate(expected):
        groups = optimizer.param_groups
        assert [g["lr"] for g in groups] == pytest.approx([lrs[g["layer_group"]] for g in groups], rel=1e-9), step
        assert groups[0]["betas"][0] == pytest.approx(beta1, rel=1e-9), step
        optimizer.step()
        scheduler.step()


def fine_tune_steps(tmp_path: Path, per_class: int, freeze_epochs: int, batch_size: int) -> list[dict]:
    """Train ``schedule=fine_tune`` (``schedule.epochs=1``) on 2 classes x ``per_class`` real images with every
    training batch (the loader's, not limit_train_batches'): what each training step saw (StageRecorder)."""
    root = copy_sample(tmp_path / "images", classes=2, per_class=per_class)
    records = tmp_path / "steps.jsonl"
    cfg = compose_config([*TINY_WITHOUT_STAGES, f"data.root={root}", "schedule=fine_tune",
                          f"schedule.freeze_epochs={freeze_epochs}", "schedule.epochs=1", f"data.batch_size={batch_size}",
                          "trainer.limit_train_batches=null",
                          "+callbacks.recorder._target_=tests.stage_recorder.StageRecorder",
                          f"+callbacks.recorder.path={records}"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
    train(cfg)
    return [r for r in read_records(records) if r["kind"] == "train"]


@pytest.mark.slow  # 120 training steps and 6 validations (a minute on a quiet 2-core CPU)
def test_fine_tune_run_learning_rates_momentum_and_frozen_groups_at_every_step(tmp_path: Path):
    # 40 training images in batches of 2: 20 steps an epoch, so the frozen cycle (5 epochs, 100
    # steps) warms up for 99 steps and the unfrozen one (20 steps) for 6, whole steps as in fastai.
    steps = fine_tune_steps(tmp_path, per_class=25, freeze_epochs=5, batch_size=2)
    expected = fastai_fine_tune(freeze_epochs=5, epochs=1, steps_per_epoch=20)
    assert len(steps) == len(expected) == 120
    for step, (lrs, beta1, trains) in zip(steps, expected):
        assert step["lrs"] == pytest.approx([lrs[g] for g in step["layer_groups"]], rel=1e-9), step["step"]
        assert step["beta1"] == pytest.approx(beta1, rel=1e-9), step["step"]
        assert step["trains"] == trains, step["step"]
    assert steps[98]["lrs"][-1] < steps[99]["lrs"][-1] == pytest.approx(2e-3)  # the frozen peak, at step 99
    assert steps[106]["lrs"][-1] == pytest.approx(1e-3)  # the unfrozen peak, base_lr / 2, after 6 steps


def test_fine_tune_run_freezes_the_body_for_freeze_epochs_then_trains_everything(tmp_path: Path):
    """The real run, short: the frozen set of every step, and the stages' learning rates at their first steps."""
    steps = fine_tune_steps(tmp_path, per_class=10, freeze_epochs=2, batch_size=4)  # 16 training images: 4 steps of 4
    assert [r["epoch"] for r in steps] == [0] * 4 + [1] * 4 + [2] * 4
    assert [r["trains"] for r in steps] == [[False, False, True]] * 8 + [[True, True, True]] * 4
    first, unfrozen = steps[0], steps[8]
    assert [first["lrs"][first["layer_groups"].index(g)] for g in range(3)] == pytest.approx([2e-4 / 25, 2e-4 / 25, 2e-3 / 25])
    assert [unfrozen["lrs"][unfrozen["layer_groups"].index(g)] for g in range(3)] == pytest.approx(
        [1e-5 / 5, 1e-4 / 5, 1e-3 / 5])
