"""The learning-rate finder: fastai's suggestion functions on synthetic curves, the loop on real images."""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf, open_dict

from src.runs.lr_finding import lr_find, with_max_lr
from src.optim.lr_finder import LRFinderResult, lr_find_on_batches, minimum, steep, valley
from src.runs.builder import build_datamodule, build_module
from src.runs.training import train

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
    # 20 steps from 1e-2 to 1e6 in the first stage (the head): Adam moves every weight by about
    # the learning rate, so from lr ~1 (step 5) the logits and the loss blow up; measured: every
    # seed stops at step 6, and by the last steps (lr 1e5) no loss could stay within 4x its minimum.
    # the batches as src.lr_find gives them: augmented and normalised on the device (augment.on=auto)
    batches = datamodule.model_batches(datamodule.train_dataloader(), torch.device("cpu"), train=True)
    result = lr_find_on_batches(model, batches, stage_index=0, start_lr=1e-2, end_lr=1e6, num_steps=20,
                     beta=tiny_cfg.lr_finder.beta, stop_factor=tiny_cfg.lr_finder.stop_factor)
    n = len(result.lrs)
    assert 2 < n < 20 and len(result.losses) == n  # stopped early
    assert result.lrs == pytest.approx([1e-2 * (1e8) ** (i / 20) for i in range(n)])
    # it stopped at the first smoothed loss past 4x the lowest before it, and not sooner
    assert result.losses[-1] > 4 * min(result.losses[:-1])
    assert all(loss <= 4 * min(result.losses[:i]) for i, loss in enumerate(result.losses[:-1]) if i > 0)
    # weights and the frozen set (the finder froze the body for stage 0) are as before
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [p.requires_grad for p in model.parameters()] == trainable
    assert torch.equal(torch.get_rng_state(), generator_before)  # the run after it draws as without it
    with pytest.raises(ValueError, match="stage=5 but the schedule has 2 stage"):
        lr_find_on_batches(model, batches, stage_index=5, start_lr=1e-3, end_lr=1e3, num_steps=20,
                beta=0.98, stop_factor=4.0)


# A short real finder run: few steps to a low end_lr, so it does not diverge before the 8 points
# fastai's suggestions need (they skip the first tenth and the last five).
FINDER_STEPS, FINDER_END_LR = 12, 1.0


def test_lr_find_cli_prints_the_suggestions_and_writes_the_plot(image_root, tmp_path):
    import subprocess
    import sys

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tests.conftest import PROJECT_ROOT, TINY_OVERRIDES

    run = tmp_path / "lr_find"
    completed = subprocess.run(
        [sys.executable, "-m", "src.lr_find", *TINY_OVERRIDES, f"lr_finder.num_steps={FINDER_STEPS}",
         f"lr_finder.end_lr={FINDER_END_LR}", f"data.root={image_root}", f"hydra.run.dir={run}"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    printed = dict(re.findall(r"^(valley|minimum|steep|plot): (.+)$", completed.stdout, flags=re.MULTILINE))
    assert set(printed) == {"valley", "minimum", "steep", "plot"}
    lrs = [1e-7 * (FINDER_END_LR / 1e-7) ** (i / FINDER_STEPS) for i in range(FINDER_STEPS)]
    for name in ("valley", "steep"):  # a learning rate the finder tried
        assert any(float(printed[name]) == pytest.approx(lr, rel=5e-3) for lr in lrs), name
    assert any(float(printed["minimum"]) == pytest.approx(lr / 10, rel=5e-3) for lr in lrs)
    assert printed["plot"] == str(run / "lr_find.png") and (run / "lr_find.png").stat().st_size > 10_000
    assert "lr_find" in EventAccumulator(str(run / "tensorboard")).Reload().Tags()["images"]


def test_lr_find_true_trains_the_first_stage_at_the_suggestion_scanning_and_building_once(tiny_cfg, monkeypatch):
    """One run for both promises of lr_find=true: the first stage trains at the finder's suggestion (what
    config.yaml and the checkpoint record), and the folder is scanned and the backbone built once."""
    import src.data.labels.sources
    import src.models.components.backbones

    with open_dict(tiny_cfg):
        tiny_cfg.lr_finder.num_steps, tiny_cfg.lr_finder.end_lr = FINDER_STEPS, FINDER_END_LR
        del tiny_cfg.callbacks.interpretation, tiny_cfg.callbacks.show_batch  # figures: slow, not under test
        tiny_cfg.schedule.stages = [{"name": "head", "epochs": 1, "lr": [3e-3], "freeze_to": -1}]
        tiny_cfg.trainer.limit_train_batches, tiny_cfg.trainer.limit_val_batches = 2, 1
        tiny_cfg.trainer.precision = "32-true"
    suggestions = lr_find(copy.deepcopy(tiny_cfg), stage_index=0)
    assert set(suggestions) == {"valley", "minimum", "steep"}

    calls = {"scan": 0, "backbone": 0}

    def counted(name, function):
        def wrapper(*args, **kwargs):
            result = function(*args, **kwargs)
            # the config check's network on the meta device (no weights, no memory) is not a build
            calls[name] += name != "backbone" or next(result.parameters()).device.type != "meta"
            return result
        return wrapper

    monkeypatch.setattr(src.data.labels.sources.FolderLabels, "index", counted("scan", src.data.labels.sources.FolderLabels.index))
    monkeypatch.setattr(src.models.components.backbones, "build_backbone",
                        counted("backbone", src.models.components.backbones.build_backbone))
    tiny_cfg.lr_find = True
    train(tiny_cfg)  # seeded: the finder sees the same batches and suggests the same rate
    assert calls == {"scan": 1, "backbone": 1}
    run = Path(tiny_cfg.paths.output_dir)
    assert (run / "lr_find.png").is_file()
    first_lr = OmegaConf.load(run / "config.yaml").schedule.stages[0].lr
    assert list(first_lr) == pytest.approx([suggestions["valley"]])
    assert suggestions["valley"] != pytest.approx(3e-3)  # the configured rate was replaced
    # the suggestion is what trained, and what config.yaml and the checkpoint record
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert OmegaConf.create(checkpoint["hyper_parameters"]["run_config"]).schedule.stages[0].lr == first_lr
    assert list(first_lr) != [3e-3]
