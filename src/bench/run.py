"""``run_bench(cfg)``: Data, Floor and Train speeds of one training config, in one process.

The config is a training config (``conf/bench.yaml`` includes ``conf/train.yaml``) plus ``bench``
settings, so the numbers are for exactly what ``python -m src.train`` would run with the same
overrides. See docs/performance.md for what each line means and the numbers measured.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from src.bench.environment import machine, versions
from src.bench.measure import Speed, augment_speed, data_speed, floor_speed
from src.data.loading.dataset import ImageDataset
from src.bench.report import format_report
from src.runs.builder import build_datamodule, build_module
from src.core.hardware import device_type, resolve_channels_last, resolve_precision
from src.runs.run_files import write_json
from src.runs.training import train

log = logging.getLogger(__name__)

ACCURACY_TOLERANCE_PP = 1.0  # percentage points of validation error rate


def parse_variant(variant: str) -> dict[str, Any]:
    """``"bf16-mixed+channels_last+compile"`` -> precision and flags for :func:`floor_speed`."""
    precision, *flags = str(variant).split("+")
    unknown = sorted(set(flags) - {"channels_last", "compile"})
    if unknown:
        raise ValueError(f"bench.variants entry {variant!r} has unknown flag(s) {unknown}; expected "
                         "PRECISION[+channels_last][+compile], e.g. bf16-mixed+channels_last")
    return {"precision": precision, "channels_last": "channels_last" in flags, "compile": "compile" in flags}


def variant_name(precision: str, channels_last: bool, compile: bool) -> str:
    return "+".join([str(precision), *(["channels_last"] if channels_last else []), *(["compile"] if compile else [])])


def _train_config(cfg: DictConfig, output_dir: Path, train_batches: int, val_batches: int,
                  precision: str | None = None) -> DictConfig:
    """The run's config, shortened to ``train_batches`` of the first stage's first epoch."""
    train_cfg = copy.deepcopy(cfg)
    with open_dict(train_cfg):
        del train_cfg["bench"]
        first = train_cfg.schedule.stages[0]
        first.epochs = 1
        train_cfg.schedule.stages = [first]
        train_cfg.trainer.limit_train_batches = train_batches
        train_cfg.trainer.limit_val_batches = val_batches
        train_cfg.paths.output_dir = str(output_dir)
        if "throughput" in train_cfg.get("callbacks", {}):
            train_cfg.callbacks.throughput.warmup_steps = cfg.bench.warmup_steps
        # drawn after training over the whole validation set: minutes, and never part of the timing
        train_cfg.get("callbacks", {}).pop("interpretation", None)
        if precision is not None:
            train_cfg.trainer.precision = precision
    return train_cfg


def _discard_checkpoints(cfg: DictConfig, run_dir: Path) -> None:
    """Remove a measured run's checkpoints unless ``bench.keep_checkpoints``."""
    checkpoints = run_dir / "checkpoints"
    if not cfg.bench.keep_checkpoints and checkpoints.is_dir():
        shutil.rmtree(checkpoints)


def _measured(cfg: DictConfig, run_cfg: DictConfig) -> dict[str, Any]:
    """``train(run_cfg)``'s metrics, its checkpoints discarded."""
    metrics = train(run_cfg)
    _discard_checkpoints(cfg, Path(run_cfg.paths.output_dir))
    return metrics


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator and denominator else None


