"""Evaluation at the precision the run trained with: a bf16 run's metrics are reproduced by src.evaluate.

The runs here set `trainer.precision=bf16-mixed` explicitly, so they train in bf16 on every CPU (emulated
and slower where the CPU has no native bf16; the run is three batches). IFC_NATIVE_BF16 then makes the
evaluating machine act as one with (1) or without (0) native bf16.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf, open_dict

from src import Predictor
from src.evaluate import evaluate
from src.inspect import inspect_model
from tests.conftest import compose_config, train_tiny_run

# Not marked `precision`: every test sets IFC_NATIVE_BF16 itself (or trains at an explicit precision), so a
# second pass as the other kind of CPU would run the same thing again.


@pytest.fixture(scope="module")
def bf16_run(module_tmp_path) -> Path:
    return train_tiny_run(module_tmp_path / "bf16", ["trainer.precision=bf16-mixed"], classes=4)


def _evaluate(run: Path, out: Path, checkpoint: str, *overrides: str) -> dict:
    cfg = compose_config([f"ckpt_path={run / 'checkpoints' / checkpoint}", *overrides], config_name="evaluate")
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    return evaluate(cfg)


def test_the_run_records_the_precision_it_trained_with(bf16_run):
    assert OmegaConf.load(bf16_run / "config.yaml").trainer.precision == "bf16-mixed"


@pytest.mark.parametrize("checkpoint, logged", [("last.ckpt", "final"), ("best.ckpt", "best")])
def test_evaluate_reproduces_a_bf16_run_on_a_cpu_with_native_bf16(bf16_run, tmp_path, monkeypatch, checkpoint, logged):
    monkeypatch.setenv("IFC_NATIVE_BF16", "1")
    metrics = _evaluate(bf16_run, tmp_path, checkpoint)  # the default loader workers, as users run it
    training = json.loads((bf16_run / "metrics.json").read_text())
    assert metrics["precision"] == "bf16-mixed"
    assert json.loads((tmp_path / "metrics.json").read_text())["precision"] == "bf16-mixed"
    if logged == "final":
        assert metrics["error_rate"] == pytest.approx(training["final"]["val/error_rate"], abs=1e-4)
        assert metrics["loss"] == pytest.approx(training["final"]["val/loss"], abs=1e-4)
    else:
        assert metrics["error_rate"] == pytest.approx(training["best"]["val/error_rate"], abs=1e-4)


def test_a_cpu_without_bf16_falls_back_to_fp32_with_one_warning(bf16_run, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("IFC_NATIVE_BF16", "0")
    with caplog.at_level("WARNING"):
        metrics = _evaluate(bf16_run, tmp_path, "last.ckpt")
    assert metrics["precision"] == "32-true"
    warnings = [r.message for r in caplog.records if "trained at bf16-mixed" in r.message]
    assert len(warnings) == 1 and "running at 32-true instead" in warnings[0]


def test_an_explicit_precision_overrides_the_recorded_one(bf16_run, tmp_path, monkeypatch):
    monkeypatch.setenv("IFC_NATIVE_BF16", "1")
    metrics = _evaluate(bf16_run, tmp_path, "last.ckpt", "precision=32-true")
    assert metrics["precision"] == "32-true"
    # fp32 and bf16 give close but not equal probabilities on the same weights
    bf16 = _evaluate(bf16_run, tmp_path / "bf16", "last.ckpt")
    assert metrics["loss"] == pytest.approx(bf16["loss"], abs=0.05)


def test_predictor_and_inspect_run_at_the_trained_precision(bf16_run, tmp_path, monkeypatch):
    monkeypatch.setenv("IFC_NATIVE_BF16", "1")
    ckpt = bf16_run / "checkpoints" / "last.ckpt"
    predictor = Predictor.from_checkpoint(ckpt, device="cpu")
    assert predictor.precision == "bf16-mixed"
    image = next((bf16_run.parent / "images").rglob("*.png"))
    probabilities = predictor.predict(image).probabilities
    assert probabilities.dtype.is_floating_point and float(probabilities.sum()) == pytest.approx(1.0, abs=1e-5)
    assert Predictor.from_checkpoint(ckpt, device="cpu", precision="32-true").precision == "32-true"

    cfg = compose_config([f"ckpt_path={ckpt}", "cam_layer=layer2", "top_losses=2", "batch_count=2"],
                         config_name="inspect")
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "inspect")
    paths = inspect_model(cfg)
    assert paths["cam"].stat().st_size > 0


def test_the_precision_wrapper_keeps_the_networks_eval_mode_through_grad_cam(bf16_run):
    """grad_cam restores the mode it found: the wrapper must report the network's (eval), or batch norm
    is left training and a batch of one fails."""
    from PIL import Image

    from src.visualize.cam import grad_cam

    predictor = Predictor.from_checkpoint(bf16_run / "checkpoints" / "last.ckpt", device="cpu", precision="32-true")
    assert not any(m.training for m in predictor.net.modules())
    image = predictor.transform(Image.open(next((bf16_run.parent / "images").rglob("*.png"))).convert("RGB"))
    before = predictor.probabilities(image[None])
    grad_cam(predictor.net, predictor.net.net.backbone[-1], image)
    assert not any(m.training for m in predictor.net.modules())
    assert predictor.probabilities(image[None]) == pytest.approx(before)
