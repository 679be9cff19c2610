"""Progressive resizing: stages with their own image size and batch size, in a run and after a resume."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import open_dict

from src.core.problems import ConfigError
from src.optim.one_cycle import one_cycle_value
from src.runs.training import train
from tests.conftest import TINY_OVERRIDES, compose_config, copy_sample
from tests.stage_recorder import read_records

# 32 px in batches of 4 for the first stage, then data.size (64 px) in batches of 6.
STAGES = ("schedule.stages=[{name:small,epochs:1,lr:1e-3,freeze_to:0,size:32,batch_size:4},"
          "{name:large,epochs:1,lr:1e-3,freeze_to:0,batch_size:6}]")


def resizing_cfg(root: Path, output_dir: Path, records: Path, overrides: list[str] = ()):
    cfg = compose_config([*TINY_OVERRIDES, f"data.root={root}", "data.size=64", STAGES,
                          # the real loaders: worker processes, which must get each stage's transforms
                          "data.num_workers=2", "trainer.limit_train_batches=null",
                          "+callbacks.recorder._target_=tests.stage_recorder.StageRecorder",
                          f"+callbacks.recorder.path={records}", *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


def shapes(records: Path, kind: str, epoch: int) -> set[tuple[int, ...]]:
    return {tuple(r["shape"]) for r in read_records(records) if r["kind"] == kind and r["epoch"] == epoch}


def test_batches_change_size_at_the_stage_boundary(tmp_path: Path):
    root = copy_sample(tmp_path / "images", classes=3, per_class=10)  # 24 training, 6 validation images
    records = tmp_path / "steps.jsonl"
    train(resizing_cfg(root, tmp_path / "run", records))
    assert shapes(records, "train", 0) == {(4, 3, 32, 32)}
    assert shapes(records, "valid", 0) <= {(4, 3, 32, 32), (2, 3, 32, 32)}  # validation at the stage's size
    assert shapes(records, "train", 1) == {(6, 3, 64, 64)}
    assert shapes(records, "valid", 1) == {(6, 3, 64, 64)}
    # each stage's one-cycle spans its own steps: 6 batches of 4, then 4 batches of 6
    steps = [r for r in read_records(records) if r["kind"] == "train"]
    assert [r["epoch"] for r in steps] == [0] * 6 + [1] * 4
    head = steps[0]["layer_groups"].index(2)
    expected = [one_cycle_value(i, 6, 1e-3 / 25, 1e-3, 1e-3 / 25 / 1e4, 0.3) for i in range(6)]
    expected += [one_cycle_value(i, 4, 1e-3 / 25, 1e-3, 1e-3 / 25 / 1e4, 0.3) for i in range(4)]
    assert [r["lrs"][head] for r in steps] == pytest.approx(expected, rel=1e-9)


def test_a_resumed_run_trains_its_stage_at_the_stages_size(tmp_path: Path):
    root = copy_sample(tmp_path / "images", classes=3, per_class=10)
    run = tmp_path / "run"
    first, resumed = tmp_path / "first.jsonl", tmp_path / "resumed.jsonl"
    train(resizing_cfg(root, run, first, ["+callbacks.recorder.stop_after_epoch=0"]))
    assert {r["epoch"] for r in read_records(first)} == {0}  # stopped after the first stage
    train(resizing_cfg(root, run, resumed, ["ckpt_path=last"]))
    assert {r["epoch"] for r in read_records(resumed) if r["kind"] == "train"} == {1}
    assert shapes(resumed, "train", 1) == {(6, 3, 64, 64)}
    assert shapes(resumed, "valid", 1) == {(6, 3, 64, 64)}


def test_the_last_stage_must_train_at_data_size(tmp_path: Path):
    cfg = compose_config([*TINY_OVERRIDES, f"data.root={copy_sample(tmp_path / 'images')}", "data.size=32",
                          "schedule.stages=[{epochs:1,lr:1e-3,size:32},{epochs:1,lr:1e-3,size:64}]"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
    with pytest.raises(ConfigError, match=r"schedule.stages\[1\].size=64: expected null or data.size \(32\).*"
                                          r"set data.size=64"):
        train(cfg)