def run_bench(cfg: DictConfig) -> dict[str, Any]:
    """Measure, print the table, write ``bench.output`` (JSON) and return what was written."""
    bench = cfg.bench
    output_dir = Path(cfg.paths.output_dir)
    accelerator = cfg.trainer.accelerator
    device = device_type(accelerator)
    precision = resolve_precision(cfg.trainer.precision, accelerator)
    channels_last = resolve_channels_last(cfg.model.channels_last, precision)
    compile_net = cfg.model.compile is True  # the Floor of `auto` is the eager loop its stages start with
    batch_size, size = cfg.data.batch_size, cfg.data.size

    datamodule = build_datamodule(cfg.data)
    datamodule.setup("fit")
    settings = {
        "case": bench.case, "backbone": cfg.model.backbone.name, "weights": cfg.model.backbone.weights,
        "size": size, "batch_size": batch_size, "precision": precision, "channels_last": channels_last,
        "compile": compile_net, "num_workers": datamodule.num_workers, "device": device,
        "data_root": str(datamodule.root), "training_images": len(datamodule.index.train), "classes": datamodule.num_classes,
        "warmup_steps": bench.warmup_steps, "steps": bench.steps,
    }
    log.info("bench: data pipeline, %d batches", bench.data_batches)
    data = data_speed(datamodule.datasets["train"], batch_size, warmup=1, batches=bench.data_batches, seed=cfg.seed,
                      collate_fn=datamodule.placed.collate_fn)

    torch_device = torch.device(device)

    def measure_floor(when: str) -> Speed:
        log.info("bench: floor %s, %s", when, variant_name(precision, channels_last, compile_net))
        return floor_speed(build_module(cfg, **datamodule.model_fields()), batch_size, size, precision,
                           torch_device, channels_last=channels_last, compile=compile_net,
                           warmup=bench.warmup_steps, steps=bench.steps)

    # Before and after the training run, which is compared with their mean: a machine whose
    # speed drifts (other jobs, clocks) shows it as two different floors, not as a wrong ratio.
    floor_before = measure_floor("before the training run")
    log.info("bench: src.train fit, %d + %d batches", bench.warmup_steps, bench.steps)
    trained = _measured(cfg, _train_config(cfg, output_dir / "train", bench.warmup_steps + bench.steps,
                                           bench.val_batches))
    floor_after = measure_floor("after the training run")
    floor_mean = (floor_before.images_per_s + floor_after.images_per_s) / 2
    train_speed = trained.get("perf/train_images_per_s")
    result: dict[str, Any] = {
        "machine": machine(),
        "versions": versions(),
        "settings": settings,
        "data": data.as_dict(),  # one worker's
        "floor": {"images_per_s": floor_mean, "before": floor_before.as_dict(), "after": floor_after.as_dict()},
        "train": {
            "images_per_s": train_speed,
            "epoch_s": trained.get("perf/train_epoch_s"),
            "val_s": trained.get("perf/val_s"),
            "batches": bench.warmup_steps + bench.steps,
            "run_dir": trained["output_dir"],
        },
    }
    ratios = {
        "train_over_floor": _ratio(train_speed, floor_mean),
        "data_over_train": _ratio(data.images_per_s, train_speed),
    }
    result["ratios"] = ratios
    expect = cfg.bench.expect  # what a setup that keeps the accelerator busy reads (conf/bench.yaml)
    result["targets"] = {
        "train_over_floor": {"target": expect.train_over_floor,
                             "met": ratios["train_over_floor"] is not None
                             and ratios["train_over_floor"] >= expect.train_over_floor},
        "data_over_train": {"target": expect.data_over_train,
                            "met": ratios["data_over_train"] is not None
                            and ratios["data_over_train"] >= expect.data_over_train},
    }
    result["variants"] = _floor_variants(cfg, datamodule.model_fields(), torch_device, floor_mean,
                                         variant_name(precision, channels_last, compile_net))
    result["accuracy"] = _accuracy_check(cfg, output_dir, precision)
    result["data_paths"] = _data_paths(cfg, datamodule, torch_device)
    result["whole_runs"] = {path: _whole_run(cfg, output_dir, path, measure_floor)
                            for path in cfg.bench.whole_run.paths or []}
    write_json(Path(bench.output), result)
    print(format_report(result))
    print(f"written: {bench.output}")
    return result


def _floor_variants(
    cfg: DictConfig, data_fields: dict, device: torch.device, default_speed: float, default_name: str
) -> list[dict]:
    variants = []
    for entry in cfg.bench.variants or []:
        options = parse_variant(entry)
        name = variant_name(**options)
        log.info("bench: floor variant %s", name)
        speed = floor_speed(build_module(cfg, **data_fields), cfg.data.batch_size, cfg.data.size, device=device,
                            warmup=1, steps=cfg.bench.variant_steps, **options)
        variants.append({"name": name, "default": name == default_name, **speed.as_dict(),
                         "vs_default": speed.images_per_s / default_speed})
    return variants


