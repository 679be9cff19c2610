"""A damaged checkpoint (truncated, empty, not a checkpoint, another program's) gets one message that names
the file, what is wrong with it and what to use instead, from every command that takes one."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from src.evaluate import evaluate
from src.inference.exporting import export
from src.inspect import inspect_model
from src.models.safe_load import DamagedFileError
from src.predict import predict
from src.runs.training import train
from tests.conftest import TINY_OVERRIDES, compose_config, train_tiny_run


@pytest.fixture(scope="module")
def run(module_tmp_path) -> Path:
    # 32-true: the precision plays no part here, and bf16 is emulated (slow) on CPUs without it
    return train_tiny_run(module_tmp_path / "damaged", ["trainer.precision=32-true"])


def _task(name: str, out: Path, overrides: list[str]):
    cfg = compose_config(overrides, config_name=name)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    return cfg


def _truncated(run: Path, name: str = "broken.ckpt") -> Path:
    good = (run / "checkpoints" / "last.ckpt").read_bytes()
    path = run / "checkpoints" / name
    path.write_bytes(good[: len(good) // 2])
    return path


@pytest.mark.parametrize("command", ["evaluate", "predict", "export", "inspect"])
def test_every_command_names_a_truncated_checkpoint_and_an_intact_one(run, tmp_path, command):
    broken = _truncated(run)
    image = next((run.parent / "images").rglob("*.png"))
    overrides = [f"ckpt_path={broken}"] + ([f"input={image}"] if command == "predict" else [])
    entry = {"evaluate": evaluate, "predict": predict, "export": export, "inspect": inspect_model}[command]
    with pytest.raises(DamagedFileError) as raised:
        entry(_task(command, tmp_path, overrides))
    message = str(raised.value)
    assert f"ckpt_path='{broken}'" in message and "truncated" in message
    assert "Use another checkpoint of the same run instead:" in message
    assert str(run / "checkpoints" / "last.ckpt") in message or str(run / "checkpoints" / "best.ckpt") in message
    assert "broken.ckpt" not in message.split("instead:")[1]  # never suggests itself


@pytest.mark.parametrize("content, words", [
    (b"", "it is empty (0 bytes)"),
    (b"hello, this is a text file\n", "it is not a PyTorch file"),
])
def test_an_empty_file_or_a_text_file_is_named_as_such(run, tmp_path, content, words):
    path = tmp_path / "model.ckpt"
    path.write_bytes(content)
    with pytest.raises(DamagedFileError, match=re.escape(words)):
        evaluate(_task("evaluate", tmp_path / "out", [f"ckpt_path={path}"]))


@pytest.mark.parametrize("saved, kind", [
    ({"model": {"w": torch.zeros(2)}}, "a checkpoint of another program"),
    ({"w": torch.zeros(2)}, "a plain state_dict"),
    ([torch.zeros(2)], "a list"),
])
def test_a_checkpoint_of_another_program_says_how_to_use_its_weights(tmp_path, saved, kind):
    path = tmp_path / "other.ckpt"
    torch.save(saved, path)
    with pytest.raises(ValueError, match="was not written by src.train") as raised:
        evaluate(_task("evaluate", tmp_path / "out", [f"ckpt_path={path}"]))
    assert kind in str(raised.value) and "model.backbone.weights=PATH" in str(raised.value)


def test_resuming_from_a_truncated_checkpoint_fails_before_the_scan_and_names_the_previous_one(run, tmp_path):
    copy = tmp_path / "resume"
    shutil.copytree(run / "checkpoints", copy / "checkpoints")
    (copy / "checkpoints" / "broken.ckpt").unlink(missing_ok=True)
    broken = _truncated(copy, "last.ckpt")
    cfg = compose_config([*TINY_OVERRIDES, f"data.root={run.parent / 'images'}", "ckpt_path=last"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(copy)
    with pytest.raises(DamagedFileError) as raised:
        train(cfg)
    message = str(raised.value)
    assert f"ckpt_path='{broken}'" in message and "truncated" in message
    assert f"instead: {copy / 'checkpoints' / 'best.ckpt'}" in message
    assert not (copy / "split.csv").exists() and not (copy / "config.yaml").exists()  # nothing was read or written


@pytest.mark.parametrize("make, error, words", [
    (lambda d: d, FileNotFoundError, "is a folder"),
    (lambda d: d / "missing.ckpt", FileNotFoundError, "is missing"),
])
def test_resuming_from_a_folder_or_a_missing_file_fails_first(run, tmp_path, make, error, words):
    cfg = compose_config([*TINY_OVERRIDES, f"data.root={run.parent / 'images'}", f"ckpt_path={make(tmp_path)}"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "new")
    with pytest.raises(error, match=words):
        train(cfg)
    assert not (tmp_path / "new" / "split.csv").exists()
