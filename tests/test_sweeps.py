"""Hydra multiruns for real: subprocesses of ``python -m src.train -m`` on a few real images."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.conftest import PROJECT_ROOT, TINY_OVERRIDES, require_extra

# The tiny run, smaller still: one stage, no figures, a single validation batch.
SWEEP_OVERRIDES = [
    *TINY_OVERRIDES,
    "schedule.stages=[{name:all,epochs:1,lr:1e-3,freeze_to:0}]",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "+trainer.num_sanity_val_steps=0",
    "~callbacks.interpretation",
    "~callbacks.show_batch",
]


def run_sweep(overrides: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "src.train", "-m", *overrides],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "HYDRA_FULL_ERROR": "1"},
    )


def read_summary(sweep_dir: Path) -> list[dict[str, str]]:
    with (sweep_dir / "summary.csv").open() as f:
        return list(csv.DictReader(f))


def test_multirun_writes_a_summary_and_survives_a_failed_job(tmp_path, image_root):
    sweep_dir = tmp_path / "sweep"
    # dropout=1.5 is invalid: that job fails while building the model, the other trains.
    result = run_sweep([*SWEEP_OVERRIDES, f"data.root={image_root}", f"hydra.sweep.dir={sweep_dir}",
                        "model.head.dropout=0.25,1.5"])
    assert result.returncode == 0, result.stderr[-3000:]

    rows = read_summary(sweep_dir)
    assert [r["job"] for r in rows] == ["0", "1"]
    assert [r["model.head.dropout"] for r in rows] == ["0.25", "1.5"]
    assert [r["status"] for r in rows] == ["completed", "failed"]
    assert rows[0]["data.root"] == str(image_root)
    error_rate = float(rows[0]["val/error_rate"])
    assert 0.0 <= error_rate <= 1.0
    assert float(rows[0]["val/accuracy"]) == pytest.approx(1 - error_rate)
    assert float(rows[0]["best val/error_rate"]) == pytest.approx(error_rate)
    assert rows[0]["epochs"] == "1" and rows[0]["error"] == ""
    assert "head dropout must be in [0, 1), got 1.5" in rows[1]["error"]
    assert rows[1]["val/error_rate"] == ""

    # every job has its own run directory; the failed one records why
    assert (sweep_dir / "0" / "checkpoints" / "best.ckpt").is_file()
    assert json.loads((sweep_dir / "1" / "metrics.json").read_text())["status"] == "failed"
    assert "Traceback" in (sweep_dir / "1" / "train.log").read_text()


def test_optuna_sweep_of_three_trials(tmp_path, image_root):
    require_extra("hydra_plugins.hydra_optuna_sweeper", "optuna")
    sweep_dir = tmp_path / "optuna"
    # data.batch_size is searched: a command-line value would fix it for every trial
    overrides = [o for o in SWEEP_OVERRIDES if not o.startswith("data.batch_size=")]
    result = run_sweep([*overrides, f"data.root={image_root}", f"hydra.sweep.dir={sweep_dir}",
                        "hparams_search=optuna", "hydra.sweeper.n_trials=3"])
    assert result.returncode == 0, result.stderr[-3000:]

    rows = read_summary(sweep_dir)
    assert [r["status"] for r in rows] == ["completed"] * 3
    searched = ["schedule.stages.0.lr", "optimizer.weight_decay", "data.batch_size", "model.head.dropout",
                "data.augment.max_rotate", "data.augment.max_zoom"]
    for row in rows:
        assert 1e-4 <= float(row["schedule.stages.0.lr"]) <= 1e-1
        assert row["data.batch_size"] in {"32", "64", "128"}
        assert 0.0 <= float(row["model.head.dropout"]) <= 0.7
    assert len({tuple(r[k] for k in searched) for r in rows}) == 3  # three different trials
    # Optuna minimised what each job returned: its best validation error rate
    optimization = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    assert optimization.best_value == pytest.approx(min(float(r["best val/error_rate"]) for r in rows))
    assert set(optimization.best_params) == set(searched)