def _accuracy_check(cfg: DictConfig, output_dir: Path, precision: str) -> dict[str, Any]:
    """Validation error rate after the same short schedule in fp32 and in ``compare``."""
    settings = cfg.bench.accuracy
    enabled = settings.enabled
    compare = precision if enabled == "auto" else settings.compare
    if enabled == "auto" and str(precision) in ("32-true", "32"):
        return {"skipped": f"the default precision here is {precision}, the reference itself; "
                           "bench.accuracy.enabled=true compares bench.accuracy.compare with it"}
    if enabled is False:
        return {"skipped": "bench.accuracy.enabled=false"}
    errors = {}
    for run_precision in ("32-true", compare):
        log.info("bench: accuracy check, %s", run_precision)
        metrics = _measured(cfg, _train_config(cfg, output_dir / f"accuracy-{run_precision}", settings.train_batches,
                                               settings.val_batches, precision=run_precision))
        errors[run_precision] = metrics["val/error_rate"]
    return {"train_batches": settings.train_batches, "val_batches": settings.val_batches,
            **compare_error_rates(errors, compare)}


def compare_error_rates(error_rates: dict[str, float], compared: str) -> dict[str, Any]:
    """The accuracy check's verdict: ``compared``'s validation error rate minus fp32's, in percentage
    points, and whether it is within :data:`ACCURACY_TOLERANCE_PP` either way."""
    difference_pp = 100 * (error_rates[compared] - error_rates["32-true"])
    # Rounded: in floats 100 * (0.26 - 0.25) is 1.0000000000000009, which would fail a 1-point tolerance.
    within = round(abs(difference_pp), 9) <= ACCURACY_TOLERANCE_PP
    return {
        "error_rate": error_rates, "compared": compared, "difference_pp": difference_pp,
        "tolerance_pp": ACCURACY_TOLERANCE_PP, "within_tolerance": within,
    }


def _datamodule_for(cfg: DictConfig, augment_on: str):
    augment = {**OmegaConf.to_container(cfg.data.augment, resolve=True), "on": augment_on}
    return build_datamodule(cfg.data, augment=augment, split_csv=None, bad_files_csv=None)


def _data_paths(cfg: DictConfig, datamodule, device: torch.device) -> dict[str, Any]:
    """Per ``data.augment.on`` path: one worker's images/s and CPU milliseconds per image over the
    same training images, and for ``device`` the batch augmentation's speed on the training device."""
    found: dict[str, Any] = {}
    for path in cfg.bench.data_paths or []:
        placed = _datamodule_for(cfg, path)
        dataset = ImageDataset(datamodule.index.train, placed.train_transform, decode_size=cfg.data.size)
        log.info("bench: data pipeline, augment.on=%s, %d batches", path, cfg.bench.data_batches)
        speed = data_speed(dataset, cfg.data.batch_size, warmup=1, batches=cfg.bench.data_batches, seed=cfg.seed)
        entry = {**speed.as_dict(), "cpu_ms_per_image": 1000 * speed.cpu_s / speed.images}
        if path == "device":
            augment = augment_speed(lambda images: placed.model_input(images, train=True), dataset,
                                    cfg.data.batch_size, device, seed=cfg.seed)
            entry["augment"] = {**augment.as_dict(), "device": str(device),
                                "ms_per_image": 1000 * augment.seconds / augment.images}
        found[path] = entry
    if {"workers", "device"} <= set(found):
        ratio = found["device"]["cpu_ms_per_image"] / found["workers"]["cpu_ms_per_image"]
        most = cfg.bench.expect.device_over_workers_cpu
        found["device_over_workers_cpu"] = {"ratio": ratio, "target": most, "met": ratio <= most}
    return found


def _whole_run_config(cfg: DictConfig, run_dir: Path, augment_on: str) -> DictConfig:
    """The run's config as ``src.train`` runs it, with ``data.augment.on`` and the timeline recorder."""
    settings = cfg.bench.whole_run
    run_cfg = copy.deepcopy(cfg)
    with open_dict(run_cfg):
        del run_cfg["bench"]
        if settings.epochs is not None:
            first = run_cfg.schedule.stages[0]
            first.epochs = settings.epochs
            run_cfg.schedule.stages = [first]
        run_cfg.data.augment["on"] = augment_on
        for key in ("limit_train_batches", "limit_val_batches"):
            if settings.get(key) is not None:
                run_cfg.trainer[key] = settings[key]
        run_cfg.paths.output_dir = str(run_dir)
        run_cfg.callbacks = run_cfg.get("callbacks") or {}
        run_cfg.callbacks.timeline = {"_target_": "src.callbacks.run_timeline.RunTimeline",
                                      "path": str(run_dir / "timeline.json")}
    return run_cfg


