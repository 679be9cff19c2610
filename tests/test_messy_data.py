"""Messy real-world folders: the scan, bad_files.csv, files going bad mid-run; train, evaluate and
predict on a folder holding every kind of file tests/conftest.py's make_messy_folder plants."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import lightning as L
import pytest
from omegaconf import open_dict
from PIL import Image, ImageFile

from src.data.datamodule import ImageFolderDataModule, index_folder
from src.data.loading.dataset import ImageDataset
from src.data.files.listing import Sample
from src.data.files.image_reader import load_rgb
from src.data.files.scan import FileScan, check_image
from src.evaluate import evaluate
from src.predict import predict
from src.runs.training import train
from tests.conftest import (
    IMAGENET_STATS, MESSY_IGNORED, MESSY_UNREADABLE, TINY_OVERRIDES, _bomb_png, compose_config,
)

GOOD_PER_CLASS = {"ankle boot": 12 + 2, "sacs à main": 12 + 3, "Mäntel 外套": 12 + 3}  # sample + odd good ones


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def decoded(monkeypatch) -> list[str]:
    """The names of the image files whose pixels PIL decodes (``ImageFile.load``), from any thread."""
    names = []
    load = ImageFile.ImageFile.load

    def recorded_load(self):
        names.append(Path(getattr(self, "filename", "") or "").name)
        return load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", recorded_load)
    return names


def test_scan_sorts_every_file_into_good_bad_or_ignored(messy_root, tmp_path, caplog, decoded):
    datamodule = ImageFolderDataModule(messy_root, size=32, bad_files_csv=tmp_path / "bad_files.csv",
                                       **IMAGENET_STATS)
    with caplog.at_level("INFO"):
        index = datamodule.index
    assert decoded == []  # header checks only: no pixels decoded, the 100 MP bomb's included
    assert index.classes == ["Mäntel 外套", "ankle boot", "sacs à main"]  # the empty class is left out
    counts = Counter(index.classes[s.label] for s in index.train + index.valid)
    assert dict(counts) == GOOD_PER_CLASS
    scan = datamodule.scan
    assert Counter(b.kind for b in scan.unreadable) == Counter(MESSY_UNREADABLE)
    assert Counter(b.kind for b in scan.bad if b.ignored) == Counter(MESSY_IGNORED)
    rows = _rows(tmp_path / "bad_files.csv")
    assert len(rows) == sum(MESSY_UNREADABLE.values()) + sum(MESSY_IGNORED.values())
    by_path = {r["path"]: r["reason"] for r in rows}
    assert by_path["ankle boot/truncated.jpg"].startswith("truncated or corrupt:")
    assert by_path["sacs à main/zero bytes.png"] == "empty file: 0 bytes"
    assert by_path["Mäntel 外套/bomb.png"].startswith("too large: 10001x10001 = 100 megapixels")
    summary = [r.message for r in caplog.records if "unreadable file(s)" in r.message]
    assert len(summary) == 1 and "kept 44 image(s), skipped 7 unreadable file(s) (1 broken symlink, 1 empty file, " in summary[0]
    assert "empty class" in caplog.text


def test_on_bad_file_error_stops_before_training_naming_a_file(messy_root, tmp_path):
    datamodule = ImageFolderDataModule(messy_root, on_bad_file="error", bad_files_csv=tmp_path / "bad.csv",
                                       **IMAGENET_STATS)
    with pytest.raises(ValueError, match=r"7 unreadable image file\(s\).*data.on_bad_file=skip"):
        datamodule.index
    assert (tmp_path / "bad.csv").is_file()  # the list is written before stopping


def test_class_list_and_split_do_not_depend_on_listing_order(messy_root, monkeypatch):
    first = index_folder(messy_root, 0.2, seed=7, scan=FileScan())
    real_rglob, real_iterdir = Path.rglob, Path.iterdir
    monkeypatch.setattr(Path, "rglob", lambda self, p: reversed(list(real_rglob(self, p))))
    monkeypatch.setattr(Path, "iterdir", lambda self: reversed(list(real_iterdir(self))))
    second = index_folder(messy_root, 0.2, seed=7, scan=FileScan())
    assert first.classes == second.classes
    assert [s.path for s in first.valid] == [s.path for s in second.valid]


def test_a_bomb_is_refused_from_its_header(tmp_path, decoded):
    _bomb_png(tmp_path / "bomb.png")
    assert check_image(tmp_path / "bomb.png").kind == "too large"
    with pytest.raises(Image.DecompressionBombError, match="over the limit of 100 megapixels"):
        load_rgb(tmp_path / "bomb.png")
    assert decoded == []
    Image.new("RGB", (4, 4)).save(tmp_path / "small.png")
    load_rgb(tmp_path / "small.png")
    assert set(decoded) == {"small.png"}  # what a decode looks like


def test_a_file_that_goes_bad_after_the_scan_is_replaced_and_counted(image_root, caplog):
    paths = sorted((image_root / "bag").glob("*.png"))[:3]
    dataset = ImageDataset([Sample(p, i) for i, p in enumerate(paths)], lambda image: image.size)
    paths[0].write_bytes(paths[0].read_bytes()[:50])  # truncated
    paths[1].unlink()
    assert dataset[0] == ((28, 28), 2)  # the next readable sample
    assert dataset[2] == ((28, 28), 2)
    assert dataset.failures.value == 2
    assert caplog.text.count("unreadable since the scan") == 2
    strict = ImageDataset(dataset.samples, dataset.transform, skip_unreadable=False)
    with pytest.raises(OSError, match="became unreadable after the scan.*data.on_bad_file=skip"):
        strict[0]


class CorruptAfterScan(L.Callback):
    """Truncates the first validation image once the scan is done: a file going bad mid-run."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        path = trainer.datamodule.index.valid[0].path
        path.write_bytes(path.read_bytes()[:40])


