"""Evaluation at the precision the run trained with: a bf16 run's metrics are reproduced by src.evaluate.

The runs here set `trainer.precision=bf16-mixed` explicitly, so they train in bf16 on every CPU (emulated
and slower where the CPU has no native bf16; the run is three batches). IFC_NATIVE_BF16 then makes the
evaluating machine act as one with (1) or without (0) native bf16.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf, open_dict
from PIL import Image

from src import Predictor
from src.evaluate import evaluate
from src.inspect import inspect_model
from tests.conftest import compose_config, conv_output_dtypes, train_tiny_run

# Not marked `precision`: every test sets IFC_NATIVE_BF16 itself (or trains at an explicit precision), so a
# second pass as the other kind of CPU would run the same thing again.


@pytest.fixture(scope="module")
def bf16_training(module_tmp_path) -> tuple[Path, list[torch.dtype]]:
    """The bf16 run's directory and the dtypes its convolutions computed in, training and validating."""
    with conv_output_dtypes() as seen:
        run = train_tiny_run(module_tmp_path / "bf16", ["trainer.precision=bf16-mixed"], classes=4)
    return run, seen


@pytest.fixture(scope="module")
def bf16_run(bf16_training) -> Path:
    return bf16_training[0]


def _reference_probabilities(ckpt: Path, images: torch.Tensor, autocast: bool) -> torch.Tensor:
    """Softmax of the checkpoint's weights on ``images``, built here from the checkpoint's own tensors and
    run in fp32 (NCHW), or as Lightning's bf16-mixed ran it with ``model.channels_last=auto``: in bf16
    autocast, channels_last; without the project's precision wrapper."""
    from src.models.network import build_network

    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=False)
    config = OmegaConf.create(checkpoint["hyper_parameters"]["run_config"])
    net = build_network(config.model, num_classes=len(checkpoint["hyper_parameters"]["classes"]))
    net.load_state_dict({k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")})
    net.eval()
    memory_format = torch.channels_last if autocast else torch.contiguous_format
    net, images = net.to(memory_format=memory_format), images.contiguous(memory_format=memory_format)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        return net(images).float().softmax(1)


def _evaluate(run: Path, out: Path, checkpoint: str, *overrides: str) -> dict:
    cfg = compose_config([f"ckpt_path={run / 'checkpoints' / checkpoint}", *overrides], config_name="evaluate")
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    return evaluate(cfg)


def test_the_run_records_the_precision_it_trained_with_and_trained_in_bf16(bf16_training):
    run, conv_dtypes = bf16_training
    assert OmegaConf.load(run / "config.yaml").trainer.precision == "bf16-mixed"
    # every convolution of training and validation computed in bf16 (autocast), none in fp32
    assert len(conv_dtypes) > 100 and set(conv_dtypes) == {torch.bfloat16}


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
    with conv_output_dtypes() as fp32_dtypes:
        metrics = _evaluate(bf16_run, tmp_path, "last.ckpt", "precision=32-true")
    assert metrics["precision"] == "32-true"
    assert fp32_dtypes and set(fp32_dtypes) == {torch.float32}  # the override really ran in fp32
    # fp32 and bf16 give close but not equal probabilities on the same weights
    with conv_output_dtypes() as bf16_dtypes:
        bf16 = _evaluate(bf16_run, tmp_path / "bf16", "last.ckpt")
    assert set(bf16_dtypes) == {torch.bfloat16}
    assert metrics["loss"] == pytest.approx(bf16["loss"], abs=0.05)
    # ... and not the same: further apart than evaluate's reproduction of the training's own loss (1e-4)
    assert abs(metrics["loss"] - bf16["loss"]) > 1e-4


def test_predictor_and_inspect_run_at_the_trained_precision(bf16_run, tmp_path, monkeypatch):
    monkeypatch.setenv("IFC_NATIVE_BF16", "1")
    ckpt = bf16_run / "checkpoints" / "last.ckpt"
    predictor = Predictor.from_checkpoint(ckpt, device="cpu")
    assert predictor.precision == "bf16-mixed"
    images = sorted((bf16_run.parent / "images").rglob("*.png"))[:6]
    probabilities = predictor.predict(images[0]).probabilities
    assert probabilities.dtype.is_floating_point and float(probabilities.sum()) == pytest.approx(1.0, abs=1e-5)
    fp32_predictor = Predictor.from_checkpoint(ckpt, device="cpu", precision="32-true")
    assert fp32_predictor.precision == "32-true"
    # the probabilities are those of a reference forward pass at each precision, and the two precisions differ
    batch = torch.stack([predictor.transform(Image.open(path).convert("RGB")) for path in images])
    bf16_reference = _reference_probabilities(ckpt, batch, autocast=True)
    fp32_reference = _reference_probabilities(ckpt, batch, autocast=False)
    bf16_got = torch.stack([p.probabilities for p in predictor.predict_batch(images)])
    fp32_got = torch.stack([p.probabilities for p in fp32_predictor.predict_batch(images)])
    torch.testing.assert_close(fp32_got, fp32_reference, atol=1e-6, rtol=0)
    torch.testing.assert_close(bf16_got, bf16_reference, atol=1e-6, rtol=0)
    assert (bf16_got - fp32_got).abs().max() > 1e-3

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
