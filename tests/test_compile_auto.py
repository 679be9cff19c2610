"""``model.compile: auto``: the rule, the records of what compiling cost, and the callback in real runs.

The runs here replace ``torch.compile`` by a wrapper that counts its calls (Inductor takes about a minute
per network on 2 cores; tests/test_performance.py's slow test compiles for real): what is tested is
when the callback compiles, that training then runs through the compiled network, what it records,
what checkpoints keep, and that a resumed run compiles where the uninterrupted one did.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import open_dict
from torch import nn

import src.models.classifier_module as classifier_module
from src.core.compile_records import (
    RECORDS_FILE, UNRECORDED_SPEEDUP, UNRECORDED_WARMUP_S, WARM_CACHE_FRACTION, CompileRecord, compile_cache_dir, compile_pays,
    find_record, network_shape_key, write_record)
from src.runs.training import train


def test_compile_pays_only_when_the_steps_left_save_more_than_the_warm_up():
    # ResNet18, 64 px, the fastai recipe's 5 epochs of 62 steps on a 2-core AVX2 CPU: 0.95 s an eager step.
    steps, eager_s = 5 * 62 - 4, 0.95
    # warm caches: 4.3 s of warm-up, 1.08x measured -> saves about 22 s
    assert compile_pays(steps, eager_s, warmup_s=4.3, speedup=1.08)
    # cold, nothing recorded: 120 s assumed, 1.1x -> saves about 26 s, less than the compile
    assert not compile_pays(steps, eager_s, UNRECORDED_WARMUP_S, UNRECORDED_SPEEDUP)
    # the break-even is where the saving equals the warm-up: 120 / (0.95 * (1 - 1/1.1)) = 1389.5 steps
    assert not compile_pays(1389, eager_s, 120.0, 1.1) and compile_pays(1390, eager_s, 120.0, 1.1)
    # a compiled step measured slower than the eager one never pays, however long the stage
    assert not compile_pays(10**9, eager_s, warmup_s=0.0, speedup=0.97)
    assert not compile_pays(0, eager_s, warmup_s=0.0, speedup=2.0)


def test_the_manual_states_the_assumptions_the_rule_uses():
    """docs/performance.md tells users when `auto` compiles without a record: its figures are the code's."""
    manual = " ".join((Path(__file__).resolve().parents[1] / "docs" / "performance.md").read_text().split())
    assumed = re.search(r"Without a record the warm-up is taken as (\d+) s and the speed-up as ([\d.]+)x, "
                        r"so a network is compiled cold only for a stage of at least \1 / ([\d.]+) = about ([\d,]+) s", manual)
    assert assumed, "the paragraph on model.compile: auto no longer states the assumed warm-up and speed-up"
    assert (float(assumed[1]), float(assumed[2])) == (UNRECORDED_WARMUP_S, UNRECORDED_SPEEDUP)
    assert float(assumed[3]) == pytest.approx(1 - 1 / UNRECORDED_SPEEDUP, abs=0.005)
    assert float(assumed[4].replace(",", "")) == pytest.approx(UNRECORDED_WARMUP_S / (1 - 1 / UNRECORDED_SPEEDUP), rel=0.05)
    assert f"with a {'tenth' if WARM_CACHE_FRACTION == 0.1 else WARM_CACHE_FRACTION} of the warm-up" in manual


def test_records_are_kept_per_network_shape_and_survive_a_damaged_file(tmp_path):
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    images = torch.zeros(8, 3, 32, 32)
    key = network_shape_key(net, images, torch.device("cpu"), "32-true torch.contiguous_format")
    assert find_record(tmp_path, key) is None
    write_record(tmp_path, key, CompileRecord(65.0, 0.95, 0.88), "Sequential")
    record = find_record(tmp_path, key)
    assert record == CompileRecord(65.0, 0.95, 0.88, compiles=1) and record.speedup == pytest.approx(0.95 / 0.88)
    # the first compile was cold: the next finds torch's caches filled, a tenth of the warm-up (65 s -> 4.3 s measured)
    assert record.expected_warmup_s == pytest.approx(6.5)
    write_record(tmp_path, key, CompileRecord(4.3, 0.95, 0.87), "Sequential")
    record = find_record(tmp_path, key)
    assert record.compiles == 2 and record.expected_warmup_s == pytest.approx(4.3)  # measured warm: as it is
    # what a compiled graph depends on changes the key: the frozen set, the image size, the precision
    net[0].weight.requires_grad_(False)
    assert network_shape_key(net, images, torch.device("cpu"), "32-true torch.contiguous_format") != key
    net[0].weight.requires_grad_(True)
    assert network_shape_key(net, torch.zeros(8, 3, 64, 64), torch.device("cpu"), "32-true torch.contiguous_format") != key
    assert network_shape_key(net, images, torch.device("cpu"), "bf16-mixed torch.contiguous_format") != key
    assert network_shape_key(net, images, torch.device("cpu"), "32-true torch.contiguous_format") == key
    (tmp_path / RECORDS_FILE).write_text("{not json")
    assert find_record(tmp_path, key) is None  # decided as without a record, not a crash


def test_the_cache_folder_is_torchs_variable_or_a_lasting_one(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compile_cache_dir() == tmp_path / "torchinductor"
    import os
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "torchinductor")  # torch's caches go there too
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert compile_cache_dir() == tmp_path / "mine"


