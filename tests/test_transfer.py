"""Transfer learning from this project's own runs: the body of a checkpoint (``model.backbone.weights=CKPT``),
the whole network (``model.init_from=CKPT``), and the body exported as a plain state_dict (``format=body``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import lightning as L
import pytest
import torch
import torchvision
from hydra.errors import InstantiationException
from omegaconf import open_dict
from torch import nn

from src.core.problems import ConfigError
from src.inference.exporting import export
from src.runs.builder import build_run
from src.runs.training import train
from tests.conftest import SAMPLE, TINY_OVERRIDES, compose_config, copy_sample, require_extra, train_tiny_run

BODY = "net.backbone."


@pytest.fixture
def resnet_run(tiny_run) -> Path:
    """A tiny run on three classes (the session's, read only): its run directory."""
    return tiny_run


def checkpoint_state(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def new_run_cfg(root: Path, output_dir: Path, overrides: list[str]):
    cfg = compose_config([*TINY_OVERRIDES, f"data.root={root}", *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


def test_backbone_weights_from_a_checkpoint_with_another_class_count(resnet_run, tmp_path):
    ckpt = resnet_run / "checkpoints" / "last.ckpt"
    root = copy_sample(tmp_path / "two", classes=2)
    run = build_run(new_run_cfg(root, tmp_path / "run", [f"model.backbone.weights={ckpt}"]))
    saved = checkpoint_state(resnet_run)
    body = run.module.net.backbone.state_dict()
    assert len(body) == len([k for k in saved if k.startswith(BODY)]) > 100
    for key, value in body.items():
        assert torch.equal(value, saved[BODY + key]), key
    assert run.module.net.head[-1].out_features == 2  # a new head for the new classes
    assert saved["net.head.8.weight"].shape[0] == 3


class BodyAtStart(L.Callback):
    """Keeps a copy of the network's body as the Trainer starts fitting (before any step)."""

    bodies: list[dict[str, torch.Tensor]] = []

    def on_fit_start(self, trainer, pl_module) -> None:
        BodyAtStart.bodies.append({k: v.detach().clone() for k, v in pl_module.net.backbone.state_dict().items()})


def test_the_body_of_a_checkpoint_trains_on_new_classes(resnet_run, tmp_path):
    root = copy_sample(tmp_path / "two", classes=2, per_class=8)
    best = resnet_run / "checkpoints" / "best.ckpt"
    cfg = new_run_cfg(root, tmp_path / "run", [f"model.backbone.weights={best}",
                                                f"+callbacks.body._target_={__name__}.BodyAtStart"])
    BodyAtStart.bodies.clear()
    metrics = train(cfg)
    assert 0.0 <= metrics["val/error_rate"] <= 1.0
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    # the training started from the source's body, tensor for tensor
    source = torch.load(best, weights_only=True)["state_dict"]
    [body] = BodyAtStart.bodies
    assert len(body) == len([k for k in source if k.startswith(BODY)]) > 100
    for key, value in body.items():
        assert torch.equal(value, source[BODY + key]), key
    # ... and trained from there: the second stage moved the body
    trained = checkpoint_state(tmp_path / "run")
    assert not torch.equal(trained[BODY + "0.weight"], source[BODY + "0.weight"])


@pytest.mark.parametrize("other", ["resnet34", "timm/resnet18"])
def test_a_checkpoint_of_another_architecture_names_both(resnet_run, tmp_path, other):
    if other.startswith("timm/"):
        require_extra("timm", "timm")
    cfg = new_run_cfg(copy_sample(tmp_path / "two", classes=2), tmp_path / "run",
                      [f"model.backbone.name={other}", f"model.backbone.weights={resnet_run / 'checkpoints' / 'last.ckpt'}"])
    with pytest.raises(InstantiationException, match=rf"checkpoint of a resnet18 run, but model.backbone.name is {other}"):
        build_run(cfg)


def test_init_from_takes_body_and_head_when_the_classes_match(resnet_run, tmp_path):
    root = copy_sample(tmp_path / "same", classes=3, per_class=6)
    run = build_run(new_run_cfg(root, tmp_path / "run", [f"model.init_from={resnet_run / 'checkpoints' / 'last.ckpt'}"]))
    saved = checkpoint_state(resnet_run)
    net = run.module.net.state_dict()
    assert set(net) == {k[len("net."):] for k in saved if k.startswith("net.")}
    for key, value in net.items():
        assert torch.equal(value, saved["net." + key]), key


def test_init_from_with_other_classes_names_added_and_removed_ones(resnet_run, tmp_path):
    classes = sorted(p.name for p in SAMPLE.iterdir() if p.is_dir())
    root = copy_sample(tmp_path / "other", classes=4, per_class=6)
    shutil.rmtree(root / classes[0])  # the run had classes 0-2; this data 1-3
    ckpt = resnet_run / "checkpoints" / "last.ckpt"
    with pytest.raises(ValueError) as error:
        build_run(new_run_cfg(root, tmp_path / "run", [f"model.init_from={ckpt}"]))
    message = str(error.value)
    assert f"added [{classes[3]!r}], removed [{classes[0]!r}]" in message
    assert f"model.backbone.weights={ckpt}" in message


def test_init_from_and_ckpt_path_together_are_refused_before_the_data_is_read(resnet_run, tmp_path):
    ckpt = resnet_run / "checkpoints" / "last.ckpt"
    cfg = new_run_cfg(tmp_path / "missing", tmp_path / "run", [f"model.init_from={ckpt}", f"ckpt_path={ckpt}"])
    with pytest.raises(ConfigError, match="model.init_from=.*no ckpt_path beside it"):
        train(cfg)


def test_exported_body_loads_into_torchvision_resnet18_strictly(resnet_run, tmp_path):
    cfg = compose_config([f"ckpt_path={resnet_run / 'checkpoints' / 'last.ckpt'}", "format=body"], config_name="export")
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "export")
    paths = export(cfg)
    state = torch.load(paths["model"], weights_only=True)
    resnet = torchvision.models.resnet18()
    resnet.fc = nn.Identity()
    resnet.load_state_dict(state, strict=True)
    saved = checkpoint_state(resnet_run)
    assert torch.equal(resnet.layer4[1].bn2.running_var, saved[BODY + "7.1.bn2.running_var"])
    assert torch.equal(resnet.conv1.weight, saved[BODY + "0.weight"])
    # ... and back: the plain file is a body's weights too
    run = build_run(new_run_cfg(copy_sample(tmp_path / "two", classes=2), tmp_path / "run",
                                [f"model.backbone.weights={paths['model']}"]))
    assert torch.equal(run.module.net.backbone[0].weight, saved[BODY + "0.weight"])


def test_timm_body_from_a_checkpoint_and_exported(tmp_path):
    timm = require_extra("timm", "timm")
    source = train_tiny_run(tmp_path / "source", ["model.backbone.name=timm/resnet18"], classes=3, per_class=6)
    ckpt = source / "checkpoints" / "last.ckpt"
    saved = checkpoint_state(source)
    run = build_run(new_run_cfg(copy_sample(tmp_path / "two", classes=2), tmp_path / "run",
                                ["model.backbone.name=timm/resnet18", f"model.backbone.weights={ckpt}"]))
    body = run.module.net.backbone.state_dict()
    assert len(body) > 100
    for key, value in body.items():
        assert torch.equal(value, saved[BODY + key]), key
    cfg = compose_config([f"ckpt_path={ckpt}", "format=body"], config_name="export")
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "export")
    model = timm.create_model("resnet18", num_classes=0)
    model.load_state_dict(torch.load(export(cfg)["model"], weights_only=True), strict=True)
    assert torch.equal(model.conv1.weight, saved[BODY + "model.conv1.weight"])
