"""`python -m src.bench`: the benchmark runs end to end (smoke case) and writes its table and JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from src.bench.run import compare_error_rates, parse_variant, variant_name
from src.core.hardware import resolve_precision
from tests.conftest import PROJECT_ROOT, copy_sample

# Not marked `precision`: the smoke bench checks the report's structure and arithmetic, which are the same
# whatever `auto` picks (the bf16 pass of the other kind of CPU made it the slowest test of that pass).


def test_smoke_benchmark_writes_table_and_json(tmp_path):
    root = copy_sample(tmp_path / "images", classes=3, per_class=12)
    run_dir = tmp_path / "bench"
    completed = subprocess.run(
        [sys.executable, "-m", "src.bench", "bench=smoke", f"data.root={root}", f"hydra.run.dir={run_dir}",
         "data.num_workers=0", "~callbacks.progress_bar", "~callbacks.model_summary",
         # the accuracy check runs bf16-mixed: emulated on most CPUs, so only two batches
         "bench.accuracy.enabled=true", "bench.variants=[32-true,32-true+channels_last]"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads((run_dir / "bench.json").read_text())

    # trainer.precision=auto, resolved as in the subprocess (same machine, same IFC_NATIVE_BF16)
    chosen = resolve_precision("auto", "cpu")
    assert result["settings"] | {"backbone": "resnet18", "size": 32, "batch_size": 8, "precision": chosen} \
        == result["settings"]
    assert result["settings"]["training_images"] == 3 * (12 - round(0.2 * 12))
    assert result["machine"]["cores"] >= 1 and result["versions"]["torch"]
    floor = result["floor"]
    assert floor["images_per_s"] == pytest.approx((floor["before"]["images_per_s"] + floor["after"]["images_per_s"]) / 2)
    assert floor["before"]["images"] == floor["after"]["images"] == 2 * 8  # bench.steps batches of data.batch_size
    assert result["data"]["images_per_s"] > 0
    assert result["data"]["images"] == 2 * 8  # bench.data_batches
    train = result["train"]
    assert train["images_per_s"] > 0 and train["epoch_s"] > 0 and train["val_s"] > 0 and train["batches"] == 3
    assert result["ratios"]["train_over_floor"] == pytest.approx(train["images_per_s"] / result["floor"]["images_per_s"])
    assert result["ratios"]["data_over_train"] == pytest.approx(result["data"]["images_per_s"] / train["images_per_s"])
    assert result["targets"]["train_over_floor"] == {
        "target": 0.9, "met": result["ratios"]["train_over_floor"] >= 0.9}
    assert [v["name"] for v in result["variants"]] == ["32-true", "32-true+channels_last"]
    # a variant is marked default when it is what the run's settings resolve to (auto: this machine's choice)
    assert [v["default"] for v in result["variants"]] == [chosen == "32-true", False]
    accuracy = result["accuracy"]
    assert set(accuracy["error_rate"]) == {"32-true", "bf16-mixed"}
    assert accuracy["difference_pp"] == pytest.approx(
        100 * (accuracy["error_rate"]["bf16-mixed"] - accuracy["error_rate"]["32-true"]))
    assert accuracy["tolerance_pp"] == 1.0  # two batches decide nothing: the verdict is tested on known rates below
    assert accuracy["within_tolerance"] is (abs(accuracy["difference_pp"]) <= 1.0 + 1e-9)
    # the training run is a real src.train run, with its own run directory
    assert json.loads((Path(train["run_dir"]) / "metrics.json").read_text())["performance"]["perf/train_images_per_s"] \
        == pytest.approx(train["images_per_s"])
    # one worker's speed and CPU per image for each data.augment.on path, on the same images
    paths = result["data_paths"]
    assert {"workers", "device"} <= set(paths) and paths["device"]["augment"]["device"] == "cpu"
    for name in ("workers", "device"):
        assert paths[name]["images"] == 2 * 8 and paths[name]["cpu_ms_per_image"] > 0
    assert paths["device_over_workers_cpu"]["ratio"] == pytest.approx(
        paths["device"]["cpu_ms_per_image"] / paths["workers"]["cpu_ms_per_image"])
    # a whole src.train run per path: its phases add up to its wall clock
    runs = result["whole_runs"]
    assert set(runs) == {"workers", "device"}
    for run in runs.values():
        assert run["epochs"] == 2 and run["train_images"] == 2 * 2 * 8  # bench.whole_run's 2 epochs of 2 batches
        phases = [run[k] for k in ("to_first_step_s", "train_s", "val_s", "checkpoints_s", "end_s", "other_s")]
        assert all(p >= 0 for p in phases[:5]) and sum(phases) == pytest.approx(run["wall_s"])
        assert run["checkpoints_s"] > 0  # best.ckpt and last.ckpt written after each of the 2 validations
        assert run["sanity_check_s"] <= run["to_first_step_s"]
        # compared with its own Floor, measured just before and after it
        assert run["floor"]["images_per_s"] == pytest.approx((run["floor"]["before"] + run["floor"]["after"]) / 2)
        assert run["train_over_floor"] == pytest.approx(run["images_per_s"] / run["floor"]["images_per_s"])
        assert len(run["epoch_train_over_floor"]) == 2
        assert min(run["epoch_train_over_floor"]) <= run["train_over_floor"] <= max(run["epoch_train_over_floor"])
        assert run["worker_cpu_s"] >= 0 and 0 <= run["error_rate"] <= 1
        assert json.loads((Path(run["run_dir"]) / "metrics.json").read_text())["epochs"] == 2
    # the runs wrote their checkpoints (they are part of what is timed) and the bench removed them after
    # (bench.keep_checkpoints=false): ~140 MB apiece for a ResNet18
    run_dirs = [run_dir / name for name in ("train", "accuracy-32-true", "accuracy-bf16-mixed",
                                            "whole-run-workers", "whole-run-device")]
    assert all((d / "metrics.json").is_file() and not (d / "checkpoints").exists() for d in run_dirs)
    assert all(json.loads((d / "metrics.json").read_text())["best_checkpoint"].endswith("best.ckpt") for d in run_dirs)
    for line in ("Data by data.augment.on", "worker CPU per image, device / workers", "Whole src.train run",
                 "time to the first training step", "Train / Floor over whole epochs", "workers: Train / Floor by epoch",
                 "device: Train / Floor by epoch"):
        assert line in completed.stdout
    for line in ("Floor: bare PyTorch loop", "Data: pipeline, one worker", "Train: src.train fit", "Train / Floor",
                 "Data / Train", "32-true+channels_last", "Accuracy check after 2 batches"):
        assert line in completed.stdout


@pytest.mark.parametrize("variant, expected", [
    ("32-true", {"precision": "32-true", "channels_last": False, "compile": False}),
    ("bf16-mixed+channels_last+compile", {"precision": "bf16-mixed", "channels_last": True, "compile": True}),
])
def test_variant_names_round_trip(variant, expected):
    assert parse_variant(variant) == expected
    assert variant_name(**expected) == variant


@pytest.mark.parametrize("fp32, compared, difference_pp, within", [
    (0.25, 0.25, 0.0, True),
    (0.25, 0.26, 1.0, True),  # exactly the tolerance (1.0000000000000009 in floats)
    (0.25, 0.24, -1.0, True),  # better by as much: within too
    (0.10, 0.12, 2.0, False),
    (0.30, 0.28, -2.0, False),  # either way
    (0.50, 0.5125, 1.25, False),
])
def test_accuracy_check_verdict_on_known_error_rates(fp32, compared, difference_pp, within):
    result = compare_error_rates({"32-true": fp32, "bf16-mixed": compared}, "bf16-mixed")
    assert result["difference_pp"] == pytest.approx(difference_pp)
    assert result["tolerance_pp"] == 1.0 and result["within_tolerance"] is within
    assert result["error_rate"] == {"32-true": fp32, "bf16-mixed": compared} and result["compared"] == "bf16-mixed"


def test_unknown_variant_flag_is_named():
    with pytest.raises(ValueError, match=r"'32-true\+nhwc'.*PRECISION\[\+channels_last\]"):
        parse_variant("32-true+nhwc")


def _write_idx(path: Path, array) -> None:
    import gzip
    import struct

    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.tobytes())


def test_benchmark_folders_are_written_at_photo_size(tmp_path):
    import importlib.util

    import numpy as np
    from PIL import Image

    spec = importlib.util.spec_from_file_location("make_folder", PROJECT_ROOT / "scripts/make_fashion_mnist_folder.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    source = tmp_path / "idx"
    source.mkdir()
    images = np.random.default_rng(0).integers(0, 256, (6, 28, 28), dtype=np.uint8)
    _write_idx(source / "train-images-idx3-ubyte.gz", images)
    _write_idx(source / "train-labels-idx1-ubyte.gz", np.array([0, 1, 0, 1, 0, 9], dtype=np.uint8))

    counts = script.write_image_folder(source, tmp_path / "out", per_class=2, image_size=400, image_format="jpeg")
    assert counts["t-shirt_top"] == 2 and counts["trouser"] == 2 and counts["ankle_boot"] == 1
    written = sorted((tmp_path / "out" / "trouser").iterdir())
    assert [p.name for p in written] == ["train_00001.jpg", "train_00003.jpg"]
    with Image.open(written[0]) as image:
        assert image.format == "JPEG" and image.size == (400, 400)


def test_the_seed_recipe_case_is_the_seeds_workload_as_one_whole_run_on_the_default_path():
    """`make bench-run`'s second case: ResNet50 at 300 px, 2 frozen epochs then 1 of everything, as fastai's recipe."""
    from tests.conftest import compose_config

    cfg = compose_config(["bench=seed_recipe"], config_name="bench")
    assert (cfg.model.backbone.name, cfg.model.backbone.weights, cfg.data.size, cfg.data.batch_size) == (
        "resnet50", None, 300, 64)
    assert [(s.epochs, list(s.lr), s.freeze_to) for s in cfg.schedule.stages] == [
        (2, [3.0e-3], -1), (1, [1.0e-6, 1.0e-4], 0)]
    assert Path(cfg.data.root).name == "fashion-mnist-seed440"
    assert "$(SEED_DATA)" in (PROJECT_ROOT / "Makefile").read_text()  # made by make bench-data
    assert (list(cfg.bench.whole_run.paths), cfg.bench.whole_run.epochs, cfg.bench.case) == (["device"], None, "seed_recipe")
