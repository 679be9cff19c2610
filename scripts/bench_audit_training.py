"""Does training on an audited folder pay? A raw run against a run with the audit's decisions, both scored on
the same validation photos under their true labels.

    python scripts/make_audit_benchmark.py /tmp/audit-bench
    python -m src.train experiment=demo data.root=/tmp/audit-bench hydra.run.dir=/tmp/audit-bench-run
    python -m src.audit data.root=/tmp/audit-bench ckpt_path=/tmp/audit-bench-run/checkpoints/best.ckpt \
        hydra.run.dir=/tmp/audit-bench-audit
    python scripts/bench_audit_training.py /tmp/audit-bench --raw-run /tmp/audit-bench-run \
        --decisions /tmp/audit-bench-audit/decisions.csv --out benchmarks/audit-training-DATE.json

The cleaned run is the raw run's command (its config.yaml's overrides) with ``data.decisions=``. Each run's own
validation error is on its own labels: the raw run's holds the moved labels, the cleaned run's the audit's
relabels and not its drops, so the two are not comparable. Both are therefore also evaluated
(``python -m src.evaluate data.root=...``) on a folder of the raw run's validation photos, each filed under
the class it shows (``OUT.truth.json`` of make_audit_benchmark.py), without the injected copies.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def run(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=PROJECT_ROOT)
    return round(time.perf_counter() - started, 1)


def truth_folder(root: Path, raw_run: Path, truth: dict, out: Path) -> int:
    """The raw run's validation photos under their true classes, the injected copies left out."""
    true_label = {m["path"]: m["true_label"] for m in truth["moved"]}
    copies = {p["copy"] for p in truth["near_duplicates"]}
    shutil.rmtree(out, ignore_errors=True)
    count = 0
    with open(raw_run / "split.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["subset"] != "valid" or row["path"] in copies:
                continue
            label = true_label.get(row["path"], row["label"])
            target = out / label / Path(row["path"]).name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(root / row["path"], target)
            count += 1
    return count


def evaluate(ckpt: Path, data_root: Path, run_dir: Path) -> dict:
    seconds = run([sys.executable, "-m", "src.evaluate", f"ckpt_path={ckpt}", f"data.root={data_root}",
                   f"hydra.run.dir={run_dir}"])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {"error_rate": metrics["error_rate"], "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--raw-run", type=Path, required=True)
    parser.add_argument("--decisions", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/audit-bench-training"))
    args = parser.parse_args()
    truth = json.loads(args.root.with_name(args.root.name + ".truth.json").read_text())
    args.work.mkdir(parents=True, exist_ok=True)
    images = truth_folder(args.root, args.raw_run, truth, args.work / "true-labels")
    overrides = [o for o in (args.raw_run / ".hydra" / "overrides.yaml").read_text().splitlines()]
    overrides = [o[2:].strip().strip("'") for o in overrides if o.startswith("- ")
                 and not o[2:].strip().startswith(("hydra.run.dir", "data.decisions"))]
    cleaned_run = args.work / "cleaned-run"
    shutil.rmtree(cleaned_run, ignore_errors=True)
    train_command = [sys.executable, "-m", "src.train", *overrides, f"data.decisions={args.decisions}",
                     f"hydra.run.dir={cleaned_run}"]
    train_seconds = run(train_command)
    result = {}
    for name, run_dir in (("raw", args.raw_run), ("cleaned", cleaned_run)):
        own = json.loads((run_dir / "metrics.json").read_text())
        result[name] = {"run": str(run_dir), "own_validation_error_rate": own["final"]["val/error_rate"],
                        "true_labels": evaluate(run_dir / "checkpoints" / "best.ckpt", args.work / "true-labels",
                                                args.work / f"evaluate-{name}")}
    report = {
        "command": " ".join(["python", *sys.argv]),
        "date": time.strftime("%Y-%m-%d"),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "cleaned_train_command": " ".join(["python", *train_command[1:]]),
        "cleaned_train_seconds": train_seconds,
        "true_label_validation_images": images,
        **result,
    }
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
