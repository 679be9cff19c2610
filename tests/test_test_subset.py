"""A split-folders layout's test/ images: scored with the best checkpoint at the end of training
(metrics.json "test", the result lines) and by `src.evaluate subset=test`, with the same numbers."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import open_dict

from src.core.problems import ConfigError
from src.evaluate import evaluate
from tests.conftest import PROJECT_ROOT, TINY_OVERRIDES, compose_config, copy_sample

SUBSET_SIZES = {"train": 8, "valid": 3, "test": 3}  # per class, 3 classes


def _split_folders(root: Path) -> Path:
    """root/{train,valid,test}/<class>/ with different real photos in each."""
    pool = copy_sample(root.parent / "pool", classes=3, per_class=sum(SUBSET_SIZES.values()))
    for folder in sorted(pool.iterdir()):
        images = sorted(folder.iterdir())
        start = 0
        for subset, count in SUBSET_SIZES.items():
            (root / subset / folder.name).mkdir(parents=True)
            for image in images[start:start + count]:
                shutil.copy(image, root / subset / folder.name / image.name)
            start += count
    return root


@pytest.fixture(scope="module")
def run_with_test_images(module_tmp_path) -> tuple[Path, str]:
    """A tiny training run through `python -m src.train` on a split-folders layout; its directory and stdout."""
    base = module_tmp_path / "test_subset"
    root = _split_folders(base / "images")
    run = base / "run"
    done = subprocess.run([sys.executable, "-m", "src.train", *TINY_OVERRIDES, f"data.root={root}",
                           f"hydra.run.dir={run}"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return run, done.stdout


def _evaluate(run: Path, out: Path, *overrides: str) -> dict:
    cfg = compose_config([f"ckpt_path={run / 'checkpoints' / 'best.ckpt'}", *overrides], config_name="evaluate")
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    return evaluate(cfg)


def test_training_scores_the_test_images_with_the_best_checkpoint(run_with_test_images):
    run, stdout = run_with_test_images
    summary = json.loads((run / "metrics.json").read_text())
    test = summary["test"]
    assert test["images"] == 3 * SUBSET_SIZES["test"]
    assert test["checkpoint"] == summary["best_checkpoint"] and test["checkpoint"].endswith("best.ckpt")
    assert 0.0 <= test["test/error_rate"] <= 1.0 and test["test/loss"] > 0
    assert f"test/error_rate: {test['test/error_rate']:.4f}  test/loss: {test['test/loss']:.4f} (9 images of test/)" in stdout
    with (run / "split.csv").open(newline="") as f:
        assert sum(row["subset"] == "test" for row in csv.DictReader(f)) == 9


def test_evaluate_subset_test_reproduces_the_test_metrics_training_logged(run_with_test_images, tmp_path):
    run, _ = run_with_test_images
    logged = json.loads((run / "metrics.json").read_text())["test"]
    # the default loader workers, as users run it
    metrics = _evaluate(run, tmp_path / "test", "subset=test")
    assert metrics["images"] == 9
    assert metrics["error_rate"] == pytest.approx(logged["test/error_rate"], abs=1e-4)
    assert metrics["loss"] == pytest.approx(logged["test/loss"], abs=1e-4)
    written = json.loads((tmp_path / "test" / "metrics.json").read_text())
    assert written["data"].startswith("test split of ") and written["images"] == 9
    with (tmp_path / "test" / "predictions.csv").open(newline="") as f:
        assert all(row["path"].startswith("test/") for row in csv.DictReader(f))
    assert _evaluate(run, tmp_path / "valid")["images"] == 3 * SUBSET_SIZES["valid"]  # the default: valid


def test_subset_is_checked_before_the_checkpoint_is_read(run_with_test_images, tmp_path):
    run, _ = run_with_test_images
    with pytest.raises(ConfigError, match=r"subset='train': expected valid or test"):
        _evaluate(run, tmp_path / "a", "subset=train")
    with pytest.raises(ConfigError, match=r"subset='test'.*data.root=.*leave out data.root"):
        _evaluate(run, tmp_path / "b", "subset=test", f"data.root={run}")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_subset_test_of_a_run_without_test_images_says_so(run_with_test_images, tmp_path):
    run, _ = run_with_test_images
    other = tmp_path / "other"  # the same checkpoint in a run whose split.csv has no test rows
    (other / "checkpoints").mkdir(parents=True)
    shutil.copy(run / "checkpoints" / "best.ckpt", other / "checkpoints" / "best.ckpt")
    rows = (run / "split.csv").read_text().splitlines(keepends=True)
    (other / "split.csv").write_text("".join(r for r in rows if not r.rstrip().endswith(",test")))
    with pytest.raises(ValueError, match=r"has no test rows \(it has train \(24\), valid \(9\)\).*no test/ folder"):
        _evaluate(other, tmp_path / "eval", "subset=test")
