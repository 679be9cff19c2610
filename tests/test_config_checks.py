"""Config validation: every problem at once, each naming key, value, expectation and fix."""

from __future__ import annotations

import ast
import copy
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning import Trainer
from omegaconf import DictConfig, OmegaConf, open_dict

from src.runs.config_checks import PRECISIONS, check_train_config
from src.core.problems import ConfigError
from src.runs.training import train
from tests.conftest import SAMPLE, TINY_OVERRIDES, compose_config

BASE = compose_config([*TINY_OVERRIDES, f"data.root={SAMPLE}"])
RESNET_GROUPS = 3  # layer1-2, layer3-4, head


def _cfg(**changes) -> DictConfig:
    cfg = copy.deepcopy(BASE)
    with open_dict(cfg):
        for dotted, value in changes.items():
            *parents, leaf = dotted.split("__")
            node = cfg
            for part in parents:
                node = node[part]
            node[leaf] = value
    return cfg


def _problems(cfg: DictConfig) -> dict[str, str]:
    with pytest.raises(ConfigError) as raised:
        check_train_config(cfg)
    return {p.key: str(p) for p in raised.value.problems}


def test_the_shipped_configs_pass():
    check_train_config(BASE)
    check_train_config(compose_config(["experiment=resnet50", f"data.root={SAMPLE}"]))


def test_every_problem_is_listed_once_in_one_error(tmp_path):
    file_root = tmp_path / "photos.zip"
    file_root.write_text("not a folder")
    cfg = _cfg(data__root=str(file_root), data__valid_pct=1.5, data__batch_size=0, data__size=16,
               trainer__precision="fp8")
    with open_dict(cfg):
        cfg.schedule.stages = [{"name": "head", "epochs": 1, "lr": -1e-3, "freeze_to": -1},
                               {"name": "all", "epochs": 1, "lr": [1e-4, 0.0], "freeze_to": 5}]
    with pytest.raises(ConfigError) as raised:
        check_train_config(cfg)
    message = str(raised.value)
    keys = [p.key for p in raised.value.problems]
    assert keys == ["data.root", "data.valid_pct", "data.batch_size", "data.size", "trainer.precision",
                    "schedule.stages[0].lr", "schedule.stages[1].lr", "schedule.stages[1].freeze_to"]
    assert message.startswith("8 problem(s) in the config")
    assert len(message.splitlines()) == 9  # the header and one line per problem
    assert f"data.root={str(file_root)!r}: expected a folder with one subfolder per class, not a file" in message
    assert "data.valid_pct=1.5: expected a fraction strictly between 0 and 1" in message
    assert "trainer.precision='fp8'" in message and "bf16-mixed" in message
    assert "freeze_to=5: expected a layer group of the model, which has 3: -2 to 2" in message


@pytest.mark.parametrize("rescan", ["yes", 1, None])
def test_data_rescan_must_be_a_boolean(rescan):
    from src.data.files.scan_cache import ScanCache

    # "yes" or 1 would be truthy: a full scan of a million files nobody asked for
    assert _problems(_cfg(data__rescan=rescan)) == {
        "data.rescan": f"data.rescan={rescan!r}: expected true or false; data.rescan=true opens every file "
                       "again this run; false trusts the cache"}
    with pytest.raises(ConfigError, match="data.rescan="):
        ScanCache(Path("cache"), Path("."), 10**8, rescan=rescan)


def test_train_refuses_a_bad_config_before_reading_data_or_writing(tmp_path, started):
    cfg = _cfg(data__batch_size=0, paths__output_dir=str(tmp_path / "run"))
    with pytest.raises(ConfigError, match="data.batch_size=0"):
        train(cfg)
    assert started == []  # no image opened, no trainer built
    assert not (tmp_path / "run").exists()


def test_missing_root_is_named(tmp_path):
    problems = _problems(_cfg(data__root=str(tmp_path / "nowhere")))
    assert list(problems) == ["data.root"] and "an existing folder" in problems["data.root"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lr=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10)),
    valid_pct=st.floats(-2, 3, allow_nan=False),
    batch_size=st.integers(-5, 600),
    size=st.integers(-10, 600),
)
def test_property_each_bad_value_gives_exactly_its_problem(lr, valid_pct, batch_size, size):
    cfg = _cfg(data__valid_pct=valid_pct, data__batch_size=batch_size, data__size=size)
    with open_dict(cfg):
        cfg.schedule.stages = [{"name": "s", "epochs": 1, "lr": lr, "freeze_to": 0}]
    expected = set()
    if not (lr > 0 and lr != float("inf")):  # NaN fails every comparison
        expected.add("schedule.stages[0].lr")
    if not 0 < valid_pct < 1:
        expected.add("data.valid_pct")
    if batch_size < 1:
        expected.add("data.batch_size")
    if size < 32:
        expected.add("data.size")
    if not expected:
        check_train_config(cfg, num_layer_groups=RESNET_GROUPS)
        return
    with pytest.raises(ConfigError) as raised:
        check_train_config(cfg, num_layer_groups=RESNET_GROUPS)
    assert {p.key for p in raised.value.problems} == expected
    for problem in raised.value.problems:
        assert problem.expected and problem.fix and problem.key in str(problem)


