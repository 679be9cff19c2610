"""kill -9 mid-epoch, then `ckpt_path=last` in the same run directory, with the default config
(loader workers, persistent, every callback): the run finishes as if never killed (the same
stage, and the same final metrics as an uninterrupted run). SIGTERM mid-epoch: exit status 143 and
one line naming the saved checkpoint and the command that resumes it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf

from src.models.safe_load import DamagedFileError
from src.runs.training import resolve_ckpt_path
from tests.conftest import PROJECT_ROOT, TINY_OVERRIDES, copy_sample

# Two stages of two epochs, three batches each: a kill at step 4 (epoch 1, batch 1) resumes from the
# end of epoch 0, in the first stage; one at step 10 (epoch 3, batch 1) from the end of epoch 2, in
# the second stage (its optimizer moments cleared at its start, its frozen set different).
STAGES = "schedule.stages=[{name:head,epochs:2,lr:[3e-3],freeze_to:-1},{name:all,epochs:2,lr:[1e-4,1e-3],freeze_to:0}]"
# The tiny run's sizes, with the defaults it turns off for speed put back: what this test is about is
# resuming as users run, with loader workers (num_workers=auto, persistent) and every callback.
DEFAULTS_KEPT = ("data.num_workers", "schedule.stages", "~callbacks")
OVERRIDES = [o for o in TINY_OVERRIDES if not o.startswith(DEFAULTS_KEPT)] + [STAGES]


class KillAt(L.Callback):
    """SIGKILLs its own process at global step ``at_step``: no handler, no cleanup, like `kill -9`."""

    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.at_step:
            os.kill(os.getpid(), signal.SIGKILL)


class TermAt(L.Callback):
    """Sends SIGTERM to its own process at global step ``at_step`` of a run started afresh, as `kill`, a
    scheduler's time limit or `docker stop` do; Lightning's own handler takes it. A resumed run (Lightning's
    ``trainer.ckpt_path`` set) is left alone, so the command the stopped run prints can finish it."""

    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.at_step and trainer.ckpt_path is None:
            os.kill(os.getpid(), signal.SIGTERM)


def _train(run: Path, root: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "src.train", *OVERRIDES, f"data.root={root}", f"hydra.run.dir={run}", *extra]
    return subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)


def _final_metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())["final"]


def _best(run: Path) -> tuple[dict, int]:
    """metrics.json's best metrics and the epoch of the best checkpoint: a resume that forgot the best so
    far (or the checkpoint callback's state) would choose another."""
    best_ckpt = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    return json.loads((run / "metrics.json").read_text())["best"], best_ckpt["epoch"]


@pytest.fixture(scope="module")
def uninterrupted(module_tmp_path) -> tuple[Path, dict, tuple[dict, int]]:
    """The image folder, the final metrics and the best (metrics, checkpoint epoch) of the run never killed."""
    base = module_tmp_path / "resume"
    root = copy_sample(base / "images")
    whole = _train(base / "whole", root)
    assert whole.returncode == 0, whole.stderr[-2000:]
    config = (base / "whole" / "config.yaml").read_text()
    assert "num_workers: auto" in config and "show_batch" in config and "interpretation" in config  # the defaults
    assert OmegaConf.create(config).data.augment["on"] == "device"  # data.augment.on=auto as resolved on a CPU
    return root, _final_metrics(base / "whole"), _best(base / "whole")


def _kill_and_resume(run: Path, root: Path, kill_at: int, *extra: str) -> dict:
    killed = _train(run, root, f"+callbacks.kill._target_={__name__}.KillAt", f"+callbacks.kill.at_step={kill_at}",
                    *extra)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert (last["epoch"], last["global_step"]) == (kill_at // 3 - 1, kill_at - 1)  # the end of the epoch before
    assert not (run / "metrics.json").exists()

    resumed = _train(run, root, "ckpt_path=last", *extra)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 4
    final = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert final["global_step"] == 12
    return _final_metrics(run)


# Measured: identical to the last digit (val/loss and val/error_rate) at both kill points. Before the
# seeded sampler and per-sample seeding, with loader workers, the resumed run's val/loss differed in
# the second digit (the shuffle and the workers' augmentation streams restarted differently).
def test_kill_9_in_the_first_stage_then_ckpt_path_last_gives_the_uninterrupted_metrics(tmp_path, uninterrupted):
    root, expected, expected_best = uninterrupted
    got = _kill_and_resume(tmp_path / "killed", root, kill_at=4)
    assert got["val/loss"] == pytest.approx(expected["val/loss"], rel=1e-6)
    assert got["val/error_rate"] == pytest.approx(expected["val/error_rate"], abs=1e-6)
    assert _best(tmp_path / "killed") == expected_best


# Beside the default run above: data.augment.on=workers augments each image in the loader workers, seeded
# by (seed, epoch, index), where the default (auto = device) augments a batch at a time on the device, seeded
# by (seed, rank, epoch, batch); with EMA (callbacks=[default,ema]) the averaged and the raw weights both
# continue from the checkpoint (measured on the demo too: 0.4609375 / 1.3146396875 killed at step 45 and
# resumed, as uninterrupted).
# slow (`make test-slow`): 40-44 s each on a 2-core CPU without native bf16, where CI's whole run reached
# 20.5 minutes; the default path's kill -9 test above stays in every run.
@pytest.mark.slow
@pytest.mark.parametrize("setting", ["data.augment.on=workers", "callbacks=[default,ema]"])
def test_a_resumed_run_ends_as_the_uninterrupted_one_with(setting, tmp_path, uninterrupted):
    root, _, _ = uninterrupted
    whole = _train(tmp_path / "whole", root, setting)
    assert whole.returncode == 0, whole.stderr[-2000:]
    expected = _final_metrics(tmp_path / "whole")
    got = _kill_and_resume(tmp_path / "killed", root, 4, setting)
    assert got["val/loss"] == pytest.approx(expected["val/loss"], rel=1e-6)
    assert got["val/error_rate"] == pytest.approx(expected["val/error_rate"], abs=1e-6)
    assert _best(tmp_path / "killed") == _best(tmp_path / "whole")


@pytest.mark.slow  # the same promise at a second point; the first kill point keeps it in the default suite
def test_kill_9_in_the_second_stage_then_ckpt_path_last_gives_the_uninterrupted_metrics(tmp_path, uninterrupted):
    root, expected, expected_best = uninterrupted
    got = _kill_and_resume(tmp_path / "killed", root, kill_at=10)
    assert got["val/loss"] == pytest.approx(expected["val/loss"], rel=1e-6)
    assert got["val/error_rate"] == pytest.approx(expected["val/error_rate"], abs=1e-6)
    assert _best(tmp_path / "killed") == expected_best


def test_sigterm_mid_epoch_exits_143_naming_the_checkpoint_and_the_command_that_resumes(tmp_path, uninterrupted):
    root, expected, expected_best = uninterrupted
    run = tmp_path / "terminated"
    stopped = _train(run, root, f"+callbacks.term._target_={__name__}.TermAt", "+callbacks.term.at_step=4")
    assert stopped.returncode == 128 + signal.SIGTERM, (stopped.returncode, stopped.stderr[-2000:])
    lines = [line for line in (stopped.stdout + stopped.stderr).splitlines() if "resume with: " in line]
    assert len(lines) == 1, (stopped.stdout + stopped.stderr)[-3000:]
    line = lines[0]
    assert "stopped by SIGTERM" in line
    assert f"saved {run / 'checkpoints' / 'last.ckpt'} (the end of epoch 0, global step 3)" in line
    command = line.split("resume with: ", 1)[1]
    assert command.endswith(f"ckpt_path=last hydra.run.dir={run}")
    assert not (run / "metrics.json").exists()

    resumed = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 4
    got = _final_metrics(run)  # from the end of epoch 0, as a kill -9 there: the uninterrupted run's metrics
    assert got["val/loss"] == pytest.approx(expected["val/loss"], rel=1e-6)
    assert got["val/error_rate"] == pytest.approx(expected["val/error_rate"], abs=1e-6)
    assert _best(run) == expected_best


def test_ckpt_path_last_names_the_run_directory_when_there_is_none(tmp_path):
    assert resolve_ckpt_path(None, tmp_path) is None
    with pytest.raises(FileNotFoundError, match=r"ckpt_path='x.ckpt' is missing"):  # checked before any work
        resolve_ckpt_path("x.ckpt", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"ckpt_path=last resumes from .*last.ckpt.*hydra.run.dir="):
        resolve_ckpt_path("last", tmp_path)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")  # a save that never wrote
    with pytest.raises(DamagedFileError, match=r"last.ckpt' cannot be loaded: it is empty"):
        resolve_ckpt_path("last", tmp_path)


def test_a_refused_ckpt_path_leaves_no_run_directory_behind(tmp_path, image_root):
    outputs = tmp_path / "outputs"  # where Hydra puts outputs/train/runs/<time>/ for a run without hydra.run.dir
    refused = subprocess.run(
        [sys.executable, "-m", "src.train", *OVERRIDES, f"data.root={image_root}", f"paths.log_dir={outputs}",
         "ckpt_path=last"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2  # a user error: one message, no traceback
    assert "FileNotFoundError: ckpt_path=last resumes from" in refused.stderr and "hydra.run.dir=" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not outputs.exists()  # neither the run directory nor the outputs/train/runs/ Hydra made for it

    # A directory that was there before (a run killed before its first checkpoint) is kept as it was.
    earlier = tmp_path / "earlier"
    (earlier / ".hydra").mkdir(parents=True)
    (earlier / "train.log").write_text("the earlier run's log\n")
    refused = _train(earlier, image_root, "ckpt_path=last")
    assert refused.returncode == 2 and "ckpt_path=last resumes from" in refused.stderr
    assert (earlier / "train.log").read_text().startswith("the earlier run's log\n")


def test_a_finished_checkpoint_is_refused_before_the_scan_with_how_to_train_more(tmp_path, started, tiny_run):
    from tests.conftest import compose_config
    from omegaconf import open_dict
    from src.runs.training import train

    finished = tiny_run / "checkpoints" / "last.ckpt"
    cfg = compose_config([*TINY_OVERRIDES, f"data.root={tiny_run.parent / 'images'}", f"ckpt_path={finished}"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "again")
    started.clear()
    with pytest.raises(ValueError, match=r"has finished all its epochs \(2 of the 2 .*schedule.stages.*same ckpt_path"):
        train(cfg)
    assert started == []  # no image read, no trainer built
    assert not (tmp_path / "again" / "metrics.json").exists()


def test_the_best_error_rate_survives_a_resume(tiny_cfg):
    """val/error_rate_best is restored from the checkpoint and kept when training starts again."""
    from src.runs.builder import build_datamodule, build_module

    fields = build_datamodule(tiny_cfg.data).model_fields()
    trained = build_module(tiny_cfg, **fields)
    trained.val_error_rate_best.update(torch.tensor(0.25))
    resumed = build_module(tiny_cfg, **fields)
    resumed.load_state_dict(trained.state_dict())  # as Lightning restores the module before on_train_start
    resumed.on_train_start()
    resumed.val_error_rate_best.update(torch.tensor(0.5))  # a worse epoch after the resume
    assert float(resumed.val_error_rate_best.compute()) == 0.25
