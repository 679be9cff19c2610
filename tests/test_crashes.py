"""Crashes: a NaN loss stops the run naming where, checkpoints survive a crash mid-write, an
unwritable output folder fails at start-up."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import open_dict

from src.runs.checkpoint_io import AtomicCheckpointIO
from src.models.classifier_module import NonFiniteLossError
from src.runs.training import train


class _NanLoss(torch.nn.Module):
    def __init__(self, criterion: torch.nn.Module) -> None:
        super().__init__()
        self.criterion = criterion

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.criterion(logits, labels) * float("nan")


class PoisonLoss(L.Callback):
    """From global step ``at_step`` on, the loss is NaN (what an exploding run produces)."""

    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.at_step:
            pl_module.train_criterion = _NanLoss(pl_module.train_criterion)  # the training loss


def test_a_nan_loss_stops_the_run_naming_step_and_stage_and_keeps_the_last_good_checkpoint(tiny_cfg):
    with open_dict(tiny_cfg):
        tiny_cfg.callbacks.poison = {"_target_": f"{__name__}.PoisonLoss", "at_step": 4}
    with pytest.raises(NonFiniteLossError) as raised:
        train(tiny_cfg)
    message = str(raised.value)
    assert "the training loss is nan at step 4 (epoch 1, batch 1) of stage 1 'all'" in message
    assert "Lower schedule.stages[1].lr" in message
    run = Path(tiny_cfg.paths.output_dir)
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert (last["epoch"], last["global_step"]) == (0, 3)  # the end of the first epoch, before the NaN
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())
    assert not (run / "metrics.json").exists()


def test_a_crash_while_writing_a_checkpoint_leaves_the_previous_one_whole(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"epoch": 1, "w": torch.ones(1000)}, path)

    def crash_halfway(obj, f):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", crash_halfway)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"epoch": 2, "w": torch.zeros(1000)}, path)
    monkeypatch.undo()
    kept = torch.load(path, weights_only=True)
    assert kept["epoch"] == 1 and torch.equal(kept["w"], torch.ones(1000))
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no temporary file left behind


def test_an_unwritable_output_dir_fails_at_start_up(tiny_cfg, tmp_path, started):
    blocker = tmp_path / "not a folder"
    blocker.write_text("")
    with open_dict(tiny_cfg):
        tiny_cfg.paths.output_dir = str(blocker / "run")
    with pytest.raises(OSError, match="paths.output_dir=.*is not writable"):
        train(tiny_cfg)
    assert started == []  # before any image was opened or a trainer built
