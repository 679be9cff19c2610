"""Integration: the real config, real images on disk, real checkpoints, a few batches."""

import copy
import json
import re
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf, open_dict

from src.runs.config_checks import ConfigError
from src.runs.training import train
from tests.conftest import CONFIG_DIR, TINY_OVERRIDES, compose_config, copy_sample


def _leaves(node: dict, prefix: str = "") -> dict[str, object]:
    """The dotted keys and values of a YAML file's mapping, without its defaults list."""
    out = {}
    for key, value in node.items():
        if key == "defaults":
            continue
        if isinstance(value, dict):
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _yaml(path: Path) -> dict:
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)


def _schedule_file(experiment: dict) -> Path:
    """The schedule the experiment's defaults override to, else train.yaml's default (read from the files)."""
    for group in (*experiment.get("defaults", []), *_yaml(CONFIG_DIR / "train.yaml")["defaults"]):
        if isinstance(group, dict):
            for key, name in group.items():
                if key.removeprefix("override ").strip("/") == "schedule":
                    return CONFIG_DIR / "schedule" / f"{name}.yaml"
    raise AssertionError("no schedule in the defaults")


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml")))
def test_every_experiment_composes_and_instantiates(experiment, tmp_path):
    """Each value the experiment's file writes is the composed config's, and the objects built from it have
    the sizes and epochs its files say: the expectation is read from the YAML files, not from the composition."""
    cfg = compose_config([f"experiment={experiment}", "model.backbone.weights=null"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
    from hydra.utils import instantiate

    written = _yaml(CONFIG_DIR / "experiment" / f"{experiment}.yaml")
    composed = OmegaConf.to_container(cfg, resolve=False)
    leaves = _leaves(written)
    assert leaves, "the experiment sets nothing"
    for key, value in leaves.items():
        node = composed
        for part in key.split("."):
            node = node[part]
        assert node == value, key
    schedule = instantiate(cfg.schedule)
    datamodule = instantiate(cfg.data)
    data_defaults = _yaml(CONFIG_DIR / "data" / "image_folder.yaml")
    for attribute in ("size", "batch_size"):
        expected = leaves.get(f"data.{attribute}", data_defaults[attribute])
        assert getattr(datamodule, attribute) == expected, attribute
    stages = _yaml(_schedule_file(written))["stages"]
    assert schedule.total_epochs == sum(stage["epochs"] for stage in stages) >= 1


def test_resnet50_experiment_is_the_seed_recipe():
    cfg = compose_config(["experiment=resnet50"])
    assert cfg.model.backbone.name == "resnet50" and cfg.model.backbone.weights == "imagenet"
    assert (cfg.data.size, cfg.data.batch_size, cfg.data.valid_pct) == (300, 64, 0.2)
    assert (cfg.data.augment.max_zoom, cfg.data.augment.max_rotate) == (1.2, 10.0)
    stages = OmegaConf.to_container(cfg.schedule.stages)
    assert [(s["epochs"], s["lr"], s["freeze_to"]) for s in stages] == [(4, [3e-3], -1), (2, [1e-6, 1e-4], 0)]


def test_a_typo_in_a_key_fails():
    with pytest.raises(ConfigCompositionException, match=r"Could not override 'data.batchsize'"):
        compose_config(["data.batchsize=8"])


@pytest.fixture(scope="module")
def default_run(module_tmp_path) -> tuple[Path, dict]:
    """The tiny run as the tiny_cfg fixture writes it (3 classes x 12 images), trained once for the tests that
    read its run directory: its directory and train's metrics. One batch of throughput warm-up (of the
    3 an epoch) leaves batches to time, so perf/ scalars are logged."""
    root = copy_sample(module_tmp_path / "images")
    cfg = compose_config([*TINY_OVERRIDES, f"data.root={root}", "callbacks.throughput.warmup_steps=1"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(module_tmp_path / "run")
    return module_tmp_path / "run", train(cfg)


def test_short_training_run_writes_the_run_directory(default_run):
    run, metrics = default_run
    for name in ["config.yaml", "split.csv", "metrics.json", "checkpoints/best.ckpt", "checkpoints/last.ckpt"]:
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert 0.0 <= metrics["val/error_rate"] <= 1.0
    assert metrics["val/error_rate"] == pytest.approx(1 - metrics["val/accuracy"])
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["final"]["val/error_rate"] == pytest.approx(metrics["val/error_rate"])
    assert summary["best"]["val/error_rate"] <= summary["final"]["val/error_rate"] + 1e-9
    assert summary["epochs"] == 2
    # last.ckpt is the final epoch's, whether or not it was the best
    last = torch.load(run / "checkpoints/last.ckpt", map_location="cpu", weights_only=True)
    assert (last["epoch"], last["global_step"]) == (1, 6)

    checkpoint = torch.load(run / "checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    hparams = checkpoint["hyper_parameters"]
    assert hparams["classes"] == summary["classes"] and len(hparams["classes"]) == 3
    run_config = OmegaConf.create(hparams["run_config"])
    assert run_config.model.backbone.name == "resnet18"
    assert list(run_config.model.classes) == hparams["classes"]
    assert checkpoint["state_dict"]["net.head.8.weight"].shape == (3, 512)


def test_the_model_summary_counts_the_flops_of_one_image_at_the_data_size(tiny_cfg):
    from lightning.pytorch.utilities.model_summary import ModelSummary

    from src.runs.builder import build_run

    module = build_run(tiny_cfg).module
    assert tuple(module.example_input_array.shape) == (1, 3, 32, 32)
    summary = ModelSummary(module, max_depth=2)
    assert summary.total_flops > 0  # "Total FLOPs: 0" without an example input


def test_tensorboard_has_group_learning_rates_and_the_augmented_batch(default_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(default_run[0] / "tensorboard")).Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"val/error_rate", "val/loss", "val/accuracy", "train/loss_step", "val/error_rate_best"} <= scalars
    assert {f"lr-AdamW/group{i}" for i in range(3)} <= scalars
    assert "train/augmented_batch" in events.Tags()["images"]
    # every plain scalar tag the run-directory page names is one TensorBoard shows
    page = (Path(__file__).resolve().parents[1] / "docs" / "run-directory.md").read_text()
    scalars_paragraph = page[page.index("Scalars:"):page.index("HPARAMS")]
    named = {tag for tag in re.findall(r"`([\w/-]+)`", scalars_paragraph) if "/" in tag}
    assert {"train/loss_step", "train/loss_epoch"} <= named and named <= scalars, named - scalars
    head_lrs = [e.value for e in events.Scalars("lr-AdamW/group2")]
    body_lrs = [e.value for e in events.Scalars("lr-AdamW/group0")]
    assert head_lrs[0] == pytest.approx(3e-3 / 25, rel=1e-4)  # stage 1 starts at max_lr / div
    assert body_lrs[0] == pytest.approx(3e-4 / 25, rel=1e-4)  # slice(3e-3): the body gets a tenth


class StageProbe(L.Callback):
    """Records, at each epoch start (after StagedFineTuning), what the resumed run is doing."""

    def __init__(self):
        self.seen = []

    def on_train_epoch_start(self, trainer, pl_module):
        optimizer = trainer.optimizers[0]
        conv = pl_module.net.backbone[0].weight
        self.seen.append({
            "epoch": trainer.current_epoch,
            "step": trainer.global_step,
            "body_frozen": not conv.requires_grad,
            "bn_trains": pl_module.net.backbone[1].weight.requires_grad,
            "head_lr": optimizer.param_groups[4]["lr"],
            "head_state": bool(optimizer.state.get(pl_module.net.head[4].weight)),
            "scheduler_step": trainer.lr_scheduler_configs[0].scheduler.last_epoch,
        })


def test_resume_mid_stage_restores_stage_frozen_set_optimizer_and_schedule(tiny_cfg, tmp_path):
    with open_dict(tiny_cfg):
        tiny_cfg.schedule.stages = [
            {"name": "head", "epochs": 2, "lr": [3e-3], "freeze_to": -1},
            {"name": "all", "epochs": 1, "lr": [1e-6, 1e-4], "freeze_to": 0},
        ]
        # keep every epoch's checkpoint instead of only the last
        tiny_cfg.callbacks.last_checkpoint.update(
            {"dirpath": "${paths.output_dir}/epochs", "filename": "epoch{epoch}", "save_top_k": -1,
             "auto_insert_metric_name": False}
        )
    train(tiny_cfg)
    first_epoch = Path(tiny_cfg.paths.output_dir) / "epochs" / "epoch0.ckpt"
    assert first_epoch.is_file()

    probe = StageProbe()
    with open_dict(tiny_cfg):
        tiny_cfg.paths.output_dir = str(tmp_path / "resumed")
        tiny_cfg.ckpt_path = str(first_epoch)
        tiny_cfg.callbacks.probe = {"_target_": "tests.test_train.StageProbe"}
    import src.runs.builder as builder  # where every object of a run is instantiated

    original = builder.instantiate

    def instantiate_with_probe(config, *args, **kwargs):
        if OmegaConf.is_config(config) and config.get("_target_") == "tests.test_train.StageProbe":
            return probe
        return original(config, *args, **kwargs)

    builder.instantiate = instantiate_with_probe
    try:
        metrics = train(tiny_cfg)
    finally:
        builder.instantiate = original
    steps_per_epoch = 3
    resumed, last = probe.seen
    assert resumed["epoch"] == 1 and resumed["step"] == steps_per_epoch
    assert resumed["body_frozen"] and resumed["bn_trains"]  # stage 1 still: body frozen, BN training
    assert resumed["head_state"]  # Adam moments came back from the checkpoint
    assert resumed["scheduler_step"] == steps_per_epoch
    # the one-cycle position continues: not the start value of a fresh cycle
    assert resumed["head_lr"] != pytest.approx(3e-3 / 25)
    assert last["epoch"] == 2 and not last["body_frozen"]
    assert last["head_lr"] == pytest.approx(1e-4 / 25)  # stage 2's cycle starts fresh
    assert not last["head_state"]  # a new stage starts with fresh moments, as fastai's new optimizer
    assert 0.0 <= metrics["val/error_rate"] <= 1.0


def test_bad_inputs_fail_before_training_with_the_key_named(tiny_cfg, tmp_path):
    # check_train_config lists every problem (ConfigError), each under its key, before anything runs
    cases = [
        ("data.root", str(tmp_path / "missing"), "data.root", r"data.root='.*missing': expected an existing folder"),
        ("model.backbone.name", "resnet49", "model.backbone",
         "unknown model.backbone.name='resnet49'; choose one of resnet18, resnet34"),
        ("schedule.stages", [], "schedule.stages", r"schedule.stages=\[\]: expected at least one stage"),
        ("schedule.stages", [{"epochs": 1, "lr": [1e-4, 1e-6]}], "schedule.stages[0].lr",
         r"wrong order: write \[1e-06, 0.0001\]"),
        ("schedule.stages", [{"epochs": 1, "lr": 1e-3, "freeze_to": 3}], "schedule.stages[0].freeze_to",
         "freeze_to=3: expected a layer group of the model, which has 3"),
    ]
    for key, value, problem_key, text in cases:
        cfg = copy.deepcopy(tiny_cfg)
        with open_dict(cfg):
            OmegaConf.update(cfg, key, value)
        with pytest.raises(ConfigError, match=text) as raised:
            train(cfg)
        assert [p.key for p in raised.value.problems] == [problem_key]
    assert not Path(tiny_cfg.paths.output_dir).exists()  # nothing ran


def test_checkpoint_rebuilds_the_trained_network_without_the_data(default_run):
    from src.models.loading import load_classifier

    run = default_run[0]
    loaded = load_classifier(run / "checkpoints" / "last.ckpt")
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert loaded.classes == checkpoint["hyper_parameters"]["classes"]
    assert torch.equal(loaded.net.head[8].weight, checkpoint["state_dict"]["net.head.8.weight"])
    assert not loaded.net.training
    image = loaded.transform(torch.zeros(3, 50, 40, dtype=torch.uint8))
    assert image.shape == (3, 32, 32)


def test_stage_description_for_tensorboard_accepts_stages_without_freeze_to():
    from src.runs.training import _describe_stage

    assert _describe_stage(OmegaConf.create({"epochs": 2, "lr": 0.01})) == "2ep lr=0.01 freeze_to=0"
    assert _describe_stage(OmegaConf.create({"epochs": 1, "lr": [1e-6, 1e-4], "freeze_to": -1})) == (
        "1ep lr=[1e-06, 0.0001] freeze_to=-1"
    )


def test_make_train_and_debug_fast_compose_to_the_values_they_set(tmp_path):
    """`make train` is `python -m src.train experiment=demo`; debug=fast on top is the smoke run."""
    from hydra.utils import instantiate

    assert "$(BIN)/python -m src.train experiment=demo\n" in (CONFIG_DIR.parent / "Makefile").read_text()
    demo = compose_config(["experiment=demo"])
    # relative to where make runs, the project root: the committed sample
    assert Path(demo.data.root) == Path("data/fashion-mnist-sample") and (CONFIG_DIR.parent / demo.data.root).is_dir()
    assert (demo.model.backbone.name, demo.model.backbone.weights) == ("resnet18", None)  # nothing to download
    assert (demo.data.size, demo.data.batch_size, demo.data.num_workers) == (32, 64, "auto")
    augment = demo.data.augment
    assert (augment.max_rotate, augment.max_zoom, augment.max_warp, augment.max_lighting, augment.p_affine) == (
        5.0, 1.1, 0.0, 0.1, 0.5)
    assert [(s.name, s.epochs, s.lr, s.freeze_to) for s in demo.schedule.stages] == [
        ("all", 3, 1e-2, 0), ("fine-tune", 1, [1e-4, 1e-3], 0)]
    assert demo.schedule.pct_start == 0.3  # the rest of the demo's schedule is fastai's
    assert (demo.trainer.limit_train_batches, demo.trainer.limit_val_batches) == (None, None)

    fast = compose_config(["experiment=demo", "debug=fast"])
    assert [(s.name, s.epochs, s.lr, s.freeze_to) for s in fast.schedule.stages] == [
        ("head", 1, [3e-3], -1), ("all", 1, [1e-6, 1e-4], 0)]
    assert (fast.trainer.limit_train_batches, fast.trainer.limit_val_batches, fast.data.num_workers) == (2, 2, 0)
    assert (fast.data.size, fast.data.batch_size, fast.data.root) == (32, 64, demo.data.root)  # the demo's data kept
    with open_dict(fast):
        fast.paths.output_dir = str(tmp_path)
    assert instantiate(fast.schedule).total_epochs == 2
    assert instantiate(fast.data).size == 32
