"""Crashes: a NaN loss stops the run naming where, checkpoints survive a crash mid-write, an
unwritable output folder fails at start-up."""

from __future__ import annotations

import errno
import os
from contextlib import contextmanager
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
    with pytest.raises(OSError, match="(?i)no space left"):
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


class _DiskFullAfter:
    """``atomic_open`` whose files take ``room`` bytes and then raise ``ENOSPC``, as a full disk does,
    from the ``save_checkpoint`` call number ``from_call`` on (earlier ones write normally)."""

    def __init__(self, from_call: int, room: int = 4096) -> None:
        from src.core import atomic_write

        self.real, self.from_call, self.room, self.calls = atomic_write.atomic_open, from_call, room, 0

    @contextmanager
    def __call__(self, path, mode="w", **kwargs):
        self.calls += 1
        with self.real(path, mode, **kwargs) as f:
            yield f if self.calls < self.from_call else _FullFile(f, self.room)


class _FullFile:
    def __init__(self, f, room: int) -> None:
        self.f, self.room = f, room

    def write(self, data) -> int:
        if self.room < len(data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def test_a_full_disk_while_writing_a_checkpoint_says_so_in_one_line_and_keeps_the_previous_one(tmp_path, monkeypatch):
    from src.runs import checkpoint_io

    path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"epoch": 1, "w": torch.ones(1000)}, path)
    monkeypatch.setattr(checkpoint_io, "atomic_open", _DiskFullAfter(from_call=1))
    with pytest.raises(checkpoint_io.CheckpointDiskFullError) as raised:  # the real torch.save's RuntimeError
        io.save_checkpoint({"epoch": 2, "w": torch.zeros(2**20)}, path)
    message = str(raised.value)
    assert "\n" not in message and "inline_container" not in message
    assert f"no space left on the disk of {path.parent} to write last.ckpt: " in message
    assert "MiB free, the checkpoint needs about 4 MiB" in message and "the previous last.ckpt is intact" in message
    assert "paths.output_dir" not in message and "ckpt_path=last" in message
    kept = torch.load(path, weights_only=True)
    assert kept["epoch"] == 1 and torch.equal(kept["w"], torch.ones(1000))
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


def test_a_run_stopped_by_a_full_disk_resumes_in_place_with_the_room_its_checkpoints_need(tiny_cfg, monkeypatch):
    """The default config: the disk fills at the second epoch's checkpoint; the same run is resumed
    in place on a disk with less free room than a new run's three checkpoints but more than the
    temporary file (and the difference) that replacing best.ckpt and last.ckpt needs."""
    import shutil
    from collections import namedtuple

    from src.runs import checkpoint_io, run_files, training

    nets = []
    monkeypatch.setattr(training, "check_room_for_checkpoints",
                        lambda output_dir, net, replaced: nets.append(net))
    monkeypatch.setattr(checkpoint_io, "atomic_open", _DiskFullAfter(from_call=3))  # epoch 0 wrote best and last
    with pytest.raises(checkpoint_io.CheckpointDiskFullError, match="the previous (best|last).ckpt is intact"):
        train(tiny_cfg)
    monkeypatch.undo()
    run = Path(tiny_cfg.paths.output_dir)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]

    size = run_files.checkpoint_bytes(nets[0])
    replaced = run_files.checkpoint_files(tiny_cfg.callbacks)
    assert [p.name for p in replaced] == ["best.ckpt", "last.ckpt"]
    resume_needs = run_files.room_needed_for_checkpoints(nets[0], replaced)
    # The temporary file, and what the two kept files may still grow by up to the bound (a frozen body's
    # checkpoint has no optimizer moments for it).
    held = sum(path.stat().st_size for path in replaced)
    assert resume_needs == run_files.CHECKPOINT_FILES_AT_ONCE * size - held and size <= resume_needs
    usage = namedtuple("usage", "total used free")
    free = (resume_needs + run_files.CHECKPOINT_FILES_AT_ONCE * size) // 2
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 * size, 9 * size, free))
    with pytest.raises(OSError, match="MiB free; this model's checkpoints need"):
        run_files.check_room_for_checkpoints(run, nets[0], [])  # a new run would not fit
    with open_dict(tiny_cfg):
        tiny_cfg.ckpt_path = "last"
    train(tiny_cfg)  # the same run, in place
    finished = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert finished["epoch"] == 1
