import csv
import logging
from pathlib import Path

import pytest
import torch
from PIL import Image

from src.data.datamodule import ImageFolderDataModule, index_folder
from src.data.files.listing import Sample, list_images, scan_class_folders
from src.data.files.image_reader import load_rgb
from src.data.labels.split import stratified_split
from tests.conftest import IMAGENET_STATS, copy_sample


def _samples(counts: dict[int, int]) -> list[Sample]:
    return [Sample(Path(f"c{label}/{i:03d}.png"), label) for label, n in counts.items() for i in range(n)]


def test_split_is_reproducible_and_depends_on_the_seed():
    samples = _samples({0: 50, 1: 50})
    first = stratified_split(samples, 0.2, seed=1)
    assert first == stratified_split(list(reversed(samples)), 0.2, seed=1)  # listing order does not matter
    assert first[1] != stratified_split(samples, 0.2, seed=2)[1]


def test_split_is_stratified_and_keeps_every_class_with_two_images_in_validation():
    samples = _samples({0: 100, 1: 10, 2: 2, 3: 1})
    train, valid = stratified_split(samples, 0.2, seed=0)
    valid_counts = {label: sum(s.label == label for s in valid) for label in range(4)}
    assert valid_counts == {0: 20, 1: 2, 2: 1, 3: 0}
    assert len(train) + len(valid) == len(samples)
    assert not set(train) & set(valid)


def test_validation_order_is_shuffled_once_so_its_first_batches_hold_every_class():
    samples = _samples({0: 50, 1: 50, 2: 50})
    train, valid = stratified_split(samples, 0.2, seed=0)
    assert {s.label for s in valid[:8]} == {0, 1, 2}  # what limit_val_batches=1 at batch size 8 sees
    assert sorted(valid, key=lambda s: s.label) != valid  # not in class order
    assert stratified_split(samples, 0.2, seed=0) == (train, valid)  # the same order every time


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5])
def test_valid_pct_outside_zero_one_is_refused(bad):
    with pytest.raises(ValueError, match="data.valid_pct"):
        stratified_split(_samples({0: 5}), bad, seed=0)


def test_listing_skips_hidden_and_unknown_files_and_accepts_any_case(tmp_path):
    folder = tmp_path / "cls"
    folder.mkdir()
    for name in ["a.JPG", "b.png", "c.TiFF", ".hidden.jpg", "notes.txt", "Thumbs.db", "d.webp"]:
        (folder / name).write_bytes(b"x")
    (folder / ".cache").mkdir()
    (folder / ".cache" / "e.jpg").write_bytes(b"x")
    assert [p.name for p in list_images(folder)] == ["a.JPG", "b.png", "c.TiFF", "d.webp"]


def test_empty_class_folder_is_left_out_with_a_warning(image_root, caplog):
    (image_root / "zz-empty").mkdir()
    with caplog.at_level(logging.WARNING):
        classes, _ = scan_class_folders(image_root)
    assert "zz-empty" not in classes and len(classes) == 3
    assert "zz-empty" in caplog.text


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "does-not-exist"


def _a_file(tmp_path: Path) -> Path:
    (tmp_path / "photo.jpg").write_bytes(b"x")
    return tmp_path / "photo.jpg"


def _no_class_folders(tmp_path: Path) -> Path:
    Image.new("RGB", (8, 8)).save(tmp_path / "loose.png")
    return tmp_path


def _one_class(tmp_path: Path) -> Path:
    return copy_sample(tmp_path / "images", classes=1)


def _no_images(tmp_path: Path) -> Path:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "readme.txt").write_text("hi")
    return tmp_path


@pytest.mark.parametrize("make_root, error, message", [
    (_missing, FileNotFoundError, "does-not-exist"),
    (_a_file, NotADirectoryError, "is a file"),
    (_no_class_folders, ValueError, "no class folders"),
    (_one_class, ValueError, "only one class"),
    (_no_images, ValueError, "no images"),
], ids=["missing", "a file", "no class folders", "one class", "no images"])
def test_a_root_that_is_no_folder_of_classes_is_refused_naming_why(tmp_path, make_root, error, message):
    with pytest.raises(error, match=message):
        scan_class_folders(make_root(tmp_path))


# Every mode, EXIF orientation and colour profile, read back as the picture it holds: tests/test_image_fidelity.py


def test_transparent_pixels_become_white(tmp_path):
    path = tmp_path / "cutout.png"
    Image.new("RGBA", (4, 4), (255, 0, 0, 0)).save(path)
    assert load_rgb(path).getpixel((0, 0)) == (255, 255, 255)


def test_split_folders_layout_with_val_and_test(tmp_path):
    for subset in ["train", "val", "test"]:
        copy_sample(tmp_path / subset, classes=2, per_class=4)
    index = index_folder(tmp_path, valid_pct=0.2, seed=0)
    assert index.layout == "split_folders"
    assert (len(index.train), len(index.valid), len(index.test)) == (8, 8, 8)
    assert index.classes == sorted(p.name for p in (tmp_path / "train").iterdir())


