"""The learning-rate finder: fastai's suggestion functions on synthetic curves, the loop on real images."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf, open_dict

from src.lr_find import lr_find, with_max_lr
from src.optim.lr_range_test import LRFinderResult, find_lr, minimum, steep, valley
from src.runs.builder import build_datamodule, build_module
from src.train import train

LRS = list(10 ** np.linspace(-7, 1, 100))


def test_valley_is_past_the_middle_of_the_longest_decrease():
    losses = [(x - 70) ** 2 for x in range(100)]  # falls for 71 points, then rises
    # longest valley: points 0..70, so start=-1 (fastai's arithmetic), end=70, sections=71/3
    assert valley(LRS, losses) == LRS[-1 + 23 + 11]


def test_valley_of_a_two_point_valley_is_not_the_last_rate():
    assert valley([1e-3, 1e-2, 1e-1], [2.0, 1.0, 3.0]) == 1e-3


def test_minimum_and_steep():
    u_curve = [(x - 70) ** 2 for x in range(100)]
    assert minimum(LRS, u_curve) == pytest.approx(LRS[70] / 10)
    sigmoid = [-math.tanh((x - 29.5) / 5) for x in range(100)]  # falls fastest between 29 and 30
    assert steep(LRS, sigmoid) == LRS[29]


def test_suggestions_skip_the_first_tenth_and_the_last_five_points():
    losses = [0.0] * 10 + [(x - 70) ** 2 for x in range(10, 100)]  # the flat start is ignored
    result = LRFinderResult(LRS, losses, num_steps=100)
    lrs, trimmed = result.trimmed()
    assert lrs == LRS[10:95] and trimmed == losses[10:95]
    assert result.suggestions()["minimum"] == pytest.approx(LRS[70] / 10)
    with pytest.raises(ValueError, match="stopped after 3 of 100 steps"):
        LRFinderResult(LRS[:3], [1.0, 2.0, 9.0], num_steps=100).suggestions()


def test_with_max_lr_keeps_the_form_of_a_stage_lr():
    assert with_max_lr(3e-3, 1e-2) == 1e-2
    assert with_max_lr([3e-3], 1e-2) == [1e-2]
    assert with_max_lr([1e-6, 1e-4], 1e-3) == pytest.approx([1e-5, 1e-3])


def test_finder_ramps_exponentially_stops_on_divergence_and_restores_the_model(tiny_cfg):
    datamodule = build_datamodule(tiny_cfg.data)
    datamodule.setup("fit")
    model = build_module(tiny_cfg, **datamodule.model_fields())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainable = [p.requires_grad for p in model.parameters()]
    torch.manual_seed(0)
    generator_before = torch.get_rng_state()
    # 20 steps from 1e-3 to 1e3: the loss diverges well before the end
    result = find_lr(model, datamodule.train_dataloader(), stage_index=1, start_lr=1e-3, end_lr=1e3, num_steps=20,
                     beta=tiny_cfg.lr_finder.beta, stop_factor=tiny_cfg.lr_finder.stop_factor)
    n = len(result.lrs)
    assert 2 < n <= 20 and len(result.losses) == n
    assert result.lrs == pytest.approx([1e-3 * (1e6) ** (i / 20) for i in range(n)])
    if n < 20:  # stopped: the last smoothed loss passed 4x the lowest before it
        assert result.losses[-1] > 4 * min(result.losses[:-1])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [p.requires_grad for p in model.parameters()] == trainable
    assert torch.equal(torch.get_rng_state(), generator_before)  # the run after it draws as without it
    with pytest.raises(ValueError, match="stage=5 but the schedule has 2 stage"):
        find_lr(model, datamodule.train_dataloader(), stage_index=5, start_lr=1e-3, end_lr=1e3, num_steps=20,
                beta=0.98, stop_factor=4.0)


@pytest.mark.slow  # about 90 s on the shared 2-core machine: a finder run and a training run
def test_lr_find_writes_the_plot_and_lr_find_true_trains_at_the_suggestion(tiny_cfg):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with open_dict(tiny_cfg):
        tiny_cfg.lr_finder.num_steps = 15
        tiny_cfg.lr_finder.end_lr = 1.0
        del tiny_cfg.callbacks.interpretation, tiny_cfg.callbacks.show_batch
    suggestions = lr_find(tiny_cfg, stage_index=0)
    assert set(suggestions) == {"valley", "minimum", "steep"}
    assert all(1e-8 <= v <= 1.0 for v in suggestions.values())
    run = Path(tiny_cfg.paths.output_dir)
    assert (run / "lr_find.png").stat().st_size > 10_000
    assert "lr_find" in EventAccumulator(str(run / "tensorboard")).Reload().Tags()["images"]

    tiny_cfg.lr_find = True
    train(tiny_cfg)  # seeded: the finder sees the same batches and suggests the same rate
    first_lr = OmegaConf.load(run / "config.yaml").schedule.stages[0].lr
    assert list(first_lr) == pytest.approx([suggestions["valley"]])


def test_lr_find_true_scans_the_folder_and_builds_the_backbone_once(tiny_cfg, monkeypatch):
    import src.data.datamodule
    import src.models.components.backbones

    calls = {"scan": 0, "backbone": 0}

    def counted(name, function):
        def wrapper(*args, **kwargs):
            result = function(*args, **kwargs)
            # the config check's network on the meta device (no weights, no memory) is not a build
            calls[name] += name != "backbone" or next(result.parameters()).device.type != "meta"
            return result
        return wrapper

    monkeypatch.setattr(src.data.datamodule, "index_labels", counted("scan", src.data.datamodule.index_labels))
    monkeypatch.setattr(src.models.components.backbones, "build_backbone",
                        counted("backbone", src.models.components.backbones.build_backbone))
    with open_dict(tiny_cfg):
        tiny_cfg.lr_find = True
        tiny_cfg.lr_finder.num_steps = 12
        tiny_cfg.lr_finder.end_lr = 1.0
        tiny_cfg.schedule.stages = [{"name": "head", "epochs": 1, "lr": [3e-3], "freeze_to": -1}]
        tiny_cfg.trainer.limit_val_batches = 1
        del tiny_cfg.callbacks.interpretation, tiny_cfg.callbacks.show_batch
    train(tiny_cfg)
    assert calls == {"scan": 1, "backbone": 1}
    run = Path(tiny_cfg.paths.output_dir)
    assert (run / "lr_find.png").is_file()
    # the suggestion is what trained, and what config.yaml and the checkpoint record
    trained_lr = OmegaConf.load(run / "config.yaml").schedule.stages[0].lr
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert OmegaConf.create(checkpoint["hyper_parameters"]["run_config"]).schedule.stages[0].lr == trained_lr
    assert list(trained_lr) != [3e-3]
