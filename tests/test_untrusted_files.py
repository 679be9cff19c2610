"""Untrusted files: a checkpoint that would run code is refused unrun; predict writes only its output."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from src.models.loading import load_classifier
from src.predict import predict
from tests.conftest import compose_config


class _RunsCode:
    """Unpickling this calls os.system: what a booby-trapped checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


def _malicious_checkpoint(path: Path, marker: Path) -> Path:
    torch.save({"state_dict": {"net.head.8.weight": torch.zeros(2, 2)},
                "hyper_parameters": {"classes": ["a", "b"], "run_config": "x: 1"},
                "payload": _RunsCode(marker)}, path)
    return path


def test_the_crafted_checkpoint_would_run_code_if_unpickled(tmp_path):
    """The control: the file really is malicious, so the next tests prove something."""
    marker = tmp_path / "pwned"
    checkpoint = _malicious_checkpoint(tmp_path / "evil.ckpt", marker)
    torch.load(checkpoint, weights_only=False)
    assert marker.exists()


def test_a_checkpoint_that_would_run_code_is_refused_unrun(tmp_path):
    marker = tmp_path / "pwned"
    checkpoint = _malicious_checkpoint(tmp_path / "evil.ckpt", marker)
    with pytest.raises(ValueError, match=r"ckpt_path=.*evil.ckpt' was refused: it holds pickled objects") as raised:
        load_classifier(checkpoint)
    assert isinstance(raised.value.__cause__, pickle.UnpicklingError)
    assert not marker.exists()


def test_weights_that_would_run_code_are_refused_unrun(tmp_path):
    from src.models.components.backbones import ResNetBody

    marker = tmp_path / "pwned"
    weights = _malicious_checkpoint(tmp_path / "resnet18.pth", marker)
    with pytest.raises(ValueError, match="model.backbone.weights=.*was refused"):
        ResNetBody("resnet18", weights=str(weights))
    assert not marker.exists()


def test_predict_with_a_malicious_checkpoint_writes_nothing(tmp_path):
    marker = tmp_path / "pwned"
    checkpoint = _malicious_checkpoint(tmp_path / "evil.ckpt", marker)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x.png").write_bytes(b"")
    cfg = compose_config([f"ckpt_path={checkpoint}", f"input={tmp_path / 'in'}"], config_name="predict")
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "out")
    with pytest.raises(ValueError, match="was refused"):
        predict(cfg)
    assert not marker.exists() and not (tmp_path / "out").exists()


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_predict_writes_only_its_output_whatever_the_input_names(tmp_path, monkeypatch, image_root):
    """Names with path separators, '..', newlines, commas, quotes and formulas only ever become CSV cells."""
    import csv
    import shutil

    from torch import nn

    from src.data.transforms.presets import EvalTransform
    from src.inference.predictor import Predictor

    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 2))
    monkeypatch.setattr(Predictor, "from_checkpoint", classmethod(
        lambda cls, path, device=None, tta=False, threshold=None, precision=None: cls(net, ["a", "b"],
                                                                      EvalTransform(32, [0.5] * 3, [0.5] * 3), "cpu")))
    photo = next(image_root.rglob("*.png"))
    inputs = tmp_path / "work" / "inputs"
    inputs.mkdir(parents=True)
    names = ["..png", "...png", "new\nline.png", 'comma, "quote".png', "=cmd()|'x'!A1.png", "-rf.png",
             "~user.png", "$HOME.png", "a\\..\\..\\b.png", "ünï 外套.png"]
    for name in names:
        shutil.copy(photo, inputs / name)
    listing = tmp_path / "work" / "list.txt"
    listing.write_text("inputs/..png\n../../../etc/passwd\n" + "\n".join(f"inputs/{n}" for n in names[1:2]) + "\n")
    before = _tree(tmp_path)
    output = tmp_path / "work" / "out" / "predictions.csv"
    for source in (inputs, listing):
        cfg = compose_config([f"ckpt_path={tmp_path}/none.ckpt", f"input={source}", f"output={output}", "topk=1"],
                             config_name="predict")
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / "work" / "out")
        summary = predict(cfg)
        with output.open(newline="") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == len(summary["results"])
    assert _tree(tmp_path) - before == {"work/out", "work/out/predictions.csv"}
    # the last run (the list): /etc/passwd was read as an input, failed as an image, and was not written
    assert [Path(r["path"]).name for r in rows] == ["..png", "passwd", "...png"]
    assert rows[1]["error"].startswith("not a readable image")
