"""Faults a real run meets, at the default settings: a run directory already in use, class names in any
script with one image in a class, a 400-megapixel PNG, 300 classes of two images each.

Elsewhere: kill -9, SIGTERM and Ctrl-C (tests/test_resume.py), a full disk (tests/test_crashes.py), a damaged
scan cache (tests/test_scan_cache.py), symlink loops and other bad files (tests/test_messy_data.py), the
serving API under concurrent good and bad uploads (tests/test_serve.py).
"""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import open_dict

from src.predict import predict
from src.runs.run_lock import LOCK_NAME, RunDirectoryInUse, acquire_run_lock, release_run_lock
from src.runs.training import train
from tests.conftest import PROJECT_ROOT, SAMPLE, TINY_OVERRIDES, _bomb_png, compose_config, copy_sample


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _lock_of(run: Path, pid: int) -> None:
    (run / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": socket.gethostname()}))


def _train_command(run: Path, root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "src.train", *TINY_OVERRIDES, f"data.root={root}",
                           f"hydra.run.dir={run}"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)


def test_a_second_run_into_a_directory_in_use_is_refused_before_it_writes_and_a_stale_lock_is_taken_over(
        tmp_path, image_root):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"the first run's checkpoint")
    (run / "train.log").write_text("the first run's log\n")
    first = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])  # the run holding the lock
    try:
        _lock_of(run, first.pid)
        before = _files(run)
        refused = _train_command(run, image_root)
        assert refused.returncode == 2, refused.stderr[-3000:]
        assert "Traceback" not in refused.stdout + refused.stderr
        last = refused.stderr.strip().splitlines()[-1]
        assert last.startswith("RunDirectoryInUse: ") and f"process {first.pid}" in last and "hydra.run.dir" in last
        assert _files(run) == before  # not a byte written: no .hydra/, nothing added to train.log
    finally:
        first.kill()
        first.wait()
    # the holder is gone (a run killed with kill -9): the next run takes the lock over, trains, and lets it go
    (run / "checkpoints" / "last.ckpt").unlink()
    done = _train_command(run, image_root)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"took over the lock of process {first.pid}" in (run / "train.log").read_text()
    assert (run / "checkpoints" / "last.ckpt").stat().st_size > 1000 and not (run / LOCK_NAME).exists()


def test_the_lock_is_taken_once_per_process_and_refused_to_a_running_one(tmp_path):
    run = tmp_path / "run"
    assert acquire_run_lock(run) is True
    assert json.loads((run / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert acquire_run_lock(run) is False  # train() inside python -m src.train, which took it first
    release_run_lock(run)
    assert not (run / LOCK_NAME).exists()
    _lock_of(run, os.getppid())  # a process that is running
    with pytest.raises(RunDirectoryInUse, match=f"process {os.getppid()} on"):
        acquire_run_lock(run)
    (run / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "another-machine"}))  # cannot be checked from here
    with pytest.raises(RunDirectoryInUse, match=f"delete {run / LOCK_NAME}"):
        acquire_run_lock(run)


def _tiny(root: Path, run: Path, *overrides: str):
    cfg = compose_config([*TINY_OVERRIDES, f"data.root={root}", *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(run)
    return cfg


def test_names_in_any_script_a_class_of_one_image_and_a_400_megapixel_png_train_and_predict(tmp_path, caplog):
    root = copy_sample(tmp_path / "images", classes=3, per_class=8)
    names = ["Stiefel & Schuhe 靴", "sac à main", "één foto"]
    for old, new in zip(sorted(p.name for p in root.iterdir()), names):
        (root / old).rename(root / new)
    for extra in sorted((root / "één foto").iterdir())[1:]:  # a class of a single image
        extra.unlink()
    _bomb_png(root / "sac à main" / "scan 20000 px.png", side=20_000)  # 400 MP in ~50 kB
    run = tmp_path / "run"
    with caplog.at_level("WARNING"):
        train(_tiny(root, run))
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["classes"] == sorted(names) and summary["bad_files"] == 1
    bad = _rows(run / "bad_files.csv")
    assert [Path(r["path"]).name for r in bad] == ["scan 20000 px.png"]
    assert "20000x20000 = 400 megapixels" in bad[0]["reason"] and "data.max_image_pixels" in bad[0]["reason"]
    # the single image trains, and the log says its class is never validated
    split = _rows(run / "split.csv")
    assert [r["subset"] for r in split if "één foto" in r["path"]] == ["train"]
    assert "1 of 3 classes have no validation image" in caplog.text and "'één foto'" in caplog.text

    output = tmp_path / "predictions.csv"
    cfg = compose_config([f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", f"input={root}", f"output={output}"],
                         config_name="predict")
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "predict")
    predicted = predict(cfg)
    rows = _rows(output)
    assert predicted["failed"] == 1 and len(rows) == 8 + 8 + 1 + 1
    assert {r["prediction"] for r in rows if not r["error"]} <= set(names)
    assert "data.max_image_pixels" in next(r["error"] for r in rows if r["path"].endswith("scan 20000 px.png"))


def test_300_classes_of_two_images_train_with_one_validation_image_each(tmp_path, caplog):
    photos = sorted(next(p for p in sorted(SAMPLE.iterdir()) if p.is_dir()).iterdir())
    root = tmp_path / "images"
    for c in range(300):
        (root / f"class {c:03d}").mkdir(parents=True)
        for i in range(2):
            (root / f"class {c:03d}" / f"{i}.png").write_bytes(photos[(2 * c + i) % len(photos)].read_bytes())
    run = tmp_path / "run"
    with caplog.at_level("WARNING"):
        train(_tiny(root, run))
    # valid_pct=0.2 of two images rounds to none; each class keeps one for validation, so none goes unmeasured
    subsets = [r["subset"] for r in _rows(run / "split.csv")]
    assert subsets.count("valid") == subsets.count("train") == 300
    assert "no validation image" not in caplog.text
    summary = json.loads((run / "metrics.json").read_text())
    assert len(summary["classes"]) == 300 and summary["final"]["val/error_rate"] >= 0
    assert (run / "checkpoints" / "last.ckpt").is_file()