def test_a_valid_folder_is_shuffled_once_so_its_first_batches_hold_every_class(tmp_path):
    # valid/ is listed class by class: in that order limit_val_batches would see the first class alone
    copy_sample(tmp_path / "train", classes=3, per_class=4)
    copy_sample(tmp_path / "valid", classes=3, per_class=12)
    index = index_folder(tmp_path, valid_pct=0.2, seed=0)
    labels = [s.label for s in index.valid]
    assert sorted(labels) == [0] * 12 + [1] * 12 + [2] * 12  # every image once
    assert set(labels[:8]) == {0, 1, 2}  # what limit_val_batches=1 at batch size 8 sees
    assert index_folder(tmp_path, valid_pct=0.2, seed=0).valid == index.valid  # the same order every time
    assert index_folder(tmp_path, valid_pct=0.2, seed=1).valid != index.valid  # the seed's order


def test_validation_class_unknown_to_training_is_named(tmp_path):
    copy_sample(tmp_path / "train", classes=2, per_class=3)
    copy_sample(tmp_path / "valid", classes=3, per_class=3)
    with pytest.raises(ValueError, match="class folders that train/ does not"):
        index_folder(tmp_path, valid_pct=0.2, seed=0)


def test_datamodule_batches_split_csv_and_classes(image_root, tmp_path):
    dm = ImageFolderDataModule(image_root, size=32, batch_size=4, split_csv=tmp_path / "split.csv", **IMAGENET_STATS)
    assert dm.num_classes == 3
    dm.setup("fit")
    images, labels = next(iter(dm.train_dataloader()))
    # augment.on=auto is the device path: the workers hand over uint8 crops, the batch is augmented and
    # normalised on the training device (on_after_batch_transfer, model_input)
    assert dm.placement.augment_on == "device"
    assert images.shape == (4, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.dtype == torch.int64
    model_input = dm.model_input(images, train=True, draw_seed=0)
    assert model_input.shape == (4, 3, 32, 32) and model_input.dtype == torch.float32
    assert model_input.min() < 0  # normalised with ImageNet statistics: values go below 0
    assert b"\r" not in (tmp_path / "split.csv").read_bytes()  # \n line endings, not the csv module's \r\n
    with (tmp_path / "split.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 36
    assert {r["subset"] for r in rows} == {"train", "valid"}
    assert sum(r["subset"] == "valid" for r in rows) == 3 * round(0.2 * 12)
    assert {r["label"] for r in rows} == set(dm.classes)
    assert all(not Path(r["path"]).is_absolute() for r in rows)


@pytest.mark.parametrize("method", ["crop", "squish", "pad"])
def test_eval_images_have_the_configured_size(tmp_path, image_root, method):
    wide = image_root / sorted(p.name for p in image_root.iterdir())[0] / "wide.png"
    Image.new("RGB", (90, 30), (200, 10, 10)).save(wide)
    dm = ImageFolderDataModule(image_root, size=48, resize_method=method, **IMAGENET_STATS)
    assert dm.eval_transform(load_rgb(wide)).shape == (3, 48, 48)
    assert dm.train_transform(load_rgb(wide)).shape == (3, 48, 48)


def test_unknown_resize_method_is_named(image_root):
    with pytest.raises(ValueError, match="data.resize_method='stretch'"):
        ImageFolderDataModule(image_root, resize_method="stretch", **IMAGENET_STATS)


def test_loader_workers_of_the_default_config_run_below_the_training_process(image_root):
    """data.worker_nice (19 in the config): the persistent loader workers' nice value is the training
    process's + 19, so on a CPU they run when training leaves a core idle (src/data/loading/worker_priority.py)."""
    import os

    import psutil

    from src.runs.builder import build_datamodule
    from tests.conftest import compose_config

    # num_workers=2, not a default switched off: auto gives one per core, and the count asserted below must not
    # depend on the machine's cores
    cfg = compose_config([f"data.root={image_root}", "data.batch_size=4", "data.num_workers=2"])
    assert cfg.data.worker_nice == 19
    dm = build_datamodule(cfg.data, split_csv=None, bad_files_csv=None)
    dm.setup("fit")
    before = {child.pid for child in psutil.Process().children()}
    loader = iter(dm.train_dataloader())
    next(loader), next(loader)  # batches come from the workers in turn: both have started (and run their init)
    workers = [child for child in psutil.Process().children() if child.pid not in before]
    assert len(workers) == 2
    assert [worker.nice() for worker in workers] == [min(os.getpriority(os.PRIO_PROCESS, 0) + 19, 19)] * 2
    del loader


@pytest.mark.parametrize("bad", [-1, 20, 2.5, True, "low"])
def test_worker_nice_outside_0_to_19_is_refused(image_root, bad):
    with pytest.raises(ValueError, match=r"data.worker_nice=.*expected a whole number from 0"):
        ImageFolderDataModule(image_root, worker_nice=bad, **IMAGENET_STATS)
