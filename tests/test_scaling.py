"""Scaling out on a CPU: bf16 mixed precision, DDP with two gloo processes, the SLURM launcher config."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf, open_dict

from src.runs.training import train
from tests.conftest import PROJECT_ROOT, TINY_OVERRIDES, compose_config, conv_output_dtypes, copy_sample, require_extra


def test_bf16_mixed_precision_trains_on_cpu(tiny_cfg):
    with open_dict(tiny_cfg):
        tiny_cfg.trainer.precision = "bf16-mixed"
        del tiny_cfg.callbacks.interpretation, tiny_cfg.callbacks.show_batch
    with conv_output_dtypes() as conv_dtypes:
        metrics = train(tiny_cfg)
    assert 0.0 <= metrics["val/error_rate"] <= 1.0 and math.isfinite(metrics["val/loss"])
    # autocast computes in bf16: every convolution of training and validation; the weights (and so the
    # checkpoint) stay fp32
    assert len(conv_dtypes) > 100 and set(conv_dtypes) == {torch.bfloat16}
    state = torch.load(Path(tiny_cfg.paths.output_dir) / "checkpoints/last.ckpt", weights_only=True)["state_dict"]
    assert state["net.head.8.weight"].dtype == torch.float32


def test_slurm_launcher_config_composes():
    require_extra("hydra_plugins.hydra_submitit_launcher", "slurm")
    cfg = compose_config(["hydra/launcher=submitit_slurm", "hydra.launcher.gpus_per_node=4",
                          "hydra.launcher.tasks_per_node=4", "trainer=ddp", "trainer.devices=4"],
                         return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert cfg.hydra.launcher.tasks_per_node == cfg.trainer.devices == 4  # one task per GPU, as Lightning expects


def test_ddp_on_cpu_with_two_gloo_processes(tmp_path, image_root):
    """The ddp preset as written (sync_batchnorm auto, every callback), with lr_find: rank 0 scans and runs
    the finder, the other process receives both, and the result is printed once."""
    run_dir = tmp_path / "ddp"
    overrides = [*TINY_OVERRIDES, f"data.root={image_root}", f"hydra.run.dir={run_dir}",
                 "trainer=ddp", "trainer.devices=2", "lr_find=true", "lr_finder.num_steps=20"]
    result = subprocess.run([sys.executable, "-m", "src.train", *overrides], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, timeout=300, env={**os.environ, "HYDRA_FULL_ERROR": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 <= summary["final"]["val/error_rate"] <= 1.0
    assert summary["final"]["val/error_rate"] == pytest.approx(1 - summary["final"]["val/accuracy"])
    assert (run_dir / "checkpoints/best.ckpt").is_file() and (run_dir / "checkpoints/last.ckpt").is_file()
    # each process trains on half the 28 training images: one batch of 8 per epoch, 2 epochs
    last = torch.load(run_dir / "checkpoints/last.ckpt", map_location="cpu", weights_only=True)
    assert (last["epoch"], last["global_step"]) == (1, 2)
    # the split is the one a single process makes (a seeded function of the folder)
    from src.data.datamodule import index_folder

    index = index_folder(image_root, 0.2, 42)
    split = (run_dir / "split.csv").read_text()
    assert all(Path(s.path).name in split for s in index.valid)
    logs = result.stdout + result.stderr
    # one scan: rank 0 opened the 36 files (no cache yet), rank 1 received its index and opened none
    assert logs.count("opened 36 file(s)") == 1
    assert "rank 1 uses rank 0's scan of 36 images and opened 0 of the files" in logs
    # one lr finder run, its choice used by both processes
    assert logs.count("lr_find suggestions for stage 0") == 1
    assert logs.count("(rank 0's suggestion)") == 1
    assert "trainer.sync_batchnorm=auto: False" in logs
    assert "sync_dist" not in result.stderr  # Lightning's "use sync_dist=True" warning
    assert result.stdout.count("final val/error_rate") == 1


def test_ddp_with_loader_workers_and_an_odd_validation_count_is_reproduced_by_evaluate(tmp_path):
    """Two gloo processes, each with a loader worker, and a validation set that does not split evenly
    between them (torch's DistributedSampler would pad it with a repeated image): the error rates the run
    logged are those of src.evaluate in one process on the run's own validation images."""
    from src.data.datamodule import index_folder
    from src.evaluate import evaluate

    root = copy_sample(tmp_path / "images", classes=3, per_class=12)
    assert len(index_folder(root, 0.25, 42).valid) % 2 == 1  # 9 validation images: 5 + 4, not 5 + 5
    run_dir = tmp_path / "ddp"
    overrides = [*(o for o in TINY_OVERRIDES if not o.startswith("data.num_workers")), "data.num_workers=1",
                 "data.valid_pct=0.25", f"data.root={root}", f"hydra.run.dir={run_dir}", "trainer=ddp", "trainer.devices=2",
                 # fp32: bf16 rounds a batch of 5 and one of 4 otherwise than one of 9 (val/loss 2e-3 apart; fp32 2e-5)
                 "trainer.precision=32-true"]
    result = subprocess.run([sys.executable, "-m", "src.train", *overrides], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, timeout=300, env={**os.environ, "HYDRA_FULL_ERROR": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert OmegaConf.load(run_dir / "config.yaml").data.num_workers == 1
    summary = json.loads((run_dir / "metrics.json").read_text())

    def evaluated(checkpoint: str) -> dict:
        cfg = compose_config([f"ckpt_path={run_dir / 'checkpoints' / checkpoint}"], config_name="evaluate")
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / checkpoint)
        return evaluate(cfg)

    best, last = evaluated("best.ckpt"), evaluated("last.ckpt")
    assert best["images"] == last["images"] == 9
    assert best["error_rate"] == pytest.approx(summary["best"]["val/error_rate"], abs=1e-6)
    assert last["error_rate"] == pytest.approx(summary["final"]["val/error_rate"], abs=1e-6)
    assert last["loss"] == pytest.approx(summary["final"]["val/loss"], abs=1e-4)


def test_under_ddp_each_validation_image_is_on_one_process_and_the_end_of_run_figures_see_them_all(tmp_path):
    from types import SimpleNamespace

    from src.runs.builder import build_datamodule

    root = copy_sample(tmp_path / "images", classes=3, per_class=12)
    cfg = compose_config([*TINY_OVERRIDES, f"data.root={root}", "data.valid_pct=0.25"])
    with open_dict(cfg):
        cfg.data.split_csv = cfg.data.bad_files_csv = None
    datamodule = build_datamodule(cfg.data)
    datamodule.setup("fit")
    shares = []
    for rank in (0, 1):
        datamodule.trainer = SimpleNamespace(world_size=2, global_rank=rank, current_epoch=0)
        shares.append(list(datamodule.val_dataloader().sampler))
    assert sorted(shares[0] + shares[1]) == list(range(9)) and [len(s) for s in shares] == [5, 4]  # no repeat
    whole = datamodule.whole_valid_loader()  # rank 1's trainer still attached: every image all the same
    assert sum(len(labels) for _, labels in whole) == 9