@pytest.fixture
def counted_compile(monkeypatch, tmp_path):
    """``torch.compile`` as the module calls it, replaced by a wrapper that counts the training forwards through it;
    the compile cache folder in the test's own folder."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "compile-cache"))
    calls = {"compiles": 0, "forwards": 0}

    class Counted(nn.Module):
        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            calls["forwards"] += 1
            return self.net(images)

    def compile(net: nn.Module) -> nn.Module:
        calls["compiles"] += 1
        return Counted(net)

    monkeypatch.setattr(classifier_module.torch, "compile", compile)
    return calls


def _two_epoch_stages(cfg, timed_steps: int = 1) -> None:
    with open_dict(cfg):
        # 2 epochs of 3 batches a stage: the decision after step 2, then 4 more steps of the stage
        cfg.schedule.stages = [{"name": "head", "epochs": 2, "lr": [3e-3], "freeze_to": -1},
                               {"name": "all", "epochs": 2, "lr": [1e-6, 1e-4], "freeze_to": 0}]
        cfg.callbacks.compile_when_it_pays.timed_steps = timed_steps
        del cfg.callbacks.interpretation, cfg.callbacks.show_batch


def test_auto_stays_eager_when_nothing_recorded_says_compiling_pays(tiny_cfg, counted_compile, caplog):
    _two_epoch_stages(tiny_cfg)
    assert tiny_cfg.model.compile == "auto"  # the default
    with caplog.at_level(logging.INFO, logger="src.callbacks.compile_when_it_pays"):
        train(tiny_cfg)
    assert counted_compile == {"compiles": 0, "forwards": 0}
    decided = [r.getMessage() for r in caplog.records if "model.compile=auto" in r.getMessage()]
    assert len(decided) == 2 and all("assumed (no record" in m and "staying eager" in m for m in decided)
    state = torch.load(Path(tiny_cfg.paths.output_dir) / "checkpoints/last.ckpt", weights_only=True)
    assert state["callbacks"]["CompileWhenItPays"]["decisions"] == {
        "0": {"compile": False, "epoch": 0, "batch": 2}, "1": {"compile": False, "epoch": 2, "batch": 2}}
    assert not (Path(compile_cache_dir()) / RECORDS_FILE).exists()


def test_auto_compiles_where_a_record_says_it_pays_and_records_what_it_measured(tiny_cfg, counted_compile, monkeypatch):
    _two_epoch_stages(tiny_cfg)
    # this machine compiled these shapes before for free and 3x faster: any stage pays
    import src.callbacks.compile_when_it_pays as callback
    monkeypatch.setattr(callback, "find_record", lambda folder, key: CompileRecord(0.0, 3.0, 1.0))
    train(tiny_cfg)
    # one compile, reused by both stages (torch recompiles a new frozen set by itself); after each stage's
    # decision (step 2) its 4 remaining steps train through it, validation does not
    assert counted_compile == {"compiles": 1, "forwards": 8}
    run = Path(tiny_cfg.paths.output_dir)
    checkpoint = torch.load(run / "checkpoints/last.ckpt", weights_only=True)
    assert checkpoint["callbacks"]["CompileWhenItPays"]["decisions"]["1"] == {"compile": True, "epoch": 2, "batch": 2}
    # the weights keep the plain network's keys
    assert "net.backbone.0.weight" in checkpoint["state_dict"]
    assert not any("_orig_mod" in key or "Counted" in key or key.startswith("net.net.") for key in checkpoint["state_dict"])
    # each stage's measured warm-up and steps are recorded for its own shape (the frozen set differs)
    records = json.loads((compile_cache_dir() / RECORDS_FILE).read_text())
    assert len(records) == 2
    for entry in records.values():
        assert entry["network"] == "ImageClassifier" and entry["eager_step_s"] > 0 and entry["compiled_step_s"] > 0
        assert entry["warmup_s"] >= 0 and entry["compiles"] == 1


class _Module:
    """What the callback reads of a LightningModule and the calls it makes."""

    def __init__(self) -> None:
        self.hparams = {"compile": "auto"}
        self.schedule = SimpleNamespace(stage_index_at_epoch=lambda epoch: 0)  # one stage
        self.device = torch.device("cpu")
        self.compiled: list[bool] = []

    def use_compiled_network(self, compiled: bool) -> None:
        self.compiled.append(compiled)


class _Trainer:
    def __init__(self, epoch: int) -> None:
        self.current_epoch = epoch


def test_a_resumed_run_compiles_from_the_batch_the_uninterrupted_run_did():
    from src.callbacks.compile_when_it_pays import CompileWhenItPays

    uninterrupted = CompileWhenItPays()
    uninterrupted.decisions = {0: {"compile": True, "epoch": 0, "batch": 2}}
    resumed = CompileWhenItPays()
    resumed.load_state_dict(uninterrupted.state_dict())  # through the checkpoint
    module = _Module()
    # resumed at the start of epoch 1: compiled from its first batch
    resumed.on_train_batch_start(_Trainer(epoch=1), module, batch=None, batch_idx=0)
    assert module.compiled[-1] is True
    # resumed inside epoch 0 (an interrupted run's mid-epoch checkpoint): eager until batch 2, as it was
    resumed = CompileWhenItPays()
    resumed.load_state_dict(uninterrupted.state_dict())
    module = _Module()
    for batch_idx in range(4):
        resumed.on_train_batch_start(_Trainer(epoch=0), module, batch=None, batch_idx=batch_idx)
        assert module.compiled[-1] is (batch_idx >= 2)
    # a stage decided eager stays eager
    eager = CompileWhenItPays()
    eager.load_state_dict({"decisions": {"0": {"compile": False, "epoch": 0, "batch": 2}}})
    module = _Module()
    eager.on_train_batch_start(_Trainer(epoch=2), module, batch=None, batch_idx=0)
    assert module.compiled == [False]