@settings(max_examples=40, deadline=None)
@given(freeze_to=st.integers(-20, 20), groups=st.integers(1, 6))
def test_property_freeze_to_must_name_an_existing_group(freeze_to, groups):
    cfg = _cfg()
    with open_dict(cfg):
        cfg.schedule.stages = [{"name": "s", "epochs": 1, "lr": 1e-3, "freeze_to": freeze_to}]
    if -groups < freeze_to < groups:
        check_train_config(cfg, num_layer_groups=groups)
    else:
        with pytest.raises(ConfigError, match=rf"freeze_to={freeze_to}: expected a layer group"):
            check_train_config(cfg, num_layer_groups=groups)


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "16-mixed", "64-true", 32, "bf16"])
def test_lightning_precisions_pass(precision):
    check_train_config(_cfg(trainer__precision=precision), num_layer_groups=RESNET_GROUPS)


def _trainer_refusal(precision: Any) -> str | None:
    """Lightning's own error for ``Trainer(precision=precision)`` on the CPU, or None if it builds."""
    try:
        Trainer(precision=precision, accelerator="cpu", logger=False, enable_checkpointing=False,
                enable_progress_bar=False, enable_model_summary=False)
    except (ValueError, ModuleNotFoundError) as error:
        return str(error)
    return None


def test_our_precisions_are_the_ones_lightnings_trainer_accepts():
    refusal = _trainer_refusal("fp8")
    assert refusal is not None and "Precision 'fp8' is invalid" in refusal
    allowed = ast.literal_eval(refusal.split("Allowed precision values: ")[1])  # the values it lists in that refusal
    assert {str(value) for value in allowed} == set(PRECISIONS) - {"auto"}  # auto: src.core.hardware resolves it first
    for precision in set(PRECISIONS) - {"auto"}:
        refusal = _trainer_refusal(precision)  # builds, or needs a package (transformer-engine): never "invalid"
        assert refusal is None or "is invalid" not in refusal, (precision, refusal)


def test_the_layer_groups_come_from_the_configured_backbone():
    from src.runs.config_checks import model_layer_groups

    assert model_layer_groups(BASE.model) == RESNET_GROUPS


def test_unwritable_output_dir_is_refused_at_start_up(tmp_path):
    from src.runs.run_files import check_writable

    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(OSError, match="is not writable.*choose a folder you can write to"):
        check_writable(blocked / "run")
    check_writable(tmp_path / "run")
    assert list((tmp_path / "run").iterdir()) == []  # the probe is gone


def test_the_room_checkpoints_need_is_computed_from_the_model(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    import torchvision

    from src.runs import run_files

    net = torchvision.models.resnet18(num_classes=10)
    weights = sum(p.numel() for p in net.parameters()) * 4
    buffers = sum(b.numel() * b.element_size() for b in net.buffers())
    assert run_files.checkpoint_bytes(net) == 3 * weights + buffers  # fp32 weights and AdamW's two moments
    needed = run_files.CHECKPOINT_FILES_AT_ONCE * run_files.checkpoint_bytes(net)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(2 * needed, needed + 1, needed - 1))
    with pytest.raises(OSError, match=rf"MiB free; this model's checkpoints need {needed / 2**20:.0f} MiB \(3 files"):
        run_files.check_room_for_checkpoints(tmp_path, net)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(2 * needed, needed, needed))
    run_files.check_room_for_checkpoints(tmp_path, net)  # exactly enough


def test_a_root_given_as_relative_path_is_resolved_from_the_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("images").mkdir()
    check_train_config(_cfg(data__root="images"), num_layer_groups=RESNET_GROUPS)


def test_evaluate_and_predict_check_their_config_first(tmp_path):
    from src.evaluate import evaluate
    from src.predict import predict

    cfg = compose_config([f"ckpt_path={tmp_path}/none.ckpt", "data.batch_size=0", f"data.root={tmp_path}/x.png"],
                         config_name="evaluate")
    (tmp_path / "x.png").write_bytes(b"")
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "eval")
    with pytest.raises(ConfigError, match=r"2 problem\(s\)(.|\n)*data.batch_size=0(.|\n)*data.root="):
        evaluate(cfg)
    cfg = compose_config([f"ckpt_path={tmp_path}/none.ckpt", f"input={tmp_path}", "batch_size=-1"],
                         config_name="predict")
    with pytest.raises(ConfigError, match="batch_size=-1: expected a whole number >= 1"):
        predict(cfg)