def _whole_run(cfg: DictConfig, output_dir: Path, augment_on: str,
               measure_floor: Callable[[str], Speed]) -> dict[str, Any]:
    """A whole ``src.train`` run (every epoch, validation, logging, progress bar, checkpoints, the
    end-of-run figures): where its wall clock went, and Train / Floor over whole epochs.

    The Floor is measured again just before and just after the run and the run is compared with
    their mean: a whole run lasts minutes, and on the 2-core build machine the speed drifted by
    17% within one (epochs of 43 s, then 52 s, same code), so a Floor from minutes earlier would
    turn the machine's drift into a wrong ratio."""
    run_dir = output_dir / f"whole-run-{augment_on}"
    run_cfg = _whole_run_config(cfg, run_dir, augment_on)
    floor_before = measure_floor(f"before the whole run augment.on={augment_on}")
    log.info("bench: whole src.train run, augment.on=%s", augment_on)
    start = time.perf_counter()
    metrics = train(run_cfg)
    end = time.perf_counter()
    floor_after = measure_floor(f"after the whole run augment.on={augment_on}")
    _discard_checkpoints(cfg, run_dir)
    timeline = json.loads((run_dir / "timeline.json").read_text())
    floor_mean = (floor_before.images_per_s + floor_after.images_per_s) / 2
    return whole_run_breakdown(timeline, start, end, floor_mean) | {
        "floor": {"images_per_s": floor_mean, "before": floor_before.images_per_s, "after": floor_after.images_per_s},
        "error_rate": metrics.get("val/error_rate"), "run_dir": str(run_dir)}


def whole_run_breakdown(timeline: dict[str, Any], start: float, end: float, floor_speed_mean: float) -> dict[str, Any]:
    """The phases of a run from its :class:`~src.callbacks.run_timeline.RunTimeline` record, ``start``
    and ``end`` being the bench's clock around ``train(cfg)``."""
    # The first epoch from its first step on: what comes before (workers starting, the sanity check)
    # is the time to the first step. The phases and `other` add up to the wall clock.
    epochs = [list(pair) for pair in timeline["train_epochs"]]
    if epochs:
        epochs[0][0] = max(epochs[0][0], timeline["first_step"])
    train_s = sum(stop - begin for begin, stop in epochs)
    validations = [stop - begin for begin, stop, sanity in timeline["validations"] if not sanity]
    sanity_s = sum(stop - begin for begin, stop, sanity in timeline["validations"] if sanity)
    last_epoch_end = max([stop for _, stop in timeline["train_epochs"]]
                         + [stop for _, stop, _ in timeline["validations"]])
    images_per_s = timeline["train_images"] / train_s if train_s else None
    epoch_images_per_s = [images / (stop - begin) for (begin, stop), images in zip(epochs, timeline["epoch_images"])]
    loaded = timeline["train_images"] + timeline["val_images"]
    checkpoints = timeline.get("checkpoints", [])
    last_epoch_end = max([last_epoch_end] + [stop for _, stop in checkpoints])
    phases = {
        "to_first_step_s": timeline["first_step"] - start,
        "train_s": train_s,
        "val_s": sum(validations),
        "checkpoints_s": sum(stop - begin for begin, stop in checkpoints),
        "end_s": end - last_epoch_end,
    }
    return {
        **phases,
        "other_s": (end - start) - sum(phases.values()),
        "sanity_check_s": sanity_s,
        "epochs": len(timeline["train_epochs"]),
        "wall_s": end - start,
        "train_images": timeline["train_images"],
        "images_per_s": images_per_s,
        "train_over_floor": _ratio(images_per_s, floor_speed_mean),
        # each epoch's own ratio: a drifting machine shows as unequal epochs, a slow first epoch as itself
        "epoch_train_over_floor": [_ratio(speed, floor_speed_mean) for speed in epoch_images_per_s],
        "worker_cpu_s": timeline["worker_cpu_s"],
        "worker_cpu_ms_per_image": 1000 * timeline["worker_cpu_s"] / loaded if loaded else None,
    }
