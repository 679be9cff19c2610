"""Each logger of conf/logger records a real run, read back with the tracker's own client."""

from __future__ import annotations

import csv
import json
import logging
import struct
from pathlib import Path

import pytest
import yaml
from omegaconf import open_dict

from src.runs.experiment_trackers import flat_params
from src.runs.training import train
from tests.conftest import TINY_OVERRIDES, compose_config, require_extra
from tests.test_sweeps import SWEEP_OVERRIDES, run_sweep

# figures the callbacks log during a run (show_batch at the start, interpretation at the end)
FIGURE_TAGS = ("train/augmented_batch", "val/confusion_matrix", "val/top_losses")


def tiny_run_cfg(tmp_path: Path, image_root: Path, overrides: list[str]):
    cfg = compose_config([*TINY_OVERRIDES, f"data.root={image_root}", *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
    return cfg


def test_params_are_the_flat_resolved_config_without_paths(tiny_cfg):
    params = flat_params(tiny_cfg)
    assert params["optimizer.weight_decay"] == tiny_cfg.optimizer.weight_decay
    assert params["data.size"] == 32 and params["model.backbone.name"] == "resnet18"
    assert params["schedule.stages"].startswith("[{'name': 'head'")  # lists as text: trackers take scalars
    assert not any(key.startswith(("paths.", "logger.", "hydra.")) for key in params)


def test_many_records_tensorboard_csv_and_mlflow(tmp_path, image_root, monkeypatch):
    mlflow = require_extra("mlflow", "mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = tiny_run_cfg(tmp_path, image_root, ["logger=many", f"paths.log_dir={tmp_path}"])
    result = train(cfg)
    run_dir = Path(result["output_dir"])
    final_error = json.loads((run_dir / "metrics.json").read_text())["final"]["val/error_rate"]

    # CSV: every metric by step, the final and best ones in the last rows, the flat config
    with (run_dir / "csv" / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    columns = set(rows[0])
    assert {"train/loss_step", "val/error_rate", "final/val/error_rate", "best/val/error_rate"} <= columns
    assert {"lr-AdamW/group0", "lr-AdamW/group1_bn_bias"} <= columns  # per-group learning rates
    assert len([r for r in rows if r["val/error_rate"]]) == 2  # one per epoch
    assert float(next(r for r in rows if r["final/val/error_rate"])["final/val/error_rate"]) == pytest.approx(final_error)
    hparams = yaml.safe_load((run_dir / "csv" / "hparams.yaml").read_text())
    assert hparams["optimizer.weight_decay"] == cfg.optimizer.weight_decay

    # TensorBoard still has its figures
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))

    # MLflow, read back with its client: one run named after the run directory, in experiment `train`
    assert (tmp_path / "mlflow.db").is_file()  # the local store under outputs/ (here paths.log_dir)
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("train")
    assert Path(experiment.artifact_location.removeprefix("file://")) == tmp_path / "mlartifacts"
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "run" and run.info.status == "FINISHED"
    assert run.data.params["optimizer.weight_decay"] == str(cfg.optimizer.weight_decay)
    assert run.data.params["model.backbone.name"] == "resnet18"
    history = client.get_metric_history(run.info.run_id, "val/error_rate")
    assert len(history) == 2
    assert run.data.metrics["final/val/error_rate"] == pytest.approx(final_error)
    assert "best/val/error_rate" in run.data.metrics
    assert len(client.get_metric_history(run.info.run_id, "lr-AdamW/group0")) > 3  # per step
    for tag in FIGURE_TAGS:
        (png,) = client.list_artifacts(run.info.run_id, f"figures/{tag}")
        assert png.path.endswith(".png") and png.file_size > 1000


def wandb_records(path: Path):
    """The records of an offline run's ``run-*.wandb`` file, as W&B's own protobuf ``Record``s.

    wandb >= 0.19 reads these files in its Go core only; the framing is LevelDB's log format
    (32 KiB blocks; per chunk a CRC, a length and a FULL/FIRST/MIDDLE/LAST type), after a 7-byte
    ``:W&B`` header.
    """
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    position, chunks = 7, b""
    while position + 7 <= len(data):
        left = 32768 - position % 32768
        _crc, length, kind = struct.unpack("<IHB", data[position:position + 7])
        if left < 7 or (length == 0 and kind == 0):  # block padding
            position += left
            continue
        chunks += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # FULL, LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunks)
            chunks = b""
            yield record


def test_wandb_offline_without_login_never_prompts_and_says_so(tmp_path, image_root, monkeypatch, caplog):
    wandb = require_extra("wandb", "wandb")
    for name in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))  # no `wandb login` either
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    cfg = tiny_run_cfg(tmp_path, image_root, ["logger=wandb"])
    with caplog.at_level(logging.WARNING, logger="src.runs.experiment_trackers"):
        result = train(cfg)
    assert "logging offline" in caplog.text
    wandb.teardown()  # W&B's service writes the run file in its own process: wait until it is done
    final_error = json.loads((Path(result["output_dir"]) / "metrics.json").read_text())["final"]["val/error_rate"]

    (offline_run,) = (Path(result["output_dir"]) / "wandb").glob("offline-run-*")
    records = list(wandb_records(next(offline_run.glob("run-*.wandb"))))
    by_kind: dict[str, list] = {}
    for record in records:
        by_kind.setdefault(record.WhichOneof("record_type"), []).append(record)
    (run,) = by_kind["run"]
    assert run.run.display_name == "run" and run.run.project == "image-folder-classifier"
    config = {item.key: json.loads(item.value_json) for r in by_kind["config"] for item in r.config.update}
    assert config["optimizer.weight_decay"] == cfg.optimizer.weight_decay
    rows = [{"/".join(i.nested_key) or i.key: i.value_json for i in r.history.item} for r in by_kind["history"]]
    assert len([row for row in rows if "val/error_rate" in row]) == 2  # one per epoch
    assert len([row for row in rows if "lr-AdamW/group0" in row]) > 3  # per step
    (last,) = [row for row in rows if "final/val/error_rate" in row]
    assert float(last["final/val/error_rate"]) == pytest.approx(final_error) and "best/val/error_rate" in last
    for tag in FIGURE_TAGS:
        assert any(json.loads(row.get(f"{tag}/_type", "null")) == "images/separated" for row in rows), tag
    assert len(list((offline_run / "files" / "media" / "images").rglob("*.png"))) == len(FIGURE_TAGS)
    assert [r.exit.exit_code for r in by_kind["exit"]] == [0]  # finished, so the next run is its own


def test_a_sweep_is_one_mlflow_experiment_and_one_wandb_group_with_a_run_per_job(tmp_path, image_root, monkeypatch):
    mlflow = require_extra("mlflow", "mlflow")
    require_extra("wandb", "wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    # mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI: an earlier in-process run must not choose the store
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    sweep_dir = tmp_path / "sweep"
    result = run_sweep([*SWEEP_OVERRIDES, f"data.root={image_root}", f"hydra.sweep.dir={sweep_dir}",
                        "logger=[mlflow,wandb]", f"paths.log_dir={tmp_path}", "seed=1,2"], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("train-sweep")
    assert experiment is not None, [e.name for e in client.search_experiments()]
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["sweep/0", "sweep/1"]
    assert sorted(r.data.params["seed"] for r in runs) == ["1", "2"]
    assert all(r.info.status == "FINISHED" for r in runs)
    for job in ("0", "1"):  # W&B: one run per job (not the first job's run reused), grouped by sweep
        (run_file,) = (sweep_dir / job / "wandb").glob("offline-run-*/run-*.wandb")
        (run,) = [r.run for r in wandb_records(run_file) if r.WhichOneof("record_type") == "run"]
        assert (run.display_name, run.run_group) == (f"sweep/{job}", "train-sweep")
