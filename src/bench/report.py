"""The benchmark's table, for people (the JSON next to it is for scripts)."""

from __future__ import annotations

from typing import Any


def _number(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _verdict(target: dict) -> str:
    return "met" if target["met"] else "MISSED"


def format_report(result: dict[str, Any]) -> str:
    s, m, v = result["settings"], result["machine"], result["versions"]
    ratios, targets, train = result["ratios"], result["targets"], result["train"]
    memory = "channels_last" if s["channels_last"] else "contiguous"
    where = m["gpu"] or f"{m['cpu']} ({m['cores']} cores, {m['torch_threads']} torch threads)"
    lines = [
        f"bench {s['case']}: {s['backbone']} ({s['weights'] or 'random'} weights), {s['size']} px, batch "
        f"{s['batch_size']}, {s['precision']}, {memory}, {'compiled' if s['compile'] else 'eager'}, "
        f"{s['num_workers']} loader worker(s), {s['training_images']:,} training images",
        f"on {where}; torch {v['torch']}, torchvision {v['torchvision']}, lightning {v['lightning']}, "
        f"pillow {v['pillow']}",
        "",
        f"{'':34}{'images/s':>10}",
        f"{'Floor: bare PyTorch loop':34}{_number(result['floor']['images_per_s']):>10}"
        f"   mean of {_number(result['floor']['before']['images_per_s'])} before and "
        f"{_number(result['floor']['after']['images_per_s'])} after Train",
        f"{'Data: pipeline, one worker':34}{_number(result['data']['images_per_s']):>10}",
        f"{'Train: src.train fit':34}{_number(train['images_per_s']):>10}"
        f"   epoch {_number(train['epoch_s'])} s for {train['batches']} batches, validation {_number(train['val_s'])} s apart",
        f"{'Train / Floor':34}{_number(ratios['train_over_floor'], 3):>10}"
        f"   target >= {targets['train_over_floor']['target']:.2f}: {_verdict(targets['train_over_floor'])}",
        f"{'Data / Train':34}{_number(ratios['data_over_train'], 1):>10}"
        f"   target >= {targets['data_over_train']['target']:.0f}: {_verdict(targets['data_over_train'])}",
    ]
    if result["variants"]:
        lines += ["", "Floor by precision, memory format and compilation:"]
        for variant in result["variants"]:
            mark = "  (the default here)" if variant["default"] else ""
            lines.append(f"  {variant['name']:32}{_number(variant['images_per_s']):>10}"
                         f"   {variant['vs_default']:.2f}x, {variant['warmup_s']:.0f} s warm-up{mark}")
    lines += _data_paths_lines(result.get("data_paths") or {})
    lines += _whole_run_lines(result.get("whole_runs") or {})
    accuracy = result["accuracy"]
    if "skipped" in accuracy:
        lines += ["", f"Accuracy check: skipped ({accuracy['skipped']})"]
    else:
        errors = ", ".join(f"{name} {error:.4f}" for name, error in accuracy["error_rate"].items())
        lines += ["", f"Accuracy check after {accuracy['train_batches']} batches: validation error {errors}; "
                      f"difference {accuracy['difference_pp']:+.2f} pp (tolerance {accuracy['tolerance_pp']:.0f} pp: "
                      f"{'within' if accuracy['within_tolerance'] else 'OUTSIDE'})"]
    return "\n".join(lines)


def _data_paths_lines(paths: dict[str, Any]) -> list[str]:
    if not paths:
        return []
    what = {"workers": "decode, augment, normalise", "device": "decode, resize, crop to uint8"}
    lines = ["", f"{'Data by data.augment.on, one worker':42}{'images/s':>10}{'CPU ms/image':>14}"]
    for name in ("workers", "device"):
        if name in paths:
            entry = paths[name]
            lines.append(f"  {name + ': ' + what[name]:40}{_number(entry['images_per_s']):>10}"
                         f"{_number(entry['cpu_ms_per_image'], 2):>14}")
            if "augment" in entry:
                augment = entry["augment"]
                lines.append(f"  {'  + batch augmentation on ' + augment['device']:40}{_number(augment['images_per_s']):>10}"
                             f"{_number(augment['ms_per_image'], 2):>14}   (wall ms/image, training process)")
    if "device_over_workers_cpu" in paths:
        ratio = paths["device_over_workers_cpu"]
        # the expectation is for photos (400x400 JPEGs at 224 px, bench=resnet50_224); on tiny images the
        # decode and per-call costs, which both paths share, are most of a worker's time
        lines.append(f"  worker CPU per image, device / workers: {ratio['ratio']:.2f} "
                     f"(target for photos <= {ratio['target']:.2f}: {_verdict(ratio)})")
    return lines


# A row's key is a path into the run's entry: "floor.images_per_s" is run["floor"]["images_per_s"].
WHOLE_RUN_ROWS = (
    ("to_first_step_s", "time to the first training step, s", 1),
    ("sanity_check_s", "  of which the sanity check, s", 1),
    ("train_s", "training epochs, s", 1),
    ("val_s", "validation, s", 1),
    ("checkpoints_s", "checkpoint writes (best, last), s", 1),
    ("end_s", "end of run (after the last epoch), s", 1),
    ("other_s", "the rest between epochs (logging), s", 1),
    ("wall_s", "wall clock, s", 1),
    ("images_per_s", "training images/s over whole epochs", 1),
    ("floor.images_per_s", "Floor (mean of before and after), img/s", 1),
    ("train_over_floor", "Train / Floor over whole epochs", 3),
    ("worker_cpu_ms_per_image", "worker CPU ms per image loaded", 2),
    ("error_rate", "final validation error rate", 4),
)


def _lookup(entry: dict[str, Any], path: str) -> Any:
    for key in path.split("."):
        entry = entry.get(key) if isinstance(entry, dict) else None
    return entry


def _whole_run_lines(runs: dict[str, Any]) -> list[str]:
    if not runs:
        return []
    names = list(runs)
    first = runs[names[0]]
    lines = ["", f"Whole src.train run ({first['epochs']} epoch(s), validation, logging, progress bar, checkpoints), "
                 "by data.augment.on:",
             f"{'':42}" + "".join(f"{name:>12}" for name in names)]
    for key, label, digits in WHOLE_RUN_ROWS:
        values = [_lookup(runs[n], key) for n in names]
        lines.append(f"  {label:40}" + "".join(f"{_number(value, digits):>12}" for value in values))
    for name in names:
        by_epoch = " ".join(_number(ratio, 3) for ratio in runs[name]["epoch_train_over_floor"])
        floor = runs[name]["floor"]
        lines.append(f"  {name}: Train / Floor by epoch {by_epoch}; Floor {_number(floor['before'])} before, "
                     f"{_number(floor['after'])} after")
    return lines
