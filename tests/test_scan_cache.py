"""The scan cache: a later run opens only new and changed files, and gets what a fresh scan gets."""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

import pytest

from src.data.datamodule import ImageFolderDataModule
from src.data.files.scan_cache import CACHE_FORMAT, ScanCache
from src.runs.builder import build_datamodule
from tests.conftest import IMAGENET_STATS, compose_config


def _age(root: Path) -> None:
    """Files written by the test are as old as a data folder's usually are (the cache leaves out files
    modified in the last 2 s, which may change again within the same mtime tick): all of November 2023."""
    for path in root.rglob("*"):
        if not path.is_symlink():
            os.utime(path, (1_700_000_000, 1_700_000_000))


def _scan(root: Path, out: Path, cache_dir: Path | None, rescan: bool = False) -> ImageFolderDataModule:
    """A DataModule of ``root`` scanned, with its split.csv and bad_files.csv in ``out``."""
    datamodule = ImageFolderDataModule(root, size=32, split_csv=out / "split.csv", bad_files_csv=out / "bad_files.csv",
                                       scan_cache_dir=cache_dir, rescan=rescan, **IMAGENET_STATS)
    datamodule.setup("fit")
    return datamodule


def _same_result(a: ImageFolderDataModule, b: ImageFolderDataModule, out_a: Path, out_b: Path) -> None:
    assert a.index == b.index  # classes, layout and every subset, in order
    assert (out_a / "split.csv").read_bytes() == (out_b / "split.csv").read_bytes()
    bad_a, bad_b = out_a / "bad_files.csv", out_b / "bad_files.csv"  # written when a file was left out
    assert (bad_a.read_bytes() if bad_a.exists() else None) == (bad_b.read_bytes() if bad_b.exists() else None)


def test_a_cached_rescan_opens_nothing_and_gives_the_fresh_scans_result(messy_root, tmp_path):
    _age(messy_root)
    fresh = _scan(messy_root, tmp_path / "fresh", cache_dir=None)
    first = _scan(messy_root, tmp_path / "first", tmp_path / "cache")
    second = _scan(messy_root, tmp_path / "second", tmp_path / "cache")
    listed = fresh.scan.opened
    # 44 readable + 4 unreadable; the broken symlink, the symlink loops and the ignored files are never opened
    assert listed == 48 and first.scan.opened == listed
    assert (second.scan.opened, second.scan.from_cache) == (0, listed)
    _same_result(fresh, first, tmp_path / "fresh", tmp_path / "first")
    _same_result(fresh, second, tmp_path / "fresh", tmp_path / "second")
    assert "opened 0 file(s), 48 verdict(s) from the scan cache" in second.scan.summary()
    assert len(list((tmp_path / "cache").iterdir())) == 1  # one file per data folder
    assert _scan(messy_root, tmp_path / "again", tmp_path / "cache", rescan=True).scan.opened == listed


def test_changed_new_and_deleted_files_are_checked_again(image_root, tmp_path):
    _age(image_root)
    cache = tmp_path / "cache"
    _scan(image_root, tmp_path / "first", cache)
    classes = sorted(p for p in image_root.iterdir())
    images = sorted(classes[0].iterdir())
    images[0].write_bytes(images[0].read_bytes()[:60])  # cut short: now a bad file, with a new size and mtime
    shutil.copy(images[1], classes[1] / "new.png")
    images[2].unlink()
    _age(image_root)
    cached = _scan(image_root, tmp_path / "cached", cache)
    assert (cached.scan.opened, cached.scan.from_cache) == (2, 34)  # the changed and the new file
    assert [b.path.name for b in cached.scan.unreadable] == [images[0].name]
    _same_result(_scan(image_root, tmp_path / "fresh", None), cached, tmp_path / "fresh", tmp_path / "cached")
    # the deleted file dropped out of the cache: a third run opens nothing
    assert _scan(image_root, tmp_path / "third", cache).scan.opened == 0


def test_a_file_that_changes_without_changing_size_or_mtime_too_soon_is_not_trusted(image_root, tmp_path):
    _age(image_root)
    fresh = next(image_root.rglob("*.png"))
    fresh.touch()  # modified just now: the same mtime tick as the scan, it could change again unseen
    _scan(image_root, tmp_path / "first", tmp_path / "cache")
    assert _scan(image_root, tmp_path / "second", tmp_path / "cache").scan.opened == 1


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other format", "other root", "wrong shape"])
def test_a_damaged_or_foreign_cache_is_rebuilt_never_trusted(image_root, tmp_path, caplog, damage):
    _age(image_root)
    fresh = _scan(image_root, tmp_path / "fresh", None)
    first = _scan(image_root, tmp_path / "first", tmp_path / "cache")
    path = first.scan.cache.path
    columns = json.loads(gzip.decompress(path.read_bytes()))
    # every stored verdict says "unreadable": trusted, it would empty the split
    columns["bad"] = {str(i): ["corrupt", "planted"] for i in range(len(columns["paths"]))}
    if damage == "garbage":
        path.write_bytes(b"not a cache")
    elif damage == "truncated":
        path.write_bytes(gzip.compress(json.dumps(columns).encode())[:100])
    else:
        if damage == "other format":
            columns["format"] = CACHE_FORMAT + 1
        elif damage == "other root":
            columns["root"] = "/somewhere/else"
        else:
            columns["sizes"] = columns["sizes"][:-1]
        path.write_bytes(gzip.compress(json.dumps(columns).encode()))
    with caplog.at_level("INFO"):
        rebuilt = _scan(image_root, tmp_path / "rebuilt", tmp_path / "cache")
    assert rebuilt.scan.opened == 36 and not rebuilt.scan.unreadable
    _same_result(fresh, rebuilt, tmp_path / "fresh", tmp_path / "rebuilt")
    assert str(path) in caplog.text  # the log names the cache it did not use
    if damage in ("garbage", "truncated", "wrong shape"):  # damaged, not another run's: a warning names the file
        assert [r for r in caplog.records if r.levelname == "WARNING" and str(path) in r.getMessage()]
    assert _scan(image_root, tmp_path / "after", tmp_path / "cache").scan.opened == 0  # rewritten, usable again


def test_a_moved_root_is_scanned_again(image_root, tmp_path):
    _age(image_root)
    _scan(image_root, tmp_path / "first", tmp_path / "cache")
    moved = image_root.rename(tmp_path / "moved")
    assert _scan(moved, tmp_path / "moved_run", tmp_path / "cache").scan.opened == 36
    other_limit = ScanCache(tmp_path / "cache", moved, max_pixels=1000)
    assert other_limit.path != ScanCache(tmp_path / "cache", moved, max_pixels=100_000_000).path


def test_the_config_keeps_the_cache_in_paths_cache_dir(image_root, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    _age(image_root)
    cfg = compose_config([f"data.root={image_root}", "data.split_csv=null", "data.bad_files_csv=null"])
    assert cfg.data.rescan is False
    first = build_datamodule(cfg.data)
    first.index
    assert first.scan.cache.path.parent == tmp_path / "xdg" / "image-folder-classifier" / "scans"
    assert first.scan.cache.path.is_file() and not any(image_root.rglob("*.gz"))  # nothing written in the data
    second = build_datamodule(cfg.data)
    second.index
    assert second.scan.opened == 0
    cfg.data.rescan = True
    third = build_datamodule(cfg.data)
    third.index
    assert third.scan.opened == 36