def test_the_components_raise_the_problems_the_check_lists(tmp_path):
    """One rule each: building the DataModule or the schedule raises what the early check reported."""
    cfg = _cfg(data__valid_pct=0.0, data__batch_size=0, data__size=16, data__on_bad_file="ignore",
               paths__output_dir=str(tmp_path))
    with open_dict(cfg):
        cfg.schedule.stages = [{"name": "s", "epochs": 0, "lr": [1e-3, 1e-4]}]
    listed = _problems(cfg)
    assert list(listed) == ["data.valid_pct", "data.batch_size", "data.size", "data.on_bad_file",
                            "schedule.stages[0].lr", "schedule.stages[0].epochs"]
    for component, prefix in [(cfg.data, "data."), (cfg.schedule, "schedule.")]:
        with pytest.raises(InstantiationException) as raised:  # Hydra wraps what the constructor raised
            instantiate(component)
        assert isinstance(raised.value.__cause__, ConfigError)
        assert {p.key: str(p) for p in raised.value.__cause__.problems} == {
            key: text for key, text in listed.items() if key.startswith(prefix)}


def test_an_experiment_picks_a_schedule_that_schedule_fine_tune_replaces():
    # An experiment writing schedule.stages itself would silently win over schedule=fine_tune.
    demo = compose_config(["experiment=demo"])
    assert [stage["name"] for stage in demo.schedule.stages] == ["all", "fine-tune"]
    tuned = compose_config(["experiment=demo", "schedule=fine_tune", "schedule.epochs=3"])
    stages = OmegaConf.to_container(tuned.schedule.stages, resolve=True)
    assert [(stage["name"], stage["epochs"], stage["freeze_to"]) for stage in stages] == [
        ("frozen", 1, -1), ("unfrozen", 3, 0)]


def test_problems_by_name_reads_each_setting_by_its_parameter_name():
    from src.core.problems import Problem, problems_by_name

    def problems(size, batch_size, sampler="random"):
        return [Problem("data", (size, batch_size, sampler), "", "")]

    # The settings' order and extra keys do not matter; given values win; a default may be left out.
    assert problems_by_name(problems, {"batch_size": 8, "other": 1, "size": 64}) == [Problem("data", (64, 8, "random"), "", "")]
    assert problems_by_name(problems, {"batch_size": 8, "size": 64}, size=32, sampler="balanced")[0].value == \
        (32, 8, "balanced")
    with pytest.raises(TypeError, match="takes 'size', which neither the settings nor the caller give"):
        problems_by_name(problems, {"batch_size": 8})


def test_each_stage_is_checked_by_the_config_check_and_by_the_schedule_not_again_for_its_freeze_target(monkeypatch):
    from src.optim.stages import Stage

    calls = []
    real = Stage.problems
    monkeypatch.setattr(Stage, "problems", lambda self, *args, **kwargs: (calls.append(self.name), real(self, *args, **kwargs))[1])
    cfg = compose_config(TINY_OVERRIDES)
    check_train_config(cfg, num_layer_groups=3)
    schedule = instantiate(cfg.schedule)
    schedule.check_freeze_targets(3)
    assert sorted(calls) == sorted([s.name for s in schedule.stages] * 2)
    with pytest.raises(ConfigError, match=r"schedule.stages\[0\].freeze_to=-5: expected a layer group of the model, "
                                          "which has 3: -2 to 2"):
        instantiate(cfg.schedule, stages=[{"name": "head", "epochs": 1, "lr": [1e-3], "freeze_to": -5}]
                    ).check_freeze_targets(3)


def test_shards_are_decoded_where_they_are_read_not_on_the_device(tmp_path):
    cfg = compose_config([*TINY_OVERRIDES, "data.format=litdata", f"data.root={tmp_path}", "data.decode_on=device"])
    with pytest.raises(ConfigError, match=r"data.decode_on='device': expected workers with data.format=litdata"):
        check_train_config(cfg, num_layer_groups=3)


def test_a_data_key_left_out_takes_its_default_in_the_check():
    # e.g. a data config written before data.decode_on existed: the check uses the DataModule's default
    cfg = compose_config(TINY_OVERRIDES)
    with open_dict(cfg):
        del cfg.data["decode_on"]
    check_train_config(cfg, num_layer_groups=3)
