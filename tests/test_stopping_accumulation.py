"""Early stopping and gradient accumulation from the config, the Lightning way (issue 15 item 6)."""

from __future__ import annotations

import json

import torch

from tests.conftest import train_tiny_run


def test_accumulation_steps_the_one_cycle_per_optimizer_step(tmp_path):
    # 3 batches an epoch, accumulated by 2: the optimizer steps after batch 2 and after the last batch (3)
    run = train_tiny_run(tmp_path, ["trainer.accumulate_grad_batches=2"])
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 4  # 2 epochs x 2 optimizer steps, not 2 x 3 batches
    scheduler = checkpoint["lr_schedulers"][0]
    assert scheduler["stage_steps"] == [2, 2]  # each one-cycle stage is planned in optimizer steps
    assert scheduler["last_epoch"] == 4  # and stepped once per optimizer step, so each cycle ends on time
    # the second stage ended at its last step: its head rate came down to start / final_div_factor
    head_lr = scheduler["_last_lr"][-1]
    peak = 1e-4  # the head's rate of stage 'all' (lr=[1e-6, 1e-4])
    assert head_lr < peak / 25 / 1e3
    assert json.loads((run / "metrics.json").read_text())["stopped_early_after_epoch"] is None  # ran every epoch


def test_early_stopping_stops_a_run_and_says_so(tmp_path, caplog):
    # min_delta=1.0: no epoch can improve val/error_rate by more than 1, so the run stops after patience + 1 epochs
    run = train_tiny_run(tmp_path, ["callbacks=[default,early_stopping]", "callbacks.early_stopping.patience=1",
                                    "callbacks.early_stopping.min_delta=1.0",
                                    "schedule.stages=[{name:head,epochs:6,lr:[3e-3],freeze_to:-1}]"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 2  # of the 6 the schedule planned
    assert metrics["stopped_early_after_epoch"] == 2
    assert "early stopping ended the run after epoch 2 of the 6 planned: val/error_rate did not improve" in caplog.text
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1