def test_train_evaluate_and_predict_on_the_messy_folder(messy_root, tmp_path):
    cfg = compose_config([*TINY_OVERRIDES, f"data.root={messy_root}"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
        cfg.callbacks.corrupt = {"_target_": f"{__name__}.CorruptAfterScan"}
    metrics = train(cfg)
    run = tmp_path / "run"
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["bad_files"] == 7
    # the sanity check, 2 validation epochs and the interpretation pass each read the truncated image
    assert summary["skipped_during_training"] == metrics["skipped_during_training"] >= 3
    assert summary["classes"] == ["Mäntel 外套", "ankle boot", "sacs à main"]
    assert len(_rows(run / "bad_files.csv")) == 12
    assert (run / "checkpoints" / "last.ckpt").is_file()

    ckpt = run / "checkpoints" / "last.ckpt"
    evaluated = evaluate(_task("evaluate", tmp_path / "eval", [f"ckpt_path={ckpt}", f"data.root={messy_root}",
                                                             "data.num_workers=0"]))
    # every readable image but the one truncated during training (now a bad file too)
    assert evaluated["images"] == sum(GOOD_PER_CLASS.values()) - 1
    assert len(_rows(tmp_path / "eval" / "bad_files.csv")) == 12 + 1

    # the run's own validation split: the image truncated during training is left out, not replaced
    valid_rows = [r for r in _rows(run / "split.csv") if r["subset"] == "valid"]
    from_split = evaluate(_task("evaluate", tmp_path / "eval_split", [f"ckpt_path={ckpt}", "data.num_workers=0"]))
    assert from_split["images"] == len(valid_rows) - 1
    assert [r["reason"].split(":")[0] for r in _rows(tmp_path / "eval_split" / "bad_files.csv")] == ["not an image"]

    output = tmp_path / "pred" / "predictions.csv"
    predicted = predict(_task("predict", tmp_path / "pred", [f"ckpt_path={ckpt}", f"input={messy_root}",
                                                            f"output={output}"]))
    rows = _rows(output)
    errors = {Path(r["path"]).name: r["error"] for r in rows if r["error"]}
    # truncated x2 (one since training), zero bytes, text .jpg, the bomb, Thumbs.db, readme.txt, the broken
    # link and the two links of the loop (each an error row, not dropped); hidden files are not inputs
    assert predicted["failed"] == len(errors) == 10
    assert {"gone.png", "loop a.png", "loop b.png"} <= set(errors)
    assert "bomb.png" in errors and "over the limit" in errors["bomb.png"]
    assert {r["prediction"] for r in rows if not r["error"]} <= set(summary["classes"])


def _task(name: str, output_dir: Path, overrides: list[str]):
    cfg = compose_config(overrides, config_name=name)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


def one_number_per_image(image):
    """A transform the loader's workers can unpickle whatever the start method (an earlier test's library
    may have set spawn or forkserver, which cannot pickle a lambda)."""
    import torch

    return torch.zeros(1)


def test_failures_in_dataloader_workers_are_counted_in_the_main_process(image_root):
    from torch.utils.data import DataLoader

    paths = sorted((image_root / "coat").glob("*.png"))[:6]
    dataset = ImageDataset([Sample(p, 0) for p in paths], one_number_per_image)
    paths[2].unlink()
    paths[4].write_bytes(b"GIF89a")
    batches = list(DataLoader(dataset, batch_size=2, num_workers=2))
    assert sum(len(images) for images, _ in batches) == 6  # every slot filled with a readable image
    assert dataset.failures.value == 2


def test_split_folders_are_scanned_too(tmp_path):
    from tests.conftest import copy_sample

    root = tmp_path / "images"
    copy_sample(root / "train", classes=2, per_class=4)
    copy_sample(root / "valid", classes=2, per_class=2)
    bad = next((root / "valid").rglob("*.png"))
    bad.write_bytes(b"")
    scan = FileScan()
    index = index_folder(root, 0.2, seed=0, scan=scan)
    assert index.layout == "split_folders" and (len(index.train), len(index.valid)) == (8, 3)
    assert [(b.path, b.kind) for b in scan.unreadable] == [(bad, "empty file")]
