"""Speed settings of a real training run: throughput logged, channels_last applied, auto resolved."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf, open_dict

from src.models.loading import load_classifier
from src.runs.training import train

# What `auto` resolves to changes these results: `make test-other-cpu` runs them as the other kind of CPU.
pytestmark = pytest.mark.precision


def test_run_records_its_speed_and_the_settings_that_ran(tiny_cfg):
    with open_dict(tiny_cfg):
        tiny_cfg.model.channels_last = True
        tiny_cfg.callbacks.throughput.warmup_steps = 1
        del tiny_cfg.callbacks.interpretation, tiny_cfg.callbacks.show_batch
    assert tiny_cfg.trainer.precision == "auto"
    metrics = train(tiny_cfg)
    run = Path(tiny_cfg.paths.output_dir)

    performance = json.loads((run / "metrics.json").read_text())["performance"]
    assert set(performance) == {"perf/train_images_per_s", "perf/train_epoch_s", "perf/val_s"}
    assert all(value > 0 for value in performance.values())
    assert metrics["perf/train_images_per_s"] == performance["perf/train_images_per_s"]
    # auto is resolved before the run: config.yaml says what ran (no native bf16 here, or bf16 where there is)
    assert OmegaConf.load(run / "config.yaml").trainer.precision in ("32-true", "bf16-mixed")

    # the weights trained in NHWC (the checkpoint keeps their strides) and load like any others
    state = torch.load(run / "checkpoints/last.ckpt", weights_only=True)["state_dict"]
    first_conv = state["net.backbone.0.weight"]
    assert first_conv.is_contiguous(memory_format=torch.channels_last) and not first_conv.is_contiguous()
    loaded = load_classifier(run / "checkpoints/last.ckpt")
    images = torch.randn(2, 3, 32, 32)
    assert loaded.net(images).shape == (2, 3)


@pytest.mark.slow  # compiling ResNet18 takes about a minute on 2 cores, per stage
def test_compiled_network_trains_and_saves_plain_parameter_names(tiny_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "compile-cache"))
    with open_dict(tiny_cfg):
        tiny_cfg.model.compile = True
        # one stage of 2 epochs of 3 batches: 1 eager step timed, then 4 compiled (1 warm-up, 1 timed)
        tiny_cfg.schedule.stages = [{"name": "all", "epochs": 2, "lr": 1e-3, "freeze_to": 0}]
        tiny_cfg.callbacks.compile_when_it_pays.timed_steps = 1
        del tiny_cfg.callbacks.interpretation, tiny_cfg.callbacks.show_batch
    metrics = train(tiny_cfg)
    assert 0.0 <= metrics["val/error_rate"] <= 1.0
    state = torch.load(Path(tiny_cfg.paths.output_dir) / "checkpoints/last.ckpt", weights_only=True)["state_dict"]
    assert "net.backbone.0.weight" in state and not any("_orig_mod" in key for key in state)
    # Inductor really compiled: its cache holds the kernels, and the record the measured warm-up
    records = json.loads((tmp_path / "compile-cache" / "compile-records.json").read_text())
    (record,) = records.values()
    assert record["warmup_s"] > 1.0 and record["compiled_step_s"] > 0
    assert any((tmp_path / "compile-cache").rglob("*.py"))
